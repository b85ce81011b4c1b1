//! Operator tools in the spirit of coturn's turnutils: `tern stun`, `tern probe`,
//! `tern peer`, `tern creds` and `tern selftest-url`, and the admin API's `tern sessions`, `kill`, `drain`. They answer the questions asked when a deployment
//! does not work ("what is my public address?", "does this ICE server URL work from
//! here, and if not, why?") with the project's own blocking [`crate::client`].
//!
//! Every tool bounds its network I/O with timeouts and exits 0 on success, 1 on
//! failure and 2 on a usage error.

pub mod admin;
pub mod creds;
pub mod diagnosis;
pub mod nat_type;
pub mod peer;
pub mod probe;
pub mod selftest_url;
pub mod stun;

use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::client::{ClientTransport, Transport, TurnClient};

/// How long a TCP or TLS connection may take to come up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Exit status of a usage error (as clap uses for its own).
pub fn usage_error(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("tern: {msg}");
    ExitCode::from(2)
}

/// The first address `host:port` resolves to (std's resolver: names and literals).
pub fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address")))
}

/// Splits `HOST:PORT` (IPv6 hosts in brackets) as `tern stun` takes it.
pub fn split_host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port.parse().ok()?))
}

/// A client for `server` over `transport`. UDP binds the unspecified address so the
/// kernel picks the interface that reaches the server (the project's test client
/// binds loopback, which only reaches a local server). TLS verifies against the
/// system roots for `server_name`, or accepts anything with `insecure`.
pub fn connect(
    server: SocketAddr,
    transport: Transport,
    server_name: &str,
    insecure: bool,
    credentials: (&str, &str),
) -> io::Result<TurnClient> {
    let (user, pass) = credentials;
    match transport {
        Transport::Udp => {
            let local: SocketAddr = if server.is_ipv6() {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            };
            TurnClient::with_socket(UdpSocket::bind(local)?, server, user, pass)
        }
        Transport::Tcp => TurnClient::connect_tcp(server, user, pass),
        Transport::Tls => {
            let stream = tls_transport(server, server_name, insecure)?;
            Ok(TurnClient::with_transport(stream, server, user, pass))
        }
        // Never parsed for the tools (see `client::args::transport_parser`).
        Transport::Dtls => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "tern's client tools do not speak DTLS",
        )),
    }
}

fn tls_transport(
    server: SocketAddr,
    server_name: &str,
    insecure: bool,
) -> io::Result<ClientTransport> {
    let config = if insecure {
        crate::client::tls::client_config(&crate::client::tls::TlsTrust::AnyCertificate)
            .map_err(io::Error::other)?
    } else {
        system_config()?
    };
    ClientTransport::tls_with_config(server, server_name, config, CONNECT_TIMEOUT)
}

/// Where distributions keep the bundle of trusted roots (no extra crate needed).
const SYSTEM_ROOTS: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

fn system_config() -> io::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = SYSTEM_ROOTS
        .iter()
        .find(|p| std::path::Path::new(p).exists())
    {
        // One unreadable certificate in a system bundle should not veto the rest.
        let certs = CertificateDer::pem_file_iter(path).map_err(io::Error::other)?;
        for cert in certs.flatten() {
            let _ = roots.add(cert);
        }
    }
    crate::client::transport::tls_config(roots)
}

/// Milliseconds of a duration, for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_host_and_port() {
        assert_eq!(
            split_host_port("a.example:3478"),
            Some(("a.example".into(), 3478))
        );
        assert_eq!(split_host_port("[::1]:3478"), Some(("::1".into(), 3478)));
        assert_eq!(split_host_port("a.example"), None);
        assert_eq!(split_host_port(":3478"), None);
        assert_eq!(split_host_port("a:99999"), None);
    }
}
