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
