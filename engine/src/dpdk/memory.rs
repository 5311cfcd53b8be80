//! The packet core's memory hints on this machine
//! ([`lbcore::memory::Placement`]): real prefetch instructions, and
//! transparent huge pages for its large tables.

use dpdk_sys as sys;

/// A 2 MB huge page.
const HUGE_PAGE: usize = 2 << 20;

/// Real prefetches and huge-page advice: the session index and slab are
/// read at random and otherwise spend much of each lookup on TLB misses.
#[derive(Debug, Clone, Copy, Default)]
pub struct DpdkPlacement;

impl lbcore::memory::Placement for DpdkPlacement {
    #[inline(always)]
    fn prefetch<T>(value: &T) {
        sys::prefetch0(value);
    }

    fn advise_huge_pages(addr: usize, len: usize) {
        if len < HUGE_PAGE {
            return;
        }
        let first = (addr + HUGE_PAGE - 1) & !(HUGE_PAGE - 1);
        let end = (addr + len) & !(HUGE_PAGE - 1);
        if end > first {
            // SAFETY: madvise(MADV_HUGEPAGE) changes no contents and no
            // mapping's validity, whatever the range (it fails harmlessly on
            // unmapped ranges or where THP is off); the caller's range is
            // its own fresh allocation.
            unsafe {
                libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
            }
        }
    }
}
