//! Writing responses and indications with the `stun` codec.

use ring::hmac;
use std::net::SocketAddr;
use stun::agent::TransactionId;
use stun::attributes::{
    ATTR_MESSAGE_INTEGRITY, ATTR_MESSAGE_INTEGRITY_SHA256, ATTR_SOFTWARE, AttrType,
};
use stun::error_code::{ErrorCode, ErrorCodeAttribute};
use stun::fingerprint::FINGERPRINT;
use stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_SUCCESS_RESPONSE, Message, MessageClass, MessageType, Method,
    Setter,
};
use stun::xoraddr::XorMappedAddress;

use super::Request;
use super::attrs::{ATTR_ADDRESS_ERROR_CODE, address_family_code};

/// Bytes of an attribute's type and length.
const ATTRIBUTE_HEADER_LEN: usize = 4;

/// A message being built; finished into bytes by [`Response::finish`].
pub struct Response {
    msg: Message,
}

impl Response {
    fn new(method: Method, class: MessageClass, tid: TransactionId) -> Self {
        let mut msg = Message::new();
        msg.set_type(MessageType::new(method, class));
        msg.transaction_id = tid;
        msg.write_header();
        Self { msg }
    }

    pub fn success(req: &Request) -> Self {
        Self::success_to(req.method(), req.transaction_id())
    }

    /// A success response to the request of `method` and `tid`, answered after the
    /// request itself is gone (a Connect, when its peer answers).
    pub fn success_to(method: Method, tid: TransactionId) -> Self {
        Self::new(method, CLASS_SUCCESS_RESPONSE, tid)
    }

    /// An error response carrying ERROR-CODE `code` with its standard reason phrase.
    pub fn error(req: &Request, code: u16) -> Self {
        Self::error_to(req.method(), req.transaction_id(), code)
    }

    /// The same, to the request of `method` and `tid`.
    pub fn error_to(method: Method, tid: TransactionId, code: u16) -> Self {
        let mut r = Self::new(method, CLASS_ERROR_RESPONSE, tid);
        r.add(&ErrorCodeAttribute {
            code: ErrorCode(code),
            reason: reason_phrase(code).as_bytes().to_vec(),
        });
        r
    }

    /// ADDRESS-ERROR-CODE (RFC 8656 §18.12): the family a dual allocation did not get
    /// and why, as `code` with its standard reason phrase. Laid out as ERROR-CODE with
    /// the family in the first byte.
    pub fn add_address_error(&mut self, ipv6: bool, code: u16) {
        let (class, number) = ((code / 100) as u8, (code % 100) as u8);
        let mut value = vec![address_family_code(ipv6), 0, class, number];
        value.extend_from_slice(reason_phrase(code).as_bytes());
        self.add_raw(ATTR_ADDRESS_ERROR_CODE, &value);
    }

    pub fn indication(method: Method, tid: TransactionId) -> Self {
        Self::new(method, stun::message::CLASS_INDICATION, tid)
    }

    /// Adds an attribute through the codec's setter.
    pub fn add(&mut self, attr: &dyn Setter) {
        // Invariant: the codec's setters only fail for MESSAGE-INTEGRITY/FINGERPRINT
        // ordering, which `finish` alone adds.
        attr.add_to(&mut self.msg)
            .expect("attribute setters do not fail before integrity");
    }

    pub fn add_raw(&mut self, t: AttrType, value: &[u8]) {
        self.msg.add(t, value);
    }

    pub fn add_xor_address(&mut self, t: AttrType, addr: SocketAddr) {
        let xor = XorMappedAddress {
            ip: addr.ip(),
            port: addr.port(),
        };
        xor.add_to_as(&mut self.msg, t)
            .expect("XOR address setter does not fail");
    }

    /// An address in the plain MAPPED-ADDRESS format (RFC 8489 §14.1), as
    /// ALTERNATE-SERVER carries it.
    pub fn add_address(&mut self, t: AttrType, addr: SocketAddr) {
        let mut value = vec![0, address_family_code(addr.is_ipv6())];
        value.extend_from_slice(&addr.port().to_be_bytes());
        match addr.ip() {
            std::net::IpAddr::V4(ip) => value.extend_from_slice(&ip.octets()),
            std::net::IpAddr::V6(ip) => value.extend_from_slice(&ip.octets()),
        }
        self.add_raw(t, &value);
    }

    /// The bytes written so far (header included).
    pub fn encoded_len(&self) -> usize {
        self.msg.raw.len()
    }

    pub fn add_software(&mut self, software: Option<&str>) {
        if let Some(s) = software {
            self.add_raw(ATTR_SOFTWARE, s.as_bytes());
        }
    }

    /// Adds MESSAGE-INTEGRITY with `key` if given (an HMAC-SHA1 key; an HMAC-SHA256 one
    /// adds MESSAGE-INTEGRITY-SHA256 instead, for a request that carried it), then
    /// FINGERPRINT if asked, and returns the encoded message.
    pub fn finish(mut self, key: Option<&hmac::Key>, fingerprint: bool) -> Vec<u8> {
        if let Some(key) = key {
            let attr = if key.algorithm() == hmac::HMAC_SHA256 {
                ATTR_MESSAGE_INTEGRITY_SHA256
            } else {
                ATTR_MESSAGE_INTEGRITY
            };
            let mac_len = key.algorithm().digest_algorithm().output_len();
            // The MAC covers the message with the header's length already counting the
            // integrity attribute (RFC 8489 §14.5); `add` then writes the final length.
            let length = self.msg.length;
            self.msg.length += (ATTRIBUTE_HEADER_LEN + mac_len) as u32;
            self.msg.write_length();
            let mac = hmac::sign(key, &self.msg.raw);
            self.msg.length = length;
            self.msg.add(attr, mac.as_ref());
        }
        if fingerprint {
            FINGERPRINT
                .add_to(&mut self.msg)
                .expect("fingerprint is added last");
        }
        self.msg.raw
    }
}

/// The reason phrases of RFC 8489 §14.8, RFC 8656 §18 and RFC 6062 §6.3.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        300 => "Try Alternate",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        420 => "Unknown Attribute",
        437 => "Allocation Mismatch",
        438 => "Stale Nonce",
        440 => "Address Family not Supported",
        441 => "Wrong Credentials",
        442 => "Unsupported Transport Protocol",
        443 => "Peer Address Family Mismatch",
        446 => "Connection Already Exists",
        447 => "Connection Timeout or Failure",
        486 => "Allocation Quota Reached",
        508 => "Insufficient Capacity",
        _ => "Server Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stun::message::{BINDING_REQUEST, Message};

    /// RFC 8656 §18.12: family, 13 reserved bits, class, number, reason phrase.
    #[test]
    fn address_error_code_is_laid_out_as_the_rfc_draws_it() {
        let mut msg = Message::new();
        msg.set_type(BINDING_REQUEST);
        msg.write_header();
        let req = Request::parse(&msg.raw).unwrap();
        let mut response = Response::success(&req);
        response.add_address_error(true, 508);
        let answer = Request::parse(&response.finish(None, false)).unwrap();
        let value = answer.attr(ATTR_ADDRESS_ERROR_CODE).unwrap();
        assert_eq!(value, b"\x02\x00\x05\x08Insufficient Capacity");
    }
}
