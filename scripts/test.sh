#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need when missing
# (coturn's client tools from Debian), then checks formatting and lints and runs every
# test (unit, sans-IO engine, integration against real `tern serve` processes on
# loopback, interop with coturn's turnutils).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --all-targets --locked
