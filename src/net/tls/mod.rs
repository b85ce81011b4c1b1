//! The TLS server side of TURN over TLS (RFC 8656 §3.1, port 5349), with live
//! certificate reload.
//!
//! This module owns the certificate chain and private key read from two PEM files and
//! the rustls [`ServerConfig`](rustls::ServerConfig) built from them. Each new
//! connection gets a [`TlsAcceptor`](tokio_rustls::TlsAcceptor) for the configuration
//! current at that moment; a reload swaps in a new configuration for later handshakes
//! and never touches established connections.
//!
//! What it must never do:
//! - put key material in an error, a log line or a `Debug` output: errors name the file
//!   and what is wrong, nothing read from it;
//! - replace a working certificate with a broken one: a reload builds and checks the
//!   whole new configuration (PEM syntax, key type, key matching the certificate) before
//!   it is published, and on any error the old one keeps serving;
//! - use the aws-lc crypto provider: the crate is built with ring only, so the provider
//!   is always passed explicitly.
//!
//! ALPN: the server offers `stun.turn` (RFC 7443). Clients that offer no ALPN at all
//! (the usual case for TURN clients, browsers included) and clients offering `stun.turn`
//! are accepted. A client that offers only other protocols (say only `h2`) is refused
//! with a `no_application_protocol` alert: this is rustls' behaviour and what RFC 7301
//! §3.2 requires, and such a client was not going to speak TURN anyway.
//!
//! With ACME (`tls.acme`) the server also offers `acme-tls/1`, and a validator offering
//! only that protocol for a name with a TLS-ALPN-01 challenge pending gets the challenge
//! certificate instead (RFC 8737); everyone else still gets the served one.
//!
//! `source` holds the configuration in use and swaps it on reload, `certificate` reads
//! and checks a PEM pair, `resolver` picks the certificate of a handshake, `validity`
//! reads a certificate's validity period.

mod certificate;
mod resolver;
mod source;
#[cfg(test)]
mod tests;
mod validity;

use std::io;
use std::path::PathBuf;

pub use resolver::{ALPN_ACME_TLS, AlpnChallenges};
pub use source::TlsAcceptorSource;
pub use validity::{self_issued, validity_period};

/// Where the certificate chain and key live (PEM files; Let's Encrypt's `fullchain.pem`
/// and `privkey.pem` work as is).
#[derive(Debug, Clone)]
pub struct CertPaths {
    /// The certificate chain, end-entity certificate first.
    pub cert: PathBuf,
    /// The private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key: PathBuf,
}

/// Why a certificate/key pair could not be loaded. Messages name the file and the
/// problem, never anything read from the file.
///
/// Each message is complete on its own (the underlying error is part of it and not
/// exposed as `source()`), so it reads the same logged with `{}` or in an anyhow chain.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read (missing, permissions, ...).
    #[error("cannot read {}: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    /// The file is not well-formed PEM.
    #[error("{}: malformed PEM ({problem})", path.display())]
    Pem {
        path: PathBuf,
        problem: &'static str,
    },
    /// The certificate file holds no `CERTIFICATE` block.
    #[error("{}: no certificate found (expected a PEM \"CERTIFICATE\" block)", path.display())]
    NoCertificate { path: PathBuf },
    /// The key file holds no private key block.
    #[error(
        "{}: no private key found (expected a PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" block)",
        path.display()
    )]
    NoPrivateKey { path: PathBuf },
    /// The key block decodes but is not a key type rustls/ring can sign with.
    #[error(
        "{}: unsupported or invalid private key (supported: RSA, ECDSA P-256/P-384, Ed25519)",
        path.display()
    )]
    UnsupportedKey { path: PathBuf },
    /// The end-entity certificate is not a valid X.509 certificate.
    #[error("{}: invalid certificate: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    /// The key is valid but belongs to another certificate.
    #[error(
        "the private key in {} does not match the certificate in {}",
        key.display(),
        cert.display()
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    /// rustls refused the configuration (should not happen with the ring provider).
    #[error("TLS configuration rejected: {0}")]
    Config(rustls::Error),
    /// OpenSSL refused the pair for the DTLS listeners (its reasons name no key
    /// material).
    #[error("{}: cannot serve DTLS with this certificate and key: {reason}", cert.display())]
    Dtls { cert: PathBuf, reason: String },
}
