//! The counters of a running `lbd` summed over workers, as a JSON document
//! (written at exit and on SIGUSR1).
//!
//! Every drop reason and event appears, zero or not, so a consumer can tell
//! "never happened" from "not reported".

use crate::counters::{DropReason, Event, FlowCounters, WorkerCounters};
use crate::snapshot::Snapshot;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

pub use crate::dpdk::PortStats as DeviceStats;

#[derive(Debug, Serialize)]
pub struct PortReport {
    pub name: String,
    pub device: String,
    pub mac: String,
    pub address: String,
    pub link_up: bool,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// The PMD's own counters.
    pub device_stats: DeviceStats,
    /// RSS as configured on the device (see `lbd::rss`).
    pub rss_mode: String,
    /// The device's RETA read back (RX queue per entry; empty without).
    pub rss_reta: Vec<u16>,
}

#[derive(Debug, Serialize, Default)]
pub struct FlowReport {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub sessions_created: u64,
    pub sessions_active: u64,
}

impl FlowReport {
    fn add(&mut self, c: &FlowCounters) {
        self.packets_in += c.in_packets.get();
        self.bytes_in += c.in_bytes.get();
        self.packets_out += c.out_packets.get();
        self.bytes_out += c.out_bytes.get();
        self.sessions_created += c.sessions_created.get();
        // Created minus closed, summed over workers: never negative in
        // total, though a racing read may see one before the other.
        self.sessions_active =
            (self.sessions_active + c.sessions_created.get()).saturating_sub(c.sessions_closed.get());
    }
}

#[derive(Debug, Serialize)]
pub struct BackendReport {
    pub address: Ipv4Addr,
    pub port: u16,
    pub weight: u32,
    #[serde(flatten)]
    pub traffic: FlowReport,
}

#[derive(Debug, Serialize)]
pub struct ListenerReport {
    pub name: String,
    pub vip: Ipv4Addr,
    pub protocol: &'static str,
    pub port: u16,
    pub scheduler: &'static str,
    #[serde(flatten)]
    pub traffic: FlowReport,
    pub backends: Vec<BackendReport>,
}

#[derive(Debug, Serialize)]
pub struct WorkerReport {
    pub worker: usize,
    pub lcore: u32,
    pub rx_packets: u64,
    pub sessions_active: u64,
    pub parked: u64,
    pub events: BTreeMap<&'static str, u64>,
    pub drops: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub version: String,
    pub dpdk_version: String,
    /// True for the document written at exit.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// Increments with every document this process writes.
    pub seq: u64,
    pub uptime_seconds: f64,
    pub config_generation: u64,
    pub ports: Vec<PortReport>,
    pub drops: BTreeMap<&'static str, u64>,
    pub drops_total: u64,
    pub events: BTreeMap<&'static str, u64>,
    pub sessions_active: u64,
    pub parked: u64,
    pub mempool_in_use: u32,
    pub mempool_available: u32,
    pub listeners: Vec<ListenerReport>,
    pub workers: Vec<WorkerReport>,
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
    pub lcores: &'a [u32],
    pub device_stats: &'a [DeviceStats],
    pub link_up: &'a [bool],
    pub rss: &'a [crate::dpdk::RssState],
    pub mempool_in_use: u32,
    pub mempool_available: u32,
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
        })
        .collect();
    let drops: BTreeMap<&'static str, u64> =
        DropReason::ALL.iter().map(|r| (r.label(), sum(&|w| w.drop_count(*r)))).collect();
    let events: BTreeMap<&'static str, u64> =
        Event::ALL.iter().map(|e| (e.label(), sum(&|w| w.event_count(*e)))).collect();
    let listeners = snap
        .listeners
        .iter()
        .map(|l| {
            let mut traffic = FlowReport::default();
            for w in cx.workers {
                traffic.add(&w.listeners[usize::from(l.id)]);
            }
            let backends = l
                .backends
                .iter()
                .map(|b| {
                    let mut t = FlowReport::default();
                    for w in cx.workers {
                        t.add(&w.backends[b.id as usize]);
                    }
                    BackendReport { address: Ipv4Addr::from(b.addr), port: b.port, weight: b.weight, traffic: t }
                })
                .collect();
            ListenerReport {
                name: l.name.clone(),
                vip: Ipv4Addr::from(l.vip),
                protocol: l.protocol.name(),
                port: l.port,
                scheduler: match l.scheduler {
                    crate::scheduler::Scheduler::Maglev(_) => "maglev",
                    crate::scheduler::Scheduler::RoundRobin(_) => "round_robin",
                },
                traffic,
                backends,
            }
        })
        .collect();
    let workers = cx
        .workers
        .iter()
        .enumerate()
        .map(|(i, w)| WorkerReport {
            worker: i,
            lcore: cx.lcores.get(i).copied().unwrap_or(0),
            rx_packets: w.ports.iter().map(|p| p.rx_packets.get()).sum(),
            sessions_active: w.sessions_active.get(),
            parked: w.parked.get(),
            events: Event::ALL.iter().map(|e| (e.label(), w.event_count(*e))).collect(),
            drops: DropReason::ALL.iter().map(|r| w.drop_count(*r)).sum(),
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
        parked: sum(&|w| w.parked.get()),
        mempool_in_use: cx.mempool_in_use,
        mempool_available: cx.mempool_available,
        listeners,
        workers,
    }
}
