//! Per-instance hash keys (`sessions.hash_key`).
//!
//! Two hashes decide where a flow's state lives: the session table's bucket
//! hash and the owner-shard (RSS) hash. With fixed keys, anyone who has read
//! the source can compute both, and pick flows that all land in one bucket
//! pair (so the table refuses new sessions as `session_table_full` long
//! before it is full) or on one worker. Each instance therefore keys both:
//! with a key drawn from the OS at start (`random`, the default), or with a
//! configured one where several instances or a NIC must agree (session sync,
//! hardware RSS programmed with the same key).
//!
//! One 40-byte key drives both: it is the Toeplitz key itself (what a NIC is
//! programmed with, so hardware and software compute the same owner), and
//! the session table's key is derived from it. Maglev's hash stays fixed
//! ([`crate::flow::FlowKey::hash`]): it is determined by the configuration,
//! so that every instance picks the same backend.

use crate::flow::{fold_mul, SessionHashKey};
use crate::rss::RSS_KEY;
use std::fmt;

/// Bytes of a key: the Toeplitz key size of the common NIC drivers.
pub const KEY_LEN: usize = 40;

/// `sessions.hash_key` as configured.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum HashKeySetting {
    /// A fresh key from the OS at every start.
    #[default]
    Random,
    /// This key, for instances (and NICs) that must agree.
    Fixed([u8; KEY_LEN]),
}

impl fmt::Debug for HashKeySetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashKeySetting::Random => f.write_str("Random"),
            HashKeySetting::Fixed(_) => f.write_str("Fixed(<redacted>)"),
        }
    }
}

impl HashKeySetting {
    /// `random`, or the key as 80 hex digits.
    pub fn parse(text: &str) -> Result<HashKeySetting, String> {
        let text = text.trim();
        if text == "random" {
            return Ok(HashKeySetting::Random);
        }
        let digits = text.as_bytes();
        if digits.len() != 2 * KEY_LEN || !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(format!(
                "expected `random` or a key of {KEY_LEN} bytes as {} hex digits (got {} characters)",
                2 * KEY_LEN,
                digits.len()
            ));
        }
        let mut key = [0u8; KEY_LEN];
        for (i, b) in key.iter_mut().enumerate() {
            *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        // Only the first 10 bytes touch a 6-byte client endpoint: zeros there
        // would put every client on worker 0.
        if key[..10].iter().all(|b| *b == 0) {
            return Err("the key's first 10 bytes are zero: every client would hash alike".into());
        }
        Ok(HashKeySetting::Fixed(key))
    }

    /// The keys this instance runs with: the configured key, or a new one
    /// from the OS (call once at start; every worker and the NIC must share
    /// the result).
    pub fn resolve(&self) -> std::io::Result<HashKeys> {
        match self {
            HashKeySetting::Fixed(k) => Ok(HashKeys::from_key(k)),
            HashKeySetting::Random => {
                use std::io::Read;
                let mut k = [0u8; KEY_LEN];
                std::fs::File::open("/dev/urandom")?.read_exact(&mut k)?;
                Ok(HashKeys::from_key(&k))
            }
        }
    }
}

/// The keys of one instance's session-table and owner-shard hashes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HashKeys {
    pub session: SessionHashKey,
    /// The Toeplitz key of the owner shard (and of the NIC's RSS).
    pub rss: [u8; KEY_LEN],
}

impl fmt::Debug for HashKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashKeys(<redacted>)")
    }
}

impl HashKeys {
    /// The keys every instance had before keying (known to anyone): for
    /// tests and tools that compute owners and buckets themselves.
    pub const FIXED: HashKeys = HashKeys { session: SessionHashKey::FIXED, rss: RSS_KEY };

    /// The keys derived from `key`: it is the Toeplitz key; the session
    /// key's three words each absorb all of it (a fixed derivation, so
    /// instances configured alike agree).
    pub fn from_key(key: &[u8; KEY_LEN]) -> HashKeys {
        let words: Vec<u64> =
            key.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8-byte chunk"))).collect();
        // Digits of pi: arbitrary, distinct, and plainly not chosen to
        // weaken anything.
        const SEEDS: [u64; 3] = [0x243f_6a88_85a3_08d3, 0x1319_8a2e_0370_7344, 0xa409_3822_299f_31d0];
        const MUL: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut session = [0u64; 3];
        for (out, seed) in session.iter_mut().zip(SEEDS) {
            let mut acc = seed;
            for w in &words {
                acc = fold_mul(acc ^ w, MUL) ^ seed;
            }
            *out = fold_mul(acc, MUL ^ seed);
        }
        // The last word multiplies: zero would map every key to 0.
        session[2] |= 1;
        HashKeys { session: SessionHashKey(session), rss: *key }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::FlowKey;
    use crate::ids::{BackendId, ListenerId};
    use crate::rss::{OwnerHash, BUCKETS};
    use crate::session::{InsertError, Session, SessionState, SessionTable};

    /// A key other than the fixed one, the same in every run: the test
    /// asserts counts, so it must not depend on randomness.
    fn other_keys() -> HashKeys {
        let mut k = [0u8; KEY_LEN];
        for (i, b) in k.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(0x3b) ^ 0xa5;
        }
        HashKeys::from_key(&k)
    }

    const VIP: u32 = 0xc633_6401; // 198.51.100.1
    const BACKEND: u32 = 0x0a01_000b;

    fn session(client: u32, port: u16) -> Session {
        Session::new(
            6,
            (client, port),
            (VIP, 80),
            (BACKEND, 8080),
            ListenerId(0),
            BackendId(0),
            SessionState::TcpSynSent,
            0,
        )
    }

    /// Capacity of the attacked table: 512 buckets of 8 ways.
    const CAPACITY: usize = 1000;
    const MASK: u64 = 511;

    /// What an attacker who knows the fixed hash sends: client endpoints
    /// (one spoofable /16, any port) whose request keys have the same
    /// first and second bucket in a table of `CAPACITY`.
    fn crafted_bucket_collisions(n: usize) -> Vec<(u32, u16)> {
        let target = {
            let h = FlowKey::new(0xcb00_0000, VIP, 1024, 80, 6).hash();
            (h & MASK, h.rotate_right(29) & MASK)
        };
        let mut found = Vec::new();
        'outer: for host in 0..0x1_0000u32 {
            for port in 1024..=u16::MAX {
                let client = 0xcb00_0000 | host;
                let h = FlowKey::new(client, VIP, port, 80, 6).hash();
                if (h & MASK, h.rotate_right(29) & MASK) == target {
                    found.push((client, port));
                    if found.len() == n {
                        break 'outer;
                    }
                }
            }
        }
        assert_eq!(found.len(), n);
        found
    }

    fn inserted(t: &mut SessionTable, set: &[(u32, u16)]) -> usize {
        set.iter()
            .filter(|(c, p)| match t.insert(session(*c, *p)) {
                Ok(_) => true,
                Err(InsertError::Full) => false,
                Err(e) => panic!("{e:?}"),
            })
            .count()
    }

    /// 40 sessions whose request keys share one bucket pair under the
    /// fixed key: only the pair's 16 ways take them, and the table refuses
    /// the rest at 16 of 1000 sessions. Under another key the same flows
    /// spread and all fit.
    #[test]
    fn crafted_bucket_collisions_fill_a_table_only_under_the_fixed_key() {
        let set = crafted_bucket_collisions(40);
        let mut fixed = SessionTable::with_key(CAPACITY, HashKeys::FIXED.session);
        assert_eq!(inserted(&mut fixed, &set), 16, "the crafted set collides under the fixed key");
        let keys = other_keys();
        let mut keyed = SessionTable::with_key(CAPACITY, keys.session);
        assert_eq!(inserted(&mut keyed, &set), set.len());
        // And they do not merely fit: no bucket holds more than a few.
        let mut per_bucket = std::collections::HashMap::new();
        for (c, p) in &set {
            *per_bucket.entry(FlowKey::new(*c, VIP, *p, 80, 6).keyed_hash(&keys.session) & MASK).or_insert(0) += 1;
        }
        assert!(per_bucket.values().all(|n| *n <= 3), "{per_bucket:?}");
    }

    /// 256 ports of one client in one RSS bucket under the fixed key: all on
    /// one worker of four. Under another key they spread over all four.
    #[test]
    fn crafted_owner_collisions_land_on_one_worker_only_under_the_fixed_key() {
        let client = 0xcb00_0007;
        let bucket = crate::rss::client_hash(client, 1024) as usize & (BUCKETS - 1);
        let set: Vec<u16> = (1024..=u16::MAX)
            .filter(|p| crate::rss::client_hash(client, *p) as usize & (BUCKETS - 1) == bucket)
            .take(256)
            .collect();
        assert_eq!(set.len(), 256);
        let count = |h: &OwnerHash| {
            let mut n = [0usize; 4];
            for p in &set {
                n[h.owner(client, *p, 4)] += 1;
            }
            n
        };
        let fixed = count(&OwnerHash::new(&HashKeys::FIXED.rss));
        assert_eq!(fixed.iter().filter(|n| **n > 0).count(), 1, "{fixed:?}");
        let keyed = count(&OwnerHash::new(&other_keys().rss));
        assert!(keyed.iter().all(|n| (32..=96).contains(n)), "{keyed:?}");
    }

    #[test]
    fn settings_parse_and_derive_deterministically() {
        assert_eq!(HashKeySetting::parse("random"), Ok(HashKeySetting::Random));
        let hex: String = RSS_KEY.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(HashKeySetting::parse(&hex), Ok(HashKeySetting::Fixed(RSS_KEY)));
        assert!(HashKeySetting::parse(&hex[2..]).unwrap_err().contains("80 hex digits"));
        assert!(HashKeySetting::parse(&format!("{}zz", &hex[2..])).is_err());
        assert!(HashKeySetting::parse(&"0".repeat(80)).unwrap_err().contains("zero"));
        let a = HashKeySetting::Fixed(RSS_KEY).resolve().unwrap();
        assert_eq!(a, HashKeys::from_key(&RSS_KEY));
        assert_eq!(a.rss, RSS_KEY);
        // Another key, other session words; two random starts differ.
        assert_ne!(a.session, other_keys().session);
        let (r1, r2) = (HashKeySetting::Random.resolve().unwrap(), HashKeySetting::Random.resolve().unwrap());
        assert_ne!(r1, r2);
        // Secrets stay out of logs.
        assert!(!format!("{a:?}{:?}", HashKeySetting::Fixed(RSS_KEY)).contains("6d"));
    }
}
