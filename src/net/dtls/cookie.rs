//! The stateless cookie of the DTLS cookie exchange (RFC 6347 §4.2.1).
//!
//! A ClientHello without a valid cookie is answered with a HelloVerifyRequest carrying
//! one, and nothing is kept: the cookie is a MAC over the client's address and the
//! current period under a key only this process knows, so a second ClientHello that
//! echoes it proves the client receives at the address it sends from. Only then does a
//! handshake get state, so a spoofed source address costs one small answer.

use std::net::SocketAddr;
use std::sync::OnceLock;

use ring::hmac;
use subtle::ConstantTimeEq;

/// Bytes of a cookie: an HMAC-SHA-256 tag cut to 128 bits.
pub const COOKIE_LEN: usize = 16;

/// How long a period lasts: a cookie is valid for the period it was made in and the
/// next, so between one and two of these.
const PERIOD_SECS: u64 = 60;

/// The key cookies are made with: drawn once per process, kept across certificate
/// reloads (a cookie in flight stays valid).
pub struct CookieKey {
    key: hmac::Key,
}

impl CookieKey {
    /// A key from the system's random source.
    fn random() -> Self {
        let mut secret = [0u8; 32];
        rand::fill(&mut secret);
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
        }
    }

    /// The cookie for `client` at `unix` seconds.
    pub fn cookie(&self, client: SocketAddr, unix: u64) -> [u8; COOKIE_LEN] {
        self.for_period(client, unix / PERIOD_SECS)
    }

    /// Whether `cookie` was made for `client` in this period or the one before.
    pub fn verify(&self, client: SocketAddr, unix: u64, cookie: &[u8]) -> bool {
        let period = unix / PERIOD_SECS;
        [period, period.saturating_sub(1)]
            .into_iter()
            .any(|p| bool::from(self.for_period(client, p).as_slice().ct_eq(cookie)))
    }

    fn for_period(&self, client: SocketAddr, period: u64) -> [u8; COOKIE_LEN] {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(&period.to_be_bytes());
        match client.ip() {
            std::net::IpAddr::V4(ip) => ctx.update(&ip.octets()),
            std::net::IpAddr::V6(ip) => ctx.update(&ip.octets()),
        }
        ctx.update(&client.port().to_be_bytes());
        let tag = ctx.sign();
        let mut cookie = [0u8; COOKIE_LEN];
        cookie.copy_from_slice(&tag.as_ref()[..COOKIE_LEN]);
        cookie
    }
}

/// This process's cookie key.
pub fn key() -> &'static CookieKey {
    static KEY: OnceLock<CookieKey> = OnceLock::new();
    KEY.get_or_init(CookieKey::random)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_holds_for_its_client_for_one_to_two_periods() {
        let key = CookieKey::random();
        let client: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let other: SocketAddr = "192.0.2.1:5001".parse().unwrap();
        let made = 10 * PERIOD_SECS + 59;
        let cookie = key.cookie(client, made);
        assert!(key.verify(client, made, &cookie));
        assert!(key.verify(client, made + 1, &cookie), "next period");
        assert!(
            !key.verify(client, made + PERIOD_SECS + 1, &cookie),
            "expired"
        );
        assert!(!key.verify(other, made, &cookie), "another source port");
        assert!(!key.verify(client, made, &cookie[..8]), "truncated");
        let another_key = CookieKey::random();
        assert!(!another_key.verify(client, made, &cookie));
    }
}
