//! The TLS client configuration of the client tools (`tern load`, `probe`, `stun`): ALPN
//! `stun.turn`, and either the roots of a PEM file or, with `--tls-insecure`, a verifier
//! that accepts any certificate.
//!
//! The accept-anything verifier exists for benchmarks on loopback against a server
//! with a throwaway self-signed certificate. It still checks the handshake signatures
//! (so the peer holds the key of the certificate it showed) but not who that is: never
//! use it across a network you do not control.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// How the TLS server certificate is checked.
#[derive(Debug, Clone)]
pub enum TlsTrust {
    /// Accept any certificate (`--tls-insecure`, for loopback benchmarks).
    AnyCertificate,
    /// Verify against the PEM roots in this file, for the server's IP address.
    Roots(PathBuf),
}

/// A client configuration for `trust`; the error says what is wrong with the CA file.
pub fn client_config(trust: &TlsTrust) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let mut config = match trust {
        TlsTrust::AnyCertificate => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(
                provider.signature_verification_algorithms,
            )))
            .with_no_client_auth(),
        TlsTrust::Roots(path) => builder
            .with_root_certificates(roots(path)?)
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"stun.turn".to_vec()];
    Ok(Arc::new(config))
}

fn roots(path: &Path) -> Result<RootCertStore, String> {
    let shown = path.display();
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| format!("{shown}: {e}"))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("{shown}: {e}"))?;
        roots.add(cert).map_err(|e| format!("{shown}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("{shown}: no certificate in it"));
    }
    Ok(roots)
}

/// Accepts whatever certificate the server shows; see the module documentation.
#[derive(Debug)]
struct AcceptAnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_config_offers_stun_turn() {
        let config = client_config(&TlsTrust::AnyCertificate).expect("config");
        assert_eq!(config.alpn_protocols, vec![b"stun.turn".to_vec()]);
    }

    #[test]
    fn missing_ca_file_is_an_error() {
        let err = client_config(&TlsTrust::Roots("/nonexistent/ca.pem".into()));
        assert!(err.is_err());
    }
}
