//! The reloadable acceptor source: the configuration new handshakes use, swapped whole
//! when the certificate files are read again (on SIGHUP, or when polling sees them
//! change).

use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use openssl::ssl::SslContext;
use rustls::ServerConfig;
use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::version::{TLS12, TLS13};
use tokio_rustls::TlsAcceptor;

use super::certificate::load_certified_key;
use super::resolver::{ALPN_ACME_TLS, AlpnChallenges, ChallengeResolver};
use super::{CertPaths, TlsError};

/// ALPN protocol name for TURN (RFC 7443).
const ALPN_STUN_TURN: &[u8] = b"stun.turn";

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

/// One certificate, three uses: TURN over TLS and the self-test pages (HTTPS), which
/// differ only in ALPN, and TURN over DTLS when DTLS listeners are on.
pub(super) struct Configs {
    pub(super) turn: Arc<ServerConfig>,
    pub(super) https: Arc<ServerConfig>,
    pub(super) dtls: Option<SslContext>,
}

/// TLS-ALPN-01 challenges that may stand in for the certificate, when ACME is on.
type Challenges = Option<Arc<dyn AlpnChallenges>>;

/// What the certificate serves besides TURN over TLS and HTTPS.
struct Uses {
    challenges: Challenges,
    /// Whether the DTLS listeners' context is built too.
    dtls: bool,
}

impl Configs {
    /// Reads both files once and builds every configuration from what was read: all of
    /// them or none.
    fn build(paths: &CertPaths, uses: &Uses) -> Result<Self, TlsError> {
        let provider = Arc::new(ring::default_provider());
        let (certified, key) = load_certified_key(paths, &provider)?;
        let dtls = match uses.dtls {
            true => Some(dtls_context(paths, &certified, &key)?),
            false => None,
        };
        let turn = build_config(provider, certified, &uses.challenges)?;
        let mut https = turn.clone();
        https.alpn_protocols = vec![b"http/1.1".to_vec()];
        if uses.challenges.is_some() {
            https.alpn_protocols.push(ALPN_ACME_TLS.to_vec());
        }
        Ok(Self {
            turn: Arc::new(turn),
            https: Arc::new(https),
            dtls,
        })
    }
}

pub(super) struct Inner {
    /// The configuration new handshakes use. Replaced whole on reload, so a fresh session
    /// cache comes with each certificate: sessions established under the old
    /// certificate are not resumed under the new one.
    pub(super) configs: ArcSwap<Configs>,
    /// Kept for every rebuild of the configuration.
    uses: Uses,
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
    /// Open to the `tls` module so its tests can check both configurations' ALPN.
    pub(super) inner: Arc<Inner>,
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
        Self::load_for(paths, None, false)
    }

    /// The same, with `challenges` also offering `acme-tls/1` and answering ACME
    /// validators with the TLS-ALPN-01 certificates it holds (RFC 8737), and with `dtls`
    /// also building the DTLS listeners' context (then a pair OpenSSL cannot use is an
    /// error too).
    pub fn load_for(
        paths: CertPaths,
        challenges: Option<Arc<dyn AlpnChallenges>>,
        dtls: bool,
    ) -> Result<Self, TlsError> {
        let uses = Uses { challenges, dtls };
        let stamps = Stamps::of(&paths);
        let configs = Configs::build(&paths, &uses)?;
        Ok(Self {
            inner: Arc::new(Inner {
                configs: ArcSwap::from_pointee(configs),
                uses,
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

    /// The DTLS listeners' context with the current certificate, when loaded for them.
    pub fn dtls_context(&self) -> Option<SslContext> {
        self.inner.configs.load().dtls.clone()
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
        let configs = Configs::build(&paths, &self.inner.uses)?;
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
        let configs = Configs::build(&loaded.paths, &self.inner.uses)?;
        self.inner.configs.store(Arc::new(configs));
        Ok(())
    }
}

/// The server configuration for `certified`: TLS 1.2 and 1.3, no client
/// authentication, ALPN `stun.turn` (and `acme-tls/1` with challenges).
fn build_config(
    provider: Arc<CryptoProvider>,
    certified: CertifiedKey,
    challenges: &Challenges,
) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&TLS13, &TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth();
    let mut config = match challenges {
        None => builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified))),
        Some(challenges) => builder.with_cert_resolver(Arc::new(ChallengeResolver {
            served: Arc::new(certified),
            challenges: challenges.clone(),
        })),
    };
    config.alpn_protocols = vec![ALPN_STUN_TURN.to_vec()];
    if challenges.is_some() {
        config.alpn_protocols.push(ALPN_ACME_TLS.to_vec());
    }
    Ok(config)
}

/// The DTLS listeners' context for the same chain and key.
fn dtls_context(
    paths: &CertPaths,
    certified: &CertifiedKey,
    key: &PrivateKeyDer<'_>,
) -> Result<SslContext, TlsError> {
    let chain: Vec<&[u8]> = certified.cert.iter().map(|c| c.as_ref()).collect();
    crate::net::dtls::build_context(&chain, key.secret_der()).map_err(|e| TlsError::Dtls {
        cert: paths.cert.clone(),
        reason: e.to_string(),
    })
}
