// SPDX-License-Identifier: GPL-2.0 OR MIT
//
// An XDP program that passes every frame on. tests/offload.rs attaches it to the far end
// of the server's veth: veth delivers frames sent back with XDP_TX only to a peer that
// runs an XDP program itself.

#include <linux/bpf.h>

__attribute__((section("xdp"), used)) int pass(struct xdp_md *ctx) {
    return XDP_PASS;
}

char LICENSE[] __attribute__((section("license"), used)) = "Dual MIT/GPL";
