//! Request handling: authentication first, then one function per TURN method.
//!
//! Handlers that change state take an [`Authenticated`], which only
//! [`Engine::authenticate`] makes after a constant-time MESSAGE-INTEGRITY check, so no
//! path can create or change an allocation for an unauthenticated client.

use ring::hmac;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use stun::attributes::*;
use stun::message::{
    METHOD_ALLOCATE, METHOD_BINDING, METHOD_CHANNEL_BIND, METHOD_CONNECT, METHOD_CONNECTION_BIND,
    METHOD_CREATE_PERMISSION, METHOD_REFRESH,
};
use stun::uattrs::UnknownAttributes;
use turn::proto::lifetime::Lifetime;
use turn::proto::rsrvtoken::ReservationToken;

use super::allocation::ChannelConflict;
use super::ports::PortWish;
use super::{
    Allocation, ConnectionId, Count, CredentialsQuestion, EndReason, Engine, FiveTuple, Io,
    ListenerRole, Now, RESERVATION_LIFETIME, Reject, RelayIpChoice, Reservation, Timer, Transport,
};
use crate::auth::{AuthError, ExternalAnswer, PasswordAlgorithm, strip_cookie, with_cookie};
use crate::proto::attrs::{ATTR_ADDITIONAL_ADDRESS_FAMILY, decode_address_family};
use crate::proto::channel_data::CHANNEL_NUMBERS;
use crate::proto::{Request, Response};
use crate::tcp_relay::{StreamBandwidth, TcpAllocation};

/// REQUESTED-TRANSPORT values: UDP (RFC 8656), and TCP when `relay.tcp_allocations`
/// is on (RFC 6062).
const PROTOCOL_UDP: u8 = 17;
const PROTOCOL_TCP: u8 = 6;
/// How many ports an Allocate tries to bind before answering 508.
const BIND_ATTEMPTS: usize = 16;

/// The password algorithm a request's long-term key is derived with (RFC 8489 §9.2.4):
/// MD5 when it names none; otherwise PASSWORD-ALGORITHMS must repeat exactly what this
/// server offered (so nobody between can have bid it down) and PASSWORD-ALGORITHM pick
/// one of them, or the answer is 400.
fn password_algorithm(req: &Request) -> Result<PasswordAlgorithm, Reject> {
    match (
        req.attr(ATTR_PASSWORD_ALGORITHMS),
        req.attr(ATTR_PASSWORD_ALGORITHM),
    ) {
        (None, None) => Ok(PasswordAlgorithm::Md5),
        (Some(offered), Some(chosen)) if offered == PasswordAlgorithm::offered_value() => {
            PasswordAlgorithm::from_value(chosen).ok_or(Reject::BadRequest)
        }
        _ => Err(Reject::BadRequest),
    }
}

/// Proof that a request carried a valid MESSAGE-INTEGRITY (or MESSAGE-INTEGRITY-SHA256)
/// for `username`.
pub(super) struct Authenticated {
    pub(super) username: String,
    /// What answers are signed with: the request's kind of integrity, keyed with the
    /// long-term key that verified it.
    pub(super) mac: hmac::Key,
}

/// What a method handler answers.
pub(super) enum Answer {
    /// This response, now.
    Now(Response),
    /// Nothing yet: the answer waits for something else (a Connect, for its peer).
    Later,
    /// This response; then the connection it came on carries the bytes of the peer
    /// data connection `id` (a ConnectionBind).
    ThenRelay(Response, ConnectionId),
}

/// The kind of relay socket an allocation gets.
#[derive(Debug, Clone, Copy)]
enum RelaySocket {
    /// UDP, with the don't-fragment bit when asked (DONT-FRAGMENT).
    Udp { dont_fragment: bool },
    /// A listening TCP socket (RFC 6062).
    Tcp,
}

/// What to answer when a request is not accepted.
enum Refusal {
    /// A 401/438 challenge (no integrity), subject to the per-IP limiter.
    Challenge(Reject),
    /// An error answered without integrity (the request could not be checked), subject
    /// to the same limiter: every answer to a source that has not proved a credential
    /// is.
    Error(Reject),
    /// The username is one only the operator's service knows, and no answer of its is
    /// at hand: the driver asks and brings the request back.
    AskExternal(String),
}

impl Engine {
    pub(super) fn handle_request(
        &mut self,
        now: Now,
        tuple: &FiveTuple,
        req: &Request,
        io: &mut dyn Io,
    ) {
        // A listener that serves only one of STUN and TURN ignores the other, as an
        // unused port would: no answer, nothing learnt, nothing to amplify.
        let role = self.config.role_of(tuple.server);
        if req.method() == METHOD_BINDING {
            if role == ListenerRole::Turn {
                return;
            }
            return self.answer_binding(now, tuple, req, io);
        }
        if role == ListenerRole::Stun {
            return;
        }
        let known = [
            METHOD_ALLOCATE,
            METHOD_REFRESH,
            METHOD_CREATE_PERMISSION,
            METHOD_CHANNEL_BIND,
            METHOD_CONNECT,
            METHOD_CONNECTION_BIND,
        ];
        if !known.contains(&req.method()) {
            if self.limiter.allow(tuple.client.ip(), now.mono) {
                let bytes = Response::error(req, 400).finish(None, req.has_fingerprint());
                io.send_to_client(tuple, &bytes);
            }
            return;
        }
        // A retransmitted Allocate gets exactly the answer the original got.
        if let Some(alloc) = self.allocations.get(tuple)
            && let Some((tid, answer)) = alloc.last_answer.as_deref()
            && *tid == req.transaction_id()
        {
            return io.send_to_client(tuple, answer);
        }

        let auth = match self.authenticate(now, tuple, req) {
            Ok(auth) => auth,
            Err(Refusal::Challenge(reject)) => return self.challenge(now, tuple, req, reject, io),
            Err(Refusal::Error(reject)) => {
                if self.limiter.allow(tuple.client.ip(), now.mono) {
                    let bytes = self.error_answer(req, &reject, None, io);
                    io.send_to_client(tuple, &bytes);
                }
                return;
            }
            Err(Refusal::AskExternal(username)) => {
                return io.await_credentials(&CredentialsQuestion {
                    username: &username,
                    realm: self.credentials.realm(),
                    tuple,
                    request: &req.msg.raw,
                });
            }
        };
        let result = if !req.unknown_required().is_empty() {
            Err(Reject::UnknownAttributes(req.unknown_required().to_vec()))
        } else {
            match req.method() {
                METHOD_ALLOCATE => self.allocate(now, tuple, req, &auth, io).map(Answer::Now),
                METHOD_REFRESH => self.refresh(now, tuple, req, &auth, io).map(Answer::Now),
                METHOD_CREATE_PERMISSION => self
                    .create_permission(now, tuple, req, &auth)
                    .map(Answer::Now),
                METHOD_CHANNEL_BIND => self.channel_bind(now, tuple, req, &auth).map(Answer::Now),
                METHOD_CONNECT => self.connect(tuple, req, &auth, io),
                _ => self.connection_bind(tuple, req, &auth),
            }
        };
        // A permission or channel that changed moves the kernel's entries with it.
        let touches_channels =
            [METHOD_CREATE_PERMISSION, METHOD_CHANNEL_BIND].contains(&req.method());
        if result.is_ok() && touches_channels {
            self.sync_kernel(tuple, now.mono, io);
        }
        let signed = |engine: &Self, mut response: Response| {
            response.add_software(engine.config.software.as_deref());
            response.finish(Some(&auth.mac), req.has_fingerprint())
        };
        let (bytes, relay_after) = match result {
            Ok(Answer::Now(response)) => (Some(signed(self, response)), None),
            Ok(Answer::Later) => (None, None),
            Ok(Answer::ThenRelay(response, id)) => (Some(signed(self, response)), Some(id)),
            Err(reject) => (
                Some(self.error_answer(req, &reject, Some(&auth.mac), io)),
                None,
            ),
        };
        if let Some(alloc) = self.allocations.get_mut(tuple) {
            // Only the Allocate answer is kept for retransmissions: the other requests
            // are idempotent (a repeated Refresh with LIFETIME 0 gets 437, which RFC
            // 8656 §7.3 tells clients to accept). Any later request shows the client
            // has that answer, so it is dropped then and idle allocations carry none.
            alloc.last_answer = bytes
                .as_ref()
                .filter(|_| req.method() == METHOD_ALLOCATE)
                .map(|bytes| Box::new((req.transaction_id(), bytes.as_slice().into())));
        }
        let Some(bytes) = bytes else {
            return;
        };
        // A Refresh with LIFETIME 0 ends the allocation. Over UDP it goes before the
        // answer, so a client that reads the answer finds its quota and port already
        // free; on TCP/TLS deleting it closes the connection, so the answer goes first.
        let ended = self
            .allocations
            .get(tuple)
            .is_some_and(|a| a.is_over(now.mono));
        if ended && tuple.transport == Transport::Udp {
            self.delete_allocation(tuple, EndReason::Deleted, now.mono, io);
        }
        io.send_to_client(tuple, &bytes);
        if ended && tuple.transport != Transport::Udp {
            self.delete_allocation(tuple, EndReason::Deleted, now.mono, io);
        }
        if let Some(id) = relay_after {
            self.relay_data_connection(tuple, id, io);
        }
    }

    fn error_answer(
        &self,
        req: &Request,
        reject: &Reject,
        mac: Option<&hmac::Key>,
        io: &mut dyn Io,
    ) -> Vec<u8> {
        io.count(Count::ErrorSent(reject));
        let mut response = Response::error(req, reject.code());
        match reject {
            Reject::UnknownAttributes(types) => response.add(&UnknownAttributes(types.clone())),
            Reject::TryAlternate(server) => response.add_address(ATTR_ALTERNATE_SERVER, *server),
            _ => {}
        }
        response.add_software(self.config.software.as_deref());
        response.finish(mac, req.has_fingerprint())
    }

    /// 401 or 438 with REALM and a fresh NONCE, unless this source is over its budget.
    fn challenge(
        &mut self,
        now: Now,
        tuple: &FiveTuple,
        req: &Request,
        reject: Reject,
        io: &mut dyn Io,
    ) {
        io.count(Count::Challenged {
            stale_nonce: reject == Reject::StaleNonce,
        });
        if !self.limiter.allow(tuple.client.ip(), now.mono) {
            return;
        }
        io.count(Count::ErrorSent(&reject));
        let mut nonce = self
            .nonces
            .issue(tuple.client, tuple.transport as u8, now.unix);
        if self.config.rfc8489 {
            nonce = with_cookie(&nonce);
        }
        let mut response = Response::error(req, reject.code());
        response.add_raw(ATTR_REALM, self.credentials.realm().as_bytes());
        response.add_raw(ATTR_NONCE, nonce.as_bytes());
        if self.config.rfc8489 {
            let offered = PasswordAlgorithm::offered_value();
            response.add_raw(ATTR_PASSWORD_ALGORITHMS, &offered);
        }
        io.send_to_client(tuple, &response.finish(None, req.has_fingerprint()));
    }

    /// The long-term credential check of RFC 8489 §9.2.4.
    fn authenticate(
        &mut self,
        now: Now,
        tuple: &FiveTuple,
        req: &Request,
    ) -> Result<Authenticated, Refusal> {
        if !req.has_integrity() {
            return Err(Refusal::Challenge(Reject::Unauthorized));
        }
        let (Some(_realm), Some(nonce)) = (req.text(ATTR_REALM), req.text(ATTR_NONCE)) else {
            return Err(Refusal::Error(Reject::BadRequest));
        };
        if req.integrity_sha256_truncated() {
            return Err(Refusal::Error(Reject::BadRequest));
        }
        let rfc8489 = self.config.rfc8489;
        // USERHASH (RFC 8489 §14.4) stands for USERNAME when offered; only static users
        // can be found by it.
        let hashed;
        let username = match (req.text(ATTR_USERNAME), req.attr(ATTR_USER_HASH)) {
            (Some(username), _) => username,
            (None, Some(hash)) if rfc8489 => {
                hashed = self.credentials.user_by_hash(hash).map(str::to_owned);
                hashed
                    .as_deref()
                    .ok_or(Refusal::Challenge(Reject::Unauthorized))?
            }
            (None, _) => return Err(Refusal::Error(Reject::BadRequest)),
        };
        // With the features offered, our nonces carry the cookie, and one without it
        // (stripped on the way, or from before a reload turned them on) is answered
        // with a fresh one.
        let nonce = if rfc8489 {
            strip_cookie(nonce)
        } else {
            Some(nonce)
        };
        let control = self.control_connection_for(tuple, req);
        let fresh = nonce.is_some_and(|nonce| {
            let issued_to = |t: &FiveTuple| {
                let verdict = self
                    .nonces
                    .verify(nonce, t.client, t.transport as u8, now.unix);
                verdict.is_ok()
            };
            issued_to(tuple) || control.as_ref().is_some_and(issued_to)
        });
        if !fresh {
            return Err(Refusal::Challenge(Reject::StaleNonce));
        }
        // Not offered, PASSWORD-ALGORITHM(S) mean nothing (RFC 8489 §9.2.4): MD5.
        let algorithm = if rfc8489 {
            password_algorithm(req).map_err(Refusal::Error)?
        } else {
            PasswordAlgorithm::Md5
        };
        // An existing allocation may outlive its REST credential if the operator says so.
        let allow_expired = self.config.allow_refresh_after_expiry
            && req.method() != METHOD_ALLOCATE
            && self.allocations.contains_key(tuple);
        if self
            .shared
            .is_revoked(self.credentials.quota_identity(username))
        {
            return Err(Refusal::Challenge(Reject::Unauthorized));
        }
        let keys = match self
            .credentials
            .keys_for(username, algorithm, now.unix, allow_expired)
        {
            Ok(keys) => keys,
            Err(AuthError::UnknownUser) if let Some(external) = self.credentials.external() => {
                match external.lookup(username, now.mono) {
                    // The service's answers are MD5 keys: no SHA-256 key comes of them.
                    Some(ExternalAnswer::Key(key)) if algorithm == PasswordAlgorithm::Md5 => {
                        vec![*key]
                    }
                    Some(ExternalAnswer::Key(_) | ExternalAnswer::Refused) => {
                        return Err(Refusal::Challenge(Reject::Unauthorized));
                    }
                    None => return Err(Refusal::AskExternal(username.to_string())),
                }
            }
            Err(AuthError::UnknownUser | AuthError::Expired | AuthError::BadIntegrity) => {
                return Err(Refusal::Challenge(Reject::Unauthorized));
            }
        };
        let verified = keys.iter().find_map(|key| {
            if req.has_integrity_sha256() {
                let mac = key.integrity_key_sha256();
                req.verify_integrity_sha256_with(&mac).then_some(mac)
            } else {
                let mac = key.integrity_key();
                req.verify_integrity_with(mac).then(|| mac.clone())
            }
        });
        match verified {
            Some(mac) => Ok(Authenticated {
                username: username.to_string(),
                mac,
            }),
            None => Err(Refusal::Challenge(Reject::Unauthorized)),
        }
    }

    /// The allocation of `tuple`, owned by the authenticated user (437 / 441).
    fn owned_allocation(
        &mut self,
        tuple: &FiveTuple,
        auth: &Authenticated,
    ) -> Result<&mut Allocation, Reject> {
        owned_allocation(&mut self.allocations, tuple, auth)
    }

    fn allocate(
        &mut self,
        now: Now,
        tuple: &FiveTuple,
        req: &Request,
        auth: &Authenticated,
        io: &mut dyn Io,
    ) -> Result<Response, Reject> {
        if self.allocations.contains_key(tuple) {
            return Err(Reject::AllocationMismatch);
        }
        let fleet = self.shared.fleet();
        // A RESERVATION-TOKEN names a port reserved on this node: no redirect then.
        let reserved_here = req.attr(ATTR_RESERVATION_TOKEN).is_some();
        if (self.draining || fleet.wants_redirect(self.shared.total_allocations()))
            && !reserved_here
        {
            // Another node takes the client if there is one for its transport and family.
            let server_v6 = tuple.server.is_ipv6();
            if let Some(alternate) = fleet.alternate_for(tuple.transport, server_v6) {
                return Err(Reject::TryAlternate(alternate));
            }
            if self.draining {
                return Err(Reject::InsufficientCapacity);
            }
        }
        let tcp = match req.attr(ATTR_REQUESTED_TRANSPORT) {
            None => return Err(Reject::BadRequest),
            Some([PROTOCOL_UDP, _, _, _]) => false,
            Some([PROTOCOL_TCP, _, _, _]) if self.config.tcp_allocations => true,
            Some([_, _, _, _]) => return Err(Reject::UnsupportedTransport),
            Some(_) => return Err(Reject::BadRequest),
        };
        let token = req.attr(ATTR_RESERVATION_TOKEN);
        let even_port = req.attr(ATTR_EVEN_PORT);
        let family = req.attr(ATTR_REQUESTED_ADDRESS_FAMILY);
        let additional = req.attr(ATTR_ADDITIONAL_ADDRESS_FAMILY);
        let dont_fragment = req.attr(ATTR_DONT_FRAGMENT).is_some();
        // RFC 8656 §7.2 steps 5 and 6: a reserved port comes as it is, and a dual
        // allocation has no one family to request.
        if token.is_some() && (even_port.is_some() || family.is_some() || additional.is_some())
            || family.is_some() && additional.is_some()
        {
            return Err(Reject::BadRequest);
        }
        // RFC 6062 §5.1: a TCP allocation needs a TCP/TLS control connection, and
        // none of the UDP-only attributes; dual TCP allocations are not offered.
        let datagram_client = !matches!(tuple.transport, Transport::Tcp | Transport::Tls);
        let udp_only = dont_fragment || even_port.is_some() || token.is_some();
        if tcp && (datagram_client || udp_only || additional.is_some()) {
            return Err(Reject::BadRequest);
        }
        let wish = match even_port {
            None => PortWish::Any,
            Some([flags]) => PortWish::Even {
                reserve_next: flags & 0x80 != 0,
            },
            Some(_) => return Err(Reject::BadRequest),
        };
        let want_ipv6 = match family {
            None => false,
            Some(v) => decode_address_family(v).ok_or(Reject::AddressFamilyNotSupported)?,
        };
        // Steps 8 and 9: IPv6 is the only additional family (IPv4 is always asked for),
        // and a reservation holds the next port of one IP, which a dual allocation has
        // two of. EVEN-PORT without it makes both ports even.
        let dual = match additional.map(decode_address_family) {
            None => false,
            Some(Some(true)) if !wish.reserves_next() => true,
            Some(_) => return Err(Reject::BadRequest),
        };
        let identity = self.credentials.quota_identity(&auth.username).to_string();
        let (total, per_user) = (self.config.total_allocations, self.config.user_allocations);
        if !self.shared.try_count_allocation(&identity, total, per_user) {
            return Err(Reject::QuotaReached);
        }

        let socket = if tcp {
            RelaySocket::Tcp
        } else {
            RelaySocket::Udp { dont_fragment }
        };
        let relays = match token {
            Some(token) => self
                .claim_reservation(token, dont_fragment, now, io)
                .map(Relays::from),
            None if dual => self.bind_dual_relays(tuple, wish, dont_fragment, io),
            None => self
                .bind_new_relay(tuple, want_ipv6, wish, socket, io)
                .map(Relays::from),
        };
        let relays = relays.inspect_err(|_| self.shared.uncount_allocation(&identity))?;
        let relay = relays.relay;
        let mut response = Response::success(req);
        if wish.reserves_next() {
            let token = self.reserve_next_port(relay, now);
            response.add(&ReservationToken(token.to_vec()));
        }
        let lifetime = requested_lifetime(req)
            .map(|l| l.min(self.config.max_lifetime))
            .filter(|&l| l > self.config.default_lifetime)
            .unwrap_or(self.config.default_lifetime);
        let expires = now.mono + lifetime;
        let username = auth.username.as_str().into();
        let created = self.uptime_secs(now.mono);
        let mut alloc = Allocation::new(relay, username, created, expires);
        if tcp {
            let user = self.shared.user_bandwidth(&identity);
            let bandwidth = StreamBandwidth::new(self.shared.clone(), user);
            alloc.tcp = Some(Box::new(TcpAllocation::new(bandwidth)));
        }
        if let Some(addr) = relays.additional {
            alloc.add_relay(addr);
        }
        for addr in alloc.relays() {
            self.relays.insert(addr, *tuple);
            response.add_xor_address(ATTR_XOR_RELAYED_ADDRESS, self.advertised(addr));
        }
        io.allocation_changed(tuple, true);
        io.count(Count::AllocationOpened {
            transport: tuple.transport,
            families: alloc.families(),
        });
        self.allocations.insert(*tuple, Box::new(alloc));
        self.timers
            .push(std::cmp::Reverse((expires, Timer::Allocation(relay))));
        // A REST user id is whatever the credential service put there: escaped, its
        // control characters cannot forge or garble log lines.
        let user = auth.username.escape_debug();
        let additional = relays.additional.map(tracing::field::display);
        tracing::info!(client = %tuple.client, %relay, additional, %user, tcp, "allocation created");

        response.add(&Lifetime(lifetime));
        response.add_xor_address(ATTR_XORMAPPED_ADDRESS, tuple.client);
        if let Some((ipv6, why)) = relays.refused {
            response.add_address_error(ipv6, why.code());
        }
        Ok(response)
    }

    /// Binds a relay of each family for a dual allocation (RFC 8656 §7.2 step 9): both,
    /// or the one that could be had with why the other could not (440 for a family
    /// with no relay IP, 508 for one out of ports), or 508 when neither could.
    fn bind_dual_relays(
        &mut self,
        owner: &FiveTuple,
        wish: PortWish,
        dont_fragment: bool,
        io: &mut dyn Io,
    ) -> Result<Relays, Reject> {
        let socket = RelaySocket::Udp { dont_fragment };
        let ipv4 = self.bind_new_relay(owner, false, wish, socket, io);
        let ipv6 = self.bind_new_relay(owner, true, wish, socket, io);
        let (relay, additional, refused) = match (ipv4, ipv6) {
            (Ok(ipv4), Ok(ipv6)) => (ipv4, Some(ipv6), None),
            (Ok(ipv4), Err(why)) => (ipv4, None, Some((true, why))),
            (Err(why), Ok(ipv6)) => (ipv6, None, Some((false, why))),
            (Err(_), Err(_)) => return Err(Reject::InsufficientCapacity),
        };
        Ok(Relays {
            relay,
            additional,
            refused,
        })
    }

    /// Picks a relay IP of the family (see [`RelayIpChoice`]) and binds a free port on it (with an EVEN-PORT reservation, its successor is taken
    /// too, for [`Engine::reserve_next_port`]).
    fn bind_new_relay(
        &mut self,
        owner: &FiveTuple,
        want_ipv6: bool,
        wish: PortWish,
        socket: RelaySocket,
        io: &mut dyn Io,
    ) -> Result<SocketAddr, Reject> {
        let ips: Vec<IpAddr> = self
            .config
            .relay_ips
            .iter()
            .copied()
            .filter(|ip| ip.is_ipv6() == want_ipv6)
            .collect();
        if ips.is_empty() {
            return Err(Reject::AddressFamilyNotSupported);
        }
        let reached = match self.config.relay_ip_choice {
            RelayIpChoice::ReachedFirst => ips.iter().position(|&ip| ip == owner.server.ip()),
            RelayIpChoice::Spread => None,
        };
        self.next_relay_ip = self.next_relay_ip.wrapping_add(1);
        let order = reached.into_iter().chain(
            (0..ips.len())
                .map(|i| (self.next_relay_ip + i) % ips.len())
                .filter(|&i| Some(i) != reached),
        );
        for i in order {
            let ip = ips[i];
            // A port another process holds stays taken until this search ends, so the
            // search does not come back to it.
            let mut unbindable = Vec::new();
            let mut bound = None;
            for _ in 0..BIND_ATTEMPTS {
                // Taken before binding, so two workers never bind the same port.
                let taken = self.shared.ports().take_free(ip, wish, &mut self.rng);
                let Some(port) = taken else { break };
                let addr = SocketAddr::new(ip, port);
                let bound_now = match socket {
                    RelaySocket::Udp { dont_fragment } => io.bind_relay(addr, dont_fragment),
                    RelaySocket::Tcp => io.bind_tcp_relay(addr),
                };
                match bound_now {
                    Ok(()) => {
                        bound = Some(addr);
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(%addr, error = %e, "relay port unavailable");
                        unbindable.push(port);
                    }
                }
            }
            let mut ports = self.shared.ports();
            for port in unbindable {
                ports.give_back(ip, port, wish);
            }
            if let Some(addr) = bound {
                return Ok(addr);
            }
        }
        Err(Reject::InsufficientCapacity)
    }

    /// Holds `relay`'s next port for a later Allocate and returns the token for it. The
    /// port was taken with `relay` (see [`super::ports::PortPool::take_free`]): the
    /// reservation owns it from here and frees it when it expires unclaimed.
    fn reserve_next_port(&mut self, relay: SocketAddr, now: Now) -> [u8; 8] {
        let reserved = SocketAddr::new(relay.ip(), relay.port() + 1);
        let expires = now.mono + RESERVATION_LIFETIME;
        let reservation = Reservation {
            relay: reserved,
            expires,
        };
        let token = self.shared.reserve(reservation, &mut self.rng);
        self.timers
            .push(std::cmp::Reverse((expires, Timer::Reservation(token))));
        token
    }

    fn claim_reservation(
        &mut self,
        token: &[u8],
        dont_fragment: bool,
        now: Now,
        io: &mut dyn Io,
    ) -> Result<SocketAddr, Reject> {
        let token: [u8; 8] = token.try_into().map_err(|_| Reject::BadRequest)?;
        let reservation = self
            .shared
            .claim(&token, now.mono)
            .ok_or(Reject::InsufficientCapacity)?;
        // The port stays marked as taken: it moves from the reservation to the allocation.
        io.bind_relay(reservation.relay, dont_fragment)
            .map_err(|_| {
                self.shared.release_port(reservation.relay);
                Reject::InsufficientCapacity
            })?;
        Ok(reservation.relay)
    }

    fn advertised(&self, relay: SocketAddr) -> SocketAddr {
        let ip = self
            .config
            .advertised_ips
            .get(&relay.ip())
            .copied()
            .unwrap_or(relay.ip());
        SocketAddr::new(ip, relay.port())
    }

    /// RFC 8656 §8: REQUESTED-ADDRESS-FAMILY names the family of a dual allocation to
    /// refresh (443 for a family it does not have); without it both are. LIFETIME 0
    /// naming one family of a dual allocation deletes that family only.
    fn refresh(
        &mut self,
        now: Now,
        tuple: &FiveTuple,
        req: &Request,
        auth: &Authenticated,
        io: &mut dyn Io,
    ) -> Result<Response, Reject> {
        let (default, max) = (self.config.default_lifetime, self.config.max_lifetime);
        let alloc = self.owned_allocation(tuple, auth)?;
        let family = match req.attr(ATTR_REQUESTED_ADDRESS_FAMILY) {
            None => None,
            Some(v) => {
                let ipv6 = decode_address_family(v).ok_or(Reject::AddressFamilyNotSupported)?;
                if !alloc.has_family(ipv6) {
                    return Err(Reject::PeerAddressFamilyMismatch);
                }
                Some(ipv6)
            }
        };
        let lifetime = requested_lifetime(req).map_or(default, |l| l.min(max));
        let mut response = Response::success(req);
        response.add(&Lifetime(lifetime));
        match family {
            Some(ipv6) if lifetime.is_zero() && alloc.additional().is_some() => {
                self.drop_family(tuple, ipv6, now.mono, io);
            }
            _ => {
                // Zero (for every family it has) makes the allocation expire now;
                // `handle_request` deletes it after answering.
                alloc.set_expiry(family, now.mono + lifetime);
                self.schedule(tuple);
            }
        }
        Ok(response)
    }

    fn create_permission(
        &mut self,
        now: Now,
        tuple: &FiveTuple,
        req: &Request,
        auth: &Authenticated,
    ) -> Result<Response, Reject> {
        let peers = req.peer_addresses().ok_or(Reject::BadRequest)?;
        if peers.is_empty() {
            return Err(Reject::BadRequest);
        }
        let (lifetime, max) = (self.config.permission_lifetime, self.config.max_permissions);
        let policy = self.policy.clone();
        let alloc = self.owned_allocation(tuple, auth)?;
        check_peers(alloc, &peers, &policy)?;
        alloc.prune(now.mono);
        let ips: Vec<IpAddr> = peers.iter().map(SocketAddr::ip).collect();
        if alloc.permission_count(now.mono) + alloc.new_permission_count(&ips, now.mono) > max {
            return Err(Reject::InsufficientCapacity);
        }
        for ip in ips {
            alloc.install_permission(ip, now.mono + lifetime);
        }
        Ok(Response::success(req))
    }

    fn channel_bind(
        &mut self,
        now: Now,
        tuple: &FiveTuple,
        req: &Request,
        auth: &Authenticated,
    ) -> Result<Response, Reject> {
        let number = match req.attr(ATTR_CHANNEL_NUMBER) {
            Some(&[n0, n1, _, _]) => u16::from_be_bytes([n0, n1]),
            _ => return Err(Reject::BadRequest),
        };
        if !CHANNEL_NUMBERS.contains(&number) {
            return Err(Reject::BadRequest);
        }
        let peers = req.peer_addresses().ok_or(Reject::BadRequest)?;
        let [peer] = peers[..] else {
            return Err(Reject::BadRequest);
        };
        let config = self.config.clone();
        let policy = self.policy.clone();
        let alloc = self.owned_allocation(tuple, auth)?;
        // A TCP allocation relays connections, not datagrams (RFC 6062 §5).
        if alloc.tcp.is_some() {
            return Err(Reject::BadRequest);
        }
        check_peers(alloc, &[peer], &policy)?;
        alloc.prune(now.mono);
        if alloc.permission_count(now.mono) + alloc.new_permission_count(&[peer.ip()], now.mono)
            > config.max_permissions
        {
            return Err(Reject::InsufficientCapacity);
        }
        let expires = now.mono + config.channel_lifetime;
        alloc
            .bind_channel(number, peer, expires, now.mono, config.max_channels)
            .map_err(|conflict| match conflict {
                ChannelConflict::Mismatch => Reject::BadRequest,
                ChannelConflict::Full => Reject::InsufficientCapacity,
            })?;
        alloc.install_permission(peer.ip(), now.mono + config.permission_lifetime);
        Ok(Response::success(req))
    }
}

/// The allocation of `tuple` in `allocations`, owned by the authenticated user (437 /
/// 441); a free function so that callers may borrow the engine's other fields too.
pub(super) fn owned_allocation<'a>(
    allocations: &'a mut std::collections::HashMap<FiveTuple, Box<Allocation>>,
    tuple: &FiveTuple,
    auth: &Authenticated,
) -> Result<&'a mut Allocation, Reject> {
    let alloc = allocations
        .get_mut(tuple)
        .ok_or(Reject::AllocationMismatch)?;
    if *alloc.username != *auth.username {
        return Err(Reject::WrongCredentials);
    }
    Ok(alloc)
}

/// Every peer must be of one of the allocation's families (443) and pass the policy
/// (403). Checked for all peers before anything is installed: all or nothing.
pub(super) fn check_peers(
    alloc: &Allocation,
    peers: &[SocketAddr],
    policy: &crate::policy::PeerPolicy,
) -> Result<(), Reject> {
    if peers.iter().any(|p| !alloc.has_family(p.is_ipv6())) {
        return Err(Reject::PeerAddressFamilyMismatch);
    }
    if peers.iter().any(|p| policy.check(*p).is_err()) {
        return Err(Reject::Forbidden);
    }
    Ok(())
}

/// The relayed addresses an Allocate got.
struct Relays {
    relay: SocketAddr,
    /// A dual allocation's IPv6 one.
    additional: Option<SocketAddr>,
    /// The family (IPv6 or not) a dual Allocate did not get, and why: its
    /// ADDRESS-ERROR-CODE.
    refused: Option<(bool, Reject)>,
}

impl From<SocketAddr> for Relays {
    fn from(relay: SocketAddr) -> Self {
        Self {
            relay,
            additional: None,
            refused: None,
        }
    }
}

/// The LIFETIME the client asked for, if it sent a well-formed one.
fn requested_lifetime(req: &Request) -> Option<Duration> {
    match req.attr(ATTR_LIFETIME)? {
        &[a, b, c, d] => Some(Duration::from_secs(u32::from_be_bytes([a, b, c, d]).into())),
        _ => None,
    }
}
