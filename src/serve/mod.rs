//! `tern serve`: turns validated settings into a running server.
//!
//! Order matters: everything that can fail on bad input (credentials, policy, bind) is
//! done before the server reports itself ready, and nothing is bound before the config
//! has been validated by the caller.

mod banner;
mod listeners;
pub mod relay_ips;

use anyhow::Context;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use crate::auth::{
    Credentials, LongTermKey, NonceIssuer, RestSecret, StaticSecret, UnauthorizedLimiter,
};
use crate::config::Settings;
use crate::core::{Engine, EngineConfig};
use crate::net::stream::{self, ConnectionLimits, StreamConfig};
use crate::net::tls::{CertPaths, TlsAcceptorSource};
use crate::net::worker::{self, WorkerConfig};
use crate::policy::{OwnRelays, PeerPolicy};

/// Runs the server until SIGINT or SIGTERM.
pub async fn run(mut settings: Settings) -> anyhow::Result<()> {
    let generated_secret = settings.auth.users.is_empty() && settings.auth.secrets.is_empty();
    if generated_secret {
        settings.auth.secrets.push(random_token(32));
    }
    let relay_ips = relay_ips::relay_ips(&settings.relay.ips, &settings.server.listen_addrs());
    let advertised_ips = relay_ips::advertised_ips(&relay_ips, &settings.relay.external_ips);
    let credentials = Arc::new(credentials(&settings)?);
    let mut own_ips = relay_ips.clone();
    own_ips.extend(advertised_ips.values().copied());
    let policy = Arc::new(PeerPolicy::new(
        settings.peers.allowed.clone(),
        settings.peers.denied.clone(),
        OwnRelays {
            ips: own_ips,
            ports: settings.relay.ports.as_range(),
        },
    ));
    let nonce_key = match &settings.auth.nonce_key {
        Some(key) => key.as_bytes().to_vec(),
        None => random_token(32).into_bytes(),
    };
    let a = &settings.auth;
    let limits = &settings.limits;
    let limiter = UnauthorizedLimiter::new(
        a.unauthorized_per_second,
        a.unauthorized_burst,
        limits.rate_limit_slots,
        rand::rng().random(),
    );
    let r = &settings.relay;
    let config = EngineConfig {
        software: settings.server.software.clone(),
        relay_ips: relay_ips.clone(),
        advertised_ips: advertised_ips.clone(),
        ports: r.ports,
        default_lifetime: r.default_lifetime.as_duration(),
        max_lifetime: r.max_lifetime.as_duration(),
        permission_lifetime: r.permission_lifetime.as_duration(),
        channel_lifetime: r.channel_lifetime.as_duration(),
        allow_refresh_after_expiry: a.allow_refresh_after_expiry,
        total_allocations: limits.total_allocations,
        user_allocations: limits.user_allocations,
        max_permissions: limits.permissions_per_allocation,
        max_channels: limits.channels_per_allocation,
    };
    let engine = Engine::new(
        config,
        credentials,
        policy,
        NonceIssuer::new(&nonce_key, a.nonce_lifetime.0),
        limiter,
        rand::rngs::StdRng::from_os_rng(),
    );

    let tls = load_tls(&settings)?;
    let listeners = listeners::bind(&settings, tls.as_ref())?;
    tracing::info!(relay_ips = ?relay_ips, ports = %r.ports, "relaying");
    banner::print(&settings, &relay_ips, &advertised_ips, generated_secret);

    let (stop_tx, stop_rx) = watch::channel(false);
    let (stream_tx, stream_rx) = mpsc::channel(limits.relay_queue);
    let stream_config = StreamConfig {
        handshake_timeout: settings.tls.handshake_timeout.as_duration(),
        idle_timeout: limits.connection_idle_timeout.as_duration(),
        frame_timeout: limits.frame_timeout.as_duration(),
        max_frame: limits.max_frame,
        write_queue: limits.write_queue,
        limits: ConnectionLimits::new(limits.max_connections, limits.max_connections_per_ip),
    };
    for (listener, accept) in listeners.streams {
        tokio::spawn(stream::serve(
            listener,
            accept,
            stream_config.clone(),
            stream_tx.clone(),
            stop_rx.clone(),
        ));
    }
    drop(stream_tx);
    let worker_config = WorkerConfig {
        socket_buffer: limits.socket_buffer,
        relay_queue: limits.relay_queue,
    };
    let worker = tokio::spawn(worker::run(
        engine,
        listeners.udp,
        stream_rx,
        worker_config,
        stop_rx,
    ));
    wait_for_stop(tls.as_ref()).await?;
    let _ = stop_tx.send(true);
    worker.await.context("worker panicked")?;
    tracing::info!("stopped");
    Ok(())
}

/// Loads the TLS certificate when one is configured; a broken one fails the start.
fn load_tls(settings: &Settings) -> anyhow::Result<Option<TlsAcceptorSource>> {
    let (Some(cert), Some(key)) = (&settings.tls.cert, &settings.tls.key) else {
        return Ok(None);
    };
    let paths = CertPaths {
        cert: cert.clone(),
        key: key.clone(),
    };
    Ok(Some(TlsAcceptorSource::load(paths)?))
}

/// How often certificate files are checked for changes (two `stat` calls).
const CERT_WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits for SIGINT or SIGTERM. Meanwhile SIGHUP, or a change of the files on
/// disk, reloads the TLS certificate for new connections; established ones and every
/// allocation are untouched, and a broken new certificate leaves the old one in use.
async fn wait_for_stop(tls: Option<&TlsAcceptorSource>) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut watch = tokio::time::interval(CERT_WATCH_INTERVAL);
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => match tls {
                Some(source) => report_reload("SIGHUP", source.reload()),
                None => tracing::info!("SIGHUP: no TLS certificate to reload"),
            },
            _ = watch.tick() => {
                if let Some(result) = tls.and_then(TlsAcceptorSource::reload_if_changed) {
                    report_reload("certificate files changed", result);
                }
            }
        }
    }
}

fn report_reload(why: &str, result: Result<(), crate::net::tls::TlsError>) {
    match result {
        Ok(()) => tracing::info!("{why}: TLS certificate reloaded"),
        Err(e) => {
            tracing::error!("{why}: TLS certificate not reloaded, the old one stays in use: {e}")
        }
    }
}

fn credentials(settings: &Settings) -> anyhow::Result<Credentials> {
    let mut users = HashMap::new();
    for user in &settings.auth.users {
        let secret = match (&user.password, &user.key) {
            (_, Some(key)) => StaticSecret::Key(
                LongTermKey::from_hex(key)
                    .with_context(|| format!("auth.users {:?}", user.name))?,
            ),
            (Some(password), None) => StaticSecret::Password(password.clone()),
            (None, None) => anyhow::bail!("auth.users {:?}: no password or key", user.name),
        };
        users.insert(user.name.clone(), secret);
    }
    let secrets = settings
        .auth
        .secrets
        .iter()
        .map(|s| RestSecret::new(s.as_bytes().to_vec()))
        .collect();
    Ok(Credentials::new(
        settings.server.realm.clone(),
        users,
        secrets,
        settings.auth.rest_separator.0,
    ))
}

/// A random URL-safe token of `len` characters, for generated secrets and keys.
fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}
