//! The SYN proxy's packet work, apart from the data plane's state: SYN
//! cookies, the segments lbd writes (SYN-ACK to the client, SYN and ACK to
//! the backend), and the sequence and timestamp translation of a proxied
//! connection.
//!
//! The cookie is Linux's (net/ipv4/syncookies.c): the initial sequence
//! number lbd answers with is
//! `H(key, tuple) + client ISN + (t << 24) + ((H(key, tuple, t) + mss index) mod 2^24)`,
//! `t` a counter of 64-second periods; a cookie is valid for two periods.
//! The hash is SipHash-2-4 keyed per instance (std's `SipHasher`: keyed,
//! in the standard library, deprecated only as a default hasher), so
//! nobody who does not know the key can make an ACK that validates except
//! by guessing 1 in 2^22. When the client sends timestamps, the window
//! scale and SACK permission it offered travel in the low 6 bits of the
//! TSval lbd answers with, which the client echoes in its ACK; without
//! timestamps neither is used (as Linux does).

use crate::wire::checksum::{adjust16, fold, pseudo_header_sum, sum_words};
use crate::wire::frame::{
    ETHERTYPE, IPV4, IP_DST_ADDR, IP_LENGTH, IP_SRC_ADDR, L4, TCP_CHECKSUM, TCP_DATA_OFF, TCP_FLAGS,
};
use crate::wire::ipv4::{Ipv4Repr, PROTO_TCP};
use crate::wire::tcp::{self, field, FLAG_ACK, FLAG_SYN};
use crate::wire::{ethernet, get16, get32, set16, set32, tcp_options};

/// MSS values a cookie can carry (2 bits), as Linux's table.
pub const MSS_TABLE: [u16; 4] = [536, 1300, 1440, 1460];
const COOKIE_BITS: u32 = 24;
const COOKIE_MASK: u32 = (1 << COOKIE_BITS) - 1;
/// Periods (of 65.536 s) a cookie stays valid.
const MAX_AGE: u32 = 2;
/// The window scale lbd offers clients. Backends that answer with another
/// one get their window fields rescaled on the way out.
pub const WSCALE: u8 = 7;
/// The window lbd's SYN-ACK and SYN advertise (SYN windows are unscaled).
const SYN_WINDOW: u16 = 65535;
/// Low TSval bits that carry the client's window scale (4 bits, 0xf: none)
/// and SACK permission (bit 4).
const TS_OPT_BITS: u32 = 6;
const TS_NO_WSCALE: u32 = 0xf;
const TS_SACK: u32 = 1 << 4;
/// Longest frame lbd writes here: Ethernet, IPv4, TCP with 20 bytes of
/// options.
pub const MAX_FRAME: usize = L4 + tcp::MIN_HEADER_LEN + 20;

/// The per-instance key of the cookies.
#[derive(Clone, Copy, Debug)]
pub struct CookieKey(u64, u64);

/// A connection's addresses as the client sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuple {
    pub client: u32,
    pub vip: u32,
    pub client_port: u16,
    pub vip_port: u16,
}

/// What a valid cookie gives back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub mss: u16,
    pub wscale: Option<u8>,
    pub sack_permitted: bool,
}

impl CookieKey {
    /// A random key (at start, from the standard library's per-process
    /// random hash keys: no system call per packet).
    pub fn random() -> CookieKey {
        use std::hash::BuildHasher;
        let s = std::collections::hash_map::RandomState::new();
        CookieKey(s.hash_one(0u8), s.hash_one(1u8))
    }

    pub fn from_parts(k0: u64, k1: u64) -> CookieKey {
        CookieKey(k0, k1)
    }

    /// SipHash-2-4 of (client, vip, client port, vip port, `count`,
    /// `which`), the 17 bytes little-endian in that order: what
    /// `std::hash::SipHasher` gives when written those fields, computed on
    /// the three words directly (its streaming writes took 16 % of the
    /// SYN-proxy row's samples; a cookie made or checked costs two).
    fn hash(&self, t: &Tuple, count: u32, which: u8) -> u32 {
        let m0 = u64::from(t.client) | u64::from(t.vip) << 32;
        let m1 = u64::from(t.client_port) | u64::from(t.vip_port) << 16 | u64::from(count) << 32;
        siphash24_17(self.0, self.1, m0, m1, which) as u32
    }

    /// The cookie for a SYN with sequence number `client_isn` and MSS
    /// table index `mss_index`, at `now_ms`.
    pub fn make(&self, t: &Tuple, client_isn: u32, now_ms: u32, mss_index: u32) -> u32 {
        let count = now_ms >> 16;
        self.hash(t, 0, 0)
            .wrapping_add(client_isn)
            .wrapping_add(count << COOKIE_BITS)
            .wrapping_add(self.hash(t, count, 1).wrapping_add(mss_index) & COOKIE_MASK)
    }

    /// The MSS index `cookie` carries if it is one this key made for
    /// `client_isn` within the last two periods.
    pub fn check(&self, t: &Tuple, client_isn: u32, cookie: u32, now_ms: u32) -> Option<u32> {
        let count = now_ms >> 16;
        let c = cookie.wrapping_sub(self.hash(t, 0, 0)).wrapping_sub(client_isn);
        let age = count.wrapping_sub(c >> COOKIE_BITS) & (u32::MAX >> COOKIE_BITS);
        if age >= MAX_AGE {
            return None;
        }
        // The counter wraps with the millisecond clock, at 2^16.
        let made = count.wrapping_sub(age) & (u32::MAX >> 16);
        let index = c.wrapping_sub(self.hash(t, made, 1)) & COOKIE_MASK;
        (index < MSS_TABLE.len() as u32).then_some(index)
    }
}

/// SipHash-2-4 under key (`k0`, `k1`) of a 17-byte message: the words
/// `m0` and `m1` (little-endian bytes), then the byte `last`.
#[inline]
fn siphash24_17(k0: u64, k1: u64, m0: u64, m1: u64, last: u8) -> u64 {
    #[inline(always)]
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    // The last word holds the message length (17) in its top byte.
    for m in [m0, m1, u64::from(last) | 17 << 56] {
        v[3] ^= m;
        round(&mut v);
        round(&mut v);
        v[0] ^= m;
    }
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// The largest MSS table index not above what the client offered.
pub fn mss_index(client_mss: Option<u16>) -> u32 {
    let mss = client_mss.unwrap_or(536);
    MSS_TABLE.iter().rposition(|m| *m <= mss).unwrap_or(0) as u32
}

/// The TSval lbd answers a SYN with: its clock, the low bits replaced by
/// the client's window scale and SACK permission.
pub fn encode_ts(now_ms: u32, wscale: Option<u8>, sack: bool) -> u32 {
    let ws = wscale.map_or(TS_NO_WSCALE, |w| u32::from(w.min(14)));
    (now_ms & !((1 << TS_OPT_BITS) - 1)) | ws | if sack { TS_SACK } else { 0 }
}

/// See [`encode_ts`]: (window scale, SACK permitted) from an echoed TSval.
pub fn decode_ts(tsecr: u32) -> (Option<u8>, bool) {
    let ws = tsecr & 0xf;
    ((ws != TS_NO_WSCALE).then_some(ws as u8), tsecr & TS_SACK != 0)
}

/// The TCP options of the frame's segment (a validated TCP frame).
pub fn options(frame: &[u8]) -> tcp_options::Options {
    let hl = usize::from(frame[TCP_DATA_OFF] >> 4) * 4;
    tcp_options::parse(&frame[L4 + tcp::MIN_HEADER_LEN..L4 + hl])
}

/// Payload bytes of the frame's segment.
pub fn payload_len(frame: &[u8]) -> usize {
    let hl = usize::from(frame[TCP_DATA_OFF] >> 4) * 4;
    usize::from(get16(frame, IP_LENGTH)).saturating_sub(20 + hl)
}

/// A TCP segment to write.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
}

/// Writes an Ethernet/IPv4/TCP frame without payload into `out` (MACs
/// left to the route); returns its length.
pub fn write_frame(out: &mut [u8; MAX_FRAME], s: &Segment, opts: &[u8]) -> usize {
    let tcp_len = tcp::MIN_HEADER_LEN + opts.len();
    let len = L4 + tcp_len;
    out[..len].fill(0);
    set16(&mut out[..], ETHERTYPE, ethernet::ETHERTYPE_IPV4);
    let ip = Ipv4Repr::originated(s.src, s.dst, PROTO_TCP, tcp_len as u16);
    ip.emit(&mut out[IPV4..]);
    let t = &mut out[L4..len];
    set16(t, field::SRC_PORT, s.sport);
    set16(t, field::DST_PORT, s.dport);
    set32(t, field::SEQ_NUM, s.seq);
    set32(t, field::ACK_NUM, s.ack);
    let data_off = ((tcp_len / 4) as u8) << 4;
    t[field::DATA_OFF] = data_off;
    t[field::FLAGS] = s.flags;
    set16(t, field::WINDOW, s.window);
    t[tcp::MIN_HEADER_LEN..].copy_from_slice(opts);
    // Summed from the fields rather than read back from `t`: loads over
    // the stores just made wait for them.
    let words = |v: u32| u64::from(v >> 16) + u64::from(v & 0xffff);
    let header = u64::from(s.sport)
        + u64::from(s.dport)
        + words(s.seq)
        + words(s.ack)
        + u64::from(u16::from_be_bytes([data_off, s.flags]))
        + u64::from(s.window);
    let c = !fold(ip.pseudo_header_sum() + header + sum_words(opts));
    set16(t, field::CHECKSUM, c);
    len
}

/// The SYN-ACK answering the client's SYN in `syn` (a validated frame to
/// a proxied listener): the cookie as sequence number, the MSS the cookie
/// carries, and, with timestamps, window scale and SACK as the client
/// offered them.
pub fn syn_ack(syn: &[u8], key: &CookieKey, now_ms: u32, out: &mut [u8; MAX_FRAME]) -> usize {
    let t = tuple_of_request(syn);
    let o = options(syn);
    let client_isn = get32(syn, at(field::SEQ_NUM));
    let index = mss_index(o.mss);
    let cookie = key.make(&t, client_isn, now_ms, index);
    // Window scale and SACK only with timestamps: without them the ACK
    // cannot bring them back.
    let ts = o.timestamp.map(|(val, _)| (encode_ts(now_ms, o.wscale, o.sack_permitted), val));
    let wscale = ts.and(o.wscale).map(|_| WSCALE);
    let mut opts = [0u8; 20];
    let n = tcp_options::write_syn(&mut opts, MSS_TABLE[index as usize], ts.is_some() && o.sack_permitted, ts, wscale);
    let s = Segment {
        src: t.vip,
        dst: t.client,
        sport: t.vip_port,
        dport: t.client_port,
        seq: cookie,
        ack: client_isn.wrapping_add(1),
        flags: FLAG_SYN | FLAG_ACK,
        window: SYN_WINDOW,
    };
    write_frame(out, &s, &opts[..n])
}

const fn at(f: crate::wire::Field) -> crate::wire::Field {
    crate::wire::at(L4, f)
}

/// The client-side tuple of a client→VIP frame.
pub fn tuple_of_request(f: &[u8]) -> Tuple {
    Tuple {
        client: get32(f, IP_SRC_ADDR),
        vip: get32(f, IP_DST_ADDR),
        client_port: get16(f, at(field::SRC_PORT)),
        vip_port: get16(f, at(field::DST_PORT)),
    }
}

/// A client's handshake ACK that proved its cookie: what lbd keeps of it
/// for the backend connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    pub client_isn: u32,
    pub cookie: u32,
    pub accepted: Accepted,
    /// (client's TSval, lbd's TSval it echoed), when timestamps are on.
    pub timestamp: Option<(u32, u32)>,
    pub window: u16,
}

/// Checks the cookie a client's ACK (no SYN, no RST) in `f` acknowledges.
pub fn accept(f: &[u8], key: &CookieKey, now_ms: u32) -> Option<Handshake> {
    let t = tuple_of_request(f);
    let client_isn = get32(f, at(field::SEQ_NUM)).wrapping_sub(1);
    let cookie = get32(f, at(field::ACK_NUM)).wrapping_sub(1);
    let index = key.check(&t, client_isn, cookie, now_ms)?;
    let o = options(f);
    let (wscale, sack_permitted) = o.timestamp.map_or((None, false), |(_, ecr)| decode_ts(ecr));
    Some(Handshake {
        client_isn,
        cookie,
        accepted: Accepted { mss: MSS_TABLE[index as usize], wscale, sack_permitted },
        timestamp: o.timestamp,
        window: get16(f, at(field::WINDOW)),
    })
}

/// The SYN lbd sends the backend for a client whose cookie `h` proved:
/// the client's ISN and options, so the backend's view of the client's
/// sequence space is the client's own.
pub fn backend_syn(h: &Handshake, client: (u32, u16), backend: (u32, u16), out: &mut [u8; MAX_FRAME]) -> usize {
    let a = h.accepted;
    let ts = h.timestamp.map(|(val, _)| (val, 0));
    let mut opts = [0u8; 20];
    let n = tcp_options::write_syn(&mut opts, a.mss, a.sack_permitted, ts, a.wscale);
    let s = Segment {
        src: client.0,
        dst: backend.0,
        sport: client.1,
        dport: backend.1,
        seq: h.client_isn,
        ack: 0,
        flags: FLAG_SYN,
        window: SYN_WINDOW,
    };
    write_frame(out, &s, &opts[..n])
}

/// What a proxied connection's translation needs, set when the backend's
/// SYN-ACK arrives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Translation {
    /// Backend ISN − lbd's ISN (the cookie).
    pub seq_delta: u32,
    /// lbd's TSval towards the client − the backend's.
    pub ts_delta: u32,
    /// Shift from the backend's window scale to lbd's (positive: the
    /// backend's windows are shifted left before lbd's scale divides
    /// them); `None` when windows are not scaled.
    pub window_shift: Option<i8>,
}

/// The ACK to the backend that completes its handshake, written over its
/// SYN-ACK `f`; and the translation for the connection. `h` is what the
/// client's ACK gave (`h.timestamp`'s TSval is the client's latest).
pub fn backend_ack(f: &[u8], h: &Handshake, out: &mut [u8; MAX_FRAME]) -> (usize, Translation) {
    let backend_isn = get32(f, at(field::SEQ_NUM));
    let o = options(f);
    let ts = match (h.timestamp, o.timestamp) {
        (Some((client_val, ours)), Some((backend_val, _))) => Some((client_val, backend_val, ours)),
        _ => None,
    };
    let window_shift = h.accepted.wscale.map(|_| o.wscale.unwrap_or(0).min(14) as i8 - WSCALE as i8);
    let tr = Translation {
        seq_delta: backend_isn.wrapping_sub(h.cookie),
        ts_delta: ts.map_or(0, |(_, backend_val, ours)| ours.wrapping_sub(backend_val)),
        window_shift,
    };
    let mut opts = [0u8; 12];
    let n = match ts {
        Some((client_val, backend_val, _)) => tcp_options::write_timestamp(&mut opts, client_val, backend_val),
        None => 0,
    };
    let s = Segment {
        src: get32(f, IP_DST_ADDR),
        dst: get32(f, IP_SRC_ADDR),
        sport: get16(f, at(field::DST_PORT)),
        dport: get16(f, at(field::SRC_PORT)),
        seq: h.client_isn.wrapping_add(1),
        ack: backend_isn.wrapping_add(1),
        flags: FLAG_ACK,
        window: h.window,
    };
    (write_frame(out, &s, &opts[..n]), tr)
}

/// Replaces bytes of the TCP segment at frame offset `pos` with `new`,
/// patching the TCP checksum word by word over the aligned words the
/// change covers (an option can sit at an odd offset).
fn patch(f: &mut [u8], pos: usize, new: &[u8]) {
    let start = pos & !1;
    let end = (pos + new.len() + 1) & !1;
    let old_words: [u16; 8] = words(f, start, end);
    f[pos..pos + new.len()].copy_from_slice(new);
    let new_words: [u16; 8] = words(f, start, end);
    let mut c = get16(f, TCP_CHECKSUM);
    for i in 0..(end - start) / 2 {
        c = adjust16(c, old_words[i], new_words[i]);
    }
    set16(f, TCP_CHECKSUM, c);
}

fn words(f: &[u8], start: usize, end: usize) -> [u16; 8] {
    let mut w = [0u16; 8];
    for (i, p) in (start..end).step_by(2).enumerate() {
        w[i] = u16::from_be_bytes([f[p], f[p + 1]]);
    }
    w
}

fn add32(f: &mut [u8], pos: usize, delta: u32) {
    let v = u32::from_be_bytes([f[pos], f[pos + 1], f[pos + 2], f[pos + 3]]).wrapping_add(delta);
    patch(f, pos, &v.to_be_bytes());
}

/// A client→backend segment of a proxied connection: the acknowledgment
/// and SACK blocks move into the backend's sequence space, the echoed
/// timestamp back to the backend's clock.
pub fn translate_request(f: &mut [u8], tr: &Translation) {
    if f[TCP_FLAGS] & FLAG_ACK != 0 {
        add32(f, L4 + field::ACK_NUM.start, tr.seq_delta);
    }
    let o = options(f);
    let opts = L4 + tcp::MIN_HEADER_LEN;
    if let Some((first, n)) = o.sack_at {
        for i in 0..n * 2 {
            add32(f, opts + first + 4 * i, tr.seq_delta);
        }
    }
    if let Some(ts) = o.timestamp_at {
        add32(f, opts + ts + 4, tr.ts_delta.wrapping_neg());
    }
}

/// A backend→client segment of a proxied connection: its sequence number
/// into lbd's space, its TSval onto lbd's clock, its window to lbd's
/// scale.
pub fn translate_reply(f: &mut [u8], tr: &Translation) {
    add32(f, L4 + field::SEQ_NUM.start, tr.seq_delta.wrapping_neg());
    let o = options(f);
    if let Some(ts) = o.timestamp_at {
        add32(f, L4 + tcp::MIN_HEADER_LEN + ts, tr.ts_delta);
    }
    if let Some(shift) = tr.window_shift.filter(|s| *s != 0) {
        let w = u32::from(get16(f, at(field::WINDOW)));
        let scaled = if shift > 0 { w << shift } else { w >> -shift };
        // Rounding a small window down to zero would stall the client.
        let scaled = if w != 0 { scaled.clamp(1, 0xffff) } else { 0 };
        patch(f, L4 + field::WINDOW.start, &(scaled as u16).to_be_bytes());
    }
}

/// The pseudo-header and segment checksum of a frame from scratch (tests
/// and debugging).
pub fn tcp_checksum_ok(f: &[u8]) -> bool {
    let total = usize::from(get16(f, IP_LENGTH));
    let seg = &f[L4..IPV4 + total];
    let src: [u8; 4] = f[IP_SRC_ADDR].try_into().expect("4 bytes");
    let dst: [u8; 4] = f[IP_DST_ADDR].try_into().expect("4 bytes");
    fold(pseudo_header_sum(src, dst, PROTO_TCP, seg.len() as u16) + sum_words(seg)) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: Tuple = Tuple { client: 0xc0a8_010a, vip: 0x0a00_0064, client_port: 40000, vip_port: 80 };

    proptest! {
        /// The cookie hash is SipHash-2-4 of its fields as the standard
        /// library's SipHasher computes it from the same writes.
        #[test]
        fn cookie_hash_is_siphash_of_the_fields(
            k0 in any::<u64>(), k1 in any::<u64>(),
            client in any::<u32>(), vip in any::<u32>(),
            client_port in any::<u16>(), vip_port in any::<u16>(),
            count in any::<u32>(), which in any::<u8>(),
        ) {
            use std::hash::Hasher;
            #[allow(deprecated)]
            let mut h = std::hash::SipHasher::new_with_keys(k0, k1);
            h.write_u32(client);
            h.write_u32(vip);
            h.write_u16(client_port);
            h.write_u16(vip_port);
            h.write_u32(count);
            h.write_u8(which);
            let t = Tuple { client, vip, client_port, vip_port };
            prop_assert_eq!(CookieKey::from_parts(k0, k1).hash(&t, count, which), h.finish() as u32);
        }

        /// The checksums `write_frame` sums from the fields are those of
        /// the bytes it writes, with any options.
        #[test]
        fn written_frames_carry_their_checksums(
            src in any::<u32>(), dst in any::<u32>(), sport in any::<u16>(), dport in any::<u16>(),
            seq in any::<u32>(), ack in any::<u32>(), flags in any::<u8>(), window in any::<u16>(),
            opts in proptest::collection::vec(any::<u8>(), 0..=5).prop_map(|w| w.repeat(4)),
        ) {
            let s = Segment { src, dst, sport, dport, seq, ack, flags, window };
            let mut out = [0x5au8; MAX_FRAME];
            let len = write_frame(&mut out, &s, &opts);
            prop_assert_eq!(len, L4 + tcp::MIN_HEADER_LEN + opts.len());
            prop_assert!(tcp_checksum_ok(&out[..len]));
            let ip: &[u8; 20] = out[IPV4..L4].try_into().unwrap();
            prop_assert_eq!(fold(crate::wire::checksum::sum_ipv4_header(ip)), 0xffff);
        }
    }

    #[test]
    fn cookies_validate_for_two_periods_and_only_with_their_inputs() {
        let key = CookieKey::from_parts(1, 2);
        for index in 0..4 {
            let now = 5_000_000;
            let c = key.make(&T, 777, now, index);
            assert_eq!(key.check(&T, 777, c, now), Some(index));
            assert_eq!(key.check(&T, 777, c, now + 65_536), Some(index), "one period later");
            assert_eq!(key.check(&T, 777, c, now + 2 * 65_536), None, "two periods later");
            // The ISN and the cookie enter linearly (as in Linux): one off
            // may pass with a neighbouring MSS index; further off does not.
            assert_eq!(key.check(&T, 777 + 0x1_0000, c, now), None, "another ISN");
            assert_eq!(key.check(&T, 777, c ^ 0x0001_0000, now), None, "another cookie");
            assert_eq!(key.check(&Tuple { client_port: 40001, ..T }, 777, c, now), None, "another port");
            assert_eq!(CookieKey::from_parts(1, 3).check(&T, 777, c, now), None, "another key");
        }
        // Near the wrap of the millisecond clock.
        let c = key.make(&T, 1, u32::MAX - 10, 3);
        assert_eq!(key.check(&T, 1, c, 20_000), Some(3));
    }

    #[test]
    fn random_keys_differ_and_guesses_rarely_pass() {
        let (a, b) = (CookieKey::random(), CookieKey::random());
        assert_ne!((a.0, a.1), (b.0, b.1));
        let passed = (0..100_000u32).filter(|g| a.check(&T, 1, g.wrapping_mul(2_654_435_761), 0).is_some()).count();
        assert!(passed < 5, "{passed} of 100000 guessed cookies passed");
    }

    #[test]
    fn mss_index_and_timestamp_bits() {
        assert_eq!(mss_index(Some(1460)), 3);
        assert_eq!(mss_index(Some(9000)), 3);
        assert_eq!(mss_index(Some(1400)), 1);
        assert_eq!(mss_index(Some(100)), 0);
        assert_eq!(mss_index(None), 0);
        for ws in [None, Some(0), Some(7), Some(14)] {
            for sack in [false, true] {
                let v = encode_ts(0x1234_5678, ws, sack);
                assert_eq!(v & !0x3f, 0x1234_5640);
                assert_eq!(decode_ts(v), (ws, sack));
            }
        }
    }
}
