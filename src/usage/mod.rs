//! Usage records: one per allocation, written when it ends, whatever ended it (expiry,
//! a Refresh with lifetime 0, its connection closing, a kill, a revocation, a drain
//! running out, the server stopping). Each says who used the relay, from where, for how
//! long and how much, for billing and abuse reports.
//!
//! A record is a log event of its own target, `tern::usage`, so it can be routed
//! apart from the other logs (`log.format = "json"` makes it one JSON object a line).
//! With `[cluster]`, it is also appended to the fleet's Redis stream
//! (`cluster::RedisSink`), which `tern usage` reads back, and with `usage.webhook_url`
//! posted in batches to the operator's HTTP endpoint (`webhook`). Records are made on the worker that owned the
//! allocation, after its last relayed packet; nothing here is on the packet path, and
//! a worker never waits for a sink: records queue (bounded) for each sink's writer
//! task (`writer`). A crash loses the records of the allocations still open, which are
//! only written when they end, and those still queued for a sink.

mod webhook;
mod writer;

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc;

use crate::core::{Traffic, Usage};
use crate::metrics::Metrics;

pub use webhook::WebhookSink;
pub use writer::{Batching, Delivery, DeliveryError, Sink, Writer};

/// Makes the records of one server (every record names the node) and hands each to
/// the log and to the queue of every sink's writer.
#[derive(Clone)]
pub struct UsageLog {
    node: Arc<str>,
    queues: Vec<(&'static str, mpsc::Sender<UsageRecord>)>,
    metrics: Arc<Metrics>,
}

/// One allocation's usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// The server that relayed it (`cluster.node_id`, else the host name).
    pub node: String,
    pub realm: String,
    /// Whom it counted against: a static user's name, or a REST credential's user id.
    pub user: String,
    /// The USERNAME it was made with (for a REST credential, `expiry:user`).
    pub username: String,
    pub client: SocketAddr,
    /// The client's transport: udp, tcp or tls.
    pub transport: String,
    pub relay: SocketAddr,
    /// A dual allocation's IPv6 relayed address (`relay` is its IPv4 one), if it held
    /// both when it ended; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_relay: Option<SocketAddr>,
    /// Unix seconds.
    pub start: u64,
    pub end: u64,
    pub duration_secs: u64,
    pub to_peer: Traffic,
    pub to_client: Traffic,
    pub peers: u32,
    /// expired, deleted, connection_closed, killed, revoked, drained or shutdown.
    pub reason: String,
}

impl UsageLog {
    /// Records for the log and for each of `writers`' sinks.
    pub fn new(node: &str, writers: &[Writer], metrics: Arc<Metrics>) -> Self {
        Self {
            node: node.into(),
            queues: writers.iter().map(Writer::queue).collect(),
            metrics,
        }
    }

    /// Writes the record of `usage` to the log and queues it for every sink; a full
    /// queue drops it from that sink only (counted), never from the log.
    pub fn write(&self, usage: &Usage<'_>) {
        let record = self.record(usage);
        record.log();
        self.metrics.usage_records("log", 1);
        for (sink, queue) in &self.queues {
            if queue.try_send(record.clone()).is_err() {
                self.metrics.usage_dropped(sink, "queue_full", 1);
            }
        }
    }

    /// The record of `usage`, ending now.
    pub fn record(&self, usage: &Usage<'_>) -> UsageRecord {
        let end = crate::clock::unix_now();
        let duration_secs = usage.duration.as_secs();
        UsageRecord {
            node: self.node.to_string(),
            realm: usage.realm.to_string(),
            user: usage.user.to_string(),
            username: usage.username.to_string(),
            client: usage.tuple.client,
            transport: usage.tuple.transport.name().to_string(),
            relay: usage.relay,
            additional_relay: usage.additional_relay,
            start: end.saturating_sub(duration_secs),
            end,
            duration_secs,
            to_peer: usage.to_peer,
            to_client: usage.to_client,
            peers: usage.peers,
            reason: usage.reason.name().to_string(),
        }
    }
}

impl UsageRecord {
    /// Writes the record as a `tern::usage` log event, one field per value. User names
    /// come from clients and are escaped, so none can forge a log line.
    pub fn log(&self) {
        tracing::info!(
            target: "tern::usage",
            node = %self.node,
            realm = %self.realm,
            user = %self.user.escape_debug(),
            username = %self.username.escape_debug(),
            client = %self.client,
            transport = %self.transport,
            relay = %self.relay,
            additional_relay = self.additional_relay.map(tracing::field::display),
            start = self.start,
            end = self.end,
            duration_secs = self.duration_secs,
            packets_to_peer = self.to_peer.packets,
            bytes_to_peer = self.to_peer.bytes,
            packets_to_client = self.to_client.packets,
            bytes_to_client = self.to_client.bytes,
            peers = self.peers,
            reason = %self.reason,
            "allocation usage"
        );
    }
}
