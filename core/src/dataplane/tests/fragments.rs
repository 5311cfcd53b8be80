//! IPv4 fragments through the core: steered to the flow's owner, every
//! fragment rewritten, and a receiver-side reassembly of what comes out
//! carries a valid L4 checksum.

use super::*;
use crate::wire::frame::{FrameBuilder, IPV4, IP_DST_ADDR, IP_FLG_OFF, IP_LENGTH, IP_SRC_ADDR, L4};
use crate::wire::{get16, get32, set16};

const VIP: &str = "10.0.0.100";
const CLIENT: &str = "192.168.1.10";
const BACKEND: &str = "10.1.0.11";

/// A whole datagram frame from the client (DF clear) to the dns listener.
fn udp_datagram(ident: u16, sport: u16, len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    let b = FrameBuilder { ident, ..FrameBuilder::new(GW_MAC, EXT_MAC) };
    b.udp(ip(CLIENT), ip(VIP), sport, 53, &payload)
}

/// Splits a whole frame into fragments of at most `chunk` payload bytes
/// (a multiple of 8), as a sender on a small MTU would.
fn fragment(f: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    assert_eq!(chunk % 8, 0);
    let total = usize::from(get16(f, IP_LENGTH));
    let body = &f[L4..IPV4 + total];
    body.chunks(chunk)
        .enumerate()
        .map(|(n, piece)| {
            let mut g = f[..L4].to_vec();
            g.extend_from_slice(piece);
            let more = (n + 1) * chunk < body.len();
            set16(&mut g, IP_LENGTH, (20 + piece.len()) as u16);
            set16(&mut g, IP_FLG_OFF, if more { 0x2000 } else { 0 } | (n * chunk / 8) as u16);
            fix_ip_checksum(&mut g);
            g
        })
        .collect()
}

/// What a receiver makes of fragments: one frame with the first
/// fragment's headers and the payloads in offset order. Panics on a gap,
/// an overlap or a fragment of another datagram.
fn reassemble(frags: &[Vec<u8>]) -> Vec<u8> {
    let mut by_offset: Vec<&Vec<u8>> = frags.iter().collect();
    by_offset.sort_by_key(|g| get16(g, IP_FLG_OFF) & 0x1fff);
    let first = by_offset[0];
    let mut out = first[..L4].to_vec();
    for (n, g) in by_offset.iter().enumerate() {
        assert_eq!(&g[26..34], &first[26..34], "addresses of fragment {n}");
        assert_eq!(&g[18..20], &first[18..20], "IP id of fragment {n}");
        let off = usize::from(get16(g, IP_FLG_OFF) & 0x1fff) * 8;
        assert_eq!(off, out.len() - L4, "fragment {n} follows the one before");
        let more = get16(g, IP_FLG_OFF) & 0x2000 != 0;
        assert_eq!(more, n + 1 < by_offset.len(), "MF of fragment {n}");
        out.extend_from_slice(&g[L4..IPV4 + usize::from(get16(g, IP_LENGTH))]);
    }
    let total = (out.len() - IPV4) as u16;
    set16(&mut out, IP_LENGTH, total);
    set16(&mut out, IP_FLG_OFF, 0);
    fix_ip_checksum(&mut out);
    out
}

/// Checks the fragments that came out against the datagram that went in,
/// as `expect` (src, dst, sport, dport) after the rewrite: every fragment's
/// headers (MACs, addresses, TTL, IP checksum, id, offsets), then the
/// reassembled datagram's ports, L4 checksum and payload.
fn assert_fragments(out: &[Vec<u8>], sent: &[u8], macs: (MacAddr, MacAddr), expect: (u32, u32, u16, u16)) {
    let (dst_mac, src_mac) = macs;
    let (src, dst, sport, dport) = expect;
    for (n, g) in out.iter().enumerate() {
        assert_eq!(&g[0..6], &dst_mac.0, "dst mac of {n}");
        assert_eq!(&g[6..12], &src_mac.0, "src mac of {n}");
        assert_eq!(get32(g, IP_SRC_ADDR), src, "src ip of {n}");
        assert_eq!(get32(g, IP_DST_ADDR), dst, "dst ip of {n}");
        assert_eq!(g[22], sent[22] - 1, "ttl of {n}");
        assert_eq!(checksum(&g[14..34]), 0, "ip checksum of {n}");
        assert_eq!(&g[18..20], &sent[18..20], "IP id of {n}");
    }
    let whole = reassemble(out);
    assert_eq!(u16::from_be_bytes([whole[34], whole[35]]), sport, "sport");
    assert_eq!(u16::from_be_bytes([whole[36], whole[37]]), dport, "dport");
    let at = if whole[23] == PROTO_TCP { 16 } else { 6 };
    assert_eq!(u16::from_be_bytes([whole[34 + at], whole[35 + at]]), full_l4_checksum(&whole), "l4 checksum");
    let hdr = if whole[23] == PROTO_TCP { 20 } else { 8 };
    assert_eq!(&whole[L4 + hdr..], &sent[L4 + hdr..usize::from(get16(sent, IP_LENGTH)) + IPV4], "payload");
}

fn frames(tx: Vec<(u16, Vec<u8>)>, port: u16) -> Vec<Vec<u8>> {
    tx.into_iter()
        .map(|(p, f)| {
            assert_eq!(p, port, "sent out of port {port}");
            f
        })
        .collect()
}

fn to_backend() -> (u32, u32, u16, u16) {
    (ip(CLIENT), ip(BACKEND), 40000, 5353)
}

/// 4000 bytes of UDP in 8 pieces, in order: all reach the backend, the
/// first first, each rewritten, and the whole verifies.
#[test]
fn udp_fragments_in_order_reach_the_backend() {
    let mut h = harness();
    let sent = udp_datagram(0x4242, 40000, 4000);
    let frags = fragment(&sent, 512);
    assert_eq!(frags.len(), 8);
    for f in frags {
        h.rx(0, f);
    }
    let out = frames(h.take_tx(), 1);
    assert_eq!(out.len(), 8);
    assert_fragments(&out, &sent, (B1_MAC, INT_MAC), to_backend());
    assert_eq!(h.total_drops(), 0);
    assert_eq!(h.counters.event_count(Event::FragmentDatagramsSteered), 1);
    assert_eq!(h.counters.event_count(Event::SessionsCreated), 1);
    // Both stages forgot the datagram once it was whole.
    assert!(h.dp.st.frags_idle());
}

/// Out of order, and with the first fragment last: the earlier ones wait
/// for it, then go after it.
#[test]
fn udp_fragments_out_of_order_wait_for_the_first() {
    let mut h = harness();
    let sent = udp_datagram(7, 40000, 3000);
    let mut frags = fragment(&sent, 1480);
    assert_eq!(frags.len(), 3);
    frags.swap(1, 2);
    h.rx(0, frags[0].clone());
    h.rx(0, frags[1].clone());
    h.rx(0, frags[2].clone());
    let out = frames(h.take_tx(), 1);
    assert_eq!(out.len(), 3);
    assert_fragments(&out, &sent, (B1_MAC, INT_MAC), to_backend());

    let sent = udp_datagram(8, 40001, 6000);
    let frags = fragment(&sent, 1480);
    for f in frags.iter().skip(1).rev() {
        h.rx(0, f.clone());
    }
    assert!(h.take_tx().is_empty(), "held until the first fragment comes");
    h.rx(0, frags[0].clone());
    let out = frames(h.take_tx(), 1);
    assert_eq!(out.len(), frags.len());
    assert_eq!(get16(&out[0], IP_FLG_OFF) & 0x1fff, 0, "the first fragment leads");
    assert_fragments(&out, &sent, (B1_MAC, INT_MAC), (ip(CLIENT), ip(BACKEND), 40001, 5353));
    assert_eq!(h.counters.event_count(Event::FragmentsHeld), frags.len() as u64 - 1);
    assert_eq!(h.total_drops(), 0);
    assert!(h.dp.st.frags_idle());
}

/// A fragment overlapping one already seen is dropped, and so is the rest
/// of its datagram, held or still to come.
#[test]
fn overlapping_fragments_are_dropped() {
    let mut h = harness();
    let sent = udp_datagram(9, 40000, 3000);
    let frags = fragment(&sent, 1000);
    assert_eq!(frags.len(), 4);
    h.rx(0, frags[2].clone());
    // Offset 1000 of 1008 bytes: over the held one's start.
    let mut over = fragment(&sent, 1008)[1].clone();
    over[21] = (1000 / 8) as u8;
    fix_ip_checksum(&mut over);
    h.rx(0, over);
    assert_eq!(h.drops(DropReason::FragmentOverlap), 2, "the overlapping one and the held one");
    h.rx(0, frags[0].clone());
    h.rx(0, frags[3].clone());
    assert_eq!(h.drops(DropReason::FragmentOverlap), 4, "the rest of the datagram");
    assert!(h.take_tx().is_empty());
    assert_eq!(h.total_drops(), 4);
    assert_eq!(h.io.freed, 4);
    // A second copy of a first fragment (teardrop-style rewriting of the
    // L4 header) in another datagram.
    let sent = udp_datagram(10, 40002, 3000);
    let frags = fragment(&sent, 1480);
    h.rx(0, frags[0].clone());
    h.rx(0, frags[0].clone());
    assert_eq!(h.take_tx().len(), 1);
    assert_eq!(h.drops(DropReason::FragmentOverlap), 5);
}

/// More fragments than `max_fragments_per_datagram`: the excess and the
/// rest of the datagram are dropped.
#[test]
fn too_many_fragments_are_dropped() {
    let yaml = format!("{CONFIG}fragments: {{max_fragments_per_datagram: 4}}\n");
    let mut h = harness_with(&yaml, 0, 1, 100);
    let sent = udp_datagram(11, 40000, 1000);
    let frags = fragment(&sent, 128);
    assert_eq!(frags.len(), 8);
    for f in frags {
        h.rx(0, f);
    }
    assert_eq!(h.take_tx().len(), 4);
    assert_eq!(h.drops(DropReason::FragmentTooMany), 4);
    assert_eq!(h.total_drops(), 4);
}

/// Fragments whose first fragment never comes are dropped after
/// `fragments.timeout`, and the tables are empty again.
#[test]
fn never_completed_datagrams_time_out() {
    let yaml = format!("{CONFIG}fragments: {{timeout: 500ms}}\n");
    let mut h = harness_with(&yaml, 0, 1, 100);
    let sent = udp_datagram(12, 40000, 3000);
    let frags = fragment(&sent, 1000);
    h.rx(0, frags[1].clone());
    h.rx(0, frags[3].clone());
    // Another datagram whose first fragment came but not its last: the
    // forwarded ones are gone, its entries still expire.
    let other = fragment(&udp_datagram(13, 40001, 3000), 1000);
    h.rx(0, other[0].clone());
    assert_eq!(h.take_tx().len(), 1);
    for t in (50..=450).step_by(50) {
        h.dp.set_now(t);
        h.dp.tick(&mut h.io);
    }
    assert_eq!(h.drops(DropReason::FragmentTimeout), 0, "not yet");
    for t in (500..=700).step_by(50) {
        h.dp.set_now(t);
        h.dp.tick(&mut h.io);
    }
    assert_eq!(h.drops(DropReason::FragmentTimeout), 2);
    assert_eq!(h.io.freed, 2);
    assert!(h.dp.st.frags_idle());
    // A late piece of the expired datagram is no longer matched to its
    // session: it waits, as for an unknown datagram.
    h.rx(0, other[1].clone());
    assert!(h.take_tx().is_empty());
}

/// Fragments of a reply (backend→client) leave from the VIP, the whole
/// with a valid checksum.
#[test]
fn reply_fragments_leave_from_the_vip() {
    let mut h = harness();
    h.rx(0, udp_datagram(1, 40000, 10));
    assert_eq!(h.take_tx().len(), 1);
    let payload: Vec<u8> = (0..5000).map(|i| (i % 251) as u8).collect();
    let b = FrameBuilder { ident: 0x9999, ..FrameBuilder::new(B1_MAC, INT_MAC) };
    let sent = b.udp(ip(BACKEND), ip(CLIENT), 5353, 40000, &payload);
    let mut frags = fragment(&sent, 1480);
    frags.rotate_left(1);
    for f in frags {
        h.rx(1, f);
    }
    let out = frames(h.take_tx(), 0);
    assert_eq!(out.len(), 4);
    assert_fragments(&out, &sent, (GW_MAC, EXT_MAC), (ip(VIP), ip(CLIENT), 53, 40000));
    assert_eq!(h.total_drops(), 0);
}

/// A TCP segment split in fragments after the handshake's SYN: the
/// session's backend gets all of it, the whole segment's checksum valid.
#[test]
fn fragmented_tcp_segment_reaches_the_backend() {
    let mut h = harness();
    let (client, vip) = (ip(CLIENT), ip(VIP));
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, client, vip, 41000, 80, FLAG_SYN, b""));
    let syn_out = h.take_tx();
    let backend = backend_of(&syn_out[0].1);
    let payload: Vec<u8> = (0..2000).map(|i| (i % 13) as u8).collect();
    let b = FrameBuilder { ident: 77, ..FrameBuilder::new(GW_MAC, EXT_MAC) };
    let sent = b.tcp(client, vip, 41000, 80, FLAG_ACK, &payload);
    let frags = fragment(&sent, 1000);
    assert_eq!(frags.len(), 3);
    for f in frags.into_iter().rev() {
        h.rx(0, f);
    }
    let out = h.take_tx().into_iter().map(|(_, f)| f).collect::<Vec<_>>();
    assert_eq!(out.len(), 3);
    let mac = if backend.0 == ip("10.1.0.11") { B1_MAC } else { MacAddr([0x02, 0, 0, 0, 0, 0x12]) };
    assert_fragments(&out, &sent, (mac, INT_MAC), (client, backend.0, 41000, backend.1));
    assert_eq!(h.total_drops(), 0);
    assert_eq!(h.counters.event_count(Event::SessionsCreated), 1, "the SYN's session");
}

/// Datagrams beyond `max_datagrams`, and fragments beyond `max_held`, are
/// dropped as fragment_table_full.
#[test]
fn full_fragment_tables_drop() {
    let yaml = format!("{CONFIG}fragments: {{max_datagrams: 1, max_held: 2}}\n");
    let mut h = harness_with(&yaml, 0, 1, 100);
    let a = fragment(&udp_datagram(20, 40000, 4000), 1000);
    let b = fragment(&udp_datagram(21, 40001, 4000), 1000);
    h.rx(0, a[1].clone());
    h.rx(0, b[1].clone());
    assert_eq!(h.drops(DropReason::FragmentTableFull), 1, "a second datagram");
    h.rx(0, a[2].clone());
    h.rx(0, a[3].clone());
    assert_eq!(h.drops(DropReason::FragmentTableFull), 4, "over max_held: it and the two held");
    assert!(h.take_tx().is_empty());
    assert_eq!(h.io.freed, 4);
}

/// Fragments of a datagram whose first fragment was dropped (no listener
/// here) are dropped with it.
#[test]
fn fragments_follow_their_first_fragment_into_a_drop() {
    let mut h = harness();
    let b = FrameBuilder { ident: 5, ..FrameBuilder::new(GW_MAC, EXT_MAC) };
    let sent = b.udp(ip(CLIENT), ip(VIP), 40000, 54, &[1; 3000]);
    let frags = fragment(&sent, 1480);
    for f in frags.into_iter().rev() {
        h.rx(0, f);
    }
    assert_eq!(h.drops(DropReason::NoListener), 3);
    assert!(h.take_tx().is_empty());
}

/// Delivers what the workers handed each other until nothing moves.
fn pump(hs: &mut [Harness]) {
    loop {
        let moved: Vec<(usize, Pkt)> = hs.iter_mut().flat_map(|h| std::mem::take(&mut h.io.handoff)).collect();
        if moved.is_empty() {
            return;
        }
        for (w, p) in moved {
            hs[w].dp.process_handoff(p, &mut hs[w].io);
        }
    }
}

/// Two workers, the datagram's fragment worker not the flow's owner, the
/// fragments received by either: all of them reach the backend through
/// the owner, request and reply.
#[test]
fn two_workers_hand_fragments_to_the_owner() {
    let (mut hs, _, _) = worker_group(CONFIG, 2);
    let sport = 40000;
    let owner = owner_shard(ip(CLIENT), sport, 2);
    let ident = (0..100u16)
        .find(|id| {
            let k = crate::fragments::DatagramKey { src: ip(CLIENT), dst: ip(VIP), proto: PROTO_UDP, id: *id };
            k.worker(&crate::rss::OwnerHash::new(&crate::hashkey::HashKeys::FIXED.rss), 2) != owner
        })
        .expect("an id whose fragment worker is the other one");
    let sent = udp_datagram(ident, sport, 5000);
    let frags = fragment(&sent, 1480);
    // The last first, received by alternating workers.
    for (n, f) in frags.iter().rev().enumerate() {
        hs[n % 2].rx(0, f.clone());
        pump(&mut hs);
    }
    assert!(hs[1 - owner].io.tx.is_empty(), "only the owner sends");
    let out = frames(hs[owner].take_tx(), 1);
    assert_eq!(out.len(), frags.len());
    assert_eq!(get16(&out[0], IP_FLG_OFF) & 0x1fff, 0, "the first fragment leads");
    assert_fragments(&out, &sent, (B1_MAC, INT_MAC), (ip(CLIENT), ip(BACKEND), sport, 5353));
    // The reply, fragmented too, from the backend side.
    let b = FrameBuilder { ident: ident + 1, ..FrameBuilder::new(B1_MAC, INT_MAC) };
    let reply = b.udp(ip(BACKEND), ip(CLIENT), 5353, sport, &[0xab; 4000]);
    for (n, f) in fragment(&reply, 1480).into_iter().enumerate() {
        hs[n % 2].rx(1, f);
        pump(&mut hs);
    }
    let out = frames(hs[owner].take_tx(), 0);
    assert_eq!(out.len(), 3);
    assert_fragments(&out, &reply, (GW_MAC, EXT_MAC), (ip(VIP), ip(CLIENT), 53, sport));
    assert!(hs[1 - owner].io.tx.is_empty());
    assert_eq!(hs.iter().map(|h| h.total_drops()).sum::<u64>(), 0);
}
