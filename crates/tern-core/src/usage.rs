//! What an allocation used, handed to the driver once when it ends: the raw material
//! of usage records (who relayed how much, for how long, and why it stopped).

use std::net::SocketAddr;
use std::time::Duration;

use crate::FiveTuple;

/// Packets and application bytes relayed in one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
}

impl Traffic {
    /// Counts one packet of `len` application bytes.
    pub fn count(&mut self, len: usize) {
        self.packets += 1;
        self.bytes += len as u64;
    }

    /// Adds what was counted elsewhere (the kernel fast path).
    pub fn add(&mut self, other: Traffic) {
        self.packets += other.packets;
        self.bytes += other.bytes;
    }
}

/// Why an allocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Its lifetime ran out without a Refresh.
    Expired,
    /// The client deleted it: a Refresh with LIFETIME 0.
    Deleted,
    /// The client's TCP/TLS connection closed.
    ConnectionClosed,
    /// An operator killed it (the admin API, `tern kill`).
    Killed,
    /// Its user was revoked (the admin API, or a revocation from the fleet).
    Revoked,
    /// Still open when a drain (SIGTERM) ran out of time.
    Drained,
    /// Still open when the server stopped at once (SIGINT, a failed worker).
    Shutdown,
}

impl EndReason {
    /// The name usage records carry.
    pub fn name(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Deleted => "deleted",
            Self::ConnectionClosed => "connection_closed",
            Self::Killed => "killed",
            Self::Revoked => "revoked",
            Self::Drained => "drained",
            Self::Shutdown => "shutdown",
        }
    }
}

/// An allocation's account as it ends.
#[derive(Debug, Clone, Copy)]
pub struct Usage<'a> {
    pub tuple: &'a FiveTuple,
    /// The realm its credentials were checked in.
    pub realm: &'a str,
    pub relay: SocketAddr,
    /// A dual allocation's IPv6 relayed address, if it still had both at its end.
    pub additional_relay: Option<SocketAddr>,
    /// The USERNAME it was made with (for a REST credential, `expiry:user`).
    pub username: &'a str,
    /// Whom its quota counted: a static user's name, or a REST credential's user id.
    pub user: &'a str,
    /// How long it lived, to the second.
    pub duration: Duration,
    pub to_peer: Traffic,
    pub to_client: Traffic,
    /// Peer addresses it was given permissions for (a peer permitted again after its
    /// permission lapsed counts again).
    pub peers: u32,
    pub reason: EndReason,
}
