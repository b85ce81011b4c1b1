//! One allocation's connection to the server between phases: a UDP socket of its own
//! (its own 5-tuple) or an async TCP/TLS stream. Owns opening it and lending it to the
//! project's blocking [`TurnClient`] for requests (setup, refresh, release), taking it
//! back afterwards so only one descriptor per allocation stays open.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio_rustls::TlsConnector;

use super::bridge::{self, AsyncStream, BlockingStream};
use super::plan::Plan;
use crate::client::tls;
use crate::client::{ClientTransport, Transport, TurnClient};

/// How long a TCP connect plus TLS handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An allocation's connection while no data flows on it.
pub enum Conn {
    /// A blocking UDP socket connected to the server.
    Udp(UdpSocket),
    Stream {
        stream: Box<dyn AsyncStream>,
        /// Bytes read from the stream but not yet framed.
        pending: Vec<u8>,
    },
}

/// Opens connections and lends them to a [`TurnClient`] with the run's credentials.
pub struct Connector {
    server: SocketAddr,
    /// Set for TLS: how to wrap a TCP connection.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    transport: Transport,
    handle: Handle,
    username: String,
    password: String,
}

impl Connector {
    /// `handle` must belong to a multi-thread runtime: streams are driven by it while
    /// the setup threads wait.
    pub fn new(plan: &Plan, handle: Handle) -> Result<Self, String> {
        let tls = match &plan.tls {
            Some(trust) => Some((
                TlsConnector::from(tls::client_config(trust)?),
                ServerName::from(plan.server.ip()),
            )),
            None => None,
        };
        Ok(Self {
            server: plan.server,
            tls,
            transport: plan.transport,
            handle,
            username: plan.username.clone(),
            password: plan.password.clone(),
        })
    }

    /// A new connection to the server: a fresh UDP socket, or a TCP (TLS) connection.
    pub fn connect(&self) -> io::Result<Conn> {
        if self.transport == Transport::Udp {
            let any: SocketAddr = if self.server.is_ipv6() {
                (Ipv6Addr::UNSPECIFIED, 0).into()
            } else {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            };
            let socket = UdpSocket::bind(any)?;
            socket.connect(self.server)?;
            return Ok(Conn::Udp(socket));
        }
        let connect = async {
            let tcp = TcpStream::connect(self.server).await?;
            tcp.set_nodelay(true)?;
            let stream: Box<dyn AsyncStream> = match &self.tls {
                Some((connector, name)) => Box::new(connector.connect(name.clone(), tcp).await?),
                None => Box::new(tcp),
            };
            Ok(Conn::Stream {
                stream,
                pending: Vec::new(),
            })
        };
        self.handle
            // The timer is made inside: it needs the runtime's context.
            .block_on(async { tokio::time::timeout(CONNECT_TIMEOUT, connect).await })
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
    }

    /// Runs `requests` with a [`TurnClient`] on `conn`, then takes the connection back.
    /// An error means the connection was lost on the way.
    pub fn with_client<R>(
        &self,
        conn: Conn,
        requests: impl FnOnce(&mut TurnClient) -> R,
    ) -> io::Result<(Conn, R)> {
        let (user, pass) = (self.username.as_str(), self.password.as_str());
        match conn {
            Conn::Udp(socket) => {
                let mut client = TurnClient::with_socket(socket, self.server, user, pass)?;
                let result = requests(&mut client);
                match client.into_transport() {
                    ClientTransport::Udp { socket, .. } => Ok((Conn::Udp(socket), result)),
                    ClientTransport::Stream { .. } => Err(io::ErrorKind::Unsupported.into()),
                }
            }
            Conn::Stream { stream, pending } => {
                // The client wants the TCP socket itself for deadlines and addresses.
                let tcp = std::net::TcpStream::from(stream.tcp().as_fd().try_clone_to_owned()?);
                let slot: bridge::Slot = Arc::new(Mutex::new(Some(stream)));
                let bridged = BlockingStream::new(slot.clone(), self.handle.clone());
                let transport = ClientTransport::Stream {
                    stream: Box::new(bridged),
                    tcp,
                    pending,
                };
                let mut client = TurnClient::with_transport(transport, self.server, user, pass);
                let result = requests(&mut client);
                let ClientTransport::Stream { pending, .. } = client.into_transport() else {
                    return Err(io::ErrorKind::Unsupported.into());
                };
                let stream = bridge::lock(&slot)
                    .take()
                    .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?;
                Ok((Conn::Stream { stream, pending }, result))
            }
        }
    }
}
