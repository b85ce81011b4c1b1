//! What each node publishes about itself at every heartbeat, and the fleet view a
//! node derives from everyone's records. Pure data and arithmetic: no Redis here.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;

use crate::core::fleet::{Alternate, FleetView};

/// One node's state, stored under its own key with the node TTL, so a node that dies
/// disappears from the fleet (sessions, quota share, redirect target) by itself.
/// Fields missing from a record (one written by another version during a rolling
/// upgrade) take their defaults instead of hiding the node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeRecord {
    pub id: String,
    /// Random per start: two running nodes given the same id tell each other apart.
    pub instance: u64,
    pub realm: String,
    /// Where clients reach its UDP/TCP and TLS listeners.
    pub plain: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    pub allocations: usize,
    /// Relayed bandwidth over the last heartbeat, both ways, in Mbit/s.
    pub mbps: f64,
    pub draining: bool,
    /// Over a load threshold: other nodes do not send it clients.
    pub overloaded: bool,
    /// Allocations per quota identity.
    pub users: HashMap<String, usize>,
}

/// The thresholds above which a node hands new clients to others (0: never).
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadLimits {
    pub allocations: usize,
    pub mbps: u64,
}

impl LoadLimits {
    pub fn exceeded_by(&self, allocations: usize, mbps: f64) -> bool {
        (self.allocations > 0 && allocations >= self.allocations)
            || (self.mbps > 0 && mbps >= self.mbps as f64)
    }
}

/// The view of `me` from the live records of the fleet (its own included or not):
/// the other nodes of its realm count against quotas, and the least-loaded of them
/// that takes clients (not draining, not overloaded) is the alternate.
pub fn fleet_view(
    me: &NodeRecord,
    records: &[NodeRecord],
    realm_cap: usize,
    limits: LoadLimits,
) -> FleetView {
    let others: Vec<&NodeRecord> = records
        .iter()
        .filter(|r| r.id != me.id && r.realm == me.realm)
        .collect();
    let mut remote_users: HashMap<String, usize> = HashMap::new();
    for record in &others {
        for (user, count) in &record.users {
            *remote_users.entry(user.clone()).or_default() += count;
        }
    }
    let alternate = others
        .iter()
        .filter(|r| !r.draining && !r.overloaded)
        .min_by(|a, b| {
            (a.allocations, a.mbps)
                .partial_cmp(&(b.allocations, b.mbps))
                .unwrap_or(std::cmp::Ordering::Equal)
                .then_with(|| a.id.cmp(&b.id))
        })
        .map(|r| Alternate {
            plain: r.plain.clone(),
            tls: r.tls.clone(),
        })
        .unwrap_or_default();
    FleetView {
        remote_users,
        remote_total: others.iter().map(|r| r.allocations).sum(),
        realm_cap,
        // Allocations are checked live by the engine; bandwidth only per heartbeat.
        overloaded: limits.mbps > 0 && me.mbps >= limits.mbps as f64,
        redirect_above_allocations: limits.allocations,
        alternate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, allocations: usize) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            realm: "tern".into(),
            plain: vec![
                format!("192.0.2.{}:3478", allocations % 200)
                    .parse()
                    .unwrap(),
            ],
            allocations,
            users: HashMap::from([("alice".to_string(), 1)]),
            ..NodeRecord::default()
        }
    }

    #[test]
    fn others_count_and_the_least_loaded_taker_is_the_alternate() {
        let me = node("a", 9);
        let mut busy = node("b", 3);
        busy.overloaded = true;
        let mut leaving = node("c", 1);
        leaving.draining = true;
        let idle = node("d", 5);
        let mut elsewhere = node("e", 0);
        elsewhere.realm = "other".into();
        let records = [me.clone(), busy, leaving, idle.clone(), elsewhere];
        let view = fleet_view(&me, &records, 0, LoadLimits::default());
        assert_eq!(view.remote_users["alice"], 3, "b, c and d; not me, not e");
        assert_eq!(view.remote_total, 9);
        assert_eq!(view.alternate.plain, idle.plain);
    }

    #[test]
    fn a_lone_node_has_no_alternate() {
        let me = node("a", 1);
        let view = fleet_view(&me, std::slice::from_ref(&me), 0, LoadLimits::default());
        assert_eq!(view.alternate, Alternate::default());
        assert!(view.remote_users.is_empty());
    }

    #[test]
    fn load_limits_of_zero_never_trigger() {
        assert!(!LoadLimits::default().exceeded_by(1_000_000, 1e9));
        let limits = LoadLimits {
            allocations: 10,
            mbps: 100,
        };
        assert!(!limits.exceeded_by(9, 99.0));
        assert!(limits.exceeded_by(10, 0.0));
        assert!(limits.exceeded_by(0, 100.0));
    }
}
