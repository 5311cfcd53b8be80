//! Records what `lbd --version` (and later the build-info metric) reports:
//! the package version comes from Cargo, the git revision and the DPDK
//! version are captured here at build time.

use std::process::Command;

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned()).filter(|s| !s.is_empty())
}

fn main() {
    // A build without the git history (the container's build stage) is
    // told the revision by its builder.
    let given = std::env::var("LBD_GIT_REVISION").ok().filter(|s| !s.is_empty());
    let rev = given.unwrap_or_else(|| {
        let rev = run("git", &["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
        let dirty = run("git", &["status", "--porcelain", "--untracked-files=no"]).is_some();
        if dirty && rev != "unknown" {
            format!("{rev}-dirty")
        } else {
            rev
        }
    });
    println!("cargo:rustc-env=LBD_GIT_REVISION={rev}");
    let dpdk = run("pkg-config", &["--modversion", "libdpdk"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=LBD_DPDK_VERSION={dpdk}");
    // Rebuild when HEAD moves; the index changes on every commit and stage.
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LBD_GIT_REVISION");
}
