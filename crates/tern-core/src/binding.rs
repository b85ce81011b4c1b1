//! Answering Binding requests: the mapped address, and with `[server.nat_discovery]`
//! the RFC 5780 attributes a NAT behaviour discovery client asks for.

use std::net::SocketAddr;
use stun::attributes::{
    ATTR_CHANGE_REQUEST, ATTR_OTHER_ADDRESS, ATTR_PADDING, ATTR_RESPONSE_ORIGIN,
    ATTR_RESPONSE_PORT, ATTR_XORMAPPED_ADDRESS, AttrType,
};
use stun::uattrs::UnknownAttributes;

use super::nat_discovery::{ChangeRequest, NatDiscovery, decode_response_port};
use super::{Engine, FiveTuple, Io, Now, Transport};
use crate::proto::{Request, Response};

/// Bytes of an attribute's header and of FINGERPRINT, which every Binding answer ends
/// with: what PADDING must leave room for.
const ATTRIBUTE_HEADER_LEN: usize = 4;
const FINGERPRINT_LEN: usize = 8;

/// What a Binding request asks beyond its mapped address (RFC 5780 §7).
#[derive(Default)]
struct Asked {
    change: ChangeRequest,
    response_port: Option<u16>,
    padding: bool,
}

/// Why a Binding request is answered with an error.
enum Refused {
    /// 420 with these types in UNKNOWN-ATTRIBUTES.
    Unknown(Vec<AttrType>),
    /// 400: a discovery attribute that is malformed, over a stream, or in a
    /// combination RFC 5780 rules out (PADDING with RESPONSE-PORT).
    Bad,
}

impl Engine {
    /// Binding needs no credentials, so its answer (larger than a bare request) is a
    /// reflector's gift unless it is budgeted like a 401; a client with an allocation
    /// on this 5-tuple (a keepalive) has proved itself and is not charged, unless it asks
    /// for more than a keepalive does (CHANGE-REQUEST, RESPONSE-PORT, PADDING): a 5-tuple
    /// can be spoofed, and those answers go elsewhere or grow.
    pub(super) fn answer_binding(
        &mut self,
        now: Now,
        tuple: &FiveTuple,
        req: &Request,
        io: &mut dyn Io,
    ) {
        let keepalive = [ATTR_CHANGE_REQUEST, ATTR_RESPONSE_PORT, ATTR_PADDING]
            .iter()
            .all(|&t| req.attr(t).is_none())
            && self.allocations.contains_key(tuple);
        if !keepalive && !self.limiter.allow(tuple.client.ip(), now.mono) {
            return;
        }
        // Discovery applies only on the four addresses it names.
        let discovery = self.config.nat_discovery.filter(|d| d.serves(tuple.server));
        let asked = read_asked(req, tuple.transport, discovery.is_some());
        let padding = matches!(asked, Ok(Asked { padding: true, .. }));
        let (mut response, origin, to) = match asked {
            Ok(asked) => answer(req, tuple, discovery.as_ref(), &asked),
            Err(Refused::Unknown(types)) => {
                let mut r = Response::error(req, 420);
                r.add(&UnknownAttributes(types));
                (r, tuple.server, tuple.client)
            }
            Err(Refused::Bad) => (Response::error(req, 400), tuple.server, tuple.client),
        };
        response.add_software(self.config.software.as_deref());
        if padding {
            pad_to(&mut response, req.msg.raw.len());
        }
        let from = FiveTuple {
            client: to,
            server: origin,
            transport: tuple.transport,
        };
        io.send_to_client(&from, &response.finish(None, true));
    }
}

/// A success answer and where it goes: from `origin` to `to`.
fn answer(
    req: &Request,
    tuple: &FiveTuple,
    discovery: Option<&NatDiscovery>,
    asked: &Asked,
) -> (Response, SocketAddr, SocketAddr) {
    let mut r = Response::success(req);
    r.add_xor_address(ATTR_XORMAPPED_ADDRESS, tuple.client);
    let Some(d) = discovery.filter(|_| tuple.transport == Transport::Udp) else {
        return (r, tuple.server, tuple.client);
    };
    let origin = d.response_origin(tuple.server, asked.change);
    let other = d.other_address(tuple.server);
    let (Some(origin), Some(other)) = (origin, other) else {
        return (r, tuple.server, tuple.client);
    };
    r.add_address(ATTR_RESPONSE_ORIGIN, origin);
    r.add_address(ATTR_OTHER_ADDRESS, other);
    let port = asked.response_port.unwrap_or(tuple.client.port());
    (r, origin, SocketAddr::new(tuple.client.ip(), port))
}

/// Reads CHANGE-REQUEST, RESPONSE-PORT and PADDING, which only a server with
/// `discovery` on understands (an empty CHANGE-REQUEST, which some old clients put in
/// every request, is understood by all). Over TCP and TLS the answer cannot leave from
/// elsewhere or go elsewhere, so asking is a 400, as coturn answers.
fn read_asked(req: &Request, transport: Transport, discovery: bool) -> Result<Asked, Refused> {
    let mut asked = Asked::default();
    if let Some(value) = req.attr(ATTR_CHANGE_REQUEST) {
        asked.change = ChangeRequest::decode(value).ok_or(Refused::Bad)?;
    }
    let understood = |t: &AttrType| {
        *t == ATTR_CHANGE_REQUEST && (discovery || !asked.change.any())
            || discovery && [ATTR_RESPONSE_PORT, ATTR_PADDING].contains(t)
    };
    let unknown: Vec<AttrType> = req
        .unknown_required()
        .iter()
        .copied()
        .filter(|t| !understood(t))
        .collect();
    if !unknown.is_empty() {
        return Err(Refused::Unknown(unknown));
    }
    if let Some(value) = req.attr(ATTR_RESPONSE_PORT).filter(|_| discovery) {
        asked.response_port = Some(decode_response_port(value).ok_or(Refused::Bad)?);
    }
    asked.padding = discovery && req.attr(ATTR_PADDING).is_some();
    let redirects = asked.change.any() || asked.response_port.is_some() || asked.padding;
    if (redirects && transport != Transport::Udp)
        || (asked.padding && asked.response_port.is_some())
    {
        return Err(Refused::Bad);
    }
    Ok(asked)
}

/// Adds a PADDING attribute that brings the answer, with its FINGERPRINT, up to the
/// request's size (RFC 5780 §7.6: to see whether fragments get through); an empty one
/// when the answer is already that long. Never beyond it: a request that pads itself
/// earns no larger answer than it cost.
fn pad_to(response: &mut Response, request_len: usize) {
    let used = response.encoded_len() + ATTRIBUTE_HEADER_LEN + FINGERPRINT_LEN;
    let len = request_len.saturating_sub(used) / 4 * 4;
    response.add_raw(ATTR_PADDING, &vec![0; len]);
}
