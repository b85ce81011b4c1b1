//! The peer policy through a running server: every default-denied range and every
//! IPv4-in-IPv6 encoding of one is refused with 403 by CreatePermission and
//! ChannelBind, nothing is installed, Send to a denied peer is dropped, and the
//! server's own relay endpoints stay reachable so two clients can talk.
//!
//! No datagram is ever sent to a denied address: only requests naming them are.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;
use stun::attributes::ATTR_XOR_RELAYED_ADDRESS;
use support::{LOCALHOST_V6, TernServer, free_udp_port_on, relay_ports_arg};
use tern::client::{Attr, TurnClient};

/// One sample address inside each range denied by default.
const DENIED_V4: &[&str] = &[
    "0.0.0.0:5000",
    "0.1.2.3:5000",
    "10.1.2.3:5000",
    "100.64.0.1:5000",
    "127.0.0.1:5000",
    "127.255.255.254:5000",
    "169.254.169.254:80",
    "172.16.0.1:5000",
    "172.31.255.255:5000",
    "192.0.0.8:5000",
    "192.0.2.1:5000",
    "192.88.99.1:5000",
    "192.168.1.1:5000",
    "198.18.0.1:5000",
    "198.51.100.1:5000",
    "203.0.113.1:5000",
    "224.0.0.1:5000",
    "239.255.255.250:1900",
    "240.0.0.1:5000",
    "255.255.255.255:5000",
];

const DENIED_V6: &[&str] = &[
    "[::]:5000",
    "[::1]:5000",
    "[::ffff:127.0.0.1]:5000",
    "[::ffff:10.0.0.1]:5000",
    "[::ffff:169.254.169.254]:80",
    "[::127.0.0.1]:5000",
    "[64:ff9b::7f00:1]:5000",
    "[64:ff9b::a9fe:a9fe]:80",
    "[2002:7f00:1::]:5000",
    "[2002:a00:1::1]:5000",
    "[2001::1]:5000",
    "[2001:db8::1]:5000",
    "[fc00::1]:5000",
    "[fd12:3456::1]:5000",
    "[fe80::1]:5000",
    "[fec0::1]:5000",
    "[ff02::1]:5000",
    "[ff05::1:3]:547",
];

fn start(listen: SocketAddr) -> TernServer {
    let ports = relay_ports_arg();
    TernServer::builder()
        .listen(listen)
        .args(&["--user", "alice:pw", "--ports", &ports])
        .start()
}

fn allocated(server: &TernServer, family: Option<u8>) -> (TurnClient, SocketAddr) {
    let mut c = TurnClient::new(server.addr, "alice", "pw").unwrap();
    let r = c
        .allocate(family.map(Attr::family).into_iter().collect())
        .unwrap();
    assert!(r.is_success(), "allocate: {:?}\n{}", r.code, server.logs());
    let relay = r.xor_address(ATTR_XOR_RELAYED_ADDRESS).unwrap();
    (c, relay)
}

fn assert_all_forbidden(c: &mut TurnClient, peers: &[&str]) {
    for (i, peer) in peers.iter().enumerate() {
        let peer: SocketAddr = peer.parse().unwrap();
        let r = c.create_permission(&[peer]).unwrap();
        assert_eq!(r.code, Some(403), "CreatePermission to {peer}");
        let r = c.channel_bind(0x4000 + i as u16, peer).unwrap();
        assert_eq!(r.code, Some(403), "ChannelBind to {peer}");
    }
}

#[test]
fn every_default_denied_ipv4_range_is_403() {
    let s = start(SocketAddr::from(([127, 0, 0, 1], support::free_udp_port())));
    let (mut c, _) = allocated(&s, None);
    assert_all_forbidden(&mut c, DENIED_V4);
}

#[test]
fn every_default_denied_ipv6_range_and_embedded_ipv4_form_is_403() {
    if let Err(why) = support::ipv6_loopback_available() {
        panic!("IPv6 loopback is needed for this test: {why}");
    }
    let s = start(SocketAddr::new(
        LOCALHOST_V6,
        free_udp_port_on(LOCALHOST_V6),
    ));
    let (mut c, _) = allocated(&s, Some(2));
    assert_all_forbidden(&mut c, DENIED_V6);
}

#[test]
fn port_zero_and_the_servers_own_other_ports_are_403() {
    let s = start(SocketAddr::from(([127, 0, 0, 1], support::free_udp_port())));
    let (mut c, _) = allocated(&s, None);
    // The listening port is on the relay IP but outside the relay range.
    assert_eq!(c.create_permission(&[s.addr]).unwrap().code, Some(403));
    let zero: SocketAddr = "127.0.0.1:0".parse().unwrap();
    assert_eq!(c.create_permission(&[zero]).unwrap().code, Some(403));
}

#[test]
fn send_to_a_denied_peer_is_dropped() {
    let s = start(SocketAddr::from(([127, 0, 0, 1], support::free_udp_port())));
    let (mut c, _) = allocated(&s, None);
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    c.send_indication(peer.local_addr().unwrap(), b"to loopback")
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        peer.recv_from(&mut buf).is_err(),
        "relayed to a denied peer"
    );
}

#[test]
fn clients_of_the_same_server_reach_each_other_through_their_relays() {
    let s = start(SocketAddr::from(([127, 0, 0, 1], support::free_udp_port())));
    let (mut a, relay_a) = allocated(&s, None);
    let (mut b, relay_b) = allocated(&s, None);
    // Loopback is denied, but these are the server's own relay endpoints.
    assert!(a.create_permission(&[relay_b]).unwrap().is_success());
    assert!(b.channel_bind(0x4001, relay_a).unwrap().is_success());
    a.send_indication(relay_b, b"hello b").unwrap();
    // b bound a channel to a's relay, so it arrives as ChannelData.
    let (from, data) = b
        .recv_data(Duration::from_secs(2))
        .unwrap()
        .expect("b got it");
    assert_eq!((from, data.as_slice()), (None, &b"hello b"[..]));
    b.send_channel_data(0x4001, b"hello a").unwrap();
    let (from, data) = a
        .recv_data(Duration::from_secs(2))
        .unwrap()
        .expect("a got it");
    assert_eq!((from, data.as_slice()), (Some(relay_b), &b"hello a"[..]));
}

#[test]
fn allowed_peers_reopen_and_denied_peers_close_ranges() {
    let ports = relay_ports_arg();
    let config = "[peers]\nallowed = [\"127.0.0.0/8\"]\ndenied = [\"127.0.0.2/32\"]\n";
    let s = TernServer::start_with_config(config, &["--user", "alice:pw", "--ports", &ports]);
    let (mut c, _) = allocated(&s, None);
    let allowed: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    let denied: SocketAddr = "127.0.0.2:5000".parse().unwrap();
    let still_denied: SocketAddr = "10.0.0.1:5000".parse().unwrap();
    assert!(c.create_permission(&[allowed]).unwrap().is_success());
    assert_eq!(c.create_permission(&[denied]).unwrap().code, Some(403));
    assert_eq!(
        c.create_permission(&[still_denied]).unwrap().code,
        Some(403)
    );
}
