//! The built-in echo peer: [`EchoThread`] on the loopback address of the server's
//! family. Its socket buffers are enlarged so bursts from many allocations are not
//! dropped here (which would be counted against the server), and what its socket still
//! drops is read from `/proc/net/udp` so a report can tell the two apart.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use crate::client::echo::EchoThread;

/// Socket buffers asked for: all allocations' bursts meet in this one socket, and the
/// default holds only a few hundred small datagrams. Forced past net.core.rmem_max
/// when allowed (root), else capped there.
const BUFFER: usize = 16 << 20;

/// What the peer saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCounts {
    pub received: u64,
    /// Datagrams its socket dropped for lack of buffer space (`None`: unknown).
    pub dropped: Option<u64>,
}

pub struct EchoPeer(EchoThread);

impl EchoPeer {
    /// Binds `127.0.0.1:0`, or `[::1]:0` when `ipv6`, and starts echoing.
    pub fn start(ipv6: bool) -> io::Result<Self> {
        let ip = if ipv6 {
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        } else {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        };
        let socket = UdpSocket::bind((ip, 0))?;
        enlarge_buffers(&socket);
        EchoThread::spawn(socket).map(Self)
    }

    pub fn addr(&self) -> SocketAddr {
        self.0.addr()
    }

    /// What the peer has seen so far.
    pub fn counts(&self) -> PeerCounts {
        PeerCounts {
            received: self.0.received(),
            dropped: socket_drops(self.addr()),
        }
    }
}

/// Best effort: a smaller buffer only means earlier drops under bursts.
fn enlarge_buffers(socket: &UdpSocket) {
    let options = socket2::SockRef::from(socket);
    if !force_buffer(socket, libc::SO_RCVBUFFORCE) {
        let _ = options.set_recv_buffer_size(BUFFER);
    }
    if !force_buffer(socket, libc::SO_SNDBUFFORCE) {
        let _ = options.set_send_buffer_size(BUFFER);
    }
}

/// Sets a buffer size past the system maximum (`SO_RCVBUFFORCE`/`SO_SNDBUFFORCE`,
/// allowed with CAP_NET_ADMIN); `false` if refused.
fn force_buffer(socket: &UdpSocket, option: libc::c_int) -> bool {
    let size = libc::c_int::try_from(BUFFER).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads a c_int we own for the duration of the call.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&raw const size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    result == 0
}

/// The `drops` column of the `/proc/net/udp` (or `udp6`) line of the socket bound to
/// `addr`.
fn socket_drops(addr: SocketAddr) -> Option<u64> {
    let (table, ip) = match addr.ip() {
        IpAddr::V4(ip) => ("/proc/net/udp", proc_hex(&ip.octets())),
        IpAddr::V6(ip) => ("/proc/net/udp6", proc_hex(&ip.octets())),
    };
    let local = format!("{ip}:{:04X}", addr.port());
    let table = fs::read_to_string(table).ok()?;
    let line = table
        .lines()
        .find(|line| line.split_whitespace().nth(1) == Some(local.as_str()))?;
    line.split_whitespace().last()?.parse().ok()
}

/// An address as the kernel prints it in `/proc/net/udp*`: each 32-bit word in host
/// byte order, in hex.
fn proc_hex(octets: &[u8]) -> String {
    octets
        .chunks_exact(4)
        .map(|word| {
            format!(
                "{:08X}",
                u32::from_ne_bytes([word[0], word[1], word[2], word[3]])
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The echo itself is [`EchoThread`]'s (tested there); what is this module's own
    /// is the drop count, read from `/proc/net/udp` or `udp6` by family.
    #[test]
    fn counts_received_and_dropped_on_both_families() {
        for ipv6 in [false, true] {
            let peer = EchoPeer::start(ipv6).expect("peer");
            let client = UdpSocket::bind((peer.addr().ip(), 0)).expect("client");
            client.connect(peer.addr()).expect("connect");
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            client.send(b"ping").expect("send");
            client.recv(&mut [0u8; 8]).expect("echo");
            let expected = PeerCounts {
                received: 1,
                dropped: Some(0),
            };
            assert_eq!(peer.counts(), expected, "{}", peer.addr());
        }
    }
}
