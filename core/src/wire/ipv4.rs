//! IPv4 headers (RFC 791).

use super::{checksum, get16, get32, set16, set32};
use std::net::Ipv4Addr;

/// Where each field sits in the header.
pub mod field {
    use super::super::Field;
    /// Version (high nibble) and header length in words (low nibble).
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    /// Flags (3 bits) and fragment offset (13 bits).
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    /// TTL and protocol: the 16-bit word a TTL change adjusts the checksum by.
    pub const TTL_PROTOCOL: Field = 8..10;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
}

pub const MIN_HEADER_LEN: usize = field::DST_ADDR.end;
/// Version 4, five words: the only header the fast paths take.
pub const VER_IHL_NO_OPTIONS: u8 = 0x45;
/// Don't fragment.
pub const FLAG_DF: u16 = 0x4000;
/// More-fragments and the fragment offset: non-zero in any fragment.
pub const FRAGMENT_MASK: u16 = 0x3fff;
/// The TTL of packets lbd originates.
pub const DEFAULT_TTL: u8 = 64;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Why a buffer is not an IPv4 packet the engine can forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv4Error {
    /// Shorter than a minimal header.
    Truncated,
    /// Version is not 4 or IHL below 5.
    BadHeader,
    /// IHL above 5: options present.
    Options,
    /// Total length below the header length or beyond the buffer.
    BadTotalLength,
}

#[derive(Debug)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Validates version, IHL and total length once; accessors after this
    /// index without further checks. Options are rejected: the engine's
    /// fast path assumes a 20-byte header.
    pub fn new_checked(buffer: T) -> Result<Self, Ipv4Error> {
        let len = buffer.as_ref().len();
        Self::new_checked_in(buffer, len)
    }

    /// As [`Self::new_checked`] for a packet of `packet_len` bytes of which
    /// `buffer` holds the first part (at least the header).
    pub fn new_checked_in(buffer: T, packet_len: usize) -> Result<Self, Ipv4Error> {
        let b = buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(Ipv4Error::Truncated);
        }
        let ihl = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        if b[field::VER_IHL] >> 4 != 4 || ihl < MIN_HEADER_LEN {
            return Err(Ipv4Error::BadHeader);
        }
        if ihl > MIN_HEADER_LEN {
            return Err(Ipv4Error::Options);
        }
        let total = usize::from(get16(b, field::LENGTH));
        if total < ihl || total > packet_len {
            return Err(Ipv4Error::BadTotalLength);
        }
        Ok(Ipv4Packet { buffer })
    }

    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }
    pub fn total_len(&self) -> u16 {
        get16(self.buffer.as_ref(), field::LENGTH)
    }
    pub fn ident(&self) -> u16 {
        get16(self.buffer.as_ref(), field::IDENT)
    }
    /// More-fragments set or a non-zero fragment offset.
    pub fn is_fragment(&self) -> bool {
        get16(self.buffer.as_ref(), field::FLG_OFF) & FRAGMENT_MASK != 0
    }
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }
    pub fn checksum(&self) -> u16 {
        get16(self.buffer.as_ref(), field::CHECKSUM)
    }
    pub fn src_u32(&self) -> u32 {
        get32(self.buffer.as_ref(), field::SRC_ADDR)
    }
    pub fn dst_u32(&self) -> u32 {
        get32(self.buffer.as_ref(), field::DST_ADDR)
    }
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.src_u32())
    }
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.dst_u32())
    }
    /// True when the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        let b = self.buffer.as_ref();
        if let Some(h) = b.get(..MIN_HEADER_LEN).filter(|_| self.header_len() == MIN_HEADER_LEN) {
            return checksum::fold(checksum::sum_ipv4_header(h.try_into().expect("20 bytes"))) == 0xffff;
        }
        checksum::fold(checksum::sum_words(&b[..self.header_len()])) == 0xffff
    }
    /// The L4 payload, bounded by the total length (trailing Ethernet
    /// padding excluded) and by the buffer (a multi-segment packet's first
    /// segment).
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[self.header_len()..usize::from(self.total_len()).min(b.len())]
    }
}

/// An option-less IPv4 header to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src: u32,
    pub dst: u32,
    pub protocol: u8,
    /// Bytes after the header.
    pub payload_len: u16,
    pub ttl: u8,
    pub tos: u8,
    pub ident: u16,
    /// The flags and fragment offset word, as sent.
    pub flags_fragment: u16,
}

impl Ipv4Repr {
    /// A header for a packet lbd originates: not fragmented, DF set, TTL 64.
    pub fn originated(src: u32, dst: u32, protocol: u8, payload_len: u16) -> Ipv4Repr {
        Ipv4Repr { src, dst, protocol, payload_len, ttl: DEFAULT_TTL, tos: 0, ident: 0, flags_fragment: FLAG_DF }
    }

    /// The header of a validated (option-less) packet.
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) -> Ipv4Repr {
        let b = p.buffer.as_ref();
        Ipv4Repr {
            src: p.src_u32(),
            dst: p.dst_u32(),
            protocol: p.protocol(),
            payload_len: p.total_len() - MIN_HEADER_LEN as u16,
            ttl: p.ttl(),
            tos: b[field::TOS],
            ident: p.ident(),
            flags_fragment: get16(b, field::FLG_OFF),
        }
    }

    /// Writes the 20-byte header, checksum included, into `buffer`. The
    /// checksum is summed from the fields, not read back from the bytes
    /// just written (loads over those stores would wait for them: this
    /// runs for every SYN the SYN proxy answers).
    pub fn emit(&self, buffer: &mut [u8]) {
        let b = &mut buffer[..MIN_HEADER_LEN];
        let total_len = MIN_HEADER_LEN as u16 + self.payload_len;
        let word = |hi: u8, lo: u8| u64::from(u16::from_be_bytes([hi, lo]));
        let sum = word(VER_IHL_NO_OPTIONS, self.tos)
            + u64::from(total_len)
            + u64::from(self.ident)
            + u64::from(self.flags_fragment)
            + word(self.ttl, self.protocol)
            + u64::from(self.src >> 16)
            + u64::from(self.src & 0xffff)
            + u64::from(self.dst >> 16)
            + u64::from(self.dst & 0xffff);
        b[field::VER_IHL] = VER_IHL_NO_OPTIONS;
        b[field::TOS] = self.tos;
        set16(b, field::LENGTH, total_len);
        set16(b, field::IDENT, self.ident);
        set16(b, field::FLG_OFF, self.flags_fragment);
        b[field::TTL] = self.ttl;
        b[field::PROTOCOL] = self.protocol;
        set16(b, field::CHECKSUM, !checksum::fold(sum));
        set32(b, field::SRC_ADDR, self.src);
        set32(b, field::DST_ADDR, self.dst);
    }

    /// The sum of the TCP/UDP pseudo-header for this packet.
    pub fn pseudo_header_sum(&self) -> u64 {
        checksum::pseudo_header_sum(self.src.to_be_bytes(), self.dst.to_be_bytes(), self.protocol, self.payload_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Vec<u8> {
        let mut h = vec![0x45, 0, 0, 28, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 2, 10, 0, 0, 100];
        h.extend_from_slice(&[0u8; 8]);
        let c = checksum::checksum(&h[..20]);
        set16(&mut h, field::CHECKSUM, c);
        h
    }

    proptest::proptest! {
        /// The checksum `emit` sums from the fields is the one the bytes
        /// it wrote give, and parsing the header gives the fields back.
        #[test]
        fn emit_checksums_what_it_writes(
            src in proptest::prelude::any::<u32>(), dst in proptest::prelude::any::<u32>(),
            protocol in proptest::prelude::any::<u8>(), payload_len in 0u16..=(u16::MAX - 20),
            ttl in proptest::prelude::any::<u8>(), tos in proptest::prelude::any::<u8>(),
            ident in proptest::prelude::any::<u16>(), flags_fragment in proptest::prelude::any::<u16>(),
        ) {
            let r = Ipv4Repr { src, dst, protocol, payload_len, ttl, tos, ident, flags_fragment };
            let mut b = [0xa5u8; 20];
            r.emit(&mut b);
            proptest::prop_assert_eq!(checksum::fold(checksum::sum_words(&b)), 0xffff);
            let mut full = b;
            set16(&mut full, field::CHECKSUM, 0);
            proptest::prop_assert_eq!(get16(&b, field::CHECKSUM), checksum::checksum(&full));
            proptest::prop_assert_eq!((get32(&b, field::SRC_ADDR), get32(&b, field::DST_ADDR)), (src, dst));
            proptest::prop_assert_eq!((b[field::TTL], b[field::PROTOCOL], b[field::TOS]), (ttl, protocol, tos));
            proptest::prop_assert_eq!(get16(&b, field::LENGTH), payload_len + 20);
            proptest::prop_assert_eq!((get16(&b, field::IDENT), get16(&b, field::FLG_OFF)), (ident, flags_fragment));
        }
    }

    #[test]
    fn parse_fields() {
        let h = header();
        let p = Ipv4Packet::new_checked(&h[..]).unwrap();
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 28);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), PROTO_UDP);
        assert_eq!(p.src(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.dst(), Ipv4Addr::new(10, 0, 0, 100));
        assert!(!p.is_fragment());
        assert!(p.verify_checksum());
        assert_eq!(p.payload().len(), 8);
    }

    #[test]
    fn rejects_bad_headers() {
        let h = header();
        assert_eq!(Ipv4Packet::new_checked(&h[..19]).unwrap_err(), Ipv4Error::Truncated);
        let mut v6 = h.clone();
        v6[0] = 0x65;
        assert_eq!(Ipv4Packet::new_checked(&v6[..]).unwrap_err(), Ipv4Error::BadHeader);
        let mut ihl4 = h.clone();
        ihl4[0] = 0x44;
        assert_eq!(Ipv4Packet::new_checked(&ihl4[..]).unwrap_err(), Ipv4Error::BadHeader);
        let mut opts = h.clone();
        opts[0] = 0x46;
        assert_eq!(Ipv4Packet::new_checked(&opts[..]).unwrap_err(), Ipv4Error::Options);
        let mut long = h.clone();
        long[3] = 29;
        assert_eq!(Ipv4Packet::new_checked(&long[..]).unwrap_err(), Ipv4Error::BadTotalLength);
        let mut short = h.clone();
        short[3] = 19;
        assert_eq!(Ipv4Packet::new_checked(&short[..]).unwrap_err(), Ipv4Error::BadTotalLength);
        let mut frag = h;
        frag[6] = 0x20; // MF
        assert!(Ipv4Packet::new_checked(&frag[..]).unwrap().is_fragment());
    }

    #[test]
    fn repr_round_trip() {
        let h = header();
        let p = Ipv4Packet::new_checked(&h[..]).unwrap();
        let r = Ipv4Repr::parse(&p);
        assert_eq!((r.ident, r.flags_fragment, r.payload_len, r.ttl), (0x1234, FLAG_DF, 8, 64));
        let mut out = h.clone();
        out[..20].fill(0);
        r.emit(&mut out);
        assert_eq!(out, h);
    }
}
