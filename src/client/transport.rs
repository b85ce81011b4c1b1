//! How the client reaches the server: a UDP socket, or a TCP/TLS byte stream on which
//! messages are framed (RFC 8656 §12.5). Blocking I/O with deadlines: this is for
//! tests and command-line tools, not for the server.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::proto::framing::{self, Frame};

/// Largest frame the client accepts from a server.
const MAX_FRAME: usize = 65_552;

/// A blocking byte stream (plain TCP or TLS over TCP).
pub trait ByteStream: Read + Write + Send {}
impl<T: Read + Write + Send> ByteStream for T {}

pub enum ClientTransport {
    Udp {
        socket: UdpSocket,
        server: SocketAddr,
    },
    Stream {
        stream: Box<dyn ByteStream>,
        /// The TCP socket under the stream, for deadlines and addresses.
        tcp: TcpStream,
        /// Bytes read but not yet framed.
        pending: Vec<u8>,
    },
}

impl ClientTransport {
    pub fn udp(socket: UdpSocket, server: SocketAddr) -> Self {
        Self::Udp { socket, server }
    }

    pub fn tcp(server: SocketAddr, timeout: Duration) -> io::Result<Self> {
        Self::tcp_over(TcpStream::connect_timeout(&server, timeout)?)
    }

    /// Plain TCP over a connection made by the caller (a chosen source address, a
    /// small receive buffer).
    pub fn tcp_over(tcp: TcpStream) -> io::Result<Self> {
        tcp.set_nodelay(true)?;
        Ok(Self::Stream {
            stream: Box::new(tcp.try_clone()?),
            tcp,
            pending: Vec::new(),
        })
    }

    /// TLS to `server`, verifying its certificate against `roots` for `server_name`,
    /// offering ALPN `stun.turn` (RFC 7443).
    pub fn tls(
        server: SocketAddr,
        server_name: &str,
        roots: rustls::RootCertStore,
        timeout: Duration,
    ) -> io::Result<Self> {
        Self::tls_with_config(server, server_name, tls_config(roots)?, timeout)
    }

    /// TLS to `server` with a ready client config (its trust and ALPN included).
    /// The handshake completes here, so certificate problems surface at connect time.
    pub fn tls_with_config(
        server: SocketAddr,
        server_name: &str,
        config: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> io::Result<Self> {
        let tcp = TcpStream::connect_timeout(&server, timeout)?;
        Self::tls_over(tcp, server_name, config, timeout)
    }

    /// TLS over a TCP connection made by the caller (say, with socket options that
    /// must be set before connecting); the handshake completes here.
    pub fn tls_over(
        tcp: TcpStream,
        server_name: &str,
        config: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> io::Result<Self> {
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))?;
        let mut stream = rustls::StreamOwned::new(conn, tcp.try_clone()?);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(Self::Stream {
            stream: Box::new(stream),
            tcp,
            pending: Vec::new(),
        })
    }

    pub fn is_stream(&self) -> bool {
        matches!(self, Self::Stream { .. })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Self::Udp { socket, .. } => socket.local_addr(),
            Self::Stream { tcp, .. } => tcp.local_addr(),
        }
    }

    /// Sends one message (or, on a stream, any bytes: tests split and join frames).
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Self::Udp { socket, server } => socket.send_to(bytes, *server).map(|_| ()),
            Self::Stream { stream, .. } => {
                stream.write_all(bytes)?;
                stream.flush()
            }
        }
    }

    /// The next datagram or frame within `timeout`; `None` on timeout. On a stream,
    /// the end of the connection is an `UnexpectedEof` error.
    pub fn recv(&mut self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        let deadline = Instant::now() + timeout;
        match self {
            Self::Udp { socket, server } => loop {
                let mut buf = vec![0u8; 65_536];
                let Some(left) = remaining(deadline) else {
                    return Ok(None);
                };
                socket.set_read_timeout(Some(left))?;
                match socket.recv_from(&mut buf) {
                    Ok((len, from)) if from == *server => {
                        buf.truncate(len);
                        return Ok(Some(buf));
                    }
                    Ok(_) => {}
                    Err(e) if is_timeout(&e) => return Ok(None),
                    Err(e) => return Err(e),
                }
            },
            Self::Stream {
                stream,
                tcp,
                pending,
            } => loop {
                let frame = framing::check(pending, MAX_FRAME)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                match frame {
                    Frame::Stun(len) => return Ok(Some(pending.drain(..len).collect())),
                    Frame::ChannelData { len, padded } => {
                        let frame = pending[..len].to_vec();
                        pending.drain(..padded);
                        return Ok(Some(frame));
                    }
                    Frame::Incomplete => {}
                }
                let Some(left) = remaining(deadline) else {
                    return Ok(None);
                };
                tcp.set_read_timeout(Some(left))?;
                let mut buf = [0u8; 16_384];
                match stream.read(&mut buf) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                    Err(e) if is_timeout(&e) => return Ok(None),
                    Err(e) => return Err(e),
                }
            },
        }
    }
}

/// The client config of [`ClientTransport::tls`]: TLS 1.2 and 1.3, `roots` trusted,
/// ALPN `stun.turn` offered (RFC 7443).
pub fn tls_config(roots: rustls::RootCertStore) -> io::Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"stun.turn".to_vec()];
    Ok(Arc::new(config))
}

fn remaining(deadline: Instant) -> Option<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    (!left.is_zero()).then_some(left)
}

/// Receive errors a UDP echo or client just rides out: timeouts, interruptions and
/// ICMP feedback from an earlier send.
pub fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
            | io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
    )
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
