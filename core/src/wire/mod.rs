//! The one place that knows packet layout: per header, where each field
//! sits (`<header>::field`, constant ranges as in smoltcp), zero-copy views,
//! and a `Repr` with `emit` for every header lbd writes itself.
//!
//! Each view checks the length once in `new_checked`; accessors after that
//! index without further checks, and setters exist only when the buffer is
//! mutable. The fast paths (the classifier, the NAT rewrite) read the same
//! field constants through [`frame`] on fixed-size arrays, so their offsets
//! are compile-time constants and their bounds checks fold away.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod frame;
pub mod icmp;
pub mod ipv4;
pub mod tcp;
pub mod tcp_options;
pub mod udp;

pub use ethernet::MacAddr;

/// A field's byte range within its header.
pub type Field = core::ops::Range<usize>;

/// The big-endian 16-bit field `f` of `b`.
#[inline(always)]
pub fn get16(b: &[u8], f: Field) -> u16 {
    u16::from_be_bytes([b[f.start], b[f.start + 1]])
}

/// The big-endian 32-bit field `f` of `b`.
#[inline(always)]
pub fn get32(b: &[u8], f: Field) -> u32 {
    u32::from_be_bytes([b[f.start], b[f.start + 1], b[f.start + 2], b[f.start + 3]])
}

#[inline(always)]
pub fn set16(b: &mut [u8], f: Field, v: u16) {
    b[f.start..f.start + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline(always)]
pub fn set32(b: &mut [u8], f: Field, v: u32) {
    b[f.start..f.start + 4].copy_from_slice(&v.to_be_bytes());
}

/// `f` moved `by` bytes further: a header field's place in a whole frame.
#[inline(always)]
pub const fn at(by: usize, f: Field) -> Field {
    by + f.start..by + f.end
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]
        /// Every view accepts or rejects any byte string without panicking,
        /// and every accessor of an accepted view stays in bounds.
        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..128), claimed in 0usize..256) {
            if let Some(e) = ethernet::EthernetFrame::new_checked(&data[..]) {
                let _ = (e.dst(), e.src(), e.ethertype(), e.payload().len());
            }
            if let Some(a) = arp::ArpPacket::new_checked(&data[..]) {
                let _ = (a.operation(), a.sender_mac(), a.sender_ip(), a.target_mac(), a.target_ip());
            }
            for ip in [ipv4::Ipv4Packet::new_checked(&data[..]), ipv4::Ipv4Packet::new_checked_in(&data[..], claimed.max(data.len()))].into_iter().flatten() {
                let _ = (ip.header_len(), ip.total_len(), ip.ident(), ip.is_fragment(), ip.ttl(), ip.protocol());
                let _ = (ip.src(), ip.dst(), ip.verify_checksum(), ip.payload().len());
            }
            if let Some(t) = tcp::TcpPacket::new_checked(&data[..]) {
                let _ = (t.src_port(), t.dst_port(), t.seq(), t.flags(), t.checksum());
            }
            if let Some(u) = udp::UdpPacket::new_checked(&data[..]) {
                let _ = (u.src_port(), u.dst_port(), u.checksum());
            }
        }
    }
}
