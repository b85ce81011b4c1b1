//! Which relay ports are taken, per relay IP. The engine asks here before binding, so
//! two allocations never share a port and every port is free again when released.

use rand::Rng;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use super::PortRange;

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

impl PortWish {
    /// Whether the next port is held too, for a later Allocate with its token.
    pub fn reserves_next(self) -> bool {
        self == PortWish::Even { reserve_next: true }
    }
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

    /// Takes a free port on `ip` that fits `wish` and returns it, searching from a
    /// random place in the range so that relay ports are not predictable; None when no
    /// port fits. For an EVEN-PORT reservation the even port and its successor are
    /// taken together or not at all, under the one lock the workers share: a check
    /// followed by a separate take would let another worker take the successor in
    /// between, and the reservation would later free a port that worker holds.
    pub fn take_free(&mut self, ip: IpAddr, wish: PortWish, rng: &mut impl Rng) -> Option<u16> {
        let range = self.range;
        let used = self.used.get(&ip);
        let free = |p: u16| range.contains(p) && used.is_none_or(|u| !u.contains(&p));
        let len = range.count();
        let start = rng.random_range(0..len);
        let port = (0..len)
            .map(|i| range.min() + ((start + i) % len) as u16)
            .find(|&p| {
                free(p)
                    && match wish {
                        PortWish::Any => true,
                        // An even port is at most 65534, so its successor exists.
                        PortWish::Even { reserve_next } => {
                            p % 2 == 0 && (!reserve_next || free(p + 1))
                        }
                    }
            })?;
        let used = self.used.entry(ip).or_default();
        used.insert(port);
        if wish.reserves_next() {
            used.insert(port + 1);
        }
        Some(port)
    }

    /// Frees what [`PortPool::take_free`] took for `wish`: the port, and its successor
    /// for an EVEN-PORT reservation.
    pub fn give_back(&mut self, ip: IpAddr, port: u16, wish: PortWish) {
        self.release(ip, port);
        if wish.reserves_next() {
            self.release(ip, port + 1);
        }
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

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const PAIR: PortWish = PortWish::Even { reserve_next: true };

    #[test]
    fn takes_releases_and_exhausts() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut pool = PortPool::new(PortRange::new(50000, 50003).unwrap());
        let mut taken: Vec<u16> = (0..4)
            .map(|_| pool.take_free(IP, PortWish::Any, &mut rng).unwrap())
            .collect();
        taken.sort_unstable();
        assert_eq!(taken, [50000, 50001, 50002, 50003]);
        assert_eq!(pool.take_free(IP, PortWish::Any, &mut rng), None);
        assert!(!pool.take(IP, 50002));
        pool.release(IP, 50002);
        assert!(!pool.is_taken(IP, 50002));
        assert_eq!(pool.take_free(IP, PortWish::Any, &mut rng), Some(50002));
        assert_eq!(pool.in_use(), 4);
    }

    /// A free even port whose successor is taken is passed over for a free pair, and
    /// with no free pair nothing is taken, although single ports are free.
    #[test]
    fn a_reservation_takes_a_free_pair_or_nothing() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let mut pool = PortPool::new(PortRange::new(50000, 50005).unwrap());
        assert!(pool.take(IP, 50001));
        assert!(pool.take(IP, 50004));
        for _ in 0..8 {
            assert_eq!(pool.take_free(IP, PAIR, &mut rng), Some(50002));
            assert!(pool.is_taken(IP, 50003));
            pool.give_back(IP, 50002, PAIR);
            assert_eq!(pool.in_use(), 2);
        }
        assert_eq!(pool.take_free(IP, PAIR, &mut rng), Some(50002));
        assert_eq!(pool.take_free(IP, PAIR, &mut rng), None);
        assert_eq!(pool.in_use(), 4, "a failed reservation took nothing");
        let even = PortWish::Even {
            reserve_next: false,
        };
        assert_eq!(pool.take_free(IP, even, &mut rng), Some(50000));
        assert_eq!(pool.take_free(IP, PortWish::Any, &mut rng), Some(50005));
        assert_eq!(pool.take_free(IP, PortWish::Any, &mut rng), None);
    }

    /// The last even port of a range has no successor inside it to reserve.
    #[test]
    fn a_reservation_stays_inside_the_range() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut pool = PortPool::new(PortRange::new(50001, 50002).unwrap());
        assert_eq!(pool.take_free(IP, PAIR, &mut rng), None);
        assert_eq!(pool.in_use(), 0);
    }
}
