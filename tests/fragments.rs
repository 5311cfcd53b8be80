//! IPv4 fragments through the namespace testbed: UDP datagrams the
//! kernels fragment (both directions) and a TCP segment crafted in
//! fragments arrive intact (`testbed/fragments.py` checks the bytes; the
//! receiving kernels reassemble and verify the L4 checksums lbd patched).

mod common;

use common::topology::Topology;
use common::*;
use serde_json::Value;
use std::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::new(());

fn guard() -> std::sync::MutexGuard<'static, ()> {
    assert!(is_root(), "the testbed needs root (namespaces, DPDK)");
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Every fragment drop reason and the ones a healthy run never has.
fn assert_nothing_lost(stats: &Value) {
    let d = &stats["drops"];
    for r in [
        "fragment_overlap",
        "fragment_too_many",
        "fragment_timeout",
        "fragment_table_full",
        "fragment_of_dropped",
        "ip_fragment",
        "no_session",
        "handoff_ring_full",
        "tx_full",
        "l4_bad_header",
        "truncated",
    ] {
        assert_eq!(d[r].as_u64(), Some(0), "drop {r} in {d}");
    }
    assert_eq!(stats["mempool_in_use"].as_u64(), Some(0), "mbuf leak (held fragments?)");
}

/// Runs `testbed/fragments.py` in the client namespace; its JSON report
/// (checked after lbd's counters are printed, which tell why it failed).
fn run_client(t: &Topology, args: &[&str]) -> Value {
    let script = repo().join("testbed/fragments.py");
    let mut cmd = vec!["/usr/bin/python3", script.to_str().unwrap()];
    cmd.extend_from_slice(args);
    let out = t.client(&cmd);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("fragments.py {args:?}: {text}{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(text.trim()).unwrap_or(Value::Null)
}

/// lbd on the topology with its ports on net_pcap instead of net_af_packet,
/// one TX queue per worker: DPDK's af_packet joins a fanout group with
/// `PACKET_FANOUT_FLAG_DEFRAG`, so the kernel reassembles fragments before
/// lbd sees them (as over-long frames it cannot take), and nothing of lbd's
/// own handling would be tested. libpcap reads the veth as it is (it also
/// shows lbd its own transmitted frames, dropped as wrong_dst_mac).
fn start_lbd_on_pcap(t: &Topology, workers: usize, dir: &TempDir, extra: &str) -> Lbd {
    t.start_lbd_with(workers, dir, |c| {
        let mut out = c.clone();
        for (i, side) in [(0, "e"), (1, "i")] {
            let iface = format!("{}-{side}", t.name);
            let tx = vec![format!("tx_iface={iface}"); workers].join(",");
            let from = format!("net_af_packet{i},iface={iface},qpairs={workers},framecnt=4096");
            assert!(out.contains(&from), "topology config changed: {c}");
            out = out.replace(&from, &format!("net_pcap{i},rx_iface={iface},{tx}"));
        }
        out.replace("device: net_af_packet", "device: net_pcap") + extra
    })
}

fn print_counters(stats: &Value) {
    println!("lbd drops: {}\nlbd events: {}", stats["drops"], stats["events"]);
}

/// UDP datagrams of 1400 (whole) to 60000 bytes over MTU 1500, to the echo
/// backends and back, with two workers (fragments meet at their datagram's
/// fragment worker and move to the flow's owner).
#[test]
fn netns_fragmented_udp_datagrams_round_trip_intact() {
    let _g = guard();
    let t = Topology::up();
    let dir = TempDir::new("netns-frag-udp");
    let lbd = start_lbd_on_pcap(&t, 2, &dir, "");
    let sizes = ["1400", "1473", "3000", "8000", "20000", "40000", "60000"];
    let mut args = vec!["udp", "10.0.0.100", "9000"];
    args.extend_from_slice(&sizes);
    let v = run_client(&t, &args);
    let (status, stats) = lbd.stop();
    print_counters(&stats);
    assert!(!v["udp"].is_null(), "{v}");
    for r in v["udp"].as_array().unwrap() {
        assert_eq!(r["ok"], true, "{r}");
        assert!(r["reply"].as_str().unwrap().contains("client=10.0.0.2:"), "NAT keeps the client address: {r}");
    }
    assert!(status.success());
    assert_nothing_lost(&stats);
    // Six datagrams each way needed fragments.
    let steered = stats["events"]["fragment_datagrams_steered"].as_u64().unwrap();
    assert!(steered >= 12, "{steered} datagrams steered: {}", stats["events"]);
}

/// One TCP segment of about 3 KiB in 512-byte fragments, the last first,
/// after a handshake: the backend answers, so it reassembled a segment
/// whose checksum lbd's rewrite left right.
#[test]
fn netns_fragmented_tcp_segment_reaches_the_backend() {
    let _g = guard();
    let t = Topology::up();
    let dir = TempDir::new("netns-frag-tcp");
    let lbd = start_lbd_on_pcap(&t, 1, &dir, "");
    let v = run_client(&t, &["tcp", "10.0.0.100", "80"]);
    let (status, stats) = lbd.stop();
    print_counters(&stats);
    assert_eq!(v["tcp"]["ok"], true, "{v}");
    assert!(status.success());
    assert_nothing_lost(&stats);
    assert!(stats["events"]["fragments_held"].as_u64().unwrap() >= 5, "{}", stats["events"]);
    assert_eq!(stats["events"]["fragment_datagrams_steered"].as_u64(), Some(1), "{}", stats["events"]);
}

/// Overlapping fragments, too many fragments and a datagram that never
/// completes, sent by scapy: each dropped and counted exactly, nothing
/// left held (every mbuf back in the pool).
#[test]
fn netns_hostile_fragments_are_dropped_with_counters() {
    let _g = guard();
    let t = Topology::up();
    let dir = TempDir::new("netns-frag-bad");
    // A timeout far above what sending a datagram's fragments takes (one
    // scapy call each), so only the lone fragment's datagram expires.
    let extra = "fragments: {max_fragments_per_datagram: 4, timeout: 5s}\n";
    let mut lbd = start_lbd_on_pcap(&t, 1, &dir, extra);
    let v = run_client(&t, &["hostile", "10.0.0.100", "9000"]);
    assert_eq!(v["hostile"]["ok"], true, "{v}");
    // The lone fragment is dropped once its time is up: wait for that.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while lbd.stats_now()["drops"]["fragment_timeout"].as_u64() != Some(1) {
        assert!(std::time::Instant::now() < deadline, "the held fragment was never dropped");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (status, stats) = lbd.stop();
    print_counters(&stats);
    assert!(status.success());
    let d = &stats["drops"];
    assert_eq!(d["fragment_overlap"].as_u64(), Some(1), "{d}");
    assert_eq!(d["fragment_too_many"].as_u64(), Some(2), "{d}");
    assert_eq!(d["fragment_timeout"].as_u64(), Some(1), "{d}");
    assert_eq!(stats["mempool_in_use"].as_u64(), Some(0), "mbuf leak");
}
