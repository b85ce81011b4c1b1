//! An HTTP endpoint of the operator's as a usage sink: each batch is one `POST` of a
//! JSON array of records, with the configured bearer token. 2xx is delivered; 408,
//! 429, 5xx, a timeout or no connection are retried; any other answer refuses the
//! batch for good. The URL and token are secrets: neither is ever logged.

use std::time::Duration;

use super::UsageRecord;
use super::writer::{Delivery, DeliveryError, Sink};
use crate::webhook::{JsonEndpoint, PostError};

/// What is read of an answer: its status decides, its body is not looked at.
const MAX_ANSWER: usize = 4096;

pub struct WebhookSink {
    endpoint: JsonEndpoint,
}

impl WebhookSink {
    /// A sink posting to `url` (http or https; https verified against the system's
    /// roots).
    pub fn new(url: &str, token: Option<String>, timeout: Duration) -> std::io::Result<Self> {
        let endpoint = JsonEndpoint::new("usage.webhook_url", url, token, timeout)?;
        Ok(Self { endpoint })
    }

    async fn post(&self, body: Vec<u8>) -> Result<(), DeliveryError> {
        let status = match self.endpoint.post(body, MAX_ANSWER).await {
            Ok((status, _)) | Err(PostError::TooLong { status, .. }) => status,
            Err(e) => return Err(DeliveryError::Retry(e.to_string())),
        };
        match status.as_u16() {
            200..=299 => Ok(()),
            408 | 429 | 500..=599 => Err(DeliveryError::Retry(format!("answered {status}"))),
            _ => Err(DeliveryError::Rejected(format!("answered {status}"))),
        }
    }
}

impl Sink for WebhookSink {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn deliver<'a>(&'a self, batch: &'a [UsageRecord]) -> Delivery<'a> {
        Box::pin(async move {
            let body = serde_json::to_vec(batch)
                .map_err(|e| DeliveryError::Rejected(format!("cannot encode: {e}")))?;
            self.post(body).await
        })
    }
}
