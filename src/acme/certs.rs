//! The keys and certificates tern makes itself (with rcgen, on ring): the certificate
//! key and its CSR, the placeholder served until the CA's certificate arrives, and the
//! TLS-ALPN-01 challenge certificate (RFC 8737 §3).

use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, CustomExtension, DnType, KeyPair};
use rustls::crypto::ring;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use super::AcmeError;

/// The placeholder's subject, so an operator looking at it knows what it is.
const PLACEHOLDER_NAME: &str = "tern placeholder (ACME certificate pending)";

/// How long the placeholder is valid: it only bridges the time until the first order
/// succeeds, and a client that trusted it by mistake would not trust it for long.
const PLACEHOLDER_LIFETIME: Duration = Duration::from_secs(7 * 86_400);

/// A new key for a certificate: ECDSA P-256, which every TLS client and CA takes.
pub fn new_key() -> Result<KeyPair, AcmeError> {
    Ok(KeyPair::generate()?)
}

/// A certificate signing request for `domains` (the first is the subject), signed by
/// `key`, DER.
pub fn csr(domains: &[String], key: &KeyPair) -> Result<Vec<u8>, AcmeError> {
    let mut params = CertificateParams::new(domains.to_vec())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(first) = domains.first() {
        params
            .distinguished_name
            .push(DnType::CommonName, first.as_str());
    }
    Ok(params.serialize_request(key)?.der().to_vec())
}

/// A self-signed certificate for `domains`, valid from now for a week: what the TLS
/// listeners serve until the CA's arrives. Returns (certificate PEM, key PEM).
pub fn placeholder(domains: &[String]) -> Result<(String, String), AcmeError> {
    let key = new_key()?;
    let mut params = CertificateParams::new(domains.to_vec())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, PLACEHOLDER_NAME);
    let now = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(crate::clock::unix_now());
    params.not_before = now;
    params.not_after = now + PLACEHOLDER_LIFETIME;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The TLS-ALPN-01 certificate for `domain`: self-signed, for that one name, carrying
/// the SHA-256 digest of the key authorization in the critical `acmeIdentifier`
/// extension (RFC 8737 §3).
pub fn alpn_challenge(domain: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, AcmeError> {
    let key = new_key()?;
    let mut params = CertificateParams::new(vec![domain.to_string()])?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key)?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing_key = ring::default_provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|_| AcmeError::Certificate(rcgen::Error::CouldNotParseKeyPair))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing_key,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tls::{self_issued, validity_period};
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    #[test]
    fn the_placeholder_is_self_issued_and_short_lived() {
        let domains = vec!["turn.example.com".to_string()];
        let (cert_pem, key_pem) = placeholder(&domains).unwrap();
        assert!(key_pem.contains("PRIVATE KEY"));
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        assert_eq!(self_issued(&der), Some(true));
        let (not_before, not_after) = validity_period(&der).unwrap();
        assert_eq!(
            not_after - not_before,
            PLACEHOLDER_LIFETIME.as_secs() as i64
        );
        let now = crate::clock::unix_now() as i64;
        assert!((not_before - now).abs() < 60);
    }

    #[test]
    fn the_challenge_certificate_carries_the_digest() {
        let digest = [7u8; 32];
        let certified = alpn_challenge("turn.example.com", &digest).unwrap();
        let der = certified.cert[0].as_ref();
        // id-pe-acmeIdentifier (1.3.6.1.5.5.7.1.31), then the OCTET STRING of the digest.
        let oid = [0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x1f];
        let at = der.windows(oid.len()).position(|w| w == oid).expect("oid");
        let mut expected = vec![0x04, 0x20];
        expected.extend_from_slice(&digest);
        assert!(der[at..].windows(expected.len()).any(|w| w == expected));
    }
}
