//! `lbctl`, the operator's client for a running `lbd`.
//!
//! The control socket it talks to arrives with the control-plane issue;
//! until then `lbd` reports its counters as JSON on SIGUSR1 and at exit
//! (`lbd --stats-out PATH`), and this binary says so instead of pretending.

#![forbid(unsafe_code)]

use clap::Parser;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "lbctl", version, about = "Control a running lbd")]
struct Args {
    /// Path of lbd's control socket.
    #[arg(long, default_value = "/run/lbd/lbd.sock")]
    socket: String,
    /// The command (status, listener, backend, sessions, stats, ...).
    #[arg(trailing_var_arg = true)]
    command: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    eprintln!(
        "lbctl: lbd has no control socket yet ({} does not exist in this version); \
         for counters send lbd SIGUSR1 and read its --stats-out file",
        args.socket
    );
    ExitCode::from(3)
}
