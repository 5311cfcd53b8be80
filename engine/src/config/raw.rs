//! The YAML shape of the configuration, exactly as operators write it.
//!
//! Every struct denies unknown fields so a typo is an error, not a silently
//! ignored key. Values stay as written (strings for addresses and
//! durations); `validate` turns them into typed values and names the field
//! when one is wrong.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Arguments for `rte_eal_init`, program name excluded.
    #[serde(default)]
    pub eal: Vec<String>,
    #[serde(default)]
    pub lcores: RawLcores,
    pub ports: Vec<RawPort>,
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    #[serde(default)]
    pub sessions: RawSessions,
    #[serde(default)]
    pub arp: RawArp,
    #[serde(default)]
    pub mempool: RawMempool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLcores {
    pub workers: Option<u32>,
    /// CPUs the worker lcores are pinned to, round-robin.
    pub cpus: Option<Vec<u32>>,
    /// Sleep this long after a run of empty polls (0 = pure busy polling).
    pub idle_sleep: Option<String>,
    /// Packets per RX burst.
    pub burst: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPort {
    pub name: String,
    pub device: String,
    pub address: String,
    pub gateway: Option<String>,
    #[serde(default)]
    pub neighbors: Vec<RawNeighbor>,
    /// Overrides the device's MAC address.
    pub mac: Option<String>,
    pub rx_descriptors: Option<u16>,
    pub tx_descriptors: Option<u16>,
    pub promiscuous: Option<bool>,
    /// How the NIC's RSS hashes: on the client endpoint as source or as
    /// destination, or not at all.
    pub rss: Option<RawRss>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawRss {
    Auto,
    Source,
    Destination,
    Off,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNeighbor {
    pub ip: String,
    pub mac: String,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawProtocol {
    Tcp,
    Udp,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawScheduler {
    Maglev,
    RoundRobin,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawNonSynPolicy {
    Schedule,
    Drop,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: String,
    pub vip: String,
    pub protocol: RawProtocol,
    pub port: u32,
    #[serde(default = "default_scheduler")]
    pub scheduler: RawScheduler,
    pub maglev_table_size: Option<u32>,
    /// What to do with a TCP packet other than a SYN that has no session.
    pub tcp_non_syn: Option<RawNonSynPolicy>,
    #[serde(default)]
    pub backends: Vec<RawBackend>,
}

fn default_scheduler() -> RawScheduler {
    RawScheduler::Maglev
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub address: String,
    pub port: u32,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub tcp_syn: Option<String>,
    pub tcp_established: Option<String>,
    pub tcp_closing: Option<String>,
    pub tcp_closed: Option<String>,
    pub udp: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSessions {
    pub capacity_per_worker: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawArp {
    /// How long a learned neighbour is trusted before it is re-resolved.
    pub reachable_time: Option<String>,
    /// Interval between ARP requests for an unresolved address.
    pub retry_interval: Option<String>,
    /// Requests sent before an address is given up on.
    pub max_retries: Option<u32>,
    /// Packets per worker held while their next hop resolves.
    pub queue_length: Option<u32>,
    /// Neighbour entries per worker.
    pub cache_size: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMempool {
    /// Number of mbufs; derived from queues and rings when absent.
    pub mbufs: Option<u32>,
    pub cache_size: Option<u32>,
}
