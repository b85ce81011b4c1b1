//! Working out which local IPs relay sockets bind to and what is advertised for them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use crate::config::ExternalIp;

/// The configured relay IPs, or else the specific listen IPs, or else (wildcard
/// listeners) every usable interface address of the listeners' families. Falls back to
/// loopback when a host has nothing else, so a laptop without network still works.
pub fn relay_ips(configured: &[IpAddr], listen: &[SocketAddr]) -> Vec<IpAddr> {
    if !configured.is_empty() {
        return dedup(configured.to_vec());
    }
    let mut ips = Vec::new();
    for addr in listen {
        if !addr.ip().is_unspecified() {
            ips.push(addr.ip());
            continue;
        }
        let found: Vec<IpAddr> = interface_ips()
            .into_iter()
            .filter(|ip| ip.is_ipv6() == addr.is_ipv6())
            .collect();
        if found.is_empty() && addr.is_ipv4() {
            tracing::warn!("no non-loopback IPv4 address found; relaying on 127.0.0.1");
            ips.push(IpAddr::from([127, 0, 0, 1]));
        }
        ips.extend(found);
    }
    dedup(ips)
}

/// Interface addresses a relay can usefully bind: not loopback, not IPv6 link-local.
pub fn interface_ips() -> Vec<IpAddr> {
    let Ok(interfaces) = if_addrs::get_if_addrs() else {
        return Vec::new();
    };
    interfaces
        .into_iter()
        .map(|i| i.ip())
        .filter(|ip| !ip.is_loopback())
        .filter(|ip| match ip {
            IpAddr::V6(v6) => !v6.is_unicast_link_local(),
            IpAddr::V4(_) => true,
        })
        .collect()
}

/// Non-loopback interfaces holding one of `addresses`; every non-loopback interface
/// with an address when one of them is a wildcard.
pub fn interfaces_holding(addresses: &[IpAddr]) -> Vec<String> {
    let wildcard = addresses.iter().any(IpAddr::is_unspecified);
    let mut names: Vec<String> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| !i.is_loopback() && (wildcard || addresses.contains(&i.ip())))
        .map(|i| i.name)
        .collect();
    names.sort();
    names.dedup();
    names
}

fn dedup(mut ips: Vec<IpAddr>) -> Vec<IpAddr> {
    let mut seen = std::collections::HashSet::new();
    ips.retain(|ip| seen.insert(*ip));
    ips
}

/// Relay IP → public IP, from `external_ip` entries: a `PRIVATE=PUBLIC` pair maps its
/// own relay IP; a bare `PUBLIC` maps every relay IP of its family not mapped otherwise.
pub fn advertised_ips(relay_ips: &[IpAddr], external: &[ExternalIp]) -> HashMap<IpAddr, IpAddr> {
    let mut map = HashMap::new();
    for e in external.iter().filter(|e| e.private.is_some()) {
        map.insert(e.private.unwrap_or(e.public), e.public);
    }
    for e in external.iter().filter(|e| e.private.is_none()) {
        for ip in relay_ips
            .iter()
            .filter(|ip| ip.is_ipv4() == e.public.is_ipv4())
        {
            map.entry(*ip).or_insert(e.public);
        }
    }
    map
}

/// The address clients should use: the advertised public IP of the first IPv4 relay,
/// or the first relay IP, or the first listen address.
pub fn public_host(
    relay_ips: &[IpAddr],
    advertised: &HashMap<IpAddr, IpAddr>,
    listen: &[SocketAddr],
) -> IpAddr {
    let relay = relay_ips
        .iter()
        .find(|ip| ip.is_ipv4())
        .or(relay_ips.first())
        .copied();
    relay
        .map(|ip| advertised.get(&ip).copied().unwrap_or(ip))
        .or(listen.first().map(SocketAddr::ip))
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// One address per IP family among `listeners`, as clients outside reach it: that
/// family's first relay IP (its advertised public IP behind a 1:1 NAT), or else the
/// listener's own IP when it is a specific one, with the listener's port.
pub fn reachable_at(
    listeners: &[SocketAddr],
    relay_ips: &[IpAddr],
    advertised: &HashMap<IpAddr, IpAddr>,
) -> Vec<SocketAddr> {
    [false, true]
        .into_iter()
        .filter_map(|ipv6| {
            let listener = listeners.iter().find(|l| l.is_ipv6() == ipv6)?;
            let relay = relay_ips
                .iter()
                .find(|ip| ip.is_ipv6() == ipv6)
                .map(|ip| advertised.get(ip).copied().unwrap_or(*ip));
            let own = Some(listener.ip()).filter(|ip| !ip.is_unspecified());
            Some(SocketAddr::new(relay.or(own)?, listener.port()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_targets_cover_each_listened_family() {
        let addr = |t: &str| t.parse::<SocketAddr>().unwrap();
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        let listeners = [addr("0.0.0.0:3478"), addr("[::]:3478")];
        let relays = [ip("10.0.0.5"), ip("2001:db8::5")];
        let nat = HashMap::from([(ip("10.0.0.5"), ip("203.0.113.5"))]);
        assert_eq!(
            reachable_at(&listeners, &relays, &nat),
            [addr("203.0.113.5:3478"), addr("[2001:db8::5]:3478")]
        );
        // No IPv6 relay and a wildcard IPv6 listener: no IPv6 address to give.
        assert_eq!(
            reachable_at(&listeners, &relays[..1], &nat),
            [addr("203.0.113.5:3478")]
        );
        // A specific listener stands for itself.
        assert_eq!(
            reachable_at(&[addr("[2001:db8::9]:5349")], &[], &HashMap::new()),
            [addr("[2001:db8::9]:5349")]
        );
    }

    #[test]
    fn specific_listen_ip_is_the_relay_ip() {
        let listen: Vec<SocketAddr> = vec!["127.0.0.1:3478".parse().unwrap()];
        assert_eq!(relay_ips(&[], &listen), vec![IpAddr::from([127, 0, 0, 1])]);
        let configured = [IpAddr::from([127, 0, 0, 2]), IpAddr::from([127, 0, 0, 2])];
        assert_eq!(relay_ips(&configured, &listen), vec![configured[0]]);
    }

    #[test]
    fn external_mapping() {
        let relays: Vec<IpAddr> = vec!["10.0.0.5".parse().unwrap(), "10.0.0.6".parse().unwrap()];
        let external = [
            "10.0.0.6=198.51.100.6".parse().unwrap(),
            "203.0.113.1".parse().unwrap(),
        ];
        let map = advertised_ips(&relays, &external);
        assert_eq!(map[&relays[0]], "203.0.113.1".parse::<IpAddr>().unwrap());
        assert_eq!(map[&relays[1]], "198.51.100.6".parse::<IpAddr>().unwrap());
    }
}
