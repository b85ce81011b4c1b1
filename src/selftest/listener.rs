//! The self-test listener as axum sees it: connections accepted, counted against
//! `selftest.max_connections` and [`MAX_CONNECTIONS_PER_IP`], (off loopback) through a
//! TLS handshake with its own deadline, and closed once they send nothing for
//! `selftest.idle_timeout`, so a client that connects and says nothing holds neither a
//! slot nor the accept loop for long.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::{Instant, Sleep};

use crate::metrics::Metrics;
use crate::net::lifecycle::Lifecycle;
use crate::net::tls::TlsAcceptorSource;

/// Self-test connections one client address may hold open at once (an IPv6 client
/// counts by its /64, what one host usually has). Two call-room members, the pages and
/// their API requests need a handful; more is someone holding slots.
pub const MAX_CONNECTIONS_PER_IP: usize = 16;

/// A byte stream axum can serve: plain TCP or TLS over it.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// An accepted connection; it gives its slot back when dropped. Reading from it fails
/// with `TimedOut` once the client has sent nothing for the idle timeout, whatever
/// runs over it (HTTP requests, keep-alive, an upgraded WebSocket), so the connection
/// ends and its slot is free again.
pub struct Connection {
    /// Dropped first (fields drop in order), so the slot is free by the time the
    /// client sees the connection close.
    slot: Slot,
    stream: Box<dyn Stream>,
    idle_timeout: Duration,
    /// When the connection counts as idle; pushed back by every byte received.
    idle: Pin<Box<Sleep>>,
    /// Counts the connection's end by idleness.
    refused: Refused,
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let deadline = Instant::now() + this.idle_timeout;
                    this.idle.as_mut().reset(deadline);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.idle.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    (this.refused)(&this.slot.metrics, "idle");
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "self-test connection idle",
                    )))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Open connections by client address (see [`client_key`]).
type PerClient = Mutex<HashMap<IpAddr, usize>>;

/// A connection's place: one of `max_connections` and one of its client's
/// [`MAX_CONNECTIONS_PER_IP`], both given back on drop.
struct Slot {
    _global: OwnedSemaphorePermit,
    per_client: Arc<PerClient>,
    client: IpAddr,
    metrics: Arc<Metrics>,
}

impl Slot {
    /// A slot for a connection from `client`, or why there is none.
    fn take(
        global: &Arc<Semaphore>,
        per_client: &Arc<PerClient>,
        client: IpAddr,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, &'static str> {
        let mut open = per_client.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(client).or_insert(0);
        if *count >= MAX_CONNECTIONS_PER_IP {
            return Err("per_ip");
        }
        let Ok(permit) = global.clone().try_acquire_owned() else {
            if *count == 0 {
                open.remove(&client);
            }
            return Err("connections");
        };
        *count += 1;
        Ok(Self {
            _global: permit,
            per_client: per_client.clone(),
            client,
            metrics: metrics.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .per_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

/// The address a client is counted by: IPv4 as is (also when mapped into IPv6), IPv6
/// by its /64, since one host usually holds a whole /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
    }
}

/// Connections ready for HTTP, handed over by the accept task.
pub struct SelftestListener {
    ready: mpsc::Receiver<(Connection, SocketAddr)>,
    local: SocketAddr,
}

/// How long a failed `accept` (e.g. out of file descriptors) waits before the next,
/// so the error cannot spin a core.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Counts a connection refused or closed by a limit, by reason (`per_ip`,
/// `connections`, `idle`), in the metric of whoever serves on the listener.
pub type Refused = fn(&Metrics, &'static str);

/// The listener's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub refused: Refused,
}

impl SelftestListener {
    /// Serves `app` on this listener's connections until the server stops; `what`
    /// names the listener in the log line if serving fails.
    pub fn serve(
        self,
        app: axum::Router,
        mut lifecycle: watch::Receiver<Lifecycle>,
        what: &'static str,
    ) {
        let stopped = async move {
            while lifecycle.changed().await.is_ok() {
                if *lifecycle.borrow() == Lifecycle::Stopping {
                    return;
                }
            }
        };
        tokio::spawn(async move {
            if let Err(e) = axum::serve(self, app).with_graceful_shutdown(stopped).await {
                tracing::error!("{what} listener failed: {e}");
            }
        });
    }

    /// Starts accepting on `tcp`; with `tls`, each connection must finish its TLS
    /// handshake within `handshake_timeout` before it reaches HTTP.
    pub fn start(
        tcp: TcpListener,
        tls: Option<TlsAcceptorSource>,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(16);
        let global = Arc::new(Semaphore::new(limits.max_connections));
        let per_client = Arc::new(PerClient::default());
        tokio::spawn(async move {
            loop {
                let (socket, peer) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::debug!("self-test accept failed: {e}");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                // Over a limit: the connection is closed at once.
                let slot = match Slot::take(&global, &per_client, client_key(peer.ip()), &metrics) {
                    Ok(slot) => slot,
                    Err(reason) => {
                        (limits.refused)(&metrics, reason);
                        continue;
                    }
                };
                let handed_over = tx.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let stream: Box<dyn Stream> = match tls {
                        None => Box::new(socket),
                        Some(tls) => {
                            let handshake = tls.https_acceptor().accept(socket);
                            match tokio::time::timeout(limits.handshake_timeout, handshake).await {
                                Ok(Ok(stream)) => Box::new(stream),
                                _ => return,
                            }
                        }
                    };
                    let connection = Connection {
                        slot,
                        stream,
                        idle_timeout: limits.idle_timeout,
                        idle: Box::pin(tokio::time::sleep(limits.idle_timeout)),
                        refused: limits.refused,
                    };
                    let _ = handed_over.send((connection, peer)).await;
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(Self { ready, local })
    }
}

impl axum::serve::Listener for SelftestListener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept task only ends when this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_counted_by_ipv4_address_and_ipv6_slash_64() {
        let key = |s: &str| client_key(s.parse().unwrap());
        assert_eq!(key("192.0.2.7"), key("::ffff:192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_eq!(
            key("2001:db8:1:2::1"),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }

    #[test]
    fn a_client_gets_its_share_of_the_slots_and_them_back() {
        let metrics = Arc::new(Metrics::new());
        let global = Arc::new(Semaphore::new(MAX_CONNECTIONS_PER_IP + 1));
        let per_client = Arc::new(PerClient::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let mut held: Vec<Slot> = (0..MAX_CONNECTIONS_PER_IP)
            .map(|_| Slot::take(&global, &per_client, a, &metrics).unwrap())
            .collect();
        assert_eq!(
            Slot::take(&global, &per_client, a, &metrics).err(),
            Some("per_ip")
        );
        let last = Slot::take(&global, &per_client, b, &metrics).unwrap();
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        assert_eq!(
            Slot::take(&global, &per_client, c, &metrics).err(),
            Some("connections")
        );
        held.pop();
        held.push(Slot::take(&global, &per_client, a, &metrics).unwrap());
        drop(held);
        drop(last);
        assert!(per_client.lock().unwrap().is_empty());
        assert_eq!(global.available_permits(), MAX_CONNECTIONS_PER_IP + 1);
    }
}
