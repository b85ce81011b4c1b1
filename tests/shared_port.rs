//! One TLS port for TURN, the self-test page and a website (`[front]`): tern reads
//! each ClientHello and serves TURN and its self-test itself, and passes everything
//! else, TLS untouched, to the site's HTTPS server behind it, with a PROXY v1 header
//! naming the client. Checked with `curl` (Debian's package) and headless Chromium: a
//! relay-only call over `turns:` and a page load of the site, on the same port. A dead
//! or silent site costs a bounded slot and a metric, never TURN service.
//!
//! The site is a small HTTPS server in this file, with a certificate of its own, that
//! answers every request with the client address its PROXY header gave.

#[path = "support/certs.rs"]
mod certs;
#[path = "support/chromium.rs"]
mod chromium;
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stun::attributes::ATTR_XOR_RELAYED_ADDRESS;
use support::{RunOutput, TempDir, TernBuilder, TernServer, free_udp_port, metric};
use tern::client::TurnClient;
use tern::client::transport::{ClientTransport, tls_config};

const USER: &str = "alice";
const PASS: &str = "pw";
const TOKEN: &str = "shared-port-selftest-token";
const WAIT: Duration = Duration::from_secs(3);

/// How the stand-in website behaves.
#[derive(Clone, Copy)]
enum Site {
    /// Answers `site: client=ADDR` for every request.
    Answers,
    /// Takes the connection and never says a word.
    Silent,
}

/// Starts the website on a free loopback port; it serves until the test ends. Returns
/// its address and certificate.
fn start_site(behaviour: Site) -> (SocketAddr, certs::TestCert) {
    let cert = certs::TestCert::new();
    use rustls::pki_types::pem::PemObject;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())
        .expect("site key");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.der.clone()], key)
    .expect("site config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let config = Arc::new(config);
    let site_cert = cert;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64).flatten() {
            let config = config.clone();
            std::thread::spawn(move || match behaviour {
                Site::Answers => answer(stream, config),
                Site::Silent => {
                    let mut stream = stream;
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                    let mut sink = [0u8; 4096];
                    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
                }
            });
        }
    });
    (addr, site_cert)
}

/// One HTTPS request on `stream`, which starts with a PROXY v1 line.
fn answer(stream: TcpStream, config: Arc<rustls::ServerConfig>) {
    let _ = stream.set_read_timeout(Some(WAIT));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || !line.starts_with("PROXY TCP") {
        return;
    }
    // PROXY TCP4 SRC DST SPORT DPORT
    let parts: Vec<&str> = line.split_whitespace().collect();
    let client = format!("{}:{}", parts[2], parts[4]);
    let conn = rustls::ServerConnection::new(config).unwrap();
    // Whatever BufReader read past the line belongs to the TLS stream.
    let ahead = reader.buffer().to_vec();
    let mut tls = rustls::StreamOwned::new(conn, Prefixed { ahead, stream });
    let mut request = Vec::new();
    let mut buf = [0u8; 2048];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match tls.read(&mut buf) {
            Ok(n) if n > 0 => request.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    let body = format!("site: client={client}\n");
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tls.write_all(response.as_bytes());
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

/// A TCP stream that first yields bytes already read from it.
struct Prefixed {
    ahead: Vec<u8>,
    stream: TcpStream,
}

impl Read for Prefixed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.ahead.is_empty() {
            return self.stream.read(buf);
        }
        let n = buf.len().min(self.ahead.len());
        buf[..n].copy_from_slice(&self.ahead[..n]);
        self.ahead.drain(..n);
        Ok(n)
    }
}

impl Write for Prefixed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush()
    }
}

/// tern with UDP/TCP on its `addr`, the shared TLS port, the self-test page for
/// `localhost`, and `[front]` sending everything else to `upstream`.
struct Shared {
    server: TernServer,
    tls: SocketAddr,
    admin: SocketAddr,
    cert: certs::TestCert,
    _certs: TempDir,
}

fn front_config(upstream: SocketAddr, selftest: SocketAddr, admin: SocketAddr) -> String {
    format!(
        r#"
[front]
upstream = "{upstream}"
upstream_proxy_protocol = "v1"
idle_timeout = 2
connect_timeout = 2

[selftest]
listen = "{selftest}"
token = "{TOKEN}"
public_host = "localhost"

[admin]
listen = "{admin}"
"#
    )
}

fn start_shared(upstream: SocketAddr) -> Shared {
    let dir = TempDir::new("tern-shared-certs");
    let files = certs::CertFiles::in_dir(dir.path());
    let cert = certs::TestCert::new();
    cert.write(&files);
    let localhost = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let tls = localhost(free_udp_port());
    let admin = localhost(free_udp_port());
    let selftest = localhost(free_udp_port());
    let mut args = vec![
        "--user".to_string(),
        format!("{USER}:{PASS}"),
        "--allow-peer".to_string(),
        "127.0.0.0/8".to_string(),
        "--ports".to_string(),
        support::relay_ports_arg(),
        "--tls-listen".to_string(),
        tls.to_string(),
    ];
    args.extend(files.args());
    let server = TernBuilder::default()
        .config(&front_config(upstream, selftest, admin))
        .args(&args)
        .start();
    Shared {
        server,
        tls,
        admin,
        cert,
        _certs: dir,
    }
}

/// `curl -sk` for `url` with extra args, bounded.
fn curl(args: &[&str]) -> RunOutput {
    let curl = support::ensure_tool("curl");
    support::run_with_timeout(
        Command::new(curl)
            .args(["-sk", "--max-time", "10"])
            .args(args),
        Duration::from_secs(15),
    )
}

/// An Allocate over TLS to the shared port, offering `alpn` (none, as browsers).
fn turn_over_tls(s: &Shared, alpn: &[&str]) -> Result<SocketAddr, String> {
    let mut config = (*tls_config(s.cert.roots()).map_err(|e| e.to_string())?).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let transport = ClientTransport::tls_with_config(s.tls, "localhost", Arc::new(config), WAIT)
        .map_err(|e| format!("TLS to the shared port: {e}"))?;
    let mut c = TurnClient::with_transport(transport, s.tls, USER, PASS);
    let reply = c.allocate(vec![]).map_err(|e| e.to_string())?;
    reply
        .xor_address(ATTR_XOR_RELAYED_ADDRESS)
        .ok_or_else(|| format!("Allocate refused: {:?}", reply.code))
}

fn routed(s: &Shared, route: &str) -> f64 {
    metric(
        s.admin,
        &format!("tern_front_routed_total{{route=\"{route}\"}}"),
    )
}

fn failures(s: &Shared, reason: &str) -> f64 {
    metric(
        s.admin,
        &format!("tern_front_failures_total{{reason=\"{reason}\"}}"),
    )
}

#[test]
fn curl_reaches_the_site_and_the_self_test_while_turn_clients_reach_tern() {
    let (site, site_cert) = start_site(Site::Answers);
    let s = start_shared(site);
    let url = format!("https://127.0.0.1:{}/", s.tls.port());
    // HTTP/2 and HTTP/1.1 offers both go to the site, which sees the real client.
    for version in ["--http2", "--http1.1"] {
        let out = curl(&[version, "--interface", "127.0.0.2", &url]);
        assert!(out.success(), "curl {version}: {}", out.describe());
        assert!(
            out.stdout.starts_with("site: client=127.0.0.2:"),
            "curl {version} got {:?}\n{}",
            out.stdout,
            s.server.logs()
        );
    }
    // The site's own certificate, not tern's: TLS is passed through untouched.
    let handshake = |roots: &certs::TestCert| {
        let mut config = (*tls_config(roots.roots()).unwrap()).clone();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // By address, so no SNI: "localhost" is the self-test page's name.
        ClientTransport::tls_with_config(s.tls, "127.0.0.1", Arc::new(config), WAIT).is_ok()
    };
    assert!(
        handshake(&site_cert),
        "the site's certificate was not served"
    );
    assert!(
        !handshake(&s.cert),
        "tern's certificate was served to a browser"
    );
    // TURN over TLS on the same port: with `stun.turn`, and with no ALPN at all.
    for alpn in [&["stun.turn"][..], &[][..]] {
        let relay = turn_over_tls(&s, alpn).unwrap_or_else(|e| panic!("{alpn:?}: {e}"));
        assert!(relay.ip().is_loopback(), "{relay}");
    }
    // Plain TURN over TCP on the TLS port (tls.auto_detect) is not a ClientHello: tern.
    let mut plain = TurnClient::connect_tcp(s.tls, USER, PASS).expect("TCP to the shared port");
    let reply = plain.allocate(vec![]).expect("Allocate over TCP answered");
    assert!(reply.is_success(), "TCP Allocate: {:?}", reply.code);
    // The self-test page, by its host name.
    let resolve = format!("localhost:{}:127.0.0.1", s.tls.port());
    let page = format!("https://localhost:{}/check?token={TOKEN}", s.tls.port());
    let out = curl(&[
        "--resolve",
        &resolve,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &page,
    ]);
    assert_eq!(out.stdout, "200", "self-test page: {}", out.describe());
    // Two curl requests, two handshakes.
    assert_eq!(routed(&s, "upstream"), 4.0);
    assert_eq!(routed(&s, "tern"), 2.0);
    assert_eq!(routed(&s, "selftest"), 1.0);
}

#[test]
fn a_dead_or_silent_site_costs_a_bounded_slot_and_never_turn() {
    // Nothing listens on `dead`.
    let dead = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let mut s = start_shared(dead);
    let url = format!("https://127.0.0.1:{}/", s.tls.port());
    let out = curl(&[&url]);
    assert!(
        !out.success(),
        "curl reached a dead site: {}",
        out.describe()
    );
    assert_eq!(failures(&s, "upstream_refused"), 1.0);
    assert!(
        s.server
            .logs()
            .contains("shared TLS port: cannot connect to"),
        "no warning about the dead site:\n{}",
        s.server.logs()
    );
    turn_over_tls(&s, &[]).expect("TURN while the site is down");

    // A site that takes connections and never answers: cut off after idle_timeout.
    let (silent, _) = start_site(Site::Silent);
    let config_path = s.server.dir.join("tern.toml");
    let text = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        text.replace(&dead.to_string(), &silent.to_string()),
    )
    .unwrap();
    s.server.reload();
    let started = Instant::now();
    let out = curl(&[&url]);
    let took = started.elapsed();
    assert!(!out.success(), "a silent site answered: {}", out.describe());
    assert!(
        (Duration::from_millis(1500)..Duration::from_secs(8)).contains(&took),
        "closed after {took:?}, idle_timeout is 2 s"
    );
    let deadline = Instant::now() + WAIT;
    while metric(s.admin, "tern_connections") != 0.0 {
        assert!(Instant::now() < deadline, "the slot was never given back");
        std::thread::sleep(Duration::from_millis(50));
    }
    turn_over_tls(&s, &["stun.turn"]).expect("TURN after the silent site");
    s.server.assert_running();
}

#[test]
fn chromium_calls_over_turns_and_loads_the_site_on_the_same_port() {
    let node = chromium::require_browser_deps();
    let (site, _) = start_site(Site::Answers);
    let mut s = start_shared(site);
    let mut cmd = chromium::driver(&node, "run.mjs");
    cmd.arg(s.server.addr.ip().to_string())
        .arg(s.server.port().to_string())
        .arg(s.tls.port().to_string())
        .arg(USER)
        .arg(PASS)
        .args(["--runs", "tls", "--visit"])
        .arg(format!("https://127.0.0.1:{}/", s.tls.port()));
    let out = support::run_with_timeout(&mut cmd, Duration::from_secs(120));
    let context = format!("{}\n{}", out.describe(), s.server.logs());
    let results: Vec<serde_json::Value> = chromium::json_lines(&out.stdout);
    let run = |name: &str| {
        results
            .iter()
            .find(|r| r["run"] == name)
            .unwrap_or_else(|| panic!("no {name} result\n{context}"))
            .clone()
    };
    let tls = run("tls");
    assert_eq!(tls["pass"], true, "{tls}\n{context}");
    for side in ["selectedA", "selectedB"] {
        assert_eq!(tls[side]["local"]["relayProtocol"], "tls", "{tls}");
    }
    assert_eq!(tls["receivedAB"], 50, "{tls}");
    let visit = run("visit");
    assert_eq!(visit["pass"], true, "{visit}\n{context}");
    assert!(
        visit["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("site: client=127.0.0.1:")),
        "{visit}"
    );
    eprintln!(
        "shared port: turns: data channel open after {} ms; site page: {}",
        tls["openMs"], visit["text"]
    );
    assert!(out.success(), "{context}");
    assert!(routed(&s, "tern") >= 2.0, "two relay-only TURN clients");
    assert!(routed(&s, "upstream") >= 1.0);
    s.server.assert_running();
}
