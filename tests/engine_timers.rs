//! The sans-IO engine driven with injected time: permissions, channels, allocations,
//! reservations and nonces expire exactly when they should, and data traffic never
//! refreshes anything. No sockets: a recording `Io` stands in for the driver.

#[path = "support/sans_io.rs"]
mod sans_io;

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use stun::attributes::ATTR_XOR_RELAYED_ADDRESS;
use stun::message::{
    CLASS_REQUEST, METHOD_ALLOCATE, METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_REFRESH,
    Method,
};

use sans_io::{PASSWORD, REALM, Recorder, USER};
use tern::client::{Attr, Outgoing, Reply, Signer, encode_message, new_transaction_id, to_reply};
use tern::core::{Engine, FiveTuple, Now, Transport};
use tern::proto::Request;

const SEC: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

struct Harness {
    engine: Engine,
    io: Recorder,
    t0: Instant,
    unix0: u64,
    tuple: FiveTuple,
    nonce: String,
}

const PEER: &str = "198.51.100.7:4000";

impl Harness {
    fn new() -> Self {
        let engine = sans_io::engine(sans_io::no_limit());
        let tuple = FiveTuple {
            client: "203.0.113.9:40000".parse().unwrap(),
            server: "192.0.2.1:3478".parse().unwrap(),
            transport: Transport::Udp,
        };
        let mut h = Self {
            engine,
            io: Recorder::default(),
            t0: Instant::now(),
            unix0: 1_800_000_000,
            tuple,
            nonce: String::new(),
        };
        // The first, unsigned request earns a 401 with the nonce to use.
        let challenge = h.request_at(Duration::ZERO, METHOD_ALLOCATE, vec![], false);
        assert_eq!(challenge.code, Some(401));
        h.nonce = challenge
            .msg
            .text(stun::attributes::ATTR_NONCE)
            .unwrap()
            .to_string();
        h
    }

    fn now(&self, at: Duration) -> Now {
        Now {
            mono: self.t0 + at,
            unix: self.unix0 + at.as_secs(),
        }
    }

    fn request_at(&mut self, at: Duration, method: Method, attrs: Vec<Attr>, sign: bool) -> Reply {
        let signer = Signer {
            username: USER,
            realm: REALM,
            nonce: &self.nonce,
            password: PASSWORD,
        };
        let out = Outgoing {
            attrs,
            sign,
            ..Outgoing::default()
        };
        let bytes = encode_message(method, CLASS_REQUEST, new_transaction_id(), &out, &signer);
        self.io.to_client.clear();
        self.engine
            .handle_client(self.now(at), self.tuple, &bytes, &mut self.io);
        let (_, answer) = self.io.to_client.pop().expect("an answer");
        to_reply(Request::parse(&answer).unwrap())
    }

    fn allocate(&mut self) -> SocketAddr {
        let r = self.request_at(
            Duration::ZERO,
            METHOD_ALLOCATE,
            vec![Attr::udp_transport()],
            true,
        );
        assert!(r.is_success(), "{:?}", r.code);
        r.xor_address(ATTR_XOR_RELAYED_ADDRESS).unwrap()
    }

    /// Creates (or refreshes) a permission for `peer` at `at`; it must succeed.
    fn create_permission(&mut self, at: Duration, peer: SocketAddr) {
        let r = self.request_at(at, METHOD_CREATE_PERMISSION, vec![Attr::Peer(peer)], true);
        assert!(r.is_success(), "{:?}", r.code);
    }

    /// Delivers `data` from `peer` to the relay at time `at`; true if the client got it.
    fn peer_sends(&mut self, at: Duration, relay: SocketAddr, peer: SocketAddr) -> bool {
        self.io.to_client.clear();
        let now = self.t0 + at;
        sans_io::peer_datagram(&mut self.engine, &mut self.io, now, (relay, peer), b"hey");
        !self.io.to_client.is_empty()
    }

    /// Sends ChannelData on `number` at `at`; true if it went out to a peer.
    fn client_channel_data(&mut self, at: Duration, number: u16) -> bool {
        let mut bytes = number.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0, 3, b'a', b'b', b'c', 0]);
        self.io.to_peer.clear();
        self.engine
            .handle_client(self.now(at), self.tuple, &bytes, &mut self.io);
        !self.io.to_peer.is_empty()
    }
}

#[test]
fn permission_expires_after_300_seconds_to_the_millisecond() {
    let mut h = Harness::new();
    let relay = h.allocate();
    let peer: SocketAddr = PEER.parse().unwrap();
    h.create_permission(Duration::ZERO, peer);
    assert!(h.peer_sends(299 * SEC + 999 * MS, relay, peer));
    assert!(!h.peer_sends(300 * SEC, relay, peer));
}

#[test]
fn data_traffic_does_not_refresh_a_permission() {
    let mut h = Harness::new();
    let relay = h.allocate();
    let peer: SocketAddr = PEER.parse().unwrap();
    h.create_permission(Duration::ZERO, peer);
    for s in (10..300).step_by(10) {
        assert!(h.peer_sends(s * SEC, relay, peer));
    }
    assert!(!h.peer_sends(300 * SEC, relay, peer));
}

#[test]
fn a_new_create_permission_refreshes_it() {
    let mut h = Harness::new();
    let relay = h.allocate();
    let peer: SocketAddr = PEER.parse().unwrap();
    h.create_permission(Duration::ZERO, peer);
    h.create_permission(200 * SEC, peer);
    assert!(h.peer_sends(499 * SEC, relay, peer));
    assert!(!h.peer_sends(500 * SEC, relay, peer));
}

#[test]
fn channel_expires_after_600_seconds() {
    let mut h = Harness::new();
    h.allocate();
    let peer: SocketAddr = PEER.parse().unwrap();
    let r = h.request_at(
        Duration::ZERO,
        METHOD_CHANNEL_BIND,
        vec![Attr::channel(0x4001), Attr::Peer(peer)],
        true,
    );
    assert!(r.is_success());
    // Keep the allocation alive past the channel's lifetime.
    assert!(
        h.request_at(SEC, METHOD_REFRESH, vec![Attr::lifetime(3600)], true)
            .is_success()
    );
    assert!(h.client_channel_data(599 * SEC + 999 * MS, 0x4001));
    assert!(!h.client_channel_data(600 * SEC, 0x4001));
}

#[test]
fn channel_data_arrives_as_channel_data_and_others_as_data_indications() {
    let mut h = Harness::new();
    let relay = h.allocate();
    let bound: SocketAddr = PEER.parse().unwrap();
    let same_ip_other_port: SocketAddr = "198.51.100.7:4001".parse().unwrap();
    h.request_at(
        Duration::ZERO,
        METHOD_CHANNEL_BIND,
        vec![Attr::channel(0x4001), Attr::Peer(bound)],
        true,
    );
    assert!(h.peer_sends(SEC, relay, bound));
    assert_eq!(&h.io.to_client[0].1[..4], &[0x40, 0x01, 0x00, 0x03]);
    assert_eq!(&h.io.to_client[0].1[4..], b"hey");
    // Same IP (so permitted), other port: not the channel's peer, so a Data indication.
    assert!(h.peer_sends(SEC, relay, same_ip_other_port));
    let ind = Request::parse(&h.io.to_client[0].1).unwrap();
    assert_eq!(ind.method(), stun::message::METHOD_DATA);
}

#[test]
fn allocation_expires_exactly_and_frees_its_port() {
    let mut h = Harness::new();
    let relay = h.allocate();
    assert_eq!(h.engine.poll_timeout(), Some(h.t0 + 600 * SEC));
    h.engine
        .handle_timeout(h.t0 + 599 * SEC + 999 * MS, &mut h.io);
    assert_eq!(h.engine.allocation_count(), 1);
    h.engine.handle_timeout(h.t0 + 600 * SEC, &mut h.io);
    assert_eq!(h.engine.allocation_count(), 0);
    assert_eq!(h.io.closed, vec![relay]);
    // The port comes back only once the driver says the socket is really closed.
    assert_eq!(h.engine.ports_in_use(), 1);
    h.engine.handle_relay_closed(relay);
    assert_eq!(h.engine.ports_in_use(), 0);
}

#[test]
fn refresh_moves_the_expiry_and_lifetime_zero_deletes() {
    let mut h = Harness::new();
    h.allocate();
    let r = h.request_at(100 * SEC, METHOD_REFRESH, vec![Attr::lifetime(1200)], true);
    assert_eq!(r.lifetime(), Some(1200));
    // The old deadline passes without deleting anything.
    h.engine.handle_timeout(h.t0 + 600 * SEC, &mut h.io);
    assert_eq!(h.engine.allocation_count(), 1);
    h.engine.handle_timeout(h.t0 + 1299 * SEC, &mut h.io);
    assert_eq!(h.engine.allocation_count(), 1);
    h.engine.handle_timeout(h.t0 + 1300 * SEC, &mut h.io);
    assert_eq!(h.engine.allocation_count(), 0);

    let mut h = Harness::new();
    h.allocate();
    h.io.order.clear();
    let r = h.request_at(SEC, METHOD_REFRESH, vec![Attr::lifetime(0)], true);
    assert_eq!(r.lifetime(), Some(0));
    assert_eq!(h.engine.allocation_count(), 0);
    assert_eq!(h.io.closed.len(), 1);
    // Over UDP the allocation (quota, port) is gone before the answer leaves, so a
    // client allocating again at once is never refused for the one it just ended.
    assert_eq!(h.io.order, ["close", "send"]);
}

#[test]
fn lifetime_is_clamped_to_the_maximum_and_floored_at_the_default() {
    let mut h = Harness::new();
    let r = h.request_at(
        Duration::ZERO,
        METHOD_ALLOCATE,
        vec![Attr::udp_transport(), Attr::lifetime(99_999)],
        true,
    );
    assert_eq!(r.lifetime(), Some(3600));
    let mut h = Harness::new();
    let r = h.request_at(
        Duration::ZERO,
        METHOD_ALLOCATE,
        vec![Attr::udp_transport(), Attr::lifetime(30)],
        true,
    );
    assert_eq!(r.lifetime(), Some(600));
}

#[test]
fn nonce_goes_stale_after_its_lifetime() {
    let mut h = Harness::new();
    // Issued at unix0; valid for 600 s.
    let r = h.request_at(
        599 * SEC,
        METHOD_ALLOCATE,
        vec![Attr::udp_transport()],
        true,
    );
    assert!(r.is_success(), "{:?}", r.code);
    let r = h.request_at(600 * SEC, METHOD_REFRESH, vec![], true);
    assert_eq!(r.code, Some(438));
    assert!(r.msg.text(stun::attributes::ATTR_NONCE).is_some());
}

#[test]
fn reservation_token_expires_after_30_seconds() {
    let mut h = Harness::new();
    let even = Attr::Raw(stun::attributes::ATTR_EVEN_PORT, vec![0x80]);
    let r = h.request_at(
        Duration::ZERO,
        METHOD_ALLOCATE,
        vec![Attr::udp_transport(), even],
        true,
    );
    assert!(r.is_success());
    let relay = r.xor_address(ATTR_XOR_RELAYED_ADDRESS).unwrap();
    assert_eq!(relay.port() % 2, 0);
    assert_eq!(h.engine.ports_in_use(), 2);
    h.engine.handle_timeout(h.t0 + 29 * SEC, &mut h.io);
    assert_eq!(h.engine.ports_in_use(), 2);
    h.engine.handle_timeout(h.t0 + 30 * SEC, &mut h.io);
    assert_eq!(h.engine.ports_in_use(), 1);
}

#[test]
fn unauthenticated_traffic_creates_no_state() {
    let mut h = Harness::new();
    for i in 0..1000u16 {
        h.tuple.client = SocketAddr::from(([203, 0, 113, 1], 10_000 + i));
        let r = h.request_at(
            Duration::ZERO,
            METHOD_ALLOCATE,
            vec![Attr::udp_transport()],
            false,
        );
        assert_eq!(r.code, Some(401));
    }
    assert_eq!(h.engine.allocation_count(), 0);
    assert!(h.io.bound.is_empty());
    assert_eq!(h.engine.poll_timeout(), None);
}

#[test]
fn allocate_delete_churn_does_not_grow_the_timer_heap() {
    let mut h = Harness::new();
    for i in 0..5000u32 {
        let at = Duration::from_millis(u64::from(i));
        let r = h.request_at(at, METHOD_ALLOCATE, vec![Attr::udp_transport()], true);
        assert!(r.is_success(), "{:?}", r.code);
        let r = h.request_at(at, METHOD_REFRESH, vec![Attr::lifetime(0)], true);
        assert!(r.is_success());
        let closed = h.io.closed.pop().unwrap();
        h.engine.handle_relay_closed(closed);
    }
    assert!(
        h.engine.timer_entries() <= 1024 + 2,
        "{}",
        h.engine.timer_entries()
    );
}

// ---- the kernel fast path's control plane (tern_core::kernel) ----

impl Harness {
    /// Binds (or refreshes) a channel at `at`, taking a fresh nonce if the 438 says so.
    fn bind_channel(&mut self, at: Duration, number: u16, peer: SocketAddr) {
        let attrs = vec![Attr::channel(number), Attr::Peer(peer)];
        let mut r = self.request_at(at, METHOD_CHANNEL_BIND, attrs.clone(), true);
        if r.code == Some(438) {
            self.nonce = r
                .msg
                .text(stun::attributes::ATTR_NONCE)
                .unwrap()
                .to_string();
            r = self.request_at(at, METHOD_CHANNEL_BIND, attrs, true);
        }
        assert!(r.is_success(), "{:?}", r.code);
    }
}

#[test]
fn a_channel_is_offloaded_until_it_or_its_permission_ends() {
    let mut h = Harness::new();
    h.allocate();
    let peer: SocketAddr = PEER.parse().unwrap();
    h.bind_channel(Duration::ZERO, 0x4001, peer);
    // The permission (300 s) ends before the channel (600 s).
    assert_eq!(h.io.kernel[&(peer, 0x4001)], h.t0 + 300 * SEC);
    // A new permission moves it; the channel's own end then comes first.
    h.create_permission(200 * SEC, peer);
    assert_eq!(h.io.kernel[&(peer, 0x4001)], h.t0 + 500 * SEC);
    h.create_permission(400 * SEC, peer);
    assert_eq!(h.io.kernel[&(peer, 0x4001)], h.t0 + 600 * SEC);
    // Refreshing the channel refreshes its permission too: the permission ends first.
    h.bind_channel(450 * SEC, 0x4001, peer);
    assert_eq!(h.io.kernel[&(peer, 0x4001)], h.t0 + 750 * SEC);
    assert!(h.io.withdrawn.is_empty());
}

#[test]
fn offloaded_channels_leave_with_their_allocation_and_their_bytes_are_counted() {
    let mut h = Harness::new();
    h.allocate();
    let peer: SocketAddr = PEER.parse().unwrap();
    let other: SocketAddr = "198.51.100.8:4000".parse().unwrap();
    h.bind_channel(Duration::ZERO, 0x4001, peer);
    h.bind_channel(Duration::ZERO, 0x4002, other);
    assert_eq!(h.io.kernel.len(), 2);
    h.io.kernel_bytes = kernel_relayed();
    // Live sessions count what the kernel relayed on both channels so far.
    let session = &h.engine.sessions(h.t0 + SEC, &mut h.io)[0];
    assert_eq!(
        (session.bytes_to_peer, session.bytes_to_client),
        (2000, 4000)
    );
    let r = h.request_at(SEC, METHOD_REFRESH, vec![Attr::lifetime(0)], true);
    assert!(r.is_success());
    assert!(
        h.io.kernel.is_empty(),
        "left in the kernel: {:?}",
        h.io.kernel
    );
    let mut withdrawn = h.io.withdrawn.clone();
    withdrawn.sort();
    assert_eq!(withdrawn, [(peer, 0x4001), (other, 0x4002)]);
    // The usage record counts what the kernel relayed on both channels.
    let [ended] = &h.io.ended[..] else {
        panic!("one usage record expected: {:?}", h.io.ended)
    };
    assert_eq!(ended.reason, tern::core::EndReason::Deleted);
    let traffic = |packets, bytes| tern::core::Traffic { packets, bytes };
    assert_eq!(
        (ended.to_peer, ended.to_client),
        (traffic(20, 2000), traffic(40, 4000))
    );
    assert_eq!((ended.peers, ended.secs), (2, 1));
}

#[test]
fn an_expired_channel_is_withdrawn_and_its_kernel_bytes_stay_on_the_session() {
    let mut h = Harness::new();
    h.allocate();
    let peer: SocketAddr = PEER.parse().unwrap();
    h.bind_channel(Duration::ZERO, 0x4001, peer);
    assert!(
        h.request_at(SEC, METHOD_REFRESH, vec![Attr::lifetime(3600)], true)
            .is_success()
    );
    h.io.kernel_bytes = kernel_relayed();
    // Its entry stops relaying at 300 s by itself (its own deadline); the allocation's
    // timer looks at it at its old expiry (600 s), when the channel has expired too,
    // and takes the entry out.
    h.engine.handle_timeout(h.t0 + 599 * SEC, &mut h.io);
    assert!(h.io.withdrawn.is_empty());
    h.engine.handle_timeout(h.t0 + 600 * SEC, &mut h.io);
    assert_eq!(h.io.withdrawn, [(peer, 0x4001)]);
    let session = &h.engine.sessions(h.t0 + 601 * SEC, &mut h.io)[0];
    assert_eq!(
        (session.bytes_to_peer, session.bytes_to_client),
        (1000, 2000)
    );
    // Bound again (same number and peer, within the cooldown), it goes back in.
    h.bind_channel(700 * SEC, 0x4001, peer);
    assert_eq!(h.io.kernel[&(peer, 0x4001)], h.t0 + 1000 * SEC);
}

#[test]
fn stream_clients_are_never_offloaded() {
    for transport in [Transport::Tcp, Transport::Tls] {
        let mut h = Harness::new();
        h.tuple.transport = transport;
        // A new 5-tuple earns its own nonce.
        let challenge = h.request_at(Duration::ZERO, METHOD_ALLOCATE, vec![], false);
        h.nonce = challenge
            .msg
            .text(stun::attributes::ATTR_NONCE)
            .unwrap()
            .to_string();
        h.allocate();
        h.bind_channel(Duration::ZERO, 0x4001, PEER.parse().unwrap());
        assert!(h.io.kernel.is_empty(), "{transport:?}");
    }
}

#[test]
fn a_reload_that_denies_the_peer_cuts_it_off() {
    let mut h = Harness::new();
    let relay = h.allocate();
    let peer: SocketAddr = PEER.parse().unwrap();
    h.bind_channel(Duration::ZERO, 0x4001, peer);
    assert!(h.client_channel_data(SEC, 0x4001));
    assert!(h.peer_sends(SEC, relay, peer));
    // The same rules without the re-allowed documentation ranges: the peer is denied.
    let own = tern::policy::OwnRelays {
        ips: vec![sans_io::RELAY_V4, sans_io::RELAY_V6],
        ports: sans_io::port_range().as_range(),
    };
    let denying = tern::policy::PeerPolicy::new(vec![], vec![], own);
    h.engine
        .reload(&sans_io::rules(denying), h.t0 + SEC, &mut h.io);
    // Gone from the kernel, and from user space: its channel and permission with it.
    assert_eq!(h.io.withdrawn, [(peer, 0x4001)]);
    assert!(h.io.kernel.is_empty());
    assert!(!h.client_channel_data(2 * SEC, 0x4001));
    assert!(!h.peer_sends(2 * SEC, relay, peer));
}

#[test]
fn a_reload_that_still_allows_the_peers_keeps_them() {
    let mut h = Harness::new();
    let relay = h.allocate();
    let peer: SocketAddr = PEER.parse().unwrap();
    // Another client's relay address on this server: allowed on the relay ports only.
    let neighbour = SocketAddr::new(sans_io::RELAY_V4, sans_io::port_range().min());
    h.bind_channel(Duration::ZERO, 0x4001, peer);
    h.bind_channel(Duration::ZERO, 0x4002, neighbour);
    h.engine.reload(
        &sans_io::rules(sans_io::peer_policy()),
        h.t0 + SEC,
        &mut h.io,
    );
    assert!(h.io.withdrawn.is_empty());
    assert_eq!(h.io.kernel.len(), 2);
    assert!(h.client_channel_data(2 * SEC, 0x4001));
    assert!(h.client_channel_data(2 * SEC, 0x4002));
    assert!(h.peer_sends(2 * SEC, relay, peer));
    assert!(h.peer_sends(2 * SEC, relay, neighbour));
}

#[test]
fn bandwidth_limits_keep_channels_from_the_kernel_and_drop_what_is_over() {
    use tern::core::{BandwidthLimits, Direction, Limit, LimitScope};
    let mut h = Harness::new();
    let relay = h.allocate();
    let peer: SocketAddr = PEER.parse().unwrap();
    h.bind_channel(Duration::ZERO, 0x4001, peer);
    assert_eq!(h.io.kernel.len(), 1);
    // A reload sets 1000 bytes/s with a 1500-byte burst: the kernel cannot enforce it,
    // so the channel comes back to the engine.
    let with_limits = |limits: Option<BandwidthLimits>| {
        let mut rules = sans_io::rules(sans_io::peer_policy());
        let mut config = (*rules.config).clone();
        config.bandwidth = limits;
        rules.config = std::sync::Arc::new(config);
        rules
    };
    let limit = Limit::new(1000, 1500);
    let limited = with_limits(Some(BandwidthLimits {
        allocation: Some(limit),
        ..BandwidthLimits::default()
    }));
    h.engine.reload(&limited, h.t0 + SEC, &mut h.io);
    assert_eq!(h.io.withdrawn, [(peer, 0x4001)]);
    assert!(h.io.kernel.is_empty());

    // 1000-byte ChannelData: the burst lets one through, the next waits a second.
    let mut channel_data = vec![0x40, 0x01, 0x03, 0xe8];
    channel_data.extend_from_slice(&[7; 1000]);
    let send = |h: &mut Harness, at: Duration| {
        h.io.to_peer.clear();
        h.engine
            .handle_client(h.now(at), h.tuple, &channel_data, &mut h.io);
        !h.io.to_peer.is_empty()
    };
    assert!(send(&mut h, 2 * SEC));
    assert!(!send(&mut h, 2 * SEC + 100 * MS));
    assert!(send(&mut h, 3 * SEC));
    assert_eq!(
        h.io.bandwidth_dropped,
        [(LimitScope::Allocation, Direction::ToPeer, 1000)]
    );
    // The other direction has its own bucket.
    assert!(h.peer_sends(3 * SEC, relay, peer));
    let session = &h.engine.sessions(h.t0 + 3 * SEC, &mut h.io)[0];
    assert_eq!((session.dropped_to_peer, session.dropped_to_client), (1, 0));
    assert_eq!(session.bytes_to_peer, 2000);

    // Limits gone: the channel goes back to the kernel, and nothing is dropped.
    h.engine
        .reload(&with_limits(None), h.t0 + 4 * SEC, &mut h.io);
    assert_eq!(h.io.kernel.len(), 1);
    assert!(send(&mut h, 4 * SEC));
    assert!(send(&mut h, 4 * SEC));
    assert_eq!(h.io.bandwidth_dropped.len(), 1);
}

/// What the test kernel says it relayed on every channel: 10 packets (1000 bytes) to
/// the peer, 20 (2000 bytes) to the client.
fn kernel_relayed() -> tern::core::KernelRelayed {
    tern::core::KernelRelayed {
        to_peer: tern::core::Traffic {
            packets: 10,
            bytes: 1000,
        },
        to_client: tern::core::Traffic {
            packets: 20,
            bytes: 2000,
        },
    }
}
