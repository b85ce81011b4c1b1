# shellcheck shell=bash
# Helpers shared by bench/run.sh, bench/profile.sh and bench/soak.sh (sourced, not
# run). Needs python3.

# What the benchmarks give the servers they start: one static user, and relay ports
# below the kernel's ephemeral range, so the load client's own sockets (taken from that
# range) never collide with them.
RELAY_MIN=10000
RELAY_MAX=29999
USER_NAME=bench
PASSWORD=bench-password
REALM=bench

# usage: prints the calling script's header comment (all above its `set -euo` line).
usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}

# parse_run_options ARG...: the options bench/run.sh and bench/offload.sh share. Sets
# ROUNDS (default 3), DURATION (10), QUICK (0), OUT ("") and KEEP (0), exits on -h and
# on a bad value, and leaves the arguments it does not know in MORE_ARGS for the
# caller.
# shellcheck disable=SC2034 # the variables are for the sourcing script
parse_run_options() {
    local me
    me=$(basename "$0")
    ROUNDS=3 DURATION=10 QUICK=0 OUT="" KEEP=0 MORE_ARGS=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --rounds) ROUNDS=${2:?--rounds takes a number}; shift 2 ;;
            --rounds=*) ROUNDS=${1#*=}; shift ;;
            --duration) DURATION=${2:?--duration takes seconds}; shift 2 ;;
            --duration=*) DURATION=${1#*=}; shift ;;
            --quick) QUICK=1; shift ;;
            --out) OUT=${2:?--out takes a path}; shift 2 ;;
            --out=*) OUT=${1#*=}; shift ;;
            --keep) KEEP=1; shift ;;
            -h | --help) usage; exit 0 ;;
            *) MORE_ARGS+=("$1"); shift ;;
        esac
    done
    case "$ROUNDS" in '' | *[!0-9]* | 0) echo "$me: --rounds must be a positive integer" >&2; exit 2 ;; esac
    case "$DURATION" in '' | *[!0-9]* | 0) echo "$me: --duration must be a positive integer" >&2; exit 2 ;; esac
}

# build_snapshot WORK: builds tern and the null relay (release) and copies them into
# WORK/bin, so that a build in this tree during the run (someone else's `cargo build`)
# cannot change a server halfway through the rounds. Sets TERN, NULL_RELAY and COMMIT
# (this tree's, marked when it has uncommitted changes). The build runs in the
# background as CHILD_PID, so that Ctrl-C or SIGTERM interrupts the wait and the
# caller's cleanup kills it. Needs ROOT.
# shellcheck disable=SC2034 # the variables are for the sourcing script
build_snapshot() {
    local work=$1 target=${CARGO_TARGET_DIR:-$ROOT/target}
    cargo build --release --quiet --bin tern --example null_relay &
    CHILD_PID=$!
    wait "$CHILD_PID"
    CHILD_PID=""
    mkdir -p "$work/bin"
    cp "$target/release/tern" "$target/release/examples/null_relay" "$work/bin/"
    TERN="$work/bin/tern"
    NULL_RELAY="$work/bin/null_relay"
    COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
}

# run_rounds: every workload of WORKLOADS, ROUNDS times, each round running every
# server of SERVERS in turn (A B C A B C ...) with the caller's `run_one SPEC SERVER
# ROUND`, so drift in the machine hits all servers alike.
run_rounds() {
    local spec round server
    for spec in "${WORKLOADS[@]}"; do
        for round in $(seq "$ROUNDS"); do
            for server in "${SERVERS[@]}"; do
                log "${spec%%|*} round $round/$ROUNDS: $server"
                run_one "$spec" "$server" "$round"
            done
        done
    done
}

# full_workloads HOLD: sets WORKLOADS to the workloads of a full benchmark, each
# NAME|TRANSPORT|ALLOCATIONS|KIND|tern load arguments after the common ones (KIND is
# data, setup or hold; W5 holds its allocations HOLD seconds). One list, so that
# bench/profile.sh profiles exactly what bench/run.sh measures.
full_workloads() {
    # shellcheck disable=SC2034 # for the sourcing script
    WORKLOADS=(
        "W1|udp|10|data|--rate 0 --payload 160"
        "W2|udp|10|data|--rate 1000 --payload 160"
        "W3|udp|200|data|--rate 50 --payload 160"
        "W4|udp|2000|setup|--setup-only --payload 160"
        "W5|udp|10000|hold|--hold $1 --payload 160"
        "W6-tcp|tcp|10|data|--rate 1000 --payload 160"
        "W6-tls|tls|10|data|--rate 1000 --payload 160"
        "W7|udp|10|data|--rate 1000 --payload 1200"
    )
}

# write_tern_config FILE: tern's configuration in the benchmarks. Limits are raised for
# W5 (one static user holds every allocation, all from one IP); the 401 limiter is off
# because every allocation's first request is answered 401 and all come from 127.0.0.1
# (coturn has no such limiter).
write_tern_config() {
    cat >"$1" <<'EOF'
[auth]
unauthorized_per_second = 0

[limits]
total_allocations = 20000
user_allocations = 20000
max_connections = 20000
max_connections_per_ip = 20000
EOF
}

# write_tern_bandwidth_config BASE FILE: BASE with bandwidth limits at every level (per
# allocation, per user, for the server), far above what any workload sends: every
# relayed packet is charged to the three token buckets and none is dropped.
write_tern_bandwidth_config() {
    cat "$1" - >"$2" <<'TOML'

[bandwidth]
allocation = "1 Gbit/s"
user = "10 Gbit/s"
server = "100 Gbit/s"
TOML
}

# start_tern TERN WORK DIR TRANSPORT UDP_PORT TLS_PORT [ARG...]: starts TERN serve in
# the background with WORK/tern.toml (write_tern_config; $TERN_CONFIG names another
# file), the ARGs after the common
# ones and, for TRANSPORT tls, a TLS listener on TLS_PORT with WORK/cert.pem
# (make_cert); logs to DIR/server.log. Sets SERVER_PID.
start_tern() {
    local tern=$1 work=$2 dir=$3 transport=$4 udp_port=$5 tls_port=$6 tls_args=()
    shift 6
    if [ "$transport" = tls ]; then
        tls_args=(--tls-listen "127.0.0.1:$tls_port" --cert "$work/cert.pem" --key "$work/key.pem")
    fi
    "$tern" serve --config "${TERN_CONFIG:-$work/tern.toml}" --listen "127.0.0.1:$udp_port" \
        --relay-ip 127.0.0.1 --ports "$RELAY_MIN-$RELAY_MAX" --realm "$REALM" \
        --user "$USER_NAME:$PASSWORD" --allow-peer 127.0.0.0/8 --log-level warn \
        "${tls_args[@]}" "$@" >"$dir/server.log" 2>&1 &
    # shellcheck disable=SC2034 # for the sourcing script
    SERVER_PID=$!
}

# kill_wait PID: TERM, up to 5 s, then KILL.
kill_wait() {
    local pid=$1 _
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# pick_ports [N]: prints N (default 2) loopback ports free for both UDP and TCP, in
# 30000-32699: below the kernel's ephemeral range (where clients take theirs) and above
# the relay ports the benchmarks give servers (10000-29999).
pick_ports() {
    python3 - "${1:-2}" <<'PYEOF'
import random, socket, sys
wanted = int(sys.argv[1])
found = []
for port in random.sample(range(30000, 32700), 2700):
    ok = True
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            ok = False
        finally:
            s.close()
    if ok:
        found.append(port)
    if len(found) == wanted:
        break
print(*found)
PYEOF
}

# wait_ready PID PORT [TCP_PORT] [HOST] [NETNS]: waits until a server answers a STUN
# Binding on UDP HOST:PORT (default 127.0.0.1; asked from inside network namespace
# NETNS when given) and accepts TCP on TCP_PORT when given, for at most 15 s, while PID
# lives.
wait_ready() {
    local pid=$1 port=$2 tcp_port=${3:-} host=${4:-127.0.0.1} netns=${5:-} in_ns=()
    [ -z "$netns" ] || in_ns=(ip netns exec "$netns")
    "${in_ns[@]}" python3 - "$pid" "$port" "$tcp_port" "$host" <<'PYEOF'
import os, socket, struct, sys, time
pid, port, tcp_port, host = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
deadline = time.time() + 15
def alive():
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False
def udp_ok():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.2)
    tid = os.urandom(12)
    try:
        s.sendto(struct.pack("!HHI", 1, 0, 0x2112A442) + tid, (host, port))
        data, _ = s.recvfrom(2048)
        return data[8:20] == tid
    except OSError:
        return False
    finally:
        s.close()
def tcp_ok():
    if not tcp_port:
        return True
    try:
        socket.create_connection((host, int(tcp_port)), timeout=0.2).close()
        return True
    except OSError:
        return False
while time.time() < deadline and alive():
    if udp_ok() and tcp_ok():
        sys.exit(0)
    time.sleep(0.1)
sys.exit(1)
PYEOF
}

# make_cert DIR: a self-signed certificate for 127.0.0.1 in DIR/cert.pem, DIR/key.pem.
make_cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$1/key.pem" -out "$1/cert.pem" -days 2 -subj "/CN=127.0.0.1" \
        -addext "subjectAltName=IP:127.0.0.1" >/dev/null 2>&1
}

# Installs what the benchmarks need when missing (scripts/install-test-deps.sh) and
# checks that cargo is there to build tern.
check_dependencies() {
    log "checking dependencies"
    scripts/install-test-deps.sh
    command -v cargo >/dev/null 2>&1 || { log "cargo not found: install a Rust toolchain (rustup.rs)"; exit 1; }
}
