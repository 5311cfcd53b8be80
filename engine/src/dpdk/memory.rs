//! The packet core's memory hints on this machine
//! ([`lbcore::memory::Placement`]): real prefetch instructions,
//! transparent huge pages for its large tables, and SSE2 for the session
//! index's tag compare.

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

    #[inline(always)]
    fn match_lanes(tags: &[u32; 8], refs: &[u32; 8], tag: u32, empty: u32) -> u32 {
        sys::match_lanes_u32x8(tags, refs, tag, empty)
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

#[cfg(test)]
mod tests {
    use super::DpdkPlacement;
    use lbcore::memory::{NoHints, Placement};
    use proptest::prelude::*;

    proptest! {
        /// The vector compare answers what the core's plain one does, for
        /// buckets whose lanes often hold the tag or the empty mark.
        #[test]
        fn vector_tag_compare_equals_the_plain_one(
            lanes in proptest::array::uniform8((0u32..4, 0u32..4)),
            tag in 0u32..4,
        ) {
            // Small values, so that hits, empties and both at once are common.
            let tags = lanes.map(|(t, _)| t);
            let refs = lanes.map(|(_, r)| if r == 3 { u32::MAX } else { r });
            prop_assert_eq!(
                DpdkPlacement::match_lanes(&tags, &refs, tag, u32::MAX),
                NoHints::match_lanes(&tags, &refs, tag, u32::MAX)
            );
        }
    }

    #[test]
    fn vector_tag_compare_puts_each_lane_on_its_bit() {
        let mut tags = [0u32; 8];
        let refs = [0u32; 8];
        for i in 0..8 {
            tags[i] = 7;
            assert_eq!(DpdkPlacement::match_lanes(&tags, &refs, 7, u32::MAX), (1 << (i + 1)) - 1);
        }
        assert_eq!(DpdkPlacement::match_lanes(&tags, &[u32::MAX; 8], 7, u32::MAX), 0);
    }
}
