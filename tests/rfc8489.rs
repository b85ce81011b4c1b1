//! RFC 8489's security features against a client written apart from tern
//! (tests/support/rfc8489_client.py, Python's hashlib and hmac): PASSWORD-ALGORITHMS
//! and the nonce cookie in challenges, SHA-256 keys with MESSAGE-INTEGRITY-SHA256
//! answered in kind (a truncated one refused), USERHASH, the 400s of a bid-down, and the RFC 5389
//! mechanism browsers use, unchanged. The RFC's Appendix B.1 vector is checked in the
//! core's unit tests (proto::request).

mod support;

use serde_json::{Value, json};
use support::{TernServer, python_client};
use tern::core::auth::{LongTermKey, RestSecret, rest_credential};

const REALM: &str = "example.org";
const SECRET: &str = "rest-secret-for-the-rfc8489-test";

/// tern with the RFC 8489 features offered (`auth.rfc8489`) or not.
fn start(rfc8489: bool) -> TernServer {
    let md5_key = LongTermKey::derive("bob", REALM, "bobs-password").to_hex();
    let config = format!(
        "[server]\nrealm = \"{REALM}\"\n\
         [auth]\nrfc8489 = {rfc8489}\nsecrets = [\"{SECRET}\"]\nunauthorized_burst = 10000\n\
         [[auth.users]]\nname = \"alice\"\npassword = \"alices-password\"\n\
         [[auth.users]]\nname = \"bob\"\nkey = \"{md5_key}\"\n"
    );
    TernServer::builder()
        .config(&config)
        .args(&["--ports", &support::relay_ports_arg()])
        .start()
}

/// The Python client's report for one MODE.
fn client(server: &TernServer, user: &str, password: &str, mode: &str) -> Value {
    python_client("rfc8489_client.py", server, &[user, password, mode])
}

/// What a granted Allocate signed with SHA-256 reports.
fn granted(integrity: &str) -> Value {
    json!({
        "challenge": 401,
        "offered": [2, 1],
        "features": 3,
        "allocate": null,
        "answer_integrity": integrity,
        "answer_verified": true,
        "relayed": true,
        "refresh": null,
        "refresh_verified": true,
    })
}

#[test]
fn sha256_keys_and_userhash_allocate_and_are_answered_in_kind() {
    let server = start(true);
    for mode in ["sha256", "userhash", "md5-key"] {
        let report = client(&server, "alice", "alices-password", mode);
        assert_eq!(report, granted("sha256"), "{mode}\n{}", server.logs());
    }
    // REST credentials: the password is the HMAC of the username, so SHA-256 works.
    let (username, password) =
        rest_credential(&RestSecret::new(SECRET), 4_000_000_000, Some("carol"), ':');
    let report = client(&server, &username, &password, "sha256");
    assert_eq!(report, granted("sha256"));
    // RFC 5389 clients (every browser) are untouched.
    let report = client(&server, "alice", "alices-password", "classic");
    assert_eq!(report, granted("sha1"));
    let report = client(&server, "bob", "bobs-password", "classic");
    assert_eq!(report, granted("sha1"));
}

#[test]
fn a_bid_down_or_a_truncated_mac_is_400_and_keys_that_cannot_be_made_are_401() {
    let server = start(true);
    // TURN allows no truncated MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6).
    for mode in ["chosen-only", "other-list", "truncated"] {
        let report = client(&server, "alice", "alices-password", mode);
        assert_eq!(report["allocate"], 400, "{mode}: {report}");
        assert_eq!(report["relayed"], false);
    }
    // bob is configured as an MD5 key: no SHA-256 key can be made of it.
    let report = client(&server, "bob", "bobs-password", "sha256");
    assert_eq!(report["allocate"], 401, "{report}");
    // USERHASH finds static users only; a wrong password is a 401 like any other.
    let (username, password) =
        rest_credential(&RestSecret::new(SECRET), 4_000_000_000, Some("carol"), ':');
    let report = client(&server, &username, &password, "userhash");
    assert_eq!(report["allocate"], 401, "{report}");
    let report = client(&server, "alice", "wrong", "sha256");
    assert_eq!(report["allocate"], 401, "{report}");
}

#[test]
fn off_by_default_the_challenge_is_rfc_5389s() {
    let server = start(false);
    let report = client(&server, "alice", "alices-password", "classic");
    let mut expected = granted("sha1");
    expected["offered"] = Value::Null;
    expected["features"] = Value::Null;
    assert_eq!(report, expected);
}
