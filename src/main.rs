//! `lbd`: a thin entry point; the daemon lives in the `engine` crate.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    engine::cli::main(engine::BuildInfo {
        version: env!("CARGO_PKG_VERSION"),
        git_revision: env!("LBD_GIT_REVISION"),
        dpdk_build_version: env!("LBD_DPDK_VERSION"),
    })
}
