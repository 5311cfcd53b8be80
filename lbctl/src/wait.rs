//! `lbctl wait`: returns once lbd serves requests with its ports started
//! and every worker in its loop, for systemd's `ExecStartPost=` and for
//! scripts that start lbd and then talk to it.
//!
//! lbd binds its control socket before EAL starts but answers only once
//! ports, workers and services are up; a connection made earlier waits in
//! the socket's backlog. So every attempt has its own deadline (what is
//! left of the whole one), and a worker counts as running once it has
//! published the configuration generation it runs (it does so on entering
//! its loop).

use crate::client::{self, Client};
use crate::{emit, Failure};
use lbproto::{Request, Response};
use std::path::Path;
use std::time::{Duration, Instant};

/// Longest and default `--timeout`.
pub const MAX_TIMEOUT_SECONDS: f64 = 86_400.0;

/// `--timeout SECONDS`: finite, from 0 (one attempt) to a day.
pub fn timeout(s: &str) -> Result<Duration, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !v.is_finite() || !(0.0..=MAX_TIMEOUT_SECONDS).contains(&v) {
        return Err(format!("the timeout must be from 0 to {MAX_TIMEOUT_SECONDS} seconds (one day)"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Pause between attempts.
const RETRY: Duration = Duration::from_millis(100);
/// A lower bound for one attempt's socket deadline, so a last attempt just
/// before the deadline still has time for an answer.
const MIN_ATTEMPT: Duration = Duration::from_millis(200);

/// One look: `Ok(summary)` when ready, `Err(why not)` otherwise.
fn attempt(socket: &Path, budget: Duration, link_up: bool) -> Result<String, String> {
    let mut c = Client::connect_timeout(socket, budget.max(MIN_ATTEMPT))?;
    let err = |e: client::Error| match e {
        client::Error::Refused(r) => r.to_string(),
        client::Error::Io(m) | client::Error::RequestTooLarge(m) => m,
    };
    let status = match c.call(Request::Status).map_err(err)? {
        Response::Status { status } => status,
        other => return Err(format!("unexpected answer to status: {other:?}")),
    };
    let stats = match c.call(Request::Stats).map_err(err)? {
        Response::Stats { stats } => stats,
        other => return Err(format!("unexpected answer to stats: {other:?}")),
    };
    if status.ports.is_empty() {
        return Err("lbd reports no ports".into());
    }
    let running = stats.workers.iter().filter(|w| w.config_generation >= 1).count();
    if status.workers == 0 || running < status.workers {
        return Err(format!("{running} of {} worker(s) running", status.workers));
    }
    if link_up {
        let down: Vec<&str> = status.ports.iter().filter(|p| !p.link_up).map(|p| p.name.as_str()).collect();
        if !down.is_empty() {
            return Err(format!("link down on port(s) {}", down.join(", ")));
        }
    }
    Ok(format!(
        "lbd ready: {} worker(s) running, {} port(s) started{}, {} listener(s), configuration generation {}",
        status.workers,
        status.ports.len(),
        if link_up { " with link up" } else { "" },
        status.listeners,
        status.config_generation
    ))
}

/// Tries until ready or `timeout` has passed.
pub fn run(socket: &Path, timeout: Duration, link_up: bool, json: bool) -> Result<(), Failure> {
    let start = Instant::now();
    let deadline = start + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match attempt(socket, left, link_up) {
            Ok(summary) => {
                return if json {
                    emit(&format!("{}\n", serde_json::json!({"ready": true, "message": summary})))
                } else {
                    emit(&format!("{summary}\n"))
                };
            }
            Err(why) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(Failure::Unreachable(format!(
                        "lbd at {} not ready after {:.1} s: {why}",
                        socket.display(),
                        now.duration_since(start).as_secs_f64()
                    )));
                }
                std::thread::sleep(RETRY.min(deadline - now));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_is_bounded_and_finite() {
        assert_eq!(timeout("0"), Ok(Duration::ZERO));
        assert_eq!(timeout("2.5"), Ok(Duration::from_millis(2500)));
        for bad in ["-1", "inf", "NaN", "86401", "soon"] {
            assert!(timeout(bad).is_err(), "{bad}");
        }
    }
}
