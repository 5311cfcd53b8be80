//! A real Prometheus server (Debian's package) scrapes lbd while traffic
//! flows; the assertions go through Prometheus's own HTTP query API.

mod common;

use common::*;
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Prometheus child, killed by PID on drop.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs an instant query; returns the result vector.
fn query(port: u16, q: &str) -> Vec<Value> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "-G", &format!("http://127.0.0.1:{port}/api/v1/query"), "--data-urlencode"])
        .arg(format!("query={q}"))
        .output()
        .unwrap();
    let v: Value = match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(_) => return Vec::new(),
    };
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

fn scalar(r: &Value) -> f64 {
    r["value"][1].as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN)
}

#[test]
fn prometheus_scrapes_rising_counters_and_the_latency_histogram() {
    assert!(is_root());
    let prom_bin = which("prometheus").expect("Debian's prometheus package (testbed/install-deps.sh installs it)");
    let dir = TempDir::new("prom");
    let prefix = unique("lbdm");
    let script = "import sys\nfrom scapy.all import Ether, IP, TCP, Raw, wrpcap\n\
        wrpcap(sys.argv[1], [Ether(dst='02:00:00:00:00:01', src='02:00:00:00:00:fe')/IP(src='192.168.9.%d' % (i + 1), dst='10.0.0.100')/TCP(sport=20000 + i, dport=80, flags='A')/Raw(b'x' * 16) for i in range(64)])\n";
    run(Command::new(python()).arg("-c").arg(script).arg(dir.join("in.pcap")));
    let cfg = dir.join("lbd.yaml");
    std::fs::write(
        &cfg,
        format!(
            "eal: [\"--no-pci\", \"--no-huge\", \"-m\", \"512\", \"--file-prefix\", \"{prefix}\", \"--no-telemetry\",\n\
             \x20     \"--vdev\", \"net_pcap0,rx_pcap={d}/in.pcap,infinite_rx=1\", \"--vdev\", \"net_null0,no-rx=1\"]\n\
             ports:\n\
             \x20 - {{name: ext, device: net_pcap0, address: 10.0.0.1/24, exception: off, mac: \"02:00:00:00:00:01\", gateway: 10.0.0.254, neighbors: [{{ip: 10.0.0.254, mac: \"02:00:00:00:00:fe\"}}]}}\n\
             \x20 - {{name: int, device: net_null0, address: 10.1.0.1/24, exception: off, neighbors: [{{ip: 10.1.0.11, mac: \"02:00:00:00:00:11\"}}]}}\n\
             listeners:\n  - {{name: web, vip: 10.0.0.100, protocol: tcp, port: 80, backends: [{{address: 10.1.0.11, port: 8080}}]}}\n\
             control: {{socket: {d}/lbd.sock}}\n\
             metrics: {{listen: \"127.0.0.1:0\"}}\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let lbd = Lbd::start(&cfg, dir.path(), &prefix);
    let target = lbd.metrics_addr().expect("metrics address in the ready line");

    let port = free_port();
    let prom_cfg = dir.join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!("global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: lbd\n    static_configs: [{{targets: ['{target}']}}]\n"),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let _prom = Prometheus(
        Command::new(prom_bin)
            .arg(format!("--config.file={}", prom_cfg.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus"),
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    // Every query polled until it answers: each needs scrapes that
    // Prometheus makes on its own time (two within 5 s for a rate).
    let p99_query = "histogram_quantile(0.99, sum by (le) (rate(lbd_packet_processing_seconds_bucket[5s])))";
    let (mut rate, mut samples, mut up, mut p99) = (0.0, 0.0, 0.0, Vec::new());
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        up = query(port, "up{job=\"lbd\"}").first().map_or(0.0, scalar);
        rate = query(port, "sum(rate(lbd_port_rx_packets_total{port=\"ext\"}[5s]))").first().map_or(0.0, scalar);
        samples = query(port, "sum(lbd_packet_processing_seconds_count)").first().map_or(0.0, scalar);
        p99 = query(port, p99_query);
        if up == 1.0 && rate > 0.0 && samples > 0.0 && p99.first().is_some_and(|v| scalar(v).is_finite()) {
            break;
        }
    }
    println!("Prometheus sees lbd up={up}, rx {rate:.0} packets/s, {samples} latency samples");
    assert_eq!(
        up,
        1.0,
        "Prometheus scraped lbd:\n{}",
        std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
    );
    assert!(rate > 0.0, "packet counters rose between scrapes");
    assert!(samples > 0.0, "the per-packet histogram has samples");
    // Histogram buckets are queryable as such.
    assert!(!p99.is_empty() && scalar(&p99[0]).is_finite(), "{p99:?}");
    println!("p99 per-packet processing time per Prometheus: {:.0} ns", scalar(&p99[0]) * 1e9);
    let info = query(port, "lbd_build_info");
    assert_eq!(info[0]["metric"]["dpdk_version"].as_str().map(|s| s.starts_with("22.11")), Some(true), "{info:?}");
    let drops = query(port, "sum(lbd_drops_total)");
    assert_eq!(drops.first().map(scalar), Some(0.0));
    let (status, _) = lbd.stop();
    assert!(status.success());
}

fn which(name: &str) -> Option<String> {
    let out = Command::new("sh").arg("-c").arg(format!("command -v {name}")).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
