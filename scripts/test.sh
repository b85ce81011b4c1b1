#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need when missing
# (coturn's tools and openssl from Debian), then checks formatting and lints, runs
# every test (unit, sans-IO engine, integration against real `tern serve` processes
# on loopback, interop with coturn's turnutils) and the benchmark in its quick form.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --all-targets --locked
# The benchmark once in its tiny configuration (one short round, every server and
# code path), so it cannot rot. Figures are not checked: that is what
# docs/performance.md, from a full `bench/run.sh`, is for.
echo "== bench/run.sh --quick"
bench/run.sh --quick
