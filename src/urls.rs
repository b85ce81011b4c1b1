//! ICE server URLs as a browser's `RTCPeerConnection` takes them (RFC 7065):
//! `turn:host[:port][?transport=udp|tcp]` and `turns:host[:port][?transport=tcp]`.
//! Parsed here rather than by a URL crate because these are not hierarchical URLs
//! (no `//`), and `tern probe` should accept exactly what a browser accepts.

use crate::client::Transport;

/// Default port of `turn:` (RFC 8656 §3).
pub const TURN_PORT: u16 = 3478;
/// Default port of `turns:`.
pub const TURNS_PORT: u16 = 5349;

/// The ICE server URLs of a server run with `settings` and reached at `host` (a name,
/// an IPv4 literal or a bracketed IPv6 literal): one per transport that is on, named
/// `udp`, `tcp` or `tls`. A `turns:` URL should carry the certificate's DNS name, which
/// browsers check.
pub fn server_urls(
    s: &crate::config::ServerSettings,
    tls_enabled: bool,
    host: &str,
) -> Vec<(&'static str, String)> {
    let port = s.listen.first().map(|l| l.addr.port());
    let tls_port = s.tls_listen.first().map(|l| l.addr.port());
    [
        ("udp", port.filter(|_| s.udp), "turn", "udp"),
        ("tcp", port.filter(|_| s.tcp), "turn", "tcp"),
        ("tls", tls_port.filter(|_| tls_enabled), "turns", "tcp"),
    ]
    .into_iter()
    .filter_map(|(name, port, scheme, transport)| {
        Some((
            name,
            format!("{scheme}:{host}:{}?transport={transport}", port?),
        ))
    })
    .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceUrl {
    /// A name or an IP literal (IPv6 without its brackets).
    pub host: String,
    pub port: u16,
    /// `turns:` is TLS over TCP; `turn:` is UDP unless `?transport=tcp`.
    pub transport: Transport,
}

impl IceUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (scheme, rest) = text
            .split_once(':')
            .ok_or_else(|| format!("{text}: not a turn: or turns: URL"))?;
        let secure = match scheme.to_ascii_lowercase().as_str() {
            "turn" => false,
            "turns" => true,
            "stun" | "stuns" => return Err(format!("{text}: a STUN URL; use `tern stun`")),
            _ => return Err(format!("{text}: scheme must be turn: or turns:")),
        };
        let (hostport, query) = match rest.split_once('?') {
            Some((h, q)) => (h, Some(q)),
            None => (rest, None),
        };
        let transport = match (query, secure) {
            (None, false) => Transport::Udp,
            (None, true) => Transport::Tls,
            (Some(q), _) => {
                let value = q
                    .strip_prefix("transport=")
                    .ok_or_else(|| format!("{text}: the only query allowed is ?transport="))?;
                match (value.to_ascii_lowercase().as_str(), secure) {
                    ("udp", false) => Transport::Udp,
                    ("tcp", false) => Transport::Tcp,
                    ("tcp", true) => Transport::Tls,
                    ("udp", true) => {
                        return Err(format!("{text}: turns: over UDP (DTLS) is not supported"));
                    }
                    _ => return Err(format!("{text}: transport must be udp or tcp")),
                }
            }
        };
        let default_port = if secure { TURNS_PORT } else { TURN_PORT };
        let (host, port) = split_host(hostport, default_port)
            .ok_or_else(|| format!("{text}: bad host or port"))?;
        Ok(Self {
            host,
            port,
            transport,
        })
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host(text: &str, default_port: u16) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (host, port)
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return None;
    }
    let port = match port {
        Some(p) => p.parse().ok().filter(|&p| p != 0)?,
        None => default_port,
    };
    Some((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(host: &str, port: u16, transport: Transport) -> IceUrl {
        IceUrl {
            host: host.into(),
            port,
            transport,
        }
    }

    #[test]
    fn parses_browser_forms() {
        let cases = [
            (
                "turn:turn.example.com",
                url("turn.example.com", 3478, Transport::Udp),
            ),
            ("turn:1.2.3.4:3479", url("1.2.3.4", 3479, Transport::Udp)),
            ("turn:h:80?transport=tcp", url("h", 80, Transport::Tcp)),
            ("turn:h?transport=udp", url("h", 3478, Transport::Udp)),
            ("turns:h", url("h", 5349, Transport::Tls)),
            ("turns:h:443?transport=tcp", url("h", 443, Transport::Tls)),
            ("TURN:[::1]:3478", url("::1", 3478, Transport::Udp)),
            (
                "turn:[2001:db8::1]",
                url("2001:db8::1", 3478, Transport::Udp),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(IceUrl::parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn rejects_what_a_browser_rejects() {
        for bad in [
            "",
            "turn",
            "turn:",
            "http://h",
            "stun:h",
            "turn://h:3478",
            "turn:h:0",
            "turn:h:port",
            "turn:h?transport=sctp",
            "turn:h?foo=bar",
            "turns:h?transport=udp",
            "turn:[::1",
            "turn:user@h",
        ] {
            assert!(IceUrl::parse(bad).is_err(), "{bad:?}");
        }
    }
}
