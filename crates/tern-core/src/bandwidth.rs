//! Bandwidth limits: token buckets on relayed application bytes, per allocation, per
//! user and for the whole server, each direction on its own (as coturn's `max-bps` and
//! `bps-capacity`).
//!
//! A packet passes when every configured bucket has room for it and is charged to all of
//! them; otherwise it is dropped, as a congested link would drop it, and nothing is
//! charged. Buckets are kept as GCRA (the "virtual scheduling" form of a token bucket):
//! one instant each, the time at which the bucket would be full again, so a bucket shared
//! by the workers is one atomic word changed with compare-and-swap, with no lock.
//!
//! An allocation's own state is created on its first packet while limits are set, so an
//! unlimited server pays one branch per packet and eight bytes per allocation. Rates and
//! bursts come from the engine's config at each packet: a reload applies to allocations
//! in progress. A user's rate is split over the fleet by allocation count (see
//! [`Shared::set_fleet`](crate::Shared::set_fleet)).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::Traffic;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// The whole of a user's rate, in [`UserBandwidth::share`]'s fixed point.
pub const FULL_SHARE: u32 = 1 << 16;

/// A rate and the burst a bucket allows above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Application bytes per second (at least 1).
    pub bytes_per_sec: u64,
    /// Bytes that may pass at once after a quiet spell (at least one packet's worth).
    pub burst: u64,
}

impl Limit {
    /// Nanoseconds of the rate `bytes` take.
    fn cost(&self, bytes: u64) -> u64 {
        bytes.saturating_mul(NANOS_PER_SEC) / self.bytes_per_sec.max(1)
    }

    /// `share` (of [`FULL_SHARE`]) of this limit: the part a node gets of a user's rate
    /// when the user's allocations are spread over the fleet.
    fn scaled(self, share: u32) -> Limit {
        if share >= FULL_SHARE {
            return self;
        }
        let part = |v: u64| (v.saturating_mul(u64::from(share)) >> 16).max(1);
        Limit {
            bytes_per_sec: part(self.bytes_per_sec),
            burst: part(self.burst),
        }
    }

    /// The bucket's next full instant if `bytes` may pass at `now` (all in nanoseconds),
    /// given its current one, `tat`.
    fn admit(&self, tat: u64, now: u64, bytes: u64) -> Option<u64> {
        let next = tat.max(now).saturating_add(self.cost(bytes));
        (next - now <= self.cost(self.burst)).then_some(next)
    }
}

/// The configured limits; `None` where there is none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BandwidthLimits {
    pub allocation: Option<Limit>,
    pub user: Option<Limit>,
    pub server: Option<Limit>,
}

impl BandwidthLimits {
    /// Whether any limit is set (a kernel fast path cannot enforce them, so channels
    /// stay with the engine while one is).
    pub fn any(&self) -> bool {
        self.allocation.is_some() || self.user.is_some() || self.server.is_some()
    }
}

/// Which way relayed bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ToPeer,
    ToClient,
}

impl Direction {
    /// Both, in declaration order: `ALL[d.index()] == d`.
    pub const ALL: [Direction; 2] = [Direction::ToPeer, Direction::ToClient];

    pub fn name(self) -> &'static str {
        match self {
            Direction::ToPeer => "to_peer",
            Direction::ToClient => "to_client",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Which limit dropped a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitScope {
    Allocation,
    User,
    Server,
}

impl LimitScope {
    /// All, in declaration order: `ALL[l.index()] == l`.
    pub const ALL: [LimitScope; 3] = [LimitScope::Allocation, LimitScope::User, LimitScope::Server];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            LimitScope::Allocation => "allocation",
            LimitScope::User => "user",
            LimitScope::Server => "server",
        }
    }
}

/// A bucket several workers charge: its full instant, in nanoseconds since the shared
/// epoch.
#[derive(Debug, Default)]
struct SharedBucket {
    tat: AtomicU64,
}

impl SharedBucket {
    fn take(&self, limit: Limit, bytes: u64, now: u64) -> bool {
        self.tat
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| {
                limit.admit(tat, now, bytes)
            })
            .is_ok()
    }

    /// Undoes a [`SharedBucket::take`] of `bytes` (a later bucket refused the packet).
    fn give_back(&self, limit: Limit, bytes: u64) {
        let cost = limit.cost(bytes);
        let _ = self
            .tat
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| {
                Some(tat.saturating_sub(cost))
            });
    }
}

/// Both directions' shared buckets.
#[derive(Debug, Default)]
pub struct SharedBuckets([SharedBucket; 2]);

impl SharedBuckets {
    fn get(&self, direction: Direction) -> &SharedBucket {
        &self.0[direction.index()]
    }
}

/// One user's buckets on this node, shared by the user's allocations on every worker.
#[derive(Debug)]
pub struct UserBandwidth {
    buckets: SharedBuckets,
    /// This node's part of the user's rate, of [`FULL_SHARE`].
    share: AtomicU32,
}

impl Default for UserBandwidth {
    fn default() -> Self {
        Self {
            buckets: SharedBuckets::default(),
            share: AtomicU32::new(FULL_SHARE),
        }
    }
}

impl UserBandwidth {
    /// Sets this node's part of the user's rate from the user's allocations here and on
    /// the other nodes.
    pub fn set_share(&self, local: usize, remote: usize) {
        let total = (local + remote).max(1) as u64;
        let share = (local as u64 * u64::from(FULL_SHARE) / total).clamp(1, u64::from(FULL_SHARE));
        self.share.store(share as u32, Ordering::Relaxed);
    }

    pub fn share(&self) -> u32 {
        self.share.load(Ordering::Relaxed)
    }
}

/// An allocation's buckets and what the limits dropped of its traffic.
#[derive(Debug)]
pub struct AllocationBandwidth {
    /// Each direction's full instant, in nanoseconds since the shared epoch.
    tat: [u64; 2],
    user: Arc<UserBandwidth>,
    dropped: [Traffic; 2],
}

impl AllocationBandwidth {
    pub fn new(user: Arc<UserBandwidth>) -> Self {
        Self {
            tat: [0; 2],
            user,
            dropped: [Traffic::default(); 2],
        }
    }

    /// What the limits dropped in `direction`.
    pub fn dropped(&self, direction: Direction) -> Traffic {
        self.dropped[direction.index()]
    }

    /// Charges `bytes` in `direction` at `now` (nanoseconds since the shared epoch) to
    /// this allocation's, its user's and the server's buckets, as `limits` has them.
    /// On a refusal nothing stays charged, the drop is counted here and the limit that
    /// refused is returned.
    pub fn charge(
        &mut self,
        limits: &BandwidthLimits,
        server: &SharedBuckets,
        direction: Direction,
        bytes: usize,
        now: u64,
    ) -> Result<(), LimitScope> {
        let result = self.try_charge(limits, server, direction, bytes as u64, now);
        if result.is_err() {
            self.dropped[direction.index()].count(bytes);
        }
        result
    }

    fn try_charge(
        &mut self,
        limits: &BandwidthLimits,
        server: &SharedBuckets,
        direction: Direction,
        bytes: u64,
        now: u64,
    ) -> Result<(), LimitScope> {
        let d = direction.index();
        let own_before = self.tat[d];
        if let Some(limit) = limits.allocation {
            self.tat[d] = limit
                .admit(own_before, now, bytes)
                .ok_or(LimitScope::Allocation)?;
        }
        let user_limit = limits.user.map(|l| l.scaled(self.user.share()));
        let user = self.user.buckets.get(direction);
        if let Some(limit) = user_limit
            && !user.take(limit, bytes, now)
        {
            self.tat[d] = own_before;
            return Err(LimitScope::User);
        }
        if let Some(limit) = limits.server
            && !server.get(direction).take(limit, bytes, now)
        {
            self.tat[d] = own_before;
            if let Some(limit) = user_limit {
                user.give_back(limit, bytes);
            }
            return Err(LimitScope::Server);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn limit(bytes_per_sec: u64, burst: u64) -> Limit {
        Limit {
            bytes_per_sec,
            burst,
        }
    }

    /// Bytes of `packet`-byte packets that pass in `secs` seconds offered every `gap`
    /// nanoseconds.
    fn passed(
        alloc: &mut AllocationBandwidth,
        limits: &BandwidthLimits,
        server: &SharedBuckets,
        packet: usize,
        gap: u64,
        secs: u64,
    ) -> u64 {
        let mut passed = 0;
        let mut now = 0;
        while now < secs * NANOS_PER_SEC {
            if alloc
                .charge(limits, server, Direction::ToPeer, packet, now)
                .is_ok()
            {
                passed += packet as u64;
            }
            now += gap;
        }
        passed
    }

    #[test]
    fn a_bucket_passes_its_rate_plus_its_burst() {
        let limits = BandwidthLimits {
            allocation: Some(limit(100_000, 10_000)),
            ..BandwidthLimits::default()
        };
        let mut alloc = AllocationBandwidth::new(Arc::default());
        // 1000-byte packets every millisecond: 1 MB/s offered for 10 s.
        let passed = passed(&mut alloc, &limits, &SharedBuckets::default(), 1000, MS, 10);
        assert!((1_000_000..=1_011_000).contains(&passed), "{passed}");
        let dropped = alloc.dropped(Direction::ToPeer);
        assert_eq!(dropped.bytes + passed, 10_000_000);
        assert_eq!(alloc.dropped(Direction::ToClient), Traffic::default());
    }

    #[test]
    fn below_the_rate_everything_passes() {
        let limits = BandwidthLimits {
            allocation: Some(limit(100_000, 2_000)),
            server: Some(limit(1_000_000, 2_000)),
            ..BandwidthLimits::default()
        };
        let mut alloc = AllocationBandwidth::new(Arc::default());
        // 1000 bytes every 20 ms: 50 kB/s.
        let passed = passed(
            &mut alloc,
            &limits,
            &SharedBuckets::default(),
            1000,
            20 * MS,
            5,
        );
        assert_eq!(passed, 250_000);
    }

    #[test]
    fn a_refusal_charges_no_bucket() {
        let server = SharedBuckets::default();
        let user = Arc::new(UserBandwidth::default());
        let limits = BandwidthLimits {
            allocation: Some(limit(1_000_000, 10_000)),
            user: Some(limit(1_000_000, 10_000)),
            server: Some(limit(1_000, 1_500)),
        };
        let mut a = AllocationBandwidth::new(user.clone());
        assert_eq!(
            a.charge(&limits, &server, Direction::ToPeer, 1_000, 0),
            Ok(())
        );
        assert_eq!(
            a.charge(&limits, &server, Direction::ToPeer, 1_000, 0),
            Err(LimitScope::Server)
        );
        // The allocation's and the user's buckets were not charged for the refusal:
        // with the server limit gone, 9000 more bytes fit their 10 kB bursts at once.
        let no_server = BandwidthLimits {
            server: None,
            ..limits
        };
        for _ in 0..9 {
            assert_eq!(
                a.charge(&no_server, &server, Direction::ToPeer, 1_000, 0),
                Ok(())
            );
        }
        assert_eq!(
            a.charge(&no_server, &server, Direction::ToPeer, 1_000, 0),
            Err(LimitScope::Allocation)
        );
        // Directions are separate.
        assert_eq!(
            a.charge(&limits, &server, Direction::ToClient, 1_000, 0),
            Ok(())
        );
    }

    #[test]
    fn a_users_allocations_share_its_bucket_and_the_fleet_splits_it() {
        let server = SharedBuckets::default();
        let user = Arc::new(UserBandwidth::default());
        let limits = BandwidthLimits {
            user: Some(limit(100_000, 10_000)),
            ..BandwidthLimits::default()
        };
        let mut a = AllocationBandwidth::new(user.clone());
        let mut b = AllocationBandwidth::new(user.clone());
        let mut total = 0;
        let mut now = 0;
        while now < 10 * NANOS_PER_SEC {
            for alloc in [&mut a, &mut b] {
                if alloc
                    .charge(&limits, &server, Direction::ToPeer, 1000, now)
                    .is_ok()
                {
                    total += 1000;
                }
            }
            now += MS;
        }
        assert!((1_000_000..=1_011_000).contains(&total), "{total}");

        // One allocation here, three on other nodes: this node gets a quarter.
        user.set_share(1, 3);
        let mut c = AllocationBandwidth::new(user.clone());
        let mut passed = 0;
        now += NANOS_PER_SEC;
        let end = now + 10 * NANOS_PER_SEC;
        while now < end {
            if c.charge(&limits, &server, Direction::ToPeer, 500, now)
                .is_ok()
            {
                passed += 500;
            }
            now += MS;
        }
        assert!((250_000..=253_000).contains(&passed), "{passed}");
    }

    #[test]
    fn a_shared_bucket_holds_under_two_threads() {
        let server = Arc::new(SharedBuckets::default());
        let limits = BandwidthLimits {
            server: Some(limit(1_000_000, 1_000)),
            ..BandwidthLimits::default()
        };
        // Both threads offer 1000 bytes per simulated millisecond for one second:
        // 2 MB offered, 1 MB (plus one burst) may pass.
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let server = server.clone();
                std::thread::spawn(move || {
                    let mut alloc = AllocationBandwidth::new(Arc::default());
                    let mut passed = 0u64;
                    for ms in 0..1000 {
                        if alloc
                            .charge(&limits, &server, Direction::ToPeer, 1000, ms * MS)
                            .is_ok()
                        {
                            passed += 1000;
                        }
                    }
                    passed
                })
            })
            .collect();
        let total: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
        assert!((999_000..=1_001_000).contains(&total), "{total}");
    }

    #[test]
    fn a_share_is_never_zero_and_never_above_the_whole() {
        let user = UserBandwidth::default();
        assert_eq!(user.share(), FULL_SHARE);
        user.set_share(1, 1_000_000);
        assert_eq!(user.share(), 1);
        user.set_share(3, 0);
        assert_eq!(user.share(), FULL_SHARE);
        let l = limit(1_000, 2_000).scaled(FULL_SHARE / 2);
        assert_eq!(l, limit(500, 1_000));
    }
}
