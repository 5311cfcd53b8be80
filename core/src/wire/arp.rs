//! ARP for Ethernet and IPv4 (RFC 826), the only kind the engine speaks.

use super::ethernet::MacAddr;
use std::net::Ipv4Addr;

pub const PACKET_LEN: usize = 28;
pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;

#[derive(Debug)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Accepts only Ethernet/IPv4 ARP with the right address lengths.
    pub fn new_checked(buffer: T) -> Option<Self> {
        let b = buffer.as_ref();
        if b.len() < PACKET_LEN {
            return None;
        }
        let ok = b[0..2] == [0, 1] && b[2..4] == [0x08, 0x00] && b[4] == 6 && b[5] == 4;
        ok.then_some(ArpPacket { buffer })
    }
    pub fn operation(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[6], b[7]])
    }
    pub fn sender_mac(&self) -> MacAddr {
        let b = self.buffer.as_ref();
        MacAddr([b[8], b[9], b[10], b[11], b[12], b[13]])
    }
    pub fn sender_ip(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[14], b[15], b[16], b[17])
    }
    pub fn target_mac(&self) -> MacAddr {
        let b = self.buffer.as_ref();
        MacAddr([b[18], b[19], b[20], b[21], b[22], b[23]])
    }
    pub fn target_ip(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[24], b[25], b[26], b[27])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Writes a complete Ethernet/IPv4 ARP packet into `buffer`
    /// (at least [`PACKET_LEN`] bytes).
    pub fn emit(
        mut buffer: T,
        op: u16,
        sender_mac: MacAddr,
        sender_ip: Ipv4Addr,
        target_mac: MacAddr,
        target_ip: Ipv4Addr,
    ) -> Self {
        let b = &mut buffer.as_mut()[..PACKET_LEN];
        b[0..2].copy_from_slice(&1u16.to_be_bytes());
        b[2..4].copy_from_slice(&0x0800u16.to_be_bytes());
        b[4] = 6;
        b[5] = 4;
        b[6..8].copy_from_slice(&op.to_be_bytes());
        b[8..14].copy_from_slice(&sender_mac.0);
        b[14..18].copy_from_slice(&sender_ip.octets());
        b[18..24].copy_from_slice(&target_mac.0);
        b[24..28].copy_from_slice(&target_ip.octets());
        ArpPacket { buffer }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_then_parse() {
        let mut buf = [0u8; 30];
        let a = Ipv4Addr::new(10, 0, 0, 1);
        let b = Ipv4Addr::new(10, 0, 0, 2);
        ArpPacket::emit(&mut buf[..], OP_REPLY, MacAddr([1; 6]), a, MacAddr([2; 6]), b);
        let p = ArpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(p.operation(), OP_REPLY);
        assert_eq!(p.sender_mac(), MacAddr([1; 6]));
        assert_eq!(p.sender_ip(), a);
        assert_eq!(p.target_mac(), MacAddr([2; 6]));
        assert_eq!(p.target_ip(), b);
        assert!(ArpPacket::new_checked(&buf[..27]).is_none());
        buf[4] = 8; // hardware length of something else
        assert!(ArpPacket::new_checked(&buf[..]).is_none());
    }
}
