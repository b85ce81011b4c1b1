//! Attacks on authentication against a running `tern serve` on loopback: wrong and
//! unknown credentials that must look alike, expired REST credentials, nonces replayed
//! from another address or transport, stale nonces, another user's credentials on an
//! allocation, password guessing from one IP, and hostile USERNAME/REALM/NONCE bytes
//! that must neither crash the server nor reach its log raw.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use stun::agent::TransactionId;
use stun::attributes::*;
use stun::integrity::MessageIntegrity;
use stun::message::*;
use support::{
    TernServer, free_udp_port, http_request, metric, relay_ports_arg, with_realm_and_nonce,
};
use tern::auth::{LongTermKey, RestSecret, rest_credential};
use tern::client::{
    Attr, ClientTransport, Outgoing, Reply, TurnClient, new_transaction_id, signed, to_reply,
};
use tern::clock::unix_now;
use tern::proto::Request;

const USER: &str = "alice";
const PASS: &str = "wonderland";
const REALM: &str = "attacks.example";
const SECRET: &str = "attack-suite-secret-0123456789";
/// How long to listen for answers that may or may not come.
const QUIET: Duration = Duration::from_millis(400);

/// A server with static users alice and bob, REST credentials under [`SECRET`], an
/// admin listener, `auth_toml` in its `[auth]` table and `extra` arguments.
fn start(auth_toml: &str, extra: &[&str]) -> (TernServer, SocketAddr) {
    let admin = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let config = format!(
        "[server]\nrealm = \"{REALM}\"\n[auth]\nsecrets = [\"{SECRET}\"]\n{auth_toml}\n\
         [[auth.users]]\nname = \"alice\"\npassword = \"{PASS}\"\n\
         [[auth.users]]\nname = \"bob\"\npassword = \"builder\"\n"
    );
    let ports = relay_ports_arg();
    let admin_arg = admin.to_string();
    let mut args = vec!["--ports", &ports, "--admin", &admin_arg];
    args.extend_from_slice(extra);
    let s = TernServer::start_with_config(&config, &args);
    (s, admin)
}

/// A REST username/password pair under `secret` for `user`, expiring in `ttl` seconds.
fn rest(secret: &str, ttl: i64, user: &str) -> (String, String) {
    let expiry = u64::try_from(unix_now() as i64 + ttl).unwrap();
    rest_credential(&RestSecret::new(secret), expiry, Some(user), ':')
}

/// A signed Allocate for UDP relaying, sent once; its answer.
fn allocate_once(c: &mut TurnClient) -> Reply {
    let (tid, bytes) = c.encode(METHOD_ALLOCATE, &signed(vec![Attr::udp_transport()]));
    c.exchange(tid, &bytes).unwrap().expect("Allocate answered")
}

/// What an answer shows besides its transaction id and nonce value: code, every
/// attribute type with its length, and the size on the wire.
fn shape(r: &Reply) -> (Option<u16>, Vec<(u16, u16)>, usize) {
    let attrs = r.msg.msg.attributes.0.iter();
    let attrs = attrs.map(|a| (a.typ.0, a.length)).collect();
    (r.code, attrs, r.msg.msg.raw.len())
}

/// Wrong password, unknown user, a REST name signed with another secret, an expired
/// REST credential, a malformed REST name and no credentials at all are all the same
/// 401: same attributes, same lengths, same size, no MESSAGE-INTEGRITY. Nothing tells
/// a guesser which user names exist.
#[test]
fn every_credential_refusal_looks_the_same() {
    let (mut s, _) = start("", &[]);
    let expired = rest(SECRET, -10, "carol");
    let forged = rest("not-the-secret-0123456789", 3600, "carol");
    let refused = [
        ("wrong password", (USER.to_string(), "not it".to_string())),
        ("unknown user", ("mallory".to_string(), PASS.to_string())),
        ("REST, other secret", forged),
        ("REST, expired", expired),
        (
            "REST, malformed",
            ("soon:carol".to_string(), "x".to_string()),
        ),
    ];
    let mut nobody = TurnClient::new(s.addr, "", "").unwrap();
    let unsigned = Outgoing {
        attrs: vec![Attr::udp_transport()],
        ..Outgoing::default()
    };
    let reference = nobody.request(METHOD_ALLOCATE, &unsigned).unwrap();
    assert_eq!(reference.code, Some(401));
    assert!(!reference.msg.has_integrity());
    println!("every refusal: {:?}", shape(&reference));
    for (what, (user, pass)) in refused {
        let mut c = TurnClient::new(s.addr, &user, &pass).unwrap();
        let r = c.allocate(vec![]).unwrap();
        assert_eq!(r.code, Some(401), "{what}");
        assert_eq!(shape(&r), shape(&reference), "{what}");
        assert_eq!(r.msg.text(ATTR_REALM), Some(REALM), "{what}");
    }
    let (user, pass) = rest(SECRET, 3600, "carol");
    let mut c = TurnClient::new(s.addr, &user, &pass).unwrap();
    assert!(
        c.allocate(vec![]).unwrap().is_success(),
        "valid REST credential"
    );
    s.assert_still_serving(USER, PASS);
}

/// A UDP client bound to `ip:port`.
fn udp_client_at(s: &TernServer, ip: &str, port: u16) -> TurnClient {
    let socket = UdpSocket::bind((ip, port)).unwrap();
    TurnClient::with_socket(socket, s.addr, USER, PASS).unwrap()
}

/// A TCP client whose connection comes from `local`.
fn tcp_client_from(s: &TernServer, local: SocketAddr) -> TurnClient {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&local.into()).unwrap();
    socket.connect(&s.addr.into()).unwrap();
    let transport = ClientTransport::tcp_over(socket.into()).unwrap();
    TurnClient::with_transport(transport, s.addr, USER, PASS)
}

/// Sends a signed Allocate with `nonce` and expects 438 with a new nonce, which then
/// works.
fn assert_nonce_refused_then_fresh_one_works(c: &mut TurnClient, nonce: &str, what: &str) {
    c.set_nonce(nonce);
    let r = allocate_once(c);
    assert_eq!(r.code, Some(438), "{what}");
    assert!(!r.msg.has_integrity(), "{what}");
    let fresh = r.msg.text(ATTR_NONCE).expect("a fresh NONCE").to_string();
    assert_ne!(fresh, nonce, "{what}");
    c.set_nonce(&fresh);
    let r = allocate_once(c);
    assert!(r.is_success(), "{what}, with the fresh nonce: {:?}", r.code);
}

/// A nonce is good only for the address and transport it was issued to: replayed from
/// another port, another IP with the same port, or over TCP from the same IP and port,
/// it is 438 with a fresh nonce for the new source.
#[test]
fn nonce_is_bound_to_the_source_address_and_transport() {
    let (mut s, _) = start("", &[]);
    let mut owner = with_realm_and_nonce(TurnClient::new(s.addr, USER, PASS).unwrap());
    let nonce = owner.nonce().unwrap().to_string();
    let from = owner.local_addr();

    let other_port = TurnClient::new(s.addr, USER, PASS).unwrap();
    let mut other_port = with_realm_and_nonce(other_port);
    assert_nonce_refused_then_fresh_one_works(&mut other_port, &nonce, "another port");

    let mut other_ip = with_realm_and_nonce(udp_client_at(&s, "127.0.0.2", from.port()));
    assert_nonce_refused_then_fresh_one_works(&mut other_ip, &nonce, "another IP, same port");

    let mut over_tcp = with_realm_and_nonce(tcp_client_from(&s, from));
    assert_eq!(over_tcp.local_addr(), from);
    assert_nonce_refused_then_fresh_one_works(&mut over_tcp, &nonce, "TCP, same address");

    let r = allocate_once(&mut owner);
    assert!(
        r.is_success(),
        "the nonce still works where it was issued: {:?}",
        r.code
    );
    s.assert_still_serving(USER, PASS);
}

/// Past `auth.nonce_lifetime`, a genuine nonce is 438 Stale Nonce (counted as such)
/// with a fresh one that works; the allocation is untouched.
#[test]
fn stale_nonce_is_438_then_the_fresh_one_works() {
    let (mut s, admin) = start("nonce_lifetime = 2", &[]);
    let mut c = TurnClient::new(s.addr, USER, PASS).unwrap();
    assert!(c.allocate(vec![]).unwrap().is_success());
    let old = c.nonce().unwrap().to_string();
    // Issued in some second X and valid while the clock reads before X + 2.
    std::thread::sleep(Duration::from_millis(2200));
    let (tid, bytes) = c.encode(METHOD_REFRESH, &signed(vec![]));
    let r = c.exchange(tid, &bytes).unwrap().expect("Refresh answered");
    assert_eq!(r.code, Some(438));
    let fresh = r.msg.text(ATTR_NONCE).unwrap().to_string();
    assert_ne!(fresh, old);
    assert_eq!(
        metric(admin, "tern_auth_failures_total{reason=\"stale_nonce\"}"),
        1.0
    );
    c.set_nonce(&fresh);
    let (tid, bytes) = c.encode(METHOD_REFRESH, &signed(vec![]));
    let r = c.exchange(tid, &bytes).unwrap().expect("Refresh answered");
    assert_eq!(r.lifetime(), Some(600), "{:?}", r.code);
    s.assert_still_serving(USER, PASS);
}

/// Another user's valid credentials on an existing allocation's 5-tuple are 441 for
/// every request that would touch it, signed with that user's key; the allocation is
/// neither deleted nor given permissions.
#[test]
fn another_users_credentials_on_an_allocation_are_441() {
    let (mut s, _) = start("", &["--allow-peer", "127.0.0.0/8"]);
    let mut c = TurnClient::new(s.addr, USER, PASS).unwrap();
    let r = c.allocate(vec![]).unwrap();
    let relay = r.xor_address(ATTR_XOR_RELAYED_ADDRESS).unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer_addr = peer.local_addr().unwrap();

    c.set_credentials("bob", "builder");
    let r = c.refresh(Some(0)).unwrap();
    assert_eq!(r.code, Some(441));
    assert!(r.msg.has_integrity(), "bob proved who he is");
    assert_eq!(c.create_permission(&[peer_addr]).unwrap().code, Some(441));
    assert_eq!(c.channel_bind(0x4000, peer_addr).unwrap().code, Some(441));
    assert_eq!(c.allocate(vec![]).unwrap().code, Some(437));

    c.set_credentials(USER, PASS);
    peer.send_to(b"no permission", relay).unwrap();
    assert!(
        c.recv_data(QUIET).unwrap().is_none(),
        "bob installed a permission"
    );
    assert_eq!(
        c.refresh(None).unwrap().lifetime(),
        Some(600),
        "still alice's"
    );
    s.assert_still_serving(USER, PASS);
}

const GUESS_BURST: u32 = 40;
const GUESS_RATE: u32 = 2;
const GUESSERS: usize = 4;
const GUESSES_EACH: usize = 50;

/// Password guessing from one IP over several source ports (which the kernel spreads
/// over the workers): every wrong guess is counted, but the guesser gets at most
/// burst + rate·t answers. A client of that IP that already holds a nonce still
/// allocates, and another IP is answered as usual.
#[test]
fn password_guessing_from_one_ip_is_throttled_and_counted() {
    let toml =
        format!("unauthorized_per_second = {GUESS_RATE}\nunauthorized_burst = {GUESS_BURST}");
    let (mut s, admin) = start(&toml, &["--workers", "2"]);
    let mut legit = with_realm_and_nonce(TurnClient::new(s.addr, USER, PASS).unwrap());

    let started = Instant::now();
    let mut guessers: Vec<TurnClient> = (0..GUESSERS)
        .map(|i| TurnClient::new(s.addr, USER, &format!("guess {i}")).unwrap())
        .collect();
    // Each guesser's first (unsigned) Allocate fetches its nonce.
    let unsigned = Outgoing {
        attrs: vec![Attr::udp_transport()],
        ..Outgoing::default()
    };
    let mut answered = 0;
    for g in &mut guessers {
        assert_eq!(
            g.request(METHOD_ALLOCATE, &unsigned).unwrap().code,
            Some(401)
        );
        answered += 1;
    }
    for round in 0..GUESSES_EACH {
        for (i, g) in guessers.iter_mut().enumerate() {
            g.set_credentials(USER, &format!("guess {i}-{round}"));
            let (_, bytes) = g.encode(METHOD_ALLOCATE, &signed(vec![Attr::udp_transport()]));
            g.send_raw(&bytes).unwrap();
        }
    }
    for g in &mut guessers {
        while let Some(bytes) = g.transport.recv(QUIET).unwrap() {
            let r = to_reply(Request::parse(&bytes).unwrap());
            assert_eq!(r.code, Some(401));
            answered += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let bound = f64::from(GUESS_BURST) + f64::from(GUESS_RATE) * elapsed.ceil();
    let attempts = GUESSERS + GUESSERS * GUESSES_EACH;
    println!("{attempts} wrong guesses in {elapsed:.2} s, {answered} answered (bound {bound})");
    assert!(
        f64::from(answered) <= bound,
        "{answered} answers in {elapsed:.2} s, more than {GUESS_BURST} + {GUESS_RATE}/s"
    );
    // `legit` fetched its nonce with one more.
    let failures = metric(admin, "tern_auth_failures_total{reason=\"unauthorized\"}");
    assert_eq!(failures, (attempts + 1) as f64, "every guess is counted");
    assert_eq!(
        metric(admin, "tern_responses_total{code=\"401\"}"),
        f64::from(answered + 1)
    );

    let r = legit.allocate(vec![]).unwrap();
    assert!(
        r.is_success(),
        "a client with a nonce is not throttled: {:?}",
        r.code
    );
    let mut elsewhere = udp_client_at(&s, "127.0.0.2", 0);
    let r = elsewhere.allocate(vec![]).unwrap();
    assert!(r.is_success(), "another IP is answered: {:?}", r.code);
    // Not `assert_still_serving`: its unauthenticated Binding from 127.0.0.1 would
    // rightly go unanswered now.
    s.assert_running();
    assert!(!s.logs().contains("panicked"), "{}", s.logs());
}

const ADMIN_TOKEN: &str = "attack-suite-admin-token-0123456789";

/// An Allocate whose USERNAME, REALM and NONCE are arbitrary bytes, with a
/// MESSAGE-INTEGRITY keyed from their lossy text (no user has such a key).
fn hostile_allocate([username, realm, nonce]: [&[u8]; 3]) -> (TransactionId, Vec<u8>) {
    let tid = new_transaction_id();
    let mut msg = Message::new();
    msg.set_type(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST));
    msg.transaction_id = tid;
    msg.write_header();
    msg.add(ATTR_REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    msg.add(ATTR_USERNAME, username);
    msg.add(ATTR_REALM, realm);
    msg.add(ATTR_NONCE, nonce);
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let key = LongTermKey::derive(&lossy(username), &lossy(realm), PASS);
    MessageIntegrity(key.as_bytes().to_vec())
        .add_to(&mut msg)
        .unwrap();
    (tid, msg.raw)
}

/// Control characters (newline, carriage return, escape, NUL), text that would forge a
/// log line, names of 509 bytes and of 60000 bytes, and bytes that are not UTF-8, in
/// USERNAME, REALM and NONCE: each is refused with the code that fits (401 for a name
/// no one has, 438 for a nonce we did not issue, 400 for text that is not UTF-8), and a
/// REST user id full of them that authenticates (like a user revoked through the admin
/// API) is logged escaped. The debug log holds no raw control character, no forged
/// line, and no password, key or secret.
#[test]
fn hostile_names_are_refused_and_logged_safely() {
    let (mut s, admin) = start("", &["--log-level", "debug", "--admin-token", ADMIN_TOKEN]);
    let mut c = with_realm_and_nonce(TurnClient::new(s.addr, USER, PASS).unwrap());
    let nonce = c.nonce().unwrap().as_bytes().to_vec();
    let forged_line = "\n2030-01-01T00:00:00Z  INFO tern: FORGED admin login";
    let control = format!("ev\r\x1b[2J\x1b[31mil\0{forged_line}");
    let long = "A".repeat(509);
    let huge = "B".repeat(60_000);
    let not_utf8: &[u8] = &[0xFF, 0xFE, b'x', 0x80, 0xC3];
    let realm = REALM.as_bytes();
    let user = USER.as_bytes();
    // USERNAME, REALM, NONCE; the code they earn.
    let cases: Vec<(&str, [&[u8]; 3], u16)> = vec![
        ("control USERNAME", [control.as_bytes(), realm, &nonce], 401),
        (
            "REST-shaped USERNAME",
            [b"9999999999:\x1b[2J\n\0", realm, &nonce],
            401,
        ),
        ("control REALM", [user, control.as_bytes(), &nonce], 401),
        ("control NONCE", [user, realm, control.as_bytes()], 438),
        ("509-byte USERNAME", [long.as_bytes(), realm, &nonce], 401),
        ("60000-byte USERNAME", [huge.as_bytes(), realm, &nonce], 401),
        ("60000-byte REALM", [user, huge.as_bytes(), &nonce], 401),
        ("60000-byte NONCE", [user, realm, huge.as_bytes()], 438),
        ("non-UTF-8 USERNAME", [not_utf8, realm, &nonce], 400),
        ("non-UTF-8 REALM", [user, not_utf8, &nonce], 400),
        ("non-UTF-8 NONCE", [user, realm, not_utf8], 400),
    ];
    for (what, names, code) in cases {
        let (tid, bytes) = hostile_allocate(names);
        let r = c.exchange(tid, &bytes).unwrap();
        let r = r.unwrap_or_else(|| panic!("{what}: no answer"));
        assert_eq!(r.code, Some(code), "{what}");
        assert!(!r.msg.has_integrity(), "{what}");
    }

    let (user, pass) = rest(SECRET, 3600, &control);
    let mut odd = TurnClient::new(s.addr, &user, &pass).unwrap();
    let r = odd.allocate(vec![]).unwrap();
    assert!(r.is_success(), "a REST user id is opaque: {:?}", r.code);
    assert!(odd.refresh(Some(0)).unwrap().is_success());
    let revoke = "/api/users/ev%0D%1B%5B2J%00%0A2030-01-01T00:00:00Z%20FORGED/revoke";
    let (status, _) = http_request(admin, "POST", revoke, Some(ADMIN_TOKEN), "");
    assert_eq!(status, 200);
    s.assert_still_serving(USER, PASS);

    let log = s.stderr();
    assert!(
        log.contains(r"\n2030-01-01T00:00:00Z  INFO tern: FORGED") && log.contains("user revoked"),
        "the names are logged, escaped:\n{log}"
    );
    let raw = log
        .chars()
        .find(|ch| ch.is_control() && *ch != '\n' && *ch != '\t');
    assert_eq!(raw, None, "raw control character in the log:\n{log:?}");
    assert!(
        !log.lines().any(|l| l.starts_with("2030-")),
        "a forged line in the log:\n{log}"
    );
    let alice_key = LongTermKey::derive(USER, REALM, PASS).to_hex();
    let output = s.logs();
    for secret in [PASS, "builder", SECRET, &pass, &alice_key] {
        assert!(
            !output.contains(secret),
            "{secret:?} in the output:\n{output}"
        );
    }
}
