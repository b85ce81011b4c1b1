//! Plain-words explanations of why a probe failed, aimed at the operator who has to
//! fix it: each names the likely cause and the knob to turn, rather than an error code.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};

use rustls::CertificateError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Diagnosis {
    Unresolvable {
        host: String,
        error: String,
    },
    /// Nothing answered on UDP, or TCP was refused or timed out.
    Unreachable,
    Tls(String),
    CredentialsRefused {
        realm: Option<String>,
        /// Expiry of a REST username, to compare with the local clock.
        expiry: Option<u64>,
        now: u64,
    },
    NonceLoop,
    PeerDenied,
    Quota,
    NoRelayPorts,
    PrivateRelay {
        relay: SocketAddr,
    },
    EchoLost,
    Other(String),
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unresolvable { host, error } => write!(f, "cannot resolve {host}: {error}"),
            Self::Unreachable => f.write_str(
                "unreachable: is the port open? open 3478/udp+tcp, 5349/tcp and the relay range",
            ),
            Self::Tls(why) => write!(f, "TLS failed: {why}"),
            Self::CredentialsRefused { realm, expiry, now } => {
                let realm = realm.as_deref().unwrap_or("?");
                write!(
                    f,
                    "credentials refused (realm {realm}): wrong password/secret, \
                     or expired REST credential / clock skew"
                )?;
                if let Some(expiry) = expiry {
                    write!(f, " (username expiry {expiry} vs now {now})")?;
                }
                Ok(())
            }
            Self::NonceLoop => f.write_str(
                "nonce problem: the server keeps answering 438 Stale Nonce to a fresh nonce \
                 (several servers behind one address without shared nonces?)",
            ),
            Self::PeerDenied => f.write_str(
                "peer address denied by the server's peer policy (403): allow the peer's range",
            ),
            Self::Quota => {
                f.write_str("allocation quota reached (486): too many allocations for this user")
            }
            Self::NoRelayPorts => {
                f.write_str("no relay ports left (508): widen the relay port range")
            }
            Self::PrivateRelay { relay } => write!(
                f,
                "relay address is private ({relay}) while the server's is public: \
                 set external_ip"
            ),
            Self::EchoLost => f.write_str(
                "echo never came back: relay port range blocked by a firewall, \
                 or peer unreachable",
            ),
            Self::Other(why) => f.write_str(why),
        }
    }
}

impl Diagnosis {
    /// The diagnosis of a failed connect (TCP or TLS) or exchange error.
    pub fn from_io(e: &io::Error) -> Self {
        if let Some(tls) = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Self::Tls(tls_words(tls));
        }
        match e.kind() {
            io::ErrorKind::ConnectionRefused
            | io::ErrorKind::TimedOut
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::UnexpectedEof => Self::Unreachable,
            _ => Self::Other(e.to_string()),
        }
    }

    /// The diagnosis of an error response to a request.
    pub fn from_code(code: u16) -> Self {
        match code {
            403 => Self::PeerDenied,
            438 => Self::NonceLoop,
            486 => Self::Quota,
            508 => Self::NoRelayPorts,
            c => Self::Other(format!("the server answered with error {c}")),
        }
    }
}

/// What a certificate problem means for the operator.
fn tls_words(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "certificate expired: renew it (and reload the server)".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "certificate not valid yet: check the clocks".into()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "certificate is for another name: use the name on the certificate in the URL".into()
            }
            CertificateError::UnknownIssuer => "certificate untrusted (unknown issuer): \
                 serve the full chain (fullchain.pem), or --tls-insecure for a test"
                .into(),
            CertificateError::Revoked => "certificate revoked".into(),
            // webpki reports a self-signed certificate this way (CaUsedAsEndEntity).
            CertificateError::Other(why) => format!(
                "certificate untrusted ({why}): self-signed? use a CA-issued certificate, \
                 or --tls-insecure for a test"
            ),
            other => format!("bad certificate: {other:?}"),
        },
        rustls::Error::NoApplicationProtocol => {
            "no common ALPN protocol (the client offers stun.turn)".into()
        }
        other => other.to_string(),
    }
}

/// RFC 1918, CGNAT (RFC 6598), loopback, link-local and IPv6 unique-local addresses:
/// not reachable from the Internet.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges() {
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "127.0.0.1",
            "fd00::1",
        ] {
            assert!(is_private(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["203.0.113.5", "100.128.0.1", "8.8.8.8", "2001:db8::1"] {
            assert!(!is_private(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn words_name_the_fix() {
        let refused = Diagnosis::CredentialsRefused {
            realm: Some("r".into()),
            expiry: Some(5),
            now: 9,
        };
        assert!(refused.to_string().contains("realm r"));
        assert!(refused.to_string().contains("expiry 5 vs now 9"));
        assert_eq!(Diagnosis::from_code(403), Diagnosis::PeerDenied);
        assert_eq!(Diagnosis::from_code(508), Diagnosis::NoRelayPorts);
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(Diagnosis::from_io(&refused), Diagnosis::Unreachable);
        let expired = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::Expired),
        );
        assert!(Diagnosis::from_io(&expired).to_string().contains("expired"));
    }
}
