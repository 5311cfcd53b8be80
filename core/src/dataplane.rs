//! The packet core of one worker: classify, look up or create the session,
//! rewrite, resolve the next hop, hand over for TX.
//!
//! Plain safe Rust over byte buffers: it knows nothing of DPDK. A worker
//! lcore drives it with mbufs through the [`Io`] trait; tests drive it with
//! `Vec<u8>` packets and inspect what comes out. Nothing here allocates,
//! locks or makes a system call per packet.

use crate::config::{NonSynPolicy, RemovedBackendPolicy};
use crate::counters::{DropReason, Event, WorkerCounters};
use crate::flow::{owner_shard, FlowKey};
use crate::memory::Placement;
use crate::nat::{self, Endpoint};
use crate::neighbor::{Learned, Maintenance, NeighborCache, Parked, PendingQueue, Resolution};
use crate::session::{Direction, InsertError, Session, SessionState, SessionTable};
use crate::snapshot::{ListenerView, Snapshot};
use crate::wire::arp::{self, ArpPacket};
use crate::wire::checksum;
use crate::wire::ethernet::{self, MacAddr, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_QINQ, ETHERTYPE_VLAN};
use crate::wire::icmp;
use crate::wire::ipv4::{Ipv4Error, Ipv4Packet, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::wire::tcp::{self, TcpPacket, FLAG_ACK, FLAG_RST, FLAG_SYN};
use crate::wire::udp;
use std::sync::Arc;

/// A packet buffer the core can read and rewrite.
pub trait Packet {
    /// The bytes of the first segment (holding at least every header).
    fn data(&self) -> &[u8];
    fn data_mut(&mut self) -> &mut [u8];
    /// Length of the whole packet, all segments.
    fn packet_len(&self) -> usize;
    /// Index (in the configuration) of the port the packet arrived on.
    fn port(&self) -> u16;
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
    fn tx(&mut self, port: u16, pkt: P);
    /// Pass to worker `worker`, which owns the packet's flow.
    fn handoff(&mut self, worker: usize, pkt: P);
    /// Release a packet that was dropped (already counted) or consumed.
    fn free(&mut self, pkt: P);
    /// A new packet of `len` bytes, noted as arrived on `port`.
    fn alloc(&mut self, len: usize, port: u16) -> Option<P>;
}

/// Sessions checked per full sweep period; the sweep visits every slot
/// about once per this many milliseconds.
const SWEEP_PERIOD_MS: u64 = 1000;
/// Most session slots one call may look at, bounding the time it takes.
const MAX_SWEEP_PER_CALL: u64 = 256;
/// Most slots the sweep may owe (when calls are rare, e.g. while idle).
const MAX_SWEEP_CREDIT_SLOTS: u64 = 1 << 20;
const MAX_NEIGHBOR_SCAN_PER_TICK: u64 = 1024;

/// Mutable per-worker state: everything but the snapshot, so a `&Snapshot`
/// and a `&mut State` can be held together.
struct State<P: Packet> {
    worker: usize,
    workers: usize,
    sessions: SessionTable<P::Placement>,
    neighbors: NeighborCache,
    pending: PendingQueue<P>,
    /// Round-robin cursor per listener id.
    rr: Box<[u32]>,
    counters: Arc<WorkerCounters>,
    now: u32,
    last_tick: u32,
    sweep_credit: u64,
    neighbor_credit: u64,
    maintenance: Vec<Maintenance>,
    /// Flow packets of the current burst between stages (preallocated).
    staged: Vec<Staged<P>>,
    /// The last listener a packet matched: (listener key, snapshot
    /// generation, position). Most traffic goes to a few VIPs.
    listener_memo: std::cell::Cell<(u64, u64, u16)>,
    /// Recent next-hop resolutions: (port and address, MAC, cache epoch).
    next_hop_memo: [(u64, MacAddr, u64); NEXT_HOP_MEMO],
}

const NEXT_HOP_MEMO: usize = 16;

/// A flow packet on its way through the core: between the stages of a
/// burst, then into [`State::request`] or [`State::reply`].
struct Staged<P> {
    pkt: P,
    key: FlowKey,
    hash: u64,
    flags: u8,
    listener: Option<u16>,
    /// The session lookup's answer (stage 2).
    found: Option<(u32, Direction)>,
    /// The backend picked ahead for a new flow (stage 2).
    pick: Option<u16>,
}

/// What [`State::classify`] found.
#[derive(Debug, PartialEq, Eq)]
enum Class {
    /// TCP or UDP to forward: a request to the listener at this position,
    /// or (no listener) a reply.
    Flow {
        key: FlowKey,
        flags: u8,
        listener: Option<u16>,
        owner: usize,
    },
    Arp,
    Icmp,
    Drop(DropReason),
}

/// Flow packets processed per stage round.
const STAGE: usize = 256;

pub struct Dataplane<P: Packet> {
    snap: Arc<Snapshot>,
    st: State<P>,
}

impl<P: Packet> std::fmt::Debug for Dataplane<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane").field("worker", &self.st.worker).field("sessions", &self.st.sessions).finish()
    }
}

/// Settings of a worker's core that do not change with snapshots.
#[derive(Clone, Copy, Debug)]
pub struct CoreSettings {
    pub worker: usize,
    pub workers: usize,
    pub session_capacity: usize,
    pub neighbor_capacity: usize,
    pub pending_capacity: usize,
}

impl<P: Packet> Dataplane<P> {
    pub fn new(settings: CoreSettings, snap: Arc<Snapshot>, counters: Arc<WorkerCounters>) -> Dataplane<P> {
        let sessions = SessionTable::with_placement(settings.session_capacity);
        counters.session_capacity.set(sessions.capacity() as u64);
        counters.session_memory.set(sessions.memory_bytes() as u64);
        let mut neighbors = NeighborCache::new(settings.neighbor_capacity, snap.arp);
        for (port, ip, mac) in &snap.static_neighbors {
            neighbors.add_static(*port, *ip, *mac);
        }
        Dataplane {
            st: State {
                worker: settings.worker,
                workers: settings.workers,
                sessions,
                neighbors,
                pending: PendingQueue::new(settings.pending_capacity),
                rr: vec![0; crate::config::MAX_LISTENERS].into_boxed_slice(),
                counters,
                now: 0,
                last_tick: 0,
                sweep_credit: 0,
                neighbor_credit: 0,
                maintenance: Vec::with_capacity(MAX_NEIGHBOR_SCAN_PER_TICK as usize),
                staged: Vec::with_capacity(STAGE),
                listener_memo: std::cell::Cell::new((0, 0, 0)),
                next_hop_memo: [(0, MacAddr::ZERO, 0); NEXT_HOP_MEMO],
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

    /// See [`State::scan_sessions`]: a bounded slice of the session table
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
    }
}

impl<P: Packet> State<P> {
    #[inline]
    fn discard(&self, reason: DropReason, pkt: P, io: &mut impl Io<P>) {
        self.counters.count_drop(reason);
        io.free(pkt);
    }

    /// The first look at a packet: validation, and for TCP/UDP the flow,
    /// its direction and its owner. Reads only; decides nothing yet.
    #[inline(always)]
    fn classify(&self, snap: &Snapshot, pkt: &P) -> Class {
        let Some(port) = snap.ports.get(usize::from(pkt.port())) else {
            // Only a bug in an adapter could get here.
            return Class::Drop(DropReason::WrongDstMac);
        };
        let data = pkt.data();
        if let Some(c) = self.classify_fast(snap, port, data, pkt.packet_len()) {
            return c;
        }
        self.classify_full(snap, port, data, pkt.packet_len())
    }

    /// Every check, in order, for any frame; names the reason for a drop.
    /// `data` is the first segment of a packet of `pkt_len` bytes.
    fn classify_full(&self, snap: &Snapshot, port: &crate::snapshot::PortView, data: &[u8], pkt_len: usize) -> Class {
        if data.len() < ethernet::HEADER_LEN {
            return Class::Drop(DropReason::Truncated);
        }
        let dst = MacAddr([data[0], data[1], data[2], data[3], data[4], data[5]]);
        if dst != port.mac && !dst.is_broadcast() {
            return Class::Drop(DropReason::WrongDstMac);
        }
        match u16::from_be_bytes([data[12], data[13]]) {
            ETHERTYPE_IPV4 => {}
            ETHERTYPE_ARP => return Class::Arp,
            ETHERTYPE_VLAN | ETHERTYPE_QINQ => return Class::Drop(DropReason::VlanTagged),
            _ => return Class::Drop(DropReason::UnsupportedEthertype),
        }
        let l3_len = pkt_len - ethernet::HEADER_LEN;
        let ip = match Ipv4Packet::new_checked_in(&data[ethernet::HEADER_LEN..], l3_len) {
            Ok(ip) => ip,
            Err(e) => {
                return Class::Drop(match e {
                    Ipv4Error::Truncated => DropReason::Truncated,
                    Ipv4Error::BadHeader => DropReason::IpBadHeader,
                    Ipv4Error::Options => DropReason::IpOptions,
                    Ipv4Error::BadTotalLength => DropReason::IpBadLength,
                })
            }
        };
        if !ip.verify_checksum() {
            return Class::Drop(DropReason::IpBadChecksum);
        }
        if ip.is_fragment() {
            return Class::Drop(DropReason::IpFragment);
        }
        let (src, dst, proto, ttl) = (ip.src_u32(), ip.dst_u32(), ip.protocol(), ip.ttl());
        // The L4 header must sit in the first segment; the rewrite touches
        // nothing beyond it.
        let l4_len = usize::from(ip.total_len()) - ip.header_len();
        let l4 = ip.payload();
        let (sport, dport, flags) = match proto {
            PROTO_TCP => {
                if l4_len < tcp::MIN_HEADER_LEN || l4.len() < tcp::MIN_HEADER_LEN {
                    return Class::Drop(DropReason::Truncated);
                }
                match TcpPacket::new_checked(l4) {
                    Some(t) => (t.src_port(), t.dst_port(), t.flags()),
                    None => return Class::Drop(DropReason::L4BadHeader),
                }
            }
            PROTO_UDP => {
                if l4_len < udp::HEADER_LEN || l4.len() < udp::HEADER_LEN {
                    return Class::Drop(DropReason::Truncated);
                }
                // The UDP length may cover bytes in later segments.
                let ulen = usize::from(u16::from_be_bytes([l4[4], l4[5]]));
                if ulen < udp::HEADER_LEN || ulen > l4_len {
                    return Class::Drop(DropReason::L4BadHeader);
                }
                (u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]]), 0)
            }
            PROTO_ICMP => return Class::Icmp,
            _ => return Class::Drop(DropReason::UnsupportedProtocol),
        };
        self.flow_class(snap, FlowKey::new(src, dst, sport, dport, proto), flags, ttl)
    }

    /// The verdict on a valid TCP/UDP packet: to a listener, to a local
    /// address nothing listens on, or a reply to forward; and its owner.
    #[inline(always)]
    fn flow_class(&self, snap: &Snapshot, key: FlowKey, flags: u8, ttl: u8) -> Class {
        let (listener, owner) = match self.direction(snap, &key) {
            Some(Some(listener)) => (Some(listener), owner_shard(key.src(), key.sport(), self.workers)),
            Some(None) => return Class::Drop(DropReason::NoListener),
            None => (None, owner_shard(key.dst(), key.dport(), self.workers)),
        };
        if ttl <= 1 {
            return Class::Drop(DropReason::TtlExceeded);
        }
        Class::Flow { key, flags, listener, owner }
    }

    /// Whether `key` goes to one of our addresses: `Some(Some(listener))`
    /// for a listener's tuple, `Some(None)` for a local address nothing
    /// listens on, `None` for anything else (a reply to forward).
    #[inline]
    fn direction(&self, snap: &Snapshot, key: &FlowKey) -> Option<Option<u16>> {
        let lk = crate::snapshot::listener_key(key.dst(), key.proto(), key.dport());
        let (memo_key, memo_gen, memo_pos) = self.listener_memo.get();
        if memo_key == lk && memo_gen == snap.generation {
            return Some(Some(memo_pos));
        }
        snap.local(key.dst())?;
        let pos = snap.listener_position(key.dst(), key.proto(), key.dport()).map(|p| p.0);
        if let Some(p) = pos {
            self.listener_memo.set((lk, snap.generation, p));
        }
        Some(pos)
    }

    /// [`Self::classify`] for the packets that make up nearly all traffic:
    /// untagged IPv4 without options or fragmentation, TCP or UDP, to the
    /// port's own MAC, every header in the first segment. Reads fixed-size
    /// arrays, so the checks compile away. `None` sends the packet through
    /// the full checks, which reach the same answer for these packets and
    /// name the reason for the others.
    #[inline(always)]
    fn classify_fast(
        &self,
        snap: &Snapshot,
        port: &crate::snapshot::PortView,
        data: &[u8],
        pkt_len: usize,
    ) -> Option<Class> {
        let h: &[u8; 42] = data.get(..42)?.try_into().ok()?;
        if h[12..14] != [0x08, 0x00] || h[14] != 0x45 || h[0..6] != port.mac.0 {
            return None;
        }
        let total = usize::from(u16::from_be_bytes([h[16], h[17]]));
        if total < 28 || total + ethernet::HEADER_LEN > pkt_len || u16::from_be_bytes([h[20], h[21]]) & 0x3fff != 0 {
            return None;
        }
        let w = |i: usize| u64::from(u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
        if checksum::fold(checksum::sum_ipv4_header(h[14..34].try_into().expect("20 bytes"))) != 0xffff {
            return None;
        }
        let (proto, src, dst) = (h[23], w(26) as u32, w(30) as u32);
        let (sport, dport) = (u16::from_be_bytes([h[34], h[35]]), u16::from_be_bytes([h[36], h[37]]));
        let flags = match proto {
            PROTO_TCP => {
                let t: &[u8; 54] = data.get(..54)?.try_into().ok()?;
                let off = usize::from(t[46] >> 4) * 4;
                if total < 40
                    || off < tcp::MIN_HEADER_LEN
                    || off > total - 20
                    || ethernet::HEADER_LEN + 20 + off > data.len()
                {
                    return None;
                }
                t[47]
            }
            PROTO_UDP => {
                let ulen = usize::from(u16::from_be_bytes([h[38], h[39]]));
                if ulen < udp::HEADER_LEN || ulen > total - 20 {
                    return None;
                }
                0
            }
            _ => return None,
        };
        Some(self.flow_class(snap, FlowKey::new(src, dst, sport, dport, proto), flags, h[22]))
    }

    /// A burst in stages, so the session-table cache misses of all its
    /// packets overlap instead of queueing one after another: classify
    /// every packet; prefetch all their index buckets; then prefetch the
    /// sessions the buckets point at; then process. Packets other than
    /// TCP/UDP flows flush the stages first, so arrival order holds.
    fn burst(&mut self, snap: &Snapshot, pkts: impl Iterator<Item = P>, from_handoff: bool, io: &mut impl Io<P>) {
        let mut staged = std::mem::take(&mut self.staged);
        for pkt in pkts {
            if !from_handoff {
                if let Some(c) = self.counters.ports.get(usize::from(pkt.port())) {
                    c.rx_packets.inc();
                    c.rx_bytes.add(pkt.packet_len() as u64);
                }
            }
            match self.classify(snap, &pkt) {
                Class::Flow { key, flags, listener, owner } => {
                    if !from_handoff && owner != self.worker {
                        io.handoff(owner, pkt);
                        continue;
                    }
                    let hash = key.hash();
                    staged.push(Staged { pkt, key, hash, flags, listener, found: None, pick: None });
                    if staged.len() == staged.capacity() {
                        self.run_staged(snap, &mut staged, io);
                    }
                }
                other => {
                    self.run_staged(snap, &mut staged, io);
                    match other {
                        Class::Arp => self.arp(snap, pkt, from_handoff, io),
                        Class::Icmp => self.icmp(snap, pkt, io),
                        Class::Drop(r) => self.discard(r, pkt, io),
                        Class::Flow { .. } => unreachable!("matched above"),
                    }
                }
            }
        }
        self.run_staged(snap, &mut staged, io);
        self.staged = staged;
    }

    fn run_staged(&mut self, snap: &Snapshot, staged: &mut Vec<Staged<P>>, io: &mut impl Io<P>) {
        // All lookups first, each step in a tight loop of its own, so that
        // the out-of-order core overlaps their cache misses. With large
        // tables each prefetch waits for a page walk before it can retire:
        // spread between classify code, only two or three were in flight
        // (10M sessions 8.1-8.9 -> 10.1 Mpps when they moved here).
        for s in staged.iter() {
            self.sessions.prefetch(s.hash);
        }
        for s in staged.iter() {
            self.sessions.prefetch_candidates(s.hash);
        }
        for s in staged.iter_mut() {
            s.found = self.sessions.lookup(&s.key, s.hash);
        }
        // New flows (and flows whose session has lapsed) will touch more
        // random lines: the backend-side key's bucket, the lapsed
        // session's. Pick their backends now and prefetch those lines, so
        // they too arrive together.
        for s in staged.iter_mut() {
            let Some(li) = s.listener else { continue };
            match s.found {
                Some((slot, Direction::Request)) if self.expired(snap, slot) => {
                    self.sessions.prefetch(self.sessions.session(slot).reply_key().hash());
                }
                Some((_, Direction::Request)) => continue,
                Some(_) => continue,
                None => {}
            }
            let l = &snap.listeners[usize::from(li)];
            if let Some(bi) = l.scheduler.pick(s.hash, &mut self.rr[usize::from(l.id)]) {
                let b = &l.backends[usize::from(bi)];
                let rk = FlowKey::new(b.addr, s.key.src(), b.port, s.key.sport(), s.key.proto());
                // The conflict check of the insert reads both of its lines.
                self.sessions.prefetch_both(rk.hash());
                s.pick = Some(bi);
            }
        }
        let version = self.sessions.version();
        for mut s in staged.drain(..) {
            // An earlier packet of this burst may have created, removed or
            // replaced a session since: then check the answer again.
            if self.sessions.version() != version {
                s.found = self.sessions.confirm(s.found, &s.key, s.hash);
            }
            self.flow(snap, s, io);
        }
    }

    #[inline]
    fn flow(&mut self, snap: &Snapshot, s: Staged<P>, io: &mut impl Io<P>) {
        match s.listener {
            Some(i) => self.request(snap, &snap.listeners[usize::from(i)], s, io),
            None => self.reply(snap, s, io),
        }
    }

    /// Client→VIP: find or create the session, rewrite the destination to
    /// the backend, forward.
    fn request(&mut self, snap: &Snapshot, l: &ListenerView, s: Staged<P>, io: &mut impl Io<P>) {
        let Staged { mut pkt, key, hash: h, flags, found, pick, .. } = s;
        // A session whose backend left the configuration and moves on: the
        // TCP state it carries over.
        let mut carried: Option<SessionState> = None;
        let existing = match found {
            Some((slot, Direction::Request)) if self.expired(snap, slot) => {
                // Idle past its timeout but not swept yet: gone, as it
                // would be a moment later.
                self.expire_now(slot);
                None
            }
            Some((slot, Direction::Request)) => {
                let s = self.sessions.session(slot);
                let configured = snap.backend_by_id(s.backend_id).is_some_and(|(lv, _)| lv.id == l.id);
                match (configured, snap.removed_backend) {
                    (true, _) | (false, RemovedBackendPolicy::Keep) => Some(slot),
                    (false, policy) => {
                        let old = self.sessions.remove(slot);
                        self.close_counters(&old);
                        if policy == RemovedBackendPolicy::Reset && key.proto() == PROTO_TCP {
                            self.counters.event(Event::SessionsReset);
                            return self.reset_client(snap, pkt, io);
                        }
                        // Reschedule (and UDP under reset): on as a new flow.
                        self.counters.event(Event::SessionsMoved);
                        carried = Some(old.state);
                        None
                    }
                }
            }
            Some((_, Direction::Reply)) => return self.discard(DropReason::NatTupleConflict, pkt, io),
            None => None,
        };
        let slot = match existing {
            Some(slot) => slot,
            None => {
                let mut state = SessionState::Udp;
                let mut rescheduled = false;
                if key.proto() == PROTO_TCP {
                    let syn = flags & FLAG_SYN != 0 && flags & FLAG_ACK == 0;
                    state = SessionState::TcpSynSent;
                    if let Some(c) = carried {
                        state = c;
                    } else if !syn {
                        if l.non_syn == NonSynPolicy::Drop || !l.scheduler.is_consistent() {
                            return self.discard(DropReason::TcpNoSession, pkt, io);
                        }
                        state = SessionState::TcpEstablished;
                        rescheduled = true;
                    }
                }
                // Picked ahead in the burst's prefetch pass, or now.
                let picked = match pick {
                    Some(bi) => Some(bi),
                    None => l.scheduler.pick(h, &mut self.rr[usize::from(l.id)]),
                };
                let Some(bi) = picked else {
                    return self.discard(DropReason::NoBackend, pkt, io);
                };
                let b = &l.backends[usize::from(bi)];
                if flags & FLAG_RST != 0 && carried.is_none() {
                    // A reset for a connection we no longer track: pass it to
                    // the backend Maglev picks so it can clean up, but do not
                    // create state for it.
                    nat::rewrite(pkt.data_mut(), Endpoint::Destination, b.addr, b.port);
                    self.counters.listeners[usize::from(l.id)].count(Direction::Request, pkt.packet_len());
                    self.counters.backends[usize::from(b.id)].count(Direction::Request, pkt.packet_len());
                    return self.route(snap, pkt, b.addr, io);
                }
                let s = Session::new(
                    key.proto(),
                    (key.src(), key.sport()),
                    (key.dst(), key.dport()),
                    (b.addr, b.port),
                    l.id,
                    b.id,
                    state,
                    self.now,
                );
                match self.sessions.insert(s) {
                    Ok(slot) => {
                        self.counters.event(Event::SessionsCreated);
                        if rescheduled {
                            self.counters.event(Event::SessionsRescheduled);
                        }
                        self.counters.listeners[usize::from(l.id)].sessions_created.inc();
                        self.counters.backends[usize::from(b.id)].sessions_created.inc();
                        self.counters.sessions_active.set(self.sessions.len() as u64);
                        slot
                    }
                    Err(InsertError::Full) => return self.discard(DropReason::SessionTableFull, pkt, io),
                    Err(InsertError::Conflict) => return self.discard(DropReason::NatTupleConflict, pkt, io),
                }
            }
        };
        let s = self.sessions.session_mut(slot);
        s.last_seen = self.now;
        if key.proto() == PROTO_TCP {
            s.track_tcp(flags, Direction::Request);
        }
        let (addr, port, lid, bid) = (s.backend_ip, s.backend_port, s.listener, s.backend_id);
        nat::rewrite(pkt.data_mut(), Endpoint::Destination, addr, port);
        let len = pkt.packet_len();
        self.counters.listeners[usize::from(lid)].count(Direction::Request, len);
        self.counters.backends[usize::from(bid)].count(Direction::Request, len);
        self.route(snap, pkt, addr, io)
    }

    /// Whether the session in `slot` is idle past its state's timeout.
    #[inline]
    fn expired(&self, snap: &Snapshot, slot: u32) -> bool {
        let s = self.sessions.session(slot);
        self.now.wrapping_sub(s.last_seen) > snap.timeouts.get(s.state)
    }

    fn expire_now(&mut self, slot: u32) {
        let s = self.sessions.remove(slot);
        self.close_counters(&s);
        self.counters.event(Event::SessionsExpired);
    }

    fn close_counters(&self, s: &Session) {
        self.counters.listeners[usize::from(s.listener)].sessions_closed.inc();
        self.counters.backends[usize::from(s.backend_id)].sessions_closed.inc();
        self.counters.sessions_active.set(self.sessions.len() as u64);
    }

    /// Answers a client's TCP segment with a RST from the VIP (its backend
    /// is gone and the policy says reset).
    fn reset_client(&mut self, snap: &Snapshot, mut pkt: P, io: &mut impl Io<P>) {
        let client = {
            let d = pkt.data();
            u32::from_be_bytes([d[26], d[27], d[28], d[29]])
        };
        let len = nat::tcp_reset_reply(pkt.data_mut());
        if !pkt.truncate(len) {
            return self.discard(DropReason::Truncated, pkt, io);
        }
        self.route(snap, pkt, client, io)
    }

    /// Backend→client: the session must exist; the source becomes the VIP.
    fn reply(&mut self, snap: &Snapshot, s: Staged<P>, io: &mut impl Io<P>) {
        let Staged { mut pkt, key, flags, found, .. } = s;
        let Some((slot, Direction::Reply)) = found else {
            return self.discard(DropReason::NoSession, pkt, io);
        };
        if self.expired(snap, slot) {
            self.expire_now(slot);
            return self.discard(DropReason::NoSession, pkt, io);
        }
        let s = self.sessions.session_mut(slot);
        s.last_seen = self.now;
        if key.proto() == PROTO_TCP {
            s.track_tcp(flags, Direction::Reply);
        }
        let (vip, vport, lid, bid) = (s.vip, s.vip_port, s.listener, s.backend_id);
        nat::rewrite(pkt.data_mut(), Endpoint::Source, vip, vport);
        let len = pkt.packet_len();
        self.counters.listeners[usize::from(lid)].count(Direction::Reply, len);
        self.counters.backends[usize::from(bid)].count(Direction::Reply, len);
        self.route(snap, pkt, key.dst(), io)
    }

    fn route(&mut self, snap: &Snapshot, pkt: P, dst: u32, io: &mut impl Io<P>) {
        match snap.routes.lookup(dst) {
            Some((port, next_hop)) => self.send(snap, pkt, port, next_hop, io),
            None => self.discard(DropReason::NoRoute, pkt, io),
        }
    }

    /// Addresses the frame to `next_hop` on `port` and queues it, or parks
    /// it until ARP resolves the next hop.
    fn send(&mut self, snap: &Snapshot, mut pkt: P, port: u16, next_hop: u32, io: &mut impl Io<P>) {
        // Traffic goes to few next hops (backends, the gateway): remember
        // the last answers while the neighbour cache has not changed.
        let key = 1 << 48 | u64::from(port) << 32 | u64::from(next_hop);
        let memo = &mut self.next_hop_memo[(next_hop as usize ^ usize::from(port)) & (NEXT_HOP_MEMO - 1)];
        if memo.0 == key && memo.2 == self.neighbors.epoch() {
            nat::set_macs(pkt.data_mut(), snap.ports[usize::from(port)].mac, memo.1);
            return io.tx(port, pkt);
        }
        let resolution = self.neighbors.resolve(port, next_hop, self.now);
        if let Resolution::Hit(mac) = resolution {
            *memo = (key, mac, self.neighbors.epoch());
        }
        match resolution {
            Resolution::Hit(mac) => {
                nat::set_macs(pkt.data_mut(), snap.ports[usize::from(port)].mac, mac);
                io.tx(port, pkt);
            }
            Resolution::Miss { request } => {
                if request {
                    self.arp_request(snap, port, next_hop, io);
                }
                match self.pending.push(Parked { packet: pkt, port, next_hop, since: self.now }) {
                    Ok(()) => {
                        self.counters.event(Event::NeighborParked);
                        self.counters.parked.set(self.pending.len() as u64);
                    }
                    Err(p) => self.discard(DropReason::NeighborQueueFull, p.packet, io),
                }
            }
        }
    }

    fn arp_request(&self, snap: &Snapshot, port: u16, target: u32, io: &mut impl Io<P>) {
        let p = &snap.ports[usize::from(port)];
        // 60 bytes: the Ethernet minimum without FCS.
        let Some(mut pkt) = io.alloc(60, port) else {
            self.counters.event(Event::MbufAllocFailed);
            return;
        };
        let b = pkt.data_mut();
        b.fill(0);
        nat::set_macs(b, p.mac, MacAddr::BROADCAST);
        b[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        ArpPacket::emit(&mut b[14..], arp::OP_REQUEST, p.mac, p.addr.into(), MacAddr::ZERO, target.into());
        self.counters.event(Event::ArpRequestsSent);
        io.tx(port, pkt);
    }

    fn arp(&mut self, snap: &Snapshot, mut pkt: P, from_handoff: bool, io: &mut impl Io<P>) {
        let in_port = pkt.port();
        let port = &snap.ports[usize::from(in_port)];
        let data = pkt.data();
        let Some(a) = ArpPacket::new_checked(&data[ethernet::HEADER_LEN..]) else {
            if from_handoff {
                return io.free(pkt);
            }
            return self.discard(DropReason::ArpMalformed, pkt, io);
        };
        let (op, sha, spa, tpa) = (a.operation(), a.sender_mac(), u32::from(a.sender_ip()), u32::from(a.target_ip()));
        let ours = snap.owns_on_port(tpa, in_port);
        // Learn only plausible neighbours: on the link, not us, unicast MAC.
        let plausible =
            port.on_link(spa) && spa != port.addr && spa != port.net && !sha.is_multicast() && sha != MacAddr::ZERO;
        let learned = if plausible {
            // RFC 826: refresh a known sender always; add a new one only
            // when the packet is addressed to us. A copy from another worker
            // was vetted there.
            self.neighbors.learn(in_port, spa, sha, self.now, ours || from_handoff)
        } else {
            Learned::Ignored
        };
        if learned != Learned::Ignored {
            let mac = sha;
            let src_mac = port.mac;
            self.pending.release(in_port, spa, |p| {
                let mut pkt = p.packet;
                nat::set_macs(pkt.data_mut(), src_mac, mac);
                io.tx(in_port, pkt);
            });
            self.counters.parked.set(self.pending.len() as u64);
        }
        if from_handoff {
            return io.free(pkt);
        }
        if learned != Learned::Ignored && self.workers > 1 {
            self.share_arp(&pkt, io);
        }
        if op == arp::OP_REQUEST && ours {
            // Turn the request into the reply in place.
            let my_mac = port.mac;
            let b = pkt.data_mut();
            nat::set_macs(b, my_mac, sha);
            ArpPacket::emit(&mut b[ethernet::HEADER_LEN..], arp::OP_REPLY, my_mac, tpa.into(), sha, spa.into());
            self.counters.event(Event::ArpRepliesSent);
            return io.tx(in_port, pkt);
        }
        if learned != Learned::Ignored {
            self.counters.event(Event::ArpLearned);
            return io.free(pkt);
        }
        if op == arp::OP_REQUEST {
            return self.discard(DropReason::ArpNotOurs, pkt, io);
        }
        self.counters.event(Event::ArpIgnored);
        io.free(pkt)
    }

    /// Copies an ARP packet to every other worker so all neighbour caches
    /// learn what one worker heard.
    fn share_arp(&self, pkt: &P, io: &mut impl Io<P>) {
        let bytes = pkt.data();
        for w in (0..self.workers).filter(|w| *w != self.worker) {
            match io.alloc(bytes.len(), pkt.port()) {
                Some(mut copy) => {
                    copy.data_mut().copy_from_slice(bytes);
                    io.handoff(w, copy);
                }
                None => self.counters.event(Event::MbufAllocFailed),
            }
        }
    }

    /// Answers echo requests to our addresses; drops other ICMP.
    fn icmp(&mut self, snap: &Snapshot, mut pkt: P, io: &mut impl Io<P>) {
        let in_port = pkt.port();
        let data = pkt.data();
        let ip = &data[ethernet::HEADER_LEN..];
        let dst = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        if snap.local(dst).is_none() {
            return self.discard(DropReason::IcmpUnsupported, pkt, io);
        }
        if total < 20 + icmp::HEADER_LEN || data.len() < ethernet::HEADER_LEN + 20 + icmp::HEADER_LEN {
            return self.discard(DropReason::Truncated, pkt, io);
        }
        if ip[20] != icmp::ECHO_REQUEST || ip[21] != 0 {
            return self.discard(DropReason::IcmpUnsupported, pkt, io);
        }
        let src_mac = MacAddr([data[6], data[7], data[8], data[9], data[10], data[11]]);
        let my_mac = snap.ports[usize::from(in_port)].mac;
        let b = pkt.data_mut();
        nat::set_macs(b, my_mac, src_mac);
        let ipb = &mut b[ethernet::HEADER_LEN..];
        let (src, dst) = (u32::from_be_bytes([ipb[12], ipb[13], ipb[14], ipb[15]]), dst);
        let mut ipv = Ipv4Packet::new_checked_in(&mut ipb[..], total).expect("validated before");
        ipv.set_addrs_raw(dst, src);
        ipv.set_ttl_raw(64);
        ipv.fill_checksum();
        let old = u16::from_be_bytes([ipb[20], ipb[21]]);
        ipb[20] = icmp::ECHO_REPLY;
        let new = u16::from_be_bytes([ipb[20], ipb[21]]);
        let c = checksum::adjust16(u16::from_be_bytes([ipb[22], ipb[23]]), old, new);
        ipb[22..24].copy_from_slice(&c.to_be_bytes());
        self.counters.event(Event::IcmpEchoReplies);
        io.tx(in_port, pkt)
    }

    fn tick(&mut self, snap: &Snapshot, io: &mut impl Io<P>) {
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
            let n = self.sessions.expire(now, budget as usize, &snap.timeouts, |s| {
                c.listeners[usize::from(s.listener)].sessions_closed.inc();
                c.backends[usize::from(s.backend_id)].sessions_closed.inc();
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
    fn scan_sessions(
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

#[cfg(test)]
mod tests;
