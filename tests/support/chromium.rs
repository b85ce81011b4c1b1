//! Running the headless-Chromium drivers in tests/browser/ (run.mjs, check.mjs,
//! call.mjs): where they are, what they need, and their JSON result lines.
//!
//! Needs Debian's Chromium and the npm package playwright-core: run
//! `scripts/install-browser-deps.sh` first. Missing dependencies fail the test (with
//! that hint); they never skip it.
//!
//! Use it with `mod support;` and `#[path = "support/chromium.rs"] mod chromium;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support;

pub fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn chromium_path() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// The path of `node`; panics with the install hint when Chromium, node or
/// playwright-core is missing.
pub fn require_browser_deps() -> PathBuf {
    let hint = "run `bash scripts/install-browser-deps.sh` (installs Debian's chromium and \
                tests/browser/node_modules/playwright-core)";
    let chromium = chromium_path();
    assert!(
        chromium.is_file(),
        "browser test: {} is missing; {hint}",
        chromium.display()
    );
    let node = support::find_tool("node")
        .unwrap_or_else(|| panic!("browser test: `node` is not on PATH; install Node.js >= 18"));
    let module = browser_dir().join("node_modules/playwright-core/package.json");
    assert!(
        module.is_file(),
        "browser test: {} is missing; {hint}",
        module.display()
    );
    node
}

/// `node tests/browser/SCRIPT`, run from tests/browser.
pub fn driver(node: &Path, script: &str) -> Command {
    let mut cmd = Command::new(node);
    cmd.current_dir(browser_dir()).arg(script);
    cmd
}

/// The same inside network namespace `ns` (`ip netns exec NS node SCRIPT`), so the
/// browser it starts uses that namespace's network.
pub fn driver_in(ns: &str, node: &Path, script: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.current_dir(browser_dir())
        .args(["netns", "exec", ns])
        .arg(node)
        .arg(script);
    cmd
}

/// The JSON objects a driver printed, one per line starting with `{`.
pub fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("bad JSON line from driver ({e}): {l}"))
        })
        .collect()
}
