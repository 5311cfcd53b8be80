//! IPv4 headers (RFC 791).

use super::checksum;
use std::net::Ipv4Addr;

pub const MIN_HEADER_LEN: usize = 20;
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
        let ihl = usize::from(b[0] & 0x0f) * 4;
        if b[0] >> 4 != 4 || ihl < MIN_HEADER_LEN {
            return Err(Ipv4Error::BadHeader);
        }
        if ihl > MIN_HEADER_LEN {
            return Err(Ipv4Error::Options);
        }
        let total = usize::from(u16::from_be_bytes([b[2], b[3]]));
        if total < ihl || total > packet_len {
            return Err(Ipv4Error::BadTotalLength);
        }
        Ok(Ipv4Packet { buffer })
    }

    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[0] & 0x0f) * 4
    }
    pub fn total_len(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[2], b[3]])
    }
    pub fn ident(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[4], b[5]])
    }
    /// More-fragments set or a non-zero fragment offset.
    pub fn is_fragment(&self) -> bool {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[6], b[7]]) & 0x3fff != 0
    }
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[8]
    }
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[9]
    }
    pub fn checksum(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[10], b[11]])
    }
    pub fn src_u32(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[12], b[13], b[14], b[15]])
    }
    pub fn dst_u32(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[16], b[17], b[18], b[19]])
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

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    pub fn set_checksum(&mut self, c: u16) {
        self.buffer.as_mut()[10..12].copy_from_slice(&c.to_be_bytes());
    }
    /// Decrements TTL and patches the header checksum incrementally.
    pub fn decrement_ttl(&mut self) {
        let b = self.buffer.as_mut();
        let old = u16::from_be_bytes([b[8], b[9]]);
        b[8] = b[8].wrapping_sub(1);
        let new = u16::from_be_bytes([b[8], b[9]]);
        let c = checksum::adjust16(u16::from_be_bytes([b[10], b[11]]), old, new);
        b[10..12].copy_from_slice(&c.to_be_bytes());
    }
    /// Rewrites the source address, patching the header checksum.
    pub fn set_src_adjust(&mut self, addr: u32) {
        let old = self.src_u32();
        self.buffer.as_mut()[12..16].copy_from_slice(&addr.to_be_bytes());
        let c = checksum::adjust32(self.checksum(), old, addr);
        self.set_checksum(c);
    }
    /// Rewrites the destination address, patching the header checksum.
    pub fn set_dst_adjust(&mut self, addr: u32) {
        let old = self.dst_u32();
        self.buffer.as_mut()[16..20].copy_from_slice(&addr.to_be_bytes());
        let c = checksum::adjust32(self.checksum(), old, addr);
        self.set_checksum(c);
    }
    /// Sets both addresses without touching the checksum (callers refill it).
    pub fn set_addrs_raw(&mut self, src: u32, dst: u32) {
        let b = self.buffer.as_mut();
        b[12..16].copy_from_slice(&src.to_be_bytes());
        b[16..20].copy_from_slice(&dst.to_be_bytes());
    }
    pub fn set_ttl_raw(&mut self, ttl: u8) {
        self.buffer.as_mut()[8] = ttl;
    }
    /// Recomputes the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len();
        let c = checksum::checksum(&self.buffer.as_ref()[..hl]);
        self.set_checksum(c);
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, total) = (self.header_len(), usize::from(self.total_len()));
        let b = self.buffer.as_mut();
        let end = total.min(b.len());
        &mut b[hl..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Vec<u8> {
        let mut h = vec![0x45, 0, 0, 28, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 2, 10, 0, 0, 100];
        h.extend_from_slice(&[0u8; 8]);
        let mut p = Ipv4Packet::new_checked(&mut h[..]).unwrap();
        p.fill_checksum();
        h
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
    fn incremental_rewrites_keep_checksum_valid() {
        let mut h = header();
        let mut p = Ipv4Packet::new_checked(&mut h[..]).unwrap();
        p.decrement_ttl();
        p.set_dst_adjust(u32::from(Ipv4Addr::new(10, 1, 0, 11)));
        p.set_src_adjust(u32::from(Ipv4Addr::new(192, 168, 7, 9)));
        assert!(p.verify_checksum());
        assert_eq!(p.ttl(), 63);
        let c = p.checksum();
        p.fill_checksum();
        assert_eq!(p.checksum(), c);
    }
}
