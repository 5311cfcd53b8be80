//! Health checking's pure logic: the check specification, the rise/fall
//! state machine, which probes run (one per address, port and check,
//! shared by the listeners that use it) and when (spread over the
//! interval), and how the health of each backend, the all-down policy and
//! slow start turn into the weights a snapshot schedules by.
//!
//! No I/O and no clock here: times are `Duration`s since an epoch the
//! caller picks (lbd: its start). The probes and their runner live in the
//! `lbhealth` crate; `lbd` keeps a [`HealthTable`] on its control plane.

use crate::config::{Forwarding, ListenerConfig};
use crate::ids::BackendId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_RISE: u32 = 2;
pub const DEFAULT_FALL: u32 = 3;
/// What a UDP check sends when the listener names no payload.
pub const DEFAULT_UDP_PAYLOAD: &str = "lbd-health-check";
/// Slow start raises a weight in this many equal steps.
pub const SLOW_START_STEPS: u32 = 10;
/// Longest interval a check may have.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// Longest a checker's report may stay valid: what the slowest allowed
/// check needs (three intervals and a timeout, see `lbctl health-check`).
pub const MAX_REPORT_TTL: Duration = Duration::from_secs(4 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// A TCP connect (handshake completes, then closed).
    Tcp,
    /// A datagram out, a reply back (ICMP port unreachable: down).
    Udp,
    /// An HTTP/1.1 GET with an expected status and optional body text.
    Http,
}

impl CheckKind {
    pub fn name(self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Udp => "udp",
            CheckKind::Http => "http",
        }
    }
}

/// A listener's validated `health_check`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HealthCheck {
    pub kind: CheckKind,
    /// Probe this port instead of the backend's.
    pub port: Option<u16>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Successes in a row that bring a down backend up.
    pub rise: u32,
    /// Failures in a row that take an up backend down.
    pub fall: u32,
    /// UDP: the datagram sent.
    pub payload: Vec<u8>,
    /// UDP: bytes the reply must contain (any reply when `None`).
    pub expect: Option<Vec<u8>>,
    /// HTTP: the request path.
    pub path: String,
    /// HTTP: the Host header (the backend's address when `None`).
    pub host: Option<String>,
    /// HTTP: accepted status codes, as inclusive ranges.
    pub status: Vec<(u16, u16)>,
    /// HTTP: text the body must contain.
    pub body: Option<String>,
}

impl HealthCheck {
    /// A check of `kind` with every default.
    pub fn new(kind: CheckKind) -> HealthCheck {
        HealthCheck {
            kind,
            port: None,
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            rise: DEFAULT_RISE,
            fall: DEFAULT_FALL,
            payload: if kind == CheckKind::Udp { DEFAULT_UDP_PAYLOAD.as_bytes().to_vec() } else { Vec::new() },
            expect: None,
            path: "/".into(),
            host: None,
            status: if kind == CheckKind::Http { vec![(200, 399)] } else { Vec::new() },
            body: None,
        }
    }

    /// Whether an HTTP answer with `code` passes.
    pub fn status_ok(&self, code: u16) -> bool {
        self.status.iter().any(|(lo, hi)| (*lo..=*hi).contains(&code))
    }
}

/// Parses one `status` entry: `200` or `"200-399"`.
pub fn parse_status_range(s: &str) -> Result<(u16, u16), String> {
    let code = |t: &str| -> Result<u16, String> {
        match t.trim().parse::<u16>() {
            Ok(c) if (100..=599).contains(&c) => Ok(c),
            _ => Err(format!("`{t}` is not an HTTP status code (100..=599)")),
        }
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (lo, hi) = (code(a)?, code(b)?);
            if lo > hi {
                return Err(format!("`{s}`: the range ends before it starts"));
            }
            Ok((lo, hi))
        }
        None => code(s).map(|c| (c, c)),
    }
}

/// A backend's health as checks and reports see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Up,
    Down,
}

impl Health {
    pub fn name(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Down => "down",
        }
    }
    pub fn from_ok(ok: bool) -> Health {
        if ok {
            Health::Up
        } else {
            Health::Down
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The rise/fall state machine of one probe target.
///
/// A target starts up and unchecked, so a backend takes traffic from the
/// start; its first result decides at once (a backend that is dead when
/// lbd starts is out after one failed probe, not after `fall`). From then
/// on `fall` failures in a row take it down and `rise` successes in a row
/// bring it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiseFall {
    state: Health,
    checked: bool,
    /// Results in a row that disagree with `state`.
    streak: u32,
}

impl Default for RiseFall {
    fn default() -> Self {
        RiseFall { state: Health::Up, checked: false, streak: 0 }
    }
}

impl RiseFall {
    pub fn state(&self) -> Health {
        self.state
    }

    /// Whether any result was recorded yet.
    pub fn checked(&self) -> bool {
        self.checked
    }

    /// Records one probe result; the new state when it changed.
    pub fn record(&mut self, ok: bool, rise: u32, fall: u32) -> Option<Health> {
        let seen = Health::from_ok(ok);
        if !self.checked {
            self.checked = true;
            self.streak = 0;
            let changed = seen != self.state;
            self.state = seen;
            return changed.then_some(seen);
        }
        if seen == self.state {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if seen == Health::Up { rise } else { fall };
        if self.streak >= needed.max(1) {
            self.state = seen;
            self.streak = 0;
            return Some(seen);
        }
        None
    }
}

/// One probe: where, and with what check.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CheckTarget {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub check: HealthCheck,
}

impl fmt::Display for CheckTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}:{}", self.check.kind.name(), self.addr, self.port)
    }
}

/// A backend of a listener, by name and address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendKey {
    pub listener: String,
    pub addr: Ipv4Addr,
    pub port: u16,
}

impl fmt::Display for BackendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}:{}", self.listener, self.addr, self.port)
    }
}

/// The probes `forwarding` needs: one per address, port and check, each
/// with the backends whose health it decides, in a stable order.
pub fn check_targets(forwarding: &Forwarding) -> Vec<(CheckTarget, Vec<BackendKey>)> {
    let mut by_target: BTreeMap<CheckTarget, Vec<BackendKey>> = BTreeMap::new();
    for l in &forwarding.listeners {
        let Some(check) = &l.health_check else { continue };
        for b in &l.backends {
            // The port override is resolved into the target's port, so a
            // listener naming the port another uses anyway shares its probe.
            let mut check = check.clone();
            let port = check.port.take().unwrap_or(b.port);
            let target = CheckTarget { addr: b.address, port, check };
            by_target.entry(target).or_default().push(BackendKey {
                listener: l.name.clone(),
                addr: b.address,
                port: b.port,
            });
        }
    }
    by_target.into_iter().collect()
}

/// When, within its interval, each of `targets` probes: the targets that
/// share an interval are spaced evenly over it, so probes never come in
/// bursts. `offsets[i]` is for `targets[i]`.
pub fn spread_offsets(targets: &[CheckTarget]) -> Vec<Duration> {
    let mut count: HashMap<Duration, u32> = HashMap::new();
    for t in targets {
        *count.entry(t.check.interval).or_default() += 1;
    }
    let mut seen: HashMap<Duration, u32> = HashMap::new();
    targets
        .iter()
        .map(|t| {
            let n = count[&t.check.interval];
            let i = seen.entry(t.check.interval).or_default();
            let offset = t.check.interval * *i / n;
            *i += 1;
            offset
        })
        .collect()
}

/// Where a backend's current health comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// No check or report: assumed up.
    None,
    Builtin,
    /// An independent checker's report, by the checker's name.
    Checker(String),
    Manual,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::None => f.write_str("none"),
            Source::Builtin => f.write_str("builtin"),
            Source::Checker(n) => write!(f, "checker:{n}"),
            Source::Manual => f.write_str("manual"),
        }
    }
}

/// A state set by a checker or by hand, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub state: Health,
    pub reason: String,
    pub at: Duration,
}

/// An independent checker's report: counts until `expires`, then it is
/// stale (shown, ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub verdict: Verdict,
    pub expires: Duration,
}

/// A change of a backend's effective health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: Health,
    pub to: Health,
    pub source: Source,
    pub reason: String,
}

/// Everything lbd knows about one backend's health.
///
/// Precedence: a manual state beats everything; then the reports of
/// independent checkers that have not expired (up while any says up);
/// then the built-in check; with none of them the backend is up.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackendHealth {
    /// The built-in check's state (after rise/fall), `None` when no
    /// built-in check runs for it.
    pub builtin: Option<Verdict>,
    pub reports: BTreeMap<String, Report>,
    pub manual: Option<Verdict>,
    /// Effective state, its source and reason (as of the last `update`),
    /// and since when.
    pub state: Option<Health>,
    pub source: Option<Source>,
    pub reason: String,
    pub since: Duration,
    /// When the backend last (re)joined, for slow start; `None`: at full
    /// weight.
    pub ramp_from: Option<Duration>,
    /// The latest probe of the built-in check.
    pub last_check: Option<Duration>,
    pub last_error: Option<String>,
    pub last_latency: Option<Duration>,
    pub transitions: u64,
}

impl BackendHealth {
    /// The state that counts now, its source and reason.
    pub fn resolve_at(&self, now: Duration) -> (Health, Source, String) {
        if let Some(v) = &self.manual {
            return (v.state, Source::Manual, v.reason.clone());
        }
        // Checkers that disagree (a checker cut off from a backend that
        // others reach) must not make it flap: up while any fresh report
        // says up, down when all of them say down; the newest of those
        // reports is the one shown.
        let fresh = self.reports.iter().filter(|(_, r)| r.expires > now);
        let newest_up = fresh.clone().filter(|(_, r)| r.verdict.state == Health::Up).max_by_key(|(_, r)| r.verdict.at);
        if let Some((name, r)) = newest_up.or_else(|| fresh.max_by_key(|(_, r)| r.verdict.at)) {
            return (r.verdict.state, Source::Checker(name.clone()), r.verdict.reason.clone());
        }
        if let Some(v) = &self.builtin {
            return (v.state, Source::Builtin, v.reason.clone());
        }
        (Health::Up, Source::None, String::new())
    }

    /// The effective state (up when never resolved).
    pub fn state(&self) -> Health {
        self.state.unwrap_or(Health::Up)
    }

    /// Re-decides the effective state at `now`; the transition, if any. A
    /// backend coming back up starts its slow-start ramp.
    pub fn update(&mut self, now: Duration) -> Option<Transition> {
        let (state, source, reason) = self.resolve_at(now);
        let before = self.state();
        self.source = Some(source.clone());
        self.reason.clone_from(&reason);
        if self.state.is_none() {
            self.state = Some(state);
            self.since = now;
        }
        if state == before {
            return None;
        }
        self.state = Some(state);
        self.since = now;
        self.transitions += 1;
        if state == Health::Up {
            self.ramp_from = Some(now);
        }
        Some(Transition { from: before, to: state, source, reason })
    }

    /// Whether a report has expired (shown as stale).
    pub fn stale(r: &Report, now: Duration) -> bool {
        r.expires <= now
    }
}

/// The health of every backend lbd serves, by stable id.
#[derive(Debug, Clone, Default)]
pub struct HealthTable {
    pub backends: HashMap<BackendId, BackendHealth>,
}

impl HealthTable {
    pub fn get(&self, id: BackendId) -> Option<&BackendHealth> {
        self.backends.get(&id)
    }

    /// Keeps the records of `ids` (the backends configured now), drops the
    /// others, and adds a record for each new one. A new backend of a
    /// listener with slow start ramps from `now` unless `initial` (lbd's
    /// start: nothing to protect it from yet).
    pub fn sync(&mut self, live: &[(BackendId, bool)], now: Duration, initial: bool) {
        let keep: std::collections::HashSet<BackendId> = live.iter().map(|(id, _)| *id).collect();
        self.backends.retain(|id, _| keep.contains(id));
        for (id, slow_start) in live {
            self.backends.entry(*id).or_insert_with(|| BackendHealth {
                ramp_from: (*slow_start && !initial).then_some(now),
                since: now,
                ..BackendHealth::default()
            });
        }
    }

    /// Re-decides every backend at `now` (reports may have expired).
    pub fn update_all(&mut self, now: Duration) -> Vec<(BackendId, Transition)> {
        let mut out: Vec<(BackendId, Transition)> =
            self.backends.iter_mut().filter_map(|(id, h)| h.update(now).map(|t| (*id, t))).collect();
        out.sort_by_key(|(id, _)| *id);
        out
    }
}

/// The weight a backend schedules by `elapsed` into a slow start of
/// `over`: up in [`SLOW_START_STEPS`] equal steps, never 0 while `weight`
/// is not.
pub fn ramp_weight(weight: u32, elapsed: Duration, over: Duration) -> u32 {
    if weight == 0 || elapsed >= over || over.is_zero() {
        return weight;
    }
    let step = (elapsed.as_nanos() * u128::from(SLOW_START_STEPS) / over.as_nanos()) as u32 + 1;
    let w = u64::from(weight) * u64::from(step.min(SLOW_START_STEPS)) / u64::from(SLOW_START_STEPS);
    (w as u32).max(1)
}

/// What a listener does when every backend that is not drained is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllDownPolicy {
    /// No new flows (dropped as `no_backend`).
    Drop,
    /// Schedule over all of them as if they were healthy.
    FailOpen,
}

impl AllDownPolicy {
    pub fn name(self) -> &'static str {
        match self {
            AllDownPolicy::Drop => "drop",
            AllDownPolicy::FailOpen => "fail_open",
        }
    }
}

/// How one listener's backends are scheduled now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerWeights {
    /// The weights the scheduler uses, one per backend.
    pub weights: Vec<u32>,
    /// Whether each backend serves the listener: not down, or down but
    /// used anyway because the listener fails open. A session on a backend
    /// that does not serve follows `sessions.removed_backend`.
    pub serving: Vec<bool>,
    /// Every backend not drained is down.
    pub all_down: bool,
}

/// The weights of `l`'s backends: the configured weight, 0 when drained or
/// down (unless all are down and the listener fails open), ramped while a
/// slow start runs. `health[i]` is backend `i`'s record, `None` when it has
/// none (up, full weight).
pub fn listener_weights(l: &ListenerConfig, health: &[Option<&BackendHealth>], now: Duration) -> ListenerWeights {
    assert_eq!(l.backends.len(), health.len());
    let down: Vec<bool> = health.iter().map(|h| h.is_some_and(|h| h.state() == Health::Down)).collect();
    let candidates = l.backends.iter().filter(|b| !b.drained).count();
    let all_down = candidates > 0 && l.backends.iter().zip(&down).all(|(b, d)| b.drained || *d);
    let fail_open = all_down && l.all_down == AllDownPolicy::FailOpen;
    let serving: Vec<bool> = down.iter().map(|d| !d || fail_open).collect();
    let weights = l
        .backends
        .iter()
        .zip(health)
        .zip(&serving)
        .map(|((b, h), serves)| {
            if !serves {
                return 0;
            }
            let w = b.effective_weight();
            match (l.slow_start, h.and_then(|h| h.ramp_from)) {
                (Some(over), Some(from)) => ramp_weight(w, now.saturating_sub(from), over),
                _ => w,
            }
        })
        .collect();
    ListenerWeights { weights, serving, all_down }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_result_decides_then_rise_and_fall_count() {
        let mut m = RiseFall::default();
        assert_eq!(m.state(), Health::Up);
        assert!(!m.checked());
        assert_eq!(m.record(false, 2, 3), Some(Health::Down), "first failure takes it down at once");
        assert_eq!(m.record(true, 2, 3), None);
        assert_eq!(m.record(false, 2, 3), None, "a failure breaks the success streak");
        assert_eq!(m.record(true, 2, 3), None);
        assert_eq!(m.record(true, 2, 3), Some(Health::Up), "rise 2");
        assert_eq!(m.record(false, 2, 3), None);
        assert_eq!(m.record(false, 2, 3), None);
        assert_eq!(m.record(true, 2, 3), None);
        assert_eq!(m.record(false, 2, 3), None);
        assert_eq!(m.record(false, 2, 3), None);
        assert_eq!(m.record(false, 2, 3), Some(Health::Down), "fall 3");
        let mut m = RiseFall::default();
        assert_eq!(m.record(true, 1, 1), None, "first success confirms up");
        assert!(m.checked());
        assert_eq!(m.record(false, 1, 1), Some(Health::Down));
        assert_eq!(m.record(true, 1, 1), Some(Health::Up));
    }

    fn verdict(state: Health, at: u64) -> Verdict {
        Verdict { state, reason: format!("r{at}"), at: Duration::from_secs(at) }
    }

    #[test]
    fn manual_beats_reports_beat_builtin_and_reports_expire() {
        let s = Duration::from_secs;
        let mut h = BackendHealth::default();
        assert_eq!(h.update(s(0)), None);
        assert_eq!(h.source, Some(Source::None));
        h.builtin = Some(verdict(Health::Down, 1));
        let t = h.update(s(1)).unwrap();
        assert_eq!((t.from, t.to, t.source), (Health::Up, Health::Down, Source::Builtin));
        h.reports.insert("a".into(), Report { verdict: verdict(Health::Up, 2), expires: s(10) });
        assert_eq!(h.update(s(2)).unwrap().source, Source::Checker("a".into()));
        assert_eq!(h.ramp_from, Some(s(2)), "coming back up starts the ramp");
        // Checkers disagree: up while any fresh report says up.
        h.reports.insert("b".into(), Report { verdict: verdict(Health::Down, 3), expires: s(10) });
        assert_eq!(h.update(s(3)), None);
        assert_eq!(h.source, Some(Source::Checker("a".into())));
        // All say down: down, shown from the newest.
        h.reports.insert("a".into(), Report { verdict: verdict(Health::Down, 2), expires: s(10) });
        assert_eq!(h.update(s(3)).unwrap().source, Source::Checker("b".into()));
        h.manual = Some(verdict(Health::Up, 4));
        assert_eq!(h.update(s(4)).unwrap().source, Source::Manual);
        h.manual = None;
        assert_eq!(h.update(s(5)).unwrap().to, Health::Down);
        // Both reports stale: the built-in check counts again (down: no change).
        assert_eq!(h.update(s(10)), None);
        assert_eq!(h.source, Some(Source::Builtin));
        assert!(BackendHealth::stale(&h.reports["a"], s(10)));
        h.builtin = None;
        assert_eq!(h.update(s(11)).unwrap().source, Source::None);
        assert_eq!(h.transitions, 6);
        assert_eq!(h.since, s(11));
    }

    #[test]
    fn status_ranges_parse_and_match() {
        assert_eq!(parse_status_range("200"), Ok((200, 200)));
        assert_eq!(parse_status_range("200-399"), Ok((200, 399)));
        assert!(parse_status_range("399-200").is_err());
        assert!(parse_status_range("99").is_err());
        assert!(parse_status_range("abc").is_err());
        assert!(parse_status_range("600").is_err());
        let mut c = HealthCheck::new(CheckKind::Http);
        assert!(c.status_ok(200) && c.status_ok(302) && !c.status_ok(500));
        c.status = vec![(204, 204), (500, 599)];
        assert!(c.status_ok(204) && c.status_ok(503) && !c.status_ok(200));
    }

    fn fwd(yaml_listeners: &str) -> Forwarding {
        let y = format!("ports:\n  - {{name: p, device: d, address: 10.1.0.1/24}}\nlisteners:\n{yaml_listeners}");
        crate::config::parse(&y, std::path::Path::new("t")).unwrap().forwarding
    }

    #[test]
    fn one_probe_per_address_port_and_check() {
        let f = fwd(
            "  - name: a\n    vip: 10.1.0.100\n    protocol: tcp\n    port: 80\n    health_check: {kind: tcp}\n    backends: [{address: 10.1.0.11, port: 8080}, {address: 10.1.0.12, port: 8080}]\n\
             \x20 - name: b\n    vip: 10.1.0.101\n    protocol: tcp\n    port: 80\n    health_check: {kind: tcp}\n    backends: [{address: 10.1.0.11, port: 8080}]\n\
             \x20 - name: c\n    vip: 10.1.0.102\n    protocol: tcp\n    port: 80\n    health_check: {kind: tcp, fall: 5}\n    backends: [{address: 10.1.0.11, port: 8080}]\n\
             \x20 - name: d\n    vip: 10.1.0.103\n    protocol: tcp\n    port: 81\n    health_check: {kind: tcp, port: 8080}\n    backends: [{address: 10.1.0.12, port: 9999}]\n\
             \x20 - name: e\n    vip: 10.1.0.104\n    protocol: tcp\n    port: 80\n    backends: [{address: 10.1.0.13, port: 8080}]\n",
        );
        let t = check_targets(&f);
        // a+b share 10.1.0.11:8080; c differs in fall; d's port override
        // makes it share 10.1.0.12:8080 with a; e has no check.
        assert_eq!(t.len(), 3, "{t:#?}");
        let users = |addr: [u8; 4], fall: u32| {
            t.iter()
                .find(|(k, _)| k.addr == Ipv4Addr::from(addr) && k.check.fall == fall)
                .map(|(_, u)| u.iter().map(|b| b.listener.as_str()).collect::<Vec<_>>())
                .unwrap()
        };
        assert_eq!(users([10, 1, 0, 11], 3), vec!["a", "b"]);
        assert_eq!(users([10, 1, 0, 11], 5), vec!["c"]);
        assert_eq!(users([10, 1, 0, 12], 3), vec!["a", "d"]);
    }

    #[test]
    fn offsets_spread_each_interval_evenly() {
        let target = |i: u8, ms: u64| {
            let mut check = HealthCheck::new(CheckKind::Tcp);
            check.interval = Duration::from_millis(ms);
            CheckTarget { addr: Ipv4Addr::new(10, 0, 0, i), port: 80, check }
        };
        let ts = vec![target(1, 2000), target(2, 1000), target(3, 2000), target(4, 2000), target(5, 2000)];
        let o = spread_offsets(&ts);
        let ms: Vec<u128> = o.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![0, 0, 500, 1000, 1500]);
        assert!(spread_offsets(&[]).is_empty());
    }

    #[test]
    fn slow_start_ramps_in_steps_and_never_to_zero() {
        let s = Duration::from_secs;
        assert_eq!(ramp_weight(100, s(0), s(10)), 10);
        assert_eq!(ramp_weight(100, Duration::from_millis(999), s(10)), 10);
        assert_eq!(ramp_weight(100, s(1), s(10)), 20);
        assert_eq!(ramp_weight(100, Duration::from_millis(9999), s(10)), 100);
        assert_eq!(ramp_weight(100, s(10), s(10)), 100);
        assert_eq!(ramp_weight(1, s(0), s(10)), 1);
        assert_eq!(ramp_weight(0, s(0), s(10)), 0);
        let mut last = 0;
        for ms in (0..10_000).step_by(250) {
            let w = ramp_weight(1000, Duration::from_millis(ms), s(10));
            assert!(w >= last && w >= 1);
            last = w;
        }
    }

    fn listener(all_down: &str, extra: &str) -> ListenerConfig {
        fwd(&format!(
            "  - name: a\n    vip: 10.1.0.100\n    protocol: tcp\n    port: 80\n    all_down: {all_down}\n{extra}    backends:\n      - {{address: 10.1.0.11, port: 80, weight: 10}}\n      - {{address: 10.1.0.12, port: 80, weight: 20}}\n      - {{address: 10.1.0.13, port: 80, weight: 30, drained: true}}\n"
        ))
        .listeners
        .remove(0)
    }

    fn rec(state: Health, ramp_from: Option<u64>) -> BackendHealth {
        BackendHealth { state: Some(state), ramp_from: ramp_from.map(Duration::from_secs), ..BackendHealth::default() }
    }

    #[test]
    fn weights_follow_health_drain_all_down_and_slow_start() {
        let now = Duration::from_secs(100);
        let up = rec(Health::Up, None);
        let down = rec(Health::Down, None);
        let l = listener("drop", "");
        let w = listener_weights(&l, &[None, None, None], now);
        assert_eq!((w.weights, w.serving, w.all_down), (vec![10, 20, 0], vec![true; 3], false));
        let w = listener_weights(&l, &[Some(&down), Some(&up), Some(&down)], now);
        assert_eq!((w.weights, w.serving, w.all_down), (vec![0, 20, 0], vec![false, true, false], false));
        // Both backends not drained are down: drop gives no weight at all.
        let w = listener_weights(&l, &[Some(&down), Some(&down), Some(&up)], now);
        assert_eq!((w.weights, w.serving, w.all_down), (vec![0, 0, 0], vec![false, false, true], true));
        // Fail open: all as if healthy (the drained one stays drained).
        let l = listener("fail_open", "");
        let w = listener_weights(&l, &[Some(&down), Some(&down), Some(&down)], now);
        assert_eq!((w.weights, w.serving, w.all_down), (vec![10, 20, 0], vec![true; 3], true));
        // Slow start: the backend back up 5 s into a 10 s ramp has 60 %.
        let l = listener("drop", "    slow_start: 10s\n");
        let ramping = rec(Health::Up, Some(95));
        let w = listener_weights(&l, &[Some(&ramping), Some(&up), None], now);
        assert_eq!(w.weights, vec![6, 20, 0]);
        let w = listener_weights(&l, &[Some(&ramping), Some(&up), None], now + Duration::from_secs(5));
        assert_eq!(w.weights, vec![10, 20, 0]);
        // Without slow start a ramp mark changes nothing.
        let l = listener("drop", "");
        assert_eq!(listener_weights(&l, &[Some(&ramping), None, None], now).weights, vec![10, 20, 0]);
    }

    #[test]
    fn table_keeps_survivors_and_ramps_only_later_additions() {
        let mut t = HealthTable::default();
        let s = Duration::from_secs;
        t.sync(&[(BackendId(1), true), (BackendId(2), false)], s(0), true);
        assert_eq!(t.get(BackendId(1)).unwrap().ramp_from, None, "nothing ramps at start");
        t.backends.get_mut(&BackendId(1)).unwrap().manual = Some(verdict(Health::Down, 1));
        t.update_all(s(1));
        t.sync(&[(BackendId(1), true), (BackendId(3), true)], s(2), false);
        assert_eq!(t.get(BackendId(1)).unwrap().state(), Health::Down, "survives a reload");
        assert!(t.get(BackendId(2)).is_none());
        assert_eq!(t.get(BackendId(3)).unwrap().ramp_from, Some(s(2)));
    }
}
