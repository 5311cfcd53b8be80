//! The single-writer counter every per-worker statistic is made of (the
//! drop and event counters, the latency buckets).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A counter with exactly one writing thread.
#[derive(Default, Debug)]
#[repr(transparent)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline(always)]
    pub fn add(&self, n: u64) {
        // Single writer: load+store is race-free and avoids a locked
        // instruction.
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }
    #[inline(always)]
    pub fn inc(&self) {
        self.add(1);
    }
    #[inline(always)]
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }
    /// Stores with release ordering: a reader that acquires this value
    /// also sees every store made before it.
    #[inline(always)]
    pub fn publish(&self, v: u64) {
        self.0.store(v, std::sync::atomic::Ordering::Release);
    }
    #[inline]
    pub fn get_acquire(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}
