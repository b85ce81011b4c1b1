//! An allocation's connection during the data phase, driven by tokio: sends frames and
//! receives the probes echoed back in ChannelData, skipping anything else (a STUN
//! message, a frame too short to hold a probe).

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

use super::bridge::AsyncStream;
use super::conn::Conn;
use super::probe::Probe;
use crate::proto::ChannelHeader;
use crate::proto::framing::{self, Frame};

/// Largest frame accepted from the server on a stream.
const MAX_FRAME: usize = 65_552;
/// Bytes a stream read asks for at least.
const READ_CHUNK: usize = 4096;

pub enum Link {
    Udp {
        socket: UdpSocket,
        /// Receive buffer: room for one of our frames (longer datagrams are not ours).
        buf: Vec<u8>,
    },
    Stream {
        stream: Box<dyn AsyncStream>,
        /// Bytes read but not yet framed.
        pending: Vec<u8>,
    },
}

impl Link {
    /// Hands `conn` to tokio (call within the runtime); `frame_len` is the size of the
    /// frames that will come back.
    pub fn from_conn(conn: Conn, frame_len: usize) -> io::Result<Self> {
        Ok(match conn {
            Conn::Udp(socket) => {
                socket.set_nonblocking(true)?;
                Self::Udp {
                    socket: UdpSocket::from_std(socket)?,
                    buf: vec![0; frame_len + 1],
                }
            }
            Conn::Stream { stream, pending } => Self::Stream { stream, pending },
        })
    }

    /// Takes the connection back from tokio for blocking requests.
    pub fn into_conn(self) -> io::Result<Conn> {
        Ok(match self {
            Self::Udp { socket, .. } => {
                let socket = socket.into_std()?;
                socket.set_nonblocking(false)?;
                Conn::Udp(socket)
            }
            Self::Stream { stream, pending } => Conn::Stream { stream, pending },
        })
    }

    pub async fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        match self {
            Self::Udp { socket, .. } => socket.send(frame).await.map(drop),
            Self::Stream { stream, .. } => {
                stream.write_all(frame).await?;
                stream.flush().await
            }
        }
    }

    /// The next message from the server: `Some` probe for ChannelData carrying one,
    /// `None` for anything else. Cancel-safe: nothing is lost if dropped while waiting.
    pub async fn recv(&mut self) -> io::Result<Option<Probe>> {
        match self {
            Self::Udp { socket, buf } => {
                let len = socket.recv(buf).await?;
                Ok(probe_in(&buf[..len]))
            }
            Self::Stream { stream, pending } => loop {
                let frame = framing::check(pending, MAX_FRAME)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                match frame {
                    Frame::ChannelData { len, padded } => {
                        let probe = probe_in(&pending[..len]);
                        pending.drain(..padded);
                        return Ok(probe);
                    }
                    Frame::Stun(len) => {
                        pending.drain(..len);
                        return Ok(None);
                    }
                    Frame::Incomplete => {
                        pending.reserve(READ_CHUNK);
                        if stream.read_buf(pending).await? == 0 {
                            return Err(io::ErrorKind::UnexpectedEof.into());
                        }
                    }
                }
            },
        }
    }
}

fn probe_in(message: &[u8]) -> Option<Probe> {
    let header = ChannelHeader::parse(message)?;
    Probe::read(header.payload(message))
}
