//! The bodies of the fuzz targets (`fuzz/`, cargo-fuzz on nightly) and of
//! the stable smoke test that runs them over the committed corpus
//! (`core/tests/fuzz_smoke.rs`): one function per target, so both run the
//! same code. Each panics when an invariant breaks; nothing else here may
//! panic on any input.

use crate::config;
use crate::counters::{DropReason, WorkerCounters};
use crate::dataplane::{CoreSettings, Dataplane, Io};
use crate::ids::PortIndex;
use crate::snapshot::{IdRegistry, Snapshot};
use crate::testing::VecPacket;
use crate::wire::checksum::checksum;
use crate::wire::MacAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// The data plane's configuration: both ports, a gateway, static
/// neighbours, and TCP and UDP listeners (Maglev, round robin, one
/// unresolved backend, one without weight), as the core's own tests have;
/// and the internet-facing defences: a SYN proxy always on and one
/// automatic, a security group, listener and per-source limits, and
/// listener and VIP protection with thresholds an input of 32 frames can
/// cross.
pub const DATAPLANE_CONFIG: &str = r#"
eal: ["--no-pci"]
ports:
  - name: ext
    device: net_ring0
    address: 10.0.0.1/24
    gateway: 10.0.0.254
    neighbors: [{ip: 10.0.0.254, mac: "02:00:00:00:00:fe"}]
  - name: int
    device: net_ring1
    address: 10.1.0.1/24
    neighbors:
      - {ip: 10.1.0.11, mac: "02:00:00:00:00:11"}
      - {ip: 10.1.0.12, mac: "02:00:00:00:00:12"}
listeners:
  - name: web
    vip: 10.0.0.100
    protocol: tcp
    port: 80
    maglev_table_size: 251
    backends:
      - {address: 10.1.0.11, port: 8080}
      - {address: 10.1.0.12, port: 8080}
  - name: rr
    vip: 10.0.0.100
    protocol: tcp
    port: 81
    scheduler: round_robin
    persistence: 10s
    backends:
      - {address: 10.1.0.11, port: 8081}
      - {address: 10.1.0.12, port: 8081}
  - name: dns
    vip: 10.0.0.100
    protocol: udp
    port: 53
    maglev_table_size: 251
    backends:
      - {address: 10.1.0.11, port: 5353}
  - name: unresolved
    vip: 10.0.0.101
    protocol: udp
    port: 53
    maglev_table_size: 251
    backends:
      - {address: 10.1.0.50, port: 53}
  - name: empty
    vip: 10.0.0.102
    protocol: tcp
    port: 80
    maglev_table_size: 251
    backends:
      - {address: 10.1.0.11, port: 1, weight: 0}
  - name: proxied
    vip: 10.0.0.100
    protocol: tcp
    port: 82
    syn_proxy: on
    security_group: some
    maglev_table_size: 251
    limits:
      per_source: {new_connections_per_second: 50, max_sessions: 4}
    backends:
      - {address: 10.1.0.11, port: 8082}
      - {address: 10.1.0.12, port: 8082}
  - name: auto
    vip: 10.0.0.103
    protocol: tcp
    port: 80
    syn_proxy: auto
    maglev_table_size: 251
    limits: {new_connections_per_second: 200, packets_per_second: 2000}
    protection:
      scrub: {packets_per_second: 20}
      blackhole: {packets_per_second: 60}
      hold: 1s
    backends:
      - {address: 10.1.0.12, port: 8083}
  - name: limited-udp
    vip: 10.0.0.103
    protocol: udp
    port: 53
    maglev_table_size: 251
    limits:
      per_source: {packets_per_second: 40, max_sessions: 2}
    backends:
      - {address: 10.1.0.11, port: 5353}
vips:
  - address: 10.0.0.103
    protection:
      scrub: {packets_per_second: 6, new_connections_per_second: 4}
      blackhole: {packets_per_second: 16}
      hold: 2s
security_groups:
  some:
    rules:
      - {action: deny, sources: ["192.0.2.0/24"]}
      - {action: allow, protocol: tcp, source: 0.0.0.0/1, ports: "80-90"}
    default: deny
timeouts: {tcp_syn: 1s, tcp_established: 900s, tcp_closing: 2s, udp: 3s}
"#;

/// The ports' MACs in [`DATAPLANE_CONFIG`].
pub const PORT_MACS: [MacAddr; 2] = [MacAddr([0x02, 0, 0, 0, 0, 0x01]), MacAddr([0x02, 0, 0, 0, 0, 0x02])];

/// Where the core's packets went.
#[derive(Default)]
struct Outcomes {
    tx: Vec<VecPacket>,
    handoff: Vec<(usize, VecPacket)>,
    to_kernel: usize,
    freed: usize,
    allocs: usize,
}

impl Io<VecPacket> for Outcomes {
    fn tx(&mut self, port: PortIndex, pkt: VecPacket) {
        assert!(usize::from(port.0) < PORT_MACS.len(), "tx on port {}", port.0);
        self.tx.push(pkt);
    }
    fn handoff(&mut self, worker: usize, pkt: VecPacket) {
        self.handoff.push((worker, pkt));
    }
    fn free(&mut self, _pkt: VecPacket) {
        self.freed += 1;
    }
    fn alloc(&mut self, len: usize, port: PortIndex) -> Option<VecPacket> {
        self.allocs += 1;
        Some(VecPacket { data: vec![0; len], port: port.0 })
    }
    fn to_kernel(&mut self, _port: PortIndex, _pkt: VecPacket) {
        self.to_kernel += 1;
    }
}

fn snapshot() -> Arc<Snapshot> {
    static SNAP: OnceLock<Arc<Snapshot>> = OnceLock::new();
    Arc::clone(SNAP.get_or_init(|| {
        let cfg = config::parse(DATAPLANE_CONFIG, Path::new("fuzz.yaml")).expect("the fuzz config is valid");
        let mut ids = IdRegistry::default();
        ids.assign(&cfg.forwarding, &|_| true).expect("ids");
        Arc::new(Snapshot::build(&cfg, &PORT_MACS, &ids, 1))
    }))
}

fn core(worker: usize, counters: &Arc<WorkerCounters>) -> Dataplane<VecPacket> {
    let settings = CoreSettings {
        // Smaller still: a core is built per input, and an input of 32
        // frames fills these as surely as it would the defaults.
        neighbor_capacity: 16,
        fragments: crate::fragments::FragmentLimits {
            max_datagrams: 8,
            max_fragments: 16,
            max_held: 8,
            timeout_ms: 2000,
        },
        source_entries: 64,
        ..CoreSettings::small(worker, 2)
    };
    let mut dp = Dataplane::new(settings, snapshot(), Arc::clone(counters));
    dp.set_cookie_key(crate::synproxy::CookieKey::from_parts(0x6c62_6466_757a_7a30, 0x636f_6f6b_6965_6b79));
    dp.set_now(1);
    dp
}

fn total_drops(c: &WorkerCounters) -> u64 {
    DropReason::ALL.iter().map(|r| c.drop_count(*r)).sum()
}

/// Frames in one input: each is a header byte (bit 0: the port; bits 1-7:
/// milliseconds to advance the clock before it, ×16), a length byte pair
/// (big-endian, cut to what is left), then the frame. At most 32 frames.
pub fn split_frames(data: &[u8]) -> Vec<(u16, u32, &[u8])> {
    let mut out = Vec::new();
    let mut rest = data;
    while rest.len() >= 3 && out.len() < 32 {
        let h = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        out.push((u16::from(h & 1), u32::from(h >> 1) * 16, &rest[3..3 + len]));
        rest = &rest[3 + len..];
    }
    out
}

/// The inverse of [`split_frames`], for building corpus entries: each
/// frame with its header byte (the port, plus the clock advance in bits
/// 1-7).
pub fn join_frames(frames: &[(u16, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (header, f) in frames {
        let len = f.len().min(usize::from(u16::MAX));
        out.push((*header & 0xff) as u8);
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend_from_slice(&f[..len]);
    }
    out
}

/// Checks an IPv4 frame the core sends: the header checksum holds and the
/// total length fits the frame. (L4 checksums are patched incrementally, so
/// they are as right as the input's; the core never validates them.)
fn check_sent(pkt: &VecPacket) {
    let d = &pkt.data;
    if d.len() < 14 + 20 || d[12..14] != [0x08, 0x00] {
        return;
    }
    let ip = &d[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    assert!(ip[0] >> 4 == 4 && ihl >= 20 && ip.len() >= ihl, "sent a bad IPv4 header: {d:02x?}");
    assert_eq!(checksum(&ip[..ihl]), 0, "sent an IPv4 header with a wrong checksum: {d:02x?}");
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    assert!(total >= ihl && total <= ip.len(), "sent IPv4 total length {total} beyond the frame: {d:02x?}");
}

/// Target `dataplane`: frames through worker 0 of two on both ports,
/// what it hands off through worker 1, the clock advancing. Every packet
/// comes out exactly once: sent (with a valid IPv4 header), handed off,
/// passed to the kernel, freed (dropped with a counted reason, or consumed
/// like an ARP reply), or parked for ARP; every drop counted once.
pub fn dataplane(data: &[u8]) {
    run(data);
}

/// The frames the cores send for an input, in order: for building corpus
/// entries that answer them (a SYN proxy's cookie, for one).
pub fn sent(data: &[u8]) -> Vec<Vec<u8>> {
    run(data).into_iter().map(|p| p.data).collect()
}

fn run(data: &[u8]) -> Vec<VecPacket> {
    let counters = [0, 1].map(|_| Arc::new(WorkerCounters::new(2, config::MAX_LISTENERS, config::MAX_BACKENDS)));
    let mut cores = [core(0, &counters[0]), core(1, &counters[1])];
    let mut io = [Outcomes::default(), Outcomes::default()];
    let mut now = 1u32;
    let frames = split_frames(data);
    let mut handed = 0;
    for (port, advance, frame) in &frames {
        now = now.wrapping_add(*advance);
        for c in cores.iter_mut() {
            c.set_now(now);
        }
        cores[0].process(VecPacket { data: frame.to_vec(), port: *port }, &mut io[0]);
        for (w, pkt) in std::mem::take(&mut io[0].handoff) {
            assert_eq!(w, 1, "handed to worker {w} of 2");
            handed += 1;
            cores[1].process_handoff(pkt, &mut io[1]);
        }
        for c in 0..2 {
            cores[c].tick(&mut io[c]);
        }
        assert!(io[1].handoff.is_empty(), "a handed-off packet was handed off again");
    }
    for p in io.iter().flat_map(|o| &o.tx) {
        check_sent(p);
    }
    // Packets waiting for ARP, fragments held for their datagram's first
    // fragment, and client segments the SYN proxy holds for a backend
    // handshake: still owned by the cores.
    let parked: usize = cores.iter().map(|c| c.parked() + c.fragments_held() + c.syn_proxy_held()).sum();
    let came_in = frames.len() + io[0].allocs + io[1].allocs;
    let went_out = io.iter().map(|o| o.tx.len() + o.to_kernel + o.freed).sum::<usize>() + parked;
    assert_eq!(
        came_in, went_out,
        "packets in (received {} + allocated {}) != out (sent, to the kernel, freed, parked {parked}); handed off {handed}",
        frames.len(),
        io[0].allocs + io[1].allocs
    );
    let drops: u64 = counters.iter().map(|c| total_drops(c)).sum();
    let freed: usize = io.iter().map(|o| o.freed).sum();
    assert!(drops <= freed as u64, "{drops} drops counted for {freed} packets freed");
    // Shutdown frees what is parked, each with a reason.
    for (c, o) in cores.iter_mut().zip(io.iter_mut()) {
        c.drain(o);
    }
    let drops_after: u64 = counters.iter().map(|c| total_drops(c)).sum();
    assert_eq!(drops_after, drops + parked as u64, "parked packets freed at shutdown without a reason");
    let [a, b] = io;
    a.tx.into_iter().chain(b.tx).collect()
}

/// Target `config`: any text through the YAML parser and the validation;
/// an error names what is wrong, nothing panics. A valid configuration's
/// own form parses again to the same configuration.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("fuzz.yaml");
    match config::parse_raw(text, path) {
        Ok((raw, cfg)) => {
            let again = serde_yaml::to_string(&raw).expect("a raw config serialises");
            match config::parse_raw(&again, path) {
                Ok((_, cfg2)) => assert_eq!(cfg, cfg2, "a valid config changed through its own YAML:\n{again}"),
                Err(e) => panic!("a valid config's own YAML is refused: {e}\n{again}"),
            }
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
        }
    }
}

/// Target `control`: bytes as the control socket's stream: frames read
/// with the request limit until the stream ends or is refused; each
/// message decoded as a request; a decoded request encodes and decodes to
/// itself, and a configuration it carries goes through the parser as a
/// reload would.
pub fn control(data: &[u8]) {
    let mut stream = data;
    for _ in 0..64 {
        match lbproto::read_frame_bytes(&mut stream) {
            Ok(Some(body)) => {
                assert!(body.len() <= lbproto::MAX_REQUEST);
                if let Ok(frame) = serde_json::from_slice::<lbproto::RequestFrame>(&body) {
                    let again = lbproto::encode(&frame).expect("a request encodes");
                    let back: lbproto::RequestFrame = serde_json::from_slice(&again).expect("own encoding decodes");
                    assert_eq!(back, frame);
                    let _ = (frame.request.op(), frame.request.changes());
                    if let lbproto::Request::ConfigReload { source: Some(src) } = &frame.request {
                        let _ = config::parse(&src.yaml, Path::new(&src.path));
                    }
                }
                let _ = serde_json::from_slice::<lbproto::ResponseFrame>(&body);
            }
            Ok(None) | Err(_) => return,
        }
    }
}
