//! Half-open sessions have their own cap and give way first: a new SYN
//! beyond `sessions.half_open_max_per_worker`, or one that finds the table
//! (or its key's index buckets) full, evicts a half-open session, the
//! oldest first. An established session is never evicted: when no
//! half-open session can go, the SYN is dropped (`half_open_full`, or
//! `session_table_full` when the table is full of completed sessions).

use super::{Packet, State};
use crate::counters::{DropReason, Event};
use crate::session::Session;
use crate::snapshot::Snapshot;

/// Stale entries of the arrival order one eviction looks past at most,
/// so a SYN's cost stays bounded after many handshakes completed.
const MAX_STALE_SCAN: usize = 64;

/// Evictions one SYN may cause when the table refuses it: one for each of
/// its two index keys.
const MAX_EVICTIONS_PER_INSERT: usize = 2;

impl<P: Packet> State<P> {
    /// [`State::insert_session`] for a new flow, making room for a
    /// half-open one at the expense of older half-open sessions only.
    pub(super) fn insert_evicting_half_open(
        &mut self,
        snap: &Snapshot,
        s: Session,
        hq: u64,
        rescheduled: bool,
    ) -> Result<u32, DropReason> {
        if !s.state.is_half_open() {
            return self.insert_session(s, hq, rescheduled);
        }
        if self.sessions.half_open() >= snap.half_open_max {
            let Some(victim) = self.sessions.oldest_half_open(MAX_STALE_SCAN) else {
                return Err(DropReason::HalfOpenFull);
            };
            self.evict(victim);
        }
        let mut evictions = 0;
        loop {
            match self.insert_session(s, hq, rescheduled) {
                Err(DropReason::SessionTableFull) if evictions < MAX_EVICTIONS_PER_INSERT => {
                    let victim = if self.sessions.len() == self.sessions.capacity() {
                        self.sessions.oldest_half_open(MAX_STALE_SCAN)
                    } else {
                        self.sessions.half_open_in_way_of(&s)
                    };
                    let Some(victim) = victim else {
                        return Err(DropReason::SessionTableFull);
                    };
                    self.evict(victim);
                    evictions += 1;
                }
                other => return other,
            }
        }
    }

    fn evict(&mut self, slot: u32) {
        let old = self.sessions.remove(slot);
        self.close_counters(&old);
        self.counters.event(Event::HalfOpenEvicted);
    }
}
