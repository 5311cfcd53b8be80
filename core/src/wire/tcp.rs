//! TCP headers (RFC 9293), as far as a NAT needs them.

use super::{checksum, get16, get32, set16, set32};

/// Where each field sits in the header.
pub mod field {
    use super::super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUM: Field = 4..8;
    pub const ACK_NUM: Field = 8..12;
    /// Data offset in words (high nibble).
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
}

pub const MIN_HEADER_LEN: usize = field::URGENT.end;
pub const FLAG_FIN: u8 = 0x01;
pub const FLAG_SYN: u8 = 0x02;
pub const FLAG_RST: u8 = 0x04;
pub const FLAG_PSH: u8 = 0x08;
pub const FLAG_ACK: u8 = 0x10;

#[derive(Debug)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Needs a whole header, including options, inside `buffer`.
    pub fn new_checked(buffer: T) -> Option<Self> {
        let b = buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return None;
        }
        let off = usize::from(b[field::DATA_OFF] >> 4) * 4;
        (off >= MIN_HEADER_LEN && off <= b.len()).then_some(TcpPacket { buffer })
    }
    pub fn src_port(&self) -> u16 {
        get16(self.buffer.as_ref(), field::SRC_PORT)
    }
    pub fn dst_port(&self) -> u16 {
        get16(self.buffer.as_ref(), field::DST_PORT)
    }
    pub fn seq(&self) -> u32 {
        get32(self.buffer.as_ref(), field::SEQ_NUM)
    }
    pub fn ack(&self) -> u32 {
        get32(self.buffer.as_ref(), field::ACK_NUM)
    }
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }
    pub fn checksum(&self) -> u16 {
        get16(self.buffer.as_ref(), field::CHECKSUM)
    }
}

/// An option-less TCP header to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
}

impl TcpRepr {
    /// Writes the header into the first [`MIN_HEADER_LEN`] bytes of
    /// `segment`, then the checksum over the whole of `segment` (header and
    /// payload, the payload already in place) and the pseudo-header sum
    /// `pseudo` (see [`super::ipv4::Ipv4Repr::pseudo_header_sum`]).
    pub fn emit(&self, segment: &mut [u8], pseudo: u64) {
        let b = &mut segment[..MIN_HEADER_LEN];
        set16(b, field::SRC_PORT, self.src_port);
        set16(b, field::DST_PORT, self.dst_port);
        set32(b, field::SEQ_NUM, self.seq);
        set32(b, field::ACK_NUM, self.ack);
        b[field::DATA_OFF] = ((MIN_HEADER_LEN / 4) as u8) << 4;
        b[field::FLAGS] = self.flags;
        set16(b, field::WINDOW, self.window);
        set16(b, field::CHECKSUM, 0);
        set16(b, field::URGENT, 0);
        let c = !checksum::fold(pseudo + checksum::sum_words(segment));
        set16(segment, field::CHECKSUM, c);
    }

    /// The RST answering the segment `to` (RFC 9293 3.10.7.1) that carried
    /// `seg_len` sequence numbers: an ACK is answered with seq = its ack
    /// number; anything else with seq 0 and an ACK of what it carried.
    pub fn reset_for<T: AsRef<[u8]>>(to: &TcpPacket<T>, seg_len: u32) -> TcpRepr {
        let (seq, ack, flags) = if to.flags() & FLAG_ACK != 0 {
            (to.ack(), 0, FLAG_RST)
        } else {
            (0, to.seq().wrapping_add(seg_len), FLAG_RST | FLAG_ACK)
        };
        TcpRepr { src_port: to.dst_port(), dst_port: to.src_port(), seq, ack, flags, window: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks() {
        let mut h = [0u8; 24];
        h[0..2].copy_from_slice(&1234u16.to_be_bytes());
        h[2..4].copy_from_slice(&80u16.to_be_bytes());
        h[12] = 6 << 4; // 24-byte header with options
        h[13] = FLAG_SYN | FLAG_ACK;
        let t = TcpPacket::new_checked(&h[..]).unwrap();
        assert_eq!((t.src_port(), t.dst_port()), (1234, 80));
        assert_eq!(t.flags(), FLAG_SYN | FLAG_ACK);
        assert!(TcpPacket::new_checked(&h[..23]).is_none());
        h[12] = 4 << 4;
        assert!(TcpPacket::new_checked(&h[..]).is_none());
    }
}
