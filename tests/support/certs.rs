//! Test certificates: self-signed for `localhost` and `127.0.0.1`, made fresh by each
//! test with rcgen (nothing is committed), written as PEM files for `tern serve
//! --cert/--key`, and trusted by the project's client through a `RootCertStore`.
//!
//! Use it from a test file with `#[path = "support/certs.rs"] mod certs;`.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;

/// A self-signed certificate and its private key.
pub struct TestCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key (PKCS#8), PEM.
    pub key_pem: String,
    /// The certificate, DER.
    pub der: CertificateDer<'static>,
}

impl TestCert {
    /// A new key and a certificate for `localhost` and `127.0.0.1`.
    pub fn new() -> TestCert {
        Self::for_names(&["localhost", "127.0.0.1"])
    }

    /// A new key and a certificate for `names` (host names or IP addresses).
    pub fn for_names(names: &[&str]) -> TestCert {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let certified = rcgen::generate_simple_self_signed(names).expect("rcgen certificate");
        TestCert {
            cert_pem: certified.cert.pem(),
            key_pem: certified.signing_key.serialize_pem(),
            der: certified.cert.der().clone(),
        }
    }

    /// A root store that trusts this certificate only.
    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).expect("adding the test root");
        roots
    }

    /// Writes (or overwrites) the certificate and key files.
    pub fn write(&self, files: &CertFiles) {
        fs::write(&files.cert, &self.cert_pem)
            .unwrap_or_else(|e| panic!("writing {}: {e}", files.cert.display()));
        fs::write(&files.key, &self.key_pem)
            .unwrap_or_else(|e| panic!("writing {}: {e}", files.key.display()));
    }
}

/// Where a certificate and its key are written.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    /// `fullchain.pem` and `privkey.pem` in `dir`.
    pub fn in_dir(dir: &Path) -> CertFiles {
        CertFiles {
            cert: dir.join("fullchain.pem"),
            key: dir.join("privkey.pem"),
        }
    }

    /// `--cert PATH --key PATH` for `tern serve`.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--cert".to_string(),
            self.cert.display().to_string(),
            "--key".to_string(),
            self.key.display().to_string(),
        ]
    }
}
