//! RFC 6062 TCP allocations (`relay.tcp_allocations`) against clients written apart
//! from tern: coturn's `turnutils_uclient -T` (client to client: one side Connects, the
//! other is told of the connection with a ConnectionAttempt) over TCP and TLS, its
//! passive mode side by side with coturn's own server, and a Python client
//! (tests/support/rfc6062_client.py) for Connect to a TCP echo peer (`tern peer --tcp`),
//! peer-initiated connections, the 30 s ConnectionBind deadline and every refusal.

#[path = "support/coturn.rs"]
mod coturn;
mod support;

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{
    BackgroundProcess, LOCALHOST_V4, RunOutput, TempDir, TernServer, UclientSummary, ensure_tool,
    free_udp_port, run_with_timeout, tern_command,
};

const USER: &str = "tcp-user";
const PASSWORD: &str = "tcp-password";
const REALM: &str = "tcp.test";

/// tern with TCP allocations on (or not), the static user, peers on `allowed` allowed,
/// and with `tls` a TLS listener on that port.
fn start_tern(tcp_allocations: bool, allowed: &str, tls: Option<(&TempDir, u16)>) -> TernServer {
    start_tern_with(tcp_allocations, allowed, tls, "")
}

/// [`start_tern`] with `more` added to the config.
fn start_tern_with(
    tcp_allocations: bool,
    allowed: &str,
    tls: Option<(&TempDir, u16)>,
    more: &str,
) -> TernServer {
    let mut config = format!(
        "[server]\nrealm = \"{REALM}\"\n\
         [relay]\ntcp_allocations = {tcp_allocations}\n\
         [auth]\nunauthorized_burst = 10000\n\
         [[auth.users]]\nname = \"{USER}\"\npassword = \"{PASSWORD}\"\n\
         [peers]\nallowed = [\"{allowed}\"]\n{more}"
    );
    let mut extra = Vec::new();
    if let Some((dir, port)) = tls {
        let (cert, key) = self_signed(dir);
        config.push_str(&format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        ));
        extra = vec!["--tls-listen".to_string(), format!("127.0.0.1:{port}")];
    }
    TernServer::builder()
        .config(&config)
        .args(&[
            "--relay-ip",
            "127.0.0.1",
            "--ports",
            &support::relay_ports_arg(),
        ])
        .args(&extra)
        .start()
}

/// A self-signed certificate for 127.0.0.1/localhost written to `dir`.
fn self_signed(dir: &TempDir) -> (std::path::PathBuf, std::path::PathBuf) {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let cert = rcgen::generate_simple_self_signed(names).expect("generating a certificate");
    let cert_path = dir.write("cert.pem", &cert.cert.pem());
    let key_path = dir.write("key.pem", &cert.signing_key.serialize_pem());
    (cert_path, key_path)
}

/// `turnutils_uclient ARGS -u USER -w PASSWORD -p PORT 127.0.0.1`, bounded.
fn uclient(port: u16, args: &[&str]) -> RunOutput {
    let mut cmd = Command::new(ensure_tool("turnutils_uclient"));
    cmd.args(args).args([
        "-u",
        USER,
        "-w",
        PASSWORD,
        "-p",
        &port.to_string(),
        "127.0.0.1",
    ]);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
    assert!(
        !out.timed_out,
        "uclient {args:?} timed out\n{}",
        out.describe()
    );
    out
}

/// The run's summary; it must have succeeded.
fn summary(label: &str, out: &RunOutput, logs: &str) -> UclientSummary {
    let text = out.combined();
    let summary = UclientSummary::parse(&text)
        .unwrap_or_else(|| panic!("{label}: no summary\n{}\n{logs}", out.describe()));
    println!("[{label}] {summary:?}");
    assert!(out.success(), "{label}: {}\n{logs}", out.describe());
    // uclient waits for every data connection it expects before sending, and says so
    // when some never came.
    assert!(
        !text.contains("not enough"),
        "{label}: {}\n{logs}",
        out.describe()
    );
    summary
}

/// Every allocation that relayed (`peers=1`) in the usage records of `logs`: its bytes
/// to the peer and to the client.
fn relayed_bytes(logs: &str) -> Vec<(u64, u64)> {
    let field = |line: &str, key: &str| {
        let rest = &line[line.find(key).expect(key) + key.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u64>().expect("a number")
    };
    logs.lines()
        .filter(|l| l.contains("allocation usage") && l.contains(" peers=1 "))
        .map(|l| (field(l, "bytes_to_peer="), field(l, "bytes_to_client=")))
        .collect()
}

#[test]
fn coturn_uclient_relays_through_tcp_allocations_over_tcp_and_tls() {
    let dir = TempDir::new("tcp-alloc-uclient");
    let tls_port = free_udp_port();
    let mut tern = start_tern(true, "127.0.0.0/8", Some((&dir, tls_port)));
    // 5 pairs of clients, 50 messages of 120 bytes each way per client.
    let args = ["-T", "-n", "50", "-m", "5", "-l", "120"];
    let tcp = summary("-T over TCP", &uclient(tern.port(), &args), &tern.logs());
    let tls_args = [&args[..], &["-S"]].concat();
    let tls = summary("-T over TLS", &uclient(tls_port, &tls_args), &tern.logs());
    for (label, s) in [("TCP", tcp), ("TLS", tls)] {
        assert_eq!(s.lost_packets, 0, "{label}: {s:?}");
        assert!(
            s.tot_send_msgs >= 250 && s.tot_send_msgs == s.tot_recv_msgs,
            "{label}: {s:?}"
        );
    }
    tern.stop();
    // The usage records count what went through each allocation's connections: every
    // message once towards a peer and once towards a client.
    let relayed = relayed_bytes(&tern.logs());
    let sent = (tcp.tot_send_msgs + tls.tot_send_msgs) * 120;
    let to_peers: u64 = relayed.iter().map(|r| r.0).sum();
    let to_clients: u64 = relayed.iter().map(|r| r.1).sum();
    assert_eq!((to_peers, to_clients), (sent, sent), "{relayed:?}");
}

#[test]
fn passive_mode_delivers_what_coturn_delivers() {
    // uclient -P: the peer side connects in (RFC 6062 with an active peer). uclient
    // counts both directions against what one side sends, so even coturn shows half
    // "lost": the two servers must agree.
    let args = ["-P", "-n", "20", "-m", "2", "-l", "200"];
    let tern = start_tern(true, "127.0.0.0/8", None);
    let tern_run = summary("tern -P", &uclient(tern.port(), &args), &tern.logs());
    let dir = TempDir::new("tcp-alloc-coturn");
    let user = coturn::User {
        name: USER,
        password: PASSWORD,
        realm: REALM,
    };
    let listeners = coturn::Listeners {
        tcp: true,
        tls: None,
        tcp_relay: true,
    };
    let (coturn, addr) = coturn::start(&dir, &user, &listeners);
    let coturn_run = summary("coturn -P", &uclient(addr.port(), &args), &coturn.logs());
    assert!(tern_run.tot_recv_msgs > 0, "{tern_run:?}");
    assert_eq!(
        tern_run, coturn_run,
        "tern and coturn differ in passive mode"
    );
}

/// A TCP echo peer (`tern peer --tcp`) on 127.0.0.1, accepting connections.
fn start_echo_peer(dir: &TempDir) -> (BackgroundProcess, u16) {
    let port = free_udp_port();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = tern_command(&["peer", "--tcp", "--listen", &listen]);
    let mut peer = BackgroundProcess::spawn("tern-peer-tcp", &mut cmd, dir.path());
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(SocketAddr::new(LOCALHOST_V4, port)).is_err() {
        peer.assert_running();
        assert!(
            Instant::now() < deadline,
            "tcp echo peer did not listen\n{}",
            peer.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (peer, port)
}

/// The Python client's report for `scenario`.
fn python_client(server: &TernServer, scenario: &[&str]) -> Value {
    let args = [&[USER, PASSWORD][..], scenario].concat();
    support::python_client("rfc6062_client.py", server, &args)
}

#[test]
fn connect_relays_to_a_tcp_peer_and_refuses_what_rfc_6062_refuses() {
    let dir = TempDir::new("tcp-alloc-connect");
    let (_peer, echo_port) = start_echo_peer(&dir);
    let closed_port = free_udp_port();
    // 127.0.0.2 is outside the allowed peers: refused before any connection is tried.
    let tern = start_tern(true, "127.0.0.1/32", None);
    let scenario = [
        "connect",
        &echo_port.to_string(),
        &closed_port.to_string(),
        "127.0.0.2",
    ];
    let mut report = python_client(&tern, &scenario);
    report.as_object_mut().expect("an object").remove("relay");
    assert_eq!(
        report,
        json!({
            "connect": null, "bind": null, "echoed": true,
            "connect_again": 446, "connect_closed_port": 447, "connect_denied": 403,
            "channel_bind": 400, "bind_unknown_id": 400, "bind_on_control": 400,
            "refresh": null, "data_closed_after_refresh": true,
        })
    );
}

#[test]
fn a_peer_connection_is_announced_only_with_a_permission() {
    let tern = start_tern(true, "127.0.0.1/32", None);
    let report = python_client(&tern, &["accept"]);
    assert_eq!(
        report,
        json!({
            "unpermitted_closed": true, "permission": null, "announced_unpermitted": 0,
            "indication": true, "announced_peer_is_it": true, "bind": null,
            "peer_to_client": true, "client_to_peer": true, "peer_closed_with_client": true,
        })
    );
}

#[test]
fn an_unbound_peer_connection_is_closed_after_30_seconds() {
    let tern = start_tern(true, "127.0.0.1/32", None);
    let report = python_client(&tern, &["unbound"]);
    assert_eq!(
        report,
        json!({ "closed": true, "waited_at_least_30s": true, "late_bind": 400 })
    );
}

#[test]
fn tcp_allocations_need_a_stream_and_the_option() {
    let on = start_tern(true, "127.0.0.1/32", None);
    let over_udp = python_client(&on, &["udp"]);
    assert_eq!(over_udp, json!({ "allocate": 400 }));
    let off = start_tern(false, "127.0.0.1/32", None);
    let disabled = python_client(&off, &["disabled"]);
    assert_eq!(disabled, json!({ "allocate": 442 }));
}

#[test]
fn bandwidth_limits_hold_a_tcp_allocation_back_instead_of_dropping() {
    // 100 kB/s each way with a 16 kB burst: 300 kB through an echo peer and back take
    // at least (300 - 16) / 100 s. The bytes all arrive, in order: a stream waits for
    // its bucket where datagrams would be dropped.
    let dir = TempDir::new("tcp-alloc-rate");
    let (_peer, echo_port) = start_echo_peer(&dir);
    let limits = "[bandwidth]\nallocation = \"800 kbit/s\"\nallocation_burst = \"16 kB\"\n";
    let tern = start_tern_with(true, "127.0.0.1/32", None, limits);
    let size = 300_000;
    let scenario = ["rate", &echo_port.to_string(), &size.to_string()];
    let report = python_client(&tern, &scenario);
    assert_eq!(report["echoed"], json!(true), "{report}");
    let seconds = report["seconds"].as_f64().expect("seconds");
    let at_least = (300_000.0 - 16_000.0) / 100_000.0;
    println!(
        "300 kB through a 100 kB/s TCP allocation and back: {seconds:.2} s (at least {at_least:.2} s)"
    );
    assert!(
        seconds >= at_least * 0.95,
        "faster than the limit: {seconds} s"
    );
}
