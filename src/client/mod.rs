//! A small blocking TURN client over UDP, TCP or TLS: what the integration tests (and
//! the turnutils-style tools) use to talk to a server like a real client would.
//!
//! It handles the long-term credential dance (401 → REALM/NONCE → retry, 438 → new
//! nonce → retry) and lets a caller put any attribute anywhere, including where a
//! well-behaved client never would, to test a server's defences.

pub mod args;
pub mod echo;
pub mod tls;
pub mod transport;

pub use crate::core::Transport;
pub use transport::ClientTransport;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use stun::agent::TransactionId;
use stun::attributes::*;
use stun::error_code::ErrorCodeAttribute;
use stun::message::{CLASS_ERROR_RESPONSE, CLASS_REQUEST, Getter, MessageType, Method};
use stun::message::{CLASS_INDICATION, METHOD_ALLOCATE, METHOD_CHANNEL_BIND};
use stun::message::{METHOD_CREATE_PERMISSION, METHOD_DATA, METHOD_REFRESH, METHOD_SEND};

use crate::auth::LongTermKey;
use crate::proto::attrs::{decode_address, decode_xor_address};
use crate::proto::{ChannelHeader, Kind, Request};

/// An attribute to put in a request.
#[derive(Debug, Clone)]
pub enum Attr {
    Raw(AttrType, Vec<u8>),
    /// XOR-PEER-ADDRESS, masked with the request's transaction id.
    Peer(SocketAddr),
}

impl Attr {
    pub fn lifetime(secs: u32) -> Self {
        Self::Raw(ATTR_LIFETIME, secs.to_be_bytes().to_vec())
    }

    pub fn udp_transport() -> Self {
        Self::Raw(ATTR_REQUESTED_TRANSPORT, vec![17, 0, 0, 0])
    }

    pub fn channel(number: u16) -> Self {
        let [a, b] = number.to_be_bytes();
        Self::Raw(ATTR_CHANNEL_NUMBER, vec![a, b, 0, 0])
    }

    /// REQUESTED-ADDRESS-FAMILY: 1 for IPv4, 2 for IPv6.
    pub fn family(code: u8) -> Self {
        Self::Raw(ATTR_REQUESTED_ADDRESS_FAMILY, vec![code, 0, 0, 0])
    }
}

/// How a request is put on the wire.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    pub attrs: Vec<Attr>,
    /// Attributes placed after MESSAGE-INTEGRITY (a server must ignore them).
    pub after_integrity: Vec<Attr>,
    pub fingerprint: bool,
    /// Sign with the client's credentials (after the first 401 taught realm and nonce).
    pub sign: bool,
}

/// A message the client received.
#[derive(Debug)]
pub enum Incoming {
    /// A STUN response or indication.
    Stun(Request),
    ChannelData {
        number: u16,
        data: Vec<u8>,
    },
}

/// The parts of a response tests look at.
#[derive(Debug)]
pub struct Reply {
    pub msg: Request,
    /// ERROR-CODE of an error response.
    pub code: Option<u16>,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        self.code.is_none()
    }

    pub fn xor_address(&self, t: AttrType) -> Option<SocketAddr> {
        decode_xor_address(self.msg.attr(t)?, &self.msg.transaction_id())
    }

    /// ALTERNATE-SERVER of a 300 (Try Alternate).
    pub fn alternate_server(&self) -> Option<SocketAddr> {
        decode_address(self.msg.attr(stun::attributes::ATTR_ALTERNATE_SERVER)?)
    }

    pub fn lifetime(&self) -> Option<u32> {
        let v: [u8; 4] = self.msg.attr(ATTR_LIFETIME)?.try_into().ok()?;
        Some(u32::from_be_bytes(v))
    }
}

pub struct TurnClient {
    pub transport: ClientTransport,
    pub server: SocketAddr,
    username: String,
    password: String,
    realm: Option<String>,
    nonce: Option<String>,
    pub timeout: Duration,
}

impl TurnClient {
    /// A client on an ephemeral port of the loopback address of `server`'s family.
    pub fn new(server: SocketAddr, username: &str, password: &str) -> io::Result<Self> {
        let local: SocketAddr = if server.is_ipv6() {
            "[::1]:0".parse().expect("literal address")
        } else {
            "127.0.0.1:0".parse().expect("literal address")
        };
        Self::with_socket(UdpSocket::bind(local)?, server, username, password)
    }

    pub fn with_socket(
        socket: UdpSocket,
        server: SocketAddr,
        username: &str,
        password: &str,
    ) -> io::Result<Self> {
        let transport = ClientTransport::udp(socket, server);
        Ok(Self::with_transport(transport, server, username, password))
    }

    /// A client over a TCP connection to `server`.
    pub fn connect_tcp(server: SocketAddr, username: &str, password: &str) -> io::Result<Self> {
        let transport = ClientTransport::tcp(server, Duration::from_secs(5))?;
        Ok(Self::with_transport(transport, server, username, password))
    }

    /// A client over TLS to `server`, trusting `roots` for `server_name`.
    pub fn connect_tls(
        server: SocketAddr,
        server_name: &str,
        roots: rustls::RootCertStore,
        username: &str,
        password: &str,
    ) -> io::Result<Self> {
        let transport = ClientTransport::tls(server, server_name, roots, Duration::from_secs(5))?;
        Ok(Self::with_transport(transport, server, username, password))
    }

    pub fn with_transport(
        transport: ClientTransport,
        server: SocketAddr,
        username: &str,
        password: &str,
    ) -> Self {
        Self {
            transport,
            server,
            username: username.to_string(),
            password: password.to_string(),
            realm: None,
            nonce: None,
            timeout: Duration::from_secs(2),
        }
    }

    /// Gives up the client, keeping its socket or stream (e.g. to drive raw ChannelData
    /// on it once an allocation is set up).
    pub fn into_transport(self) -> ClientTransport {
        self.transport
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.transport
            .local_addr()
            .expect("bound socket has an address")
    }

    pub fn set_credentials(&mut self, username: &str, password: &str) {
        self.username = username.to_string();
        self.password = password.to_string();
    }

    pub fn realm(&self) -> Option<&str> {
        self.realm.as_deref()
    }

    pub fn nonce(&self) -> Option<&str> {
        self.nonce.as_deref()
    }

    /// Takes the realm and nonce another client was challenged with (a nonce from one
    /// node of a fleet, used on another).
    pub fn adopt_challenge(&mut self, other: &TurnClient) {
        self.realm.clone_from(&other.realm);
        self.nonce.clone_from(&other.nonce);
    }

    /// Overrides the nonce used for the next signed request (stale/foreign nonce tests).
    pub fn set_nonce(&mut self, nonce: &str) {
        self.nonce = Some(nonce.to_string());
    }

    /// Encodes a request of `method` with a fresh transaction id.
    pub fn encode(&self, method: Method, out: &Outgoing) -> (TransactionId, Vec<u8>) {
        let tid = new_transaction_id();
        (tid, self.encode_with(method, CLASS_REQUEST, tid, out))
    }

    fn encode_with(
        &self,
        method: Method,
        class: stun::message::MessageClass,
        tid: TransactionId,
        out: &Outgoing,
    ) -> Vec<u8> {
        let (Some(realm), Some(nonce)) = (&self.realm, &self.nonce) else {
            // Like a real client, the first request goes unsigned: realm and nonce
            // come from the server's 401. (Some servers answer a request signed with
            // an empty realm and nonce with something other than a challenge.)
            let unsigned = Outgoing {
                sign: false,
                ..out.clone()
            };
            let signer = Signer {
                username: "",
                realm: "",
                nonce: "",
                password: "",
            };
            return encode_message(method, class, tid, &unsigned, &signer);
        };
        let signer = Signer {
            username: &self.username,
            realm,
            nonce,
            password: &self.password,
        };
        encode_message(method, class, tid, out, &signer)
    }

    /// Sends raw bytes to the server (on a stream: any bytes, even part of a frame).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.transport.send(bytes)
    }

    /// The next message from the server within `timeout`, skipping what is not ours.
    /// On a stream, a closed connection is an `UnexpectedEof` error.
    pub fn recv(&mut self, timeout: Duration) -> io::Result<Option<Incoming>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(bytes) = self.transport.recv(left)? else {
                return Ok(None);
            };
            match crate::proto::classify(&bytes) {
                Kind::Stun => {
                    if let Ok(msg) = Request::parse(&bytes) {
                        return Ok(Some(Incoming::Stun(msg)));
                    }
                }
                Kind::ChannelData => {
                    if let Some(h) = ChannelHeader::parse(&bytes) {
                        return Ok(Some(Incoming::ChannelData {
                            number: h.number,
                            data: h.payload(&bytes).to_vec(),
                        }));
                    }
                }
                Kind::Other => {}
            }
        }
    }

    /// Sends `bytes` and waits for the response with transaction id `tid`,
    /// retransmitting a few times over UDP as RFC 8489 asks (never over a stream).
    pub fn exchange(&mut self, tid: TransactionId, bytes: &[u8]) -> io::Result<Option<Reply>> {
        let (attempts, wait) = if self.transport.is_stream() {
            (1, self.timeout * 3)
        } else {
            (3, self.timeout)
        };
        for _ in 0..attempts {
            self.send_raw(bytes)?;
            let deadline = Instant::now() + wait;
            while let Some(incoming) =
                self.recv(deadline.saturating_duration_since(Instant::now()))?
            {
                if let Incoming::Stun(msg) = incoming
                    && msg.transaction_id() == tid
                    && msg.class() != CLASS_INDICATION
                {
                    return Ok(Some(to_reply(msg)));
                }
            }
        }
        Ok(None)
    }

    /// Sends a request, signing it when `out.sign` and answering one 401/438 challenge
    /// by learning REALM/NONCE and trying again.
    pub fn request(&mut self, method: Method, out: &Outgoing) -> io::Result<Reply> {
        let mut last = None;
        for _ in 0..2 {
            let (tid, bytes) = self.encode(method, out);
            let reply = self
                .exchange(tid, &bytes)?
                .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "no response"))?;
            let challenged = matches!(reply.code, Some(401) | Some(438));
            if challenged {
                if let Some(realm) = reply.msg.text(ATTR_REALM) {
                    self.realm = Some(realm.to_string());
                }
                if let Some(nonce) = reply.msg.text(ATTR_NONCE) {
                    self.nonce = Some(nonce.to_string());
                }
            }
            let retry = out.sign && challenged && reply.msg.attr(ATTR_NONCE).is_some();
            last = Some(reply);
            if !retry {
                break;
            }
        }
        Ok(last.expect("the loop runs at least once"))
    }

    /// Allocate with REQUESTED-TRANSPORT=UDP plus `extra` attributes, signed.
    pub fn allocate(&mut self, extra: Vec<Attr>) -> io::Result<Reply> {
        let mut attrs = vec![Attr::udp_transport()];
        attrs.extend(extra);
        self.request(METHOD_ALLOCATE, &signed(attrs))
    }

    pub fn refresh(&mut self, lifetime: Option<u32>) -> io::Result<Reply> {
        let attrs = lifetime.map(Attr::lifetime).into_iter().collect();
        self.request(METHOD_REFRESH, &signed(attrs))
    }

    pub fn create_permission(&mut self, peers: &[SocketAddr]) -> io::Result<Reply> {
        let attrs = peers.iter().map(|p| Attr::Peer(*p)).collect();
        self.request(METHOD_CREATE_PERMISSION, &signed(attrs))
    }

    pub fn channel_bind(&mut self, number: u16, peer: SocketAddr) -> io::Result<Reply> {
        let attrs = vec![Attr::channel(number), Attr::Peer(peer)];
        self.request(METHOD_CHANNEL_BIND, &signed(attrs))
    }

    /// A Send indication carrying `data` to `peer`.
    pub fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) -> io::Result<()> {
        let tid = new_transaction_id();
        let out = Outgoing {
            attrs: vec![Attr::Peer(peer), Attr::Raw(ATTR_DATA, data.to_vec())],
            ..Outgoing::default()
        };
        let bytes = self.encode_with(METHOD_SEND, CLASS_INDICATION, tid, &out);
        self.send_raw(&bytes)
    }

    /// ChannelData on `number`, padded to a multiple of four on streams.
    pub fn send_channel_data(&mut self, number: u16, data: &[u8]) -> io::Result<()> {
        let len = u16::try_from(data.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
        let mut bytes = ChannelHeader { number, len }.to_bytes().to_vec();
        bytes.extend_from_slice(data);
        if self.transport.is_stream() {
            bytes.extend_from_slice(crate::proto::framing::channel_padding(bytes.len()));
        }
        self.send_raw(&bytes)
    }

    /// Waits for data relayed from a peer: `(Some(peer), data)` for a Data indication,
    /// `(None, data)` for ChannelData.
    pub fn recv_data(
        &mut self,
        timeout: Duration,
    ) -> io::Result<Option<(Option<SocketAddr>, Vec<u8>)>> {
        let deadline = Instant::now() + timeout;
        while let Some(incoming) = self.recv(deadline.saturating_duration_since(Instant::now()))? {
            match incoming {
                Incoming::ChannelData { data, .. } => return Ok(Some((None, data))),
                Incoming::Stun(msg)
                    if msg.class() == CLASS_INDICATION && msg.method() == METHOD_DATA =>
                {
                    let peer = msg
                        .attr(ATTR_XOR_PEER_ADDRESS)
                        .and_then(|v| decode_xor_address(v, &msg.transaction_id()));
                    let data = msg.attr(ATTR_DATA).unwrap_or_default().to_vec();
                    return Ok(Some((peer, data)));
                }
                Incoming::Stun(_) => {}
            }
        }
        Ok(None)
    }
}

/// What a signed request carries besides its MESSAGE-INTEGRITY.
pub struct Signer<'a> {
    pub username: &'a str,
    pub realm: &'a str,
    pub nonce: &'a str,
    pub password: &'a str,
}

impl Signer<'static> {
    /// No credentials: for messages sent unsigned (Binding, indications).
    pub const NONE: Self = Self {
        username: "",
        realm: "",
        nonce: "",
        password: "",
    };
}

/// Encodes a message; with `out.sign`, USERNAME/REALM/NONCE and MESSAGE-INTEGRITY
/// from `signer` are added after `out.attrs`.
pub fn encode_message(
    method: Method,
    class: stun::message::MessageClass,
    tid: TransactionId,
    out: &Outgoing,
    signer: &Signer<'_>,
) -> Vec<u8> {
    let mut msg = stun::message::Message::new();
    msg.set_type(MessageType::new(method, class));
    msg.transaction_id = tid;
    msg.write_header();
    let add = |msg: &mut stun::message::Message, attr: &Attr| match attr {
        Attr::Raw(t, v) => msg.add(*t, v),
        Attr::Peer(addr) => stun::xoraddr::XorMappedAddress {
            ip: addr.ip(),
            port: addr.port(),
        }
        .add_to_as(msg, ATTR_XOR_PEER_ADDRESS)
        .expect("XOR address setter does not fail"),
    };
    for attr in &out.attrs {
        add(&mut msg, attr);
    }
    if out.sign {
        msg.add(ATTR_USERNAME, signer.username.as_bytes());
        msg.add(ATTR_REALM, signer.realm.as_bytes());
        msg.add(ATTR_NONCE, signer.nonce.as_bytes());
        let key = LongTermKey::derive(signer.username, signer.realm, signer.password);
        stun::message::Setter::add_to(
            &stun::integrity::MessageIntegrity(key.as_bytes().to_vec()),
            &mut msg,
        )
        .expect("integrity before fingerprint");
    }
    for attr in &out.after_integrity {
        add(&mut msg, attr);
    }
    if out.fingerprint {
        stun::message::Setter::add_to(&stun::fingerprint::FINGERPRINT, &mut msg)
            .expect("fingerprint last");
    }
    msg.raw
}

/// A fresh random transaction id.
pub fn new_transaction_id() -> TransactionId {
    let mut tid = TransactionId::default();
    rand::Rng::fill(&mut rand::rng(), &mut tid.0);
    tid
}

/// Signed request attributes.
pub fn signed(attrs: Vec<Attr>) -> Outgoing {
    Outgoing {
        attrs,
        sign: true,
        ..Outgoing::default()
    }
}

/// The reply view of a parsed response.
pub fn to_reply(msg: Request) -> Reply {
    let code = (msg.class() == CLASS_ERROR_RESPONSE).then(|| {
        let mut e = ErrorCodeAttribute::default();
        match e.get_from(&msg.msg) {
            Ok(()) => e.code.0,
            Err(_) => 0,
        }
    });
    Reply { msg, code }
}
