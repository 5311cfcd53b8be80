//! Bringing `lbd` up and down: EAL, ports, rings, workers, signals, final
//! counters.

use crate::build_info::BuildInfo;
use crate::control::server::{self, ControlServer};
use crate::control::{ControlPlane, PortInfo, Runtime};
use crate::dpdk::{self, Eal, Mempool, Port, PortSetup, RingConsumer, RingMonitor, RingProducer, RxQueue, TxQueue};
use crate::exception::{self, ExceptionThread, KernelInterface};
use crate::log::log_line;
use crate::query;
use crate::worker::{IdleBackoff, PortQueues, RunControl, Worker};
use lbcore::config::raw::RawConfig;
use lbcore::config::{Config, IdleMode, RssMode, MAX_BACKENDS, MAX_LISTENERS};
use lbcore::counters::WorkerCounters;
use lbcore::dataplane::{CoreSettings, Dataplane};
use lbcore::hashkey::HashKeys;
use lbcore::health::HealthTable;
use lbcore::ids::PortIndex;
use lbcore::persistence::PersistenceTable;
use lbcore::snapshot::{IdRegistry, PortFacts, Snapshot, SnapshotCell};
use lbcore::wire::MacAddr;
use lbproto::stats::Report;
use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where the counters go at exit and on SIGUSR1; stdout when `None`.
    pub stats_out: Option<PathBuf>,
}

/// Ring between each pair of workers; a power of two.
const HANDOFF_RING_SIZE: u32 = 16384;
// A worker pauses RX while a ring has less room than one burst per RX
// port: a ring must hold that much, or RX would never resume.
const _: () = assert!((lbcore::config::MAX_PORTS * dpdk::MAX_BURST) < HANDOFF_RING_SIZE as usize);

/// The CPU of each worker, worker 1 first: `lcores.cpus[(i-1) % len]`
/// when the configuration lists CPUs, so more workers than CPUs is
/// allowed. Without a list, the allowed CPUs from the last one down: CPU 0
/// takes most of the kernel's housekeeping and interrupts, and two lbd
/// instances started without a list used to put their workers on the same
/// CPU 0 (measured on the end-to-end bench: 0.58 Gbit/s against 1.32 with
/// the worker on CPU 1).
pub fn worker_cpus(cfg: &Config, allowed: &[u32]) -> Vec<u32> {
    let cpus: Vec<u32> = match &cfg.startup.cpus {
        Some(c) => c.clone(),
        None => allowed.iter().rev().copied().collect(),
    };
    if cpus.is_empty() {
        return Vec::new();
    }
    (0..cfg.startup.workers).map(|i| cpus[i % cpus.len()]).collect()
}

/// The EAL argument vector: program name, the configured arguments, and an
/// `--lcores` map when the configuration does not give one: lcore 0 (the
/// control thread) floats over the allowed CPUs, worker lcore `i` is pinned
/// to [`worker_cpus`]' choice.
pub fn eal_args(cfg: &Config, allowed: &[u32]) -> Vec<String> {
    let mut args = vec!["lbd".to_owned()];
    // DPDK's INFO chatter ("Detected CPU lcores", ...) buries lbd's own
    // lines; warnings and errors still show. `--log-level` in `eal` wins.
    if !cfg.startup.eal.iter().any(|a| a.starts_with("--log-level")) {
        args.push("--log-level=notice".to_owned());
    }
    args.extend(cfg.startup.eal.iter().cloned());
    if !lbcore::config::eal_sets_lcores(&cfg.startup.eal) {
        let all: Vec<String> = allowed.iter().map(u32::to_string).collect();
        let mut map = vec![format!("0@({})", all.join(","))];
        for (i, cpu) in worker_cpus(cfg, allowed).into_iter().enumerate() {
            map.push(format!("{}@{}", i + 1, cpu));
        }
        args.push(format!("--lcores={}", map.join(",")));
    }
    args
}

/// CPUs the kernel keeps other threads off (`isolcpus`), from
/// /sys/devices/system/cpu/isolated ("2-3,6"); empty when unreadable.
fn isolated_cpus() -> Vec<u32> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/isolated").unwrap_or_default();
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.trim().parse::<u32>(), b.trim().parse::<u32>()) {
            cpus.extend(a..=b.min(a.saturating_add(4096)));
        }
    }
    cpus
}

/// Whether idle workers sleep (`lcores.idle`), and why, for the ready
/// line. `auto` busy-polls only where every worker has a CPU of its own
/// that the kernel keeps other threads off (isolcpus): anywhere else a
/// polling worker takes its CPU from whatever else must run there (the
/// control thread, the kernel's network work, the clients and servers of
/// a test bed), which on a shared host costs more than the microseconds a
/// sleeping worker adds to the first packet after a quiet spell.
pub fn idle_decision(cfg: &Config, allowed: &[u32], isolated: &[u32]) -> (bool, &'static str) {
    match cfg.startup.idle {
        IdleMode::Busy => (false, "busy (lcores.idle)"),
        IdleMode::Adaptive => (true, "adaptive (lcores.idle)"),
        IdleMode::Auto if lbcore::config::eal_sets_lcores(&cfg.startup.eal) => {
            (true, "adaptive (auto: the workers' CPUs are set in eal)")
        }
        IdleMode::Auto => {
            let workers = worker_cpus(cfg, allowed);
            let mut distinct = workers.clone();
            distinct.sort_unstable();
            distinct.dedup();
            if distinct.len() < workers.len() {
                (true, "adaptive (auto: workers share CPUs)")
            } else if !workers.iter().all(|c| isolated.contains(c)) {
                (true, "adaptive (auto: the workers' CPUs are not isolated)")
            } else {
                (false, "busy (auto: each worker has an isolated CPU)")
            }
        }
    }
}

/// The size of CPU `cpu`'s level-1 data cache in bytes, from
/// /sys/devices/system/cpu/cpuN/cache ("32K"); `None` when unreadable.
fn l1d_bytes(cpu: u32) -> Option<usize> {
    let dir = format!("/sys/devices/system/cpu/cpu{cpu}/cache");
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let read = |name: &str| std::fs::read_to_string(entry.path().join(name)).unwrap_or_default();
        if read("level").trim() == "1" && read("type").trim() == "Data" {
            return parse_cache_size(&read("size"));
        }
    }
    None
}

/// A cache size as sysfs writes it: "32K", "1024K", "32M", or bytes.
fn parse_cache_size(text: &str) -> Option<usize> {
    let t = text.trim();
    let (digits, unit) = match t.as_bytes().last()? {
        b'K' => (&t[..t.len() - 1], 1 << 10),
        b'M' => (&t[..t.len() - 1], 1 << 20),
        _ => (t, 1),
    };
    digits.parse::<usize>().ok()?.checked_mul(unit)
}

/// Packets per RX burst, and why, for the ready line: `lcores.burst`, or
/// else one sized to the L1 data cache of the first worker's CPU (`l1d`).
/// A burst is worked on in passes that prefetch each packet's index and
/// session lines for the next pass, so all of a burst's lines (about
/// seven per packet with the mbuf's and the PMD's) must stay in L1 until
/// the last pass reads them. Measured with `benches/run.py --burst`
/// (benches/RESULTS.md, issue 13): on an AMD EPYC with a 32 KiB L1d, 32
/// forwarded 15-25 % more than 64 at 1M and 10M sessions (64 packets'
/// lines fill the L1d); a CPU with 48 KiB kept 64 ahead of 32 and lost
/// with 256.
pub fn burst_decision(configured: Option<usize>, l1d: Option<usize>) -> (usize, String) {
    match (configured, l1d) {
        (Some(b), _) => (b, "lcores.burst".to_owned()),
        (None, Some(l1d)) if l1d >= 48 << 10 => (64, format!("auto: L1d {} KiB", l1d >> 10)),
        (None, Some(l1d)) => (32, format!("auto: L1d {} KiB", l1d >> 10)),
        (None, None) => (32, "auto: L1d size unknown".to_owned()),
    }
}

/// How long an RX ring of `descriptors` lasts at `speed_mbps` line rate
/// with the smallest frames (84 bytes on the wire with preamble and gap).
fn ring_time(descriptors: u16, speed_mbps: u32) -> Duration {
    Duration::from_nanos(u64::from(descriptors) * 672_000 / u64::from(speed_mbps.max(1)))
}

/// The longest sleep of an adaptive worker: `lcores.idle_sleep`, cut to
/// what the RX ring of every NIC port holds at line rate, so a burst after
/// a quiet spell cannot overflow it (never below 10 µs). `ports` are
/// (name, device, RX descriptors, link speed in Mb/s: unknown counts as
/// 100 Gb/s). Virtual devices (`net_*`) are fed by the kernel far below
/// their nominal speed and do not cut it. Also says which port did.
fn idle_sleep_bound(idle_sleep: Duration, ports: &[(&str, &str, u16, Option<u32>)]) -> (Duration, Option<String>) {
    let mut bound = idle_sleep;
    let mut why = None;
    for (name, device, desc, speed) in ports {
        if device.starts_with("net_") {
            continue;
        }
        let t = ring_time(*desc, speed.unwrap_or(100_000)).max(lbcore::config::MIN_IDLE_SLEEP);
        if t < bound {
            bound = t;
            why = Some(format!("port {name}'s RX ring of {desc} lasts {}us at line rate", t.as_micros()));
        }
    }
    (bound, why)
}

/// The RSS lbd asks of port `i` with `nrx` RX queues: the client endpoint
/// hashed with lbd's key, buckets pointing at their owner's queue (or, when
/// the owner has no queue on this port, at one that hands over).
fn rss_request(cfg: &Config, keys: &HashKeys, i: usize, nrx: u16) -> Option<dpdk::RssRequest> {
    let fields = match cfg.rss_mode(i) {
        RssMode::Source => dpdk::RssFields::Source,
        RssMode::Destination => dpdk::RssFields::Destination,
        RssMode::Off | RssMode::Auto => return None,
    };
    let buckets = (0..lbcore::rss::BUCKETS)
        .map(|b| (lbcore::rss::bucket_owner(b, cfg.startup.workers) % usize::from(nrx.max(1))) as u16)
        .collect();
    Some(dpdk::RssRequest { fields, key: keys.rss, buckets })
}

/// Where EAL (as root) keeps its runtime files for these arguments.
fn expected_runtime_dir(args: &[String]) -> PathBuf {
    let mut prefix = "rte".to_owned();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--file-prefix" {
            if let Some(v) = it.next() {
                prefix = v.clone();
            }
        } else if let Some(v) = a.strip_prefix("--file-prefix=") {
            prefix = v.to_owned();
        }
    }
    PathBuf::from("/var/run/dpdk").join(prefix)
}

/// Mbufs enough for every descriptor, ring slot and buffer that can hold
/// one at the same time, plus per-lcore caches.
fn mempool_size(cfg: &Config, rxq: &[u16]) -> u32 {
    if let Some(n) = cfg.startup.mempool_mbufs {
        return n;
    }
    let w = cfg.startup.workers as u64;
    let mut n: u64 = 0;
    for (p, q) in cfg.startup.ports.iter().zip(rxq) {
        n += u64::from(*q) * u64::from(p.rx_descriptors) + w * u64::from(p.tx_descriptors);
    }
    n += w * w.saturating_sub(1) * u64::from(HANDOFF_RING_SIZE);
    n += w
        * (cfg.startup.arp_tables.queue_length as u64
            + dpdk::MAX_BURST as u64 * (cfg.startup.ports.len() as u64 + w + 2));
    n += crate::exception::mbufs_needed(cfg);
    // Fragments held for their datagram's first fragment.
    n += w * cfg.startup.fragments.max_held as u64;
    // Client segments the SYN proxy holds for their backend's handshake.
    n += w * cfg.startup.syn_proxy_held as u64;
    n += (w + 1) * u64::from(cfg.startup.mempool_cache) + 4096;
    n.min(u64::from(u32::MAX)) as u32
}

struct Signals {
    stop: Arc<AtomicBool>,
    dump: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
}

impl Signals {
    fn install() -> Result<Signals, String> {
        let s = Signals { stop: Arc::default(), dump: Arc::default(), reload: Arc::default() };
        let reg = |sig, flag: &Arc<AtomicBool>| {
            signal_hook::flag::register(sig, Arc::clone(flag))
                .map(|_| ())
                .map_err(|e| format!("cannot install signal handler: {e}"))
        };
        reg(signal_hook::consts::SIGINT, &s.stop)?;
        reg(signal_hook::consts::SIGTERM, &s.stop)?;
        reg(signal_hook::consts::SIGUSR1, &s.dump)?;
        reg(signal_hook::consts::SIGHUP, &s.reload)?;
        Ok(s)
    }
}

fn write_report(r: &Report, out: &Option<PathBuf>) -> Result<(), String> {
    let json = serde_json::to_string_pretty(r).map_err(|e| format!("cannot encode stats: {e}"))?;
    match out {
        None => {
            println!("{json}");
            Ok(())
        }
        Some(path) => {
            // Write-then-rename: a reader never sees half a document.
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, json + "\n")
                .and_then(|_| std::fs::rename(&tmp, path))
                .map_err(|e| format!("cannot write stats to {}: {e}", path.display()))
        }
    }
}

/// Runs `lbd` with a validated configuration until SIGINT or SIGTERM.
pub fn run(path: &Path, raw: RawConfig, cfg: Config, opts: RunOptions, build: BuildInfo) -> Result<(), String> {
    if !dpdk::is_root() {
        return Err("must run as root (DPDK needs raw access to devices and hugepages)".into());
    }
    if !cfg.startup.eal_restricts_pci() {
        log_line!("lbd: warning: `eal` has neither --no-pci nor an allow-list (-a): DPDK will probe every PCI NIC it can bind");
    }
    for w in lbcore::config::af_packet_ring_warnings(&cfg.startup.eal) {
        log_line!("lbd: warning: {w}");
    }
    let signals = Signals::install()?;
    // The control socket first: a second lbd on the same socket stops here,
    // before it touches DPDK.
    let listener = server::bind(&cfg.startup.control_socket, cfg.startup.control_group.as_deref())?;
    let metrics = match cfg.startup.metrics_listen {
        Some(a) => Some(crate::metrics::bind(a).inspect_err(|_| {
            let _ = std::fs::remove_file(&cfg.startup.control_socket);
        })?),
        None => None,
    };
    let eal = start_eal(&cfg).inspect_err(|_| {
        let _ = std::fs::remove_file(&cfg.startup.control_socket);
    })?;
    let runtime_dir = eal.runtime_dir();
    // Every DPDK object `serve` makes holds the EAL; they are all gone when
    // it returns, so the cleanup runs here, on success and on error alike.
    let result = serve(&eal, path, raw, &cfg, &signals, build, listener, metrics, &opts.stats_out);
    if !eal.cleanup() {
        log_line!("lbd: warning: DPDK objects outlived the daemon; EAL cleanup deferred");
    } else if runtime_dir.starts_with("/var/run/dpdk") || runtime_dir.starts_with("/run/dpdk") {
        let _ = std::fs::remove_dir_all(&runtime_dir);
    }
    let _ = std::fs::remove_file(&cfg.startup.control_socket);
    match result {
        Ok(report) => write_report(&report, &opts.stats_out),
        Err(e) => Err(e),
    }
}

/// Start-up phase 1: the EAL, on this thread (the main lcore).
fn start_eal(cfg: &Config) -> Result<Eal, String> {
    let allowed = dpdk::allowed_cpus();
    let args = eal_args(cfg, &allowed);
    // Before EAL: its own failure for want of hugepages does not say what
    // to do.
    crate::hugepages::check(&args, &crate::hugepages::HostMemory::read())?;
    // Standard error is the journal (systemd sets JOURNAL_STREAM): EAL's
    // copy of each line to syslog would put it there twice.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        Eal::log_to_stderr_only().map_err(|e| e.to_string())?;
    }
    if lbcore::config::eal_has_af_xdp(&cfg.startup.eal) {
        let limit = dpdk::raise_memlock_limit();
        if limit < 64 << 20 {
            log_line!(
                "lbd: warning: the locked-memory limit is {} KiB and could not be raised; net_af_xdp may fail on kernels before 5.11 (raise `ulimit -l`, LimitMEMLOCK= in systemd, or --ulimit memlock=-1 in docker)",
                limit >> 10
            );
        }
    }
    let expected_dir = expected_runtime_dir(&args);
    let existed = expected_dir.exists();
    Eal::init(&args).map_err(|e| {
        // EAL creates its runtime directory before it can fail; remove it
        // when this attempt created it (never one a live process may own).
        if !existed {
            let _ = std::fs::remove_dir_all(&expected_dir);
        }
        format!(
            "DPDK EAL initialisation failed: {e} (see the EAL messages above: without hugepages add --no-huge; every --vdev must be openable{})",
            if lbcore::config::eal_has_af_xdp(&cfg.startup.eal) {
                "; net_af_xdp needs root or CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF and CAP_SYS_ADMIN, an interface that exists, and queues start_queue..start_queue+queue_count on it"
            } else {
                ""
            }
        )
    })
}

/// The worker lcores the configuration asks for.
fn worker_lcores(eal: &Eal, cfg: &Config) -> Result<Vec<u32>, String> {
    let lcores = eal.worker_lcores();
    if lcores.len() < cfg.startup.workers {
        return Err(format!(
            "{} workers need {} worker lcores, but the EAL has {} (check -l/--lcores in `eal`)",
            cfg.startup.workers,
            cfg.startup.workers,
            lcores.len()
        ));
    }
    Ok(lcores[..cfg.startup.workers].to_vec())
}

/// A configured port's device, found before anything is allocated.
struct PortPlan {
    id: u16,
    rx_queues: u16,
}

/// Start-up phase 2: find the devices and decide queue counts.
fn probe_ports(eal: &Eal, cfg: &Config) -> Result<Vec<PortPlan>, String> {
    let mut plans = Vec::with_capacity(cfg.startup.ports.len());
    for p in &cfg.startup.ports {
        let id = Port::find(eal, &p.device).ok_or_else(|| {
            format!(
                "port `{}`: no DPDK device named `{}` (is it created by a --vdev in `eal`, or allowed with -a?)",
                p.name, p.device
            )
        })?;
        let info = Port::info(eal, id).map_err(|e| format!("port `{}`: {e}", p.name))?;
        if usize::from(info.max_tx_queues) < cfg.startup.workers {
            return Err(format!(
                "port `{}` ({}, driver {}) has {} TX queue(s) but {} workers need one each (net_af_packet: qpairs=N; net_pcap: one tx_pcap per queue)",
                p.name, p.device, info.driver, info.max_tx_queues, cfg.startup.workers
            ));
        }
        plans.push(PortPlan { id, rx_queues: info.max_rx_queues.min(cfg.startup.workers as u16).max(1) });
    }
    Ok(plans)
}

/// Started ports, their addresses, and every queue handle (each port's
/// RX and TX queues, in queue order).
struct StartedPorts {
    ports: Vec<Port>,
    macs: Vec<MacAddr>,
    queues: Vec<(Vec<RxQueue>, Vec<TxQueue>)>,
}

/// Start-up phase 4: configure and start every port on `pool`.
fn start_ports(
    eal: &Eal,
    cfg: &Config,
    keys: &HashKeys,
    plans: &[PortPlan],
    pool: &Arc<Mempool>,
) -> Result<StartedPorts, String> {
    let mut started = StartedPorts {
        ports: Vec::with_capacity(plans.len()),
        macs: Vec::with_capacity(plans.len()),
        queues: Vec::with_capacity(plans.len()),
    };
    for (i, (p, plan)) in cfg.startup.ports.iter().zip(plans).enumerate() {
        let setup = PortSetup {
            rx_queues: plan.rx_queues,
            tx_queues: cfg.startup.workers as u16,
            rx_descriptors: p.rx_descriptors,
            tx_descriptors: p.tx_descriptors,
            rss: rss_request(cfg, keys, i, plan.rx_queues),
            promiscuous: p.promiscuous,
        };
        let (port, rx, tx) =
            Port::start(eal, plan.id, &setup, pool).map_err(|e| format!("port `{}` ({}): {e}", p.name, p.device))?;
        let mac = match p.mac {
            None => MacAddr(port.mac()),
            Some(m) => {
                if let Err(e) = port.set_mac(m.0) {
                    // Some PMDs (net_pcap, net_ring) have a fixed address:
                    // use the configured one in software and let every frame
                    // in, filtering on it in the dataplane.
                    log_line!("lbd: port `{}`: {e}; using {m} in software (promiscuous)", p.name);
                    let _ = port.enable_promiscuous();
                }
                m
            }
        };
        started.macs.push(mac);
        started.ports.push(port);
        started.queues.push((rx, tx));
    }
    Ok(started)
}

/// Hand-off rings: `to[i][j]` sends from worker i to worker j (`None` on
/// the diagonal); `from[j]` are the rings into worker j.
struct HandoffRings {
    to: Vec<Vec<Option<RingProducer>>>,
    from: Vec<Vec<RingConsumer>>,
}

/// Start-up phase 5: the rings between every pair of workers.
fn handoff_rings(eal: &Eal, pool: &Arc<Mempool>, n: usize) -> Result<HandoffRings, String> {
    let mut to: Vec<Vec<Option<RingProducer>>> = (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    let mut from: Vec<Vec<RingConsumer>> = (0..n).map(|_| Vec::new()).collect();
    for (i, row) in to.iter_mut().enumerate() {
        for (j, slot) in row.iter_mut().enumerate() {
            if i == j {
                continue;
            }
            let (p, c) = dpdk::spsc_ring(eal, pool, &format!("lbd_ho_{i}_{j}"), HANDOFF_RING_SIZE, -1)
                .map_err(|e| e.to_string())?;
            *slot = Some(p);
            from[j].push(c);
        }
    }
    Ok(HandoffRings { to, from })
}

/// What every worker shares, for [`build_workers`].
struct Shared<'a> {
    cfg: &'a Config,
    pool: &'a Arc<Mempool>,
    counters: &'a [Arc<WorkerCounters>],
    /// What the workers' cores share: every worker's counters (least
    /// connections) and the persistence table.
    dataplanes: lbcore::dataplane::Shared,
    snapshots: &'a Arc<SnapshotCell>,
    control: &'a Arc<RunControl>,
    tsc_hz: u64,
    start_tsc: u64,
    hash_keys: HashKeys,
    /// Each worker's copy; `None`: busy polling.
    idle: Option<IdleBackoff>,
    /// Packets per RX burst ([`burst_decision`]).
    burst: usize,
}

/// Start-up phase 6: one [`Worker`] per lcore, owning its queues (queue i
/// of each port to worker i) and its ring ends, and a query channel to
/// each.
fn build_workers(
    sh: &Shared<'_>,
    queues: Vec<(Vec<RxQueue>, Vec<TxQueue>)>,
    rings: HandoffRings,
    kernel_rings: Option<exception::WorkerRings>,
) -> (Vec<Worker>, Vec<crossbeam_channel::Sender<query::WorkerQuery>>) {
    let n = sh.cfg.startup.workers;
    let mut per_worker: Vec<Vec<PortQueues>> = (0..n).map(|_| Vec::new()).collect();
    for (rx, tx) in queues {
        let mut rx = rx.into_iter().map(Some).collect::<Vec<_>>();
        rx.resize_with(n, || None);
        for (w, (r, t)) in rx.into_iter().zip(tx).enumerate() {
            per_worker[w].push(PortQueues { rx: r, tx: t });
        }
    }
    let (mut to_kernel, mut from_kernel) = match kernel_rings {
        Some(r) => (r.to_kernel.into_iter().map(Some).collect(), Some(r.from_kernel)),
        None => (Vec::new(), None),
    };
    to_kernel.resize_with(n, || None);
    let mut query_senders = Vec::with_capacity(n);
    let mut workers = Vec::with_capacity(n);
    for (w, (((ports_q, to), from), to_kernel)) in
        per_worker.into_iter().zip(rings.to).zip(rings.from).zip(to_kernel).enumerate()
    {
        let settings = CoreSettings {
            worker: w,
            workers: n,
            session_capacity: sh.cfg.startup.session_capacity,
            neighbor_capacity: sh.cfg.startup.arp_tables.cache_size,
            pending_capacity: sh.cfg.startup.arp_tables.queue_length,
            to_kernel_rate: (sh.cfg.startup.exception.to_kernel_rate / n as u32).max(1),
            echo_reply_rate: (sh.cfg.startup.icmp_echo_reply_rate / n as u32).max(1),
            fragments: sh.cfg.startup.fragments,
            source_entries: sh.cfg.startup.source_entries,
            icmp_error_rate: (sh.cfg.startup.icmp_error_rate / n as u32).max(1),
            icmp_forward_rate: (sh.cfg.startup.icmp_forward_rate / n as u32).max(1),
            hash_keys: sh.hash_keys,
            syn_proxy_held: sh.cfg.startup.syn_proxy_held,
        };
        let (qtx, inbox) = query::channel();
        query_senders.push(qtx);
        workers.push(Worker {
            index: w,
            dataplane: Dataplane::with_shared(
                settings,
                sh.snapshots.load(),
                Arc::clone(&sh.counters[w]),
                sh.dataplanes.clone(),
            ),
            ports: ports_q,
            to,
            from,
            to_kernel,
            // Worker 0 sends what the kernel sends out.
            from_kernel: from_kernel.take(),
            queries: inbox,
            pool: Arc::clone(sh.pool),
            counters: Arc::clone(&sh.counters[w]),
            snapshots: Arc::clone(sh.snapshots),
            control: Arc::clone(sh.control),
            burst: sh.burst,
            idle: sh.idle.clone(),
            tsc_hz: sh.tsc_hz,
            start_tsc: sh.start_tsc,
        });
    }
    (workers, query_senders)
}

/// Start-up phase 7: each worker on its lcore. On an error the workers
/// already launched are stopped and joined before this returns.
fn launch_workers<'e>(
    eal: &'e Eal,
    control: &Arc<RunControl>,
    workers: Vec<Worker>,
    lcores: &[u32],
) -> Result<LaunchedLcores<'e>, String> {
    let mut launched = LaunchedLcores { eal, control: Arc::clone(control), lcores: Vec::with_capacity(lcores.len()) };
    for (w, lcore) in workers.into_iter().zip(lcores) {
        eal.launch(*lcore, Box::new(move || w.run())).map_err(|e| e.to_string())?;
        launched.lcores.push(*lcore);
    }
    Ok(launched)
}

/// The threads that answer outside requests: control socket and metrics.
struct Services {
    metrics: Option<crate::metrics::MetricsServer>,
    control: ControlServer,
    health: crate::control::health::HealthApplier,
}

impl Services {
    /// Start-up phase 8. The health threads and the metrics server before
    /// the control server: dropped on an early return, they stop and join
    /// their threads (the control server has no such drop).
    fn start(
        rt: &Arc<Runtime>,
        cfg: &Config,
        listener: std::os::unix::net::UnixListener,
        metrics: Option<crate::metrics::Bound>,
    ) -> Result<Services, String> {
        let health = crate::control::health::HealthShared::start(rt, cfg)?;
        let metrics = metrics.map(|b| b.start(Arc::clone(rt), cfg.startup.metrics_access.clone())).transpose()?;
        let control = ControlServer::spawn(listener, cfg.startup.control_socket.clone(), Arc::clone(rt))
            .map_err(|e| format!("cannot start the control thread: {e}"))?;
        Ok(Services { metrics, control, health })
    }

    /// Nobody may ask or scrape while the data plane goes away.
    fn shutdown(self) {
        self.health.shutdown();
        self.control.shutdown();
        if let Some(m) = self.metrics {
            m.shutdown();
        }
    }
}

/// Brings everything up in phases, each returning the owner of what it
/// made, then runs until a stop signal. The owners are locals declared in
/// start-up order, so an error at any phase drops what exists in reverse:
/// services, the runtime, the launched lcores (stopped and joined, which
/// drops the queues and ring ends the workers own), the ports (closed once
/// their queues are gone), the pool. Each DPDK object also holds what it
/// depends on (queues their port, ports and rings the pool, all of them the
/// EAL), so no drop order can free anything still in use: the order above
/// is needed only so that workers stop before anything waits on them.
#[allow(clippy::too_many_arguments)]
fn serve(
    eal: &Eal,
    path: &Path,
    raw: RawConfig,
    cfg: &Config,
    signals: &Signals,
    build: BuildInfo,
    listener: std::os::unix::net::UnixListener,
    metrics: Option<crate::metrics::Bound>,
    stats_out: &Option<PathBuf>,
) -> Result<Report, String> {
    let lcores = worker_lcores(eal, cfg)?;
    let tsc_hz = eal.tsc_hz();
    let plans = probe_ports(eal, cfg)?;
    // Phase 3: the mbuf pool, sized for the queues just decided.
    let rxq: Vec<u16> = plans.iter().map(|p| p.rx_queues).collect();
    let pool = Mempool::new(eal, "lbd_mbufs", mempool_size(cfg, &rxq), cfg.startup.mempool_cache, -1)
        .map_err(|e| e.to_string())?;
    // Once per start: the workers and the NICs' RSS must share one key.
    let hash_keys =
        cfg.startup.hash_key.resolve().map_err(|e| format!("sessions.hash_key: cannot read a random key: {e}"))?;
    let StartedPorts { ports, macs, queues } = start_ports(eal, cfg, &hash_keys, &plans, &pool)?;
    let rings = handoff_rings(eal, &pool, cfg.startup.workers)?;
    // The exception path: kernel interfaces (after the ports, whose MACs
    // they take), their rings, and the thread between them.
    let (kernel_ifaces, kernel_queues) = exception::create_interfaces(eal, cfg, &macs, &pool)?;
    let exception_counters = Arc::new(WorkerCounters::new(cfg.startup.ports.len(), 0, 0));
    let (exception_thread, kernel_rings) = if kernel_ifaces.is_empty() {
        (None, None)
    } else {
        let (thread_side, worker_side) =
            exception::rings(eal, &pool, cfg.startup.workers, cfg.startup.exception.queue_length)?;
        let t = ExceptionThread::spawn(
            kernel_queues,
            thread_side,
            Arc::clone(&exception_counters),
            cfg.startup.exception.from_kernel_rate,
            cfg.startup.ports.len(),
        )?;
        (Some(t), Some(worker_side))
    };
    let kernel = KernelSide { thread: exception_thread, ifaces: kernel_ifaces };
    let ring_monitors: Vec<Vec<RingMonitor>> =
        rings.from.iter().map(|cs| cs.iter().map(|c| c.monitor()).collect()).collect();

    let mut registry = IdRegistry::default();
    registry.assign(&cfg.forwarding, &|_| true)?;
    let port_facts: Vec<PortFacts> = macs
        .iter()
        .enumerate()
        .map(|(i, mac)| PortFacts { mac: *mac, kernel: kernel.ifaces.iter().any(|k| k.port == PortIndex(i as u16)) })
        .collect();
    let snapshots = Arc::new(SnapshotCell::new(Snapshot::build_with_health(
        cfg,
        &port_facts,
        &registry,
        1,
        &HealthTable::default(),
        Duration::ZERO,
        None,
    )));
    let counters: Vec<Arc<WorkerCounters>> = (0..cfg.startup.workers)
        .map(|_| Arc::new(WorkerCounters::new(cfg.startup.ports.len(), MAX_LISTENERS, MAX_BACKENDS)))
        .collect();
    let control = Arc::new(RunControl::default());
    let allowed = dpdk::allowed_cpus();
    let (idle_sleeps, idle_reason) = idle_decision(cfg, &allowed, &isolated_cpus());
    let (burst, burst_reason) =
        burst_decision(cfg.startup.burst, worker_cpus(cfg, &allowed).first().and_then(|&c| l1d_bytes(c)));
    let port_rings: Vec<(&str, &str, u16, Option<u32>)> = cfg
        .startup
        .ports
        .iter()
        .zip(&ports)
        .map(|(c, p)| (c.name.as_str(), c.device.as_str(), p.rx_descriptors, p.link_speed_mbps()))
        .collect();
    let (longest_sleep, cut) = idle_sleep_bound(cfg.startup.idle_sleep, &port_rings);
    let idle_reason = match (idle_sleeps, cut) {
        (false, _) => idle_reason.to_owned(),
        (true, None) => format!("{idle_reason}, longest sleep {}us", longest_sleep.as_micros()),
        (true, Some(why)) => format!("{idle_reason}, longest sleep {}us ({why})", longest_sleep.as_micros()),
    };
    let dataplanes = lbcore::dataplane::Shared {
        counters: counters.iter().cloned().collect(),
        persistence: Arc::new(PersistenceTable::with_placement::<dpdk::DpdkPlacement>(cfg.startup.persistence_entries)),
    };
    let shared = Shared {
        cfg,
        pool: &pool,
        counters: &counters,
        dataplanes,
        snapshots: &snapshots,
        control: &control,
        tsc_hz,
        start_tsc: dpdk::tsc(),
        hash_keys,
        idle: idle_sleeps.then(|| IdleBackoff::new(longest_sleep)),
        burst,
    };
    let (workers, query_senders) = build_workers(&shared, queues, rings, kernel_rings);
    // From here on an early return drops `launched`, which stops and joins
    // the workers (and with them the queues they own).
    let launched = launch_workers(eal, &control, workers, &lcores)?;

    let port_infos: Vec<PortInfo> = cfg
        .startup
        .ports
        .iter()
        .zip(&ports)
        .enumerate()
        .map(|(i, (p, port))| PortInfo {
            monitor: port.monitor(),
            name: p.name.clone(),
            device: p.device.clone(),
            driver: port.driver.clone(),
            rx_queues: port.rx_queues,
            rss: port.rss.clone(),
            exception_interface: kernel.ifaces.iter().find(|k| k.port == PortIndex(i as u16)).map(|k| k.name.clone()),
        })
        .collect();
    let rt = Arc::new(Runtime {
        build,
        tsc_hz,
        dpdk_version: dpdk::runtime_version(),
        started: Instant::now(),
        lcores: lcores.clone(),
        counters,
        exception: exception_counters,
        snapshots,
        ports: port_infos,
        pool: Arc::clone(&pool),
        rings: ring_monitors,
        queries: query_senders,
        plane: Mutex::new(ControlPlane::new(path.to_owned(), raw, cfg.clone(), registry, port_facts)),
        ops: Mutex::default(),
        propagation: Mutex::new(lbcore::latency::new_histogram()),
        seq: AtomicU64::new(0),
        health: crate::control::health::HealthShared::default(),
    });
    let services = Services::start(&rt, cfg, listener, metrics)?;

    let workers_how = format!("{idle_reason}, burst {burst} ({burst_reason})");
    announce(cfg, &lcores, &workers_how, &macs, &ports, &kernel.ifaces, &services);
    wait_for_stop(signals, &rt, stats_out);
    log_line!("lbd: stopping");
    services.shutdown();
    Ok(shutdown(rt, launched, kernel, ports))
}

/// The exception path's thread and the kernel interfaces it serves.
/// Dropping it (an early return during start-up) ends the thread first,
/// which drops the interfaces' queues, then closes the interfaces.
struct KernelSide {
    thread: Option<ExceptionThread>,
    ifaces: Vec<KernelInterface>,
}

impl KernelSide {
    /// Ends the exception thread: it frees (and counts) what the workers
    /// had queued for the kernel.
    fn stop_thread(&mut self) {
        if let Some(t) = self.thread.take() {
            t.stop();
        }
    }

    fn stop(mut self) {
        self.stop_thread();
        for k in &mut self.ifaces {
            if let Err(e) = k.dev.stop() {
                log_line!("lbd: exception interface {}: {e}", k.name);
            }
        }
    }
}

impl Drop for KernelSide {
    fn drop(&mut self) {
        self.thread.take();
    }
}

/// The "ready" line.
fn announce(
    cfg: &Config,
    lcores: &[u32],
    idle: &str,
    macs: &[MacAddr],
    ports: &[Port],
    kernel: &[KernelInterface],
    services: &Services,
) {
    let port_list: Vec<String> = cfg
        .startup
        .ports
        .iter()
        .zip(macs)
        .zip(ports)
        .enumerate()
        .map(|(i, ((p, m), port))| {
            let kernel = kernel.iter().find(|k| k.port == PortIndex(i as u16)).map_or("off", |k| k.name.as_str());
            format!(
                "{}={} {} {}/{} rxq={} rss={} kernel={}",
                p.name,
                p.device,
                m,
                p.address,
                p.subnet.prefix_len(),
                port.rx_queues,
                port.rss.mode,
                kernel
            )
        })
        .collect();
    let metrics_at =
        services.metrics.as_ref().map_or_else(|| "off".to_owned(), |m| format!("http://{}/metrics", m.addr));
    log_line!(
        "lbd: ready: {} worker(s) on lcores {:?}, idle {}, {} listener(s), control {}, metrics {}, ports: {}",
        cfg.startup.workers,
        lcores,
        idle,
        cfg.forwarding.listeners.len(),
        cfg.startup.control_socket.display(),
        metrics_at,
        port_list.join(", ")
    );
}

/// Runs until SIGINT/SIGTERM, answering SIGUSR1 (counters) and SIGHUP
/// (reload) meanwhile.
fn wait_for_stop(signals: &Signals, rt: &Runtime, stats_out: &Option<PathBuf>) {
    let mut protection = ProtectionLog::default();
    while !signals.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
        protection.poll(rt);
        if signals.dump.swap(false, Ordering::Relaxed) {
            if let Err(e) = write_report(&rt.report(false), stats_out) {
                log_line!("lbd: {e}");
            }
        }
        if signals.reload.swap(false, Ordering::Relaxed) {
            let r = rt.reload_file();
            rt.record_op("config_reload", r.is_ok());
            match r {
                Ok(c) => log_line!(
                    "lbd: SIGHUP: {} (generation {}, all workers in {} us)",
                    c.summary,
                    c.generation,
                    c.propagation_us
                ),
                Err(e) => log_line!("lbd: SIGHUP: reload refused, running configuration unchanged: {e}"),
            }
        }
    }
}

/// Logs each change of a guarded listener's or protected VIP's state
/// (normal, scrubbed, blackholed: the highest of any worker), as seen in
/// the workers' counters every half second, with the offered rates that
/// caused it: the operator's record of when a VIP was cut off and why.
/// A state that comes and goes between two looks is not logged; the
/// transition counters (`lbctl limits`, Prometheus) count every one.
#[derive(Default)]
struct ProtectionLog {
    last: std::collections::HashMap<String, lbcore::admission::ProtectionState>,
    checked: Option<std::time::Instant>,
}

impl ProtectionLog {
    fn poll(&mut self, rt: &Runtime) {
        if self.checked.is_some_and(|t| t.elapsed() < Duration::from_millis(500)) {
            return;
        }
        self.checked = Some(std::time::Instant::now());
        let mut seen = std::collections::HashMap::new();
        for (what, state, [pps, bps, cps]) in rt.protection_states() {
            let was = self.last.get(&what).copied().unwrap_or(lbcore::admission::ProtectionState::Normal);
            if was != state {
                log_line!(
                    "lbd: protection: {what}: {} -> {} (offered {pps} packets/s, {bps} bit/s, {cps} new connections/s)",
                    was.name(),
                    state.name()
                );
            }
            seen.insert(what, state);
        }
        self.last = seen;
    }
}

/// Worker lcores that were launched. Dropping this (an early return during
/// start-up) tells them to exit at once and waits for each; the orderly
/// way out is [`LaunchedLcores::stop`].
struct LaunchedLcores<'a> {
    eal: &'a Eal,
    control: Arc<RunControl>,
    lcores: Vec<u32>,
}

impl LaunchedLcores<'_> {
    /// Stops RX everywhere first, so no worker hands packets to one that
    /// already left (nor anything more to the kernel); then, once `between`
    /// has run, lets every worker drain its rings and exit.
    fn stop(mut self, between: impl FnOnce()) {
        self.control.quiesce();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.control.quiesced() < self.lcores.len() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        between();
        self.exit_and_wait();
    }

    fn exit_and_wait(&mut self) {
        self.control.exit();
        for l in self.lcores.drain(..) {
            self.eal.wait(l);
        }
    }
}

impl Drop for LaunchedLcores<'_> {
    fn drop(&mut self) {
        if !self.lcores.is_empty() {
            log_line!("lbd: start-up failed: stopping the {} launched worker(s)", self.lcores.len());
            self.exit_and_wait();
        }
    }
}

fn shutdown(rt: Arc<Runtime>, lcores: LaunchedLcores<'_>, mut kernel: KernelSide, mut ports: Vec<Port>) -> Report {
    // Quiesced workers pass nothing more up; the exception thread then
    // ends, counting what they had queued for the kernel; the workers
    // return (worker 0 counting what the kernel had queued for the wire),
    // dropping the queues they own; the kernel interfaces stop.
    lcores.stop(|| kernel.stop_thread());
    kernel.stop();
    for p in &mut ports {
        if let Err(e) = p.stop() {
            log_line!("lbd: {e}");
        }
    }
    let mut report = rt.report(true);
    // Ports close (flushing net_pcap's files, returning descriptor mbufs to
    // the pool) when the last of port and queues goes: here.
    drop(ports);
    // With the ports closed nothing may hold an mbuf any more: what is still
    // out is a leak, and the report says so.
    report.mempool_in_use = rt.pool.in_use();
    report.mempool_available = rt.pool.available();
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A configuration on one net_null port with `eal_extra` after
    /// `--no-pci` and `lcores` as the inside of its mapping.
    fn config(eal_extra: &str, lcores: &str) -> Config {
        let y = format!(
            "eal: [\"--no-pci\"{eal_extra}]\nlcores: {{{lcores}}}\nports:\n  - {{name: ext, device: net_null0, address: 10.0.0.1/24}}\n"
        );
        lbcore::config::parse(&y, Path::new("t.yaml")).unwrap()
    }

    fn cfg(extra: &str) -> Config {
        config(extra, "workers: 3")
    }

    #[test]
    fn lcore_map_pins_workers_round_robin() {
        let a = eal_args(&cfg(""), &[0, 1]);
        // No lcores.cpus: from the last allowed CPU down.
        assert_eq!(a.last().unwrap(), "--lcores=0@(0,1),1@1,2@0,3@1");
        let a = eal_args(&cfg(""), &[0, 1, 2, 3]);
        assert_eq!(a.last().unwrap(), "--lcores=0@(0,1,2,3),1@3,2@2,3@1");
        let listed = lcores_cfg("workers: 3, cpus: [0, 1]");
        assert_eq!(eal_args(&listed, &[0, 1, 2, 3]).last().unwrap(), "--lcores=0@(0,1,2,3),1@0,2@1,3@0");
        assert_eq!(a[0], "lbd");
        assert_eq!(a[1], "--log-level=notice");
        let a = eal_args(&cfg(", \"-l\", \"0-3\""), &[0, 1]);
        assert!(!a.iter().any(|x| x.starts_with("--lcores")));
    }

    fn lcores_cfg(lcores: &str) -> Config {
        config("", lcores)
    }

    #[test]
    fn burst_follows_the_config_else_the_l1d() {
        assert_eq!(burst_decision(Some(128), Some(32 << 10)), (128, "lcores.burst".to_owned()));
        assert_eq!(burst_decision(None, Some(32 << 10)), (32, "auto: L1d 32 KiB".to_owned()));
        assert_eq!(burst_decision(None, Some(48 << 10)).0, 64);
        assert_eq!(burst_decision(None, Some(64 << 10)).0, 64);
        assert_eq!(burst_decision(None, None).0, 32);
        assert_eq!(parse_cache_size("32K\n"), Some(32 << 10));
        assert_eq!(parse_cache_size("1M"), Some(1 << 20));
        assert_eq!(parse_cache_size("49152"), Some(49152));
        assert_eq!(parse_cache_size(""), None);
        assert_eq!(parse_cache_size("K"), None);
        assert_eq!(parse_cache_size("x9K"), None);
        assert_eq!(parse_cache_size("99999999999999999999M"), None);
    }

    #[test]
    fn auto_idle_busy_polls_only_on_isolated_cpus_of_their_own() {
        let sleeps =
            |lcores: &str, allowed: &[u32], isolated: &[u32]| idle_decision(&lcores_cfg(lcores), allowed, isolated).0;
        // Shared, not isolated: this machine's case.
        assert!(sleeps("workers: 1", &[0, 1], &[]));
        assert!(sleeps("workers: 3", &[2, 3], &[2, 3]), "3 workers on 2 CPUs share them");
        assert!(sleeps("workers: 2, cpus: [2, 2]", &[0, 1, 2, 3], &[2, 3]));
        assert!(sleeps("workers: 2, cpus: [2, 3]", &[0, 1, 2, 3], &[3]), "CPU 2 is not isolated");
        assert!(!sleeps("workers: 2, cpus: [2, 3]", &[0, 1, 2, 3], &[2, 3]));
        assert!(!sleeps("workers: 2", &[2, 3], &[2, 3]));
        // Explicit modes win.
        assert!(!sleeps("workers: 1, idle: busy", &[0], &[]));
        assert!(sleeps("workers: 1, idle: adaptive", &[0, 1], &[0, 1]));
        assert!(!sleeps("workers: 1, idle_sleep: 0us", &[0], &[]), "idle_sleep 0 was busy polling");
    }

    #[test]
    fn the_longest_sleep_fits_every_nic_rx_ring_at_line_rate() {
        let us = Duration::from_micros;
        // 1024 descriptors at 10 Gb/s: 14.88 Mpps fill them in 68.8 us.
        assert_eq!(ring_time(1024, 10_000).as_nanos(), 68_812);
        let (b, why) = idle_sleep_bound(us(200), &[("ext", "0000:03:00.0", 1024, Some(10_000))]);
        assert_eq!(b, Duration::from_nanos(68_812));
        assert!(why.unwrap().contains("port ext's RX ring of 1024"));
        // A slow link or a large ring leaves the configured sleep.
        assert_eq!(idle_sleep_bound(us(200), &[("ext", "0000:03:00.0", 4096, Some(1_000))]), (us(200), None));
        // Unknown speed counts as 100 Gb/s; never below 10 us.
        assert_eq!(idle_sleep_bound(us(200), &[("ext", "0000:03:00.0", 512, None)]).0, us(10));
        // Virtual devices do not cut it.
        assert_eq!(idle_sleep_bound(us(200), &[("ext", "net_af_packet0", 512, Some(10_000))]), (us(200), None));
    }
}
