//! A browser redirected across a fleet: two tern nodes on the "public" segment of a
//! namespace topology (non-loopback addresses: Chromium refuses to follow a redirect
//! to loopback) sharing a Redis, node b draining. Headless Chromium behind a NAT is
//! given only node b's URL; b answers its Allocates with 300 Try Alternate, Chromium
//! follows to node a, and its relay-only call goes through a's relay addresses.
//!
//! Needs root (network namespaces), Chromium, playwright-core and redis-server; the
//! test command installs them, and a missing one fails the test with the reason.

mod support;

#[path = "support/chromium.rs"]
mod chromium;

#[path = "support/netns.rs"]
mod netns;

use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::{BackgroundProcess, TempDir, ensure_tool, run_with_timeout};

/// The second node's address on the public segment (the first is netns::TERN_IP).
const NODE_B_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const REDIS_PORT: u16 = 6399;
const ADMIN_B: &str = "127.0.0.1:9642";
const TOKEN: &str = "fleet-browser-token";

/// `tern serve` for node `id` inside `ns`, on `ip`, its own relay ports, the fleet's
/// Redis on the namespace's loopback.
fn node(
    ns: &str,
    id: &str,
    ip: Ipv4Addr,
    ports: &str,
    admin: &str,
    dir: &TempDir,
) -> BackgroundProcess {
    let config = dir.join(&format!("{id}.toml"));
    std::fs::write(
        &config,
        format!("[cluster]\nredis_url = \"redis://127.0.0.1:{REDIS_PORT}/\"\nnode_id = \"{id}\"\n"),
    )
    .unwrap();
    let mut cmd = netns::exec_in(ns, env!("CARGO_BIN_EXE_tern"));
    cmd.arg("serve")
        .args(["--config", config.to_str().unwrap()])
        .args(["--listen", &format!("{ip}:{}", netns::PORT)])
        .args(["--relay-ip", &ip.to_string(), "--ports", ports])
        .args(["--user", &format!("{}:{}", netns::USER, netns::PASS)])
        .args(["--admin", admin, "--admin-token", TOKEN])
        .env_remove("TERN_SECRET")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    BackgroundProcess::spawn(&format!("tern-{id}"), &mut cmd, dir.path())
}

#[test]
fn chromium_follows_a_draining_node_to_a_live_one() {
    netns::require_netns();
    let node_js = chromium::require_browser_deps();
    let redis_server = ensure_tool("redis-server");
    let net = netns::Net::build("fleet", true);
    let pub_ns = &net.pub_ns;
    netns::run(&[
        "ip",
        "-n",
        pub_ns,
        "addr",
        "add",
        &format!("{NODE_B_IP}/24"),
        "dev",
        "br0",
    ]);
    let dir = TempDir::new("fleet-browser");

    let mut redis_cmd = netns::exec_in(pub_ns, redis_server);
    redis_cmd
        .args(["--port", &REDIS_PORT.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdin(Stdio::null());
    let _redis = BackgroundProcess::spawn("redis", &mut redis_cmd, dir.path());
    std::thread::sleep(Duration::from_millis(300));
    let a = node(
        pub_ns,
        "a",
        netns::TERN_IP,
        "40000-40100",
        "127.0.0.1:9641",
        &dir,
    );
    let b = node(pub_ns, "b", NODE_B_IP, "40200-40300", ADMIN_B, &dir);
    for ip in [netns::TERN_IP, NODE_B_IP] {
        let server = SocketAddr::from((ip, netns::PORT));
        netns::wait_stun_from(&net.lan1, server, Duration::from_secs(10), || Ok(()))
            .unwrap_or_else(|e| panic!("{ip}: {e}\n{}\n{}", a.logs(), b.logs()));
    }
    let mut drain = netns::exec_in(pub_ns, env!("CARGO_BIN_EXE_tern"));
    drain.args(["drain", "on", "--admin", ADMIN_B, "--token", TOKEN]);
    let out = run_with_timeout(&mut drain, Duration::from_secs(10));
    assert!(out.success(), "{}", out.describe());
    // Two heartbeats: b knows a is live and takes clients.
    std::thread::sleep(Duration::from_millis(2500));

    let started = Instant::now();
    let mut driver = chromium::driver_in(&net.lan1, &node_js, "run.mjs");
    driver
        .args([&NODE_B_IP.to_string(), &netns::PORT.to_string(), "0"])
        .args([netns::USER, netns::PASS, "--runs", "udp"]);
    let out = run_with_timeout(&mut driver, Duration::from_secs(90));
    let lines = chromium::json_lines(&out.stdout);
    let run: &Value = lines
        .iter()
        .find(|l| l["run"] == "udp")
        .unwrap_or_else(|| panic!("no udp run:\n{}\n{}", out.describe(), b.logs()));
    assert_eq!(
        run["pass"],
        true,
        "Chromium through b (draining) should land on a: {run:#}\n{}\n{}",
        a.logs(),
        b.logs()
    );
    // Candidates read "... udp PRIORITY IP PORT typ relay ...": a's relay ports are 400xx.
    let candidates = run["candidates"].to_string();
    assert!(
        candidates.contains(&format!(" {} 400", netns::TERN_IP)),
        "relay candidates are a's: {run:#}"
    );
    assert!(
        !candidates.contains(&format!(" {NODE_B_IP} ")),
        "none of b's: {run:#}"
    );
    assert!(!b.logs().contains("allocation created"), "{}", b.logs());
    assert!(a.logs().contains("allocation created"), "{}", a.logs());
    eprintln!(
        "Chromium redirected from b to a and relayed in {:.1?}",
        started.elapsed()
    );
}
