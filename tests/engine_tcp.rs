//! The sans-IO engine's RFC 6062 decisions with injected time and two engines sharing
//! one server's state (two workers): a Connect answered when its peer answers, the
//! 30 s ConnectionBind deadline to the millisecond, a ConnectionBind on another worker
//! signed with the control connection's nonce, the per-allocation cap, permissions for
//! peers connecting in, and every connection closed with its allocation or by a reload
//! that denies its peer. No sockets: a recording `Io` stands in for the driver.

#[path = "support/sans_io.rs"]
mod sans_io;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stun::attributes::{
    ATTR_CONNECTION_ID, ATTR_NONCE, ATTR_REQUESTED_TRANSPORT, ATTR_XOR_PEER_ADDRESS,
    ATTR_XOR_RELAYED_ADDRESS,
};
use stun::message::{
    CLASS_INDICATION, CLASS_REQUEST, METHOD_ALLOCATE, METHOD_CONNECT, METHOD_CONNECTION_ATTEMPT,
    METHOD_CONNECTION_BIND, METHOD_CREATE_PERMISSION, METHOD_REFRESH, Method,
};

use sans_io::{PASSWORD, REALM, Recorder, USER};
use tern::client::{Attr, Outgoing, Reply, Signer, encode_message, new_transaction_id, to_reply};
use tern::core::{ConnectionId, Engine, FiveTuple, Now, Shared, Transport};
use tern::proto::Request;

const PEER: &str = "198.51.100.7:4000";

/// A server of two workers, the client's control connection on the first.
struct Harness {
    workers: [Engine; 2],
    io: Recorder,
    t0: Instant,
    control: FiveTuple,
    /// The nonce the control connection was given.
    nonce: String,
}

fn tcp_transport() -> Attr {
    Attr::Raw(ATTR_REQUESTED_TRANSPORT, vec![6, 0, 0, 0])
}

fn connection_id(id: ConnectionId) -> Attr {
    Attr::Raw(ATTR_CONNECTION_ID, id.to_be_bytes().to_vec())
}

impl Harness {
    fn new() -> Self {
        let shared = Arc::new(Shared::new(sans_io::port_range(), Instant::now()));
        let mut workers =
            [0, 1].map(|_| sans_io::engine_sharing(sans_io::no_limit(), shared.clone()));
        let mut config = sans_io::engine_config();
        config.tcp_allocations = true;
        let rules = tern::core::EngineRules {
            config: Arc::new(config),
            ..sans_io::rules(sans_io::peer_policy())
        };
        let mut io = Recorder::default();
        for engine in &mut workers {
            engine.reload(&rules, Instant::now(), &mut io);
        }
        let control = FiveTuple {
            client: "203.0.113.9:40000".parse().unwrap(),
            server: "192.0.2.1:3478".parse().unwrap(),
            transport: Transport::Tcp,
        };
        let mut h = Self {
            workers,
            io,
            t0: Instant::now(),
            control,
            nonce: String::new(),
        };
        h.nonce = h.challenge(0, control);
        h
    }

    fn now(&self, at: Duration) -> Now {
        Now {
            mono: self.t0 + at,
            unix: 1_800_000_000 + at.as_secs(),
        }
    }

    /// The nonce a first, unsigned request from `tuple` on `worker` is challenged with.
    fn challenge(&mut self, worker: usize, tuple: FiveTuple) -> String {
        let reply = self
            .send(worker, tuple, Duration::ZERO, METHOD_ALLOCATE, vec![], None)
            .expect("a 401");
        assert_eq!(reply.code, Some(401));
        reply.msg.text(ATTR_NONCE).unwrap().to_string()
    }

    /// Sends a request from `tuple` to `worker` at `at`, signed with `nonce` when given;
    /// its answer, if one came at once.
    fn send(
        &mut self,
        worker: usize,
        tuple: FiveTuple,
        at: Duration,
        method: Method,
        attrs: Vec<Attr>,
        nonce: Option<&str>,
    ) -> Option<Reply> {
        let signer = Signer {
            username: USER,
            realm: REALM,
            nonce: nonce.unwrap_or(""),
            password: PASSWORD,
        };
        let out = Outgoing {
            attrs,
            sign: nonce.is_some(),
            ..Outgoing::default()
        };
        let bytes = encode_message(method, CLASS_REQUEST, new_transaction_id(), &out, &signer);
        self.io.to_client.clear();
        let now = self.now(at);
        self.workers[worker].handle_client(now, tuple, &bytes, &mut self.io);
        let (_, answer) = self.io.to_client.pop()?;
        Some(to_reply(Request::parse(&answer).unwrap()))
    }

    /// A signed request on the control connection, answered at once.
    fn control(&mut self, at: Duration, method: Method, attrs: Vec<Attr>) -> Reply {
        let nonce = self.nonce.clone();
        self.send(0, self.control, at, method, attrs, Some(&nonce))
            .expect("an answer")
    }

    fn allocate_tcp(&mut self) -> SocketAddr {
        let r = self.control(Duration::ZERO, METHOD_ALLOCATE, vec![tcp_transport()]);
        assert!(r.is_success(), "{:?}", r.code);
        r.xor_address(ATTR_XOR_RELAYED_ADDRESS).unwrap()
    }

    /// A Connect to `peer`: no answer yet, and the id the driver is asked to connect.
    fn connect(&mut self, peer: SocketAddr) -> ConnectionId {
        let nonce = self.nonce.clone();
        let attrs = vec![Attr::Peer(peer)];
        let answer = self.send(
            0,
            self.control,
            Duration::ZERO,
            METHOD_CONNECT,
            attrs,
            Some(&nonce),
        );
        assert!(
            answer.is_none(),
            "a Connect waits for its peer: {:?}",
            answer.map(|r| r.code)
        );
        let &(_, to, id) = self.io.connects.last().expect("a connection asked for");
        assert_eq!(to, peer);
        id
    }

    /// The driver reports how the connection for `id` went at `at`; the Connect's
    /// answer.
    fn peer_answers(&mut self, at: Duration, id: ConnectionId, connected: bool) -> Reply {
        self.io.to_client.clear();
        let keep = self.workers[0].handle_peer_connected(self.t0 + at, id, connected, &mut self.io);
        assert_eq!(keep, connected);
        let (tuple, answer) = self.io.to_client.pop().expect("the Connect's answer");
        assert_eq!(tuple, self.control);
        to_reply(Request::parse(&answer).unwrap())
    }

    /// A ConnectionBind for `id` on a new connection from the client's IP, on worker 1,
    /// signed with the control connection's nonce.
    fn bind(&mut self, at: Duration, port: u16, id: ConnectionId) -> Reply {
        let data = FiveTuple {
            client: SocketAddr::new(self.control.client.ip(), port),
            ..self.control
        };
        let nonce = self.nonce.clone();
        let attrs = vec![connection_id(id)];
        self.send(1, data, at, METHOD_CONNECTION_BIND, attrs, Some(&nonce))
            .expect("an answer")
    }

    fn timeout(&mut self, at: Duration) {
        for engine in &mut self.workers {
            engine.handle_timeout(self.t0 + at, &mut self.io);
        }
    }
}

fn id_of(reply: &Reply) -> ConnectionId {
    let value = reply.msg.attr(ATTR_CONNECTION_ID).expect("CONNECTION-ID");
    u32::from_be_bytes(value.try_into().unwrap())
}

#[test]
fn a_connect_is_answered_when_its_peer_answers() {
    let mut h = Harness::new();
    let relay = h.allocate_tcp();
    assert!(h.io.tcp_bound.contains(&relay));
    let peer: SocketAddr = PEER.parse().unwrap();
    let id = h.connect(peer);
    let answer = h.peer_answers(Duration::from_secs(1), id, true);
    assert!(answer.is_success(), "{:?}", answer.code);
    assert_eq!(id_of(&answer), id);
    // A peer that does not answer: 447, and the peer may be tried again.
    let other: SocketAddr = "198.51.100.8:4000".parse().unwrap();
    let failed = h.connect(other);
    assert_eq!(
        h.peer_answers(Duration::from_secs(31), failed, false).code,
        Some(447)
    );
    h.connect(other);
    // One live connection per peer: 446.
    let again = h.control(
        Duration::from_secs(32),
        METHOD_CONNECT,
        vec![Attr::Peer(peer)],
    );
    assert_eq!(again.code, Some(446));
}

#[test]
fn an_unbound_connection_closes_at_30_seconds_to_the_millisecond() {
    let mut h = Harness::new();
    let relay = h.allocate_tcp();
    let peer: SocketAddr = PEER.parse().unwrap();
    let id = h.connect(peer);
    let connected_at = Duration::from_secs(2);
    h.peer_answers(connected_at, id, true);
    h.timeout(connected_at + Duration::from_millis(29_999));
    assert!(h.io.peer_connections_closed.is_empty());
    h.timeout(connected_at + Duration::from_secs(30));
    assert_eq!(h.io.peer_connections_closed, vec![(relay, peer)]);
    // The control connection's nonce no longer vouches for a data connection (the
    // connection is gone): challenged, and with a nonce of its own, 400.
    let late = h.bind(connected_at + Duration::from_secs(31), 40001, id);
    assert_eq!(late.code, Some(438));
    let data = FiveTuple {
        client: "203.0.113.9:40001".parse().unwrap(),
        ..h.control
    };
    let nonce = late.msg.text(ATTR_NONCE).unwrap().to_string();
    let attrs = vec![connection_id(id)];
    let at = connected_at + Duration::from_secs(31);
    let late = h.send(1, data, at, METHOD_CONNECTION_BIND, attrs, Some(&nonce));
    assert_eq!(late.unwrap().code, Some(400));
}

#[test]
fn a_bind_on_another_worker_takes_the_connection_once() {
    let mut h = Harness::new();
    h.allocate_tcp();
    let id = h.connect(PEER.parse().unwrap());
    h.peer_answers(Duration::from_secs(1), id, true);
    let bound = h.bind(Duration::from_secs(2), 40001, id);
    assert!(bound.is_success(), "{:?}", bound.code);
    let data = FiveTuple {
        client: "203.0.113.9:40001".parse().unwrap(),
        ..h.control
    };
    assert_eq!(h.io.spliced, vec![(data, id)]);
    // Bound now: the deadline passes it by, and a second bind is refused.
    h.timeout(Duration::from_secs(40));
    assert!(h.io.peer_connections_closed.is_empty());
    assert_eq!(h.bind(Duration::from_secs(41), 40002, id).code, Some(400));
    // Another IP cannot use the control connection's nonce: it is challenged.
    let stranger = FiveTuple {
        client: "203.0.113.77:40000".parse().unwrap(),
        ..h.control
    };
    let nonce = h.nonce.clone();
    let attrs = vec![connection_id(id)];
    let answer = h.send(
        1,
        stranger,
        Duration::from_secs(42),
        METHOD_CONNECTION_BIND,
        attrs,
        Some(&nonce),
    );
    assert_eq!(answer.unwrap().code, Some(438));
}

#[test]
fn connections_per_allocation_are_capped() {
    let mut h = Harness::new();
    h.allocate_tcp();
    // sans_io's config allows 4.
    for i in 0..4 {
        h.connect(SocketAddr::new(
            PEER.parse::<SocketAddr>().unwrap().ip(),
            4000 + i,
        ));
    }
    let fifth = SocketAddr::new(PEER.parse::<SocketAddr>().unwrap().ip(), 4100);
    let r = h.control(Duration::ZERO, METHOD_CONNECT, vec![Attr::Peer(fifth)]);
    assert_eq!(r.code, Some(508));
}

#[test]
fn a_peer_connecting_in_needs_a_permission_and_is_announced() {
    let mut h = Harness::new();
    let relay = h.allocate_tcp();
    let peer: SocketAddr = PEER.parse().unwrap();
    let now = h.t0 + Duration::from_secs(1);
    assert!(!h.workers[0].handle_peer_connection(now, relay, peer, &mut h.io));
    let r = h.control(
        Duration::from_secs(1),
        METHOD_CREATE_PERMISSION,
        vec![Attr::Peer(peer)],
    );
    assert!(r.is_success());
    h.io.to_client.clear();
    assert!(h.workers[0].handle_peer_connection(now, relay, peer, &mut h.io));
    let (tuple, bytes) = h.io.to_client.pop().expect("a ConnectionAttempt");
    assert_eq!(tuple, h.control);
    let attempt = to_reply(Request::parse(&bytes).unwrap());
    assert_eq!(attempt.msg.method(), METHOD_CONNECTION_ATTEMPT);
    assert_eq!(attempt.msg.class(), CLASS_INDICATION);
    assert_eq!(attempt.xor_address(ATTR_XOR_PEER_ADDRESS), Some(peer));
    let bound = h.bind(Duration::from_secs(2), 40001, id_of(&attempt));
    assert!(bound.is_success(), "{:?}", bound.code);
}

#[test]
fn the_allocation_ending_closes_every_connection() {
    let mut h = Harness::new();
    let relay = h.allocate_tcp();
    let peers: Vec<SocketAddr> = ["198.51.100.7:1", "198.51.100.7:2", "198.51.100.8:3"]
        .map(|p| p.parse().unwrap())
        .to_vec();
    for &peer in &peers {
        let id = h.connect(peer);
        h.peer_answers(Duration::from_secs(1), id, true);
    }
    let r = h.control(
        Duration::from_secs(2),
        METHOD_REFRESH,
        vec![Attr::lifetime(0)],
    );
    assert!(r.is_success());
    let mut closed = h.io.peer_connections_closed.clone();
    closed.sort();
    assert_eq!(
        closed,
        peers.iter().map(|&p| (relay, p)).collect::<Vec<_>>()
    );
    assert!(!h.io.tcp_bound.contains(&relay));
}

#[test]
fn a_reload_that_denies_a_peer_closes_its_connection() {
    let mut h = Harness::new();
    let relay = h.allocate_tcp();
    let (kept, denied): (SocketAddr, SocketAddr) = (
        "198.51.100.7:1".parse().unwrap(),
        "198.51.100.8:1".parse().unwrap(),
    );
    for peer in [kept, denied] {
        let id = h.connect(peer);
        h.peer_answers(Duration::from_secs(1), id, true);
    }
    let mut config = sans_io::engine_config();
    config.tcp_allocations = true;
    let allowed = vec!["198.51.100.7/32".parse().unwrap()];
    let own = tern::policy::OwnRelays {
        ips: vec![sans_io::RELAY_V4, sans_io::RELAY_V6],
        ports: sans_io::port_range().as_range(),
    };
    let policy = tern::policy::PeerPolicy::new(allowed, vec![], own);
    let rules = tern::core::EngineRules {
        config: Arc::new(config),
        ..sans_io::rules(policy)
    };
    h.workers[0].reload(&rules, h.t0 + Duration::from_secs(2), &mut h.io);
    assert_eq!(h.io.peer_connections_closed, vec![(relay, denied)]);
}
