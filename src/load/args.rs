//! The `tern load` command line (see [`crate::load`] for what each figure means).

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::client::args::{CredentialArgs, transport_parser};
use crate::core::Transport;

/// `tern load`: see [`crate::load`] for what each figure means.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("credentials").required(true).args(["user", "secret"])))]
pub struct LoadArgs {
    /// The TURN server, IP:PORT.
    pub server: SocketAddr,
    #[arg(long, default_value_t = Transport::Udp, value_parser = transport_parser())]
    pub transport: Transport,
    /// Accept any TLS certificate (for loopback benchmarks only).
    #[arg(long, conflicts_with = "tls_ca")]
    pub tls_insecure: bool,
    /// PEM file of the roots to verify the TLS server against (for its IP address).
    #[arg(long, value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,
    #[command(flatten)]
    pub credentials: CredentialArgs,
    /// Allocations to set up, each on its own socket.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub allocations: u32,
    /// Round trips per second per allocation; 0: as fast as possible with --window in flight.
    #[arg(long, value_name = "R", default_value_t = 0.0)]
    pub rate: f64,
    /// Probes in flight per allocation when --rate is 0.
    #[arg(long, value_name = "W", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub window: u32,
    /// Seconds of sending in the data phase.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub duration: u64,
    /// Application bytes per packet (a probe needs 16).
    #[arg(long, value_name = "BYTES", default_value_t = 160, value_parser = clap::value_parser!(u16).range(16..=65_000))]
    pub payload: u16,
    /// UDP echo peer to relay to; default: one built in, on loopback.
    #[arg(long, value_name = "IP:PORT")]
    pub peer: Option<SocketAddr>,
    /// Only set the allocations up (with their channels), report, and exit.
    #[arg(long, conflicts_with = "hold")]
    pub setup_only: bool,
    /// After setup, keep the allocations idle (refreshed) this long, report, and exit.
    #[arg(long, value_name = "SECS")]
    pub hold: Option<u64>,
    /// Sample this server process' CPU time and memory around the measured phase.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Print one JSON object instead of the human report.
    #[arg(long)]
    pub json: bool,
}
