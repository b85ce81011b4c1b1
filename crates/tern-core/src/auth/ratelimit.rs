//! Per-source limit on 401 (Unauthorized) answers, the reflection defence of RFC 8489 §9.2.
//!
//! An unauthenticated request with a spoofed source makes us send a 401 to a victim, so the
//! number of 401s per source IP is capped with a token bucket. This module owns that cap. It
//! must never grow memory with traffic: buckets live in a fixed table indexed by a keyed
//! hash of the IP (a collision only makes two sources share a bucket). It never reads the
//! clock; the caller passes an [`Instant`].
//!
//! Clones of a limiter share its table, so all the workers of a server draw on one budget
//! per source IP: the kernel spreads the source ports of one IP over every worker, and a
//! table per worker would give such a source the budget once per worker.

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Token amounts are kept in billionths of a token, so refill is exact integer arithmetic
/// on nanoseconds: `per_second` tokens per 1e9 ns is `per_second` units per ns.
const UNITS_PER_TOKEN: u64 = 1_000_000_000;

#[derive(Clone, Copy)]
struct Bucket {
    /// Tokens available, in [`UNITS_PER_TOKEN`] units, as of `last`.
    units: u64,
    /// When `units` was last brought up to date; `None` for a slot never used (full).
    last: Option<Instant>,
}

/// Fixed-memory, per-source-IP token buckets for 401 answers. Clones share the buckets
/// and the rates, so a reload changes the rates of every worker at once.
#[derive(Clone)]
pub struct UnauthorizedLimiter {
    hash_key: u64,
    /// Number of buckets, fixed for the life of the limiter.
    slots: usize,
    /// Held only for one bucket update, on the unauthenticated path, or a rate change.
    table: Arc<Mutex<Table>>,
}

/// The rates and the buckets they apply to.
struct Table {
    per_second: u64,
    /// Bucket capacity in units.
    capacity: u64,
    /// Empty while the limiter is disabled and has never been enabled.
    buckets: Box<[Bucket]>,
}

impl Table {
    /// Sets the rates; the first time the limit is on, the buckets are made (full).
    fn set(&mut self, per_second: u32, burst: u32, slots: usize) {
        self.per_second = u64::from(per_second);
        self.capacity = u64::from(burst.max(1)) * UNITS_PER_TOKEN;
        if per_second > 0 && self.buckets.is_empty() {
            let full = Bucket {
                units: self.capacity,
                last: None,
            };
            self.buckets = vec![full; slots].into_boxed_slice();
        }
    }
}

impl UnauthorizedLimiter {
    /// `per_second` tokens refill per second up to `burst` (clamped to at least 1, since a
    /// zero-sized bucket would refuse every 401 and lock out honest clients); `slots` buckets
    /// (clamped to at least 1; a power of two is cheapest). `per_second == 0` disables the
    /// limiter: every call is allowed and no table is allocated. `hash_key` should be random
    /// per process so outsiders cannot aim at a chosen bucket.
    pub fn new(per_second: u32, burst: u32, slots: usize, hash_key: u64) -> Self {
        let slots = slots.max(1);
        let mut table = Table {
            per_second: 0,
            capacity: 0,
            buckets: Box::default(),
        };
        table.set(per_second, burst, slots);
        Self {
            hash_key,
            slots,
            table: Arc::new(Mutex::new(table)),
        }
    }

    /// New rates for every clone (a reload). Each bucket keeps its tokens, capped to the
    /// new burst when next used, so a lower burst applies at once and a source gains
    /// nothing from a reload; `per_second == 0` turns the limit off.
    pub fn set_rates(&self, per_second: u32, burst: u32) {
        self.lock().set(per_second, burst, self.slots);
    }

    /// Nothing done under the lock panics, so even a lock poisoned elsewhere holds valid
    /// buckets.
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a token for `ip` at `now`; `false` means the source is over budget and should
    /// get no answer. A `now` earlier than one already seen counts as no time passing.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let slot = self.slot(ip);
        let mut table = self.lock();
        let (per_second, capacity) = (table.per_second, table.capacity);
        if per_second == 0 {
            return true;
        }
        let Some(bucket) = table.buckets.get_mut(slot) else {
            return true;
        };
        let mut units = u128::from(bucket.units);
        if let Some(last) = bucket.last {
            let elapsed = now.saturating_duration_since(last).as_nanos();
            units = units.saturating_add(elapsed.saturating_mul(u128::from(per_second)));
        }
        // Capped also for a bucket never used: a reload may have lowered the burst.
        bucket.units = u64::try_from(units).unwrap_or(u64::MAX).min(capacity);
        if bucket.last.is_none_or(|last| now > last) {
            bucket.last = Some(now);
        }
        if bucket.units >= UNITS_PER_TOKEN {
            bucket.units -= UNITS_PER_TOKEN;
            true
        } else {
            false
        }
    }

    /// Bucket index for `ip`. IPv4 is hashed as its IPv4-mapped IPv6 form, so a host seen
    /// through a dual-stack socket and a v4 socket shares one bucket.
    fn slot(&self, ip: IpAddr) -> usize {
        let bits = match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
            IpAddr::V6(v6) => v6.to_bits(),
        };
        // Truncations are intended: the two halves of the address, then a hash reduced
        // modulo a table length that fits usize.
        let (high, low) = ((bits >> 64) as u64, bits as u64);
        let hash = mix(mix(self.hash_key ^ high) ^ low);
        (hash % self.slots.max(1) as u64) as usize
    }
}

/// The splitmix64 finalizer: a bijective mixer so every address bit affects every index bit.
/// Not a MAC; the key only keeps bucket placement unpredictable to outsiders, and a
/// collision costs at most a shared budget.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Omits `hash_key`, which would let a reader predict bucket placement.
impl fmt::Debug for UnauthorizedLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = self.lock();
        f.debug_struct("UnauthorizedLimiter")
            .field("per_second", &table.per_second)
            .field("burst", &(table.capacity / UNITS_PER_TOKEN))
            .field("slots", &self.slots)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    const KEY: u64 = 0x0123_4567_89ab_cdef;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    fn drain(limiter: &mut UnauthorizedLimiter, ip: IpAddr, now: Instant) -> usize {
        (0..1000).take_while(|_| limiter.allow(ip, now)).count()
    }

    #[test]
    fn burst_then_denial() {
        let mut limiter = UnauthorizedLimiter::new(2, 5, 64, KEY);
        let now = Instant::now();
        assert_eq!(drain(&mut limiter, ip(1), now), 5);
        assert!(!limiter.allow(ip(1), now));
    }

    #[test]
    fn refills_as_time_advances() {
        let mut limiter = UnauthorizedLimiter::new(2, 5, 64, KEY);
        let start = Instant::now();
        assert_eq!(drain(&mut limiter, ip(1), start), 5);
        // 2 per second: one token every 500 ms, credited exactly.
        assert!(!limiter.allow(ip(1), start + Duration::from_millis(499)));
        assert!(limiter.allow(ip(1), start + Duration::from_millis(500)));
        assert!(!limiter.allow(ip(1), start + Duration::from_millis(500)));
        // A long pause refills only up to the burst.
        let later = start + Duration::from_secs(3600);
        assert_eq!(drain(&mut limiter, ip(1), later), 5);
    }

    #[test]
    fn time_going_backwards_grants_nothing() {
        let mut limiter = UnauthorizedLimiter::new(1, 1, 8, KEY);
        let start = Instant::now() + Duration::from_secs(10);
        assert!(limiter.allow(ip(1), start));
        assert!(!limiter.allow(ip(1), start - Duration::from_secs(5)));
        assert!(!limiter.allow(ip(1), start + Duration::from_millis(999)));
        assert!(limiter.allow(ip(1), start + Duration::from_secs(1)));
    }

    #[test]
    fn different_ips_are_independent() {
        let mut limiter = UnauthorizedLimiter::new(1, 3, 1024, KEY);
        let a = ip(1);
        let b = (2..=255)
            .map(ip)
            .find(|&b| limiter.slot(b) != limiter.slot(a))
            .unwrap_or(ip(2));
        assert_ne!(
            limiter.slot(a),
            limiter.slot(b),
            "test needs distinct slots"
        );
        let now = Instant::now();
        assert_eq!(drain(&mut limiter, a, now), 3);
        assert_eq!(drain(&mut limiter, b, now), 3);
    }

    #[test]
    fn v4_and_mapped_v6_share_a_bucket() {
        let limiter = UnauthorizedLimiter::new(1, 1, 1024, KEY);
        let v4 = Ipv4Addr::new(192, 0, 2, 1);
        assert_eq!(
            limiter.slot(IpAddr::V4(v4)),
            limiter.slot(IpAddr::V6(v4.to_ipv6_mapped()))
        );
    }

    #[test]
    fn memory_is_fixed_and_slots_clamped() {
        let mut limiter = UnauthorizedLimiter::new(1, 1, 0, KEY);
        assert_eq!(limiter.slots, 1);
        let now = Instant::now();
        // Everyone shares the single bucket: one answer in total.
        assert!(limiter.allow(ip(1), now));
        assert!(!limiter.allow(ip(2), now));
        for last in 0..=255 {
            limiter.allow(ip(last), now);
        }
        assert_eq!(limiter.lock().buckets.len(), 1);
    }

    #[test]
    fn clones_share_one_budget() {
        let mut first = UnauthorizedLimiter::new(1, 4, 64, KEY);
        let mut second = first.clone();
        let now = Instant::now();
        assert_eq!(
            drain(&mut first, ip(1), now) + drain(&mut second, ip(1), now),
            4
        );
        assert!(!second.allow(ip(1), now + std::time::Duration::from_millis(999)));
        assert!(first.allow(ip(1), now + std::time::Duration::from_secs(1)));
    }

    #[test]
    fn zero_burst_is_clamped_to_one() {
        let mut limiter = UnauthorizedLimiter::new(1, 0, 8, KEY);
        assert_eq!(drain(&mut limiter, ip(1), Instant::now()), 1);
    }

    #[test]
    fn disabled_always_allows() {
        let mut limiter = UnauthorizedLimiter::new(0, 1, 1024, KEY);
        assert!(limiter.lock().buckets.is_empty());
        let now = Instant::now();
        assert!((0..10_000).all(|_| limiter.allow(ip(1), now)));
    }

    #[test]
    fn new_rates_reach_every_clone_and_a_lower_burst_applies_at_once() {
        let first = UnauthorizedLimiter::new(1, 50, 64, KEY);
        let mut second = first.clone();
        let now = Instant::now();
        assert!(second.allow(ip(1), now), "one of 50 taken");
        first.set_rates(1, 3);
        assert_eq!(drain(&mut second, ip(1), now), 3, "capped to the new burst");
        assert_eq!(drain(&mut second, ip(2), now), 3, "a bucket never used too");
        first.set_rates(1000, 3);
        assert!(second.allow(ip(1), now + std::time::Duration::from_millis(1)));
    }

    #[test]
    fn a_disabled_limiter_can_be_turned_on_and_off() {
        let mut limiter = UnauthorizedLimiter::new(0, 1, 16, KEY);
        let now = Instant::now();
        limiter.set_rates(1, 2);
        assert_eq!(limiter.lock().buckets.len(), 16);
        assert_eq!(drain(&mut limiter, ip(1), now), 2);
        limiter.set_rates(0, 2);
        assert!((0..100).all(|_| limiter.allow(ip(1), now)));
    }

    #[test]
    fn debug_hides_hash_key() {
        let shown = format!("{:?}", UnauthorizedLimiter::new(1, 2, 8, KEY));
        assert!(!shown.contains(&KEY.to_string()));
        assert!(!shown.contains("123456789abcdef"));
    }
}
