//! The PROXY protocol (HAProxy's specification, versions 1 and 2): reading the header a
//! load balancer or SNI router puts before a client's bytes, and writing one for an
//! upstream that tern passes a connection on to.
//!
//! Parsing is the `ppp` crate's; this module bounds what is read (a header is small, a
//! stream of bytes that never becomes one is cut off), tells a missing header from a
//! malformed one, and keeps whatever the client sent behind the header.

use std::net::SocketAddr;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use crate::config::ProxyVersion;
use ppp::PartialResult;

/// The most bytes read while waiting for a whole header. A v1 header is at most 107
/// bytes; a v2 header is 16 bytes, the addresses (at most 216) and TLVs, which load
/// balancers keep to a few hundred bytes (TLS details, a VPC endpoint id).
pub const MAX_HEADER: usize = 4096;

/// The v2 signature, and the start of every v1 header.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 header, end of line included.
const V1_MAX: usize = 107;

/// What a header said about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The client's address, as the proxy saw it.
    Client(SocketAddr),
    /// The proxy speaking for itself (v2 LOCAL, v1 UNKNOWN, a UNIX socket): a health
    /// check, for which the connection's own address stands.
    Local,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no PROXY protocol header (the connection starts with something else)")]
    Missing,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(String),
    #[error("PROXY protocol header longer than {MAX_HEADER} bytes")]
    TooLong,
    #[error("no whole PROXY protocol header before the deadline")]
    TimedOut,
    #[error("connection closed before a whole PROXY protocol header")]
    Closed,
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

impl ProxyError {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed(_) | Self::TooLong => "malformed",
            Self::TimedOut => "timeout",
            Self::Closed | Self::Io(_) => "closed",
        }
    }
}

/// Whether `bytes` (the first ones a connection sent, at least one) could be the start
/// of a PROXY header.
pub fn looks_like_header(bytes: &[u8]) -> bool {
    [V2_SIGNATURE, V1_PREFIX]
        .iter()
        .any(|sig| !bytes.is_empty() && sig.starts_with(&bytes[..bytes.len().min(sig.len())]))
}

/// Reads one header from `stream` by `deadline`. Returns what it says and the bytes
/// read past it (the start of the client's own data), which the caller must treat as
/// the first bytes of the stream.
pub async fn read_header(
    stream: &mut TcpStream,
    deadline: Instant,
) -> Result<(Origin, Vec<u8>), ProxyError> {
    let mut buf = Vec::with_capacity(256);
    loop {
        let mut chunk = [0u8; 512];
        let room = (MAX_HEADER - buf.len()).min(chunk.len());
        let n = match timeout_at(deadline, stream.read(&mut chunk[..room])).await {
            Err(_) => return Err(ProxyError::TimedOut),
            Ok(Ok(0)) => return Err(ProxyError::Closed),
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(e.into()),
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some((origin, len)) = parse(&buf)? {
            buf.drain(..len);
            return Ok((origin, buf));
        }
        if buf.len() >= MAX_HEADER {
            return Err(ProxyError::TooLong);
        }
    }
}

/// The header at the start of `buf` and its length, `None` while it is incomplete.
fn parse(buf: &[u8]) -> Result<Option<(Origin, usize)>, ProxyError> {
    if !looks_like_header(buf) {
        return Err(ProxyError::Missing);
    }
    if buf.starts_with(V1_PREFIX) || V1_PREFIX.starts_with(buf) {
        return parse_v1(buf);
    }
    let header = ppp::v2::Header::try_from(buf);
    if header.is_incomplete() {
        return Ok(None);
    }
    match header {
        Ok(h) => {
            use ppp::v2::{Addresses, Command, Protocol};
            let origin = match (h.command, h.protocol, h.addresses) {
                (Command::Local, _, _) => Origin::Local,
                (Command::Proxy, Protocol::Datagram, _) => {
                    return Err(ProxyError::Malformed(
                        "a datagram (UDP) header on a stream".into(),
                    ));
                }
                (Command::Proxy, _, Addresses::IPv4(a)) => {
                    Origin::Client(SocketAddr::from((a.source_address, a.source_port)))
                }
                (Command::Proxy, _, Addresses::IPv6(a)) => {
                    Origin::Client(SocketAddr::from((a.source_address, a.source_port)))
                }
                (Command::Proxy, _, Addresses::Unspecified | Addresses::Unix(_)) => Origin::Local,
            };
            Ok(Some((origin, h.len())))
        }
        Err(e) => Err(ProxyError::Malformed(e.to_string())),
    }
}

/// A v1 header is one line: it is parsed once its end is in, so that a line cut
/// anywhere by the network never reads as a shorter valid one.
fn parse_v1(buf: &[u8]) -> Result<Option<(Origin, usize)>, ProxyError> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(ProxyError::Malformed(
                "no end of line within 107 bytes".into(),
            ))
        } else {
            Ok(None)
        };
    };
    let line = std::str::from_utf8(&buf[..end + 2])
        .map_err(|_| ProxyError::Malformed("not ASCII".into()))?;
    let header =
        ppp::v1::Header::try_from(line).map_err(|e| ProxyError::Malformed(e.to_string()))?;
    let origin = match header.addresses {
        ppp::v1::Addresses::Tcp4(a) => {
            Origin::Client(SocketAddr::from((a.source_address, a.source_port)))
        }
        ppp::v1::Addresses::Tcp6(a) => {
            Origin::Client(SocketAddr::from((a.source_address, a.source_port)))
        }
        ppp::v1::Addresses::Unknown => Origin::Local,
    };
    Ok(Some((origin, line.len())))
}

/// The header announcing a connection from `client` to `server`, or nothing for
/// [`ProxyVersion::Off`].
pub fn encode(version: ProxyVersion, client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    // A v4 client on a v6 socket arrives as a mapped address; both ends must be of
    // one family in a header.
    let (client, server) = match (client, server) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => {
            (client, server)
        }
        _ => (to_v6(client), to_v6(server)),
    };
    match version {
        ProxyVersion::Off => Vec::new(),
        ProxyVersion::V1 => {
            let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {family} {} {} {} {}\r\n",
                client.ip(),
                server.ip(),
                client.port(),
                server.port()
            )
            .into_bytes()
        }
        ProxyVersion::V2 => ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (client, server),
        )
        .build()
        .expect("a header of two socket addresses fits in memory"),
    }
}

fn to_v6(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) => SocketAddr::from((a.ip().to_ipv6_mapped(), a.port())),
        v6 => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> SocketAddr {
        "203.0.113.7:40000".parse().unwrap()
    }

    fn server() -> SocketAddr {
        "192.0.2.1:443".parse().unwrap()
    }

    #[test]
    fn both_versions_round_trip_with_the_bytes_behind_them() {
        for version in [ProxyVersion::V1, ProxyVersion::V2] {
            let mut bytes = encode(version, client(), server());
            let header_len = bytes.len();
            bytes.extend_from_slice(b"\x00\x01rest");
            let (origin, len) = parse(&bytes).unwrap().unwrap();
            assert_eq!(origin, Origin::Client(client()), "{version:?}");
            assert_eq!(len, header_len, "{version:?}");
            // Every strict prefix is incomplete, never an error.
            for cut in 1..header_len {
                assert!(parse(&bytes[..cut]).unwrap().is_none(), "{version:?} {cut}");
            }
        }
        let v6: SocketAddr = "[2001:db8::7]:5000".parse().unwrap();
        let bytes = encode(ProxyVersion::V2, v6, "[2001:db8::1]:443".parse().unwrap());
        assert_eq!(parse(&bytes).unwrap().unwrap().0, Origin::Client(v6));
    }

    #[test]
    fn local_and_unknown_stand_for_the_connection_itself() {
        let (origin, _) = parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap();
        assert_eq!(origin, Origin::Local);
        let local = ppp::v2::Builder::new(0x20, 0x00).build().unwrap();
        assert_eq!(parse(&local).unwrap().unwrap().0, Origin::Local);
    }

    #[test]
    fn other_bytes_are_missing_or_malformed() {
        // A STUN Binding request and a TLS ClientHello: no header at all.
        assert!(matches!(
            parse(&[0x00, 0x01, 0x00]),
            Err(ProxyError::Missing)
        ));
        assert!(matches!(
            parse(&[0x16, 0x03, 0x01]),
            Err(ProxyError::Missing)
        ));
        assert!(matches!(
            parse(b"PROXY TCP4 1.2.3.4 nonsense\r\n"),
            Err(ProxyError::Malformed(_))
        ));
        assert!(looks_like_header(b"PRO"));
        assert!(!looks_like_header(b"GET / HTTP/1.1"));
    }

    #[test]
    fn mixed_families_are_sent_as_v6() {
        let header = encode(
            ProxyVersion::V1,
            client(),
            "[2001:db8::1]:443".parse().unwrap(),
        );
        let text = String::from_utf8(header).unwrap();
        assert!(text.starts_with("PROXY TCP6 ::ffff:203.0.113.7 2001:db8::1 40000 443"));
        assert!(encode(ProxyVersion::Off, client(), server()).is_empty());
    }
}
