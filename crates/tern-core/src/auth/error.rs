//! Errors of the auth module.
//!
//! Owns the error vocabulary only. Messages must stay short and must never carry a
//! username's secret, a password, a key or the text a key was parsed from: they end up in
//! logs and, for [`AuthError`], drive which STUN error code a client sees.

use thiserror::Error;

/// Why a request could not be authenticated.
///
/// Deliberately coarse: the wire answer (401/437/...) is chosen from it, and a finer split
/// would tell a prober more than it needs to know.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No static user by that name, and not a well-formed REST username (or no REST secret
    /// is configured).
    #[error("unknown user")]
    UnknownUser,
    /// A REST username whose expiry time has passed.
    #[error("credentials expired")]
    Expired,
    /// No candidate key produced the MESSAGE-INTEGRITY the request carries.
    #[error("bad message integrity")]
    BadIntegrity,
}

/// A credential setting that cannot be used. Reported at startup, before anything binds.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AuthConfigError {
    /// A precomputed long-term key must be 32 hex digits (16 bytes).
    #[error("long-term key must be 32 hex digits, found {found} characters")]
    KeyHexLength {
        /// Length of the given text in bytes; the text itself is secret and not kept.
        found: usize,
    },
    /// A precomputed long-term key contained something other than hex digits.
    #[error("long-term key must contain only hex digits")]
    KeyHexDigit,
}
