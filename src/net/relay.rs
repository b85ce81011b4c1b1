//! Relay sockets: one UDP socket per allocation, read by a small task that hands
//! datagrams to the worker.

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::socket::{bind_udp, set_dont_fragment};
use crate::core::PEER_HEADROOM;

/// Largest UDP payload; buffers are sized for it so nothing is ever truncated.
pub const MAX_DATAGRAM: usize = 65_535;

/// What a relay socket's reader tells the worker.
pub enum RelayEvent {
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

/// A bound relay socket, as the worker holds it.
pub struct RelaySocket {
    pub socket: Arc<UdpSocket>,
    /// Dropping it tells the reader to close the socket.
    _close: oneshot::Sender<()>,
}

impl RelaySocket {
    /// Binds `addr` and starts its reader.
    pub fn bind(
        addr: SocketAddr,
        dont_fragment: bool,
        buffer: usize,
        events: mpsc::Sender<RelayEvent>,
    ) -> std::io::Result<Self> {
        let socket = bind_udp(addr, buffer)?;
        if dont_fragment {
            set_dont_fragment(&socket, addr.is_ipv6())?;
        }
        let socket = Arc::new(UdpSocket::from_std(socket)?);
        let (close_tx, close_rx) = oneshot::channel();
        tokio::spawn(read_relay(socket.clone(), addr, events, close_rx));
        Ok(Self {
            socket,
            _close: close_tx,
        })
    }
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
