//! The TLS source through its public API: loading, handshakes, reloads.

use super::validity::der_read;
use super::*;
use rustls::crypto::ring;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::ServerName;
use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, ProtocolVersion, RootCertStore, SupportedProtocolVersion};
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
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
        let dir =
            std::env::temp_dir().join(format!("tern-tls-{}-{unique}-{name}", std::process::id()));
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
    let not_a_key = "-----BEGIN PRIVATE KEY-----\nU0VDUkVUU0VDUkVU\n-----END PRIVATE KEY-----\n";
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

/// A TLS-ALPN-01 challenge pending for `localhost`, until cleared.
struct OneChallenge(std::sync::Mutex<Option<Arc<rustls::sign::CertifiedKey>>>);

impl AlpnChallenges for OneChallenge {
    fn certificate_for(&self, domain: &str) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let pending = self.0.lock().unwrap();
        pending.clone().filter(|_| domain == "localhost")
    }
}

#[tokio::test]
async fn only_an_acme_validator_gets_the_challenge_certificate() {
    let dir = TempDir::new("acme-alpn");
    let paths = dir.paths();
    let cert = TestCert::new();
    cert.write(&paths);
    let challenge = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let challenge_der = challenge.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::try_from(challenge.signing_key.serialize_der())
        .expect("PKCS#8");
    let signing_key = ring::default_provider()
        .key_provider
        .load_private_key(key)
        .expect("key");
    let certified = rustls::sign::CertifiedKey::new(vec![challenge_der.clone()], signing_key);
    let challenges = Arc::new(OneChallenge(std::sync::Mutex::new(Some(Arc::new(
        certified,
    )))));
    let source = TlsAcceptorSource::load_for(paths, Some(challenges.clone()), false).expect("load");
    let addr = spawn_echo_server(source).await;
    let trusted = [&cert.der, &challenge_der];
    let served = async |alpn: &[&[u8]]| {
        let stream = connect(addr, &trusted, &[&TLS13, &TLS12], alpn)
            .await
            .expect("handshake");
        let negotiated = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        (served_cert(&stream), negotiated)
    };

    let (validator, protocol) = served(&[ALPN_ACME_TLS]).await;
    assert_eq!(validator, challenge_der, "the validator gets the challenge");
    assert_eq!(protocol.as_deref(), Some(ALPN_ACME_TLS));
    let others: [&[&[u8]]; 3] = [&[], &[b"stun.turn"], &[ALPN_ACME_TLS, b"stun.turn"]];
    for alpn in others {
        let (normal, _) = served(alpn).await;
        assert_eq!(
            normal, cert.der,
            "ALPN {alpn:?} gets the served certificate"
        );
    }
    *challenges.0.lock().unwrap() = None;
    let (after, _) = served(&[ALPN_ACME_TLS]).await;
    assert_eq!(
        after, cert.der,
        "no challenge pending: the served certificate"
    );
}
