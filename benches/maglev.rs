//! Maglev table builds and lookups (criterion).
//!
//! The Maglev paper (NSDI 2016, §5.3) reports 1.8 ms to build a table of
//! M = 65537 entries for 1000 backends (and 22.7 ms for M = 655373).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lbcore::maglev::MaglevTable;
use std::hint::black_box;

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("10.{}.{}.{}:8080", i / 65536, (i / 256) % 256, i % 256)).collect()
}

fn build(c: &mut Criterion) {
    let mut g = c.benchmark_group("maglev_build");
    g.sample_size(20);
    for m in [65_537u32, 655_373] {
        for n in [10usize, 100, 1000] {
            let nm = names(n);
            let w = vec![1u32; n];
            g.bench_with_input(BenchmarkId::new(format!("M={m}"), n), &n, |b, _| {
                b.iter(|| black_box(MaglevTable::build_named(&nm, &w, m)))
            });
        }
    }
    g.finish();
}

fn lookup(c: &mut Criterion) {
    let t = MaglevTable::build_named(&names(100), &[1; 100], 65_537);
    let mut h = 0x9e37_79b9_7f4a_7c15u64;
    c.bench_function("maglev_lookup", |b| {
        b.iter(|| {
            h = h.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            black_box(t.lookup(h))
        })
    });
}

criterion_group!(benches, build, lookup);
criterion_main!(benches);
