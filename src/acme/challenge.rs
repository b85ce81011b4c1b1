//! The challenges pending validation, shared by the ACME client (which adds them for
//! the length of an order) and what answers them: the TLS resolver (TLS-ALPN-01) and
//! the HTTP-01 listener.
//!
//! Bounded: at most [`MAX_PENDING`] of each kind; an order for more names than that
//! fails rather than growing the maps. Entries leave when the order that added them
//! ends, however it ends (see [`Installed`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use rustls::sign::CertifiedKey;

use super::AcmeError;
use crate::net::tls::AlpnChallenges;

/// Challenges of one kind pending at once: an order covers at most 100 names.
pub const MAX_PENDING: usize = 100;

#[derive(Default)]
struct Pending {
    /// TLS-ALPN-01 certificates by domain (lower case).
    alpn: HashMap<String, Arc<CertifiedKey>>,
    /// HTTP-01 key authorizations by token.
    http: HashMap<String, String>,
}

/// The pending challenges. Cheap to clone (one `Arc`).
#[derive(Clone, Default)]
pub struct Challenges {
    pending: Arc<Mutex<Pending>>,
}

impl std::fmt::Debug for Challenges {
    /// Counts only: key authorizations and keys are not for logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pending = self.lock();
        f.debug_struct("Challenges")
            .field("alpn", &pending.alpn.len())
            .field("http", &pending.http.len())
            .finish()
    }
}

/// Which entry to remove when an [`Installed`] guard drops.
enum Entry {
    Alpn(String),
    Http(String),
}

/// A challenge answered until this is dropped.
#[must_use = "the challenge is withdrawn when this is dropped"]
pub struct Installed {
    challenges: Challenges,
    entry: Entry,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let mut pending = self.challenges.lock();
        match &self.entry {
            Entry::Alpn(domain) => {
                pending.alpn.remove(domain);
            }
            Entry::Http(token) => {
                pending.http.remove(token);
            }
        }
    }
}

impl Challenges {
    /// The maps hold plain values, so a panic elsewhere while holding the lock cannot
    /// leave them inconsistent: poisoning is ignored.
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers TLS-ALPN-01 handshakes for `domain` with `certificate`.
    pub fn install_alpn(
        &self,
        domain: &str,
        certificate: Arc<CertifiedKey>,
    ) -> Result<Installed, AcmeError> {
        let domain = domain.to_ascii_lowercase();
        let mut pending = self.lock();
        if pending.alpn.len() >= MAX_PENDING && !pending.alpn.contains_key(&domain) {
            return Err(AcmeError::TooManyChallenges);
        }
        pending.alpn.insert(domain.clone(), certificate);
        Ok(self.installed(Entry::Alpn(domain)))
    }

    /// Answers `GET /.well-known/acme-challenge/<token>` with `key_authorization`.
    pub fn install_http(
        &self,
        token: &str,
        key_authorization: &str,
    ) -> Result<Installed, AcmeError> {
        let mut pending = self.lock();
        if pending.http.len() >= MAX_PENDING && !pending.http.contains_key(token) {
            return Err(AcmeError::TooManyChallenges);
        }
        pending
            .http
            .insert(token.to_string(), key_authorization.to_string());
        Ok(self.installed(Entry::Http(token.to_string())))
    }

    fn installed(&self, entry: Entry) -> Installed {
        Installed {
            challenges: self.clone(),
            entry,
        }
    }

    /// The key authorization for an HTTP-01 token, if it is pending.
    pub fn http_answer(&self, token: &str) -> Option<String> {
        self.lock().http.get(token).cloned()
    }
}

impl AlpnChallenges for Challenges {
    fn certificate_for(&self, domain: &str) -> Option<Arc<CertifiedKey>> {
        self.lock().alpn.get(&domain.to_ascii_lowercase()).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_last_as_long_as_their_guard_and_are_bounded() {
        let challenges = Challenges::default();
        let cert = super::super::certs::alpn_challenge("a.example", &[0; 32]).unwrap();
        let alpn = challenges.install_alpn("A.example", cert).unwrap();
        assert!(challenges.certificate_for("a.EXAMPLE").is_some());
        assert!(challenges.certificate_for("b.example").is_none());
        let http = challenges.install_http("tok", "tok.thumb").unwrap();
        assert_eq!(challenges.http_answer("tok").as_deref(), Some("tok.thumb"));
        drop(alpn);
        drop(http);
        assert!(challenges.certificate_for("a.example").is_none());
        assert!(challenges.http_answer("tok").is_none());
        let held: Vec<Installed> = (0..MAX_PENDING)
            .map(|i| challenges.install_http(&format!("t{i}"), "k").unwrap())
            .collect();
        assert!(matches!(
            challenges.install_http("one-more", "k"),
            Err(AcmeError::TooManyChallenges)
        ));
        drop(held);
        assert!(challenges.install_http("one-more", "k").is_ok());
    }
}
