//! Dual allocations (RFC 8656 §7.2, ADDITIONAL-ADDRESS-FAMILY) in the sans-IO engine:
//! one IPv4 and one IPv6 relayed address for one client, counted as one allocation;
//! each peer's data through the relay socket of its family; ADDRESS-ERROR-CODE when
//! only one family can be had; the 400s of §7.2; Refresh naming a family (§8.1); and
//! both relay sockets closed when it ends. No sockets: a recording `Io` stands in for
//! the driver, and time is passed in.

#[path = "support/sans_io.rs"]
mod sans_io;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use stun::attributes::{
    ATTR_DATA, ATTR_EVEN_PORT, ATTR_REQUESTED_ADDRESS_FAMILY, ATTR_RESERVATION_TOKEN,
    ATTR_XOR_PEER_ADDRESS, ATTR_XOR_RELAYED_ADDRESS,
};
use stun::message::{
    CLASS_INDICATION, METHOD_ALLOCATE, METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION,
    METHOD_REFRESH, METHOD_SEND, Method,
};

use sans_io::{PASSWORD, REALM, RELAY_V4, RELAY_V6, Recorder, USER};
use tern::client::{Attr, Outgoing, Reply, Signer, encode_message, new_transaction_id, to_reply};
use tern::core::{EndReason, Engine, FiveTuple, Now, Transport};
use tern::proto::Request;
use tern::proto::attrs::{
    ATTR_ADDITIONAL_ADDRESS_FAMILY, ATTR_ADDRESS_ERROR_CODE, decode_xor_address,
};

const SEC: Duration = Duration::from_secs(1);
const UNIX0: u64 = 1_800_000_000;
const IPV4: u8 = 1;
const IPV6: u8 = 2;

fn peer_v4() -> SocketAddr {
    "198.51.100.7:4000".parse().unwrap()
}

fn peer_v6() -> SocketAddr {
    "[2001:db8:1::7]:4000".parse().unwrap()
}

/// ADDITIONAL-ADDRESS-FAMILY with `family` (1 IPv4, 2 IPv6).
fn additional(family: u8) -> Attr {
    Attr::Raw(ATTR_ADDITIONAL_ADDRESS_FAMILY, vec![family, 0, 0, 0])
}

/// The attributes of a dual Allocate.
fn dual() -> Vec<Attr> {
    vec![Attr::udp_transport(), additional(IPV6)]
}

/// Client `n`'s 5-tuple: each has its own.
fn client(n: u16) -> FiveTuple {
    FiveTuple {
        client: SocketAddr::from(([203, 0, 113, 9], 40_000 + n)),
        server: SocketAddr::new(RELAY_V4, 3478),
        transport: Transport::Udp,
    }
}

struct Harness {
    engine: Engine,
    io: Recorder,
    t0: Instant,
}

impl Harness {
    /// An engine relaying on one IP of each family.
    fn new() -> Self {
        Self::relaying_on(&[RELAY_V4, RELAY_V6])
    }

    fn relaying_on(ips: &[IpAddr]) -> Self {
        let mut config = sans_io::engine_config();
        config.relay_ips = ips.to_vec();
        Self {
            engine: sans_io::engine_with(config),
            io: Recorder::default(),
            t0: Instant::now(),
        }
    }

    fn now(&self, at: Duration) -> Now {
        Now {
            mono: self.t0 + at,
            unix: UNIX0 + at.as_secs(),
        }
    }

    /// Client `n` sends a signed `method` request at `at`; the answer it got.
    fn ask(&mut self, at: Duration, n: u16, method: Method, attrs: Vec<Attr>) -> Reply {
        let (now, tuple) = (self.now(at), client(n));
        let bytes = sans_io::signed_request(&tuple, now, method, attrs);
        self.engine.handle_client(now, tuple, &bytes, &mut self.io);
        let (to, answer) = self.io.to_client.pop().expect("an answer");
        assert_eq!(to, tuple);
        to_reply(Request::parse(&answer).expect("a well-formed answer"))
    }

    /// Client 0 asks for a dual allocation at time zero; its two relayed addresses.
    fn allocate_dual(&mut self) -> (SocketAddr, SocketAddr) {
        let reply = self.ask(Duration::ZERO, 0, METHOD_ALLOCATE, dual());
        assert!(reply.is_success(), "{:?}", reply.code);
        assert_eq!(address_error(&reply), None);
        match relayed(&reply)[..] {
            [ipv4, ipv6] => (ipv4, ipv6),
            ref other => panic!("two XOR-RELAYED-ADDRESS expected: {other:?}"),
        }
    }

    /// Client 0 creates permissions for `peers` at `at`; the answer's code.
    fn permit(&mut self, at: Duration, peers: &[SocketAddr]) -> Option<u16> {
        let attrs = peers.iter().map(|p| Attr::Peer(*p)).collect();
        self.ask(at, 0, METHOD_CREATE_PERMISSION, attrs).code
    }

    /// Client 0 sends a Send indication to `peer` at `at`; the relay socket it left
    /// from, if it was relayed.
    fn send(&mut self, at: Duration, peer: SocketAddr) -> Option<SocketAddr> {
        let out = Outgoing {
            attrs: vec![Attr::Peer(peer), Attr::Raw(ATTR_DATA, b"hello".to_vec())],
            ..Outgoing::default()
        };
        let signer = Signer {
            username: USER,
            realm: REALM,
            nonce: "",
            password: PASSWORD,
        };
        let bytes = encode_message(
            METHOD_SEND,
            CLASS_INDICATION,
            new_transaction_id(),
            &out,
            &signer,
        );
        self.relayed_to_peer(at, &bytes, peer)
    }

    /// Client 0 sends ChannelData on `number` at `at`; the relay socket it left from
    /// towards `peer`, if it was relayed.
    fn channel_data(&mut self, at: Duration, number: u16, peer: SocketAddr) -> Option<SocketAddr> {
        let mut bytes = number.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0, 3, b'a', b'b', b'c', 0]);
        self.relayed_to_peer(at, &bytes, peer)
    }

    fn relayed_to_peer(
        &mut self,
        at: Duration,
        bytes: &[u8],
        peer: SocketAddr,
    ) -> Option<SocketAddr> {
        let sent = self.io.to_peer.len();
        let now = self.now(at);
        self.engine
            .handle_client(now, client(0), bytes, &mut self.io);
        let (to, _) = self.io.to_peer.get(sent)?;
        assert_eq!(*to, peer);
        Some(self.io.sent_from[sent])
    }

    /// `peer` sends to the relay socket at `relay` at `at`; whether client 0 got it,
    /// naming `peer`.
    fn peer_sends(&mut self, at: Duration, relay: SocketAddr, peer: SocketAddr) -> bool {
        self.io.to_client.clear();
        let now = self.t0 + at;
        sans_io::peer_datagram(&mut self.engine, &mut self.io, now, (relay, peer), b"hey");
        let Some((to, bytes)) = self.io.to_client.pop() else {
            return false;
        };
        assert_eq!(to, client(0));
        let indication = Request::parse(&bytes).expect("a Data indication");
        let from = indication
            .attr(ATTR_XOR_PEER_ADDRESS)
            .expect("XOR-PEER-ADDRESS");
        assert_eq!(
            decode_xor_address(from, &indication.transaction_id()),
            Some(peer)
        );
        true
    }

    fn timeout(&mut self, at: Duration) {
        self.engine.handle_timeout(self.t0 + at, &mut self.io);
    }

    /// Takes every port of `ip`, as other allocations would.
    fn exhaust(&mut self, ip: IpAddr) {
        let (min, max) = sans_io::PORTS;
        let mut ports = self.engine.shared().ports();
        for port in min..=max {
            assert!(ports.take(ip, port));
        }
    }
}

/// Every XOR-RELAYED-ADDRESS of an answer, in order.
fn relayed(reply: &Reply) -> Vec<SocketAddr> {
    let tid = reply.msg.transaction_id();
    let values = reply.msg.attrs(ATTR_XOR_RELAYED_ADDRESS);
    values
        .map(|v| decode_xor_address(v, &tid).expect("an address"))
        .collect()
}

/// ADDRESS-ERROR-CODE as (family, code, reason), read as RFC 8656 §18.12 lays it out:
/// family, 13 reserved bits, class (3 bits), number, reason phrase.
fn address_error(reply: &Reply) -> Option<(u8, u16, String)> {
    let value = reply.msg.attr(ATTR_ADDRESS_ERROR_CODE)?;
    let code = u16::from(value[2] & 0x07) * 100 + u16::from(value[3]);
    let reason = String::from_utf8(value[4..].to_vec()).expect("UTF-8 reason");
    Some((value[0], code, reason))
}

#[test]
fn a_dual_allocate_gets_one_relayed_address_of_each_family_as_one_allocation() {
    let mut h = Harness::new();
    let (ipv4, ipv6) = h.allocate_dual();
    assert_eq!((ipv4.ip(), ipv6.ip()), (RELAY_V4, RELAY_V6));
    assert_eq!(h.io.bound, [ipv4, ipv6].into());
    assert_eq!(h.engine.allocation_count(), 1);
    assert_eq!(h.io.allocations_counted, 1, "one allocation in the metrics");
    assert_eq!(h.engine.ports_in_use(), 2);
    let alloc = h.engine.allocation(&client(0)).unwrap();
    assert_eq!(alloc.relays().collect::<Vec<_>>(), [ipv4, ipv6]);
    // Either address names it for the admin API; the session shows both.
    let sessions = h.engine.sessions(h.t0, &mut h.io);
    assert_eq!(
        (sessions[0].relay, sessions[0].additional_relay),
        (ipv4, Some(ipv6))
    );
}

#[test]
fn a_dual_allocation_counts_once_against_the_quota_though_it_holds_two_ports() {
    // Ten ports per IP and a quota of ten per user: ten dual allocations fit exactly.
    let mut h = Harness::new();
    for n in 0..10 {
        let reply = h.ask(Duration::ZERO, n, METHOD_ALLOCATE, dual());
        assert!(reply.is_success(), "allocation {n}: {:?}", reply.code);
        assert_eq!(relayed(&reply).len(), 2);
    }
    assert_eq!(h.engine.ports_in_use(), 20);
    let reply = h.ask(Duration::ZERO, 10, METHOD_ALLOCATE, dual());
    assert_eq!(reply.code, Some(486));
}

#[test]
fn malformed_dual_requests_are_400() {
    let mut h = Harness::new();
    let transport = Attr::udp_transport;
    let refused = [
        // IPv4 is not an additional family (§7.2 step 9), nor is an unknown one.
        vec![transport(), additional(IPV4)],
        vec![transport(), additional(3)],
        vec![
            transport(),
            Attr::Raw(ATTR_ADDITIONAL_ADDRESS_FAMILY, vec![IPV6]),
        ],
        // Both family attributes (step 6).
        vec![transport(), Attr::family(IPV4), additional(IPV6)],
        vec![transport(), Attr::family(IPV6), additional(IPV6)],
        // A reserved port with a family (step 5).
        vec![
            transport(),
            Attr::Raw(ATTR_RESERVATION_TOKEN, vec![7; 8]),
            additional(IPV6),
        ],
        // A reservation of the next port (step 8).
        vec![
            transport(),
            Attr::Raw(ATTR_EVEN_PORT, vec![0x80]),
            additional(IPV6),
        ],
    ];
    for attrs in refused {
        let shown = format!("{attrs:?}");
        let reply = h.ask(Duration::ZERO, 0, METHOD_ALLOCATE, attrs);
        assert_eq!(reply.code, Some(400), "{shown}");
    }
    assert_eq!(h.engine.allocation_count(), 0);
    assert!(h.io.bound.is_empty());
    assert_eq!(h.engine.ports_in_use(), 0);
}

#[test]
fn even_port_without_a_reservation_makes_both_ports_even() {
    let mut h = Harness::new();
    let mut attrs = dual();
    attrs.push(Attr::Raw(ATTR_EVEN_PORT, vec![0x00]));
    let reply = h.ask(Duration::ZERO, 0, METHOD_ALLOCATE, attrs);
    assert!(reply.is_success(), "{:?}", reply.code);
    let relays = relayed(&reply);
    assert_eq!(relays.len(), 2);
    assert!(relays.iter().all(|r| r.port() % 2 == 0), "{relays:?}");
    assert_eq!(reply.msg.attr(ATTR_RESERVATION_TOKEN), None);
}

#[test]
fn a_server_with_relay_ips_of_one_family_grants_it_with_440_for_the_other() {
    for (ips, granted, missing) in [([RELAY_V4], RELAY_V4, IPV6), ([RELAY_V6], RELAY_V6, IPV4)] {
        let mut h = Harness::relaying_on(&ips);
        let reply = h.ask(Duration::ZERO, 0, METHOD_ALLOCATE, dual());
        assert!(reply.is_success(), "{:?}", reply.code);
        let relays = relayed(&reply);
        assert_eq!(relays.len(), 1);
        assert_eq!(relays[0].ip(), granted);
        let error = (missing, 440, "Address Family not Supported".to_string());
        assert_eq!(address_error(&reply), Some(error));
        assert_eq!(h.io.bound.len(), 1);
        // It is a single-family allocation: the other family's peers are 443.
        let (other_peer, own_peer) = match missing {
            IPV6 => (peer_v6(), peer_v4()),
            _ => (peer_v4(), peer_v6()),
        };
        assert_eq!(h.permit(SEC, &[other_peer]), Some(443));
        assert_eq!(h.permit(SEC, &[own_peer]), None);
    }
}

#[test]
fn a_family_out_of_ports_is_508_in_address_error_code_and_both_out_is_508() {
    let mut h = Harness::new();
    h.exhaust(RELAY_V6);
    let reply = h.ask(Duration::ZERO, 0, METHOD_ALLOCATE, dual());
    assert!(reply.is_success(), "{:?}", reply.code);
    assert_eq!(relayed(&reply).len(), 1);
    assert_eq!(relayed(&reply)[0].ip(), RELAY_V4);
    let error = (IPV6, 508, "Insufficient Capacity".to_string());
    assert_eq!(address_error(&reply), Some(error));

    let mut h = Harness::new();
    h.exhaust(RELAY_V4);
    h.exhaust(RELAY_V6);
    let reply = h.ask(Duration::ZERO, 0, METHOD_ALLOCATE, dual());
    assert_eq!(reply.code, Some(508));
    assert_eq!(h.engine.allocation_count(), 0);
    // Nothing was counted against the quota either.
    assert_eq!(h.engine.shared().total_allocations(), 0);
}

#[test]
fn each_peer_is_relayed_through_the_relay_socket_of_its_family_both_ways() {
    let mut h = Harness::new();
    let (ipv4, ipv6) = h.allocate_dual();
    assert_eq!(h.permit(SEC, &[peer_v4(), peer_v6()]), None);
    // Send indications.
    assert_eq!(h.send(SEC, peer_v4()), Some(ipv4));
    assert_eq!(h.send(SEC, peer_v6()), Some(ipv6));
    // Channels.
    let bind = |h: &mut Harness, number: u16, peer| {
        let attrs = vec![Attr::channel(number), Attr::Peer(peer)];
        h.ask(SEC, 0, METHOD_CHANNEL_BIND, attrs).code
    };
    assert_eq!(bind(&mut h, 0x4000, peer_v4()), None);
    assert_eq!(bind(&mut h, 0x4001, peer_v6()), None);
    assert_eq!(h.channel_data(SEC, 0x4000, peer_v4()), Some(ipv4));
    assert_eq!(h.channel_data(SEC, 0x4001, peer_v6()), Some(ipv6));
    // The kernel fast path is told the relay socket of each channel's family.
    assert_eq!(h.io.kernel_relays[&(peer_v4(), 0x4000)], ipv4);
    assert_eq!(h.io.kernel_relays[&(peer_v6(), 0x4001)], ipv6);
    // Peers' data reaches the client from either relay socket.
    let (unbound_v4, unbound_v6) = (
        SocketAddr::new(peer_v4().ip(), 5000),
        SocketAddr::new(peer_v6().ip(), 5000),
    );
    assert!(h.peer_sends(SEC, ipv4, unbound_v4));
    assert!(h.peer_sends(SEC, ipv6, unbound_v6));
    // A peer without a permission is not relayed, whatever its family.
    let stranger = "[2001:db8:1::8]:4000".parse().unwrap();
    assert!(!h.peer_sends(SEC, ipv6, stranger));
    assert_eq!(h.send(SEC, stranger), None);
}

#[test]
fn a_peer_of_a_family_the_allocation_lacks_is_443() {
    let mut h = Harness::new();
    let reply = h.ask(
        Duration::ZERO,
        0,
        METHOD_ALLOCATE,
        vec![Attr::udp_transport()],
    );
    assert!(reply.is_success());
    assert_eq!(h.permit(SEC, &[peer_v6()]), Some(443));
    // All or nothing: one peer of the wrong family refuses the lot.
    assert_eq!(h.permit(SEC, &[peer_v4(), peer_v6()]), Some(443));
    let attrs = vec![Attr::channel(0x4000), Attr::Peer(peer_v6())];
    assert_eq!(h.ask(SEC, 0, METHOD_CHANNEL_BIND, attrs).code, Some(443));
    // A Send to such a peer is dropped: it can have no permission.
    assert_eq!(h.send(SEC, peer_v6()), None);
    // Refresh naming the family it lacks is 443 too (§8.2).
    let attrs = vec![Attr::family(IPV6), Attr::lifetime(600)];
    assert_eq!(h.ask(SEC, 0, METHOD_REFRESH, attrs).code, Some(443));
}

#[test]
fn refresh_naming_a_family_moves_that_familys_expiry_only() {
    let mut h = Harness::new();
    let (ipv4, ipv6) = h.allocate_dual();
    assert_eq!(h.permit(SEC, &[peer_v4(), peer_v6()]), None);
    let attrs = vec![Attr::family(IPV6), Attr::lifetime(1200)];
    let reply = h.ask(100 * SEC, 0, METHOD_REFRESH, attrs);
    assert_eq!((reply.code, reply.lifetime()), (None, Some(1200)));
    // Permissions last 300 s: both are fresh when the IPv4 half lapses, at the
    // allocation's first deadline, alone.
    assert_eq!(h.permit(590 * SEC, &[peer_v4(), peer_v6()]), None);
    h.timeout(599 * SEC);
    assert_eq!(h.io.bound.len(), 2);
    h.timeout(600 * SEC);
    assert_eq!(h.io.closed, [ipv4]);
    assert_eq!(h.engine.allocation_count(), 1);
    assert_eq!(h.io.allocations_counted, 1);
    let alloc = h.engine.allocation(&client(0)).unwrap();
    assert_eq!(alloc.relays().collect::<Vec<_>>(), [ipv6]);
    // Its IPv4 peers went with it; the IPv6 ones relay on.
    assert_eq!(h.send(601 * SEC, peer_v4()), None);
    assert!(h.peer_sends(601 * SEC, ipv6, peer_v6()));
    assert_eq!(h.permit(601 * SEC, &[peer_v4()]), Some(443));
    assert_eq!(h.permit(601 * SEC, &[peer_v6()]), None);
    // Once the port's socket is really closed it is free again.
    h.engine.handle_relay_closed(ipv4);
    assert_eq!(h.engine.ports_in_use(), 1);
    // The IPv6 half ends at its own deadline, and the allocation with it.
    h.timeout(1299 * SEC);
    assert_eq!(h.engine.allocation_count(), 1);
    h.timeout(1300 * SEC);
    assert_eq!(h.engine.allocation_count(), 0);
    assert_eq!(h.io.closed, [ipv4, ipv6]);
    assert_eq!(h.io.allocations_counted, 0);
    let ended = h.io.ended.last().unwrap();
    assert_eq!((ended.relay, ended.additional_relay), (ipv6, None));
    assert_eq!(ended.reason, EndReason::Expired);
}

#[test]
fn refresh_without_a_family_refreshes_both() {
    let mut h = Harness::new();
    h.allocate_dual();
    let reply = h.ask(100 * SEC, 0, METHOD_REFRESH, vec![Attr::lifetime(1200)]);
    assert_eq!(reply.lifetime(), Some(1200));
    h.timeout(600 * SEC);
    assert_eq!(h.io.bound.len(), 2);
    h.timeout(1300 * SEC);
    assert!(h.io.bound.is_empty());
    assert_eq!(h.engine.allocation_count(), 0);
}

#[test]
fn lifetime_zero_naming_a_family_deletes_that_family_only() {
    let mut h = Harness::new();
    let (ipv4, ipv6) = h.allocate_dual();
    assert_eq!(h.permit(SEC, &[peer_v4(), peer_v6()]), None);
    for (number, peer) in [(0x4000, peer_v4()), (0x4001, peer_v6())] {
        let attrs = vec![Attr::channel(number), Attr::Peer(peer)];
        assert_eq!(h.ask(SEC, 0, METHOD_CHANNEL_BIND, attrs).code, None);
    }
    let attrs = vec![Attr::family(IPV4), Attr::lifetime(0)];
    let reply = h.ask(2 * SEC, 0, METHOD_REFRESH, attrs);
    assert_eq!((reply.code, reply.lifetime()), (None, Some(0)));
    assert_eq!(h.io.closed, [ipv4]);
    assert_eq!(h.engine.allocation_count(), 1);
    // Its channel left the kernel and relays no more; the IPv6 channel goes on.
    assert_eq!(h.io.withdrawn, [(peer_v4(), 0x4000)]);
    assert_eq!(h.channel_data(3 * SEC, 0x4000, peer_v4()), None);
    assert_eq!(h.channel_data(3 * SEC, 0x4001, peer_v6()), Some(ipv6));
    // The IPv6 address names the allocation now.
    let sessions = h.engine.sessions(h.t0 + 3 * SEC, &mut h.io);
    assert_eq!(
        (sessions[0].relay, sessions[0].additional_relay),
        (ipv6, None)
    );
    // Naming IPv4 again is 443; deleting IPv6 deletes the allocation.
    let attrs = vec![Attr::family(IPV4), Attr::lifetime(0)];
    assert_eq!(h.ask(4 * SEC, 0, METHOD_REFRESH, attrs).code, Some(443));
    let attrs = vec![Attr::family(IPV6), Attr::lifetime(0)];
    assert_eq!(h.ask(4 * SEC, 0, METHOD_REFRESH, attrs).code, None);
    assert_eq!(h.engine.allocation_count(), 0);
    assert_eq!(h.io.closed, [ipv4, ipv6]);
    assert_eq!(h.io.ended.last().unwrap().reason, EndReason::Deleted);
    // The quota holds nothing any more.
    assert_eq!(h.engine.shared().total_allocations(), 0);
}

#[test]
fn deleting_expiring_or_killing_a_dual_allocation_closes_both_sockets() {
    // Refresh with LIFETIME 0 and no family.
    let mut h = Harness::new();
    let (ipv4, ipv6) = h.allocate_dual();
    let reply = h.ask(SEC, 0, METHOD_REFRESH, vec![Attr::lifetime(0)]);
    assert_eq!(reply.code, None);
    assert_eq!(h.io.closed, [ipv4, ipv6]);
    let ended = h.io.ended.last().unwrap();
    assert_eq!((ended.relay, ended.additional_relay), (ipv4, Some(ipv6)));
    for relay in [ipv4, ipv6] {
        h.engine.handle_relay_closed(relay);
    }
    assert_eq!(h.engine.ports_in_use(), 0);

    // Expiry.
    let mut h = Harness::new();
    h.allocate_dual();
    h.timeout(600 * SEC);
    assert_eq!(h.engine.allocation_count(), 0);
    assert!(h.io.bound.is_empty());
    assert_eq!(h.io.allocations_counted, 0);

    // A kill naming the IPv6 address.
    let mut h = Harness::new();
    let (_, ipv6) = h.allocate_dual();
    assert!(h.engine.kill(ipv6, h.t0 + SEC, &mut h.io));
    assert!(h.io.bound.is_empty());
    assert_eq!(h.io.ended.last().unwrap().reason, EndReason::Killed);
    assert!(!h.engine.kill(ipv6, h.t0 + SEC, &mut h.io));
}

#[test]
fn a_retransmitted_dual_allocate_gets_the_same_answer() {
    let mut h = Harness::new();
    let (now, tuple) = (h.now(Duration::ZERO), client(0));
    let bytes = sans_io::signed_request(&tuple, now, METHOD_ALLOCATE, dual());
    h.engine.handle_client(now, tuple, &bytes, &mut h.io);
    h.engine.handle_client(now, tuple, &bytes, &mut h.io);
    let [(_, first), (_, second)] = &h.io.to_client[..] else {
        panic!("two answers expected");
    };
    assert_eq!(first, second);
    assert_eq!(h.io.bound.len(), 2);
}

#[test]
fn requested_address_family_alone_still_gets_one_family() {
    let mut h = Harness::new();
    let attrs = vec![Attr::udp_transport(), Attr::family(IPV6)];
    let reply = h.ask(Duration::ZERO, 0, METHOD_ALLOCATE, attrs);
    assert_eq!(
        relayed(&reply).iter().map(|r| r.ip()).collect::<Vec<_>>(),
        [RELAY_V6]
    );
    assert_eq!(address_error(&reply), None);
    assert!(reply.msg.attr(ATTR_REQUESTED_ADDRESS_FAMILY).is_none());
}
