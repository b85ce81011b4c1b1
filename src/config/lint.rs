//! Warnings for configs that are valid but probably not what the operator meant.
//!
//! This module owns the list of classic deployment mistakes that `tern check-config`
//! reports: relays nobody outside can reach, address mappings that never apply, peer
//! rules that expose internal networks or block the server's own clients, weak or
//! missing secrets and undersized port ranges. Each warning is one plain sentence that
//! names the key it is about and never contains a secret or password.
//!
//! It is pure: it reads only the settings, never the host's interfaces or the network,
//! so relay IPs that `tern serve` would detect at start are not known here. What needs
//! the host ([`acme_domains_elsewhere`]: DNS and the interface addresses) is handed in
//! by the caller.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{AcmeChallenge, ExternalIp, ServerSettings, Settings};
use crate::policy::{OwnRelays, PeerPolicy};

/// Shortest REST secret or nonce key that is not trivially brute-forced offline.
const MIN_SECRET_BYTES: usize = 16;

/// Fewer relay ports than this allows only a handful of simultaneous allocations.
const MIN_RELAY_PORTS: usize = 100;

/// Ranges that an operator `peers.allowed` entry should re-open only with care, because
/// they hold this host's or the internal network's services; `(range, what it is)`.
const INTERNAL_RANGES: &[(IpNet, &str)] = &[
    (v4([127, 0, 0, 0], 8), "loopback (this host's own services)"),
    (
        v6([0, 0, 0, 0, 0, 0, 0, 1], 128),
        "loopback (this host's own services)",
    ),
    (v4([10, 0, 0, 0], 8), "RFC 1918 private"),
    (v4([172, 16, 0, 0], 12), "RFC 1918 private"),
    (v4([192, 168, 0, 0], 16), "RFC 1918 private"),
    (
        v4([169, 254, 0, 0], 16),
        "link-local (including the cloud metadata service 169.254.169.254)",
    ),
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "IPv6 link-local"),
    (
        v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        "IPv6 unique local (ULA)",
    ),
];

const fn v4(octets: [u8; 4], prefix_len: u8) -> IpNet {
    let [a, b, c, d] = octets;
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix_len))
}

const fn v6(segments: [u16; 8], prefix_len: u8) -> IpNet {
    let [a, b, c, d, e, f, g, h] = segments;
    IpNet::V6(Ipv6Net::new_assert(
        Ipv6Addr::new(a, b, c, d, e, f, g, h),
        prefix_len,
    ))
}

/// Every warning for `settings`, in a stable order.
pub fn lint(settings: &Settings) -> Vec<String> {
    let relays = KnownRelayIps::of(settings);
    let mut warnings = Vec::new();
    warnings.extend(unreachable_relay_ips(settings, &relays));
    warnings.extend(unused_external_mappings(settings, &relays));
    warnings.extend(non_public_external_ips(settings));
    warnings.extend(detected_relay_ips(settings));
    warnings.extend(few_relay_ports(settings));
    warnings.extend(default_realm_with_static_users(settings));
    warnings.extend(no_credentials(settings));
    warnings.extend(short_secrets(settings));
    warnings.extend(denied_own_addresses(settings, &relays));
    warnings.extend(allowed_internal_ranges(settings));
    warnings.extend(plain_redis_with_password(settings));
    warnings.extend(cluster_without_shared_nonce_key_hint(settings));
    warnings.extend(port_443_without_tls(settings));
    warnings.extend(proxy_protocol_from_anywhere(settings));
    warnings.extend(tls_alpn_without_port_443(settings));
    warnings.extend(offload_on_with_bandwidth_limits(settings));
    warnings.extend(plain_auth_webhook(settings));
    warnings
}

/// The kernel fast path cannot enforce bandwidth limits, so it takes no channel while
/// one is set: asking for it with `on` (refuse to start without it) buys nothing.
fn offload_on_with_bandwidth_limits(settings: &Settings) -> Option<String> {
    let limited = settings.bandwidth.limits().is_some();
    (limited && settings.relay.offload == super::OffloadMode::On).then(|| {
        "relay.offload is \"on\" but [bandwidth] sets a limit: the kernel fast path does not enforce limits, so it relays no channel while one is set.".to_string()
    })
}

/// Networks that let only 443 out often let only TLS through it too: a plain
/// TCP/UDP listener there misses the clients 443 is for.
fn port_443_without_tls(settings: &Settings) -> Option<String> {
    let on_443 = settings
        .server
        .listen
        .iter()
        .find(|l| l.addr.port() == 443)?;
    (!settings.tls.is_enabled()).then(|| {
        format!(
            "server.listen has {} but TLS is off: firewalls that let only 443 out usually let only TLS through it, so these clients need turns: on 443; set tls.cert and tls.key and put 443 in server.tls_listen.",
            on_443.addr
        )
    })
}

/// A PROXY header is a claim about the client's address; accepted from anyone, it lets
/// anyone claim any address (and dodge per-IP limits and peer rules keyed on it).
fn proxy_protocol_from_anywhere(settings: &Settings) -> Vec<String> {
    settings
        .server
        .proxy_protocol_from
        .iter()
        .filter(|net| net.prefix_len() < 8)
        .map(|net| {
            format!(
                "server.proxy_protocol_from has {net}: PROXY protocol headers are then believed from (nearly) anywhere, so any client can claim any address; list only your load balancers' addresses."
            )
        })
        .collect()
}

/// TLS-ALPN-01 is validated by the CA connecting to port 443 of the domain: without a
/// TLS listener there, validation cannot reach tern.
fn tls_alpn_without_port_443(settings: &Settings) -> Option<String> {
    let acme = settings.tls.acme.as_ref()?;
    let on_443 = settings
        .server
        .tls_listen
        .iter()
        .any(|l| l.addr.port() == 443);
    (acme.challenge == AcmeChallenge::TlsAlpn01 && !on_443).then(|| {
        "tls.acme.challenge is tls-alpn-01, which the CA validates on port 443, but no server.tls_listen address uses port 443; listen on 443 (or forward 443 to a TLS listener), or use challenge = \"http-01\".".to_string()
    })
}

/// ACME domains that resolve, but not to any of `own` (this host's addresses) nor
/// `relay.external_ips`, so the CA's validation would reach another machine.
/// `resolve` answers a name's addresses, or `None` when it cannot be resolved: such a
/// name is not reported, since DNS may simply be unavailable where the check runs.
pub fn acme_domains_elsewhere(
    settings: &Settings,
    own: &[IpAddr],
    resolve: impl Fn(&str) -> Option<Vec<IpAddr>>,
) -> Vec<String> {
    let Some(acme) = &settings.tls.acme else {
        return Vec::new();
    };
    let external = settings.relay.external_ips.iter().map(|e| e.public);
    let own: Vec<IpAddr> = own.iter().copied().chain(external).collect();
    acme.domains
        .iter()
        .filter_map(|domain| {
            let resolved = resolve(domain)?;
            let here = resolved.iter().any(|ip| own.contains(&ip.to_canonical()));
            (!resolved.is_empty() && !here).then(|| {
                let shown: Vec<String> = resolved.iter().map(IpAddr::to_string).collect();
                format!(
                    "tls.acme.domains: {domain} resolves to {}, none of which is an address of this host; the CA validates at that address, so issuance will fail unless it forwards to here.",
                    shown.join(", ")
                )
            })
        })
        .collect()
}

/// A password sent to Redis without TLS crosses the network in the clear.
fn plain_redis_with_password(settings: &Settings) -> Option<String> {
    let url = settings.cluster.redis_url.as_ref()?.expose();
    let host = url.strip_prefix("redis://")?;
    let (userinfo, rest) = host.split_once('@')?;
    (userinfo.contains(':') && !on_this_host(rest)).then(|| {
        "cluster.redis_url sends the Redis password unencrypted (redis://) to another host; use rediss:// unless the network between the nodes and Redis is private.".to_string()
    })
}

/// The keys the service answers with are as good as passwords.
fn plain_auth_webhook(settings: &Settings) -> Option<String> {
    let url = settings.auth.webhook.as_ref()?.url.expose();
    let rest = url.strip_prefix("http://")?;
    (!on_this_host(rest)).then(|| {
        "auth.webhook.url is plain http:// to another host: the service's answers (passwords or keys) and the token cross the network unencrypted; use https:// unless that network is private.".to_string()
    })
}

/// Whether the host at the start of `rest` (what follows `scheme://` and any
/// `userinfo@`) is this host's loopback.
fn on_this_host(rest: &str) -> bool {
    let host = rest.split([':', '/']).next().unwrap_or_default();
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Without Redis at start a node makes up its own nonce key; a fixed one avoids that.
fn cluster_without_shared_nonce_key_hint(settings: &Settings) -> Option<String> {
    (settings.cluster.is_enabled() && settings.auth.nonce_key.is_none()).then(|| {
        "cluster is on and auth.nonce_key is unset: nodes share a nonce key through Redis, but a node that starts while Redis is unreachable uses its own, and clients moving to it get one 438 each; set the same auth.nonce_key on every node to rule that out.".to_string()
    })
}

/// The relay IPs that can be known from the file alone: `relay.ips`, or else the
/// specific `server.listen` IPs (as `tern serve` picks them before looking at
/// interfaces).
struct KnownRelayIps {
    ips: Vec<IpAddr>,
    /// The key the IPs come from, for the wording of warnings.
    key: &'static str,
    /// False when a wildcard listener means more relay IPs are detected at start.
    complete: bool,
}

impl KnownRelayIps {
    fn of(settings: &Settings) -> Self {
        let listen = &settings.server.listen;
        let (candidates, key, complete) = if settings.relay.ips.is_empty() {
            let specific = listen.iter().map(|l| l.addr.ip());
            let complete = listen.iter().all(|l| !l.addr.ip().is_unspecified());
            (specific.collect(), "server.listen", complete)
        } else {
            (settings.relay.ips.clone(), "relay.ips", true)
        };
        let mut ips: Vec<IpAddr> = Vec::new();
        for ip in candidates {
            if !ip.is_unspecified() && !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        Self { ips, key, complete }
    }
}

/// Whether `entry` gives a public address for relay IP `ip` (see
/// `serve::relay_ips::advertised_ips`).
fn maps(entry: &ExternalIp, ip: IpAddr) -> bool {
    match entry.private {
        Some(private) => private == ip,
        None => entry.public.is_ipv4() == ip.is_ipv4(),
    }
}

/// A relay address in a private, CGNAT, loopback or otherwise non-public range is
/// what clients are told to send to; nobody outside that network can.
fn unreachable_relay_ips(settings: &Settings, relays: &KnownRelayIps) -> Vec<String> {
    let external = &settings.relay.external_ips;
    relays
        .ips
        .iter()
        .filter(|&&ip| PeerPolicy::is_default_denied(ip))
        .filter(|&&ip| !external.iter().any(|entry| maps(entry, ip)))
        .map(|ip| {
            format!(
                "relay IP {ip} (from {}) is not a public address and no relay.external_ips entry maps it, so clients on other networks (browsers elsewhere) cannot reach the relay; add the host's public address to relay.external_ips (\"{ip}=PUBLIC\" behind a 1:1 NAT).",
                relays.key
            )
        })
        .collect()
}

/// A `PRIVATE=PUBLIC` entry only applies to the relay IP `PRIVATE`.
fn unused_external_mappings(settings: &Settings, relays: &KnownRelayIps) -> Vec<String> {
    if !relays.complete {
        return Vec::new();
    }
    settings
        .relay
        .external_ips
        .iter()
        .filter_map(|entry| entry.private.map(|private| (private, entry.public)))
        .filter(|(private, _)| !relays.ips.contains(private))
        .map(|(private, public)| {
            format!(
                "relay.external_ips entry \"{private}={public}\" is never used: {private} is not one of the relay IPs (from {}); the PRIVATE side must be a relay IP.",
                relays.key
            )
        })
        .collect()
}

/// The public side of a mapping is what clients are told; it must be reachable.
fn non_public_external_ips(settings: &Settings) -> Vec<String> {
    settings
        .relay
        .external_ips
        .iter()
        .map(|entry| entry.public)
        .filter(|&public| PeerPolicy::is_default_denied(public))
        .map(|public| {
            format!(
                "relay.external_ips advertises {public}, which is itself a private, loopback or reserved address, so clients on other networks still cannot reach the relay; advertise the host's public address."
            )
        })
        .collect()
}

fn detected_relay_ips(settings: &Settings) -> Option<String> {
    let wildcard = settings
        .server
        .listen
        .iter()
        .any(|l| l.addr.ip().is_unspecified());
    (wildcard && settings.relay.ips.is_empty()).then(|| {
        "server.listen has a wildcard address and relay.ips is empty, so relay IPs are detected from the host's interfaces at each start (and change with them); set relay.ips to be explicit.".to_string()
    })
}

fn few_relay_ports(settings: &Settings) -> Option<String> {
    let ports = settings.relay.ports;
    (ports.count() < MIN_RELAY_PORTS).then(|| {
        format!(
            "relay.ports {ports} has only {} ports, so at most that many allocations can be open at once per relay IP; widen the range (the default is 49152-65535).",
            ports.count()
        )
    })
}

/// Keys are derived from the realm: the default one makes them portable between
/// unrelated servers and means changing it later breaks every key handed out.
fn default_realm_with_static_users(settings: &Settings) -> Option<String> {
    let default_realm = ServerSettings::default().realm;
    (settings.server.realm == default_realm && !settings.auth.users.is_empty()).then(|| {
        format!(
            "server.realm is still the default \"{default_realm}\" while auth.users defines static users; long-term keys are MD5(user:realm:password), so keys made now stop working if the realm changes and match those of every other server left at the default; set server.realm to a name of your own (e.g. your domain) before handing out credentials."
        )
    })
}

fn no_credentials(settings: &Settings) -> Option<String> {
    let auth = &settings.auth;
    (auth.users.is_empty() && auth.secrets.is_empty()).then(|| {
        "auth.users and auth.secrets are both empty, so a random REST secret is generated at each start and credentials handed out do not survive a restart; set auth.secrets or the TERN_SECRET environment variable.".to_string()
    })
}

/// Names secrets by position only: a warning must never reveal one.
fn short_secrets(settings: &Settings) -> Vec<String> {
    let auth = &settings.auth;
    let secrets = auth
        .secrets
        .iter()
        .enumerate()
        .filter(|(_, secret)| secret.expose().len() < MIN_SECRET_BYTES)
        .map(|(i, _)| format!("auth.secrets entry #{}", i + 1));
    let nonce_key = auth
        .nonce_key
        .as_ref()
        .filter(|key| key.expose().len() < MIN_SECRET_BYTES)
        .map(|_| "auth.nonce_key".to_string());
    secrets
        .chain(nonce_key)
        .map(|what| {
            format!(
                "{what} is shorter than {MIN_SECRET_BYTES} bytes and can be guessed offline; use a long random value (e.g. `openssl rand -hex 32`)."
            )
        })
        .collect()
}

/// The server's own relay and advertised addresses are peers when two of its clients
/// talk to each other through it; an operator deny covering them breaks that.
fn denied_own_addresses(settings: &Settings, relays: &KnownRelayIps) -> Vec<String> {
    let peers = &settings.peers;
    let policy = PeerPolicy::new(
        peers.allowed.clone(),
        peers.denied.clone(),
        OwnRelays {
            ips: Vec::new(),
            ports: settings.relay.ports.as_range(),
        },
    );
    let mut own = relays.ips.clone();
    for public in settings.relay.external_ips.iter().map(|entry| entry.public) {
        if !own.contains(&public) {
            own.push(public);
        }
    }
    own.into_iter()
        .filter(|&ip| policy.is_config_denied(ip))
        .map(|ip| {
            format!(
                "peers.denied covers {ip}, one of this server's own relay addresses, so its clients cannot relay to each other through it (e.g. two browsers both behind strict NATs); narrow the peers.denied entry."
            )
        })
        .collect()
}

/// Re-opening internal ranges turns the relay into a way into the host and its network.
fn allowed_internal_ranges(settings: &Settings) -> Vec<String> {
    settings
        .peers
        .allowed
        .iter()
        .filter_map(|allowed| {
            let kinds = reopened_kinds(allowed);
            (!kinds.is_empty()).then(|| {
                format!(
                    "peers.allowed entry {allowed} re-opens {} addresses, so clients can use the relay to reach internal services; on a public host allow only the specific hosts that need it.",
                    kinds.join(", ")
                )
            })
        })
        .collect()
}

/// Descriptions of the internal ranges `allowed` overlaps, each once.
fn reopened_kinds(allowed: &IpNet) -> Vec<&'static str> {
    let mut kinds = Vec::new();
    for (range, kind) in INTERNAL_RANGES {
        let overlaps = allowed.contains(range) || range.contains(allowed);
        if overlaps && !kinds.contains(kind) {
            kinds.push(*kind);
        }
    }
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deliberate public-host config that triggers no warning; tests vary one key.
    const CLEAN: &str = r#"
[server]
realm = "example.org"

[relay]
ips = ["10.0.0.5"]
external_ips = ["10.0.0.5=1.2.3.4"]

[auth]
secrets = ["correct-horse-battery-staple-42"]
"#;

    #[test]
    fn tls_alpn_needs_a_listener_on_443() {
        let acme = "[tls.acme]\ndomains = [\"turn.example.com\"]\n";
        let text = format!("{CLEAN}{acme}");
        assert_eq!(matching(&text, "port 443").len(), 1, "{:?}", lints(&text));
        let on_443 = text.replacen(
            "[server]\n",
            "[server]\ntls_listen = [\"0.0.0.0:443\"]\n",
            1,
        );
        assert!(
            matching(&on_443, "port 443").is_empty(),
            "{:?}",
            lints(&on_443)
        );
        let http =
            format!("{CLEAN}{acme}challenge = \"http-01\"\nhttp01_listen = \"0.0.0.0:80\"\n");
        assert!(matching(&http, "port 443").is_empty());
    }

    #[test]
    fn acme_domain_resolving_elsewhere_is_reported() {
        let text = format!(
            "{CLEAN}[tls.acme]\ndomains = [\"here.example\", \"there.example\", \"nxdomain.example\", \"nat.example\"]\n"
        );
        let settings = Settings::from_toml(&text, "test").unwrap();
        let own: [IpAddr; 1] = ["10.0.0.5".parse().unwrap()];
        let resolve = |name: &str| match name {
            "here.example" => Some(vec!["::ffff:10.0.0.5".parse().unwrap()]),
            "there.example" => Some(vec!["192.0.2.9".parse().unwrap()]),
            // CLEAN maps 10.0.0.5 to the public 1.2.3.4.
            "nat.example" => Some(vec!["1.2.3.4".parse().unwrap()]),
            _ => None,
        };
        let warnings = acme_domains_elsewhere(&settings, &own, resolve);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("there.example resolves to 192.0.2.9"),
            "{warnings:?}"
        );
        let no_acme = Settings::from_toml(CLEAN, "test").unwrap();
        assert!(acme_domains_elsewhere(&no_acme, &own, resolve).is_empty());
    }

    /// Warnings for `text`; test configs are valid by construction.
    fn lints(text: &str) -> Vec<String> {
        let settings = Settings::from_toml(text, "test").expect("test config is valid");
        lint(&settings)
    }

    /// The warnings for `text` that contain `needle`.
    fn matching(text: &str, needle: &str) -> Vec<String> {
        lints(text)
            .into_iter()
            .filter(|w| w.contains(needle))
            .collect()
    }

    /// `CLEAN` with the `key = ...` line of `key` replaced (or added after `[section]`).
    fn clean_with(section: &str, line: &str) -> String {
        let key = line.split('=').next().unwrap_or(line).trim();
        let mut lines: Vec<String> = CLEAN
            .lines()
            .filter(|l| l.split('=').next().map(str::trim) != Some(key))
            .map(str::to_string)
            .collect();
        let header = format!("[{section}]");
        match lines.iter().position(|l| *l == header) {
            Some(i) => lines.insert(i + 1, line.to_string()),
            None => lines.extend([header, line.to_string()]),
        }
        lines.join("\n")
    }

    #[test]
    fn a_fleet_is_warned_about_plain_passwords_and_nonce_keys() {
        let text = "[cluster]\nredis_url = \"redis://:pw@10.0.0.5:6379/0\"\n";
        let warnings = lints(text);
        assert!(
            warnings.iter().any(|w| w.contains("rediss://")),
            "{warnings:?}"
        );
        assert!(
            warnings.iter().any(|w| w.contains("auth.nonce_key")),
            "{warnings:?}"
        );
        assert!(
            warnings.iter().all(|w| !w.contains("pw@")),
            "no password in a warning"
        );
        let text = "[auth]\nnonce_key = \"0123456789abcdef0123\"\n[cluster]\nredis_url = \"rediss://:pw@10.0.0.5:6379/0\"\n";
        let warnings = lints(text);
        assert!(
            warnings.iter().all(|w| !w.contains("cluster")),
            "{warnings:?}"
        );
        let local = "[cluster]\nredis_url = \"redis://:pw@127.0.0.1:6379/0\"\n";
        assert!(lints(local).iter().all(|w| !w.contains("rediss://")));
    }

    #[test]
    fn offload_on_with_bandwidth_limits_is_pointed_out() {
        let limited = format!("{CLEAN}[bandwidth]\nuser = \"10 Mbit/s\"\n");
        let on = limited.replacen("[relay]\n", "[relay]\noffload = \"on\"\n", 1);
        assert_eq!(matching(&on, "[bandwidth]").len(), 1, "{:?}", lints(&on));
        assert!(matching(&limited, "[bandwidth]").is_empty());
    }

    #[test]
    fn a_plain_http_auth_webhook_elsewhere_is_pointed_out() {
        let hook = |url: &str| format!("{CLEAN}[auth.webhook]\nurl = \"{url}\"\n");
        let found = matching(&hook("http://auth.example.org/turn"), "auth.webhook.url");
        assert_eq!(found.len(), 1, "{found:?}");
        for fine in [
            "https://auth.example.org/turn",
            "http://127.0.0.1:8080/turn",
        ] {
            assert!(
                matching(&hook(fine), "auth.webhook.url").is_empty(),
                "{fine}"
            );
        }
    }

    #[test]
    fn clean_config_has_no_warnings() {
        assert_eq!(lints(CLEAN), Vec::<String>::new());
    }

    #[test]
    fn private_relay_ip_without_external_ip() {
        let text = clean_with("relay", "external_ips = []");
        let found = matching(&text, "relay IP 10.0.0.5 (from relay.ips)");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("relay.external_ips"));
        // A bare PUBLIC of the same family covers it; one of the other family does not.
        let text = clean_with("relay", r#"external_ips = ["1.2.3.4"]"#);
        assert!(matching(&text, "relay IP").is_empty());
        let text = clean_with("relay", r#"external_ips = ["2606:4700::1"]"#);
        assert_eq!(matching(&text, "relay IP 10.0.0.5").len(), 1);
    }

    #[test]
    fn private_listen_ip_counts_when_relay_ips_is_empty() {
        let text = "[server]\nlisten = [\"100.64.1.2:3478\"]\n";
        assert_eq!(
            matching(text, "relay IP 100.64.1.2 (from server.listen)").len(),
            1
        );
        let text =
            "[server]\nlisten = [\"127.0.0.1:3478\"]\n[relay]\nexternal_ips = [\"1.2.3.4\"]\n";
        assert!(matching(text, "relay IP").is_empty());
        let text = "[relay]\nips = [\"1.2.3.5\"]\n";
        assert!(matching(text, "relay IP").is_empty());
        let text = "[relay]\nips = [\"10.0.0.5\", \"10.0.0.5\"]\n";
        assert_eq!(matching(text, "relay IP 10.0.0.5").len(), 1);
    }

    #[test]
    fn mapping_for_an_ip_that_is_not_a_relay_ip() {
        let text = clean_with(
            "relay",
            r#"external_ips = ["10.0.0.5=1.2.3.4", "10.0.0.9=1.2.3.9"]"#,
        );
        let found = matching(&text, "never used");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("\"10.0.0.9=1.2.3.9\""), "{found:?}");
        // Relay IPs detected at start are unknown here: no guess.
        let text = "[relay]\nexternal_ips = [\"10.0.0.9=1.2.3.9\"]\n";
        assert!(matching(text, "never used").is_empty());
    }

    #[test]
    fn non_public_external_ip() {
        let text = clean_with("relay", r#"external_ips = ["10.0.0.5=192.168.1.1"]"#);
        let found = matching(&text, "relay.external_ips advertises 192.168.1.1");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(matching(CLEAN, "advertises").is_empty());
    }

    #[test]
    fn wildcard_listen_without_relay_ips() {
        let text = "[relay]\nexternal_ips = [\"1.2.3.4\"]\n";
        assert_eq!(matching(text, "server.listen has a wildcard").len(), 1);
        let text = "[server]\nlisten = [\"1.2.3.4:3478\"]\n";
        assert!(matching(text, "wildcard").is_empty());
        assert!(matching(CLEAN, "wildcard").is_empty());
    }

    #[test]
    fn small_port_range() {
        let text = clean_with("relay", r#"ports = "50000-50009""#);
        let found = matching(&text, "relay.ports 50000-50009 has only 10 ports");
        assert_eq!(found.len(), 1, "{found:?}");
        let text = clean_with("relay", r#"ports = "50000-50099""#);
        assert!(matching(&text, "relay.ports").is_empty());
    }

    #[test]
    fn default_realm_with_users() {
        let users = "\n[[auth.users]]\nname = \"alice\"\npassword = \"hunter2-hunter2\"\n";
        let text = "[auth]\nsecrets = [\"correct-horse-battery-staple-42\"]\n".to_string() + users;
        let found = matching(&text, "server.realm");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(!found[0].contains("hunter2"));
        assert!(matching(&(CLEAN.to_string() + users), "server.realm").is_empty());
        assert!(matching("[relay]\nips = [\"1.2.3.4\"]\n", "server.realm").is_empty());
    }

    #[test]
    fn no_users_and_no_secrets() {
        let text = clean_with("auth", "secrets = []");
        assert_eq!(matching(&text, "generated at each start").len(), 1);
        let users = "\n[[auth.users]]\nname = \"alice\"\npassword = \"pw\"\n";
        assert!(matching(&(text + users), "generated").is_empty());
    }

    #[test]
    fn short_secret_and_nonce_key_are_named_but_not_shown() {
        let text = clean_with(
            "auth",
            r#"secrets = ["long-enough-secret-123", "tooshort"]"#,
        ) + "\nnonce_key = \"tiny\"\n";
        let found = matching(&text, "shorter than 16 bytes");
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("auth.secrets entry #2 "), "{found:?}");
        assert!(found[1].starts_with("auth.nonce_key "), "{found:?}");
        assert!(
            lints(&text)
                .iter()
                .all(|w| !w.contains("tooshort") && !w.contains("tiny"))
        );
        let text = CLEAN.to_string() + "nonce_key = \"0123456789abcdef\"\n";
        assert!(matching(&text, "shorter").is_empty());
    }

    #[test]
    fn denied_range_covering_own_addresses() {
        let text = clean_with(
            "peers",
            r#"denied = ["10.0.0.0/24", "1.2.3.4/32", "8.8.8.0/24"]"#,
        );
        let found = matching(&text, "peers.denied covers");
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("10.0.0.5") && found[1].contains("1.2.3.4"));
        // A more specific allow wins over the deny, so nothing is blocked.
        let text =
            CLEAN.to_string() + "[peers]\ndenied = [\"10.0.0.0/8\"]\nallowed = [\"10.0.0.5/32\"]\n";
        assert!(matching(&text, "peers.denied").is_empty());
    }

    #[test]
    fn allowed_internal_ranges_are_flagged() {
        let text = clean_with(
            "peers",
            r#"allowed = ["0.0.0.0/0", "10.1.0.0/16", "8.8.8.0/24"]"#,
        );
        let found = matching(&text, "peers.allowed entry");
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].contains("0.0.0.0/0 re-opens loopback"),
            "{found:?}"
        );
        assert!(found[0].contains("169.254.169.254"), "{found:?}");
        assert!(found[1].contains("10.1.0.0/16 re-opens RFC 1918 private"));
        for net in [
            "169.254.169.254/32",
            "::1/128",
            "fd00::/8",
            "fe80::/64",
            "::/0",
        ] {
            let text = clean_with("peers", &format!("allowed = [{net:?}]"));
            assert_eq!(matching(&text, "peers.allowed").len(), 1, "{net}");
        }
        let text = clean_with("peers", r#"allowed = ["100.64.0.0/10", "2002::/16"]"#);
        assert!(matching(&text, "peers.allowed").is_empty());
    }

    #[test]
    fn port_443_without_tls_and_proxy_headers_from_anywhere() {
        let plain_443 = clean_with("server", "listen = [\"0.0.0.0:443\"]");
        assert_eq!(matching(&plain_443, "TLS is off").len(), 1);
        let anywhere = clean_with(
            "server",
            "proxy_protocol_from = [\"0.0.0.0/0\", \"::/0\", \"10.0.0.0/24\"]",
        );
        assert_eq!(matching(&anywhere, "(nearly) anywhere").len(), 2);
        assert!(lints(CLEAN).is_empty(), "{:?}", lints(CLEAN));
    }
}
