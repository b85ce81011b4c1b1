//! UDP listeners: binding them, reading from all of them at once, and sending.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use tokio::net::UdpSocket;

use super::pktinfo;
use super::socket::bind_udp_group;

/// Binds one listening socket per worker on `addr`. Done before anything else starts
/// so a bad address fails the start. Each socket is registered with a reactor by the
/// worker that uses it.
pub fn bind_listeners(
    addr: SocketAddr,
    buffer: usize,
    workers: usize,
) -> std::io::Result<Vec<std::net::UdpSocket>> {
    bind_udp_group(addr, buffer, workers)
        .map_err(|e| std::io::Error::new(e.kind(), format!("UDP {addr}: {e}")))
}

/// Sends a datagram with one non-blocking `sendto`, dropping it when the socket buffer
/// is full. tokio's `try_send_to` is not used because it reports "would block" until
/// the reactor has seen a fresh socket become writable, which drops the first packets
/// of a new allocation.
pub fn send_now(socket: &impl AsFd, bytes: &[u8], to: SocketAddr) {
    let _ = socket2::SockRef::from(socket).send_to(bytes, &to.into());
}

/// [`send_now`], from the local address `source` when given: a wildcard listener
/// answers from the address the client sent to (see [`pktinfo`]).
pub fn send_now_from(socket: &UdpSocket, bytes: &[u8], to: SocketAddr, source: Option<IpAddr>) {
    match source {
        Some(source) => pktinfo::send_from(socket, bytes, to, source),
        None => send_now(socket, bytes, to),
    }
}
