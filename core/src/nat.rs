//! NAT rewrites of an Ethernet/IPv4/TCP|UDP frame, in place.
//!
//! Only header words change, so every checksum is patched incrementally
//! (RFC 1624) and the payload is never read: the cost does not depend on
//! packet size, and a multi-segment packet needs only its first segment.
//! Callers pass frames the dataplane has already validated (20-byte IPv4
//! header at offset 14, complete L4 header after it).

use crate::wire::checksum::{adjust16, adjust32};
use crate::wire::ethernet::HEADER_LEN as ETH;
use crate::wire::ipv4::{PROTO_TCP, PROTO_UDP};
use crate::wire::{tcp, udp, MacAddr};

const IP: usize = ETH;
const L4: usize = ETH + 20;

#[inline(always)]
fn rd16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
#[inline(always)]
fn wr16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}
#[inline(always)]
fn rd32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
#[inline(always)]
fn wr32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Which endpoint of the packet to rewrite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// Request path: destination VIP:port → backend.
    Destination,
    /// Reply path: source backend → VIP:port.
    Source,
}

/// Rewrites one endpoint (address and port) of the frame, decrements the
/// TTL, and patches the IPv4 and L4 checksums.
#[inline]
pub fn rewrite(frame: &mut [u8], which: Endpoint, addr: u32, port: u16) {
    // Fixed-size views: the offsets are constants, the bounds checks go.
    match frame[IP + 9] {
        PROTO_TCP => {
            let f: &mut [u8; L4 + 20] = (&mut frame[..L4 + 20]).try_into().expect("validated TCP frame");
            rewrite_fixed(f, which, addr, port, Some(L4 + tcp::CHECKSUM_OFFSET), false);
        }
        PROTO_UDP => {
            let f: &mut [u8; L4 + 8] = (&mut frame[..L4 + 8]).try_into().expect("validated UDP frame");
            rewrite_fixed(f, which, addr, port, Some(L4 + udp::CHECKSUM_OFFSET), true);
        }
        _ => {
            let f: &mut [u8; L4 + 4] = (&mut frame[..L4 + 4]).try_into().expect("validated frame");
            rewrite_fixed(f, which, addr, port, None, false);
        }
    }
}

#[inline(always)]
fn rewrite_fixed<const N: usize>(
    f: &mut [u8; N],
    which: Endpoint,
    addr: u32,
    port: u16,
    csum_at: Option<usize>,
    udp: bool,
) {
    let (ip_at, port_at) = match which {
        Endpoint::Destination => (IP + 16, L4 + 2),
        Endpoint::Source => (IP + 12, L4),
    };
    let old_addr = rd32(f, ip_at);
    let old_port = rd16(f, port_at);

    // IPv4 header: TTL (shares a word with the protocol) and the address.
    let old_ttl_word = rd16(f, IP + 8);
    f[IP + 8] = f[IP + 8].wrapping_sub(1);
    let new_ttl_word = rd16(f, IP + 8);
    let mut c = rd16(f, IP + 10);
    c = adjust16(c, old_ttl_word, new_ttl_word);
    c = adjust32(c, old_addr, addr);
    wr16(f, IP + 10, c);
    wr32(f, ip_at, addr);

    // L4 checksum covers the pseudo-header address and the port.
    if let Some(at) = csum_at {
        let old = rd16(f, at);
        // UDP checksum 0 means "none" (RFC 768): leave it so.
        if !(udp && old == 0) {
            let mut c = adjust32(old, old_addr, addr);
            c = adjust16(c, old_port, port);
            if udp && c == 0 {
                c = 0xffff;
            }
            wr16(f, at, c);
        }
    }
    wr16(f, port_at, port);
}

/// Turns a client's TCP segment (client→VIP) into a RST from the VIP back
/// to the client, in place; returns the new frame length (54). MACs are
/// left to the caller (it routes the result).
pub fn tcp_reset_reply(frame: &mut [u8]) -> usize {
    let (src, dst) = (rd32(frame, IP + 12), rd32(frame, IP + 16));
    let (sport, dport) = (rd16(frame, L4), rd16(frame, L4 + 2));
    let seq = rd32(frame, L4 + 4);
    let ack = rd32(frame, L4 + 8);
    let flags = frame[L4 + 13];
    let ihl_total = usize::from(rd16(frame, IP + 2));
    let data_off = usize::from(frame[L4 + 12] >> 4) * 4;
    let seg_len = ihl_total.saturating_sub(20 + data_off) as u32
        + u32::from(flags & tcp::FLAG_SYN != 0)
        + u32::from(flags & tcp::FLAG_FIN != 0);
    // RFC 9293 3.10.7.1: answer an ACK with seq = its ack number; anything
    // else with seq 0 and an ACK of what it carried.
    let (rseq, rack, rflags) = if flags & tcp::FLAG_ACK != 0 {
        (ack, 0, tcp::FLAG_RST)
    } else {
        (0, seq.wrapping_add(seg_len), tcp::FLAG_RST | tcp::FLAG_ACK)
    };
    let ip = &mut frame[IP..IP + 20];
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[4..6].copy_from_slice(&0u16.to_be_bytes());
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = PROTO_TCP;
    ip[12..16].copy_from_slice(&dst.to_be_bytes());
    ip[16..20].copy_from_slice(&src.to_be_bytes());
    ip[10..12].copy_from_slice(&[0, 0]);
    let c = crate::wire::checksum::checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let t = &mut frame[L4..L4 + 20];
    t[0..2].copy_from_slice(&dport.to_be_bytes());
    t[2..4].copy_from_slice(&sport.to_be_bytes());
    t[4..8].copy_from_slice(&rseq.to_be_bytes());
    t[8..12].copy_from_slice(&rack.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = rflags;
    t[14..20].fill(0);
    let sum = crate::wire::checksum::pseudo_header_sum(dst.to_be_bytes(), src.to_be_bytes(), PROTO_TCP, 20)
        + crate::wire::checksum::sum_words(t);
    let c = !crate::wire::checksum::fold(sum);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    L4 + 20
}

/// Sets the Ethernet addresses for the next hop.
#[inline]
pub fn set_macs(frame: &mut [u8], src: MacAddr, dst: MacAddr) {
    frame[0..6].copy_from_slice(&dst.0);
    frame[6..12].copy_from_slice(&src.0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::{checksum, fold, pseudo_header_sum, sum_words};
    use proptest::prelude::*;

    /// Builds a valid frame with full checksums.
    fn frame(proto: u8, src: u32, dst: u32, sport: u16, dport: u16, payload: &[u8], udp_zero: bool) -> Vec<u8> {
        let l4h = if proto == PROTO_TCP { 20 } else { 8 };
        let total = 20 + l4h + payload.len();
        let mut f = vec![0u8; ETH + total];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[IP] = 0x45;
        wr16(&mut f, IP + 2, total as u16);
        f[IP + 8] = 64;
        f[IP + 9] = proto;
        wr32(&mut f, IP + 12, src);
        wr32(&mut f, IP + 16, dst);
        let c = checksum(&f[IP..IP + 20]);
        wr16(&mut f, IP + 10, c);
        wr16(&mut f, L4, sport);
        wr16(&mut f, L4 + 2, dport);
        if proto == PROTO_TCP {
            f[L4 + 12] = 5 << 4;
            f[L4 + 13] = 0x18;
        } else {
            wr16(&mut f, L4 + 4, (8 + payload.len()) as u16);
        }
        f[L4 + l4h..].copy_from_slice(payload);
        if !(proto == PROTO_UDP && udp_zero) {
            fill_l4(&mut f);
        }
        f
    }

    fn l4_checksum_full(f: &[u8]) -> u16 {
        let proto = f[IP + 9];
        let total = usize::from(rd16(f, IP + 2));
        let l4 = &f[L4..IP + total];
        let at = if proto == PROTO_TCP { 16 } else { 6 };
        let mut copy = l4.to_vec();
        copy[at] = 0;
        copy[at + 1] = 0;
        let src = rd32(f, IP + 12).to_be_bytes();
        let dst = rd32(f, IP + 16).to_be_bytes();
        let sum = pseudo_header_sum(src, dst, proto, l4.len() as u16) + sum_words(&copy);
        let c = !fold(sum);
        if proto == PROTO_UDP && c == 0 {
            0xffff
        } else {
            c
        }
    }

    fn fill_l4(f: &mut [u8]) {
        let c = l4_checksum_full(f);
        let at = if f[IP + 9] == PROTO_TCP { L4 + 16 } else { L4 + 6 };
        wr16(f, at, c);
    }

    fn ip_checksum_full(f: &[u8]) -> u16 {
        let mut h = f[IP..IP + 20].to_vec();
        h[10] = 0;
        h[11] = 0;
        checksum(&h)
    }

    proptest! {
        /// The incremental rewrite gives the checksums a full recomputation
        /// gives, for both endpoints, both protocols and any payload.
        #[test]
        fn rewrite_checksums_equal_full_recomputation(
            tcp in any::<bool>(),
            src in any::<u32>(), dst in any::<u32>(),
            sport in any::<u16>(), dport in any::<u16>(),
            new_addr in any::<u32>(), new_port in any::<u16>(),
            source in any::<bool>(),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let proto = if tcp { PROTO_TCP } else { PROTO_UDP };
            let mut f = frame(proto, src, dst, sport, dport, &payload, false);
            let which = if source { Endpoint::Source } else { Endpoint::Destination };
            rewrite(&mut f, which, new_addr, new_port);
            prop_assert_eq!(f[IP + 8], 63);
            if source {
                prop_assert_eq!(rd32(&f, IP + 12), new_addr);
                prop_assert_eq!(rd16(&f, L4), new_port);
                prop_assert_eq!(rd32(&f, IP + 16), dst);
            } else {
                prop_assert_eq!(rd32(&f, IP + 16), new_addr);
                prop_assert_eq!(rd16(&f, L4 + 2), new_port);
                prop_assert_eq!(rd32(&f, IP + 12), src);
            }
            let ipc = rd16(&f, IP + 10);
            let ipfull = ip_checksum_full(&f);
            // Equal, or the other representation of zero (only possible for
            // an all-zero header, which a real one never is).
            prop_assert!(ipc == ipfull || (ipc ^ ipfull) == 0xffff && (ipc == 0 || ipfull == 0));
            let at = if tcp { L4 + 16 } else { L4 + 6 };
            let l4c = rd16(&f, at);
            let l4full = l4_checksum_full(&f);
            prop_assert!(l4c == l4full || (l4c == 0xffff && l4full == 0) || (l4c == 0 && l4full == 0xffff),
                "l4 {:#06x} full {:#06x}", l4c, l4full);
        }

        #[test]
        fn udp_zero_checksum_stays_zero(dst in any::<u32>(), new_addr in any::<u32>(), new_port in any::<u16>()) {
            let mut f = frame(PROTO_UDP, 1, dst, 5, 53, b"hello", true);
            prop_assert_eq!(rd16(&f, L4 + 6), 0);
            rewrite(&mut f, Endpoint::Destination, new_addr, new_port);
            prop_assert_eq!(rd16(&f, L4 + 6), 0);
            prop_assert_eq!(rd16(&f, IP + 10), ip_checksum_full(&f));
        }
    }

    #[test]
    fn macs() {
        let mut f = frame(PROTO_UDP, 1, 2, 3, 4, b"", false);
        set_macs(&mut f, MacAddr([1; 6]), MacAddr([2; 6]));
        assert_eq!(&f[0..6], &[2; 6]);
        assert_eq!(&f[6..12], &[1; 6]);
    }
}
