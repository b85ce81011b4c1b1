//! The `[tls.acme]` section: certificates obtained and renewed automatically from an
//! ACME CA (RFC 8555), and the values only it uses.
//!
//! Parsing checks each value on its own (so the TOML parser names the line); the checks
//! across keys (`http01_listen` with `http-01`, `acme` against `cert`/`key`) are in
//! `validate`.

use serde::{Deserialize, Deserializer, de};
use std::net::SocketAddr;
use std::path::PathBuf;

use super::Seconds;

/// Let's Encrypt's production directory, the default CA.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Where the account key and the certificate live unless `state_dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/tern/acme";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeSettings {
    /// DNS names the certificate is for; the first is its subject. Each must resolve to
    /// this host, where the CA connects to validate it.
    pub domains: Vec<String>,
    /// Contact address the CA may write to about the account (expiry notices).
    pub email: Option<String>,
    /// The CA's directory URL.
    pub directory: String,
    /// A CA certificate (PEM) to trust for the directory's HTTPS instead of the system's
    /// roots: for a private CA or a test server.
    pub directory_ca: Option<PathBuf>,
    /// Holds the account key and `cert.pem`/`key.pem`; created 0700, files 0600.
    pub state_dir: PathBuf,
    /// How the CA checks that the domains point here.
    pub challenge: AcmeChallenge,
    /// Where the HTTP-01 answers are served (the CA asks on port 80); `http-01` only.
    pub http01_listen: Option<SocketAddr>,
    /// Renew when this much of the certificate's validity is left; unset, when a third
    /// of its lifetime is left.
    pub renew_before: Option<Span>,
    /// The first wait after a failed order, doubled on each further failure (up to six
    /// hours); also the shortest time between two orders.
    pub retry_min: Seconds,
}

impl Default for AcmeSettings {
    fn default() -> Self {
        Self {
            domains: Vec::new(),
            email: None,
            directory: LETS_ENCRYPT.into(),
            directory_ca: None,
            state_dir: DEFAULT_STATE_DIR.into(),
            challenge: AcmeChallenge::default(),
            http01_listen: None,
            renew_before: None,
            retry_min: Seconds(60),
        }
    }
}

impl AcmeSettings {
    /// The certificate chain and key the TLS listeners serve: `cert.pem` and `key.pem`
    /// in the state directory.
    pub fn cert_files(&self) -> (PathBuf, PathBuf) {
        (
            self.state_dir.join("cert.pem"),
            self.state_dir.join("key.pem"),
        )
    }
}

/// The ACME challenge type answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum AcmeChallenge {
    /// RFC 8737: answered by the TLS listeners themselves (the CA connects to port 443).
    #[default]
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// RFC 8555 §8.3: answered on `http01_listen` (the CA connects to port 80).
    #[serde(rename = "http-01")]
    Http01,
}

impl AcmeChallenge {
    /// Its name, as in the config and the RFCs.
    pub fn name(self) -> &'static str {
        match self {
            Self::TlsAlpn01 => "tls-alpn-01",
            Self::Http01 => "http-01",
        }
    }
}

/// A length of time for certificate lifetimes: seconds as a number, or a string with a
/// unit, `"30d"`, `"12h"`, `"90m"`, `"45s"`. Unlike [`Seconds`] it may span years.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub u64);

impl Span {
    /// Ten years: longer than any certificate a CA issues.
    const MAX: u64 = 10 * 366 * 86_400;

    fn parse(text: &str) -> Result<u64, String> {
        let text = text.trim();
        let split = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (number, unit) = text.split_at(split);
        let unit = match unit.trim() {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            _ => {
                return Err(format!(
                    "{text:?}: expected seconds, or a number with s, m, h or d"
                ));
            }
        };
        number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(unit))
            .ok_or_else(|| format!("{text:?}: expected seconds, or a number with s, m, h or d"))
    }
}

impl std::str::FromStr for Span {
    type Err = String;

    /// The text form alone (`"30d"`, or bare seconds), unbounded but for overflow.
    fn from_str(text: &str) -> Result<Self, String> {
        Span::parse(text).map(Span)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        let seconds = match Raw::deserialize(d)? {
            Raw::Seconds(n) => n,
            Raw::Text(text) => Span::parse(&text).map_err(de::Error::custom)?,
        };
        if seconds == 0 || seconds > Self::MAX {
            return Err(de::Error::custom(format!(
                "{seconds} seconds is out of range (1 to {})",
                Self::MAX
            )));
        }
        Ok(Self(seconds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    #[test]
    fn spans_take_a_unit() {
        let span = |text: &str| {
            Settings::from_toml(
                &format!("[tls.acme]\ndomains = [\"a.example\"]\nrenew_before = {text}\n"),
                "t",
            )
            .map(|s| s.tls.acme.and_then(|a| a.renew_before))
            .map_err(|e| e.to_string())
        };
        assert_eq!(span("\"30d\""), Ok(Some(Span(30 * 86_400))));
        assert_eq!(span("\"12h\""), Ok(Some(Span(12 * 3_600))));
        assert_eq!(span("90"), Ok(Some(Span(90))));
        let err = span("\"3 weeks\"").unwrap_err();
        assert!(err.contains("line 3"), "{err}");
        assert!(span("0").is_err());
    }

    #[test]
    fn defaults_are_lets_encrypt_and_tls_alpn() {
        let s = Settings::from_toml("[tls.acme]\ndomains = [\"turn.example.com\"]\n", "t").unwrap();
        assert!(s.tls.is_enabled());
        let acme = s.tls.acme.expect("acme");
        assert_eq!(acme.directory, LETS_ENCRYPT);
        assert_eq!(acme.challenge, AcmeChallenge::TlsAlpn01);
        assert_eq!(acme.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
    }
}
