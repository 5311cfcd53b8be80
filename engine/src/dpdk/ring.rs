//! Single-producer single-consumer mbuf rings between workers.
use super::eal::{Eal, EalHandle};
use super::mbuf::{Burst, MAX_BURST};
use super::mempool::Mempool;
use super::{rte_errno, strerror, sys, DpdkError};
use std::ffi::CString;
use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;

struct RingInner {
    ptr: NonNull<sys::rte_ring>,
    /// The pool of the mbufs the ring may hold: freed into it on drop.
    _pool: Arc<Mempool>,
    /// Ring memory is EAL memory.
    _eal: EalHandle,
}

// SAFETY: the ring is designed for one producer and one consumer thread;
// the Producer/Consumer split below enforces that.
unsafe impl Send for RingInner {}
// SAFETY: as above.
unsafe impl Sync for RingInner {}

impl Drop for RingInner {
    fn drop(&mut self) {
        let mut b = Burst::default();
        loop {
            // SAFETY: both ends and every monitor are gone (this is the
            // last Arc); no thread touches the ring concurrently. The mbufs
            // go back to `_pool`, which is still held.
            let n = unsafe {
                sys::lbd_shim_ring_dequeue_burst(self.ptr.as_ptr(), b.pkts.as_mut_ptr().cast(), MAX_BURST as u32)
            };
            if n == 0 {
                break;
            }
            b.len = n as usize;
            b.free_all();
        }
        // SAFETY: created by rte_ring_create, freed once.
        unsafe { sys::rte_ring_free(self.ptr.as_ptr()) }
    }
}

/// The sending end of a single-producer single-consumer mbuf ring.
pub struct RingProducer(Arc<RingInner>);
/// The receiving end.
pub struct RingConsumer(Arc<RingInner>);

impl fmt::Debug for RingProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RingProducer")
    }
}
impl fmt::Debug for RingConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RingConsumer")
    }
}

/// Creates an SP/SC ring of `size` (a power of two) slots for mbufs of
/// `pool`.
pub fn spsc_ring(
    eal: &Eal,
    pool: &Arc<Mempool>,
    name: &str,
    size: u32,
    socket: i32,
) -> Result<(RingProducer, RingConsumer), DpdkError> {
    let c = CString::new(name).map_err(|_| DpdkError("bad ring name".into()))?;
    // SAFETY: returns a constant.
    let sp = unsafe { sys::lbd_shim_ring_f_sp_enq() };
    // SAFETY: returns a constant.
    let sc = unsafe { sys::lbd_shim_ring_f_sc_deq() };
    let flags = sp | sc;
    // SAFETY: valid name; EAL initialised.
    let p = unsafe { sys::rte_ring_create(c.as_ptr(), size, socket, flags) };
    let ptr =
        NonNull::new(p).ok_or_else(|| DpdkError(format!("cannot create ring {name}: {}", strerror(rte_errno()))))?;
    let inner = Arc::new(RingInner { ptr, _pool: Arc::clone(pool), _eal: eal.handle() });
    Ok((RingProducer(Arc::clone(&inner)), RingConsumer(inner)))
}

impl RingProducer {
    /// Slots free for the producer (one read of the consumer's tail).
    #[inline]
    pub fn free_count(&self) -> u32 {
        // SAFETY: reading a valid ring's head and tail is safe from any
        // thread.
        unsafe { sys::lbd_shim_ring_free_count(self.0.ptr.as_ptr()) }
    }

    /// Moves as many mbufs of `b` as fit into the ring; the rest stay.
    #[inline]
    pub fn enqueue(&mut self, b: &mut Burst) -> usize {
        if b.len == 0 {
            return 0;
        }
        // SAFETY: single producer (this unique handle); the first len slots
        // are owned mbufs whose ownership moves into the ring.
        let n = unsafe { sys::lbd_shim_ring_enqueue_burst(self.0.ptr.as_ptr(), b.pkts.as_ptr().cast(), b.len as u32) }
            as usize;
        b.consume_front(n);
        n
    }
}

/// A read-only view of a ring's fill level, for the metrics.
#[derive(Clone)]
pub struct RingMonitor(Arc<RingInner>);

impl fmt::Debug for RingMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RingMonitor")
    }
}

impl RingMonitor {
    pub fn count(&self) -> u32 {
        // SAFETY: reading a valid ring's head and tail is safe from any
        // thread.
        unsafe { sys::lbd_shim_ring_count(self.0.ptr.as_ptr()) }
    }
}

impl RingConsumer {
    pub fn monitor(&self) -> RingMonitor {
        RingMonitor(Arc::clone(&self.0))
    }

    /// Takes up to `max` mbufs from the ring into `b`.
    #[inline]
    pub fn dequeue(&mut self, b: &mut Burst, max: usize) -> usize {
        let room = (MAX_BURST - b.len).min(max);
        // SAFETY: single consumer; the array has `room` free slots, and the
        // mbufs' ownership moves out of the ring into the burst.
        let n = unsafe {
            sys::lbd_shim_ring_dequeue_burst(self.0.ptr.as_ptr(), b.pkts[b.len..].as_mut_ptr().cast(), room as u32)
        } as usize;
        b.len += n;
        n
    }
}
