//! The admin JSON API through `tern sessions`, `tern kill` and `tern drain`: token
//! required, sessions listed across workers, killed one by one or per user, users
//! revoked, draining switched on and off.

mod support;

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::Duration;
use support::{TernServer, free_udp_port, relay_ports_arg};
use tern::client::TurnClient;

const TOKEN: &str = "admin-token-for-tests-0123456789";

fn start(token: Option<&str>) -> (TernServer, SocketAddr) {
    start_with(token, &[])
}

fn start_with(token: Option<&str>, extra: &[&str]) -> (TernServer, SocketAddr) {
    let admin = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let ports = relay_ports_arg();
    let admin_arg = admin.to_string();
    let mut args = vec![
        "--user",
        "alice:pw",
        "--user",
        "bob:pw",
        "--ports",
        &ports,
        "--admin",
        &admin_arg,
        "--workers",
        "2",
    ];
    if let Some(token) = token {
        args.extend(["--admin-token", token]);
    }
    args.extend_from_slice(extra);
    (TernServer::start(&args), admin)
}

fn tern(admin: SocketAddr, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(args)
        .args(["--admin", &admin.to_string()])
        .env("TERN_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("running tern")
}

fn sessions(admin: SocketAddr) -> Vec<serde_json::Value> {
    let out = tern(admin, &["sessions", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("sessions JSON")
}

/// A raw request with an optional bearer token: the status code.
fn status(admin: SocketAddr, method: &str, path: &str, token: Option<&str>) -> u16 {
    support::http_request(admin, method, path, token, "").0
}

fn allocated(server: &TernServer, user: &str) -> (TurnClient, String) {
    let mut c = TurnClient::new(server.addr, user, "pw").unwrap();
    let r = c.allocate(vec![]).unwrap();
    assert!(r.is_success(), "{:?}", r.code);
    let relay = r
        .xor_address(stun::attributes::ATTR_XOR_RELAYED_ADDRESS)
        .unwrap();
    (c, relay.to_string())
}

#[test]
fn the_api_needs_the_token_and_is_off_without_one() {
    let (_s, admin) = start(Some(TOKEN));
    assert_eq!(status(admin, "GET", "/api/sessions", None), 401);
    assert_eq!(status(admin, "GET", "/api/sessions", Some("wrong")), 401);
    assert_eq!(status(admin, "GET", "/api/sessions", Some(TOKEN)), 200);
    assert_eq!(
        status(admin, "GET", "/metrics", None),
        200,
        "metrics need no token"
    );
    let (_s, admin) = start(None);
    assert_eq!(status(admin, "GET", "/api/sessions", Some(TOKEN)), 404);
}

#[test]
fn sessions_are_listed_and_killed() {
    let (s, admin) = start(Some(TOKEN));
    let (mut a1, relay_a1) = allocated(&s, "alice");
    let (mut a2, _) = allocated(&s, "alice");
    let (mut b, _) = allocated(&s, "bob");
    let listed = sessions(admin);
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(
        listed
            .iter()
            .any(|x| x["relay"] == relay_a1.as_str() && x["user"] == "alice")
    );

    let out = tern(admin, &["kill", "--session", &relay_a1]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        a1.refresh(None).unwrap().code,
        Some(437),
        "killed session still there"
    );
    assert!(a2.refresh(None).unwrap().is_success());

    let out = tern(admin, &["kill", "--user", "bob"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"killed\":1"));
    assert_eq!(b.refresh(None).unwrap().code, Some(437));
    assert_eq!(sessions(admin).len(), 1);
}

#[test]
fn revoked_users_are_refused_and_cut_off() {
    let (s, admin) = start(Some(TOKEN));
    let (mut a, _) = allocated(&s, "alice");
    let out = tern(admin, &["kill", "--revoke", "alice"]);
    assert!(out.status.success());
    assert_eq!(
        a.refresh(None).unwrap().code,
        Some(401),
        "revoked user still served"
    );
    let mut again = TurnClient::new(s.addr, "alice", "pw").unwrap();
    assert_eq!(again.allocate(vec![]).unwrap().code, Some(401));
    allocated(&s, "bob");
}

#[test]
fn drain_switches_on_and_off() {
    let (s, admin) = start(Some(TOKEN));
    let (mut a, _) = allocated(&s, "alice");
    assert!(tern(admin, &["drain", "on"]).status.success());
    assert_eq!(status(admin, "GET", "/readyz", None), 503);
    let mut late = TurnClient::new(s.addr, "bob", "pw").unwrap();
    assert_eq!(late.allocate(vec![]).unwrap().code, Some(508));
    assert!(
        a.refresh(None).unwrap().is_success(),
        "existing allocation goes on"
    );
    assert!(tern(admin, &["drain", "off"]).status.success());
    assert_eq!(status(admin, "GET", "/readyz", None), 200);
    allocated(&s, "bob");
}

#[test]
fn sessions_count_bytes_both_ways() {
    let (s, admin) = start_with(Some(TOKEN), &["--allow-peer", "127.0.0.0/8"]);
    let (mut c, relay) = allocated(&s, "alice");
    let relay: SocketAddr = relay.parse().unwrap();
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert!(
        c.channel_bind(0x4000, peer.local_addr().unwrap())
            .unwrap()
            .is_success()
    );
    let mut buf = [0u8; 64];
    for _ in 0..3 {
        c.send_channel_data(0x4000, &[1; 10]).unwrap();
        peer.recv_from(&mut buf).unwrap();
        peer.send_to(&[2; 7], relay).unwrap();
        assert!(c.recv_data(Duration::from_secs(2)).unwrap().is_some());
    }
    let listed = sessions(admin);
    assert_eq!(listed[0]["bytes_to_peer"], 30, "{listed:?}");
    assert_eq!(listed[0]["bytes_to_client"], 21, "{listed:?}");
}
