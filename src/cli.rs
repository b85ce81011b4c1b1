//! The command line: subcommands and the flags that override the config file.

use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::config::{ExternalIp, LogFormat, PortRange, Redacted, Settings, UserEntry};
use crate::core::Transport;

#[derive(Debug, Parser)]
#[command(name = "tern", version, about = "STUN/TURN relay server")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the STUN/TURN server.
    Serve(Box<ServeArgs>),
    /// Validate a config file and warn about classic deployment mistakes.
    CheckConfig {
        /// Path of the TOML config.
        path: PathBuf,
    },
    /// Print the long-term key (hex MD5 of USER:REALM:PASSWORD) for a static user;
    /// the password is read from standard input.
    HashKey { user: String, realm: String },
    /// Generate TURN load (allocations, channels, relayed traffic) and report figures.
    Load(Box<LoadArgs>),
    /// Send a STUN Binding request; print the mapped (public) address and the RTT.
    Stun(StunArgs),
    /// Check an ICE server URL end to end (allocate, permission, channel, echo) and
    /// say in plain words what is wrong when a step fails.
    Probe(Box<ProbeArgs>),
    /// Run a UDP echo peer (like turnutils_peer).
    Peer(PeerArgs),
    /// Mint TURN REST API credentials and print an `iceServers` entry.
    Creds(CredsArgs),
    /// Print the links of the self-test page and a call room (`[selftest]` in the config).
    SelftestUrl(SelftestUrlArgs),
    /// List the allocations a running server holds (admin API).
    Sessions(SessionsArgs),
    /// Kill a session, a user's sessions, or revoke a user (admin API).
    Kill(KillArgs),
    /// Start or stop draining a running server (admin API).
    Drain(DrainArgs),
    /// Convert a coturn turnserver.conf to a tern config; options that cannot be
    /// carried over are listed on stderr with the reason.
    ImportCoturn {
        /// The coturn config, e.g. /etc/turnserver.conf.
        path: PathBuf,
        /// Write the TOML here (mode 0600) instead of to stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Print a shell completion script to stdout.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (tern.1 and one per subcommand) into a directory.
    Man {
        /// Directory to write the pages to (created if missing), e.g. target/man.
        out_dir: PathBuf,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TOML config file; without it, built-in defaults apply.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Address to listen on (repeatable); replaces server.listen.
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Vec<SocketAddr>,
    /// Address for a TLS listener (repeatable); replaces server.tls_listen.
    #[arg(long = "tls-listen", value_name = "ADDR")]
    pub tls_listen: Vec<SocketAddr>,
    /// PEM certificate chain for TLS (e.g. Let's Encrypt fullchain.pem).
    #[arg(long, value_name = "PATH")]
    pub cert: Option<PathBuf>,
    /// PEM private key for TLS (e.g. Let's Encrypt privkey.pem).
    #[arg(long, value_name = "PATH")]
    pub key: Option<PathBuf>,
    /// Relay workers (threads, each owning its allocations); 0 = one per CPU.
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Serve metrics and health on this address (e.g. 127.0.0.1:9641).
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// Bearer token enabling the admin JSON API.
    #[arg(long, env = "TERN_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Redis URL joining this node to a fleet (redis:// or rediss://); replaces
    /// cluster.redis_url.
    #[arg(long, env = "TERN_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// This node's name in the fleet; replaces cluster.node_id.
    #[arg(long, value_name = "NAME")]
    pub node_id: Option<String>,
    /// Do not serve plain TCP.
    #[arg(long)]
    pub no_tcp: bool,
    /// Do not serve UDP.
    #[arg(long)]
    pub no_udp: bool,
    /// Local IP relay sockets bind to (repeatable); replaces relay.ips.
    #[arg(long = "relay-ip", value_name = "IP")]
    pub relay_ip: Vec<IpAddr>,
    /// Public IP to advertise, `PUBLIC` or `PRIVATE=PUBLIC` (repeatable).
    #[arg(long = "external-ip", value_name = "IP")]
    pub external_ip: Vec<ExternalIp>,
    /// Relay port range, MIN-MAX.
    #[arg(long, value_name = "MIN-MAX")]
    pub ports: Option<PortRange>,
    #[arg(long)]
    pub realm: Option<String>,
    /// Static user NAME:PASSWORD (repeatable); added to auth.users.
    #[arg(long = "user", value_name = "NAME:PASSWORD")]
    pub user: Vec<String>,
    /// TURN REST API shared secret; added to auth.secrets.
    #[arg(long, env = "TERN_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Re-allow a peer range that is denied by default (repeatable).
    #[arg(long = "allow-peer", value_name = "CIDR")]
    pub allow_peer: Vec<IpNet>,
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter such as `info` or `tern=debug`.
    #[arg(long)]
    pub log_level: Option<String>,
}

impl ServeArgs {
    /// Applies the flags on top of the file's settings (validated afterwards, by
    /// [`Settings::load_with`]).
    pub fn apply_to(&self, s: &mut Settings) -> Result<(), String> {
        if !self.listen.is_empty() {
            s.server.listen = self.listen.iter().map(|&a| a.into()).collect();
        }
        if !self.tls_listen.is_empty() {
            s.server.tls_listen = self.tls_listen.iter().map(|&a| a.into()).collect();
        }
        if let Some(cert) = &self.cert {
            s.tls.cert = Some(cert.clone());
        }
        if let Some(key) = &self.key {
            s.tls.key = Some(key.clone());
        }
        if let Some(workers) = self.workers {
            s.server.workers = workers;
        }
        if self.admin.is_some() {
            s.admin.listen = self.admin;
        }
        if let Some(url) = &self.redis_url {
            s.cluster.redis_url = Some(url.clone().into());
        }
        if let Some(id) = &self.node_id {
            s.cluster.node_id = Some(id.clone());
        }
        if let Some(token) = &self.admin_token {
            s.admin.token = Some(token.clone().into());
        }
        s.server.tcp &= !self.no_tcp;
        s.server.udp &= !self.no_udp;
        if !self.relay_ip.is_empty() {
            s.relay.ips = self.relay_ip.clone();
        }
        s.relay
            .external_ips
            .extend(self.external_ip.iter().copied());
        if let Some(ports) = self.ports {
            s.relay.ports = ports;
        }
        if let Some(realm) = &self.realm {
            s.server.realm = realm.clone();
        }
        for user in &self.user {
            let (name, password) = user.split_once(':').ok_or("--user takes NAME:PASSWORD")?;
            s.auth.users.push(UserEntry {
                name: name.to_string(),
                password: Some(password.to_string().into()),
                key: None,
            });
        }
        s.auth
            .secrets
            .extend(self.secret.iter().cloned().map(Redacted::from));
        s.peers.allowed.extend(self.allow_peer.iter().copied());
        if let Some(format) = self.log_format {
            s.log.format = format;
        }
        if let Some(level) = &self.log_level {
            s.log.level = level.clone();
        }
        Ok(())
    }
}

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

/// `tern stun`: see [`crate::tools::stun`].
#[derive(Debug, Args)]
pub struct StunArgs {
    /// The STUN server, HOST:PORT (a name or an IP; IPv6 in brackets).
    pub server: String,
    #[arg(long, default_value_t = Transport::Udp, value_parser = transport_parser())]
    pub transport: Transport,
    /// Accept any TLS certificate.
    #[arg(long)]
    pub tls_insecure: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `tern probe`: see [`crate::tools::probe`].
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("credentials").required(true).args(["user", "secret"])))]
pub struct ProbeArgs {
    /// ICE server URL as a browser takes it: turn:HOST[:PORT][?transport=udp|tcp] or
    /// turns:HOST[:PORT][?transport=tcp].
    pub url: String,
    #[command(flatten)]
    pub credentials: CredentialArgs,
    /// External UDP echo peer; default: one built in, on this host.
    #[arg(long, value_name = "IP:PORT")]
    pub peer: Option<SocketAddr>,
    /// Accept any TLS certificate.
    #[arg(long)]
    pub tls_insecure: bool,
    /// Print one JSON object with the steps and the diagnosis.
    #[arg(long)]
    pub json: bool,
}

/// `tern peer`: see [`crate::tools::peer`].
#[derive(Debug, Args)]
pub struct PeerArgs {
    /// Address to bind, e.g. 0.0.0.0:3480.
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Exit after echoing N datagrams.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

/// `tern creds`: see [`crate::tools::creds`].
#[derive(Debug, Args)]
pub struct CredsArgs {
    /// TURN REST API shared secret (as given to the server).
    #[arg(long, env = "TERN_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Lifetime: seconds, or with a unit: 3600s, 90m, 24h, 7d.
    #[arg(long, default_value = "24h")]
    pub ttl: String,
    /// User id appended to the username (used by the server for quotas).
    #[arg(long)]
    pub user: Option<String>,
    /// ICE server URL for the iceServers entry (repeatable).
    #[arg(long = "url", value_name = "URL")]
    pub url: Vec<String>,
}

/// `tern sessions`.
#[derive(Debug, Clone, Args)]
pub struct SessionsArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Every node of the fleet (`[cluster]`), with a NODE column.
    #[arg(long)]
    pub fleet: bool,
}

/// `tern selftest-url`: see [`crate::tools::selftest_url`].
#[derive(Debug, Args)]
pub struct SelftestUrlArgs {
    /// The server's TOML config (with a `[selftest]` section).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Host for the links; default selftest.public_host, else the server's public
    /// relay address. With HTTPS, use the name the certificate is for.
    #[arg(long)]
    pub host: Option<String>,
    /// Name of the call room; default a random one.
    #[arg(long)]
    pub room: Option<String>,
}

/// Where the admin API is and how to authenticate to it.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// The admin listener.
    #[arg(long, default_value = "127.0.0.1:9641")]
    pub admin: SocketAddr,
    /// Bearer token (admin.token of the server).
    #[arg(long, env = "TERN_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct KillArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// A session, by its relay address (see `tern sessions`).
    #[arg(long, value_name = "RELAY")]
    pub session: Option<String>,
    /// Every session of a user (static name or REST user id).
    #[arg(long)]
    pub user: Option<String>,
    /// Refuse a user from now on and kill its sessions: a static name, or the user id of
    /// REST credentials (`bob` in `1796102579:bob`).
    #[arg(long, value_name = "USER")]
    pub revoke: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct DrainArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// `on` (refuse new allocations, relay existing ones) or `off`.
    #[arg(value_parser = ["on", "off"])]
    pub state: String,
}

/// How a client tool authenticates: a static user, or TURN REST credentials minted
/// from the shared secret (user id: the tool's name).
#[derive(Debug, Clone, Args)]
pub struct CredentialArgs {
    /// Static user name (with --pass).
    #[arg(
        long,
        value_name = "NAME",
        requires = "pass",
        conflicts_with = "secret"
    )]
    pub user: Option<String>,
    /// Password of --user.
    #[arg(long, value_name = "PASSWORD", requires = "user")]
    pub pass: Option<String>,
    /// TURN REST API shared secret.
    #[arg(long)]
    pub secret: Option<String>,
}

/// Parses `udp`, `tcp` or `tls` into the core's [`Transport`], listing them in `--help`.
fn transport_parser() -> impl clap::builder::TypedValueParser<Value = Transport> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Transport::ALL.map(Transport::name))
        .try_map(|name| name.parse::<Transport>())
}
