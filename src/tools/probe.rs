//! `tern probe`: walks an ICE server URL through what a browser does with it —
//! connect, Allocate (with the 401 dance), CreatePermission, ChannelBind and data
//! through the relay to an echo peer — timing each step and, when one fails, saying
//! in plain words what is most likely wrong (see [`super::diagnosis`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::Serialize;
use stun::attributes::{ATTR_XOR_RELAYED_ADDRESS, ATTR_XORMAPPED_ADDRESS};

use super::diagnosis::{Diagnosis, is_private};
use super::{connect, ms, resolve};
use crate::client::Reply;
use crate::client::Transport;
use crate::client::args::CredentialArgs;
use crate::client::echo::EchoThread;
use crate::urls::IceUrl;
use clap::Args;

/// `tern probe`: see [`crate::tools::probe`].
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("credentials").required(true).args(["user", "secret"])))]
pub struct ProbeArgs {
    /// ICE server URL as a browser takes it: turn:HOST[:PORT][?transport=udp|tcp] or
    /// turns:HOST[:PORT][?transport=tcp].
    pub url: String,
    #[command(flatten)]
    pub credentials: CredentialArgs,
    /// External UDP echo peer; default: one built in, on this host.
    #[arg(long, value_name = "IP:PORT")]
    pub peer: Option<SocketAddr>,
    /// Accept any TLS certificate.
    #[arg(long)]
    pub tls_insecure: bool,
    /// Print one JSON object with the steps and the diagnosis.
    #[arg(long)]
    pub json: bool,
}

/// Per attempt on UDP (three attempts); a stream exchange waits three times this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the echo may take to come back through the relay.
const ECHO_TIMEOUT: Duration = Duration::from_secs(3);
/// Lifetime of the REST credential minted from --secret.
const REST_TTL: u64 = 3600;
const CHANNEL: u16 = 0x4000;

#[derive(Debug, Serialize)]
struct Step {
    name: &'static str,
    ok: bool,
    ms: f64,
    detail: String,
}

#[derive(Debug, Serialize)]
struct Report {
    url: String,
    server: Option<String>,
    transport: Transport,
    ok: bool,
    steps: Vec<Step>,
    diagnosis: Option<String>,
}

/// A failed step: its detail and the diagnosis.
type Failure = (String, Diagnosis);

struct Probe {
    steps: Vec<Step>,
    json: bool,
}

impl Probe {
    /// Runs `f` as step `name`, recording (and printing, unless JSON) its outcome.
    fn step<T>(
        &mut self,
        name: &'static str,
        f: impl FnOnce() -> Result<(T, String), Failure>,
    ) -> Result<T, Diagnosis> {
        let start = Instant::now();
        let result = f();
        let elapsed = ms(start.elapsed());
        let (ok, detail, out) = match result {
            Ok((value, detail)) => (true, detail, Ok(value)),
            Err((detail, diagnosis)) => (false, detail, Err(diagnosis)),
        };
        if !self.json {
            let mark = if ok { '✓' } else { '✗' };
            println!("{mark} {name:<18} {elapsed:>8.1} ms  {detail}");
        }
        self.steps.push(Step {
            name,
            ok,
            ms: elapsed,
            detail,
        });
        out
    }
}

pub fn main(args: &ProbeArgs) -> ExitCode {
    let url = match IceUrl::parse(&args.url) {
        Ok(url) => url,
        Err(e) => return super::usage_error(e),
    };
    let mut probe = Probe {
        steps: Vec::new(),
        json: args.json,
    };
    let mut server = None;
    let result = run(args, &url, &mut probe, &mut server);
    let diagnosis = result.err();
    if args.json {
        let report = Report {
            url: args.url.clone(),
            server: server.map(|s: SocketAddr| s.to_string()),
            transport: url.transport,
            ok: diagnosis.is_none(),
            steps: probe.steps,
            diagnosis: diagnosis.as_ref().map(ToString::to_string),
        };
        match serde_json::to_string(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => eprintln!("tern probe: {e}"),
        }
    } else {
        match &diagnosis {
            None => println!("ok: {} relays", args.url),
            Some(d) => println!("diagnosis: {d}"),
        }
    }
    if diagnosis.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// How many 300 (Try Alternate) answers in a row the probe follows.
const MAX_REDIRECTS: usize = 3;

fn run(
    args: &ProbeArgs,
    url: &IceUrl,
    probe: &mut Probe,
    server_out: &mut Option<SocketAddr>,
) -> Result<(), Diagnosis> {
    let server = probe.step("resolve", || {
        let addr = resolve(&url.host, url.port).map_err(|e| {
            let d = Diagnosis::Unresolvable {
                host: url.host.clone(),
                error: e.to_string(),
            };
            (e.to_string(), d)
        })?;
        Ok((addr, format!("{} over {}", addr, url.transport)))
    })?;
    *server_out = Some(server);

    let (username, password, rest_expiry) = credentials(args);
    // The URL's transport and name, the credentials, to `server` or to an alternate.
    let open = |server: SocketAddr| -> Result<crate::client::TurnClient, Failure> {
        let credentials = (username.as_str(), password.as_str());
        let mut client = connect(
            server,
            url.transport,
            &url.host,
            args.tls_insecure,
            credentials,
        )
        .map_err(|e| (e.to_string(), Diagnosis::from_io(&e)))?;
        client.timeout = REQUEST_TIMEOUT;
        Ok(client)
    };
    let mut client = probe.step("connect", || {
        let client = open(server)?;
        let local = client
            .transport
            .local_addr()
            .map_or(String::new(), |a| format!("from {a}"));
        Ok((client, local))
    })?;

    let relay = probe.step("allocate", || {
        let mut reply = client.allocate(vec![]).map_err(io_failure)?;
        // A node of a fleet that is draining or busy names another (300 Try
        // Alternate); like a browser, follow it, a few times at most.
        let mut redirects = Vec::new();
        while reply.code == Some(300) && redirects.len() < MAX_REDIRECTS {
            let alternate = reply
                .alternate_server()
                .ok_or_else(|| no_attr("ALTERNATE-SERVER"))?;
            client = open(alternate)?;
            redirects.push(alternate.to_string());
            reply = client.allocate(vec![]).map_err(io_failure)?;
        }
        match reply.code {
            None => {}
            Some(401) => {
                let d = Diagnosis::CredentialsRefused {
                    realm: client.realm().map(str::to_string),
                    expiry: rest_expiry,
                    now: crate::clock::unix_now(),
                };
                return Err(("error 401 Unauthorized".into(), d));
            }
            Some(code) => return Err(code_failure(&reply, code)),
        }
        let relay = reply
            .xor_address(ATTR_XOR_RELAYED_ADDRESS)
            .ok_or_else(|| no_attr("XOR-RELAYED-ADDRESS"))?;
        let mapped = reply
            .xor_address(ATTR_XORMAPPED_ADDRESS)
            .map_or("?".into(), |m| m.to_string());
        let via = match redirects.is_empty() {
            true => String::new(),
            false => format!(" (redirected to {})", redirects.join(" then ")),
        };
        Ok((relay, format!("relay {relay}, mapped {mapped}{via}")))
    })?;

    probe.step("relay address", || {
        if is_private(relay.ip()) && !is_private(server.ip()) {
            let d = Diagnosis::PrivateRelay { relay };
            return Err((format!("{relay} is private"), d));
        }
        Ok(((), format!("{}", relay.ip())))
    })?;

    // Kept alive until the echo step is over.
    let builtin;
    let peer = match args.peer {
        Some(peer) => peer,
        None => {
            builtin = probe.step("echo peer", || {
                let bind = peer_ip(server).map_err(|e| {
                    let why = format!("no local address towards {server}: {e}");
                    (why.clone(), Diagnosis::Other(why))
                })?;
                let socket = UdpSocket::bind(SocketAddr::new(bind, 0));
                let peer = socket.and_then(EchoThread::spawn).map_err(|e| {
                    let why = format!("cannot start the echo peer: {e}");
                    (why.clone(), Diagnosis::Other(why))
                })?;
                let detail = format!("built-in on {}", peer.addr());
                Ok((peer, detail))
            })?;
            builtin.addr()
        }
    };

    probe.step("create permission", || {
        let reply = client.create_permission(&[peer]).map_err(io_failure)?;
        expect_success(&reply)?;
        Ok(((), format!("peer {peer}")))
    })?;

    probe.step("channel bind", || {
        let reply = client.channel_bind(CHANNEL, peer).map_err(io_failure)?;
        expect_success(&reply)?;
        Ok(((), format!("channel {CHANNEL:#06x}")))
    })?;

    probe.step("echo", || {
        let token: [u8; 16] = rand::random();
        client
            .send_channel_data(CHANNEL, &token)
            .map_err(io_failure)?;
        let deadline = Instant::now() + ECHO_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match client.recv_data(left).map_err(io_failure)? {
                Some((_, data)) if data == token => {
                    return Ok(((), format!("{} bytes via {relay}", token.len())));
                }
                Some(_) => {}
                None => {
                    let why = format!("nothing back within {ECHO_TIMEOUT:?}");
                    return Err((why, Diagnosis::EchoLost));
                }
            }
        }
    })?;
    Ok(())
}

/// Username, password and (for a REST credential) its expiry.
fn credentials(args: &ProbeArgs) -> (String, String, Option<u64>) {
    let c = &args.credentials;
    match (&c.secret, &c.user) {
        (Some(secret), _) => {
            let (user, pass) = super::creds::mint(secret, REST_TTL, Some("probe"));
            let expiry = user.split(':').next().and_then(|e| e.parse().ok());
            (user, pass, expiry)
        }
        (None, Some(user)) => (user.clone(), c.pass.clone().unwrap_or_default(), None),
        (None, None) => (String::new(), String::new(), None),
    }
}

/// The address the built-in peer binds: loopback for a loopback server, otherwise
/// the local address the kernel routes towards the server (what a relay would see).
fn peer_ip(server: SocketAddr) -> std::io::Result<IpAddr> {
    if server.ip().is_loopback() {
        return Ok(server.ip());
    }
    let any: IpAddr = if server.is_ipv6() {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    };
    let socket = UdpSocket::bind((any, 0))?;
    // Connecting a UDP socket sends nothing: it only picks the route.
    socket.connect(server)?;
    Ok(socket.local_addr()?.ip())
}

fn io_failure(e: std::io::Error) -> Failure {
    let detail = if e.kind() == std::io::ErrorKind::TimedOut {
        "no response".to_string()
    } else {
        e.to_string()
    };
    (detail, Diagnosis::from_io(&e))
}

fn code_failure(reply: &Reply, code: u16) -> Failure {
    let reason = stun_reason(reply);
    (format!("error {code}{reason}"), Diagnosis::from_code(code))
}

fn expect_success(reply: &Reply) -> Result<(), Failure> {
    match reply.code {
        None => Ok(()),
        Some(code) => Err(code_failure(reply, code)),
    }
}

/// The reason phrase of an error response, if any, for the step's detail.
fn stun_reason(reply: &Reply) -> String {
    let mut e = stun::error_code::ErrorCodeAttribute::default();
    match stun::message::Getter::get_from(&mut e, &reply.msg.msg) {
        Ok(()) if !e.reason.is_empty() => format!(" {}", String::from_utf8_lossy(&e.reason)),
        _ => String::new(),
    }
}

fn no_attr(name: &str) -> Failure {
    let why = format!("the response lacks {name}");
    (why.clone(), Diagnosis::Other(why))
}
