//! The first look at a packet: validation, and for a TCP/UDP flow its
//! direction and owner. A fast path for the common frame, the full checks
//! (which name every drop) for the rest; both reach the same verdict.

use super::{Packet, Staged, State};
use crate::counters::DropReason;
use crate::flow::FlowKey;
use crate::ids::{ListenerPos, PortIndex};
use crate::snapshot::{LocalAddress, PortView, Snapshot};
use crate::wire::ethernet::{self, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_QINQ, ETHERTYPE_VLAN};
use crate::wire::frame::{
    ETHERTYPE, ETH_DST, IPV4, IP_DST_ADDR, IP_FLG_OFF, IP_HEADER, IP_LENGTH, IP_PROTOCOL, IP_SRC_ADDR, IP_TTL,
    IP_VER_IHL, L4, L4_DST_PORT, L4_SRC_PORT, TCP_DATA_OFF, TCP_FLAGS, TCP_HEADERS_LEN, UDP_HEADERS_LEN, UDP_LENGTH,
};
use crate::wire::ipv4::{self, Ipv4Error, Ipv4Packet, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::wire::tcp::{self, TcpPacket};
use crate::wire::{checksum, get16, get32, udp};

/// What [`State::classify`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Class {
    /// TCP or UDP to forward: the classifier wrote its key, flags,
    /// listener (none for a reply) and owner into the [`Staged`] entry it
    /// was given. (No payload here: a variant's payload, copied with the
    /// enum, is stored piece by piece and read back whole, which stalls
    /// on store forwarding in the burst loop.)
    Flow,
    Arp,
    Icmp,
    /// An ICMP error about a flow through lbd: the classifier wrote the
    /// key that flow's packets arrive with (see `icmp_error`) and its
    /// owner into the [`Staged`] entry it was given.
    IcmpError,
    /// TCP or UDP for the host (a port's own address, where no listener
    /// is): up to that port's kernel interface.
    Kernel(PortIndex),
    /// A fragment of a TCP or UDP datagram (see `fragment`).
    Fragment,
    Drop(DropReason),
}

impl<P: Packet> State<P> {
    /// The first look at a packet: validation, and for TCP/UDP the flow,
    /// its direction and its owner. Reads only; decides nothing yet. A
    /// flow's key, flags, listener and owner go into `flow`, in place.
    #[inline(always)]
    pub(super) fn classify(&self, snap: &Snapshot, pkt: &P, flow: &mut Staged) -> Class {
        let Some(port) = snap.ports.get(usize::from(pkt.port())) else {
            // Only a bug in an adapter could get here.
            return Class::Drop(DropReason::WrongDstMac);
        };
        let data = pkt.data();
        if let Some(c) = self.classify_fast(snap, port, data, pkt.packet_len(), flow) {
            return c;
        }
        self.classify_full(snap, port, data, pkt.packet_len(), flow)
    }

    /// Every check, in order, for any frame; names the reason for a drop.
    /// `data` is the first segment of a packet of `pkt_len` bytes.
    pub(super) fn classify_full(
        &self,
        snap: &Snapshot,
        port: &PortView,
        data: &[u8],
        pkt_len: usize,
        flow: &mut Staged,
    ) -> Class {
        if data.len() < ethernet::HEADER_LEN {
            return Class::Drop(DropReason::Truncated);
        }
        let dst = ethernet::mac_at(data, ETH_DST.start);
        if dst != port.mac && !dst.is_broadcast() {
            return Class::Drop(DropReason::WrongDstMac);
        }
        match get16(data, ETHERTYPE) {
            ETHERTYPE_IPV4 => {}
            ETHERTYPE_ARP => return Class::Arp,
            ETHERTYPE_VLAN | ETHERTYPE_QINQ => return Class::Drop(DropReason::VlanTagged),
            _ => return Class::Drop(DropReason::UnsupportedEthertype),
        }
        let l3_len = pkt_len - IPV4;
        let ip = match Ipv4Packet::new_checked_in(&data[IPV4..], l3_len) {
            Ok(ip) => ip,
            Err(e) => {
                return Class::Drop(match e {
                    Ipv4Error::Truncated => DropReason::Truncated,
                    Ipv4Error::BadHeader => DropReason::IpBadHeader,
                    Ipv4Error::Options => DropReason::IpOptions,
                    Ipv4Error::BadTotalLength => DropReason::IpBadLength,
                })
            }
        };
        if !ip.verify_checksum() {
            return Class::Drop(DropReason::IpBadChecksum);
        }
        if ip.is_fragment() {
            return match ip.protocol() {
                PROTO_TCP | PROTO_UDP => Class::Fragment,
                _ => Class::Drop(DropReason::IpFragment),
            };
        }
        let (src, dst, proto, ttl) = (ip.src_u32(), ip.dst_u32(), ip.protocol(), ip.ttl());
        // The L4 header must sit in the first segment; the rewrite touches
        // nothing beyond it.
        let l4_len = usize::from(ip.total_len()) - ip.header_len();
        let l4 = ip.payload();
        let (sport, dport, flags) = match proto {
            PROTO_TCP => {
                if l4_len < tcp::MIN_HEADER_LEN || l4.len() < tcp::MIN_HEADER_LEN {
                    return Class::Drop(DropReason::Truncated);
                }
                match TcpPacket::new_checked(l4) {
                    Some(t) => (t.src_port(), t.dst_port(), t.flags()),
                    None => return Class::Drop(DropReason::L4BadHeader),
                }
            }
            PROTO_UDP => {
                if l4_len < udp::HEADER_LEN || l4.len() < udp::HEADER_LEN {
                    return Class::Drop(DropReason::Truncated);
                }
                // The UDP length may cover bytes in later segments.
                let ulen = usize::from(get16(l4, udp::field::LENGTH));
                if ulen < udp::HEADER_LEN || ulen > l4_len {
                    return Class::Drop(DropReason::L4BadHeader);
                }
                (get16(l4, udp::field::SRC_PORT), get16(l4, udp::field::DST_PORT), 0)
            }
            PROTO_ICMP => return self.icmp_class(snap, dst, ttl, l4, flow),
            _ => return Class::Drop(DropReason::UnsupportedProtocol),
        };
        self.flow_class(snap, FlowKey::new(src, dst, sport, dport, proto), flags, ttl, flow)
    }

    /// The verdict on a valid TCP/UDP packet: to a listener, to a local
    /// address nothing listens on, or a reply to forward; and its owner.
    /// For a flow, its key, flags, listener and owner go into `flow`.
    #[inline(always)]
    pub(super) fn flow_class(&self, snap: &Snapshot, key: FlowKey, flags: u8, ttl: u8, flow: &mut Staged) -> Class {
        let (listener, owner) = match self.direction(snap, &key) {
            Some(Some(listener)) => (Some(listener), self.flow_owner(&key, true)),
            Some(None) => return self.host_bound(snap, key.dst()),
            None => (None, self.flow_owner(&key, false)),
        };
        if ttl <= 1 {
            return Class::Drop(DropReason::TtlExceeded);
        }
        flow.key = key;
        flow.flags = flags;
        flow.listener = listener;
        flow.owner = owner;
        Class::Flow
    }

    /// The worker owning the flow of a packet arriving with `key`, a
    /// `request` (the client endpoint is its source) or a reply (its
    /// destination), under the instance's owner-shard key. Everything
    /// steered by flow (its packets, ICMP errors about it) must use this
    /// one function: the fixed key's `crate::flow::owner_shard` agrees
    /// with it only by chance, so a packet steered by that reaches a
    /// worker without the session about half the time with two workers.
    #[inline(always)]
    pub(super) fn flow_owner(&self, key: &FlowKey, request: bool) -> usize {
        if request {
            self.owners.owner(key.src(), key.sport(), self.workers)
        } else {
            self.owners.owner(key.dst(), key.dport(), self.workers)
        }
    }

    /// A TCP/UDP packet to local address `dst` that no listener serves:
    /// for the host when `dst` is the address of a port with a kernel
    /// interface, nobody's otherwise.
    #[inline]
    pub(super) fn host_bound(&self, snap: &Snapshot, dst: u32) -> Class {
        match snap.local(dst) {
            Some(LocalAddress::Port(p)) if snap.ports[usize::from(p)].kernel => Class::Kernel(p),
            _ => Class::Drop(DropReason::NoListener),
        }
    }

    /// Whether `key` goes to one of our addresses: `Some(Some(listener))`
    /// for a listener's tuple, `Some(None)` for a local address nothing
    /// listens on, `None` for anything else (a reply to forward).
    #[inline]
    pub(super) fn direction(&self, snap: &Snapshot, key: &FlowKey) -> Option<Option<ListenerPos>> {
        let lk = crate::snapshot::listener_key(key.dst(), key.proto(), key.dport());
        let (memo_key, memo_gen, memo_pos) = self.listener_memo.get();
        if memo_key == lk && memo_gen == snap.generation {
            return Some(Some(memo_pos));
        }
        snap.local(key.dst())?;
        let pos = snap.listener_position(key.dst(), key.proto(), key.dport());
        if let Some(p) = pos {
            self.listener_memo.set((lk, snap.generation, p));
        }
        Some(pos)
    }

    /// [`Self::classify`] for the packets that make up nearly all traffic:
    /// untagged IPv4 without options or fragmentation, TCP or UDP, to the
    /// port's own MAC, every header in the first segment. Reads fixed-size
    /// arrays, so the checks compile away. `None` sends the packet through
    /// the full checks, which reach the same answer for these packets and
    /// name the reason for the others.
    #[inline(always)]
    pub(super) fn classify_fast(
        &self,
        snap: &Snapshot,
        port: &PortView,
        data: &[u8],
        pkt_len: usize,
        flow: &mut Staged,
    ) -> Option<Class> {
        let h: &[u8; UDP_HEADERS_LEN] = data.get(..UDP_HEADERS_LEN)?.try_into().ok()?;
        if get16(h, ETHERTYPE) != ETHERTYPE_IPV4
            || h[IP_VER_IHL] != ipv4::VER_IHL_NO_OPTIONS
            || h[ETH_DST] != port.mac.0
        {
            return None;
        }
        let total = usize::from(get16(h, IP_LENGTH));
        if total < ipv4::MIN_HEADER_LEN + udp::HEADER_LEN
            || total + IPV4 > pkt_len
            || get16(h, IP_FLG_OFF) & ipv4::FRAGMENT_MASK != 0
        {
            return None;
        }
        if !checksum::ipv4_header_valid(h[IP_HEADER].try_into().expect("20 bytes")) {
            return None;
        }
        let (proto, src, dst) = (h[IP_PROTOCOL], get32(h, IP_SRC_ADDR), get32(h, IP_DST_ADDR));
        let (sport, dport) = (get16(h, L4_SRC_PORT), get16(h, L4_DST_PORT));
        let l4_len = total - ipv4::MIN_HEADER_LEN;
        let flags = match proto {
            PROTO_TCP => {
                let t: &[u8; TCP_HEADERS_LEN] = data.get(..TCP_HEADERS_LEN)?.try_into().ok()?;
                let off = usize::from(t[TCP_DATA_OFF] >> 4) * 4;
                if total < ipv4::MIN_HEADER_LEN + tcp::MIN_HEADER_LEN
                    || off < tcp::MIN_HEADER_LEN
                    || off > l4_len
                    || L4 + off > data.len()
                {
                    return None;
                }
                t[TCP_FLAGS]
            }
            PROTO_UDP => {
                let ulen = usize::from(get16(h, UDP_LENGTH));
                if ulen < udp::HEADER_LEN || ulen > l4_len {
                    return None;
                }
                0
            }
            _ => return None,
        };
        Some(self.flow_class(snap, FlowKey::new(src, dst, sport, dport, proto), flags, h[IP_TTL], flow))
    }
}
