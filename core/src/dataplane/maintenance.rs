//! Periodic work, spread thin over loop iterations: session expiry,
//! neighbour aging and ARP retries, parked-packet timeouts; and the
//! bounded session scan behind control-plane listings.

use super::{Io, Packet, State};
use crate::counters::{DropReason, Event};
use crate::neighbor::Maintenance;
use crate::session::{Session, SessionState};
use crate::snapshot::Snapshot;

/// Sessions checked per full sweep period; the sweep visits every slot
/// about once per this many milliseconds.
const SWEEP_PERIOD_MS: u64 = 1000;
/// Most session slots one call may look at, bounding the time it takes.
const MAX_SWEEP_PER_CALL: u64 = 256;
/// Most slots the sweep may owe (when calls are rare, e.g. while idle).
const MAX_SWEEP_CREDIT_SLOTS: u64 = 1 << 20;
pub(super) const MAX_NEIGHBOR_SCAN_PER_TICK: u64 = 1024;

impl<P: Packet> State<P> {
    pub(super) fn tick(&mut self, snap: &Snapshot, io: &mut impl Io<P>) {
        let now = self.now;
        let dt = u64::from(now.wrapping_sub(self.last_tick));
        // Session expiry: visit every slot about once per sweep period. The
        // credit grows with time; it is spent a little on every call (loop
        // iteration), so a large table costs a steady trickle, never a
        // pause.
        if dt > 0 {
            self.sweep_credit = (self.sweep_credit + self.sessions.sweep_span() as u64 * dt)
                .min(MAX_SWEEP_CREDIT_SLOTS * SWEEP_PERIOD_MS);
        }
        let budget = (self.sweep_credit / SWEEP_PERIOD_MS).min(MAX_SWEEP_PER_CALL);
        if budget > 0 {
            self.sweep_credit -= budget * SWEEP_PERIOD_MS;
            let c = &self.counters;
            let admission = &mut self.admission;
            let n = self.sessions.expire(now, budget as usize, &snap.timeouts, |s| {
                c.listeners[usize::from(s.listener)].sessions_closed.inc();
                c.backends[usize::from(s.backend_id)].sessions_closed.inc();
                admission.session_closed(s.listener.0, s.client_ip);
            });
            if n > 0 {
                c.event_n(Event::SessionsExpired, n as u64);
                c.sessions_active.set(self.sessions.len() as u64);
            }
        }
        if dt == 0 {
            return;
        }
        self.last_tick = now;
        self.sweep_fragments(io);
        self.sweep_held(io);
        self.admission.tick(now, &self.counters.admission);

        // Neighbour aging and retries: scan the cache twice per retry
        // interval so retries go out on time.
        let period = u64::from(snap.arp.retry_ms / 2).clamp(1, 500);
        let slots = self.neighbors.slot_count() as u64;
        self.neighbor_credit = (self.neighbor_credit + slots * dt).min(MAX_NEIGHBOR_SCAN_PER_TICK * period);
        let budget = self.neighbor_credit / period;
        if budget > 0 {
            self.neighbor_credit -= budget * period;
            let mut m = std::mem::take(&mut self.maintenance);
            m.clear();
            self.neighbors.maintain(now, budget as usize, |x| {
                if m.len() < m.capacity() {
                    m.push(x)
                }
            });
            for x in &m {
                match *x {
                    Maintenance::Request { port, ip } => self.arp_request(snap, port, ip, io),
                    Maintenance::Failed { port, ip } => {
                        let c = &self.counters;
                        self.pending.release(port, ip, |p| {
                            c.count_drop(DropReason::NeighborUnresolved);
                            io.free(p.packet);
                        });
                    }
                }
            }
            self.maintenance = m;
        }

        let c = &self.counters;
        self.pending.expire(now, snap.park_max_ms, |p| {
            c.count_drop(DropReason::NeighborUnresolved);
            io.free(p.packet);
        });
        c.parked.set(self.pending.len() as u64);
    }

    /// Live sessions in slots `start..start + budget` that `keep` accepts,
    /// at most `limit`; and where to continue (None: the end was reached).
    pub(super) fn scan_sessions(
        &self,
        start: u32,
        budget: u32,
        limit: usize,
        keep: &dyn Fn(&Session) -> bool,
    ) -> (Vec<Session>, Option<u32>) {
        let span = self.sessions.sweep_span() as u32;
        let end = start.saturating_add(budget).min(span);
        let mut out = Vec::new();
        for slot in start..end {
            let s = self.sessions.session(slot);
            if s.state != SessionState::Free && keep(s) {
                out.push(*s);
                if out.len() >= limit {
                    return (out, Some(slot + 1).filter(|n| *n < span));
                }
            }
        }
        (out, (end < span).then_some(end))
    }
}
