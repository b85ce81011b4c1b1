//! Reading a STUN message strictly, as a server on the open internet must.
//!
//! On top of the `stun` crate's decoder this checks what the RFC requires of a whole
//! message (exact length, padding, cookie, FINGERPRINT last and correct), drops every
//! attribute that follows MESSAGE-INTEGRITY except MESSAGE-INTEGRITY-SHA256 and
//! FINGERPRINT (RFC 8489 §14.5: they are not covered by the MAC, so they must not
//! change anything), and verifies MESSAGE-INTEGRITY in constant time.

use ring::hmac;
use std::net::SocketAddr;
use stun::agent::TransactionId;
use stun::attributes::*;
use stun::fingerprint::fingerprint_value;
use stun::message::{MAGIC_COOKIE, MESSAGE_HEADER_SIZE, Message, MessageClass, Method};
use subtle::ConstantTimeEq;
use thiserror::Error;

use super::attrs::{UNDERSTOOD, decode_xor_address};

const MAC_LEN: usize = 20;
/// Unknown comprehension-required types kept for a 420's UNKNOWN-ATTRIBUTES, each once.
/// A Binding needs no credentials, so a request naming thousands of them must not earn
/// an answer thousands of bytes long (RFC 8489 §9.2 reflection).
pub const MAX_UNKNOWN_LISTED: usize = 8;

/// Why bytes were not a usable STUN message. Such input is dropped without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Malformed {
    #[error("shorter than a STUN header")]
    TooShort,
    #[error("not a STUN message")]
    NotStun,
    #[error("length field does not match the message")]
    Length,
    #[error("attributes do not parse")]
    Attributes,
    #[error("bad FINGERPRINT")]
    Fingerprint,
}

/// A parsed STUN message with only the attributes that count.
#[derive(Debug)]
pub struct Request {
    /// Invariant: `msg.attributes` holds no attribute that followed MESSAGE-INTEGRITY
    /// other than MESSAGE-INTEGRITY-SHA256 and FINGERPRINT.
    pub msg: Message,
    /// Offset of the MESSAGE-INTEGRITY attribute header in the raw message, and its MAC.
    integrity: Option<(usize, [u8; MAC_LEN])>,
    /// Offset of the MESSAGE-INTEGRITY-SHA256 attribute header, and its value's length
    /// (RFC 8489 §14.6: 16 to 32 bytes, a multiple of 4).
    integrity_sha256: Option<(usize, usize)>,
    has_fingerprint: bool,
    /// Comprehension-required attributes this server does not understand: each once, in
    /// order of appearance, at most [`MAX_UNKNOWN_LISTED`].
    unknown: Vec<AttrType>,
}

impl Request {
    /// Parses exactly one message: `bytes` must be the whole message and nothing more.
    pub fn parse(bytes: &[u8]) -> Result<Self, Malformed> {
        check_header(bytes)?;
        let mut msg = Message::new();
        msg.raw = bytes.to_vec();
        msg.decode().map_err(|_| Malformed::Attributes)?;

        let mut integrity = None;
        let mut integrity_sha256 = None;
        let mut has_fingerprint = false;
        let mut unknown = Vec::new();
        let mut kept = Vec::with_capacity(msg.attributes.0.len());
        let mut offset = MESSAGE_HEADER_SIZE;
        for attr in std::mem::take(&mut msg.attributes.0) {
            let start = offset;
            offset += 4 + usize::from(attr.length).next_multiple_of(4);
            if attr.typ == ATTR_FINGERPRINT {
                check_fingerprint(bytes, start, &attr.value)?;
                has_fingerprint = true;
            } else if integrity_sha256.is_some()
                || (integrity.is_some() && attr.typ != ATTR_MESSAGE_INTEGRITY_SHA256)
            {
                // Only MESSAGE-INTEGRITY-SHA256 may follow MESSAGE-INTEGRITY, and only
                // FINGERPRINT may follow it.
                continue;
            } else if attr.typ == ATTR_MESSAGE_INTEGRITY_SHA256 {
                let len = attr.value.len();
                if !(16..=32).contains(&len) || len % 4 != 0 {
                    return Err(Malformed::Attributes);
                }
                integrity_sha256 = Some((start, len));
            } else if attr.typ == ATTR_MESSAGE_INTEGRITY {
                let mac = attr.value.as_slice().try_into();
                integrity = Some((start, mac.map_err(|_| Malformed::Attributes)?));
            } else if attr.typ.required()
                && !UNDERSTOOD.contains(&attr.typ)
                && !unknown.contains(&attr.typ)
                && unknown.len() < MAX_UNKNOWN_LISTED
            {
                unknown.push(attr.typ);
            }
            kept.push(attr);
        }
        msg.attributes.0 = kept;
        Ok(Self {
            msg,
            integrity,
            integrity_sha256,
            has_fingerprint,
            unknown,
        })
    }

    pub fn method(&self) -> Method {
        self.msg.typ.method
    }

    pub fn class(&self) -> MessageClass {
        self.msg.typ.class
    }

    pub fn transaction_id(&self) -> TransactionId {
        self.msg.transaction_id
    }

    /// Whether MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256 is present.
    pub fn has_integrity(&self) -> bool {
        self.integrity.is_some() || self.integrity_sha256.is_some()
    }

    /// Whether MESSAGE-INTEGRITY-SHA256 is present: it is then the one checked, and
    /// answers carry it too (RFC 8489 §9.2.4).
    pub fn has_integrity_sha256(&self) -> bool {
        self.integrity_sha256.is_some()
    }

    /// Whether MESSAGE-INTEGRITY-SHA256 is shorter than the full 32 bytes, which RFC
    /// 8489 §14.6 allows only where a STUN usage says so (TURN does not).
    pub fn integrity_sha256_truncated(&self) -> bool {
        self.integrity_sha256.is_some_and(|(_, len)| len < 32)
    }

    pub fn has_fingerprint(&self) -> bool {
        self.has_fingerprint
    }

    pub fn unknown_required(&self) -> &[AttrType] {
        &self.unknown
    }

    /// The first value of attribute `t`, if present.
    pub fn attr(&self, t: AttrType) -> Option<&[u8]> {
        self.attrs(t).next()
    }

    /// Every value of attribute `t`, in order.
    pub fn attrs(&self, t: AttrType) -> impl Iterator<Item = &[u8]> {
        self.msg
            .attributes
            .0
            .iter()
            .filter(move |a| a.typ == t)
            .map(|a| a.value.as_slice())
    }

    /// A text attribute (USERNAME, REALM, NONCE); `None` when absent or not UTF-8.
    pub fn text(&self, t: AttrType) -> Option<&str> {
        self.attr(t).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every XOR-PEER-ADDRESS, or `None` if any of them does not decode.
    pub fn peer_addresses(&self) -> Option<Vec<SocketAddr>> {
        self.attrs(ATTR_XOR_PEER_ADDRESS)
            .map(|v| decode_xor_address(v, &self.msg.transaction_id))
            .collect()
    }

    /// Checks MESSAGE-INTEGRITY against `key` in constant time.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        self.verify_integrity_with(&hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key))
    }

    /// Checks MESSAGE-INTEGRITY in constant time with an HMAC-SHA1 key prepared before
    /// (see [`crate::auth::LongTermKey::integrity_key`]).
    pub fn verify_integrity_with(&self, key: &hmac::Key) -> bool {
        let Some((offset, mac)) = &self.integrity else {
            return false;
        };
        self.mac_matches(*offset, mac, key)
    }

    /// Checks MESSAGE-INTEGRITY-SHA256 in constant time with an HMAC-SHA256 key (see
    /// [`crate::auth::LongTermKey::integrity_key_sha256`]), over as many bytes as the
    /// attribute holds (whether a truncated one is acceptable is the caller's call).
    pub fn verify_integrity_sha256_with(&self, key: &hmac::Key) -> bool {
        let Some((offset, len)) = self.integrity_sha256 else {
            return false;
        };
        let value = &self.msg.raw[offset + 4..offset + 4 + len];
        self.mac_matches(offset, value, key)
    }

    /// Whether `mac`, the value of the integrity attribute at `offset`, is the HMAC
    /// with `key` (truncated to its length) of the message up to that attribute, with
    /// the header's length field counting up to the attribute's end (RFC 8489 §14.5,
    /// §14.6).
    fn mac_matches(&self, offset: usize, mac: &[u8], key: &hmac::Key) -> bool {
        let raw = &self.msg.raw;
        let covered_len = (offset - MESSAGE_HEADER_SIZE + 4 + mac.len()) as u16;
        let mut header = [0u8; MESSAGE_HEADER_SIZE];
        header.copy_from_slice(&raw[..MESSAGE_HEADER_SIZE]);
        header[2..4].copy_from_slice(&covered_len.to_be_bytes());
        let mut ctx = hmac::Context::with_key(key);
        ctx.update(&header);
        ctx.update(&raw[MESSAGE_HEADER_SIZE..offset]);
        let full = ctx.sign();
        full.as_ref()
            .get(..mac.len())
            .is_some_and(|m| m.ct_eq(mac).into())
    }
}

/// Header checks that the codec leaves out: top bits zero, length a multiple of four
/// and equal to what follows the header, magic cookie.
fn check_header(bytes: &[u8]) -> Result<(), Malformed> {
    let header = bytes
        .get(..MESSAGE_HEADER_SIZE)
        .ok_or(Malformed::TooShort)?;
    let cookie = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if header[0] & 0xC0 != 0 || cookie != MAGIC_COOKIE {
        return Err(Malformed::NotStun);
    }
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if length % 4 != 0 || MESSAGE_HEADER_SIZE + length != bytes.len() {
        return Err(Malformed::Length);
    }
    Ok(())
}

/// FINGERPRINT must be the last attribute and match the CRC of everything before it.
fn check_fingerprint(bytes: &[u8], start: usize, value: &[u8]) -> Result<(), Malformed> {
    let value: [u8; 4] = value.try_into().map_err(|_| Malformed::Fingerprint)?;
    let is_last = start + 8 == bytes.len();
    if !is_last || u32::from_be_bytes(value) != fingerprint_value(&bytes[..start]) {
        return Err(Malformed::Fingerprint);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{LongTermKey, PasswordAlgorithm, user_hash};
    use stun::message::BINDING_REQUEST;

    /// RFC 8489 Appendix B.1 as corrected by the verified Errata 6268: a request with
    /// USERHASH, PASSWORD-ALGORITHM SHA-256 and MESSAGE-INTEGRITY-SHA256, from user
    /// "マトリックス" with password "TheMatrIX" (after OpaqueString) in "example.org".
    const RFC8489_B1: [u8; 164] = [
        0x00, 0x01, 0x00, 0x90, 0x21, 0x12, 0xa4, 0x42, 0x78, 0xad, 0x34, 0x33, 0xc6, 0xad, 0x72,
        0xc0, 0x29, 0xda, 0x41, 0x2e, 0x00, 0x1e, 0x00, 0x20, 0x4a, 0x3c, 0xf3, 0x8f, 0xef, 0x69,
        0x92, 0xbd, 0xa9, 0x52, 0xc6, 0x78, 0x04, 0x17, 0xda, 0x0f, 0x24, 0x81, 0x94, 0x15, 0x56,
        0x9e, 0x60, 0xb2, 0x05, 0xc4, 0x6e, 0x41, 0x40, 0x7f, 0x17, 0x04, 0x00, 0x15, 0x00, 0x29,
        0x6f, 0x62, 0x4d, 0x61, 0x74, 0x4a, 0x6f, 0x73, 0x32, 0x41, 0x41, 0x41, 0x43, 0x66, 0x2f,
        0x2f, 0x34, 0x39, 0x39, 0x6b, 0x39, 0x35, 0x34, 0x64, 0x36, 0x4f, 0x4c, 0x33, 0x34, 0x6f,
        0x4c, 0x39, 0x46, 0x53, 0x54, 0x76, 0x79, 0x36, 0x34, 0x73, 0x41, 0x00, 0x00, 0x00, 0x00,
        0x14, 0x00, 0x0b, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x2e, 0x6f, 0x72, 0x67, 0x00,
        0x00, 0x1d, 0x00, 0x04, 0x00, 0x02, 0x00, 0x00, 0x00, 0x1c, 0x00, 0x20, 0xb5, 0xc7, 0xbf,
        0x00, 0x5b, 0x6c, 0x52, 0xa2, 0x1c, 0x51, 0xc5, 0xe8, 0x92, 0xf8, 0x19, 0x24, 0x13, 0x62,
        0x96, 0xcb, 0x92, 0x7c, 0x43, 0x14, 0x93, 0x09, 0x27, 0x8c, 0xc6, 0x51, 0x8e, 0x65,
    ];

    #[test]
    fn rfc8489_b1_userhash_and_sha256_integrity_verify() {
        let username = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
        let req = Request::parse(&RFC8489_B1).unwrap();
        assert!(req.has_integrity() && req.has_integrity_sha256());
        assert_eq!(
            req.attr(ATTR_USER_HASH),
            Some(&user_hash(username, "example.org")[..])
        );
        assert_eq!(
            req.attr(ATTR_PASSWORD_ALGORITHM)
                .and_then(PasswordAlgorithm::from_value),
            Some(PasswordAlgorithm::Sha256)
        );
        let key = |alg| LongTermKey::derive_with(alg, username, "example.org", "TheMatrIX");
        let sha256 = key(PasswordAlgorithm::Sha256);
        assert!(req.verify_integrity_sha256_with(&sha256.integrity_key_sha256()));
        let md5 = key(PasswordAlgorithm::Md5);
        assert!(!req.verify_integrity_sha256_with(&md5.integrity_key_sha256()));
        // One flipped byte of the covered part breaks it.
        let mut bent = RFC8489_B1;
        bent[70] ^= 1;
        let bent = Request::parse(&bent).unwrap();
        assert!(!bent.verify_integrity_sha256_with(&sha256.integrity_key_sha256()));
    }

    #[test]
    fn a_sha256_signed_answer_verifies_and_truncation_is_checked() {
        let key = LongTermKey::derive_with(PasswordAlgorithm::Sha256, "u", "r", "p");
        let mut msg = Message::new();
        msg.set_type(BINDING_REQUEST);
        msg.write_header();
        let req = Request::parse(&msg.raw).unwrap();
        let mac = key.integrity_key_sha256();
        let signed = super::super::Response::success(&req).finish(Some(&mac), true);
        let answer = Request::parse(&signed).unwrap();
        assert!(answer.has_integrity_sha256());
        assert!(answer.verify_integrity_sha256_with(&mac));
        assert!(!answer.verify_integrity_with(key.integrity_key()));
        // A MESSAGE-INTEGRITY-SHA256 of 15 bytes is malformed.
        let mut short = Message::new();
        short.set_type(BINDING_REQUEST);
        short.write_header();
        short.add(ATTR_MESSAGE_INTEGRITY_SHA256, &[0; 15]);
        assert!(matches!(
            Request::parse(&short.raw),
            Err(Malformed::Attributes)
        ));
    }

    #[test]
    fn unknown_attributes_are_listed_once_each_and_capped() {
        let mut msg = Message::new();
        msg.set_type(BINDING_REQUEST);
        msg.write_header();
        // Two types repeated, then many more distinct ones: 1000 attributes in all.
        for i in 0..1000u16 {
            let typ = if i < 10 { 0x7F00 + i % 2 } else { 0x7000 + i };
            msg.add(AttrType(typ), &[]);
        }
        let req = Request::parse(&msg.raw).unwrap();
        let listed: Vec<u16> = req.unknown_required().iter().map(|t| t.0).collect();
        let mut expected = vec![0x7F00, 0x7F01];
        expected.extend(0x700A..0x700A + MAX_UNKNOWN_LISTED as u16 - 2);
        assert_eq!(listed, expected);
    }
}
