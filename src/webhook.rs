//! POSTing JSON to one of the operator's HTTP(S) endpoints, as the usage records and the
//! authentication webhooks do: one client per endpoint (HTTP/1.1, connections reused,
//! https verified against the system's roots), a bearer token when configured, a
//! deadline on the whole exchange and a bound on the answer read. The URL and the token
//! are secrets: neither is in any error this returns.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::StatusCode;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use thiserror::Error;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Why a POST got no usable answer. Never holds the URL or the token.
#[derive(Debug, Error)]
pub enum PostError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("request failed: {0}")]
    Failed(String),
    /// The status came, but the answer went past the bytes read of it.
    #[error("answered {status} with more than {limit} bytes")]
    TooLong { status: StatusCode, limit: usize },
}

pub struct JsonEndpoint {
    client: HttpsClient,
    url: hyper::Uri,
    token: Option<String>,
    timeout: Duration,
}

impl JsonEndpoint {
    /// An endpoint at `url` (http or https); `key` names the setting in the error when
    /// `url` is not a URL.
    pub fn new(
        key: &str,
        url: &str,
        token: Option<String>,
        timeout: Duration,
    ) -> std::io::Result<Self> {
        let url: hyper::Uri = url
            .parse()
            .map_err(|_| std::io::Error::other(format!("{key} is not a URL")))?;
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

    /// POSTs `body` (JSON); the status and at most `max_answer` bytes of the answer,
    /// all within the endpoint's timeout.
    pub async fn post(
        &self,
        body: Vec<u8>,
        max_answer: usize,
    ) -> Result<(StatusCode, Bytes), PostError> {
        let mut request = hyper::Request::post(self.url.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(token) = &self.token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| PostError::Failed(format!("cannot build the request: {e}")))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| PostError::Failed(crate::error_text::with_causes(&e)))?;
            let status = response.status();
            let answer = Limited::new(response.into_body(), max_answer)
                .collect()
                .await
                .map_err(
                    |e| match e.downcast_ref::<http_body_util::LengthLimitError>() {
                        Some(_) => PostError::TooLong {
                            status,
                            limit: max_answer,
                        },
                        None => PostError::Failed(format!("reading the answer: {e}")),
                    },
                )?
                .to_bytes();
            Ok((status, answer))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| PostError::Timeout(self.timeout))?
    }
}
