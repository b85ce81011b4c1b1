//! TURN over DTLS against a running `tern serve` on loopback: coturn's
//! `turnutils_uclient` relaying through a DTLS listener (`-S` without `-t`), `openssl
//! s_client -dtls1_2` completing a handshake and seeing the certificate (before and
//! after a SIGHUP that replaced it), a session's close_notify ending its allocation,
//! the stateless cookie exchange (a ClientHello
//! without a cookie leaves nothing behind), the cap on handshakes in progress, garbage
//! on the DTLS port, and the configuration checks.
//!
//! Needs coturn's tools and openssl on PATH (`scripts/install-test-deps.sh`). Only
//! 127.0.0.1 is used; every process and loop is bounded.

#[path = "support/certs.rs"]
mod certs;
#[path = "support/coturn.rs"]
mod coturn;
mod support;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use certs::{CertFiles, TestCert};
use openssl::ssl::{Ssl, SslContext, SslMethod, SslOptions, SslStream, SslVerifyMode};
use stun::attributes::ATTR_NONCE;
use stun::message::{CLASS_SUCCESS_RESPONSE, METHOD_ALLOCATE};
use support::{
    LOCALHOST_V4, RunOutput, TempDir, TernServer, UclientSummary, ensure_tool, free_udp_port,
    metric, relay_ports_arg, run_tern, run_with_timeout,
};
use tern::client::{Attr, TurnClient, signed};
use tern::proto::Request;

const USER: &str = "alice";
const PASS: &str = "wonderland";
/// `tls.handshake_timeout` of the servers here.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// A server with a DTLS listener (and its admin listener), serving a fresh self-signed
/// certificate.
struct DtlsServer {
    server: TernServer,
    dtls: SocketAddr,
    admin: SocketAddr,
    cert: TestCert,
    files: CertFiles,
    /// Holds the certificate files.
    _dir: TempDir,
}

impl DtlsServer {
    /// `extra` ends the config file (after its `[server]` and `[tls]` tables).
    fn start(extra: &str) -> DtlsServer {
        let dir = TempDir::new("tern-dtls");
        let files = CertFiles::in_dir(dir.path());
        let cert = TestCert::new();
        cert.write(&files);
        let [dtls, admin] = [(); 2].map(|()| SocketAddr::from(([127, 0, 0, 1], free_udp_port())));
        let config = format!(
            "[server]\ntls_listen = []\ndtls_listen = [\"{dtls}\"]\n[tls]\nhandshake_timeout = {}\n{extra}\n",
            HANDSHAKE_TIMEOUT.as_secs()
        );
        let mut args = vec![
            "--user".to_string(),
            format!("{USER}:{PASS}"),
            "--allow-peer".to_string(),
            "127.0.0.0/8".to_string(),
            "--ports".to_string(),
            relay_ports_arg(),
            "--admin".to_string(),
            admin.to_string(),
        ];
        args.extend(files.args());
        let server = TernServer::builder().config(&config).args(&args).start();
        DtlsServer {
            server,
            dtls,
            admin,
            cert,
            files,
            _dir: dir,
        }
    }

    fn metric(&self, name: &str) -> f64 {
        metric(self.admin, name)
    }

    /// Waits (at most 10 s) until the sample `name` reads `value`.
    fn wait_for_metric(&self, name: &str, value: f64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.metric(name) != value {
            assert!(
                Instant::now() < deadline,
                "{name} is {} after 10 s, not {value}\n{}",
                self.metric(name),
                self.server.logs()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Independent clients: coturn's uclient and openssl s_client
// ---------------------------------------------------------------------------------------

/// `turnutils_uclient -S` (TLS without `-t`: DTLS over UDP) with 5 clients of 50
/// messages each relays everything through tern to `turnutils_peer` and back, and tern
/// counts those allocations as DTLS ones.
#[test]
fn uclient_relays_over_dtls_without_loss() {
    let s = DtlsServer::start("");
    let peer = coturn::start_peer(LOCALHOST_V4);
    let args = [
        &[
            "-S", "-n", "50", "-m", "5", "-l", "120", "-u", USER, "-w", PASS,
        ][..],
        &peer.args(),
    ]
    .concat();
    let out = coturn::run_uclient(s.dtls, &args);
    let text = out.combined();
    let summary = UclientSummary::parse(&text)
        .unwrap_or_else(|| panic!("no uclient summary\n{text}\n{}", s.server.logs()));
    assert!(out.success(), "{}\n{}", out.describe(), s.server.logs());
    assert_eq!(
        (summary.lost_packets, summary.send_dropped),
        (0, 0),
        "{text}"
    );
    assert_eq!(summary.tot_send_msgs, summary.tot_recv_msgs, "{text}");
    assert!(summary.tot_recv_msgs >= 250, "{text}");
    assert!(
        text.contains("method=DTLSv1.2"),
        "uclient did not use DTLS\n{text}"
    );
    assert!(s.metric("tern_dtls_handshakes_total{result=\"ok\"}") >= 5.0);
    let logs = s.server.logs();
    let dtls_records = logs
        .lines()
        .filter(|l| l.contains("allocation usage") && l.contains("transport=dtls"))
        .count();
    assert!(
        dtls_records >= 5,
        "usage records of DTLS allocations\n{logs}"
    );
    println!("uclient over DTLS: {summary:?}");
}

/// Runs `openssl s_client -dtls1_2 -connect ADDR` with its input closed: it completes the
/// handshake, prints the server's certificate and leaves.
fn s_client(addr: SocketAddr) -> RunOutput {
    let mut cmd = Command::new(ensure_tool("openssl"));
    cmd.args(["s_client", "-dtls1_2", "-connect", &addr.to_string()]);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(15));
    assert!(
        !out.timed_out,
        "s_client did not finish\n{}",
        out.describe()
    );
    out
}

/// The base64 of the first PEM certificate in `text`, whitespace removed.
fn first_certificate(text: &str) -> Option<String> {
    let begin = "-----BEGIN CERTIFICATE-----";
    let start = text.find(begin)? + begin.len();
    let end = start + text[start..].find("-----END CERTIFICATE-----")?;
    Some(text[start..end].split_whitespace().collect())
}

/// `openssl s_client -dtls1_2` completes a handshake and is shown the configured
/// certificate; after the files are replaced and tern gets a SIGHUP, a new handshake is
/// shown the new one.
#[test]
fn s_client_handshakes_and_sees_the_certificate_swapped_on_reload() {
    let s = DtlsServer::start("");
    let out = s_client(s.dtls);
    let text = out.combined();
    assert!(text.contains("Protocol  : DTLSv1.2"), "{text}");
    assert_eq!(
        first_certificate(&text),
        first_certificate(&s.cert.cert_pem),
        "{text}"
    );
    s.wait_for_metric("tern_dtls_handshakes_total{result=\"ok\"}", 1.0);

    let renewed = TestCert::new();
    renewed.write(&s.files);
    s.server.reload();
    let text = s_client(s.dtls).combined();
    assert_eq!(
        first_certificate(&text),
        first_certificate(&renewed.cert_pem),
        "the renewed certificate is not served after SIGHUP\n{text}\n{}",
        s.server.logs()
    );
}

// ---------------------------------------------------------------------------------------
// A session and its allocation
// ---------------------------------------------------------------------------------------

/// What a DTLS client reads and writes through: a UDP socket connected to the server,
/// one datagram per read and per write.
#[derive(Debug)]
struct Connected(UdpSocket);

impl Read for Connected {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.recv(buf)
    }
}

impl Write for Connected {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Sends `request` in a record of its own and parses the record that answers it.
fn exchange(dtls: &mut SslStream<Connected>, request: &[u8]) -> Request {
    dtls.ssl_write(request).expect("DTLS write");
    let mut record = [0u8; 2048];
    let n = dtls.ssl_read(&mut record).expect("an answer over DTLS");
    Request::parse(&record[..n]).expect("a STUN answer")
}

/// An allocation made over DTLS lives as long as its session: the client's
/// close_notify deletes it (RFC 8656 §3.1, as a closed TCP/TLS connection does).
#[test]
fn closing_the_dtls_session_ends_its_allocation() {
    let s = DtlsServer::start("");
    // The realm, learnt over UDP; the nonce is bound to the transport, so the DTLS
    // session gets its own.
    let mut client = TurnClient::new(s.server.addr, USER, PASS).unwrap();
    assert!(client.allocate(vec![]).unwrap().is_success());
    let mut context = SslContext::builder(SslMethod::dtls()).unwrap();
    context.set_verify(SslVerifyMode::NONE);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(s.dtls).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let ssl = Ssl::new(&context.build()).unwrap();
    let mut dtls = ssl.connect(Connected(socket)).expect("DTLS handshake");
    let allocate = signed(vec![Attr::udp_transport()]);
    let (_, request) = client.encode(METHOD_ALLOCATE, &allocate);
    let challenge = exchange(&mut dtls, &request);
    let nonce = challenge
        .attr(ATTR_NONCE)
        .expect("a 401 or 438 with a NONCE");
    client.set_nonce(std::str::from_utf8(nonce).unwrap());
    let (_, request) = client.encode(METHOD_ALLOCATE, &allocate);
    let answer = exchange(&mut dtls, &request);
    assert_eq!(answer.class(), CLASS_SUCCESS_RESPONSE, "{:?}", answer);
    let dtls_allocations = "tern_allocations{transport=\"dtls\",family=\"ipv4\"}";
    assert_eq!(s.metric(dtls_allocations), 1.0);
    assert_eq!(s.metric("tern_connections"), 1.0);

    dtls.shutdown().expect("close_notify");
    s.wait_for_metric(dtls_allocations, 0.0);
    s.wait_for_metric("tern_connections", 0.0);
    let logs = s.server.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("allocation usage") && l.contains("transport=dtls")),
        "{logs}"
    );
}

// ---------------------------------------------------------------------------------------
// Bounds: the cookie exchange, the handshake cap, garbage
// ---------------------------------------------------------------------------------------

/// What an OpenSSL DTLS client reads through: the server's datagrams, but at most
/// `reads_left` of them, so the client stops where a test wants it to.
struct Stalling {
    socket: UdpSocket,
    reads_left: usize,
}

impl Read for Stalling {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.reads_left == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.reads_left -= 1;
        self.socket.recv(buf)
    }
}

impl Write for Stalling {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.socket.send(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A DTLS 1.2 client of `server` (from a fresh port) that has sent its first
/// ClientHello and, with `reads` 1, read the HelloVerifyRequest and sent the
/// ClientHello with the cookie; then it stops.
fn stalled_client(server: SocketAddr, reads: usize) -> SslStream<Stalling> {
    let mut context = SslContext::builder(SslMethod::dtls()).unwrap();
    context.set_verify(SslVerifyMode::NONE);
    context.set_options(SslOptions::NO_QUERY_MTU);
    let mut ssl = Ssl::new(&context.build()).unwrap();
    ssl.set_connect_state();
    ssl.set_mtu(1200).unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(server).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut stream = SslStream::new(
        ssl,
        Stalling {
            socket,
            reads_left: reads,
        },
    )
    .unwrap();
    let stopped = stream.do_handshake();
    assert!(stopped.is_err(), "the handshake cannot complete");
    stream
}

/// A ClientHello without a cookie is answered with a HelloVerifyRequest (handshake
/// type 3) and nothing else: no handshake starts, no session or connection is counted.
#[test]
fn a_client_hello_without_cookie_gets_a_hello_verify_request_and_no_state() {
    let s = DtlsServer::start("");
    let client = stalled_client(s.dtls, 0);
    let mut reply = [0u8; 2048];
    let n = client.get_ref().socket.recv(&mut reply).expect("an answer");
    // Record header: type 22 (handshake), version, epoch, sequence, length (13 bytes);
    // then the handshake header, starting with its type.
    assert!(n > 13 + 12, "{:?}", &reply[..n]);
    assert_eq!((reply[0], reply[13]), (22, 3), "not a HelloVerifyRequest");
    s.wait_for_metric("tern_dtls_hello_verify_requests_total", 1.0);
    assert_eq!(s.metric("tern_dtls_handshakes_in_progress"), 0.0);
    assert_eq!(s.metric("tern_connections"), 0.0);
    let started = s.metric("tern_dtls_handshakes_total{result=\"ok\"}")
        + s.metric("tern_dtls_handshakes_total{result=\"failed\"}")
        + s.metric("tern_dtls_handshakes_total{result=\"timeout\"}");
    assert_eq!(started, 0.0, "a handshake was started without a cookie");
}

/// With `limits.max_dtls_handshakes = 2`, three clients that echo their cookie and
/// then go silent: two handshakes start, the third client is turned away; the two are
/// cut at `tls.handshake_timeout` and give their places back, and a full handshake
/// works again.
#[test]
fn handshakes_beyond_the_cap_are_refused_and_stalled_ones_time_out() {
    let s = DtlsServer::start("[limits]\nmax_dtls_handshakes = 2\n");
    let _clients: Vec<_> = (0..3).map(|_| stalled_client(s.dtls, 1)).collect();
    s.wait_for_metric("tern_dtls_refused_total{reason=\"handshake_limit\"}", 1.0);
    assert_eq!(s.metric("tern_dtls_hello_verify_requests_total"), 3.0);
    s.wait_for_metric("tern_dtls_handshakes_total{result=\"timeout\"}", 2.0);
    assert_eq!(s.metric("tern_dtls_handshakes_in_progress"), 0.0);
    assert_eq!(s.metric("tern_connections"), 0.0);
    let text = s_client(s.dtls).combined();
    assert!(text.contains("Protocol  : DTLSv1.2"), "{text}");
}

/// Datagrams that are not DTLS, or are broken DTLS, on the DTLS port are dropped, from
/// a fresh source and from one whose handshake is in progress: the server keeps
/// running and still serves DTLS.
#[test]
fn garbage_on_the_dtls_port_is_dropped() {
    let mut s = DtlsServer::start("");
    let mut hello = [0u8; 120];
    hello[0] = 22;
    hello[1] = 0xfe;
    hello[2] = 0xfd;
    // A handshake record with a claimed length past the datagram's end.
    hello[11] = 0xff;
    let garbage: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0],
        vec![22],
        vec![0x17, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 7, 0, 4, 1, 2, 3, 4],
        hello.to_vec(),
        (0..=255u8).collect(),
        vec![0xff; 1400],
    ];
    let fresh = UdpSocket::bind("127.0.0.1:0").unwrap();
    let handshaking = stalled_client(s.dtls, 1);
    for _ in 0..20 {
        for datagram in &garbage {
            fresh.send_to(datagram, s.dtls).unwrap();
            handshaking.get_ref().socket.send(datagram).unwrap();
        }
    }
    let text = s_client(s.dtls).combined();
    assert!(text.contains("Protocol  : DTLSv1.2"), "{text}");
    s.server.assert_still_serving(USER, PASS);
    assert!(!s.server.logs().contains("panicked"));
}

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

/// `tern check-config` on `text`: the output, expected to be a configuration error.
fn check_config_error(text: &str, needles: &[&str]) {
    let dir = TempDir::new("tern-dtls-config");
    let path = dir.write("tern.toml", text);
    let out = run_tern(
        &["check-config", path.to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert_eq!(
        out.status.and_then(|s| s.code()),
        Some(2),
        "{}",
        out.describe()
    );
    for needle in needles {
        assert!(
            out.stderr.contains(needle),
            "{needle:?} not in {}",
            out.stderr
        );
    }
}

#[test]
fn bad_dtls_listen_values_are_refused_with_key_and_line() {
    check_config_error(
        "[server]\nrealm = \"x\"\ndtls_listen = [\"nope\"]\n",
        &["line 3", "is not an IP:PORT address"],
    );
    check_config_error(
        "[server]\ndtls_listen = [\"127.0.0.1:5349\"]\n",
        &["line 2: server.dtls_listen", "tls.cert"],
    );
    let tls = "[tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n";
    check_config_error(
        &format!(
            "{tls}[server]\nproxy_protocol_from = [\"10.0.0.0/8\"]\ndtls_listen = [{{ addr = \"127.0.0.1:5349\", proxy_protocol = true }}]\n"
        ),
        &["line 6: server.dtls_listen", "proxy_protocol"],
    );
    check_config_error(
        &format!(
            "{tls}[server]\nlisten = [\"0.0.0.0:3478\"]\ndtls_listen = [\"127.0.0.1:3478\"]\n"
        ),
        &["line 6: server.dtls_listen", "already a UDP listener"],
    );
    check_config_error(
        "[limits]\nmax_dtls_handshakes = 0\n",
        &["line 2: limits.max_dtls_handshakes"],
    );
}
