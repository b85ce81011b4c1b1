//! Stateless NONCEs for the long-term credential mechanism (RFC 8489 §9.2).
//!
//! A nonce is `hex(issue_time) || hex(HMAC(key, issue_time || client address || transport))`
//! truncated, so the server keeps no per-client state before a client has authenticated
//! (nothing for a flood of unauthenticated requests to fill), and servers sharing the key
//! accept each other's nonces. This module owns issuing and checking nonces; it never reads
//! the clock (`unix_now` is passed in) and never makes its key printable.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ring::hmac;
use subtle::ConstantTimeEq;
use thiserror::Error;

use super::hex::{self, Case};

/// RFC 8489 §9.2's nonce cookie, put before a nonce when `auth.rfc8489` is on:
/// "obMatJos2", then the security features offered as four base64 characters of 24
/// bits: password algorithms (bit 0, the PASSWORD-ALGORITHMS negotiation) and username
/// anonymity (bit 1, USERHASH). Bit 0 is the least significant, as the verified Errata
/// 6290 has it and the corrected Appendix B.1 vector (Errata 6268, "AAAC") uses:
/// `0x000003`.
pub const COOKIE: &str = "obMatJos2AAAD";

/// `nonce` with the [`COOKIE`] before it.
pub fn with_cookie(nonce: &str) -> String {
    format!("{COOKIE}{nonce}")
}

/// The nonce after the [`COOKIE`]; `None` when it does not start with exactly that (a
/// client that cleared the feature bits to skip the negotiation, a bid-down, gets a
/// fresh nonce).
pub fn strip_cookie(nonce: &str) -> Option<&str> {
    nonce.strip_prefix(COOKIE)
}

/// Bytes of the MAC kept in a nonce: 96 bits, far beyond what can be guessed online.
const MAC_LEN: usize = 12;
/// Hex digits of the issue time (a big-endian u64).
const TIME_HEX_LEN: usize = 16;
/// Total nonce length in characters.
const NONCE_LEN: usize = TIME_HEX_LEN + 2 * MAC_LEN;
/// How far in the future an issue time may be, for clock skew between servers sharing a
/// key; beyond that the nonce is treated as forged rather than early.
const MAX_FUTURE_SKEW_SECS: u64 = 5;
/// Longest MAC input: time (8) + IPv6 octets (16) + port (2) + transport tag (1).
const MAX_INPUT_LEN: usize = 8 + 16 + 2 + 1;

/// Why a nonce was not accepted.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum NonceError {
    /// Genuine, but its lifetime is over: answer 438 Stale Nonce with a fresh one.
    #[error("stale nonce")]
    Stale,
    /// Not issued by us for this client and transport (malformed, forged, foreign address).
    #[error("invalid nonce")]
    Invalid,
}

/// Issues and verifies nonces bound to a client address and transport.
pub struct NonceIssuer {
    key: hmac::Key,
    lifetime_secs: u64,
}

impl NonceIssuer {
    /// `key` is the server (or fleet) nonce key; `lifetime_secs` how long a nonce stays fresh.
    pub fn new(key: &[u8], lifetime_secs: u64) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            lifetime_secs,
        }
    }

    /// A new lifetime (a reload): nonces already handed out are judged by it too, as
    /// their issue time is in them.
    pub fn set_lifetime(&mut self, lifetime_secs: u64) {
        self.lifetime_secs = lifetime_secs;
    }

    /// A nonce for `client` over `transport`, issued at `unix_now`: 16 lowercase hex digits of
    /// the time then 24 of the MAC, 40 characters, all legal in a STUN NONCE.
    pub fn issue(&self, client: SocketAddr, transport: u8, unix_now: u64) -> String {
        let mac = self.mac(unix_now, client, transport);
        let mut nonce = String::with_capacity(NONCE_LEN);
        nonce.push_str(&format!("{unix_now:016x}"));
        nonce.push_str(&hex::encode(&mac));
        nonce
    }

    /// Accepts a nonce we issued for this `client` and `transport` that is still fresh:
    /// `issue_time <= unix_now < issue_time + lifetime`, with issue times up to 5 s in the
    /// future tolerated for clock skew within a fleet.
    ///
    /// Genuine but expired is [`NonceError::Stale`], so the client is told to retry rather
    /// than that its credentials are wrong; anything else is [`NonceError::Invalid`].
    pub fn verify(
        &self,
        nonce: &str,
        client: SocketAddr,
        transport: u8,
        unix_now: u64,
    ) -> Result<(), NonceError> {
        if nonce.len() != NONCE_LEN || !nonce.is_char_boundary(TIME_HEX_LEN) {
            return Err(NonceError::Invalid);
        }
        let (time_hex, mac_hex) = nonce.split_at(TIME_HEX_LEN);
        let issued = hex::decode::<8>(time_hex, Case::Lower).map(u64::from_be_bytes);
        let claimed = hex::decode::<MAC_LEN>(mac_hex, Case::Lower);
        let (Some(issued), Some(claimed)) = (issued, claimed) else {
            return Err(NonceError::Invalid);
        };
        if issued > unix_now.saturating_add(MAX_FUTURE_SKEW_SECS) {
            return Err(NonceError::Invalid);
        }
        let expected = self.mac(issued, client, transport);
        if !bool::from(expected.ct_eq(&claimed)) {
            return Err(NonceError::Invalid);
        }
        if unix_now >= issued.saturating_add(self.lifetime_secs) {
            return Err(NonceError::Stale);
        }
        Ok(())
    }

    /// HMAC-SHA256 over the canonical bytes (time BE, IP octets (4 or 16), port BE,
    /// transport tag), truncated to [`MAC_LEN`]. v4 and v6 inputs differ in length, so the
    /// two families can never collide.
    fn mac(&self, issued: u64, client: SocketAddr, transport: u8) -> [u8; MAC_LEN] {
        let mut input = [0u8; MAX_INPUT_LEN];
        let mut len = 0;
        let mut put = |bytes: &[u8]| {
            input[len..len + bytes.len()].copy_from_slice(bytes);
            len += bytes.len();
        };
        put(&issued.to_be_bytes());
        match client.ip() {
            IpAddr::V4(ip) => put(&ip.octets()),
            IpAddr::V6(ip) => put(&ip.octets()),
        }
        put(&client.port().to_be_bytes());
        put(&[transport]);
        let tag = hmac::sign(&self.key, &input[..len]);
        let mut mac = [0u8; MAC_LEN];
        // A SHA-256 tag is 32 bytes, always longer than MAC_LEN.
        mac.copy_from_slice(&tag.as_ref()[..MAC_LEN]);
        mac
    }
}

impl fmt::Debug for NonceIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NonceIssuer")
            .field("key", &"<redacted>")
            .field("lifetime_secs", &self.lifetime_secs)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"fleet-nonce-key";
    const UDP: u8 = 17;
    const TCP: u8 = 6;
    const NOW: u64 = 1_700_000_000;
    const LIFETIME: u64 = 600;

    fn client() -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], 3478))
    }

    fn issuer() -> NonceIssuer {
        NonceIssuer::new(KEY, LIFETIME)
    }

    /// Independent value: HMAC-SHA256 with `openssl dgst -sha256 -hmac fleet-nonce-key` over
    /// the bytes 000000006553f100 c0000201 0d96 11, first 12 bytes.
    #[test]
    fn known_answer() {
        assert_eq!(
            issuer().issue(client(), UDP, NOW),
            "000000006553f100a05230bae7a27fa52504772e"
        );
    }

    #[test]
    fn round_trip_v4_and_v6() {
        let nonce = issuer().issue(client(), UDP, NOW);
        assert_eq!(nonce.len(), 40);
        assert!(
            nonce
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(issuer().verify(&nonce, client(), UDP, NOW), Ok(()));

        let v6 = SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 50000));
        let nonce = issuer().issue(v6, TCP, NOW);
        assert_eq!(issuer().verify(&nonce, v6, TCP, NOW + 10), Ok(()));
    }

    #[test]
    fn fleet_member_with_same_key_accepts() {
        let nonce = NonceIssuer::new(KEY, LIFETIME).issue(client(), UDP, NOW);
        let other = NonceIssuer::new(KEY, LIFETIME);
        assert_eq!(other.verify(&nonce, client(), UDP, NOW + 1), Ok(()));
        let stranger = NonceIssuer::new(b"other-key", LIFETIME);
        assert_eq!(
            stranger.verify(&nonce, client(), UDP, NOW + 1),
            Err(NonceError::Invalid)
        );
    }

    #[test]
    fn stale_exactly_at_lifetime() {
        let nonce = issuer().issue(client(), UDP, NOW);
        let at = |t| issuer().verify(&nonce, client(), UDP, t);
        assert_eq!(at(NOW + LIFETIME - 1), Ok(()));
        assert_eq!(at(NOW + LIFETIME), Err(NonceError::Stale));
        assert_eq!(at(u64::MAX), Err(NonceError::Stale));
    }

    #[test]
    fn future_nonces() {
        let nonce = issuer().issue(client(), UDP, NOW + 5);
        assert_eq!(issuer().verify(&nonce, client(), UDP, NOW), Ok(()));
        let nonce = issuer().issue(client(), UDP, NOW + 6);
        assert_eq!(
            issuer().verify(&nonce, client(), UDP, NOW),
            Err(NonceError::Invalid)
        );
    }

    #[test]
    fn bound_to_address_and_transport() {
        let nonce = issuer().issue(client(), UDP, NOW);
        let other_ip = SocketAddr::from(([192, 0, 2, 2], 3478));
        let other_port = SocketAddr::from(([192, 0, 2, 1], 3479));
        let mapped = SocketAddr::from(([0, 0, 0, 0, 0, 0xffff, 0xc000, 0x0201], 3478));
        for addr in [other_ip, other_port, mapped] {
            assert_eq!(
                issuer().verify(&nonce, addr, UDP, NOW),
                Err(NonceError::Invalid),
                "{addr}"
            );
        }
        assert_eq!(
            issuer().verify(&nonce, client(), TCP, NOW),
            Err(NonceError::Invalid)
        );
    }

    #[test]
    fn tampered_is_invalid() {
        let nonce = issuer().issue(client(), UDP, NOW);
        // Pushing the issue time forward to extend the lifetime breaks the MAC.
        let later = format!("{:016x}{}", NOW + 100, &nonce[16..]);
        assert_eq!(
            issuer().verify(&later, client(), UDP, NOW + LIFETIME),
            Err(NonceError::Invalid)
        );
        for i in 0..nonce.len() {
            let mut bytes = nonce.clone().into_bytes();
            bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
            let tampered = String::from_utf8(bytes).unwrap_or_default();
            assert_eq!(
                issuer().verify(&tampered, client(), UDP, NOW),
                Err(NonceError::Invalid),
                "{tampered}"
            );
        }
        let upper = nonce.to_ascii_uppercase();
        if upper != nonce {
            assert_eq!(
                issuer().verify(&upper, client(), UDP, NOW),
                Err(NonceError::Invalid)
            );
        }
    }

    #[test]
    fn garbage_is_invalid() {
        let nonce = issuer().issue(client(), UDP, NOW);
        let multibyte = format!("{}é{}", &nonce[..15], &nonce[17..]);
        for garbage in [
            "",
            "obMatJos2AAAB",
            "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
            &nonce[..39],
            &format!("{nonce}0"),
            &multibyte,
        ] {
            assert_eq!(
                issuer().verify(garbage, client(), UDP, NOW),
                Err(NonceError::Invalid),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn the_cookie_goes_on_and_comes_off_exactly() {
        let nonce = issuer().issue(client(), UDP, NOW);
        let cookied = with_cookie(&nonce);
        assert_eq!(cookied.len(), 53);
        assert_eq!(strip_cookie(&cookied), Some(nonce.as_str()));
        assert_eq!(strip_cookie(&nonce), None);
        assert_eq!(strip_cookie(&format!("obMatJos2AAAB{nonce}")), None);
    }

    #[test]
    fn debug_is_redacted() {
        let shown = format!("{:?}", issuer());
        assert!(!shown.contains("fleet-nonce-key"));
        assert!(shown.contains("<redacted>"));
    }
}
