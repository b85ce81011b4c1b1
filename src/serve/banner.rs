//! What `tern serve` prints on standard output at start: a ready-to-paste
//! `iceServers` entry with fresh REST credentials and a command to check the server.
//!
//! This is the operator's console, not the log: the shared secret itself is never
//! printed, only credentials derived from it that expire.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use crate::auth::{RestSecret, rest_credential};
use crate::config::Settings;
use crate::urls::server_urls;

use crate::net::relay_ips::public_host;

/// How long the printed credentials stay valid.
const CREDENTIAL_TTL_SECS: u64 = 24 * 3600;

/// `secret` signs the printed credentials (none: static users only, nothing printed).
pub fn print(
    settings: &Settings,
    secret: Option<&str>,
    relay_ips: &[IpAddr],
    advertised: &HashMap<IpAddr, IpAddr>,
    generated_secret: bool,
) {
    let Some(secret) = secret else {
        return;
    };
    let listen = settings.server.listen_addrs();
    let host = public_host(relay_ips, advertised, &listen);
    let port = listen.first().map_or(3478, SocketAddr::port);
    let expiry = crate::clock::unix_now() + CREDENTIAL_TTL_SECS;
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
        "urls": server_urls(&settings.server, settings.tls.is_enabled(), &url_host).into_iter().map(|(_, url)| url).collect::<Vec<_>>(),
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
