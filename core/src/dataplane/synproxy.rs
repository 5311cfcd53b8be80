//! The SYN proxy in the flow path (listeners with `syn_proxy: on`, or
//! `auto` while the worker's half-open sessions exceed half their cap).
//!
//! A SYN without session is answered with a SYN cookie from the VIP and
//! leaves no state. A client's ACK without session whose cookie checks
//! creates the session (flag [`SYN_PROXIED`]) and becomes the SYN to the
//! backend, with the client's ISN and the options the cookie kept. The
//! backend's SYN-ACK becomes the ACK that completes its handshake and sets
//! the connection's translation; from then on every segment is translated
//! both ways (`crate::synproxy`). Client segments that carry something
//! and arrive before the backend answered (the proving ACK's own data
//! among them) are held, at most [`HELD_PER_SESSION`] per session in a
//! store of fixed size, and go to the backend, translated, right after
//! the ACK that completes its handshake: a request sent with the
//! handshake waits no retransmission timeout. Those beyond the store, and
//! those whose session goes first, are dropped (`syn_proxy_pending`); TCP
//! sends them again. A pure ACK in that time carries nothing to hold
//! (`syn_proxy_ack_absorbed`). The per-session proxy state sits in a side array indexed by the
//! session's slot, read only for sessions with the flag, so the path of
//! other listeners' sessions is one flag test longer.

use super::{Io, Packet, Staged, State};
use crate::config::SynProxyMode;
use crate::counters::{DropReason, Event};
use crate::flow::FlowKey;
use crate::session::{Direction, SessionState};
use crate::snapshot::{ListenerView, Snapshot};
use crate::synproxy::{self as sp, Accepted, Handshake, Translation, MAX_FRAME};
use crate::wire::frame::TCP_FLAGS;
use crate::wire::tcp::{FLAG_ACK, FLAG_FIN, FLAG_RST, FLAG_SYN};

/// Client segments one proxied session may have held: an initial window
/// (RFC 6928's ten segments), what a client that sends at once after its
/// handshake (a bulk upload, a TLS client hello with early data) has in
/// flight before the backend can answer; with two, a soak's iperf3 runs
/// lost segments to a retransmission timeout. The store
/// (`sessions.syn_proxy_held`) bounds the total.
pub(super) const HELD_PER_SESSION: usize = 10;

/// Held entries the maintenance checks for a departed session per tick.
const HELD_SWEEP_PER_TICK: usize = 64;

/// Session flag: the session's connection runs through the SYN proxy.
pub const SYN_PROXIED: u8 = 4;

/// A proxied session's state, packed in 8 words (zeroed memory is a valid
/// value, so the side array costs nothing until slots are used).
#[derive(Clone, Copy, Debug)]
pub(super) struct ProxyState {
    handshake: Handshake,
    translation: Translation,
    /// The backend's SYN-ACK arrived: `translation` holds.
    ready: bool,
    /// The first of the session's held segments: its entry's index + 1,
    /// 0 for none (the next ones chain from it).
    held: u16,
}

pub(super) type ProxySlot = [u32; 8];

const NO_WSCALE: u32 = 0xf;

impl ProxyState {
    fn pack(&self) -> ProxySlot {
        let h = &self.handshake;
        let (tsv, tse) = h.timestamp.unwrap_or((0, 0));
        let a = h.accepted;
        let t = &self.translation;
        let bits = a.wscale.map_or(NO_WSCALE, |w| u32::from(w & 0xf))
            | u32::from(a.sack_permitted) << 4
            | u32::from(h.timestamp.is_some()) << 5
            | u32::from(self.ready) << 6
            | u32::from(t.window_shift.is_some()) << 7
            | u32::from(t.window_shift.unwrap_or(0) as u8) << 8
            | u32::from(self.held) << 16;
        [h.client_isn, h.cookie, tsv, tse, t.seq_delta, t.ts_delta, u32::from(h.window) | u32::from(a.mss) << 16, bits]
    }

    fn unpack(w: &ProxySlot) -> ProxyState {
        let bits = w[7];
        let ws = bits & 0xf;
        ProxyState {
            handshake: Handshake {
                client_isn: w[0],
                cookie: w[1],
                accepted: Accepted {
                    mss: (w[6] >> 16) as u16,
                    wscale: (ws != NO_WSCALE).then_some(ws as u8),
                    sack_permitted: bits & 1 << 4 != 0,
                },
                timestamp: (bits & 1 << 5 != 0).then_some((w[2], w[3])),
                window: w[6] as u16,
            },
            translation: Translation {
                seq_delta: w[4],
                ts_delta: w[5],
                window_shift: (bits & 1 << 7 != 0).then_some((bits >> 8) as u8 as i8),
            },
            ready: bits & 1 << 6 != 0,
            held: (bits >> 16) as u16,
        }
    }
}

/// One held client segment, with what names its session: the slot and
/// the handshake (a slot's next proxied session has another cookie).
#[derive(Debug)]
struct HeldEntry<P> {
    pkt: Option<P>,
    slot: u32,
    client_isn: u32,
    cookie: u32,
    /// The session's next held entry: index + 1, 0 for none.
    next: u16,
}

/// The worker's store of held client segments: fixed entries and a free
/// list, both sized at start, so holding allocates nothing.
#[derive(Debug)]
pub(super) struct HeldSegments<P> {
    entries: Box<[HeldEntry<P>]>,
    free: Vec<u16>,
    /// Where the sweep for departed sessions' entries goes on.
    cursor: usize,
}

impl<P> HeldSegments<P> {
    pub(super) fn new(capacity: usize) -> HeldSegments<P> {
        let capacity = capacity.min(crate::config::MAX_SYN_PROXY_HELD);
        HeldSegments {
            entries: (0..capacity)
                .map(|_| HeldEntry { pkt: None, slot: 0, client_isn: 0, cookie: 0, next: 0 })
                .collect(),
            free: (0..capacity as u16).rev().collect(),
            cursor: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len() - self.free.len()
    }

    /// Takes the packet of entry `i + 1` and frees the entry; returns the
    /// packet and the next entry of its chain.
    fn take(&mut self, at: u16) -> (Option<P>, u16) {
        let e = &mut self.entries[usize::from(at - 1)];
        let (pkt, next) = (e.pkt.take(), e.next);
        e.next = 0;
        if pkt.is_some() {
            self.free.push(at - 1);
        }
        (pkt, next)
    }
}

impl<P: Packet> State<P> {
    /// Holds a client segment of a proxied session whose backend has not
    /// answered, or drops it: a pure ACK carries nothing TCP would resend,
    /// and the session's places or the store may be full.
    fn hold(&mut self, slot: u32, st: &mut ProxyState, pkt: P, io: &mut impl Io<P>) {
        let d = pkt.data();
        if sp::payload_len(d) == 0 && d[TCP_FLAGS] & (FLAG_FIN | FLAG_RST) == 0 {
            return self.discard(DropReason::SynProxyAckAbsorbed, pkt, io);
        }
        let (mut count, mut last, mut at) = (0, 0u16, st.held);
        while at != 0 {
            count += 1;
            last = at;
            at = self.held.entries[usize::from(at - 1)].next;
        }
        if count >= HELD_PER_SESSION {
            return self.discard(DropReason::SynProxyPending, pkt, io);
        }
        let Some(i) = self.held.free.pop() else {
            return self.discard(DropReason::SynProxyPending, pkt, io);
        };
        let h = &st.handshake;
        self.held.entries[usize::from(i)] =
            HeldEntry { pkt: Some(pkt), slot, client_isn: h.client_isn, cookie: h.cookie, next: 0 };
        if last == 0 {
            st.held = i + 1;
        } else {
            self.held.entries[usize::from(last - 1)].next = i + 1;
        }
        self.counters.event(Event::SynProxyHeld);
    }

    /// Frees the held segments chained from `at`, counting each.
    fn drop_proxy_held(&mut self, mut at: u16, io: &mut impl Io<P>) {
        while at != 0 {
            let (pkt, next) = self.held.take(at);
            if let Some(p) = pkt {
                self.discard(DropReason::SynProxyPending, p, io);
            }
            at = next;
        }
    }

    /// Whether held entry `i` still belongs to a session waiting for its
    /// backend: sessions leave by many ways (expiry, eviction, a backend's
    /// removal), and rather than a hook in each, the maintenance frees
    /// what they left behind.
    fn held_owner_waits(&self, i: usize) -> bool {
        let e = &self.held.entries[i];
        let s = self.sessions.session(e.slot);
        if s.state == SessionState::Free || s.flags & SYN_PROXIED == 0 {
            return false;
        }
        let st = ProxyState::unpack(&self.proxy_slots[e.slot as usize]);
        !st.ready && st.handshake.cookie == e.cookie && st.handshake.client_isn == e.client_isn
    }

    /// Frees a slice of the store's entries whose session went away.
    pub(super) fn sweep_held(&mut self, io: &mut impl Io<P>) {
        let n = self.held.entries.len();
        if self.held.len() == 0 {
            return;
        }
        for _ in 0..HELD_SWEEP_PER_TICK.min(n) {
            let i = self.held.cursor;
            self.held.cursor = (i + 1) % n;
            if self.held.entries[i].pkt.is_some() && !self.held_owner_waits(i) {
                let (pkt, _) = self.held.take(i as u16 + 1);
                if let Some(p) = pkt {
                    self.discard(DropReason::SynProxyPending, p, io);
                }
            }
        }
    }

    /// Frees every held segment (at shutdown).
    pub(super) fn drain_held(&mut self, io: &mut impl Io<P>) {
        for i in 0..self.held.entries.len() {
            if let (Some(p), _) = self.held.take(i as u16 + 1) {
                self.counters.count_drop(DropReason::Shutdown);
                io.free(p);
            }
        }
    }

    /// The sequence translation of the proxied connection in session
    /// `slot`, once its backend's handshake has set one. Before that no
    /// backend segment has reached the client and none of the client's
    /// has reached the backend with an acknowledgment: a quote of either
    /// needs none.
    pub(super) fn proxy_translation(&self, slot: u32) -> Option<Translation> {
        let st = ProxyState::unpack(&self.proxy_slots[slot as usize]);
        st.ready.then_some(st.translation)
    }

    /// Whether a SYN to `l` is answered with a cookie now.
    #[inline]
    fn proxies_syns(&self, snap: &Snapshot, l: &ListenerView) -> bool {
        match l.syn_proxy {
            SynProxyMode::Off => false,
            SynProxyMode::On => true,
            SynProxyMode::Auto => self.sessions.half_open() * 2 >= snap.half_open_max,
        }
    }

    /// A TCP segment without session to a listener with a SYN proxy
    /// (`staged` describes it): answered or consumed here (`None`), or
    /// given back to go the usual way.
    pub(super) fn syn_proxy_new_flow(
        &mut self,
        snap: &Snapshot,
        l: &ListenerView,
        pkt: P,
        staged: &Staged,
        io: &mut impl Io<P>,
    ) -> Option<P> {
        let (key, flags, pick) = (&staged.key, staged.flags, staged.pick);
        let syn = flags & FLAG_SYN != 0;
        let ack = flags & FLAG_ACK != 0;
        if flags & FLAG_RST != 0 || (syn && ack) {
            return Some(pkt);
        }
        if syn {
            if !self.proxies_syns(snap, l) {
                return Some(pkt);
            }
            self.answer_syn(snap, pkt, io);
            return None;
        }
        if !ack {
            return Some(pkt);
        }
        let Some(h) = sp::accept(pkt.data(), &self.cookie_key, self.now) else {
            // Under `auto`, a connection opened while the proxy was off
            // keeps the listener's usual non-SYN handling.
            if l.syn_proxy == SynProxyMode::Auto {
                return Some(pkt);
            }
            self.discard(DropReason::SynProxyBadCookie, pkt, io);
            return None;
        };
        self.counters.event(Event::SynProxyAccepted);
        // The connection begins here, not at its SYN (which left no
        // state): the listener's and the source's connection limits apply
        // now, as to an unproxied SYN.
        if let Err(reason) = self.admission.new_connection(l, key.src(), self.now, &self.counters.admission) {
            self.discard(reason, pkt, io);
            return None;
        }
        let Some(bi) = pick.or_else(|| self.choose(snap, l, key)) else {
            self.discard(DropReason::NoBackend, pkt, io);
            return None;
        };
        let mut new = self.session_for(l, bi, key, SessionState::TcpSynSent);
        new.flags |= SYN_PROXIED;
        let slot = match self.insert_evicting_half_open(snap, new, staged.hash, false) {
            Ok(slot) => slot,
            Err(reason) => {
                self.discard(reason, pkt, io);
                return None;
            }
        };
        self.admission.session_opened(l, key.src(), self.now);
        if l.persistence_ms.is_some() {
            let table = &self.shared.persistence;
            table.remember(table.key(l.id, key.src()), new.backend_id, self.now);
        }
        let mut state = ProxyState { handshake: h, translation: Translation::default(), ready: false, held: 0 };
        let mut out = [0u8; MAX_FRAME];
        let n = sp::backend_syn(&h, (new.client_ip, new.client_port), (new.backend_ip, new.backend_port), &mut out);
        // A proving ACK that carries data (or a FIN) is kept for the
        // backend and the SYN goes in a buffer of its own; without one,
        // the data is left to the client's retransmission.
        let carries = sp::payload_len(pkt.data()) > 0 || flags & FLAG_FIN != 0;
        let pkt = match carries.then(|| io.alloc(n, pkt.port())).flatten() {
            Some(mut syn) => {
                syn.data_mut()[..n].copy_from_slice(&out[..n]);
                self.hold(slot, &mut state, pkt, io);
                self.proxy_slots[slot as usize] = state.pack();
                syn
            }
            None => {
                self.proxy_slots[slot as usize] = state.pack();
                if carries {
                    self.counters.event(Event::MbufAllocFailed);
                    self.counters.count_drop(DropReason::SynProxyPending);
                }
                self.reframe(pkt, &out[..n], io)?
            }
        };
        self.counters.listeners[usize::from(new.listener)].count(Direction::Request, n);
        self.counters.backends[usize::from(new.backend_id)].count(Direction::Request, n);
        self.route_to_backend(snap, pkt, new.backend_id, new.backend_ip, io);
        None
    }

    /// Answers a SYN with a SYN-ACK carrying a cookie, from the VIP.
    fn answer_syn(&mut self, snap: &Snapshot, pkt: P, io: &mut impl Io<P>) {
        let mut out = [0u8; MAX_FRAME];
        let n = sp::syn_ack(pkt.data(), &self.cookie_key, self.now, &mut out);
        let client = sp::tuple_of_request(pkt.data()).client;
        if let Some(pkt) = self.reframe(pkt, &out[..n], io) {
            self.counters.event(Event::SynProxySynAcks);
            self.route(snap, pkt, client, io);
        }
    }

    /// `pkt` with its bytes replaced by `frame`: in place when it is long
    /// enough, else in a new buffer (the old one freed).
    fn reframe(&mut self, mut pkt: P, frame: &[u8], io: &mut impl Io<P>) -> Option<P> {
        let n = frame.len();
        if pkt.data().len() >= n && pkt.truncate(n) {
            pkt.data_mut()[..n].copy_from_slice(frame);
            return Some(pkt);
        }
        let Some(mut new) = io.alloc(n, pkt.port()) else {
            self.counters.event(Event::MbufAllocFailed);
            self.discard(DropReason::SynProxyNoBuffer, pkt, io);
            return None;
        };
        new.data_mut()[..n].copy_from_slice(frame);
        io.free(pkt);
        Some(new)
    }

    /// A client's segment of a proxied session.
    pub(super) fn proxied_request(
        &mut self,
        snap: &Snapshot,
        slot: u32,
        mut pkt: P,
        key: &FlowKey,
        flags: u8,
        io: &mut impl Io<P>,
    ) {
        let s = *self.sessions.session(slot);
        if flags & FLAG_SYN != 0 && flags & FLAG_ACK == 0 {
            // A new connection on the tuple of a finished one: a cookie
            // again; the old session goes.
            if matches!(s.state, SessionState::TcpClosed | SessionState::TcpClosing) {
                let old = self.sessions.remove(slot);
                self.close_counters(&old);
                return self.answer_syn(snap, pkt, io);
            }
            // A retransmitted SYN while the backend connection opens.
            return self.discard(DropReason::SynProxyPending, pkt, io);
        }
        let mut st = ProxyState::unpack(&self.proxy_slots[slot as usize]);
        if !st.ready {
            self.hold(slot, &mut st, pkt, io);
            self.proxy_slots[slot as usize] = st.pack();
            return;
        }
        sp::translate_request(pkt.data_mut(), &st.translation);
        let s = self.touch(slot, key, flags, Direction::Request);
        self.forward(snap, pkt, &s, Direction::Request, io)
    }

    /// A backend's segment of a proxied session.
    pub(super) fn proxied_reply(
        &mut self,
        snap: &Snapshot,
        slot: u32,
        mut pkt: P,
        key: &FlowKey,
        flags: u8,
        io: &mut impl Io<P>,
    ) {
        let mut st = ProxyState::unpack(&self.proxy_slots[slot as usize]);
        let syn_ack = flags & (FLAG_SYN | FLAG_ACK) == FLAG_SYN | FLAG_ACK;
        if syn_ack {
            // The backend's handshake (or its retransmission, when our ACK
            // was lost): complete it; the client saw lbd's SYN-ACK.
            let mut out = [0u8; MAX_FRAME];
            let (n, tr) = sp::backend_ack(pkt.data(), &st.handshake, &mut out);
            let held = st.held;
            if !st.ready {
                st.translation = tr;
                st.ready = true;
                st.held = 0;
                self.proxy_slots[slot as usize] = st.pack();
                self.counters.event(Event::SynProxyBackendOpened);
            }
            let s = self.touch(slot, key, flags, Direction::Reply);
            self.sessions.track_tcp(slot, FLAG_ACK, Direction::Request);
            match self.reframe(pkt, &out[..n], io) {
                Some(pkt) => self.route_to_backend(snap, pkt, s.backend_id, s.backend_ip, io),
                // Without the ACK the held data would reach the backend
                // before its handshake completes.
                None => return self.drop_proxy_held(held, io),
            }
            // The held segments follow the ACK, in arrival order, as the
            // client's later segments go.
            let mut at = held;
            while at != 0 {
                let (pkt, next) = self.held.take(at);
                at = next;
                let Some(mut pkt) = pkt else { continue };
                let flags = pkt.data()[TCP_FLAGS];
                sp::translate_request(pkt.data_mut(), &st.translation);
                let s = self.touch(slot, key, flags, Direction::Request);
                self.forward(snap, pkt, &s, Direction::Request, io);
            }
            return;
        }
        if !st.ready {
            if pkt.data()[TCP_FLAGS] & FLAG_RST == 0 {
                return self.discard(DropReason::SynProxyPending, pkt, io);
            }
            // The backend refused: reset the client at the sequence number
            // it expects from lbd.
            let seq = crate::wire::get32(
                pkt.data(),
                crate::wire::at(crate::wire::frame::L4, crate::wire::tcp::field::SEQ_NUM),
            );
            st.translation.seq_delta = seq.wrapping_sub(st.handshake.cookie.wrapping_add(1));
            st.ready = true;
            let held = std::mem::take(&mut st.held);
            self.proxy_slots[slot as usize] = st.pack();
            self.drop_proxy_held(held, io);
        }
        sp::translate_reply(pkt.data_mut(), &st.translation);
        let s = self.touch(slot, key, flags, Direction::Reply);
        self.forward(snap, pkt, &s, Direction::Reply, io)
    }
}
