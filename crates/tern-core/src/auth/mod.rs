//! Authentication for TURN: who is this, and which keys may have signed their request.
//!
//! This module owns the long-term credential mechanism (RFC 8489 §9.2, RFC 8656): static
//! users, TURN REST API credentials (draft-uberti-behave-turn-rest), stateless nonces, and
//! the limiter that caps how many 401 answers one source can pull out of us.
//!
//! It is pure: no sockets, no clock reads (callers pass `unix_now` seconds or an
//! [`std::time::Instant`]), no logging. It must never make a secret printable: every type
//! that holds a password, shared secret or key implements `Debug` by hand, redacted.

mod credentials;
mod error;
mod external;
mod hex;
mod key;
mod nonce;
mod ratelimit;
mod rest;

pub use credentials::{Credentials, user_hash};
pub use error::{AuthConfigError, AuthError};
pub use external::{CachePolicy, ExternalAnswer, ExternalKeys};
pub use key::{LongTermKey, PasswordAlgorithm, StaticSecret};
pub use nonce::{NonceError, NonceIssuer, strip_cookie, with_cookie};
pub use ratelimit::UnauthorizedLimiter;
pub use rest::{RestSecret, derived_secret, rest_credential};
