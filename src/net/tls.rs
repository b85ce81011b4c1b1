//! The TLS server side of TURN over TLS (RFC 8656 §3.1, port 5349), with live
//! certificate reload.
//!
//! This module owns the certificate chain and private key read from two PEM files and
//! the rustls [`ServerConfig`] built from them. Each new connection gets a
//! [`TlsAcceptor`] for the configuration current at that moment; a reload swaps in a new
//! configuration for later handshakes and never touches established connections.
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

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::version::{TLS12, TLS13};
use tokio_rustls::TlsAcceptor;

/// ALPN protocol name for TURN (RFC 7443).
const ALPN_STUN_TURN: &[u8] = b"stun.turn";

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
}

/// What a file looked like when it was last read, to notice a change cheaply.
///
/// `None` when the file could not be stat'ed: a file that disappears and comes back is
/// then seen as changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp(Option<(SystemTime, u64)>);

impl FileStamp {
    /// Modification time and size. The size catches a rewrite within the filesystem's
    /// mtime granularity in most cases.
    fn of(path: &Path) -> Self {
        Self(
            fs::metadata(path)
                .ok()
                .and_then(|meta| Some((meta.modified().ok()?, meta.len()))),
        )
    }
}

/// Stamps of both files as of the last load attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamps {
    cert: FileStamp,
    key: FileStamp,
}

impl Stamps {
    fn of(paths: &CertPaths) -> Self {
        Self {
            cert: FileStamp::of(&paths.cert),
            key: FileStamp::of(&paths.key),
        }
    }
}

/// One certificate, two uses: TURN over TLS and the self-test pages (HTTPS), which
/// differ only in ALPN.
struct Configs {
    turn: Arc<ServerConfig>,
    https: Arc<ServerConfig>,
}

impl Configs {
    fn build(paths: &CertPaths) -> Result<Self, TlsError> {
        let turn = build_config(paths)?;
        let mut https = turn.clone();
        https.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            turn: Arc::new(turn),
            https: Arc::new(https),
        })
    }
}

struct Inner {
    /// The configuration new handshakes use. Replaced whole on reload, so a fresh session
    /// cache comes with each certificate: sessions established under the old
    /// certificate are not resumed under the new one.
    configs: ArcSwap<Configs>,
    /// The files in use and their stamps as of the last load attempt. The mutex also
    /// serializes reloads, so a slow reload can never publish an older configuration
    /// over a newer one.
    loaded: Mutex<Loaded>,
}

/// Which files the certificate in use came from, and what they looked like.
struct Loaded {
    paths: CertPaths,
    stamps: Stamps,
}

/// The certificate currently served. Cheap to clone (one `Arc`). New TLS handshakes use
/// the current certificate; established connections are untouched by a reload.
#[derive(Clone)]
pub struct TlsAcceptorSource {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TlsAcceptorSource {
    /// Paths only: the configuration holds the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAcceptorSource")
            .field("paths", &self.lock_loaded().paths)
            .finish_non_exhaustive()
    }
}

impl TlsAcceptorSource {
    /// Loads and checks the files; error if anything is wrong. Meant for start-up, so the
    /// server fails before binding rather than on the first client.
    pub fn load(paths: CertPaths) -> Result<Self, TlsError> {
        let stamps = Stamps::of(&paths);
        let configs = Configs::build(&paths)?;
        Ok(Self {
            inner: Arc::new(Inner {
                configs: ArcSwap::from_pointee(configs),
                loaded: Mutex::new(Loaded { paths, stamps }),
            }),
        })
    }

    /// An acceptor for one new connection, using the current certificate.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.inner.configs.load().turn.clone())
    }

    /// The same for an HTTPS connection to the self-test pages (ALPN `http/1.1`).
    pub fn https_acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.inner.configs.load().https.clone())
    }

    /// Reads the pair at `paths` (on SIGHUP: the files in use, or new ones when
    /// `tls.cert` or `tls.key` changed). On success the new certificate is used for new
    /// handshakes and its files are the ones watched; on error the old certificate and
    /// files stay in use and the error is returned for the caller to log.
    ///
    /// Reads two small files synchronously.
    pub fn reload_from(&self, paths: CertPaths) -> Result<(), TlsError> {
        let mut loaded = self.lock_loaded();
        if paths.cert == loaded.paths.cert && paths.key == loaded.paths.key {
            let stamps = Stamps::of(&loaded.paths);
            return self.reload_locked(&mut loaded, stamps);
        }
        let stamps = Stamps::of(&paths);
        let configs = Configs::build(&paths)?;
        self.inner.configs.store(Arc::new(configs));
        *loaded = Loaded { paths, stamps };
        Ok(())
    }

    /// Reloads only if either file's modification time (or size) changed since the last
    /// load attempt; returns `Some(result)` when it tried. Costs two `stat` calls when
    /// nothing changed, so it can be polled every few seconds.
    ///
    /// A failed attempt is not retried until a file changes again: a half-written
    /// renewal is picked up when its last file lands, and a broken pair is reported once
    /// rather than at every poll.
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let mut loaded = self.lock_loaded();
        let now = Stamps::of(&loaded.paths);
        if now == loaded.stamps {
            return None;
        }
        Some(self.reload_locked(&mut loaded, now))
    }

    /// The paths and stamps are plain data, so a panic elsewhere while holding the lock
    /// cannot leave them inconsistent: poisoning is ignored.
    fn lock_loaded(&self) -> std::sync::MutexGuard<'_, Loaded> {
        self.inner
            .loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `stamps` (taken before reading, so a change during the read is noticed at
    /// the next poll) and publishes the new configuration only if it built cleanly.
    fn reload_locked(&self, loaded: &mut Loaded, stamps: Stamps) -> Result<(), TlsError> {
        loaded.stamps = stamps;
        let configs = Configs::build(&loaded.paths)?;
        self.inner.configs.store(Arc::new(configs));
        Ok(())
    }
}

/// Reads both files and builds the server configuration: TLS 1.2 and 1.3, no client
/// authentication, ALPN `stun.turn`.
fn build_config(paths: &CertPaths) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(ring::default_provider());
    let certified = load_certified_key(paths, &provider)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&TLS13, &TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![ALPN_STUN_TURN.to_vec()];
    Ok(config)
}

/// The chain and key, checked to belong together.
fn load_certified_key(
    paths: &CertPaths,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = read_cert_chain(&paths.cert)?;
    let key = read_private_key(&paths.key)?;
    let signing_key =
        provider
            .key_provider
            .load_private_key(key)
            .map_err(|_| TlsError::UnsupportedKey {
                path: paths.key.clone(),
            })?;
    let certified = CertifiedKey::new(chain, signing_key);
    check_key_matches(&certified, paths)?;
    if let Some(end_entity) = certified.cert.first() {
        warn_if_outside_validity(&paths.cert, end_entity);
    }
    Ok(certified)
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

const TAG_SEQUENCE: u8 = 0x30;
const TAG_VERSION: u8 = 0xa0;
const TAG_UTC_TIME: u8 = 0x17;
const TAG_GENERALIZED_TIME: u8 = 0x18;

/// `notBefore` and `notAfter` of a DER certificate as Unix seconds, or `None` if it
/// cannot be read. Just enough DER to reach `tbsCertificate.validity` (RFC 5280 §4.1);
/// rustls and webpki do not expose it.
fn validity_period(cert: &[u8]) -> Option<(i64, i64)> {
    let (TAG_SEQUENCE, certificate, _) = der_read(cert)? else {
        return None;
    };
    let (TAG_SEQUENCE, tbs, _) = der_read(certificate)? else {
        return None;
    };
    let (tag, _, after_version) = der_read(tbs)?;
    let mut fields = if tag == TAG_VERSION {
        after_version
    } else {
        tbs
    };
    // serialNumber, signature, issuer
    for _ in 0..3 {
        fields = der_read(fields)?.2;
    }
    let (TAG_SEQUENCE, validity, _) = der_read(fields)? else {
        return None;
    };
    let (tag, not_before, rest) = der_read(validity)?;
    let not_before = parse_der_time(tag, not_before)?;
    let (tag, not_after, _) = der_read(rest)?;
    Some((not_before, parse_der_time(tag, not_after)?))
}

/// One DER element: (tag, contents, what follows). Single-byte tags only, which is all
/// the path to `validity` uses.
fn der_read(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (len_bytes, rest) = rest.split_at_checked(count)?;
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, &byte| (acc << 8) | usize::from(byte));
        (len, rest)
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

/// A DER `UTCTime` (`YYMMDDHHMMSSZ`) or `GeneralizedTime` (`YYYYMMDDHHMMSSZ`) as Unix
/// seconds. UTCTime years 50..99 are 19xx (RFC 5280 §4.1.2.5.1).
fn parse_der_time(tag: u8, text: &[u8]) -> Option<i64> {
    let digits = text.strip_suffix(b"Z")?;
    let (year, rest) = match (tag, digits.len()) {
        (TAG_UTC_TIME, 12) => {
            let (yy, rest) = digits.split_at_checked(2)?;
            let yy = parse_digits(yy)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, rest)
        }
        (TAG_GENERALIZED_TIME, 14) => {
            let (yyyy, rest) = digits.split_at_checked(4)?;
            (parse_digits(yyyy)?, rest)
        }
        _ => return None,
    };
    let fields = rest
        .chunks_exact(2)
        .map(parse_digits)
        .collect::<Option<Vec<_>>>()?;
    let [month, day, hour, minute, second] = fields[..] else {
        return None;
    };
    let plausible = (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && hour < 24
        && minute < 60
        && second <= 60;
    plausible
        .then(|| days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

fn parse_digits(digits: &[u8]) -> Option<i64> {
    digits.iter().try_fold(0i64, |acc, &digit| {
        digit
            .is_ascii_digit()
            .then(|| acc * 10 + i64::from(digit - b'0'))
    })
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ProtocolVersion, RootCertStore, SupportedProtocolVersion};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, UNIX_EPOCH};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::TlsConnector;
    use tokio_rustls::client::TlsStream;

    /// A scratch directory removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("tern-tls-{}-{unique}-{name}", std::process::id()));
            fs::create_dir_all(&dir).expect("create temp dir");
            Self(dir)
        }

        fn paths(&self) -> CertPaths {
            CertPaths {
                cert: self.0.join("fullchain.pem"),
                key: self.0.join("privkey.pem"),
            }
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A self-signed certificate for `localhost`.
    struct TestCert {
        cert_pem: String,
        key_pem: String,
        der: CertificateDer<'static>,
    }

    impl TestCert {
        fn new() -> Self {
            let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
                .expect("generate certificate");
            Self::from_rcgen(generated)
        }

        fn from_rcgen(generated: rcgen::CertifiedKey<rcgen::KeyPair>) -> Self {
            Self {
                cert_pem: generated.cert.pem(),
                key_pem: generated.signing_key.serialize_pem(),
                der: generated.cert.der().clone(),
            }
        }

        fn write(&self, paths: &CertPaths) {
            fs::write(&paths.cert, &self.cert_pem).expect("write cert");
            fs::write(&paths.key, &self.key_pem).expect("write key");
        }
    }

    fn load_err(paths: &CertPaths) -> TlsError {
        TlsAcceptorSource::load(paths.clone()).expect_err("load should fail")
    }

    #[test]
    fn loads_a_valid_pair() {
        let dir = TempDir::new("ok");
        let paths = dir.paths();
        TestCert::new().write(&paths);
        let source = TlsAcceptorSource::load(paths).expect("load");
        let configs = source.inner.configs.load();
        assert_eq!(configs.turn.alpn_protocols, vec![b"stun.turn".to_vec()]);
        assert_eq!(configs.https.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(format!("{source:?}").contains("fullchain.pem"));
    }

    #[test]
    fn loads_an_ed25519_key() {
        let dir = TempDir::new("ed25519");
        let paths = dir.paths();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        TestCert::from_rcgen(rcgen::CertifiedKey {
            cert,
            signing_key: key,
        })
        .write(&paths);
        TlsAcceptorSource::load(paths).expect("load");
    }

    /// PEM-encodes `der` under `label`, 64 columns as OpenSSL writes it.
    fn pem_encode(label: &str, der: &[u8]) -> String {
        use base64::Engine;
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|line| std::str::from_utf8(line).expect("base64 is ASCII"))
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    /// The SEC1 `ECPrivateKey` inside a PKCS#8 `PrivateKeyInfo` (its `privateKey` field).
    fn sec1_from_pkcs8(pkcs8: &[u8]) -> Vec<u8> {
        let (_, info, _) = der_read(pkcs8).expect("PrivateKeyInfo");
        let after_version = der_read(info).expect("version").2;
        let after_algorithm = der_read(after_version).expect("algorithm").2;
        let (tag, sec1, _) = der_read(after_algorithm).expect("privateKey");
        assert_eq!(tag, 0x04, "OCTET STRING");
        sec1.to_vec()
    }

    #[test]
    fn loads_a_sec1_ec_key() {
        let dir = TempDir::new("sec1");
        let paths = dir.paths();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        fs::write(&paths.cert, cert.pem()).expect("write cert");
        let sec1 = sec1_from_pkcs8(&key.serialize_der());
        fs::write(&paths.key, pem_encode("EC PRIVATE KEY", &sec1)).expect("write key");
        TlsAcceptorSource::load(paths).expect("load a SEC1 key");
    }

    #[test]
    fn missing_file_is_named() {
        let dir = TempDir::new("missing");
        let paths = dir.paths();
        fs::write(&paths.key, TestCert::new().key_pem).expect("write key");
        let err = load_err(&paths);
        assert!(matches!(err, TlsError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("fullchain.pem"), "{err}");
    }

    #[test]
    fn garbage_is_refused() {
        let dir = TempDir::new("garbage");
        let paths = dir.paths();
        let cert = TestCert::new();
        cert.write(&paths);
        fs::write(&paths.cert, "this is not PEM at all\n").expect("write");
        let err = load_err(&paths);
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");

        cert.write(&paths);
        fs::write(
            &paths.key,
            "garbage\n-----BEGIN PRIVATE KEY-----\nnot base64",
        )
        .expect("write");
        let err = load_err(&paths);
        assert!(matches!(err, TlsError::Pem { .. }), "{err:?}");
        assert!(err.to_string().contains("privkey.pem"), "{err}");
    }

    #[test]
    fn key_material_never_appears_in_errors() {
        let dir = TempDir::new("secret");
        let paths = dir.paths();
        TestCert::new().write(&paths);
        let secret = "-----BEGIN PRIVATE KEY-----\nSECRETSECRET!!\n-----END PRIVATE KEY-----\n";
        fs::write(&paths.key, secret).expect("write");
        let err = load_err(&paths);
        assert!(!err.to_string().contains("SECRET"), "{err}");
        assert!(!format!("{err:?}").contains("SECRET"), "{err:?}");

        // Valid base64, not a key.
        let not_a_key =
            "-----BEGIN PRIVATE KEY-----\nU0VDUkVUU0VDUkVU\n-----END PRIVATE KEY-----\n";
        fs::write(&paths.key, not_a_key).expect("write");
        let err = load_err(&paths);
        assert!(matches!(err, TlsError::UnsupportedKey { .. }), "{err:?}");
    }

    #[test]
    fn key_without_key_block_is_refused() {
        let dir = TempDir::new("nokey");
        let paths = dir.paths();
        let cert = TestCert::new();
        cert.write(&paths);
        // A common mistake: the certificate given as the key.
        fs::write(&paths.key, &cert.cert_pem).expect("write");
        let err = load_err(&paths);
        assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err:?}");
    }

    #[test]
    fn mismatched_key_is_refused() {
        let dir = TempDir::new("mismatch");
        let paths = dir.paths();
        TestCert::new().write(&paths);
        fs::write(&paths.key, TestCert::new().key_pem).expect("write");
        let err = load_err(&paths);
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("privkey.pem") && message.contains("fullchain.pem"));
    }

    #[test]
    fn empty_cert_file_is_refused() {
        let dir = TempDir::new("empty");
        let paths = dir.paths();
        TestCert::new().write(&paths);
        fs::write(&paths.cert, "").expect("write");
        let err = load_err(&paths);
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");
        assert!(err.to_string().contains("fullchain.pem"), "{err}");
    }

    #[test]
    fn reads_the_validity_period() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("p");
        // UTCTime before 2050, GeneralizedTime from 2050 on (RFC 5280).
        params.not_before = rcgen::date_time_ymd(1999, 12, 31);
        params.not_after = rcgen::date_time_ymd(2061, 3, 1);
        let cert = params.self_signed(&key).expect("cert");
        assert_eq!(
            validity_period(cert.der()),
            Some((
                params.not_before.unix_timestamp(),
                params.not_after.unix_timestamp()
            ))
        );
        assert_eq!(validity_period(b"\x30\x03\x02\x01"), None);
        assert_eq!(validity_period(b""), None);
    }

    #[test]
    fn expired_certificate_still_loads() {
        let dir = TempDir::new("expired");
        let paths = dir.paths();
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("p");
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        let cert = params.self_signed(&key).expect("cert");
        TestCert::from_rcgen(rcgen::CertifiedKey {
            cert,
            signing_key: key,
        })
        .write(&paths);
        TlsAcceptorSource::load(paths).expect("an expired certificate only warns");
    }

    /// Accepts connections with the source's current acceptor and echoes bytes back.
    async fn spawn_echo_server(source: TlsAcceptorSource) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = source.acceptor();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = [0u8; 1024];
                    while let Ok(n @ 1..) = tls.read(&mut buf).await {
                        if tls.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    /// A fresh client (no session cache shared between calls) trusting `trusted`.
    async fn connect(
        addr: std::net::SocketAddr,
        trusted: &[&CertificateDer<'static>],
        versions: &[&'static SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> io::Result<TlsStream<TcpStream>> {
        let mut roots = RootCertStore::empty();
        for cert in trusted {
            roots.add((*cert).clone()).expect("add root");
        }
        let mut config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_protocol_versions(versions)
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|proto| proto.to_vec()).collect();
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").expect("name");
        TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    }

    /// The certificate a new connection to `addr` is served.
    async fn served_by(
        addr: std::net::SocketAddr,
        trusted: &[&CertificateDer<'static>],
    ) -> CertificateDer<'static> {
        let stream = connect(addr, trusted, &[&TLS13], &[b"stun.turn"]).await;
        served_cert(&stream.expect("connect"))
    }

    fn served_cert(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
        let certs = stream.get_ref().1.peer_certificates().expect("peer certs");
        certs.first().expect("end-entity cert").clone()
    }

    async fn echo_roundtrip(stream: &mut TlsStream<TcpStream>, data: &[u8]) {
        stream.write_all(data).await.expect("write");
        let mut back = vec![0u8; data.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
            .await
            .expect("echo timed out")
            .expect("read");
        assert_eq!(back, data);
    }

    #[tokio::test]
    async fn handshake_tls13_and_tls12_with_alpn() {
        let dir = TempDir::new("handshake");
        let paths = dir.paths();
        let cert = TestCert::new();
        cert.write(&paths);
        let addr = spawn_echo_server(TlsAcceptorSource::load(paths).expect("load")).await;

        let mut tls13 = connect(addr, &[&cert.der], &[&TLS13, &TLS12], &[b"stun.turn"])
            .await
            .expect("TLS 1.3 handshake");
        let conn = tls13.get_ref().1;
        assert_eq!(conn.alpn_protocol(), Some(&b"stun.turn"[..]));
        assert_eq!(conn.protocol_version(), Some(ProtocolVersion::TLSv1_3));
        echo_roundtrip(&mut tls13, b"binding").await;

        let mut tls12 = connect(addr, &[&cert.der], &[&TLS12], &[b"stun.turn"])
            .await
            .expect("TLS 1.2 handshake");
        let conn = tls12.get_ref().1;
        assert_eq!(conn.alpn_protocol(), Some(&b"stun.turn"[..]));
        assert_eq!(conn.protocol_version(), Some(ProtocolVersion::TLSv1_2));
        echo_roundtrip(&mut tls12, b"binding").await;
    }

    #[tokio::test]
    async fn alpn_is_optional_but_a_foreign_protocol_is_refused() {
        let dir = TempDir::new("alpn");
        let paths = dir.paths();
        let cert = TestCert::new();
        cert.write(&paths);
        let addr = spawn_echo_server(TlsAcceptorSource::load(paths).expect("load")).await;

        let mut no_alpn = connect(addr, &[&cert.der], &[&TLS13], &[])
            .await
            .expect("a client without ALPN is accepted");
        assert_eq!(no_alpn.get_ref().1.alpn_protocol(), None);
        echo_roundtrip(&mut no_alpn, b"x").await;

        let both = connect(addr, &[&cert.der], &[&TLS13], &[b"h2", b"stun.turn"])
            .await
            .expect("stun.turn among others is accepted");
        assert_eq!(both.get_ref().1.alpn_protocol(), Some(&b"stun.turn"[..]));

        let only_h2 = connect(addr, &[&cert.der], &[&TLS13], &[b"h2"]).await;
        assert!(only_h2.is_err(), "a client offering only h2 is refused");
    }

    #[tokio::test]
    async fn reload_swaps_the_certificate_for_new_connections_only() {
        let dir = TempDir::new("reload");
        let paths = dir.paths();
        let (a, b) = (TestCert::new(), TestCert::new());
        a.write(&paths);
        let source = TlsAcceptorSource::load(paths.clone()).expect("load");
        let addr = spawn_echo_server(source.clone()).await;
        let trusted = [&a.der, &b.der];

        let mut before = connect(addr, &trusted, &[&TLS13], &[b"stun.turn"])
            .await
            .expect("connect A");
        assert_eq!(served_cert(&before), a.der);
        echo_roundtrip(&mut before, b"one").await;

        b.write(&paths);
        source.reload_from(paths.clone()).expect("reload to B");
        let after = connect(addr, &trusted, &[&TLS13], &[b"stun.turn"])
            .await
            .expect("connect B");
        assert_eq!(served_cert(&after), b.der);
        echo_roundtrip(&mut before, b"still here").await;

        // Garbage: the reload fails and B keeps serving.
        fs::write(&paths.cert, "garbage").expect("write");
        fs::write(&paths.key, "garbage").expect("write");
        assert!(source.reload_from(paths.clone()).is_err());
        let still_b = connect(addr, &trusted, &[&TLS13], &[b"stun.turn"])
            .await
            .expect("connect after failed reload");
        assert_eq!(served_cert(&still_b), b.der);

        // A half-renewed pair (new cert, old key) is refused the same way.
        fs::write(&paths.cert, &a.cert_pem).expect("write");
        fs::write(&paths.key, &b.key_pem).expect("write");
        assert!(matches!(
            source.reload_from(paths.clone()),
            Err(TlsError::KeyMismatch { .. })
        ));
        let still_b = connect(addr, &trusted, &[&TLS13], &[b"stun.turn"])
            .await
            .expect("connect after mismatched reload");
        assert_eq!(served_cert(&still_b), b.der);
        echo_roundtrip(&mut before, b"and still").await;
    }

    #[tokio::test]
    async fn reload_from_new_paths_serves_and_watches_the_new_files() {
        let (old_dir, new_dir) = (TempDir::new("old-paths"), TempDir::new("new-paths"));
        let (old_paths, new_paths) = (old_dir.paths(), new_dir.paths());
        let (a, b, c) = (TestCert::new(), TestCert::new(), TestCert::new());
        a.write(&old_paths);
        let source = TlsAcceptorSource::load(old_paths.clone()).expect("load");
        let addr = spawn_echo_server(source.clone()).await;
        let trusted = [&a.der, &b.der, &c.der];
        let served = || served_by(addr, &trusted);

        // Paths to files that do not exist: refused, A and its files stay.
        assert!(source.reload_from(new_paths.clone()).is_err());
        assert_eq!(served().await, a.der);
        b.write(&new_paths);
        source
            .reload_from(new_paths.clone())
            .expect("reload from the new paths");
        assert_eq!(served().await, b.der);

        // The new files are the ones watched; the old ones are not any more.
        c.write(&old_paths);
        assert!(
            source.reload_if_changed().is_none(),
            "old files still watched"
        );
        c.write(&new_paths);
        touch(&new_paths, 2_000_000);
        assert!(matches!(source.reload_if_changed(), Some(Ok(()))));
        assert_eq!(served().await, c.der);
    }

    /// Gives both files an explicit, distinct mtime: rewriting within the filesystem's
    /// timestamp granularity would otherwise look unchanged.
    fn touch(paths: &CertPaths, secs_since_epoch: u64) {
        let time = UNIX_EPOCH + Duration::from_secs(secs_since_epoch);
        for path in [&paths.cert, &paths.key] {
            fs::File::options()
                .write(true)
                .open(path)
                .and_then(|file| file.set_modified(time))
                .expect("set mtime");
        }
    }

    #[tokio::test]
    async fn reload_if_changed_only_when_files_change() {
        let dir = TempDir::new("poll");
        let paths = dir.paths();
        let (a, b) = (TestCert::new(), TestCert::new());
        a.write(&paths);
        touch(&paths, 1_000_000);
        let source = TlsAcceptorSource::load(paths.clone()).expect("load");
        let addr = spawn_echo_server(source.clone()).await;
        assert!(source.reload_if_changed().is_none());

        b.write(&paths);
        touch(&paths, 2_000_000);
        assert!(matches!(source.reload_if_changed(), Some(Ok(()))));
        let conn = connect(addr, &[&a.der, &b.der], &[&TLS13], &[])
            .await
            .expect("connect");
        assert_eq!(served_cert(&conn), b.der);
        assert!(source.reload_if_changed().is_none());

        // A broken change is reported once, not at every poll.
        fs::write(&paths.key, "garbage").expect("write");
        touch(&paths, 3_000_000);
        assert!(matches!(source.reload_if_changed(), Some(Err(_))));
        assert!(source.reload_if_changed().is_none());

        // A file that disappears counts as a change, and so does its return.
        fs::remove_file(&paths.key).expect("remove");
        assert!(matches!(
            source.reload_if_changed(),
            Some(Err(TlsError::Read { .. }))
        ));
        b.write(&paths);
        assert!(matches!(source.reload_if_changed(), Some(Ok(()))));
    }
}
