//! Health checks end to end on the namespace testbed (testbed/topology.sh):
//! the independent checker (`lbctl health-check` in a namespace of its own
//! on the backend bridge) reporting to lbd, states set by hand and by raw
//! protocol reports (precedence, expiry), all backends down in both
//! modes, slow start, and lbd's built-in checks (which need lbd's kernel
//! exception path: lbd runs in namespace NAME-lb).
//!
//! Assertions are on states and counts; every wait is for a condition with
//! a generous deadline.

mod common;

use common::topology::Topology;
use common::*;
use lbproto::{
    read_frame, write_frame, BackendRef, HealthSetting, Request, RequestFrame, ResponseFrame, PROTOCOL_VERSION,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn guard() -> std::sync::MutexGuard<'static, ()> {
    assert!(is_root(), "the testbed needs root (namespaces, DPDK)");
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Checks fast enough that the tests do not wait long, with timeouts a
/// loaded CI machine does not reach for a healthy backend (two missed
/// probes in a row take one out), and reports that live about 4 s (3
/// intervals and a timeout): a checker or a control thread held up for
/// a second does not let a report lapse.
const WEB_CHECK: &str = "    health_check: {kind: http, interval: 1s, timeout: 1s, rise: 2, fall: 2}\n";
const ECHO_CHECK: &str =
    "    health_check: {kind: udp, payload: hc, expect: \"data=hc\", interval: 1s, timeout: 1s, rise: 2, fall: 2}\n";

/// The topology's configuration with checks on `web` (HTTP) and `echo`
/// (UDP), and `top` appended (top-level keys).
fn with_checks(cfg: String, top: &str) -> String {
    assert!(cfg.contains("    port: 80\n") && cfg.contains("    port: 9000\n"), "{cfg}");
    let cfg = cfg.replacen("    port: 80\n", &format!("    port: 80\n{WEB_CHECK}"), 1).replacen(
        "    port: 9000\n",
        &format!("    port: 9000\n{ECHO_CHECK}"),
        1,
    );
    format!("{cfg}{top}")
}

fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "no {what} within {secs} s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `lbctl backend list --listener L` as JSON, by "address:port".
fn backends(socket: &Path, listener: &str) -> BTreeMap<String, Value> {
    let v = lbctl_json(socket, &["backend", "list", "--listener", listener]);
    v["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (format!("{}:{}", b["address"].as_str().unwrap(), b["port"]), b.clone()))
        .collect()
}

fn backend(socket: &Path, listener: &str, addr: &str) -> Value {
    backends(socket, listener).remove(addr).unwrap_or_else(|| panic!("{listener} has no backend {addr}"))
}

/// Waits until backend `addr` of `listener` is `health` from `source`.
fn wait_health(socket: &Path, listener: &str, addr: &str, health: &str, source: &str) -> Value {
    wait_for(&format!("{listener} {addr} {health} ({source})"), 30, || {
        let b = backend(socket, listener, addr);
        (b["health"] == health && b["health_source"] == source).then_some(b)
    })
}

/// One request through the VIP: which backend answered.
fn curl(t: &Topology) -> Result<String, String> {
    let out = t.client(&["curl", "-sS", "--max-time", "2", "http://10.0.0.100/"]);
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("{}{body}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    body.split_whitespace()
        .next()
        .and_then(|w| w.strip_prefix("backend="))
        .map(str::to_owned)
        .ok_or_else(|| format!("unexpected body {body:?}"))
}

/// `n` requests: answers by backend, failures.
fn curls(t: &Topology, n: usize) -> (BTreeMap<String, usize>, Vec<String>) {
    let mut by = BTreeMap::new();
    let mut failed = Vec::new();
    for _ in 0..n {
        match curl(t) {
            Ok(b) => *by.entry(b).or_default() += 1,
            Err(e) => failed.push(e),
        }
    }
    (by, failed)
}

/// Each request's start time and the backend that answered (or the error).
type RequestLog = Vec<(Instant, Result<String, String>)>;

/// Requests in a loop on a thread of their own, each with its start time.
struct Traffic {
    stop: Arc<AtomicBool>,
    log: Arc<std::sync::Mutex<RequestLog>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(t: &Topology) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(std::sync::Mutex::new(RequestLog::new()));
        let (stop2, log2) = (Arc::clone(&stop), Arc::clone(&log));
        let client = t.ns("client");
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let at = Instant::now();
                let o = Command::new("ip")
                    .args(["netns", "exec", &client, "curl", "-sS", "--max-time", "2", "http://10.0.0.100/"])
                    .output()
                    .expect("curl");
                let body = String::from_utf8_lossy(&o.stdout).into_owned();
                let r = if o.status.success() {
                    Ok(body.split_whitespace().next().unwrap_or("").trim_start_matches("backend=").to_owned())
                } else {
                    Err(String::from_utf8_lossy(&o.stderr).trim().to_owned())
                };
                log2.lock().unwrap().push((at, r));
            }
        });
        Traffic { stop, log, thread: Some(thread) }
    }

    /// Waits until `n` requests that started at `since` or later have
    /// finished (a count, not a time: a slow machine only takes longer).
    fn wait_requests_since(&self, since: Instant, n: usize) {
        wait_for(&format!("{n} requests"), 120, || {
            (self.log.lock().unwrap().iter().filter(|(at, _)| *at >= since).count() >= n).then_some(())
        });
    }

    fn finish(mut self) -> RequestLog {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn pid_file(t: &Topology, i: u32) -> PathBuf {
    PathBuf::from(format!("/run/lbd-testbed/{}/be{i}.pid", t.name))
}

fn alive(pid: u32) -> bool {
    // A zombie is dead for our purposes (its sockets are closed).
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().is_some_and(|r| !r.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// Backend servers this test (re)started: killed and reaped on drop (the
/// topology's `down` kills the ones it started, by their recorded PIDs).
#[derive(Default)]
struct Backends {
    children: BTreeMap<u32, Child>,
}

impl Backends {
    /// Stops backend `i` by the PID recorded for it.
    fn stop(&mut self, t: &Topology, i: u32) {
        if let Some(mut c) = self.children.remove(&i) {
            let _ = c.kill();
            let _ = c.wait();
            return;
        }
        let pid: u32 = std::fs::read_to_string(pid_file(t, i)).unwrap().trim().parse().unwrap();
        run(Command::new("kill").arg(pid.to_string()));
        wait_for(&format!("be{i} (pid {pid}) to exit"), 20, || (!alive(pid)).then_some(()));
    }

    /// Starts backend `i` as topology.sh does, with `extra` arguments.
    fn start(&mut self, t: &Topology, i: u32, extra: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(format!("/run/lbd-testbed/{}/be{i}.log", t.name))
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &t.ns(&format!("be{i}")), "/usr/bin/python3"])
            .arg(repo().join("testbed/backend.py"))
            .args(["--name", &format!("be{i}"), "--http-port", "8080", "--udp-port", "9000"])
            .args(extra)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        std::fs::write(pid_file(t, i), child.id().to_string()).unwrap();
        self.children.insert(i, child);
        let ns = t.ns(&format!("be{i}"));
        for (flag, port) in [("-ltnH", "8080"), ("-lunH", "9000")] {
            wait_for(&format!("be{i} listening on {port}"), 20, || {
                let out = Command::new("ip")
                    .args(["netns", "exec", &ns, "ss", flag, &format!("sport = :{port}")])
                    .output()
                    .unwrap();
                (!out.stdout.is_empty()).then_some(())
            });
        }
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        for c in self.children.values_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A namespace `NAME-hc` on the backends' bridge (10.1.0.50/24), where
/// the independent checker runs; deleted (with its veth) on drop.
struct CheckerNs {
    ns: String,
}

impl CheckerNs {
    fn new(t: &Topology) -> CheckerNs {
        let ns = t.ns("hc");
        run(Command::new("ip").args(["netns", "add", &ns]));
        let g = CheckerNs { ns };
        let veth = format!("hc-{}", t.name);
        run(Command::new("ip").args([
            "link",
            "add",
            &veth,
            "netns",
            &t.ns("sw"),
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &g.ns,
        ]));
        run(Command::new("ip").args(["-n", &t.ns("sw"), "link", "set", &veth, "master", "br0", "up"]));
        run(Command::new("ip").args(["netns", "exec", &g.ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]));
        run(Command::new("ip").args(["-n", &g.ns, "addr", "add", "10.1.0.50/24", "dev", "eth0"]));
        run(Command::new("ip").args(["-n", &g.ns, "link", "set", "eth0", "up"]));
        run(Command::new("ip").args(["-n", &g.ns, "link", "set", "lo", "up"]));
        g
    }
}

impl Drop for CheckerNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// `lbctl health-check` running in the checker namespace; killed (by its
/// PID) on drop.
struct Checker {
    child: Option<Child>,
    log: PathBuf,
}

impl Checker {
    fn start(ns: &CheckerNs, config: &Path, sockets: &[&Path], name: &str, log: PathBuf) -> Checker {
        let logf = std::fs::File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.ns])
            .arg(lbctl_bin())
            .arg("health-check")
            .arg("--config")
            .arg(config)
            .args(sockets.iter().flat_map(|s| [Path::new("--report-to"), s]))
            .args(["--name", name])
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .unwrap();
        Checker { child: Some(child), log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The value of metric `name` for the backend (or listener, when
/// `backend` is empty) of listener `listener`.
fn metric(text: &str, name: &str, listener: &str, backend: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| l.contains(&format!("listener=\"{listener}\"")))
        .find(|l| backend.is_empty() || l.contains(&format!("backend=\"{backend}\"")))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn raw_request(socket: &Path, request: Request) -> Value {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write_frame(
        &mut s,
        &RequestFrame { id: 1, request: Request::Hello { protocol: PROTOCOL_VERSION, client: "t".into() } },
    )
    .unwrap();
    let _: ResponseFrame = read_frame(&mut s).unwrap().unwrap();
    write_frame(&mut s, &RequestFrame { id: 2, request }).unwrap();
    let r: ResponseFrame = read_frame(&mut s).unwrap().unwrap();
    serde_json::to_value(r).unwrap()
}

fn report(listener: &str, addr: &str, port: u16, state: HealthSetting, checker: &str, ttl_ms: Option<u64>) -> Request {
    Request::BackendSetHealth {
        listener: listener.into(),
        backend: BackendRef { address: addr.into(), port: Some(port) },
        state,
        checker: Some(checker.into()),
        reason: Some(format!("{checker} says so")),
        ttl_ms,
    }
}

#[test]
fn independent_checker_takes_a_stopped_backend_out_and_lets_it_rejoin() {
    let _g = guard();
    let t = Topology::up();
    let dir = TempDir::new("health-ext");
    let lbd = t.start_lbd_with(1, &dir, |c| with_checks(c, "health: {builtin: off}\n"));
    let socket = t.socket();
    let mut servers = Backends::default();
    let hc = CheckerNs::new(&t);
    // It reports to a second lbd that is not there: that costs the first
    // nothing.
    let gone = dir.join("gone.sock");
    let mut checker = Checker::start(&hc, &dir.join("lbd.yaml"), &[&gone, &socket], "edge-1", dir.join("checker.log"));
    for be in ["10.1.0.11", "10.1.0.12", "10.1.0.13"] {
        wait_health(&socket, "web", &format!("{be}:8080"), "up", "checker:edge-1");
        wait_health(&socket, "echo", &format!("{be}:9000"), "up", "checker:edge-1");
    }

    // be2 stops while clients keep connecting.
    let traffic = Traffic::start(&t);
    let started = Instant::now();
    traffic.wait_requests_since(started, 3);
    let stopped = Instant::now();
    servers.stop(&t, 2);
    let b = wait_health(&socket, "web", "10.1.0.12:8080", "down", "checker:edge-1");
    let out_at = Instant::now();
    assert_eq!((b["serving"].as_bool(), b["scheduled_weight"].as_u64()), (Some(false), Some(0)), "{b}");
    let e = wait_health(&socket, "echo", "10.1.0.12:9000", "down", "checker:edge-1");
    // Requests that start once lbd shows it down: none reaches be2, all succeed.
    traffic.wait_requests_since(out_at, 10);
    let log = traffic.finish();
    let before: Vec<_> = log.iter().filter(|(at, _)| *at >= stopped && *at < out_at).collect();
    let after: Vec<_> = log.iter().filter(|(at, _)| *at >= out_at).collect();
    let failed_before = before.iter().filter(|(_, r)| r.is_err()).count();
    println!(
        "transition: {} requests between stopping be2 and lbd taking it out, {failed_before} failed; {} after",
        before.len(),
        after.len()
    );
    assert!(after.len() >= 10, "too few requests after the transition: {}", after.len());
    for (_, r) in &after {
        assert!(matches!(r, Ok(b) if b != "be2"), "after be2 went down: {r:?}");
    }
    assert!(lbd.log_text().contains("lbd: health: web 10.1.0.12:8080 up -> down (checker:edge-1: http check:"));
    // The UDP check saw the ICMP port unreachable (lbd logs the reason of
    // the report that took it out; the latest may be a timeout when the
    // kernel rate-limits ICMP).
    assert!(
        lbd.log_text().contains(
            "lbd: health: echo 10.1.0.12:9000 up -> down (checker:edge-1: udp check: port unreachable (ICMP))"
        ),
        "{e}\n{}",
        lbd.log_text()
    );
    let metrics = scrape(&lbd.metrics_addr().unwrap());
    assert_eq!(metric(&metrics, "lbd_backend_health_up", "web", "10.1.0.12:8080"), Some(0.0));
    assert_eq!(metric(&metrics, "lbd_backend_health_up", "web", "10.1.0.11:8080"), Some(1.0));

    // be2 comes back: up after `rise` successes, and new flows reach it.
    servers.start(&t, 2, &[]);
    wait_health(&socket, "web", "10.1.0.12:8080", "up", "checker:edge-1");
    wait_for("a request answered by be2", 60, || (curl(&t).ok()? == "be2").then_some(()));
    let metrics = scrape(&lbd.metrics_addr().unwrap());
    let transitions = metric(&metrics, "lbd_backend_health_transitions_total", "web", "10.1.0.12:8080");
    assert!(transitions >= Some(2.0), "{transitions:?}");
    // The checker logs a change before it reports it; the unreachable
    // socket's complaint comes from its own thread, on its own time.
    assert!(checker.log_text().contains("web 10.1.0.12:8080: down"), "{}", checker.log_text());
    wait_for("the checker's complaint about gone.sock", 60, || {
        checker.log_text().contains("gone.sock: cannot connect to lbd").then_some(())
    });

    // The checker dies: its reports go stale and stop counting.
    checker.kill();
    let b = wait_for("stale reports", 30, || {
        let b = backend(&socket, "web", "10.1.0.11:8080");
        (b["reports"][0]["stale"] == true && b["health_source"] == "none").then_some(b)
    });
    assert_eq!(b["reports"][0]["checker"], "edge-1", "{b}");
    let (code, out, _) = lbctl(&socket, &["backend", "list", "--listener", "web"]);
    assert_eq!(code, 0);
    assert!(out.contains("STALE"), "{out}");
    drop(hc);
    let (status, stats) = lbd.stop();
    assert!(status.success());
    assert_eq!(stats["mempool_in_use"].as_u64(), Some(0));
}

#[test]
fn independent_checker_takes_out_a_backend_answering_500() {
    let _g = guard();
    let t = Topology::up();
    let dir = TempDir::new("health-500");
    let lbd = t.start_lbd_with(1, &dir, |c| with_checks(c, "health: {builtin: off}\n"));
    let socket = t.socket();
    let mut servers = Backends::default();
    let hc = CheckerNs::new(&t);
    let _checker = Checker::start(&hc, &dir.join("lbd.yaml"), &[&socket], "edge-2", dir.join("checker.log"));
    wait_health(&socket, "web", "10.1.0.13:8080", "up", "checker:edge-2");
    servers.stop(&t, 3);
    servers.start(&t, 3, &["--status", "500"]);
    // (While it restarts it refuses connections: the reason that stays is
    // the status.)
    wait_for("be3 down for its HTTP status", 30, || {
        let b = backend(&socket, "web", "10.1.0.13:8080");
        (b["health"] == "down" && b["health_reason"] == "http check: HTTP status 500").then_some(())
    });
    // UDP answers again: echo has be3 back.
    wait_health(&socket, "echo", "10.1.0.13:9000", "up", "checker:edge-2");
    assert_eq!(backend(&socket, "web", "10.1.0.13:8080")["health"], "down");
    let (by, failed) = curls(&t, 30);
    assert!(failed.is_empty() && !by.contains_key("be3"), "{by:?} {failed:?}");
    servers.stop(&t, 3);
    servers.start(&t, 3, &[]);
    wait_health(&socket, "web", "10.1.0.13:8080", "up", "checker:edge-2");
    drop(hc);
    let (status, _) = lbd.stop();
    assert!(status.success());
}

#[test]
fn health_set_by_hand_beats_reports_and_reports_expire() {
    let _g = guard();
    let t = Topology::up();
    let dir = TempDir::new("health-manual");
    let lbd = t.start_lbd(1, &dir);
    let socket = t.socket();
    let b = backend(&socket, "web", "10.1.0.11:8080");
    assert_eq!((b["health"].as_str(), b["health_source"].as_str()), (Some("up"), Some("none")), "{b}");

    let v = lbctl_json(&socket, &["backend", "set-health", "web", "10.1.0.11:8080", "down", "--reason", "maintenance"]);
    assert!(v["change"]["summary"].as_str().unwrap().contains("now down (manual)"), "{v}");
    let b = backend(&socket, "web", "10.1.0.11:8080");
    assert_eq!((b["health"].as_str(), b["health_source"].as_str()), (Some("down"), Some("manual")), "{b}");
    assert_eq!((b["health_reason"].as_str(), b["serving"].as_bool()), (Some("maintenance"), Some(false)), "{b}");
    let (by, failed) = curls(&t, 30);
    assert!(failed.is_empty() && !by.contains_key("be1") && by.len() == 2, "{by:?} {failed:?}");
    assert!(lbd.log_text().contains("lbd: health: web 10.1.0.11:8080 up -> down (manual: maintenance)"));

    // Wrong input: clear refusals, nothing changes.
    assert_eq!(lbctl_refused(&socket, &["backend", "set-health", "web", "10.1.0.99:8080", "down"]), "not_found");
    assert_eq!(lbctl_refused(&socket, &["backend", "set-health", "nope", "10.1.0.11", "down"]), "not_found");
    assert_eq!(
        lbctl_refused(&socket, &["backend", "set-health", "web", "10.1.0.11", "down", "--reason", "a\nb"]),
        "invalid"
    );
    let (code, _, err) = lbctl(&socket, &["backend", "set-health", "web", "10.1.0.11", "sideways"]);
    assert_eq!(code, 2, "{err}");
    let code = |v: Value| v["error"]["code"].as_str().unwrap_or("ok").to_owned();
    let up = HealthSetting::Up;
    assert_eq!(code(raw_request(&socket, report("web", "10.1.0.12", 8080, up, "bad name!", Some(1000)))), "invalid");
    assert_eq!(code(raw_request(&socket, report("web", "10.1.0.12", 8080, up, "manual", Some(1000)))), "invalid");
    assert_eq!(code(raw_request(&socket, report("web", "10.1.0.12", 8080, up, "x", None))), "invalid");
    assert_eq!(code(raw_request(&socket, report("web", "10.1.0.12", 8080, up, "x", Some(0)))), "invalid");
    assert_eq!(code(raw_request(&socket, report("web", "10.1.0.12", 8080, up, "x", Some(u64::MAX)))), "invalid");
    let manual_with_ttl = Request::BackendSetHealth {
        listener: "web".into(),
        backend: BackendRef { address: "10.1.0.12".into(), port: Some(8080) },
        state: HealthSetting::Down,
        checker: None,
        reason: None,
        ttl_ms: Some(1000),
    };
    assert_eq!(code(raw_request(&socket, manual_with_ttl)), "invalid");
    assert_eq!(backend(&socket, "web", "10.1.0.12:8080")["health"], "up");

    // A checker's report counts; a manual state beats it; `auto` hands back.
    let down = HealthSetting::Down;
    assert_eq!(code(raw_request(&socket, report("web", "10.1.0.12", 8080, down, "probe-a", Some(600_000)))), "ok");
    let b = backend(&socket, "web", "10.1.0.12:8080");
    assert_eq!((b["health"].as_str(), b["health_source"].as_str()), (Some("down"), Some("checker:probe-a")), "{b}");
    lbctl_json(&socket, &["backend", "set-health", "web", "10.1.0.12:8080", "up"]);
    assert_eq!(backend(&socket, "web", "10.1.0.12:8080")["health_source"], "manual");
    lbctl_json(&socket, &["backend", "set-health", "web", "10.1.0.12:8080", "auto"]);
    assert_eq!(backend(&socket, "web", "10.1.0.12:8080")["health_source"], "checker:probe-a");
    assert_eq!(
        code(raw_request(&socket, report("web", "10.1.0.12", 8080, HealthSetting::Auto, "probe-a", None))),
        "ok"
    );
    assert_eq!(backend(&socket, "web", "10.1.0.12:8080")["health_source"], "none");

    // At most 16 checkers report on one backend.
    for i in 0..16 {
        let r = raw_request(&socket, report("web", "10.1.0.12", 8080, up, &format!("c{i}"), Some(600_000)));
        assert_eq!(code(r), "ok");
    }
    assert_eq!(code(raw_request(&socket, report("web", "10.1.0.12", 8080, up, "c16", Some(600_000)))), "invalid");
    assert_eq!(code(raw_request(&socket, report("web", "10.1.0.12", 8080, down, "c3", Some(600_000)))), "ok");
    // Checkers disagree: up while any fresh report says up (the newest
    // of those is shown).
    let b = backend(&socket, "web", "10.1.0.12:8080");
    assert_eq!((b["health"].as_str(), b["health_source"].as_str()), (Some("up"), Some("checker:c15")), "{b}");
    assert_eq!(b["reports"].as_array().unwrap().len(), 16, "{b}");

    // A report that is not renewed goes stale and stops counting.
    assert_eq!(code(raw_request(&socket, report("web", "10.1.0.13", 8080, down, "probe-b", Some(1000)))), "ok");
    let b = wait_for("the report to expire", 30, || {
        let b = backend(&socket, "web", "10.1.0.13:8080");
        (b["health"] == "up").then_some(b)
    });
    assert_eq!((b["health_source"].as_str(), b["reports"][0]["stale"].as_bool()), (Some("none"), Some(true)), "{b}");

    lbctl_json(&socket, &["backend", "set-health", "web", "10.1.0.11:8080", "auto"]);
    wait_for("a request answered by be1", 60, || (curl(&t).ok()? == "be1").then_some(()));
    let (status, _) = lbd.stop();
    assert!(status.success());
}

#[test]
fn all_backends_down_fail_open_by_default_or_drop() {
    let _g = guard();
    let t = Topology::up();
    let dir = TempDir::new("health-alldown");
    let lbd = t.start_lbd(1, &dir);
    let socket = t.socket();
    for be in ["10.1.0.11", "10.1.0.12", "10.1.0.13"] {
        lbctl_json(&socket, &["backend", "set-health", "web", &format!("{be}:8080"), "down"]);
    }
    let web = |s: &Path| {
        let v = lbctl_json(s, &["listener", "list"]);
        v["listeners"].as_array().unwrap().iter().find(|l| l["name"] == "web").unwrap().clone()
    };
    let l = web(&socket);
    assert_eq!((l["all_down"].as_bool(), l["all_down_policy"].as_str()), (Some(true), Some("fail_open")), "{l}");
    assert_eq!(lbctl_json(&socket, &["status"])["status"]["listeners_all_down"], serde_json::json!(["web"]));
    let metrics = scrape(&lbd.metrics_addr().unwrap());
    assert_eq!(metric(&metrics, "lbd_listener_all_down", "web", ""), Some(1.0));
    assert_eq!(metric(&metrics, "lbd_listener_all_down", "echo", ""), Some(0.0));
    // Fail open: every backend still takes flows.
    let (by, failed) = curls(&t, 30);
    assert!(failed.is_empty() && by.len() == 3, "{by:?} {failed:?}");

    // Drop, by a reload: the manual states survive it, new flows are dropped.
    let cfg = std::fs::read_to_string(dir.join("lbd.yaml")).unwrap();
    let drop_cfg = dir.join("drop.yaml");
    std::fs::write(&drop_cfg, cfg.replacen("    port: 80\n", "    port: 80\n    all_down: drop\n", 1)).unwrap();
    lbctl_json(&socket, &["config", "reload", drop_cfg.to_str().unwrap()]);
    let l = web(&socket);
    assert_eq!((l["all_down"].as_bool(), l["all_down_policy"].as_str()), (Some(true), Some("drop")), "{l}");
    let no_backend = |s: &Path| lbctl_json(s, &["stats"])["stats"]["drops"]["no_backend"].as_u64().unwrap();
    let before = no_backend(&socket);
    for _ in 0..3 {
        let out = t.client(&["curl", "-sS", "--max-time", "1", "http://10.0.0.100/"]);
        assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    }
    assert!(no_backend(&socket) >= before + 3, "SYNs dropped as no_backend");
    // One back: only it takes new flows.
    lbctl_json(&socket, &["backend", "set-health", "web", "10.1.0.13:8080", "auto"]);
    assert_eq!(web(&socket)["all_down"], false);
    let (by, failed) = curls(&t, 20);
    assert!(failed.is_empty() && by.keys().collect::<Vec<_>>() == ["be3"], "{by:?} {failed:?}");
    let (status, _) = lbd.stop();
    assert!(status.success());
}

#[test]
fn slow_start_ramps_a_returning_backend_and_drain_still_works() {
    let _g = guard();
    let t = Topology::up();
    let dir = TempDir::new("health-slow");
    let weighted = |c: String| {
        c.replacen("    port: 80\n", "    port: 80\n    slow_start: 10m\n", 1)
            .replace("port: 8080}", "port: 8080, weight: 100}")
    };
    let lbd = t.start_lbd_with(1, &dir, weighted);
    let socket = t.socket();
    // Nothing ramps at start.
    assert_eq!(backend(&socket, "web", "10.1.0.11:8080")["scheduled_weight"], 100);
    lbctl_json(&socket, &["backend", "set-health", "web", "10.1.0.11:8080", "down"]);
    assert_eq!(backend(&socket, "web", "10.1.0.11:8080")["scheduled_weight"], 0);
    lbctl_json(&socket, &["backend", "set-health", "web", "10.1.0.11:8080", "auto"]);
    // The first step of a ten-minute ramp.
    let all = backends(&socket, "web");
    let (b1, b2) = (&all["10.1.0.11:8080"], &all["10.1.0.12:8080"]);
    let w = b1["scheduled_weight"].as_u64().unwrap();
    assert!((1..100).contains(&w), "{b1}");
    assert!(b1["share"].as_u64() < b2["share"].as_u64(), "{b1} {b2}");
    // Drain wins while it ramps; undrain goes back to the ramp.
    lbctl_json(&socket, &["backend", "drain", "web", "10.1.0.11:8080"]);
    assert_eq!(backend(&socket, "web", "10.1.0.11:8080")["scheduled_weight"], 0);
    lbctl_json(&socket, &["backend", "undrain", "web", "10.1.0.11:8080"]);
    assert!((1..100).contains(&backend(&socket, "web", "10.1.0.11:8080")["scheduled_weight"].as_u64().unwrap()));
    // A new backend ramps too.
    lbctl_json(&socket, &["backend", "add", "web", "10.1.0.13:8081", "--weight", "100"]);
    assert!((1..100).contains(&backend(&socket, "web", "10.1.0.13:8081")["scheduled_weight"].as_u64().unwrap()));
    // A shorter slow start by reload: the ramp continues and completes.
    let cfg = std::fs::read_to_string(dir.join("lbd.yaml")).unwrap().replace("slow_start: 10m", "slow_start: 1s");
    let short = dir.join("short.yaml");
    std::fs::write(&short, cfg).unwrap();
    lbctl_json(&socket, &["config", "reload", short.to_str().unwrap()]);
    wait_for("the ramp to complete", 30, || {
        (backend(&socket, "web", "10.1.0.11:8080")["scheduled_weight"] == 100).then_some(())
    });
    let (by, failed) = curls(&t, 30);
    assert!(failed.is_empty(), "{by:?} {failed:?}");
    let (status, _) = lbd.stop();
    assert!(status.success());
}

/// Adds a table dropping TCP to port 8080 in a namespace: the backend
/// accepts nothing and answers nothing (the SYN is dropped).
fn hang(t: &Topology, role: &str) {
    t.exec_ok(role, &["nft", "add", "table", "inet", "lbdhealthtest"]);
    t.exec_ok(
        role,
        &[
            "nft",
            "add",
            "chain",
            "inet",
            "lbdhealthtest",
            "in",
            "{ type filter hook input priority 0 ; policy accept ; }",
        ],
    );
    t.exec_ok(role, &["nft", "add", "rule", "inet", "lbdhealthtest", "in", "tcp", "dport", "8080", "drop"]);
}

fn unhang(t: &Topology, role: &str) {
    t.exec_ok(role, &["nft", "delete", "table", "inet", "lbdhealthtest"]);
}

/// Needs lbd's kernel exception path: the built-in checks reach the
/// backends through the kernel interfaces of lbd's ports.
#[test]
fn builtin_checks_take_out_stopped_and_hanging_backends() {
    let _g = guard();
    let t = Topology::up_with_lb_netns();
    let dir = TempDir::new("health-builtin");
    let lbd = t.start_lbd_with(1, &dir, |c| with_checks(c, ""));
    let socket = t.socket();
    let mut servers = Backends::default();
    for be in ["10.1.0.11", "10.1.0.12", "10.1.0.13"] {
        wait_health(&socket, "web", &format!("{be}:8080"), "up", "builtin");
        wait_health(&socket, "echo", &format!("{be}:9000"), "up", "builtin");
    }
    servers.stop(&t, 2);
    let b = wait_health(&socket, "web", "10.1.0.12:8080", "down", "builtin");
    assert!(b["last_error"].as_str().unwrap().contains("connect"), "{b}");
    wait_health(&socket, "echo", "10.1.0.12:9000", "down", "builtin");
    hang(&t, "be3");
    let b = wait_health(&socket, "web", "10.1.0.13:8080", "down", "builtin");
    assert!(b["last_error"].as_str().unwrap().contains("no answer within"), "{b}");
    // Only be1 serves web now; every request succeeds.
    let (by, failed) = curls(&t, 20);
    assert!(failed.is_empty() && by.keys().collect::<Vec<_>>() == ["be1"], "{by:?} {failed:?}");
    servers.start(&t, 2, &[]);
    unhang(&t, "be3");
    wait_health(&socket, "web", "10.1.0.12:8080", "up", "builtin");
    wait_health(&socket, "web", "10.1.0.13:8080", "up", "builtin");
    wait_for("a request answered by be3", 60, || (curl(&t).ok()? == "be3").then_some(()));
    let addr = lbd.metrics_addr().unwrap();
    let metrics = t.exec_ok("lb", &["curl", "-sS", "--max-time", "10", &format!("http://{addr}/metrics")]);
    let probes = metric(&metrics, "lbd_health_check_seconds_count", "web", "10.1.0.11:8080");
    assert!(probes > Some(0.0), "{probes:?}");
    let (status, _) = lbd.stop();
    assert!(status.success());
}

/// The independent checker refuses what it cannot run, before probing
/// anything: an invalid file (named with its field) or one without checks.
#[test]
fn health_check_mode_refuses_bad_configurations() {
    let dir = TempDir::new("health-cli");
    let run_checker = |yaml: &str| {
        let path = dir.join("c.yaml");
        std::fs::write(&path, yaml).unwrap();
        let out = Command::new(lbctl_bin())
            .args(["health-check", "--config"])
            .arg(&path)
            .args(["--report-to", "/nonexistent/lbd.sock"])
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let base = "ports:\n  - {name: p, device: d, address: 10.1.0.1/24}\nlisteners:\n  - name: web\n    vip: 10.1.0.100\n    protocol: tcp\n    port: 80\n    backends: [{address: 10.1.0.11, port: 8080}]\n";
    let (code, err) = run_checker(base);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no listener has a health_check"), "{err}");
    let bad = base.replace("    port: 80\n", "    port: 80\n    health_check: {kind: tcp, rise: 0}\n");
    let (code, err) = run_checker(&bad);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("listeners[0].health_check.rise: 0 is out of range"), "{err}");
    let (code, err) = Command::new(lbctl_bin())
        .args(["health-check", "--config", "/nonexistent.yaml"])
        .output()
        .map(|o| (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned()))
        .unwrap();
    assert_eq!(code, Some(2), "--report-to is required: {err}");
    // A name lbd would refuse stops the checker before it probes.
    let good = base.replace("    port: 80\n", "    port: 80\n    health_check: {kind: tcp}\n");
    std::fs::write(dir.join("c.yaml"), &good).unwrap();
    let out = Command::new(lbctl_bin())
        .args(["health-check", "--config"])
        .arg(dir.join("c.yaml"))
        .args(["--report-to", "/nonexistent/lbd.sock", "--name", "builtin"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--name: `builtin` is not a checker name"), "{err}");
}
