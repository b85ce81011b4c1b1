//! Checks that span several keys or that the types alone cannot express.
//!
//! Each failure names the dotted key it is about, and [`line_of`] finds that key's line
//! in the file, so a cross-field error points at a line like a parse error does.

use super::{AcmeChallenge, AcmeSettings, Redacted, ServerSettings, Settings};
use crate::core::{ListenerRole, listener_covers};
use std::net::{IpAddr, SocketAddr};
use thiserror::Error;

/// A value the schema accepts but the server cannot run with.
#[derive(Debug, Error)]
#[error("{key}: {message}")]
pub struct InvalidKey {
    /// The dotted key, e.g. `relay.default_lifetime`.
    pub key: &'static str,
    pub message: String,
}

impl InvalidKey {
    fn new(key: &'static str, message: impl Into<String>) -> Self {
        Self {
            key,
            message: message.into(),
        }
    }
}

impl Settings {
    /// Checks that span several keys or that the types alone cannot express.
    /// Errors carry the dotted key they are about.
    pub fn validate(&self) -> Result<(), InvalidKey> {
        if self.server.listen.is_empty() {
            return Err(InvalidKey::new(
                "server.listen",
                "at least one address is needed",
            ));
        }
        if self.server.realm.is_empty() || self.server.realm.len() > 127 {
            return Err(InvalidKey::new(
                "server.realm",
                "must be 1 to 127 characters",
            ));
        }
        let r = &self.relay;
        r.ips.iter().try_for_each(|ip| check_relay_ip(*ip))?;
        if r.default_lifetime > r.max_lifetime {
            return Err(InvalidKey::new(
                "relay.default_lifetime",
                format!(
                    "{} s is longer than relay.max_lifetime ({} s)",
                    r.default_lifetime.0, r.max_lifetime.0
                ),
            ));
        }
        for user in &self.auth.users {
            match (&user.password, &user.key) {
                (Some(_), None) => {}
                (None, Some(key)) => {
                    crate::auth::LongTermKey::from_hex(key.expose()).map_err(|e| {
                        InvalidKey::new("auth.users", format!("user {:?}: key: {e}", user.name))
                    })?;
                }
                _ => {
                    return Err(InvalidKey::new(
                        "auth.users",
                        format!("user {:?} needs exactly one of password or key", user.name),
                    ));
                }
            }
            if user.name.is_empty() {
                return Err(InvalidKey::new("auth.users", "a user has an empty name"));
            }
        }
        if self
            .auth
            .secrets
            .iter()
            .any(|secret| secret.expose().is_empty())
        {
            return Err(InvalidKey::new("auth.secrets", "a secret is empty"));
        }
        let limits = [
            ("limits.total_allocations", self.limits.total_allocations),
            ("limits.user_allocations", self.limits.user_allocations),
            (
                "limits.permissions_per_allocation",
                self.limits.permissions_per_allocation,
            ),
            (
                "limits.channels_per_allocation",
                self.limits.channels_per_allocation,
            ),
            ("limits.relay_queue", self.limits.relay_queue),
            ("limits.rate_limit_slots", self.limits.rate_limit_slots),
            ("limits.max_connections", self.limits.max_connections),
            (
                "limits.max_connections_per_ip",
                self.limits.max_connections_per_ip,
            ),
            ("limits.write_queue", self.limits.write_queue),
            (
                "limits.tcp_connections_per_allocation",
                self.limits.tcp_connections_per_allocation,
            ),
            (
                "limits.max_dtls_handshakes",
                self.limits.max_dtls_handshakes,
            ),
        ];
        for (key, value) in limits {
            if value == 0 {
                return Err(InvalidKey::new(
                    key,
                    "must be at least 1 (every limit is bounded)",
                ));
            }
        }
        if self.server.workers > 1024 {
            return Err(InvalidKey::new(
                "server.workers",
                "at most 1024 (0 means one per CPU)",
            ));
        }
        if !(1024..=(1 << 20)).contains(&self.limits.tcp_relay_buffer) {
            return Err(InvalidKey::new(
                "limits.tcp_relay_buffer",
                "must be between 1024 and 1048576 bytes",
            ));
        }
        if !(548..=65_552).contains(&self.limits.max_frame) {
            return Err(InvalidKey::new(
                "limits.max_frame",
                "must be between 548 and 65552 bytes",
            ));
        }
        if !(1..=(1 << 22)).contains(&self.relay.offload_channels) {
            return Err(InvalidKey::new(
                "relay.offload_channels",
                "must be between 1 and 4194304",
            ));
        }
        self.validate_transports()?;
        self.validate_proxy_protocol()?;
        self.validate_front()?;
        self.validate_selftest()?;
        self.validate_cluster()?;
        self.validate_usage()?;
        if let Some(webhook) = &self.auth.webhook
            && let Some((key, message)) = webhook.invalid()
        {
            return Err(InvalidKey::new(key, message));
        }
        if let Some(key) = self.bandwidth.orphan_burst() {
            return Err(InvalidKey::new(key, "a burst needs its rate set too"));
        }
        if !(4096..=(256 << 20)).contains(&self.limits.socket_buffer) {
            return Err(InvalidKey::new(
                "limits.socket_buffer",
                "must be between 4096 and 268435456 bytes",
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level).map_err(|e| {
            InvalidKey::new(
                "log.level",
                format!("{:?} is not a log filter: {e}", self.log.level),
            )
        })?;
        Ok(())
    }
}

/// A relay socket needs one specific unicast address: a wildcard would relay from
/// whichever address the kernel picks, and a multicast address cannot be bound to send.
fn check_relay_ip(ip: IpAddr) -> Result<(), InvalidKey> {
    if ip.is_unspecified() {
        return Err(InvalidKey::new(
            "relay.ips",
            format!(
                "{ip} is a wildcard; list specific addresses, or leave relay.ips empty to use the interface addresses"
            ),
        ));
    }
    if ip.is_multicast() {
        return Err(InvalidKey::new(
            "relay.ips",
            format!("{ip} is multicast; relay sockets need a unicast address"),
        ));
    }
    Ok(())
}

impl Settings {
    /// Transport switches and TLS files must make sense together.
    fn validate_transports(&self) -> Result<(), InvalidKey> {
        let tls = &self.tls;
        if tls.cert.is_some() != tls.key.is_some() {
            return Err(InvalidKey::new(
                "tls.cert",
                "tls.cert and tls.key go together",
            ));
        }
        let tls_listen_set = self.server.tls_listen != ServerSettings::default().tls_listen;
        if tls_listen_set && !self.server.tls_listen.is_empty() && !tls.is_enabled() {
            return Err(InvalidKey::new(
                "server.tls_listen",
                "TLS listeners need tls.cert and tls.key (or tls.acme)",
            ));
        }
        self.validate_dtls_listen()?;
        if !self.server.udp && !self.server.tcp && !tls.is_enabled() {
            return Err(InvalidKey::new(
                "server.udp",
                "every transport is switched off: enable udp, tcp or TLS",
            ));
        }
        if let Some(discovery) = &self.server.nat_discovery {
            validate_nat_discovery(discovery, &self.server)?;
        }
        if let Some(acme) = &tls.acme {
            if tls.cert.is_some() {
                return Err(InvalidKey::new(
                    "tls.acme",
                    "tls.acme obtains the certificate itself: remove tls.cert and tls.key (or tls.acme)",
                ));
            }
            validate_acme(acme)?;
        }
        Ok(())
    }
}

impl Settings {
    /// DTLS listeners serve the TLS certificate, over UDP: they need one, take neither
    /// PROXY headers nor TLS detection, and cannot share an address with a UDP
    /// listener.
    fn validate_dtls_listen(&self) -> Result<(), InvalidKey> {
        let key = "server.dtls_listen";
        let server = &self.server;
        if !server.dtls_listen.is_empty() && !self.tls.is_enabled() {
            return Err(InvalidKey::new(
                key,
                "DTLS listeners need tls.cert and tls.key (or tls.acme)",
            ));
        }
        let mut udp_listeners = server.nat_discovery_listeners();
        if server.udp {
            udp_listeners.extend(server.listen_addrs());
        }
        for (i, l) in server.dtls_listen.iter().enumerate() {
            let why = if l.proxy_protocol {
                "proxy_protocol applies to TCP and TLS listeners, not DTLS"
            } else if l.auto_detect.is_some() {
                "auto_detect applies to TCP and TLS listeners, not DTLS"
            } else if server.dtls_listen[..i].iter().any(|o| o.addr == l.addr) {
                "is listed twice"
            } else if (server.tls_listen.iter()).any(|t| t.addr == l.addr && t.serve != l.serve) {
                "serve differs from the TLS listener's on this address (roles go by address)"
            } else if udp_listeners
                .iter()
                .any(|&u| listener_covers(u, l.addr) || listener_covers(l.addr, u))
            {
                "is already a UDP listener (server.listen or server.nat_discovery)"
            } else {
                continue;
            };
            return Err(InvalidKey::new(key, format!("{}: {why}", l.addr)));
        }
        Ok(())
    }
}

/// Two different IPs of one family that a host can bind, two different ports, UDP to
/// answer on, and no address among the four that a TURN-only listener takes (it would
/// ignore the Bindings).
fn validate_nat_discovery(
    d: &crate::core::NatDiscovery,
    server: &ServerSettings,
) -> Result<(), InvalidKey> {
    let key = "server.nat_discovery";
    let [a, b] = d.ips;
    let why = if a == b {
        "the two ips must differ"
    } else if a.is_ipv4() != b.is_ipv4() {
        "the two ips must be of one family (both IPv4 or both IPv6)"
    } else if [a, b]
        .iter()
        .any(|ip| ip.is_unspecified() || ip.is_multicast())
    {
        "the ips must be addresses of this host, not a wildcard or multicast"
    } else if d.ports[0] == d.ports[1] {
        "the two ports must differ"
    } else if d.ports.contains(&0) {
        "port 0 is not a port a client can be told"
    } else if !server.udp {
        "NAT discovery answers over UDP: server.udp must be on"
    } else {
        let on_turn_only = |a: &SocketAddr| {
            let listeners = server.listen.iter();
            listeners
                .filter(|l| l.serve == ListenerRole::Turn)
                .any(|l| listener_covers(l.addr, *a))
        };
        let turn_only = d.addresses().into_iter().find(on_turn_only);
        return match turn_only {
            Some(addr) => Err(InvalidKey::new(
                key,
                format!("{addr} is on a listener with serve = \"turn\", which ignores Binding"),
            )),
            None => Ok(()),
        };
    };
    Err(InvalidKey::new(key, why))
}

/// The domains must be DNS names a CA can validate, and HTTP-01 needs its listener.
fn validate_acme(acme: &AcmeSettings) -> Result<(), InvalidKey> {
    if acme.domains.is_empty() {
        return Err(InvalidKey::new(
            "tls.acme.domains",
            "at least one domain is needed",
        ));
    }
    if acme.domains.len() > MAX_ACME_DOMAINS {
        return Err(InvalidKey::new(
            "tls.acme.domains",
            format!("at most {MAX_ACME_DOMAINS} domains (the CA's limit per certificate)"),
        ));
    }
    if let Some(domain) = acme.domains.iter().find(|d| !is_dns_name(d)) {
        return Err(InvalidKey::new(
            "tls.acme.domains",
            format!("{domain:?} is not a DNS name (no IP addresses, no wildcards)"),
        ));
    }
    if !acme.directory.starts_with("https://") {
        return Err(InvalidKey::new(
            "tls.acme.directory",
            "must be an https:// URL",
        ));
    }
    if let Some(email) = &acme.email
        && (!email.contains('@') || email.contains(char::is_whitespace))
    {
        return Err(InvalidKey::new(
            "tls.acme.email",
            format!("{email:?} is not an e-mail address"),
        ));
    }
    match (acme.challenge, acme.http01_listen) {
        (AcmeChallenge::Http01, None) => Err(InvalidKey::new(
            "tls.acme.http01_listen",
            "challenge = \"http-01\" needs an address to answer on (e.g. \"0.0.0.0:80\")",
        )),
        (AcmeChallenge::TlsAlpn01, Some(_)) => Err(InvalidKey::new(
            "tls.acme.http01_listen",
            "only used with challenge = \"http-01\"",
        )),
        _ => Ok(()),
    }
}

/// Let's Encrypt's limit of names per certificate.
const MAX_ACME_DOMAINS: usize = 100;

/// A fully qualified DNS name: dot-separated labels of letters, digits and inner
/// hyphens, at least two labels, 253 characters at most.
fn is_dns_name(name: &str) -> bool {
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    name.len() <= 253
        && name.contains('.')
        && name.split('.').all(label_ok)
        && name.parse::<IpAddr>().is_err()
}

impl Settings {
    /// Usage sinks must be bounded and the webhook an http(s) URL.
    fn validate_usage(&self) -> Result<(), InvalidKey> {
        let usage = &self.usage;
        if !(1..=1_000_000).contains(&usage.queue) {
            return Err(InvalidKey::new(
                "usage.queue",
                "must be between 1 and 1000000 records",
            ));
        }
        if !(1..=10_000).contains(&usage.webhook_batch) {
            return Err(InvalidKey::new(
                "usage.webhook_batch",
                "must be between 1 and 10000 records",
            ));
        }
        if let Some(url) = &usage.webhook_url {
            let url = url.expose();
            let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
            if !scheme_ok || url.parse::<axum::http::Uri>().is_err() {
                // The URL may hold credentials: only its shape is described.
                return Err(InvalidKey::new(
                    "usage.webhook_url",
                    "must be an http:// or https:// URL",
                ));
            }
        }
        if usage.webhook_token.is_some() && usage.webhook_url.is_none() {
            return Err(InvalidKey::new(
                "usage.webhook_token",
                "is set but usage.webhook_url is not",
            ));
        }
        Ok(())
    }

    /// A listener that expects PROXY headers needs someone it trusts to send them.
    fn validate_proxy_protocol(&self) -> Result<(), InvalidKey> {
        let server = &self.server;
        let lists = [
            ("server.listen", &server.listen),
            ("server.tls_listen", &server.tls_listen),
        ];
        for (key, listeners) in lists {
            if let Some(l) = listeners.iter().find(|l| l.proxy_protocol) {
                if server.proxy_protocol_from.is_empty() {
                    return Err(InvalidKey::new(
                        key,
                        format!(
                            "{} has proxy_protocol = true but server.proxy_protocol_from is empty: list the load balancers' addresses",
                            l.addr
                        ),
                    ));
                }
                if key == "server.listen" && !server.tcp {
                    return Err(InvalidKey::new(
                        key,
                        format!(
                            "{}: proxy_protocol applies to TCP, which server.tcp switches off",
                            l.addr
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Sharing the TLS port needs TLS, names that are host names, and an upstream that
    /// is not tern itself.
    fn validate_front(&self) -> Result<(), InvalidKey> {
        let front = &self.front;
        if let Some(name) = front.turn_names.iter().find(|n| !is_host_name(n)) {
            return Err(InvalidKey::new(
                "front.turn_names",
                format!("{name:?} is not a host name"),
            ));
        }
        let Some(upstream) = front.upstream else {
            return Ok(());
        };
        if !self.tls.is_enabled() {
            return Err(InvalidKey::new(
                "front.upstream",
                "sharing a port with a website happens on TLS listeners: set tls.cert and tls.key",
            ));
        }
        if upstream.ip().is_unspecified() || upstream.port() == 0 {
            return Err(InvalidKey::new(
                "front.upstream",
                format!("{upstream} is not an address to connect to"),
            ));
        }
        let own = self.server.listen.iter().chain(&self.server.tls_listen);
        if own.map(|l| l.addr).any(|a| a == upstream) {
            return Err(InvalidKey::new(
                "front.upstream",
                format!("{upstream} is one of tern's own listeners: it would loop"),
            ));
        }
        Ok(())
    }
}

impl Settings {
    /// The self-test must be locked by a token, served over HTTPS unless on loopback,
    /// and bounded.
    fn validate_selftest(&self) -> Result<(), InvalidKey> {
        let t = &self.selftest;
        let Some(listen) = t.listen else {
            return Ok(());
        };
        match &t.token {
            None => {
                return Err(InvalidKey::new(
                    "selftest.token",
                    "selftest.listen needs a token",
                ));
            }
            Some(token)
                if token.expose().len() < 16 || !token.expose().bytes().all(is_url_safe) =>
            {
                return Err(InvalidKey::new(
                    "selftest.token",
                    "must be at least 16 characters of A-Z a-z 0-9 - _ . ~ (it goes in a link)",
                ));
            }
            Some(_) => {}
        }
        if !listen.ip().is_loopback() && !self.tls.is_enabled() {
            return Err(InvalidKey::new(
                "selftest.listen",
                format!(
                    "{listen} is not loopback: the self-test needs HTTPS, so set tls.cert and tls.key"
                ),
            ));
        }
        if !(60..=86_400).contains(&t.credential_lifetime.0) {
            return Err(InvalidKey::new(
                "selftest.credential_lifetime",
                "must be between 60 and 86400 seconds",
            ));
        }
        if let Some(host) = &t.public_host
            && super::host_without_port(host).as_deref() != Some(host.as_str())
        {
            return Err(InvalidKey::new(
                "selftest.public_host",
                format!(
                    "{host:?}: a host name or IP (an IPv6 address in brackets), without a port"
                ),
            ));
        }
        if !(1..=3600).contains(&t.idle_timeout.0) {
            return Err(InvalidKey::new(
                "selftest.idle_timeout",
                "must be between 1 and 3600 seconds",
            ));
        }
        let bounds = [
            ("selftest.room_ttl", t.room_ttl.0 as usize),
            ("selftest.max_rooms", t.max_rooms),
            ("selftest.max_message", t.max_message),
            (
                "selftest.messages_per_second",
                t.messages_per_second as usize,
            ),
            ("selftest.message_burst", t.message_burst as usize),
            ("selftest.max_connections", t.max_connections),
        ];
        for (key, value) in bounds {
            if value == 0 {
                return Err(InvalidKey::new(
                    key,
                    "must be at least 1 (every limit is bounded)",
                ));
            }
        }
        if !(1024..=(1 << 20)).contains(&t.max_message) {
            return Err(InvalidKey::new(
                "selftest.max_message",
                "must be between 1024 and 1048576 bytes",
            ));
        }
        Ok(())
    }
}

impl Settings {
    fn validate_cluster(&self) -> Result<(), InvalidKey> {
        let c = &self.cluster;
        if let Some(url) = c.redis_url.as_ref().map(Redacted::expose)
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(InvalidKey::new(
                "cluster.redis_url",
                "must start with redis:// or rediss://",
            ));
        }
        if let Some(id) = &c.node_id
            && !is_name(id)
        {
            return Err(InvalidKey::new(
                "cluster.node_id",
                format!("{id:?}: use 1 to 64 of A-Z a-z 0-9 . - _"),
            ));
        }
        if !is_name(&c.key_prefix) {
            return Err(InvalidKey::new(
                "cluster.key_prefix",
                "use 1 to 64 of A-Z a-z 0-9 . - _",
            ));
        }
        if !(1..=60).contains(&c.heartbeat_interval.0) {
            return Err(InvalidKey::new(
                "cluster.heartbeat_interval",
                "must be between 1 and 60 s",
            ));
        }
        if c.node_ttl.0 > 600 {
            return Err(InvalidKey::new("cluster.node_ttl", "must be at most 600 s"));
        }
        for (key, addrs) in [
            ("cluster.advertise", &c.advertise),
            ("cluster.advertise_tls", &c.advertise_tls),
        ] {
            if let Some(bad) = addrs
                .iter()
                .find(|a| a.ip().is_unspecified() || a.ip().is_multicast() || a.port() == 0)
            {
                return Err(InvalidKey::new(
                    key,
                    format!("{bad}: clients need a specific unicast address and a port"),
                ));
            }
        }
        if c.node_ttl.0 < 2 * c.heartbeat_interval.0 {
            return Err(InvalidKey::new(
                "cluster.node_ttl",
                format!(
                    "must be at least twice cluster.heartbeat_interval ({} s), or live nodes would expire between heartbeats",
                    c.heartbeat_interval.0
                ),
            ));
        }
        Ok(())
    }
}

/// A node id or key prefix: 1 to 64 of A-Z a-z 0-9 . - _.
fn is_name(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// A DNS host name: dot-separated labels of letters, digits and inner hyphens.
fn is_host_name(text: &str) -> bool {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    text.len() <= 253 && text.split('.').all(label_ok)
}

/// Characters that need no escaping in a URL query.
fn is_url_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.~".contains(&b)
}

/// "line N: " for the last segment of a dotted key when it can be found in the text,
/// so cross-field errors point at a line like parse errors do.
pub(super) fn line_of(text: &str, dotted_key: &str) -> String {
    let key = dotted_key.rsplit('.').next().unwrap_or(dotted_key);
    text.lines()
        .position(|line| {
            let line = line.trim_start();
            line.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
                || line.trim_start_matches('[').starts_with(dotted_key)
        })
        .map(|i| format!("line {}: ", i + 1))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_field_error_names_key_and_line() {
        let text = "[relay]\nmax_lifetime = 600\ndefault_lifetime = 900\n";
        let err = Settings::from_toml(text, "t.toml").unwrap_err().to_string();
        assert!(err.contains("line 3: relay.default_lifetime"), "{err}");
    }

    #[test]
    fn user_needs_exactly_one_secret() {
        let text = "[[auth.users]]\nname = \"a\"\n";
        assert!(Settings::from_toml(text, "t").is_err());
        let text = "[[auth.users]]\nname = \"a\"\nkey = \"zz\"\n";
        assert!(Settings::from_toml(text, "t").is_err());
        let text = "[[auth.users]]\nname = \"a\"\npassword = \"p\"\n";
        assert!(Settings::from_toml(text, "t").is_ok());
    }

    #[test]
    fn bad_log_level_is_refused() {
        let text = "[log]\nformat = \"json\"\nlevel = \"tern=loud\"\n";
        let err = Settings::from_toml(text, "t").unwrap_err().to_string();
        assert!(err.contains("line 3: log.level"), "{err}");
        for level in ["debug", "warn,tern=trace"] {
            let text = format!("[log]\nlevel = {level:?}\n");
            assert!(Settings::from_toml(&text, "t").is_ok(), "{level}");
        }
    }

    #[test]
    fn wildcard_or_multicast_relay_ip_is_refused() {
        for ip in ["0.0.0.0", "::", "224.0.0.1", "ff02::1"] {
            let text = format!("[relay]\nips = [\"10.0.0.5\", \"{ip}\"]\n");
            let err = Settings::from_toml(&text, "t").unwrap_err().to_string();
            assert!(err.contains("line 2: relay.ips"), "{err}");
            assert!(err.contains(ip), "{err}");
        }
        let text = "[relay]\nips = [\"10.0.0.5\", \"2001:db8::5\"]\n";
        assert!(Settings::from_toml(text, "t").is_ok());
    }

    #[test]
    fn flags_complete_the_file_before_validation() {
        let text = "[selftest]\nlisten = \"0.0.0.0:8443\"\ntoken = \"0123456789abcdefgh\"\n";
        let err = Settings::from_toml(text, "t").unwrap_err().to_string();
        assert!(err.contains("line 2: selftest.listen"), "{err}");
        let with_cert = Settings::from_toml_with(text, "t", |s| {
            s.tls.cert = Some("fullchain.pem".into());
            s.tls.key = Some("privkey.pem".into());
            Ok(())
        });
        assert!(with_cert.is_ok(), "{with_cert:?}");
    }

    #[test]
    fn fleet_and_self_test_values_are_bounded() {
        let cases = [
            (
                "[cluster]\nheartbeat_interval = 61\n",
                "line 2: cluster.heartbeat_interval",
            ),
            ("[cluster]\nnode_ttl = 601\n", "line 2: cluster.node_ttl"),
            (
                "[cluster]\nadvertise = [\"0.0.0.0:3478\"]\n",
                "line 2: cluster.advertise",
            ),
            (
                "[cluster]\nadvertise_tls = [\"192.0.2.1:0\"]\n",
                "cluster.advertise_tls",
            ),
            (
                "[selftest]\nlisten = \"127.0.0.1:8080\"\ntoken = \"0123456789abcdefgh\"\nroom_ttl = 99999999999\n",
                "out of range",
            ),
            (
                "[selftest]\nlisten = \"127.0.0.1:8080\"\ntoken = \"0123456789abcdefgh\"\npublic_host = \"2001:db8::1\"\n",
                "line 4: selftest.public_host",
            ),
        ];
        for (text, expected) in cases {
            let err = Settings::from_toml(text, "t").unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
        let ok = "[selftest]\nlisten = \"127.0.0.1:8080\"\ntoken = \"0123456789abcdefgh\"\npublic_host = \"[2001:db8::1]\"\n";
        assert!(Settings::from_toml(ok, "t").is_ok());
    }

    #[test]
    fn acme_keys_are_checked_together() {
        let cases = [
            (
                "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n[tls.acme]\ndomains = [\"a.example\"]\n",
                "line 4: tls.acme",
            ),
            (
                "[tls.acme]\nemail = \"ops@example.com\"\n",
                "tls.acme.domains",
            ),
            (
                "[tls.acme]\ndomains = [\"*.example.com\"]\n",
                "line 2: tls.acme.domains",
            ),
            (
                "[tls.acme]\ndomains = [\"192.0.2.1\"]\n",
                "line 2: tls.acme.domains",
            ),
            (
                "[tls.acme]\ndomains = [\"a.example\"]\nchallenge = \"http-01\"\n",
                "tls.acme.http01_listen",
            ),
            (
                "[tls.acme]\ndomains = [\"a.example\"]\ndirectory = \"http://ca.example/dir\"\n",
                "line 3: tls.acme.directory",
            ),
            (
                "[tls.acme]\ndomains = [\"a.example\"]\nchallenge = \"dns-01\"\n",
                "line 3",
            ),
        ];
        for (text, expected) in cases {
            let err = Settings::from_toml(text, "t").unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
        let ok = "[tls.acme]\ndomains = [\"a.example\"]\nchallenge = \"http-01\"\nhttp01_listen = \"0.0.0.0:80\"\n";
        assert!(Settings::from_toml(ok, "t").is_ok());
    }

    #[test]
    fn zero_limit_is_refused() {
        let err = Settings::from_toml("[limits]\nuser_allocations = 0\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.user_allocations"), "{err}");
    }

    #[test]
    fn proxy_protocol_and_front_mistakes_name_their_key() {
        let tls = "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n";
        let cases = [
            (
                "[server]\nlisten = [{ addr = \"0.0.0.0:3478\", proxy_protocol = true }]\n".to_string(),
                "server.proxy_protocol_from is empty",
            ),
            (
                "[server]\nproxy_protocol_from = [\"10.0.0.0/8\"]\ntcp = false\nlisten = [{ addr = \"0.0.0.0:3478\", proxy_protocol = true }]\n".to_string(),
                "server.tcp switches off",
            ),
            (
                "[front]\nupstream = \"127.0.0.1:8443\"\n".to_string(),
                "line 2: front.upstream: sharing a port",
            ),
            (
                format!("{tls}[front]\nupstream = \"127.0.0.1:5349\"\n[server]\ntls_listen = [\"127.0.0.1:5349\"]\n"),
                "would loop",
            ),
            (
                format!("{tls}[front]\nturn_names = [\"turn.example.com\", \"bad name\"]\n"),
                "front.turn_names: \"bad name\" is not a host name",
            ),
            (
                "[front]\nupstream_proxy_protocol = \"v3\"\n".to_string(),
                "unknown variant",
            ),
        ];
        for (text, expected) in cases {
            let err = Settings::from_toml(&text, "t").unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
        let ok = format!(
            "{tls}[server]\nproxy_protocol_from = [\"10.0.0.0/8\"]\ntls_listen = [{{ addr = \"0.0.0.0:443\", proxy_protocol = true }}]\n[front]\nupstream = \"127.0.0.1:8443\"\nupstream_proxy_protocol = \"v2\"\nturn_names = [\"turn.example.com\"]\n"
        );
        let settings = Settings::from_toml(&ok, "t").unwrap();
        assert!(settings.server.tls_listen[0].proxy_protocol);
        assert_eq!(
            settings.front.upstream_proxy_protocol,
            crate::config::ProxyVersion::V2
        );
    }

    #[test]
    fn usage_sinks_are_bounded_and_the_webhook_is_a_url() {
        let cases = [
            ("[usage]\nqueue = 0\n", "usage.queue"),
            ("[usage]\nwebhook_batch = 0\n", "usage.webhook_batch"),
            (
                "[usage]\nwebhook_url = \"ftp://user:pw@example.org/\"\n",
                "usage.webhook_url: must be an http:// or https:// URL",
            ),
            (
                "[usage]\nwebhook_token = \"t\"\n",
                "usage.webhook_token: is set but usage.webhook_url is not",
            ),
        ];
        for (text, expected) in cases {
            let err = Settings::from_toml(text, "t").unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
            assert!(!err.contains("pw@"), "the URL leaked: {err}");
        }
        let ok = "[usage]\nwebhook_url = \"https://billing.example.org/usage\"\n";
        assert!(Settings::from_toml(ok, "t").is_ok());
    }
}
