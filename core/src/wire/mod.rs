//! Zero-copy views of the protocol headers the engine reads and rewrites.
//!
//! Each view checks the length once in `new_checked`; accessors after that
//! index without further checks, and setters exist only when the buffer is
//! mutable.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod ipv4;
pub mod tcp;
pub mod udp;

pub use ethernet::MacAddr;

/// ICMP echo (RFC 792): types and header length.
pub mod icmp {
    pub const ECHO_REPLY: u8 = 0;
    pub const ECHO_REQUEST: u8 = 8;
    pub const HEADER_LEN: usize = 8;
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
