//! ICMP errors: those about a load-balanced flow are forwarded to the
//! other end of its session with the quoted datagram translated as the
//! NAT translated the flow, so path-MTU discovery and traceroute work
//! through lbd; and lbd's own errors, time exceeded (TTL expiry) and
//! fragmentation needed (a DF packet larger than the egress port's MTU).
//!
//! An error travels towards the source of the datagram it quotes. One
//! about a reply (VIP:vport→client, as the client side saw it) reaches the
//! VIP and goes on to the backend as one about backend:bport→client; one
//! about a request (client→backend:bport, as the backend side saw it)
//! goes on to the client as one about client→VIP:vport. Either way the
//! quoted datagram, read backwards, is a key of the session (request key
//! or reply key), so the error is classified like a packet of its flow:
//! same owner worker, same lookup.
//!
//! Anyone can send errors quoting a live flow, so those about a live
//! session pass a per-worker token bucket (`icmp.forward_rate`) before
//! they go on; errors about nothing are dropped before it and never use
//! up its tokens. A SYN-proxied connection's quoted sequence numbers are
//! moved between the client's and the backend's spaces as well.
//!
//! lbd's errors follow RFC 1812 4.3.2.7: none about an ICMP error, a
//! fragment other than the first, or a datagram from an address that does
//! not name one host (zero, loopback, multicast, broadcast) or sent to a
//! link-layer broadcast; at most `icmp.error_rate` per second.

use super::classify::Class;
use super::synproxy::SYN_PROXIED;
use super::{Io, Packet, Staged, State};
use crate::counters::{DropReason, Event};
use crate::flow::FlowKey;
use crate::nat::Endpoint;
use crate::session::{Direction, Session};
use crate::snapshot::{LocalAddress, Snapshot};
use crate::synproxy::Translation;
use crate::wire::checksum::{adjust16, adjust32};
use crate::wire::ethernet::{self, EthernetRepr, ETHERTYPE_IPV4};
use crate::wire::frame::{
    ETH_DST, IPV4, IP_CHECKSUM, IP_DST_ADDR, IP_FLG_OFF, IP_LENGTH, IP_PROTOCOL, IP_SRC_ADDR, IP_TTL, IP_TTL_PROTOCOL,
    L4,
};
use crate::wire::ipv4::{self, Ipv4Repr, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::wire::{get16, get32, icmp, set16, set32, tcp, udp, MacAddr};

/// Where the quoted datagram of an ICMP error starts in a frame.
const Q: usize = L4 + icmp::QUOTE;
/// Where the quoted datagram's L4 header starts (lbd forwards no IPv4
/// options, so a datagram it translated has none).
const QL4: usize = Q + ipv4::MIN_HEADER_LEN;
/// Shortest ICMP error lbd forwards: its header, the quoted IPv4 header
/// and the 8 bytes of L4 header RFC 792 requires (both ports).
const MIN_FORWARDED: usize = icmp::HEADER_LEN + ipv4::MIN_HEADER_LEN + 8;
/// The fragment offset bits of the flags word: non-zero in every fragment
/// but the first.
const FRAGMENT_OFFSET: u16 = 0x1fff;

impl<P: Packet> State<P> {
    /// The class of an ICMP message of a valid, unfragmented IPv4 packet
    /// from `src` to `dst` with `ttl`; `message` is the ICMP message (as
    /// much as the first segment holds). An error about a flow through lbd
    /// is classified as a packet of that flow; everything else stays with
    /// the local answers (`Class::Icmp`).
    /// The flow's key and owner go into `flow`.
    pub(super) fn icmp_class(&self, snap: &Snapshot, dst: u32, ttl: u8, message: &[u8], flow: &mut Staged) -> Class {
        if message.len() < icmp::HEADER_LEN || !icmp::is_forwarded_error(message[icmp::field::TYPE]) {
            return Class::Icmp;
        }
        // The host's own connections use the port addresses, the flows
        // lbd forwards never do: errors to those are the kernel's.
        if matches!(snap.local(dst), Some(LocalAddress::Port(_))) {
            return Class::Icmp;
        }
        let Some(quoted) = quoted_flow(message) else {
            return Class::Drop(DropReason::IcmpErrorMalformed);
        };
        // Read backwards, the quoted datagram is the key the flow's packets
        // arrive with: a request key when it quotes a reply, a reply key
        // when it quotes a translated request. An error goes to the source
        // of what it quotes; one that does not cannot be about our flow.
        let key = FlowKey::new(quoted.dst(), quoted.src(), quoted.dport(), quoted.sport(), quoted.proto());
        if quoted.src() != dst {
            return Class::Drop(DropReason::IcmpErrorNoSession);
        }
        let owner = match self.direction(snap, &key) {
            Some(Some(_)) => self.flow_owner(&key, true),
            Some(None) => return Class::Drop(DropReason::IcmpErrorNoSession),
            None => self.flow_owner(&key, false),
        };
        if ttl <= 1 {
            return Class::Drop(DropReason::TtlExceeded);
        }
        flow.key = key;
        flow.owner = owner;
        Class::IcmpError
    }

    /// Forwards an ICMP error about the flow whose packets arrive with
    /// `key` (this worker owns it): to the backend when it quotes a reply,
    /// to the client when it quotes a request, outer and quoted headers
    /// translated, within the worker's forwarding rate. An error never
    /// refreshes its session.
    pub(super) fn forward_icmp_error(&mut self, snap: &Snapshot, mut pkt: P, key: FlowKey, io: &mut impl Io<P>) {
        let Some((slot, dir)) = self.sessions.lookup(&key, self.sessions.hash(&key)) else {
            return self.discard(DropReason::IcmpErrorNoSession, pkt, io);
        };
        if self.expired(snap, slot) {
            return self.discard(DropReason::IcmpErrorNoSession, pkt, io);
        }
        let s = *self.sessions.session(slot);
        if !self.icmp_forwards.take(self.now) {
            return self.discard(DropReason::IcmpForwardRateLimited, pkt, io);
        }
        let proxied = if s.flags & SYN_PROXIED != 0 { self.proxy_translation(slot) } else { None };
        let to = translate_error(pkt.data_mut(), &s, dir, proxied.as_ref());
        self.counters.event(Event::IcmpErrorsForwarded);
        self.route(snap, pkt, to, io)
    }

    /// A flow packet whose TTL runs out here: counted as `ttl_exceeded`,
    /// answered with time exceeded.
    pub(super) fn ttl_expired(&mut self, snap: &Snapshot, pkt: P, io: &mut impl Io<P>) {
        self.send_icmp_error(snap, &pkt, icmp::TIME_EXCEEDED, icmp::CODE_TTL_EXCEEDED, 0, io);
        self.discard(DropReason::TtlExceeded, pkt, io)
    }

    /// The egress MTU check of a flow packet of session `s` going `dir`,
    /// before its rewrite (an error must quote the datagram as its source
    /// sent it). Returns the packet when it fits; one that does not is
    /// dropped, with fragmentation needed to its source when DF is set
    /// (lbd does not fragment). Called only for packets longer than the
    /// smallest MTU of all ports.
    #[cold]
    pub(super) fn fit_mtu(
        &mut self,
        snap: &Snapshot,
        pkt: P,
        s: &Session,
        dir: Direction,
        io: &mut impl Io<P>,
    ) -> Option<P> {
        // Where NAT sends each direction.
        let to = match dir {
            Direction::Request => s.backend_ip,
            Direction::Reply => s.client_ip,
        };
        let Some((port, _)) = snap.routes.lookup(to) else {
            return Some(pkt);
        };
        let mtu = snap.ports[usize::from(port)].mtu;
        let data = pkt.data();
        if get16(data, IP_LENGTH) <= mtu {
            return Some(pkt);
        }
        if get16(data, IP_FLG_OFF) & ipv4::FLAG_DF == 0 {
            self.discard(DropReason::TooBig, pkt, io);
            return None;
        }
        self.send_icmp_error(snap, &pkt, icmp::DEST_UNREACHABLE, icmp::CODE_FRAG_NEEDED, u32::from(mtu), io);
        self.discard(DropReason::FragNeeded, pkt, io);
        None
    }

    /// Sends an ICMP error of `ty`/`code` (second header word `word`)
    /// about `offending` to its source, when RFC 1812 allows one and the
    /// worker's error budget has a token. Its source address is that of
    /// the port it leaves by (RFC 1812 4.3.2.4), not a VIP: the error
    /// comes from lbd as a hop, not from the service, and a port address
    /// is what traceroute should show.
    fn send_icmp_error(&mut self, snap: &Snapshot, offending: &P, ty: u8, code: u8, word: u32, io: &mut impl Io<P>) {
        let data = offending.data();
        if !may_answer(snap, data) {
            return;
        }
        let src = get32(data, IP_SRC_ADDR);
        let Some((port, next_hop)) = snap.routes.lookup(src) else {
            return;
        };
        if !self.icmp_errors.take(self.now) {
            return self.counters.event(Event::IcmpErrorsRateLimited);
        }
        let Some(mut pkt) = io.alloc(L4 + icmp::ERROR_LEN, port) else {
            return self.counters.event(Event::MbufAllocFailed);
        };
        let b = pkt.data_mut();
        EthernetRepr { src: MacAddr::ZERO, dst: MacAddr::ZERO, ethertype: ETHERTYPE_IPV4 }.emit(b);
        let from = snap.ports[usize::from(port)].addr;
        Ipv4Repr::originated(from, src, PROTO_ICMP, icmp::ERROR_LEN as u16).emit(&mut b[IPV4..]);
        icmp::emit_error(&mut b[L4..], ty, code, word, &data[IPV4..IPV4 + icmp::QUOTED_LEN]);
        self.counters.event(Event::IcmpErrorsSent);
        self.send(snap, pkt, port, next_hop, io)
    }
}

/// The quoted datagram of the ICMP error `message` as a flow (its own
/// direction), when it is the start of an unfragmented (or first
/// fragment) option-less IPv4 TCP or UDP datagram with both ports.
fn quoted_flow(message: &[u8]) -> Option<FlowKey> {
    if message.len() < MIN_FORWARDED {
        return None;
    }
    let q = &message[icmp::QUOTE..];
    let proto = q[ipv4::field::PROTOCOL];
    if q[ipv4::field::VER_IHL] != ipv4::VER_IHL_NO_OPTIONS
        || get16(q, ipv4::field::FLG_OFF) & FRAGMENT_OFFSET != 0
        || (proto != PROTO_TCP && proto != PROTO_UDP)
    {
        return None;
    }
    let l4 = &q[ipv4::MIN_HEADER_LEN..];
    Some(FlowKey::new(
        get32(q, ipv4::field::SRC_ADDR),
        get32(q, ipv4::field::DST_ADDR),
        get16(l4, tcp::field::SRC_PORT),
        get16(l4, tcp::field::DST_PORT),
        proto,
    ))
}

/// Translates, in place, an ICMP error about session `s`'s flow, found by
/// the key of direction `dir` (see [`State::icmp_class`]); returns the
/// address to route it to. Quoting a reply (found by the request key,
/// `dir` is `Request`): the outer destination VIP becomes the backend, the
/// quoted source VIP:vport backend:bport. Quoting a request (found by the reply
/// key): the quoted destination backend:bport becomes VIP:vport, and an
/// error the backend sent itself leaves from the VIP. The TTL drops by
/// one; every checksum is patched for the words that changed. `proxied`
/// is the translation of a SYN-proxied connection, whose quoted sequence
/// numbers move too (see [`translate_quoted_seq`]).
pub(super) fn translate_error(f: &mut [u8], s: &Session, dir: Direction, proxied: Option<&Translation>) -> u32 {
    if let Some(tr) = proxied {
        translate_quoted_seq(f, tr, dir);
    }
    match dir {
        Direction::Request => {
            rewrite_error(
                f,
                Some((Endpoint::Destination, s.backend_ip)),
                Endpoint::Source,
                s.backend_ip,
                s.backend_port,
            );
            s.backend_ip
        }
        Direction::Reply => {
            let from_backend = get32(f, IP_SRC_ADDR) == s.backend_ip;
            let outer = from_backend.then_some((Endpoint::Source, s.vip));
            rewrite_error(f, outer, Endpoint::Destination, s.vip, s.vip_port);
            s.client_ip
        }
    }
}

/// The rewrite of [`translate_error`]: the outer header's TTL and, when
/// given, one of its addresses; one endpoint (address and port) of the
/// quoted datagram, with the quoted IPv4 checksum and the quoted L4
/// checksum when the quote holds it (TCP's lies beyond the 8 bytes a quote
/// must have), and the ICMP checksum over all of these. A datagram's
/// checksum covers bytes the quote may not hold, and the ICMP checksum
/// bytes beyond the first segment, so every one is patched (RFC 1624),
/// never recomputed: a correct one stays correct, a wrong one wrong.
fn rewrite_error(f: &mut [u8], outer: Option<(Endpoint, u32)>, quoted: Endpoint, addr: u32, port: u16) {
    let old_ttl_word = get16(f, IP_TTL_PROTOCOL);
    f[IP_TTL] = f[IP_TTL].wrapping_sub(1);
    let mut c = adjust16(get16(f, IP_CHECKSUM), old_ttl_word, get16(f, IP_TTL_PROTOCOL));
    if let Some((which, new)) = outer {
        let at = match which {
            Endpoint::Source => IP_SRC_ADDR,
            Endpoint::Destination => IP_DST_ADDR,
        };
        c = adjust32(c, get32(f, at.clone()), new);
        set32(f, at, new);
    }
    set16(f, IP_CHECKSUM, c);

    let (addr_at, port_at) = match quoted {
        Endpoint::Source => (Q + ipv4::field::SRC_ADDR.start, QL4 + tcp::field::SRC_PORT.start),
        Endpoint::Destination => (Q + ipv4::field::DST_ADDR.start, QL4 + tcp::field::DST_PORT.start),
    };
    let icmp_at = L4 + icmp::field::CHECKSUM.start;
    let mut ic = get16(f, icmp_at..icmp_at + 2);
    // Quoted IPv4 header: the address and its checksum.
    let old_addr = get32(f, addr_at..addr_at + 4);
    set32(f, addr_at..addr_at + 4, addr);
    ic = adjust32(ic, old_addr, addr);
    let qc_at = Q + ipv4::field::CHECKSUM.start;
    ic = patch16(f, qc_at, ic, |c| adjust32(c, old_addr, addr));
    // Quoted L4 header: the port, and the checksum over the
    // pseudo-header address and the port.
    let old_port = get16(f, port_at..port_at + 2);
    set16(f, port_at..port_at + 2, port);
    ic = adjust16(ic, old_port, port);
    let (l4_csum, is_udp) = match f[Q + ipv4::field::PROTOCOL] {
        PROTO_TCP => (QL4 + tcp::field::CHECKSUM.start, false),
        _ => (QL4 + udp::field::CHECKSUM.start, true),
    };
    let none = is_udp && get16(f, l4_csum..l4_csum + 2) == 0;
    if l4_csum + 2 <= quote_end(f) && !none {
        ic = patch16(f, l4_csum, ic, |c| {
            let c = adjust16(adjust32(c, old_addr, addr), old_port, port);
            if is_udp && c == 0 {
                0xffff
            } else {
                c
            }
        });
    }
    set16(f, icmp_at..icmp_at + 2, ic);
}

/// The quoted TCP header of an error about a SYN-proxied connection (its
/// translation `tr`), moved into the sequence space of the end the error
/// goes to, as `crate::synproxy` moved the segment it quotes the other
/// way: quoting a reply (`dir` is `Request`, on to the backend), the
/// sequence number from lbd's space, which the client saw, back into the
/// backend's; quoting a request (on to the client), the acknowledgment
/// from the backend's space back into the client's, when the quote holds
/// the flags and ACK is among them. A TCP ignores an error whose quoted
/// sequence number is not one it has in flight (Linux: `tcp_v4_err`), so
/// untranslated, a proxied connection's path-MTU discovery would fail
/// at the backend. Timestamps and window in a longer quote stay as lbd
/// forwarded them: no TCP reads those of an error. The quoted TCP
/// checksum (when quoted) and the ICMP checksum are patched as in
/// [`rewrite_error`].
fn translate_quoted_seq(f: &mut [u8], tr: &Translation, dir: Direction) {
    if f[Q + ipv4::field::PROTOCOL] != PROTO_TCP {
        return;
    }
    let end = quote_end(f);
    let (at, delta) = match dir {
        Direction::Request => (QL4 + tcp::field::SEQ_NUM.start, tr.seq_delta),
        Direction::Reply => {
            let flags = QL4 + tcp::field::FLAGS;
            if flags >= end || f[flags] & tcp::FLAG_ACK == 0 {
                return;
            }
            (QL4 + tcp::field::ACK_NUM.start, tr.seq_delta.wrapping_neg())
        }
    };
    let old = get32(f, at..at + 4);
    let new = old.wrapping_add(delta);
    set32(f, at..at + 4, new);
    let icmp_at = L4 + icmp::field::CHECKSUM.start;
    let mut ic = adjust32(get16(f, icmp_at..icmp_at + 2), old, new);
    let l4_csum = QL4 + tcp::field::CHECKSUM.start;
    if l4_csum + 2 <= end {
        ic = patch16(f, l4_csum, ic, |c| adjust32(c, old, new));
    }
    set16(f, icmp_at..icmp_at + 2, ic);
}

/// Where the bytes of the error in frame `f` end: its IPv4 length, or the
/// first segment's end when the error continues beyond it.
fn quote_end(f: &[u8]) -> usize {
    (IPV4 + usize::from(get16(f, IP_LENGTH))).min(f.len())
}

/// Replaces the 16-bit word at `at` of `f` with `update` of it; returns
/// the ICMP checksum `ic` adjusted for the change.
fn patch16(f: &mut [u8], at: usize, ic: u16, update: impl FnOnce(u16) -> u16) -> u16 {
    let old = get16(f, at..at + 2);
    let new = update(old);
    set16(f, at..at + 2, new);
    adjust16(ic, old, new)
}

/// Whether RFC 1812 4.3.2.7 lets lbd answer the datagram in frame `f`
/// with an ICMP error: not an ICMP error itself, not a later fragment,
/// not to a link-layer broadcast or multicast, not from an address that
/// names no single host.
fn may_answer(snap: &Snapshot, f: &[u8]) -> bool {
    if f.len() < IPV4 + icmp::QUOTED_LEN || usize::from(get16(f, IP_LENGTH)) < icmp::QUOTED_LEN {
        return false;
    }
    if ethernet::mac_at(f, ETH_DST.start).is_multicast() {
        return false;
    }
    if get16(f, IP_FLG_OFF) & FRAGMENT_OFFSET != 0 {
        return false;
    }
    if f[IP_PROTOCOL] == PROTO_ICMP && icmp::is_error(f[L4 + icmp::field::TYPE]) {
        return false;
    }
    let src = get32(f, IP_SRC_ADDR);
    let [first, ..] = src.to_be_bytes();
    if src == 0 || first == 0 || first == 127 || first >= 224 {
        return false;
    }
    // A subnet's broadcast address (for the subnets lbd knows: its ports').
    !snap.ports.iter().any(|p| p.prefix_len < 31 && src == p.net | !p.mask)
}
