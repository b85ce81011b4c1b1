//! The webhook's wire format: what tern POSTs about a username, and how the answer is
//! read.
//!
//! ```text
//! POST <url>   {"username": "carol", "realm": "example.org",
//!               "client": "203.0.113.5:50123", "transport": "udp"}
//! 200 {"password": "..."}  or  200 {"key": "<32 hex digits: MD5 of username:realm:password>"}
//! 403 or 404               the username is refused
//! anything else            a failure (as no answer in time, or no connection)
//! ```

use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

use crate::auth::{ExternalAnswer, LongTermKey};
use crate::core::Transport;

/// What tern asks.
#[derive(Debug, Serialize)]
pub struct Question<'a> {
    pub username: &'a str,
    pub realm: &'a str,
    /// The client that sent the request being authenticated (answers are kept per
    /// username, whatever the client).
    pub client: SocketAddr,
    pub transport: Transport,
}

/// Why an answer is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// A status other than 200, 403 and 404.
    Status,
    /// 200 whose body has neither a password nor a 32-hex-digit key.
    Invalid,
}

impl Unusable {
    pub fn name(self) -> &'static str {
        match self {
            Unusable::Status => "status",
            Unusable::Invalid => "invalid",
        }
    }
}

#[derive(Deserialize)]
struct Granted {
    password: Option<String>,
    key: Option<String>,
}

/// The service's answer for `username` in `realm`.
pub fn read(
    status: StatusCode,
    body: &[u8],
    username: &str,
    realm: &str,
) -> Result<ExternalAnswer, Unusable> {
    match status.as_u16() {
        200 => {}
        403 | 404 => return Ok(ExternalAnswer::Refused),
        _ => return Err(Unusable::Status),
    }
    let granted: Granted = serde_json::from_slice(body).map_err(|_| Unusable::Invalid)?;
    let key = match (granted.password, granted.key) {
        (Some(password), None) => LongTermKey::derive(username, realm, &password),
        (None, Some(key)) => LongTermKey::from_hex(&key).map_err(|_| Unusable::Invalid)?,
        _ => return Err(Unusable::Invalid),
    };
    Ok(ExternalAnswer::Key(Box::new(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Result<ExternalAnswer, Unusable> {
        read(
            StatusCode::from_u16(status).unwrap(),
            body.as_bytes(),
            "carol",
            "r",
        )
    }

    #[test]
    fn passwords_keys_refusals_and_nonsense() {
        let key = LongTermKey::derive("carol", "r", "pw");
        assert_eq!(
            answer(200, r#"{"password":"pw"}"#),
            Ok(ExternalAnswer::Key(Box::new(key.clone())))
        );
        let hex = format!(r#"{{"key":"{}"}}"#, key.to_hex());
        assert_eq!(answer(200, &hex), Ok(ExternalAnswer::Key(Box::new(key))));
        assert_eq!(answer(403, ""), Ok(ExternalAnswer::Refused));
        assert_eq!(answer(404, "gone"), Ok(ExternalAnswer::Refused));
        assert_eq!(answer(500, r#"{"password":"pw"}"#), Err(Unusable::Status));
        assert_eq!(answer(401, ""), Err(Unusable::Status));
        for nonsense in [
            "",
            "<html>",
            "{}",
            r#"{"password":"pw","key":"00"}"#,
            r#"{"key":"not hex"}"#,
            r#"{"password":7}"#,
        ] {
            assert_eq!(answer(200, nonsense), Err(Unusable::Invalid), "{nonsense}");
        }
    }
}
