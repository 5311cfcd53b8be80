//! Support shared by the core's unit tests, the integration tests and the
//! benchmarks: code that is the same wherever a test needs it, kept here
//! once instead of copied into each.

use crate::dataplane::Packet;
use crate::ids::PortIndex;

/// Marsaglia's xorshift64 (shifts 13, 7, 17): a reproducible sequence from
/// a seed, with no dependency. For generating test inputs; not random
/// enough for anything an attacker sees.
#[derive(Debug, Clone)]
pub struct Xorshift(u64);

impl Xorshift {
    /// A generator starting from `seed`. Zero is xorshift's fixed point
    /// (the sequence would be all zeros), so it panics on it.
    pub fn new(seed: u64) -> Self {
        assert_ne!(seed, 0, "xorshift seed 0 only ever yields 0");
        Self(seed)
    }

    /// The next value of the sequence.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// The next value reduced below `n` (> 0), by the modulo: a small bias
    /// that tests do not mind.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// [`below`](Self::below) for an index or length of in-memory things.
    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// One of `xs` (not empty).
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.index(xs.len())]
    }
}

/// A packet as a byte vector, on port `port`: what the core's tests and
/// the fuzz harness feed the data plane.
#[derive(Debug, Clone)]
pub struct VecPacket {
    pub data: Vec<u8>,
    pub port: u16,
}

impl Packet for VecPacket {
    fn data(&self) -> &[u8] {
        &self.data
    }
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }
    fn packet_len(&self) -> usize {
        self.data.len()
    }
    fn port(&self) -> PortIndex {
        PortIndex(self.port)
    }
    fn truncate(&mut self, len: usize) -> bool {
        self.data.truncate(len);
        true
    }
    type Placement = crate::memory::NoHints;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sequence the tests' fixed seeds rely on: the first values of
    /// xorshift64 from seed 1.
    #[test]
    fn sequence_is_xorshift64() {
        let mut r = Xorshift::new(1);
        assert_eq!(r.next_u64(), 0x4082_2041);
        assert_eq!(r.next_u64(), 0x1000_4106_0c01_1441);
    }
}
