//! Between accepting a connection and handing it to its worker, on the listeners that
//! need it: the PROXY protocol header that says who the client is (and so which worker
//! and which per-IP limit it belongs to), and on a TLS port shared with a website, the
//! ClientHello that says whether the connection is tern's at all.
//!
//! This runs on the listener's runtime, one task per connection, within the handshake
//! deadline; the connection holds its slot throughout, so a client that connects and
//! says nothing costs a bounded slot for a bounded time, as on any listener.

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use super::front::{self, FrontRules, Route};
use super::proxy_protocol::{self, Origin};
use super::stream::{Accept, ConnectionSlot, Handoff, Incoming, StreamConfig, TLS_HANDSHAKE};

/// What a listener asks of a connection before it is handed off.
pub struct Admission {
    /// The listener takes PROXY headers (from trusted sources).
    pub proxy_protocol: bool,
    /// The connection comes from `server.proxy_protocol_from`.
    pub trusted: bool,
    /// The listener is a TLS port shared with a website.
    pub front: Option<Arc<FrontRules>>,
}

/// A connection as accepted.
pub struct Arrived {
    pub stream: TcpStream,
    pub client: SocketAddr,
    pub accepted: Instant,
    pub accept: Accept,
    pub config: StreamConfig,
    pub slot: ConnectionSlot,
}

impl Admission {
    /// Whether anything must be read before the connection's worker is known.
    pub fn needed(&self) -> bool {
        self.proxy_protocol || self.front.is_some()
    }

    /// Reads what the listener asks for, then hands the connection to its worker,
    /// passes it on to the website, or closes it (with a log line and a metric). Only
    /// called when [`Admission::needed`].
    pub async fn admit(self, mut arrived: Arrived, workers: &[Handoff]) {
        let deadline = arrived.accepted + arrived.config.handshake_timeout;
        let mut prefix = Vec::new();
        if self.proxy_protocol && self.trusted {
            let Some(rest) = take_proxy_header(&mut arrived, deadline).await else {
                return;
            };
            prefix = rest;
        }
        let Some(start) = first_bytes(&arrived.stream, &prefix, deadline).await else {
            return;
        };
        if self.proxy_protocol && !self.trusted && refuse_untrusted_header(&arrived, &start) {
            return;
        }
        // Plain TCP on a TLS port that also serves it (auto_detect) is TURN.
        if let Some(rules) = self.front.as_deref()
            && start[0] == TLS_HANDSHAKE
            && !route_tern(&mut arrived, &mut prefix, rules, deadline).await
        {
            return;
        }
        let Arrived {
            stream,
            client,
            accepted,
            accept,
            config,
            slot,
        } = arrived;
        if let Some(incoming) =
            Incoming::new(stream, client, prefix, accepted, accept, config, slot)
        {
            incoming.hand_off(workers);
        }
    }
}

/// Reads a trusted source's PROXY header: the connection now stands for the client it
/// names (its address, and its slot under that address's per-IP limit). Returns the
/// bytes read past the header, or `None` when the connection was closed.
async fn take_proxy_header(arrived: &mut Arrived, deadline: Instant) -> Option<Vec<u8>> {
    let metrics = &arrived.config.metrics;
    let proxy = arrived.client;
    match proxy_protocol::read_header(&mut arrived.stream, deadline).await {
        Ok((Origin::Client(real), rest)) => {
            metrics.proxy_header("ok");
            if !arrived.slot.move_to(real.ip()) {
                tracing::debug!(client = %real, %proxy, "connection refused: connection limit");
                return None;
            }
            arrived.client = real;
            Some(rest)
        }
        Ok((Origin::Local, rest)) => {
            metrics.proxy_header("local");
            Some(rest)
        }
        Err(e) => {
            metrics.proxy_header(e.reason());
            tracing::warn!(%proxy, "closing connection from a trusted proxy: {e}");
            None
        }
    }
}

/// The connection's first few bytes (at least one, enough to tell a PROXY header from
/// `POST`): read already (`prefix`), or peeked.
async fn first_bytes(stream: &TcpStream, prefix: &[u8], deadline: Instant) -> Option<Vec<u8>> {
    if !prefix.is_empty() {
        return Some(prefix[..prefix.len().min(6)].to_vec());
    }
    let mut start = [0u8; 6];
    match timeout_at(deadline, stream.peek(&mut start)).await {
        Ok(Ok(n)) if n > 0 => Some(start[..n].to_vec()),
        _ => None,
    }
}

/// Whether a source that is not trusted starts with what could be a PROXY header: it
/// is refused (it might be forging a client address), logged and counted.
fn refuse_untrusted_header(arrived: &Arrived, start: &[u8]) -> bool {
    if !proxy_protocol::looks_like_header(start) {
        return false;
    }
    arrived.config.metrics.proxy_header("untrusted");
    tracing::warn!(
        client = %arrived.client,
        "PROXY protocol header refused: the source is not in server.proxy_protocol_from"
    );
    true
}

/// Reads the ClientHello into `prefix` and routes the connection: true when it is
/// tern's, false when it was passed on (the self-test listener, the website) or closed.
async fn route_tern(
    arrived: &mut Arrived,
    prefix: &mut Vec<u8>,
    rules: &FrontRules,
    deadline: Instant,
) -> bool {
    let (client, metrics) = (arrived.client, arrived.config.metrics.clone());
    let hello = match front::read_client_hello(&mut arrived.stream, prefix, deadline).await {
        Ok(hello) => hello,
        Err(e) => {
            metrics.front_failure(e.reason());
            e.log(client);
            return false;
        }
    };
    let route = rules.route(&hello);
    metrics.front_routed(route.label());
    let (target, header) = match route {
        Route::Tern => return true,
        Route::Selftest(addr) => (addr, Vec::new()),
        Route::Upstream(addr) => {
            let server = arrived.stream.local_addr().unwrap_or(addr);
            (
                addr,
                proxy_protocol::encode(rules.upstream_proxy, client, server),
            )
        }
    };
    // The slot stays held (in `arrived`) until the pass-through ends.
    let stream = &mut arrived.stream;
    if let Err(e) = front::pass_through(stream, target, &header, prefix, rules).await {
        metrics.front_failure(e.reason());
        e.log(client);
    }
    false
}
