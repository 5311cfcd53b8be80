//! Questions the control thread asks workers about state only a worker may
//! read (its sessions, its neighbour cache).
//!
//! A worker looks at its query channel once a millisecond, between bursts;
//! a session listing walks a bounded slice of the table per question, so a
//! large table is listed over many short visits instead of one long stall.
//!
//! This is the contract between the two sides: the control plane sends
//! [`WorkerQuery`]s, the worker answers them with [`answer`]. It lives
//! outside `control` so the data path does not import the control plane.

use crossbeam_channel::{bounded, Receiver, Sender};
use lbcore::ids::{ListenerId, PortIndex};
use lbcore::session::Session;
use lbcore::wire::MacAddr;

/// Session slots one query may walk.
pub const SCAN_BUDGET: u32 = 16_384;

/// Which sessions a listing wants.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionMatch {
    pub listener: Option<ListenerId>,
    pub backend_ip: Option<u32>,
    pub backend_port: Option<u16>,
}

impl SessionMatch {
    pub fn matches(&self, s: &Session) -> bool {
        self.listener.is_none_or(|l| l == s.listener)
            && self.backend_ip.is_none_or(|a| a == s.backend_ip)
            && self.backend_port.is_none_or(|p| p == s.backend_port)
    }
}

#[derive(Debug)]
pub struct SessionsChunk {
    pub sessions: Vec<Session>,
    /// Where the next query should start; `None` when the table is done.
    pub next: Option<u32>,
    /// The worker's clock when it answered (ms), for idle times.
    pub now_ms: u32,
}

#[derive(Debug, Clone)]
pub struct NeighborRecord {
    pub port: PortIndex,
    pub ip: u32,
    pub mac: MacAddr,
    pub state: &'static str,
    pub age_ms: u32,
}

#[derive(Debug)]
pub enum WorkerQuery {
    Sessions { filter: SessionMatch, start: u32, limit: u32, reply: Sender<SessionsChunk> },
    Neighbors { reply: Sender<Vec<NeighborRecord>> },
}

/// The worker's end.
#[derive(Debug)]
pub struct QueryInbox(Receiver<WorkerQuery>);

impl QueryInbox {
    /// The next pending question, without waiting.
    #[inline]
    pub fn next(&self) -> Option<WorkerQuery> {
        self.0.try_recv().ok()
    }
}

/// Answers `q` from the worker's state (on the worker, between bursts).
pub fn answer<P: lbcore::dataplane::Packet>(dp: &lbcore::dataplane::Dataplane<P>, q: WorkerQuery) {
    match q {
        WorkerQuery::Sessions { filter, start, limit, reply } => {
            let (sessions, next) = dp.scan_sessions(start, SCAN_BUDGET, limit.max(1) as usize, &|s| filter.matches(s));
            let _ = reply.try_send(SessionsChunk { sessions, next, now_ms: dp.now() });
        }
        WorkerQuery::Neighbors { reply } => {
            use lbcore::neighbor::NeighborState;
            let now = dp.now();
            let list = dp
                .neighbors()
                .iter()
                .map(|e| NeighborRecord {
                    port: e.port,
                    ip: e.ip,
                    mac: e.mac,
                    state: match e.state {
                        NeighborState::Static => "static",
                        NeighborState::Reachable => "reachable",
                        NeighborState::Stale => "stale",
                        NeighborState::Incomplete => "incomplete",
                    },
                    age_ms: if e.state == NeighborState::Static { 0 } else { now.wrapping_sub(e.updated) },
                })
                .collect();
            let _ = reply.try_send(list);
        }
    }
}

/// A channel of a few pending questions per worker.
pub fn channel() -> (Sender<WorkerQuery>, QueryInbox) {
    let (tx, rx) = bounded(16);
    (tx, QueryInbox(rx))
}
