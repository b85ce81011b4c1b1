//! The server's state as workers, listeners and the admin API follow it.

/// What the server is doing, as workers and listeners follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Serving,
    /// Existing allocations keep relaying; new ones are refused; listeners stop
    /// accepting connections.
    Draining,
    Stopping,
}
