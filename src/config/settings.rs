//! The schema: one struct per TOML section, each with its defaults.
//!
//! Every key has a default, so an empty file (or none) is a working server. Fields
//! holding a password, key, token or a URL that may carry a password are
//! [`Redacted`], so every section can derive `Debug` without printing a secret.

use super::Redacted;
use super::acme::AcmeSettings;
use super::auth_webhook::AuthWebhookSettings;
use super::bandwidth::BandwidthSettings;
use super::types::{
    ExternalIp, Listener, LogFormat, OffloadMode, PortRange, ProxyVersion, Seconds, Separator,
};
use crate::core::{NatDiscovery, listener_covers};
use ipnet::IpNet;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    pub relay: RelaySettings,
    pub auth: AuthSettings,
    pub peers: PeerSettings,
    pub tls: TlsSettings,
    pub front: FrontSettings,
    pub admin: AdminSettings,
    pub selftest: SelftestSettings,
    pub cluster: ClusterSettings,
    pub usage: UsageSettings,
    pub bandwidth: BandwidthSettings,
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
    /// Addresses of the DTLS listeners (UDP; they need `tls.cert` and `tls.key` or
    /// `tls.acme`). None by default.
    pub dtls_listen: Vec<Listener>,
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
    /// Sources trusted to send a PROXY protocol header on listeners with
    /// `proxy_protocol = true` (the load balancers' or SNI routers' addresses). Empty
    /// means none.
    pub proxy_protocol_from: Vec<IpNet>,
    /// RFC 5780 NAT behaviour discovery: two IPs of this host and two ports, every
    /// combination answering Binding over UDP (`[server.nat_discovery]`); off unless set.
    pub nat_discovery: Option<NatDiscovery>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: wildcard_listeners(3478),
            tls_listen: wildcard_listeners(5349),
            dtls_listen: Vec::new(),
            udp: true,
            tcp: true,
            workers: 0,
            drain_timeout: Seconds(30),
            realm: "tern".into(),
            software: None,
            proxy_protocol_from: Vec::new(),
            nat_discovery: None,
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

    /// The NAT discovery addresses no UDP listener of `listen` covers (exactly or by a
    /// wildcard of their family on their port): each gets a UDP socket of its own that
    /// answers Binding only.
    pub fn nat_discovery_listeners(&self) -> Vec<SocketAddr> {
        let Some(discovery) = &self.nat_discovery else {
            return Vec::new();
        };
        discovery
            .addresses()
            .into_iter()
            .filter(|&a| !self.listen.iter().any(|l| listener_covers(l.addr, a)))
            .collect()
    }
}

/// The admin HTTP listener (metrics, health, readiness, JSON API).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Where it listens, e.g. `127.0.0.1:9641`; unset means off.
    pub listen: Option<SocketAddr>,
    /// Bearer token for the JSON API (sessions, kill, revoke, drain); without one the
    /// API is off and only metrics and health are served.
    pub token: Option<Redacted<String>>,
}

/// The self-test page and call room (`/check`, `/call`): off unless `listen` is set.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelftestSettings {
    /// Where the pages are served: HTTPS with the `[tls]` certificate when one is set,
    /// else plain HTTP, which only a loopback address may use (browsers allow WebRTC
    /// only on secure origins and localhost).
    pub listen: Option<SocketAddr>,
    /// Required with `listen`: every page, credential and signaling request must carry
    /// it, so the page cannot be used by anyone without the link.
    pub token: Option<Redacted<String>>,
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

/// A fleet of nodes sharing quotas, sessions, revocations and the nonce key through
/// Redis, and handing new clients to each other; off unless `redis_url` is set.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// `redis://[:PASSWORD@]HOST[:PORT][/DB]` or `rediss://` for TLS; redacted because
    /// it may hold the password.
    pub redis_url: Option<Redacted<String>>,
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
    /// Certificates from an ACME CA instead of `cert`/`key`.
    pub acme: Option<AcmeSettings>,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            auto_detect: true,
            handshake_timeout: Seconds(10),
            acme: None,
        }
    }
}

impl TlsSettings {
    pub fn is_enabled(&self) -> bool {
        self.cert_files().is_some()
    }

    /// The certificate chain and key files served: `cert` and `key`, or with ACME
    /// `cert.pem` and `key.pem` in its state directory.
    pub fn cert_files(&self) -> Option<(PathBuf, PathBuf)> {
        match (&self.acme, &self.cert, &self.key) {
            (Some(acme), _, _) => Some(acme.cert_files()),
            (None, Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            _ => None,
        }
    }
}

/// tern as the front of a shared TLS port (443 beside a website): on TLS listeners,
/// connections are routed by the ClientHello's SNI and ALPN before any TLS is
/// terminated. TURN and the self-test pages are served by tern; everything else goes,
/// TLS untouched, to `upstream`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FrontSettings {
    /// Where connections that are not for tern go, e.g. the web server on
    /// `127.0.0.1:8443`. Unset: TLS listeners serve TURN only.
    pub upstream: Option<SocketAddr>,
    /// The PROXY protocol header sent to `upstream` first, so it sees the client's
    /// address: "off", "v1" or "v2".
    pub upstream_proxy_protocol: ProxyVersion,
    /// SNI names that are always TURN, whatever the ALPN (e.g. "turn.example.com" when
    /// the site has its own name). Without any, TURN is told from the site by ALPN.
    pub turn_names: Vec<String>,
    /// How long connecting to `upstream` may take.
    pub connect_timeout: Seconds,
    /// A passed-through connection with no byte either way for this long is closed.
    pub idle_timeout: Seconds,
}

impl Default for FrontSettings {
    fn default() -> Self {
        Self {
            upstream: None,
            upstream_proxy_protocol: ProxyVersion::Off,
            turn_names: Vec::new(),
            connect_timeout: Seconds(5),
            idle_timeout: Seconds(300),
        }
    }
}

/// Usage records (one per allocation, when it ends): always a `tern::usage` log event;
/// with `[cluster]`, also appended to a Redis stream.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageSettings {
    /// Entries the fleet's Redis stream keeps (about; oldest trimmed first); 0 writes
    /// none there.
    pub redis_max_len: usize,
    /// Records waiting for each sink (Redis, the webhook); past it (a sink down for
    /// long) new ones are dropped from that sink and counted, never the relaying.
    pub queue: usize,
    /// Where to POST batches of records (a JSON array each), e.g. the operator's billing
    /// service; unset means no webhook. May carry credentials: never logged.
    pub webhook_url: Option<Redacted<String>>,
    /// Sent as `Authorization: Bearer TOKEN` with each batch.
    pub webhook_token: Option<Redacted<String>>,
    /// Records in one POST at most.
    pub webhook_batch: usize,
    /// How long a batch waits for more records after its first one.
    pub webhook_interval: Seconds,
    /// How long one POST may take before it is tried again.
    pub webhook_timeout: Seconds,
}

impl Default for UsageSettings {
    fn default() -> Self {
        Self {
            redis_max_len: 1_000_000,
            queue: 10_000,
            webhook_url: None,
            webhook_token: None,
            webhook_batch: 100,
            webhook_interval: Seconds(5),
            webhook_timeout: Seconds(10),
        }
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
    /// The kernel fast path for channels of UDP clients.
    pub offload: OffloadMode,
    /// Whether clients may ask for TCP allocations (REQUESTED-TRANSPORT TCP, RFC 6062)
    /// over TCP/TLS: the relay then opens and accepts TCP connections to and from peers.
    pub tcp_allocations: bool,
    /// Interfaces the fast path attaches to; empty means every interface that holds a
    /// listener or relay address (loopback never: the fast path does not apply there).
    pub offload_interfaces: Vec<String>,
    /// Channels the kernel can hold at once; beyond it, channels stay in user space.
    pub offload_channels: u32,
    /// Whether the fast path also runs on the XDP hook of the interfaces whose driver
    /// runs XDP itself ("auto": those backed by a device, where the driver accepts it).
    pub offload_xdp: OffloadMode,
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
            offload: OffloadMode::Auto,
            tcp_allocations: false,
            offload_interfaces: Vec::new(),
            offload_channels: 65536,
            offload_xdp: OffloadMode::Auto,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    pub users: Vec<UserEntry>,
    /// TURN REST API shared secrets; the first signs, all are accepted (rotation).
    pub secrets: Vec<Redacted<String>>,
    pub rest_separator: Separator,
    /// Whether an allocation may still be refreshed (and permissions/channels changed)
    /// with a REST credential whose expiry has passed. Off: calls end when credentials do.
    pub allow_refresh_after_expiry: bool,
    pub nonce_lifetime: Seconds,
    /// RFC 8489's security features offered in every challenge (the nonce cookie,
    /// PASSWORD-ALGORITHMS with SHA-256), and PASSWORD-ALGORITHM and USERHASH honoured.
    /// Off by default: browsers use none of it, and it makes every 401 longer.
    pub rfc8489: bool,
    /// Key for stateless nonces; share it across a fleet. Random per start when unset.
    pub nonce_key: Option<Redacted<String>>,
    /// Answers to unauthenticated requests (401/438 challenges, Binding, errors before
    /// authentication) allowed per second per source IP (0 disables the limit).
    pub unauthorized_per_second: u32,
    pub unauthorized_burst: u32,
    /// The operator's service, asked about usernames that are neither static users nor
    /// REST credentials.
    pub webhook: Option<AuthWebhookSettings>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            users: Vec::new(),
            secrets: Vec::new(),
            rest_separator: Separator::default(),
            allow_refresh_after_expiry: false,
            nonce_lifetime: Seconds(600),
            rfc8489: false,
            nonce_key: None,
            unauthorized_per_second: 100,
            unauthorized_burst: 500,
            webhook: None,
        }
    }
}

/// A static user: exactly one of `password` or `key` (hex MD5 of `user:realm:password`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub name: String,
    pub password: Option<Redacted<String>>,
    pub key: Option<Redacted<String>>,
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
    /// Frames queued from a worker's TCP/TLS connections to its engine (a connection
    /// stops reading while the queue is full). The name is kept from when relay sockets
    /// had a queue too.
    pub relay_queue: usize,
    /// Token buckets for the 401 limiter (fixed memory whatever the traffic).
    pub rate_limit_slots: usize,
    /// TCP/TLS connections and DTLS sessions open at once, in total and from one IP
    /// address.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// A TCP/TLS connection or DTLS session with no allocation is closed after this
    /// long.
    pub connection_idle_timeout: Seconds,
    /// DTLS handshakes in progress at once, over all DTLS listeners.
    pub max_dtls_handshakes: usize,
    /// A frame that has started arriving on a stream must be complete within this,
    /// and a frame for a client must be written within it.
    pub frame_timeout: Seconds,
    /// Largest STUN message or ChannelData frame accepted on a stream, in bytes.
    pub max_frame: usize,
    /// Messages queued for one TCP/TLS connection's writer; past it, relayed data is
    /// dropped and a connection that cannot take a response is closed.
    pub write_queue: usize,
    /// Peer data connections a TCP allocation (RFC 6062) may have at once.
    pub tcp_connections_per_allocation: usize,
    /// Bytes a TCP relay reads at a time, each way, for each pair of a client and a
    /// peer data connection (what it holds in memory for them).
    pub tcp_relay_buffer: usize,
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
            max_dtls_handshakes: 128,
            frame_timeout: Seconds(10),
            max_frame: 65_552,
            write_queue: 256,
            tcp_connections_per_allocation: 32,
            tcp_relay_buffer: 16 << 10,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_a_secret() {
        let text = "[auth]\nsecrets = [\"s3cr3t-one\"]\nnonce_key = \"n0nce-key-0123456789\"\n\
                    [[auth.users]]\nname = \"alice\"\npassword = \"pa55word\"\n\
                    [[auth.users]]\nname = \"bob\"\nkey = \"0123456789abcdef0123456789abcdef\"\n\
                    [selftest]\nlisten = \"127.0.0.1:8080\"\ntoken = \"s3lftest-t0ken-0123\"\n\
                    [admin]\ntoken = \"adm1n-token\"\n\
                    [cluster]\nredis_url = \"redis://:red1s-pw@10.0.0.5/\"\n";
        let shown = format!("{:?}", Settings::from_toml(text, "t").unwrap());
        for secret in [
            "s3cr3t-one",
            "n0nce-key",
            "pa55word",
            "adm1n-token",
            "red1s-pw",
            "0123456789abcdef",
            "s3lftest-t0ken",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }
}
