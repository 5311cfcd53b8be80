//! What the packet core needs from the machine and cannot do in safe Rust:
//! cache prefetch hints, huge-page advice for its large tables, and the
//! vector compare of a hash bucket's tags.
//!
//! The core owns this interface and the DPDK layer implements it (real
//! prefetch instructions, `madvise(MADV_HUGEPAGE)`); tests and tools use
//! [`NoHints`]. Both are hints: results are the same either way, only the
//! speed on large tables differs. A [`Packet`](crate::dataplane::Packet)
//! type names its placement, so the type that brings DPDK's packets also
//! brings DPDK's hints, and everything is resolved at compile time (no
//! indirect call in the burst loops).

/// Cache and page hints for the core's tables.
pub trait Placement: 'static {
    /// Asks the CPU to load the cache line holding `value` into all
    /// levels. Never faults, never changes anything observable.
    fn prefetch<T>(value: &T);
    /// Advises that the `len` bytes at address `addr`, a fresh allocation
    /// not yet touched, be backed by huge pages. May do nothing.
    fn advise_huge_pages(addr: usize, len: usize);
    /// The lanes whose tag, the bits of `tags` under `tag_mask`, is
    /// `tag` and whose lane of `refs` is not `empty`, as a bit mask (bit
    /// `i` for lane `i`): a bucket's tag compare, done once or twice per
    /// session lookup. Any implementation must give exactly this answer;
    /// this one is plain Rust, which LLVM vectorises only in part.
    #[inline(always)]
    fn match_lanes(tags: &[u32; 8], refs: &[u32; 8], tag: u32, tag_mask: u32, empty: u32) -> u32 {
        let mut m = 0u32;
        for i in 0..8 {
            // `&`, not `&&`: no branch per lane.
            m |= u32::from((tags[i] & tag_mask == tag) & (refs[i] != empty)) << i;
        }
        m
    }

    /// The lanes equal to `value`, as a bit mask (bit `i` for lane `i`):
    /// a bucket's free ways, or the way holding an entry. Any
    /// implementation must give exactly this answer.
    #[inline(always)]
    fn equal_lanes(lanes: &[u32; 8], value: u32) -> u32 {
        let mut m = 0u32;
        for (i, l) in lanes.iter().enumerate() {
            m |= u32::from(*l == value) << i;
        }
        m
    }

    /// The top bit of each lane, as a bit mask (bit `i` for lane `i`).
    /// Any implementation must give exactly this answer.
    #[inline(always)]
    fn lane_top_bits(lanes: &[u32; 8]) -> u32 {
        let mut m = 0u32;
        for (i, l) in lanes.iter().enumerate() {
            m |= (l >> 31) << i;
        }
        m
    }
}

/// No hints at all: for tests and tools.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHints;

impl Placement for NoHints {
    #[inline(always)]
    fn prefetch<T>(_: &T) {}
    fn advise_huge_pages(_: usize, _: usize) {}
}

/// An empty `Vec` with room for `n` elements, advised to huge pages by `M`.
/// Large tables read at random (the session index and slab) otherwise
/// spend much of each lookup on TLB misses. Fill it before use.
pub fn table_vec<T, M: Placement>(n: usize) -> Vec<T> {
    let v: Vec<T> = Vec::with_capacity(n);
    M::advise_huge_pages(v.as_ptr() as usize, n.saturating_mul(std::mem::size_of::<T>()));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_vec_has_room_and_no_elements() {
        let v: Vec<u64> = table_vec::<u64, NoHints>(1000);
        assert!(v.is_empty());
        assert!(v.capacity() >= 1000);
    }
}
