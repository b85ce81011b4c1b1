//! The self-test pages, served by tern itself: `/check` runs a relay-only WebRTC call
//! through this server inside one browser page, and `/call` joins two browsers (a
//! laptop and a phone on different networks) in a room whose signaling tern carries.
//!
//! Off unless `selftest.listen` is set. Every page and API call needs the token (403
//! without detail otherwise). The page's TURN credentials are REST credentials signed
//! with a secret derived from the token for this purpose only (every node of a fleet
//! with the same token accepts them), valid for minutes, so the page never sees an
//! operator's secret or a static user's password.

mod ice;
pub(crate) mod listener;
mod signaling;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::net::lifecycle::Lifecycle;
use crate::net::tls::TlsAcceptorSource;

pub use ice::IceServers;
pub use signaling::valid_room_name;
use signaling::{RoomLimits, Rooms};

/// Everything the pages and their API need.
pub struct SelftestState {
    token: String,
    ice: IceServers,
    rooms: Arc<Rooms>,
    metrics: Arc<Metrics>,
    lifecycle: watch::Receiver<Lifecycle>,
    next_member: AtomicU64,
}

impl SelftestState {
    /// `secret` signs the page's own credentials; it must be among the secrets the
    /// engines accept.
    pub fn new(
        settings: &Settings,
        secret: &str,
        metrics: Arc<Metrics>,
        lifecycle: watch::Receiver<Lifecycle>,
    ) -> Self {
        let t = &settings.selftest;
        let limits = RoomLimits {
            ttl: t.room_ttl.as_duration(),
            max_rooms: t.max_rooms,
            max_message: t.max_message,
            messages_per_second: t.messages_per_second,
            message_burst: t.message_burst,
            ping_interval: signaling::ping_interval(t.idle_timeout.as_duration()),
        };
        Self {
            token: t
                .token
                .as_ref()
                .map(|t| t.expose().clone())
                .unwrap_or_default(),
            ice: IceServers::new(settings, secret),
            rooms: Arc::new(Rooms::new(limits, metrics.clone())),
            metrics,
            lifecycle,
            next_member: AtomicU64::new(0),
        }
    }
}

/// Serves the pages on `tcp` (through TLS when `tls` is given) until the server stops.
pub fn serve(
    tcp: TcpListener,
    tls: Option<TlsAcceptorSource>,
    settings: &Settings,
    state: Arc<SelftestState>,
) -> std::io::Result<()> {
    let limits = listener::Limits {
        max_connections: settings.selftest.max_connections,
        handshake_timeout: settings.tls.handshake_timeout.as_duration(),
        idle_timeout: settings.selftest.idle_timeout.as_duration(),
        refused: Metrics::selftest_refused,
    };
    let listener = listener::SelftestListener::start(tcp, tls, limits, state.metrics.clone())?;
    let lifecycle = state.lifecycle.clone();
    let max_frame = settings.selftest.max_message.saturating_mul(2);
    let guarded = Router::new()
        .route(
            "/check",
            get(|State(s): State<Arc<SelftestState>>| async move { s.page("check", CHECK_HTML) }),
        )
        .route(
            "/call",
            get(|State(s): State<Arc<SelftestState>>| async move { s.page("call", CALL_HTML) }),
        )
        .route("/api/ice", get(ice_servers))
        .route(
            "/api/ws",
            get(move |state, query, ws| signaling(state, query, ws, max_frame)),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    let app = Router::new()
        .route(
            "/assets/selftest.js",
            get(|| async { asset(SELFTEST_JS, "text/javascript") }),
        )
        .route(
            "/assets/selftest.css",
            get(|| async { asset(SELFTEST_CSS, "text/css") }),
        )
        .merge(guarded)
        .with_state(state)
        .layer(axum::middleware::from_fn(security_headers));
    listener.serve(app, lifecycle, "self-test");
    Ok(())
}

const CHECK_HTML: &str = include_str!("assets/check.html");
const CALL_HTML: &str = include_str!("assets/call.html");
const SELFTEST_JS: &str = include_str!("assets/selftest.js");
const SELFTEST_CSS: &str = include_str!("assets/selftest.css");

/// The value of the one parameter `name` in a query string (form-encoded: `+` and
/// `%XX` decoded), or None when it is missing or given more than once, so no two
/// parsers can disagree about which of several values counts.
fn only_param(query: Option<&str>, name: &str) -> Option<Vec<u8>> {
    let mut found = None;
    for pair in query.unwrap_or_default().split('&') {
        if pair.is_empty() {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if form_decode(key) == name.as_bytes() && found.replace(form_decode(value)).is_some() {
            return None;
        }
    }
    found
}

/// `text` with `+` as a space and `%XX` as the byte it names; a `%` not followed by
/// two hex digits stays as it is.
fn form_decode(text: &str) -> Vec<u8> {
    let hex = |b: Option<&u8>| b.and_then(|&b| char::from(b).to_digit(16));
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        i += 1;
        match (b, hex(bytes.get(i)), hex(bytes.get(i + 1))) {
            (b'+', _, _) => out.push(b' '),
            (b'%', Some(high), Some(low)) => {
                // Two hex digits: below 256.
                out.push((high * 16 + low) as u8);
                i += 2;
            }
            (b, _, _) => out.push(b),
        }
    }
    out
}

/// 403 with an empty body for a missing, repeated or wrong token: nothing tells a
/// scanner what is behind the listener. Compared in constant time.
async fn require_token(
    State(state): State<Arc<SelftestState>>,
    RawQuery(query): RawQuery,
    request: Request,
    next: Next,
) -> Response {
    let given = only_param(query.as_deref(), "token").unwrap_or_default();
    if bool::from(given.as_slice().ct_eq(state.token.as_bytes())) {
        next.run(request).await
    } else {
        state.metrics.selftest_refused("token");
        StatusCode::FORBIDDEN.into_response()
    }
}

/// The token travels in the URL, so no page may leak it in a Referer, be cached, or be
/// framed; scripts and styles come only from this listener.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let fixed = [
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self'; \
             img-src 'self' data: blob:; media-src 'self' blob:; \
             connect-src 'self' ws: wss:; frame-ancestors 'none'",
        ),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

impl SelftestState {
    /// A page, counted by name.
    fn page(&self, name: &'static str, html: &'static str) -> Response {
        self.metrics.selftest_page(name);
        asset(html, "text/html; charset=utf-8")
    }
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Fresh credentials and this server's TURN URLs, for the host the browser used.
async fn ice_servers(State(state): State<Arc<SelftestState>>, headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::config::host_without_port);
    let Some(host) = host else {
        return (StatusCode::BAD_REQUEST, "no usable Host header\n").into_response();
    };
    state.metrics.selftest_credentials.inc();
    axum::Json(state.ice.for_host(&host, crate::clock::unix_now())).into_response()
}

async fn signaling(
    State(state): State<Arc<SelftestState>>,
    RawQuery(query): RawQuery,
    ws: WebSocketUpgrade,
    max_frame: usize,
) -> Response {
    let room = only_param(query.as_deref(), "room").and_then(|r| String::from_utf8(r).ok());
    let Some(room) = room.filter(|r| valid_room_name(r)) else {
        return (
            StatusCode::BAD_REQUEST,
            "room: once, 1 to 64 of A-Z a-z 0-9 - _\n",
        )
            .into_response();
    };
    let id = state.next_member.fetch_add(1, Ordering::Relaxed);
    let rooms = state.rooms.clone();
    let lifecycle = state.lifecycle.clone();
    ws.max_message_size(max_frame)
        .max_frame_size(max_frame)
        .on_upgrade(move |socket| signaling::run_member(socket, rooms, room, id, lifecycle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parameter_counts_only_when_given_exactly_once() {
        let token = |q: &str| only_param(Some(q), "token");
        assert_eq!(token("token=abc"), Some(b"abc".to_vec()));
        assert_eq!(token("room=r&token=abc&policy=all"), Some(b"abc".to_vec()));
        assert_eq!(token("token=a%7Eb+c"), Some(b"a~b c".to_vec()));
        assert_eq!(token("%74oken=abc"), Some(b"abc".to_vec()), "encoded name");
        assert_eq!(token("token"), Some(Vec::new()));
        for refused in ["", "room=r", "token=abc&token=abc", "token=abc&%74oken=x"] {
            assert_eq!(token(refused), None, "{refused:?}");
        }
        assert_eq!(only_param(None, "token"), None);
        // A stray % stays as it is.
        assert_eq!(token("token=%zz%4"), Some(b"%zz%4".to_vec()));
    }
}
