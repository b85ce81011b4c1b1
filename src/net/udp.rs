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
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::socket::bind_udp;
use crate::core::{Engine, FiveTuple, Io, Now, PEER_HEADROOM, Transport};

/// Largest UDP payload; buffers are sized for it so nothing is ever truncated.
const MAX_DATAGRAM: usize = 65_535;

/// A datagram a peer sent to a relay socket, with headroom for a ChannelData header.
struct PeerDatagram {
    relay: SocketAddr,
    peer: SocketAddr,
    /// Invariant: the data is at `buf[PEER_HEADROOM..]`.
    buf: Vec<u8>,
}

struct RelaySocket {
    socket: Arc<UdpSocket>,
    reader: JoinHandle<()>,
}

/// Everything the engine may ask the driver to do.
struct Sockets {
    listeners: Vec<Arc<UdpSocket>>,
    listener_index: HashMap<SocketAddr, usize>,
    relays: HashMap<SocketAddr, RelaySocket>,
    peer_tx: mpsc::Sender<PeerDatagram>,
    socket_buffer: usize,
}

impl Io for Sockets {
    fn send_to_client(&mut self, tuple: &FiveTuple, bytes: &[u8]) {
        if let Some(&i) = self.listener_index.get(&tuple.server) {
            let _ = self.listeners[i].try_send_to(bytes, tuple.client);
        }
    }

    fn send_to_peer(&mut self, relay: SocketAddr, peer: SocketAddr, bytes: &[u8]) {
        if let Some(r) = self.relays.get(&relay) {
            let _ = r.socket.try_send_to(bytes, peer);
        }
    }

    fn bind_relay(&mut self, addr: SocketAddr) -> std::io::Result<()> {
        let socket = Arc::new(UdpSocket::from_std(bind_udp(addr, self.socket_buffer)?)?);
        let reader = tokio::spawn(read_relay(socket.clone(), addr, self.peer_tx.clone()));
        self.relays.insert(addr, RelaySocket { socket, reader });
        Ok(())
    }

    fn close_relay(&mut self, addr: SocketAddr) {
        if let Some(r) = self.relays.remove(&addr) {
            r.reader.abort();
        }
    }
}

/// Reads one relay socket until the worker closes it.
async fn read_relay(socket: Arc<UdpSocket>, relay: SocketAddr, tx: mpsc::Sender<PeerDatagram>) {
    let mut buf = vec![0u8; PEER_HEADROOM + MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buf[PEER_HEADROOM..]).await {
            Ok((len, peer)) => {
                let datagram = PeerDatagram {
                    relay,
                    peer,
                    buf: buf[..PEER_HEADROOM + len].to_vec(),
                };
                if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(datagram) {
                    return;
                }
            }
            // ICMP errors surface here on some kernels; the socket stays usable.
            Err(_) => tokio::task::yield_now().await,
        }
    }
}

/// Binds the listening sockets. Done before anything else starts so a bad address
/// fails the start.
pub fn bind_listeners(addrs: &[SocketAddr], buffer: usize) -> std::io::Result<Vec<UdpSocket>> {
    addrs
        .iter()
        .map(|&addr| {
            let socket = bind_udp(addr, buffer)
                .map_err(|e| std::io::Error::new(e.kind(), format!("UDP {addr}: {e}")))?;
            UdpSocket::from_std(socket)
        })
        .collect()
}

/// Runs the engine over `listeners` until `shutdown` turns true.
pub async fn run(
    mut engine: Engine,
    listeners: Vec<UdpSocket>,
    socket_buffer: usize,
    relay_queue: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let (peer_tx, mut peer_rx) = mpsc::channel(relay_queue);
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
        peer_tx,
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
            Some(mut datagram) = peer_rx.recv() => {
                let len = datagram.buf.len() - PEER_HEADROOM;
                engine.handle_peer(
                    Instant::now(), datagram.relay, datagram.peer, &mut datagram.buf, len, &mut io,
                );
            }
            () = sleep => engine.handle_timeout(Instant::now(), &mut io),
            _ = shutdown.changed() => break,
        }
    }
    for (_, relay) in io.relays.drain() {
        relay.reader.abort();
    }
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
