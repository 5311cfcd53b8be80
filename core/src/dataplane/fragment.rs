//! IPv4 fragments of TCP and UDP: the two stages of [`crate::fragments`]
//! (why steering, not reassembly, is explained there). A fragment meets
//! the other fragments of its datagram at the datagram's fragment worker,
//! which sends them all, first fragment first, to the owner of the flow;
//! the owner forwards the first through the flow path and the rest with
//! the same address rewrite.

use super::classify::Class;
use super::{Io, Packet, Staged, State};
use crate::counters::{DropReason, Event};
use crate::flow::FlowKey;
use crate::fragments::{DatagramKey, Datagrams, FragmentLimits, Piece, Recorded};
use crate::ids::PortIndex;
use crate::nat::Endpoint;
use crate::session::{Direction, Session};
use crate::snapshot::Snapshot;
use crate::wire::frame::{IPV4, IP_DST_ADDR, IP_FLG_OFF, IP_LENGTH, IP_PROTOCOL, IP_SRC_ADDR, IP_TTL, L4};
use crate::wire::ipv4::{self, PROTO_TCP, PROTO_UDP};
use crate::wire::{get16, get32, tcp, udp};

/// How often the tables are swept for datagrams past their time.
const SWEEP_INTERVAL_MS: u32 = 50;

/// Where a datagram's fragments go, known from its first fragment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Fate {
    /// The first fragment has not come yet: hold.
    #[default]
    Unknown,
    /// To this worker, the owner of the flow.
    Owner(usize),
    /// Up to the host's kernel through this port's interface.
    Kernel(PortIndex),
    Drop(DropReason),
}

/// A datagram at its fragment worker.
#[derive(Clone, Copy, Debug, Default)]
struct Steered {
    fate: Fate,
    /// Fragments held (in `Fragments::held`) until the fate is known.
    held: usize,
}

/// A worker's fragment tables, both stages.
pub(super) struct Fragments<P> {
    limits: FragmentLimits,
    /// Datagrams this worker is the fragment worker of.
    steered: Datagrams<Steered>,
    /// `limits.max_fragments` places per `steered` slot.
    held: Vec<Option<P>>,
    pub(super) held_total: usize,
    /// Datagrams of flows this worker owns: the session their first
    /// fragment went through (None: it was dropped).
    owned: Datagrams<Option<(Session, Direction)>>,
    last_sweep: u32,
}

impl<P> Fragments<P> {
    pub(super) fn new(limits: FragmentLimits) -> Fragments<P> {
        Fragments {
            limits,
            steered: Datagrams::new(limits.max_datagrams, limits.max_fragments),
            held: (0..limits.max_datagrams * limits.max_fragments).map(|_| None).collect(),
            held_total: 0,
            owned: Datagrams::new(limits.max_datagrams, limits.max_fragments),
            last_sweep: 0,
        }
    }
}

impl<P: Packet> State<P> {
    /// A TCP or UDP fragment (classified, header checksum verified), from a
    /// port or from another worker.
    pub(super) fn fragment(&mut self, snap: &Snapshot, pkt: P, from_handoff: bool, io: &mut impl Io<P>) {
        let d = pkt.data();
        let key = DatagramKey {
            src: get32(d, IP_SRC_ADDR),
            dst: get32(d, IP_DST_ADDR),
            proto: d[IP_PROTOCOL],
            id: get16(d, IPV4 + ipv4::field::IDENT.start..IPV4 + ipv4::field::IDENT.end),
        };
        let steerer = key.worker(&self.owners, self.workers);
        if steerer == self.worker {
            self.steer(snap, key, pkt, io)
        } else if from_handoff {
            // Handed over by its fragment worker, which is not this one:
            // this worker owns the flow.
            self.owned_fragment(snap, key, pkt, io)
        } else {
            io.handoff(steerer, pkt)
        }
    }

    /// Stage one, at the datagram's fragment worker.
    fn steer(&mut self, snap: &Snapshot, key: DatagramKey, pkt: P, io: &mut impl Io<P>) {
        let Some(piece) = piece_of(pkt.data()) else {
            return self.discard(DropReason::IpBadLength, pkt, io);
        };
        let Some(i) = self.frags.steered.find_or_insert(key, self.now) else {
            return self.discard(DropReason::FragmentTableFull, pkt, io);
        };
        let complete = match self.frags.steered.record(i, piece) {
            Recorded::Accepted { complete } => complete,
            Recorded::Rejected(reason) => {
                self.drop_held(i, reason, io);
                return self.discard(reason, pkt, io);
            }
        };
        let mut st = self.frags.steered.value(i);
        if piece.offset == 0 {
            let mut flow = Staged::default();
            st.fate = match self.first_fragment_class(snap, pkt.data(), &mut flow) {
                Class::Flow => Fate::Owner(flow.owner),
                Class::Kernel(port) => Fate::Kernel(port),
                Class::Drop(reason) => Fate::Drop(reason),
                _ => Fate::Drop(DropReason::UnsupportedProtocol),
            };
            let held = st.held;
            st.held = 0;
            self.frags.steered.set_value(i, st);
            self.dispatch(snap, key, st.fate, pkt, io);
            // Then the fragments that came before it, in arrival order.
            let base = i as usize * self.frags.limits.max_fragments;
            for k in base..base + held {
                let p = self.frags.held[k].take().expect("held fragment");
                self.frags.held_total -= 1;
                self.dispatch(snap, key, st.fate, p, io);
            }
        } else if st.fate == Fate::Unknown {
            if self.frags.held_total == self.frags.limits.max_held {
                // The datagram cannot arrive whole now: let it go entirely.
                self.frags.steered.spoil(i, DropReason::FragmentTableFull);
                self.drop_held(i, DropReason::FragmentTableFull, io);
                return self.discard(DropReason::FragmentTableFull, pkt, io);
            }
            self.frags.held[i as usize * self.frags.limits.max_fragments + st.held] = Some(pkt);
            st.held += 1;
            self.frags.held_total += 1;
            self.frags.steered.set_value(i, st);
            self.counters.event(Event::FragmentsHeld);
            // A datagram is not whole without its first fragment.
            return;
        } else {
            self.dispatch(snap, key, st.fate, pkt, io);
        }
        if complete {
            self.frags.steered.remove(i);
            self.counters.event(Event::FragmentDatagramsSteered);
        }
    }

    fn dispatch(&mut self, snap: &Snapshot, key: DatagramKey, fate: Fate, pkt: P, io: &mut impl Io<P>) {
        match fate {
            Fate::Owner(w) if w == self.worker => self.owned_fragment(snap, key, pkt, io),
            Fate::Owner(w) => io.handoff(w, pkt),
            Fate::Kernel(port) => self.pass_up(port, pkt, io),
            Fate::Drop(reason) => self.discard(reason, pkt, io),
            Fate::Unknown => unreachable!("dispatched once known"),
        }
    }

    /// Drops the fragments held for the datagram in steered slot `i`.
    fn drop_held(&mut self, i: u32, reason: DropReason, io: &mut impl Io<P>) {
        let mut st = self.frags.steered.value(i);
        let base = i as usize * self.frags.limits.max_fragments;
        for k in base..base + st.held {
            if let Some(p) = self.frags.held[k].take() {
                self.frags.held_total -= 1;
                self.discard(reason, p, io);
            }
        }
        st.held = 0;
        self.frags.steered.set_value(i, st);
    }

    /// The verdict on a first fragment, as [`Self::classify_full`] gives
    /// it for a whole packet: the L4 header must be in it (RFC 1858), but
    /// the payload lengths cover more than this fragment. A flow's key,
    /// flags, listener and owner go into `flow`.
    fn first_fragment_class(&self, snap: &Snapshot, d: &[u8], flow: &mut Staged) -> Class {
        let total = usize::from(get16(d, IP_LENGTH));
        let l4_len = total - ipv4::MIN_HEADER_LEN;
        let available = l4_len.min(d.len().saturating_sub(L4));
        let (proto, src, dst) = (d[IP_PROTOCOL], get32(d, IP_SRC_ADDR), get32(d, IP_DST_ADDR));
        let l4 = &d[L4..L4 + available];
        let (sport, dport, flags) = match proto {
            PROTO_TCP => match tcp::TcpPacket::new_checked(l4) {
                Some(t) => (t.src_port(), t.dst_port(), t.flags()),
                None if available < tcp::MIN_HEADER_LEN => return Class::Drop(DropReason::Truncated),
                None => return Class::Drop(DropReason::L4BadHeader),
            },
            PROTO_UDP => {
                if available < udp::HEADER_LEN {
                    return Class::Drop(DropReason::Truncated);
                }
                // More fragments follow: the datagram is longer than this one.
                if usize::from(get16(l4, udp::field::LENGTH)) <= l4_len {
                    return Class::Drop(DropReason::L4BadHeader);
                }
                (get16(l4, udp::field::SRC_PORT), get16(l4, udp::field::DST_PORT), 0)
            }
            _ => return Class::Drop(DropReason::IpFragment),
        };
        self.flow_class(snap, FlowKey::new(src, dst, sport, dport, proto), flags, d[IP_TTL], flow)
    }

    /// Stage two, at the owner of the flow: the first fragment takes the
    /// flow path and leaves its session for the later ones.
    fn owned_fragment(&mut self, snap: &Snapshot, key: DatagramKey, mut pkt: P, io: &mut impl Io<P>) {
        let Some(piece) = piece_of(pkt.data()) else {
            return self.discard(DropReason::IpBadLength, pkt, io);
        };
        if piece.offset == 0 {
            let mut s = Staged::default();
            let Class::Flow = self.first_fragment_class(snap, pkt.data(), &mut s) else {
                // The configuration changed between the stages.
                return self.discard(DropReason::NoListener, pkt, io);
            };
            s.hash = self.sessions.hash(&s.key);
            s.found = self.sessions.lookup(&s.key, s.hash);
            self.flow(snap, pkt, &s, io);
            let session = self.sessions.lookup(&s.key, s.hash).map(|(slot, dir)| (*self.sessions.session(slot), dir));
            if let Some(i) = self.frags.owned.find_or_insert(key, self.now) {
                self.frags.owned.set_value(i, session);
                if let Recorded::Accepted { complete: true } = self.frags.owned.record(i, piece) {
                    self.frags.owned.remove(i);
                }
            }
            return;
        }
        let Some(i) = self.frags.owned.find(&key) else {
            return self.discard(DropReason::FragmentOfDropped, pkt, io);
        };
        match self.frags.owned.record(i, piece) {
            Recorded::Accepted { complete } => {
                if complete {
                    self.frags.owned.remove(i);
                }
            }
            Recorded::Rejected(reason) => return self.discard(reason, pkt, io),
        }
        let Some((s, dir)) = self.frags.owned.value(i) else {
            return self.discard(DropReason::FragmentOfDropped, pkt, io);
        };
        if pkt.data()[IP_TTL] <= 1 {
            return self.discard(DropReason::TtlExceeded, pkt, io);
        }
        let to = match dir {
            Direction::Request => {
                crate::fragments::rewrite_address(pkt.data_mut(), Endpoint::Destination, s.backend_ip);
                s.backend_ip
            }
            Direction::Reply => {
                crate::fragments::rewrite_address(pkt.data_mut(), Endpoint::Source, s.vip);
                s.client_ip
            }
        };
        let len = pkt.packet_len();
        self.counters.listeners[usize::from(s.listener)].count(dir, len);
        self.counters.backends[usize::from(s.backend_id)].count(dir, len);
        self.route(snap, pkt, to, io)
    }

    /// Forgets datagrams past `fragments.timeout`; the fragments still held
    /// for a first fragment that never came are dropped.
    pub(super) fn sweep_fragments(&mut self, io: &mut impl Io<P>) {
        let now = self.now;
        if now.wrapping_sub(self.frags.last_sweep) < SWEEP_INTERVAL_MS {
            return;
        }
        self.frags.last_sweep = now;
        let f = &mut self.frags;
        let (c, timeout, per) = (&self.counters, f.limits.timeout_ms, f.limits.max_fragments);
        let (held, held_total) = (&mut f.held, &mut f.held_total);
        f.steered.expire(now, timeout, |i, st, _| {
            let base = i as usize * per;
            for p in held[base..base + st.held].iter_mut().filter_map(Option::take) {
                *held_total -= 1;
                c.count_drop(DropReason::FragmentTimeout);
                io.free(p);
            }
        });
        f.owned.expire(now, timeout, |_, _, _| {});
    }

    /// Whether both stages have forgotten every datagram.
    #[cfg(test)]
    pub(super) fn frags_idle(&self) -> bool {
        self.frags.steered.is_empty() && self.frags.owned.is_empty() && self.frags.held_total == 0
    }

    /// Frees the held fragments (at shutdown).
    pub(super) fn drain_fragments(&mut self, io: &mut impl Io<P>) {
        for p in self.frags.held.iter_mut().filter_map(Option::take) {
            self.counters.count_drop(DropReason::Shutdown);
            io.free(p);
        }
        self.frags.held_total = 0;
    }
}

/// The fragment's place in its datagram, None when it has none.
fn piece_of(d: &[u8]) -> Option<Piece> {
    let total = usize::from(get16(d, IP_LENGTH));
    Piece::new(get16(d, IP_FLG_OFF), total.checked_sub(ipv4::MIN_HEADER_LEN)?)
}
