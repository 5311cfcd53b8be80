//! The packet core driven with byte vectors: no DPDK, no EAL.

use super::*;
use crate::config;
use crate::counters::{DropReason, Event};
use crate::flow::owner_shard;
use crate::ids::PortIndex;
use crate::persistence::PersistenceTable;
use crate::session::SessionState;
use crate::snapshot::IdRegistry;
use crate::testing::VecPacket as Pkt;
use crate::wire::arp::{self, ArpPacket};
use crate::wire::checksum::checksum;
use crate::wire::ethernet::ETHERTYPE_VLAN;
use crate::wire::ethernet::{ETHERTYPE_ARP, ETHERTYPE_IPV4};
use crate::wire::frame::{full_l4_checksum, FrameBuilder};
use crate::wire::icmp;
use crate::wire::ipv4::{Ipv4Packet, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::wire::tcp::{self, TcpPacket, FLAG_ACK, FLAG_RST, FLAG_SYN};
use proptest::prelude::*;
use std::net::Ipv4Addr;
use std::path::Path;

const EXT_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
const INT_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);
const CLIENT_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xc1]);
const GW_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xfe]);
const B1_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x11]);

fn ip(s: &str) -> u32 {
    u32::from(s.parse::<Ipv4Addr>().unwrap())
}

const CONFIG: &str = r#"
eal: ["--no-pci"]
ports:
  - name: ext
    device: net_ring0
    address: 10.0.0.1/24
    gateway: 10.0.0.254
    neighbors: [{ip: 10.0.0.254, mac: "02:00:00:00:00:fe"}]
    exception: off
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
    backends:
      - {address: 10.1.0.11, port: 8080}
      - {address: 10.1.0.12, port: 8080}
  - name: rr
    vip: 10.0.0.100
    protocol: tcp
    port: 81
    scheduler: round_robin
    backends:
      - {address: 10.1.0.11, port: 8081}
      - {address: 10.1.0.12, port: 8081}
  - name: dns
    vip: 10.0.0.100
    protocol: udp
    port: 53
    backends:
      - {address: 10.1.0.11, port: 5353}
  - name: unresolved
    vip: 10.0.0.101
    protocol: udp
    port: 53
    backends:
      - {address: 10.1.0.50, port: 53}
  - name: empty
    vip: 10.0.0.102
    protocol: tcp
    port: 80
    backends:
      - {address: 10.1.0.11, port: 1, weight: 0}
timeouts: {tcp_syn: 10s, tcp_established: 900s, tcp_closing: 30s, udp: 60s}
"#;

/// The test workers' share of the exception path's rate (packets/s).
const KERNEL_RATE: u32 = 1000;
/// The test workers' share of the echo reply rate (replies/s).
const ECHO_RATE: u32 = 1000;
/// The test workers' share of the ICMP error rate (errors/s).
const ERROR_RATE: u32 = 1000;
/// The test workers' share of the forwarded ICMP error rate (errors/s).
const FORWARD_RATE: u32 = 1000;

#[derive(Default)]
struct TestIo {
    tx: Vec<(u16, Vec<u8>)>,
    handoff: Vec<(usize, Pkt)>,
    to_kernel: Vec<(u16, Vec<u8>)>,
    freed: usize,
    allocs: usize,
    alloc_fails: bool,
}

impl Io<Pkt> for TestIo {
    fn tx(&mut self, port: PortIndex, pkt: Pkt) {
        self.tx.push((port.0, pkt.data));
    }
    fn handoff(&mut self, worker: usize, pkt: Pkt) {
        self.handoff.push((worker, pkt));
    }
    fn free(&mut self, _pkt: Pkt) {
        self.freed += 1;
    }
    fn alloc(&mut self, len: usize, port: PortIndex) -> Option<Pkt> {
        if self.alloc_fails {
            return None;
        }
        self.allocs += 1;
        Some(Pkt { data: vec![0; len], port: port.0 })
    }
    fn to_kernel(&mut self, port: PortIndex, pkt: Pkt) {
        self.to_kernel.push((port.0, pkt.data));
    }
}

struct Harness {
    dp: Dataplane<Pkt>,
    counters: Arc<WorkerCounters>,
    io: TestIo,
}

fn harness_with(yaml: &str, worker: usize, workers: usize, capacity: usize) -> Harness {
    // The session table under another key than the fixed one, as in
    // production (a lookup hashing without the table's key misses here);
    // owners under the fixed key, which the tests predict.
    let keys = crate::hashkey::HashKeys {
        session: crate::hashkey::HashKeys::from_key(&TEST_HASH_KEY).session,
        rss: crate::rss::RSS_KEY,
    };
    harness_with_keys(yaml, worker, workers, capacity, keys)
}

/// [`harness_with`] under the instance keys `hash_keys`.
fn harness_with_keys(
    yaml: &str,
    worker: usize,
    workers: usize,
    capacity: usize,
    hash_keys: crate::hashkey::HashKeys,
) -> Harness {
    let cfg = config::parse(yaml, Path::new("test.yaml")).expect("test config is valid");
    let mut ids = IdRegistry::default();
    ids.assign(&cfg.forwarding, &|_| true).unwrap();
    let snap = Arc::new(Snapshot::build(&cfg, &[EXT_MAC, INT_MAC], &ids, 1));
    let counters = Arc::new(WorkerCounters::new(2, config::MAX_LISTENERS, config::MAX_BACKENDS));
    let settings = CoreSettings {
        session_capacity: capacity,
        to_kernel_rate: KERNEL_RATE,
        echo_reply_rate: ECHO_RATE,
        icmp_error_rate: ERROR_RATE,
        icmp_forward_rate: FORWARD_RATE,
        fragments: cfg.startup.fragments,
        hash_keys,
        syn_proxy_held: cfg.startup.syn_proxy_held,
        ..CoreSettings::small(worker, workers)
    };
    let mut dp = Dataplane::new(settings, snap, Arc::clone(&counters));
    dp.set_now(1);
    Harness { dp, counters, io: TestIo::default() }
}

fn harness() -> Harness {
    harness_with(CONFIG, 0, 1, 1000)
}

impl Harness {
    fn rx(&mut self, port: u16, data: Vec<u8>) {
        self.dp.process(Pkt { data, port }, &mut self.io);
    }
    fn take_tx(&mut self) -> Vec<(u16, Vec<u8>)> {
        std::mem::take(&mut self.io.tx)
    }
    fn drops(&self, r: DropReason) -> u64 {
        self.counters.drop_count(r)
    }
    fn total_drops(&self) -> u64 {
        DropReason::ALL.iter().map(|r| self.counters.drop_count(*r)).sum()
    }
}

/// An Ethernet/IPv4/TCP|UDP frame with correct checksums.
#[allow(clippy::too_many_arguments)]
fn l4_frame(
    dst_mac: MacAddr,
    src_mac: MacAddr,
    proto: u8,
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
    tcp_flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let b = FrameBuilder { ident: 0x1234, dont_fragment: true, seq: 1000, ..FrameBuilder::new(src_mac, dst_mac) };
    b.l4(proto, src, dst, sport, dport, tcp_flags, payload)
}

/// Checks a forwarded frame field by field.
#[allow(clippy::too_many_arguments)]
fn assert_frame(f: &[u8], dst_mac: MacAddr, src_mac: MacAddr, src: u32, dst: u32, sport: u16, dport: u16, ttl: u8) {
    assert_eq!(&f[0..6], &dst_mac.0, "dst mac");
    assert_eq!(&f[6..12], &src_mac.0, "src mac");
    let ip = &f[14..];
    assert_eq!(u32::from_be_bytes(ip[12..16].try_into().unwrap()), src, "src ip");
    assert_eq!(u32::from_be_bytes(ip[16..20].try_into().unwrap()), dst, "dst ip");
    assert_eq!(ip[8], ttl, "ttl");
    assert_eq!(checksum(&ip[..20]), 0, "ip checksum");
    assert_eq!(u16::from_be_bytes([ip[20], ip[21]]), sport, "sport");
    assert_eq!(u16::from_be_bytes([ip[22], ip[23]]), dport, "dport");
    let at = if ip[9] == PROTO_TCP { 16 } else { 6 };
    let got = u16::from_be_bytes([ip[20 + at], ip[21 + at]]);
    assert_eq!(got, full_l4_checksum(f), "l4 checksum");
}

/// Recomputes the IPv4 header checksum of a frame after an edit.
fn fix_ip_checksum(f: &mut [u8]) {
    f[24] = 0;
    f[25] = 0;
    let c = checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

fn arp_frame(op: u16, sha: MacAddr, spa: u32, tha: MacAddr, tpa: u32, dst_mac: MacAddr) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[0..6].copy_from_slice(&dst_mac.0);
    f[6..12].copy_from_slice(&sha.0);
    f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    ArpPacket::emit(&mut f[14..], op, sha, spa.into(), tha, tpa.into());
    f
}

fn backend_of(f: &[u8]) -> (u32, u16) {
    let ip = &f[14..];
    (u32::from_be_bytes(ip[16..20].try_into().unwrap()), u16::from_be_bytes([ip[22], ip[23]]))
}

#[test]
fn arp_requests_for_vip_and_port_address_are_answered() {
    let mut h = harness();
    for target in ["10.0.0.100", "10.0.0.1"] {
        h.rx(0, arp_frame(arp::OP_REQUEST, CLIENT_MAC, ip("10.0.0.2"), MacAddr::ZERO, ip(target), MacAddr::BROADCAST));
        let out = h.take_tx();
        assert_eq!(out.len(), 1);
        let (port, f) = &out[0];
        assert_eq!(*port, 0);
        assert_eq!(&f[0..6], &CLIENT_MAC.0);
        assert_eq!(&f[6..12], &EXT_MAC.0);
        let a = ArpPacket::new_checked(&f[14..]).unwrap();
        assert_eq!(a.operation(), arp::OP_REPLY);
        assert_eq!(a.sender_mac(), EXT_MAC);
        assert_eq!(u32::from(a.sender_ip()), ip(target));
        assert_eq!(a.target_mac(), CLIENT_MAC);
        assert_eq!(u32::from(a.target_ip()), ip("10.0.0.2"));
    }
    assert_eq!(h.counters.event_count(Event::ArpRepliesSent), 2);
    // The VIP is owned by ext: int does not answer for it.
    h.rx(1, arp_frame(arp::OP_REQUEST, B1_MAC, ip("10.1.0.11"), MacAddr::ZERO, ip("10.0.0.100"), MacAddr::BROADCAST));
    assert!(h.take_tx().is_empty());
    // Someone else's address.
    h.rx(0, arp_frame(arp::OP_REQUEST, CLIENT_MAC, ip("10.0.0.2"), MacAddr::ZERO, ip("10.0.0.77"), MacAddr::BROADCAST));
    assert!(h.take_tx().is_empty());
    assert_eq!(h.drops(DropReason::ArpNotOurs), 1);
    // The client was learned from its request to us.
    assert!(h.dp.neighbors().get(PortIndex(0), ip("10.0.0.2")).is_some());
}

#[test]
fn tcp_connection_is_rewritten_both_ways() {
    let mut h = harness();
    let (client, vip) = (ip("192.168.1.10"), ip("10.0.0.100"));
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, client, vip, 40000, 80, FLAG_SYN, b""));
    let out = h.take_tx();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, 1, "to the backend port");
    let (baddr, bport) = backend_of(&out[0].1);
    assert!(baddr == ip("10.1.0.11") || baddr == ip("10.1.0.12"));
    assert_eq!(bport, 8080);
    let bmac = if baddr == ip("10.1.0.11") { B1_MAC } else { MacAddr([2, 0, 0, 0, 0, 0x12]) };
    assert_frame(&out[0].1, bmac, INT_MAC, client, baddr, 40000, 8080, 63);
    assert_eq!(h.dp.sessions().len(), 1);

    // SYN-ACK from the backend comes back from the VIP, via the gateway.
    h.rx(1, l4_frame(INT_MAC, bmac, PROTO_TCP, baddr, client, 8080, 40000, FLAG_SYN | FLAG_ACK, b""));
    let out = h.take_tx();
    assert_eq!(out[0].0, 0);
    assert_frame(&out[0].1, GW_MAC, EXT_MAC, vip, client, 80, 40000, 63);

    // Data both ways, then FINs: same backend throughout.
    for _ in 0..3 {
        h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, client, vip, 40000, 80, FLAG_ACK, b"GET / HTTP/1.1\r\n\r\n"));
        assert_eq!(backend_of(&h.take_tx()[0].1), (baddr, 8080));
    }
    let slot = h.dp.sessions().iter().next().unwrap().1;
    assert_eq!(slot.state, SessionState::TcpEstablished);
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, client, vip, 40000, 80, tcp::FLAG_FIN | FLAG_ACK, b""));
    h.rx(1, l4_frame(INT_MAC, bmac, PROTO_TCP, baddr, client, 8080, 40000, tcp::FLAG_FIN | FLAG_ACK, b""));
    assert_eq!(h.take_tx().len(), 2);
    assert_eq!(h.dp.sessions().iter().next().unwrap().1.state, SessionState::TcpClosed);
    assert_eq!(h.total_drops(), 0);
    let lid = h.dp.snapshot().listener(vip, PROTO_TCP, 80).unwrap().id;
    let lc = &h.counters.listeners[usize::from(lid)];
    assert_eq!(lc.in_packets.get(), 5);
    assert_eq!(lc.out_packets.get(), 2);
    assert_eq!(lc.sessions_created.get(), 1);
}

#[test]
fn udp_with_and_without_checksum() {
    let mut h = harness();
    let (client, vip) = (ip("10.0.0.2"), ip("10.0.0.100"));
    // The client is on the link: learn it first through its ARP request.
    h.rx(0, arp_frame(arp::OP_REQUEST, CLIENT_MAC, client, MacAddr::ZERO, vip, MacAddr::BROADCAST));
    h.take_tx();
    h.rx(0, l4_frame(EXT_MAC, CLIENT_MAC, PROTO_UDP, client, vip, 5000, 53, 0, b"query"));
    let out = h.take_tx();
    assert_frame(&out[0].1, B1_MAC, INT_MAC, client, ip("10.1.0.11"), 5000, 5353, 63);
    // Reply with checksum 0 (none): stays 0.
    let mut r = l4_frame(INT_MAC, B1_MAC, PROTO_UDP, ip("10.1.0.11"), client, 5353, 5000, 0, b"answer");
    r[14 + 26] = 0;
    r[14 + 27] = 0;
    h.rx(1, r);
    let out = h.take_tx();
    let f = &out[0].1;
    assert_eq!(&f[0..6], &CLIENT_MAC.0, "on-link client gets its own MAC");
    assert_eq!(u32::from_be_bytes(f[26..30].try_into().unwrap()), vip);
    assert_eq!(u16::from_be_bytes([f[34], f[35]]), 53);
    assert_eq!(u16::from_be_bytes([f[40], f[41]]), 0);
    assert_eq!(checksum(&f[14..34]), 0);
}

#[test]
fn non_syn_without_session_follows_the_listener_policy() {
    let mut h = harness();
    let (client, vip) = (ip("192.168.1.10"), ip("10.0.0.100"));
    // Maglev: scheduled to the same backend a SYN would have got.
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, client, vip, 40001, 80, FLAG_ACK, b"mid-flow"));
    let out = h.take_tx();
    assert_eq!(out.len(), 1);
    let picked = backend_of(&out[0].1);
    let mut h2 = harness();
    h2.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, client, vip, 40001, 80, FLAG_SYN, b""));
    assert_eq!(backend_of(&h2.take_tx()[0].1), picked);
    assert_eq!(h.counters.event_count(Event::SessionsRescheduled), 1);
    assert_eq!(h.dp.sessions().iter().next().unwrap().1.state, SessionState::TcpEstablished);
    // Round robin cannot reproduce the choice: dropped.
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, client, vip, 40002, 81, FLAG_ACK, b""));
    assert_eq!(h.drops(DropReason::TcpNoSession), 1);
    // A stray RST is passed on without creating a session.
    let before = h.dp.sessions().len();
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, client, vip, 40003, 80, FLAG_RST, b""));
    assert_eq!(h.take_tx().len(), 1);
    assert_eq!(h.dp.sessions().len(), before);
}

#[test]
fn round_robin_alternates_backends() {
    let mut h = harness();
    let mut seen = Vec::new();
    for p in 0..4 {
        h.rx(
            0,
            l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, ip("192.168.1.10"), ip("10.0.0.100"), 30000 + p, 81, FLAG_SYN, b""),
        );
        seen.push(backend_of(&h.take_tx()[0].1).0);
    }
    assert_eq!(seen, vec![ip("10.1.0.11"), ip("10.1.0.12"), ip("10.1.0.11"), ip("10.1.0.12")]);
}

#[test]
fn unresolved_next_hop_is_parked_then_released() {
    let mut h = harness();
    let (client, vip) = (ip("192.168.1.10"), ip("10.0.0.101"));
    let backend = ip("10.1.0.50");
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_UDP, client, vip, 5000, 53, 0, b"q1"));
    let out = h.take_tx();
    assert_eq!(out.len(), 1, "only the ARP request goes out");
    let (port, req) = &out[0];
    assert_eq!(*port, 1);
    assert_eq!(&req[0..6], &MacAddr::BROADCAST.0);
    let a = ArpPacket::new_checked(&req[14..]).unwrap();
    assert_eq!(a.operation(), arp::OP_REQUEST);
    assert_eq!(u32::from(a.target_ip()), backend);
    assert_eq!(u32::from(a.sender_ip()), ip("10.1.0.1"));
    assert_eq!(a.sender_mac(), INT_MAC);
    assert_eq!(h.dp.parked(), 1);
    // A second packet waits too, without a second request.
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_UDP, client, vip, 5000, 53, 0, b"q2"));
    assert!(h.take_tx().is_empty());
    // The reply releases both, in order.
    let bmac = MacAddr([2, 0, 0, 0, 0, 0x50]);
    h.rx(1, arp_frame(arp::OP_REPLY, bmac, backend, INT_MAC, ip("10.1.0.1"), INT_MAC));
    let out = h.take_tx();
    assert_eq!(out.len(), 2);
    for (port, f) in &out {
        assert_eq!(*port, 1);
        assert_frame(f, bmac, INT_MAC, client, backend, 5000, 53, 63);
    }
    assert_eq!(&out[0].1[42..44], b"q1");
    // The int port has a kernel interface: a reply to the port address
    // (lbd and the kernel ask with the same address) is learned here and
    // passed up too, which is what it counts as.
    assert_eq!(h.io.to_kernel.len(), 1);
    assert_eq!(h.counters.event_count(Event::ArpLearned), 0);
    assert_eq!(h.dp.parked(), 0);
}

#[test]
fn unanswered_arp_drops_parked_packets_after_retries() {
    let mut h = harness();
    for i in 0..6u16 {
        h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_UDP, ip("192.168.1.10"), ip("10.0.0.101"), 5000 + i, 53, 0, b"q"));
    }
    // Queue holds 4: two dropped at once.
    assert_eq!(h.drops(DropReason::NeighborQueueFull), 2);
    let mut requests = h.take_tx().len();
    for t in (1..=5000).step_by(50) {
        h.dp.set_now(t);
        h.dp.tick(&mut h.io);
        requests += h.take_tx().len();
    }
    assert_eq!(requests, 3, "max_retries requests in all");
    assert_eq!(h.drops(DropReason::NeighborUnresolved), 4);
    assert_eq!(h.dp.parked(), 0);
}

#[test]
fn drops_have_reasons() {
    let mut h = harness();
    let (client, vip) = (ip("192.168.1.10"), ip("10.0.0.100"));
    let base = l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, client, vip, 40000, 80, FLAG_SYN, b"");
    let mut cases: Vec<(Vec<u8>, DropReason)> = Vec::new();
    cases.push((base[..10].to_vec(), DropReason::Truncated));
    cases.push((base[..30].to_vec(), DropReason::Truncated));
    let mut m = base.clone();
    m[0..6].copy_from_slice(&[2, 9, 9, 9, 9, 9]);
    cases.push((m, DropReason::WrongDstMac));
    let mut m = base.clone();
    m[12..14].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
    cases.push((m, DropReason::VlanTagged));
    let mut m = base.clone();
    m[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    cases.push((m, DropReason::UnsupportedEthertype));
    let mut m = base.clone();
    m[14] = 0x65;
    cases.push((m, DropReason::IpBadHeader));
    let mut m = base.clone();
    m[14] = 0x46;
    cases.push((m, DropReason::IpOptions));
    let mut m = base.clone();
    m[17] = 200;
    cases.push((m, DropReason::IpBadLength));
    let mut m = base.clone();
    m[24] ^= 0xff;
    cases.push((m, DropReason::IpBadChecksum));
    // Fragments of TCP and UDP are forwarded (see `fragment_tests`).
    let mut frag = base.clone();
    frag[20] = 0x20; // MF
    frag[23] = 47;
    fix_ip_checksum(&mut frag);
    cases.push((frag, DropReason::IpFragment));
    // TTL expiry is answered with time exceeded: see icmp_error.
    let mut gre = base.clone();
    gre[23] = 47;
    fix_ip_checksum(&mut gre);
    cases.push((gre, DropReason::UnsupportedProtocol));
    let mut off = base.clone();
    off[14 + 20 + 12] = 3 << 4;
    cases.push((off, DropReason::L4BadHeader));
    cases.push((l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, client, vip, 1, 8080, FLAG_SYN, b""), DropReason::NoListener));
    cases.push((
        l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, client, ip("10.0.0.1"), 1, 22, FLAG_SYN, b""),
        DropReason::NoListener,
    ));
    cases.push((
        l4_frame(EXT_MAC, B1_MAC, PROTO_TCP, ip("10.1.0.11"), client, 8080, 1, FLAG_ACK, b""),
        DropReason::NoSession,
    ));
    cases.push((
        l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, client, ip("10.0.0.102"), 1, 80, FLAG_SYN, b""),
        DropReason::NoBackend,
    ));
    cases.push((
        arp_frame(arp::OP_REQUEST, CLIENT_MAC, 1, MacAddr::ZERO, 2, MacAddr::BROADCAST)[..30].to_vec(),
        DropReason::ArpMalformed,
    ));
    cases.push((
        l4_frame(EXT_MAC, GW_MAC, PROTO_ICMP, client, ip("10.1.0.11"), 0, 0, 0, b""),
        DropReason::IcmpUnsupported,
    ));
    for (i, (frame, reason)) in cases.into_iter().enumerate() {
        let before = h.drops(reason);
        let all_before = h.total_drops();
        h.rx(0, frame);
        assert_eq!(h.drops(reason), before + 1, "case {i}: expected {reason:?}");
        assert_eq!(h.total_drops(), all_before + 1, "case {i}: exactly one drop");
        assert!(h.take_tx().is_empty(), "case {i}: nothing sent");
    }
}

#[test]
fn icmp_echo_to_vip_is_answered() {
    let mut h = harness();
    let mut f = l4_frame(EXT_MAC, GW_MAC, PROTO_UDP, ip("192.168.1.10"), ip("10.0.0.100"), 0, 0, 0, b"pingdata");
    // Turn the UDP frame into an ICMP echo request.
    f[23] = PROTO_ICMP;
    fix_ip_checksum(&mut f);
    f[34] = icmp::ECHO_REQUEST;
    f[35] = 0;
    f[36] = 0;
    f[37] = 0;
    let c = checksum(&f[34..]);
    f[36..38].copy_from_slice(&c.to_be_bytes());
    h.rx(0, f);
    let out = h.take_tx();
    assert_eq!(out.len(), 1);
    let r = &out[0].1;
    assert_eq!(&r[0..6], &GW_MAC.0);
    assert_eq!(u32::from_be_bytes(r[26..30].try_into().unwrap()), ip("10.0.0.100"));
    assert_eq!(u32::from_be_bytes(r[30..34].try_into().unwrap()), ip("192.168.1.10"));
    assert_eq!(r[34], icmp::ECHO_REPLY);
    assert_eq!(checksum(&r[14..34]), 0);
    assert_eq!(checksum(&r[34..]), 0);
}

#[test]
fn full_table_drops_new_flows_only() {
    let mut h = harness_with(CONFIG, 0, 1, 2);
    let vip = ip("10.0.0.100");
    // Established sessions: a SYN may not evict them (half-open ones it
    // may, see the SYN-flood tests).
    for p in 0..2 {
        h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, ip("192.168.1.10"), vip, 1000 + p, 80, FLAG_SYN, b""));
        h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, ip("192.168.1.10"), vip, 1000 + p, 80, FLAG_ACK, b""));
    }
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, ip("192.168.1.10"), vip, 2000, 80, FLAG_SYN, b""));
    assert_eq!(h.drops(DropReason::SessionTableFull), 1);
    h.take_tx();
    for p in 0..2 {
        h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, ip("192.168.1.10"), vip, 1000 + p, 80, FLAG_ACK, b"x"));
    }
    assert_eq!(h.take_tx().len(), 2);
}

#[test]
fn sessions_expire_by_state() {
    let mut h = harness();
    let vip = ip("10.0.0.100");
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, ip("192.168.1.10"), vip, 1000, 80, FLAG_SYN, b""));
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_UDP, ip("192.168.1.10"), vip, 1000, 53, 0, b""));
    assert_eq!(h.dp.sessions().len(), 2);
    // After 12 s the SYN_SENT session (10 s) is gone, the UDP one (60 s) not.
    for t in (0..=12_000).step_by(100) {
        h.dp.set_now(1 + t);
        h.dp.tick(&mut h.io);
    }
    assert_eq!(h.dp.sessions().len(), 1);
    for t in (12_000..=62_000).step_by(100) {
        h.dp.set_now(1 + t);
        h.dp.tick(&mut h.io);
    }
    assert_eq!(h.dp.sessions().len(), 0);
    assert_eq!(h.counters.event_count(Event::SessionsExpired), 2);
    assert_eq!(h.counters.sessions_active.get(), 0);
}

/// Receives `frame` at worker `arrive` on `port`; when that is not the
/// owner, checks it was handed to `owner` and lets the owner process it.
/// Returns what the owner sent.
fn deliver(hs: &mut [Harness], arrive: usize, owner: usize, port: u16, frame: Vec<u8>) -> Vec<(u16, Vec<u8>)> {
    hs[arrive].rx(port, frame);
    if arrive == owner {
        assert!(hs[arrive].io.handoff.is_empty());
        return hs[arrive].take_tx();
    }
    let (w, p) = hs[arrive].io.handoff.pop().expect("handed off");
    assert_eq!(w, owner);
    let h = &mut hs[owner];
    h.dp.process_handoff(p, &mut h.io);
    h.take_tx()
}

#[test]
fn packets_go_to_the_owner_of_the_client_endpoint() {
    let workers = 3;
    let vip = ip("10.0.0.100");
    let mut hs: Vec<Harness> = (0..workers).map(|w| harness_with(CONFIG, w, workers, 1000)).collect();
    for port in 1000..1300u16 {
        let client = ip("192.168.1.10");
        let owner = owner_shard(client, port, workers);
        // The request arrives at worker (port % 3), reaches the owner.
        let arrive = usize::from(port) % workers;
        let syn = l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, client, vip, port, 80, FLAG_SYN, b"");
        let delivered = deliver(&mut hs, arrive, owner, 0, syn);
        let (baddr, bport) = backend_of(&delivered[0].1);
        // The reply arrives at another worker and reaches the same owner.
        let arrive = (usize::from(port) + 1) % workers;
        let bmac = if baddr == ip("10.1.0.11") { B1_MAC } else { MacAddr([2, 0, 0, 0, 0, 0x12]) };
        let synack = l4_frame(INT_MAC, bmac, PROTO_TCP, baddr, client, bport, port, FLAG_SYN | FLAG_ACK, b"");
        let out = deliver(&mut hs, arrive, owner, 1, synack);
        assert_frame(&out[0].1, GW_MAC, EXT_MAC, vip, client, 80, port, 63);
    }
    let total: usize = hs.iter().map(|h| h.dp.sessions().len()).sum();
    assert_eq!(total, 300, "one session per flow, on one shard");
    for h in &hs {
        assert!(h.dp.sessions().len() > 60, "shards share the load");
        assert_eq!(h.total_drops(), 0);
    }
}

#[test]
fn learned_neighbours_are_shared_with_other_workers() {
    let mut h0 = harness_with(CONFIG, 0, 2, 100);
    let mut h1 = harness_with(CONFIG, 1, 2, 100);
    let c = ip("10.0.0.2");
    h0.rx(0, arp_frame(arp::OP_REQUEST, CLIENT_MAC, c, MacAddr::ZERO, ip("10.0.0.100"), MacAddr::BROADCAST));
    assert_eq!(h0.take_tx().len(), 1, "the reply");
    let (w, copy) = h0.io.handoff.pop().expect("a copy for worker 1");
    assert_eq!(w, 1);
    h1.dp.process_handoff(copy, &mut h1.io);
    assert!(h1.take_tx().is_empty(), "copies are never answered");
    assert_eq!(h1.dp.neighbors().get(PortIndex(0), c).map(|e| e.mac), Some(CLIENT_MAC));
    assert_eq!(h1.total_drops(), 0);
}

/// Every received packet is forwarded, dropped with a reason, parked, or
/// consumed by ARP/ICMP: nothing vanishes uncounted.
fn accounted(h: &Harness) -> u64 {
    let consumed: u64 = [Event::ArpRepliesSent, Event::ArpLearned, Event::ArpIgnored, Event::IcmpEchoReplies]
        .iter()
        .map(|e| h.counters.event_count(*e))
        .sum();
    let forwarded = h.io.tx.len() as u64
        - h.counters.event_count(Event::ArpRequestsSent)
        - h.counters.event_count(Event::ArpRepliesSent)
        - h.counters.event_count(Event::IcmpEchoReplies);
    forwarded
        + h.total_drops()
        + consumed
        + h.dp.parked() as u64
        + h.io.handoff.len() as u64
        + h.io.to_kernel.len() as u64
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Arbitrary bytes never panic the core and are always accounted for.
    #[test]
    fn arbitrary_bytes_never_panic(frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 1..8), port in 0u16..2) {
        let mut h = harness_with(CONFIG, 0, 2, 16);
        for f in frames {
            h.rx(port, f);
        }
        let rx = h.counters.ports[usize::from(port)].rx_packets.get();
        prop_assert_eq!(accounted(&h), rx);
    }

    /// Valid-looking headers with random fields: same guarantees, deeper in.
    #[test]
    fn mutated_valid_frames_never_panic(
        proto in prop::sample::select(vec![PROTO_TCP, PROTO_UDP, PROTO_ICMP, 47]),
        sport in any::<u16>(), dport in prop::sample::select(vec![80u16, 81, 53, 22]),
        flags in any::<u8>(), flips in proptest::collection::vec((0usize..60, any::<u8>()), 0..4),
        cut in 0usize..80,
        dst in prop::sample::select(vec!["10.0.0.100", "10.0.0.101", "10.0.0.1", "192.168.1.10"]),
    ) {
        let mut h = harness_with(CONFIG, 0, 2, 16);
        let mut f = l4_frame(EXT_MAC, GW_MAC, if proto == 47 { PROTO_UDP } else { proto }, ip("192.168.1.10"), ip(dst), sport, dport, flags, b"0123456789");
        if proto == 47 { f[23] = 47; }
        for (at, v) in flips {
            if at < f.len() { f[at] ^= v; }
        }
        let keep = f.len().saturating_sub(cut % (f.len() + 1));
        f.truncate(keep.max(1));
        h.rx(0, f);
        prop_assert_eq!(accounted(&h), 1);
    }
}

/// Rebuilds the harness's snapshot from `yaml` (same ports), as a
/// configuration change would.
fn reconfigure(h: &mut Harness, ids: &mut IdRegistry, yaml: &str, generation: u64) {
    let cfg = config::parse(yaml, Path::new("test.yaml")).expect("valid");
    ids.assign(&cfg.forwarding, &|_| true).unwrap();
    h.dp.set_snapshot(Arc::new(Snapshot::build(&cfg, &[EXT_MAC, INT_MAC], ids, generation)));
}

fn web_only(backends: &str, policy: &str) -> String {
    format!(
        "ports:\n  - {{name: ext, device: a, address: 10.0.0.1/24, gateway: 10.0.0.254, neighbors: [{{ip: 10.0.0.254, mac: \"02:00:00:00:00:fe\"}}]}}\n  \
         - {{name: int, device: b, address: 10.1.0.1/24, neighbors: [{{ip: 10.1.0.11, mac: \"02:00:00:00:00:11\"}}, {{ip: 10.1.0.12, mac: \"02:00:00:00:00:12\"}}]}}\n\
         listeners:\n  - name: web\n    vip: 10.0.0.100\n    protocol: tcp\n    port: 80\n    backends: [{backends}]\n  \
         - name: dns\n    vip: 10.0.0.100\n    protocol: udp\n    port: 53\n    backends: [{backends}]\n\
         sessions: {{removed_backend: {policy}}}\n"
    )
}

/// Starts a harness on `web_only`, opens TCP and UDP flows until one of
/// each sits on 10.1.0.12, and returns the client ports used.
fn flows_on_second_backend(policy: &str) -> (Harness, IdRegistry, u16, u16) {
    let yaml = web_only("{address: 10.1.0.11, port: 8080}, {address: 10.1.0.12, port: 8080}", policy);
    let cfg = config::parse(&yaml, Path::new("t")).unwrap();
    let mut ids = IdRegistry::default();
    ids.assign(&cfg.forwarding, &|_| true).unwrap();
    let counters = Arc::new(WorkerCounters::new(2, config::MAX_LISTENERS, config::MAX_BACKENDS));
    let settings = CoreSettings {
        session_capacity: 100,
        to_kernel_rate: KERNEL_RATE,
        echo_reply_rate: ECHO_RATE,
        icmp_error_rate: ERROR_RATE,
        icmp_forward_rate: FORWARD_RATE,
        fragments: cfg.startup.fragments,
        ..CoreSettings::small(0, 1)
    };
    let mut dp =
        Dataplane::new(settings, Arc::new(Snapshot::build(&cfg, &[EXT_MAC, INT_MAC], &ids, 1)), Arc::clone(&counters));
    dp.set_now(1);
    let mut h = Harness { dp, counters, io: TestIo::default() };
    let vip = ip("10.0.0.100");
    let mut tcp_port = None;
    let mut udp_port = None;
    for p in 40000..40100u16 {
        if tcp_port.is_none() {
            h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, ip("192.168.1.10"), vip, p, 80, FLAG_SYN, b""));
            if backend_of(&h.take_tx()[0].1).0 == ip("10.1.0.12") {
                tcp_port = Some(p);
            }
        }
        if udp_port.is_none() {
            h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_UDP, ip("192.168.1.10"), vip, p, 53, 0, b"q"));
            if backend_of(&h.take_tx()[0].1).0 == ip("10.1.0.12") {
                udp_port = Some(p);
            }
        }
    }
    (h, ids, tcp_port.expect("a TCP flow on .12"), udp_port.expect("a UDP flow on .12"))
}

#[test]
fn removed_backend_keep_policy_keeps_sessions() {
    let (mut h, mut ids, tp, up) = flows_on_second_backend("keep");
    let vip = ip("10.0.0.100");
    reconfigure(&mut h, &mut ids, &web_only("{address: 10.1.0.11, port: 8080}", "keep"), 2);
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, ip("192.168.1.10"), vip, tp, 80, FLAG_ACK, b"more"));
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_UDP, ip("192.168.1.10"), vip, up, 53, 0, b"more"));
    let out = h.take_tx();
    assert_eq!(backend_of(&out[0].1).0, ip("10.1.0.12"), "TCP stays on the removed backend");
    assert_eq!(backend_of(&out[1].1).0, ip("10.1.0.12"), "UDP stays on the removed backend");
    assert_eq!(h.total_drops(), 0);
}

#[test]
fn removed_backend_reset_policy_resets_tcp_and_moves_udp() {
    let (mut h, mut ids, tp, up) = flows_on_second_backend("reset");
    let vip = ip("10.0.0.100");
    let client = ip("192.168.1.10");
    reconfigure(&mut h, &mut ids, &web_only("{address: 10.1.0.11, port: 8080}", "reset"), 2);
    let before = h.dp.sessions().len();
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, client, vip, tp, 80, FLAG_ACK, b"more"));
    let out = h.take_tx();
    assert_eq!(out.len(), 1);
    let rst = &out[0].1;
    assert_eq!(rst.len(), 54);
    assert_eq!(&rst[0..6], &GW_MAC.0, "routed back to the client");
    let ipv = Ipv4Packet::new_checked(&rst[14..]).unwrap();
    assert!(ipv.verify_checksum());
    assert_eq!((ipv.src_u32(), ipv.dst_u32()), (vip, client));
    let t = TcpPacket::new_checked(&rst[34..]).unwrap();
    assert_eq!((t.src_port(), t.dst_port()), (80, tp));
    assert_eq!(t.flags(), FLAG_RST);
    assert_eq!(t.seq(), 0, "RST carries the segment's ack number (0 in the test frame)");
    assert_eq!(t.checksum(), full_l4_checksum(rst));
    assert_eq!(h.dp.sessions().len(), before - 1);
    assert_eq!(h.counters.event_count(Event::SessionsReset), 1);
    // UDP: the session moves to a configured backend.
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_UDP, client, vip, up, 53, 0, b"more"));
    assert_eq!(backend_of(&h.take_tx()[0].1).0, ip("10.1.0.11"));
    assert_eq!(h.counters.event_count(Event::SessionsMoved), 1);
    assert_eq!(h.total_drops(), 0);
}

#[test]
fn removed_backend_reschedule_policy_moves_sessions() {
    let (mut h, mut ids, tp, up) = flows_on_second_backend("reschedule");
    let vip = ip("10.0.0.100");
    let client = ip("192.168.1.10");
    reconfigure(&mut h, &mut ids, &web_only("{address: 10.1.0.11, port: 8080}", "reschedule"), 2);
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, client, vip, tp, 80, FLAG_ACK, b"more"));
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_UDP, client, vip, up, 53, 0, b"more"));
    let out = h.take_tx();
    assert_eq!(backend_of(&out[0].1).0, ip("10.1.0.11"));
    assert_eq!(backend_of(&out[1].1).0, ip("10.1.0.11"));
    assert_eq!(h.counters.event_count(Event::SessionsMoved), 2);
    // The moved TCP session carried its state (SYN sent) and the client's
    // ACK advanced it as on any session.
    let s = h.dp.sessions().iter().find(|(_, s)| s.client_port == tp && s.proto == PROTO_TCP).unwrap().1;
    assert_eq!(s.state, SessionState::TcpEstablished);
    // Replies from the new backend find the moved session.
    h.rx(1, l4_frame(INT_MAC, B1_MAC, PROTO_TCP, ip("10.1.0.11"), client, 8080, tp, FLAG_SYN | FLAG_ACK, b""));
    assert_frame(&h.take_tx()[0].1, GW_MAC, EXT_MAC, vip, client, 80, tp, 63);
    assert_eq!(h.total_drops(), 0);
}

#[test]
fn drained_backend_gets_no_new_flows_but_keeps_sessions() {
    let (mut h, mut ids, tp, _) = flows_on_second_backend("keep");
    let vip = ip("10.0.0.100");
    let client = ip("192.168.1.10");
    reconfigure(
        &mut h,
        &mut ids,
        &web_only("{address: 10.1.0.11, port: 8080}, {address: 10.1.0.12, port: 8080, drained: true}", "reset"),
        2,
    );
    // The existing session continues (drained is not removed).
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, client, vip, tp, 80, FLAG_ACK, b"more"));
    assert_eq!(backend_of(&h.take_tx()[0].1).0, ip("10.1.0.12"));
    // New flows all go elsewhere.
    for p in 50000..50050u16 {
        h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, client, vip, p, 80, FLAG_SYN, b""));
        assert_eq!(backend_of(&h.take_tx()[0].1).0, ip("10.1.0.11"));
    }
    assert_eq!(h.counters.event_count(Event::SessionsReset), 0);
}

/// What a classifier said: its verdict, and for a flow what it wrote of
/// the flow (key, flags, listener).
type Verdict = (Class, Option<Staged>);

fn verdict(class: Class, flow: Staged) -> Verdict {
    let flow = matches!(class, Class::Flow | Class::IcmpError).then_some(flow);
    (class, flow)
}

/// The fast classifier's answer (None: it declined) and the full one's,
/// for `data`, the first segment of a packet of `pkt_len` bytes on `port`.
fn classify_both(h: &Harness, port: u16, data: &[u8], pkt_len: usize) -> (Option<Verdict>, Verdict) {
    let snap = &h.dp.snap;
    let pv = &snap.ports[usize::from(port)];
    let (mut fast, mut full) = (Staged::default(), Staged::default());
    let fast_class = h.dp.st.classify_fast(snap, pv, data, pkt_len, &mut fast);
    let full_class = h.dp.st.classify_full(snap, pv, data, pkt_len, &mut full);
    (fast_class.map(|c| verdict(c, fast)), verdict(full_class, full))
}

/// Whenever the fast classifier answers, the full one gives the same
/// verdict (flow key, flags, direction, owner) or drop reason.
fn check_classifiers_agree(h: &Harness, port: u16, data: &[u8], pkt_len: usize) -> Result<bool, TestCaseError> {
    let (fast, full) = classify_both(h, port, data, pkt_len);
    match fast {
        Some(fast) => {
            prop_assert_eq!(
                &fast,
                &full,
                "fast and full classifiers disagree on {:02x?} (packet_len {})",
                data,
                pkt_len
            );
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Addresses that matter to the classifiers: VIPs, the ports' own
/// addresses, backends, a client, and anything else.
const CLASSIFY_ADDRS: [&str; 7] =
    ["10.0.0.100", "10.0.0.101", "10.0.0.102", "10.0.0.1", "10.1.0.1", "10.1.0.11", "192.168.1.10"];

/// A frame of which each header field is either random or made valid, as
/// the bits of `valid` say; so every mix of sound and broken fields comes up.
fn assemble_frame(mut f: Vec<u8>, valid: u16, port: u16, (proto, dst, dport): (u8, u32, u16), cut: usize) -> Vec<u8> {
    f.resize(f.len().max(60), 0);
    let mac = if port == 0 { EXT_MAC } else { INT_MAC };
    let bit = |b: u16| valid & (1 << b) != 0;
    if bit(0) {
        f[0..6].copy_from_slice(&mac.0);
    }
    if bit(1) {
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    }
    if bit(2) {
        f[14] = 0x45;
    }
    if bit(3) {
        let total = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
    }
    if bit(4) {
        // Not a fragment (DF at most), or one of the fragment cases.
        let frag: u16 = [0x0000, 0x4000, 0x2000, 0x0001, 0x1fff, 0x8000][usize::from(f[21] % 6)];
        f[20..22].copy_from_slice(&frag.to_be_bytes());
    }
    if bit(5) {
        f[23] = proto;
    }
    if bit(6) {
        f[30..34].copy_from_slice(&dst.to_be_bytes());
    }
    if bit(7) {
        f[36..38].copy_from_slice(&dport.to_be_bytes());
    }
    if bit(8) {
        f[46] = (f[46] & 0x0f) | 5 << 4;
    }
    if bit(9) {
        let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
        let ulen = total.saturating_sub(20) as u16;
        f[38..40].copy_from_slice(&ulen.to_be_bytes());
    }
    if bit(10) {
        f[22] = f[22].max(2); // TTL
    }
    if bit(11) {
        fix_ip_checksum(&mut f);
    }
    let keep = f.len() - cut % (f.len() + 1);
    f.truncate(keep);
    f
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Arbitrary frames, each header field random or valid: whenever the
    /// fast classifier answers, the full one agrees. Also for packets
    /// longer than their first segment (multi-segment mbufs). Most cases
    /// make every field valid and keep the frame whole (only the fragment
    /// field, the protocol and the addresses vary), so the fast path
    /// answers often enough for the comparison to mean something.
    #[test]
    fn fast_and_full_classifiers_agree_on_arbitrary_frames(
        bytes in proptest::collection::vec(any::<u8>(), 0..120),
        valid in prop_oneof![3 => Just(0x0fffu16), 1 => any::<u16>()],
        port in 0u16..2,
        proto in prop::sample::select(vec![PROTO_TCP, PROTO_UDP, PROTO_ICMP, 47]),
        dst in prop::sample::select(CLASSIFY_ADDRS.to_vec()),
        dport in prop::sample::select(vec![80u16, 81, 53, 22]),
        cut in prop_oneof![3 => Just(0usize), 1 => 0usize..100],
        more_segments in prop::sample::select(vec![0usize, 0, 1, 7, 400]),
        workers in 1usize..4,
    ) {
        let h = harness_with(CONFIG, 0, workers, 16);
        let f = assemble_frame(bytes, valid, port, (proto, ip(dst), dport), cut);
        check_classifiers_agree(&h, port, &f, f.len() + more_segments)?;
        // Fully random bytes as well (nearly always declined by the fast path).
        let raw = &f[..f.len().min(cut)];
        check_classifiers_agree(&h, port, raw, raw.len())?;
    }

    /// Valid TCP and UDP frames to VIPs, port addresses and elsewhere, with
    /// single-byte and field mutations, flag changes and truncations (the IP
    /// checksum fixed up after some, so the mutation is what is judged).
    #[test]
    fn fast_and_full_classifiers_agree_on_mutated_valid_frames(
        proto in prop::sample::select(vec![PROTO_TCP, PROTO_UDP]),
        src in prop::sample::select(CLASSIFY_ADDRS.to_vec()),
        dst in prop::sample::select(CLASSIFY_ADDRS.to_vec()),
        sport in prop::sample::select(vec![80u16, 8080, 5353, 40000]),
        dport in prop::sample::select(vec![80u16, 81, 53, 22, 40000]),
        flags in any::<u8>(),
        payload_len in 0usize..30,
        port in 0u16..2,
        mutations in proptest::collection::vec((0u8..8, 0usize..80, any::<u8>()), 0..3),
        padding in prop::sample::select(vec![0usize, 0, 1, 6, 20]),
        fix_checksum in any::<bool>(),
        more_segments in prop::sample::select(vec![0usize, 0, 3, 100]),
        workers in 1usize..4,
    ) {
        let h = harness_with(CONFIG, 0, workers, 16);
        let mac = if port == 0 { EXT_MAC } else { INT_MAC };
        let payload = vec![0x5a; payload_len];
        let mut f = l4_frame(mac, GW_MAC, proto, ip(src), ip(dst), sport, dport, flags, &payload);
        // Unmutated, the fast path must take it: otherwise this test would
        // compare nothing.
        prop_assert!(check_classifiers_agree(&h, port, &f, f.len())?, "fast path declined a valid frame");
        // Ethernet padding after the IP packet (a short frame padded to 60).
        f.resize(f.len() + padding, 0);
        // Field mutations first, truncations last (the fields are in the
        // untruncated frame).
        let mut mutations = mutations;
        mutations.sort_by_key(|m| m.0 == 7);
        for (kind, at, v) in mutations {
            match kind {
                // One byte anywhere.
                0 => { let i = at % f.len(); f[i] ^= v.max(1); }
                // IPv4 total length: anything, or a few bytes off.
                1 if v & 0x80 != 0 => { f[16] = v >> 5 & 3; f[17] = f[17].wrapping_add(v); }
                1 => {
                    let total = i32::from(u16::from_be_bytes([f[16], f[17]])) + i32::from(v & 0x3f) - 32;
                    f[16..18].copy_from_slice(&(total.max(0) as u16).to_be_bytes());
                }
                // Flags and fragment offset: MF alone, an offset alone, DF, the reserved bit.
                2 => {
                    let frag: u16 = [0x2000, 0x0001, 0x1fff, 0x6000, 0x4000, 0x8000, 0x0100][usize::from(v % 7)];
                    f[20..22].copy_from_slice(&frag.to_be_bytes());
                }
                // TTL.
                3 => f[22] = v % 4,
                // TCP data offset / UDP length.
                4 => { if proto == PROTO_TCP { f[46] = v; } else { f[38] = v >> 5; f[39] = v; } }
                // TCP flags.
                5 => { if proto == PROTO_TCP { f[47] = v; } }
                // Protocol.
                6 => f[23] = [PROTO_TCP, PROTO_UDP, PROTO_ICMP, v][usize::from(v % 4)],
                // Truncation.
                _ => { let keep = f.len() - (at % f.len()); f.truncate(keep.max(1)); }
            }
        }
        if fix_checksum && f.len() >= 34 {
            fix_ip_checksum(&mut f);
        }
        check_classifiers_agree(&h, port, &f, f.len() + more_segments)?;
    }
}

/// The property tests above only compare when the fast path answers: make
/// sure it answers for each kind of valid flow packet.
#[test]
fn fast_classifier_takes_valid_flow_frames() {
    let h = harness_with(CONFIG, 0, 2, 16);
    let client = ip("192.168.1.10");
    let frames = [
        (0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, client, ip("10.0.0.100"), 40000, 80, FLAG_SYN, b"")),
        (0, l4_frame(EXT_MAC, GW_MAC, PROTO_UDP, client, ip("10.0.0.100"), 40000, 53, 0, b"q")),
        (0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, client, ip("10.0.0.100"), 40000, 22, FLAG_SYN, b"")),
        (1, l4_frame(INT_MAC, B1_MAC, PROTO_TCP, ip("10.1.0.11"), client, 8080, 40000, FLAG_ACK, b"x")),
    ];
    for (port, f) in &frames {
        let (fast, full) = classify_both(&h, *port, f, f.len());
        assert_eq!(fast.as_ref(), Some(&full), "{f:02x?}");
    }
}

/// Two VIPs on one backend, and ports without a gateway: a client off the
/// ports' subnets can reach a VIP but cannot be answered.
const NO_GATEWAY: &str = r#"
ports:
  - {name: ext, device: a, address: 10.0.0.1/24}
  - name: int
    device: b
    address: 10.1.0.1/24
    neighbors: [{ip: 10.1.0.11, mac: "02:00:00:00:00:11"}]
listeners:
  - {name: a, vip: 10.0.0.100, protocol: tcp, port: 80, backends: [{address: 10.1.0.11, port: 8080}]}
  - {name: b, vip: 10.0.0.103, protocol: tcp, port: 80, backends: [{address: 10.1.0.11, port: 8080}]}
"#;

#[test]
fn same_client_endpoint_through_two_vips_to_one_backend_is_a_nat_tuple_conflict() {
    let mut h = harness_with(NO_GATEWAY, 0, 1, 100);
    let client = ip("10.0.0.7");
    h.rx(0, l4_frame(EXT_MAC, CLIENT_MAC, PROTO_TCP, client, ip("10.0.0.100"), 40000, 80, FLAG_SYN, b""));
    let out = h.take_tx();
    assert_eq!(out.len(), 1);
    assert_frame(&out[0].1, B1_MAC, INT_MAC, client, ip("10.1.0.11"), 40000, 8080, 63);
    // The backend would see the same 5-tuple for both: the second is refused.
    for _ in 0..3 {
        h.rx(0, l4_frame(EXT_MAC, CLIENT_MAC, PROTO_TCP, client, ip("10.0.0.103"), 40000, 80, FLAG_SYN, b""));
    }
    assert!(h.take_tx().is_empty());
    assert_eq!(h.drops(DropReason::NatTupleConflict), 3);
    assert_eq!(h.total_drops(), 3);
    assert_eq!(h.io.freed, 3, "each refused packet is freed");
    assert_eq!(h.dp.sessions().len(), 1);
    // Another client port is no conflict.
    h.rx(0, l4_frame(EXT_MAC, CLIENT_MAC, PROTO_TCP, client, ip("10.0.0.103"), 40001, 80, FLAG_SYN, b""));
    assert_eq!(h.take_tx().len(), 1);
    assert_eq!(h.total_drops(), 3);
}

#[test]
fn reply_to_a_client_without_route_is_dropped_as_no_route() {
    let mut h = harness_with(NO_GATEWAY, 0, 1, 100);
    let (client, vip, backend) = (ip("192.168.1.10"), ip("10.0.0.100"), ip("10.1.0.11"));
    // The request reaches the backend (on-link)...
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, client, vip, 40000, 80, FLAG_SYN, b""));
    assert_eq!(h.take_tx().len(), 1);
    // ...its answers have nowhere to go: no port holds the client, no gateway.
    for _ in 0..2 {
        h.rx(1, l4_frame(INT_MAC, B1_MAC, PROTO_TCP, backend, client, 8080, 40000, FLAG_SYN | FLAG_ACK, b""));
    }
    assert!(h.take_tx().is_empty());
    assert_eq!(h.drops(DropReason::NoRoute), 2);
    assert_eq!(h.total_drops(), 2);
    assert_eq!(h.io.freed, 2);
    assert_eq!(h.dp.parked(), 0);
}

#[test]
fn packets_parked_at_shutdown_are_freed_as_shutdown() {
    let mut h = harness();
    let (client, vip) = (ip("192.168.1.10"), ip("10.0.0.101"));
    // The backend 10.1.0.50 never answers ARP; the queue holds 4.
    for sport in 5000..5003 {
        h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_UDP, client, vip, sport, 53, 0, b"q"));
    }
    assert_eq!(h.dp.parked(), 3);
    assert_eq!(h.total_drops(), 0);
    let freed = h.io.freed;
    h.dp.drain(&mut h.io);
    assert_eq!(h.drops(DropReason::Shutdown), 3);
    assert_eq!(h.total_drops(), 3);
    assert_eq!(h.io.freed, freed + 3, "every parked packet is freed");
    assert_eq!(h.dp.parked(), 0);
    assert_eq!(h.counters.parked.get(), 0);
}

#[test]
fn host_traffic_goes_up_to_the_kernel_of_its_port() {
    // The int port (10.1.0.1) has a kernel interface, the ext port not.
    let mut h = harness();
    let (backend, port_addr) = (ip("10.1.0.11"), ip("10.1.0.1"));
    // A backend's answer to the host's own connection (a health check).
    let syn_ack = l4_frame(INT_MAC, B1_MAC, PROTO_TCP, backend, port_addr, 8080, 40001, FLAG_SYN | FLAG_ACK, b"");
    h.rx(1, syn_ack.clone());
    // UDP to the port address, and ICMP other than an echo request
    // (a port unreachable for the host's UDP probe).
    let udp = l4_frame(INT_MAC, B1_MAC, PROTO_UDP, backend, port_addr, 9000, 40002, 0, b"pong");
    h.rx(1, udp.clone());
    let mut unreachable = l4_frame(INT_MAC, B1_MAC, PROTO_ICMP, backend, port_addr, 0, 0, 0, b"");
    unreachable[34] = 3; // destination unreachable
    unreachable[35] = 3; // port unreachable
    h.rx(1, unreachable.clone());
    assert!(h.take_tx().is_empty(), "nothing answered or forwarded by lbd");
    let up: Vec<(u16, Vec<u8>)> = std::mem::take(&mut h.io.to_kernel);
    assert_eq!(up, vec![(1, syn_ack), (1, udp), (1, unreachable)], "passed up unchanged, to port int");
    assert_eq!(h.total_drops(), 0);

    // An echo request to the port address is still answered here.
    let mut echo = l4_frame(INT_MAC, B1_MAC, PROTO_ICMP, backend, port_addr, 0, 0, 0, b"");
    echo[34] = icmp::ECHO_REQUEST;
    h.rx(1, echo);
    assert_eq!(h.take_tx().len(), 1);
    assert_eq!(h.counters.event_count(Event::IcmpEchoReplies), 1);
    assert!(h.io.to_kernel.is_empty());

    // The ext port has none: the same packets to its address are dropped.
    let client = ip("192.168.1.10");
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, client, ip("10.0.0.1"), 1, 22, FLAG_SYN, b""));
    assert_eq!(h.drops(DropReason::NoListener), 1);
    // A VIP without a listener on the port is nobody's host traffic.
    h.rx(1, l4_frame(INT_MAC, B1_MAC, PROTO_TCP, backend, ip("10.0.0.100"), 1, 22, FLAG_SYN, b""));
    assert_eq!(h.drops(DropReason::NoListener), 2);
    assert!(h.io.to_kernel.is_empty());
}

#[test]
fn a_flood_to_the_host_is_cut_to_the_rate_without_touching_flows() {
    let mut h = harness();
    let (backend, port_addr) = (ip("10.1.0.11"), ip("10.1.0.1"));
    let flood = l4_frame(INT_MAC, B1_MAC, PROTO_UDP, backend, port_addr, 9000, 40002, 0, b"x");
    let burst = crate::ratelimit::TokenBucket::default_burst(KERNEL_RATE) as usize;
    // All in the same millisecond: only the bucket's burst passes.
    for _ in 0..10 * burst {
        h.rx(1, flood.clone());
    }
    assert_eq!(h.io.to_kernel.len(), burst);
    assert_eq!(h.drops(DropReason::KernelRateLimited), 9 * burst as u64);
    // Load-balanced traffic in the same millisecond is not limited.
    let (client, vip) = (ip("192.168.1.10"), ip("10.0.0.100"));
    for sport in 0..100 {
        h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, client, vip, 20000 + sport, 80, FLAG_SYN, b""));
    }
    assert_eq!(h.take_tx().len(), 100);
    // A second later the rate's worth passes again (1000/s, capped by the
    // burst).
    h.dp.set_now(1001);
    h.io.to_kernel.clear();
    for _ in 0..10 * burst {
        h.rx(1, flood.clone());
    }
    assert_eq!(h.io.to_kernel.len(), burst);
}

/// A backend whose health is down serves its listener no more: its
/// sessions follow `sessions.removed_backend` as if it were removed (here
/// `reschedule`), unless every backend is down and the listener fails open.
#[test]
fn sessions_on_a_down_backend_follow_the_removed_backend_policy() {
    use crate::health::{BackendHealth, Health, HealthTable};
    let (mut h, ids, tp, up) = flows_on_second_backend("reschedule");
    let vip = ip("10.0.0.100");
    let client = ip("192.168.1.10");
    let with_down = |yaml: &str, down: &[&str], generation: u64| {
        let cfg = config::parse(yaml, Path::new("t")).unwrap();
        let mut table = HealthTable::default();
        for l in ["web", "dns"] {
            for b in down {
                let id = ids.backend(l, b.parse().unwrap(), 8080).unwrap();
                table.backends.insert(id, BackendHealth { state: Some(Health::Down), ..BackendHealth::default() });
            }
        }
        let facts = crate::snapshot::PortFacts::as_configured(&cfg, &[EXT_MAC, INT_MAC]);
        Snapshot::build_with_health(&cfg, &facts, &ids, generation, &table, std::time::Duration::ZERO, None)
    };
    let both = "{address: 10.1.0.11, port: 8080}, {address: 10.1.0.12, port: 8080}";
    // Both down, failing open (the default): sessions stay where they are.
    let yaml = web_only(both, "reschedule");
    h.dp.set_snapshot(Arc::new(with_down(&yaml, &["10.1.0.11", "10.1.0.12"], 2)));
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, client, vip, tp, 80, FLAG_ACK, b"more"));
    assert_eq!(backend_of(&h.take_tx()[0].1).0, ip("10.1.0.12"));
    // Only .12 down: both flows move to .11.
    h.dp.set_snapshot(Arc::new(with_down(&yaml, &["10.1.0.12"], 3)));
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, client, vip, tp, 80, FLAG_ACK, b"more"));
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_UDP, client, vip, up, 53, 0, b"more"));
    let out = h.take_tx();
    assert_eq!(backend_of(&out[0].1).0, ip("10.1.0.11"));
    assert_eq!(backend_of(&out[1].1).0, ip("10.1.0.11"));
    assert_eq!(h.counters.event_count(Event::SessionsMoved), 2);
    // Both down and `all_down: drop`: a new flow finds no backend.
    let drop_yaml = yaml.replace("    port: 80\n", "    port: 80\n    all_down: drop\n");
    assert_ne!(drop_yaml, yaml);
    h.dp.set_snapshot(Arc::new(with_down(&drop_yaml, &["10.1.0.11", "10.1.0.12"], 4)));
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, client, vip, 41000, 80, FLAG_SYN, b""));
    assert!(h.take_tx().is_empty());
    assert_eq!(h.counters.drop_count(DropReason::NoBackend), 1);
}

// Schedulers and persistence, through whole packets.

/// One TCP listener `web` (10.0.0.100:80) with `listener` lines added and
/// three backends 10.1.0.11-13 of `weights`.
fn sched_config(listener: &str, weights: [u32; 3]) -> String {
    let [w1, w2, w3] = weights;
    format!(
        "ports:\n  - {{name: ext, device: a, address: 10.0.0.1/24, gateway: 10.0.0.254, neighbors: [{{ip: 10.0.0.254, mac: \"02:00:00:00:00:fe\"}}]}}\n  \
         - {{name: int, device: b, address: 10.1.0.1/24, neighbors: [{{ip: 10.1.0.11, mac: \"02:00:00:00:00:11\"}}, {{ip: 10.1.0.12, mac: \"02:00:00:00:00:12\"}}, {{ip: 10.1.0.13, mac: \"02:00:00:00:00:13\"}}]}}\n\
         listeners:\n  - name: web\n    vip: 10.0.0.100\n    protocol: tcp\n    port: 80\n{listener}    backends:\n      \
         - {{address: 10.1.0.11, port: 8080, weight: {w1}}}\n      - {{address: 10.1.0.12, port: 8080, weight: {w2}}}\n      \
         - {{address: 10.1.0.13, port: 8080, weight: {w3}}}\n"
    )
}

/// `workers` cores sharing their counters and one persistence table, as
/// the daemon builds them.
fn worker_group(yaml: &str, workers: usize) -> (Vec<Harness>, IdRegistry, Arc<PersistenceTable>) {
    let cfg = config::parse(yaml, Path::new("test.yaml")).expect("test config is valid");
    let mut ids = IdRegistry::default();
    ids.assign(&cfg.forwarding, &|_| true).unwrap();
    let snap = Arc::new(Snapshot::build(&cfg, &[EXT_MAC, INT_MAC], &ids, 1));
    let counters: Vec<Arc<WorkerCounters>> =
        (0..workers).map(|_| Arc::new(WorkerCounters::new(2, config::MAX_LISTENERS, config::MAX_BACKENDS))).collect();
    let table = Arc::new(PersistenceTable::new(4096));
    let shared = Shared { counters: counters.iter().cloned().collect(), persistence: Arc::clone(&table) };
    let hs = (0..workers)
        .map(|w| {
            let settings = CoreSettings {
                session_capacity: 1000,
                to_kernel_rate: KERNEL_RATE,
                echo_reply_rate: ECHO_RATE,
                icmp_error_rate: ERROR_RATE,
                icmp_forward_rate: FORWARD_RATE,
                fragments: cfg.startup.fragments,
                ..CoreSettings::small(w, workers)
            };
            let mut dp = Dataplane::with_shared(settings, Arc::clone(&snap), Arc::clone(&counters[w]), shared.clone());
            dp.set_now(1);
            Harness { dp, counters: Arc::clone(&counters[w]), io: TestIo::default() }
        })
        .collect();
    (hs, ids, table)
}

fn reconfigure_all(hs: &mut [Harness], ids: &mut IdRegistry, yaml: &str, generation: u64) {
    let cfg = config::parse(yaml, Path::new("test.yaml")).expect("valid");
    ids.assign(&cfg.forwarding, &|_| true).unwrap();
    let snap = Arc::new(Snapshot::build(&cfg, &[EXT_MAC, INT_MAC], ids, generation));
    for h in hs {
        h.dp.set_snapshot(Arc::clone(&snap));
    }
}

fn syn(client: u32, port: u16) -> Vec<u8> {
    l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, client, ip("10.0.0.100"), port, 80, FLAG_SYN, b"")
}

/// Opens a connection (its SYN) from `client`:`port` at the worker that
/// owns it; returns the last octet of the backend it went to.
fn connect(hs: &mut [Harness], client: u32, port: u16) -> u8 {
    let owner = owner_shard(client, port, hs.len());
    hs[owner].rx(0, syn(client, port));
    let out = hs[owner].take_tx();
    assert_eq!(out.len(), 1, "the SYN from port {port} was forwarded");
    backend_of(&out[0].1).0 as u8
}

fn hits(hs: &[Harness]) -> u64 {
    hs.iter().map(|h| h.counters.event_count(Event::PersistenceHits)).sum()
}

fn set_now(hs: &mut [Harness], now: u32) {
    for h in hs {
        h.dp.set_now(now);
    }
}

/// A client's connections come from many ports and so land on both
/// workers; the shared table keeps every one on the backend the first got,
/// under round robin, which would otherwise rotate them.
#[test]
fn persistence_keeps_a_client_on_one_backend_across_workers() {
    let yaml = sched_config("    scheduler: round_robin\n    persistence: 10s\n", [1, 1, 1]);
    let (mut hs, _, table) = worker_group(&yaml, 2);
    let client = ip("192.168.1.10");
    let first = connect(&mut hs, client, 20000);
    let mut on_worker = [0; 2];
    for port in 20001..20100u16 {
        on_worker[owner_shard(client, port, 2)] += 1;
        assert_eq!(connect(&mut hs, client, port), first, "port {port}");
    }
    assert!(on_worker.iter().all(|n| *n > 20), "both workers took connections: {on_worker:?}");
    assert_eq!(hits(&hs), 99);
    assert_eq!(table.count(1, 10_000), (1, 1), "one entry for the client");
    // Other clients still rotate over all backends.
    let others: std::collections::HashSet<u8> =
        (1..30).map(|c| connect(&mut hs, ip("192.168.2.0") + c, 1000)).collect();
    assert_eq!(others.len(), 3);
    // Without persistence, the same client's connections rotate.
    let (mut plain, _, _) = worker_group(&sched_config("    scheduler: round_robin\n", [1, 1, 1]), 2);
    let spread: std::collections::HashSet<u8> = (20000..20030u16).map(|p| connect(&mut plain, client, p)).collect();
    assert_eq!(spread.len(), 3);
}

/// Expiry counts from the last connection: a client that keeps coming
/// back within the time keeps its backend for far longer than the time;
/// after the time without a connection, round robin moves it on.
#[test]
fn persistence_expires_after_its_time_without_connections() {
    let yaml = sched_config("    scheduler: round_robin\n    persistence: 10s\n", [1, 1, 1]);
    let (mut hs, _, _) = worker_group(&yaml, 1);
    let client = ip("192.168.1.10");
    let first = connect(&mut hs, client, 20000);
    for (i, now) in (9_001..60_000u32).step_by(9_000).enumerate() {
        set_now(&mut hs, now);
        assert_eq!(connect(&mut hs, client, 20001 + i as u16), first, "at {now} ms");
    }
    let hits_before = hits(&hs);
    // 10 s after the last connection (at 54001 ms) and one ms more.
    set_now(&mut hs, 64_002);
    let moved = connect(&mut hs, client, 30000);
    assert_ne!(moved, first, "round robin's next backend after the entry expired");
    assert_eq!(hits(&hs), hits_before);
    // And the new backend holds from then on.
    assert_eq!(connect(&mut hs, client, 30001), moved);
    assert_eq!(hits(&hs), hits_before + 1);
}

/// The remembered backend is used only while it takes new flows: drained
/// (weight 0) or removed, the client is scheduled anew and the entry
/// overwritten; its open connection stays where it is.
#[test]
fn persistence_repicks_when_the_remembered_backend_takes_no_new_flows() {
    let lines = "    scheduler: least_connections\n    persistence: 1h\n";
    let (mut hs, mut ids, _) = worker_group(&sched_config(lines, [1, 1, 1]), 1);
    let client = ip("192.168.1.10");
    let first = connect(&mut hs, client, 20000);
    assert_eq!(connect(&mut hs, client, 20001), first);
    let mut weights = [1, 1, 1];
    weights[usize::from(first - 11)] = 0;
    reconfigure_all(&mut hs, &mut ids, &sched_config(lines, weights), 2);
    let second = connect(&mut hs, client, 20002);
    assert_ne!(second, first);
    // The open connection continues to its backend.
    let ack = l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, client, ip("10.0.0.100"), 20000, 80, FLAG_ACK, b"more");
    hs[0].rx(0, ack);
    assert_eq!(backend_of(&hs[0].take_tx()[0].1).0 as u8, first);
    // Weight back: the client stays where it was sent last.
    reconfigure_all(&mut hs, &mut ids, &sched_config(lines, [1, 1, 1]), 3);
    for p in 20003..20010 {
        assert_eq!(connect(&mut hs, client, p), second);
    }
    // Its backend removed from the listener: scheduled anew.
    let kept: Vec<String> =
        (11..14u8).filter(|b| *b != second).map(|b| format!("      - {{address: 10.1.0.{b}, port: 8080}}\n")).collect();
    let without = sched_config(lines, [1, 1, 1]).split("    backends:\n").next().unwrap().to_owned()
        + "    backends:\n"
        + &kept.concat();
    reconfigure_all(&mut hs, &mut ids, &without, 4);
    let third = connect(&mut hs, client, 20010);
    assert_ne!(third, second);
    assert_eq!(connect(&mut hs, client, 20011), third);
}

/// Two connections of one client in one burst: the second sees what the
/// first remembered (persistence decides at session creation, not in the
/// prefetch pass).
#[test]
fn persistence_holds_within_one_burst() {
    let yaml = sched_config("    scheduler: round_robin\n    persistence: 10s\n", [1, 1, 1]);
    let (mut hs, _, _) = worker_group(&yaml, 1);
    let client = ip("192.168.1.10");
    let burst: Vec<Pkt> = (20000..20010u16).map(|p| Pkt { data: syn(client, p), port: 0 }).collect();
    let h = &mut hs[0];
    h.dp.process_burst(burst.into_iter(), &mut h.io);
    let backends: std::collections::HashSet<u32> = h.take_tx().iter().map(|(_, f)| backend_of(f).0).collect();
    assert_eq!(backends.len(), 1, "{backends:?}");
}

/// Weighted least connections over two workers: open sessions spread by
/// weight, counted across both workers' tables, also within one burst
/// (the decision waits for the sessions before it); after a weight change,
/// new flows go where sessions per weight are fewest.
#[test]
fn least_connections_spreads_open_sessions_by_weight_across_workers() {
    let lines = "    scheduler: least_connections\n";
    let (mut hs, mut ids, _) = worker_group(&sched_config(lines, [1, 1, 1]), 2);
    let active = |hs: &[Harness]| -> [usize; 3] {
        let mut n = [0; 3];
        for h in hs {
            for (_, s) in h.dp.sessions().iter() {
                n[usize::from(s.backend_ip as u8 - 11)] += 1;
            }
        }
        n
    };
    // `n` SYNs from new clients owned by the workers `on` names, in one
    // burst per worker.
    let mut next_client = ip("192.168.3.0");
    let mut open = |hs: &mut [Harness], n: usize, on: &[usize]| {
        let mut bursts: Vec<Vec<Pkt>> = vec![Vec::new(); hs.len()];
        let mut opened = 0;
        while opened < n {
            next_client += 1;
            let owner = owner_shard(next_client, 1000, hs.len());
            if on.contains(&owner) {
                bursts[owner].push(Pkt { data: syn(next_client, 1000), port: 0 });
                opened += 1;
            }
        }
        for (h, b) in hs.iter_mut().zip(bursts) {
            h.dp.process_burst(b.into_iter(), &mut h.io);
            h.take_tx();
        }
    };
    open(&mut hs, 30, &[0]);
    assert_eq!(active(&hs), [10, 10, 10]);
    // Worker 1 schedules by worker 0's sessions too.
    reconfigure_all(&mut hs, &mut ids, &sched_config(lines, [1, 2, 3]), 2);
    open(&mut hs, 30, &[1]);
    assert_eq!(active(&hs), [10, 20, 30], "the new 30 went to the backends with fewest sessions per weight");
    // Weight 0: nothing more for the first backend.
    reconfigure_all(&mut hs, &mut ids, &sched_config(lines, [0, 2, 3]), 3);
    open(&mut hs, 50, &[0, 1]);
    assert_eq!(active(&hs), [10, 40, 60]);
    assert_eq!(hs.iter().map(|h| h.total_drops()).sum::<u64>(), 0);
}

/// Source hash: a client always reaches the same backend, whatever its
/// port and whichever worker owns the connection; clients spread.
#[test]
fn source_hash_sends_each_client_to_one_backend() {
    let (mut hs, _, _) = worker_group(&sched_config("    scheduler: source_hash\n", [1, 1, 1]), 2);
    let mut per_backend = [0; 3];
    for c in 0..60u32 {
        let client = ip("172.16.0.0") + c * 257;
        let first = connect(&mut hs, client, 1000);
        per_backend[usize::from(first - 11)] += 1;
        for port in 1001..1010 {
            assert_eq!(connect(&mut hs, client, port), first);
        }
    }
    assert!(per_backend.iter().all(|n| *n >= 8), "{per_backend:?}");
    assert_eq!(hits(&hs), 0, "no persistence configured");
}

#[test]
fn echo_replies_are_rate_limited() {
    let mut h = harness();
    let mut f = l4_frame(EXT_MAC, GW_MAC, PROTO_UDP, ip("192.168.1.10"), ip("10.0.0.100"), 0, 0, 0, b"ping");
    f[23] = PROTO_ICMP;
    fix_ip_checksum(&mut f);
    f[34] = icmp::ECHO_REQUEST;
    let burst = crate::ratelimit::TokenBucket::default_burst(ECHO_RATE) as usize;
    // All in one millisecond: the burst is answered, the rest dropped.
    for _ in 0..3 * burst {
        h.rx(0, f.clone());
    }
    assert_eq!(h.take_tx().len(), burst);
    assert_eq!(h.counters.event_count(Event::IcmpEchoReplies), burst as u64);
    assert_eq!(h.drops(DropReason::IcmpRateLimited), 2 * burst as u64);
    // A second later the rate's worth again.
    h.dp.set_now(1001);
    for _ in 0..3 * burst {
        h.rx(0, f.clone());
    }
    assert_eq!(h.take_tx().len(), burst);
}

#[test]
fn a_flood_at_one_ports_host_address_leaves_the_others_budget_alone() {
    // Both ports with a kernel interface.
    let mut h = harness_with(&CONFIG.replacen("    exception: off\n", "", 1), 0, 1, 1000);
    let burst = crate::ratelimit::TokenBucket::default_burst(KERNEL_RATE) as usize;
    let client = ip("192.168.1.10");
    let flood = l4_frame(EXT_MAC, GW_MAC, PROTO_UDP, client, ip("10.0.0.1"), 9, 9999, 0, b"x");
    for _ in 0..10 * burst {
        h.rx(0, flood.clone());
    }
    assert_eq!(h.io.to_kernel.len(), burst, "the ext port's budget is spent");
    // In the same millisecond, the host's traffic on the backend side still
    // goes up: a backend's SYN-ACK to a health check, an ARP reply.
    let (backend, port_addr) = (ip("10.1.0.11"), ip("10.1.0.1"));
    h.rx(1, l4_frame(INT_MAC, B1_MAC, PROTO_TCP, backend, port_addr, 8080, 40001, FLAG_SYN | FLAG_ACK, b""));
    h.rx(1, arp_frame(arp::OP_REPLY, B1_MAC, backend, INT_MAC, port_addr, INT_MAC));
    let up: Vec<u16> = h.io.to_kernel.iter().skip(burst).map(|(p, _)| *p).collect();
    assert_eq!(up, vec![1, 1]);
}

mod fragments;
mod icmp_error;
mod limits;
// SYN-flood defence: the half-open cap and eviction.

fn half_open_harness(capacity: usize, half_open_max: usize) -> Harness {
    let yaml = format!("{CONFIG}sessions: {{half_open_max_per_worker: {half_open_max}}}\n");
    harness_with(&yaml, 0, 1, capacity)
}

/// The harness's instance key (any key other than the fixed one).
const TEST_HASH_KEY: [u8; crate::hashkey::KEY_LEN] = [0x5a; crate::hashkey::KEY_LEN];

const FLOOD_CLIENT: &str = "192.168.1.10";

fn client_syn(h: &mut Harness, port: u16) {
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, ip(FLOOD_CLIENT), ip("10.0.0.100"), port, 80, FLAG_SYN, b""));
}

/// A complete handshake through the balancer from client port `port`.
fn establish(h: &mut Harness, port: u16) {
    let (client, vip) = (ip(FLOOD_CLIENT), ip("10.0.0.100"));
    client_syn(h, port);
    let out = h.take_tx();
    let (baddr, bport) = backend_of(&out.last().expect("SYN forwarded").1);
    h.rx(1, l4_frame(INT_MAC, B1_MAC, PROTO_TCP, baddr, client, bport, port, FLAG_SYN | FLAG_ACK, b""));
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, client, vip, port, 80, FLAG_ACK, b""));
    assert_eq!(h.take_tx().len(), 2);
}

/// The state of the session of client port `port`, if it has one.
fn state_of(h: &Harness, port: u16) -> Option<SessionState> {
    let key = crate::flow::FlowKey::new(ip(FLOOD_CLIENT), ip("10.0.0.100"), port, 80, PROTO_TCP);
    h.dp.sessions().lookup(&key, h.dp.sessions().hash(&key)).map(|(slot, _)| h.dp.sessions().session(slot).state)
}

/// The same SYN three times in one burst (a retransmission, or a
/// client's retry, arriving together): the second and third find the
/// session the first created, although their lookups, made before it
/// existed, found nothing. Round robin would give each a backend of its
/// own if they were new flows.
#[test]
fn a_syn_repeated_within_a_burst_finds_the_session_its_first_copy_made() {
    let yaml = sched_config("    scheduler: round_robin\n", [1, 1, 1]);
    let (mut hs, _, _) = worker_group(&yaml, 1);
    let client = ip("192.168.1.10");
    let burst: Vec<Pkt> = (0..3).map(|_| Pkt { data: syn(client, 20000), port: 0 }).collect();
    let h = &mut hs[0];
    h.dp.process_burst(burst.into_iter(), &mut h.io);
    let out = h.take_tx();
    assert_eq!(out.len(), 3);
    let backends: std::collections::HashSet<u32> = out.iter().map(|(_, f)| backend_of(f).0).collect();
    assert_eq!(backends.len(), 1, "{backends:?}");
    assert_eq!(h.dp.sessions().len(), 1);
}

/// A new flow's session is stored as its first segment leaves it: a
/// plain SYN half-open and counted as such, a SYN carrying a FIN closing
/// (the TCP state machine still runs for it), each seen now.
#[test]
fn the_first_segment_sets_the_new_session_state() {
    let mut h = half_open_harness(100, 100);
    client_syn(&mut h, 10);
    let (client, vip) = (ip(FLOOD_CLIENT), ip("10.0.0.100"));
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, client, vip, 11, 80, FLAG_SYN | tcp::FLAG_FIN, b""));
    assert_eq!(h.take_tx().len(), 2);
    assert_eq!(state_of(&h, 10), Some(SessionState::TcpSynSent));
    assert_eq!(state_of(&h, 11), Some(SessionState::TcpClosing));
    assert_eq!(h.dp.sessions().half_open(), 1);
    for (slot, s) in h.dp.sessions().iter() {
        assert_eq!(s.last_seen, 1, "slot {slot}");
    }
}

#[test]
fn syns_beyond_the_half_open_cap_evict_the_oldest_half_open_session() {
    let mut h = half_open_harness(100, 3);
    establish(&mut h, 1);
    establish(&mut h, 2);
    for p in 10..15 {
        client_syn(&mut h, p);
    }
    // Every SYN was forwarded; the two oldest gave way to the last two.
    assert_eq!(h.take_tx().len(), 5);
    assert_eq!(h.dp.sessions().half_open(), 3);
    assert_eq!(h.counters.event_count(Event::HalfOpenEvicted), 2);
    assert_eq!((state_of(&h, 10), state_of(&h, 11)), (None, None));
    for p in 12..15 {
        assert_eq!(state_of(&h, p), Some(SessionState::TcpSynSent));
    }
    for p in [1, 2] {
        assert_eq!(state_of(&h, p), Some(SessionState::TcpEstablished));
    }
    assert_eq!(h.dp.sessions().len(), 5);
    assert_eq!(h.counters.sessions_active.get(), 5);
    assert_eq!(h.total_drops(), 0);
}

#[test]
fn a_full_table_evicts_half_open_sessions_for_a_syn_and_never_an_established_one() {
    let mut h = half_open_harness(4, 4);
    establish(&mut h, 1);
    establish(&mut h, 2);
    client_syn(&mut h, 10);
    client_syn(&mut h, 11);
    assert_eq!(h.dp.sessions().len(), 4);
    // Full: the new SYN takes the oldest half-open session's place.
    client_syn(&mut h, 12);
    assert_eq!(h.take_tx().len(), 3);
    assert_eq!(state_of(&h, 10), None);
    assert_eq!(state_of(&h, 12), Some(SessionState::TcpSynSent));
    assert_eq!(h.counters.event_count(Event::HalfOpenEvicted), 1);
    // Once every session is established, a SYN finds nothing to evict.
    for p in [11, 12] {
        h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, ip(FLOOD_CLIENT), ip("10.0.0.100"), p, 80, FLAG_ACK, b""));
    }
    assert_eq!(h.dp.sessions().half_open(), 0);
    client_syn(&mut h, 13);
    assert_eq!(h.drops(DropReason::SessionTableFull), 1);
    assert_eq!(state_of(&h, 13), None);
    for p in [1, 2, 11, 12] {
        assert_eq!(state_of(&h, p), Some(SessionState::TcpEstablished), "port {p}");
    }
    assert_eq!(h.counters.event_count(Event::HalfOpenEvicted), 1);
}

#[test]
fn a_syn_that_finds_no_evictable_half_open_session_is_dropped_with_a_reason() {
    // 70 completed handshakes leave 70 stale entries in the arrival order
    // ahead of the one half-open session: the first SYN at the cap looks
    // past 64 of them only and is dropped; the next one gets through.
    let mut h = half_open_harness(100, 1);
    for p in 1..=70 {
        establish(&mut h, p);
    }
    client_syn(&mut h, 100);
    client_syn(&mut h, 101);
    assert_eq!(h.drops(DropReason::HalfOpenFull), 1);
    assert_eq!(state_of(&h, 100), Some(SessionState::TcpSynSent));
    client_syn(&mut h, 102);
    assert_eq!(state_of(&h, 100), None);
    assert_eq!(state_of(&h, 102), Some(SessionState::TcpSynSent));
    assert_eq!(h.dp.sessions().half_open(), 1);
    assert_eq!(h.counters.event_count(Event::HalfOpenEvicted), 1);
}

// SYN-flood defence: the SYN proxy.

use crate::synproxy as sp;
use crate::wire::tcp_options::{self as topt, Options};

/// `CONFIG` with listener web on one backend (10.1.0.11) and `syn_proxy:
/// mode`, and `extra` appended.
fn proxy_config(mode: &str, extra: &str) -> String {
    let web = "    protocol: tcp\n    port: 80\n    backends:\n      - {address: 10.1.0.11, port: 8080}\n      - {address: 10.1.0.12, port: 8080}\n";
    assert!(CONFIG.contains(web));
    let proxied = format!("    protocol: tcp\n    port: 80\n    syn_proxy: {mode}\n    backends:\n      - {{address: 10.1.0.11, port: 8080}}\n");
    format!("{}{extra}", CONFIG.replacen(web, &proxied, 1))
}

fn proxy_harness(mode: &str) -> Harness {
    harness_with(&proxy_config(mode, ""), 0, 1, 1000)
}

/// An Ethernet/IPv4/TCP frame with options and payload, every checksum
/// computed from scratch.
#[allow(clippy::too_many_arguments)]
fn tcp_segment(
    macs: (MacAddr, MacAddr),
    (src, sport): (u32, u16),
    (dst, dport): (u32, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    opts: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    assert_eq!(opts.len() % 4, 0);
    let tcp_len = 20 + opts.len() + payload.len();
    let mut f = vec![0u8; 34 + tcp_len];
    f[0..6].copy_from_slice(&macs.0 .0);
    f[6..12].copy_from_slice(&macs.1 .0);
    f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    crate::wire::ipv4::Ipv4Repr::originated(src, dst, PROTO_TCP, tcp_len as u16).emit(&mut f[14..]);
    let t = &mut f[34..];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = (((20 + opts.len()) / 4) as u8) << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&window.to_be_bytes());
    t[20..20 + opts.len()].copy_from_slice(opts);
    t[20 + opts.len()..].copy_from_slice(payload);
    let c = full_l4_checksum(&f);
    f[50..52].copy_from_slice(&c.to_be_bytes());
    f
}

/// What a test reads of a TCP frame lbd sent.
#[derive(Debug)]
struct Seen {
    src: (u32, u16),
    dst: (u32, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    opts: Options,
    payload: Vec<u8>,
}

fn seen(f: &[u8]) -> Seen {
    let g32 = |at: usize| u32::from_be_bytes(f[at..at + 4].try_into().unwrap());
    let g16 = |at: usize| u16::from_be_bytes([f[at], f[at + 1]]);
    assert_eq!(checksum(&f[14..34]), 0, "ip checksum");
    assert!(sp::tcp_checksum_ok(f), "tcp checksum");
    let hl = usize::from(f[46] >> 4) * 4;
    let total = usize::from(g16(16));
    assert_eq!(f.len(), 14 + total, "frame length");
    Seen {
        src: (g32(26), g16(34)),
        dst: (g32(30), g16(36)),
        seq: g32(38),
        ack: g32(42),
        flags: f[47],
        window: g16(48),
        opts: topt::parse(&f[54..34 + hl]),
        payload: f[34 + hl..].to_vec(),
    }
}

fn ts_opt(val: u32, ecr: u32) -> Vec<u8> {
    let mut b = [0u8; 12];
    topt::write_timestamp(&mut b, val, ecr);
    b.to_vec()
}

#[test]
fn syn_proxy_answers_with_a_cookie_then_opens_and_translates_the_backend_connection() {
    let mut h = proxy_harness("on");
    let (client, vip, backend) = ((ip("192.168.1.10"), 40000), (ip("10.0.0.100"), 80), (ip("10.1.0.11"), 8080));
    let to_lb = (EXT_MAC, GW_MAC);
    let from_backend = (INT_MAC, B1_MAC);
    let isn = 0xfff0_0000u32;
    // A Linux client's SYN: MSS 1460, SACK, timestamps, window scale 7.
    let mut o = [0u8; 20];
    let n = topt::write_syn(&mut o, 1460, true, Some((1000, 0)), Some(7));
    h.rx(0, tcp_segment(to_lb, client, vip, isn, 0, FLAG_SYN, 64240, &o[..n], b""));
    let out = h.take_tx();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, 0, "back out of the client side");
    let f = &out[0].1;
    assert_eq!((&f[0..6], &f[6..12]), (&GW_MAC.0[..], &EXT_MAC.0[..]));
    assert_eq!(f[22], 64, "ttl of a frame lbd originates");
    let a = seen(f);
    assert_eq!((a.src, a.dst, a.ack, a.flags, a.window), (vip, client, isn + 1, FLAG_SYN | FLAG_ACK, 65535));
    assert_eq!((a.opts.mss, a.opts.sack_permitted, a.opts.wscale), (Some(1460), true, Some(sp::WSCALE)));
    let (our_ts, ecr) = a.opts.timestamp.unwrap();
    assert_eq!(ecr, 1000);
    assert_eq!(sp::decode_ts(our_ts), (Some(7), true));
    assert!(a.payload.is_empty());
    let cookie = a.seq;
    assert_eq!(h.dp.sessions().len(), 0, "a SYN leaves no state");
    assert_eq!(h.counters.event_count(Event::SynProxySynAcks), 1);

    // An ACK that does not prove the cookie.
    h.rx(0, tcp_segment(to_lb, client, vip, isn + 1, cookie + 2, FLAG_ACK, 502, &ts_opt(1001, our_ts), b""));
    assert_eq!(h.drops(DropReason::SynProxyBadCookie), 1);
    assert!(h.take_tx().is_empty());
    assert_eq!(h.dp.sessions().len(), 0);

    // The client's ACK: the session, and the SYN to the backend.
    h.rx(0, tcp_segment(to_lb, client, vip, isn + 1, cookie + 1, FLAG_ACK, 502, &ts_opt(1001, our_ts), b""));
    let out = h.take_tx();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, 1);
    assert_eq!(&out[0].1[0..6], &B1_MAC.0);
    let s = seen(&out[0].1);
    assert_eq!((s.src, s.dst, s.seq, s.ack, s.flags), (client, backend, isn, 0, FLAG_SYN));
    assert_eq!(
        (s.opts.mss, s.opts.sack_permitted, s.opts.timestamp, s.opts.wscale),
        (Some(1460), true, Some((1001, 0)), Some(7))
    );
    assert_eq!(h.dp.sessions().len(), 1);
    assert_eq!(h.dp.sessions().half_open(), 1);

    // Client data before the backend answered: held for it.
    h.rx(0, tcp_segment(to_lb, client, vip, isn + 1, cookie + 1, FLAG_ACK, 502, &ts_opt(1001, our_ts), b"early"));
    assert!(h.take_tx().is_empty());
    assert_eq!(h.counters.event_count(Event::SynProxyHeld), 1);
    assert_eq!(h.total_drops(), 1, "only the bad cookie");

    // The backend's SYN-ACK, window scale 9: lbd completes the handshake,
    // then the held data follows, translated as later segments are.
    let bisn = 0x1234_5678u32;
    let n = topt::write_syn(&mut o, 1460, true, Some((5000, 1001)), Some(9));
    h.rx(1, tcp_segment(from_backend, backend, client, bisn, isn + 1, FLAG_SYN | FLAG_ACK, 65160, &o[..n], b""));
    let out = h.take_tx();
    assert_eq!(out.len(), 2, "the client gets nothing: it saw lbd's SYN-ACK");
    assert_eq!(out[0].0, 1);
    let k = seen(&out[0].1);
    assert_eq!((k.src, k.dst, k.seq, k.ack, k.flags, k.window), (client, backend, isn + 1, bisn + 1, FLAG_ACK, 502));
    assert_eq!(k.opts.timestamp, Some((1001, 5000)));
    assert_eq!(out[1].0, 1, "the held data goes to the backend");
    let e = &out[1].1;
    assert_eq!((&e[0..6], &e[6..12]), (&B1_MAC.0[..], &INT_MAC.0[..]));
    assert_eq!(e[22], 63, "a forwarded frame's ttl");
    let e = seen(e);
    assert_eq!((e.src, e.dst, e.seq, e.ack, e.flags, e.window), (client, backend, isn + 1, bisn + 1, FLAG_ACK, 502));
    assert_eq!(e.opts.timestamp, Some((1001, 5000)), "the echoed timestamp is the backend's");
    assert_eq!(e.payload, b"early");
    let slot = h.dp.sessions().iter().next().unwrap().1;
    assert_eq!(slot.state, SessionState::TcpEstablished);
    assert_eq!(h.dp.sessions().half_open(), 0);

    // Client → backend: ACK, SACK block and echoed timestamp translated.
    let mut opts = ts_opt(1002, our_ts + 3);
    opts.extend_from_slice(&[1, 1, 5, 10]);
    opts.extend_from_slice(&(cookie + 201).to_be_bytes());
    opts.extend_from_slice(&(cookie + 301).to_be_bytes());
    h.rx(0, tcp_segment(to_lb, client, vip, isn + 1, cookie + 101, FLAG_ACK | tcp::FLAG_PSH, 502, &opts, b"GET /"));
    let out = h.take_tx();
    let d = seen(&out[0].1);
    assert_eq!((d.src, d.dst, d.seq, d.ack, d.window), (client, backend, isn + 1, bisn + 101, 502));
    assert_eq!(d.opts.timestamp, Some((1002, 5003)));
    let (at, blocks) = d.opts.sack_at.unwrap();
    assert_eq!(blocks, 1);
    let sack = &out[0].1[54 + at..54 + at + 8];
    assert_eq!(sack, [(bisn + 201).to_be_bytes(), (bisn + 301).to_be_bytes()].concat());
    assert_eq!(d.payload, b"GET /");

    // Backend → client: sequence number, TSval and window translated.
    h.rx(
        1,
        tcp_segment(from_backend, backend, client, bisn + 1, isn + 6, FLAG_ACK, 1000, &ts_opt(5010, 1002), b"200 OK"),
    );
    let out = h.take_tx();
    assert_eq!(out[0].0, 0);
    let r = seen(&out[0].1);
    assert_eq!((r.src, r.dst, r.seq, r.ack, r.window), (vip, client, cookie + 1, isn + 6, 4000));
    assert_eq!(r.opts.timestamp, Some((our_ts + 10, 1002)));
    assert_eq!(r.payload, b"200 OK");
    assert_eq!(h.total_drops(), 1);
    assert_eq!(h.counters.event_count(Event::SynProxyAccepted), 1);
    assert_eq!(h.counters.event_count(Event::SynProxyBackendOpened), 1);
}

/// A proxied connection from client port `port` up to the SYN to the
/// backend, its proving ACK carrying `data`: the cookie.
fn proxy_open(h: &mut Harness, port: u16, data: &[u8]) -> u32 {
    let (client, vip) = ((ip("192.168.1.10"), port), (ip("10.0.0.100"), 80));
    h.rx(0, tcp_segment((EXT_MAC, GW_MAC), client, vip, 7, 0, FLAG_SYN, 64240, &[], b""));
    let cookie = seen(&h.take_tx()[0].1).seq;
    h.rx(0, tcp_segment((EXT_MAC, GW_MAC), client, vip, 8, cookie + 1, FLAG_ACK | tcp::FLAG_PSH, 500, &[], data));
    let out = h.take_tx();
    assert_eq!(out.len(), 1, "the SYN to the backend only");
    let s = seen(&out[0].1);
    assert_eq!((out[0].0, s.src, s.seq, s.flags, s.payload.len()), (1, client, 7, FLAG_SYN, 0));
    cookie
}

/// The backend's SYN-ACK to client port `port`, ISN `bisn`.
fn proxy_backend_answers(h: &mut Harness, port: u16, bisn: u32) {
    let (client, backend) = ((ip("192.168.1.10"), port), (ip("10.1.0.11"), 8080));
    h.rx(1, tcp_segment((INT_MAC, B1_MAC), backend, client, bisn, 8, FLAG_SYN | FLAG_ACK, 65160, &[], b""));
}

/// A client segment of port `port` before its backend answered.
fn proxy_early(h: &mut Harness, port: u16, cookie: u32, seq: u32, flags: u8, data: &[u8]) {
    let (client, vip) = ((ip("192.168.1.10"), port), (ip("10.0.0.100"), 80));
    h.rx(0, tcp_segment((EXT_MAC, GW_MAC), client, vip, seq, cookie + 1, flags, 500, &[], data));
    assert!(h.take_tx().is_empty());
}

#[test]
fn syn_proxy_holds_the_data_of_the_proving_ack_for_the_backend() {
    let mut h = proxy_harness("on");
    let (client, backend) = ((ip("192.168.1.10"), 41000), (ip("10.1.0.11"), 8080));
    let request = b"GET / HTTP/1.0\r\n\r\n";
    let cookie = proxy_open(&mut h, 41000, request);
    assert_eq!(h.counters.event_count(Event::SynProxyHeld), 1);
    // A FIN after it, held too: the client's close waits as its data does.
    proxy_early(&mut h, 41000, cookie, 8 + request.len() as u32, FLAG_ACK | tcp::FLAG_FIN, b"");
    assert_eq!(h.total_drops(), 0);
    let bisn = 0x8000_0000u32;
    proxy_backend_answers(&mut h, 41000, bisn);
    let out = h.take_tx();
    assert_eq!(out.len(), 3);
    let k = seen(&out[0].1);
    assert_eq!((k.src, k.dst, k.seq, k.ack, k.flags, k.payload.len()), (client, backend, 8, bisn + 1, FLAG_ACK, 0));
    let d = seen(&out[1].1);
    assert_eq!((out[1].0, &out[1].1[0..6], d.src, d.dst), (1, &B1_MAC.0[..], client, backend));
    assert_eq!((d.seq, d.ack, d.flags, d.window), (8, bisn + 1, FLAG_ACK | tcp::FLAG_PSH, 500));
    assert_eq!(d.payload, request);
    let f = seen(&out[2].1);
    assert_eq!((f.seq, f.ack, f.flags), (8 + request.len() as u32, bisn + 1, FLAG_ACK | tcp::FLAG_FIN));
    assert_eq!(h.total_drops(), 0);
    let (_, s) = h.dp.sessions().iter().next().unwrap();
    assert_eq!(s.state, SessionState::TcpClosing, "the held FIN went through the session");
}

#[test]
fn syn_proxy_drops_what_the_store_cannot_hold() {
    let yaml = proxy_config("on", "sessions: {syn_proxy_held: 12}\n");
    let mut h = harness_with(&yaml, 0, 1, 1000);
    let a = proxy_open(&mut h, 42000, b"");
    // Ten places per session (an initial window): the eleventh segment is
    // dropped.
    let early: Vec<Vec<u8>> = (0..11).map(|i| format!("s{i}").into_bytes()).collect();
    for (i, p) in early.iter().enumerate() {
        proxy_early(&mut h, 42000, a, 8 + 2 * i as u32, FLAG_ACK, p);
    }
    assert_eq!(h.drops(DropReason::SynProxyPending), 1);
    // A pure ACK carries nothing to resend: absorbed, not held.
    proxy_early(&mut h, 42000, a, 8, FLAG_ACK, b"");
    assert_eq!(h.drops(DropReason::SynProxyAckAbsorbed), 1);
    assert_eq!(h.drops(DropReason::SynProxyPending), 1);
    // The store holds 12: another session's first two fit, its third not.
    let b = proxy_open(&mut h, 42001, b"first");
    proxy_early(&mut h, 42001, b, 13, FLAG_ACK, b"second");
    proxy_early(&mut h, 42001, b, 19, FLAG_ACK, b"third");
    assert_eq!(h.drops(DropReason::SynProxyPending), 2);
    assert_eq!(h.counters.event_count(Event::SynProxyHeld), 12);
    proxy_backend_answers(&mut h, 42000, 100);
    let out = h.take_tx();
    let got: Vec<_> = out.iter().map(|(_, f)| seen(f).payload).collect();
    let mut want: Vec<&[u8]> = vec![b""];
    want.extend(early[..10].iter().map(|p| p.as_slice()));
    assert_eq!(got, want, "the ACK, then the held segments in arrival order");
    // Their places are free again.
    proxy_early(&mut h, 42001, b, 19, FLAG_ACK, b"third");
    assert_eq!(h.drops(DropReason::SynProxyPending), 2);
    proxy_backend_answers(&mut h, 42001, 200);
    let got: Vec<_> = h.take_tx().iter().map(|(_, f)| seen(f).payload).collect();
    assert_eq!(got, [&b""[..], b"first", b"second", b"third"]);
    assert_eq!(h.total_drops(), 3);
}

#[test]
fn syn_proxy_frees_held_segments_when_their_session_goes() {
    let mut h = proxy_harness("on");
    // The backend refuses: the held data goes with the session.
    let a = proxy_open(&mut h, 43000, b"refused");
    proxy_early(&mut h, 43000, a, 15, FLAG_ACK, b"too");
    let (client, backend) = ((ip("192.168.1.10"), 43000), (ip("10.1.0.11"), 8080));
    h.rx(1, tcp_segment((INT_MAC, B1_MAC), backend, client, 0, 8, FLAG_RST | FLAG_ACK, 0, &[], b""));
    let out = h.take_tx();
    assert_eq!(out.len(), 1, "the client's RST only");
    assert_eq!(seen(&out[0].1).flags, FLAG_RST | FLAG_ACK);
    assert_eq!(h.drops(DropReason::SynProxyPending), 2);
    // The backend never answers: the session expires (tcp_syn 10 s), its
    // held segments are freed.
    let b = proxy_open(&mut h, 43001, b"lost");
    proxy_early(&mut h, 43001, b, 12, FLAG_ACK, b"also");
    let freed = h.io.freed;
    for t in (0..=12_000).step_by(100) {
        h.dp.set_now(1 + t);
        h.dp.tick(&mut h.io);
    }
    assert!(h.dp.sessions().iter().all(|(_, s)| s.client_port != 43001), "expired");
    assert_eq!(h.drops(DropReason::SynProxyPending), 4);
    assert_eq!(h.io.freed, freed + 2);
    // A session still waiting keeps them; shutdown frees them.
    let c = proxy_open(&mut h, 43002, b"kept");
    let freed = h.io.freed;
    for t in (12_100..=13_000).step_by(100) {
        h.dp.set_now(1 + t);
        h.dp.tick(&mut h.io);
    }
    assert_eq!(h.drops(DropReason::SynProxyPending), 4);
    proxy_early(&mut h, 43002, c, 12, FLAG_ACK, b"more");
    h.dp.drain(&mut h.io);
    assert_eq!(h.drops(DropReason::Shutdown), 2);
    assert_eq!(h.io.freed, freed + 2);
}

#[test]
fn syn_proxy_without_timestamps_keeps_no_window_scale_or_sack() {
    let mut h = proxy_harness("on");
    let (client, vip) = ((ip("192.168.1.10"), 40001), (ip("10.0.0.100"), 80));
    let mut o = [0u8; 20];
    let n = topt::write_syn(&mut o, 1400, true, None, Some(7));
    h.rx(0, tcp_segment((EXT_MAC, GW_MAC), client, vip, 7, 0, FLAG_SYN, 64240, &o[..n], b""));
    let a = seen(&h.take_tx()[0].1);
    assert_eq!((a.opts.mss, a.opts.sack_permitted, a.opts.wscale, a.opts.timestamp), (Some(1300), false, None, None));
    h.rx(0, tcp_segment((EXT_MAC, GW_MAC), client, vip, 8, a.seq + 1, FLAG_ACK, 500, &[], b""));
    let s = seen(&h.take_tx()[0].1);
    assert_eq!((s.opts.mss, s.opts.sack_permitted, s.opts.wscale, s.opts.timestamp), (Some(1300), false, None, None));
    // The backend refuses: the client gets a RST at the sequence number it expects.
    h.rx(1, tcp_segment((INT_MAC, B1_MAC), (s.dst.0, s.dst.1), client, 0, 8, FLAG_RST | FLAG_ACK, 0, &[], b""));
    let r = seen(&h.take_tx()[0].1);
    assert_eq!((r.src, r.dst, r.seq, r.flags), (vip, client, a.seq + 1, FLAG_RST | FLAG_ACK));
}

#[test]
fn syn_proxy_auto_answers_syns_only_above_half_the_half_open_cap() {
    let yaml = proxy_config("auto", "sessions: {half_open_max_per_worker: 4}\n");
    let mut h = harness_with(&yaml, 0, 1, 1000);
    for p in 0..3 {
        client_syn(&mut h, 1000 + p);
        let out = h.take_tx();
        let f = seen(&out[0].1);
        if p < 2 {
            assert_eq!((out[0].0, f.flags), (1, FLAG_SYN), "SYN {p} forwarded");
        } else {
            assert_eq!((out[0].0, f.flags), (0, FLAG_SYN | FLAG_ACK), "SYN {p} answered");
        }
    }
    assert_eq!(h.dp.sessions().half_open(), 2);
    // An ACK that proves no cookie takes the listener's usual way.
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, ip(FLOOD_CLIENT), ip("10.0.0.100"), 1000, 80, FLAG_ACK, b""));
    assert_eq!(h.take_tx()[0].0, 1);
    assert_eq!(h.drops(DropReason::SynProxyBadCookie), 0);
}
// Security groups (issue 11).

const SG_RULES: &str = "
security_groups:
  edge:
    rules:
      - {action: deny, protocol: tcp, source: 192.168.1.0/24, ports: 80}
      - {action: allow, sources: [192.168.0.0/16, 172.31.0.0/16]}
    default: deny
security:
  default_group: edge
";

/// The hit count of rule `index` (`rules.len()`: the default) of the
/// group of the listener `listener` runs with now.
fn rule_hits(h: &Harness, listener: &str, index: usize) -> u64 {
    let snap = h.dp.snapshot();
    let l = snap.listeners.iter().find(|l| l.name == listener).unwrap();
    let slot = l.security.as_ref().expect("the listener has a group").slots()[index];
    h.counters.security_rules[slot as usize].get()
}

#[test]
fn security_group_denies_new_flows_with_a_reason_and_counts_the_deciding_rule() {
    let mut h = harness_with(&format!("{CONFIG}{SG_RULES}"), 0, 1, 1000);
    let vip = ip("10.0.0.100");
    let denied = ip("192.168.1.10");
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, denied, vip, 40000, 80, FLAG_SYN, b""));
    assert!(h.take_tx().is_empty());
    assert_eq!(h.drops(DropReason::SecurityGroupDenied), 1);
    assert_eq!(h.dp.sessions().len(), 0);
    assert_eq!(rule_hits(&h, "web", 0), 1);
    // The same client on port 81: the first rule is for port 80 only.
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, denied, vip, 40001, 81, FLAG_SYN, b""));
    assert_eq!(h.take_tx().len(), 1);
    assert_eq!(rule_hits(&h, "web", 1), 1);
    // Another allowed network, TCP and UDP.
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, ip("172.31.9.9"), vip, 40000, 80, FLAG_SYN, b""));
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_UDP, denied, vip, 40000, 53, 0, b"q"));
    assert_eq!(h.take_tx().len(), 2);
    assert_eq!(rule_hits(&h, "dns", 1), 3, "counted per group, whichever listener");
    assert_eq!(h.dp.sessions().len(), 3);
    // No rule: the default denies.
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, ip("203.0.113.5"), vip, 40000, 80, FLAG_SYN, b""));
    assert!(h.take_tx().is_empty());
    assert_eq!(rule_hits(&h, "web", 2), 1);
    assert_eq!(h.drops(DropReason::SecurityGroupDenied), 2);
    assert_eq!(h.total_drops(), 2);
}

#[test]
fn a_rule_change_applies_to_new_flows_and_leaves_established_ones() {
    let allow_all = "
security_groups:
  edge:
    rules: [{action: allow, sources: [172.31.0.0/16, 192.168.0.0/16]}]
security:
  default_group: edge
";
    let yaml = format!("{CONFIG}{allow_all}");
    let mut h = harness_with(&yaml, 0, 1, 1000);
    let mut ids = IdRegistry::default();
    ids.assign(&config::parse(&yaml, Path::new("t")).unwrap().forwarding, &|_| true).unwrap();
    let (client, vip) = (ip("192.168.1.10"), ip("10.0.0.100"));
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, client, vip, 40000, 80, FLAG_SYN, b""));
    let (baddr, _) = backend_of(&h.take_tx()[0].1);
    assert_eq!(rule_hits(&h, "web", 0), 1);

    // The client's network is denied now, in front of the old rule.
    let yaml = format!("{CONFIG}{SG_RULES}");
    reconfigure(&mut h, &mut ids, &yaml, 2);
    // The established connection goes on, to the same backend.
    for _ in 0..3 {
        h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, client, vip, 40000, 80, FLAG_ACK, b"data"));
        assert_eq!(backend_of(&h.take_tx()[0].1).0, baddr);
    }
    // A new connection from the same client is denied.
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, client, vip, 40001, 80, FLAG_SYN, b""));
    assert!(h.take_tx().is_empty());
    assert_eq!(h.drops(DropReason::SecurityGroupDenied), 1);
    assert_eq!(rule_hits(&h, "web", 0), 1, "the new deny rule");
    // The allow rule moved to position 1 and kept its count: the
    // established flow's packets did not consult the rules.
    assert_eq!(rule_hits(&h, "web", 1), 1);
}

#[test]
fn listeners_without_a_group_admit_everything() {
    let groups_only = "
security_groups:
  edge:
    rules: []
    default: deny
";
    let mut h = harness_with(&format!("{CONFIG}{groups_only}"), 0, 1, 1000);
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, ip("203.0.113.5"), ip("10.0.0.100"), 40000, 80, FLAG_SYN, b""));
    assert_eq!(h.take_tx().len(), 1);
    assert_eq!(h.total_drops(), 0);
}

/// Under `syn_proxy: on`, the security group decides on the SYN (a denied
/// client gets no SYN-ACK) and counts each connection once on its rule,
/// and the connection limits apply when the cookie-proving ACK opens the
/// session, as to an unproxied SYN.
#[test]
fn syn_proxy_follows_the_security_group_and_the_source_limits() {
    let mode = "on\n    limits: {per_source: {max_sessions: 1}}";
    let mut h = harness_with(&proxy_config(mode, SG_RULES), 0, 1, 1000);
    let to_lb = (EXT_MAC, GW_MAC);
    let vip = (ip("10.0.0.100"), 80);
    let isn = 7000u32;
    // Denied by rule 0: no answer, no state.
    h.rx(0, tcp_segment(to_lb, (ip("192.168.1.10"), 40000), vip, isn, 0, FLAG_SYN, 64240, &[], b""));
    assert!(h.take_tx().is_empty());
    assert_eq!(h.drops(DropReason::SecurityGroupDenied), 1);
    assert_eq!(rule_hits(&h, "web", 0), 1);
    // Allowed by rule 1: SYN-ACK, then the proving ACK opens the backend.
    let client = ip("192.168.2.20");
    let open = |h: &mut Harness, port: u16| -> Vec<(u16, Vec<u8>)> {
        h.rx(0, tcp_segment(to_lb, (client, port), vip, isn, 0, FLAG_SYN, 64240, &[], b""));
        let out = h.take_tx();
        assert_eq!(out.len(), 1);
        let cookie = seen(&out[0].1).seq;
        h.rx(0, tcp_segment(to_lb, (client, port), vip, isn + 1, cookie.wrapping_add(1), FLAG_ACK, 502, &[], b""));
        h.take_tx()
    };
    let out = open(&mut h, 40001);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].0, seen(&out[0].1).flags), (1, FLAG_SYN), "the SYN to the backend");
    assert_eq!(rule_hits(&h, "web", 1), 1, "the SYN counted, its ACK not again");
    // The source is at its one session: the next proved ACK opens nothing.
    assert!(open(&mut h, 40002).is_empty());
    assert_eq!(h.drops(DropReason::SourceSessionLimit), 1);
    assert_eq!(h.dp.sessions().len(), 1);
    assert_eq!(rule_hits(&h, "web", 1), 2);
}
