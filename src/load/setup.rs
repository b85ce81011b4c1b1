//! The request phases, on a pool of blocking threads with the project's client:
//! setting allocations up (Allocate, then ChannelBind to the peer, each answering the
//! 401 challenge), refreshing them while they are held, and releasing them at the end.
//! Failures are tallied by cause: the error code a server answered, `timeout`, `io`,
//! or `protocol` (a success without the expected attribute).

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stun::attributes::ATTR_XOR_RELAYED_ADDRESS;

use super::conn::{Conn, Connector};
use super::pool::{self, Done};
use crate::client::{Attr, Reply, TurnClient};

/// Requests in progress at a time.
const PARALLEL: usize = 32;
/// The channel every allocation binds to its peer (channels are per allocation).
pub const CHANNEL: u16 = 0x4000;
/// REQUESTED-ADDRESS-FAMILY for IPv6 (RFC 6156); IPv4 is the default.
const FAMILY_IPV6: u8 = 2;
/// How long a release request waits for its answer (each of three tries).
const RELEASE_WAIT: Duration = Duration::from_millis(500);

/// Why one allocation could not be set up (or refreshed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The server answered with this error code.
    Code(u16),
    /// No answer in time, or the setup deadline passed first.
    Timeout,
    /// A socket error (refused, reset, TLS failure, out of descriptors...).
    Io,
    /// A success response that lacks what it must carry.
    Protocol,
}

impl Failure {
    /// The key this failure is counted under in the report.
    pub fn key(self) -> String {
        match self {
            Self::Code(code) => code.to_string(),
            Self::Timeout => "timeout".into(),
            Self::Io => "io".into(),
            Self::Protocol => "protocol".into(),
        }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Self::Timeout,
            _ => Self::Io,
        }
    }
}

/// Failures counted by [`Failure::key`].
pub type Failures = BTreeMap<String, u64>;

/// What the setup phase produced.
pub struct Established {
    pub conns: Vec<Conn>,
    pub failures: Failures,
    pub elapsed: Duration,
}

/// Sets up `count` allocations, each with a channel to `peer`, within an overall
/// deadline of 60 s plus 10 ms per allocation.
pub fn establish(connector: &Connector, peer: SocketAddr, count: usize) -> Established {
    let start = Instant::now();
    let deadline = start + phase_timeout(count);
    let done = pool::run((0..count).collect(), PARALLEL, deadline, |_| {
        let conn = connector.connect()?;
        let (conn, outcome) = connector.with_client(conn, |client| bind(client, peer))?;
        outcome.map(|()| conn)
    });
    let (conns, failures) = tally(done);
    Established {
        conns,
        failures,
        elapsed: start.elapsed(),
    }
}

/// Refreshes each allocation and its channel (which refreshes the permission too).
/// Allocations that fail are dropped from the returned list and counted.
pub fn refresh(connector: &Connector, peer: SocketAddr, conns: Vec<Conn>) -> (Vec<Conn>, Failures) {
    let deadline = Instant::now() + phase_timeout(conns.len());
    let done = pool::run(conns, PARALLEL, deadline, |conn| {
        let (conn, outcome) = connector.with_client(conn, |client| {
            success(client.refresh(None)?)?;
            success(client.channel_bind(CHANNEL, peer)?).map(drop)
        })?;
        outcome.map(|()| conn)
    });
    tally(done)
}

/// Deletes the allocations, best effort: a Refresh with LIFETIME 0 on UDP; closing the
/// connection on TCP/TLS does it there.
pub fn release(connector: &Connector, conns: Vec<Conn>) {
    let deadline =
        Instant::now() + Duration::from_secs(5) + Duration::from_millis(conns.len() as u64);
    let udp: Vec<Conn> = conns
        .into_iter()
        .filter(|conn| matches!(conn, Conn::Udp(_)))
        .collect();
    pool::run(udp, PARALLEL, deadline, |conn| {
        // Whatever the answer, the socket closes right after.
        let _ = connector.with_client(conn, |client| {
            client.timeout = RELEASE_WAIT;
            client.refresh(Some(0))
        });
    });
}

/// 60 s plus 10 ms per allocation.
fn phase_timeout(count: usize) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(10 * count as u64)
}

/// Allocate (a relayed address of the peer's family), then bind the channel to `peer`.
fn bind(client: &mut TurnClient, peer: SocketAddr) -> Result<(), Failure> {
    let family = match peer {
        SocketAddr::V4(_) => Vec::new(),
        SocketAddr::V6(_) => vec![Attr::family(FAMILY_IPV6)],
    };
    let reply = success(client.allocate(family)?)?;
    if reply.xor_address(ATTR_XOR_RELAYED_ADDRESS).is_none() {
        return Err(Failure::Protocol);
    }
    success(client.channel_bind(CHANNEL, peer)?).map(drop)
}

fn success(reply: Reply) -> Result<Reply, Failure> {
    match reply.code {
        None => Ok(reply),
        Some(code) => Err(Failure::Code(code)),
    }
}

/// Successes kept, failures counted; items the deadline left unstarted are timeouts.
fn tally<T>(done: Vec<Done<T, Result<Conn, Failure>>>) -> (Vec<Conn>, Failures) {
    let mut conns = Vec::new();
    let mut failures = Failures::new();
    for item in done {
        let failure = match item {
            Done::Ran(Ok(conn)) => {
                conns.push(conn);
                continue;
            }
            Done::Ran(Err(failure)) => failure,
            Done::Late(_) => Failure::Timeout,
        };
        *failures.entry(failure.key()).or_default() += 1;
    }
    (conns, failures)
}
