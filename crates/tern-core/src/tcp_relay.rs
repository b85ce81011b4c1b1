//! RFC 6062 TCP allocations: the connections between a relay address and its peers,
//! as the engine decides about them.
//!
//! A TCP allocation's relayed transport address is a listening socket. Each peer data
//! connection (one the relay opened for a Connect, or one a peer opened to it) is
//! announced to the client with a CONNECTION-ID and waits up to 30 s for the client to
//! bind a data connection of its own to it with ConnectionBind; from then on the driver
//! copies bytes between the two and the engine only counts them.
//!
//! The client's data connection reaches whichever worker its source address hashes to,
//! not the allocation's: the table of connections is therefore shared by every worker's
//! engine ([`TcpConnections`], in [`crate::Shared`]). Sockets are the driver's; this
//! module never sees one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::bandwidth::{AllocationBandwidth, Direction, LimitScope, ServerCredit, UserBandwidth};
use crate::usage::Traffic;
use crate::{BandwidthLimits, Shared};

/// How long a peer data connection waits for its ConnectionBind, and how long a Connect
/// waits for the peer to answer (RFC 6062 §5.2: at least 30 s; §5.3 and §5.2: 30 s).
pub const BIND_TIMEOUT: Duration = Duration::from_secs(30);

/// Identifies a peer data connection server-wide (the CONNECTION-ID attribute).
pub type ConnectionId = u32;

/// Where a peer data connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// The relay is connecting to the peer for a Connect request.
    Connecting,
    /// Connected; waiting for the client's ConnectionBind until the instant given.
    Pending(Instant),
    /// Bound to a client data connection: the driver relays its bytes.
    Bound,
}

/// One peer data connection.
#[derive(Debug, Clone)]
pub struct TcpConnection {
    /// The allocation's relay address (its id) and the peer: the connection's two ends.
    pub relay: SocketAddr,
    pub peer: SocketAddr,
    /// The allocation's USERNAME: a ConnectionBind must carry the same (RFC 6062 §5.4).
    pub username: Arc<str>,
    /// The allocation's control connection. Clients sign a ConnectionBind with the
    /// control connection's nonce (coturn's client does), which was issued to it.
    pub control: crate::FiveTuple,
    pub state: ConnectionState,
    /// What the allocation's connections relayed (shared by all of them).
    pub traffic: Arc<StreamTraffic>,
    /// The allocation's bandwidth limits (shared by all of them).
    pub bandwidth: Arc<StreamBandwidth>,
}

/// Bytes and reads relayed through an allocation's TCP connections, each way. Atomic:
/// the driver's copy loops run on the worker of each client data connection.
#[derive(Debug, Default)]
pub struct StreamTraffic {
    to_peer: [AtomicU64; 2],
    to_client: [AtomicU64; 2],
}

impl StreamTraffic {
    /// One read of `bytes` relayed towards the peer.
    pub fn count_to_peer(&self, bytes: usize) {
        Self::count(&self.to_peer, bytes);
    }

    /// One read of `bytes` relayed towards the client.
    pub fn count_to_client(&self, bytes: usize) {
        Self::count(&self.to_client, bytes);
    }

    fn count(counters: &[AtomicU64; 2], bytes: usize) {
        counters[0].fetch_add(1, Ordering::Relaxed);
        counters[1].fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// So far towards the peer (a "packet" is one read from the client).
    pub fn to_peer(&self) -> Traffic {
        Self::read(&self.to_peer)
    }

    /// So far towards the client (a "packet" is one read from the peer).
    pub fn to_client(&self) -> Traffic {
        Self::read(&self.to_client)
    }

    fn read(counters: &[AtomicU64; 2]) -> Traffic {
        Traffic {
            packets: counters[0].load(Ordering::Relaxed),
            bytes: counters[1].load(Ordering::Relaxed),
        }
    }
}

/// A TCP allocation's side of the bandwidth limits (`[bandwidth]`): the same buckets
/// as a UDP allocation's, its user's and the server's, but a byte stream cannot drop
/// what does not fit, so its copy loops wait for room instead (TCP's flow control then
/// slows the sender down). Shared by the allocation's connections, whichever workers
/// copy them.
pub struct StreamBandwidth {
    allocation: Mutex<AllocationBandwidth>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for StreamBandwidth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamBandwidth")
            .field("allocation", &self.allocation)
            .finish_non_exhaustive()
    }
}

/// Longest a copy loop sleeps before asking a bucket again.
const MAX_WAIT: Duration = Duration::from_secs(1);

impl StreamBandwidth {
    pub fn new(shared: Arc<Shared>, user: Arc<UserBandwidth>) -> Self {
        Self {
            allocation: Mutex::new(AllocationBandwidth::new(user)),
            shared,
        }
    }

    /// The most bytes to charge at once: the smallest burst set (a charge larger than
    /// a bucket's burst never fits), `None` while no limit is set.
    pub fn piece(&self) -> Option<usize> {
        let limits = self.shared.bandwidth_limits()?;
        let bursts = [limits.allocation, limits.user, limits.server];
        let smallest = bursts.into_iter().flatten().map(|l| l.burst).min()?;
        Some(usize::try_from(smallest).unwrap_or(usize::MAX).max(1))
    }

    /// Charges `bytes` (at most [`Self::piece`]) going in `direction` at `now`, with
    /// `credit` the caller's at the server's buckets. On a refusal nothing is charged and
    /// the answer is how long to wait before asking again: the time the refusing limit
    /// takes to pass them.
    pub fn charge(
        &self,
        direction: Direction,
        bytes: usize,
        now: Instant,
        credit: &mut ServerCredit,
    ) -> Result<(), Duration> {
        let Some(limits) = self.shared.bandwidth_limits() else {
            return Ok(());
        };
        let clock = self.shared.bandwidth_clock(now);
        let server = (&self.shared.server_bandwidth, credit);
        let mut allocation = self.allocation.lock().unwrap_or_else(|e| e.into_inner());
        let refused = allocation.try_charge(&limits, server, direction, bytes as u64, clock);
        refused.map_err(|scope| wait_for(&limits, scope, bytes))
    }
}

/// How long the limit `scope` of `limits` takes to pass `bytes`, within 1 ms and
/// [`MAX_WAIT`].
fn wait_for(limits: &BandwidthLimits, scope: LimitScope, bytes: usize) -> Duration {
    let limit = match scope {
        LimitScope::Allocation => limits.allocation,
        LimitScope::User => limits.user,
        LimitScope::Server => limits.server,
    };
    let rate = limit.map_or(1, |l| l.bytes_per_sec.max(1));
    let nanos = (bytes as u128 * 1_000_000_000 / u128::from(rate)).min(u64::MAX as u128);
    Duration::from_nanos(nanos as u64).clamp(Duration::from_millis(1), MAX_WAIT)
}

/// Every worker's peer data connections, by CONNECTION-ID.
#[derive(Debug, Default)]
pub struct TcpConnections {
    by_id: HashMap<ConnectionId, TcpConnection>,
}

impl TcpConnections {
    /// Adds `connection` under a fresh id, never 0 and never one in use.
    pub fn insert(&mut self, connection: TcpConnection, rng: &mut impl Rng) -> ConnectionId {
        loop {
            let id = rng.random::<u32>();
            if id != 0 && !self.by_id.contains_key(&id) {
                self.by_id.insert(id, connection);
                return id;
            }
        }
    }

    pub fn get(&self, id: ConnectionId) -> Option<&TcpConnection> {
        self.by_id.get(&id)
    }

    pub fn get_mut(&mut self, id: ConnectionId) -> Option<&mut TcpConnection> {
        self.by_id.get_mut(&id)
    }

    pub fn remove(&mut self, id: ConnectionId) -> Option<TcpConnection> {
        self.by_id.remove(&id)
    }

    /// Whether the allocation at `relay` has a live connection (connecting, pending or
    /// bound) with `peer` (a second Connect to it is 446, RFC 6062 §5.2).
    pub fn has_peer(&self, ids: &[ConnectionId], peer: SocketAddr) -> bool {
        ids.iter()
            .filter_map(|id| self.by_id.get(id))
            .any(|c| c.peer == peer)
    }
}

/// A TCP allocation's side of its connections, kept in its [`crate::Allocation`].
#[derive(Debug)]
pub struct TcpAllocation {
    /// Its connections' ids. Invariant: a superset of the ids in [`TcpConnections`]
    /// whose relay is this allocation's; ids of ended connections are pruned lazily.
    pub connections: Vec<ConnectionId>,
    /// Connect requests waiting for their peer, to be answered when it answers.
    pub connects: Vec<PendingConnect>,
    pub traffic: Arc<StreamTraffic>,
    pub bandwidth: Arc<StreamBandwidth>,
}

impl TcpAllocation {
    pub fn new(bandwidth: StreamBandwidth) -> Self {
        Self {
            connections: Vec::new(),
            connects: Vec::new(),
            traffic: Arc::default(),
            bandwidth: Arc::new(bandwidth),
        }
    }

    /// A new connection of this allocation's between `relay` and `peer`, under its
    /// control connection `control` (the three `ends`), sharing its counts and buckets.
    pub fn connection(
        &self,
        (relay, peer, control): (SocketAddr, SocketAddr, crate::FiveTuple),
        username: Arc<str>,
        state: ConnectionState,
    ) -> TcpConnection {
        TcpConnection {
            relay,
            peer,
            username,
            control,
            state,
            traffic: self.traffic.clone(),
            bandwidth: self.bandwidth.clone(),
        }
    }

    /// Forgets the connections that ended (the table no longer has them).
    pub fn prune(&mut self, table: &TcpConnections) {
        self.connections.retain(|id| table.get(*id).is_some());
    }
}

/// A Connect request whose answer waits for the peer: what the answer needs.
#[derive(Debug)]
pub struct PendingConnect {
    pub id: ConnectionId,
    pub transaction_id: stun::agent::TransactionId,
    /// The request's integrity key, to sign the answer in kind.
    pub mac: ring::hmac::Key,
    pub fingerprint: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn shared() -> Arc<Shared> {
        let ports = crate::PortRange::new(50000, 50009).unwrap();
        Arc::new(Shared::new(ports, Instant::now()))
    }

    fn connection(peer: &str) -> TcpConnection {
        TcpConnection {
            relay: "192.0.2.1:50000".parse().unwrap(),
            peer: peer.parse().unwrap(),
            username: "u".into(),
            control: crate::FiveTuple {
                client: "192.0.2.9:40000".parse().unwrap(),
                server: "192.0.2.1:3478".parse().unwrap(),
                transport: crate::Transport::Tcp,
            },
            state: ConnectionState::Connecting,
            traffic: Arc::default(),
            bandwidth: Arc::new(StreamBandwidth::new(shared(), Arc::default())),
        }
    }

    #[test]
    fn ids_are_unique_and_never_zero() {
        let mut table = TcpConnections::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let ids: Vec<_> = (0..1000)
            .map(|_| table.insert(connection("198.51.100.1:80"), &mut rng))
            .collect();
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 1000);
        assert!(!ids.contains(&0));
    }

    #[test]
    fn a_peer_is_live_until_its_connection_is_removed() {
        let mut table = TcpConnections::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let id = table.insert(connection("198.51.100.1:80"), &mut rng);
        let peer = "198.51.100.1:80".parse().unwrap();
        assert!(table.has_peer(&[id], peer));
        assert!(!table.has_peer(&[id], "198.51.100.1:81".parse().unwrap()));
        let mut alloc = TcpAllocation::new(StreamBandwidth::new(shared(), Arc::default()));
        alloc.connections.push(id);
        table.remove(id);
        assert!(!table.has_peer(&[id], peer));
        alloc.prune(&table);
        assert!(alloc.connections.is_empty());
    }

    #[test]
    fn traffic_counts_reads_and_bytes() {
        let traffic = StreamTraffic::default();
        traffic.count_to_peer(100);
        traffic.count_to_peer(50);
        traffic.count_to_client(7);
        assert_eq!(traffic.to_peer().bytes, 150);
        assert_eq!(traffic.to_peer().packets, 2);
        assert_eq!(traffic.to_client().bytes, 7);
    }

    #[test]
    fn a_stream_waits_for_room_instead_of_dropping() {
        let shared = shared();
        let bandwidth = StreamBandwidth::new(shared.clone(), Arc::default());
        assert_eq!(bandwidth.piece(), None);
        let now = Instant::now();
        let mut credit = [0; 2];
        assert_eq!(
            bandwidth.charge(Direction::ToPeer, 1 << 20, now, &mut credit),
            Ok(())
        );
        // 100 kB/s with a 10 kB burst: 10 kB pass at once, the next 5 kB wait 50 ms.
        let limit = crate::Limit::new(100_000, 10_000);
        shared.set_bandwidth_limits(Some(BandwidthLimits {
            allocation: Some(limit),
            ..BandwidthLimits::default()
        }));
        assert_eq!(bandwidth.piece(), Some(10_000));
        assert_eq!(
            bandwidth.charge(Direction::ToPeer, 10_000, now, &mut credit),
            Ok(())
        );
        let wait = bandwidth.charge(Direction::ToPeer, 5_000, now, &mut credit);
        assert_eq!(wait, Err(Duration::from_millis(50)));
        let later = now + Duration::from_millis(50);
        assert_eq!(
            bandwidth.charge(Direction::ToPeer, 5_000, later, &mut credit),
            Ok(())
        );
        // The other direction has a bucket of its own.
        assert_eq!(
            bandwidth.charge(Direction::ToClient, 10_000, now, &mut credit),
            Ok(())
        );
    }
}
