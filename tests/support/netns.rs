//! Real NAT topologies built from network namespaces, veth pairs and nftables, and a
//! `tern serve` inside one of them.
//!
//! Needs root, `ip netns` and `nft` (see `scripts/install-nat-deps.sh`). Without them
//! [`require_netns`] panics with the reason: the tests are never skipped silently.
//!
//! The base topology (tern on the "public" segment, clients behind masquerading routers):
//!
//! ```text
//!   lan1 (10.10.1.2) ── rtr1 [masquerade] 203.0.113.11 ─┐
//!                                                        ├─ br0 in pub: tern 203.0.113.1
//!   lan2 (10.10.2.2) ── rtr2 [masquerade] 203.0.113.12 ─┘
//! ```
//!
//! [`Net::add_one_to_one_nat`] adds `srv (10.10.9.2) ── srvrtr [dnat/snat 1:1]
//! 203.0.113.20 ── br0` for a tern that is itself behind a NAT.
//!
//! [`Net::build_multihomed`]: tern's host ("hub") has one address on each side, and
//! each LAN reaches both through its own router; IPv6 is NATed (masquerade) too:
//!
//! ```text
//!   lan1 (10.10.1.2, fd00:1::2) ── rtr1 [masq] 11.0.1.1, 2001:db8:1::1 ── hub 11.0.1.10, 2001:db8:1::10
//!   lan2 (10.10.2.2, fd00:2::2) ── rtr2 [masq] 11.0.2.1, 2001:db8:2::1 ── hub 11.0.2.10, 2001:db8:2::10
//! ```
//!
//! Every address is inside namespaces the test creates; nothing reaches the host's
//! network. Use it with `mod support;` and `#[path = "support/netns.rs"] mod netns;`.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::support;

pub const TERN_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const RTR1_PUB: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);
pub const RTR2_PUB: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 12);
pub const SRVRTR_PUB: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
pub const SRV_PRIV: Ipv4Addr = Ipv4Addr::new(10, 10, 9, 2);
pub const LAN2_HOST: Ipv4Addr = Ipv4Addr::new(10, 10, 2, 2);
/// tern's TURN port (UDP and TCP) inside the topology.
pub const PORT: u16 = 3478;
/// tern's relay range: the namespaces have their own ports, so a fixed range is safe.
pub const RELAY_PORTS: (u16, u16) = (40000, 40100);
/// The multi-homed hub's addresses, one per side (see [`Net::build_multihomed`]).
pub const HUB_V4: [Ipv4Addr; 2] = [Ipv4Addr::new(11, 0, 1, 10), Ipv4Addr::new(11, 0, 2, 10)];
pub const HUB_V6: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10),
    Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x10),
];
pub const USER: &str = "alice";
pub const PASS: &str = "pw";

// ---------------------------------------------------------------------------
// Preconditions and commands.

/// Panics (never skips) when the environment cannot build namespaces.
pub fn require_netns() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        panic!(
            "this test needs root (euid is {euid}) to create network namespaces; \
             CI runs these tests as root"
        );
    }
    for tool in ["ip", "nft"] {
        let ok = Command::new(tool)
            .arg(if tool == "ip" { "-V" } else { "--version" })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "`{tool}` is not available; run scripts/install-nat-deps.sh (installs iproute2 \
             and nftables)"
        );
    }
    run(&["ip", "netns", "list"]);
}

/// Runs a command to completion within 20 s; panics with its output on failure.
pub fn run(args: &[&str]) -> String {
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..]);
    let out = support::run_with_timeout(&mut cmd, Duration::from_secs(20));
    assert!(out.success(), "command {args:?} failed\n{}", out.describe());
    out.stdout
}

/// `ip netns exec NS PROGRAM`: a command that runs `program` inside `ns`.
pub fn exec_in(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(program);
    cmd
}

// ---------------------------------------------------------------------------
// Namespaces.

/// Namespaces created by this test run; all deleted on drop (even on panic), after
/// killing whatever still runs inside them (only our own processes live there).
pub struct Namespaces {
    prefix: String,
    names: Vec<String>,
}

impl Namespaces {
    /// `tag` keeps the names of tests running at once apart (with the process id).
    pub fn new(tag: &str) -> Self {
        Self {
            prefix: format!("tnat{tag}-{}", std::process::id()),
            names: Vec::new(),
        }
    }

    /// Creates namespace `role` (unique name returned) with loopback up.
    pub fn add(&mut self, role: &str) -> String {
        let name = format!("{}-{role}", self.prefix);
        // A leftover from a crashed run of the same pid would make `add` fail.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        run(&["ip", "netns", "add", &name]);
        self.names.push(name.clone());
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        for key in [
            "net.ipv4.conf.all.rp_filter",
            "net.ipv4.conf.default.rp_filter",
        ] {
            run(&[
                "ip",
                "netns",
                "exec",
                &name,
                "sysctl",
                "-qw",
                &format!("{key}=0"),
            ]);
        }
        name
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in self.names.iter().rev() {
            if let Ok(o) = Command::new("ip").args(["netns", "pids", name]).output() {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        // SAFETY: plain kill(2) on a pid inside our own namespace.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
            let _ = Command::new("ip")
                .args(["netns", "del", name])
                .stderr(Stdio::null())
                .status();
        }
    }
}

// ---------------------------------------------------------------------------
// Topology building.

/// A veth pair from `a_ns`/`a_if` to `b_ns`/`b_if`, created directly inside the
/// namespaces (nothing appears in the host namespace), both ends up.
fn veth(a_ns: &str, a_if: &str, b_ns: &str, b_if: &str) {
    run(&[
        "ip", "link", "add", "name", a_if, "netns", a_ns, "type", "veth", "peer", "name", b_if,
        "netns", b_ns,
    ]);
    run(&["ip", "-n", a_ns, "link", "set", a_if, "up"]);
    run(&["ip", "-n", b_ns, "link", "set", b_if, "up"]);
}

fn addr(ns: &str, ifname: &str, cidr: &str) {
    run(&["ip", "-n", ns, "addr", "add", cidr, "dev", ifname]);
}

fn default_route(ns: &str, via: &str) {
    run(&["ip", "-n", ns, "route", "add", "default", "via", via]);
}

fn nft(ns: &str, rule: &str) {
    run(&["ip", "netns", "exec", ns, "nft", rule]);
}

fn enable_forwarding(ns: &str) {
    run(&[
        "ip",
        "netns",
        "exec",
        ns,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]);
    run(&[
        "ip",
        "netns",
        "exec",
        ns,
        "sysctl",
        "-qw",
        "net.ipv6.conf.all.forwarding=1",
    ]);
}

fn addr6(ns: &str, ifname: &str, cidr: &str) {
    // nodad: usable at once, not after duplicate address detection.
    run(&[
        "ip", "-n", ns, "-6", "addr", "add", cidr, "dev", ifname, "nodad",
    ]);
}

/// rtrI and lanI: lanI (10.10.I.2, fd00:I::2) behind rtrI, which masquerades both
/// families out of its "wan" end; "wan" is linked to `up_if` in `up_ns`, both up and
/// unaddressed. Returns (rtr, lan).
fn add_nat_lan(ns: &mut Namespaces, i: u8, up_ns: &str, up_if: &str) -> (String, String) {
    let rtr = ns.add(&format!("rtr{i}"));
    let lan = ns.add(&format!("lan{i}"));
    veth(&rtr, "wan", up_ns, up_if);
    veth(&rtr, "lan", &lan, "eth0");
    addr(&rtr, "lan", &format!("10.10.{i}.1/24"));
    addr(&lan, "eth0", &format!("10.10.{i}.2/24"));
    addr6(&rtr, "lan", &format!("fd00:{i}::1/64"));
    addr6(&lan, "eth0", &format!("fd00:{i}::2/64"));
    default_route(&lan, &format!("10.10.{i}.1"));
    run(&[
        "ip",
        "-n",
        &lan,
        "-6",
        "route",
        "add",
        "default",
        "via",
        &format!("fd00:{i}::1"),
    ]);
    enable_forwarding(&rtr);
    for family in ["ip", "ip6"] {
        nft(&rtr, &format!("add table {family} nat"));
        nft(
            &rtr,
            &format!("add chain {family} nat post {{ type nat hook postrouting priority 100 ; }}"),
        );
        nft(
            &rtr,
            &format!("add rule {family} nat post oifname \"wan\" masquerade"),
        );
    }
    (rtr, lan)
}

/// The shared pieces: pub (bridge br0, or the multi-homed hub), rtr1/rtr2
/// masquerading for lan1/lan2.
pub struct Net {
    pub ns: Namespaces,
    pub pub_ns: String,
    pub lan1: String,
    pub lan2: String,
    pub rtr1: String,
    pub rtr2: String,
    /// The routers' public addresses: what the server sees as lan1's and lan2's
    /// clients (IPv4, and IPv6 where the topology has it).
    pub rtr_pub: [Vec<IpAddr>; 2],
}

impl Net {
    /// The base topology; with `tern_on_bridge`, pub itself has TERN_IP on br0.
    pub fn build(tag: &str, tern_on_bridge: bool) -> Self {
        let mut ns = Namespaces::new(tag);
        let pub_ns = ns.add("pub");
        run(&["ip", "-n", &pub_ns, "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "-n", &pub_ns, "link", "set", "br0", "up"]);
        if tern_on_bridge {
            addr(&pub_ns, "br0", &format!("{TERN_IP}/24"));
        }
        let routers = [(1u8, RTR1_PUB), (2, RTR2_PUB)].map(|(i, rtr_pub)| {
            let port = format!("p{i}");
            let (rtr, lan) = add_nat_lan(&mut ns, i, &pub_ns, &port);
            run(&["ip", "-n", &pub_ns, "link", "set", &port, "master", "br0"]);
            addr(&rtr, "wan", &format!("{rtr_pub}/24"));
            (rtr, lan)
        });
        Self::from_parts(
            ns,
            pub_ns,
            routers,
            [RTR1_PUB, RTR2_PUB].map(|ip| vec![ip.into()]),
        )
    }

    /// The multi-homed topology: tern's host "hub" (`pub_ns`) with HUB_V4[i] and
    /// HUB_V6[i] on its link to rtrI, whose default routes point at the hub. Both LANs
    /// can reach both hub addresses, through their own router only.
    pub fn build_multihomed(tag: &str) -> Self {
        let mut ns = Namespaces::new(tag);
        let hub = ns.add("hub");
        let mut rtr_pub = [Vec::new(), Vec::new()];
        let routers = [1u8, 2].map(|i| {
            let side = usize::from(i - 1);
            let hub_if = format!("side{i}");
            let (rtr, lan) = add_nat_lan(&mut ns, i, &hub, &hub_if);
            let rtr_v4 = Ipv4Addr::new(11, 0, i, 1);
            let rtr_v6 = Ipv6Addr::new(0x2001, 0xdb8, u16::from(i), 0, 0, 0, 0, 1);
            addr(&hub, &hub_if, &format!("{}/24", HUB_V4[side]));
            addr6(&hub, &hub_if, &format!("{}/64", HUB_V6[side]));
            addr(&rtr, "wan", &format!("{rtr_v4}/24"));
            addr6(&rtr, "wan", &format!("{rtr_v6}/64"));
            default_route(&rtr, &HUB_V4[side].to_string());
            run(&[
                "ip",
                "-n",
                &rtr,
                "-6",
                "route",
                "add",
                "default",
                "via",
                &HUB_V6[side].to_string(),
            ]);
            rtr_pub[side] = vec![rtr_v4.into(), rtr_v6.into()];
            (rtr, lan)
        });
        Self::from_parts(ns, hub, routers, rtr_pub)
    }

    fn from_parts(
        ns: Namespaces,
        pub_ns: String,
        routers: [(String, String); 2],
        rtr_pub: [Vec<IpAddr>; 2],
    ) -> Self {
        let [(rtr1, lan1), (rtr2, lan2)] = routers;
        Self {
            ns,
            pub_ns,
            lan1,
            lan2,
            rtr1,
            rtr2,
            rtr_pub,
        }
    }

    /// Adds srv (tern's host, 10.10.9.2) behind srvrtr doing 1:1 NAT to 203.0.113.20,
    /// hairpin included. Returns the srv namespace.
    pub fn add_one_to_one_nat(&mut self) -> String {
        let srvrtr = self.ns.add("srvrtr");
        let srv = self.ns.add("srv");
        veth(&srvrtr, "wan", &self.pub_ns, "p9");
        run(&[
            "ip",
            "-n",
            &self.pub_ns,
            "link",
            "set",
            "p9",
            "master",
            "br0",
        ]);
        addr(&srvrtr, "wan", &format!("{SRVRTR_PUB}/24"));
        veth(&srvrtr, "lan", &srv, "eth0");
        addr(&srvrtr, "lan", "10.10.9.1/24");
        addr(&srv, "eth0", &format!("{SRV_PRIV}/24"));
        default_route(&srv, "10.10.9.1");
        enable_forwarding(&srvrtr);
        nft(&srvrtr, "add table ip nat");
        nft(
            &srvrtr,
            "add chain ip nat pre { type nat hook prerouting priority -100 ; }",
        );
        nft(
            &srvrtr,
            "add chain ip nat post { type nat hook postrouting priority 100 ; }",
        );
        nft(
            &srvrtr,
            &format!("add rule ip nat pre ip daddr {SRVRTR_PUB} dnat to {SRV_PRIV}"),
        );
        // Outbound and hairpin (srv → its own public address → srv) leave as the public IP.
        nft(
            &srvrtr,
            &format!("add rule ip nat post ip saddr {SRV_PRIV} snat to {SRVRTR_PUB}"),
        );
        srv
    }
}

// ---------------------------------------------------------------------------
// tern inside the topology.

/// `tern serve` inside `ns` on `listen`:PORT (UDP and TCP), relaying from `listen`
/// on RELAY_PORTS, user USER:PASS, then `extra`. Without `listen`, the built-in
/// listeners (the wildcard addresses of both families) and relay IPs found on the
/// host's interfaces.
pub fn tern_serve(ns: &str, listen: Option<Ipv4Addr>, extra: &[String]) -> Command {
    let mut cmd = exec_in(ns, env!("CARGO_BIN_EXE_tern"));
    cmd.arg("serve");
    if let Some(listen) = listen {
        cmd.args(["--listen", &format!("{listen}:{PORT}")])
            .args(["--relay-ip", &listen.to_string()]);
    }
    cmd.args(["--user", &format!("{USER}:{PASS}")])
        .args(["--ports", &format!("{}-{}", RELAY_PORTS.0, RELAY_PORTS.1)])
        .args(["--workers", "2"])
        .args(extra)
        .env_remove("TERN_SECRET")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    cmd
}

/// The mapped address `tern stun` reports from inside `ns`.
pub fn stun_from(ns: &str, server: SocketAddr) -> Result<SocketAddr, String> {
    let mut cmd = exec_in(ns, env!("CARGO_BIN_EXE_tern"));
    cmd.arg("stun").arg(server.to_string()).arg("--json");
    let out = support::run_with_timeout(&mut cmd, Duration::from_secs(10));
    if !out.success() {
        return Err(format!("tern stun {server} from {ns}:\n{}", out.describe()));
    }
    let json: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .map_err(|e| format!("tern stun --json ({e}):\n{}", out.describe()))?;
    json["mapped"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no mapped address:\n{}", out.describe()))
}

/// Waits (at most `timeout`) until tern answers a Binding from inside `ns`. `alive`
/// is called between attempts; returning `Err` aborts (e.g. tern exited).
pub fn wait_stun_from(
    ns: &str,
    server: SocketAddr,
    timeout: Duration,
    mut alive: impl FnMut() -> Result<(), String>,
) -> Result<SocketAddr, String> {
    let deadline = Instant::now() + timeout;
    loop {
        alive()?;
        match stun_from(ns, server) {
            Ok(mapped) => return Ok(mapped),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
}
