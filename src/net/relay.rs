//! Relay sockets: one UDP socket per allocation, all of a worker's in one epoll set
//! that the worker's reactor watches as a single file descriptor.
//!
//! A task (and a reactor registration) per relay socket cost a scheduler pass per
//! wake-up and a few hundred bytes per idle allocation, and sent a TCP/TLS client's
//! peer data through a queue. With one set, a wake-up finds every relay socket with
//! datagrams waiting in one `epoll_wait`, reads each with `recvmmsg`, and the worker
//! hands the datagrams to the engine on its own thread: one path for every transport,
//! no task, no queue, no lock. A closed socket is closed at once (nothing else holds
//! it), so its port can be bound again right away.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use tokio::io::unix::AsyncFd;

use super::socket::{bind_udp, set_dont_fragment};

/// Largest UDP payload; buffers are sized for it so nothing is ever truncated.
pub const MAX_DATAGRAM: usize = 65_535;

/// Batches read from one relay socket per wake-up before the worker moves on, so one
/// busy socket cannot starve the others sharing the thread (a socket left with
/// datagrams is read again on the next pass, see [`RelayPoller::again`]).
pub const DRAIN_ROUNDS: usize = 4;

/// Ready relay sockets taken per `epoll_wait`.
const EVENTS: usize = 256;

/// A worker's relay sockets, by relay address and by descriptor.
pub struct RelaySockets {
    /// The epoll set every socket is added to (owned by [`RelayPoller`]).
    epoll: RawFd,
    sockets: HashMap<SocketAddr, UdpSocket>,
    by_fd: HashMap<RawFd, SocketAddr>,
}

/// Waits on a worker's relay set and lists what is ready.
pub struct RelayPoller {
    epoll: AsyncFd<OwnedFd>,
    events: Vec<libc::epoll_event>,
    /// Descriptors found ready by the last wait.
    ready: Vec<RawFd>,
    /// Sockets left with datagrams by the last pass (see [`Self::again`]).
    again: Vec<RawFd>,
}

/// A fresh, empty relay set: its sockets, and the poller registered with the current
/// (worker's) reactor. The poller must outlive the sockets' use of its descriptor:
/// both live for the worker's whole run.
pub fn relay_set() -> io::Result<(RelaySockets, RelayPoller)> {
    // SAFETY: epoll_create1 has no memory-safety preconditions.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let sockets = RelaySockets {
        epoll: fd,
        sockets: HashMap::new(),
        by_fd: HashMap::new(),
    };
    let poller = RelayPoller {
        // SAFETY: an OwnedFd keeps its descriptor open and unchanged until dropped.
        epoll: unsafe { AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)?,
        events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS],
        ready: Vec::with_capacity(EVENTS),
        again: Vec::new(),
    };
    Ok((sockets, poller))
}

impl RelaySockets {
    /// Binds `addr` and adds it to the set.
    pub fn bind(&mut self, addr: SocketAddr, dont_fragment: bool, buffer: usize) -> io::Result<()> {
        let socket = bind_udp(addr, buffer)?;
        if dont_fragment {
            set_dont_fragment(&socket, addr.is_ipv6())?;
        }
        let fd = socket.as_raw_fd();
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd as u64,
        };
        // SAFETY: both descriptors are open; `event` is a valid epoll_event.
        if unsafe { libc::epoll_ctl(self.epoll, libc::EPOLL_CTL_ADD, fd, &mut event) } < 0 {
            return Err(io::Error::last_os_error());
        }
        self.by_fd.insert(fd, addr);
        self.sockets.insert(addr, socket);
        Ok(())
    }

    /// Closes the socket at `addr`; returns whether there was one.
    pub fn close(&mut self, addr: SocketAddr) -> bool {
        let Some(socket) = self.sockets.remove(&addr) else {
            return false;
        };
        // Closing the socket takes it out of the set too (nothing else holds it); the
        // explicit removal keeps the set right even if that ever changes.
        let fd = socket.as_raw_fd();
        // SAFETY: both descriptors are open; a null event is allowed for removal.
        unsafe { libc::epoll_ctl(self.epoll, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
        self.by_fd.remove(&fd);
        true
    }

    /// Closes every socket.
    pub fn clear(&mut self) {
        self.by_fd.clear();
        self.sockets.clear();
    }

    pub fn get(&self, addr: &SocketAddr) -> Option<&UdpSocket> {
        self.sockets.get(addr)
    }

    /// The relay address of the socket with descriptor `fd`, if it is still open.
    pub fn addr_of(&self, fd: RawFd) -> Option<SocketAddr> {
        self.by_fd.get(&fd).copied()
    }
}

impl RelayPoller {
    /// Waits until at least one relay socket has datagrams waiting; [`Self::ready`]
    /// then lists them. Cancel-safe: dropping the wait loses nothing.
    pub async fn wait(&mut self) {
        if !self.again.is_empty() {
            std::mem::swap(&mut self.ready, &mut self.again);
            self.again.clear();
            return;
        }
        loop {
            let Ok(mut guard) = self.epoll.readable().await else {
                // The reactor is gone: the worker is stopping.
                return std::future::pending().await;
            };
            let fd = guard.get_inner().as_raw_fd();
            let n = match epoll_wait_now(fd, &mut self.events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            // With room to spare in the events, everything ready was taken: the
            // reactor reports the next datagram. (Clearing is safe: it is ignored if
            // an event came in since the guard was taken.)
            if n < EVENTS {
                guard.clear_ready();
            }
            if n > 0 {
                self.ready.clear();
                self.ready
                    .extend(self.events[..n].iter().map(|e| e.u64 as RawFd));
                return;
            }
        }
    }

    /// Descriptors of the relay sockets found ready by the last [`Self::wait`].
    pub fn ready(&self) -> &[RawFd] {
        &self.ready
    }

    /// Asks for socket `fd` to be read again on the next pass: it still had
    /// datagrams when its share of this pass ran out.
    pub fn again(&mut self, fd: RawFd) {
        self.again.push(fd);
    }
}

/// One `epoll_wait` that does not block.
fn epoll_wait_now(epoll: RawFd, events: &mut [libc::epoll_event]) -> io::Result<usize> {
    // SAFETY: `events` is a valid buffer of `events.len()` entries.
    let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), events.len() as i32, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}
#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn reports_ready_sockets_and_forgets_closed_ones() {
        let (mut sockets, mut poller) = relay_set().unwrap();
        let a: SocketAddr = "127.0.0.1:0".parse().unwrap();
        // Port 0 binds somewhere; find where through a probe bind.
        let probe = std::net::UdpSocket::bind(a).unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        sockets.bind(addr, false, 65536).unwrap();
        let tx = std::net::UdpSocket::bind(a).unwrap();
        tx.send_to(b"x", addr).unwrap();
        tokio::time::timeout(Duration::from_secs(2), poller.wait())
            .await
            .expect("woken for the datagram");
        let ready = poller.ready().to_vec();
        assert_eq!(ready.len(), 1);
        assert_eq!(sockets.addr_of(ready[0]), Some(addr));
        assert!(sockets.close(addr));
        assert_eq!(sockets.addr_of(ready[0]), None);
        assert!(!sockets.close(addr));
        // The port is free again at once.
        sockets.bind(addr, false, 65536).unwrap();
    }
}
