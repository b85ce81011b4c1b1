// SPDX-License-Identifier: GPL-2.0 OR MIT
//
// tern's kernel fast path for TURN channels (RFC 8656 §12; numbers 0x4000-0x7FFF, as
// the engine accepts them), attached to the TC ingress hook of the interfaces that carry
// the listener and relay addresses, and to their XDP hook where the driver runs XDP
// itself.
//
// Two maps, filled and emptied by tern's engine (src/offload), say which channels are
// offloaded:
//   - `clients`: a client's ChannelData (client 5-tuple and channel number) → the
//     allocation's relay address and the bound peer. The 4-byte header and its padding
//     are stripped and the datagram leaves from the relay address to the peer.
//   - `peers`: a datagram from a bound peer to a relay address → the client's 5-tuple
//     and channel. A ChannelData header is put in front and the datagram leaves from the
//     listener address to the client.
// A datagram leaves the way the other side's datagrams came in: each side's frames
// teach the entry of the opposite direction their interface and MAC addresses (the
// frame's source MAC is the next hop toward that side), so no route or neighbour lookup
// is made per packet, and forwarding need not be enabled on the host.
// Both hooks run the same logic, written once over the accessors of `struct pkt`. XDP
// comes first, before the kernel has built a socket buffer, and takes only what leaves
// by the interface it came in on (XDP_TX): the common case of one public interface, and
// the one transmit every XDP driver has. Anything else it passes on untouched and
// uncounted, to TC, which decides.
// Everything else, and anything this program is unsure of (IP options, fragments, GSO
// packets, a stale entry, a side not heard from yet, a datagram that would not fit the
// egress MTU), is passed up untouched: the user-space relay has the same state and
// handles it. An entry carries its own deadline (the channel's, or its permission's
// if sooner), so an entry the engine has not withdrawn yet never outlives the
// permission that allows it.
//
// Built with clang only (no libbpf headers): the helpers are declared here by number.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>

#define SEC(name) __attribute__((section(name), used))
#define INLINE static inline __attribute__((always_inline))

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static long (*bpf_skb_load_bytes)(const void *skb, __u32 off, void *to, __u32 len) =
    (void *)BPF_FUNC_skb_load_bytes;
static long (*bpf_skb_store_bytes)(void *skb, __u32 off, const void *from, __u32 len,
                                   __u64 flags) = (void *)BPF_FUNC_skb_store_bytes;
static long (*bpf_skb_adjust_room)(void *skb, __s32 len_diff, __u32 mode, __u64 flags) =
    (void *)BPF_FUNC_skb_adjust_room;
static long (*bpf_skb_change_tail)(void *skb, __u32 len, __u64 flags) =
    (void *)BPF_FUNC_skb_change_tail;
static __s64 (*bpf_csum_diff)(__u32 *from, __u32 from_size, __u32 *to, __u32 to_size,
                              __u32 seed) = (void *)BPF_FUNC_csum_diff;
static long (*bpf_redirect)(__u32 ifindex, __u64 flags) = (void *)BPF_FUNC_redirect;
static long (*bpf_check_mtu)(void *skb, __u32 ifindex, __u32 *mtu_len, __s32 len_diff,
                             __u64 flags) = (void *)BPF_FUNC_check_mtu;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)BPF_FUNC_ktime_get_ns;
static long (*bpf_xdp_load_bytes)(void *xdp, __u32 off, void *to, __u32 len) =
    (void *)BPF_FUNC_xdp_load_bytes;
static long (*bpf_xdp_store_bytes)(void *xdp, __u32 off, const void *from, __u32 len) =
    (void *)BPF_FUNC_xdp_store_bytes;
static long (*bpf_xdp_adjust_head)(void *xdp, int delta) = (void *)BPF_FUNC_xdp_adjust_head;
static long (*bpf_xdp_adjust_tail)(void *xdp, int delta) = (void *)BPF_FUNC_xdp_adjust_tail;
static __u64 (*bpf_xdp_get_buff_len)(void *xdp) = (void *)BPF_FUNC_xdp_get_buff_len;

// From <sys/socket.h>, which is not for the BPF target.
#define AF_INET 2
#define AF_INET6 10

#define bswap16(x) __builtin_bswap16(x)
#define htons(x) bswap16(x)
#define ntohs(x) bswap16(x)

// The layout of a legacy map definition, as loaders read it from the "maps" section.
struct map_def {
    __u32 type;
    __u32 key_size;
    __u32 value_size;
    __u32 max_entries;
    __u32 flags;
};

// Addresses are four 32-bit words in network order; IPv4 uses the first word and
// leaves the others zero, so a checksum over all four is the same as over one.
// Ports and the channel number are in network order. Keep in step with src/offload/maps.rs.
struct client_key {
    __u32 client_ip[4];
    __u32 server_ip[4];
    __u16 client_port;
    __u16 server_port;
    __u16 channel;
    __u8 family; // 4 or 6
    __u8 pad;
};

// Where frames toward one side go: learnt from that side's own frames.
struct path {
    __u32 ifindex; // 0 until that side has been heard from
    __u8 dmac[ETH_ALEN];
    __u8 smac[ETH_ALEN];
};

struct client_route {
    __u32 relay_ip[4];
    __u32 peer_ip[4];
    __u16 relay_port;
    __u16 peer_port;
    struct path to_peer;
    __u32 pad;
    __u64 expires_ns; // CLOCK_MONOTONIC
    __u64 packets;
    __u64 bytes; // application data, without the ChannelData header
};

struct peer_key {
    __u32 relay_ip[4];
    __u32 peer_ip[4];
    __u16 relay_port;
    __u16 peer_port;
    __u8 family;
    __u8 pad[3];
};

struct peer_route {
    __u32 client_ip[4];
    __u32 server_ip[4];
    __u16 client_port;
    __u16 server_port;
    __u16 channel;
    __u16 pad;
    struct path to_client;
    __u64 expires_ns;
    __u64 packets;
    __u64 bytes;
};

// The program's counters, per CPU: why a datagram of an offloaded channel went to user
// space instead, then what each hook relayed each way (for the metrics, without walking
// the channel maps). Keep in step with src/offload/maps.rs and FALLBACKS in
// src/offload/mod.rs.
enum stat {
    FALLBACK_EXPIRED,
    FALLBACK_UNHEARD,
    FALLBACK_TOO_BIG,
    FALLBACK_FRAMING,
    FALLBACK_FAILED,
    // TC's, then XDP's (at + HOOK_STATS).
    TO_PEER_PACKETS,
    TO_PEER_BYTES,
    TO_CLIENT_PACKETS,
    TO_CLIENT_BYTES,
    STAT_COUNT = TO_CLIENT_BYTES + 1 + 4,
};
#define HOOK_STATS 4

// Sizes are set by the loader from tern's config before the maps are created.
struct map_def SEC("maps") clients = {
    .type = BPF_MAP_TYPE_HASH,
    .key_size = sizeof(struct client_key),
    .value_size = sizeof(struct client_route),
    .max_entries = 1,
};

struct map_def SEC("maps") peers = {
    .type = BPF_MAP_TYPE_HASH,
    .key_size = sizeof(struct peer_key),
    .value_size = sizeof(struct peer_route),
    .max_entries = 1,
};

struct map_def SEC("maps") stats = {
    .type = BPF_MAP_TYPE_PERCPU_ARRAY,
    .key_size = sizeof(__u32),
    .value_size = sizeof(__u64),
    .max_entries = STAT_COUNT,
};

// Datagrams with more application data than this are left to user space.
#define MAX_DATA 2048

// Per-CPU room to copy the data into for its checksum. The room past MAX_DATA lets the
// verifier accept each 512-byte step at its bounds, and holds the zeros that pad an odd
// length to whole words.
struct scratch {
    __u8 data[MAX_DATA + 1024];
};

struct map_def SEC("maps") scratch = {
    .type = BPF_MAP_TYPE_PERCPU_ARRAY,
    .key_size = sizeof(__u32),
    .value_size = sizeof(struct scratch),
    .max_entries = 1,
};

// What the program needs of a UDP datagram: its addresses, ports and where its parts are.
struct flow {
    __u32 saddr[4];
    __u32 daddr[4];
    __u16 sport;
    __u16 dport;
    __u16 udp_len;  // host order, header included
    __u16 udp_csum; // as on the wire
    __u32 l4_off;
    __u8 family;
};

// A packet as either hook hands it over. `xdp` is a constant in each entry point, so
// once inlined each hook's program holds only its own helper calls.
struct pkt {
    void *ctx;
    int xdp;
};

INLINE long load(struct pkt *p, __u32 off, void *to, __u32 len) {
    return p->xdp ? bpf_xdp_load_bytes(p->ctx, off, to, len)
                  : bpf_skb_load_bytes(p->ctx, off, to, len);
}

INLINE long store(struct pkt *p, __u32 off, const void *from, __u32 len) {
    return p->xdp ? bpf_xdp_store_bytes(p->ctx, off, from, len)
                  : bpf_skb_store_bytes(p->ctx, off, from, len, 0);
}

// The helper, not `data_end - data`: subtracting packet pointers needs CAP_PERFMON,
// which the systemd drop-in does not grant.
INLINE __u32 length(struct pkt *p) {
    if (p->xdp)
        return bpf_xdp_get_buff_len(p->ctx);
    return ((struct __sk_buff *)p->ctx)->len;
}

INLINE __u32 ingress_ifindex(struct pkt *p) {
    if (p->xdp)
        return ((struct xdp_md *)p->ctx)->ingress_ifindex;
    return ((struct __sk_buff *)p->ctx)->ingress_ifindex;
}

// Lets the packet go on its way untouched: to TC from XDP, to the stack from TC.
INLINE int pass(struct pkt *p) {
    return p->xdp ? XDP_PASS : TC_ACT_OK;
}

INLINE int drop(struct pkt *p) {
    return p->xdp ? XDP_DROP : TC_ACT_SHOT;
}

struct ip6 {
    __u32 vtc_flow;
    __u16 payload_len;
    __u8 nexthdr;
    __u8 hop_limit;
    __u32 saddr[4];
    __u32 daddr[4];
};

INLINE void count(enum stat which, __u64 n) {
    __u32 key = which;
    __u64 *slot = bpf_map_lookup_elem(&stats, &key);
    if (slot)
        *slot += n; // per-CPU: no atomics needed
}

// Hands a datagram of an offloaded channel on untouched. TC counts why; XDP leaves that
// to TC, which sees the same datagram next.
INLINE int fall_back(struct pkt *p, enum stat why) {
    if (!p->xdp)
        count(why, 1);
    return pass(p);
}

// The ones' complement sum folded to 16 bits and inverted, as a checksum field holds it.
INLINE __u16 fold(__u64 sum) {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return (__u16)~sum;
}

// A 32-bit word holding `hi` then `lo` in memory (both already in network order).
INLINE __u32 word(__u16 hi, __u16 lo) {
    __u32 w;
    ((__u16 *)&w)[0] = hi;
    ((__u16 *)&w)[1] = lo;
    return w;
}

// Reads the IPv4 or IPv6 and UDP headers; 0 when the packet is not a plain UDP datagram
// (IP options, extension headers, fragments and GSO packets are left to user space).
INLINE int parse(struct pkt *p, struct flow *f) {
    struct ethhdr eth;
    struct udphdr udp;
    if (!p->xdp && ((struct __sk_buff *)p->ctx)->gso_segs > 1)
        return 0;
    if (load(p, 0, &eth, sizeof(eth)) < 0)
        return 0;
    if (eth.h_proto == htons(ETH_P_IP)) {
        struct iphdr ip;
        if (load(p, ETH_HLEN, &ip, sizeof(ip)) < 0)
            return 0;
        if (ip.ihl != 5 || ip.version != 4 || ip.protocol != IPPROTO_UDP ||
            (ip.frag_off & htons(0x3fff)) != 0)
            return 0;
        f->family = 4;
        f->saddr[0] = ip.saddr;
        f->daddr[0] = ip.daddr;
        f->l4_off = ETH_HLEN + sizeof(struct iphdr);
        if (ntohs(ip.tot_len) < sizeof(struct iphdr) + sizeof(udp))
            return 0;
    } else if (eth.h_proto == htons(ETH_P_IPV6)) {
        struct ip6 ip;
        if (load(p, ETH_HLEN, &ip, sizeof(ip)) < 0)
            return 0;
        if (ip.nexthdr != IPPROTO_UDP)
            return 0;
        f->family = 6;
        __builtin_memcpy(f->saddr, ip.saddr, 16);
        __builtin_memcpy(f->daddr, ip.daddr, 16);
        f->l4_off = ETH_HLEN + sizeof(struct ip6);
    } else {
        return 0;
    }
    if (load(p, f->l4_off, &udp, sizeof(udp)) < 0)
        return 0;
    f->sport = udp.source;
    f->dport = udp.dest;
    f->udp_len = ntohs(udp.len);
    f->udp_csum = udp.check;
    if (f->udp_len < sizeof(udp) || f->l4_off + f->udp_len > length(p))
        return 0;
    // IPv6 has no checksum-less UDP; such a datagram is not ours to mend.
    if (f->family == 6 && f->udp_csum == 0)
        return 0;
    return 1;
}

// Records in `p` how to reach the side whose frame this is: the interface it came in on,
// its source MAC as the next hop and its destination MAC as ours. Written only when it
// changed, so the entry's cache line is not dirtied per packet.
INLINE void learn(struct pkt *p, struct path *to) {
    struct ethhdr eth;
    if (load(p, 0, &eth, sizeof(eth)) < 0)
        return;
    __u32 ifindex = ingress_ifindex(p);
    int same = to->ifindex == ifindex;
#pragma unroll
    for (int i = 0; i < ETH_ALEN; i++)
        same &= to->dmac[i] == eth.h_source[i] && to->smac[i] == eth.h_dest[i];
    if (same)
        return;
    __builtin_memcpy(to->dmac, eth.h_source, ETH_ALEN);
    __builtin_memcpy(to->smac, eth.h_dest, ETH_ALEN);
    to->ifindex = ifindex;
}

// Whether a frame `grow` bytes longer than this one fits the MTU of `to`'s interface.
INLINE int fits(struct pkt *p, struct path *to, __s32 grow) {
    __u32 mtu = 0;
    return bpf_check_mtu(p->ctx, to->ifindex, &mtu, grow, 0) == BPF_MTU_CHK_RET_SUCCESS;
}

// Whether this hook can send toward `to`: TC anywhere; XDP only back out of the
// interface the frame came in on.
INLINE int reachable(struct pkt *p, struct path *to) {
    return !p->xdp || to->ifindex == ingress_ifindex(p);
}

// What `resize_after_ip` did when it failed.
#define UNCHANGED -1 // the packet is as it came: it can be passed on
#define MANGLED -2   // its headers moved: it must be dropped

// Adds (`delta` > 0) or removes room right after the IP header, which ends at `l3_end`
// (ETH_HLEN plus a 20- or 40-byte header). XDP moves the start of the packet and the
// headers before the room with it. 0, UNCHANGED or MANGLED.
INLINE long resize_after_ip(struct pkt *p, __u32 l3_end, int delta) {
    if (!p->xdp)
        return bpf_skb_adjust_room(p->ctx, delta, BPF_ADJ_ROOM_NET, 0) < 0 ? UNCHANGED : 0;
    __u8 head[ETH_HLEN + sizeof(struct ip6)];
    if (l3_end == ETH_HLEN + sizeof(struct iphdr)) {
        if (load(p, 0, head, ETH_HLEN + sizeof(struct iphdr)) < 0 ||
            bpf_xdp_adjust_head(p->ctx, -delta) < 0)
            return UNCHANGED;
        return store(p, 0, head, ETH_HLEN + sizeof(struct iphdr)) < 0 ? MANGLED : 0;
    }
    if (load(p, 0, head, sizeof(head)) < 0 || bpf_xdp_adjust_head(p->ctx, -delta) < 0)
        return UNCHANGED;
    return store(p, 0, head, sizeof(head)) < 0 ? MANGLED : 0;
}

// Cuts the frame to `len` bytes (it came longer: padded).
INLINE long trim(struct pkt *p, __u32 len) {
    __u32 now = length(p);
    if (now <= len)
        return 0;
    if (p->xdp)
        return bpf_xdp_adjust_tail(p->ctx, (int)len - (int)now);
    return bpf_skb_change_tail(p->ctx, len, 0);
}

// Writes the IP header for the rewritten datagram: new addresses, length and hop limit
// (the relay sends anew, as its sockets would), the rest as it came.
INLINE int write_ip(struct pkt *p, struct flow *f, __u32 *src, __u32 *dst,
                    __u16 udp_len) {
    if (f->family == 4) {
        struct iphdr ip;
        if (load(p, ETH_HLEN, &ip, sizeof(ip)) < 0)
            return -1;
        ip.saddr = src[0];
        ip.daddr = dst[0];
        ip.tot_len = htons(sizeof(ip) + udp_len);
        ip.ttl = 64;
        ip.check = 0;
        __u16 *w = (__u16 *)&ip;
        __u64 sum = 0;
#pragma unroll
        for (int i = 0; i < (int)(sizeof(ip) / 2); i++)
            sum += w[i];
        ip.check = fold(sum);
        return store(p, ETH_HLEN, &ip, sizeof(ip));
    }
    struct ip6 ip;
    if (load(p, ETH_HLEN, &ip, sizeof(ip)) < 0)
        return -1;
    __builtin_memcpy(ip.saddr, src, 16);
    __builtin_memcpy(ip.daddr, dst, 16);
    ip.payload_len = htons(udp_len);
    ip.hop_limit = 64;
    return store(p, ETH_HLEN, &ip, sizeof(ip));
}

// Sends the rewritten frame out toward the side `to` leads to (for XDP, the interface
// it came in on: see `reachable`).
INLINE int send(struct pkt *p, struct path *to) {
    if (store(p, 0, to->dmac, ETH_ALEN) < 0 || store(p, ETH_ALEN, to->smac, ETH_ALEN) < 0)
        return drop(p);
    return p->xdp ? XDP_TX : bpf_redirect(to->ifindex, 0);
}

// The ones' complement sum of `len` bytes of application data at `off`, or -1 when it
// cannot be had (more than MAX_DATA bytes).
INLINE __s64 sum_data(struct pkt *p, __u32 off, __u32 len) {
    __u32 zero = 0;
    struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);
    if (!s || len > MAX_DATA)
        return -1;
    if (len == 0)
        return 0;
    // The verifier must see the copy's length as 1..MAX_DATA from one register.
    __u64 last = (__u64)len - 1;
    asm volatile("" : "+r"(last));
    if (last >= MAX_DATA)
        return -1;
    if (load(p, off, s->data, last + 1) < 0)
        return -1;
    s->data[len] = 0;
    s->data[len + 1] = 0;
    s->data[len + 2] = 0;
    __u64 left = ((__u64)len + 3) & 0xffc;
    __s64 sum = 0;
#pragma unroll
    for (int i = 0; i < MAX_DATA / 512; i++) {
        __u64 n = left > 512 ? 512 : left;
        asm volatile("" : "+r"(n));
        n &= 0x3fc;
        sum = bpf_csum_diff(0, 0, (__u32 *)(s->data + i * 512), n, (__u32)sum);
        if (sum < 0)
            return -1;
        left -= n;
    }
    return sum;
}

// Counts a rewritten datagram on its entry (`packets`, `bytes`) and in the hook's
// totals (`packets_stat`, whose bytes slot follows it), then sends it out toward `to`.
INLINE int relayed(struct pkt *p, __u64 *packets, __u64 *bytes, enum stat packets_stat,
                   __u16 data_len, struct path *to) {
    __u32 slot = packets_stat + (p->xdp ? HOOK_STATS : 0);
    __sync_fetch_and_add(packets, 1);
    __sync_fetch_and_add(bytes, data_len);
    count(slot, 1);
    count(slot + 1, data_len);
    return send(p, to);
}

// The UDP checksum of a datagram from `src` to `dst` whose header and leading words
// (a ChannelData header, or 0) are `head`, over data whose sum is `data_sum`. Computed
// whole, never patched: what arrived may carry a partial checksum (a sender on this
// host, over veth), and the resized packet leaves with none offloaded.
INLINE __u16 udp_checksum(__u32 *src, __u32 *dst, struct udphdr *udp, __u32 lead,
                          __s64 data_sum) {
    __u32 words[12] = {src[0], src[1], src[2], src[3], dst[0], dst[1], dst[2], dst[3],
                       word(0, udp->len), word(0, htons(IPPROTO_UDP)),
                       word(udp->source, udp->dest), word(udp->len, 0)};
    __s64 sum = bpf_csum_diff(0, 0, words, sizeof(words), (__u32)data_sum);
    sum = bpf_csum_diff(0, 0, &lead, sizeof(lead), (__u32)sum);
    __u16 c = fold((__u64)(__u32)sum);
    return c == 0 ? 0xffff : c;
}

// Client → peer: ChannelData on an offloaded channel leaves as a plain datagram from the
// relay address to the peer.
INLINE int to_peer(struct pkt *p, struct flow *f, struct client_route *r,
                   __u16 data_len) {
    // The client was heard from: the peer's datagrams can go back to it.
    struct peer_key back = {.relay_port = r->relay_port, .peer_port = r->peer_port,
                            .family = f->family};
    __builtin_memcpy(back.relay_ip, r->relay_ip, 16);
    __builtin_memcpy(back.peer_ip, r->peer_ip, 16);
    struct peer_route *reverse = bpf_map_lookup_elem(&peers, &back);
    if (reverse)
        learn(p, &reverse->to_client);

    __u16 payload = f->udp_len - sizeof(struct udphdr);
    __u16 pad = payload - 4 - data_len;
    if (pad) {
        // Padding is up to three zero bytes; anything else is not ours to drop.
        __u32 bytes = 0;
        __u32 at = f->l4_off + 12 + data_len;
        long err = pad == 1   ? load(p, at, &bytes, 1)
                   : pad == 2 ? load(p, at, &bytes, 2)
                   : pad == 3 ? load(p, at, &bytes, 3)
                              : -1;
        if (err < 0 || bytes != 0)
            return fall_back(p, FALLBACK_FRAMING);
    }
    if (bpf_ktime_get_ns() >= r->expires_ns)
        return fall_back(p, FALLBACK_EXPIRED);
    if (r->to_peer.ifindex == 0)
        return fall_back(p, FALLBACK_UNHEARD);
    if (!reachable(p, &r->to_peer))
        return pass(p);
    __u16 udp_len = sizeof(struct udphdr) + data_len;

    __s64 data_sum = sum_data(p, f->l4_off + 12, data_len);
    if (data_sum < 0)
        return fall_back(p, FALLBACK_TOO_BIG);
    struct udphdr udp = {
        .source = r->relay_port,
        .dest = r->peer_port,
        .len = htons(udp_len),
    };
    udp.check = udp_checksum(r->relay_ip, r->peer_ip, &udp, 0, data_sum);
    // The four bytes after the IP header (the old ports) go; the new UDP header goes
    // over what follows them: the rest of the old one and the ChannelData header.
    long resized = resize_after_ip(p, f->l4_off, -4);
    if (resized == UNCHANGED)
        return fall_back(p, FALLBACK_FAILED);
    // Past here the datagram is changed: a failure drops it rather than pass on garbage.
    if (resized < 0 || store(p, f->l4_off, &udp, sizeof(udp)) < 0 ||
        trim(p, f->l4_off + udp_len) < 0 ||
        write_ip(p, f, r->relay_ip, r->peer_ip, udp_len) < 0)
        return drop(p);
    return relayed(p, &r->packets, &r->bytes, TO_PEER_PACKETS, data_len, &r->to_peer);
}

// Peer → client: a datagram from a bound peer leaves as ChannelData from the listener
// address to the client.
INLINE int to_client(struct pkt *p, struct flow *f, struct peer_route *r) {
    // The peer was heard from: the client's ChannelData can go on to it.
    struct client_key back = {.client_port = r->client_port, .server_port = r->server_port,
                              .channel = r->channel, .family = f->family};
    __builtin_memcpy(back.client_ip, r->client_ip, 16);
    __builtin_memcpy(back.server_ip, r->server_ip, 16);
    struct client_route *reverse = bpf_map_lookup_elem(&clients, &back);
    if (reverse)
        learn(p, &reverse->to_peer);

    if (bpf_ktime_get_ns() >= r->expires_ns)
        return fall_back(p, FALLBACK_EXPIRED);
    __u16 data_len = f->udp_len - sizeof(struct udphdr);
    __u32 l3_head = f->family == 4 ? sizeof(struct iphdr) : sizeof(struct ip6);
    if (l3_head + f->udp_len + 4 > 0xffff)
        return fall_back(p, FALLBACK_TOO_BIG);
    if (r->to_client.ifindex == 0)
        return fall_back(p, FALLBACK_UNHEARD);
    if (!reachable(p, &r->to_client))
        return pass(p);
    if (!fits(p, &r->to_client, 4))
        return fall_back(p, FALLBACK_TOO_BIG);
    __u16 udp_len = f->udp_len + 4;

    __s64 data_sum = sum_data(p, f->l4_off + 8, data_len);
    if (data_sum < 0)
        return fall_back(p, FALLBACK_TOO_BIG);
    struct {
        struct udphdr udp;
        __u16 channel;
        __u16 len;
    } head = {
        .udp = {.source = r->server_port, .dest = r->client_port, .len = htons(udp_len)},
        .channel = r->channel,
        .len = htons(data_len),
    };
    head.udp.check =
        udp_checksum(r->server_ip, r->client_ip, &head.udp, word(head.channel, head.len), data_sum);
    long resized = resize_after_ip(p, f->l4_off, 4);
    if (resized == UNCHANGED)
        return fall_back(p, FALLBACK_FAILED);
    if (resized < 0 || store(p, f->l4_off, &head, sizeof(head)) < 0 ||
        trim(p, f->l4_off + udp_len) < 0 ||
        write_ip(p, f, r->server_ip, r->client_ip, udp_len) < 0)
        return drop(p);
    return relayed(p, &r->packets, &r->bytes, TO_CLIENT_PACKETS, data_len, &r->to_client);
}

// Relays `p` if it belongs to an offloaded channel; hands it on otherwise.
INLINE int relay(struct pkt *p) {
    struct flow f = {};
    if (!parse(p, &f))
        return pass(p);

    if (f.udp_len >= sizeof(struct udphdr) + 4) {
        struct {
            __u16 channel;
            __u16 len;
        } chd;
        if (load(p, f.l4_off + 8, &chd, sizeof(chd)) == 0 &&
            (ntohs(chd.channel) & 0xc000) == 0x4000) {
            struct client_key key = {};
            __builtin_memcpy(key.client_ip, f.saddr, 16);
            __builtin_memcpy(key.server_ip, f.daddr, 16);
            key.client_port = f.sport;
            key.server_port = f.dport;
            key.channel = chd.channel;
            key.family = f.family;
            struct client_route *r = bpf_map_lookup_elem(&clients, &key);
            if (r) {
                __u16 data_len = ntohs(chd.len);
                if ((__u32)data_len + 4 > (__u32)f.udp_len - sizeof(struct udphdr))
                    return fall_back(p, FALLBACK_FRAMING);
                return to_peer(p, &f, r, data_len);
            }
        }
    }

    struct peer_key key = {};
    __builtin_memcpy(key.relay_ip, f.daddr, 16);
    __builtin_memcpy(key.peer_ip, f.saddr, 16);
    key.relay_port = f.dport;
    key.peer_port = f.sport;
    key.family = f.family;
    struct peer_route *r = bpf_map_lookup_elem(&peers, &key);
    if (r)
        return to_client(p, &f, r);
    return pass(p);
}

SEC("classifier")
int tern_channels(struct __sk_buff *skb) {
    struct pkt p = {.ctx = skb, .xdp = 0};
    return relay(&p);
}

SEC("xdp")
int tern_channels_xdp(struct xdp_md *ctx) {
    struct pkt p = {.ctx = ctx, .xdp = 1};
    return relay(&p);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
