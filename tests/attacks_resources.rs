//! Resource attacks against a running `tern serve` on loopback: what unauthenticated
//! floods cost the server and what they get back (amplification), relay-port
//! exhaustion, quotas and caps that no transport or reconnection escapes, stream
//! clients that stop reading, running out of file descriptors, and how a panic in a
//! connection's task is contained.
//!
//! Every figure a test measures is printed (`cargo test --test attacks_resources --
//! --nocapture`) and bounded by an assertion. Only loopback addresses are used (the
//! whole of 127.0.0.0/8 is local on Linux, so sources on several IPs are possible);
//! every loop is bounded in count and time.

#[path = "support/certs.rs"]
mod certs;
mod support;

use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::ops::Range;
use std::thread;
use std::time::{Duration, Instant};

use certs::{CertFiles, TestCert};
use stun::agent::TransactionId;
use stun::attributes::{ATTR_MESSAGE_INTEGRITY, AttrType};
use stun::message::{CLASS_REQUEST, METHOD_ALLOCATE, METHOD_BINDING, METHOD_CONNECT, Method};
use support::{
    TempDir, TernServer, admin_get, free_port_range, free_udp_port, relay_ports_arg, vm_rss_kb,
};
use tern::client::transport::tls_config;
use tern::client::{
    Attr, ClientTransport, Incoming, Outgoing, Signer, TurnClient, encode_message,
    new_transaction_id, to_reply,
};
use tern::load::server_stats::ProcSample;
use tern::net::accept::{StreamListener, serve};
use tern::net::lifecycle::Lifecycle;
use tern::net::stream::StreamEvent;
use tern::net::stream::{Accept, ConnectionLimits, StreamConfig, bind_listener, connection};
use tern::proto::Request;

/// The per-IP budget for answers to unauthenticated sources, by default
/// (`[auth] unauthorized_burst` and `unauthorized_per_second`).
const DEFAULT_BURST: f64 = 500.0;
const DEFAULT_PER_SECOND: f64 = 100.0;

const USER: &str = "alice";
const PASS: &str = "wonderland";

/// A server under attack, with its admin listener on to read its state.
struct Target {
    server: TernServer,
    admin: SocketAddr,
    tls: Option<TlsListener>,
}

/// A TLS listener and the certificate it serves.
struct TlsListener {
    addr: SocketAddr,
    cert: TestCert,
    /// Holds the certificate files.
    _dir: TempDir,
}

/// How a client reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Udp,
    Tcp,
    Tls,
}

const TRANSPORTS: [Via; 3] = [Via::Udp, Via::Tcp, Via::Tls];

impl Target {
    /// `tern serve` with users alice, bob and carol, loopback peers allowed, relay
    /// ports `ports`, a TLS listener when `tls`, `config` as its file and `extra`
    /// arguments.
    fn start(config: &str, ports: &str, tls: bool, extra: &[&str]) -> Target {
        let admin = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
        let mut args: Vec<String> = [
            "--user",
            "alice:wonderland",
            "--user",
            "bob:builder",
            "--user",
            "carol:singer",
            "--allow-peer",
            "127.0.0.0/8",
            "--ports",
            ports,
            "--admin",
            &admin.to_string(),
        ]
        .map(String::from)
        .to_vec();
        let tls = tls.then(|| {
            let dir = TempDir::new("tern-attacks-certs");
            let files = CertFiles::in_dir(dir.path());
            let cert = TestCert::new();
            cert.write(&files);
            let addr = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
            args.extend(files.args());
            args.extend(["--tls-listen".to_string(), addr.to_string()]);
            TlsListener {
                addr,
                cert,
                _dir: dir,
            }
        });
        args.extend(extra.iter().map(|a| a.to_string()));
        let server = TernServer::builder().config(config).args(&args).start();
        Target { server, admin, tls }
    }

    /// A client of `user` (password `pass`) over `via`.
    fn client(&self, via: Via, user: &str, pass: &str) -> TurnClient {
        let c = match via {
            Via::Udp => TurnClient::new(self.addr(), user, pass),
            Via::Tcp => TurnClient::connect_tcp(self.addr(), user, pass),
            Via::Tls => {
                let tls = self.tls.as_ref().expect("a server started with TLS");
                TurnClient::connect_tls(tls.addr, "localhost", tls.cert.roots(), user, pass)
            }
        };
        c.unwrap_or_else(|e| panic!("{via:?} client: {e}\n{}", self.server.logs()))
    }

    fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// The sum of every sample of the metric `family` (all label sets).
    fn metric_total(&self, family: &str) -> f64 {
        let (status, body) = admin_get(self.admin, "/metrics");
        assert_eq!(status, 200, "GET /metrics");
        body.lines()
            .filter(|l| {
                l.strip_prefix(family)
                    .is_some_and(|rest| rest.starts_with(['{', ' ']))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Allocations, permissions, channels and relay ports the server holds now.
    fn state(&self) -> [f64; 4] {
        [
            "tern_allocations",
            "tern_permissions",
            "tern_channels",
            "tern_relay_ports_in_use",
        ]
        .map(|m| self.metric_total(m))
    }
}

/// `n` non-blocking UDP sockets on `ip`: one source IP, many source ports, so the
/// kernel spreads them over every worker's listening socket.
fn sockets_on(ip: Ipv4Addr, n: usize) -> Vec<UdpSocket> {
    (0..n)
        .map(|_| {
            let s = UdpSocket::bind((ip, 0)).unwrap_or_else(|e| panic!("binding {ip}:0: {e}"));
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Unauthenticated requests, as small as an attacker would make them
// ---------------------------------------------------------------------------------------

/// No credentials at all.
const NOBODY: Signer<'static> = Signer {
    username: "",
    realm: "",
    nonce: "",
    password: "",
};

/// A comprehension-required attribute type no TURN server understands.
const UNKNOWN_REQUIRED: AttrType = AttrType(0x7ffe);

/// One kind of request a source can send without credentials, and the answer it earns.
struct Unauthenticated {
    what: &'static str,
    /// Expected ERROR-CODE (`None`: a success response).
    code: Option<u16>,
    method: Method,
    out: fn() -> Outgoing,
    signer: Signer<'static>,
}

impl Unauthenticated {
    fn request(&self, tid: TransactionId) -> Vec<u8> {
        encode_message(self.method, CLASS_REQUEST, tid, &(self.out)(), &self.signer)
    }
}

/// Every answer an unauthenticated source can get from tern.
const UNAUTHENTICATED: &[Unauthenticated] = &[
    Unauthenticated {
        what: "Binding",
        code: None,
        method: METHOD_BINDING,
        out: Outgoing::default,
        signer: NOBODY,
    },
    Unauthenticated {
        what: "Allocate without credentials",
        code: Some(401),
        method: METHOD_ALLOCATE,
        out: Outgoing::default,
        signer: NOBODY,
    },
    Unauthenticated {
        what: "Allocate signed with a forged nonce",
        code: Some(438),
        method: METHOD_ALLOCATE,
        out: || Outgoing {
            sign: true,
            ..Outgoing::default()
        },
        signer: Signer {
            username: "a",
            realm: "",
            nonce: "n",
            password: "",
        },
    },
    Unauthenticated {
        what: "Connect (RFC 6062), unsigned",
        code: Some(401),
        method: METHOD_CONNECT,
        out: Outgoing::default,
        signer: NOBODY,
    },
    Unauthenticated {
        what: "Binding with an unknown comprehension-required attribute",
        code: Some(420),
        method: METHOD_BINDING,
        out: || Outgoing {
            attrs: vec![Attr::Raw(UNKNOWN_REQUIRED, Vec::new())],
            ..Outgoing::default()
        },
        signer: NOBODY,
    },
    Unauthenticated {
        what: "Allocate with MESSAGE-INTEGRITY but no USERNAME, REALM or NONCE",
        code: Some(400),
        method: METHOD_ALLOCATE,
        out: || Outgoing {
            attrs: vec![Attr::Raw(ATTR_MESSAGE_INTEGRITY, vec![0; 20])],
            ..Outgoing::default()
        },
        signer: NOBODY,
    },
];

/// What a source sent and got back.
#[derive(Debug, Default, Clone, Copy)]
struct Traffic {
    sent: usize,
    sent_bytes: usize,
    replies: usize,
    reply_bytes: usize,
    elapsed: Duration,
}

impl Traffic {
    /// Bytes out of the server per byte in.
    fn factor(&self) -> f64 {
        self.reply_bytes as f64 / self.sent_bytes.max(1) as f64
    }

    /// Reads every datagram waiting on `sockets`.
    fn drain(&mut self, sockets: &[UdpSocket]) {
        let mut buf = [0u8; 2048];
        for s in sockets {
            while let Ok(n) = s.recv(&mut buf) {
                self.replies += 1;
                self.reply_bytes += n;
            }
        }
    }
}

/// Sends `request` `count` times to `server`, cycling over `sockets` and paced evenly
/// over `spread`, and counts what comes back (replies still in flight are waited for,
/// 300 ms, and that wait counts in `elapsed`).
fn flood(
    server: SocketAddr,
    sockets: &[UdpSocket],
    request: &[u8],
    count: usize,
    spread: Duration,
) -> Traffic {
    const BATCH: usize = 100;
    let mut t = Traffic::default();
    let start = Instant::now();
    for i in 0..count {
        if sockets[i % sockets.len()].send_to(request, server).is_ok() {
            t.sent += 1;
            t.sent_bytes += request.len();
        }
        if i % BATCH == BATCH - 1 {
            t.drain(sockets);
            let due = spread.mul_f64((i + 1) as f64 / count as f64);
            thread::sleep(due.saturating_sub(start.elapsed()));
        }
    }
    let settle = Instant::now() + Duration::from_millis(300);
    while Instant::now() < settle {
        t.drain(sockets);
        thread::sleep(Duration::from_millis(10));
    }
    t.elapsed = start.elapsed();
    t
}

/// One request of `kind` from a fresh socket on `ip`: (request size, reply size).
fn single_exchange(server: SocketAddr, ip: Ipv4Addr, kind: &Unauthenticated) -> (usize, usize) {
    let socket = UdpSocket::bind((ip, 0)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let request = kind.request(new_transaction_id());
    socket.send_to(&request, server).unwrap();
    let mut buf = [0u8; 2048];
    let n = socket
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("{}: no answer to a single request: {e}", kind.what));
    let reply = to_reply(Request::parse(&buf[..n]).expect("the answer parses"));
    assert_eq!(reply.code, kind.code, "{}: unexpected answer", kind.what);
    (request.len(), n)
}

/// The amplification a reflector gets from tern. Answers to sources that have not
/// authenticated are larger than the requests (a Binding answer is twice a bare
/// Binding), so each source IP gets a budget of them (burst, then a rate) and a
/// flood's bytes out stay below its bytes in. The budget is per IP over all workers:
/// a flood from many ports of one IP, which the kernel spreads over every worker, gets
/// no more than one from a single port.
#[test]
fn unauthenticated_answers_amplify_less_than_one_under_a_flood() {
    const WORKERS: &str = "4";
    const FLOOD: usize = 20_000;
    const SPREAD: Duration = Duration::from_secs(2);
    let t = Target::start("", &relay_ports_arg(), false, &["--workers", WORKERS]);
    let ip = |i: usize| Ipv4Addr::new(127, 0, 0, 20 + i as u8);

    // One request of each kind, each from its own IP (its own budget).
    let singles: Vec<(usize, usize)> = UNAUTHENTICATED
        .iter()
        .enumerate()
        .map(|(i, kind)| single_exchange(t.addr(), ip(2 * i), kind))
        .collect();

    // A flood of each kind at once, each from one more IP over 64 ports.
    let floods: Vec<Traffic> = thread::scope(|scope| {
        let handles: Vec<_> = UNAUTHENTICATED
            .iter()
            .enumerate()
            .map(|(i, kind)| {
                let server = t.addr();
                scope.spawn(move || {
                    let sockets = sockets_on(ip(2 * i + 1), 64);
                    let request = kind.request(new_transaction_id());
                    flood(server, &sockets, &request, FLOOD, SPREAD)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let mut failures = Vec::new();
    for ((kind, (req, reply)), t) in UNAUTHENTICATED.iter().zip(&singles).zip(&floods) {
        let budget = DEFAULT_BURST + DEFAULT_PER_SECOND * t.elapsed.as_secs_f64();
        println!(
            "{}: one request of {req} B gets {reply} B (x{:.2}); a flood of {} requests \
             ({} B) from one IP over {:.2?} got {} answers ({} B): factor {:.3} \
             (budget {budget:.0} answers)",
            kind.what,
            *reply as f64 / *req as f64,
            t.sent,
            t.sent_bytes,
            t.elapsed,
            t.replies,
            t.reply_bytes,
            t.factor(),
        );
        if t.sent < FLOOD * 9 / 10 {
            failures.push(format!(
                "{}: only {} requests could be sent",
                kind.what, t.sent
            ));
        }
        // Rounding the budget over the workers may add one answer per worker.
        if t.replies as f64 > budget + 4.0 {
            failures.push(format!(
                "{}: {} answers to one IP, over its budget of {budget:.0}",
                kind.what, t.replies
            ));
        }
        if t.factor() > 1.0 {
            failures.push(format!(
                "{}: flood amplification factor {:.3} > 1",
                kind.what,
                t.factor()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        t.server.logs()
    );
}

// ---------------------------------------------------------------------------------------
// A flood of unauthenticated Allocates
// ---------------------------------------------------------------------------------------

/// A source of the Allocate flood: a socket and its three unauthenticated Allocates:
/// unsigned (401); signed with a forged nonce (438); signed with the nonce the server
/// gave this source and an unknown user (401 after the credential lookup).
struct FloodSource {
    socket: UdpSocket,
    templates: [Vec<u8>; 3],
    /// Where the 16-byte username sits in the signed ones.
    username: Range<usize>,
}

impl FloodSource {
    fn new(server: SocketAddr, socket: UdpSocket) -> FloodSource {
        const NAME: &str = "user-placeholder";
        socket.set_nonblocking(false).unwrap();
        let client = TurnClient::with_socket(socket.try_clone().unwrap(), server, NAME, "x");
        let mut client = client.unwrap();
        let challenge = client
            .allocate(vec![])
            .unwrap_or_else(|e| panic!("no 401 for {}: {e}", client.local_addr()));
        assert_eq!(challenge.code, Some(401));
        socket.set_nonblocking(true).unwrap();
        let encode = |out: &Outgoing, signer: &Signer| {
            let tid = new_transaction_id();
            encode_message(METHOD_ALLOCATE, CLASS_REQUEST, tid, out, signer)
        };
        let sign = |nonce: &str| {
            let signer = Signer {
                username: NAME,
                realm: client.realm().unwrap(),
                nonce,
                password: "x",
            };
            encode(&tern::client::signed(vec![Attr::udp_transport()]), &signer)
        };
        let unsigned = Outgoing {
            attrs: vec![Attr::udp_transport()],
            ..Outgoing::default()
        };
        let real = sign(client.nonce().unwrap());
        let at = real
            .windows(NAME.len())
            .position(|w| w == NAME.as_bytes())
            .expect("the username is in the request");
        FloodSource {
            templates: [encode(&unsigned, &NOBODY), sign("forged-nonce"), real],
            username: at..at + NAME.len(),
            socket,
        }
    }

    /// Request `kind` (0 to 2) with a fresh transaction id and, signed, a fresh
    /// username.
    fn packet(&self, kind: usize) -> Vec<u8> {
        let mut packet = self.templates[kind].clone();
        rand::Rng::fill(&mut rand::rng(), &mut packet[8..20]);
        if kind > 0 {
            let user = format!("{:016x}", rand::random::<u64>());
            packet[self.username.clone()].copy_from_slice(user.as_bytes());
        }
        packet
    }
}

/// Sends `count` packets round-robin over `sources` and their three kinds, paced in
/// batches so the server sees them all. Returns how many were sent.
fn allocate_flood(server: SocketAddr, sources: &[FloodSource], count: usize) -> usize {
    const BATCH: usize = 400;
    let mut sent = 0;
    let mut buf = [0u8; 2048];
    for i in 0..count {
        let source = &sources[i % sources.len()];
        let packet = source.packet((i / sources.len()) % 3);
        if source.socket.send_to(&packet, server).is_ok() {
            sent += 1;
        }
        if i % BATCH == BATCH - 1 {
            for source in sources {
                while source.socket.recv(&mut buf).is_ok() {}
            }
            thread::sleep(Duration::from_millis(2));
        }
    }
    sent
}

/// 100,000 unauthenticated Allocates from 128 source addresses on nine IPs: the
/// server's memory does not grow (no state per source, per username or per nonce) and
/// nothing is allocated.
#[test]
fn unauthenticated_allocate_flood_keeps_memory_flat() {
    const WARM_UP: usize = 10_000;
    const FLOOD: usize = 100_000;
    /// Growth allowed over the flood (measured: 0 kB): room for allocator noise, far
    /// below what any per-request state would cost (16 bytes kept per request is
    /// 1.6 MB).
    const MAX_GROWTH_KB: u64 = 512;
    let t = Target::start("", &relay_ports_arg(), false, &[]);
    let mut sockets = sockets_on(Ipv4Addr::LOCALHOST, 64);
    for last in 2..=9 {
        sockets.extend(sockets_on(Ipv4Addr::new(127, 0, 0, last), 8));
    }
    let sources: Vec<FloodSource> = sockets
        .into_iter()
        .map(|socket| FloodSource::new(t.addr(), socket))
        .collect();
    let seen = || t.metric_total("tern_auth_failures_total");

    // The warm-up includes a first look at /metrics (its buffers stay).
    allocate_flood(t.addr(), &sources, WARM_UP);
    thread::sleep(Duration::from_millis(300));
    let seen_before = seen();
    let rss_before = vm_rss_kb(t.server.pid());
    let start = Instant::now();
    let sent = allocate_flood(t.addr(), &sources, FLOOD);
    let took = start.elapsed();
    thread::sleep(Duration::from_millis(300));
    let rss_after = vm_rss_kb(t.server.pid());
    let seen_after = seen();
    let handled = seen_after - seen_before;
    println!(
        "flood: {sent} unauthenticated Allocates from {} sources in {took:.2?}; the server \
         handled {handled} of them; VmRSS {rss_before} kB before, {rss_after} kB after \
         ({:+} kB)",
        sources.len(),
        rss_after as i64 - rss_before as i64
    );
    assert!(
        handled >= 0.8 * FLOOD as f64,
        "the server handled only {handled} of {FLOOD} requests: the flood did not reach it"
    );
    assert!(
        rss_after <= rss_before + MAX_GROWTH_KB,
        "VmRSS grew from {rss_before} kB to {rss_after} kB over the flood"
    );
    assert_eq!(
        t.state(),
        [0.0; 4],
        "allocations, permissions, channels, ports in use"
    );
}

// ---------------------------------------------------------------------------------------
// Relay ports, quotas and caps
// ---------------------------------------------------------------------------------------

/// The ERROR-CODE of an Allocate by `c` (`None`: success).
fn allocate_code(c: &mut TurnClient) -> Option<u16> {
    c.allocate(vec![])
        .unwrap_or_else(|e| panic!("Allocate from {}: {e}", c.local_addr()))
        .code
}

/// Allocates over `c`, retrying for up to 2 s while the server lets go of what a
/// deletion or a closed connection freed (its relay socket closes, its quota count
/// drops, asynchronously on another worker).
fn allocate_when_freed(c: &mut TurnClient, refused: u16) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match allocate_code(c) {
            None => return,
            Some(code) if code == refused && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(20));
            }
            other => panic!("Allocate after freeing: {other:?} (still refused after 2 s?)"),
        }
    }
}

/// Four relay ports shared by every transport: the fifth Allocate, over any of them,
/// is 508, however often it is tried, and a refused Allocate costs the user nothing
/// (a quota it leaked would turn the next 508 into a 486). Deleting one allocation
/// lets the next one in.
#[test]
fn port_exhaustion_is_508_on_every_transport_and_recovers() {
    let (min, max) = free_port_range(4);
    let t = Target::start(
        "[server]\nworkers = 2\n[limits]\nuser_allocations = 5\n",
        &format!("{min}-{max}"),
        true,
        &[],
    );
    let mut held: Vec<TurnClient> = [Via::Udp, Via::Udp, Via::Tcp, Via::Tls]
        .into_iter()
        .map(|via| {
            let mut c = t.client(via, USER, PASS);
            assert_eq!(allocate_code(&mut c), None, "{via:?} allocation");
            c
        })
        .collect();
    assert_eq!(t.metric_total("tern_relay_ports_free"), 0.0);
    let mut late: Vec<TurnClient> = TRANSPORTS.map(|via| t.client(via, USER, PASS)).into();
    for round in 0..5 {
        for (c, via) in late.iter_mut().zip(TRANSPORTS) {
            assert_eq!(
                allocate_code(c),
                Some(508),
                "round {round}: a fifth allocation over {via:?}"
            );
        }
    }
    let refused = t.metric_total("tern_responses_total{code=\"508\"}");
    println!(
        "4 relay ports: 15 Allocates over UDP, TCP and TLS refused with 508 ({refused} counted)"
    );
    assert!(held[0].refresh(Some(0)).unwrap().is_success());
    allocate_when_freed(&mut late[2], 508);
    assert_eq!(allocate_code(&mut late[0]), Some(508), "full again");
    assert_eq!(t.state()[3], 4.0, "relay ports in use");
    drop(held.remove(2));
    allocate_when_freed(&mut late[1], 508);
}

/// `user_allocations = 2`: a third allocation for the user is refused over every
/// transport, from new sockets and new connections alike; other users are not held
/// back; closing a TCP connection frees its allocation's place.
#[test]
fn user_quota_holds_across_transports_and_reconnections() {
    let t = Target::start(
        "[limits]\nuser_allocations = 2\n",
        &relay_ports_arg(),
        true,
        &[],
    );
    let mut udp = t.client(Via::Udp, USER, PASS);
    assert_eq!(allocate_code(&mut udp), None);
    let mut tcp = t.client(Via::Tcp, USER, PASS);
    assert_eq!(allocate_code(&mut tcp), None);
    for via in TRANSPORTS {
        for attempt in 0..2 {
            // A fresh socket or connection each time: reconnecting changes nothing.
            let mut c = t.client(via, USER, PASS);
            assert_eq!(
                allocate_code(&mut c),
                Some(486),
                "a third allocation for alice over {via:?} (attempt {attempt})"
            );
        }
    }
    let mut bob = t.client(Via::Tls, "bob", "builder");
    assert_eq!(allocate_code(&mut bob), None, "bob has a quota of his own");
    assert_eq!(t.metric_total("tern_quota_rejections_total"), 6.0);

    let mut tls = t.client(Via::Tls, USER, PASS);
    assert_eq!(allocate_code(&mut tls), Some(486));
    drop(tcp);
    allocate_when_freed(&mut tls, 486);
    let mut udp2 = t.client(Via::Udp, USER, PASS);
    assert_eq!(allocate_code(&mut udp2), Some(486), "at the quota again");
    assert!(udp.refresh(None).unwrap().is_success());
}

/// `total_allocations = 3` counts every user over every transport.
#[test]
fn total_quota_holds_across_users_and_transports() {
    let t = Target::start(
        "[limits]\ntotal_allocations = 3\n",
        &relay_ports_arg(),
        true,
        &[],
    );
    let users = [(USER, PASS), ("bob", "builder"), ("carol", "singer")];
    let mut holders: Vec<TurnClient> = users
        .iter()
        .zip(TRANSPORTS)
        .map(|(&(user, pass), via)| {
            let mut c = t.client(via, user, pass);
            assert_eq!(allocate_code(&mut c), None, "{user} over {via:?}");
            c
        })
        .collect();
    for (&(user, pass), via) in users.iter().zip(TRANSPORTS.iter().cycle().skip(1)) {
        let mut c = t.client(*via, user, pass);
        assert_eq!(
            allocate_code(&mut c),
            Some(486),
            "{user} over {via:?}: total quota"
        );
    }
    // Bob's TCP connection closes: his place is free for anyone.
    drop(holders.remove(1));
    let mut carol = t.client(Via::Udp, "carol", "singer");
    allocate_when_freed(&mut carol, 486);
    let mut alice = t.client(Via::Tls, USER, PASS);
    assert_eq!(allocate_code(&mut alice), Some(486), "full again");
}

/// A UDP socket standing in for a peer on its own loopback IP (permissions are per IP).
fn peer_on(last_octet: u8) -> UdpSocket {
    let socket = UdpSocket::bind((Ipv4Addr::new(127, 0, 0, last_octet), 0)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    socket
}

/// Whether `peer`'s datagram through `relay` reaches the client (it does only with a
/// permission for the peer's IP).
fn reaches_client(c: &mut TurnClient, peer: &UdpSocket, relay: SocketAddr) -> bool {
    let payload = format!("from {}", peer.local_addr().unwrap());
    peer.send_to(payload.as_bytes(), relay).unwrap();
    let deadline = Instant::now() + Duration::from_millis(400);
    while let Some((_, data)) = c
        .recv_data(deadline.saturating_duration_since(Instant::now()))
        .unwrap()
    {
        if data == payload.as_bytes() {
            return true;
        }
    }
    false
}

/// Whether ChannelData on `channel` reaches `peer`.
fn channel_reaches(c: &mut TurnClient, channel: u16, peer: &UdpSocket) -> bool {
    let payload = format!("on {channel:#06x}");
    c.send_channel_data(channel, payload.as_bytes()).unwrap();
    let mut buf = [0u8; 256];
    matches!(peer.recv(&mut buf), Ok(n) if buf[..n] == *payload.as_bytes())
}

/// `permissions_per_allocation = 3`, `channels_per_allocation = 2`: a request that
/// would pass a cap is 508 and installs nothing (not even the part that would fit);
/// refreshing what exists at the cap still works.
#[test]
fn permission_and_channel_caps_refuse_the_excess_and_install_nothing() {
    let t = Target::start(
        "[limits]\npermissions_per_allocation = 3\nchannels_per_allocation = 2\n",
        &relay_ports_arg(),
        false,
        &[],
    );
    let mut c = t.client(Via::Udp, USER, PASS);
    let relay = c
        .allocate(vec![])
        .unwrap()
        .xor_address(stun::attributes::ATTR_XOR_RELAYED_ADDRESS)
        .expect("relayed address");
    let peers: Vec<UdpSocket> = (2..=6).map(peer_on).collect();
    let addr = |i: usize| peers[i].local_addr().unwrap();
    let permit = |c: &mut TurnClient, which: &[usize]| {
        let addrs: Vec<SocketAddr> = which.iter().map(|&i| addr(i)).collect();
        c.create_permission(&addrs).unwrap().code
    };

    assert_eq!(permit(&mut c, &[0, 1]), None);
    assert_eq!(permit(&mut c, &[2, 3]), Some(508), "2 + 2 over a cap of 3");
    assert!(
        !reaches_client(&mut c, &peers[2], relay),
        "half of a refused request installed"
    );
    assert_eq!(
        permit(&mut c, &[0, 2]),
        None,
        "one new and one refreshed fit"
    );
    assert_eq!(permit(&mut c, &[3]), Some(508), "a fourth");
    assert_eq!(permit(&mut c, &[0, 1, 2]), None, "refreshing at the cap");
    assert!(
        reaches_client(&mut c, &peers[0], relay),
        "a permitted peer gets through"
    );
    assert!(
        !reaches_client(&mut c, &peers[3], relay),
        "the refused fourth peer"
    );
    assert_eq!(t.metric_total("tern_permissions"), 3.0);

    let bind =
        |c: &mut TurnClient, channel: u16, i: usize| c.channel_bind(channel, addr(i)).unwrap().code;
    assert_eq!(bind(&mut c, 0x4000, 0), None);
    assert_eq!(bind(&mut c, 0x4001, 1), None);
    assert_eq!(bind(&mut c, 0x4002, 2), Some(508), "a third channel");
    assert!(
        !channel_reaches(&mut c, 0x4002, &peers[2]),
        "the refused channel relays"
    );
    assert_eq!(
        bind(&mut c, 0x4000, 0),
        None,
        "refreshing a channel at the cap"
    );
    assert!(channel_reaches(&mut c, 0x4001, &peers[1]));
    // A channel to a peer without a permission, with permissions at their cap.
    assert_eq!(bind(&mut c, 0x4003, 4), Some(508));
    assert!(
        !reaches_client(&mut c, &peers[4], relay),
        "a permission came with it"
    );
    assert_eq!(t.metric_total("tern_channels"), 2.0);
    assert_eq!(t.metric_total("tern_permissions"), 3.0);
}

// ---------------------------------------------------------------------------------------
// A stream client that stops reading
// ---------------------------------------------------------------------------------------

/// A client over `via` (TCP or TLS) whose socket has a 4 KB receive buffer, so the
/// server's writes stall as soon as it stops reading.
fn slow_client(t: &Target, via: Via) -> TurnClient {
    let server = match via {
        Via::Tcp => t.addr(),
        Via::Tls => t.tls.as_ref().expect("a TLS listener").addr,
        Via::Udp => unreachable!("UDP clients do not stall the server"),
    };
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket
        .connect_timeout(&server.into(), Duration::from_secs(2))
        .unwrap();
    let tcp: TcpStream = socket.into();
    let transport = match via {
        Via::Tls => {
            let roots = t.tls.as_ref().unwrap().cert.roots();
            let config = tls_config(roots).unwrap();
            ClientTransport::tls_over(tcp, "localhost", config, Duration::from_secs(2)).unwrap()
        }
        _ => ClientTransport::tcp_over(tcp).unwrap(),
    };
    TurnClient::with_transport(transport, server, USER, PASS)
}

/// A client that allocates over TCP or TLS, binds a channel and stops reading while
/// its peer floods the relay: the server holds at most its small write queue for it
/// (memory stays flat while megabytes are thrown at the client), and once a write has
/// waited `frame_timeout` the connection and its allocation are let go.
#[test]
fn stalled_stream_reader_costs_bounded_memory_and_is_let_go() {
    const FRAME_TIMEOUT: Duration = Duration::from_secs(2);
    const DATAGRAM: usize = 60_000;
    /// Memory the server may hold for the stalled client: its write queue (8 frames of
    /// 60 KB), TLS buffers, allocator slack.
    const MAX_GROWTH_KB: u64 = 4 * 1024;
    let t = Target::start(
        "[limits]\nwrite_queue = 8\nframe_timeout = 2\n",
        &relay_ports_arg(),
        true,
        &[],
    );
    let pid = t.server.pid();
    for via in [Via::Tcp, Via::Tls] {
        let mut c = slow_client(&t, via);
        let relay = c
            .allocate(vec![])
            .unwrap()
            .xor_address(stun::attributes::ATTR_XOR_RELAYED_ADDRESS)
            .expect("relayed address");
        let flooder = UdpSocket::bind("127.0.0.1:0").unwrap();
        let r = c
            .channel_bind(0x4000, flooder.local_addr().unwrap())
            .unwrap();
        assert!(r.is_success(), "{via:?} ChannelBind: {:?}", r.code);
        let allocated = || t.metric_total("tern_allocations");
        assert_eq!(allocated(), 1.0);
        let rss_before = vm_rss_kb(pid);

        // Up to 24 MB at the client, paced so the relay keeps up; until the server
        // lets the client go, and for 8 s at most.
        let big = vec![0xab; DATAGRAM];
        let start = Instant::now();
        let (mut sent, mut peak, mut let_go) = (0usize, rss_before, None);
        while start.elapsed() < Duration::from_secs(8) {
            if sent < 400 {
                let _ = flooder.send_to(&big, relay);
                sent += 1;
            }
            thread::sleep(Duration::from_millis(2));
            if sent % 10 == 0 {
                peak = peak.max(vm_rss_kb(pid));
                if allocated() == 0.0 {
                    let_go = Some(start.elapsed());
                    break;
                }
            }
        }
        let rss_after = vm_rss_kb(pid);
        println!(
            "{via:?} client not reading: {} MB thrown at it; VmRSS {rss_before} kB before, \
             peak {peak} kB ({:+} kB), {rss_after} kB after; let go after {let_go:.2?}",
            sent * DATAGRAM / 1_000_000,
            peak as i64 - rss_before as i64,
        );
        let let_go = let_go.unwrap_or_else(|| {
            panic!(
                "{via:?}: the stalled client was still allocated after 8 s\n{}",
                t.server.logs()
            )
        });
        assert!(
            let_go >= FRAME_TIMEOUT && let_go <= FRAME_TIMEOUT + Duration::from_secs(3),
            "{via:?}: let go after {let_go:.2?}, expected frame_timeout ({FRAME_TIMEOUT:?}) \
             after the writes stalled"
        );
        assert!(
            peak <= rss_before + MAX_GROWTH_KB,
            "{via:?}: VmRSS rose from {rss_before} kB to {peak} kB for one stalled client"
        );
        // The allocation goes first; its connection's task ends a moment later.
        let deadline = Instant::now() + Duration::from_secs(2);
        while t.metric_total("tern_connections") != 0.0 {
            assert!(Instant::now() < deadline, "{via:?} connection not closed");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Out of file descriptors
// ---------------------------------------------------------------------------------------

/// The open file descriptors of process `pid`.
fn open_fds(pid: u32) -> Vec<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("listing /proc/{pid}/fd: {e}"))
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Sets the soft limit on open files of process `pid` (its hard limit stays, so the
/// old limit can be put back); returns the old soft limit.
fn set_open_files_limit(pid: u32, soft: u64) -> u64 {
    let pid = libc::pid_t::try_from(pid).unwrap();
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit reads `new` and writes `old`, both valid for the call.
    let read = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(
        read,
        0,
        "prlimit {pid}: {}",
        std::io::Error::last_os_error()
    );
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: as above.
    let set = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(set, 0, "prlimit {pid}: {}", std::io::Error::last_os_error());
    old.rlim_cur
}

/// CPU time process `pid` has used so far.
fn cpu_time(pid: u32) -> Duration {
    let sample = ProcSample::take(pid).unwrap_or_else(|e| panic!("reading /proc/{pid}: {e}"));
    Duration::from_micros(sample.cpu_us)
}

/// The server runs out of file descriptors (its open-files limit is lowered to what it
/// holds plus one or two): an Allocate that needs a relay socket is answered 508 at
/// once; a TCP connection the listener cannot accept waits in the backlog while accept
/// backs off instead of spinning; UDP service goes on; freeing a descriptor lets the
/// waiting connection in, and the old limit brings allocations back.
#[test]
fn out_of_file_descriptors_is_508_without_spinning_and_service_resumes() {
    /// A spinning accept loop burns a whole core; backing off costs almost nothing.
    const MAX_CPU_SHARE: f64 = 0.2;
    let mut t = Target::start("", &relay_ports_arg(), false, &[]);
    let pid = t.server.pid();
    let mut clients: Vec<TurnClient> = (0..6).map(|_| t.client(Via::Udp, USER, PASS)).collect();
    // New descriptors take the lowest free numbers: the limit is where exactly
    // `SPARE` numbers below it are free (descriptors inherited high up stay open).
    const SPARE: usize = 2;
    let fds = open_fds(pid);
    let free_below = |limit: u64| limit as usize - fds.iter().filter(|&&fd| fd < limit).count();
    let limit = (0..).find(|&l| free_below(l) == SPARE).unwrap();
    let original = set_open_files_limit(pid, limit);
    println!(
        "server holds {} descriptors; open-files limit lowered from {original} to {limit}",
        fds.len()
    );

    let (mut codes, mut slowest) = (Vec::new(), Duration::ZERO);
    for c in &mut clients {
        let start = Instant::now();
        codes.push(allocate_code(c));
        slowest = slowest.max(start.elapsed());
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "an Allocate took {:.2?}",
            start.elapsed()
        );
    }
    println!(
        "Allocates with {SPARE} spare descriptors: {codes:?}, the slowest answered in {slowest:.2?}"
    );
    let allocated = codes.iter().take_while(|c| c.is_none()).count();
    assert_eq!(
        allocated, SPARE,
        "one relay socket per spare descriptor: {codes:?}"
    );
    assert!(
        codes[SPARE..].iter().all(|&c| c == Some(508)),
        "then 508: {codes:?}"
    );

    // A TCP connection the server cannot accept, with a Binding waiting on it.
    let tcp = TcpStream::connect_timeout(&t.addr(), Duration::from_secs(2)).unwrap();
    let transport = ClientTransport::Stream {
        stream: Box::new(tcp.try_clone().unwrap()),
        tcp,
        pending: Vec::new(),
    };
    let mut waiting = TurnClient::with_transport(transport, t.addr(), USER, PASS);
    let (tid, binding) = waiting.encode(METHOD_BINDING, &Outgoing::default());
    waiting.send_raw(&binding).unwrap();
    let (cpu_before, start) = (cpu_time(pid), Instant::now());
    thread::sleep(Duration::from_secs(2));
    let (cpu, window) = (cpu_time(pid) - cpu_before, start.elapsed());
    let accept_failures = t.server.stderr().matches("accept failed").count();
    println!(
        "accept failing for {window:.2?}: server CPU {cpu:.2?} ({:.1}% of a core), {accept_failures} \
         accept failures logged",
        100.0 * cpu.as_secs_f64() / window.as_secs_f64()
    );
    assert!(
        accept_failures > 0,
        "accept never failed: the test did not exhaust descriptors\n{}",
        t.server.logs()
    );
    assert!(
        cpu.as_secs_f64() < MAX_CPU_SHARE * window.as_secs_f64(),
        "the server used {cpu:.2?} of CPU in {window:.2?} while it could not accept"
    );
    assert!(
        accept_failures as f64 <= 20.0 * window.as_secs_f64() + 5.0,
        "{accept_failures} accept failures in {window:.2?}: no back-off"
    );
    assert!(
        waiting.recv(Duration::from_millis(100)).unwrap().is_none(),
        "a connection over the limit was served"
    );
    support::stun_binding(t.addr(), Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("UDP Binding while out of descriptors: {e}"));

    // Deleting an allocation closes its relay socket: the waiting connection gets in.
    assert!(clients[0].refresh(Some(0)).unwrap().is_success());
    let start = Instant::now();
    match waiting.recv(Duration::from_secs(2)).unwrap() {
        Some(Incoming::Stun(msg)) if msg.transaction_id() == tid => {}
        other => {
            panic!("the waiting connection was not served once a descriptor was free: {other:?}")
        }
    }
    println!(
        "the waiting connection was served {:.2?} after a descriptor was freed",
        start.elapsed()
    );
    set_open_files_limit(pid, original);
    assert_eq!(
        allocate_code(&mut clients[SPARE + 1]),
        None,
        "allocating with the old limit back"
    );
    t.server.assert_running();
}

// ---------------------------------------------------------------------------------------
// A panic in a connection's task
// ---------------------------------------------------------------------------------------

/// A TCP connection to `server` from `ip` (any loopback address).
fn connect_from(ip: Ipv4Addr, server: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((ip, 0)).into()).unwrap();
    socket
        .connect_timeout(&server.into(), Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connecting from {ip} to {server}: {e}"));
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    stream
}

/// Sends a Binding request on `stream` and reads back what the server writes: the
/// same bytes when echoed, `Err` when the connection is closed first.
fn echo(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Write};
    let (_, request) = TurnClient::new("127.0.0.1:9".parse().unwrap(), "", "")
        .unwrap()
        .encode(METHOD_BINDING, &Outgoing::default());
    stream.write_all(&request)?;
    let mut back = vec![0; request.len()];
    stream.read_exact(&mut back)?;
    assert_eq!(back, request, "echoed bytes");
    Ok(back)
}

/// Waits up to 2 s for the open connections counted by `limits` to come down to `n`.
fn wait_open(limits: &ConnectionLimits, n: usize) -> Result<(), usize> {
    let deadline = Instant::now() + Duration::from_secs(2);
    while limits.open() != n {
        if Instant::now() > deadline {
            return Err(limits.open());
        }
        thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Nothing reachable from the network is known to panic in a connection's task, so
/// this makes one panic for real: the same accept loop and connection code as `tern
/// serve`, on the same kind of runtime, with a write queue of 0, which tokio refuses
/// with a panic as each connection starts (config validation keeps 0 from the binary).
/// Each connection is a task of its own; tokio catches its panic, and unwinding drops
/// its connection slot. A second listener on the same runtime, with a stand-in worker
/// that echoes frames, shows the process, its other connections and the accept loops
/// carry on, and that the panicked connections' slots (one per IP here) came back.
/// The panic messages printed during this test are expected.
#[test]
fn a_panicking_connection_task_harms_no_other_connection() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let limits = ConnectionLimits::new(100, 1);
    let config = |write_queue| StreamConfig {
        handshake_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(30),
        frame_timeout: Duration::from_secs(2),
        max_frame: 65_552,
        write_queue,
        relay_buffer: 16 << 10,
        limits: limits.clone(),
        max_dtls_handshakes: 1,
        proxy_from: Vec::new().into(),
        front: None,
        metrics: std::sync::Arc::new(tern::metrics::Metrics::new()),
    };
    let (handoff, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    let (events, mut worker) = tokio::sync::mpsc::channel(64);
    let (_lifecycle, state) = tokio::sync::watch::channel(Lifecycle::Serving);
    let bind = || runtime.block_on(async { bind_listener("127.0.0.1:0".parse().unwrap()) });
    let (healthy, doomed) = (bind().unwrap(), bind().unwrap());
    let healthy_addr = healthy.local_addr().unwrap();
    let doomed_addr = doomed.local_addr().unwrap();
    let plain = |socket| StreamListener {
        socket,
        accept: Accept::Plain(None),
        proxy_protocol: false,
    };
    // Each listener's rules, as `tern serve` hands them over (a reload would send new ones).
    let (_healthy_config, healthy_config) = tokio::sync::watch::channel(config(8));
    let (_doomed_config, doomed_config) = tokio::sync::watch::channel(config(0));
    runtime.spawn(serve(
        plain(healthy),
        healthy_config,
        vec![handoff.clone()],
        state.clone(),
    ));
    runtime.spawn(serve(plain(doomed), doomed_config, vec![handoff], state));
    // The worker's part: each accepted connection becomes a task of its own.
    runtime.spawn(async move {
        while let Some(incoming) = accepted.recv().await {
            tokio::spawn(connection(incoming, events.clone()));
        }
    });
    runtime.spawn(async move {
        let mut connections = std::collections::HashMap::new();
        while let Some(event) = worker.recv().await {
            match event {
                StreamEvent::Opened(tuple, conn) => {
                    connections.insert(tuple, conn);
                }
                StreamEvent::Frame(tuple, bytes) => {
                    if let Some(conn) = connections.get(&tuple) {
                        let _ = conn.writer.try_send(bytes);
                    }
                }
                StreamEvent::Closed(tuple) => {
                    connections.remove(&tuple);
                }
                // No TCP allocations here.
                StreamEvent::RelayEnded(_) => {}
            }
        }
    });

    let mut survivor = connect_from(Ipv4Addr::new(127, 0, 0, 2), healthy_addr);
    echo(&mut survivor).expect("an echo before the panics");
    let panicker = Ipv4Addr::new(127, 0, 0, 3);
    for i in 0..5 {
        let mut c = connect_from(panicker, doomed_addr);
        assert!(
            echo(&mut c).is_err(),
            "connection {i}: its task was to panic"
        );
        wait_open(&limits, 1)
            .unwrap_or_else(|open| panic!("connection {i} kept its slot: {open} open"));
    }
    echo(&mut survivor).expect("an echo on a connection opened before the panics");
    let mut after = connect_from(panicker, healthy_addr);
    echo(&mut after).expect("a new connection from the IP whose connections panicked");
    assert_eq!(limits.open(), 2);
}

/// `panic = "abort"` in a profile would turn any panic in a connection's task into
/// the end of the process: unwinding is what lets tokio contain it.
#[test]
fn no_profile_aborts_on_panic() {
    let manifest: toml::Table = include_str!("../Cargo.toml").parse().unwrap();
    let profiles = manifest.get("profile").and_then(toml::Value::as_table);
    for (name, profile) in profiles.into_iter().flatten() {
        assert_ne!(
            profile.get("panic").and_then(toml::Value::as_str),
            Some("abort"),
            "profile.{name} aborts on panic"
        );
    }
}
