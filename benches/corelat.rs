//! The round trip of one cache line between two CPUs, for the packet-rate
//! runner (benches/run.py) to record beside its 2-worker rows.
//!
//!     corelat CPU_A CPU_B
//!
//! Two threads, pinned one to each CPU, pass a counter back and forth
//! through one cache line; prints the median of 7 trials of 100,000 round
//! trips, in ns per round trip. On the runner's 2-vCPU machines the figure
//! moved between ~57 and ~330 ns from one second to the next (the host
//! places the two vCPUs on cores that share a cache, or not), and the
//! software hand-off row, which moves every other packet between the two
//! workers, moved with it (benches/RESULTS.md, round two, eighth sitting).
//! A figure, not a test: nothing here asserts a time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

const TRIPS: u64 = 100_000;
const TRIALS: usize = 7;

#[repr(align(64))]
struct Line(AtomicU64);

fn pin(cpu: usize) {
    if let Err(e) = engine::dpdk::pin_current_thread(cpu as u32) {
        eprintln!("corelat: cannot pin to CPU {cpu}: {e}");
        std::process::exit(1);
    }
}

/// One trial: ns per round trip.
fn trial(a: usize, b: usize) -> f64 {
    let line = Arc::new(Line(AtomicU64::new(0)));
    let other = Arc::clone(&line);
    let echo = std::thread::spawn(move || {
        pin(b);
        for i in 0..=TRIPS {
            while other.0.load(Ordering::Acquire) != 2 * i + 1 {
                std::hint::spin_loop();
            }
            other.0.store(2 * i + 2, Ordering::Release);
        }
    });
    pin(a);
    let trip = |i: u64| {
        line.0.store(2 * i + 1, Ordering::Release);
        while line.0.load(Ordering::Acquire) != 2 * i + 2 {
            std::hint::spin_loop();
        }
    };
    // Trip 0 waits for the echo thread to start and pin itself: untimed.
    trip(0);
    let t = Instant::now();
    (1..=TRIPS).for_each(trip);
    let ns = t.elapsed().as_nanos() as f64 / TRIPS as f64;
    echo.join().expect("echo thread");
    ns
}

fn main() {
    let usage = |why: &str| -> ! {
        eprintln!("corelat: {why}\nusage: corelat CPU_A CPU_B (two different CPUs)");
        std::process::exit(2);
    };
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap_or_else(|_| usage(&format!("{a:?} is not a CPU number"))))
        .collect();
    let [a, b] = args[..] else { usage("two CPU numbers wanted") };
    if a == b {
        // Both threads on one CPU would pass the line once per scheduler
        // time slice: minutes per trial.
        usage("CPU_A and CPU_B must differ");
    }
    let mut ns: Vec<f64> = (0..TRIALS).map(|_| trial(a, b)).collect();
    ns.sort_by(f64::total_cmp);
    println!("{:.1}", ns[TRIALS / 2]);
}
