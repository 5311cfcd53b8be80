//! Shared helpers of the integration tests: temporary directories, running
//! `lbd` as a child process with its own EAL file prefix, reading its
//! counters, and cleaning up even when a test fails.

#![allow(dead_code)]

pub mod topology;

use serde_json::Value;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub fn lbd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_lbd")
}

/// Debian's interpreter, which has python3-scapy (the pyenv one may not).
pub fn python() -> String {
    std::env::var("LBD_TEST_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into())
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call, short enough for interface
/// names (`prefix` ≤ 4 chars).
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}{}{n}", std::process::id() % 10000)
}

/// A directory removed on drop (kept when LBD_KEEP_TEST_DIRS is set).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("lbd-test-{}-{}", name, unique("")));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, s: &str) -> PathBuf {
        self.0.join(s)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("LBD_KEEP_TEST_DIRS").is_none() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// Signals our own child by PID (never by name).
fn send_signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
}

/// A running `lbd`. Dropping it kills the process (SIGKILL after a
/// SIGTERM grace period) and removes its EAL runtime directory.
pub struct Lbd {
    child: Option<Child>,
    pub stats: PathBuf,
    pub log: PathBuf,
    pub file_prefix: String,
    last_seq: u64,
}

impl Lbd {
    /// Starts `lbd -c config`, and waits until it says it is ready.
    pub fn start(config: &Path, dir: &Path, file_prefix: &str) -> Lbd {
        Lbd::start_in(None, config, dir, file_prefix)
    }

    /// [`Lbd::start`] in network namespace `netns` (`ip netns exec`, which
    /// execs lbd in place: the child's PID is lbd's).
    pub fn start_in(netns: Option<&str>, config: &Path, dir: &Path, file_prefix: &str) -> Lbd {
        match netns {
            Some(ns) => Lbd::start_under(&["ip", "netns", "exec", ns], config, dir, file_prefix),
            None => Lbd::start_under(&[], config, dir, file_prefix),
        }
    }

    /// [`Lbd::start`] run by `wrapper` (a command that runs lbd and, on
    /// SIGTERM, has lbd stop: `ip netns exec`, `unshare ... --kill-child=SIGTERM`).
    pub fn start_under(wrapper: &[&str], config: &Path, dir: &Path, file_prefix: &str) -> Lbd {
        let cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(lbd_bin());
                c
            }
            None => Command::new(lbd_bin()),
        };
        let mut l = Lbd::spawn_cmd(cmd, config, dir, file_prefix);
        l.wait_ready(Duration::from_secs(30));
        l
    }

    /// Starts `bin -c config` (an lbd binary: the built one, or one from
    /// the Debian package) without waiting for it to be ready.
    pub fn spawn_bin(bin: &Path, config: &Path, dir: &Path, file_prefix: &str) -> Lbd {
        Lbd::spawn_cmd(Command::new(bin), config, dir, file_prefix)
    }

    /// `cmd -c config --stats-out DIR/stats.json`, its stderr in DIR/lbd.log.
    fn spawn_cmd(mut cmd: Command, config: &Path, dir: &Path, file_prefix: &str) -> Lbd {
        let stats = dir.join("stats.json");
        let log = dir.join("lbd.log");
        let logf = fs::File::create(&log).expect("log file");
        let child = cmd
            .arg("-c")
            .arg(config)
            .arg("--stats-out")
            .arg(&stats)
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("spawn lbd");
        Lbd { child: Some(child), stats, log, file_prefix: file_prefix.to_owned(), last_seq: 0 }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let start = Instant::now();
        loop {
            // The whole line: a reader can meet a line half written.
            let log = self.log_text();
            if log.find("lbd: ready").is_some_and(|at| log[at..].contains('\n')) {
                return;
            }
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("lbd exited with {st} before it was ready:\n{}", self.log_text());
            }
            if start.elapsed() > timeout {
                panic!("lbd not ready after {timeout:?}:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asks for a fresh counters document (SIGUSR1) and returns it.
    pub fn stats_now(&mut self) -> Value {
        send_signal(self.pid(), "USR1");
        let start = Instant::now();
        loop {
            if let Ok(text) = fs::read_to_string(&self.stats) {
                if let Ok(v) = serde_json::from_str::<Value>(&text) {
                    let seq = v["seq"].as_u64().unwrap_or(0);
                    if seq > self.last_seq {
                        self.last_seq = seq;
                        return v;
                    }
                }
            }
            if start.elapsed() > Duration::from_secs(10) {
                panic!("no stats after SIGUSR1:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until `lbd` has received `rx` packets in all and has nothing
    /// left in flight (two readings agree, nothing parked unless allowed,
    /// and every worker went round its loop twice in between: a worker
    /// taken off its CPU mid-burst leaves two readings equal while that
    /// burst is still unaccounted for, and a burst's packets can wait in
    /// the TX buffer after its loop until the next, empty, one sends them).
    pub fn wait_processed(&mut self, rx: u64, allow_parked: bool, timeout: Duration) -> Value {
        let start = Instant::now();
        let mut prev: Option<Value> = None;
        loop {
            let v = self.stats_now();
            let got: u64 = v["ports"].as_array().unwrap().iter().map(|p| p["rx_packets"].as_u64().unwrap()).sum();
            let settled = |v: &Value| {
                let ev = &v["events"];
                (
                    ev["handoff_in"].as_u64(),
                    ev["handoff_out"].as_u64(),
                    v["ports"].as_array().unwrap().iter().map(|p| p["tx_packets"].as_u64().unwrap()).sum::<u64>(),
                    v["drops_total"].as_u64(),
                )
            };
            let parked = v["parked"].as_u64().unwrap_or(0);
            if got >= rx && (allow_parked || parked == 0) {
                if let Some(p) = &prev {
                    let (hi, ho, _, _) = settled(&v);
                    let polls = |v: &Value| -> Vec<u64> {
                        v["workers"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|w| w["events"]["polls"].as_u64().unwrap())
                            .collect()
                    };
                    let went_round = polls(p).iter().zip(polls(&v)).all(|(a, b)| b >= *a + 2);
                    if settled(p) == settled(&v) && hi == ho && went_round {
                        return v;
                    }
                }
                prev = Some(v);
            }
            if start.elapsed() > timeout {
                panic!(
                    "lbd did not process {rx} packets in {timeout:?} (got {got}, parked {parked}):\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, wait, and return the final counters.
    pub fn stop(mut self) -> (ExitStatus, Value) {
        let mut child = self.child.take().expect("running");
        send_signal(child.id(), "TERM");
        let status = wait_timeout(&mut child, Duration::from_secs(30)).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("lbd did not exit on SIGTERM:\n{}", self.log_text())
        });
        let text = fs::read_to_string(&self.stats).unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, v)
    }
}

pub fn wait_timeout(child: &mut Child, t: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if start.elapsed() > t {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Lbd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            send_signal(c.id(), "TERM");
            if wait_timeout(&mut c, Duration::from_secs(10)).is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let _ = fs::remove_dir_all(format!("/var/run/dpdk/{}", self.file_prefix));
    }
}

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        panic!("{cmd:?} failed ({}):\n{text}", out.status);
    }
    text
}

/// A veth pair, up, without IPv6, removed on drop.
pub struct Veth(String);

impl Veth {
    pub fn new(a: &str, b: &str) -> Veth {
        run(Command::new("ip").args(["link", "add", a, "type", "veth", "peer", "name", b]));
        let v = Veth(a.to_owned());
        for i in [a, b] {
            // No IPv6 router solicitations or other chatter on the test links.
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{i}/disable_ipv6"), "1");
            run(Command::new("ip").args(["link", "set", i, "up"]));
        }
        v
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

/// Sends raw frames out of `iface`, in order (an AF_PACKET socket in
/// Python's standard library: no scapy needed), in chunks that keep the
/// command line short.
pub fn inject(iface: &str, frames: &[Vec<u8>]) {
    let script = "import socket, sys\n\
                  s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n\
                  s.bind((sys.argv[1], 0))\n\
                  for h in sys.argv[2:]:\n    s.send(bytes.fromhex(h))\n";
    for chunk in frames.chunks(500) {
        let hex: Vec<String> = chunk.iter().map(|f| f.iter().map(|b| format!("{b:02x}")).collect()).collect();
        run(Command::new(python()).arg("-c").arg(script).arg(iface).args(&hex));
    }
}

pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

/// The `lbctl` binary next to `lbd` (build it first: `cargo build --bins`).
pub fn lbctl_bin() -> PathBuf {
    let p = Path::new(lbd_bin()).with_file_name("lbctl");
    assert!(p.exists(), "{} missing: run `cargo build --workspace --bins` with the same profile first", p.display());
    p
}

/// Runs lbctl against `socket`; returns (exit code, stdout, stderr).
pub fn lbctl(socket: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(lbctl_bin()).arg("--socket").arg(socket).args(args).output().expect("run lbctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs lbctl with --json and parses its answer; panics unless it succeeds.
pub fn lbctl_json(socket: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, out, err) = lbctl(socket, &all);
    assert_eq!(code, 0, "lbctl {args:?} failed: {err}{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("lbctl {args:?}: not JSON ({e}): {out}"))
}

/// Runs lbctl with --json expecting a refusal; returns the error code.
pub fn lbctl_refused(socket: &Path, args: &[&str]) -> String {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, out, err) = lbctl(socket, &all);
    assert_eq!(code, 1, "lbctl {args:?} should be refused: {out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    assert!(err.starts_with("lbctl: "), "{err}");
    v["error"]["code"].as_str().unwrap().to_owned()
}

impl Lbd {
    /// The metrics address from the ready line, when metrics are on.
    pub fn metrics_addr(&self) -> Option<String> {
        let log = self.log_text();
        let i = log.find("metrics http://")? + "metrics http://".len();
        let end = log[i..].find('/')?;
        Some(log[i..i + end].to_owned())
    }
}

/// An lbd configuration on one net_null port that receives nothing, with
/// hugepages off, its control socket in `dir`, and `extra` (YAML lines:
/// `lcores`, `listeners`, ...). Returns the file and the socket.
pub fn idle_config(dir: &TempDir, prefix: &str, extra: &str) -> (PathBuf, PathBuf) {
    let socket = dir.join("lbd.sock");
    let cfg = dir.join("idle.yaml");
    fs::write(
        &cfg,
        format!(
            "eal: [\"--no-pci\", \"--no-huge\", \"-m\", \"256\", \"--file-prefix\", \"{prefix}\", \"--no-telemetry\", \"--vdev\", \"net_null0,no-rx=1\"]\n\
             ports:\n  - {{name: ext, device: net_null0, address: 10.0.0.1/24, exception: off}}\n\
             control: {{socket: {}}}\n\
             metrics: {{listen: \"off\"}}\n{extra}",
            socket.display()
        ),
    )
    .expect("write config");
    (cfg, socket)
}

/// An lbd on [`idle_config`] (no traffic, no listeners): for lbctl tests
/// that need a live lbd but no packets. Returns it and its socket.
pub fn start_idle_lbd(dir: &TempDir) -> (Lbd, PathBuf) {
    let prefix = unique("lbdi");
    let (cfg, socket) = idle_config(dir, &prefix, "");
    let lbd = Lbd::start(&cfg, dir.path(), &prefix);
    (lbd, socket)
}

impl Lbd {
    /// Waits up to `t` for lbd to exit by itself and returns how; once it
    /// has exited the guard forgets it (no signal to a reused PID), but
    /// still removes the EAL runtime directory on drop.
    pub fn wait_exit(&mut self, t: Duration) -> Option<ExitStatus> {
        let status = wait_timeout(self.child.as_mut()?, t)?;
        self.child = None;
        Some(status)
    }

    /// How lbd exited, when it has (without waiting).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.wait_exit(Duration::ZERO)
    }
}

/// A classic pcap file (microsecond timestamps, Ethernet).
pub fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&(i as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    std::fs::write(path, out).unwrap();
}

/// The body of `GET /metrics` from `addr` (from this test's namespace).
pub fn scrape(addr: &str) -> String {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

/// A process stopped with SIGSTOP, continued (SIGCONT) when this is
/// dropped, so that a failing assertion cannot leave it stopped.
pub struct Stopped(String);

impl Stopped {
    pub fn new(pid: u32) -> Stopped {
        let pid = pid.to_string();
        assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0]).status();
    }
}

/// A device counter (`ipackets`, `imissed`, ...) summed over lbd's ports
/// in a stats document.
pub fn device_counter(stats: &Value, counter: &str) -> u64 {
    stats["ports"].as_array().unwrap().iter().map(|p| p["device_stats"][counter].as_u64().unwrap()).sum()
}
