//! `auth.webhook` against an authentication service run by the test on loopback: keys
//! given as a password or as a key, refusals, answers and refusals cached, a slow
//! service that blocks no other client and fails closed at its deadline, a service
//! that is down or answers nonsense, a stale key standing in while the service fails
//! (when asked for), the concurrency cap and the bounded queue, and secrets kept out of
//! the logs. Real `tern serve` processes and the project's TURN client over UDP and TCP.

mod support;

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{TernServer, free_udp_port, metric, read_http_request, relay_ports_arg};
use tern::auth::LongTermKey;
use tern::client::TurnClient;

const REALM: &str = "hooks.test";
const TOKEN: &str = "hook-token-7f3a9c";
const ADMIN_TOKEN: &str = "admin-token-for-hooks";

/// How the test's service answers a username.
#[derive(Clone, Copy)]
enum Behaviour {
    Password(&'static str),
    /// The key for this password, as 32 hex digits.
    Key(&'static str),
    Status(u16),
    Garbage,
    /// Waits until the test releases held answers, then answers this password.
    Held(&'static str),
}

#[derive(Default)]
struct Seen {
    /// Lookups per username.
    lookups: HashMap<String, usize>,
    /// Every request's head and body.
    requests: Vec<(String, Value)>,
    in_flight: usize,
    max_in_flight: usize,
    released: bool,
    /// Every username from now on answers 500.
    failing: bool,
}

/// The operator's authentication service, as the test plays it.
struct Service {
    addr: SocketAddr,
    seen: Arc<(Mutex<Seen>, Condvar)>,
}

impl Service {
    fn start(behaviour: fn(&str) -> Behaviour) -> Service {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<(Mutex<Seen>, Condvar)> = Arc::default();
        let shared = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(500).flatten() {
                let seen = shared.clone();
                std::thread::spawn(move || serve(stream, behaviour, &seen));
            }
        });
        Service { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}/turn/credentials", self.addr)
    }

    fn lookups(&self, username: &str) -> usize {
        let seen = self.seen.0.lock().unwrap();
        seen.lookups.get(username).copied().unwrap_or(0)
    }

    fn requests(&self) -> Vec<(String, Value)> {
        self.seen.0.lock().unwrap().requests.clone()
    }

    fn max_in_flight(&self) -> usize {
        self.seen.0.lock().unwrap().max_in_flight
    }

    /// Waits (at most 10 s) until `n` requests are being held.
    fn wait_held(&self, n: usize) {
        let (lock, changed) = &*self.seen;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = lock.lock().unwrap();
        while seen.in_flight < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{} requests held, {n} expected",
                seen.in_flight
            );
            seen = changed.wait_timeout(seen, left).unwrap().0;
        }
    }

    fn release(&self) {
        let (lock, changed) = &*self.seen;
        lock.lock().unwrap().released = true;
        changed.notify_all();
    }

    fn fail_from_now_on(&self) {
        self.seen.0.lock().unwrap().failing = true;
    }
}

/// Answers one request on `stream` as `behaviour` says for its username.
fn serve(stream: TcpStream, behaviour: fn(&str) -> Behaviour, seen: &(Mutex<Seen>, Condvar)) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let Ok((head, body)) = read_http_request(&mut reader) else {
        return;
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let username = body["username"].as_str().unwrap_or_default().to_string();
    let (lock, changed) = seen;
    let failing = {
        let mut seen = lock.lock().unwrap();
        *seen.lookups.entry(username.clone()).or_default() += 1;
        seen.requests.push((head, body));
        seen.in_flight += 1;
        seen.max_in_flight = seen.max_in_flight.max(seen.in_flight);
        changed.notify_all();
        seen.failing
    };
    let behaviour = if failing {
        Behaviour::Status(500)
    } else {
        behaviour(&username)
    };
    let (status, answer) = match behaviour {
        Behaviour::Password(p) => (200, format!(r#"{{"password":"{p}"}}"#)),
        Behaviour::Key(p) => {
            let key = LongTermKey::derive(&username, REALM, p).to_hex();
            (200, format!(r#"{{"key":"{key}"}}"#))
        }
        Behaviour::Status(code) => (code, String::new()),
        Behaviour::Garbage => (200, "<html>surprise</html>".to_string()),
        Behaviour::Held(p) => {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut seen = lock.lock().unwrap();
            while !seen.released && Instant::now() < deadline {
                seen = changed
                    .wait_timeout(seen, Duration::from_millis(100))
                    .unwrap()
                    .0;
            }
            (200, format!(r#"{{"password":"{p}"}}"#))
        }
    };
    lock.lock().unwrap().in_flight -= 1;
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
        answer.len()
    );
}

struct Tern {
    server: TernServer,
    admin: SocketAddr,
}

/// `tern serve` with static user alice, loopback peers and `[auth.webhook]` at `url`
/// plus `extra` keys.
fn start(url: &str, extra: &str) -> Tern {
    let admin = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let config = format!(
        "[server]\nrealm = \"{REALM}\"\n[auth.webhook]\nurl = \"{url}\"\ntoken = \"{TOKEN}\"\n{extra}\n"
    );
    let server = TernServer::builder()
        .config(&config)
        .args(&["--user", "alice:alice-pw", "--allow-peer", "127.0.0.0/8"])
        .args(&["--ports", &relay_ports_arg()])
        .args(&["--admin", &admin.to_string(), "--admin-token", ADMIN_TOKEN])
        .start();
    Tern { server, admin }
}

impl Tern {
    /// Allocate over UDP as `user`; the error code, or `None` for success.
    fn allocate(&self, user: &str, password: &str) -> Option<u16> {
        let mut client = TurnClient::new(self.server.addr, user, password).unwrap();
        client.allocate(vec![]).expect("an answer").code
    }

    fn lookups(&self, result: &str) -> f64 {
        metric(
            self.admin,
            &format!("tern_auth_webhook_lookups_total{{result=\"{result}\"}}"),
        )
    }
}

fn behaviour(username: &str) -> Behaviour {
    match username {
        "carol" => Behaviour::Password("carol-pw-5521"),
        "dave" => Behaviour::Key("dave-pw-8830"),
        "erin" => Behaviour::Status(500),
        "garbage" => Behaviour::Garbage,
        "slow" => Behaviour::Held("slow-pw"),
        name if name.starts_with("held-") => Behaviour::Held("held-pw"),
        _ => Behaviour::Status(403),
    }
}

#[test]
fn answers_give_keys_are_cached_and_refusals_too() {
    let service = Service::start(behaviour);
    let tern = start(&service.url(), "cache_ttl = 60\nrefusal_ttl = 60");
    assert_eq!(tern.allocate("carol", "carol-pw-5521"), None);
    // Another client of carol's: the key is known, the service is not asked again.
    assert_eq!(tern.allocate("carol", "carol-pw-5521"), None);
    assert_eq!(service.lookups("carol"), 1);
    // A wrong password with a known key is a plain 401, with no lookup.
    assert_eq!(tern.allocate("carol", "guess"), Some(401));
    assert_eq!(service.lookups("carol"), 1);

    // A key given as hex, over TCP: the held request is answered once the key is in
    // (nothing is retransmitted over TCP).
    let mut dave = TurnClient::connect_tcp(tern.server.addr, "dave", "dave-pw-8830").unwrap();
    assert_eq!(dave.allocate(vec![]).unwrap().code, None);

    // A refusal is a 401, remembered.
    assert_eq!(tern.allocate("mallory", "anything"), Some(401));
    assert_eq!(tern.allocate("mallory", "anything"), Some(401));
    assert_eq!(service.lookups("mallory"), 1);

    // Static users never cost a lookup.
    assert_eq!(tern.allocate("alice", "alice-pw"), None);
    assert_eq!(service.lookups("alice"), 0);

    assert_eq!(tern.lookups("key"), 2.0);
    assert_eq!(tern.lookups("refused"), 1.0);

    // What the service was told, with the token.
    let requests = service.requests();
    let (head, body) = &requests[0];
    assert!(head.starts_with("POST /turn/credentials "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("authorization: bearer {TOKEN}")),
        "{head}"
    );
    assert_eq!(body["username"], "carol");
    assert_eq!(body["realm"], REALM);
    assert_eq!(body["transport"], "udp");
    assert!(body["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(requests.iter().any(|(_, b)| b["transport"] == "tcp"));

    // No secret in the logs: not the token, the URL, a password or a key.
    let logs = tern.server.logs();
    let dave_key = LongTermKey::derive("dave", REALM, "dave-pw-8830").to_hex();
    for secret in [
        TOKEN,
        "/turn/credentials",
        "carol-pw-5521",
        dave_key.as_str(),
    ] {
        assert!(!logs.contains(secret), "{secret} in the logs:\n{logs}");
    }
}

#[test]
fn a_slow_service_blocks_no_other_client_and_fails_closed_at_its_deadline() {
    let service = Service::start(behaviour);
    let tern = start(&service.url(), "timeout = 1.5");
    let slow = std::thread::scope(|scope| {
        let slow = scope.spawn(|| tern.allocate("slow", "slow-pw"));
        // The service holds the lookup: meanwhile a static user allocates and a
        // webhook user with a cached answer... none is cached yet, so alice it is.
        service.wait_held(1);
        let mut alice = TurnClient::new(tern.server.addr, "alice", "alice-pw").unwrap();
        assert_eq!(alice.allocate(vec![]).unwrap().code, None);
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer_addr = peer.local_addr().unwrap();
        assert!(alice.create_permission(&[peer_addr]).unwrap().is_success());
        assert_eq!(service.lookups("slow"), 1, "the lookup is still held");
        slow.join().unwrap()
    });
    // No answer within the deadline: refused (fail closed), counted as a timeout.
    assert_eq!(slow, Some(401));
    assert_eq!(tern.lookups("timeout"), 1.0);
    // The client's retransmissions while it waited made no second lookup.
    assert_eq!(service.lookups("slow"), 1);
    service.release();
    assert!(
        tern.server.logs().contains("auth webhook: a lookup failed"),
        "{}",
        tern.server.logs()
    );
}

#[test]
fn nonsense_errors_and_a_dead_service_fail_closed() {
    let service = Service::start(behaviour);
    let tern = start(&service.url(), "error_ttl = 1");
    assert_eq!(tern.allocate("garbage", "x"), Some(401));
    assert_eq!(tern.lookups("invalid"), 1.0);
    assert_eq!(tern.allocate("erin", "x"), Some(401));
    assert_eq!(tern.lookups("status"), 1.0);
    // Within error_ttl the failure stands; after it, the service is asked again.
    assert_eq!(tern.allocate("erin", "x"), Some(401));
    assert_eq!(service.lookups("erin"), 1);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(tern.allocate("erin", "x"), Some(401));
    assert_eq!(service.lookups("erin"), 2);

    // Nothing listens at the URL.
    let closed = format!("http://127.0.0.1:{}/", free_udp_port());
    let dead = start(&closed, "");
    assert_eq!(dead.allocate("carol", "carol-pw-5521"), Some(401));
    assert_eq!(dead.lookups("unreachable"), 1.0);
    assert_eq!(dead.allocate("alice", "alice-pw"), None);
}

#[test]
fn a_stale_key_stands_in_while_the_service_fails_when_allowed() {
    let service = Service::start(behaviour);
    let tern = start(
        &service.url(),
        "cache_ttl = 1\nerror_ttl = 1\nstale_ttl = 3600",
    );
    assert_eq!(tern.allocate("carol", "carol-pw-5521"), None);
    service.fail_from_now_on();
    std::thread::sleep(Duration::from_millis(1100));
    // The key's time is up and the service fails: the stale key stands in.
    assert_eq!(tern.allocate("carol", "carol-pw-5521"), None);
    assert_eq!(service.lookups("carol"), 2);
    assert_eq!(tern.lookups("status"), 1.0);
    // A username never answered is refused all the same.
    assert_eq!(tern.allocate("dave", "dave-pw-8830"), Some(401));
}

#[test]
fn lookups_are_capped_in_flight_and_the_queue_is_bounded() {
    let service = Service::start(behaviour);
    let tern = start(&service.url(), "timeout = 8\nconcurrency = 2\nqueue = 2");
    let users = ["held-1", "held-2", "held-3", "held-4", "held-5", "held-6"];
    let codes = std::thread::scope(|scope| {
        let clients: Vec<_> = users
            .iter()
            .map(|user| scope.spawn(|| tern.allocate(user, "held-pw")))
            .collect();
        service.wait_held(2);
        // Two in flight, two queued, two refused at once (queue_full) while the
        // service holds the first two.
        let deadline = Instant::now() + Duration::from_secs(10);
        while tern.lookups("queue_full") < 2.0 {
            assert!(Instant::now() < deadline, "no queue_full counted");
            std::thread::sleep(Duration::from_millis(20));
        }
        service.release();
        clients
            .into_iter()
            .map(|c| c.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(service.max_in_flight(), 2);
    let granted = codes.iter().filter(|c| c.is_none()).count();
    let refused = codes.iter().filter(|c| **c == Some(401)).count();
    assert_eq!((granted, refused), (4, 2), "{codes:?}");
    assert_eq!(tern.lookups("key"), 4.0);
    assert_eq!(tern.lookups("queue_full"), 2.0);
}
