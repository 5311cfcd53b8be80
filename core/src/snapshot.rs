//! The immutable forwarding state the workers read: ports, routes,
//! listeners with their built schedulers, timeouts.
//!
//! The control thread builds a whole new [`Snapshot`] for every change and
//! publishes it through a [`SnapshotCell`]; each worker checks the
//! generation between bursts (one Acquire load, paired with the Release
//! store in [`SnapshotCell::publish`]) and takes the new `Arc` when it moved.
//! The control thread keeps the snapshots it replaced until every worker
//! reports the new generation and then frees them itself, so no worker ever
//! reads freed memory, none ever waits, and none pays for freeing a large
//! table.

use crate::config::{Config, Forwarding, NonSynPolicy, Protocol, RemovedBackendPolicy, MAX_BACKENDS, MAX_LISTENERS};
use crate::flow::fold_mul;
use crate::health::{listener_weights, AllDownPolicy, HealthTable};
use crate::ids::{BackendId, ListenerId, ListenerPos, PortIndex};
use crate::neighbor::ArpTimers;
use crate::scheduler::Scheduler;
use crate::session::StateTimeouts;
use crate::wire::MacAddr;
use arc_swap::ArcSwap;
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A read-only open-addressing map from non-zero `u64` keys, built once.
///
/// Most lookups of the local-address map are misses: every reply packet
/// asks whether its destination (a client) is ours. A miss that probes
/// until it meets an empty slot costs a loop whose trip count follows the
/// client address, which the branch predictor cannot learn (perf put
/// `direction` at 5 % of the return path's samples, 1 % of the request
/// path's). A 256-bit filter of the keys answers nearly every miss with
/// one well-predicted test first.
#[derive(Debug, Clone)]
pub struct FrozenMap {
    keys: Box<[u64]>,
    vals: Box<[u32]>,
    mask: usize,
    /// Bit `fingerprint(k)` is set for every key `k` in the map.
    filter: [u64; 4],
}

impl FrozenMap {
    pub fn new(entries: &[(u64, u32)]) -> FrozenMap {
        let size = (entries.len() * 2).next_power_of_two().max(8);
        let mut keys = vec![0u64; size].into_boxed_slice();
        let mut vals = vec![0u32; size].into_boxed_slice();
        let mut filter = [0u64; 4];
        for &(k, v) in entries {
            assert!(k != 0, "zero key marks empty slots");
            let h = Self::mix(k);
            filter[Self::fingerprint(h) >> 6] |= 1 << (Self::fingerprint(h) & 63);
            let mut i = (h as usize) & (size - 1);
            while keys[i] != 0 && keys[i] != k {
                i = (i + 1) & (size - 1);
            }
            keys[i] = k;
            vals[i] = v;
        }
        FrozenMap { keys, vals, mask: size - 1, filter }
    }

    #[inline(always)]
    fn mix(k: u64) -> u64 {
        fold_mul(k, 0x9e37_79b9_7f4a_7c15)
    }

    /// The filter bit of a key mixed to `h`: its top 8 bits, independent of
    /// the slot its low bits pick.
    #[inline(always)]
    fn fingerprint(h: u64) -> usize {
        (h >> 56) as usize
    }

    #[inline]
    pub fn get(&self, k: u64) -> Option<u32> {
        let h = Self::mix(k);
        let f = Self::fingerprint(h);
        if self.filter[f >> 6] & (1 << (f & 63)) == 0 {
            return None;
        }
        let mut i = (h as usize) & self.mask;
        loop {
            let x = self.keys[i];
            if x == k {
                return Some(self.vals[i]);
            }
            if x == 0 {
                return None;
            }
            i = (i + 1) & self.mask;
        }
    }
}

#[inline]
pub fn listener_key(vip: u32, proto: u8, port: u16) -> u64 {
    // Bit 56 keeps the key non-zero even for 0.0.0.0.
    1 << 56 | u64::from(proto) << 48 | u64::from(port) << 32 | u64::from(vip)
}

#[derive(Debug, Clone)]
pub struct PortView {
    pub name: String,
    pub device: String,
    pub mac: MacAddr,
    pub addr: u32,
    pub net: u32,
    pub mask: u32,
    pub prefix_len: u8,
    pub gateway: Option<u32>,
    /// The port has a kernel interface (exception path): traffic for the
    /// host on this port's address goes up to it.
    pub kernel: bool,
    /// Largest IPv4 packet sent out of the port.
    pub mtu: u16,
}

impl PortView {
    #[inline]
    pub fn on_link(&self, ip: u32) -> bool {
        ip & self.mask == self.net
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub net: u32,
    pub mask: u32,
    pub port: PortIndex,
    /// `None`: the destination is on the link.
    pub via: Option<u32>,
}

/// Connected subnets of the ports, longest prefix first, then the default
/// route through the gateway.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub fn new(ports: &[PortView]) -> RouteTable {
        let mut routes: Vec<Route> = ports
            .iter()
            .enumerate()
            .map(|(i, p)| Route { net: p.net, mask: p.mask, port: PortIndex(i as u16), via: None })
            .collect();
        routes.sort_by_key(|r| std::cmp::Reverse(r.mask.count_ones()));
        if let Some((i, p)) = ports.iter().enumerate().find(|(_, p)| p.gateway.is_some()) {
            routes.push(Route { net: 0, mask: 0, port: PortIndex(i as u16), via: p.gateway });
        }
        RouteTable { routes }
    }

    /// (egress port, next-hop address) for `dst`.
    #[inline]
    pub fn lookup(&self, dst: u32) -> Option<(PortIndex, u32)> {
        self.routes.iter().find(|r| dst & r.mask == r.net).map(|r| (r.port, r.via.unwrap_or(dst)))
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

#[derive(Debug, Clone)]
pub struct BackendView {
    /// Stable id: indexes per-backend counters and lives in sessions.
    pub id: BackendId,
    pub addr: u32,
    pub port: u16,
    pub weight: u32,
    pub drained: bool,
    /// The weight the scheduler was built with (after drain, health and
    /// slow start).
    pub scheduled_weight: u32,
    /// Health down (see `serving` for whether that counts now).
    pub down: bool,
    /// Whether the backend serves its listener: not down, or down while
    /// the listener fails open. Sessions on a backend that does not serve
    /// follow `sessions.removed_backend`.
    pub serving: bool,
}

#[derive(Debug, Clone)]
pub struct ListenerView {
    /// Stable id: indexes per-listener counters and lives in sessions.
    pub id: ListenerId,
    pub name: String,
    pub vip: u32,
    pub proto: u8,
    pub protocol: Protocol,
    pub port: u16,
    /// Shared with the snapshot before when its inputs did not change, so
    /// a health or slow-start rebuild rebuilds only what it must.
    pub scheduler: Arc<Scheduler>,
    /// How long a client keeps its backend after its last new connection
    /// (ms); `None`: no persistence.
    pub persistence_ms: Option<u32>,
    /// Whether a new flow's backend may be picked in the burst's prefetch
    /// pass: when neither the scheduler nor persistence depends on the
    /// sessions earlier packets of the burst create.
    pub decides_ahead: bool,
    pub non_syn: NonSynPolicy,
    pub syn_proxy: crate::config::SynProxyMode,
    pub backends: Vec<BackendView>,
    /// Every backend not drained is down.
    pub all_down: bool,
    pub all_down_policy: AllDownPolicy,
    /// Rate limits and protection (`crate::admission`); `guarded`: any of
    /// them is set, so an unguarded listener costs one test per packet.
    pub limits: crate::admission::Limits,
    pub protection: Option<crate::admission::Protection>,
    /// The index in [`Snapshot::vips`] of this listener's VIP when the VIP
    /// is protected as a whole.
    pub vip_guard: Option<u16>,
    pub guarded: bool,
    /// The verdicts of the listener's security group for new flows;
    /// `None`: every flow is admitted.
    pub security: Option<Arc<crate::security::SourceVerdicts>>,
}

/// What a local (non-forwarded) destination address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalAddress {
    /// A port's own address.
    Port(PortIndex),
    /// A VIP; `owner` is the port whose subnet holds it (answers its ARP).
    Vip { owner: Option<PortIndex> },
}

#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub ports: Vec<PortView>,
    /// Never changed after the build: `backend_routes` holds its answers.
    pub routes: RouteTable,
    pub listeners: Vec<ListenerView>,
    listener_index: FrozenMap,
    local_index: FrozenMap,
    locals: Vec<LocalAddress>,
    /// Backend id → (listener position, backend position), `u16::MAX` when
    /// the id is not configured.
    backend_slots: Box<[(ListenerPos, u16)]>,
    /// Backend id → the id of the listener it serves now (configured for
    /// it and not taken out by its health), `u16::MAX` when none: what
    /// [`Self::backend_serves`] asks for every packet of a session, in one
    /// load instead of a chain of four.
    serving_listener: Box<[u16]>,
    /// Listener id → position in `listeners`.
    listener_slots: Box<[ListenerPos]>,
    /// Backend id → the route to its address, looked up once here rather
    /// than scanned for on every request packet (see
    /// [`Self::route_to_backend`]).
    backend_routes: Box<[BackendRoute]>,
    pub static_neighbors: Vec<(PortIndex, u32, MacAddr)>,
    pub timeouts: StateTimeouts,
    pub arp: ArpTimers,
    /// Oldest a parked packet may get before it is dropped (ms).
    pub park_max_ms: u32,
    pub removed_backend: RemovedBackendPolicy,
    /// The smallest MTU of all ports: a packet no longer fits any of them.
    pub min_mtu: u16,
    /// `sessions.half_open_max_per_worker`.
    pub half_open_max: usize,
    /// `vips[]`: VIPs protected as a whole, indexed by
    /// [`ListenerView::vip_guard`].
    pub vips: Vec<VipView>,
}

/// Where packets to a configured backend leave (see
/// [`Snapshot::route_to_backend`]): its address, to check a session's
/// copy against, and the route table's answer for it.
#[derive(Debug, Clone, Copy)]
struct BackendRoute {
    addr: u32,
    next_hop: u32,
    port: PortIndex,
}

/// No configured backend, or one no route reaches.
const NO_BACKEND_ROUTE: BackendRoute = BackendRoute { addr: 0, next_hop: 0, port: PortIndex(u16::MAX) };

/// A VIP protected as a whole (`vips[]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VipView {
    pub addr: u32,
    pub protection: crate::admission::Protection,
}

/// An id that changed owner in [`IdRegistry::assign`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecycledId {
    Listener(ListenerId),
    Backend(BackendId),
    /// A security rule's hit counter slot.
    SecurityRule(u32),
}

type BackendKey = (String, Ipv4Addr, u16);

/// Stable numbering of listeners (by name) and backends (by listener,
/// address and port) across snapshots, so counters and sessions keep
/// pointing at the same thing when the configuration changes. A removed
/// entry keeps its id, so putting it back resumes its sessions and
/// counters; only when fresh ids run out is the id of a removed entry with
/// no session left given to a new one (the caller then records a counter
/// baseline for it).
#[derive(Debug, Default, Clone)]
pub struct IdRegistry {
    listeners: HashMap<String, ListenerId>,
    backends: HashMap<BackendKey, BackendId>,
    listener_owner: Vec<Option<String>>,
    backend_owner: Vec<Option<BackendKey>>,
    /// Hit counter slots of security rules.
    pub security: crate::security::RuleIds,
}

impl IdRegistry {
    /// Gives every listener and backend of `forwarding` an id. `idle(kind, id)`
    /// says whether a removed id has no session left. Returns the ids that
    /// changed owner; fails, changing nothing, when ids run out.
    pub fn assign(
        &mut self,
        forwarding: &Forwarding,
        idle: &dyn Fn(RecycledId) -> bool,
    ) -> Result<Vec<RecycledId>, String> {
        let mut next = self.clone();
        let live_l: HashSet<&str> = forwarding.listeners.iter().map(|l| l.name.as_str()).collect();
        let live_b: HashSet<BackendKey> = forwarding
            .listeners
            .iter()
            .flat_map(|l| l.backends.iter().map(move |b| (l.name.clone(), b.address, b.port)))
            .collect();
        let mut recycled = Vec::new();
        for l in &forwarding.listeners {
            if next.listeners.contains_key(&l.name) {
                continue;
            }
            let id = if next.listener_owner.len() < MAX_LISTENERS {
                next.listener_owner.push(None);
                ListenerId((next.listener_owner.len() - 1) as u16)
            } else {
                let free = (0..MAX_LISTENERS as u16).map(ListenerId).find(|id| {
                    let owner = next.listener_owner[usize::from(*id)].as_deref();
                    owner.is_none_or(|o| !live_l.contains(o)) && idle(RecycledId::Listener(*id))
                });
                let id = free.ok_or_else(|| {
                    format!("no listener id free: {MAX_LISTENERS} listeners exist or still have sessions")
                })?;
                if let Some(old) = next.listener_owner[usize::from(id)].take() {
                    next.listeners.remove(&old);
                }
                recycled.push(RecycledId::Listener(id));
                id
            };
            next.listener_owner[usize::from(id)] = Some(l.name.clone());
            next.listeners.insert(l.name.clone(), id);
        }
        for l in &forwarding.listeners {
            for b in &l.backends {
                let key = (l.name.clone(), b.address, b.port);
                if next.backends.contains_key(&key) {
                    continue;
                }
                let id = if next.backend_owner.len() < MAX_BACKENDS {
                    next.backend_owner.push(None);
                    BackendId((next.backend_owner.len() - 1) as u32)
                } else {
                    let free = (0..MAX_BACKENDS as u32).map(BackendId).find(|id| {
                        let owner = next.backend_owner[usize::from(*id)].as_ref();
                        owner.is_none_or(|o| !live_b.contains(o)) && idle(RecycledId::Backend(*id))
                    });
                    let id = free.ok_or_else(|| {
                        format!("no backend id free: {MAX_BACKENDS} backends exist or still have sessions")
                    })?;
                    if let Some(old) = next.backend_owner[usize::from(id)].take() {
                        next.backends.remove(&old);
                    }
                    recycled.push(RecycledId::Backend(id));
                    id
                };
                next.backend_owner[usize::from(id)] = Some(key.clone());
                next.backends.insert(key, id);
            }
        }
        let slots = next.security.assign(&forwarding.security_groups)?;
        recycled.extend(slots.into_iter().map(RecycledId::SecurityRule));
        *self = next;
        Ok(recycled)
    }

    pub fn listener(&self, name: &str) -> Option<ListenerId> {
        self.listeners.get(name).copied()
    }

    pub fn backend(&self, listener: &str, addr: Ipv4Addr, port: u16) -> Option<BackendId> {
        self.backends.get(&(listener.to_owned(), addr, port)).copied()
    }
}

fn mask_of(prefix_len: u8) -> u32 {
    if prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix_len))
    }
}

fn ms(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// What became of a port at start that its configuration cannot say: the
/// MAC address DPDK gave it, and whether its kernel interface exists (the
/// exception path is on by default only where the host can make one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortFacts {
    pub mac: MacAddr,
    pub kernel: bool,
}

impl PortFacts {
    /// Facts for `cfg`'s ports with MACs `macs`, taking every configured
    /// kernel interface as made (tests, benchmarks).
    pub fn as_configured(cfg: &Config, macs: &[MacAddr]) -> Vec<PortFacts> {
        cfg.startup
            .ports
            .iter()
            .zip(macs)
            .map(|(p, mac)| PortFacts { mac: *mac, kernel: p.exception_interface.is_some() })
            .collect()
    }
}

impl Snapshot {
    /// Builds the forwarding state of `cfg` with every backend healthy and
    /// every configured kernel interface made.
    pub fn build(cfg: &Config, macs: &[MacAddr], ids: &IdRegistry, generation: u64) -> Snapshot {
        let facts = PortFacts::as_configured(cfg, macs);
        Snapshot::build_with_health(
            cfg,
            &facts,
            ids,
            generation,
            &HealthTable::default(),
            std::time::Duration::ZERO,
            None,
        )
    }

    /// Builds the forwarding state of `cfg`. `facts[i]` is what port `i`
    /// ended up with (known only once DPDK opened the device); `ids` must
    /// have assigned every listener and backend of `cfg`. `health` (at
    /// time `now`, for slow start) decides which backends take new flows
    /// and with what weight. A listener of `previous` whose scheduler
    /// inputs (backends and weights) did not change lends its scheduler:
    /// a health change rebuilds the tables of the listeners it touches
    /// only.
    pub fn build_with_health(
        cfg: &Config,
        facts: &[PortFacts],
        ids: &IdRegistry,
        generation: u64,
        health: &HealthTable,
        now: std::time::Duration,
        previous: Option<&Snapshot>,
    ) -> Snapshot {
        assert_eq!(facts.len(), cfg.startup.ports.len());
        let ports: Vec<PortView> = cfg
            .startup
            .ports
            .iter()
            .zip(facts)
            .map(|(p, f)| {
                let prefix_len = p.subnet.prefix_len();
                PortView {
                    name: p.name.clone(),
                    device: p.device.clone(),
                    mac: f.mac,
                    addr: u32::from(p.address),
                    net: u32::from(p.subnet.network()),
                    mask: mask_of(prefix_len),
                    prefix_len,
                    gateway: p.gateway.map(u32::from),
                    kernel: f.kernel,
                    mtu: p.mtu,
                }
            })
            .collect();
        let routes = RouteTable::new(&ports);

        let mut listeners = Vec::with_capacity(cfg.forwarding.listeners.len());
        let mut backend_slots = vec![(ListenerPos(u16::MAX), u16::MAX); MAX_BACKENDS].into_boxed_slice();
        let mut listener_slots = vec![ListenerPos(u16::MAX); MAX_LISTENERS].into_boxed_slice();
        let mut serving_listener = vec![u16::MAX; MAX_BACKENDS].into_boxed_slice();
        let mut backend_routes = vec![NO_BACKEND_ROUTE; MAX_BACKENDS].into_boxed_slice();
        let mut lindex = Vec::new();
        // Verdicts built in this build, shared by listeners of one group,
        // protocol and port.
        let mut security_built: Vec<Arc<crate::security::SourceVerdicts>> = Vec::new();
        let mut security_slots: HashMap<&str, Vec<u32>> = HashMap::new();
        for (li, l) in cfg.forwarding.listeners.iter().enumerate() {
            let id = ids.listener(&l.name).expect("listener ids assigned before build");
            listener_slots[usize::from(id)] = ListenerPos(li as u16);
            let bids: Vec<BackendId> = l
                .backends
                .iter()
                .map(|b| ids.backend(&l.name, b.address, b.port).expect("backend ids assigned before build"))
                .collect();
            let records: Vec<_> = bids.iter().map(|id| health.get(*id)).collect();
            let lw = listener_weights(l, &records, now);
            let backends: Vec<BackendView> = l
                .backends
                .iter()
                .enumerate()
                .map(|(bi, b)| {
                    let bid = bids[bi];
                    backend_slots[usize::from(bid)] = (ListenerPos(li as u16), bi as u16);
                    if lw.serving[bi] {
                        serving_listener[usize::from(bid)] = id.0;
                    }
                    let addr = u32::from(b.address);
                    if let Some((port, next_hop)) = routes.lookup(addr) {
                        backend_routes[usize::from(bid)] = BackendRoute { addr, next_hop, port };
                    }
                    BackendView {
                        id: bid,
                        addr,
                        port: b.port,
                        weight: b.weight,
                        drained: b.drained,
                        scheduled_weight: lw.weights[bi],
                        down: records[bi].is_some_and(|h| h.state() == crate::health::Health::Down),
                        serving: lw.serving[bi],
                    }
                })
                .collect();
            let weights = lw.weights;
            let vip = u32::from(l.vip);
            lindex.push((listener_key(vip, l.protocol.number(), l.port), li as u32));
            let scheduler = previous
                .and_then(|p| p.listener_by_id(id))
                .filter(|pl| {
                    // Ids can change owners between configurations: the
                    // names and addresses must match too.
                    pl.name == l.name
                        && pl
                            .backends
                            .iter()
                            .map(|b| (b.id, b.addr, b.port))
                            .eq(bids.iter().zip(&l.backends).map(|(id, b)| (*id, u32::from(b.address), b.port)))
                        && pl.scheduler.built_from(l.scheduler, &weights)
                })
                .map(|pl| Arc::clone(&pl.scheduler))
                .unwrap_or_else(|| Arc::new(Scheduler::build(l.scheduler, &l.backends, &weights)));
            let security = l.security_group.as_ref().map(|name| {
                let group = &cfg.forwarding.security_groups[name];
                let slots = security_slots
                    .entry(name.as_str())
                    .or_insert_with(|| ids.security.slots(group).expect("security rule slots assigned before build"))
                    .clone();
                let built = |v: &Arc<crate::security::SourceVerdicts>| v.built_from(group, &slots, l.protocol, l.port);
                let reused = security_built
                    .iter()
                    .chain(previous.into_iter().flat_map(|p| p.listeners.iter().filter_map(|pl| pl.security.as_ref())));
                let found = reused.into_iter().find(|v| built(v)).cloned();
                found.unwrap_or_else(|| {
                    let v = Arc::new(crate::security::SourceVerdicts::build(group, slots, l.protocol, l.port));
                    security_built.push(Arc::clone(&v));
                    v
                })
            });
            let vip_guard = cfg.forwarding.vips.iter().position(|v| u32::from(v.address) == vip).map(|i| i as u16);
            listeners.push(ListenerView {
                id,
                name: l.name.clone(),
                vip,
                proto: l.protocol.number(),
                protocol: l.protocol,
                port: l.port,
                decides_ahead: scheduler.decides_ahead() && l.persistence.is_none(),
                scheduler,
                persistence_ms: l.persistence.map(ms),
                non_syn: l.tcp_non_syn,
                syn_proxy: l.syn_proxy,
                backends,
                all_down: lw.all_down,
                all_down_policy: l.all_down,
                limits: l.limits,
                protection: l.protection,
                vip_guard,
                guarded: !l.limits.is_none() || l.protection.is_some() || vip_guard.is_some(),
                security,
            });
        }

        let mut locals = Vec::new();
        let mut lentries = Vec::new();
        for (i, p) in ports.iter().enumerate() {
            lentries.push((1 << 40 | u64::from(p.addr), locals.len() as u32));
            locals.push(LocalAddress::Port(PortIndex(i as u16)));
        }
        let mut vips: Vec<u32> = listeners.iter().map(|l| l.vip).collect();
        vips.sort_unstable();
        vips.dedup();
        for vip in vips {
            let owner = ports.iter().position(|p| p.on_link(vip)).map(|i| PortIndex(i as u16));
            lentries.push((1 << 40 | u64::from(vip), locals.len() as u32));
            locals.push(LocalAddress::Vip { owner });
        }

        let static_neighbors = cfg
            .startup
            .ports
            .iter()
            .enumerate()
            .flat_map(|(i, p)| p.neighbors.iter().map(move |n| (PortIndex(i as u16), u32::from(n.ip), n.mac)))
            .collect();

        let arp = ArpTimers {
            reachable_ms: ms(cfg.forwarding.arp.reachable_time),
            retry_ms: ms(cfg.forwarding.arp.retry_interval),
            max_retries: cfg.forwarding.arp.max_retries,
        };
        let min_mtu = ports.iter().map(|p| p.mtu).min().unwrap_or(u16::MAX);
        let vips = cfg
            .forwarding
            .vips
            .iter()
            .map(|v| VipView { addr: u32::from(v.address), protection: v.protection })
            .collect();
        Snapshot {
            vips,
            generation,
            ports,
            routes,
            listeners,
            listener_index: FrozenMap::new(&lindex),
            local_index: FrozenMap::new(&lentries),
            locals,
            backend_slots,
            serving_listener,
            listener_slots,
            backend_routes,
            static_neighbors,
            timeouts: StateTimeouts::from_config(&cfg.forwarding.timeouts),
            park_max_ms: arp.retry_ms.saturating_mul(arp.max_retries + 1),
            arp,
            removed_backend: cfg.forwarding.removed_backend,
            min_mtu,
            half_open_max: cfg.forwarding.half_open_max(cfg.startup.session_capacity),
        }
    }

    /// The listener serving (`vip`, `proto`, `port`), by position.
    #[inline]
    pub fn listener(&self, vip: u32, proto: u8, port: u16) -> Option<&ListenerView> {
        self.listener_position(vip, proto, port).map(|i| &self.listeners[usize::from(i)])
    }

    /// Position in `listeners` of the listener serving the tuple.
    #[inline]
    pub fn listener_position(&self, vip: u32, proto: u8, port: u16) -> Option<ListenerPos> {
        self.listener_index.get(listener_key(vip, proto, port)).map(|i| ListenerPos(i as u16))
    }

    /// The index in [`Snapshot::vips`] of `ip` when it is a VIP protected
    /// as a whole. A scan: only on the drop path of packets no listener
    /// serves, over the few protected VIPs.
    #[inline]
    pub fn protected_vip(&self, ip: u32) -> Option<u16> {
        self.vips.iter().position(|v| v.addr == ip).map(|i| i as u16)
    }

    /// Whether `ip` is one of our addresses (a port's or a VIP).
    #[inline]
    pub fn local(&self, ip: u32) -> Option<LocalAddress> {
        self.local_index.get(1 << 40 | u64::from(ip)).map(|i| self.locals[i as usize])
    }

    /// True when `ip` should be answered for in ARP on `port`.
    #[inline]
    pub fn owns_on_port(&self, ip: u32, port: PortIndex) -> bool {
        match self.local(ip) {
            Some(LocalAddress::Port(p)) => p == port,
            Some(LocalAddress::Vip { owner }) => owner == Some(port),
            None => false,
        }
    }

    /// The listener with stable id `id`, if still configured.
    #[inline]
    pub fn listener_by_id(&self, id: ListenerId) -> Option<&ListenerView> {
        let i = *self.listener_slots.get(usize::from(id))?;
        self.listeners.get(usize::from(i))
    }

    /// Where the backend with stable id `id` is configured: its listener's
    /// and its own position.
    #[inline]
    pub fn backend_position(&self, id: BackendId) -> Option<(ListenerPos, u16)> {
        let p = *self.backend_slots.get(usize::from(id))?;
        (p.1 != u16::MAX).then_some(p)
    }

    /// The backend with stable id `id`, if still configured.
    #[inline]
    pub fn backend_by_id(&self, id: BackendId) -> Option<(&ListenerView, &BackendView)> {
        let (li, bi) = *self.backend_slots.get(usize::from(id))?;
        let l = self.listeners.get(usize::from(li))?;
        Some((l, l.backends.get(usize::from(bi))?))
    }

    /// Whether the backend with stable id `id` still serves listener
    /// `listener`: configured for it and not taken out by its health.
    #[inline]
    pub fn backend_serves(&self, id: BackendId, listener: ListenerId) -> bool {
        self.serving_listener.get(usize::from(id)) == Some(&listener.0)
    }

    /// [`RouteTable::lookup`] of `dst`, the address a session of backend
    /// `id` forwards to: one load and compare while `id` is configured at
    /// that address, the table's scan otherwise (a session kept after its
    /// backend was removed). Request packets take it; their destination is
    /// always a backend.
    #[inline]
    pub fn route_to_backend(&self, id: BackendId, dst: u32) -> Option<(PortIndex, u32)> {
        match self.backend_routes.get(usize::from(id)) {
            Some(r) if r.addr == dst && r.port.0 != u16::MAX => Some((r.port, r.next_hop)),
            _ => self.routes.lookup(dst),
        }
    }
}

/// Where the control thread publishes snapshots and workers pick them up.
#[derive(Debug)]
pub struct SnapshotCell {
    current: ArcSwap<Snapshot>,
    generation: AtomicU64,
}

impl SnapshotCell {
    pub fn new(s: Snapshot) -> SnapshotCell {
        let g = s.generation;
        SnapshotCell { current: ArcSwap::from_pointee(s), generation: AtomicU64::new(g) }
    }

    /// Replaces the snapshot; workers switch at their next burst boundary.
    pub fn publish(&self, s: Snapshot) {
        let g = s.generation;
        self.current.store(Arc::new(s));
        self.generation.store(g, Ordering::Release);
    }

    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frozen_map_finds_all_and_only_its_keys() {
        let entries: Vec<(u64, u32)> = (1..500u64).map(|k| (k * 7919, k as u32)).collect();
        let m = FrozenMap::new(&entries);
        for (k, v) in &entries {
            assert_eq!(m.get(*k), Some(*v));
        }
        assert_eq!(m.get(3), None);
        assert_eq!(FrozenMap::new(&[]).get(5), None);
    }

    proptest::proptest! {
        /// The filter never hides a key, and a lookup answers exactly what
        /// a plain map holds, for keys in and out of the map.
        #[test]
        fn frozen_map_agrees_with_a_hash_map(
            keys in proptest::collection::hash_set(1u64.., 0..300),
            probes in proptest::collection::vec(proptest::num::u64::ANY, 0..300),
        ) {
            let entries: Vec<(u64, u32)> = keys.iter().enumerate().map(|(i, k)| (*k, i as u32)).collect();
            let want: std::collections::HashMap<u64, u32> = entries.iter().copied().collect();
            let m = FrozenMap::new(&entries);
            for k in keys.iter().chain(probes.iter()) {
                proptest::prop_assert_eq!(m.get(*k), want.get(k).copied());
            }
        }
    }

    #[test]
    fn frozen_map_filter_rejects_most_misses_of_a_small_map() {
        // Two port addresses and a VIP: a miss should almost never need to
        // probe (the point of the filter).
        let m = FrozenMap::new(&[(1 << 40 | 0x0a00_0001, 0), (1 << 40 | 0x0a01_0001, 1), (1 << 40 | 0x0a00_0064, 2)]);
        let passed = (0..100_000u64)
            .map(|i| 1 << 40 | (0xac10_0000 + i))
            .filter(|k| {
                let f = FrozenMap::fingerprint(FrozenMap::mix(*k));
                m.filter[f >> 6] & (1 << (f & 63)) != 0
            })
            .count();
        assert!(passed < 3_000, "{passed} of 100000 misses passed the filter");
    }

    #[test]
    fn routes_prefer_longest_prefix_then_gateway() {
        let p = |net: [u8; 4], len: u8, gw: Option<[u8; 4]>| PortView {
            name: String::new(),
            device: String::new(),
            mac: MacAddr::ZERO,
            addr: u32::from(Ipv4Addr::from(net)) + 1,
            net: u32::from(Ipv4Addr::from(net)),
            mask: mask_of(len),
            prefix_len: len,
            gateway: gw.map(|g| u32::from(Ipv4Addr::from(g))),
            kernel: false,
            mtu: 1500,
        };
        let ports = vec![p([10, 0, 0, 0], 16, Some([10, 0, 0, 254])), p([10, 0, 5, 0], 24, None)];
        let r = RouteTable::new(&ports);
        let ip = |a: [u8; 4]| u32::from(Ipv4Addr::from(a));
        assert_eq!(r.lookup(ip([10, 0, 5, 9])), Some((PortIndex(1), ip([10, 0, 5, 9]))));
        assert_eq!(r.lookup(ip([10, 0, 6, 9])), Some((PortIndex(0), ip([10, 0, 6, 9]))));
        assert_eq!(r.lookup(ip([8, 8, 8, 8])), Some((PortIndex(0), ip([10, 0, 0, 254]))));
        let r = RouteTable::new(&ports[1..]);
        assert_eq!(r.lookup(ip([8, 8, 8, 8])), None);
    }

    fn cfg_with(listeners: &[(&str, &[u16])]) -> Forwarding {
        let mut y = String::from("ports:\n  - {name: p, device: d, address: 10.0.0.1/16}\nlisteners:\n");
        for (i, (name, ports)) in listeners.iter().enumerate() {
            y += &format!(
                "  - name: {name}\n    vip: 10.0.1.{}\n    protocol: tcp\n    port: 80\n    backends:\n",
                i + 1
            );
            for p in *ports {
                y += &format!("      - {{address: 10.0.2.1, port: {p}}}\n");
            }
        }
        crate::config::parse(&y, std::path::Path::new("t")).unwrap().forwarding
    }

    #[test]
    fn ids_are_stable_across_changes() {
        let mut ids = IdRegistry::default();
        ids.assign(&cfg_with(&[("web", &[80, 81]), ("dns", &[53])]), &|_| true).unwrap();
        let web = ids.listener("web").unwrap();
        let b81 = ids.backend("web", Ipv4Addr::new(10, 0, 2, 1), 81).unwrap();
        // Remove dns and a backend, add another: the survivors keep theirs.
        ids.assign(&cfg_with(&[("web", &[80]), ("api", &[82])]), &|_| true).unwrap();
        assert_eq!(ids.listener("web"), Some(web));
        assert_ne!(ids.listener("api"), ids.listener("dns"));
        // Put the backend back: same id as before.
        ids.assign(&cfg_with(&[("web", &[80, 81])]), &|_| true).unwrap();
        assert_eq!(ids.backend("web", Ipv4Addr::new(10, 0, 2, 1), 81), Some(b81));
    }

    #[test]
    fn exhausted_ids_recycle_only_idle_removed_ones() {
        let mut ids = IdRegistry::default();
        let names: Vec<String> = (0..MAX_LISTENERS).map(|i| format!("l{i}")).collect();
        // Fill every id (one listener each, no backends to keep it cheap).
        for chunk in names.chunks(16) {
            let mut y = String::from("ports:\n  - {name: p, device: d, address: 10.0.0.1/8}\nlisteners:\n");
            for (i, n) in chunk.iter().enumerate() {
                y += &format!("  - {{name: {n}, vip: 10.1.0.{}, protocol: tcp, port: 80}}\n", i + 1);
            }
            let c = crate::config::parse(&y, std::path::Path::new("t")).unwrap();
            ids.assign(&c.forwarding, &|_| true).unwrap();
        }
        let fresh = crate::config::parse(
            "ports:\n  - {name: p, device: d, address: 10.0.0.1/8}\nlisteners:\n  - {name: new, vip: 10.1.0.1, protocol: tcp, port: 80}\n",
            std::path::Path::new("t"),
        )
        .unwrap()
        .forwarding;
        // Every removed id still has sessions: refused, nothing changed.
        let before = ids.clone();
        assert!(ids.assign(&fresh, &|_| false).is_err());
        assert_eq!(ids.listener("new"), None);
        assert_eq!(before.listener("l3"), ids.listener("l3"));
        // l3's id is idle: it is recycled and reported.
        let l3 = ids.listener("l3").unwrap();
        let recycled = ids.assign(&fresh, &|id| id == RecycledId::Listener(l3)).unwrap();
        assert_eq!(recycled, vec![RecycledId::Listener(l3)]);
        assert_eq!(ids.listener("new"), Some(l3));
        assert_eq!(ids.listener("l3"), None);
    }
}

#[cfg(test)]
mod reuse_tests {
    use super::*;
    use crate::health::{BackendHealth, Health};
    use std::path::Path;

    const CFG: &str = "
ports:
  - {name: int, device: d, address: 10.1.0.1/24}
listeners:
  - name: a
    vip: 10.1.0.100
    protocol: tcp
    port: 80
    backends: [{address: 10.1.0.11, port: 80}, {address: 10.1.0.12, port: 80}]
  - name: b
    vip: 10.1.0.100
    protocol: tcp
    port: 81
    backends: [{address: 10.1.0.11, port: 81}, {address: 10.1.0.12, port: 81}]
";

    /// `CFG` parsed, its ids assigned, its ports as configured.
    fn parsed_cfg() -> (Config, IdRegistry, Vec<PortFacts>) {
        let cfg = crate::config::parse(CFG, Path::new("t.yaml")).unwrap();
        let mut ids = IdRegistry::default();
        ids.assign(&cfg.forwarding, &|_| true).unwrap();
        let facts = PortFacts::as_configured(&cfg, &[MacAddr::ZERO]);
        (cfg, ids, facts)
    }

    #[test]
    fn a_rebuild_reuses_the_schedulers_whose_inputs_did_not_change() {
        let (cfg, ids, facts) = parsed_cfg();
        let zero = std::time::Duration::ZERO;
        let build = |health: &HealthTable, previous: Option<&Snapshot>| {
            Snapshot::build_with_health(&cfg, &facts, &ids, 1, health, zero, previous)
        };
        let first = build(&HealthTable::default(), None);
        // Nothing changed: both tables are the ones already built.
        let same = build(&HealthTable::default(), Some(&first));
        for (x, y) in first.listeners.iter().zip(&same.listeners) {
            assert!(Arc::ptr_eq(&x.scheduler, &y.scheduler), "{} rebuilt", x.name);
        }
        // A backend of `a` goes down: `a` is rebuilt without it, `b` kept.
        let mut health = HealthTable::default();
        let id = ids.backend("a", "10.1.0.12".parse().unwrap(), 80).unwrap();
        health.backends.insert(id, BackendHealth { state: Some(Health::Down), ..BackendHealth::default() });
        let next = build(&health, Some(&same));
        assert!(!Arc::ptr_eq(&same.listeners[0].scheduler, &next.listeners[0].scheduler));
        assert_eq!(next.listeners[0].scheduler.shares(2)[1], 0, "the down backend has no share");
        assert!(Arc::ptr_eq(&same.listeners[1].scheduler, &next.listeners[1].scheduler));
        // Without a previous snapshot everything is built.
        let fresh = build(&health, None);
        assert!(!Arc::ptr_eq(&next.listeners[1].scheduler, &fresh.listeners[1].scheduler));
    }

    /// `backend_serves` reads one flat table; it must say what the
    /// listener and backend views say, for every id, with a backend down.
    #[test]
    fn backend_serves_agrees_with_the_views() {
        let (cfg, ids, facts) = parsed_cfg();
        let mut health = HealthTable::default();
        let down = ids.backend("a", "10.1.0.12".parse().unwrap(), 80).unwrap();
        health.backends.insert(down, BackendHealth { state: Some(Health::Down), ..BackendHealth::default() });
        let snap = Snapshot::build_with_health(&cfg, &facts, &ids, 1, &health, std::time::Duration::ZERO, None);
        let (a, b) = (snap.listeners[0].id, snap.listeners[1].id);
        let up = ids.backend("a", "10.1.0.11".parse().unwrap(), 80).unwrap();
        assert!(snap.backend_serves(up, a) && !snap.backend_serves(up, b));
        assert!(!snap.backend_serves(down, a), "a backend down serves nothing");
        for id in 0..=MAX_BACKENDS as u32 {
            let id = BackendId(id);
            for l in [a, b, ListenerId(200)] {
                let by_views = snap.backend_by_id(id).is_some_and(|(lv, bv)| lv.id == l && bv.serving);
                assert_eq!(snap.backend_serves(id, l), by_views, "backend {id:?}, listener {l:?}");
            }
        }
    }

    /// The remembered route of every configured backend is the table's
    /// answer for its address; any other address, or an id not
    /// configured, gets the table's answer too.
    #[test]
    fn route_to_backend_agrees_with_the_route_table() {
        let (cfg, ids, facts) = parsed_cfg();
        let snap = Snapshot::build_with_health(
            &cfg,
            &facts,
            &ids,
            1,
            &HealthTable::default(),
            std::time::Duration::ZERO,
            None,
        );
        let mut checked = 0;
        for l in &snap.listeners {
            for b in l.backends.iter() {
                assert!(snap.routes.lookup(b.addr).is_some(), "the sample's backends are routed");
                assert_eq!(snap.route_to_backend(b.id, b.addr), snap.routes.lookup(b.addr));
                checked += 1;
            }
        }
        assert!(checked > 0);
        let b = &snap.listeners[0].backends[0];
        // 0: the address an id that is not configured has.
        for dst in [0, 0x0a01_00fe, 0x0808_0808, 0xc0a8_0001, b.addr ^ 1] {
            for id in [b.id, BackendId(MAX_BACKENDS as u32 - 1), BackendId(MAX_BACKENDS as u32)] {
                assert_eq!(snap.route_to_backend(id, dst), snap.routes.lookup(dst), "id {id:?}, dst {dst:#x}");
            }
        }
    }
}
