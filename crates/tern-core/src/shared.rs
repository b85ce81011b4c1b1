//! State the engines of all workers share: relay ports, quota counts, EVEN-PORT
//! reservations, the fleet view and the bandwidth buckets of users and the server.
//!
//! Every allocation belongs to one worker's engine, but the ports it binds, the quota
//! it counts against and the reservation a client on another worker may claim are
//! server-wide. They are only touched on the control path (Allocate, deletion,
//! reservation expiry, and a datagram from a relay IP checked for a TURN loop), never
//! per relayed packet, so a mutex each is enough. The bandwidth buckets are the
//! exception: they are atomics, charged per packet while limits are set.

use rand::Rng;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use arc_swap::ArcSwap;

use super::PortRange;
use super::bandwidth::{BandwidthLimits, SharedBuckets, UserBandwidth};
use super::fleet::FleetView;
use super::ports::PortPool;
use super::tcp_relay::TcpConnections;

/// A port held for a later Allocate with RESERVATION-TOKEN.
#[derive(Debug, Clone, Copy)]
pub struct Reservation {
    pub relay: SocketAddr,
    pub expires: Instant,
}

/// Allocation counts, server-wide and per quota identity.
#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_user: HashMap<String, UserCount>,
}

/// A user's allocations on this node, and the bandwidth buckets they share.
#[derive(Debug, Default)]
struct UserCount {
    allocations: usize,
    bandwidth: Arc<UserBandwidth>,
}

pub struct Shared {
    ports: Mutex<PortPool>,
    counts: Mutex<Counts>,
    reservations: Mutex<HashMap<[u8; 8], Reservation>>,
    /// Quota identities (REST user ids, static names) refused from now on.
    revoked: Mutex<std::collections::HashSet<String>>,
    /// The rest of the fleet, replaced whole by the fleet heartbeat (tern's `cluster`)
    /// at each beat through [`Shared::set_fleet`].
    fleet: ArcSwap<FleetView>,
    /// The server-wide bandwidth buckets.
    pub(crate) server_bandwidth: SharedBuckets,
    /// The origin of the bandwidth buckets' clock, shared so that every worker's
    /// nanoseconds mean the same instant.
    epoch: Instant,
    /// Peer data connections of TCP allocations (RFC 6062): a client binds to one from
    /// whichever worker its data connection reached.
    tcp_connections: Mutex<TcpConnections>,
    /// The bandwidth limits as last loaded, for the relaying the engines do not do
    /// themselves (TCP allocations' connections, copied by the driver).
    bandwidth_limits: ArcSwap<Option<BandwidthLimits>>,
}

/// Locks a mutex, taking the data even if another worker panicked while holding it:
/// the counters stay usable and a panic is reported elsewhere.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Shared state for relay ports in `ports`; `epoch` is any instant before the
    /// first packet (the bandwidth buckets count nanoseconds from it).
    pub fn new(ports: PortRange, epoch: Instant) -> Self {
        Self {
            ports: Mutex::new(PortPool::new(ports)),
            counts: Mutex::new(Counts::default()),
            reservations: Mutex::new(HashMap::new()),
            revoked: Mutex::new(std::collections::HashSet::new()),
            fleet: ArcSwap::from_pointee(FleetView::default()),
            server_bandwidth: SharedBuckets::default(),
            epoch,
            tcp_connections: Mutex::new(TcpConnections::default()),
            bandwidth_limits: ArcSwap::from_pointee(None),
        }
    }

    /// The fleet view the engines read.
    pub fn fleet(&self) -> arc_swap::Guard<Arc<FleetView>> {
        self.fleet.load()
    }

    /// Installs a new view of the fleet, and gives each user with allocations here the
    /// part of its bandwidth limit that matches its allocations here against the
    /// fleet's.
    pub fn set_fleet(&self, view: FleetView) {
        let counts = lock(&self.counts);
        for (identity, user) in &counts.per_user {
            let remote = view.remote_users.get(identity).copied().unwrap_or(0);
            user.bandwidth.set_share(user.allocations, remote);
        }
        self.fleet.store(Arc::new(view));
    }

    /// `now` in nanoseconds since the epoch, as the bandwidth buckets count time.
    pub(crate) fn bandwidth_clock(&self, now: Instant) -> u64 {
        let nanos = now.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }

    /// The bandwidth buckets of `identity`'s allocations on this node (a fresh set if
    /// it has none counted, which the engine never asks for).
    pub(crate) fn user_bandwidth(&self, identity: &str) -> Arc<UserBandwidth> {
        lock(&self.counts)
            .per_user
            .get(identity)
            .map(|user| user.bandwidth.clone())
            .unwrap_or_default()
    }

    pub fn ports(&self) -> MutexGuard<'_, PortPool> {
        lock(&self.ports)
    }

    /// Sets the bandwidth limits in force (each engine does, at start and reload).
    pub fn set_bandwidth_limits(&self, limits: Option<BandwidthLimits>) {
        if **self.bandwidth_limits.load() != limits {
            self.bandwidth_limits.store(Arc::new(limits));
        }
    }

    /// The bandwidth limits in force.
    pub fn bandwidth_limits(&self) -> Option<BandwidthLimits> {
        **self.bandwidth_limits.load()
    }

    /// The peer data connections of every TCP allocation.
    pub fn tcp_connections(&self) -> MutexGuard<'_, TcpConnections> {
        lock(&self.tcp_connections)
    }

    /// Counts one more allocation for `identity` unless that would pass `max_total`
    /// here or `max_per_user` (over the fleet, with the other nodes' counts); false
    /// when a quota is reached.
    pub fn try_count_allocation(
        &self,
        identity: &str,
        max_total: usize,
        max_per_user: usize,
    ) -> bool {
        let fleet = self.fleet.load();
        let mut counts = lock(&self.counts);
        let user = counts.per_user.get(identity).map_or(0, |u| u.allocations);
        if counts.total >= max_total || !fleet.admits(identity, user, counts.total, max_per_user) {
            return false;
        }
        counts.total += 1;
        let user = counts.per_user.entry(identity.to_string()).or_default();
        user.allocations += 1;
        let remote = fleet.remote_users.get(identity).copied().unwrap_or(0);
        user.bandwidth.set_share(user.allocations, remote);
        true
    }

    pub fn uncount_allocation(&self, identity: &str) {
        let fleet = self.fleet.load();
        let mut counts = lock(&self.counts);
        counts.total = counts.total.saturating_sub(1);
        if let Some(user) = counts.per_user.get_mut(identity) {
            user.allocations -= 1;
            if user.allocations == 0 {
                counts.per_user.remove(identity);
            } else {
                let remote = fleet.remote_users.get(identity).copied().unwrap_or(0);
                user.bandwidth.set_share(user.allocations, remote);
            }
        }
    }

    pub fn total_allocations(&self) -> usize {
        lock(&self.counts).total
    }

    /// Allocations per quota identity on this node, for the fleet.
    pub fn allocations_per_user(&self) -> HashMap<String, usize> {
        let counts = lock(&self.counts);
        let per_user = counts.per_user.iter();
        per_user
            .map(|(id, u)| (id.clone(), u.allocations))
            .collect()
    }

    /// Keeps `reservation` under a fresh random token and returns the token. A token
    /// never replaces a live one: that reservation's port would never be freed, and a
    /// claim with the token would get the other reservation's port.
    pub fn reserve(&self, reservation: Reservation, rng: &mut impl Rng) -> [u8; 8] {
        let mut reservations = lock(&self.reservations);
        // Ends at the first token not in use: there are far fewer than 2^64.
        loop {
            let token: [u8; 8] = rng.random();
            if let Entry::Vacant(slot) = reservations.entry(token) {
                slot.insert(reservation);
                return token;
            }
        }
    }

    /// Takes the reservation of `token` if it is still valid at `now`; an expired one
    /// is dropped and its port freed.
    pub fn claim(&self, token: &[u8; 8], now: Instant) -> Option<Reservation> {
        let reservation = lock(&self.reservations).remove(token)?;
        if now < reservation.expires {
            Some(reservation)
        } else {
            self.release_port(reservation.relay);
            None
        }
    }

    /// Drops the reservation of `token` if it has expired, freeing its port.
    pub fn expire_reservation(&self, token: &[u8; 8], now: Instant) {
        let mut reservations = lock(&self.reservations);
        if let Some(r) = reservations.get(token)
            && r.expires <= now
        {
            self.release_port(r.relay);
            reservations.remove(token);
        }
    }

    /// Refuses `identity` from now on (its allocations are killed by the caller).
    pub fn revoke(&self, identity: &str) {
        lock(&self.revoked).insert(identity.to_string());
    }

    pub fn is_revoked(&self, identity: &str) -> bool {
        let revoked = lock(&self.revoked);
        !revoked.is_empty() && revoked.contains(identity)
    }

    pub fn release_port(&self, addr: SocketAddr) {
        self.ports().release(addr.ip(), addr.port());
    }

    /// Whether the port of `addr` is taken on its IP (bound by a relay socket or reserved).
    pub fn port_taken(&self, addr: SocketAddr) -> bool {
        self.ports().is_taken(addr.ip(), addr.port())
    }
}
