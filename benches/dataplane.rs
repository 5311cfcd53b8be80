//! The packet core on byte buffers (criterion): parse, session lookup,
//! NAT rewrite with incremental checksums, next hop, for one packet at a
//! time in bursts of 64 (lbd's default) — no DPDK, so it isolates lbd's own cost per
//! packet from the I/O.

mod common;

use common::{frame, Frame, Sink};
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use lbcore::config;
use lbcore::counters::WorkerCounters;
use lbcore::dataplane::{CoreSettings, Dataplane, Io, Packet};
use lbcore::ids::PortIndex;
use lbcore::snapshot::{IdRegistry, Snapshot};
use lbcore::wire::MacAddr;
use std::path::Path;
use std::sync::Arc;

/// Packets per burst: `lcores.burst`'s default.
const BURST: usize = 64;

/// A frame behind a pointer, as an mbuf is: moving it moves 8 bytes. The
/// boxes are recycled, never allocated per packet.
struct Buf(Box<Frame>);

impl Packet for Buf {
    fn data(&self) -> &[u8] {
        &self.0.data[..self.0.len]
    }
    fn data_mut(&mut self) -> &mut [u8] {
        let len = self.0.len;
        &mut self.0.data[..len]
    }
    fn packet_len(&self) -> usize {
        self.0.len
    }
    fn port(&self) -> PortIndex {
        PortIndex(0)
    }
    fn truncate(&mut self, len: usize) -> bool {
        self.0.len = len;
        true
    }
    // As lbd runs it: real prefetches, huge-page advice.
    type Placement = engine::dpdk::DpdkPlacement;
}

/// Takes the boxes back for the next burst.
#[derive(Default)]
struct Recycler {
    free: Vec<Buf>,
    tx: u64,
}

impl Io<Buf> for Recycler {
    fn tx(&mut self, _port: PortIndex, pkt: Buf) {
        self.tx += 1;
        self.free.push(pkt);
    }
    fn handoff(&mut self, _w: usize, pkt: Buf) {
        self.free.push(pkt);
    }
    fn free(&mut self, pkt: Buf) {
        self.free.push(pkt);
    }
    fn alloc(&mut self, len: usize, _port: PortIndex) -> Option<Buf> {
        let mut b = self.free.pop()?;
        b.0.len = len;
        Some(b)
    }
    fn to_kernel(&mut self, _port: PortIndex, pkt: Buf) {
        self.free.push(pkt);
    }
}

const CONFIG: &str = "
ports:
  - {name: ext, device: a, address: 10.0.0.1/24, gateway: 10.0.0.254, mac: \"02:00:00:00:00:01\", neighbors: [{ip: 10.0.0.254, mac: \"02:00:00:00:00:fe\"}]}
  - {name: int, device: b, address: 10.1.0.1/24, neighbors: [{ip: 10.1.0.11, mac: \"02:00:00:00:00:11\"}, {ip: 10.1.0.12, mac: \"02:00:00:00:00:12\"}, {ip: 10.1.0.13, mac: \"02:00:00:00:00:13\"}, {ip: 10.1.0.14, mac: \"02:00:00:00:00:14\"}]}
listeners:
  - name: web
    vip: 10.0.0.100
    protocol: tcp
    port: 80
    backends: [{address: 10.1.0.11, port: 8080}, {address: 10.1.0.12, port: 8080}, {address: 10.1.0.13, port: 8080}, {address: 10.1.0.14, port: 8080}]
timeouts: {tcp_syn: 1h, tcp_established: 1h}
# Prefilled with SYNs: keep them all (the default cap, a quarter of the
# table, would evict three quarters of a prefill).
sessions: {capacity_per_worker: 12000000, half_open_max_per_worker: 12000000}
";

fn dataplane<P: Packet>(capacity: usize) -> Dataplane<P> {
    dataplane_scheduling::<P>(capacity, "")
}

/// [`dataplane`] with `lines` (scheduler, persistence) added to the
/// listener.
fn dataplane_scheduling<P: Packet>(capacity: usize, lines: &str) -> Dataplane<P> {
    dataplane_with::<P>(capacity, |y| y.replacen("    port: 80\n", &format!("    port: 80\n{lines}"), 1))
}

/// A dataplane for `capacity` sessions on [`CONFIG`] as `edit` changes it.
fn dataplane_with<P: Packet>(capacity: usize, edit: impl Fn(&str) -> String) -> Dataplane<P> {
    let yaml = edit(CONFIG);
    let cfg = config::parse(&yaml, Path::new("bench")).unwrap();
    let mut ids = IdRegistry::default();
    ids.assign(&cfg.forwarding, &|_| true).unwrap();
    let macs = [MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2])];
    let snap = Arc::new(Snapshot::build(&cfg, &macs, &ids, 1));
    let counters = Arc::new(WorkerCounters::new(2, config::MAX_LISTENERS, config::MAX_BACKENDS));
    let settings = CoreSettings {
        session_capacity: capacity,
        neighbor_capacity: 1024,
        pending_capacity: 64,
        // A per-instance key, as lbd runs with.
        // LBD_BENCH_HASH_KEY: a fixed key (80 hex digits), as the runner
        // gives lbd; else a random one, as lbd draws by default.
        hash_keys: match std::env::var("LBD_BENCH_HASH_KEY") {
            Ok(k) => lbcore::hashkey::HashKeySetting::parse(&k).unwrap(),
            Err(_) => lbcore::hashkey::HashKeySetting::Random,
        }
        .resolve()
        .unwrap(),
        ..CoreSettings::small(0, 1)
    };
    let mut dp = Dataplane::new(settings, snap, counters);
    dp.set_now(1);
    dp
}

fn established(c: &mut Criterion) {
    let mut g = c.benchmark_group("dataplane_established");
    g.sample_size(10);
    for n in [1_000u64, 1_000_000, 10_000_000] {
        g.throughput(Throughput::Elements(65536));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            // Built here, so a filtered run builds only what it measures.
            // 64k packets of random flows, processed in bursts of BURST.
            let pkts = established_sample(n);
            // The established packets go through boxed buffers (8-byte
            // moves, like mbufs); each burst first copies its frames into
            // them, as a PMD writes received packets.
            let (mut dpb, mut rec) = prefilled(n);
            let mut batch: Vec<Buf> = Vec::with_capacity(BURST);
            b.iter(|| replay(&mut dpb, &mut rec, &mut batch, &pkts));
        });
    }
    g.finish();
}

/// 65,536 flow numbers below `n`, drawn at random (xorshift, a fixed
/// seed: every group replays the same sample).
fn sample(n: u64) -> impl Iterator<Item = u64> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..65536).map(move |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    })
}

/// Clients' ACKs on [`sample`]'s flows.
fn established_sample(n: u64) -> Vec<Frame> {
    sample(n).map(|f| frame(f, 0x10)).collect()
}

/// A dataplane over boxed buffers (8-byte moves, like mbufs) whose `n`
/// flows' sessions their SYNs created, and the buffers to feed it.
fn prefilled(n: u64) -> (Dataplane<Buf>, Recycler) {
    let mut dpb = dataplane::<Buf>(n as usize + n as usize / 8 + 64);
    let mut rec = Recycler { free: (0..2 * BURST).map(|_| Buf(Box::new(frame(0, 0)))).collect(), tx: 0 };
    for i in 0..n {
        let mut b = rec.free.pop().unwrap();
        *b.0 = frame(i, 0x02);
        dpb.process(b, &mut rec);
    }
    (dpb, rec)
}

/// `pkts` through `dpb` in bursts, each first copied into recycled
/// buffers, as a PMD writes received packets.
fn replay(dpb: &mut Dataplane<Buf>, rec: &mut Recycler, batch: &mut Vec<Buf>, pkts: &[Frame]) {
    for burst in pkts.chunks(BURST) {
        for f in burst {
            let mut b = rec.free.pop().unwrap();
            *b.0 = *f;
            batch.push(b);
        }
        dpb.process_burst(batch.drain(..), rec);
    }
}

/// The backends' ACKs on the sessions of [`sample`]'s flows, as `dpb`
/// (prefilled with `n` flows) has them.
fn reply_sample(dpb: &Dataplane<Buf>, n: u64) -> Vec<Frame> {
    sample(n)
        .map(|f| {
            let req = frame(f, 0x10);
            let t = dpb.sessions();
            let key = lbcore::flow::FlowKey::new(
                u32::from_be_bytes(req.data[26..30].try_into().unwrap()),
                0x0a00_0064,
                u16::from_be_bytes(req.data[34..36].try_into().unwrap()),
                80,
                6,
            );
            let (slot, _) = t.lookup(&key, t.hash(&key)).expect("prefilled");
            common::reply_frame(&t.session(slot).reply_key())
        })
        .collect()
}

/// The return path: backend-to-client ACKs of the same random flows as
/// [`established`], at 1M sessions, so the two directions' lookups compare
/// on the same table and the same sample.
fn reply(c: &mut Criterion) {
    let mut g = c.benchmark_group("dataplane_reply");
    g.sample_size(10);
    for n in [1_000u64, 1_000_000] {
        g.throughput(Throughput::Elements(65536));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let (mut dpb, mut rec) = prefilled(n);
            let pkts = reply_sample(&dpb, n);
            let mut batch: Vec<Buf> = Vec::with_capacity(BURST);
            let tx0 = rec.tx;
            b.iter(|| replay(&mut dpb, &mut rec, &mut batch, &pkts));
            assert!(rec.tx > tx0, "replies were forwarded");
        });
    }
    g.finish();
}

fn new_flows(c: &mut Criterion) {
    let mut g = c.benchmark_group("dataplane_new_flows");
    g.sample_size(10);
    let n = 1 << 20;
    let pkts: Vec<Frame> = (0..n).map(|i| frame(i, 0x02)).collect();
    g.throughput(Throughput::Elements(n));
    // Maglev (the default), then the schedulers that read more per new
    // flow: least connections (4 backends x 1 worker's counters) and
    // persistence (the frames come from 64 client addresses, so nearly
    // every SYN finds its client's entry).
    for (name, lines) in [
        ("syn_creates_session", ""),
        ("least_connections", "    scheduler: least_connections\n"),
        ("round_robin_persistence", "    scheduler: round_robin\n    persistence: 1h\n"),
        // Every limit on, none reached: two buckets, the per-source table
        // (64 sources) and the session count per SYN.
        (
            "all_limits",
            "    limits: {new_connections_per_second: 1000000000, packets_per_second: 1000000000, per_source: \
             {new_connections_per_second: 1000000000, packets_per_second: 1000000000, max_sessions: 1000000}}\n    \
             protection: {scrub: {packets_per_second: 1000000000}, blackhole: {packets_per_second: 1000000000}}\n",
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || dataplane_scheduling::<Frame>(n as usize + 64, lines),
                |mut dp| {
                    let mut io = Sink::default();
                    for burst in pkts.chunks(BURST) {
                        dp.process_burst(burst.iter().copied(), &mut io);
                    }
                    dp
                },
                criterion::BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

fn rewrite(c: &mut Criterion) {
    let f = frame(7, 0x10);
    c.bench_function("nat_rewrite_and_checksums", |b| {
        b.iter(|| {
            let mut g = f;
            lbcore::nat::rewrite(&mut g.data[..60], lbcore::nat::Endpoint::Destination, 0x0a01_000b, 8080);
            std::hint::black_box(g.data[50])
        })
    });
}

criterion_group!(benches, established, reply, new_flows, rewrite);

/// `LBD_BENCH_COUNT=SCENARIO:SESSIONS:REPLAYS` (scenario `established` or
/// `reply`): build that table, replay the 64k-packet sample `REPLAYS`
/// times, and exit, without criterion. A fixed amount of work, for
/// instruction and branch counts under cachegrind
/// (`benches/instructions.sh`): on a shared machine whose rates drift by
/// tens of percent, those counts compare two builds exactly.
fn count(spec: &str) {
    let parts: Vec<&str> = spec.split(':').collect();
    let [scenario, n, replays] = parts[..] else { panic!("LBD_BENCH_COUNT={spec}: want SCENARIO:SESSIONS:REPLAYS") };
    let n: u64 = n.parse().expect("SESSIONS");
    let replays: usize = replays.parse().expect("REPLAYS");
    if scenario == "new" {
        return count_new_flows(n, replays);
    }
    let (mut dpb, mut rec) = prefilled(n);
    let pkts: Vec<Frame> = match scenario {
        "established" => established_sample(n),
        "reply" => reply_sample(&dpb, n),
        _ => panic!("LBD_BENCH_COUNT: scenario {scenario}: want established, reply or new"),
    };
    let mut batch: Vec<Buf> = Vec::with_capacity(BURST);
    let tx0 = rec.tx;
    let t = std::time::Instant::now();
    for _ in 0..replays {
        replay(&mut dpb, &mut rec, &mut batch, &pkts);
    }
    report_time(t, replays * pkts.len());
    assert_eq!(rec.tx - tx0, (replays * pkts.len()) as u64, "every packet forwarded");
}

/// The replays' time per packet, on stderr: a rough figure beside the
/// exact counts (the clock is read twice, not per packet).
fn report_time(since: std::time::Instant, packets: usize) {
    if packets > 0 {
        eprintln!("replays: {packets} packets, {:.1} ns/packet", since.elapsed().as_nanos() as f64 / packets as f64);
    }
}

/// The runner's new-flow row in miniature: a table for `2n + 64k`
/// sessions whose half-open cap (`n / 2`) is full after `n` SYNs, then
/// `replays` (at most 8) times 64k SYNs of flows never seen, each creating
/// a session and evicting the oldest half-open one. The frames of all 8
/// are built whatever `replays` is, so that building them cancels out of
/// the difference the script takes.
fn count_new_flows(n: u64, replays: usize) {
    assert!(replays <= 8, "LBD_BENCH_COUNT=new:N:REPLAYS: at most 8 replays");
    let cap = (n / 2).max(1);
    let yaml_cap = format!("half_open_max_per_worker: {cap}");
    let mut dp = dataplane_with::<Frame>((2 * n + 65536) as usize, |y| {
        y.replacen("half_open_max_per_worker: 12000000", &yaml_cap, 1)
    });
    let mut io = Sink::default();
    let syns = |from: u64, count: u64| (from..from + count).map(|i| frame(i, 0x02)).collect::<Vec<Frame>>();
    let prefill = syns(0, n);
    for burst in prefill.chunks(BURST) {
        dp.process_burst(burst.iter().copied(), &mut io);
    }
    let fresh = syns(n, 8 * 65536);
    let t = std::time::Instant::now();
    for pkts in fresh.chunks(65536).take(replays) {
        for burst in pkts.chunks(BURST) {
            dp.process_burst(burst.iter().copied(), &mut io);
        }
    }
    report_time(t, replays * 65536);
    assert_eq!(dp.sessions().half_open(), cap as usize, "the cap stayed full");
}

fn main() {
    if let Ok(spec) = std::env::var("LBD_BENCH_COUNT") {
        return count(&spec);
    }
    // Under `cargo test --benches` (no `--bench`), criterion runs each
    // bench once; run each counting scenario once too, small, so that
    // `benches/instructions.sh` keeps working (its asserts included).
    if !std::env::args().any(|a| a == "--bench") {
        for spec in ["established:1000:1", "reply:1000:1", "new:1000:1"] {
            count(spec);
        }
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
