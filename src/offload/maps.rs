//! The fast path's map entries, laid out exactly as channel.bpf.c declares them.
//!
//! Addresses are four 32-bit words in network order (IPv4 in the first, the rest zero);
//! ports and channel numbers are in network order, as they sit in the packet.

use std::net::{IpAddr, SocketAddr};

use crate::core::KernelChannel;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientKey {
    client_ip: [u32; 4],
    server_ip: [u32; 4],
    client_port: u16,
    server_port: u16,
    channel: u16,
    family: u8,
    pad: u8,
}

/// How to reach one side, which the program learns from that side's frames.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Path {
    ifindex: u32,
    dmac: [u8; 6],
    smac: [u8; 6],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientRoute {
    relay_ip: [u32; 4],
    peer_ip: [u32; 4],
    relay_port: u16,
    peer_port: u16,
    pub to_peer: Path,
    pad: u32,
    pub expires_ns: u64,
    pub packets: u64,
    pub bytes: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerKey {
    relay_ip: [u32; 4],
    peer_ip: [u32; 4],
    relay_port: u16,
    peer_port: u16,
    family: u8,
    pad: [u8; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerRoute {
    client_ip: [u32; 4],
    server_ip: [u32; 4],
    client_port: u16,
    server_port: u16,
    channel: u16,
    pad: u16,
    pub to_client: Path,
    pub expires_ns: u64,
    pub packets: u64,
    pub bytes: u64,
}

// SAFETY: plain `repr(C)` data with no pointers; every bit pattern is a valid value and
// the padding is spelled out as fields, so no byte is uninitialised.
unsafe impl aya::Pod for ClientKey {}
// SAFETY: as above.
unsafe impl aya::Pod for ClientRoute {}
// SAFETY: as above.
unsafe impl aya::Pod for PeerKey {}
// SAFETY: as above.
unsafe impl aya::Pod for PeerRoute {}

/// The first slots of the program's `stats` map count why it passed a datagram of an
/// offloaded channel up to user space, one slot per reason (`enum stat` in the program,
/// named in order by [`super::FALLBACKS`]).
pub const PROGRAM_FALLBACKS: usize = 5;

/// The slots of the `stats` map after the fallbacks: packets and bytes relayed to
/// peers, then to clients, by the TC hook; the XDP hook's follow, `HOOK_STATS` further.
pub const TO_PEER_PACKETS: u32 = 5;
pub const TO_PEER_BYTES: u32 = 6;
pub const TO_CLIENT_PACKETS: u32 = 7;
pub const TO_CLIENT_BYTES: u32 = 8;
pub const HOOK_STATS: u32 = 4;

/// The two entries of a channel (client → peer, peer → client) with no deadline yet;
/// `None` when its addresses mix families.
pub fn entries(ch: &KernelChannel) -> Option<(ClientKey, ClientRoute, PeerKey, PeerRoute)> {
    let client = ch.client.client;
    let server = ch.client.server;
    let family = family(&[client, server, ch.relay, ch.peer])?;
    let number = ch.number.to_be();
    Some((
        ClientKey {
            client_ip: words(client.ip()),
            server_ip: words(server.ip()),
            client_port: client.port().to_be(),
            server_port: server.port().to_be(),
            channel: number,
            family,
            pad: 0,
        },
        ClientRoute {
            relay_ip: words(ch.relay.ip()),
            peer_ip: words(ch.peer.ip()),
            relay_port: ch.relay.port().to_be(),
            peer_port: ch.peer.port().to_be(),
            ..ClientRoute::default()
        },
        PeerKey {
            relay_ip: words(ch.relay.ip()),
            peer_ip: words(ch.peer.ip()),
            relay_port: ch.relay.port().to_be(),
            peer_port: ch.peer.port().to_be(),
            family,
            pad: [0; 3],
        },
        PeerRoute {
            client_ip: words(client.ip()),
            server_ip: words(server.ip()),
            client_port: client.port().to_be(),
            server_port: server.port().to_be(),
            channel: number,
            ..PeerRoute::default()
        },
    ))
}

/// 4 or 6 when every address is of that family.
fn family(addrs: &[SocketAddr]) -> Option<u8> {
    if addrs.iter().all(SocketAddr::is_ipv4) {
        Some(4)
    } else if addrs.iter().all(SocketAddr::is_ipv6) {
        Some(6)
    } else {
        None
    }
}

/// The address as the program reads it from a packet: network-order words in memory.
fn words(ip: IpAddr) -> [u32; 4] {
    let mut bytes = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => bytes[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => bytes = v6.octets(),
    }
    std::array::from_fn(|i| {
        let b = &bytes[i * 4..];
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_program() {
        // The sizes channel.bpf.c's structs have on the BPF target.
        assert_eq!(size_of::<ClientKey>(), 40);
        assert_eq!(size_of::<ClientRoute>(), 80);
        assert_eq!(size_of::<PeerKey>(), 40);
        assert_eq!(size_of::<PeerRoute>(), 80);
    }

    #[test]
    fn addresses_are_in_packet_order() {
        let w = words("192.0.2.1".parse().unwrap());
        assert_eq!(w[0].to_ne_bytes(), [192, 0, 2, 1]);
        assert_eq!(&w[1..], &[0, 0, 0]);
        let w = words("2001:db8::1".parse().unwrap());
        assert_eq!(w[0].to_ne_bytes(), [0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(w[3].to_ne_bytes(), [0, 0, 0, 1]);
    }
}
