//! Rate limits and blackholing through a real `lbd` (one worker, so every
//! figure is exact): frames injected on a veth at chosen moments, states
//! and counters read through `lbctl limits`, the stats document and
//! `/metrics`. Waits are for conditions with generous deadlines; what is
//! asserted is counts and states.

mod common;

use common::*;
use lbcore::wire::frame::FrameBuilder;
use lbcore::wire::MacAddr;
use serde_json::Value;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc1];
const TCP: u8 = 6;
const SYN: u8 = 0x02;

fn ip(s: &str) -> u32 {
    u32::from(s.parse::<Ipv4Addr>().unwrap())
}

fn syn(src: &str, vip: &str, sport: u16) -> Vec<u8> {
    syn_to(src, vip, sport, 80)
}

fn syn_to(src: &str, vip: &str, sport: u16, dport: u16) -> Vec<u8> {
    FrameBuilder::new(MacAddr(PEER_MAC), MacAddr(LB_MAC)).l4(TCP, ip(src), ip(vip), sport, dport, SYN, b"")
}

/// `lbctl limits --json`'s entry for `listener`.
fn limits(socket: &Path, listener: &str) -> Value {
    let v = lbctl_json(socket, &["limits", "--listener", listener]);
    v["listeners"][0]["limits"].clone()
}

/// Waits (up to a generous deadline) until `cond` holds for `listener`'s
/// limits; returns them.
fn wait_limits(socket: &Path, listener: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let l = limits(socket, listener);
        if cond(&l) {
            return l;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{listener} never {what}: {l}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn drop_count(stats: &Value, reason: &str) -> u64 {
    stats["drops"][reason].as_u64().unwrap_or_else(|| panic!("no drop counter {reason}: {stats}"))
}

fn tx_packets(stats: &Value) -> u64 {
    stats["ports"].as_array().unwrap().iter().map(|p| p["tx_packets"].as_u64().unwrap()).sum()
}

/// The value of the sample of `metric` whose labels include all of
/// `labels`.
fn sample(text: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .find(|l| labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `lbd` with one worker on a pcap port over two veths (frames injected
/// on `rx_peer` come in; what it sends leaves on the other veth), its
/// configuration `config` plus the port, control and metrics keys.
struct Rig {
    dir: TempDir,
    rx_peer: String,
    socket: std::path::PathBuf,
    cfg: std::path::PathBuf,
    _veths: [Veth; 2],
}

impl Rig {
    fn start(name: &str, config: &str) -> (Rig, Lbd) {
        assert!(is_root(), "starts DPDK and makes veths: run as root");
        let dir = TempDir::new(name);
        let prefix = unique("lbdl");
        let (rx_dev, rx_peer, tx_dev, tx_peer) = (unique("lrx"), unique("lrp"), unique("ltx"), unique("ltp"));
        let veths = [Veth::new(&rx_dev, &rx_peer), Veth::new(&tx_dev, &tx_peer)];
        let socket = dir.join("lbd.sock");
        let cfg = dir.join("lbd.yaml");
        let eal: Vec<String> = [
            "--no-pci",
            "--no-huge",
            "-m",
            "512",
            "--file-prefix",
            &prefix,
            "--no-telemetry",
            "--vdev",
            &format!("net_pcap0,rx_iface_in={rx_dev},tx_iface={tx_dev}"),
        ]
        .map(String::from)
        .to_vec();
        std::fs::write(
            &cfg,
            format!(
                "eal: {}\n\
                 lcores: {{workers: 1}}\n\
                 ports:\n  - name: lan\n    device: net_pcap0\n    address: 10.0.0.1/24\n    exception: off\n    mac: \"02:00:00:00:00:01\"\n    \
                 neighbors: [{{ip: 10.0.0.11, mac: \"02:00:00:00:00:11\"}}]\n\
                 {config}\
                 control: {{socket: {}}}\n\
                 metrics: {{listen: \"127.0.0.1:0\"}}\n",
                serde_json::to_string(&eal).unwrap(),
                socket.display()
            ),
        )
        .unwrap();
        let lbd = Lbd::start(&cfg, dir.path(), &prefix);
        (Rig { dir, rx_peer, socket, cfg, _veths: veths }, lbd)
    }

    /// Reloads the configuration with `from` replaced by `to`.
    fn reload_with(&self, name: &str, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.cfg).unwrap();
        assert!(text.contains(from), "{from} not in the configuration");
        let path = self.dir.join(name);
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
        let (code, out, err) = lbctl(&self.socket, &["config", "reload", path.to_str().unwrap()]);
        assert_eq!(code, 0, "{out}{err}");
    }
}

/// Listener `capped` caps each client address at 3 sessions: a source
/// opening 10 connections gets 3, the other 7 SYNs are dropped as
/// `source_session_limit`, and another source still connects. Listener
/// `guarded` blackholes above 100 packets/s for 20 s: a flood engages it,
/// every packet to it is then dropped (`vip_blackholed`) while `capped`
/// still forwards, and once the flood stops it is released after the
/// hold and forwards again.
#[test]
fn per_source_cap_and_blackhole_through_lbd() {
    let (rig, mut lbd) = Rig::start(
        "limits",
        "listeners:\n  \
         - {name: capped, vip: 10.0.0.100, protocol: tcp, port: 80, backends: [{address: 10.0.0.11, port: 8080}],\n     \
             limits: {per_source: {max_sessions: 3}}}\n  \
         - {name: guarded, vip: 10.0.0.103, protocol: tcp, port: 80, backends: [{address: 10.0.0.11, port: 8081}],\n     \
             protection: {blackhole: {packets_per_second: 100}, hold: 20s}}\n\
         sessions: {capacity_per_worker: 65536}\n\
         timeouts: {tcp_syn: 1h}\n",
    );
    let (socket, rx_peer) = (rig.socket.clone(), rig.rx_peer.clone());
    let metrics = lbd.metrics_addr().expect("metrics address in the log");

    // Per-source cap: 10 SYNs from .7, 2 from .8.
    let mut frames: Vec<Vec<u8>> = (0..10).map(|p| syn("10.0.0.7", "10.0.0.100", 40000 + p)).collect();
    frames.extend((0..2).map(|p| syn("10.0.0.8", "10.0.0.100", 40000 + p)));
    inject(&rx_peer, &frames);
    let s = lbd.wait_processed(frames.len() as u64, false, Duration::from_secs(30));
    assert_eq!(drop_count(&s, "source_session_limit"), 7, "{}", s["drops"]);
    assert_eq!(tx_packets(&s), 5, "3 from the capped source, 2 from the other: {}", s["drops"]);
    let capped = limits(&socket, "capped");
    assert_eq!(capped["drops"]["source_session_limit"], 7, "{capped}");
    assert_eq!(capped["configured"]["per_source.max_sessions"], 3, "{capped}");
    assert_eq!(capped["state"], "normal");
    let rx_before = s["ports"][0]["rx_packets"].as_u64().unwrap();

    // Blackhole: a flood of 2000 SYNs to `guarded` from many sources.
    let flood: Vec<Vec<u8>> = (0..2000u32)
        .map(|i| {
            syn(&Ipv4Addr::from(ip("10.0.1.0") + (i % 250) + 1).to_string(), "10.0.0.103", 1024 + (i / 250) as u16)
        })
        .collect();
    inject(&rx_peer, &flood);
    let engaged = wait_limits(&socket, "guarded", "blackholed", |l| l["state"] == "blackholed");
    assert_eq!(engaged["blackholed_total"], 1, "{engaged}");
    let scraped = scrape(&metrics);
    assert_eq!(
        sample(&scraped, "lbd_listener_protection_state", &["listener=\"guarded\"", "state=\"blackholed\""]),
        Some(1.0),
        "{scraped}"
    );
    let before = lbd.wait_processed(rx_before + flood.len() as u64, false, Duration::from_secs(30));
    // While it holds (20 s: a loaded machine takes a few at most here), every packet to it
    // is dropped, and the other listener is not affected.
    let blackholed_before = drop_count(&before, "vip_blackholed");
    let mut more: Vec<Vec<u8>> = (0..50).map(|p| syn("10.0.2.1", "10.0.0.103", 50000 + p)).collect();
    more.push(syn("10.0.0.9", "10.0.0.100", 40000));
    inject(&rx_peer, &more);
    let during = lbd.wait_processed(rx_before + (flood.len() + more.len()) as u64, false, Duration::from_secs(30));
    let still = limits(&socket, "guarded");
    assert_eq!(still["released_total"], 0, "released within the hold: {still}");
    assert_eq!(drop_count(&during, "vip_blackholed") - blackholed_before, 50, "{}", during["drops"]);
    assert_eq!(tx_packets(&during) - tx_packets(&before), 1, "only the SYN to `capped` went out");

    // The flood has stopped: released once the hold has passed.
    let released = wait_limits(&socket, "guarded", "released", |l| l["state"] == "normal");
    assert_eq!(released["released_total"], 1, "{released}");
    let blackholed = released["drops"]["vip_blackholed"].as_u64().unwrap();
    assert_eq!(blackholed, drop_count(&during, "vip_blackholed"), "per-listener and global counts agree");
    let after: Vec<Vec<u8>> = (0..5).map(|p| syn("10.0.2.1", "10.0.0.103", 60000 + p)).collect();
    inject(&rx_peer, &after);
    let end =
        lbd.wait_processed(rx_before + (flood.len() + more.len() + after.len()) as u64, false, Duration::from_secs(30));
    assert_eq!(drop_count(&end, "vip_blackholed"), drop_count(&during, "vip_blackholed"), "{}", end["drops"]);
    assert_eq!(tx_packets(&end) - tx_packets(&during), 5, "forwarded again");
    let scraped = scrape(&metrics);
    assert_eq!(
        sample(&scraped, "lbd_listener_protection_transitions_total", &["listener=\"guarded\"", "to=\"normal\""]),
        Some(1.0),
        "{scraped}"
    );
    assert_eq!(
        sample(&scraped, "lbd_listener_limit_drops_total", &["listener=\"capped\"", "reason=\"source_session_limit\""]),
        Some(7.0),
        "{scraped}"
    );
    let (code, text, _) = lbctl(&socket, &["limits"]);
    assert_eq!(code, 0);
    assert!(text.contains("guarded (10.0.0.103:80 tcp): normal"), "{text}");

    // A reload raises the cap to 5: the source's 3 sessions (half-open
    // for an hour) still count, so 2 of 5 more get through.
    rig.reload_with("raised.yaml", "max_sessions: 3", "max_sessions: 5");
    assert_eq!(limits(&socket, "capped")["configured"]["per_source.max_sessions"], 5);
    let again: Vec<Vec<u8>> = (0..5).map(|p| syn("10.0.0.7", "10.0.0.100", 41000 + p)).collect();
    inject(&rx_peer, &again);
    let last = lbd.wait_processed(
        rx_before + (flood.len() + more.len() + after.len() + again.len()) as u64,
        false,
        Duration::from_secs(30),
    );
    assert_eq!(drop_count(&last, "source_session_limit"), 10, "{}", last["drops"]);
    assert_eq!(tx_packets(&last) - tx_packets(&end), 2);
    let (status, _) = lbd.stop();
    assert!(status.success());
}

/// `lbctl limits --json`'s entry for the protected VIP `address`.
fn vip_limits(socket: &Path, address: &str) -> Value {
    let v = lbctl_json(socket, &["limits"]);
    v["vips"].as_array().unwrap().iter().find(|x| x["address"] == address).cloned().unwrap_or(Value::Null)
}

/// VIP 10.0.0.103 is blackholed above 100 packets/s over everything sent
/// to it, while neither of its listeners has protection of its own: a
/// flood spread over both listeners and a port none serves engages it,
/// seen in `lbctl limits`, `/metrics` and the log. Every packet to the
/// VIP is then dropped (`vip_blackholed`), closed ports included, while
/// another VIP forwards. A reload that leaves the VIP's protection alone
/// keeps it blackholed; one that changes it starts it over, normal.
#[test]
fn vip_blackhole_over_its_listeners_through_lbd() {
    let (rig, mut lbd) = Rig::start(
        "limits-vip",
        "listeners:\n  \
         - {name: web, vip: 10.0.0.103, protocol: tcp, port: 80, backends: [{address: 10.0.0.11, port: 8080}]}\n  \
         - {name: tls, vip: 10.0.0.103, protocol: tcp, port: 443, backends: [{address: 10.0.0.11, port: 8443}]}\n  \
         - {name: other, vip: 10.0.0.100, protocol: tcp, port: 80, backends: [{address: 10.0.0.11, port: 8081}]}\n\
         vips:\n  - {address: 10.0.0.103, protection: {blackhole: {packets_per_second: 100}, hold: 1h}}\n\
         sessions: {capacity_per_worker: 65536}\n",
    );
    let socket = rig.socket.clone();
    let metrics = lbd.metrics_addr().expect("metrics address in the log");
    let quiet = vip_limits(&socket, "10.0.0.103");
    assert_eq!(quiet["state"], "normal", "{quiet}");
    assert_eq!(quiet["configured"]["blackhole.packets_per_second"], 100, "{quiet}");
    assert_eq!(quiet["configured"]["hold_ms"], 3_600_000, "{quiet}");

    // 1500 SYNs, a third each to port 80, 443 and 9999.
    let flood: Vec<Vec<u8>> = (0..1500u32)
        .map(|i| {
            let src = Ipv4Addr::from(ip("10.0.1.0") + (i % 250) + 1).to_string();
            syn_to(&src, "10.0.0.103", 1024 + (i / 250) as u16, [80, 443, 9999][(i % 3) as usize])
        })
        .collect();
    inject(&rig.rx_peer, &flood);
    let start = Instant::now();
    let engaged = loop {
        let v = vip_limits(&socket, "10.0.0.103");
        if v["state"] == "blackholed" {
            break v;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the VIP was never blackholed: {v}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(engaged["blackholed_total"], 1, "{engaged}");
    for l in ["web", "tls"] {
        assert!(lbctl_json(&socket, &["limits", "--listener", l])["listeners"].as_array().unwrap().is_empty());
    }
    let before = lbd.wait_processed(flood.len() as u64, false, Duration::from_secs(30));
    // (The flood may fit in the window whose end engages the blackhole:
    // how much of it was dropped depends on timing, and is not asserted.)
    let blackholed_before = drop_count(&before, "vip_blackholed");
    let scraped = scrape(&metrics);
    assert_eq!(
        sample(&scraped, "lbd_vip_protection_state", &["vip=\"10.0.0.103\"", "state=\"blackholed\""]),
        Some(1.0),
        "{scraped}"
    );
    assert_eq!(
        sample(&scraped, "lbd_vip_limit", &["vip=\"10.0.0.103\"", "limit=\"blackhole.packets_per_second\""]),
        Some(100.0),
        "{scraped}"
    );
    assert_eq!(
        sample(&scraped, "lbd_vip_limit_drops_total", &["vip=\"10.0.0.103\"", "reason=\"vip_blackholed\""]),
        Some(blackholed_before as f64),
        "{scraped}"
    );
    let (code, text, _) = lbctl(&socket, &["limits"]);
    assert_eq!(code, 0);
    assert!(text.contains("VIP 10.0.0.103 (all its traffic): blackholed"), "{text}");
    let start = Instant::now();
    while !lbd.log_text().contains("lbd: protection: VIP 10.0.0.103: normal -> blackholed (offered ") {
        assert!(start.elapsed() < Duration::from_secs(60), "no log line: {}", lbd.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }

    // Blackholed: each listener of the VIP and a closed port drop; the
    // other VIP forwards.
    let probe = |sport: u16| {
        vec![
            syn_to("10.0.2.1", "10.0.0.103", sport, 80),
            syn_to("10.0.2.1", "10.0.0.103", sport, 443),
            syn_to("10.0.2.1", "10.0.0.103", sport, 9999),
            syn_to("10.0.2.1", "10.0.0.100", sport, 80),
        ]
    };
    let mut rx = flood.len() as u64;
    let mut check = |lbd: &mut Lbd, sport: u16, blackholed: bool| {
        let last = lbd.wait_processed(rx, false, Duration::from_secs(30));
        let frames = probe(sport);
        rx += frames.len() as u64;
        inject(&rig.rx_peer, &frames);
        let now = lbd.wait_processed(rx, false, Duration::from_secs(30));
        let dropped = drop_count(&now, "vip_blackholed") - drop_count(&last, "vip_blackholed");
        let sent = tx_packets(&now) - tx_packets(&last);
        if blackholed {
            assert_eq!((dropped, sent), (3, 1), "all three to the VIP dropped, the other sent: {}", now["drops"]);
        } else {
            let closed = drop_count(&now, "no_listener") - drop_count(&last, "no_listener");
            assert_eq!((dropped, sent, closed), (0, 3, 1), "forwarded, the closed port refused: {}", now["drops"]);
        }
    };
    check(&mut lbd, 50000, true);

    // A reload that changes another listener keeps the VIP's state.
    rig.reload_with("other.yaml", "port: 8081", "port: 8082");
    let kept = vip_limits(&socket, "10.0.0.103");
    assert_eq!((kept["state"].as_str(), kept["released_total"].as_u64()), (Some("blackholed"), Some(0)), "{kept}");
    check(&mut lbd, 50001, true);

    // One that changes its protection starts it over.
    rig.reload_with("vip.yaml", "packets_per_second: 100}, hold: 1h", "packets_per_second: 100000}, hold: 1h");
    let fresh = vip_limits(&socket, "10.0.0.103");
    assert_eq!(fresh["state"], "normal", "{fresh}");
    assert_eq!(fresh["configured"]["blackhole.packets_per_second"], 100_000, "{fresh}");
    check(&mut lbd, 50002, false);
    let end = lbd.wait_processed(flood.len() as u64 + 12, false, Duration::from_secs(30));
    assert_eq!(drop_count(&end, "vip_blackholed"), blackholed_before + 6, "{}", end["drops"]);
    let scraped = scrape(&metrics);
    assert_eq!(
        sample(&scraped, "lbd_vip_limit_drops_total", &["vip=\"10.0.0.103\"", "reason=\"vip_blackholed\""]),
        Some((blackholed_before + 6) as f64),
        "the VIP's count and the global one agree: {scraped}"
    );
    let (status, _) = lbd.stop();
    assert!(status.success());
}
