//! The probes against local servers on 127.0.0.1, and the runner's state
//! machine end to end. No assertion depends on timing: each probe either
//! passes or fails for a reason the server decides.

use lbcore::health::{BackendKey, CheckKind, CheckTarget, Health, HealthCheck};
use lbhealth::{probe, Outcome, ProbeResult, Runner};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;

fn target(kind: CheckKind, port: u16, edit: impl FnOnce(&mut HealthCheck)) -> CheckTarget {
    let mut check = HealthCheck::new(kind);
    // Generous: a loaded machine must not turn a pass into a timeout.
    check.interval = Duration::from_secs(5);
    check.timeout = Duration::from_secs(5);
    edit(&mut check);
    CheckTarget { addr: LOCAL, port, check }
}

fn run(t: &CheckTarget) -> ProbeResult {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(probe(t))
}

/// A port nothing listens on (bound, then closed).
fn closed_tcp_port() -> u16 {
    TcpListener::bind((LOCAL, 0)).unwrap().local_addr().unwrap().port()
}

fn closed_udp_port() -> u16 {
    UdpSocket::bind((LOCAL, 0)).unwrap().local_addr().unwrap().port()
}

#[test]
fn tcp_passes_on_a_listening_port_and_fails_on_a_closed_one() {
    let l = TcpListener::bind((LOCAL, 0)).unwrap();
    let r = run(&target(CheckKind::Tcp, l.local_addr().unwrap().port(), |_| {}));
    assert!(r.ok, "{r:?}");
    let r = run(&target(CheckKind::Tcp, closed_tcp_port(), |_| {}));
    assert!(!r.ok);
    assert!(r.error.contains("connect"), "{r:?}");
}

/// A UDP server answering each datagram with `prefix` + the datagram.
fn udp_echo(prefix: &'static [u8]) -> u16 {
    let s = UdpSocket::bind((LOCAL, 0)).unwrap();
    let port = s.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let mut reply = prefix.to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&reply, from);
        }
    });
    port
}

#[test]
fn udp_passes_on_a_reply_and_checks_its_content() {
    let port = udp_echo(b"pong:");
    let r = run(&target(CheckKind::Udp, port, |c| c.payload = b"ping".to_vec()));
    assert!(r.ok, "{r:?}");
    let r = run(&target(CheckKind::Udp, port, |c| c.expect = Some(b"pong:ping".to_vec())));
    assert!(!r.ok, "default payload, so the reply lacks pong:ping: {r:?}");
    assert!(r.error.contains("lacks `pong:ping`"), "{r:?}");
    let r = run(&target(CheckKind::Udp, port, |c| {
        c.payload = b"ping".to_vec();
        c.expect = Some(b"pong:ping".to_vec());
    }));
    assert!(r.ok, "{r:?}");
}

#[test]
fn udp_port_unreachable_is_down_without_waiting_for_the_timeout() {
    let port = closed_udp_port();
    let r = run(&target(CheckKind::Udp, port, |c| c.timeout = Duration::from_secs(30)));
    assert!(!r.ok);
    // The ICMP error ended it, not the 30 s timeout.
    assert_eq!(r.error, "port unreachable (ICMP)", "{r:?}");
}

#[test]
fn udp_silence_is_a_timeout() {
    let s = UdpSocket::bind((LOCAL, 0)).unwrap();
    let port = s.local_addr().unwrap().port();
    let r = run(&target(CheckKind::Udp, port, |c| c.timeout = Duration::from_millis(300)));
    assert!(!r.ok);
    assert!(r.error.contains("no answer within"), "{r:?}");
    drop(s);
}

/// An HTTP server answering every connection with `status` and `body`,
/// and the request lines it saw.
fn http_server(status: u16, body: &'static str) -> (u16, mpsc::Receiver<String>) {
    let l = TcpListener::bind((LOCAL, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let _ = tx.send(String::from_utf8_lossy(&req).into_owned());
            let _ =
                write!(s, "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
    });
    (port, rx)
}

#[test]
fn http_checks_status_and_body() {
    let (port, seen) = http_server(200, "all systems go");
    let r = run(&target(CheckKind::Http, port, |c| {
        c.path = "/healthz".into();
        c.host = Some("svc.example".into());
    }));
    assert!(r.ok, "{r:?}");
    let req = seen.recv().unwrap();
    assert!(req.starts_with("GET /healthz HTTP/1.1\r\n"), "{req}");
    assert!(req.to_ascii_lowercase().contains("host: svc.example\r\n"), "{req}");
    let r = run(&target(CheckKind::Http, port, |c| c.body = Some("systems go".into())));
    assert!(r.ok, "{r:?}");
    let r = run(&target(CheckKind::Http, port, |c| c.body = Some("degraded".into())));
    assert!(!r.ok);
    assert!(r.error.contains("lacks `degraded`"), "{r:?}");
    let r = run(&target(CheckKind::Http, port, |c| c.status = vec![(204, 204)]));
    assert!(!r.ok);
    assert_eq!(r.error, "HTTP status 200");

    let (port, _seen) = http_server(500, "oops");
    let r = run(&target(CheckKind::Http, port, |_| {}));
    assert!(!r.ok);
    assert_eq!(r.error, "HTTP status 500");
    let r = run(&target(CheckKind::Http, port, |c| c.status = vec![(500, 599)]));
    assert!(r.ok, "{r:?}");
    let r = run(&target(CheckKind::Http, closed_tcp_port(), |_| {}));
    assert!(!r.ok && r.error.contains("connect"), "{r:?}");
}

#[test]
fn a_server_that_accepts_and_never_answers_times_out() {
    let l = TcpListener::bind((LOCAL, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    // The kernel completes the handshake from the backlog; nobody reads.
    let r = run(&target(CheckKind::Http, port, |c| c.timeout = Duration::from_millis(300)));
    assert!(!r.ok);
    assert!(r.error.contains("no answer within"), "{r:?}");
    drop(l);
}

fn key(port: u16) -> BackendKey {
    BackendKey { listener: "web".into(), addr: LOCAL, port }
}

fn next_outcome(rx: &mpsc::Receiver<Outcome>, what: &str, want: impl Fn(&Outcome) -> bool) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(o) if want(&o) => return o,
            Ok(_) => {}
            Err(_) => panic!("no outcome {what} within 30 s"),
        }
    }
}

#[test]
fn runner_applies_rise_and_fall_and_follows_target_changes() {
    let l = TcpListener::bind((LOCAL, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let t = target(CheckKind::Tcp, port, |c| {
        c.interval = Duration::from_millis(100);
        c.timeout = Duration::from_millis(100);
        c.rise = 2;
        c.fall = 2;
    });
    let (tx, rx) = mpsc::channel();
    let runner = Runner::spawn("health-test", vec![(t.clone(), vec![key(port)])], move |o| {
        let _ = tx.send(o);
    })
    .unwrap();
    let first = next_outcome(&rx, "first", |_| true);
    assert!(first.result.ok && first.state == Health::Up && !first.changed, "{first:?}");
    assert_eq!(*first.backends, vec![key(port)]);
    drop(l);
    // Down after `fall` failures: the first failure does not change it.
    let f1 = next_outcome(&rx, "failure", |o| !o.result.ok);
    assert!(!f1.changed && f1.state == Health::Up, "{f1:?}");
    let down = next_outcome(&rx, "down", |o| o.changed);
    assert_eq!(down.state, Health::Down);
    let again = TcpListener::bind((LOCAL, port)).expect("rebind the same port");
    let up = next_outcome(&rx, "up", |o| o.changed);
    assert_eq!(up.state, Health::Up);
    // Same target, other backends: the state stays, the users change.
    runner.set_targets(vec![(t.clone(), vec![key(port), key(1)])]);
    let o = next_outcome(&rx, "new users", |o| o.backends.len() == 2);
    assert_eq!(o.state, Health::Up);
    // The check's parameters change (a reload) while the backend fails:
    // the new check carries the old verdict, so one failure is still not
    // enough (it would be for a fresh check, whose first result decides).
    drop(again);
    let mut t2 = t.clone();
    t2.check.timeout = Duration::from_millis(90);
    runner.set_targets(vec![(t2.clone(), vec![key(port), key(1)])]);
    let f1 = next_outcome(&rx, "failure of the changed check", |o| o.target == t2 && !o.result.ok);
    assert!(!f1.changed && f1.state == Health::Up, "the reload skipped fall: {f1:?}");
    let down = next_outcome(&rx, "down under the changed check", |o| o.target == t2 && o.changed);
    assert_eq!(down.state, Health::Down);
    // No targets: no more outcomes after the ones in flight.
    runner.set_targets(Vec::new());
    drop(runner);
    while rx.try_recv().is_ok() {}
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "the runner is stopped");
}
