//! The drop reasons that normal traffic never shows, provoked through a
//! real `lbd` on virtual devices: each counter asserted (exactly where
//! the outcome is deterministic), and no mbuf leaked (the mempool's in-use
//! count back to 0 once the ports are closed).
//!
//! - `nat_tuple_conflict`, `no_route`, `shutdown`: one pcap replayed once.
//! - `tx_full`: the TX side of the port is a veth whose link is down, so
//!   the device takes no packet.
//! - `handoff_ring_full`: six ports flood flows that another worker owns
//!   faster than it can take them.

mod common;

use common::*;
use lbcore::wire::frame::FrameBuilder;
use lbcore::wire::MacAddr;
use serde_json::Value;
use std::net::Ipv4Addr;

use std::process::Command;
use std::time::{Duration, Instant};

const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc1];
const TCP: u8 = 6;
const UDP: u8 = 17;
const SYN: u8 = 0x02;
const SYN_ACK: u8 = 0x12;

fn ip(s: &str) -> u32 {
    u32::from(s.parse::<Ipv4Addr>().unwrap())
}

/// An Ethernet/IPv4/TCP|UDP frame with valid checksums, from the peer.
#[allow(clippy::too_many_arguments)]
fn frame(
    dst_mac: [u8; 6],
    proto: u8,
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    FrameBuilder::new(MacAddr(PEER_MAC), MacAddr(dst_mac)).l4(proto, src, dst, sport, dport, flags, payload)
}

fn drop_count(stats: &Value, reason: &str) -> u64 {
    stats["drops"][reason].as_u64().unwrap_or_else(|| panic!("no drop counter {reason}: {stats}"))
}

fn sum_ports(stats: &Value, field: &str) -> u64 {
    stats["ports"].as_array().unwrap().iter().map(|p| p[field].as_u64().unwrap()).sum()
}

/// Stops `lbd` and checks it exited cleanly with every mbuf back.
fn stop_without_leak(lbd: Lbd) -> Value {
    let (status, stats) = lbd.stop();
    assert!(status.success(), "lbd exited with {status}");
    assert_eq!(stats["mempool_in_use"].as_u64(), Some(0), "mbufs leaked: {stats}");
    stats
}

fn eal(prefix: &str, vdevs: &[String]) -> String {
    let mut args: Vec<String> =
        ["--no-pci", "--no-huge", "-m", "512", "--file-prefix", prefix, "--no-telemetry"].map(String::from).to_vec();
    for v in vdevs {
        args.push("--vdev".into());
        args.push(v.clone());
    }
    format!("eal: {}\n", serde_json::to_string(&args).unwrap())
}

fn control(dir: &TempDir) -> String {
    format!("control: {{socket: {}/lbd.sock}}\nmetrics: {{listen: \"off\"}}\n", dir.path().display())
}

/// `nat_tuple_conflict`: one client endpoint through two VIPs to one
/// backend. `no_route`: a backend's answer to a client off every port's
/// subnet, with no gateway. `shutdown`: packets still waiting for an ARP
/// answer (retries far apart) when lbd stops.
#[test]
fn nat_tuple_conflict_no_route_and_shutdown() {
    assert!(is_root(), "starts DPDK: run as root");
    let dir = TempDir::new("drops-ncs");
    let prefix = unique("lbdd");
    let (client, far_client, backend) = (ip("10.0.0.7"), ip("192.168.1.10"), ip("10.0.0.11"));
    let (vip_a, vip_b, vip_c) = (ip("10.0.0.100"), ip("10.0.0.103"), ip("10.0.0.104"));
    let mut frames = Vec::new();
    // Forwarded: the first flow through VIP a.
    frames.push(frame(LB_MAC, TCP, client, vip_a, 40000, 80, SYN, b""));
    // 3 x nat_tuple_conflict: the same client endpoint through VIP b.
    for _ in 0..3 {
        frames.push(frame(LB_MAC, TCP, client, vip_b, 40000, 80, SYN, b""));
    }
    // Forwarded, then 2 x no_route: the backend answers a far client.
    frames.push(frame(LB_MAC, TCP, far_client, vip_a, 41000, 80, SYN, b""));
    for _ in 0..2 {
        frames.push(frame(LB_MAC, TCP, backend, far_client, 8080, 41000, SYN_ACK, b""));
    }
    // 5 x shutdown: parked for a backend that never answers ARP.
    for sport in 0..5 {
        frames.push(frame(LB_MAC, UDP, client, vip_c, 5000 + sport, 53, 0, b"query"));
    }
    write_pcap(&dir.join("in.pcap"), &frames);
    let cfg = dir.join("lbd.yaml");
    std::fs::write(
        &cfg,
        eal(
            &prefix,
            &[format!("net_pcap0,rx_pcap={0}/in.pcap,tx_pcap={0}/out.pcap", dir.path().display())],
        ) + "lcores: {workers: 1}\n\
             ports:\n  - name: lan\n    device: net_pcap0\n    address: 10.0.0.1/24\n    exception: off\n    mac: \"02:00:00:00:00:01\"\n    \
             neighbors: [{ip: 10.0.0.11, mac: \"02:00:00:00:00:11\"}]\n\
             listeners:\n  \
             - {name: a, vip: 10.0.0.100, protocol: tcp, port: 80, backends: [{address: 10.0.0.11, port: 8080}]}\n  \
             - {name: b, vip: 10.0.0.103, protocol: tcp, port: 80, backends: [{address: 10.0.0.11, port: 8080}]}\n  \
             - {name: c, vip: 10.0.0.104, protocol: udp, port: 53, backends: [{address: 10.0.0.50, port: 53}]}\n\
             arp: {retry_interval: 60s, max_retries: 3, queue_length: 16}\n"
            + &control(&dir),
    )
    .unwrap();
    let mut lbd = Lbd::start(&cfg, dir.path(), &prefix);
    let live = lbd.wait_processed(frames.len() as u64, true, Duration::from_secs(30));
    assert_eq!(live["parked"].as_u64(), Some(5), "{live}");
    // The parked packets are the only mbufs held.
    assert_eq!(live["mempool_in_use"].as_u64(), Some(5), "{live}");
    assert_eq!(drop_count(&live, "nat_tuple_conflict"), 3, "{}", live["drops"]);
    assert_eq!(drop_count(&live, "no_route"), 2, "{}", live["drops"]);
    assert_eq!(drop_count(&live, "shutdown"), 0, "{}", live["drops"]);
    let stats = stop_without_leak(lbd);
    assert_eq!(drop_count(&stats, "nat_tuple_conflict"), 3, "{}", stats["drops"]);
    assert_eq!(drop_count(&stats, "no_route"), 2, "{}", stats["drops"]);
    assert_eq!(drop_count(&stats, "shutdown"), 5, "{}", stats["drops"]);
    assert_eq!(stats["drops_total"].as_u64(), Some(10), "nothing else dropped: {}", stats["drops"]);
    // The two SYNs forwarded and one ARP request for 10.0.0.50.
    assert_eq!(sum_ports(&stats, "tx_packets"), 3, "{stats}");
}

/// `tx_full`: the port transmits on a link that went down after lbd
/// started (libpcap refuses to open a link that is down), so the device
/// takes none of the forwarded packets.
#[test]
fn tx_full_when_the_transmit_link_is_down() {
    assert!(is_root(), "starts DPDK and makes veths: run as root");
    let dir = TempDir::new("drops-tx");
    let prefix = unique("lbdd");
    let (tx_dev, tx_peer, rx_dev, rx_peer) = (unique("dtx"), unique("dtp"), unique("drx"), unique("drp"));
    let _tx = Veth::new(&tx_dev, &tx_peer);
    let _rx = Veth::new(&rx_dev, &rx_peer);
    let cfg = dir.join("lbd.yaml");
    std::fs::write(
        &cfg,
        eal(&prefix, &[format!("net_pcap0,rx_iface={rx_dev},tx_iface={tx_dev}")])
            + "lcores: {workers: 1}\n\
               ports:\n  - name: lan\n    device: net_pcap0\n    address: 10.0.0.1/24\n    exception: off\n    mac: \"02:00:00:00:00:01\"\n    \
               neighbors: [{ip: 10.0.0.11, mac: \"02:00:00:00:00:11\"}]\n\
               listeners:\n  \
               - {name: a, vip: 10.0.0.100, protocol: tcp, port: 80, backends: [{address: 10.0.0.11, port: 8080}]}\n"
            + &control(&dir),
    )
    .unwrap();
    let mut lbd = Lbd::start(&cfg, dir.path(), &prefix);
    let idle = lbd.stats_now();
    run(Command::new("ip").args(["link", "set", &tx_dev, "down"]));
    let n = 20u16;
    let frames: Vec<Vec<u8>> =
        (0..n).map(|i| frame(LB_MAC, TCP, ip("10.0.0.7"), ip("10.0.0.100"), 40000 + i, 80, SYN, b"")).collect();
    inject(&rx_peer, &frames);
    let live = lbd.wait_processed(u64::from(n), false, Duration::from_secs(30));
    assert_eq!(sum_ports(&live, "rx_packets"), u64::from(n), "only the injected frames arrived: {live}");
    assert_eq!(drop_count(&live, "tx_full"), u64::from(n), "{}", live["drops"]);
    assert_eq!(live["drops_total"].as_u64(), Some(u64::from(n)), "{}", live["drops"]);
    assert_eq!(sum_ports(&live, "tx_packets"), 0);
    // Every refused packet went back to the pool.
    assert_eq!(live["mempool_in_use"], idle["mempool_in_use"], "in use idle {idle}\nafter {live}");
    let stats = stop_without_leak(lbd);
    assert_eq!(drop_count(&stats, "tx_full"), u64::from(n));
}

/// `handoff_ring_full` no longer happens: two workers; six ports, each
/// polled by worker 0 only (one RX queue) and replaying flows that worker 1
/// owns. Worker 0 stops taking from its ports while the ring to worker 1
/// has less room than one poll of all its ports can hand over (it used to
/// be 4 bursts, which six ports overran: the ring overflowed and the rest
/// of the poll's hand-offs were dropped). Now RX pauses, nothing is
/// dropped, whatever was handed over is delivered, and every mbuf comes
/// back. (The counter stays as the guard of an enqueue that fails anyway.)
/// Both workers share one CPU, so worker 1 is descheduled for whole time
/// slices while worker 0 floods: the ring fills whatever the two workers'
/// relative speed, and needs only one CPU.
#[test]
fn six_ports_flooding_another_worker_pause_rx_instead_of_overrunning_its_ring() {
    assert!(is_root(), "starts DPDK: run as root");
    let dir = TempDir::new("drops-ho");
    let prefix = unique("lbdd");
    let ports = 6u8;
    let workers = 2;
    let client = ip("10.0.0.7");
    let flows: Vec<u16> =
        (1024..u16::MAX).filter(|p| lbcore::flow::owner_shard(client, *p, workers) == 1).take(64).collect();
    let mut vdevs = Vec::new();
    let mut port_yaml = String::new();
    for p in 0..ports {
        let mac = [0x02, 0, 0, 0, 1, p];
        let frames: Vec<Vec<u8>> =
            flows.iter().map(|sport| frame(mac, TCP, client, ip("10.0.0.100"), *sport, 80, SYN, b"")).collect();
        write_pcap(&dir.join(&format!("in{p}.pcap")), &frames);
        // One RX queue (worker 0 only), a TX queue per worker.
        vdevs.push(format!(
            "net_pcap{p},rx_pcap={d}/in{p}.pcap,infinite_rx=1,tx_pcap=/dev/null,tx_pcap=/dev/null",
            d = dir.path().display()
        ));
        let neighbors = if p == 0 { "\n    neighbors: [{ip: 10.0.0.11, mac: \"02:00:00:00:00:11\"}]" } else { "" };
        port_yaml += &format!(
            "  - name: p{p}\n    device: net_pcap{p}\n    address: 10.0.{p}.1/24\n    exception: off\n    mac: \"02:00:00:00:01:{p:02x}\"{neighbors}\n"
        );
    }
    let cfg = dir.join("lbd.yaml");
    std::fs::write(
        &cfg,
        eal(&prefix, &vdevs)
            + "lcores: {workers: 2, cpus: [0, 0], idle_sleep: 1ms}\n"
            // The fixed key `owner_shard` computes with (lbd draws a random one
            // by default).
            + "sessions: {hash_key: 6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa}\n"
            + "ports:\n"
            + &port_yaml
            + "listeners:\n  \
               - {name: a, vip: 10.0.0.100, protocol: tcp, port: 80, backends: [{address: 10.0.0.11, port: 8080}]}\n"
            + &control(&dir),
    )
    .unwrap();
    let mut lbd = Lbd::start(&cfg, dir.path(), &prefix);
    // Before the fix, with a pause threshold of 4 bursts, the first ring
    // overflow came after about 0.5 s and 3.7 M packets here; 8 M hand-offs
    // with RX paused many times over is far past that.
    let start = Instant::now();
    let live = loop {
        let v = lbd.stats_now();
        let ev = &v["events"];
        if ev["handoff_out"].as_u64().unwrap() >= 8_000_000 && ev["rx_paused"].as_u64().unwrap() > 0 {
            break v;
        }
        assert!(drop_count(&v, "handoff_ring_full") == 0, "a hand-off was dropped: {}", v["drops"]);
        assert!(start.elapsed() < Duration::from_secs(300), "the flood never filled a ring: {v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("after {:?}: events {} drops {}", start.elapsed(), live["events"], live["drops"]);
    let stats = stop_without_leak(lbd);
    let ev = &stats["events"];
    let (out, inn) = (ev["handoff_out"].as_u64().unwrap(), ev["handoff_in"].as_u64().unwrap());
    println!("final: handoff_out {out}, handoff_in {inn}, rx_paused {}, drops {}", ev["rx_paused"], stats["drops"]);
    assert_eq!(drop_count(&stats, "handoff_ring_full"), 0, "{}", stats["drops"]);
    assert_eq!(inn, out, "every packet put on the ring was delivered");
    // Every flow belongs to worker 1: each packet received was handed over,
    // nothing dropped.
    assert_eq!(sum_ports(&stats, "rx_packets"), out, "{stats}");
    assert_eq!(stats["drops_total"].as_u64(), Some(0), "{}", stats["drops"]);
    assert_eq!(sum_ports(&stats, "tx_packets"), inn, "worker 1 forwarded all it got");
}
