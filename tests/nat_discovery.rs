//! RFC 5780 NAT behaviour discovery (`[server.nat_discovery]`): answers from the
//! address a CHANGE-REQUEST asks for, RESPONSE-ORIGIN and OTHER-ADDRESS, RESPONSE-PORT
//! and PADDING, the errors for what cannot be done, and the Binding-only sockets it
//! adds; then coturn's `turnutils_natdiscovery` and `tern stun --nat-type` telling
//! real nftables NATs apart in network namespaces.
//!
//! On loopback the server's two IPs are 127.0.0.1 and 127.0.0.2. The namespace test
//! builds on tests/support/netns.rs: tern on the public bridge with 203.0.113.1 and
//! 203.0.113.2, a client behind rtr1 (masquerade: endpoint-independent mapping,
//! address-and-port-dependent filtering) and one behind rtr2, whose rules the test
//! changes to `masquerade random` (address-and-port-dependent mapping), to a full cone
//! (SNAT keeping ports and DNAT of every port back to the client: endpoint-independent
//! mapping and filtering) and to a restricted cone (the same DNAT from tern's primary IP
//! only: address-dependent filtering).

mod support;

#[path = "support/netns.rs"]
mod netns;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use serde_json::Value;
use stun::attributes::{
    ATTR_CHANGE_REQUEST, ATTR_ERROR_CODE, ATTR_OTHER_ADDRESS, ATTR_PADDING, ATTR_RESPONSE_ORIGIN,
    ATTR_RESPONSE_PORT, ATTR_UNKNOWN_ATTRIBUTES, ATTR_XORMAPPED_ADDRESS,
};
use stun::message::{CLASS_REQUEST, METHOD_ALLOCATE, METHOD_BINDING};
use support::{RunOutput, TempDir, TernBuilder, ensure_tool, free_udp_port, run_tern};
use tern::client::{Attr, Outgoing, Signer, TurnClient, encode_message, new_transaction_id};
use tern::core::nat_discovery::ChangeRequest;
use tern::proto::Request;
use tern::proto::attrs::{decode_address, decode_xor_address};

const WAIT: Duration = Duration::from_millis(800);
const IP1: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const IP2: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn discovery_config(ips: [IpAddr; 2], ports: [u16; 2]) -> String {
    format!(
        "[server.nat_discovery]\nips = [\"{}\", \"{}\"]\nports = [{}, {}]\n",
        ips[0], ips[1], ports[0], ports[1]
    )
}

/// tern on 127.0.0.1:P1 (UDP and TCP) with NAT discovery on 127.0.0.1/127.0.0.2 and
/// P1/P2; returns the server and the four addresses, primary first.
fn start_discovery() -> (support::TernServer, [SocketAddr; 4]) {
    let ports = [free_udp_port(), free_udp_port()];
    let primary = SocketAddr::new(IP1, ports[0]);
    let server = TernBuilder::default()
        .listen(primary)
        .config(&discovery_config([IP1, IP2], ports))
        .args(&["--user", "alice:pw", "--ports", &support::relay_ports_arg()])
        .start();
    let corners =
        [(IP1, 0), (IP1, 1), (IP2, 0), (IP2, 1)].map(|(ip, p)| SocketAddr::new(ip, ports[p]));
    (server, corners)
}

/// A Binding request with `attrs` and FINGERPRINT.
fn binding_request(attrs: Vec<Attr>) -> (stun::agent::TransactionId, Vec<u8>) {
    let tid = new_transaction_id();
    let out = Outgoing {
        attrs,
        fingerprint: true,
        ..Outgoing::default()
    };
    (
        tid,
        encode_message(METHOD_BINDING, CLASS_REQUEST, tid, &out, &Signer::NONE),
    )
}

fn change(ip: bool, port: bool) -> Attr {
    Attr::Raw(
        ATTR_CHANGE_REQUEST,
        ChangeRequest { ip, port }.encode().to_vec(),
    )
}

/// The answer `socket` receives within WAIT, with the address it came from and its
/// size; `None` when nothing came.
fn receive(socket: &UdpSocket) -> Option<(Request, SocketAddr, usize)> {
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 4096];
    let (n, from) = socket.recv_from(&mut buf).ok()?;
    Some((
        Request::parse(&buf[..n]).expect("a well-formed answer"),
        from,
        n,
    ))
}

/// Sends a Binding with `attrs` from `socket` to `to` and returns the answer.
fn ask(
    socket: &UdpSocket,
    to: SocketAddr,
    attrs: Vec<Attr>,
) -> Option<(Request, SocketAddr, usize)> {
    let (tid, bytes) = binding_request(attrs);
    socket.send_to(&bytes, to).unwrap();
    let answer = receive(socket)?;
    assert_eq!(answer.0.transaction_id(), tid);
    Some(answer)
}

fn address(answer: &Request, t: stun::attributes::AttrType) -> Option<SocketAddr> {
    answer.attr(t).and_then(decode_address)
}

fn error_code(answer: &Request) -> Option<u16> {
    let v = answer.attr(ATTR_ERROR_CODE)?;
    Some(u16::from(v[2] & 7) * 100 + u16::from(v[3]))
}

fn client_socket() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").unwrap()
}

#[test]
fn answers_come_from_the_address_asked_for_and_name_the_other_one() {
    let (server, [primary, port2, ip2, other]) = start_discovery();
    let client = client_socket();
    let me = client.local_addr().unwrap();

    for (asked, from) in [
        (None, primary),
        (Some(change(false, false)), primary),
        (Some(change(true, false)), ip2),
        (Some(change(false, true)), port2),
        (Some(change(true, true)), other),
    ] {
        let what = format!("{asked:?}");
        let (answer, source, _) = ask(&client, primary, asked.into_iter().collect())
            .unwrap_or_else(|| panic!("no answer to {what}\n{}", server.logs()));
        assert_eq!(source, from, "{what}: answered from");
        assert_eq!(address(&answer, ATTR_RESPONSE_ORIGIN), Some(from), "{what}");
        assert_eq!(address(&answer, ATTR_OTHER_ADDRESS), Some(other), "{what}");
        let mapped = answer
            .attr(ATTR_XORMAPPED_ADDRESS)
            .and_then(|v| decode_xor_address(v, &answer.transaction_id()));
        assert_eq!(mapped, Some(me), "{what}");
    }

    // Each corner answers, and names the one opposite to it.
    for (corner, opposite) in [(port2, ip2), (ip2, port2), (other, primary)] {
        let (answer, source, _) = ask(&client, corner, Vec::new()).expect("corner answers");
        assert_eq!(source, corner);
        assert_eq!(address(&answer, ATTR_OTHER_ADDRESS), Some(opposite));
    }

    // RESPONSE-PORT sends the answer to another port of the same IP.
    let elsewhere = client_socket();
    let port = elsewhere.local_addr().unwrap().port();
    let attrs = vec![Attr::Raw(
        ATTR_RESPONSE_PORT,
        vec![(port >> 8) as u8, port as u8, 0, 0],
    )];
    let (tid, bytes) = binding_request(attrs);
    client.send_to(&bytes, primary).unwrap();
    let (answer, source, _) = receive(&elsewhere).expect("answer at RESPONSE-PORT");
    assert_eq!(answer.transaction_id(), tid);
    assert_eq!(source, primary);

    // PADDING brings the answer up to the request's size, never beyond.
    let (answer, _, size) = ask(
        &client,
        primary,
        vec![Attr::Raw(ATTR_PADDING, vec![0; 1200])],
    )
    .expect("padded answer");
    let request_size = binding_request(vec![Attr::Raw(ATTR_PADDING, vec![0; 1200])])
        .1
        .len();
    assert!(answer.attr(ATTR_PADDING).is_some());
    assert!(
        size <= request_size && size + 4 > request_size,
        "answer {size} B to a {request_size} B request"
    );
    // A request padded less than the answer's own size gets an empty PADDING: the
    // attribute is always echoed (RFC 5780 §6.1).
    let (answer, _, _) =
        ask(&client, primary, vec![Attr::Raw(ATTR_PADDING, vec![0; 4])]).expect("an answer");
    assert_eq!(answer.attr(ATTR_PADDING), Some(&[][..]));

    // RESPONSE-PORT with PADDING, or a malformed CHANGE-REQUEST: 400.
    let both = vec![
        Attr::Raw(ATTR_PADDING, vec![0; 64]),
        Attr::Raw(ATTR_RESPONSE_PORT, vec![0x30, 0x39, 0, 0]),
    ];
    let (answer, _, _) = ask(&client, primary, both).expect("an error answer");
    assert_eq!(error_code(&answer), Some(400));
    let (answer, _, _) = ask(
        &client,
        primary,
        vec![Attr::Raw(ATTR_CHANGE_REQUEST, vec![0, 4])],
    )
    .expect("an error answer");
    assert_eq!(error_code(&answer), Some(400));

    // Over TCP the answer cannot leave from elsewhere: 400.
    let mut tcp = TurnClient::connect_tcp(primary, "alice", "pw").unwrap();
    let out = Outgoing {
        attrs: vec![change(true, true)],
        ..Outgoing::default()
    };
    let reply = tcp.request(METHOD_BINDING, &out).expect("TCP answer");
    assert_eq!(reply.code, Some(400));
    let reply = tcp
        .request(METHOD_BINDING, &Outgoing::default())
        .expect("TCP answer");
    assert!(reply.is_success());
    assert!(
        reply.msg.attr(ATTR_OTHER_ADDRESS).is_none(),
        "discovery is UDP only"
    );

    // The sockets discovery adds answer Binding only: TURN goes unanswered there.
    let mut turn = TurnClient::new(other, "alice", "pw").unwrap();
    turn.timeout = Duration::from_millis(300);
    let (tid, bytes) = turn.encode(
        METHOD_ALLOCATE,
        &Outgoing {
            attrs: vec![Attr::udp_transport()],
            ..Outgoing::default()
        },
    );
    assert!(
        matches!(turn.exchange(tid, &bytes), Ok(None)),
        "TURN answered on a discovery socket"
    );
    let mut turn = TurnClient::new(primary, "alice", "pw").unwrap();
    assert!(
        turn.allocate(vec![])
            .expect("Allocate on the primary address")
            .is_success()
    );
}

#[test]
fn without_discovery_a_change_is_unknown_and_an_empty_one_is_fine() {
    let server = TernBuilder::default()
        .args(&["--user", "alice:pw", "--ports", &support::relay_ports_arg()])
        .start();
    let client = client_socket();
    let (answer, _, _) = ask(&client, server.addr, vec![change(true, false)]).expect("an answer");
    assert_eq!(error_code(&answer), Some(420));
    assert_eq!(answer.attr(ATTR_UNKNOWN_ATTRIBUTES), Some(&[0u8, 3][..]));
    for attr in [ATTR_RESPONSE_PORT, ATTR_PADDING] {
        let (answer, _, _) = ask(
            &client,
            server.addr,
            vec![Attr::Raw(attr, vec![0x30, 0x39, 0, 0])],
        )
        .expect("an answer");
        assert_eq!(error_code(&answer), Some(420), "{attr:?}");
    }
    // Old clients put an empty CHANGE-REQUEST in every request.
    let (answer, source, _) =
        ask(&client, server.addr, vec![change(false, false)]).expect("an answer");
    assert_eq!(error_code(&answer), None);
    assert_eq!(source, server.addr);
    assert!(answer.attr(ATTR_OTHER_ADDRESS).is_none());

    let out = run_tern(
        &["stun", "--nat-type", &server.addr.to_string()],
        Duration::from_secs(20),
    );
    assert!(!out.success(), "{}", out.describe());
    assert!(
        out.stderr.contains("NAT discovery (RFC 5780) is not on"),
        "{}",
        out.describe()
    );
}

#[test]
fn bad_discovery_settings_are_refused_with_their_key_and_line() {
    let dir = TempDir::new("nat-discovery");
    for (body, why) in [
        (
            discovery_config([IP1, IP1], [3478, 3479]),
            "the two ips must differ",
        ),
        (
            discovery_config([IP1, "::1".parse().unwrap()], [3478, 3479]),
            "of one family",
        ),
        (
            discovery_config([IP1, IP2], [3478, 3478]),
            "the two ports must differ",
        ),
        (
            discovery_config(["0.0.0.0".parse().unwrap(), IP2], [3478, 3479]),
            "not a wildcard",
        ),
        (
            format!(
                "[server]\nudp = false\n{}",
                discovery_config([IP1, IP2], [3478, 3479])
            ),
            "server.udp must be on",
        ),
        (
            format!(
                "[server]\nlisten = [{{ addr = \"127.0.0.1:3478\", serve = \"turn\" }}]\n{}",
                discovery_config([IP1, IP2], [3478, 3479])
            ),
            "which ignores Binding",
        ),
        (
            "[server.nat_discovery]\nips = [\"127.0.0.1\"]\nports = [3478, 3479]\n".to_string(),
            "expected an array of length 2",
        ),
    ] {
        let path = dir.write("tern.toml", &body);
        let out = run_tern(
            &["check-config", path.to_str().unwrap()],
            Duration::from_secs(20),
        );
        assert!(!out.success(), "accepted:\n{body}");
        let text = out.combined();
        assert!(text.contains(why), "{body}\n{}", out.describe());
        // A cross-key error names the key and its line; a parse error shows the line
        // (the table's header or the key's own) with its text.
        let named = text.contains("server.nat_discovery") || text.contains("ips = [");
        assert!(named, "the key is named: {}", out.describe());
        assert!(
            text.contains("line "),
            "the line is named: {}",
            out.describe()
        );
    }
}

/// `turnutils_natdiscovery -m -f` run from `ns` (or from here), and its two verdicts.
fn natdiscovery(ns: Option<&str>, server: SocketAddr, local: Option<IpAddr>) -> (String, String) {
    let tool = ensure_tool("turnutils_natdiscovery");
    let mut cmd = match ns {
        Some(ns) => netns::exec_in(ns, &tool),
        None => std::process::Command::new(&tool),
    };
    cmd.args(["-m", "-f", "-p", &server.port().to_string()]);
    if let Some(local) = local {
        cmd.args(["-L", &local.to_string()]);
    }
    cmd.arg(server.ip().to_string());
    let out = support::run_with_timeout(&mut cmd, Duration::from_secs(60));
    assert!(out.success(), "turnutils_natdiscovery:\n{}", out.describe());
    let verdicts: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains("NAT"))
        .filter(|l| !l.contains("Discovery"))
        .collect();
    let find = |word: &str| {
        verdicts
            .iter()
            .rev()
            .find(|l| l.contains(word))
            .map(|l| l.trim().to_string())
            .unwrap_or_else(|| panic!("no {word} verdict:\n{}", out.describe()))
    };
    (find("Mapping"), find("Filtering"))
}

/// `tern stun --nat-type --json` run from `ns` (or from here): (mapping, filtering).
fn tern_nat_type(ns: Option<&str>, server: SocketAddr) -> (String, String) {
    let args = ["stun", "--nat-type", "--json", &server.to_string()];
    let out: RunOutput = match ns {
        Some(ns) => {
            let mut cmd = netns::exec_in(ns, env!("CARGO_BIN_EXE_tern"));
            cmd.args(args);
            support::run_with_timeout(&mut cmd, Duration::from_secs(60))
        }
        None => run_tern(&args, Duration::from_secs(60)),
    };
    assert!(out.success(), "tern stun --nat-type:\n{}", out.describe());
    let json: Value = serde_json::from_str(out.stdout.trim()).expect("JSON");
    let field = |k: &str| json["nat"][k].as_str().unwrap_or_default().to_string();
    (field("mapping"), field("filtering"))
}

#[test]
fn coturns_natdiscovery_and_tern_stun_see_no_nat_on_loopback() {
    let (server, [primary, ..]) = start_discovery();
    let (mapping, filtering) = natdiscovery(None, primary, Some(IP1));
    assert!(
        mapping.contains("No NAT") || mapping.contains("Endpoint Independent Mapping"),
        "{mapping}\n{}",
        server.logs()
    );
    assert!(
        filtering.contains("Endpoint Independent Filtering"),
        "{filtering}"
    );
    assert_eq!(
        tern_nat_type(None, primary),
        ("no-nat".to_string(), "endpoint-independent".to_string())
    );
}

/// Replaces rtr's IPv4 NAT rules with `post` (postrouting) and `pre` (prerouting).
fn set_nat(rtr: &str, post: &str, pre: Option<&str>) {
    let nft = |rule: &str| netns::run(&["ip", "netns", "exec", rtr, "nft", rule]);
    nft("flush table ip nat");
    nft(&format!("add rule ip nat post {post}"));
    if let Some(pre) = pre {
        nft("add chain ip nat pre { type nat hook prerouting priority -100 ; }");
        nft(&format!("add rule ip nat pre {pre}"));
    }
}

/// rtr2 (public RTR2_PUB) as a cone NAT for lan2: SNAT keeping ports going out, and
/// every port forwarded back to lan2's host coming in, from anywhere or from
/// `only_from`.
fn cone(rtr: &str, only_from: Option<Ipv4Addr>) {
    let public = netns::RTR2_PUB;
    let source = only_from.map_or(String::new(), |ip| format!("ip saddr {ip} "));
    set_nat(
        rtr,
        &format!("oifname \"wan\" snat to {public}"),
        Some(&format!(
            "iifname \"wan\" {source}ip daddr {public} udp dport 1024-65535 dnat to {}",
            netns::LAN2_HOST
        )),
    );
}

/// What coturn's natdiscovery (its mapping and filtering lines) and `tern stun
/// --nat-type` (its mapping and filtering names) say from inside `ns`.
fn verdicts_from(ns: &str, server: SocketAddr, coturns: [&str; 2], terns: [&str; 2]) {
    let pair = |[a, b]: [&str; 2]| (a.to_string(), b.to_string());
    assert_eq!(natdiscovery(Some(ns), server, None), pair(coturns));
    assert_eq!(tern_nat_type(Some(ns), server), pair(terns));
}

#[test]
fn both_tools_tell_real_nats_apart_in_namespaces() {
    netns::require_netns();
    let net = netns::Net::build("disc", true);
    let second = Ipv4Addr::new(203, 0, 113, 2);
    netns::run(&[
        "ip",
        "-n",
        &net.pub_ns,
        "addr",
        "add",
        &format!("{second}/24"),
        "dev",
        "br0",
    ]);
    let server = SocketAddr::new(netns::TERN_IP.into(), netns::PORT);
    let dir = TempDir::new("nat-discovery");
    let config = dir.write(
        "tern.toml",
        &discovery_config(
            [netns::TERN_IP.into(), second.into()],
            [netns::PORT, netns::PORT + 1],
        ),
    );
    let extra = ["--config".to_string(), config.to_str().unwrap().to_string()];
    let mut tern = support::BackgroundProcess::spawn(
        "tern",
        &mut netns::tern_serve(&net.pub_ns, Some(netns::TERN_IP), &extra),
        dir.path(),
    );
    netns::wait_stun_from(&net.lan1, server, Duration::from_secs(10), || {
        match tern.try_exit_status() {
            Some(status) => Err(format!("tern exited: {status}")),
            None => Ok(()),
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", tern.logs()));

    let eim = "NAT with Endpoint Independent Mapping!";
    let apdf = "NAT with Address and Port Dependent Filtering!";

    // rtr1: plain masquerade keeps the source port for every destination.
    verdicts_from(
        &net.lan1,
        server,
        [eim, apdf],
        ["endpoint-independent", "address-and-port-dependent"],
    );

    // rtr2 with `masquerade random`: a new port for every destination.
    set_nat(&net.rtr2, "oifname \"wan\" masquerade random", None);
    verdicts_from(
        &net.lan2,
        server,
        ["NAT with Address and Port Dependent Mapping!", apdf],
        ["address-and-port-dependent", "address-and-port-dependent"],
    );

    // rtr2 as a full cone: ports kept going out, every port forwarded coming in.
    cone(&net.rtr2, None);
    verdicts_from(
        &net.lan2,
        server,
        [eim, "NAT with Endpoint Independent Filtering!"],
        ["endpoint-independent", "endpoint-independent"],
    );

    // rtr2 as a restricted cone: the same, but forwarded only from tern's primary IP.
    cone(&net.rtr2, Some(netns::TERN_IP));
    verdicts_from(
        &net.lan2,
        server,
        [eim, "NAT with Address Dependent Filtering!"],
        ["endpoint-independent", "address-dependent"],
    );
    tern.assert_running();
}
