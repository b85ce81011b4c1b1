#!/usr/bin/env bash
# CPU profile of tern under one benchmark workload: where the server's time goes, kernel
# against tern's own code.
#
#   bench/profile.sh [WORKLOAD] [--duration S] [--keep]
#
# Starts a fresh release tern on 127.0.0.1 with the configuration bench/run.sh gives it,
# drives WORKLOAD (default W3; any of bench/run.sh's: W1 W2 W3 W4 W5 W6-tcp W6-tls W7)
# with the same `tern load` arguments, and samples the server with `perf record -g -p`
# for S seconds of the data phase (default 10; it starts once every allocation is set
# up). For W4 and W5, which have no data phase, the whole `tern load` run is sampled.
# Prints, ready to paste: the command line and date, the share of samples in the kernel
# and in user space, the top symbols (`perf report --no-children --sort sym`), and the
# kernel samples grouped by the path they are on (send, receive,
# epoll/wake-up/scheduling, timers, other).
#
# Needs perf (linux-perf or linux-tools), run as root or with
# kernel.perf_event_paranoid <= 1 and kernel.kptr_restrict = 0 for kernel symbols,
# cargo, python3 and openssl (W6-tls). All traffic stays on 127.0.0.1; every step has a
# timeout; the server and perf are killed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
# shellcheck source=bench/common.sh
. bench/common.sh
COMMAND="bench/profile.sh${*:+ $*}"

NAME=W3
DURATION=10
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION=${2:?--duration takes seconds}; shift 2 ;;
        --duration=*) DURATION=${1#*=}; shift ;;
        --keep) KEEP=1; shift ;;
        -h | --help) usage; exit 0 ;;
        -*) echo "profile.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
        *) NAME=$1; shift ;;
    esac
done
case "$DURATION" in '' | *[!0-9]* | 0) echo "profile.sh: --duration must be a positive integer" >&2; exit 2 ;; esac

log() { printf '[profile %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

HOLD=5
full_workloads "$HOLD"
SPEC=""
for w in "${WORKLOADS[@]}"; do
    [ "${w%%|*}" != "$NAME" ] || SPEC=$w
done
[ -n "$SPEC" ] || { echo "profile.sh: unknown workload $NAME (one of: ${WORKLOADS[*]%%|*})" >&2; exit 2; }
IFS='|' read -r _ TRANSPORT ALLOCATIONS KIND ARGS <<<"$SPEC"

PERF=$(command -v perf || true)
[ -n "$PERF" ] || { log "perf not found: install linux-perf (Debian) or linux-tools (Ubuntu)"; exit 1; }
for tool in cargo python3 openssl; do
    command -v "$tool" >/dev/null 2>&1 || { log "$tool not found"; exit 1; }
done

# ---------------------------------------------------------------------------------
# State and cleanup: the server, perf and the load client are killed on exit.
WORK=$(mktemp -d /tmp/tern-profile.XXXXXX)
SERVER_PID=""
PERF_PID=""
LOAD_PID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [ -z "$LOAD_PID" ] || kill_wait "$LOAD_PID"
    [ -z "$PERF_PID" ] || kill_wait "$PERF_PID"
    [ -z "$SERVER_PID" ] || kill_wait "$SERVER_PID"
    if [ "$KEEP" -eq 1 ]; then
        log "kept $WORK (perf.data, logs)"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "building tern (release)"
# In the background so that Ctrl-C or SIGTERM interrupts the wait (and kills it).
cargo build --release --quiet --bin tern &
LOAD_PID=$!
wait "$LOAD_PID"
LOAD_PID=""
# A snapshot, like bench/run.sh: another build in this tree must not change the binary.
cp "${CARGO_TARGET_DIR:-$ROOT/target}/release/tern" "$WORK/tern"
TERN="$WORK/tern"

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
write_tern_config "$WORK/tern.toml"
[ "$TRANSPORT" != tls ] || make_cert "$WORK"

read -r UDP_PORT TLS_PORT < <(pick_ports 2)
start_tern "$TERN" "$WORK" "$WORK" "$TRANSPORT" "$UDP_PORT" "$TLS_PORT"
PORT=$UDP_PORT
TCP_CHECK=""
if [ "$TRANSPORT" = tls ]; then PORT=$TLS_PORT; fi
if [ "$TRANSPORT" != udp ]; then TCP_CHECK=$PORT; fi
if ! wait_ready "$SERVER_PID" "$UDP_PORT" "$TCP_CHECK"; then
    log "tern did not become ready; its log:"
    tail -n 20 "$WORK/server.log" >&2 || true
    exit 1
fi

# The load client, as bench/run.sh runs it; a data phase a little longer than what is
# sampled, so that perf sees steady traffic only.
EXTRA=()
# shellcheck disable=SC2206 # the workload arguments are plain words
EXTRA=($ARGS)
case "$KIND" in
    data) EXTRA+=(--duration $((DURATION + 2))); LIMIT=$((DURATION + 92 + ALLOCATIONS / 10)) ;;
    hold) LIMIT=$((HOLD + 120 + ALLOCATIONS / 10)) ;;
    *) LIMIT=$((120 + ALLOCATIONS / 10)) ;;
esac
case "$TRANSPORT" in
    tcp) EXTRA+=(--transport tcp) ;;
    tls) EXTRA+=(--transport tls --tls-insecure) ;;
esac
# Descriptors the server holds before any allocation: each allocation adds at least
# its relay socket, which is how the end of setup is seen from outside.
IDLE_FDS=$(find "/proc/$SERVER_PID/fd" -mindepth 1 | wc -l)

log "$NAME: tern load with ${ALLOCATIONS} allocations (${TRANSPORT})"
timeout --kill-after=5 "$LIMIT" "$TERN" load "127.0.0.1:$PORT" \
    --user "$USER_NAME" --pass "$PASSWORD" --allocations "$ALLOCATIONS" \
    --server-pid "$SERVER_PID" --json "${EXTRA[@]}" >"$WORK/load.json" 2>"$WORK/load.err" &
LOAD_PID=$!

record() { # SECONDS: perf record of the server for SECONDS (in the background)
    timeout --kill-after=5 $(($1 + 30)) "$PERF" record -q -g -p "$SERVER_PID" \
        -o "$WORK/perf.data" -- sleep "$1" >"$WORK/perf.log" 2>&1 &
    PERF_PID=$!
}

if [ "$KIND" = data ]; then
    # Waits (at most the setup deadline tern load itself has) for every allocation.
    deadline=$((SECONDS + 60 + ALLOCATIONS / 100))
    until [ "$(find "/proc/$SERVER_PID/fd" -mindepth 1 | wc -l)" -ge $((IDLE_FDS + ALLOCATIONS)) ]; do
        kill -0 "$LOAD_PID" 2>/dev/null || { log "tern load ended during setup"; cat "$WORK/load.err" >&2; exit 1; }
        [ "$SECONDS" -lt "$deadline" ] || { log "setup did not finish"; exit 1; }
        sleep 0.05
    done
    # The channel bindings that follow the last allocations.
    sleep 0.2
    log "recording ${DURATION} s of the data phase"
    record "$DURATION"
    wait "$PERF_PID" || true
    PERF_PID=""
else
    log "recording the whole run"
    record "$LIMIT"
fi
LOAD_RC=0
wait "$LOAD_PID" || LOAD_RC=$?
LOAD_PID=""
if [ -n "$PERF_PID" ]; then
    # perf writes its file on SIGINT.
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" || true
    PERF_PID=""
fi
[ "$LOAD_RC" -eq 0 ] || log "tern load exited $LOAD_RC: $(tail -n 1 "$WORK/load.err")"
[ -s "$WORK/perf.data" ] || { log "perf recorded nothing; its log:"; cat "$WORK/perf.log" >&2; exit 1; }

# ---------------------------------------------------------------------------------
# Summary.
log "summarising"
timeout 300 "$PERF" report -i "$WORK/perf.data" --no-children --sort sym --stdio -g none \
    --percent-limit 0.1 >"$WORK/report.txt" 2>/dev/null
timeout 300 "$PERF" script -i "$WORK/perf.data" -F ip,sym,dso >"$WORK/script.txt" 2>/dev/null

echo "# bench/profile.sh: perf profile of tern"
echo
echo "- Command: \`$COMMAND\`"
echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- Machine: $(nproc) CPUs, Linux $(uname -r); $("$PERF" --version)"
echo "- tern: $("$TERN" --version | head -n 1), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
echo "- Workload $NAME: $ALLOCATIONS allocations over $TRANSPORT, \`$ARGS\`; sampled: $([ "$KIND" = data ] && echo "$DURATION s of the data phase" || echo "the whole run")"
echo "- \`perf record -g -p <tern pid>\`, event $(sed -n 's/^# Samples: .* of event .\(.*\).$/\1/p' "$WORK/report.txt" | head -n 1)"
python3 - "$WORK/load.json" "$WORK/script.txt" "$WORK/report.txt" <<'PYEOF'
import json, re, sys
from collections import Counter

load_path, script_path, report_path = sys.argv[1:4]

try:
    doc = json.load(open(load_path))
except (OSError, ValueError):
    doc = {}
if doc.get("relayed_pps") is not None:
    fig = lambda k, f: "-" if doc.get(k) is None else f.format(doc[k])
    print(f"- tern load: {fig('relayed_pps', '{:,.0f}')} relayed packets/s, loss "
          f"{fig('loss_round_trip', '{:.3%}')}, server CPU {fig('server_cpu_us_per_packet', '{:.2f}')} "
          f"µs/packet, machine CPU {fig('machine_cpu_us_per_packet', '{:.2f}')} µs/packet "
          f"(figures of the whole data phase)")

# perf script: a sample is an unindented-or-blank-separated block of frames, leaf
# first: "\t ffffffff81234567 udp_sendmsg+0x12 ([kernel.kallsyms])".
FRAME = re.compile(r"^\s*([0-9a-f]+)\s+(.*?)\s+\((.*)\)\s*$")
samples, stack = [], []
for line in open(script_path, errors="replace"):
    m = FRAME.match(line)
    if m:
        ip, sym, dso = m.groups()
        stack.append((int(ip, 16) >= 0xFFFF800000000000 or dso.startswith("[kernel"),
                      re.sub(r"\+0x[0-9a-f]+$", "", sym)))
    elif not line.strip() and stack:
        samples.append(stack)
        stack = []
if stack:
    samples.append(stack)
total = len(samples)
if not total:
    sys.exit("no samples")

kernel = [s for s in samples if s[0][0]]
print()
print(f"## Where the samples are ({total:,} samples)")
print()
print(f"| | share |")
print(f"| --- | ---: |")
print(f"| kernel | {len(kernel) / total:.1%} |")
print(f"| user space (tern and its libraries) | {1 - len(kernel) / total:.1%} |")

# Kernel samples by path: the system call they are under (the outermost one), else
# what the kernel was doing without one (interrupts, scheduling).
SYSCALLS = {
    "send": ("sendto", "sendmsg", "sendmmsg", "write", "writev"),
    "receive": ("recvfrom", "recvmsg", "recvmmsg", "read", "readv"),
    "epoll/wake-up/scheduling": ("epoll_wait", "epoll_pwait", "epoll_pwait2", "epoll_ctl",
                                 "futex", "sched_yield", "poll", "ppoll"),
    "timers": ("clock_nanosleep", "nanosleep", "clock_gettime", "timerfd_settime",
               "timerfd_gettime", "timer_settime"),
}
GROUP = {name: group for group, names in SYSCALLS.items() for name in names}
SYSCALL = re.compile(r"^__(?:x64|ia32|arm64|se|do)_sys_(\w+)$")
SOFTIRQ = ("__do_softirq", "net_rx_action", "do_softirq", "handle_softirqs")


def path_of(stack):
    names = [sym for _, sym in stack]
    # An eventfd read or write is a thread waking another (tokio's waker), not I/O.
    if any(n.startswith("eventfd_") for n in names):
        return "epoll/wake-up/scheduling", False
    in_softirq = any(n in SOFTIRQ for n in names)
    for sym in reversed(names):
        m = SYSCALL.match(sym)
        if m:
            return GROUP.get(m.group(1), f"other system calls"), in_softirq
    if any("timer" in n or n.startswith("tick_") for n in names):
        return "timers", in_softirq
    if any(n in ("schedule", "__schedule", "finish_task_switch", "schedule_idle")
           or "wake_up" in n for n in names):
        return "epoll/wake-up/scheduling", in_softirq
    if in_softirq:
        return "softirq outside a system call", True
    return "other", False


paths, softirq = Counter(), Counter()
for s in kernel:
    path, in_softirq = path_of(s)
    paths[path] += 1
    softirq[path] += in_softirq
print()
print("## Kernel samples by path")
print()
print("Grouped by the system call a sample is under (the outermost one), else by what the "
      "kernel was doing: sends include the softirq delivery of the packet to the receiving "
      "socket when it runs in the sender's context (\"of which softirq\"). Percentages of "
      "all samples.")
print()
print("| path | share | of which softirq |")
print("| --- | ---: | ---: |")
for path, n in paths.most_common():
    print(f"| {path} | {n / total:.1%} | {softirq[path] / total:.1%} |")

print()
print("## Top symbols (`perf report --no-children --sort sym`)")
print()
print("`[k]` kernel, `[.]` user space; share of all samples.")
print()
print("```")
shown = 0
for line in open(report_path, errors="replace"):
    if line.startswith("#") or not line.strip():
        continue
    print(line.rstrip())
    shown += 1
    if shown == 25:
        break
print("```")
PYEOF
