//! Prometheus metrics at `/metrics`.
//!
//! Nothing here runs on a worker: a scrape reads the workers' counters
//! (single-writer atomics) and the latency buckets, builds the metric
//! families with the `prometheus` crate's model through a registered
//! collector, and encodes them as text. Every family is declared in
//! [`METRICS`], which the README's table is checked against.

use crate::control::Runtime;
use crate::log::log_line;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use lbcore::config::MetricsAccess;
use lbcore::counters::{DropReason, Event};
use lbcore::latency;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, Registry, TextEncoder};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::Semaphore;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family lbd exports.
#[derive(Debug)]
pub struct Def {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

macro_rules! defs {
    ($($name:literal $kind:ident [$($l:literal),*] $help:literal;)*) => {
        pub const METRICS: &[Def] = &[$(Def { name: $name, kind: Kind::$kind, help: $help, labels: &[$($l),*] },)*];
    };
}

defs! {
    "lbd_build_info" Gauge ["version", "revision", "dpdk_version"] "Always 1; labels name the running build.";
    "lbd_uptime_seconds" Gauge [] "Seconds since lbd started.";
    "lbd_config_generation" Gauge [] "Generation of the running configuration (1 at start, +1 per change).";
    "lbd_worker_config_generation" Gauge ["worker"] "Configuration generation each worker runs.";
    "lbd_port_rx_packets_total" Counter ["port", "worker"] "Packets received.";
    "lbd_port_rx_bytes_total" Counter ["port", "worker"] "Bytes received.";
    "lbd_port_tx_packets_total" Counter ["port", "worker"] "Packets transmitted.";
    "lbd_port_tx_bytes_total" Counter ["port", "worker"] "Bytes transmitted.";
    "lbd_port_link_up" Gauge ["port"] "1 when the port's link is up.";
    "lbd_port_device_rx_missed_total" Counter ["port"] "Packets the device dropped because an RX queue was full.";
    "lbd_port_device_rx_errors_total" Counter ["port"] "Receive errors the device counted.";
    "lbd_port_device_tx_errors_total" Counter ["port"] "Transmit errors the device counted.";
    "lbd_port_device_rx_nombuf_total" Counter ["port"] "Receives that failed for lack of an mbuf.";
    "lbd_drops_total" Counter ["reason", "worker"] "Packets dropped, by reason (worker \"exception\": the exception path's thread).";
    "lbd_exception_packets_total" Counter ["port", "direction"] "Frames through a port's kernel interface: to_kernel (written to it), from_kernel (read from it).";
    "lbd_worker_events_total" Counter ["worker", "event"] "Local events: ARP and ICMP answers, sessions created, expired, reset, moved.";
    "lbd_handoff_packets_total" Counter ["worker", "direction"] "Packets handed to (out) or received from (in) other workers.";
    "lbd_handoff_ring_used" Gauge ["worker"] "Packets waiting in the hand-off rings into the worker.";
    "lbd_worker_polls_total" Counter ["worker"] "Worker loop iterations.";
    "lbd_worker_busy_polls_total" Counter ["worker"] "Worker loop iterations that found packets.";
    "lbd_worker_idle_sleeps_total" Counter ["worker"] "Sleeps of an idle worker (lcores.idle).";
    "lbd_worker_idle_sleep_seconds_total" Counter ["worker"] "Time idle workers spent asleep, as measured.";
    "lbd_worker_idle_wakeups_total" Counter ["worker"] "Polls right after a sleep that found packets.";
    "lbd_worker_busy_ratio" Gauge ["worker"] "Busy polls over all polls since the previous scrape.";
    "lbd_sessions_active" Gauge ["worker"] "Sessions in each worker's table.";
    "lbd_neighbor_parked" Gauge ["worker"] "Packets waiting for ARP resolution.";
    "lbd_listener_sessions_active" Gauge ["listener"] "Sessions of the listener.";
    "lbd_listener_sessions_created_total" Counter ["listener"] "Sessions the listener created.";
    "lbd_listener_packets_total" Counter ["listener", "direction"] "Packets through the listener: in (client to backend), out (backend to client).";
    "lbd_listener_bytes_total" Counter ["listener", "direction"] "Bytes through the listener.";
    "lbd_backend_sessions_active" Gauge ["listener", "backend"] "Sessions on the backend.";
    "lbd_backend_sessions_created_total" Counter ["listener", "backend"] "Sessions scheduled to the backend.";
    "lbd_backend_packets_total" Counter ["listener", "backend", "direction"] "Packets to (in) and from (out) the backend.";
    "lbd_backend_bytes_total" Counter ["listener", "backend", "direction"] "Bytes to (in) and from (out) the backend.";
    "lbd_backend_weight" Gauge ["listener", "backend"] "Configured weight.";
    "lbd_backend_state" Gauge ["listener", "backend", "state"] "1 for the backend's state (active or drained).";
    "lbd_backend_share_ratio" Gauge ["listener", "backend"] "Fraction of new flows the scheduler gives the backend.";
    "lbd_backend_health_up" Gauge ["listener", "backend"] "1 when the backend's effective health is up, 0 when down.";
    "lbd_backend_health_transitions_total" Counter ["listener", "backend"] "Changes of the backend's effective health.";
    "lbd_health_check_seconds" Histogram ["listener", "backend"] "Duration of the built-in health checks' probes.";
    "lbd_listener_all_down" Gauge ["listener"] "1 while every backend of the listener (not drained) is down.";
    "lbd_mempool_mbufs_in_use" Gauge [] "Packet buffers in use.";
    "lbd_mempool_mbufs_available" Gauge [] "Packet buffers free.";
    "lbd_metrics_refused_total" Counter ["reason"] "Connections and requests this endpoint turned away: address (outside metrics.allow, 403), token (no or wrong bearer token, 401), busy (all connection slots taken, 503).";
    "lbd_control_operations_total" Counter ["operation", "result"] "Control requests by operation and result (ok, error).";
    "lbd_config_propagation_seconds" Histogram [] "Time from publishing a configuration until every worker runs it.";
    "lbd_packet_processing_seconds" Histogram ["worker"] "Per-packet processing time: a burst's time over its packets.";
    // Rate limits and blackholing.
    "lbd_listener_limit" Gauge ["listener", "limit"] "A configured limit or threshold of the listener (all workers together).";
    "lbd_listener_limit_drops_total" Counter ["listener", "reason"] "Packets of the listener dropped by its limits or protection, by reason.";
    "lbd_listener_protection_state" Gauge ["listener", "state"] "1 for the listener's protection state (normal, scrubbed, blackholed: the highest of any worker).";
    "lbd_listener_protection_transitions_total" Counter ["listener", "to"] "Times a worker's protection state went to scrubbed, blackholed or normal.";
    "lbd_listener_offered_rate" Gauge ["listener", "unit"] "Offered traffic to the listener in the workers' last one-second windows: packets, bits, new_connections per second.";
    "lbd_vip_limit" Gauge ["vip", "limit"] "A configured threshold of the protected VIP (vips[], all workers together).";
    "lbd_vip_limit_drops_total" Counter ["vip", "reason"] "Packets to the protected VIP dropped by its own protection (vip_scrubbed, vip_blackholed).";
    "lbd_vip_protection_state" Gauge ["vip", "state"] "1 for the protected VIP's state (normal, scrubbed, blackholed: the highest of any worker).";
    "lbd_vip_protection_transitions_total" Counter ["vip", "to"] "Times a worker's state of the protected VIP went to scrubbed, blackholed or normal.";
    "lbd_vip_offered_rate" Gauge ["vip", "unit"] "Offered traffic to the protected VIP (every client packet to the address) in the workers' last one-second windows.";
    "lbd_source_table_entries" Gauge [] "Entries in use in the per-source limit tables of all workers.";
    "lbd_source_table_capacity" Gauge [] "Entries of the per-source limit tables of all workers.";
    "lbd_source_table_evictions_total" Counter ["sessions"] "Sources forgotten to make room for new ones (sessions: whether the entry still held sessions).";
    "lbd_security_group_rule_hits_total" Counter ["group", "rule", "action"] "New flows each security group rule decided (rule: its position in the group, or default).";
    "lbd_security_group_denied_total" Counter ["group"] "New flows the security group denied (its deny rules and a deny default).";
}

/// Upper bounds of `lbd_packet_processing_seconds` (nanoseconds).
const PACKET_BUCKETS_NS: &[u64] = &[25, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 50_000, 100_000, 1_000_000];
/// Upper bounds of `lbd_config_propagation_seconds` (microseconds).
const PROPAGATION_BUCKETS_US: &[u64] = &[10, 50, 100, 500, 1_000, 5_000, 10_000, 50_000, 100_000, 1_000_000];

struct Families {
    by_name: HashMap<&'static str, MetricFamily>,
}

fn labels(names: &[&str], values: &[String]) -> Vec<LabelPair> {
    names
        .iter()
        .zip(values)
        .map(|(n, v)| {
            let mut l = LabelPair::default();
            l.set_name((*n).to_owned());
            l.set_value(v.clone());
            l
        })
        .collect()
}

impl Families {
    fn new() -> Families {
        let by_name = METRICS
            .iter()
            .map(|d| {
                let mut f = MetricFamily::default();
                f.set_name(d.name.to_owned());
                f.set_help(d.help.to_owned());
                f.set_field_type(match d.kind {
                    Kind::Counter => MetricType::COUNTER,
                    Kind::Gauge => MetricType::GAUGE,
                    Kind::Histogram => MetricType::HISTOGRAM,
                });
                (d.name, f)
            })
            .collect();
        Families { by_name }
    }

    fn push(&mut self, name: &'static str, values: &[String], fill: impl FnOnce(&mut Metric)) {
        let def = METRICS.iter().find(|d| d.name == name).expect("metric declared in METRICS");
        debug_assert_eq!(def.labels.len(), values.len(), "{name}");
        let mut m = Metric::default();
        m.set_label(labels(def.labels, values));
        fill(&mut m);
        self.by_name.get_mut(name).expect("declared").mut_metric().push(m);
    }

    fn counter(&mut self, name: &'static str, values: &[String], v: f64) {
        self.push(name, values, |m| {
            let mut c = Counter::default();
            c.set_value(v);
            m.set_counter(c);
        });
    }

    fn gauge(&mut self, name: &'static str, values: &[String], v: f64) {
        self.push(name, values, |m| {
            let mut g = Gauge::default();
            g.set_value(v);
            m.set_gauge(g);
        });
    }

    /// A histogram from cumulative `(upper bound in seconds, count)` pairs.
    fn histogram(&mut self, name: &'static str, values: &[String], buckets: Vec<(f64, u64)>, count: u64, sum: f64) {
        self.push(name, values, |m| {
            let mut h = Histogram::default();
            h.set_sample_count(count);
            h.set_sample_sum(sum);
            h.set_bucket(
                buckets
                    .into_iter()
                    .map(|(le, n)| {
                        let mut b = Bucket::default();
                        b.set_upper_bound(le);
                        b.set_cumulative_count(n);
                        b
                    })
                    .collect(),
            );
            m.set_histogram(h);
        });
    }

    fn into_vec(self) -> Vec<MetricFamily> {
        let mut v: Vec<MetricFamily> = self.by_name.into_values().collect();
        v.sort_by(|a, b| a.name().cmp(b.name()));
        v
    }
}

/// The metric families of a listener's limits and of a protected VIP's,
/// which the two share in shape.
struct GuardMetrics {
    limit: &'static str,
    drops: &'static str,
    state: &'static str,
    transitions: &'static str,
    offered: &'static str,
}

const LISTENER_GUARD: GuardMetrics = GuardMetrics {
    limit: "lbd_listener_limit",
    drops: "lbd_listener_limit_drops_total",
    state: "lbd_listener_protection_state",
    transitions: "lbd_listener_protection_transitions_total",
    offered: "lbd_listener_offered_rate",
};

const VIP_GUARD: GuardMetrics = GuardMetrics {
    limit: "lbd_vip_limit",
    drops: "lbd_vip_limit_drops_total",
    state: "lbd_vip_protection_state",
    transitions: "lbd_vip_protection_transitions_total",
    offered: "lbd_vip_offered_rate",
};

/// The collector registered with the `prometheus` registry.
struct LbdCollector {
    rt: Arc<Runtime>,
    refusals: Arc<Refusals>,
    descs: Vec<Desc>,
    /// (polls, busy polls) per worker at the previous scrape.
    previous: Mutex<Vec<(u64, u64)>>,
}

impl LbdCollector {
    fn new(rt: Arc<Runtime>, refusals: Arc<Refusals>) -> LbdCollector {
        let descs = METRICS
            .iter()
            .map(|d| {
                Desc::new(
                    d.name.to_owned(),
                    d.help.to_owned(),
                    d.labels.iter().map(|s| (*s).to_owned()).collect(),
                    HashMap::new(),
                )
                .expect("valid metric descriptor")
            })
            .collect();
        let previous = Mutex::new(vec![(0, 0); rt.counters.len()]);
        LbdCollector { rt, refusals, descs, previous }
    }

    fn gather(&self) -> Vec<MetricFamily> {
        let rt = &self.rt;
        let report = rt.report(false);
        let mut f = Families::new();
        let w = |i: usize| i.to_string();

        f.gauge(
            "lbd_build_info",
            &[rt.build.version.to_owned(), rt.build.git_revision.to_owned(), rt.dpdk_version.clone()],
            1.0,
        );
        f.gauge("lbd_uptime_seconds", &[], report.uptime_seconds);
        for (reason, n) in
            [("address", &self.refusals.address), ("token", &self.refusals.token), ("busy", &self.refusals.busy)]
        {
            f.counter("lbd_metrics_refused_total", &[reason.to_owned()], n.load(Ordering::Relaxed) as f64);
        }
        f.gauge("lbd_config_generation", &[], report.config_generation as f64);
        for (i, c) in rt.counters.iter().enumerate() {
            f.gauge("lbd_worker_config_generation", &[w(i)], c.generation.get() as f64);
        }

        for (pi, p) in report.ports.iter().enumerate() {
            for (i, c) in rt.counters.iter().enumerate() {
                let pc = &c.ports[pi];
                let l = [p.name.clone(), w(i)];
                f.counter("lbd_port_rx_packets_total", &l, pc.rx_packets.get() as f64);
                f.counter("lbd_port_rx_bytes_total", &l, pc.rx_bytes.get() as f64);
                f.counter("lbd_port_tx_packets_total", &l, pc.tx_packets.get() as f64);
                f.counter("lbd_port_tx_bytes_total", &l, pc.tx_bytes.get() as f64);
            }
            let l = [p.name.clone()];
            f.gauge("lbd_port_link_up", &l, f64::from(u8::from(p.link_up)));
            f.counter("lbd_port_device_rx_missed_total", &l, p.device_stats.imissed as f64);
            f.counter("lbd_port_device_rx_errors_total", &l, p.device_stats.ierrors as f64);
            f.counter("lbd_port_device_tx_errors_total", &l, p.device_stats.oerrors as f64);
            f.counter("lbd_port_device_rx_nombuf_total", &l, p.device_stats.rx_nombuf as f64);
            if p.exception_interface.is_some() {
                let l = |d: &str| [p.name.clone(), d.to_owned()];
                f.counter("lbd_exception_packets_total", &l("to_kernel"), p.to_kernel_packets as f64);
                f.counter("lbd_exception_packets_total", &l("from_kernel"), p.from_kernel_packets as f64);
            }
        }
        for r in DropReason::ALL {
            let n = rt.exception.drop_count(*r);
            if n > 0 {
                f.counter("lbd_drops_total", &[r.label().to_owned(), "exception".into()], n as f64);
            }
        }

        let mut previous = self.previous.lock().unwrap_or_else(|e| e.into_inner());
        for (i, c) in rt.counters.iter().enumerate() {
            for r in DropReason::ALL {
                f.counter("lbd_drops_total", &[r.label().to_owned(), w(i)], c.drop_count(*r) as f64);
            }
            for e in Event::ALL {
                match e {
                    Event::Polls
                    | Event::BusyPolls
                    | Event::HandoffIn
                    | Event::HandoffOut
                    | Event::IdleSleeps
                    | Event::IdleSleepMicros
                    | Event::IdleWakeups => {}
                    _ => f.counter("lbd_worker_events_total", &[w(i), e.label().to_owned()], c.event_count(*e) as f64),
                }
            }
            f.counter("lbd_handoff_packets_total", &[w(i), "out".into()], c.event_count(Event::HandoffOut) as f64);
            f.counter("lbd_handoff_packets_total", &[w(i), "in".into()], c.event_count(Event::HandoffIn) as f64);
            let used: u32 = rt.rings.get(i).map_or(0, |r| r.iter().map(|m| m.count()).sum());
            f.gauge("lbd_handoff_ring_used", &[w(i)], f64::from(used));
            let (polls, busy) = (c.event_count(Event::Polls), c.event_count(Event::BusyPolls));
            f.counter("lbd_worker_polls_total", &[w(i)], polls as f64);
            f.counter("lbd_worker_busy_polls_total", &[w(i)], busy as f64);
            f.counter("lbd_worker_idle_sleeps_total", &[w(i)], c.event_count(Event::IdleSleeps) as f64);
            f.counter(
                "lbd_worker_idle_sleep_seconds_total",
                &[w(i)],
                c.event_count(Event::IdleSleepMicros) as f64 / 1e6,
            );
            f.counter("lbd_worker_idle_wakeups_total", &[w(i)], c.event_count(Event::IdleWakeups) as f64);
            let (p0, b0) = previous[i];
            let dp = polls.saturating_sub(p0);
            f.gauge(
                "lbd_worker_busy_ratio",
                &[w(i)],
                if dp == 0 { 0.0 } else { busy.saturating_sub(b0) as f64 / dp as f64 },
            );
            previous[i] = (polls, busy);
            f.gauge("lbd_sessions_active", &[w(i)], c.sessions_active.get() as f64);
            f.gauge("lbd_neighbor_parked", &[w(i)], c.parked.get() as f64);

            let mut h = latency::new_histogram();
            c.latency.merge_into(&mut h);
            let buckets = PACKET_BUCKETS_NS
                .iter()
                .map(|le| (*le as f64 / 1e9, if h.is_empty() { 0 } else { h.count_between(0, *le) }))
                .collect();
            f.histogram("lbd_packet_processing_seconds", &[w(i)], buckets, h.len(), c.latency.sum_ns() as f64 / 1e9);
        }
        drop(previous);

        let snap = rt.snapshots.load();
        let health = rt.plane.lock().health.clone();
        let latency = rt.health.latency.lock().clone();
        for (l, lr) in snap.listeners.iter().zip(&report.listeners) {
            f.gauge("lbd_listener_all_down", std::slice::from_ref(&l.name), f64::from(u8::from(l.all_down)));
            let t = &lr.traffic;
            let name = [l.name.clone()];
            f.gauge("lbd_listener_sessions_active", &name, t.sessions_active as f64);
            f.counter("lbd_listener_sessions_created_total", &name, t.sessions_created as f64);
            for (dir, p, b) in [("in", t.packets_in, t.bytes_in), ("out", t.packets_out, t.bytes_out)] {
                f.counter("lbd_listener_packets_total", &[l.name.clone(), dir.into()], p as f64);
                f.counter("lbd_listener_bytes_total", &[l.name.clone(), dir.into()], b as f64);
            }
            let shares = l.scheduler.shares(l.backends.len());
            let total: u64 = shares.iter().sum();
            for ((b, br), share) in l.backends.iter().zip(&lr.backends).zip(shares) {
                let id = format!("{}:{}", Ipv4Addr::from(b.addr), b.port);
                let lb = [l.name.clone(), id.clone()];
                let t = &br.traffic;
                f.gauge("lbd_backend_sessions_active", &lb, t.sessions_active as f64);
                f.counter("lbd_backend_sessions_created_total", &lb, t.sessions_created as f64);
                for (dir, p, by) in [("in", t.packets_in, t.bytes_in), ("out", t.packets_out, t.bytes_out)] {
                    f.counter("lbd_backend_packets_total", &[l.name.clone(), id.clone(), dir.into()], p as f64);
                    f.counter("lbd_backend_bytes_total", &[l.name.clone(), id.clone(), dir.into()], by as f64);
                }
                f.gauge("lbd_backend_weight", &lb, f64::from(b.weight));
                for state in ["active", "drained"] {
                    let on = (state == "drained") == b.drained;
                    f.gauge("lbd_backend_state", &[l.name.clone(), id.clone(), state.into()], f64::from(u8::from(on)));
                }
                f.gauge("lbd_backend_share_ratio", &lb, if total == 0 { 0.0 } else { share as f64 / total as f64 });
                let h = health.get(b.id);
                f.gauge("lbd_backend_health_up", &lb, if crate::control::health::is_down(h) { 0.0 } else { 1.0 });
                f.counter("lbd_backend_health_transitions_total", &lb, h.map_or(0, |h| h.transitions) as f64);
                let lat = latency.get(&b.id).cloned().unwrap_or_default();
                f.histogram("lbd_health_check_seconds", &lb, lat.cumulative(), lat.count, lat.sum_s);
            }
        }

        let guards = report
            .listeners
            .iter()
            .filter_map(|l| l.limits.as_ref().map(|lim| (&LISTENER_GUARD, l.name.clone(), lim)))
            .chain(report.vips.iter().map(|v| (&VIP_GUARD, v.address.to_string(), &v.protection)));
        for (names, name, lim) in guards {
            let name = || name.clone();
            for (k, v) in &lim.configured {
                f.gauge(names.limit, &[name(), k.clone()], *v as f64);
            }
            for (reason, n) in &lim.drops {
                f.counter(names.drops, &[name(), reason.clone()], *n as f64);
            }
            for state in ["normal", "scrubbed", "blackholed"] {
                let on = f64::from(u8::from(lim.state == state));
                f.gauge(names.state, &[name(), state.into()], on);
            }
            for (to, n) in
                [("scrubbed", lim.scrubbed_total), ("blackholed", lim.blackholed_total), ("normal", lim.released_total)]
            {
                f.counter(names.transitions, &[name(), to.into()], n as f64);
            }
            for (unit, v) in [
                ("packets", lim.packets_per_second),
                ("bits", lim.bits_per_second),
                ("new_connections", lim.new_connections_per_second),
            ] {
                f.gauge(names.offered, &[name(), unit.into()], v as f64);
            }
        }
        let st = &report.source_table;
        f.gauge("lbd_source_table_entries", &[], st.entries as f64);
        f.gauge("lbd_source_table_capacity", &[], st.capacity as f64);
        f.counter(
            "lbd_source_table_evictions_total",
            &["without".into()],
            (st.evictions - st.evictions_with_sessions.min(st.evictions)) as f64,
        );
        f.counter("lbd_source_table_evictions_total", &["with".into()], st.evictions_with_sessions as f64);
        for (group, hits) in rt.security_rule_hits() {
            let mut denied = 0;
            for (rule, action, n) in hits {
                if action == "deny" {
                    denied += n;
                }
                f.counter("lbd_security_group_rule_hits_total", &[group.clone(), rule, action.into()], n as f64);
            }
            f.counter("lbd_security_group_denied_total", &[group], denied as f64);
        }

        f.gauge("lbd_mempool_mbufs_in_use", &[], f64::from(report.mempool_in_use));
        f.gauge("lbd_mempool_mbufs_available", &[], f64::from(report.mempool_available));
        for ((op, result), n) in rt.ops.lock().iter() {
            f.counter("lbd_control_operations_total", &[op.clone(), (*result).to_owned()], *n as f64);
        }
        {
            let h = rt.propagation.lock();
            let buckets = PROPAGATION_BUCKETS_US
                .iter()
                .map(|le| (*le as f64 / 1e6, if h.is_empty() { 0 } else { h.count_between(0, *le) }))
                .collect();
            let sum: f64 =
                h.iter_recorded().map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64).sum::<f64>() / 1e6;
            f.histogram("lbd_config_propagation_seconds", &[], buckets, h.len(), sum);
        }
        f.into_vec()
    }
}

impl Collector for LbdCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }
    fn collect(&self) -> Vec<MetricFamily> {
        self.gather()
    }
}

/// The text exposition of every metric.
pub fn render(registry: &Registry) -> Result<String, String> {
    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out).map_err(|e| e.to_string())?;
    String::from_utf8(out).map_err(|e| e.to_string())
}

/// A registry holding lbd's collector.
pub fn registry(rt: Arc<Runtime>, refusals: Arc<Refusals>) -> Registry {
    let r = Registry::new();
    r.register(Box::new(LbdCollector::new(rt, refusals))).expect("metric descriptors are consistent");
    r
}

/// What the endpoint turned away, by reason: an operator sees a scraper
/// locked out (token, address) or a connection flood (busy) here.
#[derive(Debug, Default)]
pub struct Refusals {
    address: AtomicU64,
    token: AtomicU64,
    busy: AtomicU64,
}

// The `/metrics` HTTP endpoint.
//
// Anyone who can reach `metrics.listen` can talk to it, so nothing a
// client sends or withholds may take lbd down, stall another scrape or hold
// up shutdown. hyper's HTTP/1 server on a current-thread tokio runtime,
// owned by the `lbd-metrics` thread, gives every connection a task of its
// own (a slow or idle client occupies a slot, not the server) and enforces
// the limits below. The request body is never read: `/metrics` takes none,
// and with keep-alive off hyper closes the connection after the answer
// instead of waiting for a body. A scrape renders synchronously on this
// thread, so once the thread is joined no scrape can run: shutdown joins it
// before the daemon stops the ports a scrape reads through DPDK.

/// Connections served at once; more are answered 503 and closed at once.
/// Prometheus holds one per scrape and operators add a few `curl`s; the
/// cap bounds the sockets and buffers a connection flood can hold.
const MAX_CONNECTIONS: usize = 32;
/// Time a client has to send its request line and headers. Loopback and
/// LAN clients need milliseconds; a silent or trickling client loses its
/// slot after this, so a flood of idle connections cannot lock out the
/// scraper for longer.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for a whole exchange, from accept to the last byte of the answer:
/// also bounds a client that never reads the answer. Prometheus's default
/// scrape timeout is 10 s as well.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
/// Request line plus headers, in bytes (hyper answers 431 and closes
/// above it). A scrape request is a few hundred bytes; 16 KiB is hyper's
/// smallest allowed buffer (8 KiB) with room to spare.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Pause after a failed accept (such as EMFILE), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

const BUSY_ANSWER: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
/// To a client outside `metrics.allow`, before reading anything.
const FORBIDDEN_ANSWER: &[u8] = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// The `/metrics` HTTP endpoint. Dropping it (or [`MetricsServer::shutdown`])
/// stops it: every connection is cut and the thread joined.
pub struct MetricsServer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    pub addr: SocketAddr,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer").field("addr", &self.addr).finish()
    }
}

/// A bound `/metrics` socket, not serving yet (bound early so a taken
/// port fails before DPDK starts).
pub struct Bound {
    listener: std::net::TcpListener,
    addr: SocketAddr,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound").field("addr", &self.addr).finish()
    }
}

pub fn bind(addr: SocketAddr) -> Result<Bound, String> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| format!("metrics: cannot listen on {addr}: {e}"))?;
    let addr = listener.local_addr().unwrap_or(addr);
    Ok(Bound { listener, addr })
}

/// The answer to one request; the body, if any, is left unread. With a
/// token configured, a request without it gets 401 and nothing else.
fn answer(
    registry: &Registry,
    access: &MetricsAccess,
    refusals: &Refusals,
    request: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    if let Some(token) = &access.token {
        let given = request
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or_default();
        if !token.matches(given) {
            refusals.token.fetch_add(1, Ordering::Relaxed);
            let mut response = Response::new(Full::new(Bytes::from_static(b"a bearer token is required\n")));
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            response.headers_mut().insert(hyper::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    let (status, content_type, body) = match request.uri().path() {
        "/metrics" => match render(registry) {
            Ok(body) => (StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", body),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, "text/plain; charset=UTF-8", e),
        },
        "/" => (StatusCode::OK, "text/plain; charset=UTF-8", "lbd: metrics at /metrics\n".to_owned()),
        _ => (StatusCode::NOT_FOUND, "text/plain; charset=UTF-8", "not found\n".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Accepts connections until the runtime is dropped, each served by a task
/// of its own under the limits above.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    access: Arc<MetricsAccess>,
    refusals: Arc<Refusals>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(MAX_HEADER_BYTES)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(false);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, peer)) if !access.allows(peer.ip()) => {
                refusals.address.fetch_add(1, Ordering::Relaxed);
                // Best effort, never waiting, nothing read.
                let _ = stream.try_write(FORBIDDEN_ANSWER);
                continue;
            }
            Ok((stream, _)) => stream,
            Err(_) => {
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            refusals.busy.fetch_add(1, Ordering::Relaxed);
            // Best effort, never waiting: the client may not even read it.
            let _ = stream.try_write(BUSY_ANSWER);
            continue;
        };
        let registry = Arc::clone(&registry);
        let access = Arc::clone(&access);
        let refusals = Arc::clone(&refusals);
        let service = service_fn(move |request: Request<Incoming>| {
            let response = answer(&registry, &access, &refusals, &request);
            std::future::ready(Ok::<_, Infallible>(response))
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            // Errors (bad requests, resets, timeouts) concern only this
            // client; hyper has answered what deserves an answer.
            let _ = tokio::time::timeout(CONNECTION_DEADLINE, connection).await;
            drop(slot);
        });
    }
}

impl Bound {
    /// Serves `/metrics` for `rt` on a thread of its own, to the clients
    /// `access` admits.
    pub fn start(self, rt: Arc<Runtime>, access: MetricsAccess) -> Result<MetricsServer, String> {
        let Bound { listener, addr } = self;
        if !addr.ip().is_loopback() && access.allow.is_empty() && access.token.is_none() {
            log_line!(
                "lbd: warning: metrics on {addr}, not a loopback address: anyone who reaches it reads lbd's counters \
                 (limit it with metrics.allow or metrics.bearer_token_file)"
            );
        }
        let access = Arc::new(access);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| format!("metrics: cannot start the HTTP runtime: {e}"))?;
        let listener = {
            let _context = runtime.enter();
            listener
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpListener::from_std(listener))
                .map_err(|e| format!("metrics: cannot serve {addr}: {e}"))?
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let refusals = Arc::new(Refusals::default());
        let registry = Arc::new(registry(rt, Arc::clone(&refusals)));
        let thread = std::thread::Builder::new()
            .name("lbd-metrics".into())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::spawn(accept_loop(listener, registry, access, refusals));
                    // Ends on shutdown, or when the server handle is gone.
                    let _ = stopped.await;
                });
                // Dropping the runtime drops every connection task (and
                // closes its socket) without waiting for any client.
                drop(runtime);
            })
            .map_err(|e| format!("metrics: cannot start the metrics thread: {e}"))?;
        Ok(MetricsServer { stop: Some(stop), thread: Some(thread), addr })
    }
}

impl MetricsServer {
    /// Stops serving: cuts every connection and joins the thread, so no
    /// scrape runs after this returns.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let mut seen = std::collections::HashSet::new();
        for d in METRICS {
            assert!(seen.insert(d.name), "{} twice", d.name);
            assert!(d.name.starts_with("lbd_"), "{}", d.name);
            assert!(d.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'), "{}", d.name);
            match d.kind {
                Kind::Counter => assert!(d.name.ends_with("_total"), "{}: counters end in _total", d.name),
                Kind::Gauge => assert!(!d.name.ends_with("_total"), "{}", d.name),
                Kind::Histogram => assert!(d.name.ends_with("_seconds"), "{}: base unit seconds", d.name),
            }
            assert!(!d.help.is_empty());
        }
    }

    /// Every series the Grafana dashboard queries exists.
    #[test]
    fn dashboard_queries_only_exported_metrics() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/grafana-dashboard.json")).unwrap();
        let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut exprs = Vec::new();
        for p in dash["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                exprs.push(t["expr"].as_str().unwrap().to_owned());
            }
        }
        assert!(exprs.len() > 20);
        for e in &exprs {
            let mut found = false;
            for word in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if let Some(base) = word.strip_prefix("lbd_") {
                    let name = format!("lbd_{base}");
                    let known = METRICS.iter().any(|d| {
                        name == d.name
                            || (d.kind == Kind::Histogram
                                && ["_bucket", "_count", "_sum"].iter().any(|s| name == format!("{}{s}", d.name)))
                    });
                    assert!(known, "dashboard queries unknown metric {name} in {e}");
                    found = true;
                }
            }
            assert!(found, "{e} queries no lbd metric");
        }
    }

    /// The README's metrics table lists every family.
    #[test]
    fn readme_documents_every_metric() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        for d in METRICS {
            assert!(readme.contains(&format!("`{}`", d.name)), "README lacks {}", d.name);
        }
    }
}
