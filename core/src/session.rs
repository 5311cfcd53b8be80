//! The per-worker NAT session table.
//!
//! One table per worker, owned by that worker alone: no locks, no atomics.
//! Each session is indexed under two keys, the request 5-tuple
//! (client→VIP) and the reply 5-tuple (backend→client), so both directions
//! find it with one lookup.
//!
//! Layout: sessions live in a preallocated slab; the index is an array of
//! 64-byte buckets of 8 ways, each way a 31-bit hash tag (the 32nd bit is
//! one bit of the bucket's spill count, below) and a 32-bit reference
//! (slab slot << 1 | direction). A key may sit in either of two
//! buckets picked from its hash (two-choice hashing); when both are full,
//! an insert moves one entry to its other bucket (a single cuckoo step,
//! never a chain of them), which is enough at the load factors used here.
//! A lookup reads at most two index cache lines and one session; a
//! lookup that finds nothing usually reads one line: each bucket counts
//! the entries that overflowed from it into their second bucket (its
//! spill count), and while that count is zero a miss in the first bucket
//! is the answer. A new flow's lookup, and the conflict check of its
//! insert, are such misses.
//!
//! Expiry is a clock sweep over the slab: each call looks at a bounded
//! number of slots, so a full sweep is spread across many loop iterations
//! and never stalls packet processing.

use crate::flow::{FlowKey, SessionHashKey};
use crate::half_open::SlotRing;
use crate::ids::{BackendId, ListenerId};
use crate::memory::{table_vec, NoHints, Placement};
use std::marker::PhantomData;

/// Session lifecycle. TCP states follow what the balancer sees of the
/// handshake and teardown; they decide which idle timeout applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum SessionState {
    #[default]
    Free = 0,
    Udp = 1,
    /// Client SYN seen.
    TcpSynSent = 2,
    /// Backend SYN-ACK seen.
    TcpSynReceived = 3,
    TcpEstablished = 4,
    /// A FIN seen from either side.
    TcpClosing = 5,
    /// RST seen, or FINs from both sides.
    TcpClosed = 6,
}

pub const STATE_COUNT: usize = 7;

impl SessionState {
    /// A TCP handshake not completed: what a SYN flood fills the table
    /// with, and what may be evicted for a new SYN.
    #[inline]
    pub fn is_half_open(self) -> bool {
        matches!(self, SessionState::TcpSynSent | SessionState::TcpSynReceived)
    }

    pub fn name(self) -> &'static str {
        match self {
            SessionState::Free => "free",
            SessionState::Udp => "udp",
            SessionState::TcpSynSent => "syn_sent",
            SessionState::TcpSynReceived => "syn_received",
            SessionState::TcpEstablished => "established",
            SessionState::TcpClosing => "closing",
            SessionState::TcpClosed => "closed",
        }
    }
}

/// Which way a packet travels through a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client to VIP, forwarded to the backend.
    Request = 0,
    /// Backend to client, forwarded with the VIP as source.
    Reply = 1,
}

/// Flag bits in [`Session::flags`].
pub const FIN_FROM_CLIENT: u8 = 1;
pub const FIN_FROM_BACKEND: u8 = 2;

/// One NAT session (32 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Session {
    pub client_ip: u32,
    pub vip: u32,
    pub backend_ip: u32,
    pub client_port: u16,
    pub vip_port: u16,
    pub backend_port: u16,
    pub listener: ListenerId,
    pub backend_id: BackendId,
    /// Milliseconds on the worker's clock; compared with wrapping arithmetic.
    pub last_seen: u32,
    pub proto: u8,
    pub state: SessionState,
    pub flags: u8,
    _pad: u8,
}

const _: () = assert!(core::mem::size_of::<Session>() == 32);

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        proto: u8,
        client: (u32, u16),
        vip: (u32, u16),
        backend: (u32, u16),
        listener: ListenerId,
        backend_id: BackendId,
        state: SessionState,
        now: u32,
    ) -> Session {
        Session {
            client_ip: client.0,
            client_port: client.1,
            vip: vip.0,
            vip_port: vip.1,
            backend_ip: backend.0,
            backend_port: backend.1,
            listener,
            backend_id,
            last_seen: now,
            proto,
            state,
            flags: 0,
            _pad: 0,
        }
    }

    /// The key of request packets (client→VIP).
    #[inline]
    pub fn request_key(&self) -> FlowKey {
        FlowKey::new(self.client_ip, self.vip, self.client_port, self.vip_port, self.proto)
    }

    /// The key of reply packets (backend→client).
    #[inline]
    pub fn reply_key(&self) -> FlowKey {
        FlowKey::new(self.backend_ip, self.client_ip, self.backend_port, self.client_port, self.proto)
    }

    #[inline]
    pub fn key(&self, dir: Direction) -> FlowKey {
        match dir {
            Direction::Request => self.request_key(),
            Direction::Reply => self.reply_key(),
        }
    }

    /// Advances the TCP state for a segment with `flags` going `dir`.
    pub fn track_tcp(&mut self, tcp_flags: u8, dir: Direction) {
        use crate::wire::tcp::{FLAG_ACK, FLAG_FIN, FLAG_RST, FLAG_SYN};
        if tcp_flags & FLAG_RST != 0 {
            self.state = SessionState::TcpClosed;
            return;
        }
        if tcp_flags & FLAG_FIN != 0 {
            self.flags |= match dir {
                Direction::Request => FIN_FROM_CLIENT,
                Direction::Reply => FIN_FROM_BACKEND,
            };
            self.state = if self.flags & (FIN_FROM_CLIENT | FIN_FROM_BACKEND) == (FIN_FROM_CLIENT | FIN_FROM_BACKEND) {
                SessionState::TcpClosed
            } else {
                SessionState::TcpClosing
            };
            return;
        }
        let syn = tcp_flags & FLAG_SYN != 0;
        let ack = tcp_flags & FLAG_ACK != 0;
        self.state = match (self.state, dir, syn, ack) {
            // A new SYN on a finished connection reuses the tuple: start over
            // on the same backend.
            (SessionState::TcpClosed | SessionState::TcpClosing, Direction::Request, true, false) => {
                self.flags = 0;
                SessionState::TcpSynSent
            }
            (SessionState::TcpSynSent, Direction::Reply, true, true) => SessionState::TcpSynReceived,
            (SessionState::TcpSynSent | SessionState::TcpSynReceived, Direction::Request, false, true) => {
                SessionState::TcpEstablished
            }
            (s, _, _, _) => s,
        };
    }
}

/// Idle timeout in milliseconds for each [`SessionState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateTimeouts(pub [u32; STATE_COUNT]);

impl StateTimeouts {
    pub fn from_config(t: &crate::config::Timeouts) -> StateTimeouts {
        let ms = |d: std::time::Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        let mut a = [0u32; STATE_COUNT];
        a[SessionState::Udp as usize] = ms(t.udp);
        a[SessionState::TcpSynSent as usize] = ms(t.tcp_syn);
        a[SessionState::TcpSynReceived as usize] = ms(t.tcp_syn);
        a[SessionState::TcpEstablished as usize] = ms(t.tcp_established);
        a[SessionState::TcpClosing as usize] = ms(t.tcp_closing);
        a[SessionState::TcpClosed as usize] = ms(t.tcp_closed);
        StateTimeouts(a)
    }
    #[inline]
    pub fn get(&self, s: SessionState) -> u32 {
        self.0[s as usize]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// No free slot, or no free way in either bucket of a key.
    Full,
    /// Another session already owns the reply key: two clients would reach
    /// the same backend with the same source address and port.
    Conflict,
}

const WAYS: usize = 8;
// A bucket's tag matches travel as a u8 (`Staged::ways`).
const _: () = assert!(WAYS <= 8);
const EMPTY: u32 = u32::MAX;
/// The bits of a way's tag that are the tag. The top bit of each of the
/// eight is one bit of the bucket's spill count (see [`SessionTable::spill`]),
/// kept there so that reading it costs no other cache line.
const TAG_BITS: u32 = 0x7fff_ffff;
const SPILL_BIT: u32 = !TAG_BITS;
/// A spill count this high no longer changes: that bucket's misses then
/// always read the second bucket too (never wrong, only slower).
const SPILL_STUCK: u32 = 0xff;

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Bucket {
    tags: [u32; WAYS],
    refs: [u32; WAYS],
}

const _: () = assert!(core::mem::size_of::<Bucket>() == 64);

/// A way's reference: the slab slot, and which of the session's keys the
/// way indexes.
#[inline(always)]
fn encode(slot: u32, dir: Direction) -> u32 {
    slot << 1 | dir as u32
}

/// See [`encode`].
#[inline(always)]
fn decode(r: u32) -> (u32, Direction) {
    (r >> 1, if r & 1 == 0 { Direction::Request } else { Direction::Reply })
}

impl Bucket {
    const EMPTY: Bucket = Bucket { tags: [0; WAYS], refs: [EMPTY; WAYS] };

    /// Sets the spill count (see [`SessionTable::spill`]).
    fn set_spill(&mut self, n: u32) {
        for i in 0..WAYS {
            self.tags[i] = self.tags[i] & TAG_BITS | (n >> i & 1) << 31;
        }
    }

    /// Puts `tag` in way `w`, keeping that way's bit of the spill count.
    #[inline]
    fn set_tag(&mut self, w: usize, tag: u32) {
        self.tags[w] = self.tags[w] & SPILL_BIT | tag;
    }
}

/// The hashes of both keys of the session in `slot`, worked out by the
/// index prefetch of an eviction for the eviction's `remove` (see
/// [`SessionTable::prefetch_half_open_index_at`]).
#[derive(Clone, Copy)]
struct VictimHashes {
    slot: u32,
    request: u64,
    reply: u64,
}

impl VictimHashes {
    const NONE: VictimHashes = VictimHashes { slot: u32::MAX, request: 0, reply: 0 };
}

/// Entries of [`VictimHashes`], by slot: more than the evictions
/// prefetched ahead, so that those rarely share one.
const VICTIM_HASHES: usize = 16;

/// Words of the filter of keys indexed since [`SessionTable::mark`], and
/// the shift that takes a hash to its bit there (the hash's top bits).
const MARK_WORDS: usize = 16;
const MARK_SHIFT: u32 = 64 - (MARK_WORDS * 64).trailing_zeros();

/// `M` says how the table's memory is placed and prefetched (see
/// [`crate::memory`]); lookups give the same answers with any `M`.
pub struct SessionTable<M: Placement = NoHints> {
    buckets: Box<[Bucket]>,
    mask: usize,
    slots: Box<[Session]>,
    free: Vec<u32>,
    /// Slots below this index have been handed out at least once.
    high_water: u32,
    len: usize,
    cursor: u32,
    /// Bumped by every insert and remove: a lookup answer taken at one
    /// version stays true while the version does.
    version: u64,
    /// Live sessions in a half-open state (see
    /// [`SessionState::is_half_open`]).
    half_open: usize,
    /// Slots that became half-open, oldest first (see
    /// [`crate::half_open`]).
    half_open_order: SlotRing,
    /// See [`Self::mark`].
    indexed_since_mark: [u64; MARK_WORDS],
    /// See [`Self::prefetch_half_open_index_at`].
    victim_hashes: [VictimHashes; VICTIM_HASHES],
    /// Places keys in buckets: per instance, so that which keys share a
    /// bucket cannot be known in advance (see [`crate::hashkey`]).
    hash_key: SessionHashKey,
    placement: PhantomData<M>,
}

impl<M: Placement> std::fmt::Debug for SessionTable<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionTable").field("len", &self.len).field("capacity", &self.slots.len()).finish()
    }
}

impl SessionTable {
    /// A table for `capacity` sessions without memory hints (tests, tools).
    pub fn new(capacity: usize) -> SessionTable {
        SessionTable::with_placement(capacity)
    }
}

impl<M: Placement> SessionTable<M> {
    /// A table for `capacity` sessions. Memory is reserved up front
    /// (32 bytes per session plus about 21 bytes of index at most), and
    /// the kernel backs it lazily as it is touched.
    pub fn with_placement(capacity: usize) -> SessionTable<M> {
        Self::with_key(capacity, SessionHashKey::FIXED)
    }

    /// A table for `capacity` sessions whose buckets are chosen under
    /// `hash_key`.
    pub fn with_key(capacity: usize, hash_key: SessionHashKey) -> SessionTable<M> {
        assert!((1..=(1 << 30)).contains(&capacity));
        // Two keys per session, at most 6 of 8 ways used on average.
        let nbuckets = (2 * capacity).div_ceil(6).next_power_of_two().max(2);
        let mut buckets = table_vec::<_, M>(nbuckets);
        buckets.resize(nbuckets, Bucket::EMPTY);
        let mut slots = table_vec::<_, M>(capacity);
        slots.resize(capacity, Session::default());
        SessionTable {
            buckets: buckets.into_boxed_slice(),
            mask: nbuckets - 1,
            slots: slots.into_boxed_slice(),
            free: table_vec::<_, M>(capacity),
            high_water: 0,
            len: 0,
            cursor: 0,
            version: 0,
            half_open: 0,
            half_open_order: SlotRing::new::<M>(capacity),
            indexed_since_mark: [0; MARK_WORDS],
            victim_hashes: [VictimHashes::NONE; VICTIM_HASHES],
            hash_key,
            placement: PhantomData,
        }
    }

    /// See the field: changes whenever a session comes or goes.
    #[inline]
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }
    /// Bytes of memory the table reserves.
    pub fn memory_bytes(&self) -> usize {
        self.buckets.len() * 64 + self.slots.len() * (32 + 4 + 4)
    }

    /// Live sessions in a half-open state.
    #[inline]
    pub fn half_open(&self) -> usize {
        self.half_open
    }

    /// Advances the TCP state of the session in `slot` (see
    /// [`Session::track_tcp`]) and keeps the half-open accounting. State
    /// changes go through here.
    /// Returns the session's state and flags after the change.
    #[inline]
    pub fn track_tcp(&mut self, slot: u32, tcp_flags: u8, dir: Direction) -> (SessionState, u8) {
        let s = &mut self.slots[slot as usize];
        let was = s.state.is_half_open();
        s.track_tcp(tcp_flags, dir);
        let after = (s.state, s.flags);
        match (was, after.0.is_half_open()) {
            (false, true) => {
                self.half_open += 1;
                self.half_open_order.push(slot);
            }
            (true, false) => self.half_open -= 1,
            _ => {}
        }
        after
    }

    /// The oldest half-open session still live, taken out of the arrival
    /// order (the caller removes it). Skips at most `scan` stale entries,
    /// so a call is bounded; each stale entry is looked at once.
    pub fn oldest_half_open(&mut self, scan: usize) -> Option<u32> {
        for _ in 0..scan {
            let slot = self.half_open_order.pop()?;
            if self.slots[slot as usize].state.is_half_open() {
                return Some(slot);
            }
        }
        None
    }

    /// A half-open session whose removal frees an index way that `s`
    /// needs, when the table refused `s` for full buckets (not for a full
    /// slab): one of the sessions indexed in the buckets of whichever key
    /// of `s` finds no free way; or, when each key alone finds one, in a
    /// bucket both keys may use, whose last free way they compete for.
    pub fn half_open_in_way_of(&self, s: &Session) -> Option<u32> {
        // The table's own keyed hash (`key.hash()`, the fixed one, named
        // unrelated buckets under a per-instance key).
        let [q, p] = [s.request_key(), s.reply_key()].map(|k| {
            let (b1, b2, _) = self.place(self.hash(&k));
            [b1, b2]
        });
        for buckets in [q, p] {
            if buckets.iter().any(|b| self.free_way(*b).is_some()) {
                continue;
            }
            if let Some(slot) = buckets.into_iter().find_map(|b| self.half_open_in(b)) {
                return Some(slot);
            }
        }
        q.into_iter().filter(|b| p.contains(b)).find_map(|b| self.half_open_in(b))
    }

    /// A half-open session indexed in bucket `b`.
    fn half_open_in(&self, b: usize) -> Option<u32> {
        self.buckets[b]
            .refs
            .iter()
            .filter(|r| **r != EMPTY)
            .map(|r| decode(*r).0)
            .find(|slot| self.slots[*slot as usize].state.is_half_open())
    }

    /// The hash every method taking `h` expects for `key`.
    #[inline(always)]
    pub fn hash(&self, key: &FlowKey) -> u64 {
        key.keyed_hash(&self.hash_key)
    }

    /// The first and second bucket of hash `h`, and its tag (31 bits:
    /// see [`TAG_BITS`]).
    #[inline]
    fn place(&self, h: u64) -> (usize, usize, u32) {
        let b1 = (h as usize) & self.mask;
        let mut b2 = (h.rotate_right(29) as usize) & self.mask;
        if b2 == b1 {
            b2 = b1 ^ 1;
        }
        (b1, b2, (h >> 33) as u32)
    }

    /// Hints the CPU to load the index line of hash `h` ahead of a lookup
    /// (the first bucket: where the key almost always is).
    #[inline]
    pub fn prefetch(&self, h: u64) {
        M::prefetch(&self.buckets[(h as usize) & self.mask]);
    }

    /// Hints the CPU to load the sessions that the first index line of
    /// `h` points at under `h`'s tag (that line should be in cache by now:
    /// see [`Self::prefetch`]), so that the lookup's key compare finds
    /// them there too. Returns those ways, for
    /// [`Self::lookup_candidates`].
    #[inline]
    pub fn prefetch_candidates(&self, h: u64) -> u8 {
        let (b1, _, tag) = self.place(h);
        let m = self.tag_mask(b1, tag);
        if m != 0 {
            let (slot, _) = decode(self.buckets[b1].refs[m.trailing_zeros() as usize]);
            M::prefetch(&self.slots[slot as usize]);
        } else if self.spill(b1) != 0 {
            // No candidate in the first bucket, which has overflowed: the
            // lookup reads the second, where the key is or is not. (When
            // it has not, the key is a new flow's and the lookup ends.)
            let (_, b2, _) = self.place(h);
            M::prefetch(&self.buckets[b2]);
        }
        m as u8
    }

    /// Hints the CPU to load the session of the `i`-th oldest entry of the
    /// half-open order: the one the `i`-th next eviction of a half-open
    /// session will most likely remove (an entry gone stale since is
    /// skipped by the eviction, so a hint may go unused).
    #[inline]
    pub fn prefetch_half_open_at(&self, i: usize) {
        if let Some(slot) = self.half_open_order.peek(i) {
            M::prefetch(&self.slots[slot as usize]);
        }
    }

    /// The index lines that removing that session rewrites (the first
    /// bucket of each key, where nearly every entry is). Reads the
    /// session: call it after [`Self::prefetch_half_open_at`], once its
    /// line has had time to arrive. Keeps the two hashes for that
    /// `remove`, which then need not work them out again. (They stay
    /// right while the slot holds the same session: its keys never change
    /// in place, and the `remove` that ends it drops them.)
    #[inline]
    pub fn prefetch_half_open_index_at(&mut self, i: usize) {
        let Some(slot) = self.half_open_order.peek(i) else { return };
        let s = &self.slots[slot as usize];
        if s.state.is_half_open() {
            let (request, reply) = (self.hash(&s.request_key()), self.hash(&s.reply_key()));
            self.prefetch(request);
            self.prefetch(reply);
            self.victim_hashes[slot as usize % VICTIM_HASHES] = VictimHashes { slot, request, reply };
        }
    }

    /// [`Self::prefetch_half_open_at`] for the `n` oldest entries.
    #[inline]
    pub fn prefetch_oldest_half_open(&self, n: usize) {
        (0..n).for_each(|i| self.prefetch_half_open_at(i));
    }

    /// [`Self::prefetch_half_open_index_at`] for the `n` oldest entries.
    #[inline]
    pub fn prefetch_oldest_half_open_index(&mut self, n: usize) {
        (0..n).for_each(|i| self.prefetch_half_open_index_at(i));
    }

    /// Ways of bucket `b` whose tag is `tag` and that are in use, as a
    /// bit mask (see [`Placement::match_lanes`]: vector compares under
    /// lbd).
    #[inline(always)]
    fn tag_mask(&self, b: usize, tag: u32) -> u32 {
        let bucket = &self.buckets[b];
        M::match_lanes(&bucket.tags, &bucket.refs, tag, TAG_BITS, EMPTY)
    }

    /// The first free way of bucket `b` (a vector compare under lbd: the
    /// scalar search mispredicted its exit about once per call).
    #[inline(always)]
    fn free_way(&self, b: usize) -> Option<usize> {
        self.way_holding(b, EMPTY)
    }

    /// The first way of bucket `b` whose reference is `r`.
    #[inline(always)]
    fn way_holding(&self, b: usize, r: u32) -> Option<usize> {
        let m = M::equal_lanes(&self.buckets[b].refs, r);
        (m != 0).then(|| m.trailing_zeros() as usize)
    }

    /// Bucket `b`'s spill count: its live index entries whose first bucket
    /// it is and which sit in their second (or [`SPILL_STUCK`], once that
    /// many did). Bit `i` is the top bit of way `i`'s tag. While it is
    /// zero, a key absent from the bucket is absent from the table. (A
    /// vector move under lbd: the scalar form, hoisted by LLVM ahead of
    /// the tag compare, cost every lookup about fourteen instructions.)
    #[inline(always)]
    fn spill(&self, b: usize) -> u32 {
        M::lane_top_bits(&self.buckets[b].tags)
    }

    #[inline(always)]
    fn find_in(&self, b: usize, tag: u32, key: &FlowKey) -> Option<(u32, Direction)> {
        self.find_among(b, self.tag_mask(b, tag), key)
    }

    /// The entry for `key` among ways `m` of bucket `b`.
    #[inline(always)]
    fn find_among(&self, b: usize, mut m: u32, key: &FlowKey) -> Option<(u32, Direction)> {
        while m != 0 {
            let w = m.trailing_zeros() as usize;
            m &= m - 1;
            let (slot, dir) = decode(self.buckets[b].refs[w]);
            if self.slots[slot as usize].key(dir) == *key {
                return Some((slot, dir));
            }
        }
        None
    }

    /// Forgets which keys were indexed so far (see [`Self::confirm`]):
    /// call it before the lookups whose answers `confirm` will check.
    #[inline]
    pub fn mark(&mut self) {
        self.indexed_since_mark = [0; MARK_WORDS];
    }

    /// Notes that a key of hash `h` was indexed (see [`Self::mark`]).
    #[inline]
    fn note_indexed(&mut self, h: u64) {
        let bit = (h >> MARK_SHIFT) as usize;
        self.indexed_since_mark[bit >> 6] |= 1 << (bit & 63);
    }

    /// Whether a key of hash `h` may have been indexed since the last
    /// [`Self::mark`] (a filter: a yes may be wrong, a no never is).
    #[inline]
    fn maybe_indexed_since_mark(&self, h: u64) -> bool {
        let bit = (h >> MARK_SHIFT) as usize;
        self.indexed_since_mark[bit >> 6] & 1 << (bit & 63) != 0
    }

    /// `hint`, an answer [`Self::lookup`] gave for `key` since the last
    /// [`Self::mark`], if it still holds; otherwise a fresh lookup. A
    /// session found may have gone since: its slot says so. A key found
    /// absent can only have come in through an insert since, which the
    /// filter of keys indexed since the mark knows of; so a new flow whose
    /// burst created other sessions is usually not looked up a second time
    /// (each insert sets up to two of the filter's 1024 bits: after 64 new
    /// flows it says maybe for about one key in nine). That answer is the
    /// common one under a burst of new flows, and inline; the rest is not.
    #[inline(always)]
    pub fn confirm(&self, hint: Option<(u32, Direction)>, key: &FlowKey, h: u64) -> Option<(u32, Direction)> {
        match hint {
            None if !self.maybe_indexed_since_mark(h) => None,
            _ => self.recheck(hint, key, h),
        }
    }

    /// The rest of [`Self::confirm`].
    #[inline(never)]
    fn recheck(&self, hint: Option<(u32, Direction)>, key: &FlowKey, h: u64) -> Option<(u32, Direction)> {
        if let Some((slot, dir)) = hint {
            let s = &self.slots[slot as usize];
            if s.state != SessionState::Free && s.key(dir) == *key {
                return hint;
            }
        }
        self.lookup(key, h)
    }

    /// Finds the session `key` belongs to (`h` = `self.hash(key)`).
    /// Inlined into its few callers on the packet path, the second
    /// bucket's read kept out of line: every packet looks up once or
    /// twice, and a call's register saves and restores cost about a sixth
    /// of a lookup that ends in the first bucket (every lookup unless the
    /// bucket has overflowed).
    #[inline(always)]
    pub fn lookup(&self, key: &FlowKey, h: u64) -> Option<(u32, Direction)> {
        let b1 = (h as usize) & self.mask;
        self.lookup_among(key, h, b1, self.tag_mask(b1, (h >> 33) as u32))
    }

    /// [`Self::lookup`] with the first bucket's tag compare already made:
    /// `ways` is what [`Self::prefetch_candidates`] returned for `h`, and
    /// the index has not changed since (the burst's lookups run together,
    /// before any packet of it inserts or removes). Saves the compare's
    /// second run, a sixth of a lookup.
    #[inline(always)]
    pub(crate) fn lookup_candidates(&self, key: &FlowKey, h: u64, ways: u8) -> Option<(u32, Direction)> {
        let b1 = (h as usize) & self.mask;
        debug_assert_eq!(u32::from(ways), self.tag_mask(b1, (h >> 33) as u32), "ways from an index since changed");
        self.lookup_among(key, h, b1, u32::from(ways))
    }

    /// The rest of both lookups: the key among ways `m` of its first
    /// bucket `b1`, then in its second bucket if the first has overflowed.
    #[inline(always)]
    fn lookup_among(&self, key: &FlowKey, h: u64, b1: usize, m: u32) -> Option<(u32, Direction)> {
        match self.find_among(b1, m, key) {
            Some(found) => Some(found),
            None if self.spill(b1) == 0 => None,
            None => self.lookup_second(key, h),
        }
    }

    /// The rest of [`Self::lookup`]: the key's second bucket, read only
    /// when its first has overflowed.
    #[cold]
    #[inline(never)]
    fn lookup_second(&self, key: &FlowKey, h: u64) -> Option<(u32, Direction)> {
        let (_, b2, tag) = self.place(h);
        self.find_in(b2, tag, key)
    }

    #[inline]
    pub fn session(&self, slot: u32) -> &Session {
        &self.slots[slot as usize]
    }

    /// Notes traffic on the session in `slot` at `now`. (The only change
    /// made to a session in place besides [`Self::track_tcp`]: its keys
    /// are what the index and the spill counts were built from.)
    #[inline]
    pub fn set_last_seen(&mut self, slot: u32, now: u32) {
        self.slots[slot as usize].last_seen = now;
    }

    /// A free way for hash `h`: in its first bucket when there is one, so
    /// most keys sit there and most lookups read one line; else in its
    /// second; else, when both are full, by moving one entry of the first
    /// bucket to that entry's other bucket (one cuckoo step). The first
    /// bucket's answer, nearly every insert's, inline in the insert (a
    /// call cost a new flow about thirty instructions); the rest not.
    #[inline(always)]
    fn free_place(&mut self, h: u64) -> Option<(usize, usize, u32)> {
        let b1 = (h as usize) & self.mask;
        match self.free_way(b1) {
            Some(w) => Some((b1, w, (h >> 33) as u32)),
            None => self.free_place_beyond_first(h),
        }
    }

    /// The rest of [`Self::free_place`]: the first bucket is full.
    #[inline(never)]
    fn free_place_beyond_first(&mut self, h: u64) -> Option<(usize, usize, u32)> {
        let (b1, b2, tag) = self.place(h);
        if let Some(w) = self.free_way(b2) {
            self.spilled(b1);
            return Some((b2, w, tag));
        }
        for b in [b1, b2] {
            for w in 0..WAYS {
                let r = self.buckets[b].refs[w];
                let (slot, dir) = decode(r);
                let eh = self.hash(&self.slots[slot as usize].key(dir));
                let (e1, e2, etag) = self.place(eh);
                let alt = if e1 == b { e2 } else { e1 };
                if let Some(aw) = self.free_way(alt) {
                    self.buckets[alt].set_tag(aw, etag);
                    self.buckets[alt].refs[aw] = r;
                    self.buckets[b].refs[w] = EMPTY;
                    // The entry moved to its second bucket, or back to its
                    // first; the new key takes its way.
                    if alt == e2 {
                        self.spilled(e1);
                    } else {
                        self.unspilled(e1);
                    }
                    if b == b2 {
                        self.spilled(b1);
                    }
                    return Some((b, w, tag));
                }
            }
        }
        None
    }

    /// Counts an entry of first bucket `b1` that now sits in its second.
    fn spilled(&mut self, b1: usize) {
        let n = self.spill(b1);
        if n < SPILL_STUCK {
            self.buckets[b1].set_spill(n + 1);
        }
    }

    /// Uncounts one (see [`Self::spilled`]).
    fn unspilled(&mut self, b1: usize) {
        let n = self.spill(b1);
        debug_assert!(n > 0, "spill count of bucket {b1} below zero");
        if (1..SPILL_STUCK).contains(&n) {
            self.buckets[b1].set_spill(n - 1);
        }
    }

    /// Empties way `w` of bucket `b`, whose entry's hash is `h`.
    fn vacate(&mut self, b: usize, w: usize, h: u64) {
        self.buckets[b].refs[w] = EMPTY;
        let (b1, _, _) = self.place(h);
        if b != b1 {
            self.unspilled(b1);
        }
    }

    /// Adds `s`, indexed under both of its keys. The caller has checked
    /// that the request key is absent.
    pub fn insert(&mut self, s: Session) -> Result<u32, InsertError> {
        self.insert_hashed(s, self.hash(&s.request_key()))
    }

    /// [`Self::insert`] for a caller that has hashed the request key
    /// already, as the packet path has for its lookup. `hq` must be
    /// `self.hash(&s.request_key())` (checked in debug builds only: a
    /// wrong one files the key where lookups never look).
    pub(crate) fn insert_hashed(&mut self, s: Session, hq: u64) -> Result<u32, InsertError> {
        debug_assert_eq!(hq, self.hash(&s.request_key()), "hq is the request key's hash");
        let rep = s.reply_key();
        let hr = self.hash(&rep);
        if self.lookup(&rep, hr).is_some() {
            return Err(InsertError::Conflict);
        }
        if self.len == self.slots.len() {
            return Err(InsertError::Full);
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                let s = self.high_water;
                self.high_water += 1;
                s
            }
        };
        // The session goes in first: a cuckoo step placing the reply key
        // may move the request key's entry, and finds that entry's buckets
        // from the key in the slot.
        self.slots[slot as usize] = s;
        let Some((bq, wq, tq)) = self.free_place(hq) else {
            self.slots[slot as usize].state = SessionState::Free;
            self.free.push(slot);
            return Err(InsertError::Full);
        };
        self.buckets[bq].set_tag(wq, tq);
        self.buckets[bq].refs[wq] = encode(slot, Direction::Request);
        let Some((br, wr, tr)) = self.free_place(hr) else {
            // A failed free_place moved nothing: the entry is where it was
            // put, maybe in its second bucket.
            self.vacate(bq, wq, hq);
            self.slots[slot as usize].state = SessionState::Free;
            self.free.push(slot);
            return Err(InsertError::Full);
        };
        self.buckets[br].set_tag(wr, tr);
        self.buckets[br].refs[wr] = encode(slot, Direction::Reply);
        self.note_indexed(hq);
        self.note_indexed(hr);
        self.len += 1;
        self.version += 1;
        if s.state.is_half_open() {
            self.half_open += 1;
            self.half_open_order.push(slot);
        }
        Ok(slot)
    }

    /// Takes reference `r`, filed under hash `h`, out of the index. An
    /// entry in its first bucket (nearly every one) leaves the spill
    /// counts as they are: that answer inline, the second bucket's not.
    #[inline(always)]
    fn unlink(&mut self, h: u64, r: u32) {
        let b1 = (h as usize) & self.mask;
        match self.way_holding(b1, r) {
            Some(w) => self.buckets[b1].refs[w] = EMPTY,
            None => self.unlink_second(h, r),
        }
    }

    /// The rest of [`Self::unlink`]: the entry is in its second bucket.
    #[inline(never)]
    fn unlink_second(&mut self, h: u64, r: u32) {
        let (_, b2, _) = self.place(h);
        match self.way_holding(b2, r) {
            Some(w) => self.vacate(b2, w, h),
            None => debug_assert!(false, "session index entry missing"),
        }
    }

    /// Removes the session in `slot` and returns it.
    pub fn remove(&mut self, slot: u32) -> Session {
        let s = self.slots[slot as usize];
        debug_assert!(s.state != SessionState::Free);
        let kept = &mut self.victim_hashes[slot as usize % VICTIM_HASHES];
        let (hq, hr) = if kept.slot == slot {
            let hashes = (kept.request, kept.reply);
            *kept = VictimHashes::NONE;
            debug_assert_eq!(hashes, (self.hash(&s.request_key()), self.hash(&s.reply_key())), "slot {slot}");
            hashes
        } else {
            (self.hash(&s.request_key()), self.hash(&s.reply_key()))
        };
        self.unlink(hq, encode(slot, Direction::Request));
        self.unlink(hr, encode(slot, Direction::Reply));
        self.slots[slot as usize].state = SessionState::Free;
        self.free.push(slot);
        self.len -= 1;
        if s.state.is_half_open() {
            self.half_open -= 1;
        }
        self.version += 1;
        s
    }

    /// Looks at up to `budget` slots from where the last call stopped and
    /// removes those idle past their state's timeout, passing each to
    /// `expired`. Returns the number removed.
    pub fn expire(
        &mut self,
        now: u32,
        budget: usize,
        timeouts: &StateTimeouts,
        mut expired: impl FnMut(&Session),
    ) -> usize {
        if self.high_water == 0 {
            return 0;
        }
        let mut removed = 0;
        for _ in 0..budget.min(self.high_water as usize) {
            if self.cursor >= self.high_water {
                self.cursor = 0;
            }
            let slot = self.cursor;
            self.cursor += 1;
            let s = &self.slots[slot as usize];
            if s.state != SessionState::Free && now.wrapping_sub(s.last_seen) > timeouts.get(s.state) {
                let s = self.remove(slot);
                expired(&s);
                removed += 1;
            }
        }
        removed
    }

    /// Slots handed out so far: the span a full sweep covers.
    pub fn sweep_span(&self) -> usize {
        self.high_water as usize
    }

    /// Every live session (for diagnostics; walks the whole slab).
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Session)> {
        self.slots[..self.high_water as usize]
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state != SessionState::Free)
            .map(|(i, s)| (i as u32, s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::SessionHashKey;
    use crate::testing::Xorshift;
    use crate::wire::tcp::{self, *};
    use std::collections::HashMap;

    fn sess(i: u32, now: u32) -> Session {
        Session::new(
            6,
            (0x0a00_0000 | (i >> 14), 1024 + (i & 0x3fff) as u16),
            (0x0a00_0064, 80),
            (0x0a01_0000 | (i % 3 + 11), 8080),
            ListenerId(0),
            BackendId(i % 3),
            SessionState::TcpSynSent,
            now,
        )
    }

    #[test]
    fn both_directions_find_the_session() {
        let mut t = SessionTable::new(100);
        let s = sess(7, 0);
        let slot = t.insert(s).unwrap();
        let rq = s.request_key();
        let rp = s.reply_key();
        assert_eq!(t.lookup(&rq, rq.hash()), Some((slot, Direction::Request)));
        assert_eq!(t.lookup(&rp, rp.hash()), Some((slot, Direction::Reply)));
        let other = sess(8, 0).request_key();
        assert_eq!(t.lookup(&other, other.hash()), None);
        assert_eq!(*t.session(slot), s);
        t.remove(slot);
        assert_eq!(t.lookup(&rq, rq.hash()), None);
        assert_eq!(t.lookup(&rp, rp.hash()), None);
        assert!(t.is_empty());
    }

    #[test]
    fn fills_to_capacity_then_refuses() {
        let cap = 50_000;
        let mut t = SessionTable::new(cap);
        for i in 0..cap as u32 {
            t.insert(sess(i, 0)).unwrap_or_else(|e| panic!("insert {i}: {e:?}"));
        }
        assert_eq!(t.insert(sess(cap as u32, 0)), Err(InsertError::Full));
        // Existing sessions untouched.
        for i in (0..cap as u32).step_by(997) {
            let k = sess(i, 0).request_key();
            assert!(t.lookup(&k, k.hash()).is_some());
        }
    }

    #[test]
    fn reply_key_conflict_is_refused() {
        let mut t = SessionTable::new(10);
        let a = sess(1, 0);
        t.insert(a).unwrap();
        // Same client endpoint and backend through another VIP.
        let mut b = a;
        b.vip = 0x0a00_0065;
        assert_eq!(t.insert(b), Err(InsertError::Conflict));
    }

    #[test]
    fn expiry_is_incremental_and_per_state() {
        let mut t = SessionTable::new(1000);
        let timeouts = StateTimeouts([0, 60_000, 10_000, 10_000, 900_000, 30_000, 5_000]);
        for i in 0..1000 {
            let mut s = sess(i, 0);
            if i % 2 == 0 {
                s.state = SessionState::TcpEstablished;
            }
            t.insert(s).unwrap();
        }
        // 11 s later only the SYN_SENT half is idle past its timeout.
        let mut gone = 0;
        // A budget of 100 per call: ten calls make one sweep.
        for _ in 0..9 {
            gone += t.expire(11_000, 100, &timeouts, |s| assert_eq!(s.state, SessionState::TcpSynSent));
            assert!(gone < 500);
        }
        gone += t.expire(11_000, 100, &timeouts, |_| {});
        assert_eq!(gone, 500);
        assert_eq!(t.len(), 500);
        // Wrapping clock: last_seen near u32::MAX, now just past zero.
        let mut t = SessionTable::new(4);
        t.insert(sess(1, u32::MAX - 1000)).unwrap();
        assert_eq!(t.expire(2000, 4, &timeouts, |_| {}), 0);
        assert_eq!(t.expire(20_000, 4, &timeouts, |_| {}), 1);
    }

    /// The eviction hints read the arrival order and the sessions it
    /// names, stale entries and an order shorter than asked included, and
    /// change nothing.
    #[test]
    fn eviction_hints_read_only() {
        let mut t = SessionTable::new(16);
        let slots: Vec<u32> = (0..6).map(|i| t.insert(sess(i, 0)).unwrap()).collect();
        t.remove(slots[0]);
        t.remove(slots[3]);
        let before: Vec<(u32, Session)> = t.iter().map(|(i, s)| (i, *s)).collect();
        for n in [0, 1, 4, 6, 100] {
            t.prefetch_oldest_half_open(n);
            t.prefetch_oldest_half_open_index(n);
        }
        assert_eq!(t.iter().map(|(i, s)| (i, *s)).collect::<Vec<_>>(), before);
        assert_eq!(t.half_open(), 4);
        assert_eq!(t.oldest_half_open(16), Some(slots[1]));
    }

    /// The hashes an eviction's prefetch keeps for its `remove` end with
    /// the session they were worked out from: a younger session in the
    /// same slot is removed under its own keys.
    #[test]
    fn kept_victim_hashes_end_with_their_session() {
        let mut t = SessionTable::new(16);
        let a = t.insert(sess(1, 0)).unwrap();
        t.prefetch_half_open_index_at(0);
        assert_eq!(t.remove(a), sess(1, 0));
        let b = t.insert(sess(2, 0)).unwrap();
        assert_eq!(b, a, "the slot is reused");
        assert_eq!(t.remove(b), sess(2, 0));
        let gone = |t: &SessionTable, i| {
            let (q, p) = (sess(i, 0).request_key(), sess(i, 0).reply_key());
            (t.lookup(&q, q.hash()), t.lookup(&p, p.hash())) == (None, None)
        };
        assert!(gone(&t, 2));
        t.check_index();
        // Kept across a state change, which leaves the keys as they were.
        let c = t.insert(sess(3, 0)).unwrap();
        t.prefetch_half_open_index_at(0);
        t.track_tcp(c, FLAG_SYN | FLAG_ACK, Direction::Reply);
        t.track_tcp(c, FLAG_ACK, Direction::Request);
        assert_eq!(t.remove(c).state, SessionState::TcpEstablished);
        assert!(gone(&t, 3));
        t.check_index();
        assert!(t.is_empty());
    }

    #[test]
    fn half_open_sessions_are_counted_and_found_oldest_first() {
        let mut t = SessionTable::new(16);
        let slots: Vec<u32> = (0..6).map(|i| t.insert(sess(i, 0)).unwrap()).collect();
        let mut est = sess(100, 0);
        est.state = SessionState::TcpEstablished;
        let e = t.insert(est).unwrap();
        assert_eq!(t.half_open(), 6);
        // The first completes its handshake, the second is removed: the
        // oldest half-open session left is the third.
        t.track_tcp(slots[0], FLAG_SYN | FLAG_ACK, Direction::Reply);
        assert_eq!(t.half_open(), 6);
        t.track_tcp(slots[0], FLAG_ACK, Direction::Request);
        assert_eq!(t.half_open(), 5);
        t.remove(slots[1]);
        assert_eq!(t.half_open(), 4);
        assert_eq!(t.oldest_half_open(16), Some(slots[2]));
        // A bounded scan stops early over stale entries; the next call goes on.
        t.remove(slots[2]);
        t.remove(slots[3]);
        assert_eq!(t.oldest_half_open(1), None);
        assert_eq!(t.oldest_half_open(1), Some(slots[4]));
        // A closed session that sees a new SYN is half-open again, and
        // youngest.
        t.track_tcp(e, FLAG_RST, Direction::Request);
        t.track_tcp(e, FLAG_SYN, Direction::Request);
        assert_eq!(t.half_open(), 3);
        assert_eq!(t.oldest_half_open(16), Some(slots[5]));
        assert_eq!(t.oldest_half_open(16), Some(e));
        assert_eq!(t.oldest_half_open(16), None);
        // Expiry keeps the count.
        let timeouts = StateTimeouts([0, 1, 1, 1, 1, 1, 1]);
        t.expire(10, 100, &timeouts, |_| {});
        assert_eq!((t.len(), t.half_open()), (0, 0));
    }

    #[test]
    fn a_half_open_session_in_the_way_of_an_insert_is_found() {
        // Two buckets: every key's two buckets are the only two, so after
        // 16 index entries (8 sessions) both are full while the slab has
        // room.
        let t = SessionTable::new(20);
        assert_eq!(t.buckets.len(), 8);
        let mut t = SessionTable { mask: 1, ..t };
        let mut est = Vec::new();
        for i in 0..7 {
            let mut s = sess(i, 0);
            s.state = SessionState::TcpEstablished;
            est.push(t.insert(s).unwrap());
        }
        let half = t.insert(sess(7, 0)).unwrap();
        let new = sess(8, 0);
        assert_eq!(t.insert(new), Err(InsertError::Full));
        assert_eq!(t.half_open_in_way_of(&new), Some(half));
        t.remove(half);
        assert!(t.insert(new).is_ok());
        // Only established sessions in the way: none to take.
        let mut s = sess(9, 0);
        s.state = SessionState::TcpEstablished;
        t.track_tcp(t.lookup(&new.request_key(), new.request_key().hash()).unwrap().0, FLAG_ACK, Direction::Request);
        assert_eq!(t.insert(s), Err(InsertError::Full));
        assert_eq!(t.half_open_in_way_of(&s), None);
    }

    impl SessionTable {
        /// Every entry sits in one of its key's two buckets under its tag,
        /// and every bucket's spill count is the number of entries whose
        /// first bucket it is that sit in their second (or stuck).
        /// Returns the largest count.
        fn check_index(&self) -> u32 {
            let mut want = vec![0u32; self.mask + 1];
            for (b, bucket) in self.buckets[..=self.mask].iter().enumerate() {
                for w in 0..WAYS {
                    if bucket.refs[w] == EMPTY {
                        continue;
                    }
                    let (slot, dir) = decode(bucket.refs[w]);
                    let (e1, e2, tag) = self.place(self.hash(&self.slots[slot as usize].key(dir)));
                    assert_eq!(bucket.tags[w] & TAG_BITS, tag, "bucket {b} way {w}: tag");
                    assert!(b == e1 || b == e2, "bucket {b} way {w}: in neither of its buckets");
                    if b != e1 {
                        want[e1] += 1;
                    }
                }
            }
            for (b, n) in want.iter().enumerate() {
                let got = self.spill(b);
                assert!(got == *n || got == SPILL_STUCK, "bucket {b}: spill count {got}, {n} spilled");
            }
            want.into_iter().max().unwrap_or(0)
        }
    }

    /// Both keys of every session in `live` find it, through
    /// [`SessionTable::lookup`] and through the burst's way: the ways
    /// [`SessionTable::prefetch_candidates`] returns, then
    /// [`SessionTable::lookup_candidates`].
    fn assert_all_found(t: &SessionTable, live: &[(u32, Session)], ctx: &str) {
        for (slot, s) in live {
            for (k, dir) in [(s.request_key(), Direction::Request), (s.reply_key(), Direction::Reply)] {
                let h = k.hash();
                assert_eq!(t.lookup(&k, h), Some((*slot, dir)), "{ctx}");
                assert_eq!(t.lookup_candidates(&k, h, t.prefetch_candidates(h)), Some((*slot, dir)), "{ctx}");
            }
        }
    }

    /// With four buckets for 40 sessions, keys overflow into their second
    /// bucket and are moved by cuckoo steps: the spill counts follow, the
    /// lookups that need the second bucket read it, misses stay misses,
    /// and the counts are back to zero once the table is empty.
    #[test]
    fn spill_counts_follow_the_overflow() {
        let t = SessionTable::new(40);
        let mut t = SessionTable { mask: 3, ..t };
        let mut r = Xorshift::new(0x5eed);
        let mut live: Vec<(u32, Session)> = Vec::new();
        let (mut most, mut next) = (0, 0u32);
        for round in 0..200 {
            // Fill until the index refuses, then empty about half.
            loop {
                let s = sess(next, 0);
                next += 1;
                match t.insert(s) {
                    Ok(slot) => live.push((slot, s)),
                    Err(InsertError::Full) => break,
                    Err(e) => panic!("round {round}: {e:?}"),
                }
                most = most.max(t.check_index());
            }
            for _ in 0..live.len() / 2 + r.below(4) as usize {
                if live.is_empty() {
                    break;
                }
                let (slot, s) = live.swap_remove(r.index(live.len()));
                assert_eq!(t.remove(slot), s);
                t.check_index();
            }
            assert_all_found(&t, &live, &format!("round {round}"));
            let absent = sess(next + 1_000_000, 0).request_key();
            let h = absent.hash();
            assert_eq!(t.lookup(&absent, h), None);
            assert_eq!(t.lookup_candidates(&absent, h, t.prefetch_candidates(h)), None);
        }
        assert!(most >= 2, "no bucket ever held two overflowed entries ({most})");
        for (slot, _) in live.drain(..) {
            t.remove(slot);
        }
        assert_eq!(t.check_index(), 0);
        assert!((0..t.buckets.len()).all(|b| t.spill(b) == 0));
    }

    /// Random inserts and removals on tables of two, four and eight
    /// buckets, where nearly every insert overflows or is refused (also
    /// after placing its request key in that key's second bucket, which
    /// the refusal must uncount): after every step the index check holds
    /// and every live session is found by both keys.
    #[test]
    fn tiny_tables_keep_their_index_through_refusals() {
        let mut refused = 0;
        for seed in 1..40u64 {
            let mut r = Xorshift::new(seed);
            let t = SessionTable::new(200);
            let mut t = SessionTable { mask: [1, 3, 7][(seed % 3) as usize], ..t };
            let mut live: Vec<(u32, Session)> = Vec::new();
            for step in 0..400 {
                if r.below(3) != 0 || live.is_empty() {
                    let s = sess(r.below(1 << 20) as u32, 0);
                    let k = s.request_key();
                    if t.lookup(&k, k.hash()).is_some() {
                        continue;
                    }
                    match t.insert(s) {
                        Ok(slot) => live.push((slot, s)),
                        Err(InsertError::Full) => refused += 1,
                        Err(InsertError::Conflict) => {}
                    }
                } else {
                    let (slot, s) = live.swap_remove(r.index(live.len()));
                    assert_eq!(t.remove(slot), s);
                }
                t.check_index();
                assert_all_found(&t, &live, &format!("seed {seed} step {step}"));
            }
        }
        assert!(refused > 1000, "the index refused only {refused} inserts");
    }

    /// A spill count at its ceiling stays there, in both directions, and
    /// lookups still find keys in second buckets.
    #[test]
    fn a_stuck_spill_count_stays() {
        let t = SessionTable::new(40);
        let mut t = SessionTable { mask: 1, ..t };
        let s = sess(1, 0);
        let slot = t.insert(s).unwrap();
        for b in 0..2 {
            t.buckets[b].set_spill(SPILL_STUCK);
            t.unspilled(b);
            assert_eq!(t.spill(b), SPILL_STUCK);
            t.spilled(b);
            assert_eq!(t.spill(b), SPILL_STUCK);
        }
        let q = s.request_key();
        assert_eq!(t.lookup(&q, q.hash()), Some((slot, Direction::Request)));
        t.remove(slot);
        assert_eq!(t.lookup(&q, q.hash()), None);
        assert!((0..2).all(|b| t.spill(b) == SPILL_STUCK));
    }

    /// Under a per-instance key, the half-open session named as in the
    /// way of a refused insert is in the way: removing it (twice at most,
    /// one per key, as the data plane does) lets the insert through.
    #[test]
    fn the_half_open_session_in_the_way_is_in_the_way_under_a_key() {
        let key = SessionHashKey([0x1234_5678_9abc_def1, 0x0fed_cba9_8765_4321, 0x5555_aaaa_3333_cccd]);
        let t: SessionTable = SessionTable::with_key(400, key);
        let mut t = SessionTable { mask: 7, ..t };
        let (mut refused, mut i) = (0, 0u32);
        while refused < 100 {
            i += 1;
            let s = sess(i, 0);
            if t.insert(s) != Err(InsertError::Full) {
                continue;
            }
            assert!(t.len() < t.capacity());
            refused += 1;
            let mut admitted = false;
            for _ in 0..2 {
                let victim = t.half_open_in_way_of(&s).unwrap_or_else(|| panic!("session {i}: nothing in the way"));
                t.remove(victim);
                if t.insert(s).is_ok() {
                    admitted = true;
                    break;
                }
            }
            assert!(admitted, "session {i}: two evictions did not make room");
        }
    }

    /// A key found absent and indexed afterwards, by the same burst: the
    /// absence is not confirmed.
    #[test]
    fn confirm_sees_a_key_indexed_since_the_mark() {
        let mut t = SessionTable::new(100);
        let (a, b) = (sess(1, 0), sess(2, 0));
        t.insert(a).unwrap();
        t.mark();
        let k = b.request_key();
        let before = t.lookup(&k, k.hash());
        assert_eq!(before, None);
        assert_eq!(t.confirm(before, &k, k.hash()), None);
        let slot = t.insert(b).unwrap();
        assert_eq!(t.confirm(before, &k, k.hash()), Some((slot, Direction::Request)));
        let p = b.reply_key();
        assert_eq!(t.confirm(None, &p, p.hash()), Some((slot, Direction::Reply)));
        // A session found and gone since is not confirmed either.
        let ka = a.request_key();
        let found = t.lookup(&ka, ka.hash());
        t.remove(found.unwrap().0);
        assert_eq!(t.confirm(found, &ka, ka.hash()), None);
    }

    #[test]
    fn slots_are_reused_after_removal() {
        let mut t = SessionTable::new(3);
        let a = t.insert(sess(1, 0)).unwrap();
        t.insert(sess(2, 0)).unwrap();
        t.insert(sess(3, 0)).unwrap();
        t.remove(a);
        let d = t.insert(sess(4, 0)).unwrap();
        assert_eq!(a, d);
        assert_eq!(t.len(), 3);
    }

    /// A plain model of the table: every live session by slot, and every
    /// key (request and reply) to its slot and direction.
    #[derive(Default)]
    struct Model {
        sessions: HashMap<u32, Session>,
        keys: HashMap<FlowKey, (u32, Direction)>,
    }

    impl Model {
        fn lookup(&self, k: &FlowKey) -> Option<(u32, Direction)> {
            self.keys.get(k).copied()
        }
        fn add(&mut self, slot: u32, s: Session) {
            assert!(self.sessions.insert(slot, s).is_none(), "slot {slot} handed out twice");
            self.keys.insert(s.request_key(), (slot, Direction::Request));
            self.keys.insert(s.reply_key(), (slot, Direction::Reply));
        }
        fn remove(&mut self, slot: u32) -> Session {
            let s = self.sessions.remove(&slot).expect("live in the model");
            self.keys.remove(&s.request_key());
            self.keys.remove(&s.reply_key());
            s
        }
        fn expired(&self, now: u32, timeouts: &StateTimeouts) -> Vec<u32> {
            let mut v: Vec<u32> = self
                .sessions
                .iter()
                .filter(|(_, s)| now.wrapping_sub(s.last_seen) > timeouts.get(s.state))
                .map(|(slot, _)| *slot)
                .collect();
            v.sort_unstable();
            v
        }
    }

    /// Sessions from small pools of addresses and ports, overlapping on
    /// purpose: two clients reach one backend with the same source (reply
    /// key conflicts), and a backend's address and port can be another
    /// session's client endpoint (a reply key equal to a request key).
    fn random_session(r: &mut Xorshift, now: u32) -> Session {
        const ADDRS: [u32; 4] = [0x0a00_0001, 0x0a00_0002, 0x0a00_0003, 0x0a00_0004];
        loop {
            let cport = if r.below(2) == 0 { r.pick(&[80, 81, 8080]) } else { 1000 + r.below(40) as u16 };
            let client = (r.pick(&ADDRS), cport);
            let vip = (r.pick(&ADDRS[2..]), r.pick(&[80, 81]));
            let backend = (r.pick(&ADDRS[..3]), r.pick(&[80, 8080]));
            let proto = r.pick(&[6, 17]);
            let state = if proto == 17 {
                SessionState::Udp
            } else {
                r.pick(&[SessionState::TcpSynSent, SessionState::TcpEstablished, SessionState::TcpClosing])
            };
            let s = Session::new(proto, client, vip, backend, ListenerId(0), BackendId(r.below(3) as u32), state, now);
            // A session whose two keys are one key is not a flow.
            if s.request_key() != s.reply_key() {
                return s;
            }
        }
    }

    /// Every operation of the table, checked against the model at every
    /// step: inserts (conflicting and full ones included), lookups of both
    /// keys of live, removed and never-seen sessions (a false positive
    /// fails), `confirm` with fresh, stale and made-up hints, removal,
    /// updates, and expiry sweeps with a clock that moves and wraps.
    fn run_model(seed: u64, capacity: usize, steps: u32) {
        let timeouts = StateTimeouts([0, 3_000, 1_000, 1_000, 20_000, 2_000, 500]);
        let mut t = SessionTable::new(capacity);
        let mut m = Model::default();
        let mut r = Xorshift::new(seed);
        // Eviction prefetches, which keep hashes for `remove`: their own
        // generator, so the operations above stay what they were.
        let mut prefetches = Xorshift::new(seed ^ 0x5bd1_e995);
        // Start close to the wrap of the millisecond clock.
        let mut now: u32 = u32::MAX - 50_000;
        // Keys seen so far (live or not) and answers given for them earlier.
        let mut seen: Vec<FlowKey> = Vec::new();
        let mut hints: Vec<(FlowKey, Option<(u32, Direction)>)> = Vec::new();
        let (mut inserted, mut conflicts, mut full, mut expired, mut hits) = (0, 0, 0, 0, 0);
        for step in 0..steps {
            let ctx = |what: &str| format!("seed {seed:#x} step {step}: {what}");
            // Phases: filling (time almost stands still, nothing removed),
            // steady churn, and draining (time runs, sessions expire).
            let phase = step / 4096 % 3;
            let op = r.below(100);
            let op = if phase == 0 && (70..80).contains(&op) { 0 } else { op };
            if prefetches.below(4) == 0 {
                t.prefetch_half_open_index_at(prefetches.below(8) as usize);
            }
            match op {
                // Insert, as the data plane does: only when the request key
                // is unknown; the lookup itself is checked.
                0..=34 => {
                    let s = random_session(&mut r, now);
                    let k = s.request_key();
                    seen.push(k);
                    seen.push(s.reply_key());
                    let found = t.lookup(&k, k.hash());
                    assert_eq!(found, m.lookup(&k), "{}", ctx("lookup before insert"));
                    if found.is_some() {
                        continue;
                    }
                    let expect_conflict = m.lookup(&s.reply_key()).is_some();
                    match t.insert(s) {
                        Ok(slot) => {
                            assert!(!expect_conflict, "{}", ctx("insert accepted a taken reply key"));
                            assert!(m.sessions.len() < capacity, "{}", ctx("insert past capacity"));
                            assert!((slot as usize) < capacity);
                            m.add(slot, s);
                            inserted += 1;
                        }
                        Err(InsertError::Conflict) => {
                            assert!(expect_conflict, "{}", ctx("conflict without a taken reply key"));
                            conflicts += 1;
                        }
                        Err(InsertError::Full) => {
                            assert!(!expect_conflict, "{}", ctx("full reported before the conflict"));
                            assert_eq!(m.sessions.len(), capacity, "{}", ctx("full below capacity"));
                            full += 1;
                        }
                    }
                }
                // Lookups of any key seen (either direction), or a new one;
                // now and then after a mark, which ends what `confirm` may
                // be asked about.
                35..=59 => {
                    if r.below(32) == 0 {
                        t.mark();
                        hints.clear();
                    }
                    let k = if seen.is_empty() || r.below(8) == 0 {
                        random_session(&mut r, now).reply_key()
                    } else {
                        seen[r.index(seen.len())]
                    };
                    let found = t.lookup(&k, k.hash());
                    assert_eq!(found, m.lookup(&k), "{}", ctx(&format!("lookup {k:?}")));
                    if let Some((slot, dir)) = found {
                        assert_eq!(t.session(slot), &m.sessions[&slot], "{}", ctx("session contents"));
                        assert_eq!(t.session(slot).key(dir), k);
                        hits += 1;
                    }
                    hints.push((k, found));
                }
                // confirm: an earlier (maybe stale) answer since the mark,
                // or a made-up one.
                60..=69 if !hints.is_empty() => {
                    let (k, mut hint) = hints[r.index(hints.len())];
                    if r.below(4) == 0 {
                        let dir = if r.below(2) == 0 { Direction::Request } else { Direction::Reply };
                        hint = Some((r.below(capacity as u64) as u32, dir));
                    }
                    assert_eq!(t.confirm(hint, &k, k.hash()), m.lookup(&k), "{}", ctx(&format!("confirm {hint:?}")));
                }
                // Remove a live session.
                70..=79 if !m.sessions.is_empty() => {
                    let slot = *m.sessions.keys().nth(r.index(m.sessions.len())).unwrap();
                    let want = m.remove(slot);
                    assert_eq!(t.remove(slot), want, "{}", ctx("removed session"));
                }
                // Traffic on a live session: seen now, TCP state advances.
                80..=89 if !m.sessions.is_empty() => {
                    let slot = *m.sessions.keys().nth(r.index(m.sessions.len())).unwrap();
                    let flags = r.pick(&[tcp::FLAG_ACK, tcp::FLAG_FIN, tcp::FLAG_RST, tcp::FLAG_SYN]);
                    let dir = if r.below(2) == 0 { Direction::Request } else { Direction::Reply };
                    t.set_last_seen(slot, now);
                    if t.session(slot).proto == 6 {
                        t.track_tcp(slot, flags, dir);
                    }
                    let s = m.sessions.get_mut(&slot).unwrap();
                    s.last_seen = now;
                    if s.proto == 6 {
                        s.track_tcp(flags, dir);
                    }
                }
                // The clock moves (sometimes far), and a sweep runs: a part
                // of the table, or all of it.
                _ => {
                    let steps: &[u32] = match phase {
                        0 => &[0, 1, 2],
                        1 => &[1, 10, 50, 100, 300, 1_000],
                        _ => &[300, 1_000, 4_000, 25_000],
                    };
                    now = now.wrapping_add(r.pick(steps));
                    let span = t.sweep_span();
                    let whole = r.below(3) == 0;
                    let budget = if whole { span } else { r.below(span as u64 / 4 + 2) as usize };
                    let due = m.expired(now, &timeouts);
                    let mut gone = Vec::new();
                    let n = t.expire(now, budget, &timeouts, |s| gone.push(*s));
                    assert_eq!(n, gone.len());
                    for s in &gone {
                        let k = s.request_key();
                        let (slot, _) = m.lookup(&k).unwrap_or_else(|| panic!("{}", ctx("expired an unknown session")));
                        assert!(due.contains(&slot), "{}", ctx(&format!("expired slot {slot} before its time")));
                        assert_eq!(&m.remove(slot), s, "{}", ctx("expired session contents"));
                    }
                    if whole {
                        assert_eq!(m.expired(now, &timeouts), Vec::<u32>::new(), "{}", ctx("a whole sweep left some"));
                    }
                    expired += n;
                }
            }
            assert_eq!(t.len(), m.sessions.len(), "{}", ctx("len"));
            if step % 1024 == 0 {
                t.check_index();
            }
            let half_open = m.sessions.values().filter(|s| s.state.is_half_open()).count();
            assert_eq!(t.half_open(), half_open, "{}", ctx("half-open count"));
            if seen.len() > 4096 {
                seen.drain(..2048);
            }
            if hints.len() > 1024 {
                hints.drain(..512);
            }
        }
        // Everything left: both keys find it, and the table holds no more.
        for (slot, s) in &m.sessions {
            let (q, p) = (s.request_key(), s.reply_key());
            assert_eq!(t.lookup(&q, q.hash()), Some((*slot, Direction::Request)));
            assert_eq!(t.lookup(&p, p.hash()), Some((*slot, Direction::Reply)));
        }
        assert_eq!(t.iter().count(), m.sessions.len());
        t.check_index();
        // The run exercised each outcome.
        assert!(
            inserted > 1000 && conflicts > 100 && expired > 500 && hits > 1000,
            "seed {seed:#x}: inserted {inserted}, conflicts {conflicts}, full {full}, expired {expired}, hits {hits}"
        );
        println!(
            "seed {seed:#x}: inserted {inserted}, conflicts {conflicts}, full {full}, expired {expired}, hits {hits}"
        );
        if capacity < 200 {
            assert!(full > 10, "seed {seed:#x}: the table never filled ({full})");
        }
    }

    #[test]
    fn random_operations_match_a_model() {
        run_model(0x1234_5678, 4096, 200_000);
        run_model(0x9e37_79b9, 64, 100_000);
        run_model(0xdead_beef, 100, 100_000);
    }

    #[test]
    fn tcp_state_machine() {
        let mut s = sess(1, 0);
        assert_eq!(s.state, SessionState::TcpSynSent);
        s.track_tcp(FLAG_SYN | FLAG_ACK, Direction::Reply);
        assert_eq!(s.state, SessionState::TcpSynReceived);
        s.track_tcp(FLAG_ACK, Direction::Request);
        assert_eq!(s.state, SessionState::TcpEstablished);
        s.track_tcp(FLAG_ACK | FLAG_PSH, Direction::Reply);
        assert_eq!(s.state, SessionState::TcpEstablished);
        s.track_tcp(FLAG_FIN | FLAG_ACK, Direction::Request);
        assert_eq!(s.state, SessionState::TcpClosing);
        s.track_tcp(FLAG_ACK, Direction::Reply);
        assert_eq!(s.state, SessionState::TcpClosing);
        s.track_tcp(FLAG_FIN | FLAG_ACK, Direction::Reply);
        assert_eq!(s.state, SessionState::TcpClosed);
        // Port reuse: a fresh SYN restarts the session.
        s.track_tcp(FLAG_SYN, Direction::Request);
        assert_eq!(s.state, SessionState::TcpSynSent);
        assert_eq!(s.flags, 0);
        s.track_tcp(FLAG_RST, Direction::Reply);
        assert_eq!(s.state, SessionState::TcpClosed);
    }
}
