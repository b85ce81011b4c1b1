//! Prometheus metrics (served by the admin listener at `/metrics`).
//!
//! Counters are updated as the relay works: the relayed-packet path only does atomic
//! adds on counters resolved once at start, never a label lookup or a lock. Label
//! lookups happen on the control path (responses, auth failures, allocations).
//! Gauges that describe state (ports in use, connections, draining) are set when
//! scraped.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::core::{Count, Direction, LimitScope, Reject, RelayFamilies, Transport};
use crate::offload::{FALLBACKS, HOOKS, Offload};
use std::sync::Arc;

/// Label sets are small `Copy` structs, so counting on the control path (every 401,
/// every allocation) never touches the heap: temporary allocations interleaved with
/// long-lived ones fragment memory, which shows in the memory per allocation.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AllocationLabels {
    transport: &'static str,
    family: &'static str,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: u16,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabel {
    sink: &'static str,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkReasonLabel {
    sink: &'static str,
    reason: &'static str,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PageLabel {
    page: &'static str,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

/// The counters of the relayed-packet path.
#[derive(Clone, Default)]
pub struct RelayCounters {
    pub to_peer_packets: Counter,
    pub to_peer_bytes: Counter,
    pub to_client_packets: Counter,
    pub to_client_bytes: Counter,
}

impl RelayCounters {
    pub fn to_peer(&self, bytes: usize) {
        self.to_peer_packets.inc();
        self.to_peer_bytes.inc_by(bytes as u64);
    }

    pub fn to_client(&self, bytes: usize) {
        self.to_client_packets.inc();
        self.to_client_bytes.inc_by(bytes as u64);
    }
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
    direction: &'static str,
}

/// What the bandwidth limits dropped, by limit and direction. Every counter is resolved
/// at start: a drop is an atomic add like a relayed packet, never a label lookup.
struct BandwidthDrops {
    packets: Family<LimitLabels, Counter>,
    bytes: Family<LimitLabels, Counter>,
    /// `[limit.index()][direction.index()]`: (packets, bytes).
    resolved: [[(Counter, Counter); 2]; 3],
}

impl Default for BandwidthDrops {
    fn default() -> Self {
        let packets = Family::<LimitLabels, Counter>::default();
        let bytes = Family::<LimitLabels, Counter>::default();
        let resolved = LimitScope::ALL.map(|limit| {
            Direction::ALL.map(|direction| {
                let labels = LimitLabels {
                    limit: limit.name(),
                    direction: direction.name(),
                };
                (
                    packets.get_or_create(&labels).clone(),
                    bytes.get_or_create(&labels).clone(),
                )
            })
        });
        Self {
            packets,
            bytes,
            resolved,
        }
    }
}

impl BandwidthDrops {
    fn count(&self, limit: LimitScope, direction: Direction, bytes: usize) {
        let (packets, bytes_counter) = &self.resolved[limit.index()][direction.index()];
        packets.inc();
        bytes_counter.inc_by(bytes as u64);
    }
}

pub struct Metrics {
    registry: Registry,
    pub relay: RelayCounters,
    bandwidth_drops: BandwidthDrops,
    allocations: Family<AllocationLabels, Gauge>,
    responses: Family<CodeLabel, Counter>,
    auth_failures: Family<ReasonLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
    pub peer_denied: Counter,
    pub quota_rejections: Counter,
    ports_in_use: Gauge,
    ports_free: Gauge,
    permissions: Gauge,
    channels: Gauge,
    connections: Gauge,
    draining: Gauge,
    last_reload_ok: Gauge,
    selftest_pages: Family<PageLabel, Counter>,
    pub selftest_credentials: Counter,
    pub selftest_rooms: Gauge,
    pub selftest_signaling_messages: Counter,
    selftest_refused: Family<ReasonLabel, Counter>,
    proxy_headers: Family<ResultLabel, Counter>,
    front_routed: Family<RouteLabel, Counter>,
    front_failures: Family<ReasonLabel, Counter>,
    usage_records: Family<SinkLabel, Counter>,
    usage_dropped: Family<SinkReasonLabel, Counter>,
    auth_webhook_lookups: Family<ResultLabel, Counter>,
    /// Requests dropped while their username waited for the auth webhook.
    pub auth_webhook_dropped: Counter,
    pub cluster_up: Gauge,
    pub cluster_nodes: Gauge,
    acme_renewals: Family<ResultLabel, Counter>,
    acme_certificate_expiry: Gauge,
    acme_http01_refused: Family<ReasonLabel, Counter>,
    /// ClientHellos answered with a HelloVerifyRequest (nothing kept for them).
    pub dtls_hello_verify: Counter,
    dtls_handshakes: Family<ResultLabel, Counter>,
    /// DTLS handshakes in progress; also what `limits.max_dtls_handshakes` counts.
    pub dtls_handshakes_in_progress: Gauge,
    dtls_refused: Family<ReasonLabel, Counter>,
    offload: OffloadMetrics,
}

/// The kernel fast path's figures, read from its maps at scrape time.
#[derive(Default)]
struct OffloadMetrics {
    source: std::sync::OnceLock<Arc<Offload>>,
    active: Gauge,
    channels: Gauge,
    packets: Family<HookLabel, Counter>,
    bytes: Family<HookLabel, Counter>,
    fallbacks: Family<ReasonLabel, Counter>,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabel {
    direction: &'static str,
    hook: &'static str,
}

impl OffloadMetrics {
    fn refresh(&self) {
        let Some(offload) = self.source.get() else {
            return;
        };
        let totals = offload.totals();
        self.active.set(1);
        self.channels.set(totals.channels as i64);
        for (&hook, relayed) in HOOKS.iter().zip(&totals.relayed) {
            let directions = [
                ("to_peer", relayed.to_peer_packets, relayed.to_peer_bytes),
                (
                    "to_client",
                    relayed.to_client_packets,
                    relayed.to_client_bytes,
                ),
            ];
            for (direction, packets, bytes) in directions {
                let label = HookLabel { direction, hook };
                advance(&self.packets.get_or_create(&label), packets);
                advance(&self.bytes.get_or_create(&label), bytes);
            }
        }
        for (&reason, &count) in FALLBACKS.iter().zip(&totals.fallbacks) {
            advance(
                &self.fallbacks.get_or_create(&ReasonLabel { reason }),
                count,
            );
        }
    }
}

/// Moves a counter up to `total`, read from a source that counts on its own.
fn advance(counter: &Counter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

/// State read at scrape time.
pub struct Snapshot {
    pub ports_in_use: usize,
    pub ports_free: usize,
    pub permissions: usize,
    pub channels: usize,
    pub connections: usize,
    pub draining: bool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            registry: Registry::with_prefix("tern"),
            relay: RelayCounters::default(),
            bandwidth_drops: BandwidthDrops::default(),
            allocations: Family::default(),
            responses: Family::default(),
            auth_failures: Family::default(),
            reloads: Family::default(),
            peer_denied: Counter::default(),
            quota_rejections: Counter::default(),
            ports_in_use: Gauge::default(),
            ports_free: Gauge::default(),
            permissions: Gauge::default(),
            channels: Gauge::default(),
            connections: Gauge::default(),
            draining: Gauge::default(),
            last_reload_ok: Gauge::default(),
            selftest_pages: Family::default(),
            selftest_credentials: Counter::default(),
            selftest_rooms: Gauge::default(),
            selftest_signaling_messages: Counter::default(),
            selftest_refused: Family::default(),
            proxy_headers: Family::default(),
            front_routed: Family::default(),
            front_failures: Family::default(),
            usage_records: Family::default(),
            usage_dropped: Family::default(),
            auth_webhook_lookups: Family::default(),
            auth_webhook_dropped: Counter::default(),
            cluster_up: Gauge::default(),
            cluster_nodes: Gauge::default(),
            acme_renewals: Family::default(),
            acme_certificate_expiry: Gauge::default(),
            acme_http01_refused: Family::default(),
            dtls_hello_verify: Counter::default(),
            dtls_handshakes: Family::default(),
            dtls_handshakes_in_progress: Gauge::default(),
            dtls_refused: Family::default(),
            offload: OffloadMetrics::default(),
        }
        .registered()
    }

    /// Registers every metric with the registry; the registry keeps clones that share
    /// their values with the handles kept here.
    fn registered(mut self) -> Self {
        let build = Family::<VersionLabel, Gauge>::default();
        build
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        let r = &mut self.registry;
        let relay = &self.relay;
        r.register(
            "relayed_to_peer_packets",
            "Packets relayed from clients to peers",
            relay.to_peer_packets.clone(),
        );
        r.register(
            "relayed_to_peer_bytes",
            "Application bytes relayed from clients to peers",
            relay.to_peer_bytes.clone(),
        );
        r.register(
            "relayed_to_client_packets",
            "Packets relayed from peers to clients",
            relay.to_client_packets.clone(),
        );
        r.register(
            "relayed_to_client_bytes",
            "Application bytes relayed from peers to clients",
            relay.to_client_bytes.clone(),
        );
        r.register("build_info", "tern's version", build);
        r.register(
            "allocations",
            "Allocations, by client transport and relay address family (ipv4, ipv6, or dual for one of each)",
            self.allocations.clone(),
        );
        r.register(
            "responses",
            "Error responses sent, by error code",
            self.responses.clone(),
        );
        r.register(
            "auth_failures",
            "Requests challenged (401/438), by reason",
            self.auth_failures.clone(),
        );
        r.register(
            "reloads",
            "Configuration reloads (SIGHUP), by result",
            self.reloads.clone(),
        );
        r.register(
            "peer_denied",
            "Peers refused by the peer policy (403)",
            self.peer_denied.clone(),
        );
        r.register(
            "quota_rejections",
            "Allocations refused by a quota (486)",
            self.quota_rejections.clone(),
        );
        r.register(
            "relay_ports_in_use",
            "Relay ports bound or reserved",
            self.ports_in_use.clone(),
        );
        r.register(
            "relay_ports_free",
            "Relay ports left, over every relay IP",
            self.ports_free.clone(),
        );
        r.register(
            "permissions",
            "Active permissions over all allocations",
            self.permissions.clone(),
        );
        r.register(
            "channels",
            "Active channel bindings over all allocations",
            self.channels.clone(),
        );
        r.register(
            "last_reload_ok",
            "1 if the last reload applied, 0 if it was refused",
            self.last_reload_ok.clone(),
        );
        r.register(
            "connections",
            "Open TCP/TLS client connections and DTLS sessions",
            self.connections.clone(),
        );
        r.register(
            "draining",
            "1 while the server drains",
            self.draining.clone(),
        );
        r.register(
            "selftest_pages",
            "Self-test pages served, by page",
            self.selftest_pages.clone(),
        );
        r.register(
            "selftest_credentials",
            "TURN credentials minted for self-test pages",
            self.selftest_credentials.clone(),
        );
        r.register(
            "selftest_rooms",
            "Self-test call rooms open",
            self.selftest_rooms.clone(),
        );
        r.register(
            "selftest_signaling_messages",
            "Signaling messages passed between call room members",
            self.selftest_signaling_messages.clone(),
        );
        r.register(
            "cluster_redis_up",
            "1 while the fleet's Redis answers (0: local quotas only)",
            self.cluster_up.clone(),
        );
        r.register(
            "cluster_nodes",
            "Live nodes of the fleet, this one included",
            self.cluster_nodes.clone(),
        );
        r.register(
            "selftest_refused",
            "Self-test requests and signaling refused, by reason",
            self.selftest_refused.clone(),
        );
        r.register(
            "proxy_protocol_headers",
            "PROXY protocol headers on listeners that take them, by result (ok, local, missing, malformed, timeout, closed, untrusted)",
            self.proxy_headers.clone(),
        );
        r.register(
            "front_routed",
            "Connections on a shared TLS port, by where their ClientHello sent them (tern, selftest, upstream)",
            self.front_routed.clone(),
        );
        r.register(
            "front_failures",
            "Connections on a shared TLS port that ended before being served, by reason",
            self.front_failures.clone(),
        );
        r.register(
            "bandwidth_dropped_packets",
            "Relayed datagrams dropped by a bandwidth limit, by limit (allocation, user, server) and direction",
            self.bandwidth_drops.packets.clone(),
        );
        r.register(
            "bandwidth_dropped_bytes",
            "Application bytes of the datagrams bandwidth limits dropped, by limit and direction",
            self.bandwidth_drops.bytes.clone(),
        );
        r.register(
            "auth_webhook_lookups",
            "Usernames looked up at auth.webhook, by result (key, refused, timeout, unreachable, status, invalid, queue_full)",
            self.auth_webhook_lookups.clone(),
        );
        r.register(
            "auth_webhook_requests_dropped",
            "Requests dropped while their username waited for auth.webhook (a bound on held requests or lookups was reached)",
            self.auth_webhook_dropped.clone(),
        );
        r.register(
            "usage_records",
            "Usage records written, by where to (log, redis, webhook)",
            self.usage_records.clone(),
        );
        r.register(
            "usage_records_dropped",
            "Usage records not delivered to a sink (redis, webhook), by reason (queue_full, rejected)",
            self.usage_dropped.clone(),
        );
        r.register(
            "acme_renewals",
            "ACME orders for the TLS certificate (first one included), by result",
            self.acme_renewals.clone(),
        );
        r.register(
            "acme_certificate_expiry_seconds",
            "When the TLS certificate served under tls.acme expires (Unix time)",
            self.acme_certificate_expiry.clone(),
        );
        r.register(
            "acme_http01_refused",
            "Connections to the ACME HTTP-01 responder refused or closed by a limit, by reason",
            self.acme_http01_refused.clone(),
        );
        r.register(
            "dtls_hello_verify_requests",
            "DTLS ClientHellos without a valid cookie, answered with a HelloVerifyRequest and nothing kept",
            self.dtls_hello_verify.clone(),
        );
        r.register(
            "dtls_handshakes",
            "DTLS handshakes of clients that passed the cookie exchange, by result (ok, failed, timeout)",
            self.dtls_handshakes.clone(),
        );
        r.register(
            "dtls_handshakes_in_progress",
            "DTLS handshakes in progress (limits.max_dtls_handshakes)",
            self.dtls_handshakes_in_progress.clone(),
        );
        r.register(
            "dtls_refused",
            "DTLS clients with a valid cookie turned away, by reason (handshake_limit, connection_limit)",
            self.dtls_refused.clone(),
        );
        let offload = &self.offload;
        r.register(
            "offload_active",
            "1 while the kernel fast path (eBPF) relays channels of UDP clients",
            offload.active.clone(),
        );
        r.register(
            "offload_channels",
            "Channels the kernel fast path holds",
            offload.channels.clone(),
        );
        r.register(
            "offload_packets",
            "Packets relayed by the kernel fast path, by direction and hook (tc, xdp)",
            offload.packets.clone(),
        );
        r.register(
            "offload_bytes",
            "Application bytes relayed by the kernel fast path, by direction and hook (tc, xdp)",
            offload.bytes.clone(),
        );
        r.register(
            "offload_fallbacks",
            "Datagrams of offloaded channels (or channels) left to user space, by reason",
            offload.fallbacks.clone(),
        );
        self
    }

    /// Reports the kernel fast path's figures from now on.
    pub fn watch_offload(&self, offload: Arc<Offload>) {
        let _ = self.offload.source.set(offload);
    }

    /// The gauge of allocations for a transport and relay families (`ipv4`, `ipv6`,
    /// or `dual`: one allocation holding one of each).
    fn allocations(&self, transport: Transport, families: RelayFamilies) -> Gauge {
        let transport = transport.name();
        let family = families.name();
        let labels = AllocationLabels { transport, family };
        self.allocations.get_or_create(&labels).clone()
    }

    /// Counts what an engine reports.
    pub fn count(&self, event: Count<'_>) {
        match event {
            Count::ErrorSent(reject) => {
                self.response(reject.code());
                match reject {
                    Reject::Forbidden => self.peer_denied.inc(),
                    Reject::QuotaReached => self.quota_rejections.inc(),
                    _ => 0,
                };
            }
            Count::Challenged { stale_nonce } => {
                self.auth_failure(if stale_nonce {
                    "stale_nonce"
                } else {
                    "unauthorized"
                });
            }
            Count::AllocationOpened {
                transport,
                families,
            } => {
                self.allocations(transport, families).inc();
            }
            Count::AllocationClosed {
                transport,
                families,
            } => {
                self.allocations(transport, families).dec();
            }
            Count::ToPeer(bytes) => self.relay.to_peer(bytes),
            Count::ToClient(bytes) => self.relay.to_client(bytes),
            Count::BandwidthDropped {
                limit,
                direction,
                bytes,
            } => self.bandwidth_drops.count(limit, direction, bytes),
        }
    }

    fn response(&self, code: u16) {
        self.responses.get_or_create(&CodeLabel { code }).inc();
    }

    fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn selftest_page(&self, page: &'static str) {
        self.selftest_pages.get_or_create(&PageLabel { page }).inc();
    }

    pub fn proxy_header(&self, result: &'static str) {
        self.proxy_headers
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    pub fn auth_webhook_lookup(&self, result: &'static str) {
        self.auth_webhook_lookups
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    pub fn front_routed(&self, route: &'static str) {
        self.front_routed.get_or_create(&RouteLabel { route }).inc();
    }

    pub fn usage_records(&self, sink: &'static str, records: usize) {
        self.usage_records
            .get_or_create(&SinkLabel { sink })
            .inc_by(records as u64);
    }

    pub fn usage_dropped(&self, sink: &'static str, reason: &'static str, records: usize) {
        self.usage_dropped
            .get_or_create(&SinkReasonLabel { sink, reason })
            .inc_by(records as u64);
    }

    pub fn front_failure(&self, reason: &'static str) {
        self.front_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn selftest_refused(&self, reason: &'static str) {
        self.selftest_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn reload(&self, result: &'static str) {
        self.reloads.get_or_create(&ResultLabel { result }).inc();
        self.last_reload_ok.set(i64::from(result == "ok"));
    }

    /// Counts an ACME order's outcome, `ok` or `error`.
    pub fn acme_renewal(&self, result: &'static str) {
        self.acme_renewals
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Records the expiry (Unix time) of the certificate served under `tls.acme`.
    pub fn acme_certificate_expiry(&self, not_after: i64) {
        self.acme_certificate_expiry.set(not_after);
    }

    pub fn dtls_handshake(&self, result: &'static str) {
        self.dtls_handshakes
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    pub fn dtls_refused(&self, reason: &'static str) {
        self.dtls_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn acme_http01_refused(&self, reason: &'static str) {
        self.acme_http01_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// The Prometheus text exposition, with the state gauges set from `snapshot`.
    pub fn encode(&self, snapshot: Snapshot) -> String {
        self.ports_in_use.set(snapshot.ports_in_use as i64);
        self.ports_free.set(snapshot.ports_free as i64);
        self.permissions.set(snapshot.permissions as i64);
        self.channels.set(snapshot.channels as i64);
        self.connections.set(snapshot.connections as i64);
        self.draining.set(i64::from(snapshot.draining));
        self.offload.refresh();
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}
