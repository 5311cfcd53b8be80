//! ARP for Ethernet and IPv4 (RFC 826), the only kind the engine speaks.

use super::ethernet::{mac_at, MacAddr, ETHERTYPE_IPV4};
use super::{get16, get32, set16, set32};
use std::net::Ipv4Addr;

/// Where each field sits in the packet.
pub mod field {
    use super::super::Field;
    pub const HTYPE: Field = 0..2;
    pub const PTYPE: Field = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Field = 6..8;
    pub const SHA: Field = 8..14;
    pub const SPA: Field = 14..18;
    pub const THA: Field = 18..24;
    pub const TPA: Field = 24..28;
}

pub const PACKET_LEN: usize = field::TPA.end;
/// Hardware type Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;
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
        let ok = get16(b, field::HTYPE) == HTYPE_ETHERNET
            && get16(b, field::PTYPE) == ETHERTYPE_IPV4
            && b[field::HLEN] == 6
            && b[field::PLEN] == 4;
        ok.then_some(ArpPacket { buffer })
    }
    pub fn operation(&self) -> u16 {
        get16(self.buffer.as_ref(), field::OPER)
    }
    pub fn sender_mac(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), field::SHA.start)
    }
    pub fn sender_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(get32(self.buffer.as_ref(), field::SPA))
    }
    pub fn target_mac(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), field::THA.start)
    }
    pub fn target_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(get32(self.buffer.as_ref(), field::TPA))
    }
}

/// An Ethernet/IPv4 ARP packet to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpRepr {
    pub op: u16,
    pub sender_mac: MacAddr,
    pub sender_ip: u32,
    pub target_mac: MacAddr,
    pub target_ip: u32,
}

impl ArpRepr {
    /// Writes the packet into the first [`PACKET_LEN`] bytes of `buffer`.
    pub fn emit(&self, buffer: &mut [u8]) {
        let b = &mut buffer[..PACKET_LEN];
        set16(b, field::HTYPE, HTYPE_ETHERNET);
        set16(b, field::PTYPE, ETHERTYPE_IPV4);
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
        set16(b, field::OPER, self.op);
        b[field::SHA].copy_from_slice(&self.sender_mac.0);
        set32(b, field::SPA, self.sender_ip);
        b[field::THA].copy_from_slice(&self.target_mac.0);
        set32(b, field::TPA, self.target_ip);
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
        ArpRepr { op, sender_mac, sender_ip: sender_ip.into(), target_mac, target_ip: target_ip.into() }
            .emit(buffer.as_mut());
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
