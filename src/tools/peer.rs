//! `tern peer`: the echo peer of [`crate::client::echo`] in the foreground, like
//! coturn's turnutils_peer, optionally stopping after a number of datagrams; with
//! `--tcp`, a TCP echo peer for TCP allocations (RFC 6062) instead.

use std::io::{self, Write};
use std::net::UdpSocket;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::client::echo::echo;
use clap::Args;
use std::net::SocketAddr;

/// `tern peer`: see [`crate::tools::peer`].
#[derive(Debug, Args)]
pub struct PeerArgs {
    /// Address to bind, e.g. 0.0.0.0:3480.
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Exit after echoing N datagrams (with --tcp: after N connections ended).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Echo over TCP: every byte a connection sends comes back on it.
    #[arg(long)]
    pub tcp: bool,
}

pub fn main(args: &PeerArgs) -> ExitCode {
    if args.tcp {
        return tcp_main(args);
    }
    let socket = match UdpSocket::bind(args.listen) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tern peer: cannot bind {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    match socket.local_addr() {
        Ok(addr) => println!("listening on {addr}"),
        Err(e) => {
            eprintln!("tern peer: {e}");
            return ExitCode::FAILURE;
        }
    }
    // Tests (and scripts) read the address before sending: do not leave it buffered.
    let _ = io::stdout().flush();
    let received = AtomicU64::new(0);
    match echo(&socket, args.count, &received, &AtomicBool::new(false)) {
        Ok(()) => {
            println!("echoed {} datagrams", received.load(Ordering::Relaxed));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tern peer: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Connections the TCP echo serves at once; more are refused (closed at once).
const MAX_TCP_CONNECTIONS: usize = 256;

fn tcp_main(args: &PeerArgs) -> ExitCode {
    let listener = match std::net::TcpListener::bind(args.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tern peer: cannot bind TCP {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("listening on tcp {addr}"),
        Err(e) => {
            eprintln!("tern peer: {e}");
            return ExitCode::FAILURE;
        }
    }
    let _ = io::stdout().flush();
    let open = std::sync::Arc::new(AtomicU64::new(0));
    let mut echoes = Vec::new();
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        if open.load(Ordering::Relaxed) >= MAX_TCP_CONNECTIONS as u64 {
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let open = open.clone();
        echoes.push(std::thread::spawn(move || {
            let echoed = stream
                .try_clone()
                .and_then(|mut reader| io::copy(&mut reader, &mut stream))
                .unwrap_or(0);
            open.fetch_sub(1, Ordering::Relaxed);
            println!("connection ended after echoing {echoed} bytes");
        }));
        if args.count.is_some_and(|n| echoes.len() as u64 >= n) {
            break;
        }
        // Without --count the handles of ended echoes need not be kept.
        if args.count.is_none() {
            echoes.retain(|echo| !echo.is_finished());
        }
    }
    for echo in echoes {
        let _ = echo.join();
    }
    let _ = io::stdout().flush();
    ExitCode::SUCCESS
}
