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
//! A bucket the workers share is charged by the chunk, not by the packet: a worker (for
//! the server's bucket) or an allocation (for its user's) takes up to a sixteenth of the
//! burst at once, at most 16 KiB, and spends that credit on its next packets, so the
//! shared word is written about once per chunk. Credit held back is at most one chunk
//! per holder; it is spent later, never lost, so over time the rate is exact.
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

/// Largest chunk a holder takes from a shared bucket at once.
const MAX_CHUNK: u64 = 16 * 1024;

/// A rate and the burst a bucket allows above it, with what a packet's charge needs
/// worked out once: charging is a multiplication and a comparison, no division.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Application bytes per second (at least 1).
    pub bytes_per_sec: u64,
    /// Bytes that may pass at once after a quiet spell (at least one packet's worth).
    pub burst: u64,
    /// Nanoseconds per byte, in 32.32 fixed point.
    nanos_per_byte: u64,
    /// The burst, in nanoseconds of the rate.
    tolerance: u64,
    /// What a holder takes from a shared bucket at once.
    chunk: u64,
}

impl Limit {
    pub fn new(bytes_per_sec: u64, burst: u64) -> Self {
        let bytes_per_sec = bytes_per_sec.max(1);
        let nanos_per_byte = (u128::from(NANOS_PER_SEC) << 32) / u128::from(bytes_per_sec);
        let mut limit = Limit {
            bytes_per_sec,
            burst,
            nanos_per_byte: u64::try_from(nanos_per_byte).unwrap_or(u64::MAX),
            tolerance: 0,
            chunk: (burst / 16).min(MAX_CHUNK),
        };
        limit.tolerance = limit.cost(burst);
        limit
    }

    /// Nanoseconds of the rate `bytes` take.
    fn cost(&self, bytes: u64) -> u64 {
        let nanos = (u128::from(bytes) * u128::from(self.nanos_per_byte)) >> 32;
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }

    /// `share` (of [`FULL_SHARE`]) of this limit: the part a node gets of a user's rate
    /// when the user's allocations are spread over the fleet.
    fn scaled(self, share: u32) -> Limit {
        if share >= FULL_SHARE {
            return self;
        }
        let part = |v: u64| (v.saturating_mul(u64::from(share)) >> 16).max(1);
        Limit::new(part(self.bytes_per_sec), part(self.burst))
    }

    /// The bucket's next full instant if `bytes` may pass at `now` (all in nanoseconds),
    /// given its current one, `tat`.
    fn admit(&self, tat: u64, now: u64, bytes: u64) -> Option<u64> {
        let next = tat.max(now).saturating_add(self.cost(bytes));
        (next - now <= self.tolerance).then_some(next)
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
    /// Takes `bytes` for a packet out of `credit` (bytes taken from this bucket before);
    /// when that is short, takes a chunk more from the bucket, or just what is missing
    /// when a chunk does not fit. False, with `credit` as it was, when neither fits.
    fn take(&self, credit: &mut u64, limit: &Limit, bytes: u64, now: u64) -> bool {
        if *credit >= bytes {
            *credit -= bytes;
            return true;
        }
        let missing = bytes - *credit;
        let mut wanted = [missing.max(limit.chunk), missing].into_iter();
        let taken = wanted.find(|&n| {
            self.tat
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| {
                    limit.admit(tat, now, n)
                })
                .is_ok()
        });
        match taken {
            Some(n) => {
                *credit = *credit + n - bytes;
                true
            }
            None => false,
        }
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

/// A worker's credit at the server's shared buckets, each direction (see the module's
/// notes on chunks).
pub type ServerCredit = [u64; 2];

/// An allocation's buckets and what the limits dropped of its traffic.
#[derive(Debug)]
pub struct AllocationBandwidth {
    /// Each direction's full instant, in nanoseconds since the shared epoch.
    tat: [u64; 2],
    user: Arc<UserBandwidth>,
    /// Each direction's credit at its user's buckets.
    user_credit: [u64; 2],
    dropped: [Traffic; 2],
}

impl AllocationBandwidth {
    pub fn new(user: Arc<UserBandwidth>) -> Self {
        Self {
            tat: [0; 2],
            user,
            user_credit: [0; 2],
            dropped: [Traffic::default(); 2],
        }
    }

    /// What the limits dropped in `direction`.
    pub fn dropped(&self, direction: Direction) -> Traffic {
        self.dropped[direction.index()]
    }

    /// Charges `bytes` in `direction` at `now` (nanoseconds since the shared epoch) to
    /// this allocation's, its user's and the server's buckets (`server`, with the
    /// charging worker's credit there), as `limits` has them. On a refusal nothing stays
    /// charged, the drop is counted here and the limit that refused is returned.
    pub fn charge(
        &mut self,
        limits: &BandwidthLimits,
        server: (&SharedBuckets, &mut ServerCredit),
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

    /// [`Self::charge`] without counting a refusal as a drop: for TCP relaying, which
    /// waits and asks again instead.
    pub(crate) fn try_charge(
        &mut self,
        limits: &BandwidthLimits,
        (server, server_credit): (&SharedBuckets, &mut ServerCredit),
        direction: Direction,
        bytes: u64,
        now: u64,
    ) -> Result<(), LimitScope> {
        let d = direction.index();
        let own_before = self.tat[d];
        if let Some(limit) = &limits.allocation {
            self.tat[d] = limit
                .admit(own_before, now, bytes)
                .ok_or(LimitScope::Allocation)?;
        }
        if let Some(limit) = &limits.user {
            let limit = limit.scaled(self.user.share());
            let bucket = self.user.buckets.get(direction);
            if !bucket.take(&mut self.user_credit[d], &limit, bytes, now) {
                self.tat[d] = own_before;
                return Err(LimitScope::User);
            }
        }
        if let Some(limit) = &limits.server
            && !server
                .get(direction)
                .take(&mut server_credit[d], limit, bytes, now)
        {
            // What the user's bucket took goes back to the allocation's credit there.
            self.tat[d] = own_before;
            if limits.user.is_some() {
                self.user_credit[d] += bytes;
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
        Limit::new(bytes_per_sec, burst)
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
        let mut credit = [0; 2];
        while now < secs * NANOS_PER_SEC {
            if alloc
                .charge(
                    limits,
                    (server, &mut credit),
                    Direction::ToPeer,
                    packet,
                    now,
                )
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
        let mut credit = [0; 2];
        let user = Arc::new(UserBandwidth::default());
        let limits = BandwidthLimits {
            allocation: Some(limit(1_000_000, 10_000)),
            user: Some(limit(1_000_000, 10_000)),
            server: Some(limit(1_000, 1_500)),
        };
        let mut a = AllocationBandwidth::new(user.clone());
        // 1000 bytes at time 0, through one server bucket and worker credit.
        let mut send = |limits: &BandwidthLimits, direction| {
            a.charge(limits, (&server, &mut credit), direction, 1_000, 0)
        };
        assert_eq!(send(&limits, Direction::ToPeer), Ok(()));
        assert_eq!(send(&limits, Direction::ToPeer), Err(LimitScope::Server));
        // The allocation's and the user's buckets were not charged for the refusal:
        // with the server limit gone, 9000 more bytes fit their 10 kB bursts at once.
        let no_server = BandwidthLimits {
            server: None,
            ..limits
        };
        for _ in 0..9 {
            assert_eq!(send(&no_server, Direction::ToPeer), Ok(()));
        }
        assert_eq!(
            send(&no_server, Direction::ToPeer),
            Err(LimitScope::Allocation)
        );
        // Directions are separate.
        assert_eq!(send(&limits, Direction::ToClient), Ok(()));
    }

    #[test]
    fn a_users_allocations_share_its_bucket_and_the_fleet_splits_it() {
        let server = SharedBuckets::default();
        let mut credit = [0; 2];
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
                    .charge(
                        &limits,
                        (&server, &mut credit),
                        Direction::ToPeer,
                        1000,
                        now,
                    )
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
            if c.charge(&limits, (&server, &mut credit), Direction::ToPeer, 500, now)
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
                    let mut credit = [0; 2];
                    for ms in 0..1000 {
                        if alloc
                            .charge(
                                &limits,
                                (&server, &mut credit),
                                Direction::ToPeer,
                                1000,
                                ms * MS,
                            )
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
    fn a_shared_bucket_is_written_once_per_chunk() {
        let bucket = SharedBucket::default();
        // A 16 kB burst: chunks of 1000 bytes.
        let limit = limit(1_000_000, 16_000);
        let mut credit = 0;
        assert!(bucket.take(&mut credit, &limit, 100, 0));
        assert_eq!(credit, 900);
        let after_first = bucket.tat.load(Ordering::Relaxed);
        assert_eq!(after_first, limit.cost(1000));
        for _ in 0..9 {
            assert!(bucket.take(&mut credit, &limit, 100, 0));
        }
        assert_eq!(bucket.tat.load(Ordering::Relaxed), after_first);
        assert_eq!(credit, 0);
        // 14.5 kB more leaves room for 500 bytes: a chunk no longer fits, so what is
        // missing is taken alone; past that, a refusal leaves the credit as it was.
        let mut big = 0;
        assert!(bucket.take(&mut big, &limit, 14_500, 0));
        let mut small = 0;
        assert!(bucket.take(&mut small, &limit, 400, 0));
        assert_eq!(small, 0);
        let mut last = 50;
        assert!(!bucket.take(&mut last, &limit, 200, 0));
        assert_eq!(last, 50);
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
