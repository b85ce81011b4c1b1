//! Protocol abuse against a running `tern serve` on loopback: attributes after
//! MESSAGE-INTEGRITY, unknown comprehension-required attributes, truncation at every
//! byte, length fields that lie, responses and indications sent to the server, TURN
//! loops through the server's own relay addresses, and ChannelData on channels that
//! are not bound or cannot exist.
//!
//! Malformed input must be dropped without an answer (or refused with the code the RFC
//! asks for), leave no state behind, and leave the server serving. Peers are sockets on
//! 127.0.0.0/8; nothing is sent anywhere else.

#[path = "support/sans_io.rs"]
mod sans_io;
mod support;

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use stun::attributes::*;
use stun::message::*;
use support::{TernServer, relay_ports_arg, with_realm_and_nonce};
use tern::client::{Attr, Outgoing, Reply, Signer, TurnClient, encode_message, signed, to_reply};
use tern::core::{FiveTuple, Now, Transport};
use tern::proto::Request;

const USER: &str = "alice";
const PASS: &str = "wonderland";
/// How long to listen for something that must not come.
const QUIET: Duration = Duration::from_millis(400);
/// How long to wait for something that must come.
const WAIT: Duration = Duration::from_secs(2);
const HEADER: usize = 20;
/// A comprehension-required attribute type no TURN server understands.
const UNKNOWN_REQUIRED: AttrType = AttrType(0x0033);
/// RFC 5780 CHANGE-REQUEST: asking for a change is unknown without `[server.nat_discovery]`.
const CHANGE_REQUEST: AttrType = AttrType(0x0003);

fn start(extra: &[&str]) -> TernServer {
    let ports = relay_ports_arg();
    let mut args = vec![
        "--user",
        "alice:wonderland",
        "--user",
        "bob:builder",
        "--ports",
        &ports,
    ];
    args.extend_from_slice(extra);
    TernServer::start(&args)
}

/// A server that may relay to loopback peers (the test peers live there).
fn start_with_loopback_peers(extra: &[&str]) -> TernServer {
    let mut args = vec!["--allow-peer", "127.0.0.0/8"];
    args.extend_from_slice(extra);
    start(&args)
}

fn client(s: &TernServer) -> TurnClient {
    TurnClient::new(s.addr, USER, PASS).unwrap()
}

fn allocated(s: &TernServer) -> (TurnClient, SocketAddr) {
    let mut c = client(s);
    let r = c.allocate(vec![]).unwrap();
    assert!(r.is_success(), "allocate: {:?}\n{}", r.code, s.logs());
    (c, r.xor_address(ATTR_XOR_RELAYED_ADDRESS).unwrap())
}

/// A UDP socket on `ip` (in 127.0.0.0/8) standing in for a media peer.
fn peer_on(ip: &str) -> (UdpSocket, SocketAddr) {
    let socket = UdpSocket::bind((ip, 0)).unwrap();
    socket.set_read_timeout(Some(QUIET)).unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

fn peer() -> (UdpSocket, SocketAddr) {
    peer_on("127.0.0.1")
}

/// The next datagram `peer` receives within [`QUIET`].
fn peer_gets(peer: &UdpSocket) -> Option<Vec<u8>> {
    let mut buf = [0u8; 2048];
    peer.recv_from(&mut buf)
        .ok()
        .map(|(n, _)| buf[..n].to_vec())
}

/// Whether a datagram from `peer` to `relay` reaches the client: a permission for the
/// peer's IP is installed.
fn reaches_client(c: &mut TurnClient, peer: &UdpSocket, relay: SocketAddr) -> bool {
    peer.send_to(b"knock", relay).unwrap();
    c.recv_data(QUIET).unwrap().is_some()
}

/// Every datagram or frame the server sends `c` within `wait`, parsed or not.
fn drain(c: &mut TurnClient, wait: Duration) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    while let Some(bytes) = c
        .transport
        .recv(deadline.saturating_duration_since(Instant::now()))
        .unwrap()
    {
        got.push(bytes);
    }
    got
}

fn assert_silent(c: &mut TurnClient, what: &str) {
    let got = drain(c, QUIET);
    assert!(got.is_empty(), "{what}: the server answered {got:02x?}");
}

/// `c`'s credentials with the realm and nonce it learned.
fn signer(c: &TurnClient) -> Signer<'_> {
    Signer {
        username: USER,
        realm: c.realm().expect("realm learned"),
        nonce: c.nonce().expect("nonce learned"),
        password: PASS,
    }
}

/// A message of any class carrying `attrs`, signed with `c`'s credentials.
fn signed_message(
    c: &TurnClient,
    method: Method,
    class: MessageClass,
    attrs: Vec<Attr>,
) -> Vec<u8> {
    let tid = tern::client::new_transaction_id();
    encode_message(method, class, tid, &signed(attrs), &signer(c))
}

/// A Binding request, with FINGERPRINT when asked.
fn binding_request(c: &TurnClient, fingerprint: bool) -> (stun::agent::TransactionId, Vec<u8>) {
    let out = Outgoing {
        fingerprint,
        ..Outgoing::default()
    };
    c.encode(METHOD_BINDING, &out)
}

/// A signed Allocate for UDP relaying, with FINGERPRINT when asked. Layout: header,
/// REQUESTED-TRANSPORT (8 bytes), USERNAME, REALM, NONCE, MESSAGE-INTEGRITY (24 bytes),
/// then FINGERPRINT (8 bytes).
fn signed_allocate(c: &TurnClient, fingerprint: bool) -> (stun::agent::TransactionId, Vec<u8>) {
    let out = Outgoing {
        attrs: vec![Attr::udp_transport()],
        fingerprint,
        sign: true,
        ..Outgoing::default()
    };
    c.encode(METHOD_ALLOCATE, &out)
}

/// `bytes` with the STUN header's length field set to `length`.
fn with_length(bytes: &[u8], length: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[2..4].copy_from_slice(&u16::try_from(length).unwrap().to_be_bytes());
    b
}

/// `bytes` with the 16-bit field at `at` set to `value` (an attribute length, say).
fn with_u16(bytes: &[u8], at: usize, value: u16) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at..at + 2].copy_from_slice(&value.to_be_bytes());
    b
}

fn parse_reply(bytes: &[u8]) -> Reply {
    to_reply(Request::parse(bytes).expect("the server's answer parses"))
}

// ---------------------------------------------------------------------------------------
// Attributes after MESSAGE-INTEGRITY
// ---------------------------------------------------------------------------------------

/// A LIFETIME after MESSAGE-INTEGRITY is not covered by the MAC: whatever it says, the
/// lifetime granted is the one before it (or the default), with or without a
/// FINGERPRINT computed over the smuggled attribute.
#[test]
fn a_lifetime_after_message_integrity_changes_nothing() {
    let mut s = start(&[]);
    for fingerprint in [false, true] {
        for (before, granted) in [(Some(1200), 1200), (None, 600)] {
            let what = format!("fingerprint {fingerprint}, LIFETIME before MI {before:?}");
            let mut c = client(&s);
            let allocate = Outgoing {
                attrs: [Attr::udp_transport()]
                    .into_iter()
                    .chain(before.map(Attr::lifetime))
                    .collect(),
                after_integrity: vec![Attr::lifetime(3000)],
                fingerprint,
                sign: true,
            };
            let r = c.request(METHOD_ALLOCATE, &allocate).unwrap();
            assert!(r.is_success(), "{what}: {:?}", r.code);
            assert_eq!(r.lifetime(), Some(granted), "Allocate, {what}");

            let refresh = Outgoing {
                attrs: before.map(Attr::lifetime).into_iter().collect(),
                after_integrity: vec![Attr::lifetime(0)],
                fingerprint,
                sign: true,
            };
            let r = c.request(METHOD_REFRESH, &refresh).unwrap();
            assert_eq!(r.lifetime(), Some(granted), "Refresh, {what}");
            let r = c.refresh(None).unwrap();
            assert!(r.is_success(), "a trailing LIFETIME 0 deleted it, {what}");
        }
    }
    s.assert_still_serving(USER, PASS);
}

/// An XOR-PEER-ADDRESS after MESSAGE-INTEGRITY gets no permission, and one that is
/// only there is as good as none (400).
#[test]
fn a_peer_after_message_integrity_gets_no_permission() {
    let mut s = start_with_loopback_peers(&[]);
    let (mut c, relay) = allocated(&s);
    // Permissions are per IP, so the two peers need different IPs.
    let (listed, listed_addr) = peer_on("127.0.0.1");
    let (smuggled, smuggled_addr) = peer_on("127.0.0.2");
    for fingerprint in [false, true] {
        let out = Outgoing {
            attrs: vec![Attr::Peer(listed_addr)],
            after_integrity: vec![Attr::Peer(smuggled_addr)],
            fingerprint,
            sign: true,
        };
        let r = c.request(METHOD_CREATE_PERMISSION, &out).unwrap();
        assert!(r.is_success(), "{:?}", r.code);
        let out = Outgoing {
            attrs: vec![Attr::channel(0x4000), Attr::Peer(listed_addr)],
            after_integrity: vec![Attr::Peer(smuggled_addr)],
            fingerprint,
            sign: true,
        };
        let r = c.request(METHOD_CHANNEL_BIND, &out).unwrap();
        assert!(r.is_success(), "one peer before MI: {:?}", r.code);
    }
    for method in [METHOD_CREATE_PERMISSION, METHOD_CHANNEL_BIND] {
        let out = Outgoing {
            attrs: vec![Attr::channel(0x4001)],
            after_integrity: vec![Attr::Peer(smuggled_addr)],
            sign: true,
            ..Outgoing::default()
        };
        assert_eq!(c.request(method, &out).unwrap().code, Some(400), "{method}");
    }
    assert!(
        !reaches_client(&mut c, &smuggled, relay),
        "the smuggled peer got a permission"
    );
    assert!(
        reaches_client(&mut c, &listed, relay),
        "the listed peer did not"
    );
    s.assert_still_serving(USER, PASS);
}

/// Attributes after MESSAGE-INTEGRITY are not read at all: a REQUESTED-TRANSPORT there
/// is missing (400), and an unknown comprehension-required one there earns no 420.
#[test]
fn required_attributes_after_message_integrity_are_not_read() {
    let mut s = start(&[]);
    let mut c = client(&s);
    let out = Outgoing {
        after_integrity: vec![Attr::udp_transport()],
        sign: true,
        ..Outgoing::default()
    };
    assert_eq!(c.request(METHOD_ALLOCATE, &out).unwrap().code, Some(400));
    let out = Outgoing {
        attrs: vec![Attr::udp_transport()],
        after_integrity: vec![Attr::Raw(UNKNOWN_REQUIRED, vec![0; 4])],
        sign: true,
        ..Outgoing::default()
    };
    let r = c.request(METHOD_ALLOCATE, &out).unwrap();
    assert!(r.is_success(), "{:?}", r.code);
    s.assert_still_serving(USER, PASS);
}

// ---------------------------------------------------------------------------------------
// Unknown attributes
// ---------------------------------------------------------------------------------------

fn binding_with(c: &mut TurnClient, attrs: Vec<Attr>) -> Reply {
    let out = Outgoing {
        attrs,
        ..Outgoing::default()
    };
    let (tid, bytes) = c.encode(METHOD_BINDING, &out);
    c.exchange(tid, &bytes).unwrap().expect("Binding answered")
}

/// A Binding needs no credentials: unknown comprehension-required attributes (RFC 5780
/// CHANGE-REQUEST among them) earn a 420 listing every one, optional ones are ignored.
#[test]
fn unknown_comprehension_required_attributes_in_a_binding_are_420() {
    let mut s = start(&[]);
    let mut c = client(&s);
    let odd = Attr::Raw(UNKNOWN_REQUIRED, vec![1, 2, 3, 4]);
    let r = binding_with(&mut c, vec![odd.clone()]);
    assert_eq!(r.code, Some(420));
    assert_eq!(r.msg.attr(ATTR_UNKNOWN_ATTRIBUTES), Some(&[0x00, 0x33][..]));
    assert_eq!(r.xor_address(ATTR_XORMAPPED_ADDRESS), None);

    let change = Attr::Raw(CHANGE_REQUEST, vec![0, 0, 0, 6]);
    let r = binding_with(&mut c, vec![change, odd]);
    assert_eq!(
        r.code,
        Some(420),
        "RFC 5780 CHANGE-REQUEST is not served by default"
    );
    assert_eq!(
        r.msg.attr(ATTR_UNKNOWN_ATTRIBUTES),
        Some(&[0x00, 0x03, 0x00, 0x33][..]),
        "every unknown attribute is listed, in order"
    );

    let optional = Attr::Raw(AttrType(0x8033), vec![1, 2, 3, 4]);
    let r = binding_with(&mut c, vec![optional]);
    assert!(r.is_success(), "{:?}", r.code);
    assert_eq!(r.xor_address(ATTR_XORMAPPED_ADDRESS), Some(c.local_addr()));
    s.assert_still_serving(USER, PASS);
}

/// TURN requests are authenticated before their attributes are looked at: unsigned,
/// the answer is a plain 401; signed, a 420 with UNKNOWN-ATTRIBUTES and
/// MESSAGE-INTEGRITY, and nothing is created, refreshed or installed.
#[test]
fn unknown_comprehension_required_attributes_in_turn_requests_are_420() {
    let mut s = start_with_loopback_peers(&[]);
    let odd = Attr::Raw(UNKNOWN_REQUIRED, vec![0; 4]);
    let mut c = client(&s);
    let unsigned = Outgoing {
        attrs: vec![Attr::udp_transport(), odd.clone()],
        ..Outgoing::default()
    };
    let r = c.request(METHOD_ALLOCATE, &unsigned).unwrap();
    assert_eq!(r.code, Some(401));
    assert_eq!(r.msg.attr(ATTR_UNKNOWN_ATTRIBUTES), None);

    let r = c.allocate(vec![odd.clone()]).unwrap();
    assert_eq!(r.code, Some(420));
    assert_eq!(r.msg.attr(ATTR_UNKNOWN_ATTRIBUTES), Some(&[0x00, 0x33][..]));
    assert!(
        r.msg.has_integrity(),
        "an answer after authentication is signed"
    );
    assert_eq!(
        c.refresh(None).unwrap().code,
        Some(437),
        "nothing was allocated"
    );

    let relay = c.allocate(vec![]).unwrap();
    let relay = relay.xor_address(ATTR_XOR_RELAYED_ADDRESS).unwrap();
    let (peer, peer_addr) = peer();
    let refused = [
        (METHOD_REFRESH, vec![Attr::lifetime(0), odd.clone()]),
        (
            METHOD_CREATE_PERMISSION,
            vec![Attr::Peer(peer_addr), odd.clone()],
        ),
        (
            METHOD_CHANNEL_BIND,
            vec![Attr::channel(0x4000), Attr::Peer(peer_addr), odd.clone()],
        ),
    ];
    for (method, attrs) in refused {
        let r = c.request(method, &signed(attrs)).unwrap();
        assert_eq!(r.code, Some(420), "{method}");
        assert_eq!(r.msg.attr(ATTR_UNKNOWN_ATTRIBUTES), Some(&[0x00, 0x33][..]));
    }
    assert!(
        !reaches_client(&mut c, &peer, relay),
        "a permission was installed"
    );
    let r = c.refresh(None).unwrap();
    assert!(
        r.is_success(),
        "the refused LIFETIME 0 deleted the allocation"
    );

    let optional = Attr::Raw(AttrType(0xC033), vec![0; 4]);
    let r = c.request(
        METHOD_CREATE_PERMISSION,
        &signed(vec![Attr::Peer(peer_addr), optional]),
    );
    assert!(r.unwrap().is_success(), "comprehension-optional is ignored");
    s.assert_still_serving(USER, PASS);
}

// ---------------------------------------------------------------------------------------
// Truncation and lying lengths
// ---------------------------------------------------------------------------------------

/// Every prefix of a signed Allocate (with and without FINGERPRINT) and of a Binding,
/// as a datagram of its own, is dropped without an answer; the whole messages are
/// served after, and the Allocate gets a fresh allocation (no truncated one made any).
#[test]
fn truncated_datagrams_are_dropped_at_every_length() {
    let mut s = start(&[]);
    let mut c = with_realm_and_nonce(client(&s));
    let (allocate_tid, allocate) = signed_allocate(&c, true);
    let (_, unfingerprinted) = signed_allocate(&c, false);
    let (binding_tid, binding) = binding_request(&c, true);
    let mut sent = 0;
    for message in [&allocate, &unfingerprinted, &binding] {
        for len in 0..message.len() {
            c.send_raw(&message[..len]).unwrap();
            sent += 1;
        }
    }
    println!("{sent} truncated datagrams, no answer");
    assert_silent(&mut c, &format!("{sent} truncated datagrams"));
    let r = c
        .exchange(allocate_tid, &allocate)
        .unwrap()
        .expect("Allocate answered");
    assert!(r.is_success(), "{:?}", r.code);
    let r = c
        .exchange(binding_tid, &binding)
        .unwrap()
        .expect("Binding answered");
    assert!(r.is_success());
    s.assert_still_serving(USER, PASS);
}

/// A signed Allocate cut at every attribute boundary before the end of its
/// MESSAGE-INTEGRITY, with the header length fixed up to match, is a well-framed
/// message missing what the MAC needs: answered 401 (or dropped), never a success.
#[test]
fn cuts_with_a_matching_length_field_never_succeed() {
    let mut s = start(&[]);
    let mut c = with_realm_and_nonce(client(&s));
    let (tid, whole) = signed_allocate(&c, true);
    let integrity_end = whole.len() - 8;
    // Cut exactly at `integrity_end` is a valid message without FINGERPRINT: left out.
    let cuts: Vec<usize> = (HEADER..whole.len())
        .step_by(4)
        .filter(|&len| len != integrity_end)
        .collect();
    for &len in &cuts {
        c.send_raw(&with_length(&whole[..len], len - HEADER))
            .unwrap();
    }
    let answers: Vec<Option<u16>> = drain(&mut c, QUIET)
        .iter()
        .map(|b| parse_reply(b).code)
        .collect();
    assert!(
        answers.iter().all(|code| *code == Some(401)),
        "answers to {} cuts: {answers:?}",
        cuts.len()
    );
    println!("{} cuts, {} answered, all 401", cuts.len(), answers.len());
    assert!(
        !answers.is_empty(),
        "cuts before MESSAGE-INTEGRITY are challenged"
    );
    let r = c.exchange(tid, &whole).unwrap().expect("Allocate answered");
    assert!(r.is_success(), "a cut made an allocation: {:?}", r.code);
    s.assert_still_serving(USER, PASS);
}

/// Waits for the server to close `c`'s stream; panics if it answers or keeps it open.
fn assert_closed(c: &mut TurnClient, what: &str) {
    match c.transport.recv(WAIT) {
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
            ) => {}
        other => panic!("{what}: expected the connection closed, got {other:?}"),
    }
}

/// Over TCP, a frame cut anywhere and followed by bytes that are not TURN closes the
/// connection without an answer, for every cut of a Binding and of a signed Allocate.
#[test]
fn truncated_stream_frames_followed_by_garbage_close_the_connection() {
    let mut s = start(&[]);
    let c = with_realm_and_nonce(client(&s));
    let (_, allocate) = signed_allocate(&c, true);
    let (_, binding) = binding_request(&c, true);
    // Longer than any frame above, so every cut frame completes and garbage follows.
    let garbage = [0xFF; 256];
    for message in [&binding, &allocate] {
        for len in 0..message.len() {
            let mut tcp = TurnClient::connect_tcp(s.addr, USER, PASS).unwrap();
            let mut bytes = message[..len].to_vec();
            bytes.extend_from_slice(&garbage);
            tcp.send_raw(&bytes).unwrap();
            assert_closed(&mut tcp, &format!("cut at {len} of {}", message.len()));
        }
    }
    println!(
        "{} TCP connections, each a cut frame then garbage: all closed unanswered",
        binding.len() + allocate.len()
    );
    // A length field 4 over: the frame takes 4 bytes of garbage, and the rest closes it.
    let mut tcp = TurnClient::connect_tcp(s.addr, USER, PASS).unwrap();
    let mut long = with_length(&binding, binding.len() - HEADER + 4);
    long.extend_from_slice(&garbage);
    tcp.send_raw(&long).unwrap();
    assert_closed(&mut tcp, "length 4 over");
    s.assert_still_serving(USER, PASS);
    let mut tcp = TurnClient::connect_tcp(s.addr, USER, PASS).unwrap();
    let (tid, bytes) = binding_request(&tcp, false);
    let r = tcp
        .exchange(tid, &bytes)
        .unwrap()
        .expect("TCP still served");
    assert!(r.is_success());
}

/// STUN length fields that disagree with the datagram, or attribute lengths that run
/// past the message: dropped without an answer.
#[test]
fn stun_length_fields_that_lie_are_dropped() {
    let mut s = start(&[]);
    let mut c = with_realm_and_nonce(client(&s));
    let (binding_tid, binding) = binding_request(&c, true);
    let (allocate_tid, allocate) = signed_allocate(&c, false);
    let body = binding.len() - HEADER;
    let extended = |extra: &[u8]| {
        let mut b = binding.clone();
        b.extend_from_slice(extra);
        with_length(&b, body + extra.len())
    };
    // Offsets of length fields in the signed Allocate (see `signed_allocate`).
    let transport_len = HEADER + 2;
    let username_len = HEADER + 8 + 2;
    let integrity_len = allocate.len() - 24 + 2;
    let past_end_by_4 = u16::try_from(allocate.len() - (username_len + 2) + 4).unwrap();
    let lies: Vec<(&str, Vec<u8>)> = vec![
        ("header length 4 over", with_length(&binding, body + 4)),
        ("header length 4 under", with_length(&binding, body - 4)),
        ("header length +1", with_length(&binding, body + 1)),
        ("header length -1", with_length(&binding, body - 1)),
        ("header length 0", with_length(&binding, 0)),
        ("header length 0xFFFC", with_length(&binding, 0xFFFC)),
        ("two bytes after the message", extended(&[0, 0])),
        (
            "an attribute after FINGERPRINT",
            extended(&[0x80, 0x22, 0, 0]),
        ),
        (
            "Allocate header length 4 over",
            with_length(&allocate, allocate.len() - HEADER + 4),
        ),
        (
            "REQUESTED-TRANSPORT length 0x100",
            with_u16(&allocate, transport_len, 0x100),
        ),
        (
            "USERNAME length 0xFFFF",
            with_u16(&allocate, username_len, 0xFFFF),
        ),
        (
            "USERNAME length past the end by 4",
            with_u16(&allocate, username_len, past_end_by_4),
        ),
        (
            "MESSAGE-INTEGRITY length 16",
            with_u16(&allocate, integrity_len, 16),
        ),
        (
            "MESSAGE-INTEGRITY length 24",
            with_u16(&allocate, integrity_len, 24),
        ),
    ];
    for (_, bytes) in &lies {
        c.send_raw(bytes).unwrap();
    }
    let names: Vec<&str> = lies.iter().map(|(what, _)| *what).collect();
    assert_silent(&mut c, &format!("{names:?}"));
    let r = c
        .exchange(binding_tid, &binding)
        .unwrap()
        .expect("Binding answered");
    assert!(r.is_success());
    let r = c
        .exchange(allocate_tid, &allocate)
        .unwrap()
        .expect("Allocate answered");
    assert!(r.is_success(), "{:?}", r.code);
    s.assert_still_serving(USER, PASS);
}

/// ChannelData whose length runs past the datagram is dropped; one shorter than the
/// datagram relays exactly the announced bytes (the rest is padding).
#[test]
fn channel_data_length_fields_that_lie() {
    let mut s = start_with_loopback_peers(&[]);
    let (mut c, _) = allocated(&s);
    let (peer, peer_addr) = peer();
    assert!(c.channel_bind(0x4000, peer_addr).unwrap().is_success());
    let past_the_end: [&[u8]; 5] = [
        &[0x40, 0x00, 0x00, 0x10, 1, 2, 3, 4, 5, 6, 7, 8],
        &[0x40, 0x00, 0xFF, 0xFF, 1, 2, 3, 4],
        &[0x40, 0x00, 0x00, 0x01],
        &[0x40, 0x00, 0x00],
        &[0x40],
    ];
    for frame in past_the_end {
        c.send_raw(frame).unwrap();
    }
    c.send_raw(&[0x40, 0x00, 0x00, 0x04, b'a', b'b', b'c', b'd', b'x', b'y'])
        .unwrap();
    assert_eq!(peer_gets(&peer).as_deref(), Some(&b"abcd"[..]));
    assert_eq!(
        peer_gets(&peer),
        None,
        "a frame running past its datagram was relayed"
    );
    assert_silent(&mut c, "ChannelData");
    s.assert_still_serving(USER, PASS);
}

// ---------------------------------------------------------------------------------------
// Messages a server must not act on
// ---------------------------------------------------------------------------------------

/// Success and error responses of every method, and indications other than Send, all
/// correctly signed: no answer, no allocation, permission, channel or relayed data,
/// and a LIFETIME 0 in them deletes nothing.
#[test]
fn responses_and_indications_sent_to_the_server_are_ignored() {
    let mut s = start_with_loopback_peers(&[]);
    let (mut c, relay) = allocated(&s);
    let mut fresh = with_realm_and_nonce(client(&s));
    let (peer, peer_addr) = peer();
    let data = Attr::Raw(ATTR_DATA, b"smuggled".to_vec());
    let bodies = |method: Method| match method {
        METHOD_ALLOCATE => vec![Attr::udp_transport()],
        METHOD_REFRESH => vec![Attr::lifetime(0)],
        METHOD_CREATE_PERMISSION => vec![Attr::Peer(peer_addr)],
        METHOD_CHANNEL_BIND => vec![Attr::channel(0x4000), Attr::Peer(peer_addr)],
        _ => vec![Attr::Peer(peer_addr), data.clone()],
    };
    let methods = [
        METHOD_BINDING,
        METHOD_ALLOCATE,
        METHOD_REFRESH,
        METHOD_SEND,
        METHOD_DATA,
        METHOD_CREATE_PERMISSION,
        METHOD_CHANNEL_BIND,
    ];
    let mut sent = 0;
    for class in [
        CLASS_SUCCESS_RESPONSE,
        CLASS_ERROR_RESPONSE,
        CLASS_INDICATION,
    ] {
        for method in methods {
            if (method, class) == (METHOD_SEND, CLASS_INDICATION) {
                continue;
            }
            for sender in [&mut c, &mut fresh] {
                let bytes = signed_message(sender, method, class, bodies(method));
                sender.send_raw(&bytes).unwrap();
                sent += 1;
            }
        }
    }
    assert_silent(&mut c, &format!("{sent} responses and indications"));
    assert_silent(&mut fresh, "responses and indications");
    assert_eq!(peer_gets(&peer), None, "data was relayed");
    assert!(
        !reaches_client(&mut c, &peer, relay),
        "a permission was installed"
    );
    c.send_channel_data(0x4000, b"no channel").unwrap();
    assert_eq!(peer_gets(&peer), None, "a channel was bound");
    let r = c.refresh(None).unwrap();
    assert_eq!(r.lifetime(), Some(600), "the allocation is untouched");
    let r = fresh.allocate(vec![]).unwrap();
    assert!(r.is_success(), "an allocation was made: {:?}", r.code);
    s.assert_still_serving(USER, PASS);
}

// ---------------------------------------------------------------------------------------
// TURN loops
// ---------------------------------------------------------------------------------------

/// Allocations enough that, with 4 workers, some relay's datagrams to the listener
/// would all but certainly reach a worker that does not own that relay.
const LOOP_ALLOCATIONS: usize = 8;

/// A client cannot point its relay at the server's listener, with the default policy or
/// with loopback re-opened by the operator, over 4 workers: CreatePermission and
/// ChannelBind are 403, and requests sent there as Send data (a Binding, a signed
/// Allocate) bring nothing back through the relay. An echo peer shows that the same
/// path carries answers from a real peer.
#[test]
fn a_relay_cannot_talk_to_the_servers_listener() {
    for loopback_open in [false, true] {
        let mut extra = vec!["--workers", "4"];
        if loopback_open {
            extra.extend(["--allow-peer", "127.0.0.0/8"]);
        }
        let mut s = start(&extra);
        let (echo, echo_addr) = peer();
        let mut clients = Vec::new();
        for _ in 0..LOOP_ALLOCATIONS {
            let (mut c, relay) = allocated(&s);
            assert_eq!(
                c.create_permission(&[s.addr]).unwrap().code,
                Some(403),
                "{extra:?}"
            );
            assert_eq!(
                c.channel_bind(0x4000, s.addr).unwrap().code,
                Some(403),
                "{extra:?}"
            );
            let (_, request) = binding_request(&c, false);
            c.send_indication(s.addr, &request).unwrap();
            let (_, request) = signed_allocate(&c, false);
            c.send_indication(s.addr, &request).unwrap();
            clients.push((c, relay));
        }
        // Loopback peers need the operator's word; the relays' own answers come back.
        if loopback_open {
            let (c, relay) = &mut clients[0];
            assert!(c.create_permission(&[echo_addr]).unwrap().is_success());
            c.send_indication(echo_addr, b"echo").unwrap();
            let mut buf = [0u8; 64];
            let (n, from) = echo.recv_from(&mut buf).expect("echo peer reached");
            assert_eq!(from, *relay);
            echo.send_to(&buf[..n], *relay).unwrap();
            let (from, data) = c.recv_data(WAIT).unwrap().expect("the echo came back");
            assert_eq!((from, data.as_slice()), (Some(echo_addr), &b"echo"[..]));
        }
        std::thread::sleep(QUIET);
        for (c, relay) in &mut clients {
            let back = c.recv_data(Duration::from_millis(10)).unwrap();
            assert_eq!(back, None, "{extra:?}: the listener answered relay {relay}");
        }
        s.assert_still_serving(USER, PASS);
    }
}

/// Behind the peer policy, the engine drops a datagram from any of the server's relay
/// sockets, including one another worker bound (its port is taken in the shared pool):
/// the kernel hands a relay's datagram to whichever worker its address hashes to. No
/// client can reach this layer through tern, so the engine is driven directly.
#[test]
fn the_engine_drops_datagrams_from_any_workers_relay_socket() {
    let mut engine = sans_io::engine(sans_io::no_limit());
    let mut io = sans_io::Recorder::default();
    let port = sans_io::PORTS.0 + 3;
    assert!(
        engine.shared().ports().take(sans_io::RELAY_V4, port),
        "another worker's relay"
    );
    let from = |port, transport| FiveTuple {
        client: SocketAddr::new(sans_io::RELAY_V4, port),
        server: SocketAddr::new(sans_io::RELAY_V4, 3478),
        transport,
    };
    let now = Now {
        mono: Instant::now(),
        unix: 1_800_000_000,
    };
    let tid = tern::client::new_transaction_id();
    let binding = encode_message(
        METHOD_BINDING,
        CLASS_REQUEST,
        tid,
        &Outgoing::default(),
        &Signer::NONE,
    );
    engine.handle_client(now, from(port, Transport::Udp), &binding, &mut io);
    assert!(io.to_client.is_empty(), "a relay socket was answered");
    // Not relay sockets: a free port of the range, and TCP (relays are UDP only).
    engine.handle_client(now, from(port + 1, Transport::Udp), &binding, &mut io);
    engine.handle_client(now, from(port, Transport::Tcp), &binding, &mut io);
    assert_eq!(io.to_client.len(), 2);
}

// ---------------------------------------------------------------------------------------
// Channels
// ---------------------------------------------------------------------------------------

/// ChannelData on a channel that is not bound, bound by another client, or from a
/// client without an allocation (over UDP or TCP) goes nowhere.
#[test]
fn channel_data_on_an_unbound_or_foreign_channel_goes_nowhere() {
    let mut s = start_with_loopback_peers(&[]);
    let (mut a, _) = allocated(&s);
    let (mut b, _) = allocated(&s);
    let mut nobody = client(&s);
    let (peer, peer_addr) = peer();
    assert!(a.channel_bind(0x4000, peer_addr).unwrap().is_success());
    a.send_channel_data(0x4000, b"bound").unwrap();
    assert_eq!(peer_gets(&peer).as_deref(), Some(&b"bound"[..]));

    a.send_channel_data(0x4001, b"unbound").unwrap();
    a.send_channel_data(0x7FFF, b"unbound").unwrap();
    b.send_channel_data(0x4000, b"other client").unwrap();
    nobody.send_channel_data(0x4000, b"no allocation").unwrap();
    let mut tcp = TurnClient::connect_tcp(s.addr, USER, PASS).unwrap();
    let (tid, request) = binding_request(&tcp, false);
    assert!(tcp.exchange(tid, &request).unwrap().unwrap().is_success());
    tcp.send_channel_data(0x4000, b"tcp, no allocation")
        .unwrap();
    assert_eq!(peer_gets(&peer), None, "relayed");
    for c in [&mut a, &mut b, &mut nobody, &mut tcp] {
        assert_silent(c, "ChannelData");
    }
    let (tid, request) = binding_request(&tcp, false);
    assert!(
        tcp.exchange(tid, &request).unwrap().unwrap().is_success(),
        "the TCP connection is still served"
    );
    s.assert_still_serving(USER, PASS);
}

/// ChannelBind outside 0x4000-0x7FFF or with a malformed CHANNEL-NUMBER is 400 and
/// installs nothing; "ChannelData" with such a number is not ChannelData and is dropped.
#[test]
fn channel_numbers_outside_the_range_are_refused() {
    let mut s = start_with_loopback_peers(&[]);
    let (mut c, relay) = allocated(&s);
    let (peer, peer_addr) = peer();
    for number in [0x0000, 0x3FFF, 0x8000, 0xBFFF, 0xFFFF] {
        let r = c.channel_bind(number, peer_addr).unwrap();
        assert_eq!(r.code, Some(400), "channel {number:#06x}");
        assert!(r.msg.has_integrity());
    }
    for value in [vec![0x40, 0x00], vec![0x40, 0x00, 0, 0, 0, 0, 0, 0], vec![]] {
        let attrs = vec![
            Attr::Raw(ATTR_CHANNEL_NUMBER, value.clone()),
            Attr::Peer(peer_addr),
        ];
        let r = c.request(METHOD_CHANNEL_BIND, &signed(attrs)).unwrap();
        assert_eq!(r.code, Some(400), "CHANNEL-NUMBER {value:02x?}");
    }
    assert!(
        !reaches_client(&mut c, &peer, relay),
        "a permission was installed"
    );
    for number in [0x3FFFu16, 0x8000, 0xBFFF, 0xFFFF] {
        let [n0, n1] = number.to_be_bytes();
        c.send_raw(&[n0, n1, 0x00, 0x04, 1, 2, 3, 4]).unwrap();
    }
    assert_eq!(peer_gets(&peer), None, "relayed");
    assert_silent(&mut c, "out-of-range ChannelData");
    assert!(c.channel_bind(0x4000, peer_addr).unwrap().is_success());
    c.send_channel_data(0x4000, b"in range").unwrap();
    assert_eq!(peer_gets(&peer).as_deref(), Some(&b"in range"[..]));
    s.assert_still_serving(USER, PASS);
}
