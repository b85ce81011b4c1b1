//! The local address of a datagram on a wildcard listener, and sending from it.
//!
//! A socket bound to `0.0.0.0` or `[::]` receives on every address of the host, but a
//! plain `sendto` leaves from whichever address the kernel's route picks, which on a
//! host with several addresses may not be the one the client sent to. A NAT in front
//! of the client then drops the answer (it matches replies on the full 5-tuple), and
//! a client checking where answers come from ignores it. So wildcard listeners ask
//! for each datagram's destination (`IP_PKTINFO` / `IPV6_RECVPKTINFO`) and every
//! answer and relayed datagram to that client names it as its source.
//!
//! This module owns the socket options, the control messages and what a datagram's
//! destination makes of the server side of its 5-tuple ([`server_side`]). Sending
//! with a source is [`super::outbox`]'s.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Room for one control message of either family, aligned for `cmsghdr`.
pub type ControlBuf = [u64; 8];

/// The socket option (level, name) that asks the kernel to tell the destination
/// address of every datagram a socket receives. Only wildcard listeners need it.
pub fn option(ipv6: bool) -> (libc::c_int, libc::c_int) {
    if ipv6 {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
    } else {
        (libc::IPPROTO_IP, libc::IP_PKTINFO)
    }
}

/// The local address a received datagram was sent to, from the control messages of
/// its header. `None` when the socket did not ask for it.
///
/// # Safety
/// `hdr` must be a header the kernel filled by `recvmsg`/`recvmmsg`, whose control
/// buffer is still alive.
pub unsafe fn destination(hdr: &libc::msghdr) -> Option<IpAddr> {
    // SAFETY: the kernel wrote `msg_controllen` bytes of well-formed control messages
    // into the buffer `hdr` points at; the CMSG_* walk stays inside them, and each
    // payload is read unaligned as the type its level and type say it holds.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            let c = &*cmsg;
            let data = libc::CMSG_DATA(cmsg);
            match (c.cmsg_level, c.cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let info = data.cast::<libc::in_pktinfo>().read_unaligned();
                    // The local address the kernel routed the datagram to: the same as
                    // the header's destination for unicast, the receiving interface's
                    // address for a broadcast (never a valid source).
                    let ip = Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr));
                    return Some(IpAddr::V4(ip));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let info = data.cast::<libc::in6_pktinfo>().read_unaligned();
                    return Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    None
}

/// Writes one `IP_PKTINFO` / `IPV6_PKTINFO` control message naming `from` as the
/// source into `control`; returns its length for `msg_controllen`.
pub fn write_source(control: &mut ControlBuf, from: IpAddr) -> usize {
    let (level, kind, payload_len) = match from {
        IpAddr::V4(_) => (
            libc::IPPROTO_IP,
            libc::IP_PKTINFO,
            std::mem::size_of::<libc::in_pktinfo>(),
        ),
        IpAddr::V6(_) => (
            libc::IPPROTO_IPV6,
            libc::IPV6_PKTINFO,
            std::mem::size_of::<libc::in6_pktinfo>(),
        ),
    };
    // SAFETY: CMSG_SPACE and CMSG_LEN are arithmetic on a length.
    let (space, len) = unsafe {
        (
            libc::CMSG_SPACE(payload_len as u32) as usize,
            libc::CMSG_LEN(payload_len as u32) as usize,
        )
    };
    debug_assert!(space <= std::mem::size_of::<ControlBuf>());
    // SAFETY: a header with its control buffer set is all CMSG_FIRSTHDR reads; the
    // buffer holds `space` bytes (checked above), aligned for cmsghdr (u64 array), so
    // the header and payload written through the returned pointers stay inside it.
    unsafe {
        let mut hdr: libc::msghdr = std::mem::zeroed();
        hdr.msg_control = control.as_mut_ptr().cast();
        hdr.msg_controllen = space;
        let cmsg = libc::CMSG_FIRSTHDR(&hdr);
        (*cmsg).cmsg_level = level;
        (*cmsg).cmsg_type = kind;
        (*cmsg).cmsg_len = len;
        let data = libc::CMSG_DATA(cmsg);
        match from {
            IpAddr::V4(ip) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(ip).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                data.cast::<libc::in_pktinfo>().write_unaligned(info);
            }
            IpAddr::V6(ip) => {
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: ip.octets(),
                    },
                    ipi6_ifindex: 0,
                };
                data.cast::<libc::in6_pktinfo>().write_unaligned(info);
            }
        }
    }
    space
}

/// Where a client of `server` is answered from: its own address when bound to one,
/// else `destination`, the address the client sent to.
pub fn server_side(
    server: SocketAddr,
    destination: Option<IpAddr>,
) -> (SocketAddr, Option<IpAddr>) {
    match destination {
        Some(ip) if server.ip().is_unspecified() => (SocketAddr::new(ip, server.port()), Some(ip)),
        _ => (server, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, UdpSocket};

    /// A wildcard socket learns which local address each datagram was sent to, and
    /// an answer sent from that address arrives from it.
    async fn round_trip(wildcard: &str, local: &str) {
        let server = super::super::socket::bind_udp(wildcard.parse().unwrap(), 65536).unwrap();
        let server = tokio::net::UdpSocket::from_std(server).unwrap();
        let port = server.local_addr().unwrap().port();
        let local: IpAddr = local.parse().unwrap();
        let client = UdpSocket::bind(SocketAddr::new(local, 0)).unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        client
            .send_to(b"ping", SocketAddr::new(local, port))
            .unwrap();

        let mut batch = super::super::batch::RecvBatch::new(0, 64);
        server.readable().await.unwrap();
        assert_eq!(batch.recv(&server), 1);
        assert_eq!(batch.destination(0), Some(local));
        let (_, _, from) = batch.get(0).unwrap();
        let mut outbox = super::super::outbox::Outbox::default();
        outbox.push(0, b"pong", from, Some(local));
        outbox.flush(std::slice::from_ref(&server));
        let mut buf = [0u8; 16];
        let (n, source) = client.recv_from(&mut buf).unwrap();
        assert_eq!(
            (&buf[..n], source),
            (&b"pong"[..], SocketAddr::new(local, port))
        );
    }

    #[tokio::test]
    async fn ipv4_destination_and_source() {
        // 127.0.0.2 is on loopback too, but the kernel's own choice of source for it
        // is 127.0.0.1: the answer comes from 127.0.0.2 only if the source is set.
        round_trip("0.0.0.0:0", "127.0.0.2").await;
    }

    #[tokio::test]
    async fn ipv6_destination_and_source() {
        round_trip("[::]:0", "::1").await;
    }
}
