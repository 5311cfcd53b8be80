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
    fn match_lanes(tags: &[u32; 8], refs: &[u32; 8], tag: u32, tag_mask: u32, empty: u32) -> u32 {
        sys::match_lanes_u32x8(tags, refs, tag, tag_mask, empty)
    }

    #[inline(always)]
    fn equal_lanes(lanes: &[u32; 8], value: u32) -> u32 {
        sys::equal_lanes_u32x8(lanes, value)
    }

    #[inline(always)]
    fn lane_top_bits(lanes: &[u32; 8]) -> u32 {
        sys::lane_top_bits_u32x8(lanes)
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
        /// buckets whose lanes often hold the tag or the empty mark, with
        /// bits outside the tag mask set or not.
        #[test]
        fn vector_tag_compare_equals_the_plain_one(
            lanes in proptest::array::uniform8((0u32..4, 0u32..4, any::<bool>())),
            tag in 0u32..4,
            tag_mask in prop_oneof![Just(u32::MAX), Just(0x7fff_ffffu32), Just(1u32)],
        ) {
            // Small values, so that hits, empties and both at once are common.
            let tags = lanes.map(|(t, _, high)| t | u32::from(high) << 31);
            let refs = lanes.map(|(_, r, _)| if r == 3 { u32::MAX } else { r });
            prop_assert_eq!(
                DpdkPlacement::match_lanes(&tags, &refs, tag & tag_mask, tag_mask, u32::MAX),
                NoHints::match_lanes(&tags, &refs, tag & tag_mask, tag_mask, u32::MAX)
            );
        }

        /// The vector equality mask answers what the plain one does, for
        /// lanes that often hold the value.
        #[test]
        fn vector_lane_equality_equals_the_plain_one(
            lanes in proptest::array::uniform8(prop_oneof![0u32..3, Just(u32::MAX)]),
            value in prop_oneof![0u32..3, Just(u32::MAX)],
        ) {
            prop_assert_eq!(DpdkPlacement::equal_lanes(&lanes, value), NoHints::equal_lanes(&lanes, value));
        }

        /// The vector top-bit mask answers what the plain one does.
        #[test]
        fn vector_top_bits_equal_the_plain_ones(lanes in proptest::array::uniform8(any::<u32>())) {
            prop_assert_eq!(DpdkPlacement::lane_top_bits(&lanes), NoHints::lane_top_bits(&lanes));
        }
    }

    #[test]
    fn vector_lane_equality_puts_each_lane_on_its_bit() {
        for i in 0..8 {
            let mut lanes = [1u32; 8];
            lanes[i] = u32::MAX;
            assert_eq!(DpdkPlacement::equal_lanes(&lanes, u32::MAX), 1 << i);
        }
    }

    #[test]
    fn vector_top_bits_put_each_lane_on_its_bit() {
        for i in 0..8 {
            let mut lanes = [0x7fff_ffffu32; 8];
            lanes[i] = 1 << 31;
            assert_eq!(DpdkPlacement::lane_top_bits(&lanes), 1 << i);
        }
    }

    #[test]
    fn vector_tag_compare_puts_each_lane_on_its_bit() {
        let mut tags = [0u32; 8];
        let refs = [0u32; 8];
        for i in 0..8 {
            tags[i] = 7;
            assert_eq!(DpdkPlacement::match_lanes(&tags, &refs, 7, u32::MAX, u32::MAX), (1 << (i + 1)) - 1);
        }
        assert_eq!(DpdkPlacement::match_lanes(&tags, &[u32::MAX; 8], 7, u32::MAX, u32::MAX), 0);
        // Bits outside the mask do not count.
        tags[3] |= 1 << 31;
        assert_eq!(DpdkPlacement::match_lanes(&tags, &refs, 7, u32::MAX, u32::MAX), 0xf7);
        assert_eq!(DpdkPlacement::match_lanes(&tags, &refs, 7, 0x7fff_ffff, u32::MAX), 0xff);
    }
}
