//! The credential store: which long-term keys may have signed a request for a username.
//!
//! Owns the lookup policy (static users first, then REST usernames, expiry) and the mapping
//! from a username to the identity quotas count against. It never checks MESSAGE-INTEGRITY
//! itself, never reads the clock (`unix_now` is passed in) and never prints a secret.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use super::error::AuthError;
use super::external::ExternalKeys;
use super::key::{LongTermKey, PasswordAlgorithm, StaticSecret, sha256_of};
use super::rest::{RestSecret, RestUsername};

/// Everything needed to authenticate requests for one realm.
pub struct Credentials {
    realm: String,
    /// Static users' keys, derived once at construction rather than per request: MD5,
    /// and SHA-256 for users given a password.
    users: HashMap<String, StaticKeys>,
    /// Static users by USERHASH (RFC 8489 §14.4: SHA-256 of `username ":" realm`).
    user_hashes: HashMap<[u8; 32], String>,
    /// REST secrets in rotation order: the one tried first comes first.
    secrets: Vec<RestSecret>,
    separator: char,
    /// Answers of the operator's service for usernames neither static nor REST
    /// (`auth.webhook`); shared by every worker and kept across reloads.
    external: Option<Arc<ExternalKeys>>,
}

impl Credentials {
    /// Builds the store, deriving each static user's key now so a request never pays for MD5
    /// of a static password. `separator` splits REST usernames into expiry and user id; it
    /// should not be an ASCII digit, or no REST username with a user id can parse.
    pub fn new(
        realm: String,
        users: HashMap<String, StaticSecret>,
        secrets: Vec<RestSecret>,
        separator: char,
    ) -> Self {
        let user_hashes = users
            .keys()
            .map(|name| (user_hash(name, &realm), name.clone()))
            .collect();
        let users = users
            .into_iter()
            .map(|(name, secret)| {
                let keys = StaticKeys {
                    md5: secret
                        .key(PasswordAlgorithm::Md5, &name, &realm)
                        .expect("every static secret has an MD5 key"),
                    sha256: secret.key(PasswordAlgorithm::Sha256, &name, &realm),
                };
                (name, keys)
            })
            .collect();
        Self {
            realm,
            users,
            user_hashes,
            secrets,
            separator,
            external: None,
        }
    }

    /// The same store, asking the operator's service (through `external`, the answers
    /// the driver keeps) about usernames it does not know itself.
    pub fn with_external(mut self, external: Arc<ExternalKeys>) -> Self {
        self.external = Some(external);
        self
    }

    /// The operator's service's answers, when usernames are asked about.
    pub fn external(&self) -> Option<&ExternalKeys> {
        self.external.as_deref()
    }

    /// The REALM this store's keys are derived for.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The candidate keys to try for MESSAGE-INTEGRITY of a request carrying `username`,
    /// derived with `algorithm`.
    ///
    /// A static user yields its one key (none for SHA-256 when it was configured as an MD5
    /// key). Otherwise, with REST secrets configured, a REST username yields one key per
    /// secret in rotation order, so credentials signed with an outgoing secret keep
    /// working during rotation. An expired REST username is [`AuthError::Expired`] unless
    /// `allow_expired`: RFC 8656 lets an existing allocation's refresh/deallocation go
    /// through with credentials that expired mid-session.
    pub fn keys_for(
        &self,
        username: &str,
        algorithm: PasswordAlgorithm,
        unix_now: u64,
        allow_expired: bool,
    ) -> Result<Vec<LongTermKey>, AuthError> {
        if let Some(keys) = self.users.get(username) {
            let key = match algorithm {
                PasswordAlgorithm::Md5 => Some(keys.md5.clone()),
                PasswordAlgorithm::Sha256 => keys.sha256.clone(),
            };
            return Ok(key.into_iter().collect());
        }
        let rest = self.rest_username(username).ok_or(AuthError::UnknownUser)?;
        if rest.expiry < unix_now && !allow_expired {
            return Err(AuthError::Expired);
        }
        Ok(self
            .secrets
            .iter()
            .map(|secret| {
                let password = secret.password_for(username);
                LongTermKey::derive_with(algorithm, username, &self.realm, &password)
            })
            .collect())
    }

    /// The static user whose USERHASH is `hash`; REST and webhook usernames cannot be
    /// found this way (their names are not known before they arrive).
    pub fn user_by_hash(&self, hash: &[u8]) -> Option<&str> {
        let hash: [u8; 32] = hash.try_into().ok()?;
        self.user_hashes.get(&hash).map(String::as_str)
    }

    /// The name quotas count against. For a REST username this is its user id, so one
    /// application user cannot multiply their quota by asking for fresh credentials; without
    /// a user id it is the whole username. Static (and unknown) users count as themselves.
    pub fn quota_identity<'a>(&self, username: &'a str) -> &'a str {
        match self.rest_username(username) {
            Some(RestUsername {
                user_id: Some(user_id),
                ..
            }) => user_id,
            _ => username,
        }
    }

    /// For REST usernames, the expiry time (so a session can be bounded by it); `None` for
    /// static users and for names that are not REST usernames.
    pub fn rest_expiry(&self, username: &str) -> Option<u64> {
        self.rest_username(username).map(|rest| rest.expiry)
    }

    /// `username` as a REST username, if it is one here: not a static user (static users
    /// take precedence), REST enabled (at least one secret) and well formed.
    fn rest_username<'a>(&self, username: &'a str) -> Option<RestUsername<'a>> {
        if self.secrets.is_empty() || self.users.contains_key(username) {
            return None;
        }
        RestUsername::parse(username, self.separator)
    }
}

/// A static user's keys.
struct StaticKeys {
    md5: LongTermKey,
    sha256: Option<LongTermKey>,
}

/// USERHASH (RFC 8489 §14.4): SHA-256 of `username ":" realm`.
pub fn user_hash(username: &str, realm: &str) -> [u8; 32] {
    sha256_of(&[username.as_bytes(), b":", realm.as_bytes()])
}

/// Shows the shape of the store (realm, user names, number of secrets), never key material.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut users: Vec<&str> = self.users.keys().map(String::as_str).collect();
        users.sort_unstable();
        f.debug_struct("Credentials")
            .field("realm", &self.realm)
            .field("users", &users)
            .field("secrets", &self.secrets.len())
            .field("separator", &self.separator)
            .field("external", &self.external.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::rest_credential;

    const REALM: &str = "example.org";
    const NOW: u64 = 1_700_000_000;

    fn store(users: &[(&str, StaticSecret)], secrets: &[&str], separator: char) -> Credentials {
        Credentials::new(
            REALM.to_owned(),
            users
                .iter()
                .map(|(name, secret)| ((*name).to_owned(), secret.clone()))
                .collect(),
            secrets.iter().map(|s| RestSecret::new(*s)).collect(),
            separator,
        )
    }

    #[test]
    fn static_users_by_password_and_by_key() {
        let precomputed = LongTermKey::derive("bob", REALM, "bobpass");
        let creds = store(
            &[
                ("alice", StaticSecret::Password("alicepass".into())),
                ("bob", StaticSecret::Key(precomputed.clone())),
            ],
            &[],
            ':',
        );
        assert_eq!(creds.realm(), REALM);
        assert_eq!(
            creds.keys_for("alice", PasswordAlgorithm::Md5, NOW, false),
            Ok(vec![LongTermKey::derive("alice", REALM, "alicepass")])
        );
        assert_eq!(
            creds.keys_for("bob", PasswordAlgorithm::Md5, NOW, false),
            Ok(vec![precomputed])
        );
        assert_eq!(
            creds.keys_for("carol", PasswordAlgorithm::Md5, NOW, false),
            Err(AuthError::UnknownUser)
        );
        assert_eq!(creds.rest_expiry("alice"), None);
        assert_eq!(creds.quota_identity("alice"), "alice");
    }

    #[test]
    fn rest_key_matches_client_derivation() {
        let creds = store(&[], &["north-secret"], ':');
        let (user, pass) = rest_credential(
            &RestSecret::new("north-secret"),
            NOW + 60,
            Some("alice"),
            ':',
        );
        let keys = creds.keys_for(&user, PasswordAlgorithm::Md5, NOW, false);
        assert_eq!(keys, Ok(vec![LongTermKey::derive(&user, REALM, &pass)]));
        assert_eq!(creds.rest_expiry(&user), Some(NOW + 60));
    }

    /// Independent value: password from
    /// `printf '%s' '1700000000:alice' | openssl dgst -sha1 -hmac 'north-secret' -binary | base64`
    /// then `printf '%s' '1700000000:alice:example.org:<password>' | md5sum`.
    #[test]
    fn rest_key_known_answer() {
        let creds = store(&[], &["north-secret"], ':');
        let keys = creds.keys_for("1700000000:alice", PasswordAlgorithm::Md5, NOW, false);
        let hex: Vec<String> = keys.iter().flatten().map(LongTermKey::to_hex).collect();
        assert_eq!(hex, ["21b7a39e7ca72cc4359f0ec60528da8b"]);
    }

    #[test]
    fn rotation_accepts_second_secret() {
        let creds = store(&[], &["new-secret", "old-secret"], ':');
        let (user, pass) = rest_credential(&RestSecret::new("old-secret"), NOW, Some("alice"), ':');
        let keys = creds
            .keys_for(&user, PasswordAlgorithm::Md5, NOW, false)
            .unwrap_or_default();
        assert_eq!(keys.len(), 2);
        let expected = LongTermKey::derive(&user, REALM, &pass);
        assert_ne!(keys[0], expected);
        assert_eq!(keys[1], expected);
    }

    #[test]
    fn expiry_is_enforced_unless_allowed() {
        let creds = store(&[], &["north-secret"], ':');
        // Valid up to and including the expiry second.
        assert!(
            creds
                .keys_for("1700000000:alice", PasswordAlgorithm::Md5, NOW, false)
                .is_ok()
        );
        assert_eq!(
            creds.keys_for("1700000000:alice", PasswordAlgorithm::Md5, NOW + 1, false),
            Err(AuthError::Expired)
        );
        let late = creds.keys_for("1700000000:alice", PasswordAlgorithm::Md5, NOW + 1, true);
        assert_eq!(late.map(|keys| keys.len()), Ok(1));
        // allow_expired does not make malformed names acceptable.
        assert_eq!(
            creds.keys_for("soon:alice", PasswordAlgorithm::Md5, NOW, true),
            Err(AuthError::UnknownUser)
        );
    }

    #[test]
    fn separator_is_configurable() {
        let creds = store(&[], &["north-secret"], '.');
        assert!(
            creds
                .keys_for("1700000000.alice", PasswordAlgorithm::Md5, NOW, false)
                .is_ok()
        );
        assert_eq!(creds.quota_identity("1700000000.alice"), "alice");
        assert_eq!(
            creds.keys_for("1700000000:alice", PasswordAlgorithm::Md5, NOW, false),
            Err(AuthError::UnknownUser)
        );
    }

    #[test]
    fn quota_identity_and_expiry() {
        let creds = store(&[], &["north-secret"], ':');
        assert_eq!(creds.quota_identity("1700000000:alice"), "alice");
        assert_eq!(creds.quota_identity("1700000000"), "1700000000");
        assert_eq!(creds.quota_identity("mallory"), "mallory");
        assert_eq!(creds.rest_expiry("1700000000"), Some(NOW));
        assert_eq!(creds.rest_expiry("mallory"), None);
    }

    #[test]
    fn rest_disabled_without_secrets() {
        let creds = store(&[], &[], ':');
        assert_eq!(
            creds.keys_for("1700000000:alice", PasswordAlgorithm::Md5, NOW, false),
            Err(AuthError::UnknownUser)
        );
        assert_eq!(creds.rest_expiry("1700000000:alice"), None);
        assert_eq!(creds.quota_identity("1700000000:alice"), "1700000000:alice");
    }

    #[test]
    fn static_user_takes_precedence_over_rest() {
        let name = "1600000000:alice"; // would be an expired REST username
        let creds = store(
            &[(name, StaticSecret::Password("pw".into()))],
            &["north-secret"],
            ':',
        );
        assert_eq!(
            creds.keys_for(name, PasswordAlgorithm::Md5, NOW, false),
            Ok(vec![LongTermKey::derive(name, REALM, "pw")])
        );
        assert_eq!(creds.rest_expiry(name), None);
        assert_eq!(creds.quota_identity(name), name);
    }

    #[test]
    fn debug_shows_no_secret() {
        let creds = store(
            &[("alice", StaticSecret::Password("alicepass".into()))],
            &["north-secret"],
            ':',
        );
        let shown = format!("{creds:?}");
        let key_hex = LongTermKey::derive("alice", REALM, "alicepass").to_hex();
        assert!(shown.contains("alice") && shown.contains(REALM));
        assert!(!shown.contains("alicepass"));
        assert!(!shown.contains("north-secret"));
        assert!(!shown.contains(&key_hex));
    }
}
