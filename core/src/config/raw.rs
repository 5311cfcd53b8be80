//! The YAML shape of the configuration, exactly as operators write it.
//!
//! Every struct denies unknown fields so a typo is an error, not a silently
//! ignored key. Values stay as written (strings for addresses and
//! durations); `validate` turns them into typed values and names the field
//! when one is wrong. Closed sets of names (protocol, scheduler, policies,
//! RSS mode) are the validated enums themselves: the YAML names are their
//! serde names, so there is one list of values, not a raw copy beside it.

use super::{
    ExceptionBackend, HashFields, NonSynPolicy, Protocol, RemovedBackendPolicy, RssMode, SchedulerAlgorithm, Switch,
    SynProxyMode,
};
use crate::health::{AllDownPolicy, CheckKind};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
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
    #[serde(default)]
    pub control: RawControl,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub exception: RawException,
    #[serde(default, skip_serializing_if = "RawHealth::is_default")]
    pub health: RawHealth,
    #[serde(default)]
    pub icmp: RawIcmp,
    #[serde(default)]
    pub fragments: RawFragments,
    /// Sizes for the listeners' rate limits.
    #[serde(default, skip_serializing_if = "super::limits::RawGlobalLimits::is_default")]
    pub limits: super::limits::RawGlobalLimits,
    // Security groups (issue 11): the groups by name, and the instance default.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub security_groups: std::collections::BTreeMap<String, crate::security::RawSecurityGroup>,
    #[serde(default, skip_serializing_if = "crate::security::RawSecurity::is_default")]
    pub security: crate::security::RawSecurity,
    /// Protection of a VIP as a whole (all its listeners and its ports
    /// without one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vips: Vec<super::limits::RawVip>,
}

/// Bounds of the IPv4 fragment tables, per worker.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawFragments {
    /// Datagrams in flight tracked at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_datagrams: Option<u32>,
    /// Fragments one datagram may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fragments_per_datagram: Option<u32>,
    /// Fragments held while their datagram's first fragment has not come.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_held: Option<u32>,
    /// How long a datagram's fragments may take to arrive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// What lbd answers of ICMP itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawIcmp {
    /// Echo replies per second, all workers together (the excess is
    /// dropped as icmp_rate_limited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo_reply_rate: Option<u32>,
    /// ICMP errors lbd sends per second, all workers together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<u32>,
    /// ICMP errors about flows lbd forwards per second, all workers
    /// together (the excess is dropped as icmp_forward_rate_limited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_rate: Option<u32>,
}

/// lbd's own health checking.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// `off`: lbd runs no checks itself (an independent `lbctl
    /// health-check` reports instead); `on` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<Switch>,
}

impl RawHealth {
    fn is_default(&self) -> bool {
        *self == RawHealth::default()
    }
}

/// A listener's `health_check`, as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub kind: CheckKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rise: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fall: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Vec<RawStatus>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// An HTTP status code (`200`) or range (`"200-399"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawStatus {
    Code(u32),
    Range(String),
}

/// The kernel exception path: how the ports' kernel interfaces are made
/// and how much traffic may cross them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawException {
    /// `tap` (net_tap) or `virtio_user` (virtio-user on /dev/vhost-net).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<ExceptionBackend>,
    /// Packets per second all workers together pass up to the kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_kernel_rate: Option<u32>,
    /// Packets per second the kernel may send out through the ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_kernel_rate: Option<u32>,
    /// Packets each direction's queue holds (per worker towards the kernel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_length: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawControl {
    /// Unix socket lbctl talks to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
    /// Group (name or number) allowed to use the socket besides root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// address:port of the Prometheus endpoint; "off" disables it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Client addresses (CIDRs) allowed to scrape; absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    /// A file holding the token scrapes must present (`Authorization:
    /// Bearer <token>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLcores {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<u32>,
    /// CPUs the worker lcores are pinned to, round-robin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Vec<u32>>,
    /// What an idle worker does: `busy`, `adaptive` or `auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<String>,
    /// The longest sleep of an idle worker (0 = pure busy polling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_sleep: Option<String>,
    /// Packets per RX burst (unset: chosen at start from the L1 data cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPort {
    pub name: String,
    pub device: String,
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default)]
    pub neighbors: Vec<RawNeighbor>,
    /// Overrides the device's MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_descriptors: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_descriptors: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promiscuous: Option<bool>,
    /// How the NIC's RSS hashes: on the client endpoint as source or as
    /// destination, or not at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss: Option<RssMode>,
    /// A kernel interface carrying the port's address and MAC, for the
    /// host's own traffic on the port (`on` unless set `off`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<Switch>,
    /// Name of that interface (default `lbd-<port name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception_interface: Option<String>,
    /// Largest IPv4 packet lbd sends out of the port (default 1500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawNeighbor {
    pub ip: String,
    pub mac: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: String,
    pub vip: String,
    pub protocol: Protocol,
    pub port: u32,
    #[serde(default = "default_scheduler")]
    pub scheduler: SchedulerAlgorithm,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev_table_size: Option<u32>,
    /// Which fields of a flow Maglev hashes (default `five_tuple`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<HashFields>,
    /// How long a client address keeps its backend after its last new
    /// connection (a duration); absent: no persistence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence: Option<String>,
    /// What to do with a TCP packet other than a SYN that has no session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_non_syn: Option<NonSynPolicy>,
    /// off, on or auto (SYN cookies; see config/reference.yaml).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syn_proxy: Option<SynProxyMode>,
    #[serde(default)]
    pub backends: Vec<RawBackend>,
    // Health checking (kept together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<RawHealthCheck>,
    /// When every backend is down: `drop` new flows or `fail_open`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_down: Option<AllDownPolicy>,
    /// A new or recovered backend's weight ramps up over this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start: Option<String>,
    /// Rate limits: per listener and per client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<super::limits::RawLimits>,
    /// Scrubbing and blackholing thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protection: Option<super::limits::RawProtection>,
    /// The security group new flows must pass (`security.default_group`
    /// when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_group: Option<String>,
}

fn default_scheduler() -> SchedulerAlgorithm {
    SchedulerAlgorithm::Maglev
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub address: String,
    pub port: u32,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// No new flows while set; sessions continue. `lbctl backend drain`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub drained: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_weight() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_syn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_established: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_closing: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_closed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSessions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_per_worker: Option<u64>,
    /// Entries of the persistence table shared by all workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence_entries: Option<u64>,
    /// What happens to sessions whose backend is removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_backend: Option<RemovedBackendPolicy>,
    /// Half-open TCP sessions a worker keeps (SYN-flood defence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_open_max_per_worker: Option<u64>,
    /// Client segments a worker holds for SYN-proxied connections whose
    /// backend has not answered yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syn_proxy_held: Option<u64>,
    /// Key of the session-table and owner-shard hashes: `random` or 80 hex
    /// digits (keyed hashes, issue 11).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawArp {
    /// How long a learned neighbour is trusted before it is re-resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable_time: Option<String>,
    /// Interval between ARP requests for an unresolved address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_interval: Option<String>,
    /// Requests sent before an address is given up on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Packets per worker held while their next hop resolves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_length: Option<u32>,
    /// Neighbour entries per worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_size: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMempool {
    /// Number of mbufs; derived from queues and rings when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mbufs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_size: Option<u32>,
}
