//! `tern peer`: the echo peer of [`crate::client::echo`] in the foreground, like
//! coturn's turnutils_peer, optionally stopping after a number of datagrams.

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
    /// Exit after echoing N datagrams.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

pub fn main(args: &PeerArgs) -> ExitCode {
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
