//! A pool of packet buffers.
use super::eal::{Eal, EalHandle};
use super::mbuf::Mbuf;
use super::{rte_errno, strerror, sys, DpdkError};
use crate::log::log_line;
use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::Arc;

/// A pool of packet buffers, shared as `Arc<Mempool>` by everything that
/// can hold one of its mbufs (ports, queues, rings, workers).
#[derive(Debug)]
pub struct Mempool {
    ptr: NonNull<sys::rte_mempool>,
    eal: EalHandle,
}

// SAFETY: mempool get/put are thread-safe (the default ring_mp_mc ops, with
// per-lcore caches touched only by their own lcore).
unsafe impl Send for Mempool {}
// SAFETY: as above; every method takes &self and is thread-safe in DPDK.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// `rte_pktmbuf_pool_create` of `mbufs` default-sized buffers with a
    /// per-lcore cache of `cache`.
    pub fn new(eal: &Eal, name: &str, mbufs: u32, cache: u32, socket: i32) -> Result<Arc<Mempool>, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError("bad mempool name".into()))?;
        // SAFETY: valid name; `eal` proves the EAL is initialised.
        let p = unsafe {
            sys::rte_pktmbuf_pool_create(cname.as_ptr(), mbufs, cache, 0, sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16, socket)
        };
        NonNull::new(p)
            .map(|ptr| Arc::new(Mempool { ptr, eal: eal.handle() }))
            .ok_or_else(|| DpdkError(format!("cannot create mempool of {mbufs} mbufs: {}", strerror(rte_errno()))))
    }

    /// One zero-length mbuf, or `None` when the pool is empty.
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: the pool pointer is valid for self's lifetime.
        NonNull::new(unsafe { sys::lbd_shim_pktmbuf_alloc(self.ptr.as_ptr()) }).map(Mbuf)
    }

    pub fn available(&self) -> u32 {
        // SAFETY: valid pool.
        unsafe { sys::rte_mempool_avail_count(self.ptr.as_ptr()) }
    }

    pub fn in_use(&self) -> u32 {
        // SAFETY: valid pool.
        unsafe { sys::lbd_shim_mempool_in_use(self.ptr.as_ptr()) }
    }

    pub(super) fn raw(&self) -> *mut sys::rte_mempool {
        self.ptr.as_ptr()
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        let out = self.in_use();
        if out > 0 {
            // An Mbuf carries no reference to its pool (see `mbuf`): one
            // still alive would write into freed memory when it drops. Leak
            // the pool instead, and with it a hold on the EAL, so that the
            // memory stays mapped for as long as the process runs.
            log_line!("lbd: {out} mbuf(s) still out when their pool was released: the pool is leaked");
            std::mem::forget(self.eal.clone());
            return;
        }
        // SAFETY: no mbuf of this pool is out (checked above) and nothing
        // else holds the pool (this is the last Arc), so nothing can use it.
        unsafe { sys::rte_mempool_free(self.ptr.as_ptr()) }
    }
}
