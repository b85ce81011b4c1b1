//! The `tern` binary's configuration surface, end to end: `check-config` on the shipped
//! and on broken files, `hash-key`, and `serve` refusing bad input (exit 2) before it
//! binds anything.
//!
//! Runs the real binary. Config files are written to temp dirs removed on drop; every
//! process is waited for with a deadline and killed at it, so no test leaves one behind;
//! the only network use is 127.0.0.1.

mod support;

use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{RunOutput, TempDir, free_udp_port, run_tern, run_with_input, tern_command};
use tern::config::Settings;

/// Longest any invocation may take; a `serve` that gets this far has started serving.
const DEADLINE: Duration = Duration::from_secs(10);

/// Exit code for bad configuration or usage (see `src/main.rs`).
const CONFIG_ERROR: i32 = 2;

/// Asserts a configuration error: exit 2 and a message containing every `needle`.
fn assert_config_error(output: &RunOutput, needles: &[&str]) {
    let code = output.status.and_then(|s| s.code());
    assert_eq!(code, Some(CONFIG_ERROR), "{}", output.describe());
    for needle in needles {
        assert!(
            output.stderr.contains(needle),
            "{needle:?} not in stderr: {}",
            output.stderr
        );
    }
}

/// `text` as a config file in a fresh temp dir (removed when the dir is dropped).
fn write_config(text: &str) -> (TempDir, String) {
    let dir = TempDir::new("tern-config-cli");
    let path = dir.write("tern.toml", text);
    let path = path.to_str().expect("temp path is UTF-8").to_string();
    (dir, path)
}

fn check_config(text: &str) -> RunOutput {
    let (_dir, config) = write_config(text);
    run_tern(&["check-config", &config], DEADLINE)
}

/// Runs a `tern serve` that is expected to give up on its own.
fn serve(args: &[&str]) -> RunOutput {
    let args: Vec<&str> = std::iter::once("serve")
        .chain(args.iter().copied())
        .collect();
    run_tern(&args, DEADLINE)
}

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

#[test]
fn example_config_is_valid() {
    let path = config_dir().join("tern.toml");
    let output = run_tern(
        &["check-config", path.to_str().expect("UTF-8 path")],
        DEADLINE,
    );
    assert!(output.success(), "{}", output.describe());
    assert!(output.stdout.contains("valid"), "{}", output.describe());
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
        let (_dir, config) = write_config(text);
        let port = free_udp_port();
        let listen = format!("127.0.0.1:{port}");
        let output = serve(&["--config", &config, "--listen", &listen]);
        assert_config_error(&output, &[&config]);
        assert!(output.stdout.is_empty(), "{}", output.describe());
        UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).expect("port is still free");
    }
}

#[test]
fn serve_refuses_bad_flags_before_binding() {
    let port = free_udp_port();
    let listen = format!("127.0.0.1:{port}");
    let output = serve(&["--listen", &listen, "--relay-ip", "224.0.0.1"]);
    assert_config_error(&output, &["relay.ips", "multicast"]);
    UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).expect("port is still free");
}

#[test]
fn serve_user_flag_needs_name_and_password() {
    let listen = format!("127.0.0.1:{}", free_udp_port());
    let output = serve(&["--listen", &listen, "--user", "nocolon"]);
    assert_config_error(&output, &["--user takes NAME:PASSWORD"]);
}

#[test]
fn check_config_warns_about_a_private_relay_ip() {
    let output = check_config("[relay]\nips = [\"10.0.0.5\"]\n");
    assert!(output.success(), "{}", output.describe());
    let out = &output.stdout;
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
        let mut cmd = tern_command(&["hash-key", "alice", "example.org"]);
        let output = run_with_input(&mut cmd, input, DEADLINE);
        assert!(output.success(), "{}", output.describe());
        assert_eq!(output.stdout, expected, "input {input:?}");
    }
}

#[test]
fn check_config_loads_the_tls_files() {
    let output =
        check_config("[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n");
    assert_config_error(&output, &["tls", "/nonexistent/"]);
}
