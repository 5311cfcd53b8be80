//! The rewrite tail of the flow path, and NAT, its one kind so far.
//!
//! [`Rewrite`] is what the flow path asks of a forwarding mode: make a
//! session's packet ready for its next hop. NAT rewrites one endpoint in
//! place; FULLNAT (both endpoints) and DSR (encapsulation) would be
//! siblings behind the same trait, chosen statically, never per packet
//! through a vtable.
//!
//! Only header words change, so every checksum is patched incrementally
//! (RFC 1624) and the payload is never read: the cost does not depend on
//! packet size, and a multi-segment packet needs only its first segment.
//! Callers pass frames the dataplane has already validated (20-byte IPv4
//! header at offset 14, complete L4 header after it).

use crate::session::Session;
use crate::wire::checksum::adjust16_32;
use crate::wire::frame::{
    IPV4, IP_CHECKSUM, IP_DST_ADDR, IP_LENGTH, IP_PROTOCOL, IP_SRC_ADDR, IP_TTL, IP_TTL_PROTOCOL, L4, L4_DST_PORT,
    L4_SRC_PORT, PORTS_LEN, TCP_CHECKSUM, TCP_HEADERS_LEN, UDP_CHECKSUM, UDP_HEADERS_LEN,
};
use crate::wire::ipv4::{self, Ipv4Repr, PROTO_TCP, PROTO_UDP};
use crate::wire::tcp::{self, TcpPacket, TcpRepr};
use crate::wire::{ethernet, get16, get32, set16, set32, Field, MacAddr};

/// What the flow path does to a session's packet before routing it: the
/// forwarding mode. Implementations rewrite the frame in place, TTL
/// included (NAT folds it into the same checksum update), and return the
/// address to route the result to.
pub trait Rewrite {
    /// A client→service packet of session `s`.
    fn request(&self, frame: &mut [u8], s: &Session) -> u32;
    /// A backend→client packet of session `s`.
    fn reply(&self, frame: &mut [u8], s: &Session) -> u32;
}

/// Destination NAT: requests go to the backend's address and port,
/// replies leave from the VIP's.
#[derive(Clone, Copy, Debug, Default)]
pub struct Nat;

impl Rewrite for Nat {
    #[inline(always)]
    fn request(&self, frame: &mut [u8], s: &Session) -> u32 {
        rewrite(frame, Endpoint::Destination, s.backend_ip, s.backend_port);
        s.backend_ip
    }
    #[inline(always)]
    fn reply(&self, frame: &mut [u8], s: &Session) -> u32 {
        rewrite(frame, Endpoint::Source, s.vip, s.vip_port);
        s.client_ip
    }
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
    match frame[IP_PROTOCOL] {
        PROTO_TCP => {
            let f: &mut [u8; TCP_HEADERS_LEN] =
                (&mut frame[..TCP_HEADERS_LEN]).try_into().expect("validated TCP frame");
            rewrite_fixed(f, which, addr, port, Some(TCP_CHECKSUM), false);
        }
        PROTO_UDP => {
            let f: &mut [u8; UDP_HEADERS_LEN] =
                (&mut frame[..UDP_HEADERS_LEN]).try_into().expect("validated UDP frame");
            rewrite_fixed(f, which, addr, port, Some(UDP_CHECKSUM), true);
        }
        _ => {
            let f: &mut [u8; PORTS_LEN] = (&mut frame[..PORTS_LEN]).try_into().expect("validated frame");
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
    csum_at: Option<Field>,
    udp: bool,
) {
    let (addr_at, port_at) = match which {
        Endpoint::Destination => (IP_DST_ADDR, L4_DST_PORT),
        Endpoint::Source => (IP_SRC_ADDR, L4_SRC_PORT),
    };
    let old_addr = get32(f, addr_at.clone());
    let old_port = get16(f, port_at.clone());

    // IPv4 header: TTL (the high byte of a word shared with the protocol)
    // and the address. The new word is computed, not read back: a 2-byte
    // load over the 1-byte TTL store just made waits for the store.
    let old_ttl_word = get16(f, IP_TTL_PROTOCOL);
    let new_ttl_word = old_ttl_word.wrapping_sub(0x100);
    f[IP_TTL] = f[IP_TTL].wrapping_sub(1);
    let c = adjust16_32(get16(f, IP_CHECKSUM), old_ttl_word, new_ttl_word, old_addr, addr);
    set16(f, IP_CHECKSUM, c);
    set32(f, addr_at, addr);

    // L4 checksum covers the pseudo-header address and the port.
    if let Some(at) = csum_at {
        let old = get16(f, at.clone());
        // UDP checksum 0 means "none" (RFC 768): leave it so.
        if !(udp && old == 0) {
            let mut c = adjust16_32(old, old_port, port, old_addr, addr);
            if udp && c == 0 {
                c = 0xffff;
            }
            set16(f, at, c);
        }
    }
    set16(f, port_at, port);
}

/// Turns a client's TCP segment (client→VIP) into a RST from the VIP back
/// to the client, in place; returns the new frame length (54). MACs are
/// left to the caller (it routes the result).
pub fn tcp_reset_reply(frame: &mut [u8]) -> usize {
    let (src, dst) = (get32(frame, IP_SRC_ADDR), get32(frame, IP_DST_ADDR));
    let ip_total = usize::from(get16(frame, IP_LENGTH));
    let t = TcpPacket::new_checked(&frame[L4..]).expect("validated TCP frame");
    let flags = t.flags();
    let seg_len = ip_total.saturating_sub(ipv4::MIN_HEADER_LEN + t.header_len()) as u32
        + u32::from(flags & tcp::FLAG_SYN != 0)
        + u32::from(flags & tcp::FLAG_FIN != 0);
    let rst = TcpRepr::reset_for(&t, seg_len);
    let ip = Ipv4Repr::originated(dst, src, PROTO_TCP, tcp::MIN_HEADER_LEN as u16);
    ip.emit(&mut frame[IPV4..]);
    rst.emit(&mut frame[L4..TCP_HEADERS_LEN], ip.pseudo_header_sum());
    TCP_HEADERS_LEN
}

/// Sets the Ethernet addresses for the next hop.
#[inline]
pub fn set_macs(frame: &mut [u8], src: MacAddr, dst: MacAddr) {
    ethernet::set_addresses(frame, src, dst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::{checksum, fold, pseudo_header_sum, sum_words};
    use crate::wire::frame::{full_l4_checksum, FrameBuilder};
    use proptest::prelude::*;

    const IP: usize = IPV4;

    fn rd16(b: &[u8], at: usize) -> u16 {
        get16(b, at..at + 2)
    }
    fn wr16(b: &mut [u8], at: usize, v: u16) {
        set16(b, at..at + 2, v)
    }
    fn rd32(b: &[u8], at: usize) -> u32 {
        get32(b, at..at + 4)
    }
    fn wr32(b: &mut [u8], at: usize, v: u32) {
        set32(b, at..at + 4, v)
    }

    /// Builds a valid frame with full checksums (UDP: none with `udp_zero`).
    fn frame(proto: u8, src: u32, dst: u32, sport: u16, dport: u16, payload: &[u8], udp_zero: bool) -> Vec<u8> {
        let b = FrameBuilder {
            seq: 0,
            window: 0,
            udp_checksum: !udp_zero,
            ..FrameBuilder::new(MacAddr::ZERO, MacAddr::ZERO)
        };
        b.l4(proto, src, dst, sport, dport, tcp::FLAG_PSH | tcp::FLAG_ACK, payload)
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
            let l4full = full_l4_checksum(&f);
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

    /// The RST as lbd built it by hand before the wire builders: the
    /// reference [`tcp_reset_reply`] must match byte for byte.
    fn reset_reference(frame: &mut [u8]) -> usize {
        let (src, dst) = (rd32(frame, IP + 12), rd32(frame, IP + 16));
        let (sport, dport) = (rd16(frame, L4), rd16(frame, L4 + 2));
        let (seq, ack, flags) = (rd32(frame, L4 + 4), rd32(frame, L4 + 8), frame[L4 + 13]);
        let data_off = usize::from(frame[L4 + 12] >> 4) * 4;
        let seg_len = usize::from(rd16(frame, IP + 2)).saturating_sub(20 + data_off) as u32
            + u32::from(flags & tcp::FLAG_SYN != 0)
            + u32::from(flags & tcp::FLAG_FIN != 0);
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
        let c = checksum(ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let t = &mut frame[L4..L4 + 20];
        t[0..2].copy_from_slice(&dport.to_be_bytes());
        t[2..4].copy_from_slice(&sport.to_be_bytes());
        t[4..8].copy_from_slice(&rseq.to_be_bytes());
        t[8..12].copy_from_slice(&rack.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = rflags;
        t[14..20].fill(0);
        let sum = pseudo_header_sum(dst.to_be_bytes(), src.to_be_bytes(), PROTO_TCP, 20) + sum_words(t);
        t[16..18].copy_from_slice(&(!fold(sum)).to_be_bytes());
        L4 + 20
    }

    proptest! {
        #[test]
        fn reset_reply_matches_the_hand_built_reference(
            src in any::<u32>(), dst in any::<u32>(), sport in any::<u16>(), dport in any::<u16>(),
            seq in any::<u32>(), ack in any::<u32>(), flags in any::<u8>(), window in any::<u16>(),
            tos in any::<u8>(), ident in any::<u16>(), ttl in any::<u8>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut f = frame(PROTO_TCP, src, dst, sport, dport, &payload, false);
            wr32(&mut f, L4 + 4, seq);
            wr32(&mut f, L4 + 8, ack);
            f[L4 + 13] = flags;
            wr16(&mut f, L4 + 14, window);
            f[IP + 1] = tos;
            wr16(&mut f, IP + 4, ident);
            f[IP + 8] = ttl;
            let mut reference = f.clone();
            let n = tcp_reset_reply(&mut f);
            let m = reset_reference(&mut reference);
            prop_assert_eq!(n, m);
            prop_assert_eq!(&f[..n], &reference[..m]);
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
