//! Every TURN method and every error code, against a running `tern serve` on loopback,
//! driven by the project's own client.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;
use stun::attributes::*;
use stun::message::{METHOD_ALLOCATE, METHOD_REFRESH};
use support::{TernServer, relay_ports_arg};
use tern::client::{Attr, Outgoing, TurnClient, signed};

const USER: &str = "alice";
const PASS: &str = "wonderland";
const WAIT: Duration = Duration::from_secs(2);

fn server(extra: &[&str]) -> TernServer {
    server_with_ports(&relay_ports_arg(), extra)
}

fn server_with_ports(ports: &str, extra: &[&str]) -> TernServer {
    let mut args = vec![
        "--user",
        "alice:wonderland",
        "--user",
        "bob:builder",
        "--allow-peer",
        "127.0.0.0/8",
        "--ports",
        ports,
    ];
    args.extend_from_slice(extra);
    TernServer::start(&args)
}

fn client(server: &TernServer) -> TurnClient {
    TurnClient::new(server.addr, USER, PASS).unwrap()
}

/// A UDP socket on loopback standing in for a media peer.
fn peer() -> (UdpSocket, SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

fn relayed(c: &mut TurnClient) -> SocketAddr {
    let r = c.allocate(vec![]).unwrap();
    assert!(r.is_success(), "allocate failed: {:?}", r.code);
    r.xor_address(ATTR_XOR_RELAYED_ADDRESS).unwrap()
}

fn recv_from(socket: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = [0u8; 2048];
    socket
        .recv_from(&mut buf)
        .ok()
        .map(|(n, from)| (buf[..n].to_vec(), from))
}

#[test]
fn binding_returns_the_mapped_address_with_fingerprint() {
    let s = server(&[]);
    let mut c = client(&s);
    let (tid, bytes) = c.encode(stun::message::METHOD_BINDING, &Outgoing::default());
    let r = c.exchange(tid, &bytes).unwrap().expect("binding answered");
    assert!(r.is_success());
    assert_eq!(r.xor_address(ATTR_XORMAPPED_ADDRESS), Some(c.local_addr()));
    assert!(r.msg.has_fingerprint());
}

#[test]
fn unauthenticated_allocate_gets_401_with_realm_and_nonce() {
    let s = server(&["--realm", "example.org"]);
    let mut c = client(&s);
    let r = c
        .request(
            METHOD_ALLOCATE,
            &Outgoing {
                attrs: vec![Attr::udp_transport()],
                ..Outgoing::default()
            },
        )
        .unwrap();
    assert_eq!(r.code, Some(401));
    assert_eq!(r.msg.text(ATTR_REALM), Some("example.org"));
    assert!(!r.msg.text(ATTR_NONCE).unwrap_or_default().is_empty());
    assert!(!r.msg.has_integrity(), "a 401 carries no MESSAGE-INTEGRITY");
}

#[test]
fn relays_both_ways_with_send_indications_and_channels() {
    let s = server(&[]);
    let mut c = client(&s);
    let relay = relayed(&mut c);
    let (peer, peer_addr) = peer();
    assert!(c.create_permission(&[peer_addr]).unwrap().is_success());

    c.send_indication(peer_addr, b"via send").unwrap();
    let (data, from) = recv_from(&peer).expect("peer got the Send data");
    assert_eq!((data.as_slice(), from), (&b"via send"[..], relay));

    peer.send_to(b"back as data", relay).unwrap();
    let (from, data) = c
        .recv_data(WAIT)
        .unwrap()
        .expect("client got a Data indication");
    assert_eq!(
        (from, data.as_slice()),
        (Some(peer_addr), &b"back as data"[..])
    );

    // 0x7FFF is outside RFC 8656's range but inside RFC 5766's, which clients still use.
    for number in [0x4000u16, 0x7FFF] {
        let (peer, peer_addr) = self::peer();
        assert!(c.channel_bind(number, peer_addr).unwrap().is_success());
        c.send_channel_data(number, b"over channel").unwrap();
        let (data, from) = recv_from(&peer).expect("peer got ChannelData payload");
        assert_eq!((data.as_slice(), from), (&b"over channel"[..], relay));
        peer.send_to(b"channel back", relay).unwrap();
        let (from, data) = c.recv_data(WAIT).unwrap().expect("client got ChannelData");
        assert_eq!((from, data.as_slice()), (None, &b"channel back"[..]));
    }
}

#[test]
fn traffic_without_permission_is_dropped_both_ways() {
    let s = server(&[]);
    let mut c = client(&s);
    let relay = relayed(&mut c);
    let (peer, peer_addr) = peer();
    c.send_indication(peer_addr, b"nope").unwrap();
    assert!(
        recv_from(&peer).is_none(),
        "Send without permission was relayed"
    );
    peer.send_to(b"nope", relay).unwrap();
    assert!(c.recv_data(Duration::from_millis(500)).unwrap().is_none());
    // ChannelData on a channel that was never bound goes nowhere either.
    c.send_channel_data(0x4005, b"nope").unwrap();
    assert!(recv_from(&peer).is_none());
}

#[test]
fn second_allocate_is_437_and_a_retransmission_gets_the_same_answer() {
    let s = server(&[]);
    let mut c = client(&s);
    let relay = relayed(&mut c);
    let r = c.allocate(vec![]).unwrap();
    assert_eq!(r.code, Some(437));

    // A retransmitted Allocate (same transaction id) is answered as the original was.
    let mut c = client(&s);
    assert_eq!(
        c.refresh(None).unwrap().code,
        Some(437),
        "learns realm and nonce"
    );
    let (tid, bytes) = c.encode(METHOD_ALLOCATE, &signed(vec![Attr::udp_transport()]));
    let first = c.exchange(tid, &bytes).unwrap().unwrap();
    let again = c.exchange(tid, &bytes).unwrap().unwrap();
    assert!(
        first.is_success() && again.is_success(),
        "{:?} {:?}",
        first.code,
        again.code
    );
    assert_eq!(
        first.xor_address(ATTR_XOR_RELAYED_ADDRESS),
        again.xor_address(ATTR_XOR_RELAYED_ADDRESS)
    );
    assert_ne!(first.xor_address(ATTR_XOR_RELAYED_ADDRESS), Some(relay));
}

#[test]
fn requested_transport_missing_is_400_and_tcp_is_442() {
    let s = server(&[]);
    let mut c = client(&s);
    let r = c.request(METHOD_ALLOCATE, &signed(vec![])).unwrap();
    assert_eq!(r.code, Some(400));
    assert!(
        r.msg.has_integrity(),
        "errors after authentication are signed"
    );
    let tcp = Attr::Raw(ATTR_REQUESTED_TRANSPORT, vec![6, 0, 0, 0]);
    let r = c.request(METHOD_ALLOCATE, &signed(vec![tcp])).unwrap();
    assert_eq!(r.code, Some(442));
}

#[test]
fn unknown_comprehension_required_attribute_is_420_listing_it() {
    let s = server(&[]);
    let mut c = client(&s);
    let odd = AttrType(0x0031);
    let r = c.allocate(vec![Attr::Raw(odd, vec![1, 2, 3, 4])]).unwrap();
    assert_eq!(r.code, Some(420));
    assert_eq!(r.msg.attr(ATTR_UNKNOWN_ATTRIBUTES), Some(&[0x00, 0x31][..]));
    // Comprehension-optional unknown attributes are ignored.
    let r = c
        .allocate(vec![Attr::Raw(AttrType(0xC0DE), vec![1, 2, 3, 4])])
        .unwrap();
    assert!(r.is_success(), "{:?}", r.code);
}

#[test]
fn requests_without_an_allocation_are_437_and_another_user_is_441() {
    let s = server(&[]);
    let mut c = client(&s);
    assert_eq!(c.refresh(None).unwrap().code, Some(437));
    let (_, peer_addr) = peer();
    assert_eq!(c.create_permission(&[peer_addr]).unwrap().code, Some(437));
    assert_eq!(c.channel_bind(0x4000, peer_addr).unwrap().code, Some(437));
    relayed(&mut c);
    c.set_credentials("bob", "builder");
    assert_eq!(c.refresh(None).unwrap().code, Some(441));
    assert_eq!(c.create_permission(&[peer_addr]).unwrap().code, Some(441));
}

#[test]
fn address_families_440_and_443() {
    let s = server(&[]);
    let mut c = client(&s);
    assert_eq!(c.allocate(vec![Attr::family(3)]).unwrap().code, Some(440));
    // No IPv6 relay address on this server.
    assert_eq!(c.allocate(vec![Attr::family(2)]).unwrap().code, Some(440));
    relayed(&mut c);
    let v6_peer: SocketAddr = "[::1]:5000".parse().unwrap();
    assert_eq!(c.create_permission(&[v6_peer]).unwrap().code, Some(443));
    assert_eq!(c.channel_bind(0x4000, v6_peer).unwrap().code, Some(443));
    let r = c
        .request(METHOD_REFRESH, &signed(vec![Attr::family(2)]))
        .unwrap();
    assert_eq!(r.code, Some(443));
}

#[test]
fn channel_bind_rules() {
    let s = server(&[]);
    let mut c = client(&s);
    relayed(&mut c);
    let (_, p1) = peer();
    let (_, p2) = peer();
    assert_eq!(c.channel_bind(0x3FFF, p1).unwrap().code, Some(400));
    assert_eq!(c.channel_bind(0x8000, p1).unwrap().code, Some(400));
    assert!(c.channel_bind(0x4001, p1).unwrap().is_success());
    assert!(c.channel_bind(0x4001, p1).unwrap().is_success(), "refresh");
    assert_eq!(c.channel_bind(0x4001, p2).unwrap().code, Some(400));
    assert_eq!(c.channel_bind(0x4002, p1).unwrap().code, Some(400));
    let no_peer = c
        .request(
            stun::message::METHOD_CHANNEL_BIND,
            &signed(vec![Attr::channel(0x4003)]),
        )
        .unwrap();
    assert_eq!(no_peer.code, Some(400));
}

#[test]
fn create_permission_is_all_or_nothing() {
    let s = server(&[]);
    let mut c = client(&s);
    let relay = relayed(&mut c);
    let (peer, peer_addr) = peer();
    // 10.0.0.1 is denied by default (only loopback was re-allowed); nothing is sent there.
    let denied: SocketAddr = "10.0.0.1:5000".parse().unwrap();
    assert_eq!(
        c.create_permission(&[peer_addr, denied]).unwrap().code,
        Some(403)
    );
    peer.send_to(b"should not pass", relay).unwrap();
    assert!(c.recv_data(Duration::from_millis(500)).unwrap().is_none());
    assert_eq!(c.create_permission(&[]).unwrap().code, Some(400));
    let (_, second) = self::peer();
    assert!(
        c.create_permission(&[peer_addr, second])
            .unwrap()
            .is_success()
    );
}

#[test]
fn refresh_sets_lifetime_and_zero_deletes() {
    let s = server(&[]);
    let mut c = client(&s);
    relayed(&mut c);
    assert_eq!(c.refresh(Some(1800)).unwrap().lifetime(), Some(1800));
    assert_eq!(c.refresh(Some(99_999)).unwrap().lifetime(), Some(3600));
    assert_eq!(c.refresh(None).unwrap().lifetime(), Some(600));
    assert_eq!(c.refresh(Some(0)).unwrap().lifetime(), Some(0));
    assert_eq!(c.refresh(None).unwrap().code, Some(437));
    assert!(
        c.allocate(vec![]).unwrap().is_success(),
        "allocating again works"
    );
}

#[test]
fn attributes_after_message_integrity_are_ignored() {
    let s = server(&[]);
    let mut c = client(&s);
    relayed(&mut c);
    let out = Outgoing {
        attrs: vec![Attr::lifetime(1200)],
        after_integrity: vec![Attr::lifetime(0)],
        sign: true,
        ..Outgoing::default()
    };
    let r = c.request(METHOD_REFRESH, &out).unwrap();
    assert_eq!(
        r.lifetime(),
        Some(1200),
        "the trailing LIFETIME 0 must not count"
    );
    assert!(
        c.refresh(None).unwrap().is_success(),
        "allocation still there"
    );
}

#[test]
fn fingerprint_is_echoed_only_when_asked() {
    let s = server(&[]);
    let mut c = client(&s);
    let out = Outgoing {
        attrs: vec![Attr::udp_transport()],
        fingerprint: true,
        sign: true,
        ..Outgoing::default()
    };
    let r = c.request(METHOD_ALLOCATE, &out).unwrap();
    assert!(r.is_success() && r.msg.has_fingerprint());
    assert!(!c.refresh(None).unwrap().msg.has_fingerprint());
}

#[test]
fn user_and_total_quotas_are_486() {
    let config = "[limits]\nuser_allocations = 2\ntotal_allocations = 3\n";
    let ports = relay_ports_arg();
    let s = TernServer::start_with_config(
        config,
        &[
            "--user",
            "alice:wonderland",
            "--user",
            "bob:builder",
            "--ports",
            &ports,
        ],
    );
    let mut alice: Vec<TurnClient> = (0..3).map(|_| client(&s)).collect();
    assert!(alice[0].allocate(vec![]).unwrap().is_success());
    assert!(alice[1].allocate(vec![]).unwrap().is_success());
    assert_eq!(alice[2].allocate(vec![]).unwrap().code, Some(486));
    let mut bob = TurnClient::new(s.addr, "bob", "builder").unwrap();
    assert!(bob.allocate(vec![]).unwrap().is_success());
    let mut bob2 = TurnClient::new(s.addr, "bob", "builder").unwrap();
    assert_eq!(
        bob2.allocate(vec![]).unwrap().code,
        Some(486),
        "total quota"
    );
    // Freed quota can be used again.
    assert!(alice[0].refresh(Some(0)).unwrap().is_success());
    assert!(alice[2].allocate(vec![]).unwrap().is_success());
}

#[test]
fn port_range_exhaustion_is_508_and_ports_come_back() {
    let (min, _) = support::free_port_range(2);
    let ports = format!("{min}-{}", min + 1);
    let s = server_with_ports(&ports, &[]);
    let mut clients: Vec<TurnClient> = (0..3).map(|_| client(&s)).collect();
    let a = relayed(&mut clients[0]);
    let b = relayed(&mut clients[1]);
    assert_ne!(a.port(), b.port());
    assert_eq!(clients[2].allocate(vec![]).unwrap().code, Some(508));
    assert!(clients[0].refresh(Some(0)).unwrap().is_success());
    // The port is handed out again as soon as its socket is closed (milliseconds).
    let mut reused = None;
    for _ in 0..50 {
        let r = clients[2].allocate(vec![]).unwrap();
        if r.is_success() {
            reused = r.xor_address(ATTR_XOR_RELAYED_ADDRESS);
            break;
        }
        assert_eq!(r.code, Some(508));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        reused.map(|r| r.port()),
        Some(a.port()),
        "the freed port is reused"
    );
}

#[test]
fn even_port_reservation_token() {
    let s = server(&[]);
    let mut first = client(&s);
    let r = first
        .allocate(vec![Attr::Raw(ATTR_EVEN_PORT, vec![0x80])])
        .unwrap();
    assert!(r.is_success(), "{:?}", r.code);
    let relay = r.xor_address(ATTR_XOR_RELAYED_ADDRESS).unwrap();
    assert_eq!(relay.port() % 2, 0);
    let token = r.msg.attr(ATTR_RESERVATION_TOKEN).expect("token").to_vec();
    assert_eq!(token.len(), 8);

    let mut second = client(&s);
    let with_even = vec![
        Attr::Raw(ATTR_RESERVATION_TOKEN, token.clone()),
        Attr::Raw(ATTR_EVEN_PORT, vec![0]),
    ];
    assert_eq!(second.allocate(with_even).unwrap().code, Some(400));
    let r = second
        .allocate(vec![Attr::Raw(ATTR_RESERVATION_TOKEN, token.clone())])
        .unwrap();
    assert!(r.is_success(), "{:?}", r.code);
    let next = r.xor_address(ATTR_XOR_RELAYED_ADDRESS).unwrap();
    assert_eq!(next.port(), relay.port() + 1);
    // A token is good once.
    let mut third = client(&s);
    let r = third
        .allocate(vec![Attr::Raw(ATTR_RESERVATION_TOKEN, token)])
        .unwrap();
    assert_eq!(r.code, Some(508));
}

#[test]
fn stale_and_foreign_nonces_get_438_with_a_fresh_nonce() {
    let s = server(&[]);
    let mut a = client(&s);
    relayed(&mut a);
    let a_nonce = a.nonce().unwrap().to_string();

    let mut b = client(&s);
    b.refresh(None).unwrap(); // learns realm and its own nonce (437 after auth)
    b.set_nonce(&a_nonce);
    let (tid, bytes) = b.encode(METHOD_ALLOCATE, &signed(vec![Attr::udp_transport()]));
    let r = b.exchange(tid, &bytes).unwrap().unwrap();
    assert_eq!(
        r.code,
        Some(438),
        "a nonce issued to another address is refused"
    );
    let fresh = r.msg.text(ATTR_NONCE).unwrap();
    assert_ne!(fresh, a_nonce);

    let mut tampered = a_nonce.clone();
    tampered.replace_range(0..1, if a_nonce.starts_with('0') { "1" } else { "0" });
    a.set_nonce(&tampered);
    let (tid, bytes) = a.encode(METHOD_REFRESH, &signed(vec![]));
    assert_eq!(a.exchange(tid, &bytes).unwrap().unwrap().code, Some(438));
}

#[test]
fn wrong_password_is_401() {
    let s = server(&[]);
    let mut c = TurnClient::new(s.addr, USER, "not the password").unwrap();
    assert_eq!(c.allocate(vec![]).unwrap().code, Some(401));
    let mut c = TurnClient::new(s.addr, "mallory", "x").unwrap();
    assert_eq!(c.allocate(vec![]).unwrap().code, Some(401));
}

#[test]
fn malformed_packets_are_dropped_and_the_server_keeps_serving() {
    let s = server(&[]);
    let mut c = client(&s);
    let (tid, valid) = c.encode(
        stun::message::METHOD_BINDING,
        &Outgoing {
            fingerprint: true,
            ..Outgoing::default()
        },
    );
    let mut bad_cookie = valid.clone();
    bad_cookie[4] ^= 0xFF;
    let mut bad_fingerprint = valid.clone();
    let last = bad_fingerprint.len() - 1;
    bad_fingerprint[last] ^= 0x01;
    let mut long_length = valid.clone();
    long_length[3] = long_length[3].wrapping_add(4);
    let mut garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![0xFF; 64],
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        bad_cookie,
        bad_fingerprint,
        long_length,
        vec![0x40, 0x00, 0xFF, 0xFF, 1, 2, 3],
    ];
    garbage.extend((1..valid.len()).map(|n| valid[..n].to_vec()));
    for g in &garbage {
        c.send_raw(g).unwrap();
    }
    assert!(
        c.recv(Duration::from_millis(500)).unwrap().is_none(),
        "malformed input got an answer"
    );
    let r = c.exchange(tid, &valid).unwrap().expect("still serving");
    assert!(r.is_success());
}

#[test]
fn ipv6_allocation_relays_on_loopback() {
    if let Err(why) = support::ipv6_loopback_available() {
        panic!("IPv6 loopback is needed for this test: {why}");
    }
    let ports = relay_ports_arg();
    let s = TernServer::builder()
        .listen(
            "[::1]:0"
                .parse::<SocketAddr>()
                .map(|_| {
                    SocketAddr::new(
                        "::1".parse().unwrap(),
                        support::free_udp_port_on("::1".parse().unwrap()),
                    )
                })
                .unwrap(),
        )
        .args(&[
            "--user",
            "alice:wonderland",
            "--allow-peer",
            "::1/128",
            "--ports",
            &ports,
        ])
        .start();
    let mut c = TurnClient::new(s.addr, USER, PASS).unwrap();
    let r = c.allocate(vec![Attr::family(2)]).unwrap();
    assert!(r.is_success(), "{:?}", r.code);
    let relay = r.xor_address(ATTR_XOR_RELAYED_ADDRESS).unwrap();
    assert!(relay.is_ipv6());
    let peer = UdpSocket::bind("[::1]:0").unwrap();
    peer.set_read_timeout(Some(WAIT)).unwrap();
    let peer_addr = peer.local_addr().unwrap();
    assert!(c.channel_bind(0x4000, peer_addr).unwrap().is_success());
    c.send_channel_data(0x4000, b"six").unwrap();
    let (data, from) = recv_from(&peer).expect("peer got data over IPv6");
    assert_eq!((data.as_slice(), from), (&b"six"[..], relay));
    // IPv4 peers do not belong on an IPv6 allocation.
    let v4: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    assert_eq!(c.create_permission(&[v4]).unwrap().code, Some(443));
}

#[test]
fn unauthorized_answers_are_rate_limited_per_source() {
    let config = "[auth]\nunauthorized_per_second = 1\nunauthorized_burst = 5\n";
    let s = TernServer::start_with_config(config, &["--user", "alice:wonderland"]);
    let mut c = client(&s);
    let out = Outgoing {
        attrs: vec![Attr::udp_transport()],
        ..Outgoing::default()
    };
    for _ in 0..40 {
        let (_, bytes) = c.encode(METHOD_ALLOCATE, &out);
        c.send_raw(&bytes).unwrap();
    }
    let mut answers = 0;
    while c.recv(Duration::from_millis(300)).unwrap().is_some() {
        answers += 1;
    }
    // The start-up readiness Binding came from the same IP and took one token.
    assert!(
        (4..=7).contains(&answers),
        "{answers} answers to 40 unsigned requests"
    );
}

#[test]
fn dont_fragment_is_honoured_and_relays() {
    let s = server(&[]);
    let mut c = client(&s);
    let r = c
        .allocate(vec![Attr::Raw(ATTR_DONT_FRAGMENT, vec![])])
        .unwrap();
    assert!(r.is_success(), "{:?}", r.code);
    let relay = r.xor_address(ATTR_XOR_RELAYED_ADDRESS).unwrap();
    let (peer, peer_addr) = peer();
    assert!(c.channel_bind(0x4100, peer_addr).unwrap().is_success());
    c.send_channel_data(0x4100, b"df").unwrap();
    assert_eq!(recv_from(&peer), Some((b"df".to_vec(), relay)));
}

/// With several workers, clients land on different ones (the kernel hashes their
/// addresses), but quotas, ports and EVEN-PORT reservations are server-wide.
#[test]
fn quotas_and_reservations_hold_across_workers() {
    let ports = relay_ports_arg();
    let config = "[server]\nworkers = 4\n[limits]\nuser_allocations = 3\n";
    let s = TernServer::start_with_config(
        config,
        &[
            "--user",
            "alice:wonderland",
            "--allow-peer",
            "127.0.0.0/8",
            "--ports",
            &ports,
        ],
    );
    let mut clients: Vec<TurnClient> = (0..12).map(|_| client(&s)).collect();
    let codes: Vec<Option<u16>> = clients
        .iter_mut()
        .map(|c| c.allocate(vec![]).unwrap().code)
        .collect();
    assert_eq!(codes.iter().filter(|c| c.is_none()).count(), 3, "{codes:?}");
    assert!(
        codes.iter().all(|c| matches!(c, None | Some(486))),
        "{codes:?}"
    );

    // Free the quota, then reserve a pair and claim it from many other clients:
    // exactly one claim wins, whichever worker it lands on.
    for (c, code) in clients.iter_mut().zip(&codes) {
        if code.is_none() {
            let r = c.refresh(Some(0)).unwrap();
            assert!(r.is_success(), "Refresh to 0: {:?}", r.code);
        }
    }
    let mut first = client(&s);
    let r = first
        .allocate(vec![Attr::Raw(ATTR_EVEN_PORT, vec![0x80])])
        .unwrap();
    assert!(r.is_success(), "{:?}", r.code);
    let relay = r.xor_address(ATTR_XOR_RELAYED_ADDRESS).unwrap();
    let token = r.msg.attr(ATTR_RESERVATION_TOKEN).unwrap().to_vec();
    let mut claims = Vec::new();
    for _ in 0..2 {
        let mut c = client(&s);
        let r = c
            .allocate(vec![Attr::Raw(ATTR_RESERVATION_TOKEN, token.clone())])
            .unwrap();
        claims.push((r.code, r.xor_address(ATTR_XOR_RELAYED_ADDRESS)));
    }
    let won: Vec<_> = claims.iter().filter(|(code, _)| code.is_none()).collect();
    assert_eq!(won.len(), 1, "{claims:?}");
    assert_eq!(won[0].1.map(|a| a.port()), Some(relay.port() + 1));
}

/// Relay ports of the contended range in `even_port_reservations_race_across_workers`.
const RACE_PORTS: u16 = 12;
/// Allocations of one round of that race: with EVEN-PORT R=1, then plain ones.
const RACE_RESERVING: usize = 3;
const RACE_PLAIN: usize = 4;
/// Rounds of that race: a round takes well under 100 ms on loopback, and the window in
/// which two workers meet on one pair is hit in only a few per cent of rounds.
const RACE_ROUNDS: usize = 20;

/// What one Allocate got: its client, and the error code or relayed address and token.
struct Allocated {
    client: TurnClient,
    code: Option<u16>,
    relay: Option<SocketAddr>,
    token: Option<Vec<u8>>,
}

fn allocate_from(mut client: TurnClient, attrs: Vec<Attr>) -> Allocated {
    let r = client.allocate(attrs).unwrap();
    Allocated {
        code: r.code,
        relay: r.xor_address(ATTR_XOR_RELAYED_ADDRESS),
        token: r.msg.attr(ATTR_RESERVATION_TOKEN).map(<[u8]>::to_vec),
        client,
    }
}

/// Waits (a second at most) until the server holds `n` relay ports: a deleted
/// allocation's port comes back once its socket is closed, milliseconds later.
fn wait_ports_in_use(admin: SocketAddr, n: usize) {
    let mut in_use = support::metric(admin, "tern_relay_ports_in_use");
    for _ in 0..50 {
        if in_use == n as f64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        in_use = support::metric(admin, "tern_relay_ports_in_use");
    }
    assert_eq!(in_use, n as f64, "relay ports in use");
}

/// Clients on several workers allocate at once over a narrow port range, some with
/// EVEN-PORT R=1 (an even port and its successor), some without (any port, odd ones
/// included). Every port ends up with one owner, a 508 for a pair means no pair was
/// free, each RESERVATION-TOKEN gets exactly the port after its even one, and once
/// everything is deleted the whole range can be allocated again: no port lost or held
/// twice.
#[test]
fn even_port_reservations_race_across_workers() {
    let (min, max) = support::free_port_range(RACE_PORTS);
    let admin = SocketAddr::from(([127, 0, 0, 1], support::free_udp_port()));
    let admin_arg = admin.to_string();
    let s = server_with_ports(
        &format!("{min}-{max}"),
        &["--workers", "4", "--admin", &admin_arg],
    );
    let pairs: Vec<u16> = (min..max).filter(|p| p % 2 == 0).collect();
    for round in 0..RACE_ROUNDS {
        let start = std::sync::Barrier::new(RACE_RESERVING + RACE_PLAIN);
        let results: Vec<Allocated> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..RACE_RESERVING + RACE_PLAIN)
                .map(|i| {
                    let (s, start) = (&s, &start);
                    scope.spawn(move || {
                        let mut c = client(s);
                        // This only learns the nonce, so the signed Allocates race.
                        c.refresh(None).unwrap();
                        let attrs = if i < RACE_RESERVING {
                            vec![Attr::Raw(ATTR_EVEN_PORT, vec![0x80])]
                        } else {
                            vec![]
                        };
                        start.wait();
                        allocate_from(c, attrs)
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let (reserving, plain) = results.split_at(RACE_RESERVING);
        let mut held = std::collections::HashSet::new();
        for a in plain {
            assert_eq!(a.code, None, "round {round}: a plain Allocate was refused");
            let relay = a.relay.unwrap();
            assert!(held.insert(relay.port()), "round {round}: {relay} twice");
        }
        let mut tokens = Vec::new();
        let mut refused = 0;
        for a in reserving {
            match (a.code, a.relay, &a.token) {
                (None, Some(relay), Some(token)) => {
                    assert_eq!(relay.port() % 2, 0, "round {round}: {relay}");
                    assert!(held.insert(relay.port()), "round {round}: {relay} twice");
                    assert!(
                        held.insert(relay.port() + 1),
                        "round {round}: {relay}'s next port is held by another"
                    );
                    tokens.push((relay, token.clone()));
                }
                (Some(508), None, None) => refused += 1,
                other => panic!("round {round}: EVEN-PORT answered {other:?}"),
            }
        }
        // Nothing was freed during the race, so a pair free now was free then.
        let free_pair = pairs
            .iter()
            .find(|&&p| !held.contains(&p) && !held.contains(&(p + 1)));
        assert!(
            refused == 0 || free_pair.is_none(),
            "round {round}: 508 for EVEN-PORT while {free_pair:?} was free"
        );
        wait_ports_in_use(admin, held.len());

        let mut clients: Vec<TurnClient> = results.into_iter().map(|a| a.client).collect();
        for (relay, token) in tokens {
            let claim = vec![Attr::Raw(ATTR_RESERVATION_TOKEN, token)];
            let a = allocate_from(client(&s), claim);
            assert_eq!(
                a.code, None,
                "round {round}: the token of {relay} was refused"
            );
            let claimed = a.relay.map(|r| r.port());
            assert_eq!(claimed, Some(relay.port() + 1), "round {round}");
            clients.push(a.client);
        }
        wait_ports_in_use(admin, held.len());
        for c in &mut clients {
            // Refused clients have no allocation to delete: 437.
            c.refresh(Some(0)).unwrap();
        }
        wait_ports_in_use(admin, 0);

        // Every port can be allocated again, each once, and then none is left.
        let refill: Vec<Allocated> = (min..=max)
            .map(|_| allocate_from(client(&s), vec![]))
            .collect();
        let mut ports: Vec<u16> = refill
            .iter()
            .filter_map(|a| a.relay)
            .map(|r| r.port())
            .collect();
        ports.sort_unstable();
        assert_eq!(ports, (min..=max).collect::<Vec<_>>(), "round {round}");
        assert_eq!(allocate_from(client(&s), vec![]).code, Some(508));
        for mut a in refill {
            assert!(a.client.refresh(Some(0)).unwrap().is_success());
        }
        wait_ports_in_use(admin, 0);
    }
}

/// Allocations are spread over every relay IP, so one server can go past the ~16k
/// ports one IP offers.
#[test]
fn allocations_spread_over_relay_ips() {
    let ports = relay_ports_arg();
    let s = TernServer::start(&[
        "--user",
        "alice:wonderland",
        "--relay-ip",
        "127.0.0.1",
        "--relay-ip",
        "127.0.0.2",
        "--ports",
        &ports,
    ]);
    let mut ips = std::collections::HashSet::new();
    let mut clients = Vec::new();
    for _ in 0..6 {
        let mut c = client(&s);
        ips.insert(relayed(&mut c).ip());
        clients.push(c);
    }
    let expected: std::collections::HashSet<std::net::IpAddr> =
        ["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()].into();
    assert_eq!(ips, expected);
}
