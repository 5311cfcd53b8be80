//! The flow path: a request finds or creates its session, a reply finds
//! its own; both then take the one forward tail (rewrite, count, route,
//! next hop, TX).

use super::synproxy::SYN_PROXIED;
use super::{Io, Packet, Staged, State, NEXT_HOP_MEMO};
use crate::config::{NonSynPolicy, RemovedBackendPolicy, SynProxyMode};
use crate::counters::{DropReason, Event};
use crate::flow::FlowKey;
use crate::ids::{BackendId, PortIndex};
use crate::nat::{self, Nat, Rewrite};
use crate::neighbor::{Parked, Resolution};
use crate::session::{Direction, InsertError, Session, SessionState};
use crate::snapshot::{ListenerView, Snapshot};
use crate::wire::frame::{IPV4, IP_SRC_ADDR};
use crate::wire::get32;
use crate::wire::ipv4::PROTO_TCP;
use crate::wire::tcp::{FLAG_ACK, FLAG_FIN, FLAG_RST, FLAG_SYN};

/// What a request's session lookup comes to (see `State::known_session`).
enum Known {
    /// A session to forward on.
    Live(u32),
    /// No session: a new flow, maybe carrying the TCP state of a session
    /// just removed with its backend.
    NewFlow {
        carried: Option<SessionState>,
    },
    /// The session was removed with its backend: answer the client with a
    /// RST.
    ResetClient,
    Discard(DropReason),
}

/// The state a new flow's session starts in, and whether it is a
/// rescheduled mid-connection flow; or why it gets none. A TCP flow starts
/// with a SYN, unless it carries the state of a moved session or the
/// listener's non-SYN policy lets a consistent scheduler take it over.
#[inline]
fn new_flow_state(
    l: &ListenerView,
    key: &FlowKey,
    flags: u8,
    carried: Option<SessionState>,
) -> Result<(SessionState, bool), DropReason> {
    if key.proto() != PROTO_TCP {
        return Ok((SessionState::Udp, false));
    }
    if let Some(c) = carried {
        return Ok((c, false));
    }
    let syn = flags & FLAG_SYN != 0 && flags & FLAG_ACK == 0;
    if syn {
        return Ok((SessionState::TcpSynSent, false));
    }
    if l.non_syn == NonSynPolicy::Drop || !l.scheduler.is_consistent() {
        return Err(DropReason::TcpNoSession);
    }
    Ok((SessionState::TcpEstablished, true))
}

impl<P: Packet> State<P> {
    #[inline]
    pub(super) fn flow(&mut self, snap: &Snapshot, pkt: P, s: &Staged, io: &mut impl Io<P>) {
        match s.listener {
            Some(i) => self.request(snap, &snap.listeners[usize::from(i)], pkt, s, io),
            None => self.reply(snap, pkt, s, io),
        }
    }

    /// Client→VIP: find or create the session, then forward to its backend.
    fn request(&mut self, snap: &Snapshot, l: &ListenerView, mut pkt: P, s: &Staged, io: &mut impl Io<P>) {
        let (key, flags, found, pick, hash) = (&s.key, s.flags, s.found, s.pick, s.hash);
        // Tested here, not only inside: the call (not inlined) cost 18
        // instructions per request to a listener without limits.
        if l.guarded {
            let len = pkt.packet_len();
            if let Err(reason) = self.admission.packet(l, key.src(), len, self.now, &self.counters.admission) {
                return self.discard(reason, pkt, io);
            }
        }
        let s = match self.known_session(snap, l, key, found) {
            Known::Live(slot) if self.sessions.session(slot).flags & SYN_PROXIED != 0 => {
                return self.proxied_request(snap, slot, pkt, key, flags, io);
            }
            Known::Live(slot) => self.touch(slot, key, flags, Direction::Request),
            Known::ResetClient => return self.reset_client(snap, pkt, io),
            Known::Discard(reason) => return self.discard(reason, pkt, io),
            Known::NewFlow { carried } => {
                // A carried flow was admitted when it began. Under
                // `syn_proxy: on` a pure ACK without session either proves
                // a cookie, whose SYN passed the group (each connection
                // counts once on its rule), or is dropped as a bad cookie.
                let proxied_ack =
                    l.syn_proxy == SynProxyMode::On && key.proto() == PROTO_TCP && flags & (FLAG_SYN | FLAG_RST) == 0;
                if let (Some(sg), None, false) = (&l.security, carried, proxied_ack) {
                    if !crate::security::admit(sg, key.src(), &self.counters.security_rules) {
                        return self.discard(DropReason::SecurityGroupDenied, pkt, io);
                    }
                }
                if carried.is_none() && l.syn_proxy != SynProxyMode::Off && key.proto() == PROTO_TCP {
                    match self.syn_proxy_new_flow(snap, l, pkt, s, io) {
                        Some(p) => pkt = p,
                        None => return,
                    }
                }
                let (state, rescheduled) = match new_flow_state(l, key, flags, carried) {
                    Ok(s) => s,
                    Err(reason) => return self.discard(reason, pkt, io),
                };
                // A reset with no session makes none: not a new connection.
                if carried.is_none() && flags & FLAG_RST == 0 {
                    let admitted = self.admission.new_connection(l, key.src(), self.now, &self.counters.admission);
                    if let Err(reason) = admitted {
                        return self.discard(reason, pkt, io);
                    }
                }
                // Picked ahead in the burst's prefetch pass, or now.
                let Some(bi) = pick.or_else(|| self.choose(snap, l, key)) else {
                    return self.discard(DropReason::NoBackend, pkt, io);
                };
                let new = self.session_for(l, bi, key, state);
                if flags & FLAG_RST != 0 && carried.is_none() {
                    // A reset for a connection we no longer track: pass it to
                    // the backend picked so it can clean up, but do not
                    // create state for it.
                    return self.forward(snap, pkt, &new, Direction::Request, io);
                }
                let backend = new.backend_id;
                match self.insert_evicting_half_open(snap, new, hash, rescheduled) {
                    Ok(slot) => {
                        self.admission.session_opened(l, key.src(), self.now);
                        if l.persistence_ms.is_some() {
                            // Every new connection restarts the client's
                            // persistence time.
                            let table = &self.shared.persistence;
                            table.remember(table.key(l.id, key.src()), backend, self.now);
                        }
                        // The session was made from this packet, seen now,
                        // in the state its flags give (a SYN half-open, a
                        // datagram UDP, a rescheduled segment established),
                        // which the TCP state machine would keep. A carried
                        // state (SYN-ACK seen, say, and this the ACK), or a
                        // FIN on the first segment, still goes through it.
                        if carried.is_none() && flags & (FLAG_FIN | FLAG_RST) == 0 {
                            new
                        } else {
                            self.touch(slot, key, flags, Direction::Request)
                        }
                    }
                    Err(reason) => return self.discard(reason, pkt, io),
                }
            }
        };
        self.forward(snap, pkt, &s, Direction::Request, io)
    }

    /// Backend→client: the session must exist; forward to the client.
    fn reply(&mut self, snap: &Snapshot, pkt: P, s: &Staged, io: &mut impl Io<P>) {
        let (key, flags, found) = (&s.key, s.flags, s.found);
        let Some((slot, Direction::Reply)) = found else {
            return self.discard(DropReason::NoSession, pkt, io);
        };
        if self.expired(snap, slot) {
            self.expire_now(slot);
            return self.discard(DropReason::NoSession, pkt, io);
        }
        if self.sessions.session(slot).flags & SYN_PROXIED != 0 {
            return self.proxied_reply(snap, slot, pkt, key, flags, io);
        }
        let s = self.touch(slot, key, flags, Direction::Reply);
        self.forward(snap, pkt, &s, Direction::Reply, io)
    }

    /// What the session lookup's answer means for a request: a live
    /// session; none (maybe after removing one, carrying its TCP state on);
    /// or an answer that ends here. Applies the expiry and the
    /// removed-backend policy on the way.
    #[inline]
    fn known_session(
        &mut self,
        snap: &Snapshot,
        l: &ListenerView,
        key: &FlowKey,
        found: Option<(u32, Direction)>,
    ) -> Known {
        match found {
            None => Known::NewFlow { carried: None },
            Some((_, Direction::Reply)) => Known::Discard(DropReason::NatTupleConflict),
            Some((slot, Direction::Request)) if self.expired(snap, slot) => {
                // Idle past its timeout but not swept yet: gone, as it
                // would be a moment later.
                self.expire_now(slot);
                Known::NewFlow { carried: None }
            }
            Some((slot, Direction::Request)) => {
                let s = self.sessions.session(slot);
                let configured = snap.backend_serves(s.backend_id, l.id);
                match (configured, snap.removed_backend) {
                    (true, _) | (false, RemovedBackendPolicy::Keep) => Known::Live(slot),
                    (false, policy) => self.leave_removed_backend(slot, policy, key),
                }
            }
        }
    }

    /// The session in `slot` points at a backend no longer configured for
    /// its listener and the policy says it does not stay: remove it, then
    /// reset a TCP client (policy `reset`) or let the flow move on as a new
    /// one, carrying its TCP state.
    fn leave_removed_backend(&mut self, slot: u32, policy: RemovedBackendPolicy, key: &FlowKey) -> Known {
        let old = self.sessions.remove(slot);
        self.close_counters(&old);
        if policy == RemovedBackendPolicy::Reset && key.proto() == PROTO_TCP {
            self.counters.event(Event::SessionsReset);
            return Known::ResetClient;
        }
        // Reschedule (and UDP under reset): on as a new flow.
        self.counters.event(Event::SessionsMoved);
        Known::NewFlow { carried: Some(old.state) }
    }

    /// The session of a new flow of listener `l` to its backend at
    /// position `bi`, not yet in the table.
    #[inline]
    pub(super) fn session_for(&self, l: &ListenerView, bi: u16, key: &FlowKey, state: SessionState) -> Session {
        let b = &l.backends[usize::from(bi)];
        Session::new(
            key.proto(),
            (key.src(), key.sport()),
            (key.dst(), key.dport()),
            (b.addr, b.port),
            l.id,
            b.id,
            state,
            self.now,
        )
    }

    /// Puts a new session in the table and counts it; the reason to drop
    /// the packet when it cannot. `hq` is the hash of its request key.
    #[inline]
    pub(super) fn insert_session(&mut self, s: Session, hq: u64, rescheduled: bool) -> Result<u32, DropReason> {
        let (lid, bid) = (s.listener, s.backend_id);
        match self.sessions.insert_hashed(s, hq) {
            Ok(slot) => {
                self.counters.event(Event::SessionsCreated);
                if rescheduled {
                    self.counters.event(Event::SessionsRescheduled);
                }
                self.counters.listeners[usize::from(lid)].sessions_created.inc();
                self.counters.backends[usize::from(bid)].sessions_created.inc();
                self.counters.sessions_active.set(self.sessions.len() as u64);
                Ok(slot)
            }
            Err(InsertError::Full) => Err(DropReason::SessionTableFull),
            Err(InsertError::Conflict) => Err(DropReason::NatTupleConflict),
        }
    }

    /// Notes a packet of the session in `slot`: its time and TCP state.
    /// Returns a copy for the forward tail.
    #[inline(always)]
    pub(super) fn touch(&mut self, slot: u32, key: &FlowKey, flags: u8, dir: Direction) -> Session {
        // The copy is taken before the writes and brought up to date from
        // registers: read back from the table right after them, it would
        // wait for store forwarding (a wide load over narrower stores).
        let mut s = *self.sessions.session(slot);
        s.last_seen = self.now;
        self.sessions.set_last_seen(slot, self.now);
        if key.proto() == PROTO_TCP {
            (s.state, s.flags) = self.sessions.track_tcp(slot, flags, dir);
        }
        s
    }

    /// The forward tail every flow packet takes: the rewrite of the
    /// forwarding mode (NAT), the session's counters, then route, next hop
    /// and TX. Inlined into each caller, so the direction is a constant
    /// there and the mode's rewrite is called directly.
    #[inline(always)]
    pub(super) fn forward(&mut self, snap: &Snapshot, mut pkt: P, s: &Session, dir: Direction, io: &mut impl Io<P>) {
        // One comparison for the packets that fit every port.
        if pkt.packet_len() > IPV4 + usize::from(snap.min_mtu) {
            let Some(fits) = self.fit_mtu(snap, pkt, s, dir, io) else { return };
            pkt = fits;
        }
        let to = match dir {
            Direction::Request => Nat.request(pkt.data_mut(), s),
            Direction::Reply => Nat.reply(pkt.data_mut(), s),
        };
        let len = pkt.packet_len();
        self.counters.listeners[usize::from(s.listener)].count(dir, len);
        self.counters.backends[usize::from(s.backend_id)].count(dir, len);
        match dir {
            Direction::Request => self.route_to_backend(snap, pkt, s.backend_id, to, io),
            Direction::Reply => self.route(snap, pkt, to, io),
        }
    }

    /// Whether the session in `slot` is idle past its state's timeout.
    #[inline]
    pub(super) fn expired(&self, snap: &Snapshot, slot: u32) -> bool {
        let s = self.sessions.session(slot);
        self.now.wrapping_sub(s.last_seen) > snap.timeouts.get(s.state)
    }

    pub(super) fn expire_now(&mut self, slot: u32) {
        let s = self.sessions.remove(slot);
        self.close_counters(&s);
        self.counters.event(Event::SessionsExpired);
    }

    pub(super) fn close_counters(&mut self, s: &Session) {
        self.admission.session_closed(s.listener.0, s.client_ip);
        self.counters.listeners[usize::from(s.listener)].sessions_closed.inc();
        self.counters.backends[usize::from(s.backend_id)].sessions_closed.inc();
        self.counters.sessions_active.set(self.sessions.len() as u64);
    }

    /// Answers a client's TCP segment with a RST from the VIP (its backend
    /// is gone and the policy says reset).
    fn reset_client(&mut self, snap: &Snapshot, mut pkt: P, io: &mut impl Io<P>) {
        let client = get32(pkt.data(), IP_SRC_ADDR);
        let len = nat::tcp_reset_reply(pkt.data_mut());
        if !pkt.truncate(len) {
            return self.discard(DropReason::Truncated, pkt, io);
        }
        self.route(snap, pkt, client, io)
    }

    pub(super) fn route(&mut self, snap: &Snapshot, pkt: P, dst: u32, io: &mut impl Io<P>) {
        self.send_by(snap, pkt, snap.routes.lookup(dst), io)
    }

    /// [`Self::route`] to `dst`, the address of backend `id`: the route
    /// the snapshot looked up for that backend when it was built.
    #[inline]
    pub(super) fn route_to_backend(&mut self, snap: &Snapshot, pkt: P, id: BackendId, dst: u32, io: &mut impl Io<P>) {
        self.send_by(snap, pkt, snap.route_to_backend(id, dst), io)
    }

    /// Sends by a route's answer (egress port, next hop); no answer is no
    /// route.
    #[inline(always)]
    fn send_by(&mut self, snap: &Snapshot, pkt: P, hop: Option<(PortIndex, u32)>, io: &mut impl Io<P>) {
        match hop {
            Some((port, next_hop)) => self.send(snap, pkt, port, next_hop, io),
            None => self.discard(DropReason::NoRoute, pkt, io),
        }
    }

    /// Addresses the frame to `next_hop` on `port` and queues it, or parks
    /// it until ARP resolves the next hop. A next hop remembered is
    /// nearly every packet's: that answer inline, the rest not (the call
    /// and its register saves cost a forwarded packet about twenty
    /// instructions).
    #[inline(always)]
    pub(super) fn send(&mut self, snap: &Snapshot, mut pkt: P, port: PortIndex, next_hop: u32, io: &mut impl Io<P>) {
        // Traffic goes to few next hops (backends, the gateway): remember
        // the last answers while the neighbour cache has not changed.
        let key = next_hop_key(port, next_hop);
        let memo = &self.next_hop_memo[next_hop_memo_index(port, next_hop)];
        if memo.0 == key && memo.2 == self.neighbors.epoch() {
            nat::set_macs(pkt.data_mut(), snap.ports[usize::from(port)].mac, memo.1);
            return io.tx(port, pkt);
        }
        self.send_resolving(snap, pkt, port, next_hop, io)
    }

    /// The rest of [`Self::send`]: a next hop not remembered, or not since
    /// the neighbour cache changed.
    #[inline(never)]
    fn send_resolving(&mut self, snap: &Snapshot, mut pkt: P, port: PortIndex, next_hop: u32, io: &mut impl Io<P>) {
        let key = next_hop_key(port, next_hop);
        let memo = &mut self.next_hop_memo[next_hop_memo_index(port, next_hop)];
        let resolution = self.neighbors.resolve(port, next_hop, self.now);
        if let Resolution::Hit(mac) = resolution {
            *memo = (key, mac, self.neighbors.epoch());
        }
        match resolution {
            Resolution::Hit(mac) => {
                nat::set_macs(pkt.data_mut(), snap.ports[usize::from(port)].mac, mac);
                io.tx(port, pkt);
            }
            Resolution::Miss { request } => {
                if request {
                    self.arp_request(snap, port, next_hop, io);
                }
                match self.pending.push(Parked { packet: pkt, port, next_hop, since: self.now }) {
                    Ok(()) => {
                        self.counters.event(Event::NeighborParked);
                        self.counters.parked.set(self.pending.len() as u64);
                    }
                    Err(p) => self.discard(DropReason::NeighborQueueFull, p.packet, io),
                }
            }
        }
    }
}

/// A next hop's key in the memo of [`State::send`] (the top bit marks an
/// entry as used).
#[inline(always)]
fn next_hop_key(port: PortIndex, next_hop: u32) -> u64 {
    1 << 48 | u64::from(port.0) << 32 | u64::from(next_hop)
}

/// Where a next hop's entry sits in that memo.
#[inline(always)]
fn next_hop_memo_index(port: PortIndex, next_hop: u32) -> usize {
    (next_hop as usize ^ usize::from(port)) & (NEXT_HOP_MEMO - 1)
}
