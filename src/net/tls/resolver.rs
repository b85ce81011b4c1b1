//! Picks the certificate for a handshake: the one loaded from the files, except for an
//! ACME validator (RFC 8737) asking for a name with a TLS-ALPN-01 challenge pending.

use std::fmt;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// ALPN protocol of TLS-ALPN-01 validation (RFC 8737 §6.2).
pub const ALPN_ACME_TLS: &[u8] = b"acme-tls/1";

/// The TLS-ALPN-01 challenge certificates pending, by domain. Implemented by the ACME
/// client's challenge store; the TLS configuration only asks it.
pub trait AlpnChallenges: Send + Sync {
    /// The challenge certificate for `domain`, if a validation of it is pending.
    fn certificate_for(&self, domain: &str) -> Option<Arc<CertifiedKey>>;
}

/// The served certificate, and the challenges that may stand in for it.
pub(super) struct ChallengeResolver {
    pub(super) served: Arc<CertifiedKey>,
    pub(super) challenges: Arc<dyn AlpnChallenges>,
}

impl fmt::Debug for ChallengeResolver {
    /// Nothing: the keys are not for printing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChallengeResolver").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ChallengeResolver {
    /// The challenge certificate only when the client offers `acme-tls/1` and nothing
    /// else, as a validator must (RFC 8737 §3), with a name that has a challenge
    /// pending; every other client (no ALPN, `stun.turn`, `http/1.1`) gets the served
    /// certificate.
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let only_acme = client_hello.alpn().is_some_and(|mut offered| {
            offered.next() == Some(ALPN_ACME_TLS) && offered.next().is_none()
        });
        let challenge = only_acme
            .then(|| client_hello.server_name())
            .flatten()
            .and_then(|name| self.challenges.certificate_for(name));
        Some(challenge.unwrap_or_else(|| self.served.clone()))
    }
}
