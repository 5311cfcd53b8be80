//! `lbd`'s command line.

use crate::build_info::BuildInfo;
use crate::daemon::{self, RunOptions};
use crate::log::log_line;
use clap::Parser;
use lbcore::config;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "lbd", about = "Layer-4 load balancer on DPDK (NAT mode, Maglev)", disable_version_flag = true)]
struct Args {
    /// Run with this configuration file.
    #[arg(short, long, value_name = "FILE", required_unless_present_any = ["check_config", "version", "completions"])]
    config: Option<PathBuf>,

    /// Validate FILE and exit (never touches DPDK; needs no root).
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,

    /// Write the counters as JSON here at exit and on SIGUSR1 (default: stdout at exit).
    #[arg(long, value_name = "PATH")]
    stats_out: Option<PathBuf>,

    /// Print version, git revision and DPDK version.
    #[arg(short = 'V', long)]
    version: bool,

    /// Print a completion script for SHELL (the Debian package installs
    /// the bash one).
    #[arg(long, value_name = "SHELL", hide = true)]
    completions: Option<clap_complete::Shell>,
}

/// The entry point of the `lbd` binary.
pub fn main(build: BuildInfo) -> ExitCode {
    let args = Args::parse();
    if args.version {
        println!("lbd {} (git {}, built with DPDK {})", build.version, build.git_revision, build.dpdk_build_version);
        return ExitCode::SUCCESS;
    }
    if let Some(shell) = args.completions {
        use clap::CommandFactory;
        use std::io::Write;
        // Into memory first: clap_complete panics when its writer fails.
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Args::command(), "lbd", &mut script);
        return match std::io::stdout().write_all(&script) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    if let Some(path) = args.check_config {
        return match config::load(&path) {
            Ok(c) => {
                let backends: usize = c.forwarding.listeners.iter().map(|l| l.backends.len()).sum();
                println!(
                    "{}: ok ({} port(s), {} listener(s), {} backend(s), {} worker(s))",
                    path.display(),
                    c.startup.ports.len(),
                    c.forwarding.listeners.len(),
                    backends,
                    c.startup.workers
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                log_line!("lbd: {e}");
                ExitCode::from(2)
            }
        };
    }
    let path = args.config.expect("clap requires --config here");
    let (raw, cfg) = match config::load_raw(&path) {
        Ok(c) => c,
        Err(e) => {
            log_line!("lbd: {e}");
            return ExitCode::from(2);
        }
    };
    match daemon::run(&path, raw, cfg, RunOptions { stats_out: args.stats_out }, build) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log_line!("lbd: {e}");
            ExitCode::FAILURE
        }
    }
}
