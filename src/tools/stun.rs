//! `tern stun`: one Binding request, answering "what address does the world see me
//! as, and how far is the server?" — the first thing to check behind a NAT.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use stun::attributes::ATTR_XORMAPPED_ADDRESS;
use stun::message::METHOD_BINDING;

use super::diagnosis::Diagnosis;
use super::nat_type;
use super::{connect, ms, resolve, split_host_port};
use crate::client::Outgoing;
use crate::client::args::transport_parser;
use crate::core::Transport;
use clap::Args;

/// `tern stun`: see [`crate::tools::stun`].
#[derive(Debug, Args)]
pub struct StunArgs {
    /// The STUN server, HOST:PORT (a name or an IP; IPv6 in brackets).
    pub server: String,
    #[arg(long, default_value_t = Transport::Udp, value_parser = transport_parser())]
    pub transport: Transport,
    /// Accept any TLS certificate.
    #[arg(long)]
    pub tls_insecure: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Find how the NAT in front of this host maps and filters (RFC 5780 tests), against
    /// a server with NAT discovery on; UDP only. Takes a few seconds: a filtering test
    /// that gets no answer waits for three attempts.
    #[arg(long)]
    pub nat_type: bool,
}

/// Per attempt on UDP (three attempts); a whole exchange on a stream waits three times this.
const TIMEOUT: Duration = Duration::from_secs(1);

pub fn main(args: &StunArgs) -> ExitCode {
    let Some((host, port)) = split_host_port(&args.server) else {
        return super::usage_error(format!("{}: expected HOST:PORT", args.server));
    };
    if args.nat_type {
        return nat_type_main(&host, port, args);
    }
    match binding(&host, port, args) {
        Ok((mapped, rtt)) => {
            if args.json {
                let out = serde_json::json!({
                    "server": args.server,
                    "transport": args.transport,
                    "mapped": mapped.to_string(),
                    "rtt_ms": ms(rtt),
                });
                println!("{out}");
            } else {
                println!("mapped {mapped} rtt {:.1} ms", ms(rtt));
            }
            ExitCode::SUCCESS
        }
        Err(why) => failed(args, &why),
    }
}

/// Says why `tern stun` failed (one JSON object with `--json`) and exits 1.
fn failed(args: &StunArgs, why: &str) -> ExitCode {
    if args.json {
        println!(
            "{}",
            serde_json::json!({"server": args.server, "error": why})
        );
    } else {
        eprintln!("tern stun: {why}");
    }
    ExitCode::FAILURE
}

fn nat_type_main(host: &str, port: u16, args: &StunArgs) -> ExitCode {
    if args.transport != Transport::Udp {
        return super::usage_error("--nat-type works over UDP only");
    }
    let found = resolve(host, port)
        .map_err(|e| format!("cannot resolve {host}: {e}"))
        .and_then(|server| nat_type::discover(server, TIMEOUT / 2));
    let nat = match found {
        Ok(nat) => nat,
        Err(why) => return failed(args, &why),
    };
    if args.json {
        println!("{}", serde_json::json!({"server": args.server, "nat": nat}));
    } else {
        println!(
            "local {} mapped {} (server's other address {})",
            nat.local, nat.mapped, nat.other_address
        );
        println!("mapping: {}", nat.mapping);
        println!("filtering: {}", nat.filtering);
    }
    ExitCode::SUCCESS
}

fn binding(
    host: &str,
    port: u16,
    args: &StunArgs,
) -> Result<(std::net::SocketAddr, Duration), String> {
    let server = resolve(host, port).map_err(|e| format!("cannot resolve {host}: {e}"))?;
    let mut client = connect(server, args.transport, host, args.tls_insecure, ("", ""))
        .map_err(|e| Diagnosis::from_io(&e).to_string())?;
    client.timeout = TIMEOUT;
    let (tid, request) = client.encode(METHOD_BINDING, &Outgoing::default());
    let start = Instant::now();
    let reply = client
        .exchange(tid, &request)
        .map_err(|e| Diagnosis::from_io(&e).to_string())?
        .ok_or_else(|| Diagnosis::Unreachable.to_string())?;
    let rtt = start.elapsed();
    if let Some(code) = reply.code {
        return Err(format!(
            "the server answered the Binding request with error {code}"
        ));
    }
    // Old RFC 3489 servers answer with MAPPED-ADDRESS only.
    let mapped = reply.xor_address(ATTR_XORMAPPED_ADDRESS).or_else(|| {
        let mut plain = stun::addr::MappedAddress::default();
        stun::message::Getter::get_from(&mut plain, &reply.msg.msg)
            .ok()
            .map(|()| std::net::SocketAddr::new(plain.ip, plain.port))
    });
    mapped
        .map(|m| (m, rtt))
        .ok_or_else(|| "the Binding response carries no mapped address".into())
}
