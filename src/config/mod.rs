//! Settings: the TOML file, validated completely before anything is bound.
//!
//! Every key has a default, so an empty file (or none) is a working server. Unknown keys
//! and bad values are errors that name the key and its line; nothing here touches the
//! network or the clock.

pub mod lint;
pub mod reload;
pub mod types;

use ipnet::IpNet;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use thiserror::Error;

pub use types::{ExternalIp, Listener, LogFormat, PortRange, Seconds, Separator};

/// Why a config could not be used. Display is the whole message for the operator.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    pub relay: RelaySettings,
    pub auth: AuthSettings,
    pub peers: PeerSettings,
    pub tls: TlsSettings,
    pub admin: AdminSettings,
    pub selftest: SelftestSettings,
    pub cluster: ClusterSettings,
    pub limits: Limits,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Addresses the STUN/TURN listeners bind, for UDP and TCP.
    pub listen: Vec<Listener>,
    /// Addresses of the TLS listeners (used when `tls.cert` and `tls.key` are set).
    pub tls_listen: Vec<Listener>,
    pub udp: bool,
    pub tcp: bool,
    /// Relay workers, each owning its allocations; 0 means one per CPU.
    pub workers: usize,
    /// On SIGTERM, how long existing allocations may keep relaying (no new ones are
    /// taken) before the server exits.
    pub drain_timeout: Seconds,
    /// The long-term credential realm.
    pub realm: String,
    /// SOFTWARE attribute value in responses; none by default (no version disclosure).
    pub software: Option<String>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: wildcard_listeners(3478),
            tls_listen: wildcard_listeners(5349),
            udp: true,
            tcp: true,
            workers: 0,
            drain_timeout: Seconds(30),
            realm: "tern".into(),
            software: None,
        }
    }
}

/// `0.0.0.0:PORT` and `[::]:PORT`.
fn wildcard_listeners(port: u16) -> Vec<Listener> {
    vec![
        SocketAddr::from(([0, 0, 0, 0], port)).into(),
        SocketAddr::from(([0u16; 8], port)).into(),
    ]
}

impl ServerSettings {
    /// The UDP/TCP listen addresses.
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.listen.iter().map(|l| l.addr).collect()
    }
}

/// The admin HTTP listener (metrics, health, readiness, JSON API).
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Where it listens, e.g. `127.0.0.1:9641`; unset means off.
    pub listen: Option<SocketAddr>,
    /// Bearer token for the JSON API (sessions, kill, revoke, drain); without one the
    /// API is off and only metrics and health are served.
    pub token: Option<String>,
}

impl std::fmt::Debug for AdminSettingsToken<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "<redacted>"
        } else {
            "none"
        })
    }
}

/// Shows whether a token is set, never the token.
struct AdminSettingsToken<'a>(&'a Option<String>);

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field("listen", &self.listen)
            .field("token", &AdminSettingsToken(&self.token))
            .finish()
    }
}

/// The self-test page and call room (`/check`, `/call`): off unless `listen` is set.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelftestSettings {
    /// Where the pages are served: HTTPS with the `[tls]` certificate when one is set,
    /// else plain HTTP, which only a loopback address may use (browsers allow WebRTC
    /// only on secure origins and localhost).
    pub listen: Option<SocketAddr>,
    /// Required with `listen`: every page, credential and signaling request must carry
    /// it, so the page cannot be used by anyone without the link.
    pub token: Option<String>,
    /// Host name put in the links `tern selftest-url` prints (default: the external
    /// IP, else the listen address).
    pub public_host: Option<String>,
    /// How long the TURN credentials the page mints for itself stay valid.
    pub credential_lifetime: Seconds,
    /// A call room closes this long after it was opened.
    pub room_ttl: Seconds,
    /// Call rooms open at once (two members each).
    pub max_rooms: usize,
    /// Largest signaling message, in bytes.
    pub max_message: usize,
    /// Signaling messages one member may send per second, and in a burst.
    pub messages_per_second: u32,
    pub message_burst: u32,
    /// HTTP connections open at once on the self-test listener.
    pub max_connections: usize,
    /// A self-test connection (page, API or call-room WebSocket) that sends nothing
    /// for this long is closed.
    pub idle_timeout: Seconds,
}

impl Default for SelftestSettings {
    fn default() -> Self {
        Self {
            listen: None,
            token: None,
            public_host: None,
            credential_lifetime: Seconds(600),
            room_ttl: Seconds(3600),
            max_rooms: 100,
            max_message: 64 << 10,
            messages_per_second: 50,
            message_burst: 200,
            max_connections: 256,
            idle_timeout: Seconds(30),
        }
    }
}

impl std::fmt::Debug for SelftestSettings {
    /// Whether a token is set, never the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelftestSettings")
            .field("listen", &self.listen)
            .field("token", &AdminSettingsToken(&self.token))
            .field("public_host", &self.public_host)
            .field("credential_lifetime", &self.credential_lifetime)
            .field("room_ttl", &self.room_ttl)
            .field("max_rooms", &self.max_rooms)
            .field("max_message", &self.max_message)
            .finish_non_exhaustive()
    }
}

/// A fleet of nodes sharing quotas, sessions, revocations and the nonce key through
/// Redis, and handing new clients to each other; off unless `redis_url` is set.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// `redis://[:PASSWORD@]HOST[:PORT][/DB]` or `rediss://` for TLS.
    pub redis_url: Option<String>,
    /// This node's name in the fleet; default the host name.
    pub node_id: Option<String>,
    /// Addresses clients reach this node's UDP/TCP listener on, given to clients that
    /// other nodes redirect here; default the public relay address and listen port.
    pub advertise: Vec<SocketAddr>,
    /// The same for this node's TLS listener.
    pub advertise_tls: Vec<SocketAddr>,
    /// Prefix of every Redis key, so several fleets can share one Redis.
    pub key_prefix: String,
    /// How often the node publishes its state (load, quota counts, sessions).
    pub heartbeat_interval: Seconds,
    /// A node silent this long is dead: its sessions leave the registry and its
    /// allocations stop counting against quotas.
    pub node_ttl: Seconds,
    /// Over this many allocations here, new ones are redirected (300 Try Alternate)
    /// to the least-loaded live node; 0 never.
    pub redirect_above_allocations: usize,
    /// The same for relayed bandwidth, in Mbit/s both ways; 0 never.
    pub redirect_above_mbps: u64,
    /// Allocations in this realm over the whole fleet; 0 means only each node's
    /// limits.total_allocations.
    pub realm_allocations: usize,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            redis_url: None,
            node_id: None,
            advertise: Vec::new(),
            advertise_tls: Vec::new(),
            key_prefix: "tern".into(),
            heartbeat_interval: Seconds(1),
            node_ttl: Seconds(5),
            redirect_above_allocations: 0,
            redirect_above_mbps: 0,
            realm_allocations: 0,
        }
    }
}

impl ClusterSettings {
    pub fn is_enabled(&self) -> bool {
        self.redis_url.is_some()
    }
}

impl std::fmt::Debug for ClusterSettings {
    /// The URL may hold the Redis password: only whether it is set is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSettings")
            .field("redis_url", &AdminSettingsToken(&self.redis_url))
            .field("node_id", &self.node_id)
            .field("advertise", &self.advertise)
            .field("advertise_tls", &self.advertise_tls)
            .field("key_prefix", &self.key_prefix)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("node_ttl", &self.node_ttl)
            .finish_non_exhaustive()
    }
}

/// TURN over TLS (RFC 8656 §3.1): certificate files and handshake rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// PEM certificate chain (Let's Encrypt: fullchain.pem).
    pub cert: Option<PathBuf>,
    /// PEM private key (Let's Encrypt: privkey.pem).
    pub key: Option<PathBuf>,
    /// Whether stream listeners tell TLS from plain TCP by the first byte, unless a
    /// listener says otherwise.
    pub auto_detect: bool,
    pub handshake_timeout: Seconds,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            auto_detect: true,
            handshake_timeout: Seconds(10),
        }
    }
}

impl TlsSettings {
    pub fn is_enabled(&self) -> bool {
        self.cert.is_some() && self.key.is_some()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelaySettings {
    /// Local addresses relay sockets bind to; empty means "the listen address, or every
    /// non-loopback interface address when listening on a wildcard".
    pub ips: Vec<IpAddr>,
    /// Public addresses to advertise when the host is behind a 1:1 NAT.
    pub external_ips: Vec<ExternalIp>,
    pub ports: PortRange,
    pub default_lifetime: Seconds,
    pub max_lifetime: Seconds,
    pub permission_lifetime: Seconds,
    pub channel_lifetime: Seconds,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            ips: Vec::new(),
            external_ips: Vec::new(),
            ports: PortRange::new(49152, 65535).expect("literal range is valid"),
            default_lifetime: Seconds(600),
            max_lifetime: Seconds(3600),
            permission_lifetime: Seconds(300),
            channel_lifetime: Seconds(600),
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    pub users: Vec<UserEntry>,
    /// TURN REST API shared secrets; the first signs, all are accepted (rotation).
    pub secrets: Vec<String>,
    pub rest_separator: Separator,
    /// Whether an allocation may still be refreshed (and permissions/channels changed)
    /// with a REST credential whose expiry has passed. Off: calls end when credentials do.
    pub allow_refresh_after_expiry: bool,
    pub nonce_lifetime: Seconds,
    /// Key for stateless nonces; share it across a fleet. Random per start when unset.
    pub nonce_key: Option<String>,
    /// Answers to unauthenticated requests (401/438 challenges, Binding, errors before
    /// authentication) allowed per second per source IP (0 disables the limit).
    pub unauthorized_per_second: u32,
    pub unauthorized_burst: u32,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            users: Vec::new(),
            secrets: Vec::new(),
            rest_separator: Separator::default(),
            allow_refresh_after_expiry: false,
            nonce_lifetime: Seconds(600),
            nonce_key: None,
            unauthorized_per_second: 100,
            unauthorized_burst: 500,
        }
    }
}

impl std::fmt::Debug for AuthSettings {
    /// Secrets and the nonce key are counted or flagged, never shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("users", &self.users)
            .field(
                "secrets",
                &format_args!("<{} redacted>", self.secrets.len()),
            )
            .field("rest_separator", &self.rest_separator)
            .field(
                "allow_refresh_after_expiry",
                &self.allow_refresh_after_expiry,
            )
            .field("nonce_lifetime", &self.nonce_lifetime)
            .field("nonce_key", &AdminSettingsToken(&self.nonce_key))
            .field("unauthorized_per_second", &self.unauthorized_per_second)
            .field("unauthorized_burst", &self.unauthorized_burst)
            .finish()
    }
}

/// A static user: exactly one of `password` or `key` (hex MD5 of `user:realm:password`).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub name: String,
    pub password: Option<String>,
    pub key: Option<String>,
}

impl std::fmt::Debug for UserEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserEntry")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeerSettings {
    /// Re-opens ranges that are denied by default (e.g. RFC 1918 for an intranet).
    pub allowed: Vec<IpNet>,
    /// Extra ranges to deny; the most specific of allowed/denied wins, ties deny.
    pub denied: Vec<IpNet>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub total_allocations: usize,
    pub user_allocations: usize,
    pub permissions_per_allocation: usize,
    pub channels_per_allocation: usize,
    /// SO_RCVBUF/SO_SNDBUF asked for each socket, in bytes.
    pub socket_buffer: usize,
    /// Datagrams queued from relay sockets to the engine before new ones are dropped.
    pub relay_queue: usize,
    /// Token buckets for the 401 limiter (fixed memory whatever the traffic).
    pub rate_limit_slots: usize,
    /// TCP/TLS connections open at once, in total and from one IP address.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// A TCP/TLS connection with no allocation is closed after this long.
    pub connection_idle_timeout: Seconds,
    /// A frame that has started arriving on a stream must be complete within this,
    /// and a frame for a client must be written within it.
    pub frame_timeout: Seconds,
    /// Largest STUN message or ChannelData frame accepted on a stream, in bytes.
    pub max_frame: usize,
    /// Messages queued for one TCP/TLS connection's writer; past it, relayed data is
    /// dropped and a connection that cannot take a response is closed.
    pub write_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            total_allocations: 10_000,
            user_allocations: 100,
            permissions_per_allocation: 64,
            channels_per_allocation: 64,
            socket_buffer: 4 << 20,
            relay_queue: 8192,
            rate_limit_slots: 4096,
            max_connections: 10_000,
            max_connections_per_ip: 64,
            connection_idle_timeout: Seconds(30),
            frame_timeout: Seconds(10),
            max_frame: 65_552,
            write_queue: 256,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// A tracing filter such as `info` or `tern=debug`; RUST_LOG overrides it.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Human,
        }
    }
}

impl Settings {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with(Some(path), |_| Ok(()))
    }

    /// Reads a config file (none: the defaults), lets `adjust` change it (command-line
    /// flags) and only then validates, so a flag can complete what the file needs
    /// (`--cert` for a TLS listener) and errors still name the file's lines.
    pub fn load_with(
        path: Option<&Path>,
        adjust: impl FnOnce(&mut Settings) -> Result<(), String>,
    ) -> Result<Self, ConfigError> {
        let (text, origin) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                (text, path.display().to_string())
            }
            None => (String::new(), "command line".to_string()),
        };
        Self::from_toml_with(&text, &origin, adjust)
    }

    /// Parses and validates TOML text; `origin` names it in errors (usually the path).
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        Self::from_toml_with(text, origin, |_| Ok(()))
    }

    fn from_toml_with(
        text: &str,
        origin: &str,
        adjust: impl FnOnce(&mut Settings) -> Result<(), String>,
    ) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            message,
        };
        let mut settings: Settings = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        adjust(&mut settings).map_err(invalid)?;
        settings
            .validate()
            .map_err(|(key, message)| invalid(format!("{}{key}: {message}", line_of(text, key))))?;
        Ok(settings)
    }

    /// Checks that span several keys or that the types alone cannot express.
    /// Errors carry the dotted key they are about.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.server.listen.is_empty() {
            return Err(("server.listen", "at least one address is needed".into()));
        }
        if self.server.realm.is_empty() || self.server.realm.len() > 127 {
            return Err(("server.realm", "must be 1 to 127 characters".into()));
        }
        let r = &self.relay;
        r.ips.iter().try_for_each(|ip| check_relay_ip(*ip))?;
        if r.default_lifetime > r.max_lifetime {
            return Err((
                "relay.default_lifetime",
                format!(
                    "{} s is longer than relay.max_lifetime ({} s)",
                    r.default_lifetime.0, r.max_lifetime.0
                ),
            ));
        }
        for user in &self.auth.users {
            match (&user.password, &user.key) {
                (Some(_), None) => {}
                (None, Some(key)) => {
                    crate::auth::LongTermKey::from_hex(key)
                        .map_err(|e| ("auth.users", format!("user {:?}: key: {e}", user.name)))?;
                }
                _ => {
                    return Err((
                        "auth.users",
                        format!("user {:?} needs exactly one of password or key", user.name),
                    ));
                }
            }
            if user.name.is_empty() {
                return Err(("auth.users", "a user has an empty name".into()));
            }
        }
        if self.auth.secrets.iter().any(String::is_empty) {
            return Err(("auth.secrets", "a secret is empty".into()));
        }
        let limits = [
            ("limits.total_allocations", self.limits.total_allocations),
            ("limits.user_allocations", self.limits.user_allocations),
            (
                "limits.permissions_per_allocation",
                self.limits.permissions_per_allocation,
            ),
            (
                "limits.channels_per_allocation",
                self.limits.channels_per_allocation,
            ),
            ("limits.relay_queue", self.limits.relay_queue),
            ("limits.rate_limit_slots", self.limits.rate_limit_slots),
            ("limits.max_connections", self.limits.max_connections),
            (
                "limits.max_connections_per_ip",
                self.limits.max_connections_per_ip,
            ),
            ("limits.write_queue", self.limits.write_queue),
        ];
        for (key, value) in limits {
            if value == 0 {
                return Err((key, "must be at least 1 (every limit is bounded)".into()));
            }
        }
        if self.server.workers > 1024 {
            return Err((
                "server.workers",
                "at most 1024 (0 means one per CPU)".into(),
            ));
        }
        if !(548..=65_552).contains(&self.limits.max_frame) {
            return Err((
                "limits.max_frame",
                "must be between 548 and 65552 bytes".into(),
            ));
        }
        self.validate_transports()?;
        self.validate_selftest()?;
        self.validate_cluster()?;
        if !(4096..=(256 << 20)).contains(&self.limits.socket_buffer) {
            return Err((
                "limits.socket_buffer",
                "must be between 4096 and 268435456 bytes".into(),
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level).map_err(|e| {
            (
                "log.level",
                format!("{:?} is not a log filter: {e}", self.log.level),
            )
        })?;
        Ok(())
    }
}

/// A relay socket needs one specific unicast address: a wildcard would relay from
/// whichever address the kernel picks, and a multicast address cannot be bound to send.
fn check_relay_ip(ip: IpAddr) -> Result<(), (&'static str, String)> {
    if ip.is_unspecified() {
        return Err((
            "relay.ips",
            format!(
                "{ip} is a wildcard; list specific addresses, or leave relay.ips empty to use the interface addresses"
            ),
        ));
    }
    if ip.is_multicast() {
        return Err((
            "relay.ips",
            format!("{ip} is multicast; relay sockets need a unicast address"),
        ));
    }
    Ok(())
}

impl Settings {
    /// Transport switches and TLS files must make sense together.
    fn validate_transports(&self) -> Result<(), (&'static str, String)> {
        let tls = &self.tls;
        if tls.cert.is_some() != tls.key.is_some() {
            return Err(("tls.cert", "tls.cert and tls.key go together".into()));
        }
        let tls_listen_set = self.server.tls_listen != ServerSettings::default().tls_listen;
        if tls_listen_set && !self.server.tls_listen.is_empty() && !tls.is_enabled() {
            return Err((
                "server.tls_listen",
                "TLS listeners need tls.cert and tls.key".into(),
            ));
        }
        if !self.server.udp && !self.server.tcp && !tls.is_enabled() {
            return Err((
                "server.udp",
                "every transport is switched off: enable udp, tcp or TLS".into(),
            ));
        }
        Ok(())
    }
}

impl Settings {
    /// The self-test must be locked by a token, served over HTTPS unless on loopback,
    /// and bounded.
    fn validate_selftest(&self) -> Result<(), (&'static str, String)> {
        let t = &self.selftest;
        let Some(listen) = t.listen else {
            return Ok(());
        };
        match &t.token {
            None => return Err(("selftest.token", "selftest.listen needs a token".into())),
            Some(token) if token.len() < 16 || !token.bytes().all(is_url_safe) => {
                return Err((
                    "selftest.token",
                    "must be at least 16 characters of A-Z a-z 0-9 - _ . ~ (it goes in a link)"
                        .into(),
                ));
            }
            Some(_) => {}
        }
        if !listen.ip().is_loopback() && !self.tls.is_enabled() {
            return Err((
                "selftest.listen",
                format!(
                    "{listen} is not loopback: the self-test needs HTTPS, so set tls.cert and tls.key"
                ),
            ));
        }
        if !(60..=86_400).contains(&t.credential_lifetime.0) {
            return Err((
                "selftest.credential_lifetime",
                "must be between 60 and 86400 seconds".into(),
            ));
        }
        if let Some(host) = &t.public_host
            && crate::selftest::host_without_port(host).as_deref() != Some(host.as_str())
        {
            return Err((
                "selftest.public_host",
                format!(
                    "{host:?}: a host name or IP (an IPv6 address in brackets), without a port"
                ),
            ));
        }
        if !(1..=3600).contains(&t.idle_timeout.0) {
            return Err((
                "selftest.idle_timeout",
                "must be between 1 and 3600 seconds".into(),
            ));
        }
        let bounds = [
            ("selftest.room_ttl", t.room_ttl.0 as usize),
            ("selftest.max_rooms", t.max_rooms),
            ("selftest.max_message", t.max_message),
            (
                "selftest.messages_per_second",
                t.messages_per_second as usize,
            ),
            ("selftest.message_burst", t.message_burst as usize),
            ("selftest.max_connections", t.max_connections),
        ];
        for (key, value) in bounds {
            if value == 0 {
                return Err((key, "must be at least 1 (every limit is bounded)".into()));
            }
        }
        if !(1024..=(1 << 20)).contains(&t.max_message) {
            return Err((
                "selftest.max_message",
                "must be between 1024 and 1048576 bytes".into(),
            ));
        }
        Ok(())
    }
}

impl Settings {
    fn validate_cluster(&self) -> Result<(), (&'static str, String)> {
        let c = &self.cluster;
        if let Some(url) = &c.redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err((
                "cluster.redis_url",
                "must start with redis:// or rediss://".into(),
            ));
        }
        if let Some(id) = &c.node_id
            && !is_name(id)
        {
            return Err((
                "cluster.node_id",
                format!("{id:?}: use 1 to 64 of A-Z a-z 0-9 . - _"),
            ));
        }
        if !is_name(&c.key_prefix) {
            return Err((
                "cluster.key_prefix",
                "use 1 to 64 of A-Z a-z 0-9 . - _".into(),
            ));
        }
        if !(1..=60).contains(&c.heartbeat_interval.0) {
            return Err((
                "cluster.heartbeat_interval",
                "must be between 1 and 60 s".into(),
            ));
        }
        if c.node_ttl.0 > 600 {
            return Err(("cluster.node_ttl", "must be at most 600 s".into()));
        }
        for (key, addrs) in [
            ("cluster.advertise", &c.advertise),
            ("cluster.advertise_tls", &c.advertise_tls),
        ] {
            if let Some(bad) = addrs
                .iter()
                .find(|a| a.ip().is_unspecified() || a.ip().is_multicast() || a.port() == 0)
            {
                return Err((
                    key,
                    format!("{bad}: clients need a specific unicast address and a port"),
                ));
            }
        }
        if c.node_ttl.0 < 2 * c.heartbeat_interval.0 {
            return Err((
                "cluster.node_ttl",
                format!(
                    "must be at least twice cluster.heartbeat_interval ({} s), or live nodes would expire between heartbeats",
                    c.heartbeat_interval.0
                ),
            ));
        }
        Ok(())
    }
}

/// A node id or key prefix: 1 to 64 of A-Z a-z 0-9 . - _.
fn is_name(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Characters that need no escaping in a URL query.
fn is_url_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.~".contains(&b)
}

/// "line N: " for the last segment of a dotted key when it can be found in the text,
/// so cross-field errors point at a line like parse errors do.
fn line_of(text: &str, dotted_key: &str) -> String {
    let key = dotted_key.rsplit('.').next().unwrap_or(dotted_key);
    text.lines()
        .position(|line| {
            let line = line.trim_start();
            line.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
                || line.trim_start_matches('[').starts_with(dotted_key)
        })
        .map(|i| format!("line {}: ", i + 1))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        let s = Settings::from_toml("", "test").unwrap();
        assert_eq!(s.server.listen.len(), 2);
        assert_eq!(s.relay.ports.to_string(), "49152-65535");
        assert_eq!(s.relay.max_lifetime, Seconds(3600));
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = Settings::from_toml("[server]\nrealm = \"x\"\nlisten_typo = []\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_typo"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn bad_value_names_line() {
        let err = Settings::from_toml("[relay]\n\nports = \"9-3\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("empty"), "{err}");
    }

    #[test]
    fn cross_field_error_names_key_and_line() {
        let text = "[relay]\nmax_lifetime = 600\ndefault_lifetime = 900\n";
        let err = Settings::from_toml(text, "t.toml").unwrap_err().to_string();
        assert!(err.contains("line 3: relay.default_lifetime"), "{err}");
    }

    #[test]
    fn user_needs_exactly_one_secret() {
        let text = "[[auth.users]]\nname = \"a\"\n";
        assert!(Settings::from_toml(text, "t").is_err());
        let text = "[[auth.users]]\nname = \"a\"\nkey = \"zz\"\n";
        assert!(Settings::from_toml(text, "t").is_err());
        let text = "[[auth.users]]\nname = \"a\"\npassword = \"p\"\n";
        assert!(Settings::from_toml(text, "t").is_ok());
    }

    #[test]
    fn bad_log_level_is_refused() {
        let text = "[log]\nformat = \"json\"\nlevel = \"tern=loud\"\n";
        let err = Settings::from_toml(text, "t").unwrap_err().to_string();
        assert!(err.contains("line 3: log.level"), "{err}");
        for level in ["debug", "warn,tern=trace"] {
            let text = format!("[log]\nlevel = {level:?}\n");
            assert!(Settings::from_toml(&text, "t").is_ok(), "{level}");
        }
    }

    #[test]
    fn wildcard_or_multicast_relay_ip_is_refused() {
        for ip in ["0.0.0.0", "::", "224.0.0.1", "ff02::1"] {
            let text = format!("[relay]\nips = [\"10.0.0.5\", \"{ip}\"]\n");
            let err = Settings::from_toml(&text, "t").unwrap_err().to_string();
            assert!(err.contains("line 2: relay.ips"), "{err}");
            assert!(err.contains(ip), "{err}");
        }
        let text = "[relay]\nips = [\"10.0.0.5\", \"2001:db8::5\"]\n";
        assert!(Settings::from_toml(text, "t").is_ok());
    }

    #[test]
    fn flags_complete_the_file_before_validation() {
        let text = "[selftest]\nlisten = \"0.0.0.0:8443\"\ntoken = \"0123456789abcdefgh\"\n";
        let err = Settings::from_toml(text, "t").unwrap_err().to_string();
        assert!(err.contains("line 2: selftest.listen"), "{err}");
        let with_cert = Settings::from_toml_with(text, "t", |s| {
            s.tls.cert = Some("fullchain.pem".into());
            s.tls.key = Some("privkey.pem".into());
            Ok(())
        });
        assert!(with_cert.is_ok(), "{with_cert:?}");
    }

    #[test]
    fn fleet_and_self_test_values_are_bounded() {
        let cases = [
            (
                "[cluster]\nheartbeat_interval = 61\n",
                "line 2: cluster.heartbeat_interval",
            ),
            ("[cluster]\nnode_ttl = 601\n", "line 2: cluster.node_ttl"),
            (
                "[cluster]\nadvertise = [\"0.0.0.0:3478\"]\n",
                "line 2: cluster.advertise",
            ),
            (
                "[cluster]\nadvertise_tls = [\"192.0.2.1:0\"]\n",
                "cluster.advertise_tls",
            ),
            (
                "[selftest]\nlisten = \"127.0.0.1:8080\"\ntoken = \"0123456789abcdefgh\"\nroom_ttl = 99999999999\n",
                "out of range",
            ),
            (
                "[selftest]\nlisten = \"127.0.0.1:8080\"\ntoken = \"0123456789abcdefgh\"\npublic_host = \"2001:db8::1\"\n",
                "line 4: selftest.public_host",
            ),
        ];
        for (text, expected) in cases {
            let err = Settings::from_toml(text, "t").unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
        let ok = "[selftest]\nlisten = \"127.0.0.1:8080\"\ntoken = \"0123456789abcdefgh\"\npublic_host = \"[2001:db8::1]\"\n";
        assert!(Settings::from_toml(ok, "t").is_ok());
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let text = "[auth]\nsecrets = [\"s3cr3t-one\"]\nnonce_key = \"n0nce-key-0123456789\"\n\
                    [[auth.users]]\nname = \"alice\"\npassword = \"pa55word\"\n\
                    [admin]\ntoken = \"adm1n-token\"\n\
                    [cluster]\nredis_url = \"redis://:red1s-pw@10.0.0.5/\"\n";
        let shown = format!("{:?}", Settings::from_toml(text, "t").unwrap());
        for secret in [
            "s3cr3t-one",
            "n0nce-key",
            "pa55word",
            "adm1n-token",
            "red1s-pw",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn zero_limit_is_refused() {
        let err = Settings::from_toml("[limits]\nuser_allocations = 0\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.user_allocations"), "{err}");
    }
}
