//! `tern sessions`, `tern kill`, `tern drain` and `tern usage`: the admin API from a
//! shell.
//!
//! They talk HTTP/1.1 to the admin listener, which is on loopback or a private
//! network; one request per connection (`Connection: close`) keeps the client to a few
//! lines. The token comes from `--token` or `TERN_ADMIN_TOKEN` and is never printed.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

/// `tern sessions`.
#[derive(Debug, Clone, Args)]
pub struct SessionsArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Every node of the fleet (`[cluster]`), with a NODE column.
    #[arg(long)]
    pub fleet: bool,
}

/// Where the admin API is and how to authenticate to it.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// The admin listener.
    #[arg(long, default_value = "127.0.0.1:9641")]
    pub admin: SocketAddr,
    /// Bearer token (admin.token of the server).
    #[arg(long, env = "TERN_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct KillArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// A session, by its relay address (see `tern sessions`).
    #[arg(long, value_name = "RELAY")]
    pub session: Option<String>,
    /// Every session of a user (static name or REST user id).
    #[arg(long)]
    pub user: Option<String>,
    /// Refuse a user from now on and kill its sessions: a static name, or the user id of
    /// REST credentials (`bob` in `1796102579:bob`).
    #[arg(long, value_name = "USER")]
    pub revoke: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct DrainArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// `on` (refuse new allocations, relay existing ones) or `off`.
    #[arg(value_parser = ["on", "off"])]
    pub state: String,
}

/// `tern usage`.
#[derive(Debug, Clone, Args)]
pub struct UsageArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Only this user (a static name, or the user id of REST credentials).
    #[arg(long)]
    pub user: Option<String>,
    /// Only allocations that ended within this long: seconds, or 30m, 12h, 7d.
    #[arg(long, value_name = "AGE")]
    pub since: Option<crate::config::Span>,
    /// At most this many records, newest first.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// `tern sessions`: the allocations the server holds.
pub fn sessions_main(sessions_args: &SessionsArgs) -> ExitCode {
    let args = &sessions_args.admin;
    let path = match sessions_args.fleet {
        true => "/api/fleet/sessions",
        false => "/api/sessions",
    };
    let (status, body) = match request(args, "GET", path, "") {
        Ok(r) => r,
        Err(e) => return failed(args.admin, &e),
    };
    if status != 200 {
        return refused(status, &body);
    }
    if args.json {
        println!("{body}");
        return ExitCode::SUCCESS;
    }
    let sessions: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap_or_default();
    let node = |s: &serde_json::Value| match sessions_args.fleet {
        true => format!("{:<16} ", s["node"].as_str().unwrap_or("?")),
        false => String::new(),
    };
    let header = serde_json::json!({ "node": "NODE" });
    println!(
        "{}{:<22} {:<22} {:<24} {:<22} {:<5} {:>5} {:>5} {:>7} {:>12} {:>12} {:>9} {:>9}",
        node(&header),
        "RELAY (id)",
        "IPV6 RELAY (dual)",
        "USER",
        "CLIENT",
        "TRANS",
        "PERMS",
        "CHANS",
        "AGE s",
        "TO PEER B",
        "TO CLIENT B",
        "DROP PEER",
        "DROP CLNT"
    );
    for s in &sessions {
        println!(
            "{}{:<22} {:<22} {:<24} {:<22} {:<5} {:>5} {:>5} {:>7} {:>12} {:>12} {:>9} {:>9}",
            node(s),
            s["relay"].as_str().unwrap_or("?"),
            s["additional_relay"].as_str().unwrap_or("-"),
            s["user"].as_str().unwrap_or("?"),
            s["client"].as_str().unwrap_or("?"),
            s["transport"].as_str().unwrap_or("?"),
            s["permissions"],
            s["channels"],
            s["age_secs"],
            s["bytes_to_peer"],
            s["bytes_to_client"],
            s["dropped_to_peer"],
            s["dropped_to_client"],
        );
    }
    println!("{} session(s)", sessions.len());
    ExitCode::SUCCESS
}

/// `text` percent-encoded for one URL path segment: a REST user id may hold `/`, `?`,
/// spaces or any other byte.
fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `tern usage`: usage records from the fleet's Redis, newest first.
pub fn usage_main(args: &UsageArgs) -> ExitCode {
    let mut path = format!("/api/usage?limit={}", args.limit);
    if let Some(user) = &args.user {
        path += &format!("&user={}", path_segment(user));
    }
    if let Some(age) = args.since {
        path += &format!("&since={}", crate::clock::unix_now().saturating_sub(age.0));
    }
    let (status, body) = match request(&args.admin, "GET", &path, "") {
        Ok(r) => r,
        Err(e) => return failed(args.admin.admin, &e),
    };
    if status != 200 {
        return refused(status, &body);
    }
    if args.admin.json {
        println!("{body}");
        return ExitCode::SUCCESS;
    }
    let records: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap_or_default();
    println!(
        "{:<10} {:<16} {:<24} {:<22} {:<5} {:>7} {:>12} {:>12} {:>5}  REASON",
        "END", "NODE", "USER", "CLIENT", "TRANS", "SECS", "TO PEER B", "TO CLIENT B", "PEERS"
    );
    for r in &records {
        println!(
            "{:<10} {:<16} {:<24} {:<22} {:<5} {:>7} {:>12} {:>12} {:>5}  {}",
            r["end"],
            r["node"].as_str().unwrap_or("?"),
            r["user"].as_str().unwrap_or("?"),
            r["client"].as_str().unwrap_or("?"),
            r["transport"].as_str().unwrap_or("?"),
            r["duration_secs"],
            r["to_peer"]["bytes"],
            r["to_client"]["bytes"],
            r["peers"],
            r["reason"].as_str().unwrap_or("?"),
        );
    }
    println!("{} record(s)", records.len());
    ExitCode::SUCCESS
}

/// `tern kill`: one session, a user's sessions, or a revocation.
pub fn kill_main(args: &KillArgs) -> ExitCode {
    let (method, path) = match (&args.session, &args.user, &args.revoke) {
        (Some(relay), None, None) => ("DELETE", format!("/api/sessions/{relay}")),
        (None, Some(user), None) => (
            "DELETE",
            format!("/api/users/{}/sessions", path_segment(user)),
        ),
        (None, None, Some(user)) => ("POST", format!("/api/users/{}/revoke", path_segment(user))),
        _ => {
            eprintln!("tern kill: give exactly one of --session, --user, --revoke");
            return ExitCode::from(2);
        }
    };
    match request(&args.admin, method, &path, "") {
        Ok((204, _)) => {
            println!("killed");
            ExitCode::SUCCESS
        }
        Ok((200, body)) => {
            println!("{}", body.trim());
            ExitCode::SUCCESS
        }
        Ok((status, body)) => refused(status, &body),
        Err(e) => failed(args.admin.admin, &e),
    }
}

/// `tern drain on|off`.
pub fn drain_main(args: &DrainArgs) -> ExitCode {
    match request(&args.admin, "PUT", "/api/drain", &args.state) {
        Ok((204, _)) => {
            println!("drain {}", args.state);
            ExitCode::SUCCESS
        }
        Ok((status, body)) => refused(status, &body),
        Err(e) => failed(args.admin.admin, &e),
    }
}

fn failed(admin: SocketAddr, e: &io::Error) -> ExitCode {
    eprintln!("tern: cannot reach the admin listener at {admin}: {e}");
    ExitCode::FAILURE
}

fn refused(status: u16, body: &str) -> ExitCode {
    let why = match status {
        401 => "the token was refused (set --token or TERN_ADMIN_TOKEN)".to_string(),
        404 => format!(
            "not found (the API is off without admin.token, or no such session): {}",
            body.trim()
        ),
        _ => format!("status {status}: {}", body.trim()),
    };
    eprintln!("tern: {why}");
    ExitCode::FAILURE
}

/// One HTTP/1.1 request with the bearer token; returns (status, body).
fn request(args: &AdminArgs, method: &str, path: &str, body: &str) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&args.admin, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    let token = args.token.as_deref().unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        args.admin,
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an HTTP response"))?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::path_segment;

    #[test]
    fn user_names_are_percent_encoded_for_the_path() {
        assert_eq!(path_segment("1796102579:bob"), "1796102579:bob");
        assert_eq!(path_segment("a/b c?\r\n%"), "a%2Fb%20c%3F%0D%0A%25");
        assert_eq!(path_segment("é"), "%C3%A9");
    }
}
