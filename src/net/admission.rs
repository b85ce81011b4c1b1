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
    /// passes it on to the website, or closes it (with a log line and a metric).
    pub async fn admit(self, arrived: Arrived, workers: &[Handoff]) {
        let Arrived {
            mut stream,
            mut client,
            accepted,
            accept,
            config,
            mut slot,
        } = arrived;
        let metrics = config.metrics.clone();
        let deadline = accepted + config.handshake_timeout;
        let mut prefix = Vec::new();
        if self.proxy_protocol && self.trusted {
            match proxy_protocol::read_header(&mut stream, deadline).await {
                Ok((origin, rest)) => {
                    prefix = rest;
                    if let Origin::Client(real) = origin {
                        metrics.proxy_header("ok");
                        let Some(moved) = slot.move_to(real.ip()) else {
                            tracing::debug!(client = %real, proxy = %client, "connection refused: connection limit");
                            return;
                        };
                        slot = moved;
                        client = real;
                    } else {
                        metrics.proxy_header("local");
                    }
                }
                Err(e) => {
                    metrics.proxy_header(e.reason());
                    tracing::warn!(proxy = %client, "closing connection from a trusted proxy: {e}");
                    return;
                }
            }
        } else if self.proxy_protocol {
            let mut first = [0u8; 6];
            let peeked = match timeout_at(deadline, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => n,
                _ => return,
            };
            if proxy_protocol::looks_like_header(&first[..peeked]) {
                metrics.proxy_header("untrusted");
                tracing::warn!(
                    %client,
                    "PROXY protocol header refused: the source is not in server.proxy_protocol_from"
                );
                return;
            }
        }
        if let Some(rules) = &self.front {
            let tls_first = match prefix.first() {
                Some(&byte) => byte == TLS_HANDSHAKE,
                None => {
                    let mut first = [0u8; 1];
                    match timeout_at(deadline, stream.peek(&mut first)).await {
                        Ok(Ok(1)) => first[0] == TLS_HANDSHAKE,
                        _ => return,
                    }
                }
            };
            // Plain TCP on a TLS port that also serves it (auto_detect) is TURN.
            if tls_first {
                let hello = match front::read_client_hello(&mut stream, &mut prefix, deadline).await
                {
                    Ok(hello) => hello,
                    Err(e) => {
                        metrics.front_failure(e.reason());
                        e.log(client);
                        return;
                    }
                };
                let route = rules.route(&hello);
                metrics.front_routed(route.label());
                let (target, header) = match route {
                    Route::Tern => (None, Vec::new()),
                    Route::Selftest(addr) => (Some(addr), Vec::new()),
                    Route::Upstream(addr) => {
                        let server = stream.local_addr().unwrap_or(addr);
                        let header = proxy_protocol::encode(rules.upstream_proxy, client, server);
                        (Some(addr), header)
                    }
                };
                if let Some(target) = target {
                    let result = front::pass_through(stream, target, &header, &prefix, rules).await;
                    if let Err(e) = result {
                        metrics.front_failure(e.reason());
                        e.log(client);
                    }
                    drop(slot);
                    return;
                }
            }
        }
        if let Some(incoming) =
            Incoming::new(stream, client, prefix, accepted, accept, config, slot)
        {
            incoming.hand_off(workers);
        }
    }
}
