//! Packaging helpers: shell completion scripts and man pages generated from the
//! clap definition of the command line, so they never drift from `tern --help`.

use clap::CommandFactory;
use clap_complete::Shell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cli::Cli;

/// Writes the completion script for `shell` to `out`.
pub fn write_completions(shell: Shell, out: &mut dyn Write) {
    let mut cmd = Cli::command();
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, &mut cmd, name, out);
}

/// Writes `tern.1` and one page per subcommand (`tern-serve.1`, …) into `out_dir`,
/// creating it if needed; returns the paths written.
pub fn write_man_pages(out_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out_dir)?;
    let mut cmd = Cli::command();
    // Building gives each subcommand its display name ("tern-serve").
    cmd.build();
    let mut written = vec![render_page(cmd.clone(), out_dir)?];
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        written.push(render_page(sub.clone(), out_dir)?);
    }
    Ok(written)
}

fn render_page(cmd: clap::Command, out_dir: &Path) -> std::io::Result<PathBuf> {
    let man = clap_mangen::Man::new(cmd).source(format!("tern {}", env!("CARGO_PKG_VERSION")));
    let path = out_dir.join(man.get_filename());
    let mut buf = Vec::new();
    man.render(&mut buf)?;
    std::fs::write(&path, buf)?;
    Ok(path)
}

/// `tern completions SHELL`.
pub fn completions_main(shell: Shell) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    write_completions(shell, &mut stdout);
    match stdout.flush() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tern: cannot write the completion script: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `tern man OUT_DIR`.
pub fn man_main(out_dir: &Path) -> ExitCode {
    match write_man_pages(out_dir) {
        Ok(paths) => {
            for p in paths {
                println!("{}", p.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tern: cannot write man pages to {}: {e}", out_dir.display());
            ExitCode::FAILURE
        }
    }
}
