//! The sans-IO engine with no driver: a recording `Io` and an engine with one static
//! user, shared by the engine tests, the property tests and the `core_sequence` fuzz
//! target. Those include this file with `#[path]` (the fuzz crate cannot use the
//! integration tests' `support` module), so it needs nothing but `tern`, `stun` and
//! `rand`.
//!
//! Documentation addresses stand in for relay IPs and peers: nothing is ever sent.
#![allow(dead_code)]

use rand::SeedableRng;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stun::message::{CLASS_REQUEST, Method};
use tern::auth::{Credentials, NonceIssuer, StaticSecret, UnauthorizedLimiter};
use tern::client::{Attr, Outgoing, Signer, encode_message, new_transaction_id};
use tern::config::PortRange;
use tern::core::tcp_relay::TcpConnection;
use tern::core::{
    ConnectionId, Count, Engine, EngineConfig, EngineRules, FiveTuple, Io, KernelChannel,
    KernelRelayed, Now, PEER_HEADROOM, RelayIpChoice, Shared,
};
use tern::policy::{OwnRelays, PeerPolicy};

pub const REALM: &str = "test";
pub const USER: &str = "alice";
pub const PASSWORD: &str = "pw";
pub const RELAY_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
pub const RELAY_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
/// Ten relay ports per IP: few enough that exhaustion (508) is reachable.
pub const PORTS: (u16, u16) = (50000, 50009);
/// The peers the policy lets through; everything else a test names is default-denied.
pub const ALLOWED_PEERS: [&str; 2] = ["198.51.100.0/24", "2001:db8:1::/48"];

/// The largest answer the engine gives a source that has not authenticated, with the
/// settings below (realm "test", no SOFTWARE): a 401 or 438 carrying ERROR-CODE, REALM,
/// a 40-character NONCE and FINGERPRINT is 100 bytes; a Binding answer (success with an
/// IPv6 XOR-MAPPED-ADDRESS, or 420 with the capped UNKNOWN-ATTRIBUTES list) is smaller.
pub const MAX_UNAUTHENTICATED_ANSWER: usize = 100;

/// Records everything the engine asks of its driver.
#[derive(Default)]
pub struct Recorder {
    /// Every datagram sent to a client, with the 5-tuple it went to.
    pub to_client: Vec<(FiveTuple, Vec<u8>)>,
    /// Every datagram sent to a peer: (peer, payload).
    pub to_peer: Vec<(SocketAddr, Vec<u8>)>,
    /// The relay socket each of `to_peer` left from.
    pub sent_from: Vec<SocketAddr>,
    /// Relay sockets currently bound.
    pub bound: HashSet<SocketAddr>,
    /// Relay sockets closed, in order (the driver reports them back as closed).
    pub closed: Vec<SocketAddr>,
    /// "send" and "close" in the order the engine asked for them.
    pub order: Vec<&'static str>,
    /// The codes of the error responses the engine counted as sent.
    pub errors_sent: Vec<u16>,
    /// Allocations counted as opened minus those counted as closed.
    pub allocations_counted: i64,
    /// Channels the kernel relays: (peer, number) → the instant its entry stops.
    pub kernel: HashMap<(SocketAddr, u16), Instant>,
    /// The relay socket each channel the kernel took relays from.
    pub kernel_relays: HashMap<(SocketAddr, u16), SocketAddr>,
    /// Channels withdrawn from the kernel, in order.
    pub withdrawn: Vec<(SocketAddr, u16)>,
    /// What every offloaded channel says the kernel relayed on it.
    pub kernel_bytes: KernelRelayed,
    /// Allocations ended, with what they used, in order.
    pub ended: Vec<Ended>,
    /// Datagrams the bandwidth limits dropped: (limit, direction, bytes).
    pub bandwidth_dropped: Vec<(tern::core::LimitScope, tern::core::Direction, usize)>,
    /// TCP relay sockets listening (RFC 6062).
    pub tcp_bound: HashSet<SocketAddr>,
    /// Connects asked for: (relay, peer, connection id).
    pub connects: Vec<(SocketAddr, SocketAddr, ConnectionId)>,
    /// Peer data connections closed: (relay, peer).
    pub peer_connections_closed: Vec<(SocketAddr, SocketAddr)>,
    /// Client data connections joined to a peer data connection: (tuple, id).
    pub spliced: Vec<(FiveTuple, ConnectionId)>,
}

/// An allocation's usage as the engine reported it at its end.
#[derive(Debug, Clone)]
pub struct Ended {
    pub tuple: FiveTuple,
    pub relay: SocketAddr,
    pub additional_relay: Option<SocketAddr>,
    pub username: String,
    pub user: String,
    pub secs: u64,
    pub to_peer: tern::core::Traffic,
    pub to_client: tern::core::Traffic,
    pub peers: u32,
    pub reason: tern::core::EndReason,
}

impl Io for Recorder {
    fn send_to_client(&mut self, tuple: &FiveTuple, bytes: &[u8]) {
        self.order.push("send");
        self.to_client.push((*tuple, bytes.to_vec()));
    }
    fn send_to_peer(&mut self, relay: SocketAddr, peer: SocketAddr, bytes: &[u8]) {
        self.to_peer.push((peer, bytes.to_vec()));
        self.sent_from.push(relay);
    }
    fn bind_relay(&mut self, addr: SocketAddr, _dont_fragment: bool) -> std::io::Result<()> {
        self.bound.insert(addr);
        Ok(())
    }
    fn close_relay(&mut self, addr: SocketAddr) {
        self.order.push("close");
        self.bound.remove(&addr);
        self.tcp_bound.remove(&addr);
        self.closed.push(addr);
    }
    fn bind_tcp_relay(&mut self, addr: SocketAddr) -> std::io::Result<()> {
        self.tcp_bound.insert(addr);
        Ok(())
    }
    fn connect_peer(&mut self, relay: SocketAddr, peer: SocketAddr, id: ConnectionId) {
        self.connects.push((relay, peer, id));
    }
    fn close_peer_connection(&mut self, relay: SocketAddr, peer: SocketAddr) {
        self.peer_connections_closed.push((relay, peer));
    }
    fn splice(&mut self, tuple: &FiveTuple, _connection: &TcpConnection, id: ConnectionId) {
        self.spliced.push((*tuple, id));
    }
    fn allocation_changed(&mut self, _tuple: &FiveTuple, _alive: bool) {}
    fn count(&mut self, event: Count<'_>) {
        match event {
            Count::ErrorSent(reject) => self.errors_sent.push(reject.code()),
            Count::AllocationOpened { .. } => self.allocations_counted += 1,
            Count::AllocationClosed { .. } => self.allocations_counted -= 1,
            Count::BandwidthDropped {
                limit,
                direction,
                bytes,
            } => self.bandwidth_dropped.push((limit, direction, bytes)),
            _ => {}
        }
    }
    fn offload_channel(&mut self, channel: &KernelChannel, until: Instant) -> bool {
        self.kernel.insert((channel.peer, channel.number), until);
        let relay = channel.relay;
        self.kernel_relays
            .insert((channel.peer, channel.number), relay);
        true
    }
    fn allocation_ended(&mut self, usage: &tern::core::Usage<'_>) {
        self.ended.push(Ended {
            tuple: *usage.tuple,
            relay: usage.relay,
            additional_relay: usage.additional_relay,
            username: usage.username.to_string(),
            user: usage.user.to_string(),
            secs: usage.duration.as_secs(),
            to_peer: usage.to_peer,
            to_client: usage.to_client,
            peers: usage.peers,
            reason: usage.reason,
        });
    }
    fn withdraw_channel(&mut self, channel: &KernelChannel) -> KernelRelayed {
        let key = (channel.peer, channel.number);
        assert!(
            self.kernel.remove(&key).is_some(),
            "withdrawn but never offloaded: {key:?}"
        );
        self.withdrawn.push(key);
        self.kernel_bytes
    }
    fn channel_bytes(&mut self, channel: &KernelChannel) -> KernelRelayed {
        let key = (channel.peer, channel.number);
        assert!(
            self.kernel.contains_key(&key),
            "read but never offloaded: {key:?}"
        );
        self.kernel_bytes
    }
}

pub fn port_range() -> PortRange {
    PortRange::new(PORTS.0, PORTS.1).expect("valid port range")
}

/// Lifetimes as a server ships them; quotas and caps small enough to be reached.
pub fn engine_config() -> EngineConfig {
    const SEC: Duration = Duration::from_secs(1);
    EngineConfig {
        software: None,
        relay_ips: vec![RELAY_V4, RELAY_V6],
        relay_ip_choice: RelayIpChoice::Spread,
        advertised_ips: HashMap::new(),
        ports: port_range(),
        default_lifetime: 600 * SEC,
        max_lifetime: 3600 * SEC,
        permission_lifetime: 300 * SEC,
        channel_lifetime: 600 * SEC,
        allow_refresh_after_expiry: false,
        nonce_lifetime: 600 * SEC,
        total_allocations: 100,
        user_allocations: 10,
        max_permissions: 8,
        max_channels: 8,
        listener_roles: Vec::new(),
        bandwidth: None,
        nat_discovery: None,
        rfc8489: false,
        tcp_allocations: false,
        max_tcp_connections: 4,
    }
}

/// The policy of [`engine`]: [`ALLOWED_PEERS`] re-allowed, the rest default.
pub fn peer_policy() -> PeerPolicy {
    let allowed = ALLOWED_PEERS
        .iter()
        .map(|net| net.parse().expect("valid network"))
        .collect();
    let own = OwnRelays {
        ips: vec![RELAY_V4, RELAY_V6],
        ports: port_range().as_range(),
    };
    PeerPolicy::new(allowed, vec![], own)
}

/// The key of the engines' stateless nonces: any engine built here accepts the nonces
/// of any other, as the workers of one server do.
pub const NONCE_KEY: &[u8] = b"nonce key for tests";

/// An engine with the static user [`USER`]/[`PASSWORD`] in [`REALM`], nonces valid for
/// 600 s, and the given limiter on answers to unauthenticated sources.
pub fn engine(limiter: UnauthorizedLimiter) -> Engine {
    engine_sharing(
        limiter,
        Arc::new(Shared::new(port_range(), std::time::Instant::now())),
    )
}

/// Like [`engine`], with the state it shares with other engines (ports, quotas,
/// reservations) given: engines sharing one [`Shared`] are the workers of one server.
pub fn engine_sharing(limiter: UnauthorizedLimiter, shared: Arc<Shared>) -> Engine {
    engine_from(&rules(peer_policy()), limiter, shared)
}

/// Like [`engine`] (every answer let through) with `config` for its settings.
pub fn engine_with(config: EngineConfig) -> Engine {
    let mut rules = rules(peer_policy());
    rules.config = Arc::new(config);
    let shared = Arc::new(Shared::new(port_range(), std::time::Instant::now()));
    engine_from(&rules, no_limit(), shared)
}

fn engine_from(rules: &EngineRules, limiter: UnauthorizedLimiter, shared: Arc<Shared>) -> Engine {
    Engine::new(
        rules,
        NonceIssuer::new(NONCE_KEY, 600),
        limiter,
        rand::rngs::StdRng::seed_from_u64(7),
        shared,
    )
}

/// The rules of [`engine`] with `policy`.
pub fn rules(policy: PeerPolicy) -> EngineRules {
    let users = HashMap::from([(USER.to_string(), StaticSecret::Password(PASSWORD.into()))]);
    EngineRules {
        config: Arc::new(engine_config()),
        credentials: Arc::new(Credentials::new(REALM.into(), users, vec![], ':')),
        policy: Arc::new(policy),
    }
}

/// A `method` request from `tuple` at `now`, signed as [`USER`] with the nonce the
/// engines built here issue it then (no 401 round trip needed).
pub fn signed_request(tuple: &FiveTuple, now: Now, method: Method, attrs: Vec<Attr>) -> Vec<u8> {
    let issuer = NonceIssuer::new(NONCE_KEY, 600);
    let nonce = issuer.issue(tuple.client, tuple.transport as u8, now.unix);
    let signer = Signer {
        username: USER,
        realm: REALM,
        nonce: &nonce,
        password: PASSWORD,
    };
    let out = Outgoing {
        attrs,
        sign: true,
        ..Outgoing::default()
    };
    encode_message(method, CLASS_REQUEST, new_transaction_id(), &out, &signer)
}

/// Hands `engine` a datagram `data` that `peer` sent to the relay socket at `relay`,
/// in a buffer with the headroom drivers leave in front of it.
pub fn peer_datagram(
    engine: &mut Engine,
    io: &mut Recorder,
    now: Instant,
    (relay, peer): (SocketAddr, SocketAddr),
    data: &[u8],
) {
    let mut buf = vec![0; PEER_HEADROOM + data.len()];
    buf[PEER_HEADROOM..].copy_from_slice(data);
    engine.handle_peer(now, relay, peer, &mut buf, data.len(), io);
}

/// A limiter that lets every answer through.
pub fn no_limit() -> UnauthorizedLimiter {
    UnauthorizedLimiter::new(0, 1, 1, 0)
}
