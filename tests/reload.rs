//! SIGHUP reloads the configuration while calls go on: new users and peer rules apply
//! to new requests, allocations in progress (UDP and TLS) keep relaying through the
//! reload, and a config that does not load is refused with the old one kept.

mod support;

#[path = "support/certs.rs"]
mod certs;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use stun::attributes::ATTR_XOR_RELAYED_ADDRESS;
use support::{TempDir, TernServer, free_udp_port, relay_ports_arg};
use tern::client::TurnClient;

fn config(users: &[(&str, &str)], denied: &str) -> String {
    let mut text = format!("[peers]\nallowed = [\"127.0.0.0/8\"]\ndenied = [{denied}]\n");
    for (name, password) in users {
        text.push_str(&format!(
            "[[auth.users]]\nname = \"{name}\"\npassword = \"{password}\"\n"
        ));
    }
    text
}

/// A client whose allocation relays to a local echo peer over channel 0x4000.
struct Call {
    client: TurnClient,
    peer: UdpSocket,
    relay: SocketAddr,
}

impl Call {
    fn new(mut client: TurnClient) -> Self {
        let r = client.allocate(vec![]).unwrap();
        assert!(r.is_success(), "{:?}", r.code);
        let relay = r.xor_address(ATTR_XOR_RELAYED_ADDRESS).unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let bound = client
            .channel_bind(0x4000, peer.local_addr().unwrap())
            .unwrap();
        assert!(bound.is_success(), "{:?}", bound.code);
        Self {
            client,
            peer,
            relay,
        }
    }

    /// One round trip through the relay; false if anything was lost.
    fn round_trip(&mut self, i: u8) -> bool {
        self.client.send_channel_data(0x4000, &[i; 8]).unwrap();
        let mut buf = [0u8; 64];
        match self.peer.recv_from(&mut buf) {
            Ok((8, from)) if from == self.relay && buf[0] == i => {}
            _ => return false,
        }
        self.peer.send_to(&[i; 5], self.relay).unwrap();
        matches!(
            self.client.recv_data(Duration::from_secs(2)),
            Ok(Some((None, data))) if data == [i; 5]
        )
    }
}

/// Relays continuously on every call for `span`, counting losses.
fn traffic(calls: &mut [Call], span: Duration) -> usize {
    let end = Instant::now() + span;
    let mut lost = 0;
    let mut i = 0u8;
    while Instant::now() < end {
        for call in calls.iter_mut() {
            lost += usize::from(!call.round_trip(i));
        }
        i = i.wrapping_add(1);
    }
    lost
}

#[test]
fn sighup_applies_new_rules_and_keeps_calls_relaying() {
    let dir = TempDir::new("reload");
    let cert = certs::TestCert::new();
    let files = certs::CertFiles::in_dir(dir.path());
    cert.write(&files);
    let tls_port = free_udp_port();
    let path = dir.join("tern.toml");
    std::fs::write(&path, config(&[("alice", "pw")], "")).unwrap();
    let ports = relay_ports_arg();
    let tls_listen = format!("127.0.0.1:{tls_port}");
    let mut args = vec![
        "--config".to_string(),
        path.display().to_string(),
        "--ports".to_string(),
        ports,
        "--tls-listen".to_string(),
        tls_listen,
    ];
    args.extend(files.args());
    let s = TernServer::builder().args(&args).start();
    let tls_addr = SocketAddr::from(([127, 0, 0, 1], tls_port));
    let mut calls = vec![
        Call::new(TurnClient::new(s.addr, "alice", "pw").unwrap()),
        Call::new(
            TurnClient::connect_tls(tls_addr, "localhost", cert.roots(), "alice", "pw").unwrap(),
        ),
    ];
    assert_eq!(traffic(&mut calls, Duration::from_millis(300)), 0);
    let mut bob = TurnClient::new(s.addr, "bob", "builder").unwrap();
    assert_eq!(
        bob.allocate(vec![]).unwrap().code,
        Some(401),
        "bob unknown before"
    );

    // Add bob and deny 127.0.0.2; reload while the calls keep relaying.
    std::fs::write(
        &path,
        config(&[("alice", "pw"), ("bob", "builder")], "\"127.0.0.2/32\""),
    )
    .unwrap();
    s.hangup();
    assert_eq!(
        traffic(&mut calls, Duration::from_millis(700)),
        0,
        "lost packets across the reload"
    );

    let mut bob = TurnClient::new(s.addr, "bob", "builder").unwrap();
    assert!(
        bob.allocate(vec![]).unwrap().is_success(),
        "bob known after the reload"
    );
    let denied: SocketAddr = "127.0.0.2:5000".parse().unwrap();
    assert_eq!(bob.create_permission(&[denied]).unwrap().code, Some(403));

    // A broken config is refused: the running rules (bob included) stay.
    std::fs::write(&path, "[peers]\nallowed = [\"not a network\"]\n").unwrap();
    s.hangup();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(traffic(&mut calls, Duration::from_millis(300)), 0);
    let mut bob2 = TurnClient::new(s.addr, "bob", "builder").unwrap();
    assert!(
        bob2.allocate(vec![]).unwrap().is_success(),
        "old rules dropped"
    );
    let logs = s.logs();
    assert!(logs.contains("configuration reloaded"), "{logs}");
    assert!(logs.contains("configuration not reloaded"), "{logs}");
}

#[test]
fn sighup_applies_a_new_log_level() {
    let dir = TempDir::new("reload-log");
    let path = dir.join("tern.toml");
    let quiet = format!(
        "{}[log]\nlevel = \"warn\"\n",
        config(&[("alice", "pw")], "")
    );
    std::fs::write(&path, &quiet).unwrap();
    let ports = relay_ports_arg();
    let s = TernServer::start(&["--config", path.to_str().unwrap(), "--ports", &ports]);
    let mut first = TurnClient::new(s.addr, "alice", "pw").unwrap();
    assert!(first.allocate(vec![]).unwrap().is_success());
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !s.logs().contains("allocation created"),
        "info logged at warn level"
    );

    let chatty = quiet.replace("\"warn\"", "\"info\"");
    std::fs::write(&path, chatty).unwrap();
    s.hangup();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.logs().contains("configuration reloaded") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut second = TurnClient::new(s.addr, "alice", "pw").unwrap();
    assert!(second.allocate(vec![]).unwrap().is_success());
    std::thread::sleep(Duration::from_millis(200));
    assert!(s.logs().contains("allocation created"), "{}", s.logs());
}
