//! The control plane: the running configuration, hot changes, and the
//! answers `lbctl` gets.
//!
//! Every change is applied to a copy of the configuration in its file form,
//! validated by the same code that validates files, built into a new
//! immutable [`Snapshot`] on the control thread and published; workers
//! switch at their next burst boundary and report the generation they run.
//! A change that does not validate, or that touches what only a restart can
//! change, is refused and nothing changes. The control plane's lock is
//! taken by control threads only, never by a worker.

pub mod health;
pub mod security;
pub mod server;

use crate::build_info::BuildInfo;
use crate::dpdk::{self, Mempool, RingMonitor, RssState};
use crate::query::{SessionMatch, WorkerQuery};
use crate::stats::{self, Baselines, ReportContext};
use hdrhistogram::Histogram;
use lbcore::config::raw::{RawBackend, RawConfig, RawListener};
use lbcore::config::{self, Config};
use lbcore::counters::WorkerCounters;
use lbcore::health::{self as hc, BackendHealth, Health, HealthTable, Source, Verdict};
use lbcore::snapshot::{IdRegistry, PortFacts, RecycledId, Snapshot, SnapshotCell};
use lbproto::stats::Report;
use lbproto::{
    BackendInfo, BackendRef, BackendSpec, Change, ErrorCode, ErrorReply, HealthReportInfo, HealthSetting, ListenerInfo,
    ListenerSpec, NeighborInfo, PortStatus, Request, Response, SessionFilter, SessionInfo, Status,
};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a change may take to reach every worker before it is reported
/// as stuck (it stays published; the worker picks it up when it can).
const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a worker may take to answer a query.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Most sessions one listing returns (the protocol's bound on answers is
/// sized for it).
pub use lbproto::MAX_SESSIONS_LISTED;

/// A port as the control plane sees it.
#[derive(Debug, Clone)]
pub struct PortInfo {
    pub monitor: dpdk::PortMonitor,
    pub name: String,
    pub device: String,
    pub driver: String,
    pub rx_queues: u16,
    pub rss: RssState,
    /// The port's kernel interface (exception path), when it has one.
    pub exception_interface: Option<String>,
}

/// The configuration as it runs now, and what is needed to change it.
#[derive(Debug)]
pub struct ControlPlane {
    /// The file lbd started with (SIGHUP and `config reload` read it).
    pub path: PathBuf,
    pub raw: RawConfig,
    pub config: Config,
    pub generation: u64,
    pub ids: IdRegistry,
    pub baselines: Baselines,
    /// Each port's MAC and whether its kernel interface exists.
    pub port_facts: Vec<PortFacts>,
    /// Every configured backend's health, by stable id (kept across
    /// changes for the backends that remain).
    pub health: HealthTable,
    /// Snapshots some worker may still hold; dropped here, never on a
    /// worker (freeing a large table there would stall its traffic).
    retired: Vec<Arc<Snapshot>>,
}

impl ControlPlane {
    pub fn new(
        path: PathBuf,
        raw: RawConfig,
        config: Config,
        ids: IdRegistry,
        port_facts: Vec<PortFacts>,
    ) -> ControlPlane {
        let mut health = HealthTable::default();
        health.sync(&health::live_backends(&config, &ids), Duration::ZERO, true);
        health.update_all(Duration::ZERO);
        ControlPlane {
            path,
            raw,
            config,
            generation: 1,
            ids,
            baselines: Baselines::default(),
            port_facts,
            health,
            retired: Vec::new(),
        }
    }
}

/// Everything the control threads share.
#[derive(Debug)]
pub struct Runtime {
    pub build: BuildInfo,
    pub tsc_hz: u64,
    pub dpdk_version: String,
    pub started: Instant,
    pub lcores: Vec<u32>,
    pub counters: Vec<Arc<WorkerCounters>>,
    /// The exception thread's counters (it is no worker).
    pub exception: Arc<WorkerCounters>,
    pub snapshots: Arc<SnapshotCell>,
    pub ports: Vec<PortInfo>,
    pub pool: Arc<Mempool>,
    /// Per worker, the rings that feed it.
    pub rings: Vec<Vec<RingMonitor>>,
    pub queries: Vec<crossbeam_channel::Sender<WorkerQuery>>,
    pub plane: Mutex<ControlPlane>,
    /// Control operations by (operation, result).
    pub ops: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Microseconds from publishing a change until every worker ran it.
    pub propagation: Mutex<Histogram<u64>>,
    pub seq: AtomicU64,
    /// The built-in checks and their metrics.
    pub health: health::HealthShared,
}

fn err(code: ErrorCode, msg: impl Into<String>) -> ErrorReply {
    ErrorReply::new(code, msg)
}

fn config_error(e: config::ConfigError, api: bool) -> ErrorReply {
    // A change made through the API has no file: name the field only.
    let msg = if api && !e.field.is_empty() { format!("{}: {}", e.field, e.message) } else { e.to_string() };
    err(ErrorCode::Invalid, msg)
}

fn parse_backend_filter(s: &str) -> Result<(Ipv4Addr, Option<u16>), ErrorReply> {
    let bad = || err(ErrorCode::Invalid, format!("`{s}` is not a backend address (ADDRESS or ADDRESS:PORT)"));
    match s.split_once(':') {
        Some((a, p)) => Ok((a.parse().map_err(|_| bad())?, Some(p.parse().map_err(|_| bad())?))),
        None => Ok((s.parse().map_err(|_| bad())?, None)),
    }
}

impl Runtime {
    /// Counts one control operation.
    pub fn record_op(&self, op: &str, ok: bool) {
        *self.ops.lock().entry((op.to_owned(), if ok { "ok" } else { "error" })).or_default() += 1;
    }

    /// The counters document.
    /// Guarded listeners' and protected VIPs' states and offered rates.
    pub fn protection_states(&self) -> Vec<(String, lbcore::admission::ProtectionState, [u64; 3])> {
        lbcore::admission::protection_states(&self.counters, &self.snapshots.load())
    }

    pub fn report(&self, is_final: bool) -> Report {
        let device_stats: Vec<_> = self.ports.iter().map(|p| stats::device_stats(p.monitor.stats())).collect();
        let link_up: Vec<bool> = self.ports.iter().map(|p| p.monitor.link_up()).collect();
        let rss: Vec<RssState> = self.ports.iter().map(|p| p.rss.clone()).collect();
        let snap = self.snapshots.load();
        let baselines = self.plane.lock().baselines.clone();
        let version = format!("{} ({})", self.build.version, self.build.git_revision);
        stats::report(&ReportContext {
            version: &version,
            dpdk_version: &self.dpdk_version,
            is_final,
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            snapshot: &snap,
            workers: &self.counters,
            exception: &self.exception,
            exception_interfaces: &self.ports.iter().map(|p| p.exception_interface.clone()).collect::<Vec<_>>(),
            lcores: &self.lcores,
            device_stats: &device_stats,
            link_up: &link_up,
            rss: &rss,
            mempool_in_use: self.pool.in_use(),
            mempool_available: self.pool.available(),
            baselines: &baselines,
        })
    }

    /// Answers one request (after the hello).
    pub fn handle(&self, req: &Request) -> Result<Response, ErrorReply> {
        match req {
            Request::Hello { .. } => Err(err(ErrorCode::BadRequest, "hello was already done on this connection")),
            Request::Status => Ok(Response::Status { status: self.status() }),
            Request::ListenerList => Ok(Response::Listeners { listeners: self.listeners() }),
            Request::BackendList { listener } => {
                Ok(Response::Backends { backends: self.backends(listener.as_deref())? })
            }
            Request::ListenerAdd { listener } => self.change(|raw| add_listener(raw, listener)),
            Request::ListenerDel { name } => self.change(|raw| {
                let i = find_listener(raw, name)?;
                raw.listeners.remove(i);
                Ok(format!("listener {name} removed"))
            }),
            Request::BackendAdd { listener, backend } => self.change(|raw| add_backend(raw, listener, backend)),
            Request::BackendDel { listener, backend } => self.change(|raw| {
                let (l, b) = find_backend(raw, listener, backend)?;
                raw.listeners[l].backends.remove(b);
                Ok(format!("backend {backend} removed from {listener}"))
            }),
            Request::BackendSetWeight { listener, backend, weight } => self.change(|raw| {
                let (l, b) = find_backend(raw, listener, backend)?;
                raw.listeners[l].backends[b].weight = *weight;
                Ok(format!("backend {backend} of {listener}: weight {weight}"))
            }),
            Request::BackendDrain { listener, backend } => self.change(|raw| {
                let (l, b) = find_backend(raw, listener, backend)?;
                raw.listeners[l].backends[b].drained = true;
                Ok(format!("backend {backend} of {listener} drained: no new flows, sessions continue"))
            }),
            Request::BackendUndrain { listener, backend } => self.change(|raw| {
                let (l, b) = find_backend(raw, listener, backend)?;
                raw.listeners[l].backends[b].drained = false;
                Ok(format!("backend {backend} of {listener} takes new flows again"))
            }),
            Request::BackendSetHealth { listener, backend, state, checker, reason, ttl_ms } => {
                self.set_health(listener, backend, *state, checker.as_deref(), reason.as_deref(), *ttl_ms)
            }
            Request::Sessions { filter, limit } => self.sessions(filter, *limit),
            Request::SessionCount { filter } => Ok(Response::SessionCount { count: self.session_count(filter)? }),
            Request::Stats => Ok(Response::Stats { stats: self.report(false) }),
            Request::Neighbors => Ok(Response::Neighbors { neighbors: self.neighbors()? }),
            Request::ConfigShow => {
                let p = self.plane.lock();
                Ok(Response::Config {
                    path: p.path.display().to_string(),
                    generation: p.generation,
                    yaml: config::to_yaml(&p.raw),
                })
            }
            Request::SecurityGroupList => Ok(Response::SecurityGroups { groups: self.security_groups(None)? }),
            Request::SecurityGroupShow { name } => {
                let group = self.security_groups(Some(name))?.pop();
                let group = group.ok_or_else(|| err(ErrorCode::NotFound, format!("no security group `{name}`")))?;
                Ok(Response::SecurityGroup { group })
            }
            Request::SecurityGroupRuleAdd { group, rule, position } => {
                self.change(|raw| security::add_rule(raw, group, rule, *position))
            }
            Request::SecurityGroupRuleDel { group, index } => self.change(|raw| security::del_rule(raw, group, *index)),
            Request::SecurityGroupRuleReplace { group, index, rule } => {
                self.change(|raw| security::replace_rule(raw, group, *index, rule))
            }
            Request::SecurityGroupSetDefault { group, action } => {
                self.change(|raw| security::set_default(raw, group, action))
            }
            Request::SecurityGroupDelete { group } => self.change(|raw| security::delete(raw, group)),
            Request::ConfigReload { source } => {
                let change = match source {
                    Some(s) => self.reload_text(&s.yaml, Path::new(&s.path))?,
                    None => self.reload_file()?,
                };
                Ok(Response::Changed { change })
            }
        }
    }

    /// Re-reads the configuration file lbd started with (SIGHUP).
    pub fn reload_file(&self) -> Result<Change, ErrorReply> {
        let path = self.plane.lock().path.clone();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| err(ErrorCode::Invalid, format!("{}: cannot read: {e}", path.display())))?;
        self.reload_text(&text, &path)
    }

    /// Applies configuration text as a whole, attributing errors to `path`.
    pub fn reload_text(&self, text: &str, path: &Path) -> Result<Change, ErrorReply> {
        let (raw, _) = config::parse_raw(text, path).map_err(|e| config_error(e, false))?;
        let mut plane = self.plane.lock();
        self.apply(&mut plane, raw, path, false, format!("configuration reloaded from {}", path.display()))
    }

    /// Applies `edit` to a copy of the running configuration.
    fn change(&self, edit: impl FnOnce(&mut RawConfig) -> Result<String, ErrorReply>) -> Result<Response, ErrorReply> {
        let mut plane = self.plane.lock();
        let mut raw = plane.raw.clone();
        let summary = edit(&mut raw)?;
        let origin = plane.path.clone();
        self.apply(&mut plane, raw, &origin, true, summary).map(|change| Response::Changed { change })
    }

    fn apply(
        &self,
        plane: &mut ControlPlane,
        raw: RawConfig,
        origin: &Path,
        api: bool,
        summary: String,
    ) -> Result<Change, ErrorReply> {
        let t0 = Instant::now();
        let cfg = config::validate(raw.clone(), origin).map_err(|e| config_error(e, api))?;
        if cfg.startup != plane.config.startup {
            let changed = plane.config.startup.changed_fields(&cfg.startup);
            return Err(err(
                ErrorCode::RestartRequired,
                format!("changing {} needs a restart of lbd; nothing was applied", changed.join(", ")),
            ));
        }
        let mut ids = plane.ids.clone();
        let counters = &self.counters;
        let idle = |id: RecycledId| {
            let empty = Baselines::default();
            let t = match id {
                RecycledId::Listener(id) => stats::listener_totals(counters, id, &empty),
                RecycledId::Backend(id) => stats::backend_totals(counters, id, &empty),
                RecycledId::SecurityRule(_) => return true,
            };
            t.sessions_active == 0
        };
        let recycled = ids.assign(&cfg.forwarding, &idle).map_err(|e| err(ErrorCode::Invalid, e))?;
        // Health carries over for the backends that remain; a recycled id
        // is a new backend and starts afresh.
        let now = self.health_now();
        let mut health = plane.health.clone();
        for id in &recycled {
            if let RecycledId::Backend(id) = id {
                health.backends.remove(id);
                // Its probe times were the old backend's.
                self.health.latency.lock().remove(id);
            }
        }
        health.sync(&health::live_backends(&cfg, &ids), now, false);
        health::drop_unchecked_builtin(&mut health, &cfg, &ids);
        let transitions = health.update_all(now);
        let generation = plane.generation + 1;
        let snapshot = build_snapshot(&cfg, &plane.port_facts, &ids, &health, generation, now, &self.snapshots.load());
        let build_us = t0.elapsed().as_micros() as u64;

        // Ids that change owner: the new owner's counters start from here.
        let empty = Baselines::default();
        for id in recycled {
            match id {
                RecycledId::Listener(id) => {
                    let t = stats::listener_totals(counters, id, &empty);
                    plane.baselines.listeners.insert(id, t);
                }
                RecycledId::Backend(id) => {
                    let t = stats::backend_totals(counters, id, &empty);
                    plane.baselines.backends.insert(id, t);
                }
                RecycledId::SecurityRule(slot) => {
                    let n = stats::security_rule_hits(counters, slot, &empty);
                    plane.baselines.security_rules.insert(slot, n);
                }
            }
        }

        let (reached, propagation_us) = self.install(plane, snapshot, generation);
        plane.ids = ids;
        plane.config = cfg;
        plane.raw = raw;
        plane.health = health;
        plane.generation = generation;
        self.health.log_transitions(plane, &transitions);
        self.health.set_targets(&plane.config);
        if !reached {
            return Err(not_reached(generation));
        }
        Ok(Change { generation, propagation_us, build_us, summary })
    }

    /// Seconds since lbd started: the clock of health and slow start.
    pub fn health_now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Publishes a snapshot of the running configuration with the current
    /// health (a health change or a slow-start step; no configuration
    /// change).
    pub fn rebuild(&self, plane: &mut ControlPlane, summary: String) -> Result<Change, ErrorReply> {
        let t0 = Instant::now();
        let generation = plane.generation + 1;
        let now = self.health_now();
        let snapshot = build_snapshot(
            &plane.config,
            &plane.port_facts,
            &plane.ids,
            &plane.health,
            generation,
            now,
            &self.snapshots.load(),
        );
        let build_us = t0.elapsed().as_micros() as u64;
        let (reached, propagation_us) = self.install(plane, snapshot, generation);
        plane.generation = generation;
        if !reached {
            return Err(not_reached(generation));
        }
        Ok(Change { generation, propagation_us, build_us, summary })
    }

    /// Publishes `snapshot` and waits for the workers to run it; whether
    /// they all did, and how long it took them.
    fn install(&self, plane: &mut ControlPlane, snapshot: Snapshot, generation: u64) -> (bool, u64) {
        plane.retired.push(self.snapshots.load());
        let published = dpdk::tsc();
        self.snapshots.publish(snapshot);
        let reached = self.wait_generation(generation);
        // Measured on the workers' side: from publishing until the last
        // worker switched (the control thread may see it later when it
        // shares a CPU with busy workers).
        let last_switch = self.counters.iter().map(|c| c.switched_tsc.get()).max().unwrap_or(published);
        let propagation_us = last_switch.saturating_sub(published).saturating_mul(1_000_000) / self.tsc_hz.max(1);
        if reached {
            // Every worker runs the new snapshot: the old ones are ours alone.
            plane.retired.clear();
            let _ = self.propagation.lock().record(propagation_us.max(1));
        }
        (reached, propagation_us)
    }

    /// `backend set-health`: by hand (no `checker`) or a checker's report.
    fn set_health(
        &self,
        listener: &str,
        backend: &BackendRef,
        state: HealthSetting,
        checker: Option<&str>,
        reason: Option<&str>,
        ttl_ms: Option<u64>,
    ) -> Result<Response, ErrorReply> {
        if let Some(name) = checker {
            health::check_checker_name(name)?;
        }
        let reason = health::check_reason(reason)?;
        let ttl = match (checker, ttl_ms) {
            (Some(_), Some(ms)) if ms >= 1 && Duration::from_millis(ms) <= lbcore::health::MAX_REPORT_TTL => {
                Some(Duration::from_millis(ms))
            }
            (Some(_), Some(ms)) => {
                return Err(err(
                    ErrorCode::Invalid,
                    format!("ttl_ms {ms} is out of range (1..={})", lbcore::health::MAX_REPORT_TTL.as_millis()),
                ))
            }
            (Some(_), None) if state != HealthSetting::Auto => {
                return Err(err(ErrorCode::Invalid, "a checker's report needs ttl_ms (how long it counts)"))
            }
            (None, Some(_)) => return Err(err(ErrorCode::Invalid, "ttl_ms only applies to a checker's report")),
            _ => None,
        };
        let mut plane = self.plane.lock();
        let (l, b) = find_backend(&plane.raw, listener, backend)?;
        let cfg_b = &plane.config.forwarding.listeners[l].backends[b];
        let (addr, port) = (cfg_b.address, cfg_b.port);
        let id =
            plane.ids.backend(listener, addr, port).ok_or_else(|| err(ErrorCode::Internal, "backend has no id"))?;
        let now = self.health_now();
        let by = checker.map_or_else(|| "by hand".to_owned(), |c| format!("checker {c}"));
        let record = plane.health.backends.entry(id).or_default();
        let verdict = |s: Health| Verdict {
            state: s,
            reason: reason.clone().unwrap_or_else(|| format!("set {} {by}", s.name())),
            at: now,
        };
        match (checker, state) {
            (None, HealthSetting::Auto) => record.manual = None,
            (None, HealthSetting::Up) => record.manual = Some(verdict(Health::Up)),
            (None, HealthSetting::Down) => record.manual = Some(verdict(Health::Down)),
            (Some(c), HealthSetting::Auto) => {
                record.reports.remove(c);
            }
            (Some(c), s) => {
                if !record.reports.contains_key(c) {
                    // Bounded: stale reports of other checkers make room;
                    // fresh ones are never pushed out.
                    let fresh = record.reports.values().filter(|r| !BackendHealth::stale(r, now)).count();
                    if fresh >= health::MAX_CHECKERS {
                        return Err(err(
                            ErrorCode::Invalid,
                            format!(
                                "{fresh} checkers already report on backend {addr}:{port} of {listener}; at most {} do",
                                health::MAX_CHECKERS
                            ),
                        ));
                    }
                    record.reports.retain(|_, r| !BackendHealth::stale(r, now));
                }
                let s = if s == HealthSetting::Up { Health::Up } else { Health::Down };
                let expires = now + ttl.unwrap_or_default();
                record.reports.insert(c.to_owned(), hc::Report { verdict: verdict(s), expires });
            }
        }
        let transition = record.update(now);
        let effective = record.state();
        let summary = format!(
            "backend {addr}:{port} of {listener}: {} {by}; now {effective} ({})",
            state.name(),
            record.source.clone().unwrap_or(Source::None)
        );
        match transition {
            Some(t) => {
                self.health.log_transitions(&plane, &[(id, t)]);
                self.rebuild(&mut plane, summary).map(|change| Response::Changed { change })
            }
            None => {
                let generation = plane.generation;
                Ok(Response::Changed { change: Change { generation, propagation_us: 0, build_us: 0, summary } })
            }
        }
    }

    /// Waits until every worker runs `generation` or later.
    fn wait_generation(&self, generation: u64) -> bool {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            if self.counters.iter().all(|c| c.generation.get_acquire() >= generation) {
                return true;
            }
            if start.elapsed() > PROPAGATION_TIMEOUT {
                return false;
            }
            // Workers switch within microseconds: spin briefly, then sleep.
            spins += 1;
            if spins < 200 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    fn status(&self) -> Status {
        let report = self.report(false);
        let plane = self.plane.lock();
        let ports = self
            .ports
            .iter()
            .zip(&report.ports)
            .map(|(p, r)| PortStatus {
                name: p.name.clone(),
                device: p.device.clone(),
                driver: p.driver.clone(),
                mac: r.mac.clone(),
                address: r.address.clone(),
                link_up: r.link_up,
                rx_queues: p.rx_queues,
                rss: p.rss.mode.clone(),
                rx_packets: r.rx_packets,
                tx_packets: r.tx_packets,
                rx_bytes: r.rx_bytes,
                tx_bytes: r.tx_bytes,
                device_drops: r.device_stats.imissed
                    + r.device_stats.ierrors
                    + r.device_stats.rx_nombuf
                    + r.device_stats.oerrors,
                exception_interface: p.exception_interface.clone(),
            })
            .collect();
        Status {
            version: format!("{} (git {})", self.build.version, self.build.git_revision),
            dpdk_version: self.dpdk_version.clone(),
            uptime_seconds: report.uptime_seconds,
            workers: self.counters.len(),
            lcores: self.lcores.clone(),
            config_path: plane.path.display().to_string(),
            config_generation: plane.generation,
            listeners: plane.config.forwarding.listeners.len(),
            backends: plane.config.forwarding.listeners.iter().map(|l| l.backends.len()).sum(),
            sessions_active: report.sessions_active,
            drops_total: report.drops_total,
            ports,
            listeners_all_down: self
                .snapshots
                .load()
                .listeners
                .iter()
                .filter(|l| l.all_down)
                .map(|l| l.name.clone())
                .collect(),
        }
    }

    fn listeners(&self) -> Vec<ListenerInfo> {
        let snap = self.snapshots.load();
        let plane = self.plane.lock();
        let base = plane.baselines.clone();
        snap.listeners
            .iter()
            .map(|l| {
                let t = stats::listener_totals(&self.counters, l.id, &base);
                let check = plane.config.forwarding.listeners.iter().find(|c| c.name == l.name);
                ListenerInfo {
                    name: l.name.clone(),
                    vip: Ipv4Addr::from(l.vip).to_string(),
                    protocol: l.protocol.name().into(),
                    port: l.port,
                    scheduler: l.scheduler.name().into(),
                    backends: l.backends.len(),
                    sessions_active: t.sessions_active,
                    sessions_created: t.sessions_created,
                    packets_in: t.packets_in,
                    packets_out: t.packets_out,
                    health_check: check.and_then(|c| c.health_check.as_ref()).map(|h| h.kind.name().to_owned()),
                    all_down: l.all_down,
                    all_down_policy: l.all_down_policy.name().into(),
                }
            })
            .collect()
    }

    fn backends(&self, listener: Option<&str>) -> Result<Vec<BackendInfo>, ErrorReply> {
        let snap = self.snapshots.load();
        let plane = self.plane.lock();
        let base = plane.baselines.clone();
        let now = self.health_now();
        if let Some(name) = listener {
            if !snap.listeners.iter().any(|l| l.name == name) {
                return Err(err(ErrorCode::NotFound, format!("no listener `{name}`")));
            }
        }
        let mut out = Vec::new();
        for l in snap.listeners.iter().filter(|l| listener.is_none_or(|n| n == l.name)) {
            let shares = l.scheduler.shares(l.backends.len());
            for (b, share) in l.backends.iter().zip(shares) {
                let t = stats::backend_totals(&self.counters, b.id, &base);
                let mut info = BackendInfo {
                    listener: l.name.clone(),
                    address: Ipv4Addr::from(b.addr).to_string(),
                    port: b.port,
                    weight: b.weight,
                    drained: b.drained,
                    share,
                    sessions_active: t.sessions_active,
                    sessions_created: t.sessions_created,
                    packets_in: t.packets_in,
                    packets_out: t.packets_out,
                    health: "up".into(),
                    health_source: Source::None.to_string(),
                    health_reason: String::new(),
                    health_since_ms: 0,
                    last_check_ms: None,
                    last_error: None,
                    serving: b.serving,
                    scheduled_weight: b.scheduled_weight,
                    reports: Vec::new(),
                };
                health_info(&mut info, plane.health.get(b.id), now);
                out.push(info);
            }
        }
        Ok(out)
    }

    fn session_match(&self, snap: &Snapshot, f: &SessionFilter) -> Result<SessionMatch, ErrorReply> {
        let mut m = SessionMatch::default();
        if let Some(name) = &f.listener {
            let l = snap
                .listeners
                .iter()
                .find(|l| &l.name == name)
                .ok_or_else(|| err(ErrorCode::NotFound, format!("no listener `{name}`")))?;
            m.listener = Some(l.id);
        }
        if let Some(b) = &f.backend {
            let (ip, port) = parse_backend_filter(b)?;
            m.backend_ip = Some(u32::from(ip));
            m.backend_port = port;
        }
        Ok(m)
    }

    fn session_count(&self, f: &SessionFilter) -> Result<u64, ErrorReply> {
        let snap = self.snapshots.load();
        let m = self.session_match(&snap, f)?;
        if m.listener.is_none() && m.backend_ip.is_none() {
            return Ok(self.counters.iter().map(|c| c.sessions_active.get()).sum());
        }
        let base = self.plane.lock().baselines.clone();
        if m.backend_ip.is_none() {
            let id = m.listener.expect("checked");
            return Ok(stats::listener_totals(&self.counters, id, &base).sessions_active);
        }
        // By backend: the backends of the current configuration at that
        // address (and port), within the listener when one is given.
        Ok(snap
            .listeners
            .iter()
            .filter(|l| m.listener.is_none_or(|id| id == l.id))
            .flat_map(|l| l.backends.iter())
            .filter(|b| Some(b.addr) == m.backend_ip && m.backend_port.is_none_or(|p| p == b.port))
            .map(|b| stats::backend_totals(&self.counters, b.id, &base).sessions_active)
            .sum())
    }

    fn sessions(&self, f: &SessionFilter, limit: u32) -> Result<Response, ErrorReply> {
        let snap = self.snapshots.load();
        let m = self.session_match(&snap, f)?;
        let limit = limit.clamp(1, MAX_SESSIONS_LISTED);
        let mut out = Vec::new();
        let mut truncated = false;
        for (w, q) in self.queries.iter().enumerate() {
            let mut start = 0u32;
            loop {
                let want = limit - out.len() as u32;
                let (tx, rx) = crossbeam_channel::bounded(1);
                q.send_timeout(WorkerQuery::Sessions { filter: m, start, limit: want, reply: tx }, QUERY_TIMEOUT)
                    .map_err(|_| err(ErrorCode::Timeout, format!("worker {w} does not take queries")))?;
                let chunk = rx
                    .recv_timeout(QUERY_TIMEOUT)
                    .map_err(|_| err(ErrorCode::Timeout, format!("worker {w} did not answer in {QUERY_TIMEOUT:?}")))?;
                for s in &chunk.sessions {
                    let listener =
                        snap.listener_by_id(s.listener).map_or_else(|| "(removed)".to_owned(), |l| l.name.clone());
                    out.push(SessionInfo {
                        worker: w,
                        protocol: if s.proto == lbcore::wire::ipv4::PROTO_TCP { "tcp" } else { "udp" }.into(),
                        client: format!("{}:{}", Ipv4Addr::from(s.client_ip), s.client_port),
                        vip: format!("{}:{}", Ipv4Addr::from(s.vip), s.vip_port),
                        backend: format!("{}:{}", Ipv4Addr::from(s.backend_ip), s.backend_port),
                        listener,
                        state: s.state.name().into(),
                        idle_ms: u64::from(chunk.now_ms.wrapping_sub(s.last_seen)),
                    });
                }
                if out.len() as u32 >= limit {
                    truncated = chunk.next.is_some() || w + 1 < self.queries.len();
                    break;
                }
                match chunk.next {
                    Some(n) => start = n,
                    None => break,
                }
            }
            if truncated {
                break;
            }
        }
        Ok(Response::Sessions { sessions: out, truncated })
    }

    fn neighbors(&self) -> Result<Vec<NeighborInfo>, ErrorReply> {
        let snap = self.snapshots.load();
        let mut out = Vec::new();
        for (w, q) in self.queries.iter().enumerate() {
            let (tx, rx) = crossbeam_channel::bounded(1);
            q.send_timeout(WorkerQuery::Neighbors { reply: tx }, QUERY_TIMEOUT)
                .map_err(|_| err(ErrorCode::Timeout, format!("worker {w} does not take queries")))?;
            let list = rx
                .recv_timeout(QUERY_TIMEOUT)
                .map_err(|_| err(ErrorCode::Timeout, format!("worker {w} did not answer in {QUERY_TIMEOUT:?}")))?;
            for n in list {
                out.push(NeighborInfo {
                    worker: w,
                    port: snap.ports.get(usize::from(n.port)).map_or_else(|| n.port.to_string(), |p| p.name.clone()),
                    address: Ipv4Addr::from(n.ip).to_string(),
                    mac: n.mac.to_string(),
                    state: n.state.into(),
                    age_ms: u64::from(n.age_ms),
                });
            }
        }
        out.sort_by(|a, b| (&a.port, &a.address, a.worker).cmp(&(&b.port, &b.address, b.worker)));
        Ok(out)
    }
}

fn find_listener(raw: &RawConfig, name: &str) -> Result<usize, ErrorReply> {
    raw.listeners
        .iter()
        .position(|l| l.name == name)
        .ok_or_else(|| err(ErrorCode::NotFound, format!("no listener `{name}`")))
}

/// The one backend of `listener` that `r` names.
fn find_backend(raw: &RawConfig, listener: &str, r: &BackendRef) -> Result<(usize, usize), ErrorReply> {
    let l = find_listener(raw, listener)?;
    let want: Ipv4Addr =
        r.address.parse().map_err(|_| err(ErrorCode::Invalid, format!("`{}` is not an IPv4 address", r.address)))?;
    let hits: Vec<usize> = raw.listeners[l]
        .backends
        .iter()
        .enumerate()
        .filter(|(_, b)| {
            b.address.trim().parse::<Ipv4Addr>().ok() == Some(want) && r.port.is_none_or(|p| u32::from(p) == b.port)
        })
        .map(|(i, _)| i)
        .collect();
    match hits.as_slice() {
        [i] => Ok((l, *i)),
        [] => Err(err(ErrorCode::NotFound, format!("listener `{listener}` has no backend {r}"))),
        _ => Err(err(
            ErrorCode::Invalid,
            format!("listener `{listener}` has several backends at {}: give the port", r.address),
        )),
    }
}

fn add_listener(raw: &mut RawConfig, spec: &ListenerSpec) -> Result<String, ErrorReply> {
    if raw.listeners.iter().any(|l| l.name == spec.name) {
        return Err(err(ErrorCode::AlreadyExists, format!("listener `{}` exists already", spec.name)));
    }
    // The spec has the configuration's field names: decode it exactly as a
    // file would be, so unknown values get the same errors.
    let l: RawListener = serde_json::to_value(spec)
        .and_then(serde_json::from_value)
        .map_err(|e| err(ErrorCode::Invalid, format!("listener `{}`: {e}", spec.name)))?;
    raw.listeners.push(l);
    Ok(format!("listener {} added", spec.name))
}

fn add_backend(raw: &mut RawConfig, listener: &str, spec: &BackendSpec) -> Result<String, ErrorReply> {
    let l = find_listener(raw, listener)?;
    let addr = spec.address.trim().parse::<Ipv4Addr>().ok();
    let dup = raw.listeners[l]
        .backends
        .iter()
        .any(|b| addr.is_some() && b.address.trim().parse::<Ipv4Addr>().ok() == addr && b.port == spec.port);
    if dup {
        return Err(err(
            ErrorCode::AlreadyExists,
            format!("listener `{listener}` already has backend {}:{}", spec.address, spec.port),
        ));
    }
    raw.listeners[l].backends.push(RawBackend {
        address: spec.address.clone(),
        port: spec.port,
        weight: spec.weight.unwrap_or(1),
        drained: false,
    });
    Ok(format!("backend {}:{} added to {listener}", spec.address, spec.port))
}

/// The one way snapshots are built: the configuration with its health,
/// reusing what `current` built that did not change.
fn build_snapshot(
    cfg: &Config,
    facts: &[PortFacts],
    ids: &IdRegistry,
    health: &HealthTable,
    generation: u64,
    now: Duration,
    current: &Snapshot,
) -> Snapshot {
    Snapshot::build_with_health(cfg, facts, ids, generation, health, now, Some(current))
}

fn not_reached(generation: u64) -> ErrorReply {
    err(
        ErrorCode::Timeout,
        format!("generation {generation} published but not every worker switched within {PROPAGATION_TIMEOUT:?}"),
    )
}

/// The health fields of a backend's listing.
fn health_info(info: &mut BackendInfo, h: Option<&BackendHealth>, now: Duration) {
    let Some(h) = h else { return };
    info.health = h.state().name().into();
    info.health_source = h.source.clone().unwrap_or(Source::None).to_string();
    // State, source and reason as the last update decided them together.
    info.health_reason = h.reason.clone();
    info.health_since_ms = now.saturating_sub(h.since).as_millis() as u64;
    info.last_check_ms = h.last_check.map(|t| now.saturating_sub(t).as_millis() as u64);
    info.last_error = h.last_error.clone();
    info.reports = h
        .reports
        .iter()
        .map(|(name, r)| HealthReportInfo {
            checker: name.clone(),
            health: r.verdict.state.name().into(),
            reason: r.verdict.reason.clone(),
            age_ms: now.saturating_sub(r.verdict.at).as_millis() as u64,
            stale: BackendHealth::stale(r, now),
        })
        .collect();
}
