//! Health-check probes and their runner, shared by `lbd` (its built-in
//! checks, thread `lbd-health`) and `lbctl health-check` (an independent
//! checker reporting to one or more lbd).
//!
//! Probes go through the kernel's sockets (TCP connect, UDP exchange,
//! HTTP GET) on a current-thread tokio runtime of the runner's own thread,
//! never on a worker lcore. The decisions (rise/fall, which probes, when)
//! are `lbcore::health`'s; this crate only does the I/O and the timing.

#![forbid(unsafe_code)]

pub mod probe;

use lbcore::health::{spread_offsets, BackendKey, CheckTarget, Health, RiseFall};
use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle as TaskHandle;

pub use probe::{probe, ProbeResult};

/// The probes to run, each with the backends its result is for.
pub type Targets = Vec<(CheckTarget, Vec<BackendKey>)>;

/// One probe's result after the state machine.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub target: CheckTarget,
    /// The backends whose health this target decides.
    pub backends: Arc<Vec<BackendKey>>,
    pub result: ProbeResult,
    /// The target's state after rise/fall.
    pub state: Health,
    /// The state changed with this result (the first result of a target
    /// counts as a change only when it is a failure).
    pub changed: bool,
}

/// A running set of probes on a thread of its own. Dropping it stops the
/// probes and joins the thread.
pub struct Runner {
    targets: watch::Sender<Targets>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").finish_non_exhaustive()
    }
}

impl Runner {
    /// Starts probing `targets` on thread `name`; `sink` gets every
    /// outcome on that thread, so it must not block (hand it on).
    pub fn spawn(name: &str, targets: Targets, sink: impl FnMut(Outcome) + Send + 'static) -> std::io::Result<Runner> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
        let (tx, rx) = watch::channel(targets);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
            runtime.block_on(async move {
                tokio::select! {
                    () = run(rx, sink) => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime cancels every probe task.
            drop(runtime);
        })?;
        Ok(Runner { targets: tx, stop: Some(stop), thread: Some(thread) })
    }

    /// Replaces the set of targets: new ones start, removed ones stop,
    /// the others keep their state and phase.
    pub fn set_targets(&self, targets: Targets) {
        let _ = self.targets.send(targets);
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Running {
    task: TaskHandle<()>,
    machine: RiseFall,
    backends: Arc<Vec<BackendKey>>,
}

async fn run(mut targets: watch::Receiver<Targets>, mut sink: impl FnMut(Outcome)) {
    let (results_tx, mut results) = mpsc::channel::<(CheckTarget, ProbeResult)>(1024);
    let mut running: HashMap<CheckTarget, Running> = HashMap::new();
    let mut changed = true;
    loop {
        if changed {
            let want = targets.borrow_and_update().clone();
            reconcile(&mut running, want, &results_tx);
        }
        tokio::select! {
            r = targets.changed() => {
                if r.is_err() {
                    // The runner handle is gone.
                    return;
                }
                changed = true;
            }
            Some((target, result)) = results.recv() => {
                changed = false;
                let Some(r) = running.get_mut(&target) else { continue };
                let c = &target.check;
                let transition = r.machine.record(result.ok, c.rise, c.fall);
                sink(Outcome {
                    backends: Arc::clone(&r.backends),
                    state: r.machine.state(),
                    changed: transition.is_some(),
                    target,
                    result,
                });
            }
        }
    }
}

fn reconcile(
    running: &mut HashMap<CheckTarget, Running>,
    want: Targets,
    results: &mpsc::Sender<(CheckTarget, ProbeResult)>,
) {
    let keys: Vec<CheckTarget> = want.iter().map(|(t, _)| t.clone()).collect();
    // Targets that go away leave their verdicts behind: a check whose
    // parameters changed (interval, timeout, a port override) starts from
    // the state its backends had, so a reload cannot skip rise or fall.
    let mut retired: Vec<(Arc<Vec<BackendKey>>, RiseFall)> = Vec::new();
    running.retain(|t, r| {
        let keep = keys.contains(t);
        if !keep {
            r.task.abort();
            retired.push((Arc::clone(&r.backends), r.machine.clone()));
        }
        keep
    });
    let offsets = spread_offsets(&keys);
    for ((target, backends), offset) in want.into_iter().zip(offsets) {
        let backends = Arc::new(backends);
        if let Some(r) = running.get_mut(&target) {
            r.backends = backends;
            continue;
        }
        let machine = retired
            .iter()
            .find(|(old, _)| old.iter().any(|b| backends.contains(b)))
            .map(|(_, m)| m.clone())
            .unwrap_or_default();
        let task = tokio::spawn(probe_loop(target.clone(), offset, results.clone()));
        running.insert(target, Running { task, machine, backends });
    }
}

/// Probes `target` every interval, starting `offset` into it.
async fn probe_loop(target: CheckTarget, offset: Duration, results: mpsc::Sender<(CheckTarget, ProbeResult)>) {
    tokio::time::sleep(offset).await;
    let mut tick = tokio::time::interval(target.check.interval);
    // A late probe does not make the next ones come in a burst.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = probe(&target).await;
        if results.send((target.clone(), result)).await.is_err() {
            return;
        }
    }
}
