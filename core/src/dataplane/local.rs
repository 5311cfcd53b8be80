//! Local answers: ARP (requests for our addresses, learning neighbours,
//! our own requests) and ICMP echo; what the host's kernel needs of ARP and
//! ICMP goes up to it (the exception path).

use super::{Io, Packet, State};
use crate::counters::{DropReason, Event};
use crate::ids::PortIndex;
use crate::neighbor::Learned;
use crate::snapshot::{LocalAddress, Snapshot};
use crate::wire::arp::{self, ArpPacket, ArpRepr};
use crate::wire::ethernet::{self, EthernetRepr, MacAddr, ETHERTYPE_ARP};
use crate::wire::frame::{ETH_SRC, IPV4, IP_DST_ADDR, IP_LENGTH, L4};
use crate::wire::icmp;
use crate::wire::ipv4::{self, Ipv4Packet, Ipv4Repr};
use crate::wire::{get16, get32};

impl<P: Packet> State<P> {
    pub(super) fn arp_request(&self, snap: &Snapshot, port: PortIndex, target: u32, io: &mut impl Io<P>) {
        let p = &snap.ports[usize::from(port)];
        let Some(mut pkt) = io.alloc(ethernet::MIN_FRAME_LEN, port) else {
            self.counters.event(Event::MbufAllocFailed);
            return;
        };
        let b = pkt.data_mut();
        b.fill(0);
        EthernetRepr { src: p.mac, dst: MacAddr::BROADCAST, ethertype: ETHERTYPE_ARP }.emit(b);
        let request = ArpRepr {
            op: arp::OP_REQUEST,
            sender_mac: p.mac,
            sender_ip: p.addr,
            target_mac: MacAddr::ZERO,
            target_ip: target,
        };
        request.emit(&mut b[ethernet::HEADER_LEN..]);
        self.counters.event(Event::ArpRequestsSent);
        io.tx(port, pkt);
    }

    pub(super) fn arp(&mut self, snap: &Snapshot, mut pkt: P, from_handoff: bool, io: &mut impl Io<P>) {
        let in_port = pkt.port();
        let port = &snap.ports[usize::from(in_port)];
        let data = pkt.data();
        let Some(a) = ArpPacket::new_checked(&data[ethernet::HEADER_LEN..]) else {
            if from_handoff {
                return io.free(pkt);
            }
            return self.discard(DropReason::ArpMalformed, pkt, io);
        };
        let (op, sha, spa, tpa) = (a.operation(), a.sender_mac(), u32::from(a.sender_ip()), u32::from(a.target_ip()));
        let ours = snap.owns_on_port(tpa, in_port);
        // Learn only plausible neighbours: on the link, not us, unicast MAC.
        let plausible =
            port.on_link(spa) && spa != port.addr && spa != port.net && !sha.is_multicast() && sha != MacAddr::ZERO;
        let learned = if plausible {
            // RFC 826: refresh a known sender always; add a new one only
            // when the packet is addressed to us. A copy from another worker
            // was vetted there.
            self.neighbors.learn(in_port, spa, sha, self.now, ours || from_handoff)
        } else {
            Learned::Ignored
        };
        if learned != Learned::Ignored {
            let mac = sha;
            let src_mac = port.mac;
            self.pending.release(in_port, spa, |p| {
                let mut pkt = p.packet;
                ethernet::set_addresses(pkt.data_mut(), src_mac, mac);
                io.tx(in_port, pkt);
            });
            self.counters.parked.set(self.pending.len() as u64);
        }
        if from_handoff {
            return io.free(pkt);
        }
        if learned != Learned::Ignored && self.workers > 1 {
            self.share_arp(&pkt, io);
        }
        if op == arp::OP_REQUEST && ours {
            // Turn the request into the reply in place.
            let my_mac = port.mac;
            let b = pkt.data_mut();
            EthernetRepr { src: my_mac, dst: sha, ethertype: ETHERTYPE_ARP }.emit(b);
            let reply =
                ArpRepr { op: arp::OP_REPLY, sender_mac: my_mac, sender_ip: tpa, target_mac: sha, target_ip: spa };
            reply.emit(&mut b[ethernet::HEADER_LEN..]);
            self.counters.event(Event::ArpRepliesSent);
            return io.tx(in_port, pkt);
        }
        if op == arp::OP_REPLY && tpa == port.addr && port.kernel {
            // An answer to the kernel's own request (it resolves its
            // neighbours itself): learned here too, and passed up, which is
            // what the packet is counted as.
            return self.pass_up(in_port, pkt, io);
        }
        if learned != Learned::Ignored {
            self.counters.event(Event::ArpLearned);
            return io.free(pkt);
        }
        if op == arp::OP_REQUEST {
            return self.discard(DropReason::ArpNotOurs, pkt, io);
        }
        self.counters.event(Event::ArpIgnored);
        io.free(pkt)
    }

    /// Copies an ARP packet to every other worker so all neighbour caches
    /// learn what one worker heard.
    fn share_arp(&self, pkt: &P, io: &mut impl Io<P>) {
        let bytes = pkt.data();
        for w in (0..self.workers).filter(|w| *w != self.worker) {
            match io.alloc(bytes.len(), pkt.port()) {
                Some(mut copy) => {
                    copy.data_mut().copy_from_slice(bytes);
                    io.handoff(w, copy);
                }
                None => self.counters.event(Event::MbufAllocFailed),
            }
        }
    }

    /// Answers echo requests to our addresses; passes other ICMP for a
    /// port address up to the kernel (errors and echo replies for the
    /// host's own connections and pings) when the port has an exception
    /// interface; drops the rest.
    pub(super) fn icmp(&mut self, snap: &Snapshot, mut pkt: P, io: &mut impl Io<P>) {
        let in_port = pkt.port();
        let data = pkt.data();
        let dst = get32(data, IP_DST_ADDR);
        let total = usize::from(get16(data, IP_LENGTH));
        let Some(local) = snap.local(dst) else {
            return self.discard(DropReason::IcmpUnsupported, pkt, io);
        };
        if total < ipv4::MIN_HEADER_LEN + icmp::HEADER_LEN || data.len() < L4 + icmp::HEADER_LEN {
            return self.discard(DropReason::Truncated, pkt, io);
        }
        if !icmp::is_echo_request(&data[L4..]) {
            return match local {
                LocalAddress::Port(p) if snap.ports[usize::from(p)].kernel => self.pass_up(p, pkt, io),
                _ => self.discard(DropReason::IcmpUnsupported, pkt, io),
            };
        }
        // An echo flood must not turn lbd into a reflector at line rate.
        if !self.echo_replies.take(self.now) {
            return self.discard(DropReason::IcmpRateLimited, pkt, io);
        }
        let src_mac = ethernet::mac_at(data, ETH_SRC.start);
        let my_mac = snap.ports[usize::from(in_port)].mac;
        let b = pkt.data_mut();
        ethernet::set_addresses(b, my_mac, src_mac);
        let request = Ipv4Repr::parse(&Ipv4Packet::new_checked_in(&b[IPV4..], total).expect("validated before"));
        Ipv4Repr { src: request.dst, dst: request.src, ttl: ipv4::DEFAULT_TTL, ..request }.emit(&mut b[IPV4..]);
        icmp::echo_request_into_reply(&mut b[L4..]);
        self.counters.event(Event::IcmpEchoReplies);
        io.tx(in_port, pkt)
    }
}
