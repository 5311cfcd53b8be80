//! Start-up failures after the worker lcores were launched. The metrics
//! and control threads start after the lcores; a pids cgroup whose limit
//! leaves no room for them makes their creation fail for real (EAGAIN).
//! lbd must then stop and join its workers before it stops and closes the
//! ports they poll, exit 1 with the reason, and leave nothing behind.

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A pids cgroup of our own (cgroup v1 `pids` hierarchy, or cgroup v2 with
/// the pids controller); on drop, whatever still runs in it is killed by
/// PID, the group removed, and the root's `subtree_control` given back
/// the pids controller state it had.
struct PidsCgroup {
    dir: PathBuf,
    /// The v2 root's `cgroup.subtree_control`, when this test turned pids on there.
    enabled_pids: Option<PathBuf>,
}

impl PidsCgroup {
    fn new(name: &str) -> PidsCgroup {
        let v1 = Path::new("/sys/fs/cgroup/pids");
        let v2 = Path::new("/sys/fs/cgroup");
        let mut enabled_pids = None;
        let root = if v1.join("cgroup.procs").exists() {
            v1
        } else if fs::read_to_string(v2.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|w| w == "pids"))
        {
            // Children of the root get the pids controller only when the
            // root passes it down.
            let control = v2.join("cgroup.subtree_control");
            let on = fs::read_to_string(&control).is_ok_and(|c| c.split_whitespace().any(|w| w == "pids"));
            if !on && fs::write(&control, "+pids").is_ok() {
                enabled_pids = Some(control);
            }
            v2
        } else {
            panic!("this test needs the cgroup pids controller (v1 /sys/fs/cgroup/pids or v2 with `pids`)")
        };
        let dir = root.join(name);
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        PidsCgroup { dir, enabled_pids }
    }

    fn set_max(&self, max: Option<u32>) {
        let v = max.map_or_else(|| "max".to_owned(), |m| m.to_string());
        fs::write(self.dir.join("pids.max"), v).unwrap();
    }

    fn current(&self) -> u32 {
        fs::read_to_string(self.dir.join("pids.current")).unwrap().trim().parse().unwrap()
    }

    /// Starts `lbd -c config` inside the group, stderr into `log`.
    fn spawn_lbd(&self, config: &Path, dir: &Path, log: &Path) -> Child {
        Command::new("sh")
            .arg("-c")
            .arg("echo $$ > \"$1\" && shift && exec \"$@\"")
            .arg("sh")
            .arg(self.dir.join("cgroup.procs"))
            .arg(lbd_bin())
            .arg("-c")
            .arg(config)
            .arg("--stats-out")
            .arg(dir.join("stats.json"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(log).unwrap())
            .spawn()
            .expect("spawn lbd")
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let procs = fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
            if procs.trim().is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in procs.split_whitespace() {
                let _ = Command::new("kill").arg("-KILL").arg(pid).status();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = fs::remove_dir(&self.dir);
        if let Some(control) = &self.enabled_pids {
            // Best effort: refused while another group still uses it.
            let _ = fs::write(control, "-pids");
        }
    }
}

/// An EAL runtime directory removed on drop, so a failed assertion leaves
/// none behind.
struct RuntimeDir(PathBuf);

impl RuntimeDir {
    fn of(prefix: &str) -> RuntimeDir {
        RuntimeDir(PathBuf::from(format!("/var/run/dpdk/{prefix}")))
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A child killed (by its PID) and reaped when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn config(dir: &Path, prefix: &str) -> PathBuf {
    let p = dir.join(format!("{prefix}.yaml"));
    fs::write(
        &p,
        format!(
            "eal: [\"--no-pci\", \"--no-huge\", \"-m\", \"256\", \"--file-prefix\", \"{prefix}\", \"--no-telemetry\", \"--vdev\", \"net_null0,no-rx=1\"]\n\
             lcores: {{workers: 1, idle_sleep: 100us}}\n\
             ports:\n  - {{name: ext, device: net_null0, address: 10.0.0.1/24, exception: off}}\n\
             control: {{socket: {d}/{prefix}.sock}}\n\
             metrics: {{listen: \"127.0.0.1:0\"}}\n",
            d = dir.display()
        ),
    )
    .unwrap();
    p
}

#[test]
fn a_thread_that_cannot_start_after_lcore_launch_stops_the_workers_first() {
    assert!(is_root());
    let dir = TempDir::new("startup");
    let group = PidsCgroup::new(&unique("lbds"));

    // Unlimited: count lbd's tasks once it is ready (main, EAL's threads,
    // the worker lcore, the metrics and control threads).
    let prefix = unique("lbds");
    let _run_dir = RuntimeDir::of(&prefix);
    let log = dir.join("full.log");
    let mut lbd = Reaped(group.spawn_lbd(&config(dir.path(), &prefix), dir.path(), &log));
    let start = Instant::now();
    while !fs::read_to_string(&log).unwrap_or_default().contains("lbd: ready") {
        assert!(lbd.0.try_wait().unwrap().is_none(), "lbd exited:\n{}", fs::read_to_string(&log).unwrap());
        assert!(start.elapsed() < Duration::from_secs(30), "lbd not ready:\n{}", fs::read_to_string(&log).unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    let tasks = group.current();
    println!("lbd runs {tasks} tasks when ready");
    assert!(tasks >= 4, "{tasks} tasks");
    Command::new("kill").arg("-TERM").arg(lbd.0.id().to_string()).status().unwrap();
    let st = wait_timeout(&mut lbd.0, Duration::from_secs(30)).expect("lbd exits on SIGTERM");
    assert!(st.success(), "{st}:\n{}", fs::read_to_string(&log).unwrap());
    drop(lbd);

    // One and two tasks fewer: the last thread, then the last two, cannot
    // start (the lcores are already running by then).
    let mut failed_threads = Vec::new();
    for missing in [1, 2] {
        group.set_max(Some(tasks - missing));
        let prefix = unique("lbds");
        let log = dir.join(&format!("{prefix}.log"));
        let socket = dir.join(&format!("{prefix}.sock"));
        let run_dir = PathBuf::from(format!("/var/run/dpdk/{prefix}"));
        let mut lbd = Reaped(group.spawn_lbd(&config(dir.path(), &prefix), dir.path(), &log));
        let status = wait_timeout(&mut lbd.0, Duration::from_secs(30));
        let text = fs::read_to_string(&log).unwrap_or_default();
        drop(lbd);
        let leftover = run_dir.exists();
        let _ = fs::remove_dir_all(&run_dir);
        let status = status.unwrap_or_else(|| panic!("lbd with {missing} task(s) too few hung:\n{text:.3000}"));
        assert_eq!(status.code(), Some(1), "lbd with {missing} task(s) too few: {status}:\n{text:.3000}");
        assert!(!text.contains("lbd: ready"), "{text}");
        assert!(!text.contains("not ready port"), "a worker polled a stopped port:\n{text:.3000}");
        let last = text.lines().last().unwrap_or_default();
        let thread = if last.starts_with("lbd: cannot start the control thread: ") {
            "control"
        } else if last.starts_with("lbd: metrics: cannot start the metrics thread: ") {
            "metrics"
        } else {
            panic!("unexpected last line with {missing} task(s) too few:\n{text}")
        };
        assert!(text.contains("stopping the 1 launched worker(s)"), "{text}");
        assert!(!leftover, "{} left behind", run_dir.display());
        assert!(!socket.exists(), "{} left behind", socket.display());
        failed_threads.push(thread);
    }
    failed_threads.sort_unstable();
    assert_eq!(failed_threads, ["control", "metrics"], "each late thread failed once");
}
