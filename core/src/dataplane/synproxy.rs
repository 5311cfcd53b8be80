//! The SYN proxy in the flow path (listeners with `syn_proxy: on`, or
//! `auto` while the worker's half-open sessions exceed half their cap).
//!
//! A SYN without session is answered with a SYN cookie from the VIP and
//! leaves no state. A client's ACK without session whose cookie checks
//! creates the session (flag [`SYN_PROXIED`]) and becomes the SYN to the
//! backend, with the client's ISN and the options the cookie kept. The
//! backend's SYN-ACK becomes the ACK that completes its handshake and sets
//! the connection's translation; from then on every segment is translated
//! both ways (`crate::synproxy`). Client segments that arrive before the
//! backend answered are dropped (`syn_proxy_pending`); TCP sends them
//! again. The per-session proxy state sits in a side array indexed by the
//! session's slot, read only for sessions with the flag, so the path of
//! other listeners' sessions is one flag test longer.

use super::{Io, Packet, State};
use crate::config::SynProxyMode;
use crate::counters::{DropReason, Event};
use crate::flow::FlowKey;
use crate::session::{Direction, SessionState};
use crate::snapshot::{ListenerView, Snapshot};
use crate::synproxy::{self as sp, Accepted, Handshake, Translation, MAX_FRAME};
use crate::wire::frame::TCP_FLAGS;
use crate::wire::tcp::{FLAG_ACK, FLAG_RST, FLAG_SYN};

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
            | u32::from(t.window_shift.unwrap_or(0) as u8) << 8;
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
        }
    }
}

impl<P: Packet> State<P> {
    /// Whether a SYN to `l` is answered with a cookie now.
    #[inline]
    fn proxies_syns(&self, snap: &Snapshot, l: &ListenerView) -> bool {
        match l.syn_proxy {
            SynProxyMode::Off => false,
            SynProxyMode::On => true,
            SynProxyMode::Auto => self.sessions.half_open() * 2 >= snap.half_open_max,
        }
    }

    /// A TCP segment without session to a listener with a SYN proxy:
    /// answered or consumed here (`None`), or given back to go the usual
    /// way.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn syn_proxy_new_flow(
        &mut self,
        snap: &Snapshot,
        l: &ListenerView,
        pkt: P,
        key: &FlowKey,
        flags: u8,
        pick: Option<u16>,
        io: &mut impl Io<P>,
    ) -> Option<P> {
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
        let slot = match self.insert_evicting_half_open(snap, new, false) {
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
        let state = ProxyState { handshake: h, translation: Translation::default(), ready: false };
        self.proxy_slots[slot as usize] = state.pack();
        let mut out = [0u8; MAX_FRAME];
        let n = sp::backend_syn(&h, (new.client_ip, new.client_port), (new.backend_ip, new.backend_port), &mut out);
        let pkt = self.reframe(pkt, &out[..n], io)?;
        self.counters.listeners[usize::from(new.listener)].count(Direction::Request, n);
        self.counters.backends[usize::from(new.backend_id)].count(Direction::Request, n);
        self.route(snap, pkt, new.backend_ip, io);
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
        let st = ProxyState::unpack(&self.proxy_slots[slot as usize]);
        if !st.ready {
            return self.discard(DropReason::SynProxyPending, pkt, io);
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
            if !st.ready {
                st.translation = tr;
                st.ready = true;
                self.proxy_slots[slot as usize] = st.pack();
                self.counters.event(Event::SynProxyBackendOpened);
            }
            let s = self.touch(slot, key, flags, Direction::Reply);
            self.sessions.track_tcp(slot, FLAG_ACK, Direction::Request);
            let Some(pkt) = self.reframe(pkt, &out[..n], io) else { return };
            return self.route(snap, pkt, s.backend_ip, io);
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
            self.proxy_slots[slot as usize] = st.pack();
        }
        sp::translate_reply(pkt.data_mut(), &st.translation);
        let s = self.touch(slot, key, flags, Direction::Reply);
        self.forward(snap, pkt, &s, Direction::Reply, io)
    }
}
