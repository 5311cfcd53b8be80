//! The Unix control socket: one accepting thread, one thread per client.
//!
//! A client that stalls mid-request ties up only its own thread, and that
//! only until the request's deadline (10 s from its first byte; 30 s of
//! silence between requests). A client that sends bytes that are not a frame (a length
//! over the frame limit) gets a `too_large` error and a closed connection;
//! a well-framed message that is not a request gets `bad_request` (and the
//! connection stays open after the hello). An answer larger than one frame
//! is streamed in continued frames; one over the answer limit is replaced
//! by a `too_large` error naming the limit. The 33rd client at once gets a
//! `busy` error (id 0) and a closed connection. None of this stops the
//! others from being served.

use super::Runtime;
use crate::log::log_line;
use lbproto::{
    encode, read_frame_bytes, write_frame, write_message, ErrorCode, ErrorReply, FrameError, Outcome, Request,
    RequestFrame, Response, ResponseFrame, MAX_REQUEST, MAX_RESPONSE, PROTOCOL_VERSION,
};
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Clients served at once; more are told so (`busy`) and closed.
pub const MAX_CLIENTS: usize = 32;
/// A client silent this long between requests is dropped.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Once a request's first byte arrived, the whole request must arrive
/// within this: a client trickling a byte now and then cannot hold one of
/// the [`MAX_CLIENTS`] slots for long, whatever each read's timeout.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// Reads one request with two clocks: [`IDLE_TIMEOUT`] until its first
/// byte, then [`REQUEST_DEADLINE`] for all of it.
struct RequestReader<'a> {
    stream: &'a mut UnixStream,
    started: Option<std::time::Instant>,
}

impl std::io::Read for RequestReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let timeout = match self.started {
            None => IDLE_TIMEOUT,
            Some(t) => {
                let left = REQUEST_DEADLINE.saturating_sub(t.elapsed());
                if left.is_zero() {
                    return Err(std::io::Error::new(ErrorKind::TimedOut, "request deadline passed"));
                }
                left
            }
        };
        self.stream.set_read_timeout(Some(timeout))?;
        let n = self.stream.read(buf)?;
        if n > 0 && self.started.is_none() {
            self.started = Some(std::time::Instant::now());
        }
        Ok(n)
    }
}

/// The running socket server.
#[derive(Debug)]
pub struct ControlServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

/// The numeric id of group `name` (a number is taken as is).
fn group_id(name: &str) -> Result<u32, String> {
    if let Ok(n) = name.parse() {
        return Ok(n);
    }
    let groups = std::fs::read_to_string("/etc/group").map_err(|e| format!("cannot read /etc/group: {e}"))?;
    groups
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            Some((f.next()?, f.nth(1)?))
        })
        .find(|(n, _)| *n == name)
        .and_then(|(_, gid)| gid.parse().ok())
        .ok_or_else(|| format!("control.group: no group `{name}`"))
}

/// Binds the control socket at `path`: a stale socket (nobody answers) is
/// replaced; one a live process serves is left alone and is an error, and
/// so is anything at `path` that is not a socket (a mistyped
/// `control.socket` must not cost a file).
pub fn bind(path: &Path, group: Option<&str>) -> Result<UnixListener, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    // Not following a symbolic link: a link is not a socket either.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(format!(
                "{} exists and is not a socket; lbd replaces only a stale socket there (set control.socket)",
                path.display()
            ));
        }
        match UnixStream::connect(path) {
            Ok(_) => {
                return Err(format!(
                    "{} is served by another running lbd; stop it or set control.socket",
                    path.display()
                ))
            }
            Err(_) => std::fs::remove_file(path).map_err(|e| format!("cannot remove stale {}: {e}", path.display()))?,
        }
    }
    let listener = UnixListener::bind(path).map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))?;
    if let Some(g) = group {
        let gid = group_id(g)?;
        std::os::unix::fs::chown(path, None, Some(gid))
            .map_err(|e| format!("cannot give {} to group {g}: {e}", path.display()))?;
    }
    Ok(listener)
}

impl ControlServer {
    /// Serves `listener` on a thread of its own.
    pub fn spawn(listener: UnixListener, path: PathBuf, rt: Arc<Runtime>) -> std::io::Result<ControlServer> {
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread =
            std::thread::Builder::new().name("lbd-control".into()).spawn(move || accept_loop(listener, rt, stop2))?;
        Ok(ControlServer { stop, thread: Some(thread), path })
    }

    /// Stops accepting and removes the socket file. Client threads finish
    /// their current request and see the closed runtime.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Who is at the other end of a control connection (SO_PEERCRED).
#[derive(Debug, Clone, Copy)]
struct Peer {
    uid: u32,
    gid: u32,
    /// None when the peer is in another PID namespace (the kernel says 0):
    /// lbctl in another container, or lbd in a container and lbctl outside.
    pid: Option<i32>,
}

impl Peer {
    fn of(stream: &UnixStream) -> Option<Peer> {
        use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
        let c = getsockopt(stream, PeerCredentials).ok()?;
        Some(Peer { uid: c.uid(), gid: c.gid(), pid: (c.pid() > 0).then_some(c.pid()) })
    }

    /// Root, or a member of `group` (primary or supplementary group of the
    /// peer process). The socket's mode already keeps others out; this
    /// holds even when someone loosens it. A peer whose process lbd cannot
    /// see is judged by its user and primary group alone.
    fn allowed(&self, group: Option<u32>) -> bool {
        if self.uid == 0 {
            return true;
        }
        let Some(g) = group else { return false };
        if self.gid == g {
            return true;
        }
        let Some(pid) = self.pid else { return false };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .is_some_and(|groups| groups.split_whitespace().any(|x| x.parse() == Ok(g)))
    }
}

fn accept_loop(listener: UnixListener, rt: Arc<Runtime>, stop: Arc<AtomicBool>) {
    let active = Arc::new(AtomicUsize::new(0));
    let group = rt.plane.lock().config.startup.control_group.clone().and_then(|g| group_id(&g).ok());
    // Every client: a handle on its socket (to cut it at shutdown) and its
    // thread (to wait for it: it holds the runtime).
    let mut clients: Vec<(UnixStream, JoinHandle<()>)> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        clients.retain(|(_, t)| !t.is_finished());
        match listener.accept() {
            Ok((mut stream, _)) => {
                if active.load(Ordering::SeqCst) >= MAX_CLIENTS {
                    turn_away(
                        &mut stream,
                        ErrorCode::Busy,
                        format!(
                            "lbd is busy: {MAX_CLIENTS} clients are connected, the most it serves at once; try again"
                        ),
                    );
                    continue;
                }
                let peer = Peer::of(&stream);
                if !peer.is_some_and(|p| p.allowed(group)) {
                    rt.record_op("refused", false);
                    turn_away(
                        &mut stream,
                        ErrorCode::PermissionDenied,
                        "only root and members of control.group may use lbd's control socket".into(),
                    );
                    continue;
                }
                let Some(peer) = peer else { continue };
                let Ok(handle) = stream.try_clone() else { continue };
                active.fetch_add(1, Ordering::SeqCst);
                let rt = Arc::clone(&rt);
                let active2 = Arc::clone(&active);
                let spawned = std::thread::Builder::new().name("lbd-client".into()).spawn(move || {
                    serve_client(stream, &rt, peer);
                    active2.fetch_sub(1, Ordering::SeqCst);
                });
                match spawned {
                    Ok(t) => clients.push((handle, t)),
                    Err(_) => {
                        active.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                log_line!("lbd: control socket: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    // Shutting down: unblock every client and wait for it.
    for (s, t) in clients {
        let _ = s.shutdown(std::net::Shutdown::Both);
        let _ = t.join();
    }
}

/// The bytes of the answer to request `id`: the answer itself, or a
/// `too_large` error when it exceeds what a client accepts.
fn encode_reply(id: u64, result: Result<Response, ErrorReply>) -> Vec<u8> {
    let frame = |result| ResponseFrame {
        id,
        result: match result {
            Ok(r) => Outcome::Ok(r),
            Err(e) => Outcome::Error(e),
        },
    };
    let e = match encode(&frame(result)) {
        Ok(body) if body.len() <= MAX_RESPONSE => return body,
        Ok(body) => ErrorReply::new(
            ErrorCode::TooLarge,
            format!(
                "the answer is {} bytes, more than the {MAX_RESPONSE}-byte limit of one answer; ask for less (e.g. a --limit or a filter)",
                body.len()
            ),
        ),
        Err(e) => ErrorReply::new(ErrorCode::Internal, format!("cannot encode the answer: {e}")),
    };
    encode(&frame(Err(e))).unwrap_or_default()
}

fn reply(stream: &mut UnixStream, id: u64, result: Result<Response, ErrorReply>) -> bool {
    write_message(stream, &encode_reply(id, result)).is_ok()
}

/// Tells a client it will not be served (id 0, before any request) and
/// lets the connection go: best effort, at most a second's wait.
fn turn_away(stream: &mut UnixStream, code: ErrorCode, message: String) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let reply = ResponseFrame { id: 0, result: Outcome::Error(ErrorReply::new(code, message)) };
    let _ = write_frame(stream, &reply);
}

/// The audit line of a change: who (user and process), what, and how it
/// ended.
fn audit(peer: &Peer, op: &str, result: &Result<Response, ErrorReply>) {
    let outcome = match result {
        Ok(Response::Changed { change }) => format!("ok, generation {}: {}", change.generation, change.summary),
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("refused ({}): {}", e.code.as_str(), e.message),
    };
    let pid = peer.pid.map_or_else(|| "outside lbd's PID namespace".to_owned(), |p| p.to_string());
    log_line!("lbd: audit: uid {} pid {pid}: {op}: {outcome}", peer.uid);
}

/// The `id` of a request that did not decode, when it has one.
fn salvage_id(body: &[u8]) -> u64 {
    serde_json::from_slice::<serde_json::Value>(body).ok().and_then(|v| v.get("id")?.as_u64()).unwrap_or(0)
}

fn serve_client(mut stream: UnixStream, rt: &Runtime, peer: Peer) {
    if stream.set_nonblocking(false).is_err()
        || stream.set_read_timeout(Some(IDLE_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(IDLE_TIMEOUT)).is_err()
    {
        return;
    }
    let mut greeted = false;
    loop {
        let body = match read_frame_bytes(&mut RequestReader { stream: &mut stream, started: None }) {
            Ok(Some(b)) => b,
            Ok(None) => return,
            // Not a frame or too much: say why, then close (what follows
            // cannot be told apart from the next request).
            Err(FrameError::TooLarge(n)) => {
                rt.record_op("invalid", false);
                let e = ErrorReply::new(
                    ErrorCode::TooLarge,
                    format!("frame of {n} bytes exceeds the {}-byte frame limit; closing", lbproto::MAX_FRAME),
                );
                reply(&mut stream, 0, Err(e));
                return;
            }
            Err(FrameError::MessageTooLarge { .. }) => {
                rt.record_op("invalid", false);
                let e = ErrorReply::new(
                    ErrorCode::TooLarge,
                    format!("request exceeds the {MAX_REQUEST}-byte limit of one request; closing"),
                );
                reply(&mut stream, 0, Err(e));
                return;
            }
            Err(FrameError::EmptyContinuation) => {
                rt.record_op("invalid", false);
                let e = ErrorReply::new(ErrorCode::BadRequest, "an empty frame cannot continue a message; closing");
                reply(&mut stream, 0, Err(e));
                return;
            }
            // Timeouts, resets, half-sent frames: nothing more to say.
            Err(_) => return,
        };
        let frame: RequestFrame = match serde_json::from_slice(&body) {
            Ok(f) => f,
            Err(e) => {
                rt.record_op("invalid", false);
                let id = salvage_id(&body);
                if !reply(&mut stream, id, Err(ErrorReply::new(ErrorCode::BadRequest, format!("not a request: {e}"))))
                    || !greeted
                {
                    return;
                }
                continue;
            }
        };
        if !greeted {
            let (result, keep) = match &frame.request {
                Request::Hello { protocol, .. } if *protocol == PROTOCOL_VERSION => (
                    Ok(Response::Hello {
                        protocol: PROTOCOL_VERSION,
                        server: format!("lbd {} (git {})", rt.build.version, rt.build.git_revision),
                        dpdk: rt.dpdk_version.clone(),
                    }),
                    true,
                ),
                Request::Hello { protocol, .. } => (
                    Err(ErrorReply::new(
                        ErrorCode::ProtocolMismatch,
                        format!("client speaks control protocol {protocol}, this lbd speaks {PROTOCOL_VERSION}: use the lbctl of the same release"),
                    )),
                    false,
                ),
                _ => (Err(ErrorReply::new(ErrorCode::HelloRequired, "the first request must be a hello")), false),
            };
            rt.record_op("hello", keep);
            if !reply(&mut stream, frame.id, result) || !keep {
                return;
            }
            greeted = true;
            continue;
        }
        let result = rt.handle(&frame.request);
        rt.record_op(frame.request.op(), result.is_ok());
        if frame.request.changes() {
            audit(&peer, frame.request.op(), &result);
        }
        if !reply(&mut stream, frame.id, result) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_over_the_limit_becomes_a_too_large_error() {
        let small = Ok(Response::SessionCount { count: 3 });
        let body = encode_reply(5, small);
        let back: ResponseFrame = serde_json::from_slice(&body).unwrap();
        assert_eq!(back.result, Outcome::Ok(Response::SessionCount { count: 3 }));

        let yaml = "y".repeat(MAX_RESPONSE + 1);
        let body = encode_reply(6, Ok(Response::Config { path: "p".into(), generation: 1, yaml }));
        let back: ResponseFrame = serde_json::from_slice(&body).unwrap();
        assert_eq!(back.id, 6);
        let Outcome::Error(e) = back.result else { panic!("{back:?}") };
        assert_eq!(e.code, ErrorCode::TooLarge);
        assert!(e.message.contains(&format!("{MAX_RESPONSE}-byte limit")), "{}", e.message);
    }
}
