//! A UDP listener on the wildcard address serves each client on the local address it
//! sent to: answers and relayed data come from that address (a NAT or a client
//! checking the source would drop them otherwise), the allocation belongs to that
//! 5-tuple. With relay IPs taken from the listen addresses (no `relay.ips`), a client
//! is relayed on the address it reached.
//!
//! Loopback has every 127.0.0.0/8 address, and the kernel's own choice of source for
//! any of them is 127.0.0.1, so 127.0.0.2 and 127.0.0.3 stand in for a multi-homed
//! host's addresses. tern's client only accepts datagrams from the server address it
//! sends to. (tests/nat_topology.rs and tests/selftest_browser.rs do the same through
//! real NATs in network namespaces.)

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;
use stun::attributes::ATTR_XOR_RELAYED_ADDRESS;
use support::{TernServer, relay_ports_arg, with_realm_and_nonce};
use tern::client::TurnClient;

const WAIT: Duration = Duration::from_secs(2);
const SIDES: [Ipv4Addr; 2] = [Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)];

/// tern with its usual 127.0.0.1 listener (for readiness) and a wildcard one on
/// another port; relay IPs 127.0.0.2 and 127.0.0.3. Returns the wildcard port.
fn server() -> (TernServer, u16) {
    let port = support::free_udp_port();
    let wildcard = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).to_string();
    let s = TernServer::start(&[
        "--listen",
        &wildcard,
        "--user",
        "alice:wonderland",
        "--allow-peer",
        "127.0.0.0/8",
        "--relay-ip",
        &SIDES[0].to_string(),
        "--relay-ip",
        &SIDES[1].to_string(),
        "--ports",
        &relay_ports_arg(),
    ]);
    (s, port)
}

/// A client on 127.0.0.1 talking to `server`.
fn client(server: SocketAddr) -> TurnClient {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind client");
    TurnClient::with_socket(socket, server, "alice", "wonderland").expect("client")
}

#[test]
fn each_client_is_answered_and_relayed_from_the_address_it_used() {
    let (mut s, port) = server();
    for (round, side) in [SIDES[0], SIDES[1], SIDES[0], SIDES[1]]
        .into_iter()
        .enumerate()
    {
        let server = SocketAddr::from((side, port));
        let mut c = client(server);
        // Answered at all: the client takes only datagrams from `server`.
        let r = c.allocate(vec![]).expect("allocate io");
        assert!(r.is_success(), "round {round} via {server}: {:?}", r.code);
        // Configured relay IPs take turns.
        let relay = r.xor_address(ATTR_XOR_RELAYED_ADDRESS).expect("relayed");
        assert!(SIDES.map(IpAddr::V4).contains(&relay.ip()), "round {round}");

        // Peer data comes back through the listener from the same address, both as a
        // Data indication and as ChannelData.
        let peer = UdpSocket::bind("127.0.0.1:0").expect("bind peer");
        let peer_addr = peer.local_addr().expect("peer address");
        assert!(c.create_permission(&[peer_addr]).unwrap().is_success());
        peer.send_to(b"as data", relay).unwrap();
        let got = c.recv_data(WAIT).unwrap();
        assert_eq!(
            got,
            Some((Some(peer_addr), b"as data".to_vec())),
            "round {round}"
        );
        assert!(c.channel_bind(0x4000, peer_addr).unwrap().is_success());
        peer.send_to(b"as channel data", relay).unwrap();
        let got = c.recv_data(WAIT).unwrap();
        assert_eq!(
            got,
            Some((None, b"as channel data".to_vec())),
            "round {round}"
        );
    }
    s.assert_running();
}

#[test]
fn the_allocation_belongs_to_the_address_the_client_used() {
    let (mut s, port) = server();
    let [near, other] = SIDES.map(|ip| SocketAddr::from((ip, port)));
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind client");
    let same_socket = socket.try_clone().expect("clone the client socket");
    let mut c = TurnClient::with_socket(socket, near, "alice", "wonderland").expect("client");
    assert!(c.allocate(vec![]).unwrap().is_success());
    // The same client socket through the other address is another 5-tuple: no
    // allocation there (437, answered from that address), and a new one may be made.
    let mut through_other = with_realm_and_nonce(
        TurnClient::with_socket(same_socket, other, "alice", "wonderland").expect("client"),
    );
    let r = through_other.allocate(vec![]).unwrap();
    assert!(r.is_success(), "{:?}", r.code);
    // The first allocation is untouched.
    assert!(c.refresh(Some(600)).unwrap().is_success());
    s.assert_running();
}

/// Relay IPs not configured: they are the listen addresses, and each client gets the
/// one it reached (an address another network reaches may be out of its reach).
#[test]
fn without_relay_ips_a_client_is_relayed_on_the_address_it_reached() {
    let port = support::free_udp_port();
    let listen = SIDES.map(|ip| SocketAddr::from((ip, port)).to_string());
    let mut s = TernServer::start(&[
        "--listen",
        &listen[0],
        "--listen",
        &listen[1],
        "--user",
        "alice:wonderland",
        "--ports",
        &relay_ports_arg(),
    ]);
    let mut clients = Vec::new();
    for side in [SIDES[0], SIDES[1], SIDES[1], SIDES[0], SIDES[0], SIDES[1]] {
        let mut c = client(SocketAddr::from((side, port)));
        let r = c.allocate(vec![]).expect("allocate io");
        assert!(r.is_success(), "{side}: {:?}", r.code);
        let relay = r.xor_address(ATTR_XOR_RELAYED_ADDRESS).expect("relayed");
        assert_eq!(relay.ip(), IpAddr::V4(side));
        clients.push(c);
    }
    s.assert_running();
}
