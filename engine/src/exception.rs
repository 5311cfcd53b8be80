//! The kernel exception path: a kernel interface per port that carries the
//! port's address and MAC, so the host keeps a network stack (ssh, health
//! checks, routing daemons) on ports DPDK owns.
//!
//! Frames for the host that are not load-balanced (TCP/UDP to a port
//! address, ICMP other than echo, ARP replies to the port address) leave
//! the workers' core as `Io::to_kernel`; each worker queues them on its own
//! single-producer ring to the `lbd-exception` thread, which writes them to
//! the interface. What the kernel sends out of an interface the thread
//! reads and queues on one ring to worker 0, which transmits it on the
//! port like any other frame (its TX buffering, counters and drops).
//!
//! Neither direction can starve the other side: each is a bounded ring
//! behind token buckets per port (`exception.to_kernel_rate`, split between the
//! workers, and `exception.from_kernel_rate`), so a flood to the host costs
//! a worker one token check per packet and never a system call, and a
//! kernel flooding its interfaces costs worker 0 at most a burst per loop.
//! The thread alone makes the system calls (net_tap reads and writes the
//! TAP file descriptor per frame); it sleeps when both directions are idle.

use crate::dpdk::{self, Burst, Eal, Mbuf, Mempool, Port, PortSetup, RingConsumer, RingProducer, RxQueue, TxQueue};
use crate::log::log_line;
use crate::worker::set_arrival_port;
use lbcore::config::{Config, ExceptionBackend};
use lbcore::counters::{DropReason, Event, WorkerCounters};
use lbcore::dataplane::Packet;
use lbcore::ids::PortIndex;
use lbcore::ratelimit::TokenBucket;
use lbcore::wire::MacAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Descriptors of a kernel interface's queues.
const DESCRIPTORS: u16 = 512;
/// The exception thread's poll size per interface and ring.
const POLL: usize = 32;
/// How long the thread sleeps after a poll that found nothing.
const IDLE_SLEEP: Duration = Duration::from_micros(200);

/// The kernel interface of one port, started. Its queues go to the
/// exception thread ([`KernelQueues`]); the port stays with the daemon,
/// which stops it once the thread has ended.
#[derive(Debug)]
pub struct KernelInterface {
    /// The configuration's index of the port it belongs to.
    pub port: PortIndex,
    /// The kernel's name for it.
    pub name: String,
    /// The DPDK device behind it (e.g. `net_tap_lbd0`).
    pub device: String,
    pub dev: Port,
}

/// A kernel interface's queues, for the exception thread.
#[derive(Debug)]
pub struct KernelQueues {
    port: PortIndex,
    rx: RxQueue,
    tx: TxQueue,
}

/// Mbufs the exception path can hold at once (descriptors and rings), for
/// sizing the pool.
pub fn mbufs_needed(cfg: &Config) -> u64 {
    let n = cfg.startup.ports.iter().filter(|p| p.exception_interface.is_some()).count() as u64;
    if n == 0 {
        return 0;
    }
    let queue = u64::from(cfg.startup.exception.queue_length);
    n * 2 * u64::from(DESCRIPTORS) + (cfg.startup.workers as u64 + 1) * queue + 4 * dpdk::MAX_BURST as u64
}

/// Creates, starts and addresses the kernel interface of every port whose
/// exception path is on. `macs[i]` is port i's MAC.
pub fn create_interfaces(
    eal: &Eal,
    cfg: &Config,
    macs: &[MacAddr],
    pool: &Arc<Mempool>,
) -> Result<(Vec<KernelInterface>, Vec<KernelQueues>), String> {
    let mut out = Vec::new();
    let mut queues = Vec::new();
    let backend = cfg.startup.exception.backend;
    if backend == ExceptionBackend::Tap && cfg.startup.ports.iter().any(|p| p.exception_interface.is_some()) {
        occupy_tap_trigger_signals()?;
    }
    for (i, p) in cfg.startup.ports.iter().enumerate() {
        let Some(name) = &p.exception_interface else { continue };
        let what = format!("port `{}`: exception interface `{name}`", p.name);
        let needs = match backend {
            ExceptionBackend::Tap => "/dev/net/tun",
            ExceptionBackend::VirtioUser => "/dev/vhost-net",
        };
        if !std::path::Path::new(needs).exists() {
            let why = format!("backend {} needs {needs}, which this host lacks", backend.name());
            if !p.exception_required {
                // On by default only where it works.
                log_line!("lbd: warning: {what} not created: {why} (set `exception: off` on the port to silence this)");
                continue;
            }
            return Err(format!("{what}: {why} (choose `exception.backend`, or set `exception: off` on the port)"));
        }
        let mac = macs[i];
        let device = match backend {
            ExceptionBackend::Tap => format!("net_tap_lbd{i}"),
            ExceptionBackend::VirtioUser => format!("virtio_user_lbd{i}"),
        };
        let devargs = match backend {
            ExceptionBackend::Tap => format!("{device},iface={name},mac={mac}"),
            ExceptionBackend::VirtioUser => {
                format!("{device},path=/dev/vhost-net,queues=1,queue_size={DESCRIPTORS},iface={name},mac={mac}")
            }
        };
        eal.probe_vdev(&devargs).map_err(|e| format!("{what}: {e} (does an interface of that name exist already?)"))?;
        let id = Port::find(eal, &device).ok_or_else(|| format!("{what}: DPDK made no port `{device}`"))?;
        let setup = PortSetup {
            rx_queues: 1,
            tx_queues: 1,
            rx_descriptors: DESCRIPTORS,
            tx_descriptors: DESCRIPTORS,
            rss: None,
            promiscuous: false,
        };
        let (dev, rx, tx) = Port::start(eal, id, &setup, pool).map_err(|e| format!("{what}: {e}"))?;
        let port = PortIndex(i as u16);
        // One of each was asked for.
        let (Some(rx), Some(tx)) = (rx.into_iter().next(), tx.into_iter().next()) else {
            return Err(format!("{what}: the device has no queues"));
        };
        out.push(KernelInterface { port, name: name.clone(), device, dev });
        queues.push(KernelQueues { port, rx, tx });
        configure_kernel_side(name, &format!("{}/{}", p.address, p.subnet.prefix_len()))
            .map_err(|e| format!("{what}: {e}"))?;
    }
    Ok((out, queues))
}

/// net_tap asks the kernel for a signal on every frame that arrives on a
/// TAP device (O_ASYNC, owner: the process; a real-time signal no handler
/// has taken yet, or SIGIO in older DPDKs) and reads only after one came.
/// A busy interface then sends a signal per frame: measured here, a flood
/// from the host interrupted lbd's main thread thousands of times a second,
/// stretched its 20 ms sleeps to seconds, and lbd stopped answering
/// SIGTERM and SIGUSR1; moved to the exception thread, the storm starved
/// that thread instead. When every such signal is taken already, net_tap
/// does without ("Rx trigger disabled") and reads on every poll, which the
/// exception thread does anyway: so lbd takes them first, with handlers
/// that only set a flag nobody reads.
fn occupy_tap_trigger_signals() -> Result<(), String> {
    for sig in std::iter::once(signal_hook::consts::SIGIO).chain(libc::SIGRTMIN()..=libc::SIGRTMAX()) {
        signal_hook::flag::register(sig, Arc::new(AtomicBool::new(false)))
            .map_err(|e| format!("cannot take signal {sig} away from net_tap: {e}"))?;
    }
    Ok(())
}

/// Gives the interface the port's address and brings it up. IPv6 goes off
/// first: the data plane is IPv4 only, and the kernel's router
/// solicitations and duplicate-address probes would only be noise on the
/// wire.
fn configure_kernel_side(name: &str, address: &str) -> Result<(), String> {
    let v6 = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
    if std::path::Path::new(&v6).exists() {
        std::fs::write(&v6, "1").map_err(|e| format!("cannot turn IPv6 off ({v6}): {e}"))?;
    }
    ip(&["address", "replace", address, "dev", name])?;
    ip(&["link", "set", "dev", name, "up"])
}

/// Runs `ip ARGS` (iproute2), failing with what it printed.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip {}` (is iproute2 installed?): {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

/// The exception thread's side of the rings: one from each worker towards
/// the kernel, one from the kernel to worker 0.
#[derive(Debug)]
pub struct ExceptionRings {
    thread_side: (Vec<RingConsumer>, RingProducer),
}

/// The workers' side: `to_kernel[w]` is worker w's producer; worker 0
/// consumes `from_kernel`.
#[derive(Debug)]
pub struct WorkerRings {
    pub to_kernel: Vec<RingProducer>,
    pub from_kernel: RingConsumer,
}

/// Rings of `size` slots for `workers` workers.
pub fn rings(
    eal: &Eal,
    pool: &Arc<Mempool>,
    workers: usize,
    size: u32,
) -> Result<(ExceptionRings, WorkerRings), String> {
    let mut to_kernel = Vec::with_capacity(workers);
    let mut consumers = Vec::with_capacity(workers);
    for w in 0..workers {
        let (p, c) = dpdk::spsc_ring(eal, pool, &format!("lbd_exc_up_{w}"), size, -1).map_err(|e| e.to_string())?;
        to_kernel.push(p);
        consumers.push(c);
    }
    let (p, from_kernel) = dpdk::spsc_ring(eal, pool, "lbd_exc_down", size, -1).map_err(|e| e.to_string())?;
    Ok((ExceptionRings { thread_side: (consumers, p) }, WorkerRings { to_kernel, from_kernel }))
}

/// The running `lbd-exception` thread; [`ExceptionThread::stop`] ends it.
#[derive(Debug)]
pub struct ExceptionThread {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl ExceptionThread {
    /// Starts the thread over the interfaces' `queues` and the thread's
    /// side of `rings`. `counters` are its own (it is no worker):
    /// drops of both directions and per-port packets to and from the
    /// kernel (`tx` = to the kernel, `rx` = from it).
    pub fn spawn(
        queues: Vec<KernelQueues>,
        rings: ExceptionRings,
        counters: Arc<WorkerCounters>,
        from_kernel_rate: u32,
        ports: usize,
    ) -> Result<ExceptionThread, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut by_port: Vec<Option<(RxQueue, TxQueue, Burst)>> = (0..ports).map(|_| None).collect();
        for q in queues {
            by_port[usize::from(q.port)] = Some((q.rx, q.tx, Burst::default()));
        }
        let (up, down) = rings.thread_side;
        let mut pump = Pump {
            by_port,
            up,
            down,
            counters,
            buckets: (0..ports)
                .map(|_| TokenBucket::new(from_kernel_rate, TokenBucket::default_burst(from_kernel_rate)))
                .collect(),
            start: Instant::now(),
        };
        let flag = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("lbd-exception".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    if pump.poll() == 0 {
                        std::thread::sleep(IDLE_SLEEP);
                    }
                }
                pump.drain_up();
            })
            .map_err(|e| format!("cannot start the exception thread: {e}"))?;
        Ok(ExceptionThread { stop, handle: Some(handle) })
    }

    /// Ends the thread and waits for it; what it still held is freed.
    pub fn stop(mut self) {
        self.join();
    }

    fn join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for ExceptionThread {
    fn drop(&mut self) {
        self.join();
    }
}

/// The thread's state: per port its interface's queues and a TX batch.
struct Pump {
    by_port: Vec<Option<(RxQueue, TxQueue, Burst)>>,
    up: Vec<RingConsumer>,
    down: RingProducer,
    counters: Arc<WorkerCounters>,
    /// Per port: a busy interface cannot take another port's share.
    buckets: Vec<TokenBucket>,
    start: Instant,
}

impl Pump {
    /// One round in both directions; how many frames moved.
    fn poll(&mut self) -> usize {
        self.pump_up() + self.pump_down()
    }

    /// Workers → kernel: each frame's `port` names the interface.
    fn pump_up(&mut self) -> usize {
        let mut b = Burst::default();
        let mut moved = 0;
        for c in self.up.iter_mut() {
            let n = c.dequeue(&mut b, POLL);
            moved += n;
            let by_port = &mut self.by_port;
            let counters = &self.counters;
            b.drain(|m| match by_port.get_mut(usize::from(Packet::port(&m))).and_then(Option::as_mut) {
                Some((_, _, pending)) => {
                    if let Err(m) = pending.push(m) {
                        counters.count_drop(DropReason::KernelTxFull);
                        drop(m);
                    }
                }
                // The core passes up only for ports with an interface.
                None => {
                    debug_assert!(false, "a frame for the kernel of a port without an interface");
                    counters.count_drop(DropReason::KernelTxFull);
                }
            });
            flush(by_port, counters);
        }
        moved
    }

    /// Kernel → worker 0, within the rate.
    fn pump_down(&mut self) -> usize {
        let now_ms = self.start.elapsed().as_millis() as u32;
        let mut moved = 0;
        let mut out = Burst::default();
        for (pi, slot) in self.by_port.iter_mut().enumerate() {
            let Some((rx, _, _)) = slot else { continue };
            let mut got = Burst::default();
            let n = rx.rx(&mut got, POLL);
            if n == 0 {
                continue;
            }
            moved += n;
            let c = &self.counters.ports[pi];
            c.rx_packets.add(n as u64);
            let bucket = &mut self.buckets[pi];
            let counters = &self.counters;
            got.drain(|mut m: Mbuf| {
                if !bucket.take(now_ms) {
                    counters.count_drop(DropReason::FromKernelRateLimited);
                    return;
                }
                // Worker 0 sends it on the port it belongs to.
                set_arrival_port(&mut m, PortIndex(pi as u16));
                if let Err(m) = out.push(m) {
                    counters.count_drop(DropReason::FromKernelQueueFull);
                    drop(m);
                }
            });
            self.down.enqueue(&mut out);
            if !out.is_empty() {
                self.counters.count_drop_n(DropReason::FromKernelQueueFull, out.len() as u64);
                out.free_all();
            }
        }
        moved
    }

    /// At exit: what the workers queued is freed, counted as shutdown.
    fn drain_up(&mut self) {
        let mut b = Burst::default();
        for c in self.up.iter_mut() {
            loop {
                let n = c.dequeue(&mut b, POLL);
                if n == 0 {
                    break;
                }
                self.counters.count_drop_n(DropReason::Shutdown, n as u64);
                b.free_all();
            }
        }
        for slot in self.by_port.iter_mut().flatten() {
            self.counters.count_drop_n(DropReason::Shutdown, slot.2.len() as u64);
            slot.2.free_all();
        }
    }
}

/// Writes each interface's batch; what an interface does not take is
/// dropped and counted.
fn flush(by_port: &mut [Option<(RxQueue, TxQueue, Burst)>], counters: &WorkerCounters) {
    for (pi, slot) in by_port.iter_mut().enumerate() {
        let Some((_, tx, pending)) = slot else { continue };
        if pending.is_empty() {
            continue;
        }
        let sent = tx.tx(pending) as u64;
        counters.ports[pi].tx_packets.add(sent);
        counters.event_n(Event::ToKernel, sent);
        let unsent = pending.len() as u64;
        if unsent > 0 {
            counters.count_drop_n(DropReason::KernelTxFull, unsent);
            pending.free_all();
        }
    }
}
