//! The packet core of one worker: classify, look up or create the session,
//! rewrite, resolve the next hop, hand over for TX.
//!
//! By concern: `classify` (the first look at a packet), `flow_path`
//! (sessions, and the one forward tail of requests and replies), `local`
//! (ARP and ICMP answered here), `maintenance` (periodic work). This module
//! holds the [`Dataplane`], its per-worker `State` and the burst driver
//! that feeds packets through in stages.
//!
//! Plain safe Rust over byte buffers: it knows nothing of DPDK. A worker
//! lcore drives it with mbufs through the [`Io`] trait; tests drive it with
//! `Vec<u8>` packets and inspect what comes out. Nothing here allocates,
//! locks or makes a system call per packet.

use crate::admission::Admission;
use crate::counters::{DropReason, Event, WorkerCounters};
use crate::flow::FlowKey;
use crate::hashkey::HashKeys;
use crate::ids::BackendId;
use crate::ids::{ListenerPos, PortIndex};
use crate::memory::Placement;
use crate::neighbor::{Maintenance, NeighborCache, PendingQueue};
use crate::persistence::PersistenceTable;
use crate::ratelimit::TokenBucket;
use crate::rss::OwnerHash;
use crate::session::{Direction, Session, SessionTable};
use crate::snapshot::{ListenerView, Snapshot};
use crate::wire::MacAddr;
use std::sync::Arc;

mod classify;
mod flow_path;
mod fragment;
mod half_open;
mod icmp_error;
mod local;
mod maintenance;
mod synproxy;

use classify::Class;
use maintenance::MAX_NEIGHBOR_SCAN_PER_TICK;

/// A packet buffer the core can read and rewrite.
pub trait Packet {
    /// The bytes of the first segment (holding at least every header).
    fn data(&self) -> &[u8];
    fn data_mut(&mut self) -> &mut [u8];
    /// Length of the whole packet, all segments.
    fn packet_len(&self) -> usize;
    /// Index (in the configuration) of the port the packet arrived on.
    fn port(&self) -> PortIndex;
    /// Shortens the packet to `len` bytes; false when it cannot (e.g. a
    /// multi-segment packet).
    fn truncate(&mut self, len: usize) -> bool;
    /// How the core's tables are placed and prefetched on the machine this
    /// packet type lives on: DPDK's mbufs bring DPDK's hints, plain
    /// buffers none (see [`crate::memory`]).
    type Placement: Placement;
}

/// Where the core sends packets; the worker implements it over DPDK queues
/// and rings, tests over vectors.
pub trait Io<P> {
    /// Queue for transmission on config port `port`.
    fn tx(&mut self, port: PortIndex, pkt: P);
    /// Pass to worker `worker`, which owns the packet's flow.
    fn handoff(&mut self, worker: usize, pkt: P);
    /// Release a packet that was dropped (already counted) or consumed.
    fn free(&mut self, pkt: P);
    /// A new packet of `len` bytes, noted as arrived on `port`.
    fn alloc(&mut self, len: usize, port: PortIndex) -> Option<P>;
    /// Pass up to the kernel interface of config port `port` (the
    /// exception path); already admitted by the rate limit. Counts its own
    /// drop when the queue towards the kernel is full.
    fn to_kernel(&mut self, port: PortIndex, pkt: P);
}

/// Mutable per-worker state: everything but the snapshot, so a `&Snapshot`
/// and a `&mut State` can be held together.
struct State<P: Packet> {
    worker: usize,
    workers: usize,
    /// The owner-shard function under this instance's key.
    owners: OwnerHash,
    sessions: SessionTable<P::Placement>,
    neighbors: NeighborCache,
    pending: PendingQueue<P>,
    /// Round-robin (and least-connections tie) cursor per listener id.
    rr: Box<[u32]>,
    counters: Arc<WorkerCounters>,
    shared: Shared,
    now: u32,
    last_tick: u32,
    sweep_credit: u64,
    neighbor_credit: u64,
    maintenance: Vec<Maintenance>,
    /// Flow packets of the current burst between stages (preallocated).
    stage: Stage<P>,
    /// The last listener a packet matched: (listener key, snapshot
    /// generation, position). Most traffic goes to a few VIPs.
    listener_memo: std::cell::Cell<(u64, u64, ListenerPos)>,
    /// Recent next-hop resolutions: (port and address, MAC, cache epoch).
    next_hop_memo: [(u64, MacAddr, u64); NEXT_HOP_MEMO],
    /// What may still go up to each port's kernel interface (exception
    /// path): one bucket per port, so a flood at the client-facing port's
    /// address cannot starve the host's own traffic with the backends
    /// (its ARP, its health checks) on another port.
    to_kernel: Box<[TokenBucket]>,
    /// Echo replies this worker may still send.
    echo_replies: TokenBucket,
    /// IPv4 fragments on their way (see `fragment`).
    frags: fragment::Fragments<P>,
    /// Rate limits and VIP protection (`crate::admission`).
    admission: Admission,
    /// ICMP errors (time exceeded, fragmentation needed) this worker may
    /// still send.
    icmp_errors: TokenBucket,
    /// ICMP errors about flows this worker may still forward.
    icmp_forwards: TokenBucket,
    /// The SYN proxy's cookie key (this worker's: a client's SYN and ACK
    /// reach the same worker).
    cookie_key: crate::synproxy::CookieKey,
    /// The SYN proxy's state of each session slot (see `synproxy`).
    proxy_slots: Box<[synproxy::ProxySlot]>,
    /// Client segments waiting for their backend's handshake (`synproxy`).
    held: synproxy::HeldSegments<P>,
}

const NEXT_HOP_MEMO: usize = 16;

/// What the core knows of a flow packet between the stages of a burst:
/// written in place by the classifier, completed by the lookups, read in
/// place by [`State::request`] or [`State::reply`]. Never moved by value
/// in the burst loop: a copy of its small fields, stored piece by piece and
/// read back whole, stalls on store forwarding (perf put three such stalls
/// at about 9 % of the 1k-session row's samples).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Staged {
    key: FlowKey,
    hash: u64,
    flags: u8,
    listener: Option<ListenerPos>,
    /// The worker that owns the flow.
    owner: usize,
    /// The session lookup's answer (stage 2).
    found: Option<(u32, Direction)>,
    /// The ways of the key's first index bucket that its tag matches
    /// (stage 2, from the session prefetch, for the lookup).
    ways: u8,
    /// The backend picked ahead for a new flow (stage 2).
    pick: Option<u16>,
}

/// A burst's flow packets between stages: packet `i` of `pkts` is
/// described by `flows[i]` (a fixed array, so the classifier can write
/// the next entry in place).
struct Stage<P> {
    flows: Box<[Staged]>,
    pkts: Vec<P>,
}

impl<P> Stage<P> {
    fn new() -> Stage<P> {
        Stage { flows: vec![Staged::default(); STAGE].into_boxed_slice(), pkts: Vec::with_capacity(STAGE) }
    }

    /// The entry the next staged packet takes.
    #[inline(always)]
    fn next(&mut self) -> &mut Staged {
        &mut self.flows[self.pkts.len()]
    }
}

impl<P> Default for Stage<P> {
    /// Empty and without room: what a worker's stage is while its burst
    /// holds it.
    fn default() -> Stage<P> {
        Stage { flows: Box::default(), pkts: Vec::new() }
    }
}

/// Flow packets processed per stage round.
const STAGE: usize = 256;

/// How many packets ahead of its lookup a packet's session line is
/// prefetched, and its index line (which says where the session is, so
/// it must come first). The first round issued a burst's prefetches in a
/// tight loop per step, measured on an Intel VM where a prefetch waiting
/// for a page walk holds up retirement, so spreading them cost. On Zen 4
/// (the seventh sitting in benches/RESULTS.md) a C probe on a 70 MB table
/// found 4 prefetches in a row all arriving but 32 in a row leaving 7 of
/// the 16.5 ns a line costs unprefetched, while one prefetch issued a few
/// items' work ahead hid the whole miss; in lbd, 8 and 16 measured best
/// of 4/8, 8/12, 8/16, 8/24, 12/24 and 16/32 (1M sessions p50 86 -> 78 ns).
const SESSION_AHEAD: usize = 8;
const INDEX_AHEAD: usize = 16;
const _: () = assert!(INDEX_AHEAD > SESSION_AHEAD);

/// The same for the half-open sessions that new flows evict while the
/// half-open cap is full: the evictee's session line, then (read from it)
/// its index lines, so many evictions ahead of its own.
const VICTIM_SESSION_AHEAD: usize = 8;
const VICTIM_INDEX_AHEAD: usize = 4;
const _: () = assert!(VICTIM_SESSION_AHEAD > VICTIM_INDEX_AHEAD);

pub struct Dataplane<P: Packet> {
    snap: Arc<Snapshot>,
    st: State<P>,
}

impl<P: Packet> std::fmt::Debug for Dataplane<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane").field("worker", &self.st.worker).field("sessions", &self.st.sessions).finish()
    }
}

/// What the workers' cores share besides the snapshot, given to each at
/// construction.
#[derive(Debug, Clone)]
pub struct Shared {
    /// Every worker's counters, this one's included: least connections
    /// sums each backend's sessions over them (relaxed loads of
    /// single-writer counters, no lock).
    pub counters: Arc<[Arc<WorkerCounters>]>,
    /// The persistence table of all listeners, read and written by every
    /// worker.
    pub persistence: Arc<PersistenceTable>,
}

/// Persistence entries of a core made by [`Dataplane::new`] (tests, tools).
const STANDALONE_PERSISTENCE_ENTRIES: usize = 4096;

/// Settings of a worker's core that do not change with snapshots.
#[derive(Clone, Copy, Debug)]
pub struct CoreSettings {
    pub worker: usize,
    pub workers: usize,
    pub session_capacity: usize,
    pub neighbor_capacity: usize,
    pub pending_capacity: usize,
    /// Packets per second this worker may pass up to each port's kernel
    /// interface (its share of `exception.to_kernel_rate`).
    pub to_kernel_rate: u32,
    /// ICMP echo replies per second this worker sends (its share of
    /// `icmp.echo_reply_rate`).
    pub echo_reply_rate: u32,
    /// Bounds of the fragment tables (`fragments`).
    pub fragments: crate::fragments::FragmentLimits,
    /// Entries of the per-source limits table (`limits.source_entries`).
    pub source_entries: usize,
    /// ICMP errors per second this worker sends (its share of
    /// `icmp.error_rate`).
    pub icmp_error_rate: u32,
    /// ICMP errors about flows per second this worker forwards (its share
    /// of `icmp.forward_rate`).
    pub icmp_forward_rate: u32,
    /// The instance's session-table and owner-shard keys, the same in
    /// every worker.
    pub hash_keys: HashKeys,
    /// Client segments the SYN proxy holds (`sessions.syn_proxy_held`).
    pub syn_proxy_held: usize,
}

impl CoreSettings {
    /// Small tables, rates of 1000/s and the fixed hash keys: the base of
    /// the cores the core's tests, the fuzz harness and the benchmarks
    /// build (each sets what it measures or needs on top, by struct
    /// update). Not lbd's settings, which come from the configuration.
    pub fn small(worker: usize, workers: usize) -> CoreSettings {
        CoreSettings {
            worker,
            workers,
            session_capacity: 64,
            neighbor_capacity: 64,
            pending_capacity: 4,
            to_kernel_rate: 1000,
            echo_reply_rate: 1000,
            fragments: crate::fragments::FragmentLimits::default(),
            source_entries: 4096,
            icmp_error_rate: 1000,
            icmp_forward_rate: 10_000,
            hash_keys: HashKeys::FIXED,
            syn_proxy_held: 1024,
        }
    }
}

impl<P: Packet> Dataplane<P> {
    /// A core that shares nothing with other workers: least connections
    /// counts its own sessions only, its persistence table is its own.
    pub fn new(settings: CoreSettings, snap: Arc<Snapshot>, counters: Arc<WorkerCounters>) -> Dataplane<P> {
        let shared = Shared {
            counters: Arc::new([Arc::clone(&counters)]),
            persistence: Arc::new(PersistenceTable::new(STANDALONE_PERSISTENCE_ENTRIES)),
        };
        Self::with_shared(settings, snap, counters, shared)
    }

    /// A worker's core among others: `shared.counters` holds every
    /// worker's counters, `counters` among them.
    pub fn with_shared(
        settings: CoreSettings,
        snap: Arc<Snapshot>,
        counters: Arc<WorkerCounters>,
        shared: Shared,
    ) -> Dataplane<P> {
        let sessions = SessionTable::with_key(settings.session_capacity, settings.hash_keys.session);
        counters.session_capacity.set(sessions.capacity() as u64);
        counters.session_memory.set(sessions.memory_bytes() as u64);
        let mut neighbors = NeighborCache::new(settings.neighbor_capacity, snap.arp);
        for (port, ip, mac) in &snap.static_neighbors {
            neighbors.add_static(*port, *ip, *mac);
        }
        let mut admission = Admission::new(settings.workers, crate::config::MAX_LISTENERS, settings.source_entries);
        admission.sync(&snap, 0, &counters.admission);
        Dataplane {
            st: State {
                worker: settings.worker,
                workers: settings.workers,
                owners: OwnerHash::new(&settings.hash_keys.rss),
                sessions,
                neighbors,
                pending: PendingQueue::new(settings.pending_capacity),
                rr: vec![0; crate::config::MAX_LISTENERS].into_boxed_slice(),
                counters,
                shared,
                now: 0,
                last_tick: 0,
                sweep_credit: 0,
                neighbor_credit: 0,
                maintenance: Vec::with_capacity(MAX_NEIGHBOR_SCAN_PER_TICK as usize),
                stage: Stage::new(),
                listener_memo: std::cell::Cell::new((0, 0, ListenerPos(0))),
                next_hop_memo: [(0, MacAddr::ZERO, 0); NEXT_HOP_MEMO],
                to_kernel: (0..crate::config::MAX_PORTS)
                    .map(|_| {
                        TokenBucket::new(settings.to_kernel_rate, TokenBucket::default_burst(settings.to_kernel_rate))
                    })
                    .collect(),
                echo_replies: TokenBucket::new(
                    settings.echo_reply_rate,
                    TokenBucket::default_burst(settings.echo_reply_rate),
                ),
                frags: fragment::Fragments::new(settings.fragments),
                admission,
                icmp_errors: TokenBucket::new(
                    settings.icmp_error_rate,
                    TokenBucket::default_burst(settings.icmp_error_rate),
                ),
                icmp_forwards: TokenBucket::new(
                    settings.icmp_forward_rate,
                    TokenBucket::default_burst(settings.icmp_forward_rate),
                ),
                cookie_key: crate::synproxy::CookieKey::random(),
                // Zeroed words: allocated without being touched.
                proxy_slots: vec![[0u32; 8]; settings.session_capacity].into_boxed_slice(),
                held: synproxy::HeldSegments::new(settings.syn_proxy_held),
            },
            snap,
        }
    }

    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snap
    }

    /// Switches to a newer snapshot (between bursts).
    pub fn set_snapshot(&mut self, snap: Arc<Snapshot>) {
        for (port, ip, mac) in &snap.static_neighbors {
            self.st.neighbors.add_static(*port, *ip, *mac);
        }
        self.st.admission.sync(&snap, self.st.now, &self.st.counters.admission);
        self.snap = snap;
    }

    /// Sets the worker's clock (milliseconds, wrapping).
    #[inline]
    pub fn set_now(&mut self, now_ms: u32) {
        self.st.now = now_ms;
    }

    pub fn sessions(&self) -> &SessionTable<P::Placement> {
        &self.st.sessions
    }

    pub fn neighbors(&self) -> &NeighborCache {
        &self.st.neighbors
    }

    pub fn parked(&self) -> usize {
        self.st.pending.len()
    }

    /// Fragments held until their datagram's first fragment comes.
    pub fn fragments_held(&self) -> usize {
        self.st.frags.held_total
    }

    /// Replaces the SYN-cookie key (random per worker at start) with a
    /// known one: the fuzz harness builds a core per input, and a corpus
    /// entry that completes a proxied handshake must meet the same key.
    pub fn set_cookie_key(&mut self, key: crate::synproxy::CookieKey) {
        self.st.cookie_key = key;
    }

    /// Client segments the SYN proxy holds until their backend answers.
    pub fn syn_proxy_held(&self) -> usize {
        self.st.held.len()
    }

    /// Processes a packet received from a port.
    #[inline]
    pub fn process(&mut self, pkt: P, io: &mut impl Io<P>) {
        self.process_burst(std::iter::once(pkt), io);
    }

    /// Processes a burst of packets received from ports.
    #[inline]
    pub fn process_burst(&mut self, pkts: impl Iterator<Item = P>, io: &mut impl Io<P>) {
        self.st.burst(&self.snap, pkts, false, io);
    }

    /// Processes a packet another worker handed over: a flow this worker
    /// owns, or a copy of an ARP packet to learn from.
    #[inline]
    pub fn process_handoff(&mut self, pkt: P, io: &mut impl Io<P>) {
        self.process_handoff_burst(std::iter::once(pkt), io);
    }

    /// Processes a burst handed over by other workers.
    #[inline]
    pub fn process_handoff_burst(&mut self, pkts: impl Iterator<Item = P>, io: &mut impl Io<P>) {
        self.st.burst(&self.snap, pkts, true, io);
    }

    /// Periodic work, spread thin: session expiry, ARP aging and retries,
    /// parked-packet timeouts. Call once per loop iteration.
    pub fn tick(&mut self, io: &mut impl Io<P>) {
        self.st.tick(&self.snap, io);
    }

    /// See `State::scan_sessions`: a bounded slice of the session table
    /// for a control-plane listing.
    pub fn scan_sessions(
        &self,
        start: u32,
        budget: u32,
        limit: usize,
        keep: &dyn Fn(&Session) -> bool,
    ) -> (Vec<Session>, Option<u32>) {
        self.st.scan_sessions(start, budget, limit, keep)
    }

    /// The worker's clock (ms).
    pub fn now(&self) -> u32 {
        self.st.now
    }

    /// Frees everything held (at shutdown).
    pub fn drain(&mut self, io: &mut impl Io<P>) {
        let st = &mut self.st;
        for p in st.pending.drain() {
            st.counters.count_drop(DropReason::Shutdown);
            io.free(p.packet);
        }
        st.counters.parked.set(0);
        st.drain_fragments(io);
        st.drain_held(io);
    }
}

impl<P: Packet> State<P> {
    #[inline]
    fn discard(&self, reason: DropReason, pkt: P, io: &mut impl Io<P>) {
        self.counters.count_drop(reason);
        io.free(pkt);
    }

    /// Passes a frame for the host up to `port`'s kernel interface, within
    /// the exception path's rate: a flood to the host costs the data plane
    /// a token check per packet, never the kernel's time.
    fn pass_up(&mut self, port: PortIndex, pkt: P, io: &mut impl Io<P>) {
        if !self.to_kernel[usize::from(port)].take(self.now) {
            return self.discard(DropReason::KernelRateLimited, pkt, io);
        }
        io.to_kernel(port, pkt);
    }

    /// A burst in stages, so the session-table cache misses of all its
    /// packets overlap instead of queueing one after another: classify
    /// every packet; prefetch all their index buckets; then prefetch the
    /// sessions the buckets point at; then process. Packets other than
    /// TCP/UDP flows flush the stages first, so arrival order holds.
    /// A packet to a local address on a port no listener serves: when the
    /// address is a VIP protected as a whole, it counts towards the VIP's
    /// rates (an attack on closed ports is an attack on the VIP).
    fn no_listener(&mut self, snap: &Snapshot, pkt: P, io: &mut impl Io<P>) {
        // Classify accepted it as an untagged IPv4 TCP/UDP packet.
        let d = pkt.data();
        let dst = d.get(30..34).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let reason = match snap.protected_vip(dst) {
            Some(v) => self.admission.no_listener(v, pkt.packet_len(), self.now, &self.counters.admission),
            None => DropReason::NoListener,
        };
        self.discard(reason, pkt, io)
    }

    fn burst(&mut self, snap: &Snapshot, pkts: impl Iterator<Item = P>, from_handoff: bool, io: &mut impl Io<P>) {
        let mut stage = std::mem::take(&mut self.stage);
        for pkt in pkts {
            if !from_handoff {
                if let Some(c) = self.counters.ports.get(usize::from(pkt.port())) {
                    c.rx_packets.inc();
                    c.rx_bytes.add(pkt.packet_len() as u64);
                }
            }
            match self.classify(snap, &pkt, stage.next()) {
                Class::Flow => {
                    let s = stage.next();
                    if !from_handoff && s.owner != self.worker {
                        io.handoff(s.owner, pkt);
                        continue;
                    }
                    s.hash = self.sessions.hash(&s.key);
                    s.found = None;
                    s.pick = None;
                    stage.pkts.push(pkt);
                    if stage.pkts.len() == STAGE {
                        self.run_staged(snap, &mut stage, io);
                    }
                }
                Class::IcmpError if !from_handoff && stage.next().owner != self.worker => {
                    io.handoff(stage.next().owner, pkt)
                }
                other => {
                    // An ICMP error's flow, written where the next flow
                    // packet's entry goes (which the run below reuses).
                    let quoted = stage.next().key;
                    self.run_staged(snap, &mut stage, io);
                    match other {
                        Class::Arp => self.arp(snap, pkt, from_handoff, io),
                        Class::Icmp => self.icmp(snap, pkt, io),
                        Class::IcmpError => self.forward_icmp_error(snap, pkt, quoted, io),
                        Class::Kernel(port) => self.pass_up(port, pkt, io),
                        Class::Drop(DropReason::TtlExceeded) => self.ttl_expired(snap, pkt, io),
                        Class::Drop(DropReason::NoListener) if !snap.vips.is_empty() => self.no_listener(snap, pkt, io),
                        Class::Drop(r) => self.discard(r, pkt, io),
                        Class::Fragment => self.fragment(snap, pkt, from_handoff, io),
                        Class::Flow => unreachable!("matched above"),
                    }
                }
            }
        }
        self.run_staged(snap, &mut stage, io);
        self.stage = stage;
    }

    /// The one decision of a new flow's backend (position in `l`), made
    /// in the prefetch pass or in `request`, never both: the client's
    /// remembered backend while persistence holds and it still takes new
    /// flows, else the scheduler's pick. Maglev hashes with the fixed
    /// [`FlowKey::hash`], not the session table's keyed one: every
    /// instance must pick the same backend for a flow.
    #[inline]
    fn choose(&mut self, snap: &Snapshot, l: &ListenerView, key: &FlowKey) -> Option<u16> {
        if let Some(ttl) = l.persistence_ms {
            let table = &self.shared.persistence;
            if let Some(bid) = table.lookup(table.key(l.id, key.src()), self.now, ttl) {
                if let Some(bi) = remembered_position(snap, l, bid) {
                    self.counters.event(Event::PersistenceHits);
                    return Some(bi);
                }
            }
        }
        let workers = &self.shared.counters;
        l.scheduler.pick(key, key.hash(), &mut self.rr[usize::from(l.id)], |bi| {
            crate::counters::active_sessions(workers, l.backends[bi].id)
        })
    }

    fn run_staged(&mut self, snap: &Snapshot, stage: &mut Stage<P>, io: &mut impl Io<P>) {
        let staged = &mut stage.flows[..stage.pkts.len()];
        let n = staged.len();
        // All lookups first, so that their cache misses overlap: each
        // packet's index line and session line are asked for
        // `INDEX_AHEAD` and `SESSION_AHEAD` lookups before its own.
        for s in staged[..n.min(INDEX_AHEAD)].iter() {
            self.sessions.prefetch(s.hash);
        }
        // From here on `confirm` can check the lookups' answers.
        self.sessions.mark();
        // While the half-open cap is full (a SYN flood, or new flows
        // faster than handshakes complete), each new flow evicts the
        // oldest half-open session, whose session line and index lines
        // are cold; the arrival order says which ones ahead of time. The
        // first victims' session lines now, their index lines once the
        // lookups have said which packets are new, and the later victims'
        // a few evictions ahead of their own (`VICTIM_SESSION_AHEAD`).
        let near_cap = |n: usize| (self.sessions.half_open() + n).saturating_sub(snap.half_open_max).min(n);
        self.sessions.prefetch_oldest_half_open(near_cap(n).min(VICTIM_SESSION_AHEAD));
        for s in staged[..n.min(SESSION_AHEAD)].iter_mut() {
            s.ways = self.sessions.prefetch_candidates(s.hash);
        }
        for i in 0..n {
            if let Some(s) = staged.get(i + INDEX_AHEAD) {
                self.sessions.prefetch(s.hash);
            }
            if let Some(s) = staged.get_mut(i + SESSION_AHEAD) {
                s.ways = self.sessions.prefetch_candidates(s.hash);
            }
            let s = &mut staged[i];
            s.found = self.sessions.lookup_candidates(&s.key, s.hash, s.ways);
        }
        let evictions = near_cap(staged.iter().filter(|s| s.found.is_none()).count());
        self.sessions.prefetch_oldest_half_open_index(evictions.min(VICTIM_INDEX_AHEAD));
        // New flows (and flows whose session has lapsed) will touch more
        // random lines: the backend-side key's bucket, the lapsed
        // session's. Pick their backends now and prefetch those lines, so
        // they too arrive together. Where the decision depends on what
        // earlier packets of the burst do (persistence, least
        // connections), it waits for `request`; prefetch what it will read.
        for s in staged.iter_mut() {
            let Some(li) = s.listener else { continue };
            match s.found {
                Some((slot, Direction::Request)) if self.expired(snap, slot) => {
                    self.sessions.prefetch(self.sessions.hash(&self.sessions.session(slot).reply_key()));
                }
                Some((_, Direction::Request)) => continue,
                Some(_) => continue,
                None => {}
            }
            let l = &snap.listeners[usize::from(li)];
            let bi = if l.decides_ahead {
                s.pick = self.choose(snap, l, &s.key);
                s.pick
            } else {
                // `request` decides; a client with a live persistence entry
                // will most likely get its backend, so prefetch for that
                // (a guess, never a decision).
                l.persistence_ms.and_then(|ttl| {
                    let table = &self.shared.persistence;
                    let bid = table.lookup(table.key(l.id, s.key.src()), self.now, ttl)?;
                    remembered_position(snap, l, bid)
                })
            };
            if let Some(bi) = bi {
                let b = &l.backends[usize::from(bi)];
                let rk = FlowKey::new(b.addr, s.key.src(), b.port, s.key.sport(), s.key.proto());
                // The conflict check of the insert reads its first line
                // (the second only if that one overflowed), and the insert
                // puts the key there when it has a free way.
                self.sessions.prefetch(self.sessions.hash(&rk));
            }
        }
        let version = self.sessions.version();
        let mut evicted = 0;
        for (s, pkt) in staged.iter_mut().zip(stage.pkts.drain(..)) {
            // An earlier packet of this burst may have created, removed or
            // replaced a session since: then check the answer again.
            if self.sessions.version() != version {
                s.found = self.sessions.confirm(s.found, &s.key, s.hash);
            }
            if s.found.is_none() && evicted < evictions {
                // This packet most likely evicts the oldest half-open
                // session: ask for what the evictions that many new flows
                // later will touch, as the lookups do.
                if evicted + VICTIM_INDEX_AHEAD < evictions {
                    self.sessions.prefetch_half_open_index_at(VICTIM_INDEX_AHEAD);
                }
                if evicted + VICTIM_SESSION_AHEAD < evictions {
                    self.sessions.prefetch_half_open_at(VICTIM_SESSION_AHEAD);
                }
                evicted += 1;
            }
            self.flow(snap, pkt, s, io);
        }
    }
}

/// The position in `l` of backend `id`, remembered for a client, when it
/// may still take the client's new flows: still configured for `l`, with
/// weight (not drained, healthy, past slow start's zero).
#[inline]
fn remembered_position(snap: &Snapshot, l: &ListenerView, id: BackendId) -> Option<u16> {
    let (li, bi) = snap.backend_position(id)?;
    let same_listener = snap.listeners.get(usize::from(li)).is_some_and(|x| x.id == l.id);
    (same_listener && l.scheduler.weight(usize::from(bi)) > 0).then_some(bi)
}

#[cfg(test)]
mod tests;
