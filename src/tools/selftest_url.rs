//! `tern selftest-url`: the links to the self-test page and a call room, read from the
//! server's config (they carry the token, so they are printed only on request).

use std::net::IpAddr;
use std::process::ExitCode;

use crate::config::{Redacted, Settings};
use crate::net::relay_ips::{advertised_ips, public_host, relay_ips};
use crate::selftest::valid_room_name;
use clap::Args;
use std::path::PathBuf;

/// `tern selftest-url`: see [`crate::tools::selftest_url`].
#[derive(Debug, Args)]
pub struct SelftestUrlArgs {
    /// The server's TOML config (with a `[selftest]` section).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Host for the links; default selftest.public_host, else the server's public
    /// relay address. With HTTPS, use the name the certificate is for.
    #[arg(long)]
    pub host: Option<String>,
    /// Name of the call room; default a random one.
    #[arg(long)]
    pub room: Option<String>,
}

pub fn main(args: &SelftestUrlArgs) -> ExitCode {
    match links(args) {
        Ok((check, call)) => {
            println!("Check page (one browser): {check}");
            println!("Call room (open on two devices): {call}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tern selftest-url: {e}");
            ExitCode::from(2)
        }
    }
}

fn links(args: &SelftestUrlArgs) -> Result<(String, String), String> {
    let settings = Settings::load(&args.config).map_err(|e| e.to_string())?;
    let t = &settings.selftest;
    let (Some(listen), Some(token)) = (t.listen, t.token.as_ref().map(Redacted::expose)) else {
        return Err(format!(
            "{}: selftest.listen and selftest.token are not set (see the [selftest] section of config/tern.toml)",
            args.config.display()
        ));
    };
    let room = match &args.room {
        Some(room) if valid_room_name(room) => room.clone(),
        Some(room) => return Err(format!("--room {room:?}: use 1 to 64 of A-Z a-z 0-9 - _")),
        None => crate::token::random_token(10).replace(['-', '_'], "x"),
    };
    let host = match args.host.as_ref().or(t.public_host.as_ref()) {
        Some(host) => host.clone(),
        None if !listen.ip().is_unspecified() => url_host(listen.ip()),
        None => {
            let listen_addrs = settings.server.listen_addrs();
            let relays = relay_ips(&settings.relay.ips, &listen_addrs);
            let advertised = advertised_ips(&relays, &settings.relay.external_ips);
            url_host(public_host(&relays, &advertised, &listen_addrs))
        }
    };
    // HTTPS whenever a certificate is configured (config validation allows plain HTTP
    // only on loopback).
    let scheme = if settings.tls.is_enabled() {
        "https"
    } else {
        "http"
    };
    let base = format!("{scheme}://{host}:{}", listen.port());
    Ok((
        format!("{base}/check?token={token}"),
        format!("{base}/call?room={room}&token={token}"),
    ))
}

fn url_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    }
}
