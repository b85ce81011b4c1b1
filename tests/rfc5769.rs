//! RFC 5769 ("Test Vectors for Session Traversal Utilities for NAT (STUN)", April 2010)
//! checked against tern's strict request parser, plus tampering on top of them.
//!
//! The vectors are transcribed byte for byte from sections 2.1 to 2.4 of the RFC. As its
//! errata note, 2.1 to 2.3 pad USERNAME/SOFTWARE with 0x20 rather than zero bytes; padding
//! content is not interpreted, so the vectors parse regardless, and their MESSAGE-INTEGRITY
//! and FINGERPRINT cover those bytes as printed. The vectors carry FINGERPRINT in 2.1 to
//! 2.3 only; 2.4 ends with MESSAGE-INTEGRITY.

#[path = "support/rfc5769_vectors.rs"]
mod vectors;

use std::net::SocketAddr;

use stun::attributes::*;
use stun::fingerprint::fingerprint_value;
use stun::message::{BINDING_REQUEST, BINDING_SUCCESS};
use tern::auth::LongTermKey;
use tern::proto::attrs::decode_xor_address;
use tern::proto::{Malformed, Request};
use vectors::*;

const HEADER: usize = 20;

fn long_term_key() -> LongTermKey {
    LongTermKey::derive(LT_USERNAME, LT_REALM, LT_PASSWORD)
}

/// Every vector with the key its MESSAGE-INTEGRITY was made with.
fn vectors() -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    let short = SHORT_TERM_PASSWORD.as_bytes().to_vec();
    vec![
        ("2.1", request(), short.clone()),
        ("2.2", ipv4_response(), short.clone()),
        ("2.3", ipv6_response(), short),
        (
            "2.4",
            long_term_request(),
            long_term_key().as_bytes().to_vec(),
        ),
    ]
}

/// Offset of the first attribute of type `typ`, walking the TLVs of a well-formed message.
fn attr_offset(bytes: &[u8], typ: AttrType) -> Option<usize> {
    let mut at = HEADER;
    while at + 4 <= bytes.len() {
        let t = u16::from_be_bytes([bytes[at], bytes[at + 1]]);
        if t == typ.0 {
            return Some(at);
        }
        let len = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
        at += 4 + len.next_multiple_of(4);
    }
    None
}

fn set_length(bytes: &mut [u8]) {
    let len = u16::try_from(bytes.len() - HEADER).unwrap();
    bytes[2..4].copy_from_slice(&len.to_be_bytes());
}

fn parse(bytes: &[u8]) -> Request {
    Request::parse(bytes).unwrap_or_else(|e| panic!("vector does not parse: {e:?}"))
}

#[test]
fn sample_request_parses() {
    let r = parse(&request());
    assert_eq!(r.msg.typ, BINDING_REQUEST);
    assert_eq!(
        r.transaction_id().0,
        *b"\xb7\xe7\xa7\x01\xbc\x34\xd6\x86\xfa\x87\xdf\xae"
    );
    assert_eq!(r.text(ATTR_SOFTWARE), Some("STUN test client"));
    assert_eq!(r.text(ATTR_USERNAME), Some("evtj:h6vY"));
    assert_eq!(r.attr(ATTR_PRIORITY), Some(&[0x6e, 0x00, 0x01, 0xff][..]));
    assert_eq!(
        r.attr(ATTR_ICE_CONTROLLED),
        Some(&[0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36][..])
    );
    assert!(r.has_integrity());
    assert!(r.has_fingerprint());
    assert!(r.unknown_required().is_empty());
}

#[test]
fn ipv4_response_parses() {
    let r = parse(&ipv4_response());
    assert_eq!(r.msg.typ, BINDING_SUCCESS);
    assert_eq!(r.text(ATTR_SOFTWARE), Some("test vector"));
    let mapped = r.attr(ATTR_XORMAPPED_ADDRESS).expect("XOR-MAPPED-ADDRESS");
    let expected: SocketAddr = "192.0.2.1:32853".parse().unwrap();
    assert_eq!(
        decode_xor_address(mapped, &r.transaction_id()),
        Some(expected)
    );
    assert!(r.has_integrity());
    assert!(r.has_fingerprint());
}

#[test]
fn ipv6_response_parses() {
    let r = parse(&ipv6_response());
    assert_eq!(r.msg.typ, BINDING_SUCCESS);
    assert_eq!(r.text(ATTR_SOFTWARE), Some("test vector"));
    let mapped = r.attr(ATTR_XORMAPPED_ADDRESS).expect("XOR-MAPPED-ADDRESS");
    let expected: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
        .parse()
        .unwrap();
    assert_eq!(
        decode_xor_address(mapped, &r.transaction_id()),
        Some(expected)
    );
    assert!(r.has_integrity());
    assert!(r.has_fingerprint());
}

#[test]
fn long_term_request_parses() {
    let r = parse(&long_term_request());
    assert_eq!(r.msg.typ, BINDING_REQUEST);
    assert_eq!(
        r.transaction_id().0,
        *b"\x78\xad\x34\x33\xc6\xad\x72\xc0\x29\xda\x41\x2e"
    );
    assert_eq!(r.text(ATTR_USERNAME), Some(LT_USERNAME));
    assert_eq!(r.text(ATTR_NONCE), Some(LT_NONCE));
    assert_eq!(r.text(ATTR_REALM), Some(LT_REALM));
    assert_eq!(r.attr(ATTR_SOFTWARE), None);
    assert!(r.has_integrity());
    assert!(!r.has_fingerprint(), "2.4 carries no FINGERPRINT");
    assert!(r.unknown_required().is_empty());
}

#[test]
fn integrity_verifies_with_the_right_key() {
    for (name, bytes, key) in vectors() {
        assert!(parse(&bytes).verify_integrity(&key), "{name}");
    }
    // 2.4 again, with the key derived from what the message itself says.
    let r = parse(&long_term_request());
    let key = LongTermKey::derive(
        r.text(ATTR_USERNAME).unwrap(),
        r.text(ATTR_REALM).unwrap(),
        LT_PASSWORD,
    );
    assert!(r.verify_integrity(key.as_bytes()));
}

#[test]
fn integrity_fails_with_a_wrong_key() {
    let short_wrong = [
        b"VOkJxbRl1RmTxUk/WvJxBu".to_vec(),
        b"VOkJxbRl1RmTxUk/WvJxB".to_vec(),
        Vec::new(),
        long_term_key().as_bytes().to_vec(),
    ];
    for bytes in [request(), ipv4_response(), ipv6_response()] {
        let r = parse(&bytes);
        for key in &short_wrong {
            assert!(!r.verify_integrity(key));
        }
    }
    let r = parse(&long_term_request());
    let long_wrong = [
        LongTermKey::derive(LT_USERNAME, LT_REALM, "thematrix"),
        // Unprepared password: SASLprep is the caller's job, and skipping it must not pass.
        LongTermKey::derive(LT_USERNAME, LT_REALM, "TheM\u{00AA}tr\u{2168}"),
        LongTermKey::derive(LT_USERNAME, "example.com", LT_PASSWORD),
        LongTermKey::derive("matrix", LT_REALM, LT_PASSWORD),
    ];
    for key in &long_wrong {
        assert!(!r.verify_integrity(key.as_bytes()));
    }
    // The password itself is not the long-term key.
    assert!(!r.verify_integrity(LT_PASSWORD.as_bytes()));
    assert!(!r.verify_integrity(SHORT_TERM_PASSWORD.as_bytes()));
}

/// Every single-bit flip in the bytes MESSAGE-INTEGRITY covers (header included, and the MAC
/// itself) must be caught: the parse fails, or it succeeds but the MAC does not verify.
#[test]
fn any_bit_flip_under_integrity_is_caught() {
    for (name, bytes, key) in vectors() {
        let mi = attr_offset(&bytes, ATTR_MESSAGE_INTEGRITY).expect("MESSAGE-INTEGRITY");
        let mut caught_by_parse = 0;
        for i in 0..mi + 24 {
            for bit in 0..8 {
                let mut tampered = bytes.clone();
                tampered[i] ^= 1 << bit;
                match Request::parse(&tampered) {
                    Err(_) => caught_by_parse += 1,
                    Ok(r) => assert!(
                        !r.verify_integrity(&key),
                        "{name}: flipping bit {bit} of byte {i} still verifies"
                    ),
                }
            }
        }
        // With a FINGERPRINT, most flips are already refused by the CRC check.
        if name != "2.4" {
            assert!(caught_by_parse > 0, "{name}");
        }
    }
}

#[test]
fn a_flipped_fingerprint_fails_the_parse() {
    for bytes in [request(), ipv4_response(), ipv6_response()] {
        let fp = attr_offset(&bytes, ATTR_FINGERPRINT).expect("FINGERPRINT");
        assert_eq!(fp + 8, bytes.len(), "FINGERPRINT is last");
        for i in fp + 4..fp + 8 {
            for bit in 0..8 {
                let mut tampered = bytes.clone();
                tampered[i] ^= 1 << bit;
                assert_eq!(
                    Request::parse(&tampered).unwrap_err(),
                    Malformed::Fingerprint
                );
            }
        }
    }
}

#[test]
fn every_truncation_fails() {
    for (name, bytes, _) in vectors() {
        for len in 0..bytes.len() {
            assert!(
                Request::parse(&bytes[..len]).is_err(),
                "{name} truncated to {len} bytes parsed"
            );
        }
    }
}

#[test]
fn trailing_bytes_fail() {
    for (_, bytes, _) in vectors() {
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0; 4]);
        assert_eq!(Request::parse(&longer).unwrap_err(), Malformed::Length);
    }
}

const LIFETIME_ATTR: [u8; 8] = [0x00, 0x0d, 0x00, 0x04, 0x00, 0x00, 0x0e, 0x10];

/// 2.4 ends with MESSAGE-INTEGRITY; an attribute appended after it is not covered by the
/// MAC, so the parser must drop it while the MAC still verifies.
#[test]
fn attribute_after_integrity_is_dropped() {
    let mut bytes = long_term_request();
    assert_eq!(
        attr_offset(&bytes, ATTR_MESSAGE_INTEGRITY),
        Some(bytes.len() - 24),
        "2.4 ends with MESSAGE-INTEGRITY"
    );
    bytes.extend_from_slice(&LIFETIME_ATTR);
    set_length(&mut bytes);

    let r = parse(&bytes);
    assert_eq!(r.attr(ATTR_LIFETIME), None);
    assert!(r.has_integrity());
    assert!(r.verify_integrity(long_term_key().as_bytes()));
    assert_eq!(r.text(ATTR_USERNAME), Some(LT_USERNAME));
}

/// The same with 2.1: LIFETIME slipped between MESSAGE-INTEGRITY and a recomputed
/// FINGERPRINT is dropped, FINGERPRINT kept, and the MAC still verifies.
#[test]
fn attribute_between_integrity_and_fingerprint_is_dropped() {
    let original = request();
    let fp = attr_offset(&original, ATTR_FINGERPRINT).unwrap();
    let mut bytes = original[..fp].to_vec();
    bytes.extend_from_slice(&LIFETIME_ATTR);
    bytes.extend_from_slice(&[0x80, 0x28, 0x00, 0x04, 0, 0, 0, 0]);
    set_length(&mut bytes);
    let crc_at = bytes.len() - 8;
    let crc = fingerprint_value(&bytes[..crc_at]);
    bytes[crc_at + 4..].copy_from_slice(&crc.to_be_bytes());

    let r = parse(&bytes);
    assert_eq!(r.attr(ATTR_LIFETIME), None);
    assert!(r.has_fingerprint());
    assert!(r.verify_integrity(SHORT_TERM_PASSWORD.as_bytes()));
    assert_eq!(r.text(ATTR_USERNAME), Some("evtj:h6vY"));
}
