//! A worker lcore: polls its RX queues and hand-off rings, runs the packet
//! core on each burst, and batches what comes out into TX queues and rings.
//!
//! TX follows l3fwd: packets collect per port and go out when a burst is
//! full, when a poll finds nothing more to batch with, or when the drain
//! timer (100 µs) fires, whichever comes first.

use crate::dpdk::{tsc, Burst, DpdkPlacement, Mbuf, Mempool, RingConsumer, RingProducer, RxQueue, TxQueue};
use crate::query::{self, QueryInbox};
use lbcore::counters::{DropReason, Event, WorkerCounters};
use lbcore::dataplane::{Dataplane, Io, Packet};
use lbcore::ids::PortIndex;
use lbcore::snapshot::SnapshotCell;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// An mbuf's `port` field carries, inside lbd, the configuration's
/// [`PortIndex`] of the port it arrived on (set at RX, or at allocation for
/// frames lbd originates), not DPDK's port id: the core knows ports by
/// configuration index only. On the exception path it names the port whose
/// kernel interface a frame goes to or came from. This function and
/// `Packet::port` below are the only places the field is written or read
/// as such.
#[inline(always)]
pub(crate) fn set_arrival_port(m: &mut Mbuf, port: PortIndex) {
    m.set_port(port.0);
}

impl Packet for Mbuf {
    #[inline(always)]
    fn data(&self) -> &[u8] {
        Mbuf::data(self)
    }
    #[inline(always)]
    fn data_mut(&mut self) -> &mut [u8] {
        Mbuf::data_mut(self)
    }
    #[inline(always)]
    fn packet_len(&self) -> usize {
        Mbuf::packet_len(self)
    }
    #[inline(always)]
    fn port(&self) -> PortIndex {
        PortIndex(Mbuf::port(self))
    }
    #[inline]
    fn truncate(&mut self, len: usize) -> bool {
        Mbuf::truncate(self, len)
    }
    type Placement = DpdkPlacement;
}

/// Run state shared by the control thread and the workers.
#[derive(Debug, Default)]
pub struct RunControl {
    state: AtomicU8,
    quiesced: AtomicUsize,
}

const RUNNING: u8 = 0;
/// Stop polling ports; keep draining rings (other workers may still hand
/// packets over).
const QUIESCE: u8 = 1;
/// Drain what is left and return.
const EXIT: u8 = 2;

impl RunControl {
    pub fn quiesce(&self) {
        self.state.store(QUIESCE, Ordering::SeqCst);
    }
    pub fn exit(&self) {
        self.state.store(EXIT, Ordering::SeqCst);
    }
    /// Workers that have stopped polling their ports.
    pub fn quiesced(&self) -> usize {
        self.quiesced.load(Ordering::SeqCst)
    }
}

/// The queues of one port a worker owns.
#[derive(Debug)]
pub struct PortQueues {
    /// `None` when the device has fewer RX queues than there are workers.
    pub rx: Option<RxQueue>,
    pub tx: TxQueue,
}

#[derive(Debug)]
pub struct Worker {
    pub index: usize,
    pub dataplane: Dataplane<Mbuf>,
    pub ports: Vec<PortQueues>,
    /// Ring to each other worker (`None` at this worker's own index).
    pub to: Vec<Option<RingProducer>>,
    pub from: Vec<RingConsumer>,
    /// The exception path: this worker's ring towards the kernel, and (on
    /// worker 0) the ring of frames the kernel sends out.
    pub to_kernel: Option<RingProducer>,
    pub from_kernel: Option<RingConsumer>,
    /// Questions from the control thread, looked at once a millisecond.
    pub queries: QueryInbox,
    /// Allocates the frames lbd originates, and keeps the pool alive while
    /// this worker holds mbufs (an `Mbuf` does not hold its pool: see
    /// `dpdk::mbuf`).
    pub pool: Arc<Mempool>,
    pub counters: Arc<WorkerCounters>,
    pub snapshots: Arc<SnapshotCell>,
    pub control: Arc<RunControl>,
    pub burst: usize,
    /// `None`: busy polling.
    pub idle: Option<IdleBackoff>,
    pub tsc_hz: u64,
    /// The epoch of the worker's millisecond clock: one value for all
    /// workers (read once on the main lcore), so times one worker writes
    /// into the shared persistence table mean the same to the others.
    pub start_tsc: u64,
}

/// Empty polls in a row before an idle worker sleeps: a few tens of
/// microseconds of polling, so a gap between the packets of a busy flow
/// costs no system call.
const IDLE_POLLS_BEFORE_SLEEP: u32 = 256;
/// An idle worker's first sleep; each further sleep in a row doubles, up
/// to the configured longest.
const FIRST_IDLE_SLEEP_NS: u64 = 10_000;

/// What an adaptive worker does after a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdleStep {
    /// Poll again at once.
    Poll,
    /// Sleep this many nanoseconds, then poll.
    Sleep(u64),
    /// The poll found packets right after a sleep: poll again at once
    /// (counted: traffic that found the worker asleep).
    Woke,
}

/// The sleeps of an idle worker. The first comes after
/// [`IDLE_POLLS_BEFORE_SLEEP`] empty polls and lasts
/// [`FIRST_IDLE_SLEEP_NS`]; each further one in a row is twice as long,
/// up to `max_ns`; one poll that finds packets starts over. A worker thus
/// sleeps long only after a long quiet spell, and the packets that arrive
/// meanwhile wait at most `max_ns` in the RX ring (which the
/// configuration bounds below what the ring holds).
#[derive(Debug, Clone)]
pub struct IdleBackoff {
    max_ns: u64,
    next_ns: u64,
    empty_polls: u32,
    asleep: bool,
}

impl IdleBackoff {
    pub fn new(max: Duration) -> IdleBackoff {
        let max_ns = (max.as_nanos() as u64).max(FIRST_IDLE_SLEEP_NS);
        IdleBackoff { max_ns, next_ns: FIRST_IDLE_SLEEP_NS, empty_polls: 0, asleep: false }
    }

    /// After a poll that found `got` packets (or ring entries).
    #[inline(always)]
    fn after_poll(&mut self, got: usize) -> IdleStep {
        if got > 0 {
            self.empty_polls = 0;
            self.next_ns = FIRST_IDLE_SLEEP_NS;
            return if std::mem::take(&mut self.asleep) { IdleStep::Woke } else { IdleStep::Poll };
        }
        if self.empty_polls < IDLE_POLLS_BEFORE_SLEEP {
            self.empty_polls += 1;
            self.asleep = false;
            return IdleStep::Poll;
        }
        let ns = self.next_ns;
        self.next_ns = (ns * 2).min(self.max_ns);
        self.asleep = true;
        IdleStep::Sleep(ns)
    }
}

/// Cycles from `start` to `now`, 0 when `now` reads behind `start`.
///
/// TSCs of different cores are not guaranteed to agree exactly, and a
/// worker pinned to a set of CPUs may move between them: a reading can be
/// behind one taken earlier (the start value comes from the main lcore).
/// Plain subtraction would then wrap to a huge interval, or panic where
/// overflow checks are on.
#[inline(always)]
fn elapsed(start: u64, now: u64) -> u64 {
    now.saturating_sub(start)
}

/// The worker's TSC as a clock that never runs backwards: a reading behind
/// the previous one (another core's TSC) counts as no time. Session and
/// neighbour timers compare milliseconds with wrapping arithmetic, to
/// which a step back would look like 49 days of idleness.
#[derive(Debug)]
struct MonotonicTsc {
    last: u64,
}

impl MonotonicTsc {
    #[inline(always)]
    fn read(&mut self, raw: u64) -> u64 {
        self.last = self.last.max(raw);
        self.last
    }
}

struct TxBuffer {
    queue: TxQueue,
    pending: Burst,
    bytes: u64,
}

/// The worker's [`Io`]: TX and hand-off batching, bulk frees, allocation.
struct WorkerIo<'a> {
    tx: &'a mut [TxBuffer],
    handoff: &'a mut [Burst],
    rings: &'a mut [Option<RingProducer>],
    kernel: Option<&'a mut RingProducer>,
    kernel_pending: Burst,
    free: Burst,
    pool: &'a Mempool,
    counters: &'a WorkerCounters,
    burst: usize,
}

impl WorkerIo<'_> {
    fn flush_port(&mut self, port: usize) {
        let t = &mut self.tx[port];
        if t.pending.is_empty() {
            return;
        }
        let total = t.pending.len();
        let bytes = t.bytes;
        t.queue.tx(&mut t.pending);
        let mut unsent_bytes = 0u64;
        let unsent = t.pending.len();
        if unsent > 0 {
            t.pending.drain(|m| {
                unsent_bytes += m.packet_len() as u64;
                drop(m);
            });
            self.counters.count_drop_n(DropReason::TxFull, unsent as u64);
        }
        t.bytes = 0;
        let c = &self.counters.ports[port];
        c.tx_packets.add((total - unsent) as u64);
        c.tx_bytes.add(bytes - unsent_bytes);
    }

    fn flush_tx(&mut self) {
        for p in 0..self.tx.len() {
            self.flush_port(p);
        }
    }

    fn flush_worker(&mut self, w: usize) {
        let b = &mut self.handoff[w];
        if b.is_empty() {
            return;
        }
        let n = match &mut self.rings[w] {
            Some(r) => r.enqueue(b),
            None => 0,
        };
        self.counters.event_n(Event::HandoffOut, n as u64);
        let left = b.len();
        if left > 0 {
            self.counters.count_drop_n(DropReason::HandoffRingFull, left as u64);
            b.free_all();
        }
    }

    fn flush_kernel(&mut self) {
        if self.kernel_pending.is_empty() {
            return;
        }
        if let Some(r) = self.kernel.as_deref_mut() {
            r.enqueue(&mut self.kernel_pending);
        }
        let left = self.kernel_pending.len();
        if left > 0 {
            self.counters.count_drop_n(DropReason::KernelQueueFull, left as u64);
            self.kernel_pending.free_all();
        }
    }

    fn flush_handoffs(&mut self) {
        for w in 0..self.handoff.len() {
            self.flush_worker(w);
        }
    }

    fn tx_buffered(&self) -> bool {
        self.tx.iter().any(|t| !t.pending.is_empty())
    }
}

impl Io<Mbuf> for WorkerIo<'_> {
    #[inline]
    fn tx(&mut self, port: PortIndex, pkt: Mbuf) {
        let p = usize::from(port);
        let len = pkt.packet_len() as u64;
        let t = &mut self.tx[p];
        if let Err(m) = t.pending.push(pkt) {
            // Cannot happen: flushed at `burst` ≤ MAX_BURST below.
            self.counters.count_drop(DropReason::TxFull);
            drop(m);
            return;
        }
        t.bytes += len;
        if t.pending.len() >= self.burst {
            self.flush_port(p);
        }
    }

    #[inline]
    fn handoff(&mut self, worker: usize, pkt: Mbuf) {
        if self.handoff[worker].push(pkt).is_err() {
            self.counters.count_drop(DropReason::HandoffRingFull);
            return;
        }
        if self.handoff[worker].len() >= self.burst {
            self.flush_worker(worker);
        }
    }

    #[inline]
    fn free(&mut self, pkt: Mbuf) {
        if let Err(m) = self.free.push(pkt) {
            self.free.free_all();
            let _ = self.free.push(m);
        }
    }

    fn alloc(&mut self, len: usize, port: PortIndex) -> Option<Mbuf> {
        let mut m = self.pool.alloc()?;
        if !m.append(len) {
            return None;
        }
        set_arrival_port(&mut m, port);
        Some(m)
    }

    #[inline]
    fn to_kernel(&mut self, port: PortIndex, mut pkt: Mbuf) {
        // The exception thread reads the field as the interface to write to.
        set_arrival_port(&mut pkt, port);
        if let Err(m) = self.kernel_pending.push(pkt) {
            self.counters.count_drop(DropReason::KernelQueueFull);
            drop(m);
            return;
        }
        if self.kernel_pending.len() >= self.burst {
            self.flush_kernel();
        }
    }
}

impl Worker {
    /// The lcore's main loop; returns when the control says exit.
    pub fn run(self) -> i32 {
        let Worker {
            index: _,
            mut dataplane,
            ports,
            mut to,
            mut from,
            mut to_kernel,
            mut from_kernel,
            queries,
            pool,
            counters,
            snapshots,
            control,
            burst,
            mut idle,
            tsc_hz,
            start_tsc,
        } = self;
        if idle.is_some() {
            // The kernel may stretch a sleep by the thread's timer slack
            // (50 µs by default), which would make the shortest sleeps five
            // times as long as asked.
            crate::dpdk::set_timer_slack(Duration::from_micros(1));
        }
        let tsc_per_ms = (tsc_hz / 1000).max(1);
        // Nanoseconds per TSC cycle in 32.32 fixed point.
        let ns_per_cycle_q32 = ((1_000_000_000u128 << 32) / u128::from(tsc_hz.max(1))) as u64;
        let cycles_to_ns = |c: u64| ((u128::from(c) * u128::from(ns_per_cycle_q32)) >> 32) as u64;
        let drain_tsc = (tsc_hz / 10_000).max(1); // 100 µs
        let mut rx_queues: Vec<Option<RxQueue>> = Vec::with_capacity(ports.len());
        let mut tx: Vec<TxBuffer> = Vec::with_capacity(ports.len());
        for p in ports {
            rx_queues.push(p.rx);
            tx.push(TxBuffer { queue: p.tx, pending: Burst::default(), bytes: 0 });
        }
        let mut handoff: Vec<Burst> = (0..to.len()).map(|_| Burst::default()).collect();
        let mut io = WorkerIo {
            tx: &mut tx,
            handoff: &mut handoff,
            rings: &mut to,
            kernel: to_kernel.as_mut(),
            kernel_pending: Burst::default(),
            free: Burst::default(),
            pool: &pool,
            counters: &counters,
            burst,
        };
        let mut rx = Burst::default();
        let mut generation = dataplane.snapshot().generation;
        counters.generation.set(generation);
        let mut last_ms = u32::MAX;
        let mut clock = MonotonicTsc { last: start_tsc };
        let mut last_drain = clock.read(tsc());
        let mut polling_ports = true;
        // One loop iteration takes at most a burst from each RX queue and
        // hands each packet over at most once, so a ring with this much
        // room takes everything the iteration can give it: below it, RX
        // pauses and `handoff_ring_full` cannot happen. (It was 4 bursts,
        // which a worker with more than 4 RX queues could overrun.)
        let rx_ports = rx_queues.iter().flatten().count().max(1);
        let ring_low_water = (rx_ports * burst) as u32;
        debug_assert!(io.rings.iter().flatten().all(|r| r.free_count() >= ring_low_water), "rings hold a full poll");

        loop {
            match control.state.load(Ordering::Relaxed) {
                RUNNING => {}
                QUIESCE if polling_ports => {
                    polling_ports = false;
                    control.quiesced.fetch_add(1, Ordering::SeqCst);
                }
                QUIESCE => {}
                _ => break,
            }
            let g = snapshots.generation();
            if g != generation {
                dataplane.set_snapshot(snapshots.load());
                generation = g;
                // The time first, so a reader that sees the generation also
                // sees when it happened.
                counters.switched_tsc.set(tsc());
                counters.generation.publish(g);
            }
            let now_tsc = clock.read(tsc());
            let now_ms = (elapsed(start_tsc, now_tsc) / tsc_per_ms) as u32;
            dataplane.set_now(now_ms);
            if now_ms != last_ms {
                last_ms = now_ms;
                while let Some(q) = queries.next() {
                    query::answer(&dataplane, q);
                }
            }

            let mut got = 0usize;
            // Hand-offs first: they already cost their sender a ring slot,
            // and a ring that only gets what is left after a full RX burst
            // overflows when both workers are saturated.
            for c in from.iter_mut() {
                let n = c.dequeue(&mut rx, 2 * burst);
                if n == 0 {
                    continue;
                }
                got += n;
                counters.event_n(Event::HandoffIn, n as u64);
                // Mbufs and data were last touched by the sender.
                dataplane.process_handoff_burst(rx.drain_iter_prefetching(), &mut io);
            }
            // Frames the host's kernel sends out (worker 0 only): a bounded
            // amount per loop, already rate-limited by the exception thread.
            if let Some(c) = from_kernel.as_mut() {
                let n = c.dequeue(&mut rx, burst);
                if n > 0 {
                    got += n;
                    counters.event_n(Event::FromKernel, n as u64);
                    rx.drain(|m| io.tx(Packet::port(&m), m));
                }
            }
            // Back-pressure: while a ring to another worker is filling, take
            // nothing new from the ports. The packets wait in the NIC queue
            // (and, past its size, the NIC drops and counts them) instead of
            // being dropped here after receive work was spent on them.
            let ring_full = io.rings.iter().flatten().any(|r| r.free_count() < ring_low_water);
            if ring_full {
                counters.event(Event::RxPaused);
            }
            if polling_ports && !ring_full {
                for (pi, q) in rx_queues.iter_mut().enumerate() {
                    let Some(q) = q else { continue };
                    let n = q.rx(&mut rx, burst);
                    if n == 0 {
                        continue;
                    }
                    got += n;
                    let t0 = tsc();
                    rx.prefetch_data();
                    let port = PortIndex(pi as u16);
                    dataplane.process_burst(
                        rx.drain_iter().map(|mut m| {
                            set_arrival_port(&mut m, port);
                            m
                        }),
                        &mut io,
                    );
                    counters.latency.record(cycles_to_ns(elapsed(t0, tsc())) / n as u64, n as u64);
                }
            }
            io.flush_handoffs();
            io.flush_kernel();
            if io.tx_buffered() && (got == 0 || elapsed(last_drain, now_tsc) >= drain_tsc) {
                io.flush_tx();
                last_drain = now_tsc;
            }
            io.free.free_all();
            dataplane.tick(&mut io);

            counters.event(Event::Polls);
            if got > 0 {
                counters.event(Event::BusyPolls);
            }
            if let Some(b) = idle.as_mut() {
                // A sleep only after hundreds of empty polls: no system call
                // while there is traffic. Everything batched was flushed
                // above (an empty poll flushes TX), so nothing waits in
                // this worker while it sleeps.
                match b.after_poll(got) {
                    IdleStep::Poll => {}
                    IdleStep::Woke => counters.event(Event::IdleWakeups),
                    IdleStep::Sleep(ns) => {
                        counters.event(Event::IdleSleeps);
                        let t0 = tsc();
                        std::thread::sleep(Duration::from_nanos(ns));
                        counters.event_n(Event::IdleSleepMicros, cycles_to_ns(elapsed(t0, tsc())) / 1000);
                    }
                }
            }
        }

        // Exit: nothing polls ports any more and every worker has stopped
        // handing over, so what the rings hold now is all there will be.
        loop {
            let mut got = 0;
            for c in from.iter_mut() {
                let n = c.dequeue(&mut rx, burst);
                got += n;
                counters.event_n(Event::HandoffIn, n as u64);
                rx.drain(|m| dataplane.process_handoff(m, &mut io));
            }
            if got == 0 {
                break;
            }
        }
        // What the kernel sent that was not sent yet goes with the port.
        if let Some(c) = from_kernel.as_mut() {
            loop {
                let n = c.dequeue(&mut rx, burst);
                if n == 0 {
                    break;
                }
                counters.count_drop_n(DropReason::Shutdown, n as u64);
                rx.free_all();
            }
        }
        io.flush_handoffs();
        io.flush_kernel();
        io.flush_tx();
        dataplane.drain(&mut io);
        io.free.free_all();
        counters.sessions_active.set(dataplane.sessions().len() as u64);
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(b: &mut IdleBackoff, got: usize, n: usize) -> Vec<IdleStep> {
        (0..n).map(|_| b.after_poll(got)).collect()
    }

    #[test]
    fn idle_backoff_sleeps_only_after_a_run_of_empty_polls() {
        let mut b = IdleBackoff::new(Duration::from_micros(200));
        let first = steps(&mut b, 0, IDLE_POLLS_BEFORE_SLEEP as usize);
        assert!(first.iter().all(|s| *s == IdleStep::Poll), "slept before {IDLE_POLLS_BEFORE_SLEEP} empty polls");
        assert_eq!(b.after_poll(0), IdleStep::Sleep(FIRST_IDLE_SLEEP_NS));
        // A poll with packets in between starts the count over.
        let mut b = IdleBackoff::new(Duration::from_micros(200));
        for _ in 0..10 {
            steps(&mut b, 0, IDLE_POLLS_BEFORE_SLEEP as usize - 1);
            assert_eq!(b.after_poll(1), IdleStep::Poll);
        }
        assert!(steps(&mut b, 0, IDLE_POLLS_BEFORE_SLEEP as usize).iter().all(|s| *s == IdleStep::Poll));
    }

    #[test]
    fn idle_backoff_doubles_up_to_the_longest_and_resets_on_traffic() {
        let mut b = IdleBackoff::new(Duration::from_micros(100));
        steps(&mut b, 0, IDLE_POLLS_BEFORE_SLEEP as usize);
        let sleeps: Vec<IdleStep> = steps(&mut b, 0, 6);
        let us = |n: u64| IdleStep::Sleep(n * 1000);
        assert_eq!(sleeps, vec![us(10), us(20), us(40), us(80), us(100), us(100)]);
        // Traffic right after a sleep: counted as a wake-up, and the next
        // quiet spell starts from the shortest sleep again.
        assert_eq!(b.after_poll(3), IdleStep::Woke);
        assert_eq!(b.after_poll(3), IdleStep::Poll);
        steps(&mut b, 0, IDLE_POLLS_BEFORE_SLEEP as usize);
        assert_eq!(b.after_poll(0), us(10));
        // Packets after the polling that follows a sleep are no wake-up.
        let mut b = IdleBackoff::new(Duration::from_micros(100));
        steps(&mut b, 0, IDLE_POLLS_BEFORE_SLEEP as usize + 1);
        assert_eq!(b.after_poll(0), us(20));
        assert_eq!(b.after_poll(1), IdleStep::Woke);
    }

    #[test]
    fn idle_backoff_never_sleeps_longer_than_the_longest_nor_shorter_than_the_first() {
        let mut b = IdleBackoff::new(Duration::from_micros(1));
        steps(&mut b, 0, IDLE_POLLS_BEFORE_SLEEP as usize);
        assert!(steps(&mut b, 0, 100).iter().all(|s| *s == IdleStep::Sleep(FIRST_IDLE_SLEEP_NS)));
        let mut b = IdleBackoff::new(Duration::from_millis(10));
        steps(&mut b, 0, IDLE_POLLS_BEFORE_SLEEP as usize);
        let longest = steps(&mut b, 0, 1000)
            .into_iter()
            .map(|s| match s {
                IdleStep::Sleep(ns) => ns,
                other => panic!("{other:?} while idle"),
            })
            .max();
        assert_eq!(longest, Some(10_000_000));
    }

    #[test]
    fn elapsed_saturates_when_time_reads_backwards() {
        assert_eq!(elapsed(100, 250), 150);
        assert_eq!(elapsed(250, 250), 0);
        // Another core's TSC a little behind the start value.
        assert_eq!(elapsed(250, 100), 0);
        assert_eq!(elapsed(u64::MAX, 0), 0);
        assert_eq!(elapsed(0, u64::MAX), u64::MAX);
    }

    #[test]
    fn worker_clock_never_runs_backwards() {
        let start = 1_000_000;
        let mut clock = MonotonicTsc { last: start };
        let tsc_per_ms = 1000;
        let mut last_ms = 0;
        // Readings from cores whose TSCs disagree, some behind the start.
        for raw in [999_000, 1_000_500, 1_003_000, 1_002_000, 990_000, 1_004_000, 1_003_999] {
            let now = clock.read(raw);
            let ms = elapsed(start, now) / tsc_per_ms;
            assert!(ms >= last_ms, "clock went from {last_ms} to {ms} ms at raw {raw}");
            last_ms = ms;
        }
        assert_eq!(last_ms, 4);
    }
}
