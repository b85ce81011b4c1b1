//! The self-test listener without a browser: the token gate, the credentials the page
//! mints (a real allocation with them), the call room's signaling over real
//! WebSockets (two members, a third refused, messages passed verbatim, bounds on size
//! and rate), relaying untouched by a signaling flood, HTTPS, and config errors; the
//! listener's bounds (idle connections closed, a cap per client address) and members
//! that stop reading or vanish.
//! The pages themselves run in Chromium in tests/selftest_browser.rs.

mod support;

#[path = "support/certs.rs"]
mod certs;

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};
use stun::attributes::ATTR_XOR_RELAYED_ADDRESS;
use support::{TernServer, admin_get, free_udp_port, metric, relay_ports_arg, run_tern};
use tern::client::TurnClient;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

const TOKEN: &str = "selftest-token-0123456789";
const WAIT: Duration = Duration::from_secs(3);

struct Selftest {
    server: TernServer,
    page: SocketAddr,
    admin: SocketAddr,
}

/// A server with the self-test on loopback (plain HTTP) and `extra` config lines in
/// `[selftest]`; the admin listener for metrics; loopback peers allowed.
fn start(extra: &str) -> Selftest {
    let page = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let config = format!("[selftest]\nlisten = \"{page}\"\ntoken = \"{TOKEN}\"\n{extra}");
    let server = TernServer::builder()
        .config(&config)
        .args(&["--ports", &relay_ports_arg(), "--admin", &admin.to_string()])
        .args(&["--allow-peer", "127.0.0.0/8"])
        .start();
    Selftest {
        server,
        page,
        admin,
    }
}

fn status(page: SocketAddr, path: &str) -> u16 {
    admin_get(page, path).0
}

#[test]
fn every_page_and_api_needs_the_token() {
    let t = start("");
    for path in ["/check", "/call?room=r1", "/api/ice", "/api/ws?room=r1"] {
        let sep = if path.contains('?') { '&' } else { '?' };
        assert_eq!(status(t.page, path), 403, "{path} without a token");
        let wrong = format!("{path}{sep}token=selftest-token-0123456788");
        let (code, body) = admin_get(t.page, &wrong);
        assert_eq!(
            (code, body.as_str()),
            (403, ""),
            "{path} with a wrong token"
        );
    }
    for path in ["/check", "/call?room=r1"] {
        let sep = if path.contains('?') { '&' } else { '?' };
        let (code, body) = admin_get(t.page, &format!("{path}{sep}token={TOKEN}"));
        assert_eq!(code, 200, "{path}");
        assert!(body.contains("<html"), "{path}: {body}");
    }
    // Scripts and styles hold no secret and are served without the token.
    assert_eq!(status(t.page, "/assets/selftest.js"), 200);
    assert_eq!(status(t.page, "/assets/selftest.css"), 200);
    assert_eq!(
        metric(t.admin, "tern_selftest_refused_total{reason=\"token\"}"),
        8.0
    );
    assert_eq!(
        metric(t.admin, "tern_selftest_pages_total{page=\"check\"}"),
        1.0
    );
}

#[test]
fn minted_credentials_allocate_and_relay() {
    let t = start("credential_lifetime = 120\n");
    let (code, body) = admin_get(t.page, &format!("/api/ice?token={TOKEN}"));
    assert_eq!(code, 200, "{body}");
    let ice: Value = serde_json::from_str(&body).unwrap();
    let username = ice["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, "selftest");
    let ttl = expiry.parse::<u64>().unwrap() - tern::clock::unix_now();
    assert!((110..=120).contains(&ttl), "expires in {ttl} s");
    // The Host header of the request ("x") names the server in the URLs.
    let port = t.server.port();
    assert_eq!(ice["urls"]["udp"], format!("turn:x:{port}?transport=udp"));
    assert_eq!(ice["urls"]["tcp"], format!("turn:x:{port}?transport=tcp"));
    assert!(ice["urls"].get("tls").is_none(), "no TLS listener: {ice}");

    let password = ice["credential"].as_str().unwrap();
    let mut client = TurnClient::new(t.server.addr, username, password).unwrap();
    let reply = client.allocate(vec![]).unwrap();
    assert!(reply.is_success(), "{:?}", reply.code);
    let relay = reply.xor_address(ATTR_XOR_RELAYED_ADDRESS).unwrap();
    echo_once(&mut client, relay);
    assert_eq!(metric(t.admin, "tern_selftest_credentials_total"), 1.0);
    // The page's secret survives a reload of the configuration.
    t.server.reload();
    let mut again = TurnClient::new(t.server.addr, username, password).unwrap();
    assert!(again.allocate(vec![]).unwrap().is_success());
}

/// One ChannelData round trip through `relay` to a loopback peer.
fn echo_once(client: &mut TurnClient, relay: SocketAddr) {
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(WAIT)).unwrap();
    let peer_addr = peer.local_addr().unwrap();
    assert!(client.channel_bind(0x4000, peer_addr).unwrap().is_success());
    client.send_channel_data(0x4000, b"ping").unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = peer.recv_from(&mut buf).expect("peer got the data");
    assert_eq!((&buf[..n], from), (&b"ping"[..], relay));
    peer.send_to(b"pong", relay).unwrap();
    assert!(
        client.recv_data(WAIT).unwrap().is_some(),
        "client got the echo"
    );
}

type Socket = WebSocket<TcpStream>;

fn join(page: SocketAddr, room: &str, token: &str) -> Result<Socket, tungstenite::Error> {
    let stream = TcpStream::connect_timeout(&page, WAIT).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let url = format!("ws://{page}/api/ws?room={room}&token={token}");
    tungstenite::client(url, stream)
        .map(|(socket, _)| socket)
        .map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e,
            tungstenite::HandshakeError::Interrupted(_) => panic!("blocking handshake"),
        })
}

/// The next text message, parsed.
fn next_json(socket: &mut Socket) -> Value {
    loop {
        match socket.read().expect("a message") {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Reads until the server closes; the close code it gave.
fn close_code(socket: &mut Socket) -> Option<CloseCode> {
    for _ in 0..1000 {
        match socket.read() {
            Ok(Message::Close(frame)) => return frame.map(|f| f.code),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
    None
}

#[test]
fn a_room_joins_two_members_and_refuses_a_third() {
    let t = start("");
    let mut first = join(t.page, "room-1", TOKEN).unwrap();
    assert_eq!(next_json(&mut first)["role"], "first");
    let mut second = join(t.page, "room-1", TOKEN).unwrap();
    assert_eq!(next_json(&mut second)["role"], "second");
    assert_eq!(next_json(&mut first)["type"], "peer-joined");

    let offer = r#"{"type":"offer","sdp":"v=0\r\n..."}"#;
    first.send(Message::text(offer)).unwrap();
    assert_eq!(second.read().unwrap(), Message::text(offer), "verbatim");
    second.send(Message::text(r#"{"type":"answer"}"#)).unwrap();
    assert_eq!(next_json(&mut first)["type"], "answer");

    let mut third = join(t.page, "room-1", TOKEN).unwrap();
    let refusal = next_json(&mut third);
    assert_eq!(
        (refusal["type"].as_str(), refusal["reason"].as_str()),
        (Some("error"), Some("room full"))
    );
    assert_eq!(close_code(&mut third), Some(CloseCode::Policy));
    assert_eq!(metric(t.admin, "tern_selftest_rooms"), 1.0);

    second.close(None).unwrap();
    assert_eq!(next_json(&mut first)["type"], "peer-left");
    // The seat is free again.
    let mut back = join(t.page, "room-1", TOKEN).unwrap();
    assert_eq!(next_json(&mut back)["role"], "second");
    assert!(matches!(
        join(t.page, "room-1", "wrong-token-0123456789"),
        Err(tungstenite::Error::Http(r)) if r.status() == 403
    ));
    assert!(matches!(
        join(t.page, "bad%20name", TOKEN),
        Err(tungstenite::Error::Http(r)) if r.status() == 400
    ));
}

#[test]
fn rooms_are_bounded_and_expire() {
    let t = start("max_rooms = 2\nroom_ttl = 2\n");
    // Each welcome is read before the next join: a join follows its WebSocket upgrade.
    let mut a = join(t.page, "a", TOKEN).unwrap();
    assert_eq!(next_json(&mut a)["role"], "first");
    let mut b = join(t.page, "b", TOKEN).unwrap();
    assert_eq!(next_json(&mut b)["role"], "first");
    let mut c = join(t.page, "c", TOKEN).unwrap();
    assert_eq!(
        next_json(&mut c)["reason"],
        "too many rooms open on this server"
    );
    let expired = next_json(&mut a);
    assert_eq!(expired["reason"], "room expired", "{expired}");
    assert_eq!(close_code(&mut a), Some(CloseCode::Policy));
}

#[test]
fn oversized_messages_and_floods_are_cut_off_and_relaying_goes_on() {
    let t = start("max_message = 2048\nmessages_per_second = 5\nmessage_burst = 10\n");
    let mut client = TurnClient::new(t.server.addr, "", "").unwrap();
    let (_, body) = admin_get(t.page, &format!("/api/ice?token={TOKEN}"));
    let ice: Value = serde_json::from_str(&body).unwrap();
    client.set_credentials(
        ice["username"].as_str().unwrap(),
        ice["credential"].as_str().unwrap(),
    );
    let relay = client
        .allocate(vec![])
        .unwrap()
        .xor_address(ATTR_XOR_RELAYED_ADDRESS)
        .unwrap();

    let mut big = join(t.page, "big", TOKEN).unwrap();
    next_json(&mut big);
    big.send(Message::text("x".repeat(2049))).unwrap();
    assert_eq!(close_code(&mut big), Some(CloseCode::Size));

    let mut flood = join(t.page, "flood", TOKEN).unwrap();
    assert_eq!(next_json(&mut flood)["role"], "first");
    let mut listener = join(t.page, "flood", TOKEN).unwrap();
    assert_eq!(next_json(&mut listener)["role"], "second");
    let mut sent = 0;
    for i in 0..200 {
        if flood.send(Message::text(format!("{{\"n\":{i}}}"))).is_err() {
            break;
        }
        sent += 1;
    }
    assert_eq!(
        close_code(&mut flood),
        Some(CloseCode::Policy),
        "after {sent}"
    );
    // The other member got the burst and no more, then heard the flooder leave.
    let mut passed = 0;
    loop {
        let message = next_json(&mut listener);
        if message["type"] == "peer-left" {
            break;
        }
        passed += 1;
    }
    assert!((10..=12).contains(&passed), "{passed} of {sent} passed");
    assert_eq!(
        metric(t.admin, "tern_selftest_refused_total{reason=\"rate\"}"),
        1.0
    );
    assert_eq!(
        metric(t.admin, "tern_selftest_refused_total{reason=\"too_big\"}"),
        1.0
    );
    echo_once(&mut client, relay);
}

#[test]
fn https_when_a_certificate_is_configured() {
    let dir = support::TempDir::new("selftest-tls");
    let files = certs::CertFiles::in_dir(dir.path());
    let cert = certs::TestCert::new();
    cert.write(&files);
    let page = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let config = format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n[server]\ntls_listen = []\n\
         [selftest]\nlisten = \"{page}\"\ntoken = \"{TOKEN}\"\nidle_timeout = 1\n",
        files.cert, files.key
    );
    let _server = TernServer::builder()
        .config(&config)
        .args(&["--ports", &relay_ports_arg()])
        .start();
    let answer = https_get(page, &cert, &format!("/api/ice?token={TOKEN}"));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"username\""), "{answer}");
    let refused = https_get(page, &cert, "/check?token=wrong-token-0123456789");
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    // A TLS connection that says nothing after its handshake is closed when idle.
    let mut tls = tls_client(page, &cert);
    tls.conn.complete_io(&mut tls.sock).unwrap();
    let idle = wait_closed(&mut tls.sock, Instant::now(), Duration::from_secs(4));
    assert!(idle >= Duration::from_millis(900), "closed after {idle:?}");
}

/// GET over TLS, trusting only `cert`: the whole response.
fn https_get(addr: SocketAddr, cert: &certs::TestCert, path: &str) -> String {
    let mut tls = tls_client(addr, cert);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    // A close without close_notify still leaves the response read so far.
    let _ = tls.read_to_string(&mut response);
    response
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS client to `addr` trusting only `cert`; the handshake happens on first use.
fn tls_client(addr: SocketAddr, cert: &certs::TestCert) -> TlsStream {
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(cert.roots())
    .with_no_client_auth();
    let name = "localhost".try_into().unwrap();
    let connection = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect_timeout(&addr, WAIT).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    rustls::StreamOwned::new(connection, tcp)
}

#[test]
fn config_errors_name_the_key() {
    let dir = support::TempDir::new("selftest-config");
    let cases = [
        (
            "[selftest]\nlisten = \"127.0.0.1:8080\"\n",
            "selftest.token",
        ),
        (
            "[selftest]\nlisten = \"127.0.0.1:8080\"\ntoken = \"short\"\n",
            "line 3: selftest.token",
        ),
        (
            "[selftest]\nlisten = \"0.0.0.0:8443\"\ntoken = \"0123456789abcdefgh\"\n",
            "line 2: selftest.listen",
        ),
        (
            "[selftest]\nlisten = \"127.0.0.1:8080\"\ntoken = \"0123456789abcdefgh\"\nmax_rooms = 0\n",
            "line 4: selftest.max_rooms",
        ),
        (
            "[selftest]\nlisten = \"127.0.0.1:8080\"\ntoken = \"0123456789abcdefgh\"\nidle_timeout = 3601\n",
            "line 4: selftest.idle_timeout",
        ),
    ];
    for (text, expected) in cases {
        let path = dir.join("tern.toml");
        std::fs::write(&path, text).unwrap();
        let out = run_tern(&["check-config", path.to_str().unwrap()], WAIT);
        assert!(!out.success(), "{text}");
        assert!(
            out.combined().contains(expected),
            "{text}: {}",
            out.describe()
        );
    }
    // selftest-url says what is missing, and prints both links when set.
    let path = dir.join("none.toml");
    std::fs::write(&path, "").unwrap();
    let out = run_tern(&["selftest-url", "-c", path.to_str().unwrap()], WAIT);
    assert!(
        out.combined().contains("selftest.listen"),
        "{}",
        out.describe()
    );
    let path = dir.join("on.toml");
    std::fs::write(
        &path,
        "[selftest]\nlisten = \"127.0.0.1:8080\"\ntoken = \"0123456789abcdefgh\"\n",
    )
    .unwrap();
    let out = run_tern(
        &[
            "selftest-url",
            "-c",
            path.to_str().unwrap(),
            "--room",
            "demo",
        ],
        WAIT,
    );
    assert!(out.success(), "{}", out.describe());
    assert!(
        out.stdout
            .contains("http://127.0.0.1:8080/check?token=0123456789abcdefgh"),
        "{}",
        out.describe()
    );
    assert!(
        out.stdout
            .contains("http://127.0.0.1:8080/call?room=demo&token=0123456789abcdefgh"),
        "{}",
        out.describe()
    );
}

// ---------------------------------------------------------------------------------------
// Slots: idle connections, the cap per address, members that stop reading or vanish
// ---------------------------------------------------------------------------------------

/// A TCP connection to `page` from `source` (any port), sending nothing yet.
fn connect_from(source: [u8; 4], page: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    socket.connect_timeout(&page.into(), WAIT).unwrap();
    socket.into()
}

/// Reads (and discards) until the server closes `stream`: how long that took from
/// `since`. Panics if it is still open after `within`.
fn wait_closed(stream: &mut TcpStream, since: Instant, within: Duration) -> Duration {
    let mut buf = [0u8; 4096];
    loop {
        let left = within.saturating_sub(since.elapsed());
        assert!(!left.is_zero(), "still open after {within:?}");
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return since.elapsed(),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("still open after {within:?}")
            }
            // Reset: closed too.
            Err(_) => return since.elapsed(),
        }
    }
}

/// One keep-alive GET on `stream`: the status code; the connection stays open.
fn get_keep_alive(stream: &mut TcpStream, path: &str) -> u16 {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).unwrap() == 0 {
            return 0;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")?
                .trim()
                .parse()
                .ok()
        })
        .expect("Content-Length");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    head.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// GET `path` until it answers 200 (a slot may take a moment to come back): how long.
fn wait_for_200(page: SocketAddr, path: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if status(page, path) == 200 {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "no 200 within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_idle_connection_is_closed_and_its_slot_is_free_again() {
    let t = start("idle_timeout = 2\nmax_connections = 1\n");
    let check = format!("/check?token={TOKEN}");
    // A connection that never sends a byte holds the only slot...
    let opened = Instant::now();
    let mut silent = connect_from([127, 0, 0, 1], t.page);
    // ...so the next one is closed at once...
    let mut refused = connect_from([127, 0, 0, 1], t.page);
    let at_once = wait_closed(&mut refused, Instant::now(), Duration::from_secs(1));
    // ...until the idle timeout closes the silent one and frees it.
    let idle = wait_closed(&mut silent, opened, Duration::from_secs(5));
    assert!(idle >= Duration::from_millis(1900), "closed after {idle:?}");
    wait_for_200(t.page, &check, Duration::from_secs(1));

    // The same for a keep-alive connection after its request.
    let mut kept = connect_from([127, 0, 0, 1], t.page);
    assert_eq!(get_keep_alive(&mut kept, &check), 200);
    let answered = Instant::now();
    let kept_idle = wait_closed(&mut kept, answered, Duration::from_secs(5));
    assert!(
        kept_idle >= Duration::from_millis(1900),
        "closed after {kept_idle:?}"
    );
    wait_for_200(t.page, &check, Duration::from_secs(1));
    eprintln!("refused in {at_once:?}; idle closed after {idle:?}, keep-alive after {kept_idle:?}");
    assert_eq!(
        metric(t.admin, "tern_selftest_refused_total{reason=\"idle\"}"),
        2.0
    );
    assert_eq!(
        metric(
            t.admin,
            "tern_selftest_refused_total{reason=\"connections\"}"
        ),
        1.0
    );
}

#[test]
fn one_address_holds_at_most_16_connections() {
    let t = start("");
    let check = format!("/check?token={TOKEN}");
    let mut held: Vec<TcpStream> = (0..16)
        .map(|_| connect_from([127, 0, 0, 1], t.page))
        .collect();
    let mut over = connect_from([127, 0, 0, 1], t.page);
    let at_once = wait_closed(&mut over, Instant::now(), Duration::from_secs(1));
    // The 16 are still served, and another address is not affected.
    assert_eq!(get_keep_alive(&mut held[0], &check), 200);
    let mut other = connect_from([127, 0, 0, 2], t.page);
    assert_eq!(get_keep_alive(&mut other, &check), 200);
    // One closes: its slot is free for the same address again.
    drop(held.pop());
    let back = wait_for_200(t.page, &check, Duration::from_secs(2));
    eprintln!("17th refused in {at_once:?}; a slot back after {back:?}");
    assert!(metric(t.admin, "tern_selftest_refused_total{reason=\"per_ip\"}") >= 1.0);
}

#[test]
fn a_member_that_stops_reading_is_dropped_and_its_room_closes() {
    let t = start("room_ttl = 3\n");
    let opened = Instant::now();
    // A member with a tiny receive window that never reads after its welcome (read so
    // that it is in the room before the other joins: the join follows the upgrade).
    let mut stuck = {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect_timeout(&t.page.into(), WAIT).unwrap();
        let stream: TcpStream = socket.into();
        let url = format!("ws://{}/api/ws?room=stuck&token={TOKEN}", t.page);
        tungstenite::client(url, stream).unwrap().0
    };
    assert_eq!(next_json(&mut stuck)["role"], "first");
    let mut sender = join(t.page, "stuck", TOKEN).unwrap();
    assert_eq!(next_json(&mut sender)["role"], "second");
    // 150 messages of 60 KB: 9 MB, more than the socket buffers on both sides hold.
    let big = format!(
        "{{\"type\":\"candidate\",\"pad\":\"{}\"}}",
        "x".repeat(60 << 10)
    );
    for _ in 0..150 {
        sender.send(Message::text(big.clone())).unwrap();
    }
    // The sender's own room expires with room_ttl.
    let expired = next_json(&mut sender);
    assert_eq!(expired["reason"], "room expired", "{expired}");
    drop(sender);
    // Until the stuck member is dropped the room is still there; then it is gone.
    let gone = loop {
        let elapsed = opened.elapsed();
        assert!(
            elapsed < Duration::from_secs(10),
            "room still held after {elapsed:?}"
        );
        let mut next = join(t.page, "stuck", TOKEN).unwrap();
        if next_json(&mut next)["role"] == "first" {
            break elapsed;
        }
        drop(next);
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("room gone {gone:?} after it opened");
    // Past room_ttl (3 s), and the stuck write was given up after 5 s.
    assert!(gone >= Duration::from_secs(3), "{gone:?}");
    assert!(
        metric(
            t.admin,
            "tern_selftest_refused_total{reason=\"send_timeout\"}"
        ) >= 1.0
    );
    drop(stuck);
}

#[test]
fn a_member_that_answers_pings_stays_and_one_that_vanished_is_dropped() {
    let t = start("idle_timeout = 2\n");
    // Alive: reads (tungstenite answers pings while reading) and sends nothing.
    let mut alive = join(t.page, "alive", TOKEN).unwrap();
    assert_eq!(next_json(&mut alive)["role"], "first");
    // Vanished: never reads or sends again, but never closes either.
    let mut vanished = join(t.page, "vanished", TOKEN).unwrap();
    assert_eq!(next_json(&mut vanished)["role"], "first");
    let joined = Instant::now();

    alive
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut pings = 0;
    let mut dropped = None;
    while joined.elapsed() < Duration::from_secs(5) {
        match alive.read() {
            Ok(Message::Ping(_)) => pings += 1,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("alive member lost its socket: {e}"),
        }
        // The vanished member's room frees up after idle_timeout.
        if dropped.is_none() {
            let mut probe = join(t.page, "vanished", TOKEN).unwrap();
            if next_json(&mut probe)["role"] == "first" {
                dropped = Some(joined.elapsed());
            }
        }
    }
    let dropped = dropped.expect("vanished member still in its room after 5 s");
    eprintln!("alive got {pings} pings in 5 s; vanished member dropped after {dropped:?}");
    assert!(pings >= 3, "{pings} pings");
    assert!(
        (Duration::from_millis(1500)..Duration::from_secs(4)).contains(&dropped),
        "{dropped:?}"
    );
    // Still in its room, 2.5 idle timeouts later: it hears the next member arrive.
    alive.get_mut().set_read_timeout(Some(WAIT)).unwrap();
    let mut second = join(t.page, "alive", TOKEN).unwrap();
    assert_eq!(next_json(&mut second)["role"], "second");
    assert_eq!(next_json(&mut alive)["type"], "peer-joined");
    second.send(Message::text(r#"{"type":"offer"}"#)).unwrap();
    assert_eq!(next_json(&mut alive)["type"], "offer");
    drop(vanished);
}

#[test]
fn a_repeated_token_or_room_is_refused_without_detail() {
    let t = start("");
    let wrong = "selftest-token-0123456788";
    for path in [
        format!("/check?token={TOKEN}&token={TOKEN}"),
        format!("/call?room=r&token={TOKEN}&token={wrong}"),
        format!("/api/ice?token={wrong}&token={TOKEN}"),
        format!("/api/ws?room=r&token={TOKEN}&%74oken={TOKEN}"),
    ] {
        let (code, body) = admin_get(t.page, &path);
        assert_eq!((code, body.as_str()), (403, ""), "{path}");
    }
    // Percent-encoding is decoded, as a browser may send it.
    let encoded = TOKEN.replace('-', "%2D");
    assert_eq!(status(t.page, &format!("/check?token={encoded}")), 200);
    // Two rooms: our own 400, not a parser's error text.
    match join(t.page, "a&room=b", TOKEN) {
        Err(tungstenite::Error::Http(r)) => {
            let body = String::from_utf8_lossy(r.body().as_deref().unwrap_or_default());
            assert_eq!(r.status(), 400);
            assert!(body.starts_with("room: once, 1 to 64"), "{body}");
        }
        other => panic!("two rooms: {:?}", other.map(|_| ())),
    }
}
