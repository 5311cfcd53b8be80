//! `lbctl top` against a real lbd with traffic: the live view inside a
//! detached tmux session of a fixed size (sections, rows, rates, resize,
//! lbd going away, `q` restoring the terminal), and the plain frames of
//! `--once` and `--batch`.

mod common;

use common::*;
use lbcore::wire::frame::FrameBuilder;
use lbcore::wire::MacAddr;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc1];
const TCP: u8 = 6;
const SYN: u8 = 0x02;

fn ip(s: &str) -> u32 {
    u32::from(s.parse::<Ipv4Addr>().unwrap())
}

/// A process of ours, killed by its PID when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An lbd on one net_pcap port reading a veth, with listener `web`
/// (10.0.0.100:80, two backends), and a sender on the veth's peer that
/// keeps offering new SYNs to `web` and a packet to port 81 (no listener:
/// a `no_listener` drop) now and then, about a hundred a second, so every
/// rate the view shows has something to count.
struct Fixture {
    _sender: Killed,
    lbd: Option<Lbd>,
    _veth: Veth,
    socket: PathBuf,
    dir: TempDir,
}

impl Fixture {
    fn start(name: &str) -> Fixture {
        assert!(is_root(), "starts DPDK and makes veths: run as root");
        let dir = TempDir::new(name);
        let prefix = unique("lbdt");
        let (dev, peer) = (unique("tpl"), unique("tpp"));
        let veth = Veth::new(&dev, &peer);
        let socket = dir.join("lbd.sock");
        let cfg = dir.join("lbd.yaml");
        std::fs::write(
            &cfg,
            format!(
                "eal: [\"--no-pci\", \"--no-huge\", \"-m\", \"512\", \"--file-prefix\", \"{prefix}\", \"--no-telemetry\", \
                 \"--vdev\", \"net_pcap0,rx_iface={dev},tx_pcap=/dev/null\"]\n\
                 lcores: {{workers: 1}}\n\
                 ports:\n  - name: lan\n    device: net_pcap0\n    address: 10.0.0.1/24\n    exception: off\n    mac: \"02:00:00:00:00:01\"\n    \
                 neighbors: [{{ip: 10.0.0.11, mac: \"02:00:00:00:00:11\"}}, {{ip: 10.0.0.12, mac: \"02:00:00:00:00:12\"}}]\n\
                 listeners:\n  - name: web\n    vip: 10.0.0.100\n    protocol: tcp\n    port: 80\n    backends:\n      \
                 - {{address: 10.0.0.11, port: 8080}}\n      - {{address: 10.0.0.12, port: 8080, weight: 2}}\n\
                 control: {{socket: {}}}\nmetrics: {{listen: \"off\"}}\n",
                socket.display()
            ),
        )
        .unwrap();
        let lbd = Lbd::start(&cfg, dir.path(), &prefix);
        // 20 000 flows (about 200 s at the sending rate, so new
        // connections keep coming), every tenth packet to port 81.
        let frames: Vec<Vec<u8>> = (0..20_000u32)
            .map(|i| {
                let (sport, dport) = (10_000 + i as u16, if i % 10 == 9 { 81 } else { 80 });
                FrameBuilder::new(MacAddr(CLIENT_MAC), MacAddr(LB_MAC)).l4(
                    TCP,
                    ip("10.0.0.7"),
                    ip("10.0.0.100"),
                    sport,
                    dport,
                    SYN,
                    b"",
                )
            })
            .collect();
        let pcap = dir.join("flows.pcap");
        write_pcap(&pcap, &frames);
        let script = "import socket, struct, sys, time\n\
                      data = open(sys.argv[2], 'rb').read()\n\
                      frames, at = [], 24\n\
                      while at < len(data):\n    n = struct.unpack_from('<I', data, at + 8)[0]\n    \
                      frames.append(data[at + 16:at + 16 + n]); at += 16 + n\n\
                      s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n\
                      s.bind((sys.argv[1], 0))\n\
                      while True:\n    for f in frames:\n        s.send(f); time.sleep(0.01)\n";
        let sender = Command::new(python())
            .arg("-c")
            .arg(script)
            .arg(&peer)
            .arg(&pcap)
            .stdout(Stdio::null())
            .spawn()
            .expect("start the sender");
        Fixture { _sender: Killed(sender), lbd: Some(lbd), _veth: veth, socket, dir }
    }
}

/// A tmux server of our own (its own socket name, so no other tmux is
/// touched) with one detached session; killed when dropped.
struct Tmux {
    server: String,
}

impl Tmux {
    /// Runs `command` (a shell command line) in a `width` x `height` pane.
    fn start(command: &str, width: u16, height: u16) -> Tmux {
        let server = unique("lbtop");
        let t = Tmux { server };
        let (w, h) = (width.to_string(), height.to_string());
        run(Command::new("tmux").args([
            "-L",
            &t.server,
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            &w,
            "-y",
            &h,
            command,
        ]));
        t
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").args(["-L", &self.server]).args(args).output().expect("run tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "top"])
    }

    /// The screen with rows the terminal wrapped joined again: a line
    /// longer than the pane shows as itself, not as two rows.
    fn screen_joined(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-J", "-t", "top"])
    }

    fn flag(&self, format: &str) -> String {
        self.tmux(&["display-message", "-p", "-t", "top", format]).trim().to_owned()
    }

    /// Waits (generously) until the screen satisfies `ok`; returns it.
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "the pane never showed {what}:\n{s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.server, "kill-server"]).status();
    }
}

/// The cells of the first line whose first cells are `starts`' words.
fn row(screen: &str, starts: &str) -> Option<Vec<String>> {
    let want: Vec<&str> = starts.split_whitespace().collect();
    screen
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|cells| cells.len() >= want.len() && cells.iter().zip(&want).all(|(c, w)| c == w))
}

/// A rate cell with something counted: not "-", not zero.
fn counted(cell: Option<&String>) -> bool {
    cell.is_some_and(|c| c != "-" && c != "0")
}

/// Everything the live view must show once two samples are in.
fn full_view(s: &str) -> bool {
    ["WORKERS", "LISTENERS", "BACKENDS", "DROPS"].iter().all(|t| s.lines().any(|l| l == *t))
        && s.lines().next().is_some_and(|l| l.starts_with("lbd ") && l.contains("workers 1"))
        // web: in pps and new connections per second.
        && row(s, "web 10.0.0.100:80/tcp").is_some_and(|r| counted(r.get(2)) && counted(r.get(4)))
        && row(s, "web 10.0.0.11:8080 up").is_some_and(|r| r.get(3).is_some_and(|w| w == "1"))
        && row(s, "web 10.0.0.12:8080 up").is_some_and(|r| r.get(3).is_some_and(|w| w == "2"))
        && row(s, "no_listener").is_some_and(|r| counted(r.get(1)))
        && row(s, "0").is_some_and(|r| counted(r.get(2)))
}

fn lbctl_line(socket: &Path, args: &str) -> String {
    format!("{} --socket {} {args}", lbctl_bin().display(), socket.display())
}

#[test]
fn top_under_tmux_shows_rates_follows_resize_and_lbd_going_away_and_restores_the_terminal() {
    let mut f = Fixture::start("top-tmux");
    // After lbctl: its status, and whether the terminal is back in
    // canonical mode (raw mode turns icanon off).
    let cmd = format!(
        "{}; st=$?; mode=$(stty -a | tr ' ;' '\\n\\n' | grep -x -- '-\\?icanon'); echo \"top-exit=$st $mode\"; exec sleep 600",
        lbctl_line(&f.socket, "top -d 0.3")
    );
    let tmux = Tmux::start(&cmd, 120, 40);
    let s = tmux.wait_for("every section with rates", full_view);
    assert_eq!(tmux.flag("#{alternate_on}"), "1", "the view is on the alternate screen:\n{s}");
    assert!(s.lines().all(|l| l.chars().count() <= 120), "{s}");

    // A window smaller than the content: lines and rows are cut, never
    // wrapped, and the last row says how many are hidden.
    tmux.tmux(&["resize-window", "-t", "top", "-x", "40", "-y", "8"]);
    tmux.wait_for("the view cut to 40x8", |s| {
        let lines: Vec<&str> = s.lines().collect();
        lines.len() <= 8 && lines.first().is_some_and(|l| l.starts_with("lbd ")) && s.contains("... ")
    });
    let s = tmux.screen_joined();
    let lines: Vec<&str> = s.lines().collect();
    assert!(lines.iter().all(|l| l.chars().count() <= 40), "{s}");
    assert_eq!(lines.len(), 8, "{s}");
    assert!(lines[7].starts_with("... ") && lines[7].contains(" more lines"), "{s}");
    tmux.tmux(&["resize-window", "-t", "top", "-x", "120", "-y", "40"]);
    tmux.wait_for("the whole view again", full_view);

    // lbd goes away: the view says so and keeps going.
    drop(f.lbd.take());
    let s = tmux.wait_for("that lbd is not answering", |s| s.contains(" is not answering"));
    assert!(s.contains("retrying every 0.3s"), "{s}");
    assert!(s.contains(&format!("lbd at {} is not answering", f.socket.display())), "{s}");

    tmux.tmux(&["send-keys", "-t", "top", "q"]);
    let s = tmux.wait_for("lbctl's exit", |s| s.contains("top-exit="));
    assert!(s.lines().any(|l| l == "top-exit=0 icanon"), "lbctl exited 0 and raw mode is off again:\n{s}");
    assert!(!s.contains("WORKERS"), "the alternate screen is gone:\n{s}");
    assert_eq!(tmux.flag("#{alternate_on}"), "0");
    assert_eq!(tmux.flag("#{cursor_flag}"), "1", "the cursor is shown again");
    drop(f.dir);
}

#[test]
fn top_once_prints_one_plain_frame_with_rates() {
    let f = Fixture::start("top-once");
    // Wait until traffic has reached lbd, so both samples see it flowing.
    let start = Instant::now();
    while lbctl_json(&f.socket, &["stats"])["drops"]["no_listener"].as_u64() == Some(0) {
        assert!(start.elapsed() < Duration::from_secs(60), "no traffic reached lbd");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The sender's few packets a second may all fall outside one
    // half-second window of a loaded machine: run again until a window
    // has them (every run must still succeed and print one frame).
    let until_rates = |args: &[&str], rates_in: fn(&str) -> bool| {
        let start = Instant::now();
        loop {
            let (code, out, err) = lbctl(&f.socket, args);
            assert_eq!(code, 0, "{err}");
            if rates_in(&out) {
                return out;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "no window with every rate: {out}");
        }
    };
    let out = until_rates(&["top", "--once", "-d", "0.5"], full_view);
    assert!(!out.contains('\x1b') && !out.contains('\r'), "no terminal control codes: {out:?}");
    assert_eq!(out.matches("WORKERS").count(), 1, "one frame: {out}");

    // --batch -n 2: two frames, the first without rates.
    let out = until_rates(&["top", "--batch", "-n", "2", "-d", "0.5"], |out| {
        out.split("\n\nlbd ").nth(1).is_some_and(|second| full_view(&format!("lbd {second}")))
    });
    let frames: Vec<&str> = out.split("\n\nlbd ").collect();
    assert_eq!(frames.len(), 2, "{out}");
    assert_eq!(row(frames[0], "web 10.0.0.100:80/tcp").and_then(|r| r.get(2).cloned()).as_deref(), Some("-"));

    // Without a terminal and without --batch/--once: a usage error.
    let (code, _, err) = lbctl(&f.socket, &["top"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--batch or --once"), "{err}");
}

#[test]
fn top_batch_without_lbd_exits_with_status_3() {
    let dir = TempDir::new("top-gone");
    let (code, out, err) = lbctl(&dir.join("none.sock"), &["top", "--once"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(err.contains("cannot connect to lbd"), "{err}");
}

/// A terminal that goes away without a signal to lbctl (it runs in a
/// session of its own, so the hangup's SIGHUP reaches only the pane's
/// shell): lbctl must notice the dead terminal itself and exit, not spin
/// on it forever (crossterm's event source does, issue 793).
#[test]
fn top_exits_when_its_terminal_goes_away() {
    let f = Fixture::start("top-hangup");
    let pidfile = f.dir.join("lbctl.pid");
    // A background command of a non-interactive shell reads /dev/null
    // unless told otherwise: give it the terminal through fd 3.
    let cmd = format!(
        "exec 3<&0; setsid {} <&3 & echo $! > {}; wait",
        lbctl_line(&f.socket, "top -d 0.3"),
        pidfile.display()
    );
    let tmux = Tmux::start(&cmd, 120, 40);
    tmux.wait_for("the live view", |s| s.lines().any(|l| l == "WORKERS"));
    let pid: u32 = std::fs::read_to_string(&pidfile).expect("lbctl's pid").trim().parse().expect("a pid");
    drop(tmux); // kills the tmux server: the pane's terminal is gone
    let gone = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(true, |st| st.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
    };
    let start = Instant::now();
    while !gone(pid) && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let alive = !gone(pid);
    if alive {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
    assert!(!alive, "lbctl top (PID {pid}) still runs 30 s after its terminal went away");
}
