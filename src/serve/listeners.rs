//! Binding every listening socket the settings ask for, before the server reports
//! itself ready.

use anyhow::Context;
use std::net::SocketAddr;

use crate::config::{Listener, ServerSettings, Settings};
use crate::net::accept::StreamListener;
use crate::net::dtls::{self, DtlsListener};
use crate::net::stream::{self, Accept};
use crate::net::tls::TlsAcceptorSource;
use crate::net::udp;

pub struct Listeners {
    /// One list of UDP sockets per worker: each worker has its own socket on every
    /// UDP address (SO_REUSEPORT).
    pub udp: Vec<Vec<std::net::UdpSocket>>,
    pub streams: Vec<StreamListener>,
    pub dtls: Vec<DtlsListener>,
}

/// Binds UDP and TCP on `server.listen` (each unless switched off) and TLS on
/// `server.tls_listen` when a certificate is configured, and DTLS on
/// `server.dtls_listen` (which validation allows only with one). An explicitly configured
/// address must bind; a built-in IPv6 wildcard is skipped with a warning on hosts
/// without IPv6, so the default command works everywhere.
pub fn bind(
    settings: &Settings,
    tls: Option<&TlsAcceptorSource>,
    workers: usize,
) -> anyhow::Result<Listeners> {
    let server = &settings.server;
    let defaults = ServerSettings::default();
    let mut listeners = Listeners {
        udp: (0..workers).map(|_| Vec::new()).collect(),
        streams: Vec::new(),
        dtls: Vec::new(),
    };
    let auto_detect = |l: &Listener| l.auto_detect.unwrap_or(settings.tls.auto_detect);
    for l in &server.listen {
        let optional = server.listen == defaults.listen && l.addr.is_ipv6();
        if server.udp {
            listeners.bind_udp(l.addr, optional, "UDP", settings, workers)?;
        }
        if server.tcp {
            let detect_tls = tls.filter(|_| auto_detect(l)).cloned();
            let socket = optional_bind(l.addr, optional, "TCP", stream::bind_listener)?;
            listeners
                .streams
                .extend(socket.map(|socket| StreamListener {
                    socket,
                    accept: Accept::Plain(detect_tls),
                    proxy_protocol: l.proxy_protocol,
                }));
        }
    }
    // RFC 5780's addresses that no listener above covers: Binding only (the engine's
    // listener roles say so).
    for addr in server.nat_discovery_listeners() {
        listeners.bind_udp(addr, false, "UDP (NAT discovery)", settings, workers)?;
    }
    if let Some(source) = tls {
        for l in &server.tls_listen {
            let optional = server.tls_listen == defaults.tls_listen && l.addr.is_ipv6();
            let socket = optional_bind(l.addr, optional, "TLS", stream::bind_listener)?;
            let accept = Accept::Tls {
                source: source.clone(),
                plain_too: auto_detect(l),
            };
            listeners
                .streams
                .extend(socket.map(|socket| StreamListener {
                    socket,
                    accept,
                    proxy_protocol: l.proxy_protocol,
                }));
        }
        for l in &server.dtls_listen {
            let buffer = settings.limits.socket_buffer;
            let socket = optional_bind(l.addr, false, "DTLS", |a| dtls::bind(a, buffer))?;
            let source = source.clone();
            (listeners.dtls).extend(socket.map(|socket| DtlsListener { socket, source }));
        }
    } else if server.tls_listen != defaults.tls_listen && !server.tls_listen.is_empty() {
        anyhow::bail!("server.tls_listen is set but tls.cert/tls.key are not");
    }
    Ok(listeners)
}

impl Listeners {
    /// One UDP socket on `addr` for each worker.
    fn bind_udp(
        &mut self,
        addr: SocketAddr,
        optional: bool,
        what: &str,
        settings: &Settings,
        workers: usize,
    ) -> anyhow::Result<()> {
        let group = optional_bind(addr, optional, what, |a| {
            udp::bind_listeners(a, settings.limits.socket_buffer, workers)
        })?;
        for (worker, socket) in group.into_iter().flatten().enumerate() {
            self.udp[worker].push(socket);
        }
        Ok(())
    }
}

/// Binds with `bind`; when `optional`, a failure is a warning and `None`.
fn optional_bind<S>(
    addr: SocketAddr,
    optional: bool,
    what: &str,
    bind: impl FnOnce(SocketAddr) -> std::io::Result<S>,
) -> anyhow::Result<Option<S>> {
    match bind(addr) {
        Ok(socket) => {
            tracing::info!(%addr, "listening on {what}");
            Ok(Some(socket))
        }
        Err(e) if optional => {
            tracing::warn!("{what} listener {addr} skipped: {e}");
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| format!("cannot bind {what} listener {addr}")),
    }
}
