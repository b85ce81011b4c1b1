//! `[auth.webhook]`: the operator's own HTTP(S) service, asked for the long-term key of
//! a username tern does not know itself (neither a static user nor a REST credential).

use serde::{Deserialize, Deserializer, de};
use std::time::Duration;

use super::{Redacted, Seconds};
use crate::auth::CachePolicy;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthWebhookSettings {
    /// Where lookups are POSTed (http:// or https://). Never logged.
    pub url: Redacted<String>,
    /// Sent as `Authorization: Bearer <token>`. Never logged.
    pub token: Option<Redacted<String>>,
    /// Deadline for one lookup, connection included.
    pub timeout: Timeout,
    /// How long a key the service gave is used before it is asked again.
    pub cache_ttl: Seconds,
    /// How long a refusal (403 or 404) is remembered.
    pub refusal_ttl: Seconds,
    /// How long a failed lookup (no answer in time, no connection, another status, an
    /// answer that is not one) stands before the service is asked again.
    pub error_ttl: Seconds,
    /// While the service fails, a key it gave is still used this long past `cache_ttl`;
    /// 0 (the default) fails closed: a failed lookup refuses.
    pub stale_ttl: u64,
    /// Usernames whose answers are kept.
    pub cache_size: usize,
    /// Lookups in flight at once.
    pub concurrency: usize,
    /// Lookups waiting for a free slot; past it a lookup fails at once.
    pub queue: usize,
    /// Requests each worker holds while their usernames are looked up; past it a
    /// request is dropped (the client sends it again).
    pub waiting_requests: usize,
}

impl Default for AuthWebhookSettings {
    fn default() -> Self {
        Self {
            url: Redacted::default(),
            token: None,
            timeout: Timeout(Duration::from_secs(2)),
            cache_ttl: Seconds(300),
            refusal_ttl: Seconds(60),
            error_ttl: Seconds(5),
            stale_ttl: 0,
            cache_size: 100_000,
            concurrency: 16,
            queue: 1024,
            waiting_requests: 1024,
        }
    }
}

impl AuthWebhookSettings {
    /// How long answers are kept.
    pub fn cache_policy(&self) -> CachePolicy {
        CachePolicy {
            key_ttl: self.cache_ttl.as_duration(),
            refusal_ttl: self.refusal_ttl.as_duration(),
            error_ttl: self.error_ttl.as_duration(),
            stale_ttl: Duration::from_secs(self.stale_ttl),
        }
    }

    /// The first key whose value cannot be used, with why.
    pub(super) fn invalid(&self) -> Option<(&'static str, &'static str)> {
        let url = self.url.expose();
        let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
        if !scheme_ok || url.parse::<axum::http::Uri>().is_err() {
            // The URL may hold credentials: only its shape is described.
            return Some(("auth.webhook.url", "must be an http:// or https:// URL"));
        }
        let bounds = [
            ("auth.webhook.cache_size", self.cache_size, 10_000_000),
            ("auth.webhook.concurrency", self.concurrency, 1024),
            ("auth.webhook.queue", self.queue, 1_000_000),
            (
                "auth.webhook.waiting_requests",
                self.waiting_requests,
                1_000_000,
            ),
        ];
        for (key, value, max) in bounds {
            if value == 0 || value > max {
                return Some((key, "out of range (at least 1, and bounded)"));
            }
        }
        (self.stale_ttl > 30 * 86_400)
            .then_some(("auth.webhook.stale_ttl", "at most 30 days (2592000 s)"))
    }
}

/// A lookup's deadline: seconds, fractions allowed (`0.5`), 0.05 to 30.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeout(pub Duration);

impl<'de> Deserialize<'de> for Timeout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let secs = f64::deserialize(d)?;
        if !(0.05..=30.0).contains(&secs) {
            return Err(de::Error::custom(format!(
                "{secs} seconds is out of range (0.05 to 30)"
            )));
        }
        Ok(Self(Duration::from_secs_f64(secs)))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Settings;

    fn parse(text: &str) -> Result<Settings, String> {
        Settings::from_toml(text, "t").map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_fail_closed_and_values_are_checked_with_their_line() {
        let s = parse("[auth.webhook]\nurl = \"https://auth.example.org/turn\"\n").unwrap();
        let webhook = s.auth.webhook.expect("webhook");
        assert_eq!(webhook.stale_ttl, 0);
        assert_eq!(webhook.timeout.0, std::time::Duration::from_secs(2));
        let half = parse("[auth.webhook]\nurl = \"http://127.0.0.1:9/\"\ntimeout = 0.5\n").unwrap();
        assert_eq!(
            half.auth.webhook.unwrap().timeout.0,
            std::time::Duration::from_millis(500)
        );
        let err =
            parse("[auth.webhook]\nurl = \"http://127.0.0.1:9/\"\ntimeout = 60\n").unwrap_err();
        assert!(err.contains("line 3"), "{err}");
        let err = parse("[auth.webhook]\nurl = \"ftp://user:s3cret@host/\"\n").unwrap_err();
        assert!(
            err.contains("auth.webhook.url") && err.contains("line 2"),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "{err}");
        let err = parse("[auth.webhook]\nurl = \"http://h/\"\nconcurrency = 0\n").unwrap_err();
        assert!(err.contains("auth.webhook.concurrency"), "{err}");
    }
}
