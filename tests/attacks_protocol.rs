//! TURN loops: a datagram from one of the server's own relay sockets is never answered.

#[path = "support/sans_io.rs"]
mod sans_io;

use std::net::SocketAddr;
use std::time::Instant;
use stun::message::*;
use tern::client::{Outgoing, Signer, encode_message};
use tern::core::{FiveTuple, Now, Transport};

/// Behind the peer policy, the engine drops a datagram from any of the server's relay
/// sockets, including one another worker bound (its port is taken in the shared pool):
/// the kernel hands a relay's datagram to whichever worker its address hashes to. No
/// client can reach this layer through tern, so the engine is driven directly.
#[test]
fn the_engine_drops_datagrams_from_any_workers_relay_socket() {
    let mut engine = sans_io::engine(sans_io::no_limit());
    let mut io = sans_io::Recorder::default();
    let port = sans_io::PORTS.0 + 3;
    assert!(
        engine.shared().take_port(sans_io::RELAY_V4, port),
        "another worker's relay"
    );
    let from = |port, transport| FiveTuple {
        client: SocketAddr::new(sans_io::RELAY_V4, port),
        server: SocketAddr::new(sans_io::RELAY_V4, 3478),
        transport,
    };
    let now = Now {
        mono: Instant::now(),
        unix: 1_800_000_000,
    };
    let nobody = Signer {
        username: "",
        realm: "",
        nonce: "",
        password: "",
    };
    let tid = tern::client::new_transaction_id();
    let binding = encode_message(
        METHOD_BINDING,
        CLASS_REQUEST,
        tid,
        &Outgoing::default(),
        &nobody,
    );
    engine.handle_client(now, from(port, Transport::Udp), &binding, &mut io);
    assert!(io.to_client.is_empty(), "a relay socket was answered");
    // Not relay sockets: a free port of the range, and TCP (relays are UDP only).
    engine.handle_client(now, from(port + 1, Transport::Udp), &binding, &mut io);
    engine.handle_client(now, from(port, Transport::Tcp), &binding, &mut io);
    assert_eq!(io.to_client.len(), 2);
}
