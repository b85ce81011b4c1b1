//! The long-term credential key of RFC 8489 §9.2.2 and the static users that yield one.
//!
//! Owns deriving, parsing and comparing `MD5(username ":" realm ":" password)`. It must
//! never make key material or passwords printable: `Debug` is redacted and key equality
//! runs in constant time. SASLprep/OpaqueString of the inputs is the caller's job; this
//! module hashes the bytes it is given.

use std::fmt;

use md5::{Digest, Md5};
use ring::hmac;
use subtle::ConstantTimeEq;

use super::error::AuthConfigError;
use super::hex::{self, Case};

/// 16-byte long-term key `MD5(username ":" realm ":" password)`.
///
/// This key is what MESSAGE-INTEGRITY is keyed with, so knowing it is as good as knowing the
/// password: treat it as a secret.
#[derive(Clone)]
pub struct LongTermKey {
    bytes: [u8; 16],
    /// The MESSAGE-INTEGRITY HMAC-SHA1 keyed with `bytes`. Keying HMAC hashes two blocks,
    /// about half the work of checking a signed Allocate; prepared once here, a static
    /// user's key checks every request it signed and signs every answer without keying
    /// again.
    integrity: hmac::Key,
}

impl LongTermKey {
    fn new(bytes: [u8; 16]) -> Self {
        Self {
            bytes,
            integrity: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &bytes),
        }
    }

    /// Derives the key as RFC 8489 §9.2.2 specifies (MD5, the default password algorithm).
    pub fn derive(username: &str, realm: &str, password: &str) -> Self {
        let mut md5 = Md5::new();
        md5.update(username.as_bytes());
        md5.update(b":");
        md5.update(realm.as_bytes());
        md5.update(b":");
        md5.update(password.as_bytes());
        Self::new(md5.finalize().into())
    }

    /// Parses a precomputed key (32 hex digits, either case), so a config file need not hold
    /// the plaintext password.
    pub fn from_hex(s: &str) -> Result<Self, AuthConfigError> {
        if s.len() != 32 {
            return Err(AuthConfigError::KeyHexLength { found: s.len() });
        }
        hex::decode(s, Case::Any)
            .map(Self::new)
            .ok_or(AuthConfigError::KeyHexDigit)
    }

    /// Lowercase hex, the form [`LongTermKey::from_hex`] reads; for tooling that writes configs.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.bytes)
    }

    /// The raw key, for keying the MESSAGE-INTEGRITY HMAC.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The MESSAGE-INTEGRITY HMAC, keyed with this key.
    pub fn integrity_key(&self) -> &hmac::Key {
        &self.integrity
    }
}

/// Constant time, so comparing a candidate key leaks nothing about where it differs.
impl PartialEq for LongTermKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes.ct_eq(&other.bytes).into()
    }
}

impl Eq for LongTermKey {}

impl fmt::Debug for LongTermKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LongTermKey(<redacted>)")
    }
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
    /// The long-term key of this user in `realm`.
    pub(super) fn key(&self, username: &str, realm: &str) -> LongTermKey {
        match self {
            Self::Password(password) => LongTermKey::derive(username, realm, password),
            Self::Key(key) => key.clone(),
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
