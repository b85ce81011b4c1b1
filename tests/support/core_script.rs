//! Scripts of client datagrams, signed requests, peer datagrams and waits, run against
//! the sans-IO engine with its invariants checked after every step. The property tests
//! generate scripts with proptest; the `core_sequence` fuzz target decodes them from
//! raw bytes ([`decode`]); the seed corpus is written with [`encode`]. Included with
//! `#[path]` like [`sans_io`], so it needs nothing but `tern`, `stun` and `rand`.
#![allow(dead_code)]

#[path = "sans_io.rs"]
pub mod sans_io;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};
use stun::agent::TransactionId;
use stun::attributes::{ATTR_MESSAGE_INTEGRITY, ATTR_NONCE, AttrType};
use stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, METHOD_BINDING, MessageType,
};

use sans_io::{PASSWORD, REALM, Recorder, USER};
use tern::auth::UnauthorizedLimiter;
use tern::client::{Attr, Outgoing, Signer, encode_message};
use tern::core::{Engine, FiveTuple, Now, Transport};
use tern::policy::PeerPolicy;
use tern::proto::{ChannelHeader, Kind, Request};

/// The clients a script speaks for: two ports of one IPv4 host over UDP, an IPv6 and
/// another IPv4 host over TCP, and one whose address is the engine's first relay
/// address (a TURN loop once that port is allocated).
pub fn tuples() -> [FiveTuple; 5] {
    let tuple = |client: &str, server: &str, transport| FiveTuple {
        client: client.parse().expect("literal address"),
        server: server.parse().expect("literal address"),
        transport,
    };
    [
        tuple("203.0.113.9:40000", "192.0.2.1:3478", Transport::Udp),
        tuple("203.0.113.9:40001", "192.0.2.1:3478", Transport::Udp),
        tuple(
            "[2001:db8:2::9]:40000",
            "[2001:db8::1]:3478",
            Transport::Tcp,
        ),
        tuple("203.0.113.10:40000", "192.0.2.1:3478", Transport::Tcp),
        tuple("192.0.2.1:50000", "192.0.2.1:3478", Transport::Udp),
    ]
}

/// Peers a script may name: allowed ones and one of each kind the policy must refuse.
pub fn peers() -> [SocketAddr; 12] {
    [
        "198.51.100.7:4000",
        "198.51.100.8:4000",
        "[2001:db8:1::7]:4000",
        "127.0.0.1:4000",
        "[::ffff:127.0.0.1]:4000",
        "169.254.169.254:80",
        "[fe80::1]:4000",
        "192.0.2.1:50001",
        "192.0.2.1:3478",
        "198.51.100.7:0",
        "[64:ff9b::7f00:1]:4000",
        "0.0.0.0:4000",
    ]
    .map(|p| p.parse().expect("literal address"))
}

/// An attribute type no real message uses, standing for an XOR-PEER-ADDRESS given in
/// clear: a one-byte value picks from [`peers`], a 6- or 18-byte value is an IPv4 or
/// IPv6 address and port. The encoder masks it with the transaction id.
pub const PEER_IN_CLEAR: u16 = 0xFFFF;

/// One step of a script. Every step first lets `advance_ms` milliseconds pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Raw bytes from client `tuple` (an index into [`tuples`], modulo its length).
    Datagram {
        tuple: u8,
        advance_ms: u16,
        bytes: Vec<u8>,
    },
    /// A message encoded by the client library: `typ` is the message type as on the
    /// wire (method and class bits, see [`message_type`]), `attrs` are `(type, value)`
    /// pairs with [`PEER_IN_CLEAR`] for peers, and the transaction id is `tid` repeated.
    Message {
        tuple: u8,
        advance_ms: u16,
        typ: u16,
        tid: u8,
        flags: u8,
        attrs: Vec<(u16, Vec<u8>)>,
    },
    /// A datagram from peer `peer` (index into [`peers`]) reaching relay socket
    /// `relay` (index into the bound relays, in address order).
    Peer {
        relay: u8,
        peer: u8,
        advance_ms: u16,
        data: Vec<u8>,
    },
    /// Seconds pass with no traffic.
    Wait { secs: u16 },
}

/// The method and class a wire message type value stands for (the two bits above the
/// 14 that hold them are ignored).
pub fn message_type(value: u16) -> MessageType {
    let mut typ = MessageType::new(METHOD_BINDING, CLASS_REQUEST);
    typ.read_value(value & 0x3FFF);
    typ
}

/// [`Op::Message`] flags.
pub mod flags {
    /// Sign with USERNAME, REALM, the NONCE this tuple last got, and MESSAGE-INTEGRITY.
    pub const SIGN: u8 = 1;
    pub const FINGERPRINT: u8 = 2;
    /// Sign with a wrong password.
    pub const WRONG_PASSWORD: u8 = 4;
    /// Use the nonce another tuple got (a nonce replayed from another address).
    pub const FOREIGN_NONCE: u8 = 8;
    /// Put the last attribute after MESSAGE-INTEGRITY.
    pub const LAST_AFTER_INTEGRITY: u8 = 16;
}

/// Ops a decoded script holds at most, so one fuzz input runs in bounded time.
const MAX_OPS: usize = 256;

/// Reads a script from arbitrary bytes; every input is some script: an op cut short
/// in its fixed fields ends the script, a byte string cut short keeps what there is.
pub fn decode(data: &[u8]) -> Vec<Op> {
    let mut r = Reader(data);
    let mut ops = Vec::new();
    while ops.len() < MAX_OPS
        && let Some(op) = r.op()
    {
        ops.push(op);
    }
    ops
}

/// The bytes [`decode`] reads back as `ops` (lengths past what the format holds are cut).
pub fn encode(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    let put_bytes = |out: &mut Vec<u8>, bytes: &[u8]| {
        let len = bytes.len().min(usize::from(u16::MAX));
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend_from_slice(&bytes[..len]);
    };
    for op in ops {
        match op {
            Op::Datagram {
                tuple,
                advance_ms,
                bytes,
            } => {
                out.extend_from_slice(&[0, *tuple]);
                out.extend_from_slice(&advance_ms.to_be_bytes());
                put_bytes(&mut out, bytes);
            }
            Op::Message {
                tuple,
                advance_ms,
                typ,
                tid,
                flags,
                attrs,
            } => {
                out.extend_from_slice(&[1, *tuple]);
                out.extend_from_slice(&advance_ms.to_be_bytes());
                out.extend_from_slice(&typ.to_be_bytes());
                out.extend_from_slice(&[*tid, *flags, attrs.len().min(255) as u8]);
                for (typ, value) in attrs.iter().take(255) {
                    let len = value.len().min(255);
                    out.extend_from_slice(&typ.to_be_bytes());
                    out.push(len as u8);
                    out.extend_from_slice(&value[..len]);
                }
            }
            Op::Peer {
                relay,
                peer,
                advance_ms,
                data,
            } => {
                out.extend_from_slice(&[2, *relay, *peer]);
                out.extend_from_slice(&advance_ms.to_be_bytes());
                put_bytes(&mut out, data);
            }
            Op::Wait { secs } => {
                out.push(3);
                out.extend_from_slice(&secs.to_be_bytes());
            }
        }
    }
    out
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }

    fn bytes(&mut self, len: usize) -> Option<Vec<u8>> {
        let len = len.min(self.0.len());
        let (bytes, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(bytes.to_vec())
    }

    fn u16_bytes(&mut self) -> Option<Vec<u8>> {
        let len = self.u16()?;
        self.bytes(usize::from(len))
    }

    fn op(&mut self) -> Option<Op> {
        Some(match self.u8()? % 4 {
            0 => Op::Datagram {
                tuple: self.u8()?,
                advance_ms: self.u16()?,
                bytes: self.u16_bytes()?,
            },
            1 => {
                let (tuple, advance_ms, typ) = (self.u8()?, self.u16()?, self.u16()?);
                let (tid, flags, count) = (self.u8()?, self.u8()?, self.u8()?);
                let mut attrs = Vec::with_capacity(usize::from(count));
                for _ in 0..count {
                    let typ = self.u16()?;
                    let len = self.u8()?;
                    attrs.push((typ, self.bytes(usize::from(len))?));
                }
                Op::Message {
                    tuple,
                    advance_ms,
                    typ,
                    tid,
                    flags,
                    attrs,
                }
            }
            2 => Op::Peer {
                relay: self.u8()?,
                peer: self.u8()?,
                advance_ms: self.u16()?,
                data: self.u16_bytes()?,
            },
            _ => Op::Wait { secs: self.u16()? },
        })
    }
}

/// Wall-clock seconds at the start of a script (nonces and REST expiry read them).
const UNIX_START: u64 = 1_800_000_000;

/// The engine, what it asked of its driver, and the clock, for one script.
pub struct Driver {
    pub engine: Engine,
    pub io: Recorder,
    t0: Instant,
    /// Time since the start of the script.
    pub elapsed: Duration,
    tuples: [FiveTuple; 5],
    peers: [SocketAddr; 12],
    policy: PeerPolicy,
    /// Per tuple, the NONCE of the last 401 or 438 it got.
    nonces: Vec<String>,
    /// How many of `io.to_client` and `io.to_peer` have been checked.
    checked: (usize, usize),
}

impl Driver {
    pub fn new(limiter: UnauthorizedLimiter) -> Self {
        let tuples = tuples();
        Self {
            engine: sans_io::engine(limiter),
            io: Recorder::default(),
            t0: Instant::now(),
            elapsed: Duration::ZERO,
            tuples,
            peers: peers(),
            policy: sans_io::peer_policy(),
            nonces: vec![String::new(); tuples.len()],
            checked: (0, 0),
        }
    }

    /// Runs `ops` on a fresh engine; panics if an invariant breaks.
    pub fn run(limiter: UnauthorizedLimiter, ops: &[Op]) -> Self {
        let mut driver = Self::new(limiter);
        for op in ops {
            driver.apply(op);
        }
        driver
    }

    pub fn now(&self) -> Now {
        Now {
            mono: self.t0 + self.elapsed,
            unix: UNIX_START + self.elapsed.as_secs(),
        }
    }

    /// The 5-tuple an op's `tuple` index names.
    pub fn tuple(&self, index: u8) -> FiveTuple {
        self.tuples[usize::from(index) % self.tuples.len()]
    }

    /// Lets time pass as the op says, fires due timers, carries the op out, reports
    /// closed relay sockets back as a driver does, then checks the invariants.
    pub fn apply(&mut self, op: &Op) {
        self.elapsed += match op {
            Op::Wait { secs } => Duration::from_secs(u64::from(*secs)),
            Op::Datagram { advance_ms, .. }
            | Op::Message { advance_ms, .. }
            | Op::Peer { advance_ms, .. } => Duration::from_millis(u64::from(*advance_ms)),
        };
        let now = self.now();
        if self.engine.poll_timeout().is_some_and(|t| t <= now.mono) {
            self.engine.handle_timeout(now.mono, &mut self.io);
        }
        match op {
            Op::Datagram { tuple, .. } | Op::Message { tuple, .. } => {
                let bytes = self.client_bytes(op).expect("a client op");
                self.client_sends(*tuple, &bytes);
            }
            Op::Peer {
                relay, peer, data, ..
            } => self.peer_sends(*relay, *peer, data),
            Op::Wait { .. } => {}
        }
        for relay in std::mem::take(&mut self.io.closed) {
            self.engine.handle_relay_closed(relay);
        }
        self.check();
    }

    /// The datagram a client op sends (a message is encoded with the nonce its tuple
    /// holds now); `None` for other ops.
    pub fn client_bytes(&self, op: &Op) -> Option<Vec<u8>> {
        match op {
            Op::Datagram { bytes, .. } => Some(bytes.clone()),
            Op::Message {
                tuple,
                typ,
                tid,
                flags,
                attrs,
                ..
            } => Some(self.encode_message(*tuple, *typ, *tid, *flags, attrs)),
            Op::Peer { .. } | Op::Wait { .. } => None,
        }
    }

    fn client_sends(&mut self, index: u8, bytes: &[u8]) {
        let tuple = self.tuple(index);
        let looped = self.io.bound.contains(&tuple.client);
        let sent = (self.io.to_client.len(), self.io.to_peer.len());
        self.engine
            .handle_client(self.now(), tuple, bytes, &mut self.io);
        if looped {
            let after = (self.io.to_client.len(), self.io.to_peer.len());
            assert_eq!(after, sent, "a datagram from a relay address was acted on");
        }
    }

    fn peer_sends(&mut self, relay: u8, peer: u8, data: &[u8]) {
        let mut relays: Vec<SocketAddr> = self.io.bound.iter().copied().collect();
        relays.sort();
        let relay = match relays.len() {
            0 => SocketAddr::new(sans_io::RELAY_V4, sans_io::PORTS.0),
            n => relays[usize::from(relay) % n],
        };
        let peer = self.peers[usize::from(peer) % self.peers.len()];
        let now = self.now().mono;
        sans_io::peer_datagram(&mut self.engine, &mut self.io, now, (relay, peer), data);
    }

    /// Encodes an [`Op::Message`] with the client library. A FINGERPRINT among `attrs`
    /// is left out: the encoder refuses to sign after one (raw datagrams cover it).
    fn encode_message(
        &self,
        index: u8,
        typ: u16,
        tid: u8,
        flags: u8,
        attrs: &[(u16, Vec<u8>)],
    ) -> Vec<u8> {
        let tid = TransactionId([tid; 12]);
        let mut attrs: Vec<Attr> = attrs
            .iter()
            .filter(|(typ, _)| *typ != stun::attributes::ATTR_FINGERPRINT.0)
            .map(|(typ, value)| self.attr(*typ, value))
            .collect();
        let after_integrity = match flags & flags::LAST_AFTER_INTEGRITY {
            0 => Vec::new(),
            _ => attrs.pop().into_iter().collect(),
        };
        let nonce_of = match flags & flags::FOREIGN_NONCE {
            0 => usize::from(index),
            _ => usize::from(index) + 1,
        };
        let signer = Signer {
            username: USER,
            realm: REALM,
            nonce: &self.nonces[nonce_of % self.nonces.len()],
            password: match flags & flags::WRONG_PASSWORD {
                0 => PASSWORD,
                _ => "not the password",
            },
        };
        let out = Outgoing {
            attrs,
            after_integrity,
            fingerprint: flags & flags::FINGERPRINT != 0,
            sign: flags & flags::SIGN != 0,
        };
        let typ = message_type(typ);
        encode_message(typ.method, typ.class, tid, &out, &signer)
    }

    fn attr(&self, typ: u16, value: &[u8]) -> Attr {
        if typ != PEER_IN_CLEAR {
            return Attr::Raw(AttrType(typ), value.to_vec());
        }
        let port = |p: &[u8]| u16::from_be_bytes([p[0], p[1]]);
        Attr::Peer(match value.len() {
            6 => {
                let ip: [u8; 4] = value[..4].try_into().expect("4 bytes");
                SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port(&value[4..]))
            }
            18 => {
                let ip: [u8; 16] = value[..16].try_into().expect("16 bytes");
                SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port(&value[16..]))
            }
            _ => {
                let pick = value.first().copied().unwrap_or(0);
                self.peers[usize::from(pick) % self.peers.len()]
            }
        })
    }

    /// What must hold whatever the script: every datagram to a client is a well-formed
    /// STUN message or ChannelData; an answer without MESSAGE-INTEGRITY (all a source
    /// that has not authenticated can get) is at most [`sans_io::MAX_UNAUTHENTICATED_ANSWER`]
    /// bytes; nothing goes to a peer the policy refuses, nor from a relay socket of
    /// another family; a relay socket is bound for every relayed address and no other.
    fn check(&mut self) {
        for i in self.checked.0..self.io.to_client.len() {
            let (tuple, bytes) = &self.io.to_client[i];
            match tern::proto::classify(bytes) {
                Kind::Stun => {
                    let msg = Request::parse(bytes)
                        .unwrap_or_else(|e| panic!("sent a malformed message ({e}): {bytes:02x?}"));
                    if let Some(nonce) = msg.text(ATTR_NONCE)
                        && let Some(t) = self.tuples.iter().position(|t| t == tuple)
                    {
                        self.nonces[t] = nonce.to_string();
                    }
                    let response = [CLASS_SUCCESS_RESPONSE, CLASS_ERROR_RESPONSE];
                    if response.contains(&msg.class()) && msg.attr(ATTR_MESSAGE_INTEGRITY).is_none()
                    {
                        assert!(
                            bytes.len() <= sans_io::MAX_UNAUTHENTICATED_ANSWER,
                            "unauthenticated answer of {} bytes: {bytes:02x?}",
                            bytes.len()
                        );
                    }
                }
                Kind::ChannelData => {
                    let header = ChannelHeader::parse(bytes).expect("valid ChannelData");
                    assert_eq!(usize::from(header.len) + 4, bytes.len());
                }
                Kind::Other => panic!("sent neither STUN nor ChannelData: {bytes:02x?}"),
            }
        }
        let sent = self.io.to_peer[self.checked.1..].iter();
        for ((peer, _), relay) in sent.zip(&self.io.sent_from[self.checked.1..]) {
            assert!(self.policy.check(*peer).is_ok(), "relayed to denied {peer}");
            assert_eq!(
                relay.is_ipv6(),
                peer.is_ipv6(),
                "{peer} sent to from {relay}"
            );
        }
        self.checked = (self.io.to_client.len(), self.io.to_peer.len());
        // A relay socket is bound for each relayed address (two of a dual allocation).
        let allocations = self.tuples.iter().filter_map(|t| self.engine.allocation(t));
        let mut relays: Vec<SocketAddr> = allocations.flat_map(|a| a.relays()).collect();
        let mut bound: Vec<SocketAddr> = self.io.bound.iter().copied().collect();
        relays.sort();
        bound.sort();
        assert_eq!(bound, relays);
        // What the metrics would show agrees with the engine's state.
        let counted = usize::try_from(self.io.allocations_counted).expect("never below zero");
        assert_eq!(counted, self.engine.allocation_count());
        assert!(self.engine.ports_in_use() <= 2 * sans_io::port_range().count());
    }
}
