//! Helpers shared by the integration tests: free ports, spawning `tern serve` and
//! other processes with bounded lifetimes, a STUN Binding probe (the crate's own
//! `TurnClient`), and parsing of coturn's `turnutils_uclient` summary.
//!
//! Use it from a test file with `mod support;`. Each test binary uses a subset.
#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use stun::attributes::ATTR_XORMAPPED_ADDRESS;
use stun::message::METHOD_BINDING;
use tern::client::{Outgoing, TurnClient};

/// How long a freshly spawned server gets to answer its first STUN Binding request.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

pub const LOCALHOST_V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
pub const LOCALHOST_V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

// ---------------------------------------------------------------------------------------
// Temporary directories
// ---------------------------------------------------------------------------------------

/// A directory under the system temp dir, removed on drop unless the thread is panicking
/// (then it is kept, and its path printed, so the logs in it can be inspected).
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("creating temp dir {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `contents` to `name` in the directory; returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.join(name);
        fs::write(&path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("(kept temp dir {} for inspection)", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------------

/// A port on 127.0.0.1 free right now for both UDP and TCP (tern and coturn listen on
/// both), see [`free_udp_port_on`].
pub fn free_udp_port() -> u16 {
    free_udp_port_on(LOCALHOST_V4)
}

/// Ports handed out by this process, so two tests never get the same one.
static HANDED_OUT_PORTS: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// A port on `ip` free right now for both UDP and TCP, within 10000-19999: below Linux's
/// ephemeral range (32768-60999), so a client socket's source port (another test's, or
/// Pebble's, curl's, HAProxy's) can never take it between this call and the bind, as it
/// could with a port the kernel picked for `bind(0)`. Never the same port twice in a
/// process; relay ranges ([`free_port_range`]) come from 20000-32000.
pub fn free_udp_port_on(ip: IpAddr) -> u16 {
    const LOW: u16 = 10000;
    const HIGH: u16 = 19999;
    let mut handed_out = HANDED_OUT_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..500 {
        let port = rand::random_range(LOW..=HIGH);
        if handed_out.contains(&port) {
            continue;
        }
        let addr = SocketAddr::new(ip, port);
        if UdpSocket::bind(addr).is_ok() && std::net::TcpListener::bind(addr).is_ok() {
            handed_out.push(port);
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on {ip} in {LOW}-{HIGH}");
}

/// Blocks handed out by this process, so concurrent tests never share a relay range.
static RESERVED_RANGES: Mutex<Vec<(u16, u16)>> = Mutex::new(Vec::new());

/// A block of `len` consecutive UDP ports on 127.0.0.1, all free right now, within
/// 20000-32000 (below Linux's ephemeral range, so client sockets do not race for them).
/// Returns `(min, max)` inclusive. Blocks never overlap others returned in this process.
pub fn free_port_range(len: u16) -> (u16, u16) {
    free_port_range_on(LOCALHOST_V4, len)
}

/// Like [`free_port_range`], checking the ports on `ip`.
pub fn free_port_range_on(ip: IpAddr, len: u16) -> (u16, u16) {
    const LOW: u16 = 20000;
    const HIGH: u16 = 32000;
    assert!(len > 0 && len < HIGH - LOW, "bad range length {len}");
    for _ in 0..200 {
        let min = rand::random_range(LOW..=HIGH - len);
        let max = min + (len - 1);
        let mut reserved = RESERVED_RANGES.lock().unwrap_or_else(|e| e.into_inner());
        if reserved.iter().any(|&(a, b)| min <= b && a <= max) {
            continue;
        }
        let all_free = (min..=max).all(|port| UdpSocket::bind(SocketAddr::new(ip, port)).is_ok());
        if all_free {
            reserved.push((min, max));
            return (min, max);
        }
    }
    panic!("could not find {len} consecutive free UDP ports on {ip} in {LOW}-{HIGH}");
}

/// `MIN-MAX` for a fresh free relay range of ~200 ports, as `tern serve --ports` takes it.
pub fn relay_ports_arg() -> String {
    let (min, max) = free_port_range(200);
    format!("{min}-{max}")
}

/// Whether IPv6 loopback works here: a UDP socket on [::1] can send to itself.
pub fn ipv6_loopback_available() -> Result<(), String> {
    let socket = UdpSocket::bind("[::1]:0").map_err(|e| format!("cannot bind [::1]:0: {e}"))?;
    let addr = socket.local_addr().map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    socket
        .send_to(b"ping", addr)
        .map_err(|e| format!("cannot send on [::1]: {e}"))?;
    let mut buf = [0u8; 16];
    match socket.recv_from(&mut buf) {
        Ok((4, _)) if &buf[..4] == b"ping" => Ok(()),
        Ok(_) => Err("unexpected datagram on [::1]".into()),
        Err(e) => Err(format!("no loopback delivery on [::1]: {e}")),
    }
}

// ---------------------------------------------------------------------------------------
// Tools and processes
// ---------------------------------------------------------------------------------------

/// Full path of `name` if it is an executable file somewhere on PATH.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Panics with instructions when an external tool the test needs is missing: tests must
/// fail loudly rather than skip silently.
pub fn ensure_tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| {
        panic!(
            "required tool `{name}` was not found in PATH. Install the test dependencies \
             with `sudo scripts/install-test-deps.sh` (Debian: apt-get install coturn pebble ...) and \
             run the tests again."
        )
    })
}

/// The result of a process run to completion (or killed at its deadline).
#[derive(Debug)]
pub struct RunOutput {
    /// None when the process was killed at the deadline.
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl RunOutput {
    pub fn success(&self) -> bool {
        !self.timed_out && self.status.is_some_and(|s| s.success())
    }

    /// stdout then stderr, for parsing tools that print to either.
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// A readable dump for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "status: {:?}{} after {:.1?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            if self.timed_out {
                " (TIMED OUT, killed)"
            } else {
                ""
            },
            self.elapsed,
            self.stdout,
            self.stderr
        )
    }
}

fn drain<R: Read + Send + 'static>(mut reader: R) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = reader.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs the Python client `tests/support/SCRIPT` against `server` (its IP and port,
/// then `args`) within a minute and returns the one JSON object it prints; panics with
/// its output and the server's logs when it fails.
pub fn python_client(script: &str, server: &TernServer, args: &[&str]) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(script);
    let mut cmd = Command::new(ensure_tool("python3"));
    cmd.arg(path)
        .arg(server.addr.ip().to_string())
        .arg(server.addr.port().to_string())
        .args(args);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
    let failed = |why: &str| {
        panic!(
            "{script} {args:?}: {why}
{}
{}",
            out.describe(),
            server.logs()
        )
    };
    if !out.success() {
        failed("failed");
    }
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| failed(&e.to_string()))
}

/// Runs `cmd` with stdin closed and stdout/stderr captured, killing it after `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> RunOutput {
    run_bounded(cmd.stdin(Stdio::null()), None, timeout)
}

/// [`run_with_timeout`] with `input` on the process's stdin, which is then closed.
pub fn run_with_input(cmd: &mut Command, input: &str, timeout: Duration) -> RunOutput {
    run_bounded(cmd.stdin(Stdio::piped()), Some(input), timeout)
}

fn run_bounded(cmd: &mut Command, input: Option<&str>, timeout: Duration) -> RunOutput {
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let out = drain(child.stdout.take().expect("piped stdout"));
    let err = drain(child.stderr.take().expect("piped stderr"));
    if let Some(input) = input {
        // Dropping the handle closes stdin, so the process sees the end of its input.
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(input.as_bytes())
            .unwrap_or_else(|e| panic!("writing to the stdin of {cmd:?}: {e}"));
    }
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() >= timeout => {
                timed_out = true;
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("waiting for {cmd:?}: {e}"),
        }
    };
    RunOutput {
        status,
        timed_out,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        elapsed: start.elapsed(),
    }
}

/// A long-running child process whose stdout/stderr go to files; killed (and reaped) on
/// drop, and its output printed when the owning test panics.
#[derive(Debug)]
pub struct BackgroundProcess {
    name: String,
    child: Child,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl BackgroundProcess {
    /// Spawns `cmd` with output redirected to `<dir>/<name>.stdout` and `.stderr`.
    pub fn spawn(name: &str, cmd: &mut Command, dir: &Path) -> BackgroundProcess {
        let stdout_path = dir.join(format!("{name}.stdout"));
        let stderr_path = dir.join(format!("{name}.stderr"));
        let stdout = File::create(&stdout_path).expect("creating stdout log");
        let stderr = File::create(&stderr_path).expect("creating stderr log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name} ({cmd:?}): {e}"));
        BackgroundProcess {
            name: name.to_string(),
            child,
            stdout_path,
            stderr_path,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has already ended.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Everything the process printed so far, labelled.
    pub fn logs(&self) -> String {
        format!(
            "--- {name} stdout ---\n{}\n--- {name} stderr ---\n{}",
            self.stdout(),
            self.stderr(),
            name = self.name
        )
    }

    /// Panics (with the logs) if the process is no longer running.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.try_exit_status() {
            panic!(
                "{} exited unexpectedly with {status}\n{}",
                self.name,
                self.logs()
            );
        }
    }

    /// Kills and reaps the process (idempotent).
    pub fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for BackgroundProcess {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

// ---------------------------------------------------------------------------------------
// STUN Binding probe
// ---------------------------------------------------------------------------------------

/// Sends a Binding request to `server` with [`TurnClient`] and waits for the answer,
/// `timeout` in all (the client sends up to three times, each waiting a third of it).
/// Returns the XOR-MAPPED-ADDRESS (`None` when the response lacks it), or `Err` on
/// timeout, an error response, or a socket error.
pub fn stun_binding(server: SocketAddr, timeout: Duration) -> Result<Option<SocketAddr>, String> {
    let mut client =
        TurnClient::new(server, "", "").map_err(|e| format!("client socket for {server}: {e}"))?;
    client.timeout = timeout / 3;
    let (tid, request) = client.encode(METHOD_BINDING, &Outgoing::default());
    match client.exchange(tid, &request) {
        Ok(Some(reply)) if reply.is_success() && reply.msg.method() == METHOD_BINDING => {
            Ok(reply.xor_address(ATTR_XORMAPPED_ADDRESS))
        }
        Ok(Some(reply)) => Err(format!(
            "{server} answered the Binding request with {} (error code {:?})",
            reply.msg.msg.typ, reply.code
        )),
        Ok(None) => Err(format!(
            "no Binding response from {server} within {timeout:?}"
        )),
        // ICMP port unreachable surfaces as ECONNREFUSED on some systems: not ready yet.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            thread::sleep(Duration::from_millis(50));
            Err(format!("{server}: {e}"))
        }
        Err(e) => Err(format!("no Binding response from {server}: {e}")),
    }
}

/// Polls `server` with Binding requests until one is answered or `timeout` passes.
/// `alive` is called between attempts; returning `Err` aborts (e.g. the process died).
pub fn wait_for_stun(
    server: SocketAddr,
    timeout: Duration,
    mut alive: impl FnMut() -> Result<(), String>,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut last_err = String::new();
    while Instant::now() < deadline {
        alive()?;
        match stun_binding(server, Duration::from_millis(200)) {
            Ok(_) => return Ok(()),
            Err(e) => last_err = e,
        }
    }
    Err(format!(
        "{server} did not answer a STUN Binding request within {timeout:?} (last error: {last_err})"
    ))
}

// ---------------------------------------------------------------------------------------
// tern
// ---------------------------------------------------------------------------------------

/// Builder for a `tern serve` child process.
#[derive(Debug, Default)]
pub struct TernBuilder {
    listen: Option<SocketAddr>,
    /// The config file lists `listen` itself (say, with per-listener options): no
    /// `--listen` flag.
    listen_in_config: bool,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    config: Option<String>,
}

impl TernBuilder {
    /// Listen address (default: 127.0.0.1 on a free port). It is passed as `--listen`,
    /// which replaces any `server.listen` of a config file.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    /// The UDP address the config file's `server.listen` holds, to wait on for
    /// readiness; no `--listen` flag is passed, so the file's listeners and their
    /// options stay.
    pub fn listen_in_config(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self.listen_in_config = true;
        self
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<S: AsRef<str>>(mut self, args: &[S]) -> Self {
        self.args
            .extend(args.iter().map(|a| a.as_ref().to_string()));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_string(), value.to_string()));
        self
    }

    /// TOML text written to a temp file and passed as `--config`.
    pub fn config(mut self, toml: &str) -> Self {
        self.config = Some(toml.to_string());
        self
    }

    /// Spawns the server and waits until it answers a STUN Binding request. Panics
    /// (printing the server's output) if it exits or does not get ready in time.
    pub fn start(self) -> TernServer {
        // A port picked by `free_udp_port` can be taken before tern binds it: retry then.
        let attempts = if self.listen.is_some() { 1 } else { 3 };
        let mut last = String::new();
        for _ in 0..attempts {
            match self.try_start() {
                Ok(server) => return server,
                Err(e) => last = e,
            }
        }
        panic!("tern did not start:\n{last}");
    }

    /// Like [`TernBuilder::start`] but returns the failure (with the server's output).
    pub fn try_start(&self) -> Result<TernServer, String> {
        let addr = self
            .listen
            .unwrap_or_else(|| SocketAddr::new(LOCALHOST_V4, free_udp_port()));
        let dir = TempDir::new("tern-test");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tern"));
        cmd.arg("serve");
        if let Some(toml) = &self.config {
            let path = dir.join("tern.toml");
            fs::write(&path, toml).expect("writing config");
            cmd.arg("--config").arg(path);
        }
        if !self.listen_in_config {
            cmd.arg("--listen").arg(addr.to_string());
        }
        cmd.args(&self.args);
        // Deterministic: no inherited secret, no colour codes in the logs.
        cmd.env_remove("TERN_SECRET")
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1");
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let mut process = BackgroundProcess::spawn("tern", &mut cmd, dir.path());
        let ready = wait_for_stun(addr, READY_TIMEOUT, || match process.try_exit_status() {
            Some(status) => Err(format!("tern exited early with {status}")),
            None => Ok(()),
        });
        match ready {
            Ok(()) => Ok(TernServer { process, addr, dir }),
            Err(e) => {
                process.stop();
                let logs = process.logs();
                // Nothing to keep: the logs are in the error.
                drop(process);
                Err(format!("{e}\ncommand: {cmd:?}\n{logs}"))
            }
        }
    }
}

/// A running `tern serve`; killed and reaped on drop (its logs are printed if the test is
/// panicking at that point).
#[derive(Debug)]
pub struct TernServer {
    process: BackgroundProcess,
    /// The address tern listens on (UDP).
    pub addr: SocketAddr,
    /// Holds the config file and the stdout/stderr logs.
    pub dir: TempDir,
}

impl TernServer {
    pub fn builder() -> TernBuilder {
        TernBuilder::default()
    }

    /// `tern serve --listen 127.0.0.1:<free> ARGS...`, ready to serve.
    pub fn start(args: &[&str]) -> TernServer {
        TernBuilder::default().args(args).start()
    }

    /// Same with `--config <temp file holding toml>` before the extra arguments.
    pub fn start_with_config(toml: &str, extra_args: &[&str]) -> TernServer {
        TernBuilder::default().config(toml).args(extra_args).start()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    pub fn stdout(&self) -> String {
        self.process.stdout()
    }

    pub fn stderr(&self) -> String {
        self.process.stderr()
    }

    /// Both outputs, labelled: append to assertion messages.
    pub fn logs(&self) -> String {
        self.process.logs()
    }

    /// The exit status if the server has died.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.process.try_exit_status()
    }

    /// Sends SIGHUP (reload the configuration and certificate).
    pub fn hangup(&self) {
        let ok = Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -HUP {}", self.pid());
    }

    /// SIGHUP, then waits (at most 5 s) until the log says the reload is done.
    pub fn reload(&self) {
        let before = self.logs().matches("configuration reloaded").count();
        self.hangup();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.logs().matches("configuration reloaded").count() == before {
            assert!(
                Instant::now() < deadline,
                "no reload logged:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Panics (with the logs) if the server is no longer running.
    pub fn assert_running(&mut self) {
        self.process.assert_running();
    }

    /// Kills and reaps the server now.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Panics unless the server still runs, answers a Binding, grants `user` a fresh
    /// allocation and never logged a panic: how an attack test shows it did no harm.
    pub fn assert_still_serving(&mut self, user: &str, password: &str) {
        self.assert_running();
        stun_binding(self.addr, Duration::from_secs(2)).unwrap_or_else(|e| panic!("{e}"));
        let mut client = TurnClient::new(self.addr, user, password).expect("client socket");
        let reply = client.allocate(vec![]).expect("Allocate answered");
        assert!(reply.is_success(), "{:?}\n{}", reply.code, self.logs());
        assert!(!self.logs().contains("panicked"), "{}", self.logs());
    }
}

/// `client` once it knows the server's realm and a nonce, still without an allocation:
/// its unsigned Refresh drew a 401, the signed retry a 437.
pub fn with_realm_and_nonce(mut client: TurnClient) -> TurnClient {
    let reply = client.refresh(None).expect("Refresh answered");
    assert_eq!(
        reply.code,
        Some(437),
        "a signed Refresh without an allocation"
    );
    client
}

/// `tern ARGS...` with TERN_SECRET cleared (so the caller's environment cannot change
/// the outcome) and colours off.
pub fn tern_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tern"));
    cmd.args(args)
        .env_remove("TERN_SECRET")
        .env("NO_COLOR", "1");
    cmd
}

/// Runs `tern ARGS...` to completion (e.g. `check-config`), bounded by `timeout`.
pub fn run_tern(args: &[&str], timeout: Duration) -> RunOutput {
    run_with_timeout(&mut tern_command(args), timeout)
}

// ---------------------------------------------------------------------------------------
// Watching a running server: its admin listener and its process
// ---------------------------------------------------------------------------------------

/// GET `path` on an admin listener: (status code, body).
pub fn admin_get(admin: SocketAddr, path: &str) -> (u16, String) {
    http_request(admin, "GET", path, None, "")
}

/// An HTTP/1.1 request with an optional bearer token and body: (status code, body);
/// status 0 when no HTTP answer came.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body)
}

/// Reads one HTTP/1.x request from `reader`, as a test's webhook receiver sees it: its
/// head (request line and headers, as sent) and its body (Content-Length bytes). An
/// error when the connection ends or times out before the body is complete.
pub fn read_http_request(reader: &mut impl std::io::BufRead) -> std::io::Result<(String, Vec<u8>)> {
    let mut head = String::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        head.push_str(&line);
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    Ok((head, body))
}

/// The value of the /metrics sample named exactly `name` (with its labels, if any);
/// 0 when the sample is absent.
pub fn metric(admin: SocketAddr, name: &str) -> f64 {
    let (status, body) = admin_get(admin, "/metrics");
    assert_eq!(status, 200, "GET /metrics on {admin}");
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// A process's resident memory in kB, from /proc.
pub fn vm_rss_kb(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

// ---------------------------------------------------------------------------------------
// coturn's turnutils_uclient
// ---------------------------------------------------------------------------------------

/// The totals `turnutils_uclient` prints at the end of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UclientSummary {
    pub tot_send_msgs: u64,
    pub tot_recv_msgs: u64,
    pub lost_packets: u64,
    pub send_dropped: u64,
}

fn number_after(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

impl UclientSummary {
    /// Parses the final `tot_send_msgs=N, tot_recv_msgs=M` line and the
    /// `Total lost packets N (..%), total send dropped M (..%)` line.
    pub fn parse(output: &str) -> Option<UclientSummary> {
        let totals = output
            .lines()
            .rev()
            .find(|l| l.contains("tot_send_msgs=") && !l.contains("msz="))?;
        let lost = output
            .lines()
            .rev()
            .find(|l| l.contains("Total lost packets"))?;
        Some(UclientSummary {
            tot_send_msgs: number_after(totals, "tot_send_msgs=")?,
            tot_recv_msgs: number_after(totals, "tot_recv_msgs=")?,
            lost_packets: number_after(lost, "Total lost packets")?,
            send_dropped: number_after(lost, "total send dropped")?,
        })
    }

    /// The summary lines of the output, for printing.
    pub fn lines(output: &str) -> String {
        output
            .lines()
            .filter(|l| {
                (l.contains("tot_send_") && !l.contains("msz="))
                    || l.contains("Total lost packets")
                    || l.contains("Total transmit time")
                    || l.contains("round trip delay")
                    || l.contains("Average jitter")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}
