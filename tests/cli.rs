//! The `lbd` command line: version, configuration checking, and the one
//! clear line when it cannot start; `lbctl`'s own command line: numeric
//! options checked when parsed, and a closed output pipe ending it quietly.

mod common;

use common::*;
use std::io::Read;
use std::process::{Command, Stdio};

fn lbd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(lbd_bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_names_git_and_dpdk() {
    let (code, out, _) = lbd(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("lbd 0."), "{out}");
    assert!(out.contains("git "), "{out}");
    assert!(out.contains("DPDK 22.11"), "{out}");
}

#[test]
fn check_config_accepts_the_samples() {
    for f in ["config/demo.yaml", "config/reference.yaml", "config/production.yaml"] {
        let p = repo().join(f);
        let (code, out, err) = lbd(&["--check-config", p.to_str().unwrap()]);
        assert_eq!(code, 0, "{f}: {err}");
        assert!(out.contains(": ok ("), "{out}");
    }
}

#[test]
fn check_config_errors_name_file_field_and_problem() {
    let dir = TempDir::new("cli");
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "ports:\n  - {name: ext, device: net_null0, address: 10.0.0.1/24, exception: off}\nlisteners:\n  - name: web\n    vip: 10.0.0.100\n    protocol: tcp\n    port: 80\n    backends:\n      - {address: 10.0.0.11, port: 8080, weight: 70000}\n",
    )
    .unwrap();
    let (code, _, err) = lbd(&["--check-config", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(bad.to_str().unwrap()), "{err}");
    assert!(err.contains("listeners[0].backends[0].weight"), "{err}");
    assert!(err.contains("out of range"), "{err}");
    // Running with it fails the same way, before touching DPDK.
    let (code, _, err2) = lbd(&["-c", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert_eq!(err, err2);
    let (code, _, err) = lbd(&["--check-config", "/nonexistent/lbd.yaml"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/lbd.yaml: cannot read"), "{err}");
}

#[test]
fn not_root_is_one_clear_line() {
    let dir = TempDir::new("cli-user");
    let cfg = dir.join("ok.yaml");
    std::fs::write(
        &cfg,
        "eal: [\"--no-pci\"]\nports:\n  - {name: ext, device: net_null0, address: 10.0.0.1/24, exception: off}\n",
    )
    .unwrap();
    // The directory must be readable by the unprivileged user.
    Command::new("chmod").args(["755", dir.path().to_str().unwrap()]).status().unwrap();
    Command::new("chmod").args(["644", cfg.to_str().unwrap()]).status().unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", lbd_bin(), "-c", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim(), "lbd: must run as root (DPDK needs raw access to devices and hugepages)");
}

#[test]
fn eal_failure_is_a_clear_line_not_a_panic() {
    assert!(is_root());
    let dir = TempDir::new("cli-eal");
    let prefix = unique("lbdc");
    let cfg = dir.join("eal.yaml");
    // A pcap vdev whose input file does not exist cannot be created.
    std::fs::write(
        &cfg,
        format!(
            "eal: [\"--no-pci\", \"--no-huge\", \"-m\", \"256\", \"--file-prefix\", \"{prefix}\", \"--vdev\", \"net_pcap0,rx_pcap=/nonexistent.pcap,tx_pcap=/tmp/x.pcap\"]\nports:\n  - {{name: ext, device: net_pcap0, address: 10.0.0.1/24, exception: off}}\ncontrol: {{socket: {sock}}}\nmetrics: {{listen: \"off\"}}\n", sock = dir.join("lbd.sock").display()
        ),
    )
    .unwrap();
    let (code, _, err) = lbd(&["-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("lbd: "), "{err}");
    assert!(last.contains("EAL") || last.contains("net_pcap0"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!std::path::Path::new(&format!("/var/run/dpdk/{prefix}")).exists(), "EAL runtime dir left behind");

    // A port naming a device no --vdev created.
    let cfg2 = dir.join("nodev.yaml");
    std::fs::write(
        &cfg2,
        format!("eal: [\"--no-pci\", \"--no-huge\", \"-m\", \"256\", \"--file-prefix\", \"{prefix}b\"]\nports:\n  - {{name: ext, device: net_null7, address: 10.0.0.1/24, exception: off}}\ncontrol: {{socket: {sock}}}\nmetrics: {{listen: \"off\"}}\n", sock = dir.join("lbd.sock").display()),
    )
    .unwrap();
    let (code, _, err) = lbd(&["-c", cfg2.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert_eq!(
        err.lines().last().unwrap(),
        "lbd: port `ext`: no DPDK device named `net_null7` (is it created by a --vdev in `eal`, or allowed with -a?)"
    );
    assert!(!std::path::Path::new(&format!("/var/run/dpdk/{prefix}b")).exists());

    // No hugepages reserved and no --no-huge: lbd stops before EAL.
    if std::fs::read_to_string("/proc/sys/vm/nr_hugepages").map(|s| s.trim() == "0").unwrap_or(false) {
        let cfg3 = dir.join("huge.yaml");
        std::fs::write(
            &cfg3,
            format!("eal: [\"--no-pci\", \"--file-prefix\", \"{prefix}c\", \"--vdev\", \"net_null0\"]\nports:\n  - {{name: ext, device: net_null0, address: 10.0.0.1/24, exception: off}}\ncontrol: {{socket: {sock}}}\nmetrics: {{listen: \"off\"}}\n", sock = dir.join("lbd.sock").display()),
        )
        .unwrap();
        let (code, _, err) = lbd(&["-c", cfg3.to_str().unwrap()]);
        assert_eq!(code, 1);
        let last = err.lines().last().unwrap();
        // lbd's own check, before EAL, names the fix.
        assert!(last.starts_with("lbd: hugepages: "), "{err}");
        assert!(last.contains("--no-huge") && last.contains("lbd-hugepages"), "{err}");
        assert!(!std::path::Path::new(&format!("/var/run/dpdk/{prefix}c")).exists(), "EAL runtime dir left behind");
    }
}

/// Every numeric option lbctl takes is checked by the command line parser:
/// a value out of range is a usage error (status 2) that says the range,
/// never a panic later. The socket does not exist: without the checks the
/// values would pass and lbctl would fail to connect (status 3) instead.
#[test]
fn lbctl_numeric_options_out_of_range_are_usage_errors() {
    let cases: &[(&[&str], &str)] = &[
        (&["stats", "--watch", "inf"], "from 0.1 to 86400 seconds"),
        (&["stats", "--watch", "infinity"], "from 0.1 to 86400 seconds"),
        (&["stats", "--watch", "NaN"], "from 0.1 to 86400 seconds"),
        (&["stats", "--watch=-1"], "from 0.1 to 86400 seconds"),
        (&["stats", "--watch", "0"], "from 0.1 to 86400 seconds"),
        (&["stats", "--watch", "0.01"], "from 0.1 to 86400 seconds"),
        (&["stats", "--watch", "86401"], "from 0.1 to 86400 seconds"),
        (&["stats", "--watch", "1e300"], "from 0.1 to 86400 seconds"),
        (&["stats", "--watch", "soon"], "is not a number of seconds"),
        (&["stats", "--watch", "1", "--iterations", "0"], "0 is not in 1.."),
        (&["stats", "--watch", "1", "--iterations=-3"], "--iterations"),
        (&["sessions", "--limit", "0"], "0 is not in 1..=100000"),
        (&["sessions", "--limit", "100001"], "100001 is not in 1..=100000"),
        (&["sessions", "--limit", "99999999999"], "--limit"),
        (&["sessions", "--limit=-5"], "--limit"),
    ];
    for (args, says) in cases {
        let out = Command::new(lbctl_bin()).args(["--socket", "/nonexistent/lbd.sock"]).args(*args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "lbctl {args:?}: {err}");
        assert!(err.contains(says), "lbctl {args:?} should say `{says}`: {err}");
        assert!(!err.contains("panicked"), "lbctl {args:?}: {err}");
    }
}

/// What a pipe whose reader left must look like: status 0 (the reader had
/// what it wanted: lbctl's documented choice), no signal (no SIGABRT from a
/// panic), nothing on standard error.
fn assert_quiet_end(what: &str, status: std::process::ExitStatus, stderr: &str) {
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), None, "{what}: killed by signal {:?} (6 is SIGABRT): {stderr}", status.signal());
    assert_eq!(status.code(), Some(0), "{what}: {stderr}");
    assert!(!stderr.contains("panicked") && !stderr.to_lowercase().contains("abort"), "{what}: {stderr}");
    assert!(stderr.is_empty(), "{what}: says nothing: {stderr}");
}

/// Runs lbctl with standard output a pipe whose read end is already
/// closed, so its first write fails with EPIPE (deterministically: no race
/// with a reader).
fn lbctl_into_closed_pipe(args: &[&str]) -> (std::process::ExitStatus, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(lbctl_bin()).args(args).stdout(writer).output().unwrap();
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn lbctl_ends_quietly_when_its_output_is_closed() {
    assert!(is_root());
    for shell in ["bash", "zsh", "fish"] {
        let (status, err) = lbctl_into_closed_pipe(&["completions", shell]);
        assert_quiet_end(&format!("completions {shell}"), status, &err);
    }
    let dir = TempDir::new("cli-pipe");
    let (lbd, socket) = start_idle_lbd(&dir);
    let sock = socket.to_str().unwrap();
    for args in [
        &["--socket", sock, "--json", "config", "show"][..],
        &["--socket", sock, "config", "show"],
        &["--socket", sock, "status"],
        &["--socket", sock, "--json", "stats"],
    ] {
        let (status, err) = lbctl_into_closed_pipe(args);
        assert_quiet_end(&format!("{args:?}"), status, &err);
    }

    // `head -c 16` on a watch: the reader takes a few bytes and leaves;
    // the next refresh writes into the closed pipe.
    for json in [false, true] {
        let mut cmd = Command::new(lbctl_bin());
        cmd.args(["--socket", sock, "stats", "--watch", "0.1"]);
        if json {
            cmd.arg("--json");
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut first = [0u8; 16];
        child.stdout.take().unwrap().read_exact(&mut first).unwrap();
        // The pipe's read end is closed here (the handle was dropped).
        let status = wait_timeout(&mut child, std::time::Duration::from_secs(20)).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("lbctl stats --watch kept running after its reader left")
        });
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert_quiet_end(&format!("stats --watch (json {json})"), status, &err);
    }

    // The largest interval accepted works (one refresh, no sleep after).
    let (code, out, err) = lbctl(&socket, &["stats", "--watch", "86400", "--iterations", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no drops"), "{out}");
    let (status, _) = lbd.stop();
    assert!(status.success());
}

/// A stand-in for lbd that greets, reads one request and answers it with
/// `answer` (raw bytes: frames of its own making).
fn fake_lbd(socket: &std::path::Path, answer: Vec<u8>) -> std::thread::JoinHandle<()> {
    use lbproto::{read_frame_bytes, write_frame, Outcome, Response, ResponseFrame};
    use std::io::Write;
    let listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let _ = read_frame_bytes(&mut s);
        let hello = Response::Hello { protocol: lbproto::PROTOCOL_VERSION, server: "fake".into(), dpdk: "-".into() };
        write_frame(&mut s, &ResponseFrame { id: 1, result: Outcome::Ok(hello) }).unwrap();
        let _ = read_frame_bytes(&mut s);
        // lbctl stops reading at its limit and goes: a failed write is
        // expected.
        let _ = s.write_all(&answer);
    })
}

/// An answer lbctl cannot take is a clear error naming the limit, never a
/// hang or a panic.
#[test]
fn lbctl_reports_an_over_limit_answer_clearly() {
    let dir = TempDir::new("cli-bigans");
    // Continued frames of 1 MiB past the 64 MiB an answer may have.
    let mut stream = Vec::new();
    for _ in 0..=lbproto::MAX_RESPONSE / lbproto::MAX_FRAME {
        stream.extend_from_slice(&(lbproto::MAX_FRAME as u32 | lbproto::FRAME_CONTINUES).to_be_bytes());
        stream.extend(std::iter::repeat_n(b' ', lbproto::MAX_FRAME));
    }
    // A frame header over the frame limit.
    let bad_header = (lbproto::MAX_FRAME as u32 + 1).to_be_bytes().to_vec();
    for (name, answer, says) in [
        ("long", stream, format!("lbd's answer exceeds the {}-byte limit of one answer", lbproto::MAX_RESPONSE)),
        ("header", bad_header, format!("exceeds the {}-byte frame limit", lbproto::MAX_FRAME)),
    ] {
        let socket = dir.join(&format!("{name}.sock"));
        let server = fake_lbd(&socket, answer);
        let (code, _, err) = lbctl(&socket, &["stats"]);
        assert_eq!(code, 3, "{name}: {err}");
        assert!(err.starts_with("lbctl: ") && err.contains(&says), "{name}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        server.join().unwrap();
    }
}

/// A mistyped `control.socket` naming a file (or a link) must not cost the
/// file: lbd refuses to start and leaves it as it was.
#[test]
fn a_file_at_the_socket_path_is_never_replaced() {
    assert!(is_root());
    let dir = TempDir::new("cli-sockfile");
    let victim = dir.join("precious.txt");
    std::fs::write(&victim, "keep me\n").unwrap();
    let link = dir.join("link.sock");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    for path in [&victim, &link] {
        let prefix = unique("lbdk");
        let cfg = dir.join("sock.yaml");
        std::fs::write(
            &cfg,
            format!(
                "eal: [\"--no-pci\", \"--no-huge\", \"-m\", \"256\", \"--file-prefix\", \"{prefix}\", \"--vdev\", \"net_null0,no-rx=1\"]\nports:\n  - {{name: ext, device: net_null0, address: 10.0.0.1/24, exception: off}}\ncontrol: {{socket: {}}}\nmetrics: {{listen: \"off\"}}\n",
                path.display()
            ),
        )
        .unwrap();
        let (code, _, err) = lbd(&["-c", cfg.to_str().unwrap()]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("exists and is not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me\n");
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert!(!std::path::Path::new(&format!("/var/run/dpdk/{prefix}")).exists(), "EAL runtime dir left behind");
    }
}

/// lbd in a PID namespace of its own, as in a container: SO_PEERCRED gives
/// it pid 0 for an lbctl outside (another container, the host). Root must
/// still be let in, and the audit line must say where the peer was. (With
/// rustix's credentials type, whose pid cannot be 0, every such client was
/// refused as if it were not root.)
#[test]
fn lbctl_reaches_lbd_in_another_pid_namespace() {
    let dir = TempDir::new("pidns");
    let prefix = unique("lbdpidns");
    let (cfg, socket) = idle_config(
        &dir,
        &prefix,
        "listeners:\n  - {name: web, vip: 10.0.0.100, protocol: tcp, port: 80, backends: [{address: 10.0.0.11, port: 8080}]}\n",
    );
    let lbd = Lbd::start_under(&["unshare", "--pid", "--fork", "--kill-child=SIGTERM"], &cfg, dir.path(), &prefix);
    let out = Command::new(lbctl_bin())
        .args(["--socket", socket.to_str().expect("utf-8"), "backend", "drain", "web", "10.0.0.11:8080"])
        .output()
        .expect("run lbctl");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "lbctl was refused by an lbd in another PID namespace: {err}");
    let log = std::fs::read_to_string(dir.join("lbd.log")).expect("lbd's log");
    assert!(
        log.lines().any(|l| l.starts_with("lbd: audit: uid 0 pid outside lbd's PID namespace: backend_drain: ok")),
        "{log}"
    );
    drop(lbd);
}
