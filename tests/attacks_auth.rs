//! Attacks on authentication against a running `tern serve` on loopback: hostile
//! USERNAME/REALM/NONCE bytes must neither crash the server nor reach its log raw.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use stun::agent::TransactionId;
use stun::attributes::*;
use stun::integrity::MessageIntegrity;
use stun::message::*;
use support::{TernServer, free_udp_tcp_port, relay_ports_arg};
use tern::auth::{LongTermKey, RestSecret, rest_credential};
use tern::client::{TurnClient, new_transaction_id};

const USER: &str = "alice";
const PASS: &str = "wonderland";
const REALM: &str = "attacks.example";
const SECRET: &str = "attack-suite-secret-0123456789";

/// A server with static users alice and bob, REST credentials under [`SECRET`], an
/// admin listener, `auth_toml` in its `[auth]` table and `extra` arguments.
fn start(auth_toml: &str, extra: &[&str]) -> (TernServer, SocketAddr) {
    let admin = SocketAddr::from(([127, 0, 0, 1], free_udp_tcp_port()));
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

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A REST username/password pair under `secret` for `user`, expiring in `ttl` seconds.
fn rest(secret: &str, ttl: i64, user: &str) -> (String, String) {
    let expiry = u64::try_from(unix_now() as i64 + ttl).unwrap();
    rest_credential(&RestSecret::new(secret), expiry, Some(user), ':')
}

/// A client that knows realm and nonce (from the 437 to a signed Refresh) and has no
/// allocation.
fn authenticated(mut c: TurnClient) -> TurnClient {
    assert_eq!(c.refresh(None).unwrap().code, Some(437));
    c
}

/// A fresh client still gets an allocation, and the server never panicked.
fn assert_still_serving(s: &mut TernServer) {
    s.assert_running();
    let mut c = TurnClient::new(s.addr, USER, PASS).unwrap();
    let r = c.allocate(vec![]).unwrap();
    assert!(r.is_success(), "{:?}\n{}", r.code, s.logs());
    assert!(!s.logs().contains("panicked"), "{}", s.logs());
}

const ADMIN_TOKEN: &str = "attack-suite-admin-token-0123456789";

/// POSTs `path` to the admin API with [`ADMIN_TOKEN`]; the status code.
fn admin_post(admin: SocketAddr, path: &str) -> u16 {
    let mut stream = TcpStream::connect_timeout(&admin, Duration::from_secs(2)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

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
    let mut c = authenticated(TurnClient::new(s.addr, USER, PASS).unwrap());
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
    assert_eq!(admin_post(admin, revoke), 200);
    assert_still_serving(&mut s);

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
