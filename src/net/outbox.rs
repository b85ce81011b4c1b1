//! Datagrams for UDP clients, gathered while the worker handles one batch of input and
//! sent with one `sendmmsg` per listener: a wake-up that relays k datagrams to clients
//! pays one system call for them, not k.
//!
//! Each datagram is copied in (a relayed datagram is a few hundred bytes; the copy
//! costs far less than the system call it saves, and leaves the receive buffers free
//! for the next batch). UDP GSO is not used: it needs datagrams to one destination,
//! and a relay's datagrams in one wake-up go to as many clients as there are
//! allocations.

use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};

use super::pktinfo::{self, ControlBuf};

/// Datagrams held before they are sent, and so the most one `sendmmsg` carries.
pub const OUTBOX_DATAGRAMS: usize = 64;
/// Bytes held before they are sent (a larger datagram is held alone).
const OUTBOX_BYTES: usize = 128 * 1024;

/// One held datagram: where it goes, through which listener, from which source.
struct Held {
    listener: usize,
    to: SocketAddr,
    source: Option<IpAddr>,
    start: usize,
    len: usize,
}

/// Datagrams waiting to be sent, in the order they were pushed.
pub struct Outbox {
    held: Vec<Held>,
    bytes: Vec<u8>,
}

impl Default for Outbox {
    fn default() -> Self {
        Self {
            held: Vec::with_capacity(OUTBOX_DATAGRAMS),
            bytes: Vec::with_capacity(OUTBOX_BYTES),
        }
    }
}

impl Outbox {
    /// Holds a copy of `bytes` for `to`, to leave through `listeners[listener]` (from
    /// `source` when given), sending what is held first when it would not fit.
    #[inline]
    pub fn hold(
        &mut self,
        listeners: &[impl AsRawFd],
        listener: usize,
        bytes: &[u8],
        to: SocketAddr,
        source: Option<IpAddr>,
    ) {
        if !self.has_room(bytes.len()) {
            self.flush(listeners);
        }
        self.push(listener, bytes, to, source);
    }

    /// Whether `len` more bytes fit without sending what is held first.
    fn has_room(&self, len: usize) -> bool {
        self.held.len() < OUTBOX_DATAGRAMS
            && (self.bytes.is_empty() || self.bytes.len() + len <= OUTBOX_BYTES)
    }

    /// Holds a copy of `bytes` for `to`, to leave through listener number `listener`
    /// (from `source` when given), room or not: [`Self::hold`] makes room first.
    pub fn push(&mut self, listener: usize, bytes: &[u8], to: SocketAddr, source: Option<IpAddr>) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        self.held.push(Held {
            listener,
            to,
            source,
            start,
            len: bytes.len(),
        });
    }

    /// Sends everything held, one `sendmmsg` per run of datagrams for one listener.
    /// A datagram the kernel refuses (full buffer, unreachable destination) is
    /// dropped, as a single send would drop it; the others still go.
    pub fn flush(&mut self, listeners: &[impl AsRawFd]) {
        let mut first = 0;
        while first < self.held.len() {
            let listener = self.held[first].listener;
            let run = self.held[first..]
                .iter()
                .take_while(|h| h.listener == listener)
                .count();
            if let Some(socket) = listeners.get(listener) {
                self.send_run(socket.as_raw_fd(), first, first + run);
            }
            first += run;
        }
        self.held.clear();
        self.bytes.clear();
    }

    /// Sends held datagrams `from..to` through `fd`, skipping any the kernel refuses.
    fn send_run(&mut self, fd: RawFd, mut from: usize, to: usize) {
        while from < to {
            match self.sendmmsg(fd, &self.held[from..to]) {
                // The datagram after the ones sent was refused: drop it, go on.
                Ok(sent) => from += sent + 1,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => from += 1,
            }
        }
    }

    /// One `sendmmsg` of `held`; returns how many left.
    fn sendmmsg(&self, fd: RawFd, held: &[Held]) -> io::Result<usize> {
        let n = held.len();
        let mut names: [MaybeUninit<socket2::SockAddr>; OUTBOX_DATAGRAMS] =
            [const { MaybeUninit::uninit() }; OUTBOX_DATAGRAMS];
        let mut iovecs: [MaybeUninit<libc::iovec>; OUTBOX_DATAGRAMS] =
            [const { MaybeUninit::uninit() }; OUTBOX_DATAGRAMS];
        let mut controls: [ControlBuf; OUTBOX_DATAGRAMS] = [[0; 8]; OUTBOX_DATAGRAMS];
        let mut msgs: [MaybeUninit<libc::mmsghdr>; OUTBOX_DATAGRAMS] =
            [const { MaybeUninit::uninit() }; OUTBOX_DATAGRAMS];
        for (i, h) in held.iter().enumerate() {
            let name = names[i].write(socket2::SockAddr::from(h.to));
            let data = &self.bytes[h.start..h.start + h.len];
            let iov = iovecs[i].write(libc::iovec {
                iov_base: data.as_ptr().cast_mut().cast(),
                iov_len: data.len(),
            });
            // SAFETY: an all-zero msghdr is a valid empty header; the fields that
            // matter are set right after.
            let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
            hdr.msg_name = name.as_ptr().cast_mut().cast();
            hdr.msg_namelen = name.len();
            hdr.msg_iov = iov;
            hdr.msg_iovlen = 1;
            if let Some(source) = h.source {
                hdr.msg_control = controls[i].as_mut_ptr().cast();
                hdr.msg_controllen = pktinfo::write_source(&mut controls[i], source);
            }
            msgs[i].write(libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            });
        }
        // SAFETY: the first `n` headers are initialised, and every pointer in them
        // (address, iovec over `self.bytes`, control buffer) points at a live value of
        // the length given; the kernel only reads them (and writes `msg_len`).
        let sent = unsafe {
            libc::sendmmsg(
                fd,
                msgs.as_mut_ptr().cast(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sent as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::Duration;

    fn receiver() -> UdpSocket {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        socket
    }

    #[test]
    fn sends_in_order_skips_refused_datagrams_and_empties() {
        let a = receiver();
        let b = receiver();
        let listeners = [UdpSocket::bind("127.0.0.1:0").unwrap()];
        let mut outbox = Outbox::default();
        let unreachable: SocketAddr = "[::1]:9".parse().unwrap();
        outbox.push(0, b"one", a.local_addr().unwrap(), None);
        // An IPv4 socket cannot send to an IPv6 address: refused, and skipped.
        outbox.push(0, b"lost", unreachable, None);
        outbox.push(0, b"two", b.local_addr().unwrap(), None);
        outbox.push(0, b"three", a.local_addr().unwrap(), None);
        outbox.flush(&listeners);
        let mut buf = [0u8; 16];
        let from = listeners[0].local_addr().unwrap();
        for (socket, expected) in [(&a, &b"one"[..]), (&b, b"two"), (&a, b"three")] {
            let (n, source) = socket.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], source), (expected, from));
        }
        assert!(outbox.held.is_empty() && outbox.bytes.is_empty());
        assert!(outbox.has_room(OUTBOX_BYTES));
    }

    #[test]
    fn room_is_bounded_in_datagrams_and_bytes() {
        let mut outbox = Outbox::default();
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        // A datagram larger than the byte bound still fits when nothing is held.
        assert!(outbox.has_room(OUTBOX_BYTES + 1));
        outbox.push(0, &[0; 1000], to, None);
        assert!(!outbox.has_room(OUTBOX_BYTES));
        for _ in 1..OUTBOX_DATAGRAMS {
            assert!(outbox.has_room(10));
            outbox.push(0, &[0; 10], to, None);
        }
        assert!(!outbox.has_room(10));
    }
}
