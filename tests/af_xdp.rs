//! `net_af_xdp` ports through the namespace testbed: the topology's veths
//! taken by AF_XDP sockets (copy mode: veths have no zero-copy) instead of
//! af_packet, with real TCP connections from the client namespace.
//!
//! Namespaces and DPDK lcores on two shared CPUs: one test at a time.

mod common;

use common::topology::Topology;
use common::*;
use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::new(());

/// The topology's configuration with its af_packet vdevs replaced by
/// af_xdp ones on the same veths.
fn af_xdp_config(t: &Topology, cfg: String) -> String {
    let mut c = cfg;
    for (i, side) in [(0, "e"), (1, "i")] {
        let old = format!("net_af_packet{i},iface={}-{side},qpairs=1,framecnt=4096", t.name);
        assert!(c.contains(&old), "{old} not in\n{c}");
        c = c.replace(&old, &format!("net_af_xdp{i},iface={}-{side}", t.name));
        c = c.replace(&format!("device: net_af_packet{i}"), &format!("device: net_af_xdp{i}"));
    }
    c
}

/// Whether an XDP program is attached to `iface` (root namespace).
fn xdp_attached(iface: &str) -> bool {
    let out = Command::new("ip").args(["link", "show", "dev", iface]).output().expect("ip link");
    String::from_utf8_lossy(&out.stdout).contains(" xdp")
}

#[test]
fn af_xdp_ports_carry_connections_to_every_backend() {
    assert!(is_root(), "the testbed needs root (namespaces, DPDK, XDP)");
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let t = Topology::up();
    let dir = TempDir::new("af-xdp");
    let ext = format!("{}-e", t.name);
    assert!(!xdp_attached(&ext));
    let mut lbd = t.start_lbd_with(1, &dir, |c| af_xdp_config(&t, c));
    let log = lbd.log_text();
    assert!(log.contains("ext=net_af_xdp0") && log.contains("int=net_af_xdp1"), "{log}");
    // The PMD's program redirects the veths' frames to lbd's sockets: the
    // root namespace's kernel, which has no VIP, never sees them, so a
    // connection can only complete through lbd's AF_XDP path.
    assert!(xdp_attached(&ext), "no XDP program on {ext}");

    let got = t.sequential_connections(60, &[]);
    assert_eq!(got.len(), 60, "{got:?}");
    let seen: BTreeSet<&str> = got.iter().map(|(_, b)| b.as_str()).collect();
    assert_eq!(seen, BTreeSet::from(["be1", "be2", "be3"]), "{got:?}");

    let s = lbd.stats_now();
    assert_eq!(s["drops_total"].as_u64(), Some(0), "drops: {}", s["drops"]);
    for p in s["ports"].as_array().unwrap() {
        assert!(p["device_stats"]["ipackets"].as_u64().unwrap() >= 60 * 3, "{p}");
    }
    let (status, fin) = lbd.stop();
    assert!(status.success(), "{status:?}");
    // DPDK 22.11's af_xdp PMD backs its UMEM with lbd's mempool and does
    // not take back the mbufs on its fill ring when the port closes
    // (xdp_umem_destroy only forgets the pool): at most the fill ring,
    // ETH_AF_XDP_DFLT_NUM_DESCS * 2 = 4096, plus a burst. Any more is lbd's.
    let in_use = fin["mempool_in_use"].as_u64().unwrap();
    assert!(in_use <= 2 * (4096 + 64), "mbufs still in use after exit: {in_use}");
    // Closing the port takes the program off the interface again.
    assert!(!xdp_attached(&ext), "XDP program left on {ext}");
}

/// A full AF_XDP RX ring drops frames in the kernel, which DPDK 22.11's
/// PMD does not count; lbd reads them from the sockets (`XDP_STATISTICS`)
/// into the port's `imissed`. With lbd stopped, 1000 datagrams meet a
/// ring of 64 descriptors, and every frame the kernel gave lbd's veths is
/// either received or missed.
#[test]
fn af_xdp_ring_overflow_is_counted() {
    assert!(is_root(), "the testbed needs root (namespaces, DPDK, XDP)");
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let t = Topology::up();
    let dir = TempDir::new("af-xdp-ring");
    let mut lbd = t.start_lbd_with(1, &dir, |c| {
        af_xdp_config(&t, c).replace("device: net_af_xdp0", "device: net_af_xdp0, rx_descriptors: 64")
    });
    // The client learns the VIP's MAC while lbd can still answer.
    assert_eq!(t.sequential_connections(1, &[]).len(), 1);
    let missed = t.overflow_stopped_lbd(&mut lbd, 1000);
    assert!(missed >= 1000 - 64, "missed {missed}");
    let (status, _) = lbd.stop();
    assert!(status.success(), "{status:?}");
}
