//! Strict STUN parsing of arbitrary bytes. On what parses: MESSAGE-INTEGRITY and
//! MESSAGE-INTEGRITY-SHA256 with fixed keys, text and address attributes, classification, and the parser's promises
//! (nothing but MESSAGE-INTEGRITY-SHA256 and FINGERPRINT kept after MESSAGE-INTEGRITY,
//! FINGERPRINT last). A message that parses unsigned is then signed by the `stun`
//! codec and must parse again with the same attributes and verify with that key only.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;
use stun::attributes::{ATTR_FINGERPRINT, ATTR_MESSAGE_INTEGRITY, ATTR_MESSAGE_INTEGRITY_SHA256};
use stun::integrity::MessageIntegrity;
use stun::message::{MESSAGE_HEADER_SIZE, Message, Setter};
use tern::auth::{LongTermKey, PasswordAlgorithm};
use tern::proto::attrs::{decode_address_family, decode_xor_address};
use tern::proto::{Kind, Request, classify, is_relayed_data};

const KEY: &[u8] = b"fuzzing key";
/// A SHA-256 long-term key for MESSAGE-INTEGRITY-SHA256.
static SHA256_KEY: LazyLock<LongTermKey> =
    LazyLock::new(|| LongTermKey::derive_with(PasswordAlgorithm::Sha256, "u", "r", "p"));
/// MESSAGE-INTEGRITY with its header.
const INTEGRITY_LEN: usize = 24;

fuzz_target!(|data: &[u8]| {
    let kind = classify(data);
    let _ = is_relayed_data(data);
    let Ok(req) = Request::parse(data) else {
        return;
    };
    assert_eq!(kind, Kind::Stun);
    assert_eq!(data.len() % 4, 0);
    let _ = req.verify_integrity(KEY);
    let _ = req.verify_integrity_sha256_with(&SHA256_KEY.integrity_key_sha256());
    let tid = req.transaction_id();
    let attrs = &req.msg.attributes.0;
    for attr in attrs {
        let _ = req.text(attr.typ);
        let _ = decode_xor_address(&attr.value, &tid);
        let _ = decode_address_family(&attr.value);
    }
    let _ = req.peer_addresses();
    let _ = req.unknown_required();

    if let Some(mi) = attrs.iter().position(|a| a.typ == ATTR_MESSAGE_INTEGRITY) {
        assert!(req.has_integrity());
        let after_ok = [ATTR_MESSAGE_INTEGRITY_SHA256, ATTR_FINGERPRINT];
        assert!(attrs[mi + 1..].iter().all(|a| after_ok.contains(&a.typ)));
    }
    if req.has_fingerprint() {
        assert_eq!(attrs.last().map(|a| a.typ), Some(ATTR_FINGERPRINT));
    }
    let fits = data.len() + INTEGRITY_LEN <= MESSAGE_HEADER_SIZE + usize::from(u16::MAX);
    if !req.has_integrity() && !req.has_fingerprint() && fits {
        sign_and_check(data, &req);
    }
});

/// Signs `data` (which parsed as `req`) with the codec and checks tern reads it back.
fn sign_and_check(data: &[u8], req: &Request) {
    let mut msg = Message::new();
    msg.raw = data.to_vec();
    msg.decode().expect("the codec decoded it once already");
    MessageIntegrity(KEY.to_vec())
        .add_to(&mut msg)
        .expect("no FINGERPRINT to come before it");
    let signed = Request::parse(&msg.raw).expect("a signed message parses");
    assert!(signed.verify_integrity(KEY));
    assert!(!signed.verify_integrity(b"another key"));
    let (last, before) = signed.msg.attributes.0.split_last().expect("integrity");
    assert_eq!(last.typ, ATTR_MESSAGE_INTEGRITY);
    assert_eq!(before, &req.msg.attributes.0[..]);
}
