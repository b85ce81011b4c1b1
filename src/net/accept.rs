//! Stream listeners' accept loops: each accepted connection gets its slot and is
//! handed to the worker its client hashes to, after [`admission`](super::admission)
//! when the listener must read something first (a PROXY header, a ClientHello on a
//! shared port).

use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

use super::admission::{Admission, Arrived};
use super::lifecycle::Lifecycle;
use super::stream::{Accept, Handoff, Incoming, StreamConfig};

/// A stream listener and what it accepts.
pub struct StreamListener {
    pub socket: TcpListener,
    pub accept: Accept,
    /// Whether connections from `server.proxy_protocol_from` start with a PROXY
    /// protocol header.
    pub proxy_protocol: bool,
}

/// Accepts connections until the server stops, handing each to a worker chosen by the
/// client's address (`workers` holds one hand-off per worker). Each connection follows
/// the `config` current when it is accepted. A connection that needs reading before
/// its worker is known (a PROXY header, a ClientHello on a shared port) is read here,
/// on its own task, within the handshake deadline.
pub async fn serve(
    listener: StreamListener,
    config: watch::Receiver<StreamConfig>,
    workers: Vec<Handoff>,
    mut lifecycle: watch::Receiver<Lifecycle>,
) {
    let StreamListener {
        socket,
        accept,
        proxy_protocol,
    } = listener;
    let workers: Arc<[Handoff]> = workers.into();
    loop {
        tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok((stream, client)) => {
                    let config = config.borrow().clone();
                    let trusted = proxy_protocol
                        && config.proxy_from.iter().any(|net| net.contains(&client.ip()));
                    // A trusted proxy carries many clients: the per-IP limit applies to
                    // each of them once its header is read, not to the proxy.
                    let slot = if trusted {
                        config.limits.acquire_counting_total_only(client.ip())
                    } else {
                        config.limits.acquire(client.ip())
                    };
                    let Some(slot) = slot else {
                        tracing::debug!(%client, "connection refused: connection limit");
                        continue;
                    };
                    let shared_tls_port = matches!(accept, Accept::Tls { .. });
                    let admission = Admission {
                        proxy_protocol,
                        trusted,
                        front: config.front.clone().filter(|_| shared_tls_port),
                    };
                    let accepted = Instant::now();
                    if admission.needed() {
                        let (accept, config, workers) =
                            (accept.clone(), config.clone(), workers.clone());
                        tokio::spawn(async move {
                            let arrived = Arrived {
                                stream,
                                client,
                                accepted,
                                accept,
                                config,
                                slot,
                            };
                            admission.admit(arrived, &workers).await;
                        });
                    } else {
                        let (accept, no_prefix) = (accept.clone(), Vec::new());
                        let incoming =
                            Incoming::new(stream, client, no_prefix, accepted, accept, config, slot);
                        if let Some(incoming) = incoming {
                            incoming.hand_off(&workers);
                        }
                    }
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            // Only on stop: while draining, new connections are still taken (their
            // Allocates are refused, other requests are answered).
            changed = lifecycle.changed() => {
                if changed.is_err() || *lifecycle.borrow() == Lifecycle::Stopping {
                    return;
                }
            }
        }
    }
}
