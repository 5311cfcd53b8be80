//! Security groups (criterion): the verdict for a new flow's client
//! address with 10 and 10 000 rules (compiled interval map, and the naive
//! first-match scan it replaces), building the verdicts for a snapshot,
//! and the whole new-flow path (a SYN creating a session) with and
//! without a group.

mod common;

use common::{frame, Frame, Sink};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lbcore::config::{self, Protocol};
use lbcore::counters::WorkerCounters;
use lbcore::dataplane::{CoreSettings, Dataplane};
use lbcore::security::{first_match, SourceVerdicts};
use lbcore::snapshot::{IdRegistry, Snapshot};
use lbcore::testing::Xorshift;
use lbcore::wire::MacAddr;
use std::path::Path;
use std::sync::Arc;

const BURST: usize = 64;

/// A group of `n` rules as an operator might write it: mostly deny
/// lists of /24../32 prefixes (1-4 each), allow rules for other ports
/// with /16../24 prefixes, some UDP rules, and last an allow for the
/// clients the new-flow benchmark sends from (172.16.0.0/12), default
/// deny. Returns the YAML and the number of prefixes.
fn group_yaml(n: usize) -> (String, usize) {
    let mut r = Xorshift::new(0x2545_f491_4f6c_dd1d);
    let mut prefixes = 0;
    let mut y = String::from("security_groups:\n  edge:\n    default: deny\n    rules:\n");
    let prefix = |r: &mut Xorshift, min_len: u64| loop {
        let len = min_len + r.below(33 - min_len);
        let a = (r.next_u64() as u32) & if len == 0 { 0 } else { u32::MAX << (32 - len) };
        // Keep the benchmark's clients (172.16.0.0/12) out of the lists.
        if a >> 20 != 0xac1 {
            return format!("{}/{len}", std::net::Ipv4Addr::from(a));
        }
    };
    for _ in 0..n.saturating_sub(1) {
        let kind = r.below(10);
        let (action, protocol, ports, min_len, count) = match kind {
            0..=6 => ("deny", "any", "", 24, 1 + r.below(4)),
            7 | 8 => ("allow", "tcp", ["443", "\"8000-8100\"", "22"][r.index(3)], 16, 1 + r.below(2)),
            _ => ("deny", "udp", "53", 24, 1 + r.below(3)),
        };
        let sources: Vec<String> = (0..count).map(|_| prefix(&mut r, min_len)).collect();
        prefixes += sources.len();
        let ports = if ports.is_empty() { String::new() } else { format!(", ports: {ports}") };
        y += &format!("      - {{action: {action}, protocol: {protocol}, sources: [{}]{ports}}}\n", sources.join(", "));
    }
    y += "      - {action: allow, protocol: tcp, source: 172.16.0.0/12, ports: 80}\n";
    (y, prefixes + 1)
}

// Every SYN of the new-flow bench keeps its half-open session: the cap
// (a quarter of the table by default) would evict three in four.
const CONFIG: &str = "
sessions: {capacity_per_worker: 1048640, half_open_max_per_worker: 1048640}
ports:
  - {name: ext, device: a, address: 10.0.0.1/24, gateway: 10.0.0.254, mac: \"02:00:00:00:00:01\", neighbors: [{ip: 10.0.0.254, mac: \"02:00:00:00:00:fe\"}]}
  - {name: int, device: b, address: 10.1.0.1/24, neighbors: [{ip: 10.1.0.11, mac: \"02:00:00:00:00:11\"}, {ip: 10.1.0.12, mac: \"02:00:00:00:00:12\"}]}
listeners:
  - name: web
    vip: 10.0.0.100
    protocol: tcp
    port: 80
    backends: [{address: 10.1.0.11, port: 8080}, {address: 10.1.0.12, port: 8080}]
timeouts: {tcp_syn: 1h, tcp_established: 1h}
";

fn parsed(rules: Option<usize>) -> config::Config {
    let yaml = match rules {
        Some(n) => format!("{CONFIG}{}security:\n  default_group: edge\n", group_yaml(n).0),
        None => CONFIG.to_owned(),
    };
    config::parse(&yaml, Path::new("bench")).unwrap()
}

fn verdicts(c: &mut Criterion) {
    let mut g = c.benchmark_group("security_verdict");
    for n in [10usize, 10_000] {
        let cfg = parsed(Some(n));
        let group = &cfg.forwarding.security_groups["edge"];
        let slots: Vec<u32> = (0..=group.rules.len() as u32).collect();
        let v = SourceVerdicts::build(group, slots, Protocol::Tcp, 80);
        println!("{n} rules, {} prefixes: {} intervals", group_yaml(n).1, v.intervals());
        let mut r = Xorshift::new(7);
        let addrs: Vec<u32> = (0..65536).map(|_| r.next_u64() as u32).collect();
        g.throughput(Throughput::Elements(addrs.len() as u64));
        g.bench_with_input(BenchmarkId::new("compiled", n), &n, |b, _| {
            b.iter(|| addrs.iter().map(|a| u64::from(v.verdict(*a).allows())).sum::<u64>())
        });
        let few = &addrs[..if n > 100 { 256 } else { addrs.len() }];
        g.throughput(Throughput::Elements(few.len() as u64));
        g.bench_with_input(BenchmarkId::new("first_match_scan", n), &n, |b, _| {
            b.iter(|| few.iter().map(|a| first_match(group, Protocol::Tcp, 80, *a).unwrap_or(0) as u64).sum::<u64>())
        });
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("build", n), &n, |b, _| {
            b.iter(|| {
                let slots: Vec<u32> = (0..=group.rules.len() as u32).collect();
                SourceVerdicts::build(group, slots, Protocol::Tcp, 80).intervals()
            })
        });
    }
    g.finish();
}

fn dataplane(cfg: &config::Config, capacity: usize) -> Dataplane<Frame> {
    let mut ids = IdRegistry::default();
    ids.assign(&cfg.forwarding, &|_| true).unwrap();
    let macs = [MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2])];
    let snap = Arc::new(Snapshot::build(cfg, &macs, &ids, 1));
    let counters = Arc::new(WorkerCounters::new(2, config::MAX_LISTENERS, config::MAX_BACKENDS));
    let settings = CoreSettings {
        session_capacity: capacity,
        neighbor_capacity: 1024,
        pending_capacity: 64,
        ..CoreSettings::small(0, 1)
    };
    let mut dp = Dataplane::new(settings, snap, counters);
    dp.set_now(1);
    dp
}

fn new_flows(c: &mut Criterion) {
    let mut g = c.benchmark_group("security_new_flows");
    g.sample_size(10);
    let n = 1 << 20;
    let pkts: Vec<Frame> = (0..n).map(|i| frame(i, 0x02)).collect();
    g.throughput(Throughput::Elements(n));
    for (name, rules) in [("no_group", None), ("group_10_rules", Some(10)), ("group_10000_rules", Some(10_000))] {
        let cfg = parsed(rules);
        g.bench_function(name, |b| {
            b.iter_batched(
                || dataplane(&cfg, n as usize + 64),
                |mut dp| {
                    let mut io = Sink::default();
                    for burst in pkts.chunks(BURST) {
                        dp.process_burst(burst.iter().copied(), &mut io);
                    }
                    assert_eq!(dp.sessions().len(), n as usize, "every SYN admitted");
                    dp
                },
                criterion::BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, verdicts, new_flows);
criterion_main!(benches);
