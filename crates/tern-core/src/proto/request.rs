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
            } else if integrity.is_some() && attr.typ != ATTR_MESSAGE_INTEGRITY_SHA256 {
                continue;
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

    pub fn has_integrity(&self) -> bool {
        self.integrity.is_some()
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
        let raw = &self.msg.raw;
        // The MAC covers the message up to the attribute, with the header's length
        // field counting up to the end of MESSAGE-INTEGRITY (RFC 8489 §14.5).
        let covered_len = (offset - MESSAGE_HEADER_SIZE + 4 + MAC_LEN) as u16;
        let mut header = [0u8; MESSAGE_HEADER_SIZE];
        header.copy_from_slice(&raw[..MESSAGE_HEADER_SIZE]);
        header[2..4].copy_from_slice(&covered_len.to_be_bytes());
        let mut ctx = hmac::Context::with_key(key);
        ctx.update(&header);
        ctx.update(&raw[MESSAGE_HEADER_SIZE..*offset]);
        ctx.sign().as_ref().ct_eq(mac).into()
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
    use stun::message::BINDING_REQUEST;

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
