//! Schedulers and persistence with real connections: `lbd` on af_packet
//! between the testbed's client namespace and its three HTTP backends
//! (testbed/topology.sh), the client making many TCP connections with
//! testbed/conns.py. Each test compares where connections went with the
//! listener's weights.
//!
//! The tests share the machine's two CPUs with busy-polling lcores, so they
//! run one at a time.

mod common;

use common::topology::Topology;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn guard() -> std::sync::MutexGuard<'static, ()> {
    assert!(is_root(), "the testbed needs root (namespaces, DPDK)");
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The web listener as topology.sh writes it.
const WEB: &str = "    scheduler: maglev
    backends:
      - {address: 10.1.0.11, port: 8080}
      - {address: 10.1.0.12, port: 8080}
      - {address: 10.1.0.13, port: 8080}
";

/// The topology's configuration with the web listener's scheduling
/// replaced by `lines` (scheduler, hash, persistence) and its backends
/// given `weights`; `extra` appended (top-level keys).
fn web_listener(cfg: String, lines: &str, weights: [u32; 3], extra: &str) -> String {
    assert!(cfg.contains(WEB), "topology.sh's web listener changed:\n{cfg}");
    let [w1, w2, w3] = weights;
    let web = format!(
        "{lines}    backends:\n      - {{address: 10.1.0.11, port: 8080, weight: {w1}}}\n      \
         - {{address: 10.1.0.12, port: 8080, weight: {w2}}}\n      - {{address: 10.1.0.13, port: 8080, weight: {w3}}}\n"
    );
    cfg.replacen(WEB, &web, 1) + extra
}

fn conns_py() -> String {
    repo().join("testbed/conns.py").display().to_string()
}

/// `n` connections one after another from the client (its addresses
/// `sources` in turn, or its own); the (source, backend) of each.
fn connections(t: &Topology, n: usize, sources: &[&str]) -> Vec<(String, String)> {
    let got = t.sequential_connections(n, sources);
    assert_eq!(got.len(), n, "{got:?}");
    got
}

fn tally<'a>(backends: impl Iterator<Item = &'a str>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for b in backends {
        *m.entry(b.to_owned()).or_insert(0) += 1;
    }
    m
}

fn counts(t: &BTreeMap<String, usize>) -> [usize; 3] {
    ["be1", "be2", "be3"].map(|b| t.get(b).copied().unwrap_or(0))
}

/// Sessions each backend has, as lbctl reports them.
fn active(t: &Topology) -> [u64; 3] {
    let v = lbctl_json(&t.socket(), &["backend", "list", "--listener", "web"]);
    let mut n = [0; 3];
    for b in v["backends"].as_array().unwrap() {
        let i = match b["address"].as_str().unwrap() {
            "10.1.0.11" => 0,
            "10.1.0.12" => 1,
            "10.1.0.13" => 2,
            other => panic!("unknown backend {other}"),
        };
        n[i] = b["sessions_active"].as_u64().unwrap();
    }
    n
}

/// Smooth weighted round robin on one worker: exactly the weights, and
/// interleaved (no backend twice in a row with weights 1:2:3 where another
/// could come between).
#[test]
fn round_robin_splits_connections_exactly_by_weight() {
    let _g = guard();
    let t = Topology::up();
    let dir = TempDir::new("sched-rr");
    let _lbd = t.start_lbd_with(1, &dir, |c| web_listener(c, "    scheduler: round_robin\n", [1, 2, 3], ""));
    let got = connections(&t, 120, &[]);
    assert_eq!(counts(&tally(got.iter().map(|(_, b)| b.as_str()))), [20, 40, 60], "{got:?}");
    let runs = got.windows(3).filter(|w| w[0].1 == w[1].1 && w[1].1 == w[2].1).count();
    assert_eq!(runs, 0, "three in a row: not interleaved: {got:?}");
}

/// Maglev over the five-tuple: connections spread as the weights say,
/// within five standard deviations; with `hash: source_ip` one client's
/// connections all reach one backend.
#[test]
fn maglev_splits_connections_by_weight_and_hashes_the_fields_named() {
    let _g = guard();
    let t = Topology::up();
    let dir = TempDir::new("sched-maglev");
    let lbd = t.start_lbd_with(2, &dir, |c| web_listener(c, "    scheduler: maglev\n", [1, 2, 3], ""));
    let n = 300;
    let got = counts(&tally(connections(&t, n, &[]).iter().map(|(_, b)| b.as_str())));
    for (i, w) in [1.0f64, 2.0, 3.0].iter().enumerate() {
        let p = w / 6.0;
        let (want, sd) = (n as f64 * p, (n as f64 * p * (1.0 - p)).sqrt());
        assert!(
            (got[i] as f64 - want).abs() < 5.0 * sd,
            "backend {}: {} connections, want {want:.0} ± {sd:.1}: {got:?}",
            i + 1,
            got[i]
        );
    }
    drop(lbd.stop());

    let dir = TempDir::new("sched-maglev-src");
    let _lbd =
        t.start_lbd_with(2, &dir, |c| web_listener(c, "    scheduler: maglev\n    hash: source_ip\n", [1, 2, 3], ""));
    let got = tally(connections(&t, 40, &[]).iter().map(|(_, b)| b.as_str()));
    assert_eq!(got.len(), 1, "one client, one backend: {got:?}");
}

/// Extra addresses on the client's interface, so the test has many
/// clients (the namespace, and they with it, goes at teardown).
fn add_client_addresses(t: &Topology, n: u8) -> Vec<String> {
    (0..n)
        .map(|i| {
            let a = format!("10.0.0.{}", 10 + i);
            t.client_ok(&["ip", "addr", "add", &format!("{a}/24"), "dev", "eth0"]);
            a
        })
        .collect()
}

/// Source hash: every connection of a client address reaches one backend,
/// whichever worker owns it; addresses spread over the backends.
#[test]
fn source_hash_keeps_each_client_address_on_one_backend() {
    let _g = guard();
    let t = Topology::up();
    let dir = TempDir::new("sched-src");
    let mut lbd = t.start_lbd_with(2, &dir, |c| web_listener(c, "    scheduler: source_hash\n", [1, 1, 1], ""));
    let addrs = add_client_addresses(&t, 12);
    let sources: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let got = connections(&t, 12 * 8, &sources);
    let mut per_client: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (src, b) in &got {
        per_client.entry(src.as_str()).or_default().insert(b.as_str());
    }
    assert_eq!(per_client.len(), 12);
    for (src, bs) in &per_client {
        assert_eq!(bs.len(), 1, "client {src} reached {bs:?}");
    }
    let used: BTreeSet<&str> = per_client.values().flatten().copied().collect();
    assert!(used.len() >= 2, "12 clients all on {used:?}");
    // Both workers created sessions: the client ports spread them.
    let stats = lbd.stats_now();
    for w in stats["workers"].as_array().unwrap() {
        assert!(w["events"]["sessions_created"].as_u64().unwrap() > 5, "{w}");
    }
}

/// A `conns.py hold` process in the client namespace: opens and closes
/// connections it keeps open, on command. Killed (by its PID) on drop.
struct Holder {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Holder {
    fn start(t: &Topology) -> Holder {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &t.ns("client"), "/usr/bin/python3", &conns_py(), "hold", "10.0.0.100", "80"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start conns.py hold");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Holder { child, stdin, stdout }
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        let n = self.stdout.read_line(&mut l).expect("read conns.py");
        assert!(n > 0, "conns.py hold ended early");
        l.trim().to_owned()
    }

    /// Opens `n` more connections; the backend of each.
    fn open(&mut self, n: usize) -> Vec<String> {
        writeln!(self.stdin, "open {n}").unwrap();
        self.stdin.flush().unwrap();
        let got: Vec<String> = (0..n).map(|_| self.line()).collect();
        assert_eq!(self.line(), "done");
        got
    }

    fn close(&mut self, backend: &str) -> usize {
        writeln!(self.stdin, "close {backend}").unwrap();
        self.stdin.flush().unwrap();
        let l = self.line();
        l.strip_prefix("closed ").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("conns.py said {l:?}"))
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Weighted least connections on two workers, with connections held open
/// so the counts matter: they spread exactly by weight (each goes where
/// sessions per weight are fewest, counted over both workers); when one
/// backend's connections end and its sessions go, the next connections
/// all go there until it is level again.
#[test]
fn least_connections_sends_new_connections_to_the_least_loaded() {
    let _g = guard();
    let t = Topology::up();
    let dir = TempDir::new("sched-wlc");
    let _lbd = t.start_lbd_with(2, &dir, |c| {
        web_listener(
            c,
            "    scheduler: least_connections\n",
            [1, 2, 3],
            "timeouts: {tcp_closing: 1s, tcp_closed: 1s}\n",
        )
    });
    let mut h = Holder::start(&t);
    let first = h.open(12);
    assert_eq!(counts(&tally(first.iter().map(String::as_str))), [2, 4, 6], "{first:?}");
    assert_eq!(active(&t), [2, 4, 6]);
    assert_eq!(h.close("be3"), 6);
    // The closed connections' sessions go after their closing timeout.
    let deadline = Instant::now() + Duration::from_secs(60);
    while active(&t) != [2, 4, 0] {
        assert!(Instant::now() < deadline, "be3's sessions never went: {:?}", active(&t));
        std::thread::sleep(Duration::from_millis(200));
    }
    let next = h.open(6);
    assert_eq!(next, vec!["be3"; 6], "all to the backend without sessions");
    let more = h.open(6);
    assert_eq!(counts(&tally(more.iter().map(String::as_str))), [1, 2, 3], "level again, then by weight: {more:?}");
}

/// Persistence on a round-robin listener with two workers: a client's
/// connections come from many ports, land on both workers, and all reach
/// the backend its first one got. After the persistence time without a
/// connection, round robin moves the client on. (5 s of persistence is
/// far more than the 60 connections take, one after another.)
#[test]
fn persistence_holds_across_workers_and_expires() {
    let _g = guard();
    let t = Topology::up();
    let dir = TempDir::new("sched-persist");
    let mut lbd = t.start_lbd_with(2, &dir, |c| {
        web_listener(c, "    scheduler: round_robin\n    persistence: 5s\n", [1, 1, 1], "")
    });
    let n = 60;
    let got = connections(&t, n, &[]);
    let held = got[0].1.clone();
    assert!(got.iter().all(|(_, b)| *b == held), "not all on {held}: {got:?}");
    let stats = lbd.stats_now();
    assert_eq!(stats["events"]["persistence_hits"].as_u64(), Some(n as u64 - 1));
    for w in stats["workers"].as_array().unwrap() {
        assert!(w["events"]["sessions_created"].as_u64().unwrap() > 5, "both workers took connections: {w}");
    }
    // Each probe comes more than the persistence time after the previous
    // connection, so the entry has expired and round robin chooses. A
    // worker's cursor may point at the old backend once; it moves on.
    let deadline = Instant::now() + Duration::from_secs(90);
    let now_on = loop {
        // Longer than the persistence time: letting it pass is the point.
        std::thread::sleep(Duration::from_secs(6));
        let probe = connections(&t, 1, &[]).remove(0).1;
        if probe != held {
            break probe;
        }
        assert!(Instant::now() < deadline, "the client stayed on {held} after its persistence expired");
    };
    // And the new backend holds again.
    let moved = connections(&t, 20, &[]);
    assert!(moved.iter().all(|(_, b)| *b == now_on), "not all on {now_on}: {moved:?}");
}
