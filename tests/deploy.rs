//! Host deployment (README "Running on a host"): `lbctl wait`, lbd's
//! hugepage check before EAL, the `lbd-hugepages` script, the systemd
//! unit, the production sample configuration, and the Debian package
//! installed into a throwaway root.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn text(o: &Output) -> (i32, String, String) {
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Runs `lbctl ... wait` in the background and returns its output, failing
/// the test if lbctl itself hangs past `limit`.
fn lbctl_wait(lbctl: &Path, socket: &Path, args: &[&str], limit: Duration) -> (i32, String, String) {
    let mut child = Command::new(lbctl)
        .arg("--socket")
        .arg(socket)
        .arg("wait")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if wait_timeout(&mut child, limit).is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("lbctl wait {args:?} still running after {limit:?}");
    }
    text(&child.wait_with_output().unwrap())
}

/// Started right after lbd, `lbctl wait` returns 0 once lbd serves
/// requests with every worker running: the next lbctl command answers at
/// once. (Without `wait`, the same `status` right after spawning fails
/// with "cannot connect" or waits in the socket's backlog.)
#[test]
fn lbctl_wait_returns_once_lbd_is_ready() {
    assert!(is_root());
    let dir = TempDir::new("wait");
    let prefix = unique("lbdw");
    let (cfg, socket) = idle_config(&dir, &prefix, "lcores: {workers: 2}\n");
    let mut lbd = Lbd::spawn_bin(Path::new(lbd_bin()), &cfg, dir.path(), &prefix);
    let (code, out, err) = lbctl_wait(&lbctl_bin(), &socket, &["--timeout", "60"], Duration::from_secs(90));
    assert_eq!(code, 0, "{err}\n{}", lbd.log_text());
    assert!(out.starts_with("lbd ready: 2 worker(s) running, 1 port(s) started"), "{out}");
    // Ready means every worker runs generation 1 and the control socket
    // answers.
    let stats = lbctl_json(&socket, &["stats"])["stats"].clone();
    let workers = stats["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    assert!(workers.iter().all(|w| w["config_generation"].as_u64() >= Some(1)), "{stats}");
    // --link-up: net_null's link is up.
    let (code, out, err) =
        lbctl_wait(&lbctl_bin(), &socket, &["--link-up", "--timeout", "30"], Duration::from_secs(60));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("with link up"), "{out}");
    let (code, out, _) = lbctl(&socket, &["--json", "wait", "--timeout", "0"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ready"], true, "{out}");
    assert!(lbd.exited().is_none(), "lbd exited:\n{}", lbd.log_text());
    let (status, _) = lbd.stop();
    assert!(status.success());
    // lbd gone: the socket file is removed, wait fails again.
    let (code, _, err) = lbctl_wait(&lbctl_bin(), &socket, &["--timeout", "0.5"], Duration::from_secs(30));
    assert_eq!(code, 3, "{err}");
}

/// No lbd, or a socket nobody answers on: `wait` gives up after its
/// timeout with status 3 and says why, never hangs.
#[test]
fn lbctl_wait_times_out_with_a_clear_message() {
    let dir = TempDir::new("wait-none");
    let socket = dir.join("none.sock");
    let start = Instant::now();
    let (code, out, err) = lbctl_wait(&lbctl_bin(), &socket, &["--timeout", "1"], Duration::from_secs(30));
    assert!(start.elapsed() >= Duration::from_secs(1), "gave up before its timeout");
    assert_eq!(code, 3, "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.starts_with(&format!("lbctl: lbd at {} not ready after ", socket.display())), "{err}");
    assert!(err.contains("cannot connect") && err.contains("is lbd running?"), "{err}");

    // A socket that accepts into its backlog but never answers (an lbd
    // still starting, or hung): each attempt has a deadline too.
    let silent = dir.join("silent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&silent).unwrap();
    let (code, _, err) = lbctl_wait(&lbctl_bin(), &silent, &["--timeout", "1"], Duration::from_secs(30));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("not ready after"), "{err}");

    // The timeout is checked when parsed.
    for bad in ["-1", "inf", "NaN", "86401"] {
        let (code, _, err) = lbctl(&socket, &["wait", &format!("--timeout={bad}")]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains("from 0 to 86400 seconds"), "{err}");
    }
}

/// Without hugepages where DPDK would look, lbd stops before EAL with a
/// message naming the script and --no-huge, and leaves no EAL runtime
/// directory. (Before this check the last line was EAL's generic failure.)
#[test]
fn missing_hugepages_are_explained_before_eal() {
    assert!(is_root());
    let dir = TempDir::new("huge");
    let run = |name: &str, eal: &str| {
        let prefix = unique("lbdh");
        let cfg = dir.join(&format!("{name}.yaml"));
        std::fs::write(
            &cfg,
            format!(
                "eal: [\"--no-pci\", \"--file-prefix\", \"{prefix}\", \"--vdev\", \"net_null0\", {eal}]\nports:\n  - {{name: ext, device: net_null0, address: 10.0.0.1/24, exception: off}}\ncontrol: {{socket: {}}}\nmetrics: {{listen: \"off\"}}\n",
                dir.join(&format!("{name}.sock")).display()
            ),
        )
        .unwrap();
        let out = Command::new(lbd_bin()).arg("-c").arg(&cfg).output().unwrap();
        assert!(!Path::new(&format!("/var/run/dpdk/{prefix}")).exists(), "EAL runtime dir left behind");
        text(&out)
    };
    // A --huge-dir that is no hugetlbfs mount: true on any host.
    let (code, _, err) = run("dir", "\"--huge-dir\", \"/nonexistent-hugetlbfs\"");
    assert_eq!(code, 1, "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("lbd: hugepages: --huge-dir /nonexistent-hugetlbfs is not a mounted hugetlbfs"), "{err}");
    assert!(last.contains("lbd-hugepages mount") && last.contains("--no-huge"), "{err}");
    assert!(!err.contains("EAL"), "stopped before EAL: {err}");
    // More memory than any host here has free.
    let (code, _, err) = run("much", "\"-m\", \"900000000\"");
    assert_eq!(code, 1, "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("lbd: hugepages: "), "{err}");
    assert!(last.contains("lbd-hugepages") && last.contains("--no-huge"), "{err}");
}

fn script() -> PathBuf {
    repo().join("dist/lbd-hugepages")
}

fn nr_hugepages_2m() -> u64 {
    std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages").unwrap().trim().parse().unwrap()
}

/// `status` and `--dry-run` show and change nothing on the host.
#[test]
fn hugepages_script_status_and_dry_run_change_nothing() {
    let dir = TempDir::new("hp-dry");
    let etc = dir.join("etc");
    let before = nr_hugepages_2m();
    let out = Command::new(script()).arg("status").output().unwrap();
    let (code, out, err) = text(&out);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Hugepage pools") && out.contains("2MB") && out.contains("hugetlbfs mounts:"), "{out}");
    assert!(out.contains("kernel command line:"), "{out}");

    let n = (before + 8).to_string();
    let o = Command::new(script()).args(["reserve", &n, "--dry-run", "--etc"]).arg(&etc).output().unwrap();
    let (code, out, err) = text(&o);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("would write to /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages: {n}")),
        "{out}"
    );
    assert!(out.contains(&format!("vm.nr_hugepages = {n}")), "{out}");
    assert!(!etc.exists(), "--dry-run wrote {}", etc.display());
    assert_eq!(nr_hugepages_2m(), before, "--dry-run changed the pool");

    let o = Command::new(script()).args(["reserve", "2", "--size", "1G", "--node", "0", "--dry-run"]).output().unwrap();
    let (code, out, err) = text(&o);
    if Path::new("/sys/devices/system/node/node0/hugepages/hugepages-1048576kB").exists() {
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("default_hugepagesz=1G hugepagesz=1G hugepages=0:2"), "{out}");
        assert!(out.contains("would run: mount -t hugetlbfs -o pagesize=1G nodev /dev/hugepages1G"), "{out}");
    }
    for bad in [&["reserve", "many", "--dry-run"][..], &["reserve", "4", "--size", "3M", "--dry-run"], &["frobnicate"]]
    {
        let o = Command::new(script()).args(bad).output().unwrap();
        let (code, _, err) = text(&o);
        assert_ne!(code, 0, "{bad:?}");
        assert!(err.starts_with("lbd-hugepages: "), "{bad:?}: {err}");
    }
}

/// Puts the 2 MB pool back to what it was, also when the test fails.
struct PoolGuard(u64);

impl Drop for PoolGuard {
    fn drop(&mut self) {
        let _ = std::fs::write("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", self.0.to_string());
    }
}

/// A real reservation of a few 2 MB pages with the boot setting written to
/// a scratch /etc, then the pool restored.
#[test]
fn hugepages_script_reserves_and_restores_2mb_pages() {
    assert!(is_root());
    let dir = TempDir::new("hp-real");
    let etc = dir.join("etc");
    let before = nr_hugepages_2m();
    let _guard = PoolGuard(before);
    let want = before + 4;
    let o =
        Command::new(script()).args(["reserve", &want.to_string(), "--no-mount", "--etc"]).arg(&etc).output().unwrap();
    let (code, out, err) = text(&o);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(nr_hugepages_2m(), want, "{out}");
    assert!(out.contains(&format!("2M pages: {want} reserved")), "{out}");
    let persisted = std::fs::read_to_string(etc.join("sysctl.d/80-lbd-hugepages.conf")).unwrap();
    assert!(persisted.contains(&format!("vm.nr_hugepages = {want}")), "{persisted}");
    let o = Command::new(script()).arg("status").arg("--etc").arg(&etc).output().unwrap();
    let (_, out, _) = text(&o);
    assert!(out.contains(&format!("vm.nr_hugepages = {want}")), "{out}");
    // Back to the previous count, without touching the boot setting.
    let o = Command::new(script())
        .args(["reserve", &before.to_string(), "--no-mount", "--no-persist", "--etc"])
        .arg(&etc)
        .output()
        .unwrap();
    let (code, out, err) = text(&o);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(nr_hugepages_2m(), before);
    assert!(std::fs::read_to_string(etc.join("sysctl.d/80-lbd-hugepages.conf")).unwrap().contains(&want.to_string()));
}

/// The sample production configuration (PCI ports by address, several
/// pinned workers, hugepages) passes lbd's validation.
#[test]
fn production_config_validates() {
    let p = repo().join("config/production.yaml");
    let out = Command::new(lbd_bin()).arg("--check-config").arg(&p).output().unwrap();
    let (code, out, err) = text(&out);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok (2 port(s), 2 listener(s), 8 backend(s), 4 worker(s))"), "{out}");
    let yaml = std::fs::read_to_string(&p).unwrap();
    assert!(yaml.contains("\"-a\", \"0000:3b:00.0\"") && !yaml.contains("--no-pci") && !yaml.contains("--no-huge"));
    // The unit's control socket is the one the configuration serves.
    assert!(yaml.contains("socket: /run/lbd/lbd.sock"));
}

/// The unit has what the README promises, and systemd accepts it (when
/// systemd-analyze is installed; the test says when it skips that).
#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(repo().join("dist/lbd.service")).unwrap();
    for line in [
        "Type=exec",
        "ExecStartPre=/usr/bin/lbd --check-config /etc/lbd/lbd.yaml",
        "ExecStart=/usr/bin/lbd --config /etc/lbd/lbd.yaml --stats-out /run/lbd/stats.json",
        "ExecStartPost=/usr/bin/lbctl --socket /run/lbd/lbd.sock wait --timeout 120",
        "ExecReload=/usr/bin/lbctl --socket /run/lbd/lbd.sock config reload",
        "Restart=on-failure",
        "LimitMEMLOCK=infinity",
        "RuntimeDirectory=lbd",
        "SyslogIdentifier=lbd",
    ] {
        assert!(unit.lines().any(|l| l == line), "dist/lbd.service lacks `{line}`");
    }
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("systemd_unit_verifies: systemd-analyze not installed, `verify` skipped");
        return;
    }
    // verify checks that the programs exist: point it at the built ones.
    let dir = TempDir::new("unit");
    let bin = Path::new(lbd_bin()).parent().unwrap().display().to_string();
    let local = dir.join("lbd.service");
    std::fs::write(&local, unit.replace("/usr/bin/", &format!("{bin}/"))).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&local).output().unwrap();
    let (code, out, err) = text(&out);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.trim().is_empty(), "systemd-analyze verify warns: {err}");
}

/// A dpkg root of its own, removed on drop.
struct DpkgRoot(TempDir);

impl DpkgRoot {
    fn new() -> DpkgRoot {
        let d = TempDir::new("dpkg-root");
        for sub in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        for f in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
            std::fs::write(d.join(f), "").unwrap();
        }
        DpkgRoot(d)
    }
    fn dpkg(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new("dpkg")
            .arg(format!("--root={}", self.0.path().display()))
            .arg("--log=/dev/null")
            .args(args)
            .output()
            .unwrap();
        text(&out)
    }
}

/// dist/build-deb.sh packages the built binaries (the ci profile's: a
/// release build would add minutes; `LBD_DEB_PROFILE=release` makes this
/// test build one), and the package installs into a scratch root with
/// dpkg, where its lbd starts, its `lbctl wait` sees it ready, and removal
/// keeps the conffile until purge.
#[test]
fn debian_package_installs_and_runs() {
    assert!(is_root());
    if Command::new("dpkg-shlibdeps").arg("--version").output().is_err() {
        panic!("dpkg-shlibdeps missing: apt-get install dpkg-dev");
    }
    let out_dir = TempDir::new("deb");
    let mut build = Command::new(repo().join("dist/build-deb.sh"));
    build.arg("--out").arg(out_dir.path());
    match std::env::var("LBD_DEB_PROFILE") {
        Ok(p) => build.args(["--profile", &p]),
        Err(_) => build.arg("--bin-dir").arg(Path::new(lbd_bin()).parent().unwrap()),
    };
    let started = Instant::now();
    let (code, out, err) = text(&build.output().unwrap());
    assert_eq!(code, 0, "{out}{err}");
    eprintln!("debian_package_installs_and_runs: package built in {:.1} s", started.elapsed().as_secs_f64());
    let deb = PathBuf::from(out.lines().last().unwrap().trim());
    assert!(deb.file_name().unwrap().to_str().unwrap().starts_with("lbd_0."), "{deb:?}");

    let contents = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for path in [
        "./usr/bin/lbd",
        "./usr/bin/lbctl",
        "./usr/sbin/lbd-hugepages",
        "./lib/systemd/system/lbd.service",
        "./etc/lbd/lbd.yaml",
        "./usr/share/doc/lbd/examples/production.yaml",
        "./usr/share/doc/lbd/examples/reference.yaml",
        "./usr/share/bash-completion/completions/lbctl",
        "./usr/share/bash-completion/completions/lbd",
    ] {
        assert!(contents.lines().any(|l| l.ends_with(&format!(" {path}"))), "{path} not in the package:\n{contents}");
    }
    assert!(contents.lines().all(|l| l.contains(" root/root ")), "files not owned by root:\n{contents}");
    let info = run(Command::new("dpkg-deb").arg("-I").arg(&deb));
    let depends = info.lines().find_map(|l| l.trim().strip_prefix("Depends: ")).unwrap_or_else(|| panic!("{info}"));
    for lib in ["libc6", "librte-eal23", "librte-ethdev23", "librte-mempool-ring23"] {
        assert!(depends.contains(lib), "Depends lacks {lib}: {depends}");
    }
    // Every dependency is a real package (this host has them all).
    for dep in depends.split(',') {
        let name = dep.split_whitespace().next().unwrap();
        let st = run(Command::new("dpkg-query").args(["-W", "-f=${Status}", name]));
        assert!(st.contains("install ok installed"), "{name}: {st}");
    }
    assert!(info.contains("conffiles"), "{info}");

    let root = DpkgRoot::new();
    // Dependencies are checked above against the host; the scratch root
    // has no package database of its own to satisfy them.
    let (code, out, err) = root.dpkg(&["--force-depends", "-i", deb.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let r = root.0.path();
    let (code, out, err) = root.dpkg(&["-s", "lbd"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Status: install ok installed") && out.contains(" /etc/lbd/lbd.yaml "), "{out}");

    let lbd = r.join("usr/bin/lbd");
    let lbctl = r.join("usr/bin/lbctl");
    let (code, out, _) = text(&Command::new(&lbd).arg("--version").output().unwrap());
    assert_eq!(code, 0);
    assert!(out.starts_with("lbd 0.") && out.contains("DPDK 22.11"), "{out}");
    let (code, out, _) = text(&Command::new(&lbctl).arg("--help").output().unwrap());
    assert_eq!(code, 0);
    assert!(out.contains("wait") && out.contains("completions"), "{out}");
    let (code, out, err) =
        text(&Command::new(&lbd).arg("--check-config").arg(r.join("etc/lbd/lbd.yaml")).output().unwrap());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": ok ("), "{out}");
    let completion = std::fs::read_to_string(r.join("usr/share/bash-completion/completions/lbctl")).unwrap();
    assert!(completion.contains("complete -F _lbctl") && completion.contains("wait"), "not a bash completion");
    let completion = std::fs::read_to_string(r.join("usr/share/bash-completion/completions/lbd")).unwrap();
    assert!(completion.contains("complete -F _lbd") && completion.contains("--check-config"));
    let (code, out, err) = text(&Command::new(r.join("usr/sbin/lbd-hugepages")).arg("status").output().unwrap());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Hugepage pools"), "{out}");

    // The packaged lbd runs, and the packaged lbctl sees it ready.
    let dir = TempDir::new("deb-run");
    let prefix = unique("lbdp");
    let (cfg, socket) = idle_config(&dir, &prefix, "lcores: {workers: 1}\n");
    let mut daemon = Lbd::spawn_bin(&lbd, &cfg, dir.path(), &prefix);
    let (code, out, err) = lbctl_wait(&lbctl, &socket, &["--timeout", "60"], Duration::from_secs(90));
    assert_eq!(code, 0, "{err}\n{}", daemon.log_text());
    assert!(out.starts_with("lbd ready: 1 worker(s) running"), "{out}");
    assert!(daemon.exited().is_none());
    let (status, _) = daemon.stop();
    assert!(status.success());

    // Removal keeps the edited configuration; purge removes it.
    let (code, _, err) = root.dpkg(&["-r", "lbd"]);
    assert_eq!(code, 0, "{err}");
    assert!(!lbd.exists() && r.join("etc/lbd/lbd.yaml").exists());
    let (code, _, err) = root.dpkg(&["-P", "lbd"]);
    assert_eq!(code, 0, "{err}");
    assert!(!r.join("etc/lbd/lbd.yaml").exists());
}

/// Under systemd (JOURNAL_STREAM set) DPDK's lines go to standard error
/// only: EAL's usual copy to syslog would store each line in the journal a
/// second time. Seen with strace: glibc connects to /dev/log once at
/// `openlog`, then sends every line there (reconnecting each time while
/// nothing listens).
#[test]
fn eal_lines_skip_syslog_under_journald() {
    assert!(is_root());
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("eal_lines_skip_syslog_under_journald: strace not installed, skipped");
        return;
    }
    let dir = TempDir::new("journal");
    let syslog_connects = |journal: bool| {
        let prefix = unique("lbdj");
        let cfg = dir.join(&format!("{prefix}.yaml"));
        // A pcap vdev whose input does not exist: EAL logs a few lines and
        // lbd stops.
        std::fs::write(
            &cfg,
            format!(
                "eal: [\"--no-pci\", \"--no-huge\", \"-m\", \"256\", \"--file-prefix\", \"{prefix}\", \"--vdev\", \"net_pcap0,rx_pcap=/nonexistent.pcap,tx_pcap={}\"]\nports:\n  - {{name: ext, device: net_pcap0, address: 10.0.0.1/24, exception: off}}\ncontrol: {{socket: {}}}\nmetrics: {{listen: \"off\"}}\n",
                dir.join("out.pcap").display(),
                dir.join(&format!("{prefix}.sock")).display()
            ),
        )
        .unwrap();
        let trace = dir.join(&format!("{prefix}.strace"));
        let mut cmd = Command::new("strace");
        cmd.args(["-f", "-e", "trace=connect,sendto", "-o"]).arg(&trace).arg(lbd_bin()).arg("-c").arg(&cfg);
        cmd.env_remove("JOURNAL_STREAM");
        if journal {
            cmd.env("JOURNAL_STREAM", "8:12345");
        }
        let (code, _, err) = text(&cmd.output().unwrap());
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("EAL: "), "EAL lines still on standard error: {err}");
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
        // Connects to /dev/log (one per line while syslog is absent) and
        // messages sent on it (once it is there): `<PRI>... lbd[PID]: `.
        std::fs::read_to_string(&trace)
            .unwrap()
            .lines()
            .filter(|l| l.contains("/dev/log") || (l.contains("sendto(") && l.contains(" lbd[")))
            .count()
    };
    let plain = syslog_connects(false);
    let journal = syslog_connects(true);
    assert!(plain > 1, "without JOURNAL_STREAM EAL copies its lines to syslog ({plain} connects)");
    assert_eq!(journal, 1, "only openlog's connect under the journal");
}
