#!/usr/bin/env bash
# The kernel fast path's benchmark: tern with its eBPF offload on XDP and on TC, the
# same tern relaying in user space, coturn and the null relay (bench/null_relay.rs), on
# a host reached over veth, with `tern load`. The offload does not apply on loopback, so
# unlike the rest of bench/run.sh (which runs this script at its end, as root) this runs
# in network namespaces it creates (root):
#
#   cli (tern load) ──┐
#   srv (the server) ─┼── sw: bridge      all on 10.72.0.0/24 (srv .1, cli .2, peer .3):
#   peer (tern peer) ─┘                   one interface on the server, as on a public host
#
# The bridge's end of the server's veth runs an XDP program that passes everything
# (tests/support/xdp_pass.c), for every server alike: veth hands frames sent back with
# XDP_TX only to a peer that runs XDP itself.
#
#   bench/offload.sh [--rounds N] [--duration S] [--quick] [--out FILE] [--keep]
#
# Workloads (160-byte payloads, channels, UDP): K1 saturation (10 allocations, closed
# loop), K2 10 allocations × 1000 round trips/s, K3 200 allocations × 50 round trips/s
# (VoIP-like). Servers alternate (tern on XDP, tern on TC, tern user space, coturn,
# null, ...), a
# fresh one per run, for --rounds rounds; figures are medians with min–max. The
# figure that matters is *machine* CPU per relayed packet (all CPUs' busy time: their
# time minus their idle time from /proc/stat, over the data phase): work done in the
# kernel's softirq on behalf of the offload is in no process's time. Report: --out, by default
# docs/offload-performance.md; --quick (CI smoke test) writes to a temporary file.
#
# Needs root, iproute2, python3, coturn (scripts/install-test-deps.sh and
# scripts/install-nat-deps.sh install them). All traffic stays inside the namespaces;
# every run is bounded by a timeout; namespaces and servers are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
# shellcheck source=bench/common.sh
. bench/common.sh
COMMAND="bench/offload.sh${*:+ $*}"

parse_run_options "$@"
if [ "${#MORE_ARGS[@]}" -gt 0 ]; then
    echo "offload.sh: unknown argument: ${MORE_ARGS[0]}" >&2
    usage >&2
    exit 2
fi
[ "$(id -u)" -eq 0 ] || { echo "offload.sh: needs root (network namespaces, eBPF)" >&2; exit 1; }

log() { printf '[offload-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# NAME|ALLOCATIONS|tern load arguments after the common ones.
if [ "$QUICK" -eq 1 ]; then
    ROUNDS=1
    DURATION=2
    WORKLOADS=("K2|4|--rate 200 --payload 160")
else
    WORKLOADS=(
        "K1|10|--rate 0 --payload 160"
        "K2|10|--rate 1000 --payload 160"
        "K3|200|--rate 50 --payload 160"
    )
fi
SERVERS=(tern-xdp tern-offload tern coturn null)
if [ -z "$OUT" ]; then
    if [ "$QUICK" -eq 1 ]; then
        OUT=$(mktemp /tmp/tern-offload-bench-quick.XXXXXX.md)
    else
        OUT="$ROOT/docs/offload-performance.md"
    fi
fi

# ---------------------------------------------------------------------------------
# Namespaces, removed on exit with everything running in them.
TAG="tb$$"
NS_SW="$TAG-sw" NS_SRV="$TAG-srv" NS_CLI="$TAG-cli" NS_PEER="$TAG-peer"
SRV_IP=10.72.0.1 CLI_IP=10.72.0.2 PEER_IP=10.72.0.3
ECHO_PORT=3480
WORK=$(mktemp -d /tmp/tern-offload-bench.XXXXXX)
SERVER_PID=""
CHILD_PID=""
ECHO_PID=""

cleanup() {
    local rc=$? ns
    trap - EXIT INT TERM
    for pid in "$CHILD_PID" "$SERVER_PID" "$ECHO_PID"; do
        [ -z "$pid" ] || kill_wait "$pid"
    done
    for ns in "$NS_CLI" "$NS_PEER" "$NS_SRV" "$NS_SW"; do
        ip netns del "$ns" 2>/dev/null || true
    done
    if [ "$KEEP" -eq 1 ]; then log "kept raw results in $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

check_dependencies
scripts/install-nat-deps.sh >/dev/null

log "building tern and the null relay (release)"
build_snapshot "$WORK"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

log "building the namespaces"
for ns in "$NS_SW" "$NS_SRV" "$NS_CLI" "$NS_PEER"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
done
ip -n "$NS_SW" link add br0 type bridge
ip -n "$NS_SW" link set br0 up
for pair in "$NS_SRV:$SRV_IP:s" "$NS_CLI:$CLI_IP:c" "$NS_PEER:$PEER_IP:p"; do
    IFS=: read -r ns addr side <<<"$pair"
    ip link add "$TAG$side" type veth peer name "$TAG${side}b"
    ip link set "$TAG$side" netns "$ns"
    ip link set "$TAG${side}b" netns "$NS_SW"
    ip -n "$NS_SW" link set "$TAG${side}b" master br0 up
    ip -n "$ns" addr add "$addr/24" dev "$TAG$side"
    ip -n "$ns" link set "$TAG$side" up
done
"${CLANG:-clang}" -O2 -target bpf -I"/usr/include/$(uname -m)-linux-gnu" \
    -c tests/support/xdp_pass.c -o "$WORK/xdp_pass.o"
ip -n "$NS_SW" link set dev "${TAG}sb" xdpdrv obj "$WORK/xdp_pass.o" sec xdp

write_tern_config "$WORK/tern.toml"
cp "$WORK/tern.toml" "$WORK/tern-offload.toml"
cp "$WORK/tern.toml" "$WORK/tern-xdp.toml"
printf '\n[relay]\noffload = "off"\n' >>"$WORK/tern.toml"
printf '\n[relay]\noffload = "on"\noffload_xdp = "off"\n' >>"$WORK/tern-offload.toml"
printf '\n[relay]\noffload = "on"\noffload_xdp = "on"\n' >>"$WORK/tern-xdp.toml"

ip netns exec "$NS_PEER" "$TERN" peer --listen "$PEER_IP:$ECHO_PORT" >"$WORK/peer.log" 2>&1 &
ECHO_PID=$!

# start_server NAME DIR: a fresh server in srv on SRV_IP:PORT; sets SERVER_PID.
start_server() {
    local name=$1 dir=$2 config
    PORT=$(pick_ports 1)
    case "$name" in
        tern | tern-offload | tern-xdp)
            config="$WORK/$name.toml"
            ip netns exec "$NS_SRV" "$TERN" serve --config "$config" --listen "$SRV_IP:$PORT" \
                --relay-ip "$SRV_IP" --ports "$RELAY_MIN-$RELAY_MAX" --realm "$REALM" \
                --user "$USER_NAME:$PASSWORD" --allow-peer 10.72.0.0/24 --log-level info \
                >"$dir/server.log" 2>&1 &
            ;;
        coturn)
            ip netns exec "$NS_SRV" turnserver -n --no-cli --listening-ip "$SRV_IP" \
                --listening-port "$PORT" --relay-ip "$SRV_IP" --min-port "$RELAY_MIN" \
                --max-port "$RELAY_MAX" --lt-cred-mech --user "$USER_NAME:$PASSWORD" \
                --realm "$REALM" --no-dtls --no-tls --userdb "$dir/turndb" \
                --pidfile "$dir/turnserver.pid" --log-file "$dir/turnserver.log" --simple-log \
                >"$dir/server.log" 2>&1 &
            ;;
        null)
            ip netns exec "$NS_SRV" "$NULL_RELAY" --listen "$SRV_IP:$PORT" >"$dir/server.log" 2>&1 &
            ;;
    esac
    SERVER_PID=$!
    if ! wait_ready "$SERVER_PID" "$PORT" "" "$SRV_IP" "$NS_CLI"; then
        log "$name did not become ready; its log:"
        tail -n 20 "$dir/server.log" >&2 || true
        kill_wait "$SERVER_PID"
        SERVER_PID=""
        return 1
    fi
    if [[ $name == tern-* ]] && ! grep -q "kernel fast path on" "$dir/server.log"; then
        log "$name runs without its fast path; its log:"
        tail -n 20 "$dir/server.log" >&2
        return 1
    fi
    if [ "$name" = tern-xdp ] && ! grep -q 'xdp=\["' "$dir/server.log"; then
        log "tern-xdp runs without XDP; its log:"
        tail -n 20 "$dir/server.log" >&2
        return 1
    fi
}

RUNS="$WORK/runs.jsonl"
: >"$RUNS"

run_one() { # SPEC SERVER ROUND
    local spec=$1 server=$2 round=$3 name allocations args
    IFS='|' read -r name allocations args <<<"$spec"
    local dir="$WORK/$name.$server.$round" status=ok rc=0 extra
    mkdir -p "$dir"
    if start_server "$server" "$dir"; then
        # shellcheck disable=SC2206 # plain words
        extra=($args)
        timeout --kill-after=5 $((DURATION + 90 + allocations / 10)) \
            ip netns exec "$NS_CLI" "$TERN" load "$SRV_IP:$PORT" --user "$USER_NAME" \
            --pass "$PASSWORD" --allocations "$allocations" --peer "$PEER_IP:$ECHO_PORT" \
            --server-pid "$SERVER_PID" --duration "$DURATION" --json "${extra[@]}" \
            >"$dir/result.json" 2>"$dir/load.err" &
        CHILD_PID=$!
        wait "$CHILD_PID" || rc=$?
        CHILD_PID=""
        [ "$rc" -eq 0 ] || status="tern load exited $rc"
    else
        status="server did not start"
    fi
    [ -z "$SERVER_PID" ] || kill_wait "$SERVER_PID"
    SERVER_PID=""
    [ "$status" = ok ] || log "$name $server round $round: $status"
    python3 -c 'import json,sys; print(json.dumps(dict(zip(["workload","server","round","status","result"], sys.argv[1:]))))' \
        "$name" "$server" "$round" "$status" "$dir/result.json" >>"$RUNS"
}

START=$(date +%s)
run_rounds
ELAPSED=$(($(date +%s) - START))

KERNEL=$(uname -r)
CPUS=$(nproc)
COTURN_VERSION=$(turnserver --version 2>/dev/null | head -n 1 || true)
export BENCH_COMMAND="$COMMAND" BENCH_ROUNDS="$ROUNDS" BENCH_DURATION="$DURATION" \
    BENCH_QUICK="$QUICK" BENCH_ELAPSED="$ELAPSED" BENCH_COMMIT="$COMMIT" \
    BENCH_KERNEL="$KERNEL" BENCH_CPUS="$CPUS" BENCH_NOTES="$ROOT/bench/offload-notes.md" \
    BENCH_COTURN="$COTURN_VERSION"
mkdir -p "$(dirname "$OUT")"
python3 - "$RUNS" "$OUT" <<'PYEOF'
import json, os, statistics, sys, time

runs_path, out_path = sys.argv[1], sys.argv[2]
env = os.environ.get
SERVERS = ["tern-xdp", "tern-offload", "tern", "coturn", "null"]
FAST = ["tern-xdp", "tern-offload"]
LABEL = {"tern-xdp": "tern, fast path on XDP", "tern-offload": "tern, fast path on TC",
         "tern": "tern, user space", "coturn": "coturn", "null": "null relay"}
TITLE = {"K1": "K1 saturation (10 allocations, closed loop, 160 B)",
         "K2": "K2 fixed load (10 allocations × 1000 round trips/s, 160 B)",
         "K3": "K3 VoIP-like (200 allocations × 50 round trips/s, 160 B)"}
FIGS = [("machine_cpu_us_per_packet", "machine CPU µs/packet", "{:.2f}"),
        ("client_cpu_us_per_packet", "load client CPU µs/packet", "{:.2f}"),
        ("server_cpu_us_per_packet", "server process CPU µs/packet", "{:.2f}"),
        ("relayed_pps", "relayed packets/s", "{:,.0f}"),
        ("loss_pct", "loss %", "{:.3f}"),
        ("rtt_p50", "RTT p50 ms", "{:.3f}"),
        ("rtt_p99", "RTT p99 ms", "{:.3f}")]

values, problems, order = {}, {}, []
for line in open(runs_path):
    run = json.loads(line)
    w, s = run["workload"], run["server"]
    if w not in order:
        order.append(w)
    if run["status"] != "ok":
        problems.setdefault((w, s), []).append(f"round {run['round']}: {run['status']}")
    try:
        doc = json.load(open(run["result"]))
    except (OSError, ValueError):
        continue
    loss = doc.get("loss_round_trip")
    figures = {k: doc.get(k) for k in ("machine_cpu_us_per_packet", "client_cpu_us_per_packet",
                                       "server_cpu_us_per_packet", "relayed_pps")}
    figures["loss_pct"] = None if loss is None else loss * 100
    rtt = doc.get("rtt_ms") or {}
    figures["rtt_p50"], figures["rtt_p99"] = rtt.get("p50"), rtt.get("p99")
    for k, v in figures.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            values.setdefault((w, s), {}).setdefault(k, []).append(float(v))


def med(w, s, k):
    v = values.get((w, s), {}).get(k)
    return statistics.median(v) if v else None


def cell(w, s, k, fmt):
    v = values.get((w, s), {}).get(k)
    if not v:
        return "—"
    text = fmt.format(statistics.median(v))
    if len(v) > 1 and min(v) != max(v):
        text += f" ({fmt.format(min(v))}–{fmt.format(max(v))})"
    return text


lines, console = [], []
out = lines.append
out("# Performance of the kernel fast path")
out("")
if env("BENCH_QUICK") == "1":
    out("> **Quick run** (CI smoke test): the figures only show that every path works.")
    out("")
out("Generated by `bench/offload.sh`. The server runs in a network namespace with one "
    "veth interface on a bridge, the load client (`tern load`) and its echo peer "
    "(`tern peer`) in two others: three hosts on one segment, as a public TURN host with "
    "one interface sees its clients and peers. The offload does not apply on loopback, "
    "which is why `bench/run.sh` (as root) runs this script for these workloads. Servers alternate (tern with its "
    "kernel fast path on XDP (`relay.offload_xdp = \"on\"`), on TC alone (`\"off\"`), the "
    "same tern with `relay.offload = \"off\"`, coturn, the null relay), a fresh one per "
    "run; figures are medians over the rounds with min–max. The bridge's end of the "
    "server's veth runs an XDP program that passes everything, for every server: veth "
    "hands frames sent back with XDP_TX only to a peer that runs XDP itself (a NIC "
    "driver needs nothing of the kind).")
out("")
out(f"- Command: `{env('BENCH_COMMAND')}`; {env('BENCH_ROUNDS')} rounds of "
    f"{env('BENCH_DURATION')} s; the run took {int(env('BENCH_ELAPSED'))} s; "
    f"{time.strftime('%Y-%m-%d %H:%M %Z')}")
out(f"- Machine: {env('BENCH_CPUS')} CPUs, Linux {env('BENCH_KERNEL')}; tern from commit "
    f"{env('BENCH_COMMIT')}; {env('BENCH_COTURN')}")
out("")
out("*Machine CPU* is the busy time of all CPUs (the time all online CPUs had minus "
    "their idle and iowait time from `/proc/stat`, exact on a tickless kernel; the busy "
    "fields themselves are charged a tick at a time and miss most of a paced load) over "
    "the data phase per relayed packet (a round "
    "trip is two): it counts the server, the kernel's work on its packets wherever it "
    "is accounted (the offload runs in the softirq of the receiving interface, in no "
    "process's time), the veth and bridge hops every server pays alike, the load client "
    "and the echo peer. *Load client CPU* is `tern load`'s own time, shown so that "
    "machine − load client reads as what the relaying cost elsewhere. *Server process "
    "CPU* is the server's own user + system time: near 0 for the fast path, which is "
    "why it is not the figure to compare.")
out("")
for w in order:
    out(f"## {TITLE.get(w, w)}")
    out("")
    out("| server | " + " | ".join(t for _, t, _ in FIGS) + " |")
    out("| --- | " + " | ".join("---:" for _ in FIGS) + " |")
    console.append(TITLE.get(w, w))
    for s in SERVERS:
        row = [cell(w, s, k, f) for k, _, f in FIGS]
        out(f"| {LABEL[s]} | " + " | ".join(row) + " |")
        console.append(f"  {LABEL[s]:<24} " + "  ".join(f"{t}: {c}" for (_, t, _), c in zip(FIGS, row)))
    out("")
    for fast in FAST:
        base = med(w, fast, "machine_cpu_us_per_packet")
        ratios = []
        for s in ("tern", "coturn", "null"):
            other = med(w, s, "machine_cpu_us_per_packet")
            if base is not None and other:
                ratios.append(f"{LABEL[s]} {base / other:.2f}×")
        if ratios:
            out(f"- Machine CPU per packet of {LABEL[fast]} divided by: " + ", ".join(ratios) + ".")
    for s in SERVERS:
        for p in problems.get((w, s), []):
            out(f"- {LABEL[s]}: {p}")
            console.append(f"  ! {LABEL[s]}: {p}")
    out("")

out("## Targets")
out("")
out("The fast path below is tern on XDP, its form on a host with one interface.")
out("")
out("| target | measured | |")
out("| --- | --- | --- |")
console.append("Targets")
def without_client(w, s):
    m, l = med(w, s, "machine_cpu_us_per_packet"), med(w, s, "client_cpu_us_per_packet")
    return None if m is None or l is None else m - l


for w in order:
    fast = "tern-xdp"
    t, c, n = (med(w, s, "machine_cpu_us_per_packet") for s in (fast, "coturn", "null"))
    checks = []
    if t is not None and c:
        checks.append((f"{w}: machine CPU/packet ≤ 0.35× coturn", f"{t / c:.2f}× ({t:.2f} vs {c:.2f} µs)", t / c <= 0.35))
    tw, cw = without_client(w, fast), without_client(w, "coturn")
    if tw is not None and cw:
        checks.append((f"{w}: the same without the load client's own CPU (for reference)",
                       f"{tw / cw:.2f}× ({tw:.2f} vs {cw:.2f} µs)", tw / cw <= 0.35))
    if t is not None and n:
        checks.append((f"{w}: machine CPU/packet below the null relay", f"{t:.2f} vs {n:.2f} µs", t < n))
    loss = values.get((w, fast), {}).get("loss_pct")
    if loss:
        checks.append((f"{w}: loss 0", f"max {max(loss):.3f} %", max(loss) == 0))
    tp, cp = med(w, fast, "rtt_p99"), med(w, "coturn", "rtt_p99")
    if tp is not None and cp is not None:
        checks.append((f"{w}: RTT p99 ≤ coturn's", f"{tp:.3f} vs {cp:.3f} ms", tp <= cp))
    for name, measured, ok in checks:
        out(f"| {name} | {measured} | {'met' if ok else '**not met**'} |")
        console.append(f"  {'met' if ok else 'NOT MET':<8} {name}: {measured}")
out("")
# The hand-written reading of the results lives in bench/offload-notes.md, so that
# regenerating the report keeps it.
notes = env("BENCH_NOTES")
if env("BENCH_QUICK") != "1" and notes and os.path.exists(notes):
    out(open(notes).read().rstrip())
    out("")
with open(out_path, "w") as f:
    f.write("\n".join(lines))
print("\n".join(console))
# A server that did not start, or a load run that failed, fails the benchmark (and the
# quick run in the test command), after the report is written.
if problems:
    print(f"failed runs: see {out_path}", file=sys.stderr)
    sys.exit(1)
PYEOF
log "report written to $OUT (${ELAPSED} s)"
