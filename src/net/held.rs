//! Requests a worker holds while the operator's service is asked about their username
//! (`auth.webhook`), to hand them to the engine again once it has answered: a client
//! gets its answer as soon as the key is known, over TCP too (where nothing is sent
//! twice). Bounded per worker and per username; a request past either bound is
//! dropped, and a UDP client sends it again.

use std::collections::HashMap;

use crate::core::FiveTuple;

/// Requests held for one username: retransmissions and a few clients' first requests.
const PER_USERNAME: usize = 16;

/// What became of a request handed to [`HeldRequests::hold`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Held, and the first for its username: the service must be asked.
    First,
    /// Held behind others for the same username (or the same request held already).
    Behind,
    /// Not held: a bound is reached.
    Full,
}

/// A held request: where it came from, and its bytes.
pub type HeldRequest = (FiveTuple, Box<[u8]>);

pub struct HeldRequests {
    by_username: HashMap<String, Vec<HeldRequest>>,
    held: usize,
    max: usize,
}

impl HeldRequests {
    /// At most `max` requests held in all.
    pub fn new(max: usize) -> Self {
        Self {
            by_username: HashMap::new(),
            held: 0,
            max,
        }
    }

    pub fn hold(&mut self, username: &str, tuple: FiveTuple, request: &[u8]) -> Held {
        if self.held >= self.max {
            return Held::Full;
        }
        let first = !self.by_username.contains_key(username);
        let requests = self.by_username.entry(username.to_string()).or_default();
        if requests.iter().any(|(t, r)| *t == tuple && **r == *request) {
            return Held::Behind;
        }
        if requests.len() >= PER_USERNAME {
            return Held::Full;
        }
        requests.push((tuple, request.into()));
        self.held += 1;
        if first { Held::First } else { Held::Behind }
    }

    /// The requests held for `username`, which are held no more.
    pub fn release(&mut self, username: &str) -> Vec<HeldRequest> {
        let requests = self.by_username.remove(username).unwrap_or_default();
        self.held -= requests.len();
        requests
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Transport;

    fn tuple(port: u16) -> FiveTuple {
        FiveTuple {
            client: ([192, 0, 2, 1], port).into(),
            server: ([192, 0, 2, 2], 3478).into(),
            transport: Transport::Udp,
        }
    }

    #[test]
    fn the_first_asks_retransmissions_fold_and_bounds_hold() {
        let mut held = HeldRequests::new(3);
        assert_eq!(held.hold("carol", tuple(1), b"a"), Held::First);
        assert_eq!(held.hold("carol", tuple(1), b"a"), Held::Behind);
        assert_eq!(held.hold("carol", tuple(2), b"b"), Held::Behind);
        assert_eq!(held.hold("dave", tuple(3), b"c"), Held::First);
        assert_eq!(held.hold("erin", tuple(4), b"d"), Held::Full);
        let carol = held.release("carol");
        assert_eq!(carol.len(), 2);
        assert_eq!(held.hold("erin", tuple(4), b"d"), Held::First);
        assert!(held.release("nobody").is_empty());
    }

    #[test]
    fn one_username_cannot_take_every_place() {
        let mut held = HeldRequests::new(100);
        for port in 0..PER_USERNAME as u16 {
            assert_ne!(held.hold("carol", tuple(port), b"a"), Held::Full);
        }
        assert_eq!(held.hold("carol", tuple(999), b"a"), Held::Full);
        assert_eq!(held.hold("dave", tuple(1), b"a"), Held::First);
    }
}
