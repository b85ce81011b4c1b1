//! Stopping: SIGTERM drains (new allocations refused, existing ones keep relaying
//! until they end or the drain timeout), SIGINT exits at once, and after exit every
//! port the server held can be bound again.

mod support;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};
use stun::attributes::ATTR_XOR_RELAYED_ADDRESS;
use support::{TernServer, relay_ports_arg};
use tern::client::TurnClient;

fn signal(server: &TernServer, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &server.pid().to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill {sig} failed");
}

/// Waits up to `limit` for the server to exit.
fn exit_within(server: &mut TernServer, limit: Duration) -> Option<(ExitStatus, Duration)> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = server.try_exit_status() {
            return Some((status, start.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// An allocation with a channel to a local echo socket; returns the client, the peer
/// socket and the relay address.
fn relaying(server: &TernServer) -> (TurnClient, UdpSocket, SocketAddr) {
    let mut c = TurnClient::new(server.addr, "alice", "pw").unwrap();
    let r = c.allocate(vec![]).unwrap();
    assert!(r.is_success(), "{:?}", r.code);
    let relay = r.xor_address(ATTR_XOR_RELAYED_ADDRESS).unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert!(
        c.channel_bind(0x4000, peer.local_addr().unwrap())
            .unwrap()
            .is_success()
    );
    (c, peer, relay)
}

/// One round trip client → peer → client through the relay.
fn round_trip(c: &mut TurnClient, peer: &UdpSocket, relay: SocketAddr) -> bool {
    c.send_channel_data(0x4000, b"ping").unwrap();
    let mut buf = [0u8; 64];
    let Ok((n, from)) = peer.recv_from(&mut buf) else {
        return false;
    };
    assert_eq!((&buf[..n], from), (&b"ping"[..], relay));
    peer.send_to(b"pong", relay).unwrap();
    matches!(c.recv_data(Duration::from_secs(2)), Ok(Some((None, data))) if data == b"pong")
}

fn start(config: &str, ports: &str) -> TernServer {
    TernServer::start_with_config(
        config,
        &[
            "--user",
            "alice:pw",
            "--allow-peer",
            "127.0.0.0/8",
            "--ports",
            ports,
        ],
    )
}

#[test]
fn sigterm_drains_then_exits_when_the_last_allocation_ends() {
    let ports = relay_ports_arg();
    let mut s = start("[server]\ndrain_timeout = 60\n", &ports);
    let (mut c, peer, relay) = relaying(&s);
    assert!(round_trip(&mut c, &peer, relay));

    signal(&s, "-TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        s.try_exit_status().is_none(),
        "exited with an allocation alive"
    );
    // New allocations are refused while draining...
    let mut late = TurnClient::new(s.addr, "alice", "pw").unwrap();
    assert_eq!(late.allocate(vec![]).unwrap().code, Some(508));
    // ...and the call in progress keeps relaying.
    for _ in 0..5 {
        assert!(
            round_trip(&mut c, &peer, relay),
            "relaying stopped while draining"
        );
    }
    // When it ends, the server exits cleanly and soon.
    assert!(c.refresh(Some(0)).unwrap().is_success());
    let (status, took) = exit_within(&mut s, Duration::from_secs(5)).expect("server exited");
    assert!(status.success(), "exit status {status}\n{}", s.logs());
    assert!(
        took < Duration::from_secs(3),
        "took {took:?} to exit after the last allocation"
    );

    // Every port it held can be bound again: listen UDP and TCP, and the relay port.
    UdpSocket::bind(s.addr).expect("UDP listen port free after exit");
    TcpListener::bind(s.addr).expect("TCP listen port free after exit");
    UdpSocket::bind(relay).expect("relay port free after exit");
}

#[test]
fn sigterm_stops_at_the_drain_timeout() {
    let ports = relay_ports_arg();
    let mut s = start("[server]\ndrain_timeout = 2\n", &ports);
    let (mut c, peer, relay) = relaying(&s);
    signal(&s, "-TERM");
    assert!(round_trip(&mut c, &peer, relay), "relaying stopped at once");
    let (status, took) = exit_within(&mut s, Duration::from_secs(8)).expect("server exited");
    assert!(status.success(), "exit status {status}");
    assert!(
        took >= Duration::from_millis(1500),
        "stopped before the drain timeout: {took:?}"
    );
    UdpSocket::bind(relay).expect("relay port free after exit");
}

/// `server.drain_timeout` applies on reload: the drain that follows uses the new one.
#[test]
fn a_reloaded_drain_timeout_applies_to_the_next_drain() {
    let ports = relay_ports_arg();
    let mut s = start("[server]\ndrain_timeout = 60\n", &ports);
    std::fs::write(s.dir.join("tern.toml"), "[server]\ndrain_timeout = 1\n").unwrap();
    s.reload();
    let (_c, _peer, _relay) = relaying(&s);
    signal(&s, "-TERM");
    let (status, took) = exit_within(&mut s, Duration::from_secs(10)).expect("server exited");
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(5), "drained for {took:?}");
}

#[test]
fn sigint_exits_at_once_with_allocations_alive() {
    let ports = relay_ports_arg();
    let mut s = start("[server]\ndrain_timeout = 60\n", &ports);
    let (_c, _peer, relay) = relaying(&s);
    signal(&s, "-INT");
    let (status, took) = exit_within(&mut s, Duration::from_secs(5)).expect("server exited");
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    UdpSocket::bind(s.addr).expect("UDP listen port free after exit");
    UdpSocket::bind(relay).expect("relay port free after exit");
}

/// Under systemd (Type=notify) tern says READY=1 once it serves, and STOPPING=1.
#[test]
fn tells_systemd_when_ready_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = support::TempDir::new("notify");
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let ports = relay_ports_arg();
    let s = TernServer::builder()
        .env("NOTIFY_SOCKET", path.to_str().unwrap())
        .args(&["--user", "alice:pw", "--ports", &ports])
        .start();
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("a notification");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    signal(&s, "-TERM");
    let n = socket.recv(&mut buf).expect("a notification");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
}
