//! `tern import-coturn`, end to end: the real binary on coturn configs (Debian's shipped
//! example and a typical deployment), with the output loaded by tern's own config
//! loader and checked field by field.
//!
//! Input and output files live in temp dirs removed on drop; the importer touches no
//! network.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::TempDir;
use tern::config::{Redacted, Settings};

const TERN: &str = env!("CARGO_BIN_EXE_tern");

fn import(input: &Path, out: Option<&Path>) -> Output {
    let mut cmd = Command::new(TERN);
    cmd.arg("import-coturn").arg(input);
    if let Some(out) = out {
        cmd.arg("--out").arg(out);
    }
    cmd.output().expect("the tern binary runs")
}

/// The secrets' values, to compare with what went in.
fn exposed(secrets: &[Redacted<String>]) -> Vec<&str> {
    secrets.iter().map(|s| s.expose().as_str()).collect()
}

/// Imports `text` through stdout; returns the parsed settings, the TOML and stderr.
fn import_text(text: &str) -> (Settings, String, String) {
    let dir = TempDir::new("tern-import-coturn");
    let output = import(&dir.write("turnserver.conf", text), None);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "import failed: {stderr}");
    let settings = Settings::from_toml(&stdout, "imported")
        .unwrap_or_else(|e| panic!("output does not load: {e}\n{stdout}"));
    (settings, stdout, stderr)
}

/// The example turnserver.conf of Debian's coturn package, which the test dependencies
/// install (`scripts/install-test-deps.sh`): the copy under /usr/share/doc, or the
/// one the package puts in /etc when the image strips documentation.
fn coturn_example() -> (&'static str, String) {
    let paths = [
        "/usr/share/doc/coturn/examples/etc/turnserver.conf",
        "/etc/turnserver.conf",
    ];
    paths
        .iter()
        .find_map(|path| Some((*path, std::fs::read_to_string(path).ok()?)))
        .unwrap_or_else(|| {
            panic!(
                "no readable coturn example config at {paths:?}: install the test \
                 dependencies with `sudo scripts/install-test-deps.sh`"
            )
        })
}

#[test]
fn debian_example_config_imports() {
    let (origin, text) = coturn_example();
    let dir = TempDir::new("tern-import-coturn");
    let out = dir.join("tern.toml");
    let output = import(&dir.write("turnserver.conf", &text), Some(&out));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{origin}: {stderr}");
    let toml = std::fs::read_to_string(&out).expect("--out was written");
    Settings::from_toml(&toml, "imported").unwrap_or_else(|e| panic!("{e}\n{toml}"));
    // The example enables options tern has no use for (such as syslog): the summary
    // counts them and one `line N: OPTION: REASON` line follows per option.
    let notes = stderr
        .lines()
        .filter(|l| l.trim_start().starts_with("line "))
        .count();
    assert!(notes > 0, "{origin}: nothing reported unmapped: {stderr}");
    assert!(
        stderr.contains(&format!("tern: {notes} coturn option(s) not mapped:")),
        "{origin}: {stderr}"
    );
}

/// The reason stderr gives for not mapping `option` (its line is `line N: OPTION: REASON`).
fn note<'a>(stderr: &'a str, option: &str) -> &'a str {
    let prefix = format!(": {option}: ");
    stderr
        .lines()
        .find_map(|l| l.split_once(&prefix).map(|(_, reason)| reason))
        .unwrap_or_else(|| panic!("{option} not reported: {stderr}"))
}

#[test]
fn typical_deployment_maps_field_by_field() {
    let secret = "abc123def456abc123def456";
    let text = format!(
        "# a typical WebRTC deployment\n\
         listening-port=3478\n\
         tls-listening-port=5349\n\
         realm=example.org\n\
         use-auth-secret\n\
         static-auth-secret={secret}\n\
         external-ip=203.0.113.7/10.0.0.5\n\
         denied-peer-ip=10.0.0.0-10.255.255.255\n\
         denied-peer-ip=192.168.0.0-192.168.255.255\n\
         cert=/etc/ssl/turn.pem\n\
         pkey=/etc/ssl/turn.key\n\
         min-port=49160\n\
         max-port=49200\n\
         user-quota=12\n\
         total-quota=1200\n\
         max-bps=250000\n\
         bps-capacity=125000000\n\
         no-cli\n\
         fingerprint\n"
    );
    let (s, toml, stderr) = import_text(&text);

    let listen: Vec<String> = s.server.listen.iter().map(|l| l.addr.to_string()).collect();
    assert_eq!(listen, ["0.0.0.0:3478", "[::]:3478"]);
    let tls_listen: Vec<String> = s
        .server
        .tls_listen
        .iter()
        .map(|l| l.addr.to_string())
        .collect();
    assert_eq!(tls_listen, ["0.0.0.0:5349", "[::]:5349"]);
    assert_eq!(s.server.realm, "example.org");
    assert_eq!(exposed(&s.auth.secrets), [secret]);
    assert_eq!(s.relay.external_ips.len(), 1);
    let ext = s.relay.external_ips[0];
    assert_eq!(ext.private, Some("10.0.0.5".parse().unwrap()));
    assert_eq!(
        ext.public,
        "203.0.113.7".parse::<std::net::IpAddr>().unwrap()
    );
    let denied: Vec<String> = s.peers.denied.iter().map(ToString::to_string).collect();
    assert_eq!(denied, ["10.0.0.0/8", "192.168.0.0/16"]);
    assert_eq!((s.relay.ports.min(), s.relay.ports.max()), (49160, 49200));
    assert_eq!(s.limits.user_allocations, 12);
    assert_eq!(s.limits.total_allocations, 1200);
    let limits = s.bandwidth.limits().expect("bandwidth limits");
    assert_eq!(limits.allocation.map(|l| l.bytes_per_sec), Some(250_000));
    assert_eq!(limits.server.map(|l| l.bytes_per_sec), Some(125_000_000));
    assert_eq!(limits.user, None);
    assert_eq!(s.tls.cert.as_deref(), Some(Path::new("/etc/ssl/turn.pem")));
    assert_eq!(s.tls.key.as_deref(), Some(Path::new("/etc/ssl/turn.key")));

    // Readable: each key says where it came from.
    assert!(toml.contains("# coturn: realm"), "{toml}");
    assert!(toml.contains("# coturn: external-ip"), "{toml}");
    // Unmapped options are listed with a reason.
    assert!(!note(&stderr, "no-cli").is_empty());
    assert!(stderr.contains("fingerprint"), "{stderr}");
    assert!(!stderr.contains(secret), "{stderr}");
}

/// The notes for options tern covers differently say what tern does instead, and
/// what it does not implement.
#[test]
fn notes_say_what_tern_does_instead() {
    let text = "realm=example.org\n\
                keep-address-family\n\
                allocation-default-address-family=keep\n\
                alternate-server=192.0.2.10:3478\n\
                tls-alternate-server=192.0.2.10:5349\n\
                sha256\n";
    let (_, _, stderr) = import_text(text);
    for option in ["keep-address-family", "allocation-default-address-family"] {
        let reason = note(&stderr, option);
        assert!(reason.contains("RFC 6156"), "{reason}");
        assert!(reason.contains("IPv4 unless"), "{reason}");
        assert!(reason.contains("REQUESTED-ADDRESS-FAMILY"), "{reason}");
    }
    for option in ["alternate-server", "tls-alternate-server"] {
        let reason = note(&stderr, option);
        assert!(
            reason.contains("static alternate-server lists are not supported"),
            "{reason}"
        );
        assert!(reason.contains("300 Try Alternate"), "{reason}");
        assert!(reason.contains("docs/fleet.md"), "{reason}");
    }
    let reason = note(&stderr, "sha256");
    assert!(reason.contains("auth.rfc8489 = true"), "{reason}");
    assert!(reason.contains("cannot require them"), "{reason}");
}

/// coturn's 0 (unlimited) sets no limit, and a rate below tern's smallest is named.
#[test]
fn unlimited_or_tiny_bandwidths_are_noted() {
    let (s, _, stderr) = import_text("max-bps=0\nbps-capacity=500\n");
    assert_eq!(s.bandwidth.limits(), None);
    assert!(note(&stderr, "max-bps").contains("unlimited"), "{stderr}");
    assert!(
        note(&stderr, "bps-capacity").contains("below tern's smallest limit"),
        "{stderr}"
    );
}

#[test]
fn hex_key_user_becomes_a_key_user() {
    let key = "0123456789ABCDEF0123456789abcdef";
    let text = format!("realm=example.org\nuser=alice:0x{key}\nuser=bob:plain-pass\n");
    let (s, _, _) = import_text(&text);
    assert_eq!(s.auth.users.len(), 2);
    let alice = &s.auth.users[0];
    assert_eq!(alice.name, "alice");
    assert_eq!(
        alice.key.as_ref().map(|k| k.expose().as_str()),
        Some(key.to_ascii_lowercase().as_str())
    );
    assert!(alice.password.is_none());
    let bob = &s.auth.users[1];
    assert_eq!(bob.name, "bob");
    assert_eq!(
        bob.password.as_ref().map(|p| p.expose().as_str()),
        Some("plain-pass")
    );
    assert!(bob.key.is_none());
}

#[test]
fn secrets_never_reach_stderr() {
    let secrets = [
        "s3cr3t-static-value",
        "hunter2-password",
        "0xnot-a-valid-key-zz",
        "cli-pass-w0rd",
        "dbpass-in-url",
    ];
    let text = format!(
        "use-auth-secret\n\
         static-auth-secret={}\n\
         user=bob:{}\n\
         user=eve:{}\n\
         cli-password={}\n\
         psql-userdb=host=db user=turn password={}\n\
         bogus-option=whatever\n",
        secrets[0], secrets[1], secrets[2], secrets[3], secrets[4]
    );
    let (s, toml, stderr) = import_text(&text);
    for secret in secrets {
        assert!(
            !stderr.contains(secret),
            "{secret} leaked to stderr:\n{stderr}"
        );
    }
    // The operator asked for them in the output, and only the usable ones are there.
    assert_eq!(exposed(&s.auth.secrets), [secrets[0]]);
    assert!(toml.contains(secrets[1]));
    for secret in &secrets[2..] {
        assert!(
            !toml.contains(secret),
            "{secret} in the output comments:\n{toml}"
        );
    }
    assert!(stderr.contains("bogus-option: unknown option"), "{stderr}");
    assert!(stderr.contains("cli-password"), "{stderr}");
    assert!(stderr.contains("psql-userdb"), "{stderr}");
}

#[test]
fn missing_input_is_a_usage_error() {
    let dir = TempDir::new("tern-import-coturn");
    let output = import(&dir.join("missing.conf"), None);
    assert_eq!(output.status.code(), Some(2));
}
