//! The engine's side of RFC 6062 TCP allocations: Connect, ConnectionBind, peers'
//! connections to a relay address, and the 30 s a peer data connection waits for its
//! ConnectionBind. What a connection is and where the table of them lives is
//! [`crate::tcp_relay`]'s; the sockets are the driver's.

use std::net::SocketAddr;
use std::time::Instant;

use rand::Rng;
use stun::agent::TransactionId;
use stun::attributes::{ATTR_CONNECTION_ID, ATTR_XOR_PEER_ADDRESS};
use stun::message::{METHOD_CONNECT, METHOD_CONNECTION_ATTEMPT};

use super::requests::{Answer, Authenticated, check_peers, owned_allocation};
use super::tcp_relay::{
    BIND_TIMEOUT, ConnectionId, ConnectionState, PendingConnect, TcpConnection,
};
use super::{Count, Engine, FiveTuple, Io, Reject, Timer, Transport};
use crate::proto::{Request, Response};

impl Engine {
    /// Connect (RFC 6062 §5.2): the relay connects to the peer from the allocation's
    /// relay address. The answer waits for the peer: [`Engine::handle_peer_connected`].
    pub(super) fn connect(
        &mut self,
        tuple: &FiveTuple,
        req: &Request,
        auth: &Authenticated,
        io: &mut dyn Io,
    ) -> Result<Answer, Reject> {
        let max = self.config.max_tcp_connections;
        let alloc = owned_allocation(&mut self.allocations, tuple, auth)?;
        let peers = req.peer_addresses().ok_or(Reject::BadRequest)?;
        let [peer] = peers[..] else {
            return Err(Reject::BadRequest);
        };
        if alloc.tcp.is_none() {
            return Err(Reject::BadRequest);
        }
        check_peers(alloc, &[peer], &self.policy)?;
        let (relay, username) = (alloc.relay, alloc.username.as_ref().into());
        let Some(tcp) = alloc.tcp.as_deref_mut() else {
            return Err(Reject::BadRequest);
        };
        let mut table = self.shared.tcp_connections();
        tcp.prune(&table);
        if table.has_peer(&tcp.connections, peer) {
            return Err(Reject::ConnectionAlreadyExists);
        }
        if tcp.connections.len() >= max {
            return Err(Reject::InsufficientCapacity);
        }
        let ends = (relay, peer, *tuple);
        let connection = tcp.connection(ends, username, ConnectionState::Connecting);
        let id = table.insert(connection, &mut self.rng);
        drop(table);
        tcp.connections.push(id);
        tcp.connects.push(PendingConnect {
            id,
            transaction_id: req.transaction_id(),
            mac: auth.mac.clone(),
            fingerprint: req.has_fingerprint(),
        });
        io.connect_peer(relay, peer, id);
        Ok(Answer::Later)
    }

    /// The connection the relay opened for the Connect that made `id` is up
    /// (`connected`) or failed: the client gets its answer, with the CONNECTION-ID or
    /// 447. Returns whether the driver keeps the connection (false when it failed, or
    /// its allocation ended meanwhile).
    pub fn handle_peer_connected(
        &mut self,
        now: Instant,
        id: ConnectionId,
        connected: bool,
        io: &mut dyn Io,
    ) -> bool {
        let mut table = self.shared.tcp_connections();
        let Some(connection) = table.get_mut(id) else {
            return false;
        };
        let owner = self.relays.get(&connection.relay).copied();
        let alloc = owner.and_then(|tuple| Some((tuple, self.allocations.get_mut(&tuple)?)));
        let Some((tuple, alloc)) = alloc else {
            table.remove(id);
            return false;
        };
        let Some(tcp) = alloc.tcp.as_deref_mut() else {
            return false;
        };
        let Some(at) = tcp.connects.iter().position(|c| c.id == id) else {
            return false;
        };
        let pending = tcp.connects.swap_remove(at);
        let mut response = if connected {
            let deadline = now + BIND_TIMEOUT;
            connection.state = ConnectionState::Pending(deadline);
            self.timers
                .push(std::cmp::Reverse((deadline, Timer::Connection(id))));
            let mut response = Response::success_to(METHOD_CONNECT, pending.transaction_id);
            response.add_raw(ATTR_CONNECTION_ID, &id.to_be_bytes());
            response
        } else {
            table.remove(id);
            io.count(Count::ErrorSent(&Reject::ConnectionFailed));
            let code = Reject::ConnectionFailed.code();
            Response::error_to(METHOD_CONNECT, pending.transaction_id, code)
        };
        drop(table);
        tracing::debug!(client = %tuple.client, id, connected, "Connect answered");
        response.add_software(self.config.software.as_deref());
        let bytes = response.finish(Some(&pending.mac), pending.fingerprint);
        io.send_to_client(&tuple, &bytes);
        connected
    }

    /// A peer connected to the TCP relay address `relay` (RFC 6062 §5.3). With a
    /// permission for its IP (and the peer policy's leave), the client is told with a
    /// ConnectionAttempt indication and has 30 s to bind to it. Returns whether the
    /// driver keeps the connection; it holds it unread meanwhile.
    pub fn handle_peer_connection(
        &mut self,
        now: Instant,
        relay: SocketAddr,
        peer: SocketAddr,
        io: &mut dyn Io,
    ) -> bool {
        let max = self.config.max_tcp_connections;
        let Some(tuple) = self.relays.get(&relay).copied() else {
            return false;
        };
        let Some(alloc) = self.allocations.get_mut(&tuple) else {
            return false;
        };
        if !alloc.has_permission(peer.ip(), now) || self.policy.check(peer).is_err() {
            return false;
        }
        let username = alloc.username.as_ref().into();
        let Some(tcp) = alloc.tcp.as_deref_mut() else {
            return false;
        };
        let mut table = self.shared.tcp_connections();
        tcp.prune(&table);
        if tcp.connections.len() >= max {
            return false;
        }
        let deadline = now + BIND_TIMEOUT;
        let state = ConnectionState::Pending(deadline);
        let connection = tcp.connection((relay, peer, tuple), username, state);
        let id = table.insert(connection, &mut self.rng);
        drop(table);
        tcp.connections.push(id);
        self.timers
            .push(std::cmp::Reverse((deadline, Timer::Connection(id))));
        let mut tid = TransactionId::default();
        self.rng.fill(&mut tid.0);
        let mut indication = Response::indication(METHOD_CONNECTION_ATTEMPT, tid);
        indication.add_xor_address(ATTR_XOR_PEER_ADDRESS, peer);
        indication.add_raw(ATTR_CONNECTION_ID, &id.to_be_bytes());
        io.send_to_client(&tuple, &indication.finish(None, false));
        tracing::debug!(client = %tuple.client, %relay, %peer, id, "peer connection announced");
        true
    }

    /// ConnectionBind (RFC 6062 §5.4), on a new TCP/TLS connection of the client's: it
    /// takes the pending peer data connection it names, if it belongs to the same
    /// user, and becomes that connection's other half once answered.
    pub(super) fn connection_bind(
        &mut self,
        tuple: &FiveTuple,
        req: &Request,
        auth: &Authenticated,
    ) -> Result<Answer, Reject> {
        let stream = matches!(tuple.transport, Transport::Tcp | Transport::Tls);
        // A control connection cannot become a data connection.
        if !stream || self.allocations.contains_key(tuple) {
            return Err(Reject::BadRequest);
        }
        let id = connection_id(req).ok_or(Reject::BadRequest)?;
        let mut table = self.shared.tcp_connections();
        let connection = table.get_mut(id).filter(|c| {
            matches!(c.state, ConnectionState::Pending(_)) && *c.username == *auth.username
        });
        let connection = connection.ok_or(Reject::BadRequest)?;
        connection.state = ConnectionState::Bound;
        tracing::debug!(client = %tuple.client, id, "data connection bound");
        Ok(Answer::ThenRelay(Response::success(req), id))
    }

    /// For a ConnectionBind from `tuple`, the control connection of the allocation it
    /// names, when that is from the same IP: its nonce is good for the data connection
    /// too (RFC 6062 §5.4: "the same method and credentials as for the control
    /// connection").
    pub(super) fn control_connection_for(
        &self,
        tuple: &FiveTuple,
        req: &Request,
    ) -> Option<FiveTuple> {
        if req.method() != stun::message::METHOD_CONNECTION_BIND {
            return None;
        }
        let id = connection_id(req)?;
        let table = self.shared.tcp_connections();
        let control = table.get(id)?.control;
        (control.client.ip() == tuple.client.ip()).then_some(control)
    }

    /// The ConnectionBind of `id` was answered on `tuple`: the driver joins the two.
    pub(super) fn relay_data_connection(
        &mut self,
        tuple: &FiveTuple,
        id: ConnectionId,
        io: &mut dyn Io,
    ) {
        let connection = self.shared.tcp_connections().get(id).cloned();
        if let Some(connection) = connection {
            io.splice(tuple, &connection, id);
        }
    }

    /// The bytes of `id` no longer flow: its client or its peer closed, and the
    /// driver closed the other.
    pub fn handle_tcp_connection_ended(&mut self, id: ConnectionId) {
        self.shared.tcp_connections().remove(id);
    }

    /// Closes `id` if it is still waiting for its ConnectionBind at `now`.
    pub(super) fn check_bind_deadline(&mut self, id: ConnectionId, now: Instant, io: &mut dyn Io) {
        let mut table = self.shared.tcp_connections();
        let expired = table
            .get(id)
            .is_some_and(|c| matches!(c.state, ConnectionState::Pending(until) if until <= now));
        if let Some(connection) = expired.then(|| table.remove(id)).flatten() {
            drop(table);
            io.close_peer_connection(connection.relay, connection.peer);
        }
    }

    /// Closes every connection of a TCP allocation that is being deleted.
    pub(super) fn close_tcp_connections(&mut self, alloc: &mut super::Allocation, io: &mut dyn Io) {
        let Some(tcp) = alloc.tcp.as_deref_mut() else {
            return;
        };
        let mut table = self.shared.tcp_connections();
        let ended: Vec<TcpConnection> = (tcp.connections.drain(..))
            .filter_map(|id| table.remove(id))
            .collect();
        drop(table);
        for connection in ended {
            io.close_peer_connection(connection.relay, connection.peer);
        }
    }

    /// Closes the TCP connections to peers a reloaded policy denies, as their
    /// permissions and channels go.
    pub(super) fn close_denied_tcp_connections(&mut self, io: &mut dyn Io) {
        let mut table = self.shared.tcp_connections();
        let mut ended = Vec::new();
        for tcp in self.allocations.values().filter_map(|a| a.tcp.as_deref()) {
            for &id in &tcp.connections {
                let denied = table
                    .get(id)
                    .is_some_and(|c| self.policy.check(c.peer).is_err());
                ended.extend(denied.then(|| table.remove(id)).flatten());
            }
        }
        drop(table);
        for connection in ended {
            io.close_peer_connection(connection.relay, connection.peer);
        }
    }
}

/// The request's CONNECTION-ID, if it carries a well-formed one.
fn connection_id(req: &Request) -> Option<ConnectionId> {
    match req.attr(ATTR_CONNECTION_ID)? {
        &[a, b, c, d] => Some(u32::from_be_bytes([a, b, c, d])),
        _ => None,
    }
}
