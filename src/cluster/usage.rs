//! Usage records in the fleet's Redis: a stream every node appends to, capped in
//! length, and read back newest first for `tern usage`.

use redis::aio::ConnectionManager;
use std::sync::Arc;

use super::{Cluster, FleetError};
use crate::usage::{Delivery, DeliveryError, Sink, UsageRecord};

/// The stream as a usage sink: a batch is one pipeline of `XADD`s.
pub struct RedisSink {
    pub cluster: Arc<Cluster>,
    /// Entries the stream keeps, about.
    pub max_len: usize,
}

impl Sink for RedisSink {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn deliver<'a>(&'a self, batch: &'a [UsageRecord]) -> Delivery<'a> {
        Box::pin(async move {
            self.cluster
                .append_usage(batch, self.max_len)
                .await
                .map_err(|e| DeliveryError::Retry(e.to_string()))
        })
    }
}

/// Entries read from the stream per round trip while looking for matches.
const PAGE: usize = 500;

/// What to read back.
#[derive(Debug, Clone, Default)]
pub struct UsageQuery {
    /// Only this user (a static name or REST user id).
    pub user: Option<String>,
    /// Only allocations that ended at or after this Unix time.
    pub since: Option<u64>,
    /// At most this many records.
    pub limit: usize,
}

impl Cluster {
    /// Appends `records` in one round trip, keeping about `max_len` entries (Redis
    /// trims whole nodes of the stream, `MAXLEN ~`, which is cheap).
    pub async fn append_usage(
        &self,
        records: &[UsageRecord],
        max_len: usize,
    ) -> Result<(), FleetError> {
        let mut conn = self.connection().await.ok_or(FleetError::Unreachable)?;
        let mut pipe = redis::pipe();
        for record in records {
            pipe.cmd("XADD")
                .arg(self.keys.usage())
                .arg("MAXLEN")
                .arg("~")
                .arg(max_len)
                .arg("*")
                .arg("record")
                .arg(serde_json::to_string(record)?)
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// The newest records matching `query`, newest first. Stops at the first record
    /// that ended before `since` (the stream is in order of ending, give or take the
    /// nodes' clocks).
    pub async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRecord>, FleetError> {
        let mut conn = self.connection().await.ok_or(FleetError::Unreachable)?;
        let mut found = Vec::new();
        let mut before = "+".to_string();
        while found.len() < query.limit {
            let page = self.usage_page(&mut conn, &before).await?;
            let Some((last_id, _)) = page.last() else {
                break;
            };
            before = format!("({last_id}");
            let full = page.len() == PAGE;
            for (_, record) in page {
                let Some(record) = record else { continue };
                if query.since.is_some_and(|since| record.end < since) {
                    return Ok(found);
                }
                if query.user.as_ref().is_none_or(|user| *user == record.user) {
                    found.push(record);
                    if found.len() == query.limit {
                        break;
                    }
                }
            }
            if !full {
                break;
            }
        }
        Ok(found)
    }

    /// One page of entries before `before` (`+` for the newest): ids and records (a
    /// foreign or corrupt entry reads as `None` and is skipped).
    async fn usage_page(
        &self,
        conn: &mut ConnectionManager,
        before: &str,
    ) -> redis::RedisResult<Vec<(String, Option<UsageRecord>)>> {
        let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XREVRANGE")
            .arg(self.keys.usage())
            .arg(before)
            .arg("-")
            .arg("COUNT")
            .arg(PAGE)
            .query_async(conn)
            .await?;
        Ok(entries
            .into_iter()
            .map(|(id, fields)| {
                let record = fields
                    .chunks(2)
                    .find(|pair| pair[0] == b"record")
                    .and_then(|pair| serde_json::from_slice(pair.get(1)?).ok());
                (id, record)
            })
            .collect())
    }
}
