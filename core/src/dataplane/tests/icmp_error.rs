//! ICMP errors through the core: forwarded ones translated (outer and
//! quoted headers, every checksum checked from scratch), lbd's own time
//! exceeded and fragmentation needed, their rate and the RFC 1812 rules.

use super::*;
use crate::wire::checksum::{fold, sum_words};

const CLIENT: &str = "192.168.1.10";
const VIP: &str = "10.0.0.100";
/// A router on the client side (behind the gateway).
const ROUTER: &str = "172.16.0.1";
/// A router on the backend side (on the int link).
const INT_ROUTER: &str = "10.1.0.99";

fn rd16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}
fn rd32(f: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(f[at..at + 4].try_into().unwrap())
}

/// An Ethernet/IPv4/ICMP error frame from `src` to `dst` quoting `quoted`.
#[allow(clippy::too_many_arguments)]
fn error_frame(
    dst_mac: MacAddr,
    src_mac: MacAddr,
    src: u32,
    dst: u32,
    ty: u8,
    code: u8,
    mtu: u16,
    quoted: &[u8],
) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8 + quoted.len()];
    f[0..6].copy_from_slice(&dst_mac.0);
    f[6..12].copy_from_slice(&src_mac.0);
    f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let ip = crate::wire::ipv4::Ipv4Repr {
        src,
        dst,
        protocol: PROTO_ICMP,
        payload_len: (8 + quoted.len()) as u16,
        ttl: 64,
        tos: 0,
        ident: 7,
        flags_fragment: 0,
    };
    ip.emit(&mut f[14..]);
    f[34] = ty;
    f[35] = code;
    f[40..42].copy_from_slice(&mtu.to_be_bytes());
    f[42..].copy_from_slice(quoted);
    let c = checksum(&f[34..]);
    f[36..38].copy_from_slice(&c.to_be_bytes());
    f
}

/// The IPv4 datagram of a frame (what an error quotes).
fn datagram(f: &[u8]) -> Vec<u8> {
    f[14..14 + usize::from(rd16(f, 16))].to_vec()
}

/// Checks every checksum of an ICMP error frame from scratch: outer IPv4,
/// ICMP over the whole message, the quoted IPv4 header, and the quoted
/// TCP/UDP checksum when the quote holds the whole datagram.
fn assert_error_checksums(f: &[u8]) {
    let total = usize::from(rd16(f, 16));
    assert_eq!(f.len(), 14 + total, "no trailing bytes");
    assert_eq!(checksum(&f[14..34]), 0, "outer ip checksum");
    assert_eq!(fold(sum_words(&f[34..])), 0xffff, "icmp checksum");
    let q = &f[42..];
    assert_eq!(checksum(&q[..20]), 0, "quoted ip checksum");
    if q.len() >= usize::from(rd16(q, 2)) {
        // The whole datagram is quoted: its L4 checksum can be recomputed.
        let mut frame = vec![0u8; 14];
        frame.extend_from_slice(q);
        let at = if q[9] == PROTO_TCP { 20 + 16 } else { 20 + 6 };
        assert_eq!(rd16(q, at), full_l4_checksum(&frame), "quoted l4 checksum");
    }
}

/// The frame lbd forwarded for a TCP SYN from the client to the VIP
/// (port 80): the backend address and port it chose.
fn open_tcp(h: &mut Harness, cport: u16) -> (u32, u16, Vec<u8>) {
    let syn = l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, ip(CLIENT), ip(VIP), cport, 80, FLAG_SYN, b"");
    h.rx(0, syn);
    let out = h.take_tx();
    assert_eq!(out.len(), 1);
    let (b, bp) = backend_of(&out[0].1);
    (b, bp, out[0].1.clone())
}

/// The MAC CONFIG gives backend `b` (10.1.0.11 has 02:..:11).
fn backend_mac(b: u32) -> MacAddr {
    let last = (b & 0xff) as u8;
    MacAddr([0x02, 0, 0, 0, 0, last / 10 * 16 + last % 10])
}

#[test]
fn frag_needed_about_a_reply_reaches_the_backend_translated() {
    let mut h = harness();
    let (backend, bport, _) = open_tcp(&mut h, 40000);
    // The reply as the client side saw it: VIP:80 -> client:40000, whole.
    let reply = l4_frame(GW_MAC, EXT_MAC, PROTO_TCP, ip(VIP), ip(CLIENT), 80, 40000, FLAG_SYN | FLAG_ACK, b"data");
    for quote_len in [28, 44] {
        let quoted = &datagram(&reply)[..quote_len];
        let e = error_frame(EXT_MAC, GW_MAC, ip(ROUTER), ip(VIP), 3, 4, 1400, quoted);
        h.rx(0, e.clone());
        let out = h.take_tx();
        assert_eq!(out.len(), 1, "quote of {quote_len}");
        let (port, f) = &out[0];
        assert_eq!(*port, 1);
        assert_eq!(&f[0..6], &backend_mac(backend).0);
        assert_eq!(&f[6..12], &INT_MAC.0);
        assert_eq!(rd32(f, 26), ip(ROUTER), "outer src stays");
        assert_eq!(rd32(f, 30), backend, "outer dst");
        assert_eq!(f[22], 63, "ttl");
        assert_eq!((f[34], f[35], rd16(f, 40)), (3, 4, 1400), "type, code, mtu");
        let q = &f[42..];
        assert_eq!(rd32(q, 12), backend, "quoted src");
        assert_eq!(rd32(q, 16), ip(CLIENT), "quoted dst");
        assert_eq!((rd16(q, 20), rd16(q, 22)), (bport, 40000), "quoted ports");
        // Nothing else changed: the rest of the quote, the other header words.
        assert_eq!(&q[0..10], &e[42..52]);
        assert_eq!(&q[24..36.min(quote_len)], &e[66..42 + 36.min(quote_len)]);
        assert_error_checksums(f);
    }
    assert_eq!(h.counters.event_count(Event::IcmpErrorsForwarded), 2);
    assert_eq!(h.total_drops(), 0);
}

#[test]
fn errors_about_a_request_reach_the_client_translated() {
    let mut h = harness();
    // UDP: the 8-byte header holds the checksum, so even the shortest
    // quote carries one to patch.
    let q = l4_frame(EXT_MAC, GW_MAC, PROTO_UDP, ip(CLIENT), ip(VIP), 5000, 53, 0, b"query");
    h.rx(0, q);
    let fwd = h.take_tx().pop().unwrap().1;
    let (backend, bport) = backend_of(&fwd);
    assert_eq!((backend, bport), (ip("10.1.0.11"), 5353));
    // From a router on the backend side (its address stays), then from
    // the backend itself (port unreachable; leaves from the VIP).
    for (from, ty, code, outer_src) in [(ip(INT_ROUTER), 11, 0, ip(INT_ROUTER)), (backend, 3, 3, ip(VIP))] {
        let e = error_frame(INT_MAC, B1_MAC, from, ip(CLIENT), ty, code, 0, &datagram(&fwd));
        h.rx(1, e);
        let out = h.take_tx();
        assert_eq!(out.len(), 1);
        let (port, f) = &out[0];
        assert_eq!(*port, 0);
        assert_eq!(&f[0..6], &GW_MAC.0);
        assert_eq!(&f[6..12], &EXT_MAC.0);
        assert_eq!(rd32(f, 26), outer_src, "outer src");
        assert_eq!(rd32(f, 30), ip(CLIENT), "outer dst");
        assert_eq!(f[22], 63);
        assert_eq!((f[34], f[35]), (ty, code));
        let q = &f[42..];
        assert_eq!(rd32(q, 12), ip(CLIENT), "quoted src");
        assert_eq!(rd32(q, 16), ip(VIP), "quoted dst");
        assert_eq!((rd16(q, 20), rd16(q, 22)), (5000, 53), "quoted ports");
        // The client sees its own datagram, bar the TTL lbd took from it.
        let mut sent = datagram(&l4_frame(EXT_MAC, GW_MAC, PROTO_UDP, ip(CLIENT), ip(VIP), 5000, 53, 0, b"query"));
        sent[8] -= 1;
        sent[10..12].copy_from_slice(&[0, 0]);
        let c = checksum(&sent[..20]);
        sent[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(q, &sent[..], "the quote is the client's datagram");
        assert_error_checksums(f);
    }
    // A UDP datagram without checksum keeps none.
    let mut nocsum = l4_frame(EXT_MAC, GW_MAC, PROTO_UDP, ip(CLIENT), ip(VIP), 5001, 53, 0, b"q");
    nocsum[40..42].copy_from_slice(&[0, 0]);
    h.rx(0, nocsum);
    let fwd = h.take_tx().pop().unwrap().1;
    assert_eq!(rd16(&fwd, 40), 0);
    h.rx(1, error_frame(INT_MAC, B1_MAC, backend, ip(CLIENT), 3, 3, 0, &datagram(&fwd)));
    let f = h.take_tx().pop().unwrap().1;
    assert_eq!(rd16(&f, 42 + 26), 0, "no checksum stays none");
    assert_eq!(checksum(&f[42..62]), 0);
    assert_eq!(fold(sum_words(&f[34..])), 0xffff);
}

#[test]
fn an_error_goes_to_the_owner_of_its_flow() {
    let workers = 3;
    let mut hs: Vec<Harness> = (0..workers).map(|w| harness_with(CONFIG, w, workers, 1000)).collect();
    let mut seen = std::collections::HashSet::new();
    for cport in 1000..1012u16 {
        let owner = owner_shard(ip(CLIENT), cport, workers);
        let req = l4_frame(EXT_MAC, GW_MAC, PROTO_UDP, ip(CLIENT), ip(VIP), cport, 53, 0, b"q");
        let fwd = deliver(&mut hs, 0, owner, 0, req).pop().unwrap().1;
        // Each error arrives at another worker than the one owning it.
        let arrive = (owner + 1) % workers;
        let reply = l4_frame(GW_MAC, EXT_MAC, PROTO_UDP, ip(VIP), ip(CLIENT), 53, cport, 0, b"a");
        let e = error_frame(EXT_MAC, GW_MAC, ip(ROUTER), ip(VIP), 3, 4, 1200, &datagram(&reply));
        let out = deliver(&mut hs, arrive, owner, 0, e);
        assert_eq!(out.len(), 1, "the owner forwards the error about a reply");
        assert_eq!(rd32(&out[0].1, 30), ip("10.1.0.11"));
        let e = error_frame(INT_MAC, B1_MAC, ip(INT_ROUTER), ip(CLIENT), 11, 0, 0, &datagram(&fwd));
        let out = deliver(&mut hs, arrive, owner, 1, e);
        assert_eq!(out.len(), 1, "the owner forwards the error about a request");
        assert_eq!(rd32(&out[0].1, 30), ip(CLIENT));
        seen.insert(owner);
    }
    assert_eq!(seen.len(), workers, "every worker owned some flow");
    assert_eq!(hs.iter().map(|h| h.total_drops()).sum::<u64>(), 0);
}

/// The soak's topology: the client on the ext port's own subnet, a UDP
/// echo listener on three backends; exception interfaces on, as there.
const SOAK_CONFIG: &str = r#"
eal: ["--no-pci"]
ports:
  - name: ext
    device: net_ring0
    address: 10.0.0.1/24
    neighbors: [{ip: 10.0.0.2, mac: "02:00:00:00:00:c1"}]
  - name: int
    device: net_ring1
    address: 10.1.0.1/24
    neighbors:
      - {ip: 10.1.0.11, mac: "02:00:00:00:00:11"}
      - {ip: 10.1.0.12, mac: "02:00:00:00:00:12"}
      - {ip: 10.1.0.13, mac: "02:00:00:00:00:13"}
listeners:
  - name: echo
    vip: 10.0.0.100
    protocol: udp
    port: 9000
    backends:
      - {address: 10.1.0.11, port: 9000}
      - {address: 10.1.0.12, port: 9000}
      - {address: 10.1.0.13, port: 9000}
"#;

/// `frame` arriving at worker `arrive` on `port`, followed through the
/// hand-off it makes, if any: the worker that processed it and what that
/// worker sent.
fn through_owner(hs: &mut [Harness], arrive: usize, port: u16, frame: Vec<u8>) -> (usize, Vec<(u16, Vec<u8>)>) {
    hs[arrive].rx(port, frame);
    let Some((w, p)) = hs[arrive].io.handoff.pop() else {
        return (arrive, hs[arrive].take_tx());
    };
    assert!(hs[arrive].io.handoff.is_empty() && hs[arrive].take_tx().is_empty());
    let h = &mut hs[w];
    h.dp.process_handoff(p, &mut h.io);
    assert!(h.io.handoff.is_empty(), "a handed-off packet is not handed on");
    (w, h.take_tx())
}

/// The soak's health flap: echoes every 50 ms, then the backend's server
/// stops and its kernel answers the next datagram with port unreachable,
/// from the backend itself to the client. lbd draws its owner-shard key
/// at random, so the workers here use one other than the fixed key: the
/// error must reach the worker its flow's packets reach (nobody predicts
/// the owner; the request's hand-off shows it), wherever it arrives.
#[test]
fn a_backends_port_unreachable_reaches_the_client_under_the_instance_key() {
    let workers = 2;
    let keys = || crate::hashkey::HashKeys::from_key(&TEST_HASH_KEY);
    let mut hs: Vec<Harness> = (0..workers).map(|w| harness_with_keys(SOAK_CONFIG, w, workers, 1000, keys())).collect();
    let (client, vip) = (ip("10.0.0.2"), ip(VIP));
    let mut now = 1;
    let mut tick = |hs: &mut [Harness], ms: u32| {
        now += ms;
        for h in hs.iter_mut() {
            h.dp.set_now(now);
        }
    };
    let mut owned = [0; 2];
    let mut not_the_fixed_keys = 0;
    for cport in 40000..40032u16 {
        let ping = l4_frame(EXT_MAC, CLIENT_MAC, PROTO_UDP, client, vip, cport, 9000, 0, b"ping");
        let mut owner = None;
        let mut fwd = Vec::new();
        for i in 0..4 {
            tick(&mut hs, 50);
            let (w, out) = through_owner(&mut hs, (usize::from(cport) + i) % workers, 0, ping.clone());
            assert_eq!(out.len(), 1, "the datagram goes to its backend");
            assert_eq!(*owner.get_or_insert(w), w, "one owner per flow");
            fwd = out[0].1.clone();
            if i == 3 {
                break; // the server has stopped
            }
            let (backend, bport) = backend_of(&fwd);
            let echo = l4_frame(INT_MAC, backend_mac(backend), PROTO_UDP, backend, client, bport, cport, 0, b"ping");
            let (w, out) = through_owner(&mut hs, (usize::from(cport) + i + 1) % workers, 1, echo);
            assert_eq!((w, out.len()), (owner.unwrap(), 1), "the echo reaches the client through the owner");
        }
        let owner = owner.unwrap();
        owned[owner] += 1;
        if owner != owner_shard(client, cport, workers) {
            not_the_fixed_keys += 1;
        }
        let (backend, _) = backend_of(&fwd);
        for arrive in 0..workers {
            tick(&mut hs, 1);
            let e = error_frame(INT_MAC, backend_mac(backend), backend, client, 3, 3, 0, &datagram(&fwd));
            let (w, out) = through_owner(&mut hs, arrive, 1, e);
            assert_eq!(w, owner, "client port {cport}: the error goes to its flow's owner");
            assert_eq!(out.len(), 1, "client port {cport}, arriving at worker {arrive}: forwarded");
            let (port, f) = &out[0];
            assert_eq!(*port, 0);
            assert_eq!(&f[0..6], &CLIENT_MAC.0);
            assert_eq!((rd32(f, 26), rd32(f, 30)), (vip, client), "from the VIP to the client");
            assert_eq!((f[34], f[35]), (3, 3));
            assert_eq!((rd32(f, 42 + 16), rd16(f, 42 + 22)), (vip, 9000), "quoting the client's datagram");
            assert_error_checksums(f);
        }
    }
    assert!(owned.iter().all(|n| *n > 0), "both workers owned flows: {owned:?}");
    assert!(not_the_fixed_keys > 0, "some flows' owner differs from the fixed key's");
    assert_eq!(hs.iter().map(|h| h.total_drops()).sum::<u64>(), 0);
    let forwarded: u64 = hs.iter().map(|h| h.counters.event_count(Event::IcmpErrorsForwarded)).sum();
    assert_eq!(forwarded, 64);
}

#[test]
fn errors_about_unknown_flows_are_dropped_with_reasons() {
    let mut h = harness();
    let (backend, bport, fwd) = open_tcp(&mut h, 40000);
    let reply = l4_frame(GW_MAC, EXT_MAC, PROTO_TCP, ip(VIP), ip(CLIENT), 80, 40001, FLAG_ACK, b"");
    let mut cases: Vec<(u16, Vec<u8>, DropReason)> = vec![
        // Another client port: no session.
        (
            0,
            error_frame(EXT_MAC, GW_MAC, ip(ROUTER), ip(VIP), 3, 4, 1400, &datagram(&reply)),
            DropReason::IcmpErrorNoSession,
        ),
        // A request to some other host, about nothing lbd forwarded.
        (
            1,
            error_frame(
                INT_MAC,
                B1_MAC,
                backend,
                ip(CLIENT),
                3,
                3,
                0,
                &datagram(&l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, ip(CLIENT), backend, 40000, bport + 1, FLAG_ACK, b"")),
            ),
            DropReason::IcmpErrorNoSession,
        ),
        // Sent to someone other than the quoted datagram's source.
        (
            1,
            error_frame(INT_MAC, B1_MAC, backend, ip("192.168.1.11"), 3, 3, 0, &datagram(&fwd)),
            DropReason::IcmpErrorNoSession,
        ),
        // A quote too short to hold the ports.
        (
            0,
            error_frame(EXT_MAC, GW_MAC, ip(ROUTER), ip(VIP), 3, 4, 1400, &datagram(&reply)[..24]),
            DropReason::IcmpErrorMalformed,
        ),
    ];
    // A quote of an IPv6-looking, optioned or later-fragment datagram.
    for (at, v) in [(0, 0x65u8), (0, 0x46), (6, 0x00), (9, 47)] {
        let mut q = datagram(&reply);
        q[at] = v;
        if at == 6 {
            q[7] = 0x10; // offset 16 (128 bytes)
        }
        cases.push((
            0,
            error_frame(EXT_MAC, GW_MAC, ip(ROUTER), ip(VIP), 3, 4, 1400, &q),
            DropReason::IcmpErrorMalformed,
        ));
    }
    // A forwarded error whose own TTL runs out: dropped, no error about it.
    let mut e = error_frame(INT_MAC, B1_MAC, backend, ip(CLIENT), 3, 3, 0, &datagram(&fwd));
    e[22] = 1;
    fix_ip_checksum(&mut e);
    cases.push((1, e, DropReason::TtlExceeded));
    for (i, (port, frame, reason)) in cases.into_iter().enumerate() {
        let before = h.drops(reason);
        let all = h.total_drops();
        h.rx(port, frame);
        assert_eq!(h.drops(reason), before + 1, "case {i}: {reason:?}");
        assert_eq!(h.total_drops(), all + 1, "case {i}: one drop");
        assert!(h.take_tx().is_empty(), "case {i}: nothing sent");
    }
    assert_eq!(h.counters.event_count(Event::IcmpErrorsSent), 0, "never an error about an error");
    // Errors for the host (to a port address) still go up to its kernel.
    let host = l4_frame(B1_MAC, INT_MAC, PROTO_TCP, ip("10.1.0.1"), backend, 33000, 22, FLAG_SYN, b"");
    h.rx(1, error_frame(INT_MAC, B1_MAC, backend, ip("10.1.0.1"), 3, 3, 0, &datagram(&host)));
    assert_eq!(h.io.to_kernel.len(), 1);
}

/// The fields of an error lbd sent about `offending` (as received).
fn assert_sent_error(f: &[u8], from: u32, ty: u8, code: u8, word: u32, offending: &[u8]) {
    assert_eq!(f.len(), 14 + 20 + 8 + 28);
    assert_eq!(rd16(f, 12), ETHERTYPE_IPV4);
    assert_eq!(f[14], 0x45);
    assert_eq!(usize::from(rd16(f, 16)), 20 + 8 + 28);
    assert_eq!(f[22], 64, "ttl");
    assert_eq!(f[23], PROTO_ICMP);
    assert_eq!(rd32(f, 26), from, "source: the port it leaves by");
    assert_eq!(rd32(f, 30), rd32(offending, 26), "to the offending datagram's source");
    assert_eq!(checksum(&f[14..34]), 0, "ip checksum");
    assert_eq!((f[34], f[35]), (ty, code));
    assert_eq!(rd32(f, 38), word, "second word");
    assert_eq!(&f[42..], &offending[14..14 + 28], "quotes the header and 8 bytes as received");
    assert_eq!(checksum(&f[34..]), 0, "icmp checksum");
}

#[test]
fn ttl_expiry_is_answered_with_time_exceeded() {
    let mut h = harness();
    let mut req = l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, ip(CLIENT), ip(VIP), 40000, 80, FLAG_SYN, b"hello");
    req[22] = 1;
    fix_ip_checksum(&mut req);
    h.rx(0, req.clone());
    assert_eq!(h.drops(DropReason::TtlExceeded), 1);
    let out = h.take_tx();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, 0);
    assert_eq!(&out[0].1[0..6], &GW_MAC.0);
    assert_eq!(&out[0].1[6..12], &EXT_MAC.0);
    assert_sent_error(&out[0].1, ip("10.0.0.1"), 11, 0, 0, &req);
    // A reply whose TTL runs out: the error goes to the backend, from the
    // backend side's port.
    let (backend, bport, _) = open_tcp(&mut h, 40001);
    let mut rep = l4_frame(INT_MAC, backend_mac(backend), PROTO_TCP, backend, ip(CLIENT), bport, 40001, FLAG_ACK, b"x");
    rep[22] = 0;
    fix_ip_checksum(&mut rep);
    h.rx(1, rep.clone());
    let out = h.take_tx();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, 1);
    assert_sent_error(&out[0].1, ip("10.1.0.1"), 11, 0, 0, &rep);
    assert_eq!(h.counters.event_count(Event::IcmpErrorsSent), 2);
    assert_eq!(h.drops(DropReason::TtlExceeded), 2);
}

#[test]
fn no_error_where_rfc1812_forbids_one() {
    let mut h = harness();
    let expire = |src: u32, dst_mac: MacAddr| {
        let mut f = l4_frame(dst_mac, GW_MAC, PROTO_UDP, src, ip(VIP), 5000, 53, 0, b"q");
        f[22] = 1;
        fix_ip_checksum(&mut f);
        f
    };
    for (src, mac) in [
        (ip("224.0.0.5"), EXT_MAC),
        (ip("255.255.255.255"), EXT_MAC),
        (ip("0.0.0.0"), EXT_MAC),
        (ip("127.0.0.1"), EXT_MAC),
        (ip("10.0.0.255"), EXT_MAC),
        (ip(CLIENT), MacAddr::BROADCAST),
    ] {
        h.rx(0, expire(src, mac));
        assert!(h.take_tx().is_empty(), "{src:#x}");
    }
    assert_eq!(h.drops(DropReason::TtlExceeded), 6);
    assert_eq!(h.counters.event_count(Event::IcmpErrorsSent), 0);
    // The control: the same from a unicast client is answered.
    h.rx(0, expire(ip(CLIENT), EXT_MAC));
    assert_eq!(h.take_tx().len(), 1);
}

#[test]
fn errors_are_rate_limited_per_worker() {
    let mut h = harness();
    let mut req = l4_frame(EXT_MAC, GW_MAC, PROTO_UDP, ip(CLIENT), ip(VIP), 5000, 53, 0, b"q");
    req[22] = 1;
    fix_ip_checksum(&mut req);
    let burst = crate::ratelimit::TokenBucket::default_burst(ERROR_RATE) as usize;
    for _ in 0..burst + 30 {
        h.rx(0, req.clone());
    }
    assert_eq!(h.take_tx().len(), burst);
    assert_eq!(h.counters.event_count(Event::IcmpErrorsRateLimited), 30);
    assert_eq!(h.drops(DropReason::TtlExceeded), burst as u64 + 30, "every packet counted");
    // A second later the bucket is full again.
    h.dp.set_now(1001);
    h.rx(0, req);
    assert_eq!(h.take_tx().len(), 1);
}

/// CONFIG with the int (backend) port's MTU at 1000 and the ext one at 1200.
fn small_mtu_config() -> String {
    CONFIG.replacen("    exception: off\n", "    exception: off\n    mtu: 1200\n", 1).replacen(
        "    address: 10.1.0.1/24\n",
        "    address: 10.1.0.1/24\n    mtu: 1000\n",
        1,
    )
}

#[test]
fn df_packets_over_the_egress_mtu_get_fragmentation_needed() {
    let mut h = harness_with(&small_mtu_config(), 0, 1, 1000);
    // A request of exactly 1000 bytes fits the backend side; 1001 not.
    let fits = l4_frame(EXT_MAC, GW_MAC, PROTO_UDP, ip(CLIENT), ip(VIP), 5000, 53, 0, &[7; 1000 - 28]);
    h.rx(0, fits);
    assert_eq!(h.take_tx().len(), 1);
    let big = l4_frame(EXT_MAC, GW_MAC, PROTO_UDP, ip(CLIENT), ip(VIP), 5000, 53, 0, &[7; 1001 - 28]);
    h.rx(0, big.clone());
    let out = h.take_tx();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, 0);
    assert_sent_error(&out[0].1, ip("10.0.0.1"), 3, 4, 1000, &big);
    assert_eq!(h.drops(DropReason::FragNeeded), 1);
    // A reply over the client side's 1200 goes back to the backend.
    let rep = l4_frame(INT_MAC, B1_MAC, PROTO_UDP, ip("10.1.0.11"), ip(CLIENT), 5353, 5000, 0, &[1; 1201 - 28]);
    h.rx(1, rep.clone());
    let out = h.take_tx();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, 1);
    assert_eq!(&out[0].1[0..6], &B1_MAC.0);
    assert_sent_error(&out[0].1, ip("10.1.0.1"), 3, 4, 1200, &rep);
    assert_eq!(h.drops(DropReason::FragNeeded), 2);
    // Without DF: dropped as too big, nothing sent (lbd does not fragment).
    let mut nodf = big;
    nodf[20] = 0;
    fix_ip_checksum(&mut nodf);
    h.rx(0, nodf);
    assert!(h.take_tx().is_empty());
    assert_eq!(h.drops(DropReason::TooBig), 1);
    assert_eq!(h.counters.event_count(Event::IcmpErrorsSent), 2);
    // The default MTU (1500) lets 1500 through on both sides.
    let mut h = harness();
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_UDP, ip(CLIENT), ip(VIP), 5000, 53, 0, &[7; 1500 - 28]));
    assert_eq!(h.take_tx().len(), 1);
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_UDP, ip(CLIENT), ip(VIP), 5000, 53, 0, &[7; 1501 - 28]));
    assert_eq!(h.drops(DropReason::FragNeeded), 1);
}

// Errors about SYN-proxied connections, and the rate of forwarded errors.

/// The frame an error `e` (as received) should leave lbd as, built from
/// scratch bar the MACs: `e`'s outer header with the TTL one lower and
/// addresses `src` → `dst`, `e`'s ICMP type, code and second word, then
/// `quote`; both checksums computed anew.
fn expected_error(e: &[u8], src: u32, dst: u32, quote: &[u8]) -> Vec<u8> {
    let mut f = e[..42].to_vec();
    f.extend_from_slice(quote);
    f[16..18].copy_from_slice(&((20 + 8 + quote.len()) as u16).to_be_bytes());
    f[22] -= 1;
    f[26..30].copy_from_slice(&src.to_be_bytes());
    f[30..34].copy_from_slice(&dst.to_be_bytes());
    fix_ip_checksum(&mut f);
    f[36..38].copy_from_slice(&[0, 0]);
    let c = checksum(&f[34..]);
    f[36..38].copy_from_slice(&c.to_be_bytes());
    f
}

/// A datagram as it left its sender, seen one hop on: TTL one lower,
/// header checksum recomputed.
fn one_hop_on(mut dgram: Vec<u8>) -> Vec<u8> {
    dgram[8] -= 1;
    dgram[10..12].copy_from_slice(&[0, 0]);
    let c = checksum(&dgram[..20]);
    dgram[10..12].copy_from_slice(&c.to_be_bytes());
    dgram
}

/// Field by field, then byte for byte, an error lbd forwarded (`f`)
/// against what it should be (`want`, from [`expected_error`]).
fn assert_forwarded_error(f: &[u8], want: &[u8], quoted: ((u32, u16), (u32, u16), u32)) {
    let ((qsrc, qsport), (qdst, qdport), qseq) = quoted;
    assert_eq!(f.len(), want.len(), "length");
    assert_eq!(&f[14..22], &want[14..22], "outer version, tos, length, id, flags");
    assert_eq!(f[22], want[22], "outer ttl");
    assert_eq!(f[23], PROTO_ICMP);
    assert_eq!((rd32(f, 26), rd32(f, 30)), (rd32(want, 26), rd32(want, 30)), "outer addresses");
    assert_eq!(rd16(f, 24), rd16(want, 24), "outer checksum (computed from scratch)");
    assert_eq!((f[34], f[35], rd32(f, 38)), (want[34], want[35], rd32(want, 38)), "type, code, second word");
    let (q, wq) = (&f[42..], &want[42..]);
    assert_eq!(&q[..20], &wq[..20], "quoted ip header");
    assert_eq!(checksum(&q[..20]), 0, "quoted ip checksum");
    assert_eq!((rd32(q, 12), rd32(q, 16)), (qsrc, qdst), "quoted addresses");
    assert_eq!((rd16(q, 20), rd16(q, 22)), (qsport, qdport), "quoted ports");
    assert_eq!(rd32(q, 24), qseq, "quoted seq");
    assert_eq!(q, wq, "the whole quote");
    assert_eq!(rd16(f, 36), rd16(want, 36), "icmp checksum (computed from scratch)");
    assert_eq!(&f[14..], &want[14..], "every byte");
    assert_error_checksums(f);
}

/// A proxied connection from client port `port` with its backend's
/// handshake done: (cookie, backend ISN).
fn proxied_connection(h: &mut Harness, port: u16) -> (u32, u32) {
    let cookie = proxy_open(h, port, b"");
    // Far from the cookie, so that a sequence number in the wrong space
    // is nowhere near the right one.
    let bisn = cookie.wrapping_add(0x4000_0000);
    proxy_backend_answers(h, port, bisn);
    assert_eq!(h.take_tx().len(), 1, "the ACK completing the backend's handshake");
    (cookie, bisn)
}

#[test]
fn errors_about_a_proxied_reply_reach_the_backend_in_its_sequence_space() {
    let mut h = proxy_harness("on");
    let (client, vip, backend) = ((ip(CLIENT), 42000), (ip(VIP), 80), (ip("10.1.0.11"), 8080));
    let (cookie, bisn) = proxied_connection(&mut h, 42000);
    // The backend's segment, and what the client side saw of it.
    let sent = tcp_segment((INT_MAC, B1_MAC), backend, client, bisn + 1, 8, FLAG_ACK, 1000, &[], &[b'x'; 200]);
    h.rx(1, sent.clone());
    let out = h.take_tx();
    assert_eq!(out.len(), 1);
    let seen_by_client = seen(&out[0].1);
    assert_eq!((seen_by_client.src, seen_by_client.seq), (vip, cookie + 1), "the client sees lbd's space");
    let as_client_saw = datagram(&out[0].1);
    // What the backend must get back: its own segment, one hop on.
    let backend_view = one_hop_on(datagram(&sent));
    for quote_len in [28, 48, as_client_saw.len()] {
        let e = error_frame(EXT_MAC, GW_MAC, ip(ROUTER), ip(VIP), 3, 4, 1400, &as_client_saw[..quote_len]);
        h.rx(0, e.clone());
        let out = h.take_tx();
        assert_eq!(out.len(), 1, "quote of {quote_len}");
        let (port, f) = &out[0];
        assert_eq!(*port, 1);
        assert_eq!((&f[0..6], &f[6..12]), (&B1_MAC.0[..], &INT_MAC.0[..]));
        let want = expected_error(&e, ip(ROUTER), backend.0, &backend_view[..quote_len]);
        assert_forwarded_error(f, &want, (backend, client, bisn + 1));
    }
    assert_eq!(h.counters.event_count(Event::IcmpErrorsForwarded), 3);
    assert_eq!(h.total_drops(), 0);
}

#[test]
fn errors_about_a_proxied_request_reach_the_client_in_its_sequence_space() {
    let mut h = proxy_harness("on");
    let (client, vip, backend) = ((ip(CLIENT), 42001), (ip(VIP), 80), (ip("10.1.0.11"), 8080));
    let (cookie, bisn) = proxied_connection(&mut h, 42001);
    // The client's segment, and what the backend side saw of it.
    let sent =
        tcp_segment((EXT_MAC, GW_MAC), client, vip, 8, cookie + 1, FLAG_ACK | tcp::FLAG_PSH, 500, &[], &[7; 300]);
    h.rx(0, sent.clone());
    let out = h.take_tx();
    assert_eq!(out.len(), 1);
    let seen_by_backend = seen(&out[0].1);
    assert_eq!((seen_by_backend.dst, seen_by_backend.ack), (backend, bisn + 1), "the backend sees its space");
    let as_backend_saw = datagram(&out[0].1);
    let client_view = one_hop_on(datagram(&sent));
    // From a router on the backend side (its address stays), then from
    // the backend itself (leaves from the VIP); quotes of the 8 bytes
    // RFC 792 asks for, of the whole TCP header, and of everything.
    for (from, ty, code, word, outer_src) in
        [(ip(INT_ROUTER), 11, 0, 0, ip(INT_ROUTER)), (backend.0, 3, 4, 1300, ip(VIP))]
    {
        for quote_len in [28, 40, as_backend_saw.len()] {
            let e = error_frame(INT_MAC, B1_MAC, from, ip(CLIENT), ty, code, word, &as_backend_saw[..quote_len]);
            h.rx(1, e.clone());
            let out = h.take_tx();
            assert_eq!(out.len(), 1, "quote of {quote_len}");
            let (port, f) = &out[0];
            assert_eq!(*port, 0);
            assert_eq!((&f[0..6], &f[6..12]), (&GW_MAC.0[..], &EXT_MAC.0[..]));
            let want = expected_error(&e, outer_src, client.0, &client_view[..quote_len]);
            assert_forwarded_error(f, &want, (client, vip, 8));
            if quote_len >= 40 {
                assert_eq!(rd32(&f[42..], 28), cookie + 1, "quoted ack in the client's space");
            }
        }
    }
    assert_eq!(h.counters.event_count(Event::IcmpErrorsForwarded), 6);
    assert_eq!(h.total_drops(), 0);
}

#[test]
fn forwarded_errors_are_cut_to_the_forward_rate() {
    let mut h = harness();
    let (backend, _, _) = open_tcp(&mut h, 40000);
    let reply = l4_frame(GW_MAC, EXT_MAC, PROTO_TCP, ip(VIP), ip(CLIENT), 80, 40000, FLAG_ACK, b"");
    let about_flow = error_frame(EXT_MAC, GW_MAC, ip(ROUTER), ip(VIP), 3, 4, 1400, &datagram(&reply));
    let other = l4_frame(GW_MAC, EXT_MAC, PROTO_TCP, ip(VIP), ip(CLIENT), 80, 40999, FLAG_ACK, b"");
    let about_nothing = error_frame(EXT_MAC, GW_MAC, ip(ROUTER), ip(VIP), 3, 4, 1400, &datagram(&other));
    let burst = crate::ratelimit::TokenBucket::default_burst(FORWARD_RATE) as usize;
    // Errors about no session take no token.
    for _ in 0..3 * burst {
        h.rx(0, about_nothing.clone());
    }
    assert_eq!(h.drops(DropReason::IcmpErrorNoSession), 3 * burst as u64);
    for _ in 0..burst + 30 {
        h.rx(0, about_flow.clone());
    }
    let out = h.take_tx();
    assert_eq!(out.len(), burst, "the burst goes through");
    assert!(out.iter().all(|(port, f)| *port == 1 && rd32(f, 30) == backend));
    assert_eq!(h.drops(DropReason::IcmpForwardRateLimited), 30);
    assert_eq!(h.counters.event_count(Event::IcmpErrorsForwarded), burst as u64);
    assert_eq!(h.total_drops(), 3 * burst as u64 + 30);
    // The flow itself is not limited.
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, ip(CLIENT), ip(VIP), 40000, 80, FLAG_ACK, b"more"));
    assert_eq!(h.take_tx().len(), 1);
    // 10 ms at 1000/s: 10 more.
    h.dp.set_now(11);
    for _ in 0..20 {
        h.rx(0, about_flow.clone());
    }
    assert_eq!(h.take_tx().len(), 10);
    assert_eq!(h.drops(DropReason::IcmpForwardRateLimited), 40);
    // A second later the bucket is full again.
    h.dp.set_now(1011);
    for _ in 0..burst + 1 {
        h.rx(0, about_flow.clone());
    }
    assert_eq!(h.take_tx().len(), burst);
    assert_eq!(h.drops(DropReason::IcmpForwardRateLimited), 41);
}
