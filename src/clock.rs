//! Wall-clock time as the protocols count it: REST credential expiry, certificate
//! validity and the engine's unix timestamps are all whole seconds since 1970.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in seconds; 0 if the clock is before 1970 (credentials minted then are
/// already expired, and a server with such a clock refuses everything time-limited).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
