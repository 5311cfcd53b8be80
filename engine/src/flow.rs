//! Flow keys, the flow hash and the owner-shard function.
//!
//! The hash is fixed (no random seed) on purpose: Maglev picks a backend
//! from it, and every `lbd` instance behind the same ECMP group, and the same
//! instance after a restart, must pick the same backend for a flow.

/// A unidirectional 5-tuple as it appears in a packet.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Default)]
pub struct FlowKey {
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

const K0: u64 = 0x9e37_79b9_7f4a_7c15;
const K1: u64 = 0xc2b2_ae3d_27d4_eb4f;
const K2: u64 = 0x1656_67b1_9e37_79f9;

/// 64x64→128 multiply folded to 64 bits: the mixing step of wyhash-style
/// hashes, two instructions on x86-64.
#[inline(always)]
pub fn fold_mul(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

impl FlowKey {
    #[inline]
    pub fn hash(&self) -> u64 {
        let a = (u64::from(self.src) << 32) | u64::from(self.dst);
        let b = (u64::from(self.sport) << 48) | (u64::from(self.dport) << 32) | u64::from(self.proto);
        fold_mul(fold_mul(a ^ K0, b ^ K1), K2)
    }
}

/// The worker that owns every session of the client endpoint
/// (`ip`, `port`): source fields of a request, destination fields of a
/// reply. See [`crate::rss`] for why this is a Toeplitz hash.
#[inline]
pub fn owner_shard(ip: u32, port: u16, workers: usize) -> usize {
    crate::rss::owner(ip, port, workers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_every_field() {
        let k = FlowKey { src: 1, dst: 2, sport: 3, dport: 4, proto: 6 };
        let h = k.hash();
        assert_ne!(h, FlowKey { src: 9, ..k }.hash());
        assert_ne!(h, FlowKey { dst: 9, ..k }.hash());
        assert_ne!(h, FlowKey { sport: 9, ..k }.hash());
        assert_ne!(h, FlowKey { dport: 9, ..k }.hash());
        assert_ne!(h, FlowKey { proto: 17, ..k }.hash());
        // Fixed across runs and builds: Maglev consistency depends on it.
        assert_eq!(h, FlowKey { src: 1, dst: 2, sport: 3, dport: 4, proto: 6 }.hash());
    }
}
