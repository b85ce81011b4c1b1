//! `serve = "stun"` and `serve = "turn"` on listeners (coturn's `stun-only` and
//! `no-stun`): a STUN-only listener answers Binding and ignores TURN requests, a
//! TURN-only one relays and ignores bare Bindings; both on one running server.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use stun::message::METHOD_ALLOCATE;
use support::{TernBuilder, free_udp_port, relay_ports_arg, stun_binding};
use tern::client::{Attr, Outgoing, TurnClient};

/// Whether an unsigned Allocate sent to `server` gets any answer (a 401 at least).
fn allocate_answered(server: SocketAddr) -> bool {
    let mut c = TurnClient::new(server, "alice", "pw").unwrap();
    c.timeout = Duration::from_millis(300);
    let allocate = Outgoing {
        attrs: vec![Attr::udp_transport()],
        ..Outgoing::default()
    };
    let (tid, bytes) = c.encode(METHOD_ALLOCATE, &allocate);
    matches!(c.exchange(tid, &bytes), Ok(Some(_)))
}

#[test]
fn stun_only_and_turn_only_listeners_ignore_the_other_kind() {
    let stun = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let turn = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let both = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let config = format!(
        "[server]\nlisten = [{{ addr = \"{stun}\", serve = \"stun\" }}, {{ addr = \"{turn}\", serve = \"turn\" }}, \"{both}\"]\n"
    );
    let ports = relay_ports_arg();
    let server = TernBuilder::default()
        .listen_in_config(stun)
        .config(&config)
        .args(&["--user", "alice:pw", "--ports", &ports])
        .start();
    let wait = Duration::from_millis(900);

    assert!(
        stun_binding(stun, wait).is_ok(),
        "Binding on the STUN-only listener"
    );
    assert!(
        !allocate_answered(stun),
        "TURN answered on the STUN-only listener"
    );

    assert!(
        stun_binding(turn, wait).is_err(),
        "Binding answered on the TURN-only listener"
    );
    let mut c = TurnClient::new(turn, "alice", "pw").unwrap();
    let reply = c
        .allocate(vec![])
        .expect("Allocate on the TURN-only listener");
    assert!(reply.is_success(), "{:?}\n{}", reply.code, server.logs());

    assert!(stun_binding(both, wait).is_ok());
    assert!(allocate_answered(both));
}
