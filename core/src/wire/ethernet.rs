//! Ethernet II frames.

use core::fmt;
use core::str::FromStr;

/// Where each field sits in the header.
pub mod field {
    use super::super::Field;
    pub const DST: Field = 0..6;
    pub const SRC: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
}

pub const HEADER_LEN: usize = field::ETHERTYPE.end;
/// The shortest frame on the wire, without FCS.
pub const MIN_FRAME_LEN: usize = 60;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// A 48-bit MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in &mut out {
            let p = parts.next().ok_or_else(|| format!("`{s}` is not a MAC address (need 6 hex bytes)"))?;
            if p.len() != 2 {
                return Err(format!("`{s}` is not a MAC address (need 6 two-digit hex bytes)"));
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| format!("`{s}` is not a MAC address (bad hex `{p}`)"))?;
        }
        if parts.next().is_some() {
            return Err(format!("`{s}` is not a MAC address (more than 6 bytes)"));
        }
        Ok(MacAddr(out))
    }
}

/// A read view of an Ethernet frame; setters need `AsMut`.
#[derive(Debug)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps `buffer` after checking it holds a whole header.
    pub fn new_checked(buffer: T) -> Option<Self> {
        (buffer.as_ref().len() >= HEADER_LEN).then_some(EthernetFrame { buffer })
    }
    pub fn dst(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), field::DST.start)
    }
    pub fn src(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), field::SRC.start)
    }
    pub fn ethertype(&self) -> u16 {
        super::get16(self.buffer.as_ref(), field::ETHERTYPE)
    }
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    pub fn set_dst(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&mac.0);
    }
    pub fn set_src(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&mac.0);
    }
    pub fn set_ethertype(&mut self, t: u16) {
        super::set16(self.buffer.as_mut(), field::ETHERTYPE, t);
    }
}

/// The MAC address at byte `at` of `b`.
#[inline(always)]
pub fn mac_at(b: &[u8], at: usize) -> MacAddr {
    MacAddr([b[at], b[at + 1], b[at + 2], b[at + 3], b[at + 4], b[at + 5]])
}

/// An Ethernet II header to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthernetRepr {
    pub src: MacAddr,
    pub dst: MacAddr,
    pub ethertype: u16,
}

impl EthernetRepr {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `buffer`.
    #[inline]
    pub fn emit(&self, buffer: &mut [u8]) {
        let b = &mut buffer[..HEADER_LEN];
        b[field::DST].copy_from_slice(&self.dst.0);
        b[field::SRC].copy_from_slice(&self.src.0);
        super::set16(b, field::ETHERTYPE, self.ethertype);
    }
}

/// Sets only the addresses of the frame in `buffer` (the next hop's, when
/// forwarding; the ethertype stays).
#[inline(always)]
pub fn set_addresses(buffer: &mut [u8], src: MacAddr, dst: MacAddr) {
    buffer[field::DST].copy_from_slice(&dst.0);
    buffer[field::SRC].copy_from_slice(&src.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parse_and_print() {
        let m: MacAddr = "02:00:00:0a:Bc:fe".parse().unwrap();
        assert_eq!(m.0, [2, 0, 0, 0x0a, 0xbc, 0xfe]);
        assert_eq!(m.to_string(), "02:00:00:0a:bc:fe");
        assert!("02:00:00:0a:bc".parse::<MacAddr>().is_err());
        assert!("02:00:00:0a:bc:fe:01".parse::<MacAddr>().is_err());
        assert!("02:00:00:0a:bc:zz".parse::<MacAddr>().is_err());
        assert!("2:0:0:a:bc:fe".parse::<MacAddr>().is_err());
    }

    #[test]
    fn frame_fields() {
        let mut buf = [0u8; 20];
        assert!(EthernetFrame::new_checked(&buf[..13]).is_none());
        let mut f = EthernetFrame::new_checked(&mut buf[..]).unwrap();
        f.set_dst(MacAddr::BROADCAST);
        f.set_src(MacAddr([1, 2, 3, 4, 5, 6]));
        f.set_ethertype(ETHERTYPE_ARP);
        assert_eq!(f.dst(), MacAddr::BROADCAST);
        assert_eq!(f.src(), MacAddr([1, 2, 3, 4, 5, 6]));
        assert_eq!(f.ethertype(), ETHERTYPE_ARP);
        assert_eq!(f.payload().len(), 6);
    }
}
