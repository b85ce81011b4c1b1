//! TURN over TCP and TLS (RFC 8656 §3.1, §12.5) against a running `tern serve` on
//! loopback: relaying on streams, framing (split and coalesced frames, ChannelData
//! padding), the tie between a connection and its allocation, TLS versions and ALPN
//! (checked with `openssl s_client`), TLS auto-detection, certificate reload, and
//! start-up failures for bad TLS settings.
//!
//! Certificates are made by each test with rcgen and written to a temp dir. Only
//! 127.0.0.1 is used; every wait is bounded.

#[path = "support/certs.rs"]
mod certs;
mod support;

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use certs::{CertFiles, TestCert};
use stun::agent::TransactionId;
use stun::attributes::*;
use stun::message::{CLASS_INDICATION, METHOD_ALLOCATE, METHOD_BINDING, METHOD_REFRESH};
use support::{
    RunOutput, TempDir, TernServer, free_port_range, free_udp_port, relay_ports_arg,
    run_with_timeout,
};
use tern::client::{Attr, Incoming, Outgoing, Reply, TurnClient, signed, to_reply};

const USER: &str = "alice";
const PASS: &str = "wonderland";
const WAIT: Duration = Duration::from_secs(2);
const CHANNEL: u16 = 0x4000;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A server with a TLS listener, and the certificate it serves.
struct TlsServer {
    server: TernServer,
    /// The TLS listener (127.0.0.1).
    tls: SocketAddr,
    cert: TestCert,
    files: CertFiles,
    /// Holds the certificate files.
    _dir: TempDir,
}

/// `tern serve` with a static user, loopback peers allowed, relay ports `ports`, a TLS
/// listener with a fresh certificate, and `config` as its config file.
fn start_tls_server(config: &str, ports: &str) -> TlsServer {
    let dir = TempDir::new("tern-stream-certs");
    let files = CertFiles::in_dir(dir.path());
    let cert = TestCert::new();
    cert.write(&files);
    let tls = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let mut args = vec![
        "--user".to_string(),
        format!("{USER}:{PASS}"),
        "--allow-peer".to_string(),
        "127.0.0.0/8".to_string(),
        "--ports".to_string(),
        ports.to_string(),
        "--tls-listen".to_string(),
        tls.to_string(),
    ];
    args.extend(files.args());
    let server = TernServer::builder().config(config).args(&args).start();
    TlsServer {
        server,
        tls,
        cert,
        files,
        _dir: dir,
    }
}

/// `tern serve` (UDP and TCP only) with a static user, loopback peers and `ports`.
fn start_plain_server(ports: &str) -> TernServer {
    let user = format!("{USER}:{PASS}");
    TernServer::start_with_config(
        "",
        &[
            "--user",
            &user,
            "--allow-peer",
            "127.0.0.0/8",
            "--ports",
            ports,
        ],
    )
}

fn tcp_client(addr: SocketAddr) -> TurnClient {
    TurnClient::connect_tcp(addr, USER, PASS)
        .unwrap_or_else(|e| panic!("TCP connection to {addr}: {e}"))
}

fn tls_client(addr: SocketAddr, cert: &TestCert) -> TurnClient {
    TurnClient::connect_tls(addr, "localhost", cert.roots(), USER, PASS)
        .unwrap_or_else(|e| panic!("TLS connection to {addr}: {e}"))
}

/// A UDP socket on loopback standing in for a media peer.
fn peer() -> (UdpSocket, SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("peer socket");
    socket.set_read_timeout(Some(WAIT)).expect("peer timeout");
    let addr = socket.local_addr().expect("peer addr");
    (socket, addr)
}

fn peer_recv(socket: &UdpSocket, what: &str) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 2048];
    match socket.recv_from(&mut buf) {
        Ok((n, from)) => (buf[..n].to_vec(), from),
        Err(e) => panic!("peer did not receive {what}: {e}"),
    }
}

/// Allocates (signed, after the 401 dance) and returns the relayed address.
fn allocate(c: &mut TurnClient) -> SocketAddr {
    let r = c.allocate(vec![]).expect("allocate");
    assert!(r.is_success(), "allocate failed: {:?}", r.code);
    r.xor_address(ATTR_XOR_RELAYED_ADDRESS)
        .expect("XOR-RELAYED-ADDRESS")
}

/// The response with transaction id `tid` within `timeout`, skipping anything else.
fn wait_reply(c: &mut TurnClient, tid: TransactionId, timeout: Duration) -> Option<Reply> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.recv(left).expect("receiving") {
            Some(Incoming::Stun(msg))
                if msg.transaction_id() == tid && msg.class() != CLASS_INDICATION =>
            {
                return Some(to_reply(msg));
            }
            Some(_) => {}
            None => return None,
        }
    }
}

/// The next ChannelData frame within [`WAIT`], skipping STUN messages.
fn recv_channel_data(c: &mut TurnClient, what: &str) -> (u16, Vec<u8>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.recv(left) {
            Ok(Some(Incoming::ChannelData { number, data })) => return (number, data),
            Ok(Some(Incoming::Stun(_))) => {}
            Ok(None) => panic!("client did not receive {what} as ChannelData"),
            Err(e) => panic!("client connection failed waiting for {what}: {e}"),
        }
    }
}

/// A Binding request over `c`, answered with success.
fn binding(c: &mut TurnClient) -> Result<Reply, String> {
    let (tid, bytes) = c.encode(METHOD_BINDING, &Outgoing::default());
    match c.exchange(tid, &bytes) {
        Ok(Some(r)) if r.is_success() => Ok(r),
        Ok(Some(r)) => Err(format!("Binding answered with error {:?}", r.code)),
        Ok(None) => Err("Binding not answered".into()),
        Err(e) => Err(format!("Binding failed: {e}")),
    }
}

/// A ChannelData frame as sent on a stream: header, data, zero padding to 4 bytes.
fn channel_frame(number: u16, data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(data.len()).expect("short data");
    let mut frame = number.to_be_bytes().to_vec();
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(data);
    while !frame.len().is_multiple_of(4) {
        frame.push(0);
    }
    frame
}

/// Sends SIGHUP to the server.
fn sighup(server: &TernServer) {
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -HUP {} failed", server.pid());
}

/// Polls `f` every 100 ms until it returns `Some` or `timeout` passes.
fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------
// 1. Relaying over TCP and TLS
// ---------------------------------------------------------------------------------------

/// Allocate, Refresh, CreatePermission, ChannelBind, Send/Data indications and
/// ChannelData both ways over one stream connection.
fn relay_over_stream(mut c: TurnClient) {
    assert!(c.transport.is_stream());
    // The 401 dance: an unsigned Allocate is challenged with REALM and NONCE.
    let unsigned = Outgoing {
        attrs: vec![Attr::udp_transport()],
        ..Outgoing::default()
    };
    let r = c
        .request(METHOD_ALLOCATE, &unsigned)
        .expect("unsigned allocate");
    assert_eq!(r.code, Some(401));
    assert!(r.msg.text(ATTR_REALM).is_some() && r.msg.text(ATTR_NONCE).is_some());

    let r = c.allocate(vec![]).expect("allocate");
    assert!(r.is_success(), "allocate failed: {:?}", r.code);
    let relay = r.xor_address(ATTR_XOR_RELAYED_ADDRESS).expect("relayed");
    assert_eq!(r.xor_address(ATTR_XORMAPPED_ADDRESS), Some(c.local_addr()));

    let r = c.refresh(Some(300)).expect("refresh");
    assert!(r.is_success(), "refresh failed: {:?}", r.code);
    assert_eq!(r.lifetime(), Some(300));

    let (peer, peer_addr) = peer();
    let r = c
        .create_permission(&[peer_addr])
        .expect("create permission");
    assert!(r.is_success(), "create permission failed: {:?}", r.code);

    c.send_indication(peer_addr, b"via send")
        .expect("send indication");
    let (data, from) = peer_recv(&peer, "the Send indication's data");
    assert_eq!((data.as_slice(), from), (&b"via send"[..], relay));

    peer.send_to(b"back as data", relay).expect("peer send");
    let (from, data) = c
        .recv_data(WAIT)
        .expect("recv data")
        .expect("client got a Data indication");
    assert_eq!(
        (from, data.as_slice()),
        (Some(peer_addr), &b"back as data"[..])
    );

    let r = c.channel_bind(CHANNEL, peer_addr).expect("channel bind");
    assert!(r.is_success(), "channel bind failed: {:?}", r.code);

    // Odd lengths, so every frame carries padding on the stream.
    c.send_channel_data(CHANNEL, b"12345")
        .expect("channel data");
    c.send_channel_data(CHANNEL, b"abcdefg")
        .expect("channel data");
    let (data, from) = peer_recv(&peer, "the first ChannelData payload");
    assert_eq!((data.as_slice(), from), (&b"12345"[..], relay));
    let (data, from) = peer_recv(&peer, "the second ChannelData payload");
    assert_eq!((data.as_slice(), from), (&b"abcdefg"[..], relay));

    // Peer to client: the frames must be padded on the stream, or the next one would be
    // read from the wrong offset. Three frames back to back, then a STUN response.
    for payload in [&b"five!"[..], b"x", b"sixsix"] {
        peer.send_to(payload, relay).expect("peer send");
    }
    for payload in [&b"five!"[..], b"x", b"sixsix"] {
        let (number, data) = recv_channel_data(&mut c, "peer data");
        assert_eq!((number, data.as_slice()), (CHANNEL, payload));
    }
    binding(&mut c).expect("the stream is still in step after padded ChannelData");
}

#[test]
fn relays_over_tcp() {
    let s = start_tls_server("", &relay_ports_arg());
    relay_over_stream(tcp_client(s.server.addr));
}

#[test]
fn relays_over_tls() {
    let s = start_tls_server("", &relay_ports_arg());
    relay_over_stream(tls_client(s.tls, &s.cert));
}

// ---------------------------------------------------------------------------------------
// 2. Framing: split and coalesced frames
// ---------------------------------------------------------------------------------------

/// Sends requests made by `make` split in two at every offset, each half flushed on its
/// own a little apart, and expects every one answered with success.
fn split_everywhere(c: &mut TurnClient, what: &str, make: impl Fn(&TurnClient) -> Vec<u8>) {
    let n = make(c).len();
    assert!(n > 20, "{what}: {n} bytes");
    for k in 1..n {
        let bytes = make(c);
        assert_eq!(bytes.len(), n);
        let tid = TransactionId(bytes[8..20].try_into().expect("12 bytes"));
        c.send_raw(&bytes[..k]).expect("first part");
        thread::sleep(Duration::from_millis(5));
        c.send_raw(&bytes[k..]).expect("second part");
        let r = wait_reply(c, tid, WAIT)
            .unwrap_or_else(|| panic!("{what} split at {k}/{n}: no response"));
        assert!(
            r.is_success(),
            "{what} split at {k}/{n}: error {:?}",
            r.code
        );
    }
}

#[test]
fn frames_split_at_every_offset_are_reassembled() {
    let s = start_plain_server(&relay_ports_arg());
    let mut c = tcp_client(s.addr);
    let relay = allocate(&mut c);

    split_everywhere(&mut c, "Binding", |c| {
        let out = Outgoing {
            fingerprint: true,
            ..Outgoing::default()
        };
        c.encode(METHOD_BINDING, &out).1
    });
    split_everywhere(&mut c, "signed Refresh", |c| {
        c.encode(METHOD_REFRESH, &signed(vec![Attr::lifetime(600)]))
            .1
    });

    // ChannelData, split everywhere including inside its padding.
    let (peer, peer_addr) = peer();
    assert!(c.channel_bind(CHANNEL, peer_addr).unwrap().is_success());
    let frame = channel_frame(CHANNEL, b"12345");
    assert_eq!(frame.len(), 12);
    for k in 1..frame.len() {
        c.send_raw(&frame[..k]).expect("first part");
        thread::sleep(Duration::from_millis(5));
        c.send_raw(&frame[k..]).expect("second part");
        let (data, from) = peer_recv(&peer, &format!("ChannelData split at {k}"));
        assert_eq!(
            (data.as_slice(), from),
            (&b"12345"[..], relay),
            "split at {k}"
        );
    }
    // Still in step: a Binding right after.
    binding(&mut c).expect("Binding after the split ChannelData");
}

#[test]
fn coalesced_frames_are_all_handled() {
    let s = start_plain_server(&relay_ports_arg());
    let mut c = tcp_client(s.addr);
    let relay = allocate(&mut c);
    let (peer, peer_addr) = peer();
    assert!(c.channel_bind(CHANNEL, peer_addr).unwrap().is_success());

    // Binding, ChannelData (5 bytes + 3 padding), Binding, Binding, ChannelData (7 + 1),
    // and the first half of a fourth Binding: one write.
    let mut tids = Vec::new();
    let mut binding_bytes = || {
        let (tid, bytes) = c.encode(METHOD_BINDING, &Outgoing::default());
        tids.push(tid);
        bytes
    };
    let (b1, b2, b3, b4) = (
        binding_bytes(),
        binding_bytes(),
        binding_bytes(),
        binding_bytes(),
    );
    let mut all = Vec::new();
    all.extend_from_slice(&b1);
    all.extend(channel_frame(CHANNEL, b"12345"));
    all.extend_from_slice(&b2);
    all.extend_from_slice(&b3);
    all.extend(channel_frame(CHANNEL, b"abcdefg"));
    all.extend_from_slice(&b4[..10]);
    c.send_raw(&all).expect("coalesced write");

    for tid in &tids[..3] {
        let r = wait_reply(&mut c, *tid, WAIT).expect("each coalesced Binding is answered");
        assert!(r.is_success());
    }
    let (data, from) = peer_recv(&peer, "the first coalesced ChannelData");
    assert_eq!((data.as_slice(), from), (&b"12345"[..], relay));
    let (data, from) = peer_recv(&peer, "the second coalesced ChannelData");
    assert_eq!((data.as_slice(), from), (&b"abcdefg"[..], relay));

    c.send_raw(&b4[10..]).expect("rest of the fourth Binding");
    let r = wait_reply(&mut c, tids[3], WAIT).expect("the completed fourth Binding");
    assert!(r.is_success());
}

// ---------------------------------------------------------------------------------------
// 3 and 4. A connection and its allocation live and die together
// ---------------------------------------------------------------------------------------

#[test]
fn closing_the_connection_frees_the_allocation() {
    let (port, max) = free_port_range(1);
    assert_eq!(port, max);
    let s = start_plain_server(&format!("{port}-{port}"));

    let mut first = tcp_client(s.addr);
    let relay = allocate(&mut first);
    assert_eq!(relay.port(), port);

    // The only relay port is held: others are refused with 508.
    let mut udp = TurnClient::new(s.addr, USER, PASS).expect("UDP client");
    let r = udp.allocate(vec![]).expect("UDP allocate");
    assert_eq!(
        r.code,
        Some(508),
        "second allocation while the port is held"
    );
    let mut second_tcp = tcp_client(s.addr);
    let r = second_tcp.allocate(vec![]).expect("TCP allocate");
    assert_eq!(
        r.code,
        Some(508),
        "second allocation while the port is held"
    );

    // Closing the connection deletes the allocation: the port comes free.
    drop(first);
    let r = poll(WAIT, || {
        let r = second_tcp.allocate(vec![]).expect("TCP allocate");
        (r.code != Some(508)).then_some(r)
    })
    .expect("the port was not freed within 2 s of closing the TCP connection");
    assert!(r.is_success(), "allocate after close: {:?}", r.code);
    assert_eq!(r.xor_address(ATTR_XOR_RELAYED_ADDRESS), Some(relay));

    // And again, with a UDP client taking over after the second TCP connection closes.
    drop(second_tcp);
    let r = poll(WAIT, || {
        let r = udp.allocate(vec![]).expect("UDP allocate");
        (r.code != Some(508)).then_some(r)
    })
    .expect("the port was not freed within 2 s of closing the TCP connection");
    assert!(r.is_success(), "UDP allocate after close: {:?}", r.code);
}

/// Refresh with LIFETIME 0 is answered, then the server closes the connection.
fn delete_closes_connection(mut c: TurnClient) {
    allocate(&mut c);
    let r = c.refresh(Some(0)).expect("refresh 0");
    assert!(r.is_success(), "refresh 0 failed: {:?}", r.code);
    let start = Instant::now();
    let next = c.recv(WAIT);
    match next {
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => {}
        other => panic!(
            "expected the connection closed after the allocation was deleted, got {other:?} after {:?}",
            start.elapsed()
        ),
    }
}

#[test]
fn deleting_the_allocation_closes_the_tcp_connection() {
    let s = start_plain_server(&relay_ports_arg());
    delete_closes_connection(tcp_client(s.addr));
}

#[test]
fn deleting_the_allocation_closes_the_tls_connection() {
    let s = start_tls_server("", &relay_ports_arg());
    delete_closes_connection(tls_client(s.tls, &s.cert));
}

// ---------------------------------------------------------------------------------------
// 5. TLS versions and ALPN, seen by openssl s_client
// ---------------------------------------------------------------------------------------

fn openssl() -> &'static str {
    let found = Command::new("openssl")
        .arg("version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`openssl` is needed by this test and was not found in PATH: install it \
         (Debian: apt-get install openssl; scripts/install-test-deps.sh should do it)"
    );
    "openssl"
}

/// `openssl s_client -connect ADDR ARGS...` with stdin closed, at most ~5 s.
fn s_client(addr: SocketAddr, args: &[&str]) -> RunOutput {
    let mut cmd = Command::new("timeout");
    cmd.args(["5", openssl(), "s_client", "-connect", &addr.to_string()])
        .args(args);
    run_with_timeout(&mut cmd, Duration::from_secs(10))
}

/// The cipher s_client reports as negotiated, if any ("Cipher is X" with X not NONE).
fn negotiated_cipher(ran: &RunOutput) -> Option<String> {
    let text = format!("{}{}", ran.stdout, ran.stderr);
    text.lines()
        .filter_map(|l| l.split_once("Cipher is ").map(|(_, c)| c.trim()))
        .find(|c| !c.is_empty() && !c.contains("NONE"))
        .map(str::to_string)
}

fn handshake_accepted(ran: &RunOutput) -> bool {
    ran.success() && negotiated_cipher(ran).is_some()
}

#[test]
fn tls_versions_and_alpn_with_openssl() {
    openssl();
    let s = start_tls_server("", &relay_ports_arg());
    // The client is allowed old versions and weak ciphers, so a refusal is the server's.
    let legacy = ["-cipher", "DEFAULT:@SECLEVEL=0"];
    for version in ["-tls1", "-tls1_1"] {
        let ran = s_client(s.tls, &[&[version][..], &legacy[..]].concat());
        assert!(
            !handshake_accepted(&ran),
            "{version} must be refused\n{}",
            ran.describe()
        );
        // The client did offer it: the refusal came from the server.
        let text = format!("{}{}", ran.stdout, ran.stderr);
        assert!(
            !text.contains("no protocols available"),
            "openssl could not even offer {version}: the test proves nothing\n{}",
            ran.describe()
        );
        assert!(
            text.contains("alert"),
            "{version}: the server should answer with a TLS alert\n{}",
            ran.describe()
        );
    }
    for (flag, name) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let ran = s_client(s.tls, &[flag]);
        assert!(
            handshake_accepted(&ran),
            "{flag} must be accepted\n{}",
            ran.describe()
        );
        assert!(
            ran.stdout.contains(&format!("New, {name}, Cipher is")),
            "{flag}: not {name}\n{}",
            ran.describe()
        );
    }
    for flag in ["-tls1_2", "-tls1_3"] {
        let ran = s_client(s.tls, &[flag, "-alpn", "stun.turn"]);
        assert!(handshake_accepted(&ran), "{flag} ALPN\n{}", ran.describe());
        assert!(
            ran.stdout.contains("ALPN protocol: stun.turn"),
            "{flag}: stun.turn not negotiated\n{}",
            ran.describe()
        );
    }
}

// ---------------------------------------------------------------------------------------
// 6. TLS auto-detection
// ---------------------------------------------------------------------------------------

#[test]
fn auto_detect_serves_tls_and_plain_on_both_listeners() {
    let s = start_tls_server("", &relay_ports_arg());

    let mut tls_on_plain = tls_client(s.server.addr, &s.cert);
    allocate(&mut tls_on_plain);
    binding(&mut tls_on_plain).expect("Binding over TLS on the plain port");

    let mut plain_on_tls = tcp_client(s.tls);
    allocate(&mut plain_on_tls);
    binding(&mut plain_on_tls).expect("Binding over plain TCP on the TLS port");
}

#[test]
fn without_auto_detect_each_listener_serves_its_own_kind_only() {
    let s = start_tls_server("[tls]\nauto_detect = false\n", &relay_ports_arg());

    // Each listener still serves its own kind.
    binding(&mut tcp_client(s.server.addr)).expect("plain TCP on the plain port");
    binding(&mut tls_client(s.tls, &s.cert)).expect("TLS on the TLS port");

    let start = Instant::now();
    let tls_on_plain =
        TurnClient::connect_tls(s.server.addr, "localhost", s.cert.roots(), USER, PASS);
    assert!(
        tls_on_plain.is_err(),
        "a TLS handshake on the plain port must fail without auto-detection"
    );
    assert!(start.elapsed() < Duration::from_secs(6));

    let mut plain_on_tls = tcp_client(s.tls);
    plain_on_tls.timeout = Duration::from_millis(700);
    let r = binding(&mut plain_on_tls);
    assert!(
        r.is_err(),
        "plain TCP on the TLS port must fail without auto-detection: {r:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 7. Certificate reload
// ---------------------------------------------------------------------------------------

/// Binds CHANNEL to a new peer and checks ChannelData both ways; returns the peer.
fn bind_and_check_channel(c: &mut TurnClient, relay: SocketAddr) -> UdpSocket {
    let (peer, peer_addr) = peer();
    assert!(c.channel_bind(CHANNEL, peer_addr).unwrap().is_success());
    check_channel(c, &peer, relay, "before the reload");
    peer
}

fn check_channel(c: &mut TurnClient, peer: &UdpSocket, relay: SocketAddr, when: &str) {
    c.send_channel_data(CHANNEL, b"to peer")
        .expect("channel data");
    let (data, from) = peer_recv(peer, &format!("ChannelData {when}"));
    assert_eq!((data.as_slice(), from), (&b"to peer"[..], relay), "{when}");
    peer.send_to(b"to client", relay).expect("peer send");
    let (number, data) = recv_channel_data(c, &format!("peer data {when}"));
    assert_eq!(
        (number, data.as_slice()),
        (CHANNEL, &b"to client"[..]),
        "{when}"
    );
}

fn tls_connects(addr: SocketAddr, cert: &TestCert) -> bool {
    TurnClient::connect_tls(addr, "localhost", cert.roots(), USER, PASS).is_ok()
}

#[test]
fn sighup_reloads_the_certificate_for_new_connections_only() {
    let s = start_tls_server("", &relay_ports_arg());
    let a = &s.cert;
    let mut old = tls_client(s.tls, a);
    let relay = allocate(&mut old);
    let peer = bind_and_check_channel(&mut old, relay);

    let b = TestCert::new();
    b.write(&s.files);
    sighup(&s.server);
    poll(Duration::from_secs(3), || {
        tls_connects(s.tls, &b).then_some(())
    })
    .unwrap_or_else(|| panic!("certificate B not served within 3 s\n{}", s.server.logs()));
    assert!(
        !tls_connects(s.tls, a),
        "a new connection trusting only A must fail after the reload"
    );
    // On the plain port too (auto-detected TLS uses the same certificate).
    assert!(tls_connects(s.server.addr, &b));
    // The established connection and its allocation are untouched.
    check_channel(&mut old, &peer, relay, "after the reload");

    // A broken certificate is refused and B stays.
    std::fs::write(&s.files.cert, "garbage\n").expect("write garbage");
    sighup(&s.server);
    poll(Duration::from_secs(3), || {
        s.server
            .logs()
            .contains("TLS certificate not reloaded")
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the logs do not say the broken certificate was not reloaded\n{}",
            s.server.logs()
        )
    });
    assert!(
        tls_connects(s.tls, &b),
        "B must still be served after a failed reload\n{}",
        s.server.logs()
    );
    check_channel(&mut old, &peer, relay, "after the failed reload");
}

/// The server polls the files every 10 s: this test takes up to ~10 s.
#[test]
fn changed_certificate_files_are_reloaded_without_a_signal() {
    let s = start_tls_server("", &relay_ports_arg());
    let mut old = tls_client(s.tls, &s.cert);
    let relay = allocate(&mut old);
    let peer = bind_and_check_channel(&mut old, relay);

    let b = TestCert::new();
    b.write(&s.files);
    poll(Duration::from_secs(15), || {
        tls_connects(s.tls, &b).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "changed certificate files not picked up within 15 s\n{}",
            s.server.logs()
        )
    });
    assert!(!tls_connects(s.tls, &s.cert));
    assert!(s.server.logs().contains("TLS certificate reloaded"));
    check_channel(&mut old, &peer, relay, "after the reload");
}

// ---------------------------------------------------------------------------------------
// 8. Bad TLS settings fail the start
// ---------------------------------------------------------------------------------------

fn tern_serve(args: &[&str]) -> RunOutput {
    let listen = SocketAddr::from(([127, 0, 0, 1], free_udp_port())).to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tern"));
    cmd.args(["serve", "--listen", &listen])
        .args(args)
        .env_remove("TERN_SECRET")
        .env("NO_COLOR", "1");
    run_with_timeout(&mut cmd, Duration::from_secs(10))
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

#[test]
fn tls_listen_without_certificate_is_a_config_error() {
    let tls = SocketAddr::from(([127, 0, 0, 1], free_udp_port())).to_string();
    let ran = tern_serve(&["--tls-listen", &tls]);
    assert_eq!(
        ran.status.and_then(|s| s.code()),
        Some(2),
        "{}",
        ran.describe()
    );
    assert!(ran.elapsed < Duration::from_secs(5), "{}", ran.describe());
    assert!(ran.stderr.contains("tls"), "{}", ran.describe());

    // A certificate without its key is a config error too.
    let dir = TempDir::new("tern-stream-nokey");
    let files = CertFiles::in_dir(dir.path());
    TestCert::new().write(&files);
    let ran = tern_serve(&["--tls-listen", &tls, "--cert", path_str(&files.cert)]);
    assert_eq!(
        ran.status.and_then(|s| s.code()),
        Some(2),
        "{}",
        ran.describe()
    );
}

#[test]
fn mismatched_or_missing_certificate_files_fail_the_start() {
    let dir = TempDir::new("tern-stream-mismatch");
    let files = CertFiles::in_dir(dir.path());
    TestCert::new().write(&files);
    std::fs::write(&files.key, TestCert::new().key_pem).expect("write other key");
    let tls = SocketAddr::from(([127, 0, 0, 1], free_udp_port())).to_string();
    let mut args = vec!["--tls-listen", &tls];
    let cert_args = files.args();
    args.extend(cert_args.iter().map(String::as_str));

    let ran = tern_serve(&args);
    assert!(
        ran.status.is_some(),
        "tern kept running\n{}",
        ran.describe()
    );
    assert!(
        ran.status.is_some_and(|s| !s.success()),
        "{}",
        ran.describe()
    );
    assert!(
        ran.stderr.contains(path_str(&files.key)),
        "stderr must name the key file\n{}",
        ran.describe()
    );
    assert!(
        !ran.stderr.contains("listening on"),
        "nothing may be served with a broken certificate\n{}",
        ran.describe()
    );

    // A certificate file that does not exist.
    std::fs::remove_file(&files.cert).expect("remove cert");
    let ran = tern_serve(&args);
    assert!(
        ran.status.is_some_and(|s| !s.success()),
        "{}",
        ran.describe()
    );
    assert!(
        ran.stderr.contains(path_str(&files.cert)),
        "stderr must name the certificate file\n{}",
        ran.describe()
    );
}
