//! `tern load` against a running `tern serve` on loopback, as real processes: paced and
//! max-rate traffic through the built-in echo peer, setup-only runs, server sampling
//! with `--server-pid`, TCP and TLS transports, REST credentials, and a wrong password.
//!
//! Only the report's counts and shape are checked, never timings or rates beyond "> 0"
//! (server CPU figures are also bounded by the CPU time the run could have used).
//! Every run is bounded by a process timeout.

#[path = "support/certs.rs"]
mod certs;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use certs::{CertFiles, TestCert};
use serde_json::Value;
use support::{
    RunOutput, TempDir, TernServer, free_port_range, free_udp_port, relay_ports_arg, run_tern,
};

const USER: &str = "alice";
const PASS: &str = "pw";
const SECRET: &str = "load-test-secret";
/// Bound on one `tern load` run (each asks for at most a few seconds of traffic).
const RUN_TIMEOUT: Duration = Duration::from_secs(90);

/// `tern serve` with the static user, a REST secret, loopback peers and its own relay
/// ports, plus `extra` arguments; `config` as its config file.
fn start_server(config: &str, ports: &str, extra: &[String]) -> TernServer {
    let user = format!("{USER}:{PASS}");
    let mut args = vec![
        "--user".to_string(),
        user,
        "--secret".to_string(),
        SECRET.to_string(),
        "--allow-peer".to_string(),
        "127.0.0.0/8".to_string(),
        "--ports".to_string(),
        ports.to_string(),
    ];
    args.extend_from_slice(extra);
    TernServer::builder().config(config).args(&args).start()
}

fn start_plain_server() -> TernServer {
    start_server("", &relay_ports_arg(), &[])
}

/// Runs `tern load SERVER --json ARGS...`.
fn load(server: SocketAddr, args: &[&str]) -> RunOutput {
    let server = server.to_string();
    let mut all = vec!["load", server.as_str(), "--json"];
    all.extend_from_slice(args);
    run_tern(&all, RUN_TIMEOUT)
}

/// [`load`] with the static user's credentials.
fn load_as_user(server: SocketAddr, args: &[&str]) -> RunOutput {
    let mut all = vec!["--user", USER, "--pass", PASS];
    all.extend_from_slice(args);
    load(server, &all)
}

/// The JSON report of a run.
fn report(run: &RunOutput) -> Value {
    assert!(
        !run.timed_out,
        "tern load did not finish\n{}",
        run.describe()
    );
    let line = run.stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("report is not JSON ({e})\n{}", run.describe()))
}

fn count(report: &Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not a count in {report}"))
}

fn fraction(report: &Value, field: &str) -> f64 {
    report[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is not a number in {report}"))
}

/// A successful run's report, with the server's logs on failure.
fn successful_report(run: &RunOutput, server: &TernServer) -> Value {
    let report = report(run);
    assert!(
        run.success(),
        "tern load failed\n{}\n{}",
        run.describe(),
        server.logs()
    );
    report
}

#[test]
fn paced_traffic_comes_back_without_loss() {
    let server = start_plain_server();
    let run = load_as_user(
        server.addr,
        &["--allocations", "4", "--rate", "50", "--duration", "2"],
    );
    let report = successful_report(&run, &server);
    assert_eq!(count(&report, "allocations_ok"), 4, "{report}");
    assert_eq!(report["allocation_failures"], serde_json::json!({}));
    let sent = count(&report, "packets_sent");
    assert!(sent > 0, "{report}");
    assert_eq!(count(&report, "packets_received"), sent, "{report}");
    assert_eq!(count(&report, "peer_received"), sent, "{report}");
    assert_eq!(fraction(&report, "loss_to_peer"), 0.0, "{report}");
    assert_eq!(fraction(&report, "loss_to_client"), 0.0, "{report}");
    assert_eq!(count(&report, "relayed_packets"), 2 * sent, "{report}");
    assert!(report["rtt_ms"]["p50"].as_f64().is_some(), "{report}");
    // Not asked for: the server figures are null; the machine's and the client's CPU
    // are measured anyway.
    assert!(report["server_cpu_us_per_packet"].is_null(), "{report}");
    for field in ["machine_cpu_us_per_packet", "client_cpu_us_per_packet"] {
        assert!(report[field].as_f64().is_some(), "{field} in {report}");
    }
}

#[test]
fn max_rate_traffic_with_rest_credentials() {
    let server = start_plain_server();
    let run = load(
        server.addr,
        &["--secret", SECRET, "--allocations", "2", "--duration", "2"],
    );
    let report = successful_report(&run, &server);
    assert_eq!(count(&report, "allocations_ok"), 2, "{report}");
    assert!(count(&report, "packets_received") > 0, "{report}");
    assert!(fraction(&report, "relayed_pps") > 0.0, "{report}");
    assert!(report["rtt_ms"]["max"].as_f64().is_some(), "{report}");
}

#[test]
fn setup_only_sets_up_200_allocations() {
    // Room for 200 allocations of one user, and no cap on the 401 answers of the
    // challenge every allocation goes through.
    let config = "[auth]\nunauthorized_per_second = 0\n[limits]\nuser_allocations = 1000\n";
    let (min, max) = free_port_range(300);
    let server = start_server(config, &format!("{min}-{max}"), &[]);
    let run = load(
        server.addr,
        &["--secret", SECRET, "--allocations", "200", "--setup-only"],
    );
    let report = successful_report(&run, &server);
    assert_eq!(count(&report, "allocations_ok"), 200, "{report}");
    assert!(fraction(&report, "setup_rate") > 0.0, "{report}");
    assert!(report["packets_sent"].is_null(), "{report}");
}

#[test]
fn server_pid_samples_cpu_and_memory() {
    let server = start_plain_server();
    let pid = server.pid().to_string();
    let run = load_as_user(
        server.addr,
        &[
            "--allocations",
            "2",
            "--duration",
            "1",
            "--server-pid",
            &pid,
        ],
    );
    let report = successful_report(&run, &server);
    for field in [
        "server_cpu_us_per_packet",
        "server_cpu_us_per_allocation",
        "rss_delta_per_allocation_bytes",
    ] {
        assert!(report[field].as_f64().is_some(), "{field} in {report}");
    }
    // The server cannot relay packets or set up allocations without running, nor the
    // client drive them: every figure is positive, and each is a whole number of CPU
    // microseconds spread over the count it is divided by, bounded by what the run's
    // wall-clock time allows.
    let cpu_budget_us = run.elapsed.as_secs_f64()
        * 1e6
        * std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    for (field, divisor) in [
        ("server_cpu_us_per_packet", "relayed_packets"),
        ("machine_cpu_us_per_packet", "relayed_packets"),
        ("client_cpu_us_per_packet", "relayed_packets"),
        ("server_cpu_us_per_allocation", "allocations_ok"),
    ] {
        let per = fraction(&report, field);
        let total = per * count(&report, divisor) as f64;
        assert!(per.is_finite() && per > 0.0, "{field} in {report}");
        assert!(
            (total - total.round()).abs() < 1e-6 * total.max(1.0),
            "{field} times {divisor} is not whole microseconds: {report}"
        );
        assert!(
            total <= cpu_budget_us,
            "{field}: more CPU than {:?} of the run allows: {report}",
            run.elapsed
        );
    }
    for field in [
        "server_rss_kb_before",
        "server_rss_kb_after",
        "server_hwm_kb",
    ] {
        assert!(count(&report, field) > 0, "{field} in {report}");
    }
}

#[test]
fn tcp_transport_relays() {
    let server = start_plain_server();
    let run = load_as_user(
        server.addr,
        &[
            "--transport",
            "tcp",
            "--allocations",
            "3",
            "--duration",
            "1",
        ],
    );
    let report = successful_report(&run, &server);
    assert_eq!(report["transport"], "tcp", "{report}");
    assert_eq!(count(&report, "allocations_ok"), 3, "{report}");
    assert!(count(&report, "packets_received") > 0, "{report}");
    assert_eq!(count(&report, "links_failed"), 0, "{report}");
}

#[test]
fn tls_transport_relays_with_a_ca_file_or_insecure() {
    let dir = TempDir::new("tern-load-certs");
    let files = CertFiles::in_dir(dir.path());
    TestCert::new().write(&files);
    let tls = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let mut extra = vec!["--tls-listen".to_string(), tls.to_string()];
    extra.extend(files.args());
    let server = start_server("", &relay_ports_arg(), &extra);
    let ca = files.cert.display().to_string();
    for trust in [vec!["--tls-insecure"], vec!["--tls-ca", ca.as_str()]] {
        let mut args = vec![
            "--transport",
            "tls",
            "--allocations",
            "2",
            "--duration",
            "1",
        ];
        args.extend(trust);
        let run = load_as_user(tls, &args);
        let report = successful_report(&run, &server);
        assert_eq!(count(&report, "allocations_ok"), 2, "{report}");
        assert!(count(&report, "packets_received") > 0, "{report}");
    }
}

#[test]
fn wrong_password_counts_401_and_fails() {
    let server = start_plain_server();
    let run = load(
        server.addr,
        &[
            "--user",
            USER,
            "--pass",
            "not-the-password",
            "--allocations",
            "3",
            "--duration",
            "1",
        ],
    );
    let report = report(&run);
    assert!(
        !run.success(),
        "a failed setup must fail the run\n{}",
        run.describe()
    );
    assert_eq!(count(&report, "allocations_ok"), 0, "{report}");
    assert_eq!(report["allocation_failures"]["401"], 3, "{report}");
}

#[test]
fn usage_errors_exit_2() {
    let run = run_tern(
        &[
            "load",
            "127.0.0.1:3478",
            "--user",
            USER,
            "--pass",
            PASS,
            "--transport",
            "tls",
        ],
        RUN_TIMEOUT,
    );
    assert_eq!(
        run.status.and_then(|s| s.code()),
        Some(2),
        "{}",
        run.describe()
    );
    assert!(run.stderr.contains("--tls-insecure"), "{}", run.describe());
}
