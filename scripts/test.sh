#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need when missing
# (coturn's tools, openssl, Chromium, iproute2, nftables, iptables and systemd's
# tools from Debian, playwright-core from npm), then checks formatting and lints, runs
# every test (unit, sans-IO engine, integration against real `tern serve` processes
# on loopback, interop with coturn's turnutils) and the benchmark in its quick form.
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
cargo test --all-targets --locked 2>&1 | tee "$log"
# The benchmark once in its tiny configuration (one short round, every server and
# code path), so it cannot rot. Figures are not checked: that is what
# docs/performance.md, from a full `bench/run.sh`, is for.
echo "== bench/run.sh --quick"
bench/run.sh --quick

# One closing line for the whole suite (the benchmark's output came after the tests').
awk '/^test result:/ { p += $4; f += $6 } END { printf "cargo test: %d passed, %d failed\n", p, f }' "$log"
