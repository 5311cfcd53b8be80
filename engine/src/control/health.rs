//! Health on the control side: the built-in checks' runner (thread
//! `lbd-health`, probes through the kernel), the thread that applies their
//! results, expires checkers' reports and steps slow starts
//! (`lbd-health-apply`), and what metrics and `lbctl` show of it.
//!
//! A change of a backend's effective health (by check, report or hand)
//! republishes the snapshot built from the running configuration and the
//! health table ([`Runtime::rebuild`]); workers never probe or wait.

use super::{err, ControlPlane, Runtime};
use crate::log::log_line;
use lbcore::config::Config;
use lbcore::health::{check_targets, BackendHealth, Health, Transition, Verdict};
use lbcore::ids::BackendId;
use lbcore::snapshot::IdRegistry;
use lbhealth::{Outcome, Runner};
use lbproto::{ErrorCode, ErrorReply, MAX_HEALTH_REASON};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the apply thread looks at expiries and slow-start steps when
/// no result arrives.
const TICK: Duration = Duration::from_millis(100);

/// Most checkers whose fresh reports one backend keeps.
pub const MAX_CHECKERS: usize = 16;

/// Upper bounds of `lbd_health_check_seconds`.
pub const CHECK_BUCKETS_S: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Check latencies of one backend, as a Prometheus histogram.
#[derive(Debug, Clone, Default)]
pub struct LatencyBuckets {
    /// Non-cumulative counts per bound of [`CHECK_BUCKETS_S`], then +Inf.
    pub counts: Vec<u64>,
    pub sum_s: f64,
    pub count: u64,
}

impl LatencyBuckets {
    fn record(&mut self, d: Duration) {
        if self.counts.is_empty() {
            self.counts = vec![0; CHECK_BUCKETS_S.len() + 1];
        }
        let s = d.as_secs_f64();
        let i = CHECK_BUCKETS_S.iter().position(|b| s <= *b).unwrap_or(CHECK_BUCKETS_S.len());
        self.counts[i] += 1;
        self.sum_s += s;
        self.count += 1;
    }

    /// `(bound, cumulative count)` pairs.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut n = 0;
        CHECK_BUCKETS_S
            .iter()
            .enumerate()
            .map(|(i, b)| {
                n += self.counts.get(i).copied().unwrap_or(0);
                (*b, n)
            })
            .collect()
    }
}

/// The health side of the runtime.
#[derive(Debug, Default)]
pub struct HealthShared {
    runner: Mutex<Option<Runner>>,
    /// Check latencies by backend id.
    pub latency: Mutex<HashMap<BackendId, LatencyBuckets>>,
}

/// `(id, has slow start)` of every configured backend.
pub fn live_backends(cfg: &Config, ids: &IdRegistry) -> Vec<(BackendId, bool)> {
    cfg.forwarding
        .listeners
        .iter()
        .flat_map(|l| {
            l.backends
                .iter()
                .filter_map(move |b| ids.backend(&l.name, b.address, b.port).map(|id| (id, l.slow_start.is_some())))
        })
        .collect()
}

/// Forgets the built-in verdict of backends no built-in check covers any
/// more (check removed, or `health.builtin: off`).
pub fn drop_unchecked_builtin(table: &mut lbcore::health::HealthTable, cfg: &Config, ids: &IdRegistry) {
    for l in &cfg.forwarding.listeners {
        if l.health_check.is_some() && cfg.forwarding.health_builtin {
            continue;
        }
        for b in &l.backends {
            if let Some(h) = ids.backend(&l.name, b.address, b.port).and_then(|id| table.backends.get_mut(&id)) {
                h.builtin = None;
                h.last_error = None;
            }
        }
    }
}

/// A checker's name: what `lbctl backend list` shows as its source.
pub fn check_checker_name(name: &str) -> Result<(), ErrorReply> {
    match lbproto::checker_name_problem(name) {
        None => Ok(()),
        Some(problem) => Err(err(ErrorCode::Invalid, problem)),
    }
}

/// A reason as given, when it is printable and not too long.
pub fn check_reason(reason: Option<&str>) -> Result<Option<String>, ErrorReply> {
    match reason {
        None => Ok(None),
        Some(r) if r.len() > MAX_HEALTH_REASON => {
            Err(err(ErrorCode::Invalid, format!("the reason is longer than {MAX_HEALTH_REASON} bytes")))
        }
        Some(r) if r.chars().any(char::is_control) => {
            Err(err(ErrorCode::Invalid, "the reason must not contain control characters"))
        }
        Some(r) => Ok(Some(r.to_owned())),
    }
}

fn backend_name(plane: &ControlPlane, id: BackendId) -> String {
    for l in &plane.config.forwarding.listeners {
        for b in &l.backends {
            if plane.ids.backend(&l.name, b.address, b.port) == Some(id) {
                return format!("{} {}:{}", l.name, b.address, b.port);
            }
        }
    }
    format!("backend #{}", usize::from(id))
}

impl HealthShared {
    /// Starts the built-in checks of `cfg` (none when `health.builtin` is
    /// off: the runner then idles until a reload switches them on).
    pub fn start(rt: &Arc<Runtime>, cfg: &Config) -> Result<HealthApplier, String> {
        if !targets_of(cfg).is_empty() && rt.plane.lock().port_facts.iter().all(|p| !p.kernel) {
            log_line!(
                "lbd: health: warning: built-in checks run but no port has an exception interface: probes \
                 take the host's own routes, not lbd's ports"
            );
        }
        let (tx, rx) = crossbeam_channel::bounded::<Outcome>(4096);
        let runner = Runner::spawn("lbd-health", targets_of(cfg), move |o| {
            // Full (the apply thread is behind): the next result of the
            // target carries the same information.
            let _ = tx.try_send(o);
        })
        .map_err(|e| format!("cannot start the health-check thread: {e}"))?;
        *rt.health.runner.lock() = Some(runner);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let rt2 = Arc::clone(rt);
        let thread = std::thread::Builder::new()
            .name("lbd-health-apply".into())
            .spawn(move || apply_loop(&rt2, &rx, &stop2))
            .map_err(|e| format!("cannot start the health thread: {e}"))?;
        Ok(HealthApplier { stop, thread: Some(thread), rt: Arc::clone(rt) })
    }

    /// Points the built-in checks at the running configuration.
    pub fn set_targets(&self, cfg: &Config) {
        if let Some(r) = self.runner.lock().as_ref() {
            r.set_targets(targets_of(cfg));
        }
    }

    /// Logs and counts transitions (the counter lives in the record).
    pub fn log_transitions(&self, plane: &ControlPlane, transitions: &[(BackendId, Transition)]) {
        for (id, t) in transitions {
            let why = if t.reason.is_empty() { String::new() } else { format!(": {}", t.reason) };
            log_line!("lbd: health: {} {} -> {} ({}{why})", backend_name(plane, *id), t.from, t.to, t.source);
        }
    }
}

fn targets_of(cfg: &Config) -> lbhealth::Targets {
    if cfg.forwarding.health_builtin {
        check_targets(&cfg.forwarding)
    } else {
        Vec::new()
    }
}

/// The apply thread; stopping it also stops the probes.
#[derive(Debug)]
pub struct HealthApplier {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    rt: Arc<Runtime>,
}

impl HealthApplier {
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Dropping the runner stops the probes and joins their thread.
        drop(self.rt.health.runner.lock().take());
    }
}

impl Drop for HealthApplier {
    fn drop(&mut self) {
        self.stop_now();
    }
}

fn apply_loop(rt: &Runtime, rx: &crossbeam_channel::Receiver<Outcome>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let mut batch = Vec::new();
        if let Ok(o) = rx.recv_timeout(TICK) {
            batch.push(o);
            batch.extend(rx.try_iter().take(4096));
        }
        let mut plane = rt.plane.lock();
        let now = rt.health_now();
        for o in &batch {
            record_outcome(rt, &mut plane, o, now);
        }
        let transitions = plane.health.update_all(now);
        rt.health.log_transitions(&plane, &transitions);
        let ramp = slow_start_step_due(rt, &mut plane, now);
        if transitions.is_empty() && !ramp {
            continue;
        }
        let summary = if transitions.is_empty() {
            "slow start step".to_owned()
        } else {
            format!("health of {} backend(s) changed", transitions.len())
        };
        if let Err(e) = rt.rebuild(&mut plane, summary) {
            log_line!("lbd: health: {}", e.message);
        }
    }
}

/// Applies one probe outcome to the backends it is for, when their
/// listener still runs that check.
fn record_outcome(rt: &Runtime, plane: &mut ControlPlane, o: &Outcome, now: Duration) {
    if !plane.config.forwarding.health_builtin {
        return;
    }
    for key in o.backends.iter() {
        let Some(l) = plane.config.forwarding.listeners.iter().find(|l| l.name == key.listener) else { continue };
        let Some(check) = &l.health_check else { continue };
        // A result of a check the listener has since changed is not its.
        let mut spec = check.clone();
        let port = spec.port.take().unwrap_or(key.port);
        if spec != o.target.check || port != o.target.port || key.addr != o.target.addr {
            continue;
        }
        let Some(id) = plane.ids.backend(&l.name, key.addr, key.port) else { continue };
        let Some(h) = plane.health.backends.get_mut(&id) else { continue };
        h.last_check = Some(now);
        h.last_error = (!o.result.ok).then(|| o.result.error.clone());
        let reason = if o.result.ok {
            format!("{} check passed", o.target.check.kind.name())
        } else {
            format!("{} check: {}", o.target.check.kind.name(), o.result.error)
        };
        let changed = h.builtin.as_ref().is_none_or(|v| v.state != o.state);
        if changed || o.changed {
            h.builtin = Some(Verdict { state: o.state, reason, at: now });
        } else if let Some(v) = h.builtin.as_mut() {
            // Keep the reason of the latest result (a failure while still
            // up shows why it may go down).
            v.reason = reason;
        }
        rt.health.latency.lock().entry(id).or_default().record(o.result.latency);
    }
}

/// Whether a slow start moved to its next step (or ended) since the
/// running snapshot was built; ends finished ramps.
fn slow_start_step_due(rt: &Runtime, plane: &mut ControlPlane, now: Duration) -> bool {
    let snap = rt.snapshots.load();
    let mut due = false;
    for l in &plane.config.forwarding.listeners {
        let Some(over) = l.slow_start else { continue };
        let Some(view) = snap.listeners.iter().find(|v| v.name == l.name) else { continue };
        let ids: Vec<Option<BackendId>> =
            l.backends.iter().map(|b| plane.ids.backend(&l.name, b.address, b.port)).collect();
        let ramping = ids.iter().flatten().any(|id| plane.health.get(*id).is_some_and(|h| h.ramp_from.is_some()));
        if !ramping {
            continue;
        }
        let records: Vec<Option<&BackendHealth>> =
            ids.iter().map(|id| id.and_then(|id| plane.health.get(id))).collect();
        let w = lbcore::health::listener_weights(l, &records, now);
        if view.backends.len() != w.weights.len()
            || view.backends.iter().zip(&w.weights).any(|(b, w)| b.scheduled_weight != *w)
        {
            due = true;
        }
        // A finished ramp is forgotten once a snapshot at full weight is due.
        for id in ids.iter().flatten() {
            if let Some(h) = plane.health.backends.get_mut(id) {
                if h.ramp_from.is_some_and(|from| now.saturating_sub(from) >= over) {
                    h.ramp_from = None;
                    due = true;
                }
            }
        }
    }
    due
}

/// Whether `h` says down.
pub fn is_down(h: Option<&BackendHealth>) -> bool {
    h.is_some_and(|h| h.state() == Health::Down)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lbproto::MAX_CHECKER_NAME;

    #[test]
    fn checker_names_and_reasons_are_checked() {
        for ok in ["edge-1", "lb2.example.org", "probe@host:2", &"x".repeat(MAX_CHECKER_NAME)] {
            assert!(check_checker_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "builtin", "manual", "none", "a b", "x/y", "é", &"x".repeat(MAX_CHECKER_NAME + 1)] {
            let e = check_checker_name(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::Invalid, "{bad}");
        }
        assert_eq!(check_reason(None).unwrap(), None);
        assert_eq!(check_reason(Some("disk swap")).unwrap().as_deref(), Some("disk swap"));
        assert!(check_reason(Some("a\nb")).is_err());
        assert!(check_reason(Some(&"r".repeat(MAX_HEALTH_REASON + 1))).is_err());
    }

    #[test]
    fn latency_buckets_are_cumulative() {
        let mut b = LatencyBuckets::default();
        assert!(b.cumulative().iter().all(|(_, n)| *n == 0));
        b.record(Duration::from_micros(500));
        b.record(Duration::from_millis(30));
        b.record(Duration::from_secs(60));
        let c = b.cumulative();
        assert_eq!(c.len(), CHECK_BUCKETS_S.len());
        assert_eq!(c[0], (0.001, 1));
        assert_eq!(c.iter().find(|(le, _)| *le == 0.05).unwrap().1, 2);
        assert_eq!(c.last().unwrap().1, 2, "60 s is above every bound (only in +Inf, i.e. the count)");
        assert_eq!(b.count, 3);
        assert!((b.sum_s - 60.0305).abs() < 1e-9);
    }
}
