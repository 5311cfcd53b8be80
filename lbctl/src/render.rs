//! Human-readable output.

use crate::client::Client;
use crate::{emit, Failure};
use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{Cell, CellAlignment, Table};
use lbproto::stats::Report;
use lbproto::{Request, Response};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Appends one formatted line to a String (writing to a String cannot
/// fail).
macro_rules! line {
    ($s:expr) => {{ $s.push('\n'); }};
    ($s:expr, $($arg:tt)*) => {{ let _ = writeln!($s, $($arg)*); }};
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY);
    t.set_header(header.to_vec());
    t
}

fn right(v: impl ToString) -> Cell {
    Cell::new(v.to_string()).set_alignment(CellAlignment::Right)
}

/// 1234567 -> "1.23M".
pub(crate) fn si(v: f64) -> String {
    let (d, s) = match v.abs() {
        x if x >= 1e12 => (1e12, "T"),
        x if x >= 1e9 => (1e9, "G"),
        x if x >= 1e6 => (1e6, "M"),
        x if x >= 1e3 => (1e3, "k"),
        _ => (1.0, ""),
    };
    if s.is_empty() {
        format!("{v:.0}")
    } else {
        format!("{:.2}{s}", v / d)
    }
}

/// 75.0 -> "1m15s"; "-" for what is not a duration.
pub(crate) fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "-".into();
    }
    let s = secs as u64;
    match s {
        0..=59 => format!("{secs:.1}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// The answer as text for people.
pub fn human(r: &crate::Answer) -> String {
    let mut out = String::new();
    match r {
        Response::Hello { server, .. } => line!(out, "{server}"),
        Response::Status { status: s } => {
            line!(out, "lbd {}  DPDK {}", s.version, s.dpdk_version);
            line!(
                out,
                "uptime {}  workers {} (lcores {:?})  config generation {} ({})",
                duration(s.uptime_seconds),
                s.workers,
                s.lcores,
                s.config_generation,
                s.config_path
            );
            line!(
                out,
                "{} listeners, {} backends, {} sessions, {} packets dropped",
                s.listeners,
                s.backends,
                s.sessions_active,
                s.drops_total
            );
            if !s.listeners_all_down.is_empty() {
                line!(out, "every backend down: {}", s.listeners_all_down.join(", "));
            }
            let mut t = table(&[
                "port",
                "device",
                "driver",
                "link",
                "address",
                "mac",
                "rxq",
                "rss",
                "rx pkts",
                "tx pkts",
                "dev drops",
                "kernel",
            ]);
            for p in &s.ports {
                t.add_row(vec![
                    Cell::new(&p.name),
                    Cell::new(&p.device),
                    Cell::new(&p.driver),
                    Cell::new(if p.link_up { "up" } else { "down" }),
                    Cell::new(&p.address),
                    Cell::new(&p.mac),
                    right(p.rx_queues),
                    Cell::new(&p.rss),
                    right(p.rx_packets),
                    right(p.tx_packets),
                    right(p.device_drops),
                    Cell::new(p.exception_interface.as_deref().unwrap_or("-")),
                ]);
            }
            line!(out, "{t}");
        }
        Response::Listeners { listeners } => {
            let mut t = table(&[
                "listener",
                "vip",
                "proto",
                "port",
                "scheduler",
                "backends",
                "sessions",
                "created",
                "pkts in",
                "pkts out",
                "check",
                "all down",
            ]);
            for l in listeners {
                t.add_row(vec![
                    Cell::new(&l.name),
                    Cell::new(&l.vip),
                    Cell::new(&l.protocol),
                    right(l.port),
                    Cell::new(&l.scheduler),
                    right(l.backends),
                    right(l.sessions_active),
                    right(l.sessions_created),
                    right(l.packets_in),
                    right(l.packets_out),
                    Cell::new(l.health_check.as_deref().unwrap_or("-")),
                    Cell::new(if l.all_down {
                        format!("YES ({})", l.all_down_policy)
                    } else {
                        format!("no ({})", l.all_down_policy)
                    }),
                ]);
            }
            line!(out, "{t}");
        }
        Response::Backends { backends } => {
            let mut t = table(&[
                "listener",
                "backend",
                "weight",
                "state",
                "share",
                "sessions",
                "created",
                "pkts in",
                "pkts out",
                "health",
                "source",
                "since",
                "checked",
                "last error",
            ]);
            let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
            for b in backends {
                *totals.entry(&b.listener).or_default() += b.share;
            }
            for b in backends {
                let total = totals.get(b.listener.as_str()).copied().unwrap_or(0);
                let share = if total == 0 { 0.0 } else { 100.0 * b.share as f64 / total as f64 };
                t.add_row(vec![
                    Cell::new(&b.listener),
                    Cell::new(format!("{}:{}", b.address, b.port)),
                    // The weight it is scheduled by, when health or slow
                    // start make it differ (drain shows in the state).
                    right(if b.scheduled_weight == b.weight || b.drained {
                        b.weight.to_string()
                    } else {
                        format!("{} (now {})", b.weight, b.scheduled_weight)
                    }),
                    Cell::new(if b.drained { "drained" } else { "active" }),
                    right(format!("{share:.1}%")),
                    right(b.sessions_active),
                    right(b.sessions_created),
                    right(b.packets_in),
                    right(b.packets_out),
                    Cell::new(if b.serving || b.health == "up" {
                        b.health.clone()
                    } else {
                        format!("{} (out)", b.health)
                    }),
                    Cell::new(&b.health_source),
                    right(format!("{} ago", duration(b.health_since_ms as f64 / 1000.0))),
                    right(
                        b.last_check_ms
                            .map_or_else(|| "-".into(), |ms| format!("{} ago", duration(ms as f64 / 1000.0))),
                    ),
                    Cell::new(b.last_error.as_deref().unwrap_or("")),
                ]);
            }
            line!(out, "{t}");
            for b in backends {
                for r in &b.reports {
                    line!(
                        out,
                        "{} {}:{}: checker {} says {} ({}), {} ago{}",
                        b.listener,
                        b.address,
                        b.port,
                        r.checker,
                        r.health,
                        r.reason,
                        duration(r.age_ms as f64 / 1000.0),
                        if r.stale { ", STALE (expired, not counted)" } else { "" }
                    );
                }
            }
        }
        Response::Changed { change } => {
            line!(
                out,
                "{} (generation {}; built in {} us, running on every worker {} us later)",
                change.summary,
                change.generation,
                change.build_us,
                change.propagation_us
            );
        }
        Response::Sessions { sessions, truncated } => {
            let mut t = table(&["worker", "proto", "client", "vip", "backend", "listener", "state", "idle"]);
            for s in sessions {
                t.add_row(vec![
                    right(s.worker),
                    Cell::new(&s.protocol),
                    Cell::new(&s.client),
                    Cell::new(&s.vip),
                    Cell::new(&s.backend),
                    Cell::new(&s.listener),
                    Cell::new(&s.state),
                    right(duration(s.idle_ms as f64 / 1000.0)),
                ]);
            }
            line!(out, "{t}");
            line!(
                out,
                "{} session(s){}",
                sessions.len(),
                if *truncated { " (limit reached; --limit shows more)" } else { "" }
            );
        }
        Response::SessionCount { count } => line!(out, "{count}"),
        Response::Stats { stats } => out.push_str(&print_stats(stats, None)),
        Response::Neighbors { neighbors } => {
            let mut t = table(&["worker", "port", "address", "mac", "state", "age"]);
            for n in neighbors {
                t.add_row(vec![
                    right(n.worker),
                    Cell::new(&n.port),
                    Cell::new(&n.address),
                    Cell::new(&n.mac),
                    Cell::new(&n.state),
                    right(if n.state == "static" { "-".into() } else { duration(n.age_ms as f64 / 1000.0) }),
                ]);
            }
            line!(out, "{t}");
        }
        Response::Config { path, generation, yaml } => {
            line!(out, "# running configuration, generation {generation} (started from {path})");
            out.push_str(yaml);
        }
        Response::SecurityGroups { groups } => out.push_str(&security_groups(groups)),
        Response::SecurityGroup { group } => out.push_str(&security_group(group)),
    }
    out
}

/// Prints a counters document; with `prev` (and the seconds between), also
/// rates.
fn print_stats(s: &Report, prev: Option<(&Report, f64)>) -> String {
    let mut out = String::new();
    let rate = |now: u64, then: Option<u64>| -> String {
        match (prev, then) {
            (Some((_, dt)), Some(t)) if dt > 0.0 => si(now.saturating_sub(t) as f64 / dt),
            _ => "-".into(),
        }
    };
    line!(
        out,
        "uptime {}  generation {}  sessions {}  drops {}  per-packet time p50 {} ns p99 {} ns",
        duration(s.uptime_seconds),
        s.config_generation,
        s.sessions_active,
        s.drops_total,
        s.latency.p50_ns,
        s.latency.p99_ns
    );
    let mut t = table(&["port", "rx pkts", "rx pps", "rx bps", "tx pkts", "tx pps", "tx bps"]);
    for (i, p) in s.ports.iter().enumerate() {
        let pp = prev.and_then(|(r, _)| r.ports.get(i));
        t.add_row(vec![
            Cell::new(&p.name),
            right(p.rx_packets),
            right(rate(p.rx_packets, pp.map(|x| x.rx_packets))),
            right(rate(p.rx_bytes * 8, pp.map(|x| x.rx_bytes * 8))),
            right(p.tx_packets),
            right(rate(p.tx_packets, pp.map(|x| x.tx_packets))),
            right(rate(p.tx_bytes * 8, pp.map(|x| x.tx_bytes * 8))),
        ]);
    }
    line!(out, "{t}");
    let mut t = table(&["worker", "polls", "busy polls", "idle sleeps", "asleep", "wake-ups"]);
    for w in &s.workers {
        let ev = |e: &str| w.events.get(e).copied().unwrap_or(0);
        t.add_row(vec![
            Cell::new(w.worker),
            right(ev("polls")),
            right(ev("busy_polls")),
            right(ev("idle_sleeps")),
            right(duration(ev("idle_sleep_us") as f64 / 1e6)),
            right(ev("idle_wakeups")),
        ]);
    }
    line!(out, "{t}");
    let mut t = table(&[
        "listener / backend",
        "sessions",
        "created",
        "pkts in",
        "in pps",
        "pkts out",
        "out pps",
        "bytes in",
        "bytes out",
    ]);
    for l in &s.listeners {
        let pl = prev.and_then(|(r, _)| r.listeners.iter().find(|x| x.name == l.name));
        let tr = &l.traffic;
        t.add_row(vec![
            Cell::new(format!("{} {}:{}/{}", l.name, l.vip, l.port, l.protocol)),
            right(tr.sessions_active),
            right(tr.sessions_created),
            right(tr.packets_in),
            right(rate(tr.packets_in, pl.map(|x| x.traffic.packets_in))),
            right(tr.packets_out),
            right(rate(tr.packets_out, pl.map(|x| x.traffic.packets_out))),
            right(si(tr.bytes_in as f64)),
            right(si(tr.bytes_out as f64)),
        ]);
        for b in &l.backends {
            let pb = pl.and_then(|x| x.backends.iter().find(|y| y.address == b.address && y.port == b.port));
            let bt = &b.traffic;
            t.add_row(vec![
                Cell::new(format!("  {}:{}{}", b.address, b.port, if b.drained { " (drained)" } else { "" })),
                right(bt.sessions_active),
                right(bt.sessions_created),
                right(bt.packets_in),
                right(rate(bt.packets_in, pb.map(|x| x.traffic.packets_in))),
                right(bt.packets_out),
                right(rate(bt.packets_out, pb.map(|x| x.traffic.packets_out))),
                right(si(bt.bytes_in as f64)),
                right(si(bt.bytes_out as f64)),
            ]);
        }
    }
    line!(out, "{t}");
    let drops: Vec<(&String, &u64)> = s.drops.iter().filter(|(_, v)| **v > 0).collect();
    if drops.is_empty() {
        line!(out, "no drops");
    } else {
        let mut t = table(&["drop reason", "packets", "per second"]);
        for (k, v) in drops {
            let before = prev.map(|(r, _)| r.drops.get(k).copied().unwrap_or(0));
            t.add_row(vec![Cell::new(k), right(v), right(rate(*v, before))]);
        }
        line!(out, "{t}");
    }
    out
}

/// `lbctl stats --watch`: a fresh document every `every`, with rates
/// against the previous one, until `iterations` or until the reader of
/// the output goes away.
pub fn watch_stats(client: &mut Client, every: Duration, iterations: Option<u64>, json: bool) -> Result<(), Failure> {
    let mut prev: Option<(Report, Instant)> = None;
    let mut n = 0u64;
    loop {
        let Response::Stats { stats } = client.call(Request::Stats).map_err(Failure::from)? else {
            return Err(Failure::Unreachable("unexpected answer to stats".into()));
        };
        let now = Instant::now();
        let mut out = String::new();
        if json {
            line!(out, "{}", serde_json::to_string(&stats).unwrap_or_default());
        } else {
            if n > 0 {
                line!(out);
            }
            out.push_str(&print_stats(&stats, prev.as_ref().map(|(r, t)| (r, now.duration_since(*t).as_secs_f64()))));
        }
        emit(&out)?;
        prev = Some((stats, now));
        n += 1;
        if iterations.is_some_and(|max| n >= max) {
            return Ok(());
        }
        std::thread::sleep(every);
    }
}

/// One listener's or VIP's block of `lbctl limits`.
fn guard(out: &mut String, what: &str, lim: &lbproto::stats::LimitsReport) {
    line!(
        out,
        "{what}: {}  (workers scrubbed {}, blackholed {}; entered scrubbed {}, blackholed {}, released {})",
        lim.state,
        lim.workers_scrubbed,
        lim.workers_blackholed,
        lim.scrubbed_total,
        lim.blackholed_total,
        lim.released_total
    );
    line!(
        out,
        "  offered: {} packets/s, {} bit/s, {} new connections/s",
        si(lim.packets_per_second as f64),
        si(lim.bits_per_second as f64),
        si(lim.new_connections_per_second as f64)
    );
    let mut t = table(&["limit", "configured"]);
    for (k, v) in &lim.configured {
        t.add_row(vec![Cell::new(k), right(v)]);
    }
    line!(out, "{t}");
    let mut t = table(&["drop reason", "packets"]);
    for (k, v) in &lim.drops {
        t.add_row(vec![Cell::new(k), right(v)]);
    }
    line!(out, "{t}");
}

/// `lbctl limits`: every listener with limits or protection and every
/// protected VIP (or the listener named and its VIP), from the counters
/// document.
pub fn limits(s: &Report, only: Option<&str>, json: bool) -> Result<(), Failure> {
    let listeners: Vec<_> = s
        .listeners
        .iter()
        .filter(|l| only.is_none_or(|n| n == l.name))
        .filter_map(|l| l.limits.as_ref().map(|lim| (l, lim)))
        .collect();
    let vips: Vec<_> = match only {
        Some(n) => {
            let Some(l) = s.listeners.iter().find(|l| l.name == n) else {
                return Err(Failure::Usage(format!("no listener named `{n}`")));
            };
            s.vips.iter().filter(|v| v.address == l.vip).collect()
        }
        None => s.vips.iter().collect(),
    };
    if json {
        let doc = serde_json::json!({
            "listeners": listeners.iter().map(|(l, lim)| serde_json::json!({"name": l.name, "limits": lim})).collect::<Vec<_>>(),
            "vips": vips,
            "source_table": s.source_table,
        });
        return emit(&format!("{}\n", serde_json::to_string_pretty(&doc).unwrap_or_default()));
    }
    let mut out = String::new();
    if listeners.is_empty() {
        line!(out, "no listener has limits or protection");
    }
    for (l, lim) in &listeners {
        guard(&mut out, &format!("{} ({}:{} {})", l.name, l.vip, l.port, l.protocol), lim);
    }
    for v in &vips {
        guard(&mut out, &format!("VIP {} (all its traffic)", v.address), &v.protection);
    }
    let st = &s.source_table;
    line!(
        out,
        "source tables: {} of {} entries in use, {} evictions ({} holding sessions)",
        st.entries,
        st.capacity,
        st.evictions,
        st.evictions_with_sessions
    );
    emit(&out)
}

/// `security-group list`.
fn security_groups(groups: &[lbproto::SecurityGroupInfo]) -> String {
    let mut t = table(&["group", "rules", "default", "default hits", "listeners"]);
    for g in groups {
        t.add_row(vec![
            Cell::new(&g.name),
            right(g.rule_count),
            Cell::new(&g.default),
            right(g.default_hits),
            Cell::new(if g.listeners.is_empty() { "-".into() } else { g.listeners.join(", ") }),
        ]);
    }
    format!("{t}\n")
}

/// `security-group show`: the rules in order, then the default.
fn security_group(g: &lbproto::SecurityGroupInfo) -> String {
    let mut out = String::new();
    let users = if g.listeners.is_empty() { "-".into() } else { g.listeners.join(", ") };
    line!(out, "security group {} (listeners: {users})", g.name);
    let mut t = table(&["#", "action", "proto", "sources", "ports", "hits", "description"]);
    for r in &g.rules {
        t.add_row(vec![
            right(r.index),
            Cell::new(&r.action),
            Cell::new(&r.protocol),
            Cell::new(r.sources.join(", ")),
            Cell::new(if r.ports.is_empty() { "all" } else { &r.ports }),
            right(r.hits),
            Cell::new(r.description.as_deref().unwrap_or("")),
        ]);
    }
    t.add_row(vec![
        Cell::new("-"),
        Cell::new(&g.default),
        Cell::new("default"),
        Cell::new(""),
        Cell::new(""),
        right(g.default_hits),
        Cell::new("no rule matched"),
    ]);
    line!(out, "{t}");
    out
}
