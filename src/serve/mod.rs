//! `tern serve`: turns validated settings into a running server.
//!
//! Order matters: everything that can fail on bad input (credentials, policy, bind) is
//! done before the server reports itself ready, and nothing is bound before the config
//! has been validated by the caller.

mod banner;
pub mod relay_ips;

use anyhow::Context;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::auth::{
    Credentials, LongTermKey, NonceIssuer, RestSecret, StaticSecret, UnauthorizedLimiter,
};
use crate::config::Settings;
use crate::core::{Engine, EngineConfig};
use crate::net::udp;
use crate::policy::{OwnRelays, PeerPolicy};

/// Runs the server until SIGINT or SIGTERM.
pub async fn run(mut settings: Settings) -> anyhow::Result<()> {
    let generated_secret = settings.auth.users.is_empty() && settings.auth.secrets.is_empty();
    if generated_secret {
        settings.auth.secrets.push(random_token(32));
    }
    let relay_ips = relay_ips::relay_ips(&settings.relay.ips, &settings.server.listen);
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

    let listeners = bind_listeners(&settings)?;
    tracing::info!(relay_ips = ?relay_ips, ports = %r.ports, "relaying");
    banner::print(&settings, &relay_ips, &advertised_ips, generated_secret);

    let (stop_tx, stop_rx) = watch::channel(false);
    let worker = tokio::spawn(udp::run(
        engine,
        listeners,
        limits.socket_buffer,
        limits.relay_queue,
        stop_rx,
    ));
    wait_for_stop().await?;
    let _ = stop_tx.send(true);
    worker.await.context("worker panicked")?;
    tracing::info!("stopped");
    Ok(())
}

/// Binds every listen address. An explicitly configured address must bind; the
/// built-in IPv6 wildcard is skipped with a warning on hosts without IPv6, so the
/// default command works everywhere.
fn bind_listeners(settings: &Settings) -> anyhow::Result<Vec<tokio::net::UdpSocket>> {
    let defaults = settings.server.listen == crate::config::ServerSettings::default().listen;
    let mut listeners = Vec::new();
    for &addr in &settings.server.listen {
        match udp::bind_listener(addr, settings.limits.socket_buffer) {
            Ok(socket) => {
                tracing::info!(%addr, "listening on UDP");
                listeners.push(socket);
            }
            Err(e) if defaults && addr.is_ipv6() => {
                tracing::warn!("IPv6 listener skipped: {e}");
            }
            Err(e) => return Err(e).context("cannot bind listener"),
        }
    }
    Ok(listeners)
}

/// Waits for SIGINT or SIGTERM. SIGHUP is acknowledged so it cannot kill the server.
async fn wait_for_stop() -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => tracing::warn!("SIGHUP: live reload is not supported yet; configuration unchanged"),
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
