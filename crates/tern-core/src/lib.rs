//! tern's protocol core: everything that decides, nothing that does IO.
//!
//! - [`proto`] reads and writes the wire format (on top of the `stun`/`turn` codecs);
//! - [`auth`] and [`policy`] answer "who is this" and "may they reach that";
//! - the crate root is the sans-IO relay engine: allocations, permissions, channels,
//!   nonces, auth checks and timers.
//!
//! It is a crate of its own so that the rule is the compiler's: it has no tokio, no
//! socket crate and no metrics crate among its dependencies, and its clippy
//! configuration forbids reading a clock, drawing from the thread's random source and
//! the standard library's sockets. Time and randomness come in as arguments.
//!
//! Drivers call [`Engine::handle_client`] with bytes from a client,
//! [`Engine::handle_peer`] with bytes that reached a relay socket, and
//! [`Engine::handle_timeout`] when [`Engine::poll_timeout`] says so; the engine answers
//! through the [`Io`] the driver passes in (send a datagram, bind or close a relay
//! socket, count something). Tests drive it with a recording `Io` and advance time by
//! hand.
//!
//! No state is created for a client before it authenticates: unauthenticated traffic
//! only ever reads.

// Unit tests take their instants from the clock; the code under test never does.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod auth;
pub mod policy;
pub mod proto;

pub mod allocation;
pub mod bandwidth;
mod binding;
pub mod count;
pub mod error;
pub mod fleet;
pub mod kernel;
pub mod nat_discovery;
pub mod port_range;
pub mod ports;
mod requests;
pub mod route;
pub mod shared;
pub mod tcp_relay;
mod tcp_requests;
pub mod usage;

use rand::rngs::StdRng;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stun::attributes::ATTR_DATA;
use stun::message::{CLASS_INDICATION, CLASS_REQUEST, METHOD_SEND};

use crate::auth::{Credentials, NonceIssuer, UnauthorizedLimiter};
use crate::policy::PeerPolicy;
use crate::proto::{ChannelHeader, Kind, Request};
pub use allocation::{AdditionalRelay, Allocation, RelayFamilies};
pub use bandwidth::{BandwidthLimits, Direction, Limit, LimitScope};
pub use count::Count;
pub use error::Reject;
pub use kernel::{KernelChannel, KernelRelayed};
pub use nat_discovery::NatDiscovery;
pub use port_range::PortRange;
pub use route::{Forward, Framed, PeerRoute};
use shared::Reservation;
pub use shared::Shared;
pub use tcp_relay::{ConnectionId, StreamTraffic};
pub use usage::{EndReason, Traffic, Usage};

/// Bytes a driver leaves free before peer data so a ChannelData header can be put in
/// front of it without copying.
pub const PEER_HEADROOM: usize = proto::channel_data::HEADER_LEN;

/// The two clocks the engine needs: monotonic for timers, wall-clock seconds for
/// nonces and REST credential expiry.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono: Instant,
    pub unix: u64,
}

/// How a client reaches the server: the transport of its 5-tuple, as configs, command
/// lines, reports and the admin API name it (`udp`, `tcp`, `tls`, `dtls`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    /// DTLS over UDP (RFC 7350): a session per client address, ended like a TLS
    /// connection.
    Dtls,
}

impl Transport {
    pub const ALL: [Transport; 4] = [
        Transport::Udp,
        Transport::Tcp,
        Transport::Tls,
        Transport::Dtls,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Dtls => "dtls",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Transport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| format!("{s:?} is not a transport (udp, tcp, tls or dtls)"))
    }
}

/// Identifies a client connection: client address, server address, transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FiveTuple {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub transport: Transport,
}

/// What the engine asks of its driver.
pub trait Io {
    /// Sends `bytes` to the client of `tuple`, from the server side of it.
    fn send_to_client(&mut self, tuple: &FiveTuple, bytes: &[u8]);
    /// Sends `bytes` to `peer` from the relay socket bound at `relay`.
    fn send_to_peer(&mut self, relay: SocketAddr, peer: SocketAddr, bytes: &[u8]);
    /// Binds a relay socket at `addr`, with the IP don't-fragment bit set on what it
    /// sends when `dont_fragment` (DONT-FRAGMENT in the Allocate). An error (e.g.
    /// address in use) makes the engine try another port. Peer datagrams that reach it
    /// come back through [`Engine::handle_peer`], which knows the allocation.
    fn bind_relay(&mut self, addr: SocketAddr, dont_fragment: bool) -> std::io::Result<()>;
    /// Binds a TCP allocation's relay socket at `addr` and listens on it (RFC 6062).
    /// Peers' connections to it come back through [`Engine::handle_peer_connection`].
    /// Drivers without TCP relaying keep the default: the allocation is refused.
    fn bind_tcp_relay(&mut self, _addr: SocketAddr) -> std::io::Result<()> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
    /// Connects from the TCP relay socket at `relay` to `peer` for a Connect request,
    /// then tells [`Engine::handle_peer_connected`] how it went (within
    /// [`tcp_relay::BIND_TIMEOUT`]); the driver holds the connection meanwhile.
    fn connect_peer(&mut self, _relay: SocketAddr, _peer: SocketAddr, _id: ConnectionId) {}
    /// Closes the connection between `relay` and `peer` (held, connecting or relaying).
    fn close_peer_connection(&mut self, _relay: SocketAddr, _peer: SocketAddr) {}
    /// The client's data connection `tuple` is bound to the peer data connection `id`
    /// (between `relay` and `peer`): from now on the driver copies bytes between the
    /// two, counting them in `traffic`, and tells [`Engine::handle_tcp_connection_ended`]
    /// when either side closes.
    fn splice(
        &mut self,
        _tuple: &FiveTuple,
        _connection: &tcp_relay::TcpConnection,
        _id: ConnectionId,
    ) {
    }
    /// Closes the relay socket at `addr`. Once it is really closed, the driver calls
    /// [`Engine::handle_relay_closed`] so the port can be handed out again.
    fn close_relay(&mut self, addr: SocketAddr);
    /// An allocation was created (`alive`) or deleted for `tuple`. Stream drivers stop
    /// the unallocated-connection timer on creation and close the connection on
    /// deletion (RFC 8656 §3.1: the two live and die together).
    fn allocation_changed(&mut self, tuple: &FiveTuple, alive: bool);
    /// Something happened that the driver's metrics count.
    fn count(&mut self, event: Count<'_>);
    /// An allocation ended; what it used (once per allocation, after its last relayed
    /// packet). Drivers that keep no usage records keep the default.
    fn allocation_ended(&mut self, _usage: &Usage<'_>) {}
    /// `request`, from `tuple`, carries `username`, which only the operator's service
    /// knows (`auth.webhook`), and its credentials' [`auth::ExternalKeys`] have no answer
    /// for it yet. The driver asks the service, stores the answer there and hands the
    /// request to the engine again, without blocking anything meanwhile. Drivers
    /// without a service keep the default: the request goes unanswered.
    fn await_credentials(&mut self, _question: &CredentialsQuestion<'_>) {}
    /// The kernel may relay `channel` (a UDP client's) until `until`; called again
    /// whenever that instant moves. Returns whether the kernel took it. Drivers without
    /// a kernel fast path keep the default: everything stays with the engine.
    fn offload_channel(&mut self, _channel: &KernelChannel, _until: Instant) -> bool {
        false
    }
    /// The kernel must stop relaying `channel` (only called for channels it took);
    /// returns what it relayed on it.
    fn withdraw_channel(&mut self, _channel: &KernelChannel) -> KernelRelayed {
        KernelRelayed::default()
    }
    /// What the kernel relayed on `channel` so far (it keeps relaying it).
    fn channel_bytes(&mut self, _channel: &KernelChannel) -> KernelRelayed {
        KernelRelayed::default()
    }
}

/// A request the engine cannot authenticate until the operator's service has answered
/// for its username (see [`Io::await_credentials`]).
#[derive(Debug, Clone, Copy)]
pub struct CredentialsQuestion<'a> {
    pub username: &'a str,
    /// The realm the key is for.
    pub realm: &'a str,
    pub tuple: &'a FiveTuple,
    /// The whole request, to hand to the engine again.
    pub request: &'a [u8],
}

/// Settings the engine runs with, resolved from the config.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub software: Option<String>,
    /// Local IPs relay sockets bind to.
    pub relay_ips: Vec<IpAddr>,
    /// How an allocation's relay IP is picked among those of its family.
    pub relay_ip_choice: RelayIpChoice,
    /// Relay IP → the public IP to advertise for it (1:1 NAT).
    pub advertised_ips: HashMap<IpAddr, IpAddr>,
    pub ports: PortRange,
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    pub permission_lifetime: Duration,
    pub channel_lifetime: Duration,
    pub allow_refresh_after_expiry: bool,
    /// How long a nonce stays fresh; handed to the nonce issuer on reload (the issuer
    /// is built with the start-up value, and its key never changes).
    pub nonce_lifetime: Duration,
    pub total_allocations: usize,
    pub user_allocations: usize,
    pub max_permissions: usize,
    pub max_channels: usize,
    /// Listeners that serve STUN only or TURN only, by address (a wildcard address
    /// stands for every address of its family on its port); the others serve both.
    pub listener_roles: Vec<(SocketAddr, ListenerRole)>,
    /// Bandwidth limits; `None` when none is set, so that an unlimited server's relayed
    /// packets cost one branch.
    pub bandwidth: Option<BandwidthLimits>,
    /// RFC 5780 NAT behaviour discovery on UDP Binding; `None` when off.
    pub nat_discovery: Option<NatDiscovery>,
    /// RFC 8489's security features offered (`auth.rfc8489`): the nonce cookie and
    /// PASSWORD-ALGORITHMS in challenges, PASSWORD-ALGORITHM and USERHASH honoured.
    pub rfc8489: bool,
    /// Whether REQUESTED-TRANSPORT TCP (RFC 6062) is served (`relay.tcp_allocations`).
    pub tcp_allocations: bool,
    /// Peer data connections a TCP allocation may have at once (connecting, waiting
    /// for their ConnectionBind, or bound).
    pub max_tcp_connections: usize,
}

impl EngineConfig {
    /// What the listener a client reached (`server`) serves.
    pub fn role_of(&self, server: SocketAddr) -> ListenerRole {
        if self.listener_roles.is_empty() {
            return ListenerRole::Both;
        }
        // An exact address beats a wildcard on the same port.
        let exact = self.listener_roles.iter().find(|(l, _)| *l == server);
        exact
            .or_else(|| {
                let mut roles = self.listener_roles.iter();
                roles.find(|&&(l, _)| listener_covers(l, server))
            })
            .map_or(ListenerRole::Both, |&(_, role)| role)
    }
}

/// Whether a socket bound to `listener` receives what is sent to `addr`: the same
/// address, or a wildcard of its family on its port.
pub fn listener_covers(listener: SocketAddr, addr: SocketAddr) -> bool {
    listener == addr
        || (listener.ip().is_unspecified()
            && listener.port() == addr.port()
            && listener.is_ipv4() == addr.is_ipv4())
}

#[cfg(test)]
mod listener_role_tests {
    use super::*;

    #[test]
    fn an_exact_address_beats_a_wildcard_and_families_stay_apart() {
        let roles = vec![
            ("0.0.0.0:3478".parse().unwrap(), ListenerRole::Turn),
            ("192.0.2.1:3478".parse().unwrap(), ListenerRole::Stun),
        ];
        let role = |addr: &str| role_in(&roles, addr.parse().unwrap());
        assert_eq!(role("192.0.2.1:3478"), ListenerRole::Stun);
        assert_eq!(role("192.0.2.2:3478"), ListenerRole::Turn);
        assert_eq!(role("192.0.2.2:3479"), ListenerRole::Both);
        assert_eq!(role("[2001:db8::1]:3478"), ListenerRole::Both);
    }

    fn role_in(roles: &[(SocketAddr, ListenerRole)], server: SocketAddr) -> ListenerRole {
        let config = EngineConfig {
            software: None,
            relay_ips: Vec::new(),
            relay_ip_choice: RelayIpChoice::Spread,
            advertised_ips: HashMap::new(),
            ports: PortRange::new(49152, 65535).unwrap(),
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            allow_refresh_after_expiry: false,
            nonce_lifetime: Duration::from_secs(600),
            total_allocations: 1,
            user_allocations: 1,
            max_permissions: 1,
            max_channels: 1,
            listener_roles: roles.to_vec(),
            bandwidth: None,
            nat_discovery: None,
            rfc8489: false,
            tcp_allocations: false,
            max_tcp_connections: 1,
        };
        config.role_of(server)
    }
}

/// What a listener serves (`serve` in a listener's table): STUN Binding and TURN, or
/// one of them, as coturn's `stun-only` and `no-stun`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerRole {
    #[default]
    Both,
    /// Binding only: TURN requests go unanswered.
    Stun,
    /// TURN only: bare Binding requests go unanswered.
    Turn,
}

/// How an allocation's relay IP is picked among the relay IPs of its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayIpChoice {
    /// The operator listed the relay IPs: each is reachable, so they take turns, which
    /// spreads allocations past the ports one IP offers.
    Spread,
    /// The relay IPs were derived from the listen addresses or the host's interfaces,
    /// which may include addresses the client's network cannot reach (another LAN's
    /// side, a VPN or container bridge). The address the client reached the server on
    /// is known to be reachable, so it comes first; the others take turns only when it
    /// is not a relay IP of the family or its ports have run out.
    ReachedFirst,
}

/// An allocation as the admin API shows it; its relay address is its id.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Session {
    pub relay: SocketAddr,
    /// A dual allocation's IPv6 relayed address (`relay` is its IPv4 one); either
    /// names the allocation to `kill`.
    pub additional_relay: Option<SocketAddr>,
    pub user: String,
    pub client: SocketAddr,
    pub transport: &'static str,
    pub permissions: usize,
    pub channels: usize,
    pub age_secs: u64,
    pub bytes_to_peer: u64,
    pub bytes_to_client: u64,
    /// Packets the bandwidth limits dropped, each way.
    pub dropped_to_peer: u64,
    pub dropped_to_client: u64,
}

/// What a reload may change: settings, credentials and peer policy, shared by every
/// worker's engine.
#[derive(Clone)]
pub struct EngineRules {
    pub config: Arc<EngineConfig>,
    pub credentials: Arc<Credentials>,
    pub policy: Arc<PeerPolicy>,
}

/// How long a port reserved by EVEN-PORT's R bit waits for its RESERVATION-TOKEN.
const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

/// What a timer entry is for. Allocations are named by their relay address (half the
/// size of a 5-tuple: there is one entry per allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Allocation(SocketAddr),
    Reservation([u8; 8]),
    /// A peer data connection's ConnectionBind deadline (RFC 6062 §5.2, §5.3).
    Connection(ConnectionId),
}

pub struct Engine {
    config: Arc<EngineConfig>,
    credentials: Arc<Credentials>,
    policy: Arc<PeerPolicy>,
    nonces: NonceIssuer,
    limiter: UnauthorizedLimiter,
    rng: StdRng,
    /// Boxed: the table keeps spare buckets as it grows, and a spare bucket should cost
    /// a pointer, not a whole allocation's state (this halves memory per allocation).
    allocations: HashMap<FiveTuple, Box<Allocation>>,
    /// Relay socket address → owner (both of a dual allocation). Invariant: mirrors
    /// `allocations`' relayed addresses.
    relays: HashMap<SocketAddr, FiveTuple>,
    /// Ports, quota counts and reservations, shared with the other workers' engines.
    shared: Arc<Shared>,
    /// Deadlines to look at. Entries may be stale (refreshed or deleted since): they
    /// are checked against the live state when they fire.
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    /// Round-robin cursor over relay IPs of a family.
    next_relay_ip: usize,
    /// While draining, new allocations are refused (508) and existing ones go on.
    draining: bool,
    /// The origin of allocations' `created_secs`: the time of the first allocation
    /// (taken from the `now` passed in; the engine never reads a clock).
    epoch: Option<Instant>,
    /// This worker's side of the bandwidth limits.
    bandwidth_gate: BandwidthGate,
}

impl Engine {
    pub fn new(
        rules: &EngineRules,
        nonces: NonceIssuer,
        limiter: UnauthorizedLimiter,
        rng: StdRng,
        shared: Arc<Shared>,
    ) -> Self {
        shared.set_bandwidth_limits(rules.config.bandwidth);
        Self {
            config: rules.config.clone(),
            credentials: rules.credentials.clone(),
            policy: rules.policy.clone(),
            nonces,
            limiter,
            rng,
            allocations: HashMap::new(),
            relays: HashMap::new(),
            shared,
            timers: BinaryHeap::new(),
            next_relay_ip: 0,
            draining: false,
            epoch: None,
            bandwidth_gate: BandwidthGate::default(),
        }
    }

    // ---- getters ----

    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    pub fn allocation(&self, tuple: &FiveTuple) -> Option<&Allocation> {
        self.allocations.get(tuple).map(AsRef::as_ref)
    }

    /// Relay ports taken server-wide (bound or reserved).
    pub fn ports_in_use(&self) -> usize {
        self.shared.ports().in_use()
    }

    /// The shared state (ports, quotas, reservations, the fleet view).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The allocations of this engine, as the admin API lists them; byte counts include
    /// what the kernel fast path relayed so far (`io` reads it).
    pub fn sessions(&mut self, now: Instant, io: &mut dyn Io) -> Vec<Session> {
        let uptime = self.uptime_secs(now);
        self.allocations
            .iter()
            .map(|(tuple, alloc)| {
                let (permissions, channels) = alloc.table_sizes(now);
                let kernel = kernel::relayed_so_far(alloc, tuple, io);
                let (to_peer, to_client) = alloc.relayed();
                let dropped = |direction| {
                    let bandwidth = alloc.bandwidth.as_ref();
                    bandwidth.map_or(0, |b| b.dropped(direction).packets)
                };
                Session {
                    relay: alloc.relay,
                    additional_relay: alloc.additional().map(|a| a.addr),
                    user: alloc.username.to_string(),
                    client: tuple.client,
                    transport: tuple.transport.name(),
                    permissions,
                    channels,
                    age_secs: u64::from(uptime.saturating_sub(alloc.created_secs)),
                    bytes_to_peer: to_peer.bytes + kernel.to_peer.bytes,
                    bytes_to_client: to_client.bytes + kernel.to_client.bytes,
                    dropped_to_peer: dropped(Direction::ToPeer),
                    dropped_to_client: dropped(Direction::ToClient),
                }
            })
            .collect()
    }

    /// Whole seconds since the engine's epoch, as allocations record their birth.
    fn uptime_secs(&mut self, now: Instant) -> u32 {
        let epoch = *self.epoch.get_or_insert(now);
        let secs = now.saturating_duration_since(epoch).as_secs();
        u32::try_from(secs).unwrap_or(u32::MAX)
    }

    /// Deletes the allocation relayed at `relay` (either address of a dual one); false if
    /// this engine has none there.
    pub fn kill(&mut self, relay: SocketAddr, now: Instant, io: &mut dyn Io) -> bool {
        let Some(tuple) = self.relays.get(&relay).copied() else {
            return false;
        };
        self.delete_allocation(&tuple, EndReason::Killed, now, io);
        true
    }

    /// Deletes every allocation counted against `identity` (a static user's name or
    /// a REST user id) for `reason` (killed or revoked); returns how many.
    pub fn kill_user(
        &mut self,
        identity: &str,
        reason: EndReason,
        now: Instant,
        io: &mut dyn Io,
    ) -> usize {
        let doomed: Vec<FiveTuple> = self
            .allocations
            .iter()
            .filter(|(_, a)| self.credentials.quota_identity(&a.username) == identity)
            .map(|(tuple, _)| *tuple)
            .collect();
        for tuple in &doomed {
            self.delete_allocation(tuple, reason, now, io);
        }
        doomed.len()
    }

    /// Ends every allocation (the server stops with allocations still open), each with
    /// its usage told to the driver.
    pub fn end_all(&mut self, reason: EndReason, now: Instant, io: &mut dyn Io) {
        let tuples: Vec<FiveTuple> = self.allocations.keys().copied().collect();
        for tuple in &tuples {
            self.delete_allocation(tuple, reason, now, io);
        }
    }

    /// Applies reloaded rules. Allocations in progress keep their relay sockets and go
    /// on relaying, except with peers the new policy denies: their permissions and
    /// channels go at once, from the kernel's fast path too, so a reload is how an
    /// operator cuts a peer off. Later requests are judged by the new credentials,
    /// policy and limits, and nonces by the new lifetime.
    pub fn reload(&mut self, rules: &EngineRules, now: Instant, io: &mut dyn Io) {
        self.nonces
            .set_lifetime(rules.config.nonce_lifetime.as_secs());
        self.shared.set_bandwidth_limits(rules.config.bandwidth);
        let limits_came_or_went =
            self.config.bandwidth.is_some() != rules.config.bandwidth.is_some();
        self.config = rules.config.clone();
        self.credentials = rules.credentials.clone();
        let policy_changed = !Arc::ptr_eq(&self.policy, &rules.policy);
        if policy_changed {
            self.policy = rules.policy.clone();
            for alloc in self.allocations.values_mut() {
                alloc.drop_denied(&self.policy, now);
            }
            self.close_denied_tcp_connections(io);
        }
        // Channels leave the kernel while bandwidth limits are set, and come back to it
        // when they are gone.
        if policy_changed || limits_came_or_went {
            self.sync_kernel_all(now, io);
        }
    }

    /// Starts or ends draining: new Allocates are refused with 508 while existing
    /// allocations keep relaying.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    // ---- handle_* ----

    /// Bytes from a client: a STUN message or ChannelData.
    pub fn handle_client(&mut self, now: Now, tuple: FiveTuple, bytes: &[u8], io: &mut dyn Io) {
        match proto::classify(bytes) {
            // Data needs an allocation on its 5-tuple, which a relay socket never has:
            // a TURN loop's data is dropped there without a look at the port pool.
            Kind::ChannelData => self.relay_channel_data(now.mono, &tuple, bytes, io),
            Kind::Stun => {
                let Ok(req) = Request::parse(bytes) else {
                    return;
                };
                if req.class() == CLASS_REQUEST {
                    // A request from one of our own relay sockets is a TURN loop: it
                    // gets no answer (and so never an allocation).
                    if tuple.transport == Transport::Udp && self.is_own_relay(tuple.client) {
                        return;
                    }
                    self.handle_request(now, &tuple, &req, io);
                } else if req.class() == CLASS_INDICATION && req.method() == METHOD_SEND {
                    self.relay_send_indication(now.mono, &tuple, &req, io);
                }
                // Responses and other indications sent to a server mean nothing.
            }
            Kind::Other => {}
        }
    }

    /// Whether `addr` is a relay socket of this server, this worker's or another's: the
    /// kernel spreads datagrams over the workers' listeners by address, not by owner.
    /// Only a source on a relay IP inside the port range costs a look at the shared pool.
    fn is_own_relay(&self, addr: SocketAddr) -> bool {
        self.relays.contains_key(&addr)
            || (self.config.ports.contains(addr.port())
                && self.config.relay_ips.contains(&addr.ip())
                && self.shared.port_taken(addr))
    }

    /// A datagram that reached the relay socket at `relay` from `peer`. The data sits
    /// at `buf[PEER_HEADROOM..PEER_HEADROOM + len]`; the headroom is scratch space.
    pub fn handle_peer(
        &mut self,
        now: Instant,
        relay: SocketAddr,
        peer: SocketAddr,
        buf: &mut [u8],
        len: usize,
        io: &mut dyn Io,
    ) {
        let Some(tuple) = self.relays.get(&relay) else {
            return;
        };
        let Some(alloc) = self.allocations.get_mut(tuple) else {
            return;
        };
        let forward = alloc.route().forward(peer, now);
        if forward == Forward::Drop {
            return;
        }
        let mut gate = self
            .bandwidth_gate
            .open(&self.config, &self.shared, &self.credentials);
        if !gate.admits(alloc, Direction::ToClient, len, now, io) {
            return;
        }
        let route = alloc.route_mut();
        if let Some(framed) = route.frame(forward, peer, buf, len, &mut self.rng) {
            io.send_to_client(tuple, framed.bytes());
            io.count(Count::ToClient(len));
        }
    }

    /// Prunes `tuple`'s permission and channel tables.
    fn prune(&mut self, tuple: &FiveTuple, now: Instant, io: &mut dyn Io) {
        if let Some(alloc) = self.allocations.get_mut(tuple) {
            alloc.prune(now);
        }
        self.sync_kernel(tuple, now, io);
    }

    /// The client's TCP/TLS connection is gone: its allocation goes with it.
    pub fn handle_client_closed(&mut self, tuple: &FiveTuple, now: Instant, io: &mut dyn Io) {
        self.delete_allocation(tuple, EndReason::ConnectionClosed, now, io);
    }

    /// The relay socket at `relay` is closed: its port may be bound again. Until then
    /// the port stays taken, so a new allocation never races the old socket for it.
    pub fn handle_relay_closed(&mut self, relay: SocketAddr) {
        if !self.relays.contains_key(&relay) {
            self.shared.release_port(relay);
        }
    }

    /// Expires allocations and reservations whose time has come.
    pub fn handle_timeout(&mut self, now: Instant, io: &mut dyn Io) {
        while let Some(Reverse((when, timer))) = self.timers.peek().copied() {
            if when > now {
                break;
            }
            self.timers.pop();
            match timer {
                Timer::Allocation(relay) => {
                    if let Some(&tuple) = self.relays.get(&relay) {
                        self.check_allocation_expiry(tuple, now, io);
                    }
                }
                Timer::Reservation(token) => self.shared.expire_reservation(&token, now),
                Timer::Connection(id) => self.check_bind_deadline(id, now, io),
            }
        }
    }

    /// The next instant [`Engine::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((when, _))| *when)
    }

    // ---- mutators used by the request handlers ----

    fn check_allocation_expiry(&mut self, tuple: FiveTuple, now: Instant, io: &mut dyn Io) {
        let Some(alloc) = self.allocations.get(&tuple) else {
            return;
        };
        if alloc.is_over(now) {
            return self.delete_allocation(&tuple, EndReason::Expired, now, io);
        }
        // One family of a dual allocation lapsed without a Refresh: it ends alone (and
        // the timer looks at the other). Otherwise the allocation was refreshed since
        // this entry was pushed: look again at the new expiry.
        match alloc.lapsed_family(now) {
            Some(ipv6) => self.drop_family(&tuple, ipv6, now, io),
            None => self.reschedule(&tuple),
        }
        self.prune(&tuple, now, io);
    }

    /// Pushes a timer entry for `tuple`'s next expiry, under the address that names the
    /// allocation now.
    fn reschedule(&mut self, tuple: &FiveTuple) {
        if let Some(alloc) = self.allocations.get_mut(tuple) {
            alloc.scheduled = alloc.next_expiry();
            let entry = (alloc.scheduled, Timer::Allocation(alloc.relay));
            self.timers.push(Reverse(entry));
        }
    }

    /// Makes sure the timer heap looks at `tuple`'s allocation no later than its
    /// expiry. Pushes only when the expiry moved earlier, so refreshes cannot grow the
    /// heap without bound.
    fn schedule(&mut self, tuple: &FiveTuple) {
        let moved_earlier = (self.allocations.get(tuple))
            .is_some_and(|alloc| alloc.next_expiry() < alloc.scheduled);
        if moved_earlier {
            self.reschedule(tuple);
        }
    }

    /// Ends one family of `tuple`'s dual allocation (a Refresh with LIFETIME 0 naming
    /// it, or its expiry): its relay socket closes, its peers' permissions and channels
    /// go, from the kernel's fast path too; the other family relays on, and the quota
    /// still counts the one allocation (RFC 8656 §8.1).
    fn drop_family(&mut self, tuple: &FiveTuple, ipv6: bool, now: Instant, io: &mut dyn Io) {
        let dual = self.allocations.get_mut(tuple);
        let Some(alloc) = dual.filter(|a| a.additional().is_some()) else {
            return;
        };
        kernel::withdraw_where(alloc, tuple, |peer| peer.is_ipv6() == ipv6, io);
        let Some(relay) = alloc.drop_family(ipv6, now) else {
            return;
        };
        // The gauge moves the allocation from "dual" to its remaining family.
        let transport = tuple.transport;
        let (was, is) = (RelayFamilies::Dual, alloc.families());
        io.count(Count::AllocationClosed {
            transport,
            families: was,
        });
        io.count(Count::AllocationOpened {
            transport,
            families: is,
        });
        self.relays.remove(&relay);
        io.close_relay(relay);
        // Entries pushed under the address that ended no longer find the allocation.
        self.reschedule(tuple);
        tracing::info!(client = %tuple.client, %relay, "allocation family deleted");
    }

    fn delete_allocation(
        &mut self,
        tuple: &FiveTuple,
        reason: EndReason,
        now: Instant,
        io: &mut dyn Io,
    ) {
        let Some(mut alloc) = self.allocations.remove(tuple) else {
            return;
        };
        kernel::withdraw_where(&mut alloc, tuple, |_| true, io);
        self.close_tcp_connections(&mut alloc, io);
        let lived = self.uptime_secs(now).saturating_sub(alloc.created_secs);
        let (to_peer, to_client) = alloc.relayed();
        io.allocation_ended(&Usage {
            tuple,
            realm: self.credentials.realm(),
            relay: alloc.relay,
            additional_relay: alloc.additional().map(|a| a.addr),
            username: &alloc.username,
            user: self.credentials.quota_identity(&alloc.username),
            duration: Duration::from_secs(u64::from(lived)),
            to_peer,
            to_client,
            peers: alloc.route().peers_permitted(),
            reason,
        });
        self.shared
            .uncount_allocation(self.credentials.quota_identity(&alloc.username));
        io.count(Count::AllocationClosed {
            transport: tuple.transport,
            families: alloc.families(),
        });
        for relay in alloc.relays() {
            self.relays.remove(&relay);
            io.close_relay(relay);
        }
        io.allocation_changed(tuple, false);
        tracing::info!(client = %tuple.client, relay = %alloc.relay, "allocation deleted");
        self.compact_timers();
    }

    /// Rebuilds the timer heap from live state when stale entries (left by deleted
    /// allocations) outnumber live ones, so allocate/delete churn cannot grow it.
    fn compact_timers(&mut self) {
        if self.timers.len() <= 2 * self.allocations.len() + 1024 {
            return;
        }
        // Reservation entries are few (30 s each) and stay as they are.
        let reservations: Vec<_> = std::mem::take(&mut self.timers)
            .into_iter()
            .filter(|Reverse((_, timer))| matches!(timer, Timer::Reservation(_)))
            .collect();
        let allocations = self.allocations.values_mut().map(|alloc| {
            alloc.scheduled = alloc.next_expiry();
            Reverse((alloc.scheduled, Timer::Allocation(alloc.relay)))
        });
        self.timers = allocations.chain(reservations).collect();
    }

    /// Entries in the timer heap, live or stale (for tests of its bound).
    pub fn timer_entries(&self) -> usize {
        self.timers.len()
    }

    // ---- relayed-packet path ----

    fn relay_channel_data(
        &mut self,
        now: Instant,
        tuple: &FiveTuple,
        bytes: &[u8],
        io: &mut dyn Io,
    ) {
        let Some(header) = ChannelHeader::parse(bytes) else {
            return;
        };
        let Some(alloc) = self.allocations.get_mut(tuple) else {
            return;
        };
        if let Some(peer) = alloc.channel_peer(header.number, now) {
            let payload = header.payload(bytes);
            let mut gate = self
                .bandwidth_gate
                .open(&self.config, &self.shared, &self.credentials);
            if !gate.admits(alloc, Direction::ToPeer, payload.len(), now, io) {
                return;
            }
            io.send_to_peer(alloc.relay_for(peer), peer, payload);
            alloc.route_mut().count_to_peer(payload.len());
            io.count(Count::ToPeer(payload.len()));
        }
    }

    fn relay_send_indication(
        &mut self,
        now: Instant,
        tuple: &FiveTuple,
        req: &Request,
        io: &mut dyn Io,
    ) {
        let Some(alloc) = self.allocations.get_mut(tuple) else {
            return;
        };
        let (Some(peers), Some(data)) = (req.peer_addresses(), req.attr(ATTR_DATA)) else {
            return;
        };
        let [peer] = peers[..] else {
            return;
        };
        // A permission is only ever given to a peer of one of the allocation's
        // families, so it answers for the family too. A TCP allocation relays
        // connections, not datagrams (RFC 6062 §5).
        if alloc.tcp.is_none()
            && alloc.has_permission(peer.ip(), now)
            && self.policy.check(peer).is_ok()
        {
            let mut gate = self
                .bandwidth_gate
                .open(&self.config, &self.shared, &self.credentials);
            if !gate.admits(alloc, Direction::ToPeer, data.len(), now, io) {
                return;
            }
            io.send_to_peer(alloc.relay_for(peer), peer, data);
            alloc.route_mut().count_to_peer(data.len());
            io.count(Count::ToPeer(data.len()));
        }
    }
}

/// A worker's side of the bandwidth limits: its credit at the server's shared buckets.
#[derive(Debug, Default)]
struct BandwidthGate {
    server_credit: bandwidth::ServerCredit,
}

impl BandwidthGate {
    /// The gate with what a packet's charge needs: the limits in `config` (none, and
    /// every packet passes) and where users' buckets are found.
    fn open<'a>(
        &'a mut self,
        config: &'a EngineConfig,
        shared: &'a Shared,
        credentials: &'a Credentials,
    ) -> OpenGate<'a> {
        OpenGate {
            limits: config.bandwidth.as_ref(),
            shared,
            credentials,
            server_credit: &mut self.server_credit,
        }
    }
}

struct OpenGate<'a> {
    limits: Option<&'a BandwidthLimits>,
    shared: &'a Shared,
    credentials: &'a Credentials,
    server_credit: &'a mut bandwidth::ServerCredit,
}

impl OpenGate<'_> {
    /// Whether `bytes` relayed through `alloc` in `direction` may pass at `now`; a drop
    /// is counted. The allocation's buckets are made on its first packet under limits,
    /// tied to its user's (found by the quota identity, as quotas are).
    #[inline]
    fn admits(
        &mut self,
        alloc: &mut Allocation,
        direction: Direction,
        bytes: usize,
        now: Instant,
        io: &mut dyn Io,
    ) -> bool {
        let Some(limits) = self.limits else {
            return true;
        };
        let state = alloc.bandwidth.get_or_insert_with(|| {
            let identity = self.credentials.quota_identity(&alloc.username);
            Box::new(bandwidth::AllocationBandwidth::new(
                self.shared.user_bandwidth(identity),
            ))
        });
        let clock = self.shared.bandwidth_clock(now);
        let server = (&self.shared.server_bandwidth, &mut *self.server_credit);
        match state.charge(limits, server, direction, bytes, clock) {
            Ok(()) => true,
            Err(limit) => {
                io.count(Count::BandwidthDropped {
                    limit,
                    direction,
                    bytes,
                });
                false
            }
        }
    }
}
