//! The fuzz targets' bodies on stable, as part of the normal test run:
//! every committed corpus entry (`fuzz/corpus/<target>/`, crashes found
//! included as regression cases), then deterministic pseudo-random
//! mutations of them. `fuzz/run.sh` runs the same bodies under libFuzzer.

use lbcore::testing::Xorshift;
use std::path::PathBuf;

/// Mutations per target: a few seconds each in the test profile.
const MUTATIONS: usize = 20_000;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let inputs: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(inputs.len() >= 3, "{}: a corpus of {} entries", dir.display(), inputs.len());
    inputs
}

/// One libFuzzer-like mutation: bit flips, interesting bytes, cuts,
/// insertions, copies within and splices across entries.
fn mutate(r: &mut Xorshift, base: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..1 + r.index(4) {
        let n = v.len();
        match r.index(7) {
            0 if n > 0 => {
                let i = r.index(n);
                v[i] ^= 1 << r.index(8);
            }
            1 if n > 0 => {
                let i = r.index(n);
                v[i] = [0, 1, 0x7f, 0x80, 0xff, b'\n', b':', b'-'][r.index(8)];
            }
            2 if n > 0 => v.truncate(r.index(n)),
            3 => {
                let i = r.index(n + 1);
                let b = r.next_u64() as u8;
                v.insert(i, b);
            }
            4 if n > 1 => {
                let (a, b) = (r.index(n), r.index(n));
                let len = r.index(n - a.max(b)).min(16);
                let chunk = v[a..a + len].to_vec();
                v.splice(b..b, chunk);
            }
            5 if !other.is_empty() => {
                let cut = r.index(n + 1);
                let from = r.index(other.len());
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            _ if n > 1 => {
                let i = r.index(n - 1);
                v.swap(i, i + 1);
            }
            _ => v.push(r.next_u64() as u8),
        }
    }
    v
}

fn smoke(target: &str, body: fn(&[u8]), seed: u64) {
    let inputs = corpus(target);
    for i in &inputs {
        body(i);
    }
    let mut r = Xorshift::new(seed);
    for _ in 0..MUTATIONS {
        let a = &inputs[r.index(inputs.len())];
        let b = &inputs[r.index(inputs.len())];
        let m = mutate(&mut r, a, b);
        body(&m);
    }
}

#[test]
fn dataplane_target_over_corpus_and_mutations() {
    smoke("dataplane", lbcore::fuzzing::dataplane, 0x9e37_79b9_7f4a_7c15);
}

#[test]
fn config_target_over_corpus_and_mutations() {
    smoke("config", lbcore::fuzzing::config, 0xc2b2_ae3d_27d4_eb4f);
}

#[test]
fn control_target_over_corpus_and_mutations() {
    smoke("control", lbcore::fuzzing::control, 0x1656_67b1_9e37_79f9);
}

/// Writes the seed corpora (`cargo test -p lbcore --test fuzz_smoke --
/// --ignored write_seed_corpora`): frames for the dataplane target, the
/// repository's configurations, valid request streams.
#[test]
#[ignore]
fn write_seed_corpora() {
    use lbcore::fuzzing::{join_frames, DATAPLANE_CONFIG, PORT_MACS};
    use lbcore::wire::frame::FrameBuilder;
    use lbcore::wire::MacAddr;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let ip = |s: &str| u32::from(s.parse::<std::net::Ipv4Addr>().unwrap());
    let peer = MacAddr([0x02, 0, 0, 0, 0, 0xc1]);
    let ext = FrameBuilder::new(peer, PORT_MACS[0]);
    let int = FrameBuilder::new(MacAddr([0x02, 0, 0, 0, 0, 0x11]), PORT_MACS[1]);
    let int2 = FrameBuilder::new(MacAddr([0x02, 0, 0, 0, 0, 0x12]), PORT_MACS[1]);
    let (client, vip) = (ip("10.0.0.7"), ip("10.0.0.100"));
    let (b1, b2) = (ip("10.1.0.11"), ip("10.1.0.12"));
    let arp = |src_mac: [u8; 6], dst_mac: [u8; 6], op: u16, sha: [u8; 6], spa: u32, tpa: u32| {
        let mut f = Vec::new();
        f.extend_from_slice(&dst_mac);
        f.extend_from_slice(&src_mac);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4]);
        f.extend_from_slice(&op.to_be_bytes());
        f.extend_from_slice(&sha);
        f.extend_from_slice(&spa.to_be_bytes());
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&tpa.to_be_bytes());
        f
    };
    let echo = |dst: u32| {
        // An echo request: a UDP frame's IPv4 header re-labelled ICMP, its
        // checksums recomputed.
        let mut f = ext.udp(client, dst, 0, 0, b"pingpingping");
        f[14 + 9] = 1;
        f[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
        let c = lbcore::wire::checksum::checksum(&f[14..34]);
        f[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
        let icmp = &mut f[34..];
        icmp[..4].copy_from_slice(&[8, 0, 0, 0]);
        let c = lbcore::wire::checksum::checksum(icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        f
    };
    let (syn, synack, ack, fin, rst) = (0x02, 0x12, 0x10, 0x11, 0x04);
    type Frames = Vec<(u16, Vec<u8>)>;
    let mut dp: Vec<(&str, Frames)> = vec![
        (
            "tcp_handshake_both_backends",
            vec![
                (0, ext.tcp(client, vip, 40000, 80, syn, b"")),
                (1, int.tcp(b1, client, 8080, 40000, synack, b"")),
                (1, int2.tcp(b2, client, 8080, 40000, synack, b"")),
                (0, ext.tcp(client, vip, 40000, 80, ack, b"GET / HTTP/1.0\r\n\r\n")),
                (0, ext.tcp(client, vip, 40000, 80, fin, b"")),
                (1, int.tcp(b1, client, 8080, 40000, fin, b"")),
            ],
        ),
        (
            "tcp_rst_and_non_syn",
            vec![
                (0, ext.tcp(client, vip, 40001, 80, ack, b"x")),
                (0, ext.tcp(client, vip, 40002, 81, syn, b"")),
                (0, ext.tcp(client, vip, 40002, 81, rst, b"")),
                (0, ext.tcp(client, ip("10.0.0.102"), 40003, 80, syn, b"")),
            ],
        ),
        (
            "udp_dns_and_reply",
            vec![
                (0, ext.udp(client, vip, 5000, 53, b"query")),
                (1, int.udp(b1, client, 5353, 5000, b"answer")),
                (0, ext.udp(client, ip("10.0.0.101"), 5001, 53, b"parked")),
            ],
        ),
        (
            "arp",
            vec![
                (0, arp(peer.0, [0xff; 6], 1, peer.0, client, ip("10.0.0.1"))),
                (0, arp(peer.0, [0xff; 6], 1, peer.0, client, vip)),
                (
                    1,
                    arp(
                        [2, 0, 0, 0, 0, 0x50],
                        PORT_MACS[1].0,
                        2,
                        [2, 0, 0, 0, 0, 0x50],
                        ip("10.1.0.50"),
                        ip("10.1.0.1"),
                    ),
                ),
            ],
        ),
        ("icmp_echo", vec![(0, echo(vip)), (0, echo(ip("10.0.0.1")))]),
        (
            "host_and_odd",
            vec![
                (0, ext.tcp(client, ip("10.0.0.1"), 40004, 22, syn, b"")),
                (0, ext.udp(client, ip("10.0.0.55"), 40005, 53, b"")),
                (1, int.tcp(b1, ip("192.168.9.9"), 8080, 1234, synack, b"")),
            ],
        ),
    ];
    // The defences: a SYN-proxied handshake completed with the cookie the
    // core answers (a fuzzer cannot guess a keyed hash) and the backend's
    // SYN-ACK to the SYN it opens; a security group's denials; traffic over
    // a listener's and a VIP's scrub and blackhole thresholds.
    let seg = |mut f: Vec<u8>, seq: u32, ack: u32| {
        f[38..42].copy_from_slice(&seq.to_be_bytes());
        f[42..46].copy_from_slice(&ack.to_be_bytes());
        f[50..52].copy_from_slice(&[0, 0]);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&f[26..34]);
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&((f.len() - 34) as u16).to_be_bytes());
        pseudo.extend_from_slice(&f[34..]);
        let c = lbcore::wire::checksum::checksum(&pseudo);
        f[50..52].copy_from_slice(&c.to_be_bytes());
        f
    };
    // A client behind the gateway, whose MAC the config gives: replies to
    // it leave at once instead of waiting for ARP.
    let remote = ip("100.64.0.7");
    let be32 = |f: &[u8], at: usize| u32::from_be_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]]);
    let proxied_syn = ext.tcp(remote, vip, 41000, 82, syn, b"");
    let syn_seq = be32(&proxied_syn, 38);
    let sent = lbcore::fuzzing::sent(&join_frames(&[(0, &proxied_syn)]));
    let cookie =
        sent.iter().find(|f| f.len() >= 54 && f[47] == synack).map(|f| be32(f, 38)).expect("the proxy answers the SYN");
    let proving = seg(ext.tcp(remote, vip, 41000, 82, ack, b""), syn_seq + 1, cookie.wrapping_add(1));
    let request = seg(
        ext.tcp(remote, vip, 41000, 82, ack | 0x08, b"GET / HTTP/1.0\r\n\r\n"),
        syn_seq + 1,
        cookie.wrapping_add(1),
    );
    let sent = lbcore::fuzzing::sent(&join_frames(&[(0, &proxied_syn), (0, &proving)]));
    let backend_syn =
        sent.iter().find(|f| f.len() >= 54 && f[47] == syn).expect("the proving ACK opens the backend connection");
    let backend = be32(backend_syn, 30);
    let from = if backend == b1 { &int } else { &int2 };
    let backend_synack =
        seg(from.tcp(backend, remote, 8082, 41000, synack, b""), 7_000_000, be32(backend_syn, 38).wrapping_add(1));
    let reply = seg(
        from.tcp(backend, remote, 8082, 41000, ack | 0x08, b"HTTP/1.0 200 OK\r\n\r\n"),
        7_000_001,
        be32(backend_syn, 38).wrapping_add(1),
    );
    dp.push((
        "syn_proxy_handshake",
        vec![(0, proxied_syn.clone()), (0, proving), (0, request), (1, backend_synack), (1, reply)],
    ));
    let guarded = ip("10.0.0.103");
    let mut flood: Frames =
        (0..10u16).map(|i| (0, ext.tcp(ip("10.0.0.9") + u32::from(i), guarded, 42000 + i, 80, syn, b""))).collect();
    flood.extend((0..10u16).map(|i| (0, ext.udp(remote, guarded, 43000 + i % 3, 53, b"q"))));
    flood.push((0, ext.tcp(remote, guarded, 44000, 9999, syn, b"")));
    // A second later (header bits 1-7: 63 × 16 ms), the windows close and
    // the thresholds act; then the hold time passes.
    flood.extend((0..6u16).map(|i| (63 << 1, ext.udp(remote, guarded, 43000 + i % 3, 53, b"q"))));
    flood.extend((0..4u16).map(|i| (127 << 1, ext.tcp(ip("10.0.0.9"), guarded, 46000 + i, 80, syn, b""))));
    dp.push(("vip_scrub_and_blackhole", flood));
    dp.push((
        "security_group_denied",
        vec![
            (0, ext.tcp(ip("192.0.2.5"), vip, 45000, 82, syn, b"")),
            (0, ext.tcp(ip("200.0.0.1"), vip, 45001, 82, syn, b"")),
            (0, ext.udp(remote, vip, 45002, 82, b"udp")),
        ],
    ));
    // Frames the classifier refuses: a fragment, a VLAN tag, IPv6, options.
    let mut frag = ext.udp(client, vip, 5002, 53, b"fragment");
    frag[14 + 6] = 0x20;
    let mut vlan = ext.udp(client, vip, 5003, 53, b"vlan");
    vlan.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
    let mut v6 = ext.udp(client, vip, 5004, 53, b"v6");
    v6[12..14].copy_from_slice(&[0x86, 0xdd]);
    dp.push(("refused", vec![(0, frag), (0, vlan), (0, v6)]));
    std::fs::create_dir_all(root.join("dataplane")).unwrap();
    for (name, frames) in &dp {
        let refs: Vec<(u16, &[u8])> = frames.iter().map(|(p, f)| (*p, f.as_slice())).collect();
        std::fs::write(root.join("dataplane").join(name), join_frames(&refs)).unwrap();
    }
    std::fs::create_dir_all(root.join("config")).unwrap();
    let configs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config");
    for name in ["reference.yaml", "demo.yaml"] {
        std::fs::copy(configs.join(name), root.join("config").join(name)).unwrap();
    }
    std::fs::write(root.join("config").join("dataplane.yaml"), DATAPLANE_CONFIG).unwrap();
    std::fs::create_dir_all(root.join("control")).unwrap();
    let reqs: Vec<(&str, Vec<lbproto::Request>)> = vec![
        (
            "hello_status",
            vec![
                lbproto::Request::Hello { protocol: lbproto::PROTOCOL_VERSION, client: "fuzz".into() },
                lbproto::Request::Status,
            ],
        ),
        ("lists", vec![lbproto::Request::ListenerList]),
        (
            "backend_weight",
            vec![lbproto::Request::BackendSetWeight {
                listener: "web".into(),
                backend: lbproto::BackendRef { address: "10.1.0.11".into(), port: Some(8080) },
                weight: 3,
            }],
        ),
        (
            "reload_text",
            vec![lbproto::Request::ConfigReload {
                source: Some(lbproto::ConfigText { path: "/etc/lbd.yaml".into(), yaml: DATAPLANE_CONFIG.into() }),
            }],
        ),
    ];
    for (name, rs) in reqs {
        let mut out = Vec::new();
        for (id, request) in rs.into_iter().enumerate() {
            lbproto::write_frame(&mut out, &lbproto::RequestFrame { id: id as u64, request }).unwrap();
        }
        std::fs::write(root.join("control").join(name), out).unwrap();
    }
}
