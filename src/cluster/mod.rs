//! A fleet of tern nodes behaving as one service, through Redis: quotas hold
//! fleet-wide, the session registry lists every node's allocations, a revocation on
//! one node refuses and kills on all, a nonce from one node is accepted by another,
//! and a draining or overloaded node redirects new clients (300 Try Alternate) to the
//! least-loaded live node.
//!
//! Each node writes one small record (its load and quota counts) under a key that
//! expires after `cluster.node_ttl`, so a dead node leaves the fleet by itself, and
//! its session list under another, read only when the admin API asks; and
//! reads everyone's records at each heartbeat into the [`FleetView`] the engines
//! consult on Allocate. Revocations go through a Redis set (for nodes that start or
//! reconnect later) and pub/sub (to be immediate). Redis is never on the relayed-packet
//! path, and only this module's tasks wait for it: when it is unreachable, the node
//! serves with local quotas, says so once in the log and in `tern_cluster_redis_up`,
//! retries with backoff, and its next heartbeat after Redis returns rewrites its
//! record whole, which reconciles the counts.

mod record;
mod usage;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, PushInfo, PushKind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::{Mutex, mpsc, watch};

pub use record::{LoadLimits, NodeRecord, fleet_view};
pub use usage::{RedisSink, UsageQuery};

use crate::config::Settings;
use crate::core::{EndReason, Shared};
use crate::metrics::Metrics;
use crate::net::lifecycle::Lifecycle;
use crate::net::worker::{WorkerCommand, ask_all};

/// How long one Redis command or connection attempt may take: a heartbeat must not
/// hang on a Redis that stopped answering.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest wait between reconnection attempts while Redis is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A node with more sessions than this publishes its list only every
/// [`SPARSE_SESSIONS_EVERY`] heartbeats, so the registry costs Redis little.
const SESSIONS_EVERY_BEAT_UP_TO: usize = 1_000;
const SPARSE_SESSIONS_EVERY: u64 = 10;

/// Redis key names, all under the configured prefix.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    /// Ids come back from Redis as bytes; any bytes make a key.
    fn node(&self, id: impl AsRef<[u8]>) -> Vec<u8> {
        [self.prefix.as_bytes(), b":node:", id.as_ref()].concat()
    }
    fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }
    fn sessions(&self, id: &str) -> String {
        format!("{}:sessions:{id}", self.prefix)
    }
    fn revoked(&self) -> String {
        format!("{}:revoked", self.prefix)
    }
    fn revoke_channel(&self) -> String {
        format!("{}:revoke", self.prefix)
    }
    fn nonce_key(&self) -> String {
        format!("{}:nonce-key", self.prefix)
    }
    fn usage(&self) -> String {
        format!("{}:usage", self.prefix)
    }
}

/// Why a fleet operation failed. The node keeps serving on what it last knew.
#[derive(Debug, Error)]
pub enum FleetError {
    #[error("Redis is unreachable")]
    Unreachable,
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    /// A record or session list could not be written as JSON.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

/// What this node is in the fleet, and how it reaches Redis.
pub struct Cluster {
    keys: Keys,
    client: redis::Client,
    /// `None` until the first connection succeeds.
    conn: Mutex<Option<ConnectionManager>>,
    /// Pub/sub messages (revocations) pushed by the connection.
    pushes_tx: mpsc::UnboundedSender<PushInfo>,
    pushes_rx: Mutex<Option<mpsc::UnboundedReceiver<PushInfo>>>,
    /// This node's fixed part of its record (id, realm, addresses).
    identity: NodeRecord,
    limits: LoadLimits,
    realm_cap: usize,
    interval: Duration,
    ttl: Duration,
    id_clash_reported: std::sync::atomic::AtomicBool,
}

/// What the fleet tasks need of the running server.
pub struct Server {
    pub shared: Arc<Shared>,
    pub metrics: Arc<Metrics>,
    pub workers: Vec<mpsc::UnboundedSender<WorkerCommand>>,
    pub lifecycle: watch::Receiver<Lifecycle>,
}

impl Cluster {
    /// Reads the `[cluster]` settings and tries Redis once (a failure is not fatal:
    /// the heartbeat keeps trying). `plain` and `tls` are the addresses other nodes
    /// send this node's redirected clients to.
    pub async fn connect(
        settings: &Settings,
        plain: Vec<SocketAddr>,
        tls: Vec<SocketAddr>,
    ) -> anyhow::Result<Arc<Self>> {
        let c = &settings.cluster;
        let url = c.redis_url.as_ref().map_or("", |url| url.expose().as_str());
        let mut info = redis::IntoConnectionInfo::into_connection_info(url)
            .map_err(|e| anyhow::anyhow!("cluster.redis_url: {e}"))?;
        // Pushed pub/sub messages arrive on the ordinary connection with RESP3.
        info.redis.protocol = redis::ProtocolVersion::RESP3;
        let client =
            redis::Client::open(info).map_err(|e| anyhow::anyhow!("cluster.redis_url: {e}"))?;
        let id = node_id(c);
        let (pushes_tx, pushes_rx) = mpsc::unbounded_channel();
        let cluster = Arc::new(Self {
            keys: Keys {
                prefix: c.key_prefix.clone(),
            },
            client,
            conn: Mutex::new(None),
            pushes_tx,
            pushes_rx: Mutex::new(Some(pushes_rx)),
            identity: NodeRecord {
                id,
                instance: rand::random(),
                realm: settings.server.realm.clone(),
                plain,
                tls,
                ..NodeRecord::default()
            },
            limits: LoadLimits {
                allocations: c.redirect_above_allocations,
                mbps: c.redirect_above_mbps,
            },
            realm_cap: c.realm_allocations,
            interval: c.heartbeat_interval.as_duration(),
            ttl: c.node_ttl.as_duration(),
            id_clash_reported: std::sync::atomic::AtomicBool::new(false),
        });
        match cluster.connection().await {
            Some(_) => {
                tracing::info!(node = %cluster.identity.id, "joined the fleet through Redis")
            }
            None => tracing::warn!(
                node = %cluster.identity.id,
                "Redis unreachable at start: serving with local quotas until it answers"
            ),
        }
        Ok(cluster)
    }

    pub fn node_id(&self) -> &str {
        &self.identity.id
    }

    /// The connection, made (and subscribed to revocations) on first use.
    async fn connection(&self) -> Option<ConnectionManager> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Some(conn.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT)
            .set_number_of_retries(1)
            .set_push_sender(self.pushes_tx.clone())
            .set_automatic_resubscription();
        let connect = ConnectionManager::new_with_config(self.client.clone(), config);
        let mut conn = tokio::time::timeout(2 * REDIS_TIMEOUT, connect)
            .await
            .ok()?
            .ok()?;
        conn.subscribe(self.keys.revoke_channel()).await.ok()?;
        *slot = Some(conn.clone());
        Some(conn)
    }

    /// The nonce key of the fleet: the first node to start sets it, the others adopt
    /// it, so a challenge from one node is accepted by another behind the same name.
    /// `None` when Redis cannot be reached (the caller uses a key of its own).
    pub async fn shared_nonce_key(&self, candidate: &str) -> Option<String> {
        let mut conn = self.connection().await?;
        let key = self.keys.nonce_key();
        let _: bool = conn.set_nx(&key, candidate).await.ok()?;
        conn.get(&key).await.ok()
    }

    /// Refuses `user` on every node: recorded for nodes that start later, announced
    /// to the running ones.
    pub async fn publish_revocation(&self, user: &str) -> Result<(), FleetError> {
        let mut conn = self.connection().await.ok_or(FleetError::Unreachable)?;
        redis::pipe()
            .sadd(self.keys.revoked(), user)
            .publish(self.keys.revoke_channel(), user)
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Every live node's sessions, each with a `node` field.
    pub async fn fleet_sessions(&self) -> Result<Vec<serde_json::Value>, FleetError> {
        let mut conn = self.connection().await.ok_or(FleetError::Unreachable)?;
        let records = self.live_records(&mut conn).await?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = records.iter().map(|r| self.keys.sessions(&r.id)).collect();
        let lists: Vec<Option<Vec<u8>>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        let mut sessions = Vec::new();
        for (record, list) in records.iter().zip(lists) {
            let list: Vec<serde_json::Value> = list
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .unwrap_or_default();
            for mut session in list {
                if let Some(object) = session.as_object_mut() {
                    object.insert("node".into(), record.id.clone().into());
                }
                sessions.push(session);
            }
        }
        Ok(sessions)
    }

    /// The records of the nodes whose keys have not expired; ids of expired ones are
    /// dropped from the node set on the way.
    async fn live_records(
        &self,
        conn: &mut ConnectionManager,
    ) -> redis::RedisResult<Vec<NodeRecord>> {
        // Read as bytes: one foreign or corrupt entry is skipped, not fatal to the fleet.
        let ids: Vec<Vec<u8>> = conn.smembers(self.keys.nodes()).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<Vec<u8>> = ids.iter().map(|id| self.keys.node(id)).collect();
        let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(&keys).query_async(conn).await?;
        let mut records = Vec::with_capacity(ids.len());
        for (id, value) in ids.iter().zip(values) {
            match value.and_then(|v| serde_json::from_slice(&v).ok()) {
                Some(record) => records.push(record),
                None => {
                    let _: redis::RedisResult<()> = conn.srem(self.keys.nodes(), id).await;
                }
            }
        }
        Ok(records)
    }

    /// Runs the heartbeat and the revocation listener until the server stops; the
    /// heartbeat's task ends once the node has left the fleet (await it at stop).
    pub fn spawn(self: &Arc<Self>, server: Server) -> tokio::task::JoinHandle<()> {
        let server = Arc::new(server);
        tokio::spawn(self.clone().listen_for_revocations(server.clone()));
        tokio::spawn(self.clone().heartbeats(server))
    }

    async fn heartbeats(self: Arc<Self>, server: Arc<Server>) {
        let mut lifecycle = server.lifecycle.clone();
        let mut load = LoadMeter::new(&server.metrics);
        let mut up = None;
        let mut wait = self.interval;
        let mut last_view = Instant::now();
        for beat in 0u64.. {
            let record = self.own_record(&server, load.mbps(&server.metrics));
            let publish_sessions = record.allocations <= SESSIONS_EVERY_BEAT_UP_TO
                || beat % SPARSE_SESSIONS_EVERY == 0;
            let result = self.beat(&server, &record, publish_sessions).await;
            let now_up = result.is_ok();
            if up != Some(now_up) {
                match &result {
                    Ok(nodes) => tracing::info!(nodes, "fleet: Redis reachable"),
                    Err(e) => tracing::warn!(
                        "fleet: Redis unreachable ({e}): serving with local quotas until it is back"
                    ),
                }
                up = Some(now_up);
            }
            server.metrics.cluster_up.set(i64::from(now_up));
            if let Ok(nodes) = result {
                server.metrics.cluster_nodes.set(nodes as i64);
                wait = self.interval;
                last_view = Instant::now();
            } else {
                // The last view holds while the other nodes' records would still be
                // alive; after that this node is alone: local quotas, no one to
                // redirect to.
                if last_view.elapsed() >= self.ttl {
                    let alone = fleet_view(&record, &[], self.realm_cap, self.limits);
                    server.shared.set_fleet(alone);
                }
                wait = (wait * 2).min(MAX_BACKOFF);
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                changed = lifecycle.changed() => {
                    if changed.is_err() || *lifecycle.borrow() == Lifecycle::Stopping {
                        self.leave().await;
                        return;
                    }
                }
            }
        }
    }

    /// This node's record now.
    fn own_record(&self, server: &Server, mbps: f64) -> NodeRecord {
        let shared = &server.shared;
        let allocations = shared.total_allocations();
        NodeRecord {
            allocations,
            mbps,
            draining: *server.lifecycle.borrow() != Lifecycle::Serving,
            overloaded: self.limits.exceeded_by(allocations, mbps),
            users: shared.allocations_per_user(),
            ..self.identity.clone()
        }
    }

    /// Publishes `record` (and the session list when `publish_sessions`), reads the
    /// fleet, applies revocations made while this node was not listening, and installs
    /// the new fleet view; the number of live nodes.
    async fn beat(
        &self,
        server: &Server,
        record: &NodeRecord,
        publish_sessions: bool,
    ) -> Result<usize, FleetError> {
        let mut conn = self.connection().await.ok_or(FleetError::Unreachable)?;
        let json = serde_json::to_string(record)?;
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.keys.node(&record.id))
            .arg(json)
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .sadd(self.keys.nodes(), &record.id)
            .ignore();
        if publish_sessions {
            let sessions = ask_all(&server.workers, WorkerCommand::Sessions)
                .await
                .concat();
            let json = serde_json::to_string(&sessions)?;
            // Outlives the sparse republishing; listed only while the record is alive.
            let sessions_ttl = ttl_ms
                + SPARSE_SESSIONS_EVERY * u64::try_from(self.interval.as_millis()).unwrap_or(0);
            pipe.cmd("SET")
                .arg(self.keys.sessions(&record.id))
                .arg(json)
                .arg("PX")
                .arg(sessions_ttl)
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
        let records = self.live_records(&mut conn).await?;
        self.warn_if_id_taken(&records);
        let revoked: Vec<Vec<u8>> = conn.smembers(self.keys.revoked()).await?;
        for user in revoked
            .into_iter()
            .filter_map(|u| String::from_utf8(u).ok())
        {
            if !user.is_empty() && !server.shared.is_revoked(&user) {
                revoke_here(server, &user).await;
            }
        }
        let view = fleet_view(record, &records, self.realm_cap, self.limits);
        server.shared.set_fleet(view);
        Ok(records.len())
    }

    /// Two running nodes with one id overwrite each other's record: say so (once).
    fn warn_if_id_taken(&self, records: &[NodeRecord]) {
        let me = &self.identity;
        let taken = records
            .iter()
            .any(|r| r.id == me.id && r.instance != me.instance);
        if taken
            && !self
                .id_clash_reported
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::error!(
                node = %me.id,
                "another running node uses this node id: set a distinct cluster.node_id on each"
            );
        }
    }

    /// On a clean stop, the node's record goes at once rather than at its TTL.
    async fn leave(&self) {
        if let Some(mut conn) = self.conn.lock().await.clone() {
            let _: redis::RedisResult<()> = redis::pipe()
                .del(self.keys.node(&self.identity.id))
                .del(self.keys.sessions(&self.identity.id))
                .srem(self.keys.nodes(), &self.identity.id)
                .query_async(&mut conn)
                .await;
        }
    }

    async fn listen_for_revocations(self: Arc<Self>, server: Arc<Server>) {
        let Some(mut pushes) = self.pushes_rx.lock().await.take() else {
            return;
        };
        let channel = self.keys.revoke_channel();
        while let Some(push) = pushes.recv().await {
            if push.kind != PushKind::Message {
                continue;
            }
            let mut data = push.data.into_iter();
            let (Some(from), Some(user)) = (data.next(), data.next()) else {
                continue;
            };
            let from: Option<String> = redis::from_redis_value(&from).ok();
            let user: Option<String> = redis::from_redis_value(&user).ok();
            if let (Some(from), Some(user)) = (from, user)
                && from == channel
                && !server.shared.is_revoked(&user)
            {
                revoke_here(&server, &user).await;
            }
        }
    }
}

/// Refuses `user` on this node and kills its allocations.
async fn revoke_here(server: &Server, user: &str) {
    server.shared.revoke(user);
    let killed: usize = ask_all(&server.workers, |tx| {
        WorkerCommand::KillUser(user.to_string(), EndReason::Revoked, tx)
    })
    .await
    .into_iter()
    .sum();
    tracing::info!(user = %user.escape_debug(), killed, "user revoked by the fleet");
}

/// Relayed bandwidth between two heartbeats, from the relay byte counters.
struct LoadMeter {
    bytes: u64,
    at: Instant,
}

impl LoadMeter {
    fn new(metrics: &Metrics) -> Self {
        Self {
            bytes: relayed_bytes(metrics),
            at: Instant::now(),
        }
    }

    fn mbps(&mut self, metrics: &Metrics) -> f64 {
        let (bytes, at) = (relayed_bytes(metrics), Instant::now());
        let seconds = at.duration_since(self.at).as_secs_f64().max(1e-3);
        let mbps = bytes.saturating_sub(self.bytes) as f64 * 8.0 / seconds / 1e6;
        (self.bytes, self.at) = (bytes, at);
        mbps
    }
}

fn relayed_bytes(metrics: &Metrics) -> u64 {
    let relay = &metrics.relay;
    relay.to_peer_bytes.get() + relay.to_client_bytes.get()
}

/// The host name, for a node id nobody set.
/// This node's name: `cluster.node_id`, else the host name (also without a fleet: it
/// names the node in usage records).
pub fn node_id(settings: &crate::config::ClusterSettings) -> String {
    settings.node_id.clone().unwrap_or_else(host_name)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "tern".into())
}
