//! The fuzz targets' seed corpus (`fuzz/corpus/<target>/`), generated here from the
//! RFC 5769 vectors and from messages the client library and `proto::Response` encode,
//! so every committed seed says where it came from. The test checks that the committed
//! files are what this generates; `TERN_WRITE_FUZZ_SEEDS=1 cargo test --test fuzz_seeds`
//! writes them. Inputs the fuzzer found and were kept (crashes turned regression
//! cases) live beside them and are not checked here.
//!
//! It also checks that the seeds mean something: every STUN seed parses, and the
//! `core_sequence` scripts allocate, relay both ways, and meet the policy's refusals.

#[path = "support/core_script.rs"]
mod core_script;
#[path = "support/rfc5769_vectors.rs"]
mod vectors;

use std::net::SocketAddr;
use std::path::Path;
use stun::agent::TransactionId;
use stun::attributes::*;
use stun::message::{
    CLASS_INDICATION, CLASS_REQUEST, METHOD_ALLOCATE, METHOD_BINDING, METHOD_CHANNEL_BIND,
    METHOD_CREATE_PERMISSION, METHOD_DATA, METHOD_REFRESH, METHOD_SEND, MessageClass, MessageType,
    Method,
};

use core_script::sans_io::{self, PASSWORD, REALM, USER};
use core_script::{Driver, Op, PEER_IN_CLEAR, flags};
use tern::client::{Attr, Outgoing, Signer, encode_message};
use tern::proto::channel_data::CHANNEL_NUMBERS;
use tern::proto::{ChannelHeader, Request, Response};

const TID: TransactionId = TransactionId(*b"tern-fuzzing");

/// A seed: target, file name, contents.
type Seed = (&'static str, String, Vec<u8>);

fn encode(method: Method, class: MessageClass, out: &Outgoing) -> Vec<u8> {
    let signer = Signer {
        username: USER,
        realm: REALM,
        nonce: "0000000000000000seednonceseednonceseedno",
        password: PASSWORD,
    };
    encode_message(method, class, TID, out, &signer)
}

fn signed(attrs: Vec<Attr>) -> Outgoing {
    Outgoing {
        attrs,
        sign: true,
        fingerprint: true,
        ..Outgoing::default()
    }
}

fn peer(addr: &str) -> Attr {
    Attr::Peer(addr.parse().expect("literal address"))
}

/// Messages as clients and servers write them, one of each method TURN uses.
fn stun_messages() -> Vec<(&'static str, Vec<u8>)> {
    let allocate = encode(
        METHOD_ALLOCATE,
        CLASS_REQUEST,
        &signed(vec![
            Attr::udp_transport(),
            Attr::lifetime(600),
            Attr::family(2),
            Attr::Raw(ATTR_EVEN_PORT, vec![0x80]),
            Attr::Raw(ATTR_DONT_FRAGMENT, vec![]),
        ]),
    );
    let unsigned = Outgoing {
        attrs: vec![Attr::udp_transport()],
        ..Outgoing::default()
    };
    let refresh_with_trailer = Outgoing {
        after_integrity: vec![Attr::lifetime(3600)],
        ..signed(vec![Attr::lifetime(0)])
    };
    let send = Outgoing {
        attrs: vec![
            peer("198.51.100.7:4000"),
            Attr::Raw(ATTR_DATA, b"hello".to_vec()),
        ],
        ..Outgoing::default()
    };
    let binding_unknown = Outgoing {
        attrs: vec![Attr::Raw(AttrType(0x7F00), vec![1, 2, 3])],
        fingerprint: true,
        ..Outgoing::default()
    };
    let request = Request::parse(&encode(METHOD_ALLOCATE, CLASS_REQUEST, &unsigned))
        .expect("the client's own request parses");
    let mut challenge = Response::error(&request, 401);
    challenge.add_raw(ATTR_REALM, REALM.as_bytes());
    challenge.add_raw(ATTR_NONCE, b"0000000000000000seednonceseednonceseedno");
    let mut success = Response::success(&request);
    success.add_xor_address(ATTR_XOR_RELAYED_ADDRESS, "192.0.2.1:50000".parse().unwrap());
    success.add_raw(ATTR_LIFETIME, &600u32.to_be_bytes());
    success.add_xor_address(
        ATTR_XORMAPPED_ADDRESS,
        "[2001:db8:2::9]:40000".parse().unwrap(),
    );
    let key = tern::auth::LongTermKey::derive(USER, REALM, PASSWORD);
    let mut data = Response::indication(METHOD_DATA, TID);
    data.add_xor_address(ATTR_XOR_PEER_ADDRESS, "198.51.100.7:4000".parse().unwrap());
    data.add_raw(ATTR_DATA, b"hello");
    vec![
        ("rfc5769-2.1-request", vectors::request()),
        ("rfc5769-2.2-ipv4-response", vectors::ipv4_response()),
        ("rfc5769-2.3-ipv6-response", vectors::ipv6_response()),
        (
            "rfc5769-2.4-long-term-request",
            vectors::long_term_request(),
        ),
        (
            "client-allocate-unsigned",
            encode(METHOD_ALLOCATE, CLASS_REQUEST, &unsigned),
        ),
        ("client-allocate-signed", allocate),
        (
            "client-create-permission",
            encode(
                METHOD_CREATE_PERMISSION,
                CLASS_REQUEST,
                &signed(vec![
                    peer("198.51.100.7:4000"),
                    peer("[2001:db8:1::7]:4000"),
                ]),
            ),
        ),
        (
            "client-channel-bind",
            encode(
                METHOD_CHANNEL_BIND,
                CLASS_REQUEST,
                &signed(vec![Attr::channel(0x4001), peer("198.51.100.7:4000")]),
            ),
        ),
        (
            "client-refresh-trailing-lifetime",
            encode(METHOD_REFRESH, CLASS_REQUEST, &refresh_with_trailer),
        ),
        (
            "client-send-indication",
            encode(METHOD_SEND, CLASS_INDICATION, &send),
        ),
        (
            "client-binding-unknown-attribute",
            encode(METHOD_BINDING, CLASS_REQUEST, &binding_unknown),
        ),
        ("server-401", challenge.finish(None, true)),
        (
            "server-allocate-success",
            success.finish(Some(key.integrity_key()), true),
        ),
        ("server-data-indication", data.finish(None, false)),
    ]
}

fn channel_data(number: u16, data: &[u8], padding: usize) -> Vec<u8> {
    let len = u16::try_from(data.len()).expect("short data");
    let mut bytes = ChannelHeader { number, len }.to_bytes().to_vec();
    bytes.extend_from_slice(data);
    bytes.resize(bytes.len() + padding, 0);
    bytes
}

fn channel_frames() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "first-channel-empty",
            channel_data(*CHANNEL_NUMBERS.start(), b"", 0),
        ),
        ("hello", channel_data(0x4001, b"hello", 0)),
        (
            "last-channel-padded",
            channel_data(*CHANNEL_NUMBERS.end(), b"abc", 1),
        ),
        ("below-range", channel_data(0x3FFF, b"abc", 0)),
        (
            "length-past-end",
            channel_data(0x4001, b"abc", 0)[..6].to_vec(),
        ),
    ]
}

/// A stream_framer input: `cuts` as the cut-point prefix, then `stream`.
fn framer_input(cuts: &[u16], stream: &[u8]) -> Vec<u8> {
    let mut bytes = vec![u8::try_from(cuts.len()).expect("few cuts")];
    for cut in cuts {
        bytes.extend_from_slice(&cut.to_be_bytes());
    }
    bytes.extend_from_slice(stream);
    bytes
}

fn stream_inputs() -> Vec<(&'static str, Vec<u8>)> {
    let messages = stun_messages();
    let mut stream: Vec<u8> = messages[4..8].iter().flat_map(|(_, m)| m.clone()).collect();
    // ChannelData padded to four bytes, as streams carry it, between two messages.
    stream.extend_from_slice(&channel_data(0x4001, b"hello", 3));
    stream.extend_from_slice(&vectors::request());
    let every_seventh: Vec<u16> = (1..=16).map(|i| i * 7).collect();
    let tls_client_hello = [
        0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03, 0x03,
    ];
    let http = b"GET / HTTP/1.1\r\nHost: tern\r\n\r\n";
    let oversize_stun = [0x00, 0x01, 0xff, 0xfc, 0x21, 0x12, 0xa4, 0x42];
    vec![
        ("messages-whole", framer_input(&[], &stream)),
        (
            "messages-cut-every-7",
            framer_input(&every_seventh, &stream),
        ),
        (
            "messages-cut-in-headers",
            framer_input(&[1, 3, 19, 21, 23], &stream),
        ),
        ("tls-client-hello", framer_input(&[2], &tls_client_hello)),
        ("http-request", framer_input(&[], http)),
        ("oversize-stun", framer_input(&[3], &oversize_stun)),
    ]
}

/// A message op from `tuple`.
fn msg(tuple: u8, method: Method, flags: u8, attrs: Vec<(AttrType, Vec<u8>)>) -> Op {
    Op::Message {
        tuple,
        advance_ms: 10,
        typ: MessageType::new(method, CLASS_REQUEST).value(),
        tid: 0,
        flags,
        attrs: attrs.into_iter().map(|(t, v)| (t.0, v)).collect(),
    }
}

/// An XOR-PEER-ADDRESS naming `core_script::peers()[index]`.
fn peer_at(index: u8) -> (AttrType, Vec<u8>) {
    (AttrType(PEER_IN_CLEAR), vec![index])
}

const SIGNED: u8 = flags::SIGN | flags::FINGERPRINT;

fn transport() -> (AttrType, Vec<u8>) {
    (ATTR_REQUESTED_TRANSPORT, vec![17, 0, 0, 0])
}

/// The first request earns a 401 with a nonce; the second, signed, allocates.
fn allocate(tuple: u8, extra: Vec<(AttrType, Vec<u8>)>) -> Vec<Op> {
    let mut attrs = vec![transport()];
    attrs.extend(extra);
    vec![
        msg(tuple, METHOD_ALLOCATE, 0, vec![transport()]),
        msg(tuple, METHOD_ALLOCATE, SIGNED, attrs),
    ]
}

/// `core_sequence` scripts: the first byte picks the limiter (0 off, 1 on).
fn scripts() -> Vec<(&'static str, u8, Vec<Op>)> {
    let channel = (ATTR_CHANNEL_NUMBER, vec![0x40, 0x01, 0, 0]);
    let mut relay = allocate(0, vec![]);
    relay.extend([
        msg(0, METHOD_CREATE_PERMISSION, SIGNED, vec![peer_at(0)]),
        msg(0, METHOD_CHANNEL_BIND, SIGNED, vec![channel, peer_at(1)]),
        Op::Datagram {
            tuple: 0,
            advance_ms: 10,
            bytes: channel_data(0x4001, b"to peer 1", 0),
        },
        Op::Peer {
            relay: 0,
            peer: 0,
            advance_ms: 10,
            data: b"from peer 0".to_vec(),
        },
        Op::Peer {
            relay: 0,
            peer: 1,
            advance_ms: 10,
            data: b"from peer 1".to_vec(),
        },
        msg(
            0,
            METHOD_REFRESH,
            SIGNED,
            vec![(ATTR_LIFETIME, vec![0, 0, 0, 0])],
        ),
    ]);

    let mut denied = allocate(0, vec![]);
    denied.extend((3..12).map(|i| msg(0, METHOD_CREATE_PERMISSION, SIGNED, vec![peer_at(i)])));
    denied.push(msg(
        0,
        METHOD_CREATE_PERMISSION,
        SIGNED,
        vec![peer_at(0), peer_at(3)],
    ));

    let mut ipv6_tcp = allocate(2, vec![(ATTR_REQUESTED_ADDRESS_FAMILY, vec![2, 0, 0, 0])]);
    ipv6_tcp.extend([
        msg(2, METHOD_CREATE_PERMISSION, SIGNED, vec![peer_at(2)]),
        Op::Peer {
            relay: 0,
            peer: 2,
            advance_ms: 10,
            data: b"over tcp".to_vec(),
        },
    ]);

    let mut expiry = allocate(1, vec![(ATTR_EVEN_PORT, vec![0x80])]);
    expiry.extend([
        msg(1, METHOD_CREATE_PERMISSION, SIGNED, vec![peer_at(0)]),
        Op::Wait { secs: 301 },
        Op::Peer {
            relay: 0,
            peer: 0,
            advance_ms: 0,
            data: b"too late".to_vec(),
        },
        Op::Wait { secs: 300 },
    ]);

    let mut flood: Vec<Op> = (0..30u8)
        .map(|i| {
            let mut op = msg(i % 2, METHOD_ALLOCATE, 0, vec![transport()]);
            if let Op::Message { advance_ms, .. } = &mut op {
                *advance_ms = 100;
            }
            op
        })
        .collect();
    flood.push(msg(3, METHOD_BINDING, 0, vec![]));
    flood.push(msg(
        0,
        METHOD_ALLOCATE,
        flags::SIGN | flags::WRONG_PASSWORD,
        vec![],
    ));
    flood.push(msg(
        1,
        METHOD_ALLOCATE,
        flags::SIGN | flags::FOREIGN_NONCE,
        vec![],
    ));

    vec![
        ("allocate-permission-channel-relay", 0, numbered(relay)),
        ("denied-peers", 0, numbered(denied)),
        ("ipv6-over-tcp", 0, numbered(ipv6_tcp)),
        ("expiry-and-even-port", 0, numbered(expiry)),
        ("unauthenticated-limited", 1, numbered(flood)),
    ]
}

/// Gives each message its own transaction id (a repeated one is a retransmission).
fn numbered(mut ops: Vec<Op>) -> Vec<Op> {
    for (i, op) in ops.iter_mut().enumerate() {
        if let Op::Message { tid, .. } = op {
            *tid = i as u8;
        }
    }
    ops
}

fn seeds() -> Vec<Seed> {
    let named = |target, list: Vec<(&'static str, Vec<u8>)>| {
        list.into_iter()
            .map(move |(name, bytes)| (target, name.to_string(), bytes))
    };
    let scripts = scripts().into_iter().map(|(name, mode, ops)| {
        let mut bytes = vec![mode];
        bytes.extend(core_script::encode(&ops));
        ("core_sequence", name.to_string(), bytes)
    });
    named("stun_decode", stun_messages())
        .chain(named("channel_data", channel_frames()))
        .chain(named("stream_framer", stream_inputs()))
        .chain(scripts)
        .collect()
}

#[test]
fn committed_seeds_are_what_this_generates() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let write = std::env::var_os("TERN_WRITE_FUZZ_SEEDS").is_some();
    for (target, name, bytes) in seeds() {
        let dir = corpus.join(target);
        let path = dir.join(&name);
        if write {
            std::fs::create_dir_all(&dir).expect("corpus directory");
            std::fs::write(&path, &bytes).expect("seed written");
        }
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(
            committed == bytes,
            "{} is missing or stale: run TERN_WRITE_FUZZ_SEEDS=1 cargo test --test fuzz_seeds",
            path.display()
        );
    }
}

#[test]
fn stun_seeds_parse() {
    for (name, bytes) in stun_messages() {
        assert!(Request::parse(&bytes).is_ok(), "{name}");
    }
}

#[test]
fn scripts_survive_encoding() {
    for (name, _, ops) in scripts() {
        assert_eq!(
            core_script::decode(&core_script::encode(&ops)),
            ops,
            "{name}"
        );
    }
}

/// The scripts reach what they are named for, so the fuzzer starts from deep states.
#[test]
fn scripts_reach_their_states() {
    let run = |name: &str| {
        let (_, mode, ops) = scripts()
            .into_iter()
            .find(|(n, ..)| *n == name)
            .expect("a script of that name");
        assert_eq!(mode, 0);
        Driver::run(sans_io::no_limit(), &ops)
    };
    let answers = |d: &Driver| -> Vec<Option<u16>> {
        d.io.to_client
            .iter()
            .filter_map(|(_, b)| Request::parse(b).ok())
            .filter(|m| m.class() != CLASS_INDICATION)
            .map(|m| tern::client::to_reply(m).code)
            .collect()
    };

    let relay = run("allocate-permission-channel-relay");
    assert_eq!(answers(&relay), [Some(401), None, None, None, None]);
    let peers = core_script::peers();
    let sent: Vec<(SocketAddr, &[u8])> = relay
        .io
        .to_peer
        .iter()
        .map(|(p, d)| (*p, d.as_slice()))
        .collect();
    assert_eq!(sent, [(peers[1], &b"to peer 1"[..])]);
    // From peer 0 as a Data indication, from peer 1 on its channel.
    let to_client: Vec<&[u8]> = relay
        .io
        .to_client
        .iter()
        .map(|(_, b)| b.as_slice())
        .collect();
    assert!(to_client.iter().any(|b| b.ends_with(b"from peer 0\0")));
    assert!(
        to_client
            .iter()
            .any(|b| b == b"\x40\x01\x00\x0bfrom peer 1")
    );
    assert_eq!(relay.engine.allocation_count(), 0, "Refresh 0 deleted it");

    // Peers 3 to 11 in order, then two at once with one of them denied. IPv6 peers of
    // an IPv4 allocation (IPv4-mapped included) are a family mismatch; another relay
    // address of the server (peer 7) is allowed.
    let denied = run("denied-peers");
    let (f, m) = (Some(403), Some(443));
    let expected = [Some(401), None, f, m, f, m, None, f, f, m, f, f];
    assert_eq!(answers(&denied), expected);
    assert!(denied.io.to_peer.is_empty());

    let tcp = run("ipv6-over-tcp");
    assert_eq!(answers(&tcp), [Some(401), None, None]);
    assert!(tcp.io.to_client.last().unwrap().1.ends_with(b"over tcp"));

    let expiry = run("expiry-and-even-port");
    assert_eq!(answers(&expiry), [Some(401), None, None]);
    assert_eq!(expiry.io.to_client.len(), 3, "nothing relayed after 300 s");
    assert_eq!(expiry.engine.allocation_count(), 0);
    assert_eq!(expiry.engine.ports_in_use(), 0);
}
