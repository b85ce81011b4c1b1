//! Usage records against a running `tern serve`: one `tern::usage` log event per
//! allocation, checked field by field, after each way an allocation ends: a Refresh
//! with lifetime 0 (UDP and TLS), expiry, its TCP connection closing, a kill, a
//! revocation, a drain running out (SIGTERM) and an immediate stop (SIGINT). The logs
//! are JSON (`--log-format json`), as a billing pipeline would read them.

#[path = "support/certs.rs"]
mod certs;
mod support;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use stun::attributes::ATTR_XOR_RELAYED_ADDRESS;
use support::{TempDir, TernBuilder, TernServer, free_udp_port, http_request, read_http_request};
use tern::auth::{RestSecret, rest_credential};
use tern::client::TurnClient;
use tern::clock::unix_now;

const TOKEN: &str = "usage-records-admin-token";
const SECRET: &str = "usage-records-secret-0123456789";
const WAIT: Duration = Duration::from_secs(5);
const CHANNEL: u16 = 0x4000;

/// tern with user alice:pw, a REST secret, loopback peers, JSON logs, the admin API
/// and a TLS listener; `config` is added to the file.
struct Server {
    tern: TernServer,
    admin: SocketAddr,
    tls: SocketAddr,
    cert: certs::TestCert,
    _certs: TempDir,
}

fn start(config: &str) -> Server {
    let dir = TempDir::new("tern-usage-certs");
    let files = certs::CertFiles::in_dir(dir.path());
    let cert = certs::TestCert::new();
    cert.write(&files);
    let admin = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let tls = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let text = format!(
        "[auth]\nsecrets = [\"{SECRET}\"]\n[admin]\nlisten = \"{admin}\"\ntoken = \"{TOKEN}\"\n{config}"
    );
    let mut args = vec![
        "--user".to_string(),
        "alice:pw".to_string(),
        "--allow-peer".to_string(),
        "127.0.0.0/8".to_string(),
        "--ports".to_string(),
        support::relay_ports_arg(),
        "--log-format".to_string(),
        "json".to_string(),
        "--tls-listen".to_string(),
        tls.to_string(),
    ];
    args.extend(files.args());
    let tern = TernBuilder::default().config(&text).args(&args).start();
    Server {
        tern,
        admin,
        tls,
        cert,
        _certs: dir,
    }
}

/// Every usage record the server logged so far.
fn records(server: &TernServer) -> Vec<Value> {
    server
        .logs()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line.trim()).ok())
        .filter(|v| v["target"] == "tern::usage")
        .map(|v| v["fields"].clone())
        .collect()
}

/// Waits for the record of the allocation relayed at `relay`.
fn record_of(server: &TernServer, relay: SocketAddr) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = records(server)
            .into_iter()
            .find(|r| r["relay"] == relay.to_string());
        if let Some(record) = found {
            return record;
        }
        assert!(
            Instant::now() < deadline,
            "no usage record for {relay}:\n{}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Allocates on `c`, binds a channel to a fresh loopback peer and relays `to_peer`
/// packets of 10 bytes out and `to_client` of 7 bytes back; returns the relay address.
fn relay_some(c: &mut TurnClient, to_peer: usize, to_client: usize) -> SocketAddr {
    let reply = c.allocate(vec![]).expect("Allocate answered");
    assert!(reply.is_success(), "Allocate: {:?}", reply.code);
    let relay = reply.xor_address(ATTR_XOR_RELAYED_ADDRESS).unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(WAIT)).unwrap();
    let bound = c.channel_bind(CHANNEL, peer.local_addr().unwrap()).unwrap();
    assert!(bound.is_success(), "ChannelBind: {:?}", bound.code);
    let mut buf = [0u8; 64];
    for _ in 0..to_peer {
        c.send_channel_data(CHANNEL, &[1; 10]).unwrap();
        peer.recv_from(&mut buf).expect("the peer got the data");
    }
    for _ in 0..to_client {
        peer.send_to(&[2; 7], relay).unwrap();
        assert!(c.recv_data(WAIT).unwrap().is_some(), "data back");
    }
    relay
}

/// The fields every record has, checked against what the test knows.
fn check(record: &Value, client: SocketAddr, transport: &str, reason: &str) {
    assert_eq!(record["client"], client.to_string(), "{record}");
    assert_eq!(record["transport"], transport, "{record}");
    assert_eq!(record["reason"], reason, "{record}");
    assert_eq!(record["realm"], "tern", "{record}");
    assert!(
        !record["node"].as_str().unwrap_or("").is_empty(),
        "{record}"
    );
    let (start, end) = (record["start"].as_u64(), record["end"].as_u64());
    let (start, end) = (start.unwrap(), end.unwrap());
    assert_eq!(
        record["duration_secs"].as_u64(),
        Some(end - start),
        "{record}"
    );
    assert!(end <= unix_now() && end + 60 > unix_now(), "{record}");
}

fn traffic(record: &Value) -> [u64; 4] {
    [
        "packets_to_peer",
        "bytes_to_peer",
        "packets_to_client",
        "bytes_to_client",
    ]
    .map(|k| record[k].as_u64().unwrap_or(u64::MAX))
}

fn signal(server: &TernServer, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &server.pid().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig}");
}

fn exited(server: &mut TernServer) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.try_exit_status().is_none() {
        assert!(Instant::now() < deadline, "tern did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn refresh_zero_expiry_and_closed_connections_are_recorded_exactly() {
    let s = start("[relay]\ndefault_lifetime = 3\nmax_lifetime = 3\n");
    // UDP, deleted by the client.
    let mut udp = TurnClient::new(s.tern.addr, "alice", "pw").unwrap();
    let relay = relay_some(&mut udp, 5, 3);
    assert!(udp.refresh(Some(0)).unwrap().is_success());
    let r = record_of(&s.tern, relay);
    check(&r, udp.local_addr(), "udp", "deleted");
    assert_eq!(traffic(&r), [5, 50, 3, 21], "{r}");
    assert_eq!(
        (r["user"].as_str(), r["username"].as_str()),
        (Some("alice"), Some("alice"))
    );
    assert_eq!(r["peers"], 1, "{r}");

    // A REST credential's record names the user id and the whole username.
    let expiry = unix_now() + 600;
    let (username, password) =
        rest_credential(&RestSecret::new(SECRET), expiry, Some("carol"), ':');
    let mut rest = TurnClient::new(s.tern.addr, &username, &password).unwrap();
    let relay = relay_some(&mut rest, 1, 0);
    // No Refresh: it expires after the 3 s lifetime.
    let r = record_of(&s.tern, relay);
    check(&r, rest.local_addr(), "udp", "expired");
    assert_eq!(r["user"], "carol", "{r}");
    assert_eq!(r["username"], username, "{r}");
    assert!(r["duration_secs"].as_u64().unwrap() >= 3, "{r}");
    assert_eq!(traffic(&r), [1, 10, 0, 0], "{r}");

    // TCP: the connection closes.
    let mut tcp = TurnClient::connect_tcp(s.tern.addr, "alice", "pw").unwrap();
    let client = tcp.local_addr();
    let relay = relay_some(&mut tcp, 2, 2);
    drop(tcp);
    let r = record_of(&s.tern, relay);
    check(&r, client, "tcp", "connection_closed");
    assert_eq!(traffic(&r), [2, 20, 2, 14], "{r}");

    // TLS: deleted by the client.
    let mut tls =
        TurnClient::connect_tls(s.tls, "localhost", s.cert.roots(), "alice", "pw").unwrap();
    let relay = relay_some(&mut tls, 1, 1);
    assert!(tls.refresh(Some(0)).unwrap().is_success());
    let r = record_of(&s.tern, relay);
    check(&r, tls.local_addr(), "tls", "deleted");
    assert_eq!(traffic(&r), [1, 10, 1, 7], "{r}");
    // One record per allocation, no more.
    assert_eq!(records(&s.tern).len(), 4, "{:?}", records(&s.tern));
}

#[test]
fn kills_and_revocations_are_recorded_as_such() {
    let s = start("");
    let mut killed = TurnClient::new(s.tern.addr, "alice", "pw").unwrap();
    let relay = relay_some(&mut killed, 1, 1);
    let (status, body) = http_request(
        s.admin,
        "DELETE",
        &format!("/api/sessions/{relay}"),
        Some(TOKEN),
        "",
    );
    assert_eq!(status, 204, "{body}");
    check(
        &record_of(&s.tern, relay),
        killed.local_addr(),
        "udp",
        "killed",
    );

    let expiry = unix_now() + 600;
    let (username, password) = rest_credential(&RestSecret::new(SECRET), expiry, Some("dave"), ':');
    let mut revoked = TurnClient::new(s.tern.addr, &username, &password).unwrap();
    let relay = relay_some(&mut revoked, 0, 0);
    let (status, body) = http_request(s.admin, "POST", "/api/users/dave/revoke", Some(TOKEN), "");
    assert_eq!(status, 200, "{body}");
    let r = record_of(&s.tern, relay);
    check(&r, revoked.local_addr(), "udp", "revoked");
    assert_eq!(
        (r["user"].as_str(), r["peers"].as_u64()),
        (Some("dave"), Some(1))
    );
}

#[test]
fn a_drain_that_runs_out_and_an_immediate_stop_record_what_was_open() {
    let mut s = start("[server]\ndrain_timeout = 1\n");
    let mut c = TurnClient::new(s.tern.addr, "alice", "pw").unwrap();
    let relay = relay_some(&mut c, 3, 0);
    signal(&s.tern, "-TERM");
    exited(&mut s.tern);
    let r = record_of(&s.tern, relay);
    check(&r, c.local_addr(), "udp", "drained");
    assert_eq!(traffic(&r), [3, 30, 0, 0], "{r}");

    let mut s = start("");
    let mut c = TurnClient::connect_tcp(s.tern.addr, "alice", "pw").unwrap();
    let client = c.local_addr();
    let relay = relay_some(&mut c, 1, 0);
    signal(&s.tern, "-INT");
    exited(&mut s.tern);
    check(&record_of(&s.tern, relay), client, "tcp", "shutdown");
}

/// A stand-in for the operator's billing endpoint: answers the n-th request with the
/// n-th status of `answers` (the last one from then on, after `delay` if given for the
/// first request) and keeps every request's headers and body.
struct Receiver {
    addr: SocketAddr,
    requests: std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>,
}

fn receiver(answers: &'static [u16], first_delay: Duration) -> Receiver {
    use std::io::{BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().take(64).enumerate() {
            let Ok(stream) = stream else { continue };
            stream.set_read_timeout(Some(WAIT)).unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            // A request cut short is recorded as an empty one (no records in it).
            let (head, body) = read_http_request(&mut reader).unwrap_or_default();
            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
            seen.lock().unwrap().push((head, body));
            if n == 0 {
                std::thread::sleep(first_delay);
            }
            let status = answers[n.min(answers.len() - 1)];
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    Receiver { addr, requests }
}

impl Receiver {
    /// The records of every request so far, in order.
    fn records(&self) -> Vec<Value> {
        let requests = self.requests.lock().unwrap();
        requests
            .iter()
            .flat_map(|(_, body)| body.as_array().cloned().unwrap_or_default())
            .collect()
    }
}

fn webhook_config(url: &str, extra: &str) -> String {
    format!(
        "[usage]\nwebhook_url = \"{url}\"\nwebhook_token = \"hook-secret-0123\"\nwebhook_interval = 1\nwebhook_timeout = 1\n{extra}"
    )
}

fn metric(server: &Server, name: &str) -> f64 {
    support::metric(server.admin, name)
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_webhook_gets_batches_with_its_token_through_errors_and_slowness() {
    // A 503, then an answer slower than webhook_timeout, then 200s.
    let hook = receiver(&[503, 200], Duration::ZERO);
    let url = format!("http://{}/usage/secret-path", hook.addr);
    let s = start(&webhook_config(&url, ""));
    let mut relays = Vec::new();
    for _ in 0..3 {
        let mut c = TurnClient::new(s.tern.addr, "alice", "pw").unwrap();
        relays.push(relay_some(&mut c, 1, 1));
        assert!(c.refresh(Some(0)).unwrap().is_success());
    }
    wait_for("three records delivered", || {
        metric(&s, "tern_usage_records_total{sink=\"webhook\"}") == 3.0
    });
    let requests = hook.requests.lock().unwrap().clone();
    // One batch (the three ended within the 1 s interval), refused once, sent again.
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].1, requests[1].1);
    let (head, body) = &requests[1];
    assert!(
        head.starts_with("POST /usage/secret-path HTTP/1.1"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("authorization: bearer hook-secret-0123"),
        "{head}"
    );
    let delivered: Vec<String> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["relay"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = relays.iter().map(ToString::to_string).collect();
    assert_eq!(delivered, expected);
    assert_eq!(body[0]["to_peer"]["bytes"], 10, "{body}");
    let logs = s.tern.logs();
    assert!(
        logs.contains("usage records cannot be delivered, retrying"),
        "{logs}"
    );
    for secret in ["hook-secret-0123", "secret-path"] {
        assert!(!logs.contains(secret), "{secret} in the logs:\n{logs}");
    }

    // Slower than webhook_timeout (1 s): given up on and sent again (at least once).
    let slow = receiver(&[200], Duration::from_secs(2));
    let s = start(&webhook_config(&format!("http://{}/", slow.addr), ""));
    let mut c = TurnClient::new(s.tern.addr, "alice", "pw").unwrap();
    let relay = relay_some(&mut c, 0, 0);
    assert!(c.refresh(Some(0)).unwrap().is_success());
    wait_for("delivered after a timeout", || {
        metric(&s, "tern_usage_records_total{sink=\"webhook\"}") == 1.0
    });
    let records = slow.records();
    assert!(records.len() >= 2, "sent once only: {records:?}");
    assert!(records.iter().all(|r| r["relay"] == relay.to_string()));
}

#[test]
fn a_refusing_or_absent_webhook_costs_records_never_relaying() {
    // 400: the batch is dropped and counted, not retried.
    let refusing = receiver(&[400], Duration::ZERO);
    let s = start(&webhook_config(&format!("http://{}/", refusing.addr), ""));
    let mut c = TurnClient::new(s.tern.addr, "alice", "pw").unwrap();
    relay_some(&mut c, 1, 0);
    assert!(c.refresh(Some(0)).unwrap().is_success());
    wait_for("the refused batch counted", || {
        metric(
            &s,
            "tern_usage_records_dropped_total{sink=\"webhook\",reason=\"rejected\"}",
        ) == 1.0
    });
    assert_eq!(refusing.requests.lock().unwrap().len(), 1);

    // Nothing listens, the queue holds 2 and a batch 1: every allocation still relays and ends
    // at once, every record is in the log, and what the queue cannot hold is counted.
    let nowhere = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let s = start(&webhook_config(
        &format!("http://{nowhere}/"),
        "queue = 2\nwebhook_batch = 1\n",
    ));
    let started = Instant::now();
    for _ in 0..6 {
        let mut c = TurnClient::new(s.tern.addr, "alice", "pw").unwrap();
        relay_some(&mut c, 2, 2);
        assert!(c.refresh(Some(0)).unwrap().is_success());
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    wait_for("six records in the log", || records(&s.tern).len() == 6);
    wait_for("the overflow counted", || {
        metric(
            &s,
            "tern_usage_records_dropped_total{sink=\"webhook\",reason=\"queue_full\"}",
        ) >= 3.0
    });
}
