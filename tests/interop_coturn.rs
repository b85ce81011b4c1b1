//! Interop with coturn's own client tools (Debian package `coturn`):
//! `turnutils_uclient` relaying through tern to `turnutils_peer` (ChannelData, Send
//! indications, client-to-client, long-term users, TURN REST credentials, IPv6),
//! `turnutils_stunclient` against tern, and the same uclient run against coturn's
//! `turnserver` and against tern side by side.
//!
//! Needs the coturn tools on PATH: run `scripts/install-test-deps.sh` (as root) first.
//! Only 127.0.0.1 / ::1 are used, on random high ports; every process is time-bounded.

mod support;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use support::{
    BackgroundProcess, LOCALHOST_V4, LOCALHOST_V6, RunOutput, TempDir, TernServer, UclientSummary,
    ensure_tool, free_port_range, free_port_range_on, free_udp_port_on, free_udp_tcp_port,
    ipv6_loopback_available, run_with_timeout, wait_for_stun,
};

const REALM: &str = "tern.test";
const USER: &str = "alice";
const PASSWORD: &str = "wonderland";
/// Messages per client, clients, payload bytes: a paced run (20 ms between packets).
const MESSAGES: u64 = 50;
const CLIENTS: u64 = 5;
const LENGTH: &str = "120";
/// Upper bound for one uclient run (they take ~6-8 s: uclient waits a few seconds
/// before sending and after the last packet).
const UCLIENT_TIMEOUT: Duration = Duration::from_secs(40);

/// `tern serve` relaying on loopback with a static user and loopback peers allowed.
fn tern_args(relay_ports: &str) -> Vec<String> {
    [
        "--relay-ip",
        "127.0.0.1",
        "--ports",
        relay_ports,
        "--realm",
        REALM,
        "--user",
        &format!("{USER}:{PASSWORD}"),
        "--allow-peer",
        "127.0.0.0/8",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn start_tern() -> TernServer {
    let (min, max) = free_port_range(200);
    TernServer::builder()
        .args(&tern_args(&format!("{min}-{max}")))
        .start()
}

/// `turnutils_peer` (a UDP echo server) on `ip`, ready (it echoed a probe).
fn start_peer(ip: IpAddr, dir: &Path) -> (BackgroundProcess, u16) {
    let bin = ensure_tool("turnutils_peer");
    let port = free_udp_port_on(ip);
    let mut cmd = Command::new(bin);
    cmd.arg("-L")
        .arg(ip.to_string())
        .arg("-p")
        .arg(port.to_string());
    let mut peer = BackgroundProcess::spawn("turnutils_peer", &mut cmd, dir);
    let addr = SocketAddr::new(ip, port);
    let probe = UdpSocket::bind(SocketAddr::new(ip, 0)).expect("bind probe socket");
    probe
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 64];
    loop {
        if let Some(status) = peer.try_exit_status() {
            panic!("turnutils_peer exited early with {status}\n{}", peer.logs());
        }
        assert!(
            Instant::now() < deadline,
            "turnutils_peer on {addr} did not echo within 10 s\n{}",
            peer.logs()
        );
        let _ = probe.send_to(b"ping", addr);
        if let Ok((4, from)) = probe.recv_from(&mut buf)
            && from == addr
            && &buf[..4] == b"ping"
        {
            return (peer, port);
        }
    }
}

/// Runs `turnutils_uclient ARGS... -p PORT SERVER-IP` to completion (bounded).
fn run_uclient(server: SocketAddr, args: &[&str]) -> RunOutput {
    let bin = ensure_tool("turnutils_uclient");
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .arg("-p")
        .arg(server.port().to_string())
        .arg(server.ip().to_string());
    let out = run_with_timeout(&mut cmd, UCLIENT_TIMEOUT);
    assert!(
        !out.timed_out,
        "turnutils_uclient {args:?} against {server} did not finish within {UCLIENT_TIMEOUT:?}\n{}",
        out.describe()
    );
    out
}

/// The standard paced run: `-n 50 -m 5 -l 120` plus `extra`.
fn paced_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["-n", "50", "-m", "5", "-l", LENGTH];
    args.extend_from_slice(extra);
    args
}

/// Asserts a uclient run delivered every packet: exit 0, `Total lost packets 0`,
/// `total send dropped 0`, and `tot_send_msgs == tot_recv_msgs >= MESSAGES * CLIENTS`.
fn assert_full_delivery(label: &str, out: &RunOutput, server_logs: &str) -> UclientSummary {
    let text = out.combined();
    let summary = UclientSummary::parse(&text).unwrap_or_else(|| {
        panic!(
            "{label}: no uclient summary found\n{}\n{server_logs}",
            out.describe()
        )
    });
    println!(
        "[{label}] uclient summary:\n{}\n",
        UclientSummary::lines(&text)
    );
    let ok = out.success()
        && summary.lost_packets == 0
        && summary.send_dropped == 0
        && summary.tot_send_msgs >= MESSAGES * CLIENTS
        && summary.tot_send_msgs == summary.tot_recv_msgs;
    assert!(
        ok,
        "{label}: expected 100 % delivery of >= {} messages, got {summary:?}\n{}\n{server_logs}",
        MESSAGES * CLIENTS,
        out.describe()
    );
    summary
}

/// Channel numbers uclient reports as bound (`-v` prints `success: 0x4abc` after each
/// ChannelBind response).
fn bound_channels(output: &str) -> Vec<u16> {
    output
        .lines()
        .filter_map(|l| l.split("success: 0x").nth(1))
        .filter_map(|hex| u16::from_str_radix(hex.trim(), 16).ok())
        .collect()
}

/// The hex long-term key MD5(user:realm:password), as `auth.users[].key` takes it.
fn long_term_key(user: &str, realm: &str, password: &str) -> String {
    Md5::digest(format!("{user}:{realm}:{password}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn uclient_summary_parser() {
    let out = "5: : start_mclient: msz=6, tot_send_msgs=287, tot_recv_msgs=287, x\n\
               5: : start_mclient: tot_send_msgs=300, tot_recv_msgs=299\n\
               5: : Total lost packets 1 (0.3%), total send dropped 2 (0.000000%)\n";
    assert_eq!(
        UclientSummary::parse(out),
        Some(UclientSummary {
            tot_send_msgs: 300,
            tot_recv_msgs: 299,
            lost_packets: 1,
            send_dropped: 2
        })
    );
    assert_eq!(
        bound_channels("0: : success: 0x79a2\n0: : success\n"),
        [0x79a2]
    );
    // `printf %s user:realm:pass | md5sum`
    assert_eq!(
        long_term_key("user", "realm", "pass"),
        "8493fbc53ba582fb4c044c456bdc40eb"
    );
}

/// Default uclient mode: ChannelBind then ChannelData through tern to turnutils_peer.
/// Debian's uclient picks random channel numbers in 0x4000-0x7FFF, most of them above
/// 0x4FFF; tern must accept the whole RFC 5766 range.
#[test]
fn uclient_channel_data_to_peer() {
    let dir = TempDir::new("interop-chan");
    let server = start_tern();
    let (_peer, peer_port) = start_peer(LOCALHOST_V4, dir.path());
    let peer_port = peer_port.to_string();
    let out = run_uclient(
        server.addr,
        &paced_args(&[
            "-v",
            "-u",
            USER,
            "-w",
            PASSWORD,
            "-e",
            "127.0.0.1",
            "-r",
            &peer_port,
        ]),
    );
    let summary = assert_full_delivery("tern ChannelData", &out, &server.logs());

    let channels = bound_channels(&out.combined());
    let high = channels.iter().filter(|&&c| c > 0x4FFF).count();
    println!(
        "bound channels: {} ({} above 0x4FFF): {:04x?}",
        channels.len(),
        high,
        channels
    );
    assert!(
        !channels.is_empty(),
        "uclient reported no successful ChannelBind\n{}",
        out.describe()
    );
    assert!(
        channels.iter().all(|c| (0x4000..=0x7FFF).contains(c)),
        "unexpected channel numbers {channels:04x?}"
    );
    // With >= 10 random picks from 0x4000-0x7FFF, all landing in 0x4000-0x4FFF has
    // probability 4^-10: a failure here means the client did not exercise the high range.
    if channels.len() >= 10 {
        assert!(
            high > 0,
            "no channel above 0x4FFF was exercised: {channels:04x?}"
        );
    }
    assert!(summary.tot_recv_msgs > 0);
}

/// `-s`: Send and Data indications instead of channels.
#[test]
fn uclient_send_indications_to_peer() {
    let dir = TempDir::new("interop-send");
    let server = start_tern();
    let (_peer, peer_port) = start_peer(LOCALHOST_V4, dir.path());
    let peer_port = peer_port.to_string();
    let out = run_uclient(
        server.addr,
        &paced_args(&[
            "-s",
            "-u",
            USER,
            "-w",
            PASSWORD,
            "-e",
            "127.0.0.1",
            "-r",
            &peer_port,
        ]),
    );
    assert_full_delivery("tern Send indications", &out, &server.logs());
}

/// `-y`: uclient's clients talk to each other's relayed addresses (no external peer).
#[test]
fn uclient_client_to_client() {
    let server = start_tern();
    let out = run_uclient(
        server.addr,
        &paced_args(&["-y", "-u", USER, "-w", PASSWORD]),
    );
    assert_full_delivery("tern client-to-client", &out, &server.logs());
}

/// A static user given in the config file by its long-term key (not the password);
/// a wrong password must be refused.
#[test]
fn uclient_long_term_user_from_config() {
    let dir = TempDir::new("interop-lt");
    let (min, max) = free_port_range(200);
    let toml = format!(
        "[server]\nrealm = \"{REALM}\"\n\n\
         [relay]\nips = [\"127.0.0.1\"]\nports = \"{min}-{max}\"\n\n\
         [[auth.users]]\nname = \"bob\"\nkey = \"{}\"\n\n\
         [peers]\nallowed = [\"127.0.0.0/8\"]\n",
        long_term_key("bob", REALM, "builder")
    );
    let server = TernServer::start_with_config(&toml, &[]);
    let (_peer, peer_port) = start_peer(LOCALHOST_V4, dir.path());
    let peer_port = peer_port.to_string();

    let out = run_uclient(
        server.addr,
        &paced_args(&[
            "-u",
            "bob",
            "-w",
            "builder",
            "-e",
            "127.0.0.1",
            "-r",
            &peer_port,
        ]),
    );
    assert_full_delivery("tern long-term user (config key)", &out, &server.logs());

    let bad = run_uclient(
        server.addr,
        &[
            "-n",
            "5",
            "-m",
            "1",
            "-u",
            "bob",
            "-w",
            "not-the-password",
            "-e",
            "127.0.0.1",
            "-r",
            &peer_port,
        ],
    );
    let delivered = UclientSummary::parse(&bad.combined()).is_some_and(|s| s.tot_recv_msgs > 0);
    assert!(
        !bad.success() && !delivered,
        "a wrong password was accepted\n{}\n{}",
        bad.describe(),
        server.logs()
    );
    assert!(
        bad.combined().contains("Cannot complete Allocation"),
        "expected uclient to fail the Allocate\n{}",
        bad.describe()
    );
}

/// TURN REST API credentials: uclient's `-W secret -u alice` forms the username
/// `<now + 86400>:alice` and the password base64(HMAC-SHA1(secret, username)).
/// A client holding the wrong secret must be refused.
#[test]
fn uclient_rest_secret() {
    let dir = TempDir::new("interop-rest");
    let (min, max) = free_port_range(200);
    let ports = format!("{min}-{max}");
    let server = TernServer::start(&[
        "--relay-ip",
        "127.0.0.1",
        "--ports",
        &ports,
        "--realm",
        REALM,
        "--secret",
        "north-secret",
        "--allow-peer",
        "127.0.0.0/8",
    ]);
    let (_peer, peer_port) = start_peer(LOCALHOST_V4, dir.path());
    let peer_port = peer_port.to_string();

    let out = run_uclient(
        server.addr,
        &paced_args(&[
            "-W",
            "north-secret",
            "-u",
            "alice",
            "-e",
            "127.0.0.1",
            "-r",
            &peer_port,
        ]),
    );
    assert_full_delivery("tern REST secret", &out, &server.logs());

    let bad = run_uclient(
        server.addr,
        &[
            "-n",
            "5",
            "-m",
            "1",
            "-W",
            "south-secret",
            "-u",
            "alice",
            "-e",
            "127.0.0.1",
            "-r",
            &peer_port,
        ],
    );
    let delivered = UclientSummary::parse(&bad.combined()).is_some_and(|s| s.tot_recv_msgs > 0);
    assert!(
        !bad.success() && !delivered,
        "a credential signed with the wrong secret was accepted\n{}\n{}",
        bad.describe(),
        server.logs()
    );
}

/// Loopback peers are denied unless re-allowed: without `--allow-peer`, the
/// ChannelBind to a 127.0.0.1 peer gets 403 and nothing is relayed.
#[test]
fn uclient_loopback_peer_denied_by_default() {
    let dir = TempDir::new("interop-deny");
    let (min, max) = free_port_range(200);
    let ports = format!("{min}-{max}");
    let user = format!("{USER}:{PASSWORD}");
    let server = TernServer::start(&[
        "--relay-ip",
        "127.0.0.1",
        "--ports",
        &ports,
        "--realm",
        REALM,
        "--user",
        &user,
    ]);
    let (_peer, peer_port) = start_peer(LOCALHOST_V4, dir.path());
    let peer_port = peer_port.to_string();
    let out = run_uclient(
        server.addr,
        &[
            "-n",
            "5",
            "-m",
            "1",
            "-u",
            USER,
            "-w",
            PASSWORD,
            "-e",
            "127.0.0.1",
            "-r",
            &peer_port,
        ],
    );
    let delivered = UclientSummary::parse(&out.combined()).is_some_and(|s| s.tot_recv_msgs > 0);
    assert!(
        !out.success() && !delivered && out.combined().contains("403"),
        "expected 403 Forbidden for a loopback peer by default\n{}\n{}",
        out.describe(),
        server.logs()
    );
}

/// The same over IPv6 loopback: tern on [::1], relay on ::1 (`-x` asks for an IPv6
/// relayed address), peer on ::1.
#[test]
fn uclient_ipv6_channel_data_to_peer() {
    if let Err(reason) = ipv6_loopback_available() {
        println!("SKIPPED uclient_ipv6_channel_data_to_peer: IPv6 loopback unavailable: {reason}");
        return;
    }
    let dir = TempDir::new("interop-v6");
    let (min, max) = free_port_range_on(LOCALHOST_V6, 200);
    let ports = format!("{min}-{max}");
    let user = format!("{USER}:{PASSWORD}");
    let server = TernServer::builder()
        .listen(SocketAddr::new(
            LOCALHOST_V6,
            free_udp_port_on(LOCALHOST_V6),
        ))
        .args(&[
            "--relay-ip",
            "::1",
            "--ports",
            &ports,
            "--realm",
            REALM,
            "--user",
            &user,
            "--allow-peer",
            "::1/128",
        ])
        .start();
    let (_peer, peer_port) = start_peer(LOCALHOST_V6, dir.path());
    let peer_port = peer_port.to_string();
    let out = run_uclient(
        server.addr,
        &paced_args(&[
            "-x", "-v", "-u", USER, "-w", PASSWORD, "-e", "::1", "-r", &peer_port,
        ]),
    );
    assert_full_delivery("tern IPv6 ChannelData", &out, &server.logs());
    assert!(
        out.combined().contains("IPv6. Received relay addr: [::1]")
            || out.combined().contains("IPv6. Received relay addr: ::1"),
        "expected an IPv6 relayed address\n{}",
        out.describe()
    );
}

/// `turnutils_stunclient` gets its reflexive address from tern: 127.0.0.1 and the
/// client's own ephemeral port.
#[test]
fn stunclient_reports_mapped_address() {
    let server = TernServer::start(&["--realm", REALM, "--user", "u:p"]);
    let bin = ensure_tool("turnutils_stunclient");
    let mut cmd = Command::new(bin);
    cmd.arg("-p")
        .arg(server.port().to_string())
        .arg("-L")
        .arg("127.0.0.1")
        .arg("127.0.0.1");
    let out = run_with_timeout(&mut cmd, Duration::from_secs(15));
    println!("turnutils_stunclient:\n{}", out.combined());
    let mapped: Vec<SocketAddr> = out
        .combined()
        .lines()
        .filter_map(|l| l.split("UDP reflexive addr: ").nth(1))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    assert!(
        out.success() && !mapped.is_empty(),
        "stunclient printed no reflexive address\n{}\n{}",
        out.describe(),
        server.logs()
    );
    for addr in &mapped {
        assert_eq!(addr.ip(), LOCALHOST_V4, "mapped address {addr}");
        assert!(
            addr.port() != 0 && addr.port() != server.port(),
            "mapped port {addr} is not the client's"
        );
    }
}

/// coturn's `turnserver` on loopback, ready to serve.
fn start_coturn(dir: &TempDir) -> (BackgroundProcess, SocketAddr) {
    let bin = ensure_tool("turnserver");
    let port = free_udp_tcp_port();
    let (min, max) = free_port_range(200);
    let mut cmd = Command::new(bin);
    cmd.args([
        "-n",
        "--no-cli",
        "--listening-ip=127.0.0.1",
        &format!("--listening-port={port}"),
        "--relay-ip=127.0.0.1",
        &format!("--min-port={min}"),
        &format!("--max-port={max}"),
        "--lt-cred-mech",
        &format!("--user={USER}:{PASSWORD}"),
        &format!("--realm={REALM}"),
        "--allow-loopback-peers",
        "--no-tls",
        "--no-dtls",
        "--no-tcp",
        "--no-tcp-relay",
        "--no-rfc5780",
        "--log-file=stdout",
        "--simple-log",
    ])
    .arg(format!(
        "--pidfile={}",
        dir.join("turnserver.pid").display()
    ))
    .arg(format!("--db={}", dir.join("turndb").display()));
    let mut coturn = BackgroundProcess::spawn("turnserver", &mut cmd, dir.path());
    let addr = SocketAddr::new(LOCALHOST_V4, port);
    let ready = wait_for_stun(addr, Duration::from_secs(15), || {
        match coturn.try_exit_status() {
            Some(status) => Err(format!("turnserver exited early with {status}")),
            None => Ok(()),
        }
    });
    if let Err(e) = ready {
        panic!("coturn did not start: {e}\n{}", coturn.logs());
    }
    (coturn, addr)
}

/// The same ChannelData run against coturn's own server and against tern: both must
/// deliver every packet. Both summaries are printed one after the other.
#[test]
fn side_by_side_with_coturn_turnserver() {
    let dir = TempDir::new("interop-side");
    let (_peer, peer_port) = start_peer(LOCALHOST_V4, dir.path());
    let peer_port = peer_port.to_string();
    let args = paced_args(&[
        "-u",
        USER,
        "-w",
        PASSWORD,
        "-e",
        "127.0.0.1",
        "-r",
        &peer_port,
    ]);

    let (coturn, coturn_addr) = start_coturn(&dir);
    let coturn_out = run_uclient(coturn_addr, &args);
    let coturn_summary = assert_full_delivery("coturn turnserver", &coturn_out, &coturn.logs());
    drop(coturn);

    let tern = start_tern();
    let tern_out = run_uclient(tern.addr, &args);
    let tern_summary = assert_full_delivery("tern", &tern_out, &tern.logs());

    println!("side by side (uclient {}):", args.join(" "));
    println!("  coturn: {coturn_summary:?}");
    println!("  tern:   {tern_summary:?}");
    assert_eq!(
        coturn_summary.tot_send_msgs, tern_summary.tot_send_msgs,
        "the same uclient run sent a different number of messages"
    );
}
