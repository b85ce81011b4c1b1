//! An HTTP endpoint of the operator's as a usage sink: each batch is one `POST` of a
//! JSON array of records, with the configured bearer token. 2xx is delivered; 408,
//! 429, 5xx, a timeout or no connection are retried; any other answer refuses the
//! batch for good. The URL and token are secrets: neither is ever logged.

use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::UsageRecord;
use super::writer::{Delivery, DeliveryError, Sink};

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

pub struct WebhookSink {
    client: HttpsClient,
    url: hyper::Uri,
    token: Option<String>,
    timeout: Duration,
}

impl WebhookSink {
    /// A sink posting to `url` (http or https; https verified against the system's
    /// roots).
    pub fn new(url: &str, token: Option<String>, timeout: Duration) -> std::io::Result<Self> {
        let url: hyper::Uri = url
            .parse()
            .map_err(|_| std::io::Error::other("usage.webhook_url is not a URL"))?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_platform_verifier(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            client,
            url,
            token,
            timeout,
        })
    }

    async fn post(&self, body: Vec<u8>) -> Result<(), DeliveryError> {
        let mut request = hyper::Request::post(self.url.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(token) = &self.token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| DeliveryError::Rejected(format!("cannot build the request: {e}")))?;
        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| DeliveryError::Retry(format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| DeliveryError::Retry(format!("request failed: {e}")))?;
        let status = response.status();
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
