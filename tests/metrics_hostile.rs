//! Hostile clients of the `/metrics` endpoint: none may take lbd down,
//! stall other scrapes or hold up shutdown. Each test runs its own lbd
//! (net_null sink, `--no-pci`, own file prefix and control socket, metrics
//! on a kernel-chosen loopback port) and ends with a normal scrape.

mod common;

use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Generous liveness deadline for a normal scrape: not a speed assertion.
const SCRAPE_DEADLINE: Duration = Duration::from_secs(10);
/// The header-read timeout README documents for the endpoint.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

struct Fixture {
    dir: TempDir,
    lbd: Lbd,
    socket: PathBuf,
    addr: SocketAddr,
}

impl Fixture {
    fn start(name: &str) -> Fixture {
        assert!(is_root());
        let dir = TempDir::new(name);
        let prefix = unique("lbdh");
        let socket = dir.join("lbd.sock");
        let config = dir.join("lbd.yaml");
        std::fs::write(
            &config,
            format!(
                "eal: [\"--no-pci\", \"--no-huge\", \"-m\", \"256\", \"--file-prefix\", \"{prefix}\", \"--no-telemetry\", \"--vdev\", \"net_null0,no-rx=1\"]\n\
                 lcores: {{workers: 1, idle_sleep: 100us}}\n\
                 ports:\n  - {{name: ext, device: net_null0, address: 10.0.0.1/24, exception: off}}\n\
                 control: {{socket: {s}}}\n\
                 metrics: {{listen: \"127.0.0.1:0\"}}\n",
                s = socket.display()
            ),
        )
        .unwrap();
        let lbd = Lbd::start(&config, dir.path(), &prefix);
        let addr = lbd.metrics_addr().expect("metrics address in the ready line").parse().unwrap();
        Fixture { dir, lbd, socket, addr }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).expect("connect to /metrics");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    /// lbd is still running (it has not exited or crashed).
    fn assert_alive(&mut self) {
        if let Some(st) = self.lbd.exited() {
            panic!("lbd exited with {st}:\n{}", self.lbd.log_text());
        }
    }

    /// A normal scrape succeeds before `deadline` (retrying refusals:
    /// over the connection cap lbd turns clients away).
    fn assert_scrape_within(&mut self, deadline: Duration) {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < deadline {
            match scrape(self.addr, "/metrics", deadline.saturating_sub(start.elapsed())) {
                Ok((200, body)) if body.contains("lbd_build_info{") => return self.assert_alive(),
                Ok((code, body)) => last = format!("status {code}: {body:.200}"),
                Err(e) => last = e,
            }
            self.assert_alive();
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("no successful scrape within {deadline:?} (last: {last}):\n{}", self.lbd.log_text());
    }
}

/// One `GET path` with `Connection: close`; (status, body).
fn scrape(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let timeout = timeout.max(Duration::from_millis(100));
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout)).unwrap();
    s.set_write_timeout(Some(timeout)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: lbd\r\nConnection: close\r\n\r\n").map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("no header end in {text:.200}"))?;
    let code = status_of(head).ok_or_else(|| format!("no status line in {head:.200}"))?;
    Ok((code, body.to_owned()))
}

fn status_of(head: &str) -> Option<u16> {
    head.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()
}

/// What the server did with a request it should refuse: an HTTP status,
/// or the connection closed (cleanly or by reset) without one.
fn response_or_close(s: &mut TcpStream) -> Option<u16> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if raw.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                panic!("lbd neither answered nor closed the connection in 20 s")
            }
            Err(_) => break, // reset: closed
        }
    }
    status_of(&String::from_utf8_lossy(&raw))
}

/// The reproduction, as user nobody: a request announcing a
/// 100 GB body. tiny_http allocated it and aborted lbd.
#[test]
fn huge_content_length_from_nobody_does_not_kill_lbd() {
    let mut f = Fixture::start("mh-huge");
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{}; printf 'GET /metrics HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 99999999999\\r\\n\\r\\n' >&3; timeout 5 cat <&3 >/dev/null; exit 0",
        f.addr.port()
    );
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "bash", "-c", &script])
        .output()
        .expect("run setpriv");
    assert!(out.status.success(), "the client as nobody: {}", String::from_utf8_lossy(&out.stderr));
    f.assert_alive();
    f.assert_scrape_within(SCRAPE_DEADLINE);
    // The same from a client that also sends a little of that body.
    let mut s = f.connect();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551615\r\n\r\nabc").unwrap();
    let _ = response_or_close(&mut s);
    f.assert_alive();
    f.assert_scrape_within(SCRAPE_DEADLINE);
}

/// A client that announces a body and never sends it blocked every later
/// scrape with tiny_http.
#[test]
fn withheld_body_does_not_block_other_scrapes() {
    let mut f = Fixture::start("mh-withheld");
    let mut held = f.connect();
    held.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n").unwrap();
    // Let lbd take it in before the scrapes.
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        f.assert_scrape_within(SCRAPE_DEADLINE);
    }
    drop(held);
    f.assert_alive();
}

/// SIGTERM completes while a client withholds its body (and another holds
/// an idle connection): exit 0, control socket and EAL runtime dir gone.
#[test]
fn sigterm_completes_while_a_client_withholds_its_body() {
    let mut f = Fixture::start("mh-sigterm");
    let mut held = f.connect();
    held.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n").unwrap();
    let _idle = f.connect();
    std::thread::sleep(Duration::from_millis(300));
    let run_dir = PathBuf::from(format!("/var/run/dpdk/{}", f.lbd.file_prefix));
    assert!(run_dir.exists(), "{} while running", run_dir.display());
    let status = Command::new("kill").arg("-TERM").arg(f.lbd.pid().to_string()).status().unwrap();
    assert!(status.success());
    let exit = f.lbd.wait_exit(Duration::from_secs(30));
    let exit = exit.unwrap_or_else(|| panic!("lbd did not exit within 30 s of SIGTERM:\n{}", f.lbd.log_text()));
    assert!(exit.success(), "lbd exited with {exit}:\n{}", f.lbd.log_text());
    assert!(!f.socket.exists(), "control socket {} left behind", f.socket.display());
    assert!(!run_dir.exists(), "{} left behind", run_dir.display());
    assert!(f.dir.join("stats.json").exists(), "final stats written");
    drop(held);
}

/// 1 MiB of header lines: an error status or a closed connection.
#[test]
fn oversized_headers_are_refused() {
    let mut f = Fixture::start("mh-headers");
    let mut s = f.connect();
    let writer = {
        let mut w = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = w.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n");
            let line = format!("X-Padding: {}\r\n", "a".repeat(1000));
            for _ in 0..(1 << 20) / line.len() {
                if w.write_all(line.as_bytes()).is_err() {
                    return; // lbd closed the connection: expected
                }
            }
            let _ = w.write_all(b"\r\n");
        })
    };
    let code = response_or_close(&mut s);
    assert!(code.is_none_or(|c| c >= 400), "1 MiB of headers answered with {code:?}");
    drop(s);
    writer.join().unwrap();
    f.assert_alive();
    f.assert_scrape_within(SCRAPE_DEADLINE);
}

/// More idle connections than the cap: a normal scrape still gets through
/// within the header timeout plus a margin, and lbd closes the idle ones.
#[test]
fn connection_flood_does_not_lock_out_scrapes() {
    let mut f = Fixture::start("mh-flood");
    let flood: Vec<TcpStream> = (0..200).map(|_| f.connect()).collect();
    f.assert_scrape_within(HEADER_TIMEOUT + Duration::from_secs(15));
    let start = Instant::now();
    for mut s in flood {
        s.set_read_timeout(Some(Duration::from_secs(30).saturating_sub(start.elapsed()).max(Duration::from_millis(1))))
            .unwrap();
        // Whatever lbd says first (a 503 past the cap, or nothing), the
        // connection must then be closed: read to the end.
        let mut buf = [0u8; 256];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                    panic!("an idle connection was still open after {:?}", start.elapsed())
                }
                Err(_) => break,
            }
        }
    }
    f.assert_alive();
    f.assert_scrape_within(SCRAPE_DEADLINE);
}

/// A client that pipelines requests and never reads the answers must not
/// hold up other scrapes (tiny_http wrote every answer on its one thread).
#[test]
fn slow_reader_does_not_block_other_scrapes() {
    let mut f = Fixture::start("mh-slowread");
    let mut slow = f.connect();
    let requests = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(5000);
    slow.write_all(requests.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        f.assert_scrape_within(SCRAPE_DEADLINE);
    }
    drop(slow);
    f.assert_alive();
}

/// Bytes that are not HTTP: refused or closed, lbd unaffected.
#[test]
fn garbage_bytes_are_refused() {
    let mut f = Fixture::start("mh-garbage");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..65536)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let inputs: [&[u8]; 5] = [
        &noise,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 TLS hello\r\n\r\n",
        b"GET\r\n\r\n",
        b"\0\0\0\0\r\n\r\n",
        b"GET /metrics HTTP/9.9\r\nHost: x\r\nContent-Length: -1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ];
    for input in inputs {
        let mut s = f.connect();
        let _ = s.write_all(input);
        let code = response_or_close(&mut s);
        assert!(code.is_none_or(|c| c >= 400), "garbage answered with {code:?}");
        f.assert_alive();
    }
    f.assert_scrape_within(SCRAPE_DEADLINE);
}

/// The endpoint's ordinary answers: `/metrics` (with a query string), `/`
/// and 404, with the Prometheus text content type.
#[test]
fn ordinary_answers() {
    let mut f = Fixture::start("mh-plain");
    let (code, body) = scrape(f.addr, "/", SCRAPE_DEADLINE).unwrap();
    assert_eq!((code, body.as_str()), (200, "lbd: metrics at /metrics\n"));
    let (code, body) = scrape(f.addr, "/nothing", SCRAPE_DEADLINE).unwrap();
    assert_eq!((code, body.as_str()), (404, "not found\n"));
    let (code, body) = scrape(f.addr, "/metrics?name[]=x", SCRAPE_DEADLINE).unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("# TYPE lbd_drops_total counter\n"), "{body:.300}");
    let mut s = f.connect();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let head = raw.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(head.contains("\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8"), "{head}");
    f.assert_alive();
}

/// `metrics.allow` turns away other client addresses before reading a
/// byte (403); `metrics.bearer_token_file` answers 401 to a scrape without
/// the token, wrong or right-but-padded, and 200 with it.
#[test]
fn allow_list_and_bearer_token_guard_the_endpoint() {
    assert!(is_root());
    let dir = TempDir::new("metrics-access");
    let token_file = dir.join("token");
    std::fs::write(&token_file, "s3cret-Token\n").unwrap();
    let run = |extra: &str| -> (Lbd, SocketAddr) {
        let prefix = unique("lbdh");
        let config = dir.join("lbd.yaml");
        std::fs::write(
            &config,
            format!(
                "eal: [\"--no-pci\", \"--no-huge\", \"-m\", \"256\", \"--file-prefix\", \"{prefix}\", \"--no-telemetry\", \"--vdev\", \"net_null0,no-rx=1\"]\n\
                 ports:\n  - {{name: ext, device: net_null0, address: 10.0.0.1/24, exception: off}}\n\
                 control: {{socket: {s}}}\n\
                 metrics: {{listen: \"127.0.0.1:0\"{extra}}}\n",
                s = dir.join("lbd.sock").display()
            ),
        )
        .unwrap();
        let lbd = Lbd::start(&config, dir.path(), &prefix);
        let addr = lbd.metrics_addr().unwrap().parse().unwrap();
        (lbd, addr)
    };
    let t = Duration::from_secs(20);
    // Only a network we are not in: told so before sending anything.
    let (lbd, addr) = run(", allow: [\"192.0.2.0/24\", \"2001:db8::/32\"]");
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(t)).unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    assert!(text.starts_with("HTTP/1.1 403 "), "{text:?}");
    drop(lbd);
    // Loopback allowed.
    let (lbd, addr) = run(", allow: [\"127.0.0.1\"]");
    assert_eq!(scrape(addr, "/metrics", t).map(|(c, _)| c), Ok(200));
    drop(lbd);
    // One loopback address allowed, another refused and counted: curl
    // scrapes from the allowed source address after two refusals.
    let (lbd, addr) = run(", allow: [\"127.0.0.2\"]");
    for _ in 0..2 {
        // Refused before anything is read: read without sending.
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(t)).unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        assert!(text.starts_with("HTTP/1.1 403 "), "{text:?}");
    }
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "--interface", "127.0.0.2"])
        .arg(format!("http://{addr}/metrics"))
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(body.contains("\nlbd_metrics_refused_total{reason=\"address\"} 2\n"), "{body}");
    drop(lbd);
    // A token.
    let (lbd, addr) = run(&format!(", bearer_token_file: {}", token_file.display()));
    assert_eq!(scrape(addr, "/metrics", t).map(|(c, _)| c), Ok(401));
    let with = |header: &str| -> u16 {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(t)).unwrap();
        s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{header}Connection: close\r\n\r\n").as_bytes())
            .unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
    };
    assert_eq!(with("Authorization: Bearer wrong\r\n"), 401);
    assert_eq!(with("Authorization: Bearer s3cret-Token-and-more\r\n"), 401);
    assert_eq!(with("Authorization: Basic czNjcmV0LVRva2Vu\r\n"), 401);
    assert_eq!(with("Authorization: Bearer s3cret-Token\r\n"), 200);
    // The four 401s above (the bare scrape and three wrong headers),
    // counted (a scrape with the token reads them).
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(t)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret-Token\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    assert!(text.contains("\nlbd_metrics_refused_total{reason=\"token\"} 4\n"), "{text}");
    assert!(text.contains("\nlbd_metrics_refused_total{reason=\"address\"} 0\n"), "{text}");
    drop(lbd);
}
