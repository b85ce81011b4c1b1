//! Value types of the config that validate themselves while being parsed.
//!
//! Validating inside `Deserialize` means the TOML parser reports the offending key's
//! line and column for free, so a bad value never reaches the server.

use serde::{Deserialize, Deserializer, de};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

pub use crate::core::{ListenerRole, PortRange};

/// A duration in whole seconds, bounded so that a typo cannot disable a timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seconds(pub u64);

impl Seconds {
    /// Longest accepted timer: one day. Anything longer is certainly a mistake for TURN.
    const MAX: u64 = 86_400;

    pub fn as_duration(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.0)
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u64::deserialize(d)?;
        if v == 0 || v > Self::MAX {
            return Err(de::Error::custom(format!(
                "{v} seconds is out of range (1 to {})",
                Self::MAX
            )));
        }
        Ok(Self(v))
    }
}

/// `external_ip` entry: either `"PUBLIC"` (advertised for every relay IP of its family)
/// or `"PRIVATE=PUBLIC"` (advertised for that one relay IP), as behind a cloud 1:1 NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExternalIp {
    pub private: Option<IpAddr>,
    pub public: IpAddr,
}

impl FromStr for ExternalIp {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parse = |p: &str| {
            p.trim()
                .parse::<IpAddr>()
                .map_err(|_| format!("{p:?} is not an IP address"))
        };
        match s.split_once('=') {
            Some((private, public)) => {
                let (private, public) = (parse(private)?, parse(public)?);
                if private.is_ipv4() != public.is_ipv4() {
                    return Err(format!("{s:?} maps between address families"));
                }
                Ok(Self {
                    private: Some(private),
                    public,
                })
            }
            None => Ok(Self {
                private: None,
                public: parse(s)?,
            }),
        }
    }
}

impl<'de> Deserialize<'de> for ExternalIp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// A listening address, written `"IP:PORT"` or
/// `{ addr = "IP:PORT", auto_detect = BOOL, proxy_protocol = BOOL, serve = "both"|"stun"|"turn" }`.
///
/// `auto_detect` says whether a stream listener tells TLS from plain TCP by the first
/// byte (a TLS record starts with 0x16), so one port such as 443 serves both. Unset, the
/// `tls.auto_detect` default applies.
///
/// `proxy_protocol` makes the TCP/TLS listener on this address expect a PROXY protocol
/// header (v1 or v2) from the sources in `server.proxy_protocol_from`, and take the
/// client's address from it. UDP on the same address is unaffected.
///
/// `serve` makes the listener (UDP and TCP, or TLS) answer STUN Binding only
/// (`"stun"`) or TURN only (`"turn"`); the other kind of request goes unanswered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    pub addr: std::net::SocketAddr,
    pub auto_detect: Option<bool>,
    pub proxy_protocol: bool,
    pub serve: ListenerRole,
}

impl From<std::net::SocketAddr> for Listener {
    fn from(addr: std::net::SocketAddr) -> Self {
        Self {
            addr,
            auto_detect: None,
            proxy_protocol: false,
            serve: ListenerRole::Both,
        }
    }
}

impl<'de> Deserialize<'de> for Listener {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ListenerVisitor;

        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            addr: std::net::SocketAddr,
            auto_detect: Option<bool>,
            #[serde(default)]
            proxy_protocol: bool,
            #[serde(default)]
            serve: ListenerRole,
        }

        impl<'de> de::Visitor<'de> for ListenerVisitor {
            type Value = Listener;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    r#""IP:PORT" or { addr = "IP:PORT", auto_detect = true|false, proxy_protocol = true|false, serve = "both"|"stun"|"turn" }"#,
                )
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Listener, E> {
                v.parse::<std::net::SocketAddr>()
                    .map(Listener::from)
                    .map_err(|_| E::custom(format!("{v:?} is not an IP:PORT address")))
            }

            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Listener, A::Error> {
                let t = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Listener {
                    addr: t.addr,
                    auto_detect: t.auto_detect,
                    proxy_protocol: t.proxy_protocol,
                    serve: t.serve,
                })
            }
        }

        d.deserialize_any(ListenerVisitor)
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// Whether channels are relayed by the kernel fast path (`relay.offload`), and whether it
/// also runs on the XDP hook (`relay.offload_xdp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OffloadMode {
    /// Used when the program loads and attaches; otherwise the reason is logged and
    /// everything is relayed in user space.
    #[default]
    Auto,
    Off,
    /// Refuse to start without it.
    On,
}

/// Which PROXY protocol header tern sends to a pass-through upstream, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyVersion {
    #[default]
    Off,
    /// The text header (`PROXY TCP4 ...`): nginx, Apache, most web servers.
    V1,
    /// The binary header: HAProxy, Envoy, Traefik.
    V2,
}

/// A REST username separator: exactly one character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Separator(pub char);

impl Default for Separator {
    fn default() -> Self {
        Self(':')
    }
}

impl<'de> Deserialize<'de> for Separator {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mut chars = s.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) if !c.is_ascii_digit() => Ok(Self(c)),
            _ => Err(de::Error::custom(
                "separator must be exactly one character that is not a digit",
            )),
        }
    }
}

/// The host part of a Host header or of `selftest.public_host` (`name`, `name:port`,
/// `[v6]` or `[v6]:port`), if it is made only of characters a host can have: it goes
/// into URLs.
pub fn host_without_port(header: &str) -> Option<String> {
    let host = if header.starts_with('[') {
        &header[..=header.find(']')?]
    } else {
        header.split(':').next()?
    };
    let allowed = |c: char| c.is_ascii_alphanumeric() || ".-:[]".contains(c);
    (!host.is_empty() && host.len() <= 255 && host.chars().all(allowed)).then(|| host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_ip_forms() {
        let e: ExternalIp = "203.0.113.7".parse().unwrap();
        assert_eq!(e.private, None);
        let e: ExternalIp = "10.0.0.5=203.0.113.7".parse().unwrap();
        assert_eq!(e.private, Some("10.0.0.5".parse().unwrap()));
        assert!("10.0.0.5=2001:db8::1".parse::<ExternalIp>().is_err());
        assert!("nope".parse::<ExternalIp>().is_err());
    }

    #[test]
    fn host_header_forms() {
        assert_eq!(
            host_without_port("turn.example.com:8443").unwrap(),
            "turn.example.com"
        );
        assert_eq!(host_without_port("127.0.0.1").unwrap(), "127.0.0.1");
        assert_eq!(
            host_without_port("[2001:db8::1]:8443").unwrap(),
            "[2001:db8::1]"
        );
        for bad in ["", "a b", "x\"y", "evil/path", "[::1"] {
            assert_eq!(host_without_port(bad), None, "{bad:?}");
        }
    }
}
