//! `tern import-coturn`: turns a coturn `turnserver.conf` into a tern config.
//!
//! Migration is where deployments silently lose settings, so the importer is loud about
//! what it leaves behind (every unmapped option, with a reason, on stderr) and refuses to
//! write a config that tern itself would reject.

pub mod cidr;
pub mod coturn_conf;
pub mod mapping;
mod refusal;

use std::path::Path;
use std::process::ExitCode;

use thiserror::Error;

use crate::config::{ConfigError, Settings};
pub use mapping::{Conversion, Unmapped};

/// The generated TOML does not load, which is a bug in the mapping. The message is the
/// loader's, without the TOML text (it may hold secrets).
#[derive(Debug, Error)]
#[error("the generated config does not load (this is a bug): {0}")]
pub struct ImportError(#[from] ConfigError);

/// Converts coturn config text and checks the result with tern's own config loader.
///
/// An `Err` means the generated TOML does not load (see [`ImportError`]).
pub fn import(text: &str, source: &str) -> Result<Conversion, ImportError> {
    let conversion = mapping::convert(&coturn_conf::parse(text), source);
    Settings::from_toml(&conversion.toml, "generated config")?;
    Ok(conversion)
}

/// Runs the subcommand: TOML to `out` (or stdout), unmapped options to stderr.
///
/// Exit codes as elsewhere: 0 written, 1 an I/O failure, 2 the input cannot be used.
pub fn main(path: &Path, out: Option<&Path>) -> ExitCode {
    let text = match std::fs::read(path) {
        // A stray Latin-1 byte in a comment should not stop a migration.
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => {
            eprintln!("tern: cannot read {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let conversion = match import(&text, &path.display().to_string()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tern: {e}");
            return ExitCode::FAILURE;
        }
    };
    let written = match out {
        Some(out) => write_private(out, &conversion.toml),
        None => {
            use std::io::Write as _;
            std::io::stdout().write_all(conversion.toml.as_bytes())
        }
    };
    if let Err(e) = written {
        let target = out.map_or("stdout".to_string(), |p| p.display().to_string());
        eprintln!("tern: cannot write {target}: {e}");
        return ExitCode::FAILURE;
    }
    report(&conversion.unmapped);
    if let Some(out) = out {
        eprintln!(
            "tern: wrote {}; check it with `tern check-config {}`",
            out.display(),
            out.display()
        );
    }
    ExitCode::SUCCESS
}

/// Lists the unmapped options on stderr, one line each.
fn report(unmapped: &[Unmapped]) {
    if unmapped.is_empty() {
        eprintln!("tern: every coturn option was mapped");
        return;
    }
    eprintln!("tern: {} coturn option(s) not mapped:", unmapped.len());
    for u in unmapped {
        eprintln!("  {u}");
    }
}

/// Writes the file readable by its owner only: it may hold passwords and secrets.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())
}
