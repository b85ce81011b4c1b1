//! Relay peer policy: which peer addresses a TURN client may relay to.
//!
//! This module owns one decision, [`PeerPolicy::check`], and the tables behind it:
//! the built-in default-denied ranges, the operator's `allowed`/`denied` lists and
//! the server's own relay endpoints. It is pure: no sockets, no clock, no DNS.
//!
//! What it must never do:
//! - allow by accident. Every ambiguity resolves to a denial: between operator
//!   entries of equal specificity, deny wins ties; an address that embeds IPv4 must
//!   pass both as that IPv4 and as the IPv6 address it is on the wire.
//! - let an alternate spelling of an address dodge a rule. IPv4 embedded in IPv6
//!   (mapped, compatible, NAT64 well-known prefix, 6to4) is judged as the IPv4 it
//!   carries, so `::ffff:127.0.0.1` is loopback exactly like `127.0.0.1`; the two
//!   IPv4 a Teredo address carries (server and client) must pass too.
//! - let a client reach the host's own services through the relay: the server's
//!   own addresses are only reachable on the relay port range, and its own listening
//!   endpoints (STUN/TURN, TLS, admin, self-test) never, whatever the operator's
//!   lists say.
//!
//! Order of a decision (see [`PeerPolicy::check`]): port 0, then the server's own
//! listening endpoints, then the operator lists (most specific entry wins), then the
//! server's own addresses, then the default-denied table, and otherwise allow.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::LazyLock;

use ipnet::IpNet;

/// Why a peer was refused (used as a metric label later, so keep it a small Copy enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PeerDenied {
    /// Port 0 is not a destination anyone can legitimately listen on.
    #[error("port-zero")]
    PortZero,
    /// The address is in a built-in non-public range and the operator did not re-allow it.
    #[error("default-denied")]
    DefaultDenied,
    /// The operator's `denied` list covers the address more specifically than `allowed`.
    #[error("config-denied")]
    ConfigDenied,
    /// The address is one of the server's own, on a port outside the relay range or
    /// on one of its listening endpoints.
    #[error("own-address")]
    OwnAddress,
}

/// The server's own relay endpoints: peers at one of these IPs with a port inside
/// `ports` are other clients' relay addresses and allowed.
#[derive(Debug, Clone)]
pub struct OwnRelays {
    pub ips: Vec<IpAddr>,
    pub ports: RangeInclusive<u16>,
}

/// The server's own listening endpoints (STUN/TURN over UDP and TCP, TLS, admin,
/// self-test): never a peer, whatever the operator's lists say. Relaying to a
/// listener lets a client speak to the server from a relay address (a TURN loop,
/// which a worker that does not own that relay cannot recognise), and no client has
/// business with the admin or self-test ports.
#[derive(Debug, Clone, Default)]
pub struct OwnServices {
    /// Listening addresses as configured. Their ports are refused on every address of
    /// this host, whichever one they are bound to.
    pub endpoints: Vec<SocketAddr>,
    /// This host's interface addresses, besides loopback and the own relay addresses.
    pub host_ips: Vec<IpAddr>,
}

/// Which peers a TURN client may relay to. Build once from configuration, then
/// call [`PeerPolicy::check`] for every CreatePermission / ChannelBind / Send.
#[derive(Debug, Clone)]
pub struct PeerPolicy {
    allowed: Vec<IpNet>,
    denied: Vec<IpNet>,
    own: OwnRelays,
    services: OwnServices,
}

/// Built-in ranges no relay should reach unless the operator re-allows them:
/// private, loopback, link-local, documentation, multicast and tunnel prefixes.
/// One place to read; `(network, short reason)`.
///
/// IPv4 embedded in IPv6 (`::ffff:0:0/96`, `::/96`, `64:ff9b::/96`, `2002::/16`)
/// is undone by [`canonical_ip`] before this table is consulted, so those forms
/// are covered by the IPv4 rows. 6to4 (`2002::/16`) is listed anyway because a
/// 6to4 address is also judged as itself: tunnel prefixes are a classic way
/// around peer filters, so they stay closed unless the operator opens them.
const DEFAULT_DENIED: &[(&str, &str)] = &[
    // IPv4 (RFC 6890 special-purpose registry and friends).
    ("0.0.0.0/8", "this-network"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "cgnat"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"), // includes cloud metadata 169.254.169.254
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "ietf-protocol"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4-relay-anycast"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("255.255.255.255/32", "broadcast"),
    // IPv6 (RFC 6890 / IANA IPv6 special-purpose registry).
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::ffff:0:0:0/96", "ipv4-translated"), // an IPv4 embedding canonical_ip does not undo
    ("64:ff9b:1::/48", "nat64-local-use"),
    ("100::/64", "discard"),
    ("100:0:0:1::/64", "dummy"),
    ("2001::/32", "teredo"),
    ("2001:2::/48", "benchmarking"),
    ("2001:10::/28", "orchid"),
    ("2001:20::/28", "orchid-v2"),
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "srv6-sid"),
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
];

/// [`DEFAULT_DENIED`] parsed once; `is_default_denied` has no `self` to cache it in.
static DEFAULT_DENIED_NETS: LazyLock<Vec<(IpNet, &'static str)>> = LazyLock::new(|| {
    DEFAULT_DENIED
        .iter()
        .map(|&(literal, reason)| {
            // The table is a compile-time literal list checked by the tests
            // (`default_table_literals_are_valid_networks`), so this cannot fail.
            let net = literal
                .parse()
                .expect("DEFAULT_DENIED holds valid CIDR literals");
            (net, reason)
        })
        .collect()
});

/// `::ffff:0:0/96`: IPv4-mapped addresses, the dual-stack socket spelling of IPv4.
const IPV4_MAPPED_PREFIX: u128 = 0xffff;
/// `64:ff9b::/96`: NAT64 well-known prefix (RFC 6052); the gateway forwards to the IPv4.
const NAT64_WELL_KNOWN_PREFIX: u128 = 0x0064_ff9b_0000_0000_0000_0000;
/// `2002::/16`: 6to4 (RFC 3056); bits 16..48 are the IPv4 of the tunnel endpoint.
const SIX_TO_FOUR_PREFIX: u128 = 0x2002;
/// `2001::/32`: Teredo (RFC 4380); bits 32..64 are the Teredo server's IPv4 and the
/// low 32 bits the client's, inverted.
const TEREDO_PREFIX: u128 = 0x2001_0000;

/// The operator's word on an address, from the most specific matching list entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OperatorVerdict {
    Allowed,
    Denied,
}

impl PeerPolicy {
    /// Build a policy from the operator's lists and the server's own relay endpoints.
    ///
    /// Own relay IPs are canonicalized so that an embedded spelling of them matches,
    /// and unspecified addresses (`0.0.0.0`, `::`) are dropped: a wildcard bind is not
    /// a reachable relay address, and sending to it reaches the host's loopback.
    pub fn new(allowed: Vec<IpNet>, denied: Vec<IpNet>, own: OwnRelays) -> Self {
        let ips = own
            .ips
            .into_iter()
            .map(canonical_ip)
            .filter(|ip| !ip.is_unspecified())
            .collect();
        Self {
            allowed,
            denied,
            own: OwnRelays {
                ips,
                ports: own.ports,
            },
            services: OwnServices::default(),
        }
    }

    /// The same policy, refusing the server's own listening endpoints as well.
    /// Addresses are canonicalized like peers, so an embedded spelling matches.
    pub fn with_services(mut self, services: OwnServices) -> Self {
        let endpoints = services
            .endpoints
            .into_iter()
            .map(|e| SocketAddr::new(canonical_ip(e.ip()), e.port()))
            .collect();
        let host_ips = services.host_ips.into_iter().map(canonical_ip).collect();
        self.services = OwnServices {
            endpoints,
            host_ips,
        };
        self
    }

    /// Decide whether a client may relay to `peer`.
    ///
    /// 1. Port 0 is refused.
    /// 2. The IP is canonicalized ([`canonical_ip`]). A listening port of the server on
    ///    one of this host's addresses is refused, whatever the lists say.
    /// 3. The canonical IP is judged: the operator's most specific entry decides (deny
    ///    wins ties); else the server's own addresses are allowed only on the relay
    ///    port range; else the default-denied table applies.
    /// 4. If the peer was written as IPv6 embedding IPv4, the wire address is judged
    ///    too (operator lists, then the default table), so 6to4 stays denied as a
    ///    tunnel prefix unless the operator allows it. Both judgements must pass.
    /// 5. A Teredo peer's server and client IPv4 are judged the same way, so
    ///    re-opening `2001::/32` does not open what it tunnels to.
    ///
    /// An operator `allowed` entry is taken at its word, including when it covers
    /// the server's own addresses (except its listening endpoints); deny those
    /// explicitly with a more specific entry.
    pub fn check(&self, peer: SocketAddr) -> Result<(), PeerDenied> {
        if peer.port() == 0 {
            return Err(PeerDenied::PortZero);
        }
        let wire_ip = peer.ip();
        let ip = canonical_ip(wire_ip);
        if self.reaches_own_service(ip, peer.port()) {
            return Err(PeerDenied::OwnAddress);
        }
        self.judge_canonical(ip, peer.port())?;
        if wire_ip != ip {
            self.judge_by_lists(wire_ip)?;
        }
        for tunnelled in teredo_ipv4s(wire_ip).into_iter().flatten() {
            self.judge_by_lists(IpAddr::V4(tunnelled))?;
        }
        Ok(())
    }

    /// Whether some port of `ip` may be reached: what an IP-wide permission needs. On
    /// this server's own addresses that is a relay port; elsewhere the port does not
    /// change the verdict.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        self.check(SocketAddr::new(ip, *self.own.ports.start()))
            .is_ok()
    }

    /// True when some default-denied range would block `ip` unless re-allowed (for config lints).
    ///
    /// Looks at both the canonical IPv4 and, for embedded forms, the IPv6 spelling.
    pub fn is_default_denied(ip: IpAddr) -> bool {
        let canonical = canonical_ip(ip);
        default_denied_reason(canonical).is_some() || default_denied_reason(ip).is_some()
    }

    /// True when the operator's `denied` list covers `ip` (most specific entry wins
    /// against `allowed`, deny wins ties), in its canonical or its written form.
    pub fn is_config_denied(&self, ip: IpAddr) -> bool {
        [canonical_ip(ip), ip]
            .into_iter()
            .any(|form| self.operator_verdict(form) == Some(OperatorVerdict::Denied))
    }

    /// Judge the canonical address: operator lists, own relay endpoints, defaults.
    fn judge_canonical(&self, ip: IpAddr, port: u16) -> Result<(), PeerDenied> {
        match self.operator_verdict(ip) {
            Some(OperatorVerdict::Denied) => Err(PeerDenied::ConfigDenied),
            Some(OperatorVerdict::Allowed) => Ok(()),
            None if self.own.ips.contains(&ip) => self.judge_own_port(port),
            None if default_denied_reason(ip).is_some() => Err(PeerDenied::DefaultDenied),
            None => Ok(()),
        }
    }

    /// Judge an address by the operator lists and the default table only: the IPv6
    /// spelling of an embedded-IPv4 peer, or an IPv4 a Teredo peer tunnels to. The
    /// own-relay rule does not apply here: own addresses are matched in canonical
    /// form only.
    fn judge_by_lists(&self, ip: IpAddr) -> Result<(), PeerDenied> {
        match self.operator_verdict(ip) {
            Some(OperatorVerdict::Denied) => Err(PeerDenied::ConfigDenied),
            Some(OperatorVerdict::Allowed) => Ok(()),
            None if default_denied_reason(ip).is_some() => Err(PeerDenied::DefaultDenied),
            None => Ok(()),
        }
    }

    /// Whether `ip:port` (`ip` canonical) is a listening port of this server on one
    /// of this host's addresses. Any local address counts, not only the one an
    /// endpoint is bound to: a wildcard listens on all of them, a datagram to the
    /// advertised address of a 1:1 NAT comes back to the private one, and one to an
    /// unspecified address is delivered to this host. Refusing a port of our own host
    /// where nothing listens costs nothing.
    fn reaches_own_service(&self, ip: IpAddr, port: u16) -> bool {
        let is_ours = ip.is_unspecified()
            || self.is_local(ip)
            || self.services.endpoints.iter().any(|e| e.ip() == ip);
        is_ours && self.services.endpoints.iter().any(|e| e.port() == port)
    }

    /// Loopback, a relay or advertised address of this server, or a host interface.
    fn is_local(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || self.own.ips.contains(&ip) || self.services.host_ips.contains(&ip)
    }

    /// Other clients' relay addresses are fair peers; anything else on the host is not.
    fn judge_own_port(&self, port: u16) -> Result<(), PeerDenied> {
        if self.own.ports.contains(&port) {
            Ok(())
        } else {
            Err(PeerDenied::OwnAddress)
        }
    }

    /// The most specific operator entry covering `ip`; a `denied` entry at least as
    /// specific as the best `allowed` one wins. `None` when neither list mentions `ip`.
    fn operator_verdict(&self, ip: IpAddr) -> Option<OperatorVerdict> {
        let allowed = longest_prefix_match(&self.allowed, ip);
        let denied = longest_prefix_match(&self.denied, ip);
        match (allowed, denied) {
            (Some(allow_len), Some(deny_len)) if allow_len > deny_len => {
                Some(OperatorVerdict::Allowed)
            }
            (_, Some(_)) => Some(OperatorVerdict::Denied),
            (Some(_), None) => Some(OperatorVerdict::Allowed),
            (None, None) => None,
        }
    }
}

/// Prefix length of the most specific network in `nets` containing `ip`.
/// Networks of the other address family never match.
fn longest_prefix_match(nets: &[IpNet], ip: IpAddr) -> Option<u8> {
    nets.iter()
        .filter(|net| net.contains(&ip))
        .map(IpNet::prefix_len)
        .max()
}

/// Reason of the most specific default-denied range containing `ip`, as written.
/// No canonicalization here: callers choose which form to look up.
fn default_denied_reason(ip: IpAddr) -> Option<&'static str> {
    DEFAULT_DENIED_NETS
        .iter()
        .filter(|(net, _)| net.contains(&ip))
        .max_by_key(|(net, _)| net.prefix_len())
        .map(|&(_, reason)| reason)
}

/// Canonical form used for every decision: IPv4 embedded in IPv6 is judged as IPv4.
///
/// Mapped (`::ffff:a.b.c.d`), compatible (`::a.b.c.d`, except `::` and `::1`, which
/// are IPv6 unspecified and loopback), NAT64 well-known (`64:ff9b::a.b.c.d`) and 6to4
/// (`2002:AABB:CCDD::/48`) addresses become the IPv4 they carry. Everything else is
/// returned unchanged.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => embedded_ipv4(v6).map_or(ip, IpAddr::V4),
    }
}

/// The IPv4 address carried by `v6`, for the embedding forms [`canonical_ip`] undoes.
fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = v6.to_bits();
    let high_96 = bits >> 32;
    let is_mapped = high_96 == IPV4_MAPPED_PREFIX;
    let is_nat64 = high_96 == NAT64_WELL_KNOWN_PREFIX;
    // IPv4-compatible (deprecated, RFC 4291 2.5.5.1); `::` and `::1` are IPv6's own.
    let is_compatible = high_96 == 0 && bits > 1;
    if is_mapped || is_nat64 || is_compatible {
        // Truncating cast: the low 32 bits hold the IPv4 address.
        Some(Ipv4Addr::from_bits(bits as u32))
    } else if bits >> 112 == SIX_TO_FOUR_PREFIX {
        // Truncating cast: bits 16..48 hold the IPv4 address.
        Some(Ipv4Addr::from_bits((bits >> 80) as u32))
    } else {
        None
    }
}

/// The Teredo server and client IPv4 addresses `ip` carries, if it is a Teredo
/// address. A host with a Teredo interface sends to both (bubbles to the server, data
/// to the client's mapped address), so a tunnel prefix the operator re-opens must not
/// re-open them.
fn teredo_ipv4s(ip: IpAddr) -> Option<[Ipv4Addr; 2]> {
    let IpAddr::V6(v6) = ip else {
        return None;
    };
    let bits = v6.to_bits();
    if bits >> 96 != TEREDO_PREFIX {
        return None;
    }
    // Truncating casts: bits 32..64 hold the server, the low 32 bits the client.
    let server = Ipv4Addr::from_bits((bits >> 64) as u32);
    let client = Ipv4Addr::from_bits(!(bits as u32));
    Some([server, client])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parse a test literal; tests only pass well-formed literals.
    fn ip(literal: &str) -> IpAddr {
        literal.parse().expect("test IP literal is valid")
    }

    fn net(literal: &str) -> IpNet {
        literal.parse().expect("test CIDR literal is valid")
    }

    fn nets(literals: &[&str]) -> Vec<IpNet> {
        literals.iter().map(|literal| net(literal)).collect()
    }

    fn peer(literal: &str, port: u16) -> SocketAddr {
        SocketAddr::new(ip(literal), port)
    }

    const RELAY_PORTS: RangeInclusive<u16> = 49152..=65535;

    fn no_own() -> OwnRelays {
        OwnRelays {
            ips: Vec::new(),
            ports: RELAY_PORTS,
        }
    }

    fn default_policy() -> PeerPolicy {
        PeerPolicy::new(Vec::new(), Vec::new(), no_own())
    }

    fn policy(allowed: &[&str], denied: &[&str]) -> PeerPolicy {
        PeerPolicy::new(nets(allowed), nets(denied), no_own())
    }

    fn check(policy: &PeerPolicy, address: &str) -> Result<(), PeerDenied> {
        policy.check(peer(address, 3478))
    }

    #[test]
    fn default_table_literals_are_valid_networks() {
        for &(literal, reason) in DEFAULT_DENIED {
            let parsed: IpNet = literal
                .parse()
                .unwrap_or_else(|err| panic!("{literal} ({reason}): {err}"));
            assert_eq!(parsed, parsed.trunc(), "{literal} has host bits set");
            assert!(!reason.is_empty() && reason == reason.to_lowercase());
        }
        assert_eq!(DEFAULT_DENIED_NETS.len(), DEFAULT_DENIED.len());
    }

    /// (sample inside, expected reason) for every row of the table.
    const INSIDE_EACH_RANGE: &[(&str, &str)] = &[
        ("0.0.0.0", "this-network"),
        ("0.255.255.255", "this-network"),
        ("10.0.0.1", "private"),
        ("10.255.255.255", "private"),
        ("100.64.0.1", "cgnat"),
        ("100.127.255.255", "cgnat"),
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("169.254.0.1", "link-local"),
        ("169.254.169.254", "link-local"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.0.0.8", "ietf-protocol"),
        ("192.0.2.1", "documentation"),
        ("192.88.99.1", "6to4-relay-anycast"),
        ("192.168.1.1", "private"),
        ("198.18.0.1", "benchmarking"),
        ("198.19.255.255", "benchmarking"),
        ("198.51.100.7", "documentation"),
        ("203.0.113.9", "documentation"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved"),
        ("254.255.255.255", "reserved"),
        ("255.255.255.255", "broadcast"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("::ffff:0:a00:1", "ipv4-translated"),
        ("64:ff9b:1::1", "nat64-local-use"),
        ("100::1", "discard"),
        ("100:0:0:1::1", "dummy"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "teredo"),
        ("2001:2::1", "benchmarking"),
        ("2001:10::1", "orchid"),
        ("2001:20::1", "orchid-v2"),
        ("2001:db8::1", "documentation"),
        ("2002:808:808::1", "6to4"), // embeds public 8.8.8.8: denied as a tunnel
        ("3fff::1", "documentation"),
        ("5f00::1", "srv6-sid"),
        ("fc00::1", "unique-local"),
        ("fd12:3456:789a::1", "unique-local"),
        ("fe80::1", "link-local"),
        ("febf:ffff::1", "link-local"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("ff0e::101", "multicast"),
    ];

    #[test]
    fn every_default_range_is_denied() {
        let policy = default_policy();
        for &(address, reason) in INSIDE_EACH_RANGE {
            assert_eq!(
                default_denied_reason(ip(address)),
                Some(reason),
                "{address}"
            );
            assert!(PeerPolicy::is_default_denied(ip(address)), "{address}");
            assert_eq!(
                check(&policy, address),
                Err(PeerDenied::DefaultDenied),
                "{address}"
            );
        }
    }

    #[test]
    fn every_table_row_has_a_sample() {
        for &(literal, reason) in DEFAULT_DENIED {
            let range = net(literal);
            assert!(
                INSIDE_EACH_RANGE
                    .iter()
                    .any(|&(address, _)| range.contains(&ip(address))),
                "no sample inside {literal} ({reason})"
            );
        }
    }

    #[test]
    fn addresses_just_outside_default_ranges_are_allowed() {
        let policy = default_policy();
        let just_outside = [
            "1.0.0.0",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.0",
            "192.0.3.0",
            "192.88.98.255",
            "192.88.100.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "198.51.99.255",
            "198.51.101.0",
            "203.0.112.255",
            "203.0.114.0",
            "223.255.255.255",
            "2000::1",
            "2001:1::1",
            "2001:4860:4860::8888",
            "2001:db7:ffff::1",
            "2001:db9::1",
            "2003::1",
            "3ffe:ffff::1",
            "3fff:1000::1",
            "fbff::1",
            "fe00::1",
            "fe7f:ffff::1",
        ];
        for address in just_outside {
            assert!(!PeerPolicy::is_default_denied(ip(address)), "{address}");
            assert_eq!(check(&policy, address), Ok(()), "{address}");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        let policy = default_policy();
        for address in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "2a00:1450:4001:80b::200e",
        ] {
            assert_eq!(check(&policy, address), Ok(()), "{address}");
        }
    }

    #[test]
    fn port_zero_is_denied_before_anything_else() {
        let open = policy(&["0.0.0.0/0", "::/0"], &[]);
        assert_eq!(check_port(&open, "8.8.8.8", 0), Err(PeerDenied::PortZero));
        assert_eq!(
            check_port(&default_policy(), "2606:4700::1111", 0),
            Err(PeerDenied::PortZero)
        );
        assert_eq!(check_port(&open, "8.8.8.8", 1), Ok(()));
    }

    fn check_port(policy: &PeerPolicy, address: &str, port: u16) -> Result<(), PeerDenied> {
        policy.check(peer(address, port))
    }

    #[test]
    fn canonical_ip_undoes_each_embedding() {
        let cases = [
            ("::ffff:127.0.0.1", "127.0.0.1"),
            ("::ffff:0.0.0.0", "0.0.0.0"),
            ("::127.0.0.1", "127.0.0.1"),
            ("::2", "0.0.0.2"),
            ("64:ff9b::7f00:1", "127.0.0.1"),
            ("64:ff9b::808:808", "8.8.8.8"),
            ("2002:7f00:1::", "127.0.0.1"),
            ("2002:808:808:1234::5", "8.8.8.8"),
            ("8.8.8.8", "8.8.8.8"),
        ];
        for (written, canonical) in cases {
            assert_eq!(canonical_ip(ip(written)), ip(canonical), "{written}");
        }
    }

    #[test]
    fn canonical_ip_leaves_plain_ipv6_alone() {
        for address in [
            "::",
            "::1",
            "2606:4700::1111",
            "64:ff9b:1::7f00:1",
            "2001::7f00:1",
            "::ffff:0:7f00:1",
            "fe80::1",
        ] {
            assert_eq!(canonical_ip(ip(address)), ip(address), "{address}");
        }
    }

    #[test]
    fn embedded_forms_of_denied_ipv4_are_denied() {
        let policy = default_policy();
        for address in [
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::ffff:0.0.0.0",
            "64:ff9b::a9fe:a9fe",
            "::ffff:255.255.255.255",
        ] {
            assert!(PeerPolicy::is_default_denied(ip(address)), "{address}");
            assert_eq!(
                check(&policy, address),
                Err(PeerDenied::DefaultDenied),
                "{address}"
            );
        }
    }

    #[test]
    fn embedded_forms_of_public_ipv4_follow_the_ipv4() {
        let policy = default_policy();
        assert_eq!(check(&policy, "::ffff:8.8.8.8"), Ok(()));
        assert_eq!(check(&policy, "::8.8.8.8"), Ok(()));
        assert_eq!(check(&policy, "64:ff9b::808:808"), Ok(()));
    }

    #[test]
    fn six_to_four_and_teredo_stay_denied_as_tunnels() {
        let policy = default_policy();
        assert_eq!(
            check(&policy, "2002:808:808::1"),
            Err(PeerDenied::DefaultDenied)
        );
        assert_eq!(
            check(&policy, "2001:0:4136:e378:8000:63bf:3fff:fdd2"),
            Err(PeerDenied::DefaultDenied)
        );
    }

    #[test]
    fn operator_can_reopen_tunnels_but_not_what_they_embed() {
        let tunnels_open = policy(&["2002::/16", "2001::/32"], &[]);
        assert_eq!(check(&tunnels_open, "2002:808:808::1"), Ok(()));
        // Teredo server 65.54.227.120, client 8.8.8.8 (inverted in the last 32 bits).
        assert_eq!(
            check(&tunnels_open, "2001:0:4136:e378:8000:63bf:f7f7:f7f7"),
            Ok(())
        );
        for address in [
            "2002:7f00:1::",
            "2002:a9fe:a9fe::",
            "2001:0:4136:e378:8000:63bf:80ff:fffe", // Teredo client 127.0.0.1
            "2001:0:4136:e378:8000:63bf:5601:5601", // Teredo client 169.254.169.254
            "2001:0:7f00:1:8000:63bf:f7f7:f7f7",    // Teredo server 127.0.0.1
            "2001:0:4136:e378:8000:63bf:3fff:fdd2", // RFC 4380's client 192.0.2.45
        ] {
            assert_eq!(
                check(&tunnels_open, address),
                Err(PeerDenied::DefaultDenied),
                "{address}"
            );
        }
        // What the operator re-opens as IPv4 is open inside Teredo too.
        let lab = policy(&["2001::/32", "127.0.0.0/8"], &[]);
        assert_eq!(check(&lab, "2001:0:4136:e378:8000:63bf:80ff:fffe"), Ok(()));
    }

    #[test]
    fn teredo_addresses_carry_a_server_and_an_inverted_client_ipv4() {
        let v4 = |literal: &str| literal.parse::<Ipv4Addr>().expect("test IPv4 literal");
        // RFC 4380 section 4's example.
        assert_eq!(
            teredo_ipv4s(ip("2001:0:4136:e378:8000:63bf:3fff:fdd2")),
            Some([v4("65.54.227.120"), v4("192.0.2.45")])
        );
        for address in ["2001:db8::1", "2002:808:808::1", "2001:1::1", "127.0.0.1"] {
            assert_eq!(teredo_ipv4s(ip(address)), None, "{address}");
        }
    }

    #[test]
    fn broad_ipv6_allow_does_not_reopen_embedded_ipv4() {
        let all_v6 = policy(&["::/0"], &[]);
        for address in [
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::",
        ] {
            assert_eq!(
                check(&all_v6, address),
                Err(PeerDenied::DefaultDenied),
                "{address}"
            );
        }
        assert_eq!(check(&all_v6, "fe80::1"), Ok(()));
    }

    #[test]
    fn allowed_list_reopens_loopback_and_private_ranges() {
        let policy = policy(&["127.0.0.0/8", "10.0.0.0/8"], &[]);
        for address in [
            "127.0.0.1",
            "10.1.2.3",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert_eq!(check(&policy, address), Ok(()), "{address}");
        }
        // Still denied: other defaults, and 6to4 as a tunnel prefix.
        assert_eq!(
            check(&policy, "192.168.1.1"),
            Err(PeerDenied::DefaultDenied)
        );
        assert_eq!(check(&policy, "::1"), Err(PeerDenied::DefaultDenied));
        assert_eq!(
            check(&policy, "2002:a00:1::"),
            Err(PeerDenied::DefaultDenied)
        );
        // Re-allowing is not the same as not being default-denied (lints rely on this).
        assert!(PeerPolicy::is_default_denied(ip("10.1.2.3")));
    }

    #[test]
    fn more_specific_deny_inside_an_allow_wins() {
        let policy = policy(&["10.0.0.0/8"], &["10.1.0.0/16"]);
        assert_eq!(check(&policy, "10.2.0.1"), Ok(()));
        assert_eq!(check(&policy, "10.1.0.1"), Err(PeerDenied::ConfigDenied));
        assert_eq!(
            check(&policy, "::ffff:10.1.0.1"),
            Err(PeerDenied::ConfigDenied)
        );
        assert!(policy.is_config_denied(ip("10.1.0.1")));
        assert!(policy.is_config_denied(ip("::ffff:10.1.0.1")));
        assert!(!policy.is_config_denied(ip("10.2.0.1")));
    }

    #[test]
    fn more_specific_allow_inside_a_deny_wins() {
        let policy = policy(&["8.8.8.0/24"], &["8.0.0.0/8"]);
        assert_eq!(check(&policy, "8.8.8.8"), Ok(()));
        assert_eq!(check(&policy, "8.8.4.4"), Err(PeerDenied::ConfigDenied));
        assert!(!policy.is_config_denied(ip("8.8.8.8")));
    }

    #[test]
    fn equal_prefix_tie_is_denied() {
        let policy = policy(&["10.0.0.0/8", "8.8.8.8/32"], &["10.0.0.0/8", "8.8.8.8/32"]);
        assert_eq!(check(&policy, "10.0.0.1"), Err(PeerDenied::ConfigDenied));
        assert_eq!(check(&policy, "8.8.8.8"), Err(PeerDenied::ConfigDenied));
        assert!(policy.is_config_denied(ip("8.8.8.8")));
    }

    #[test]
    fn operator_deny_applies_to_public_and_wire_forms() {
        let policy = policy(&[], &["93.184.216.0/24", "64:ff9b::/96"]);
        assert_eq!(
            check(&policy, "93.184.216.34"),
            Err(PeerDenied::ConfigDenied)
        );
        assert_eq!(
            check(&policy, "64:ff9b::808:808"),
            Err(PeerDenied::ConfigDenied)
        );
        assert!(policy.is_config_denied(ip("64:ff9b::808:808")));
        assert_eq!(check(&policy, "8.8.8.8"), Ok(()));
    }

    #[test]
    fn ipv6_operator_entries_match_plain_ipv6_peers() {
        let policy = policy(&["fd00:1::/32"], &["2606:4700::/32"]);
        assert_eq!(check(&policy, "fd00:1::5"), Ok(()));
        assert_eq!(check(&policy, "fd00:2::5"), Err(PeerDenied::DefaultDenied));
        assert_eq!(
            check(&policy, "2606:4700::1111"),
            Err(PeerDenied::ConfigDenied)
        );
    }

    fn own_relay_policy() -> PeerPolicy {
        let own = OwnRelays {
            ips: vec![
                ip("10.0.0.5"),
                ip("::ffff:203.0.113.7"),
                ip("2606:4700::5"),
                ip("0.0.0.0"),
                ip("::"),
            ],
            ports: RELAY_PORTS,
        };
        PeerPolicy::new(Vec::new(), Vec::new(), own)
    }

    #[test]
    fn own_relay_address_inside_port_range_is_allowed() {
        let policy = own_relay_policy();
        assert_eq!(check_port(&policy, "10.0.0.5", 49152), Ok(()));
        assert_eq!(check_port(&policy, "10.0.0.5", 65535), Ok(()));
        assert_eq!(check_port(&policy, "203.0.113.7", 50000), Ok(()));
        assert_eq!(check_port(&policy, "::ffff:10.0.0.5", 50000), Ok(()));
        assert_eq!(check_port(&policy, "2606:4700::5", 50000), Ok(()));
    }

    #[test]
    fn own_relay_address_outside_port_range_is_denied() {
        let policy = own_relay_policy();
        for (address, port) in [
            ("10.0.0.5", 22),
            ("10.0.0.5", 49151),
            ("203.0.113.7", 3478),
            ("::ffff:10.0.0.5", 8080),
            ("2606:4700::5", 443),
        ] {
            assert_eq!(
                check_port(&policy, address, port),
                Err(PeerDenied::OwnAddress),
                "{address}:{port}"
            );
        }
        // Neighbours of own addresses follow the normal rules.
        assert_eq!(
            check_port(&policy, "10.0.0.6", 50000),
            Err(PeerDenied::DefaultDenied)
        );
        assert_eq!(check_port(&policy, "2606:4700::6", 443), Ok(()));
    }

    #[test]
    fn unspecified_own_address_is_ignored() {
        let policy = own_relay_policy();
        assert_eq!(
            check_port(&policy, "0.0.0.0", 50000),
            Err(PeerDenied::DefaultDenied)
        );
        assert_eq!(
            check_port(&policy, "::", 50000),
            Err(PeerDenied::DefaultDenied)
        );
    }

    #[test]
    fn operator_deny_beats_own_relay_address() {
        let own = OwnRelays {
            ips: vec![ip("10.0.0.5")],
            ports: RELAY_PORTS,
        };
        let policy = PeerPolicy::new(Vec::new(), nets(&["10.0.0.5/32"]), own);
        assert_eq!(
            check_port(&policy, "10.0.0.5", 50000),
            Err(PeerDenied::ConfigDenied)
        );
    }

    /// Loopback, private ranges, the server's public address and all of IPv6
    /// re-allowed by the operator; relaying on 10.0.0.5, advertised as 198.51.100.5;
    /// listening on 10.0.0.5:3478 (UDP/TCP), on every address at 5349 (TLS), and on
    /// 127.0.0.1:9641 (admin); another interface has 192.168.1.20.
    fn services_policy() -> PeerPolicy {
        let own = OwnRelays {
            ips: vec![ip("10.0.0.5"), ip("198.51.100.5")],
            ports: RELAY_PORTS,
        };
        let services = OwnServices {
            endpoints: vec![
                peer("10.0.0.5", 3478),
                peer("::", 5349),
                peer("127.0.0.1", 9641),
            ],
            host_ips: vec![ip("192.168.1.20")],
        };
        let allowed = nets(&[
            "0.0.0.0/8",
            "10.0.0.0/8",
            "127.0.0.0/8",
            "192.168.0.0/16",
            "198.51.100.0/24",
            "::/0",
        ]);
        PeerPolicy::new(allowed, Vec::new(), own).with_services(services)
    }

    #[test]
    fn own_listening_endpoints_are_denied_even_when_allowed() {
        let policy = services_policy();
        for (address, port) in [
            ("10.0.0.5", 3478),
            ("::ffff:10.0.0.5", 3478),
            ("64:ff9b::a00:5", 3478),
            ("0.0.0.0", 3478), // delivered to this host
            ("127.0.0.1", 9641),
            ("::ffff:127.0.0.1", 9641),
            // Through the 1:1 NAT's public address, back to 10.0.0.5.
            ("198.51.100.5", 3478),
            // Any listening port on any local address.
            ("127.0.0.1", 3478),
            ("10.0.0.5", 9641),
            ("10.0.0.5", 5349),
            ("192.168.1.20", 5349),
            ("127.0.0.1", 5349),
            ("127.8.9.10", 5349),
            ("::1", 5349),
            ("::", 5349),
        ] {
            assert_eq!(
                check_port(&policy, address, port),
                Err(PeerDenied::OwnAddress),
                "{address}:{port}"
            );
        }
    }

    #[test]
    fn listening_ports_elsewhere_and_other_local_ports_follow_the_lists() {
        let policy = services_policy();
        for (address, port) in [
            ("10.0.0.5", 3479),     // re-allowed by 10.0.0.0/8
            ("10.0.0.5", 50000),    // a relay address
            ("10.0.0.6", 3478),     // another host
            ("198.51.100.6", 3478), // another host
            ("127.0.0.1", 9642),    // next to the admin port
            ("192.168.1.21", 5349), // another host on the LAN
            ("8.8.8.8", 5349),      // someone else's TURN server
        ] {
            assert_eq!(
                check_port(&policy, address, port),
                Ok(()),
                "{address}:{port}"
            );
        }
    }

    #[test]
    fn denial_reasons_display_as_short_labels() {
        assert_eq!(PeerDenied::PortZero.to_string(), "port-zero");
        assert_eq!(PeerDenied::DefaultDenied.to_string(), "default-denied");
        assert_eq!(PeerDenied::ConfigDenied.to_string(), "config-denied");
        assert_eq!(PeerDenied::OwnAddress.to_string(), "own-address");
        let _: &dyn std::error::Error = &PeerDenied::PortZero;
    }
}
