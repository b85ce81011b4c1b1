//! RFC 5780 NAT behaviour discovery: a server with two IPs and two ports answers a
//! Binding from whichever of its four addresses the client asks for (CHANGE-REQUEST),
//! says where it answered from (RESPONSE-ORIGIN) and where the other corner is
//! (OTHER-ADDRESS), so a client can tell how its NAT maps and filters.
//!
//! Only Binding over UDP uses it: TURN requests are authenticated and answered exactly
//! as without it.

use std::net::{IpAddr, SocketAddr};

/// The server's two IPs and two ports (`[server.nat_discovery]`): the first IP and
/// port are the primary ones a client starts with; every one of the four combinations
/// answers Binding requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatDiscovery {
    pub ips: [IpAddr; 2],
    pub ports: [u16; 2],
}

/// The flags of a CHANGE-REQUEST: answer from the other IP, the other port, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChangeRequest {
    pub ip: bool,
    pub port: bool,
}

impl ChangeRequest {
    const CHANGE_IP: u32 = 0x4;
    const CHANGE_PORT: u32 = 0x2;

    /// Decodes a CHANGE-REQUEST value; `None` when it is not 4 bytes.
    pub fn decode(value: &[u8]) -> Option<Self> {
        let flags = u32::from_be_bytes(value.try_into().ok()?);
        Some(Self {
            ip: flags & Self::CHANGE_IP != 0,
            port: flags & Self::CHANGE_PORT != 0,
        })
    }

    pub fn encode(self) -> [u8; 4] {
        let ip = if self.ip { Self::CHANGE_IP } else { 0 };
        let port = if self.port { Self::CHANGE_PORT } else { 0 };
        (ip | port).to_be_bytes()
    }

    /// Whether it asks for any change (an empty one is what some old clients send with
    /// every request, and is answered as if absent).
    pub fn any(self) -> bool {
        self.ip || self.port
    }
}

/// Decodes a RESPONSE-PORT value (a port and two bytes of padding); `None` when it is
/// not 4 bytes or names port 0.
pub fn decode_response_port(value: &[u8]) -> Option<u16> {
    let [a, b, _, _] = value.try_into().ok()?;
    Some(u16::from_be_bytes([a, b])).filter(|&port| port != 0)
}

impl NatDiscovery {
    /// The four addresses, primary first.
    pub fn addresses(&self) -> [SocketAddr; 4] {
        let [a, b] = self.ips;
        let [p, q] = self.ports;
        [(a, p), (a, q), (b, p), (b, q)].map(|(ip, port)| SocketAddr::new(ip, port))
    }

    /// Which IP and which port `server` is (indices into `ips` and `ports`); `None`
    /// for an address that is not one of the four.
    fn position(&self, server: SocketAddr) -> Option<(usize, usize)> {
        let ip = self.ips.iter().position(|&ip| ip == server.ip())?;
        let port = self.ports.iter().position(|&p| p == server.port())?;
        Some((ip, port))
    }

    /// Whether `server` is one of the four addresses.
    pub fn serves(&self, server: SocketAddr) -> bool {
        self.position(server).is_some()
    }

    /// The address that differs from `server` in both IP and port (OTHER-ADDRESS).
    pub fn other_address(&self, server: SocketAddr) -> Option<SocketAddr> {
        self.response_origin(
            server,
            ChangeRequest {
                ip: true,
                port: true,
            },
        )
    }

    /// The address an answer to a request that reached `server` leaves from.
    pub fn response_origin(&self, server: SocketAddr, change: ChangeRequest) -> Option<SocketAddr> {
        let (ip, port) = self.position(server)?;
        let flip = |i: usize, change: bool| if change { 1 - i } else { i };
        Some(SocketAddr::new(
            self.ips[flip(ip, change.ip)],
            self.ports[flip(port, change.port)],
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discovery() -> NatDiscovery {
        NatDiscovery {
            ips: ["192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap()],
            ports: [3478, 3479],
        }
    }

    #[test]
    fn every_corner_knows_the_other_three() {
        let d = discovery();
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let change = |ip, port| ChangeRequest { ip, port };
        assert_eq!(
            d.other_address(a("192.0.2.1:3478")),
            Some(a("192.0.2.2:3479"))
        );
        assert_eq!(
            d.other_address(a("192.0.2.2:3479")),
            Some(a("192.0.2.1:3478"))
        );
        assert_eq!(
            d.other_address(a("192.0.2.2:3478")),
            Some(a("192.0.2.1:3479"))
        );
        let from = a("192.0.2.1:3479");
        assert_eq!(d.response_origin(from, change(false, false)), Some(from));
        assert_eq!(
            d.response_origin(from, change(true, false)),
            Some(a("192.0.2.2:3479"))
        );
        assert_eq!(
            d.response_origin(from, change(false, true)),
            Some(a("192.0.2.1:3478"))
        );
        assert_eq!(d.other_address(a("192.0.2.3:3478")), None);
        assert_eq!(d.other_address(a("192.0.2.1:3480")), None);
        assert_eq!(d.addresses().len(), 4);
    }

    #[test]
    fn attribute_values_are_read_strictly() {
        let both = ChangeRequest {
            ip: true,
            port: true,
        };
        assert_eq!(ChangeRequest::decode(&both.encode()), Some(both));
        assert_eq!(
            ChangeRequest::decode(&[0, 0, 0, 2]).map(|c| c.port),
            Some(true)
        );
        assert!(!ChangeRequest::decode(&[0; 4]).unwrap().any());
        assert_eq!(ChangeRequest::decode(&[0, 0, 6]), None);
        assert_eq!(decode_response_port(&[0x0d, 0x96, 0, 0]), Some(3478));
        assert_eq!(decode_response_port(&[0, 0, 0, 0]), None);
        assert_eq!(decode_response_port(&[0x0d, 0x96]), None);
    }
}
