//! `tls.acme` against a real ACME CA: Pebble (Let's Encrypt's test server) with
//! pebble-challtestsrv as its DNS, every name resolving to 127.0.0.1, everything on
//! loopback.
//!
//! Pebble validates TLS-ALPN-01 on tern's TLS listener and HTTP-01 on tern's HTTP-01
//! listener (its `tlsPort`/`httpPort` are set to them). The tests check what clients
//! see: the certificate served on the TLS port (verified against Pebble's root), TURN
//! over TLS working during and after issuance and renewal, the files in the state
//! directory, and the metrics.
//!
//! Needs `pebble` and `pebble-challtestsrv` (Debian package `pebble`; installed by
//! `scripts/install-test-deps.sh`).

#[path = "support/certs.rs"]
mod certs;
mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use stun::message::METHOD_BINDING;
use support::{
    BackgroundProcess, TempDir, TernServer, ensure_tool, free_udp_port, metric, relay_ports_arg,
};
use tern::client::{Outgoing, TurnClient};

/// The name the certificates are for; the test DNS answers 127.0.0.1 for any name.
const DOMAIN: &str = "turn.example.com";
const USER: &str = "alice";
const PASS: &str = "wonderland";

/// How long one issuance may take (Pebble validates at once with PEBBLE_VA_NOSLEEP).
const ISSUANCE_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Pebble
// ---------------------------------------------------------------------------------------

/// Pebble and its DNS server, with the CA that signs Pebble's own HTTPS certificate
/// (what tern is told to trust with `directory_ca`). Ports and files are chosen when
/// it is made, so tern can be pointed at it before it runs.
struct Pebble {
    dir: TempDir,
    processes: Option<(BackgroundProcess, BackgroundProcess)>,
    /// The ACME API (`/dir`).
    listen: SocketAddr,
    /// Pebble's management API (`/roots/0`: the root its certificates chain to).
    management: SocketAddr,
    dns_port: u16,
    dns_management: u16,
    config: PathBuf,
    /// The CA of Pebble's HTTPS certificate, PEM file.
    https_ca: PathBuf,
    https_ca_der: CertificateDer<'static>,
}

/// What Pebble validates against, and how long its certificates last.
struct PebbleSetup {
    /// tern's TLS listener port (TLS-ALPN-01).
    tls_port: u16,
    /// tern's HTTP-01 listener port.
    http_port: u16,
    /// `certificateValidityPeriod`, seconds.
    validity: u64,
}

impl Pebble {
    /// Ports, certificate and configuration; nothing runs yet.
    fn new(setup: &PebbleSetup) -> Pebble {
        let dir = TempDir::new("tern-acme-pebble");
        let (https_ca, https_ca_der) = write_https_certificate(&dir);
        let listen: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
        let management: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": listen.to_string(),
                "managementListenAddress": management.to_string(),
                "certificate": dir.join("pebble-cert.pem"),
                "privateKey": dir.join("pebble-key.pem"),
                "httpPort": setup.http_port,
                "tlsPort": setup.tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "certificateValidityPeriod": setup.validity,
            }
        });
        let config = dir.write("pebble.json", &config.to_string());
        Pebble {
            dir,
            processes: None,
            listen,
            management,
            dns_port: free_udp_port(),
            dns_management: free_udp_port(),
            config,
            https_ca,
            https_ca_der,
        }
    }

    /// Made and running.
    fn started(setup: &PebbleSetup) -> Pebble {
        let mut pebble = Pebble::new(setup);
        pebble.start();
        pebble
    }

    /// Starts the DNS server and Pebble, and waits until Pebble listens.
    fn start(&mut self) {
        let pebble_bin = ensure_tool("pebble");
        let dns_bin = ensure_tool("pebble-challtestsrv");
        let mut dns_cmd = Command::new(dns_bin);
        dns_cmd.args([
            "-defaultIPv4",
            "127.0.0.1",
            "-defaultIPv6",
            "",
            "-dns01",
            &format!("127.0.0.1:{}", self.dns_port),
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            &format!("127.0.0.1:{}", self.dns_management),
        ]);
        let dns = BackgroundProcess::spawn("pebble-challtestsrv", &mut dns_cmd, self.dir.path());
        let mut cmd = Command::new(pebble_bin);
        cmd.arg("-config")
            .arg(&self.config)
            .arg("-dnsserver")
            .arg(format!("127.0.0.1:{}", self.dns_port))
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            // Every order is validated, renewals included: the challenges are what
            // is under test.
            .env("PEBBLE_AUTHZREUSE", "0");
        let mut pebble = BackgroundProcess::spawn("pebble", &mut cmd, self.dir.path());
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(self.listen).is_err()
            || TcpStream::connect(self.management).is_err()
        {
            pebble.assert_running();
            assert!(
                Instant::now() < deadline,
                "pebble did not listen on {}\n{}",
                self.listen,
                pebble.logs()
            );
            thread::sleep(Duration::from_millis(50));
        }
        self.processes = Some((pebble, dns));
    }

    /// Stops Pebble and its DNS server: the CA is gone.
    fn stop(&mut self) {
        self.processes = None;
    }

    fn directory(&self) -> String {
        format!("https://{}/dir", self.listen)
    }

    /// A root store trusting the root Pebble issues under.
    fn issuing_roots(&self) -> RootCertStore {
        let pem = https_get(self.management, "/roots/0", &self.https_ca_der);
        let root = CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap_or_else(|e| panic!("Pebble's root is not PEM ({e}): {pem}"));
        let mut roots = RootCertStore::empty();
        roots.add(root).expect("Pebble's root");
        roots
    }
}

/// A CA and, signed by it, Pebble's HTTPS certificate for 127.0.0.1 (written as
/// pebble-cert.pem/pebble-key.pem). Returns the CA's PEM file and DER.
fn write_https_certificate(dir: &TempDir) -> (PathBuf, CertificateDer<'static>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tern test CA for Pebble's HTTPS");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    dir.write("pebble-cert.pem", &cert.pem());
    dir.write("pebble-key.pem", &key.serialize_pem());
    (dir.write("https-ca.pem", &ca.pem()), ca.der().clone())
}

// ---------------------------------------------------------------------------------------
// TLS clients
// ---------------------------------------------------------------------------------------

fn client_config(roots: RootCertStore) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A TLS connection to `addr` for `name`, verified against `roots`.
fn tls_connect(
    addr: SocketAddr,
    name: &str,
    roots: RootCertStore,
) -> std::io::Result<StreamOwned<ClientConnection, TcpStream>> {
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    let connection =
        ClientConnection::new(client_config(roots), server_name).map_err(std::io::Error::other)?;
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut stream = StreamOwned::new(connection, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// `GET path` over HTTPS from `addr`, trusting `ca`: the body.
fn https_get(addr: SocketAddr, path: &str, ca: &CertificateDer<'static>) -> String {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let mut stream =
        tls_connect(addr, "127.0.0.1", roots).unwrap_or_else(|e| panic!("HTTPS to {addr}: {e}"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    // Pebble closes without close_notify at times: what was read is what counts.
    let _ = stream.read_to_string(&mut response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or(("", ""));
    assert!(head.starts_with("HTTP/1.1 200"), "GET {path}: {response}");
    body.to_string()
}

/// The end-entity certificate served on `addr` for DOMAIN, if it verifies against
/// `roots` (so the placeholder never does).
fn served_certificate(addr: SocketAddr, roots: &RootCertStore) -> Result<Vec<u8>, String> {
    served_certificate_for(addr, DOMAIN, roots)
}

/// The same for another name.
fn served_certificate_for(
    addr: SocketAddr,
    name: &str,
    roots: &RootCertStore,
) -> Result<Vec<u8>, String> {
    let stream = tls_connect(addr, name, roots.clone()).map_err(|e| e.to_string())?;
    let chain = stream.conn.peer_certificates().ok_or("no certificate")?;
    Ok(chain[0].to_vec())
}

/// Waits until `addr` serves a certificate that verifies against `roots` and is not
/// `old`; returns it.
fn wait_for_certificate(
    tern: &mut TernServer,
    addr: SocketAddr,
    roots: &RootCertStore,
    old: Option<&[u8]>,
) -> Vec<u8> {
    let deadline = Instant::now() + ISSUANCE_TIMEOUT;
    loop {
        tern.assert_running();
        let last = match served_certificate(addr, roots) {
            Ok(der) if Some(der.as_slice()) != old => return der,
            Ok(_) => "still the previous certificate".to_string(),
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "no new certificate from Pebble on {addr} within {ISSUANCE_TIMEOUT:?} (last: {last})\n{}",
            tern.logs()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// A TURN client over TLS to `addr`, verifying DOMAIN against `roots`.
fn turn_over_tls(addr: SocketAddr, roots: RootCertStore) -> TurnClient {
    TurnClient::connect_tls(addr, DOMAIN, roots, USER, PASS)
        .unwrap_or_else(|e| panic!("TURN over TLS to {addr}: {e}"))
}

fn binding_works(client: &mut TurnClient) {
    let reply = client
        .request(METHOD_BINDING, &Outgoing::default())
        .expect("Binding answered");
    assert!(reply.is_success(), "Binding: {:?}", reply.code);
}

// ---------------------------------------------------------------------------------------
// tern
// ---------------------------------------------------------------------------------------

/// A tern with `tls.acme` against `pebble`, TLS on `tls_port`.
struct AcmeTern {
    state_dir: PathBuf,
    tls: SocketAddr,
    admin: SocketAddr,
    config: String,
}

impl AcmeTern {
    /// `acme_extra` goes into `[tls.acme]` (challenge, renew_before, retry_min, ...).
    fn new(dir: &TempDir, pebble: &Pebble, tls_port: u16, acme_extra: &str) -> AcmeTern {
        let state_dir = dir.join("acme-state");
        let tls: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
        let config = format!(
            r#"
[server]
tls_listen = ["{tls}"]

[relay]
ports = "{ports}"

[[auth.users]]
name = "{USER}"
password = "{PASS}"

[peers]
allowed = ["127.0.0.0/8"]

[admin]
listen = "{admin}"

[tls.acme]
domains = ["{DOMAIN}"]
email = "ops@example.com"
directory = "{directory}"
directory_ca = "{ca}"
state_dir = "{state}"
{acme_extra}
"#,
            ports = relay_ports_arg(),
            directory = pebble.directory(),
            ca = pebble.https_ca.display(),
            state = state_dir.display(),
        );
        AcmeTern {
            state_dir,
            tls,
            admin,
            config,
        }
    }

    fn start(&self) -> TernServer {
        TernServer::start_with_config(&self.config, &[])
    }

    fn file(&self, name: &str) -> PathBuf {
        self.state_dir.join(name)
    }

    /// The end-entity certificate in `cert.pem`, DER.
    fn certificate_on_disk(&self) -> Vec<u8> {
        let pem = fs::read(self.file("cert.pem")).expect("cert.pem");
        CertificateDer::pem_slice_iter(&pem)
            .next()
            .expect("a certificate in cert.pem")
            .expect("PEM")
            .to_vec()
    }

    fn renewals(&self, result: &str) -> f64 {
        metric(
            self.admin,
            &format!("tern_acme_renewals_total{{result=\"{result}\"}}"),
        )
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Polls `condition` for up to `timeout`, panicking with `what` and tern's logs.
fn wait_until(tern: &mut TernServer, timeout: Duration, what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        tern.assert_running();
        assert!(
            Instant::now() < deadline,
            "{what} within {timeout:?}\n{}",
            tern.logs()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// Trusts the certificate in tern's `cert.pem` as a root (the placeholder is
/// self-signed), for clients connecting before the CA's certificate arrives.
fn trusting(der: Vec<u8>) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(der))
        .expect("the placeholder as a root");
    roots
}

/// Issuance checks shared by both challenge types: the certificate served is Pebble's
/// and the one on disk, the files are private, TURN over TLS works with it, and the
/// metrics say so.
fn assert_issued(acme: &AcmeTern, tern: &mut TernServer, roots: &RootCertStore) -> Vec<u8> {
    let issued = wait_for_certificate(tern, acme.tls, roots, None);
    assert_eq!(
        issued,
        acme.certificate_on_disk(),
        "the certificate served is the one in cert.pem"
    );
    assert_eq!(mode(&acme.state_dir), 0o700);
    for file in ["cert.pem", "key.pem", "account.json"] {
        assert_eq!(mode(&acme.file(file)), 0o600, "{file}");
    }
    let mut client = turn_over_tls(acme.tls, roots.clone());
    binding_works(&mut client);
    let reply = client.allocate(vec![]).expect("Allocate answered");
    assert!(
        reply.is_success(),
        "Allocate: {:?}\n{}",
        reply.code,
        tern.logs()
    );
    wait_until(
        tern,
        Duration::from_secs(5),
        "no successful order counted",
        || acme.renewals("ok") >= 1.0,
    );
    let expiry = metric(acme.admin, "tern_acme_certificate_expiry_seconds");
    let now = tern::clock::unix_now() as f64;
    assert!(
        (now + 29.0 * 86_400.0..now + 31.0 * 86_400.0).contains(&expiry),
        "expiry {expiry} vs now {now}"
    );
    // Neither the certificate key nor the account key shows up in the logs.
    let logs = tern.logs();
    let key_pem = fs::read_to_string(acme.file("key.pem")).unwrap();
    let account = fs::read_to_string(acme.file("account.json")).unwrap();
    let account: serde_json::Value = serde_json::from_str(&account).unwrap();
    let account_key = account["credentials"]["key_pkcs8"]
        .as_str()
        .expect("key_pkcs8");
    let secrets = key_pem.lines().filter(|l| !l.starts_with("-----"));
    for secret in secrets.chain([&account_key[..40], &account_key[40..80]]) {
        assert!(!logs.contains(secret), "a key in the logs: {logs}");
    }
    issued
}

/// Tern starts before the CA is up: it serves the placeholder (TURN over TLS works with
/// it), counts the failed orders, and once Pebble runs gets its certificate through
/// TLS-ALPN-01 on its own TLS listener, without disturbing the connection made before.
#[test]
fn tls_alpn_01_replaces_the_placeholder_with_the_cas_certificate() {
    let dir = TempDir::new("tern-acme-alpn");
    let tls_port = free_udp_port();
    let mut pebble = Pebble::new(&PebbleSetup {
        tls_port,
        http_port: free_udp_port(),
        validity: 30 * 86_400,
    });
    let acme = AcmeTern::new(
        &dir,
        &pebble,
        tls_port,
        "challenge = \"tls-alpn-01\"\nretry_min = 1",
    );
    let mut tern = acme.start();
    assert!(tern.logs().contains("placeholder"), "{}", tern.logs());
    let placeholder = acme.certificate_on_disk();
    let mut early = turn_over_tls(acme.tls, trusting(placeholder.clone()));
    binding_works(&mut early);
    let reply = early.allocate(vec![]).expect("Allocate answered");
    assert!(
        reply.is_success(),
        "Allocate: {:?}\n{}",
        reply.code,
        tern.logs()
    );
    wait_until(
        &mut tern,
        Duration::from_secs(10),
        "no failed order counted",
        || acme.renewals("error") >= 1.0,
    );
    assert!(
        tern.logs()
            .contains("ACME: no new certificate, the current one stays in use"),
        "{}",
        tern.logs()
    );
    pebble.start();
    let roots = pebble.issuing_roots();
    let issued = assert_issued(&acme, &mut tern, &roots);
    assert_ne!(issued, placeholder);
    // The connection made under the placeholder is untouched by the swap.
    binding_works(&mut early);
    let reply = early.refresh(Some(600)).expect("Refresh answered");
    assert!(reply.is_success(), "Refresh: {:?}", reply.code);
}

/// TLS-ALPN-01 on a TLS port shared with a website (`[front]`, README "TURN on 443
/// next to your website"): the validator's `acme-tls/1` ClientHello is routed to tern,
/// not passed to the site (here an address where nothing listens, so a wrong route
/// fails the validation).
#[test]
fn tls_alpn_01_works_on_a_port_shared_with_a_website() {
    let dir = TempDir::new("tern-acme-front");
    let tls_port = free_udp_port();
    let pebble = Pebble::started(&PebbleSetup {
        tls_port,
        http_port: free_udp_port(),
        validity: 30 * 86_400,
    });
    let site = free_udp_port();
    let extra = format!(
        "challenge = \"tls-alpn-01\"\nretry_min = 1\n\n[front]\nupstream = \"127.0.0.1:{site}\"\n"
    );
    let acme = AcmeTern::new(&dir, &pebble, tls_port, &extra);
    let mut tern = acme.start();
    let roots = pebble.issuing_roots();
    assert_issued(&acme, &mut tern, &roots);
    let routed = metric(acme.admin, "tern_front_routed_total{route=\"tern\"}");
    assert!(
        routed >= 1.0,
        "no validator connection routed to tern: {routed}"
    );
    assert_eq!(
        metric(acme.admin, "tern_front_routed_total{route=\"upstream\"}"),
        0.0
    );
}

/// HTTP-01 on tern's responder; a domain added to the list later is ordered at the
/// next start, though the certificate on disk is far from expiry.
#[test]
fn http_01_issues_a_certificate_and_a_new_one_when_the_domains_change() {
    let dir = TempDir::new("tern-acme-http");
    let tls_port = free_udp_port();
    let http_port = free_udp_port();
    let pebble = Pebble::started(&PebbleSetup {
        tls_port,
        http_port,
        validity: 30 * 86_400,
    });
    let extra = format!("challenge = \"http-01\"\nhttp01_listen = \"127.0.0.1:{http_port}\"");
    let acme = AcmeTern::new(&dir, &pebble, tls_port, &extra);
    let mut tern = acme.start();
    let roots = pebble.issuing_roots();
    assert_issued(&acme, &mut tern, &roots);
    assert_eq!(acme.renewals("error"), 0.0);
    // Only pending tokens are answered.
    let (status, _) = support::admin_get(
        format!("127.0.0.1:{http_port}").parse().unwrap(),
        "/.well-known/acme-challenge/no-such-token",
    );
    assert_eq!(status, 404);
    let first = acme.certificate_on_disk();
    tern.stop();
    drop(tern);
    const ADDED: &str = "relay.example.com";
    let more_domains = acme.config.replace(
        &format!("domains = [\"{DOMAIN}\"]"),
        &format!("domains = [\"{DOMAIN}\", \"{ADDED}\"]"),
    );
    let mut tern = TernServer::start_with_config(&more_domains, &[]);
    let deadline = Instant::now() + ISSUANCE_TIMEOUT;
    while served_certificate_for(acme.tls, ADDED, &roots).is_err() {
        tern.assert_running();
        assert!(
            Instant::now() < deadline,
            "{ADDED} not served\n{}",
            tern.logs()
        );
        thread::sleep(Duration::from_millis(200));
    }
    assert_ne!(acme.certificate_on_disk(), first);
    assert_eq!(
        served_certificate(acme.tls, &roots),
        Ok(acme.certificate_on_disk())
    );
}

/// With `renew_before` longer than the certificate's whole lifetime, every certificate
/// is due as soon as it arrives: tern renews (no sooner than `retry_min` apart), serves
/// each new one, and a TURN connection made before a renewal keeps working.
#[test]
fn renewal_replaces_the_certificate_and_keeps_connections() {
    let dir = TempDir::new("tern-acme-renew");
    let tls_port = free_udp_port();
    let pebble = Pebble::started(&PebbleSetup {
        tls_port,
        http_port: free_udp_port(),
        validity: 30 * 86_400,
    });
    let acme = AcmeTern::new(
        &dir,
        &pebble,
        tls_port,
        "renew_before = \"31d\"\nretry_min = 2",
    );
    let mut tern = acme.start();
    let roots = pebble.issuing_roots();
    let first = wait_for_certificate(&mut tern, acme.tls, &roots, None);
    let mut before = turn_over_tls(acme.tls, roots.clone());
    let reply = before.allocate(vec![]).expect("Allocate answered");
    assert!(reply.is_success(), "Allocate: {:?}", reply.code);
    let second = wait_for_certificate(&mut tern, acme.tls, &roots, Some(&first));
    assert_ne!(
        serial(&first),
        serial(&second),
        "a renewal has a new serial"
    );
    // The connection from before the renewal still carries requests.
    binding_works(&mut before);
    let reply = before.refresh(Some(600)).expect("Refresh answered");
    assert!(reply.is_success(), "Refresh: {:?}", reply.code);
    assert!(acme.renewals("ok") >= 2.0);
    assert_eq!(acme.renewals("error"), 0.0);
}

/// The CA goes away: tern keeps serving the certificate it has, logs why it has no new
/// one and counts the failures; restarted with the CA still gone, it serves the
/// certificate from its state directory; when the CA is back (having forgotten the
/// account), tern registers again and gets a new certificate.
#[test]
fn without_the_ca_the_old_certificate_stays_in_use_across_restarts() {
    let dir = TempDir::new("tern-acme-down");
    let tls_port = free_udp_port();
    let mut pebble = Pebble::started(&PebbleSetup {
        tls_port,
        http_port: free_udp_port(),
        validity: 30 * 86_400,
    });
    let acme = AcmeTern::new(
        &dir,
        &pebble,
        tls_port,
        "renew_before = \"31d\"\nretry_min = 1",
    );
    let mut tern = acme.start();
    let roots = pebble.issuing_roots();
    wait_for_certificate(&mut tern, acme.tls, &roots, None);
    pebble.stop();
    wait_until(
        &mut tern,
        Duration::from_secs(20),
        "no failed order counted",
        || acme.renewals("error") >= 1.0,
    );
    let logs = tern.logs();
    assert!(
        logs.contains("ACME: no new certificate, the current one stays in use")
            && logs.contains("Connect"),
        "the reason is logged: {logs}"
    );
    let kept = acme.certificate_on_disk();
    assert_eq!(served_certificate(acme.tls, &roots), Ok(kept.clone()));
    binding_works(&mut turn_over_tls(acme.tls, roots.clone()));
    tern.stop();
    drop(tern);
    let mut restarted = acme.start();
    assert_eq!(served_certificate(acme.tls, &roots), Ok(kept.clone()));
    binding_works(&mut turn_over_tls(acme.tls, roots.clone()));
    wait_until(
        &mut restarted,
        Duration::from_secs(20),
        "no failed order counted after the restart",
        || acme.renewals("error") >= 1.0,
    );
    assert_eq!(served_certificate(acme.tls, &roots), Ok(kept));
    assert!(
        !restarted.logs().contains("placeholder"),
        "{}",
        restarted.logs()
    );
    // The CA comes back knowing nothing of the account (Pebble keeps no state): tern
    // registers again and gets a certificate from it.
    pebble.start();
    let new_roots = pebble.issuing_roots();
    wait_for_certificate(&mut restarted, acme.tls, &new_roots, None);
    assert!(
        restarted
            .logs()
            .contains("the CA no longer knows the saved account"),
        "{}",
        restarted.logs()
    );
}

/// The serial number of a DER certificate (tbsCertificate's first INTEGER after the
/// version), read with the few DER rules it needs.
fn serial(der: &[u8]) -> Vec<u8> {
    fn element(input: &[u8]) -> (u8, &[u8], &[u8]) {
        let tag = input[0];
        let (len, rest) = match input[1] {
            n if n < 0x80 => (usize::from(n), &input[2..]),
            n => {
                let count = usize::from(n & 0x7f);
                let len = input[2..2 + count]
                    .iter()
                    .fold(0, |acc, &b| (acc << 8) | usize::from(b));
                (len, &input[2 + count..])
            }
        };
        (tag, &rest[..len], &rest[len..])
    }
    let (_, certificate, _) = element(der);
    let (_, tbs, _) = element(certificate);
    let (tag, _, after_version) = element(tbs);
    let fields = if tag == 0xa0 { after_version } else { tbs };
    let (tag, serial, _) = element(fields);
    assert_eq!(tag, 0x02, "serialNumber is an INTEGER");
    serial.to_vec()
}
