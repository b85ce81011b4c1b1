//! What a SIGHUP does with each class of config key (`config::reload::KEYS`), shown on
//! the wire of a real `tern serve`: keys that apply change the behaviour of new
//! requests and connections; restart-only keys are named in a warning and the server
//! keeps their running values; `tern check-config` lists the restart-only keys.

mod support;

#[path = "support/certs.rs"]
mod certs;

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};
use stun::attributes::ATTR_XOR_RELAYED_ADDRESS;
use stun::message::{METHOD_BINDING, METHOD_REFRESH};
use support::{TempDir, TernServer, free_port_range, free_udp_port, relay_ports_arg, run_tern};
use tern::client::{ClientTransport, Outgoing, TurnClient, signed};

/// A UDP client of `server` sending from `ip` (any 127.0.0.0/8 address is local), so
/// its requests draw on that IP's budget of unauthenticated answers only.
fn client_from(ip: [u8; 4], server: SocketAddr, user: &str, password: &str) -> TurnClient {
    let socket = UdpSocket::bind(SocketAddr::from((ip, 0))).expect("bind a loopback address");
    TurnClient::with_socket(socket, server, user, password).expect("client")
}

/// Sends `count` Binding requests back to back, then counts the answers (at most
/// `count`, within a second of the last).
fn answered_bindings(client: &mut TurnClient, count: usize) -> usize {
    for _ in 0..count {
        let (_, bytes) = client.encode(METHOD_BINDING, &Outgoing::default());
        client.send_raw(&bytes).expect("send a Binding");
    }
    (0..count)
        .take_while(|_| matches!(client.recv(Duration::from_secs(1)), Ok(Some(_))))
        .count()
}

/// Whether a new TCP connection from 127.0.0.1 is served: a connection over the
/// limits is closed at once, before its Binding is answered.
fn tcp_served(server: SocketAddr) -> Option<TurnClient> {
    let transport = ClientTransport::tcp(server, Duration::from_secs(2)).expect("TCP connect");
    let mut client = TurnClient::with_transport(transport, server, "", "");
    let reply = client.request(METHOD_BINDING, &Outgoing::default()).ok()?;
    reply.is_success().then_some(client)
}

/// A signed Refresh sent once (no retry on a challenge): its error code, if any.
fn refresh_once(client: &mut TurnClient) -> Option<u16> {
    let (tid, bytes) = client.encode(METHOD_REFRESH, &signed(vec![]));
    let reply = client.exchange(tid, &bytes).expect("send a Refresh");
    reply.expect("Refresh answered").code
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

#[test]
fn applied_keys_change_what_new_requests_and_connections_get() {
    let dir = TempDir::new("reload-applies");
    let path = dir.join("tern.toml");
    // Many buckets, so that the three source IPs below almost surely get one each.
    let before = "[auth]\nunauthorized_per_second = 1\nunauthorized_burst = 50\n\
                  [limits]\nmax_connections_per_ip = 64\nrate_limit_slots = 65536\n\
                  [[auth.users]]\nname = \"alice\"\npassword = \"pw\"\n";
    write(&path, before);
    let ports = relay_ports_arg();
    let s = TernServer::start(&["--config", path.to_str().unwrap(), "--ports", &ports]);

    let mut flood = client_from([127, 0, 0, 2], s.addr, "", "");
    assert_eq!(answered_bindings(&mut flood, 10), 10, "burst 50 at start");
    let open: Vec<TurnClient> = (0..3)
        .map(|i| tcp_served(s.addr).unwrap_or_else(|| panic!("connection {i} refused")))
        .collect();
    let mut bob = TurnClient::new(s.addr, "bob", "builder").unwrap();
    assert_eq!(bob.allocate(vec![]).unwrap().code, Some(401), "bob unknown");
    let mut alice = client_from([127, 0, 0, 5], s.addr, "alice", "pw");
    assert!(alice.allocate(vec![]).unwrap().is_success());
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(refresh_once(&mut alice), None, "a 1 s old nonce is fresh");

    let after = before
        .replace(
            "unauthorized_burst = 50",
            "unauthorized_burst = 3\nnonce_lifetime = 1",
        )
        .replace("max_connections_per_ip = 64", "max_connections_per_ip = 2")
        + "[[auth.users]]\nname = \"bob\"\npassword = \"builder\"\n";
    write(&path, &after);
    s.reload();
    let logs = s.logs();
    let applied = logs
        .lines()
        .find(|line| line.contains("configuration reloaded; applied: "))
        .unwrap_or_else(|| panic!("no applied keys logged:\n{logs}"));
    for key in [
        "auth.users",
        "auth.nonce_lifetime",
        "auth.unauthorized_burst",
        "limits.max_connections_per_ip",
    ] {
        assert!(
            applied.contains(key),
            "{key} not named as applied: {applied}"
        );
    }
    assert!(!logs.contains("takes a restart"), "{logs}");

    // The same source's bucket is capped to the new burst (one more token may refill
    // while the requests go out).
    let answered = answered_bindings(&mut flood, 10);
    assert!((3..=4).contains(&answered), "{answered} of 10 answered");
    // Three connections from 127.0.0.1 stay open; a new one is over the new limit of 2.
    // (One Binding on an old connection and bob's 401 below stay within the new burst
    // of 127.0.0.1.)
    assert!(tcp_served(s.addr).is_none(), "a new connection was served");
    let mut first = open.into_iter().next().expect("three connections");
    let reply = first.request(METHOD_BINDING, &Outgoing::default());
    assert!(
        reply.is_ok_and(|r| r.is_success()),
        "an open connection lost"
    );
    let mut bob = TurnClient::new(s.addr, "bob", "builder").unwrap();
    assert!(bob.allocate(vec![]).unwrap().is_success(), "bob known");
    assert_eq!(refresh_once(&mut alice), Some(438), "nonce lifetime of 1 s");
}

#[test]
fn a_new_idle_timeout_applies_to_new_connections_only() {
    let dir = TempDir::new("reload-idle");
    let path = dir.join("tern.toml");
    write(&path, "[limits]\nconnection_idle_timeout = 30\n");
    let ports = relay_ports_arg();
    let s = TernServer::start(&["--config", path.to_str().unwrap(), "--ports", &ports]);
    let mut old = tcp_served(s.addr).expect("a connection before the reload");

    write(&path, "[limits]\nconnection_idle_timeout = 1\n");
    s.reload();
    let mut new = tcp_served(s.addr).expect("a connection after the reload");
    let opened = Instant::now();
    let closed = new.recv(Duration::from_secs(5));
    assert!(
        closed
            .as_ref()
            .is_err_and(|e| e.kind() == ErrorKind::UnexpectedEof),
        "{closed:?}"
    );
    assert!(
        opened.elapsed() < Duration::from_secs(3),
        "{:?}",
        opened.elapsed()
    );
    // Past the new timeout, the connection opened before the reload is still served.
    let reply = old.request(METHOD_BINDING, &Outgoing::default());
    assert!(
        reply.is_ok_and(|r| r.is_success()),
        "the old connection was closed"
    );
}

#[test]
fn restart_only_keys_are_named_and_keep_their_running_values() {
    let dir = TempDir::new("reload-restart");
    let path = dir.join("tern.toml");
    let (running_min, running_max) = free_port_range(50);
    let (other_min, other_max) = free_port_range(50);
    let config = |min, max, format| {
        format!(
            "[relay]\nports = \"{min}-{max}\"\n[log]\nformat = \"{format}\"\n\
             [[auth.users]]\nname = \"alice\"\npassword = \"pw\"\n"
        )
    };
    write(&path, &config(running_min, running_max, "human"));
    let s = TernServer::start(&["--config", path.to_str().unwrap()]);

    // Also a certificate: turning TLS on takes a restart too.
    let cert = certs::TestCert::new();
    let files = certs::CertFiles::in_dir(dir.path());
    cert.write(&files);
    let tls = format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n",
        files.cert.display().to_string(),
        files.key.display().to_string()
    );
    write(&path, &(config(other_min, other_max, "json") + &tls));
    s.reload();
    s.reload();
    let logs = s.logs();
    for key in ["relay.ports", "log.format"] {
        let warning = format!("{key} changed: that takes a restart; the running value stays");
        assert_eq!(
            logs.matches(&warning).count(),
            2,
            "{key} not named at each reload:\n{logs}"
        );
    }
    for key in ["tls.cert", "tls.key"] {
        let warning = format!("{key} changed: turning TLS on or off takes a restart");
        assert_eq!(logs.matches(&warning).count(), 2, "{warning}\n{logs}");
    }
    assert!(
        logs.contains("configuration reloaded: no applicable key changed"),
        "{logs}"
    );
    let mut alice = TurnClient::new(s.addr, "alice", "pw").unwrap();
    let reply = alice.allocate(vec![]).unwrap();
    assert!(reply.is_success(), "{:?}\n{logs}", reply.code);
    let relay = reply.xor_address(ATTR_XOR_RELAYED_ADDRESS).unwrap();
    assert!(
        (running_min..=running_max).contains(&relay.port()),
        "relay port {} outside the running range {running_min}-{running_max}",
        relay.port()
    );
}

#[test]
fn new_certificate_paths_apply_on_reload() {
    let dir = TempDir::new("reload-cert-paths");
    let (first_dir, second_dir) = (dir.join("first"), dir.join("second"));
    std::fs::create_dir_all(&first_dir).unwrap();
    std::fs::create_dir_all(&second_dir).unwrap();
    let (first, second) = (certs::TestCert::new(), certs::TestCert::new());
    let (first_files, second_files) = (
        certs::CertFiles::in_dir(&first_dir),
        certs::CertFiles::in_dir(&second_dir),
    );
    first.write(&first_files);
    second.write(&second_files);
    let config = |files: &certs::CertFiles| {
        format!(
            "[tls]\ncert = {:?}\nkey = {:?}\n[[auth.users]]\nname = \"alice\"\npassword = \"pw\"\n",
            files.cert.display().to_string(),
            files.key.display().to_string()
        )
    };
    let path = dir.join("tern.toml");
    write(&path, &config(&first_files));
    let tls_port = free_udp_port();
    let tls_listen = format!("127.0.0.1:{tls_port}");
    let s = TernServer::start(&[
        "--config",
        path.to_str().unwrap(),
        "--tls-listen",
        &tls_listen,
    ]);
    let tls_addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), tls_port);
    let serves = |cert: &certs::TestCert| {
        TurnClient::connect_tls(tls_addr, "localhost", cert.roots(), "alice", "pw")
            .and_then(|mut c| c.allocate(vec![]))
            .is_ok_and(|r| r.is_success())
    };
    assert!(
        serves(&first) && !serves(&second),
        "the first certificate at start"
    );

    write(&path, &config(&second_files));
    s.reload();
    assert!(serves(&second), "the new path's certificate\n{}", s.logs());
    assert!(!serves(&first), "the old certificate still served");
    assert!(
        s.logs().contains("SIGHUP: TLS certificate reloaded"),
        "{}",
        s.logs()
    );
}

#[test]
fn check_config_lists_the_restart_only_keys() {
    let dir = TempDir::new("check-config-restart");
    let path = dir.join("tern.toml");
    write(
        &path,
        "[relay]\nports = \"40000-40100\"\n[log]\nlevel = \"debug\"\n",
    );
    let out = run_tern(
        &["check-config", path.to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert!(out.success(), "{}", out.describe());
    let listed = out
        .stdout
        .lines()
        .find_map(|line| {
            line.strip_prefix(
                "a reload (SIGHUP) applies every key except these, which take a restart: ",
            )
        })
        .unwrap_or_else(|| panic!("no list of restart-only keys:\n{}", out.describe()));
    let listed: Vec<&str> = listed.split(", ").collect();
    for key in [
        "server.listen",
        "relay.ports",
        "auth.nonce_key",
        "log.format",
    ] {
        assert!(listed.contains(&key), "{key} not in {listed:?}");
    }
    for key in [
        "auth.unauthorized_burst",
        "limits.max_connections_per_ip",
        "tls.cert",
    ] {
        assert!(!listed.contains(&key), "{key} listed as restart-only");
    }
    assert!(
        out.stdout
            .contains("restart-only keys this file changes from their defaults: relay.ports\n"),
        "{}",
        out.describe()
    );
}
