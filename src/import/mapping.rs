//! coturn options to tern settings.
//!
//! The mapping is deliberately conservative: an option becomes a tern key only when the
//! meaning is the same. Everything else is reported with a reason, so the operator sees
//! what they lose instead of discovering it in production. The output is TOML text
//! written by hand (not serialized) so that each key can carry a comment naming the
//! coturn option it came from.

use ipnet::IpNet;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::cidr::parse_peer_spec;
use super::coturn_conf::Entry;
use super::refusal::Refusal;
use crate::auth::LongTermKey;
use crate::config::{ExternalIp, PortRange};

/// coturn's default ports, used when only the addresses are given.
const COTURN_PORT: u16 = 3478;
const COTURN_TLS_PORT: u16 = 5349;
/// tern's longest timer (see `config::Seconds`).
const MAX_SECONDS: u64 = 86_400;
/// tern's default allocation lifetime; must not exceed `relay.max_lifetime`.
const TERN_DEFAULT_LIFETIME: u64 = 600;

/// A coturn option that did not become a tern key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmapped {
    pub line: usize,
    pub option: String,
    /// One line; never contains the value of a secret-bearing option.
    pub reason: String,
}

impl std::fmt::Display for Unmapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.option, self.reason)
    }
}

/// The result of a conversion: tern TOML text and what was left behind.
#[derive(Debug, Clone)]
pub struct Conversion {
    pub toml: String,
    pub unmapped: Vec<Unmapped>,
}

/// A single-valued option: the last occurrence wins, as in coturn.
type Single<T> = Option<(T, usize)>;

/// A static user's long-term secret as coturn wrote it.
enum Secret {
    Password(String),
    /// Lowercase hex of the 16-byte key, from coturn's `0x` form.
    Key(String),
}

/// Everything read from the coturn file, before the TOML is written.
#[derive(Default)]
struct Collected {
    listening_ips: Vec<(IpAddr, usize)>,
    listening_port: Single<u16>,
    tls_port: Single<u16>,
    relay_ips: Vec<(IpAddr, usize)>,
    external_ips: Vec<(ExternalIp, usize)>,
    min_port: Single<u16>,
    max_port: Single<u16>,
    realm: Single<String>,
    users: Vec<(String, Secret, usize)>,
    use_auth_secret: Option<usize>,
    secrets: Vec<(String, usize)>,
    rest_separator: Single<char>,
    stale_nonce: Single<u64>,
    max_lifetime: Single<u64>,
    channel_lifetime: Single<u64>,
    permission_lifetime: Single<u64>,
    user_quota: Single<usize>,
    total_quota: Single<usize>,
    max_bps: Single<u64>,
    bps_capacity: Single<u64>,
    relay_threads: Single<usize>,
    denied: Vec<(IpNet, usize)>,
    allowed: Vec<(IpNet, usize)>,
    allow_loopback: Option<usize>,
    cert: Single<String>,
    pkey: Single<String>,
    no_tls: Option<usize>,
    no_dtls: Option<usize>,
    no_udp: Option<usize>,
    no_tcp: Option<usize>,
    stun_only: Option<usize>,
    no_stun: Option<usize>,
    alt_port: Single<u16>,
    no_rfc5780: Option<usize>,
    unmapped: Vec<Unmapped>,
}

/// Converts parsed coturn entries to tern TOML. `source` names the input in the header.
pub fn convert(entries: &[Entry], source: &str) -> Conversion {
    let mut c = Collected::default();
    for entry in entries {
        if let Err(reason) = c.take(entry) {
            c.skip(entry, reason);
        }
    }
    let toml = c.render(source);
    let mut unmapped = c.unmapped;
    unmapped.sort_by_key(|u| u.line);
    Conversion { toml, unmapped }
}

/// Options whose value is (or may contain) a credential: their values never reach
/// stderr or the comments, only the keys the operator asked for.
fn is_sensitive(name: &str) -> bool {
    matches!(
        name,
        "user"
            | "static-auth-secret"
            | "cli-password"
            | "pkey-pwd"
            | "secret-key-file"
            | "userdb"
            | "oauth"
    ) || name.ends_with("-userdb")
        || name.ends_with("-statsdb")
        || name.contains("password")
        || name.contains("secret")
}

/// Why a known coturn option has no tern equivalent; `None` for unknown options.
fn unsupported_reason(name: &str) -> Option<&'static str> {
    let reason = match name {
        "alt-tls-listening-port" => {
            "tern's NAT behaviour discovery (RFC 5780) answers over UDP only"
        }
        "response-origin-only-with-rfc5780" => {
            "not needed: tern sends RESPONSE-ORIGIN only with NAT discovery on"
        }
        "no-stun-backward-compatibility" => {
            "not needed: tern answers RFC 5389/8489 STUN only (messages without the magic cookie are ignored)"
        }
        "no-auth" => {
            "refused for security: an open relay lets anyone relay traffic through this host; tern always requires credentials"
        }
        "lt-cred-mech" => "not needed: tern always uses the long-term credential mechanism",
        "no-multicast-peers" | "no-loopback-peers" => {
            "not needed: tern denies multicast, loopback and other special-purpose peers by default"
        }
        "no-software-attribute" => {
            "not needed: tern sends no SOFTWARE attribute unless server.software is set"
        }
        "no-tlsv1" | "no-tlsv1_1" => "not needed: tern accepts TLS 1.2 and 1.3 only",
        "no-tlsv1_2" => "tern accepts TLS 1.2 and 1.3; TLS 1.2 cannot be switched off",
        "fingerprint" => "not needed: tern always adds FINGERPRINT when the request has it",
        "mobility" => "tern does not implement MOBILITY-TICKET (RFC 8016)",
        "cipher-list" | "ec-curve-name" | "dh566" | "dh1066" | "dh2066" | "dh-file" => {
            "tern's TLS (rustls) uses fixed modern cipher suites and curves"
        }
        "pkey-pwd" => "encrypted private keys are not supported; decrypt the key file",
        "ca-file" => "client certificates are not checked by tern",
        "verbose"
        | "Verbose"
        | "log-file"
        | "syslog"
        | "syslog-facility"
        | "simple-log"
        | "new-log-timestamp"
        | "new-log-timestamp-format"
        | "no-stdout-log"
        | "log-binding" => "tern logs to stderr/journald; set log.level and log.format instead",
        "pidfile" => "tern runs in the foreground; systemd tracks its PID",
        "proc-user" | "proc-group" => "run tern as a dedicated user with systemd User=/Group=",
        "no-cli" => "not needed: tern has no telnet admin CLI",
        "web-admin" | "web-admin-ip" | "web-admin-port" | "web-admin-listen-on-workers" => {
            "tern has no web admin interface"
        }
        "userdb" | "secret-key-file" => {
            "database user stores are not supported; use static users or REST secrets"
        }
        "prometheus" | "prometheus-port" | "prometheus-username-labels" => {
            "coturn's exporter settings are not carried over; configure tern's own metrics listener"
        }
        "listening-device" | "relay-device" => {
            "binding to a device is not supported; list the addresses with server.listen and relay.ips"
        }
        "alternate-server" | "tls-alternate-server" => {
            "static alternate-server lists are not supported; a tern fleet ([cluster], docs/fleet.md) redirects Allocates with 300 Try Alternate to another node while draining or over redirect_above_allocations / redirect_above_mbps"
        }
        "aux-server" | "udp-self-balance" => {
            "auxiliary servers and self-balancing are not supported"
        }
        "server-name" => "tern has no server name; the realm is server.realm",
        "secure-stun" => "authenticated STUN Binding is not supported",
        "server-relay" => "server relay mode is not supported",
        "no-udp-relay" => "tern always offers UDP relaying (RFC 8656)",
        "no-tcp-relay" => {
            "not needed: tern serves TCP allocations (RFC 6062) only with relay.tcp_allocations = true"
        }
        "oauth" => "OAuth third-party authorization (RFC 7635) is not supported",
        "check-origin-consistency" => "ORIGIN checks are not supported",
        "acme-redirect" => {
            "not carried over: tern obtains and renews its certificate itself with [tls.acme] (TLS-ALPN-01 on 443, or HTTP-01 on tls.acme.http01_listen)"
        }
        "max-allocate-timeout" => "allocation setup timeouts are fixed in tern",
        "tcp-proxy-port" => {
            "not carried over: coturn believes PROXY headers from anyone on that port; tern takes them on a listener with proxy_protocol = true, from server.proxy_protocol_from only: set both by hand"
        }
        "keep-address-family" | "allocation-default-address-family" => {
            "tern follows RFC 6156: the relayed address is IPv4 unless the Allocate asks for IPv6 with REQUESTED-ADDRESS-FAMILY, whatever family the client connects over"
        }
        "sha256" | "sha384" | "sha512" => {
            "tern offers SHA-256 keys and MESSAGE-INTEGRITY-SHA256 with auth.rfc8489 = true, beside MD5 for RFC 5389 clients (browsers); it cannot require them"
        }
        _ if name.starts_with("cli-") => "tern has no telnet admin CLI",
        _ if name.starts_with("redis-")
            || name.starts_with("psql-")
            || name.starts_with("mysql-")
            || name.starts_with("mongo-") =>
        {
            "database user stores are not supported; use static users or REST secrets"
        }
        _ => return None,
    };
    Some(reason)
}

impl Collected {
    /// Records `entry` into the fields, or says why it cannot be mapped.
    fn take(&mut self, e: &Entry) -> Result<(), Refusal> {
        let line = e.line;
        match e.name.as_str() {
            "listening-port" => set(&mut self.listening_port, port(e)?, e, &mut self.unmapped),
            "tls-listening-port" => set(&mut self.tls_port, port(e)?, e, &mut self.unmapped),
            "listening-ip" => self.listening_ips.push((ip(e)?, line)),
            "relay-ip" => {
                let addr = ip(e)?;
                if addr.is_unspecified() || addr.is_multicast() {
                    return Err(Refusal::UnusableRelayAddress(addr));
                }
                self.relay_ips.push((addr, line));
            }
            "external-ip" => self.external_ips.push((external_ip(value(e)?)?, line)),
            "min-port" => set(&mut self.min_port, port(e)?, e, &mut self.unmapped),
            "max-port" => set(&mut self.max_port, port(e)?, e, &mut self.unmapped),
            "realm" => {
                let realm = value(e)?;
                if realm.len() > 127 {
                    return Err(Refusal::RealmTooLong);
                }
                set(&mut self.realm, realm.to_string(), e, &mut self.unmapped);
            }
            "user" => {
                let (name, secret) = user(value(e)?)?;
                // coturn keeps one account per name: the last line wins.
                if let Some(i) = self.users.iter().position(|u| u.0 == name) {
                    let (_, _, old) = self.users.remove(i);
                    self.unmapped.push(Unmapped {
                        line: old,
                        option: e.name.clone(),
                        reason: format!(
                            "the same user name is given again on line {line} (the last one counts, as in coturn)"
                        ),
                    });
                }
                self.users.push((name, secret, line));
            }
            "use-auth-secret" => self.use_auth_secret = Some(line),
            "static-auth-secret" => self.secrets.push((value(e)?.to_string(), line)),
            "rest-api-separator" => {
                let v = value(e)?;
                let mut chars = v.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) if !c.is_ascii_digit() => {
                        set(&mut self.rest_separator, c, e, &mut self.unmapped);
                    }
                    _ => return Err(Refusal::BadSeparator),
                }
            }
            "stale-nonce" => {
                // Bare `stale-nonce` switches coturn's nonce expiry on with 600 s.
                let secs = match &e.value {
                    None => 600,
                    Some(_) => seconds(e)?,
                };
                set(&mut self.stale_nonce, secs, e, &mut self.unmapped);
            }
            "max-allocate-lifetime" => {
                set(&mut self.max_lifetime, seconds(e)?, e, &mut self.unmapped);
            }
            "channel-lifetime" => {
                set(
                    &mut self.channel_lifetime,
                    seconds(e)?,
                    e,
                    &mut self.unmapped,
                );
            }
            "permission-lifetime" => {
                set(
                    &mut self.permission_lifetime,
                    seconds(e)?,
                    e,
                    &mut self.unmapped,
                );
            }
            "user-quota" => set(&mut self.user_quota, quota(e)?, e, &mut self.unmapped),
            "total-quota" => set(&mut self.total_quota, quota(e)?, e, &mut self.unmapped),
            "max-bps" => set(&mut self.max_bps, bytes_per_sec(e)?, e, &mut self.unmapped),
            "bps-capacity" => {
                set(
                    &mut self.bps_capacity,
                    bytes_per_sec(e)?,
                    e,
                    &mut self.unmapped,
                );
            }
            "relay-threads" => {
                let n: usize = number(e)?;
                if !(1..=1024).contains(&n) {
                    return Err(Refusal::WorkersOutOfRange);
                }
                set(&mut self.relay_threads, n, e, &mut self.unmapped);
            }
            "denied-peer-ip" => {
                let nets = parse_peer_spec(value(e)?)?;
                self.denied.extend(nets.into_iter().map(|n| (n, line)));
            }
            "allowed-peer-ip" => {
                let nets = parse_peer_spec(value(e)?)?;
                self.allowed.extend(nets.into_iter().map(|n| (n, line)));
            }
            "allow-loopback-peers" => self.allow_loopback = Some(line),
            "cert" => set(&mut self.cert, value(e)?.to_string(), e, &mut self.unmapped),
            "pkey" => set(&mut self.pkey, value(e)?.to_string(), e, &mut self.unmapped),
            "no-tls" => self.no_tls = Some(line),
            "no-dtls" => self.no_dtls = Some(line),
            "no-udp" => self.no_udp = Some(line),
            "no-tcp" => self.no_tcp = Some(line),
            "stun-only" => self.stun_only = Some(line),
            "no-stun" => self.no_stun = Some(line),
            "alt-listening-port" => set(&mut self.alt_port, port(e)?, e, &mut self.unmapped),
            "no-rfc5780" => self.no_rfc5780 = Some(line),
            name => {
                return Err(Refusal::Unsupported(
                    unsupported_reason(name).unwrap_or("unknown option"),
                ));
            }
        }
        Ok(())
    }

    /// Reports `entry` as unmapped, scrubbing the value of secret-bearing options.
    fn skip(&mut self, e: &Entry, refusal: Refusal) {
        let reason = refusal.to_string();
        let reason = match (&e.value, is_sensitive(&e.name)) {
            (Some(v), true) => scrub(&reason, v),
            _ => reason,
        };
        self.unmapped.push(Unmapped {
            line: e.line,
            option: e.name.clone(),
            reason,
        });
    }

    fn drop_option(&mut self, line: usize, option: &str, reason: &str) {
        self.unmapped.push(Unmapped {
            line,
            option: option.to_string(),
            reason: reason.to_string(),
        });
    }

    /// Writes the TOML, deciding the options that only make sense together.
    fn render(&mut self, source: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# tern config imported from coturn's {source} by `tern import-coturn`.\n\
             # Keys not set here keep tern's defaults (documented in tern.toml).\n\
             # Each key names the coturn option(s) it came from."
        );
        self.render_server(&mut out);
        self.render_nat_discovery(&mut out);
        self.render_relay(&mut out);
        self.render_auth(&mut out);
        self.render_peers(&mut out);
        self.render_tls(&mut out);
        self.render_limits(&mut out);
        self.render_bandwidth(&mut out);
        if !self.unmapped.is_empty() {
            self.unmapped.sort_by_key(|u| u.line);
            out.push_str("\n# coturn options not carried over:\n");
            for u in &self.unmapped {
                let _ = writeln!(out, "#   {}", u.to_string().replace('\n', " "));
            }
        }
        out
    }

    /// Whether TLS will be served: a certificate and key, and no `no-tls`.
    /// coturn's UDP/TCP listening port (`listening-port`, 3478 when unset).
    fn udp_port(&self) -> u16 {
        self.listening_port.map_or(COTURN_PORT, |(p, _)| p)
    }

    fn tls_enabled(&self) -> bool {
        self.cert.is_some() && self.pkey.is_some() && self.no_tls.is_none()
    }

    /// What every listener serves, from `stun-only` or `no-stun` (both together would
    /// serve nothing: both are dropped, with the reason).
    fn serve(&mut self) -> Option<&'static str> {
        match (self.stun_only, self.no_stun) {
            (Some(a), Some(b)) => {
                let reason = "ignored: stun-only and no-stun together would serve nothing";
                self.drop_option(a, "stun-only", reason);
                self.drop_option(b, "no-stun", reason);
                None
            }
            (Some(_), None) => Some("stun"),
            (None, Some(_)) => Some("turn"),
            (None, None) => None,
        }
    }

    /// coturn serves DTLS on the TLS port(s) unless `no-dtls`; tern only where
    /// `dtls_listen` says, so the addresses are written out. A TLS port that is also the
    /// UDP port cannot be: coturn tells DTLS from STUN on one socket, tern does not.
    fn render_dtls(
        &mut self,
        out: &mut String,
        ips: &[IpAddr],
        port: u16,
        serve: Option<&str>,
        from_ips: &str,
    ) {
        if self.no_dtls.is_some() {
            return;
        }
        let udp_port = self.udp_port();
        if port == udp_port && self.no_udp.is_none() {
            let reason = "DTLS not carried over: tern serves DTLS on a UDP port of its own, not on listening-port";
            match (self.tls_port, self.listening_port) {
                (Some((_, l)), _) => self.drop_option(l, "tls-listening-port", reason),
                (None, Some((_, l))) => self.drop_option(l, "listening-port", reason),
                (None, None) => {}
            }
            return;
        }
        let _ = writeln!(
            out,
            "# coturn: DTLS on tls-listening-port{from_ips} (no-dtls turns it off)"
        );
        let _ = writeln!(out, "dtls_listen = {}", listeners(ips, port, serve));
    }

    fn render_server(&mut self, dest: &mut String) {
        let mut body = String::new();
        let out = &mut body;
        let ips: Vec<IpAddr> = if self.listening_ips.is_empty() {
            vec![
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ]
        } else {
            self.listening_ips.iter().map(|&(ip, _)| ip).collect()
        };
        let mut from = if self.listening_ips.is_empty() {
            String::new()
        } else {
            ", listening-ip".to_string()
        };
        let serve = self.serve();
        if let Some(role) = serve {
            from += if role == "stun" {
                ", stun-only"
            } else {
                ", no-stun"
            };
        }
        let from_ips = from.as_str();
        if !self.listening_ips.is_empty() || self.listening_port.is_some() || serve.is_some() {
            let port = self.udp_port();
            let _ = writeln!(out, "# coturn: listening-port{from_ips}");
            let _ = writeln!(out, "listen = {}", listeners(&ips, port, serve));
        }
        if self.no_tls.is_some() {
            out.push_str("# coturn: no-tls\ntls_listen = []\n");
            if let Some((_, l)) = self.tls_port {
                self.drop_option(l, "tls-listening-port", "ignored: no-tls is set");
            }
        } else if self.tls_enabled() {
            let port = self.tls_port.map_or(COTURN_TLS_PORT, |(p, _)| p);
            if !self.listening_ips.is_empty() || self.tls_port.is_some() || serve.is_some() {
                let _ = writeln!(out, "# coturn: tls-listening-port{from_ips}");
                let _ = writeln!(out, "tls_listen = {}", listeners(&ips, port, serve));
            }
            self.render_dtls(out, &ips, port, serve, from_ips);
        } else if let Some((_, l)) = self.tls_port {
            self.drop_option(
                l,
                "tls-listening-port",
                "tern serves TLS only with a certificate and key (cert and pkey)",
            );
        }
        let tcp_off = self.no_tcp.is_some();
        let udp_off = self.no_udp.is_some();
        if tcp_off && udp_off && !self.tls_enabled() {
            let reason = "ignored: with no-udp and no-tcp and no TLS, tern would serve nothing";
            for (opt, l) in [("no-udp", self.no_udp), ("no-tcp", self.no_tcp)] {
                if let Some(l) = l {
                    self.drop_option(l, opt, reason);
                }
            }
        } else {
            if udp_off {
                out.push_str("# coturn: no-udp\nudp = false\n");
            }
            if tcp_off {
                out.push_str("# coturn: no-tcp (TLS listeners are not affected)\ntcp = false\n");
            }
        }
        if let Some((n, _)) = self.relay_threads {
            let _ = writeln!(out, "# coturn: relay-threads\nworkers = {n}");
        }
        if let Some((realm, _)) = &self.realm {
            let _ = writeln!(out, "# coturn: realm\nrealm = {}", quote(realm));
        }
        section(dest, "server", &body);
    }

    /// coturn answers RFC 5780 NAT discovery whenever it listens on two IPs (unless
    /// `no-rfc5780`), on `listening-port` and `alt-listening-port` (by default the next
    /// port): tern does the same on the first two listening IPs of one family.
    fn render_nat_discovery(&mut self, dest: &mut String) {
        let ips: Vec<IpAddr> = self.listening_ips.iter().map(|&(ip, _)| ip).collect();
        let pair = ips.iter().enumerate().find_map(|(i, a)| {
            let b = ips[i + 1..]
                .iter()
                .find(|b| b.is_ipv4() == a.is_ipv4() && *b != a)?;
            Some([*a, *b])
        });
        let port = self.udp_port();
        let alt = self.alt_port.map(|(p, _)| p).or(port.checked_add(1));
        let target = pair.zip(alt.filter(|&alt| alt != port));
        let why = if self.no_rfc5780.is_some() {
            "no-rfc5780 is set"
        } else if self.no_udp.is_some() {
            "no-udp is set, and NAT discovery answers over UDP"
        } else if self.no_stun.is_some() {
            "no-stun is set, and every listener would ignore Binding"
        } else if !self.external_ips.is_empty() {
            "external-ip is set: discovery would name the private listening-ip addresses"
        } else if let Some(([a, b], alt)) = target {
            let _ = write!(
                dest,
                "\n[server.nat_discovery]\n\
                 # coturn: two listening-ip (RFC 5780 is on with two), listening-port, alt-listening-port\n\
                 ips = [\"{a}\", \"{b}\"]\nports = [{port}, {alt}]\n"
            );
            return;
        } else {
            "NAT discovery needs two listening-ip of one family and a second port"
        };
        if let Some((_, l)) = self.alt_port {
            self.drop_option(l, "alt-listening-port", &format!("ignored: {why}"));
        }
    }

    fn render_relay(&mut self, dest: &mut String) {
        let mut body = String::new();
        let out = &mut body;
        if !self.relay_ips.is_empty() {
            let ips: Vec<String> = self
                .relay_ips
                .iter()
                .map(|(ip, _)| ip.to_string())
                .collect();
            let _ = writeln!(out, "# coturn: relay-ip\nips = {}", list(&ips));
        }
        if !self.external_ips.is_empty() {
            let ips: Vec<String> = self
                .external_ips
                .iter()
                .map(|(e, _)| match e.private {
                    Some(private) => format!("{private}={}", e.public),
                    None => e.public.to_string(),
                })
                .collect();
            let _ = writeln!(
                out,
                "# coturn: external-ip (coturn's PUBLIC/PRIVATE is written PRIVATE=PUBLIC)\nexternal_ips = {}",
                list(&ips)
            );
        }
        if self.min_port.is_some() || self.max_port.is_some() {
            // coturn's defaults are tern's: 49152-65535.
            let min = self.min_port.map_or(49152, |(p, _)| p);
            let max = self.max_port.map_or(65535, |(p, _)| p);
            match PortRange::new(min, max) {
                Ok(range) => {
                    let _ = writeln!(out, "# coturn: min-port, max-port\nports = \"{range}\"");
                }
                Err(e) => {
                    for (opt, v) in [("min-port", self.min_port), ("max-port", self.max_port)] {
                        if let Some((_, l)) = v {
                            self.drop_option(l, opt, &e);
                        }
                    }
                }
            }
        }
        if let Some((secs, _)) = self.max_lifetime {
            let _ = writeln!(
                out,
                "# coturn: max-allocate-lifetime\nmax_lifetime = {secs}"
            );
            if secs < TERN_DEFAULT_LIFETIME {
                let _ = writeln!(
                    out,
                    "# tern's default lifetime (600 s) may not exceed max_lifetime\ndefault_lifetime = {secs}"
                );
            }
        }
        if let Some((secs, _)) = self.permission_lifetime {
            let _ = writeln!(
                out,
                "# coturn: permission-lifetime\npermission_lifetime = {secs}"
            );
        }
        if let Some((secs, _)) = self.channel_lifetime {
            let _ = writeln!(out, "# coturn: channel-lifetime\nchannel_lifetime = {secs}");
        }
        section(dest, "relay", &body);
    }

    fn render_auth(&mut self, dest: &mut String) {
        let mut body = String::new();
        let out = &mut body;
        if !self.secrets.is_empty() {
            let secrets: Vec<String> = self.secrets.iter().map(|(s, _)| s.clone()).collect();
            let note = if self.use_auth_secret.is_some() {
                "use-auth-secret, static-auth-secret"
            } else {
                "static-auth-secret (tern accepts REST credentials whenever secrets are set)"
            };
            let _ = writeln!(
                out,
                "# coturn: {note}; the first secret signs, all are accepted\nsecrets = {}",
                list(&secrets)
            );
        } else if let Some(l) = self.use_auth_secret {
            self.drop_option(
                l,
                "use-auth-secret",
                "no static-auth-secret given: secrets kept in a database are not supported; add the secret to auth.secrets",
            );
        }
        if let Some((c, _)) = self.rest_separator {
            let _ = writeln!(
                out,
                "# coturn: rest-api-separator\nrest_separator = {}",
                quote(&c.to_string())
            );
        }
        if let Some((secs, _)) = self.stale_nonce {
            let _ = writeln!(out, "# coturn: stale-nonce\nnonce_lifetime = {secs}");
        }
        for (name, secret, _) in &self.users {
            let _ = writeln!(
                out,
                "\n# coturn: user\n[[auth.users]]\nname = {}",
                quote(name)
            );
            match secret {
                Secret::Password(p) => {
                    let _ = writeln!(out, "password = {}", quote(p));
                }
                Secret::Key(k) => {
                    let _ = writeln!(
                        out,
                        "# coturn's 0x key: MD5 of name:realm:password, valid only with the same realm\nkey = {}",
                        quote(k)
                    );
                }
            }
        }
        section(dest, "auth", &body);
    }

    fn render_peers(&mut self, dest: &mut String) {
        let mut body = String::new();
        let out = &mut body;
        let mut allowed: Vec<String> = self.allowed.iter().map(|(n, _)| n.to_string()).collect();
        if !allowed.is_empty() {
            out.push_str("# coturn: allowed-peer-ip (ranges written as CIDR blocks)\n");
        }
        if self.allow_loopback.is_some() {
            out.push_str(
                "# coturn: allow-loopback-peers\n\
                 # WARNING: clients can reach services listening on this host's loopback\n\
                 # interface through the relay. Remove these unless that is intended.\n",
            );
            for net in ["127.0.0.0/8", "::1/128"] {
                if !allowed.iter().any(|a| a == net) {
                    allowed.push(net.to_string());
                }
            }
        }
        if !allowed.is_empty() {
            let _ = writeln!(out, "allowed = {}", list(&allowed));
        }
        if !self.denied.is_empty() {
            let denied: Vec<String> = self.denied.iter().map(|(n, _)| n.to_string()).collect();
            let _ = writeln!(
                out,
                "# coturn: denied-peer-ip (ranges written as CIDR blocks; tern also denies\n\
                 # private, loopback, link-local and multicast peers by default)\ndenied = {}",
                list(&denied)
            );
        }
        section(dest, "peers", &body);
    }

    fn render_tls(&mut self, dest: &mut String) {
        let mut body = String::new();
        let out = &mut body;
        match (&self.cert, &self.pkey) {
            (Some((cert, _)), Some((key, _))) if self.no_tls.is_none() => {
                let _ = writeln!(out, "# coturn: cert\ncert = {}", quote(cert));
                let _ = writeln!(out, "# coturn: pkey\nkey = {}", quote(key));
            }
            (cert, key) => {
                let reason = if self.no_tls.is_some() {
                    "ignored: no-tls is set"
                } else {
                    "tern needs both cert and pkey to serve TLS"
                };
                let lines = [
                    ("cert", cert.as_ref().map(|c| c.1)),
                    ("pkey", key.as_ref().map(|k| k.1)),
                ];
                for (opt, l) in lines {
                    if let Some(l) = l {
                        self.drop_option(l, opt, reason);
                    }
                }
            }
        }
        section(dest, "tls", &body);
    }

    fn render_limits(&mut self, dest: &mut String) {
        let mut body = String::new();
        let out = &mut body;
        if let Some((n, _)) = self.total_quota {
            let _ = writeln!(out, "# coturn: total-quota\ntotal_allocations = {n}");
        }
        if let Some((n, _)) = self.user_quota {
            let _ = writeln!(out, "# coturn: user-quota\nuser_allocations = {n}");
        }
        section(dest, "limits", &body);
    }

    /// coturn's bandwidth options are bytes per second, each direction on its own, as
    /// tern's; a number in tern's config means the same.
    fn render_bandwidth(&mut self, dest: &mut String) {
        let mut body = String::new();
        let out = &mut body;
        if let Some((n, _)) = self.max_bps {
            let _ = writeln!(
                out,
                "# coturn: max-bps (bytes/s per allocation, each direction)\nallocation = {n}"
            );
        }
        if let Some((n, _)) = self.bps_capacity {
            let _ = writeln!(
                out,
                "# coturn: bps-capacity. coturn sets max-bps aside from it for each allocation\n\
                 # and refuses allocations once it is taken; tern shares it live between the\n\
                 # allocations relaying now (bytes/s, each direction)\nserver = {n}"
            );
        }
        section(dest, "bandwidth", &body);
    }
}

/// Writes `[name]` and its keys, or nothing when no key was set (no empty tables).
fn section(dest: &mut String, name: &str, body: &str) {
    if body.is_empty() {
        return;
    }
    // `[[auth.users]]` tables follow the `[auth]` keys; they need no `[auth]` header.
    if !body.starts_with('\n') {
        let _ = write!(dest, "\n[{name}]\n");
    }
    dest.push_str(body);
}

/// Stores a single-valued option; an earlier occurrence is reported as overridden.
fn set<T>(slot: &mut Single<T>, value: T, e: &Entry, unmapped: &mut Vec<Unmapped>) {
    if let Some((_, old)) = slot.replace((value, e.line)) {
        unmapped.push(Unmapped {
            line: old,
            option: e.name.clone(),
            reason: format!(
                "overridden by line {} (the last one counts, as in coturn)",
                e.line
            ),
        });
    }
}

fn value(e: &Entry) -> Result<&str, Refusal> {
    e.value.as_deref().ok_or(Refusal::NoValue)
}

fn number<T: std::str::FromStr>(e: &Entry) -> Result<T, Refusal> {
    let v = value(e)?;
    v.parse().map_err(|_| Refusal::NotANumber(v.to_string()))
}

fn port(e: &Entry) -> Result<u16, Refusal> {
    let p: u16 = number(e)?;
    if p == 0 {
        return Err(Refusal::PortZero);
    }
    Ok(p)
}

fn ip(e: &Entry) -> Result<IpAddr, Refusal> {
    let v = value(e)?;
    v.parse().map_err(|_| Refusal::NotAnAddress(v.to_string()))
}

/// A timer in seconds within tern's bounds (1 s to one day).
fn seconds(e: &Entry) -> Result<u64, Refusal> {
    let v = value(e)?;
    match v.parse::<i64>() {
        Ok(n) if n <= 0 => Err(Refusal::CoturnDefaultSeconds(n)),
        Ok(n) => match u64::try_from(n) {
            Ok(n) if n <= MAX_SECONDS => Ok(n),
            _ => Err(Refusal::TooManySeconds(n)),
        },
        Err(_) => Err(Refusal::NotSeconds(v.to_string())),
    }
}

/// An allocation quota; coturn's 0 means unlimited, which tern does not allow.
fn quota(e: &Entry) -> Result<usize, Refusal> {
    let n: usize = number(e)?;
    if n == 0 {
        return Err(Refusal::UnlimitedQuota);
    }
    Ok(n)
}

/// A coturn bandwidth in bytes per second, within what tern's `[bandwidth]` takes.
fn bytes_per_sec(e: &Entry) -> Result<u64, Refusal> {
    match number(e)? {
        0 => Err(Refusal::UnlimitedBandwidth),
        n if n < 1_000 => Err(Refusal::BandwidthTooLow(n)),
        n => Ok(n.min(12_500_000_000)),
    }
}

/// coturn's `PUBLIC` or `PUBLIC/PRIVATE` (note the order) as tern's value.
fn external_ip(v: &str) -> Result<ExternalIp, Refusal> {
    let tern_form = match v.split_once('/') {
        Some((public, private)) => format!("{}={}", private.trim(), public.trim()),
        None => v.trim().to_string(),
    };
    tern_form.parse().map_err(Refusal::ExternalAddress)
}

/// `NAME:PASSWORD` or `NAME:0xHEXKEY`. Errors never quote the value (it is a secret).
fn user(v: &str) -> Result<(String, Secret), Refusal> {
    let (name, secret) = v.split_once(':').ok_or(Refusal::NotAUser)?;
    if name.is_empty() || secret.is_empty() {
        return Err(Refusal::EmptyUserPart);
    }
    let hex = secret
        .strip_prefix("0x")
        .or_else(|| secret.strip_prefix("0X"));
    match hex {
        Some(hex) => {
            let hex = hex.to_ascii_lowercase();
            LongTermKey::from_hex(&hex).map_err(|_| Refusal::NotAKey)?;
            Ok((name.to_string(), Secret::Key(hex)))
        }
        None => Ok((name.to_string(), Secret::Password(secret.to_string()))),
    }
}

/// Every `ip` with `port`, as a TOML array of "IP:PORT" strings, or of listener tables
/// with `serve` when it is given.
fn listeners(ips: &[IpAddr], port: u16, serve: Option<&str>) -> String {
    let addrs: Vec<String> = ips
        .iter()
        .map(|&ip| SocketAddr::new(ip, port).to_string())
        .collect();
    match serve {
        None => list(&addrs),
        Some(role) => {
            let tables: Vec<String> = addrs
                .iter()
                .map(|a| format!("{{ addr = {}, serve = {} }}", quote(a), quote(role)))
                .collect();
            format!("[{}]", tables.join(", "))
        }
    }
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// A TOML basic string: quotes, backslashes and control characters escaped.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Removes a secret value from a message, should a reason ever quote it.
fn scrub(reason: &str, secret: &str) -> String {
    let mut reason = reason.to_string();
    for part in std::iter::once(secret).chain(secret.split(':')) {
        if part.len() >= 3 {
            reason = reason.replace(part, "<hidden>");
        }
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::import::coturn_conf::parse;

    fn run(text: &str) -> (Settings, Vec<Unmapped>, String) {
        let c = convert(&parse(text), "test.conf");
        let s =
            Settings::from_toml(&c.toml, "generated").unwrap_or_else(|e| panic!("{e}\n{}", c.toml));
        (s, c.unmapped, c.toml)
    }

    #[test]
    fn quote_escapes() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quote("x\u{1}"), "\"x\\u0001\"");
    }

    #[test]
    fn listening_ip_without_port_uses_3478() {
        let (s, _, _) = run("listening-ip=10.0.0.5\nlistening-ip=2001:db8::5\n");
        let addrs: Vec<String> = s.server.listen.iter().map(|l| l.addr.to_string()).collect();
        assert_eq!(addrs, ["10.0.0.5:3478", "[2001:db8::5]:3478"]);
    }

    #[test]
    fn two_listening_ips_of_a_family_turn_nat_discovery_on_as_in_coturn() {
        let (s, unmapped, _) = run(
            "listening-ip=10.0.0.5\nlistening-ip=2001:db8::5\nlistening-ip=10.0.0.6\nlistening-port=3480\n",
        );
        assert!(unmapped.is_empty(), "{unmapped:?}");
        let d = s.server.nat_discovery.expect("nat discovery on");
        assert_eq!(d.ips.map(|ip| ip.to_string()), ["10.0.0.5", "10.0.0.6"]);
        assert_eq!(d.ports, [3480, 3481]);
        let (s, _, _) =
            run("listening-ip=10.0.0.5\nlistening-ip=10.0.0.6\nalt-listening-port=4000\n");
        assert_eq!(s.server.nat_discovery.map(|d| d.ports), Some([3478, 4000]));
        let (s, unmapped, _) = run(
            "listening-ip=10.0.0.5\nlistening-ip=10.0.0.6\nno-rfc5780\nalt-listening-port=4000\n",
        );
        assert!(s.server.nat_discovery.is_none());
        assert_eq!(unmapped.len(), 1, "{unmapped:?}");
        let (s, unmapped, _) = run("listening-ip=10.0.0.5\nalt-listening-port=4000\n");
        assert!(s.server.nat_discovery.is_none());
        assert!(
            unmapped[0].reason.contains("two listening-ip"),
            "{unmapped:?}"
        );
        // What coturn would not serve RFC 5780 with, or tern could not.
        let two = "listening-ip=10.0.0.5\nlistening-ip=10.0.0.6\n";
        for (extra, why) in [
            ("no-udp\n", "no-udp"),
            ("no-stun\n", "no-stun"),
            ("external-ip=203.0.113.5\n", "external-ip"),
            ("listening-port=65535\n", "second port"),
        ] {
            let (s, unmapped, toml) = run(&format!("{two}{extra}alt-listening-port=65535\n"));
            assert!(s.server.nat_discovery.is_none(), "{extra}: {toml}");
            let alt = unmapped.iter().find(|u| u.option == "alt-listening-port");
            assert!(
                alt.is_some_and(|u| u.reason.contains(why)),
                "{extra}: {unmapped:?}"
            );
        }
    }

    #[test]
    fn stun_only_and_no_stun_become_what_every_listener_serves() {
        use crate::config::ListenerRole;
        let (s, unmapped, toml) = run("stun-only\nlistening-port=3479\n");
        assert!(unmapped.is_empty(), "{unmapped:?}");
        assert!(
            toml.contains("# coturn: listening-port, stun-only"),
            "{toml}"
        );
        assert!(
            s.server
                .listen
                .iter()
                .all(|l| l.serve == ListenerRole::Stun)
        );
        assert_eq!(s.server.listen[0].addr.to_string(), "0.0.0.0:3479");
        let (s, _, _) = run("no-stun\ncert=/c.pem\npkey=/k.pem\n");
        assert!(
            s.server
                .listen
                .iter()
                .all(|l| l.serve == ListenerRole::Turn)
        );
        assert!(
            s.server
                .tls_listen
                .iter()
                .all(|l| l.serve == ListenerRole::Turn)
        );
        let (s, unmapped, _) = run("stun-only\nno-stun\n");
        assert_eq!(unmapped.len(), 2, "{unmapped:?}");
        assert!(
            s.server
                .listen
                .iter()
                .all(|l| l.serve == ListenerRole::Both)
        );
    }

    #[test]
    fn port_without_ip_uses_both_wildcards() {
        let (s, _, _) = run("listening-port=3479\n");
        let addrs: Vec<String> = s.server.listen.iter().map(|l| l.addr.to_string()).collect();
        assert_eq!(addrs, ["0.0.0.0:3479", "[::]:3479"]);
    }

    #[test]
    fn tls_port_without_cert_is_reported() {
        let (_, unmapped, _) = run("tls-listening-port=443\n");
        assert!(unmapped.iter().any(|u| u.option == "tls-listening-port"));
    }

    #[test]
    fn short_max_lifetime_lowers_default() {
        let (s, _, _) = run("max-allocate-lifetime=300\n");
        assert_eq!(s.relay.max_lifetime.0, 300);
        assert_eq!(s.relay.default_lifetime.0, 300);
    }

    #[test]
    fn zero_quota_and_negative_lifetime_are_reported() {
        let (s, unmapped, _) = run("user-quota=0\nchannel-lifetime=-1\n");
        assert_eq!(s.limits.user_allocations, 100);
        assert_eq!(unmapped.len(), 2);
    }

    #[test]
    fn repeated_single_option_last_wins() {
        let (s, unmapped, _) = run("realm=a\nrealm=b\n");
        assert_eq!(s.server.realm, "b");
        assert_eq!(unmapped.len(), 1);
        assert_eq!(unmapped[0].line, 1);
    }

    #[test]
    fn bad_user_does_not_leak() {
        let (_, unmapped, _) = run("user=alice:0xnothexnothex\n");
        assert_eq!(unmapped.len(), 1);
        assert!(!unmapped[0].reason.contains("nothex"));
    }

    #[test]
    fn dtls_follows_the_tls_port_unless_no_dtls() {
        let (s, unmapped, toml) = run("cert=/c.pem\npkey=/k.pem\nlistening-ip=192.0.2.1\n");
        let addrs: Vec<String> = (s.server.dtls_listen.iter())
            .map(|l| l.addr.to_string())
            .collect();
        assert_eq!(addrs, ["192.0.2.1:5349"], "{toml}");
        assert!(unmapped.is_empty(), "{unmapped:?}");
        let (s, unmapped, _) = run("cert=/c.pem\npkey=/k.pem\nno-dtls\n");
        assert!(s.server.dtls_listen.is_empty());
        assert!(unmapped.is_empty(), "no-dtls is carried over: {unmapped:?}");
        let (s, _, _) = run("no-dtls\n");
        assert!(s.server.dtls_listen.is_empty(), "no certificate, no DTLS");
        let (s, unmapped, _) = run("cert=/c.pem\npkey=/k.pem\ntls-listening-port=3478\n");
        assert!(s.server.dtls_listen.is_empty());
        assert!(unmapped.iter().any(|u| u.option == "tls-listening-port"));
    }

    #[test]
    fn loopback_and_no_tls() {
        let (s, unmapped, toml) = run("allow-loopback-peers\nno-tls\ncert=/c\npkey=/k\n");
        let allowed: Vec<String> = s.peers.allowed.iter().map(ToString::to_string).collect();
        assert_eq!(allowed, ["127.0.0.0/8", "::1/128"]);
        assert!(toml.contains("WARNING"));
        assert!(s.server.tls_listen.is_empty());
        assert!(s.tls.cert.is_none());
        assert_eq!(unmapped.len(), 2);
    }

    #[test]
    fn all_transports_off_is_not_written() {
        let (s, unmapped, _) = run("no-udp\nno-tcp\n");
        assert!(s.server.udp && s.server.tcp);
        assert_eq!(unmapped.len(), 2);
    }

    #[test]
    fn repeated_user_last_wins_and_empty_tables_are_omitted() {
        let (s, unmapped, toml) = run("user=bob:pw-first\nuser=bob:two\n");
        assert_eq!(s.auth.users.len(), 1);
        assert_eq!(
            s.auth.users[0]
                .password
                .as_ref()
                .map(|p| p.expose().as_str()),
            Some("two")
        );
        assert_eq!(unmapped.len(), 1);
        assert!(!unmapped[0].reason.contains("pw-first"));
        assert!(
            !toml.contains("[tls]") && !toml.contains("[limits]"),
            "{toml}"
        );
    }
}
