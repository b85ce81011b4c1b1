#!/usr/bin/env bash
# End-to-end relay benchmark: tern against coturn and the null relay (the least work a
# user-space relay can do, bench/null_relay.rs), on loopback, with `tern load`; then,
# as root, the kernel fast path's workloads in network namespaces (bench/offload.sh,
# same options, its own report).
#
#   bench/run.sh [--rounds N] [--duration S] [--quick] [--out FILE]
#                [--workloads W2,W4,...] [--keep]
#
# For each workload, servers run in turn tern, coturn, null relay, and tern with one
# worker (`--workers 1`, UDP data workloads only: it shows how much of tern's cost at
# paced load is the second worker's wake-ups) and tern with bandwidth limits set at
# every level but never reached (UDP data workloads only: what charging the token
# buckets costs per packet) (A B C D E A B C D E ...)
# for --rounds rounds, a FRESH server per run, stopped after it. Every figure is the
# median (with min and max) over the rounds. A Markdown report (command, machine, tool
# versions, tables, ratios to tern and the targets) goes to --out, by default
# docs/performance.md; --quick (a tiny configuration for CI) writes to a temporary
# file unless --out is given.
#
# Workloads (160-byte payloads, UDP unless said):
#   W1  saturation: 10 allocations, closed loop (--rate 0), as fast as echoes return
#   W2  fixed load: 10 allocations x 1000 round trips/s
#   W3  VoIP-like: 200 allocations x 50 round trips/s
#   W4  setup: 2000 allocations, setup only (CPU per allocation, failures)
#   W5  memory: 10,000 idle allocations held a few seconds (RSS per allocation)
#   W6  W2 over TCP and over TLS (tern and coturn; the null relay is UDP only)
#   W7  W2 with 1200-byte payloads
#
# BENCH_LOAD_BIN=PATH runs the load client from another tern build (the servers are
# always this tree's); the report says so. BENCH_TERN_B=PATH adds a server "tern B":
# another tern build run exactly as tern is, in every round, to compare two builds
# side by side (an A/B of one change).
#
# Needs: a Rust toolchain (cargo), Debian/Ubuntu for the automatic install of coturn,
# openssl and python3 (scripts/install-test-deps.sh). All traffic stays on
# 127.0.0.1; every run is bounded by a timeout; servers are killed on exit.
set -euo pipefail
# BENCH_TERN_B may be relative to where this was started.
[ -z "${BENCH_TERN_B:-}" ] || BENCH_TERN_B=$(realpath "$BENCH_TERN_B")
cd "$(dirname "$0")/.."
ROOT=$(pwd)
# shellcheck source=bench/common.sh
. bench/common.sh
COMMAND="bench/run.sh${*:+ $*}"

parse_run_options "$@"
ONLY=""
set -- ${MORE_ARGS[@]+"${MORE_ARGS[@]}"}
while [ $# -gt 0 ]; do
    case "$1" in
        --workloads) ONLY=${2:?--workloads takes a list like W2,W4}; shift 2 ;;
        --workloads=*) ONLY=${1#*=}; shift ;;
        *) echo "run.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------------------------
# Workloads: NAME|TRANSPORT|ALLOCATIONS|KIND|tern load arguments after the common
# ones (see bench/common.sh). The payload is always given; --duration is added to data
# workloads.
if [ "$QUICK" -eq 1 ]; then
    ROUNDS=1
    DURATION=2
    HOLD=2
    WORKLOADS=(
        "W2|udp|4|data|--rate 200 --payload 160"
        "W4|udp|100|setup|--setup-only --payload 160"
        "W5|udp|300|hold|--hold $HOLD --payload 160"
        "W6-tcp|tcp|4|data|--rate 200 --payload 160"
        "W6-tls|tls|4|data|--rate 200 --payload 160"
    )
else
    HOLD=5
    full_workloads "$HOLD"
fi
SERVERS=(tern coturn null tern-1w tern-bw)
[ -z "${BENCH_TERN_B:-}" ] || SERVERS+=(tern-b)
if [ -n "$ONLY" ]; then
    selected=()
    for w in "${WORKLOADS[@]}"; do
        name=${w%%|*}
        case ",$ONLY," in *",$name,"* | *",${name%%-*},"*) selected+=("$w") ;; esac
    done
    [ "${#selected[@]}" -gt 0 ] || { echo "run.sh: --workloads $ONLY matches nothing" >&2; exit 2; }
    WORKLOADS=("${selected[@]}")
fi
if [ -z "$OUT" ]; then
    if [ "$QUICK" -eq 1 ]; then
        OUT=$(mktemp /tmp/tern-bench-quick.XXXXXX.md)
    else
        OUT="$ROOT/docs/performance.md"
    fi
fi

# ---------------------------------------------------------------------------------
# State and cleanup: every process this script starts is killed on exit.
WORK=$(mktemp -d /tmp/tern-bench.XXXXXX)
SERVER_PID=""
CHILD_PID=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [ -n "$CHILD_PID" ] && kill_wait "$CHILD_PID"
    [ -n "$SERVER_PID" ] && kill_wait "$SERVER_PID"
    if [ "$KEEP" -eq 1 ]; then
        log "kept raw results in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------
# Dependencies and builds.
check_dependencies

log "building tern and the null relay (release)"
build_snapshot "$WORK"
if [ -n "${BENCH_TERN_B:-}" ]; then
    cp "$BENCH_TERN_B" "$WORK/bin/tern-b"
fi
TERN_B="$WORK/bin/tern-b"
# The load client: this tree's tern unless BENCH_LOAD_BIN names another build.
LOAD_BIN=${BENCH_LOAD_BIN:-$TERN}
"$LOAD_BIN" load --help >/dev/null 2>&1 || { log "$LOAD_BIN has no 'load' command"; exit 1; }

# Many allocations are many sockets, in the servers and in the load client.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)

# A self-signed certificate for 127.0.0.1 (W6 TLS).
make_cert "$WORK"

write_tern_config "$WORK/tern.toml"
write_tern_bandwidth_config "$WORK/tern.toml" "$WORK/tern-bw.toml"

# ---------------------------------------------------------------------------------
# Servers.

# start_server NAME TRANSPORT DIR: starts a fresh server in the background, sets
# SERVER_PID, PORT (where the load client connects) and waits until it answers.
start_server() {
    local name=$1 transport=$2 dir=$3 udp_port tls_port tcp_check=""
    read -r udp_port tls_port < <(pick_ports 2)
    PORT=$udp_port
    case "$name" in
        tern)
            start_tern "$TERN" "$WORK" "$dir" "$transport" "$udp_port" "$tls_port"
            [ "$transport" != tls ] || PORT=$tls_port
            ;;
        tern-1w)
            start_tern "$TERN" "$WORK" "$dir" "$transport" "$udp_port" "$tls_port" --workers 1
            ;;
        tern-bw)
            TERN_CONFIG="$WORK/tern-bw.toml" \
                start_tern "$TERN" "$WORK" "$dir" "$transport" "$udp_port" "$tls_port"
            ;;
        tern-b)
            start_tern "$TERN_B" "$WORK" "$dir" "$transport" "$udp_port" "$tls_port"
            [ "$transport" != tls ] || PORT=$tls_port
            ;;
        coturn)
            local tls_args=(--no-tls)
            if [ "$transport" = tls ]; then
                tls_args=(--cert "$WORK/cert.pem" --pkey "$WORK/key.pem" --tls-listening-port "$tls_port")
                PORT=$tls_port
            fi
            turnserver -n --no-cli --listening-ip 127.0.0.1 --listening-port "$udp_port" \
                --relay-ip 127.0.0.1 --min-port "$RELAY_MIN" --max-port "$RELAY_MAX" \
                --lt-cred-mech --user "$USER_NAME:$PASSWORD" --realm "$REALM" \
                --allow-loopback-peers --no-dtls "${tls_args[@]}" \
                --userdb "$dir/turndb" --pidfile "$dir/turnserver.pid" \
                --log-file "$dir/turnserver.log" --simple-log \
                >"$dir/server.log" 2>&1 &
            SERVER_PID=$!
            ;;
        null)
            "$NULL_RELAY" --listen "127.0.0.1:$udp_port" >"$dir/server.log" 2>&1 &
            SERVER_PID=$!
            ;;
    esac
    [ "$transport" = udp ] || tcp_check=$PORT
    if ! wait_ready "$SERVER_PID" "$udp_port" "$tcp_check"; then
        log "$name did not become ready; its log:"
        tail -n 20 "$dir/server.log" "$dir/turnserver.log" 2>/dev/null >&2 || true
        kill_wait "$SERVER_PID"
        SERVER_PID=""
        return 1
    fi
}

stop_server() {
    [ -n "$SERVER_PID" ] && kill_wait "$SERVER_PID"
    SERVER_PID=""
}

# ---------------------------------------------------------------------------------
# Runs.
RUNS="$WORK/runs.jsonl"
: >"$RUNS"

record() { # WORKLOAD SERVER ROUND STATUS [RESULT_FILE]
    python3 - "$@" >>"$RUNS" <<'EOF'
import json, sys
w, s, r, status = sys.argv[1:5]
print(json.dumps({"workload": w, "server": s, "round": int(r), "status": status,
                  "result": sys.argv[5] if len(sys.argv) > 5 else None}))
EOF
}

run_one() { # WORKLOAD-SPEC SERVER ROUND
    local spec=$1 server=$2 round=$3
    local name transport allocations kind args
    IFS='|' read -r name transport allocations kind args <<<"$spec"
    local dir="$WORK/$name.$server.$round"
    mkdir -p "$dir"
    if { [ "$server" = null ] && [ "$transport" != udp ]; } ||
        { case "$server" in tern-1w | tern-bw) true ;; *) false ;; esac &&
            { [ "$transport" != udp ] || [ "$kind" != data ]; }; }; then
        record "$name" "$server" "$round" skipped
        return 0
    fi
    if ! start_server "$server" "$transport" "$dir"; then
        record "$name" "$server" "$round" "server did not start"
        return 0
    fi
    local extra=() limit
    # shellcheck disable=SC2206 # the argument lists above are plain words
    extra=($args)
    case "$kind" in
        data) extra+=(--duration "$DURATION"); limit=$((DURATION + 90 + allocations / 10)) ;;
        hold) limit=$((HOLD + 120 + allocations / 10)) ;;
        *) limit=$((120 + allocations / 10)) ;;
    esac
    case "$transport" in
        tcp) extra+=(--transport tcp) ;;
        tls) extra+=(--transport tls --tls-insecure) ;;
    esac
    local rc=0
    timeout --kill-after=5 "$limit" "$LOAD_BIN" load "127.0.0.1:$PORT" \
        --user "$USER_NAME" --pass "$PASSWORD" --allocations "$allocations" \
        --server-pid "$SERVER_PID" --json "${extra[@]}" \
        >"$dir/result.json" 2>"$dir/load.err" &
    CHILD_PID=$!
    wait "$CHILD_PID" || rc=$?
    CHILD_PID=""
    stop_server
    local status=ok
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        status="timed out after ${limit} s"
    elif [ "$rc" -ne 0 ]; then
        status="tern load exited $rc"
        local last
        last=$(grep -v '^[[:space:]]*$' "$dir/load.err" | tail -n 1 | cut -c1-200 || true)
        [ -z "$last" ] || status="$status: $last"
    fi
    if [ "$status" != ok ] && ! [ -s "$dir/result.json" ]; then
        log "$name $server round $round: $status"
        tail -n 5 "$dir/load.err" >&2 || true
        record "$name" "$server" "$round" "$status"
    else
        record "$name" "$server" "$round" "$status" "$dir/result.json"
    fi
}

START=$(date +%s)
LOADAVG_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "workloads: $(printf '%s ' "${WORKLOADS[@]%%|*}")× ${SERVERS[*]} × $ROUNDS round(s), ${DURATION} s data phases"
run_rounds
ELAPSED=$(($(date +%s) - START))
LOADAVG_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------
# Report.
TERN_VERSION=$("$TERN" --version 2>/dev/null | head -n 1)
COTURN_VERSION=$(turnserver --version 2>/dev/null | head -n 1 || true)
if dpkg-query -W coturn >/dev/null 2>&1; then
    COTURN_VERSION="$COTURN_VERSION (Debian package $(dpkg-query -W -f='${Version}' coturn))"
fi
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
RUSTC_VERSION=$(rustc --version 2>/dev/null || echo unknown)
OTHER_LOAD_BIN=$([ "$LOAD_BIN" = "$TERN" ] || echo "$LOAD_BIN")
export BENCH_COMMAND="$COMMAND" BENCH_ROUNDS="$ROUNDS" BENCH_DURATION="$DURATION" \
    BENCH_HOLD="$HOLD" BENCH_QUICK="$QUICK" BENCH_ELAPSED="$ELAPSED" BENCH_NOFILE="$NOFILE" \
    BENCH_LOADAVG="$LOADAVG_BEFORE before, $LOADAVG_AFTER after" BENCH_CLK_TCK="$CLK_TCK" \
    BENCH_TERN_VERSION="$TERN_VERSION" BENCH_COTURN_VERSION="$COTURN_VERSION" \
    BENCH_RUSTC="$RUSTC_VERSION" BENCH_LOAD_BIN="$OTHER_LOAD_BIN" \
    BENCH_COMMIT="$COMMIT" BENCH_NOTES="$ROOT/bench/notes.md" \
    BENCH_TERN_B="${BENCH_TERN_B:-}"
mkdir -p "$(dirname "$OUT")"
python3 - "$RUNS" "$OUT" <<'PYEOF'
import json, os, platform, statistics, subprocess, sys, time

runs_path, out_path = sys.argv[1], sys.argv[2]
env = os.environ.get
runs = [json.loads(line) for line in open(runs_path) if line.strip()]
SERVERS = ["tern", "coturn", "null", "tern-1w", "tern-bw"] + (["tern-b"] if env("BENCH_TERN_B") else [])
LABEL = {"tern": "tern", "coturn": "coturn", "null": "null relay", "tern-1w": "tern, 1 worker",
         "tern-bw": "tern, limits on", "tern-b": "tern B"}


def get(doc, *paths):
    """The first of `paths` (dotted) present in `doc`, as a float."""
    for path in paths:
        node = doc
        for key in path.split("."):
            if isinstance(node, dict) and key in node:
                node = node[key]
            else:
                node = None
                break
        if isinstance(node, bool):
            continue
        if isinstance(node, (int, float)):
            return float(node)
    return None


def metrics(doc):
    """The figures of one `tern load --json` result (None when absent)."""
    m = {}
    m["cpu_per_packet_us"] = get(doc, "server_cpu_us_per_packet")
    m["machine_cpu_per_packet_us"] = get(doc, "machine_cpu_us_per_packet")
    m["client_cpu_per_packet_us"] = get(doc, "client_cpu_us_per_packet")
    m["packets_per_s"] = get(doc, "relayed_pps")
    loss = get(doc, "loss_round_trip")
    m["loss_pct"] = None if loss is None else loss * 100
    m["rtt_p50_ms"] = get(doc, "rtt_ms.p50")
    m["rtt_p99_ms"] = get(doc, "rtt_ms.p99")
    m["setup_per_s"] = get(doc, "setup_rate")
    wanted, ok = get(doc, "allocations"), get(doc, "allocations_ok")
    m["setup_failures"] = None if wanted is None or ok is None else wanted - ok
    m["allocations_ok"] = ok
    m["cpu_per_alloc_us"] = get(doc, "server_cpu_us_per_allocation")
    m["rss_per_alloc_b"] = get(doc, "rss_delta_per_allocation_bytes")
    return m


def faults(doc):
    """What went wrong in a run that still reported."""
    notes = []
    failures = doc.get("allocation_failures") or {}
    if failures:
        notes.append("allocations failed: " + ", ".join(f"{k}={v}" for k, v in failures.items()))
    for key, what in (("hold_refresh_failures", "refreshes failed"),
                      ("links_failed", "allocations failed during the data phase"),
                      ("peer_dropped", "packets the load client's echo peer dropped")):
        if doc.get(key):
            notes.append(f"{what}: {doc[key]}")
    return notes


# Which figures each workload reports, in table order: (key, title, format).
FIGURES = {
    "data": [
        ("cpu_per_packet_us", "server CPU µs/packet", "{:.2f}"),
        ("machine_cpu_per_packet_us", "machine CPU µs/packet", "{:.2f}"),
        ("client_cpu_per_packet_us", "load client CPU µs/packet", "{:.2f}"),
        ("packets_per_s", "relayed packets/s", "{:,.0f}"),
        ("loss_pct", "loss %", "{:.3f}"),
        ("rtt_p50_ms", "RTT p50 ms", "{:.3f}"),
        ("rtt_p99_ms", "RTT p99 ms", "{:.3f}"),
    ],
    "setup": [
        ("setup_per_s", "allocations/s", "{:,.0f}"),
        ("cpu_per_alloc_us", "server CPU µs/allocation", "{:.1f}"),
        ("setup_failures", "failed allocations", "{:.0f}"),
    ],
    "hold": [
        ("rss_per_alloc_b", "RSS bytes/allocation", "{:,.0f}"),
        ("setup_failures", "failed allocations", "{:.0f}"),
    ],
}
KIND = {"W1": "data", "W2": "data", "W3": "data", "W4": "setup", "W5": "hold",
        "W6-tcp": "data", "W6-tls": "data", "W7": "data"}
TITLE = {
    "W1": "W1 saturation (10 allocations, closed loop, 160 B)",
    "W2": "W2 fixed load (10 allocations × 1000 round trips/s, 160 B)",
    "W3": "W3 VoIP-like (200 allocations × 50 round trips/s, 160 B)",
    "W4": "W4 setup (2000 allocations, setup only)",
    "W5": "W5 memory (10,000 idle allocations)",
    "W6-tcp": "W6 TCP (W2 over TCP)",
    "W6-tls": "W6 TLS (W2 over TLS)",
    "W7": "W7 large payloads (W2 with 1200 B)",
}
if env("BENCH_QUICK") == "1":
    TITLE = {k: v.split(" (")[0] + " (quick: reduced size)" for k, v in TITLE.items()}

# Per workload and server: the figures of every successful run, and what went wrong.
order = []
values, problems = {}, {}
for run in runs:
    w, s = run["workload"], run["server"]
    if w not in order:
        order.append(w)
    key = (w, s)
    if run["status"] == "skipped":
        problems.setdefault(key, []).append("skipped (UDP only)")
        continue
    doc = None
    if run.get("result"):
        try:
            with open(run["result"]) as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            problems.setdefault(key, []).append(f"round {run['round']}: unreadable result ({e})")
    notes = faults(doc) if doc is not None else []
    # A report with failures makes `tern load` exit 1: the failures say more.
    if run["status"] != "ok" and not (notes and run["status"].startswith("tern load exited 1")):
        problems.setdefault(key, []).append(f"round {run['round']}: {run['status']}")
    if doc is None:
        continue
    for note in notes:
        problems.setdefault(key, []).append(f"round {run['round']}: {note}")
    for k, v in metrics(doc).items():
        if v is not None:
            values.setdefault(key, {}).setdefault(k, []).append(v)


def stat(w, s, k):
    v = values.get((w, s), {}).get(k)
    if not v:
        return None
    return statistics.median(v), min(v), max(v), len(v)


def cell(w, s, k, fmt):
    st = stat(w, s, k)
    if st is None:
        return "—"
    med, lo, hi, n = st
    text = fmt.format(med)
    if n > 1 and lo != hi:
        text += f" ({fmt.format(lo)}–{fmt.format(hi)})"
    return text


def ratio(w, s, k):
    a, b = stat(w, s, k), stat(w, "tern", k)
    if a is None or b is None or b[0] == 0:
        return None
    return a[0] / b[0]


lines, console = [], []
out = lines.append


def machine():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) // 1024} MiB RAM"
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu}){mem}, Linux {platform.release()}"


out("# Performance")
out("")
if env("BENCH_QUICK") == "1":
    out("> **Quick run** (CI smoke test: one round, short phases, small sizes). The figures "
        "only show that every path works; they are not a measurement.")
    out("")
out("Generated by `bench/run.sh`: tern against coturn and the *null relay* "
    "(`bench/null_relay.rs`, the least work any user-space TURN relay can do: no "
    "authentication, no checks, one receive and one send per relayed packet), all on "
    "127.0.0.1, driven by `tern load`. Each server is started fresh for every run and "
    "stopped after it; servers alternate (tern, coturn, null relay, tern with one worker, tern with "
    "bandwidth limits, tern, …) so drift "
    "in the machine hits all of them alike. Figures are medians over the rounds, with "
    "the min–max range in parentheses.")
out("")
out(f"- Command: `{env('BENCH_COMMAND')}`")
out(f"- Date: {time.strftime('%Y-%m-%d %H:%M %Z')}; the whole run took {int(env('BENCH_ELAPSED', '0')) // 60} min {int(env('BENCH_ELAPSED', '0')) % 60} s")
out(f"- Machine: {machine()}; open-file limit {env('BENCH_NOFILE')}; load average "
    f"(1/5/15 min) {env('BENCH_LOADAVG')} the run (other work on the machine skews the figures)")
out(f"- tern: {env('BENCH_TERN_VERSION')} built from commit {env('BENCH_COMMIT')}, {env('BENCH_RUSTC')}, release build")
out(f"- coturn: {env('BENCH_COTURN_VERSION')}")
if env("BENCH_LOAD_BIN"):
    out(f"- Load client: `{env('BENCH_LOAD_BIN')} load` (not this tree's tern; the servers are this tree's)")
if env("BENCH_TERN_B"):
    out(f"- tern B: `{env('BENCH_TERN_B')}`, another build run exactly as tern is (BENCH_TERN_B)")
out(f"- Rounds: {env('BENCH_ROUNDS')}; data phase {env('BENCH_DURATION')} s; W5 holds {env('BENCH_HOLD')} s")
out("")
out("How the figures are measured (by `tern load --server-pid`): *server CPU* is the "
    "server process's user + system time (from `/proc/PID/stat`) over the data phase, "
    "divided by the packets it relayed (each round trip is two relayed packets: client "
    "→ peer and peer → client); *loss* counts probes whose echo never came back; RTT is "
    "client → relay → peer → relay → client; *RSS per allocation* is the growth of the "
    "server's resident memory while the allocations are held, divided by their number. "
    f"Process CPU time is counted in clock ticks ({1000 // int(env('BENCH_CLK_TCK') or 100)} ms "
    "each here), so a figure resting on few ticks (short runs, setup of few allocations) "
    "is coarse; 0 means under one tick.")
out("")
out("*Machine CPU* is the busy time of all CPUs together (the time all online CPUs had, "
    "minus their idle and iowait time from the `cpu` line of `/proc/stat`, which a "
    "tickless kernel keeps exactly) over the "
    "same data phase, divided by the same relayed packets: it counts the server, the "
    "kernel's work on its packets wherever that is accounted (softirq, or relaying done "
    "in the kernel outside any server thread, which server CPU cannot see), the load "
    "client with its echo peer, and whatever else runs on the machine. *Load client CPU* "
    "is `tern load`'s own user + system time (with its built-in echo peer) over that "
    "phase per relayed packet, so machine − load client is the CPU the relaying cost "
    "everywhere else (plus background noise). `/proc/stat` reports in clock ticks, "
    "so machine CPU is coarse for short phases at low packet rates.")
out("")
out("Servers: tern (`tern serve`, static user, relay ports 10000–29999 on 127.0.0.1, "
    "the 401 rate limiter off and allocation limits raised to 20,000 so one user on one IP "
    "can hold every allocation); coturn (`turnserver -n --no-cli --lt-cred-mech "
    "--allow-loopback-peers --no-dtls`, same user, relay and ports, TLS only for W6); "
    "null relay (`null_relay --listen`, UDP only, so W6 is skipped for it); tern, 1 "
    "worker (the same tern with `--workers 1`, for the UDP data workloads only: the "
    "default is one worker per CPU, and the difference shows what the second worker's "
    "wake-ups cost at each load); tern, limits on (the same tern with `[bandwidth]` "
    "limits per allocation, per user and for the server, each far above what the "
    "workload sends, so every relayed packet is charged to three token buckets and none "
    "is dropped: UDP data workloads only).")
out("")

for w in order:
    kind = KIND.get(w, "data")
    out(f"## {TITLE.get(w, w)}")
    out("")
    figs = FIGURES[kind]
    out("| server | " + " | ".join(t for _, t, _ in figs) + " |")
    out("| --- | " + " | ".join("---:" for _ in figs) + " |")
    console.append(f"{TITLE.get(w, w)}")
    for s in SERVERS:
        row = [cell(w, s, k, f) for k, _, f in figs]
        if all(c == "—" for c in row) and (w, s) in problems and any(
                "skipped" in p for p in problems[(w, s)]):
            row = ["skipped"] + [""] * (len(row) - 1)
        out(f"| {LABEL[s]} | " + " | ".join(row) + " |")
        if row[0] == "skipped":
            console.append(f"  {LABEL[s]:<10} skipped")
        else:
            console.append(f"  {LABEL[s]:<10} " + "  ".join(f"{t}: {c}" for (_, t, _), c in zip(figs, row)))
    # The load client is the same for every server: its CPU is no figure of theirs.
    ratio_keys = [(k, t) for k, t, _ in figs
                  if k not in ("setup_failures", "loss_pct", "client_cpu_per_packet_us")]
    rows = []
    for s in SERVERS[1:]:
        rs = [ratio(w, s, k) for k, _ in ratio_keys]
        if any(r is not None for r in rs):
            rows.append((s, rs))
    if rows:
        out("")
        out("Ratio to tern (the other server's median divided by tern's; above 1 means "
            "the other server uses more, or achieves more for rates):")
        out("")
        out("| server | " + " | ".join(t for _, t in ratio_keys) + " |")
        out("| --- | " + " | ".join("---:" for _ in ratio_keys) + " |")
        for s, rs in rows:
            out(f"| {LABEL[s]} | " + " | ".join("—" if r is None else f"{r:.2f}×" for r in rs) + " |")
    notes = [(s, p) for s in SERVERS for p in problems.get((w, s), []) if "skipped" not in p]
    if notes:
        out("")
        for s, p in notes:
            out(f"- {LABEL[s]}: {p}")
            console.append(f"  ! {LABEL[s]}: {p}")
    out("")

# Targets from the performance issue.
targets = []


def target(name, measured, ok):
    targets.append((name, measured, ok))


def med(w, s, k):
    st = stat(w, s, k)
    return None if st is None else st[0]


def rel(w, k, other, limit):
    t, o = med(w, "tern", k), med(w, other, k)
    if t is None or o is None or o == 0:
        return "no data", None
    r = t / o
    return f"{r:.2f}× ({t:.3g} vs {o:.3g})", r <= limit


for w in ("W2", "W3"):
    if w in order:
        target(f"{w}: tern CPU/packet ≤ 0.6× coturn", *rel(w, "cpu_per_packet_us", "coturn", 0.6))
        target(f"{w}: tern CPU/packet ≤ 1.1× null relay", *rel(w, "cpu_per_packet_us", "null", 1.1))
if "W1" in order:
    target("W1: tern CPU/packet at saturation ≤ 0.85× coturn", *rel("W1", "cpu_per_packet_us", "coturn", 0.85))
for w in ("W6-tcp", "W6-tls"):
    if w in order:
        target(f"{w}: tern CPU/packet ≤ 0.9× coturn", *rel(w, "cpu_per_packet_us", "coturn", 0.9))
if "W4" in order:
    text, ok = rel("W4", "cpu_per_alloc_us", "coturn", 0.2)
    fails = values.get(("W4", "tern"), {}).get("setup_failures")
    if fails is None:
        ok = None if ok is None else False
        text += "; failures: no data"
    else:
        text += f"; failures: {int(max(fails))}"
        ok = None if ok is None else (ok and max(fails) == 0)
    ok_allocs = values.get(("W4", "tern"), {}).get("allocations_ok")
    per_alloc = med("W4", "tern", "cpu_per_alloc_us")
    if per_alloc is not None and ok_allocs:
        ticks = per_alloc * statistics.median(ok_allocs) * int(env("BENCH_CLK_TCK") or 100) / 1e6
        if ticks < 10:
            text += f"; tern's setup took {ticks:.0f} clock ticks of CPU: coarse"
    target("W4: tern CPU/allocation ≤ 0.2× coturn, no failures", text, ok)
if "W5" in order:
    m = med("W5", "tern", "rss_per_alloc_b")
    target("W5: tern ≤ 2 KiB per idle allocation",
           "no data" if m is None else f"{m:,.0f} B", None if m is None else m <= 2048)
for w in ("W2", "W3"):
    if w in order:
        t, b = med(w, "tern", "cpu_per_packet_us"), med(w, "tern-bw", "cpu_per_packet_us")
        target(f"{w}: tern with bandwidth limits CPU/packet ≤ 1.05× tern without",
               "no data" if t is None or b is None or t == 0 else f"{b / t:.2f}× ({b:.3g} vs {t:.3g})",
               None if t is None or b is None or t == 0 else b / t <= 1.05)
for w in ("W2", "W3", "W6-tcp", "W6-tls"):
    if w in order:
        v = values.get((w, "tern"), {}).get("loss_pct")
        target(f"{w}: tern loss 0 %", "no data" if not v else f"max {max(v):.3f} %",
               None if not v else max(v) == 0)
for w in ("W2", "W3"):
    if w in order:
        t, c = med(w, "tern", "rtt_p99_ms"), med(w, "coturn", "rtt_p99_ms")
        target(f"{w}: tern RTT p99 not worse than coturn's",
               "no data" if t is None or c is None else f"{t:.3f} ms vs {c:.3f} ms",
               None if t is None or c is None else t <= c)

out("## Targets")
out("")
out("| target | measured | |")
out("| --- | --- | --- |")
console.append("Targets")
for name, measured, ok in targets:
    mark = "no data" if ok is None else ("met" if ok else "**not met**")
    out(f"| {name} | {measured} | {mark} |")
    console.append(f"  {'?' if ok is None else ('met' if ok else 'NOT MET'):<8} {name}: {measured}")
out("")

# The hand-written reading of the results (why a target is not met, what would close
# it) lives in bench/notes.md so that regenerating the report keeps it.
notes = env("BENCH_NOTES")
if notes and os.path.exists(notes):
    out(open(notes).read().rstrip())
    out("")

with open(out_path, "w") as f:
    f.write("\n".join(lines))
print("\n".join(console))
PYEOF
log "report written to $OUT (${ELAPSED} s)"

# The kernel fast path's workloads (K1-K3) need network namespaces and root:
# bench/offload.sh runs them with the same rounds and duration (and --keep) and writes
# its own report.
if [ -n "$ONLY" ]; then
    log "kernel fast path workloads not run (--workloads picks workloads of this script)"
elif [ "$(id -u)" -ne 0 ]; then
    log "kernel fast path workloads skipped: bench/offload.sh needs root (network namespaces, eBPF)"
else
    offload_args=(--rounds "$ROUNDS" --duration "$DURATION")
    [ "$QUICK" -eq 0 ] || offload_args=(--quick)
    [ "$KEEP" -eq 0 ] || offload_args+=(--keep)
    bench/offload.sh "${offload_args[@]}"
fi
