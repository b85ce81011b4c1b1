//! One allocation's state: its relay address, lifetime, permissions and channels.
//!
//! Expiry is judged against the `now` passed in; nothing here reads a clock or owns a
//! socket. Data traffic never refreshes anything: only requests do.

use super::bandwidth::AllocationBandwidth;
use super::route::{ChannelBinding, PeerRoute};
use super::tcp_relay::TcpAllocation;
use super::usage::Traffic;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;
use stun::agent::TransactionId;

/// Why a channel could not be bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelConflict {
    /// The number or the peer is bound to something else (400).
    Mismatch,
    /// The table is full (508).
    Full,
}

#[derive(Debug)]
pub struct Allocation {
    /// Local address of the relay socket.
    pub relay: SocketAddr,
    /// The USERNAME every later request on this allocation must carry (else 441).
    pub username: Box<str>,
    pub expires: Instant,
    /// Seconds since the engine started when the allocation was made (for its age;
    /// four bytes instead of an `Instant`'s sixteen keep an allocation's box in a
    /// smaller malloc size class).
    pub created_secs: u32,
    /// When the timer heap will next look at this allocation (see `Engine::schedule`).
    pub scheduled: Instant,
    /// The Allocate's transaction id and the bytes answered, kept for retransmissions
    /// until the client's next request.
    /// Boxed: almost every allocation carries none, so it should cost a pointer.
    pub last_answer: Option<Box<(TransactionId, Box<[u8]>)>>,
    /// Permissions and channels: what peer data is forwarded by.
    route: PeerRoute,
    /// Channels (number, peer) a kernel fast path relays (see [`crate::kernel`]).
    pub(crate) offloaded: Vec<(u16, SocketAddr)>,
    /// Its bandwidth buckets, made on its first packet while limits are set. Boxed: an
    /// unlimited server's allocations pay a pointer.
    pub(crate) bandwidth: Option<Box<AllocationBandwidth>>,
    /// For a TCP allocation (RFC 6062), its peer data connections; `None` for UDP.
    /// Boxed: UDP allocations, nearly all of them, pay a pointer.
    pub tcp: Option<Box<TcpAllocation>>,
}

impl Allocation {
    pub fn new(relay: SocketAddr, username: Box<str>, created_secs: u32, expires: Instant) -> Self {
        Self {
            relay,
            username,
            created_secs,
            expires,
            scheduled: expires,
            last_answer: None,
            route: PeerRoute::default(),
            offloaded: Vec::new(),
            bandwidth: None,
            tcp: None,
        }
    }

    pub fn is_ipv6(&self) -> bool {
        self.relay.is_ipv6()
    }

    /// Active permissions and channels at `now`: (permissions, channels).
    pub fn table_sizes(&self, now: Instant) -> (usize, usize) {
        let channels = self.route.channels.iter().filter(|c| c.is_active(now));
        (self.permission_count(now), channels.count())
    }

    /// What it relayed in user space so far, (to peers, to the client): datagrams, and
    /// the bytes of its TCP connections.
    pub fn relayed(&self) -> (Traffic, Traffic) {
        let (mut to_peer, mut to_client) = (self.route.to_peer(), self.route.to_client());
        if let Some(tcp) = &self.tcp {
            to_peer.add(tcp.traffic.to_peer());
            to_client.add(tcp.traffic.to_client());
        }
        (to_peer, to_client)
    }

    /// What a peer's datagram is forwarded by.
    pub fn route(&self) -> &PeerRoute {
        &self.route
    }

    /// The same, to frame and count through.
    pub fn route_mut(&mut self) -> &mut PeerRoute {
        &mut self.route
    }

    pub fn has_permission(&self, peer: IpAddr, now: Instant) -> bool {
        self.route
            .permissions
            .iter()
            .any(|&(ip, expires)| ip == peer && now < expires)
    }

    /// How many of `peers` would be new permissions (for the capacity check).
    pub fn new_permission_count(&self, peers: &[IpAddr], now: Instant) -> usize {
        let mut fresh: Vec<IpAddr> = peers
            .iter()
            .copied()
            .filter(|p| !self.has_permission(*p, now))
            .collect();
        fresh.sort_unstable();
        fresh.dedup();
        fresh.len()
    }

    pub fn permission_count(&self, now: Instant) -> usize {
        self.route
            .permissions
            .iter()
            .filter(|&&(_, e)| now < e)
            .count()
    }

    pub fn install_permission(&mut self, peer: IpAddr, expires: Instant) {
        let permissions = &mut self.route.permissions;
        match permissions.iter_mut().find(|(ip, _)| *ip == peer) {
            Some(entry) => entry.1 = expires,
            None => {
                permissions.push((peer, expires));
                self.route.peers_permitted = self.route.peers_permitted.saturating_add(1);
            }
        }
    }

    /// When the permission for `peer` ends, if it is active at `now`.
    pub fn permission_expiry(&self, peer: IpAddr, now: Instant) -> Option<Instant> {
        self.route
            .permissions
            .iter()
            .find(|&&(ip, expires)| ip == peer && now < expires)
            .map(|&(_, expires)| expires)
    }

    /// The peer an active channel number leads to.
    pub fn channel_peer(&self, number: u16, now: Instant) -> Option<SocketAddr> {
        self.route
            .channels
            .iter()
            .find(|c| c.number == number && c.is_active(now))
            .map(|c| c.peer)
    }

    /// Binds or refreshes `number` ↔ `peer`, following the same-number/same-peer rules.
    pub fn bind_channel(
        &mut self,
        number: u16,
        peer: SocketAddr,
        expires: Instant,
        now: Instant,
        max_channels: usize,
    ) -> Result<(), ChannelConflict> {
        // A tied entry (active or cooling down) blocks other pairs: RFC 8656 §12.
        let tied = self.route.channels.iter().filter(|c| c.is_tied(now));
        let conflict = tied
            .clone()
            .any(|c| (c.number == number) != (c.peer == peer));
        if conflict {
            return Err(ChannelConflict::Mismatch);
        }
        let exists = tied.clone().any(|c| c.number == number);
        if !exists && tied.count() >= max_channels {
            return Err(ChannelConflict::Full);
        }
        let channels = &mut self.route.channels;
        channels.retain(|c| c.is_tied(now) && c.number != number);
        channels.push(ChannelBinding {
            number,
            peer,
            expires,
        });
        Ok(())
    }

    /// Ends the permissions and channels to peers the policy (newly reloaded) denies.
    /// A channel ends as if it expired now, so its number and peer stay tied for the
    /// cooldown RFC 8656 §12 asks for.
    pub fn drop_denied(&mut self, policy: &crate::policy::PeerPolicy, now: Instant) {
        self.route
            .permissions
            .retain(|&(ip, _)| policy.allows_ip(ip));
        for channel in &mut self.route.channels {
            if policy.check(channel.peer).is_err() {
                channel.expires = channel.expires.min(now);
            }
        }
    }

    /// Drops expired permissions and channels past their cooldown, so the tables only
    /// hold what still matters.
    pub fn prune(&mut self, now: Instant) {
        self.route.permissions.retain(|&(_, e)| now < e);
        self.route.channels.retain(|c| c.is_tied(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::CHANNEL_COOLDOWN;
    use std::time::Duration;

    fn alloc(now: Instant) -> Allocation {
        let a: SocketAddr = "192.0.2.1:50000".parse().unwrap();
        Allocation::new(a, "u".into(), 0, now + Duration::from_secs(600))
    }

    #[test]
    fn permission_expires_exactly() {
        let t0 = Instant::now();
        let mut a = alloc(t0);
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        a.install_permission(ip, t0 + Duration::from_secs(300));
        assert!(a.has_permission(ip, t0 + Duration::from_millis(299_999)));
        assert!(!a.has_permission(ip, t0 + Duration::from_secs(300)));
    }

    #[test]
    fn channel_rules() {
        let t0 = Instant::now();
        let mut a = alloc(t0);
        let p1: SocketAddr = "198.51.100.1:1000".parse().unwrap();
        let p2: SocketAddr = "198.51.100.1:1001".parse().unwrap();
        let exp = t0 + Duration::from_secs(600);
        assert_eq!(a.bind_channel(0x4000, p1, exp, t0, 8), Ok(()));
        // refresh of the same pair is fine
        assert_eq!(a.bind_channel(0x4000, p1, exp, t0, 8), Ok(()));
        // same number, other peer; same peer, other number
        assert_eq!(
            a.bind_channel(0x4000, p2, exp, t0, 8),
            Err(ChannelConflict::Mismatch)
        );
        assert_eq!(
            a.bind_channel(0x4001, p1, exp, t0, 8),
            Err(ChannelConflict::Mismatch)
        );
        assert_eq!(a.channel_peer(0x4000, t0), Some(p1));
        // expired: no forwarding, but still tied during the cooldown
        let later = exp + Duration::from_secs(1);
        assert_eq!(a.channel_peer(0x4000, later), None);
        assert_eq!(
            a.bind_channel(0x4000, p2, later + Duration::from_secs(600), later, 8),
            Err(ChannelConflict::Mismatch)
        );
        // after the cooldown the number is free again
        let free = exp + CHANNEL_COOLDOWN;
        assert_eq!(
            a.bind_channel(0x4000, p2, free + Duration::from_secs(600), free, 8),
            Ok(())
        );
    }

    #[test]
    fn channel_table_is_bounded() {
        let t0 = Instant::now();
        let mut a = alloc(t0);
        let exp = t0 + Duration::from_secs(600);
        for i in 0..2u16 {
            let p = SocketAddr::from(([198, 51, 100, 1], 1000 + i));
            assert_eq!(a.bind_channel(0x4000 + i, p, exp, t0, 2), Ok(()));
        }
        let p = SocketAddr::from(([198, 51, 100, 1], 2000));
        assert_eq!(
            a.bind_channel(0x4100, p, exp, t0, 2),
            Err(ChannelConflict::Full)
        );
    }
}
