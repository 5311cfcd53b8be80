//! The counters document: what `lbd --stats-out` writes and what
//! `lbctl stats` receives. Every drop reason and event is present, zero or
//! not, so "never happened" differs from "not reported".

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Counters the PMD keeps for a port (`rte_eth_stats`).
#[derive(Debug, Serialize, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeviceStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    pub rx_nombuf: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// The port's kernel interface (exception path), when it has one.
    pub exception_interface: Option<String>,
    /// Frames written to that interface, and read from it.
    pub to_kernel_packets: u64,
    pub from_kernel_packets: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FlowReport {
    /// Client→backend packets and bytes.
    pub packets_in: u64,
    pub bytes_in: u64,
    /// Backend→client packets and bytes.
    pub packets_out: u64,
    pub bytes_out: u64,
    pub sessions_created: u64,
    pub sessions_closed: u64,
    pub sessions_active: u64,
}

/// Per-packet processing time (burst time divided by its packets), over
/// all workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LatencyReport {
    /// Packets measured.
    pub samples: u64,
    pub mean_ns: f64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendReport {
    pub address: Ipv4Addr,
    pub port: u16,
    pub weight: u32,
    pub drained: bool,
    /// `up` or `down` as health checks, checkers or the operator last set
    /// it (absent from older lbd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// The weight the scheduler uses now (after drain, health and slow
    /// start; absent from older lbd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_weight: Option<u32>,
    #[serde(flatten)]
    pub traffic: FlowReport,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListenerReport {
    pub name: String,
    pub vip: Ipv4Addr,
    pub protocol: String,
    pub port: u16,
    pub scheduler: String,
    #[serde(flatten)]
    pub traffic: FlowReport,
    pub backends: Vec<BackendReport>,
    /// Rate limits and protection, when the listener has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsReport>,
}

/// A listener's rate limits and protection: what is configured (for all
/// workers together; each worker enforces its share), where it stands,
/// and what it dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LimitsReport {
    /// Configured limits and thresholds by key (`new_connections_per_second`,
    /// `per_source.max_sessions`, `scrub.packets_per_second`, `hold_ms`, ...).
    pub configured: BTreeMap<String, u64>,
    /// The highest state of any worker: `normal`, `scrubbed`, `blackholed`.
    pub state: String,
    /// Workers in each state other than normal.
    pub workers_scrubbed: u64,
    pub workers_blackholed: u64,
    /// Times a worker's state went to scrubbed, to blackholed, back to normal.
    pub scrubbed_total: u64,
    pub blackholed_total: u64,
    pub released_total: u64,
    /// Offered traffic in the workers' last full windows, summed.
    pub packets_per_second: u64,
    pub bits_per_second: u64,
    pub new_connections_per_second: u64,
    /// Drops of this listener by reason (`listener_rate_limited`,
    /// `source_rate_limited`, `source_session_limit`, `vip_scrubbed`,
    /// `vip_blackholed`).
    pub drops: BTreeMap<String, u64>,
}

/// A VIP protected as a whole (`vips[]`): its thresholds, state and drops,
/// over every client packet to the address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipReport {
    pub address: Ipv4Addr,
    #[serde(flatten)]
    pub protection: LimitsReport,
}

/// The per-source tables of all workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SourceTableReport {
    pub entries: u64,
    pub capacity: u64,
    /// Sources forgotten to make room, and of those the ones holding
    /// sessions (their count restarts: lenient, see README).
    pub evictions: u64,
    pub evictions_with_sessions: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerReport {
    pub worker: usize,
    pub lcore: u32,
    pub rx_packets: u64,
    /// Packets this worker transmitted, over all ports (absent, so 0, from
    /// older lbd).
    #[serde(default)]
    pub tx_packets: u64,
    pub sessions_active: u64,
    pub parked: u64,
    /// Polls that found packets over all polls, since start.
    pub busy_ratio: f64,
    /// The configuration generation this worker runs.
    pub config_generation: u64,
    pub events: BTreeMap<String, u64>,
    pub drops: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    pub drops: BTreeMap<String, u64>,
    pub drops_total: u64,
    pub events: BTreeMap<String, u64>,
    pub sessions_active: u64,
    /// Session slots over all workers, and the memory the tables reserve.
    pub sessions_capacity: u64,
    pub session_memory_bytes: u64,
    pub parked: u64,
    pub mempool_in_use: u32,
    pub mempool_available: u32,
    pub latency: LatencyReport,
    pub listeners: Vec<ListenerReport>,
    pub workers: Vec<WorkerReport>,
    #[serde(default)]
    pub source_table: SourceTableReport,
    /// `vips[]`, in configuration order.
    #[serde(default)]
    pub vips: Vec<VipReport>,
}
