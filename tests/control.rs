//! The control plane against a running lbd: every lbctl command, wrong
//! input of every kind, protocol misuse, SIGHUP reloads, socket ownership.

mod common;

use common::*;
use lbproto::{read_frame, write_frame, Request, RequestFrame, ResponseFrame, PROTOCOL_VERSION};
use serde_json::Value;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// An lbd on one net_pcap port that has read 40 SYNs (so sessions and
/// neighbours exist), with its control socket and metrics in `dir`.
struct Fixture {
    dir: TempDir,
    lbd: Option<Lbd>,
    socket: PathBuf,
    config: PathBuf,
}

const LISTENERS: &str = "listeners:
  - name: web
    vip: 10.0.0.100
    protocol: tcp
    port: 80
    backends:
      - {address: 10.0.0.11, port: 8080}
      - {address: 10.0.0.12, port: 8080, weight: 2}
";

/// The fixture's configuration. Its sessions come from SYNs alone, which
/// expire after 10 s by default: `tcp_syn: 1h` keeps them for a test of
/// any length on a slow machine.
fn config_text(dir: &Path, prefix: &str, socket: &Path, listeners: &str) -> String {
    format!(
        "eal: [\"--no-pci\", \"--no-huge\", \"-m\", \"512\", \"--file-prefix\", \"{prefix}\", \"--no-telemetry\",\n\
         \x20     \"--vdev\", \"net_pcap0,rx_pcap={d}/in.pcap,tx_pcap={d}/out0.pcap,tx_pcap={d}/out1.pcap\"]\n\
         lcores: {{workers: 2, idle_sleep: 100us}}\n\
         ports:\n  - name: lan\n    device: net_pcap0\n    address: 10.0.0.1/24\n    exception: off\n    gateway: 10.0.0.254\n    mac: \"02:00:00:00:00:01\"\n\
         \x20   neighbors: [{{ip: 10.0.0.254, mac: \"02:00:00:00:00:fe\"}}, {{ip: 10.0.0.11, mac: \"02:00:00:00:00:11\"}}, {{ip: 10.0.0.12, mac: \"02:00:00:00:00:12\"}}]\n\
         {listeners}\
         timeouts: {{tcp_syn: 1h}}\n\
         control: {{socket: {s}}}\n\
         metrics: {{listen: \"127.0.0.1:0\"}}\n",
        d = dir.display(),
        s = socket.display(),
    )
}

impl Fixture {
    fn start(name: &str) -> Fixture {
        Fixture::start_with(name, 40, |c| c)
    }

    /// An lbd that has read `flows` SYNs (one session each), its
    /// configuration passed through `edit` first.
    fn start_with(name: &str, flows: u32, edit: impl FnOnce(String) -> String) -> Fixture {
        assert!(is_root());
        let dir = TempDir::new(name);
        let prefix = unique("lbdc");
        let socket = dir.join("lbd.sock");
        // Clients 192.168.7.1-5, one source port per flow (up to 35535
        // flows).
        let script = "import sys\nfrom scapy.all import Ether, IP, TCP, wrpcap\n\
            wrpcap(sys.argv[1], [Ether(dst='02:00:00:00:00:01', src='02:00:00:00:00:fe')/IP(src='192.168.7.%d' % (i % 5 + 1), dst='10.0.0.100')/TCP(sport=30000 + i, dport=80, flags='S') for i in range(int(sys.argv[2]))])\n";
        run(Command::new(python()).arg("-c").arg(script).arg(dir.join("in.pcap")).arg(flows.to_string()));
        let config = dir.join("lbd.yaml");
        std::fs::write(&config, edit(config_text(dir.path(), &prefix, &socket, LISTENERS))).unwrap();
        let mut lbd = Lbd::start(&config, dir.path(), &prefix);
        lbd.wait_processed(u64::from(flows), false, Duration::from_secs(60));
        Fixture { dir, lbd: Some(lbd), socket, config }
    }

    fn json(&self, args: &[&str]) -> Value {
        lbctl_json(&self.socket, args)
    }

    fn refused(&self, args: &[&str]) -> String {
        lbctl_refused(&self.socket, args)
    }

    fn generation(&self) -> u64 {
        self.json(&["status"])["status"]["config_generation"].as_u64().unwrap()
    }

    fn lbd(&mut self) -> &mut Lbd {
        self.lbd.as_mut().unwrap()
    }
}

fn backends(f: &Fixture, listener: &str) -> Vec<Value> {
    f.json(&["backend", "list", "--listener", listener])["backends"].as_array().unwrap().clone()
}

#[test]
fn every_lbctl_command_works() {
    let mut f = Fixture::start("ctl-all");

    // status, human and JSON.
    let (code, out, _) = lbctl(&f.socket, &["status"]);
    assert_eq!(code, 0);
    assert!(out.contains("DPDK 22.11"), "{out}");
    assert!(out.contains("config generation 1"), "{out}");
    let st = f.json(&["status"])["status"].clone();
    assert_eq!(st["workers"], 2);
    assert_eq!(st["ports"][0]["name"], "lan");
    assert_eq!(st["ports"][0]["rx_packets"], 40);
    assert_eq!(st["sessions_active"], 40);

    // listener list / add / del.
    let ls = f.json(&["listener", "list"]);
    assert_eq!(ls["listeners"][0]["name"], "web");
    assert_eq!(ls["listeners"][0]["sessions_active"], 40);
    let ch = f.json(&[
        "listener",
        "add",
        "dns",
        "--vip",
        "10.0.0.100",
        "--protocol",
        "udp",
        "--port",
        "53",
        "--scheduler",
        "round_robin",
        "--backend",
        "10.0.0.21:53",
        "--backend",
        "10.0.0.22:53:3",
    ]);
    assert_eq!(ch["change"]["generation"], 2);
    let dns = backends(&f, "dns");
    assert_eq!(dns.len(), 2);
    assert_eq!(dns[1]["weight"], 3);
    let (code, out, _) = lbctl(&f.socket, &["listener", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("dns") && out.contains("round_robin"), "{out}");
    f.json(&["listener", "del", "dns"]);
    assert_eq!(f.json(&["listener", "list"])["listeners"].as_array().unwrap().len(), 1);
    // The other schedulers, hash fields and persistence, as in a file.
    let add = |name: &str, port: &str, extra: &[&str]| {
        let mut args = vec!["listener", "add", name, "--vip", "10.0.0.100", "--protocol", "tcp", "--port", port];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--backend", "10.0.0.21:80"]);
        f.json(&args)
    };
    add("lc", "81", &["--scheduler", "least_connections", "--persistence", "30s"]);
    add("src", "82", &["--scheduler", "maglev", "--hash", "source_ip_and_destination_port"]);
    let (code, out, _) = lbctl(&f.socket, &["listener", "list"]);
    assert!(code == 0 && out.contains("least_connections"), "{out}");
    let (_, shown, _) = lbctl(&f.socket, &["config", "show"]);
    assert!(shown.contains("persistence: 30s") && shown.contains("hash: source_ip_and_destination_port"), "{shown}");
    f.json(&["listener", "del", "lc"]);
    f.json(&["listener", "del", "src"]);

    // backend list / add / set-weight / drain / undrain / del.
    let b = backends(&f, "web");
    assert_eq!(b.len(), 2);
    let total: u64 = b.iter().map(|x| x["sessions_active"].as_u64().unwrap()).sum();
    assert_eq!(total, 40);
    assert!(b[1]["share"].as_u64().unwrap() > b[0]["share"].as_u64().unwrap(), "weight 2 gets more of the table");
    f.json(&["backend", "add", "web", "10.0.0.13:8080", "--weight", "5"]);
    f.json(&["backend", "set-weight", "web", "10.0.0.11", "4"]);
    f.json(&["backend", "drain", "web", "10.0.0.12:8080"]);
    let b = backends(&f, "web");
    assert_eq!((b[0]["weight"].as_u64(), b[0]["drained"].as_bool()), (Some(4), Some(false)));
    assert_eq!((b[1]["drained"].as_bool(), b[1]["share"].as_u64()), (Some(true), Some(0)));
    assert_eq!(b[2]["weight"], 5);
    // Drained: its sessions continue.
    assert!(b[1]["sessions_active"].as_u64().unwrap() > 0);
    f.json(&["backend", "undrain", "web", "10.0.0.12"]);
    assert!(backends(&f, "web")[1]["share"].as_u64().unwrap() > 0);
    f.json(&["backend", "del", "web", "10.0.0.13:8080"]);
    assert_eq!(backends(&f, "web").len(), 2);
    let (code, out, _) = lbctl(&f.socket, &["backend", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("10.0.0.12:8080") && out.contains("active"), "{out}");

    // sessions, filters, limit, count.
    let s = f.json(&["sessions", "--limit", "1000"]);
    let all = s["sessions"].as_array().unwrap();
    assert_eq!(all.len(), 40);
    assert_eq!(s["truncated"], false);
    assert!(all.iter().all(|x| x["listener"] == "web" && x["state"] == "syn_sent" && x["vip"] == "10.0.0.100:80"));
    let workers: std::collections::BTreeSet<u64> = all.iter().map(|x| x["worker"].as_u64().unwrap()).collect();
    assert_eq!(workers.len(), 2, "sessions live on both workers");
    let on11 = f.json(&["sessions", "--backend", "10.0.0.11", "--limit", "1000"])["sessions"].as_array().unwrap().len();
    let on12 =
        f.json(&["sessions", "--backend", "10.0.0.12:8080", "--limit", "1000"])["sessions"].as_array().unwrap().len();
    assert_eq!(on11 + on12, 40);
    assert_eq!(f.json(&["sessions", "--count"])["count"], 40);
    assert_eq!(f.json(&["sessions", "--count", "--backend", "10.0.0.11"])["count"].as_u64().unwrap() as usize, on11);
    assert_eq!(f.json(&["sessions", "--count", "--listener", "web"])["count"], 40);
    let lim = f.json(&["sessions", "--limit", "5"]);
    assert_eq!(lim["sessions"].as_array().unwrap().len(), 5);
    assert_eq!(lim["truncated"], true);
    let (code, out, _) = lbctl(&f.socket, &["sessions", "--listener", "web", "--limit", "3"]);
    assert_eq!(code, 0);
    assert!(out.contains("3 session(s) (limit reached"), "{out}");

    // stats, once and watched.
    let st = f.json(&["stats"])["stats"].clone();
    assert_eq!(st["listeners"][0]["sessions_created"], 40);
    assert!(st["latency"]["samples"].as_u64().unwrap() >= 40);
    let (code, out, _) = lbctl(&f.socket, &["stats", "--watch", "0.2", "--iterations", "2"]);
    assert_eq!(code, 0);
    assert!(out.contains("rx pps") && out.contains("no drops"), "{out}");

    // neighbors: the static ones, on every worker.
    let n = f.json(&["neighbors"])["neighbors"].as_array().unwrap().clone();
    assert!(n
        .iter()
        .any(|x| x["address"] == "10.0.0.254" && x["state"] == "static" && x["mac"] == "02:00:00:00:00:fe"));
    assert_eq!(n.iter().filter(|x| x["address"] == "10.0.0.11").count(), 2);

    // config show reflects the changes; reload a file; reload lbd's own.
    let shown = f.json(&["config", "show"]);
    let yaml = shown["yaml"].as_str().unwrap();
    assert!(yaml.contains("weight: 4"), "{yaml}");
    let g = f.generation();
    let edited = f.dir.join("edited.yaml");
    std::fs::write(&edited, yaml.replace("weight: 4", "weight: 7")).unwrap();
    let ch = f.json(&["config", "reload", edited.to_str().unwrap()]);
    assert_eq!(ch["change"]["generation"].as_u64(), Some(g + 1));
    assert_eq!(backends(&f, "web")[0]["weight"], 7);
    f.json(&["config", "reload"]);
    assert_eq!(backends(&f, "web")[0]["weight"], 1, "back to the file lbd started with");

    // Completions for every shell clap knows.
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, _) = lbctl(&f.socket, &["completions", shell]);
        assert_eq!(code, 0);
        assert!(out.contains("lbctl"), "{shell}");
    }

    // Every change counted by result.
    let (status, stats) = f.lbd.take().unwrap().stop();
    assert!(status.success());
    assert_eq!(stats["drops_total"], 0);
    assert_eq!(stats["mempool_in_use"], 0);
}

#[test]
fn wrong_input_is_refused_and_changes_nothing() {
    let f = Fixture::start("ctl-wrong");
    let g = f.generation();
    assert_eq!(f.refused(&["backend", "list", "--listener", "nope"]), "not_found");
    assert_eq!(f.refused(&["listener", "del", "nope"]), "not_found");
    assert_eq!(f.refused(&["backend", "add", "nope", "10.0.0.11:80"]), "not_found");
    assert_eq!(f.refused(&["backend", "del", "web", "10.0.0.99"]), "not_found");
    assert_eq!(f.refused(&["backend", "add", "web", "10.0.0.11:8080"]), "already_exists");
    assert_eq!(
        f.refused(&["listener", "add", "web", "--vip", "10.0.0.100", "--protocol", "tcp", "--port", "81"]),
        "already_exists"
    );
    assert_eq!(f.refused(&["backend", "add", "web", "10.0.0.300:8080"]), "invalid");
    assert_eq!(f.refused(&["backend", "set-weight", "web", "10.0.0.11", "70000"]), "invalid");
    assert_eq!(
        f.refused(&["listener", "add", "x", "--vip", "10.0.0.100", "--protocol", "sctp", "--port", "1"]),
        "invalid"
    );
    assert_eq!(
        f.refused(&["listener", "add", "x", "--vip", "10.0.0.100", "--protocol", "tcp", "--port", "80"]),
        "invalid"
    );
    assert_eq!(f.refused(&["sessions", "--backend", "nonsense"]), "invalid");
    for extra in [["--hash", "source_ip"], ["--persistence", "soon"]] {
        let mut args = vec!["listener", "add", "x", "--vip", "10.0.0.100", "--protocol", "tcp", "--port", "99"];
        args.extend_from_slice(&["--scheduler", "round_robin"]);
        args.extend_from_slice(&extra);
        assert_eq!(f.refused(&args), "invalid", "{extra:?}");
    }
    // The messages say what is wrong, with the field.
    let (_, _, err) = lbctl(&f.socket, &["backend", "set-weight", "web", "10.0.0.11", "70000"]);
    assert!(err.contains("listeners[0].backends[0].weight") && err.contains("out of range"), "{err}");
    let (_, _, err) = lbctl(&f.socket, &["backend", "add", "web", "10.0.0.300:8080"]);
    assert!(err.contains("not an IPv4 address"), "{err}");
    // Bad YAML on reload, and a reload that needs a restart.
    let bad = f.dir.join("bad.yaml");
    std::fs::write(&bad, "ports: [\n").unwrap();
    assert_eq!(f.refused(&["config", "reload", bad.to_str().unwrap()]), "invalid");
    let (_, _, err) = lbctl(&f.socket, &["config", "reload", bad.to_str().unwrap()]);
    assert!(err.contains("bad.yaml"), "the file is named: {err}");
    let typo = f.dir.join("typo.yaml");
    std::fs::write(&typo, std::fs::read_to_string(&f.config).unwrap().replace("weight: 2", "wieght: 2")).unwrap();
    let (code, _, err) = lbctl(&f.socket, &["config", "reload", typo.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("listeners[0].backends[1]") && err.contains("wieght"), "{err}");
    let restart = f.dir.join("restart.yaml");
    std::fs::write(&restart, std::fs::read_to_string(&f.config).unwrap().replace("workers: 2", "workers: 1")).unwrap();
    assert_eq!(f.refused(&["config", "reload", restart.to_str().unwrap()]), "restart_required");
    // Nothing of that changed anything.
    assert_eq!(f.generation(), g);
    let b = backends(&f, "web");
    assert_eq!((b.len(), b[0]["weight"].as_u64(), b[1]["weight"].as_u64()), (2, Some(1), Some(2)));
    // Usage errors never reach lbd.
    let (code, _, err) = lbctl(&f.socket, &["backend", "add", "web", "10.0.0.11"]);
    assert_eq!(code, 2, "{err}");
    // No lbd at that socket.
    let (code, out, err) = lbctl(&f.dir.join("none.sock"), &["--json", "status"]);
    assert_eq!(code, 3, "{err}");
    assert!(out.contains("unreachable"), "{out}");
}

fn raw_client(socket: &Path) -> UnixStream {
    let s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn send(s: &mut UnixStream, id: u64, request: Request) -> ResponseFrame {
    write_frame(s, &RequestFrame { id, request }).unwrap();
    read_frame(s).unwrap().expect("an answer")
}

fn error_code(r: &ResponseFrame) -> String {
    serde_json::to_value(r).unwrap()["error"]["code"].as_str().unwrap_or("").to_owned()
}

fn hello(s: &mut UnixStream) {
    let r = send(s, 1, Request::Hello { protocol: PROTOCOL_VERSION, client: "test".into() });
    assert!(matches!(r.result, lbproto::Outcome::Ok(lbproto::Response::Hello { .. })), "{r:?}");
}

/// The server closed the connection: end of stream, or a reset (the
/// server closed with our bytes unread). A read timeout is not a close.
fn closed(s: &mut UnixStream) -> bool {
    match read_frame::<_, ResponseFrame>(s) {
        Ok(None) => true,
        Err(lbproto::FrameError::Io(e)) => e.kind() == std::io::ErrorKind::ConnectionReset,
        _ => false,
    }
}

/// `lbd_control_operations_total` for (operation, result).
fn control_ops(metrics: &str, op: &str, result: &str) -> Option<u64> {
    metrics
        .lines()
        .filter(|l| l.starts_with("lbd_control_operations_total{"))
        .find(|l| l.contains(&format!("operation=\"{op}\"")) && l.contains(&format!("result=\"{result}\"")))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
}

#[test]
fn protocol_misuse_never_stops_the_server() {
    let f = Fixture::start("ctl-proto");
    // Wrong protocol version: a clear error, then the connection closes.
    let mut s = raw_client(&f.socket);
    let r = send(&mut s, 7, Request::Hello { protocol: PROTOCOL_VERSION + 41, client: "future".into() });
    assert_eq!(r.id, 7);
    assert_eq!(error_code(&r), "protocol_mismatch");
    assert!(format!("{r:?}").contains(&format!("this lbd speaks {PROTOCOL_VERSION}")));
    assert!(closed(&mut s));
    // A request before the hello.
    let mut s = raw_client(&f.socket);
    assert_eq!(error_code(&send(&mut s, 1, Request::Status)), "hello_required");
    // Garbage bytes: "GET " read as a length is over the frame limit, so
    // always a too_large error frame naming the limit, then a close (the
    // documented answer to bytes that are not a frame).
    let mut s = raw_client(&f.socket);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let r: ResponseFrame = read_frame(&mut s).expect("an error frame, not a bare close").expect("an error frame");
    assert_eq!((r.id, error_code(&r).as_str()), (0, "too_large"), "{r:?}");
    assert!(format!("{r:?}").contains(&format!("{}-byte frame limit", lbproto::MAX_FRAME)), "{r:?}");
    assert!(closed(&mut s), "the connection closes after garbage");
    // A frame of valid length but not JSON, after a hello: bad_request and
    // the connection stays usable.
    let mut s = raw_client(&f.socket);
    hello(&mut s);
    s.write_all(&5u32.to_be_bytes()).unwrap();
    s.write_all(b"hello").unwrap();
    let r: ResponseFrame = read_frame(&mut s).unwrap().unwrap();
    assert_eq!(error_code(&r), "bad_request");
    let r = send(&mut s, 9, Request::Status);
    assert!(matches!(r.result, lbproto::Outcome::Ok(_)));
    // An unknown operation.
    s.write_all(&{
        let body = br#"{"id":3,"request":{"op":"format_disk"}}"#;
        let mut v = (body.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    })
    .unwrap();
    let r: ResponseFrame = read_frame(&mut s).unwrap().unwrap();
    assert_eq!((r.id, error_code(&r).as_str()), (3, "bad_request"));
    // An oversized frame.
    let mut big = raw_client(&f.socket);
    hello(&mut big);
    big.write_all(&(64u32 << 20).to_be_bytes()).unwrap();
    let r: ResponseFrame = read_frame(&mut big).unwrap().unwrap();
    assert_eq!(error_code(&r), "too_large");
    assert!(format!("{r:?}").contains("frame limit"), "{r:?}");
    assert!(closed(&mut big), "documented: closed after an over-limit frame");
    // A request of continued frames adding up to more than a request may
    // be: too_large naming the request limit, then a close.
    let mut big = raw_client(&f.socket);
    hello(&mut big);
    let mut frames = (lbproto::MAX_FRAME as u32 | lbproto::FRAME_CONTINUES).to_be_bytes().to_vec();
    frames.extend(std::iter::repeat_n(b' ', lbproto::MAX_FRAME));
    // The header of one more byte is the last thing sent: lbd refuses on
    // reading it, so nothing of ours is left unsent when it closes.
    frames.extend_from_slice(&1u32.to_be_bytes());
    big.write_all(&frames).unwrap();
    let r: ResponseFrame = read_frame(&mut big).unwrap().unwrap();
    assert_eq!(error_code(&r), "too_large", "{r:?}");
    assert!(format!("{r:?}").contains(&format!("{}-byte limit of one request", lbproto::MAX_REQUEST)), "{r:?}");
    assert!(closed(&mut big));
    // Others are still served.
    assert_eq!(f.json(&["status"])["status"]["workers"], 2);
    // A half-sent frame holds its own connection only.
    let mut half = raw_client(&f.socket);
    hello(&mut half);
    half.write_all(&[0, 0]).unwrap();
    let start = Instant::now();
    assert_eq!(f.json(&["status"])["status"]["workers"], 2);
    // A liveness bound, not a speed one: served before the half client's
    // 30 s idle timeout would have freed anything.
    assert!(start.elapsed() < Duration::from_secs(20), "other clients are served meanwhile");
    // Many clients at once.
    let threads: Vec<_> = (0..24)
        .map(|_| {
            let socket = f.socket.clone();
            std::thread::spawn(move || {
                let mut s = raw_client(&socket);
                hello(&mut s);
                for i in 0..5 {
                    let r = send(&mut s, 10 + i, Request::ListenerList);
                    assert!(matches!(r.result, lbproto::Outcome::Ok(_)), "{r:?}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(half);
    // Still healthy, and the misuse was counted: five messages that were
    // not requests (garbage, not JSON, unknown op, two over limits) and
    // two refused hellos.
    assert_eq!(f.json(&["status"])["status"]["config_generation"], 1);
    let metrics = scrape(&f.lbd.as_ref().unwrap().metrics_addr().expect("metrics on"));
    assert_eq!(control_ops(&metrics, "invalid", "error"), Some(5), "{metrics}");
    assert_eq!(control_ops(&metrics, "hello", "error"), Some(2), "{metrics}");
}

#[test]
fn sighup_reloads_the_file_and_a_bad_file_changes_nothing() {
    let mut f = Fixture::start("ctl-hup");
    let pid = f.lbd().pid().to_string();
    let text = std::fs::read_to_string(&f.config).unwrap();
    std::fs::write(&f.config, text.replace("weight: 2", "weight: 9")).unwrap();
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while backends(&f, "web")[1]["weight"] != 9 {
        assert!(Instant::now() < deadline, "SIGHUP did not reload:\n{}", f.lbd().log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(f.generation(), 2);
    std::fs::write(&f.config, "ports: [\n").unwrap();
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f.lbd().log_text().contains("reload refused") {
        assert!(Instant::now() < deadline, "no refusal logged:\n{}", f.lbd().log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(f.generation(), 2);
    assert_eq!(backends(&f, "web")[1]["weight"], 9);
}

#[test]
fn stale_socket_is_replaced_and_a_live_one_is_not_stolen() {
    let f = Fixture::start("ctl-sock");
    let meta = std::fs::metadata(&f.socket).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // A second lbd on the same socket refuses to start, before DPDK.
    let prefix = unique("lbdc");
    let second = f.dir.join("second.yaml");
    std::fs::write(&second, config_text(f.dir.path(), &prefix, &f.socket, LISTENERS)).unwrap();
    let out = Command::new(lbd_bin()).arg("-c").arg(&second).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.trim().ends_with("is served by another running lbd; stop it or set control.socket"), "{err}");
    assert_eq!(f.json(&["status"])["status"]["workers"], 2, "the first one is untouched");

    // A socket file nobody serves is replaced.
    let dir = TempDir::new("ctl-stale");
    let stale = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    std::fs::copy(f.dir.join("in.pcap"), dir.join("in.pcap")).unwrap();
    let cfg = dir.join("lbd.yaml");
    let prefix = unique("lbdc");
    std::fs::write(&cfg, config_text(dir.path(), &prefix, &stale, LISTENERS)).unwrap();
    let lbd = Lbd::start(&cfg, dir.path(), &prefix);
    assert_eq!(lbctl_json(&stale, &["status"])["status"]["workers"], 2);
    let (status, _) = lbd.stop();
    assert!(status.success());
    assert!(!stale.exists(), "lbd removes its socket at exit");
}

/// lbctl speaks the protocol through lbproto alone: no DPDK in it.
#[test]
fn lbctl_does_not_link_dpdk() {
    let out = Command::new("ldd").arg(lbctl_bin()).output().unwrap();
    let libs = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{libs}");
    assert!(!libs.contains("librte_"), "lbctl links DPDK:\n{libs}");
    let out = Command::new("ldd").arg(lbd_bin()).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("librte_eal"), "while lbd does");
}

/// More sessions than one frame holds: the answer is streamed in continued
/// frames and lbctl gets every one.
#[test]
fn thousands_of_sessions_are_listed_whole() {
    const FLOWS: u32 = 9000;
    let f = Fixture::start_with("ctl-many", FLOWS, |c| c);
    assert_eq!(f.json(&["sessions", "--count"])["count"], FLOWS);
    let all = f.json(&["sessions", "--limit", "10000"]);
    let sessions = all["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), FLOWS as usize);
    assert_eq!(all["truncated"], false);
    let clients: std::collections::BTreeSet<&str> = sessions.iter().map(|s| s["client"].as_str().unwrap()).collect();
    assert_eq!(clients.len(), FLOWS as usize, "each session once");
    let compact = serde_json::to_vec(&all).unwrap();
    assert!(compact.len() > lbproto::MAX_FRAME, "the answer ({} bytes) spans frames", compact.len());
    // The human table too, and a limit still cuts.
    let (code, out, err) = lbctl(&f.socket, &["sessions", "--limit", "10000"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("{FLOWS} session(s)\n")), "{}", &out[out.len().saturating_sub(200)..]);
    let some = f.json(&["sessions", "--limit", "7000"]);
    assert_eq!((some["sessions"].as_array().unwrap().len(), &some["truncated"]), (7000, &Value::Bool(true)));
    // The connection carries more requests after a streamed answer.
    let mut s = raw_client(&f.socket);
    hello(&mut s);
    let r = send(
        &mut s,
        2,
        Request::Sessions { filter: lbproto::SessionFilter::default(), limit: lbproto::MAX_SESSIONS_LISTED },
    );
    let lbproto::Outcome::Ok(lbproto::Response::Sessions { sessions, truncated: false }) = r.result else {
        panic!("{r:?}")
    };
    assert_eq!(sessions.len(), FLOWS as usize);
    assert!(matches!(send(&mut s, 3, Request::Status).result, lbproto::Outcome::Ok(_)));
}

/// A request larger than lbd accepts is refused by lbctl before sending,
/// with the limit named; lbd and its configuration are untouched.
#[test]
fn an_over_limit_config_reload_is_a_clear_error() {
    let f = Fixture::start("ctl-bigreload");
    let g = f.generation();
    let mut text = std::fs::read_to_string(&f.config).unwrap();
    text.push_str("# padding\n");
    while text.len() <= lbproto::MAX_REQUEST {
        text.push_str(&format!("# {}\n", "x".repeat(200)));
    }
    let big = f.dir.join("big.yaml");
    std::fs::write(&big, &text).unwrap();
    let (code, _, err) = lbctl(&f.socket, &["config", "reload", big.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("{}-byte limit", lbproto::MAX_REQUEST)) && err.contains("nothing was sent"), "{err}");
    assert_eq!(f.generation(), g);
    assert_eq!(f.json(&["status"])["status"]["workers"], 2);
}

/// A stream of empty frames that each claim the message continues carries
/// nothing and would keep a reader busy forever without reaching any size
/// limit: lbd refuses the first with `bad_request` and closes.
#[test]
fn empty_continued_frames_are_refused() {
    let f = Fixture::start("ctl-empty");
    let mut s = raw_client(&f.socket);
    hello(&mut s);
    let flood: Vec<u8> = std::iter::repeat_n(lbproto::FRAME_CONTINUES.to_be_bytes(), 4096).flatten().collect();
    // lbd may close before taking all of it; the answer is what matters.
    let _ = s.write_all(&flood);
    let r: ResponseFrame = read_frame(&mut s).unwrap().unwrap();
    assert_eq!(error_code(&r), "bad_request", "{r:?}");
    assert!(format!("{r:?}").contains("empty frame"), "{r:?}");
    assert!(closed(&mut s));
    assert_eq!(f.json(&["status"])["status"]["workers"], 2);
}

/// 32 clients at once are served; the 33rd is told `busy` (id 0) and
/// closed, the 32 keep working, and a slot frees when one leaves.
#[test]
fn the_client_limit_refuses_the_33rd_and_frees_slots() {
    const LIMIT: usize = 32;
    let f = Fixture::start("ctl-limit");
    let mut clients: Vec<UnixStream> = (0..LIMIT)
        .map(|_| {
            let mut s = raw_client(&f.socket);
            hello(&mut s);
            s
        })
        .collect();
    // The 33rd: refused without being asked anything.
    let mut extra = raw_client(&f.socket);
    let r: ResponseFrame = read_frame(&mut extra).unwrap().expect("a refusal");
    assert_eq!((r.id, error_code(&r).as_str()), (0, "busy"), "{r:?}");
    assert!(format!("{r:?}").contains(&format!("{LIMIT} clients are connected")), "{r:?}");
    assert!(closed(&mut extra));
    // lbctl says so clearly.
    let (code, _, err) = lbctl(&f.socket, &["status"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("busy") && err.contains(&format!("{LIMIT} clients")), "{err}");
    // The 32 are still served.
    for (i, s) in clients.iter_mut().enumerate() {
        let r = send(s, 2, Request::ListenerList);
        assert!(matches!(r.result, lbproto::Outcome::Ok(_)), "client {i}: {r:?}");
    }
    // One leaves: a new client gets its slot (once lbd has seen it go).
    drop(clients.pop());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut newcomer = loop {
        let mut s = raw_client(&f.socket);
        write_frame(
            &mut s,
            &RequestFrame { id: 1, request: Request::Hello { protocol: PROTOCOL_VERSION, client: "t".into() } },
        )
        .ok();
        match read_frame::<_, ResponseFrame>(&mut s) {
            Ok(Some(ResponseFrame { result: lbproto::Outcome::Ok(_), .. })) => break s,
            other => assert!(Instant::now() < deadline, "no slot freed: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(matches!(send(&mut newcomer, 2, Request::Status).result, lbproto::Outcome::Ok(_)));
    // Full again.
    let mut extra = raw_client(&f.socket);
    let r: ResponseFrame = read_frame(&mut extra).unwrap().expect("a refusal");
    assert_eq!(error_code(&r), "busy");
    drop(clients);
    drop(newcomer);
    // All gone: lbctl is served again.
    let deadline = Instant::now() + Duration::from_secs(20);
    while lbctl(&f.socket, &["status"]).0 != 0 {
        assert!(Instant::now() < deadline, "slots not freed after every client left");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A temporary group, removed on drop (also when the test fails).
struct TempGroup {
    name: String,
    gid: u32,
}

impl TempGroup {
    fn new() -> TempGroup {
        let name = unique("lbdg");
        run(Command::new("groupadd").arg(&name));
        // The guard first, so the group goes even if reading it back fails.
        let mut group = TempGroup { name, gid: 0 };
        let line = run(Command::new("getent").args(["group", &group.name]));
        group.gid = line.trim().split(':').nth(2).and_then(|g| g.parse().ok()).expect("gid");
        group
    }
}

impl Drop for TempGroup {
    fn drop(&mut self) {
        let _ = Command::new("groupdel").arg(&self.name).status();
    }
}

/// lbctl as user nobody (uid 65534), with `groups` as its supplementary
/// groups.
fn lbctl_as_nobody(groups: Option<u32>, socket: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534"]);
    match groups {
        Some(g) => cmd.arg(format!("--groups={g}")),
        None => cmd.arg("--clear-groups"),
    };
    let out = cmd.arg(lbctl_bin()).arg("--socket").arg(socket).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn control_group_opens_the_socket_to_its_members_only() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let group = TempGroup::new();
    let f = Fixture::start_with("ctl-group", 40, |c| {
        let socket_line = c.lines().find(|l| l.starts_with("control:")).unwrap().to_owned();
        let with_group = socket_line.replace('}', &format!(", group: {}}}", group.name));
        c.replace(&socket_line, &with_group)
    });
    let meta = std::fs::metadata(&f.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), group.gid);
    // A member of the group (not root) is served.
    let (code, out, err) = lbctl_as_nobody(Some(group.gid), &f.socket, &["--json", "status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"workers\": 2"), "{out}");
    // Not a member: refused by the socket's mode, said clearly.
    let (code, _, err) = lbctl_as_nobody(None, &f.socket, &["status"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("permission denied") && err.contains("control.group"), "{err}");
}

#[test]
fn a_non_root_peer_is_refused_without_control_group() {
    let f = Fixture::start("ctl-nobody");
    // Even with some supplementary group: only root may use a 0600 socket.
    for groups in [None, Some(0)] {
        let (code, out, err) = lbctl_as_nobody(groups, &f.socket, &["--json", "status"]);
        assert_eq!(code, 3, "{err}");
        assert!(err.starts_with("lbctl: cannot connect to lbd at ") && err.contains("permission denied"), "{err}");
        assert!(out.contains("\"unreachable\""), "{out}");
    }
    assert_eq!(f.json(&["status"])["status"]["workers"], 2);
}

/// A client trickling a request (a byte at a time, each well within the
/// 30 s idle timeout) is cut off once the request's 10 s deadline passes,
/// long before it could finish; others are served meanwhile.
#[test]
fn a_trickled_request_is_cut_off_at_its_deadline() {
    use std::io::Write;
    let f = Fixture::start("ctl-trickle");
    let mut slow = raw_client(&f.socket);
    hello(&mut slow);
    // A frame that claims 200 bytes; one more every 500 ms would take 100 s.
    slow.write_all(&200u32.to_be_bytes()).unwrap();
    let started = Instant::now();
    let mut sent = 0;
    let cut = loop {
        std::thread::sleep(Duration::from_millis(500));
        if slow.write_all(b" ").is_err() {
            break true;
        }
        sent += 1;
        // Others are served while it trickles.
        let mut other = raw_client(&f.socket);
        hello(&mut other);
        assert!(matches!(send(&mut other, 2, Request::Status).result, lbproto::Outcome::Ok(_)));
        if sent == 199 {
            break false;
        }
    };
    assert!(cut, "the trickling client was never cut off");
    println!("cut off after {sent} bytes, {:?}", started.elapsed());
}

/// Every change is in the log with who made it and how it ended; queries
/// are not.
#[test]
fn changes_leave_an_audit_line() {
    let f = Fixture::start("ctl-audit");
    let (code, _, err) = lbctl(&f.socket, &["backend", "drain", "web", "10.0.0.11:8080"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = lbctl(&f.socket, &["backend", "set-weight", "web", "10.0.0.99:1", "3"]);
    assert_eq!(code, 1);
    let (code, _, _) = lbctl(&f.socket, &["status"]);
    assert_eq!(code, 0);
    let log = f.lbd.as_ref().unwrap().log_text();
    let audit: Vec<&str> = log.lines().filter(|l| l.starts_with("lbd: audit: ")).collect();
    assert_eq!(audit.len(), 2, "{log}");
    assert!(
        audit[0].starts_with("lbd: audit: uid 0 pid ") && audit[0].contains(": backend_drain: ok, generation "),
        "{audit:?}"
    );
    assert!(audit[1].contains(": backend_set_weight: refused (not_found): "), "{audit:?}");
}

/// The socket's mode keeps other users out; if someone loosens it, the
/// peer's credentials still do.
#[test]
fn a_user_neither_root_nor_in_the_group_is_refused_even_through_a_loosened_socket() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::start("ctl-peercred");
    std::fs::set_permissions(&f.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let dir_mode = std::fs::metadata(f.dir.path()).unwrap().permissions().mode();
    std::fs::set_permissions(f.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, out, err) = lbctl_as_nobody(None, &f.socket, &["--json", "status"]);
    std::fs::set_permissions(f.dir.path(), std::fs::Permissions::from_mode(dir_mode)).unwrap();
    assert_ne!(code, 0, "{out}{err}");
    assert!(out.contains("permission_denied") && err.contains("only root and members"), "{out}{err}");
    // Root still is served.
    let (code, _, err) = lbctl(&f.socket, &["status"]);
    assert_eq!(code, 0, "{err}");
}
