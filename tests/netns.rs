//! Network-namespace tests: `lbd` on af_packet between a client namespace
//! and three backend namespaces (testbed/topology.sh), with real clients
//! (curl, iperf3, ping, Python sockets) and real servers.
//!
//! The tests share the machine's two CPUs with busy-polling lcores, so they
//! run one at a time.

mod common;

use common::topology::Topology;
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::new(());

/// Echo replies in `ping`'s output that came from `addr` ("64 bytes from
/// 10.0.0.100: icmp_seq=1 ttl=64 time=0.1 ms").
fn echo_replies_from(ping: &str, addr: &str) -> usize {
    let from = format!(" from {addr}: icmp_seq=");
    ping.lines().filter(|l| l.contains(&from) && l.contains(" bytes from ")).count()
}

#[test]
fn ping_parser_counts_only_echo_replies_from_the_address() {
    let out = "PING 10.0.0.100 (10.0.0.100) 56(84) bytes of data.\n\
               64 bytes from 10.0.0.100: icmp_seq=1 ttl=64 time=0.211 ms\n\
               From 10.0.0.254 icmp_seq=2 Destination Host Unreachable\n\
               64 bytes from 10.0.0.1: icmp_seq=3 ttl=64 time=0.2 ms\n\
               64 bytes from 10.0.0.100: icmp_seq=4 ttl=64 time=0.198 ms\n";
    assert_eq!(echo_replies_from(out, "10.0.0.100"), 2);
    assert_eq!(echo_replies_from(out, "10.0.0.1"), 1);
    assert_eq!(echo_replies_from(out, "10.0.0.254"), 0);
}

/// Drops that must never happen in a healthy testbed run.
fn assert_no_bad_drops(stats: &Value) {
    let d = &stats["drops"];
    for r in [
        "no_session",
        "tx_full",
        "handoff_ring_full",
        "session_table_full",
        "neighbor_queue_full",
        "neighbor_unresolved",
        "nat_tuple_conflict",
        "no_route",
        "ip_bad_checksum",
        "l4_bad_header",
    ] {
        assert_eq!(d[r].as_u64(), Some(0), "drop {r} in {d}");
    }
    assert_eq!(stats["mempool_in_use"].as_u64(), Some(0), "mbuf leak");
}

fn guard() -> std::sync::MutexGuard<'static, ()> {
    assert!(is_root(), "the testbed needs root (namespaces, DPDK)");
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn netns_curl_reaches_all_backends_with_the_client_address() {
    let _g = guard();
    let t = Topology::up();
    let dir = TempDir::new("netns-http");
    let lbd = t.start_lbd(1, &dir);
    let mut per_backend: BTreeMap<String, usize> = BTreeMap::new();
    let mut clients = BTreeSet::new();
    for _ in 0..60 {
        let body = t.client_ok(&["curl", "-sS", "--max-time", "5", "http://10.0.0.100/"]);
        // "backend=be2 client=10.0.0.2:41234"
        let mut parts = body.split_whitespace();
        let backend = parts.next().unwrap_or_default().trim_start_matches("backend=").to_owned();
        let client = parts.next().unwrap_or_default().trim_start_matches("client=");
        clients.insert(client.split(':').next().unwrap_or_default().to_owned());
        *per_backend.entry(backend).or_default() += 1;
    }
    println!("60 requests by backend: {per_backend:?}; client addresses seen: {clients:?}");
    assert_eq!(per_backend.keys().cloned().collect::<Vec<_>>(), vec!["be1", "be2", "be3"]);
    assert_eq!(
        clients.into_iter().collect::<Vec<_>>(),
        vec!["10.0.0.2".to_owned()],
        "NAT mode keeps the client address"
    );
    // Ping the VIP: lbd answers ICMP echo for it. Both replies must come
    // from the VIP itself (ping also prints replies and errors from other
    // addresses, e.g. "From 10.0.0.254 ... Destination Host Unreachable").
    let ping = t.client_ok(&["ping", "-n", "-c", "2", "-W", "2", "10.0.0.100"]);
    assert_eq!(echo_replies_from(&ping, "10.0.0.100"), 2, "{ping}");
    assert!(ping.contains("2 packets transmitted, 2 received"), "{ping}");
    let (status, stats) = lbd.stop();
    assert!(status.success());
    assert_no_bad_drops(&stats);
    let web = stats["listeners"].as_array().unwrap().iter().find(|l| l["name"] == "web").unwrap();
    assert_eq!(web["sessions_created"].as_u64(), Some(60));
}

#[test]
fn netns_udp_round_trip_from_client_sockets() {
    let _g = guard();
    let t = Topology::up();
    let dir = TempDir::new("netns-udp");
    let lbd = t.start_lbd(1, &dir);
    let mut backends = BTreeSet::new();
    // Each from its own socket (a new flow), each waiting for its answer
    // as long as a loaded machine needs (socat -t gave each half a second).
    let msgs: Vec<String> = (0..30).map(|i| format!("datagram-{i}")).collect();
    let script = repo().join("testbed/udp-ask.py");
    let mut args = vec![python(), script.to_str().unwrap().to_owned(), "10.0.0.100".into(), "9000".into()];
    args.extend(msgs.iter().cloned());
    let out = t.client_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let replies: Vec<&str> = out.lines().collect();
    assert_eq!(replies.len(), msgs.len(), "{out}");
    for (msg, text) in msgs.iter().zip(replies) {
        assert!(text.contains("client=10.0.0.2:"), "reply {text:?}");
        assert!(text.ends_with(&format!("data={msg}")), "reply {text:?}");
        backends.insert(text.split_whitespace().next().unwrap().to_owned());
    }
    println!("30 datagrams answered by {backends:?}");
    assert!(backends.len() >= 2, "UDP flows spread over backends: {backends:?}");
    let (status, stats) = lbd.stop();
    assert!(status.success());
    assert_no_bad_drops(&stats);
    let echo = stats["listeners"].as_array().unwrap().iter().find(|l| l["name"] == "echo").unwrap();
    assert_eq!(echo["packets_in"].as_u64(), Some(30));
    assert_eq!(echo["packets_out"].as_u64(), Some(30));
}

#[test]
fn netns_long_download_is_intact() {
    let _g = guard();
    let t = Topology::up();
    let dir = TempDir::new("netns-dl");
    let lbd = t.start_lbd(1, &dir);
    let size = 64 * 1024 * 1024;
    let file = dir.join("download.bin");
    let start = std::time::Instant::now();
    t.client_ok(&[
        "curl",
        "-sS",
        "--max-time",
        "120",
        "-o",
        file.to_str().unwrap(),
        &format!("http://10.0.0.100/bytes/{size}"),
    ]);
    let secs = start.elapsed().as_secs_f64();
    let data = std::fs::read(&file).unwrap();
    assert_eq!(data.len(), size);
    let bad = data.iter().enumerate().position(|(i, b)| *b as usize != i % 251);
    assert_eq!(bad, None, "download corrupted at byte {bad:?}");
    println!("{} MiB downloaded intact in {secs:.2} s ({:.0} MB/s)", size >> 20, size as f64 / secs / 1e6);
    // iperf3 through the single-backend listener: a fixed amount, not a
    // time. Its rate is printed, never asserted (a loaded machine sets
    // it; benches/e2e.py measures speed). The sender wrote it all (a
    // block more, at times: it stops at the first block past the amount);
    // the receiver's count stops when the sender has, short by at most
    // what the two sockets' buffers held (a few MiB), not by how fast it
    // went.
    let bytes: u64 = 256 << 20;
    // Bounded: a stalled path must fail the test, not hang it.
    let out = t.client_ok(&["timeout", "300", "iperf3", "-c", "10.0.0.100", "-n", &bytes.to_string(), "-J"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let sent = v["end"]["sum_sent"]["bytes"].as_u64().unwrap_or(0);
    assert!(sent >= bytes, "sent {sent} of {bytes}: {}", v["end"]);
    let received = v["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    assert!(received >= bytes - (64 << 20), "received {received} of {bytes}: {}", v["end"]);
    let bps = v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0);
    let retransmits = &v["end"]["sum_sent"]["retransmits"];
    println!("iperf3 through lbd: {} MiB at {:.2} Gbit/s, {retransmits} retransmits", bytes >> 20, bps / 1e9);
    let (status, stats) = lbd.stop();
    assert!(status.success());
    assert_no_bad_drops(&stats);
}

/// Three workers on two CPUs, af_packet with three queue pairs: the kernel
/// spreads flows over queues by its own hash, so requests and replies of a
/// flow often arrive at different workers and must meet at the owner.
#[test]
fn netns_three_workers_thousands_of_flows() {
    let _g = guard();
    let t = Topology::up();
    let dir = TempDir::new("netns-mw");
    let mut lbd = t.start_lbd(3, &dir);
    let (udp, tcp) = (2000u64, 300u64);
    let out = t.client_ok(&[
        "/usr/bin/python3",
        repo().join("testbed/flows.py").to_str().unwrap(),
        "--vip",
        "10.0.0.100",
        "--udp-flows",
        &udp.to_string(),
        "--tcp-flows",
        &tcp.to_string(),
        "--parallel",
        "24",
        // A resend means a lost datagram, not a slow answer: wait long
        // enough that a loaded machine's latency is not counted as loss.
        "--timeout",
        "5",
    ]);
    let summary: Value = serde_json::from_str(out.trim()).unwrap();
    println!("flows: {summary}");
    assert_eq!(summary["udp"]["ok"].as_u64(), Some(udp), "every UDP reply came back from the VIP: {summary}");
    assert_eq!(summary["tcp"]["ok"].as_u64(), Some(tcp), "every TCP flow answered, client address kept: {summary}");
    let live = lbd.stats_now();
    let (status, stats) = lbd.stop();
    assert!(status.success());
    assert_no_bad_drops(&stats);
    let ev = &stats["events"];
    // One session per distinct 5-tuple: a flow split over two shards would
    // create two. (The client kernel reuses some source ports.)
    let tuples = summary["udp_tuples"].as_u64().unwrap() + summary["tcp_tuples"].as_u64().unwrap();
    assert!(tuples > (udp + tcp) / 2, "{summary}");
    assert_eq!(ev["sessions_created"].as_u64(), Some(tuples), "{ev}");
    let per_worker: Vec<u64> = stats["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["events"]["sessions_created"].as_u64().unwrap())
        .collect();
    println!("sessions per worker {per_worker:?}, hand-offs {}", ev["handoff_out"]);
    assert!(per_worker.iter().all(|n| *n > 0), "{per_worker:?}");
    // The kernel picks a flow's queue by its own hash, lbd picks the owner
    // by another, and replies arrive on another port: most packets reach
    // a worker that does not own their flow. Hand-offs must have happened,
    // and each one arrived (none lost to a full ring).
    let handoff_out = ev["handoff_out"].as_u64().unwrap();
    assert!(handoff_out > 0, "no packet was handed to another worker: {ev}");
    assert_eq!(ev["handoff_in"].as_u64(), Some(handoff_out), "{ev}");
    assert_eq!(stats["drops"]["handoff_ring_full"].as_u64(), Some(0), "{}", stats["drops"]);
    // Retries: with no loss on the path every datagram is answered at the
    // first send (0 retries in each of 4 runs here). The bound, 1 % of the
    // flows, leaves room for a rare reply slower than the 2 s timeout on a
    // loaded machine; a path losing a few per cent of the datagrams
    // exceeds it (3 % of the requests dropped in flows.py: 36 resends),
    // while nearly all its flows are still answered within three sends.
    let retries = summary["udp_retries"].as_u64().expect("udp_retries");
    assert!(retries <= udp / 100, "{retries} UDP resends for {udp} flows: packets are being lost: {summary}");
    let rx_per_worker: Vec<u64> =
        live["workers"].as_array().unwrap().iter().map(|w| w["rx_packets"].as_u64().unwrap()).collect();
    println!("packets received per worker {rx_per_worker:?}");
}

/// Steady established traffic while more than 100 changes (backends added
/// and removed, weights, drains, listeners, whole reloads) are applied:
/// nothing is lost, and every flow keeps its backend.
#[test]
fn netns_hot_reconfiguration_under_traffic_loses_nothing() {
    let _g = guard();
    let t = Topology::up();
    let dir = TempDir::new("netns-reconf");
    let prefix = unique("lbdn");
    let socket = t.socket();
    let cfg = run(Command::new(repo().join("testbed/topology.sh")).args(["config", &t.name, "2", &prefix]));
    let path = dir.join("lbd.yaml");
    std::fs::write(&path, &cfg).unwrap();
    let mut lbd = Lbd::start(&path, dir.path(), &prefix);

    // The traffic: 40 UDP flows and 10 keep-alive TCP connections.
    let mut traffic = Command::new("ip")
        .args(["netns", "exec", &format!("{}-client", t.name), "/usr/bin/python3"])
        .arg(repo().join("testbed/steady.py"))
        .args(["--vip", "10.0.0.100", "--udp-flows", "40", "--tcp-flows", "10", "--seconds", "12"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut err = std::io::BufReader::new(traffic.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "traffic did not start");
    }

    // Whole-file variants for reloads: weights shuffled.
    let variants: Vec<std::path::PathBuf> = (0..4)
        .map(|i| {
            let p = dir.join(&format!("variant{i}.yaml"));
            let text = cfg.replace(
                "      - {address: 10.1.0.12, port: 8080}",
                &format!("      - {{address: 10.1.0.12, port: 8080, weight: {}}}", i + 2),
            );
            std::fs::write(&p, text).unwrap();
            p
        })
        .collect();
    let mut changes = 0;
    let mut propagation = Vec::new();
    let mut apply = |args: &[&str]| {
        let v = lbctl_json(&socket, args);
        propagation.push(v["change"]["propagation_us"].as_u64().unwrap());
        changes += 1;
    };
    let start = std::time::Instant::now();
    for round in 0..9 {
        let w = (round % 4 + 1).to_string();
        apply(&["backend", "set-weight", "web", "10.1.0.11", &w]);
        apply(&["backend", "set-weight", "echo", "10.1.0.13:9000", &w]);
        apply(&["backend", "drain", "web", "10.1.0.12"]);
        apply(&["backend", "undrain", "web", "10.1.0.12"]);
        // A backend that has no host: only new flows could go there.
        apply(&["backend", "add", "echo", "10.1.0.14:9000"]);
        apply(&["backend", "del", "echo", "10.1.0.14:9000"]);
        // Remove and restore a backend carrying traffic: its sessions stay.
        apply(&["backend", "del", "echo", "10.1.0.12:9000"]);
        apply(&["backend", "add", "echo", "10.1.0.12:9000"]);
        apply(&[
            "listener",
            "add",
            &format!("scratch{round}"),
            "--vip",
            "10.0.0.100",
            "--protocol",
            "tcp",
            "--port",
            &(8000 + round).to_string(),
            "--backend",
            "10.1.0.11:8080",
        ]);
        apply(&["listener", "del", &format!("scratch{round}")]);
        apply(&["config", "reload", variants[round % variants.len()].to_str().unwrap()]);
        apply(&["config", "reload"]);
    }
    let elapsed = start.elapsed();
    let out = traffic.wait_with_output().unwrap();
    assert!(out.status.success());
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    propagation.sort_unstable();
    println!(
        "{changes} changes in {:.1} s; propagation to every worker p50 {} us, max {} us",
        elapsed.as_secs_f64(),
        propagation[propagation.len() / 2],
        propagation[propagation.len() - 1]
    );
    println!("traffic: {summary}");
    assert!(changes >= 100);
    for proto in ["udp", "tcp"] {
        let s = &summary[proto];
        assert_eq!(s["errors"].as_array().unwrap().len(), 0, "{proto}: {s}");
        assert_eq!(s["lost"], 0, "{proto}: nothing lost: {s}");
        assert_eq!(s["sent"], s["answered"], "{proto}: every request answered: {s}");
        assert_eq!(s["flows_that_changed_backend"], 0, "{proto}: established flows keep their backend: {s}");
        assert_eq!(s["flows_without_answer"], 0, "{proto}: {s}");
        assert!(s["sent"].as_u64().unwrap() > 500, "{proto}: traffic flowed: {s}");
    }
    let live = lbd.stats_now();
    assert!(live["config_generation"].as_u64().unwrap() > 100);
    let (status, stats) = lbd.stop();
    assert!(status.success());
    // No drop for any reason, and in particular none the changes caused.
    assert_eq!(stats["drops_total"], 0, "{}", stats["drops"]);
    assert_eq!(stats["mempool_in_use"], 0);
}

/// The topology's configuration with listener web behind the SYN proxy.
fn with_syn_proxy(c: String) -> String {
    let web = "    port: 80\n    scheduler: maglev\n";
    assert!(c.contains(web), "{c}");
    c.replacen(web, "    port: 80\n    scheduler: maglev\n    syn_proxy: on\n", 1)
}

/// Linux clients and servers with their defaults (timestamps, window
/// scaling, SACK) through the SYN proxy: downloads and uploads of several
/// MB arrive intact, so sequence numbers, acknowledgments, timestamps and
/// windows are translated right for the connections' lives.
#[test]
fn netns_syn_proxy_carries_downloads_and_uploads_intact() {
    let _g = guard();
    let t = Topology::up();
    let dir = TempDir::new("netns-synproxy");
    let lbd = t.start_lbd_with(1, &dir, with_syn_proxy);
    for key in ["tcp_timestamps", "tcp_window_scaling", "tcp_sack"] {
        let v = t.client_ok(&["sysctl", "-n", &format!("net.ipv4.{key}")]);
        assert_ne!(v.trim(), "0", "client has {key} off");
    }
    let size = 8 * 1024 * 1024;
    let file = dir.join("download.bin");
    for i in 0..3 {
        t.client_ok(&[
            "curl",
            "-sS",
            "--max-time",
            "60",
            "-o",
            file.to_str().unwrap(),
            &format!("http://10.0.0.100/bytes/{size}"),
        ]);
        let data = std::fs::read(&file).unwrap();
        assert_eq!(data.len(), size, "download {i}");
        let bad = data.iter().enumerate().position(|(i, b)| *b as usize != i % 251);
        assert_eq!(bad, None, "download {i} corrupted at byte {bad:?}");
    }
    let upload = dir.join("upload.bin");
    std::fs::write(&upload, (0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>()).unwrap();
    for i in 0..3 {
        let out = t.client_ok(&[
            "curl",
            "-sS",
            "--max-time",
            "60",
            "-H",
            "Expect:",
            "--data-binary",
            &format!("@{}", upload.display()),
            "http://10.0.0.100/check",
        ]);
        assert_eq!(out.trim(), format!("received={size} pattern_ok=True"), "upload {i}");
    }
    let (status, stats) = lbd.stop();
    assert!(status.success());
    assert_no_bad_drops(&stats);
    let ev = &stats["events"];
    println!("events: {ev}\ndrops: {}", stats["drops"]);
    assert_eq!(ev["syn_proxy_accepted"].as_u64(), Some(6), "every connection went through the proxy");
    assert_eq!(ev["syn_proxy_backend_opened"].as_u64(), Some(6));
    assert!(ev["syn_proxy_syn_acks"].as_u64().unwrap() >= 6);
    assert_eq!(stats["drops"]["syn_proxy_bad_cookie"].as_u64(), Some(0));
}

/// dpdk-testpmd replaying spoofed SYNs from a pcap (net_pcap,
/// infinite_rx=1) into the client namespace's eth0 (net_af_packet) as
/// fast as it can; stopped (SIGTERM to its PID) and its runtime directory
/// removed on drop.
struct SynFlood {
    child: std::process::Child,
    prefix: String,
}

impl SynFlood {
    fn start(t: &Topology, dir: &TempDir) -> SynFlood {
        let lb_mac = std::fs::read_to_string(format!("/sys/class/net/{}-e/address", t.name)).unwrap();
        let client_mac = t.client_ok(&["cat", "/sys/class/net/eth0/address"]);
        let pcap = dir.join("flood.pcap");
        run(Command::new(python()).args([
            repo().join("testbed/synflood.py").to_str().unwrap(),
            "pcap",
            pcap.to_str().unwrap(),
            lb_mac.trim(),
            client_mac.trim(),
            "10.0.0.100",
            "80",
            "65536",
        ]));
        let prefix = unique("flood");
        // Both of testpmd's lcores on CPU 0: its forwarding lcore polls
        // without pause, and lbd's worker goes to the last CPU by default,
        // where a second poller would halve both (the probe then took
        // minutes on 2 CPUs).
        let child = Command::new("ip")
            .args(["netns", "exec", &t.ns("client"), "dpdk-testpmd", "--lcores", "0@0,1@0", "--no-pci", "--no-huge"])
            .args(["-m", "512"])
            .args(["--file-prefix", &prefix, "--vdev"])
            .arg(format!("net_pcap0,rx_pcap={},tx_pcap=/dev/null,infinite_rx=1", pcap.display()))
            .args([
                "--vdev",
                "net_af_packet0,iface=eth0",
                "--",
                "--forward-mode=io",
                "--auto-start",
                "--stats-period",
                "1",
                "--total-num-mbufs",
                "81920",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(dir.join("testpmd.log")).unwrap())
            .stderr(std::fs::File::create(dir.join("testpmd.err")).unwrap())
            .spawn()
            .expect("start dpdk-testpmd");
        SynFlood { child, prefix }
    }
}

impl Drop for SynFlood {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        if wait_timeout(&mut self.child, std::time::Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.prefix));
    }
}

/// One run of the SYN-flood benchmark: lbd with `syn_proxy: mode` and a
/// small table (4096 sessions, 1024 half-open), a spoofed SYN flood, and
/// `n` real connections probed through it. Returns the probe's result and
/// lbd's stats taken under the flood and at the end.
fn syn_flood_run(t: &Topology, mode: &str, n: usize) -> (Value, Value, Value) {
    let dir = TempDir::new(&format!("netns-flood-{mode}"));
    let mut lbd = t.start_lbd_with(1, &dir, |c| {
        let c = c.replacen(
            "    port: 80\n    scheduler: maglev\n",
            &format!("    port: 80\n    scheduler: maglev\n    syn_proxy: {mode}\n"),
            1,
        );
        c.replacen("sessions: {capacity_per_worker: 100000}", "sessions: {capacity_per_worker: 4096}", 1)
    });
    let flood = SynFlood::start(t, &dir);
    // The flood is on when lbd has seen a good part of the pcap.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let s = lbd.stats_now();
        let rx = s["ports"][0]["rx_packets"].as_u64().unwrap_or(0);
        if rx > 100_000 {
            break;
        }
        let log = || {
            std::fs::read_to_string(dir.join("testpmd.log")).unwrap_or_default()
                + &std::fs::read_to_string(dir.join("testpmd.err")).unwrap_or_default()
        };
        assert!(
            std::time::Instant::now() < deadline,
            "the flood never reached lbd: {}\ntestpmd: {}",
            s["ports"],
            log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // With the proxy on, 99 % of the connections must succeed: each waits
    // long enough for the kernel's SYN retries (1, 3, 7 s), as a real
    // client does, so a SYN lost to a full RX ring on a loaded machine is
    // retried, not failed; the probe stops at the failure that fails the
    // test, rather than wait out every one of a broken proxy. Off, the
    // run is only reported, and many connections fail by design: 3 s each
    // keeps it short.
    let (timeout, max_failed) = if mode == "on" { ("15", (n / 100 + 1).to_string()) } else { ("3", n.to_string()) };
    let out = t.client_ok(&[
        &python(),
        repo().join("testbed/synflood.py").to_str().unwrap(),
        "probe",
        "10.0.0.100",
        "80",
        &n.to_string(),
        timeout,
        &max_failed,
    ]);
    let under = lbd.stats_now();
    drop(flood);
    let (status, end) = lbd.stop();
    assert!(status.success());
    (serde_json::from_str(out.trim()).unwrap(), under, end)
}

/// A spoofed-source SYN flood at what testpmd can send here while a real
/// client connects through the VIP: with the SYN proxy on, at least 99 %
/// of the client's connections succeed and the flood leaves no sessions;
/// with it off the run is reported for comparison (the half-open cap
/// keeps the table from filling, but the client's SYNs compete with the
/// flood's for the half-open slots).
#[test]
fn netns_syn_flood_real_clients_connect_through_the_proxy() {
    let _g = guard();
    let t = Topology::up();
    for mode in ["off", "on"] {
        // Off, a third of the connections fail after their full timeout
        // each (7 minutes for 200): 50 are enough to report it.
        let n = if mode == "on" { 200 } else { 50 };
        let (probe, under, end) = syn_flood_run(&t, mode, n);
        let rx = end["ports"][0]["rx_packets"].as_u64().unwrap();
        let secs = end["uptime_seconds"].as_f64().unwrap_or(0.0);
        println!(
            "syn_proxy {mode}: {probe}; under the flood: sessions_active {} of {}; lbd rx {rx} packets in {secs:.1} s; \
             events {}; drops {}",
            under["sessions_active"], under["sessions_capacity"], end["events"], end["drops"]
        );
        if mode == "on" {
            let ok = probe["ok"].as_u64().unwrap();
            assert!(ok * 100 >= 99 * n as u64, "{ok} of {n} connections succeeded through the SYN proxy: {probe}");
            assert!(end["events"]["syn_proxy_syn_acks"].as_u64().unwrap() > 100_000, "the flood was answered");
            let accepted = end["events"]["syn_proxy_accepted"].as_u64().unwrap();
            assert!((ok..=n as u64).contains(&accepted), "only the real client's ACKs prove a cookie: {accepted}");
        }
    }
}
