//! Idle workers that sleep (`lcores.idle: adaptive`) through the namespace
//! testbed: real TCP connections from the client namespace, each of which
//! must succeed, with nothing lost anywhere on lbd's path; and the workers'
//! sleep counters.
//!
//! Namespaces and busy DPDK lcores on two shared CPUs: one test at a time.

mod common;

use common::topology::Topology;
use common::*;
use serde_json::Value;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn guard() -> std::sync::MutexGuard<'static, ()> {
    assert!(is_root(), "the testbed needs root (namespaces, DPDK)");
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The topology's configuration with `lcores` (a YAML flow mapping's
/// inside) instead of its own.
fn with_lcores(cfg: String, lcores: &str) -> String {
    let start = cfg.find("lcores: {").expect("lcores line");
    let end = start + cfg[start..].find('\n').expect("end of line");
    format!("{}lcores: {{{lcores}}}{}", &cfg[..start], &cfg[end..])
}

fn event(stats: &Value, name: &str) -> u64 {
    stats["events"][name].as_u64().unwrap_or_else(|| panic!("no event {name} in {}", stats["events"]))
}

/// `n` connections one after another, each asking once; how many a
/// backend answered.
fn connections(t: &Topology, n: usize) -> usize {
    t.sequential_connections(n, &[]).iter().filter(|(_, b)| b.starts_with("be")).count()
}

#[test]
fn adaptive_workers_sleep_and_lose_no_connection() {
    let _g = guard();
    let t = Topology::up();
    let dir = TempDir::new("idle-adaptive");
    let mut lbd = t.start_lbd_with(1, &dir, |c| with_lcores(c, "workers: 1, idle: adaptive, idle_sleep: 500us"));
    assert!(lbd.log_text().contains("idle adaptive (lcores.idle)"), "{}", lbd.log_text());
    // No lcores.burst: sized to the L1 data cache (daemon::burst_decision).
    assert!(
        ["burst 32 (auto: L1d", "burst 64 (auto: L1d"].iter().any(|b| lbd.log_text().contains(b)),
        "{}",
        lbd.log_text()
    );

    // Quiet: the worker goes to sleep.
    let deadline = Instant::now() + Duration::from_secs(30);
    while event(&lbd.stats_now(), "idle_sleeps") == 0 {
        assert!(Instant::now() < deadline, "the idle worker never slept");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Batches of connections, each after a quiet spell long enough for
    // the sleeps to reach their longest, until traffic has found the
    // worker asleep; every connection must complete.
    let before = lbd.stats_now();
    let kernel_before = t.lbd_veths_rx();
    let (mut asked, mut done) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        asked += 100;
        done += connections(&t, 100);
        let s = lbd.stats_now();
        if event(&s, "idle_wakeups") > event(&before, "idle_wakeups") && asked >= 300 {
            break;
        }
        assert!(Instant::now() < deadline, "no traffic found the worker asleep: {}", s["events"]);
    }
    assert_eq!(done, asked, "connections lost");

    // Nothing lost on lbd's path: what the kernel gave the veths lbd read,
    // and lbd dropped nothing.
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let s = lbd.stats_now();
        let (k, d) =
            (t.lbd_veths_rx() - kernel_before, device_counter(&s, "ipackets") - device_counter(&before, "ipackets"));
        if k == d {
            break s;
        }
        assert!(Instant::now() < deadline, "the kernel received {k} frames on lbd's veths, lbd {d}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(after["drops_total"].as_u64(), Some(0), "drops: {}", after["drops"]);
    assert!(event(&after, "idle_sleeps") > event(&before, "idle_sleeps"));
    assert!(event(&after, "idle_sleep_us") > 0);
    assert!(event(&after, "sessions_created") - event(&before, "sessions_created") >= asked as u64);

    // The topology's configuration serves metrics: the check cannot be skipped.
    let addr = lbd.metrics_addr().expect("the topology's lbd serves metrics");
    let text = scrape(&addr);
    assert!(text.contains("lbd_worker_idle_sleeps_total{worker=\"0\"}"), "{text}");
    let (status, _) = lbd.stop();
    assert!(status.success());
}

#[test]
fn busy_workers_never_sleep() {
    let _g = guard();
    let t = Topology::up();
    let dir = TempDir::new("idle-busy");
    let mut lbd = t.start_lbd_with(1, &dir, |c| with_lcores(c, "workers: 1, idle: busy, burst: 16"));
    assert!(lbd.log_text().contains("idle busy (lcores.idle)"), "{}", lbd.log_text());
    assert!(lbd.log_text().contains("burst 16 (lcores.burst)"), "{}", lbd.log_text());
    assert_eq!(connections(&t, 50), 50);
    // Long enough for thousands of sleeps, were there any.
    std::thread::sleep(Duration::from_millis(500));
    let s = lbd.stats_now();
    assert!(event(&s, "polls") > 10_000, "{}", s["events"]);
    assert_eq!(event(&s, "idle_sleeps"), 0);
    assert_eq!(event(&s, "idle_wakeups"), 0);
}

/// A worker off its CPU leaves frames in af_packet's ring; what does not
/// fit, the kernel drops, and DPDK's PMD does not count. lbd reads the
/// socket's drop count into the port's `imissed`: with lbd stopped, 1000
/// datagrams meet a ring of 64 frames, and every frame the kernel gave
/// lbd's veths is either received or missed.
#[test]
fn af_packet_ring_overflow_is_counted() {
    let _g = guard();
    let t = Topology::up();
    let dir = TempDir::new("idle-ring");
    let mut lbd = t.start_lbd_with(1, &dir, |c| c.replace("framecnt=4096", "framecnt=64"));
    // The client learns the VIP's MAC while lbd can still answer.
    assert_eq!(connections(&t, 1), 1);
    let missed = t.overflow_stopped_lbd(&mut lbd, 1000);
    assert!(missed >= 1000 - 64, "missed {missed}");
    let (status, _) = lbd.stop();
    assert!(status.success());
}
