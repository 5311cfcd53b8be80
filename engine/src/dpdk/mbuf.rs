//! Packet buffers: [`Mbuf`], one owned buffer, and [`Burst`], a batch of
//! them (the unit of every RX, TX and ring operation).
//!
//! # An mbuf and its pool
//!
//! An [`Mbuf`] is one pointer and carries no reference to the
//! [`Mempool`](super::Mempool) it came from: an `Arc` per packet would cost
//! two atomic operations per packet, and a lifetime cannot work because
//! mbufs travel with their worker into a `'static` lcore function. What
//! keeps a pool alive while its mbufs are out instead:
//!
//! - every place that holds mbufs holds the pool: an RX queue (its
//!   descriptors) and a TX queue (mbufs not yet sent) through their
//!   [`Port`](super::Port), which holds the pool; a ring (mbufs handed
//!   over) holds it; lbd's workers, which hold every `Mbuf` and `Burst`
//!   value, hold it. The pool is therefore freed only after all of them.
//! - as a backstop for an `Mbuf` kept elsewhere, a pool that is dropped
//!   while mbufs are still out is leaked together with a hold on the EAL,
//!   so memory such an mbuf points to stays valid (see `Mempool`'s drop).
use super::sys;
use std::fmt;
use std::ptr::NonNull;

/// Largest burst a [`Burst`] holds.
pub const MAX_BURST: usize = 256;

/// An owned packet buffer; freed when dropped.
pub struct Mbuf(pub(super) NonNull<sys::rte_mbuf>);

// SAFETY: an Mbuf is exclusively owned; moving it to another thread moves
// the ownership (how DPDK apps pass mbufs over rings).
unsafe impl Send for Mbuf {}

impl fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mbuf").field("len", &self.packet_len()).field("port", &self.port()).finish()
    }
}

impl Mbuf {
    #[inline(always)]
    fn m(&self) -> &sys::rte_mbuf {
        // SAFETY: the pointer is valid and uniquely owned by self.
        unsafe { self.0.as_ref() }
    }
    #[inline(always)]
    fn m_mut(&mut self) -> &mut sys::rte_mbuf {
        // SAFETY: as above, and &mut self makes the access exclusive.
        unsafe { self.0.as_mut() }
    }

    /// The first segment's data.
    #[inline]
    pub fn data(&self) -> &[u8] {
        let m = self.m();
        let start = m.buf_addr.cast::<u8>().wrapping_add(usize::from(m.data_off));
        // SAFETY: buf_addr + data_off .. + data_len lies inside the mbuf's
        // buffer, which the mbuf owns.
        unsafe { std::slice::from_raw_parts(start, usize::from(m.data_len)) }
    }

    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let m = self.m_mut();
        let len = usize::from(m.data_len);
        let start = m.buf_addr.cast::<u8>().wrapping_add(usize::from(m.data_off));
        // SAFETY: as in data(); exclusive through &mut self. Mbufs from RX
        // and from alloc are direct with refcnt 1 (nothing here clones).
        unsafe { std::slice::from_raw_parts_mut(start, len) }
    }

    /// Total length over all segments.
    #[inline]
    pub fn packet_len(&self) -> usize {
        self.m().pkt_len as usize
    }

    #[inline]
    pub fn port(&self) -> u16 {
        self.m().port
    }

    #[inline]
    pub fn set_port(&mut self, port: u16) {
        self.m_mut().port = port;
    }

    /// Shortens a single-segment packet to `len` bytes.
    pub fn truncate(&mut self, len: usize) -> bool {
        let m = self.m_mut();
        if m.nb_segs != 1 || len > usize::from(m.data_len) {
            return false;
        }
        m.data_len = len as u16;
        m.pkt_len = len as u32;
        true
    }

    /// Grows the (single-segment) packet by `len` bytes at the end.
    pub fn append(&mut self, len: usize) -> bool {
        let Ok(len) = u16::try_from(len) else { return false };
        // SAFETY: valid mbuf; append checks tailroom and returns NULL when
        // it lacks space.
        !unsafe { sys::lbd_shim_pktmbuf_append(self.0.as_ptr(), len) }.is_null()
    }

    #[inline]
    fn into_raw(self) -> *mut sys::rte_mbuf {
        let p = self.0.as_ptr();
        std::mem::forget(self);
        p
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf (and its chain) exclusively.
        unsafe { sys::lbd_shim_pktmbuf_free(self.0.as_ptr()) }
    }
}

/// A batch of owned mbufs, the unit of every RX, TX and ring operation.
/// Whatever it still holds when dropped is freed in bulk.
pub struct Burst {
    pub(super) pkts: [*mut sys::rte_mbuf; MAX_BURST],
    pub(super) len: usize,
}

// SAFETY: owns its mbufs like Vec<Mbuf> would.
unsafe impl Send for Burst {}

impl fmt::Debug for Burst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Burst").field("len", &self.len).finish()
    }
}

impl Default for Burst {
    fn default() -> Self {
        Burst { pkts: [std::ptr::null_mut(); MAX_BURST], len: 0 }
    }
}

impl Burst {
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `m`; gives it back when full.
    #[inline]
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.len == MAX_BURST {
            return Err(m);
        }
        self.pkts[self.len] = m.into_raw();
        self.len += 1;
        Ok(())
    }

    /// Hands every held mbuf, in order, to `f`, leaving the burst empty.
    #[inline]
    pub fn drain(&mut self, mut f: impl FnMut(Mbuf)) {
        let n = std::mem::take(&mut self.len);
        for i in 0..n {
            // SAFETY: slots below the old len hold owned, valid mbufs; len
            // is already 0, so ownership moves out exactly once.
            f(Mbuf(unsafe { NonNull::new_unchecked(self.pkts[i]) }));
        }
    }

    /// Hands out every held mbuf through an iterator, leaving the burst
    /// empty; what the iterator does not yield is freed when it drops.
    #[inline]
    pub fn drain_iter(&mut self) -> BurstDrain<'_> {
        let n = std::mem::take(&mut self.len);
        BurstDrain { burst: self, next: 0, end: n }
    }

    /// Like [`Self::drain_iter`] for packets another core last touched
    /// (software hand-off): their mbufs and data are in that core's cache.
    /// The iterator asks for packet `i + MBUF_AHEAD`'s mbuf and packet
    /// `i + DATA_AHEAD`'s first data line as it yields packet `i`, so each
    /// transfer overlaps the work on the packets before it. Asking for a
    /// whole burst's lines at once was slower: the later prefetches wait
    /// for miss buffers, and the data prefetches read mbufs not yet there
    /// (benches/RESULTS.md, round two, eighth sitting).
    #[inline]
    pub fn drain_iter_prefetching(&mut self) -> BurstDrainAhead<'_> {
        let n = std::mem::take(&mut self.len);
        for &p in &self.pkts[..n.min(MBUF_AHEAD)] {
            sys::prefetch0_ptr(p);
        }
        for &p in &self.pkts[..n.min(DATA_AHEAD)] {
            // SAFETY: slots below the old len hold owned, valid mbufs, none
            // yielded yet.
            unsafe { prefetch_first_line(p) };
        }
        BurstDrainAhead { inner: BurstDrain { burst: self, next: 0, end: n } }
    }

    /// Asks the CPU for the first data line of every held packet (NICs
    /// write packets by DMA, so their headers are not in cache yet).
    #[inline]
    pub fn prefetch_data(&self) {
        for &p in &self.pkts[..self.len] {
            // SAFETY: the first len slots are owned, valid mbufs.
            unsafe { prefetch_first_line(p) };
        }
    }

    /// Frees everything held, in one call.
    #[inline]
    pub fn free_all(&mut self) {
        if self.len > 0 {
            // SAFETY: the first len slots are owned mbufs; freed once.
            unsafe { sys::rte_pktmbuf_free_bulk(self.pkts.as_mut_ptr(), self.len as u32) };
            self.len = 0;
        }
    }

    /// Forgets the first `n` pointers (ownership passed to DPDK) and moves
    /// the rest to the front.
    pub(super) fn consume_front(&mut self, n: usize) {
        debug_assert!(n <= self.len);
        self.pkts.copy_within(n..self.len, 0);
        self.len -= n;
    }
}

/// How many packets ahead [`Burst::drain_iter_prefetching`] asks for an
/// mbuf, and for its first data line (whose address is in the mbuf, so
/// the mbuf must be there first).
const MBUF_AHEAD: usize = 8;
const DATA_AHEAD: usize = 4;

/// Prefetches the first data line of the packet in mbuf `p`.
///
/// # Safety
///
/// `p` must point to a valid mbuf that the caller owns (not yet handed on
/// or freed) for the duration of the call.
#[inline]
unsafe fn prefetch_first_line(p: *mut sys::rte_mbuf) {
    // SAFETY: the caller guarantees `p` is a valid, owned mbuf; reading
    // it is a plain load.
    let m = unsafe { &*p };
    sys::prefetch0_ptr(m.buf_addr.cast::<u8>().wrapping_add(usize::from(m.data_off)));
}

/// See [`Burst::drain_iter_prefetching`].
pub struct BurstDrainAhead<'a> {
    inner: BurstDrain<'a>,
}

impl Iterator for BurstDrainAhead<'_> {
    type Item = Mbuf;
    #[inline]
    fn next(&mut self) -> Option<Mbuf> {
        let d = &self.inner;
        let i = d.next;
        if i + MBUF_AHEAD < d.end {
            sys::prefetch0_ptr(d.burst.pkts[i + MBUF_AHEAD]);
        }
        if i + DATA_AHEAD < d.end {
            // SAFETY: slot i + DATA_AHEAD is below `end` and after `next`:
            // an owned, valid mbuf not yielded yet.
            unsafe { prefetch_first_line(d.burst.pkts[i + DATA_AHEAD]) };
        }
        self.inner.next()
    }
}

/// See [`Burst::drain_iter`].
pub struct BurstDrain<'a> {
    burst: &'a mut Burst,
    next: usize,
    end: usize,
}

impl Iterator for BurstDrain<'_> {
    type Item = Mbuf;
    #[inline]
    fn next(&mut self) -> Option<Mbuf> {
        if self.next == self.end {
            return None;
        }
        let p = self.burst.pkts[self.next];
        self.next += 1;
        // SAFETY: slots below `end` held owned, valid mbufs when the drain
        // began (the burst's len is already 0); each is yielded once.
        Some(Mbuf(unsafe { NonNull::new_unchecked(p) }))
    }
}

impl Drop for BurstDrain<'_> {
    fn drop(&mut self) {
        let rest = self.end - self.next;
        if rest > 0 {
            // SAFETY: the slots from `next` to `end` are owned mbufs that
            // were never yielded; freed once here.
            unsafe { sys::rte_pktmbuf_free_bulk(self.burst.pkts[self.next..].as_mut_ptr(), rest as u32) };
        }
    }
}

impl Drop for Burst {
    fn drop(&mut self) {
        self.free_all();
    }
}
