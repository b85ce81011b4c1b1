//! Which relay ports are taken, per relay IP. The engine asks here before binding, so
//! two allocations never share a port and every port is free again when released.

use rand::Rng;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use crate::config::PortRange;

/// Ports in use (bound or reserved) per relay IP.
///
/// Invariant: every port in `used` lies inside `range`.
#[derive(Debug)]
pub struct PortPool {
    range: PortRange,
    used: HashMap<IpAddr, HashSet<u16>>,
}

/// Which ports an allocation may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortWish {
    Any,
    /// An even port (EVEN-PORT); with `reserve_next`, the next port must be free too.
    Even {
        reserve_next: bool,
    },
}

impl PortPool {
    pub fn new(range: PortRange) -> Self {
        Self {
            range,
            used: HashMap::new(),
        }
    }

    pub fn range(&self) -> PortRange {
        self.range
    }

    /// Free ports that fit `wish`, starting at a random place in the range so that
    /// relay ports are not predictable. At most `limit` candidates.
    pub fn candidates(
        &self,
        ip: IpAddr,
        wish: PortWish,
        limit: usize,
        rng: &mut impl Rng,
    ) -> Vec<u16> {
        let empty = HashSet::new();
        let used = self.used.get(&ip).unwrap_or(&empty);
        let len = self.range.count();
        let start = rng.random_range(0..len);
        (0..len)
            .map(|i| self.range.min() + ((start + i) % len) as u16)
            .filter(|&p| !used.contains(&p))
            .filter(|&p| match wish {
                PortWish::Any => true,
                PortWish::Even { reserve_next } => {
                    p % 2 == 0
                        && (!reserve_next
                            || (self.range.contains(p.wrapping_add(1)) && !used.contains(&(p + 1))))
                }
            })
            .take(limit)
            .collect()
    }

    /// Marks a port taken; false if it already was.
    pub fn take(&mut self, ip: IpAddr, port: u16) -> bool {
        self.range.contains(port) && self.used.entry(ip).or_default().insert(port)
    }

    pub fn is_taken(&self, ip: IpAddr, port: u16) -> bool {
        self.used
            .get(&ip)
            .is_some_and(|ports| ports.contains(&port))
    }

    pub fn release(&mut self, ip: IpAddr, port: u16) {
        if let Some(set) = self.used.get_mut(&ip) {
            set.remove(&port);
            if set.is_empty() {
                self.used.remove(&ip);
            }
        }
    }

    pub fn in_use(&self) -> usize {
        self.used.values().map(HashSet::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn takes_releases_and_exhausts() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mut pool = PortPool::new(PortRange::new(50000, 50003).unwrap());
        for _ in 0..4 {
            let p = pool.candidates(ip, PortWish::Any, 1, &mut rng)[0];
            assert!(pool.take(ip, p));
        }
        assert!(pool.candidates(ip, PortWish::Any, 8, &mut rng).is_empty());
        assert!(pool.is_taken(ip, 50002));
        pool.release(ip, 50002);
        assert!(!pool.is_taken(ip, 50002));
        assert_eq!(pool.candidates(ip, PortWish::Any, 8, &mut rng), vec![50002]);
    }

    #[test]
    fn even_port_with_reservation_needs_a_free_pair() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mut pool = PortPool::new(PortRange::new(50000, 50003).unwrap());
        assert!(pool.take(ip, 50001));
        let c = pool.candidates(ip, PortWish::Even { reserve_next: true }, 8, &mut rng);
        assert_eq!(c, vec![50002]);
        let c = pool.candidates(
            ip,
            PortWish::Even {
                reserve_next: false,
            },
            8,
            &mut rng,
        );
        assert_eq!(c.len(), 2);
    }
}
