//! The task that appends usage records to the fleet's Redis stream, one at a time, in
//! order. While Redis is unreachable it retries the record at hand with a doubling
//! wait (at most [`MAX_RETRY_WAIT`]); records behind it wait in the bounded queue,
//! and what does not fit is dropped and counted by the workers.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::UsageRecord;
use crate::cluster::Cluster;
use crate::metrics::Metrics;

/// The longest wait between two tries of a record while Redis is unreachable.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);

/// The writer: its queue's sender (cloned into each worker's [`super::UsageLog`]) and
/// its task.
pub struct RedisWriter {
    queue: mpsc::Sender<UsageRecord>,
    task: JoinHandle<()>,
}

impl RedisWriter {
    /// Starts the task on the current runtime: records queue up to `queue` deep, and
    /// the stream keeps about `max_len` entries.
    pub fn spawn(
        cluster: Arc<Cluster>,
        queue: usize,
        max_len: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(queue);
        let task = tokio::spawn(write_all(cluster, rx, max_len, metrics));
        Self { queue: tx, task }
    }

    pub(super) fn sender(&self) -> mpsc::Sender<UsageRecord> {
        self.queue.clone()
    }

    /// Once every worker has stopped (their senders are gone): waits up to `grace` for
    /// the queued records to reach Redis, then gives up on the rest, saying how many.
    pub async fn finish(self, grace: Duration) {
        let Self { queue, mut task } = self;
        let left = queue.max_capacity() - queue.capacity();
        drop(queue);
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            task.abort();
            tracing::warn!(
                queued = left,
                "usage records not written to Redis before the server stopped (they are in the log)"
            );
        }
    }
}

async fn write_all(
    cluster: Arc<Cluster>,
    mut queue: mpsc::Receiver<UsageRecord>,
    max_len: usize,
    metrics: Arc<Metrics>,
) {
    while let Some(record) = queue.recv().await {
        let mut wait = Duration::from_millis(500);
        let mut warned = false;
        loop {
            match cluster.append_usage(&record, max_len).await {
                Ok(()) => {
                    metrics.usage_record("redis");
                    break;
                }
                Err(e) => {
                    if !warned {
                        tracing::warn!("usage records cannot be written to Redis, retrying: {e}");
                        warned = true;
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_RETRY_WAIT);
                }
            }
        }
    }
}
