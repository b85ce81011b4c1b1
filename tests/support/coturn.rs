//! coturn's own `turnserver` on loopback, for running the same checks against it and
//! against tern side by side.
//!
//! Use it from a test file (which has `mod support;`) with
//! `#[path = "support/coturn.rs"] mod coturn;`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{
    BackgroundProcess, LOCALHOST_V4, TempDir, ensure_tool, free_port_range, free_udp_port,
    wait_for_stun,
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
