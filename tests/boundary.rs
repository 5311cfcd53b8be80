//! The packet core (`lbcore`) stands without DPDK: nothing in its
//! dependency tree (normal, build or dev) is `dpdk-sys` or `engine`, and
//! it builds and passes its own tests where `pkg-config` cannot find
//! `libdpdk` (any build of `dpdk-sys` would fail there).

mod common;

use common::{repo, TempDir};
use std::process::Command;

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(repo());
    c
}

#[test]
fn packet_core_dependency_tree_has_no_dpdk() {
    let out = cargo()
        .args(["tree", "--offline", "-p", "lbcore", "-e", "normal,build,dev", "--prefix", "none", "--format", "{p}"])
        .output()
        .expect("run cargo tree");
    assert!(out.status.success(), "cargo tree: {}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8(out.stdout).unwrap();
    let crates: Vec<&str> = tree.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(crates.contains(&"lbcore") && crates.contains(&"serde"), "{tree}");
    for forbidden in ["dpdk-sys", "engine", "lbd"] {
        assert!(!crates.contains(&forbidden), "lbcore depends on {forbidden}:\n{tree}");
    }
}

#[test]
fn packet_core_builds_and_tests_without_libdpdk() {
    // Its own target directory: the outer cargo holds the usual one, and
    // nothing built with DPDK may be reused.
    let target = TempDir::new("nodpdk");
    let out = cargo()
        .args(["test", "--offline", "--locked", "-p", "lbcore", "--profile", "ci", "--target-dir"])
        .arg(target.path())
        // pkg-config finds no libdpdk here: dpdk-sys's build script would
        // stop with "pkg-config ... libdpdk failed".
        .env("PKG_CONFIG_LIBDIR", target.join("no-pkgconfig"))
        .env("PKG_CONFIG_PATH", target.join("no-pkgconfig"))
        .args(["--", "--test-threads", "2"])
        .output()
        .expect("run cargo test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "lbcore without libdpdk:\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(!stderr.contains("dpdk-sys"), "dpdk-sys was built:\n{stderr}");
    assert!(stdout.contains("test result: ok."), "{stdout}");
}
