//! A fleet of three `tern serve` nodes on loopback sharing one real Redis (Debian's
//! redis-server, started here on a free port): quotas hold fleet-wide, a revocation
//! through one node's admin API kills on the others, a nonce from one node works on
//! another, a killed node leaves the registry after its TTL, a draining node redirects
//! Allocate (300 Try Alternate) and `tern probe` follows it, and relaying goes on
//! while Redis is down, the counts converging when it is back.
//!
//! Needs redis-server (`scripts/install-test-deps.sh` installs it); missing, the tests
//! fail with that hint.

mod support;

#[path = "support/certs.rs"]
mod certs;

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use stun::attributes::ATTR_XOR_RELAYED_ADDRESS;
use stun::message::METHOD_ALLOCATE;
use support::{
    BackgroundProcess, TempDir, TernServer, ensure_tool, free_port_range, free_udp_port,
    http_request, metric, run_tern,
};
use tern::client::{Attr, Outgoing, TurnClient};

const TOKEN: &str = "fleet-admin-token";
const USER: &str = "alice";
const PASS: &str = "pw";
/// For REST credentials with a user id of their own per client.
const REST_SECRET: &str = "fleet-rest-secret";
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Node TTL in the tests' config.
const NODE_TTL: Duration = Duration::from_secs(3);
const WAIT: Duration = Duration::from_secs(3);

/// A redis-server of the test's own, on a loopback port, without persistence.
struct Redis {
    process: BackgroundProcess,
    port: u16,
    dir: TempDir,
}

impl Redis {
    fn start() -> Redis {
        let dir = TempDir::new("fleet-redis");
        let port = free_udp_port();
        let process = Self::spawn(port, &dir);
        Redis { process, port, dir }
    }

    fn spawn(port: u16, dir: &TempDir) -> BackgroundProcess {
        let server = ensure_tool("redis-server");
        let mut cmd = Command::new(server);
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdin(Stdio::null());
        let process = BackgroundProcess::spawn("redis-server", &mut cmd, dir.path());
        let deadline = Instant::now() + WAIT;
        while !Self::answers(port) {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        process
    }

    /// Whether PING gets PONG.
    fn answers(port: u16) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// Runs one command (RESP array of bulk strings, any bytes); the first reply line.
    fn command(&self, args: &[&[u8]]) -> String {
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg);
            request.extend_from_slice(b"\r\n");
        }
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(&request).unwrap();
        let mut reply = [0u8; 64];
        let n = s.read(&mut reply).unwrap();
        String::from_utf8_lossy(&reply[..n])
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn stop(&mut self) {
        self.process.stop();
    }

    /// A fresh, empty Redis on the same port (what nodes see after a Redis restart).
    fn restart(&mut self) {
        self.process = Self::spawn(self.port, &self.dir);
    }
}

struct Node {
    server: TernServer,
    admin: SocketAddr,
}

impl Node {
    /// Node `id` of a fleet on `redis` (keys under `prefix`), `extra` in `[cluster]`.
    fn start(id: &str, redis: &Redis, prefix: &str, extra: &str) -> Node {
        let admin = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
        let (min, max) = free_port_range(50);
        let config = format!(
            "[cluster]\nredis_url = \"{}\"\nnode_id = \"{id}\"\nkey_prefix = \"{prefix}\"\n\
             heartbeat_interval = {}\nnode_ttl = {}\n{extra}\n\
             [limits]\nuser_allocations = 2\n",
            redis.url(),
            HEARTBEAT.as_secs(),
            NODE_TTL.as_secs()
        );
        let server = TernServer::builder()
            .config(&config)
            .args(&["--user", &format!("{USER}:{PASS}"), "--user", "bob:pw"])
            .args(&["--secret", REST_SECRET])
            .args(&[
                "--ports",
                &format!("{min}-{max}"),
                "--allow-peer",
                "127.0.0.0/8",
            ])
            .args(&["--admin", &admin.to_string(), "--admin-token", TOKEN])
            .start();
        Node { server, admin }
    }

    fn client(&self, user: &str) -> TurnClient {
        TurnClient::new(
            self.server.addr,
            user,
            if user == USER { PASS } else { "pw" },
        )
        .unwrap()
    }

    fn allocate(&self, user: &str) -> (TurnClient, Option<u16>) {
        let mut client = self.client(user);
        let code = client.allocate(vec![]).unwrap().code;
        (client, code)
    }

    fn sessions(&self) -> Vec<Value> {
        let (code, body) = http_request(self.admin, "GET", "/api/sessions", Some(TOKEN), "");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    fn fleet_sessions(&self) -> (u16, Vec<Value>) {
        let (code, body) = http_request(self.admin, "GET", "/api/fleet/sessions", Some(TOKEN), "");
        (code, serde_json::from_str(&body).unwrap_or_default())
    }
}

/// Three nodes on one Redis, with keys of their own so tests do not see each other.
fn fleet(redis: &Redis, extra: &str) -> Vec<Node> {
    let prefix = format!("t{}", rand::random::<u32>());
    ["a", "b", "c"]
        .iter()
        .map(|id| Node::start(id, redis, &prefix, extra))
        .collect()
}

/// Waits until `cond` holds, at most `limit`; how long it took.
fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(25));
    }
    start.elapsed()
}

/// Long enough for every node to have published and read the others' records.
fn settle() {
    std::thread::sleep(HEARTBEAT * 2 + Duration::from_millis(500));
}

#[test]
fn a_user_quota_holds_across_the_fleet() {
    let redis = Redis::start();
    let nodes = fleet(&redis, "");
    let (_on_a, code) = nodes[0].allocate(USER);
    assert_eq!(code, None);
    let (mut on_b, code) = nodes[1].allocate(USER);
    assert_eq!(code, None);
    settle();
    for node in &nodes {
        assert_eq!(
            node.allocate(USER).1,
            Some(486),
            "third allocation of alice"
        );
    }
    // Another user is not affected, and freeing one of alice's frees a slot anywhere.
    assert_eq!(nodes[2].allocate("bob").1, None);
    assert!(on_b.refresh(Some(0)).unwrap().is_success());
    settle();
    assert_eq!(nodes[2].allocate(USER).1, None);
}

#[test]
fn a_realm_cap_holds_across_users_and_nodes() {
    let redis = Redis::start();
    let nodes = fleet(&redis, "realm_allocations = 2\n");
    let (_alice, code_a) = nodes[0].allocate(USER);
    let (_bob, code_b) = nodes[1].allocate("bob");
    assert_eq!((code_a, code_b), (None, None));
    settle();
    for node in &nodes {
        assert_eq!(node.allocate("bob").1, Some(486), "the realm holds 2");
    }
}

/// The self-test page of one node mints credentials every node accepts: its URLs may
/// lead to any node of the fleet, or a redirect may take it to another.
#[test]
fn self_test_credentials_from_one_node_work_on_another() {
    let redis = Redis::start();
    let prefix = format!("t{}", rand::random::<u32>());
    let token = "fleet-selftest-token-0123";
    let page = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let selftest = format!("[selftest]\nlisten = \"{page}\"\ntoken = \"{token}\"\n");
    let other_page = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let other = format!("[selftest]\nlisten = \"{other_page}\"\ntoken = \"{token}\"\n");
    let a = Node::start("a", &redis, &prefix, &format!("\n{selftest}"));
    let b = Node::start("b", &redis, &prefix, &format!("\n{other}"));
    let (code, body) = http_request(page, "GET", &format!("/api/ice?token={token}"), None, "");
    assert_eq!(code, 200, "{body}");
    let ice: Value = serde_json::from_str(&body).unwrap();
    let (user, pass) = (
        ice["username"].as_str().unwrap(),
        ice["credential"].as_str().unwrap(),
    );
    for node in [&a, &b] {
        let mut client = TurnClient::new(node.server.addr, user, pass).unwrap();
        let reply = client.allocate(vec![]).unwrap();
        assert!(
            reply.is_success(),
            "{:?} on {}",
            reply.code,
            node.server.addr
        );
    }
}

/// Garbage in Redis (a non-UTF-8 revocation, a node id whose record is not JSON, a
/// record missing fields) is skipped entry by entry: the fleet keeps working.
#[test]
fn foreign_or_corrupt_entries_in_redis_are_skipped() {
    let redis = Redis::start();
    let prefix = format!("t{}", rand::random::<u32>());
    let p = prefix.as_bytes();
    let key = |suffix: &[u8]| [p, suffix].concat();
    assert_eq!(
        redis.command(&[b"SADD", &key(b":revoked"), b"\xff\xfe"]),
        ":1"
    );
    assert_eq!(
        redis.command(&[b"SADD", &key(b":nodes"), b"junk", b"old"]),
        ":2"
    );
    assert_eq!(
        redis.command(&[b"SET", &key(b":node:junk"), b"not json"]),
        "+OK"
    );
    let old_record = br#"{"id":"old","realm":"tern","allocations":1,"users":{"alice":1}}"#;
    assert_eq!(
        redis.command(&[b"SET", &key(b":node:old"), old_record]),
        "+OK"
    );
    let a = Node::start("a", &redis, &prefix, "");
    settle();
    assert_eq!(
        metric(a.admin, "tern_cluster_redis_up"),
        1.0,
        "{}",
        a.server.logs()
    );
    assert_eq!(
        metric(a.admin, "tern_cluster_nodes"),
        2.0,
        "a and the old-format node"
    );
    // The old-format record still counts: alice has 1 of her 2 there.
    assert_eq!(a.allocate(USER).1, None);
    assert_eq!(a.allocate(USER).1, Some(486));
}

#[test]
fn a_revocation_on_one_node_kills_on_all() {
    let redis = Redis::start();
    let nodes = fleet(&redis, "");
    let (_on_b, code_b) = nodes[1].allocate(USER);
    let (_on_c, code_c) = nodes[2].allocate(USER);
    assert_eq!((code_b, code_c), (None, None));
    let (_bob, code) = nodes[2].allocate("bob");
    assert_eq!(code, None);
    let sent = Instant::now();
    let (code, body) = http_request(
        nodes[0].admin,
        "POST",
        &format!("/api/users/{USER}/revoke"),
        Some(TOKEN),
        "",
    );
    assert_eq!(code, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["fleet"], true, "{answer}");
    for node in &nodes[1..] {
        wait_until(WAIT, "alice's sessions killed", || {
            node.sessions().iter().all(|s| s["user"] != USER)
        });
    }
    println!("revocation reached every node in {:?}", sent.elapsed());
    assert_eq!(nodes[2].sessions().len(), 1, "bob's allocation stays");
    for node in &nodes {
        assert_eq!(node.allocate(USER).1, Some(401), "alice is refused");
    }
}

#[test]
fn a_nonce_from_one_node_is_accepted_by_another() {
    let redis = Redis::start();
    let nodes = fleet(&redis, "");
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut on_a = TurnClient::with_socket(
        socket.try_clone().unwrap(),
        nodes[0].server.addr,
        USER,
        PASS,
    )
    .unwrap();
    assert!(
        on_a.allocate(vec![]).unwrap().is_success(),
        "challenged by a"
    );
    let mut on_b = TurnClient::with_socket(socket, nodes[1].server.addr, USER, PASS).unwrap();
    on_b.adopt_challenge(&on_a);
    let out = Outgoing {
        attrs: vec![Attr::udp_transport()],
        sign: true,
        fingerprint: true,
        ..Outgoing::default()
    };
    let (tid, bytes) = on_b.encode(METHOD_ALLOCATE, &out);
    let reply = on_b
        .exchange(tid, &bytes)
        .unwrap()
        .expect("an answer from b");
    assert_eq!(reply.code, None, "b took a's nonce at once (no 438)");
}

#[test]
fn a_killed_node_leaves_the_registry_and_frees_its_quota_share() {
    let redis = Redis::start();
    let mut nodes = fleet(&redis, "");
    let (_on_a, code_a) = nodes[0].allocate(USER);
    let (_on_c, code_c) = nodes[2].allocate(USER);
    assert_eq!((code_a, code_c), (None, None));
    wait_until(WAIT, "both sessions in the registry", || {
        nodes[1].fleet_sessions().1.len() == 2
    });
    let (code, sessions) = nodes[1].fleet_sessions();
    assert_eq!(code, 200);
    let admin = nodes[1].admin.to_string();
    let table = run_tern(
        &["sessions", "--fleet", "--admin", &admin, "--token", TOKEN],
        WAIT,
    );
    assert!(table.success(), "{}", table.describe());
    assert!(table.stdout.starts_with("NODE"), "{}", table.stdout);
    assert!(table.stdout.contains("2 session(s)"), "{}", table.stdout);
    let mut where_: Vec<&str> = sessions
        .iter()
        .map(|s| s["node"].as_str().unwrap())
        .collect();
    where_.sort();
    assert_eq!(where_, ["a", "c"]);
    settle();
    assert_eq!(
        nodes[1].allocate(USER).1,
        Some(486),
        "quota 2 used on a and c"
    );

    let c = nodes.remove(2);
    let pid = c.server.pid();
    let killed = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let gone = wait_until(NODE_TTL + 3 * HEARTBEAT, "c's session expired", || {
        nodes[1].fleet_sessions().1.len() == 1
    });
    println!("a killed node left the registry after {gone:?} (node_ttl {NODE_TTL:?})");
    settle();
    assert_eq!(nodes[1].allocate(USER).1, None, "c's share is released");
}

#[test]
fn a_draining_node_redirects_to_a_live_one_and_probe_follows() {
    let redis = Redis::start();
    let nodes = fleet(&redis, "");
    let (code, _) = http_request(nodes[1].admin, "PUT", "/api/drain", Some(TOKEN), "on");
    assert_eq!(code, 204);
    settle();
    let mut client = nodes[1].client(USER);
    let reply = client.allocate(vec![]).unwrap();
    assert_eq!(reply.code, Some(300), "draining node answers Try Alternate");
    let alternate = reply.alternate_server().expect("ALTERNATE-SERVER");
    let others = [nodes[0].server.addr, nodes[2].server.addr];
    assert!(others.contains(&alternate), "{alternate} is a live node");

    let url = format!("turn:127.0.0.1:{}?transport=udp", nodes[1].server.port());
    let out = run_tern(
        &["probe", &url, "--user", USER, "--pass", PASS, "--json"],
        Duration::from_secs(20),
    );
    assert!(out.success(), "{}", out.describe());
    let report: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    let allocate = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "allocate")
        .unwrap();
    let detail = allocate["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("redirected to {alternate}")),
        "{detail}"
    );
    assert_eq!(
        metric(nodes[1].admin, "tern_responses_total{code=\"300\"}"),
        2.0
    );
    // Over TCP the same: a client keeps its transport when redirected.
    let mut tcp = TurnClient::connect_tcp(nodes[1].server.addr, USER, PASS).unwrap();
    let reply = tcp.allocate(vec![]).unwrap();
    assert_eq!(reply.code, Some(300));
    assert!(others.contains(&reply.alternate_server().unwrap()));
}

/// Clients that all ask node a, with every node's threshold at 5 allocations, paced
/// like a busy minute compressed into three seconds: following 300 Try Alternate
/// like a browser does, they fill each node up to its threshold.
#[test]
fn an_overloaded_node_hands_new_allocations_to_the_others() {
    let redis = Redis::start();
    let nodes = fleet(&redis, "redirect_above_allocations = 5\n");
    settle();
    let by_addr = |addr: SocketAddr| nodes.iter().position(|n| n.server.addr == addr).unwrap();
    let mut held = Vec::new();
    let mut landed = [0usize; 3];
    let mut redirected = 0;
    for i in 0..14 {
        let (user, pass) = tern::tools::creds::mint(REST_SECRET, 600, Some(&format!("u{i}")));
        let mut server = nodes[0].server.addr;
        let (client, reply) = loop {
            let mut client = TurnClient::new(server, &user, &pass).unwrap();
            let reply = client.allocate(vec![]).unwrap();
            match (reply.code, reply.alternate_server()) {
                // Like a browser, a client follows a few redirects in a row.
                (Some(300), Some(alternate)) if redirected < 3 * 14 => {
                    redirected += 1;
                    server = alternate;
                }
                _ => break (client, reply),
            }
        };
        assert!(reply.is_success(), "{:?} from {server}", reply.code);
        landed[by_addr(server)] += 1;
        held.push(client);
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "14 allocations asked of a (threshold 5): a {}, b {}, c {}; {redirected} redirected",
        landed[0], landed[1], landed[2]
    );
    assert_eq!(landed[0], 5, "a stops at its threshold");
    assert!(landed[1] <= 5 && landed[2] <= 5, "{landed:?}");
    assert_eq!(landed[1] + landed[2], 9);
    assert!(redirected >= 9, "{redirected}");
}

/// A client with a channel to a local echo peer through `node`.
struct Call {
    client: TurnClient,
    peer: UdpSocket,
    relay: SocketAddr,
}

impl Call {
    fn new(node: &Node, user: &str) -> Call {
        let mut client = node.client(user);
        let reply = client.allocate(vec![]).unwrap();
        assert!(reply.is_success(), "{:?}", reply.code);
        let relay = reply.xor_address(ATTR_XOR_RELAYED_ADDRESS).unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(WAIT)).unwrap();
        let bound = client
            .channel_bind(0x4000, peer.local_addr().unwrap())
            .unwrap();
        assert!(bound.is_success());
        Call {
            client,
            peer,
            relay,
        }
    }

    fn round_trip(&mut self) {
        self.client.send_channel_data(0x4000, b"ping").unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = self.peer.recv_from(&mut buf).expect("peer got data");
        assert_eq!((&buf[..n], from), (&b"ping"[..], self.relay));
        self.peer.send_to(b"pong", self.relay).unwrap();
        assert!(self.client.recv_data(WAIT).unwrap().is_some(), "echo back");
    }
}

#[test]
fn relaying_goes_on_without_redis_and_counts_converge_when_it_returns() {
    let mut redis = Redis::start();
    let nodes = fleet(&redis, "");
    let mut calls: Vec<Call> = nodes.iter().map(|n| Call::new(n, "bob")).collect();
    settle();
    for node in &nodes {
        assert_eq!(metric(node.admin, "tern_cluster_redis_up"), 1.0);
        assert_eq!(metric(node.admin, "tern_cluster_nodes"), 3.0);
    }
    redis.stop();
    for node in &nodes {
        wait_until(WAIT, "Redis seen down", || {
            metric(node.admin, "tern_cluster_redis_up") == 0.0
        });
    }
    for call in &mut calls {
        call.round_trip();
    }
    // Local quotas: alice gets an allocation on each node (2 per node).
    let held: Vec<TurnClient> = nodes
        .iter()
        .map(|n| {
            let (client, code) = n.allocate(USER);
            assert_eq!(code, None, "local quota while Redis is down");
            client
        })
        .collect();
    let logs = nodes[0].server.logs();
    assert_eq!(
        logs.matches("Redis unreachable").count(),
        1,
        "logged once:\n{logs}"
    );

    redis.restart();
    for node in &nodes {
        wait_until(Duration::from_secs(15), "Redis seen back", || {
            metric(node.admin, "tern_cluster_redis_up") == 1.0
        });
    }
    wait_until(Duration::from_secs(5), "registry rebuilt", || {
        nodes[0].fleet_sessions().1.len() == 6
    });
    settle();
    // Counts converged: alice holds 3 allocations over the fleet, past her quota of 2.
    for node in &nodes {
        assert_eq!(node.allocate(USER).1, Some(486));
    }
    for call in &mut calls {
        call.round_trip();
    }
    drop(held);
}

/// rediss:// with a password: a node joins over TLS (trusting the test certificate
/// through SSL_CERT_FILE, as it would a private CA); with a wrong password it stays
/// alone, says so, and serves.
#[test]
fn a_node_reaches_redis_over_tls_with_a_password() {
    let dir = TempDir::new("fleet-redis-tls");
    let files = certs::CertFiles::in_dir(dir.path());
    certs::TestCert::new().write(&files);
    let (cert, key) = (files.cert.to_str().unwrap(), files.key.to_str().unwrap());
    let port = free_udp_port();
    let mut cmd = Command::new(ensure_tool("redis-server"));
    cmd.args([
        "--port",
        "0",
        "--tls-port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
    ])
    .args([
        "--tls-cert-file",
        cert,
        "--tls-key-file",
        key,
        "--tls-ca-cert-file",
        cert,
    ])
    .args(["--tls-auth-clients", "no", "--requirepass", "s3cret"])
    .args(["--save", "", "--appendonly", "no"])
    .stdin(Stdio::null());
    let redis = BackgroundProcess::spawn("redis-tls", &mut cmd, dir.path());
    wait_until(WAIT, "Redis's TLS port open", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    for (password, up) in [("s3cret", 1.0), ("wrong", 0.0)] {
        let admin = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
        let (min, max) = free_port_range(20);
        let config = format!(
            "[cluster]\nredis_url = \"rediss://:{password}@127.0.0.1:{port}/\"\nnode_id = \"tls\"\n"
        );
        let server = TernServer::builder()
            .config(&config)
            .env("SSL_CERT_FILE", cert)
            .args(&["--ports", &format!("{min}-{max}"), "--user", "bob:pw"])
            .args(&["--admin", &admin.to_string()])
            .start();
        std::thread::sleep(HEARTBEAT * 2);
        assert_eq!(
            metric(admin, "tern_cluster_redis_up"),
            up,
            "password {password}:\n{}\n{}",
            server.logs(),
            redis.logs()
        );
        if up == 0.0 {
            assert!(
                server.logs().contains("Redis unreachable"),
                "{}",
                server.logs()
            );
        }
        let mut client = TurnClient::new(server.addr, "bob", "pw").unwrap();
        assert!(client.allocate(vec![]).unwrap().is_success());
    }
}

/// `tern usage` on a node with `--json`, `extra` filters: the records, newest first.
fn usage(node: &Node, extra: &[&str]) -> Vec<Value> {
    let admin = node.admin.to_string();
    let mut args = vec!["usage", "--admin", &admin, "--token", TOKEN, "--json"];
    args.extend_from_slice(extra);
    let out = support::run_tern(&args, WAIT * 3);
    assert!(out.success(), "tern usage: {}", out.describe());
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

/// Allocates as `user` on `node` and deletes it at once: one usage record.
fn allocate_and_delete(node: &Node, user: &str) -> SocketAddr {
    let (mut client, code) = node.allocate(user);
    assert_eq!(code, None, "Allocate refused");
    assert!(client.refresh(Some(0)).unwrap().is_success());
    client.local_addr()
}

#[test]
fn usage_records_of_every_node_are_read_back_with_tern_usage() {
    let mut redis = Redis::start();
    let prefix = format!("t{}", rand::random::<u32>());
    let nodes = [
        Node::start("a", &redis, &prefix, ""),
        Node::start("b", &redis, &prefix, ""),
    ];
    let first = allocate_and_delete(&nodes[0], USER);
    let second = allocate_and_delete(&nodes[1], "bob");
    let third = allocate_and_delete(&nodes[1], USER);
    wait_until(WAIT, "three records in Redis", || {
        usage(&nodes[0], &[]).len() == 3
    });
    // Newest first, from both nodes, and the same from either node.
    let all = usage(&nodes[1], &[]);
    let clients: Vec<&str> = all.iter().map(|r| r["client"].as_str().unwrap()).collect();
    assert_eq!(
        clients,
        [third.to_string(), second.to_string(), first.to_string()],
        "{all:?}"
    );
    let nodes_seen: Vec<&str> = all.iter().map(|r| r["node"].as_str().unwrap()).collect();
    assert_eq!(nodes_seen, ["b", "b", "a"]);
    assert!(all.iter().all(|r| r["reason"] == "deleted"), "{all:?}");
    assert_eq!(usage(&nodes[0], &["--user", USER]).len(), 2);
    assert_eq!(
        usage(&nodes[0], &["--user", "bob", "--since", "1h"]).len(),
        1
    );
    assert_eq!(usage(&nodes[0], &["--limit", "1"]).len(), 1);
    assert_eq!(
        metric(nodes[1].admin, "tern_usage_records_total{sink=\"redis\"}"),
        2.0
    );

    // Redis away: the record waits in the queue and is written once Redis is back.
    redis.stop();
    let during = allocate_and_delete(&nodes[0], "bob");
    redis.restart();
    wait_until(Duration::from_secs(20), "the queued record written", || {
        usage(&nodes[0], &[])
            .iter()
            .any(|r| r["client"] == during.to_string())
    });
    assert_eq!(
        metric(
            nodes[0].admin,
            "tern_usage_records_dropped_total{reason=\"queue_full\"}"
        ),
        0.0
    );
}

/// A user's bandwidth limit holds over the fleet: with one of alice's allocations held
/// on node b, node a gives her allocation there half of her rate (the heartbeat's
/// counts split it by allocations), measured with `tern load`.
#[test]
fn a_users_bandwidth_limit_is_split_over_the_nodes_it_relays_on() {
    let redis = Redis::start();
    let prefix = format!("t{}", rand::random::<u32>());
    // 100 kB/s for alice over the fleet, 16 kB of burst.
    let limits = "\n[bandwidth]\nuser = \"800 kbit/s\"\nuser_burst = \"16 kB\"\n";
    let nodes = [
        Node::start("a", &redis, &prefix, limits),
        Node::start("b", &redis, &prefix, limits),
    ];
    let (_held_on_b, code) = nodes[1].allocate(USER);
    assert_eq!(code, None);
    settle();
    // 1000-byte packets at 200 a second for 4 s: four times node a's half.
    let server = nodes[0].server.addr.to_string();
    let args = [
        "load",
        &server,
        "--json",
        "--user",
        USER,
        "--pass",
        PASS,
        "--allocations",
        "1",
        "--rate",
        "200",
        "--payload",
        "1000",
        "--duration",
        "4",
    ];
    let run = run_tern(&args, Duration::from_secs(60));
    assert!(run.success(), "{}", run.describe());
    let report: Value = serde_json::from_str(run.stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {}", run.describe()));
    let delivered = report["peer_received"].as_u64().expect("peer_received") * 1000;
    // Half the rate for 4 s, and half the burst.
    let expected = (50_000 * 4 + 8_000) as f64;
    let ratio = delivered as f64 / expected;
    println!("alice on node a: {delivered} bytes delivered, {expected} expected: ratio {ratio:.3}");
    assert!((0.95..=1.05).contains(&ratio), "ratio {ratio:.3}: {report}");
    let drops = metric(
        nodes[0].admin,
        "tern_bandwidth_dropped_packets_total{limit=\"user\",direction=\"to_peer\"}",
    );
    assert!(drops > 0.0);
}
