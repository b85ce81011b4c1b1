//! The UDP driver: one worker task that owns the engine, the listening sockets and the
//! relay sockets.
//!
//! Client datagrams are read straight from the listeners; each relay socket has a small
//! reader task that hands datagrams to the worker through a bounded queue (full queue:
//! the datagram is dropped, as the network would). Sends never wait: a full socket
//! buffer drops the datagram instead of stalling every other client.

use std::collections::HashMap;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

use super::socket::{bind_udp, set_dont_fragment};
use crate::core::{Engine, FiveTuple, Io, Now, PEER_HEADROOM, Transport};

/// Largest UDP payload; buffers are sized for it so nothing is ever truncated.
const MAX_DATAGRAM: usize = 65_535;

/// What a relay socket's reader tells the worker.
enum RelayEvent {
    /// A datagram from `peer`. Invariant: the data is at `buf[PEER_HEADROOM..]`, the
    /// headroom is free for a ChannelData header.
    Datagram {
        relay: SocketAddr,
        peer: SocketAddr,
        buf: Vec<u8>,
    },
    /// The socket is closed: its port can be bound again.
    Closed(SocketAddr),
}

struct RelaySocket {
    socket: Arc<UdpSocket>,
    /// Dropping it tells the reader to close the socket.
    _close: oneshot::Sender<()>,
}

/// Everything the engine may ask the driver to do.
struct Sockets {
    listeners: Vec<Arc<UdpSocket>>,
    listener_index: HashMap<SocketAddr, usize>,
    relays: HashMap<SocketAddr, RelaySocket>,
    relay_tx: mpsc::Sender<RelayEvent>,
    socket_buffer: usize,
}

impl Io for Sockets {
    fn send_to_client(&mut self, tuple: &FiveTuple, bytes: &[u8]) {
        if let Some(&i) = self.listener_index.get(&tuple.server) {
            send_now(&self.listeners[i], bytes, tuple.client);
        }
    }

    fn send_to_peer(&mut self, relay: SocketAddr, peer: SocketAddr, bytes: &[u8]) {
        if let Some(r) = self.relays.get(&relay) {
            send_now(&r.socket, bytes, peer);
        }
    }

    fn bind_relay(&mut self, addr: SocketAddr, dont_fragment: bool) -> std::io::Result<()> {
        let socket = bind_udp(addr, self.socket_buffer)?;
        if dont_fragment {
            set_dont_fragment(&socket, addr.is_ipv6())?;
        }
        let socket = Arc::new(UdpSocket::from_std(socket)?);
        let (close_tx, close_rx) = oneshot::channel();
        let reader = read_relay(socket.clone(), addr, self.relay_tx.clone(), close_rx);
        tokio::spawn(reader);
        self.relays.insert(
            addr,
            RelaySocket {
                socket,
                _close: close_tx,
            },
        );
        Ok(())
    }

    fn close_relay(&mut self, addr: SocketAddr) {
        self.relays.remove(&addr);
    }
}

/// Sends a datagram with one non-blocking `sendto`, dropping it when the socket buffer
/// is full. tokio's `try_send_to` is not used because it reports "would block" until
/// the reactor has seen a fresh socket become writable, which drops the first packets
/// of a new allocation.
fn send_now(socket: &UdpSocket, bytes: &[u8], to: SocketAddr) {
    let _ = socket2::SockRef::from(socket).send_to(bytes, &to.into());
}

/// Reads one relay socket until the worker lets go of it, then closes the socket and
/// says so, so the port is only reused once it is really free.
async fn read_relay(
    socket: Arc<UdpSocket>,
    relay: SocketAddr,
    tx: mpsc::Sender<RelayEvent>,
    mut close: oneshot::Receiver<()>,
) {
    let mut buf = vec![0u8; PEER_HEADROOM + MAX_DATAGRAM];
    loop {
        tokio::select! {
            _ = &mut close => break,
            received = socket.recv_from(&mut buf[PEER_HEADROOM..]) => match received {
                Ok((len, peer)) => {
                    let buf = buf[..PEER_HEADROOM + len].to_vec();
                    // A full queue drops the datagram, as a congested link would.
                    let _ = tx.try_send(RelayEvent::Datagram { relay, peer, buf });
                }
                // ICMP errors surface here on some kernels; the socket stays usable.
                Err(_) => tokio::task::yield_now().await,
            },
        }
    }
    drop(socket);
    let _ = tx.send(RelayEvent::Closed(relay)).await;
}

/// Binds one listening socket. Done before anything else starts so a bad address
/// fails the start.
pub fn bind_listener(addr: SocketAddr, buffer: usize) -> std::io::Result<UdpSocket> {
    let socket = bind_udp(addr, buffer)
        .map_err(|e| std::io::Error::new(e.kind(), format!("UDP {addr}: {e}")))?;
    UdpSocket::from_std(socket)
}

/// Runs the engine over `listeners` until `shutdown` turns true.
pub async fn run(
    mut engine: Engine,
    listeners: Vec<UdpSocket>,
    socket_buffer: usize,
    relay_queue: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let (relay_tx, mut relay_rx) = mpsc::channel(relay_queue);
    let listeners: Vec<Arc<UdpSocket>> = listeners.into_iter().map(Arc::new).collect();
    let listener_index = listeners
        .iter()
        .enumerate()
        .filter_map(|(i, s)| Some((s.local_addr().ok()?, i)))
        .collect();
    let mut io = Sockets {
        listeners,
        listener_index,
        relays: HashMap::new(),
        relay_tx,
        socket_buffer,
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let deadline = engine.poll_timeout();
        let sleep = async {
            match deadline {
                Some(when) => tokio::time::sleep_until(when.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            received = recv_any(&io.listeners, &mut buf) => {
                let (i, len, client) = received;
                let Ok(server) = io.listeners[i].local_addr() else { continue };
                let tuple = FiveTuple { client, server, transport: Transport::Udp };
                engine.handle_client(now(), tuple, &buf[..len], &mut io);
            }
            Some(event) = relay_rx.recv() => match event {
                RelayEvent::Datagram { relay, peer, mut buf } => {
                    let len = buf.len() - PEER_HEADROOM;
                    engine.handle_peer(Instant::now(), relay, peer, &mut buf, len, &mut io);
                }
                RelayEvent::Closed(relay) => engine.handle_relay_closed(relay),
            },
            () = sleep => engine.handle_timeout(Instant::now(), &mut io),
            _ = shutdown.changed() => break,
        }
    }
    // Dropping the relay sockets' close handles stops their readers.
    io.relays.clear();
}

/// The next datagram from any listener: (listener index, length, source).
async fn recv_any(listeners: &[Arc<UdpSocket>], buf: &mut [u8]) -> (usize, usize, SocketAddr) {
    poll_fn(|cx| {
        for (i, socket) in listeners.iter().enumerate() {
            let mut read = tokio::io::ReadBuf::new(buf);
            match socket.poll_recv_from(cx, &mut read) {
                Poll::Ready(Ok(from)) => return Poll::Ready((i, read.filled().len(), from)),
                // A transient error (e.g. ICMP feedback): try again on the next wake-up.
                Poll::Ready(Err(_)) => cx.waker().wake_by_ref(),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await
}

fn now() -> Now {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Now {
        mono: Instant::now(),
        unix,
    }
}
