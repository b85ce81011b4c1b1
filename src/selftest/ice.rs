//! The ICE servers the self-test page uses: this server's TURN URLs and REST
//! credentials minted on the spot with the self-test's own secret.

use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::auth::{RestSecret, rest_credential};
use crate::config::{ServerSettings, Settings};
use crate::urls::server_urls;

/// Mints credentials and builds URLs for the page.
pub struct IceServers {
    secret: RestSecret,
    separator: char,
    lifetime: u64,
    realm: String,
    /// The listeners and transports the URLs are made from (not the whole settings:
    /// they hold secrets).
    server: ServerSettings,
    tls_enabled: bool,
    external_ip: Option<IpAddr>,
}

/// What `/api/ice` answers (see docs/selftest.md).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IceAnswer {
    pub username: String,
    pub credential: String,
    pub ttl: u64,
    pub realm: String,
    /// Transport name (udp, tcp, tls) → URL.
    pub urls: BTreeMap<&'static str, String>,
    pub external_ip: Option<IpAddr>,
}

/// The user id in the page's REST usernames (`EXPIRY:selftest`), so its allocations
/// show as such in `tern sessions` and count against their own quota.
const USER_ID: &str = "selftest";

impl IceServers {
    pub fn new(settings: &Settings, secret: &str) -> Self {
        Self {
            secret: RestSecret::new(secret.as_bytes().to_vec()),
            separator: settings.auth.rest_separator.0,
            lifetime: settings.selftest.credential_lifetime.0,
            realm: settings.server.realm.clone(),
            server: settings.server.clone(),
            tls_enabled: settings.tls.is_enabled(),
            external_ip: settings.relay.external_ips.first().map(|e| e.public),
        }
    }

    /// Credentials valid from `now` (Unix seconds) and the URLs on `host`.
    pub fn for_host(&self, host: &str, now: u64) -> IceAnswer {
        let expiry = now.saturating_add(self.lifetime);
        let (username, credential) =
            rest_credential(&self.secret, expiry, Some(USER_ID), self.separator);
        let urls = server_urls(&self.server, self.tls_enabled, host)
            .into_iter()
            .collect();
        IceAnswer {
            username,
            credential,
            ttl: self.lifetime,
            realm: self.realm.clone(),
            urls,
            external_ip: self.external_ip,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_enabled_transports_and_credentials_verify() {
        let text = "[server]\nlisten = [\"0.0.0.0:3478\"]\ntcp = false\n";
        let settings = Settings::from_toml(text, "t").unwrap();
        let ice = IceServers::new(&settings, "s3cret");
        let answer = ice.for_host("h.example", 1_000);
        assert_eq!(answer.urls.len(), 1);
        assert_eq!(answer.urls["udp"], "turn:h.example:3478?transport=udp");
        assert_eq!(answer.username, "1600:selftest");
        let expected = RestSecret::new(b"s3cret".to_vec()).password_for("1600:selftest");
        assert_eq!(answer.credential, expected);
    }
}
