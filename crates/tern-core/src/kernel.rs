//! The engine's side of a kernel fast path for channels: which channels of UDP clients
//! a driver may let the kernel relay, until when, and when it must stop.
//!
//! The engine stays the only judge. It offloads a channel only while it is active and
//! its peer has a permission (the tables hold only peers the policy allows: a channel is
//! bound only to an allowed peer, and a reload ends those the new policy denies), each
//! entry carries the instant it stops being valid (the channel's expiry or its
//! permission's, whichever is sooner), and it is withdrawn when the channel leaves the
//! table or the allocation ends. What the kernel relayed on a channel is
//! counted on the allocation when the channel is withdrawn. While bandwidth limits are
//! set nothing is offloaded: the kernel program does not enforce them.

use std::net::SocketAddr;
use std::time::Instant;

use crate::{Allocation, Engine, FiveTuple, Io, Traffic, Transport};

/// A channel of a UDP client, as a kernel fast path keys it: ChannelData from `client`
/// on `number` goes from `relay` to `peer`, and `peer`'s datagrams to `relay` go back to
/// `client` on `number`. `relay` is the allocation's relay socket of `peer`'s family (a
/// dual allocation has one of each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelChannel {
    pub client: FiveTuple,
    pub relay: SocketAddr,
    pub peer: SocketAddr,
    pub number: u16,
}

/// What the kernel relayed on a channel: packets and application bytes each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelRelayed {
    pub to_peer: Traffic,
    pub to_client: Traffic,
}

impl Engine {
    /// Brings the kernel's entries for `tuple`'s channels in line with the allocation.
    pub(crate) fn sync_kernel(&mut self, tuple: &FiveTuple, now: Instant, io: &mut dyn Io) {
        if tuple.transport != Transport::Udp {
            return;
        }
        let limited = self.config.bandwidth.is_some();
        let Some(alloc) = self.allocations.get_mut(tuple) else {
            return;
        };
        let wanted: Vec<(u16, SocketAddr, Instant)> = alloc
            .route()
            .channels
            .iter()
            .filter(|c| !limited && c.is_active(now))
            .filter_map(|c| {
                let permitted = alloc.permission_expiry(c.peer.ip(), now)?;
                Some((c.number, c.peer, c.expires.min(permitted)))
            })
            .collect();
        let stale: Vec<(u16, SocketAddr)> = alloc
            .offloaded
            .iter()
            .filter(|&&(n, p)| !wanted.iter().any(|&(wn, wp, _)| (wn, wp) == (n, p)))
            .copied()
            .collect();
        for (number, peer) in stale {
            withdraw(alloc, tuple, number, peer, io);
        }
        for (number, peer, until) in wanted {
            let channel = kernel_channel(alloc, tuple, number, peer);
            if io.offload_channel(&channel, until) {
                if !alloc.offloaded.contains(&(number, peer)) {
                    alloc.offloaded.push((number, peer));
                }
            } else if alloc.offloaded.contains(&(number, peer)) {
                withdraw(alloc, tuple, number, peer, io);
            }
        }
    }

    /// Brings every UDP allocation's kernel entries in line (after a reload: the peer
    /// policy may have changed, and bandwidth limits may have come or gone).
    pub(crate) fn sync_kernel_all(&mut self, now: Instant, io: &mut dyn Io) {
        let tuples: Vec<FiveTuple> = self
            .allocations
            .iter()
            .filter(|(_, a)| !a.offloaded.is_empty() || !a.route().channels.is_empty())
            .map(|(t, _)| *t)
            .collect();
        for tuple in tuples {
            self.sync_kernel(&tuple, now, io);
        }
    }
}

/// Withdraws the channels of `alloc` to the peers `which` picks from the kernel: all of
/// them when the allocation ends, one family's when that family of a dual allocation
/// does.
pub(crate) fn withdraw_where(
    alloc: &mut Allocation,
    tuple: &FiveTuple,
    which: impl Fn(SocketAddr) -> bool,
    io: &mut dyn Io,
) {
    let picked: Vec<(u16, SocketAddr)> = (alloc.offloaded.iter())
        .filter(|(_, peer)| which(*peer))
        .copied()
        .collect();
    for (number, peer) in picked {
        withdraw(alloc, tuple, number, peer, io);
    }
}

/// What the kernel relayed so far on `alloc`'s channels it still holds.
pub(crate) fn relayed_so_far(
    alloc: &Allocation,
    tuple: &FiveTuple,
    io: &mut dyn Io,
) -> KernelRelayed {
    let mut total = KernelRelayed::default();
    for &(number, peer) in &alloc.offloaded {
        let relayed = io.channel_bytes(&kernel_channel(alloc, tuple, number, peer));
        total.to_peer.add(relayed.to_peer);
        total.to_client.add(relayed.to_client);
    }
    total
}

fn withdraw(
    alloc: &mut Allocation,
    tuple: &FiveTuple,
    number: u16,
    peer: SocketAddr,
    io: &mut dyn Io,
) {
    let channel = kernel_channel(alloc, tuple, number, peer);
    let relayed = io.withdraw_channel(&channel);
    alloc.route_mut().count_kernel(relayed);
    alloc.offloaded.retain(|&entry| entry != (number, peer));
}

fn kernel_channel(
    alloc: &Allocation,
    tuple: &FiveTuple,
    number: u16,
    peer: SocketAddr,
) -> KernelChannel {
    KernelChannel {
        client: *tuple,
        relay: alloc.relay_for(peer),
        peer,
        number,
    }
}
