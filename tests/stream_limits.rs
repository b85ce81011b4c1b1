//! TCP/TLS connection limits against a running `tern serve` on 127.0.0.1: the idle and
//! frame timers (slow-loris), the TLS handshake deadline, the per-IP and total caps,
//! bytes that are not TURN, oversized frames, a flood of connections next to UDP
//! service, and a client that stops reading while its peer floods it.
//!
//! Every limit is configured small so each test takes a few seconds; every wait has a
//! deadline.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use stun::attributes::{ATTR_XOR_RELAYED_ADDRESS, AttrType};
use stun::message::METHOD_BINDING;
use support::{TempDir, TernServer, free_udp_port, relay_ports_arg, vm_rss_kb};
use tern::client::echo::EchoThread;
use tern::client::{Attr, ClientTransport, Incoming, Outgoing, TurnClient};

const USER: &str = "alice";
const PASS: &str = "wonderland";

/// A server with one user, loopback peers allowed, a private relay range, `toml` as its
/// config file and `extra` arguments.
fn server(toml: &str, extra: &[&str]) -> TernServer {
    let ports = relay_ports_arg();
    let mut args = vec![
        "--user",
        "alice:wonderland",
        "--allow-peer",
        "127.0.0.0/8",
        "--ports",
        &ports,
    ];
    args.extend_from_slice(extra);
    TernServer::builder().config(toml).args(&args).start()
}

/// A raw TCP connection to the server.
fn raw(server: &TernServer) -> TcpStream {
    let stream = TcpStream::connect_timeout(&server.addr, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", server.addr));
    stream.set_nodelay(true).unwrap();
    stream
}

/// What a connection did while we watched it.
#[derive(Debug)]
struct Watch {
    /// When the server closed it (EOF or reset), counted from `since`.
    closed_after: Option<Duration>,
    /// Bytes the server sent meanwhile.
    received: Vec<u8>,
}

/// Reads `stream` until the server closes it or `since + limit` passes.
fn watch(stream: &mut TcpStream, since: Instant, limit: Duration) -> Watch {
    let mut received = Vec::new();
    let deadline = since + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Watch {
                closed_after: None,
                received,
            };
        }
        stream.set_read_timeout(Some(left)).unwrap();
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                break;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("reading from the server: {e}"),
        }
    }
    Watch {
        closed_after: Some(since.elapsed()),
        received,
    }
}

/// Whether the server closed `stream`, without waiting or consuming data.
fn is_closed_now(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let closed = match stream.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

/// A Binding request (header only) and its transaction id.
fn binding_request() -> (stun::agent::TransactionId, Vec<u8>) {
    let c = TurnClient::new("127.0.0.1:9".parse().unwrap(), "", "").unwrap();
    c.encode(METHOD_BINDING, &Outgoing::default())
}

/// Whether a Binding request over `client` is answered with success within 2 s.
fn binding_answered(client: &mut TurnClient) -> Result<(), String> {
    client.timeout = Duration::from_millis(700);
    let (tid, bytes) = client.encode(METHOD_BINDING, &Outgoing::default());
    match client.exchange(tid, &bytes) {
        Ok(Some(r)) if r.is_success() => Ok(()),
        Ok(Some(r)) => Err(format!("Binding answered with error {:?}", r.code)),
        Ok(None) => Err("Binding not answered".into()),
        Err(e) => Err(format!("Binding failed: {e}")),
    }
}

/// A Binding request over UDP answered within 1 s.
fn udp_binding(server: &TernServer) -> Result<(), String> {
    support::stun_binding(server.addr, Duration::from_secs(1)).map(|_| ())
}

/// A TCP client whose socket has a small receive buffer, so that a client that stops
/// reading stalls the server's writes quickly.
fn tcp_client_small_rcvbuf(server: SocketAddr) -> TurnClient {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket
        .connect_timeout(&server.into(), Duration::from_secs(2))
        .unwrap();
    let transport = ClientTransport::tcp_over(socket.into()).unwrap();
    TurnClient::with_transport(transport, server, USER, PASS)
}

/// Allocates and returns the relayed address.
fn allocate(client: &mut TurnClient) -> SocketAddr {
    let r = client.allocate(vec![]).expect("allocate");
    assert!(r.is_success(), "allocate failed: {:?}", r.code);
    r.xor_address(ATTR_XOR_RELAYED_ADDRESS)
        .expect("XOR-RELAYED-ADDRESS")
}

/// A UDP echo peer on loopback, until dropped.
fn echo_peer() -> EchoThread {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the echo peer");
    EchoThread::spawn(socket).expect("start the echo peer")
}

/// `n` ChannelData round trips through an echoing peer; returns the payloads that did
/// not come back within 1 s each.
fn round_trips(client: &mut TurnClient, channel: u16, n: usize, tag: &str) -> Vec<String> {
    let mut missing = Vec::new();
    for i in 0..n {
        let payload = format!("{tag}-{i:04}-{}", "x".repeat(100));
        client
            .send_channel_data(channel, payload.as_bytes())
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut back = false;
        while let Some((_, data)) = client
            .recv_data(deadline.saturating_duration_since(Instant::now()))
            .unwrap()
        {
            if data == payload.as_bytes() {
                back = true;
                break;
            }
        }
        if !back {
            missing.push(format!("{tag}-{i}"));
        }
    }
    missing
}

// ---------------------------------------------------------------------------------------
// 1. Idle connections
// ---------------------------------------------------------------------------------------

#[test]
fn silent_connection_is_closed_after_the_idle_timeout() {
    let s = server("[limits]\nconnection_idle_timeout = 2\n", &[]);
    let mut stream = raw(&s);
    let since = Instant::now();
    let w = watch(&mut stream, since, Duration::from_secs(5));
    let after = w
        .closed_after
        .unwrap_or_else(|| panic!("a silent connection was still open after 5 s\n{}", s.logs()));
    println!("silent connection closed after {after:.2?}");
    assert!(
        after >= Duration::from_millis(1500),
        "closed after {after:?}, before the 2 s idle timeout"
    );
    assert!(w.received.is_empty(), "server sent {:?}", w.received);
}

#[test]
fn allocated_connection_is_not_closed_by_the_idle_timer() {
    let s = server("[limits]\nconnection_idle_timeout = 2\n", &[]);
    let mut c = TurnClient::connect_tcp(s.addr, USER, PASS).unwrap();
    allocate(&mut c);
    thread::sleep(Duration::from_secs(3));
    let r = c
        .refresh(None)
        .unwrap_or_else(|e| panic!("Refresh after 3 s failed: {e}\n{}", s.logs()));
    assert!(r.is_success(), "Refresh failed: {:?}", r.code);
    binding_answered(&mut c).unwrap();
}

// ---------------------------------------------------------------------------------------
// 2. Frames that never complete
// ---------------------------------------------------------------------------------------

const FRAME_TIMEOUT: &str = "[limits]\nframe_timeout = 2\nconnection_idle_timeout = 60\n";

#[test]
fn partial_frame_is_closed_after_the_frame_timeout() {
    let s = server(FRAME_TIMEOUT, &[]);
    let (_, binding) = binding_request();
    let mut stream = raw(&s);
    stream.write_all(&binding[..10]).unwrap();
    let since = Instant::now();
    let w = watch(&mut stream, since, Duration::from_secs(5));
    let after = w.closed_after.unwrap_or_else(|| {
        panic!(
            "a connection with half a frame was still open after 5 s\n{}",
            s.logs()
        )
    });
    println!("half a frame: closed after {after:.2?}");
    assert!(
        after >= Duration::from_millis(1500),
        "closed after {after:?}, before the 2 s frame timeout"
    );
    assert!(w.received.is_empty(), "server sent {:?}", w.received);
}

#[test]
fn trickled_frame_is_closed_after_the_frame_timeout() {
    // A frame that keeps receiving a byte now and then is bounded too: the timer runs
    // from the frame's first byte, not from the last one.
    let s = server(FRAME_TIMEOUT, &[]);
    let mut header = binding_request().1;
    header[2..4].copy_from_slice(&400u16.to_be_bytes());
    let mut stream = raw(&s);
    stream.write_all(&header).unwrap();
    let since = Instant::now();
    let mut closed_after = None;
    for _ in 0..25 {
        let w = watch(&mut stream, Instant::now(), Duration::from_millis(200));
        if w.closed_after.is_some() {
            closed_after = Some(since.elapsed());
            break;
        }
        // Writing may fail once the server has closed; the read above tells.
        let _ = stream.write_all(&[0]);
    }
    let after = closed_after
        .unwrap_or_else(|| panic!("a trickled frame was still open after 5 s\n{}", s.logs()));
    println!("trickled frame: closed after {after:.2?}");
    assert!(
        after >= Duration::from_millis(1500),
        "closed after {after:?}"
    );
}

#[test]
fn frame_sent_in_two_halves_is_answered() {
    let s = server(FRAME_TIMEOUT, &[]);
    let mut c = TurnClient::connect_tcp(s.addr, "", "").unwrap();
    let (tid, bytes) = c.encode(METHOD_BINDING, &Outgoing::default());
    c.send_raw(&bytes[..10]).unwrap();
    thread::sleep(Duration::from_millis(100));
    c.send_raw(&bytes[10..]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.recv(left).unwrap() {
            Some(Incoming::Stun(msg)) if msg.transaction_id() == tid => {
                assert_eq!(msg.method(), METHOD_BINDING);
                break;
            }
            Some(_) => {}
            None => panic!(
                "a Binding sent in two halves was not answered\n{}",
                s.logs()
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------
// 3. TLS handshake deadline
// ---------------------------------------------------------------------------------------

/// A server with a TLS listener (self-signed certificate for "localhost") and
/// `handshake_timeout = 2`: the server, the TLS address, and a real TLS client's
/// Binding answered over it.
fn tls_server() -> (TempDir, TernServer, SocketAddr) {
    let dir = TempDir::new("tern-stream-limits-tls");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let tls_addr: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
    let tls_listen = tls_addr.to_string();
    let s = server(
        "[tls]\nhandshake_timeout = 2\n",
        &[
            "--tls-listen",
            &tls_listen,
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    // The listener works for a real client.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let mut c = TurnClient::connect_tls(tls_addr, "localhost", roots, USER, PASS)
        .unwrap_or_else(|e| panic!("TLS connect: {e}\n{}", s.logs()));
    binding_answered(&mut c).unwrap();
    (dir, s, tls_addr)
}

#[test]
fn tls_handshake_that_stalls_is_closed_after_the_handshake_timeout() {
    let (_dir, s, tls_addr) = tls_server();
    // One byte of a handshake record, then nothing.
    let mut stream = TcpStream::connect_timeout(&tls_addr, Duration::from_secs(2)).unwrap();
    stream.write_all(&[0x16]).unwrap();
    let since = Instant::now();
    let w = watch(&mut stream, since, Duration::from_secs(5));
    let after = w.closed_after.unwrap_or_else(|| {
        panic!(
            "a stalled TLS handshake was still open after 5 s\n{}",
            s.logs()
        )
    });
    println!("stalled TLS handshake: closed after {after:.2?}");
    assert!(
        after >= Duration::from_millis(1500),
        "closed after {after:?}, before the 2 s handshake timeout"
    );
}

#[test]
fn tls_handshake_deadline_counts_from_the_connection() {
    // Silence before the first byte is part of the handshake time: a client that waits
    // 1.5 s and then starts a handshake it never finishes must not get another 2 s.
    let (_dir, s, tls_addr) = tls_server();
    let mut stream = TcpStream::connect_timeout(&tls_addr, Duration::from_secs(2)).unwrap();
    let since = Instant::now();
    thread::sleep(Duration::from_millis(1500));
    stream.write_all(&[0x16]).unwrap();
    let w = watch(&mut stream, since, Duration::from_secs(6));
    let after = w.closed_after.unwrap_or_else(|| {
        panic!(
            "a stalled TLS handshake was still open after 6 s\n{}",
            s.logs()
        )
    });
    println!("TLS handshake started after 1.5 s and stalled: closed {after:.2?} after connecting");
    assert!(
        after <= Duration::from_millis(2800),
        "closed {after:.2?} after connecting, over the 2 s handshake timeout"
    );
}

// ---------------------------------------------------------------------------------------
// 4. Connection caps
// ---------------------------------------------------------------------------------------

/// A connection over the cap: closed at once, and a Binding sent on it is not answered.
fn assert_refused(s: &TernServer, what: &str) {
    let mut stream = raw(s);
    let since = Instant::now();
    let _ = stream.write_all(&binding_request().1);
    let w = watch(&mut stream, since, Duration::from_secs(1));
    assert!(
        w.closed_after.is_some(),
        "{what}: the connection over the cap was still open after 1 s\n{}",
        s.logs()
    );
    assert!(
        w.received.is_empty(),
        "{what}: the connection over the cap got {} bytes",
        w.received.len()
    );
}

/// A new TCP client whose Binding is answered, retrying for up to 3 s while the server
/// lets go of a closed connection.
fn new_working_client(s: &TernServer) -> TurnClient {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut last = String::new();
        match TurnClient::connect_tcp(s.addr, "", "") {
            Ok(mut c) => match binding_answered(&mut c) {
                Ok(()) => return c,
                Err(e) => last = e,
            },
            Err(e) => last.push_str(&e.to_string()),
        }
        assert!(
            Instant::now() < deadline,
            "no new connection worked within 3 s: {last}\n{}",
            s.logs()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn per_ip_cap_refuses_the_connection_over_it() {
    let s = server("[limits]\nmax_connections_per_ip = 3\n", &[]);
    let mut open: Vec<TurnClient> = (0..3)
        .map(|i| {
            let mut c = TurnClient::connect_tcp(s.addr, "", "").unwrap();
            binding_answered(&mut c).unwrap_or_else(|e| panic!("connection {i}: {e}"));
            c
        })
        .collect();
    assert_refused(&s, "per-IP cap 3");
    // The first three still work.
    for c in &mut open {
        binding_answered(c).unwrap();
    }
    drop(open.remove(0));
    let mut fresh = new_working_client(&s);
    for c in &mut open {
        binding_answered(c).unwrap();
    }
    binding_answered(&mut fresh).unwrap();
    // Back at the cap.
    assert_refused(&s, "per-IP cap 3 again");
}

#[test]
fn total_cap_refuses_the_connection_over_it() {
    let s = server(
        "[limits]\nmax_connections = 2\nmax_connections_per_ip = 100\n",
        &[],
    );
    let mut open: Vec<TurnClient> = (0..2)
        .map(|_| {
            let mut c = TurnClient::connect_tcp(s.addr, "", "").unwrap();
            binding_answered(&mut c).unwrap();
            c
        })
        .collect();
    assert_refused(&s, "total cap 2");
    for c in &mut open {
        binding_answered(c).unwrap();
    }
    drop(open.pop());
    new_working_client(&s);
}

// ---------------------------------------------------------------------------------------
// 5. A flood of connections next to UDP service
// ---------------------------------------------------------------------------------------

#[test]
fn connection_flood_does_not_stop_udp_service() {
    let mut s = server(
        "[limits]\nmax_connections = 200\nmax_connections_per_ip = 200\n",
        &[],
    );
    let mut streams = Vec::new();
    let mut connect_errors = 0;
    for _ in 0..300 {
        match TcpStream::connect_timeout(&s.addr, Duration::from_secs(2)) {
            Ok(t) => streams.push(t),
            Err(_) => connect_errors += 1,
        }
    }
    // Let the server sort them out: those over the cap are closed at once.
    let deadline = Instant::now() + Duration::from_secs(3);
    let (mut open, mut closed);
    loop {
        closed = streams.iter().filter(|t| is_closed_now(t)).count();
        open = streams.len() - closed;
        if open <= 200 || Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    println!(
        "flood: {} connected ({connect_errors} connect errors), {open} kept open, {closed} closed by the server",
        streams.len()
    );
    assert!(open <= 200, "{open} connections open over a cap of 200");

    udp_binding(&s).unwrap_or_else(|e| panic!("UDP Binding during the flood: {e}"));
    let mut c = TurnClient::new(s.addr, USER, PASS).unwrap();
    allocate(&mut c);
    let peer = echo_peer();
    let r = c.channel_bind(0x4000, peer.addr()).unwrap();
    assert!(r.is_success(), "ChannelBind failed: {:?}", r.code);
    let missing = round_trips(&mut c, 0x4000, 100, "flood");
    assert!(
        missing.is_empty(),
        "{} of 100 round trips lost during the flood: {missing:?}",
        missing.len()
    );
    udp_binding(&s).unwrap_or_else(|e| panic!("UDP Binding during the flood: {e}"));

    drop(streams);
    s.assert_running();
    // Once they are gone, TCP works again.
    new_working_client(&s);
}

// ---------------------------------------------------------------------------------------
// 6. Bytes that are not TURN
// ---------------------------------------------------------------------------------------

/// Sends `bytes` on a fresh connection; Err describes what went wrong.
fn expect_closed_silently(s: &TernServer, what: &str, bytes: &[u8]) -> Result<(), String> {
    let mut stream = raw(s);
    stream.write_all(bytes).unwrap();
    let since = Instant::now();
    let w = watch(&mut stream, since, Duration::from_secs(2));
    let answered = if w.received.is_empty() {
        String::new()
    } else {
        format!(" and answered {} bytes", w.received.len())
    };
    match w.closed_after {
        Some(after) if w.received.is_empty() => {
            println!("{what}: closed after {after:.2?}");
            Ok(())
        }
        Some(after) => Err(format!("{what}: closed after {after:.2?}{answered}")),
        None => {
            // Say when it does close, for the report.
            let later = watch(&mut stream, since, Duration::from_secs(15));
            let when = later
                .closed_after
                .map_or("still open after 15 s".to_string(), |d| {
                    format!("closed only after {d:.2?}")
                });
            Err(format!("{what}: still open after 2 s ({when}){answered}"))
        }
    }
}

#[test]
fn non_turn_bytes_are_refused() {
    let s = server("", &[]);
    let mut wrong_cookie = binding_request().1;
    wrong_cookie[7] ^= 0xff;
    let cases: [(&str, &[u8]); 4] = [
        ("HTTP GET", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        (
            "HTTP POST",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        ),
        ("0xFF bytes", b"\xff\xff\xff\xffhello"),
        ("STUN with a wrong magic cookie", &wrong_cookie),
    ];
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(what, bytes)| expect_closed_silently(&s, what, bytes).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The port still serves TURN.
    new_working_client(&s);
}

// ---------------------------------------------------------------------------------------
// 7. Oversized frames
// ---------------------------------------------------------------------------------------

/// A Binding request padded with a comprehension-optional attribute to `total` bytes.
fn binding_of_size(c: &TurnClient, total: usize) -> (stun::agent::TransactionId, Vec<u8>) {
    let out = Outgoing {
        attrs: vec![Attr::Raw(AttrType(0x8050), vec![0; total - 24])],
        ..Outgoing::default()
    };
    let (tid, bytes) = c.encode(METHOD_BINDING, &out);
    assert_eq!(bytes.len(), total);
    (tid, bytes)
}

#[test]
fn oversized_frame_is_refused() {
    let s = server("[limits]\nmax_frame = 2000\n", &[]);

    let mut header = binding_request().1;
    header[2..4].copy_from_slice(&4000u16.to_be_bytes());
    expect_closed_silently(&s, "header announcing 4000 bytes", &header).unwrap();

    // A message of 2100 bytes sent whole is refused; one of 1924 is answered.
    let mut c = TurnClient::connect_tcp(s.addr, "", "").unwrap();
    let (_, big) = binding_of_size(&c, 2100);
    expect_closed_silently(&s, "2100-byte Binding", &big).unwrap();
    let (tid, fits) = binding_of_size(&c, 1924);
    let r = c.exchange(tid, &fits).unwrap();
    assert!(
        r.is_some_and(|r| r.is_success()),
        "a 1924-byte Binding under max_frame 2000 was not answered\n{}",
        s.logs()
    );
}

// ---------------------------------------------------------------------------------------
// 8. A client that stops reading
// ---------------------------------------------------------------------------------------

#[test]
fn slow_reader_cannot_hurt_others() {
    let mut s = server("[limits]\nwrite_queue = 8\n", &[]);
    let pid = s.pid();

    // The slow reader: allocates over TCP, binds a channel, then never reads again.
    let mut slow = tcp_client_small_rcvbuf(s.addr);
    let slow_relay = allocate(&mut slow);
    let flooder = UdpSocket::bind("127.0.0.1:0").unwrap();
    let flooder_addr = flooder.local_addr().unwrap();
    let r = slow.channel_bind(0x4000, flooder_addr).unwrap();
    assert!(r.is_success(), "ChannelBind failed: {:?}", r.code);

    // The well-behaved client over UDP, with an echoing peer.
    let mut good = TurnClient::new(s.addr, USER, PASS).unwrap();
    allocate(&mut good);
    let peer = echo_peer();
    let r = good.channel_bind(0x4001, peer.addr()).unwrap();
    assert!(r.is_success(), "ChannelBind failed: {:?}", r.code);
    let rss_before = vm_rss_kb(pid);

    // First stall the server's writer for good: about three times the largest TCP send
    // buffer (tcp_wmem, 4 MB by default) in large datagrams, paced so the writer takes
    // most of it. The flood below then meets a full write queue.
    let big = vec![0xcdu8; 60_000];
    for _ in 0..200 {
        let _ = flooder.send_to(&big, slow_relay);
        thread::sleep(Duration::from_millis(1));
    }

    let flood_done = Arc::new(AtomicBool::new(false));
    let flood = {
        let done = flood_done.clone();
        thread::spawn(move || {
            let payload = [0xabu8; 1000];
            let start = Instant::now();
            let mut sent = 0usize;
            for _ in 0..20_000 {
                if start.elapsed() > Duration::from_secs(20) {
                    break;
                }
                if flooder.send_to(&payload, slow_relay).is_ok() {
                    sent += 1;
                }
            }
            done.store(true, Ordering::Relaxed);
            (sent, start.elapsed())
        })
    };

    // During the flood.
    let mut missing = Vec::new();
    let mut during = 0;
    let mut binding_errors = Vec::new();
    for round in 0..5 {
        if flood_done.load(Ordering::Relaxed) && round > 0 {
            break;
        }
        missing.extend(round_trips(
            &mut good,
            0x4001,
            10,
            &format!("during{round}"),
        ));
        during += 10;
        if let Err(e) = udp_binding(&s) {
            binding_errors.push(format!("during the flood: {e}"));
        }
    }
    let (sent, took) = flood.join().unwrap();
    println!("flood: {sent} datagrams of 1000 bytes in {took:.2?}; {during} round trips during it");

    // After it.
    missing.extend(round_trips(&mut good, 0x4001, 50, "after"));
    if let Err(e) = udp_binding(&s) {
        binding_errors.push(format!("after the flood: {e}"));
    }
    let started = Instant::now();
    let binding_after = udp_binding(&s);
    println!(
        "UDP Binding after the flood: {binding_after:?} in {:.2?}",
        started.elapsed()
    );

    s.assert_running();
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "server process {pid} is gone"
    );
    let rss = vm_rss_kb(pid);
    println!(
        "server VmRSS: {rss} kB = {:.1} MB at the end ({rss_before} kB before the flood)",
        rss as f64 / 1024.0
    );
    assert!(
        missing.is_empty(),
        "{} of {} echo round trips lost: {missing:?}\n(peer echoed {})",
        missing.len(),
        during + 50,
        peer.received()
    );
    assert!(binding_errors.is_empty(), "{binding_errors:?}");
    assert!(rss < 200 * 1024, "server VmRSS {rss} kB is over 200 MB");
    drop(slow);
}

/// A client that stops reading does not keep its connection: a write that cannot
/// complete within `frame_timeout` closes the connection (and so its allocation), or
/// a stalled reader would hold a connection slot (and a task, and socket buffers)
/// forever.
#[test]
fn stalled_reader_is_let_go() {
    let s = server(
        "[limits]\nwrite_queue = 8\nmax_connections_per_ip = 2\nframe_timeout = 2\n\
         [relay]\ndefault_lifetime = 3\nmax_lifetime = 3\n",
        &[],
    );
    let mut slow = tcp_client_small_rcvbuf(s.addr);
    let slow_relay = allocate(&mut slow);
    let flooder = UdpSocket::bind("127.0.0.1:0").unwrap();
    let r = slow
        .channel_bind(0x4000, flooder.local_addr().unwrap())
        .unwrap();
    assert!(r.is_success(), "ChannelBind failed: {:?}", r.code);
    // Three times the largest TCP send buffer (tcp_wmem, 4 MB by default), paced so
    // that the server's writer takes most of it: its writes then block for good.
    let payload = vec![0xabu8; 60_000];
    for _ in 0..200 {
        let _ = flooder.send_to(&payload, slow_relay);
        thread::sleep(Duration::from_millis(1));
    }
    // The server's write stalls at once; after frame_timeout (2 s) it lets go.
    thread::sleep(Duration::from_secs(6));
    // Two slots per IP: both must be free again.
    let mut first = new_working_client(&s);
    let mut second = TurnClient::connect_tcp(s.addr, "", "").unwrap();
    let result = binding_answered(&mut second);
    assert!(
        result.is_ok(),
        "a client that stopped reading still holds its connection slot well after \
         frame_timeout: a second connection from the IP was refused ({result:?})"
    );
    binding_answered(&mut first).unwrap();
    drop(slow);
}
