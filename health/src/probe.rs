//! One probe of one target through the kernel's sockets, bounded by the
//! check's timeout.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{CONNECTION, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use lbcore::health::{CheckKind, CheckTarget, HealthCheck};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::{TcpStream, UdpSocket};

/// Most of an HTTP answer's body read while looking for `body`.
pub const MAX_BODY: usize = 64 * 1024;
/// Largest UDP reply read.
const MAX_DATAGRAM: usize = 64 * 1024;

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub ok: bool,
    pub latency: Duration,
    /// Why it failed (empty when it passed).
    pub error: String,
}

/// Runs one probe of `target`; never takes longer than its timeout (plus
/// scheduling).
pub async fn probe(target: &CheckTarget) -> ProbeResult {
    let start = Instant::now();
    let addr = SocketAddr::from((target.addr, target.port));
    let c = &target.check;
    let outcome = match tokio::time::timeout(c.timeout, run(addr, c)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {:?}", c.timeout)),
    };
    let latency = start.elapsed();
    match outcome {
        Ok(()) => ProbeResult { ok: true, latency, error: String::new() },
        Err(error) => ProbeResult { ok: false, latency, error },
    }
}

async fn run(addr: SocketAddr, c: &HealthCheck) -> Result<(), String> {
    match c.kind {
        CheckKind::Tcp => TcpStream::connect(addr).await.map(drop).map_err(|e| format!("connect: {e}")),
        CheckKind::Udp => udp(addr, c).await,
        CheckKind::Http => http(addr, c).await,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

async fn udp(addr: SocketAddr, c: &HealthCheck) -> Result<(), String> {
    let sock = UdpSocket::bind("0.0.0.0:0").await.map_err(|e| format!("udp socket: {e}"))?;
    // Connected: the kernel hands an ICMP port unreachable for this peer
    // back to us as ECONNREFUSED.
    sock.connect(addr).await.map_err(|e| format!("udp connect: {e}"))?;
    let refused = |e: std::io::Error| {
        if e.kind() == ErrorKind::ConnectionRefused {
            "port unreachable (ICMP)".to_owned()
        } else {
            format!("udp: {e}")
        }
    };
    sock.send(&c.payload).await.map_err(refused)?;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let n = sock.recv(&mut buf).await.map_err(refused)?;
    match &c.expect {
        Some(want) if !contains(&buf[..n], want) => {
            Err(format!("reply of {n} bytes lacks `{}`", String::from_utf8_lossy(want)))
        }
        _ => Ok(()),
    }
}

async fn http(addr: SocketAddr, c: &HealthCheck) -> Result<(), String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_BODY.max(8192))
        .handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|e| format!("http: {e}"))?;
    // The connection is driven beside the request; dropped (and closed)
    // with this probe's future, on success, error or timeout.
    let driver = async move {
        let _ = conn.await;
        std::future::pending::<()>().await
    };
    let host = c.host.clone().unwrap_or_else(|| addr.ip().to_string());
    let request = hyper::Request::get(c.path.as_str())
        .header(HOST, host)
        .header(USER_AGENT, "lbd-health-check")
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("http request: {e}"))?;
    let exchange = async {
        let response = sender.send_request(request).await.map_err(|e| format!("http: {e}"))?;
        let status = response.status().as_u16();
        if !c.status_ok(status) {
            return Err(format!("HTTP status {status}"));
        }
        let Some(want) = &c.body else { return Ok(()) };
        let mut body = response.into_body();
        let mut seen: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("http body: {e}"))?;
            if let Some(data) = frame.data_ref() {
                let room = MAX_BODY - seen.len();
                seen.extend_from_slice(&data[..data.len().min(room)]);
                if contains(&seen, want.as_bytes()) {
                    return Ok(());
                }
                if seen.len() >= MAX_BODY {
                    break;
                }
            }
        }
        Err(format!("body (first {} bytes) lacks `{want}`", seen.len()))
    };
    tokio::select! {
        r = exchange => r,
        () = driver => unreachable!("pending never ends"),
    }
}
