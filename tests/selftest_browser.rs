//! The self-test pages (`/check`, `/call`) in headless Chromium against a real
//! `tern serve`, through tests/browser/check.mjs and call.mjs:
//!
//! - `/check` on loopback (HTTPS, self-signed) relays over UDP, TCP and TLS and its
//!   loopback call decodes video. With an advertised relay address nothing listens on
//!   (`--external-ip 127.0.0.9`; plain HTTP, no certificate, so no TLS) it fails and
//!   blames relay.external_ips. A wrong token gets 403 for both pages.
//! - `/call` in two browsers in two NATed network namespaces (tests/support/netns.rs),
//!   over HTTPS, through tern's own signaling: both decode video over a relay pair, a
//!   third joiner hears "room full", a wrong token gets 403, and hanging up sends the
//!   other side back to waiting.
//! - `/call` in two browsers on either side of a multi-homed tern host, each using the
//!   host's far address through the built-in wildcard listeners, TURN over UDP only: the
//!   call connects only if tern answers each from the address it used.
//!
//! Needs Chromium and playwright-core (`scripts/install-browser-deps.sh`); the call test
//! also needs root for the namespaces. Missing pieces fail the test with the reason.

mod support;

#[path = "support/certs.rs"]
mod certs;
#[path = "support/chromium.rs"]
mod chromium;
#[path = "support/netns.rs"]
mod netns;

use std::fs;
use std::net::{Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{BackgroundProcess, RunOutput, TempDir, TernBuilder, TernServer};

/// The link token (URL-safe, at least 16 characters, as the config requires).
const TOKEN: &str = "selftest-token-0123456789";
/// check.mjs bounds itself at 90 s (the page at 10 s per transport plus 20 s for the call).
const CHECK_TIMEOUT: Duration = Duration::from_secs(100);
/// call.mjs bounds itself at 180 s; a joiner that is refused ends within seconds.
const CALL_TIMEOUT: Duration = Duration::from_secs(190);
/// How long two browsers in the namespaces get to be in a call with decoded video.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// The HTTPS port of the self-test listener inside the namespace topology.
const SELFTEST_PORT: u16 = 8443;
const TLS_PORT: u16 = 5349;

// ---------------------------------------------------------------------------
// /check on loopback.

/// A tern on loopback with TURN over UDP and TCP (`.addr`) and the self-test pages at
/// `pages`. With `tls`, TURN over TLS too, and the pages on HTTPS with the same
/// certificate (tern serves them over TLS whenever it has one); without, plain HTTP
/// (allowed on loopback only).
struct SelftestTern {
    server: TernServer,
    pages: SocketAddr,
    scheme: &'static str,
    _certs: TempDir,
}

impl SelftestTern {
    fn start(tls: bool, extra: &[&str]) -> Self {
        let certs_dir = TempDir::new("tern-selftest-cert");
        let pages = SocketAddr::from(([127, 0, 0, 1], support::free_udp_port()));
        let mut args = vec!["--ports".to_string(), support::relay_ports_arg()];
        let mut config = selftest_config(pages);
        if tls {
            args.extend([
                "--tls-listen".to_string(),
                format!("127.0.0.1:{}", support::free_udp_port()),
            ]);
            config.push_str(&tls_config(certs_dir.path()));
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let server = TernBuilder::default().config(&config).args(&args).start();
        wait_for_listener(pages);
        Self {
            server,
            pages,
            scheme: if tls { "https" } else { "http" },
            _certs: certs_dir,
        }
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("{}://{}{path_and_query}", self.scheme, self.pages)
    }
}

fn selftest_config(listen: SocketAddr) -> String {
    format!("[selftest]\nlisten = \"{listen}\"\ntoken = \"{TOKEN}\"\n")
}

/// A fresh test certificate in `dir`, as a `[tls]` section. In the file rather than as
/// `--cert/--key`: the file's own check (a self-test listener off loopback needs
/// HTTPS) runs before flags apply.
fn tls_config(dir: &Path) -> String {
    let files = certs::CertFiles::in_dir(dir);
    certs::TestCert::new().write(&files);
    format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        files.cert.display(),
        files.key.display()
    )
}

/// The listener comes up with the TURN listeners; give it a bounded moment anyway.
fn wait_for_listener(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the self-test listener {addr} did not accept connections within 10 s"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Runs check.mjs on `url`: its output and its one JSON line.
fn run_check(node: &Path, url: &str) -> (RunOutput, Value) {
    let mut cmd = chromium::driver(node, "check.mjs");
    cmd.arg(url);
    let out = support::run_with_timeout(&mut cmd, CHECK_TIMEOUT);
    let line = chromium::json_lines(&out.stdout)
        .pop()
        .unwrap_or_else(|| panic!("check.mjs printed no result\n{}", out.describe()));
    (out, line)
}

/// The page's result after a 200, or a panic with everything known.
fn check_result(node: &Path, tern: &mut SelftestTern) -> Value {
    let (out, line) = run_check(node, &tern.url(&format!("/check?token={TOKEN}")));
    let ctx = format!("{}\n{}", out.describe(), tern.server.logs());
    assert!(out.success(), "check.mjs failed\n{ctx}");
    assert_eq!(line["status"], 200, "GET /check\n{ctx}");
    assert_eq!(
        line["result"]["done"], true,
        "the page did not finish\n{ctx}"
    );
    tern.server.assert_running();
    eprintln!(
        "check.mjs (chromium {}): {:.1?}",
        line["chromium"], out.elapsed
    );
    line["result"].clone()
}

#[test]
fn check_page_relays_over_udp_tcp_tls_and_calls_itself() {
    let node = chromium::require_browser_deps();
    let mut tern = SelftestTern::start(true, &[]);
    let r = check_result(&node, &mut tern);

    assert_eq!(r["verdict"], "ok", "{r:#}");
    assert_eq!(r["verdictAttribute"], "ok", "#verdict data-verdict: {r:#}");
    for transport in ["udp", "tcp", "tls"] {
        let t = &r["transports"][transport];
        assert_eq!(t["ok"], true, "{transport}: {r:#}");
        let relay: SocketAddr = t["relay"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{transport}: no relay address: {r:#}"));
        assert_eq!(relay.ip(), tern.server.addr.ip(), "{transport}: {r:#}");
        eprintln!("check {transport}: relay {relay} after {} ms", t["ms"]);
    }
    let call = &r["call"];
    assert_eq!(call["ok"], true, "{r:#}");
    assert!(
        call["framesDecoded"].as_u64().unwrap_or(0) > 0,
        "no video frames decoded: {r:#}"
    );
    assert_eq!(call["pair"]["local"], "relay", "{r:#}");
    assert_eq!(call["pair"]["remote"], "relay", "{r:#}");
    assert!(call["bytes"]["received"].as_u64().unwrap_or(0) > 0, "{r:#}");
    eprintln!(
        "check call: data round trip {} ms, {} frames decoded, pair {}",
        call["rttMs"], call["framesDecoded"], call["pair"]
    );
}

/// Relay candidates name 127.0.0.9, where nothing listens: every transport gathers a
/// relay, but no call can get through, and the page says why. Without a certificate:
/// the pages on plain HTTP, and no TLS transport offered or tried.
#[test]
fn check_page_blames_external_ip_when_the_relay_address_is_unreachable() {
    let node = chromium::require_browser_deps();
    let mut tern = SelftestTern::start(false, &["--external-ip", "127.0.0.9"]);
    let r = check_result(&node, &mut tern);

    assert_eq!(r["verdict"], "fail", "{r:#}");
    assert_eq!(
        r["verdictAttribute"], "fail",
        "#verdict data-verdict: {r:#}"
    );
    assert!(
        r["transports"]["tls"].is_null(),
        "TLS tried without a listener: {r:#}"
    );
    for transport in ["udp", "tcp"] {
        let relay = r["transports"][transport]["relay"].as_str().unwrap_or("");
        assert!(
            relay.starts_with("127.0.0.9:"),
            "{transport} relay {relay:?}: {r:#}"
        );
    }
    assert_eq!(r["call"]["ok"], false, "{r:#}");
    let cause = r["cause"].as_str().unwrap_or("");
    for words in ["external_ip", "127.0.0.9", "not reachable"] {
        assert!(cause.contains(words), "cause lacks {words:?}: {cause}");
    }
    eprintln!("check with a wrong external IP: {cause}");
}

/// The browser's own request for either page is refused (every API answer to a wrong
/// token is checked in tests/selftest.rs).
#[test]
fn a_wrong_token_gets_403_for_both_pages_in_the_browser() {
    let node = chromium::require_browser_deps();
    let mut tern = SelftestTern::start(false, &[]);
    for path in ["/check?token=wrong", "/check"] {
        let (out, line) = run_check(&node, &tern.url(path));
        assert!(out.success(), "{}", out.describe());
        assert_eq!(line["status"], 403, "GET {path}: {line}");
        assert!(line["result"].is_null(), "{line}");
    }
    let line = call_once(
        chromium::driver(&node, "call.mjs"),
        &tern.url("/call?room=r&token=wrong"),
    );
    assert_eq!(line["phase"], "loaded", "{line}");
    assert_eq!(line["status"], 403, "{line}");
    tern.server.assert_running();
}

// ---------------------------------------------------------------------------
// /call between two NATed networks.

/// A call.mjs run in the background, its JSON lines read from its stdout file.
struct Joiner {
    process: BackgroundProcess,
}

impl Joiner {
    fn spawn(name: &str, ns: &str, node: &Path, url: &str, extra: &[&str], dir: &Path) -> Self {
        let mut cmd = chromium::driver_in(ns, node, "call.mjs");
        cmd.arg(url).args(extra);
        Self {
            process: BackgroundProcess::spawn(name, &mut cmd, dir),
        }
    }

    fn lines(&self) -> Vec<Value> {
        chromium::json_lines(&self.process.stdout())
    }

    /// The line of `phase`, once printed; None while the driver is still at it.
    fn phase(&self, phase: &str) -> Option<Value> {
        self.lines().into_iter().find(|l| l["phase"] == phase)
    }

    /// The first line it printed (joined or refused), waiting at most until `deadline`.
    fn first_line(&mut self, deadline: Instant) -> Value {
        loop {
            if let Some(line) = self.lines().into_iter().next() {
                return line;
            }
            let exited = self.process.try_exit_status();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "call.mjs printed nothing ({exited:?})\n{}",
                self.process.logs()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (bounded) for the driver to end; true when it exited 0.
    fn finish(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.process.try_exit_status() {
                return status.success();
            }
            if Instant::now() >= deadline {
                self.process.stop();
                return false;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A call.mjs `cmd` run to completion on `url` (a joiner that is refused): its one
/// JSON line.
fn call_once(mut cmd: Command, url: &str) -> Value {
    cmd.arg(url);
    let out = support::run_with_timeout(&mut cmd, CALL_TIMEOUT);
    assert!(out.success(), "call.mjs {url}\n{}", out.describe());
    chromium::json_lines(&out.stdout)
        .pop()
        .unwrap_or_else(|| panic!("call.mjs printed no result\n{}", out.describe()))
}

/// Asserts a joined call: video decoded over a relay↔relay pair.
fn assert_in_call(who: &str, line: &Value, media: &str) {
    let state = &line["state"];
    assert_eq!(line["phase"], "connected", "{who}: {line:#}");
    assert_eq!(state["connected"], true, "{who}: {line:#}");
    assert_eq!(state["media"], media, "{who}: {line:#}");
    assert!(
        state["framesDecoded"].as_u64().unwrap_or(0) > 0,
        "{who}: no frames decoded: {line:#}"
    );
    assert_eq!(state["pair"]["local"], "relay", "{who}: {line:#}");
    assert_eq!(state["pair"]["remote"], "relay", "{who}: {line:#}");
    let via = state["pair"]["relayProtocol"].as_str().unwrap_or("");
    assert!(
        ["udp", "tcp", "tls"].contains(&via),
        "{who}: relayProtocol {via:?}"
    );
    eprintln!(
        "{who} ({}): {} frames decoded, pair {}",
        state["role"], state["framesDecoded"], state["pair"]
    );
}

fn logs(processes: &[&BackgroundProcess]) -> String {
    processes
        .iter()
        .map(|p| p.logs())
        .collect::<Vec<_>>()
        .join("\n")
}

/// tern in pub with TURN over UDP, TCP and TLS, and the self-test on HTTPS.
fn start_tern_in(net: &netns::Net, dir: &TempDir) -> BackgroundProcess {
    let config = dir.join("selftest.toml");
    let listen = SocketAddr::from((netns::TERN_IP, SELFTEST_PORT));
    let toml = selftest_config(listen) + &tls_config(dir.path());
    fs::write(&config, toml).expect("writing the config");
    let extra = [
        "--config".to_string(),
        config.display().to_string(),
        "--tls-listen".to_string(),
        format!("{}:{TLS_PORT}", netns::TERN_IP),
    ];
    let mut cmd = netns::tern_serve(&net.pub_ns, Some(netns::TERN_IP), &extra);
    BackgroundProcess::spawn("tern", &mut cmd, dir.path())
}

/// Waits until tern answers a Binding from `ns` at `turn`, or panics with its logs.
fn wait_turn_from(ns: &str, turn: SocketAddr, tern: &mut BackgroundProcess) {
    netns::wait_stun_from(ns, turn, Duration::from_secs(15), || {
        match tern.try_exit_status() {
            Some(status) => Err(format!("tern exited with {status}\n{}", tern.logs())),
            None => Ok(()),
        }
    })
    .unwrap_or_else(|e| panic!("tern is not reachable from {ns}: {e}"));
}

#[test]
fn two_browsers_behind_nats_call_through_tern_signaling() {
    netns::require_netns();
    let node = chromium::require_browser_deps();
    let net = netns::Net::build("sc", true);
    let dir = TempDir::new("tern-selftest-call");
    let mut tern = start_tern_in(&net, &dir);
    let turn = SocketAddr::from((netns::TERN_IP, netns::PORT));
    wait_turn_from(&net.lan1, turn, &mut tern);

    let base = format!("https://{}:{SELFTEST_PORT}/call", netns::TERN_IP);
    let room = format!("{base}?room=nat-call&token={TOKEN}");
    let release: PathBuf = dir.join("release");
    let release_arg = release.display().to_string();
    let started = Instant::now();
    // a uses the fake camera, b the generated test pattern; a waits for b to leave.
    let mut a = Joiner::spawn(
        "call-a",
        &net.lan1,
        &node,
        &room,
        &["--hold", &release_arg, "--then", "peer-left"],
        dir.path(),
    );
    let mut b = Joiner::spawn(
        "call-b",
        &net.lan2,
        &node,
        &format!("{room}&media=pattern"),
        &["--hold", &release_arg, "--then", "hangup"],
        dir.path(),
    );
    let deadline = started + JOIN_TIMEOUT;
    let joined_a = a.first_line(deadline);
    let joined_b = b.first_line(deadline);
    assert_in_call("a", &joined_a, "camera");
    assert_in_call("b", &joined_b, "pattern");
    let roles = [&joined_a, &joined_b].map(|l| l["state"]["role"].as_str().unwrap_or(""));
    assert!(
        roles.contains(&"first") && roles.contains(&"second"),
        "roles {roles:?}\n{}",
        logs(&[&a.process, &b.process, &tern])
    );
    eprintln!("both in the call after {:.1?}", started.elapsed());

    // While both are in the room, a third joiner is turned away.
    let third = call_once(chromium::driver_in(&net.lan1, &node, "call.mjs"), &room);
    assert_eq!(
        third["phase"],
        "error",
        "third joiner: {third:#}\n{}",
        logs(&[&a.process, &b.process, &tern])
    );
    assert_eq!(third["state"]["error"], "room full", "{third:#}");

    let wrong = call_once(
        chromium::driver_in(&net.lan2, &node, "call.mjs"),
        &format!("{base}?room=nat-call&token=wrong"),
    );
    assert_eq!(wrong["phase"], "loaded", "{wrong:#}");
    assert_eq!(wrong["status"], 403, "{wrong:#}");

    // b hangs up; a is told and waits for someone else.
    fs::write(&release, "go").expect("writing the release file");
    let ok_b = b.finish(Duration::from_secs(60));
    let ok_a = a.finish(Duration::from_secs(60));
    assert!(
        ok_b && ok_a,
        "drivers failed (a {ok_a}, b {ok_b})\n{}",
        logs(&[&a.process, &b.process, &tern])
    );
    let hung_up = b.phase("hung-up").expect("b hung up");
    assert_eq!(hung_up["state"]["status"], "hung-up", "{hung_up:#}");
    let left = a.phase("peer-left").expect("a saw b leave");
    assert_eq!(left["state"]["status"], "waiting", "{left:#}");
    assert_eq!(left["state"]["peersLeft"], 1, "{left:#}");
    assert_eq!(left["state"]["connected"], false, "{left:#}");
    assert!(
        tern.try_exit_status().is_none(),
        "tern exited\n{}",
        tern.logs()
    );
    eprintln!("call test total: {:.1?}", started.elapsed());
}

#[test]
fn two_browsers_on_either_side_of_a_multihomed_host_call_through_its_wildcard_listeners() {
    netns::require_netns();
    let node = chromium::require_browser_deps();
    let net = netns::Net::build_multihomed("sm");
    let dir = TempDir::new("tern-selftest-multihomed");
    // The built-in wildcard listeners and auto-detected relay IPs; TURN over UDP only
    // (a TCP or TLS relay would connect the call whatever UDP does). The pages on
    // `[::]`, which takes IPv4 too.
    let config = dir.join("selftest.toml");
    let pages = SocketAddr::from((Ipv6Addr::UNSPECIFIED, SELFTEST_PORT));
    let toml = format!(
        "[server]\ntcp = false\ntls_listen = []\n\n{}{}",
        selftest_config(pages),
        tls_config(dir.path())
    );
    fs::write(&config, toml).expect("writing the config");
    let extra = ["--config".to_string(), config.display().to_string()];
    let mut cmd = netns::tern_serve(&net.pub_ns, None, &extra);
    let mut tern = BackgroundProcess::spawn("tern", &mut cmd, dir.path());
    let turn = SocketAddr::from((netns::HUB_V4[0], netns::PORT));
    wait_turn_from(&net.lan1, turn, &mut tern);

    // Each browser opens the page, and so gets its TURN URL, on the hub's address on
    // the other side: a (lan1) on side 2's, b (lan2) on side 1's.
    let v4 = netns::HUB_V4.map(|ip| ip.to_string());
    let v6 = netns::HUB_V6.map(|ip| format!("[{ip}]"));
    for (family, [side1, side2]) in [("ipv4", v4), ("ipv6", v6)] {
        let url =
            |host: &str| format!("https://{host}:{SELFTEST_PORT}/call?room={family}&token={TOKEN}");
        let started = Instant::now();
        // Both stay in the call until it is released, so neither sees the other leave
        // before its state is read.
        let release = dir.join(&format!("release-{family}"));
        let hold = ["--hold", release.to_str().expect("a UTF-8 temp path")];
        let mut a = Joiner::spawn("mh-a", &net.lan1, &node, &url(&side2), &hold, dir.path());
        let pattern = format!("{}&media=pattern", url(&side1));
        let mut b = Joiner::spawn("mh-b", &net.lan2, &node, &pattern, &hold, dir.path());
        let deadline = started + JOIN_TIMEOUT;
        let joined_a = a.first_line(deadline);
        let joined_b = b.first_line(deadline);
        for (who, line, media) in [("a", &joined_a, "camera"), ("b", &joined_b, "pattern")] {
            let all_logs = logs(&[&a.process, &b.process, &tern]);
            assert_eq!(
                line["phase"], "connected",
                "{family} {who}: {line:#}\n{all_logs}"
            );
            assert_in_call(who, line, media);
            let via = &line["state"]["pair"]["relayProtocol"];
            assert_eq!(via, "udp", "{family} {who}: {line:#}");
        }
        eprintln!("{family}: call connected after {:.1?}", started.elapsed());
        fs::write(&release, "go").expect("writing the release file");
        let ok = [
            a.finish(Duration::from_secs(60)),
            b.finish(Duration::from_secs(60)),
        ];
        let all_logs = logs(&[&a.process, &b.process, &tern]);
        assert_eq!(ok, [true, true], "{family}: drivers failed\n{all_logs}");
    }
    // The IPv6 round went over IPv6: both routers' IPv6 addresses allocated.
    let logs = tern.logs();
    for router in ["2001:db8:1::1", "2001:db8:2::1"] {
        let from_router = format!("allocation created client=[{router}]:");
        assert!(logs.contains(&from_router), "no {from_router}\n{logs}");
    }
    assert!(
        tern.try_exit_status().is_none(),
        "tern exited\n{}",
        tern.logs()
    );
}
