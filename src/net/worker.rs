//! The worker: one task that owns the engine and every socket the engine talks
//! through, and turns what arrives into engine calls.
//!
//! Inputs: UDP listeners (read directly), relay sockets (one epoll set for all of
//! them, see [`super::relay`]; their datagrams go to the engine whatever the client's
//! transport), TCP/TLS connections handed over by the listeners and then driven by
//! tasks on this worker's thread (their frames through a bounded queue), the engine's
//! next deadline, and shutdown. A batch is read per system call everywhere. Outputs
//! never wait: a full socket buffer or connection queue drops relayed data rather than
//! stall every other client.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

use super::alarm::Alarm;
use super::batch::{BATCH, RecvBatch};
use super::held::{Held, HeldRequests};
use super::lifecycle::Lifecycle;
use super::outbox::Outbox;
use super::relay::{DRAIN_ROUNDS, MAX_DATAGRAM, RelayPoller, RelaySockets, relay_set};
use super::stream::{Connection, StreamEvent};
use super::tcp_relay::{self, PeerConnections, Splice, TcpRelayEvent, TcpRelayEvents};
use super::udp::send_now;
use crate::auth_webhook::{Lookup, Lookups};
use crate::core::tcp_relay::TcpConnection;
use crate::core::{
    ConnectionId, Count, CredentialsQuestion, EndReason, Engine, EngineRules, FiveTuple, Io,
    KernelChannel, KernelRelayed, Now, PEER_HEADROOM, Session, Transport, Usage,
};
use crate::metrics::Metrics;
use crate::offload::Offload;
use crate::usage::UsageLog;

/// What the admin API asks of a worker about the allocations it owns.
pub enum WorkerCommand {
    Sessions(oneshot::Sender<Vec<Session>>),
    /// Kill the allocation relayed at this address, if this worker owns it.
    Kill(SocketAddr, oneshot::Sender<bool>),
    /// Kill every allocation of a user (static name or REST user id).
    /// Ends every allocation of a user (a static name or REST user id), as killed or
    /// revoked.
    KillUser(String, EndReason, oneshot::Sender<usize>),
}

/// Sends `command` to every worker and gathers the answers (a worker that has
/// stopped simply does not answer).
pub async fn ask_all<T>(
    workers: &[mpsc::UnboundedSender<WorkerCommand>],
    command: impl Fn(oneshot::Sender<T>) -> WorkerCommand,
) -> Vec<T> {
    let mut replies = Vec::with_capacity(workers.len());
    for worker in workers {
        let (tx, rx) = oneshot::channel();
        if worker.send(command(tx)).is_ok() {
            replies.push(rx);
        }
    }
    let mut answers = Vec::with_capacity(replies.len());
    for rx in replies {
        if let Ok(answer) = rx.await {
            answers.push(answer);
        }
    }
    answers
}

/// A worker's TCP/TLS inputs.
pub struct Streams {
    /// Connections accepted for this worker, to be driven on its thread.
    pub handoff: mpsc::UnboundedReceiver<super::stream::Incoming>,
    /// What its connections' tasks report, and the sender they report with.
    pub events: mpsc::Receiver<StreamEvent>,
    pub events_tx: mpsc::Sender<StreamEvent>,
}

/// How long a stopping worker waits for its connections to say goodbye (TLS
/// close_notify behind what is queued) before their tasks are dropped.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// How the server steers a worker: its state, reloaded rules and admin commands.
pub struct Control {
    pub lifecycle: watch::Receiver<Lifecycle>,
    pub rules: watch::Receiver<EngineRules>,
    pub commands: mpsc::UnboundedReceiver<WorkerCommand>,
    /// The runtime that keeps the worker's alarm (see [`super::alarm`]): the main one.
    pub timekeeper: tokio::runtime::Handle,
    /// This worker's place among the workers, as `auth.webhook` lookups name it.
    pub index: usize,
    /// Usernames `auth.webhook` has an answer for, that this worker asked about.
    pub answered: mpsc::UnboundedReceiver<Arc<str>>,
}

/// What the worker needs besides its sockets.
#[derive(Clone)]
pub struct WorkerConfig {
    pub socket_buffer: usize,
    /// The kernel fast path, when it runs: the engine installs channels in it.
    pub offload: Option<Arc<Offload>>,
    /// Where ended allocations' usage records go.
    pub usage: UsageLog,
    /// Where usernames only the operator's service knows are looked up, and how many
    /// requests a worker holds meanwhile.
    pub auth_webhook: Option<(Lookups, usize)>,
    /// Peer data connections of TCP allocations, shared by every worker.
    pub peer_connections: PeerConnections,
}

/// A worker's side of `auth.webhook`: where it asks, and what it holds meanwhile.
struct Waiting {
    lookups: Lookups,
    index: usize,
    held: HeldRequests,
}

/// Everything the engine may ask the driver to do.
struct Sockets {
    listeners: Vec<Arc<UdpSocket>>,
    /// Listener by its bound address (a wildcard one under `0.0.0.0:PORT`/`[::]:PORT`).
    listener_index: HashMap<SocketAddr, usize>,
    /// What goes to UDP clients, sent once the input at hand is handled.
    outbox: Outbox,
    relays: RelaySockets,
    /// Relay sockets closed since the engine was last told, so their ports can be
    /// handed out again.
    closed: Vec<SocketAddr>,
    connections: HashMap<FiveTuple, Connection>,
    socket_buffer: usize,
    metrics: Arc<Metrics>,
    offload: Option<Arc<Offload>>,
    usage: UsageLog,
    waiting: Option<Waiting>,
    /// TCP allocations' listeners (RFC 6062), by relay address.
    tcp_listeners: HashMap<SocketAddr, tokio::task::AbortHandle>,
    peer_connections: PeerConnections,
    /// Where this worker's TCP relay tasks report.
    tcp_events: TcpRelayEvents,
}

impl Sockets {
    /// The listener (its index) that received from a UDP client whose server side is
    /// `server` (the local address it sent to), and the source address to answer from
    /// when that listener is a wildcard one.
    fn listener_for(&self, server: SocketAddr) -> Option<(usize, Option<IpAddr>)> {
        if let Some(&i) = self.listener_index.get(&server) {
            return Some((i, None));
        }
        let unspecified = match server {
            SocketAddr::V4(_) => IpAddr::from([0u8; 4]),
            SocketAddr::V6(_) => IpAddr::from([0u16; 8]),
        };
        let wildcard = SocketAddr::new(unspecified, server.port());
        let &i = self.listener_index.get(&wildcard)?;
        Some((i, Some(server.ip())))
    }
}

impl Io for Sockets {
    fn send_to_client(&mut self, tuple: &FiveTuple, bytes: &[u8]) {
        if tuple.transport == Transport::Udp {
            if let Some((listener, source)) = self.listener_for(tuple.server) {
                let listeners = &self.listeners;
                (self.outbox).hold(listeners, listener, bytes, tuple.client, source);
            }
            return;
        }
        let Some(conn) = self.connections.get(tuple) else {
            return;
        };
        if conn.writer.try_send(bytes.to_vec()).is_err() && !crate::proto::is_relayed_data(bytes) {
            // A client that cannot take a response (or a ConnectionAttempt) is not
            // reading: let it go rather than leave it waiting for a message that was
            // dropped.
            self.connections.remove(tuple);
        }
    }

    fn send_to_peer(&mut self, relay: SocketAddr, peer: SocketAddr, bytes: &[u8]) {
        if let Some(socket) = self.relays.get(&relay) {
            send_now(socket, bytes, peer);
        }
    }

    fn bind_relay(&mut self, addr: SocketAddr, dont_fragment: bool) -> std::io::Result<()> {
        self.relays.bind(addr, dont_fragment, self.socket_buffer)
    }

    fn close_relay(&mut self, addr: SocketAddr) {
        if self.relays.close(addr) {
            self.closed.push(addr);
        }
        // Its port is released when the listener reports it closed.
        if let Some(listener) = self.tcp_listeners.remove(&addr) {
            listener.abort();
        }
    }

    fn bind_tcp_relay(&mut self, addr: SocketAddr) -> std::io::Result<()> {
        let listener = tcp_relay::bind_listener(addr)?;
        let task = tcp_relay::spawn_listener(listener, addr, self.tcp_events.clone())?;
        self.tcp_listeners.insert(addr, task);
        Ok(())
    }

    fn connect_peer(&mut self, relay: SocketAddr, peer: SocketAddr, id: ConnectionId) {
        tcp_relay::spawn_connect(relay, peer, id, self.tcp_events.clone());
    }

    fn close_peer_connection(&mut self, relay: SocketAddr, peer: SocketAddr) {
        self.peer_connections.close((relay, peer));
    }

    fn splice(&mut self, tuple: &FiveTuple, connection: &TcpConnection, id: ConnectionId) {
        let key = (connection.relay, connection.peer);
        let sender = (self.connections.get_mut(tuple)).and_then(|conn| conn.splice.take());
        match (sender, self.peer_connections.take_for_relay(key)) {
            (Some(sender), Some((peer, stop))) => {
                let _ = sender.send(Splice {
                    peer,
                    key,
                    id,
                    stop,
                    traffic: connection.traffic.clone(),
                    bandwidth: connection.bandwidth.clone(),
                    connections: self.peer_connections.clone(),
                });
            }
            // One side closed meanwhile: the other goes too.
            _ => {
                self.connections.remove(tuple);
                self.peer_connections.close(key);
            }
        }
    }

    fn allocation_changed(&mut self, tuple: &FiveTuple, alive: bool) {
        if alive {
            if let Some(conn) = self.connections.get(tuple) {
                conn.allocated.store(true, Ordering::Relaxed);
            }
        } else {
            // Dropping the writer's sender closes the connection once queued answers
            // (such as the Refresh that deleted the allocation) are written.
            self.connections.remove(tuple);
        }
    }

    fn count(&mut self, event: Count<'_>) {
        self.metrics.count(event);
    }

    fn offload_channel(&mut self, channel: &KernelChannel, until: Instant) -> bool {
        self.offload
            .as_ref()
            .is_some_and(|offload| offload.install(channel, until))
    }

    fn allocation_ended(&mut self, usage: &Usage<'_>) {
        self.usage.write(usage);
    }

    fn await_credentials(&mut self, question: &CredentialsQuestion<'_>) {
        let Some(waiting) = &mut self.waiting else {
            return;
        };
        let username = question.username;
        match waiting
            .held
            .hold(username, *question.tuple, question.request)
        {
            Held::First => {
                let lookup = Lookup {
                    username: username.to_string(),
                    realm: question.realm.to_string(),
                    client: question.tuple.client,
                    transport: question.tuple.transport,
                    worker: waiting.index,
                };
                if !waiting.lookups.ask(lookup) {
                    // Nothing will answer for it: what is held goes (clients send again).
                    let dropped = waiting.held.release(username).len();
                    self.metrics.auth_webhook_dropped.inc_by(dropped as u64);
                }
            }
            Held::Behind => {}
            Held::Full => {
                self.metrics.auth_webhook_dropped.inc();
            }
        }
    }

    fn withdraw_channel(&mut self, channel: &KernelChannel) -> KernelRelayed {
        self.offload
            .as_ref()
            .map(|offload| offload.withdraw(channel))
            .unwrap_or_default()
    }

    fn channel_bytes(&mut self, channel: &KernelChannel) -> KernelRelayed {
        self.offload
            .as_ref()
            .map(|offload| offload.relayed(channel))
            .unwrap_or_default()
    }
}

/// Runs one worker on the current thread until `lifecycle` says stop: a
/// single-threaded runtime whose reactor serves this worker's listeners, relay set and
/// connections, so a relayed packet never crosses threads (no futex, no handoff).
pub fn run_on_this_thread(
    engine: Engine,
    listeners: Vec<std::net::UdpSocket>,
    streams: Streams,
    config: WorkerConfig,
    control: Control,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // Registered with this thread's reactor.
        let listeners = listeners
            .into_iter()
            .map(UdpSocket::from_std)
            .collect::<std::io::Result<Vec<_>>>()?;
        let relays = relay_set()?;
        run(engine, listeners, relays, streams, config, control, metrics).await;
        Ok(())
    })
}

async fn run(
    mut engine: Engine,
    listeners: Vec<UdpSocket>,
    (relays, mut relay_poller): (RelaySockets, RelayPoller),
    streams: Streams,
    config: WorkerConfig,
    control: Control,
    metrics: Arc<Metrics>,
) {
    let Control {
        mut lifecycle,
        mut rules,
        mut commands,
        timekeeper,
        index,
        mut answered,
    } = control;
    let Streams {
        mut handoff,
        events: mut streams,
        events_tx,
    } = streams;
    let mut connection_tasks = tokio::task::JoinSet::new();
    let (tcp_events, mut tcp_relay_events) = tokio::sync::mpsc::unbounded_channel();
    let listeners: Vec<Arc<UdpSocket>> = listeners.into_iter().map(Arc::new).collect();
    let listener_index = listeners
        .iter()
        .enumerate()
        .filter_map(|(i, s)| Some((s.local_addr().ok()?, i)))
        .collect();
    let mut io = Sockets {
        listeners,
        listener_index,
        outbox: Outbox::default(),
        relays,
        closed: Vec::new(),
        connections: HashMap::new(),
        socket_buffer: config.socket_buffer,
        metrics,
        offload: config.offload,
        usage: config.usage,
        waiting: config.auth_webhook.map(|(lookups, max)| Waiting {
            lookups,
            index,
            held: HeldRequests::new(max),
        }),
        tcp_listeners: HashMap::new(),
        peer_connections: config.peer_connections,
        tcp_events,
    };
    // Whether the server was draining when it stopped: the allocations still open then
    // end as "drained" rather than "shutdown".
    let mut draining = false;
    let mut batch = RecvBatch::new(0, MAX_DATAGRAM);
    let mut peer_batch = RecvBatch::new(PEER_HEADROOM, MAX_DATAGRAM);
    // Invariant: every listener is bound, so it has a local address.
    let local_addrs: Vec<SocketAddr> = io
        .listeners
        .iter()
        .map(|s| s.local_addr().expect("a bound socket has a local address"))
        .collect();
    // The engine's deadlines are kept off this thread, so that it sleeps without a
    // timer; the alarm is set again only when the next deadline moves, or after it rang.
    let alarm = Alarm::new(&timekeeper);
    let mut armed: Option<Instant> = None;
    let mut rang = false;
    loop {
        // What the last input sent to UDP clients leaves now, in one go.
        io.outbox.flush(&io.listeners);
        for relay in io.closed.drain(..) {
            engine.handle_relay_closed(relay);
        }
        let deadline = engine.poll_timeout();
        if deadline != armed || rang {
            alarm.set(deadline);
            armed = deadline;
            rang = false;
        }
        tokio::select! {
            i = ready_any(&io.listeners) => {
                drain_listener(&mut engine, &mut io, i, local_addrs[i], &mut batch);
            }
            () = relay_poller.wait() => {
                drain_relays(&mut engine, &mut io, &mut relay_poller, &mut peer_batch);
            }
            Some(incoming) = handoff.recv() => {
                connection_tasks.spawn(super::stream::connection(incoming, events_tx.clone()));
            }
            Some(_) = connection_tasks.join_next(), if !connection_tasks.is_empty() => {}
            Some(event) = streams.recv() => match event {
                StreamEvent::Opened(tuple, conn) => {
                    io.connections.insert(tuple, conn);
                }
                StreamEvent::Frame(tuple, bytes) => {
                    engine.handle_client(now(), tuple, &bytes, &mut io);
                }
                StreamEvent::Closed(tuple) => {
                    io.connections.remove(&tuple);
                    engine.handle_client_closed(&tuple, Instant::now(), &mut io);
                }
                StreamEvent::RelayEnded(id) => engine.handle_tcp_connection_ended(id),
            },
            Some(event) = tcp_relay_events.recv() => {
                handle_tcp_relay_event(&mut engine, &mut io, event);
            }
            Some(username) = answered.recv(), if io.waiting.is_some() => {
                let held = io.waiting.as_mut().map(|w| w.held.release(&username));
                let now = now();
                for (tuple, request) in held.unwrap_or_default() {
                    engine.handle_client(now, tuple, &request, &mut io);
                }
            }
            () = alarm.rung() => {
                rang = true;
                engine.handle_timeout(Instant::now(), &mut io);
            }
            Some(command) = commands.recv() => match command {
                WorkerCommand::Sessions(reply) => {
                    let _ = reply.send(engine.sessions(Instant::now(), &mut io));
                }
                WorkerCommand::Kill(relay, reply) => {
                    let _ = reply.send(engine.kill(relay, Instant::now(), &mut io));
                }
                WorkerCommand::KillUser(user, reason, reply) => {
                    let _ = reply.send(engine.kill_user(&user, reason, Instant::now(), &mut io));
                }
            },
            Ok(()) = rules.changed() => {
                let rules = rules.borrow_and_update().clone();
                engine.reload(&rules, Instant::now(), &mut io);
            }
            _ = lifecycle.changed() => match *lifecycle.borrow_and_update() {
                Lifecycle::Serving => {
                    draining = false;
                    engine.set_draining(false);
                }
                Lifecycle::Draining => {
                    draining = true;
                    engine.set_draining(true);
                }
                Lifecycle::Stopping => break,
            },
        }
    }
    // What is still open ends here, with its usage record.
    let reason = if draining {
        EndReason::Drained
    } else {
        EndReason::Shutdown
    };
    engine.end_all(reason, Instant::now(), &mut io);
    // Dropping the connections' writers stops their tasks; a connection's last report
    // finds the queue closed.
    io.relays.clear();
    io.connections.clear();
    drop(streams);
    drop(handoff);
    let goodbyes = async { while connection_tasks.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(STOP_GRACE, goodbyes).await;
}

/// What a TCP relay task reported: a peer data connection is held while the engine
/// decides about it, so that a client's ConnectionBind on another worker finds it.
fn handle_tcp_relay_event(engine: &mut Engine, io: &mut Sockets, event: TcpRelayEvent) {
    let now = Instant::now();
    match event {
        TcpRelayEvent::Accepted {
            relay,
            peer,
            stream,
        } => {
            io.peer_connections.hold((relay, peer), stream);
            if !engine.handle_peer_connection(now, relay, peer, io) {
                tracing::debug!(%relay, %peer, "peer connection refused (no permission, policy or limit)");
                io.peer_connections.close((relay, peer));
            }
        }
        TcpRelayEvent::Connected {
            relay,
            peer,
            id,
            stream,
        } => {
            let connected = stream.is_some();
            if let Some(stream) = stream {
                io.peer_connections.hold((relay, peer), stream);
            }
            if !engine.handle_peer_connected(now, id, connected, io) {
                io.peer_connections.close((relay, peer));
            }
        }
        TcpRelayEvent::ListenerClosed(relay) => engine.handle_relay_closed(relay),
    }
}

/// Batches read from a listener per wake-up before the worker looks at its other
/// inputs again: amortises the loop over bursts without starving relay events.
const LISTENER_ROUNDS: usize = 4;

/// Handles the datagrams waiting on listener `i` (bound at `server`), a batch per
/// system call.
fn drain_listener(
    engine: &mut Engine,
    io: &mut Sockets,
    i: usize,
    server: SocketAddr,
    batch: &mut RecvBatch,
) {
    for _ in 0..LISTENER_ROUNDS {
        let n = batch.recv(&io.listeners[i]);
        let now = now();
        for k in 0..n {
            // A wildcard listener's client is served on the address it sent to.
            let (server, _) = super::pktinfo::server_side(server, batch.destination(k));
            if let Some((buf, len, client)) = batch.get(k) {
                let tuple = FiveTuple {
                    client,
                    server,
                    transport: Transport::Udp,
                };
                engine.handle_client(now, tuple, &buf[..len], io);
            }
        }
        if n < BATCH {
            return;
        }
    }
}

/// Hands the datagrams waiting on the relay sockets `poller` found ready to the
/// engine, a batch per system call; a socket that still has some after its share is
/// read again on the next pass, after the worker's other inputs had their turn.
fn drain_relays(
    engine: &mut Engine,
    io: &mut Sockets,
    poller: &mut RelayPoller,
    batch: &mut RecvBatch,
) {
    for i in 0..poller.ready().len() {
        let fd = poller.ready()[i];
        // Gone when its allocation ended earlier in this pass.
        let Some(relay) = io.relays.addr_of(fd) else {
            continue;
        };
        let mut drained = false;
        for _ in 0..DRAIN_ROUNDS {
            let n = batch.recv_fd(fd);
            let now = Instant::now();
            for k in 0..n {
                if let Some((buf, len, peer)) = batch.get(k) {
                    engine.handle_peer(now, relay, peer, buf, len, io);
                }
            }
            // What this socket's batch relayed to clients leaves now, in one
            // `sendmmsg`, not after every other ready socket has been read: at paced
            // load a batch is one datagram, whose round trip should not wait for the
            // others' (bench/notes.md, RTT p99).
            io.outbox.flush(&io.listeners);
            if n < BATCH {
                drained = true;
                break;
            }
        }
        if !drained {
            poller.again(fd);
        }
    }
}

/// Waits until one of the listeners has a datagram; returns its index. Never resolves
/// when there are no listeners.
async fn ready_any(listeners: &[Arc<UdpSocket>]) -> usize {
    std::future::poll_fn(|cx| {
        for (i, socket) in listeners.iter().enumerate() {
            if socket.poll_recv_ready(cx).is_ready() {
                return std::task::Poll::Ready(i);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

fn now() -> Now {
    Now {
        mono: Instant::now(),
        unix: crate::clock::unix_now(),
    }
}
