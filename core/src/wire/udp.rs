//! UDP headers (RFC 768).

pub const HEADER_LEN: usize = 8;
/// Offset of the checksum within the UDP header.
pub const CHECKSUM_OFFSET: usize = 6;

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
        let len = usize::from(u16::from_be_bytes([b[4], b[5]]));
        (len >= HEADER_LEN && len <= b.len()).then_some(UdpPacket { buffer })
    }
    pub fn src_port(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[0], b[1]])
    }
    pub fn dst_port(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[2], b[3]])
    }
    pub fn checksum(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[6], b[7]])
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
