//! `tern load`: a turnutils-style load generator, to benchmark a TURN server (tern,
//! coturn, a null relay) on the relay path and on allocation setup.
//!
//! # Usage
//!
//! ```text
//! tern load 127.0.0.1:3478 --user alice --pass pw --allocations 100 --duration 10
//! tern load 127.0.0.1:3478 --secret S --allocations 50 --rate 50 --payload 160 --json
//! tern load 127.0.0.1:3478 --user a --pass b --transport tls --tls-insecure
//! tern load 127.0.0.1:3478 --user a --pass b --allocations 16000 --setup-only --server-pid PID
//! tern load 127.0.0.1:3478 --user a --pass b --allocations 10000 --hold 60 --server-pid PID
//! ```
//!
//! Each allocation has a socket (UDP) or connection (TCP/TLS) of its own, so its own
//! 5-tuple. Setup runs 32 at a time on plain threads with the project's blocking client
//! (Allocate, then ChannelBind to the peer, which also installs the permission; each
//! answers the 401 challenge; UDP requests are retransmitted), within 60 s plus 10 ms
//! per allocation. Then, unless `--setup-only` or `--hold`, the data phase sends probes
//! (ChannelData of `--payload` bytes carrying a sequence number and the send time) to the
//! peer, which echoes them back through the relay:
//!
//! - `--rate R`: R round trips per second per allocation, sent whatever comes back, the
//!   allocations' start times spread over one period;
//! - `--rate 0` (default): as fast as echoes return, `--window` probes in flight per
//!   allocation (a probe unanswered for 250 ms gives its place to a new one).
//!
//! Sending stops after `--duration` seconds, then echoes are awaited for up to one more
//! second, so every probe counted as lost had at least a second to come back. The peer
//! is built in (a UDP echo on 127.0.0.1, or ::1 for an IPv6 server, counting what it
//! gets) unless `--peer` names one; the server must allow relaying to it
//! (`--allow-peer 127.0.0.0/8` for tern). Relayed addresses are of the peer's family
//! (REQUESTED-ADDRESS-FAMILY for an IPv6 peer). At the end, UDP allocations are deleted
//! (Refresh with lifetime 0) and TCP/TLS connections closed. The data phase runs on at
//! most two tokio worker threads plus the peer's thread.
//!
//! TLS needs `--tls-ca PEM` (the certificate must name the server's IP) or
//! `--tls-insecure`, which accepts any certificate: for loopback benchmarks only.
//!
//! Many allocations from one address need a server configured for it. For tern:
//! `auth.unauthorized_per_second = 0` (every allocation's first request is answered
//! 401, and by default 401s are capped at 10/s per source IP, so setups beyond ~30 wait
//! on retransmissions and may time out), `limits.user_allocations` (100) and
//! `limits.total_allocations` (10,000), `limits.max_connections_per_ip` (64) for
//! TCP/TLS, and a relay port range (`--ports`) outside the kernel's ephemeral range,
//! where the generator's own sockets take ports. Do not let two servers listen on the
//! same address: tern's listeners use SO_REUSEPORT, so they would share the load.
//!
//! # Figures
//!
//! Printed as `name: value` lines, or with `--json` as one JSON object with the same
//! names; `null` (`-`) when a figure does not apply to the run.
//!
//! - `allocations`, `allocations_ok`: asked for, and set up with their channel.
//! - `allocation_failures`: failed setups by cause: the error code the server answered
//!   (`"401"`, `"486"`, ...), `"timeout"` (no answer after retransmissions, or the setup
//!   deadline passed), `"io"` (socket, connection or TLS error), `"protocol"`.
//! - `setup_seconds`, `setup_rate`: wall time of the setup phase, and allocations
//!   set up per second.
//! - `hold_refresh_failures` (`--hold`): allocations lost when refreshing them (done
//!   every 240 s while held).
//! - `packets_sent`, `packets_received`: probes sent and echoes received by the client.
//! - `peer_received`: probes the built-in peer got (`null` with `--peer`).
//! - `peer_dropped`: datagrams the built-in peer's own socket dropped for lack of buffer
//!   space (part of `loss_to_peer`, but not the server's doing).
//! - `loss_to_peer`, `loss_to_client`: per direction, the fraction of packets sent
//!   towards the peer (resp. echoed by it) that did not arrive (built-in peer only).
//! - `loss_round_trip`: the fraction of probes whose echo never came back.
//! - `relayed_packets`, `relayed_pps`: packets relayed by the server (client→peer plus
//!   peer→client, so 2 per round trip; with `--peer`, twice the echoes), and that per
//!   second of sending.
//! - `relayed_mbps`: the same in megabits per second of ChannelData (payload plus the
//!   4-byte header).
//! - `rtt_ms`: round-trip time percentiles `p50`, `p90`, `p99` (within 0.4%) and `max`
//!   over every echo received, in milliseconds.
//! - `links_failed`: allocations whose connection failed during the data phase.
//! - `machine_cpu_us_per_packet`: non-idle CPU µs of the whole machine during the data
//!   phase (all CPUs' user + nice + system + irq + softirq + steal from `/proc/stat`, in
//!   clock ticks) per relayed packet: the server, the kernel's work for it wherever it
//!   is accounted, this load client and its peer, and anything else running.
//! - `client_cpu_us_per_packet`: this load client's own CPU µs (user + system, with its
//!   built-in peer) during the data phase per relayed packet.
//! - With `--server-pid PID` (from `/proc`; CPU is the process' user + system time):
//!   - `server_cpu_us_per_packet`: server CPU µs during the data phase (sending and
//!     grace) per relayed packet;
//!   - `server_cpu_us_per_allocation`: server CPU µs during setup per allocation;
//!   - `server_rss_kb_before`, `server_rss_kb_after`: resident memory around the
//!     measured phase (the data phase; setup with `--setup-only`; setup and hold with
//!     `--hold`);
//!   - `server_hwm_kb`: peak resident memory at the last sample;
//!   - `rss_delta_per_allocation_bytes`: (resident memory after setup, or at the end of
//!     the hold, − before setup) / allocations set up.
//!
//! The exit status is 0 when every allocation was set up and nothing failed later, 1
//! otherwise (the report is printed either way), 2 on a usage error.

mod args;
mod bridge;
mod conn;
mod limits;
mod link;
mod machine_stats;
mod peer;
mod plan;
mod pool;
mod probe;
mod report;
pub mod server_stats;
mod setup;
mod stats;
mod traffic;

pub use args::LoadArgs;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::client::Transport;
use conn::{Conn, Connector};
use machine_stats::CpuSample;
use peer::EchoPeer;
use plan::{Phase, Plan};
use report::Report;
use server_stats::ServerWatch;

/// How often held allocations are refreshed (permissions last 300 s).
const REFRESH_EVERY: Duration = Duration::from_secs(240);
/// Most tokio worker threads for the data phase: the generator shares the machine
/// with the server it measures.
const MAX_WORKERS: usize = 2;

/// Runs `tern load` and prints its report.
pub fn main(args: &LoadArgs) -> ExitCode {
    let plan = match Plan::from_args(args) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("tern load: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&plan) {
        Ok(report) => {
            println!("{}", report.render(plan.json));
            if report.succeeded() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("tern load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(plan: &Plan) -> anyhow::Result<Report> {
    if let Some(warning) = limits::raise_open_files(plan.allocations) {
        eprintln!("tern load: warning: {warning}");
    }
    let workers = thread::available_parallelism().map_or(MAX_WORKERS, |n| n.get().min(MAX_WORKERS));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("load-worker")
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let connector = Connector::new(plan, runtime.handle().clone()).map_err(anyhow::Error::msg)?;
    let (peer, builtin_peer) = match plan.peer {
        Some(peer) => (peer, None),
        None => {
            let builtin =
                EchoPeer::start(plan.server.is_ipv6()).context("starting the echo peer")?;
            (builtin.addr(), Some(builtin))
        }
    };
    let mut watch = match plan.server_pid {
        Some(pid) => Some(ServerWatch::start(pid).with_context(|| format!("reading /proc/{pid}"))?),
        None => None,
    };

    let established = setup::establish(&connector, peer, plan.allocations);
    watch.iter_mut().for_each(ServerWatch::setup_done);
    let mut report = Report::after_setup(plan, &established);
    let conns = match plan.phase {
        Phase::SetupOnly => established.conns,
        Phase::Hold(length) => {
            let (conns, lost) = hold(&connector, peer, established.conns, length);
            report.add_hold(lost);
            conns
        }
        Phase::Traffic(_) if established.conns.is_empty() => established.conns,
        Phase::Traffic(traffic) => {
            let stream = plan.transport != Transport::Udp;
            let cpu_before = CpuSample::take();
            let outcome = runtime.block_on(traffic::run(established.conns, traffic, stream));
            let cpu_after = CpuSample::take();
            let peer_counts = builtin_peer.as_ref().map(EchoPeer::counts);
            report.add_traffic(&traffic, &outcome, peer_counts);
            if let (Ok(before), Ok(after)) = (cpu_before, cpu_after) {
                report.add_phase_cpu(&before, &after);
            }
            outcome.conns
        }
    };
    if let Some(watch) = &mut watch {
        if plan.phase != Phase::SetupOnly {
            watch.phase_done();
        }
        report.add_server(watch, &plan.phase);
    }
    setup::release(&connector, conns);
    Ok(report)
}

/// Keeps the allocations for `length`, refreshing them every [`REFRESH_EVERY`];
/// returns those still alive and how many were lost.
fn hold(
    connector: &Connector,
    peer: SocketAddr,
    mut conns: Vec<Conn>,
    length: Duration,
) -> (Vec<Conn>, u64) {
    let end = Instant::now() + length;
    let mut lost = 0;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (conns, lost);
        }
        thread::sleep(left.min(REFRESH_EVERY));
        if Instant::now() < end {
            let (kept, failures) = setup::refresh(connector, peer, conns);
            lost += failures.values().sum::<u64>();
            conns = kept;
        }
    }
}
