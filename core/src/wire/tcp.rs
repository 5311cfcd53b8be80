//! TCP headers (RFC 9293), as far as a NAT needs them.

pub const MIN_HEADER_LEN: usize = 20;
pub const FLAG_FIN: u8 = 0x01;
pub const FLAG_SYN: u8 = 0x02;
pub const FLAG_RST: u8 = 0x04;
pub const FLAG_PSH: u8 = 0x08;
pub const FLAG_ACK: u8 = 0x10;

/// Offset of the checksum within the TCP header.
pub const CHECKSUM_OFFSET: usize = 16;

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
        let off = usize::from(b[12] >> 4) * 4;
        (off >= MIN_HEADER_LEN && off <= b.len()).then_some(TcpPacket { buffer })
    }
    pub fn src_port(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[0], b[1]])
    }
    pub fn dst_port(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[2], b[3]])
    }
    pub fn seq(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[13]
    }
    pub fn checksum(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[16], b[17]])
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
