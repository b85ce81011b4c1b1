//! Reading a certificate chain and private key from PEM files, checked to belong
//! together, with errors that name the file and never quote what was read from it.

use std::fs;
use std::path::Path;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::validity::validity_period;
use super::{CertPaths, TlsError};

/// The chain and key, checked to belong together, and the key as read (for the DTLS
/// listeners' context, which OpenSSL builds from it).
pub(super) fn load_certified_key(
    paths: &CertPaths,
    provider: &CryptoProvider,
) -> Result<(CertifiedKey, PrivateKeyDer<'static>), TlsError> {
    let chain = read_cert_chain(&paths.cert)?;
    let key = read_private_key(&paths.key)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|_| TlsError::UnsupportedKey {
            path: paths.key.clone(),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    check_key_matches(&certified, paths)?;
    if let Some(end_entity) = certified.cert.first() {
        warn_if_outside_validity(&paths.cert, end_entity);
    }
    Ok((certified, key))
}

/// All `CERTIFICATE` blocks of the file, in order (end-entity first, as in
/// `fullchain.pem`). Other blocks, such as a key in a combined file, are skipped.
fn read_cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_text = read_file(path)?;
    let chain = CertificateDer::pem_slice_iter(&pem_text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| pem_error(path, err))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: path.into() });
    }
    Ok(chain)
}

/// The first private key block of the file.
fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem_text = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&pem_text).map_err(|err| match err {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey { path: path.into() },
        other => pem_error(path, other),
    })
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|error| TlsError::Read {
        path: path.into(),
        error,
    })
}

/// Maps a PEM parse error to a fixed description: the parser's own messages may quote
/// the offending line, which in a key file could be key material.
fn pem_error(path: &Path, err: pem::Error) -> TlsError {
    let problem = match err {
        pem::Error::MissingSectionEnd { .. } => "a block has no END line",
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a block is not valid base64",
        pem::Error::SectionTooLarge => "a block is too large",
        pem::Error::NoItemsFound => "no PEM block",
        pem::Error::Io(_) => "read error",
        _ => "unrecognized PEM error",
    };
    TlsError::Pem {
        path: path.into(),
        problem,
    }
}

/// Refuses a key that is not the certificate's: serving it would fail every handshake.
/// With ring every key type exposes its public key, so "cannot tell" is refused too.
fn check_key_matches(certified: &CertifiedKey, paths: &CertPaths) -> Result<(), TlsError> {
    use rustls::{Error, InconsistentKeys};
    match certified.keys_match() {
        Ok(()) => Ok(()),
        Err(Error::InconsistentKeys(InconsistentKeys::KeyMismatch | InconsistentKeys::Unknown)) => {
            Err(TlsError::KeyMismatch {
                cert: paths.cert.clone(),
                key: paths.key.clone(),
            })
        }
        Err(other) => Err(TlsError::BadCertificate {
            path: paths.cert.clone(),
            reason: other.to_string(),
        }),
    }
}

/// An expired (or not yet valid) certificate still loads: refusing it would not make
/// clients any happier, and at reload it would keep an equally expired one. It is worth
/// a warning though, since it usually means a failed renewal or a wrong clock.
fn warn_if_outside_validity(path: &Path, cert: &CertificateDer<'_>) {
    let Some((not_before, not_after)) = validity_period(cert) else {
        tracing::warn!(path = %path.display(), "could not read the certificate's validity period");
        return;
    };
    let now = i64::try_from(crate::clock::unix_now()).unwrap_or(i64::MAX);
    if now > not_after {
        let days = (now - not_after) / 86_400;
        tracing::warn!(path = %path.display(), days_ago = days, "certificate has expired; clients will reject it");
    } else if now < not_before {
        tracing::warn!(path = %path.display(), "certificate is not valid yet (check the clock); clients will reject it");
    }
}
