//! Round-trip time statistics: a log-linear histogram of nanosecond samples (128
//! buckets per power of two, so a percentile is off by under 0.4%; the maximum is
//! exact), shared by all allocations, which hand it their samples in batches.

use std::sync::{Arc, Mutex, PoisonError};

/// Buckets per power of two, as a bit count.
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Samples an allocation keeps before handing them over.
const BATCH: usize = 256;

#[derive(Debug, Default)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Histogram {
    pub fn record(&mut self, ns: u64) {
        let i = index(ns);
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.total += 1;
        self.max = self.max.max(ns);
    }

    /// `None` without samples.
    pub fn percentiles(&self) -> Option<Percentiles> {
        let ms = |ns: u64| ns as f64 / 1e6;
        Some(Percentiles {
            p50: ms(self.quantile(0.50)?),
            p90: ms(self.quantile(0.90)?),
            p99: ms(self.quantile(0.99)?),
            max: ms(self.max),
        })
    }

    /// The sample of rank ⌈q·n⌉, as its bucket's midpoint (never above the maximum).
    fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (low, width) = bucket(i);
                return Some((low + width / 2).min(self.max));
            }
        }
        Some(self.max)
    }
}

fn index(v: u64) -> usize {
    if v < 2 * SUB {
        return v as usize;
    }
    let shift = 63 - v.leading_zeros() - SUB_BITS;
    (u64::from(shift) * SUB + (v >> shift)) as usize
}

/// The lowest value of bucket `i` and how many values it holds.
fn bucket(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < 2 * SUB {
        return (i, 1);
    }
    let shift = i / SUB - 1;
    ((i - shift * SUB) << shift, 1 << shift)
}

/// One allocation's samples on their way to the shared histogram; hands them over
/// when full and when dropped.
pub struct RttBatch {
    samples: Vec<u64>,
    shared: Arc<Mutex<Histogram>>,
}

impl RttBatch {
    pub fn new(shared: Arc<Mutex<Histogram>>) -> Self {
        Self {
            samples: Vec::new(),
            shared,
        }
    }

    pub fn push(&mut self, ns: u64) {
        self.samples.push(ns);
        if self.samples.len() >= BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let mut histogram = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        for ns in self.samples.drain(..) {
            histogram.record(ns);
        }
    }
}

impl Drop for RttBatch {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_round_trip() {
        let mut expected = 0;
        for v in (0..100_000u64).chain([u64::MAX / 3, u64::MAX]) {
            let i = index(v);
            let (low, width) = bucket(i);
            assert!(
                low <= v && v - low < width,
                "{v} in bucket {i} = {low}+{width}"
            );
            if v < 100_000 {
                assert!(i == expected || i == expected + 1, "gap at {v}");
                expected = i;
            }
        }
    }

    #[test]
    fn percentiles_are_within_one_percent() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v * 1000);
        }
        let p = h.percentiles().expect("samples");
        for (got, want) in [(p.p50, 5.0), (p.p90, 9.0), (p.p99, 9.9)] {
            assert!((got - want).abs() / want < 0.01, "{got} vs {want}");
        }
        assert_eq!(p.max, 10.0);
        assert_eq!(Histogram::default().percentiles(), None);
    }

    #[test]
    fn batches_reach_the_shared_histogram() {
        let shared = Arc::new(Mutex::new(Histogram::default()));
        let mut batch = RttBatch::new(shared.clone());
        for _ in 0..300 {
            batch.push(42);
        }
        drop(batch);
        assert_eq!(shared.lock().unwrap().total, 300);
    }
}
