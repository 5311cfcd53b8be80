//! The order in which half-open TCP sessions arrived, so that a SYN flood
//! evicts the oldest of them and never an established session.
//!
//! A bounded ring of session slots, oldest first. Entries are not removed
//! when their session completes the handshake, closes or expires (that
//! would cost a search per state change); whoever pops an entry checks
//! that the slot still holds a half-open session and skips it otherwise.
//! A slot freed and reused by a younger half-open session is then taken
//! for the older one: eviction is oldest first up to that approximation.
//! When the ring is full the oldest entry is overwritten; a half-open
//! session that loses its entry can no longer be evicted and ends by its
//! timeout, as every session does.

use crate::memory::{table_vec, Placement};

pub struct SlotRing {
    slots: Box<[u32]>,
    head: usize,
    len: usize,
}

impl SlotRing {
    /// A ring for `capacity` entries (at least one), reserved up front.
    pub fn new<M: Placement>(capacity: usize) -> SlotRing {
        let capacity = capacity.max(1);
        let mut v = table_vec::<u32, M>(capacity);
        v.resize(capacity, 0);
        SlotRing { slots: v.into_boxed_slice(), head: 0, len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The position `i` places after the head, for `i` below the
    /// capacity. A compare and subtract: the ring's capacity is the
    /// table's, not a power of two, and `%` by it is a division (several
    /// per new flow: a push, a pop and the eviction hints' peeks).
    #[inline(always)]
    fn at(&self, i: usize) -> usize {
        let p = self.head + i;
        if p >= self.slots.len() {
            p - self.slots.len()
        } else {
            p
        }
    }

    /// Appends `slot` as the youngest entry, overwriting the oldest when
    /// the ring is full.
    #[inline]
    pub fn push(&mut self, slot: u32) {
        if self.len == self.slots.len() {
            self.head = self.at(1);
            self.len -= 1;
        }
        let p = self.at(self.len);
        self.slots[p] = slot;
        self.len += 1;
    }

    /// The entry `i` places after the oldest, if the ring holds that many.
    #[inline]
    pub fn peek(&self, i: usize) -> Option<u32> {
        (i < self.len).then(|| self.slots[self.at(i)])
    }

    /// Takes the oldest entry.
    #[inline]
    pub fn pop(&mut self) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        let slot = self.slots[self.head];
        self.head = self.at(1);
        self.len -= 1;
        Some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::NoHints;

    #[test]
    fn oldest_first_and_overwrites_the_oldest_when_full() {
        let mut r = SlotRing::new::<NoHints>(3);
        assert_eq!(r.pop(), None);
        for s in [1, 2, 3] {
            r.push(s);
        }
        assert_eq!(r.pop(), Some(1));
        r.push(4);
        r.push(5);
        assert_eq!(r.len(), 3);
        assert_eq!((r.peek(0), r.peek(2), r.peek(3)), (Some(3), Some(5), None));
        assert_eq!((r.pop(), r.pop(), r.pop(), r.pop()), (Some(3), Some(4), Some(5), None));
        assert!(r.is_empty());
    }

    /// Against a VecDeque bounded the same way, through many wraps of
    /// rings of several sizes (one included).
    #[test]
    fn matches_a_bounded_deque() {
        let mut x = crate::testing::Xorshift::new(7);
        for cap in [1, 2, 3, 5, 64] {
            let mut r = SlotRing::new::<NoHints>(cap);
            let mut d = std::collections::VecDeque::new();
            for n in 0..10_000u32 {
                if x.below(3) == 0 {
                    assert_eq!(r.pop(), d.pop_front(), "cap {cap} step {n}");
                } else {
                    r.push(n);
                    if d.len() == cap {
                        d.pop_front();
                    }
                    d.push_back(n);
                }
                assert_eq!(r.len(), d.len());
                for i in 0..=cap {
                    assert_eq!(r.peek(i), d.get(i).copied(), "cap {cap} step {n} peek {i}");
                }
            }
        }
    }
}
