//! Bringing `lbd` up and down: EAL, ports, rings, workers, signals, final
//! counters.

use crate::build_info::BuildInfo;
use crate::config::raw::RawConfig;
use crate::config::{Config, RssMode, MAX_BACKENDS, MAX_LISTENERS};
use crate::control::server::{self, ControlServer};
use crate::control::{ControlPlane, PortInfo, Runtime};
use crate::counters::WorkerCounters;
use crate::dataplane::{CoreSettings, Dataplane};
use crate::dpdk::{self, Eal, Mempool, Port, PortSetup, RingConsumer, RingProducer};
use crate::query;
use crate::snapshot::{IdRegistry, Snapshot, SnapshotCell};
use crate::wire::MacAddr;
use crate::worker::{PortQueues, RunControl, Worker};
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

fn has_lcore_arg(eal: &[String]) -> bool {
    eal.iter().any(|a| a == "-l" || a == "-c" || a.starts_with("--lcores") || (a.starts_with("-l") && a.len() > 2))
}

/// The EAL argument vector: program name, the configured arguments, and an
/// `--lcores` map when the configuration does not give one: lcore 0 (the
/// control thread) floats over the allowed CPUs, worker lcore `i` is pinned
/// to CPU `cpus[(i-1) % len]`, so more workers than CPUs is allowed.
pub fn eal_args(cfg: &Config, allowed: &[u32]) -> Vec<String> {
    let mut args = vec!["lbd".to_owned()];
    // DPDK's INFO chatter ("Detected CPU lcores", ...) buries lbd's own
    // lines; warnings and errors still show. `--log-level` in `eal` wins.
    if !cfg.startup.eal.iter().any(|a| a.starts_with("--log-level")) {
        args.push("--log-level=notice".to_owned());
    }
    args.extend(cfg.startup.eal.iter().cloned());
    if !has_lcore_arg(&cfg.startup.eal) {
        let cpus: Vec<u32> = cfg.startup.cpus.clone().unwrap_or_else(|| allowed.to_vec());
        let all: Vec<String> = allowed.iter().map(u32::to_string).collect();
        let mut map = vec![format!("0@({})", all.join(","))];
        for i in 1..=cfg.startup.workers {
            map.push(format!("{}@{}", i, cpus[(i - 1) % cpus.len()]));
        }
        args.push(format!("--lcores={}", map.join(",")));
    }
    args
}

/// The RSS lbd asks of port `i` with `nrx` RX queues: the client endpoint
/// hashed with lbd's key, buckets pointing at their owner's queue (or, when
/// the owner has no queue on this port, at one that hands over).
fn rss_request(cfg: &Config, i: usize, nrx: u16) -> Option<dpdk::RssRequest> {
    let fields = match cfg.rss_mode(i) {
        RssMode::Source => dpdk::RssFields::Source,
        RssMode::Destination => dpdk::RssFields::Destination,
        RssMode::Off | RssMode::Auto => return None,
    };
    let buckets = (0..crate::rss::BUCKETS)
        .map(|b| (crate::rss::bucket_owner(b, cfg.startup.workers) % usize::from(nrx.max(1))) as u16)
        .collect();
    Some(dpdk::RssRequest { fields, key: crate::rss::RSS_KEY, buckets })
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
        eprintln!("lbd: warning: `eal` has neither --no-pci nor an allow-list (-a): DPDK will probe every PCI NIC it can bind");
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
    let allowed = dpdk::allowed_cpus();
    let args = eal_args(&cfg, &allowed);
    let expected_dir = expected_runtime_dir(&args);
    let existed = expected_dir.exists();
    let eal = match Eal::init(&args) {
        Ok(e) => e,
        Err(e) => {
            // EAL creates its runtime directory before it can fail; remove it
            // when this attempt created it (never one a live process may own).
            if !existed {
                let _ = std::fs::remove_dir_all(&expected_dir);
            }
            let _ = std::fs::remove_file(&cfg.startup.control_socket);
            return Err(format!(
                "DPDK EAL initialisation failed: {e} (see the EAL messages above: without hugepages add --no-huge; every --vdev must be openable)"
            ));
        }
    };
    let runtime_dir = eal.runtime_dir();
    // Every DPDK object lives and dies inside `serve`, so EAL cleanup below
    // runs after all of them, on success and on error alike.
    let result = serve(&eal, path, raw, &cfg, &signals, build, listener, metrics, &opts.stats_out);
    eal.cleanup();
    if runtime_dir.starts_with("/var/run/dpdk") || runtime_dir.starts_with("/run/dpdk") {
        let _ = std::fs::remove_dir_all(&runtime_dir);
    }
    let _ = std::fs::remove_file(&cfg.startup.control_socket);
    match result {
        Ok(report) => write_report(&report, &opts.stats_out),
        Err(e) => Err(e),
    }
}

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
    let lcores: Vec<u32> = eal.worker_lcores();
    if lcores.len() < cfg.startup.workers {
        return Err(format!(
            "{} workers need {} worker lcores, but the EAL has {} (check -l/--lcores in `eal`)",
            cfg.startup.workers,
            cfg.startup.workers,
            lcores.len()
        ));
    }
    let lcores: Vec<u32> = lcores[..cfg.startup.workers].to_vec();
    let tsc_hz = dpdk::tsc_hz();

    // Find the devices and decide queue counts before allocating anything.
    let mut ids = Vec::with_capacity(cfg.startup.ports.len());
    let mut rxq = Vec::with_capacity(cfg.startup.ports.len());
    for p in &cfg.startup.ports {
        let id = Port::find(&p.device).ok_or_else(|| {
            format!(
                "port `{}`: no DPDK device named `{}` (is it created by a --vdev in `eal`, or allowed with -a?)",
                p.name, p.device
            )
        })?;
        let info = Port::info(id).map_err(|e| format!("port `{}`: {e}", p.name))?;
        if usize::from(info.max_tx_queues) < cfg.startup.workers {
            return Err(format!(
                "port `{}` ({}, driver {}) has {} TX queue(s) but {} workers need one each (net_af_packet: qpairs=N; net_pcap: one tx_pcap per queue)",
                p.name, p.device, info.driver, info.max_tx_queues, cfg.startup.workers
            ));
        }
        ids.push(id);
        rxq.push(info.max_rx_queues.min(cfg.startup.workers as u16).max(1));
    }
    let mbufs = mempool_size(cfg, &rxq);
    let pool = Arc::new(Mempool::new("lbd_mbufs", mbufs, cfg.startup.mempool_cache, -1).map_err(|e| e.to_string())?);

    let mut ports = Vec::with_capacity(ids.len());
    let mut queues: Vec<(Vec<dpdk::RxQueue>, Vec<dpdk::TxQueue>)> = Vec::new();
    let mut macs = Vec::new();
    for (i, ((p, id), nrx)) in cfg.startup.ports.iter().zip(&ids).zip(&rxq).enumerate() {
        let setup = PortSetup {
            rx_queues: *nrx,
            tx_queues: cfg.startup.workers as u16,
            rx_descriptors: p.rx_descriptors,
            tx_descriptors: p.tx_descriptors,
            rss: rss_request(cfg, i, *nrx),
            promiscuous: p.promiscuous,
        };
        let (port, rx, tx) =
            Port::start(*id, &setup, &pool).map_err(|e| format!("port `{}` ({}): {e}", p.name, p.device))?;
        let mac = match p.mac {
            None => MacAddr(Port::mac(*id)),
            Some(m) => {
                if let Err(e) = Port::set_mac(*id, m.0) {
                    // Some PMDs (net_pcap, net_ring) have a fixed address:
                    // use the configured one in software and let every frame
                    // in, filtering on it in the dataplane.
                    eprintln!("lbd: port `{}`: {e}; using {m} in software (promiscuous)", p.name);
                    let _ = Port::enable_promiscuous(*id);
                }
                m
            }
        };
        macs.push(mac);
        ports.push(port);
        queues.push((rx, tx));
    }

    let mut registry = IdRegistry::default();
    registry.assign(&cfg.forwarding, &|_| true)?;
    let snapshot = Snapshot::build(cfg, &macs, &registry, 1);
    let snapshots = Arc::new(SnapshotCell::new(snapshot));

    // Hand-off rings: producers[i][j] sends from worker i to worker j.
    let n = cfg.startup.workers;
    let mut producers: Vec<Vec<Option<RingProducer>>> = (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    let mut consumers: Vec<Vec<RingConsumer>> = (0..n).map(|_| Vec::new()).collect();
    for (i, row) in producers.iter_mut().enumerate() {
        for (j, slot) in row.iter_mut().enumerate() {
            if i == j {
                continue;
            }
            let (p, c) = dpdk::ring(&format!("lbd_ho_{i}_{j}"), HANDOFF_RING_SIZE, -1).map_err(|e| e.to_string())?;
            *slot = Some(p);
            consumers[j].push(c);
        }
    }
    let rings: Vec<Vec<dpdk::RingMonitor>> =
        consumers.iter().map(|cs| cs.iter().map(|c| c.monitor()).collect()).collect();

    let counters: Vec<Arc<WorkerCounters>> =
        (0..n).map(|_| Arc::new(WorkerCounters::new(cfg.startup.ports.len(), MAX_LISTENERS, MAX_BACKENDS))).collect();
    let control = Arc::new(RunControl::default());
    let start_tsc = dpdk::tsc();

    // Per-port queue handles, dealt out to workers: queue i to worker i.
    let mut per_worker: Vec<Vec<PortQueues>> = (0..n).map(|_| Vec::new()).collect();
    for (rx, tx) in queues {
        let mut rx = rx.into_iter().map(Some).collect::<Vec<_>>();
        rx.resize_with(n, || None);
        for (w, (r, t)) in rx.into_iter().zip(tx).enumerate() {
            per_worker[w].push(PortQueues { rx: r, tx: t });
        }
    }

    let mut query_senders = Vec::with_capacity(n);
    let mut workers = Vec::with_capacity(n);
    for (w, ((ports_q, to), from)) in per_worker.into_iter().zip(producers).zip(consumers).enumerate() {
        let settings = CoreSettings {
            worker: w,
            workers: n,
            session_capacity: cfg.startup.session_capacity,
            neighbor_capacity: cfg.startup.arp_tables.cache_size,
            pending_capacity: cfg.startup.arp_tables.queue_length,
        };
        let (qtx, inbox) = query::channel();
        query_senders.push(qtx);
        workers.push(Worker {
            index: w,
            dataplane: Dataplane::new(settings, snapshots.load(), Arc::clone(&counters[w])),
            ports: ports_q,
            to,
            from,
            queries: inbox,
            pool: Arc::clone(&pool),
            counters: Arc::clone(&counters[w]),
            snapshots: Arc::clone(&snapshots),
            control: Arc::clone(&control),
            burst: cfg.startup.burst,
            idle_sleep: cfg.startup.idle_sleep,
            tsc_hz,
            start_tsc,
        });
    }
    // From here on every early return drops `launched`, which stops and
    // joins the workers before the ports they poll are stopped and closed
    // (locals drop in reverse order: `launched` before `ports` and `pool`).
    let mut launched = LaunchedLcores { eal, control, lcores: Vec::with_capacity(n) };
    for (w, lcore) in workers.into_iter().zip(&lcores) {
        eal.launch(*lcore, Box::new(move || w.run())).map_err(|e| e.to_string())?;
        launched.lcores.push(*lcore);
    }

    let port_infos: Vec<PortInfo> = cfg
        .startup
        .ports
        .iter()
        .zip(&ports)
        .map(|(p, port)| PortInfo {
            id: port.id,
            name: p.name.clone(),
            device: p.device.clone(),
            driver: port.driver.clone(),
            rx_queues: port.rx_queues,
            rss: port.rss.clone(),
        })
        .collect();
    let rt = Arc::new(Runtime {
        build,
        tsc_hz,
        dpdk_version: dpdk::runtime_version(),
        started: Instant::now(),
        lcores: lcores.clone(),
        counters,
        snapshots,
        ports: port_infos,
        pool: Arc::clone(&pool),
        rings,
        queries: query_senders,
        plane: Mutex::new(ControlPlane::new(path.to_owned(), raw, cfg.clone(), registry, macs.clone())),
        ops: Mutex::default(),
        propagation: Mutex::new(crate::latency::new_histogram()),
        seq: AtomicU64::new(0),
    });
    // The metrics server first: dropped on an early return, it stops and
    // joins its thread (the control server has no such drop).
    let metrics_server = metrics.map(|b| b.start(Arc::clone(&rt))).transpose()?;
    let control_server = ControlServer::spawn(listener, cfg.startup.control_socket.clone(), Arc::clone(&rt))
        .map_err(|e| format!("cannot start the control thread: {e}"))?;

    let port_list: Vec<String> = cfg
        .startup
        .ports
        .iter()
        .zip(&macs)
        .zip(&ports)
        .map(|((p, m), port)| {
            format!(
                "{}={} {} {}/{} rxq={} rss={}",
                p.name,
                p.device,
                m,
                p.address,
                p.subnet.prefix_len(),
                port.rx_queues,
                port.rss.mode
            )
        })
        .collect();
    let metrics_at = metrics_server.as_ref().map_or_else(|| "off".to_owned(), |m| format!("http://{}/metrics", m.addr));
    eprintln!(
        "lbd: ready: {} worker(s) on lcores {:?}, {} listener(s), control {}, metrics {}, ports: {}",
        n,
        lcores,
        cfg.forwarding.listeners.len(),
        cfg.startup.control_socket.display(),
        metrics_at,
        port_list.join(", ")
    );

    while !signals.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
        if signals.dump.swap(false, Ordering::Relaxed) {
            if let Err(e) = write_report(&rt.report(false), stats_out) {
                eprintln!("lbd: {e}");
            }
        }
        if signals.reload.swap(false, Ordering::Relaxed) {
            let r = rt.reload_file();
            rt.record_op("config_reload", r.is_ok());
            match r {
                Ok(c) => eprintln!(
                    "lbd: SIGHUP: {} (generation {}, all workers in {} us)",
                    c.summary, c.generation, c.propagation_us
                ),
                Err(e) => eprintln!("lbd: SIGHUP: reload refused, running configuration unchanged: {e}"),
            }
        }
    }
    eprintln!("lbd: stopping");
    // Nobody may ask or scrape while the data plane goes away.
    control_server.shutdown();
    if let Some(m) = metrics_server {
        m.shutdown();
    }
    Ok(shutdown(rt, launched, ports))
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
    /// already left; then lets every worker drain its rings and exit.
    fn stop(mut self) {
        self.control.quiesce();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.control.quiesced() < self.lcores.len() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
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
            eprintln!("lbd: start-up failed: stopping the {} launched worker(s)", self.lcores.len());
            self.exit_and_wait();
        }
    }
}

fn shutdown(rt: Arc<Runtime>, lcores: LaunchedLcores<'_>, mut ports: Vec<Port>) -> Report {
    lcores.stop();
    for p in &mut ports {
        p.stop();
    }
    let mut report = rt.report(true);
    // Ports close (flushing net_pcap's files) before their mempool goes.
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

    fn cfg(extra: &str) -> Config {
        let y = format!(
            "eal: [\"--no-pci\"{extra}]\nlcores: {{workers: 3}}\nports:\n  - {{name: ext, device: net_null0, address: 10.0.0.1/24}}\n"
        );
        crate::config::parse(&y, Path::new("t.yaml")).unwrap()
    }

    #[test]
    fn lcore_map_pins_workers_round_robin() {
        let a = eal_args(&cfg(""), &[0, 1]);
        assert_eq!(a.last().unwrap(), "--lcores=0@(0,1),1@0,2@1,3@0");
        assert_eq!(a[0], "lbd");
        assert_eq!(a[1], "--log-level=notice");
        let a = eal_args(&cfg(", \"-l\", \"0-3\""), &[0, 1]);
        assert!(!a.iter().any(|x| x.starts_with("--lcores")));
    }
}
