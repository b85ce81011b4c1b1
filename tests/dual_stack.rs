//! Dual allocations (RFC 8656 §7.2, ADDITIONAL-ADDRESS-FAMILY) on a real `tern serve`
//! relaying on 127.0.0.1 and ::1, driven by a client written apart from tern
//! (tests/support/rfc8656_dual_client.py, from the RFC's text) that is its own pair of
//! UDP peers on 127.0.0.1 and ::1: one Allocate gets a relayed address of each family,
//! each peer's data leaves from (and comes back through) the relay socket of its
//! family, with Send indications and channels; a Refresh naming IPv4 with LIFETIME 0
//! ends that family only; the 400s of §7.2; and a server relaying on IPv4 only grants
//! IPv4 with ADDRESS-ERROR-CODE 440 for IPv6.
//!
//! Debian's `turnutils_uclient -Z` cannot stand in: coturn 4.6 sends the draft's
//! attribute type (0x8032), not RFC 8656's 0x8000.

mod support;

use serde_json::{Value, json};
use support::{
    LOCALHOST_V4, LOCALHOST_V6, TernServer, free_udp_port_on, ipv6_loopback_available,
    python_client, relay_ports_arg,
};

const USER: &str = "alice";
const PASSWORD: &str = "alices-password";

/// tern relaying on `relay_ips`, loopback peers of both families allowed.
fn start(relay_ips: &[&str]) -> TernServer {
    if relay_ips.contains(&"::1")
        && let Err(why) = ipv6_loopback_available()
    {
        panic!("IPv6 loopback is needed to relay on ::1: {why}");
    }
    let (user, ports) = (format!("{USER}:{PASSWORD}"), relay_ports_arg());
    let mut args = vec!["--user", &user, "--ports", &ports];
    args.extend(["--allow-peer", "127.0.0.0/8", "--allow-peer", "::1/128"]);
    for ip in relay_ips {
        args.extend(["--relay-ip", ip]);
    }
    TernServer::builder().args(&args).start()
}

/// The Python client's report for `mode` (with `extra` arguments).
fn client(server: &TernServer, mode: &str, extra: &[&str]) -> Value {
    let args = [&[USER, PASSWORD, mode], extra].concat();
    python_client("rfc8656_dual_client.py", server, &args)
}

/// What a round trip to a peer reports when it went through `relay`: the peer saw the
/// datagram come from that relayed address, and its answer reached the client as `kind`
/// (a Data indication naming the peer, or ChannelData on `number`).
fn round_trip(relay: &Value, kind: &str, from: Value) -> Value {
    json!({
        "peer_saw_from": relay,
        "peer_got": true,
        "client_got": [kind, from, true],
        "relay": relay,
    })
}

#[test]
fn one_allocation_relays_each_family_through_its_own_relay_socket() {
    let server = start(&["127.0.0.1", "::1"]);
    let peer4 = free_udp_port_on(LOCALHOST_V4);
    let peer6 = free_udp_port_on(LOCALHOST_V6);
    let report = client(&server, "relay", &[&peer4.to_string(), &peer6.to_string()]);
    let logs = || server.logs();
    assert_eq!(report["allocate"], Value::Null, "{report}\n{}", logs());
    assert_eq!(report["allocate_verified"], true);
    assert_eq!(report["address_error"], Value::Null);
    let relays = report["relays"].as_array().expect("relayed addresses");
    assert_eq!(relays.len(), 2, "{report}");
    assert_eq!(
        (&relays[0][0], &relays[1][0]),
        (&json!("127.0.0.1"), &json!("::1"))
    );
    assert_eq!(report["permissions"], Value::Null, "{report}");

    let (relay4, relay6) = (&relays[0], &relays[1]);
    let send4 = round_trip(relay4, "data", json!(["127.0.0.1", peer4]));
    let send6 = round_trip(relay6, "data", json!(["::1", peer6]));
    assert_eq!(report["send_ipv4"], send4, "{report}\n{}", logs());
    assert_eq!(report["send_ipv6"], send6, "{report}\n{}", logs());
    assert_eq!(
        (&report["bind_ipv4"], &report["bind_ipv6"]),
        (&Value::Null, &Value::Null)
    );
    let channel4 = round_trip(relay4, "channel", json!(0x4001));
    let channel6 = round_trip(relay6, "channel", json!(0x4002));
    assert_eq!(report["channel_ipv4"], channel4, "{report}\n{}", logs());
    assert_eq!(report["channel_ipv6"], channel6, "{report}\n{}", logs());

    // LIFETIME 0 naming IPv4 ends that family: its peers and its Refreshes are 443
    // from then on, and the IPv6 channel relays on.
    assert_eq!(report["refresh_ipv4_zero"], Value::Null, "{report}");
    assert_eq!(report["permission_ipv4_after"], 443);
    assert_eq!(report["refresh_ipv4_after"], 443);
    assert_eq!(
        report["channel_ipv6_after"],
        channel6,
        "{report}\n{}",
        logs()
    );
    assert_eq!(report["delete"], Value::Null);
}

#[test]
fn malformed_dual_allocates_are_400() {
    let server = start(&["127.0.0.1", "::1"]);
    let report = client(&server, "refused", &[]);
    let refused = json!({ "code": 400, "relays": 0 });
    let expected = json!({
        "additional_ipv4": refused,
        "both_families": refused,
        "even_port_reserve": refused,
        "reservation_token": refused,
    });
    assert_eq!(report, expected, "{}", server.logs());
}

#[test]
fn a_server_relaying_on_ipv4_only_grants_ipv4_with_440_for_ipv6() {
    let server = start(&["127.0.0.1"]);
    let report = client(&server, "partial", &[]);
    let relays = report["relays"].as_array().expect("relayed addresses");
    assert_eq!(
        report["allocate"],
        Value::Null,
        "{report}\n{}",
        server.logs()
    );
    assert_eq!(report["allocate_verified"], true);
    assert_eq!(relays.len(), 1, "{report}");
    assert_eq!(relays[0][0], "127.0.0.1");
    let error = json!({ "family": 2, "code": 440, "reason": "Address Family not Supported" });
    assert_eq!(report["address_error"], error);
    assert_eq!(report["delete"], Value::Null);
}
