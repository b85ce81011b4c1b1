//! Attacks on the peer policy through a running `tern serve` on loopback, over UDP,
//! TCP and TLS, with the default policy unless a case says otherwise:
//!
//! - every default-denied range, and every IPv6 spelling of a denied IPv4 (mapped,
//!   compatible, translated, NAT64, 6to4, Teredo), is refused with 403 by
//!   CreatePermission and ChannelBind, leaves no permission or channel behind, and a
//!   Send indication or ChannelData towards it relays nothing. A scoped link-local
//!   peer (`fe80::1%1`) reaches the server as plain `fe80::1`: XOR-PEER-ADDRESS has no
//!   room for a scope id. Re-opening the 6to4 or Teredo prefix does not re-open the
//!   IPv4 they carry;
//! - port 0 is refused with 403, as a policy refusal (RFC 8656 leaves refusals of a
//!   peer to policy, answered 403; the request itself is well formed, so not 400);
//! - the server's own listening ports (STUN/TURN, TLS, admin, self-test) are refused
//!   even when an `allowed` entry covers loopback, while the relay addresses of other
//!   allocations stay reachable;
//! - a CreatePermission naming several peers with one denied installs none of them;
//! - a peer named twice counts once toward `permissions_per_allocation`; a ChannelBind
//!   naming two peers is 400 and a Send naming two is dropped;
//! - a peer of the other address family is 443, not 403;
//! - `tern_peer_denied_total` counts each 403 and nothing else.
//!
//! Nothing is sent to a denied address by the test: requests only *name* them. Each
//! denied peer is named with the port of a loopback sink socket, so a spelling of this
//! host that slipped through would arrive there, and `tern_relayed_to_peer_packets_total`
//! shows any datagram tern decided to relay anywhere.

#[path = "support/certs.rs"]
mod certs;
mod support;

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use certs::{CertFiles, TestCert};
use stun::attributes::{ATTR_DATA, ATTR_XOR_RELAYED_ADDRESS};
use stun::message::{CLASS_INDICATION, METHOD_BINDING, METHOD_CHANNEL_BIND, METHOD_SEND};
use support::{TempDir, TernServer, free_port_range, free_udp_port, metric};
use tern::client::{
    Attr, Outgoing, Reply, Signer, TurnClient, encode_message, new_transaction_id, signed,
};

const USER: &str = "mallory";
const PASS: &str = "peer-policy";
/// How long a datagram that should not exist gets to show up.
const SILENCE: Duration = Duration::from_millis(300);
const FIRST_CHANNEL: u16 = 0x4000;
/// The last channel number, bound where the refused ones (from the first) do not reach.
const LAST_CHANNEL: u16 = 0x4fff;
/// `64:ff9b::/96`, the NAT64 well-known prefix (RFC 6052).
const NAT64_PREFIX: u128 = 0x0064_ff9b << 96;

/// Addresses inside every range crates/tern-core/src/policy.rs denies by default, and every IPv6
/// spelling of a denied IPv4 it knows. A `%n` suffix is a scope id, which
/// XOR-PEER-ADDRESS has no room for: the server sees the bare link-local address.
const DEFAULT_DENIED: &[&str] = &[
    "0.0.0.0", // "this network": a datagram to it reaches this host
    "0.1.2.3",
    "10.1.2.3",
    "100.64.0.1",      // CGNAT
    "100.100.100.200", // CGNAT; Alibaba Cloud's metadata service
    "127.0.0.1",
    "127.1.2.3",
    "127.255.255.254",
    "169.254.169.254", // cloud metadata
    "169.254.0.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.0.0.8",
    "192.0.2.1",
    "192.88.99.1",
    "192.168.1.1",
    "198.18.0.1",
    "198.51.100.1",
    "203.0.113.1",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "::ffff:127.0.0.1", // IPv4-mapped
    "::ffff:0.0.0.0",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:224.0.0.1",
    "::ffff:255.255.255.255",
    "::127.0.0.1", // IPv4-compatible
    "::169.254.169.254",
    "::ffff:0:127.0.0.1", // IPv4-translated
    "64:ff9b::127.0.0.1", // NAT64 well-known prefix
    "64:ff9b::169.254.169.254",
    "64:ff9b::10.0.0.1",
    "64:ff9b:1::127.0.0.1",   // NAT64 local-use prefix, /96 embedding
    "64:ff9b:1:7f00:0:100::", // the same prefix, /48 embedding of 127.0.0.1 (RFC 6052)
    "2002:7f00:1::1",         // 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",      // 6to4 of 169.254.169.254
    "2002:a00:1::1",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2", // Teredo
    "2001:0:7f00:1:0:0:80ff:fffe",          // Teredo: server and client 127.0.0.1
    "2001::1",
    "100::1",
    "2001:db8::1",
    "3fff::1",
    "fc00::1",
    "fd12:3456::1",
    "fd00:ec2::254", // AWS metadata over IPv6
    "fe80::1",
    "fe80::1%1",
    "fec0::1",
    "ff02::1",
    "ff05::1:3",
    "ff0e::1",
];

// ---------------------------------------------------------------------------------------
// A server with every transport and its metrics
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Transport {
    Udp,
    Tcp,
    Tls,
}

const TRANSPORTS: [Transport; 3] = [Transport::Udp, Transport::Tcp, Transport::Tls];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn of(addr: SocketAddr) -> Family {
        if addr.is_ipv6() {
            Family::V6
        } else {
            Family::V4
        }
    }

    /// REQUESTED-ADDRESS-FAMILY for an Allocate (none means IPv4).
    fn allocate_attrs(self) -> Vec<Attr> {
        match self {
            Family::V4 => Vec::new(),
            Family::V6 => vec![Attr::family(2)],
        }
    }
}

/// `tern serve` on 127.0.0.1 with UDP, TCP and TLS listeners, an admin and a self-test
/// listener, relaying on 127.0.0.1 and ::1 so that both families can be allocated over
/// any transport.
struct Target {
    tern: TernServer,
    tls: SocketAddr,
    admin: SocketAddr,
    selftest: SocketAddr,
    relay_ports: (u16, u16),
    cert: TestCert,
    /// Holds the certificate files.
    _certs: TempDir,
}

/// The counters and gauges a refused peer must leave alone (or move, for `denied`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Counts {
    denied: f64,
    relayed_to_peer: f64,
    permissions: f64,
    channels: f64,
}

impl Target {
    /// A server with the built-in policy plus `extra` flags, and `config` as its file.
    fn start(config: &str, extra: &[&str]) -> Target {
        if let Err(why) = support::ipv6_loopback_available() {
            panic!("IPv6 loopback is needed to relay on ::1: {why}");
        }
        let certs = TempDir::new("tern-attack-certs");
        let files = CertFiles::in_dir(certs.path());
        let cert = TestCert::new();
        cert.write(&files);
        let tls = SocketAddr::from((Ipv4Addr::LOCALHOST, free_udp_port()));
        let admin = SocketAddr::from((Ipv4Addr::LOCALHOST, free_udp_port()));
        let selftest = SocketAddr::from((Ipv4Addr::LOCALHOST, free_udp_port()));
        let config = format!(
            "{config}\n[selftest]\nlisten = \"{selftest}\"\ntoken = \"peer-policy-attacks\"\n"
        );
        let relay_ports = free_port_range(100);
        let mut args = vec![
            "--user".to_string(),
            format!("{USER}:{PASS}"),
            "--ports".to_string(),
            format!("{}-{}", relay_ports.0, relay_ports.1),
            "--relay-ip".to_string(),
            "127.0.0.1".to_string(),
            "--relay-ip".to_string(),
            "::1".to_string(),
            "--tls-listen".to_string(),
            tls.to_string(),
            "--admin".to_string(),
            admin.to_string(),
        ];
        args.extend(files.args());
        args.extend(extra.iter().map(|a| a.to_string()));
        let tern = TernServer::builder().config(&config).args(&args).start();
        Target {
            tern,
            tls,
            admin,
            selftest,
            relay_ports,
            cert,
            _certs: certs,
        }
    }

    /// The default policy: nothing re-allowed.
    fn default_policy() -> Target {
        Target::start("", &[])
    }

    /// Loopback re-allowed, as on a test bench or an intranet relay.
    fn loopback_allowed() -> Target {
        Target::start(
            "",
            &["--allow-peer", "127.0.0.0/8", "--allow-peer", "::1/128"],
        )
    }

    fn client(&self, transport: Transport) -> TurnClient {
        let server = self.tern.addr;
        let client = match transport {
            Transport::Udp => TurnClient::new(server, USER, PASS),
            Transport::Tcp => TurnClient::connect_tcp(server, USER, PASS),
            Transport::Tls => {
                TurnClient::connect_tls(self.tls, "localhost", self.cert.roots(), USER, PASS)
            }
        };
        client.unwrap_or_else(|e| panic!("{transport:?} client: {e}\n{}", self.tern.logs()))
    }

    /// A client on `transport` holding an allocation of `family`.
    fn allocation(&self, transport: Transport, family: Family) -> Allocation {
        let mut client = self.client(transport);
        let reply = client
            .allocate(family.allocate_attrs())
            .unwrap_or_else(|e| panic!("{family:?} Allocate over {transport:?}: {e}"));
        assert!(
            reply.is_success(),
            "{family:?} Allocate over {transport:?}: {:?}\n{}",
            reply.code,
            self.tern.logs()
        );
        let relay = reply
            .xor_address(ATTR_XOR_RELAYED_ADDRESS)
            .expect("XOR-RELAYED-ADDRESS");
        assert_eq!(Family::of(relay), family, "relayed address {relay}");
        Allocation {
            client,
            relay,
            transport,
        }
    }

    fn counts(&self) -> Counts {
        Counts {
            denied: metric(self.admin, "tern_peer_denied_total"),
            relayed_to_peer: metric(self.admin, "tern_relayed_to_peer_packets_total"),
            permissions: metric(self.admin, "tern_permissions"),
            channels: metric(self.admin, "tern_channels"),
        }
    }

    /// The server's listening endpoints that are not relay addresses: UDP and TCP,
    /// TLS, admin, self-test.
    fn service_endpoints(&self) -> [SocketAddr; 4] {
        [self.tern.addr, self.tls, self.admin, self.selftest]
    }
}

/// A client and its allocation.
struct Allocation {
    client: TurnClient,
    relay: SocketAddr,
    transport: Transport,
}

impl Allocation {
    fn create_permission(&mut self, peers: &[SocketAddr]) -> Reply {
        self.client
            .create_permission(peers)
            .unwrap_or_else(|e| panic!("CreatePermission {peers:?} over {:?}: {e}", self.transport))
    }

    fn channel_bind(&mut self, number: u16, peer: SocketAddr) -> Reply {
        self.channel_bind_naming(number, &[peer])
    }

    /// A ChannelBind naming each of `peers` (a well-formed one names exactly one).
    fn channel_bind_naming(&mut self, number: u16, peers: &[SocketAddr]) -> Reply {
        let mut attrs = vec![Attr::channel(number)];
        attrs.extend(peers.iter().copied().map(Attr::Peer));
        self.client
            .request(METHOD_CHANNEL_BIND, &signed(attrs))
            .unwrap_or_else(|e| panic!("ChannelBind {peers:?} over {:?}: {e}", self.transport))
    }

    fn send(&mut self, peer: SocketAddr, data: &[u8]) {
        self.send_naming(&[peer], data);
    }

    /// A Send indication naming each of `peers` (a well-formed one names exactly one).
    fn send_naming(&mut self, peers: &[SocketAddr], data: &[u8]) {
        let mut attrs: Vec<Attr> = peers.iter().copied().map(Attr::Peer).collect();
        attrs.push(Attr::Raw(ATTR_DATA, data.to_vec()));
        let out = Outgoing {
            attrs,
            ..Outgoing::default()
        };
        let tid = new_transaction_id();
        let bytes = encode_message(METHOD_SEND, CLASS_INDICATION, tid, &out, &Signer::NONE);
        self.client
            .send_raw(&bytes)
            .unwrap_or_else(|e| panic!("Send to {peers:?} over {:?}: {e}", self.transport));
    }

    fn send_channel_data(&mut self, number: u16, data: &[u8]) {
        self.client
            .send_channel_data(number, data)
            .unwrap_or_else(|e| panic!("ChannelData {number:#x} over {:?}: {e}", self.transport));
    }

    /// A Binding request answered on this 5-tuple: everything the client sent before
    /// it has been handled by the server (one worker, in order) once it returns.
    fn barrier(&mut self) {
        let (tid, request) = self.client.encode(METHOD_BINDING, &Outgoing::default());
        match self.client.exchange(tid, &request) {
            Ok(Some(reply)) if reply.is_success() => {}
            other => panic!("Binding over {:?}: {other:?}", self.transport),
        }
    }

    /// Asserts that nothing (no Data indication, no ChannelData) reaches the client.
    fn assert_nothing_relayed_back(&mut self, context: &str) {
        let data = self
            .client
            .recv_data(SILENCE)
            .unwrap_or_else(|e| panic!("{context}: receiving over {:?}: {e}", self.transport));
        assert_eq!(
            data, None,
            "{context}: relayed back over {:?}",
            self.transport
        );
    }
}

// ---------------------------------------------------------------------------------------
// Sinks: loopback sockets that would receive what a misrouted relay sends to this host
// ---------------------------------------------------------------------------------------

/// UDP sockets on 127.0.0.1 and ::1 with one port number. Sends to `0.0.0.0` and `::`
/// land on them too.
struct Sink {
    v4: UdpSocket,
    v6: UdpSocket,
}

impl Sink {
    fn bind() -> Sink {
        for _ in 0..50 {
            let v4 = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("sink on 127.0.0.1");
            let port = v4.local_addr().expect("sink address").port();
            if let Ok(v6) = UdpSocket::bind((Ipv6Addr::LOCALHOST, port)) {
                for socket in [&v4, &v6] {
                    socket
                        .set_read_timeout(Some(SILENCE))
                        .expect("sink timeout");
                }
                return Sink { v4, v6 };
            }
        }
        panic!("no port free on both 127.0.0.1 and ::1 for the sink");
    }

    fn port(&self) -> u16 {
        self.v4.local_addr().expect("sink address").port()
    }

    fn v4_addr(&self) -> SocketAddr {
        self.v4.local_addr().expect("sink address")
    }

    /// Asserts that neither socket has received anything.
    fn assert_silent(&self, context: &str) {
        let mut buf = [0u8; 2048];
        for socket in [&self.v4, &self.v6] {
            match socket.recv_from(&mut buf) {
                Ok((n, from)) => panic!(
                    "{context}: {} got {n} bytes from {from}: {:?}",
                    socket.local_addr().expect("sink address"),
                    String::from_utf8_lossy(&buf[..n])
                ),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("{context}: sink: {e}"),
            }
        }
    }

    /// Asserts that the IPv4 socket receives `data` within a second.
    fn assert_received(&self, data: &[u8], context: &str) {
        self.v4
            .set_read_timeout(Some(Duration::from_secs(1)))
            .expect("sink timeout");
        let mut buf = [0u8; 2048];
        let got = self.v4.recv_from(&mut buf);
        self.v4
            .set_read_timeout(Some(SILENCE))
            .expect("sink timeout");
        match got {
            Ok((n, _)) => assert_eq!(&buf[..n], data, "{context}"),
            Err(e) => panic!("{context}: the sink received nothing: {e}"),
        }
    }
}

/// `literal` (an IP, optionally with a `%scope`) at `port`.
fn peer_at(literal: &str, port: u16) -> SocketAddr {
    let text = if literal.contains(':') {
        format!("[{literal}]:{port}")
    } else {
        format!("{literal}:{port}")
    };
    text.parse()
        .unwrap_or_else(|e| panic!("test peer {text}: {e}"))
}

/// `addr`'s IPv4 written as IPv4-mapped and as NAT64 IPv6, same port.
fn ipv6_spellings(addr: SocketAddr) -> [SocketAddr; 2] {
    let IpAddr::V4(v4) = addr.ip() else {
        panic!("{addr} is not IPv4");
    };
    let nat64 = Ipv6Addr::from_bits(NAT64_PREFIX | u128::from(v4.to_bits()));
    [
        SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), addr.port()),
        SocketAddr::new(IpAddr::V6(nat64), addr.port()),
    ]
}

/// Names each of `peers` in a CreatePermission and a ChannelBind (each must be 403),
/// then sends a Send indication and ChannelData on the refused channel towards it.
fn assert_each_refused(a: &mut Allocation, peers: &[SocketAddr], payload: &[u8]) {
    for (i, &peer) in peers.iter().enumerate() {
        let what = format!("{peer} over {:?} (relay {})", a.transport, a.relay);
        assert_eq!(
            a.create_permission(&[peer]).code,
            Some(403),
            "CreatePermission naming {what}"
        );
        let channel = FIRST_CHANNEL + u16::try_from(i).expect("few peers");
        assert_eq!(
            a.channel_bind(channel, peer).code,
            Some(403),
            "ChannelBind naming {what}"
        );
        a.send(peer, payload);
        a.send_channel_data(channel, payload);
    }
    a.barrier();
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn every_default_denied_peer_is_refused_and_relays_nothing() {
    let target = Target::default_policy();
    let sink = Sink::bind();
    let (min, max) = target.relay_ports;
    for transport in TRANSPORTS {
        for family in [Family::V4, Family::V6] {
            let mut a = target.allocation(transport, family);
            // A permission for the server's own relay IP (another allocation's relay
            // address is an allowed peer), so a Send to that IP on another port is
            // refused by the policy itself, not for want of a permission.
            let neighbour = target.allocation(Transport::Udp, family).relay;
            assert_eq!(
                a.create_permission(&[neighbour]).code,
                None,
                "permission for {neighbour}"
            );
            let own_ip = neighbour.ip();
            let mut peers: Vec<SocketAddr> = DEFAULT_DENIED
                .iter()
                .map(|literal| peer_at(literal, sink.port()))
                .filter(|peer| Family::of(*peer) == family)
                .collect();
            // The own relay IP just outside the relay range, and at port 0.
            peers.extend([min - 1, max + 1, 0].map(|port| SocketAddr::new(own_ip, port)));
            match family {
                Family::V4 => peers.extend(target.service_endpoints()),
                Family::V6 => peers.extend(
                    target
                        .service_endpoints()
                        .into_iter()
                        .flat_map(ipv6_spellings),
                ),
            }
            let before = target.counts();
            assert_each_refused(&mut a, &peers, b"must not leave");
            let context = format!("{family:?} allocation over {transport:?}");
            assert_eq!(
                target.counts(),
                Counts {
                    denied: before.denied + 2.0 * peers.len() as f64,
                    ..before
                },
                "{context}: {} peers refused twice each, nothing installed or relayed",
                peers.len()
            );
            sink.assert_silent(&context);
            a.assert_nothing_relayed_back(&context);
            // The counter does see a Send the policy lets through.
            a.send(neighbour, b"allowed");
            a.barrier();
            assert_eq!(
                target.counts().relayed_to_peer,
                before.relayed_to_peer + 1.0,
                "{context}"
            );
        }
    }
}

#[test]
fn service_ports_are_refused_even_when_loopback_is_allowed() {
    let target = Target::loopback_allowed();
    let sink = Sink::bind();
    // A STUN request: relayed to a listener, it would be answered back to the relay.
    let probe = target
        .client(Transport::Udp)
        .encode(METHOD_BINDING, &Outgoing::default())
        .1;
    for transport in TRANSPORTS {
        let mut a = target.allocation(transport, Family::V4);
        let neighbour = target.allocation(Transport::Udp, Family::V4).relay;
        let context = format!("loopback allowed, over {transport:?}");
        // Allowed: another allocation's relay address, and loopback by --allow-peer.
        assert_eq!(
            a.create_permission(&[neighbour]).code,
            None,
            "{context}: {neighbour}"
        );
        assert_eq!(
            a.channel_bind(LAST_CHANNEL, neighbour).code,
            None,
            "{context}: {neighbour}"
        );
        assert_eq!(
            a.create_permission(&[sink.v4_addr()]).code,
            None,
            "{context}: sink"
        );
        let mut peers = target.service_endpoints().to_vec();
        peers.push(SocketAddr::from(([127, 0, 0, 2], 0)));
        let before = target.counts();
        assert_each_refused(&mut a, &peers, &probe);
        assert_eq!(
            target.counts(),
            Counts {
                denied: before.denied + 2.0 * peers.len() as f64,
                ..before
            },
            "{context}"
        );
        a.assert_nothing_relayed_back(&context);
        sink.assert_silent(&context);
        // The same allocation does relay to an allowed loopback peer.
        a.send(sink.v4_addr(), b"allowed");
        sink.assert_received(b"allowed", &context);
    }
    // The IPv6 spellings of the service endpoints, from an IPv6 allocation.
    let mut a = target.allocation(Transport::Udp, Family::V6);
    let spellings: Vec<SocketAddr> = target
        .service_endpoints()
        .into_iter()
        .flat_map(ipv6_spellings)
        .collect();
    let before = target.counts();
    assert_each_refused(&mut a, &spellings, &probe);
    assert_eq!(
        target.counts(),
        Counts {
            denied: before.denied + 2.0 * spellings.len() as f64,
            ..before
        },
        "IPv6 spellings of the service endpoints"
    );
}

#[test]
fn one_denied_peer_refuses_the_whole_create_permission() {
    let target = Target::default_policy();
    let denied = SocketAddr::from(([10, 0, 0, 1], 5000));
    for transport in TRANSPORTS {
        let mut a = target.allocation(transport, Family::V4);
        let mut b = target.allocation(Transport::Udp, Family::V4);
        assert_eq!(b.create_permission(&[a.relay]).code, None);
        let context = format!("over {transport:?}");
        let before = target.counts();
        for peers in [[b.relay, denied], [denied, b.relay]] {
            assert_eq!(
                a.create_permission(&peers).code,
                Some(403),
                "{context}: {peers:?}"
            );
        }
        a.send(b.relay, b"no permission");
        a.barrier();
        assert_eq!(
            target.counts(),
            Counts {
                denied: before.denied + 2.0,
                ..before
            },
            "{context}: nothing installed, nothing relayed"
        );
        b.assert_nothing_relayed_back(&context);
        // Alone, the allowed peer is accepted and reached.
        assert_eq!(a.create_permission(&[b.relay]).code, None, "{context}");
        a.send(b.relay, b"permitted");
        let got = b
            .client
            .recv_data(Duration::from_secs(2))
            .expect("receiving");
        assert_eq!(
            got,
            Some((Some(a.relay), b"permitted".to_vec())),
            "{context}"
        );
    }
}

#[test]
fn a_peer_named_twice_counts_once_toward_the_permission_cap() {
    let target = Target::start(
        "[limits]\npermissions_per_allocation = 2\n",
        &["--allow-peer", "127.0.0.0/8"],
    );
    let sink = Sink::bind();
    let twin = sink.v4_addr();
    let other = |last: u8, port: u16| SocketAddr::from(([127, 0, 0, last], port));
    for transport in TRANSPORTS {
        let context = format!("over {transport:?}");
        let mut a = target.allocation(transport, Family::V4);
        let before = target.counts();
        // One IP named three times, twice with the same port: one permission.
        let same_ip = [twin, twin, other(1, 5000)];
        assert_eq!(a.create_permission(&same_ip).code, None, "{context}");
        // A ChannelBind or a Send naming two peers is malformed: 400, or dropped.
        let bind = a.channel_bind_naming(FIRST_CHANNEL, &[twin, twin]);
        assert_eq!(bind.code, Some(400), "{context}");
        a.send_naming(&[twin, twin], b"twice");
        a.barrier();
        sink.assert_silent(&context);
        assert_eq!(
            target.counts(),
            Counts {
                permissions: before.permissions + 1.0,
                ..before
            },
            "{context}: one permission, no channel, nothing relayed"
        );
        a.send(twin, b"once");
        sink.assert_received(b"once", &context);
        // A second IP, named twice, reaches the cap of two; naming either again is free.
        let second = other(2, 5000);
        assert_eq!(
            a.create_permission(&[second, second]).code,
            None,
            "{context}"
        );
        assert_eq!(
            a.channel_bind(FIRST_CHANNEL, other(2, 7000)).code,
            None,
            "{context}"
        );
        assert_eq!(
            target.counts().permissions,
            before.permissions + 2.0,
            "{context}"
        );
        assert_eq!(
            a.create_permission(&[other(3, 5000)]).code,
            Some(508),
            "{context}"
        );
        assert_eq!(
            a.channel_bind(FIRST_CHANNEL + 1, other(3, 5000)).code,
            Some(508),
            "{context}"
        );
        assert_eq!(
            target.counts().permissions,
            before.permissions + 2.0,
            "{context}"
        );
    }
}

#[test]
fn a_peer_of_the_other_family_is_443_and_not_counted_as_denied() {
    let target = Target::loopback_allowed();
    let sink = Sink::bind();
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, sink.port()));
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, sink.port()));
    for transport in TRANSPORTS {
        let context = format!("over {transport:?}");
        let before = target.counts();
        for (family, wrong, right) in [(Family::V4, v6, v4), (Family::V6, v4, v6)] {
            let mut a = target.allocation(transport, family);
            let what = format!("{wrong} on a {family:?} allocation {context}");
            assert_eq!(a.create_permission(&[wrong]).code, Some(443), "{what}");
            assert_eq!(
                a.create_permission(&[right, wrong]).code,
                Some(443),
                "{what}"
            );
            assert_eq!(
                a.channel_bind(FIRST_CHANNEL, wrong).code,
                Some(443),
                "{what}"
            );
            a.send(wrong, b"wrong family");
            a.barrier();
        }
        assert_eq!(
            target.counts(),
            before,
            "{context}: nothing counted, installed or relayed"
        );
        sink.assert_silent(&context);
    }
}

#[test]
fn reopened_tunnel_prefixes_do_not_reopen_what_they_carry() {
    let target = Target::start(
        "",
        &["--allow-peer", "2001::/32", "--allow-peer", "2002::/16"],
    );
    let sink = Sink::bind();
    // 6to4 and Teredo (server, or client inverted) carrying denied IPv4 addresses.
    let carried = [
        "2002:7f00:1::1",
        "2002:a9fe:a9fe::1",
        "2002:a00:1::1",
        "2001:0:4136:e378:8000:63bf:80ff:fffe",
        "2001:0:4136:e378:8000:63bf:5601:5601",
        "2001:0:7f00:1:8000:63bf:f7f7:f7f7",
    ]
    .map(|literal| peer_at(literal, sink.port()));
    for transport in TRANSPORTS {
        let mut a = target.allocation(transport, Family::V6);
        let before = target.counts();
        assert_each_refused(&mut a, &carried, b"must not leave");
        assert_eq!(
            target.counts(),
            Counts {
                denied: before.denied + 2.0 * carried.len() as f64,
                ..before
            },
            "tunnels re-opened, over {transport:?}"
        );
    }
}
