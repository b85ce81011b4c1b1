//! Turns the `tern load` command line into a checked plan: credentials minted, the
//! phase to run chosen, rates converted to periods. Nothing here touches the network.

use std::net::SocketAddr;
use std::time::Duration;

use super::LoadArgs;
use crate::auth::{RestSecret, rest_credential};
use crate::client::Transport;
use crate::client::tls::TlsTrust;

/// The REST user id `--secret` credentials are minted for.
const REST_USER_ID: &str = "load";

/// Highest `--rate` accepted: one round trip per microsecond per allocation.
const MAX_RATE: f64 = 1_000_000.0;

/// What runs after the allocations are set up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Phase {
    /// Report setup figures and exit.
    SetupOnly,
    /// Keep the allocations idle (refreshed) for this long, then report.
    Hold(Duration),
    /// Relay probes through every allocation.
    Traffic(Traffic),
}

/// The data phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Traffic {
    pub pace: Pace,
    pub duration: Duration,
    /// Application bytes per ChannelData message (at least a probe's 16).
    pub payload: u16,
}

/// How fast each allocation sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// One probe per `period`, whatever comes back (open loop).
    Rate { period: Duration },
    /// As fast as echoes return, with this many probes in flight (closed loop).
    Window(usize),
}

/// A checked `tern load` invocation.
#[derive(Debug, Clone)]
pub struct Plan {
    pub server: SocketAddr,
    pub transport: Transport,
    /// Set exactly when `transport` is TLS.
    pub tls: Option<TlsTrust>,
    pub username: String,
    pub password: String,
    pub allocations: usize,
    /// `None`: the built-in echo peer.
    pub peer: Option<SocketAddr>,
    pub phase: Phase,
    pub server_pid: Option<u32>,
    pub json: bool,
}

impl Plan {
    /// Checks what clap cannot; the error is a usage message.
    pub fn from_args(args: &LoadArgs) -> Result<Self, String> {
        let tls = match (args.transport, args.tls_insecure, &args.tls_ca) {
            (Transport::Tls, true, _) => Some(TlsTrust::AnyCertificate),
            (Transport::Tls, false, Some(ca)) => Some(TlsTrust::Roots(ca.clone())),
            (Transport::Tls, false, None) => {
                return Err("--transport tls needs --tls-ca PATH or --tls-insecure".into());
            }
            (_, true, _) | (_, _, Some(_)) => {
                return Err("--tls-insecure and --tls-ca apply to --transport tls only".into());
            }
            _ => None,
        };
        let (username, password) = credentials(args)?;
        let phase = if args.setup_only {
            Phase::SetupOnly
        } else if let Some(secs) = args.hold {
            Phase::Hold(Duration::from_secs(secs))
        } else {
            Phase::Traffic(Traffic {
                pace: pace(args.rate, args.window)?,
                duration: Duration::from_secs(args.duration),
                payload: args.payload,
            })
        };
        let allocations = usize::try_from(args.allocations)
            .map_err(|_| "--allocations is too large for this machine".to_string())?;
        Ok(Self {
            server: args.server,
            transport: args.transport,
            tls,
            username,
            password,
            allocations,
            peer: args.peer,
            phase,
            server_pid: args.server_pid,
            json: args.json,
        })
    }
}

fn credentials(args: &LoadArgs) -> Result<(String, String), String> {
    let c = &args.credentials;
    match (&c.user, &c.pass, &c.secret) {
        (Some(user), Some(pass), None) => Ok((user.clone(), pass.clone())),
        (None, None, Some(secret)) => {
            let now = match crate::clock::unix_now() {
                0 => return Err("the system clock is before 1970".into()),
                now => now,
            };
            // Valid for a day past anything this run may do.
            let expiry = now + 86_400 + args.hold.unwrap_or(0) + args.duration;
            let secret = RestSecret::new(secret.as_bytes());
            Ok(rest_credential(&secret, expiry, Some(REST_USER_ID), ':'))
        }
        _ => Err("give either --user NAME --pass PASSWORD or --secret SECRET".into()),
    }
}

fn pace(rate: f64, window: u32) -> Result<Pace, String> {
    if !(rate.is_finite() && (0.0..=MAX_RATE).contains(&rate)) {
        return Err(format!("--rate must be between 0 and {MAX_RATE}"));
    }
    if rate > 0.0 {
        return Ok(Pace::Rate {
            period: Duration::from_secs_f64(1.0 / rate),
        });
    }
    let window = usize::try_from(window).map_err(|_| "--window is too large".to_string())?;
    Ok(Pace::Window(window))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_becomes_a_period_and_zero_means_window() {
        assert_eq!(
            pace(50.0, 8),
            Ok(Pace::Rate {
                period: Duration::from_millis(20)
            })
        );
        assert_eq!(pace(0.0, 8), Ok(Pace::Window(8)));
        assert!(pace(-1.0, 8).is_err());
        assert!(pace(f64::NAN, 8).is_err());
    }
}
