//! TURN REST API credentials against a running server: valid, expired, wrong secret,
//! rotated secrets, quotas counted by user id, and what happens when a credential
//! expires during a call.

mod support;

use std::time::Duration;
use support::{TernServer, relay_ports_arg};
use tern::auth::{RestSecret, rest_credential};
use tern::client::TurnClient;
use tern::clock::unix_now;

/// A REST username/password pair minted with `secret`, valid for `ttl` seconds.
fn credential(secret: &str, ttl: i64, user: &str) -> (String, String) {
    let expiry = (unix_now() as i64 + ttl) as u64;
    rest_credential(&RestSecret::new(secret), expiry, Some(user), ':')
}

fn start(config: &str) -> TernServer {
    let ports = relay_ports_arg();
    TernServer::start_with_config(config, &["--ports", &ports])
}

fn allocate_code(server: &TernServer, (user, pass): &(String, String)) -> Option<u16> {
    let mut c = TurnClient::new(server.addr, user, pass).unwrap();
    c.allocate(vec![]).unwrap().code
}

#[test]
fn valid_expired_and_wrong_secret() {
    let s = start("[auth]\nsecrets = [\"first-secret-0123456789\"]\n");
    assert_eq!(
        allocate_code(&s, &credential("first-secret-0123456789", 3600, "u1")),
        None
    );
    assert_eq!(
        allocate_code(&s, &credential("first-secret-0123456789", -10, "u2")),
        Some(401)
    );
    assert_eq!(
        allocate_code(&s, &credential("some-other-secret-000", 3600, "u3")),
        Some(401)
    );
    // A static-looking name that is not a REST username is unknown.
    let bogus = ("not-a-timestamp:u4".to_string(), "x".to_string());
    assert_eq!(allocate_code(&s, &bogus), Some(401));
}

#[test]
fn every_configured_secret_is_accepted_during_rotation() {
    let s = start("[auth]\nsecrets = [\"new-secret-0123456789\", \"old-secret-0123456789\"]\n");
    assert_eq!(
        allocate_code(&s, &credential("new-secret-0123456789", 600, "a")),
        None
    );
    assert_eq!(
        allocate_code(&s, &credential("old-secret-0123456789", 600, "b")),
        None
    );
}

#[test]
fn secret_from_the_environment() {
    let ports = relay_ports_arg();
    let s = TernServer::builder()
        .env("TERN_SECRET", "env-secret-0123456789")
        .args(&["--ports", &ports])
        .start();
    assert_eq!(
        allocate_code(&s, &credential("env-secret-0123456789", 600, "e")),
        None
    );
    assert!(
        !s.logs().contains("env-secret-0123456789"),
        "the secret leaked to output"
    );
}

#[test]
fn quota_counts_the_user_id_part() {
    let s =
        start("[auth]\nsecrets = [\"quota-secret-0123456789\"]\n[limits]\nuser_allocations = 1\n");
    let carol_one = credential("quota-secret-0123456789", 600, "carol");
    let carol_two = credential("quota-secret-0123456789", 900, "carol");
    let dave = credential("quota-secret-0123456789", 600, "dave");
    assert_eq!(allocate_code(&s, &carol_one), None);
    assert_eq!(
        allocate_code(&s, &carol_two),
        Some(486),
        "same user id, other expiry"
    );
    assert_eq!(allocate_code(&s, &dave), None);
}

#[test]
fn expired_credential_ends_refreshes_unless_allowed() {
    for (allow, expected) in [(false, Some(401)), (true, None)] {
        let config = format!(
            "[auth]\nsecrets = [\"expiry-secret-0123456789\"]\nallow_refresh_after_expiry = {allow}\n"
        );
        let s = start(&config);
        let (user, pass) = credential("expiry-secret-0123456789", 2, "frank");
        let mut c = TurnClient::new(s.addr, &user, &pass).unwrap();
        assert!(c.allocate(vec![]).unwrap().is_success());
        std::thread::sleep(Duration::from_secs(4));
        assert_eq!(c.refresh(None).unwrap().code, expected, "allow = {allow}");
        // A new allocation with the expired credential is refused either way.
        let mut other = TurnClient::new(s.addr, &user, &pass).unwrap();
        assert_eq!(other.allocate(vec![]).unwrap().code, Some(401));
    }
}

#[test]
fn static_users_and_secrets_work_together() {
    let s = start(
        "[auth]\nsecrets = [\"mixed-secret-0123456789\"]\n[[auth.users]]\nname = \"gina\"\npassword = \"pw\"\n",
    );
    assert_eq!(allocate_code(&s, &("gina".into(), "pw".into())), None);
    assert_eq!(
        allocate_code(&s, &credential("mixed-secret-0123456789", 60, "h")),
        None
    );
}
