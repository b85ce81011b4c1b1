//! What `tern serve` prints on standard output at start: a ready-to-paste
//! `iceServers` entry with fresh REST credentials and a command to check the server.
//!
//! This is the operator's console, not the log: the shared secret itself is never
//! printed, only credentials derived from it that expire.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::auth::{RestSecret, rest_credential};
use crate::config::Settings;

/// How long the printed credentials stay valid.
const CREDENTIAL_TTL_SECS: u64 = 24 * 3600;

pub fn print(
    settings: &Settings,
    relay_ips: &[IpAddr],
    advertised: &HashMap<IpAddr, IpAddr>,
    generated_secret: bool,
) {
    let Some(secret) = settings.auth.secrets.first() else {
        return;
    };
    let listen = settings.server.listen_addrs();
    let host = public_host(relay_ips, advertised, &listen);
    let port = listen.first().map_or(3478, SocketAddr::port);
    let expiry = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + CREDENTIAL_TTL_SECS;
    let secret = RestSecret::new(secret.as_bytes().to_vec());
    let (username, password) = rest_credential(
        &secret,
        expiry,
        Some("tern"),
        settings.auth.rest_separator.0,
    );
    let url_host = match host {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    };
    let entry = serde_json::json!({
        "urls": ice_urls(settings, &url_host, port),
        "username": username,
        "credential": password,
    });
    println!("tern is serving. iceServers entry (valid 24 h):");
    println!("{entry}");
    let transport = if settings.server.udp { "udp" } else { "tcp" };
    println!(
        "Check it from another machine (its address must be a public one the peer policy allows):"
    );
    println!(
        "  tern probe 'turn:{url_host}:{port}?transport={transport}' --user '{username}' --pass '{password}'"
    );
    println!("or from this host, client to client through two allocations (coturn's tools):");
    let tcp_flag = if settings.server.udp { "" } else { "-t " };
    println!(
        "  turnutils_uclient {tcp_flag}-y -n 10 -u '{username}' -w '{password}' -p {port} {host}"
    );
    if settings.tls.is_enabled() {
        println!("For turns: URLs, use the DNS name your certificate is for instead of the IP.");
    }
    if generated_secret {
        println!(
            "The REST secret was generated for this run only: set TERN_SECRET or auth.secrets to keep credentials valid across restarts."
        );
    }
}

/// One URL per transport that is on. The `turns:` URL carries an IP: browsers check
/// the certificate against the name in the URL, so use the certificate's DNS name.
fn ice_urls(settings: &Settings, host: &str, port: u16) -> Vec<String> {
    let mut urls = Vec::new();
    if settings.server.udp {
        urls.push(format!("turn:{host}:{port}?transport=udp"));
    }
    if settings.server.tcp {
        urls.push(format!("turn:{host}:{port}?transport=tcp"));
    }
    if let Some(tls) = settings
        .server
        .tls_listen
        .first()
        .filter(|_| settings.tls.is_enabled())
    {
        urls.push(format!("turns:{host}:{}?transport=tcp", tls.addr.port()));
    }
    urls
}

/// The address clients should use: the advertised public IP of the first IPv4 relay,
/// or the first relay IP, or the first listen address.
fn public_host(
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
