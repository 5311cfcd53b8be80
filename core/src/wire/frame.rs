//! Whole frames: where each header field sits in an untagged
//! Ethernet/IPv4 frame without IP options (the only layout the fast paths
//! take), and a builder of complete TCP/UDP frames for tests and traffic
//! generators.
//!
//! The offsets are the per-header `field` constants moved by the headers
//! before them, so the classifier and the rewrites index fixed-size arrays
//! at compile-time constants.

use super::ethernet::{self, EthernetRepr, MacAddr, ETHERTYPE_IPV4};
use super::ipv4::{self, Ipv4Repr, FLAG_DF, PROTO_TCP, PROTO_UDP};
use super::tcp::{self, TcpRepr};
use super::udp::{self, UdpRepr};
use super::{at, Field};

/// Start of the IPv4 header.
pub const IPV4: usize = ethernet::HEADER_LEN;
/// Start of the TCP/UDP header.
pub const L4: usize = IPV4 + ipv4::MIN_HEADER_LEN;

pub const ETH_DST: Field = ethernet::field::DST;
pub const ETH_SRC: Field = ethernet::field::SRC;
pub const ETHERTYPE: Field = ethernet::field::ETHERTYPE;

pub const IP_VER_IHL: usize = IPV4 + ipv4::field::VER_IHL;
pub const IP_LENGTH: Field = at(IPV4, ipv4::field::LENGTH);
pub const IP_FLG_OFF: Field = at(IPV4, ipv4::field::FLG_OFF);
pub const IP_TTL: usize = IPV4 + ipv4::field::TTL;
pub const IP_PROTOCOL: usize = IPV4 + ipv4::field::PROTOCOL;
pub const IP_TTL_PROTOCOL: Field = at(IPV4, ipv4::field::TTL_PROTOCOL);
pub const IP_CHECKSUM: Field = at(IPV4, ipv4::field::CHECKSUM);
pub const IP_SRC_ADDR: Field = at(IPV4, ipv4::field::SRC_ADDR);
pub const IP_DST_ADDR: Field = at(IPV4, ipv4::field::DST_ADDR);
/// The whole IPv4 header.
pub const IP_HEADER: Field = IPV4..L4;

/// Ports sit at the same place in TCP and UDP.
pub const L4_SRC_PORT: Field = at(L4, tcp::field::SRC_PORT);
pub const L4_DST_PORT: Field = at(L4, tcp::field::DST_PORT);
const _: () = assert!(tcp::field::SRC_PORT.start == udp::field::SRC_PORT.start);
const _: () = assert!(tcp::field::DST_PORT.start == udp::field::DST_PORT.start);

pub const TCP_DATA_OFF: usize = L4 + tcp::field::DATA_OFF;
pub const TCP_FLAGS: usize = L4 + tcp::field::FLAGS;
pub const TCP_CHECKSUM: Field = at(L4, tcp::field::CHECKSUM);
pub const UDP_LENGTH: Field = at(L4, udp::field::LENGTH);
pub const UDP_CHECKSUM: Field = at(L4, udp::field::CHECKSUM);

/// Bytes up to the end of an option-less TCP header.
pub const TCP_HEADERS_LEN: usize = L4 + tcp::MIN_HEADER_LEN;
/// Bytes up to the end of the UDP header.
pub const UDP_HEADERS_LEN: usize = L4 + udp::HEADER_LEN;
/// Bytes up to the end of both ports: what every TCP/UDP frame has.
pub const PORTS_LEN: usize = L4_DST_PORT.end;

/// Builds valid Ethernet/IPv4/TCP|UDP frames (every checksum right) for
/// tests, benchmarks and traffic generators. The fields not given per
/// frame are public, with defaults of `new`.
#[derive(Clone, Copy, Debug)]
pub struct FrameBuilder {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub ttl: u8,
    pub ident: u16,
    pub dont_fragment: bool,
    /// TCP sequence number.
    pub seq: u32,
    /// TCP window.
    pub window: u16,
    /// Whether UDP datagrams carry a checksum (0, "none", if not).
    pub udp_checksum: bool,
    /// Zero padding up to this frame length (60: the Ethernet minimum
    /// without FCS).
    pub min_len: usize,
}

impl FrameBuilder {
    /// TTL 64, ident 0, DF clear, seq 1, window 65535, UDP checksums on,
    /// no padding.
    pub fn new(src_mac: MacAddr, dst_mac: MacAddr) -> FrameBuilder {
        FrameBuilder {
            src_mac,
            dst_mac,
            ttl: ipv4::DEFAULT_TTL,
            ident: 0,
            dont_fragment: false,
            seq: 1,
            window: 65535,
            udp_checksum: true,
            min_len: 0,
        }
    }

    /// A TCP segment with `flags` and `payload`.
    pub fn tcp(&self, src: u32, dst: u32, sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        self.l4(PROTO_TCP, src, dst, sport, dport, flags, payload)
    }

    /// A UDP datagram carrying `payload`.
    pub fn udp(&self, src: u32, dst: u32, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        self.l4(PROTO_UDP, src, dst, sport, dport, 0, payload)
    }

    /// A TCP (`proto` 6, with `tcp_flags`) or UDP (any other `proto`
    /// is written as given, with a UDP header) frame.
    #[allow(clippy::too_many_arguments)]
    pub fn l4(&self, proto: u8, src: u32, dst: u32, sport: u16, dport: u16, tcp_flags: u8, payload: &[u8]) -> Vec<u8> {
        let l4_header = if proto == PROTO_TCP { tcp::MIN_HEADER_LEN } else { udp::HEADER_LEN };
        let l4_len = l4_header + payload.len();
        let mut f = vec![0u8; (L4 + l4_len).max(self.min_len)];
        EthernetRepr { src: self.src_mac, dst: self.dst_mac, ethertype: ETHERTYPE_IPV4 }.emit(&mut f);
        let ip = Ipv4Repr {
            src,
            dst,
            protocol: proto,
            payload_len: l4_len as u16,
            ttl: self.ttl,
            tos: 0,
            ident: self.ident,
            flags_fragment: if self.dont_fragment { FLAG_DF } else { 0 },
        };
        ip.emit(&mut f[IPV4..]);
        let segment = &mut f[L4..L4 + l4_len];
        segment[l4_header..].copy_from_slice(payload);
        if proto == PROTO_TCP {
            let t = TcpRepr {
                src_port: sport,
                dst_port: dport,
                seq: self.seq,
                ack: 0,
                flags: tcp_flags,
                window: self.window,
            };
            t.emit(segment, ip.pseudo_header_sum());
        } else {
            let pseudo = self.udp_checksum.then(|| ip.pseudo_header_sum());
            UdpRepr { src_port: sport, dst_port: dport }.emit(segment, pseudo);
        }
        f
    }
}

/// The TCP/UDP checksum of a frame recomputed from scratch over the
/// pseudo-header and the whole segment (UDP's zero sent as 0xffff): the
/// oracle the incremental rewrites are tested against.
#[cfg(test)]
pub(crate) fn full_l4_checksum(f: &[u8]) -> u16 {
    use super::checksum::{fold, pseudo_header_sum, sum_words};
    let total = usize::from(super::get16(f, IP_LENGTH));
    let proto = f[IP_PROTOCOL];
    let mut l4 = f[L4..IPV4 + total].to_vec();
    let at = if proto == PROTO_TCP { tcp::field::CHECKSUM } else { udp::field::CHECKSUM };
    l4[at].fill(0);
    let src: [u8; 4] = f[IP_SRC_ADDR].try_into().expect("4 bytes");
    let dst: [u8; 4] = f[IP_DST_ADDR].try_into().expect("4 bytes");
    let c = !fold(pseudo_header_sum(src, dst, proto, l4.len() as u16) + sum_words(&l4));
    if proto == PROTO_UDP && c == 0 {
        0xffff
    } else {
        c
    }
}

#[cfg(test)]
mod tests {
    use super::super::checksum::{checksum, fold, sum_words};
    use super::super::get16;
    use super::*;

    #[test]
    fn built_frames_verify() {
        let b = FrameBuilder { min_len: 60, ..FrameBuilder::new(MacAddr([1; 6]), MacAddr([2; 6])) };
        for f in [b.tcp(0x0a00_0002, 0x0a00_0064, 40000, 80, tcp::FLAG_SYN, b"x"), b.udp(1, 2, 3, 4, b"hello")] {
            assert_eq!(f.len(), 60);
            assert_eq!(checksum(&f[IP_HEADER]), 0);
            let total = usize::from(get16(&f, IP_LENGTH));
            let ip = ipv4::Ipv4Packet::new_checked(&f[IPV4..IPV4 + total]).unwrap();
            let pseudo = Ipv4Repr::parse(&ip).pseudo_header_sum();
            assert_eq!(fold(pseudo + sum_words(&f[L4..IPV4 + total])), 0xffff);
        }
    }
}
