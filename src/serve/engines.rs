//! Building one engine per worker from the settings, and the rules a reload swaps in.
//! Everything the engines share (rules, nonce key, relay ports, quota counts) is built
//! once here.

use anyhow::Context;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::auth::{
    Credentials, ExternalKeys, LongTermKey, NonceIssuer, RestSecret, StaticSecret,
    UnauthorizedLimiter,
};
use crate::config::Settings;
use crate::core::{Engine, EngineConfig, EngineRules, ListenerRole, RelayIpChoice, Shared};
use crate::policy::{OwnRelays, OwnServices, PeerPolicy};

/// The rules a reload may change, built from `settings` for the relay addresses the
/// server runs with (those need a restart to change).
pub fn rules(
    settings: &Settings,
    relay_ips: &[IpAddr],
    advertised_ips: &HashMap<IpAddr, IpAddr>,
    external_keys: Option<&Arc<ExternalKeys>>,
) -> anyhow::Result<EngineRules> {
    let mut credentials = credentials(settings)?;
    if let Some(keys) = external_keys {
        credentials = credentials.with_external(keys.clone());
    }
    let credentials = Arc::new(credentials);
    let mut own_ips = relay_ips.to_vec();
    own_ips.extend(advertised_ips.values().copied());
    let services = OwnServices {
        endpoints: service_endpoints(settings),
        host_ips: crate::net::relay_ips::interface_ips(),
    };
    let policy = Arc::new(
        PeerPolicy::new(
            settings.peers.allowed.clone(),
            settings.peers.denied.clone(),
            OwnRelays {
                ips: own_ips,
                ports: settings.relay.ports.as_range(),
            },
        )
        .with_services(services),
    );
    let (a, limits, r) = (&settings.auth, &settings.limits, &settings.relay);
    let config = Arc::new(EngineConfig {
        software: settings.server.software.clone(),
        relay_ips: relay_ips.to_vec(),
        relay_ip_choice: if r.ips.is_empty() {
            RelayIpChoice::ReachedFirst
        } else {
            RelayIpChoice::Spread
        },
        advertised_ips: advertised_ips.clone(),
        ports: r.ports,
        default_lifetime: r.default_lifetime.as_duration(),
        max_lifetime: r.max_lifetime.as_duration(),
        permission_lifetime: r.permission_lifetime.as_duration(),
        channel_lifetime: r.channel_lifetime.as_duration(),
        allow_refresh_after_expiry: a.allow_refresh_after_expiry,
        nonce_lifetime: a.nonce_lifetime.as_duration(),
        total_allocations: limits.total_allocations,
        user_allocations: limits.user_allocations,
        max_permissions: limits.permissions_per_allocation,
        max_channels: limits.channels_per_allocation,
        listener_roles: listener_roles(settings),
        bandwidth: settings.bandwidth.limits(),
        nat_discovery: settings.server.nat_discovery,
        rfc8489: a.rfc8489,
        tcp_allocations: r.tcp_allocations,
        max_tcp_connections: limits.tcp_connections_per_allocation,
    });
    Ok(EngineRules {
        config,
        credentials,
        policy,
    })
}

/// The listeners that serve STUN only or TURN only (NAT discovery's own sockets
/// answer Binding only).
fn listener_roles(settings: &Settings) -> Vec<(SocketAddr, ListenerRole)> {
    let server = &settings.server;
    server
        .listen
        .iter()
        .chain(&server.tls_listen)
        .chain(&server.dtls_listen)
        .filter(|l| l.serve != ListenerRole::Both)
        .map(|l| (l.addr, l.serve))
        .chain((server.nat_discovery_listeners().into_iter()).map(|a| (a, ListenerRole::Stun)))
        .collect()
}

/// Every address the server listens on (STUN/TURN over UDP and TCP, TLS, DTLS, admin,
/// self-test): the peer policy never lets a client relay to one of them.
fn service_endpoints(settings: &Settings) -> Vec<SocketAddr> {
    let server = &settings.server;
    let tls = server
        .tls_listen
        .iter()
        .chain(&server.dtls_listen)
        .map(|l| l.addr);
    let mut endpoints = settings.server.listen_addrs();
    endpoints.extend(settings.server.nat_discovery_listeners());
    endpoints.extend(
        tls.chain(settings.admin.listen)
            .chain(settings.selftest.listen),
    );
    endpoints
}

/// The answers of the operator's service (`auth.webhook`), shared by every worker and
/// kept across reloads; `None` without one.
pub fn external_keys(settings: &Settings) -> Option<Arc<ExternalKeys>> {
    let webhook = settings.auth.webhook.as_ref()?;
    Some(Arc::new(ExternalKeys::new(
        webhook.cache_size,
        webhook.cache_policy(),
    )))
}

/// The limiter on answers to unauthenticated sources. One table for all workers: the
/// kernel spreads one IP's source ports over all of them, and the budget is per IP.
pub fn limiter(settings: &Settings) -> UnauthorizedLimiter {
    let a = &settings.auth;
    UnauthorizedLimiter::new(
        a.unauthorized_per_second,
        a.unauthorized_burst,
        settings.limits.rate_limit_slots,
        rand::rng().random(),
    )
}

/// `count` engines following `rules`, sharing `nonce_key`, `limiter`, ports, quotas
/// and reservations, and the shared state itself (watched while draining).
pub fn build(
    settings: &Settings,
    rules: &EngineRules,
    count: usize,
    nonce_key: &[u8],
    limiter: &UnauthorizedLimiter,
) -> (Vec<Engine>, Arc<Shared>) {
    let shared = Arc::new(Shared::new(settings.relay.ports, std::time::Instant::now()));
    let engines = (0..count)
        .map(|_| {
            Engine::new(
                rules,
                NonceIssuer::new(nonce_key, settings.auth.nonce_lifetime.0),
                limiter.clone(),
                rand::rngs::StdRng::from_os_rng(),
                shared.clone(),
            )
        })
        .collect();
    (engines, shared)
}

fn credentials(settings: &Settings) -> anyhow::Result<Credentials> {
    let mut users = HashMap::new();
    for user in &settings.auth.users {
        let secret = match (&user.password, &user.key) {
            (_, Some(key)) => StaticSecret::Key(
                LongTermKey::from_hex(key.expose())
                    .with_context(|| format!("auth.users {:?}", user.name))?,
            ),
            (Some(password), None) => StaticSecret::Password(password.expose().clone()),
            (None, None) => anyhow::bail!("auth.users {:?}: no password or key", user.name),
        };
        users.insert(user.name.clone(), secret);
    }
    let secrets = settings
        .auth
        .secrets
        .iter()
        .map(|s| RestSecret::new(s.expose().as_bytes().to_vec()))
        .collect();
    Ok(Credentials::new(
        settings.server.realm.clone(),
        users,
        secrets,
        settings.auth.rest_separator.0,
    ))
}
