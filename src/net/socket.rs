//! Creating UDP sockets the way a relay needs them: explicit buffer sizes, IPv6
//! sockets that do not also take IPv4, non-blocking for tokio.

use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

/// Binds a non-blocking UDP socket at `addr` asking for `buffer` bytes of kernel
/// buffer each way.
pub fn bind_udp(addr: SocketAddr, buffer: usize) -> std::io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Best effort: the kernel caps the size (net.core.rmem_max / wmem_max).
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    warn_if_capped(&socket, buffer);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Says once per process when the kernel gave less buffer than asked, naming the
/// sysctls to raise: small buffers drop media under bursts.
fn warn_if_capped(socket: &Socket, wanted: usize) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    // Linux reports twice the size it was given (bookkeeping overhead included).
    let got = socket.recv_buffer_size().unwrap_or(0) / 2;
    if got < wanted && !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            wanted,
            got,
            "kernel capped the UDP socket buffer; raise net.core.rmem_max and net.core.wmem_max"
        );
    }
}
