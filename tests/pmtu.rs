//! Path-MTU discovery through lbd on the namespace testbed: a download
//! whose path holds a link narrower than the backend's, once behind a
//! router on the client side (its fragmentation needed, sent to the VIP,
//! must reach the backend translated) and once at lbd's own port MTU (lbd
//! sends fragmentation needed itself). Without either, Linux TCP (no MTU
//! probing by default) retransmits the full-size segment until curl gives
//! up: the transfer completing is the proof. Also other ICMP errors
//! through lbd: time exceeded from lbd itself, and a backend's port
//! unreachable on its way to the client.

mod common;

use common::topology::Topology;
use common::*;
use serde_json::Value;
use std::process::Command;
use std::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::new(());

fn guard() -> std::sync::MutexGuard<'static, ()> {
    assert!(is_root(), "the testbed needs root (namespaces, DPDK)");
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Bytes downloaded: many full-size segments.
const SIZE: usize = 2 * 1024 * 1024;

/// A namespace `far` behind the testbed's client namespace, which routes
/// for it over a link whose client-side end has MTU 1200 (the far end keeps
/// 1500, so the far host's own MSS does not hide the narrow hop). Deleted
/// on drop, with its veth pair.
struct FarHost {
    ns: String,
}

impl FarHost {
    fn add(t: &Topology) -> FarHost {
        let far = FarHost { ns: unique("far") };
        let client = t.ns("client");
        let sh = |cmd: String| run(Command::new("bash").args(["-c", &cmd]));
        sh(format!("ip netns add {}", far.ns));
        sh(format!("ip link add narrow netns {client} type veth peer name eth0 netns {}", far.ns));
        let cx = format!("ip netns exec {client}");
        let fx = format!("ip netns exec {}", far.ns);
        sh(format!("{cx} sysctl -qw net.ipv4.ip_forward=1"));
        sh(format!("{cx} ip addr add 10.9.0.1/24 dev narrow"));
        sh(format!("{cx} ip link set narrow mtu 1200 up"));
        sh(format!("{fx} sysctl -qw net.ipv6.conf.all.disable_ipv6=1"));
        sh(format!("{fx} ip link set lo up"));
        sh(format!("{fx} ip addr add 10.9.0.2/24 dev eth0"));
        sh(format!("{fx} ip link set eth0 up"));
        sh(format!("{fx} ip route add default via 10.9.0.1"));
        far
    }

    fn curl(&self, url: &str, out: &std::path::Path) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns, "curl", "-sS", "--max-time", "30", "-o", out.to_str().unwrap(), url])
            .output()
            .expect("run curl")
    }
}

impl Drop for FarHost {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn assert_intact(file: &std::path::Path) {
    let data = std::fs::read(file).unwrap();
    assert_eq!(data.len(), SIZE);
    let bad = data.iter().enumerate().position(|(i, b)| *b as usize != i % 251);
    assert_eq!(bad, None, "download corrupted at byte {bad:?}");
}

fn counter(stats: &Value, group: &str, name: &str) -> u64 {
    stats[group][name].as_u64().unwrap_or_else(|| panic!("{group}.{name} in {}", stats[group]))
}

#[test]
fn netns_pmtu_frag_needed_from_a_client_side_router_reaches_the_backend() {
    let _g = guard();
    let t = Topology::up();
    let far = FarHost::add(&t);
    let dir = TempDir::new("netns-pmtu-router");
    // lbd reaches the far network through the client namespace.
    let lbd = t.start_lbd_with(1, &dir, |c| {
        c.replacen("address: 10.0.0.1/24,", "address: 10.0.0.1/24, gateway: 10.0.0.2,", 1)
    });
    let file = dir.join("download.bin");
    let out = far.curl(&format!("http://10.0.0.100/bytes/{SIZE}"), &file);
    let (status, stats) = lbd.stop();
    assert!(status.success());
    println!("events {}\ndrops {}", stats["events"], stats["drops"]);
    assert!(out.status.success(), "curl through the narrow hop: {}", String::from_utf8_lossy(&out.stderr));
    assert_intact(&file);
    assert!(counter(&stats, "events", "icmp_errors_forwarded") >= 1, "the router's error went through lbd");
    assert_eq!(counter(&stats, "drops", "icmp_error_no_session"), 0);
    assert_eq!(counter(&stats, "drops", "icmp_error_malformed"), 0);
    assert_eq!(counter(&stats, "drops", "no_session"), 0);
    assert_eq!(stats["mempool_in_use"].as_u64(), Some(0), "mbuf leak");
}

#[test]
fn netns_pmtu_frag_needed_from_lbd_for_its_port_mtu() {
    let _g = guard();
    let t = Topology::up();
    let dir = TempDir::new("netns-pmtu-lbd");
    // The client-facing port takes 1200 bytes; the backends send 1500.
    let lbd = t.start_lbd_with(1, &dir, |c| c.replacen("address: 10.0.0.1/24,", "address: 10.0.0.1/24, mtu: 1200,", 1));
    let file = dir.join("download.bin");
    let out = t.client(&[
        "curl",
        "-sS",
        "--max-time",
        "30",
        "-o",
        file.to_str().unwrap(),
        &format!("http://10.0.0.100/bytes/{SIZE}"),
    ]);
    let (status, stats) = lbd.stop();
    assert!(status.success());
    println!("events {}\ndrops {}", stats["events"], stats["drops"]);
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    assert_intact(&file);
    assert!(counter(&stats, "drops", "frag_needed") >= 1, "full-size segments met the port MTU");
    assert!(counter(&stats, "events", "icmp_errors_sent") >= 1);
    assert_eq!(counter(&stats, "drops", "too_big"), 0, "Linux TCP sets DF");
    assert_eq!(stats["mempool_in_use"].as_u64(), Some(0), "mbuf leak");
}

/// A UDP datagram to the VIP with TTL 1 (a traceroute's first probe): the
/// client's kernel reports time exceeded from lbd's client-facing port
/// address on the socket's error queue (IP_RECVERR).
const TTL_PROBE: &str = r#"
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 1)
s.setsockopt(socket.IPPROTO_IP, 11, 1)  # IP_RECVERR
s.setblocking(False)
s.connect(("10.0.0.100", 9000))
for attempt in range(100):
    if attempt % 20 == 0:
        try:
            s.send(b"ttl-probe")
        except OSError:
            pass
    try:
        _, anc, _, _ = s.recvmsg(512, 512, socket.MSG_ERRQUEUE)
    except BlockingIOError:
        time.sleep(0.1)
        continue
    for level, kind, d in anc:
        if level == socket.IPPROTO_IP and kind == 11:
            _, origin, icmp_type, code, _, _, _ = struct.unpack("IBBBBII", d[:16])
            print(origin, icmp_type, code, socket.inet_ntoa(d[20:24]))
            sys.exit(0)
sys.exit("no error reported")
"#;

#[test]
fn netns_ttl_expiry_is_answered_with_time_exceeded() {
    let _g = guard();
    let t = Topology::up();
    let dir = TempDir::new("netns-ttl");
    let lbd = t.start_lbd(1, &dir);
    let out = t.client(&["/usr/bin/python3", "-c", TTL_PROBE]);
    let (status, stats) = lbd.stop();
    assert!(status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    // Origin ICMP (2), time exceeded (11), TTL exceeded in transit (0).
    assert_eq!(text.trim(), "2 11 0 10.0.0.1");
    assert!(counter(&stats, "drops", "ttl_exceeded") >= 1);
    assert!(counter(&stats, "events", "icmp_errors_sent") >= 1);
    assert_eq!(stats["mempool_in_use"].as_u64(), Some(0), "mbuf leak");
}

/// For each of `N` connected UDP sockets (one client port each) to
/// VIP:9001, whose backend has no server there: sends up to 3 datagrams,
/// 2 s apart, until a receive fails with ECONNREFUSED, which only the
/// backend's port unreachable, forwarded by lbd, causes. Prints the
/// client ports that never saw it.
const REFUSED_PROBE: &str = r#"
import errno, socket, sys
silent = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("10.0.0.100", 9001))
    s.settimeout(2.0)
    refused = False
    for _ in range(3):
        s.send(b"ping")
        try:
            s.recv(64)
        except ConnectionRefusedError:
            refused = True
            break
        except socket.timeout:
            pass
    if not refused:
        silent.append(s.getsockname()[1])
    s.close()
print("silent", *silent)
"#;

/// The soak's health flap, as the client sees it: a UDP server on a
/// backend is gone, the backend's kernel answers with port unreachable
/// (from the backend, to the client, quoting the forwarded datagram), and
/// the client's connected socket must get ECONNREFUSED through lbd. Two
/// workers on two queue pairs and lbd's random owner-shard key, as in the
/// soak: an error steered to the worker of the fixed key (the bug this
/// guards against) met no session for about half the client ports.
#[test]
fn netns_port_unreachable_from_a_backend_reaches_every_client_port() {
    let _g = guard();
    let t = Topology::up_with_lb_netns();
    // Per-destination ICMP rate limiting would hold back the backend's
    // errors to the one client after the first few.
    t.exec_ok("be3", &["sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"]);
    let dir = TempDir::new("netns-unreach");
    let lbd = t.start_lbd_with(2, &dir, |c| {
        c.replacen(
            "sessions:",
            "  - name: closed\n    vip: 10.0.0.100\n    protocol: udp\n    port: 9001\n    backends:\n      \
             - {address: 10.1.0.13, port: 9001}\nsessions:",
            1,
        )
    });
    let sockets = 24;
    let out = t.client(&["/usr/bin/python3", "-c", REFUSED_PROBE, &sockets.to_string()]);
    let (status, stats) = lbd.stop();
    assert!(status.success());
    println!("events {}\ndrops {}", stats["events"], stats["drops"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(text.trim(), "silent", "client ports that never got ECONNREFUSED");
    assert!(counter(&stats, "events", "icmp_errors_forwarded") >= sockets);
    assert_eq!(counter(&stats, "drops", "icmp_error_no_session"), 0);
    assert_eq!(stats["mempool_in_use"].as_u64(), Some(0), "mbuf leak");
}
