//! `tern peer`: a UDP echo peer like coturn's turnutils_peer, sending every datagram
//! back to its sender (for TURN, the relayed address). `tern probe` runs the same
//! loop on a thread as its built-in peer.

use std::io::{self, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::cli::PeerArgs;

/// How often a peer thread looks whether it should stop.
const POLL: Duration = Duration::from_millis(100);

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
    let never = AtomicBool::new(false);
    match echo(&socket, args.count, &never) {
        Ok(n) => {
            println!("echoed {n} datagrams");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tern peer: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Echoes until `limit` datagrams (if any) or `stop`; returns how many were echoed.
fn echo(socket: &UdpSocket, limit: Option<u64>, stop: &AtomicBool) -> io::Result<u64> {
    socket.set_read_timeout(Some(POLL))?;
    let mut buf = vec![0u8; 65_536];
    let mut count = 0;
    while limit.is_none_or(|l| count < l) && !stop.load(Ordering::Relaxed) {
        match socket.recv_from(&mut buf) {
            Ok((len, from)) => {
                count += 1;
                // A failed send is a lost packet, as on a network: keep serving.
                let _ = socket.send_to(&buf[..len], from);
            }
            Err(e) if crate::client::transport::is_transient(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(count)
}

/// An echo peer on a thread, stopped when dropped.
pub struct EchoThread {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoThread {
    pub fn start(bind: SocketAddr) -> io::Result<Self> {
        let socket = UdpSocket::bind(bind)?;
        let addr = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = thread::Builder::new().name("echo-peer".into()).spawn({
            let stop = stop.clone();
            move || {
                let _ = echo(&socket, None, &stop);
            }
        })?;
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for EchoThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_echoes() {
        let peer = EchoThread::start("127.0.0.1:0".parse().expect("addr")).expect("peer");
        let client = UdpSocket::bind("127.0.0.1:0").expect("client");
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        client.send_to(b"ping", peer.addr()).expect("send");
        let mut buf = [0u8; 8];
        let (len, from) = client.recv_from(&mut buf).expect("echo");
        assert_eq!((&buf[..len], from), (&b"ping"[..], peer.addr()));
    }
}
