//! UDP sockets: binding the listeners, and sending one datagram now.

use std::net::SocketAddr;
use std::os::fd::AsFd;

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

/// Sends a datagram with one non-blocking `sendto` (relay sockets are not registered
/// with a reactor: nothing waits for them to be writable), dropping it when the socket
/// buffer is full, as a congested link would.
pub fn send_now(socket: &impl AsFd, bytes: &[u8], to: SocketAddr) {
    let _ = socket2::SockRef::from(socket).send_to(bytes, &to.into());
}
