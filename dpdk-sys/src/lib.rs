//! Raw bindings to DPDK 22.11 (`libdpdk-dev`) and to the small C shim that
//! exposes its `static inline` burst functions.
//!
//! Nothing here is safe to call directly from packet code: `engine::dpdk` is
//! the one safe layer over it.

#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case)]
#![allow(clippy::all, clippy::undocumented_unsafe_blocks, clippy::multiple_unsafe_ops_per_block)]
#![allow(unsafe_op_in_unsafe_fn, rustdoc::all)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

/// The DPDK version the bindings were generated against (pkg-config).
pub const DPDK_PKG_VERSION: &str = env!("DPDK_PKG_VERSION");

// The engine reads these mbuf fields directly (no FFI call per packet);
// fail the build if a DPDK update moves them.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<rte_mbuf>() == 128);
    assert!(offset_of!(rte_mbuf, buf_addr) == 0);
    assert!(offset_of!(rte_mbuf, data_off) == 16);
    assert!(offset_of!(rte_mbuf, nb_segs) == 20);
    assert!(offset_of!(rte_mbuf, port) == 22);
    assert!(offset_of!(rte_mbuf, pkt_len) == 36);
    assert!(offset_of!(rte_mbuf, data_len) == 40);
    assert!(offset_of!(rte_mbuf, buf_len) == 54);
};

/// Rust form of `rte_prefetch0`: hints the CPU to pull the cache line of
/// `p` into all cache levels. Safe: a prefetch never faults and has no
/// architectural effect, whatever address it names.
#[inline(always)]
pub fn prefetch0<T>(p: &T) {
    prefetch0_ptr(p as *const T);
}

/// The lanes whose bits of `tags` under `tag_mask` equal `tag` and whose
/// lane of `refs` is not `empty`, as a bit mask (bit `i` for lane `i`): the
/// tag compare of an 8-way hash bucket in four vector compares. Safe Rust
/// cannot name SSE2 without `unsafe`, and LLVM vectorises the scalar form
/// of this compare only in part (about 45 instructions a compare, two
/// compares per lookup).
#[inline(always)]
pub fn match_lanes_u32x8(tags: &[u32; 8], refs: &[u32; 8], tag: u32, tag_mask: u32, empty: u32) -> u32 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the function only needs SSE2, which is part of x86-64: every
    // CPU this code can run on has it.
    unsafe {
        match_lanes_sse2(tags, refs, tag, tag_mask, empty)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut m = 0u32;
        for i in 0..8 {
            m |= u32::from((tags[i] & tag_mask == tag) & (refs[i] != empty)) << i;
        }
        m
    }
}

/// [`match_lanes_u32x8`] in SSE2: two unaligned loads of each array, two
/// masks, four compares, two mask moves.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
#[inline]
fn match_lanes_sse2(tags: &[u32; 8], refs: &[u32; 8], tag: u32, tag_mask: u32, empty: u32) -> u32 {
    use core::arch::x86_64::*;
    let want = _mm_set1_epi32(tag as i32);
    let bits = _mm_set1_epi32(tag_mask as i32);
    let none = _mm_set1_epi32(empty as i32);
    let (t, r) = (tags.as_chunks::<4>().0, refs.as_chunks::<4>().0);
    let lo_tags = _mm_cmpeq_epi32(_mm_and_si128(load4(&t[0]), bits), want);
    let hi_tags = _mm_cmpeq_epi32(_mm_and_si128(load4(&t[1]), bits), want);
    let lo = _mm_andnot_si128(_mm_cmpeq_epi32(load4(&r[0]), none), lo_tags);
    let hi = _mm_andnot_si128(_mm_cmpeq_epi32(load4(&r[1]), none), hi_tags);
    mask8(lo, hi)
}

/// The lanes equal to `value`, as a bit mask (bit `i` for lane `i`): two
/// compares where the scalar search is a loop whose trip count, and so
/// its last branch, is different every time.
#[inline(always)]
pub fn equal_lanes_u32x8(lanes: &[u32; 8], value: u32) -> u32 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as for `match_lanes_u32x8`: SSE2 is part of x86-64.
    unsafe {
        equal_lanes_sse2(lanes, value)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut m = 0u32;
        for (i, l) in lanes.iter().enumerate() {
            m |= u32::from(*l == value) << i;
        }
        m
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
#[inline]
fn equal_lanes_sse2(lanes: &[u32; 8], value: u32) -> u32 {
    use core::arch::x86_64::*;
    let v = _mm_set1_epi32(value as i32);
    let l = lanes.as_chunks::<4>().0;
    let lo = _mm_cmpeq_epi32(load4(&l[0]), v);
    let hi = _mm_cmpeq_epi32(load4(&l[1]), v);
    mask8(lo, hi)
}

/// The top bit of each of eight lanes, as a bit mask (bit `i` for lane
/// `i`): two loads and two mask moves, where the scalar form takes about
/// twenty instructions.
#[inline(always)]
pub fn lane_top_bits_u32x8(lanes: &[u32; 8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as for `match_lanes_u32x8`: SSE2 is part of x86-64.
    unsafe {
        lane_top_bits_sse2(lanes)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut m = 0u32;
        for (i, l) in lanes.iter().enumerate() {
            m |= (l >> 31) << i;
        }
        m
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
#[inline]
fn lane_top_bits_sse2(lanes: &[u32; 8]) -> u32 {
    let l = lanes.as_chunks::<4>().0;
    mask8(load4(&l[0]), load4(&l[1]))
}

/// The top bits of the four lanes of `lo`, then of `hi`, as bits 0-7.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
#[inline]
fn mask8(lo: core::arch::x86_64::__m128i, hi: core::arch::x86_64::__m128i) -> u32 {
    use core::arch::x86_64::*;
    (_mm_movemask_ps(_mm_castsi128_ps(lo)) | _mm_movemask_ps(_mm_castsi128_ps(hi)) << 4) as u32
}

/// Four lanes in one load. (Built with `_mm_set_epi32` from the elements
/// instead, LLVM loaded each vector three times and shuffled the pieces
/// together: 16 instructions a packet.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
#[inline]
fn load4(q: &[u32; 4]) -> core::arch::x86_64::__m128i {
    // SAFETY: `q` is 16 readable bytes for the duration of the call, and an
    // unaligned load (`loadu`) needs no alignment.
    unsafe { core::arch::x86_64::_mm_loadu_si128(q.as_ptr().cast()) }
}

/// [`prefetch0`] for an address held as a raw pointer (an mbuf, packet
/// data): the pointer is never dereferenced, so any value is fine.
#[inline(always)]
pub fn prefetch0_ptr<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` only needs SSE, which every x86-64 CPU has; it
    // reads nothing and cannot fault.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
