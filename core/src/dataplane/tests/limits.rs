//! Rate limits and VIP protection (`crate::admission`) through the core,
//! on the test clock.

use super::*;
use crate::admission::ProtectionState;

/// CONFIG with `extra` (lines indented for a listener's keys) added to
/// listener `web` (id 0).
fn web_with(extra: &str) -> Harness {
    let yaml = CONFIG.replacen("  - name: web\n", &format!("  - name: web\n{extra}"), 1);
    harness_with(&yaml, 0, 1, 1000)
}

fn syn(h: &mut Harness, client: &str, sport: u16) -> bool {
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, ip(client), ip("10.0.0.100"), sport, 80, FLAG_SYN, b""));
    !h.take_tx().is_empty()
}

fn data(h: &mut Harness, client: &str, sport: u16) -> bool {
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, ip(client), ip("10.0.0.100"), sport, 80, FLAG_ACK, b"x"));
    !h.take_tx().is_empty()
}

fn state(h: &Harness) -> ProtectionState {
    ProtectionState::from_gauge(h.counters.admission.listeners[0].state.get())
}

#[test]
fn a_source_at_its_session_cap_is_refused_while_another_connects() {
    let mut h = web_with("    limits: {per_source: {max_sessions: 2}}\n");
    assert!(syn(&mut h, "192.168.1.10", 1000));
    assert!(syn(&mut h, "192.168.1.10", 1001));
    assert!(!syn(&mut h, "192.168.1.10", 1002), "a third session from the same address");
    assert_eq!(h.drops(DropReason::SourceSessionLimit), 1);
    assert!(syn(&mut h, "192.168.1.11", 1000), "another address is not limited");
    // Established sessions keep working at the cap.
    assert!(data(&mut h, "192.168.1.10", 1000));
    // The half-open one expires (SYN_SENT, 10 s), the established one
    // stays: the count falls to one.
    for t in (0..=12_000).step_by(100) {
        h.dp.set_now(1 + t);
        h.dp.tick(&mut h.io);
    }
    assert_eq!(h.dp.sessions().len(), 1);
    assert!(syn(&mut h, "192.168.1.10", 1003));
    assert!(!syn(&mut h, "192.168.1.10", 1004));
    assert_eq!(h.drops(DropReason::SourceSessionLimit), 2);
    assert_eq!(h.counters.admission.listeners[0].drops[2].get(), 2, "counted for the listener too");
}

#[test]
fn a_source_over_its_connection_rate_is_cut_to_it() {
    // 10/s: a burst of 8 (50 ms worth, at least 8), then one per 100 ms.
    let mut h = web_with("    limits: {per_source: {new_connections_per_second: 10}}\n");
    let admitted = (0..20).filter(|p| syn(&mut h, "192.168.1.10", 2000 + p)).count();
    assert_eq!(admitted, 8);
    assert_eq!(h.drops(DropReason::SourceRateLimited), 12);
    assert!(syn(&mut h, "192.168.1.11", 2000), "another source has its own bucket");
    // Within the second after, ten more tokens.
    let mut later = 0;
    for t in 1..=1000u16 {
        h.dp.set_now(1 + u32::from(t));
        if syn(&mut h, "192.168.1.10", 3000 + t) {
            later += 1;
        }
    }
    assert_eq!(later, 10);
    // Packets of admitted connections are not connections.
    assert!(data(&mut h, "192.168.1.10", 2000));
}

#[test]
fn source_and_listener_packet_rates() {
    let mut h = web_with("    limits: {packets_per_second: 100, per_source: {packets_per_second: 20}}\n");
    assert!(syn(&mut h, "192.168.1.10", 1000));
    // Source bucket: 20/s, burst 8; the SYN took one.
    let passed = (0..50).filter(|_| data(&mut h, "192.168.1.10", 1000)).count();
    assert_eq!(passed, 7);
    assert_eq!(h.drops(DropReason::SourceRateLimited), 43);
    // The listener's bucket (100/s, burst 8) took 8 of these: only
    // packets the source's bucket would pass are left for others.
    let mut h = web_with("    limits: {packets_per_second: 100}\n");
    let passed = (0..50u16).filter(|p| syn(&mut h, "192.168.1.10", 1000 + p)).count();
    assert_eq!(passed, 8);
    assert_eq!(h.drops(DropReason::ListenerRateLimited), 42);
}

#[test]
fn a_blackhole_engages_above_its_threshold_and_releases_after_hold() {
    let mut h = web_with("    protection: {blackhole: {packets_per_second: 50}, hold: 5s}\n");
    // 200 SYNs in the first second: all forwarded while measured.
    for p in 0..200u16 {
        h.dp.set_now(1 + u32::from(p) * 4);
        assert!(syn(&mut h, "192.168.1.10", 1000 + p));
    }
    assert_eq!(state(&h), ProtectionState::Normal);
    // The window closes: 200/s > 50/s.
    h.dp.set_now(1002);
    h.dp.tick(&mut h.io);
    assert_eq!(state(&h), ProtectionState::Blackholed);
    assert_eq!(h.counters.admission.listeners[0].blackholed.get(), 1);
    assert_eq!(h.counters.admission.listeners[0].packets_per_second.get(), 199, "200 packets in 1002 ms");
    assert!(!data(&mut h, "192.168.1.10", 1000), "even an established session's packets");
    assert!(!syn(&mut h, "192.168.1.20", 1000));
    assert_eq!(h.drops(DropReason::VipBlackholed), 2);
    // Other listeners are not affected.
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, ip("192.168.1.20"), ip("10.0.0.100"), 1, 81, FLAG_SYN, b""));
    assert_eq!(h.take_tx().len(), 1);
    // Quiet: still held 4 s later, released after the hold.
    for t in (1100..=5000).step_by(100) {
        h.dp.set_now(t);
        h.dp.tick(&mut h.io);
    }
    assert_eq!(state(&h), ProtectionState::Blackholed);
    for t in (5100..=8000).step_by(100) {
        h.dp.set_now(t);
        h.dp.tick(&mut h.io);
    }
    assert_eq!(state(&h), ProtectionState::Normal);
    assert_eq!(h.counters.admission.listeners[0].released.get(), 1);
    assert!(syn(&mut h, "192.168.1.20", 1001));
}

#[test]
fn a_scrubbed_listener_admits_the_scrub_rate() {
    let mut h = web_with(
        "    protection: {scrub: {new_connections_per_second: 20}, blackhole: {new_connections_per_second: 1000}, hold: 2s}\n",
    );
    for p in 0..100u16 {
        h.dp.set_now(1 + u32::from(p) * 9);
        assert!(syn(&mut h, "192.168.1.10", 1000 + p));
    }
    h.dp.set_now(1001);
    h.dp.tick(&mut h.io);
    assert_eq!(state(&h), ProtectionState::Scrubbed);
    // 20/s: a burst of 8 at once, new connections only.
    let admitted = (0..50u16).filter(|p| syn(&mut h, "192.168.1.30", 5000 + p)).count();
    assert_eq!(admitted, 8);
    assert_eq!(h.drops(DropReason::VipScrubbed), 42);
    assert!(data(&mut h, "192.168.1.10", 1000), "established sessions go on");
    // A window with the scrub's traffic still over 20/s keeps it scrubbed
    // (the offered rate counts, not the admitted one).
    h.dp.set_now(2002);
    h.dp.tick(&mut h.io);
    assert_eq!(state(&h), ProtectionState::Scrubbed);
    for t in (2100..=5000).step_by(100) {
        h.dp.set_now(t);
        h.dp.tick(&mut h.io);
    }
    assert_eq!(state(&h), ProtectionState::Normal);
}

#[test]
fn a_listener_without_limits_is_untouched_and_a_reload_keeps_unchanged_state() {
    let mut h = harness();
    for p in 0..500u16 {
        assert!(syn(&mut h, "192.168.1.10", 1000 + p));
    }
    assert_eq!(h.counters.admission.listeners[0].drops.iter().map(|c| c.get()).sum::<u64>(), 0);
    // A reload to limits: they apply from the next packet on.
    let mut ids = IdRegistry::default();
    let yaml = CONFIG.replacen("  - name: web\n", "  - name: web\n    limits: {packets_per_second: 10}\n", 1);
    let cfg = config::parse(&yaml, Path::new("test.yaml")).unwrap();
    ids.assign(&cfg.forwarding, &|_| true).unwrap();
    h.dp.set_snapshot(Arc::new(Snapshot::build(&cfg, &[EXT_MAC, INT_MAC], &ids, 2)));
    let passed = (0..50u16).filter(|p| syn(&mut h, "192.168.1.11", 1000 + p)).count();
    assert_eq!(passed, 8);
}

#[test]
fn limits_are_split_across_workers() {
    let yaml = CONFIG.replacen(
        "  - name: web\n",
        "  - name: web\n    limits: {packets_per_second: 400, per_source: {max_sessions: 3}}\n",
        1,
    );
    // Worker 0 of 2: 200/s (burst 10) and 2 sessions per source.
    let mut h = harness_with(&yaml, 0, 2, 1000);
    let mut admitted = 0;
    for p in 0..2000u16 {
        let f = l4_frame(EXT_MAC, GW_MAC, PROTO_TCP, ip("192.168.1.10"), ip("10.0.0.100"), p, 80, FLAG_SYN, b"");
        if owner_shard(ip("192.168.1.10"), p, 2) != 0 {
            continue;
        }
        h.rx(0, f);
        admitted += h.take_tx().len();
    }
    assert_eq!(admitted, 2, "the source's share of max_sessions on this worker");
}

/// CONFIG with `vips:` protecting 10.0.0.100 (listeners web tcp/80, rr
/// tcp/81, dns udp/53) as a whole.
fn vip_with(protection: &str) -> Harness {
    let yaml = format!("{CONFIG}vips:\n  - {{address: 10.0.0.100, protection: {protection}}}\n");
    harness_with(&yaml, 0, 1, 1000)
}

fn to_vip(h: &mut Harness, proto: u8, sport: u16, dport: u16) -> bool {
    let flags = if proto == PROTO_TCP { FLAG_SYN } else { 0 };
    h.rx(0, l4_frame(EXT_MAC, GW_MAC, proto, ip("192.168.1.10"), ip("10.0.0.100"), sport, dport, flags, b""));
    !h.take_tx().is_empty()
}

fn vip_state(h: &Harness) -> ProtectionState {
    ProtectionState::from_gauge(h.counters.admission.vips[0].state.get())
}

#[test]
fn a_vip_is_blackholed_by_traffic_over_its_listeners_and_closed_ports() {
    let mut h = vip_with("{blackhole: {packets_per_second: 100}, hold: 5s}");
    // 40 packets each to tcp/80, tcp/81 and tcp/8080 (no listener) in the
    // first second: 120/s on the VIP, no listener near 100/s.
    for p in 0..40u16 {
        h.dp.set_now(1 + u32::from(p) * 24);
        assert!(to_vip(&mut h, PROTO_TCP, 1000 + p, 80));
        assert!(to_vip(&mut h, PROTO_TCP, 1000 + p, 81));
        assert!(!to_vip(&mut h, PROTO_TCP, 1000 + p, 8080));
    }
    assert_eq!(h.drops(DropReason::NoListener), 40);
    assert_eq!(vip_state(&h), ProtectionState::Normal);
    h.dp.set_now(1002);
    h.dp.tick(&mut h.io);
    assert_eq!(vip_state(&h), ProtectionState::Blackholed);
    assert_eq!(h.counters.admission.vips[0].blackholed.get(), 1);
    assert_eq!(h.counters.admission.vips[0].packets_per_second.get(), 119, "120 packets in 1002 ms");
    assert_eq!(state(&h), ProtectionState::Normal, "listener web has no protection of its own");
    // Every client packet to the VIP is dropped: listeners of both
    // protocols, established sessions, closed ports.
    assert!(!to_vip(&mut h, PROTO_TCP, 3000, 80));
    assert!(!to_vip(&mut h, PROTO_UDP, 3000, 53));
    assert!(!data(&mut h, "192.168.1.10", 1000));
    assert!(!to_vip(&mut h, PROTO_TCP, 3000, 8080));
    assert_eq!(h.drops(DropReason::VipBlackholed), 4);
    assert_eq!(h.drops(DropReason::NoListener), 40);
    assert_eq!(h.counters.admission.vips[0].drops[4].get(), 4, "counted for the VIP");
    for t in (1100..=5000).step_by(100) {
        h.dp.set_now(t);
        h.dp.tick(&mut h.io);
    }
    assert_eq!(vip_state(&h), ProtectionState::Blackholed, "held");
    for t in (5100..=8000).step_by(100) {
        h.dp.set_now(t);
        h.dp.tick(&mut h.io);
    }
    assert_eq!(vip_state(&h), ProtectionState::Normal);
    assert_eq!(h.counters.admission.vips[0].released.get(), 1);
    assert!(to_vip(&mut h, PROTO_TCP, 3001, 80));
}

#[test]
fn a_scrubbed_vip_admits_the_scrub_rate_across_its_listeners() {
    let mut h = vip_with("{scrub: {packets_per_second: 50}, blackhole: {packets_per_second: 100000}, hold: 2s}");
    for p in 0..50u16 {
        h.dp.set_now(1 + u32::from(p) * 19);
        assert!(to_vip(&mut h, PROTO_TCP, 1000 + p, 80));
        assert!(!to_vip(&mut h, PROTO_TCP, 1000 + p, 8080));
    }
    h.dp.set_now(1001);
    h.dp.tick(&mut h.io);
    assert_eq!(vip_state(&h), ProtectionState::Scrubbed);
    // 50/s over the VIP: a burst of 8 at once, whichever listener.
    let mut admitted = 0;
    for p in 0..25u16 {
        admitted += usize::from(to_vip(&mut h, PROTO_TCP, 5000 + p, 80));
        admitted += usize::from(to_vip(&mut h, PROTO_UDP, 5000 + p, 53));
    }
    assert_eq!(admitted, 8);
    assert_eq!(h.drops(DropReason::VipScrubbed), 42);
    assert_eq!(h.counters.admission.vips[0].drops[3].get(), 42);
    // Closed ports stay `no_listener` while scrubbed.
    assert!(!to_vip(&mut h, PROTO_TCP, 5000, 8080));
    assert_eq!(h.drops(DropReason::NoListener), 51);
}
