//! Address ranges to CIDR blocks.
//!
//! coturn writes peer ranges as `FIRST-LAST` while tern takes CIDR prefixes, so a range
//! is covered by the smallest list of prefixes that matches exactly those addresses:
//! nothing more (that would deny or allow peers the operator did not name) and nothing
//! less.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use thiserror::Error;

/// Why a coturn peer address spec gives no CIDR blocks.
#[derive(Debug, Error)]
pub enum CidrError {
    #[error("{first}-{last} mixes IPv4 and IPv6")]
    MixedFamilies { first: IpAddr, last: IpAddr },
    #[error("{first}-{last} is empty (first > last)")]
    EmptyRange { first: IpAddr, last: IpAddr },
    #[error("{0:?} is not an IP address")]
    NotAnAddress(String),
    #[error("{0:?} is not a CIDR prefix")]
    NotAPrefix(String),
    /// A block computed outside its family's range: a bug in the range walk.
    #[error("{0}")]
    BlockOutOfRange(&'static str),
    #[error("{0}")]
    PrefixLength(#[from] ipnet::PrefixLenError),
}

/// The minimal list of CIDR blocks covering exactly `first..=last`, in address order.
///
/// Both ends must be of one family and `first <= last`.
pub fn range_to_cidrs(first: IpAddr, last: IpAddr) -> Result<Vec<IpNet>, CidrError> {
    let (start, end, width) = match (first, last) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return Err(CidrError::MixedFamilies { first, last }),
    };
    if start > end {
        return Err(CidrError::EmptyRange { first, last });
    }
    let mut out = Vec::new();
    let mut start = start;
    loop {
        // The largest block that starts here (aligned) and does not pass `end`.
        let mut bits = start.trailing_zeros().min(width);
        while bits > 0 && span_minus_one(bits) > end - start {
            bits -= 1;
        }
        out.push(block(start, width, bits)?);
        match start
            .checked_add(span_minus_one(bits))
            .and_then(|v| v.checked_add(1))
        {
            Some(next) if next <= end => start = next,
            _ => break,
        }
    }
    Ok(out)
}

/// `2^bits - 1`, without overflowing for a whole 128-bit space.
fn span_minus_one(bits: u32) -> u128 {
    if bits >= 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    }
}

/// The prefix of `width - bits` bits starting at `start`.
fn block(start: u128, width: u32, bits: u32) -> Result<IpNet, CidrError> {
    // `width - bits` is at most 128, which always fits a u8 prefix length.
    let prefix = u8::try_from(width - bits)
        .map_err(|_| CidrError::BlockOutOfRange("prefix length out of range"))?;
    let addr = if width == 32 {
        let v4 = u32::try_from(start)
            .map_err(|_| CidrError::BlockOutOfRange("IPv4 address out of range"))?;
        IpAddr::V4(Ipv4Addr::from(v4))
    } else {
        IpAddr::V6(Ipv6Addr::from(start))
    };
    Ok(IpNet::new(addr, prefix)?)
}

/// A coturn peer address spec: `IP`, `FIRST-LAST` or `IP/PREFIX`, as CIDR blocks.
pub fn parse_peer_spec(spec: &str) -> Result<Vec<IpNet>, CidrError> {
    let spec = spec.trim();
    let ip = |s: &str| {
        s.trim()
            .parse::<IpAddr>()
            .map_err(|_| CidrError::NotAnAddress(s.trim().to_string()))
    };
    if let Some((first, last)) = spec.split_once('-') {
        return range_to_cidrs(ip(first)?, ip(last)?);
    }
    if spec.contains('/') {
        let net: IpNet = spec
            .parse()
            .map_err(|_| CidrError::NotAPrefix(spec.to_string()))?;
        // coturn accepts host bits in the prefix; tern keeps the network.
        return Ok(vec![net.trunc()]);
    }
    let addr = ip(spec)?;
    Ok(vec![IpNet::from(addr)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(a: &str, b: &str) -> Vec<String> {
        range_to_cidrs(a.parse().unwrap(), b.parse().unwrap())
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn aligned_ranges_are_one_block() {
        assert_eq!(cidrs("10.0.0.0", "10.255.255.255"), ["10.0.0.0/8"]);
        assert_eq!(cidrs("192.168.0.0", "192.168.255.255"), ["192.168.0.0/16"]);
        assert_eq!(cidrs("172.16.0.0", "172.31.255.255"), ["172.16.0.0/12"]);
        assert_eq!(cidrs("0.0.0.0", "255.255.255.255"), ["0.0.0.0/0"]);
        assert_eq!(
            cidrs("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            ["::/0"]
        );
        assert_eq!(
            cidrs("fc00::", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            ["fc00::/7"]
        );
    }

    #[test]
    fn single_address_is_a_host_prefix() {
        assert_eq!(cidrs("1.2.3.4", "1.2.3.4"), ["1.2.3.4/32"]);
        assert_eq!(
            cidrs("255.255.255.255", "255.255.255.255"),
            ["255.255.255.255/32"]
        );
        assert_eq!(cidrs("::1", "::1"), ["::1/128"]);
        assert_eq!(
            cidrs(
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
            ),
            ["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"]
        );
    }

    #[test]
    fn unaligned_range_is_minimal() {
        assert_eq!(
            cidrs("10.0.0.1", "10.0.0.10"),
            [
                "10.0.0.1/32",
                "10.0.0.2/31",
                "10.0.0.4/30",
                "10.0.0.8/31",
                "10.0.0.10/32"
            ]
        );
        assert_eq!(
            cidrs("192.168.1.0", "192.168.2.255"),
            ["192.168.1.0/24", "192.168.2.0/24"]
        );
        assert_eq!(
            cidrs("2001:db8::", "2001:db8::2"),
            ["2001:db8::/127", "2001:db8::2/128"]
        );
    }

    /// Exhaustive over a small space: the blocks are disjoint, cover exactly the range,
    /// and no two neighbours could merge into one block (minimality).
    #[test]
    fn covers_exactly_and_minimally() {
        let base = u32::from(Ipv4Addr::new(10, 0, 0, 0));
        for a in 0..40u32 {
            for b in a..40u32 {
                let nets = range_to_cidrs(
                    IpAddr::V4(Ipv4Addr::from(base + a)),
                    IpAddr::V4(Ipv4Addr::from(base + b)),
                )
                .unwrap();
                let mut next = base + a;
                for net in &nets {
                    let IpNet::V4(n) = net else {
                        panic!("family changed")
                    };
                    assert_eq!(u32::from(n.network()), next, "{a}-{b}: gap or overlap");
                    next = u32::from(n.broadcast()) + 1;
                }
                assert_eq!(next, base + b + 1, "{a}-{b}: end");
                for pair in nets.windows(2) {
                    let merged = pair[0].supernet();
                    let mergeable = pair[0].prefix_len() == pair[1].prefix_len()
                        && merged.is_some_and(|m| {
                            m.contains(&pair[1]) && m.network() == pair[0].network()
                        });
                    assert!(!mergeable, "{a}-{b}: {nets:?} is not minimal");
                }
            }
        }
    }

    #[test]
    fn bad_ranges_are_refused() {
        let v4: IpAddr = "10.0.0.2".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        assert!(range_to_cidrs(v4, v6).is_err());
        assert!(range_to_cidrs(v4, "10.0.0.1".parse().unwrap()).is_err());
    }

    #[test]
    fn peer_specs() {
        let s = |spec: &str| -> Vec<String> {
            parse_peer_spec(spec)
                .unwrap()
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(s("10.0.0.0-10.255.255.255"), ["10.0.0.0/8"]);
        assert_eq!(s(" 10.0.0.0 - 10.0.0.255 "), ["10.0.0.0/24"]);
        assert_eq!(s("10.1.2.3/8"), ["10.0.0.0/8"]);
        assert_eq!(s("203.0.113.9"), ["203.0.113.9/32"]);
        assert_eq!(s("2001:db8::1"), ["2001:db8::1/128"]);
        assert!(parse_peer_spec("not-an-ip").is_err());
        assert!(parse_peer_spec("10.0.0.0/33").is_err());
    }
}
