//! Backend selection for new flows: Maglev (over the fields a listener
//! names), source hash, smooth weighted round robin, weighted least
//! connections.
//!
//! A `Scheduler` is immutable once built; it lives inside a published
//! snapshot. The mutable scheduling state is elsewhere: the round-robin
//! (and least-connections tie) cursor is per worker and per listener, so
//! workers never share a cache line to schedule; the session counts least
//! connections reads are the workers' own counters, passed in by the
//! caller.

use crate::config::{BackendConfig, HashFields, SchedulerKind};
use crate::flow::FlowKey;
use crate::maglev::MaglevTable;

/// Longest precomputed round-robin sequence; larger weight sums are scaled.
const MAX_SEQUENCE: u64 = 1 << 16;

#[derive(Debug, Clone)]
pub struct Scheduler {
    /// What it was built from, with `weights`: a rebuild with the same
    /// inputs can reuse it (see `Snapshot::build_with_health`).
    kind: SchedulerKind,
    algorithm: Algorithm,
    /// The weight each backend is scheduled by (0: no new flows).
    weights: Box<[u32]>,
}

#[derive(Debug, Clone)]
enum Algorithm {
    Maglev {
        table: MaglevTable,
        hash: HashFields,
    },
    /// Maglev keyed by the client address: a client keeps its backend
    /// while the backend set holds, and when it changes only the clients
    /// of the slots that changed owner move (Maglev's minimal disruption).
    SourceHash(MaglevTable),
    RoundRobin(RoundRobinSequence),
    LeastConnections,
}

impl Scheduler {
    /// Builds the scheduler of `backends` with the weights it schedules by
    /// (`weights[i]` for `backends[i]`; 0 takes no new flows): the
    /// configured weights after drain, health and slow start.
    pub fn build(kind: SchedulerKind, backends: &[BackendConfig], weights: &[u32]) -> Scheduler {
        assert_eq!(backends.len(), weights.len());
        let maglev = |table_size| {
            let names: Vec<String> = backends.iter().map(|b| format!("{}:{}", b.address, b.port)).collect();
            MaglevTable::build_named(&names, weights, table_size)
        };
        let algorithm = match kind {
            SchedulerKind::Maglev { table_size, hash } => Algorithm::Maglev { table: maglev(table_size), hash },
            SchedulerKind::SourceHash { table_size } => Algorithm::SourceHash(maglev(table_size)),
            SchedulerKind::RoundRobin => Algorithm::RoundRobin(RoundRobinSequence::new(weights)),
            SchedulerKind::LeastConnections => Algorithm::LeastConnections,
        };
        Scheduler { kind, algorithm, weights: weights.into() }
    }

    /// Whether `build(kind, backends, weights)` would build this again,
    /// given the same backends in the same order.
    pub fn built_from(&self, kind: SchedulerKind, weights: &[u32]) -> bool {
        self.kind == kind && *self.weights == *weights
    }

    /// Index of the backend for a new flow `key` (`flow_hash` is its
    /// five-tuple hash), `None` when none has weight. `cursor` is the
    /// caller's per-listener round-robin position; `active(i)` the
    /// sessions backend `i` has now, read only by least connections.
    #[inline]
    pub fn pick(&self, key: &FlowKey, flow_hash: u64, cursor: &mut u32, active: impl Fn(usize) -> u64) -> Option<u16> {
        match &self.algorithm {
            Algorithm::Maglev { table, hash } => table.lookup(match hash {
                HashFields::FiveTuple => flow_hash,
                HashFields::SourceIp => key.source_hash(),
                HashFields::SourceIpAndDestinationPort => key.source_and_destination_port_hash(),
            }),
            Algorithm::SourceHash(table) => table.lookup(key.source_hash()),
            Algorithm::RoundRobin(s) => s.next(cursor),
            Algorithm::LeastConnections => least_connections(&self.weights, cursor, active),
        }
    }

    /// The weight backend `i` is scheduled by; 0 for no new flows (and
    /// for an index beyond the backends).
    #[inline]
    pub fn weight(&self, i: usize) -> u32 {
        self.weights.get(i).copied().unwrap_or(0)
    }

    /// Whether a decision is a function of the packet and the snapshot
    /// alone (or of a cursor only this worker moves), so it may be made
    /// ahead, in the burst's prefetch pass, before earlier packets of the
    /// burst have created their sessions. Least connections reads session
    /// counts those sessions change, so it decides when the flow's
    /// session is created.
    #[inline]
    pub fn decides_ahead(&self) -> bool {
        !matches!(self.algorithm, Algorithm::LeastConnections)
    }

    pub fn name(&self) -> &'static str {
        match self.algorithm {
            Algorithm::Maglev { .. } => "maglev",
            Algorithm::SourceHash(_) => "source_hash",
            Algorithm::RoundRobin(_) => "round_robin",
            Algorithm::LeastConnections => "least_connections",
        }
    }

    /// Each backend's share of new flows, in slots: Maglev table entries,
    /// round-robin sequence positions, or (least connections, which gives
    /// equally loaded backends flows in proportion to them) the weights.
    pub fn shares(&self, backends: usize) -> Vec<u64> {
        let mut s = vec![0u64; backends];
        let entries: &[u16] = match &self.algorithm {
            Algorithm::Maglev { table, .. } | Algorithm::SourceHash(table) => table.entries(),
            Algorithm::RoundRobin(r) => r.sequence(),
            Algorithm::LeastConnections => {
                for (x, w) in s.iter_mut().zip(self.weights.iter()) {
                    *x = u64::from(*w);
                }
                return s;
            }
        };
        for e in entries {
            if let Some(x) = s.get_mut(usize::from(*e)) {
                *x += 1;
            }
        }
        s
    }

    /// Whether `pick` gives the same answer for the same flow every time.
    pub fn is_consistent(&self) -> bool {
        matches!(self.algorithm, Algorithm::Maglev { .. } | Algorithm::SourceHash(_))
    }
}

/// Weighted least connections: the backend with the fewest active
/// sessions per unit of weight, `active(i) / weights[i]`, compared by
/// cross-multiplication (no division, no floats). Among equals the first
/// at or after `cursor` wins and the cursor moves past it, so equal
/// backends take turns. Weight 0 is never picked.
///
/// Cost: one `active` call per weighted backend; the dataplane's `active`
/// sums two counters of every worker, so a new flow costs
/// O(backends × workers) relaxed loads (Maglev's costs one table read).
#[inline]
fn least_connections(weights: &[u32], cursor: &mut u32, active: impl Fn(usize) -> u64) -> Option<u16> {
    let n = weights.len();
    if n == 0 {
        return None;
    }
    let start = *cursor as usize % n;
    // (index, active sessions, weight) of the best so far.
    let mut best: Option<(usize, u64, u64)> = None;
    for k in 0..n {
        let i = if start + k >= n { start + k - n } else { start + k };
        let w = u64::from(weights[i]);
        if w == 0 {
            continue;
        }
        let a = active(i);
        // a / w < best_a / best_w, in u128 so no count can overflow it.
        let better = match best {
            None => true,
            Some((_, ba, bw)) => u128::from(a) * u128::from(bw) < u128::from(ba) * u128::from(w),
        };
        if better {
            best = Some((i, a, w));
        }
    }
    let (i, _, _) = best?;
    *cursor = (i + 1) as u32;
    Some(i as u16)
}

/// Smooth weighted round robin (the nginx algorithm) unrolled into a fixed
/// sequence: backends interleave instead of coming in runs, and picking is
/// one array read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundRobinSequence {
    seq: Box<[u16]>,
}

impl RoundRobinSequence {
    pub fn new(weights: &[u32]) -> RoundRobinSequence {
        let g = weights.iter().copied().filter(|w| *w > 0).fold(0u32, gcd);
        if g == 0 {
            return RoundRobinSequence { seq: Box::new([]) };
        }
        let mut w: Vec<u64> = weights.iter().map(|x| u64::from(x / g)).collect();
        let sum: u64 = w.iter().sum();
        if sum > MAX_SEQUENCE {
            for x in w.iter_mut().filter(|x| **x > 0) {
                *x = (*x * MAX_SEQUENCE / sum).max(1);
            }
        }
        let total: u64 = w.iter().sum();
        let mut current = vec![0i64; w.len()];
        let mut seq = Vec::with_capacity(total as usize);
        for _ in 0..total {
            let mut best = usize::MAX;
            for (i, wi) in w.iter().enumerate() {
                if *wi == 0 {
                    continue;
                }
                current[i] += *wi as i64;
                if best == usize::MAX || current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total as i64;
            seq.push(best as u16);
        }
        RoundRobinSequence { seq: seq.into_boxed_slice() }
    }

    #[inline]
    pub fn next(&self, cursor: &mut u32) -> Option<u16> {
        if self.seq.is_empty() {
            return None;
        }
        let i = (*cursor as usize) % self.seq.len();
        *cursor = (i + 1) as u32;
        Some(self.seq[i])
    }

    pub fn sequence(&self) -> &[u16] {
        &self.seq
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_robin_unweighted_cycles() {
        let s = RoundRobinSequence::new(&[1, 1, 1]);
        let mut c = 0;
        let picks: Vec<u16> = (0..6).map(|_| s.next(&mut c).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn round_robin_weighted_interleaves() {
        let s = RoundRobinSequence::new(&[5, 1, 1]);
        assert_eq!(s.sequence(), &[0, 0, 1, 0, 2, 0, 0]);
        let s = RoundRobinSequence::new(&[2, 0, 4]);
        assert_eq!(s.sequence(), &[2, 0, 2]);
        // README's example: 1:2:3 interleaved as c b a c b c.
        assert_eq!(RoundRobinSequence::new(&[1, 2, 3]).sequence(), &[2, 1, 0, 2, 1, 2]);
    }

    #[test]
    fn round_robin_empty_when_drained() {
        let s = RoundRobinSequence::new(&[0, 0]);
        assert_eq!(s.next(&mut 0), None);
    }

    #[test]
    fn round_robin_large_weights_scaled() {
        let s = RoundRobinSequence::new(&[65535, 65534, 3]);
        assert!(s.sequence().len() as u64 <= MAX_SEQUENCE + 3);
        let c2 = s.sequence().iter().filter(|x| **x == 2).count();
        assert!(c2 >= 1);
    }

    fn backends(n: usize) -> Vec<BackendConfig> {
        (0..n)
            .map(|i| BackendConfig {
                address: std::net::Ipv4Addr::new(10, 1, (i / 250) as u8, (i % 250 + 1) as u8),
                port: 8080,
                weight: 1,
                drained: false,
            })
            .collect()
    }

    fn lc(weights: &[u32], loads: &[u64], cursor: &mut u32) -> Option<u16> {
        least_connections(weights, cursor, |i| loads[i])
    }

    #[test]
    fn least_connections_picks_fewest_sessions_per_weight() {
        assert_eq!(lc(&[1, 1, 1], &[5, 2, 7], &mut 0), Some(1));
        // 2/3 sessions per weight beats 1/1.
        assert_eq!(lc(&[1, 3], &[1, 2], &mut 0), Some(1));
        assert_eq!(lc(&[1, 3], &[0, 2], &mut 0), Some(0));
        // Large counts and weights compare exactly: 2^40/65535 vs (2^40+1)/65535.
        assert_eq!(lc(&[65535, 65535], &[(1 << 40) + 1, 1 << 40], &mut 0), Some(1));
        assert_eq!(lc(&[], &[], &mut 0), None);
    }

    #[test]
    fn least_connections_ties_take_turns() {
        let mut c = 0;
        let picks: Vec<u16> = (0..7).map(|_| lc(&[1, 1, 1], &[4, 4, 4], &mut c).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2, 0]);
        // Equal load per weight (4/2 = 2/1) is a tie too.
        let mut c = 0;
        let picks: Vec<u16> = (0..4).map(|_| lc(&[2, 1], &[4, 2], &mut c).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 0, 1]);
    }

    #[test]
    fn least_connections_never_picks_weight_zero() {
        let mut c = 0;
        for _ in 0..5 {
            assert_eq!(lc(&[0, 1, 0], &[0, 100, 0], &mut c), Some(1));
        }
        assert_eq!(lc(&[0, 0], &[0, 0], &mut c), None);
        // Through the scheduler, with drain applied by the caller's weights.
        let s = Scheduler::build(SchedulerKind::LeastConnections, &backends(3), &[1, 0, 1]);
        let key = FlowKey::new(1, 2, 3, 4, 6);
        let mut c = 0;
        for _ in 0..6 {
            assert_ne!(s.pick(&key, 0, &mut c, |_| 0), Some(1));
        }
        assert!(!s.decides_ahead());
        assert_eq!(s.shares(3), vec![1, 0, 1]);
        assert_eq!((s.name(), s.weight(1), s.weight(9)), ("least_connections", 0, 0));
    }

    /// Connections that stay open spread exactly by weight: each goes where
    /// sessions per weight are fewest.
    #[test]
    fn least_connections_fills_backends_in_proportion_to_weight() {
        let weights = [1u32, 2, 3, 0];
        let mut active = [0u64; 4];
        let mut c = 0;
        for _ in 0..600 {
            let i = least_connections(&weights, &mut c, |i| active[i]).unwrap();
            active[usize::from(i)] += 1;
        }
        assert_eq!(active, [100, 200, 300, 0]);
        // Then one backend's connections end: the next ones all go there
        // until it is level with the others again.
        active[2] = 0;
        for _ in 0..300 {
            assert_eq!(least_connections(&weights, &mut c, |i| active[i]), Some(2));
            active[2] += 1;
        }
    }

    proptest! {
        #[test]
        fn least_connections_choice_is_a_minimum(
            wl in proptest::collection::vec((0u32..5, 0u64..1000), 1..20),
            cursor in any::<u32>(),
        ) {
            let (w, l): (Vec<u32>, Vec<u64>) = wl.into_iter().unzip();
            let mut c = cursor;
            match lc(&w, &l, &mut c) {
                None => prop_assert!(w.iter().all(|x| *x == 0)),
                Some(r) => {
                    let r = usize::from(r);
                    prop_assert!(w[r] > 0);
                    for i in 0..w.len() {
                        if w[i] > 0 {
                            prop_assert!(l[r] * u64::from(w[i]) <= l[i] * u64::from(w[r]), "{} beats {}", i, r);
                        }
                    }
                    prop_assert_eq!(c as usize, r + 1);
                }
            }
        }
    }

    fn maglev(kind: SchedulerKind, n: usize) -> Scheduler {
        Scheduler::build(kind, &backends(n), &vec![1; n])
    }

    #[test]
    fn source_hash_keeps_a_client_on_one_backend() {
        let s = maglev(SchedulerKind::SourceHash { table_size: 65537 }, 5);
        assert!(s.is_consistent() && s.decides_ahead());
        let mut seen = [0u32; 5];
        for client in 0..2000u32 {
            let pick = |sport: u16, dport: u16, proto: u8| {
                let k = FlowKey::new(0xc0a8_0000 | client, 0x0a00_0064, sport, dport, proto);
                s.pick(&k, k.hash(), &mut 0, |_| 0)
            };
            let first = pick(1024, 80, 6).unwrap();
            seen[usize::from(first)] += 1;
            for sport in [1025, 40000, 65535] {
                assert_eq!(pick(sport, 80, 6), Some(first));
            }
            // Same client on another listener (port, protocol): same slot.
            assert_eq!(pick(5353, 53, 17), Some(first));
        }
        // Clients spread over every backend.
        assert!(seen.iter().all(|n| *n > 300), "{seen:?}");
    }

    /// Removing one of ten backends moves its own clients and only a few
    /// others (Maglev's disruption bound, per client address).
    #[test]
    fn source_hash_moves_few_clients_when_the_backend_set_changes() {
        let before = maglev(SchedulerKind::SourceHash { table_size: 65537 }, 10);
        let all = backends(10);
        let removed = 4;
        let kept: Vec<BackendConfig> =
            all.iter().enumerate().filter(|(i, _)| *i != removed).map(|(_, b)| b.clone()).collect();
        let after = Scheduler::build(SchedulerKind::SourceHash { table_size: 65537 }, &kept, &[1; 9]);
        let (mut moved_other, mut on_removed) = (0, 0);
        let clients = 20_000u32;
        for c in 0..clients {
            let k = FlowKey::new(0x0b00_0000 + c * 7919, 0x0a00_0064, 1, 80, 6);
            let b = usize::from(before.pick(&k, k.hash(), &mut 0, |_| 0).unwrap());
            let a = usize::from(after.pick(&k, k.hash(), &mut 0, |_| 0).unwrap());
            let a = if a >= removed { a + 1 } else { a };
            if b == removed {
                on_removed += 1;
            } else if a != b {
                moved_other += 1;
            }
        }
        let frac = f64::from(moved_other) / f64::from(clients);
        println!("removing 1 of 10 backends moved {moved_other} of {clients} other clients ({:.2}%)", frac * 100.0);
        assert!(on_removed > 1000, "{on_removed} clients were on the removed backend");
        assert!(frac < 0.03, "{:.2}% of the other clients moved", frac * 100.0);
        // Draining (weight 0) sends none of the new flows there.
        let drained =
            Scheduler::build(SchedulerKind::SourceHash { table_size: 65537 }, &all, &[1, 1, 1, 1, 0, 1, 1, 1, 1, 1]);
        assert_eq!(drained.shares(10)[removed], 0);
    }

    #[test]
    fn maglev_hashes_the_fields_the_listener_names() {
        let pick = |hash: HashFields, k: FlowKey| {
            maglev(SchedulerKind::Maglev { table_size: 65537, hash }, 50).pick(&k, k.hash(), &mut 0, |_| 0)
        };
        let k = |sport: u16, dport: u16| FlowKey::new(0xc0a8_0001, 0x0a00_0064, sport, dport, 6);
        let source_hash = maglev(SchedulerKind::SourceHash { table_size: 65537 }, 50);
        // five_tuple: the client port matters.
        let by_port: std::collections::HashSet<_> =
            (1000..1040).map(|p| pick(HashFields::FiveTuple, k(p, 80))).collect();
        assert!(by_port.len() > 10);
        // source_ip: neither port matters; the same as source_hash.
        let ip: std::collections::HashSet<_> = (1000..1040)
            .flat_map(|p| [pick(HashFields::SourceIp, k(p, 80)), pick(HashFields::SourceIp, k(p, 443))])
            .collect();
        assert_eq!(ip.len(), 1);
        assert_eq!(ip.into_iter().next().unwrap(), source_hash.pick(&k(1, 80), 0, &mut 0, |_| 0));
        // source_ip_and_destination_port: the listener's port matters, the
        // client's does not.
        let p = HashFields::SourceIpAndDestinationPort;
        assert!((1000..1040).all(|sp| pick(p, k(sp, 80)) == pick(p, k(1, 80))));
        let by_dport: std::collections::HashSet<_> = (80..120).map(|dp| pick(p, k(1, dp))).collect();
        assert!(by_dport.len() > 10);
    }
}
