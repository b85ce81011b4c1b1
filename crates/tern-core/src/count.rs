//! What the engine counts, reported to its driver through [`Io::count`](super::Io::count).
//!
//! The core keeps no metrics registry: it says what happened and the driver decides
//! where counts go (Prometheus in the server, a recorder in tests), so the core needs
//! no metrics crate and never shares a counter with another thread.

use super::{Direction, LimitScope, Reject, RelayFamilies, Transport};

/// One thing worth counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count<'a> {
    /// An error response was sent (including 401/438 challenges the limiter let out).
    ErrorSent(&'a Reject),
    /// A request was challenged for credentials (401, or 438 when its nonce was
    /// stale), whether or not the limiter let the answer out.
    Challenged { stale_nonce: bool },
    /// An allocation was created for a client on `transport`, relaying `families`
    /// (or a dual one lost a family, and is counted again under the other).
    AllocationOpened {
        transport: Transport,
        families: RelayFamilies,
    },
    /// An allocation was deleted (expired, refreshed to 0, killed, its connection
    /// closed), or a dual one lost a family.
    AllocationClosed {
        transport: Transport,
        families: RelayFamilies,
    },
    /// Application bytes of one datagram relayed to a peer.
    ToPeer(usize),
    /// Application bytes of one datagram relayed to a client by the engine (relay
    /// readers forwarding on their own count for themselves).
    ToClient(usize),
    /// A datagram of `bytes` application bytes a bandwidth limit dropped.
    BandwidthDropped {
        limit: LimitScope,
        direction: Direction,
        bytes: usize,
    },
}
