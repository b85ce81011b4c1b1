//! The command line: subcommands and the flags that override the config file.

use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::config::{ExternalIp, LogFormat, PortRange, Redacted, Settings, UserEntry};
use crate::load::LoadArgs;
use crate::tools::admin::{DrainArgs, KillArgs, SessionsArgs, UsageArgs};
use crate::tools::{
    creds::CredsArgs, peer::PeerArgs, probe::ProbeArgs, selftest_url::SelftestUrlArgs,
    stun::StunArgs,
};

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
    /// Usage records (one per ended allocation) from the fleet's Redis, newest first
    /// (admin API).
    Usage(UsageArgs),
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
    /// Address for a DTLS listener, UDP (repeatable); replaces server.dtls_listen.
    #[arg(long = "dtls-listen", value_name = "ADDR")]
    pub dtls_listen: Vec<SocketAddr>,
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
        if !self.dtls_listen.is_empty() {
            s.server.dtls_listen = self.dtls_listen.iter().map(|&a| a.into()).collect();
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
