//! `lbctl`, the operator's client for a running `lbd`.
//!
//! Talks the control protocol (`lbproto`) over lbd's Unix socket. Tables
//! for people by default, `--json` for scripts; exit status 0 on success,
//! 1 when lbd refused the request, 2 for bad input, 3 when lbd cannot be
//! reached.
//!
//! Output goes through [`emit`]: when the reader of standard output goes
//! away (`lbctl ... | head`), lbctl stops quietly with status 0, like a
//! tool killed by SIGPIPE would stop, but without the signal (Rust ignores
//! SIGPIPE and this crate has no unsafe code to restore it).

#![forbid(unsafe_code)]

mod checker;
mod client;
mod render;
mod top;
mod wait;

use clap::{CommandFactory, Parser, Subcommand};
use client::Client;
use lbproto::{
    BackendRef, BackendSpec, ConfigText, ErrorReply, HealthSetting, ListenerSpec, Request, Response, SessionFilter,
};
use std::io::{ErrorKind, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Shortest and longest `stats --watch` interval.
const WATCH_MIN_SECONDS: f64 = 0.1;
const WATCH_MAX_SECONDS: f64 = 86_400.0;

/// `--watch SECONDS`: a finite number of seconds within the bounds.
fn watch_interval(s: &str) -> Result<Duration, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !v.is_finite() || !(WATCH_MIN_SECONDS..=WATCH_MAX_SECONDS).contains(&v) {
        return Err(format!("the interval must be from {WATCH_MIN_SECONDS} to {WATCH_MAX_SECONDS} seconds (one day)"));
    }
    Ok(Duration::from_secs_f64(v))
}

#[derive(Debug, Parser)]
#[command(name = "lbctl", version, about = "Control a running lbd", propagate_version = true)]
struct Cli {
    /// lbd's control socket.
    #[arg(long, global = true, env = "LBCTL_SOCKET", default_value = lbproto::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print lbd's answer as JSON (errors too) instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Version, uptime, workers, ports and the configuration generation.
    Status,
    /// List, add or remove listeners.
    #[command(subcommand)]
    Listener(ListenerCmd),
    /// List, add, remove, reweight, drain or undrain backends.
    #[command(subcommand)]
    Backend(BackendCmd),
    /// List sessions (or count them).
    Sessions {
        /// Only sessions of this listener.
        #[arg(long)]
        listener: Option<String>,
        /// Only sessions on this backend (ADDRESS or ADDRESS:PORT).
        #[arg(long)]
        backend: Option<String>,
        /// At most this many sessions (1 to 100000).
        #[arg(long, default_value_t = 100,
              value_parser = clap::value_parser!(u32).range(1..=i64::from(lbproto::MAX_SESSIONS_LISTED)))]
        limit: u32,
        /// Print the number of matching sessions only.
        #[arg(long)]
        count: bool,
    },
    /// Counters: per port, listener and backend, drops by reason.
    Stats {
        /// Refresh every SECONDS (0.1 to 86400), showing rates.
        #[arg(long, value_name = "SECONDS", value_parser = watch_interval)]
        watch: Option<Duration>,
        /// With --watch: stop after this many refreshes (at least 1).
        #[arg(long, value_name = "N", requires = "watch", value_parser = clap::value_parser!(u64).range(1..))]
        iterations: Option<u64>,
    },
    /// A live view, like `top`: workers, listener and backend rates and
    /// health, drops by reason.
    ///
    /// Keys: q or Ctrl-C quits. Rates come from the last two samples ("-"
    /// until there are two). Sections: header (versions, uptime, rx/tx
    /// packets/s and bits/s, sessions, drops/s); WORKERS (rx/tx pps, busy
    /// share of polls, sessions, drops/s); LISTENERS (in/out pps, new
    /// connections/s, sessions); BACKENDS (health, weight, in/out pps, new
    /// connections/s, sessions); DROPS (non-zero reasons, per second and
    /// total). If lbd goes away, the view says so and reconnects; --batch
    /// and --once exit with status 3 instead.
    Top {
        /// Seconds between refreshes (0.1 to 86400).
        #[arg(short = 'd', long, value_name = "SECONDS", default_value = "1", value_parser = watch_interval)]
        delay: Duration,
        /// Stop after this many refreshes (at least 1).
        #[arg(short = 'n', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        iterations: Option<u64>,
        /// Plain frames to standard output, one per refresh, without
        /// terminal control codes (like `top -b`).
        #[arg(short = 'b', long)]
        batch: bool,
        /// Print one plain frame, with rates from two samples --delay
        /// apart, and exit.
        #[arg(long, conflicts_with_all = ["batch", "iterations"])]
        once: bool,
    },
    /// The workers' ARP neighbour caches.
    Neighbors,
    /// Rate limits and protection per listener: configured figures, state
    /// (normal, scrubbed, blackholed), offered rates, drops by reason.
    Limits {
        /// Only this listener.
        #[arg(long)]
        listener: Option<String>,
    },
    /// Show or reload the running configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Security groups: list, show with hit counts, edit rules.
    #[command(subcommand)]
    SecurityGroup(SecurityGroupCmd),
    /// Run the health checks of an lbd configuration from this host and
    /// report the backends' states to one or more lbd (an independent
    /// checker; runs until stopped).
    HealthCheck {
        /// The lbd configuration whose listeners' health_check to run.
        #[arg(long)]
        config: PathBuf,
        /// A control socket of an lbd to report to; repeat for more.
        #[arg(long = "report-to", value_name = "SOCKET", required = true)]
        report_to: Vec<PathBuf>,
        /// The name lbd shows as the source of the states (default: this
        /// host's name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Wait until lbd answers with its ports started and every worker
    /// running (exit 0), or fail after --timeout (exit 3): a readiness
    /// check for systemd's ExecStartPost and for scripts.
    Wait {
        /// Give up after SECONDS (0 to 86400; 0 tries once).
        #[arg(long, value_name = "SECONDS", default_value = "60", value_parser = wait::timeout)]
        timeout: Duration,
        /// Also wait for every port's link to be up.
        #[arg(long)]
        link_up: bool,
    },
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum ListenerCmd {
    List,
    Add {
        name: String,
        #[arg(long)]
        vip: String,
        /// tcp or udp.
        #[arg(long)]
        protocol: String,
        #[arg(long)]
        port: u32,
        /// maglev (default), source_hash, round_robin or least_connections.
        #[arg(long)]
        scheduler: Option<String>,
        #[arg(long)]
        maglev_table_size: Option<u32>,
        /// The fields Maglev hashes: five_tuple (default), source_ip or
        /// source_ip_and_destination_port.
        #[arg(long)]
        hash: Option<String>,
        /// Keep a client address on its backend for this long after its
        /// last new connection (e.g. 10m).
        #[arg(long)]
        persistence: Option<String>,
        /// schedule or drop.
        #[arg(long)]
        tcp_non_syn: Option<String>,
        /// A backend ADDRESS:PORT[:WEIGHT]; repeat for more.
        #[arg(long = "backend", value_name = "ADDRESS:PORT[:WEIGHT]")]
        backends: Vec<String>,
    },
    Del {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum BackendCmd {
    List {
        #[arg(long)]
        listener: Option<String>,
    },
    Add {
        listener: String,
        /// ADDRESS:PORT
        backend: String,
        #[arg(long)]
        weight: Option<u32>,
    },
    Del {
        listener: String,
        /// ADDRESS or ADDRESS:PORT
        backend: String,
    },
    SetWeight {
        listener: String,
        backend: String,
        weight: u32,
    },
    /// No new flows to the backend; its sessions continue.
    Drain {
        listener: String,
        backend: String,
    },
    Undrain {
        listener: String,
        backend: String,
    },
    /// Set the backend's health by hand (beats checks and checkers'
    /// reports) or give it back to them (`auto`).
    SetHealth {
        listener: String,
        /// ADDRESS or ADDRESS:PORT
        backend: String,
        #[arg(value_enum)]
        state: HealthArg,
        /// Why (shown in `backend list`).
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum HealthArg {
    Up,
    Down,
    Auto,
}

/// A rule's fields, as in the configuration's `security_groups`.
#[derive(Debug, clap::Args)]
struct RuleArgs {
    /// allow or deny.
    action: String,
    /// tcp, udp or any (default any).
    #[arg(long)]
    protocol: Option<String>,
    /// A client network (CIDR) or address; repeat for more (default: any).
    #[arg(long = "source", value_name = "CIDR")]
    sources: Vec<String>,
    /// Destination port or range: 80 or 1000-2000 (default: all).
    #[arg(long)]
    ports: Option<String>,
    #[arg(long)]
    description: Option<String>,
}

impl RuleArgs {
    fn spec(&self) -> lbproto::SecurityRuleSpec {
        lbproto::SecurityRuleSpec {
            action: self.action.clone(),
            protocol: self.protocol.clone(),
            sources: (!self.sources.is_empty()).then(|| self.sources.clone()),
            ports: self.ports.clone(),
            description: self.description.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
enum SecurityGroupCmd {
    /// The groups, their defaults and the listeners using them.
    List,
    /// A group's rules in order, with the new flows each decided.
    Show { name: String },
    /// Add a rule (at the end, or before rule --position).
    AddRule {
        group: String,
        #[command(flatten)]
        rule: RuleArgs,
        #[arg(long)]
        position: Option<u32>,
    },
    /// Remove rule INDEX (as `show` numbers them).
    DelRule { group: String, index: u32 },
    /// Replace rule INDEX.
    ReplaceRule {
        group: String,
        index: u32,
        #[command(flatten)]
        rule: RuleArgs,
    },
    /// Set the action for flows no rule matches (creates the group).
    SetDefault { group: String, action: String },
    /// Delete a group no listener uses.
    Delete { group: String },
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// The running configuration as YAML (lbctl changes included).
    Show,
    /// Apply FILE as the whole configuration, or re-read lbd's own file.
    Reload { file: Option<PathBuf> },
}

/// A failure and the exit status it maps to.
pub(crate) enum Failure {
    /// lbd answered with an error.
    Refused(ErrorReply),
    /// lbd could not be reached or the exchange broke.
    Unreachable(String),
    /// Bad input caught before talking to lbd.
    Usage(String),
    /// Whoever read our output stopped reading: stop quietly.
    OutputClosed,
    /// Standard output failed otherwise (disk full, ...).
    Output(std::io::Error),
}

impl From<client::Error> for Failure {
    fn from(e: client::Error) -> Failure {
        match e {
            client::Error::Refused(r) => Failure::Refused(r),
            client::Error::Io(m) => Failure::Unreachable(m),
            client::Error::RequestTooLarge(m) => Failure::Usage(m),
        }
    }
}

/// Writes `text` to standard output. A closed pipe is not an error to
/// report: it ends lbctl quietly.
pub(crate) fn emit(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(|e| match e.kind() {
        ErrorKind::BrokenPipe => Failure::OutputClosed,
        _ => Failure::Output(e),
    })
}

/// Writes `line` and a newline to standard error in one write (standard
/// error buffers nothing, and `writeln!` writes each piece of its format
/// apart), so a reader of the log never finds half a line. If that fails
/// there is nobody left to tell.
pub(crate) fn stderr_line(line: &str) {
    let line = format!("{line}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

fn complain(msg: &str) {
    stderr_line(&format!("lbctl: {msg}"));
}

fn backend_ref(s: &str) -> Result<BackendRef, Failure> {
    match s.rsplit_once(':') {
        Some((a, p)) => p
            .parse()
            .map(|port| BackendRef { address: a.to_owned(), port: Some(port) })
            .map_err(|_| Failure::Usage(format!("`{s}`: the port must be a number (ADDRESS or ADDRESS:PORT)"))),
        None => Ok(BackendRef { address: s.to_owned(), port: None }),
    }
}

fn backend_spec(s: &str, weight: Option<u32>) -> Result<BackendSpec, Failure> {
    let parts: Vec<&str> = s.split(':').collect();
    let bad = || Failure::Usage(format!("`{s}` is not ADDRESS:PORT[:WEIGHT]"));
    let (address, port, w) = match parts.as_slice() {
        [a, p] => (*a, p.parse().map_err(|_| bad())?, weight),
        [a, p, w] => (*a, p.parse().map_err(|_| bad())?, Some(w.parse().map_err(|_| bad())?)),
        _ => return Err(bad()),
    };
    Ok(BackendSpec { address: address.to_owned(), port, weight: w })
}

fn request_for(cmd: &Command) -> Result<Request, Failure> {
    Ok(match cmd {
        Command::Status => Request::Status,
        Command::Listener(ListenerCmd::List) => Request::ListenerList,
        Command::Listener(ListenerCmd::Add {
            name,
            vip,
            protocol,
            port,
            scheduler,
            maglev_table_size,
            hash,
            persistence,
            tcp_non_syn,
            backends,
        }) => Request::ListenerAdd {
            listener: ListenerSpec {
                name: name.clone(),
                vip: vip.clone(),
                protocol: protocol.clone(),
                port: *port,
                scheduler: scheduler.clone(),
                maglev_table_size: *maglev_table_size,
                hash: hash.clone(),
                persistence: persistence.clone(),
                tcp_non_syn: tcp_non_syn.clone(),
                backends: backends.iter().map(|b| backend_spec(b, None)).collect::<Result<_, _>>()?,
            },
        },
        Command::Listener(ListenerCmd::Del { name }) => Request::ListenerDel { name: name.clone() },
        Command::Backend(BackendCmd::List { listener }) => Request::BackendList { listener: listener.clone() },
        Command::Backend(BackendCmd::Add { listener, backend, weight }) => {
            Request::BackendAdd { listener: listener.clone(), backend: backend_spec(backend, *weight)? }
        }
        Command::Backend(BackendCmd::Del { listener, backend }) => {
            Request::BackendDel { listener: listener.clone(), backend: backend_ref(backend)? }
        }
        Command::Backend(BackendCmd::SetWeight { listener, backend, weight }) => {
            Request::BackendSetWeight { listener: listener.clone(), backend: backend_ref(backend)?, weight: *weight }
        }
        Command::Backend(BackendCmd::Drain { listener, backend }) => {
            Request::BackendDrain { listener: listener.clone(), backend: backend_ref(backend)? }
        }
        Command::Backend(BackendCmd::Undrain { listener, backend }) => {
            Request::BackendUndrain { listener: listener.clone(), backend: backend_ref(backend)? }
        }
        Command::Backend(BackendCmd::SetHealth { listener, backend, state, reason }) => Request::BackendSetHealth {
            listener: listener.clone(),
            backend: backend_ref(backend)?,
            state: match state {
                HealthArg::Up => HealthSetting::Up,
                HealthArg::Down => HealthSetting::Down,
                HealthArg::Auto => HealthSetting::Auto,
            },
            checker: None,
            reason: reason.clone(),
            ttl_ms: None,
        },
        Command::Sessions { listener, backend, limit, count } => {
            let filter = SessionFilter { listener: listener.clone(), backend: backend.clone() };
            if *count {
                Request::SessionCount { filter }
            } else {
                Request::Sessions { filter, limit: *limit }
            }
        }
        Command::Stats { .. } | Command::Limits { .. } => Request::Stats,
        Command::Neighbors => Request::Neighbors,
        Command::Config(ConfigCmd::Show) => Request::ConfigShow,
        Command::Config(ConfigCmd::Reload { file: None }) => Request::ConfigReload { source: None },
        Command::Config(ConfigCmd::Reload { file: Some(f) }) => {
            // lbctl reads the file, so lbd (root) never opens a path a
            // client names.
            let yaml = std::fs::read_to_string(f).map_err(|e| Failure::Usage(format!("{}: {e}", f.display())))?;
            Request::ConfigReload { source: Some(ConfigText { path: f.display().to_string(), yaml }) }
        }
        Command::SecurityGroup(c) => match c {
            SecurityGroupCmd::List => Request::SecurityGroupList,
            SecurityGroupCmd::Show { name } => Request::SecurityGroupShow { name: name.clone() },
            SecurityGroupCmd::AddRule { group, rule, position } => {
                Request::SecurityGroupRuleAdd { group: group.clone(), rule: rule.spec(), position: *position }
            }
            SecurityGroupCmd::DelRule { group, index } => {
                Request::SecurityGroupRuleDel { group: group.clone(), index: *index }
            }
            SecurityGroupCmd::ReplaceRule { group, index, rule } => {
                Request::SecurityGroupRuleReplace { group: group.clone(), index: *index, rule: rule.spec() }
            }
            SecurityGroupCmd::Delete { group } => Request::SecurityGroupDelete { group: group.clone() },
            SecurityGroupCmd::SetDefault { group, action } => {
                Request::SecurityGroupSetDefault { group: group.clone(), action: action.clone() }
            }
        },
        Command::Completions { .. } | Command::HealthCheck { .. } | Command::Top { .. } | Command::Wait { .. } => {
            unreachable!("handled before connecting")
        }
    })
}

fn run(cli: &Cli) -> Result<(), Failure> {
    if let Command::Completions { shell } = &cli.command {
        // Generated into memory: clap_complete panics when its writer
        // fails, and a closed pipe must not be a panic.
        let mut script = Vec::new();
        clap_complete::generate(*shell, &mut Cli::command(), "lbctl", &mut script);
        return emit(&String::from_utf8_lossy(&script));
    }
    if let Command::HealthCheck { config, report_to, name } = &cli.command {
        let name = name.clone().unwrap_or_else(checker::default_name);
        return checker::run(config, report_to, &name);
    }
    if let Command::Top { delay, iterations, batch, once } = &cli.command {
        if cli.json {
            return Err(Failure::Usage(
                "top has no --json; `lbctl stats --watch SECONDS --json` streams counters".into(),
            ));
        }
        let mode = match (once, batch) {
            (true, _) => top::Mode::Once,
            (false, true) => top::Mode::Batch,
            (false, false) => top::Mode::Screen,
        };
        return top::run(&cli.socket, top::Options { delay: *delay, iterations: *iterations, mode });
    }
    if let Command::Wait { timeout, link_up } = &cli.command {
        return wait::run(&cli.socket, *timeout, *link_up, cli.json);
    }
    let request = request_for(&cli.command)?;
    let mut client = Client::connect(&cli.socket).map_err(Failure::Unreachable)?;
    if let Command::Stats { watch: Some(every), iterations } = &cli.command {
        return render::watch_stats(&mut client, *every, *iterations, cli.json);
    }
    let response = client.call(request)?;
    if let (Command::Limits { listener }, Response::Stats { stats }) = (&cli.command, &response) {
        return render::limits(stats, listener.as_deref(), cli.json);
    }
    if cli.json {
        emit(&format!("{}\n", serde_json::to_string_pretty(&response).unwrap_or_default()))
    } else {
        emit(&render::human(&response))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        // The reader had what it wanted; nothing went wrong on our side.
        Ok(()) | Err(Failure::OutputClosed) => ExitCode::SUCCESS,
        Err(Failure::Refused(e)) => {
            if cli.json {
                let _ = emit(&format!("{}\n", serde_json::json!({"error": e})));
            }
            complain(&e.to_string());
            ExitCode::from(1)
        }
        Err(Failure::Unreachable(m)) => {
            if cli.json {
                let _ = emit(&format!("{}\n", serde_json::json!({"error": {"code": "unreachable", "message": m}})));
            }
            complain(&m);
            ExitCode::from(3)
        }
        Err(Failure::Usage(m)) => {
            complain(&m);
            ExitCode::from(2)
        }
        Err(Failure::Output(e)) => {
            complain(&format!("cannot write the output: {e}"));
            ExitCode::from(1)
        }
    }
}

// Keep the type used in signatures visible to the render module.
pub(crate) type Answer = Response;
