//! Every reason a request is refused, mapped to its wire code in one place.

use stun::attributes::AttrType;

/// Why a TURN request was refused, grouped by who is at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    // The client's request is wrong.
    BadRequest,
    UnknownAttributes(Vec<AttrType>),
    UnsupportedTransport,
    AddressFamilyNotSupported,
    PeerAddressFamilyMismatch,
    AllocationMismatch,
    // The client is not who it needs to be.
    Unauthorized,
    StaleNonce,
    WrongCredentials,
    // Another node of the fleet should take it.
    TryAlternate(std::net::SocketAddr),
    // Policy or resources say no.
    Forbidden,
    QuotaReached,
    InsufficientCapacity,
    // RFC 6062 TCP relaying.
    ConnectionAlreadyExists,
    ConnectionFailed,
}

impl Reject {
    /// The STUN/TURN error code (RFC 8489 §14.8, RFC 8656 §18, RFC 6062 §6.3).
    pub fn code(&self) -> u16 {
        match self {
            Self::TryAlternate(_) => 300,
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::UnknownAttributes(_) => 420,
            Self::AllocationMismatch => 437,
            Self::StaleNonce => 438,
            Self::AddressFamilyNotSupported => 440,
            Self::WrongCredentials => 441,
            Self::UnsupportedTransport => 442,
            Self::PeerAddressFamilyMismatch => 443,
            Self::QuotaReached => 486,
            Self::ConnectionAlreadyExists => 446,
            Self::ConnectionFailed => 447,
            Self::InsufficientCapacity => 508,
        }
    }
}
