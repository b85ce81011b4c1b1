//! RFC 6062 TCP relaying, the sockets of it: a TCP allocation's listening relay
//! socket, the connections it opens to peers (Connect) and accepts from them, and the
//! copy loop that joins a peer data connection to the client's data connection once
//! the client has bound it.
//!
//! The engine decides everything ([`crate::core::tcp_relay`]): which peer may connect,
//! which connection a ConnectionBind takes, when an unbound one is closed. A peer data
//! connection waits here, unread (the kernel buffers what the peer sends, and its
//! window holds the peer back), in a table every worker shares: the client's data
//! connection reaches whichever worker its address hashes to, and that worker runs
//! the copy loop.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio::task::AbortHandle;

use crate::core::tcp_relay::{BIND_TIMEOUT, StreamBandwidth};
use crate::core::{ConnectionId, Count, Direction, StreamTraffic};
use crate::metrics::Metrics;

/// A peer data connection's two ends: the relay address and the peer.
pub type PeerKey = (SocketAddr, SocketAddr);

/// What a TCP relay's tasks tell their worker.
pub enum TcpRelayEvent {
    /// A peer connected to the relay address `relay`.
    Accepted {
        relay: SocketAddr,
        peer: SocketAddr,
        stream: std::net::TcpStream,
    },
    /// The connection for Connect `id` is up (`Some`) or failed.
    Connected {
        relay: SocketAddr,
        peer: SocketAddr,
        id: ConnectionId,
        stream: Option<std::net::TcpStream>,
    },
    /// The listener at this relay address is closed: its port may be bound again.
    ListenerClosed(SocketAddr),
}

/// Where a worker's TCP relay tasks report. Unbounded because what it carries is
/// bounded already: one report per listener, per Connect and per accepted connection,
/// and those are capped per allocation.
pub type TcpRelayEvents = mpsc::UnboundedSender<TcpRelayEvent>;

/// Peer data connections, by their two ends, shared by every worker.
#[derive(Clone, Default)]
pub struct PeerConnections(Arc<Mutex<HashMap<PeerKey, PeerEnd>>>);

enum PeerEnd {
    /// Waiting for its ConnectionBind, unread.
    Held(std::net::TcpStream),
    /// Being relayed; notified to stop.
    Relaying(Arc<Notify>),
}

impl PeerConnections {
    fn lock(&self) -> MutexGuard<'_, HashMap<PeerKey, PeerEnd>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds `stream` until it is bound or closed.
    pub fn hold(&self, key: PeerKey, stream: std::net::TcpStream) {
        self.lock().insert(key, PeerEnd::Held(stream));
    }

    /// Takes a held connection to relay it, leaving its stop signal in its place.
    pub fn take_for_relay(&self, key: PeerKey) -> Option<(std::net::TcpStream, Arc<Notify>)> {
        let mut table = self.lock();
        let Some(PeerEnd::Held(_)) = table.get(&key) else {
            return None;
        };
        let stop = Arc::new(Notify::new());
        match table.insert(key, PeerEnd::Relaying(stop.clone())) {
            Some(PeerEnd::Held(stream)) => Some((stream, stop)),
            _ => None,
        }
    }

    /// Closes the connection: a held one at once, a relayed one by its copy loop.
    pub fn close(&self, key: PeerKey) {
        match self.lock().remove(&key) {
            Some(PeerEnd::Relaying(stop)) => stop.notify_one(),
            Some(PeerEnd::Held(_)) | None => {}
        }
    }

    /// Forgets a relayed connection whose copy loop ended (unless the ends were reused
    /// by a newer connection meanwhile).
    fn relay_ended(&self, key: PeerKey, stop: &Arc<Notify>) {
        let mut table = self.lock();
        if matches!(table.get(&key), Some(PeerEnd::Relaying(s)) if Arc::ptr_eq(s, stop)) {
            table.remove(&key);
        }
    }
}

/// Binds a TCP allocation's relay socket and listens on it. SO_REUSEPORT, as on the
/// sockets [`spawn_connect`] opens from the same address: Linux lets a connecting
/// socket share a listener's port only when both set it.
pub fn bind_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    super::socket::listen_tcp(addr, LISTEN_BACKLOG, true)
}

/// Pending connections a relay listener queues; a TCP allocation has few peers.
const LISTEN_BACKLOG: i32 = 64;

/// How long accepting pauses after an error such as running out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts peers' connections on `listener` (at `relay`) and reports them, until the
/// returned handle aborts it; [`TcpRelayEvent::ListenerClosed`] follows once the socket
/// is closed, never before.
pub fn spawn_listener(
    listener: std::net::TcpListener,
    relay: SocketAddr,
    events: TcpRelayEvents,
) -> io::Result<AbortHandle> {
    let listener = TcpListener::from_std(listener)?;
    let open = OpenListener {
        listener: Some(listener),
        relay,
        events: events.clone(),
    };
    let task = tokio::spawn(async move {
        let Some(listener) = open.listener.as_ref() else {
            return;
        };
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let Ok(stream) = stream.into_std() else {
                        continue;
                    };
                    let accepted = TcpRelayEvent::Accepted {
                        relay,
                        peer,
                        stream,
                    };
                    if events.send(accepted).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(%relay, "relay accept failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    });
    Ok(task.abort_handle())
}

/// A relay listener that reports its closing once its socket is really closed, however
/// its task ends (aborted, or the worker stopping).
struct OpenListener {
    listener: Option<TcpListener>,
    relay: SocketAddr,
    events: TcpRelayEvents,
}

impl Drop for OpenListener {
    fn drop(&mut self) {
        drop(self.listener.take());
        let _ = self.events.send(TcpRelayEvent::ListenerClosed(self.relay));
    }
}

/// Connects from `relay` to `peer` for Connect `id` and reports how it went, within
/// the RFC's 30 s.
pub fn spawn_connect(
    relay: SocketAddr,
    peer: SocketAddr,
    id: ConnectionId,
    events: TcpRelayEvents,
) {
    tokio::spawn(async move {
        let connected = tokio::time::timeout(BIND_TIMEOUT, connect_from(relay, peer)).await;
        let stream = match connected {
            Ok(Ok(stream)) => stream.into_std().ok(),
            Ok(Err(e)) => {
                tracing::debug!(%relay, %peer, "relay connect failed: {e}");
                None
            }
            Err(_) => None,
        };
        let _ = events.send(TcpRelayEvent::Connected {
            relay,
            peer,
            id,
            stream,
        });
    });
}

async fn connect_from(relay: SocketAddr, peer: SocketAddr) -> io::Result<TcpStream> {
    let socket = match relay {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(relay)?;
    socket.connect(peer).await
}

/// A bound peer data connection, handed to the task of the client's data connection.
pub struct Splice {
    pub peer: std::net::TcpStream,
    pub key: PeerKey,
    pub id: ConnectionId,
    /// Notified when the allocation ends or the policy cuts the peer off.
    pub stop: Arc<Notify>,
    pub traffic: Arc<StreamTraffic>,
    pub bandwidth: Arc<StreamBandwidth>,
    pub connections: PeerConnections,
}

/// Copies bytes both ways between the client's data connection and the peer data
/// connection until either closes or `splice.stop` says so, then closes both (RFC 6062
/// §5.5). `leftover` is what the client sent after its ConnectionBind, before this
/// began. Each direction holds one `buffer`-sized buffer; a side that stops reading
/// holds the other back through TCP's own flow control.
pub async fn relay<S>(
    client: S,
    leftover: Vec<u8>,
    splice: Splice,
    buffer: usize,
    metrics: &Metrics,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Splice {
        peer,
        key,
        id,
        stop,
        traffic,
        bandwidth,
        connections,
    } = splice;
    if let Ok(peer) = TcpStream::from_std(peer) {
        let _ = peer.set_nodelay(true);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let (mut peer_read, mut peer_write) = peer.into_split();
        // The copies borrow the halves; they are dropped before the halves close.
        {
            let to_peer = async {
                let mut limited = Limited::new(&bandwidth, Direction::ToPeer);
                let counted = |n| {
                    traffic.count_to_peer(n);
                    metrics.count(Count::ToPeer(n));
                };
                if !leftover.is_empty() {
                    limited.write(&mut peer_write, &leftover).await?;
                    counted(leftover.len());
                }
                copy(&mut client_read, &mut peer_write, buffer, limited, counted).await
            };
            let limited = Limited::new(&bandwidth, Direction::ToClient);
            let counted = |n| {
                traffic.count_to_client(n);
                metrics.count(Count::ToClient(n));
            };
            let to_client = copy(&mut peer_read, &mut client_write, buffer, limited, counted);
            tokio::select! {
                _ = to_peer => {}
                _ = to_client => {}
                () = stop.notified() => {}
            }
        }
        let _ = peer_write.shutdown().await;
        let _ = tokio::time::timeout(CLOSE_GRACE, client_write.shutdown()).await;
    }
    connections.relay_ended(key, &stop);
    tracing::debug!(relay = %key.0, peer = %key.1, id, "TCP relay connection closed");
}

/// How long a closing data connection may take to say goodbye (TLS close_notify).
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Copies `from` into `to` until `from` ends, within the bandwidth limits, calling
/// `counted` with each read's size once it is written.
async fn copy<R, W>(
    from: &mut R,
    to: &mut W,
    buffer: usize,
    mut limited: Limited<'_>,
    counted: impl Fn(usize),
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; buffer];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        limited.write(to, &buf[..n]).await?;
        counted(n);
    }
}

/// One direction of a pair under the allocation's bandwidth limits: bytes are written
/// in pieces a bucket can take, each once charged, waiting for room when there is
/// none (a stream cannot drop what does not fit; TCP's flow control then slows the
/// sender).
struct Limited<'a> {
    bandwidth: &'a StreamBandwidth,
    direction: Direction,
    /// This direction's credit at the server's buckets.
    credit: [u64; 2],
}

impl<'a> Limited<'a> {
    fn new(bandwidth: &'a StreamBandwidth, direction: Direction) -> Self {
        Self {
            bandwidth,
            direction,
            credit: [0; 2],
        }
    }

    /// Writes all of `bytes`, then flushes.
    async fn write<W: AsyncWrite + Unpin>(
        &mut self,
        to: &mut W,
        mut bytes: &[u8],
    ) -> io::Result<()> {
        while !bytes.is_empty() {
            let piece = self
                .bandwidth
                .piece()
                .unwrap_or(bytes.len())
                .min(bytes.len());
            let now = std::time::Instant::now;
            while let Err(wait) =
                self.bandwidth
                    .charge(self.direction, piece, now(), &mut self.credit)
            {
                tokio::time::sleep(wait).await;
            }
            to.write_all(&bytes[..piece]).await?;
            bytes = &bytes[piece..];
        }
        to.flush().await
    }
}
