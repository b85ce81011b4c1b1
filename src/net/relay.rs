//! Relay sockets: one UDP socket per allocation, each read by a small task.
//!
//! For a client on UDP the reader forwards peer datagrams itself, following the
//! allocation's published [`PeerRoute`]: one `recv`, an atomic load, one `send`, with
//! the ChannelData header written into headroom in front of the data. No lock, no
//! queue, no allocation. For TCP/TLS clients it hands datagrams to the worker, which
//! owns the connections.

use arc_swap::ArcSwap;
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::batch::{BATCH as BATCH_SIZE, RecvBatch};
use super::socket::{bind_udp, set_dont_fragment};
use super::udp::send_now_from;
use crate::core::{PEER_HEADROOM, PeerRoute};
use crate::metrics::RelayCounters;

/// Largest UDP payload; buffers are sized for it so nothing is ever truncated.
pub const MAX_DATAGRAM: usize = 65_535;

/// Batches read from one relay socket per readiness event before yielding, so one
/// busy socket cannot starve the others sharing the thread.
const DRAIN_ROUNDS: usize = 4;

thread_local! {
    /// One set of receive buffers per worker thread, shared by every relay socket it
    /// reads: an idle allocation holds no buffer.
    static BATCH: std::cell::RefCell<RecvBatch> =
        std::cell::RefCell::new(RecvBatch::new(PEER_HEADROOM, MAX_DATAGRAM));
    /// The relay counters, per worker thread rather than per reader: a field in each
    /// reader task pushed the task into a larger allocation (about 130 bytes more per
    /// allocation).
    static COUNTERS: std::cell::RefCell<Option<RelayCounters>> =
        const { std::cell::RefCell::new(None) };
    /// Draws Data indications' transaction ids, seeded once per worker thread.
    static RNG: std::cell::RefCell<StdRng> = std::cell::RefCell::new(StdRng::from_os_rng());
}

/// Gives this (worker) thread's relay readers the counters to update.
pub fn set_thread_counters(counters: RelayCounters) {
    COUNTERS.with_borrow_mut(|c| *c = Some(counters));
}

fn count_to_client(bytes: usize) {
    COUNTERS.with_borrow(|c| {
        if let Some(c) = c {
            c.to_client(bytes);
        }
    });
}

/// A datagram for a TCP/TLS client, handed to the worker that owns its connection.
/// Invariant: the data is at `buf[PEER_HEADROOM..]`; the headroom is free for a
/// ChannelData header.
pub struct PeerDatagram {
    pub relay: SocketAddr,
    pub peer: SocketAddr,
    pub buf: Vec<u8>,
}

/// A bound relay socket, as the worker holds it.
pub struct RelaySocket {
    pub socket: Arc<UdpSocket>,
    /// The forwarding snapshot the reader follows.
    pub route: Arc<ArcSwap<PeerRoute>>,
    reader: JoinHandle<()>,
}

/// How a relay socket's reader delivers to the client.
pub enum Delivery {
    /// Straight to a UDP client, through the worker's listening socket, from `source`
    /// when that socket is a wildcard one (the address the client sent to).
    Direct {
        listener: Arc<UdpSocket>,
        source: Option<IpAddr>,
    },
    /// Through the worker (TCP/TLS clients), naming the relay address.
    Worker(mpsc::Sender<PeerDatagram>, SocketAddr),
}

impl RelaySocket {
    /// Binds `addr` and starts its reader on the current (worker's) runtime.
    pub fn bind(
        addr: SocketAddr,
        route: PeerRoute,
        dont_fragment: bool,
        buffer: usize,
        delivery: Delivery,
    ) -> std::io::Result<Self> {
        let socket = bind_udp(addr, buffer)?;
        if dont_fragment {
            set_dont_fragment(&socket, addr.is_ipv6())?;
        }
        let socket = Arc::new(UdpSocket::from_std(socket)?);
        let route = Arc::new(ArcSwap::from_pointee(route));
        let reader = Reader {
            socket: socket.clone(),
            route: route.clone(),
            delivery,
        };
        Ok(Self {
            socket,
            route,
            reader: tokio::spawn(reader.run()),
        })
    }

    /// Stops the reader. The socket closes once the cancelled task is dropped, which
    /// [`Closing`] watches for before its port may be bound again.
    pub fn close(self) -> JoinHandle<()> {
        self.reader.abort();
        self.reader
    }
}

/// Relay sockets being closed, until their reader is gone and so the socket with it.
#[derive(Default)]
pub struct Closing(Vec<(SocketAddr, JoinHandle<()>)>);

impl Closing {
    pub fn push(&mut self, addr: SocketAddr, reader: JoinHandle<()>) {
        self.0.push((addr, reader));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Addresses whose socket is closed now; they are forgotten here.
    pub fn take_closed(&mut self) -> Vec<SocketAddr> {
        let mut closed = Vec::new();
        self.0.retain(|(addr, reader)| {
            let done = reader.is_finished();
            if done {
                closed.push(*addr);
            }
            !done
        });
        closed
    }
}

/// The task reading one relay socket.
struct Reader {
    socket: Arc<UdpSocket>,
    route: Arc<ArcSwap<PeerRoute>>,
    delivery: Delivery,
}

impl Reader {
    /// Reads until cancelled. The task holds no buffer while it waits: on readiness it
    /// drains the socket into its thread's buffers, so an idle allocation costs a few
    /// hundred bytes, not 64 KiB.
    async fn run(self) {
        while self.socket.readable().await.is_ok() {
            self.drain();
        }
    }

    /// Forwards the datagrams waiting on the socket, a batch per system call.
    fn drain(&self) {
        BATCH.with_borrow_mut(|batch| {
            for _ in 0..DRAIN_ROUNDS {
                let n = batch.recv(&self.socket);
                for i in 0..n {
                    if let Some((buf, len, peer)) = batch.get(i) {
                        self.deliver(buf, len, peer);
                    }
                }
                if n < BATCH_SIZE {
                    return;
                }
            }
        });
    }

    /// Forwards the datagram at `buf[PEER_HEADROOM..][..len]` from `peer`.
    fn deliver(&self, buf: &mut [u8], len: usize, peer: SocketAddr) {
        let (listener, source) = match &self.delivery {
            Delivery::Direct { listener, source } => (listener, *source),
            Delivery::Worker(tx, relay) => {
                let buf = buf[..PEER_HEADROOM + len].to_vec();
                let relay = *relay;
                // A full queue drops the datagram, as a congested link would.
                let _ = tx.try_send(PeerDatagram { relay, peer, buf });
                return;
            }
        };
        let route = self.route.load();
        let framed = RNG.with_borrow_mut(|rng| route.frame(peer, Instant::now(), buf, len, rng));
        if let Some(framed) = framed {
            send_now_from(listener, framed.bytes(), route.client.client, source);
            count_to_client(len);
        }
    }
}
