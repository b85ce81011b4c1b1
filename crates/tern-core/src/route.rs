//! The peer→client forwarding decision.
//!
//! [`PeerRoute`] holds an allocation's permissions and channels; expiry is judged
//! against the `now` of each datagram, so a route is right without being touched when
//! something expires. [`PeerRoute::frame`] is the one place a peer's datagram is framed
//! for its client (ChannelData written into headroom in front of the data, or a Data
//! indication), for every transport, so the code the sans-IO tests and fuzzing drive is
//! the code on the hot path: no lock, no queue and no allocation per ChannelData.

use rand::Rng;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use stun::attributes::{ATTR_DATA, ATTR_XOR_PEER_ADDRESS};
use stun::message::METHOD_DATA;

use super::PEER_HEADROOM;
use crate::Traffic;
use crate::proto::{ChannelHeader, Response};

/// What to do with a datagram a peer sent to a relay address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// No permission for the peer's IP: drop it.
    Drop,
    /// Send it as ChannelData on this channel.
    Channel(u16),
    /// Send it in a Data indication.
    Indication,
}

/// How long a channel number and peer stay tied after the binding expires, so a late
/// packet is not delivered to a different peer (RFC 8656 §12).
pub const CHANNEL_COOLDOWN: Duration = Duration::from_secs(300);

/// A channel bound to a peer, as the route (and the allocation that publishes it)
/// keeps it.
#[derive(Debug, Clone, Copy)]
pub struct ChannelBinding {
    pub number: u16,
    pub peer: SocketAddr,
    pub expires: Instant,
}

impl ChannelBinding {
    pub fn is_active(&self, now: Instant) -> bool {
        now < self.expires
    }

    /// Whether the number/peer pair still blocks other bindings.
    pub(super) fn is_tied(&self, now: Instant) -> bool {
        now < self.expires + CHANNEL_COOLDOWN
    }
}

/// A peer's datagram framed for the client.
#[derive(Debug)]
pub enum Framed<'a> {
    /// ChannelData, framed in place: the header written into the headroom in front of
    /// the data.
    Channel(&'a [u8]),
    /// A Data indication, in a buffer of its own (its attributes surround the data).
    Indication(Vec<u8>),
}

impl Framed<'_> {
    /// The bytes to send to the client.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Framed::Channel(bytes) => bytes,
            Framed::Indication(bytes) => bytes,
        }
    }
}

/// An allocation's permissions and channels (a new one permits nothing), and the
/// application bytes relayed through it.
#[derive(Debug, Default)]
pub struct PeerRoute {
    /// Peer IP → permission expiry.
    pub(super) permissions: Vec<(IpAddr, Instant)>,
    pub(super) channels: Vec<ChannelBinding>,
    to_client: Traffic,
    to_peer: Traffic,
    /// Permissions installed for a peer IP that had none (see [`crate::Usage::peers`]).
    pub(super) peers_permitted: u32,
}

impl PeerRoute {
    /// What was relayed to the client (in user space, and by the kernel for channels
    /// it gave back).
    pub fn to_client(&self) -> Traffic {
        self.to_client
    }

    /// Counts one packet of `bytes` application bytes relayed to a peer.
    pub fn count_to_peer(&mut self, bytes: usize) {
        self.to_peer.count(bytes);
    }

    pub fn to_peer(&self) -> Traffic {
        self.to_peer
    }

    pub fn peers_permitted(&self) -> u32 {
        self.peers_permitted
    }

    /// Counts what a kernel fast path relayed on one of the route's channels.
    pub fn count_kernel(&mut self, relayed: crate::KernelRelayed) {
        self.to_peer.add(relayed.to_peer);
        self.to_client.add(relayed.to_client);
    }

    /// The decision for a datagram from `peer` at `now`. Tables are small (bounded by
    /// the per-allocation caps), so a scan beats hashing.
    pub fn forward(&self, peer: SocketAddr, now: Instant) -> Forward {
        let permitted = self
            .permissions
            .iter()
            .any(|&(ip, expires)| ip == peer.ip() && now < expires);
        if !permitted {
            return Forward::Drop;
        }
        self.channels
            .iter()
            .find(|c| c.peer == peer && c.is_active(now))
            .map_or(Forward::Indication, |c| Forward::Channel(c.number))
    }
}

impl PeerRoute {
    /// Frames the datagram `peer` sent, at `buf[PEER_HEADROOM..][..len]`, for the
    /// client as `forward` (the route's decision, [`PeerRoute::forward`]) says, and
    /// counts its bytes on the route. `None` drops it: no permission for the peer, or
    /// too long for ChannelData. `rng` draws a Data indication's transaction id.
    pub fn frame<'a>(
        &mut self,
        forward: Forward,
        peer: SocketAddr,
        buf: &'a mut [u8],
        len: usize,
        rng: &mut impl Rng,
    ) -> Option<Framed<'a>> {
        let framed = match forward {
            Forward::Drop => return None,
            Forward::Channel(number) => {
                let header = ChannelHeader {
                    number,
                    len: u16::try_from(len).ok()?,
                };
                buf[..PEER_HEADROOM].copy_from_slice(&header.to_bytes());
                Framed::Channel(&buf[..PEER_HEADROOM + len])
            }
            Forward::Indication => {
                let data = &buf[PEER_HEADROOM..PEER_HEADROOM + len];
                Framed::Indication(data_indication(peer, data, rng))
            }
        };
        self.to_client.count(len);
        Some(framed)
    }
}

/// A Data indication carrying `data` from `peer` (RFC 8656 §11.4). It needs no
/// integrity; its transaction id is drawn from `rng`.
fn data_indication(peer: SocketAddr, data: &[u8], rng: &mut impl Rng) -> Vec<u8> {
    let mut tid = stun::agent::TransactionId::default();
    rng.fill(&mut tid.0);
    let mut ind = Response::indication(METHOD_DATA, tid);
    ind.add_xor_address(ATTR_XOR_PEER_ADDRESS, peer);
    ind.add_raw(ATTR_DATA, data);
    ind.finish(None, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn decides_by_permission_then_channel() {
        let now = Instant::now();
        let bound: SocketAddr = "198.51.100.1:5000".parse().unwrap();
        let same_ip: SocketAddr = "198.51.100.1:5001".parse().unwrap();
        let stranger: SocketAddr = "198.51.100.2:5000".parse().unwrap();
        let later = now + Duration::from_secs(10);
        let mut route = PeerRoute {
            permissions: vec![(bound.ip(), later)],
            channels: vec![ChannelBinding {
                number: 0x4001,
                peer: bound,
                expires: later,
            }],
            ..PeerRoute::default()
        };
        assert_eq!(route.forward(bound, now), Forward::Channel(0x4001));
        assert_eq!(route.forward(same_ip, now), Forward::Indication);
        assert_eq!(route.forward(stranger, now), Forward::Drop);
        assert_eq!(route.forward(bound, later), Forward::Drop);

        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
        let mut buf = [0u8; PEER_HEADROOM + 3];
        buf[PEER_HEADROOM..].copy_from_slice(b"abc");
        let mut frame = |peer, buf: &mut [u8]| {
            let forward = route.forward(peer, now);
            route
                .frame(forward, peer, buf, 3, &mut rng)
                .map(|f| f.bytes().to_vec())
        };
        assert_eq!(
            frame(bound, &mut buf).unwrap(),
            &[0x40, 0x01, 0, 3, b'a', b'b', b'c']
        );
        assert!(frame(same_ip, &mut buf).unwrap().ends_with(b"abc\0"));
        assert!(frame(stranger, &mut buf).is_none());
        assert_eq!(
            route.to_client(),
            Traffic {
                packets: 2,
                bytes: 6
            }
        );
    }
}
