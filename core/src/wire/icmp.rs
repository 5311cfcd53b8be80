//! ICMP echo (RFC 792), the only ICMP lbd answers.

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
