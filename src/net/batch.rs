//! Reading many datagrams with one system call (`recvmmsg`), and telling the reactor
//! when a socket is drained so that waiting for the next datagram does not cost an
//! extra, empty read.
//!
//! This is the receive half of the relayed-packet path: no allocation per datagram,
//! one syscall per burst.

use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::pktinfo::{self, ControlBuf};

/// Datagrams read per `recvmmsg`.
pub const BATCH: usize = 16;

/// Buffers for one batch. Each datagram lands at `headroom` in its buffer, leaving
/// space in front for a header to be written without a copy.
pub struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    headroom: usize,
    lens: [usize; BATCH],
    addrs: [Option<SocketAddr>; BATCH],
    /// The local address each datagram was sent to, on sockets that ask for it.
    destinations: [Option<IpAddr>; BATCH],
    controls: [ControlBuf; BATCH],
}

impl RecvBatch {
    /// Buffers of `headroom + max_datagram` bytes each.
    pub fn new(headroom: usize, max_datagram: usize) -> Self {
        Self {
            bufs: (0..BATCH)
                .map(|_| vec![0; headroom + max_datagram])
                .collect(),
            headroom,
            lens: [0; BATCH],
            addrs: [None; BATCH],
            destinations: [None; BATCH],
            controls: [[0; 8]; BATCH],
        }
    }

    /// Reads what is waiting on `socket`, up to [`BATCH`] datagrams, without blocking.
    /// Returns how many were read (0 when none was waiting). When fewer than a full
    /// batch arrived the socket is drained, and the reactor is told so: its next
    /// readiness wait then needs no empty read to find out.
    pub fn recv(&mut self, socket: &UdpSocket) -> usize {
        let n = socket
            .try_io(Interest::READABLE, || self.recvmmsg(socket.as_raw_fd()))
            .unwrap_or(0);
        if n < BATCH {
            // Clearing readiness is safe: tokio ignores it if an event came in since.
            let _ = socket.try_io(Interest::READABLE, || {
                Err::<(), _>(io::ErrorKind::WouldBlock.into())
            });
        }
        n
    }

    /// Reads what is waiting on the socket with descriptor `fd`, up to [`BATCH`]
    /// datagrams, without blocking; for sockets the reactor does not watch (relay
    /// sockets, see [`super::relay`]). Returns how many were read.
    pub fn recv_fd(&mut self, fd: RawFd) -> usize {
        self.recvmmsg(fd).unwrap_or(0)
    }

    /// Datagram `i` of the last batch: its whole buffer (headroom first), its length
    /// and its source. `None` for a datagram that was truncated or had no address.
    pub fn get(&mut self, i: usize) -> Option<(&mut [u8], usize, SocketAddr)> {
        let from = self.addrs.get(i).copied().flatten()?;
        Some((&mut self.bufs[i], self.lens[i], from))
    }

    /// The local address datagram `i` of the last batch was sent to, when its socket
    /// asked for it (wildcard listeners, see [`pktinfo`]).
    pub fn destination(&self, i: usize) -> Option<IpAddr> {
        self.destinations.get(i).copied().flatten()
    }

    fn recvmmsg(&mut self, fd: i32) -> io::Result<usize> {
        let mut names: [MaybeUninit<libc::sockaddr_storage>; BATCH] =
            [const { MaybeUninit::uninit() }; BATCH];
        let mut iovecs: [MaybeUninit<libc::iovec>; BATCH] =
            [const { MaybeUninit::uninit() }; BATCH];
        let mut msgs: [MaybeUninit<libc::mmsghdr>; BATCH] =
            [const { MaybeUninit::uninit() }; BATCH];
        for i in 0..BATCH {
            let data = &mut self.bufs[i][self.headroom..];
            iovecs[i].write(libc::iovec {
                iov_base: data.as_mut_ptr().cast(),
                iov_len: data.len(),
            });
            // SAFETY: an all-zero msghdr is a valid empty header; the fields that
            // matter are set right after.
            let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
            hdr.msg_name = names[i].as_mut_ptr().cast();
            hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = iovecs[i].as_mut_ptr();
            hdr.msg_iovlen = 1;
            hdr.msg_control = self.controls[i].as_mut_ptr().cast();
            hdr.msg_controllen = std::mem::size_of::<ControlBuf>();
            msgs[i].write(libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            });
        }
        // SAFETY: `msgs` holds BATCH initialised headers whose name, iovec and control
        // pointers point into `names`, `iovecs`, `self.bufs` and `self.controls`, all
        // alive for the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr().cast(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for i in 0..n {
            // SAFETY: the kernel filled the first `n` headers and their names.
            let msg = unsafe { msgs[i].assume_init_ref() };
            let truncated = msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            self.lens[i] = msg.msg_len as usize;
            self.addrs[i] = if truncated {
                None
            } else {
                // SAFETY: the kernel wrote `msg_namelen` bytes of a socket address.
                unsafe { to_socket_addr(names[i].assume_init_ref(), msg.msg_hdr.msg_namelen) }
            };
            // SAFETY: the kernel filled this header, and its control buffer (in
            // `self.controls`) is untouched since.
            self.destinations[i] = unsafe { pktinfo::destination(&msg.msg_hdr) };
        }
        Ok(n)
    }
}

/// A kernel socket address as a `SocketAddr`.
///
/// # Safety
/// `storage` must hold an address of `len` bytes as written by the kernel.
unsafe fn to_socket_addr(
    storage: &libc::sockaddr_storage,
    len: libc::socklen_t,
) -> Option<SocketAddr> {
    let len = len as usize;
    match storage.ss_family as libc::c_int {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says this is a sockaddr_in, and it is long enough.
            let a =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddrV4::new(ip, u16::from_be(a.sin_port)).into())
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says this is a sockaddr_in6, and it is long enough.
            let a = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            let port = u16::from_be(a.sin6_port);
            Some(SocketAddrV6::new(ip, port, a.sin6_flowinfo, a.sin6_scope_id).into())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_a_burst_in_one_call_with_sources() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        for i in 0..5u8 {
            tx.send_to(&[i; 3], to).unwrap();
        }
        let mut batch = RecvBatch::new(4, 2048);
        rx.readable().await.unwrap();
        // Loopback delivery is synchronous: all five are queued.
        let n = batch.recv(&rx);
        assert_eq!(n, 5);
        for i in 0..n {
            let (buf, len, from) = batch.get(i).unwrap();
            assert_eq!((len, from), (3, tx.local_addr().unwrap()));
            assert_eq!(&buf[4..7], &[i as u8; 3]);
        }
        assert_eq!(batch.recv(&rx), 0);
        // Readiness was cleared, yet a new datagram still wakes the reader.
        tx.send_to(b"late", to).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(2), rx.readable())
            .await
            .expect("woken for the late datagram")
            .unwrap();
        assert_eq!(batch.recv(&rx), 1);
    }

    #[tokio::test]
    async fn ipv6_sources_decode() {
        let rx = UdpSocket::bind("[::1]:0")
            .await
            .expect("IPv6 loopback is needed for this test");
        let tx = std::net::UdpSocket::bind("[::1]:0").unwrap();
        tx.send_to(b"six", rx.local_addr().unwrap()).unwrap();
        let mut batch = RecvBatch::new(0, 64);
        rx.readable().await.unwrap();
        assert_eq!(batch.recv(&rx), 1);
        let (_, len, from) = batch.get(0).unwrap();
        assert_eq!((len, from), (3, tx.local_addr().unwrap()));
    }
}
