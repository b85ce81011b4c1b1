//! TURN REST API credentials (draft-uberti-behave-turn-rest-00).
//!
//! Owns the shared secret, the username format `<expiry>[<sep><user-id>]` and the password
//! `base64(HMAC-SHA1(secret, username))`. It never reads the clock (callers pass unix time)
//! and never makes the secret printable. Whether a username is accepted is decided in
//! [`super::Credentials`], not here.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;

/// A TURN REST API shared secret, as shared with the web service that hands out
/// credentials. Several may be configured at once so the secret can be rotated.
#[derive(Clone)]
pub struct RestSecret(hmac::Key);

impl RestSecret {
    /// Keeps only the prepared HMAC key, not a second copy of the raw bytes.
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        let secret = secret.into();
        Self(hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &secret))
    }

    /// `base64(HMAC-SHA1(secret, username))`: the password a REST client uses. SHA-1 is what
    /// the draft and every deployed client use; it is an HMAC, so SHA-1's collision
    /// weakness does not apply.
    pub fn password_for(&self, username: &str) -> String {
        STANDARD.encode(hmac::sign(&self.0, username.as_bytes()))
    }
}

impl fmt::Debug for RestSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RestSecret(<redacted>)")
    }
}

/// A REST secret derived from `seed` for one `purpose` (HMAC-SHA256, hex): the same on
/// every server given the same seed, and unrelated to the seed for anyone who only
/// sees credentials made with it.
pub fn derived_secret(purpose: &str, seed: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, seed.as_bytes());
    super::hex::encode(hmac::sign(&key, purpose.as_bytes()).as_ref())
}

/// Builds a REST username and its password, as the credential-issuing web service would:
/// for printing credentials at startup and for tests.
pub fn rest_credential(
    secret: &RestSecret,
    expiry_unix: u64,
    user_id: Option<&str>,
    separator: char,
) -> (String, String) {
    let username = match user_id {
        Some(user_id) => format!("{expiry_unix}{separator}{user_id}"),
        None => expiry_unix.to_string(),
    };
    let password = secret.password_for(&username);
    (username, password)
}

/// A username in REST form, split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RestUsername<'a> {
    /// Unix time (seconds) after which the credential is no longer valid.
    pub expiry: u64,
    /// The part after the separator: the application's user id, used for quotas.
    pub user_id: Option<&'a str>,
}

impl<'a> RestUsername<'a> {
    /// Splits at the first `separator`. The expiry must be plain ASCII decimal digits (no
    /// sign, no spaces) fitting a u64, and a present separator must be followed by a
    /// non-empty user id: one spelling per credential, so two usernames can never alias the
    /// same expiry and quota identity by formatting tricks.
    pub fn parse(username: &'a str, separator: char) -> Option<Self> {
        let (expiry, user_id) = match username.split_once(separator) {
            Some((expiry, user_id)) if !user_id.is_empty() => (expiry, Some(user_id)),
            Some(_) => return None,
            None => (username, None),
        };
        if expiry.is_empty() || !expiry.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let expiry = expiry.parse().ok()?;
        Some(Self { expiry, user_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_secrets_depend_on_seed_and_purpose() {
        let a = derived_secret("self-test", "token-0123456789");
        assert_eq!(a, derived_secret("self-test", "token-0123456789"));
        assert_eq!(a.len(), 64);
        assert_ne!(a, derived_secret("self-test", "token-0123456788"));
        assert_ne!(a, derived_secret("other", "token-0123456789"));
    }

    /// Expected value computed independently:
    /// `printf '%s' '1700000000:alice' | openssl dgst -sha1 -hmac 'north-secret' -binary | base64`
    #[test]
    fn password_matches_openssl() {
        let secret = RestSecret::new("north-secret");
        assert_eq!(
            secret.password_for("1700000000:alice"),
            "g+jb180fcj+xlpA/2mP60OdIgU0="
        );
    }

    #[test]
    fn credential_builder_formats_username() {
        let secret = RestSecret::new("north-secret");
        let (user, pass) = rest_credential(&secret, 1_700_000_000, Some("alice"), ':');
        assert_eq!(user, "1700000000:alice");
        assert_eq!(pass, "g+jb180fcj+xlpA/2mP60OdIgU0=");
        let (user, _) = rest_credential(&secret, 1_700_000_000, Some("alice"), '.');
        assert_eq!(user, "1700000000.alice");
        let (user, pass) = rest_credential(&secret, 42, None, ':');
        assert_eq!(user, "42");
        assert_eq!(pass, secret.password_for("42"));
    }

    #[test]
    fn parses_rest_usernames() {
        let parsed = RestUsername::parse("1700000000:alice:x", ':');
        assert_eq!(
            parsed,
            Some(RestUsername {
                expiry: 1_700_000_000,
                user_id: Some("alice:x")
            })
        );
        let bare = RestUsername::parse("17", ':');
        assert_eq!(
            bare,
            Some(RestUsername {
                expiry: 17,
                user_id: None
            })
        );
        for bad in [
            "",
            ":alice",
            "17:",
            "+17:alice",
            " 17",
            "abc",
            "1.5:alice",
            "99999999999999999999999:a",
            "١٧:alice",
        ] {
            assert_eq!(RestUsername::parse(bad, ':'), None, "{bad:?}");
        }
        assert_eq!(RestUsername::parse("17:alice", '.'), None);
    }

    #[test]
    fn debug_is_redacted() {
        let shown = format!("{:?}", RestSecret::new("north-secret"));
        assert_eq!(shown, "RestSecret(<redacted>)");
    }
}
