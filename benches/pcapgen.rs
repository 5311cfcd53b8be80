//! Writes the pcap files the packet-rate runner (benches/run.py) replays.
//! Nothing large is committed: the runner generates what it needs.
//!
//!     pcapgen KIND --flows N [--sample K] [--queues Q] [--split owner|spread] OUT_PREFIX
//!
//! Flow `i` is client 172.16.0.0 + (i >> 14), port 1024 + (i & 0x3fff), to
//! the VIP 10.0.0.100:80 (TCP) or :53 (UDP); backends are
//! 10.1.0.11-14:8080. Every frame is 60 bytes (64 on the wire), with
//! correct checksums. KIND:
//!   syn    one SYN per flow, in order (creates the sessions)
//!   est    K ACKs with 6 payload bytes, flows drawn at random from the N
//!   udp    one datagram per flow (or K of flows drawn from the N)
//!   reply  K backend->client ACKs of flows drawn from the N, from the
//!          backend Maglev gives each flow (same table as lbd's)
//! With --queues Q the packets go to Q files OUT_PREFIX-0.pcap...: `owner`
//! puts each on the queue of the worker owning its flow (a NIC doing lbd's
//! RSS), `spread` deals them round robin (every worker sees every flow,
//! so about (Q-1)/Q of them are handed over in software).

use lbcore::flow::FlowKey;
use lbcore::maglev::MaglevTable;
use lbcore::wire::frame::FrameBuilder;
use lbcore::wire::ipv4::PROTO_TCP;
use lbcore::wire::MacAddr;
use std::io::{BufWriter, Write};

const LB_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const GW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];
const INT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const VIP: u32 = 0x0a00_0064;
pub const BACKENDS: [u32; 4] = [0x0a01_000b, 0x0a01_000c, 0x0a01_000d, 0x0a01_000e];

fn client(i: u64) -> (u32, u16) {
    (0xac10_0000 | (i >> 14) as u32, 1024 + (i & 0x3fff) as u16)
}

/// A 60-byte Ethernet/IPv4/TCP or UDP frame with correct checksums
/// (DF set; TCP seq 1, window 65535).
#[allow(clippy::too_many_arguments)]
fn frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    proto: u8,
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
    flags: u8,
) -> [u8; 60] {
    let payload: &[u8] = if proto == PROTO_TCP { b"lbdlbd" } else { b"lbd-bench-payload!" };
    let b = FrameBuilder { dont_fragment: true, ..FrameBuilder::new(MacAddr(src_mac), MacAddr(dst_mac)) };
    b.l4(proto, src, dst, sport, dport, flags, payload).try_into().expect("60-byte frame")
}

struct Pcap(BufWriter<std::fs::File>);

impl Pcap {
    fn create(path: &str) -> Pcap {
        let f = std::fs::File::create(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut w = BufWriter::with_capacity(1 << 20, f);
        w.write_all(&0xa1b2_c3d4u32.to_le_bytes()).unwrap();
        w.write_all(&2u16.to_le_bytes()).unwrap();
        w.write_all(&4u16.to_le_bytes()).unwrap();
        w.write_all(&[0u8; 8]).unwrap();
        w.write_all(&65535u32.to_le_bytes()).unwrap();
        w.write_all(&1u32.to_le_bytes()).unwrap();
        Pcap(w)
    }
    fn write(&mut self, f: &[u8]) {
        let len = f.len() as u32;
        self.0.write_all(&[0u8; 8]).unwrap();
        self.0.write_all(&len.to_le_bytes()).unwrap();
        self.0.write_all(&len.to_le_bytes()).unwrap();
        self.0.write_all(f).unwrap();
    }
}

/// xorshift64*: fixed seed, so runs replay the same packets.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) % n
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut kind = String::new();
    let (mut flows, mut sample, mut queues) = (0u64, 0u64, 1usize);
    let mut split = "owner".to_owned();
    let mut out = String::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().expect("option needs a value").clone();
        match a.as_str() {
            "--flows" => flows = val().parse().expect("--flows N"),
            "--sample" => sample = val().parse().expect("--sample K"),
            "--queues" => queues = val().parse().expect("--queues Q"),
            "--split" => split = val(),
            s if kind.is_empty() => kind = s.to_owned(),
            s => out = s.to_owned(),
        }
    }
    assert!(
        !out.is_empty() && flows > 0,
        "usage: pcapgen syn|est|udp|reply --flows N [--sample K] [--queues Q] [--split owner|spread] OUT_PREFIX"
    );
    let mut files: Vec<Pcap> = if queues == 1 {
        vec![Pcap::create(&format!("{out}.pcap"))]
    } else {
        (0..queues).map(|q| Pcap::create(&format!("{out}-{q}.pcap"))).collect()
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let names: Vec<String> = BACKENDS.iter().map(|b| format!("{}:8080", std::net::Ipv4Addr::from(*b))).collect();
    let table = MaglevTable::build_named(&names, &[1; 4], 65537);
    let count = if sample > 0 { sample } else { flows };
    for n in 0..count {
        // Without --sample: every flow once, in order; with it: K packets
        // of flows drawn at random.
        let i = if sample == 0 { n } else { rng.below(flows) };
        let (cip, cport) = client(i);
        let (f, owner_of) = match kind.as_str() {
            "syn" => (frame(GW_MAC, LB_MAC, 6, cip, VIP, cport, 80, 0x02), (cip, cport)),
            "est" => (frame(GW_MAC, LB_MAC, 6, cip, VIP, cport, 80, 0x10), (cip, cport)),
            "udp" => (frame(GW_MAC, LB_MAC, 17, cip, VIP, cport, 53, 0), (cip, cport)),
            "reply" => {
                let h = FlowKey::new(cip, VIP, cport, 80, 6).hash();
                let b = BACKENDS[usize::from(table.lookup(h).expect("weighted backends"))];
                (frame(INT_MAC, LB_MAC, 6, b, cip, 8080, cport, 0x10), (cip, cport))
            }
            k => panic!("unknown kind {k}"),
        };
        let q = match (queues, split.as_str()) {
            (1, _) => 0,
            (_, "owner") => lbcore::rss::owner(owner_of.0, owner_of.1, queues),
            _ => (n as usize) % queues,
        };
        files[q].write(&f);
    }
    for mut f in files {
        f.0.flush().unwrap();
    }
}
