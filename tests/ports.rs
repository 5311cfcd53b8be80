//! Port bring-up on devices that need no traffic: queues per worker, RSS
//! and RETA programming, the one-line errors of a misfit device.

mod common;

use common::*;

fn config(dir: &TempDir, prefix: &str, workers: usize, vdevs: &str, ports: &str) -> std::path::PathBuf {
    let p = dir.join("lbd.yaml");
    std::fs::write(
        &p,
        format!(
            "eal: [\"--no-pci\", \"--no-huge\", \"-m\", \"512\", \"--file-prefix\", \"{prefix}\", \"--no-telemetry\", {vdevs}]\n\
             lcores: {{workers: {workers}, idle_sleep: 100us}}\n\
             ports:\n{ports}\
             listeners:\n  - {{name: web, vip: 10.0.0.100, protocol: tcp, port: 80, backends: [{{address: 10.1.0.11, port: 80}}]}}\n\
             control: {{socket: {d}/lbd.sock}}\nmetrics: {{listen: \"off\"}}\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    p
}

/// net_null advertises RSS and a programmable RETA (it does not hash):
/// lbd asks it for Toeplitz with its key and a RETA whose bucket b (entry
/// i, b = i % 64) points at worker b % workers, and reads the RETA back.
#[test]
fn rss_reta_points_buckets_at_their_owner() {
    assert!(is_root());
    let dir = TempDir::new("ports-rss");
    let prefix = unique("lbdp");
    let cfg = config(
        &dir,
        &prefix,
        3,
        "\"--vdev\", \"net_null0,no-rx=1\", \"--vdev\", \"net_null1,no-rx=1\"",
        "  - {name: ext, device: net_null0, address: 10.0.0.1/24, exception: off}\n  - {name: int, device: net_null1, address: 10.1.0.1/24, exception: off}\n",
    );
    let mut lbd = Lbd::start(&cfg, dir.path(), &prefix);
    let log = lbd.log_text();
    assert!(log.contains("rxq=3"), "{log}");
    let stats = lbd.stats_now();
    for port in stats["ports"].as_array().unwrap() {
        let mode = port["rss_mode"].as_str().unwrap();
        // net_null cannot hash the source or destination fields alone.
        assert_eq!(mode, "flows", "{port}");
        let reta: Vec<u64> = port["rss_reta"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        assert!(reta.len() >= 64, "{port}");
        for (i, q) in reta.iter().enumerate() {
            assert_eq!(*q as usize, (i % 64) % 3, "RETA entry {i}");
        }
    }
    let (status, stats) = lbd.stop();
    assert!(status.success());
    assert_eq!(stats["drops_total"].as_u64(), Some(0));
    assert_eq!(stats["mempool_in_use"].as_u64(), Some(0));
}

/// A device with fewer TX queues than workers is refused in one line.
#[test]
fn too_few_tx_queues_is_one_clear_line() {
    assert!(is_root());
    let dir = TempDir::new("ports-txq");
    let prefix = unique("lbdp");
    let cfg = config(
        &dir,
        &prefix,
        2,
        &format!("\"--vdev\", \"net_pcap0,rx_pcap={0}/in.pcap,tx_pcap={0}/out.pcap\"", dir.path().display()),
        "  - {name: ext, device: net_pcap0, address: 10.0.0.1/24, exception: off, gateway: 10.0.0.254}\n",
    );
    // An empty but valid pcap file.
    let mut hdr = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
    hdr.extend_from_slice(&[0; 8]);
    hdr.extend_from_slice(&65535u32.to_le_bytes());
    hdr.extend_from_slice(&1u32.to_le_bytes());
    std::fs::write(dir.join("in.pcap"), hdr).unwrap();
    let out = std::process::Command::new(lbd_bin()).arg("-c").arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap();
    assert!(
        last.starts_with("lbd: port `ext` (net_pcap0, driver net_pcap) has 1 TX queue(s) but 2 workers need one each"),
        "{last}"
    );
    assert!(!std::path::Path::new(&format!("/var/run/dpdk/{prefix}")).exists());
}
