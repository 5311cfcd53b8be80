//! Session persistence (source-IP affinity): the backend each client
//! address was last sent to on a listener, shared by every worker.
//!
//! A client's connections come from different ports, and the worker that
//! owns a flow is a hash of the client's address *and port*, so its
//! connections land on different workers: a per-worker memory would not
//! keep a client on one backend. This table is one array for all workers,
//! allocated at start and never resized, read and written with single
//! atomic operations on 64-bit entries: no lock, no allocation, and only
//! new flows of listeners with `persistence` touch it.
//!
//! An entry packs a tag (20 bits of the key's hash), a backend id (12
//! bits) and the time it was last used (32 bits, ms of the worker clock,
//! whose epoch all workers share). Eight entries fill a 64-byte bucket;
//! the key (listener id, client address) lives in the bucket its hash
//! names, in any of the eight ways. With the bucket index, 20 tag bits
//! tell keys apart: two clients are mistaken for each other with
//! probability 2^-20 per entry compared, and the backend so found is
//! still validated (it must be the listener's and have weight) before it
//! is used.
//!
//! Expiry is measured from the last new connection that used the entry:
//! each connection rewrites it with the current time. An entry idle longer
//! than the listener's persistence is ignored (and is the first to be
//! replaced). When all eight ways of a bucket hold live entries, the least
//! recently used is replaced: a full table forgets its oldest clients.
//! Times wrap after 49.7 days like the session table's, so an entry
//! untouched for that long can look fresh again for one persistence
//! period; its backend is validated like any other.

use crate::config::MAX_BACKENDS;
use crate::flow::fold_mul;
use crate::ids::{BackendId, ListenerId};
use crate::memory::{table_vec, NoHints, Placement};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Entries in one bucket (one cache line).
const WAYS: usize = 8;

const TIME_BITS: u32 = 32;
const BACKEND_BITS: u32 = 12;
const TAG_BITS: u32 = 64 - TIME_BITS - BACKEND_BITS;
const _: () = assert!(MAX_BACKENDS <= 1 << BACKEND_BITS, "backend ids must fit their entry field");

/// How far another worker's clock may run ahead of ours: an entry stamped
/// up to this far in the future counts as used just now. Workers read the
/// shared clock once per loop iteration, so theirs differ by a loop's
/// duration (more if the OS stops a worker for a while).
const CLOCK_SKEW_MS: u32 = 60_000;

#[derive(Debug, Default)]
#[repr(C, align(64))]
struct Bucket([AtomicU64; WAYS]);

/// Where a key lives in the table: its bucket and tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersistenceKey {
    bucket: usize,
    tag: u64,
}

#[derive(Debug)]
pub struct PersistenceTable {
    buckets: Box<[Bucket]>,
    mask: usize,
}

#[inline(always)]
fn pack(tag: u64, backend: BackendId, now: u32) -> u64 {
    tag << (TIME_BITS + BACKEND_BITS) | u64::from(backend.0) << TIME_BITS | u64::from(now)
}

#[inline(always)]
fn tag_of(e: u64) -> u64 {
    e >> (TIME_BITS + BACKEND_BITS)
}

#[inline(always)]
fn backend_of(e: u64) -> BackendId {
    BackendId(((e >> TIME_BITS) & ((1 << BACKEND_BITS) - 1)) as u32)
}

/// Milliseconds since entry `e` was last used, 0 when another worker's
/// clock stamped it a little ahead of `now`.
#[inline(always)]
fn age(e: u64, now: u32) -> u32 {
    let a = now.wrapping_sub(e as u32);
    if a > u32::MAX - CLOCK_SKEW_MS {
        0
    } else {
        a
    }
}

impl PersistenceTable {
    /// A table of at least `entries` entries (rounded up to a power of two
    /// and to whole buckets), all empty.
    pub fn new(entries: usize) -> PersistenceTable {
        Self::with_placement::<NoHints>(entries)
    }

    /// [`Self::new`], with the memory advised to huge pages by `M`.
    pub fn with_placement<M: Placement>(entries: usize) -> PersistenceTable {
        let n = entries.div_ceil(WAYS).next_power_of_two().max(1);
        let mut buckets = table_vec::<Bucket, M>(n);
        buckets.extend((0..n).map(|_| Bucket::default()));
        PersistenceTable { buckets: buckets.into_boxed_slice(), mask: n - 1 }
    }

    /// Entries the table holds.
    pub fn capacity(&self) -> usize {
        self.buckets.len() * WAYS
    }

    /// Bytes the table takes.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.buckets)
    }

    /// The place of client address `client` on listener `listener`.
    #[inline]
    pub fn key(&self, listener: ListenerId, client: u32) -> PersistenceKey {
        let h = fold_mul(
            fold_mul(u64::from(client) ^ 0x9e37_79b9_7f4a_7c15, u64::from(listener.0) ^ 0xc2b2_ae3d_27d4_eb4f),
            0x1656_67b1_9e37_79f9,
        );
        // Tag 0 marks an empty entry.
        let tag = (h >> (64 - TAG_BITS)).max(1);
        PersistenceKey { bucket: h as usize & self.mask, tag }
    }

    /// Hints the CPU to load `k`'s bucket (for the burst's prefetch pass).
    #[inline]
    pub fn prefetch<M: Placement>(&self, k: PersistenceKey) {
        M::prefetch(&self.buckets[k.bucket]);
    }

    /// The backend `k` was last sent to, if that was at most `ttl_ms` ago.
    #[inline]
    pub fn lookup(&self, k: PersistenceKey, now: u32, ttl_ms: u32) -> Option<BackendId> {
        let b = &self.buckets[k.bucket];
        for way in &b.0 {
            let e = way.load(Relaxed);
            if tag_of(e) == k.tag && age(e, now) <= ttl_ms {
                return Some(backend_of(e));
            }
        }
        None
    }

    /// Records that `k` was sent to `backend` at `now`: in `k`'s own
    /// entry if it has one, else in an empty way, else in the way used
    /// least recently. One compare-and-swap: when another worker changed
    /// that way meanwhile, its write stands and this one is dropped (at
    /// worst, a client's first connections on two workers at once each
    /// keep the backend they got).
    #[inline]
    pub fn remember(&self, k: PersistenceKey, backend: BackendId, now: u32) {
        let b = &self.buckets[k.bucket];
        // (way, its entry, its age) of the way to overwrite.
        let mut victim: Option<(usize, u64, u32)> = None;
        for (i, way) in b.0.iter().enumerate() {
            let e = way.load(Relaxed);
            if tag_of(e) == k.tag {
                victim = Some((i, e, 0));
                break;
            }
            let a = if e == 0 { u32::MAX } else { age(e, now) };
            if victim.is_none_or(|(_, _, va)| a > va) {
                victim = Some((i, e, a));
            }
        }
        let Some((i, entry, _)) = victim else { return };
        let new = pack(k.tag, backend, now);
        let _ = b.0[i].compare_exchange(entry, new, Relaxed, Relaxed);
    }

    /// Live entries (used at most `ttl_ms` ago) and entries in use at all,
    /// by a full scan: for tests and tools, never for the data path.
    pub fn count(&self, now: u32, ttl_ms: u32) -> (usize, usize) {
        let mut live = 0;
        let mut used = 0;
        for b in self.buckets.iter() {
            for way in &b.0 {
                let e = way.load(Relaxed);
                if e != 0 {
                    used += 1;
                    if age(e, now) <= ttl_ms {
                        live += 1;
                    }
                }
            }
        }
        (live, used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const L: ListenerId = ListenerId(3);

    #[test]
    fn remembers_until_the_entry_is_idle_past_its_time() {
        let t = PersistenceTable::new(1024);
        let k = t.key(L, 0x0a00_0002);
        assert_eq!(t.lookup(k, 1000, 5000), None);
        t.remember(k, BackendId(7), 1000);
        assert_eq!(t.lookup(k, 1000, 5000), Some(BackendId(7)));
        assert_eq!(t.lookup(k, 6000, 5000), Some(BackendId(7)), "exactly the persistence time later");
        assert_eq!(t.lookup(k, 6001, 5000), None, "expired");
        // Each use restarts the time: expiry counts from the last one.
        t.remember(k, BackendId(7), 5500);
        assert_eq!(t.lookup(k, 10_000, 5000), Some(BackendId(7)));
        // A new backend replaces the old in the same entry.
        t.remember(k, BackendId(4095), 10_000);
        assert_eq!(t.lookup(k, 10_000, 5000), Some(BackendId(4095)));
        assert_eq!(t.count(10_000, 5000), (1, 1));
        // Other listeners and other clients are other keys.
        assert_eq!(t.lookup(t.key(ListenerId(4), 0x0a00_0002), 10_000, 5000), None);
        assert_eq!(t.lookup(t.key(L, 0x0a00_0003), 10_000, 5000), None);
    }

    #[test]
    fn another_workers_clock_a_little_ahead_counts_as_now() {
        let t = PersistenceTable::new(1024);
        let k = t.key(L, 1);
        t.remember(k, BackendId(1), 10_500);
        assert_eq!(t.lookup(k, 10_000, 1000), Some(BackendId(1)));
        // Across the wrap of the millisecond clock too.
        t.remember(k, BackendId(2), u32::MAX - 100);
        assert_eq!(t.lookup(k, 200, 1000), Some(BackendId(2)));
        assert_eq!(t.lookup(k, 2000, 1000), None);
    }

    /// Nine clients in one bucket of eight ways: the least recently used
    /// goes, expired entries before live ones.
    #[test]
    fn a_full_bucket_replaces_its_least_recently_used_entry() {
        let t = PersistenceTable::new(8);
        assert_eq!(t.capacity(), 8);
        let keys: Vec<PersistenceKey> = (0..9u32).map(|c| t.key(L, c)).collect();
        for (i, k) in keys.iter().enumerate().take(8) {
            t.remember(*k, BackendId(i as u32), 100 + i as u32);
        }
        // Client 0 comes back: now client 1 is the oldest.
        t.remember(keys[0], BackendId(0), 200);
        t.remember(keys[8], BackendId(8), 201);
        assert_eq!(t.lookup(keys[1], 201, 10_000), None, "the least recently used went");
        for c in [0usize, 2, 3, 4, 5, 6, 7, 8] {
            assert_eq!(t.lookup(keys[c], 201, 10_000), Some(BackendId(c as u32)), "client {c}");
        }
        assert_eq!(t.count(201, 10_000), (8, 8));
        // An expired entry is replaced before any live one, however old.
        let t = PersistenceTable::new(8);
        for (i, k) in keys.iter().enumerate().take(8) {
            t.remember(*k, BackendId(i as u32), if i == 5 { 1000 } else { 5000 + i as u32 });
        }
        t.remember(keys[8], BackendId(8), 6000);
        assert_eq!(t.lookup(keys[5], 6000, 10_000), None);
        assert_eq!(t.lookup(keys[0], 6000, 10_000), Some(BackendId(0)));
    }

    #[test]
    fn table_shared_by_threads_keeps_every_clients_last_backend() {
        let t = std::sync::Arc::new(PersistenceTable::new(1 << 16));
        std::thread::scope(|s| {
            for w in 0..4u32 {
                let t = &t;
                s.spawn(move || {
                    // Disjoint clients per thread, each remembered twice.
                    for c in 0..2000u32 {
                        let k = t.key(L, w << 16 | c);
                        t.remember(k, BackendId(c % 4096), c);
                        t.remember(k, BackendId((c + 1) % 4096), c);
                    }
                });
            }
        });
        let mut found = 0;
        for w in 0..4u32 {
            for c in 0..2000u32 {
                if t.lookup(t.key(L, w << 16 | c), 2000, 10_000) == Some(BackendId((c + 1) % 4096)) {
                    found += 1;
                }
            }
        }
        // 8000 clients in 8192 buckets: almost all fit; none is wrong.
        assert!(found > 7900, "{found} of 8000 clients kept their backend");
    }

    proptest! {
        /// A key's entry holds whatever backend id and time it was given.
        #[test]
        fn entries_round_trip(client in any::<u32>(), listener in 0u16..256, backend in 0u32..4096, now in any::<u32>()) {
            let t = PersistenceTable::new(1024);
            let k = t.key(ListenerId(listener), client);
            t.remember(k, BackendId(backend), now);
            prop_assert_eq!(t.lookup(k, now, 0), Some(BackendId(backend)));
            prop_assert_eq!(t.lookup(k, now.wrapping_add(1001), 1000), None);
        }
    }
}
