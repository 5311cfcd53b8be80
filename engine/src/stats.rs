//! Summing the per-worker counters into the counters document
//! ([`lbproto::stats::Report`]): written at exit and on SIGUSR1, returned
//! to `lbctl stats`, and the source of most Prometheus metrics.

use lbcore::counters::{DropReason, Event, FlowCounters, WorkerCounters};
use lbcore::ids::{BackendId, ListenerId};
use lbcore::snapshot::Snapshot;
use lbproto::stats::{
    BackendReport, DeviceStats, FlowReport, LatencyReport, ListenerReport, PortReport, Report, WorkerReport,
};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// Counter values a recycled listener or backend id carried for its
/// previous owner; reports subtract them so the new owner starts at zero.
#[derive(Debug, Default, Clone)]
pub struct Baselines {
    pub listeners: HashMap<ListenerId, FlowReport>,
    pub backends: HashMap<BackendId, FlowReport>,
    /// Security rule hit counts by counter slot.
    pub security_rules: HashMap<u32, u64>,
}

/// Hits of security rule counter `slot`, summed over workers, net of its
/// baseline.
pub fn security_rule_hits(workers: &[Arc<WorkerCounters>], slot: u32, base: &Baselines) -> u64 {
    let n: u64 = workers.iter().map(|w| w.security_rules[slot as usize].get()).sum();
    n.saturating_sub(base.security_rules.get(&slot).copied().unwrap_or(0))
}

/// Adds one worker's flow counters to `r`.
pub fn add_flow(r: &mut FlowReport, c: &FlowCounters) {
    r.packets_in += c.in_packets.get();
    r.bytes_in += c.in_bytes.get();
    r.packets_out += c.out_packets.get();
    r.bytes_out += c.out_bytes.get();
    r.sessions_created += c.sessions_created.get();
    r.sessions_closed += c.sessions_closed.get();
}

fn minus(mut r: FlowReport, b: Option<&FlowReport>) -> FlowReport {
    if let Some(b) = b {
        r.packets_in = r.packets_in.saturating_sub(b.packets_in);
        r.bytes_in = r.bytes_in.saturating_sub(b.bytes_in);
        r.packets_out = r.packets_out.saturating_sub(b.packets_out);
        r.bytes_out = r.bytes_out.saturating_sub(b.bytes_out);
        r.sessions_created = r.sessions_created.saturating_sub(b.sessions_created);
        r.sessions_closed = r.sessions_closed.saturating_sub(b.sessions_closed);
    }
    r.sessions_active = r.sessions_created.saturating_sub(r.sessions_closed);
    r
}

/// Summed counters of listener id `id`, net of its baseline.
pub fn listener_totals(workers: &[Arc<WorkerCounters>], id: ListenerId, base: &Baselines) -> FlowReport {
    let mut r = FlowReport::default();
    for w in workers {
        add_flow(&mut r, &w.listeners[usize::from(id)]);
    }
    minus(r, base.listeners.get(&id))
}

/// Summed counters of backend id `id`, net of its baseline.
pub fn backend_totals(workers: &[Arc<WorkerCounters>], id: BackendId, base: &Baselines) -> FlowReport {
    let mut r = FlowReport::default();
    for w in workers {
        add_flow(&mut r, &w.backends[usize::from(id)]);
    }
    minus(r, base.backends.get(&id))
}

/// What the report needs besides the counters.
#[derive(Debug)]
pub struct ReportContext<'a> {
    pub version: &'a str,
    pub dpdk_version: &'a str,
    pub is_final: bool,
    pub seq: u64,
    pub uptime_seconds: f64,
    pub snapshot: &'a Snapshot,
    pub workers: &'a [Arc<WorkerCounters>],
    /// The exception thread's counters: its drops count with the workers'.
    pub exception: &'a WorkerCounters,
    /// Per port, its kernel interface's name.
    pub exception_interfaces: &'a [Option<String>],
    pub lcores: &'a [u32],
    pub device_stats: &'a [DeviceStats],
    pub link_up: &'a [bool],
    pub rss: &'a [crate::dpdk::RssState],
    pub mempool_in_use: u32,
    pub mempool_available: u32,
    pub baselines: &'a Baselines,
}

/// A device's own counters in the report's form.
pub fn device_stats(s: crate::dpdk::PortStats) -> DeviceStats {
    DeviceStats {
        ipackets: s.ipackets,
        opackets: s.opackets,
        ibytes: s.ibytes,
        obytes: s.obytes,
        imissed: s.imissed,
        ierrors: s.ierrors,
        oerrors: s.oerrors,
        rx_nombuf: s.rx_nombuf,
    }
}

/// Quantiles of per-packet processing time over all workers.
pub fn latency(workers: &[Arc<WorkerCounters>]) -> LatencyReport {
    let mut h = lbcore::latency::new_histogram();
    let mut sum = 0u64;
    for w in workers {
        w.latency.merge_into(&mut h);
        sum += w.latency.sum_ns();
    }
    if h.is_empty() {
        return LatencyReport::default();
    }
    LatencyReport {
        samples: h.len(),
        mean_ns: sum as f64 / h.len() as f64,
        p50_ns: h.value_at_quantile(0.5),
        p90_ns: h.value_at_quantile(0.9),
        p99_ns: h.value_at_quantile(0.99),
        p999_ns: h.value_at_quantile(0.999),
        max_ns: h.max(),
    }
}

pub fn report(cx: &ReportContext<'_>) -> Report {
    let snap = cx.snapshot;
    let sum = |f: &dyn Fn(&WorkerCounters) -> u64| cx.workers.iter().map(|w| f(w)).sum::<u64>();
    let ports = snap
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| PortReport {
            name: p.name.clone(),
            device: p.device.clone(),
            mac: p.mac.to_string(),
            address: format!("{}/{}", Ipv4Addr::from(p.addr), p.prefix_len),
            link_up: cx.link_up.get(i).copied().unwrap_or(false),
            rx_packets: sum(&|w| w.ports[i].rx_packets.get()),
            rx_bytes: sum(&|w| w.ports[i].rx_bytes.get()),
            tx_packets: sum(&|w| w.ports[i].tx_packets.get()),
            tx_bytes: sum(&|w| w.ports[i].tx_bytes.get()),
            device_stats: cx.device_stats.get(i).copied().unwrap_or_default(),
            rss_mode: cx.rss.get(i).map_or_else(|| "off".to_owned(), |r| r.mode.clone()),
            rss_reta: cx.rss.get(i).map(|r| r.reta.clone()).unwrap_or_default(),
            exception_interface: cx.exception_interfaces.get(i).cloned().flatten(),
            to_kernel_packets: cx.exception.ports.get(i).map_or(0, |c| c.tx_packets.get()),
            from_kernel_packets: cx.exception.ports.get(i).map_or(0, |c| c.rx_packets.get()),
        })
        .collect();
    // The exception thread's drops and events count with the workers'.
    let all = |f: &dyn Fn(&WorkerCounters) -> u64| sum(f) + f(cx.exception);
    let drops: std::collections::BTreeMap<String, u64> =
        DropReason::ALL.iter().map(|r| (r.label().to_owned(), all(&|w| w.drop_count(*r)))).collect();
    let events = Event::ALL.iter().map(|e| (e.label().to_owned(), all(&|w| w.event_count(*e)))).collect();
    let listeners = snap
        .listeners
        .iter()
        .map(|l| {
            let backends = l
                .backends
                .iter()
                .map(|b| BackendReport {
                    address: Ipv4Addr::from(b.addr),
                    port: b.port,
                    weight: b.weight,
                    drained: b.drained,
                    health: Some(if b.down { "down" } else { "up" }.to_owned()),
                    scheduled_weight: Some(b.scheduled_weight),
                    traffic: backend_totals(cx.workers, b.id, cx.baselines),
                })
                .collect();
            ListenerReport {
                name: l.name.clone(),
                vip: Ipv4Addr::from(l.vip),
                protocol: l.protocol.name().to_owned(),
                port: l.port,
                scheduler: l.scheduler.name().to_owned(),
                traffic: listener_totals(cx.workers, l.id, cx.baselines),
                backends,
                limits: lbcore::admission::report(cx.workers, l),
            }
        })
        .collect();
    let workers = cx
        .workers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let polls = w.event_count(Event::Polls);
            WorkerReport {
                worker: i,
                lcore: cx.lcores.get(i).copied().unwrap_or(0),
                rx_packets: w.ports.iter().map(|p| p.rx_packets.get()).sum(),
                tx_packets: w.ports.iter().map(|p| p.tx_packets.get()).sum(),
                sessions_active: w.sessions_active.get(),
                parked: w.parked.get(),
                busy_ratio: if polls == 0 { 0.0 } else { w.event_count(Event::BusyPolls) as f64 / polls as f64 },
                config_generation: w.generation.get(),
                events: Event::ALL.iter().map(|e| (e.label().to_owned(), w.event_count(*e))).collect(),
                drops: DropReason::ALL.iter().map(|r| w.drop_count(*r)).sum(),
            }
        })
        .collect();
    Report {
        version: cx.version.to_owned(),
        dpdk_version: cx.dpdk_version.to_owned(),
        is_final: cx.is_final,
        seq: cx.seq,
        uptime_seconds: cx.uptime_seconds,
        config_generation: snap.generation,
        ports,
        drops_total: drops.values().sum(),
        drops,
        events,
        sessions_active: sum(&|w| w.sessions_active.get()),
        sessions_capacity: sum(&|w| w.session_capacity.get()),
        session_memory_bytes: sum(&|w| w.session_memory.get()),
        parked: sum(&|w| w.parked.get()),
        mempool_in_use: cx.mempool_in_use,
        mempool_available: cx.mempool_available,
        latency: latency(cx.workers),
        listeners,
        workers,
        source_table: lbcore::admission::source_table_report(cx.workers),
        vips: lbcore::admission::vip_reports(cx.workers, snap),
    }
}
