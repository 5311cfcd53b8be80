//! `sessions.hash_key` end to end: flows crafted against one instance's
//! key crowd each other out of that instance's session table (16 of them
//! fit, each further SYN evicts a half-open one of them), and an instance
//! with another key keeps them all.

mod common;

use common::*;
use lbcore::flow::FlowKey;
use lbcore::hashkey::{HashKeySetting, HashKeys};
use lbcore::wire::frame::FrameBuilder;
use lbcore::wire::MacAddr;
use std::time::Duration;

const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc1];
const VIP: u32 = 0x0a00_0064; // 10.0.0.100
const KEY_A: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const KEY_B: &str = "f00dfacecafebeef0badc0dedeadbeef13579bdf02468ace1122334455667788a1b2c3d4e5f60718";
/// Sessions per worker: 512 index buckets of 8 ways (see SessionTable).
const CAPACITY: usize = 1000;
const MASK: u64 = 511;

/// Client endpoints (one /16, any port) whose SYNs to the VIP share both
/// candidate buckets under `keys`: what an attacker who knew the key would
/// send.
fn crafted(keys: &HashKeys, n: usize) -> Vec<(u32, u16)> {
    let place = |h: u64| (h & MASK, h.rotate_right(29) & MASK);
    let target = place(FlowKey::new(0xac10_0000, VIP, 1024, 80, 6).keyed_hash(&keys.session));
    let mut found = Vec::new();
    for host in 0..0x1_0000u32 {
        for port in 1024..=u16::MAX {
            let client = 0xac10_0000 | host;
            if place(FlowKey::new(client, VIP, port, 80, 6).keyed_hash(&keys.session)) == target {
                found.push((client, port));
                if found.len() == n {
                    return found;
                }
            }
        }
    }
    panic!("found only {} colliding endpoints", found.len());
}

/// Runs lbd with `key` on one pcap of SYNs and returns its final counters.
fn run(key: &str, set: &[(u32, u16)]) -> serde_json::Value {
    let dir = TempDir::new("hashkey");
    let prefix = unique("lbdk");
    let frames: Vec<Vec<u8>> = set
        .iter()
        .map(|(c, p)| FrameBuilder::new(MacAddr(PEER_MAC), MacAddr(LB_MAC)).l4(6, *c, VIP, *p, 80, 0x02, b""))
        .collect();
    write_pcap(&dir.join("in.pcap"), &frames);
    let cfg = dir.join("lbd.yaml");
    std::fs::write(
        &cfg,
        format!(
            "eal: [\"--no-pci\", \"--no-huge\", \"-m\", \"512\", \"--file-prefix\", \"{prefix}\", \"--no-telemetry\",\n      \
             \"--vdev\", \"net_pcap0,rx_pcap={d}/in.pcap,tx_pcap={d}/out.pcap\"]\n\
             lcores: {{workers: 1}}\n\
             ports:\n  - name: lan\n    device: net_pcap0\n    address: 10.0.0.1/24\n    exception: off\n    \
             mac: \"02:00:00:00:00:01\"\n    gateway: 10.0.0.254\n    \
             neighbors: [{{ip: 10.0.0.11, mac: \"02:00:00:00:00:11\"}}, {{ip: 10.0.0.254, mac: \"02:00:00:00:00:fe\"}}]\n\
             listeners:\n  \
             - {{name: web, vip: 10.0.0.100, protocol: tcp, port: 80, backends: [{{address: 10.0.0.11, port: 8080}}]}}\n\
             sessions: {{capacity_per_worker: {CAPACITY}, hash_key: {key}}}\n\
             control: {{socket: {d}/lbd.sock}}\nmetrics: {{listen: \"off\"}}\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let mut lbd = Lbd::start(&cfg, dir.path(), &prefix);
    lbd.wait_processed(set.len() as u64, false, Duration::from_secs(30));
    let (status, stats) = lbd.stop();
    assert!(status.success(), "lbd exited with {status}");
    stats
}

#[test]
fn flows_crafted_against_one_key_fill_only_that_instances_table() {
    assert!(is_root(), "starts DPDK: run as root");
    let keys_a = match HashKeySetting::parse(KEY_A).unwrap() {
        HashKeySetting::Fixed(k) => HashKeys::from_key(&k),
        HashKeySetting::Random => unreachable!(),
    };
    let set = crafted(&keys_a, 40);
    // Key A: the two buckets' 16 ways take 16 sessions; each of the other
    // 24 SYNs finds its buckets full at 16 of 1000 and evicts the oldest
    // half-open session in its way, so 16 flows keep a session.
    let a = run(KEY_A, &set);
    assert_eq!(a["events"]["sessions_created"].as_u64(), Some(40), "{}", a["events"]);
    assert_eq!(a["events"]["half_open_evicted"].as_u64(), Some(24), "{}", a["events"]);
    assert_eq!(a["sessions_active"].as_u64(), Some(16), "{a}");
    assert_eq!(a["drops_total"].as_u64(), Some(0), "{}", a["drops"]);
    // Key B: the same SYNs spread over the table; every one keeps a session.
    let b = run(KEY_B, &set);
    assert_eq!(b["events"]["sessions_created"].as_u64(), Some(40), "{}", b["events"]);
    assert_eq!(b["events"]["half_open_evicted"].as_u64(), Some(0), "{}", b["events"]);
    assert_eq!(b["sessions_active"].as_u64(), Some(40), "{b}");
    assert_eq!(b["drops_total"].as_u64(), Some(0), "{}", b["drops"]);
}
