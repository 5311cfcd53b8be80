//! Session table micro-benchmarks (criterion): lookup hit and miss at 1k,
//! 1M and 10M sessions, one at a time and in prefetched batches of 32 (as
//! the data path does), insert, and the expiry sweep.

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use engine::dpdk::DpdkPlacement;
use lbcore::flow::FlowKey;
use lbcore::session::{Session, SessionState, StateTimeouts};
use std::hint::black_box;

/// As lbd's workers have it: real prefetches, huge-page advice.
type SessionTable = lbcore::session::SessionTable<DpdkPlacement>;

fn session(i: u64) -> Session {
    Session::new(
        6,
        (0xac10_0000 | (i >> 14) as u32, 1024 + (i & 0x3fff) as u16),
        (0x0a00_0064, 80),
        (0x0a01_000b + (i % 4) as u32, 8080),
        lbcore::ids::ListenerId(0),
        lbcore::ids::BackendId((i % 4) as u32),
        SessionState::TcpEstablished,
        0,
    )
}

/// A per-instance key, as lbd's workers have it.
fn hash_key() -> lbcore::flow::SessionHashKey {
    lbcore::hashkey::HashKeySetting::Random.resolve().unwrap().session
}

fn table(n: u64) -> SessionTable {
    let mut t = SessionTable::with_key(n as usize + n as usize / 8 + 16, hash_key());
    for i in 0..n {
        t.insert(session(i)).unwrap();
    }
    t
}

/// Random keys of existing (or, with `miss`, absent) sessions.
fn keys(t: &SessionTable, n: u64, count: usize, miss: bool, reply: bool) -> Vec<(FlowKey, u64)> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = if miss { n + x % n } else { x % n };
            let k = if reply { session(i).reply_key() } else { session(i).request_key() };
            (k, t.hash(&k))
        })
        .collect()
}

fn lookups(c: &mut Criterion) {
    let mut g = c.benchmark_group("session_lookup");
    g.sample_size(10);
    for n in [1_000u64, 1_000_000, 10_000_000] {
        let t = table(n);
        for (miss, reply) in [(false, false), (false, true), (true, false)] {
            let ks = keys(&t, n, 4096, miss, reply);
            let what = match (miss, reply) {
                (true, _) => "miss",
                (false, false) => "hit",
                (false, true) => "hit_reply",
            };
            g.throughput(Throughput::Elements(ks.len() as u64));
            g.bench_with_input(BenchmarkId::new(format!("{what}/one_by_one"), n), &n, |b, _| {
                b.iter(|| {
                    let mut found = 0;
                    for (k, h) in &ks {
                        found += usize::from(t.lookup(k, *h).is_some());
                    }
                    black_box(found)
                })
            });
            g.bench_with_input(BenchmarkId::new(format!("{what}/bucket_prefetch_32"), n), &n, |b, _| {
                b.iter(|| {
                    let mut found = 0;
                    for batch in ks.chunks(32) {
                        for (_, h) in batch {
                            t.prefetch(*h);
                        }
                        for (k, h) in batch {
                            found += usize::from(t.lookup(k, *h).is_some());
                        }
                    }
                    black_box(found)
                })
            });
        }
    }
    g.finish();
}

fn insert_and_expire(c: &mut Criterion) {
    let mut g = c.benchmark_group("session_churn");
    g.sample_size(10);
    let n = 1_000_000u64;
    g.throughput(Throughput::Elements(n));
    g.bench_function("insert_1M", |b| {
        b.iter_batched(
            || SessionTable::with_key(n as usize + 16, hash_key()),
            |mut t| {
                for i in 0..n {
                    t.insert(session(i)).unwrap();
                }
                t
            },
            BatchSize::PerIteration,
        )
    });
    let timeouts = StateTimeouts([0, 1, 1, 1, 1, 1, 1]);
    g.bench_function("expire_1M", |b| {
        b.iter_batched(
            || table(n),
            |mut t| {
                let removed = t.expire(10, n as usize, &timeouts, |_| {});
                assert_eq!(removed as u64, n);
                t
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, lookups, insert_and_expire);
criterion_main!(benches);
