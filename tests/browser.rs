//! A real browser through the relay: Debian's Chromium, driven by `playwright-core`
//! (tests/browser/run.mjs), connects two relay-only RTCPeerConnections through
//! `tern serve` over TURN/UDP, TURN/TCP and TURNS (TLS, self-signed certificate),
//! exchanges 50 data-channel messages each way, checks that the selected candidate
//! pair is a relay over the expected protocol, that a wrong password ends with an
//! error instead of hanging, and that fake-camera video gets decoded.
//!
//! Needs Chromium and the npm package: run `scripts/install-browser-deps.sh` first.
//! Missing dependencies fail the test (with that hint); they never skip it.

mod support;

#[path = "support/certs.rs"]
mod certs;
#[path = "support/chromium.rs"]
mod chromium;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::{RunOutput, TempDir, TernBuilder, TernServer};

const USER: &str = "alice";
const PASSWORD: &str = "pw";
/// The driver bounds each run itself (20 s data, 15 s wrong password, 20 s media,
/// 150 s overall); this is the outer bound.
const DRIVER_TIMEOUT: Duration = Duration::from_secs(120);

/// A tern with UDP+TCP on `.addr`, TLS on the returned port, user alice:pw and
/// the relay range from `support`. `config` is an optional TOML file.
fn start_tern(config: Option<&str>, allow_loopback: bool) -> (TernServer, u16, TempDir) {
    let cert_dir = TempDir::new("tern-browser-cert");
    let files = certs::CertFiles::in_dir(cert_dir.path());
    certs::TestCert::new().write(&files);
    let tls_port = support::free_udp_port();
    let mut args = vec![
        "--tls-listen".to_string(),
        format!("127.0.0.1:{tls_port}"),
        "--user".to_string(),
        format!("{USER}:{PASSWORD}"),
        "--ports".to_string(),
        support::relay_ports_arg(),
    ];
    args.extend(files.args());
    if allow_loopback {
        args.extend(["--allow-peer".to_string(), "127.0.0.0/8".to_string()]);
    }
    let mut builder = TernBuilder::default().args(&args);
    if let Some(toml) = config {
        builder = builder.config(toml);
    }
    (builder.start(), tls_port, cert_dir)
}

/// Runs tests/browser/run.mjs against `server` and returns its output and the JSON
/// result lines keyed by run name.
fn run_driver(
    node: &Path,
    server: &TernServer,
    tls_port: u16,
    runs: &str,
) -> (RunOutput, BTreeMap<String, Value>) {
    let mut cmd = chromium::driver(node, "run.mjs");
    cmd.arg(server.addr.ip().to_string())
        .arg(server.port().to_string())
        .arg(tls_port.to_string())
        .arg(USER)
        .arg(PASSWORD)
        .arg("--runs")
        .arg(runs);
    let out = support::run_with_timeout(&mut cmd, DRIVER_TIMEOUT);
    let results = chromium::json_lines(&out.stdout)
        .into_iter()
        .map(|v| (v["run"].as_str().unwrap_or("?").to_string(), v))
        .collect();
    (out, results)
}

fn context(out: &RunOutput, server: &TernServer) -> String {
    format!("{}\n{}", out.describe(), server.logs())
}

#[test]
fn chromium_relays_data_over_udp_tcp_tls_and_video_over_udp() {
    let node = chromium::require_browser_deps();
    let (mut server, tls_port, _certs) = start_tern(None, true);
    let (out, results) = run_driver(&node, &server, tls_port, "udp,tcp,tls,badauth,media");
    let ctx = context(&out, &server);
    assert!(!out.timed_out, "run.mjs timed out\n{ctx}");

    for (run, protocol) in [("udp", "udp"), ("tcp", "tcp"), ("tls", "tls")] {
        let r = results
            .get(run)
            .unwrap_or_else(|| panic!("no result for {run}\n{ctx}"));
        assert_eq!(r["pass"], true, "{run} failed: {r}\n{ctx}");
        for side in ["selectedA", "selectedB"] {
            let local = &r[side]["local"];
            assert_eq!(local["candidateType"], "relay", "{run} {side}: {r}");
            assert_eq!(local["relayProtocol"], protocol, "{run} {side}: {r}");
            assert_eq!(
                r[side]["remote"]["candidateType"], "relay",
                "{run} {side}: {r}"
            );
        }
        for (received, in_order) in [("receivedAB", "inOrderAB"), ("receivedBA", "inOrderBA")] {
            assert_eq!(r[received], 50, "{run} {received}: {r}");
            assert_eq!(r[in_order], true, "{run} {in_order}: {r}");
        }
        eprintln!(
            "browser {run}: data channel open after {} ms, 2x50 messages in {} ms",
            r["openMs"], r["elapsedMs"]
        );
    }

    let bad = results
        .get("badauth")
        .unwrap_or_else(|| panic!("no result for badauth\n{ctx}"));
    assert_eq!(bad["pass"], true, "wrong password: {bad}\n{ctx}");
    assert_eq!(bad["ended"], true, "wrong password did not end: {bad}");
    match bad["outcome"].as_str() {
        Some("icecandidateerror") => assert_eq!(bad["errorCode"], 401, "{bad}"),
        Some("failed") => {}
        other => panic!("wrong password ended with {other:?}: {bad}"),
    }
    eprintln!(
        "browser badauth: {} (code {}) after {} ms",
        bad["outcome"], bad["errorCode"], bad["elapsedMs"]
    );

    let media = results
        .get("media")
        .unwrap_or_else(|| panic!("no result for media\n{ctx}"));
    assert_eq!(media["pass"], true, "media: {media}\n{ctx}");
    assert!(
        media["framesDecoded"].as_u64().unwrap_or(0) > 0,
        "no frames decoded: {media}"
    );
    assert_eq!(
        media["selectedA"]["local"]["relayProtocol"], "udp",
        "{media}"
    );
    eprintln!(
        "browser media: {} frames decoded ({}), first after {} ms",
        media["framesDecoded"], media["codec"], media["firstFrameMs"]
    );

    assert!(out.success(), "run.mjs exited non-zero\n{ctx}");
    server.assert_running();
    eprintln!("browser driver total: {:?}", out.elapsed);
}

/// The same UDP run fails when the relay may not deliver: an operator `denied` entry
/// for loopback beats the own-relay-endpoint rule, so the peers' relay addresses are
/// refused (CreatePermission 403) and no data can flow. Proves the check above can fail.
#[test]
fn chromium_udp_run_fails_when_peer_policy_denies_the_relays() {
    let node = chromium::require_browser_deps();
    let (mut server, tls_port, _certs) =
        start_tern(Some("[peers]\ndenied = [\"127.0.0.0/8\"]\n"), false);
    let (out, results) = run_driver(&node, &server, tls_port, "udp");
    let ctx = context(&out, &server);
    assert!(!out.timed_out, "run.mjs timed out\n{ctx}");
    assert!(
        !out.success(),
        "run.mjs passed although relaying is denied\n{ctx}"
    );
    let r = results
        .get("udp")
        .unwrap_or_else(|| panic!("no result for udp\n{ctx}"));
    assert_eq!(r["pass"], false, "{r}");
    assert_eq!(r["ok"], false, "{r}");
    assert_ne!(r["receivedAB"], 50, "messages arrived although denied: {r}");
    // Allocation itself worked: both sides gathered a relay candidate.
    for side in ["a", "b"] {
        let cands = r["candidates"][side]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            cands
                .iter()
                .any(|c| c.as_str().unwrap_or("").contains(" typ relay ")),
            "{side} gathered no relay candidate: {r}"
        );
    }
    eprintln!(
        "browser udp with loopback denied: failed as expected after {} ms: {}",
        r["elapsedMs"], r["error"]
    );
    server.assert_running();
}
