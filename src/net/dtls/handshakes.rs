//! The cap on DTLS handshakes in progress (`limits.max_dtls_handshakes`), over every
//! DTLS listener: a handshake costs a key exchange and a signature, so their number is
//! bounded apart from the sessions'.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus_client::metrics::gauge::Gauge;

/// Handshakes in progress over every DTLS listener, against
/// `limits.max_dtls_handshakes`. The gauge shows the count.
#[derive(Clone)]
pub struct Handshakes {
    count: Arc<AtomicUsize>,
    gauge: Gauge,
}

impl Handshakes {
    pub fn new(gauge: Gauge) -> Self {
        Self {
            count: Arc::default(),
            gauge,
        }
    }

    /// A place for one more handshake, or `None` when `max` are in progress.
    pub fn start(&self, max: usize) -> Option<HandshakeSlot> {
        let taken = self
            .count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            });
        taken.ok()?;
        self.gauge.inc();
        Some(HandshakeSlot(self.clone()))
    }
}

/// A handshake's place, given back on drop.
pub struct HandshakeSlot(Handshakes);

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::Relaxed);
        self.0.gauge.dec();
    }
}
