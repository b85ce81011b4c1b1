//! `tern stun`, `tern probe`, `tern peer` and `tern creds` as real processes on
//! 127.0.0.1, against `tern serve` and coturn's `turnserver`.

mod support;

#[path = "support/coturn.rs"]
mod coturn;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{
    BackgroundProcess, LOCALHOST_V4, RunOutput, TempDir, TernServer, free_udp_port,
    relay_ports_arg, run_tern,
};

const SECRET: &str = "probe-secret";
/// Long enough for the slowest failing probe (an echo wait of 3 s after setup).
const RUN: Duration = Duration::from_secs(30);

fn tern(args: &[&str]) -> RunOutput {
    run_tern(args, RUN)
}

fn server(allow_loopback_peers: bool) -> TernServer {
    let ports = relay_ports_arg();
    let mut args = vec!["--secret", SECRET, "--ports", &ports];
    if allow_loopback_peers {
        args.extend(["--allow-peer", "127.0.0.0/8"]);
    }
    TernServer::start(&args)
}

fn exit_code(out: &RunOutput) -> Option<i32> {
    out.status.and_then(|s| s.code())
}

#[test]
fn stun_reports_the_mapped_address_over_udp_and_tcp() {
    let server = server(false);
    let addr = server.addr.to_string();
    for transport in ["udp", "tcp"] {
        let out = tern(&["stun", &addr, "--transport", transport]);
        assert!(out.success(), "{transport}: {}", out.describe());
        assert!(
            out.stdout.starts_with("mapped 127.0.0.1:") && out.stdout.contains(" rtt "),
            "{transport}: {}",
            out.describe()
        );
        let out = tern(&["stun", &addr, "--transport", transport, "--json"]);
        let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
        let mapped: SocketAddr = json["mapped"]
            .as_str()
            .expect("mapped")
            .parse()
            .expect("addr");
        assert_eq!(mapped.ip(), LOCALHOST_V4, "{}", out.describe());
    }
}

#[test]
fn probe_succeeds_with_a_rest_secret() {
    let server = server(true);
    let url = format!("turn:{}", server.addr);
    let out = tern(&["probe", &url, "--secret", SECRET]);
    assert!(out.success(), "{}\n{}", out.describe(), server.logs());
    for step in [
        "connect",
        "allocate",
        "create permission",
        "channel bind",
        "echo",
    ] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with('✓') && l.contains(step)),
            "step {step}: {}",
            out.describe()
        );
    }
    assert!(!out.stdout.contains('✗'), "{}", out.describe());

    let url = format!("turn:{}?transport=tcp", server.addr);
    let out = tern(&["probe", &url, "--secret", SECRET, "--json"]);
    assert!(out.success(), "{}", out.describe());
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(json["ok"], true);
    assert_eq!(json["transport"], "tcp");
    let steps = json["steps"].as_array().expect("steps");
    assert!(steps.iter().all(|s| s["ok"] == true), "{}", out.stdout);
    assert!(steps.iter().any(|s| s["name"] == "echo"), "{}", out.stdout);
}

#[test]
fn probe_with_a_wrong_secret_blames_the_credentials() {
    let server = server(true);
    let url = format!("turn:{}", server.addr);
    let out = tern(&["probe", &url, "--secret", "not-the-secret"]);
    assert_eq!(exit_code(&out), Some(1), "{}", out.describe());
    assert!(
        out.stdout.contains("credentials refused (realm "),
        "{}",
        out.describe()
    );
}

#[test]
fn probe_to_a_denied_peer_blames_the_peer_policy() {
    // Loopback peers are denied by default: CreatePermission gets 403.
    let server = server(false);
    let url = format!("turn:{}", server.addr);
    let out = tern(&["probe", &url, "--secret", SECRET]);
    assert_eq!(exit_code(&out), Some(1), "{}", out.describe());
    assert!(
        out.stdout.contains("✗ create permission"),
        "{}",
        out.describe()
    );
    assert!(
        out.stdout.contains("peer address denied"),
        "{}",
        out.describe()
    );
}

#[test]
fn probe_whose_echo_never_returns_blames_a_firewall() {
    // A closed port stands in for a relay range a firewall drops.
    let server = server(true);
    let url = format!("turn:{}", server.addr);
    let peer = format!("127.0.0.1:{}", free_udp_port());
    let out = tern(&["probe", &url, "--secret", SECRET, "--peer", &peer]);
    assert_eq!(exit_code(&out), Some(1), "{}", out.describe());
    assert!(out.stdout.contains("✗ echo"), "{}", out.describe());
    assert!(
        out.stdout.contains("echo never came back") && out.stdout.contains("firewall"),
        "{}",
        out.describe()
    );
}

#[test]
fn probe_of_a_closed_port_says_unreachable() {
    let url = format!("turn:127.0.0.1:{}", free_udp_port());
    let out = tern(&["probe", &url, "--secret", SECRET]);
    assert_eq!(exit_code(&out), Some(1), "{}", out.describe());
    assert!(out.stdout.contains("unreachable"), "{}", out.describe());
}

#[test]
fn probe_rejects_a_bad_url_as_usage() {
    let out = tern(&["probe", "http://example.com", "--secret", SECRET]);
    assert_eq!(exit_code(&out), Some(2), "{}", out.describe());
}

#[test]
fn probe_works_against_coturn() {
    let dir = TempDir::new("tools-coturn");
    let user = coturn::User {
        name: "alice",
        password: "wonderland",
        realm: "coturn.test",
    };
    let listeners = coturn::Listeners {
        tcp: true,
        tls: None,
        tcp_relay: false,
    };
    let (coturn, addr) = coturn::start(&dir, &user, &listeners);
    for url in [format!("turn:{addr}"), format!("turn:{addr}?transport=tcp")] {
        let out = tern(&["probe", &url, "--user", "alice", "--pass", "wonderland"]);
        assert!(
            out.success(),
            "{url}: {}\n{}",
            out.describe(),
            coturn.logs()
        );
        assert!(out.stdout.contains("✓ echo"), "{}", out.describe());
    }
    let out = tern(&[
        "probe",
        &format!("turn:{addr}"),
        "--user",
        "alice",
        "--pass",
        "x",
    ]);
    assert_eq!(exit_code(&out), Some(1), "{}", out.describe());
    assert!(
        out.stdout.contains("realm coturn.test"),
        "{}",
        out.describe()
    );
}

#[test]
fn creds_prints_a_rest_credential_and_an_ice_servers_entry() {
    let out = tern(&[
        "creds",
        "--secret",
        SECRET,
        "--user",
        "alice",
        "--ttl",
        "1h",
        "--url",
        "turn:a:3478",
    ]);
    assert!(out.success(), "{}", out.describe());
    let field = |name: &str| {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {}", out.describe()))
            .trim()
            .to_string()
    };
    let username = field("username:");
    let password = field("password:");
    assert!(username.ends_with(":alice"), "{username}");
    let expiry: u64 = username
        .split(':')
        .next()
        .and_then(|e| e.parse().ok())
        .expect("expiry");
    let now = tern::clock::unix_now();
    assert!(expiry.abs_diff(now + 3600) < 60, "{expiry} vs {now}");
    assert_eq!(
        password,
        tern::auth::RestSecret::new(SECRET).password_for(&username)
    );
    let start = out.stdout.find('{').expect("JSON entry");
    let entry: serde_json::Value = serde_json::from_str(&out.stdout[start..]).expect("JSON");
    assert_eq!(entry["username"], username.as_str());
    assert_eq!(entry["credential"], password.as_str());
    assert_eq!(entry["urls"][0], "turn:a:3478");

    let out = tern(&["creds", "--secret", SECRET, "--ttl", "soon"]);
    assert_eq!(exit_code(&out), Some(2), "{}", out.describe());
}

#[test]
fn peer_echoes_and_exits_after_count() {
    let dir = TempDir::new("tools-peer");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tern"));
    cmd.args(["peer", "--listen", "127.0.0.1:0", "--count", "2"]);
    let mut peer = BackgroundProcess::spawn("peer", &mut cmd, dir.path());
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr: SocketAddr = loop {
        let out = peer.stdout();
        if let Some(addr) = out.lines().find_map(|l| l.strip_prefix("listening on ")) {
            break addr.trim().parse().expect("peer address");
        }
        assert!(Instant::now() < deadline, "no address\n{}", peer.logs());
        std::thread::sleep(Duration::from_millis(20));
    };
    let client = UdpSocket::bind("127.0.0.1:0").expect("client");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    for payload in [&b"one"[..], b"two"] {
        client.send_to(payload, addr).expect("send");
        let mut buf = [0u8; 16];
        let (len, from) = client.recv_from(&mut buf).expect("echo");
        assert_eq!((&buf[..len], from), (payload, addr));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = peer.try_exit_status() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "peer did not exit\n{}",
            peer.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{}", peer.logs());
}
