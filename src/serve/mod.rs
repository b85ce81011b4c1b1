//! `tern serve`: turns validated settings into a running server.
//!
//! Order matters: everything that can fail on bad input (credentials, policy, bind) is
//! done before the server reports itself ready, and nothing is bound before the config
//! has been validated by the caller. [`run`] reads as its phases: [`resolve`] what the
//! settings leave open, [`build`] the engines, [`bind`] every socket, [`spawn`] the
//! tasks and threads that serve, [`wait`] for the stop and wind down.

mod banner;
mod engines;
mod listeners;
use crate::net::relay_ips;
pub mod reload;

use anyhow::Context;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use crate::auth::{ExternalKeys, UnauthorizedLimiter};
use crate::cluster::RedisSink;
use crate::config::{Redacted, Settings, TlsSettings};
use crate::core::{Engine, EngineRules, Shared};
use crate::metrics::Metrics;
use crate::net::dtls;
use crate::net::lifecycle::Lifecycle;
use crate::net::stream::{ConnectionLimits, StreamConfig};
use crate::net::tls::{CertPaths, TlsAcceptorSource};
use crate::net::worker::{self, Control, WorkerConfig};
use crate::offload::Offload;
use crate::usage::{Batching, UsageLog, WebhookSink, Writer};

/// Runs the server until SIGINT or SIGTERM; on SIGHUP `loader` reads the settings
/// again and `log_level` applies a new log filter.
pub async fn run(
    settings: Settings,
    loader: reload::Loader,
    log_level: reload::LogLevel,
) -> anyhow::Result<()> {
    let plan = resolve(settings).await?;
    let built = build(&plan);
    let bound = bind(&plan).await?;
    let running = spawn(plan, built, bound, loader, log_level)?;
    wait(running).await
}

/// What the settings come to once everything outside them is known: the secrets the
/// server adds itself, the relay addresses, the worker count, the engine rules and
/// the fleet with its nonce key.
struct Plan {
    /// The settings with the server's own secrets added, which the engines use.
    settings: Settings,
    /// The settings as given, which a reload compares new ones with.
    as_given: Settings,
    /// The REST secret made up for this run when the config has no credentials.
    generated_secret: Option<String>,
    /// The secret that signs the credentials the banner prints.
    banner_secret: Option<String>,
    /// The self-test page's own REST secret, derived from its token.
    selftest_secret: Option<String>,
    relay_ips: Vec<IpAddr>,
    advertised_ips: HashMap<IpAddr, IpAddr>,
    workers: usize,
    rules: EngineRules,
    /// The answers of `auth.webhook`, when it is set.
    external_keys: Option<Arc<ExternalKeys>>,
    cluster: Option<Arc<crate::cluster::Cluster>>,
    nonce_key: String,
}

/// Resolves what the settings leave open: credentials, relay addresses, engine rules,
/// and (in a fleet) the connection to Redis and the shared nonce key. Bad credentials
/// or an unreachable fleet fail here, before anything is bound.
async fn resolve(mut settings: Settings) -> anyhow::Result<Plan> {
    let as_given = settings.clone();
    let generated_secret = (settings.auth.users.is_empty() && settings.auth.secrets.is_empty())
        .then(|| crate::token::random_token(32));
    settings
        .auth
        .secrets
        .extend(generated_secret.clone().map(Redacted::from));
    let banner_secret = settings.auth.secrets.first().map(|s| s.expose().clone());
    // The self-test page signs its short-lived credentials with a secret of its own,
    // derived from its token: every node of a fleet with the same token accepts them
    // (the page's URLs may lead to any node, or a redirect to another).
    let selftest_secret = settings
        .selftest
        .listen
        .and(settings.selftest.token.as_ref())
        .map(|token| {
            crate::auth::derived_secret("tern self-test TURN credentials", token.expose())
        });
    settings
        .auth
        .secrets
        .extend(selftest_secret.clone().map(Redacted::from));
    let relay_ips = relay_ips::relay_ips(&settings.relay.ips, &settings.server.listen_addrs());
    let advertised_ips = relay_ips::advertised_ips(&relay_ips, &settings.relay.external_ips);
    let workers = worker_count(&settings);
    let external_keys = engines::external_keys(&settings);
    let rules = engines::rules(
        &settings,
        &relay_ips,
        &advertised_ips,
        external_keys.as_ref(),
    )?;
    let cluster = match settings.cluster.is_enabled() {
        true => {
            let (plain, tls) = fleet_addresses(&settings, &relay_ips, &advertised_ips);
            Some(crate::cluster::Cluster::connect(&settings, plain, tls).await?)
        }
        false => None,
    };
    let nonce_key = nonce_key(&settings, cluster.as_deref()).await;
    Ok(Plan {
        settings,
        as_given,
        generated_secret,
        banner_secret,
        selftest_secret,
        relay_ips,
        advertised_ips,
        workers,
        rules,
        external_keys,
        cluster,
        nonce_key,
    })
}

/// The engines, one per worker, and what they share.
struct Built {
    engines: Vec<Engine>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    limiter: UnauthorizedLimiter,
}

/// Builds the engines and the state they share (ports, quotas, the 401 limiter).
/// Nothing here can fail: every input was checked by validation or [`resolve`].
fn build(plan: &Plan) -> Built {
    let limiter = engines::limiter(&plan.settings);
    let (engines, shared) = engines::build(
        &plan.settings,
        &plan.rules,
        plan.workers,
        plan.nonce_key.as_bytes(),
        &limiter,
    );
    Built {
        engines,
        shared,
        metrics: Arc::new(Metrics::new()),
        limiter,
    }
}

/// Everything bound, nothing served yet.
struct Bound {
    tls: Option<TlsAcceptorSource>,
    /// Certificates from an ACME CA, when `tls.acme` is set.
    acme: Option<crate::acme::Acme>,
    listeners: listeners::Listeners,
    /// The kernel fast path, when it runs.
    offload: Option<Arc<Offload>>,
    admin: Option<tokio::net::TcpListener>,
    selftest: Option<tokio::net::TcpListener>,
}

/// Loads the certificate and binds the TURN listeners, prints the banner once they
/// are bound (so it only names addresses that are served), then binds the admin and
/// self-test HTTP listeners. A file or address that cannot be used fails the start.
async fn bind(plan: &Plan) -> anyhow::Result<Bound> {
    let settings = &plan.settings;
    let acme = match &settings.tls.acme {
        Some(acme) => Some(crate::acme::Acme::prepare(acme).await?),
        None => None,
    };
    let tls = load_tls(settings, acme.as_ref())?;
    let listeners = listeners::bind(settings, tls.as_ref(), plan.workers)?;
    let ports = settings.relay.ports;
    tracing::info!(relay_ips = ?plan.relay_ips, %ports, "relaying");
    banner::print(
        settings,
        plan.banner_secret.as_deref(),
        &plan.relay_ips,
        &plan.advertised_ips,
        plan.generated_secret.is_some(),
    );
    let offload = Offload::start(settings, offload_interfaces(plan))
        .context(
            "the kernel fast path cannot run as configured (relay.offload, relay.offload_xdp)",
        )?
        .map(Arc::new);
    let admin = bind_http(settings.admin.listen, "admin").await?;
    let selftest = bind_http(settings.selftest.listen, "self-test").await?;
    Ok(Bound {
        tls,
        acme,
        listeners,
        offload,
        admin,
        selftest,
    })
}

/// The interfaces the kernel fast path goes on: `relay.offload_interfaces`, or those
/// holding a listener or relay address. TLS clients are never offloaded, but a TLS
/// listener's address may carry UDP too; unbound TLS listeners do not count.
fn offload_interfaces(plan: &Plan) -> Vec<String> {
    let settings = &plan.settings;
    if !settings.relay.offload_interfaces.is_empty() {
        return settings.relay.offload_interfaces.clone();
    }
    let server = &settings.server;
    let tls_listen = settings.tls.is_enabled().then_some(&server.tls_listen);
    let listen = server.listen.iter().chain(tls_listen.into_iter().flatten());
    let mut addresses: Vec<IpAddr> = listen.map(|l| l.addr.ip()).collect();
    addresses.extend(&plan.relay_ips);
    relay_ips::interfaces_holding(&addresses)
}

/// A server that is serving: what [`wait`] needs to stop it.
struct Running {
    tls: Option<TlsAcceptorSource>,
    reloader: reload::Reloader,
    shared: Arc<Shared>,
    lifecycle: watch::Sender<Lifecycle>,
    threads: Vec<std::thread::JoinHandle<std::io::Result<()>>>,
    failed: mpsc::UnboundedReceiver<usize>,
    fleet_task: Option<tokio::task::JoinHandle<()>>,
    /// Deliver usage records to Redis and the webhook, when configured.
    usage_writers: Vec<Writer>,
}

/// Starts serving: the TCP/TLS accept loops, one thread per worker, the fleet's
/// heartbeat, the admin API and the self-test pages, all following one lifecycle
/// channel.
fn spawn(
    plan: Plan,
    built: Built,
    bound: Bound,
    loader: reload::Loader,
    log_level: reload::LogLevel,
) -> anyhow::Result<Running> {
    let Plan {
        settings,
        as_given,
        generated_secret,
        selftest_secret,
        relay_ips,
        advertised_ips,
        workers,
        rules,
        external_keys,
        cluster,
        ..
    } = plan;
    let Built {
        engines,
        shared,
        metrics,
        limiter,
    } = built;
    let Bound {
        tls,
        acme,
        listeners,
        admin: admin_listener,
        selftest: selftest_listener,
        offload,
    } = bound;
    if let Some(offload) = &offload {
        metrics.watch_offload(offload.clone());
    }
    let limits = &settings.limits;
    let (rules_tx, rules_rx) = watch::channel(rules);
    let (stop_tx, stop_rx) = watch::channel(Lifecycle::Serving);
    if let (Some(acme), Some(tls)) = (acme, &tls) {
        acme.spawn(tls.clone(), metrics.clone(), stop_rx.clone())
            .context("cannot start the ACME HTTP-01 responder")?;
    }
    let mut handoffs = Vec::with_capacity(workers);
    let mut worker_streams = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (handoff_tx, handoff) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::channel(limits.relay_queue);
        handoffs.push(handoff_tx);
        worker_streams.push(worker::Streams {
            handoff,
            events,
            events_tx,
        });
    }
    let connection_limits =
        ConnectionLimits::new(limits.max_connections, limits.max_connections_per_ip);
    let (stream_config_tx, stream_config) =
        watch::channel(stream_config(&settings, &connection_limits, &metrics));
    for listener in listeners.streams {
        tokio::spawn(crate::net::accept::serve(
            listener,
            stream_config.clone(),
            handoffs.clone(),
            stop_rx.clone(),
        ));
    }
    let dtls_sessions = dtls::Sessions {
        config: stream_config.clone(),
        workers: worker_streams.iter().map(|s| s.events_tx.clone()).collect(),
        handshakes: dtls::Handshakes::new(metrics.dtls_handshakes_in_progress.clone()),
    };
    for listener in listeners.dtls {
        tokio::spawn(dtls::serve(
            listener,
            dtls_sessions.clone(),
            stop_rx.clone(),
        ));
    }
    let reloader = reload::Reloader {
        loader,
        log_level,
        rules: rules_tx,
        limiter,
        connections: connection_limits.clone(),
        stream_config: stream_config_tx,
        tls: tls.clone(),
        metrics: metrics.clone(),
        running: as_given,
        relay_ips: relay_ips.clone(),
        advertised_ips,
        generated_secret,
        selftest_secret: selftest_secret.clone(),
        external_keys: external_keys.clone(),
    };
    drop(handoffs);
    let usage_writers = usage_writers(&settings, cluster.as_ref(), &metrics)?;
    let node = crate::cluster::node_id(&settings.cluster);
    let usage = UsageLog::new(&node, &usage_writers, metrics.clone());
    let mut answered_tx = Vec::with_capacity(workers);
    let mut answered_rx = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (tx, rx) = mpsc::unbounded_channel();
        answered_tx.push(tx);
        answered_rx.push(rx);
    }
    let auth_webhook = match (&settings.auth.webhook, external_keys) {
        (Some(webhook), Some(keys)) => {
            let lookups = crate::auth_webhook::spawn(webhook, keys, answered_tx, metrics.clone())
                .context("cannot start the auth webhook client")?;
            Some((lookups, webhook.waiting_requests))
        }
        _ => None,
    };
    let worker_config = WorkerConfig {
        socket_buffer: limits.socket_buffer,
        offload,
        usage,
        auth_webhook,
        peer_connections: Default::default(),
    };
    tracing::info!(workers, "starting workers");
    let mut threads = Vec::with_capacity(workers);
    let mut worker_commands = Vec::with_capacity(workers);
    let udp = listeners.udp.into_iter();
    let (failed_tx, failed_rx) = mpsc::unbounded_channel();
    for (i, (((engine, udp), streams), answered)) in engines
        .into_iter()
        .zip(udp)
        .zip(worker_streams)
        .zip(answered_rx)
        .enumerate()
    {
        let (commands_tx, commands) = mpsc::unbounded_channel();
        worker_commands.push(commands_tx);
        let control = Control {
            lifecycle: stop_rx.clone(),
            rules: rules_rx.clone(),
            commands,
            timekeeper: tokio::runtime::Handle::current(),
            index: i,
            answered,
        };
        let metrics = metrics.clone();
        let worker_config = worker_config.clone();
        let run = move || {
            worker::run_on_this_thread(engine, udp, streams, worker_config, control, metrics)
        };
        let thread =
            spawn_supervised(i, failed_tx.clone(), run).context("cannot start a worker thread")?;
        threads.push(thread);
    }
    let fleet_task = cluster.as_ref().map(|cluster| {
        cluster.spawn(crate::cluster::Server {
            shared: shared.clone(),
            metrics: metrics.clone(),
            workers: worker_commands.clone(),
            lifecycle: stop_rx.clone(),
        })
    });
    if let Some(listener) = admin_listener {
        let addr = listener.local_addr()?;
        tracing::info!(%addr, api = settings.admin.token.is_some(), "admin listening");
        let state = std::sync::Arc::new(crate::admin::AdminState {
            shared: shared.clone(),
            metrics: metrics.clone(),
            connections: connection_limits.clone(),
            lifecycle: stop_rx.clone(),
            lifecycle_control: stop_tx.clone(),
            workers: worker_commands,
            token: settings.admin.token.as_ref().map(|t| t.expose().clone()),
            cluster: cluster.clone(),
            port_capacity: settings.relay.ports.count() * relay_ips.len(),
        });
        tokio::spawn(crate::admin::serve(listener, state));
    }
    if let (Some(listener), Some(secret)) = (selftest_listener, &selftest_secret) {
        let addr = listener.local_addr()?;
        let https = tls.is_some();
        tracing::info!(%addr, https, "self-test page listening (`tern selftest-url` prints its link)");
        let state = std::sync::Arc::new(crate::selftest::SelftestState::new(
            &settings,
            secret,
            metrics.clone(),
            stop_rx.clone(),
        ));
        crate::selftest::serve(listener, tls.clone(), &settings, state)
            .context("cannot start the self-test listener")?;
    }
    Ok(Running {
        tls,
        reloader,
        shared,
        lifecycle: stop_tx,
        threads,
        failed: failed_rx,
        fleet_task,
        usage_writers,
    })
}

/// The usage sinks' writers: the fleet's Redis stream and the webhook, each if set.
fn usage_writers(
    settings: &Settings,
    cluster: Option<&Arc<crate::cluster::Cluster>>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Vec<Writer>> {
    let usage = &settings.usage;
    let mut writers = Vec::new();
    if let Some(cluster) = cluster.filter(|_| usage.redis_max_len > 0) {
        let sink = RedisSink {
            cluster: cluster.clone(),
            max_len: usage.redis_max_len,
        };
        let batching = Batching {
            queue: usage.queue,
            max: REDIS_USAGE_BATCH,
            linger: std::time::Duration::ZERO,
        };
        writers.push(Writer::spawn(sink, batching, metrics.clone()));
    }
    if let Some(url) = &usage.webhook_url {
        let token = usage.webhook_token.as_ref().map(|t| t.expose().clone());
        let timeout = usage.webhook_timeout.as_duration();
        let sink = WebhookSink::new(url.expose(), token, timeout)
            .context("cannot set up the usage webhook (usage.webhook_url)")?;
        let batching = Batching {
            queue: usage.queue,
            max: usage.webhook_batch,
            linger: usage.webhook_interval.as_duration(),
        };
        writers.push(Writer::spawn(sink, batching, metrics.clone()));
    }
    Ok(writers)
}

/// Reports ready, serves until asked to stop (reloading on SIGHUP meanwhile), drains
/// when the stop asks for it, leaves the fleet and joins the worker threads.
async fn wait(running: Running) -> anyhow::Result<()> {
    let Running {
        tls,
        mut reloader,
        shared,
        lifecycle: stop_tx,
        threads,
        mut failed,
        fleet_task,
        usage_writers,
    } = running;
    // Everything is bound and running: tell systemd (Type=notify); a no-op elsewhere.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let stop = wait_for_stop(tls.as_ref(), &mut reloader, &mut failed).await?;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    if let Stop::WorkerFailed(i) = stop {
        // Its allocations are gone and their ports and quota counts would stay taken:
        // drain the others and exit with an error, for the supervisor to restart tern.
        tracing::error!(
            worker = i,
            "a worker panicked: draining the others, then exiting with an error"
        );
    }
    if matches!(stop, Stop::Drain | Stop::WorkerFailed(_)) {
        let _ = stop_tx.send(Lifecycle::Draining);
        let timeout = reloader.running.server.drain_timeout.as_duration();
        drain(&shared, timeout).await;
    }
    let _ = stop_tx.send(Lifecycle::Stopping);
    if let Some(task) = fleet_task {
        // Leave the fleet before exiting, so other nodes stop sending clients here now
        // rather than when this node's record expires.
        let _ = tokio::time::timeout(FLEET_LEAVE_TIMEOUT, task).await;
    }
    let joined = tokio::task::spawn_blocking(move || {
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .map_err(|_| anyhow::anyhow!("a worker panicked"))?
                    .context("worker failed")
            })
            .collect::<anyhow::Result<Vec<()>>>()
    });
    let joined = joined.await.context("joining workers")?;
    for writer in usage_writers {
        writer.finish(USAGE_FLUSH_GRACE).await;
    }
    tracing::info!("stopped");
    joined.map(drop)
}

/// Binds the HTTP listener called `what`, if it has an address.
async fn bind_http(
    addr: Option<SocketAddr>,
    what: &str,
) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind the {what} listener {addr}"))?;
    Ok(Some(listener))
}

/// The key nonces are made with: `auth.nonce_key`, else the fleet's (so any node
/// accepts another's challenge), else one made up for this run.
async fn nonce_key(settings: &Settings, cluster: Option<&crate::cluster::Cluster>) -> String {
    if let Some(key) = &settings.auth.nonce_key {
        return key.expose().clone();
    }
    let own = crate::token::random_token(32);
    match cluster {
        Some(cluster) => match cluster.shared_nonce_key(&own).await {
            Some(key) => key,
            None => {
                tracing::warn!(
                    "fleet: no shared nonce key (Redis unreachable); challenges from other nodes will be answered 438 once; set auth.nonce_key to avoid this"
                );
                own
            }
        },
        None => own,
    }
}

/// Where other nodes send this node's redirected clients: `cluster.advertise` and
/// `cluster.advertise_tls`, else one address per family the listeners serve.
fn fleet_addresses(
    settings: &Settings,
    relay_ips: &[std::net::IpAddr],
    advertised_ips: &std::collections::HashMap<std::net::IpAddr, std::net::IpAddr>,
) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
    let c = &settings.cluster;
    let reachable =
        |listeners: Vec<SocketAddr>| relay_ips::reachable_at(&listeners, relay_ips, advertised_ips);
    let plain = match c.advertise.is_empty() {
        false => c.advertise.clone(),
        true => reachable(settings.server.listen_addrs()),
    };
    let tls = match (c.advertise_tls.is_empty(), settings.tls.is_enabled()) {
        (false, _) => c.advertise_tls.clone(),
        (true, true) => reachable(settings.server.tls_listen.iter().map(|l| l.addr).collect()),
        (true, false) => Vec::new(),
    };
    (plain, tls)
}

/// Loads the TLS certificate when one is configured (with ACME, also answering its
/// TLS-ALPN-01 challenges; with DTLS listeners, for them too); a broken one fails the
/// start.
fn load_tls(
    settings: &Settings,
    acme: Option<&crate::acme::Acme>,
) -> anyhow::Result<Option<TlsAcceptorSource>> {
    let Some(paths) = cert_paths(&settings.tls) else {
        return Ok(None);
    };
    let challenges = acme.map(crate::acme::Acme::alpn_challenges);
    let dtls = !settings.server.dtls_listen.is_empty();
    Ok(Some(TlsAcceptorSource::load_for(paths, challenges, dtls)?))
}

/// The certificate files, when TLS is on.
fn cert_paths(tls: &TlsSettings) -> Option<CertPaths> {
    let (cert, key) = tls.cert_files()?;
    Some(CertPaths { cert, key })
}

/// The rules new TCP/TLS connections follow, counted in `connections`.
fn stream_config(
    settings: &Settings,
    connections: &Arc<ConnectionLimits>,
    metrics: &Arc<Metrics>,
) -> StreamConfig {
    let limits = &settings.limits;
    StreamConfig {
        handshake_timeout: settings.tls.handshake_timeout.as_duration(),
        idle_timeout: limits.connection_idle_timeout.as_duration(),
        frame_timeout: limits.frame_timeout.as_duration(),
        max_frame: limits.max_frame,
        write_queue: limits.write_queue,
        relay_buffer: limits.tcp_relay_buffer,
        limits: connections.clone(),
        max_dtls_handshakes: limits.max_dtls_handshakes,
        proxy_from: settings.server.proxy_protocol_from.clone().into(),
        front: crate::net::front::FrontRules::from_settings(settings),
        metrics: metrics.clone(),
    }
}

/// Usage records appended to Redis in one round trip at most (those already queued;
/// the writer never waits for more).
const REDIS_USAGE_BATCH: usize = 100;

/// How long a stopping server waits for queued usage records to reach Redis.
const USAGE_FLUSH_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// How often certificate files are checked for changes (two `stat` calls).
const CERT_WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// How the server was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGTERM: let the calls in progress finish first.
    Drain,
    /// SIGINT: now.
    Now,
    /// A worker thread panicked (its index): drain the others, then fail.
    WorkerFailed(usize),
}

/// Waits until every allocation has ended or `timeout` has passed, while workers
/// refuse new ones. A second SIGTERM or a SIGINT cuts it short.
async fn drain(shared: &Shared, timeout: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    tracing::info!(
        allocations = shared.total_allocations(),
        timeout_secs = timeout.as_secs(),
        "draining: refusing new allocations, relaying existing ones"
    );
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    let mut tick = tokio::time::interval(DRAIN_CHECK);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if shared.total_allocations() == 0 {
                    tracing::info!("drained: no allocation left");
                    return;
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                tracing::info!(allocations = shared.total_allocations(), "drain timeout: stopping");
                return;
            }
            _ = term.recv() => return,
            _ = int.recv() => return,
        }
    }
}

/// How long a stopping node waits to remove its record from Redis.
const FLEET_LEAVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// How often the allocation count is looked at while draining.
const DRAIN_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// Waits for SIGTERM (drain), SIGINT (stop now) or a worker's panic. Meanwhile SIGHUP reloads the
/// configuration (see [`reload`]) and the TLS certificate, and a change of the
/// certificate files on disk reloads the certificate: new connections get it,
/// established ones and every allocation are untouched, and a broken new certificate
/// leaves the old one in use.
async fn wait_for_stop(
    tls: Option<&TlsAcceptorSource>,
    reloader: &mut reload::Reloader,
    failed: &mut mpsc::UnboundedReceiver<usize>,
) -> anyhow::Result<Stop> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut watch = tokio::time::interval(CERT_WATCH_INTERVAL);
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(Stop::Drain),
            _ = int.recv() => return Ok(Stop::Now),
            Some(i) = failed.recv() => return Ok(Stop::WorkerFailed(i)),
            _ = hup.recv() => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
                reloader.reload();
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            }
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

/// Runs worker `index` on a thread of its own. A panic there is caught and reported on
/// `failed` rather than ending the thread unnoticed (the server then drains and exits
/// with an error), and the thread's result says so.
fn spawn_supervised(
    index: usize,
    failed: mpsc::UnboundedSender<usize>,
    work: impl FnOnce() -> std::io::Result<()> + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<std::io::Result<()>>> {
    std::thread::Builder::new()
        .name(format!("tern-worker-{index}"))
        .spawn(move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_else(|_| {
                let _ = failed.send(index);
                Err(std::io::Error::other(format!("worker {index} panicked")))
            })
        })
}

/// How many workers to run: `server.workers`, or one per CPU when it is 0.
fn worker_count(settings: &Settings) -> usize {
    match settings.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_worker_is_reported_and_its_thread_ends_in_an_error() {
        let (failed_tx, mut failed_rx) = mpsc::unbounded_channel();
        let quiet = spawn_supervised(0, failed_tx.clone(), || Ok(())).unwrap();
        assert!(quiet.join().unwrap().is_ok());
        let boom = spawn_supervised(3, failed_tx, || panic!("engine bug")).unwrap();
        let err = boom.join().expect("the panic is caught").unwrap_err();
        assert_eq!(err.to_string(), "worker 3 panicked");
        assert_eq!(failed_rx.try_recv().ok(), Some(3));
        assert!(
            failed_rx.try_recv().is_err(),
            "only the panicking worker is reported"
        );
    }
}
