//! Flow keys, the flow hash and the owner-shard function.
//!
//! [`FlowKey::hash`] is fixed (no random seed) on purpose: Maglev picks a
//! backend from it, and every `lbd` instance behind the same ECMP group, and
//! the same instance after a restart, must pick the same backend for a flow.
//! The session table places keys by [`FlowKey::keyed_hash`] instead, under a
//! per-instance key (see [`crate::hashkey`]), so that nobody who knows the
//! fixed hash can aim flows at one bucket.

/// A unidirectional 5-tuple as it appears in a packet, packed in two
/// words (addresses; ports and protocol) so that building, comparing and
/// hashing it stays in registers.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Default)]
pub struct FlowKey {
    addrs: u64,
    ports: u64,
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
    #[inline(always)]
    pub fn new(src: u32, dst: u32, sport: u16, dport: u16, proto: u8) -> FlowKey {
        FlowKey {
            addrs: (u64::from(src) << 32) | u64::from(dst),
            ports: (u64::from(sport) << 48) | (u64::from(dport) << 32) | u64::from(proto),
        }
    }
    #[inline(always)]
    pub fn src(&self) -> u32 {
        (self.addrs >> 32) as u32
    }
    #[inline(always)]
    pub fn dst(&self) -> u32 {
        self.addrs as u32
    }
    #[inline(always)]
    pub fn sport(&self) -> u16 {
        (self.ports >> 48) as u16
    }
    #[inline(always)]
    pub fn dport(&self) -> u16 {
        (self.ports >> 32) as u16
    }
    #[inline(always)]
    pub fn proto(&self) -> u8 {
        self.ports as u8
    }
    #[inline]
    pub fn hash(&self) -> u64 {
        self.keyed_hash(&SessionHashKey::FIXED)
    }
    /// The same mix as [`Self::hash`] with `key`'s words in place of its
    /// constants: as cheap, and unpredictable to whoever lacks the key.
    #[inline(always)]
    pub fn keyed_hash(&self, key: &SessionHashKey) -> u64 {
        let [k0, k1, k2] = key.0;
        fold_mul(fold_mul(self.addrs ^ k0, self.ports ^ k1), k2)
    }
    /// The hash of the client (source) address alone, fixed like
    /// [`Self::hash`]: `hash: source_ip` and `source_hash` place a client
    /// by it.
    #[inline]
    pub fn source_hash(&self) -> u64 {
        fold_mul(fold_mul(self.addrs & SOURCE ^ K0, K1), K2)
    }
    /// The hash of the client address and the destination (listener)
    /// port: `hash: source_ip_and_destination_port`.
    #[inline]
    pub fn source_and_destination_port_hash(&self) -> u64 {
        fold_mul(fold_mul(self.addrs & SOURCE ^ K0, self.ports & DESTINATION_PORT ^ K1), K2)
    }
}

/// The key of the session table's bucket hash ([`FlowKey::keyed_hash`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SessionHashKey(pub [u64; 3]);

impl SessionHashKey {
    /// The constants of the fixed hash: what every instance used before
    /// keys, and what tables without a key of their own (tests, tools) use.
    pub const FIXED: SessionHashKey = SessionHashKey([K0, K1, K2]);
}

impl std::fmt::Debug for SessionHashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionHashKey(<redacted>)")
    }
}

/// The source address in `FlowKey::addrs`, the destination port in
/// `FlowKey::ports`.
const SOURCE: u64 = 0xffff_ffff << 32;
const DESTINATION_PORT: u64 = 0xffff << 32;

/// The worker that owns every session of the client endpoint
/// (`ip`, `port`): source fields of a request, destination fields of a
/// reply. See [`crate::rss`] for why this is a Toeplitz hash. Under the
/// fixed key, for tests and tools that predict owners: lbd's workers use
/// the instance's key (`crate::rss::OwnerHash`), which this matches only
/// where `sessions.hash_key` is the fixed key.
#[inline]
pub fn owner_shard(ip: u32, port: u16, workers: usize) -> usize {
    crate::rss::owner(ip, port, workers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_every_field() {
        let k = FlowKey::new(1, 2, 3, 4, 6);
        assert_eq!((k.src(), k.dst(), k.sport(), k.dport(), k.proto()), (1, 2, 3, 4, 6));
        let h = k.hash();
        assert_ne!(h, FlowKey::new(9, 2, 3, 4, 6).hash());
        assert_ne!(h, FlowKey::new(1, 9, 3, 4, 6).hash());
        assert_ne!(h, FlowKey::new(1, 2, 9, 4, 6).hash());
        assert_ne!(h, FlowKey::new(1, 2, 3, 9, 6).hash());
        assert_ne!(h, FlowKey::new(1, 2, 3, 4, 17).hash());
        // Fixed across runs and builds: Maglev consistency depends on it
        // (tests/golden/lbmodel.py computes the same value).
        assert_eq!(h, 0x662b_210d_fc27_6e65);
    }

    #[test]
    fn client_hashes_depend_on_their_fields_only() {
        let k = FlowKey::new(1, 2, 3, 4, 6);
        // Other client ports, VIPs and protocols: the same source hash.
        for other in [FlowKey::new(1, 9, 3, 4, 6), FlowKey::new(1, 2, 9, 9, 17)] {
            assert_eq!(k.source_hash(), other.source_hash());
        }
        assert_ne!(k.source_hash(), FlowKey::new(9, 2, 3, 4, 6).source_hash());
        let h = k.source_and_destination_port_hash();
        assert_eq!(h, FlowKey::new(1, 9, 9, 4, 17).source_and_destination_port_hash());
        assert_ne!(h, FlowKey::new(9, 2, 3, 4, 6).source_and_destination_port_hash());
        assert_ne!(h, FlowKey::new(1, 2, 3, 9, 6).source_and_destination_port_hash());
        // Fixed across runs and builds, like the five-tuple hash.
        assert_eq!((k.source_hash(), h), (0xb4c6_e737_b246_3d38, 0x4f8a_b4e4_0747_84a2));
    }
}
