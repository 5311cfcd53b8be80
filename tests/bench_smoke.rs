//! The packet-rate runner (`benches/run.py`) works: a smoke run with tiny
//! sizes runs every scenario through lbd and dpdk-testpmd and reports a
//! row for each. Speed is never asserted here; what is checked is that
//! each scenario did what it claims (sessions prefilled, packets forwarded
//! by lbd and by testpmd, hand-offs only where the scenario makes them, a
//! session created by (nearly) every packet of the new-flow scenario and
//! by none elsewhere, nothing dropped) and that every figure is a finite
//! number in strict JSON.
//!
//! Needs root, `dpdk-testpmd` and the `pcapgen` and `corelat` examples
//! built with the same profile as this test (testbed/test.sh builds them).

mod common;

use common::{python, repo, TempDir};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

/// target/<profile>, where this test binary's profile put lbd and pcapgen.
fn bin_dir() -> PathBuf {
    // target/<profile>/deps/bench_smoke-* -> target/<profile>
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(|d| d.parent()).expect("target/<profile>").to_path_buf()
}

#[test]
fn runner_smoke_run_reports_every_scenario() {
    let bins = bin_dir();
    for example in ["pcapgen", "corelat"] {
        let path = bins.join("examples").join(example);
        assert!(
            path.exists(),
            "{} missing: build the examples with this profile first (cargo build --examples)",
            path.display()
        );
    }
    let dir = TempDir::new("bench");
    let json = dir.join("rows.json");
    let out = Command::new(python())
        .arg(repo().join("benches/run.py"))
        .args(["--smoke", "--no-build", "--bin-dir"])
        .arg(&bins)
        .arg("--work")
        .arg(dir.join("work"))
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run benches/run.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run.py failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    println!("{stdout}");

    // The printed table: a header and the scaling and memory summaries.
    assert!(stdout.contains("lbd Mpps") && stdout.contains("testpmd") && stdout.contains("ratio"), "{stdout}");
    assert!(stdout.contains("scaling, RSS-aligned queues: 2 workers ="), "{stdout}");
    assert!(stdout.contains("bytes per session slot"), "{stdout}");
    assert!(stdout.contains("SYN flood with the proxy:"), "{stdout}");
    assert!(stdout.contains("% of the scenario's packets created one") && !stdout.contains("WARNING"), "{stdout}");

    // Strict JSON: a NaN or Infinity written by Python fails to parse here.
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).expect("rows.json")).expect("rows JSON");
    let rows = doc["rows"].as_array().expect("rows");
    let names: Vec<&str> = rows.iter().map(|r| r["scenario"].as_str().unwrap()).collect();
    assert_eq!(rows.len(), 11, "{names:?}");
    for r in rows {
        let name = r["scenario"].as_str().unwrap();
        // No figure is missing: no null anywhere in the row.
        assert_no_null(name, r);
        let f = |k: &str| {
            let v = r[k].as_f64().unwrap_or_else(|| panic!("{name}: {k} missing or not a number in {r}"));
            assert!(v.is_finite(), "{name}: {k} is not finite: {r}");
            v
        };
        assert!(f("lbd") > 0.0, "{name}: lbd forwarded nothing: {r}");
        assert!(f("testpmd") > 0.0, "{name}: testpmd forwarded nothing: {r}");
        assert!(f("ratio") > 0.0, "{name}: ratio not positive: {r}");
        assert!(f("ns") > 0.0 && f("bytes_per_session") > 0.0, "{name}: {r}");
        assert_eq!(f("drops"), 0.0, "{name}: lbd dropped packets: {r}");
        // The SYN proxy answers the flood with cookies and keeps no state.
        let flood = name.starts_with("tcp SYN flood, syn_proxy on");
        if flood {
            assert_eq!(f("sessions"), 0.0, "{name}: the proxy kept state for a SYN: {r}");
            assert!(f("answered_share") >= 0.9, "{name}: SYNs not answered with cookies: {r}");
        } else {
            assert!(f("sessions") > 0.0, "{name}: no sessions: {r}");
            assert_eq!(f("answered_share"), 0.0, "{name}: SYN cookies where no listener proxies: {r}");
        }
        let created = f("created_share");
        if name.starts_with("tcp new flows") {
            // Every SYN's previous session must have lapsed (100 ms) when
            // its flow comes round: with the replay cycle shorter than
            // the timeout (the old 5000 flows), the share was 0.
            assert!(created >= 0.9, "{name}: only {created} of the packets created a session: {r}");
        } else {
            // Every session was there before the window (prefilled, with
            // timeouts of an hour): a creation means the prefill missed.
            assert!(created < 0.001, "{name}: {created} of the packets created a session: {r}");
        }
        let handoff = f("handoff_share");
        if name.contains("software hand-off") {
            // Round-robin queues: about half the packets belong to the
            // other worker.
            assert!(handoff > 0.3, "{name}: hand-offs missing: {r}");
            assert_eq!(f("workers"), 2.0);
        } else {
            assert_eq!(handoff, 0.0, "{name}: unexpected hand-offs: {r}");
        }
        // Two-worker rows carry the CPUs' cache-line round trip before and
        // after each run (examples/corelat), when there are two CPUs.
        // CPUs counted by affinity, as the runner counts them
        // (`available_parallelism` also applies a cgroup quota).
        if f("workers") == 2.0 && engine::dpdk::allowed_cpus().len() >= 2 {
            let rtt = r["core_rtt_ns"].as_array().unwrap_or_else(|| panic!("{name}: core_rtt_ns missing: {r}"));
            assert_eq!(rtt.len(), r["runs"].as_array().unwrap().len(), "{name}: one pair per run: {r}");
            for pair in rtt {
                let pair = pair.as_array().unwrap_or_else(|| panic!("{name}: {pair} is not a pair"));
                assert_eq!(pair.len(), 2, "{name}: {r}");
                assert!(pair.iter().all(|v| v.as_f64().is_some_and(|x| x.is_finite() && x > 0.0)), "{name}: {r}");
            }
        } else {
            assert!(r.get("core_rtt_ns").is_none(), "{name}: core_rtt_ns on a one-worker row: {r}");
        }
    }
    // Every DPDK process the runner started (an lbd and a testpmd per
    // scenario) kept off the machine's PCI devices.
    let eals = doc["dpdk_eal"].as_array().expect("dpdk_eal");
    assert_eq!(eals.len(), 2 * rows.len(), "{eals:?}");
    for eal in eals {
        let args: Vec<&str> = eal.as_array().expect("EAL argument list").iter().map(|a| a.as_str().unwrap()).collect();
        assert!(args.contains(&"--no-pci"), "a DPDK process without --no-pci: {args:?}");
    }

    // Prefilled sessions all exist (smoke sizes: 1000, 5000 and 20000).
    let sessions = |n: &str| rows.iter().find(|r| r["scenario"] == n).unwrap()["sessions"].as_f64().unwrap();
    assert_eq!(sessions("tcp established, 1k sessions"), 1000.0);
    assert_eq!(sessions("tcp established, 1M sessions"), 5000.0);
    assert_eq!(sessions("tcp established, 10M sessions"), 20000.0);
    assert_eq!(sessions("udp, 1M flows"), 5000.0);
}

/// Panics if `v` holds a null anywhere (a figure the runner could not
/// measure).
fn assert_no_null(scenario: &str, v: &Value) {
    match v {
        Value::Null => panic!("{scenario}: a null figure in the row"),
        Value::Array(a) => a.iter().for_each(|x| assert_no_null(scenario, x)),
        Value::Object(o) => o.values().for_each(|x| assert_no_null(scenario, x)),
        _ => {}
    }
}
