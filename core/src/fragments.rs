//! IPv4 fragments of load-balanced flows: steered, never reassembled.
//!
//! # The choice
//!
//! Two ways were open (issue 11): reassemble every datagram (DPDK's
//! `rte_ip_frag`, per worker) and forward the whole, or send every fragment
//! of a datagram to the datagram's backend as it is (the Maglev paper's
//! approach). lbd steers:
//!
//! - The core works on one contiguous header buffer per packet (the
//!   [`Packet`](crate::dataplane::Packet) trait) and never touches
//!   payloads. A reassembled datagram (up to 64 KiB) is a chain of mbufs
//!   that would have to be fragmented again to the egress MTU: a second
//!   fragmenter, payload copies, and mbuf chains in a data path built for
//!   single frames, all in the DPDK layer where the core's tests do not
//!   reach.
//! - Steering touches headers only, lives in the DPDK-free core and is
//!   tested there like the rest of the flow path; the backend (or client)
//!   reassembles, as it would without a balancer in the way. Memory held
//!   is a bounded number of mbufs, not whole datagrams.
//! - The NAT rewrite stays exact without the whole datagram: only the
//!   first fragment carries the L4 header, and the incremental checksum
//!   patch for the address and port change is a difference of sums, valid
//!   for the checksum of the whole datagram whichever fragment carries it.
//!   Later fragments change only in the IPv4 header.
//!
//! # How
//!
//! Non-first fragments carry no ports, so neither the owner worker (a hash
//! of the client address and port, [`crate::rss`]) nor the session can be
//! found from them alone. Two stages, per worker:
//!
//! 1. The *fragment worker* of a datagram, chosen from (source,
//!    destination, protocol, IP id), sees every fragment of it first (the
//!    receiving worker hands them over). It checks each fragment against
//!    the ones already seen (overlap, too many), holds fragments that come
//!    before the first one (which carries the ports), and once the first is
//!    there, knows the datagram's fate: the session owner's worker, the
//!    host's kernel, or a drop reason. It sends the first fragment, then
//!    the held ones, then every later one, to that owner, in order over
//!    the one hand-off ring.
//! 2. The *owner* runs the first fragment through the ordinary flow path
//!    (session lookup or creation, NAT rewrite), then remembers the
//!    session for the datagram, so its later fragments get the same
//!    address rewrite.
//!
//! Both stages forget a datagram once its fragments cover it, or after
//! `fragments.timeout`. Every table is preallocated and bounded
//! (`fragments.max_datagrams`, `max_fragments_per_datagram`, `max_held`);
//! what does not fit is dropped with a reason, never allocated.

use crate::counters::DropReason;
use crate::nat::Endpoint;
use crate::wire::checksum::{adjust16, adjust32};
use crate::wire::frame::{IP_CHECKSUM, IP_DST_ADDR, IP_SRC_ADDR, IP_TTL, IP_TTL_PROTOCOL};
use crate::wire::{get16, get32, set16, set32};
use std::collections::HashMap;

/// Bounds of one worker's fragment tables (`fragments` in the config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragmentLimits {
    /// Datagrams each stage tracks at once.
    pub max_datagrams: usize,
    /// Fragments one datagram may have.
    pub max_fragments: usize,
    /// Fragments held while their first fragment has not arrived.
    pub max_held: usize,
    /// How long a datagram may take to arrive whole (ms).
    pub timeout_ms: u32,
}

impl Default for FragmentLimits {
    fn default() -> Self {
        FragmentLimits { max_datagrams: 1024, max_fragments: 64, max_held: 256, timeout_ms: 2000 }
    }
}

/// What identifies a datagram among fragments (RFC 791).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DatagramKey {
    pub src: u32,
    pub dst: u32,
    pub proto: u8,
    pub id: u16,
}

impl DatagramKey {
    /// The fragment worker of the datagram: every fragment of it meets
    /// there, whatever worker received it. Hashed with the instance's
    /// owner key (`sessions.hash_key`), as flows are: with a known key, a
    /// sender could pick IP ids that pile every datagram's fragments onto
    /// one worker.
    pub fn worker(&self, owners: &crate::rss::OwnerHash, workers: usize) -> usize {
        let mix = self.src ^ self.dst.rotate_left(16) ^ u32::from(self.proto) << 24;
        owners.owner(mix, self.id, workers)
    }
}

/// One fragment's place in its datagram, from the IPv4 header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// Byte offset of the payload in the datagram.
    pub offset: u32,
    /// Payload bytes.
    pub len: u32,
    /// More fragments follow (MF).
    pub more: bool,
}

impl Piece {
    /// From the flags/offset word and the payload length; None when the
    /// fragment cannot be part of a valid datagram (empty, a middle piece
    /// not a multiple of 8, or beyond 65535 bytes).
    pub fn new(flags_offset: u16, payload_len: usize) -> Option<Piece> {
        let offset = u32::from(flags_offset & 0x1fff) * 8;
        let more = flags_offset & 0x2000 != 0;
        let len = payload_len as u32;
        let valid = len > 0 && (!more || len.is_multiple_of(8)) && offset + len <= 65535 - 20;
        valid.then_some(Piece { offset, len, more })
    }
}

/// What [`Datagrams::record`] makes of a fragment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// Accepted; the datagram is now covered whole (true) or not yet.
    Accepted { complete: bool },
    /// Rejected: the datagram is spoiled, this and every later fragment of
    /// it are dropped for this reason.
    Rejected(DropReason),
}

struct Slot<V> {
    key: DatagramKey,
    since: u32,
    count: u32,
    covered: u32,
    /// The datagram's length once its last fragment came.
    total: Option<u32>,
    /// Set when the datagram is spoiled (overlap, too many): its later
    /// fragments are dropped for this reason until it times out.
    spoiled: Option<DropReason>,
    used: bool,
    value: V,
}

/// The datagrams one stage of one worker is tracking: which byte ranges of
/// each have been seen, and a value per datagram. Preallocated; nothing
/// here allocates after [`Datagrams::new`].
pub struct Datagrams<V> {
    index: HashMap<DatagramKey, u32>,
    slots: Vec<Slot<V>>,
    /// `max_fragments` ranges per slot, `slot.count` of them in use.
    ranges: Vec<(u32, u32)>,
    free: Vec<u32>,
    max_fragments: usize,
}

impl<V: Copy + Default> Datagrams<V> {
    pub fn new(max_datagrams: usize, max_fragments: usize) -> Datagrams<V> {
        let slot = Slot {
            key: DatagramKey { src: 0, dst: 0, proto: 0, id: 0 },
            since: 0,
            count: 0,
            covered: 0,
            total: None,
            spoiled: None,
            used: false,
            value: V::default(),
        };
        Datagrams {
            // Twice the entries: deletions leave tombstones, and a table at
            // most half full rehashes in place instead of growing.
            index: HashMap::with_capacity(2 * max_datagrams + 1),
            slots: (0..max_datagrams).map(|_| Slot { ..slot }).collect(),
            ranges: vec![(0, 0); max_datagrams * max_fragments],
            free: (0..max_datagrams as u32).rev().collect(),
            max_fragments,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn find(&self, key: &DatagramKey) -> Option<u32> {
        self.index.get(key).copied()
    }

    /// The slot of `key`, created (with the default value) when new; None
    /// when the table is full.
    pub fn find_or_insert(&mut self, key: DatagramKey, now: u32) -> Option<u32> {
        if let Some(i) = self.find(&key) {
            return Some(i);
        }
        let i = self.free.pop()?;
        let s = &mut self.slots[i as usize];
        *s =
            Slot { key, since: now, count: 0, covered: 0, total: None, spoiled: None, used: true, value: V::default() };
        self.index.insert(key, i);
        Some(i)
    }

    pub fn value(&self, i: u32) -> V {
        self.slots[i as usize].value
    }

    pub fn set_value(&mut self, i: u32, v: V) {
        self.slots[i as usize].value = v;
    }

    /// Why the datagram in `i` is spoiled, if it is.
    pub fn spoiled(&self, i: u32) -> Option<DropReason> {
        self.slots[i as usize].spoiled
    }

    /// Marks the datagram spoiled: its later fragments are dropped for
    /// `reason` until it times out.
    pub fn spoil(&mut self, i: u32, reason: DropReason) {
        self.slots[i as usize].spoiled = Some(reason);
    }

    /// Notes fragment `p` of the datagram in `i`: rejected (and the
    /// datagram spoiled) when it overlaps one already seen, disagrees with
    /// the datagram's end, or is one too many.
    pub fn record(&mut self, i: u32, p: Piece) -> Recorded {
        let s = &mut self.slots[i as usize];
        if let Some(r) = s.spoiled {
            return Recorded::Rejected(r);
        }
        let (start, end) = (p.offset, p.offset + p.len);
        let base = i as usize * self.max_fragments;
        let seen = &self.ranges[base..base + s.count as usize];
        // A last fragment must end the datagram, and nothing may lie
        // beyond its end: otherwise the pieces contradict each other, which
        // is how overlap attacks (RFC 1858, teardrop) look too.
        let beyond_end = match s.total {
            Some(t) => end > t || !p.more,
            None => !p.more && seen.iter().any(|&(_, e)| e > end),
        };
        if beyond_end || seen.iter().any(|&(a, b)| start < b && a < end) {
            s.spoiled = Some(DropReason::FragmentOverlap);
            return Recorded::Rejected(DropReason::FragmentOverlap);
        }
        if s.count as usize == self.max_fragments {
            s.spoiled = Some(DropReason::FragmentTooMany);
            return Recorded::Rejected(DropReason::FragmentTooMany);
        }
        self.ranges[base + s.count as usize] = (start, end);
        s.count += 1;
        s.covered += p.len;
        if !p.more {
            s.total = Some(end);
        }
        Recorded::Accepted { complete: s.total == Some(s.covered) }
    }

    pub fn remove(&mut self, i: u32) {
        let s = &mut self.slots[i as usize];
        if !s.used {
            return;
        }
        s.used = false;
        self.index.remove(&s.key);
        self.free.push(i);
    }

    /// Removes every datagram older than `timeout_ms`, handing each one's
    /// slot and value to `f` first.
    pub fn expire(&mut self, now: u32, timeout_ms: u32, mut f: impl FnMut(u32, &V, Option<DropReason>)) {
        for i in 0..self.slots.len() as u32 {
            let s = &self.slots[i as usize];
            if s.used && now.wrapping_sub(s.since) > timeout_ms {
                f(i, &s.value, s.spoiled);
                self.remove(i);
            }
        }
    }

    /// Every tracked datagram's slot (at shutdown).
    pub fn used_slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots.iter().enumerate().filter(|(_, s)| s.used).map(|(i, _)| i as u32)
    }
}

/// Rewrites one address of a non-first fragment, decrements its TTL and
/// patches the IPv4 checksum: the part of the NAT rewrite that reaches
/// beyond the first fragment (the L4 header and its checksum travel in the
/// first).
pub fn rewrite_address(frame: &mut [u8], which: Endpoint, addr: u32) {
    let at = match which {
        Endpoint::Destination => IP_DST_ADDR,
        Endpoint::Source => IP_SRC_ADDR,
    };
    let old_addr = get32(frame, at.clone());
    let old_ttl_word = get16(frame, IP_TTL_PROTOCOL);
    frame[IP_TTL] = frame[IP_TTL].wrapping_sub(1);
    let mut c = get16(frame, IP_CHECKSUM);
    c = adjust16(c, old_ttl_word, get16(frame, IP_TTL_PROTOCOL));
    c = adjust32(c, old_addr, addr);
    set16(frame, IP_CHECKSUM, c);
    set32(frame, at, addr);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u16) -> DatagramKey {
        DatagramKey { src: 1, dst: 2, proto: 17, id }
    }

    fn piece(offset: u32, len: u32, more: bool) -> Piece {
        Piece { offset, len, more }
    }

    #[test]
    fn pieces_from_headers() {
        assert_eq!(Piece::new(0x2000, 1480), Some(piece(0, 1480, true)));
        assert_eq!(Piece::new(185, 100), Some(piece(1480, 100, false)));
        assert_eq!(Piece::new(0x2000, 1479), None, "a middle piece is a multiple of 8");
        assert_eq!(Piece::new(0x2000, 0), None);
        assert_eq!(Piece::new(0x1fff, 100), None, "beyond 65535 bytes");
    }

    #[test]
    fn covers_in_any_order() {
        let mut d: Datagrams<u8> = Datagrams::new(4, 8);
        let i = d.find_or_insert(key(1), 0).unwrap();
        assert_eq!(d.record(i, piece(16, 4, false)), Recorded::Accepted { complete: false });
        assert_eq!(d.record(i, piece(0, 8, true)), Recorded::Accepted { complete: false });
        assert_eq!(d.record(i, piece(8, 8, true)), Recorded::Accepted { complete: true });
    }

    #[test]
    fn overlap_and_contradiction_spoil() {
        let mut d: Datagrams<u8> = Datagrams::new(4, 8);
        let i = d.find_or_insert(key(1), 0).unwrap();
        d.record(i, piece(0, 16, true));
        assert_eq!(d.record(i, piece(8, 16, true)), Recorded::Rejected(DropReason::FragmentOverlap));
        assert_eq!(d.record(i, piece(16, 8, false)), Recorded::Rejected(DropReason::FragmentOverlap), "stays spoiled");
        let j = d.find_or_insert(key(2), 0).unwrap();
        d.record(j, piece(0, 16, false));
        assert_eq!(d.record(j, piece(16, 8, true)), Recorded::Rejected(DropReason::FragmentOverlap), "past the end");
        let k = d.find_or_insert(key(3), 0).unwrap();
        d.record(k, piece(16, 8, true));
        assert_eq!(d.record(k, piece(0, 8, false)), Recorded::Rejected(DropReason::FragmentOverlap), "end too early");
    }

    #[test]
    fn too_many_and_full() {
        let mut d: Datagrams<u8> = Datagrams::new(2, 2);
        let i = d.find_or_insert(key(1), 0).unwrap();
        d.record(i, piece(0, 8, true));
        d.record(i, piece(8, 8, true));
        assert_eq!(d.record(i, piece(16, 8, true)), Recorded::Rejected(DropReason::FragmentTooMany));
        d.find_or_insert(key(2), 0).unwrap();
        assert_eq!(d.find_or_insert(key(3), 0), None);
        d.remove(i);
        assert!(d.find_or_insert(key(3), 0).is_some());
    }

    #[test]
    fn expires_old_datagrams_only() {
        let mut d: Datagrams<u8> = Datagrams::new(4, 2);
        let a = d.find_or_insert(key(1), 0).unwrap();
        d.set_value(a, 7);
        d.find_or_insert(key(2), 500).unwrap();
        let mut gone = Vec::new();
        d.expire(1001, 1000, |_, v, _| gone.push(*v));
        assert_eq!(gone, vec![7]);
        assert_eq!(d.len(), 1);
        assert_eq!(d.find(&key(1)), None);
    }
}
