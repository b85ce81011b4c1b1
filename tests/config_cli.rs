//! The `tern` binary's configuration surface, end to end: `check-config` on the shipped
//! and on broken files, `hash-key`, and `serve` refusing bad input (exit 2) before it
//! binds anything.
//!
//! Runs the real binary. Config files are written under the system temp dir with unique
//! names and removed on drop; every process is waited for with a deadline and killed on
//! drop, so no test leaves one behind; the only network use is 127.0.0.1.

use std::io::Write;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tern::config::Settings;

const TERN: &str = env!("CARGO_BIN_EXE_tern");

/// Longest any invocation may take; a `serve` that gets this far has started serving.
const DEADLINE: Duration = Duration::from_secs(10);

/// Exit code for bad configuration or usage (see `src/main.rs`).
const CONFIG_ERROR: i32 = 2;

/// A config file under the temp dir, removed on drop.
struct TempConfig(PathBuf);

impl TempConfig {
    fn new(text: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "tern-config-cli-{}-{}.toml",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, text).expect("temp dir is writable");
        Self(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("temp path is UTF-8")
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A spawned `tern`, killed and reaped on drop unless it was waited for.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Running {
    /// Polls for exit until [`DEADLINE`]; panics (and so kills it) if still running.
    fn finish(mut self, what: &str) -> Output {
        let started = Instant::now();
        while started.elapsed() < DEADLINE {
            let child = self.0.as_mut().expect("not yet waited for");
            if child.try_wait().expect("try_wait").is_some() {
                let child = self.0.take().expect("not yet waited for");
                return child.wait_with_output().expect("collect output");
            }
            sleep(Duration::from_millis(20));
        }
        panic!("`tern {what}` still running after {DEADLINE:?}; killed");
    }
}

/// Runs `tern args...` with `stdin` as its input and waits (bounded) for it to exit.
/// TERN_SECRET is cleared so the caller's environment cannot change the outcome.
fn tern(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(TERN)
        .args(args)
        .env_remove("TERN_SECRET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tern");
    let mut input = child.stdin.take().expect("stdin is piped");
    let running = Running(Some(child));
    input
        .write_all(stdin.as_bytes())
        .expect("write to tern's stdin");
    drop(input);
    running.finish(&args.join(" "))
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts a configuration error: exit 2 and a message containing every `needle`.
fn assert_config_error(output: &Output, needles: &[&str]) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(CONFIG_ERROR), "stderr: {err}");
    for needle in needles {
        assert!(err.contains(needle), "{needle:?} not in stderr: {err}");
    }
}

fn check_config(text: &str) -> Output {
    let config = TempConfig::new(text);
    tern(&["check-config", config.arg()], "")
}

/// Runs a `tern serve` that is expected to give up on its own.
fn serve(args: &[&str]) -> Output {
    let args: Vec<&str> = std::iter::once("serve")
        .chain(args.iter().copied())
        .collect();
    tern(&args, "")
}

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind an ephemeral port");
    socket.local_addr().expect("local addr").port()
}

#[test]
fn example_config_is_valid() {
    let path = config_dir().join("tern.toml");
    let output = tern(&["check-config", path.to_str().expect("UTF-8 path")], "");
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    assert!(stdout(&output).contains("valid"), "{}", stdout(&output));
}

#[test]
fn every_shipped_config_parses() {
    let mut parsed = 0;
    for entry in std::fs::read_dir(config_dir()).expect("config/ exists") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_some_and(|ext| ext == "toml") {
            if let Err(e) = Settings::load(&path) {
                panic!("{e}");
            }
            parsed += 1;
        }
    }
    assert!(parsed >= 1, "no .toml file under config/");
}

#[test]
fn unknown_key_names_key_and_line() {
    let output = check_config("[server]\nrealm = \"x\"\n\n[relay]\nport = \"1-2\"\n");
    assert_config_error(&output, &["`port`", "line 5"]);
}

#[test]
fn bad_values_name_their_line() {
    let output = check_config("[relay]\n# narrow\nports = \"9-3\"\n");
    assert_config_error(&output, &["line 3", "9-3"]);
    let output = check_config("[server]\nlisten = [\"nope\"]\n");
    assert_config_error(&output, &["line 2", "is not an IP:PORT address"]);
    let output = check_config("[log]\nformat = \"json\"\nlevel = \"tern=loud\"\n");
    assert_config_error(&output, &["line 3: log.level"]);
}

#[test]
fn serve_refuses_a_bad_config_before_binding() {
    let bad_configs = [
        "[server]\nlisten_typo = []\n",
        "[relay]\nmax_lifetime = 600\ndefault_lifetime = 900\n",
        "[log]\nlevel = \"tern=loud\"\n",
    ];
    for text in bad_configs {
        let config = TempConfig::new(text);
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let output = serve(&["--config", config.arg(), "--listen", &listen]);
        assert_config_error(&output, &[config.arg()]);
        assert!(stdout(&output).is_empty(), "{}", stdout(&output));
        UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).expect("port is still free");
    }
}

#[test]
fn serve_refuses_bad_flags_before_binding() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let output = serve(&["--listen", &listen, "--relay-ip", "224.0.0.1"]);
    assert_config_error(&output, &["relay.ips", "multicast"]);
    UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).expect("port is still free");
}

#[test]
fn serve_user_flag_needs_name_and_password() {
    let listen = format!("127.0.0.1:{}", free_port());
    let output = serve(&["--listen", &listen, "--user", "nocolon"]);
    assert_config_error(&output, &["--user takes NAME:PASSWORD"]);
}

#[test]
fn check_config_warns_about_a_private_relay_ip() {
    let output = check_config("[relay]\nips = [\"10.0.0.5\"]\n");
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let out = stdout(&output);
    let warning = out
        .lines()
        .find(|line| line.starts_with("warning:") && line.contains("10.0.0.5"))
        .unwrap_or_else(|| panic!("no warning about 10.0.0.5 in: {out}"));
    assert!(warning.contains("external_ips"), "{warning}");
}

#[test]
fn hash_key_is_md5_of_user_realm_password() {
    // printf 'alice:example.org:TheMatrIX' | md5sum
    let expected = "0f0a3885abb01c43142966068e3462d3\n";
    // The piped or typed line ending is not part of the password.
    for input in ["TheMatrIX", "TheMatrIX\n", "TheMatrIX\r\n"] {
        let output = tern(&["hash-key", "alice", "example.org"], input);
        assert!(output.status.success(), "stderr: {}", stderr(&output));
        assert_eq!(stdout(&output), expected, "input {input:?}");
    }
}

#[test]
fn check_config_loads_the_tls_files() {
    let output =
        check_config("[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n");
    assert_config_error(&output, &["tls", "/nonexistent/"]);
}
