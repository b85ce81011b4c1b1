//! The renewal task: looks at the certificate served, orders a new one when it is due,
//! and retries failures with a doubling wait, for as long as the server serves.
//!
//! A failure never takes the old certificate away: the files are replaced only once a
//! new chain and key are in hand, and the TLS source refuses a broken pair. Each failure
//! is logged with its reason (never a key) and counted.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::sync::watch;
use tokio::time::Instant;

use super::AcmeError;
use super::challenge::Challenges;
use super::client::AcmeClient;
use super::store::StateDir;
use crate::config::AcmeSettings;
use crate::metrics::Metrics;
use crate::net::lifecycle::Lifecycle;
use crate::net::tls::{TlsAcceptorSource, self_issued, validity_period};

/// The longest wait between two failed orders.
const MAX_RETRY: Duration = Duration::from_secs(6 * 3_600);

/// The longest sleep before the certificate is looked at again, so a clock step or a
/// certificate replaced by hand is noticed within the hour.
const MAX_SLEEP: Duration = Duration::from_secs(3_600);

/// What the renewal task works with.
pub struct Renewal {
    pub settings: AcmeSettings,
    pub state: StateDir,
    pub challenges: Challenges,
    pub tls: TlsAcceptorSource,
    pub metrics: Arc<Metrics>,
}

impl Renewal {
    /// Runs until the server stops serving (or `lifecycle`'s sender is gone).
    pub async fn run(self, mut lifecycle: watch::Receiver<Lifecycle>) {
        let stopped = async move {
            while *lifecycle.borrow_and_update() == Lifecycle::Serving {
                if lifecycle.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            () = self.renew_forever() => {}
            () = stopped => {}
        }
    }

    async fn renew_forever(&self) {
        let mut client = None;
        let mut failures: u32 = 0;
        // No order before this: the wait after a failure, or the shortest time
        // between two orders after a success.
        let mut not_before = Instant::now();
        loop {
            let due = not_before.max(self.due());
            let now = Instant::now();
            if due > now {
                tokio::time::sleep((due - now).min(MAX_SLEEP)).await;
                continue;
            }
            let result = self.renew(&mut client).await;
            let retry_min = self.settings.retry_min.as_duration();
            match result {
                Ok(()) => {
                    failures = 0;
                    self.metrics.acme_renewal("ok");
                    not_before = Instant::now() + retry_min;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    self.metrics.acme_renewal("error");
                    // A fresh connection next time: the CA may have restarted or lost
                    // the account.
                    client = None;
                    if matches!(e, AcmeError::AccountGone)
                        && let Err(forget) = self.state.forget_account()
                    {
                        tracing::error!("ACME: {forget}");
                    }
                    let wait = retry_wait(retry_min, failures);
                    tracing::error!(
                        retry_in_secs = wait.as_secs(),
                        "ACME: no new certificate, the current one stays in use: {e}"
                    );
                    not_before = Instant::now() + wait;
                }
            }
        }
    }

    /// One order: account (once), order, files, reload.
    async fn renew(&self, client: &mut Option<AcmeClient>) -> Result<(), AcmeError> {
        let account = match client.take() {
            Some(account) => account,
            None => AcmeClient::connect(&self.settings, &self.state).await?,
        };
        let account = client.insert(account);
        tracing::info!(domains = ?self.settings.domains, "ACME: ordering a certificate");
        let issued = account.issue(&self.settings, &self.challenges).await?;
        self.state
            .save_certificate(&issued.chain_pem, &issued.key_pem, &self.settings.domains)?;
        self.tls.reload_from(self.state.cert_paths())?;
        let expires = served_validity(&self.state).map(|(_, not_after)| not_after);
        tracing::info!(
            domains = ?self.settings.domains,
            expires_unix = expires,
            "ACME: new certificate in use for new connections"
        );
        Ok(())
    }

    /// When the certificate on disk should be replaced: at once for a self-signed one
    /// (the placeholder), one that cannot be read, or one not issued for exactly
    /// `tls.acme.domains` (the list changed); else `renew_before` (default a third of
    /// its lifetime) before it expires. Also records its expiry.
    fn due(&self) -> Instant {
        let Some((not_before, not_after)) = served_validity(&self.state) else {
            return Instant::now();
        };
        self.metrics.acme_certificate_expiry(not_after);
        if self.state.issued_for().as_deref() != Some(&self.settings.domains[..]) {
            return Instant::now();
        }
        let renew_before = match self.settings.renew_before {
            Some(span) => i64::try_from(span.0).unwrap_or(i64::MAX),
            None => (not_after - not_before) / 3,
        };
        let due_unix = not_after.saturating_sub(renew_before);
        let now_unix = i64::try_from(crate::clock::unix_now()).unwrap_or(i64::MAX);
        let ahead = u64::try_from(due_unix.saturating_sub(now_unix)).unwrap_or(0);
        Instant::now() + Duration::from_secs(ahead)
    }
}

/// The validity of the end-entity certificate in the state directory, unless it is
/// missing, unreadable or self-signed (then it is due for replacement at once).
fn served_validity(state: &StateDir) -> Option<(i64, i64)> {
    let pem = std::fs::read(state.cert_paths().cert).ok()?;
    let end_entity = CertificateDer::pem_slice_iter(&pem).next()?.ok()?;
    match self_issued(&end_entity)? {
        true => None,
        false => validity_period(&end_entity),
    }
}

/// The wait after the `failures`-th failure in a row: `retry_min`, doubling, at most
/// six hours (or `retry_min` if that is longer).
fn retry_wait(retry_min: Duration, failures: u32) -> Duration {
    let doubled = retry_min.saturating_mul(1 << failures.saturating_sub(1).min(20));
    doubled.min(MAX_RETRY.max(retry_min))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_up_to_six_hours() {
        let minute = Duration::from_secs(60);
        assert_eq!(retry_wait(minute, 1), minute);
        assert_eq!(retry_wait(minute, 2), 2 * minute);
        assert_eq!(retry_wait(minute, 5), 16 * minute);
        assert_eq!(retry_wait(minute, 9), 256 * minute);
        assert_eq!(retry_wait(minute, 10), MAX_RETRY);
        assert_eq!(retry_wait(minute, u32::MAX), MAX_RETRY);
        let day = Duration::from_secs(86_400);
        assert_eq!(retry_wait(day, 3), day);
    }
}
