//! SIGHUP: re-reading the config and swapping in what can change while calls go on.
//!
//! `config::reload::KEYS` says which keys apply and which take a restart. Applied:
//! users, secrets, realm, peer policy, quotas, lifetimes, per-allocation caps and the
//! nonce lifetime are rebuilt and handed to every worker; the 401 limiter's rates and
//! the connection limits change in place; timeouts, frame size and write queue apply to
//! new TCP/TLS connections; the certificate is read again, from new paths if they
//! changed. Allocations and connections in progress keep what they started with. A
//! restart-only key that changed keeps its running value and is named in a warning,
//! as is turning TLS on or off (its listeners are bound at start). A config that does
//! not load is refused with a logged error and the old rules stay.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::watch;

use super::engines;
use crate::auth::{ExternalKeys, UnauthorizedLimiter};
use crate::config::{Redacted, Settings, reload::keep_restart_only};
use crate::core::EngineRules;
use crate::metrics::Metrics;
use crate::net::stream::{ConnectionLimits, StreamConfig};
use crate::net::tls::TlsAcceptorSource;

/// Loads the settings again: the config file with the command-line flags on top.
pub type Loader = Box<dyn Fn() -> Result<Settings, String> + Send + Sync>;

/// Changes the log filter (`log.level`) of the running process.
pub type LogLevel = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What a reload needs to know about the running server, and the handles it changes.
pub struct Reloader {
    pub loader: Loader,
    pub log_level: LogLevel,
    pub rules: watch::Sender<EngineRules>,
    /// Shared by every engine: new rates reach them all.
    pub limiter: UnauthorizedLimiter,
    /// Counts the open TCP/TLS connections; new limits refuse new ones only.
    pub connections: Arc<ConnectionLimits>,
    /// What new TCP/TLS connections follow.
    pub stream_config: watch::Sender<StreamConfig>,
    /// The certificate, when TLS is on.
    pub tls: Option<TlsAcceptorSource>,
    /// Counts reloads and their outcome.
    pub metrics: Arc<Metrics>,
    /// The settings in force: restart-only keys as at start, the others as last
    /// reloaded (without the secrets below, which are added for the engines only).
    pub running: Settings,
    pub relay_ips: Vec<IpAddr>,
    pub advertised_ips: HashMap<IpAddr, IpAddr>,
    /// The secret made up at start when the config has no credentials at all; kept
    /// so that credentials handed out stay valid.
    pub generated_secret: Option<String>,
    /// The secret the self-test page signs its credentials with; always accepted.
    pub selftest_secret: Option<String>,
    /// The answers of `auth.webhook`, kept across reloads.
    pub external_keys: Option<Arc<ExternalKeys>>,
}

impl Reloader {
    /// Reloads the config and the certificate, logs the outcome and counts it in the
    /// metrics. The certificate is read again even when the config is refused: a
    /// renewal needs nothing but a SIGHUP.
    pub fn reload(&mut self) {
        match self.try_reload() {
            Ok(applied) if applied.is_empty() => {
                self.metrics.reload("ok");
                tracing::info!("configuration reloaded: no applicable key changed");
            }
            Ok(applied) => {
                self.metrics.reload("ok");
                let applied = applied.join(", ");
                tracing::info!("configuration reloaded; applied: {applied}");
            }
            Err(e) => {
                self.metrics.reload("error");
                tracing::error!("configuration not reloaded, the running one stays: {e}");
            }
        }
        if let (Some(source), Some(paths)) = (&self.tls, super::cert_paths(&self.running.tls)) {
            super::report_reload("SIGHUP", source.reload_from(paths));
        }
    }

    /// Applies the reloaded settings and returns the keys that changed.
    fn try_reload(&mut self) -> Result<Vec<&'static str>, String> {
        let mut settings = (self.loader)()?;
        for key in keep_restart_only(&mut settings, &self.running) {
            tracing::warn!("{key} changed: that takes a restart; the running value stays");
        }
        if settings.tls.is_enabled() != self.running.tls.is_enabled() {
            for key in ["tls.cert", "tls.key"] {
                tracing::warn!(
                    "{key} changed: turning TLS on or off takes a restart; the running value stays"
                );
            }
            settings.tls.cert.clone_from(&self.running.tls.cert);
            settings.tls.key.clone_from(&self.running.tls.key);
        }
        let rules = engines::rules(
            &self.with_own_secrets(&settings),
            &self.relay_ips,
            &self.advertised_ips,
            self.external_keys.as_ref(),
        )
        .map_err(|e| format!("{e:#}"))?;
        if settings.log.level != self.running.log.level {
            (self.log_level)(&settings.log.level).map_err(|e| format!("log.level: {e}"))?;
        }
        self.rules.send_replace(rules);
        let (auth, limits) = (&settings.auth, &settings.limits);
        self.limiter
            .set_rates(auth.unauthorized_per_second, auth.unauthorized_burst);
        self.connections
            .set_limits(limits.max_connections, limits.max_connections_per_ip);
        self.stream_config.send_replace(super::stream_config(
            &settings,
            &self.connections,
            &self.metrics,
        ));
        let applied = crate::config::reload::changed(&self.running, &settings);
        self.running = settings;
        Ok(applied)
    }

    /// `settings` with the secrets the server adds itself: the one generated at start
    /// (while the config still has no credentials) and the self-test page's.
    fn with_own_secrets(&self, settings: &Settings) -> Settings {
        let mut settings = settings.clone();
        if let Some(secret) = &self.generated_secret
            && settings.auth.users.is_empty()
            && settings.auth.secrets.is_empty()
        {
            settings.auth.secrets.push(secret.clone().into());
        }
        settings
            .auth
            .secrets
            .extend(self.selftest_secret.clone().map(Redacted::from));
        settings
    }
}
