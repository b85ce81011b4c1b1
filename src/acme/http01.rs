//! The HTTP-01 responder (RFC 8555 §8.3): `GET /.well-known/acme-challenge/{token}` on
//! `tls.acme.http01_listen` answers the key authorization of a pending token and 404
//! otherwise. Nothing else is served there.
//!
//! Connections go through the same bounded listener as the self-test pages (a cap on
//! connections, per client address, and an idle timeout), so port 80 open to the
//! internet costs little.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::challenge::Challenges;
use crate::metrics::Metrics;
use crate::net::lifecycle::Lifecycle;
use crate::selftest::listener::{Limits, SelftestListener};

/// Validators open a few connections at a time (Let's Encrypt: one per perspective).
const LIMITS: Limits = Limits {
    max_connections: 64,
    handshake_timeout: Duration::from_secs(10),
    idle_timeout: Duration::from_secs(10),
    refused: Metrics::acme_http01_refused,
};

/// Serves the challenges on `listener` until the server stops.
pub fn serve(
    listener: TcpListener,
    challenges: Challenges,
    metrics: Arc<Metrics>,
    lifecycle: watch::Receiver<Lifecycle>,
) -> std::io::Result<()> {
    let listener = SelftestListener::start(listener, None, LIMITS, metrics)?;
    let app = Router::new()
        .route("/.well-known/acme-challenge/{token}", get(answer))
        .with_state(challenges);
    listener.serve(app, lifecycle, "ACME HTTP-01");
    Ok(())
}

async fn answer(
    State(challenges): State<Challenges>,
    Path(token): Path<String>,
) -> impl IntoResponse {
    match challenges.http_answer(&token) {
        Some(key_authorization) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            key_authorization,
        ),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain")],
            String::new(),
        ),
    }
}
