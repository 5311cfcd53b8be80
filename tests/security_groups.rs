//! Security groups end to end: lbd in the namespace testbed, a client with
//! two addresses, one denied and one allowed; per-rule counters through
//! lbctl and Prometheus; a rule added with lbctl denies new flows at once
//! and leaves an established connection alone.

mod common;

use common::topology::Topology;
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GROUPS: &str = "
security_groups:
  edge:
    rules:
      - {action: deny, source: 10.0.0.3, description: blocked client}
      - {action: allow, protocol: tcp, sources: [10.0.0.0/24], ports: 80}
    default: deny
security:
  default_group: edge
";

/// `curl` from `source` in the client namespace: the body, or `None` when
/// no answer came within `seconds`.
fn get(t: &Topology, source: &str, seconds: u32) -> Option<String> {
    let max = seconds.to_string();
    let out = t.client(&["curl", "-sS", "--interface", source, "--max-time", &max, "http://10.0.0.100/"]);
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The group's rules as `lbctl security-group show` reports them.
fn show(socket: &std::path::Path) -> Value {
    let v = lbctl_json(socket, &["security-group", "show", "edge"]);
    v["group"].clone()
}

fn hits(group: &Value, rule: usize) -> u64 {
    group["rules"][rule]["hits"].as_u64().unwrap()
}

/// Waits (generous deadline) until rule `rule` has at least `n` hits.
fn wait_hits(socket: &std::path::Path, rule: usize, n: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let g = show(socket);
        if hits(&g, rule) >= n || Instant::now() > deadline {
            return g;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A keep-alive HTTP client in the client namespace: one request per line
/// on its stdin, one `ok <backend>` or `fail` line per request out.
const KEEPALIVE: &str = r#"
import socket, sys
s = socket.create_connection(("10.0.0.100", 80), timeout=10)
f = s.makefile("rb")
for _ in sys.stdin:
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")
        status = f.readline()
        n = 0
        while True:
            h = f.readline().strip()
            if not h:
                break
            if h.lower().startswith(b"content-length:"):
                n = int(h.split(b":")[1])
        body = f.read(n)
        print("ok" if status.startswith(b"HTTP/1.1 200") else "fail", body.split()[0].decode(), flush=True)
    except Exception as e:
        print("fail", e, flush=True)
"#;

#[test]
fn netns_security_group_admits_denies_counts_and_changes_for_new_flows_only() {
    assert!(is_root(), "the testbed needs root (namespaces, DPDK)");
    let t = Topology::up();
    let dir = TempDir::new("netns-sg");
    let mut lbd = t.start_lbd_with(1, &dir, |c| format!("{c}{GROUPS}"));
    let socket = t.socket();
    t.client_ok(&["ip", "addr", "add", "10.0.0.3/24", "dev", "eth0"]);

    // Allowed source: answered. Denied source: no connection.
    let body = get(&t, "10.0.0.2", 10).expect("10.0.0.2 is allowed");
    assert!(body.starts_with("backend=be"), "{body}");
    assert_eq!(get(&t, "10.0.0.3", 3), None, "10.0.0.3 is denied");
    let g = wait_hits(&socket, 0, 1);
    assert!(hits(&g, 0) >= 1, "the deny rule decided the SYN(s) of 10.0.0.3: {g}");
    assert!(hits(&g, 1) >= 1, "the allow rule decided 10.0.0.2's connection: {g}");
    assert_eq!(g["rules"][0]["description"], "blocked client");
    assert_eq!(g["listeners"], serde_json::json!(["web", "echo", "iperf"]));
    let (code, list, _) = lbctl(&socket, &["security-group", "list"]);
    assert!(code == 0 && list.contains("edge") && list.contains("web, echo, iperf"), "{list}");
    let (code, table, _) = lbctl(&socket, &["security-group", "show", "edge"]);
    assert!(code == 0 && table.contains("blocked client") && table.contains("10.0.0.0/24"), "{table}");
    let stats = lbd.stats_now();
    assert!(stats["drops"]["security_group_denied"].as_u64().unwrap() >= 1, "{}", stats["drops"]);

    // A connection from 10.0.0.2 that stays open across the change.
    let mut client = Command::new("ip")
        .args(["netns", "exec", &t.ns("client"), "/usr/bin/python3", "-c", KEEPALIVE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to = client.stdin.take().unwrap();
    let mut from = BufReader::new(client.stdout.take().unwrap());
    let mut ask = || {
        writeln!(to, "go").unwrap();
        let mut line = String::new();
        from.read_line(&mut line).unwrap();
        line
    };
    let first = ask();
    assert!(first.starts_with("ok backend="), "{first}");
    let allowed_before = hits(&show(&socket), 1);

    // Deny 10.0.0.2 in front of everything.
    let v =
        lbctl_json(&socket, &["security-group", "add-rule", "edge", "deny", "--source", "10.0.0.2", "--position", "0"]);
    assert!(v["change"]["generation"].as_u64().unwrap() >= 2, "{v}");

    // The established connection goes on, to the same backend.
    let second = ask();
    assert_eq!(second, first, "the open connection is served as before");
    // A new connection from the same client is denied.
    assert_eq!(get(&t, "10.0.0.2", 3), None, "new flows of 10.0.0.2 are denied now");
    let g = wait_hits(&socket, 0, 1);
    assert!(hits(&g, 0) >= 1, "the new rule decided: {g}");
    assert_eq!(g["rules"][0]["sources"], serde_json::json!(["10.0.0.2/32"]));
    // The old rules moved down one and kept their counts.
    assert_eq!(hits(&g, 2), allowed_before, "{g}");
    assert!(hits(&g, 1) >= 1, "{g}");
    drop(to);
    let _ = client.wait();

    // Prometheus has the same counts.
    let metrics = scrape(&lbd.metrics_addr().expect("metrics on"));
    let line =
        format!("lbd_security_group_rule_hits_total{{group=\"edge\",rule=\"2\",action=\"allow\"}} {allowed_before}");
    assert!(metrics.contains(&line), "no `{line}` in:\n{metrics}");
    assert!(metrics.contains("lbd_security_group_denied_total{group=\"edge\"}"), "{metrics}");

    // Edits that do not validate change nothing.
    let gen = lbctl_json(&socket, &["status"])["status"]["config_generation"].clone();
    assert_eq!(
        lbctl_refused(&socket, &["security-group", "add-rule", "edge", "deny", "--source", "10.0.0.1/8"]),
        "invalid"
    );
    assert_eq!(lbctl_refused(&socket, &["security-group", "del-rule", "edge", "9"]), "not_found");
    assert_eq!(lbctl_refused(&socket, &["security-group", "show", "nope"]), "not_found");
    assert_eq!(lbctl_json(&socket, &["status"])["status"]["config_generation"], gen);

    // Removing the new rule admits 10.0.0.2 again.
    lbctl_json(&socket, &["security-group", "del-rule", "edge", "0"]);
    assert!(get(&t, "10.0.0.2", 10).is_some(), "10.0.0.2 is allowed again");

    // Whole groups: set-default creates one, delete removes it; a group a
    // listener uses cannot be deleted, and a refused delete changes nothing.
    lbctl_json(&socket, &["security-group", "set-default", "spare", "allow"]);
    let groups = lbctl_json(&socket, &["security-group", "list"]);
    assert!(groups.to_string().contains("\"spare\""), "{groups}");
    let (code, out, err) = lbctl(&socket, &["security-group", "delete", "edge"]);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("in use by security.default_group"), "{err}");
    assert!(get(&t, "10.0.0.2", 10).is_some(), "edge still applies");
    lbctl_json(&socket, &["security-group", "delete", "spare"]);
    let groups = lbctl_json(&socket, &["security-group", "list"]);
    assert!(!groups.to_string().contains("\"spare\""), "{groups}");
    assert_eq!(lbctl_refused(&socket, &["security-group", "delete", "spare"]), "not_found");
    let (status, _) = lbd.stop();
    assert!(status.success());
}
