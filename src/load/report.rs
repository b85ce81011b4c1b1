//! The run's figures, computed from what each phase produced, and printed either as one
//! JSON object or as aligned `name: value` lines; both come from one list of fields,
//! so they always carry the same names. A figure that does not apply is `null` (`-`).

use std::net::SocketAddr;

use serde_json::{Value, json};

use super::machine_stats::CpuSample;
use super::peer::PeerCounts;
use super::plan::{Phase, Plan, Traffic};
use super::server_stats::{ProcSample, ServerWatch};
use super::setup::{Established, Failures};
use super::stats::Percentiles;
use super::traffic::Outcome;
use crate::client::Transport;
use crate::proto::channel_data::HEADER_LEN;

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    server: SocketAddr,
    transport: Transport,
    allocations: usize,
    allocations_ok: usize,
    allocation_failures: Failures,
    setup_seconds: f64,
    setup_rate: f64,
    hold_refresh_failures: Option<u64>,
    packets_sent: Option<u64>,
    packets_received: Option<u64>,
    peer_received: Option<u64>,
    peer_dropped: Option<u64>,
    loss_to_peer: Option<f64>,
    loss_to_client: Option<f64>,
    loss_round_trip: Option<f64>,
    relayed_packets: Option<u64>,
    relayed_pps: Option<f64>,
    relayed_mbps: Option<f64>,
    rtt_ms: Option<Percentiles>,
    links_failed: Option<u64>,
    server_cpu_us_per_packet: Option<f64>,
    machine_cpu_us_per_packet: Option<f64>,
    client_cpu_us_per_packet: Option<f64>,
    server_cpu_us_per_allocation: Option<f64>,
    server_rss_kb_before: Option<u64>,
    server_rss_kb_after: Option<u64>,
    server_hwm_kb: Option<u64>,
    rss_delta_per_allocation_bytes: Option<f64>,
}

impl Report {
    /// The setup figures; the others start as not applicable.
    pub fn after_setup(plan: &Plan, setup: &Established) -> Self {
        let seconds = setup.elapsed.as_secs_f64();
        let ok = setup.conns.len();
        Self {
            server: plan.server,
            transport: plan.transport,
            allocations: plan.allocations,
            allocations_ok: ok,
            allocation_failures: setup.failures.clone(),
            setup_seconds: seconds,
            setup_rate: if seconds > 0.0 {
                ok as f64 / seconds
            } else {
                0.0
            },
            hold_refresh_failures: None,
            packets_sent: None,
            packets_received: None,
            peer_received: None,
            peer_dropped: None,
            loss_to_peer: None,
            loss_to_client: None,
            loss_round_trip: None,
            relayed_packets: None,
            relayed_pps: None,
            relayed_mbps: None,
            rtt_ms: None,
            links_failed: None,
            server_cpu_us_per_packet: None,
            machine_cpu_us_per_packet: None,
            client_cpu_us_per_packet: None,
            server_cpu_us_per_allocation: None,
            server_rss_kb_before: None,
            server_rss_kb_after: None,
            server_hwm_kb: None,
            rss_delta_per_allocation_bytes: None,
        }
    }

    pub fn add_hold(&mut self, refresh_failures: u64) {
        self.hold_refresh_failures = Some(refresh_failures);
    }

    /// The data-phase figures. `peer` is what the built-in peer saw (`None` with an
    /// external peer: then client→peer relaying is assumed to match the echoes).
    pub fn add_traffic(&mut self, traffic: &Traffic, outcome: &Outcome, peer: Option<PeerCounts>) {
        let totals = outcome.totals;
        let peer_received = peer.map(|p| p.received);
        let relayed = peer_received.unwrap_or(totals.received) + totals.received;
        let seconds = traffic.duration.as_secs_f64();
        let bits = (usize::from(traffic.payload) + HEADER_LEN) as f64 * 8.0;
        self.packets_sent = Some(totals.sent);
        self.packets_received = Some(totals.received);
        self.peer_received = peer_received;
        self.peer_dropped = peer.and_then(|p| p.dropped);
        self.loss_to_peer = peer_received.and_then(|peer| loss(totals.sent, peer));
        self.loss_to_client = peer_received.and_then(|peer| loss(peer, totals.received));
        self.loss_round_trip = loss(totals.sent, totals.received);
        self.relayed_packets = Some(relayed);
        self.relayed_pps = Some(relayed as f64 / seconds);
        self.relayed_mbps = Some(relayed as f64 * bits / seconds / 1e6);
        self.rtt_ms = outcome.rtt;
        self.links_failed = Some(totals.links_failed);
    }

    /// The machine's and the load client's CPU per relayed packet, from samples taken
    /// around the data phase (after [`Self::add_traffic`], which counts the packets).
    pub fn add_phase_cpu(&mut self, before: &CpuSample, after: &CpuSample) {
        let Some(relayed) = self.relayed_packets.filter(|&n| n > 0) else {
            return;
        };
        let per_packet = |from: u64, to: u64| to.saturating_sub(from) as f64 / relayed as f64;
        self.machine_cpu_us_per_packet = Some(per_packet(before.machine_us, after.machine_us));
        self.client_cpu_us_per_packet = Some(per_packet(before.client_us, after.client_us));
    }

    /// The server figures of `--server-pid`; which samples bound "before" and "after"
    /// depends on the phase measured.
    pub fn add_server(&mut self, watch: &ServerWatch, phase: &Phase) {
        let ok = self.allocations_ok;
        let per_allocation = |total: f64| (ok > 0).then(|| total / ok as f64);
        let before_setup = watch.before_setup;
        if let Some(after_setup) = watch.after_setup {
            let cpu = before_setup.cpu_us_until(&after_setup);
            self.server_cpu_us_per_allocation = per_allocation(cpu as f64);
        }
        let (before, after, settled) = match phase {
            Phase::SetupOnly => (Some(before_setup), watch.after_setup, watch.after_setup),
            Phase::Hold(_) => (Some(before_setup), watch.after_phase, watch.after_phase),
            Phase::Traffic(_) => (watch.after_setup, watch.after_phase, watch.after_setup),
        };
        self.server_rss_kb_before = before.map(|s| s.rss_kb);
        self.server_rss_kb_after = after.map(|s| s.rss_kb);
        let last: ProcSample = after.or(watch.after_setup).unwrap_or(before_setup);
        self.server_hwm_kb = Some(last.hwm_kb);
        self.rss_delta_per_allocation_bytes = settled
            .and_then(|s| per_allocation((s.rss_kb as f64 - before_setup.rss_kb as f64) * 1024.0));
        if let (Phase::Traffic(_), Some(from), Some(to), Some(relayed)) = (
            phase,
            watch.after_setup,
            watch.after_phase,
            self.relayed_packets,
        ) {
            self.server_cpu_us_per_packet =
                (relayed > 0).then(|| from.cpu_us_until(&to) as f64 / relayed as f64);
        }
    }

    /// Every allocation set up, kept and driven without a failure.
    pub fn succeeded(&self) -> bool {
        self.allocations_ok == self.allocations
            && self.hold_refresh_failures.unwrap_or(0) == 0
            && self.links_failed.unwrap_or(0) == 0
    }

    /// One JSON object, or one aligned line per figure.
    pub fn render(&self, json: bool) -> String {
        let fields = self.fields();
        if json {
            let members: Vec<String> = fields
                .iter()
                .map(|(name, value)| format!("{}:{value}", Value::from(*name)))
                .collect();
            return format!("{{{}}}", members.join(","));
        }
        let lines: Vec<String> = fields
            .iter()
            .map(|(name, value)| format!("{:<31} {}", format!("{name}:"), human(value)))
            .collect();
        lines.join("\n")
    }

    /// The figures in print order, with their names.
    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("server", json!(self.server.to_string())),
            ("transport", json!(self.transport)),
            ("allocations", json!(self.allocations)),
            ("allocations_ok", json!(self.allocations_ok)),
            ("allocation_failures", json!(self.allocation_failures)),
            ("setup_seconds", json!(self.setup_seconds)),
            ("setup_rate", json!(self.setup_rate)),
            ("hold_refresh_failures", json!(self.hold_refresh_failures)),
            ("packets_sent", json!(self.packets_sent)),
            ("packets_received", json!(self.packets_received)),
            ("peer_received", json!(self.peer_received)),
            ("peer_dropped", json!(self.peer_dropped)),
            ("loss_to_peer", json!(self.loss_to_peer)),
            ("loss_to_client", json!(self.loss_to_client)),
            ("loss_round_trip", json!(self.loss_round_trip)),
            ("relayed_packets", json!(self.relayed_packets)),
            ("relayed_pps", json!(self.relayed_pps)),
            ("relayed_mbps", json!(self.relayed_mbps)),
            ("rtt_ms", json!(self.rtt_ms)),
            ("links_failed", json!(self.links_failed)),
            (
                "server_cpu_us_per_packet",
                json!(self.server_cpu_us_per_packet),
            ),
            (
                "machine_cpu_us_per_packet",
                json!(self.machine_cpu_us_per_packet),
            ),
            (
                "client_cpu_us_per_packet",
                json!(self.client_cpu_us_per_packet),
            ),
            (
                "server_cpu_us_per_allocation",
                json!(self.server_cpu_us_per_allocation),
            ),
            ("server_rss_kb_before", json!(self.server_rss_kb_before)),
            ("server_rss_kb_after", json!(self.server_rss_kb_after)),
            ("server_hwm_kb", json!(self.server_hwm_kb)),
            (
                "rss_delta_per_allocation_bytes",
                json!(self.rss_delta_per_allocation_bytes),
            ),
        ]
    }
}

/// The fraction of `sent` that did not arrive (`None` when nothing was sent).
fn loss(sent: u64, arrived: u64) -> Option<f64> {
    (sent > 0).then(|| (1.0 - arrived as f64 / sent as f64).max(0.0))
}

fn human(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(int), _) => int.to_string(),
            (None, Some(float)) => format!("{float:.3}"),
            (None, None) => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Object(members) if members.is_empty() => "none".into(),
        Value::Object(members) => members
            .iter()
            .map(|(k, v)| format!("{k}={}", human(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_is_a_clamped_fraction() {
        assert_eq!(loss(0, 0), None);
        assert_eq!(loss(100, 100), Some(0.0));
        assert_eq!(loss(100, 75), Some(0.25));
        assert_eq!(loss(100, 101), Some(0.0));
    }

    #[test]
    fn human_values() {
        assert_eq!(human(&json!(null)), "-");
        assert_eq!(human(&json!(12)), "12");
        assert_eq!(human(&json!(0.12345)), "0.123");
        assert_eq!(human(&json!({})), "none");
        assert_eq!(human(&json!({"401": 2, "timeout": 1})), "401=2 timeout=1");
    }
}
