//! Per-packet processing time, recorded by workers without locks or
//! allocation and read into an HdrHistogram by the control thread.
//!
//! A worker times each burst and records `elapsed / packets` once per
//! burst with a weight of `packets`, into a fixed log-linear array of
//! single-writer counters (16 sub-buckets per power of two: about 6 %
//! resolution). Readers replay the buckets into an
//! `hdrhistogram::Histogram` for quantiles and Prometheus buckets.

use crate::counter::Counter;
use hdrhistogram::Histogram;

const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
/// Values up to 2^40 ns (18 minutes) have their own bucket.
const MAX_EXP: u32 = 40;
pub const BUCKETS: usize = (SUB + (MAX_EXP as u64 - SUB_BITS as u64) * SUB) as usize;

/// The bucket of value `v` (nanoseconds).
#[inline]
pub fn bucket_of(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let e = 63 - v.leading_zeros();
    if e >= MAX_EXP {
        return BUCKETS - 1;
    }
    let sub = (v >> (e - SUB_BITS)) & (SUB - 1);
    (SUB + u64::from(e - SUB_BITS) * SUB + sub) as usize
}

/// The smallest value in bucket `b` and the bucket's width.
pub fn bucket_range(b: usize) -> (u64, u64) {
    let b = b as u64;
    if b < SUB {
        return (b, 1);
    }
    let e = (b - SUB) / SUB + u64::from(SUB_BITS);
    let sub = (b - SUB) % SUB;
    let width = 1u64 << (e - u64::from(SUB_BITS));
    ((1u64 << e) + sub * width, width)
}

/// One worker's distribution.
#[derive(Debug)]
pub struct LatencyBuckets {
    counts: Box<[Counter]>,
    /// Sum of recorded values times weights, for the mean.
    sum_ns: Counter,
}

impl Default for LatencyBuckets {
    fn default() -> Self {
        LatencyBuckets { counts: (0..BUCKETS).map(|_| Counter::default()).collect(), sum_ns: Counter::default() }
    }
}

impl LatencyBuckets {
    /// Records `count` samples of `value_ns` (single writer).
    #[inline]
    pub fn record(&self, value_ns: u64, count: u64) {
        self.counts[bucket_of(value_ns)].add(count);
        self.sum_ns.add(value_ns.saturating_mul(count));
    }

    /// Adds this distribution to `h` (each bucket at its midpoint).
    pub fn merge_into(&self, h: &mut Histogram<u64>) {
        for (b, c) in self.counts.iter().enumerate() {
            let n = c.get();
            if n > 0 {
                let (lo, w) = bucket_range(b);
                let _ = h.record_n((lo + w / 2).max(1), n);
            }
        }
    }

    pub fn sum_ns(&self) -> u64 {
        self.sum_ns.get()
    }
}

/// An empty histogram able to hold what [`LatencyBuckets`] records.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 1 << MAX_EXP, 2).expect("valid bounds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_values_in_order() {
        let mut last = 0;
        for v in (1..100_000u64).chain([1 << 20, 1 << 39, u64::MAX]) {
            let b = bucket_of(v);
            assert!(b >= last && b < BUCKETS, "{v}");
            last = b;
            let (lo, w) = bucket_range(b);
            if v < 1 << MAX_EXP {
                assert!(v >= lo && v < lo + w, "{v} not in [{lo}, {})", lo + w);
                // 16 sub-buckets: a bucket is at most 1/16 of its value wide.
                assert!(w == 1 || w * 16 <= lo.max(16), "{v}: width {w}");
            }
        }
    }

    #[test]
    fn quantiles_come_back_from_the_histogram() {
        let l = LatencyBuckets::default();
        for v in 1..=1000u64 {
            l.record(v * 10, 3);
        }
        let mut h = new_histogram();
        l.merge_into(&mut h);
        assert_eq!(h.len(), 3000);
        let p50 = h.value_at_quantile(0.5) as f64;
        assert!((p50 - 5000.0).abs() / 5000.0 < 0.07, "p50 {p50}");
        let p99 = h.value_at_quantile(0.99) as f64;
        assert!((p99 - 9900.0).abs() / 9900.0 < 0.07, "p99 {p99}");
        assert_eq!(l.sum_ns(), (1..=1000u64).map(|v| v * 30).sum::<u64>());
    }
}
