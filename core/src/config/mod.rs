//! Configuration: YAML in, validated typed values out.
//!
//! [`load`] never touches DPDK, so `lbd --check-config` runs anywhere. An
//! error names the file, the field path and what is wrong; a rejected file
//! produces no [`Config`] at all, so nothing downstream can half-apply it.

pub mod limits;
pub use limits::MAX_PROTECTED_VIPS;
pub mod raw;

use crate::health::{self, AllDownPolicy, CheckKind, HealthCheck};
use crate::wire::MacAddr;
use ipnet::Ipv4Net;
use raw::*;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Most listeners and backends one `lbd` serves; per-worker counters are
/// sized by these at start.
pub const MAX_LISTENERS: usize = 256;
pub const MAX_BACKENDS: usize = 4096;
pub const MAX_WORKERS: usize = 64;
pub const MAX_PORTS: usize = 16;
pub const DEFAULT_MAGLEV_TABLE_SIZE: u32 = 65537;
/// Largest Maglev table: entries are `u16` backend indices, and beyond a few
/// million entries the build time stops being worth it.
pub const MAX_MAGLEV_TABLE_SIZE: u32 = 4_194_301;
/// ICMP echo replies per second lbd sends at most, by default.
pub const DEFAULT_ECHO_REPLY_RATE: u32 = 1000;
/// ICMP errors per second lbd sends at most, by default.
pub const DEFAULT_ICMP_ERROR_RATE: u32 = 1000;
/// ICMP errors about flows per second lbd forwards at most, by default:
/// ten times what one Linux router sends at most by default
/// (`icmp_msgs_per_sec`), so the errors of the paths in use pass, and a
/// spray of errors quoting live flows reaches the backends at this rate.
pub const DEFAULT_ICMP_FORWARD_RATE: u32 = 10_000;
/// A port's MTU by default: DPDK's default for a device, and the most lbd
/// takes, since it sets up no port for jumbo frames.
/// Client segments a worker's SYN proxy holds by default
/// (`sessions.syn_proxy_held`).
pub const DEFAULT_SYN_PROXY_HELD: usize = 1024;
/// The most it may hold: the store's indices are 16 bits.
pub const MAX_SYN_PROXY_HELD: usize = 65535;
pub const DEFAULT_MTU: u16 = 1500;
/// The smallest MTU IPv4 allows (RFC 791).
pub const MIN_MTU: u16 = 68;
/// Most backends of a `least_connections` listener.
pub const MAX_LEAST_CONNECTIONS_BACKENDS: usize = 256;
/// Session slots are addressed by 31 bits (one bit marks the direction).
pub const MAX_SESSIONS_PER_WORKER: u64 = 1 << 30;
/// Persistence table entries (8 bytes each) unless `sessions.persistence_entries` says.
pub const DEFAULT_PERSISTENCE_ENTRIES: u64 = 1 << 20;
pub const MIN_PERSISTENCE_ENTRIES: u64 = 1 << 10;
pub const MAX_PERSISTENCE_ENTRIES: u64 = 1 << 28;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// Field path such as `listeners[0].backends[1].weight`; empty when the
    /// file as a whole is at fault.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => crate::wire::ipv4::PROTO_TCP,
            Protocol::Udp => crate::wire::ipv4::PROTO_UDP,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// The scheduling algorithms, by the name a listener's `scheduler` gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchedulerAlgorithm {
    Maglev,
    RoundRobin,
    LeastConnections,
    SourceHash,
}

/// The fields of a flow Maglev hashes to place it (a listener's `hash`).
/// The VIP and protocol are fixed per listener, so they add nothing but
/// are part of the five-tuple hash all the same (it is also the session
/// table's hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashFields {
    /// Client address and port, VIP, listener port, protocol: every
    /// connection is placed on its own.
    FiveTuple,
    /// The client address alone: all of a client's connections share a
    /// backend, and its place in the table is the same on every listener
    /// (and every lbd), so listeners with the same backends (say TCP and
    /// UDP DNS) send one client to the same one.
    SourceIp,
    /// The client address and the listener's port: a client's connections
    /// to one listener share a backend; on other listeners it is placed
    /// independently.
    SourceIpAndDestinationPort,
}

impl HashFields {
    pub fn name(self) -> &'static str {
        match self {
            HashFields::FiveTuple => "five_tuple",
            HashFields::SourceIp => "source_ip",
            HashFields::SourceIpAndDestinationPort => "source_ip_and_destination_port",
        }
    }
}

/// A listener's scheduler: the algorithm with its validated parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerKind {
    Maglev {
        table_size: u32,
        hash: HashFields,
    },
    RoundRobin,
    LeastConnections,
    /// Maglev over the client address (`Maglev` with `HashFields::SourceIp`
    /// under its own name).
    SourceHash {
        table_size: u32,
    },
}

impl SchedulerKind {
    pub fn algorithm(self) -> SchedulerAlgorithm {
        match self {
            SchedulerKind::Maglev { .. } => SchedulerAlgorithm::Maglev,
            SchedulerKind::RoundRobin => SchedulerAlgorithm::RoundRobin,
            SchedulerKind::LeastConnections => SchedulerAlgorithm::LeastConnections,
            SchedulerKind::SourceHash { .. } => SchedulerAlgorithm::SourceHash,
        }
    }
    pub fn name(self) -> &'static str {
        match self.algorithm() {
            SchedulerAlgorithm::Maglev => "maglev",
            SchedulerAlgorithm::RoundRobin => "round_robin",
            SchedulerAlgorithm::LeastConnections => "least_connections",
            SchedulerAlgorithm::SourceHash => "source_hash",
        }
    }
    /// Whether the backend follows from the flow alone (a hash), so a
    /// packet in the middle of a connection can be sent where its first
    /// packet went.
    pub fn is_consistent(self) -> bool {
        matches!(self, SchedulerKind::Maglev { .. } | SchedulerKind::SourceHash { .. })
    }
}

/// A TCP listener's SYN proxy (`syn_proxy`): lbd answers SYNs with SYN
/// cookies and opens the backend connection only for clients whose ACK
/// proves the cookie (see `crate::synproxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SynProxyMode {
    #[default]
    Off,
    On,
    /// On while the worker's half-open sessions exceed half of
    /// `sessions.half_open_max_per_worker`.
    Auto,
}

/// Handling of a TCP segment without SYN that matches no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NonSynPolicy {
    /// Pick the backend the scheduler would have picked and create the
    /// session: with Maglev this is the backend the flow had before an
    /// `lbd` restart, so established connections survive it.
    Schedule,
    Drop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbor {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    pub name: String,
    pub device: String,
    pub address: Ipv4Addr,
    pub subnet: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub neighbors: Vec<Neighbor>,
    pub mac: Option<MacAddr>,
    pub rx_descriptors: u16,
    pub tx_descriptors: u16,
    pub promiscuous: bool,
    pub rss: RssMode,
    /// The kernel interface of the exception path, when on.
    pub exception_interface: Option<String>,
    /// `exception: on` was written: a host that cannot make the interface
    /// is an error. By default it is skipped with a warning instead.
    pub exception_required: bool,
    /// Largest IPv4 packet sent out of the port: a longer one is dropped,
    /// answered with fragmentation needed when it has DF set.
    pub mtu: u16,
}

/// An on/off setting (`on` and `off` in YAML).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Switch {
    On,
    Off,
}

/// How the kernel interfaces of the exception path are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExceptionBackend {
    /// DPDK's net_tap: a TAP device (needs /dev/net/tun).
    Tap,
    /// DPDK's virtio_user with the vhost-kernel backend (needs
    /// /dev/vhost-net); DPDK's recommended replacement for KNI.
    VirtioUser,
}

impl ExceptionBackend {
    pub fn name(self) -> &'static str {
        match self {
            ExceptionBackend::Tap => "tap",
            ExceptionBackend::VirtioUser => "virtio_user",
        }
    }
}

/// The exception path's backend and limits (see [`RawException`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExceptionSettings {
    pub backend: ExceptionBackend,
    pub to_kernel_rate: u32,
    pub from_kernel_rate: u32,
    pub queue_length: u32,
}

impl Default for ExceptionSettings {
    fn default() -> Self {
        ExceptionSettings {
            backend: ExceptionBackend::Tap,
            to_kernel_rate: 20_000,
            from_kernel_rate: 20_000,
            queue_length: 1024,
        }
    }
}

/// Which fields the NIC's RSS hash covers on a port (see `crate::rss`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RssMode {
    /// Source if the port faces clients (holds a VIP or the gateway),
    /// destination otherwise.
    Auto,
    /// Clients are the packets' source (the client-facing port).
    Source,
    /// Clients are the packets' destination (the backend-facing port).
    Destination,
    Off,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub address: Ipv4Addr,
    pub port: u16,
    pub weight: u32,
    /// Drained: no new flows (weight 0 for scheduling), sessions continue.
    pub drained: bool,
}

impl BackendConfig {
    /// The weight the scheduler uses.
    pub fn effective_weight(&self) -> u32 {
        if self.drained {
            0
        } else {
            self.weight
        }
    }
}

/// What happens to a session whose backend left the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovedBackendPolicy {
    /// The session keeps its backend until it ends or times out.
    Keep,
    /// TCP: the next client packet is answered with a RST and the session
    /// removed. UDP: the session is removed and the flow scheduled anew.
    Reset,
    /// The session moves to the backend the scheduler picks now.
    Reschedule,
}

/// Default Prometheus endpoint (loopback only).
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9412";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub name: String,
    pub vip: Ipv4Addr,
    pub protocol: Protocol,
    pub port: u16,
    pub scheduler: SchedulerKind,
    /// How long a client address keeps its backend after its last new
    /// connection (`None`: no persistence).
    pub persistence: Option<Duration>,
    pub tcp_non_syn: NonSynPolicy,
    pub syn_proxy: SynProxyMode,
    pub backends: Vec<BackendConfig>,
    // Health checking (kept together).
    pub health_check: Option<HealthCheck>,
    pub all_down: AllDownPolicy,
    pub slow_start: Option<Duration>,
    /// Rate limits and protection (see `crate::admission`).
    pub limits: crate::admission::Limits,
    pub protection: Option<crate::admission::Protection>,
    /// The security group new flows pass, its own or the instance
    /// default; `None`: every flow is admitted.
    pub security_group: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_syn: Duration,
    pub tcp_established: Duration,
    pub tcp_closing: Duration,
    pub tcp_closed: Duration,
    pub udp: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn: Duration::from_secs(10),
            tcp_established: Duration::from_secs(900),
            tcp_closing: Duration::from_secs(30),
            tcp_closed: Duration::from_secs(5),
            udp: Duration::from_secs(60),
        }
    }
}

/// How neighbours are resolved: timers a snapshot carries, so a reload
/// changes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpTiming {
    pub reachable_time: Duration,
    pub retry_interval: Duration,
    pub max_retries: u32,
}

impl Default for ArpTiming {
    fn default() -> Self {
        ArpTiming { reachable_time: Duration::from_secs(300), retry_interval: Duration::from_secs(1), max_retries: 3 }
    }
}

/// Sizes of the per-worker neighbour tables, allocated at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpTables {
    /// Packets per worker held while their next hop resolves.
    pub queue_length: usize,
    /// Neighbour entries per worker.
    pub cache_size: usize,
}

impl Default for ArpTables {
    fn default() -> Self {
        ArpTables { queue_length: 256, cache_size: 16384 }
    }
}

/// A validated configuration: what `lbd` is started with and what it
/// forwards by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub source: PathBuf,
    pub startup: Startup,
    pub forwarding: Forwarding,
}

/// What an idle worker does between polls that find nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleMode {
    /// Poll without pause: the lowest latency, a whole CPU per worker.
    Busy,
    /// After a run of empty polls, sleep; the sleeps grow with idleness up
    /// to `idle_sleep` and stop at the first packet.
    Adaptive,
    /// Adaptive where the workers share CPUs with other threads, busy
    /// where each has a CPU to itself (decided at start).
    Auto,
}

impl IdleMode {
    pub fn name(self) -> &'static str {
        match self {
            IdleMode::Busy => "busy",
            IdleMode::Adaptive => "adaptive",
            IdleMode::Auto => "auto",
        }
    }
}

/// The longest sleep of an adaptive worker unless configured.
pub const DEFAULT_IDLE_SLEEP: Duration = Duration::from_micros(200);
/// Below this a sleep is mostly the system call.
pub const MIN_IDLE_SLEEP: Duration = Duration::from_micros(10);

/// What is fixed from start to exit: the EAL, lcores, ports, memory and
/// table sizes, the control and metrics endpoints. A change that touches
/// any of it is refused; see [`Startup::changed_fields`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Startup {
    pub eal: Vec<String>,
    pub workers: usize,
    pub cpus: Option<Vec<u32>>,
    pub idle: IdleMode,
    /// The longest sleep of an adaptive worker.
    pub idle_sleep: Duration,
    /// `lcores.burst`; unset: lbd picks one for the workers' CPUs at start
    /// (`engine::daemon::burst_decision`, from the L1 data cache's size).
    pub burst: Option<usize>,
    pub ports: Vec<PortConfig>,
    pub session_capacity: usize,
    /// Entries of the persistence table all workers share.
    pub persistence_entries: usize,
    pub arp_tables: ArpTables,
    pub mempool_mbufs: Option<u32>,
    pub mempool_cache: u32,
    pub control_socket: PathBuf,
    pub control_group: Option<String>,
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Who may scrape: client networks (empty: any) and a bearer token.
    pub metrics_access: MetricsAccess,
    pub exception: ExceptionSettings,
    /// ICMP echo replies per second, all workers together.
    pub icmp_echo_reply_rate: u32,
    /// Bounds of each worker's fragment tables.
    pub fragments: crate::fragments::FragmentLimits,
    /// Entries of each worker's per-source limits table.
    pub source_entries: usize,
    /// ICMP errors lbd sends per second, all workers together.
    pub icmp_error_rate: u32,
    /// ICMP errors about flows lbd forwards per second, all workers
    /// together.
    pub icmp_forward_rate: u32,
    /// Key of the session-table and owner-shard hashes.
    pub hash_key: crate::hashkey::HashKeySetting,
    /// Client segments each worker's SYN proxy holds until their backend
    /// connection opens (`sessions.syn_proxy_held`).
    pub syn_proxy_held: usize,
}

/// Who may read `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetricsAccess {
    /// Client networks allowed to connect; empty: any.
    pub allow: Vec<ipnet::IpNet>,
    /// The token a scrape must present, read from `bearer_token_file`.
    pub token: Option<Secret>,
}

impl MetricsAccess {
    pub fn allows(&self, ip: std::net::IpAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }
}

/// A secret from a file: compared, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Whether `given` is the secret, in time that does not depend on where
    /// they differ.
    pub fn matches(&self, given: &[u8]) -> bool {
        let want = self.0.as_bytes();
        want.len() == given.len() && want.iter().zip(given).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// What a snapshot is built from, so a reload or an `lbctl` change can
/// replace it while lbd runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarding {
    pub listeners: Vec<ListenerConfig>,
    pub timeouts: Timeouts,
    pub arp: ArpTiming,
    pub removed_backend: RemovedBackendPolicy,
    /// Half-open TCP sessions a worker keeps; a new SYN beyond them evicts
    /// the oldest (`sessions.half_open_max_per_worker`). Unset: a quarter
    /// of the table (see [`Forwarding::half_open_max`]).
    pub half_open_max: Option<usize>,
    /// lbd runs the listeners' health checks itself (`health.builtin`).
    pub health_builtin: bool,
    /// Security groups by name.
    pub security_groups: std::collections::BTreeMap<String, std::sync::Arc<crate::security::SecurityGroup>>,
    /// `vips[]`: VIPs protected as a whole.
    pub vips: Vec<crate::admission::VipProtection>,
}

impl Forwarding {
    /// Half-open sessions a worker with a table of `capacity` keeps: as
    /// configured, else a quarter of the table, so a SYN flood leaves
    /// three quarters to established sessions.
    pub fn half_open_max(&self, capacity: usize) -> usize {
        self.half_open_max.unwrap_or(capacity.div_ceil(4))
    }
}

impl Config {
    /// The RSS mode of port `i` with `Auto` resolved.
    pub fn rss_mode(&self, i: usize) -> RssMode {
        let p = &self.startup.ports[i];
        match p.rss {
            RssMode::Auto => {
                let faces_clients =
                    p.gateway.is_some() || self.forwarding.listeners.iter().any(|l| p.subnet.contains(&l.vip));
                if faces_clients {
                    RssMode::Source
                } else {
                    RssMode::Destination
                }
            }
            m => m,
        }
    }
}

/// True when the EAL arguments choose the lcores themselves (`-l`, `-c`,
/// `--lcores`, joined to their value or not), so lbd must not add its own
/// `--lcores` map.
pub fn eal_sets_lcores(eal: &[String]) -> bool {
    eal.iter().any(|a| a.starts_with("-l") || a.starts_with("-c") || a.starts_with("--lcores"))
}

/// The `--vdev` arguments of an EAL argument list (`--vdev X` and
/// `--vdev=X`).
pub fn eal_vdevs(eal: &[String]) -> Vec<&str> {
    let mut out = Vec::new();
    let mut it = eal.iter();
    while let Some(a) = it.next() {
        if a == "--vdev" {
            if let Some(v) = it.next() {
                out.push(v.as_str());
            }
        } else if let Some(v) = a.strip_prefix("--vdev=") {
            out.push(v);
        }
    }
    out
}

/// A vdev argument's device name and its `key=value` arguments (a bare
/// key has an empty value), trimmed.
fn vdev_parts(vdev: &str) -> (&str, impl Iterator<Item = (&str, &str)>) {
    let mut parts = vdev.split(',');
    let name = parts.next().unwrap_or_default().trim();
    (
        name,
        parts.map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.trim(), v.trim())
        }),
    )
}

/// Whether any `--vdev` is a `net_af_xdp` device.
pub fn eal_has_af_xdp(eal: &[String]) -> bool {
    eal_vdevs(eal).iter().any(|v| v.starts_with("net_af_xdp"))
}

/// The smallest af_packet ring lbd accepts without a warning, in frames.
/// DPDK's default (512 frames of 2 KB) holds 3 to 5 ms of a 1 Gbit/s flow:
/// less than a scheduler slice of a worker that shares its CPU, and the
/// kernel drops what does not fit (lbd counts it as the port's missed
/// frames, which the PMD itself does not; the
/// end-to-end bench lost 53-58 k frames per 10 s of iperf3 there, each a
/// retransmission; 2048 frames or more lost none).
pub const AF_PACKET_MIN_FRAMES: u32 = 2048;

/// Warnings about `net_af_packet` vdevs whose RX ring is small enough to
/// overflow while the worker is off its CPU: one line per vdev, naming it.
pub fn af_packet_ring_warnings(eal: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for v in eal_vdevs(eal).into_iter().filter(|v| v.starts_with("net_af_packet")) {
        let (name, mut args) = vdev_parts(v);
        let framecnt = args.find(|(k, _)| *k == "framecnt");
        let frames = match framecnt {
            None => 512,
            Some((_, n)) => match n.parse::<u32>() {
                Ok(n) => n,
                // The PMD rejects it at start with its own message.
                Err(_) => continue,
            },
        };
        if frames < AF_PACKET_MIN_FRAMES {
            let given = if framecnt.is_none() { " (DPDK's default)" } else { "" };
            out.push(format!(
                "{name}: an RX ring of {frames} frames{given} overflows while the worker waits for its CPU, and the kernel drops the excess (counted as the port's missed frames); add framecnt=4096 to the vdev"
            ));
        }
    }
    out
}

/// What lbd needs of a `net_af_xdp` vdev (`name,key=value,...`): an
/// interface, and no more queues than workers. The PMD's XDP program
/// passes a frame arriving on a queue without a socket to the kernel, so
/// queues no worker polls would silently bypass lbd.
fn check_af_xdp_vdev(vdev: &str, workers: u32) -> Result<(), String> {
    let (name, args) = vdev_parts(vdev);
    let mut iface = false;
    let mut queue_count = 1u32;
    for (k, v) in args {
        match k {
            "iface" => iface = !v.is_empty(),
            "queue_count" => match v.parse::<u32>() {
                Ok(n) if n >= 1 => queue_count = n,
                _ => return Err(format!("{name}: queue_count `{v}` is not a queue count (1 or more)")),
            },
            "start_queue" if v.parse::<u32>().is_err() => {
                return Err(format!("{name}: start_queue `{v}` is not a queue number"));
            }
            _ => {}
        }
    }
    if !iface {
        return Err(format!("{name}: needs iface=<interface> (the kernel interface whose queues lbd takes)"));
    }
    if queue_count > workers {
        return Err(format!(
            "{name}: queue_count={queue_count} is more than the {workers} worker(s): frames on the queues no worker polls would bypass lbd (use at most lcores.workers queues)"
        ));
    }
    Ok(())
}

impl Startup {
    /// True when the EAL arguments keep DPDK off PCI devices not listed.
    pub fn eal_restricts_pci(&self) -> bool {
        self.eal.iter().any(|a| {
            a == "--no-pci"
                || a == "-a"
                || a.starts_with("--allow")
                || a == "-b"
                || a.starts_with("--block")
                || (a.starts_with("-a") && a.len() > 2)
        })
    }

    /// The file's names of the fields that differ between `self` and
    /// `other`, for the refusal message. Whether a restart is needed is
    /// `self != other`; this only names why. The destructuring lists every
    /// field without `..`, so a field added to [`Startup`] does not compile
    /// until it is named here too.
    pub fn changed_fields(&self, other: &Startup) -> Vec<&'static str> {
        let Startup {
            eal,
            workers,
            cpus,
            idle,
            idle_sleep,
            burst,
            ports,
            session_capacity,
            persistence_entries,
            arp_tables: ArpTables { queue_length, cache_size },
            mempool_mbufs,
            mempool_cache,
            control_socket,
            control_group,
            metrics_listen,
            metrics_access: MetricsAccess { allow, token },
            exception,
            icmp_echo_reply_rate,
            fragments,
            source_entries,
            icmp_error_rate,
            icmp_forward_rate,
            hash_key,
            syn_proxy_held,
        } = self;
        let same = [
            ("eal", *eal == other.eal),
            ("lcores.workers", *workers == other.workers),
            ("lcores.cpus", *cpus == other.cpus),
            ("lcores.idle", *idle == other.idle),
            ("lcores.idle_sleep", *idle_sleep == other.idle_sleep),
            ("lcores.burst", *burst == other.burst),
            ("ports", *ports == other.ports),
            ("sessions.capacity_per_worker", *session_capacity == other.session_capacity),
            ("sessions.persistence_entries", *persistence_entries == other.persistence_entries),
            ("arp.queue_length", *queue_length == other.arp_tables.queue_length),
            ("arp.cache_size", *cache_size == other.arp_tables.cache_size),
            ("mempool.mbufs", *mempool_mbufs == other.mempool_mbufs),
            ("mempool.cache_size", *mempool_cache == other.mempool_cache),
            ("control.socket", *control_socket == other.control_socket),
            ("control.group", *control_group == other.control_group),
            ("metrics.listen", *metrics_listen == other.metrics_listen),
            ("metrics.allow", *allow == other.metrics_access.allow),
            ("metrics.bearer_token_file", *token == other.metrics_access.token),
            ("exception", *exception == other.exception),
            ("icmp.echo_reply_rate", *icmp_echo_reply_rate == other.icmp_echo_reply_rate),
            ("fragments", *fragments == other.fragments),
            ("limits.source_entries", *source_entries == other.source_entries),
            ("icmp.error_rate", *icmp_error_rate == other.icmp_error_rate),
            ("icmp.forward_rate", *icmp_forward_rate == other.icmp_forward_rate),
            ("sessions.hash_key", *hash_key == other.hash_key),
            ("sessions.syn_proxy_held", *syn_proxy_held == other.syn_proxy_held),
        ];
        same.into_iter().filter(|(_, same)| !same).map(|(name, _)| name).collect()
    }
}

/// Reads and validates `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_raw(path).map(|(_, c)| c)
}

/// Reads and validates `path`, returning the file's own form as well.
pub fn load_raw(path: &Path) -> Result<(RawConfig, Config), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_owned(),
        field: String::new(),
        message: format!("cannot read: {e}"),
    })?;
    parse_raw(&text, path)
}

/// Validates YAML `text`, attributing errors to `path`.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    parse_raw(text, path).map(|(_, c)| c)
}

/// Parses and validates YAML `text`, returning both forms.
pub fn parse_raw(text: &str, path: &Path) -> Result<(RawConfig, Config), ConfigError> {
    let raw: RawConfig = serde_yaml::from_str(text).map_err(|e| yaml_error(path, &e))?;
    let cfg = validate(raw.clone(), path)?;
    Ok((raw, cfg))
}

/// Validates a configuration in its file form; `path` names it in errors.
pub fn validate(raw: RawConfig, path: &Path) -> Result<Config, ConfigError> {
    Validator { file: path }.config(raw)
}

/// The YAML text of a configuration in file form.
pub fn to_yaml(raw: &RawConfig) -> String {
    serde_yaml::to_string(raw).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}

fn yaml_error(path: &Path, e: &serde_yaml::Error) -> ConfigError {
    // serde_yaml's message already starts with the field path
    // ("listeners[0].backends[1]: unknown field ...") and ends with the
    // line and column; keep both.
    let msg = e.to_string();
    let (field, message) = match msg.split_once(": ") {
        Some((f, m)) if looks_like_path(f) => (f.to_owned(), m.to_owned()),
        _ => (String::new(), msg.clone()),
    };
    ConfigError { file: path.to_owned(), field, message }
}

fn looks_like_path(s: &str) -> bool {
    !s.is_empty() && !s.contains(' ') && s.chars().all(|c| c.is_ascii_alphanumeric() || "_.[]".contains(c))
}

struct Validator<'a> {
    file: &'a Path,
}

type VResult<T> = Result<T, ConfigError>;

impl Validator<'_> {
    fn err<T>(&self, field: impl Into<String>, message: impl Into<String>) -> VResult<T> {
        Err(ConfigError { file: self.file.to_owned(), field: field.into(), message: message.into() })
    }

    /// `fragments`: each bound within a range that keeps the tables'
    /// preallocated memory sane.
    fn fragments(&self, raw: &raw::RawFragments) -> VResult<crate::fragments::FragmentLimits> {
        let d = crate::fragments::FragmentLimits::default();
        let count = |field: &str, v: Option<u32>, default: usize, max: u32| -> VResult<usize> {
            match v {
                None => Ok(default),
                Some(n) if (1..=max).contains(&n) => Ok(n as usize),
                Some(n) => self.err(format!("fragments.{field}"), format!("{n} is out of range (1..={max})")),
            }
        };
        let max_datagrams = count("max_datagrams", raw.max_datagrams, d.max_datagrams, 65536)?;
        // 65535 bytes in 8-byte pieces.
        let max_fragments = count("max_fragments_per_datagram", raw.max_fragments_per_datagram, d.max_fragments, 8192)?;
        if max_datagrams * max_fragments > 1 << 22 {
            return self.err(
                "fragments",
                format!(
                    "max_datagrams × max_fragments_per_datagram = {} is over 4194304",
                    max_datagrams * max_fragments
                ),
            );
        }
        let max_held = count("max_held", raw.max_held, d.max_held, 65536)?;
        let timeout = self.duration(
            "fragments.timeout",
            raw.timeout.as_ref(),
            Duration::from_millis(u64::from(d.timeout_ms)),
            Duration::from_millis(10),
        )?;
        if timeout > Duration::from_secs(60) {
            return self.err("fragments.timeout", "is too long (maximum 60s: RFC 791 suggests 15s)");
        }
        Ok(crate::fragments::FragmentLimits {
            max_datagrams,
            max_fragments,
            max_held,
            timeout_ms: timeout.as_millis() as u32,
        })
    }

    fn duration(&self, field: &str, v: Option<&String>, default: Duration, min: Duration) -> VResult<Duration> {
        let Some(s) = v else { return Ok(default) };
        let d = match humantime::parse_duration(s.trim()) {
            Ok(d) => d,
            Err(e) => {
                return self.err(field, format!("`{s}` is not a duration ({e}); write e.g. `10s`, `15m`, `100ms`"))
            }
        };
        if d < min {
            return self.err(field, format!("{s} is too short (minimum {})", humantime::format_duration(min)));
        }
        // Session times are kept as u32 milliseconds with wrapping compares.
        if d > Duration::from_secs(24 * 86400) {
            return self.err(field, format!("{s} is too long (maximum 24d)"));
        }
        Ok(d)
    }

    fn ipv4(&self, field: &str, s: &str) -> VResult<Ipv4Addr> {
        match s.trim().parse::<Ipv4Addr>() {
            Ok(a) => Ok(a),
            Err(_) => self.err(field, format!("`{s}` is not an IPv4 address")),
        }
    }

    fn unicast(&self, field: &str, s: &str) -> VResult<Ipv4Addr> {
        let a = self.ipv4(field, s)?;
        if a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback() {
            return self.err(field, format!("{a} is not a usable unicast address"));
        }
        Ok(a)
    }

    fn l4_port(&self, field: &str, p: u32) -> VResult<u16> {
        match u16::try_from(p) {
            Ok(p) if p != 0 => Ok(p),
            _ => self.err(field, format!("{p} is not a port number (1..=65535)")),
        }
    }

    fn mac(&self, field: &str, s: &str) -> VResult<MacAddr> {
        match s.parse::<MacAddr>() {
            Ok(m) if m.is_multicast() || m == MacAddr::ZERO => {
                self.err(field, format!("{m} is not a unicast MAC address"))
            }
            Ok(m) => Ok(m),
            Err(e) => self.err(field, e),
        }
    }

    fn name(&self, field: &str, s: &str) -> VResult<()> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
        if ok {
            Ok(())
        } else {
            self.err(field, format!("`{s}` is not a valid name (1-64 of a-z, A-Z, 0-9, `_`, `-`, `.`)"))
        }
    }

    fn config(&self, raw: RawConfig) -> VResult<Config> {
        let workers = raw.lcores.workers.unwrap_or(1);
        if workers == 0 || workers as usize > MAX_WORKERS {
            return self.err("lcores.workers", format!("{workers} workers is out of range (1..={MAX_WORKERS})"));
        }
        if let Some(cpus) = &raw.lcores.cpus {
            if cpus.is_empty() {
                return self.err("lcores.cpus", "must list at least one CPU when present");
            }
            if let Some(c) = cpus.iter().find(|c| **c >= 1024) {
                return self.err("lcores.cpus", format!("CPU {c} is out of range"));
            }
        }
        let idle_sleep =
            self.duration("lcores.idle_sleep", raw.lcores.idle_sleep.as_ref(), DEFAULT_IDLE_SLEEP, Duration::ZERO)?;
        if idle_sleep > Duration::from_millis(10) {
            return self
                .err("lcores.idle_sleep", "must be at most 10ms: a longer sleep stalls traffic after a quiet spell");
        }
        let idle = match raw.lcores.idle.as_deref().map(str::trim) {
            Some("busy") => IdleMode::Busy,
            Some("adaptive") => IdleMode::Adaptive,
            Some("auto") => IdleMode::Auto,
            Some(other) => {
                return self.err("lcores.idle", format!("`{other}` is not an idle mode (busy, adaptive or auto)"))
            }
            // Before `idle` existed, `idle_sleep: 0us` meant busy polling.
            None if idle_sleep.is_zero() && raw.lcores.idle_sleep.is_some() => IdleMode::Busy,
            None => IdleMode::Auto,
        };
        if idle != IdleMode::Busy && idle_sleep < MIN_IDLE_SLEEP {
            return self.err(
                "lcores.idle_sleep",
                format!(
                    "must be at least {} unless lcores.idle is busy (it is the longest sleep of an idle worker)",
                    humantime::format_duration(MIN_IDLE_SLEEP)
                ),
            );
        }
        if let Some(burst) = raw.lcores.burst {
            if !(1..=256).contains(&burst) {
                return self.err("lcores.burst", format!("{burst} is out of range (1..=256)"));
            }
        }
        for v in eal_vdevs(&raw.eal).into_iter().filter(|v| v.starts_with("net_af_xdp")) {
            if let Err(e) = check_af_xdp_vdev(v, workers) {
                return self.err("eal", e);
            }
        }
        if eal_sets_lcores(&raw.eal) && raw.lcores.cpus.is_some() {
            return self.err("lcores.cpus", "cannot be combined with -l/-c/--lcores in `eal`; use one or the other");
        }

        let ports = self.ports(&raw.ports)?;
        let mut listeners = self.listeners(&raw.listeners, &ports)?;
        let security_groups = crate::security::validate_groups(&raw.security_groups, &raw.security, self.file)?;
        for (i, (l, r)) in listeners.iter_mut().zip(&raw.listeners).enumerate() {
            if let Some(g) = &r.security_group {
                if !security_groups.contains_key(g) {
                    let message = crate::security::unknown_group(g, &security_groups);
                    return self.err(format!("listeners[{i}].security_group"), message);
                }
            }
            l.security_group = r.security_group.clone().or_else(|| raw.security.default_group.clone());
        }
        let vips = self.vips(&raw.vips, &listeners)?;

        let d = Timeouts::default();
        let one = Duration::from_secs(1);
        // Below a second only makes sense for benchmarks (session churn).
        let tenth = Duration::from_millis(100);
        let t = &raw.timeouts;
        let timeouts = Timeouts {
            tcp_syn: self.duration("timeouts.tcp_syn", t.tcp_syn.as_ref(), d.tcp_syn, tenth)?,
            tcp_established: self.duration(
                "timeouts.tcp_established",
                t.tcp_established.as_ref(),
                d.tcp_established,
                tenth,
            )?,
            tcp_closing: self.duration("timeouts.tcp_closing", t.tcp_closing.as_ref(), d.tcp_closing, tenth)?,
            tcp_closed: self.duration("timeouts.tcp_closed", t.tcp_closed.as_ref(), d.tcp_closed, tenth)?,
            udp: self.duration("timeouts.udp", t.udp.as_ref(), d.udp, tenth)?,
        };

        let cap = raw.sessions.capacity_per_worker.unwrap_or(1_000_000);
        if cap == 0 || cap > MAX_SESSIONS_PER_WORKER {
            return self
                .err("sessions.capacity_per_worker", format!("{cap} is out of range (1..={MAX_SESSIONS_PER_WORKER})"));
        }

        let persistence_entries = raw.sessions.persistence_entries.unwrap_or(DEFAULT_PERSISTENCE_ENTRIES);
        if !(MIN_PERSISTENCE_ENTRIES..=MAX_PERSISTENCE_ENTRIES).contains(&persistence_entries)
            || !persistence_entries.is_power_of_two()
        {
            return self.err(
                "sessions.persistence_entries",
                format!(
                    "{persistence_entries} must be a power of two from {MIN_PERSISTENCE_ENTRIES} to \
                     {MAX_PERSISTENCE_ENTRIES} (e.g. 1048576)"
                ),
            );
        }

        let da = ArpTiming::default();
        let a = &raw.arp;
        let arp = ArpTiming {
            reachable_time: self.duration("arp.reachable_time", a.reachable_time.as_ref(), da.reachable_time, one)?,
            retry_interval: self.duration(
                "arp.retry_interval",
                a.retry_interval.as_ref(),
                da.retry_interval,
                Duration::from_millis(10),
            )?,
            max_retries: a.max_retries.unwrap_or(da.max_retries),
        };
        let dt = ArpTables::default();
        let arp_tables = ArpTables {
            queue_length: a.queue_length.map_or(dt.queue_length, |v| v as usize),
            cache_size: a.cache_size.map_or(dt.cache_size, |v| v as usize),
        };
        if !(1..=100).contains(&arp.max_retries) {
            return self.err("arp.max_retries", format!("{} is out of range (1..=100)", arp.max_retries));
        }
        if !(1..=65536).contains(&arp_tables.queue_length) {
            return self.err("arp.queue_length", format!("{} is out of range (1..=65536)", arp_tables.queue_length));
        }
        if !(16..=1 << 20).contains(&arp_tables.cache_size) {
            return self.err("arp.cache_size", format!("{} is out of range (16..=1048576)", arp_tables.cache_size));
        }
        if let Some(n) = raw.mempool.mbufs {
            if n < 1024 {
                return self.err("mempool.mbufs", format!("{n} is too few (minimum 1024)"));
            }
        }
        let mempool_cache = raw.mempool.cache_size.unwrap_or(256);
        if mempool_cache > 512 {
            return self.err("mempool.cache_size", format!("{mempool_cache} is above DPDK's limit of 512"));
        }
        let removed_backend = raw.sessions.removed_backend.unwrap_or(RemovedBackendPolicy::Keep);
        let half_open_max = raw.sessions.half_open_max_per_worker;
        if let Some(n) = half_open_max.filter(|n| *n == 0 || *n > cap) {
            return self.err(
                "sessions.half_open_max_per_worker",
                format!("{n} is out of range (1..=sessions.capacity_per_worker, {cap})"),
            );
        }
        let syn_proxy_held = raw.sessions.syn_proxy_held.unwrap_or(DEFAULT_SYN_PROXY_HELD as u64);
        if syn_proxy_held > MAX_SYN_PROXY_HELD as u64 {
            return self.err(
                "sessions.syn_proxy_held",
                format!("{syn_proxy_held} is out of range (0..={MAX_SYN_PROXY_HELD})"),
            );
        }
        let control_socket =
            PathBuf::from(raw.control.socket.clone().unwrap_or_else(|| lbproto::DEFAULT_SOCKET.to_owned()));
        if !control_socket.is_absolute() || control_socket.as_os_str().len() > 100 {
            return self.err(
                "control.socket",
                format!("`{}` must be an absolute path of at most 100 bytes", control_socket.display()),
            );
        }
        if let Some(g) = &raw.control.group {
            let ok =
                !g.is_empty() && g.len() <= 32 && g.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
            if !ok {
                return self.err("control.group", format!("`{g}` is not a group name or number"));
            }
        }
        let metrics_listen = match raw.metrics.listen.as_deref() {
            Some("off") => None,
            other => {
                let s = other.unwrap_or(DEFAULT_METRICS_LISTEN);
                match s.parse::<std::net::SocketAddr>() {
                    Ok(a) => Some(a),
                    Err(_) => return self.err("metrics.listen", format!("`{s}` is not address:port (or `off`)")),
                }
            }
        };

        let exception = self.exception(&raw.exception)?;
        let metrics_access = self.metrics_access(&raw.metrics)?;
        let icmp_echo_reply_rate = raw.icmp.echo_reply_rate.unwrap_or(DEFAULT_ECHO_REPLY_RATE);
        if !(1..=10_000_000).contains(&icmp_echo_reply_rate) {
            return self.err(
                "icmp.echo_reply_rate",
                format!("{icmp_echo_reply_rate} replies per second is out of range (1..=10000000)"),
            );
        }
        let fragments = self.fragments(&raw.fragments)?;

        let source_entries = self.source_entries(&raw.limits)?;
        let icmp_error_rate = raw.icmp.error_rate.unwrap_or(DEFAULT_ICMP_ERROR_RATE);
        if !(1..=10_000_000).contains(&icmp_error_rate) {
            return self
                .err("icmp.error_rate", format!("{icmp_error_rate} errors per second is out of range (1..=10000000)"));
        }
        let icmp_forward_rate = raw.icmp.forward_rate.unwrap_or(DEFAULT_ICMP_FORWARD_RATE);
        if !(1..=10_000_000).contains(&icmp_forward_rate) {
            return self.err(
                "icmp.forward_rate",
                format!("{icmp_forward_rate} errors per second is out of range (1..=10000000)"),
            );
        }
        let hash_key = match raw.sessions.hash_key.as_deref() {
            None => crate::hashkey::HashKeySetting::Random,
            Some(text) => match crate::hashkey::HashKeySetting::parse(text) {
                Ok(k) => k,
                Err(e) => return self.err("sessions.hash_key", e),
            },
        };

        Ok(Config {
            source: self.file.to_owned(),
            startup: Startup {
                eal: raw.eal,
                workers: workers as usize,
                cpus: raw.lcores.cpus,
                idle,
                idle_sleep,
                burst: raw.lcores.burst.map(|b| b as usize),
                ports,
                session_capacity: cap as usize,
                persistence_entries: persistence_entries as usize,
                arp_tables,
                mempool_mbufs: raw.mempool.mbufs,
                mempool_cache,
                control_socket,
                control_group: raw.control.group.clone(),
                metrics_listen,
                metrics_access,
                exception,
                icmp_echo_reply_rate,
                fragments,
                source_entries,
                icmp_error_rate,
                icmp_forward_rate,
                hash_key,
                syn_proxy_held: syn_proxy_held as usize,
            },
            forwarding: Forwarding {
                listeners,
                timeouts,
                arp,
                removed_backend,
                half_open_max: half_open_max.map(|n| n as usize),
                health_builtin: raw.health.builtin != Some(Switch::Off),
                security_groups,
                vips,
            },
        })
    }

    fn metrics_access(&self, raw: &RawMetrics) -> VResult<MetricsAccess> {
        let mut allow = Vec::new();
        for (i, a) in raw.allow.iter().flatten().enumerate() {
            let net = a
                .parse::<ipnet::IpNet>()
                .or_else(|_| a.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| ConfigError {
                    file: self.file.to_owned(),
                    field: format!("metrics.allow[{i}]"),
                    message: format!("`{a}` is not an address or a network (e.g. 10.0.0.0/8 or 192.0.2.7)"),
                })?;
            allow.push(net.trunc());
        }
        let token = match &raw.bearer_token_file {
            None => None,
            Some(path) => {
                let field = "metrics.bearer_token_file";
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                    file: self.file.to_owned(),
                    field: field.into(),
                    message: format!("cannot read {path}: {e}"),
                })?;
                let token = text.trim();
                if token.is_empty() || token.len() > 4096 || !token.chars().all(|c| c.is_ascii_graphic()) {
                    return self.err(field, format!("{path} must hold one token of 1-4096 printable characters"));
                }
                Some(Secret(token.to_owned()))
            }
        };
        Ok(MetricsAccess { allow, token })
    }

    fn exception(&self, raw: &RawException) -> VResult<ExceptionSettings> {
        let d = ExceptionSettings::default();
        let rate = |v: Option<u32>, dflt: u32, k: &str| -> VResult<u32> {
            let v = v.unwrap_or(dflt);
            if !(1..=10_000_000).contains(&v) {
                return self
                    .err(format!("exception.{k}"), format!("{v} packets per second is out of range (1..=10000000)"));
            }
            Ok(v)
        };
        let queue_length = raw.queue_length.unwrap_or(d.queue_length);
        if !(32..=65536).contains(&queue_length) || !queue_length.is_power_of_two() {
            return self.err("exception.queue_length", format!("{queue_length} must be a power of two in 32..=65536"));
        }
        Ok(ExceptionSettings {
            backend: raw.backend.unwrap_or(d.backend),
            to_kernel_rate: rate(raw.to_kernel_rate, d.to_kernel_rate, "to_kernel_rate")?,
            from_kernel_rate: rate(raw.from_kernel_rate, d.from_kernel_rate, "from_kernel_rate")?,
            queue_length,
        })
    }

    /// The kernel interface name of port `i`, `None` when its exception
    /// path is off. Linux names are at most 15 bytes and no two ports may
    /// share one.
    fn mtu(&self, i: usize, mtu: Option<u16>) -> VResult<u16> {
        let mtu = mtu.unwrap_or(DEFAULT_MTU);
        if !(MIN_MTU..=DEFAULT_MTU).contains(&mtu) {
            return self.err(
                format!("ports[{i}].mtu"),
                format!("{mtu} is out of range ({MIN_MTU}..={DEFAULT_MTU}; lbd sets up no port for jumbo frames)"),
            );
        }
        Ok(mtu)
    }

    fn exception_interface(&self, i: usize, p: &RawPort, earlier: &[PortConfig]) -> VResult<Option<String>> {
        if p.exception == Some(Switch::Off) {
            if p.exception_interface.is_some() {
                return self.err(format!("ports[{i}].exception_interface"), "set, but the port's exception is off");
            }
            return Ok(None);
        }
        let field = format!("ports[{i}].exception_interface");
        let name = match &p.exception_interface {
            Some(n) => n.clone(),
            None => {
                let n = format!("lbd-{}", p.name);
                if n.len() > 15 {
                    return self.err(
                        field,
                        format!("the default `{n}` is longer than 15 bytes (a Linux limit): name the interface"),
                    );
                }
                n
            }
        };
        let ok = !name.is_empty()
            && name.len() <= 15
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
            && name != "."
            && name != "..";
        if !ok {
            return self
                .err(field, format!("`{name}` is not an interface name (1-15 of a-z, A-Z, 0-9, `_`, `-`, `.`)"));
        }
        if let Some(q) = earlier.iter().find(|q| q.exception_interface.as_deref() == Some(name.as_str())) {
            return self.err(field, format!("`{name}` is also the exception interface of port `{}`", q.name));
        }
        Ok(Some(name))
    }

    fn ports(&self, raw: &[RawPort]) -> VResult<Vec<PortConfig>> {
        if raw.is_empty() {
            return self.err("ports", "at least one port is needed");
        }
        if raw.len() > MAX_PORTS {
            return self.err("ports", format!("{} ports is more than the maximum of {MAX_PORTS}", raw.len()));
        }
        let mut out: Vec<PortConfig> = Vec::with_capacity(raw.len());
        let mut names = HashSet::new();
        let mut devices = HashSet::new();
        for (i, p) in raw.iter().enumerate() {
            let f = |k: &str| format!("ports[{i}].{k}");
            self.name(&f("name"), &p.name)?;
            if !names.insert(p.name.as_str()) {
                return self.err(f("name"), format!("port name `{}` is used twice", p.name));
            }
            if p.device.trim().is_empty() {
                return self.err(f("device"), "must name a DPDK device (e.g. net_af_packet0 or a PCI address)");
            }
            if !devices.insert(p.device.as_str()) {
                return self.err(f("device"), format!("device `{}` is used by two ports", p.device));
            }
            let net: Ipv4Net = match p.address.trim().parse() {
                Ok(n) => n,
                Err(_) => {
                    return self.err(
                        f("address"),
                        format!("`{}` is not an IPv4 address with prefix length, e.g. 10.0.0.1/24", p.address),
                    )
                }
            };
            let address = net.addr();
            if address.is_unspecified() || address.is_multicast() || address.is_broadcast() || address.is_loopback() {
                return self.err(f("address"), format!("{address} is not a usable unicast address"));
            }
            if net.prefix_len() < 31 && (address == net.network() || address == net.broadcast()) {
                return self
                    .err(f("address"), format!("{address} is the network or broadcast address of {}", net.trunc()));
            }
            let subnet = net.trunc();
            for (j, q) in out.iter().enumerate() {
                if q.subnet.contains(&subnet.network()) || subnet.contains(&q.subnet.network()) {
                    return self.err(
                        f("address"),
                        format!(
                            "subnet {subnet} overlaps {} of ports[{j}] ({}); routing would be ambiguous",
                            q.subnet, q.name
                        ),
                    );
                }
            }
            let gateway = match &p.gateway {
                None => None,
                Some(g) => {
                    let g = self.unicast(&f("gateway"), g)?;
                    if !subnet.contains(&g) {
                        return self.err(f("gateway"), format!("{g} is outside the port's subnet {subnet}"));
                    }
                    if g == address {
                        return self.err(f("gateway"), format!("{g} is the port's own address"));
                    }
                    if let Some((j, q)) = out.iter().enumerate().find(|(_, q)| q.gateway.is_some()) {
                        return self.err(
                            f("gateway"),
                            format!(
                                "ports[{j}] ({}) already has a gateway; only one port may hold the default route",
                                q.name
                            ),
                        );
                    }
                    Some(g)
                }
            };
            let mut neighbors = Vec::new();
            let mut seen = HashSet::new();
            for (k, n) in p.neighbors.iter().enumerate() {
                let nf = |x: &str| format!("ports[{i}].neighbors[{k}].{x}");
                let ip = self.unicast(&nf("ip"), &n.ip)?;
                if !subnet.contains(&ip) {
                    return self.err(nf("ip"), format!("{ip} is outside the port's subnet {subnet}"));
                }
                if ip == address {
                    return self.err(nf("ip"), format!("{ip} is the port's own address"));
                }
                if !seen.insert(ip) {
                    return self.err(nf("ip"), format!("{ip} is listed twice"));
                }
                let mac = self.mac(&nf("mac"), &n.mac)?;
                neighbors.push(Neighbor { ip, mac });
            }
            let mac = match &p.mac {
                None => None,
                Some(m) => Some(self.mac(&f("mac"), m)?),
            };
            // af_xdp's rings are the port's descriptors, and the kernel
            // drops what does not fit while the worker is off its CPU
            // (counted as the port's missed frames, dpdk::ring_drops): 1024
            // lost 13-19 k frames per 10 s of iperf3 on the end-to-end
            // bench (each a retransmission), 4096 none.
            let default_desc = if p.device.trim().starts_with("net_af_xdp") { 4096 } else { 1024 };
            let desc = |v: Option<u16>, k: &str| -> VResult<u16> {
                let v = v.unwrap_or(default_desc);
                if !(64..=16384).contains(&v) {
                    return self.err(f(k), format!("{v} is out of range (64..=16384)"));
                }
                Ok(v)
            };
            out.push(PortConfig {
                name: p.name.clone(),
                device: p.device.trim().to_owned(),
                address,
                subnet,
                gateway,
                neighbors,
                mac,
                rx_descriptors: desc(p.rx_descriptors, "rx_descriptors")?,
                tx_descriptors: desc(p.tx_descriptors, "tx_descriptors")?,
                promiscuous: p.promiscuous.unwrap_or(false),
                rss: p.rss.unwrap_or(RssMode::Auto),
                exception_interface: self.exception_interface(i, p, &out)?,
                exception_required: p.exception == Some(Switch::On),
                mtu: self.mtu(i, p.mtu)?,
            });
        }
        Ok(out)
    }

    /// A VIP is answered for in ARP on the port whose subnet holds it, so it
    /// must not be an address the LAN already uses for something else:
    /// answering for the gateway or a neighbour would pull their traffic
    /// into lbd, and a subnet's network or broadcast address is no host's.
    fn vip_is_free(&self, field: &str, vip: Ipv4Addr, ports: &[PortConfig]) -> VResult<()> {
        for (i, p) in ports.iter().enumerate() {
            if p.address == vip {
                return self
                    .err(field, format!("{vip} is the address of port `{}`; a VIP needs its own address", p.name));
            }
            if p.gateway == Some(vip) {
                return self.err(
                    field,
                    format!(
                        "{vip} is the gateway of port `{}` (ports[{i}].gateway); lbd would answer ARP for it",
                        p.name
                    ),
                );
            }
            if let Some(k) = p.neighbors.iter().position(|n| n.ip == vip) {
                return self.err(
                    field,
                    format!(
                        "{vip} is a neighbour of port `{}` (ports[{i}].neighbors[{k}]); lbd would answer ARP for it",
                        p.name
                    ),
                );
            }
            if p.subnet.prefix_len() < 31 && p.subnet.contains(&vip) {
                let what = if vip == p.subnet.network() {
                    Some("network")
                } else if vip == p.subnet.broadcast() {
                    Some("broadcast")
                } else {
                    None
                };
                if let Some(what) = what {
                    return self
                        .err(field, format!("{vip} is the {what} address of port `{}`'s subnet {}", p.name, p.subnet));
                }
            }
        }
        Ok(())
    }

    /// A listener's `health_check`: defaults filled in, every field
    /// checked, fields of another kind of check refused.
    fn health_check(&self, i: usize, h: &RawHealthCheck) -> VResult<HealthCheck> {
        let f = |k: &str| format!("listeners[{i}].health_check.{k}");
        let mut c = HealthCheck::new(h.kind);
        if let Some(p) = h.port {
            c.port = Some(self.l4_port(&f("port"), p)?);
        }
        let ms = Duration::from_millis;
        c.interval = self.duration(&f("interval"), h.interval.as_ref(), health::DEFAULT_INTERVAL, ms(100))?;
        if c.interval > crate::health::MAX_INTERVAL {
            return self.err(f("interval"), "is too long (maximum 1h)");
        }
        let default_timeout = health::DEFAULT_TIMEOUT.min(c.interval);
        c.timeout = self.duration(&f("timeout"), h.timeout.as_ref(), default_timeout, ms(10))?;
        if c.timeout > c.interval {
            return self.err(
                f("timeout"),
                format!(
                    "{} is longer than the interval ({}): a probe must end before the next starts",
                    humantime::format_duration(c.timeout),
                    humantime::format_duration(c.interval)
                ),
            );
        }
        for (k, v, dflt) in [("rise", h.rise, health::DEFAULT_RISE), ("fall", h.fall, health::DEFAULT_FALL)] {
            let v = v.unwrap_or(dflt);
            if !(1..=100).contains(&v) {
                return self.err(f(k), format!("{v} is out of range (1..=100)"));
            }
            if k == "rise" {
                c.rise = v;
            } else {
                c.fall = v;
            }
        }
        let text = |k: &str, v: &str, max: usize| -> VResult<()> {
            if v.is_empty() || v.len() > max {
                return self.err(f(k), format!("must be 1 to {max} bytes"));
            }
            if v.chars().any(|ch| ch.is_control()) {
                return self.err(f(k), "must not contain control characters");
            }
            Ok(())
        };
        let only = |k: &str, set: bool, kind: CheckKind| -> VResult<()> {
            if set && h.kind != kind {
                return self.err(f(k), format!("only applies to `kind: {}` checks", kind.name()));
            }
            Ok(())
        };
        only("payload", h.payload.is_some(), CheckKind::Udp)?;
        only("expect", h.expect.is_some(), CheckKind::Udp)?;
        for (k, set) in [
            ("path", h.path.is_some()),
            ("host", h.host.is_some()),
            ("status", h.status.is_some()),
            ("body", h.body.is_some()),
        ] {
            only(k, set, CheckKind::Http)?;
        }
        if let Some(p) = &h.payload {
            // A payload may hold any bytes a protocol needs, but not be empty.
            if p.is_empty() || p.len() > 1024 {
                return self.err(f("payload"), "must be 1 to 1024 bytes");
            }
            c.payload = p.as_bytes().to_vec();
        }
        if let Some(e) = &h.expect {
            if e.is_empty() || e.len() > 1024 {
                return self.err(f("expect"), "must be 1 to 1024 bytes");
            }
            c.expect = Some(e.as_bytes().to_vec());
        }
        if let Some(p) = &h.path {
            text("path", p, 1024)?;
            if !p.starts_with('/') || p.contains(' ') {
                return self.err(f("path"), format!("`{p}` must start with `/` and contain no spaces"));
            }
            c.path = p.clone();
        }
        if let Some(host) = &h.host {
            text("host", host, 255)?;
            if host.contains(' ') {
                return self.err(f("host"), "must not contain spaces");
            }
            c.host = Some(host.clone());
        }
        if let Some(list) = &h.status {
            if list.is_empty() {
                return self.err(f("status"), "must list at least one code or range");
            }
            c.status = list
                .iter()
                .map(|s| match s {
                    RawStatus::Code(n) => health::parse_status_range(&n.to_string()),
                    RawStatus::Range(r) => health::parse_status_range(r),
                })
                .collect::<Result<_, _>>()
                .or_else(|e| self.err(f("status"), e))?;
        }
        if let Some(b) = &h.body {
            text("body", b, 1024)?;
            c.body = Some(b.clone());
        }
        Ok(c)
    }

    fn listeners(&self, raw: &[RawListener], ports: &[PortConfig]) -> VResult<Vec<ListenerConfig>> {
        if raw.len() > MAX_LISTENERS {
            return self
                .err("listeners", format!("{} listeners is more than the maximum of {MAX_LISTENERS}", raw.len()));
        }
        let mut names = HashSet::new();
        let mut tuples: HashMap<(Ipv4Addr, Protocol, u16), usize> = HashMap::new();
        let mut total_backends = 0usize;
        let mut out = Vec::with_capacity(raw.len());
        let has_gateway = ports.iter().any(|p| p.gateway.is_some());
        for (i, l) in raw.iter().enumerate() {
            let f = |k: &str| format!("listeners[{i}].{k}");
            self.name(&f("name"), &l.name)?;
            if !names.insert(l.name.as_str()) {
                return self.err(f("name"), format!("listener name `{}` is used twice", l.name));
            }
            let vip = self.unicast(&f("vip"), &l.vip)?;
            self.vip_is_free(&f("vip"), vip, ports)?;
            let protocol = l.protocol;
            let port = self.l4_port(&f("port"), l.port)?;
            if let Some(j) = tuples.insert((vip, protocol, port), i) {
                return self.err(
                    f("port"),
                    format!("{vip} {} port {port} is already served by listeners[{j}]", protocol.name()),
                );
            }
            let (scheduler, persistence) = self.scheduling(i, l)?;
            let tcp_non_syn = match l.tcp_non_syn {
                Some(NonSynPolicy::Schedule) if !scheduler.is_consistent() => {
                    return self.err(
                        f("tcp_non_syn"),
                        format!(
                            "`schedule` needs `scheduler: maglev` or `source_hash` ({} cannot find a flow's \
                             earlier backend)",
                            scheduler.name()
                        ),
                    );
                }
                Some(p) => p,
                None if scheduler.is_consistent() => NonSynPolicy::Schedule,
                None => NonSynPolicy::Drop,
            };
            if l.syn_proxy.is_some() && protocol == Protocol::Udp {
                return self.err(f("syn_proxy"), "only applies to TCP listeners");
            }
            if l.tcp_non_syn.is_some() && protocol == Protocol::Udp {
                return self.err(f("tcp_non_syn"), "only applies to TCP listeners");
            }
            let mut backends = Vec::with_capacity(l.backends.len());
            let mut seen = HashSet::new();
            for (k, b) in l.backends.iter().enumerate() {
                let bf = |x: &str| format!("listeners[{i}].backends[{k}].{x}");
                let address = self.unicast(&bf("address"), &b.address)?;
                if ports.iter().any(|p| p.address == address) {
                    return self.err(bf("address"), format!("{address} is one of lbd's own port addresses"));
                }
                let in_subnet = ports.iter().any(|p| p.subnet.contains(&address));
                if !in_subnet && !has_gateway {
                    return self.err(
                        bf("address"),
                        format!("no route to {address}: it is in no port's subnet and no port has a gateway"),
                    );
                }
                let bport = self.l4_port(&bf("port"), b.port)?;
                if b.weight > 65535 {
                    return self
                        .err(bf("weight"), format!("{} is out of range (0..=65535; 0 drains the backend)", b.weight));
                }
                if !seen.insert((address, bport)) {
                    return self.err(bf("address"), format!("backend {address}:{bport} is listed twice"));
                }
                backends.push(BackendConfig { address, port: bport, weight: b.weight, drained: b.drained });
            }
            if let SchedulerKind::Maglev { table_size, .. } | SchedulerKind::SourceHash { table_size } = scheduler {
                if backends.len() as u64 > u64::from(table_size) {
                    return self.err(
                        f("maglev_table_size"),
                        format!(
                            "{table_size} is smaller than the {} backends: every backend needs at least one \
                             entry (100 or more per backend keep the shares within about 1 % of the weights)",
                            backends.len()
                        ),
                    );
                }
            }
            if backends.len() > usize::from(u16::MAX) {
                return self.err(f("backends"), "more than 65535 backends");
            }
            total_backends += backends.len();
            let health_check = l.health_check.as_ref().map(|h| self.health_check(i, h)).transpose()?;
            let all_down = l.all_down.unwrap_or(AllDownPolicy::FailOpen);
            let slow_start = l
                .slow_start
                .as_ref()
                .map(|s| self.duration(&f("slow_start"), Some(s), Duration::ZERO, Duration::from_millis(100)))
                .transpose()?;
            if slow_start.is_some_and(|d| d > Duration::from_secs(3600)) {
                return self.err(f("slow_start"), "is too long (maximum 1h)");
            }
            out.push(ListenerConfig {
                name: l.name.clone(),
                vip,
                protocol,
                port,
                scheduler,
                persistence,
                tcp_non_syn,
                syn_proxy: l.syn_proxy.unwrap_or_default(),
                backends,
                health_check,
                all_down,
                slow_start,
                limits: self.limits(i, l.limits.as_ref())?,
                protection: self.protection(i, l.protection.as_ref())?,
                security_group: None,
            });
        }
        // A VIP that is also a backend (of any listener) would send the
        // backend's own replies back into the balancer as requests.
        for (i, l) in out.iter().enumerate() {
            for (j, other) in out.iter().enumerate() {
                if let Some(k) = other.backends.iter().position(|b| b.address == l.vip) {
                    return self.err(
                        format!("listeners[{i}].vip"),
                        format!("{} is also the address of backend listeners[{j}].backends[{k}]", l.vip),
                    );
                }
            }
        }
        if total_backends > MAX_BACKENDS {
            return self.err(
                "listeners",
                format!("{total_backends} backends in all is more than the maximum of {MAX_BACKENDS}"),
            );
        }
        Ok(out)
    }
}

impl Validator<'_> {
    /// A listener's `scheduler` with the keys that refine it
    /// (`maglev_table_size`, `hash`) and its `persistence`; a key that
    /// means nothing for the chosen algorithm is an error, not ignored.
    fn scheduling(&self, i: usize, l: &RawListener) -> VResult<(SchedulerKind, Option<Duration>)> {
        let f = |k: &str| format!("listeners[{i}].{k}");
        let table_size = || -> VResult<u32> {
            let m = l.maglev_table_size.unwrap_or(DEFAULT_MAGLEV_TABLE_SIZE);
            if !(7..=MAX_MAGLEV_TABLE_SIZE).contains(&m) || !is_prime(m) {
                return self.err(
                    f("maglev_table_size"),
                    format!("{m} must be a prime between 7 and {MAX_MAGLEV_TABLE_SIZE} (e.g. 65537, 655373)"),
                );
            }
            Ok(m)
        };
        let algorithm = l.scheduler;
        let kind = match algorithm {
            SchedulerAlgorithm::Maglev => {
                SchedulerKind::Maglev { table_size: table_size()?, hash: l.hash.unwrap_or(HashFields::FiveTuple) }
            }
            SchedulerAlgorithm::SourceHash => {
                if l.hash.is_some() {
                    return self.err(
                        f("hash"),
                        "`source_hash` always hashes the client address; for other fields use \
                         `scheduler: maglev` with `hash`",
                    );
                }
                SchedulerKind::SourceHash { table_size: table_size()? }
            }
            SchedulerAlgorithm::RoundRobin | SchedulerAlgorithm::LeastConnections => {
                let name =
                    if algorithm == SchedulerAlgorithm::RoundRobin { "round_robin" } else { "least_connections" };
                if l.maglev_table_size.is_some() {
                    return self.err(
                        f("maglev_table_size"),
                        format!("only applies to `scheduler: maglev` or `source_hash`, not `{name}`"),
                    );
                }
                if l.hash.is_some() {
                    return self.err(
                        f("hash"),
                        format!(
                            "only applies to `scheduler: maglev` (`{name}` hashes nothing; `persistence` keeps \
                             a client on its backend)"
                        ),
                    );
                }
                if algorithm == SchedulerAlgorithm::RoundRobin {
                    SchedulerKind::RoundRobin
                } else {
                    // Each new flow reads every backend's counters on every
                    // worker: bound the work a SYN flood can make a worker do.
                    if l.backends.len() > MAX_LEAST_CONNECTIONS_BACKENDS {
                        return self.err(
                            f("backends"),
                            format!(
                                "{} backends; `least_connections` takes at most {MAX_LEAST_CONNECTIONS_BACKENDS} \
                                 (it reads every backend's session counts for each new flow): use maglev or \
                                 round_robin",
                                l.backends.len()
                            ),
                        );
                    }
                    SchedulerKind::LeastConnections
                }
            }
        };
        let persistence = match &l.persistence {
            None => None,
            Some(s) => Some(self.duration(&f("persistence"), Some(s), Duration::ZERO, Duration::from_secs(1))?),
        };
        Ok((kind, persistence))
    }
}

pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3u32;
    while u64::from(d) * u64::from(d) <= u64::from(n) {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

#[cfg(test)]
mod tests;
