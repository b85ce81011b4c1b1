//! Interop with coturn's own client tools (Debian package `coturn`):
//! `turnutils_uclient` relaying through tern to `turnutils_peer` (ChannelData, Send
//! indications, client-to-client, long-term users, TURN REST credentials, IPv6),
//! `turnutils_stunclient` against tern, and the same uclient run against coturn's
//! `turnserver` and against tern side by side.
//!
//! Needs the coturn tools on PATH: run `scripts/install-test-deps.sh` (as root) first.
//! Only 127.0.0.1 / ::1 are used, on random high ports; every process is time-bounded.

mod support;

#[path = "support/coturn.rs"]
mod coturn;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use coturn::{run_uclient, start_peer};
use md5::{Digest, Md5};
use support::{
    BackgroundProcess, LOCALHOST_V4, LOCALHOST_V6, RunOutput, TempDir, TernServer, UclientSummary,
    ensure_tool, free_port_range, free_port_range_on, free_udp_port, free_udp_port_on,
    ipv6_loopback_available, run_with_timeout,
};

const REALM: &str = "tern.test";
const USER: &str = "alice";
const PASSWORD: &str = "wonderland";
/// Messages per client, clients, payload bytes: a paced run (20 ms between packets).
const MESSAGES: u64 = 50;
const CLIENTS: u64 = 5;
const LENGTH: &str = "120";

/// `tern serve` listening and relaying on the loopback address `ip`, realm [`REALM`], a
/// fresh relay port range, then `extra` (credentials, peer policy).
fn start_tern_on(ip: IpAddr, extra: &[&str]) -> TernServer {
    let (min, max) = free_port_range_on(ip, 200);
    let ports = format!("{min}-{max}");
    let relay_ip = ip.to_string();
    let mut tern = TernServer::builder()
        .args(&["--relay-ip", &relay_ip, "--ports", &ports, "--realm", REALM])
        .args(extra);
    if ip != LOCALHOST_V4 {
        tern = tern.listen(SocketAddr::new(ip, free_udp_port_on(ip)));
    }
    tern.start()
}

/// [`start_tern_on`] 127.0.0.1.
fn start_tern(extra: &[&str]) -> TernServer {
    start_tern_on(LOCALHOST_V4, extra)
}

/// `USER:PASSWORD`, as `tern serve --user` takes it.
fn user_arg() -> String {
    format!("{USER}:{PASSWORD}")
}

/// The usual tern: static user [`USER`], loopback peers allowed.
fn start_tern_for_user() -> TernServer {
    start_tern(&["--user", &user_arg(), "--allow-peer", "127.0.0.0/8"])
}

/// `-u USER -w PASSWORD`: uclient authenticating as the static user.
const USER_ARGS: [&str; 4] = ["-u", USER, "-w", PASSWORD];

/// The standard paced run: `-n 50 -m 5 -l 120`, then `parts`.
fn paced_args<'a>(parts: &[&[&'a str]]) -> Vec<&'a str> {
    [&["-n", "50", "-m", "5", "-l", LENGTH][..], &parts.concat()].concat()
}

/// A short run for attempts that must fail: `-n 5 -m 1`, then `parts`.
fn short_args<'a>(parts: &[&[&'a str]]) -> Vec<&'a str> {
    [&["-n", "5", "-m", "1"][..], &parts.concat()].concat()
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

/// Runs uclient against `server` and asserts every packet came back
/// ([`assert_full_delivery`]).
fn assert_relays_everything(
    label: &str,
    server: &TernServer,
    args: &[&str],
) -> (RunOutput, UclientSummary) {
    let out = run_uclient(server.addr, args);
    let summary = assert_full_delivery(label, &out, &server.logs());
    (out, summary)
}

/// Runs uclient against `server` and asserts it was refused: a failed run with no
/// message received back. `failure` is the assertion message.
fn assert_refused(server: &TernServer, args: &[&str], failure: &str) -> RunOutput {
    let out = run_uclient(server.addr, args);
    let delivered = UclientSummary::parse(&out.combined()).is_some_and(|s| s.tot_recv_msgs > 0);
    assert!(
        !out.success() && !delivered,
        "{failure}\n{}\n{}",
        out.describe(),
        server.logs()
    );
    out
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
    let server = start_tern_for_user();
    let peer = start_peer(LOCALHOST_V4);
    let (out, summary) = assert_relays_everything(
        "tern ChannelData",
        &server,
        &paced_args(&[&["-v"], &USER_ARGS, &peer.args()]),
    );

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
    let server = start_tern_for_user();
    let peer = start_peer(LOCALHOST_V4);
    assert_relays_everything(
        "tern Send indications",
        &server,
        &paced_args(&[&["-s"], &USER_ARGS, &peer.args()]),
    );
}

/// `-y`: uclient's clients talk to each other's relayed addresses (no external peer).
#[test]
fn uclient_client_to_client() {
    let server = start_tern_for_user();
    assert_relays_everything(
        "tern client-to-client",
        &server,
        &paced_args(&[&["-y"], &USER_ARGS]),
    );
}

/// A static user given in the config file by its long-term key (not the password);
/// a wrong password must be refused.
#[test]
fn uclient_long_term_user_from_config() {
    let (min, max) = free_port_range(200);
    let toml = format!(
        "[server]\nrealm = \"{REALM}\"\n\n\
         [relay]\nips = [\"127.0.0.1\"]\nports = \"{min}-{max}\"\n\n\
         [[auth.users]]\nname = \"bob\"\nkey = \"{}\"\n\n\
         [peers]\nallowed = [\"127.0.0.0/8\"]\n",
        long_term_key("bob", REALM, "builder")
    );
    let server = TernServer::start_with_config(&toml, &[]);
    let peer = start_peer(LOCALHOST_V4);

    assert_relays_everything(
        "tern long-term user (config key)",
        &server,
        &paced_args(&[&["-u", "bob", "-w", "builder"], &peer.args()]),
    );

    let bad = assert_refused(
        &server,
        &short_args(&[&["-u", "bob", "-w", "not-the-password"], &peer.args()]),
        "a wrong password was accepted",
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
    let server = start_tern(&["--secret", "north-secret", "--allow-peer", "127.0.0.0/8"]);
    let peer = start_peer(LOCALHOST_V4);

    assert_relays_everything(
        "tern REST secret",
        &server,
        &paced_args(&[&["-W", "north-secret", "-u", "alice"], &peer.args()]),
    );

    assert_refused(
        &server,
        &short_args(&[&["-W", "south-secret", "-u", "alice"], &peer.args()]),
        "a credential signed with the wrong secret was accepted",
    );
}

/// Loopback peers are denied unless re-allowed: without `--allow-peer`, the
/// ChannelBind to a 127.0.0.1 peer gets 403 and nothing is relayed.
#[test]
fn uclient_loopback_peer_denied_by_default() {
    const FAILURE: &str = "expected 403 Forbidden for a loopback peer by default";
    let server = start_tern(&["--user", &user_arg()]);
    let peer = start_peer(LOCALHOST_V4);
    let out = assert_refused(&server, &short_args(&[&USER_ARGS, &peer.args()]), FAILURE);
    assert!(
        out.combined().contains("403"),
        "{FAILURE}\n{}\n{}",
        out.describe(),
        server.logs()
    );
}

/// The same over IPv6 loopback: tern on [::1], relay on ::1 (`-x` asks for an IPv6
/// relayed address), peer on ::1.
#[test]
fn uclient_ipv6_channel_data_to_peer() {
    if let Err(why) = ipv6_loopback_available() {
        panic!("IPv6 loopback is needed for this test: {why}");
    }
    let server = start_tern_on(
        LOCALHOST_V6,
        &["--user", &user_arg(), "--allow-peer", "::1/128"],
    );
    let peer = start_peer(LOCALHOST_V6);
    let (out, _) = assert_relays_everything(
        "tern IPv6 ChannelData",
        &server,
        &paced_args(&[&["-x", "-v"], &USER_ARGS, &peer.args()]),
    );
    let text = out.combined();
    assert!(
        text.contains("IPv6. Received relay addr: [::1]")
            || text.contains("IPv6. Received relay addr: ::1"),
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

/// coturn's `turnserver` with this file's user: UDP only, or with `tls` also TCP on the
/// same port and TLS on its own.
fn start_coturn(dir: &TempDir, tls: Option<coturn::Tls<'_>>) -> (BackgroundProcess, SocketAddr) {
    let user = coturn::User {
        name: USER,
        password: PASSWORD,
        realm: REALM,
    };
    let tcp = tls.is_some();
    coturn::start(
        dir,
        &user,
        &coturn::Listeners {
            tcp,
            tls,
            tcp_relay: false,
        },
    )
}

/// The same ChannelData run against coturn's own server and against tern: both must
/// deliver every packet. Both summaries are printed one after the other.
#[test]
fn side_by_side_with_coturn_turnserver() {
    let dir = TempDir::new("interop-side");
    let peer = start_peer(LOCALHOST_V4);
    let args = paced_args(&[&USER_ARGS, &peer.args()]);

    let (coturn, coturn_addr) = start_coturn(&dir, None);
    let coturn_out = run_uclient(coturn_addr, &args);
    let coturn_summary = assert_full_delivery("coturn turnserver", &coturn_out, &coturn.logs());
    drop(coturn);

    let tern = start_tern_for_user();
    let (_, tern_summary) = assert_relays_everything("tern", &tern, &args);

    println!("side by side (uclient {}):", args.join(" "));
    println!("  coturn: {coturn_summary:?}");
    println!("  tern:   {tern_summary:?}");
    assert_eq!(
        coturn_summary.tot_send_msgs, tern_summary.tot_send_msgs,
        "the same uclient run sent a different number of messages"
    );
}

/// A self-signed certificate for 127.0.0.1/localhost written to `dir`: (cert, key).
fn self_signed(dir: &TempDir) -> (PathBuf, PathBuf) {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let cert = rcgen::generate_simple_self_signed(names).expect("generating a certificate");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("writing cert.pem");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("writing key.pem");
    (cert_path, key_path)
}

/// uclient over TCP (`-t`) and TLS (`-t -S`) through tern to `turnutils_peer`, then the
/// same runs against coturn's `turnserver`: both deliver every packet both ways.
#[test]
fn uclient_over_tcp_and_tls_side_by_side_with_coturn() {
    let dir = TempDir::new("interop-streams");
    let (cert, key) = self_signed(&dir);
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
    let peer = start_peer(LOCALHOST_V4);
    let tcp_args = paced_args(&[&["-t"], &USER_ARGS, &peer.args()]);
    let tls_args = paced_args(&[&["-t", "-S"], &USER_ARGS, &peer.args()]);

    let tls_port = free_udp_port();
    let tls_listen = format!("127.0.0.1:{tls_port}");
    let user = user_arg();
    let tern = start_tern(&[
        "--user",
        &user,
        "--allow-peer",
        "127.0.0.0/8",
        "--tls-listen",
        &tls_listen,
        "--cert",
        &cert_arg,
        "--key",
        &key_arg,
    ]);
    let (_, tern_tcp) = assert_relays_everything("tern over TCP", &tern, &tcp_args);
    let tern_tls_addr = SocketAddr::new(LOCALHOST_V4, tls_port);
    let out = run_uclient(tern_tls_addr, &tls_args);
    let tern_tls = assert_full_delivery("tern over TLS", &out, &tern.logs());
    drop(tern);

    let coturn_tls_port = free_udp_port();
    let tls = coturn::Tls {
        cert: &cert,
        key: &key,
        port: coturn_tls_port,
    };
    let (coturn, coturn_addr) = start_coturn(&dir, Some(tls));
    let out = run_uclient(coturn_addr, &tcp_args);
    let coturn_tcp = assert_full_delivery("coturn over TCP", &out, &coturn.logs());
    let out = run_uclient(SocketAddr::new(LOCALHOST_V4, coturn_tls_port), &tls_args);
    let coturn_tls = assert_full_delivery("coturn over TLS", &out, &coturn.logs());

    println!(
        "side by side over streams (uclient {}):",
        tls_args.join(" ")
    );
    println!("  TCP coturn: {coturn_tcp:?}");
    println!("  TCP tern:   {tern_tcp:?}");
    println!("  TLS coturn: {coturn_tls:?}");
    println!("  TLS tern:   {tern_tls:?}");
}
