//! What a node knows of the rest of its fleet, as the engine needs it on Allocate:
//! allocations other nodes hold (quotas hold fleet-wide) and where to send a client
//! when this node is draining or over its load threshold. tern's fleet heartbeat keeps it
//! current from Redis; a single node has the empty view, which changes nothing.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::Transport;

#[derive(Debug, Default, Clone)]
pub struct FleetView {
    /// Allocations the other live nodes hold, per quota identity.
    pub remote_users: HashMap<String, usize>,
    /// Allocations the other live nodes of this realm hold.
    pub remote_total: usize,
    /// Cap on the realm's allocations over the fleet; 0 for none.
    pub realm_cap: usize,
    /// This node is over its bandwidth threshold (measured at each heartbeat): new
    /// allocations go to `alternate`.
    pub overloaded: bool,
    /// New allocations go to `alternate` once this node holds this many (0: never);
    /// checked against the live count at each Allocate, so it holds exactly.
    pub redirect_above_allocations: usize,
    /// The least-loaded live node, if any other is.
    pub alternate: Alternate,
}

/// Where a redirected client should go, by listener kind; each holds IPv4 and/or IPv6.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Alternate {
    pub plain: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
}

impl FleetView {
    /// Whether a node holding `allocations` should hand new clients to another.
    pub fn wants_redirect(&self, allocations: usize) -> bool {
        self.overloaded
            || (self.redirect_above_allocations > 0
                && allocations >= self.redirect_above_allocations)
    }

    /// The alternate for a client that came over `transport` to a server address of
    /// the given family: a client is only sent to the same transport and family.
    pub fn alternate_for(&self, transport: Transport, ipv6: bool) -> Option<SocketAddr> {
        let candidates = match transport {
            Transport::Udp | Transport::Tcp => &self.alternate.plain,
            Transport::Tls => &self.alternate.tls,
            // An alternate's DTLS listeners are not advertised: no redirect.
            Transport::Dtls => return None,
        };
        candidates.iter().copied().find(|a| a.is_ipv6() == ipv6)
    }

    /// Whether one more allocation for `identity` passes the fleet-wide quotas, given
    /// what this node holds itself.
    pub fn admits(
        &self,
        identity: &str,
        local_user: usize,
        local_total: usize,
        max_per_user: usize,
    ) -> bool {
        let remote_user = self.remote_users.get(identity).copied().unwrap_or(0);
        let realm_ok = self.realm_cap == 0 || local_total + self.remote_total < self.realm_cap;
        local_user + remote_user < max_per_user && realm_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn alternates_keep_transport_and_family() {
        let view = FleetView {
            alternate: Alternate {
                plain: vec![addr("192.0.2.5:3478"), addr("[2001:db8::5]:3478")],
                tls: vec![addr("192.0.2.5:5349")],
            },
            ..FleetView::default()
        };
        assert_eq!(
            view.alternate_for(Transport::Udp, false),
            Some(addr("192.0.2.5:3478"))
        );
        assert_eq!(
            view.alternate_for(Transport::Tcp, true),
            Some(addr("[2001:db8::5]:3478"))
        );
        assert_eq!(
            view.alternate_for(Transport::Tls, false),
            Some(addr("192.0.2.5:5349"))
        );
        assert_eq!(view.alternate_for(Transport::Tls, true), None);
        assert_eq!(view.alternate_for(Transport::Dtls, false), None);
    }

    #[test]
    fn redirect_starts_at_the_allocation_threshold_or_when_overloaded() {
        let mut view = FleetView::default();
        assert!(!view.wants_redirect(1_000_000), "0 is never");
        view.redirect_above_allocations = 5;
        assert!(!view.wants_redirect(4));
        assert!(view.wants_redirect(5));
        view.redirect_above_allocations = 0;
        view.overloaded = true;
        assert!(view.wants_redirect(0));
    }

    #[test]
    fn quotas_count_the_other_nodes() {
        let mut view = FleetView::default();
        view.remote_users.insert("alice".into(), 1);
        view.remote_total = 7;
        assert!(view.admits("alice", 0, 0, 2));
        assert!(!view.admits("alice", 1, 0, 2));
        assert!(view.admits("bob", 1, 0, 2));
        view.realm_cap = 8;
        assert!(view.admits("bob", 0, 0, 2));
        assert!(!view.admits("bob", 0, 1, 2));
    }
}
