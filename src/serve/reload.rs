//! SIGHUP: re-reading the config and swapping in what can change while calls go on.
//!
//! Users, secrets, peer policy, quotas, lifetimes, per-allocation caps and the log
//! level are rebuilt and handed to every worker; allocations in progress keep their relay sockets,
//! permissions and channels. Listen addresses, relay addresses and ports, workers and
//! the nonce key need a restart: a change there is reported, not applied. A config
//! that does not load is refused with a logged error and the old rules stay.

use std::collections::HashMap;
use std::net::IpAddr;
use tokio::sync::watch;

use super::engines;
use crate::config::Settings;
use crate::core::{EngineRules, Shared};

/// Loads the settings again: the config file with the command-line flags on top.
pub type Loader = Box<dyn Fn() -> Result<Settings, String> + Send + Sync>;

/// Changes the log filter (`log.level`) of the running process.
pub type LogLevel = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What a reload needs to know about the running server.
pub struct Reloader {
    pub loader: Loader,
    pub log_level: LogLevel,
    pub rules: watch::Sender<EngineRules>,
    pub running: Settings,
    pub relay_ips: Vec<IpAddr>,
    pub advertised_ips: HashMap<IpAddr, IpAddr>,
    /// The secret made up at start when the config has no credentials at all; kept
    /// so that credentials handed out stay valid.
    pub generated_secret: Option<String>,
    /// The secret the self-test page signs its credentials with; always accepted.
    pub selftest_secret: Option<String>,
}

impl Reloader {
    /// Reloads, logs the outcome and counts it in the metrics.
    pub fn reload(&mut self, shared: &Shared) {
        match self.try_reload() {
            Ok(()) => {
                shared.metrics.reload("ok");
                tracing::info!("configuration reloaded");
            }
            Err(e) => {
                shared.metrics.reload("error");
                tracing::error!("configuration not reloaded, the running one stays: {e}");
            }
        }
    }

    fn try_reload(&mut self) -> Result<(), String> {
        let mut settings = (self.loader)()?;
        if let Some(secret) = &self.generated_secret
            && settings.auth.users.is_empty()
            && settings.auth.secrets.is_empty()
        {
            settings.auth.secrets.push(secret.clone());
        }
        settings.auth.secrets.extend(self.selftest_secret.clone());
        for key in needs_restart(&self.running, &settings) {
            tracing::warn!("{key} changed: that takes a restart; the running value stays");
        }
        let rules = engines::rules(&settings, &self.relay_ips, &self.advertised_ips)
            .map_err(|e| format!("{e:#}"))?;
        if settings.log.level != self.running.log.level {
            (self.log_level)(&settings.log.level).map_err(|e| format!("log.level: {e}"))?;
        }
        self.rules.send_replace(rules);
        self.running = settings;
        Ok(())
    }
}

/// Keys whose change a reload cannot apply.
fn needs_restart(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let checks = [
        ("server.listen", old.server.listen != new.server.listen),
        (
            "server.tls_listen",
            old.server.tls_listen != new.server.tls_listen,
        ),
        (
            "server.udp/tcp",
            (old.server.udp, old.server.tcp) != (new.server.udp, new.server.tcp),
        ),
        ("server.workers", old.server.workers != new.server.workers),
        ("relay.ips", old.relay.ips != new.relay.ips),
        (
            "relay.external_ips",
            old.relay.external_ips != new.relay.external_ips,
        ),
        ("relay.ports", old.relay.ports != new.relay.ports),
        ("auth.nonce_key", old.auth.nonce_key != new.auth.nonce_key),
        ("admin.listen", old.admin.listen != new.admin.listen),
        ("selftest", old.selftest != new.selftest),
        ("cluster", old.cluster != new.cluster),
    ];
    checks
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
}
