//! The self-test listener as axum sees it: connections accepted, counted against
//! `selftest.max_connections`, and (off loopback) through a TLS handshake with its own
//! deadline, so a client that connects and says nothing holds neither a handshake slot
//! nor the accept loop.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::net::tls::TlsAcceptorSource;

/// A byte stream axum can serve: plain TCP or TLS over it.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// An accepted connection; it gives its slot back when dropped.
pub struct Connection {
    stream: Box<dyn Stream>,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
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

/// Connections ready for HTTP, handed over by the accept task.
pub struct SelftestListener {
    ready: mpsc::Receiver<(Connection, SocketAddr)>,
    local: SocketAddr,
}

/// How long a failed `accept` (e.g. out of file descriptors) waits before the next,
/// so the error cannot spin a core.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

impl SelftestListener {
    /// Starts accepting on `tcp`; with `tls`, each connection must finish its TLS
    /// handshake within `handshake_timeout` before it reaches HTTP.
    pub fn start(
        tcp: TcpListener,
        tls: Option<TlsAcceptorSource>,
        max_connections: usize,
        handshake_timeout: Duration,
    ) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(16);
        let slots = Arc::new(Semaphore::new(max_connections));
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
                // Over the limit: the connection is closed at once.
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    continue;
                };
                let handed_over = tx.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let stream: Box<dyn Stream> = match tls {
                        None => Box::new(socket),
                        Some(tls) => {
                            let handshake = tls.https_acceptor().accept(socket);
                            match tokio::time::timeout(handshake_timeout, handshake).await {
                                Ok(Ok(stream)) => Box::new(stream),
                                _ => return,
                            }
                        }
                    };
                    let connection = Connection {
                        stream,
                        _slot: slot,
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
