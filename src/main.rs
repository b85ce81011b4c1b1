//! The `tern` binary: parses the command line and runs a subcommand.
//!
//! Exit codes: 0 success, 1 runtime failure (e.g. a port cannot be bound), 2 bad
//! configuration or usage (nothing was bound).

use clap::Parser;
use std::io::Read;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

use tern::auth::LongTermKey;
use tern::cli::{Cli, Command, ServeArgs};
use tern::config::{LogFormat, Settings, lint, reload};

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => serve(&args),
        Command::CheckConfig { path } => check_config(&path),
        Command::HashKey { user, realm } => hash_key(&user, &realm),
        Command::Load(args) => tern::load::main(&args),
        Command::Stun(args) => tern::tools::stun::main(&args),
        Command::Probe(args) => tern::tools::probe::main(&args),
        Command::Peer(args) => tern::tools::peer::main(&args),
        Command::Creds(args) => tern::tools::creds::main(&args),
        Command::SelftestUrl(args) => tern::tools::selftest_url::main(&args),
        Command::Sessions(args) => tern::tools::admin::sessions_main(&args),
        Command::Usage(args) => tern::tools::admin::usage_main(&args),
        Command::Kill(args) => tern::tools::admin::kill_main(&args),
        Command::Drain(args) => tern::tools::admin::drain_main(&args),
        Command::ImportCoturn { path, out } => tern::import::main(&path, out.as_deref()),
        Command::Completions { shell } => tern::packaging::completions_main(shell),
        Command::Man { out_dir } => tern::packaging::man_main(&out_dir),
    }
}

fn serve(args: &ServeArgs) -> ExitCode {
    let settings = match Settings::load_with(args.config.as_deref(), |s| args.apply_to(s)) {
        Ok(s) => s,
        Err(e) => return config_error(e),
    };
    let log_level = init_logging(&settings.log.level, settings.log.format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tern: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (path, flags) = (args.config.clone(), args.clone());
    let loader: tern::serve::reload::Loader = Box::new(move || {
        Settings::load_with(path.as_deref(), |s| flags.apply_to(s)).map_err(|e| e.to_string())
    });
    match runtime.block_on(tern::serve::run(settings, loader, log_level)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("tern: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    let settings = match Settings::load(path) {
        Ok(s) => s,
        Err(e) => return config_error(e),
    };
    if let (Some(cert), Some(key)) = (&settings.tls.cert, &settings.tls.key) {
        let paths = tern::net::tls::CertPaths {
            cert: cert.clone(),
            key: key.clone(),
        };
        let dtls = !settings.server.dtls_listen.is_empty();
        if let Err(e) = tern::net::tls::TlsAcceptorSource::load_for(paths, None, dtls) {
            return config_error(format!("{}: tls: {e}", path.display()));
        }
    }
    let mut warnings = lint::lint(&settings);
    warnings.extend(lint::acme_domains_elsewhere(
        &settings,
        &tern::net::relay_ips::interface_ips(),
        resolve,
    ));
    for w in &warnings {
        println!("warning: {w}");
    }
    let restart: Vec<&str> = reload::restart_only().collect();
    println!(
        "a reload (SIGHUP) applies every key except these, which take a restart: {}",
        restart.join(", ")
    );
    let set: Vec<&str> = reload::changed(&Settings::default(), &settings)
        .into_iter()
        .filter(|key| restart.contains(key))
        .collect();
    if !set.is_empty() {
        println!(
            "restart-only keys this file changes from their defaults: {}",
            set.join(", ")
        );
    }
    println!(
        "{}: valid ({} warning{})",
        path.display(),
        warnings.len(),
        if warnings.len() == 1 { "" } else { "s" }
    );
    ExitCode::SUCCESS
}

/// A name's addresses from the system resolver, or `None` if it does not resolve.
fn resolve(name: &str) -> Option<Vec<std::net::IpAddr>> {
    use std::net::ToSocketAddrs;
    let addrs = (name, 443).to_socket_addrs().ok()?;
    Some(addrs.map(|addr| addr.ip()).collect())
}

fn hash_key(user: &str, realm: &str) -> ExitCode {
    let mut password = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut password) {
        eprintln!("tern: cannot read the password from stdin: {e}");
        return ExitCode::FAILURE;
    }
    // A password typed or piped ends with a newline that is not part of it.
    let password = password.strip_suffix('\n').unwrap_or(&password);
    let password = password.strip_suffix('\r').unwrap_or(password);
    println!("{}", LongTermKey::derive(user, realm, password).to_hex());
    ExitCode::SUCCESS
}

fn config_error(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("tern: {e}");
    ExitCode::from(2)
}

/// Sets up logging and returns how to change the level later (a reload). RUST_LOG,
/// when set, wins over the config and is kept across reloads.
fn init_logging(level: &str, format: LogFormat) -> tern::serve::reload::LogLevel {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let from_env = EnvFilter::try_from_default_env().ok();
    let pinned = from_env.is_some();
    let filter = from_env
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    // Colours only on a terminal: under systemd, stderr goes to the journal, where
    // escape codes would be stored as text (NO_COLOR turns them off anywhere).
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    let output = match format {
        LogFormat::Human => output.boxed(),
        LogFormat::Json => output.json().boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .init();
    Box::new(move |level: &str| {
        if pinned {
            return Ok(());
        }
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    })
}
