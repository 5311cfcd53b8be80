//! Rate limits and VIP protection: what a listener admits of its clients'
//! traffic before a session is found or made.
//!
//! Per listener (`listeners[].limits`): token buckets for new connections
//! and packets per second over all its clients, the same per source
//! address (in a bounded, lossy [`SourceTable`]), and a cap on a source's
//! concurrent sessions. Per listener's VIP and port (`listeners[].protection`):
//! the offered packets, bits and new connections per second are measured
//! over one-second windows; above the `scrub` thresholds the listener
//! admits no more than those rates, above the `blackhole` thresholds it
//! drops every client packet, and either state holds until `hold` has
//! passed since the last window above its thresholds.
//!
//! Each worker enforces its share of every figure (the figure divided by
//! the number of workers, rounded up): workers share no state, and the
//! owner shard spreads a client's connections (address and port) over all
//! of them, so a source or a listener meets its limit at about the
//! configured rate when its traffic spreads evenly, exactly with one
//! worker. State per worker, indexed by listener id, sized at start; no
//! allocation or lock per packet.

use crate::counter::Counter;
use crate::counters::DropReason;
use crate::ratelimit::TokenBucket;
use crate::snapshot::{ListenerView, Snapshot};
use crate::sourcetable::{source_key, SourceTable};

/// What a listener's clients may send (`listeners[].limits`); `None`: no
/// limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    pub new_connections_per_second: Option<u32>,
    pub packets_per_second: Option<u32>,
    pub per_source: SourceLimits,
}

/// What one client address may send to a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SourceLimits {
    pub new_connections_per_second: Option<u32>,
    pub packets_per_second: Option<u32>,
    pub max_sessions: Option<u32>,
}

impl Limits {
    pub fn is_none(&self) -> bool {
        *self == Limits::default()
    }
}

impl SourceLimits {
    pub fn is_none(&self) -> bool {
        *self == SourceLimits::default()
    }
}

/// Rates of offered traffic; `None`: not a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Thresholds {
    pub packets_per_second: Option<u64>,
    pub bits_per_second: Option<u64>,
    pub new_connections_per_second: Option<u64>,
}

/// `listeners[].protection`: the two levels cloud anti-DDoS services
/// apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protection {
    /// Above these, the listener admits at most these rates.
    pub scrub: Option<Thresholds>,
    /// Above these, every client packet is dropped.
    pub blackhole: Option<Thresholds>,
    /// How long a state lasts after the last window above its thresholds.
    pub hold_ms: u32,
}

/// `vips[]`: a VIP protected as a whole: every client packet to the
/// address counts, to any listener or to a port without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VipProtection {
    pub address: std::net::Ipv4Addr,
    pub protection: Protection,
}

/// Where a listener's protection stands (on one worker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum ProtectionState {
    Normal = 0,
    Scrubbed = 1,
    Blackholed = 2,
}

impl ProtectionState {
    pub fn name(self) -> &'static str {
        match self {
            ProtectionState::Normal => "normal",
            ProtectionState::Scrubbed => "scrubbed",
            ProtectionState::Blackholed => "blackholed",
        }
    }

    pub fn from_gauge(v: u64) -> ProtectionState {
        match v {
            0 => ProtectionState::Normal,
            1 => ProtectionState::Scrubbed,
            _ => ProtectionState::Blackholed,
        }
    }
}

/// The largest frame a byte bucket must be able to pass.
const MAX_FRAME_BYTES: u32 = 9216;

/// The length of a measuring window.
pub const WINDOW_MS: u32 = 1000;

/// The drops of limits and protection, in the order of
/// [`GuardCounters::drops`].
pub const LIMIT_DROPS: [DropReason; 5] = [
    DropReason::ListenerRateLimited,
    DropReason::SourceRateLimited,
    DropReason::SourceSessionLimit,
    DropReason::VipScrubbed,
    DropReason::VipBlackholed,
];

/// One listener's limits and protection on one worker (single writer).
#[derive(Debug, Default)]
#[repr(C, align(64))]
pub struct GuardCounters {
    /// [`ProtectionState`] as a number (a gauge).
    pub state: Counter,
    /// Times the state went to scrubbed, to blackholed, back to normal.
    pub scrubbed: Counter,
    pub blackholed: Counter,
    pub released: Counter,
    /// The offered rates of the last full window (gauges, per second).
    pub packets_per_second: Counter,
    pub bits_per_second: Counter,
    pub new_connections_per_second: Counter,
    /// Drops by reason, in the order of [`LIMIT_DROPS`].
    pub drops: [Counter; LIMIT_DROPS.len()],
}

/// The limits' per-worker counters: one block per listener id, and the
/// source table's.
#[derive(Debug)]
pub struct AdmissionCounters {
    pub listeners: Box<[GuardCounters]>,
    /// One block per index of `vips[]` (drops of `vip_scrubbed` and
    /// `vip_blackholed` at the VIP level).
    pub vips: Box<[GuardCounters]>,
    /// Source table entries in use, entries (gauges), sources forgotten
    /// for new ones, and of those the ones that held sessions.
    pub source_entries: Counter,
    pub source_capacity: Counter,
    pub source_evictions: Counter,
    pub source_evictions_with_sessions: Counter,
}

impl AdmissionCounters {
    pub fn new(listeners: usize) -> AdmissionCounters {
        AdmissionCounters {
            listeners: (0..listeners).map(|_| GuardCounters::default()).collect(),
            vips: (0..crate::config::MAX_PROTECTED_VIPS).map(|_| GuardCounters::default()).collect(),
            source_entries: Counter::default(),
            source_capacity: Counter::default(),
            source_evictions: Counter::default(),
            source_evictions_with_sessions: Counter::default(),
        }
    }

    #[inline]
    fn drop(&self, listener: usize, r: DropReason) -> DropReason {
        if let (Some(g), Some(i)) = (self.listeners.get(listener), LIMIT_DROPS.iter().position(|x| *x == r)) {
            g.drops[i].inc();
        }
        r
    }

    #[inline]
    fn vip_drop(&self, vip: usize, r: DropReason) -> DropReason {
        if let (Some(g), Some(i)) = (self.vips.get(vip), LIMIT_DROPS.iter().position(|x| *x == r)) {
            g.drops[i].inc();
        }
        r
    }
}

/// A rate and burst for a bucket kept in the source table.
#[derive(Debug, Clone, Copy, Default)]
struct Share {
    rate: u32,
    burst: u32,
}

impl Share {
    fn of(v: Option<u32>, workers: u32) -> Option<Share> {
        v.map(|v| {
            let rate = split(u64::from(v), workers) as u32;
            Share { rate, burst: TokenBucket::default_burst(rate) }
        })
    }
}

/// A worker's share of an instance figure: rounded up, at least 1.
fn split(v: u64, workers: u32) -> u64 {
    v.div_ceil(u64::from(workers.max(1))).max(1)
}

fn bucket(v: Option<u64>, workers: u32) -> Option<TokenBucket> {
    v.map(|v| {
        let rate = split(v, workers).min(u64::from(u32::MAX)) as u32;
        TokenBucket::new(rate, TokenBucket::default_burst(rate))
    })
}

/// The offered-traffic meter and the protection state of one listener.
#[derive(Debug, Clone)]
struct Meter {
    scrub: Option<Thresholds>,
    blackhole: Option<Thresholds>,
    hold_ms: u32,
    window_start: u32,
    packets: u64,
    bytes: u64,
    connections: u64,
    state: ProtectionState,
    hold_until: u32,
    /// What a scrubbed listener still admits.
    scrub_packets: Option<TokenBucket>,
    scrub_bytes: Option<TokenBucket>,
    scrub_connections: Option<TokenBucket>,
}

impl Meter {
    fn new(p: &Protection, workers: u32, now: u32) -> Meter {
        let share = |t: &Thresholds| Thresholds {
            packets_per_second: t.packets_per_second.map(|v| split(v, workers)),
            bits_per_second: t.bits_per_second.map(|v| split(v, workers)),
            new_connections_per_second: t.new_connections_per_second.map(|v| split(v, workers)),
        };
        let scrub = p.scrub.as_ref().map(share);
        Meter {
            blackhole: p.blackhole.as_ref().map(share),
            hold_ms: p.hold_ms,
            window_start: now,
            packets: 0,
            bytes: 0,
            connections: 0,
            state: ProtectionState::Normal,
            hold_until: now,
            scrub_packets: scrub.and_then(|s| bucket(s.packets_per_second, 1)),
            // Bytes per second from bits, in a bucket of bytes that holds
            // at least a jumbo frame (else a packet larger than 50 ms of
            // the rate could never pass).
            scrub_bytes: scrub.and_then(|s| {
                s.bits_per_second.map(|b| {
                    let rate = (b / 8).clamp(1, u64::from(u32::MAX)) as u32;
                    TokenBucket::new(rate, TokenBucket::default_burst(rate).max(MAX_FRAME_BYTES))
                })
            }),
            scrub_connections: scrub.and_then(|s| bucket(s.new_connections_per_second, 1)),
            scrub,
        }
    }

    /// Closes the window when it is over: the rates it saw decide the
    /// state.
    #[inline]
    fn roll(&mut self, now: u32, c: &GuardCounters) {
        let elapsed = now.wrapping_sub(self.window_start);
        if elapsed < WINDOW_MS {
            return;
        }
        // A window that ran long (no packet came to close it) averages
        // over its whole length.
        let per_second = |n: u64| n * 1000 / u64::from(elapsed);
        let (pps, bps, cps) = (per_second(self.packets), per_second(self.bytes * 8), per_second(self.connections));
        c.packets_per_second.set(pps);
        c.bits_per_second.set(bps);
        c.new_connections_per_second.set(cps);
        let above = |t: &Option<Thresholds>| {
            t.is_some_and(|t| {
                t.packets_per_second.is_some_and(|x| pps > x)
                    || t.bits_per_second.is_some_and(|x| bps > x)
                    || t.new_connections_per_second.is_some_and(|x| cps > x)
            })
        };
        let level = if above(&self.blackhole) {
            ProtectionState::Blackholed
        } else if above(&self.scrub) {
            ProtectionState::Scrubbed
        } else {
            ProtectionState::Normal
        };
        let held = (self.hold_until.wrapping_sub(now) as i32) > 0;
        let next = if level >= self.state {
            if level > ProtectionState::Normal {
                self.hold_until = now.wrapping_add(self.hold_ms);
            }
            level
        } else if held {
            self.state
        } else {
            if level > ProtectionState::Normal {
                self.hold_until = now.wrapping_add(self.hold_ms);
            }
            level
        };
        if next != self.state {
            match next {
                ProtectionState::Normal => c.released.inc(),
                ProtectionState::Scrubbed => c.scrubbed.inc(),
                ProtectionState::Blackholed => c.blackholed.inc(),
            }
            c.state.set(next as u64);
            self.state = next;
        }
        self.window_start = now;
        self.packets = 0;
        self.bytes = 0;
        self.connections = 0;
    }
}

/// One listener's admission state on a worker.
#[derive(Debug, Clone, Default)]
struct Guard {
    /// What it was built from, so a snapshot that changes nothing here
    /// keeps the buckets and the state.
    limits: Limits,
    protection: Option<Protection>,
    connections: Option<TokenBucket>,
    packets: Option<TokenBucket>,
    source_connections: Option<Share>,
    source_packets: Option<Share>,
    source_sessions: Option<u32>,
    meter: Option<Meter>,
}

impl Guard {
    fn new(limits: Limits, protection: Option<Protection>, workers: u32, now: u32) -> Guard {
        let s = &limits.per_source;
        Guard {
            limits,
            protection,
            connections: bucket(limits.new_connections_per_second.map(u64::from), workers),
            packets: bucket(limits.packets_per_second.map(u64::from), workers),
            source_connections: Share::of(s.new_connections_per_second, workers),
            source_packets: Share::of(s.packets_per_second, workers),
            source_sessions: s.max_sessions.map(|m| split(u64::from(m), workers) as u32),
            meter: protection.as_ref().map(|p| Meter::new(p, workers, now)),
        }
    }
}

/// A VIP's protection on a worker (`vips[]`).
#[derive(Debug, Clone, Default)]
struct VipGuard {
    /// What it was built from, so a snapshot that changes neither keeps
    /// the state.
    addr: u32,
    protection: Option<Protection>,
    meter: Option<Meter>,
}

/// A worker's limits and protection state.
#[derive(Debug)]
pub struct Admission {
    workers: u32,
    guards: Box<[Guard]>,
    /// By index of `vips[]`; the first `vips_in_use` are configured.
    vips: Box<[VipGuard]>,
    vips_in_use: usize,
    sources: SourceTable,
    /// Listener ids with protection, whose windows `tick` closes while no
    /// packet comes.
    protected: Vec<u16>,
}

impl Admission {
    /// State for `listeners` listener ids and a source table of
    /// `source_entries`, all allocated now.
    pub fn new(workers: usize, listeners: usize, source_entries: usize) -> Admission {
        Admission {
            workers: workers.max(1) as u32,
            guards: vec![Guard::default(); listeners].into_boxed_slice(),
            vips: vec![VipGuard::default(); crate::config::MAX_PROTECTED_VIPS].into_boxed_slice(),
            vips_in_use: 0,
            sources: SourceTable::new(source_entries),
            protected: Vec::with_capacity(listeners),
        }
    }

    pub fn sources(&self) -> &SourceTable {
        &self.sources
    }

    /// Takes up `snap`'s limits: a listener whose limits or protection
    /// changed starts afresh (full buckets, normal state); the others
    /// keep theirs. Between bursts.
    pub fn sync(&mut self, snap: &Snapshot, now: u32, c: &AdmissionCounters) {
        self.protected.clear();
        for l in &snap.listeners {
            let id = usize::from(l.id);
            let Some(g) = self.guards.get_mut(id) else { continue };
            if g.limits != l.limits || g.protection != l.protection {
                *g = Guard::new(l.limits, l.protection, self.workers, now);
                if let Some(gc) = c.listeners.get(id) {
                    gc.state.set(ProtectionState::Normal as u64);
                }
            }
            if g.meter.is_some() {
                self.protected.push(l.id.0);
            }
        }
        for (i, g) in self.vips.iter_mut().enumerate() {
            let v = snap.vips.get(i);
            let (addr, protection) = (v.map_or(0, |v| v.addr), v.map(|v| v.protection));
            if g.addr != addr || g.protection != protection {
                *g =
                    VipGuard { addr, protection, meter: protection.as_ref().map(|p| Meter::new(p, self.workers, now)) };
                if let Some(gc) = c.vips.get(i) {
                    gc.state.set(ProtectionState::Normal as u64);
                    gc.packets_per_second.set(0);
                    gc.bits_per_second.set(0);
                    gc.new_connections_per_second.set(0);
                }
            }
        }
        self.vips_in_use = snap.vips.len().min(self.vips.len());
        c.source_capacity.set(self.sources.capacity() as u64);
    }

    /// Closes the measuring windows of protected listeners no packet came
    /// to, so a state is released on time and the gauges fall to zero
    /// when traffic stops.
    pub fn tick(&mut self, now: u32, c: &AdmissionCounters) {
        for id in &self.protected {
            let i = usize::from(*id);
            if let (Some(m), Some(gc)) = (self.guards[i].meter.as_mut(), c.listeners.get(i)) {
                m.roll(now, gc);
            }
        }
        for (g, gc) in self.vips[..self.vips_in_use].iter_mut().zip(c.vips.iter()) {
            if let Some(m) = g.meter.as_mut() {
                m.roll(now, gc);
            }
        }
        let (ev, evs) = self.sources.evictions();
        c.source_entries.set(self.sources.len() as u64);
        c.source_evictions.set(ev);
        c.source_evictions_with_sessions.set(evs);
    }

    /// A client packet to listener `l` from `src`, `len` bytes: measured,
    /// then admitted or the reason it is not.
    #[inline]
    pub fn packet(
        &mut self,
        l: &ListenerView,
        src: u32,
        len: usize,
        now: u32,
        c: &AdmissionCounters,
    ) -> Result<(), DropReason> {
        if !l.guarded {
            return Ok(());
        }
        if let Some(v) = l.vip_guard {
            self.vip_packet(usize::from(v), len, now, c)?;
        }
        let id = usize::from(l.id);
        let Some(g) = self.guards.get_mut(id) else { return Ok(()) };
        // The source's own limit first, so what an abusive source sends
        // beyond it does not spend the listener's budget.
        if let Some(m) = g.meter.as_mut() {
            m.roll(now, &c.listeners[id]);
            m.packets += 1;
            m.bytes += len as u64;
            if m.state == ProtectionState::Blackholed {
                return Err(c.drop(id, DropReason::VipBlackholed));
            }
        }
        if let Some(s) = g.source_packets {
            let e = self.sources.entry(source_key(l.id.0, src), now);
            if !e.packets.take(now, s.rate, s.burst, 1) {
                return Err(c.drop(id, DropReason::SourceRateLimited));
            }
        }
        if let Some(m) = g.meter.as_mut().filter(|m| m.state == ProtectionState::Scrubbed) {
            let packets = m.scrub_packets.as_mut().is_none_or(|b| b.take(now));
            let bytes = m.scrub_bytes.as_mut().is_none_or(|b| b.take_n(now, len as u64));
            if !(packets && bytes) {
                return Err(c.drop(id, DropReason::VipScrubbed));
            }
        }
        if g.packets.as_mut().is_some_and(|b| !b.take(now)) {
            return Err(c.drop(id, DropReason::ListenerRateLimited));
        }
        Ok(())
    }

    /// A client packet of `len` bytes to protected VIP index `v` (to any
    /// of its listeners or none): measured, then admitted or dropped by
    /// the VIP's state.
    #[inline]
    fn vip_packet(&mut self, v: usize, len: usize, now: u32, c: &AdmissionCounters) -> Result<(), DropReason> {
        let Some(m) = self.vip_measure(v, len, now, c) else {
            return Ok(());
        };
        match m.state {
            ProtectionState::Normal => Ok(()),
            ProtectionState::Blackholed => Err(c.vip_drop(v, DropReason::VipBlackholed)),
            ProtectionState::Scrubbed => {
                let packets = m.scrub_packets.as_mut().is_none_or(|b| b.take(now));
                let bytes = m.scrub_bytes.as_mut().is_none_or(|b| b.take_n(now, len as u64));
                if packets && bytes {
                    Ok(())
                } else {
                    Err(c.vip_drop(v, DropReason::VipScrubbed))
                }
            }
        }
    }

    /// A client packet of `len` bytes to protected VIP index `v` on a port
    /// no listener serves: it counts towards the VIP's rates; dropped as
    /// `vip_blackholed` while the VIP is, else as `no_listener`.
    #[inline]
    pub fn no_listener(&mut self, v: u16, len: usize, now: u32, c: &AdmissionCounters) -> DropReason {
        let v = usize::from(v);
        match self.vip_measure(v, len, now, c) {
            Some(m) if m.state == ProtectionState::Blackholed => c.vip_drop(v, DropReason::VipBlackholed),
            _ => DropReason::NoListener,
        }
    }

    /// Counts a client packet of `len` bytes towards protected VIP index
    /// `v`'s window (closing the window first when it is over); its meter,
    /// `None` for a VIP without one.
    #[inline]
    fn vip_measure(&mut self, v: usize, len: usize, now: u32, c: &AdmissionCounters) -> Option<&mut Meter> {
        let (Some(m), Some(gc)) = (self.vips.get_mut(v).and_then(|g| g.meter.as_mut()), c.vips.get(v)) else {
            return None;
        };
        m.roll(now, gc);
        m.packets += 1;
        m.bytes += len as u64;
        Some(m)
    }

    /// The protection state of protected VIP index `v` on this worker.
    pub fn vip_state(&self, v: usize) -> ProtectionState {
        self.vips.get(v).and_then(|g| g.meter.as_ref()).map_or(ProtectionState::Normal, |m| m.state)
    }

    /// A new connection (a flow that will get a session) to listener `l`
    /// from `src`: admitted or the reason it is not. Its packet has passed
    /// [`Admission::packet`].
    #[inline]
    pub fn new_connection(
        &mut self,
        l: &ListenerView,
        src: u32,
        now: u32,
        c: &AdmissionCounters,
    ) -> Result<(), DropReason> {
        if !l.guarded {
            return Ok(());
        }
        if let Some(v) = l.vip_guard.map(usize::from) {
            if let Some(m) = self.vips.get_mut(v).and_then(|g| g.meter.as_mut()) {
                m.connections += 1;
                if m.state == ProtectionState::Scrubbed && m.scrub_connections.as_mut().is_some_and(|b| !b.take(now)) {
                    return Err(c.vip_drop(v, DropReason::VipScrubbed));
                }
            }
        }
        let id = usize::from(l.id);
        let Some(g) = self.guards.get_mut(id) else { return Ok(()) };
        if let Some(m) = g.meter.as_mut() {
            m.connections += 1;
        }
        if g.source_connections.is_some() || g.source_sessions.is_some() {
            let e = self.sources.entry(source_key(l.id.0, src), now);
            if g.source_sessions.is_some_and(|max| e.sessions >= max) {
                return Err(c.drop(id, DropReason::SourceSessionLimit));
            }
            if let Some(s) = g.source_connections {
                if !e.connections.take(now, s.rate, s.burst, 1) {
                    return Err(c.drop(id, DropReason::SourceRateLimited));
                }
            }
        }
        if let Some(m) = g.meter.as_mut().filter(|m| m.state == ProtectionState::Scrubbed) {
            if m.scrub_connections.as_mut().is_some_and(|b| !b.take(now)) {
                return Err(c.drop(id, DropReason::VipScrubbed));
            }
        }
        if g.connections.as_mut().is_some_and(|b| !b.take(now)) {
            return Err(c.drop(id, DropReason::ListenerRateLimited));
        }
        Ok(())
    }

    /// A session of listener `l` from `src` was made: counted against the
    /// source's cap when the listener has one.
    #[inline]
    pub fn session_opened(&mut self, l: &ListenerView, src: u32, now: u32) {
        if !l.guarded {
            return;
        }
        if self.guards.get(usize::from(l.id)).is_some_and(|g| g.source_sessions.is_some()) {
            let e = self.sources.entry(source_key(l.id.0, src), now);
            e.sessions = e.sessions.saturating_add(1);
        }
    }

    /// A session of listener `listener` from `src` ended. Whatever the
    /// listener's limits are now: an entry with sessions counted them
    /// (a cap since removed must not leave counts that never fall).
    #[inline]
    pub fn session_closed(&mut self, listener: u16, src: u32) {
        if self.sources.is_empty() {
            return;
        }
        if let Some(e) = self.sources.find(source_key(listener, src)) {
            e.sessions = e.sessions.saturating_sub(1);
        }
    }

    /// The protection state of listener id `id` on this worker.
    pub fn state(&self, id: usize) -> ProtectionState {
        self.guards.get(id).and_then(|g| g.meter.as_ref()).map_or(ProtectionState::Normal, |m| m.state)
    }
}

/// The limits part of a listener's report: configuration, the workers'
/// states summed, drops by reason; `None` for a listener without limits.
pub fn report(
    workers: &[std::sync::Arc<crate::counters::WorkerCounters>],
    l: &ListenerView,
) -> Option<lbproto::stats::LimitsReport> {
    if l.limits.is_none() && l.protection.is_none() {
        return None;
    }
    let mut configured = std::collections::BTreeMap::new();
    let mut put = |k: &str, v: Option<u64>| {
        if let Some(v) = v {
            configured.insert(k.to_owned(), v);
        }
    };
    let lim = &l.limits;
    put("new_connections_per_second", lim.new_connections_per_second.map(u64::from));
    put("packets_per_second", lim.packets_per_second.map(u64::from));
    put("per_source.new_connections_per_second", lim.per_source.new_connections_per_second.map(u64::from));
    put("per_source.packets_per_second", lim.per_source.packets_per_second.map(u64::from));
    put("per_source.max_sessions", lim.per_source.max_sessions.map(u64::from));
    if let Some(p) = &l.protection {
        put_protection(&mut configured, p);
    }
    let id = usize::from(l.id);
    Some(guard_report(configured, workers.iter().filter_map(|w| w.admission.listeners.get(id)).collect()))
}

/// The reports of `vips[]` (in the snapshot's order, which is the
/// configuration's): thresholds, the workers' states summed, drops.
pub fn vip_reports(
    workers: &[std::sync::Arc<crate::counters::WorkerCounters>],
    snap: &crate::snapshot::Snapshot,
) -> Vec<lbproto::stats::VipReport> {
    snap.vips
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let mut configured = std::collections::BTreeMap::new();
            put_protection(&mut configured, &v.protection);
            let mut protection =
                guard_report(configured, workers.iter().filter_map(|w| w.admission.vips.get(i)).collect());
            // A VIP's own drops are these two; the listeners' limits count
            // theirs under the listener.
            protection.drops.retain(|k, _| k.starts_with("vip_"));
            lbproto::stats::VipReport { address: std::net::Ipv4Addr::from(v.addr), protection }
        })
        .collect()
}

fn put_protection(configured: &mut std::collections::BTreeMap<String, u64>, p: &Protection) {
    for (level, t) in [("scrub", &p.scrub), ("blackhole", &p.blackhole)] {
        if let Some(t) = t {
            for (k, v) in [
                ("packets_per_second", t.packets_per_second),
                ("bits_per_second", t.bits_per_second),
                ("new_connections_per_second", t.new_connections_per_second),
            ] {
                if let Some(v) = v {
                    configured.insert(format!("{level}.{k}"), v);
                }
            }
        }
    }
    configured.insert("hold_ms".to_owned(), u64::from(p.hold_ms));
}

/// One guarded thing's report from its counter block on every worker.
fn guard_report(
    configured: std::collections::BTreeMap<String, u64>,
    guards: Vec<&GuardCounters>,
) -> lbproto::stats::LimitsReport {
    let sum = |f: &dyn Fn(&GuardCounters) -> u64| guards.iter().map(|g| f(g)).sum::<u64>();
    let states: Vec<ProtectionState> = guards.iter().map(|g| ProtectionState::from_gauge(g.state.get())).collect();
    let count = |s: ProtectionState| states.iter().filter(|x| **x == s).count() as u64;
    lbproto::stats::LimitsReport {
        configured,
        state: states.iter().max().copied().unwrap_or(ProtectionState::Normal).name().to_owned(),
        workers_scrubbed: count(ProtectionState::Scrubbed),
        workers_blackholed: count(ProtectionState::Blackholed),
        scrubbed_total: sum(&|g| g.scrubbed.get()),
        blackholed_total: sum(&|g| g.blackholed.get()),
        released_total: sum(&|g| g.released.get()),
        packets_per_second: sum(&|g| g.packets_per_second.get()),
        bits_per_second: sum(&|g| g.bits_per_second.get()),
        new_connections_per_second: sum(&|g| g.new_connections_per_second.get()),
        drops: LIMIT_DROPS
            .iter()
            .enumerate()
            .map(|(i, r)| (r.label().to_owned(), sum(&|g| g.drops[i].get())))
            .collect(),
    }
}

/// Every guarded listener's and protected VIP's state (the highest of any
/// worker) with what the workers last measured, for the control thread's
/// log of state changes: `(what, state, packets/s, bits/s, new
/// connections/s)`, `what` as `listener NAME` or `VIP ADDRESS`.
pub fn protection_states(
    workers: &[std::sync::Arc<crate::counters::WorkerCounters>],
    snap: &crate::snapshot::Snapshot,
) -> Vec<(String, ProtectionState, [u64; 3])> {
    let of = |guards: &mut dyn Iterator<Item = &GuardCounters>| {
        let mut state = ProtectionState::Normal;
        let mut rates = [0u64; 3];
        for g in guards {
            state = state.max(ProtectionState::from_gauge(g.state.get()));
            rates[0] += g.packets_per_second.get();
            rates[1] += g.bits_per_second.get();
            rates[2] += g.new_connections_per_second.get();
        }
        (state, rates)
    };
    let listeners = snap.listeners.iter().filter(|l| l.protection.is_some()).map(|l| {
        let id = usize::from(l.id);
        let (state, rates) = of(&mut workers.iter().filter_map(|w| w.admission.listeners.get(id)));
        (format!("listener {}", l.name), state, rates)
    });
    let vips = snap.vips.iter().enumerate().map(|(i, v)| {
        let (state, rates) = of(&mut workers.iter().filter_map(|w| w.admission.vips.get(i)));
        (format!("VIP {}", std::net::Ipv4Addr::from(v.addr)), state, rates)
    });
    listeners.chain(vips).collect()
}

/// The source tables of all workers, summed.
pub fn source_table_report(
    workers: &[std::sync::Arc<crate::counters::WorkerCounters>],
) -> lbproto::stats::SourceTableReport {
    let sum = |f: &dyn Fn(&AdmissionCounters) -> u64| workers.iter().map(|w| f(&w.admission)).sum::<u64>();
    lbproto::stats::SourceTableReport {
        entries: sum(&|a| a.source_entries.get()),
        capacity: sum(&|a| a.source_capacity.get()),
        evictions: sum(&|a| a.source_evictions.get()),
        evictions_with_sessions: sum(&|a| a.source_evictions_with_sessions.get()),
    }
}
