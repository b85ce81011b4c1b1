//! One DTLS client from its admission to the end: the rest of the handshake under the
//! handshake deadline, then STUN messages and ChannelData, one per record, between the
//! client and the worker that owns its allocation.
//!
//! To the worker a session is a connection like a TCP/TLS one ([`StreamEvent`]): it
//! opens once the handshake is done, and when the allocation ends the worker lets go
//! of it and the session ends with a close_notify; when the session ends (close_notify
//! from the client, a fatal alert, idle without an allocation, the server stopping) its
//! allocation ends with it (RFC 8656 §3.1, as for TCP and TLS).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use openssl::ssl::{ErrorCode, SslStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout, timeout_at};

use super::datagrams::Datagrams;
use super::handshakes::HandshakeSlot;
use crate::core::FiveTuple;
use crate::net::stream::{Connection, ConnectionSlot, StreamConfig, StreamEvent, sleep_until_opt};

/// How often a handshake waiting for the client gives OpenSSL the chance to resend its
/// last flight (OpenSSL resends once its own timer, 1 s and doubling, has run out).
const RETRANSMIT_CHECK: Duration = Duration::from_millis(250);

/// The largest record payload DTLS carries (2^14 bytes).
const MAX_RECORD: usize = 16_384;

/// A datagram for a client.
pub struct Outgoing {
    pub to: SocketAddr,
    /// The source address, for a client of a wildcard listener.
    pub source: Option<IpAddr>,
    pub bytes: Vec<u8>,
}

/// An admitted client and what its session talks through.
pub struct Session {
    pub tuple: FiveTuple,
    /// The address answers leave from, for a client of a wildcard listener.
    pub source: Option<IpAddr>,
    pub stream: SslStream<Datagrams>,
    /// The client's datagrams, from the listener.
    pub inbox: mpsc::Receiver<Vec<u8>>,
    /// Datagrams for the client, sent by the listener.
    pub out: mpsc::Sender<Outgoing>,
    /// When the client was admitted: the handshake and idle deadlines count from here.
    pub admitted: Instant,
}

/// Runs a session to its end. `handshake` is held until the handshake ends, `slot`
/// for as long as the session lives.
pub async fn run(
    mut session: Session,
    config: StreamConfig,
    handshake: HandshakeSlot,
    _slot: ConnectionSlot,
    events: mpsc::Sender<StreamEvent>,
) {
    let client = session.tuple.client;
    let deadline = session.admitted + config.handshake_timeout;
    let outcome = timeout_at(deadline, session.handshake()).await;
    drop(handshake);
    let result = match &outcome {
        Ok(Ok(())) => "ok",
        Ok(Err(e)) => {
            tracing::debug!(%client, "DTLS handshake failed: {e}");
            "failed"
        }
        Err(_) => {
            tracing::debug!(%client, "DTLS handshake timed out");
            "timeout"
        }
    };
    config.metrics.dtls_handshake(result);
    if matches!(outcome, Ok(Ok(()))) {
        session.serve(&config, events).await;
    }
}

/// Why a handshake ended without a session.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("{0}")]
    Tls(openssl::ssl::Error),
    #[error("server stopping")]
    Stopped,
}

impl Session {
    /// Drives the handshake until it completes or fails.
    async fn handshake(&mut self) -> Result<(), HandshakeError> {
        loop {
            let result = self.stream.do_handshake();
            self.send_written();
            match result {
                Ok(()) => return Ok(()),
                Err(e) if e.code() == ErrorCode::WANT_READ => {}
                Err(e) => return Err(HandshakeError::Tls(e)),
            }
            match timeout(RETRANSMIT_CHECK, self.inbox.recv()).await {
                Ok(Some(datagram)) => self.stream.get_mut().push(datagram),
                Ok(None) => return Err(HandshakeError::Stopped),
                Err(_) => {}
            }
        }
    }

    /// The established session: records from the client go to the worker, messages
    /// from the worker go out as records, until either side ends.
    async fn serve(mut self, config: &StreamConfig, events: mpsc::Sender<StreamEvent>) {
        let tuple = self.tuple;
        let (writer, mut queue) = mpsc::channel(config.write_queue);
        let allocated = Arc::new(AtomicBool::new(false));
        // A DTLS session never becomes a TCP allocation's data connection.
        let connection = Connection {
            writer,
            allocated: allocated.clone(),
            splice: None,
        };
        if events
            .send(StreamEvent::Opened(tuple, connection))
            .await
            .is_err()
        {
            return;
        }
        // One record buffer for the session's life, not one per datagram.
        let mut record = vec![0u8; MAX_RECORD];
        loop {
            let idle =
                (!allocated.load(Ordering::Relaxed)).then(|| self.admitted + config.idle_timeout);
            tokio::select! {
                datagram = self.inbox.recv() => {
                    let Some(datagram) = datagram else { break };
                    self.stream.get_mut().push(datagram);
                    let (records, open) = read_records(&mut self.stream, &mut record);
                    self.send_written();
                    if !forward(records, tuple, &events).await || !open {
                        break;
                    }
                }
                message = queue.recv() => {
                    // None: the worker let go (the allocation is gone, or the server stops).
                    let Some(bytes) = message else { break };
                    if self.stream.ssl_write(&bytes).is_err() {
                        break;
                    }
                    self.send_written();
                }
                () = sleep_until_opt(idle) => {
                    tracing::debug!(client = %tuple.client, "closing DTLS session: idle without an allocation");
                    break;
                }
            }
        }
        let _ = self.stream.shutdown();
        self.send_written();
        let _ = events.send(StreamEvent::Closed(tuple)).await;
    }

    /// Hands what OpenSSL wrote to the listener for sending; dropped when its queue is
    /// full, as a congested link would drop it (DTLS resends handshake flights).
    fn send_written(&mut self) {
        for bytes in self.stream.get_mut().take_written() {
            let datagram = Outgoing {
                to: self.tuple.client,
                source: self.source,
                bytes,
            };
            if self.out.try_send(datagram).is_err() {
                break;
            }
        }
    }
}

/// The application data of every record OpenSSL can read now (through `buf`, of
/// [`MAX_RECORD`] bytes), and whether the session is still open (false after a
/// close_notify or a fatal error).
fn read_records(stream: &mut SslStream<Datagrams>, buf: &mut [u8]) -> (Vec<Vec<u8>>, bool) {
    let mut records = Vec::new();
    loop {
        match stream.ssl_read(buf) {
            Ok(n) => records.push(buf[..n].to_vec()),
            Err(e) if e.code() == ErrorCode::WANT_READ => return (records, true),
            Err(_) => return (records, false),
        }
    }
}

/// Hands each record to the worker as one message; false once the worker is gone.
async fn forward(
    records: Vec<Vec<u8>>,
    tuple: FiveTuple,
    events: &mpsc::Sender<StreamEvent>,
) -> bool {
    for record in records {
        if events
            .send(StreamEvent::Frame(tuple, record))
            .await
            .is_err()
        {
            return false;
        }
    }
    true
}
