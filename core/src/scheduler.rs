//! Backend selection for new flows: Maglev or weighted round robin.
//!
//! A `Scheduler` is immutable once built; it lives inside a published
//! snapshot. The only mutable scheduling state, the round-robin cursor, is
//! per worker and per listener, so workers never share a cache line to
//! schedule.

use crate::config::{BackendConfig, SchedulerKind};
use crate::maglev::MaglevTable;

/// Longest precomputed round-robin sequence; larger weight sums are scaled.
const MAX_SEQUENCE: u64 = 1 << 16;

#[derive(Debug, Clone)]
pub enum Scheduler {
    Maglev(MaglevTable),
    RoundRobin(RoundRobinSequence),
}

impl Scheduler {
    /// Builds the scheduler of `backends` with the weights it schedules by
    /// (`weights[i]` for `backends[i]`; 0 takes no new flows): the
    /// configured weights after drain, health and slow start.
    pub fn build(kind: SchedulerKind, backends: &[BackendConfig], weights: &[u32]) -> Scheduler {
        assert_eq!(backends.len(), weights.len());
        match kind {
            SchedulerKind::Maglev { table_size } => {
                let names: Vec<String> = backends.iter().map(|b| format!("{}:{}", b.address, b.port)).collect();
                Scheduler::Maglev(MaglevTable::build_named(&names, weights, table_size))
            }
            SchedulerKind::RoundRobin => Scheduler::RoundRobin(RoundRobinSequence::new(weights)),
        }
    }

    /// Index of the chosen backend, `None` when none has weight.
    #[inline]
    pub fn pick(&self, flow_hash: u64, cursor: &mut u32) -> Option<u16> {
        match self {
            Scheduler::Maglev(t) => t.lookup(flow_hash),
            Scheduler::RoundRobin(s) => s.next(cursor),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Scheduler::Maglev(_) => "maglev",
            Scheduler::RoundRobin(_) => "round_robin",
        }
    }

    /// Slots (Maglev table entries, or round-robin sequence positions) each
    /// of `backends` backends holds.
    pub fn shares(&self, backends: usize) -> Vec<u64> {
        let mut s = vec![0u64; backends];
        let entries: &[u16] = match self {
            Scheduler::Maglev(t) => t.entries(),
            Scheduler::RoundRobin(r) => r.sequence(),
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
        matches!(self, Scheduler::Maglev(_))
    }
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
}
