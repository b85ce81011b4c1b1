#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need when missing
# (coturn's tools, openssl, redis-server, man, haproxy, curl, pebble, Chromium, iproute2,
# nftables, iptables and systemd's tools from Debian, playwright-core from npm, cargo-fuzz from crates.io),
# then checks formatting and lints, runs every test (unit, properties, sans-IO engine,
# integration against real `tern serve` processes on loopback, attack suites, interop
# with coturn's turnutils, browsers, network namespaces, a fleet on Redis), each fuzz
# target briefly, the benchmark in its quick form and the soak in its 60-second form.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
scripts/install-browser-deps.sh
scripts/install-nat-deps.sh
scripts/install-deploy-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Every test binary runs even after a failure, so one run shows every failure.
cargo test --all-targets --locked --no-fail-fast 2>&1 | tee "$log"
# Each fuzz target briefly over its seed corpus (docs/fuzzing.md has the long runs).
echo "== scripts/fuzz-smoke.sh"
scripts/fuzz-smoke.sh
# The benchmark once in its tiny configuration (one short round, every server and
# code path), so it cannot rot; as root it ends with the kernel fast path's workloads
# (bench/offload.sh --quick, in network namespaces), which fail if tern cannot run its
# fast path there. Figures are not checked: that is what docs/performance.md and
# docs/offload-performance.md, from a full `bench/run.sh`, are for.
echo "== bench/run.sh --quick"
bench/run.sh --quick
# The soak in its 60-second form (about 3 minutes with warm-up and drains): its verdict
# counts (no loss on healthy calls, the server back to its idle size); docs/reliability.md
# has the 10-minute run.
echo "== bench/soak.sh --quick"
bench/soak.sh --quick

# One closing line for the whole suite (the benchmark's output came after the tests').
awk '/^test result:/ { p += $4; f += $6 } END { printf "cargo test: %d passed, %d failed\n", p, f }' "$log"
