//! The long-term credential key of RFC 8489 §9.2.2 and the static users that yield one.
//!
//! Owns deriving, parsing and comparing `MD5(username ":" realm ":" password)` and its
//! RFC 8489 successor `SHA-256(username ":" realm ":" password)`. It must
//! never make key material or passwords printable: `Debug` is redacted and key equality
//! runs in constant time. SASLprep/OpaqueString of the inputs is the caller's job; this
//! module hashes the bytes it is given.

use std::fmt;

use md5::{Digest, Md5};
use ring::hmac;
use subtle::ConstantTimeEq;

use super::error::AuthConfigError;
use super::hex::{self, Case};

/// The hash a long-term key is derived with (PASSWORD-ALGORITHM, RFC 8489 §18.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordAlgorithm {
    /// The RFC 5389 key, and what a request that names no algorithm uses.
    Md5,
    Sha256,
}

impl PasswordAlgorithm {
    /// Both, in the order the server prefers them (PASSWORD-ALGORITHMS).
    pub const OFFERED: [Self; 2] = [Self::Sha256, Self::Md5];

    /// The IANA number in PASSWORD-ALGORITHM(S).
    pub fn number(self) -> u16 {
        match self {
            Self::Md5 => 0x0001,
            Self::Sha256 => 0x0002,
        }
    }

    /// The PASSWORD-ALGORITHMS value a challenge carries: each offered algorithm with
    /// no parameters.
    pub fn offered_value() -> [u8; 8] {
        let [a, b] = Self::OFFERED.map(|alg| alg.number().to_be_bytes());
        [a[0], a[1], 0, 0, b[0], b[1], 0, 0]
    }

    /// The algorithm a PASSWORD-ALGORITHM value names; `None` for one not offered or
    /// with parameters (neither offered algorithm has any).
    pub fn from_value(value: &[u8]) -> Option<Self> {
        let [a, b, 0, 0]: [u8; 4] = value.try_into().ok()? else {
            return None;
        };
        Self::OFFERED
            .into_iter()
            .find(|alg| alg.number() == u16::from_be_bytes([a, b]))
    }
}

/// Long-term key: 16 bytes `MD5(username ":" realm ":" password)`, or 32 bytes of
/// SHA-256 over the same.
///
/// This key is what MESSAGE-INTEGRITY is keyed with, so knowing it is as good as knowing the
/// password: treat it as a secret.
#[derive(Clone)]
pub struct LongTermKey {
    bytes: [u8; 32],
    len: usize,
    /// The MESSAGE-INTEGRITY HMAC-SHA1 keyed with `bytes`. Keying HMAC hashes two blocks,
    /// about half the work of checking a signed Allocate; prepared once here, a static
    /// user's key checks every request it signed and signs every answer without keying
    /// again.
    integrity: hmac::Key,
}

impl LongTermKey {
    fn new(key: &[u8]) -> Self {
        let mut bytes = [0; 32];
        bytes[..key.len()].copy_from_slice(key);
        Self {
            bytes,
            len: key.len(),
            integrity: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key),
        }
    }

    /// The MD5 key, RFC 5389's and every browser's.
    pub fn derive(username: &str, realm: &str, password: &str) -> Self {
        Self::derive_with(PasswordAlgorithm::Md5, username, realm, password)
    }

    pub fn derive_with(
        algorithm: PasswordAlgorithm,
        username: &str,
        realm: &str,
        password: &str,
    ) -> Self {
        let parts = [
            username.as_bytes(),
            b":",
            realm.as_bytes(),
            b":",
            password.as_bytes(),
        ];
        match algorithm {
            PasswordAlgorithm::Md5 => {
                let mut md5 = Md5::new();
                parts.iter().for_each(|p| md5.update(p));
                Self::new(&md5.finalize())
            }
            PasswordAlgorithm::Sha256 => Self::new(&sha256_of(&parts)),
        }
    }

    pub fn from_hex(s: &str) -> Result<Self, AuthConfigError> {
        if s.len() != 32 {
            return Err(AuthConfigError::KeyHexLength { found: s.len() });
        }
        hex::decode(s, Case::Any)
            .map(|bytes: [u8; 16]| Self::new(&bytes))
            .ok_or(AuthConfigError::KeyHexDigit)
    }

    /// Lowercase hex, the form [`LongTermKey::from_hex`] reads; for tooling that writes configs.
    pub fn to_hex(&self) -> String {
        hex::encode(self.as_bytes())
    }

    /// The raw key, for keying the MESSAGE-INTEGRITY HMAC.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The MESSAGE-INTEGRITY HMAC (SHA-1), keyed with this key.
    pub fn integrity_key(&self) -> &hmac::Key {
        &self.integrity
    }

    /// The MESSAGE-INTEGRITY-SHA256 HMAC, keyed with this key when a request uses it
    /// (few clients do, so nobody else pays for keying it).
    pub fn integrity_key_sha256(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, self.as_bytes())
    }
}

/// Constant time, so comparing a candidate key leaks nothing about where it differs.
impl PartialEq for LongTermKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes().ct_eq(other.as_bytes()).into()
    }
}

impl Eq for LongTermKey {}

impl fmt::Debug for LongTermKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LongTermKey(<redacted>)")
    }
}

/// SHA-256 of `parts` one after the other: the SHA-256 long-term key, and USERHASH.
pub(super) fn sha256_of(parts: &[&[u8]]) -> [u8; 32] {
    let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
    parts.iter().for_each(|p| sha.update(p));
    sha.finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// A static user's secret as the config gives it.
#[derive(Clone)]
pub enum StaticSecret {
    /// The plaintext password; hashed once when [`super::Credentials`] is built.
    Password(String),
    /// The precomputed long-term key, for configs that must not hold plaintext.
    Key(LongTermKey),
}

impl StaticSecret {
    /// The long-term key of this user in `realm` for `algorithm`; `None` for a user
    /// given as an MD5 key, from which no other key can be made.
    pub(super) fn key(
        &self,
        algorithm: PasswordAlgorithm,
        username: &str,
        realm: &str,
    ) -> Option<LongTermKey> {
        match (self, algorithm) {
            (Self::Password(password), _) => Some(LongTermKey::derive_with(
                algorithm, username, realm, password,
            )),
            (Self::Key(key), PasswordAlgorithm::Md5) => Some(key.clone()),
            (Self::Key(_), PasswordAlgorithm::Sha256) => None,
        }
    }
}

impl fmt::Debug for StaticSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Password(_) => f.write_str("StaticSecret::Password(<redacted>)"),
            Self::Key(_) => f.write_str("StaticSecret::Key(<redacted>)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5769 §2.4 inputs (password after SASLprep). Expected value computed independently:
    /// `printf 'マトリックス:example.org:TheMatrIX' | md5sum` (and Python's hashlib).
    #[test]
    fn rfc5769_long_term_key() {
        let username = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
        let key = LongTermKey::derive(username, "example.org", "TheMatrIX");
        assert_eq!(key.to_hex(), "e8ca7ad59d5eb0518e312911d2dab2a9");
    }

    /// `printf 'user:realm:pass' | md5sum`
    #[test]
    fn ascii_long_term_key() {
        let key = LongTermKey::derive("user", "realm", "pass");
        assert_eq!(key.to_hex(), "8493fbc53ba582fb4c044c456bdc40eb");
    }

    #[test]
    fn hex_round_trip_any_case() {
        let key = LongTermKey::derive("user", "realm", "pass");
        assert_eq!(LongTermKey::from_hex(&key.to_hex()), Ok(key.clone()));
        assert_eq!(
            LongTermKey::from_hex("8493FBC53BA582FB4C044C456BDC40EB"),
            Ok(key)
        );
    }

    #[test]
    fn bad_hex_is_rejected_without_echoing_it() {
        let short = LongTermKey::from_hex("8493fbc5");
        assert_eq!(short, Err(AuthConfigError::KeyHexLength { found: 8 }));
        let bad = LongTermKey::from_hex("8493fbc53ba582fb4c044c456bdc40ez");
        assert_eq!(bad, Err(AuthConfigError::KeyHexDigit));
        assert!(!bad.unwrap_err().to_string().contains("8493"));
        assert!(LongTermKey::from_hex("").is_err());
        assert!(LongTermKey::from_hex(&"é".repeat(16)).is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let key = LongTermKey::derive("user", "realm", "pass");
        let shown = format!("{key:?}");
        assert_eq!(shown, "LongTermKey(<redacted>)");
        assert!(!shown.contains("8493"));

        let password = format!("{:?}", StaticSecret::Password("hunter2".into()));
        assert!(!password.contains("hunter2"));
        let as_key = format!("{:?}", StaticSecret::Key(key));
        assert!(!as_key.contains("8493") && !as_key.contains("132"));
    }
}
