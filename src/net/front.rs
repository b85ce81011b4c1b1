//! tern as the front of a shared TLS port (443 beside a website).
//!
//! On a TLS listener, a connection is routed by its ClientHello before any TLS is
//! terminated: TURN and the self-test pages are tern's, anything else is passed,
//! byte for byte, to the configured upstream (the site's own web server), which does
//! its own TLS with its own certificate. Passing TLS through untouched was chosen over
//! terminating and re-proxying: the site keeps its certificates, its HTTP/2 and its
//! client-certificate settings, and tern never sees its traffic in clear.
//!
//! Routing, first match wins:
//! 1. ALPN offers `stun.turn` (RFC 7443) or `acme-tls/1` (RFC 8737): tern.
//! 2. SNI is one of `front.turn_names`: tern.
//! 3. SNI is `selftest.public_host` and ALPN offers HTTP: the self-test listener.
//! 4. With an upstream: ALPN offers anything else (every browser and `curl` sends
//!    `h2`/`http/1.1`), or SNI names a host that is not in a non-empty
//!    `front.turn_names`: the upstream.
//! 5. Otherwise (no ALPN, as TURN clients and browsers' TURN stacks send): tern.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

use crate::config::{ProxyVersion, Settings};

/// ALPN ids that are always tern's.
const TERN_ALPN: [&[u8]; 2] = [b"stun.turn", b"acme-tls/1"];
/// ALPN ids the self-test pages answer.
const HTTP_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The most bytes read while waiting for a whole ClientHello: one TLS record's worth
/// (2^14) and its header, more than any real ClientHello, post-quantum key shares
/// included.
pub const MAX_CLIENT_HELLO: usize = 16_384 + 5;

/// The shortest time between two warnings about an unreachable upstream.
pub const UPSTREAM_WARNING_INTERVAL: Duration = Duration::from_secs(30);

/// The routing rules, from `[front]` and `[selftest]`.
#[derive(Debug, Clone)]
pub struct FrontRules {
    pub upstream: Option<SocketAddr>,
    pub upstream_proxy: ProxyVersion,
    pub turn_names: Vec<String>,
    /// The self-test pages' host name and where they listen.
    pub selftest: Option<(String, SocketAddr)>,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
}

impl FrontRules {
    /// The rules for `settings`, or `None` when TLS listeners serve only TURN.
    pub fn from_settings(settings: &Settings) -> Option<Arc<Self>> {
        let front = &settings.front;
        let selftest = settings.selftest.listen.and_then(|listen| {
            let host = settings.selftest.public_host.as_deref()?;
            let host = crate::config::host_without_port(host)?;
            Some((host.to_ascii_lowercase(), reachable(listen)))
        });
        if front.upstream.is_none() && front.turn_names.is_empty() && selftest.is_none() {
            return None;
        }
        Some(Arc::new(Self {
            upstream: front.upstream,
            upstream_proxy: front.upstream_proxy_protocol,
            turn_names: front
                .turn_names
                .iter()
                .map(|n| n.to_ascii_lowercase())
                .collect(),
            selftest,
            connect_timeout: front.connect_timeout.as_duration(),
            idle_timeout: front.idle_timeout.as_duration(),
        }))
    }

    /// Where a connection with this ClientHello goes.
    pub fn route(&self, hello: &Hello) -> Route {
        let offers = |ids: &[&[u8]]| hello.alpn.iter().any(|p| ids.contains(&p.as_slice()));
        let sni = hello.sni.as_deref();
        if offers(&TERN_ALPN) || sni.is_some_and(|s| self.turn_names.iter().any(|n| n == s)) {
            return Route::Tern;
        }
        if let Some((host, addr)) = &self.selftest
            && sni == Some(host.as_str())
            && offers(&HTTP_ALPN)
        {
            return Route::Selftest(*addr);
        }
        if let Some(upstream) = self.upstream {
            let other_name = sni.is_some() && !self.turn_names.is_empty();
            if !hello.alpn.is_empty() || other_name {
                return Route::Upstream(upstream);
            }
        }
        Route::Tern
    }
}

/// A listen address as something to connect to: a wildcard becomes loopback.
fn reachable(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        ip if !ip.is_unspecified() => ip,
        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
    };
    SocketAddr::new(ip, listen.port())
}

/// What routing looks at in a ClientHello.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hello {
    /// The SNI host name, lower case.
    pub sni: Option<String>,
    /// The ALPN protocol ids offered, in the client's order.
    pub alpn: Vec<Vec<u8>>,
}

/// Where a connection goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Tern,
    Selftest(SocketAddr),
    Upstream(SocketAddr),
}

impl Route {
    /// A label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Tern => "tern",
            Self::Selftest(_) => "selftest",
            Self::Upstream(_) => "upstream",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrontError {
    #[error("not a TLS ClientHello: {0}")]
    NotClientHello(rustls::Error),
    #[error("ClientHello longer than {MAX_CLIENT_HELLO} bytes")]
    TooLong,
    #[error("no whole ClientHello before the deadline")]
    TimedOut,
    #[error("connection closed before a whole ClientHello")]
    Closed,
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("connecting to {0} timed out")]
    ConnectTimedOut(SocketAddr),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl FrontError {
    /// Logs the failure: a warning when the upstream cannot be reached (the operator's
    /// site is down), at most one per [`UPSTREAM_WARNING_INTERVAL`] so that a site
    /// down under load does not flood the log; a debug line otherwise (clients that
    /// hang up or send nonsense).
    pub fn log(&self, client: SocketAddr) {
        static LAST_WARNED: AtomicU64 = AtomicU64::new(0);
        let upstream = matches!(self, Self::Connect(..) | Self::ConnectTimedOut(_));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = LAST_WARNED.load(Ordering::Relaxed);
        let due = now >= last + UPSTREAM_WARNING_INTERVAL.as_secs();
        if upstream
            && due
            && LAST_WARNED
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                %client,
                "shared TLS port: {self} (more such failures in the next {} s are only counted, in tern_front_failures_total)",
                UPSTREAM_WARNING_INTERVAL.as_secs()
            );
        } else {
            tracing::debug!(%client, "shared TLS port: {self}");
        }
    }

    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotClientHello(_) | Self::TooLong => "not_tls",
            Self::TimedOut => "timeout",
            Self::Closed | Self::Io(_) => "closed",
            Self::Connect(..) => "upstream_refused",
            Self::ConnectTimedOut(_) => "upstream_timeout",
        }
    }
}

/// Reads from `stream` until `bytes` (which may already hold the start) holds a whole
/// ClientHello, by `deadline`, and returns what routing needs from it. Every byte read
/// stays in `bytes`, to be replayed to whoever serves the connection.
pub async fn read_client_hello(
    stream: &mut TcpStream,
    bytes: &mut Vec<u8>,
    deadline: Instant,
) -> Result<Hello, FrontError> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut fed = 0;
    loop {
        while fed < bytes.len() {
            fed += acceptor.read_tls(&mut &bytes[fed..])?;
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let hello = accepted.client_hello();
                return Ok(Hello {
                    sni: hello.server_name().map(str::to_ascii_lowercase),
                    alpn: hello
                        .alpn()
                        .map(|ids| ids.map(<[u8]>::to_vec).collect())
                        .unwrap_or_default(),
                });
            }
            Ok(None) => {}
            Err((e, _alert)) => return Err(FrontError::NotClientHello(e)),
        }
        if bytes.len() >= MAX_CLIENT_HELLO {
            return Err(FrontError::TooLong);
        }
        let mut chunk = [0u8; 2048];
        let room = (MAX_CLIENT_HELLO - bytes.len()).min(chunk.len());
        match timeout_at(deadline, stream.read(&mut chunk[..room])).await {
            Err(_) => return Err(FrontError::TimedOut),
            Ok(Ok(0)) => return Err(FrontError::Closed),
            Ok(Ok(n)) => bytes.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(e.into()),
        }
    }
}

/// Connects to `target` within `rules.connect_timeout`, sends `header` (a PROXY
/// protocol header, or nothing) and `first` (the bytes already read from the client),
/// then copies both ways until either side closes or nothing moves for
/// `rules.idle_timeout`.
pub async fn pass_through(
    client: &mut TcpStream,
    target: SocketAddr,
    header: &[u8],
    first: &[u8],
    rules: &FrontRules,
) -> Result<(), FrontError> {
    let upstream = match timeout(rules.connect_timeout, TcpStream::connect(target)).await {
        Err(_) => return Err(FrontError::ConnectTimedOut(target)),
        Ok(Err(e)) => return Err(FrontError::Connect(target, e)),
        Ok(Ok(upstream)) => upstream,
    };
    let _ = upstream.set_nodelay(true);
    let (mut up_read, mut up_write) = upstream.into_split();
    let opened = Instant::now();
    let last_moved = AtomicU64::new(0);
    let write_first = async {
        up_write.write_all(header).await?;
        up_write.write_all(first).await
    };
    match timeout(rules.idle_timeout, write_first).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => return Ok(()),
    }
    let (mut client_read, mut client_write) = client.split();
    let idle = rules.idle_timeout;
    let to_upstream = pump(&mut client_read, &mut up_write, idle, opened, &last_moved);
    let to_client = pump(&mut up_read, &mut client_write, idle, opened, &last_moved);
    tokio::join!(to_upstream, to_client);
    Ok(())
}

/// Copies `from` to `to` until `from` ends, either side fails, or neither direction
/// (both share `last_moved`, milliseconds since `opened`) has moved a byte for `idle`.
/// Then shuts `to` down, so the other direction sees the end too.
async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    idle: Duration,
    opened: Instant,
    last_moved: &AtomicU64,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let read = match timeout(idle, from.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            Ok(_) => break,
            Err(_) => {
                let since = Duration::from_millis(last_moved.load(Ordering::Relaxed));
                if opened.elapsed().saturating_sub(since) >= idle {
                    break;
                }
                continue;
            }
        };
        if !matches!(timeout(idle, to.write_all(&buf[..read])).await, Ok(Ok(()))) {
            break;
        }
        let now = opened.elapsed().as_millis() as u64;
        last_moved.store(now, Ordering::Relaxed);
    }
    let _ = timeout(idle, to.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(sni: Option<&str>, alpn: &[&str]) -> Hello {
        Hello {
            sni: sni.map(String::from),
            alpn: alpn.iter().map(|p| p.as_bytes().to_vec()).collect(),
        }
    }

    fn rules(turn_names: &[&str]) -> FrontRules {
        FrontRules {
            upstream: Some("127.0.0.1:8443".parse().unwrap()),
            upstream_proxy: ProxyVersion::Off,
            turn_names: turn_names.iter().map(|n| n.to_string()).collect(),
            selftest: Some((
                "check.example.com".into(),
                "127.0.0.1:8444".parse().unwrap(),
            )),
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn alpn_alone_tells_turn_from_the_site() {
        let r = rules(&[]);
        let site = Route::Upstream("127.0.0.1:8443".parse().unwrap());
        assert_eq!(r.route(&hello(Some("example.com"), &[])), Route::Tern);
        assert_eq!(r.route(&hello(None, &[])), Route::Tern);
        assert_eq!(
            r.route(&hello(Some("example.com"), &["stun.turn"])),
            Route::Tern
        );
        assert_eq!(
            r.route(&hello(Some("example.com"), &["acme-tls/1"])),
            Route::Tern
        );
        assert_eq!(
            r.route(&hello(Some("example.com"), &["h2", "http/1.1"])),
            site
        );
        assert_eq!(r.route(&hello(None, &["imap"])), site);
        assert_eq!(
            r.route(&hello(Some("check.example.com"), &["h2", "http/1.1"])),
            Route::Selftest("127.0.0.1:8444".parse().unwrap())
        );
        // The self-test host without HTTP is a TURN client using that name.
        assert_eq!(r.route(&hello(Some("check.example.com"), &[])), Route::Tern);
    }

    #[test]
    fn turn_names_claim_their_sni_and_send_other_names_to_the_site() {
        let r = rules(&["turn.example.com"]);
        let site = Route::Upstream("127.0.0.1:8443".parse().unwrap());
        assert_eq!(
            r.route(&hello(Some("turn.example.com"), &["h2"])),
            Route::Tern
        );
        assert_eq!(r.route(&hello(Some("turn.example.com"), &[])), Route::Tern);
        assert_eq!(r.route(&hello(Some("www.example.com"), &[])), site);
        assert_eq!(r.route(&hello(None, &[])), Route::Tern);
    }

    #[test]
    fn without_an_upstream_everything_else_is_turn() {
        let mut r = rules(&["turn.example.com"]);
        r.upstream = None;
        assert_eq!(
            r.route(&hello(Some("www.example.com"), &["h2"])),
            Route::Tern
        );
    }

    #[test]
    fn wildcard_selftest_listeners_are_reached_on_loopback() {
        assert_eq!(
            reachable("0.0.0.0:8444".parse().unwrap()),
            "127.0.0.1:8444".parse().unwrap()
        );
        assert_eq!(
            reachable("[::]:8444".parse().unwrap()),
            "[::1]:8444".parse().unwrap()
        );
    }
}
