//! TCP and TLS listeners and their connections (RFC 8656 §3.1, §12.5).
//!
//! Listeners accept on the shared runtime ([`accept`](super::accept)) and hand each
//! connection, with its slot, to the worker its client hashes to. There the connection is one task on the worker's
//! own thread: it tells TLS from plain TCP when asked to (a TLS record starts with
//! 0x16), does the handshake under a deadline, cuts the byte stream into frames, hands
//! them to the worker, and writes what the worker queues for it. Frames, answers and
//! relayed data never cross threads: the worker that owns a connection's allocation
//! also drives its socket.
//! Connections are bounded in number (total and per IP), in time (handshake, idle
//! without an allocation, a frame that never completes) and in memory (frame size,
//! write queue). This module never interprets a message: that is the engine's job.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until, timeout, timeout_at};

use super::front::FrontRules;
use super::tcp_relay::Splice;
use super::tls::TlsAcceptorSource;
use crate::core::{ConnectionId, FiveTuple, Transport};
use crate::metrics::Metrics;
use crate::proto::framing::{self, Frame};
use ipnet::IpNet;

/// The first byte of a TLS handshake record.
pub(super) const TLS_HANDSHAKE: u8 = 0x16;

/// A TCP/TLS connection as the worker sees it.
pub struct Connection {
    /// Messages for the connection's writer. Dropping it closes the connection.
    pub writer: mpsc::Sender<Vec<u8>>,
    /// Set once the connection has an allocation (stops its idle timer).
    pub allocated: Arc<AtomicBool>,
    /// Turns it into a client data connection once its ConnectionBind is answered
    /// (RFC 6062); taken on use.
    pub splice: Option<oneshot::Sender<Splice>>,
}

/// What a connection task tells the worker.
pub enum StreamEvent {
    Opened(FiveTuple, Connection),
    /// One whole STUN message or ChannelData frame (without stream padding).
    Frame(FiveTuple, Vec<u8>),
    Closed(FiveTuple),
    /// A client data connection's relaying of a peer data connection ended.
    RelayEnded(ConnectionId),
}

/// Rules every connection follows: each takes the ones current when it is accepted,
/// so a reload changes them for new connections only.
#[derive(Clone)]
pub struct StreamConfig {
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub frame_timeout: Duration,
    pub max_frame: usize,
    pub write_queue: usize,
    /// Bytes a client data connection (RFC 6062) reads at a time, each way.
    pub relay_buffer: usize,
    pub limits: Arc<ConnectionLimits>,
    /// DTLS handshakes in progress at once (DTLS listeners only).
    pub max_dtls_handshakes: usize,
    /// Sources trusted to send PROXY protocol headers.
    pub proxy_from: Arc<[IpNet]>,
    /// Routing on TLS listeners shared with a website; `None`: they serve TURN only.
    pub front: Option<Arc<FrontRules>>,
    pub metrics: Arc<Metrics>,
}

/// What a listener accepts.
#[derive(Clone)]
pub enum Accept {
    /// Plain TCP; with a source, a TLS ClientHello is recognised and served too.
    Plain(Option<TlsAcceptorSource>),
    /// TLS; with `plain_too`, plain TCP is recognised and served too.
    Tls {
        source: TlsAcceptorSource,
        plain_too: bool,
    },
}

/// Open connections, in total and per source IP.
#[derive(Debug)]
pub struct ConnectionLimits {
    /// Atomics so a reload can change them while connections are counted: the new
    /// limits refuse new connections, and connections already open stay.
    max_total: AtomicUsize,
    max_per_ip: AtomicUsize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// A place among the open connections, given back on drop.
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl ConnectionLimits {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total: AtomicUsize::new(max_total),
            max_per_ip: AtomicUsize::new(max_per_ip),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// New limits for connections accepted from now on.
    pub fn set_limits(&self, max_total: usize, max_per_ip: usize) {
        self.max_total.store(max_total, Ordering::Relaxed);
        self.max_per_ip.store(max_per_ip, Ordering::Relaxed);
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock_open().values().sum()
    }

    /// A slot for a connection from `ip`, or `None` when a limit is reached.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot> {
        self.acquire_checked(ip, true)
    }

    /// A slot counted against the total only, for a connection from a trusted proxy:
    /// [`ConnectionSlot::move_to`] then applies the per-IP limit to the real client.
    pub fn acquire_counting_total_only(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot> {
        self.acquire_checked(ip, false)
    }

    fn acquire_checked(self: &Arc<Self>, ip: IpAddr, per_ip: bool) -> Option<ConnectionSlot> {
        let mut open = self.lock_open();
        let total: usize = open.values().sum();
        if total >= self.max_total.load(Ordering::Relaxed) || (per_ip && !self.room_for(&open, ip))
        {
            return None;
        }
        *open.entry(ip).or_default() += 1;
        Some(ConnectionSlot {
            limits: self.clone(),
            ip,
        })
    }

    fn room_for(&self, open: &HashMap<IpAddr, usize>, ip: IpAddr) -> bool {
        open.get(&ip).copied().unwrap_or(0) < self.max_per_ip.load(Ordering::Relaxed)
    }

    fn lock_open(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ConnectionSlot {
    /// Counts the connection for `ip` instead (the client a PROXY header named); false,
    /// and nothing changed, when `ip` is at its limit.
    pub fn move_to(&mut self, ip: IpAddr) -> bool {
        let mut open = self.limits.lock_open();
        if ip == self.ip {
            return true;
        }
        if !self.limits.room_for(&open, ip) {
            return false;
        }
        *open.entry(ip).or_default() += 1;
        release(&mut open, self.ip);
        drop(open);
        self.ip = ip;
        true
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        release(&mut self.limits.lock_open(), self.ip);
    }
}

fn release(open: &mut HashMap<IpAddr, usize>, ip: IpAddr) {
    if let Some(n) = open.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            open.remove(&ip);
        }
    }
}

/// Binds a TCP listener. Done before anything else starts so a bad address fails
/// the start.
pub fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = super::socket::listen_tcp(addr, 1024, false)
        .map_err(|e| std::io::Error::new(e.kind(), format!("TCP {addr}: {e}")))?;
    TcpListener::from_std(listener)
}

/// An accepted connection on its way to the worker that will drive it.
pub struct Incoming {
    /// Non-blocking, not yet registered with any reactor: the worker registers it with
    /// its own.
    stream: std::net::TcpStream,
    /// The client: the peer of the socket, or the address a trusted PROXY protocol
    /// header gave.
    client: SocketAddr,
    /// Bytes already read from the stream (what followed a PROXY header, a
    /// ClientHello read for routing): the connection starts with them.
    prefix: Vec<u8>,
    /// When it was accepted: its handshake and idle deadlines count from here.
    accepted: Instant,
    accept: Accept,
    config: StreamConfig,
    /// Held for as long as the connection lives.
    slot: ConnectionSlot,
}

impl Incoming {
    /// `None` when the socket cannot be taken off this runtime's reactor.
    pub(super) fn new(
        stream: TcpStream,
        client: SocketAddr,
        prefix: Vec<u8>,
        accepted: Instant,
        accept: Accept,
        config: StreamConfig,
        slot: ConnectionSlot,
    ) -> Option<Self> {
        Some(Self {
            stream: stream.into_std().ok()?,
            client,
            prefix,
            accepted,
            accept,
            config,
            slot,
        })
    }

    /// Hands the connection to the worker its client hashes to. Fails only once the
    /// workers have stopped; the connection then closes.
    pub(super) fn hand_off(self, workers: &[Handoff]) {
        let _ = workers[worker_for(self.client, workers.len())].send(self);
    }
}

/// Where a listener hands accepted connections to one worker. Unbounded because
/// what it carries is bounded already: each connection holds a [`ConnectionSlot`].
pub type Handoff = mpsc::UnboundedSender<Incoming>;

/// The worker a connection from `client` belongs to.
pub(super) fn worker_for(client: SocketAddr, workers: usize) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(client);
    (hash % workers.max(1) as u64) as usize
}

/// One connection from accept to close, on the worker's thread (registered with the
/// reactor of the runtime this is called on).
pub async fn connection(incoming: Incoming, events: mpsc::Sender<StreamEvent>) {
    let Incoming {
        stream,
        client,
        prefix,
        accepted: opened,
        accept,
        config,
        slot: _slot,
    } = incoming;
    let Ok(stream) = TcpStream::from_std(stream) else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let Ok(server) = stream.local_addr() else {
        return;
    };
    // One deadline covers both the first byte (when detecting) and the handshake.
    let handshake_deadline = opened + config.handshake_timeout;
    let first_byte = prefix.first().copied();
    let tls = match timeout_at(handshake_deadline, choose_tls(&stream, first_byte, &accept)).await {
        Ok(Ok(tls)) => tls,
        _ => return,
    };
    let connection = Accepted {
        client,
        server,
        opened,
        handshake_deadline,
        config: &config,
    };
    if prefix.is_empty() {
        connection.serve(stream, tls, events).await;
    } else {
        // What was read ahead is replayed before the rest of the stream.
        let (read, write) = stream.into_split();
        let replayed = tokio::io::join(std::io::Cursor::new(prefix).chain(read), write);
        connection.serve(replayed, tls, events).await;
    }
}

/// A connection on its worker, before TLS (if any) and framing.
struct Accepted<'a> {
    client: SocketAddr,
    server: SocketAddr,
    opened: Instant,
    handshake_deadline: Instant,
    config: &'a StreamConfig,
}

impl Accepted<'_> {
    /// Does the TLS handshake when `tls` says so, then runs the connection.
    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        self,
        stream: S,
        tls: Option<TlsAcceptorSource>,
        events: mpsc::Sender<StreamEvent>,
    ) {
        let client = self.client;
        let tuple = |transport| FiveTuple {
            client,
            server: self.server,
            transport,
        };
        let Some(source) = tls else {
            run(
                stream,
                tuple(Transport::Tcp),
                self.opened,
                self.config,
                events,
            )
            .await;
            return;
        };
        let handshake = source.acceptor().accept(stream);
        match timeout_at(self.handshake_deadline, handshake).await {
            Ok(Ok(tls_stream)) => {
                let tuple = tuple(Transport::Tls);
                run(tls_stream, tuple, self.opened, self.config, events).await;
            }
            Ok(Err(e)) => tracing::debug!(%client, "TLS handshake failed: {e}"),
            Err(_) => tracing::debug!(%client, "TLS handshake timed out"),
        }
    }
}

/// Which TLS acceptor applies, if any: by listener kind, or by the first byte (already
/// read, or peeked) when the listener serves both.
async fn choose_tls(
    stream: &TcpStream,
    first_byte: Option<u8>,
    accept: &Accept,
) -> std::io::Result<Option<TlsAcceptorSource>> {
    let (source, detect) = match accept {
        Accept::Plain(None) => return Ok(None),
        Accept::Plain(Some(source)) => (source, true),
        Accept::Tls { source, plain_too } => (source, *plain_too),
    };
    if !detect {
        return Ok(Some(source.clone()));
    }
    let first = match first_byte {
        Some(byte) => byte,
        None => {
            let mut first = [0u8; 1];
            if stream.peek(&mut first).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            first[0]
        }
    };
    Ok((first == TLS_HANDSHAKE).then(|| source.clone()))
}

/// Reads frames and writes queued messages until either side ends, or until the
/// connection becomes a client data connection: then it relays its peer's bytes.
async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    tuple: FiveTuple,
    opened: Instant,
    config: &StreamConfig,
    events: mpsc::Sender<StreamEvent>,
) {
    let (writer, mut queue) = mpsc::channel(config.write_queue);
    let (splice_tx, mut splice_rx) = oneshot::channel();
    let allocated = Arc::new(AtomicBool::new(false));
    let conn = Connection {
        writer,
        allocated: allocated.clone(),
        splice: Some(splice_tx),
    };
    if events.send(StreamEvent::Opened(tuple, conn)).await.is_err() {
        return;
    }
    let mut buf = Vec::with_capacity(4096);
    let mut framing = Framing::default();
    let mut frame_started: Option<Instant> = None;
    let mut stalled = false;
    let mut spliced = None;
    loop {
        let idle_deadline =
            (!allocated.load(Ordering::Relaxed)).then(|| opened + config.idle_timeout);
        let frame_deadline = frame_started.map(|t| t + config.frame_timeout);
        let deadline = idle_deadline.into_iter().chain(frame_deadline).min();
        tokio::select! {
            // After a ConnectionBind, nothing more is read until it is answered: what
            // follows a success is the client's data, not frames.
            read = stream.read_buf(&mut buf), if !framing.binding => {
                match read {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if let Err(e) = forward_frames(&mut buf, &mut framing, tuple, config.max_frame, &events).await {
                    tracing::debug!(client = %tuple.client, "closing connection: {e}");
                    break;
                }
                frame_started = match (buf.is_empty(), frame_started) {
                    (true, _) => None,
                    (false, None) => Some(Instant::now()),
                    (false, started) => started,
                };
            }
            message = queue.recv() => match message {
                Some(bytes) => {
                    let written = write_in_time(&mut stream, &bytes, config.frame_timeout).await;
                    if !written {
                        tracing::debug!(client = %tuple.client, "closing connection: client not reading");
                        stalled = true;
                        break;
                    }
                    if framing.binding {
                        // The engine hands over the peer connection together with a
                        // success; any other answer lets framing go on.
                        if let Ok(splice) = splice_rx.try_recv() {
                            spliced = Some(splice);
                            break;
                        }
                        framing.binding = false;
                        if let Err(e) = forward_frames(&mut buf, &mut framing, tuple, config.max_frame, &events).await {
                            tracing::debug!(client = %tuple.client, "closing connection: {e}");
                            break;
                        }
                    }
                }
                // The worker let go: the allocation is gone or the server stops.
                None => break,
            },
            () = sleep_until_opt(deadline) => {
                tracing::debug!(client = %tuple.client, "closing connection: timed out");
                break;
            }
        }
    }
    if let Some(splice) = spliced {
        let id = splice.id;
        let buffer = config.relay_buffer;
        super::tcp_relay::relay(stream, buf, splice, buffer, &config.metrics).await;
        let _ = events.send(StreamEvent::RelayEnded(id)).await;
    } else if !stalled {
        // A TLS shutdown writes close_notify behind whatever is still buffered: for a
        // client that stopped reading it would wait forever, holding the connection,
        // its slot and its allocation. Such a client gets no goodbye; others get
        // `frame_timeout` for it, like for any frame.
        let _ = timeout(config.frame_timeout, stream.shutdown()).await;
    }
    let _ = events.send(StreamEvent::Closed(tuple)).await;
}

/// Where a connection's framing stands.
#[derive(Debug, Default)]
struct Framing {
    /// A STUN message came first, as it must.
    seen_stun: bool,
    /// A ConnectionBind was handed to the worker and is not answered yet.
    binding: bool,
}

/// Hands every whole frame at the start of `buf` to the worker and keeps the rest.
/// The first frame of a connection must be STUN: ChannelData cannot come before an
/// Allocate, and this is what turns away an HTTP request at once.
async fn forward_frames(
    buf: &mut Vec<u8>,
    framing: &mut Framing,
    tuple: FiveTuple,
    max_frame: usize,
    events: &mpsc::Sender<StreamEvent>,
) -> Result<(), FrameError> {
    // Checked on the first byte, before a whole frame is in: an HTTP request's first
    // byte would otherwise read as the start of a ChannelData frame of kilobytes.
    if buf.is_empty() {
        return Ok(());
    }
    if !framing.seen_stun && crate::proto::classify(buf) != crate::proto::Kind::Stun {
        return Err(FrameError::NotStunFirst);
    }
    let mut start = 0;
    while !framing.binding {
        let frame = framing::check(&buf[start..], max_frame)?;
        let (len, consumed) = match frame {
            Frame::Incomplete => break,
            Frame::Stun(len) => {
                framing.seen_stun = true;
                framing.binding = crate::proto::is_connection_bind_request(&buf[start..]);
                (len, len)
            }
            Frame::ChannelData { .. } if !framing.seen_stun => {
                return Err(FrameError::NotStunFirst);
            }
            Frame::ChannelData { len, padded } => (len, padded),
        };
        let bytes = buf[start..start + len].to_vec();
        events
            .send(StreamEvent::Frame(tuple, bytes))
            .await
            .map_err(|_| FrameError::Stopped)?;
        start += consumed;
    }
    buf.drain(..start);
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum FrameError {
    #[error(transparent)]
    Framing(#[from] framing::FramingError),
    #[error("ChannelData before any STUN message")]
    NotStunFirst,
    #[error("server stopping")]
    Stopped,
}

/// Writes one message within `limit`; false when it failed or took longer. A client
/// that stops reading must not hold its connection (and its slot) forever. The timer is
/// armed only when the write has to wait: almost every write completes at once, and a
/// timer per relayed frame would cost two timer-wheel updates per packet.
async fn write_in_time<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
    limit: Duration,
) -> bool {
    let mut write = std::pin::pin!(write_frame(stream, bytes));
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(write.as_mut().poll(cx))).await;
    match first {
        std::task::Poll::Ready(result) => result.is_ok(),
        std::task::Poll::Pending => matches!(timeout(limit, write).await, Ok(Ok(()))),
    }
}

/// Writes one message, padding ChannelData to a multiple of four as streams require.
async fn write_frame<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    if crate::proto::classify(bytes) == crate::proto::Kind::ChannelData {
        stream
            .write_all(framing::channel_padding(bytes.len()))
            .await?;
    }
    stream.flush().await
}

pub(super) async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(when) => sleep_until(when).await,
        None => std::future::pending().await,
    }
}
