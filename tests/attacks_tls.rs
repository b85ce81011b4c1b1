//! TLS attacks against a running `tern serve` on loopback: renegotiation, handshakes
//! that never finish (they are cut at `tls.handshake_timeout` and give back their
//! connection slot), a client that sends but never reads, and 0-RTT early data.
//!
//! TLS versions (1.0 and 1.1 refused, 1.2 and 1.3 accepted) and plain TCP on the TLS
//! port (auto-detection) are covered by `tests/stream_transports.rs`; the idle, frame
//! and one-byte handshake deadlines by `tests/stream_limits.rs`.

#[path = "support/certs.rs"]
mod certs;
mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use certs::{CertFiles, TestCert};
use stun::message::METHOD_BINDING;
use support::{TempDir, TernServer, ensure_tool, free_udp_port, metric, relay_ports_arg};
use tern::client::transport::tls_config;
use tern::client::{ClientTransport, Outgoing, TurnClient};

const USER: &str = "alice";
const PASS: &str = "wonderland";
/// `tls.handshake_timeout` of the servers here.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// A server with two TLS listeners, one recognising plain TCP too (auto-detect, the
/// default) and one TLS only, and its admin listener.
struct TlsServer {
    server: TernServer,
    detecting: SocketAddr,
    tls_only: SocketAddr,
    admin: SocketAddr,
    cert: TestCert,
    /// Holds the certificate files.
    _dir: TempDir,
}

impl TlsServer {
    /// `extra` ends the config file (after its `[server]` and `[tls]` tables).
    fn start(extra: &str) -> TlsServer {
        let dir = TempDir::new("tern-attacks-tls");
        let files = CertFiles::in_dir(dir.path());
        let cert = TestCert::new();
        cert.write(&files);
        let [detecting, tls_only, admin] =
            [(); 3].map(|()| SocketAddr::from(([127, 0, 0, 1], free_udp_port())));
        let config = format!(
            "[server]\ntls_listen = [\"{detecting}\", {{ addr = \"{tls_only}\", auto_detect = false }}]\n\
             [tls]\nhandshake_timeout = {}\n{extra}\n",
            HANDSHAKE_TIMEOUT.as_secs()
        );
        let mut args = vec![
            "--user".to_string(),
            format!("{USER}:{PASS}"),
            "--ports".to_string(),
            relay_ports_arg(),
            "--admin".to_string(),
            admin.to_string(),
        ];
        args.extend(files.args());
        let server = TernServer::builder().config(&config).args(&args).start();
        TlsServer {
            server,
            detecting,
            tls_only,
            admin,
            cert,
            _dir: dir,
        }
    }

    fn connections(&self) -> f64 {
        metric(self.admin, "tern_connections")
    }

    /// Waits up to 2 s for the server to hold no TCP/TLS connection.
    fn wait_until_no_connections(&self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.connections() > 0.0 {
            assert!(
                Instant::now() < deadline,
                "connections still open after 2 s\n{}",
                self.server.logs()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// A Binding over a new TLS connection to `addr` is answered.
    fn serves_tls(&self, addr: SocketAddr) -> Result<(), String> {
        let mut c = TurnClient::connect_tls(addr, "localhost", self.cert.roots(), USER, PASS)
            .map_err(|e| format!("TLS connection to {addr}: {e}"))?;
        let (tid, request) = c.encode(METHOD_BINDING, &Outgoing::default());
        match c.exchange(tid, &request) {
            Ok(Some(r)) if r.is_success() => Ok(()),
            other => Err(format!("Binding over TLS to {addr}: {other:?}")),
        }
    }
}

/// When the server closed `stream` (EOF or reset), counted from `since`; `None` if it
/// was still open at `since + limit`. What the server sent meanwhile is discarded.
fn closed_after(stream: &mut TcpStream, since: Instant, limit: Duration) -> Option<Duration> {
    let deadline = since + limit;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return Some(since.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(since.elapsed()),
        }
    }
}

/// The first flight of a real TLS client: its ClientHello record.
fn client_hello(cert: &TestCert) -> Vec<u8> {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(tls_config(cert.roots()).unwrap(), name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    assert_eq!(hello[0], 0x16, "a handshake record");
    hello
}

// ---------------------------------------------------------------------------------------
// Handshakes that never finish
// ---------------------------------------------------------------------------------------

/// Three ways to start a TLS connection and never finish: say nothing, send half a
/// ClientHello, or send a whole one (the server answers and waits for the client's
/// Finished). On both kinds of TLS listener each is closed at the handshake deadline,
/// and meanwhile counts against the per-IP cap (3 here: a fourth connection is turned
/// away at once); after the deadline the slots are free for a real client.
#[test]
fn unfinished_handshakes_are_cut_at_the_deadline_and_free_their_slots() {
    let s = TlsServer::start("[limits]\nmax_connections_per_ip = 3");
    let hello = client_hello(&s.cert);
    let stalls: [(&str, &[u8]); 3] = [
        ("nothing", &[]),
        ("half a ClientHello", &hello[..hello.len() / 2]),
        ("a whole ClientHello", &hello),
    ];
    for (listener, addr) in [("auto-detecting", s.detecting), ("TLS-only", s.tls_only)] {
        // The previous round's client has closed; the server lets go of it meanwhile.
        s.wait_until_no_connections();
        let opened = Instant::now();
        let watchers: Vec<_> = stalls
            .iter()
            .map(|&(what, bytes)| {
                let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
                stream.write_all(bytes).unwrap();
                let since = Instant::now();
                thread::spawn(move || {
                    (
                        what,
                        closed_after(&mut stream, since, Duration::from_secs(6)),
                    )
                })
            })
            .collect();
        // The cap is reached: a fourth connection is closed before its handshake.
        thread::sleep(Duration::from_millis(200));
        let mut fourth = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
        let _ = fourth.write_all(&hello);
        let refused = closed_after(&mut fourth, Instant::now(), Duration::from_secs(1));
        assert!(
            refused.is_some_and(|d| d < HANDSHAKE_TIMEOUT / 2),
            "{listener}: a fourth connection from the IP was not turned away ({refused:?})"
        );
        for watcher in watchers {
            let (what, closed) = watcher.join().unwrap();
            println!("{listener} listener, {what} then silence: closed after {closed:.2?}");
            let closed = closed.unwrap_or_else(|| {
                panic!(
                    "{listener}: {what}: still open after 6 s\n{}",
                    s.server.logs()
                )
            });
            assert!(
                closed >= HANDSHAKE_TIMEOUT - Duration::from_millis(300)
                    && closed <= HANDSHAKE_TIMEOUT + Duration::from_secs(1),
                "{listener}: {what}: closed after {closed:.2?}, the deadline is {HANDSHAKE_TIMEOUT:?}"
            );
        }
        s.wait_until_no_connections();
        s.serves_tls(addr)
            .unwrap_or_else(|e| panic!("{listener}: {e}"));
        println!(
            "{listener} listener: serving again {:.2?} after the stalls began",
            opened.elapsed()
        );
    }
}

// ---------------------------------------------------------------------------------------
// A TLS client that sends and never reads
// ---------------------------------------------------------------------------------------

/// A TLS client without credentials that pipelines Binding requests and never reads
/// the answers is disconnected (when its answers overflow its write queue, or a write
/// to it waits `frame_timeout`), and the slot it held (the only one for its IP here) is
/// free again at once. The limit on answers to unauthenticated sources is off: it
/// would only slow the client down (the idle timeout then ends the connection).
#[test]
fn tls_client_that_never_reads_is_let_go() {
    let s = TlsServer::start(
        "[auth]\nunauthorized_per_second = 0\n[limits]\nmax_connections_per_ip = 1\nframe_timeout = 2",
    );
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket
        .connect_timeout(&s.tls_only.into(), Duration::from_secs(2))
        .unwrap();
    let config = tls_config(s.cert.roots()).unwrap();
    let transport =
        ClientTransport::tls_over(socket.into(), "localhost", config, Duration::from_secs(2))
            .unwrap();
    let mut c = TurnClient::with_transport(transport, s.tls_only, "", "");
    // Fifty Bindings a millisecond.
    let burst = c.encode(METHOD_BINDING, &Outgoing::default()).1.repeat(50);
    let start = Instant::now();
    let (mut sent, mut closed) = (0usize, None);
    for round in 0.. {
        if start.elapsed() > Duration::from_secs(12) {
            break;
        }
        if c.send_raw(&burst).is_ok() {
            sent += 50;
        }
        thread::sleep(Duration::from_millis(1));
        if round % 100 == 99 && s.connections() == 0.0 {
            closed = Some(start.elapsed());
            break;
        }
    }
    println!(
        "a TLS client sending Bindings without reading: closed after {closed:.2?}, \
         {sent} Bindings sent"
    );
    let closed = closed.unwrap_or_else(|| {
        panic!(
            "a client that never reads was still connected after 12 s\n{}",
            s.server.logs()
        )
    });
    assert!(
        closed < Duration::from_secs(5),
        "closed only after {closed:.2?}"
    );
    s.serves_tls(s.tls_only)
        .unwrap_or_else(|e| panic!("the IP's only slot is still taken: {e}"));
}

// ---------------------------------------------------------------------------------------
// openssl s_client: renegotiation and early data
// ---------------------------------------------------------------------------------------

/// What `openssl s_client` printed, and whether it ended on its own.
struct SClient {
    output: String,
    ended_by_itself: bool,
}

impl SClient {
    /// Lines of `-msg` output going `direction` (">>>" sent, "<<<" received) that end
    /// with `what` (", ServerHello" does not match "ServerHelloDone").
    fn messages(&self, direction: &str, what: &str) -> usize {
        self.output
            .lines()
            .filter(|l| l.starts_with(direction) && l.ends_with(what))
            .count()
    }
}

/// Runs `openssl s_client -connect ADDR ARGS...`, writes `input` to its standard input
/// after 500 ms, and closes that input (s_client then says goodbye and exits) once
/// `hold` has passed since the start, unless s_client ended by itself; killed if it is
/// still running 2 s later.
fn s_client(addr: SocketAddr, args: &[&str], input: &str, hold: Duration) -> SClient {
    let mut child = Command::new(ensure_tool("openssl"))
        .args(["s_client", "-connect", &addr.to_string()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning openssl s_client");
    let read_all = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = r.read_to_string(&mut text);
            text
        })
    };
    let out = read_all(Box::new(child.stdout.take().unwrap()));
    let err = read_all(Box::new(child.stderr.take().unwrap()));
    let mut stdin = Some(child.stdin.take().unwrap());
    let start = Instant::now();
    thread::sleep(Duration::from_millis(500));
    let _ = stdin.as_mut().unwrap().write_all(input.as_bytes());
    let mut ended_by_itself = false;
    loop {
        if child.try_wait().unwrap().is_some() {
            ended_by_itself = stdin.is_some();
            break;
        }
        if start.elapsed() > hold {
            drop(stdin.take());
        }
        if start.elapsed() > hold + Duration::from_secs(2) {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    SClient {
        output: format!("{}{}", out.join().unwrap(), err.join().unwrap()),
        ended_by_itself,
    }
}

/// A TLS 1.2 client asks to renegotiate (s_client's `R`): the server answers with a
/// `no_renegotiation` warning and no new handshake (rustls never renegotiates, so
/// renegotiation costs it no work), and the client gives up. The alert leaves with the
/// next thing the server writes: here its close at `connection_idle_timeout`.
#[test]
fn renegotiation_is_refused() {
    let s = TlsServer::start("[limits]\nconnection_idle_timeout = 2");
    let ran = s_client(
        s.tls_only,
        &["-tls1_2", "-msg"],
        "R\n",
        Duration::from_secs(8),
    );
    let described = format!("--- s_client ---\n{}", ran.output);
    assert!(
        ran.output.contains("New, TLSv1.2"),
        "no TLS 1.2 handshake\n{described}"
    );
    assert!(
        ran.output.contains("RENEGOTIATING"),
        "s_client did not try\n{described}"
    );
    assert_eq!(
        ran.messages(">>>", ", ClientHello"),
        2,
        "the client sent no second ClientHello\n{described}"
    );
    assert_eq!(
        ran.messages("<<<", ", ServerHello"),
        1,
        "the server answered the renegotiation with a handshake\n{described}"
    );
    assert_eq!(
        ran.messages("<<<", "warning no_renegotiation"),
        1,
        "the server did not refuse with no_renegotiation\n{described}"
    );
    assert!(
        ran.ended_by_itself,
        "s_client was still waiting after 8 s\n{described}"
    );
}

/// 0-RTT data can be replayed by anyone who captured it, so the server takes none:
/// its session tickets allow no early data and a resumed session's early data is not
/// sent. Resumption itself works.
#[test]
fn no_early_data_is_accepted() {
    let s = TlsServer::start("");
    let dir = TempDir::new("tern-attacks-tls-session");
    let session = dir.join("session.pem");
    let early = dir.join("early.txt");
    std::fs::write(&early, b"replayable").unwrap();
    let session_arg = session.to_str().unwrap();
    let first = s_client(
        s.tls_only,
        &["-tls1_3", "-sess_out", session_arg],
        "",
        Duration::from_secs(1),
    );
    let tickets: Vec<&str> = first
        .output
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Max Early Data: "))
        .collect();
    assert!(
        !tickets.is_empty() && tickets.iter().all(|&max| max == "0"),
        "session tickets allowing early data: {tickets:?}\n{}",
        first.output
    );
    assert!(session.exists(), "no session was saved:\n{}", first.output);
    let resumed = s_client(
        s.tls_only,
        &[
            "-tls1_3",
            "-sess_in",
            session_arg,
            "-early_data",
            early.to_str().unwrap(),
        ],
        "",
        Duration::from_secs(2),
    );
    assert!(
        resumed.output.contains("Reused, TLSv1.3"),
        "the session was not resumed:\n{}",
        resumed.output
    );
    assert!(
        resumed.output.contains("Early data was not sent")
            || resumed.output.contains("Early data was rejected"),
        "early data was accepted:\n{}",
        resumed.output
    );
}
