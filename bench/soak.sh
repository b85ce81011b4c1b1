#!/usr/bin/env bash
# Soak test: a release build of tern under minutes of mixed, hostile, churning load on
# loopback, sampled throughout; it fails when healthy calls lose packets or when the
# server does not give back what the load took.
#
#   bench/soak.sh [--duration SECS] [--quick] [--out DIR] [--svg PATH]
#                 [--rss-bound KIB] [--fd-bound N]
#
#   --duration SECS  length of the soak phase (default 600)
#   --quick          --duration 60 (what scripts/test.sh runs)
#   --out DIR        where the samples, logs and results go (default: a new
#                    /tmp/tern-soak.XXXXXX, kept and printed at the end)
#   --svg PATH       the plot (default DIR/soak.svg)
#   --rss-bound KIB  allowed RSS growth from idle before to idle after (default 4096)
#   --fd-bound N     allowed growth of open descriptors (default 0)
#
# One `tern serve` (UDP, TCP and TLS on 127.0.0.1, relay on 127.0.0.1, allocation
# lifetime 20 s so abandoned allocations expire within the run, admin /metrics on) is
# driven by, all at once:
#   - healthy clients: `tern load` over UDP (20 allocations), TCP (5) and TLS (5), each
#     50 round trips/s of 160-byte ChannelData through an echo peer, in back-to-back
#     10-second runs (fresh allocations each, deleted at the end);
#   - churn (bench/soak.py churn, 8 workers from 127.0.0.2): allocate, channel, relay,
#     refresh, relay, then delete, vanish mid-call (TCP RST, no delete) or go quiet
#     until the allocation expires; 1/2 UDP, 1/4 TCP, 1/4 TLS; relaying to `tern peer`;
#   - 3 TLS clients that send 500 kB/s for 30 s and never read (bench/soak.py stall);
#   - a burst of unauthenticated junk every 60 s (bench/soak.py junk: 4000 datagrams
#     from 200 source ports on 127.0.1.x, 40 TCP/TLS junk connections);
#   - SIGHUP (configuration and certificate reload) 10 s into each phase, then every 30 s.
# Phases: warm-up (30 s of the same load, so allocator and buffers reach their working
# size), wait until the server is idle, baseline sample, soak, wait until idle, final
# sample. RSS, open fds (/proc/PID/fd), relay ports, allocations and connections (admin
# /metrics) are sampled into DIR/samples.csv every 5 s (2 s under 300 s).
#
# The verdict (exit 1, naming the cause): any lost probe or failed setup on the healthy
# allocations, any failed churn request, a stalled client the server did not close, a
# failed reload, growth of RSS, fds or relay ports from the idle baseline to the idle
# end beyond the bounds (relay ports: none). Every WARN/ERROR line the server logged is
# printed. Exit 2: bad usage; other non-zero: the soak could not run.
#
# Needs: cargo, openssl and python3 (scripts/install-test-deps.sh installs them on
# Debian/Ubuntu). All traffic stays on 127.0.0.0/8; every step is bounded in time; every
# process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
# shellcheck source=bench/common.sh
. bench/common.sh

DURATION=600
OUT=""
SVG=""
RSS_BOUND_KB=4096
FD_BOUND=0
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION=${2:?--duration takes seconds}; shift 2 ;;
        --duration=*) DURATION=${1#*=}; shift ;;
        --quick) DURATION=60; shift ;;
        --out) OUT=${2:?--out takes a directory}; shift 2 ;;
        --out=*) OUT=${1#*=}; shift ;;
        --svg) SVG=${2:?--svg takes a path}; shift 2 ;;
        --svg=*) SVG=${1#*=}; shift ;;
        --rss-bound) RSS_BOUND_KB=${2:?--rss-bound takes KiB}; shift 2 ;;
        --fd-bound) FD_BOUND=${2:?--fd-bound takes a number}; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "soak.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
for n in "$DURATION" "$RSS_BOUND_KB" "$FD_BOUND"; do
    case "$n" in '' | *[!0-9]*) echo "soak.sh: $n is not a non-negative integer" >&2; exit 2 ;; esac
done
[ "$DURATION" -ge 20 ] || { echo "soak.sh: --duration must be at least 20" >&2; exit 2; }

# The load and the server's settings.
WARMUP=30
LIFETIME=20       # relay.default_lifetime: abandoned UDP allocations expire this fast
SEGMENT=10        # one `tern load` run of the healthy clients (under LIFETIME: no refresh)
FRAME_TIMEOUT=10  # limits.frame_timeout (the default): when a stalled client is dropped
HUP_EVERY=30
JUNK_EVERY=60
HEALTHY=("udp 20" "tcp 5" "tls 5")
RATE=50
INTERVAL=5
[ "$DURATION" -ge 300 ] || INTERVAL=2
USER_NAME=soak
PASSWORD=soak-password

log() { printf '[soak %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [ -z "$OUT" ]; then
    OUT=$(mktemp -d /tmp/tern-soak.XXXXXX)
else
    mkdir -p "$OUT"
    rm -f "$OUT"/samples.csv "$OUT"/healthy-*.jsonl "$OUT"/*.json "$OUT"/*.err "$OUT"/server.log
fi
OUT=$(cd "$OUT" && pwd)
SVG=${SVG:-$OUT/soak.svg}
PHASE_FILE="$OUT/phase"

# ---------------------------------------------------------------------------------
# Every background process is recorded here and stopped on exit.
PIDS=()
SERVER_PID=""
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    # Latest first: the clients and the sampler before the server.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill_wait "${PIDS[i]}"
    done
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

check_dependencies
log "building tern (release)"
cargo build --release --quiet --bin tern &
PIDS+=($!)
wait "${PIDS[-1]}"
# A snapshot: a build in this tree during the soak must not replace the server's binary.
mkdir -p "$OUT/bin"
cp "${CARGO_TARGET_DIR:-$ROOT/target}/release/tern" "$OUT/bin/tern"
TERN="$OUT/bin/tern"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

read -r PORT TLS_PORT ADMIN_PORT PEER_PORT < <(pick_ports 4)
make_cert "$OUT"
cat >"$OUT/tern.toml" <<EOF
[relay]
default_lifetime = $LIFETIME

[limits]
user_allocations = 5000
max_connections_per_ip = 1000
frame_timeout = $FRAME_TIMEOUT

[log]
format = "json"
level = "info"
EOF

echo starting >"$PHASE_FILE"
"$TERN" serve --config "$OUT/tern.toml" --listen "127.0.0.1:$PORT" \
    --tls-listen "127.0.0.1:$TLS_PORT" --cert "$OUT/cert.pem" --key "$OUT/key.pem" \
    --admin "127.0.0.1:$ADMIN_PORT" --relay-ip 127.0.0.1 --ports 10000-29999 \
    --realm soak --user "$USER_NAME:$PASSWORD" --allow-peer 127.0.0.0/8 \
    >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
PIDS+=("$SERVER_PID")
wait_ready "$SERVER_PID" "$PORT" "$TLS_PORT" || { log "tern did not start:"; tail -n 20 "$OUT/server.log" >&2; exit 1; }
"$TERN" peer --listen "127.0.0.1:$PEER_PORT" >"$OUT/peer.log" 2>&1 &
PIDS+=($!)
log "tern $SERVER_PID on 127.0.0.1:$PORT (UDP, TCP), TLS :$TLS_PORT, admin :$ADMIN_PORT; results in $OUT"

START=$(date +%s)
SAMPLER_UNTIL=$((START + WARMUP + DURATION + 4 * (LIFETIME + 30) + 120))
SOAKPY=(python3 "$ROOT/bench/soak.py")
"${SOAKPY[@]}" sample --pid "$SERVER_PID" --admin "127.0.0.1:$ADMIN_PORT" --csv "$OUT/samples.csv" \
    --phase-file "$PHASE_FILE" --start "$START" --interval "$INTERVAL" --until "$SAMPLER_UNTIL" &
PIDS+=($!)

# healthy TRANSPORT ALLOCATIONS UNTIL: back-to-back `tern load` runs until UNTIL, one
# JSON result a line in healthy-TRANSPORT.jsonl.
healthy() {
    local transport=$1 allocations=$2 until=$3 port=$PORT extra=() left result rc
    case "$transport" in
        tcp) extra=(--transport tcp) ;;
        tls) extra=(--transport tls --tls-insecure); port=$TLS_PORT ;;
    esac
    while left=$((until - $(date +%s))) && [ "$left" -ge 3 ]; do
        rc=0
        result=$(timeout --kill-after=5 $((SEGMENT + 60)) "$TERN" load "127.0.0.1:$port" \
            --user "$USER_NAME" --pass "$PASSWORD" --allocations "$allocations" --rate "$RATE" \
            --duration $((left < SEGMENT ? left : SEGMENT)) --json "${extra[@]}" \
            2>>"$OUT/healthy-$transport.err") || rc=$?
        if [ -n "$result" ]; then
            printf '%s\n' "$result"
        else
            printf '{"error": "tern load exited %s"}\n' "$rc"
        fi >>"$OUT/healthy-$transport.jsonl"
    done
}

HUPS=0
JUNKS=()
# run_load NAME SECONDS: every kind of client for SECONDS, SIGHUP and junk on schedule.
run_load() {
    local name=$1 seconds=$2 begin until spec pids=() t next_hup next_junk
    begin=$(date +%s)
    until=$((begin + seconds))
    echo "$name" >"$PHASE_FILE"
    for spec in "${HEALTHY[@]}"; do
        # shellcheck disable=SC2086 # "TRANSPORT COUNT"
        healthy $spec "$until" &
        pids+=($!)
    done
    timeout $((seconds + 60)) "${SOAKPY[@]}" churn --server "127.0.0.1:$PORT" \
        --tls-server "127.0.0.1:$TLS_PORT" --peer "127.0.0.1:$PEER_PORT" --user "$USER_NAME" \
        --password "$PASSWORD" --until "$until" --lifetime "$LIFETIME" --out "$OUT/churn-$name.json" \
        2>"$OUT/churn-$name.err" &
    pids+=($!)
    timeout $((seconds + 60)) "${SOAKPY[@]}" stall --server "127.0.0.1:$PORT" \
        --tls-server "127.0.0.1:$TLS_PORT" --peer "127.0.0.1:$PEER_PORT" --user "$USER_NAME" \
        --password "$PASSWORD" --until "$until" --hold $((3 * FRAME_TIMEOUT)) --grace $((2 * FRAME_TIMEOUT + 5)) \
        --out "$OUT/stall-$name.json" 2>"$OUT/stall-$name.err" &
    pids+=($!)
    PIDS+=("${pids[@]}")
    next_hup=$((begin + 10))
    next_junk=$((begin + 20))
    while t=$(date +%s) && [ "$t" -lt "$until" ]; do
        if [ "$t" -ge "$next_hup" ]; then
            kill -HUP "$SERVER_PID"
            HUPS=$((HUPS + 1))
            next_hup=$((next_hup + HUP_EVERY))
        fi
        if [ "$t" -ge "$next_junk" ]; then
            JUNKS+=("$OUT/junk-$name-$((t - begin)).json")
            timeout 60 "${SOAKPY[@]}" junk --server "127.0.0.1:$PORT" \
                --tls-server "127.0.0.1:$TLS_PORT" --out "${JUNKS[-1]}" 2>"${JUNKS[-1]%.json}.err" || true
            next_junk=$((next_junk + JUNK_EVERY))
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || { log "tern exited during $name:"; tail -n 20 "$OUT/server.log" >&2; exit 1; }
        sleep 1
    done
    log "$name: waiting for the clients to finish"
    wait "${pids[@]}" || true
}

# settle PHASE: waits until the server is idle, then takes the PHASE sample.
settle() {
    echo "draining" >"$PHASE_FILE"
    if ! "${SOAKPY[@]}" wait-idle --admin "127.0.0.1:$ADMIN_PORT" --timeout $((LIFETIME + 30)); then
        log "the server did not become idle"
    fi
    sleep "$INTERVAL"  # a sample of the idle server before the marked one
    "${SOAKPY[@]}" sample --pid "$SERVER_PID" --admin "127.0.0.1:$ADMIN_PORT" --csv "$OUT/samples.csv" \
        --phase-file "$PHASE_FILE" --phase "$1" --start "$START" --once
    echo idle >"$PHASE_FILE"
}

log "warm-up: ${WARMUP} s"
run_load warmup "$WARMUP"
settle baseline
log "soak: ${DURATION} s"
run_load soak "$DURATION"
settle final

log "report"
rc=0
"${SOAKPY[@]}" report --csv "$OUT/samples.csv" --healthy "$OUT"/healthy-*.jsonl \
    --churn "$OUT"/churn-{warmup,soak}.json --stall "$OUT"/stall-{warmup,soak}.json --junk "${JUNKS[@]}" \
    --log "$OUT/server.log" --admin "127.0.0.1:$ADMIN_PORT" --sighups "$HUPS" \
    --rss-bound-kb "$RSS_BOUND_KB" --fd-bound "$FD_BOUND" --svg "$SVG" \
    --title "tern soak: ${DURATION} s, $(date -u +%Y-%m-%d)" | tee "$OUT/report.txt" || rc=$?
log "samples, logs and report in $OUT"
exit "$rc"
