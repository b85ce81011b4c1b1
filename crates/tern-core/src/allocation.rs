//! One allocation's state: its relay address (two for a dual allocation), lifetime,
//! permissions and channels.
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

/// The address families an allocation relays, as metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayFamilies {
    Ipv4,
    Ipv6,
    /// One relayed address of each family (RFC 8656 §7.2, ADDITIONAL-ADDRESS-FAMILY).
    Dual,
}

impl RelayFamilies {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
            Self::Dual => "dual",
        }
    }
}

/// The second relayed address of a dual allocation, with its own time-to-expiry: a
/// Refresh may name one family (RFC 8656 §8.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdditionalRelay {
    pub addr: SocketAddr,
    pub expires: Instant,
}

/// Invariant: every permission and active channel names a peer of one of the
/// allocation's families (requests naming others are refused with 443, and a family
/// that ends takes its peers' entries with it), so a peer with a permission has a
/// relay socket of its family.
#[derive(Debug)]
pub struct Allocation {
    /// Local address of the relay socket; of a dual allocation, the IPv4 one. It names
    /// the allocation (admin API, timers).
    pub relay: SocketAddr,
    /// The USERNAME every later request on this allocation must carry (else 441).
    pub username: Box<str>,
    /// When `relay` expires.
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
    /// A dual allocation's IPv6 relayed address. Boxed, for the same reason: a
    /// single-family allocation pays a pointer, and its packets one test of it.
    additional: Option<Box<AdditionalRelay>>,
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
            additional: None,
            route: PeerRoute::default(),
            offloaded: Vec::new(),
            bandwidth: None,
            tcp: None,
        }
    }

    /// Makes this a dual allocation: `addr` (of the family `relay` is not) relays too,
    /// until the same instant.
    pub fn add_relay(&mut self, addr: SocketAddr) {
        let expires = self.expires;
        self.additional = Some(Box::new(AdditionalRelay { addr, expires }));
    }

    /// A dual allocation's second relayed address.
    pub fn additional(&self) -> Option<&AdditionalRelay> {
        self.additional.as_deref()
    }

    /// Its relayed addresses: one, or a dual allocation's two.
    pub fn relays(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        std::iter::once(self.relay).chain(self.additional().map(|a| a.addr))
    }

    pub fn families(&self) -> RelayFamilies {
        match (self.additional.is_some(), self.relay.is_ipv6()) {
            (true, _) => RelayFamilies::Dual,
            (false, true) => RelayFamilies::Ipv6,
            (false, false) => RelayFamilies::Ipv4,
        }
    }

    /// Whether it relays addresses of the family (IPv6 or IPv4).
    pub fn has_family(&self, ipv6: bool) -> bool {
        self.relay.is_ipv6() == ipv6 || self.additional.is_some()
    }

    /// The relay socket data to `peer` leaves from: the one of `peer`'s family, for a
    /// peer with a permission or channel (see the invariant above). A single-family
    /// allocation answers without looking at the peer.
    #[inline]
    pub fn relay_for(&self, peer: SocketAddr) -> SocketAddr {
        match &self.additional {
            Some(a) if a.addr.is_ipv6() == peer.is_ipv6() => a.addr,
            _ => self.relay,
        }
    }

    /// The soonest instant one of its relayed addresses expires.
    pub fn next_expiry(&self) -> Instant {
        self.additional()
            .map_or(self.expires, |a| a.expires.min(self.expires))
    }

    /// Whether every relayed address has expired at `now`: the allocation is over.
    pub fn is_over(&self, now: Instant) -> bool {
        self.expires <= now && self.additional().is_none_or(|a| a.expires <= now)
    }

    /// Sets when the relayed address of the family expires, or, with `None`, both.
    pub fn set_expiry(&mut self, ipv6: Option<bool>, expires: Instant) {
        if ipv6.is_none_or(|v6| v6 == self.relay.is_ipv6()) {
            self.expires = expires;
        }
        if let Some(a) = &mut self.additional
            && ipv6.is_none_or(|v6| v6 == a.addr.is_ipv6())
        {
            a.expires = expires;
        }
    }

    /// The family (IPv6 or not) of a dual allocation's relayed address that has
    /// expired at `now` while the other has not.
    pub fn lapsed_family(&self, now: Instant) -> Option<bool> {
        let a = self.additional()?;
        match (self.expires <= now, a.expires <= now) {
            (true, false) => Some(self.relay.is_ipv6()),
            (false, true) => Some(a.addr.is_ipv6()),
            _ => None,
        }
    }

    /// Ends the family's half of a dual allocation (RFC 8656 §8.1): its permissions go
    /// and its channels end as if they expired at `now` (so their numbers stay tied
    /// for the cooldown); the other family's are untouched, and its relayed address
    /// names the allocation from here. Returns the address that ended; `None`, and
    /// nothing changes, when the allocation is not dual.
    pub(crate) fn drop_family(&mut self, ipv6: bool, now: Instant) -> Option<SocketAddr> {
        let additional = self.additional.take()?;
        let dropped = if additional.addr.is_ipv6() == ipv6 {
            additional.addr
        } else {
            let dropped = self.relay;
            self.relay = additional.addr;
            self.expires = additional.expires;
            dropped
        };
        let other_family = |ip: IpAddr| ip.is_ipv6() != ipv6;
        self.end_peers(other_family, |peer| other_family(peer.ip()), now);
        Some(dropped)
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
        let allowed = |peer: SocketAddr| policy.check(peer).is_ok();
        self.end_peers(|ip| policy.allows_ip(ip), allowed, now);
    }

    /// Keeps the permissions of IPs `keep_ip` accepts, and ends the channels to peers
    /// `keep_peer` refuses as if they expired at `now` (their numbers and peers stay
    /// tied for the cooldown RFC 8656 §12 asks for).
    fn end_peers(
        &mut self,
        keep_ip: impl Fn(IpAddr) -> bool,
        keep_peer: impl Fn(SocketAddr) -> bool,
        now: Instant,
    ) {
        self.route.permissions.retain(|&(ip, _)| keep_ip(ip));
        for channel in &mut self.route.channels {
            if !keep_peer(channel.peer) {
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

    /// A dual allocation: IPv4 relay first, IPv6 second, both expiring at 600 s.
    fn dual(now: Instant) -> (Allocation, SocketAddr, SocketAddr) {
        let mut a = alloc(now);
        let v6: SocketAddr = "[2001:db8::1]:50001".parse().unwrap();
        a.add_relay(v6);
        let v4 = a.relay;
        (a, v4, v6)
    }

    #[test]
    fn each_peer_leaves_from_the_relay_of_its_family() {
        let t0 = Instant::now();
        let (a, v4, v6) = dual(t0);
        assert_eq!(a.families(), RelayFamilies::Dual);
        assert!(a.has_family(true) && a.has_family(false));
        assert_eq!(a.relay_for("198.51.100.1:1".parse().unwrap()), v4);
        assert_eq!(a.relay_for("[2001:db8:1::1]:1".parse().unwrap()), v6);
        assert_eq!(a.relays().collect::<Vec<_>>(), [v4, v6]);
        let single = alloc(t0);
        assert_eq!(single.families(), RelayFamilies::Ipv4);
        assert!(!single.has_family(true));
    }

    #[test]
    fn each_family_expires_on_its_own() {
        let t0 = Instant::now();
        let (mut a, v4, v6) = dual(t0);
        let (early, late) = (t0 + Duration::from_secs(100), t0 + Duration::from_secs(900));
        a.set_expiry(Some(true), late);
        a.set_expiry(Some(false), early);
        assert_eq!(a.next_expiry(), early);
        assert_eq!(a.lapsed_family(early), Some(false));
        assert!(!a.is_over(early));
        assert!(a.is_over(late));
        a.set_expiry(None, late);
        assert_eq!((a.expires, a.additional().unwrap().expires), (late, late));
        assert_eq!(a.lapsed_family(early), None);
        // Ending IPv4 hands the name to the IPv6 relay, with its own expiry.
        a.set_expiry(Some(true), early);
        assert_eq!(a.drop_family(false, t0), Some(v4));
        assert_eq!((a.relay, a.expires), (v6, early));
        assert_eq!(a.families(), RelayFamilies::Ipv6);
        assert_eq!(
            a.drop_family(true, t0),
            None,
            "a single family is not dropped"
        );
    }

    #[test]
    fn dropping_a_family_takes_its_peers_and_keeps_the_others() {
        let t0 = Instant::now();
        let (mut a, _, v6) = dual(t0);
        let exp = t0 + Duration::from_secs(300);
        let (p4, p6): (SocketAddr, SocketAddr) = (
            "198.51.100.1:1000".parse().unwrap(),
            "[2001:db8:1::1]:1000".parse().unwrap(),
        );
        a.install_permission(p4.ip(), exp);
        a.install_permission(p6.ip(), exp);
        assert_eq!(a.bind_channel(0x4000, p4, exp, t0, 8), Ok(()));
        assert_eq!(a.bind_channel(0x4001, p6, exp, t0, 8), Ok(()));
        let now = t0 + Duration::from_secs(10);
        assert_eq!(a.drop_family(true, now), Some(v6));
        assert!(a.has_permission(p4.ip(), now) && !a.has_permission(p6.ip(), now));
        assert_eq!(a.channel_peer(0x4000, now), Some(p4));
        assert_eq!(a.channel_peer(0x4001, now), None);
        // The ended channel's number stays tied for the cooldown.
        let other: SocketAddr = "198.51.100.2:1000".parse().unwrap();
        let conflict = a.bind_channel(0x4001, other, exp, now, 8);
        assert_eq!(conflict, Err(ChannelConflict::Mismatch));
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
