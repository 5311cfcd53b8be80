//! The owner-shard function, shared by software and NIC hardware.
//!
//! A NAT session's request (client→VIP) and reply (backend→client) share
//! only the client endpoint, so the worker owning a session is chosen from
//! the client address and port: the source fields of a request, the
//! destination fields of a reply.
//!
//! The hash is Toeplitz, the one RSS NICs compute, over the 6 bytes
//! `client address ‖ client port`, with lbd's key, reduced through a
//! 64-bucket indirection table (`bucket = hash & 63`, `worker = bucket %
//! workers`). A NIC that can hash the source fields alone
//! (`RTE_ETH_RSS_L3_SRC_ONLY | L4_SRC_ONLY`) on the client-facing port, and
//! the destination fields alone on the backend-facing port, programmed with
//! this key and a RETA repeating the buckets, computes exactly this
//! function: packets then arrive at their owner and need no hand-off. Where
//! it cannot (every vdev here), the software hand-off keeps things correct.
//!
//! The key is per instance (`sessions.hash_key`, see [`crate::hashkey`]):
//! with a key everybody knows, anyone can pick client ports that all land
//! on one worker. [`OwnerHash`] holds the tables of an instance's key;
//! [`RSS_KEY`] and the free functions here are the fixed key of tests and
//! tools.

/// The fixed RSS key: Microsoft's reference key, which every RSS NIC accepts
/// (40 bytes, the size the common drivers use).
pub const RSS_KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0, 0xd0, 0xca, 0x2b,
    0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac,
    0x01, 0xfa,
];

/// Indirection buckets; a NIC RETA of any power-of-two size ≥ 64 repeats
/// them (entry `i` holds the owner of bucket `i & 63`).
pub const BUCKETS: usize = 64;

/// Toeplitz hash of `input` under `key` (bit by bit; the reference).
pub const fn toeplitz(key: &[u8; 40], input: &[u8]) -> u32 {
    let mut result = 0u32;
    // The 32-bit window of the key aligned with the current input bit.
    let mut window = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
    let mut next_key_bit = 32;
    let mut i = 0;
    while i < input.len() {
        let mut b = 0;
        while b < 8 {
            if input[i] & (0x80 >> b) != 0 {
                result ^= window;
            }
            let kb = if next_key_bit < 320 { (key[next_key_bit / 8] >> (7 - next_key_bit % 8)) & 1 } else { 0 };
            window = (window << 1) | kb as u32;
            next_key_bit += 1;
            b += 1;
        }
        i += 1;
    }
    result
}

/// Per-byte tables for the 6-byte client endpoint: the hash is the XOR of
/// one table entry per input byte.
struct Tables([[u32; 256]; 6]);

const fn build_tables(key: &[u8; 40]) -> Tables {
    let mut t = [[0u32; 256]; 6];
    let mut pos = 0;
    while pos < 6 {
        let mut v = 0;
        while v < 256 {
            let mut input = [0u8; 6];
            input[pos] = v as u8;
            t[pos][v] = toeplitz(key, &input);
            v += 1;
        }
        pos += 1;
    }
    Tables(t)
}

static TABLES: Tables = build_tables(&RSS_KEY);

impl Tables {
    #[inline(always)]
    fn hash(&self, addr: u32, port: u16) -> u32 {
        let a = addr.to_be_bytes();
        let p = port.to_be_bytes();
        let t = &self.0;
        t[0][usize::from(a[0])]
            ^ t[1][usize::from(a[1])]
            ^ t[2][usize::from(a[2])]
            ^ t[3][usize::from(a[3])]
            ^ t[4][usize::from(p[0])]
            ^ t[5][usize::from(p[1])]
    }
}

/// Toeplitz hash of `address ‖ port` under [`RSS_KEY`].
#[inline]
pub fn client_hash(addr: u32, port: u16) -> u32 {
    TABLES.hash(addr, port)
}

/// The owner-shard function under one instance's key: the same per-byte
/// tables as the fixed key's, built at start instead of at compile time
/// (6 KiB, one copy per worker so each reads its own).
pub struct OwnerHash {
    tables: Box<Tables>,
}

impl OwnerHash {
    pub fn new(key: &[u8; 40]) -> OwnerHash {
        OwnerHash { tables: Box::new(build_tables(key)) }
    }

    /// Toeplitz hash of `address ‖ port` under this key.
    #[inline]
    pub fn client_hash(&self, addr: u32, port: u16) -> u32 {
        self.tables.hash(addr, port)
    }

    /// The worker owning every session of client endpoint (`addr`, `port`).
    #[inline]
    pub fn owner(&self, addr: u32, port: u16, workers: usize) -> usize {
        if workers == 1 {
            return 0;
        }
        bucket_owner(self.client_hash(addr, port) as usize & (BUCKETS - 1), workers)
    }
}

impl std::fmt::Debug for OwnerHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OwnerHash(<redacted>)")
    }
}

/// The worker of bucket `bucket`.
#[inline]
pub fn bucket_owner(bucket: usize, workers: usize) -> usize {
    // The same answer as `%`, without a division per packet for the usual
    // worker counts (2, 4, 8).
    if workers.is_power_of_two() {
        bucket & (workers - 1)
    } else {
        bucket % workers
    }
}

/// The worker owning every session of client endpoint (`addr`, `port`).
#[inline]
pub fn owner(addr: u32, port: u16, workers: usize) -> usize {
    if workers == 1 {
        return 0;
    }
    bucket_owner(client_hash(addr, port) as usize & (BUCKETS - 1), workers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> [u8; 4] {
        s.parse::<std::net::Ipv4Addr>().unwrap().octets()
    }

    /// Microsoft's RSS verification suite (IPv4 and IPv4/TCP), the vectors
    /// NIC vendors and DPDK's own tests check against.
    #[test]
    fn microsoft_verification_vectors() {
        let cases = [
            ("66.9.149.187", 2794u16, "161.142.100.80", 1766u16, 0x323e_8fc2u32, 0x51cc_c178u32),
            ("199.92.111.2", 14230, "65.69.140.83", 4739, 0xd718_262a, 0xc626_b0ea),
            ("24.19.198.95", 12898, "12.22.207.184", 38024, 0xd2d0_a5de, 0x5c2b_394a),
            ("38.27.205.30", 48228, "209.142.163.6", 2217, 0x8298_9176, 0xafc7_327f),
            ("153.39.163.191", 44251, "202.188.127.2", 1303, 0x5d18_09c5, 0x10e8_28a2),
        ];
        for (src, sport, dst, dport, want_ip, want_tcp) in cases {
            let mut input = Vec::new();
            input.extend_from_slice(&ip(src));
            input.extend_from_slice(&ip(dst));
            assert_eq!(toeplitz(&RSS_KEY, &input), want_ip, "{src} -> {dst}");
            input.extend_from_slice(&sport.to_be_bytes());
            input.extend_from_slice(&dport.to_be_bytes());
            assert_eq!(toeplitz(&RSS_KEY, &input), want_tcp, "{src}:{sport} -> {dst}:{dport}");
        }
    }

    #[test]
    fn table_hash_equals_reference() {
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (a, p) = (x as u32, (x >> 32) as u16);
            let mut input = a.to_be_bytes().to_vec();
            input.extend_from_slice(&p.to_be_bytes());
            assert_eq!(client_hash(a, p), toeplitz(&RSS_KEY, &input));
        }
    }

    #[test]
    fn keyed_tables_equal_reference() {
        let mut key = [0u8; 40];
        for (i, b) in key.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(151).wrapping_add(7);
        }
        let h = OwnerHash::new(&key);
        let fixed = OwnerHash::new(&RSS_KEY);
        let mut x = 0x0fed_cba9_8765_4321u64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (a, p) = (x as u32, (x >> 32) as u16);
            let mut input = a.to_be_bytes().to_vec();
            input.extend_from_slice(&p.to_be_bytes());
            assert_eq!(h.client_hash(a, p), toeplitz(&key, &input));
            assert_eq!(fixed.client_hash(a, p), client_hash(a, p));
        }
    }

    #[test]
    fn bucket_owner_is_the_remainder() {
        // The RETA the daemon programs and the hand-off decision must agree
        // for every worker count, powers of two or not.
        for workers in 1..=64 {
            for bucket in 0..BUCKETS {
                assert_eq!(bucket_owner(bucket, workers), bucket % workers, "bucket {bucket}, {workers} workers");
            }
        }
    }

    #[test]
    fn owners_spread_over_workers() {
        for workers in 1..=8 {
            let mut counts = vec![0u32; workers];
            for port in 0..12_000u16 {
                let s = owner(0x0a00_0002, 1024 + port, workers);
                assert!(s < workers);
                counts[s] += 1;
            }
            let expect = 12_000 / workers as u32;
            for c in &counts {
                assert!(*c > expect * 7 / 10 && *c < expect * 13 / 10, "workers {workers}: {counts:?}");
            }
        }
    }
}
