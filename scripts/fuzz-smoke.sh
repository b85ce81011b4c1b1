#!/usr/bin/env bash
# Runs every fuzz target (fuzz/, cargo-fuzz with libFuzzer) for a short bounded time
# over the committed seed corpus and fails if any of them crashes. Works on stable
# Rust: no sanitizer (AddressSanitizer needs nightly; the code under test has no
# `unsafe`), with debug assertions so an arithmetic overflow is a crash too.
#
#   FUZZ_SECONDS   seconds per target (default 15)
#   FUZZ_TARGETS   space-separated subset of targets (default: all four)
#
# New inputs go to a temporary corpus, removed at exit, so the tree stays clean; a
# crashing input is kept under fuzz/artifacts/<target>/ (ignored by git) and printed.
# Installs cargo-fuzz (pinned) when missing; libFuzzer itself is built from source by
# the libfuzzer-sys crate, which needs a C++ compiler. See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
FUZZ_SECONDS=${FUZZ_SECONDS:-15}
read -r -a targets <<<"${FUZZ_TARGETS:-stun_decode channel_data stream_framer core_sequence}"
# Unoptimised: the build takes a third of the release one (which compiles with one
# codegen unit), and 15 s of smoke need coverage, not speed. Long runs use -O.
flags=(--sanitizer none --debug-assertions --dev)

if ! cargo fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
    echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
if ! command -v c++ >/dev/null; then
    echo "fuzz-smoke: libFuzzer needs a C++ compiler (apt-get install g++)" >&2
    exit 1
fi

echo "== cargo fuzz build"
cargo fuzz build "${flags[@]}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for target in "${targets[@]}"; do
    echo "== fuzz $target for ${FUZZ_SECONDS}s"
    mkdir -p "$work/$target"
    log="$work/$target.log"
    # The first corpus directory receives new inputs; the committed one is only read.
    if cargo fuzz run "${flags[@]}" "$target" "$work/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 >"$log" 2>&1; then
        # libFuzzer's first and last status lines: executions, coverage, corpus.
        grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::(number_of_executed_units|peak_rss_mb)' "$log"
    else
        tail -n 60 "$log"
        failed+=("$target")
    fi
done

if [ ${#failed[@]} -ne 0 ]; then
    echo "fuzz-smoke: crashed: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz-smoke: ${#targets[@]} targets ran ${FUZZ_SECONDS}s each without a crash"
