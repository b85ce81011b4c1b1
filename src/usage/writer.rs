//! A task that takes usage records from a bounded queue and delivers them in batches
//! to one sink (the fleet's Redis stream, a webhook), in order, retrying what fails.
//!
//! Workers only ever `try_send` into the queue: a sink that is slow or down makes the
//! queue fill, and what does not fit is dropped from that sink and counted, never
//! waited for. A batch the sink refuses for good (a webhook's 4xx) is dropped and
//! counted too, so one bad batch cannot stop the ones behind it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::UsageRecord;
use crate::metrics::Metrics;

/// The first wait after a failed delivery; it doubles up to [`MAX_RETRY_WAIT`].
const FIRST_RETRY_WAIT: Duration = Duration::from_millis(500);
const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);

/// Why a batch was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Worth trying again (unreachable, timed out, a 5xx).
    #[error("{0}")]
    Retry(String),
    /// Refused for good (a 4xx): trying again would be refused again.
    #[error("{0}")]
    Rejected(String),
}

/// The future a delivery returns.
pub type Delivery<'a> = Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>>;

/// A place usage records go.
pub trait Sink: Send + Sync + 'static {
    /// Its name in metrics and logs (`redis`, `webhook`).
    fn name(&self) -> &'static str;
    /// Delivers `batch`, oldest first.
    fn deliver<'a>(&'a self, batch: &'a [UsageRecord]) -> Delivery<'a>;
}

/// How a writer batches.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Records queued for the sink at most.
    pub queue: usize,
    /// Records in one delivery at most.
    pub max: usize,
    /// How long a batch waits for more records after its first one.
    pub linger: Duration,
}

/// A running writer: its queue's sender (cloned into each worker's
/// [`super::UsageLog`]) and its task.
pub struct Writer {
    name: &'static str,
    queue: mpsc::Sender<UsageRecord>,
    task: JoinHandle<()>,
}

impl Writer {
    /// Starts the writer of `sink` on the current runtime.
    pub fn spawn(sink: impl Sink, batching: Batching, metrics: Arc<Metrics>) -> Self {
        let name = sink.name();
        let (queue, rx) = mpsc::channel(batching.queue);
        let task = tokio::spawn(write_all(sink, rx, batching, metrics));
        Self { name, queue, task }
    }

    pub(super) fn queue(&self) -> (&'static str, mpsc::Sender<UsageRecord>) {
        (self.name, self.queue.clone())
    }

    /// Once every worker has stopped (their senders are gone): waits up to `grace` for
    /// the queued records to be delivered, then gives up on the rest, saying so.
    pub async fn finish(self, grace: Duration) {
        let Self {
            name,
            queue,
            mut task,
        } = self;
        let left = queue.max_capacity() - queue.capacity();
        drop(queue);
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            task.abort();
            tracing::warn!(
                sink = name,
                queued = left,
                "usage records not delivered before the server stopped (they are in the log)"
            );
        }
    }
}

async fn write_all(
    sink: impl Sink,
    mut queue: mpsc::Receiver<UsageRecord>,
    batching: Batching,
    metrics: Arc<Metrics>,
) {
    let name = sink.name();
    let mut batch = Vec::with_capacity(batching.max);
    while let Some(first) = queue.recv().await {
        batch.push(first);
        let deadline = Instant::now() + batching.linger;
        while batch.len() < batching.max {
            match tokio::time::timeout_at(deadline, queue.recv()).await {
                Ok(Some(record)) => batch.push(record),
                Ok(None) | Err(_) => break,
            }
        }
        deliver(&sink, &batch, &metrics).await;
        batch.clear();
    }
    tracing::debug!(sink = name, "usage writer done");
}

/// Delivers `batch`, retrying with a doubling wait until it is delivered or refused.
async fn deliver(sink: &impl Sink, batch: &[UsageRecord], metrics: &Metrics) {
    let name = sink.name();
    let mut wait = FIRST_RETRY_WAIT;
    let mut warned = false;
    loop {
        match sink.deliver(batch).await {
            Ok(()) => {
                metrics.usage_records(name, batch.len());
                if warned {
                    tracing::info!(sink = name, "usage records delivered again");
                }
                return;
            }
            Err(DeliveryError::Rejected(why)) => {
                metrics.usage_dropped(name, "rejected", batch.len());
                tracing::warn!(
                    sink = name,
                    records = batch.len(),
                    "usage records refused, dropped: {why}"
                );
                return;
            }
            Err(DeliveryError::Retry(why)) => {
                if !warned {
                    tracing::warn!(
                        sink = name,
                        "usage records cannot be delivered, retrying: {why}"
                    );
                    warned = true;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_RETRY_WAIT);
            }
        }
    }
}
