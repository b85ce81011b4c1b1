//! Engines sharing one `Shared`, as the workers of one server do: every relay port is
//! held by one owner at a time (an allocation or an EVEN-PORT reservation), and an
//! owner that lets go never frees a port another holds. The second engine runs in the
//! middle of the first one's Allocate, while the first binds its relay socket: the
//! window in which another worker really runs.
//!
//! No sockets: recording `Io`s stand in for the drivers.

#[path = "support/sans_io.rs"]
mod sans_io;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stun::attributes::{ATTR_EVEN_PORT, ATTR_RESERVATION_TOKEN, ATTR_XOR_RELAYED_ADDRESS};
use stun::message::{METHOD_ALLOCATE, METHOD_REFRESH, Method};

use sans_io::{PORTS, RELAY_V4, Recorder};
use tern::client::{Attr, Reply, to_reply};
use tern::core::{Count, Engine, FiveTuple, Io, Now, Shared, Transport};
use tern::proto::Request;

const UNIX0: u64 = 1_800_000_000;
const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

/// One worker: its engine and the driver that records what the engine asked for.
struct Worker {
    engine: Engine,
    io: Recorder,
}

/// A worker's driver while `during_bind` runs once, right after the engine has bound
/// its first relay socket and before the engine goes on.
struct Interleaved<'a, F: FnMut()> {
    io: &'a mut Recorder,
    during_bind: Option<F>,
}

impl<F: FnMut()> Io for Interleaved<'_, F> {
    fn send_to_client(&mut self, tuple: &FiveTuple, bytes: &[u8]) {
        self.io.send_to_client(tuple, bytes);
    }
    fn send_to_peer(&mut self, relay: SocketAddr, peer: SocketAddr, bytes: &[u8]) {
        self.io.send_to_peer(relay, peer, bytes);
    }
    fn bind_relay(&mut self, addr: SocketAddr, dont_fragment: bool) -> std::io::Result<()> {
        let bound = self.io.bind_relay(addr, dont_fragment);
        if let Some(mut other_worker) = self.during_bind.take() {
            other_worker();
        }
        bound
    }
    fn close_relay(&mut self, addr: SocketAddr) {
        self.io.close_relay(addr);
    }
    fn allocation_changed(&mut self, tuple: &FiveTuple, alive: bool) {
        self.io.allocation_changed(tuple, alive);
    }
    fn count(&mut self, event: Count<'_>) {
        self.io.count(event);
    }
}

impl Worker {
    fn new(shared: &Arc<Shared>) -> Self {
        Self {
            engine: sans_io::engine_sharing(sans_io::no_limit(), shared.clone()),
            io: Recorder::default(),
        }
    }

    /// Client `n` sends a signed `method` request; the answer it got.
    fn ask(&mut self, now: Now, n: u16, method: Method, attrs: Vec<Attr>) -> Reply {
        self.ask_while(now, n, method, attrs, || {})
    }

    /// Like [`Worker::ask`], with `during_bind` run while the engine binds a relay.
    fn ask_while(
        &mut self,
        now: Now,
        n: u16,
        method: Method,
        attrs: Vec<Attr>,
        during_bind: impl FnMut(),
    ) -> Reply {
        let tuple = client(n);
        let bytes = sans_io::signed_request(&tuple, now, method, attrs);
        let mut io = Interleaved {
            io: &mut self.io,
            during_bind: Some(during_bind),
        };
        self.engine.handle_client(now, tuple, &bytes, &mut io);
        let (to, answer) = self.io.to_client.pop().expect("an answer");
        assert_eq!(to, tuple);
        to_reply(Request::parse(&answer).expect("a well-formed answer"))
    }
}

/// The 5-tuple of client `n`: every client has its own.
fn client(n: u16) -> FiveTuple {
    FiveTuple {
        client: SocketAddr::from(([203, 0, 113, 9], 40_000 + n)),
        server: SocketAddr::new(RELAY_V4, 3478),
        transport: Transport::Udp,
    }
}

fn relayed(r: &Reply) -> SocketAddr {
    assert!(r.is_success(), "{:?}", r.code);
    r.xor_address(ATTR_XOR_RELAYED_ADDRESS)
        .expect("XOR-RELAYED-ADDRESS")
}

fn even_port_reserving_next() -> Vec<Attr> {
    vec![Attr::udp_transport(), Attr::Raw(ATTR_EVEN_PORT, vec![0x80])]
}

/// The port after `relay`'s, which its EVEN-PORT reservation holds.
fn next(relay: SocketAddr) -> SocketAddr {
    SocketAddr::new(relay.ip(), relay.port() + 1)
}

/// While worker A binds the even port of an EVEN-PORT reservation, worker B asks for a
/// reservation too, then takes every port it can. Both engines have one seed, so B's
/// search starts where A's did and B draws the token A is about to draw. Each port of
/// the range ends up with exactly one owner, each reservation has its own token, and
/// when the reservations expire they free their own ports only.
#[test]
fn workers_racing_for_a_pair_never_share_a_port() {
    let shared = Arc::new(Shared::new(
        sans_io::port_range(),
        std::time::Instant::now(),
    ));
    let (mut a, mut b) = (Worker::new(&shared), Worker::new(&shared));
    let t0 = Instant::now();
    let at = |after: Duration| Now {
        mono: t0 + after,
        unix: UNIX0 + after.as_secs(),
    };
    let range_len = usize::from(PORTS.1 - PORTS.0 + 1);

    let mut b_reply = None;
    let mut b_plain = Vec::new();
    let a_reply = a.ask_while(
        at(Duration::ZERO),
        0,
        METHOD_ALLOCATE,
        even_port_reserving_next(),
        || {
            let now = at(Duration::ZERO);
            b_reply = Some(b.ask(now, 1, METHOD_ALLOCATE, even_port_reserving_next()));
            for n in 2..2 + PORTS.1 - PORTS.0 {
                let r = b.ask(now, n, METHOD_ALLOCATE, vec![Attr::udp_transport()]);
                if r.code == Some(508) {
                    break;
                }
                b_plain.push(relayed(&r));
            }
        },
    );
    let a_relay = relayed(&a_reply);
    let b_reply = b_reply.expect("worker B ran while A bound its relay");
    let b_relay = relayed(&b_reply);
    let mut tokens = Vec::new();
    for (relay, reply) in [(a_relay, &a_reply), (b_relay, &b_reply)] {
        assert_eq!(relay.port() % 2, 0, "{relay}");
        tokens.push(reply.msg.attr(ATTR_RESERVATION_TOKEN).expect("token"));
    }
    assert_ne!(a_relay, b_relay, "one even port for two reservations");
    assert_ne!(tokens[0], tokens[1], "one token for two reservations");
    assert_eq!(
        b_plain.len(),
        range_len - 4,
        "B took {b_plain:?} around the pairs of {a_relay} and {b_relay}"
    );

    // Every port of the range has exactly one owner.
    let mut owners = vec![a_relay, next(a_relay), b_relay, next(b_relay)];
    owners.extend(&b_plain);
    let mut ports: Vec<u16> = owners.iter().map(SocketAddr::port).collect();
    ports.sort_unstable();
    assert_eq!(ports, (PORTS.0..=PORTS.1).collect::<Vec<_>>(), "{owners:?}");
    assert_eq!(shared.ports().in_use(), range_len);

    // A's reservation expires: it frees its own port and nothing B holds.
    let expiry = t0 + RESERVATION_LIFETIME;
    a.engine.handle_timeout(expiry, &mut a.io);
    assert!(!shared.port_taken(next(a_relay)));
    assert_eq!(shared.ports().in_use(), range_len - 1);
    for held in [a_relay, b_relay, next(b_relay)].iter().chain(&b_plain) {
        assert!(
            shared.port_taken(*held),
            "{held} was freed by A's reservation"
        );
    }
    b.engine.handle_timeout(expiry, &mut b.io);
    assert_eq!(shared.ports().in_use(), range_len - 2);

    // The two freed ports are the only free ones: new allocations get exactly them.
    let later = at(RESERVATION_LIFETIME);
    let mut reused: Vec<SocketAddr> = [(&mut a, 20), (&mut b, 21)]
        .into_iter()
        .map(|(w, n)| relayed(&w.ask(later, n, METHOD_ALLOCATE, vec![Attr::udp_transport()])))
        .collect();
    reused.sort_unstable();
    let mut freed = vec![next(a_relay), next(b_relay)];
    freed.sort_unstable();
    assert_eq!(reused, freed);
    assert_eq!(shared.ports().in_use(), range_len);
}

/// A reservation claimed on another worker moves its port to that worker's allocation:
/// deleting the reserving allocation, and the reservation's expiry time passing, free
/// only the reserving allocation's own port.
#[test]
fn a_claimed_reservation_outlives_the_reserving_allocation() {
    let shared = Arc::new(Shared::new(
        sans_io::port_range(),
        std::time::Instant::now(),
    ));
    let (mut a, mut b) = (Worker::new(&shared), Worker::new(&shared));
    let t0 = Instant::now();
    let now = Now {
        mono: t0,
        unix: UNIX0,
    };
    let r = a.ask(now, 0, METHOD_ALLOCATE, even_port_reserving_next());
    let relay = relayed(&r);
    let token = r.msg.attr(ATTR_RESERVATION_TOKEN).expect("token").to_vec();
    assert_eq!(shared.ports().in_use(), 2);

    let claim = vec![
        Attr::udp_transport(),
        Attr::Raw(ATTR_RESERVATION_TOKEN, token),
    ];
    let claimed = relayed(&b.ask(now, 1, METHOD_ALLOCATE, claim));
    assert_eq!(claimed, next(relay));
    assert_eq!(shared.ports().in_use(), 2, "the claim took no other port");

    let deleted = a.ask(now, 0, METHOD_REFRESH, vec![Attr::lifetime(0)]);
    assert!(deleted.is_success(), "{:?}", deleted.code);
    assert_eq!(a.io.closed, [relay]);
    a.engine.handle_relay_closed(relay);
    a.engine
        .handle_timeout(t0 + RESERVATION_LIFETIME, &mut a.io);
    assert!(!shared.port_taken(relay));
    assert!(shared.port_taken(claimed), "B's relay port was freed");
    assert_eq!(shared.ports().in_use(), 1);
}
