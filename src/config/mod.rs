//! Settings: the TOML file, validated completely before anything is bound.
//!
//! `settings` is the schema with its defaults, `types` the values that check themselves
//! while parsed, `validate` the checks across keys; this module reads a file through
//! them. Unknown keys and bad values are errors that name the key and its line; nothing
//! here touches the network or the clock.

pub mod acme;
pub mod auth_webhook;
pub mod bandwidth;
pub mod lint;
mod redacted;
pub mod reload;
mod settings;
pub mod types;
mod validate;

use std::path::Path;
use thiserror::Error;

pub use acme::{AcmeChallenge, AcmeSettings, Span};
pub use auth_webhook::AuthWebhookSettings;
pub use bandwidth::BandwidthSettings;
pub use redacted::Redacted;
pub use settings::{
    AdminSettings, AuthSettings, ClusterSettings, FrontSettings, Limits, LogSettings, PeerSettings,
    RelaySettings, SelftestSettings, ServerSettings, Settings, TlsSettings, UsageSettings,
    UserEntry,
};
pub use types::{
    ExternalIp, Listener, ListenerRole, LogFormat, OffloadMode, PortRange, ProxyVersion, Seconds,
    Separator, host_without_port,
};
pub use validate::InvalidKey;

/// Why a config could not be used. Display is the whole message for the operator.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

impl Settings {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with(Some(path), |_| Ok(()))
    }

    /// Reads a config file (none: the defaults), lets `adjust` change it (command-line
    /// flags) and only then validates, so a flag can complete what the file needs
    /// (`--cert` for a TLS listener) and errors still name the file's lines.
    pub fn load_with(
        path: Option<&Path>,
        adjust: impl FnOnce(&mut Settings) -> Result<(), String>,
    ) -> Result<Self, ConfigError> {
        let (text, origin) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                (text, path.display().to_string())
            }
            None => (String::new(), "command line".to_string()),
        };
        Self::from_toml_with(&text, &origin, adjust)
    }

    /// Parses and validates TOML text; `origin` names it in errors (usually the path).
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        Self::from_toml_with(text, origin, |_| Ok(()))
    }

    fn from_toml_with(
        text: &str,
        origin: &str,
        adjust: impl FnOnce(&mut Settings) -> Result<(), String>,
    ) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            message,
        };
        let mut settings: Settings = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        adjust(&mut settings).map_err(invalid)?;
        settings
            .validate()
            .map_err(|e| invalid(format!("{}{e}", validate::line_of(text, e.key))))?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        let s = Settings::from_toml("", "test").unwrap();
        assert_eq!(s.server.listen.len(), 2);
        assert_eq!(s.relay.ports.to_string(), "49152-65535");
        assert_eq!(s.relay.max_lifetime, Seconds(3600));
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = Settings::from_toml("[server]\nrealm = \"x\"\nlisten_typo = []\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_typo"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn bad_value_names_line() {
        let err = Settings::from_toml("[relay]\n\nports = \"9-3\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("empty"), "{err}");
    }
}
