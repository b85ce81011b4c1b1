//! `tern creds`: mints TURN REST API credentials the way the web service that hands
//! them to browsers would, to test a `--secret` deployment without writing that
//! service first.

use std::process::ExitCode;

use crate::auth::{RestSecret, rest_credential};
use crate::clock::unix_now;
use clap::Args;

/// `tern creds`: see [`crate::tools::creds`].
#[derive(Debug, Args)]
pub struct CredsArgs {
    /// TURN REST API shared secret (as given to the server).
    #[arg(long, env = "TERN_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Lifetime: seconds, or with a unit: 3600s, 90m, 24h, 7d.
    #[arg(long, default_value = "24h")]
    pub ttl: String,
    /// User id appended to the username (used by the server for quotas).
    #[arg(long)]
    pub user: Option<String>,
    /// ICE server URL for the iceServers entry (repeatable).
    #[arg(long = "url", value_name = "URL")]
    pub url: Vec<String>,
}

pub fn main(args: &CredsArgs) -> ExitCode {
    let ttl = match parse_ttl(&args.ttl) {
        Ok(ttl) => ttl,
        Err(e) => return super::usage_error(e),
    };
    let (username, password) = mint(&args.secret, ttl, args.user.as_deref());
    let entry = serde_json::json!({
        "urls": args.url,
        "username": username,
        "credential": password,
    });
    println!("username: {username}");
    println!("password: {password}");
    println!("valid for: {ttl} s");
    match serde_json::to_string_pretty(&entry) {
        Ok(json) => println!("{json}"),
        Err(e) => {
            eprintln!("tern creds: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// A REST username valid `ttl` seconds from now, and its password.
pub fn mint(secret: &str, ttl: u64, user: Option<&str>) -> (String, String) {
    let expiry = unix_now().saturating_add(ttl);
    rest_credential(&RestSecret::new(secret), expiry, user, ':')
}

/// `3600`, `3600s`, `90m`, `24h` or `7d`, in seconds (more than zero).
pub fn parse_ttl(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("--ttl {text}: the unit must be s, m, h or d")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("--ttl {text}: expected a positive duration like 24h"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("3600"), Ok(3600));
        assert_eq!(parse_ttl("3600s"), Ok(3600));
        assert_eq!(parse_ttl("90m"), Ok(5400));
        assert_eq!(parse_ttl("24h"), Ok(86_400));
        assert_eq!(parse_ttl("7d"), Ok(604_800));
        for bad in ["", "h", "0", "-1h", "1w", "1.5h", "99999999999999999999d"] {
            assert!(parse_ttl(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn minted_password_matches_the_secret() {
        let (user, pass) = mint("s3cret", 60, Some("alice"));
        assert!(user.ends_with(":alice"));
        assert_eq!(pass, RestSecret::new("s3cret").password_for(&user));
    }
}
