//! ARP neighbour cache and the queue of packets waiting for resolution.
//!
//! Each worker keeps its own cache (the owner is the only writer; other
//! workers learn through ARP packets copied to them over the hand-off
//! rings). The cache is an open-addressing table with linear probing and
//! backward-shift deletion: fixed memory, no tombstones, no allocation.

use crate::flow::fold_mul;
use crate::ids::PortIndex;
use crate::wire::MacAddr;
use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeighborState {
    /// From the configuration; never ages or gets replaced by ARP.
    Static,
    /// Learned; trusted until `reachable_time` after `updated`.
    Reachable,
    /// Learned long ago; still used while a refresh request is out.
    Stale,
    /// Requested, no answer yet.
    Incomplete,
}

#[derive(Clone, Copy, Debug)]
pub struct NeighborEntry {
    pub port: PortIndex,
    pub ip: u32,
    pub mac: MacAddr,
    pub state: NeighborState,
    /// When the MAC was last confirmed (ms).
    pub updated: u32,
    /// When the last request went out (ms).
    pub requested: u32,
    /// Requests sent since the last confirmation.
    pub retries: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    Hit(MacAddr),
    /// Unknown or unresolved; `request` says whether to send an ARP request
    /// now (the retry interval has passed).
    Miss {
        request: bool,
    },
}

/// What a learn did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    /// Nothing changed (unknown address not to be created, or static).
    Ignored,
    /// Known MAC confirmed again.
    Refreshed,
    /// New entry, or a new MAC for an existing one, or first resolution.
    Changed,
}

#[derive(Clone, Copy, Debug)]
pub struct ArpTimers {
    pub reachable_ms: u32,
    pub retry_ms: u32,
    pub max_retries: u32,
}

pub struct NeighborCache {
    /// Bumped whenever an entry's MAC may have changed or an entry went:
    /// a resolution remembered at one epoch holds while the epoch does.
    epoch: u64,
    slots: Box<[Option<NeighborEntry>]>,
    mask: usize,
    len: usize,
    limit: usize,
    timers: ArpTimers,
    cursor: usize,
}

impl std::fmt::Debug for NeighborCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NeighborCache").field("len", &self.len).finish()
    }
}

/// A request or expiry the periodic scan asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Maintenance {
    /// Send an ARP request for (port, ip).
    Request { port: PortIndex, ip: u32 },
    /// Resolution of (port, ip) failed for good: drop what waits for it.
    Failed { port: PortIndex, ip: u32 },
}

impl NeighborCache {
    /// Room for `entries` neighbours (the table is twice that, so probes stay
    /// short).
    pub fn new(entries: usize, timers: ArpTimers) -> NeighborCache {
        let size = (entries * 2).next_power_of_two().max(16);
        NeighborCache {
            epoch: 0,
            slots: vec![None; size].into_boxed_slice(),
            mask: size - 1,
            len: 0,
            limit: entries,
            timers,
            cursor: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// See the field.
    #[inline]
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Slots a full maintenance scan visits.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    #[inline]
    fn home(&self, port: PortIndex, ip: u32) -> usize {
        (fold_mul(u64::from(ip) << 16 | u64::from(port.0), 0x9e37_79b9_7f4a_7c15) as usize) & self.mask
    }

    #[inline]
    fn find(&self, port: PortIndex, ip: u32) -> Option<usize> {
        let mut i = self.home(port, ip);
        loop {
            match &self.slots[i] {
                None => return None,
                Some(e) if e.ip == ip && e.port == port => return Some(i),
                Some(_) => i = (i + 1) & self.mask,
            }
        }
    }

    pub fn get(&self, port: PortIndex, ip: u32) -> Option<&NeighborEntry> {
        self.find(port, ip).and_then(|i| self.slots[i].as_ref())
    }

    fn insert_new(&mut self, e: NeighborEntry) -> bool {
        if self.len >= self.limit {
            return false;
        }
        let mut i = self.home(e.port, e.ip);
        while self.slots[i].is_some() {
            i = (i + 1) & self.mask;
        }
        self.slots[i] = Some(e);
        self.len += 1;
        true
    }

    fn remove_at(&mut self, mut hole: usize) {
        self.epoch += 1;
        self.slots[hole] = None;
        self.len -= 1;
        // Backward-shift: pull later members of the probe run into the hole
        // when their home position allows it.
        let mut j = (hole + 1) & self.mask;
        while let Some(e) = self.slots[j] {
            let home = self.home(e.port, e.ip);
            // Is `home` cyclically outside (hole, j]?
            let moves = if hole <= j { home <= hole || home > j } else { home <= hole && home > j };
            if moves {
                self.slots[hole] = Some(e);
                self.slots[j] = None;
                hole = j;
            }
            j = (j + 1) & self.mask;
        }
    }

    /// Adds a configured neighbour.
    pub fn add_static(&mut self, port: PortIndex, ip: u32, mac: MacAddr) {
        self.epoch += 1;
        let e = NeighborEntry { port, ip, mac, state: NeighborState::Static, updated: 0, requested: 0, retries: 0 };
        match self.find(port, ip) {
            Some(i) => self.slots[i] = Some(e),
            None => {
                self.insert_new(e);
            }
        }
    }

    /// The MAC for `ip` on `port`, noting a request when none is known.
    #[inline]
    pub fn resolve(&mut self, port: PortIndex, ip: u32, now: u32) -> Resolution {
        let timers = self.timers;
        match self.find(port, ip) {
            Some(i) => {
                let e = self.slots[i].as_mut().expect("found slot is occupied");
                match e.state {
                    NeighborState::Static | NeighborState::Reachable | NeighborState::Stale => Resolution::Hit(e.mac),
                    NeighborState::Incomplete => {
                        let due = now.wrapping_sub(e.requested) >= timers.retry_ms;
                        if due && e.retries < timers.max_retries {
                            e.requested = now;
                            e.retries += 1;
                            Resolution::Miss { request: true }
                        } else {
                            Resolution::Miss { request: false }
                        }
                    }
                }
            }
            None => {
                let created = self.insert_new(NeighborEntry {
                    port,
                    ip,
                    mac: MacAddr::ZERO,
                    state: NeighborState::Incomplete,
                    updated: now,
                    requested: now,
                    retries: 1,
                });
                Resolution::Miss { request: created }
            }
        }
    }

    /// Records that `ip` on `port` is at `mac`. Unknown addresses are added
    /// only when `create` (RFC 826: when the packet was addressed to us).
    pub fn learn(&mut self, port: PortIndex, ip: u32, mac: MacAddr, now: u32, create: bool) -> Learned {
        match self.find(port, ip) {
            Some(i) => {
                let e = self.slots[i].as_mut().expect("found slot is occupied");
                if e.state == NeighborState::Static {
                    return Learned::Ignored;
                }
                let changed = e.state == NeighborState::Incomplete || e.mac != mac;
                if e.mac != mac {
                    self.epoch += 1;
                }
                e.mac = mac;
                e.state = NeighborState::Reachable;
                e.updated = now;
                e.retries = 0;
                if changed {
                    Learned::Changed
                } else {
                    Learned::Refreshed
                }
            }
            None if create => {
                let ok = self.insert_new(NeighborEntry {
                    port,
                    ip,
                    mac,
                    state: NeighborState::Reachable,
                    updated: now,
                    requested: 0,
                    retries: 0,
                });
                if ok {
                    Learned::Changed
                } else {
                    Learned::Ignored
                }
            }
            None => Learned::Ignored,
        }
    }

    /// Ages up to `budget` entries from where the last call stopped: stale
    /// entries get a refresh request, unanswered ones are dropped.
    pub fn maintain(&mut self, now: u32, budget: usize, mut out: impl FnMut(Maintenance)) {
        let t = self.timers;
        for _ in 0..budget.min(self.slots.len()) {
            self.cursor = (self.cursor + 1) & self.mask;
            let i = self.cursor;
            let Some(e) = self.slots[i].as_mut() else { continue };
            match e.state {
                NeighborState::Static => {}
                NeighborState::Reachable => {
                    if now.wrapping_sub(e.updated) >= t.reachable_ms {
                        e.state = NeighborState::Stale;
                        e.requested = now;
                        e.retries = 1;
                        out(Maintenance::Request { port: e.port, ip: e.ip });
                    }
                }
                NeighborState::Stale | NeighborState::Incomplete => {
                    if now.wrapping_sub(e.requested) >= t.retry_ms {
                        if e.retries >= t.max_retries {
                            let (port, ip, incomplete) = (e.port, e.ip, e.state == NeighborState::Incomplete);
                            self.remove_at(i);
                            // The slot now holds a shifted entry (or none):
                            // look at it again next time round.
                            self.cursor = (i + self.mask) & self.mask;
                            if incomplete {
                                out(Maintenance::Failed { port, ip });
                            }
                        } else {
                            e.requested = now;
                            e.retries += 1;
                            out(Maintenance::Request { port: e.port, ip: e.ip });
                        }
                    }
                }
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &NeighborEntry> {
        self.slots.iter().flatten()
    }
}

/// A packet parked until its next hop resolves.
#[derive(Debug)]
pub struct Parked<P> {
    pub packet: P,
    pub port: PortIndex,
    pub next_hop: u32,
    pub since: u32,
}

/// Bounded FIFO of parked packets. Preallocated: pushing never allocates.
#[derive(Debug)]
pub struct PendingQueue<P> {
    queue: VecDeque<Parked<P>>,
    capacity: usize,
}

impl<P> PendingQueue<P> {
    pub fn new(capacity: usize) -> PendingQueue<P> {
        PendingQueue { queue: VecDeque::with_capacity(capacity), capacity }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Parks `p`; gives it back when the queue is full.
    pub fn push(&mut self, p: Parked<P>) -> Result<(), Parked<P>> {
        if self.queue.len() >= self.capacity {
            return Err(p);
        }
        self.queue.push_back(p);
        Ok(())
    }

    /// Hands every packet waiting for (port, ip) to `f`, in arrival order.
    pub fn release(&mut self, port: PortIndex, ip: u32, mut f: impl FnMut(Parked<P>)) {
        if self.queue.is_empty() {
            return;
        }
        let n = self.queue.len();
        for _ in 0..n {
            let p = self.queue.pop_front().expect("len checked");
            if p.port == port && p.next_hop == ip {
                f(p);
            } else {
                self.queue.push_back(p);
            }
        }
    }

    /// Hands `f` every packet parked longer than `max_age` ms.
    pub fn expire(&mut self, now: u32, max_age: u32, mut f: impl FnMut(Parked<P>)) {
        while let Some(front) = self.queue.front() {
            if now.wrapping_sub(front.since) <= max_age {
                break;
            }
            f(self.queue.pop_front().expect("front exists"));
        }
    }

    pub fn drain(&mut self) -> impl Iterator<Item = Parked<P>> + '_ {
        self.queue.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: ArpTimers = ArpTimers { reachable_ms: 300_000, retry_ms: 1000, max_retries: 3 };
    const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);

    #[test]
    fn resolve_learn_and_retry() {
        let mut c = NeighborCache::new(64, T);
        assert_eq!(c.resolve(PortIndex(0), 10, 0), Resolution::Miss { request: true });
        // Within the retry interval: no second request.
        assert_eq!(c.resolve(PortIndex(0), 10, 500), Resolution::Miss { request: false });
        assert_eq!(c.resolve(PortIndex(0), 10, 1000), Resolution::Miss { request: true });
        assert_eq!(c.learn(PortIndex(0), 10, MAC, 1200, false), Learned::Changed);
        assert_eq!(c.resolve(PortIndex(0), 10, 1300), Resolution::Hit(MAC));
        assert_eq!(c.learn(PortIndex(0), 10, MAC, 1400, false), Learned::Refreshed);
        // Unknown address: created only when asked to.
        assert_eq!(c.learn(PortIndex(0), 11, MAC, 0, false), Learned::Ignored);
        assert!(c.get(PortIndex(0), 11).is_none());
        assert_eq!(c.learn(PortIndex(0), 11, MAC, 0, true), Learned::Changed);
        // Same IP on another port is another neighbour.
        assert!(c.get(PortIndex(1), 10).is_none());
    }

    #[test]
    fn static_entries_do_not_change() {
        let mut c = NeighborCache::new(64, T);
        c.add_static(PortIndex(0), 10, MAC);
        assert_eq!(c.learn(PortIndex(0), 10, MacAddr([9; 6]), 0, true), Learned::Ignored);
        assert_eq!(c.resolve(PortIndex(0), 10, 0), Resolution::Hit(MAC));
        let mut n = 0;
        c.maintain(10_000_000, 1000, |_| n += 1);
        assert_eq!(n, 0);
    }

    #[test]
    fn aging_refreshes_then_fails() {
        let mut c = NeighborCache::new(64, T);
        c.learn(PortIndex(0), 10, MAC, 0, true);
        let mut out = Vec::new();
        c.maintain(300_000, 1000, |m| out.push(m));
        assert_eq!(out, vec![Maintenance::Request { port: PortIndex(0), ip: 10 }]);
        // Stale entries keep forwarding while refreshing.
        assert_eq!(c.resolve(PortIndex(0), 10, 300_001), Resolution::Hit(MAC));
        out.clear();
        c.maintain(301_000, 1000, |m| out.push(m));
        c.maintain(302_000, 1000, |m| out.push(m));
        assert_eq!(out.len(), 2);
        out.clear();
        c.maintain(303_000, 1000, |m| out.push(m));
        // Stale entry dropped silently (nothing waits on it).
        assert!(out.is_empty());
        assert!(c.get(PortIndex(0), 10).is_none());
        // An incomplete entry failing reports it.
        c.resolve(PortIndex(0), 20, 0);
        c.maintain(1000, 1000, |m| out.push(m));
        c.maintain(2000, 1000, |m| out.push(m));
        c.maintain(3000, 1000, |m| out.push(m));
        assert_eq!(out.last(), Some(&Maintenance::Failed { port: PortIndex(0), ip: 20 }));
        assert!(c.is_empty());
    }

    #[test]
    fn deletion_keeps_probe_chains_intact() {
        let mut c = NeighborCache::new(1000, T);
        for ip in 0..1000 {
            c.learn(PortIndex(0), ip, MAC, 0, true);
        }
        for ip in (0..1000).step_by(3) {
            let i = c.find(PortIndex(0), ip).unwrap();
            c.remove_at(i);
        }
        for ip in 0..1000 {
            assert_eq!(c.get(PortIndex(0), ip).is_some(), ip % 3 != 0, "ip {ip}");
        }
        assert_eq!(c.len(), 1000 - 334);
    }

    #[test]
    fn cache_limit_is_respected() {
        let mut c = NeighborCache::new(16, T);
        for ip in 0..16 {
            assert_eq!(c.learn(PortIndex(0), ip, MAC, 0, true), Learned::Changed);
        }
        assert_eq!(c.learn(PortIndex(0), 99, MAC, 0, true), Learned::Ignored);
        assert_eq!(c.resolve(PortIndex(0), 99, 0), Resolution::Miss { request: false });
    }

    #[test]
    fn pending_queue_releases_and_expires_in_order() {
        let mut q = PendingQueue::new(3);
        for (i, hop) in [(1, 7), (2, 8), (3, 7)] {
            q.push(Parked { packet: i, port: PortIndex(0), next_hop: hop, since: i }).unwrap();
        }
        assert!(q.push(Parked { packet: 4, port: PortIndex(0), next_hop: 7, since: 4 }).is_err());
        let mut got = Vec::new();
        q.release(PortIndex(0), 7, |p| got.push(p.packet));
        assert_eq!(got, vec![1, 3]);
        let mut old = Vec::new();
        q.expire(100, 50, |p| old.push(p.packet));
        assert_eq!(old, vec![2]);
        assert!(q.is_empty());
    }
}
