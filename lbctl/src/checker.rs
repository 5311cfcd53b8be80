//! `lbctl health-check`: the independent checker. Runs the health checks
//! of an lbd configuration file from this host and reports each backend's
//! state (after rise/fall) to one or more lbd through their control
//! sockets, as checker NAME with an expiry: a report counts for
//! 3 × interval + timeout, and is renewed about every interval, so when
//! this checker dies its reports go stale within that time and lbd falls
//! back to its other sources.

use crate::client::{self, Client};
use crate::Failure;
use lbcore::health::{check_targets, BackendKey, Health, HealthCheck};
use lbhealth::{Outcome, Runner};
use lbproto::{BackendRef, HealthSetting, Request, MAX_HEALTH_REASON};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a report of a target with `check` counts in lbd: three
/// intervals and a timeout, within what lbd takes.
pub fn report_ttl(check: &HealthCheck) -> Duration {
    (check.interval * 3 + check.timeout).min(lbcore::health::MAX_REPORT_TTL)
}

/// What the checker tells every lbd about one backend.
struct Update {
    key: BackendKey,
    state: Health,
    reason: String,
    ttl: Duration,
    /// Renew an unchanged state this often.
    refresh: Duration,
}

/// Most updates queued for one lbd; a stalled lbd loses the excess (the
/// next result of each target carries the same information).
const QUEUE: usize = 4096;

/// Reports to one lbd on a thread of its own, so a stalled lbd delays no
/// other.
struct Sink {
    socket: PathBuf,
    name: String,
    client: Option<Client>,
    /// The last failure said, so a persistent one is said once.
    last_error: Option<String>,
    /// Per backend: the state last accepted and when.
    sent: HashMap<BackendKey, (Health, Instant)>,
}

impl Sink {
    fn spawn(socket: PathBuf, name: String) -> std::io::Result<std::sync::mpsc::SyncSender<Arc<Update>>> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Arc<Update>>(QUEUE);
        let mut sink = Sink { socket, name, client: None, last_error: None, sent: HashMap::new() };
        std::thread::Builder::new().name("report".into()).spawn(move || {
            for u in rx {
                sink.update(&u);
            }
        })?;
        Ok(tx)
    }

    fn update(&mut self, u: &Update) {
        let due = match self.sent.get(&u.key) {
            Some((state, at)) => *state != u.state || at.elapsed() >= u.refresh / 2,
            None => true,
        };
        if !due {
            return;
        }
        let req = Request::BackendSetHealth {
            listener: u.key.listener.clone(),
            backend: BackendRef { address: u.key.addr.to_string(), port: Some(u.key.port) },
            state: if u.state == Health::Up { HealthSetting::Up } else { HealthSetting::Down },
            checker: Some(self.name.clone()),
            reason: Some(u.reason.clone()),
            ttl_ms: Some(u.ttl.as_millis() as u64),
        };
        self.sent.insert(u.key.clone(), (u.state, Instant::now()));
        self.report(&u.key, req);
    }

    fn report(&mut self, key: &BackendKey, req: Request) {
        if self.client.is_none() {
            match Client::connect(&self.socket) {
                Ok(c) => self.client = Some(c),
                Err(e) => {
                    self.sent.remove(key);
                    return self.fail(e);
                }
            }
        }
        let Some(c) = self.client.as_mut() else { return };
        match c.call(req) {
            Ok(_) => {
                if self.last_error.take().is_some() {
                    say(&format!("{}: reporting again", self.socket.display()));
                }
            }
            Err(client::Error::Refused(e)) => {
                // lbd is there but does not take this one (e.g. it has no
                // such listener): keep the connection.
                self.sent.remove(key);
                self.fail_for(key, e.to_string());
            }
            Err(client::Error::Io(m) | client::Error::RequestTooLarge(m)) => {
                self.client = None;
                self.sent.remove(key);
                self.fail(m);
            }
        }
    }

    /// A refusal of one backend's report: said once per distinct error,
    /// whichever backend it came with, so a refusal of many backends each
    /// interval does not fill the log.
    fn fail_for(&mut self, key: &impl std::fmt::Display, e: String) {
        if self.last_error.as_deref() != Some(e.as_str()) {
            say(&format!("{}: {key}: {e}", self.socket.display()));
            self.last_error = Some(e);
        }
    }

    fn fail(&mut self, msg: String) {
        if self.last_error.as_deref() != Some(msg.as_str()) {
            say(&format!("{}: {msg}", self.socket.display()));
            self.last_error = Some(msg);
        }
    }
}

fn say(msg: &str) {
    crate::stderr_line(&format!("lbctl health-check: {msg}"));
}

fn reason_of(o: &Outcome) -> String {
    let kind = o.target.check.kind.name();
    let mut r = if o.result.ok { format!("{kind} check passed") } else { format!("{kind} check: {}", o.result.error) };
    if r.len() > MAX_HEALTH_REASON {
        let mut cut = MAX_HEALTH_REASON;
        while !r.is_char_boundary(cut) {
            cut -= 1;
        }
        r.truncate(cut);
    }
    r.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// Runs until killed.
pub fn run(config: &Path, sockets: &[PathBuf], name: &str) -> Result<(), Failure> {
    if let Some(problem) = lbproto::checker_name_problem(name) {
        return Err(Failure::Usage(format!("--name: {problem}")));
    }
    let cfg = lbcore::config::load(config).map_err(|e| Failure::Usage(e.to_string()))?;
    let targets = check_targets(&cfg.forwarding);
    if targets.is_empty() {
        return Err(Failure::Usage(format!("{}: no listener has a health_check", config.display())));
    }
    let sinks = sockets
        .iter()
        .map(|s| Sink::spawn(s.clone(), name.to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::Unreachable(format!("cannot start a reporting thread: {e}")))?;
    say(&format!(
        "checker {name}: {} probe(s) for {} backend(s), reporting to {}",
        targets.len(),
        targets.iter().map(|(_, b)| b.len()).sum::<usize>(),
        sockets.iter().map(|s| s.display().to_string()).collect::<Vec<_>>().join(", ")
    ));
    let (tx, rx) = std::sync::mpsc::channel::<Outcome>();
    let _runner = Runner::spawn("health-check", targets, move |o| {
        let _ = tx.send(o);
    })
    .map_err(|e| Failure::Unreachable(format!("cannot start the probes: {e}")))?;
    for o in rx {
        let reason = reason_of(&o);
        if o.changed {
            for key in o.backends.iter() {
                say(&format!("{key}: {} ({reason})", o.state));
            }
        }
        for key in o.backends.iter() {
            let u = Arc::new(Update {
                key: key.clone(),
                state: o.state,
                reason: reason.clone(),
                ttl: report_ttl(&o.target.check),
                refresh: o.target.check.interval,
            });
            for sink in &sinks {
                let _ = sink.try_send(Arc::clone(&u));
            }
        }
    }
    Err(Failure::Unreachable("the probes stopped".into()))
}

/// The default checker name: this host's name, made a valid one.
pub fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let n: String = host
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "_-.".contains(c) { c } else { '_' })
        .take(lbproto::MAX_CHECKER_NAME)
        .collect();
    if n.is_empty() {
        "checker".into()
    } else {
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lbcore::health::{CheckKind, CheckTarget};
    use lbhealth::ProbeResult;

    fn outcome(ok: bool, error: &str) -> Outcome {
        Outcome {
            target: CheckTarget {
                addr: "10.0.0.1".parse().unwrap(),
                port: 80,
                check: HealthCheck::new(CheckKind::Http),
            },
            backends: Arc::new(Vec::new()),
            result: ProbeResult { ok, latency: Duration::ZERO, error: error.into() },
            state: Health::Up,
            changed: false,
        }
    }

    #[test]
    fn reports_outlive_three_intervals_and_reasons_fit_lbd_limits() {
        let mut c = HealthCheck::new(CheckKind::Tcp);
        assert_eq!(report_ttl(&c), Duration::from_secs(7));
        // The slowest check a configuration allows still gets reports lbd
        // takes (it refuses a ttl above MAX_REPORT_TTL).
        c.interval = lbcore::health::MAX_INTERVAL;
        c.timeout = lbcore::health::MAX_INTERVAL;
        assert!(report_ttl(&c) <= lbcore::health::MAX_REPORT_TTL);
        assert!(report_ttl(&c) >= 3 * c.interval, "a report outlives three intervals");
        assert_eq!(reason_of(&outcome(true, "")), "http check passed");
        assert_eq!(reason_of(&outcome(false, "HTTP status 500")), "http check: HTTP status 500");
        let long = reason_of(&outcome(false, &format!("é\n{}", "x".repeat(1000))));
        assert!(long.len() <= MAX_HEALTH_REASON && !long.chars().any(char::is_control), "{long}");
        let n = default_name();
        assert!(!n.is_empty() && n.len() <= lbproto::MAX_CHECKER_NAME);
    }
}
