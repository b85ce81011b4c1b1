//! The admin listener: metric values move exactly with what the relay does, and
//! health/readiness follow the server's state.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;
use stun::attributes::ATTR_XOR_RELAYED_ADDRESS;
use support::{TernServer, admin_get, free_udp_port, metric, relay_ports_arg};
use tern::client::TurnClient;

fn start(extra: &[&str]) -> (TernServer, SocketAddr) {
    let admin = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let ports = relay_ports_arg();
    let admin_arg = admin.to_string();
    let mut args = vec![
        "--user", "alice:pw", "--ports", &ports, "--admin", &admin_arg,
    ];
    args.extend_from_slice(extra);
    (TernServer::start(&args), admin)
}

#[test]
fn relay_counters_move_by_exactly_what_was_relayed() {
    let (s, admin) = start(&["--allow-peer", "127.0.0.0/8"]);
    let before_peer = metric(admin, "tern_relayed_to_peer_packets_total");
    let before_client = metric(admin, "tern_relayed_to_client_packets_total");
    let mut c = TurnClient::new(s.addr, "alice", "pw").unwrap();
    let relay = c
        .allocate(vec![])
        .unwrap()
        .xor_address(ATTR_XOR_RELAYED_ADDRESS)
        .unwrap();
    assert_eq!(
        metric(admin, "tern_allocations{transport=\"udp\",family=\"ipv4\"}"),
        1.0
    );
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert!(
        c.channel_bind(0x4000, peer.local_addr().unwrap())
            .unwrap()
            .is_success()
    );
    const N: usize = 25;
    let mut buf = [0u8; 64];
    for i in 0..N {
        c.send_channel_data(0x4000, &[i as u8; 10]).unwrap();
        peer.recv_from(&mut buf).unwrap();
        peer.send_to(&[i as u8; 7], relay).unwrap();
        assert!(c.recv_data(Duration::from_secs(2)).unwrap().is_some());
    }
    assert_eq!(
        metric(admin, "tern_relayed_to_peer_packets_total") - before_peer,
        N as f64
    );
    assert_eq!(
        metric(admin, "tern_relayed_to_client_packets_total") - before_client,
        N as f64
    );
    assert_eq!(
        metric(admin, "tern_relayed_to_peer_bytes_total"),
        (N * 10) as f64
    );
    assert_eq!(
        metric(admin, "tern_relayed_to_client_bytes_total"),
        (N * 7) as f64
    );
    assert_eq!(metric(admin, "tern_relay_ports_in_use"), 1.0);
    // relay_ports_arg() gives 200 ports on one relay IP.
    assert_eq!(metric(admin, "tern_relay_ports_free"), 199.0);
    assert_eq!(metric(admin, "tern_permissions"), 1.0);
    assert_eq!(metric(admin, "tern_channels"), 1.0);

    // The allocation is deleted right after its Refresh is answered.
    assert!(c.refresh(Some(0)).unwrap().is_success());
    let gauge = "tern_allocations{transport=\"udp\",family=\"ipv4\"}";
    let mut left = metric(admin, gauge);
    for _ in 0..50 {
        if left == 0.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        left = metric(admin, gauge);
    }
    assert_eq!(left, 0.0);
}

#[test]
fn refusals_are_counted_by_code_and_reason() {
    let (s, admin) = start(&[]);
    let mut wrong = TurnClient::new(s.addr, "alice", "nope").unwrap();
    assert_eq!(wrong.allocate(vec![]).unwrap().code, Some(401));
    // The unsigned first try and the signed retry were both challenged.
    assert_eq!(
        metric(admin, "tern_auth_failures_total{reason=\"unauthorized\"}"),
        2.0
    );
    assert_eq!(metric(admin, "tern_responses_total{code=\"401\"}"), 2.0);

    let mut c = TurnClient::new(s.addr, "alice", "pw").unwrap();
    assert!(c.allocate(vec![]).unwrap().is_success());
    // Loopback is denied by default.
    let denied: SocketAddr = "127.0.0.1:9".parse().unwrap();
    assert_eq!(c.create_permission(&[denied]).unwrap().code, Some(403));
    assert_eq!(metric(admin, "tern_peer_denied_total"), 1.0);
    assert_eq!(metric(admin, "tern_responses_total{code=\"403\"}"), 1.0);
}

#[test]
fn health_and_readiness_follow_draining() {
    let (s, admin) = start(&["--allow-peer", "127.0.0.0/8"]);
    assert_eq!(admin_get(admin, "/healthz").0, 200);
    assert_eq!(admin_get(admin, "/readyz").0, 200);
    assert_eq!(metric(admin, "tern_draining"), 0.0);
    // An allocation keeps the server draining after SIGTERM.
    let mut c = TurnClient::new(s.addr, "alice", "pw").unwrap();
    assert!(c.allocate(vec![]).unwrap().is_success());
    let status = std::process::Command::new("kill")
        .args(["-TERM", &s.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(admin_get(admin, "/readyz").0, 503);
    assert_eq!(admin_get(admin, "/healthz").0, 200);
    assert_eq!(metric(admin, "tern_draining"), 1.0);
}
