//! Automatic TLS certificates from an ACME CA (RFC 8555), Let's Encrypt by default.
//!
//! With `tls.acme` the TLS listeners serve `cert.pem`/`key.pem` from the state
//! directory. At start, if there are none yet, a self-signed placeholder is written so
//! the listeners come up at once (TLS-ALPN-01 is answered on them, so they must);
//! then the renewal task orders the real certificate, writes it and swaps it into the
//! [`TlsAcceptorSource`] for new handshakes, and renews it before it expires. Restarts
//! reuse the account and the certificate on disk, so a server whose CA is unreachable
//! still starts and serves what it has.
//!
//! What it must never do: log or return key material (account key, certificate key,
//! key authorizations); replace a working certificate with nothing (a failed order
//! leaves the files and the served certificate alone); or grow without bound (pending
//! challenges are capped, retries back off to six hours).
//!
//! `store` owns the state directory, `certs` the keys and certificates tern makes
//! itself, `challenge` the answers pending validation, `client` one order, `http01` the
//! HTTP-01 responder and `renew` the task that decides when to order.

mod certs;
mod challenge;
mod client;
mod http01;
mod renew;
mod store;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::AcmeSettings;
use crate::metrics::Metrics;
use crate::net::lifecycle::Lifecycle;
use crate::net::tls::{AlpnChallenges, TlsAcceptorSource, TlsError};
use challenge::{Challenges, MAX_PENDING};
use store::StateDir;

/// Why an ACME step failed. Messages name files and the CA's reasons, never a key.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// A file or directory of the state directory could not be created or written.
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: io::Error },
    /// `account.json` is not what tern writes there.
    #[error(
        "{}: not an ACME account file (move it away to register a new account)",
        path.display()
    )]
    BadAccountFile { path: PathBuf },
    /// The CA could not be reached, or refused a request.
    #[error("{step}: {reason}")]
    Ca { step: &'static str, reason: String },
    /// The CA no longer knows the saved account (deactivated, or a test CA restarted).
    #[error("the CA no longer knows the saved account; a new one is registered next time")]
    AccountGone,
    /// The CA does not offer the configured challenge type for a name.
    #[error("{domain}: the CA offers no {kind} challenge (try the other tls.acme.challenge)")]
    NoChallenge { domain: String, kind: &'static str },
    /// Validation failed; the CA's reasons.
    #[error("validation failed: {0}")]
    Invalid(String),
    #[error("more than {MAX_PENDING} challenges pending at once")]
    TooManyChallenges,
    /// rcgen could not make a key, CSR or certificate.
    #[error("cannot make a key or certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// The new files did not load (the old certificate stays in use).
    #[error("the new certificate was not taken into use: {0}")]
    Load(#[from] TlsError),
}

/// ACME set up for a start: the state directory holds a certificate (the placeholder
/// at worst), and the HTTP-01 listener, if any, is bound.
pub struct Acme {
    settings: AcmeSettings,
    state: StateDir,
    challenges: Challenges,
    http01: Option<TcpListener>,
}

impl Acme {
    /// Creates the state directory, writes the placeholder when there is no
    /// certificate yet, and binds `http01_listen`. Fails the start if any of that
    /// cannot be done.
    pub async fn prepare(settings: &AcmeSettings) -> anyhow::Result<Self> {
        use anyhow::Context;
        let state = StateDir::open(settings)
            .context("cannot prepare the ACME state directory (tls.acme.state_dir)")?;
        if !state.has_certificate() {
            let (cert_pem, key_pem) = certs::placeholder(&settings.domains)?;
            state.save_certificate(&cert_pem, &key_pem, &[])?;
            tracing::warn!(
                dir = %settings.state_dir.display(),
                "ACME: no certificate yet; serving a self-signed placeholder until the CA issues one"
            );
        }
        let http01 = match settings.http01_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| {
                format!("cannot bind the ACME HTTP-01 listener {addr} (tls.acme.http01_listen)")
            })?),
            None => None,
        };
        Ok(Self {
            settings: settings.clone(),
            state,
            challenges: Challenges::default(),
            http01,
        })
    }

    /// What the TLS configuration asks for TLS-ALPN-01 handshakes.
    pub fn alpn_challenges(&self) -> Arc<dyn AlpnChallenges> {
        Arc::new(self.challenges.clone())
    }

    /// Starts the HTTP-01 responder (when bound) and the renewal task on the current
    /// runtime. The renewal task ends when the server stops serving, the responder when
    /// it stops.
    pub fn spawn(
        self,
        tls: TlsAcceptorSource,
        metrics: Arc<Metrics>,
        lifecycle: watch::Receiver<Lifecycle>,
    ) -> io::Result<()> {
        if let Some(listener) = self.http01 {
            tracing::info!(addr = %listener.local_addr()?, "ACME HTTP-01 responder listening");
            http01::serve(
                listener,
                self.challenges.clone(),
                metrics.clone(),
                lifecycle.clone(),
            )?;
        }
        let renewal = renew::Renewal {
            settings: self.settings,
            state: self.state,
            challenges: self.challenges,
            tls,
            metrics,
        };
        tokio::spawn(renewal.run(lifecycle));
        Ok(())
    }
}
