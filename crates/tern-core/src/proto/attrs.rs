//! Attribute values the server reads, decoded strictly.
//!
//! The `stun` crate's XOR address getter accepts a value shorter than its family needs
//! (a truncated IPv6 address decodes with zero bytes), which a server must refuse, so
//! addresses are decoded here with exact lengths.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use stun::agent::TransactionId;
use stun::attributes::*;
use stun::message::MAGIC_COOKIE;

const FAMILY_IPV4: u8 = 0x01;
const FAMILY_IPV6: u8 = 0x02;

/// ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §18.11): an Allocate asking for an IPv6 relayed
/// address besides the IPv4 one (a dual allocation). Comprehension-optional; the
/// `stun` crate has no constant for it.
pub const ATTR_ADDITIONAL_ADDRESS_FAMILY: AttrType = AttrType(0x8000);
/// ADDRESS-ERROR-CODE (RFC 8656 §18.12): in the success answer to a dual Allocate that
/// got one family only, the family it did not get and why. Not in the `stun` crate.
pub const ATTR_ADDRESS_ERROR_CODE: AttrType = AttrType(0x8001);

/// Attributes a TURN server understands; any other comprehension-required
/// attribute (type below 0x8000) in a request earns a 420.
pub const UNDERSTOOD: &[AttrType] = &[
    ATTR_MAPPED_ADDRESS,
    ATTR_USERNAME,
    ATTR_MESSAGE_INTEGRITY,
    ATTR_ERROR_CODE,
    ATTR_UNKNOWN_ATTRIBUTES,
    ATTR_REALM,
    ATTR_NONCE,
    ATTR_XORMAPPED_ADDRESS,
    ATTR_CHANNEL_NUMBER,
    ATTR_LIFETIME,
    ATTR_XOR_PEER_ADDRESS,
    ATTR_DATA,
    ATTR_XOR_RELAYED_ADDRESS,
    ATTR_REQUESTED_ADDRESS_FAMILY,
    ATTR_EVEN_PORT,
    ATTR_REQUESTED_TRANSPORT,
    ATTR_DONT_FRAGMENT,
    ATTR_RESERVATION_TOKEN,
    ATTR_CONNECTION_ID,
    ATTR_MESSAGE_INTEGRITY_SHA256,
    ATTR_PASSWORD_ALGORITHM,
    ATTR_USER_HASH,
    ATTR_PRIORITY,
    ATTR_USE_CANDIDATE,
];

/// Decodes an XOR-PEER-ADDRESS / XOR-MAPPED-ADDRESS style value. `None` when the
/// family is unknown or the length is not exactly right for it.
pub fn decode_xor_address(value: &[u8], tid: &TransactionId) -> Option<SocketAddr> {
    decode_masked(value, (MAGIC_COOKIE >> 16) as u16, &xor_mask(tid))
}

/// Decodes a plain MAPPED-ADDRESS style value, as ALTERNATE-SERVER carries it.
pub fn decode_address(value: &[u8]) -> Option<SocketAddr> {
    decode_masked(value, 0, &[0; 16])
}

fn decode_masked(value: &[u8], port_mask: u16, mask: &[u8; 16]) -> Option<SocketAddr> {
    let (&[_, family, p0, p1], rest) = value.split_first_chunk::<4>()?;
    let port = u16::from_be_bytes([p0, p1]) ^ port_mask;
    let ip = match (family, rest.len()) {
        (FAMILY_IPV4, 4) => {
            let mut octets = [0u8; 4];
            for (i, o) in octets.iter_mut().enumerate() {
                *o = rest[i] ^ mask[i];
            }
            IpAddr::V4(Ipv4Addr::from(octets))
        }
        (FAMILY_IPV6, 16) => {
            let mut octets = [0u8; 16];
            for (i, o) in octets.iter_mut().enumerate() {
                *o = rest[i] ^ mask[i];
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Magic cookie followed by the transaction id: what XOR addresses are masked with.
fn xor_mask(tid: &TransactionId) -> [u8; 16] {
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    mask[4..].copy_from_slice(&tid.0);
    mask
}

/// Whether a REQUESTED-ADDRESS-FAMILY (or ADDITIONAL-ADDRESS-FAMILY) value asks for
/// IPv6. `None` for an invalid value (wrong length or unknown family).
pub fn decode_address_family(value: &[u8]) -> Option<bool> {
    match value {
        [FAMILY_IPV4, _, _, _] => Some(false),
        [FAMILY_IPV6, _, _, _] => Some(true),
        _ => None,
    }
}

/// The family byte of REQUESTED-ADDRESS-FAMILY and ADDRESS-ERROR-CODE (RFC 8656 §18.8).
pub fn address_family_code(ipv6: bool) -> u8 {
    if ipv6 { FAMILY_IPV6 } else { FAMILY_IPV4 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stun::message::Message;
    use stun::xoraddr::XorMappedAddress;

    fn roundtrip(addr: SocketAddr) -> Option<SocketAddr> {
        let mut m = Message::new();
        m.transaction_id = TransactionId([7; 12]);
        XorMappedAddress {
            ip: addr.ip(),
            port: addr.port(),
        }
        .add_to_as(&mut m, ATTR_XOR_PEER_ADDRESS)
        .unwrap();
        let value = m.get(ATTR_XOR_PEER_ADDRESS).unwrap();
        decode_xor_address(&value, &m.transaction_id)
    }

    #[test]
    fn decodes_what_the_codec_encodes() {
        for a in ["192.0.2.1:3478", "[2001:db8::1]:49152"] {
            let addr: SocketAddr = a.parse().unwrap();
            assert_eq!(roundtrip(addr), Some(addr));
        }
    }

    #[test]
    fn refuses_wrong_lengths_and_families() {
        let tid = TransactionId([0; 12]);
        assert!(decode_xor_address(&[0, 2, 0, 0, 1, 2, 3, 4], &tid).is_none());
        assert!(decode_xor_address(&[0, 1, 0, 0, 1, 2, 3], &tid).is_none());
        assert!(decode_xor_address(&[0, 3, 0, 0, 1, 2, 3, 4], &tid).is_none());
        assert!(decode_xor_address(&[0, 1, 0], &tid).is_none());
        assert_eq!(decode_address_family(&[1, 0, 0, 0]), Some(false));
        assert_eq!(decode_address_family(&[2, 0, 0, 0]), Some(true));
        assert_eq!(decode_address_family(&[3, 0, 0, 0]), None);
        assert_eq!(decode_address_family(&[1]), None);
    }
}
