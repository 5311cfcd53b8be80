//! How long a configuration change takes: building the snapshot on the
//! control thread, and from publishing it until every worker runs it.
//!
//! Starts lbd (2 workers on net_null, so the workers loop at full speed)
//! and applies 200 weight changes through the control socket, for
//! listeners with 10, 100 and 1000 backends. Needs root (DPDK).
//! `cargo bench --bench change_propagation`; prints a table.

use lbproto::{read_frame, write_frame, BackendRef, Outcome, Request, RequestFrame, Response, ResponseFrame};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn lbd_bin() -> PathBuf {
    // target/<profile>/deps/change_propagation-* -> target/<profile>/lbd
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().unwrap().parent().unwrap().join("lbd");
    assert!(p.exists(), "{} missing: cargo build --release --bins first", p.display());
    p
}

fn call(s: &mut UnixStream, id: u64, request: Request) -> Response {
    write_frame(s, &RequestFrame { id, request }).unwrap();
    let r: ResponseFrame = read_frame(s).unwrap().unwrap();
    match r.result {
        Outcome::Ok(r) => r,
        Outcome::Error(e) => panic!("{e}"),
    }
}

fn percentile(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("lbd-bench-prop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "{:>9} | {:>14} {:>14} | {:>16} {:>16} {:>16}",
        "backends", "build p50 us", "build p99 us", "propagate p50 us", "propagate p99 us", "propagate max us"
    );
    for n in [10usize, 100, 1000] {
        let socket = dir.join(format!("lbd{n}.sock"));
        let mut backends = String::new();
        for i in 0..n {
            backends += &format!("      - {{address: 10.1.{}.{}, port: 8080}}\n", i / 250, i % 250 + 1);
        }
        let cfg = dir.join(format!("lbd{n}.yaml"));
        std::fs::write(
            &cfg,
            format!(
                "eal: [\"--no-pci\", \"--no-huge\", \"-m\", \"512\", \"--file-prefix\", \"lbdbench{n}\", \"--no-telemetry\", \"--vdev\", \"net_null0,no-rx=1\"]\n\
                 lcores: {{workers: 2}}\n\
                 ports:\n  - {{name: p, device: net_null0, address: 10.0.0.1/8, exception: off}}\n\
                 listeners:\n  - name: web\n    vip: 10.0.0.100\n    protocol: tcp\n    port: 80\n    backends:\n{backends}\
                 sessions: {{capacity_per_worker: 1000}}\n\
                 control: {{socket: {}}}\nmetrics: {{listen: \"off\"}}\n",
                socket.display()
            ),
        )
        .unwrap();
        let mut child =
            Command::new(lbd_bin()).arg("-c").arg(&cfg).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let start = Instant::now();
        let mut s = loop {
            if let Ok(s) = UnixStream::connect(&socket) {
                break s;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "lbd did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        call(&mut s, 0, Request::Hello { protocol: lbproto::PROTOCOL_VERSION, client: "bench".into() });
        let (mut build, mut prop) = (Vec::new(), Vec::new());
        for i in 0..200u64 {
            let r = call(
                &mut s,
                i + 1,
                Request::BackendSetWeight {
                    listener: "web".into(),
                    backend: BackendRef { address: "10.1.0.1".into(), port: Some(8080) },
                    weight: (i % 7 + 1) as u32,
                },
            );
            let Response::Changed { change } = r else { panic!("{r:?}") };
            build.push(change.build_us);
            prop.push(change.propagation_us);
        }
        println!(
            "{n:>9} | {:>14} {:>14} | {:>16} {:>16} {:>16}",
            percentile(&mut build, 0.5),
            percentile(&mut build, 0.99),
            percentile(&mut prop, 0.5),
            percentile(&mut prop, 0.99),
            percentile(&mut prop, 1.0)
        );
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/lbdbench{n}"));
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "build = validation + ids + Maglev table (M=65537) + snapshot; propagate = publish until every worker runs it"
    );
}
