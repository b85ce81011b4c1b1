//! Why a coturn option did not become a tern key.
//!
//! Each message is one line for the operator's report, naming the problem and what
//! tern does instead. None quotes the value of a user line (it holds a password or a
//! key); the report scrubs other secret-bearing options' values as well.

use std::net::IpAddr;
use thiserror::Error;

use super::cidr::CidrError;

/// An option that is understood but whose value tern cannot take, or an option tern
/// does not support.
#[derive(Debug, Error)]
pub enum Refusal {
    #[error("no value given")]
    NoValue,
    #[error("{0:?} is not a number in the accepted range")]
    NotANumber(String),
    #[error("port 0 is not a usable port")]
    PortZero,
    #[error("{0:?} is not an IP address (host names and devices are not supported)")]
    NotAnAddress(String),
    #[error(
        "{0} cannot be a relay address (wildcard or multicast); leave relay.ips empty to use the interface addresses"
    )]
    UnusableRelayAddress(IpAddr),
    #[error("{0} means coturn's default; tern's default applies")]
    CoturnDefaultSeconds(i64),
    #[error("{0} s is longer than tern's maximum of one day")]
    TooManySeconds(i64),
    #[error("{0:?} is not a number of seconds")]
    NotSeconds(String),
    #[error("0 means unlimited in coturn; tern bounds every limit, so its default applies")]
    UnlimitedQuota,
    #[error("0 means unlimited, as tern without a [bandwidth] limit")]
    UnlimitedBandwidth,
    #[error("{0} bytes/s is below tern's smallest limit of 1000 bytes/s (8 kbit/s)")]
    BandwidthTooLow(u64),
    #[error("tern takes a realm of 1 to 127 characters")]
    RealmTooLong,
    #[error("the separator must be one character, not a digit")]
    BadSeparator,
    #[error("tern takes 1 to 1024 workers; the default (one per CPU) applies")]
    WorkersOutOfRange,
    /// The external address as tern's config would refuse it (its own message).
    #[error("{0}")]
    ExternalAddress(String),
    #[error("expected NAME:PASSWORD or NAME:0xKEY")]
    NotAUser,
    #[error("expected NAME:PASSWORD or NAME:0xKEY (a part is empty)")]
    EmptyUserPart,
    #[error("the 0x key is not 32 hex digits (an MD5 key)")]
    NotAKey,
    #[error(transparent)]
    PeerRange(#[from] CidrError),
    /// An option tern has no equivalent for, with the reason.
    #[error("{0}")]
    Unsupported(&'static str),
}
