//! Resource attacks against a running `tern serve` on loopback: what unauthenticated
//! floods cost the server and what they get back (amplification).
//!
//! Every figure a test measures is printed (`cargo test --test attacks_resources --
//! --nocapture`) and bounded by an assertion. Only loopback addresses are used (the
//! whole of 127.0.0.0/8 is local on Linux, so sources on several IPs are possible);
//! every loop is bounded in count and time.

mod support;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use stun::agent::TransactionId;
use stun::attributes::{ATTR_MESSAGE_INTEGRITY, AttrType};
use stun::message::{CLASS_REQUEST, METHOD_ALLOCATE, METHOD_BINDING, METHOD_CONNECT, Method};
use support::{TernServer, relay_ports_arg};
use tern::client::{Attr, Outgoing, Signer, encode_message, new_transaction_id, to_reply};
use tern::proto::Request;

/// The per-IP budget for answers to unauthenticated sources, by default
/// (`[auth] unauthorized_burst` and `unauthorized_per_second`).
const DEFAULT_BURST: f64 = 500.0;
const DEFAULT_PER_SECOND: f64 = 100.0;

/// `tern serve` with a static user, a private relay range and `extra` arguments.
fn server(config: &str, extra: &[&str]) -> TernServer {
    let ports = relay_ports_arg();
    let mut args = vec!["--user", "alice:wonderland", "--ports", &ports];
    args.extend_from_slice(extra);
    TernServer::builder().config(config).args(&args).start()
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
        what: "Connect (RFC 6062, not implemented)",
        code: Some(400),
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
    let s = server("", &["--workers", WORKERS]);
    let ip = |i: usize| Ipv4Addr::new(127, 0, 0, 20 + i as u8);

    // One request of each kind, each from its own IP (its own budget).
    let singles: Vec<(usize, usize)> = UNAUTHENTICATED
        .iter()
        .enumerate()
        .map(|(i, kind)| single_exchange(s.addr, ip(2 * i), kind))
        .collect();

    // A flood of each kind at once, each from one more IP over 64 ports.
    let floods: Vec<Traffic> = thread::scope(|scope| {
        let handles: Vec<_> = UNAUTHENTICATED
            .iter()
            .enumerate()
            .map(|(i, kind)| {
                let server = s.addr;
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
    assert!(failures.is_empty(), "{}\n{}", failures.join("\n"), s.logs());
}
