//! Real NAT topologies built from network namespaces, veth pairs and nftables (the
//! builder is tests/support/netns.rs).
//!
//! Needs root, `ip netns` and `nft` (see `scripts/install-nat-deps.sh`). Without them
//! the tests panic with the reason: they are never skipped silently.
//!
//! Topology 1 (tern on the "public" segment, clients behind masquerading routers):
//!
//! ```text
//!   lan1 (10.10.1.2) ── rtr1 [masquerade] 203.0.113.11 ─┐
//!                                                        ├─ br0 in pub: tern 203.0.113.1
//!   lan2 (10.10.2.2) ── rtr2 [masquerade] 203.0.113.12 ─┘
//! ```
//!
//! Topology 2 (tern itself behind a 1:1 NAT): as above, plus
//! `srv (10.10.9.2, tern) ── srvrtr [dnat/snat 1:1] 203.0.113.20 ── br0`, and no tern
//! in pub. Tern runs with `--relay-ip 10.10.9.2 --external-ip 203.0.113.20`.
//!
//! Topology 3 (tern on a multi-homed host with the built-in wildcard listeners, see
//! `Net::build_multihomed`): each LAN reaches both of the host's addresses, through
//! its own router only; a client that uses the far address must be answered from it,
//! or its NAT drops the answer. IPv4 and IPv6, tern's client and coturn's uclient.
//!
//! Clients run inside the LAN namespaces: the test binary re-executes itself with
//! `ip netns exec <ns> <test binary> --exact nat_role_helper` and a `TERN_NAT_ROLE`
//! saying what to do. Two clients swap their relayed addresses through files.

mod support;

#[path = "support/netns.rs"]
mod netns;

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use stun::attributes::{ATTR_XOR_RELAYED_ADDRESS, ATTR_XORMAPPED_ADDRESS};
use stun::message::METHOD_BINDING;
use tern::client::{Outgoing, TurnClient};

use netns::{
    HUB_V4, HUB_V6, LAN2_HOST, Net, PASS, RELAY_PORTS, RTR1_PUB, RTR2_PUB, SRV_PRIV, SRVRTR_PUB,
    TERN_IP, USER, require_netns,
};
use support::{BackgroundProcess, RunOutput, TempDir, UclientSummary, run_with_timeout};
use tern::client::Attr;

const MESSAGES: usize = 20;
const CHANNEL: u16 = 0x4000;
const ECHO_PORT: u16 = 5555;
/// Upper bound for any helper process.
const CHILD_TIMEOUT: Duration = Duration::from_secs(40);

/// tern inside `ns` (see `netns::tern_serve`), its output in `dir`.
fn start_tern(
    ns: &str,
    listen: Option<Ipv4Addr>,
    extra: &[String],
    dir: &Path,
) -> BackgroundProcess {
    BackgroundProcess::spawn("tern", &mut netns::tern_serve(ns, listen, extra), dir)
}

// ---------------------------------------------------------------------------
// Roles run inside namespaces by re-executing this test binary.

/// A role's command: this test binary, inside `ns`, running only `nat_role_helper`.
fn role_cmd(ns: &str, role: &str, env: &[(&str, String)]) -> Command {
    let exe = std::env::current_exe().expect("current exe");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(exe)
        .args([
            "--exact",
            "nat_role_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TERN_NAT_ROLE", role);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs a role to completion; returns (success, combined output).
fn run_role(ns: &str, role: &str, env: &[(&str, String)]) -> (bool, String) {
    let run = run_with_timeout(&mut role_cmd(ns, role, env), CHILD_TIMEOUT);
    (
        run.success(),
        format!("[{role} in {ns}]\n{}", run.describe()),
    )
}

/// The value after `key=` on a line of a role's output.
fn output_value(out: &str, key: &str) -> Option<String> {
    // libtest prints `test nat_role_helper ... ` before the role's first line.
    out.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
}

fn env_var(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("{key} not set"))
}

/// Entry point for the roles; a no-op when run as an ordinary test.
#[test]
fn nat_role_helper() {
    let Ok(role) = std::env::var("TERN_NAT_ROLE") else {
        return;
    };
    match role.as_str() {
        "binding" => role_binding(),
        "echo" => role_echo(),
        "probe" => role_probe(),
        "peer" => role_peer(),
        other => panic!("unknown TERN_NAT_ROLE {other}"),
    }
}

/// A client socket of `server`'s family.
fn client_socket(server: SocketAddr) -> UdpSocket {
    let any: SocketAddr = if server.is_ipv6() {
        "[::]:0".parse().expect("address")
    } else {
        "0.0.0.0:0".parse().expect("address")
    };
    UdpSocket::bind(any).expect("bind client socket")
}

/// Binding requests until one is answered (bounded); prints `mapped=<addr>`.
fn role_binding() {
    let server: SocketAddr = env_var("TERN_NAT_SERVER").parse().expect("server addr");
    let mut c = TurnClient::with_socket(client_socket(server), server, USER, PASS).expect("client");
    c.timeout = Duration::from_millis(300);
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let (tid, bytes) = c.encode(METHOD_BINDING, &Outgoing::default());
        if let Ok(Some(r)) = c.exchange(tid, &bytes) {
            let mapped = r
                .xor_address(ATTR_XORMAPPED_ADDRESS)
                .expect("XOR-MAPPED-ADDRESS");
            println!("mapped={mapped}");
            return;
        }
    }
    panic!("no Binding answer from {server} within 15 s");
}

/// UDP echo on TERN_NAT_ECHO for 20 s (bounded), answering anything it gets.
fn role_echo() {
    let bind: SocketAddr = env_var("TERN_NAT_ECHO").parse().expect("echo addr");
    let s = UdpSocket::bind(bind).expect("bind echo");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    println!("echo-ready");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    }
}

/// Sends a datagram to TERN_NAT_TARGET and reports `answered=true|false` within 1 s.
fn role_probe() {
    let target: SocketAddr = env_var("TERN_NAT_TARGET").parse().expect("target");
    let s = client_socket(target);
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut buf = [0u8; 1500];
    let mut answered = false;
    while Instant::now() < deadline && !answered {
        // Unreachable routes surface as send errors; that is "no answer" too.
        let _ = s.send_to(b"hello across the NAT", target);
        answered =
            matches!(s.recv_from(&mut buf), Ok((n, _)) if &buf[..n] == b"hello across the NAT");
    }
    println!("answered={answered}");
}

fn write_atomic(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, contents).expect("write");
    fs::rename(&tmp, path).expect("rename");
}

fn wait_file(path: &Path, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = fs::read_to_string(path) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not appear within {timeout:?}",
            path.display()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// One TURN client: allocate (an IPv6 relay when the server is reached over IPv6),
/// publish the relayed address, bind a channel to the other's, then exchange MESSAGES
/// ChannelData each way. Prints `mapped=`, `relayed=`
/// and `received=N`; fails unless all MESSAGES came back.
fn role_peer() {
    let server: SocketAddr = env_var("TERN_NAT_SERVER").parse().expect("server addr");
    let dir = PathBuf::from(env_var("TERN_NAT_DIR"));
    let me = env_var("TERN_NAT_NAME");
    let other = env_var("TERN_NAT_OTHER");
    let mut c = TurnClient::with_socket(client_socket(server), server, USER, PASS).expect("client");

    let (tid, bytes) = c.encode(METHOD_BINDING, &Outgoing::default());
    let r = c
        .exchange(tid, &bytes)
        .expect("io")
        .expect("Binding answered");
    let mapped = r.xor_address(ATTR_XORMAPPED_ADDRESS).expect("mapped");
    println!("mapped={mapped}");

    let family = if server.is_ipv6() {
        vec![Attr::family(2)]
    } else {
        vec![]
    };
    let r = c.allocate(family).expect("allocate io");
    assert!(r.is_success(), "allocate failed: {:?}", r.code);
    let relayed = r.xor_address(ATTR_XOR_RELAYED_ADDRESS).expect("relayed");
    println!("relayed={relayed}");
    write_atomic(&dir.join(format!("{me}.relay")), &relayed.to_string());

    let peer: SocketAddr = wait_file(&dir.join(format!("{other}.relay")), Duration::from_secs(15))
        .parse()
        .expect("peer relay addr");
    let r = c.create_permission(&[peer]).expect("permission io");
    assert!(
        r.is_success(),
        "CreatePermission {peer} failed: {:?}",
        r.code
    );
    let r = c.channel_bind(CHANNEL, peer).expect("channel bind io");
    assert!(r.is_success(), "ChannelBind {peer} failed: {:?}", r.code);
    write_atomic(&dir.join(format!("{me}.bound")), "ok");
    wait_file(&dir.join(format!("{other}.bound")), Duration::from_secs(15));
    if let Ok(gate) = std::env::var("TERN_NAT_GATE") {
        wait_file(Path::new(&gate), Duration::from_secs(15));
    }

    // a's first datagram goes ahead of b's: when both relays start sending to each other
    // at the same instant through a NAT that hairpins (tern behind a 1:1 NAT), the
    // router's connection tracking can race on the two new flows and give one of them
    // another source port, which is no longer the bound channel's peer (RFC-correct
    // Data indications, not what this test is about).
    let first = dir.join("a.first");
    if me == "b" {
        wait_file(&first, Duration::from_secs(15));
        thread::sleep(Duration::from_millis(50));
    }
    for i in 0..MESSAGES {
        // Errors (e.g. ICMP unreachable once the server is gone) just mean loss.
        let _ = c.send_channel_data(CHANNEL, format!("{me}-{i}").as_bytes());
        if i == 0 && me == "a" {
            write_atomic(&first, "ok");
        }
        thread::sleep(Duration::from_millis(2));
    }
    let mut got = [false; MESSAGES];
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.iter().any(|g| !g) && Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.recv_data(left) {
            Ok(Some((None, data))) => {
                let text = String::from_utf8_lossy(&data).into_owned();
                let i = text
                    .strip_prefix(&format!("{other}-"))
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or_else(|| panic!("unexpected ChannelData payload {text:?}"));
                got[i] = true;
            }
            Ok(Some((Some(from), _))) => {
                panic!("Data indication from {from}, expected ChannelData")
            }
            Ok(None) => break,
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
    let received = got.iter().filter(|g| **g).count();
    println!("received={received}");
    assert_eq!(
        received, MESSAGES,
        "{me} got {received}/{MESSAGES} from {other}"
    );
}

/// Starts peers a (lan1) and b (lan2) against `servers[0]` and `servers[1]`, each run
/// to completion (bounded) on a thread of its own so that both run at once.
fn spawn_peers(
    net: &Net,
    servers: [SocketAddr; 2],
    dir: &Path,
    gate: Option<&Path>,
) -> [JoinHandle<RunOutput>; 2] {
    let mk = |ns: &str, server: SocketAddr, me: &str, other: &str| {
        let mut env = vec![
            ("TERN_NAT_SERVER", server.to_string()),
            ("TERN_NAT_DIR", dir.display().to_string()),
            ("TERN_NAT_NAME", me.to_string()),
            ("TERN_NAT_OTHER", other.to_string()),
        ];
        if let Some(g) = gate {
            env.push(("TERN_NAT_GATE", g.display().to_string()));
        }
        let mut cmd = role_cmd(ns, "peer", &env);
        thread::spawn(move || run_with_timeout(&mut cmd, CHILD_TIMEOUT))
    };
    [
        mk(&net.lan1, servers[0], "a", "b"),
        mk(&net.lan2, servers[1], "b", "a"),
    ]
}

struct PeerResult {
    ok: bool,
    out: String,
}

fn finish_peers(peers: [JoinHandle<RunOutput>; 2]) -> [PeerResult; 2] {
    peers.map(|peer| {
        let run = peer.join().expect("peer runner thread");
        PeerResult {
            ok: run.success(),
            out: run.describe(),
        }
    })
}

/// Peers a (lan1) and b (lan2) exchange all messages through `servers[0]` and
/// `servers[1]`; each is relayed on `relay_ips[i]` and seen as its router's address.
fn exchange_both_ways(
    net: &Net,
    servers: [SocketAddr; 2],
    relay_ips: [IpAddr; 2],
    tern: &mut BackgroundProcess,
) {
    let dir = TempDir::new("tern-nat-xchg");
    let results = finish_peers(spawn_peers(net, servers, dir.path(), None));
    for (i, r) in results.iter().enumerate() {
        assert!(r.ok, "peer failed:\n{}\n{}", r.out, tern.logs());
        let relayed: SocketAddr = output_value(&r.out, "relayed")
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no relayed address:\n{}", r.out));
        assert_eq!(relayed.ip(), relay_ips[i], "{}", r.out);
        assert!(
            (RELAY_PORTS.0..=RELAY_PORTS.1).contains(&relayed.port()),
            "relayed port outside range: {}",
            r.out
        );
        let mapped: SocketAddr = output_value(&r.out, "mapped")
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no mapped address:\n{}", r.out));
        assert!(net.rtr_pub[i].contains(&mapped.ip()), "{}", r.out);
        assert_eq!(
            output_value(&r.out, "received").as_deref(),
            Some("20"),
            "{}",
            r.out
        );
    }
    tern.assert_running();
}

/// Waits for tern to answer a Binding from lan1; returns the mapped address.
fn wait_ready(net: &Net, server: SocketAddr, tern: &mut BackgroundProcess) -> SocketAddr {
    let (ok, out) = run_role(
        &net.lan1,
        "binding",
        &[("TERN_NAT_SERVER", server.to_string())],
    );
    tern.assert_running();
    assert!(ok, "tern not ready:\n{out}\n{}", tern.logs());
    output_value(&out, "mapped")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no mapped address:\n{out}"))
}

/// Waits (at most 10 s) until the UDP echo `echo` at `addr` answers a probe sent
/// from `ns`.
fn wait_echo(ns: &str, addr: SocketAddr, echo: &mut BackgroundProcess) {
    let probe_env = [("TERN_NAT_TARGET", addr.to_string())];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        echo.assert_running();
        let (ok, out) = run_role(ns, "probe", &probe_env);
        assert!(ok, "probe failed:\n{out}");
        if output_value(&out, "answered").as_deref() == Some("true") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "echo at {addr} never answered {ns}:\n{out}\n{}",
            echo.logs()
        );
    }
}

/// The mapped address `tern stun` reports from inside `ns`.
fn binding_from(ns: &str, server: SocketAddr) -> SocketAddr {
    netns::stun_from(ns, server).unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------------------
// The tests.

#[test]
fn clients_behind_two_masquerading_nats_relay_through_tern() {
    require_netns();
    let net = Net::build("1", true);
    let logs = TempDir::new("tern-nat-t1");
    let server = SocketAddr::from((TERN_IP, netns::PORT));
    let mut tern = start_tern(&net.pub_ns, Some(TERN_IP), &[], logs.path());

    // (a) lan1 cannot reach lan2 directly; the echo is alive (rtr2 reaches it).
    let echo_addr = SocketAddr::from((LAN2_HOST, ECHO_PORT));
    let mut echo = BackgroundProcess::spawn(
        "echo",
        &mut role_cmd(
            &net.lan2,
            "echo",
            &[("TERN_NAT_ECHO", echo_addr.to_string())],
        ),
        logs.path(),
    );
    wait_echo(&net.rtr2, echo_addr, &mut echo);
    let probe_env = [("TERN_NAT_TARGET", echo_addr.to_string())];
    let (ok, out) = run_role(&net.lan1, "probe", &probe_env);
    assert!(ok, "probe failed:\n{out}");
    assert_eq!(
        output_value(&out, "answered").as_deref(),
        Some("false"),
        "lan1 reached lan2's private address directly:\n{out}"
    );
    echo.stop();

    // (b) the server sees each client as its router's public address.
    let mapped = wait_ready(&net, server, &mut tern);
    assert_eq!(mapped.ip(), IpAddr::V4(RTR1_PUB), "lan1 mapped address");
    let mapped2 = binding_from(&net.lan2, server);
    assert_eq!(mapped2.ip(), IpAddr::V4(RTR2_PUB), "lan2 mapped address");

    // (c) ChannelData both ways between the two relayed addresses.
    exchange_both_ways(&net, [server; 2], [TERN_IP.into(); 2], &mut tern);

    // The check can fail: stop tern after the channels are bound, then exchange.
    let dir = TempDir::new("tern-nat-fail");
    let gate = dir.join("go");
    let peers = spawn_peers(&net, [server; 2], dir.path(), Some(&gate));
    wait_file(&dir.join("a.bound"), Duration::from_secs(20));
    wait_file(&dir.join("b.bound"), Duration::from_secs(20));
    tern.stop();
    write_atomic(&gate, "go");
    for r in finish_peers(peers) {
        assert!(!r.ok, "exchange succeeded without tern:\n{}", r.out);
        assert_eq!(
            output_value(&r.out, "received").as_deref(),
            Some("0"),
            "{}",
            r.out
        );
    }
}

#[test]
fn tern_behind_one_to_one_nat_advertises_its_public_address() {
    require_netns();
    let mut net = Net::build("2", false);
    let srv = net.add_one_to_one_nat();
    let logs = TempDir::new("tern-nat-t2");
    let mut tern = start_tern(
        &srv,
        Some(SRV_PRIV),
        &["--external-ip".to_string(), SRVRTR_PUB.to_string()],
        logs.path(),
    );
    let server = SocketAddr::from((SRVRTR_PUB, netns::PORT));

    let mapped = wait_ready(&net, server, &mut tern);
    assert_eq!(mapped.ip(), IpAddr::V4(RTR1_PUB), "lan1 mapped address");
    let mapped2 = binding_from(&net.lan2, server);
    assert_eq!(mapped2.ip(), IpAddr::V4(RTR2_PUB), "lan2 mapped address");

    exchange_both_ways(&net, [server; 2], [SRVRTR_PUB.into(); 2], &mut tern);
}

/// Waits until tern, with its built-in wildcard listeners on the multi-homed hub,
/// answers a Binding sent from `ns` to `server`.
fn wait_serving(ns: &str, server: SocketAddr, tern: &mut BackgroundProcess) {
    let ready = netns::wait_stun_from(ns, server, Duration::from_secs(15), || {
        match tern.try_exit_status() {
            Some(status) => Err(format!("tern exited with {status}")),
            None => Ok(()),
        }
    });
    if let Err(e) = ready {
        panic!("tern is not reachable at {server}: {e}\n{}", tern.logs());
    }
}

#[test]
fn wildcard_listener_on_a_multihomed_host_answers_from_the_address_each_client_used() {
    require_netns();
    let net = Net::build_multihomed("mh");
    let logs = TempDir::new("tern-nat-mh");
    let mut tern = start_tern(&net.pub_ns, None, &[], logs.path());
    let v4 = HUB_V4.map(|ip| SocketAddr::from((ip, netns::PORT)));
    let v6 = HUB_V6.map(|ip| SocketAddr::from((ip, netns::PORT)));
    wait_serving(&net.lan1, v4[0], &mut tern);

    // Each client uses the hub's address on the far side: its packets arrive on one
    // link and the kernel's route back leaves from the other address. Binding answers
    // reach the client from the address it used (else its NAT drops them)...
    for (ns, server, router) in [(&net.lan1, v4[1], 0), (&net.lan2, v4[0], 1)] {
        let mapped = binding_from(ns, server);
        assert!(net.rtr_pub[router].contains(&mapped.ip()), "{ns}: {mapped}");
    }
    for (ns, server, router) in [(&net.lan1, v6[1], 0), (&net.lan2, v6[0], 1)] {
        let mapped = binding_from(ns, server);
        assert!(net.rtr_pub[router].contains(&mapped.ip()), "{ns}: {mapped}");
    }
    // ...and so do allocations: each is relayed on the address its client reached
    // (relay IPs are auto-detected), and ChannelData flows both ways.
    let far = [v4[1], v4[0]];
    exchange_both_ways(&net, far, far.map(|s| s.ip()), &mut tern);
    let far = [v6[1], v6[0]];
    exchange_both_ways(&net, far, far.map(|s| s.ip()), &mut tern);
    // The near addresses work as before.
    exchange_both_ways(&net, v4, v4.map(|s| s.ip()), &mut tern);
}

/// coturn's `turnutils_uclient` in lan2 relays through the hub's far address (the
/// wildcard listener) to `turnutils_peer` on rtr1's public address, for `family`.
fn uclient_through_far_address(
    net: &Net,
    server: IpAddr,
    peer: IpAddr,
    tern: &mut BackgroundProcess,
) {
    let peer_port = &ECHO_PORT.to_string();
    let dir = TempDir::new("tern-nat-mu-peer");
    let mut peer_cmd = netns::exec_in(&net.rtr1, support::ensure_tool("turnutils_peer"));
    peer_cmd.args(["-L", &peer.to_string(), "-p", peer_port]);
    let mut echo = BackgroundProcess::spawn("turnutils_peer", &mut peer_cmd, dir.path());
    wait_echo(&net.rtr1, SocketAddr::new(peer, ECHO_PORT), &mut echo);
    let mut cmd = netns::exec_in(&net.lan2, support::ensure_tool("turnutils_uclient"));
    cmd.args(["-u", USER, "-w", PASS, "-n", "20", "-m", "2", "-l", "120"])
        .args(["-e", &peer.to_string(), "-r", peer_port])
        .args(["-p", &netns::PORT.to_string()]);
    if server.is_ipv6() {
        // An IPv6 relay, to reach the IPv6 peer.
        cmd.arg("-x");
    }
    cmd.arg(server.to_string());
    let run = run_with_timeout(&mut cmd, CHILD_TIMEOUT);
    let text = run.combined();
    let summary = UclientSummary::parse(&text).unwrap_or_else(|| {
        panic!(
            "uclient via {server}: no summary\n{}\n{}\n{}",
            run.describe(),
            echo.logs(),
            tern.logs()
        )
    });
    println!("[uclient via {server}]\n{}", UclientSummary::lines(&text));
    assert!(
        run.success()
            && summary.lost_packets == 0
            && summary.tot_send_msgs >= 40
            && summary.tot_recv_msgs == summary.tot_send_msgs,
        "uclient via {server}: {summary:?}\n{text}\n{}",
        tern.logs()
    );
    echo.stop();
}

#[test]
fn coturn_uclient_relays_through_a_wildcard_listener_on_a_multihomed_host() {
    require_netns();
    let net = Net::build_multihomed("mu");
    let logs = TempDir::new("tern-nat-mu");
    // rtr1's IPv6 address is a documentation address, denied as a peer by default.
    let extra = ["--allow-peer".to_string(), "2001:db8:1::1/128".to_string()];
    let mut tern = start_tern(&net.pub_ns, None, &extra, logs.path());
    let [rtr1_v4, rtr1_v6] = [net.rtr_pub[0][0], net.rtr_pub[0][1]];
    wait_serving(
        &net.lan2,
        SocketAddr::from((HUB_V4[0], netns::PORT)),
        &mut tern,
    );
    uclient_through_far_address(&net, HUB_V4[0].into(), rtr1_v4, &mut tern);
    uclient_through_far_address(&net, HUB_V6[0].into(), rtr1_v6, &mut tern);
    tern.assert_running();
}
