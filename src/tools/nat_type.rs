//! `tern stun --nat-type`: how the NAT in front of this host maps and filters, by the
//! tests of RFC 5780 §4.3 and §4.4 against a server that has NAT discovery on (tern
//! with `[server.nat_discovery]`, coturn with two listening IPs, stuntman).
//!
//! Mapping: the mapped address seen at the primary address, at the other IP, and at
//! the other IP and port; the same from all three is endpoint-independent. Filtering:
//! whether an answer sent from the other IP and port, or from the other port only,
//! gets back in.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use serde::Serialize;
use stun::agent::TransactionId;
use stun::attributes::{ATTR_CHANGE_REQUEST, ATTR_OTHER_ADDRESS, ATTR_XORMAPPED_ADDRESS};
use stun::message::{CLASS_REQUEST, METHOD_BINDING};

use crate::client::{Attr, Outgoing, Signer, encode_message, new_transaction_id};
use crate::core::nat_discovery::ChangeRequest;
use crate::proto::Request;
use crate::proto::attrs::{decode_address, decode_xor_address};

/// How a NAT picks the public address for a new flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mapping {
    /// The mapped address is the host's own: nothing translates.
    NoNat,
    EndpointIndependent,
    AddressDependent,
    AddressAndPortDependent,
}

/// Which senders a NAT lets back in to a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Filtering {
    EndpointIndependent,
    AddressDependent,
    AddressAndPortDependent,
}

/// The kebab-case name the JSON output gives `value` (serde's), for the text output.
fn kebab(value: impl Serialize, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let json = serde_json::to_value(value).map_err(|_| fmt::Error)?;
    f.write_str(json.as_str().unwrap_or_default())
}

impl fmt::Display for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        kebab(self, f)
    }
}

impl fmt::Display for Filtering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        kebab(self, f)
    }
}

/// What the tests found.
#[derive(Debug, Serialize)]
pub struct NatType {
    pub local: SocketAddr,
    pub mapped: SocketAddr,
    /// The server's OTHER-ADDRESS.
    pub other_address: SocketAddr,
    pub mapping: Mapping,
    pub filtering: Filtering,
}

/// What a Binding answer said.
struct Answer {
    mapped: SocketAddr,
    other: Option<SocketAddr>,
}

/// Sends of one Binding before it counts as unanswered.
const ATTEMPTS: u32 = 3;

/// One UDP socket that a series of tests sends from, as RFC 5780 requires (the
/// mappings compared must be of one local address).
struct Prober {
    socket: UdpSocket,
    /// Per attempt; a test without an answer waits [`ATTEMPTS`] times this.
    timeout: Duration,
}

impl Prober {
    /// A prober on a fresh port of `ip`.
    fn new(ip: IpAddr, timeout: Duration) -> io::Result<Self> {
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0))?;
        Ok(Self { socket, timeout })
    }

    /// A Binding to `to`, asking for the answer from elsewhere per `change`; `None`
    /// when no answer came in any attempt. Only an answer from `to` moved as `change`
    /// says (`from`) counts: one from anywhere else proves nothing about the NAT.
    fn binding(
        &self,
        to: SocketAddr,
        change: ChangeRequest,
        from: SocketAddr,
    ) -> io::Result<Option<Answer>> {
        let tid = new_transaction_id();
        let out = Outgoing {
            attrs: if change.any() {
                vec![Attr::Raw(ATTR_CHANGE_REQUEST, change.encode().to_vec())]
            } else {
                Vec::new()
            },
            fingerprint: true,
            ..Outgoing::default()
        };
        let request = encode_message(METHOD_BINDING, CLASS_REQUEST, tid, &out, &Signer::NONE);
        for _ in 0..ATTEMPTS {
            self.socket.send_to(&request, to)?;
            let Some(reply) = self.receive(tid, from)? else {
                continue;
            };
            let mapped = reply
                .attr(ATTR_XORMAPPED_ADDRESS)
                .and_then(|v| decode_xor_address(v, &tid));
            let Some(mapped) = mapped else {
                return Err(io::Error::other(format!(
                    "{to} answered without a mapped address (an error response?)"
                )));
            };
            let other = reply.attr(ATTR_OTHER_ADDRESS).and_then(decode_address);
            return Ok(Some(Answer { mapped, other }));
        }
        Ok(None)
    }

    /// The answer to `tid` from `from` within one attempt's timeout; anything else that
    /// arrives meanwhile (other sources, stray datagrams, ICMP errors of earlier sends)
    /// is passed over.
    fn receive(&self, tid: TransactionId, from: SocketAddr) -> io::Result<Option<Request>> {
        let mut buf = [0u8; 2048];
        let deadline = Instant::now() + self.timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            match self.socket.recv_from(&mut buf) {
                Ok((n, source)) if source == from => {
                    let reply = Request::parse(&buf[..n]).ok();
                    if let Some(reply) = reply.filter(|r| r.transaction_id() == tid) {
                        return Ok(Some(reply));
                    }
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

/// Runs the mapping and filtering tests against `server` (its primary address). The
/// filtering tests run from a socket of their own: the mapping tests' requests to the
/// server's other IP would open an address-dependent filter to it, and the NAT would
/// pass for endpoint-independent.
pub fn discover(server: SocketAddr, timeout: Duration) -> Result<NatType, String> {
    let local_ip = source_ip_towards(server).map_err(|e| format!("no route to {server}: {e}"))?;
    let text = |e: io::Error| e.to_string();
    let mapping_prober = Prober::new(local_ip, timeout).map_err(text)?;
    let local = mapping_prober.socket.local_addr().map_err(text)?;
    let same = ChangeRequest::default();
    let ask = |prober: &Prober, to: SocketAddr, change: ChangeRequest, from: SocketAddr| {
        prober.binding(to, change, from).map_err(text)
    };
    let first = ask(&mapping_prober, server, same, server)?
        .ok_or_else(|| format!("no answer from {server}"))?;
    let other = first.other.ok_or_else(|| {
        format!("{server} gave no OTHER-ADDRESS: NAT discovery (RFC 5780) is not on there")
    })?;
    let mapping = if first.mapped == local {
        Mapping::NoNat
    } else {
        let no_answer =
            |to: SocketAddr| format!("no answer from {to} (the server's other address)");
        let other_ip = SocketAddr::new(other.ip(), server.port());
        let second =
            ask(&mapping_prober, other_ip, same, other_ip)?.ok_or_else(|| no_answer(other_ip))?;
        if second.mapped == first.mapped {
            Mapping::EndpointIndependent
        } else {
            let third =
                ask(&mapping_prober, other, same, other)?.ok_or_else(|| no_answer(other))?;
            if third.mapped == second.mapped {
                Mapping::AddressDependent
            } else {
                Mapping::AddressAndPortDependent
            }
        }
    };
    let filtering_prober = Prober::new(local_ip, timeout).map_err(text)?;
    ask(&filtering_prober, server, same, server)?
        .ok_or_else(|| format!("no answer from {server} to a second socket"))?;
    let both = ChangeRequest {
        ip: true,
        port: true,
    };
    let port_only = ChangeRequest {
        ip: false,
        port: true,
    };
    let other_port = SocketAddr::new(server.ip(), other.port());
    let filtering = if ask(&filtering_prober, server, both, other)?.is_some() {
        Filtering::EndpointIndependent
    } else if ask(&filtering_prober, server, port_only, other_port)?.is_some() {
        Filtering::AddressDependent
    } else {
        Filtering::AddressAndPortDependent
    };
    Ok(NatType {
        local,
        mapped: first.mapped,
        other_address: other,
        mapping,
        filtering,
    })
}

/// The local IP the routing table picks for `server` (a connected UDP socket sends
/// nothing), so that "no NAT" can be told from a mapped address equal to it.
fn source_ip_towards(server: SocketAddr) -> io::Result<IpAddr> {
    let unspecified: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(unspecified)?;
    socket.connect(server)?;
    Ok(socket.local_addr()?.ip())
}
