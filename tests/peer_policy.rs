//! The peer policy through a running server, as a deployment uses it: the server's own
//! relay endpoints stay reachable so two clients can talk, and the operator's lists
//! re-open and close ranges. Attacks on it (every denied range and spelling, port 0,
//! the server's own ports, over UDP, TCP and TLS) are in tests/attacks_peer_policy.rs.

mod support;

use std::net::SocketAddr;
use std::time::Duration;
use stun::attributes::ATTR_XOR_RELAYED_ADDRESS;
use support::{TernServer, relay_ports_arg};
use tern::client::TurnClient;

fn allocated(server: &TernServer) -> (TurnClient, SocketAddr) {
    let mut c = TurnClient::new(server.addr, "alice", "pw").unwrap();
    let r = c.allocate(vec![]).unwrap();
    assert!(r.is_success(), "allocate: {:?}\n{}", r.code, server.logs());
    let relay = r.xor_address(ATTR_XOR_RELAYED_ADDRESS).unwrap();
    (c, relay)
}

#[test]
fn clients_of_the_same_server_reach_each_other_through_their_relays() {
    let ports = relay_ports_arg();
    let s = TernServer::start(&["--user", "alice:pw", "--ports", &ports]);
    let (mut a, relay_a) = allocated(&s);
    let (mut b, relay_b) = allocated(&s);
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
    let (mut c, _) = allocated(&s);
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
