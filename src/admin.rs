//! The admin HTTP listener: `/metrics` (Prometheus text), `/healthz` (the process
//! answers), `/readyz` (listeners bound and not draining), and with a bearer token the
//! JSON API under `/api/`: list sessions, kill one or a user's, revoke a user, drain.
//!
//! Off unless `admin.listen` (or `--admin`) is set; the API is off unless
//! `admin.token` (or `TERN_ADMIN_TOKEN`) is set. Bind it to loopback or a private
//! network. The token is compared in constant time and never logged.

use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use std::net::SocketAddr;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::core::{EndReason, Session, Shared};
use crate::metrics::{Metrics, Snapshot};
use crate::net::lifecycle::Lifecycle;
use crate::net::stream::ConnectionLimits;
use crate::net::worker::WorkerCommand;

/// What the endpoints read and steer.
pub struct AdminState {
    pub shared: Arc<Shared>,
    pub metrics: Arc<Metrics>,
    pub connections: Arc<ConnectionLimits>,
    pub lifecycle: watch::Receiver<Lifecycle>,
    pub lifecycle_control: watch::Sender<Lifecycle>,
    /// One command queue per worker; each owns some of the allocations.
    pub workers: Vec<mpsc::UnboundedSender<WorkerCommand>>,
    pub token: Option<String>,
    /// The fleet this node belongs to, if any.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Relay ports over every relay IP.
    pub port_capacity: usize,
}

/// Serves the admin endpoints on `listener` until the server stops.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>) {
    let mut lifecycle = state.lifecycle.clone();
    let api = Router::new()
        .route("/api/sessions", get(sessions))
        .route("/api/sessions/{relay}", delete(kill_session))
        .route("/api/users/{user}/sessions", delete(kill_user))
        .route("/api/users/{user}/revoke", post(revoke_user))
        .route("/api/drain", put(drain))
        .route("/api/fleet/sessions", get(fleet_sessions))
        .route("/api/usage", get(usage))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .merge(api)
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
    let sessions = ask_all(&state, WorkerCommand::Sessions).await.concat();
    let ports_in_use = state.shared.ports().in_use();
    let snapshot = Snapshot {
        ports_in_use,
        ports_free: state.port_capacity.saturating_sub(ports_in_use),
        permissions: sessions.iter().map(|s| s.permissions).sum(),
        channels: sessions.iter().map(|s| s.channels).sum(),
        connections: state.connections.open(),
        draining: *state.lifecycle.borrow() != Lifecycle::Serving,
    };
    let body = state.metrics.encode(snapshot);
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], body)
}

async fn ready(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    match *state.lifecycle.borrow() {
        Lifecycle::Serving => (StatusCode::OK, "ready\n"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
    }
}

/// Lets an API request through only with `Authorization: Bearer <token>` matching the
/// configured token (constant-time); 401 otherwise, and 404 when no token is set.
async fn require_token(
    State(state): State<Arc<AdminState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = &state.token else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        next.run(request).await
    } else {
        (StatusCode::UNAUTHORIZED, "a valid bearer token is needed\n").into_response()
    }
}

/// Asks every worker and gathers the answers.
async fn ask_all<T>(
    state: &AdminState,
    command: impl Fn(oneshot::Sender<T>) -> WorkerCommand,
) -> Vec<T> {
    crate::net::worker::ask_all(&state.workers, command).await
}

async fn sessions(State(state): State<Arc<AdminState>>) -> Json<Vec<Session>> {
    Json(ask_all(&state, WorkerCommand::Sessions).await.concat())
}

async fn kill_session(
    State(state): State<Arc<AdminState>>,
    Path(relay): Path<String>,
) -> StatusCode {
    let Ok(relay) = relay.parse::<SocketAddr>() else {
        return StatusCode::BAD_REQUEST;
    };
    let killed = ask_all(&state, |tx| WorkerCommand::Kill(relay, tx)).await;
    if killed.contains(&true) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn kill_user(
    State(state): State<Arc<AdminState>>,
    Path(user): Path<String>,
) -> Json<serde_json::Value> {
    end_user(&state, user, EndReason::Killed).await
}

/// Ends every allocation of `user` for `reason`, on every worker.
async fn end_user(state: &AdminState, user: String, reason: EndReason) -> Json<serde_json::Value> {
    let killed: usize = ask_all(state, |tx| {
        WorkerCommand::KillUser(user.clone(), reason, tx)
    })
    .await
    .into_iter()
    .sum();
    Json(serde_json::json!({ "killed": killed }))
}

/// Refuses the user (a static name or REST user id) from now on and kills its
/// allocations.
async fn revoke_user(State(state): State<Arc<AdminState>>, Path(user): Path<String>) -> Response {
    if user.is_empty() {
        return (StatusCode::BAD_REQUEST, "an empty user name\n").into_response();
    }
    state.shared.revoke(&user);
    tracing::info!(user = %user.escape_debug(), "user revoked");
    // In a fleet, every other node refuses and kills too (`fleet` says whether the
    // fleet could be told; if not, nodes pick it up from Redis when it is back).
    let fleet = match &state.cluster {
        Some(cluster) => Some(cluster.publish_revocation(&user).await.is_ok()),
        None => None,
    };
    let Json(mut answer) = end_user(&state, user, EndReason::Revoked).await;
    if let Some(told) = fleet {
        answer["fleet"] = told.into();
    }
    Json(answer).into_response()
}

/// Every live node's sessions (404 for a node that is not in a fleet, 503 while
/// Redis is unreachable).
async fn fleet_sessions(State(state): State<Arc<AdminState>>) -> Response {
    let Some(cluster) = &state.cluster else {
        return (
            StatusCode::NOT_FOUND,
            "not in a fleet ([cluster] is not set)\n",
        )
            .into_response();
    };
    match cluster.fleet_sessions().await {
        Ok(sessions) => Json(sessions).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

/// What `GET /api/usage` takes.
#[derive(Debug, serde::Deserialize)]
struct UsageParams {
    user: Option<String>,
    since: Option<u64>,
    limit: Option<usize>,
}

/// The most records one `GET /api/usage` returns.
const MAX_USAGE_RECORDS: usize = 10_000;

/// Usage records from the fleet's Redis stream, newest first (404 without a fleet,
/// 503 while Redis is unreachable).
async fn usage(
    State(state): State<Arc<AdminState>>,
    axum::extract::Query(params): axum::extract::Query<UsageParams>,
) -> Response {
    let Some(cluster) = &state.cluster else {
        return (
            StatusCode::NOT_FOUND,
            "usage records are kept in Redis only with [cluster]; without it, read the tern::usage log events\n",
        )
            .into_response();
    };
    let query = crate::cluster::UsageQuery {
        user: params.user,
        since: params.since,
        limit: params.limit.unwrap_or(100).min(MAX_USAGE_RECORDS),
    };
    match cluster.usage(&query).await {
        Ok(records) => Json(records).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

/// `on` starts draining (new allocations refused, existing ones relay on), `off`
/// ends it.
async fn drain(State(state): State<Arc<AdminState>>, body: String) -> StatusCode {
    let next = match body.trim() {
        "on" => Lifecycle::Draining,
        "off" => Lifecycle::Serving,
        _ => return StatusCode::BAD_REQUEST,
    };
    if *state.lifecycle.borrow() == Lifecycle::Stopping {
        return StatusCode::CONFLICT;
    }
    state.lifecycle_control.send_replace(next);
    StatusCode::NO_CONTENT
}
