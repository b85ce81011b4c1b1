//! `[bandwidth]` limits measured with `tern load` against a real `tern serve` on
//! loopback: what reaches the peer is within 5% of the limit (plus one burst) whatever
//! is offered above it, everything passes below it, clients under their own limits on
//! the same server lose nothing, drops are counted by limit and shown by `tern
//! sessions`, and a reload changes the limits.
//!
//! Rates are set well within what this machine relays at a few hundred packets per
//! second, so the limit, not the machine, decides. Each run is bounded by a timeout.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use support::{RunOutput, TernServer, free_udp_port, metric, relay_ports_arg, run_tern};

const TOKEN: &str = "bandwidth-admin-token";
/// Application bytes per packet in every run.
const PAYLOAD: u64 = 1000;
/// Seconds of sending in every run.
const SECS: u64 = 4;
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

struct Server {
    tern: TernServer,
    admin: SocketAddr,
}

/// `tern serve` with users alice and bob, loopback peers and `[bandwidth]` as `limits`.
fn start(limits: &str) -> Server {
    let admin = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let tern = TernServer::builder()
        .config(&config(limits))
        .args(&["--user", "alice:pw", "--user", "bob:pw"])
        .args(&["--allow-peer", "127.0.0.0/8", "--ports", &relay_ports_arg()])
        .args(&["--admin", &admin.to_string(), "--admin-token", TOKEN])
        .start();
    Server { tern, admin }
}

fn config(limits: &str) -> String {
    format!("[bandwidth]\n{limits}\n")
}

/// `tern load` as `user` with `allocations` allocations over UDP, each sending `rate`
/// packets of [`PAYLOAD`] bytes a second for [`SECS`] seconds; its JSON report.
fn load(server: &Server, user: &str, allocations: u32, rate: u32) -> Value {
    load_over(server, "udp", user, allocations, rate)
}

/// [`load`] over `transport`.
fn load_over(server: &Server, transport: &str, user: &str, allocations: u32, rate: u32) -> Value {
    let args = [
        "load".to_string(),
        server.tern.addr.to_string(),
        "--json".into(),
        "--user".into(),
        user.into(),
        "--pass".into(),
        "pw".into(),
        "--allocations".into(),
        allocations.to_string(),
        "--rate".into(),
        rate.to_string(),
        "--payload".into(),
        PAYLOAD.to_string(),
        "--duration".into(),
        SECS.to_string(),
        "--transport".into(),
        transport.into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    report(&run_tern(&args, RUN_TIMEOUT), server)
}

fn report(run: &RunOutput, server: &Server) -> Value {
    assert!(
        run.success() && !run.timed_out,
        "tern load failed\n{}\n{}",
        run.describe(),
        server.tern.logs()
    );
    let line = run.stdout.lines().last().unwrap_or_default();
    let report: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("report is not JSON ({e})\n{}", run.describe()));
    assert_eq!(
        report["allocation_failures"],
        serde_json::json!({}),
        "{report}"
    );
    report
}

fn count(report: &Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not a count in {report}"))
}

/// Application bytes that reached the peer in a run.
fn delivered(report: &Value) -> u64 {
    count(report, "peer_received") * PAYLOAD
}

/// Asserts that `bytes` is within 5% of what a limit of `rate` bytes/s with `burst`
/// lets through in [`SECS`] seconds.
fn assert_near_limit(bytes: u64, rate: u64, burst: u64, what: &str) {
    let expected = (rate * SECS + burst) as f64;
    let ratio = bytes as f64 / expected;
    println!("{what}: {bytes} bytes delivered, {expected} expected: ratio {ratio:.3}");
    assert!(
        (0.95..=1.05).contains(&ratio),
        "{what}: {bytes} bytes delivered, {expected} expected (ratio {ratio:.3})"
    );
}

fn dropped(server: &Server, limit: &str, direction: &str) -> f64 {
    let labels = format!("{{limit=\"{limit}\",direction=\"{direction}\"}}");
    metric(
        server.admin,
        &format!("tern_bandwidth_dropped_packets_total{labels}"),
    )
}

#[test]
fn an_allocation_gets_its_limit_at_every_rate_above_it_and_everything_below() {
    // 100 kB/s (800 kbit/s) with a 16 kB burst.
    let server = start("allocation = \"800 kbit/s\"\nallocation_burst = \"16 kB\"");
    let (rate, burst) = (100_000, 16_000);
    let mut dropped_before = 0.0;
    // Offered: half the limit, twice it, four times it (packets of 1000 bytes).
    for packets_per_sec in [50, 200, 400] {
        let report = load(&server, "alice", 1, packets_per_sec);
        let sent = count(&report, "packets_sent");
        let peer_received = count(&report, "peer_received");
        if u64::from(packets_per_sec) * PAYLOAD < rate {
            assert_eq!(peer_received, sent, "below the limit: {report}");
            assert_eq!(count(&report, "packets_received"), sent, "{report}");
        } else {
            let what = format!("{packets_per_sec} packets/s offered");
            assert_near_limit(delivered(&report), rate, burst, &what);
            // What came back is what the peer echoed: the client direction has a
            // bucket of its own, and the echoes fit it.
            let back = count(&report, "packets_received");
            assert!(back * 100 >= peer_received * 98, "{report}");
        }
        // Every packet not delivered was dropped by the allocation's limit, and counted.
        let dropped_now = dropped(&server, "allocation", "to_peer");
        assert_eq!(dropped_now - dropped_before, (sent - peer_received) as f64);
        dropped_before = dropped_now;
    }
    assert_eq!(dropped(&server, "user", "to_peer"), 0.0);
    assert_eq!(dropped(&server, "server", "to_peer"), 0.0);
}

#[test]
fn a_tcp_client_gets_its_limit_too() {
    let server = start("allocation = \"800 kbit/s\"\nallocation_burst = \"16 kB\"");
    let report = load_over(&server, "tcp", "alice", 1, 400);
    assert_near_limit(delivered(&report), 100_000, 16_000, "over TCP");
    assert!(dropped(&server, "allocation", "to_peer") > 0.0);
}

#[test]
fn a_user_over_its_limit_leaves_another_user_untouched_and_shows_its_drops() {
    // alice sends 4x her user limit over two allocations; bob, under his, loses nothing.
    let server = start("user = \"800 kbit/s\"\nuser_burst = \"16 kB\"");
    let alice = std::thread::scope(|scope| {
        let alice = scope.spawn(|| load(&server, "alice", 2, 200));
        // Halfway through alice's run, her sessions show what the limit drops.
        std::thread::sleep(Duration::from_secs(1 + SECS / 2));
        let sessions = run_tern(
            &[
                "sessions",
                "--admin",
                &server.admin.to_string(),
                "--token",
                TOKEN,
            ],
            RUN_TIMEOUT,
        );
        assert!(sessions.success(), "{}", sessions.describe());
        assert!(sessions.stdout.contains("DROP PEER"), "{}", sessions.stdout);
        let alice_drops: Vec<u64> = sessions
            .stdout
            .lines()
            .filter(|line| line.contains(" alice "))
            .map(|line| {
                let columns: Vec<&str> = line.split_whitespace().collect();
                columns[columns.len() - 2]
                    .parse()
                    .expect("DROP PEER is a count")
            })
            .collect();
        assert_eq!(alice_drops.len(), 2, "{}", sessions.stdout);
        assert!(alice_drops.iter().sum::<u64>() > 0, "{}", sessions.stdout);

        let bob = load(&server, "bob", 1, 50);
        let sent = count(&bob, "packets_sent");
        assert_eq!(
            count(&bob, "peer_received"),
            sent,
            "bob lost packets: {bob}"
        );
        assert_eq!(
            count(&bob, "packets_received"),
            sent,
            "bob lost echoes: {bob}"
        );
        alice.join().expect("alice's run")
    });
    assert_near_limit(
        delivered(&alice),
        100_000,
        16_000,
        "alice's two allocations",
    );
    assert!(dropped(&server, "user", "to_peer") > 0.0);
    assert_eq!(dropped(&server, "allocation", "to_peer"), 0.0);
}

#[test]
fn the_server_limit_holds_for_everyone_together() {
    let server = start("server = \"1600 kbit/s\"\nserver_burst = \"16 kB\"");
    // Two users, 150 kB/s each, against 200 kB/s for the server.
    let (alice, bob) = std::thread::scope(|scope| {
        let alice = scope.spawn(|| load(&server, "alice", 1, 150));
        let bob = load(&server, "bob", 1, 150);
        (alice.join().expect("alice's run"), bob)
    });
    let total = delivered(&alice) + delivered(&bob);
    // The two runs start a few milliseconds apart: within 5% of the limit all the same.
    assert_near_limit(total, 200_000, 16_000, "both users together");
    assert!(dropped(&server, "server", "to_peer") > 0.0);
}

#[test]
fn a_reload_changes_the_limits_and_an_empty_section_lifts_them() {
    let server = start("allocation = \"800 kbit/s\"\nallocation_burst = \"16 kB\"");
    let report = load(&server, "alice", 1, 400);
    assert_near_limit(delivered(&report), 100_000, 16_000, "before the reload");

    let path = server.tern.dir.join("tern.toml");
    std::fs::write(
        &path,
        config("allocation = 200000\nallocation_burst = 16000"),
    )
    .unwrap();
    server.tern.reload();
    let report = load(&server, "alice", 1, 400);
    assert_near_limit(delivered(&report), 200_000, 16_000, "after raising it");

    std::fs::write(&path, config("")).unwrap();
    server.tern.reload();
    let before = dropped(&server, "allocation", "to_peer");
    let report = load(&server, "alice", 1, 400);
    let sent = count(&report, "packets_sent");
    assert_eq!(count(&report, "peer_received"), sent, "{report}");
    assert_eq!(dropped(&server, "allocation", "to_peer"), before);
}

#[test]
fn a_bad_limit_is_refused_with_its_key_and_line() {
    let dir = support::TempDir::new("bandwidth-config");
    let path = dir.write(
        "tern.toml",
        "[bandwidth]\nallocation = \"2 Mbit/s\"\nuser = \"lots\"\n",
    );
    let run = run_tern(&["check-config", path.to_str().unwrap()], RUN_TIMEOUT);
    assert!(!run.success(), "{}", run.describe());
    let text = run.combined();
    // The parser's message quotes the line with its key, and says what is expected.
    assert!(text.contains("line 3"), "{text}");
    assert!(text.contains("user = \"lots\""), "{text}");
    assert!(text.contains("expected a rate such as"), "{text}");
}
