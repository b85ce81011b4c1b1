//! The kernel fast path (`relay.offload`, src/offload) against real traffic: coturn's
//! `turnutils_uclient` relays through tern to `turnutils_peer`, each in a network
//! namespace of its own, and tern's metrics must show the channels' packets relayed by
//! the eBPF program, not by user space, with nothing lost.
//!
//! ```text
//!   cli (10.71.1.2, fd71:1::2) ── srv: tern, listens on 10.71.1.1 / fd71:1::1,
//!                                      relays from 10.71.2.1 / fd71:2::1 ── peer (10.71.2.2, fd71:2::2)
//! ```
//!
//! IP forwarding stays off in srv: the program sends each datagram itself. The XDP test
//! puts all three on one link instead (a bridge in a fourth namespace), as on a host with
//! one public interface, where datagrams leave by the interface they came in on. The
//! offload does not apply on loopback, which is why these tests need namespaces (root,
//! `ip`; see `scripts/install-nat-deps.sh`) and, for XDP, clang, which the build
//! needs too. They are never skipped silently.

mod support;

#[path = "support/chromium.rs"]
mod chromium;
#[path = "support/netns.rs"]
mod netns;

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use netns::{Namespaces, exec_in, require_netns, run};
use support::{BackgroundProcess, TempDir, UclientSummary, run_with_timeout};

const USER: &str = "alice";
const PASS: &str = "pw";
const PORT: u16 = 3478;
const ECHO_PORT: u16 = 3480;
const ADMIN: &str = "127.0.0.1:9641";
const MESSAGES: u64 = 200;
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// The namespaces of the client, the server and the peer, and the server's addresses.
struct Topology {
    _namespaces: Namespaces,
    cli: String,
    srv: String,
    peer: String,
    /// `server.listen` and `relay.ips`, as TOML arrays.
    listen: &'static str,
    relay_ips: &'static str,
}

/// The routed and shared-link topologies' server addresses.
const LISTEN: &str = "[\"10.71.1.1:3478\", \"[fd71:1::1]:3478\"]";
const RELAY_IPS: &str = "[\"10.71.2.1\", \"fd71:2::1\"]";

impl Topology {
    /// Routed: srv has one interface toward cli and another toward peer.
    fn build(tag: &str) -> Self {
        let mut namespaces = Namespaces::new(tag);
        let cli = namespaces.add("cli");
        let srv = namespaces.add("srv");
        let peer = namespaces.add("peer");
        let pid = std::process::id();
        for (side, far, subnet) in [("c", &cli, 1), ("p", &peer, 2)] {
            // Interface names are per namespace, but are created in ours first.
            // Tests run at once in this process: the tag keeps their names apart.
            let (a, b) = (format!("o{side}{tag}{pid}a"), format!("o{side}{tag}{pid}b"));
            run(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b]);
            run(&["ip", "link", "set", &a, "netns", far]);
            run(&["ip", "link", "set", &b, "netns", &srv]);
            for (ns, dev, host) in [(far.as_str(), &a, 2), (srv.as_str(), &b, 1)] {
                let v4 = format!("10.71.{subnet}.{host}/24");
                let v6 = format!("fd71:{subnet}::{host}/64");
                run(&["ip", "-n", ns, "addr", "add", &v4, "dev", dev]);
                run(&["ip", "-n", ns, "addr", "add", &v6, "dev", dev, "nodad"]);
                run(&["ip", "-n", ns, "link", "set", dev, "up"]);
            }
            let via4 = format!("10.71.{subnet}.1");
            let via6 = format!("fd71:{subnet}::1");
            run(&["ip", "-n", far, "route", "add", "default", "via", &via4]);
            run(&[
                "ip", "-n", far, "-6", "route", "add", "default", "via", &via6,
            ]);
        }
        Self::with_server_addresses(namespaces, cli, srv, peer)
    }

    /// The routed and shared-link topologies' server, on LISTEN and RELAY_IPS, with IP
    /// forwarding off.
    fn with_server_addresses(
        namespaces: Namespaces,
        cli: String,
        srv: String,
        peer: String,
    ) -> Self {
        assert_forwarding_off(&srv);
        Self {
            _namespaces: namespaces,
            cli,
            srv,
            peer,
            listen: LISTEN,
            relay_ips: RELAY_IPS,
        }
    }

    /// One link: cli, srv and peer each have one interface on a bridge in a fourth
    /// namespace, with the same addresses as in [`Topology::build`] (srv holds both
    /// subnets). The bridge's end of srv's link runs an XDP program that passes
    /// everything (tests/support/xdp_pass.c, built into `dir`): veth hands the frames
    /// XDP sends back (XDP_TX) only to a peer that runs XDP itself.
    fn shared_link(tag: &str, dir: &Path) -> Self {
        let mut namespaces = Namespaces::new(tag);
        let cli = namespaces.add("cli");
        let srv = namespaces.add("srv");
        let peer = namespaces.add("peer");
        let lan = namespaces.add("lan");
        run(&["ip", "-n", &lan, "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "-n", &lan, "link", "set", "br0", "up"]);
        let pid = std::process::id();
        let hosts: [(&str, &str, &[&str]); 3] = [
            ("c", &cli, &["10.71.1.2/24", "fd71:1::2/64"]),
            (
                "s",
                &srv,
                &[
                    "10.71.1.1/24",
                    "10.71.2.1/24",
                    "fd71:1::1/64",
                    "fd71:2::1/64",
                ],
            ),
            ("p", &peer, &["10.71.2.2/24", "fd71:2::2/64"]),
        ];
        for (side, ns, addrs) in hosts {
            let (a, b) = (format!("l{side}{tag}{pid}a"), format!("l{side}{tag}{pid}b"));
            run(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b]);
            run(&["ip", "link", "set", &a, "netns", ns]);
            run(&["ip", "link", "set", &b, "netns", &lan]);
            for addr in addrs {
                let mut args = vec!["ip", "-n", ns, "addr", "add", addr, "dev", &a];
                if addr.contains(':') {
                    args.push("nodad");
                }
                run(&args);
            }
            run(&["ip", "-n", ns, "link", "set", &a, "up"]);
            run(&["ip", "-n", &lan, "link", "set", &b, "master", "br0", "up"]);
            if side == "s" {
                let object = build_xdp_pass(dir);
                let object = object.to_str().expect("a UTF-8 temp path");
                run(&[
                    "ip", "-n", &lan, "link", "set", "dev", &b, "xdpdrv", "obj", object, "sec",
                    "xdp",
                ]);
            }
        }
        Self::with_server_addresses(namespaces, cli, srv, peer)
    }
}

/// The capabilities deploy/systemd/offload.conf gives tern, as `setpriv
/// --bounding-set` takes them ("-all,+bpf,...").
fn drop_in_capabilities() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd/offload.conf");
    let text = fs::read_to_string(&path).expect("reading the drop-in");
    let caps = text
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("the drop-in names AmbientCapabilities");
    caps.split_whitespace()
        .map(|cap| format!(",+{}", cap.trim_start_matches("CAP_").to_lowercase()))
        .fold("-all".to_string(), |all, cap| all + &cap)
}

/// tests/support/xdp_pass.c compiled into `dir`.
fn build_xdp_pass(dir: &Path) -> std::path::PathBuf {
    let object = dir.join("xdp_pass.o");
    let arch = std::env::consts::ARCH;
    let mut cmd = Command::new(std::env::var("CLANG").unwrap_or_else(|_| "clang".into()));
    cmd.args(["-O2", "-target", "bpf"])
        .arg(format!("-I/usr/include/{arch}-linux-gnu"))
        .arg("-c")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/xdp_pass.c"))
        .arg("-o")
        .arg(&object);
    let out = run_with_timeout(&mut cmd, CHILD_TIMEOUT);
    assert!(out.success(), "compiling xdp_pass.c:\n{}", out.describe());
    object
}

fn assert_forwarding_off(srv: &str) {
    for key in [
        "net.ipv4.conf.all.forwarding",
        "net.ipv6.conf.all.forwarding",
    ] {
        let out = run(&["ip", "netns", "exec", srv, "sysctl", "-n", key]);
        assert_eq!(
            out.trim(),
            "0",
            "{key} must stay off in the server's namespace"
        );
    }
}

/// tern in srv with `relay.offload = offload`, `relay.offload_xdp = xdp` and the rest
/// of `config`, its output in `dir`.
fn start_tern(
    topo: &Topology,
    (offload, xdp): (&str, &str),
    config_tail: &str,
    dir: &Path,
) -> BackgroundProcess {
    start_tern_with(
        topo,
        &format!("offload = \"{offload}\"\noffload_xdp = \"{xdp}\""),
        config_tail,
        dir,
    )
}

/// tern in srv with the `[relay]` keys `relay` (the addresses and ports are set), the
/// rest of `config`, its output in `dir`.
fn start_tern_with(
    topo: &Topology,
    relay: &str,
    config_tail: &str,
    dir: &Path,
) -> BackgroundProcess {
    let config = dir.join("tern.toml");
    let (listen, relay_ips) = (topo.listen, topo.relay_ips);
    let text = format!(
        "[server]\nlisten = {listen}\nworkers = 2\n\
         [relay]\nips = {relay_ips}\nports = \"40000-40100\"\n\
         {relay}\n\
         [admin]\nlisten = \"{ADMIN}\"\n\
         [[auth.users]]\nname = \"{USER}\"\npassword = \"{PASS}\"\n{config_tail}"
    );
    fs::write(&config, text).expect("writing the config");
    // With exactly the capabilities the systemd drop-in grants, not all of root's.
    let mut cmd = exec_in(&topo.srv, "setpriv");
    cmd.args(["--bounding-set", &drop_in_capabilities(), "--"])
        .arg(env!("CARGO_BIN_EXE_tern"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    let mut tern = BackgroundProcess::spawn("tern", &mut cmd, dir);
    let first = topo.listen.split('"').nth(1).expect("a listen address");
    let server: SocketAddr = first.parse().expect("a listen address");
    let ready = netns::wait_stun_from(&topo.cli, server, Duration::from_secs(15), || {
        match tern.try_exit_status() {
            Some(status) => Err(format!("tern exited with {status}")),
            None => Ok(()),
        }
    });
    if let Err(e) = ready {
        panic!("tern is not reachable at {server}: {e}\n{}", tern.logs());
    }
    tern
}

const PEERS_ALLOWED: &str = "[peers]\nallowed = [\"10.71.2.0/24\", \"fd71:2::/64\"]\n";

/// turnutils_peer in the peer namespace on both families, once it is bound.
fn start_echo(topo: &Topology, dir: &Path) -> BackgroundProcess {
    let mut cmd = exec_in(&topo.peer, support::ensure_tool("turnutils_peer"));
    cmd.args(["-p", &ECHO_PORT.to_string()]);
    let mut echo = BackgroundProcess::spawn("turnutils_peer", &mut cmd, dir);
    let deadline = Instant::now() + Duration::from_secs(10);
    let wanted = format!(":{ECHO_PORT} ");
    loop {
        echo.assert_running();
        let sockets = run(&["ip", "netns", "exec", &topo.peer, "ss", "-Hlun"]);
        if sockets.matches(&wanted).count() >= 2 {
            return echo;
        }
        assert!(
            Instant::now() < deadline,
            "turnutils_peer never bound:\n{}",
            echo.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// coturn's client in cli: `MESSAGES` messages on each of two clients (each with an
/// RTP and an RTCP allocation), over channels, to the echo peer at `peer`.
fn uclient(
    topo: &Topology,
    server: IpAddr,
    peer: IpAddr,
    tern: &BackgroundProcess,
) -> UclientSummary {
    let mut cmd = exec_in(&topo.cli, support::ensure_tool("turnutils_uclient"));
    cmd.args(["-u", USER, "-w", PASS, "-m", "2", "-l", "160"])
        .args(["-n", &MESSAGES.to_string()])
        .args(["-e", &peer.to_string(), "-r", &ECHO_PORT.to_string()])
        .args(["-p", &PORT.to_string()]);
    if peer.is_ipv6() {
        cmd.arg("-x");
    }
    cmd.arg(server.to_string());
    let out = run_with_timeout(&mut cmd, CHILD_TIMEOUT);
    let text = out.combined();
    let summary = UclientSummary::parse(&text)
        .unwrap_or_else(|| panic!("uclient: no summary\n{}\n{}", out.describe(), tern.logs()));
    println!("[uclient via {server}]\n{}", UclientSummary::lines(&text));
    assert!(
        out.success()
            && summary.lost_packets == 0
            && summary.tot_send_msgs == 2 * MESSAGES
            && summary.tot_recv_msgs == summary.tot_send_msgs,
        "uclient via {server}: {summary:?}\n{text}\n{}",
        tern.logs()
    );
    summary
}

/// tern's metrics, read inside srv (the admin listener is on its loopback).
fn metrics(topo: &Topology) -> String {
    let script = format!(
        "import urllib.request; print(urllib.request.urlopen('http://{ADMIN}/metrics').read().decode())"
    );
    let mut cmd = exec_in(&topo.srv, "python3");
    cmd.args(["-c", &script]);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(10));
    assert!(out.success(), "reading metrics:\n{}", out.describe());
    out.stdout
}

/// The value of the sample `name` (with its labels, as printed) in `text`; 0 if absent.
fn sample(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0, |v| v as u64)
}

/// Packets relayed (kernel, and of that the XDP hook's; user space) toward peers and
/// toward clients.
#[derive(Default)]
struct Relayed {
    kernel_to_peer: u64,
    kernel_to_client: u64,
    xdp_to_peer: u64,
    xdp_to_client: u64,
    user_to_peer: u64,
    user_to_client: u64,
    channels: u64,
}

fn relayed(topo: &Topology) -> Relayed {
    let text = metrics(topo);
    let kernel = |direction: &str, hook: &str| {
        sample(
            &text,
            &format!("tern_offload_packets_total{{direction=\"{direction}\",hook=\"{hook}\"}}"),
        )
    };
    let (xdp_to_peer, xdp_to_client) = (kernel("to_peer", "xdp"), kernel("to_client", "xdp"));
    Relayed {
        kernel_to_peer: kernel("to_peer", "tc") + xdp_to_peer,
        kernel_to_client: kernel("to_client", "tc") + xdp_to_client,
        xdp_to_peer,
        xdp_to_client,
        user_to_peer: sample(&text, "tern_relayed_to_peer_packets_total"),
        user_to_client: sample(&text, "tern_relayed_to_client_packets_total"),
        channels: sample(&text, "tern_offload_channels"),
    }
}

impl Relayed {
    /// What was relayed between `before` and `self`.
    fn since(&self, before: &Relayed) -> Relayed {
        Relayed {
            kernel_to_peer: self.kernel_to_peer - before.kernel_to_peer,
            kernel_to_client: self.kernel_to_client - before.kernel_to_client,
            xdp_to_peer: self.xdp_to_peer - before.xdp_to_peer,
            xdp_to_client: self.xdp_to_client - before.xdp_to_client,
            user_to_peer: self.user_to_peer - before.user_to_peer,
            user_to_client: self.user_to_client - before.user_to_client,
            channels: self.channels,
        }
    }
}

/// uclient over IPv4, then IPv6, each run checked by `check` with what it relayed.
fn both_families(topo: &Topology, tern: &BackgroundProcess, check: impl Fn(IpAddr, u64, &Relayed)) {
    let families: [(IpAddr, IpAddr); 2] = [
        ("10.71.1.1".parse().unwrap(), "10.71.2.2".parse().unwrap()),
        ("fd71:1::1".parse().unwrap(), "fd71:2::2".parse().unwrap()),
    ];
    for (server, peer) in families {
        let before = relayed(topo);
        let summary = uclient(topo, server, peer, tern);
        let delta = relayed(topo).since(&before);
        println!(
            "[{server}] kernel: {} to peers, {} to clients (XDP: {}, {}); \
             user space: {} to peers, {} to clients",
            delta.kernel_to_peer,
            delta.kernel_to_client,
            delta.xdp_to_peer,
            delta.xdp_to_client,
            delta.user_to_peer,
            delta.user_to_client
        );
        check(server, summary.tot_send_msgs, &delta);
    }
}

/// Channel data goes through the kernel both ways, on IPv4 and IPv6, with nothing
/// lost; the entries go when the allocations do.
#[test]
fn uclient_channels_are_relayed_by_the_kernel() {
    require_netns();
    let topo = Topology::build("of");
    let dir = TempDir::new("tern-offload");
    let mut tern = start_tern(&topo, ("on", "auto"), PEERS_ALLOWED, dir.path());
    let logs = tern.logs();
    assert!(logs.contains("kernel fast path on"), "{logs}");
    // veth is not backed by a device: "auto" leaves XDP off and says why.
    assert!(
        logs.contains("no XDP on") && logs.contains("not backed by a device"),
        "{logs}"
    );
    relays_on_tc_only(&topo, &mut tern, dir.path());
}

/// With XDP on every interface of the routed server, each datagram must leave by the
/// other interface: XDP passes it on untouched and TC relays it, nothing lost.
#[test]
fn xdp_leaves_datagrams_for_other_interfaces_to_tc() {
    require_netns();
    let topo = Topology::build("ot");
    let dir = TempDir::new("tern-offload-xdp-routed");
    let mut tern = start_tern(&topo, ("on", "on"), PEERS_ALLOWED, dir.path());
    let logs = tern.logs();
    let pid = std::process::id();
    let xdp = logs
        .lines()
        .find(|l| l.contains("kernel fast path on"))
        .and_then(|l| l.split("xdp=[").nth(1))
        .unwrap_or_default();
    assert!(
        xdp.contains(&format!("\"ocot{pid}b\"")) && xdp.contains(&format!("\"opot{pid}b\"")),
        "XDP not attached to both interfaces:\n{logs}"
    );
    relays_on_tc_only(&topo, &mut tern, dir.path());
}

/// uclient's traffic to the echo peer on both families: the kernel relays it on TC (the
/// XDP hook relays none of it), and tern is still running after.
fn relays_on_tc_only(topo: &Topology, tern: &mut BackgroundProcess, dir: &Path) {
    let _echo = start_echo(topo, dir);
    both_families(topo, tern, |server, sent, delta| {
        assert_kernel_relayed(server, sent, delta, tern);
        assert_eq!((delta.xdp_to_peer, delta.xdp_to_client), (0, 0));
    });
    tern.assert_running();
}

/// Each channel's first datagram each way goes through user space, until the program
/// has heard from the other side; everything after is the kernel's. The entries go when
/// the allocations do.
fn assert_kernel_relayed(server: IpAddr, sent: u64, delta: &Relayed, tern: &BackgroundProcess) {
    assert!(
        delta.kernel_to_peer + delta.user_to_peer >= sent && delta.kernel_to_peer >= sent - 20,
        "[{server}] to peers: kernel {}, user space {} of {sent}\n{}",
        delta.kernel_to_peer,
        delta.user_to_peer,
        tern.logs()
    );
    assert!(
        delta.kernel_to_client >= sent - 20,
        "[{server}] to clients: kernel {}, user space {}\n{}",
        delta.kernel_to_client,
        delta.user_to_client,
        tern.logs()
    );
    assert_eq!(
        delta.channels, 0,
        "[{server}] entries left after the allocations ended"
    );
}

/// On one shared link, with `relay.offload_xdp = "on"`, the XDP hook relays the
/// channels both ways (back out of the interface they came in on), IPv4 and IPv6,
/// nothing lost; TC is left nothing but each side's first datagram.
#[test]
fn xdp_relays_channels_on_a_shared_link() {
    require_netns();
    let dir = TempDir::new("tern-offload-xdp");
    let topo = Topology::shared_link("ox", dir.path());
    let mut tern = start_tern(&topo, ("on", "on"), PEERS_ALLOWED, dir.path());
    let logs = tern.logs();
    assert!(
        logs.contains("kernel fast path on") && logs.contains("xdp=[\"ls"),
        "{logs}"
    );
    let _echo = start_echo(&topo, dir.path());
    both_families(&topo, &tern, |server, sent, delta| {
        assert_kernel_relayed(server, sent, delta, &tern);
        assert!(
            delta.xdp_to_peer >= sent - 20 && delta.xdp_to_client >= sent - 20,
            "[{server}] XDP relayed {} to peers, {} to clients of {sent}\n{}",
            delta.xdp_to_peer,
            delta.xdp_to_client,
            tern.logs()
        );
    });
    tern.assert_running();
}

/// With `relay.external_ips` (1:1 NAT) the kernel relays the same: it sees the local
/// addresses, and only the addresses given to clients change.
#[test]
fn external_ips_leave_the_fast_path_unchanged() {
    require_netns();
    let topo = Topology::build("oe");
    let dir = TempDir::new("tern-offload-external");
    // Documentation addresses, only ever advertised: no traffic goes to them.
    let relay = "offload = \"on\"\n\
                 external_ips = [\"10.71.2.1=198.51.100.7\", \"fd71:2::1=2001:db8::7\"]";
    let mut tern = start_tern_with(&topo, relay, PEERS_ALLOWED, dir.path());
    relays_on_tc_only(&topo, &mut tern, dir.path());
}

/// A browser's call through the fast path: Chromium in cli pairs a relay-only
/// connection (TURN/UDP to tern in srv) with one that offers its host address, so the
/// relay's peer is that address; the data channel's messages arrive both ways, and the
/// kernel relayed the channel's packets.
#[test]
fn chromium_relays_through_the_kernel() {
    require_netns();
    let node = chromium::require_browser_deps();
    let topo = Topology::build("ob");
    let dir = TempDir::new("tern-offload-chromium");
    let peers = "[peers]\nallowed = [\"10.71.1.0/24\"]\n";
    let mut tern = start_tern(&topo, ("on", "auto"), peers, dir.path());
    let mut cmd = chromium::driver_in(&topo.cli, &node, "run.mjs");
    cmd.args(["10.71.1.1", &PORT.to_string(), "0", USER, PASS])
        .args(["--runs", "udp-host-b"]);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(120));
    let passed = chromium::json_lines(&out.stdout)
        .iter()
        .any(|v| v["run"] == "udp-host-b" && v["pass"] == true);
    assert!(
        out.success() && passed,
        "the browser call failed\n{}\n{}",
        out.describe(),
        tern.logs()
    );
    let relayed = relayed(&topo);
    println!(
        "[chromium] kernel: {} to peers, {} to clients; user space: {} to peers, {} to clients",
        relayed.kernel_to_peer,
        relayed.kernel_to_client,
        relayed.user_to_peer,
        relayed.user_to_client
    );
    // 50 messages each way, with their acknowledgements, DTLS and consent checks.
    assert!(
        relayed.kernel_to_peer >= 50 && relayed.kernel_to_client >= 50,
        "the kernel relayed {} to the peer and {} to the client\n{}",
        relayed.kernel_to_peer,
        relayed.kernel_to_client,
        tern.logs()
    );
    tern.assert_running();
}

/// Through the NAT topology: the client in lan1 behind rtr1's masquerade, tern on the
/// public bridge (the bridge is its offload interface), the echo peer in lan2 reached
/// through a port forward on rtr2 (uclient's RTP and RTCP ports). The kernel relays the channels both ways, between
/// the two routers' public addresses.
#[test]
fn uclient_behind_a_nat_relays_through_the_kernel() {
    require_netns();
    let net = netns::Net::build("oz", true);
    let nft = |rule: &str| run(&["ip", "netns", "exec", &net.rtr2, "nft", rule]);
    nft("add chain ip nat pre { type nat hook prerouting priority -100 ; }");
    nft(&format!(
        "add rule ip nat pre iifname \"wan\" udp dport {ECHO_PORT}-{} dnat to {}",
        ECHO_PORT + 1,
        netns::LAN2_HOST
    ));
    let netns::Net {
        ns,
        pub_ns,
        lan1,
        lan2,
        ..
    } = net;
    let topo = Topology {
        _namespaces: ns,
        cli: lan1,
        srv: pub_ns,
        peer: lan2,
        listen: "[\"203.0.113.1:3478\"]",
        relay_ips: "[\"203.0.113.1\"]",
    };
    let dir = TempDir::new("tern-offload-nat");
    // The documentation range the topology's public side uses.
    let peers = "[peers]\nallowed = [\"203.0.113.0/24\"]\n";
    let tern = start_tern(&topo, ("on", "auto"), peers, dir.path());
    let _echo = start_echo(&topo, dir.path());
    let before = relayed(&topo);
    let summary = uclient(&topo, netns::TERN_IP.into(), netns::RTR2_PUB.into(), &tern);
    let delta = relayed(&topo).since(&before);
    println!(
        "[nat] kernel: {} to peers, {} to clients; user space: {} to peers, {} to clients",
        delta.kernel_to_peer, delta.kernel_to_client, delta.user_to_peer, delta.user_to_client
    );
    assert_kernel_relayed(netns::TERN_IP.into(), summary.tot_send_msgs, &delta, &tern);
}

/// With `relay.offload = "off"` the same traffic is all user space's.
#[test]
fn offload_off_relays_in_user_space() {
    require_netns();
    let topo = Topology::build("on");
    let dir = TempDir::new("tern-offload-off");
    let tern = start_tern(&topo, ("off", "auto"), PEERS_ALLOWED, dir.path());
    let _echo = start_echo(&topo, dir.path());
    let summary = uclient(
        &topo,
        "10.71.1.1".parse().unwrap(),
        "10.71.2.2".parse().unwrap(),
        &tern,
    );
    let after = relayed(&topo);
    assert_eq!((after.kernel_to_peer, after.kernel_to_client), (0, 0));
    assert!(
        after.user_to_peer >= summary.tot_send_msgs,
        "{}",
        tern.logs()
    );
    assert_eq!(sample(&metrics(&topo), "tern_offload_active"), 0);
}

/// `relay.offload = "on"` refuses to start where the fast path cannot run (here:
/// only loopback addresses, which it never attaches to), naming the reason; `auto`
/// starts and says why it relays in user space.
#[test]
fn offload_on_refuses_to_start_without_the_fast_path() {
    let dir = TempDir::new("tern-offload-lo");
    let config = dir.join("tern.toml");
    let port = support::free_udp_port();
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\n[relay]\noffload = \"on\"\n\
         [[auth.users]]\nname = \"{USER}\"\npassword = \"{PASS}\"\n"
    );
    fs::write(&config, &text).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tern"));
    cmd.arg("serve")
        .arg("--config")
        .arg(&config)
        .env("NO_COLOR", "1");
    let out = run_with_timeout(&mut cmd, Duration::from_secs(20));
    assert!(
        !out.success(),
        "started without the fast path:\n{}",
        out.describe()
    );
    assert!(
        out.stderr.contains("kernel fast path cannot run") && out.stderr.contains("loopback"),
        "{}",
        out.describe()
    );

    fs::write(&config, text.replace("\"on\"", "\"auto\"")).unwrap();
    let server = support::TernServer::builder()
        .listen(SocketAddr::from(([127, 0, 0, 1], port)))
        .arg("--config")
        .arg(config.to_string_lossy())
        .start();
    let logs = server.logs();
    assert!(
        logs.contains("kernel fast path unavailable, relaying in user space")
            && logs.contains("loopback"),
        "{logs}"
    );
}

/// A reload whose peer policy denies the peer stops the kernel relaying to it at once,
/// in the middle of a flow: the channels are withdrawn, and from then on neither the
/// kernel nor user space sends the peer anything.
#[test]
fn a_reload_that_denies_the_peer_withdraws_its_channels() {
    require_netns();
    let topo = Topology::build("or");
    let dir = TempDir::new("tern-offload-reload");
    let mut tern = start_tern(&topo, ("on", "auto"), PEERS_ALLOWED, dir.path());
    let mut peer_cmd = exec_in(&topo.peer, env!("CARGO_BIN_EXE_tern"));
    peer_cmd.args(["peer", "--listen", "10.71.2.2:3481"]);
    let _peer = BackgroundProcess::spawn("tern peer", &mut peer_cmd, dir.path());
    let mut load_cmd = exec_in(&topo.cli, env!("CARGO_BIN_EXE_tern"));
    load_cmd
        .args([
            "load",
            &format!("10.71.1.1:{PORT}"),
            "--user",
            USER,
            "--pass",
            PASS,
        ])
        .args(["--allocations", "2", "--peer", "10.71.2.2:3481"])
        .args(["--rate", "200", "--payload", "160", "--duration", "20"]);
    let mut load = BackgroundProcess::spawn("tern load", &mut load_cmd, dir.path());

    let flowing = wait_for(Duration::from_secs(10), || {
        let now = relayed(&topo);
        (now.kernel_to_peer >= 200 && now.channels == 2).then_some(())
    });
    assert!(
        flowing.is_some(),
        "the kernel never took the flow\n{}\n{}",
        load.logs(),
        tern.logs()
    );

    // The same config without the [peers] section: 10.71.0.0/16 is private, denied.
    let config = dir.join("tern.toml");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(&config, text.replace(PEERS_ALLOWED, "")).unwrap();
    let reloads = tern.logs().matches("configuration reloaded").count();
    let hup = Command::new("kill")
        .args(["-HUP", &tern.id().to_string()])
        .status();
    assert!(hup.is_ok_and(|s| s.success()), "kill -HUP");
    let withdrawn = wait_for(Duration::from_secs(5), || {
        let reloaded = tern.logs().matches("configuration reloaded").count() > reloads;
        (reloaded && relayed(&topo).channels == 0).then_some(())
    });
    assert!(
        withdrawn.is_some(),
        "channels still offloaded after the reload\n{}",
        tern.logs()
    );
    let before = relayed(&topo);
    std::thread::sleep(Duration::from_secs(1));
    let after = relayed(&topo);
    load.assert_running();
    assert_eq!(
        (after.kernel_to_peer, after.user_to_peer),
        (before.kernel_to_peer, before.user_to_peer),
        "the denied peer was still sent to\n{}",
        tern.logs()
    );
    tern.assert_running();
}

/// A dual allocation (RFC 8656 ADDITIONAL-ADDRESS-FAMILY, from
/// tests/support/rfc8656_dual_client.py in cli) with a channel to the echo peer on each
/// family: the channel of the client's own family is the kernel's, from the relay
/// socket of that family; the other mixes families, which the program does not relay,
/// so it stays in user space. Nothing is lost on either, over IPv4 and over IPv6.
#[test]
fn a_dual_allocations_channels_go_through_the_relay_of_their_family() {
    require_netns();
    let topo = Topology::build("od");
    let dir = TempDir::new("tern-offload-dual");
    let tern = start_tern(&topo, ("on", "auto"), PEERS_ALLOWED, dir.path());
    let _echo = start_echo(&topo, dir.path());
    const COUNT: u64 = 100;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/rfc8656_dual_client.py"
    );
    for server in ["10.71.1.1", "fd71:1::1"] {
        let before = relayed(&topo);
        let mut cmd = exec_in(&topo.cli, support::ensure_tool("python3"));
        cmd.args([script, server, &PORT.to_string(), USER, PASS, "echo"])
            .args(["10.71.2.2", "fd71:2::2", &ECHO_PORT.to_string()])
            .arg(COUNT.to_string());
        let out = run_with_timeout(&mut cmd, CHILD_TIMEOUT);
        assert!(
            out.success(),
            "[{server}] {}
{}",
            out.describe(),
            tern.logs()
        );
        let report: serde_json::Value = serde_json::from_str(out.stdout.trim())
            .unwrap_or_else(|e| panic!("[{server}] not JSON ({e}): {}", out.describe()));
        let delta = relayed(&topo).since(&before);
        println!(
            "[{server}] {report}
kernel: {} to peers, {} to clients; user space: {} to peers, {} to clients",
            delta.kernel_to_peer, delta.kernel_to_client, delta.user_to_peer, delta.user_to_client
        );
        let relays = report["relays"].as_array().map_or(0, Vec::len);
        assert_eq!(
            relays,
            2,
            "[{server}] {report}
{}",
            tern.logs()
        );
        assert_eq!(
            (&report["echoed_ipv4"], &report["echoed_ipv6"]),
            (&COUNT.into(), &COUNT.into()),
            "[{server}] {report}
{}",
            tern.logs()
        );
        // One channel's worth in the kernel (less its first datagrams), never both;
        // the other's all in user space.
        let kernel = (delta.kernel_to_peer, delta.kernel_to_client);
        assert!(
            (COUNT - 20..=COUNT).contains(&kernel.0) && (COUNT - 20..=COUNT).contains(&kernel.1),
            "[{server}] kernel relayed {kernel:?}
{}",
            tern.logs()
        );
        assert!(delta.user_to_peer >= COUNT && delta.user_to_client >= COUNT);
        assert_eq!(
            delta.channels, 0,
            "[{server}] entries left after the allocation ended"
        );
    }
}

/// Polls `check` every 50 ms until it gives a value or `limit` passes.
fn wait_for<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
