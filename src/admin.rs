//! The admin HTTP listener: `/metrics` (Prometheus text), `/healthz` (the process
//! answers) and `/readyz` (listeners bound and not draining).
//!
//! Off unless `admin.listen` (or `--admin`) is set. Bind it to loopback or a private
//! network: it holds no secrets, but it tells anyone who asks how busy the server is.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::core::Shared;
use crate::metrics::Snapshot;
use crate::net::stream::ConnectionLimits;
use crate::net::worker::Lifecycle;

/// What the endpoints read.
pub struct AdminState {
    pub shared: Arc<Shared>,
    pub connections: Arc<ConnectionLimits>,
    pub lifecycle: watch::Receiver<Lifecycle>,
}

/// Serves the admin endpoints on `listener` until the server stops.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>) {
    let mut lifecycle = state.lifecycle.clone();
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(state);
    let stopped = async move {
        while lifecycle.changed().await.is_ok() {
            if *lifecycle.borrow() == Lifecycle::Stopping {
                return;
            }
        }
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stopped)
        .await
    {
        tracing::error!("admin listener failed: {e}");
    }
}

async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let snapshot = Snapshot {
        ports_in_use: state.shared.ports().in_use(),
        connections: state.connections.open(),
        draining: *state.lifecycle.borrow() != Lifecycle::Serving,
    };
    let body = state.shared.metrics.encode(snapshot);
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], body)
}

async fn ready(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    match *state.lifecycle.borrow() {
        Lifecycle::Serving => (StatusCode::OK, "ready\n"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
    }
}
