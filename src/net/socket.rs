//! Creating UDP sockets the way a relay needs them: explicit buffer sizes, IPv6
//! sockets that do not also take IPv4, non-blocking for tokio, and wildcard sockets
//! that learn each datagram's local address.

use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Binds a non-blocking UDP socket at `addr` asking for `buffer` bytes of kernel
/// buffer each way.
pub fn bind_udp(addr: SocketAddr, buffer: usize) -> std::io::Result<std::net::UdpSocket> {
    bind_udp_with(addr, buffer, false)
}

/// Binds `count` UDP sockets on the same address with SO_REUSEPORT, one per worker:
/// the kernel then keeps each client's datagrams on one socket (by hashing the
/// 4-tuple), so a client's allocation always meets the same worker.
///
/// A plain bind is tried first, so an address another process already uses is an
/// error here too instead of a silent share of its traffic.
pub fn bind_udp_group(
    addr: SocketAddr,
    buffer: usize,
    count: usize,
) -> std::io::Result<Vec<std::net::UdpSocket>> {
    if addr.port() != 0 {
        drop(bind_udp(addr, buffer)?);
    }
    let first = bind_udp_with(addr, buffer, true)?;
    let addr = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..count {
        sockets.push(bind_udp_with(addr, buffer, true)?);
    }
    Ok(sockets)
}

fn bind_udp_with(
    addr: SocketAddr,
    buffer: usize,
    reuse_port: bool,
) -> std::io::Result<std::net::UdpSocket> {
    // Non-blocking from the start (SOCK_NONBLOCK): a relay socket is made per
    // allocation, and setting the flag afterwards costs two more system calls.
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM.nonblocking(),
        Some(Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    // Best effort: the kernel caps the size (net.core.rmem_max / wmem_max).
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    warn_if_capped(&socket, buffer);
    if addr.ip().is_unspecified() {
        // Answers must leave from the address each client used (see pktinfo).
        let (level, name) = super::pktinfo::option(addr.is_ipv6());
        set_int_option(&socket, level, name, 1)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Says once per process when the kernel gave less buffer than asked, naming the
/// sysctls to raise: small buffers drop media under bursts.
///
/// The cap is system-wide, so the kernel is asked only until it has granted a size in
/// full or the warning is out, not once more for every relay socket.
fn warn_if_capped(socket: &Socket, wanted: usize) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    /// The largest size the kernel has granted in full.
    static GRANTED: AtomicUsize = AtomicUsize::new(0);
    if wanted <= GRANTED.load(Ordering::Relaxed) || WARNED.load(Ordering::Relaxed) {
        return;
    }
    // Linux reports twice the size it was given (bookkeeping overhead included).
    let got = socket.recv_buffer_size().unwrap_or(0) / 2;
    if got >= wanted {
        GRANTED.fetch_max(wanted, Ordering::Relaxed);
    } else if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            wanted,
            got,
            "kernel capped the UDP socket buffer; raise net.core.rmem_max and net.core.wmem_max"
        );
    }
}

/// Sets the IP don't-fragment bit on everything `socket` sends (path MTU discovery
/// "do"), as DONT-FRAGMENT asks of a relay (RFC 8656 §14.8). socket2 has no call for it.
/// A non-blocking TCP socket listening at `addr` (IPv6 sockets take IPv6 only) with
/// SO_REUSEADDR, so restarts need not wait for the previous process's TIME_WAIT
/// connections; with `reuse_port` SO_REUSEPORT too.
pub fn listen_tcp(
    addr: SocketAddr,
    backlog: i32,
    reuse_port: bool,
) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

pub fn set_dont_fragment(socket: &std::net::UdpSocket, ipv6: bool) -> std::io::Result<()> {
    if ipv6 {
        set_int_option(
            socket,
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DO,
        )
    } else {
        set_int_option(
            socket,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )
    }
}

/// `setsockopt` with a C int value, for the options socket2 has no call for.
pub fn set_int_option(
    socket: &impl std::os::fd::AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: the fd is open for the lifetime of `socket`, and the option value is a
    // c_int whose size is passed along with its address.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of_val(&value) as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dont_fragment_is_set() {
        use std::os::fd::AsRawFd;
        let socket = bind_udp("127.0.0.1:0".parse().unwrap(), 65536).unwrap();
        set_dont_fragment(&socket, false).unwrap();
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of_val(&value) as libc::socklen_t;
        // SAFETY: reading a c_int option into a c_int with its size.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                (&raw mut value).cast(),
                &mut len,
            )
        };
        assert_eq!((rc, value), (0, libc::IP_PMTUDISC_DO));
    }
}
