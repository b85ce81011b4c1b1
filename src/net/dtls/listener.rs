//! A DTLS listener: one UDP socket, its clients told apart by their address (RFC 7350
//! §4). Datagrams from a client with a session go to that session; from anyone else,
//! a ClientHello goes through the stateless cookie exchange, and only a client that
//! echoes its cookie gets a session, within the caps on handshakes and connections.
//! Everything sent to clients leaves through this task, in batches.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::handshakes::Handshakes;
use super::hello::{self, Hello};
use super::session::{self, Outgoing, Session};
use crate::core::{FiveTuple, Transport};
use crate::net::batch::{BATCH, RecvBatch};
use crate::net::lifecycle::Lifecycle;
use crate::net::outbox::Outbox;
use crate::net::relay::MAX_DATAGRAM;
use crate::net::stream::{StreamConfig, StreamEvent, TLS_HANDSHAKE, worker_for};
use crate::net::tls::TlsAcceptorSource;

/// Datagrams of one client waiting for its session; more are dropped.
const SESSION_INBOX: usize = 64;

/// Datagrams for clients waiting to be sent; more are dropped.
const OUTGOING_QUEUE: usize = 4096;

/// A bound DTLS listener and the certificate it serves.
pub struct DtlsListener {
    pub socket: std::net::UdpSocket,
    pub source: TlsAcceptorSource,
}

/// Binds a DTLS listener's socket (a wildcard one learns each datagram's local
/// address, to answer from it).
pub fn bind(addr: SocketAddr, buffer: usize) -> std::io::Result<std::net::UdpSocket> {
    crate::net::socket::bind_udp(addr, buffer)
        .map_err(|e| std::io::Error::new(e.kind(), format!("UDP (DTLS) {addr}: {e}")))
}

/// What a listener hands sessions: the rules current at admission, the workers'
/// event queues (a session reports to the worker its client hashes to), and the
/// shared handshake count.
#[derive(Clone)]
pub struct Sessions {
    pub config: watch::Receiver<StreamConfig>,
    pub workers: Arc<[mpsc::Sender<StreamEvent>]>,
    pub handshakes: Handshakes,
}

/// Serves a DTLS listener until the server stops.
pub async fn serve(
    listener: DtlsListener,
    sessions: Sessions,
    mut lifecycle: watch::Receiver<Lifecycle>,
) {
    let Ok(socket) = UdpSocket::from_std(listener.socket) else {
        return;
    };
    let Ok(local) = socket.local_addr() else {
        return;
    };
    let mut state = Listening {
        local,
        source: listener.source,
        sessions,
        open: HashMap::new(),
        outbox: Outbox::default(),
    };
    let (out_tx, mut out_rx) = mpsc::channel(OUTGOING_QUEUE);
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel();
    let mut batch = RecvBatch::new(0, MAX_DATAGRAM);
    loop {
        tokio::select! {
            ready = socket.readable() => {
                if ready.is_err() {
                    return;
                }
                let n = batch.recv(&socket);
                for k in 0..n {
                    let destination = batch.destination(k);
                    if let Some((buf, len, client)) = batch.get(k) {
                        let from = Source { client, destination };
                        state.received(from, &buf[..len], &socket, &out_tx, &ended_tx);
                    }
                }
                if n == BATCH {
                    tokio::task::yield_now().await;
                }
            }
            Some(datagram) = out_rx.recv() => {
                state.send_later(datagram, &socket);
                while let Ok(datagram) = out_rx.try_recv() {
                    state.send_later(datagram, &socket);
                }
            }
            Some(client) = ended_rx.recv() => state.ended(client),
            changed = lifecycle.changed() => {
                if changed.is_err() || *lifecycle.borrow() == Lifecycle::Stopping {
                    return;
                }
            }
        }
        state.outbox.flush(std::slice::from_ref(&socket));
    }
}

/// Who sent a datagram, and to which local address (on a wildcard listener).
#[derive(Clone, Copy)]
struct Source {
    client: SocketAddr,
    destination: Option<IpAddr>,
}

/// A listener's state between datagrams.
struct Listening {
    local: SocketAddr,
    source: TlsAcceptorSource,
    sessions: Sessions,
    /// The inbox of each client's session.
    open: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    outbox: Outbox,
}

impl Listening {
    /// A datagram from `from`.
    fn received(
        &mut self,
        from: Source,
        datagram: &[u8],
        socket: &UdpSocket,
        out: &mpsc::Sender<Outgoing>,
        ended: &mpsc::UnboundedSender<SocketAddr>,
    ) {
        let Source {
            client,
            destination,
        } = from;
        if let Some(inbox) = self.open.get(&client) {
            match inbox.try_send(datagram.to_vec()) {
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.open.remove(&client);
                }
                // A session that cannot keep up loses datagrams, as a full socket would.
                Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => return,
            }
        }
        // A DTLS handshake record starts with the same content type as TLS's.
        if datagram.first() != Some(&TLS_HANDSHAKE) {
            return;
        }
        let Some(context) = self.source.dtls_context() else {
            return;
        };
        let (server, source) = crate::net::pktinfo::server_side(self.local, destination);
        let metrics = self.sessions.config.borrow().metrics.clone();
        match hello::admit(&context, client, datagram) {
            Hello::Ignored => {}
            Hello::Verify(reply) => {
                metrics.dtls_hello_verify.inc();
                for bytes in reply {
                    self.send_later(
                        Outgoing {
                            to: client,
                            source,
                            bytes,
                        },
                        socket,
                    );
                }
            }
            Hello::Admitted(stream) => {
                let config = self.sessions.config.borrow().clone();
                let Some(handshake) = self.sessions.handshakes.start(config.max_dtls_handshakes)
                else {
                    tracing::debug!(%client, "DTLS client refused: handshake limit");
                    metrics.dtls_refused("handshake_limit");
                    return;
                };
                let Some(slot) = config.limits.acquire(client.ip()) else {
                    tracing::debug!(%client, "DTLS client refused: connection limit");
                    metrics.dtls_refused("connection_limit");
                    return;
                };
                let (inbox_tx, inbox) = mpsc::channel(SESSION_INBOX);
                let tuple = FiveTuple {
                    client,
                    server,
                    transport: Transport::Dtls,
                };
                let session = Session {
                    tuple,
                    source,
                    stream,
                    inbox,
                    out: out.clone(),
                    admitted: Instant::now(),
                };
                let workers = &self.sessions.workers;
                let events = workers[worker_for(client, workers.len())].clone();
                let ended = ended.clone();
                tokio::spawn(async move {
                    session::run(session, config, handshake, slot, events).await;
                    let _ = ended.send(client);
                });
                self.open.insert(client, inbox_tx);
            }
        }
    }

    /// Forgets `client`'s session once it has ended (unless a new one took its place).
    fn ended(&mut self, client: SocketAddr) {
        if self.open.get(&client).is_some_and(mpsc::Sender::is_closed) {
            self.open.remove(&client);
        }
    }

    /// Holds `datagram` for the next send, sending what is held first when full.
    fn send_later(&mut self, datagram: Outgoing, socket: &UdpSocket) {
        let sockets = std::slice::from_ref(socket);
        (self.outbox).hold(sockets, 0, &datagram.bytes, datagram.to, datagram.source);
    }
}
