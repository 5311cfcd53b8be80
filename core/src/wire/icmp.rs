//! ICMP (RFC 792): echo, which lbd answers, and the errors it forwards
//! (rewriting the datagram they quote) and sends (RFC 1812 4.3.2).

use super::{checksum, get16, set16};

/// Where each field sits in the header.
pub mod field {
    use super::super::Field;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    /// Type and code: the word a type change adjusts the checksum by.
    pub const TYPE_CODE: Field = 0..2;
    pub const CHECKSUM: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const SEQ_NUM: Field = 6..8;
}

pub const ECHO_REPLY: u8 = 0;
pub const ECHO_REQUEST: u8 = 8;
pub const HEADER_LEN: usize = field::SEQ_NUM.end;

pub const DEST_UNREACHABLE: u8 = 3;
pub const SOURCE_QUENCH: u8 = 4;
pub const REDIRECT: u8 = 5;
pub const TIME_EXCEEDED: u8 = 11;
pub const PARAMETER_PROBLEM: u8 = 12;
/// Destination unreachable, fragmentation needed and DF set (RFC 1191).
pub const CODE_FRAG_NEEDED: u8 = 4;
/// Time exceeded: TTL exceeded in transit.
pub const CODE_TTL_EXCEEDED: u8 = 0;
/// Where an error's quoted datagram starts: after the 8-byte header.
pub const QUOTE: usize = HEADER_LEN;
/// Next-hop MTU of a fragmentation-needed error (RFC 1191), in the word
/// echo uses for its sequence number.
pub const NEXT_HOP_MTU: super::Field = field::SEQ_NUM;
/// How much of the offending datagram lbd quotes in its own errors: the
/// IPv4 header (lbd forwards none with options) and the first 8 bytes of
/// its payload (RFC 792), which hold the ports of TCP and UDP.
pub const QUOTED_LEN: usize = super::ipv4::MIN_HEADER_LEN + 8;
/// Length of an error lbd sends, from the ICMP header on.
pub const ERROR_LEN: usize = HEADER_LEN + QUOTED_LEN;

/// Whether an ICMP message of type `t` is an error (RFC 1812 4.3.2.7:
/// never answered with another error).
pub fn is_error(t: u8) -> bool {
    matches!(t, DEST_UNREACHABLE | SOURCE_QUENCH | REDIRECT | TIME_EXCEEDED | PARAMETER_PROBLEM)
}

/// Whether an error of type `t` is one lbd forwards to the flow it is
/// about (destination unreachable, fragmentation needed among them, and
/// time exceeded).
pub fn is_forwarded_error(t: u8) -> bool {
    matches!(t, DEST_UNREACHABLE | TIME_EXCEEDED)
}

/// Writes an error message of `ty`/`code` into `message` (at least
/// [`ERROR_LEN`] bytes): `word` is the second header word (the next-hop
/// MTU of fragmentation needed, else zero), `quoted` the start of the
/// offending datagram (IPv4 header and at least 8 bytes), checksum
/// included.
pub fn emit_error(message: &mut [u8], ty: u8, code: u8, word: u32, quoted: &[u8]) {
    let m = &mut message[..ERROR_LEN];
    m[field::TYPE] = ty;
    m[field::CODE] = code;
    set16(m, field::CHECKSUM, 0);
    m[4..8].copy_from_slice(&word.to_be_bytes());
    m[QUOTE..].copy_from_slice(&quoted[..QUOTED_LEN]);
    let c = checksum::checksum(m);
    set16(m, field::CHECKSUM, c);
}

/// Whether `message` (at least [`HEADER_LEN`] bytes) is an echo request.
pub fn is_echo_request(message: &[u8]) -> bool {
    message[field::TYPE] == ECHO_REQUEST && message[field::CODE] == 0
}

/// Turns the echo request `message` into its reply in place: identifier,
/// sequence number and data stay, the type changes and the checksum is
/// patched for that one word (RFC 1624), so the data is never read.
pub fn echo_request_into_reply(message: &mut [u8]) {
    let old = get16(message, field::TYPE_CODE);
    message[field::TYPE] = ECHO_REPLY;
    let new = get16(message, field::TYPE_CODE);
    let c = checksum::adjust16(get16(message, field::CHECKSUM), old, new);
    set16(message, field::CHECKSUM, c);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emitted_errors_verify_and_quote_the_datagram() {
        let quoted: Vec<u8> = (0..40u8).collect();
        let mut m = [0xaau8; ERROR_LEN];
        emit_error(&mut m, DEST_UNREACHABLE, CODE_FRAG_NEEDED, 1400, &quoted);
        assert_eq!((m[0], m[1]), (3, 4));
        assert_eq!(&m[4..8], &[0, 0, 0x05, 0x78]);
        assert_eq!(get16(&m, NEXT_HOP_MTU), 1400);
        assert_eq!(&m[QUOTE..], &quoted[..28]);
        assert_eq!(checksum::fold(checksum::sum_words(&m)), 0xffff);
        assert!(is_error(m[0]) && is_forwarded_error(m[0]));
        assert!(!is_error(ECHO_REQUEST) && !is_error(ECHO_REPLY) && !is_forwarded_error(REDIRECT));
    }

    #[test]
    fn reply_keeps_a_valid_checksum() {
        let mut m = [ECHO_REQUEST, 0, 0, 0, 0x12, 0x34, 0, 1, b'p', b'i', b'n', b'g'];
        let c = checksum::checksum(&m);
        set16(&mut m, field::CHECKSUM, c);
        assert!(is_echo_request(&m));
        echo_request_into_reply(&mut m);
        assert!(!is_echo_request(&m));
        assert_eq!(m[field::TYPE], ECHO_REPLY);
        assert_eq!(checksum::fold(checksum::sum_words(&m)), 0xffff);
        assert_eq!(&m[4..], &[0x12, 0x34, 0, 1, b'p', b'i', b'n', b'g']);
    }
}
