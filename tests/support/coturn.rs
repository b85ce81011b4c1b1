//! coturn's own `turnserver` on loopback, for running the same checks against it and
//! against tern side by side, and coturn's client tools: `turnutils_peer` (a UDP echo
//! peer) and `turnutils_uclient` runs.
//!
//! Use it from a test file (which has `mod support;`) with
//! `#[path = "support/coturn.rs"] mod coturn;`. Each test binary uses a subset.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{
    BackgroundProcess, LOCALHOST_V4, RunOutput, TempDir, ensure_tool, free_port_range,
    free_udp_port, free_udp_port_on, run_with_timeout, wait_for_stun,
};

/// The long-term credential coturn accepts.
pub struct User<'a> {
    pub name: &'a str,
    pub password: &'a str,
    pub realm: &'a str,
}

/// TLS for coturn: certificate, key and the TLS port.
pub struct Tls<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    pub port: u16,
}

/// Which listeners besides UDP.
pub struct Listeners<'a> {
    /// Plain TCP on the UDP port.
    pub tcp: bool,
    pub tls: Option<Tls<'a>>,
    /// TCP allocations (RFC 6062), which coturn serves by default.
    pub tcp_relay: bool,
}

/// `turnserver` on 127.0.0.1 with `user`, loopback peers allowed, ready to serve (its
/// Binding answered); panics with its log if it does not come up.
pub fn start(
    dir: &TempDir,
    user: &User<'_>,
    listeners: &Listeners<'_>,
) -> (BackgroundProcess, SocketAddr) {
    let port = free_udp_port();
    let (min, max) = free_port_range(200);
    let mut cmd = Command::new(ensure_tool("turnserver"));
    if !listeners.tcp {
        cmd.arg("--no-tcp");
    }
    if !listeners.tcp_relay {
        cmd.arg("--no-tcp-relay");
    }
    match &listeners.tls {
        None => cmd.arg("--no-tls"),
        Some(t) => cmd.args([
            format!("--cert={}", t.cert.display()),
            format!("--pkey={}", t.key.display()),
            format!("--tls-listening-port={}", t.port),
        ]),
    };
    cmd.args([
        "-n",
        "--no-cli",
        "--listening-ip=127.0.0.1",
        &format!("--listening-port={port}"),
        "--relay-ip=127.0.0.1",
        &format!("--min-port={min}"),
        &format!("--max-port={max}"),
        "--lt-cred-mech",
        &format!("--user={}:{}", user.name, user.password),
        &format!("--realm={}", user.realm),
        "--allow-loopback-peers",
        "--no-dtls",
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

/// Upper bound for one uclient run (they take ~6-8 s: uclient waits a few seconds
/// before sending and after the last packet).
const UCLIENT_TIMEOUT: Duration = Duration::from_secs(40);

/// A running `turnutils_peer` (a UDP echo server); killed on drop.
pub struct Peer {
    _process: BackgroundProcess,
    /// Holds its logs; dropped after the process.
    _dir: TempDir,
    ip: String,
    port: String,
}

impl Peer {
    /// `-e IP -r PORT`: the uclient arguments that relay to this peer.
    pub fn args(&self) -> [&str; 4] {
        ["-e", &self.ip, "-r", &self.port]
    }
}

/// `turnutils_peer` on `ip`, ready (it echoed a probe).
pub fn start_peer(ip: IpAddr) -> Peer {
    let bin = ensure_tool("turnutils_peer");
    let dir = TempDir::new("interop-peer");
    let port = free_udp_port_on(ip);
    let mut cmd = Command::new(bin);
    cmd.arg("-L")
        .arg(ip.to_string())
        .arg("-p")
        .arg(port.to_string());
    let mut peer = BackgroundProcess::spawn("turnutils_peer", &mut cmd, dir.path());
    let addr = SocketAddr::new(ip, port);
    let probe = UdpSocket::bind(SocketAddr::new(ip, 0)).expect("bind probe socket");
    probe
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 64];
    loop {
        peer.assert_running();
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
            return Peer {
                _process: peer,
                _dir: dir,
                ip: ip.to_string(),
                port: port.to_string(),
            };
        }
    }
}

/// Runs `turnutils_uclient ARGS... -p PORT SERVER-IP` to completion (bounded).
pub fn run_uclient(server: SocketAddr, args: &[&str]) -> RunOutput {
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
