//! Packaging: shell completions, man pages and the cargo-deb metadata in Cargo.toml.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::{RunOutput, TempDir, ensure_tool, run_tern, run_with_timeout};

/// Bound on one run of `tern` or `man`.
const TIMEOUT: Duration = Duration::from_secs(30);

fn tern(args: &[&str]) -> RunOutput {
    run_tern(args, TIMEOUT)
}

#[test]
fn bash_completions_name_the_subcommands() {
    let out = tern(&["completions", "bash"]);
    assert!(out.success(), "{}", out.describe());
    let script = out.stdout;
    assert!(!script.trim().is_empty());
    assert!(script.contains("serve"), "no serve in:\n{script}");
    assert!(
        script.contains("check-config"),
        "no check-config in:\n{script}"
    );
}

#[test]
fn completions_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = tern(&["completions", shell]);
        assert!(out.success(), "{shell}: {}", out.describe());
        assert!(!out.stdout.is_empty(), "{shell}: empty script");
    }
    let out = tern(&["completions", "tcsh"]);
    assert_eq!(
        out.status.and_then(|s| s.code()),
        Some(2),
        "{}",
        out.describe()
    );
}

/// True when the text opens with roff requests and has a `.TH` title line among them.
fn has_roff_header(text: &str) -> bool {
    text.starts_with('.')
        && text
            .lines()
            .take_while(|l| l.starts_with('.'))
            .any(|l| l.starts_with(".TH "))
}

#[test]
fn man_pages_for_the_command_and_subcommands() {
    let dir = TempDir::new("tern-packaging-man");
    let out = tern(&["man", dir.path().to_str().unwrap()]);
    assert!(out.success(), "{}", out.describe());
    let man = ensure_tool("man");
    for name in ["tern.1", "tern-serve.1", "tern-check-config.1"] {
        let path = dir.join(name);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(has_roff_header(&text), "{name} has no roff header:\n{text}");
        let mut cmd = Command::new(&man);
        cmd.arg("-l")
            .arg(&path)
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .env("MANWIDTH", "80");
        let rendered = run_with_timeout(&mut cmd, TIMEOUT);
        assert!(rendered.success(), "man -l {name}: {}", rendered.describe());
        assert!(
            rendered.stderr.trim().is_empty(),
            "man -l {name} warned: {}",
            rendered.stderr
        );
        assert!(
            !rendered.stdout.is_empty(),
            "man -l {name} rendered nothing"
        );
    }
}

#[test]
fn deb_metadata_is_complete_and_assets_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest: toml::Table = std::fs::read_to_string(root.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let deb = manifest["package"]["metadata"]["deb"]
        .as_table()
        .expect("[package.metadata.deb]");
    for key in [
        "maintainer",
        "section",
        "priority",
        "depends",
        "extended-description",
        "conf-files",
        "assets",
    ] {
        assert!(deb.contains_key(key), "[package.metadata.deb] lacks {key}");
    }
    assert_eq!(deb["section"].as_str(), Some("net"));
    assert_eq!(deb["priority"].as_str(), Some("optional"));
    assert_eq!(deb["depends"].as_str(), Some("$auto"));
    let conf_files: Vec<&str> = deb["conf-files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(conf_files.contains(&"/etc/tern/tern.toml"));

    let assets = deb["assets"].as_array().unwrap();
    let mut targets = Vec::new();
    for asset in assets {
        let asset = asset.as_array().expect("asset is [source, target, mode]");
        assert_eq!(asset.len(), 3, "{asset:?}");
        let source = asset[0].as_str().unwrap();
        let target = asset[1].as_str().unwrap();
        let mode = asset[2].as_str().unwrap();
        assert!(
            u32::from_str_radix(mode, 8).is_ok(),
            "{source}: bad mode {mode}"
        );
        targets.push(target.to_string());
        if source.starts_with("target/") {
            continue; // built or generated before `cargo deb`
        }
        assert!(
            root.join(source).is_file(),
            "asset source {source} is missing"
        );
    }
    for want in [
        "usr/bin/tern",
        "lib/systemd/system/tern.service",
        "etc/tern/tern.toml",
        "usr/share/doc/tern/README",
        "usr/share/man/man1/",
    ] {
        assert!(
            targets.iter().any(|t| t == want),
            "no asset installs {want}"
        );
    }
}
