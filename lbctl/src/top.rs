//! `lbctl top`: a live view of a running lbd, like `top` for the balancer.
//!
//! One `stats` request per refresh; every rate is the difference of two
//! successive counters documents over the time measured between them, so
//! the first frame (and the first after lbd restarted or a counter went
//! backwards) shows "-" instead of a rate. [`render`] is a pure function
//! of the two documents and the window's size; the rest is the terminal.
//!
//! On the terminal: raw mode, the alternate screen and a hidden cursor,
//! undone on every way out (quit keys, SIGINT/SIGTERM/SIGHUP, an error on
//! the way, and a panic: the panic hook restores the terminal first, since
//! lbctl aborts on panic and no destructor would run). When lbd goes away
//! after the view started, the view says so and keeps reconnecting; with
//! `--batch` or `--once` (scripts) lbctl exits with status 3 instead.

use crate::client::{self, Client};
use crate::render::{duration, si};
use crate::{emit, Failure};
use crossterm::cursor::{Hide, MoveTo, Show};
use crossterm::style::Print;
use crossterm::terminal::{self, Clear, ClearType, EnterAlternateScreen, LeaveAlternateScreen};
use crossterm::{execute, queue};
use lbproto::stats::Report;
use lbproto::{Request, Response};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use unicode_width::UnicodeWidthChar;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The live view on the terminal.
    Screen,
    /// Plain frames to standard output, one per refresh.
    Batch,
    /// One plain frame, with rates from two samples a delay apart.
    Once,
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub delay: Duration,
    pub iterations: Option<u64>,
    pub mode: Mode,
}

/// The earlier document and the seconds between the two, when rates can
/// be computed from them.
#[derive(Clone, Copy)]
struct Rates<'a> {
    before: Option<(&'a Report, f64)>,
}

impl<'a> Rates<'a> {
    fn new(now: &Report, prev: Option<(&'a Report, f64)>) -> Rates<'a> {
        // A zero, negative or unmeasurable interval gives no rate, and a
        // lower uptime means lbd restarted: its counters began again.
        let before = prev.filter(|(p, dt)| dt.is_finite() && *dt > 0.0 && p.uptime_seconds <= now.uptime_seconds);
        Rates { before }
    }

    fn prev(&self) -> Option<&'a Report> {
        self.before.map(|(p, _)| p)
    }

    /// Per second from `then` to `now`; none when there is no earlier
    /// value or the counter went backwards (a listener or backend removed
    /// and added again starts from zero).
    fn per_second(&self, now: u64, then: Option<u64>) -> Option<f64> {
        let (_, dt) = self.before?;
        let then = then?;
        (now >= then).then(|| (now - then) as f64 / dt)
    }
}

fn show_rate(r: Option<f64>) -> String {
    r.filter(|v| v.is_finite()).map_or_else(|| "-".into(), si)
}

/// Names come from lbd's configuration: whatever they hold, no control
/// character reaches the terminal.
fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

fn width_of(s: &str) -> usize {
    s.chars().map(|c| c.width().unwrap_or(0)).sum()
}

/// The first `max` columns of `s`.
fn truncate(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = c.width().unwrap_or(0);
        if used + w > max {
            break;
        }
        used += w;
        out.push(c);
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// A section: a title line, then columns as wide as their widest cell.
fn section(out: &mut Vec<String>, title: &str, columns: &[(&str, Align)], rows: &[Vec<String>]) {
    out.push(String::new());
    out.push(title.to_owned());
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (h, _))| rows.iter().map(|r| width_of(&r[i])).chain([width_of(h)]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<&str>| -> String {
        let mut l = String::new();
        for (i, (c, (_, align))) in cells.iter().zip(columns).enumerate() {
            let pad = " ".repeat(widths[i].saturating_sub(width_of(c)));
            if i > 0 {
                l.push_str("  ");
            }
            match align {
                Align::Left => {
                    l.push_str(c);
                    if i + 1 < columns.len() {
                        l.push_str(&pad);
                    }
                }
                Align::Right => {
                    l.push_str(&pad);
                    l.push_str(c);
                }
            }
        }
        l
    };
    out.push(line(columns.iter().map(|(h, _)| *h).collect()));
    for r in rows {
        out.push(line(r.iter().map(String::as_str).collect()));
    }
}

use Align::{Left, Right};

/// The frame for `now` (and rates against `prev`, the earlier document and
/// the seconds between them), as at most `height` lines of at most `width`
/// columns each. Rows that do not fit are cut, and the last line says how
/// many.
pub fn render(now: &Report, prev: Option<(&Report, f64)>, width: usize, height: usize) -> Vec<String> {
    let rates = Rates::new(now, prev);
    let before = rates.prev();
    let mut out = Vec::new();
    out.push(clean(&format!(
        "lbd {}  DPDK {}  up {}  config generation {}  workers {}",
        now.version,
        now.dpdk_version,
        duration(now.uptime_seconds),
        now.config_generation,
        now.workers.len()
    )));
    let port_sum = |r: &Report, f: fn(&lbproto::stats::PortReport) -> u64| r.ports.iter().map(f).sum::<u64>();
    let total =
        |f: fn(&lbproto::stats::PortReport) -> u64| rates.per_second(port_sum(now, f), before.map(|p| port_sum(p, f)));
    let bits = |r: Option<f64>| r.map(|v| v * 8.0);
    out.push(format!(
        "rx {} pkt/s {}b/s  tx {} pkt/s {}b/s  sessions {}  drops {}/s (total {})",
        show_rate(total(|p| p.rx_packets)),
        show_rate(bits(total(|p| p.rx_bytes))),
        show_rate(total(|p| p.tx_packets)),
        show_rate(bits(total(|p| p.tx_bytes))),
        now.sessions_active,
        show_rate(rates.per_second(now.drops_total, before.map(|p| p.drops_total))),
        now.drops_total
    ));

    let event = |w: &lbproto::stats::WorkerReport, e: &str| w.events.get(e).copied();
    let rows: Vec<Vec<String>> = now
        .workers
        .iter()
        .map(|w| {
            let pw = before.and_then(|p| p.workers.iter().find(|x| x.worker == w.worker && x.lcore == w.lcore));
            // Busy share over this interval: polls that found packets over
            // all polls (the document's busy_ratio is since start).
            let busy = match (event(w, "busy_polls"), event(w, "polls"), pw) {
                (Some(b), Some(n), Some(pw)) if rates.before.is_some() => {
                    match (event(pw, "busy_polls"), event(pw, "polls")) {
                        (Some(pb), Some(pn)) if n > pn && b >= pb && b - pb <= n - pn => {
                            format!("{:.0}%", 100.0 * (b - pb) as f64 / (n - pn) as f64)
                        }
                        _ => "-".into(),
                    }
                }
                _ => "-".into(),
            };
            vec![
                w.worker.to_string(),
                w.lcore.to_string(),
                show_rate(rates.per_second(w.rx_packets, pw.map(|x| x.rx_packets))),
                show_rate(rates.per_second(w.tx_packets, pw.map(|x| x.tx_packets))),
                busy,
                w.sessions_active.to_string(),
                show_rate(rates.per_second(w.drops, pw.map(|x| x.drops))),
            ]
        })
        .collect();
    section(
        &mut out,
        "WORKERS",
        &[
            ("worker", Right),
            ("lcore", Right),
            ("rx pps", Right),
            ("tx pps", Right),
            ("busy", Right),
            ("sessions", Right),
            ("drops/s", Right),
        ],
        &rows,
    );

    let find_listener = |name: &str| before.and_then(|p| p.listeners.iter().find(|x| x.name == name));
    let rows: Vec<Vec<String>> = now
        .listeners
        .iter()
        .map(|l| {
            let (t, pt) = (&l.traffic, find_listener(&l.name).map(|x| &x.traffic));
            vec![
                clean(&l.name),
                format!("{}:{}/{}", l.vip, l.port, clean(&l.protocol)),
                show_rate(rates.per_second(t.packets_in, pt.map(|x| x.packets_in))),
                show_rate(rates.per_second(t.packets_out, pt.map(|x| x.packets_out))),
                show_rate(rates.per_second(t.sessions_created, pt.map(|x| x.sessions_created))),
                t.sessions_active.to_string(),
                l.backends.len().to_string(),
            ]
        })
        .collect();
    if rows.is_empty() {
        out.push(String::new());
        out.push("LISTENERS none".into());
    } else {
        section(
            &mut out,
            "LISTENERS",
            &[
                ("listener", Left),
                ("vip", Left),
                ("in pps", Right),
                ("out pps", Right),
                ("new/s", Right),
                ("sessions", Right),
                ("backends", Right),
            ],
            &rows,
        );
    }

    let mut rows = Vec::new();
    for l in &now.listeners {
        let pl = find_listener(&l.name);
        for b in &l.backends {
            let pb = pl.and_then(|x| x.backends.iter().find(|y| y.address == b.address && y.port == b.port));
            let (t, pt) = (&b.traffic, pb.map(|x| &x.traffic));
            let health = clean(b.health.as_deref().unwrap_or("?"));
            let weight = match b.scheduled_weight {
                Some(s) if s != b.weight && !b.drained => format!("{} (now {s})", b.weight),
                _ => b.weight.to_string(),
            };
            rows.push(vec![
                clean(&l.name),
                format!("{}:{}", b.address, b.port),
                if b.drained { format!("{health}, drained") } else { health },
                weight,
                show_rate(rates.per_second(t.packets_in, pt.map(|x| x.packets_in))),
                show_rate(rates.per_second(t.packets_out, pt.map(|x| x.packets_out))),
                show_rate(rates.per_second(t.sessions_created, pt.map(|x| x.sessions_created))),
                t.sessions_active.to_string(),
            ]);
        }
    }
    if !rows.is_empty() {
        section(
            &mut out,
            "BACKENDS",
            &[
                ("listener", Left),
                ("backend", Left),
                ("health", Left),
                ("weight", Right),
                ("in pps", Right),
                ("out pps", Right),
                ("new/s", Right),
                ("sessions", Right),
            ],
            &rows,
        );
    }

    let mut drops: Vec<(&String, u64, Option<f64>)> = now
        .drops
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| (k, *v, rates.per_second(*v, before.map(|p| p.drops.get(k).copied().unwrap_or(0)))))
        .collect();
    // The busiest reasons first, then the largest totals.
    drops.sort_by(|a, b| b.2.unwrap_or(0.0).total_cmp(&a.2.unwrap_or(0.0)).then(b.1.cmp(&a.1)).then(a.0.cmp(b.0)));
    if drops.is_empty() {
        out.push(String::new());
        out.push("DROPS none".into());
    } else {
        let rows: Vec<Vec<String>> =
            drops.iter().map(|(k, v, r)| vec![clean(k), show_rate(*r), v.to_string()]).collect();
        section(&mut out, "DROPS", &[("reason", Left), ("per second", Right), ("total", Right)], &rows);
    }
    fit(out, width, height)
}

/// Cuts `lines` to the window: each to `width` columns, and when there are
/// more than `height`, the last visible one says how many are hidden.
fn fit(mut lines: Vec<String>, width: usize, height: usize) -> Vec<String> {
    if lines.len() > height {
        let keep = height.saturating_sub(1);
        let hidden = lines.len() - keep;
        lines.truncate(keep);
        if height > 0 {
            lines.push(format!("... {hidden} more lines (enlarge the window)"));
        }
    }
    lines.iter().map(|l| truncate(l, width)).collect()
}

/// The frame while lbd cannot be reached.
pub fn render_unreachable(
    socket: &Path,
    message: &str,
    delay: Duration,
    since: Option<f64>,
    width: usize,
    height: usize,
) -> Vec<String> {
    let mut out = vec![
        clean(&format!("lbd at {} is not answering", socket.display())),
        clean(message),
        format!("retrying every {:.1}s; q quits", delay.as_secs_f64()),
    ];
    if let Some(s) = since {
        out.push(format!("last counters {} ago", duration(s)));
    }
    fit(out, width, height)
}

/// One counters document, connecting first when needed.
fn sample(socket: &Path, client: &mut Option<Client>) -> Result<Report, String> {
    if client.is_none() {
        *client = Some(Client::connect(socket)?);
    }
    let c = client.as_mut().expect("connected above");
    match c.call(Request::Stats) {
        Ok(Response::Stats { stats }) => Ok(stats),
        Ok(_) => Err("unexpected answer to stats".into()),
        Err(e) => {
            *client = None;
            Err(match e {
                client::Error::Refused(r) => r.to_string(),
                client::Error::Io(m) | client::Error::RequestTooLarge(m) => m,
            })
        }
    }
}

pub fn run(socket: &Path, opts: Options) -> Result<(), Failure> {
    match opts.mode {
        Mode::Screen => screen(socket, opts),
        Mode::Batch | Mode::Once => batch(socket, opts),
    }
}

/// Plain frames to standard output; lbd going away ends it (status 3).
fn batch(socket: &Path, opts: Options) -> Result<(), Failure> {
    let mut client = Some(Client::connect(socket).map_err(Failure::Unreachable)?);
    let mut prev: Option<(Report, Instant)> = None;
    let mut n = 0u64;
    loop {
        let report = sample(socket, &mut client).map_err(Failure::Unreachable)?;
        let at = Instant::now();
        let since = prev.as_ref().map(|(p, t)| (p, at.duration_since(*t).as_secs_f64()));
        if opts.mode == Mode::Batch || prev.is_some() {
            let mut text = String::new();
            if n > 0 {
                text.push('\n');
            }
            for l in render(&report, since, usize::MAX, usize::MAX) {
                text.push_str(&l);
                text.push('\n');
            }
            emit(&text)?;
            n += 1;
            if opts.mode == Mode::Once || opts.iterations.is_some_and(|max| n >= max) {
                return Ok(());
            }
        }
        prev = Some((report, at));
        std::thread::sleep(opts.delay);
    }
}

/// Puts the terminal back as it was; harmless when done twice.
fn restore_terminal() {
    let _ = execute!(std::io::stdout(), Show, LeaveAlternateScreen);
    let _ = terminal::disable_raw_mode();
}

/// The terminal in the view's state while it lives.
struct Screen;

impl Screen {
    fn enter() -> std::io::Result<Screen> {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
        terminal::enable_raw_mode()?;
        // From here on, dropping the guard undoes whatever was done.
        let s = Screen;
        execute!(std::io::stdout(), EnterAlternateScreen, Hide, Clear(ClearType::All))?;
        Ok(s)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore_terminal();
    }
}

fn draw(out: &mut impl Write, lines: &[String], width: usize, height: usize) -> std::io::Result<()> {
    for (row, l) in lines.iter().enumerate() {
        queue!(out, MoveTo(0, row as u16), Print(l))?;
        // A line as wide as the window leaves the cursor on its last
        // character, which clearing would erase.
        if width_of(l) < width {
            queue!(out, Clear(ClearType::UntilNewLine))?;
        }
    }
    if lines.len() < height {
        queue!(out, MoveTo(0, lines.len() as u16), Clear(ClearType::FromCursorDown))?;
    }
    out.flush()
}

enum Sample {
    Stats(Box<Report>, Instant),
    Unreachable(String),
}

/// Fetches a document every `delay` on its own thread, so a slow or gone
/// lbd never keeps the keys from being read.
fn sampler(socket: PathBuf, delay: Duration, mut client: Option<Client>, tx: mpsc::Sender<Sample>) {
    loop {
        let s = match sample(&socket, &mut client) {
            Ok(r) => Sample::Stats(Box::new(r), Instant::now()),
            Err(m) => Sample::Unreachable(m),
        };
        if tx.send(s).is_err() {
            return;
        }
        std::thread::sleep(delay);
    }
}

fn screen(socket: &Path, opts: Options) -> Result<(), Failure> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(Failure::Usage(
            "lbctl top draws on a terminal; --batch or --once print plain frames for scripts".into(),
        ));
    }
    // lbd must be there to begin with (a wrong --socket is an error, not
    // something to wait for); once the view runs, it waits for lbd.
    let client = Client::connect(socket).map_err(Failure::Unreachable)?;
    let quit = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        signal_hook::flag::register(sig, Arc::clone(&quit))
            .map_err(|e| Failure::Unreachable(format!("cannot handle signals: {e}")))?;
    }
    let (tx, rx) = mpsc::channel();
    let path = socket.to_owned();
    std::thread::spawn(move || sampler(path, opts.delay, Some(client), tx));
    let guard = Screen::enter().map_err(Failure::Output)?;
    let result = view(socket, &rx, &quit, opts);
    drop(guard);
    result.map_err(Failure::Output)
}

enum Key {
    Quit,
    Other,
    TerminalGone,
}

/// Reads the keyboard on a thread of its own: `q`, `Q` or Ctrl-C (a 0x03
/// byte in raw mode) quit. The terminal's bytes are read directly, not
/// through crossterm's event source: once the terminal is gone, that
/// source retries the dead descriptor forever inside `poll`, at 100 % CPU,
/// and never returns (crossterm issue 793). Here a read that ends (EOF or
/// an error such as EIO) reports the terminal gone and stops.
fn keyboard() -> mpsc::Receiver<Key> {
    use std::io::Read;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 64];
        loop {
            let key = match stdin.read(&mut buf) {
                Ok(0) => Key::TerminalGone,
                Ok(n) if buf[..n].iter().any(|b| matches!(b, b'q' | b'Q' | 0x03)) => Key::Quit,
                Ok(_) => Key::Other,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => Key::TerminalGone,
            };
            let last = !matches!(key, Key::Other);
            if tx.send(key).is_err() || last {
                return;
            }
        }
    });
    rx
}

fn view(socket: &Path, rx: &mpsc::Receiver<Sample>, quit: &AtomicBool, opts: Options) -> std::io::Result<()> {
    let mut out = std::io::stdout();
    let mut prev: Option<(Report, Instant)> = None;
    let mut last: Option<(Report, Instant)> = None;
    let mut unreachable: Option<String> = None;
    let mut refreshes = 0u64;
    let mut dirty = false;
    let keys = keyboard();
    let mut size = terminal::size()?;
    loop {
        match keys.recv_timeout(Duration::from_millis(100)) {
            Ok(Key::Quit) => return Ok(()),
            Ok(Key::Other) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            // The terminal is gone (its emulator closed, the session
            // ended): nobody is looking, so stop instead of drawing into
            // the void.
            Ok(Key::TerminalGone) | Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
        }
        if quit.load(Ordering::Relaxed) {
            return Ok(());
        }
        // A resize shows as a new size (checked ten times a second) rather
        // than as an event.
        let now = terminal::size()?;
        if now != size {
            size = now;
            dirty = true;
        }
        loop {
            match rx.try_recv() {
                Ok(Sample::Stats(r, at)) => {
                    prev = last.take();
                    last = Some((*r, at));
                    unreachable = None;
                }
                Ok(Sample::Unreachable(m)) => unreachable = Some(m),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    return Err(std::io::Error::other("the sampling thread stopped"));
                }
            }
            refreshes += 1;
            dirty = true;
        }
        if dirty {
            let (w, h) = terminal::size()?;
            let (w, h) = (usize::from(w), usize::from(h));
            let lines = match (&unreachable, &last) {
                (Some(m), _) => render_unreachable(
                    socket,
                    m,
                    opts.delay,
                    last.as_ref().map(|(_, t)| t.elapsed().as_secs_f64()),
                    w,
                    h,
                ),
                (None, Some((r, at))) => {
                    render(r, prev.as_ref().map(|(p, t)| (p, at.duration_since(*t).as_secs_f64())), w, h)
                }
                (None, None) => fit(vec!["waiting for lbd's counters".into()], w, h),
            };
            draw(&mut out, &lines, w, h)?;
            dirty = false;
            if opts.iterations.is_some_and(|max| refreshes >= max) {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn drops(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }
    use lbproto::stats::{BackendReport, FlowReport, ListenerReport, PortReport, WorkerReport};

    fn report(uptime: f64, packets: u64) -> Report {
        let port = PortReport {
            name: "lan".into(),
            device: "net_null0".into(),
            mac: "02:00:00:00:00:01".into(),
            address: "10.0.0.1/24".into(),
            link_up: true,
            rx_packets: packets,
            rx_bytes: packets * 100,
            tx_packets: packets / 2,
            tx_bytes: packets * 50,
            device_stats: Default::default(),
            rss_mode: "off".into(),
            rss_reta: vec![],
            exception_interface: None,
            to_kernel_packets: 0,
            from_kernel_packets: 0,
        };
        let flow = FlowReport {
            packets_in: packets,
            bytes_in: 0,
            packets_out: packets / 2,
            bytes_out: 0,
            sessions_created: packets / 10,
            sessions_closed: 0,
            sessions_active: packets / 10,
        };
        let worker = |i: usize| WorkerReport {
            worker: i,
            lcore: i as u32 + 1,
            rx_packets: packets,
            tx_packets: packets / 2,
            sessions_active: 3,
            parked: 0,
            busy_ratio: 0.5,
            config_generation: 1,
            events: drops(&[("polls", packets * 4), ("busy_polls", packets)]),
            drops: packets / 100,
        };
        Report {
            version: "0.1.0".into(),
            dpdk_version: "22.11".into(),
            is_final: false,
            seq: 1,
            uptime_seconds: uptime,
            config_generation: 1,
            ports: vec![port],
            drops: drops(&[("no_listener", packets / 100), ("tx_full", 0)]),
            drops_total: packets / 100,
            events: BTreeMap::new(),
            sessions_active: packets / 10,
            sessions_capacity: 0,
            session_memory_bytes: 0,
            parked: 0,
            mempool_in_use: 0,
            mempool_available: 0,
            latency: Default::default(),
            listeners: vec![ListenerReport {
                name: "web".into(),
                vip: "10.0.0.100".parse().unwrap(),
                protocol: "tcp".into(),
                port: 80,
                scheduler: "maglev".into(),
                traffic: flow.clone(),
                backends: vec![BackendReport {
                    address: "10.0.0.11".parse().unwrap(),
                    port: 8080,
                    weight: 1,
                    drained: false,
                    health: Some("up".into()),
                    scheduled_weight: Some(1),
                    traffic: flow,
                }],
                limits: None,
            }],
            workers: vec![worker(0), worker(1)],
            source_table: Default::default(),
            vips: vec![],
        }
    }

    fn text(lines: &[String]) -> String {
        lines.join("\n")
    }

    /// The line whose first cells are the words of `starts`.
    fn row<'a>(lines: &'a [String], starts: &str) -> &'a str {
        let want: Vec<&str> = starts.split_whitespace().collect();
        lines
            .iter()
            .find(|l| l.split_whitespace().take(want.len()).eq(want.iter().copied()))
            .unwrap_or_else(|| panic!("no {starts}: {lines:#?}"))
    }

    fn no_nan(lines: &[String]) {
        let t = text(lines).to_lowercase();
        assert!(!t.contains("nan") && !t.contains("inf"), "{t}");
    }

    #[test]
    fn rates_are_deltas_over_the_interval() {
        let (a, b) = (report(10.0, 1000), report(12.0, 3000));
        let lines = render(&b, Some((&a, 2.0)), 200, 100);
        // Ports: 2000 packets in 2 s; bytes 100 per packet, as bits.
        assert!(lines[1].starts_with("rx 1.00k pkt/s 800.00kb/s  tx 500 pkt/s 400.00kb/s"), "{}", lines[1]);
        assert!(lines[1].contains("drops 10/s (total 30)"), "{}", lines[1]);
        let web = row(&lines, "web ");
        assert!(web.contains("10.0.0.100:80/tcp"), "{web}");
        let cells: Vec<&str> = web.split_whitespace().collect();
        assert_eq!(cells[2..], ["1.00k", "500", "100", "300", "1"], "{web}");
        let be = row(&lines, "web  10.0.0.11:8080");
        assert!(be.contains("up"), "{be}");
        // Workers: busy polls 2000 of 8000 in the interval.
        let w0 = row(&lines, "0 ");
        assert_eq!(w0.split_whitespace().collect::<Vec<_>>(), ["0", "1", "1.00k", "500", "25%", "3", "10"], "{w0}");
        let d = row(&lines, "no_listener");
        assert_eq!(d.split_whitespace().collect::<Vec<_>>(), ["no_listener", "10", "30"]);
        assert!(!text(&lines).contains("tx_full"), "zero reasons are left out");
        no_nan(&lines);
    }

    #[test]
    fn the_first_frame_shows_totals_and_no_rates() {
        let lines = render(&report(5.0, 1000), None, 200, 100);
        assert!(
            lines[1].starts_with("rx - pkt/s -b/s  tx - pkt/s -b/s  sessions 100  drops -/s (total 10)"),
            "{}",
            lines[1]
        );
        let web = row(&lines, "web ");
        assert_eq!(web.split_whitespace().collect::<Vec<_>>()[2..], ["-", "-", "-", "100", "1"]);
        assert_eq!(row(&lines, "no_listener").split_whitespace().collect::<Vec<_>>(), ["no_listener", "-", "10"]);
        no_nan(&lines);
    }

    #[test]
    fn a_zero_or_unmeasurable_interval_gives_no_rate() {
        let (a, b) = (report(10.0, 1000), report(10.0, 3000));
        for dt in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let lines = render(&b, Some((&a, dt)), 200, 100);
            assert!(lines[1].starts_with("rx - pkt/s"), "{dt}: {}", lines[1]);
            no_nan(&lines);
        }
    }

    #[test]
    fn a_restarted_lbd_or_a_counter_going_back_gives_no_rate() {
        // lbd restarted: lower uptime, every counter lower.
        let (a, b) = (report(100.0, 1_000_000), report(1.0, 10));
        let lines = render(&b, Some((&a, 1.0)), 200, 100);
        assert!(lines[1].starts_with("rx - pkt/s -b/s  tx - pkt/s"), "{}", lines[1]);
        assert!(row(&lines, "0 ").split_whitespace().all(|c| !c.ends_with('G') && !c.ends_with('T')));
        // Same lbd, one listener's counters started over (removed and
        // added again): its rates are "-", never a wrapped-around figure.
        let a = report(10.0, 5000);
        let mut b = report(11.0, 6000);
        b.listeners[0].traffic.packets_in = 7;
        let lines = render(&b, Some((&a, 1.0)), 200, 100);
        let web = row(&lines, "web ");
        assert_eq!(web.split_whitespace().nth(2), Some("-"), "{web}");
        assert!(lines[1].starts_with("rx 1.00k pkt/s"), "{}", lines[1]);
        no_nan(&lines);
    }

    #[test]
    fn missing_figures_show_as_dashes() {
        let a = report(10.0, 1000);
        let mut b = report(11.0, 2000);
        // A backend from an lbd that does not report health, a worker
        // without poll counts, a listener and a worker new since the
        // previous document, no listeners' backends in the earlier one.
        b.listeners[0].backends[0].health = None;
        b.listeners[0].backends[0].scheduled_weight = None;
        b.workers[0].events.clear();
        let mut extra = b.workers[1].clone();
        extra.worker = 2;
        b.workers.push(extra);
        let mut l2 = b.listeners[0].clone();
        l2.name = "dns".into();
        b.listeners.push(l2);
        let lines = render(&b, Some((&a, 1.0)), 200, 100);
        assert!(row(&lines, "web  10.0.0.11:8080").contains(" ? "), "{lines:#?}");
        assert_eq!(row(&lines, "0 ").split_whitespace().nth(4), Some("-"));
        assert_eq!(row(&lines, "2 ").split_whitespace().nth(2), Some("-"));
        assert_eq!(row(&lines, "dns ").split_whitespace().nth(2), Some("-"));
        // No listeners and no drops at all.
        let mut empty = report(1.0, 0);
        empty.listeners.clear();
        let lines = render(&empty, None, 200, 100);
        assert!(lines.contains(&"LISTENERS none".to_owned()) && lines.contains(&"DROPS none".to_owned()), "{lines:#?}");
        assert!(!text(&lines).contains("BACKENDS"));
        no_nan(&lines);
    }

    #[test]
    fn a_small_window_cuts_lines_and_rows() {
        let (a, b) = (report(10.0, 1000), report(11.0, 2000));
        let full = render(&b, Some((&a, 1.0)), 1000, 1000);
        let lines = render(&b, Some((&a, 1.0)), 30, 8);
        assert_eq!(lines.len(), 8);
        assert!(lines.iter().all(|l| width_of(l) <= 30), "{lines:#?}");
        assert_eq!(lines[..7], full[..7].iter().map(|l| truncate(l, 30)).collect::<Vec<_>>());
        assert_eq!(lines[7], truncate(&format!("... {} more lines (enlarge the window)", full.len() - 7), 30));
        assert!(render(&b, None, 0, 0).is_empty());
        assert_eq!(render(&b, None, 5, 1), vec![truncate(&format!("... {} more", full.len()), 5)]);
    }

    #[test]
    fn names_cannot_move_the_cursor_and_wide_characters_count_twice() {
        let mut b = report(1.0, 10);
        b.listeners[0].name = "we\x1b[2Jb\u{8}日本".into();
        let lines = render(&b, None, 200, 100);
        assert!(!lines.iter().any(|l| l.chars().any(char::is_control)), "{lines:?}");
        assert!(text(&lines).contains("we?[2Jb?日本"));
        assert_eq!(truncate("日本語", 5), "日本");
        assert_eq!(width_of("日本"), 4);
    }

    #[test]
    fn the_unreachable_frame_says_what_and_when() {
        let lines = render_unreachable(Path::new("/run/lbd.sock"), "gone", Duration::from_secs(1), Some(75.0), 200, 10);
        assert_eq!(lines[0], "lbd at /run/lbd.sock is not answering");
        assert!(lines[2].contains("retrying every 1.0s"));
        assert_eq!(lines[3], "last counters 1m15s ago");
    }
}
