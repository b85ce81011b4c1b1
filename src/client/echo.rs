//! A UDP echo peer like coturn's turnutils_peer: every datagram goes back to its
//! sender (for TURN, the relayed address) and is counted. `tern peer` runs the loop in
//! the foreground; `tern probe` and `tern load` run it on a thread as their built-in
//! peer, so a relay can be checked end to end without a second machine.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How often the loop looks whether it should stop.
const POLL: Duration = Duration::from_millis(100);

/// Echoes until `limit` datagrams (if any) were received or `stop` is set, adding each
/// to `received`. Returns on the first socket error that is not transient.
pub fn echo(
    socket: &UdpSocket,
    limit: Option<u64>,
    received: &AtomicU64,
    stop: &AtomicBool,
) -> io::Result<()> {
    socket.set_read_timeout(Some(POLL))?;
    let mut buf = vec![0u8; 65_536];
    while limit.is_none_or(|l| received.load(Ordering::Relaxed) < l)
        && !stop.load(Ordering::Relaxed)
    {
        match socket.recv_from(&mut buf) {
            Ok((len, from)) => {
                received.fetch_add(1, Ordering::Relaxed);
                // A failed send is a lost packet, as on a network: keep serving.
                let _ = socket.send_to(&buf[..len], from);
            }
            Err(e) if super::transport::is_transient(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// [`echo`] on a thread of its own, so it costs one syscall pair per packet; stopped
/// when dropped.
pub struct EchoThread {
    addr: SocketAddr,
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoThread {
    /// Starts echoing on `socket` (bound, and tuned, by the caller).
    pub fn spawn(socket: UdpSocket) -> io::Result<Self> {
        let addr = socket.local_addr()?;
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = thread::Builder::new().name("echo-peer".into()).spawn({
            let (received, stop) = (received.clone(), stop.clone());
            move || {
                // Nobody to report an error to: the peer just stops answering, which
                // whoever sends to it sees as loss.
                let _ = echo(&socket, None, &received, &stop);
            }
        })?;
        Ok(Self {
            addr,
            received,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Datagrams received (and echoed) so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
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
    fn thread_echoes_and_counts() {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let peer = EchoThread::spawn(socket).expect("peer");
        let client = UdpSocket::bind("127.0.0.1:0").expect("client");
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        client.send_to(b"ping", peer.addr()).expect("send");
        let mut buf = [0u8; 8];
        let (len, from) = client.recv_from(&mut buf).expect("echo");
        assert_eq!((&buf[..len], from), (&b"ping"[..], peer.addr()));
        assert_eq!(peer.received(), 1);
    }

    #[test]
    fn stops_after_the_limit() {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = socket.local_addr().expect("addr");
        let client = UdpSocket::bind("127.0.0.1:0").expect("client");
        for _ in 0..2 {
            client.send_to(b"ping", addr).expect("send");
        }
        let received = AtomicU64::new(0);
        echo(&socket, Some(2), &received, &AtomicBool::new(false)).expect("echo");
        assert_eq!(received.load(Ordering::Relaxed), 2);
    }
}
