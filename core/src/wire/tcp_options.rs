//! TCP options the SYN proxy reads and writes (RFC 9293 3.2, RFC 7323,
//! RFC 2018): MSS, window scale, SACK permitted, SACK blocks and
//! timestamps. Parsing never trusts a length byte: an option that runs
//! past the header ends the walk.

pub const KIND_EOL: u8 = 0;
pub const KIND_NOP: u8 = 1;
pub const KIND_MSS: u8 = 2;
pub const KIND_WSCALE: u8 = 3;
pub const KIND_SACK_PERMITTED: u8 = 4;
pub const KIND_SACK: u8 = 5;
pub const KIND_TIMESTAMP: u8 = 8;

/// What a segment's options say, and where the ones rewritten later sit
/// (offsets into the options bytes given to [`parse`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    pub sack_permitted: bool,
    /// (TSval, TSecr).
    pub timestamp: Option<(u32, u32)>,
    /// Offset of the TSval (TSecr follows at +4).
    pub timestamp_at: Option<usize>,
    /// Offset of the first SACK block and the number of blocks.
    pub sack_at: Option<(usize, usize)>,
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Reads the options bytes of a TCP header (after its first 20 bytes).
pub fn parse(opts: &[u8]) -> Options {
    let mut o = Options::default();
    let mut i = 0;
    while i < opts.len() {
        let kind = opts[i];
        if kind == KIND_EOL {
            break;
        }
        if kind == KIND_NOP {
            i += 1;
            continue;
        }
        let Some(&len) = opts.get(i + 1) else { break };
        let len = usize::from(len);
        if len < 2 || i + len > opts.len() {
            break;
        }
        let body = &opts[i + 2..i + len];
        match (kind, len) {
            (KIND_MSS, 4) => o.mss = Some(u16::from_be_bytes([body[0], body[1]])),
            (KIND_WSCALE, 3) => o.wscale = Some(body[0]),
            (KIND_SACK_PERMITTED, 2) => o.sack_permitted = true,
            (KIND_TIMESTAMP, 10) => {
                o.timestamp = Some((be32(body), be32(&body[4..])));
                o.timestamp_at = Some(i + 2);
            }
            (KIND_SACK, _) if (len - 2) % 8 == 0 && len > 2 => o.sack_at = Some((i + 2, (len - 2) / 8)),
            _ => {}
        }
        i += len;
    }
    o
}

/// The options of a SYN or SYN-ACK lbd sends, in Linux's order and
/// alignment; returns the bytes written (a multiple of 4, at most 20).
pub fn write_syn(
    out: &mut [u8],
    mss: u16,
    sack_permitted: bool,
    timestamp: Option<(u32, u32)>,
    wscale: Option<u8>,
) -> usize {
    let mut n = 0;
    let mut put = |b: &[u8]| {
        out[n..n + b.len()].copy_from_slice(b);
        n += b.len();
    };
    let m = mss.to_be_bytes();
    put(&[KIND_MSS, 4, m[0], m[1]]);
    match (sack_permitted, timestamp) {
        (true, Some(_)) => put(&[KIND_SACK_PERMITTED, 2, KIND_TIMESTAMP, 10]),
        (false, Some(_)) => put(&[KIND_NOP, KIND_NOP, KIND_TIMESTAMP, 10]),
        (true, None) => put(&[KIND_NOP, KIND_NOP, KIND_SACK_PERMITTED, 2]),
        (false, None) => {}
    }
    if let Some((val, ecr)) = timestamp {
        put(&val.to_be_bytes());
        put(&ecr.to_be_bytes());
    }
    if let Some(ws) = wscale {
        put(&[KIND_NOP, KIND_WSCALE, 3, ws]);
    }
    n
}

/// The options of a plain segment with timestamps: NOP NOP TS (12 bytes).
pub fn write_timestamp(out: &mut [u8], val: u32, ecr: u32) -> usize {
    out[..4].copy_from_slice(&[KIND_NOP, KIND_NOP, KIND_TIMESTAMP, 10]);
    out[4..8].copy_from_slice(&val.to_be_bytes());
    out[8..12].copy_from_slice(&ecr.to_be_bytes());
    12
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_is_read_back() {
        for sack in [false, true] {
            for ts in [None, Some((0x1122_3344, 0x5566_7788))] {
                for ws in [None, Some(7)] {
                    let mut b = [0u8; 40];
                    let n = write_syn(&mut b, 1460, sack, ts, ws);
                    assert_eq!(n % 4, 0);
                    let o = parse(&b[..n]);
                    assert_eq!((o.mss, o.sack_permitted, o.timestamp, o.wscale), (Some(1460), sack, ts, ws));
                    if let Some(at) = o.timestamp_at {
                        assert_eq!(be32(&b[at..]), 0x1122_3344);
                    }
                }
            }
        }
    }

    #[test]
    fn linux_syn_options_and_sack_blocks_are_found() {
        // A Linux SYN: MSS 1460, SACK permitted, TS, NOP, wscale 7.
        let syn = [2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 9, 0, 0, 0, 0, 1, 3, 3, 7];
        let o = parse(&syn);
        assert_eq!(
            (o.mss, o.sack_permitted, o.timestamp, o.timestamp_at, o.wscale),
            (Some(1460), true, Some((9, 0)), Some(8), Some(7))
        );
        // NOP NOP TS, NOP NOP SACK with two blocks.
        let mut b = vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1, 5, 18];
        b.extend_from_slice(&[0u8; 16]);
        let o = parse(&b);
        assert_eq!(o.sack_at, Some((16, 2)));
        assert_eq!(o.timestamp, Some((1, 2)));
    }

    #[test]
    fn malformed_lengths_end_the_walk() {
        assert_eq!(parse(&[2, 4, 5]), Options::default());
        assert_eq!(parse(&[8, 0, 2, 4, 5, 0xb4]), Options::default());
        assert_eq!(parse(&[8, 40, 0, 0]), Options::default());
        // A wrong length for a known kind is skipped, not misread.
        assert_eq!(parse(&[2, 3, 5, 2, 4, 1, 0x00]).mss, Some(0x0100));
    }
}
