//! Properties over generated inputs: the wire formats round-trip through the project's
//! encoders and its strict parser, and the sans-IO engine, fed arbitrary sequences of
//! datagrams from several 5-tuples with time advancing, never panics, keeps its
//! invariants (see `core_script::Driver::check`), and never answers a source that has
//! not authenticated beyond the budget of the per-IP limiter.
//!
//! No sockets: the engine runs against a recording `Io`.

#[path = "support/core_script.rs"]
mod core_script;

use proptest::collection::vec;
use proptest::prelude::*;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use stun::agent::TransactionId;
use stun::attributes::*;
use stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_INDICATION, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, METHOD_ALLOCATE,
    METHOD_BINDING, METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_DATA, METHOD_REFRESH,
    METHOD_SEND, MessageClass, MessageType, Method,
};
use stun::xoraddr::XorMappedAddress;

use core_script::sans_io::{self, MAX_UNAUTHENTICATED_ANSWER, PASSWORD, REALM, USER};
use core_script::{Driver, Op, PEER_IN_CLEAR, flags, message_type};
use tern::auth::{LongTermKey, UnauthorizedLimiter};
use tern::client::{Attr, Outgoing, Signer, encode_message, to_reply};
use tern::proto::attrs::{ATTR_ADDITIONAL_ADDRESS_FAMILY, UNDERSTOOD, decode_xor_address};
use tern::proto::channel_data::CHANNEL_NUMBERS;
use tern::proto::response::reason_phrase;
use tern::proto::{ChannelHeader, Request, Response};

const METHODS: [Method; 7] = [
    METHOD_BINDING,
    METHOD_ALLOCATE,
    METHOD_REFRESH,
    METHOD_SEND,
    METHOD_DATA,
    METHOD_CREATE_PERMISSION,
    METHOD_CHANNEL_BIND,
];
const CLASSES: [MessageClass; 4] = [
    CLASS_REQUEST,
    CLASS_INDICATION,
    CLASS_SUCCESS_RESPONSE,
    CLASS_ERROR_RESPONSE,
];

fn signer(nonce: &str) -> Signer<'_> {
    Signer {
        username: USER,
        realm: REALM,
        nonce,
        password: PASSWORD,
    }
}

fn key() -> LongTermKey {
    LongTermKey::derive(USER, REALM, PASSWORD)
}

// ---- strategies ----

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        proptest::sample::select(&METHODS[..]),
        any::<u16>().prop_map(|v| message_type(v).method),
    ]
}

fn class() -> impl Strategy<Value = MessageClass> {
    proptest::sample::select(&CLASSES[..])
}

fn tid() -> impl Strategy<Value = TransactionId> {
    any::<[u8; 12]>().prop_map(TransactionId)
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        any::<([u8; 4], u16)>().prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        any::<([u8; 16], u16)>().prop_map(|(ip, port)| SocketAddr::from((ip, port))),
    ]
}

/// Attribute types a message may carry anywhere: any but the two whose place the
/// encoder decides (MESSAGE-INTEGRITY, FINGERPRINT), with the ones TURN reads favoured.
fn attr_type() -> impl Strategy<Value = AttrType> {
    // MESSAGE-INTEGRITY-SHA256 too: the parser checks its size and place as an
    // integrity attribute, so random values of it are not what these properties test.
    let placed_by_encoder = [
        ATTR_MESSAGE_INTEGRITY,
        ATTR_MESSAGE_INTEGRITY_SHA256,
        ATTR_FINGERPRINT,
    ];
    prop_oneof![
        proptest::sample::select(UNDERSTOOD),
        any::<u16>().prop_map(AttrType),
    ]
    .prop_filter("placed by the encoder", move |t| {
        !placed_by_encoder.contains(t)
    })
}

fn attr() -> impl Strategy<Value = Attr> {
    prop_oneof![
        4 => (attr_type(), vec(any::<u8>(), 0..40)).prop_map(|(t, v)| Attr::Raw(t, v)),
        1 => socket_addr().prop_map(Attr::Peer),
    ]
}

/// One script step; `signing` says whether a message may carry the right credentials.
fn op(signing: bool) -> impl Strategy<Value = Op> {
    let flags = if signing {
        (0u8..32).boxed()
    } else {
        // Unsigned, or signed with the wrong password or with another tuple's nonce.
        let sign = flags::SIGN;
        proptest::sample::select(vec![
            0,
            flags::FINGERPRINT,
            sign | flags::WRONG_PASSWORD,
            sign | flags::WRONG_PASSWORD | flags::FINGERPRINT,
            sign | flags::FOREIGN_NONCE,
        ])
        .boxed()
    };
    let message_attr = prop_oneof![
        3 => (any::<u16>(), vec(any::<u8>(), 0..24)),
        2 => (proptest::sample::select(UNDERSTOOD), vec(any::<u8>(), 0..24)).prop_map(|(t, v)| (t.0, v)),
        2 => (Just(PEER_IN_CLEAR), vec(any::<u8>(), 1..2)),
        1 => Just((ATTR_REQUESTED_TRANSPORT.0, vec![17, 0, 0, 0])),
        1 => (0x4000u16..0x4004).prop_map(|n| (ATTR_CHANNEL_NUMBER.0, [n.to_be_bytes(), [0, 0]].concat())),
        // Families asked for well-formed: dual allocations, and Refreshes naming one.
        1 => (proptest::sample::select(vec![ATTR_REQUESTED_ADDRESS_FAMILY, ATTR_ADDITIONAL_ADDRESS_FAMILY]), 1u8..3)
            .prop_map(|(t, family)| (t.0, vec![family, 0, 0, 0])),
    ];
    // Mostly requests, as a client sends.
    let class = prop_oneof![3 => Just(CLASS_REQUEST), 1 => class()];
    let message = (
        any::<u8>(),
        0u16..2000,
        method(),
        class,
        0u8..4,
        flags,
        vec(message_attr, 0..6),
    )
        .prop_map(
            |(tuple, advance_ms, method, class, tid, flags, attrs)| Op::Message {
                tuple,
                advance_ms,
                typ: MessageType::new(method, class).value(),
                tid,
                flags,
                attrs,
            },
        );
    let datagram = (any::<u8>(), 0u16..2000, vec(any::<u8>(), 0..120)).prop_map(
        |(tuple, advance_ms, bytes)| Op::Datagram {
            tuple,
            advance_ms,
            bytes,
        },
    );
    let peer = (
        any::<u8>(),
        any::<u8>(),
        0u16..2000,
        vec(any::<u8>(), 0..64),
    )
        .prop_map(|(relay, peer, advance_ms, data)| Op::Peer {
            relay,
            peer,
            advance_ms,
            data,
        });
    let wait = (0u16..700).prop_map(|secs| Op::Wait { secs });
    prop_oneof![4 => message, 2 => datagram, 2 => peer, 1 => wait]
}

// ---- round trips ----

proptest! {
    /// What the client library encodes parses back with the same method, class,
    /// transaction id and attributes, in order; MESSAGE-INTEGRITY verifies with the
    /// signer's key only, and unknown comprehension-required types are reported.
    #[test]
    fn client_messages_round_trip(
        method in method(),
        class in class(),
        tid in tid(),
        attrs in vec(attr(), 0..10),
        sign in any::<bool>(),
        fingerprint in any::<bool>(),
    ) {
        let out = Outgoing { attrs: attrs.clone(), after_integrity: vec![], fingerprint, sign };
        let bytes = encode_message(method, class, tid, &out, &signer("nonce"));
        let req = Request::parse(&bytes).expect("what the encoder writes parses");
        prop_assert_eq!(req.method(), method);
        prop_assert_eq!(req.class(), class);
        prop_assert_eq!(req.transaction_id(), tid);
        prop_assert_eq!(req.has_integrity(), sign);
        prop_assert_eq!(req.has_fingerprint(), fingerprint);
        prop_assert_eq!(req.verify_integrity(key().as_bytes()), sign);
        prop_assert!(!req.verify_integrity(b"another key"));

        let mut expected: Vec<(AttrType, Option<Vec<u8>>)> = attrs
            .iter()
            .map(|a| match a {
                Attr::Raw(t, v) => (*t, Some(v.clone())),
                Attr::Peer(_) => (ATTR_XOR_PEER_ADDRESS, None),
            })
            .collect();
        if sign {
            expected.push((ATTR_USERNAME, Some(USER.into())));
            expected.push((ATTR_REALM, Some(REALM.into())));
            expected.push((ATTR_NONCE, Some(b"nonce".to_vec())));
            expected.push((ATTR_MESSAGE_INTEGRITY, None));
        }
        if fingerprint {
            expected.push((ATTR_FINGERPRINT, None));
        }
        let parsed = &req.msg.attributes.0;
        prop_assert_eq!(parsed.len(), expected.len());
        for (a, (t, v)) in parsed.iter().zip(&expected) {
            prop_assert_eq!(a.typ, *t);
            if let Some(v) = v {
                prop_assert_eq!(&a.value, v);
            }
        }
        let peers: Vec<SocketAddr> = attrs
            .iter()
            .filter_map(|a| match a {
                Attr::Peer(p) => Some(*p),
                Attr::Raw(..) => None,
            })
            .collect();
        if attrs.iter().all(|a| !matches!(a, Attr::Raw(t, _) if *t == ATTR_XOR_PEER_ADDRESS)) {
            prop_assert_eq!(req.peer_addresses(), Some(peers));
        }
        let unknown: Vec<AttrType> = expected
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| t.required() && !UNDERSTOOD.contains(t))
            .collect();
        prop_assert_eq!(req.unknown_required(), &unknown[..]);
    }

    /// Attributes after MESSAGE-INTEGRITY are not covered by it, so the parser drops
    /// them (whatever they are) and the MAC still verifies.
    #[test]
    fn attributes_after_integrity_are_dropped(
        method in method(),
        tid in tid(),
        attrs in vec(attr(), 0..6),
        after in vec(attr(), 1..6),
        fingerprint in any::<bool>(),
    ) {
        let after: Vec<Attr> = after
            .into_iter()
            .filter(|a| !matches!(a, Attr::Raw(t, _) if *t == ATTR_MESSAGE_INTEGRITY_SHA256))
            .collect();
        let out = Outgoing { attrs: attrs.clone(), after_integrity: after, fingerprint, sign: true };
        let bytes = encode_message(method, CLASS_REQUEST, tid, &out, &signer("nonce"));
        let req = Request::parse(&bytes).expect("parses");
        prop_assert!(req.verify_integrity(key().as_bytes()));
        let mi = req
            .msg
            .attributes
            .0
            .iter()
            .position(|a| a.typ == ATTR_MESSAGE_INTEGRITY)
            .expect("MESSAGE-INTEGRITY kept");
        prop_assert_eq!(mi, attrs.len() + 3);
        let tail: Vec<AttrType> = req.msg.attributes.0[mi + 1..].iter().map(|a| a.typ).collect();
        let expected_tail = if fingerprint { vec![ATTR_FINGERPRINT] } else { vec![] };
        prop_assert_eq!(tail, expected_tail);
    }

    /// Responses built with `proto::Response` parse back as the answer to their request:
    /// same method and transaction id, the error code, XOR addresses, integrity.
    #[test]
    fn responses_round_trip(
        method in method(),
        tid in tid(),
        code in prop_oneof![
            proptest::sample::select(&[400u16, 401, 403, 420, 437, 438, 440, 441, 442, 443, 486, 508][..]),
            300u16..700,
        ],
        error in any::<bool>(),
        addrs in vec(socket_addr(), 0..3),
        signed in any::<bool>(),
        fingerprint in any::<bool>(),
    ) {
        let request = encode_message(method, CLASS_REQUEST, tid, &Outgoing::default(), &signer(""));
        let req = Request::parse(&request).expect("parses");
        let mut response = if error { Response::error(&req, code) } else { Response::success(&req) };
        for addr in &addrs {
            response.add_xor_address(ATTR_XOR_PEER_ADDRESS, *addr);
        }
        let key = key();
        let bytes = response.finish(signed.then_some(key.integrity_key()), fingerprint);
        let reply = to_reply(Request::parse(&bytes).expect("a response parses"));
        prop_assert_eq!(reply.msg.method(), method);
        prop_assert_eq!(reply.msg.transaction_id(), tid);
        let expected_class = if error { CLASS_ERROR_RESPONSE } else { CLASS_SUCCESS_RESPONSE };
        prop_assert_eq!(reply.msg.class(), expected_class);
        prop_assert_eq!(reply.code, error.then_some(code));
        if error {
            let value = reply.msg.attr(ATTR_ERROR_CODE).expect("ERROR-CODE");
            prop_assert_eq!(&value[4..], reason_phrase(code).as_bytes());
        }
        prop_assert_eq!(reply.msg.peer_addresses(), Some(addrs));
        prop_assert_eq!(reply.msg.verify_integrity(key.as_bytes()), signed);
        prop_assert_eq!(reply.msg.has_fingerprint(), fingerprint);
    }

    /// A ChannelData header written by `to_bytes` parses back with its data, padded or
    /// not; a number outside the channel range never parses.
    #[test]
    fn channel_data_header_round_trips(
        number in any::<u16>(),
        data in vec(any::<u8>(), 0..300),
        padding in 0usize..4,
    ) {
        let header = ChannelHeader { number, len: data.len() as u16 };
        let mut bytes = header.to_bytes().to_vec();
        bytes.extend_from_slice(&data);
        bytes.resize(bytes.len() + padding, 0);
        let parsed = ChannelHeader::parse(&bytes);
        if CHANNEL_NUMBERS.contains(&number) {
            prop_assert_eq!(parsed, Some(header));
            prop_assert_eq!(header.payload(&bytes), &data[..]);
            // One byte short of the announced data is refused.
            if padding == 0 && !data.is_empty() {
                prop_assert_eq!(ChannelHeader::parse(&bytes[..bytes.len() - 1]), None);
            }
        } else {
            prop_assert_eq!(parsed, None);
        }
    }

    /// XOR addresses, IPv4 and IPv6, decode to what the codec encoded under any
    /// transaction id, and a value cut short never decodes.
    #[test]
    fn xor_addresses_round_trip(addr in socket_addr(), tid in tid(), cut in 1usize..20) {
        let mut m = stun::message::Message::new();
        m.transaction_id = tid;
        XorMappedAddress { ip: addr.ip(), port: addr.port() }
            .add_to_as(&mut m, ATTR_XOR_PEER_ADDRESS)
            .expect("encodes");
        let value = m.get(ATTR_XOR_PEER_ADDRESS).expect("present");
        prop_assert_eq!(value.len(), if addr.is_ipv4() { 8 } else { 20 });
        prop_assert_eq!(decode_xor_address(&value, &tid), Some(addr));
        let short = &value[..value.len().saturating_sub(cut)];
        prop_assert_eq!(decode_xor_address(short, &tid), None);
    }
}

// ---- the engine ----

/// Limiter settings for the budget properties: a small rate, so a flood's factor shows.
const RATE: u32 = 1;
const BURST: u32 = 4;

fn limiter(rate: u32, burst: u32) -> UnauthorizedLimiter {
    UnauthorizedLimiter::new(rate, burst, 1024, 0x5eed)
}

/// Answers the limiter lets through to one IP over `elapsed`: the burst, then `rate`
/// a second (refill is exact, so the fraction of a token is never granted).
fn budget(rate: u32, burst: u32, elapsed: Duration) -> usize {
    burst as usize + (f64::from(rate) * elapsed.as_secs_f64()).floor() as usize
}

/// Datagrams and bytes the engine sent to each client IP.
fn answers_per_ip(driver: &Driver) -> HashMap<IpAddr, (usize, usize)> {
    let mut per_ip: HashMap<IpAddr, (usize, usize)> = HashMap::new();
    for (tuple, bytes) in &driver.io.to_client {
        let entry = per_ip.entry(tuple.client.ip()).or_default();
        entry.0 += 1;
        entry.1 += bytes.len();
    }
    per_ip
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever arrives, from whichever tuple, in whatever order and with whatever
    /// pauses, the engine does not panic and its invariants hold after every step.
    #[test]
    fn core_keeps_its_invariants(ops in vec(op(true), 0..40), limited in any::<bool>()) {
        let limiter = if limited { limiter(RATE, BURST) } else { sans_io::no_limit() };
        Driver::run(limiter, &ops);
    }

    /// Sources that never authenticate (unsigned requests, a wrong password, garbage,
    /// from two ports of one host and two other hosts) get at most BURST + RATE·T
    /// answers per IP over a script spanning T seconds, each at most
    /// MAX_UNAUTHENTICATED_ANSWER bytes, so at most that product in bytes.
    #[test]
    fn unauthenticated_sources_get_at_most_the_limiter_budget(
        ops in vec(op(false).prop_filter("no peer traffic", |op| !matches!(op, Op::Peer { .. })), 0..60),
    ) {
        let driver = Driver::run(limiter(RATE, BURST), &ops);
        prop_assert_eq!(driver.engine.allocation_count(), 0);
        let budget = budget(RATE, BURST, driver.elapsed);
        for (ip, (answers, bytes)) in answers_per_ip(&driver) {
            prop_assert!(answers <= budget, "{ip}: {answers} answers, budget {budget}");
            prop_assert!(bytes <= budget * MAX_UNAUTHENTICATED_ANSWER);
        }
        for (_, bytes) in &driver.io.to_client {
            prop_assert!(bytes.len() <= MAX_UNAUTHENTICATED_ANSWER);
        }
    }
}

/// 100,000 unauthenticated Allocates from one host (two source ports) over 10 s, at the
/// shipped limiter settings (100/s, burst 500): the answers stay within the budget and
/// the bytes sent back are a small fraction of the bytes received.
#[test]
fn a_flood_from_one_host_is_answered_within_the_budget() {
    const PACKETS: usize = 100_000;
    let (rate, burst) = (100, 500);
    // The cheapest request that earns a 401: an unsigned Allocate, 28 bytes.
    let out = Outgoing {
        attrs: vec![Attr::udp_transport()],
        ..Outgoing::default()
    };
    let allocate = encode_message(
        METHOD_ALLOCATE,
        CLASS_REQUEST,
        TransactionId([1; 12]),
        &out,
        &signer(""),
    );
    let mut driver = Driver::new(limiter(rate, burst));
    for i in 0..PACKETS {
        // One millisecond every ten packets: 10 s in all.
        driver.apply(&Op::Datagram {
            tuple: (i % 2) as u8,
            advance_ms: u16::from(i % 10 == 9),
            bytes: allocate.clone(),
        });
    }
    let bytes_in = PACKETS * allocate.len();
    let (answers, bytes_out) = answers_per_ip(&driver)
        .remove(&driver.tuple(0).client.ip())
        .expect("some answers");
    let budget = budget(rate, burst, driver.elapsed);
    assert!(answers <= budget, "{answers} answers, budget {budget}");
    let factor = bytes_out as f64 / bytes_in as f64;
    println!(
        "flood: {PACKETS} Allocates of {} bytes over {:?} -> {answers} answers \
         ({bytes_out} bytes), budget {budget}, bytes out/in {factor:.4}",
        allocate.len(),
        driver.elapsed
    );
    assert!(factor < 0.06, "bytes out/in {factor}");
}

/// A message op from `tuple` with `attrs`, transaction id 1.
fn message(tuple: u8, typ: MessageType, flags: u8, attrs: Vec<(AttrType, Vec<u8>)>) -> Op {
    Op::Message {
        tuple,
        advance_ms: 0,
        typ: typ.value(),
        tid: 1,
        flags,
        attrs: attrs.into_iter().map(|(t, v)| (t.0, v)).collect(),
    }
}

/// Every kind of answer a source that has not authenticated can get, each from the
/// smallest request that earns it (plus a Binding naming 1000 unknown attributes):
/// each is at most MAX_UNAUTHENTICATED_ANSWER bytes. Prints each size and its ratio
/// to the request's.
#[test]
fn every_unauthenticated_answer_is_small() {
    let allocate = MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST);
    let binding = MessageType::new(METHOD_BINDING, CLASS_REQUEST);
    // 0x0002, RFC 3489's SharedSecret, which no server answers any more.
    let shared_secret = MessageType::new(message_type(0x0002).method, CLASS_REQUEST);
    let transport = (ATTR_REQUESTED_TRANSPORT, vec![17, 0, 0, 0]);
    let unknown = |n: u16| {
        (0..n)
            .map(|i| (AttrType(0x7F00 + i % 64), vec![]))
            .collect()
    };
    let cases: Vec<(&str, u16, Op)> = vec![
        (
            "401, unsigned Allocate",
            401,
            message(0, allocate, 0, vec![transport.clone()]),
        ),
        (
            "401, unsigned Allocate with FINGERPRINT",
            401,
            message(0, allocate, flags::FINGERPRINT, vec![transport.clone()]),
        ),
        (
            "401, wrong password",
            401,
            message(
                0,
                allocate,
                flags::SIGN | flags::WRONG_PASSWORD,
                vec![transport.clone()],
            ),
        ),
        (
            "438, another address's nonce, FINGERPRINT",
            438,
            message(
                0,
                allocate,
                flags::SIGN | flags::FOREIGN_NONCE | flags::FINGERPRINT,
                vec![],
            ),
        ),
        (
            "400, MESSAGE-INTEGRITY without USERNAME",
            400,
            message(0, allocate, 0, vec![(ATTR_MESSAGE_INTEGRITY, vec![0; 20])]),
        ),
        (
            "400, unknown method",
            400,
            message(0, shared_secret, flags::FINGERPRINT, vec![]),
        ),
        ("Binding success, IPv4", 0, message(0, binding, 0, vec![])),
        ("Binding success, IPv6", 0, message(2, binding, 0, vec![])),
        (
            "Binding 420, one unknown attribute",
            420,
            message(0, binding, 0, unknown(1)),
        ),
        (
            "Binding 420, 1000 unknown attributes",
            420,
            message(0, binding, 0, unknown(1000)),
        ),
    ];
    let mut driver = Driver::new(sans_io::no_limit());
    for (name, code, op) in cases {
        let request = driver.client_bytes(&op).expect("a client op");
        let sent = driver.io.to_client.len();
        driver.apply(&op);
        assert_eq!(driver.io.to_client.len(), sent + 1, "{name}: one answer");
        let (_, answer) = driver.io.to_client.last().expect("an answer");
        let reply = to_reply(Request::parse(answer).expect("parses"));
        assert_eq!(reply.code.unwrap_or(0), code, "{name}");
        println!(
            "{name}: request {} bytes, answer {} bytes, factor {:.2}",
            request.len(),
            answer.len(),
            answer.len() as f64 / request.len() as f64
        );
        assert!(
            answer.len() <= MAX_UNAUTHENTICATED_ANSWER,
            "{name}: {} bytes",
            answer.len()
        );
    }
    assert_eq!(driver.engine.allocation_count(), 0);
}
