//! PROXY protocol on tern's TCP and TLS listeners, with HAProxy (Debian's package) in
//! front: the client's address reaches tern's Binding answer, its allocation log line,
//! the session list and the per-IP connection limit; a header from a source that is
//! not trusted is refused; a trusted source that sends no header, a bad one or nothing
//! at all is cut off. Clients bind 127.0.0.2 and 127.0.0.3, HAProxy connects from
//! 127.0.0.1 (the one trusted source), so every address tells who it is.

#[path = "support/certs.rs"]
mod certs;
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stun::attributes::ATTR_XORMAPPED_ADDRESS;
use stun::message::METHOD_BINDING;
use support::{
    BackgroundProcess, TempDir, TernBuilder, TernServer, ensure_tool, free_udp_port, metric,
    relay_ports_arg,
};
use tern::client::transport::ClientTransport;
use tern::client::{Outgoing, TurnClient};

const USER: &str = "alice";
const PASS: &str = "pw";
const WAIT: Duration = Duration::from_secs(3);
const CLIENT_A: [u8; 4] = [127, 0, 0, 2];
const CLIENT_B: [u8; 4] = [127, 0, 0, 3];

/// tern with a UDP/TCP listener and a TLS listener, both taking PROXY headers from
/// 127.0.0.1, two connections per client IP, a one-second handshake deadline, and the
/// admin listener.
struct Tern {
    server: TernServer,
    tcp: SocketAddr,
    tls: SocketAddr,
    admin: SocketAddr,
    cert: certs::TestCert,
    _certs: TempDir,
}

fn start_tern() -> Tern {
    let certs_dir = TempDir::new("tern-proxy-certs");
    let files = certs::CertFiles::in_dir(certs_dir.path());
    let cert = certs::TestCert::for_names(&["localhost", "127.0.0.1", "turn.example.org"]);
    cert.write(&files);
    let localhost = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let (tcp, tls, admin) = (
        localhost(free_udp_port()),
        localhost(free_udp_port()),
        localhost(free_udp_port()),
    );
    let config = format!(
        r#"
[server]
listen = [{{ addr = "{tcp}", proxy_protocol = true }}]
tls_listen = [{{ addr = "{tls}", proxy_protocol = true, auto_detect = false }}]
proxy_protocol_from = ["127.0.0.1/32"]

[tls]
handshake_timeout = 1

[limits]
max_connections_per_ip = 2

[admin]
listen = "{admin}"
token = "proxy-protocol-test-token"
"#
    );
    let mut args = vec![
        "--user".to_string(),
        format!("{USER}:{PASS}"),
        "--ports".to_string(),
        relay_ports_arg(),
        "--log-level".to_string(),
        "info".to_string(),
    ];
    args.extend(files.args());
    let server = TernBuilder::default()
        .listen_in_config(tcp)
        .config(&config)
        .args(&args)
        .start();
    Tern {
        server,
        tcp,
        tls,
        admin,
        cert,
        _certs: certs_dir,
    }
}

/// HAProxy in TCP mode: each frontend on 127.0.0.1 forwards to one backend with the
/// given `server` options (`send-proxy`, `send-proxy-v2`).
struct Haproxy {
    process: BackgroundProcess,
    frontends: Vec<SocketAddr>,
    _dir: TempDir,
}

fn start_haproxy(routes: &[(SocketAddr, &str)]) -> Haproxy {
    let mut config = String::from(
        "global\n    maxconn 64\ndefaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n",
    );
    let mut frontends = Vec::new();
    for (i, (backend, options)) in routes.iter().enumerate() {
        let front = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
        config += &format!(
            "frontend f{i}\n    bind {front}\n    default_backend b{i}\nbackend b{i}\n    server tern {backend} {options}\n"
        );
        frontends.push(front);
    }
    run_haproxy(&config, frontends)
}

/// Runs HAProxy with `config` until dropped, once it listens on every `frontends`.
fn run_haproxy(config: &str, frontends: Vec<SocketAddr>) -> Haproxy {
    let haproxy = ensure_tool("haproxy");
    let dir = TempDir::new("tern-haproxy");
    let path = dir.write("haproxy.cfg", config);
    let check = support::run_with_timeout(
        std::process::Command::new(&haproxy)
            .arg("-c")
            .arg("-f")
            .arg(&path),
        WAIT,
    );
    assert!(check.success(), "haproxy -c: {}", check.describe());
    let mut process = BackgroundProcess::spawn(
        "haproxy",
        std::process::Command::new(&haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&path),
        dir.path(),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    for front in &frontends {
        while TcpStream::connect_timeout(front, Duration::from_millis(200)).is_err() {
            process.assert_running();
            assert!(
                Instant::now() < deadline,
                "haproxy never listened on {front}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Haproxy {
        process,
        frontends,
        _dir: dir,
    }
}

/// A TCP connection from `ip` (a loopback address) to `to`.
fn connect_from(ip: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from((ip, 0)).into())
        .expect("binding a loopback source address");
    socket
        .connect_timeout(&to.into(), WAIT)
        .unwrap_or_else(|e| {
            panic!("connecting to {to}: {e}");
        });
    socket.into()
}

/// A TURN client over plain TCP from `ip` to `to`.
fn tcp_client(ip: [u8; 4], to: SocketAddr) -> TurnClient {
    let transport = ClientTransport::tcp_over(connect_from(ip, to)).expect("transport");
    TurnClient::with_transport(transport, to, USER, PASS)
}

/// A TURN client over TLS (ALPN `stun.turn`) from `ip` to `to`.
fn tls_client(ip: [u8; 4], to: SocketAddr, cert: &certs::TestCert) -> TurnClient {
    tls_client_for(ip, to, cert, "localhost", &["stun.turn"])
}

/// The same for SNI `name` and ALPN `alpn` (browsers offer none).
fn tls_client_for(
    ip: [u8; 4],
    to: SocketAddr,
    cert: &certs::TestCert,
    name: &str,
    alpn: &[&str],
) -> TurnClient {
    let config = tern::client::transport::tls_config(cert.roots()).expect("client config");
    let mut config = (*config).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let transport = ClientTransport::tls_over(connect_from(ip, to), name, Arc::new(config), WAIT)
        .expect("TLS handshake through the proxy");
    TurnClient::with_transport(transport, to, USER, PASS)
}

/// The XOR-MAPPED-ADDRESS of a Binding over `c`, or why there is none.
fn mapped(c: &mut TurnClient) -> Result<SocketAddr, String> {
    let (tid, bytes) = c.encode(METHOD_BINDING, &Outgoing::default());
    match c.exchange(tid, &bytes) {
        Ok(Some(r)) if r.is_success() => r
            .xor_address(ATTR_XORMAPPED_ADDRESS)
            .ok_or_else(|| "no XOR-MAPPED-ADDRESS".to_string()),
        Ok(Some(r)) => Err(format!("Binding answered with {:?}", r.code)),
        Ok(None) => Err("Binding not answered".into()),
        Err(e) => Err(format!("Binding failed: {e}")),
    }
}

/// Whether tern closed `stream` (read returns end of stream or an error) within WAIT.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

fn headers(t: &Tern, result: &str) -> f64 {
    metric(
        t.admin,
        &format!("tern_proxy_protocol_headers_total{{result=\"{result}\"}}"),
    )
}

/// Waits up to WAIT for `text` to appear in tern's logs.
fn wait_for_log(server: &TernServer, text: &str) {
    let deadline = Instant::now() + WAIT;
    while !server.logs().contains(text) {
        assert!(
            Instant::now() < deadline,
            "{text:?} not logged:\n{}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn haproxy_v1_and_v2_carry_the_client_address_to_tcp_and_tls() {
    let mut t = start_tern();
    let proxy = start_haproxy(&[
        (t.tcp, "send-proxy"),
        (t.tcp, "send-proxy-v2"),
        (t.tls, "send-proxy-v2"),
    ]);
    let [v1_tcp, v2_tcp, v2_tls] = proxy.frontends[..] else {
        unreachable!()
    };
    let mut clients = vec![
        ("v1, TCP", tcp_client(CLIENT_A, v1_tcp)),
        ("v2, TCP", tcp_client(CLIENT_B, v2_tcp)),
        ("v2, TLS", tls_client(CLIENT_A, v2_tls, &t.cert)),
    ];
    for (what, c) in &mut clients {
        let local = c.local_addr();
        assert_eq!(
            mapped(c),
            Ok(local),
            "{what}: tern must answer with the client's address, not HAProxy's\n{}",
            t.server.logs()
        );
        let reply = c.allocate(vec![]).expect("Allocate answered");
        assert!(reply.is_success(), "{what}: Allocate: {:?}", reply.code);
        // The allocation's log line and the session list name the client too.
        wait_for_log(&t.server, &format!("client={local}"));
        let (status, sessions) = support::http_request(
            t.admin,
            "GET",
            "/api/sessions",
            Some("proxy-protocol-test-token"),
            "",
        );
        assert_eq!(status, 200, "{sessions}");
        assert!(
            sessions.contains(&local.to_string()),
            "{what}: {local} not in the sessions: {sessions}"
        );
    }
    // HAProxy's own readiness probes (from 127.0.0.1) may add theirs.
    assert!(headers(&t, "ok") >= 3.0);
    assert!(
        !t.server.logs().contains("client=127.0.0.1:"),
        "HAProxy's own address reached the engine:\n{}",
        t.server.logs()
    );
    drop(proxy.process);
    t.server.assert_running();
}

#[test]
fn the_per_ip_connection_limit_counts_clients_behind_the_proxy_not_the_proxy() {
    let t = start_tern();
    let proxy = start_haproxy(&[(t.tcp, "send-proxy-v2")]);
    let front = proxy.frontends[0];
    // Two connections per IP: A's third is refused, B (same proxy) is not.
    let mut a1 = tcp_client(CLIENT_A, front);
    let mut a2 = tcp_client(CLIENT_A, front);
    assert!(mapped(&mut a1).is_ok(), "{}", t.server.logs());
    assert!(mapped(&mut a2).is_ok(), "{}", t.server.logs());
    let mut a3 = tcp_client(CLIENT_A, front);
    let third = mapped(&mut a3);
    assert!(
        third.is_err(),
        "a third connection from {CLIENT_A:?} was served: {third:?}"
    );
    let mut b = tcp_client(CLIENT_B, front);
    let b_addr = b.local_addr();
    assert_eq!(mapped(&mut b), Ok(b_addr), "{}", t.server.logs());
    // A's slot comes back when one of its connections closes.
    drop(a1);
    let deadline = Instant::now() + WAIT;
    loop {
        let mut again = tcp_client(CLIENT_A, front);
        if mapped(&mut again).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "A's slot never came back");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_header_from_an_untrusted_source_is_refused_and_direct_clients_are_served() {
    let t = start_tern();
    // 127.0.0.2 is not in proxy_protocol_from: its header claims another address.
    let mut forged = connect_from(CLIENT_A, t.tcp);
    forged
        .write_all(b"PROXY TCP4 198.51.100.9 127.0.0.1 4000 3478\r\n")
        .unwrap();
    assert!(
        closed_by_server(&mut forged),
        "a forged header was accepted"
    );
    wait_for_log(&t.server, "PROXY protocol header refused");
    assert_eq!(headers(&t, "untrusted"), 1.0);
    // The same source without a header is an ordinary client, on TCP and on TLS.
    let mut direct = tcp_client(CLIENT_A, t.tcp);
    let local = direct.local_addr();
    assert_eq!(mapped(&mut direct), Ok(local));
    let mut direct_tls = tls_client(CLIENT_B, t.tls, &t.cert);
    let local = direct_tls.local_addr();
    assert_eq!(mapped(&mut direct_tls), Ok(local));
}

#[test]
fn a_trusted_source_without_a_whole_valid_header_is_cut_off() {
    let t = start_tern();
    let trusted = [127, 0, 0, 1];
    // A STUN Binding request where the header should be.
    let mut missing = connect_from(trusted, t.tcp);
    let encoder = TurnClient::new(t.server.addr, USER, PASS).expect("client");
    let (_, binding) = encoder.encode(METHOD_BINDING, &Outgoing::default());
    missing.write_all(&binding).unwrap();
    assert!(closed_by_server(&mut missing), "served without a header");
    // A v1 line that is not a header.
    let mut malformed = connect_from(trusted, t.tcp);
    malformed
        .write_all(b"PROXY TCP4 not-an-address 127.0.0.1 1 2\r\n")
        .unwrap();
    assert!(
        closed_by_server(&mut malformed),
        "served after a bad header"
    );
    // Half a header, then nothing: cut off at the one-second handshake deadline.
    let mut stalled = connect_from(trusted, t.tls);
    stalled.write_all(b"PROXY TCP4 127.0.0.2").unwrap();
    let started = Instant::now();
    assert!(closed_by_server(&mut stalled), "a stalled header held on");
    assert!(started.elapsed() < Duration::from_secs(3));
    wait_for_log(&t.server, "closing connection from a trusted proxy");
    assert_eq!(headers(&t, "missing"), 1.0);
    assert_eq!(headers(&t, "malformed"), 1.0);
    assert_eq!(headers(&t, "timeout"), 1.0);
    // None of them holds a connection slot.
    let deadline = Instant::now() + WAIT;
    while metric(t.admin, "tern_connections") != 0.0 {
        assert!(
            Instant::now() < deadline,
            "connections: {}",
            metric(t.admin, "tern_connections")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// deploy/haproxy/turn-443.cfg, run as written but for its addresses: TURN clients
/// reach tern by SNI and by ALPN with their own addresses, and a browser's request for
/// the website reaches the website, whose PROXY v2 header names the client.
#[test]
fn the_deploy_haproxy_example_routes_turn_and_the_site_by_sni() {
    let t = start_tern();
    // The website: records the PROXY v2 header of one connection, then closes it.
    let site = TcpListener::bind("127.0.0.1:0").unwrap();
    let site_addr = site.local_addr().unwrap();
    let (seen_tx, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // HAProxy's readiness probe (from 127.0.0.1) may come first.
        for mut stream in site.incoming().take(8).flatten() {
            stream.set_read_timeout(Some(WAIT)).unwrap();
            let mut header = [0u8; 16];
            if stream.read_exact(&mut header).is_err() {
                continue;
            }
            let len = u16::from_be_bytes([header[14], header[15]]) as usize;
            let mut rest = vec![0u8; len];
            if stream.read_exact(&mut rest).is_err() {
                continue;
            }
            let bytes = [&header[..], &rest].concat();
            let parsed = ppp::v2::Header::try_from(&bytes[..]).map(|h| h.addresses);
            let _ = seen_tx.send(format!("{parsed:?}"));
        }
    });
    let front = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/haproxy/turn-443.cfg"),
    )
    .unwrap();
    let config = example
        .replace("bind 0.0.0.0:443", &format!("bind {front}"))
        .replace("    bind [::]:443\n", "")
        .replace("127.0.0.1:5349", &t.tls.to_string())
        .replace("127.0.0.1:8443", &site_addr.to_string());
    assert!(config.contains(&t.tls.to_string()) && config.contains(&site_addr.to_string()));
    let _proxy = run_haproxy(&config, vec![front]);

    let mut by_name = tls_client_for(CLIENT_A, front, &t.cert, "turn.example.org", &[]);
    let local = by_name.local_addr();
    assert_eq!(mapped(&mut by_name), Ok(local), "{}", t.server.logs());
    let mut by_alpn = tls_client_for(CLIENT_B, front, &t.cert, "localhost", &["stun.turn"]);
    let local = by_alpn.local_addr();
    assert_eq!(mapped(&mut by_alpn), Ok(local), "{}", t.server.logs());

    let curl = ensure_tool("curl");
    let resolve = format!("www.example.org:{}:127.0.0.1", front.port());
    let _ = support::run_with_timeout(
        std::process::Command::new(curl)
            .args([
                "-sk",
                "--max-time",
                "5",
                "--interface",
                "127.0.0.3",
                "--resolve",
            ])
            .arg(&resolve)
            .arg(format!("https://www.example.org:{}/", front.port())),
        Duration::from_secs(10),
    );
    let headers: Vec<String> = std::iter::from_fn(|| seen.recv_timeout(WAIT).ok()).collect();
    assert!(
        headers
            .iter()
            .any(|h| h.contains("source_address: 127.0.0.3,")),
        "the website's PROXY headers: {headers:?}"
    );
}

/// `server.proxy_protocol_from` applies on reload, to new connections: HAProxy's
/// headers are believed, then (its address dropped from the list) refused.
#[test]
fn a_reload_changes_which_sources_are_trusted() {
    let t = start_tern();
    let proxy = start_haproxy(&[(t.tcp, "send-proxy-v2")]);
    let front = proxy.frontends[0];
    let mut before = tcp_client(CLIENT_A, front);
    let local = before.local_addr();
    assert_eq!(mapped(&mut before), Ok(local));
    let config = t.server.dir.join("tern.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("127.0.0.1/32", "127.0.0.9/32")).unwrap();
    t.server.reload();
    let untrusted = headers(&t, "untrusted");
    let mut after = tcp_client(CLIENT_A, front);
    assert!(
        mapped(&mut after).is_err(),
        "a header from a source no longer trusted was believed"
    );
    assert!(headers(&t, "untrusted") > untrusted);
    // The connection made before the reload goes on.
    assert_eq!(mapped(&mut before), Ok(local));
}
