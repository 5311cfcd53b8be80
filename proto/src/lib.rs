//! The control protocol between `lbd` and `lbctl`.
//!
//! A Unix stream socket carries messages: one JSON document each, sent as
//! one or more frames. A frame is a 4-byte big-endian word, then that many
//! bytes of the message (at most [`MAX_FRAME`]); when the word's top bit
//! ([`FRAME_CONTINUES`]) is set, the message continues in the next frame,
//! and the frame without it ends the message. So an answer larger than one
//! frame (thousands of sessions, the counters of thousands of backends, a
//! large configuration) is streamed as several frames instead of being cut.
//! A request may be at most [`MAX_REQUEST`] bytes and an answer at most
//! [`MAX_RESPONSE`]: a sender refuses to send more (lbd answers a
//! [`ErrorCode::TooLarge`] error naming the limit instead), a receiver
//! stops reading at the limit and reports it. A server that receives a
//! frame header over [`MAX_FRAME`] or a request over [`MAX_REQUEST`]
//! answers `too_large` and closes the connection (the rest of the stream
//! cannot be resynchronised).
//!
//! The client's first request must be [`Request::Hello`] with its
//! [`PROTOCOL_VERSION`]; a server speaking another version answers
//! [`ErrorCode::ProtocolMismatch`] and closes. Every request carries an
//! `id` that its response repeats; an answer with id 0 is the server
//! speaking on its own (a refusal before any request was read, e.g.
//! [`ErrorCode::Busy`]). Errors carry a stable [`ErrorCode`] (for scripts)
//! and a human message.
//!
//! Version history: 1 had single frames only (an answer over 1 MiB closed
//! the connection); 2 added continued frames and `busy`; 3 added
//! `backend_set_health` and the health fields of backends and listeners.
//!
//! This crate has no DPDK in it, so `lbctl` links none.

#![forbid(unsafe_code)]

pub mod stats;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::{self, Read, Write};

/// Bumped on any incompatible change of the messages below.
pub const PROTOCOL_VERSION: u32 = 3;

/// Largest frame body either side accepts (a message may span frames).
pub const MAX_FRAME: usize = 1 << 20;

/// The top bit of a frame's length word: the message continues in the
/// next frame.
pub const FRAME_CONTINUES: u32 = 1 << 31;

/// Largest request message lbd reads (a `config reload` carries a whole
/// configuration file).
pub const MAX_REQUEST: usize = 1 << 20;

/// Largest answer message: room for [`MAX_SESSIONS_LISTED`] sessions and
/// the counters of every listener and backend a configuration may have.
pub const MAX_RESPONSE: usize = 64 << 20;

/// Most sessions one listing returns.
pub const MAX_SESSIONS_LISTED: u32 = 100_000;

/// Where `lbd` listens unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/run/lbd/lbd.sock";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestFrame {
    pub id: u64,
    pub request: Request,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseFrame {
    pub id: u64,
    #[serde(flatten)]
    pub result: Outcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // one per frame; boxing buys nothing
pub enum Outcome {
    Ok(Response),
    Error(ErrorReply),
}

/// A backend of a listener, by address and (when the listener has several
/// on that address) port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendRef {
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl fmt::Display for BackendRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{}", self.address, p),
            None => f.write_str(&self.address),
        }
    }
}

/// A backend as written in the configuration (validated by `lbd`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    pub address: String,
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// A listener as written in the configuration (validated by `lbd`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSpec {
    pub name: String,
    pub vip: String,
    pub protocol: String,
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev_table_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_non_syn: Option<String>,
    #[serde(default)]
    pub backends: Vec<BackendSpec>,
}

/// A backend's health as set by hand or reported by a checker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthSetting {
    Up,
    Down,
    /// Withdraw the setting (by hand) or the report (a checker's): the
    /// remaining sources decide again.
    Auto,
}

impl HealthSetting {
    pub fn name(self) -> &'static str {
        match self {
            HealthSetting::Up => "up",
            HealthSetting::Down => "down",
            HealthSetting::Auto => "auto",
        }
    }
}

/// Longest checker name lbd accepts.
pub const MAX_CHECKER_NAME: usize = 64;

/// Why `name` cannot name a checker (what `lbctl backend list` shows as a
/// state's source), `None` when it can. lbd refuses such reports; lbctl
/// refuses to start a checker so named.
pub fn checker_name_problem(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_CHECKER_NAME
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.@:".contains(c))
        && !matches!(name, "builtin" | "manual" | "none");
    (!ok).then(|| {
        format!(
            "`{name}` is not a checker name (1-{MAX_CHECKER_NAME} of a-z, A-Z, 0-9, `_-.@:`; not builtin, manual or none)"
        )
    })
}
/// Longest reason lbd keeps (longer ones are refused).
pub const MAX_HEALTH_REASON: usize = 256;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener: Option<String>,
    /// A backend address, or address:port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Hello {
        protocol: u32,
        client: String,
    },
    Status,
    ListenerList,
    ListenerAdd {
        listener: ListenerSpec,
    },
    ListenerDel {
        name: String,
    },
    BackendList {
        listener: Option<String>,
    },
    BackendAdd {
        listener: String,
        backend: BackendSpec,
    },
    BackendDel {
        listener: String,
        backend: BackendRef,
    },
    BackendSetWeight {
        listener: String,
        backend: BackendRef,
        weight: u32,
    },
    BackendDrain {
        listener: String,
        backend: BackendRef,
    },
    BackendUndrain {
        listener: String,
        backend: BackendRef,
    },
    /// Sets a backend's health by hand (`checker` absent) or reports it
    /// from an independent checker (`checker` names it; `ttl_ms` says how
    /// long the report counts before it is stale).
    BackendSetHealth {
        listener: String,
        backend: BackendRef,
        state: HealthSetting,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checker: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_ms: Option<u64>,
    },
    Sessions {
        filter: SessionFilter,
        limit: u32,
    },
    SessionCount {
        filter: SessionFilter,
    },
    Stats,
    Neighbors,
    ConfigShow,
    /// Apply a whole configuration: `source` (text and the file name it
    /// came from, for messages), or the file lbd started with.
    ConfigReload {
        source: Option<ConfigText>,
    },
    // Security groups (issue 11).
    SecurityGroupList,
    SecurityGroupShow {
        name: String,
    },
    /// Inserts `rule` before rule `position` (absent: at the end).
    SecurityGroupRuleAdd {
        group: String,
        rule: SecurityRuleSpec,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        position: Option<u32>,
    },
    SecurityGroupRuleDel {
        group: String,
        index: u32,
    },
    SecurityGroupRuleReplace {
        group: String,
        index: u32,
        rule: SecurityRuleSpec,
    },
    /// Sets a group's default action, creating the group (without rules)
    /// when it does not exist.
    SecurityGroupSetDefault {
        group: String,
        action: String,
    },
    /// Removes a group no listener (nor `security.default_group`) names.
    SecurityGroupDelete {
        group: String,
    },
}

/// A security group rule, with the configuration's field names and values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityRuleSpec {
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A security group as `lbctl security-group` shows it; `rules` is empty
/// in a listing (`SecurityGroups`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroupInfo {
    pub name: String,
    pub default: String,
    /// New flows no rule matched.
    pub default_hits: u64,
    pub rule_count: usize,
    /// Listeners that use the group (their own or the instance default).
    pub listeners: Vec<String>,
    pub rules: Vec<SecurityRuleInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityRuleInfo {
    pub index: u32,
    pub action: String,
    pub protocol: String,
    pub sources: Vec<String>,
    /// `80`, `1000-2000`, or empty for every port.
    pub ports: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// New flows this rule decided.
    pub hits: u64,
}

/// A configuration file's text as a client read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigText {
    pub path: String,
    pub yaml: String,
}

impl Request {
    /// The operation name, as used in metrics labels.
    /// Whether the request changes lbd (and goes into the audit log).
    pub fn changes(&self) -> bool {
        matches!(
            self,
            Request::ListenerAdd { .. }
                | Request::ListenerDel { .. }
                | Request::BackendAdd { .. }
                | Request::BackendDel { .. }
                | Request::BackendSetWeight { .. }
                | Request::BackendDrain { .. }
                | Request::BackendUndrain { .. }
                | Request::BackendSetHealth { .. }
                | Request::ConfigReload { .. }
                | Request::SecurityGroupRuleAdd { .. }
                | Request::SecurityGroupRuleDel { .. }
                | Request::SecurityGroupRuleReplace { .. }
                | Request::SecurityGroupSetDefault { .. }
                | Request::SecurityGroupDelete { .. }
        )
    }

    pub fn op(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "hello",
            Request::Status => "status",
            Request::ListenerList => "listener_list",
            Request::ListenerAdd { .. } => "listener_add",
            Request::ListenerDel { .. } => "listener_del",
            Request::BackendList { .. } => "backend_list",
            Request::BackendAdd { .. } => "backend_add",
            Request::BackendDel { .. } => "backend_del",
            Request::BackendSetWeight { .. } => "backend_set_weight",
            Request::BackendDrain { .. } => "backend_drain",
            Request::BackendUndrain { .. } => "backend_undrain",
            Request::BackendSetHealth { .. } => "backend_set_health",
            Request::Sessions { .. } => "sessions",
            Request::SessionCount { .. } => "session_count",
            Request::Stats => "stats",
            Request::Neighbors => "neighbors",
            Request::ConfigShow => "config_show",
            Request::ConfigReload { .. } => "config_reload",
            Request::SecurityGroupList => "security_group_list",
            Request::SecurityGroupShow { .. } => "security_group_show",
            Request::SecurityGroupRuleAdd { .. } => "security_group_rule_add",
            Request::SecurityGroupRuleDel { .. } => "security_group_rule_del",
            Request::SecurityGroupRuleReplace { .. } => "security_group_rule_replace",
            Request::SecurityGroupSetDefault { .. } => "security_group_set_default",
            Request::SecurityGroupDelete { .. } => "security_group_delete",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortStatus {
    pub name: String,
    pub device: String,
    pub driver: String,
    pub mac: String,
    pub address: String,
    pub link_up: bool,
    pub rx_queues: u16,
    pub rss: String,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Drops the PMD reports (missed, errors, no mbuf) for this port.
    pub device_drops: u64,
    /// The port's kernel interface (exception path), when it has one.
    pub exception_interface: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    pub version: String,
    pub dpdk_version: String,
    pub uptime_seconds: f64,
    pub workers: usize,
    pub lcores: Vec<u32>,
    pub config_path: String,
    pub config_generation: u64,
    pub listeners: usize,
    pub backends: usize,
    pub sessions_active: u64,
    pub drops_total: u64,
    pub ports: Vec<PortStatus>,
    /// Listeners whose every backend (not drained) is down.
    pub listeners_all_down: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendInfo {
    pub listener: String,
    pub address: String,
    pub port: u16,
    pub weight: u32,
    pub drained: bool,
    /// Share of the Maglev table (or of the round-robin sequence), in
    /// slots.
    pub share: u64,
    pub sessions_active: u64,
    pub sessions_created: u64,
    pub packets_in: u64,
    pub packets_out: u64,
    /// `up` or `down`.
    pub health: String,
    /// Where the state comes from: `none`, `builtin`, `checker:NAME`,
    /// `manual`.
    pub health_source: String,
    /// Why (the last check's error, a checker's or operator's reason).
    pub health_reason: String,
    /// Milliseconds since the state last changed (or the backend appeared).
    pub health_since_ms: u64,
    /// Milliseconds since the built-in check last probed it.
    pub last_check_ms: Option<u64>,
    pub last_error: Option<String>,
    /// Whether it serves its listener now (up, or the listener fails open).
    pub serving: bool,
    /// The weight it is scheduled by (after drain, health, slow start).
    pub scheduled_weight: u32,
    /// Independent checkers' reports, fresh or stale.
    pub reports: Vec<HealthReportInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthReportInfo {
    pub checker: String,
    pub health: String,
    pub reason: String,
    pub age_ms: u64,
    /// Expired: shown, no longer counted.
    pub stale: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerInfo {
    pub name: String,
    pub vip: String,
    pub protocol: String,
    pub port: u16,
    pub scheduler: String,
    pub backends: usize,
    pub sessions_active: u64,
    pub sessions_created: u64,
    pub packets_in: u64,
    pub packets_out: u64,
    /// The health check (`tcp`, `udp`, `http`), if any.
    pub health_check: Option<String>,
    /// Every backend not drained is down.
    pub all_down: bool,
    /// What it does then: `drop` or `fail_open`.
    pub all_down_policy: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionInfo {
    pub worker: usize,
    pub protocol: String,
    pub client: String,
    pub vip: String,
    pub backend: String,
    pub listener: String,
    pub state: String,
    pub idle_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeighborInfo {
    pub worker: usize,
    pub port: String,
    pub address: String,
    pub mac: String,
    pub state: String,
    pub age_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    pub generation: u64,
    /// From publishing the new snapshot until every worker used it.
    pub propagation_us: u64,
    /// Building the snapshot (validation, Maglev tables).
    pub build_us: u64,
    pub summary: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    Hello { protocol: u32, server: String, dpdk: String },
    Status { status: Status },
    Listeners { listeners: Vec<ListenerInfo> },
    Backends { backends: Vec<BackendInfo> },
    Changed { change: Change },
    Sessions { sessions: Vec<SessionInfo>, truncated: bool },
    SessionCount { count: u64 },
    Stats { stats: stats::Report },
    Neighbors { neighbors: Vec<NeighborInfo> },
    Config { path: String, generation: u64, yaml: String },
    SecurityGroups { groups: Vec<SecurityGroupInfo> },
    SecurityGroup { group: SecurityGroupInfo },
}

/// Stable error codes: scripts match on these, never on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame was not a request this server understands.
    BadRequest,
    /// Client and server speak different protocol versions.
    ProtocolMismatch,
    /// The first request was not a hello.
    HelloRequired,
    /// A frame longer than [`MAX_FRAME`], a request longer than
    /// [`MAX_REQUEST`] or an answer longer than [`MAX_RESPONSE`].
    TooLarge,
    /// The server already serves as many clients as it allows.
    Busy,
    /// No such listener or backend.
    NotFound,
    /// A listener or backend of that name or address exists already.
    AlreadyExists,
    /// The change does not validate; the message names the field.
    Invalid,
    /// The change touches what only a restart can change (ports, EAL,
    /// workers, table sizes).
    RestartRequired,
    /// A worker did not answer in time.
    Timeout,
    /// The client's user is neither root nor in `control.group`.
    PermissionDenied,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::ProtocolMismatch => "protocol_mismatch",
            ErrorCode::HelloRequired => "hello_required",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Busy => "busy",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::Invalid => "invalid",
            ErrorCode::RestartRequired => "restart_required",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorReply {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorReply {
        ErrorReply { code, message: message.into() }
    }
}

impl fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code.as_str())
    }
}

impl std::error::Error for ErrorReply {}

/// Why a message could not be read.
#[derive(Debug)]
pub enum FrameError {
    Io(io::Error),
    /// The peer announced a frame above [`MAX_FRAME`].
    TooLarge(usize),
    /// The frames of one message add up to more than the reader's limit.
    MessageTooLarge {
        limit: usize,
    },
    /// The connection closed in the middle of a frame.
    Truncated,
    /// A frame of no bytes that says the message continues: it carries
    /// nothing, so a stream of them would keep a reader busy forever.
    EmptyContinuation,
    /// The bytes were not the expected JSON message.
    Malformed(serde_json::Error),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Io(e) => write!(f, "{e}"),
            FrameError::TooLarge(n) => write!(f, "frame of {n} bytes exceeds the {MAX_FRAME}-byte frame limit"),
            FrameError::MessageTooLarge { limit } => write!(f, "message exceeds the {limit}-byte limit"),
            FrameError::Truncated => f.write_str("connection closed in the middle of a frame"),
            FrameError::EmptyContinuation => f.write_str("an empty frame cannot continue a message"),
            FrameError::Malformed(e) => write!(f, "malformed message: {e}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// `value` as the bytes of one message.
pub fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(io::Error::other)
}

/// Writes an encoded message as frames of at most [`MAX_FRAME`] bytes.
/// Callers check the size against the receiver's limit first.
pub fn write_message<W: Write>(w: &mut W, body: &[u8]) -> io::Result<()> {
    let mut chunks = body.chunks(MAX_FRAME).peekable();
    if chunks.peek().is_none() {
        w.write_all(&0u32.to_be_bytes())?;
    }
    while let Some(chunk) = chunks.next() {
        let more = if chunks.peek().is_some() { FRAME_CONTINUES } else { 0 };
        // A chunk is at most MAX_FRAME (2^20) bytes: it fits the low bits.
        let word = chunk.len() as u32 | more;
        w.write_all(&word.to_be_bytes())?;
        w.write_all(chunk)?;
    }
    w.flush()
}

/// Writes `value` as one message (in as many frames as it needs).
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, value: &T) -> io::Result<()> {
    write_message(w, &encode(value)?)
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` on end of stream before
/// the first one (only when `eof_ok`).
fn read_exact_or_eof<R: Read>(r: &mut R, buf: &mut [u8], eof_ok: bool) -> Result<bool, FrameError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 && eof_ok => return Ok(false),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    Ok(true)
}

/// Reads the raw bytes of one message of at most `limit` bytes;
/// `Ok(None)` on a clean end of stream before any byte of it.
pub fn read_message<R: Read>(r: &mut R, limit: usize) -> Result<Option<Vec<u8>>, FrameError> {
    let mut body = Vec::new();
    loop {
        let mut word = [0u8; 4];
        if !read_exact_or_eof(r, &mut word, body.is_empty())? {
            return Ok(None);
        }
        let word = u32::from_be_bytes(word);
        let n = (word & !FRAME_CONTINUES) as usize;
        if n > MAX_FRAME {
            return Err(FrameError::TooLarge(n));
        }
        let continues = word & FRAME_CONTINUES != 0;
        if continues && n == 0 {
            return Err(FrameError::EmptyContinuation);
        }
        if body.len() + n > limit {
            return Err(FrameError::MessageTooLarge { limit });
        }
        let at = body.len();
        body.resize(at + n, 0);
        read_exact_or_eof(r, &mut body[at..], false)?;
        if !continues {
            return Ok(Some(body));
        }
    }
}

/// Reads the raw bytes of one request (at most [`MAX_REQUEST`]).
pub fn read_frame_bytes<R: Read>(r: &mut R) -> Result<Option<Vec<u8>>, FrameError> {
    read_message(r, MAX_REQUEST)
}

/// Reads and decodes one message of at most [`MAX_RESPONSE`] bytes.
pub fn read_frame<R: Read, T: DeserializeOwned>(r: &mut R) -> Result<Option<T>, FrameError> {
    match read_message(r, MAX_RESPONSE)? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b).map(Some).map_err(FrameError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let req = RequestFrame {
            id: 7,
            request: Request::BackendSetWeight {
                listener: "web".into(),
                backend: BackendRef { address: "10.1.0.11".into(), port: Some(8080) },
                weight: 3,
            },
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &req).unwrap();
        assert_eq!(u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize, buf.len() - 4);
        let back: RequestFrame = read_frame(&mut &buf[..]).unwrap().unwrap();
        assert_eq!(back, req);
        let json = String::from_utf8(buf[4..].to_vec()).unwrap();
        assert!(json.contains("\"op\":\"backend_set_weight\""), "{json}");

        let resp =
            ResponseFrame { id: 7, result: Outcome::Error(ErrorReply::new(ErrorCode::NotFound, "no listener `x`")) };
        let mut buf = Vec::new();
        write_frame(&mut buf, &resp).unwrap();
        let json = String::from_utf8(buf[4..].to_vec()).unwrap();
        assert_eq!(json, r#"{"id":7,"error":{"code":"not_found","message":"no listener `x`"}}"#);
        assert_eq!(read_frame::<_, ResponseFrame>(&mut &buf[..]).unwrap().unwrap(), resp);
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        assert!(read_frame::<_, RequestFrame>(&mut &[][..]).unwrap().is_none());
        assert!(matches!(read_frame::<_, RequestFrame>(&mut &[0, 0][..]), Err(FrameError::Truncated)));
        assert!(matches!(read_frame::<_, RequestFrame>(&mut &[0, 0, 0, 9, b'{'][..]), Err(FrameError::Truncated)));
        assert!(matches!(read_frame::<_, RequestFrame>(&mut &[0xff, 0, 0, 0][..]), Err(FrameError::TooLarge(_))));
        // Empty frames that claim to continue would never end a message.
        let empty_continued: Vec<u8> = std::iter::repeat_n(FRAME_CONTINUES.to_be_bytes(), 1000).flatten().collect();
        assert!(matches!(read_frame_bytes(&mut &empty_continued[..]), Err(FrameError::EmptyContinuation)));
        let mut buf = vec![0, 0, 0, 5];
        buf.extend_from_slice(b"hello");
        assert!(matches!(read_frame::<_, RequestFrame>(&mut &buf[..]), Err(FrameError::Malformed(_))));
        let mut buf = Vec::new();
        write_frame(&mut buf, &serde_json::json!({"id": 1, "request": {"op": "format_disk"}})).unwrap();
        assert!(matches!(read_frame::<_, RequestFrame>(&mut &buf[..]), Err(FrameError::Malformed(_))));
    }

    #[test]
    fn large_messages_span_frames_and_limits_hold() {
        let yaml = "x".repeat(2 * MAX_FRAME + 17);
        let resp = ResponseFrame {
            id: 3,
            result: Outcome::Ok(Response::Config { path: "p".into(), generation: 1, yaml: yaml.clone() }),
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &resp).unwrap();
        // Three frames: two full ones flagged as continued, then the end.
        let first = u32::from_be_bytes(buf[..4].try_into().unwrap());
        assert_eq!(first, MAX_FRAME as u32 | FRAME_CONTINUES);
        let second_at = 4 + MAX_FRAME;
        let second = u32::from_be_bytes(buf[second_at..second_at + 4].try_into().unwrap());
        assert_eq!(second, MAX_FRAME as u32 | FRAME_CONTINUES);
        let third_at = second_at + 4 + MAX_FRAME;
        let third = u32::from_be_bytes(buf[third_at..third_at + 4].try_into().unwrap());
        assert_eq!(third & FRAME_CONTINUES, 0);
        assert_eq!(buf.len(), third_at + 4 + third as usize);
        assert_eq!(read_frame::<_, ResponseFrame>(&mut &buf[..]).unwrap().unwrap(), resp);
        // The same bytes are over a request's limit.
        assert!(matches!(read_frame_bytes(&mut &buf[..]), Err(FrameError::MessageTooLarge { limit: MAX_REQUEST })));
        assert!(matches!(read_message(&mut &buf[..], 2 * MAX_FRAME), Err(FrameError::MessageTooLarge { .. })));
        // A message of exactly one frame's size is one frame.
        let mut buf = Vec::new();
        write_message(&mut buf, &vec![b' '; MAX_FRAME]).unwrap();
        assert_eq!(buf.len(), 4 + MAX_FRAME);
        assert_eq!(read_message(&mut &buf[..], MAX_FRAME).unwrap().unwrap().len(), MAX_FRAME);
        // A continued frame whose end never comes is truncated.
        let mut buf = (3u32 | FRAME_CONTINUES).to_be_bytes().to_vec();
        buf.extend_from_slice(b"abc");
        assert!(matches!(read_message(&mut &buf[..], MAX_FRAME), Err(FrameError::Truncated)));
    }
}
