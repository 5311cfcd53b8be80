//! A bounded, lossy table of client sources, per worker: the state of the
//! per-source limits (two token buckets and a session count) for the
//! sources a worker saw lately.
//!
//! A flood from a million spoofed addresses must not cost a million
//! entries: the table is a fixed array of 4-way sets, allocated once, and
//! a new source replaces the set's least useful entry (an empty one, else
//! the one idle longest among those holding no session, else the one idle
//! longest). Forgetting a source is lenient: it comes back with full
//! buckets and, if its entry held sessions, a count that misses them (its
//! later closes then find another entry or none, and counts never go below
//! zero), so a lossy table can let an abusive source slightly past its
//! limits, never hold a legitimate one below them.

use crate::flow::fold_mul;

/// Entries per set: a new source may replace any of them.
const WAYS: usize = 4;

/// Tokens in thousandths, refilled at a rate kept elsewhere: the
/// arithmetic of [`crate::ratelimit::TokenBucket`] without a copy of the
/// rate and size in every table entry.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tokens {
    thousandths: u64,
    last_ms: u32,
}

const ONE: u64 = 1000;

impl Tokens {
    /// A bucket that is full whatever its size.
    pub const FULL: Tokens = Tokens { thousandths: u64::MAX, last_ms: 0 };

    /// Takes `n` units at `now_ms` from a bucket refilled at `rate` per
    /// second holding at most `burst`; false (taking nothing) when fewer
    /// are left.
    #[inline]
    pub fn take(&mut self, now_ms: u32, rate: u32, burst: u32, n: u64) -> bool {
        let capacity = u64::from(burst.max(1)) * ONE;
        let elapsed = u64::from(now_ms.wrapping_sub(self.last_ms));
        self.last_ms = now_ms;
        self.thousandths = self.thousandths.saturating_add(elapsed * u64::from(rate.max(1))).min(capacity);
        let need = n.saturating_mul(ONE);
        if self.thousandths >= need {
            self.thousandths -= need;
            true
        } else {
            false
        }
    }
}

/// One source of one listener.
#[derive(Debug, Clone, Copy, Default)]
pub struct SourceEntry {
    /// `listener id << 32 | address` with bit 48 set; 0: empty.
    key: u64,
    pub connections: Tokens,
    pub packets: Tokens,
    /// Sessions this worker holds for the source (when the listener caps
    /// them).
    pub sessions: u32,
    /// When the entry was last used (ms).
    seen: u32,
}

#[derive(Debug)]
pub struct SourceTable {
    entries: Box<[SourceEntry]>,
    set_mask: usize,
    used: usize,
    evictions: u64,
    evictions_with_sessions: u64,
}

/// The table key of `addr` as a source of listener `listener`.
#[inline]
pub fn source_key(listener: u16, addr: u32) -> u64 {
    1 << 48 | u64::from(listener) << 32 | u64::from(addr)
}

impl SourceTable {
    /// A table of at least `entries` entries (a power of two, at least one
    /// set), all allocated now.
    pub fn new(entries: usize) -> SourceTable {
        let sets = (entries.max(WAYS) / WAYS).next_power_of_two();
        SourceTable {
            entries: vec![SourceEntry::default(); sets * WAYS].into_boxed_slice(),
            set_mask: sets - 1,
            used: 0,
            evictions: 0,
            evictions_with_sessions: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Entries in use.
    pub fn len(&self) -> usize {
        self.used
    }

    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// Sources forgotten to make room for new ones, and how many of them
    /// still held sessions.
    pub fn evictions(&self) -> (u64, u64) {
        (self.evictions, self.evictions_with_sessions)
    }

    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.entries)
    }

    #[inline]
    fn set(&self, key: u64) -> usize {
        (fold_mul(key, 0x9e37_79b9_7f4a_7c15) as usize & self.set_mask) * WAYS
    }

    /// The entry of `key`, if the table still holds it.
    #[inline]
    pub fn find(&mut self, key: u64) -> Option<&mut SourceEntry> {
        let base = self.set(key);
        self.entries[base..base + WAYS].iter_mut().find(|e| e.key == key)
    }

    /// The entry of `key`, made (with full buckets and no session) in
    /// place of the set's least useful entry when the table lacks it.
    #[inline]
    pub fn entry(&mut self, key: u64, now: u32) -> &mut SourceEntry {
        let base = self.set(key);
        let set = &self.entries[base..base + WAYS];
        let i = match set.iter().position(|e| e.key == key) {
            Some(i) => i,
            None => {
                let victim = Self::victim(set, now);
                let old = set[victim];
                if old.key == 0 {
                    self.used += 1;
                } else {
                    self.evictions += 1;
                    if old.sessions > 0 {
                        self.evictions_with_sessions += 1;
                    }
                }
                self.entries[base + victim] =
                    SourceEntry { key, connections: Tokens::FULL, packets: Tokens::FULL, sessions: 0, seen: now };
                victim
            }
        };
        let e = &mut self.entries[base + i];
        e.seen = now;
        e
    }

    /// An empty way; else the way idle longest among those without
    /// sessions; else the way idle longest.
    fn victim(set: &[SourceEntry], now: u32) -> usize {
        if let Some(i) = set.iter().position(|e| e.key == 0) {
            return i;
        }
        let idle = |i: &usize| now.wrapping_sub(set[*i].seen);
        (0..set.len())
            .filter(|i| set[*i].sessions == 0)
            .max_by_key(idle)
            .unwrap_or_else(|| (0..set.len()).max_by_key(idle).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_keeps_its_entry() {
        let mut t = SourceTable::new(64);
        let k = source_key(3, 0x0a00_0001);
        t.entry(k, 0).sessions = 2;
        assert_eq!(t.entry(k, 5).sessions, 2);
        assert_eq!(t.find(k).map(|e| e.sessions), Some(2));
        assert!(t.find(source_key(4, 0x0a00_0001)).is_none(), "another listener's source is another entry");
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_million_sources_stay_in_the_table_s_memory() {
        let mut t = SourceTable::new(4096);
        let bytes = t.memory_bytes();
        for a in 0..1_000_000u32 {
            t.entry(source_key(0, 0x0b00_0000 + a), a / 1000);
        }
        assert_eq!(t.capacity(), 4096);
        assert_eq!(t.memory_bytes(), bytes);
        assert_eq!(t.len(), 4096, "full, never more");
        assert_eq!(t.evictions().0, 1_000_000 - 4096);
    }

    #[test]
    fn sources_with_sessions_outlast_a_flood_of_new_ones() {
        let mut t = SourceTable::new(256);
        let legit: Vec<u64> = (0..32).map(|a| source_key(0, 0x0a00_0000 + a)).collect();
        for k in &legit {
            t.entry(*k, 0).sessions = 1;
        }
        for a in 0..100_000u32 {
            t.entry(source_key(0, 0x0c00_0000 + a), 1 + a / 100);
        }
        // 32 holders in 64 sets of 4: a set would need all four ways
        // holding sessions before one is given up.
        let kept = legit.iter().filter(|k| t.find(**k).is_some()).count();
        assert_eq!(kept, 32);
        assert_eq!(t.evictions().1, 0);
    }

    #[test]
    fn tokens_refill_at_the_rate_up_to_the_burst() {
        let mut b = Tokens::FULL;
        let first = (0..100).filter(|_| b.take(0, 10, 5, 1)).count();
        assert_eq!(first, 5);
        let later = (1..=1000u32).filter(|ms| b.take(*ms, 10, 5, 1)).count();
        assert_eq!(later, 10, "10 per second");
        assert!(!b.take(1000, 10, 5, 1));
        let mut bytes = Tokens::FULL;
        assert!(bytes.take(0, 1000, 1500, 1500));
        assert!(!bytes.take(0, 1000, 1500, 1), "empty after one full-size packet");
    }
}
