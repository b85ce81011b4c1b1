//! A blocking `Read`/`Write` view of an async TCP/TLS stream, so the project's blocking
//! [`TurnClient`](crate::client::TurnClient) can do the setup requests on a stream the
//! data phase later drives with tokio. Used from plain threads only (never from a
//! runtime worker), each call waits on the runtime with [`Handle::block_on`].
//!
//! The client bounds its reads with `set_read_timeout` on the TCP socket; the bridge
//! reads that socket option back and waits no longer, so the client's deadlines hold.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Handle;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A byte stream to the server that tokio drives: plain TCP or TLS over TCP.
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send {
    /// The TCP socket under the stream.
    fn tcp(&self) -> &TcpStream;
}

impl AsyncStream for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl AsyncStream for tokio_rustls::client::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// How long a read waits when the client set no read timeout.
const DEFAULT_READ_WAIT: Duration = Duration::from_secs(5);
/// How long a write or flush may take.
const WRITE_WAIT: Duration = Duration::from_secs(5);

/// Where the stream lives while the client borrows it; taken back after the requests.
pub type Slot = Arc<Mutex<Option<Box<dyn AsyncStream>>>>;

/// Locks a slot, ignoring poisoning (the stream is still usable or will fail on use).
pub fn lock(slot: &Slot) -> MutexGuard<'_, Option<Box<dyn AsyncStream>>> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

pub struct BlockingStream {
    slot: Slot,
    handle: Handle,
}

impl BlockingStream {
    pub fn new(slot: Slot, handle: Handle) -> Self {
        Self { slot, handle }
    }

    /// Runs `op` on the stream, bounded by `wait`.
    fn run<T>(
        &mut self,
        wait: impl FnOnce(&dyn AsyncStream) -> io::Result<Duration>,
        op: impl AsyncFnOnce(&mut dyn AsyncStream) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut guard = lock(&self.slot);
        let stream = guard
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?;
        let wait = wait(stream.as_ref())?;
        self.handle
            // The timer is made inside: it needs the runtime's context.
            .block_on(async { tokio::time::timeout(wait, op(stream.as_mut())).await })
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
    }
}

impl Read for BlockingStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.run(
            |stream| {
                let timeout = socket2::SockRef::from(stream.tcp()).read_timeout()?;
                Ok(timeout.unwrap_or(DEFAULT_READ_WAIT))
            },
            async |stream| stream.read(buf).await,
        )
    }
}

impl Write for BlockingStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.run(|_| Ok(WRITE_WAIT), async |stream| stream.write(buf).await)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.run(|_| Ok(WRITE_WAIT), async |stream| stream.flush().await)
    }
}
