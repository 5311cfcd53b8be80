//! UDP headers (RFC 768).

use super::{checksum, get16, set16};

/// Where each field sits in the header.
pub mod field {
    use super::super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
}

pub const HEADER_LEN: usize = field::CHECKSUM.end;

#[derive(Debug)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// The length field must cover the header and fit in `buffer`.
    pub fn new_checked(buffer: T) -> Option<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return None;
        }
        let len = usize::from(get16(b, field::LENGTH));
        (len >= HEADER_LEN && len <= b.len()).then_some(UdpPacket { buffer })
    }
    pub fn src_port(&self) -> u16 {
        get16(self.buffer.as_ref(), field::SRC_PORT)
    }
    pub fn dst_port(&self) -> u16 {
        get16(self.buffer.as_ref(), field::DST_PORT)
    }
    pub fn checksum(&self) -> u16 {
        get16(self.buffer.as_ref(), field::CHECKSUM)
    }
}

/// A UDP header to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
}

impl UdpRepr {
    /// Writes the header into `datagram` (header and payload, the payload
    /// already in place; its length is the datagram's); with `pseudo` (the
    /// pseudo-header sum) the checksum, without it 0, "no checksum".
    pub fn emit(&self, datagram: &mut [u8], pseudo: Option<u64>) {
        let len = datagram.len() as u16;
        let b = &mut datagram[..HEADER_LEN];
        set16(b, field::SRC_PORT, self.src_port);
        set16(b, field::DST_PORT, self.dst_port);
        set16(b, field::LENGTH, len);
        set16(b, field::CHECKSUM, 0);
        if let Some(pseudo) = pseudo {
            let c = !checksum::fold(pseudo + checksum::sum_words(datagram));
            // 0 means "none" (RFC 768): a computed 0 goes out as all ones.
            set16(datagram, field::CHECKSUM, if c == 0 { 0xffff } else { c });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_field_checked() {
        let mut h = [0u8; 12];
        h[4..6].copy_from_slice(&12u16.to_be_bytes());
        assert!(UdpPacket::new_checked(&h[..]).is_some());
        h[4..6].copy_from_slice(&13u16.to_be_bytes());
        assert!(UdpPacket::new_checked(&h[..]).is_none());
        h[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert!(UdpPacket::new_checked(&h[..]).is_none());
    }
}
