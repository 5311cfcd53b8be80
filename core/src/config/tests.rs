use super::*;

const GOOD: &str = r#"
eal: ["--no-pci", "--no-huge", "-m", "1024", "--vdev", "net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap"]
lcores: {workers: 1}
ports:
  - name: ext
    device: net_pcap0
    address: 10.0.0.1/24
    gateway: 10.0.0.254
    neighbors: [{ip: 10.0.0.254, mac: "02:00:00:00:00:fe"}]
listeners:
  - name: web
    vip: 10.0.0.100
    protocol: tcp
    port: 80
    scheduler: maglev
    backends:
      - {address: 10.1.0.11, port: 8080, weight: 1}
timeouts: {tcp_syn: 10s, tcp_established: 900s, tcp_closing: 30s, udp: 60s}
sessions: {capacity_per_worker: 1000000}
"#;

fn parse_str(s: &str) -> Result<Config, ConfigError> {
    parse(s, Path::new("/etc/lbd/test.yaml"))
}

/// Applies a text substitution to GOOD and returns the error.
fn err_with(from: &str, to: &str) -> ConfigError {
    assert!(GOOD.contains(from), "fixture lacks {from:?}");
    match parse_str(&GOOD.replacen(from, to, 1)) {
        Ok(_) => panic!("accepted with {from:?} -> {to:?}"),
        Err(e) => e,
    }
}

#[test]
fn issue_example_is_valid() {
    let c = parse_str(GOOD).unwrap();
    assert_eq!(c.startup.workers, 1);
    assert_eq!(c.startup.ports[0].address, Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(c.startup.ports[0].subnet.to_string(), "10.0.0.0/24");
    assert_eq!(c.startup.ports[0].gateway, Some(Ipv4Addr::new(10, 0, 0, 254)));
    assert_eq!(
        c.forwarding.listeners[0].scheduler,
        SchedulerKind::Maglev { table_size: 65537, hash: HashFields::FiveTuple }
    );
    assert_eq!(c.forwarding.listeners[0].tcp_non_syn, NonSynPolicy::Schedule);
    assert_eq!(c.forwarding.timeouts.tcp_established, Duration::from_secs(900));
    assert_eq!(c.forwarding.timeouts.tcp_closed, Duration::from_secs(5));
    assert_eq!(c.startup.session_capacity, 1_000_000);
    assert!(c.startup.eal_restricts_pci());
}

#[test]
fn every_shipped_sample_config_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            load(&p).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 2, "config/ holds the sample configurations");
}

#[test]
fn errors_name_file_field_and_problem() {
    let e = err_with("weight: 1}", "wieght: 1}");
    assert_eq!(e.file, Path::new("/etc/lbd/test.yaml"));
    assert_eq!(e.field, "listeners[0].backends[0]");
    assert!(e.message.contains("unknown field `wieght`"), "{e}");
    assert!(e.message.contains("line"), "{e}");
    assert!(e.to_string().starts_with("/etc/lbd/test.yaml: listeners[0].backends[0]: unknown field"), "{e}");

    let e = err_with("address: 10.1.0.11", "address: 10.1.0.311");
    assert_eq!(e.field, "listeners[0].backends[0].address");
    assert!(e.message.contains("not an IPv4 address"), "{e}");

    let e = err_with("weight: 1}", "weight: 70000}");
    assert_eq!(e.field, "listeners[0].backends[0].weight");

    let e = err_with("tcp_syn: 10s", "tcp_syn: ten");
    assert_eq!(e.field, "timeouts.tcp_syn");
    assert!(e.message.contains("not a duration"), "{e}");

    let e = err_with("scheduler: maglev", "scheduler: random");
    assert!(e.field.starts_with("listeners[0]"), "{e}");
    assert!(e.message.contains("unknown variant `random`"), "{e}");

    let e = err_with("protocol: tcp", "protocol: sctp");
    assert!(e.message.contains("unknown variant `sctp`"), "{e}");

    let e = err_with("port: 80", "port: 70000");
    assert_eq!(e.field, "listeners[0].port");

    let e = err_with("address: 10.0.0.1/24", "address: 10.0.0.1");
    assert_eq!(e.field, "ports[0].address");

    let e = err_with("gateway: 10.0.0.254", "gateway: 10.9.0.254");
    assert_eq!(e.field, "ports[0].gateway");
    assert!(e.message.contains("outside"), "{e}");

    let e = err_with("mac: \"02:00:00:00:00:fe\"", "mac: \"01:00:00:00:00:fe\"");
    assert_eq!(e.field, "ports[0].neighbors[0].mac");

    let e = err_with("workers: 1", "workers: 0");
    assert_eq!(e.field, "lcores.workers");

    let e = err_with("capacity_per_worker: 1000000", "capacity_per_worker: 0");
    assert_eq!(e.field, "sessions.capacity_per_worker");

    let e = err_with("scheduler: maglev", "scheduler: maglev\n    maglev_table_size: 65536");
    assert_eq!(e.field, "listeners[0].maglev_table_size");
    assert!(e.message.contains("prime"), "{e}");

    let e = err_with("vip: 10.0.0.100", "vip: 10.0.0.1");
    assert!(e.message.contains("address of port"), "{e}");

    let e = err_with("timeouts:", "bogus: 1\ntimeouts:");
    assert!(e.message.contains("unknown field `bogus`"), "{e}");

    let e = parse_str("ports: [").unwrap_err();
    assert!(e.to_string().starts_with("/etc/lbd/test.yaml: "), "{e}");
}

#[test]
fn semantic_conflicts_are_rejected() {
    let two = GOOD.replace(
        "      - {address: 10.1.0.11, port: 8080, weight: 1}",
        "      - {address: 10.1.0.11, port: 8080, weight: 1}\n      - {address: 10.1.0.11, port: 8080, weight: 2}",
    );
    let e = parse_str(&two).unwrap_err();
    assert_eq!(e.field, "listeners[0].backends[1].address");
    assert!(e.message.contains("listed twice"), "{e}");

    let dup = GOOD
        .replace("timeouts:", "  - {name: web2, vip: 10.0.0.100, protocol: tcp, port: 80, backends: []}\ntimeouts:");
    let e = parse_str(&dup).unwrap_err();
    assert_eq!(e.field, "listeners[1].port");
    assert!(e.message.contains("already served by listeners[0]"), "{e}");

    let rr = GOOD.replace("scheduler: maglev", "scheduler: round_robin\n    tcp_non_syn: schedule");
    let e = parse_str(&rr).unwrap_err();
    assert_eq!(e.field, "listeners[0].tcp_non_syn");

    let unroutable = GOOD
        .replace("    gateway: 10.0.0.254\n", "")
        .replace("    neighbors: [{ip: 10.0.0.254, mac: \"02:00:00:00:00:fe\"}]\n", "");
    let e = parse_str(&unroutable).unwrap_err();
    assert_eq!(e.field, "listeners[0].backends[0].address");
    assert!(e.message.contains("no route"), "{e}");

    let overlap = GOOD.replace("listeners:", "  - {name: int, device: net_pcap1, address: 10.0.0.2/16}\nlisteners:");
    let e = parse_str(&overlap).unwrap_err();
    assert_eq!(e.field, "ports[1].address");
    assert!(e.message.contains("overlaps"), "{e}");

    let lcores = GOOD
        .replace("lcores: {workers: 1}", "lcores: {workers: 1, cpus: [0]}")
        .replace("\"--no-pci\"", "\"--no-pci\", \"-l\", \"0-1\"");
    let e = parse_str(&lcores).unwrap_err();
    assert_eq!(e.field, "lcores.cpus");
}

#[test]
fn defaults_fill_in() {
    let minimal = "ports:\n  - {name: p, device: net_null0, address: 192.168.0.1/24}\n";
    let c = parse_str(minimal).unwrap();
    assert_eq!(c.startup.workers, 1);
    assert!(c.forwarding.listeners.is_empty());
    assert_eq!(c.forwarding.timeouts, Timeouts::default());
    assert_eq!(c.forwarding.arp, ArpTiming::default());
    assert_eq!(c.startup.arp_tables, ArpTables::default());
    assert_eq!(c.startup.burst, None);
    assert!(!c.startup.eal_restricts_pci());
}

#[test]
fn primes() {
    assert!(is_prime(65537));
    assert!(is_prime(7));
    assert!(!is_prime(65536));
    assert!(!is_prime(1));
    assert!(is_prime(4_194_301));
}

#[test]
fn duplicate_listener_name_is_rejected() {
    let dup =
        GOOD.replace("timeouts:", "  - {name: web, vip: 10.0.0.101, protocol: tcp, port: 80, backends: []}\ntimeouts:");
    let e = parse_str(&dup).unwrap_err();
    assert_eq!(e.field, "listeners[1].name");
    assert!(e.message.contains("listener name `web` is used twice"), "{e}");
}

/// A VIP is answered for in ARP: it must not take an address the LAN
/// already uses, nor one that is no host's.
#[test]
fn vip_must_not_take_an_address_in_use() {
    let cases = [
        ("10.0.0.254", "is the gateway of port `ext` (ports[0].gateway)"),
        ("10.0.0.0", "is the network address of port `ext`'s subnet 10.0.0.0/24"),
        ("10.0.0.255", "is the broadcast address of port `ext`'s subnet 10.0.0.0/24"),
        ("10.1.0.11", "is also the address of backend listeners[0].backends[0]"),
        ("10.0.0.1", "is the address of port `ext`"),
    ];
    for (vip, message) in cases {
        let e = err_with("vip: 10.0.0.100", &format!("vip: {vip}"));
        assert_eq!(e.field, "listeners[0].vip", "{vip}: {e}");
        assert!(e.message.contains(message), "{vip}: {e}");
    }

    // A neighbour that is not the gateway.
    let neighbor = GOOD.replace(
        "neighbors: [{ip: 10.0.0.254, mac: \"02:00:00:00:00:fe\"}]",
        "neighbors: [{ip: 10.0.0.254, mac: \"02:00:00:00:00:fe\"}, {ip: 10.0.0.7, mac: \"02:00:00:00:00:07\"}]",
    );
    let e = parse_str(&neighbor.replace("vip: 10.0.0.100", "vip: 10.0.0.7")).unwrap_err();
    assert_eq!(e.field, "listeners[0].vip");
    assert!(e.message.contains("is a neighbour of port `ext` (ports[0].neighbors[1])"), "{e}");
    parse_str(&neighbor).unwrap();

    // The backend of another listener, found whichever comes first.
    let two = GOOD.replace(
        "timeouts:",
        "  - {name: dns, vip: 10.0.0.53, protocol: udp, port: 53, backends: [{address: 10.0.0.100, port: 53}]}\ntimeouts:",
    );
    let e = parse_str(&two).unwrap_err();
    assert_eq!(e.field, "listeners[0].vip");
    assert!(e.message.contains("10.0.0.100 is also the address of backend listeners[1].backends[0]"), "{e}");

    // Outside every port's subnet (routed to lbd by the gateway) is fine.
    parse_str(&GOOD.replace("vip: 10.0.0.100", "vip: 198.51.100.0")).unwrap();
}

/// The Maglev table must have an entry for every backend; the message says
/// that rule (and the recommendation) and nothing stricter.
#[test]
fn maglev_table_needs_an_entry_per_backend() {
    let backends: String =
        (1..=8).map(|b| format!("      - {{address: 10.1.0.{b}, port: 8080, weight: 1}}\n")).collect();
    let many = GOOD.replace("      - {address: 10.1.0.11, port: 8080, weight: 1}\n", &backends);
    let small = many.replace("scheduler: maglev", "scheduler: maglev\n    maglev_table_size: 7");
    let e = parse_str(&small).unwrap_err();
    assert_eq!(e.field, "listeners[0].maglev_table_size");
    assert!(e.message.contains("7 is smaller than the 8 backends: every backend needs at least one entry"), "{e}");
    // M = N is allowed (if uneven), as the message says.
    let seven: String = (1..=7).map(|b| format!("      - {{address: 10.1.0.{b}, port: 8080, weight: 1}}\n")).collect();
    let c = parse_str(
        &GOOD
            .replace("      - {address: 10.1.0.11, port: 8080, weight: 1}\n", &seven)
            .replace("scheduler: maglev", "scheduler: maglev\n    maglev_table_size: 7"),
    )
    .unwrap();
    assert_eq!(c.forwarding.listeners[0].backends.len(), 7);
}

/// What a reload may change lands in the forwarding part; what needs a
/// restart lands in the startup part, and the refusal names the field.
#[test]
fn startup_part_holds_the_restart_only_fields() {
    let base = parse_str(GOOD).unwrap();
    let changed = |from: &str, to: &str| {
        assert!(GOOD.contains(from), "fixture lacks {from:?}");
        let c = parse_str(&GOOD.replacen(from, to, 1)).unwrap();
        (c.startup != base.startup, base.startup.changed_fields(&c.startup), c.forwarding != base.forwarding)
    };
    // Forwarding only: weights, timeouts, ARP timers.
    assert_eq!(changed("weight: 1", "weight: 3"), (false, vec![], true));
    assert_eq!(changed("tcp_syn: 10s", "tcp_syn: 5s"), (false, vec![], true));
    assert_eq!(changed("sessions: {", "arp: {reachable_time: 60s}\nsessions: {"), (false, vec![], true));
    // Restart-only, each named by its path in the file.
    assert_eq!(changed("workers: 1", "workers: 2"), (true, vec!["lcores.workers"], false));
    assert_eq!(
        changed("capacity_per_worker: 1000000", "capacity_per_worker: 5000"),
        (true, vec!["sessions.capacity_per_worker"], false)
    );
    assert_eq!(changed("sessions: {", "arp: {cache_size: 64}\nsessions: {"), (true, vec!["arp.cache_size"], false));
    assert_eq!(
        changed("sessions: {", "mempool: {cache_size: 32}\nsessions: {"),
        (true, vec!["mempool.cache_size"], false)
    );
    assert_eq!(changed("sessions: {", "metrics: {listen: off}\nsessions: {"), (true, vec!["metrics.listen"], false));
    assert_eq!(changed("sessions: {", "control: {group: lbd}\nsessions: {"), (true, vec!["control.group"], false));
    assert_eq!(changed("10.0.0.254, mac", "10.0.0.253, mac"), (true, vec!["ports"], false));
    assert_eq!(changed("\"-m\", \"1024\"", "\"-m\", \"2048\""), (true, vec!["eal"], false));
}

/// `lcores.cpus` makes lbd add its own `--lcores` map: refused beside any
/// form of `-l`, `-c` or `--lcores` in `eal`, joined to its value or not.
#[test]
fn cpus_and_eal_lcore_arguments_exclude_each_other() {
    for arg in ["\"-l\", \"0-1\"", "\"-l0-1\"", "\"-c\", \"0x3\"", "\"-c0x3\"", "\"--lcores=0@0,1@1\""] {
        let cfg = GOOD
            .replace("lcores: {workers: 1}", "lcores: {workers: 1, cpus: [0]}")
            .replace("\"--no-pci\"", &format!("\"--no-pci\", {arg}"));
        let e = parse_str(&cfg).unwrap_err();
        assert_eq!(e.field, "lcores.cpus", "{arg}: {e}");
    }
    assert!(eal_sets_lcores(&["-c0xf".to_owned()]));
    assert!(!eal_sets_lcores(&["--no-pci".to_owned(), "--log-level=notice".to_owned()]));
}

#[test]
fn exception_interfaces_default_on_and_are_validated() {
    let c = parse_str(GOOD).unwrap();
    let p = &c.startup.ports[0];
    assert_eq!(p.exception_interface.as_deref(), Some("lbd-ext"));
    assert!(!p.exception_required, "on by default only where the host can make it");
    assert_eq!(c.startup.exception, ExceptionSettings::default());

    let on = parse_str(&GOOD.replacen(
        "    gateway: 10.0.0.254\n",
        "    gateway: 10.0.0.254\n    exception: on\n    exception_interface: host0\n",
        1,
    ))
    .unwrap();
    assert_eq!(on.startup.ports[0].exception_interface.as_deref(), Some("host0"));
    assert!(on.startup.ports[0].exception_required);
    let off =
        parse_str(&GOOD.replacen("    gateway: 10.0.0.254\n", "    gateway: 10.0.0.254\n    exception: off\n", 1))
            .unwrap();
    assert_eq!(off.startup.ports[0].exception_interface, None);

    let e = err_with("    gateway: 10.0.0.254\n", "    gateway: 10.0.0.254\n    exception: maybe\n");
    assert_eq!(e.field, "ports[0].exception");
    let e = err_with(
        "    gateway: 10.0.0.254\n",
        "    gateway: 10.0.0.254\n    exception: off\n    exception_interface: x\n",
    );
    assert_eq!(e.field, "ports[0].exception_interface");
    let e = err_with(
        "    gateway: 10.0.0.254\n",
        "    gateway: 10.0.0.254\n    exception_interface: a-name-too-long-for-linux\n",
    );
    assert_eq!(e.field, "ports[0].exception_interface");
    assert!(e.message.contains("15"), "{e}");
    let e = err_with("    gateway: 10.0.0.254\n", "    gateway: 10.0.0.254\n    exception_interface: \"a/b\"\n");
    assert_eq!(e.field, "ports[0].exception_interface");
    let e = err_with("  - name: ext\n", "  - name: a-very-long-port\n");
    assert_eq!(e.field, "ports[0].exception_interface", "the default name lbd-<port> is too long: {e}");

    let e = err_with("sessions:", "exception: {queue_length: 1000}\nsessions:");
    assert_eq!(e.field, "exception.queue_length");
    let e = err_with("sessions:", "exception: {to_kernel_rate: 0}\nsessions:");
    assert_eq!(e.field, "exception.to_kernel_rate");
    let e = err_with("sessions:", "exception: {backend: kni}\nsessions:");
    assert_eq!(e.field, "exception.backend");
    let c = parse_str(&GOOD.replacen(
        "sessions:",
        "exception: {backend: virtio_user, from_kernel_rate: 5000}\nsessions:",
        1,
    ))
    .unwrap();
    assert_eq!(c.startup.exception.backend, ExceptionBackend::VirtioUser);
    assert_eq!(c.startup.exception.from_kernel_rate, 5000);
    // Fixed at start: a change is refused with the field named.
    assert_eq!(c.startup.changed_fields(&parse_str(GOOD).unwrap().startup), vec!["exception"]);
}

#[test]
fn two_ports_cannot_share_an_exception_interface() {
    let two = GOOD.replacen(
        "listeners:",
        "  - {name: int, device: net_pcap1, address: 10.1.0.1/24, exception_interface: lbd-ext}\nlisteners:",
        1,
    );
    let e = parse_str(&two).unwrap_err();
    assert_eq!(e.field, "ports[1].exception_interface");
    assert!(e.message.contains("port `ext`"), "{e}");
}

#[test]
fn health_checks_fill_in_defaults() {
    let c = parse_str(&GOOD.replacen(
        "    scheduler: maglev\n",
        "    scheduler: maglev\n    health_check: {kind: http}\n    slow_start: 30s\n",
        1,
    ))
    .unwrap();
    let l = &c.forwarding.listeners[0];
    let h = l.health_check.as_ref().unwrap();
    assert_eq!((h.interval, h.timeout, h.rise, h.fall), (Duration::from_secs(2), Duration::from_secs(1), 2, 3));
    assert_eq!((h.path.as_str(), h.status.as_slice(), h.port), ("/", &[(200, 399)][..], None));
    assert_eq!(l.all_down, crate::health::AllDownPolicy::FailOpen);
    assert_eq!(l.slow_start, Some(Duration::from_secs(30)));
    assert!(c.forwarding.health_builtin);
    // No check, no slow start by default; builtin can be switched off.
    let c = parse_str(&format!("{GOOD}health: {{builtin: off}}\n")).unwrap();
    assert!(c.forwarding.listeners[0].health_check.is_none() && c.forwarding.listeners[0].slow_start.is_none());
    assert!(!c.forwarding.health_builtin);
    let c = parse_str(&GOOD.replacen(
        "    scheduler: maglev\n",
        "    scheduler: maglev\n    all_down: drop\n    health_check: {kind: udp, payload: ping, expect: pong, port: 53, interval: 500ms, timeout: 200ms, rise: 1, fall: 1}\n",
        1,
    ))
    .unwrap();
    let l = &c.forwarding.listeners[0];
    let h = l.health_check.as_ref().unwrap();
    assert_eq!((h.payload.as_slice(), h.expect.as_deref(), h.port), (&b"ping"[..], Some(&b"pong"[..]), Some(53)));
    assert_eq!(l.all_down, crate::health::AllDownPolicy::Drop);
    let c = parse_str(&GOOD.replacen(
        "    scheduler: maglev\n",
        "    scheduler: maglev\n    health_check: {kind: http, status: [200, \"300-302\"], body: ok, host: example.org, path: /healthz}\n",
        1,
    ))
    .unwrap();
    let h = c.forwarding.listeners[0].health_check.clone().unwrap();
    assert_eq!(h.status, vec![(200, 200), (300, 302)]);
    assert_eq!((h.body.as_deref(), h.host.as_deref(), h.path.as_str()), (Some("ok"), Some("example.org"), "/healthz"));
}

#[test]
fn health_check_errors_name_the_field() {
    let with = |check: &str| err_with("    scheduler: maglev\n", &format!("    scheduler: maglev\n{check}"));
    let cases: &[(&str, &str, &str)] = &[
        (
            "    health_check: {kind: tcp, interval: 1s, timeout: 2s}\n",
            "health_check.timeout",
            "longer than the interval",
        ),
        ("    health_check: {kind: tcp, rise: 0}\n", "health_check.rise", "out of range"),
        ("    health_check: {kind: tcp, fall: 101}\n", "health_check.fall", "out of range"),
        ("    health_check: {kind: tcp, interval: 10ms}\n", "health_check.interval", "too short"),
        ("    health_check: {kind: tcp, interval: often}\n", "health_check.interval", "not a duration"),
        ("    health_check: {kind: tcp, port: 0}\n", "health_check.port", "not a port"),
        ("    health_check: {kind: tcp, path: /x}\n", "health_check.path", "only applies to `kind: http`"),
        ("    health_check: {kind: http, payload: x}\n", "health_check.payload", "only applies to `kind: udp`"),
        ("    health_check: {kind: http, path: nope}\n", "health_check.path", "must start with `/`"),
        ("    health_check: {kind: http, status: [700]}\n", "health_check.status", "not an HTTP status"),
        ("    health_check: {kind: http, status: [\"500-200\"]}\n", "health_check.status", "ends before"),
        ("    health_check: {kind: http, status: []}\n", "health_check.status", "at least one"),
        ("    health_check: {kind: http, body: \"\"}\n", "health_check.body", "1 to 1024"),
        ("    health_check: {kind: udp, payload: \"\"}\n", "health_check.payload", "1 to 1024"),
        ("    slow_start: 2h\n", "slow_start", "too long"),
        ("    slow_start: 1ms\n", "slow_start", "too short"),
    ];
    for (check, field, msg) in cases {
        let e = with(check);
        assert_eq!(e.field, format!("listeners[0].{field}"), "{check}: {e}");
        assert!(e.message.contains(msg), "{check}: {e}");
    }
    let e = with("    health_check: {kind: icmp}\n");
    assert!(e.to_string().contains("unknown variant `icmp`"), "{e}");
    let e = with("    all_down: maybe\n");
    assert!(e.to_string().contains("unknown variant `maybe`"), "{e}");
    let e = with("    health_check: {kind: tcp, retries: 3}\n");
    assert!(e.to_string().contains("unknown field `retries`"), "{e}");
    let e = parse_str(&format!("{GOOD}health: {{builtin: maybe}}\n")).unwrap_err();
    assert!(e.to_string().contains("unknown variant `maybe`"), "{e}");
}

/// Schedulers, the fields Maglev hashes and persistence: what each
/// listener key means where it applies, and a named error where it does not.
#[test]
fn scheduler_hash_and_persistence_keys() {
    let with = |lines: &str| GOOD.replacen("    scheduler: maglev\n", lines, 1);
    let ok = |lines: &str| {
        parse_str(&with(lines)).unwrap_or_else(|e| panic!("{lines}: {e}")).forwarding.listeners[0].clone()
    };
    let err = |lines: &str| parse_str(&with(lines)).expect_err(lines);

    let l = ok("    scheduler: maglev\n    hash: source_ip\n    persistence: 10m\n");
    assert_eq!(l.scheduler, SchedulerKind::Maglev { table_size: 65537, hash: HashFields::SourceIp });
    assert_eq!(l.persistence, Some(Duration::from_secs(600)));
    let l = ok("    hash: source_ip_and_destination_port\n");
    assert_eq!(l.scheduler, SchedulerKind::Maglev { table_size: 65537, hash: HashFields::SourceIpAndDestinationPort });
    assert_eq!(l.persistence, None);
    let l = ok("    scheduler: source_hash\n    maglev_table_size: 251\n");
    assert_eq!(l.scheduler, SchedulerKind::SourceHash { table_size: 251 });
    assert_eq!(l.tcp_non_syn, NonSynPolicy::Schedule, "source hash finds a flow's backend again");
    let l = ok("    scheduler: least_connections\n    persistence: 1s\n");
    assert_eq!((l.scheduler, l.persistence), (SchedulerKind::LeastConnections, Some(Duration::from_secs(1))));
    assert_eq!(l.tcp_non_syn, NonSynPolicy::Drop);
    assert_eq!(ok("    scheduler: round_robin\n    persistence: 2h\n").scheduler, SchedulerKind::RoundRobin);

    for (lines, field, says) in [
        ("    scheduler: round_robin\n    hash: source_ip\n", "hash", "only applies to `scheduler: maglev`"),
        ("    scheduler: least_connections\n    hash: five_tuple\n", "hash", "only applies to `scheduler: maglev`"),
        ("    scheduler: source_hash\n    hash: five_tuple\n", "hash", "always hashes the client address"),
        ("    scheduler: least_connections\n    maglev_table_size: 251\n", "maglev_table_size", "only applies"),
        ("    scheduler: least_connections\n    tcp_non_syn: schedule\n", "tcp_non_syn", "`schedule` needs"),
        ("    scheduler: source_hash\n    maglev_table_size: 100\n", "maglev_table_size", "must be a prime"),
        ("    persistence: 500ms\n", "persistence", "too short"),
        ("    persistence: 30d\n", "persistence", "too long"),
        ("    persistence: soon\n", "persistence", "not a duration"),
    ] {
        let e = err(lines);
        assert_eq!(e.field, format!("listeners[0].{field}"), "{lines}: {e}");
        assert!(e.message.contains(says), "{lines}: {e}");
    }
    // Unknown names are serde's errors, naming the field and the choices.
    let e = err("    hash: client_ip\n");
    assert_eq!(e.field, "listeners[0].hash", "{e}");
    assert!(e.message.contains("five_tuple"), "{e}");
    let e = err("    scheduler: least_conn\n");
    assert!(e.message.contains("least_connections"), "{e}");
}

#[test]
fn persistence_table_size_is_a_restart_only_power_of_two() {
    assert_eq!(parse_str(GOOD).unwrap().startup.persistence_entries, 1 << 20);
    let set = |n: &str| GOOD.replace("sessions: {", &format!("sessions: {{persistence_entries: {n}, "));
    let c = parse_str(&set("4096")).unwrap();
    assert_eq!(c.startup.persistence_entries, 4096);
    assert_eq!(parse_str(GOOD).unwrap().startup.changed_fields(&c.startup), vec!["sessions.persistence_entries"]);
    for bad in ["1000", "512", "536870912"] {
        let e = parse_str(&set(bad)).unwrap_err();
        assert_eq!(e.field, "sessions.persistence_entries", "{bad}: {e}");
        assert!(e.message.contains("power of two"), "{e}");
    }
}

#[test]
fn least_connections_listeners_have_a_bounded_number_of_backends() {
    let backends = |n: usize| -> String {
        (0..n).map(|i| format!("      - {{address: 10.1.{}.{}, port: 8080}}\n", i / 250, 1 + i % 250)).collect()
    };
    let yaml = |n: usize| {
        GOOD.replacen("    scheduler: maglev\n", "    scheduler: least_connections\n", 1).replacen(
            "      - {address: 10.1.0.11, port: 8080, weight: 1}\n",
            &backends(n),
            1,
        )
    };
    assert!(parse_str(&yaml(MAX_LEAST_CONNECTIONS_BACKENDS)).is_ok());
    let e = parse_str(&yaml(MAX_LEAST_CONNECTIONS_BACKENDS + 1)).unwrap_err();
    assert_eq!(e.field, "listeners[0].backends");
    assert!(e.message.contains("at most 256"), "{e}");
}

#[test]
fn metrics_access_keys_are_validated() {
    let with = |m: &str| GOOD.replacen("sessions:", &format!("metrics: {{{m}}}\nsessions:"), 1);
    let c = parse_str(&with("allow: [\"10.0.0.0/8\", \"192.0.2.7\", \"2001:db8::/32\"]")).unwrap();
    let a = &c.startup.metrics_access;
    assert!(a.allows("10.9.8.7".parse().unwrap()) && a.allows("192.0.2.7".parse().unwrap()));
    assert!(!a.allows("192.0.2.8".parse().unwrap()) && !a.allows("127.0.0.1".parse().unwrap()));
    assert!(parse_str(GOOD).unwrap().startup.metrics_access.allows("203.0.113.1".parse().unwrap()), "default: any");
    let e = parse_str(&with("allow: [\"10.0.0.0/8\", \"ten\"]")).unwrap_err();
    assert_eq!(e.field, "metrics.allow[1]");
    let e = parse_str(&with("bearer_token_file: /nonexistent/token")).unwrap_err();
    assert_eq!(e.field, "metrics.bearer_token_file");
    assert!(e.message.contains("cannot read /nonexistent/token"), "{e}");
    let dir = std::env::temp_dir().join(format!("lbd-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("t");
    std::fs::write(&file, "  \n").unwrap();
    let e = parse_str(&with(&format!("bearer_token_file: {}", file.display()))).unwrap_err();
    assert_eq!(e.field, "metrics.bearer_token_file");
    std::fs::write(&file, "abc\n").unwrap();
    let c = parse_str(&with(&format!("bearer_token_file: {}", file.display()))).unwrap();
    let token = c.startup.metrics_access.token.clone().unwrap();
    assert!(token.matches(b"abc") && !token.matches(b"abd") && !token.matches(b"abcd"));
    assert!(!format!("{:?}", c.startup).contains("abc"), "the token never shows in debug output");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn echo_reply_rate_defaults_and_is_bounded() {
    assert_eq!(parse_str(GOOD).unwrap().startup.icmp_echo_reply_rate, DEFAULT_ECHO_REPLY_RATE);
    let c = parse_str(&GOOD.replacen("sessions:", "icmp: {echo_reply_rate: 50}\nsessions:", 1)).unwrap();
    assert_eq!(c.startup.icmp_echo_reply_rate, 50);
    let e = err_with("sessions:", "icmp: {echo_reply_rate: 0}\nsessions:");
    assert_eq!(e.field, "icmp.echo_reply_rate");
    let e = err_with("sessions:", "icmp: {echo_rate: 5}\nsessions:");
    assert!(e.field.starts_with("icmp"), "{e}");
}

#[test]
fn fragment_bounds_default_and_are_checked() {
    use crate::fragments::FragmentLimits;
    assert_eq!(parse_str(GOOD).unwrap().startup.fragments, FragmentLimits::default());
    let c = parse_str(&GOOD.replacen(
        "sessions:",
        "fragments: {max_datagrams: 10, max_fragments_per_datagram: 50, max_held: 7, timeout: 300ms}\nsessions:",
        1,
    ))
    .unwrap();
    let want = FragmentLimits { max_datagrams: 10, max_fragments: 50, max_held: 7, timeout_ms: 300 };
    assert_eq!(c.startup.fragments, want);
    for (bad, field) in [
        ("max_datagrams: 0", "fragments.max_datagrams"),
        ("max_fragments_per_datagram: 9000", "fragments.max_fragments_per_datagram"),
        ("max_held: 0", "fragments.max_held"),
        ("timeout: 5ms", "fragments.timeout"),
        ("timeout: 2m", "fragments.timeout"),
        ("timeout: soon", "fragments.timeout"),
        ("max_datagrams: 65536, max_fragments_per_datagram: 8192", "fragments"),
    ] {
        let e = err_with("sessions:", &format!("fragments: {{{bad}}}\nsessions:"));
        assert_eq!(e.field, field, "{bad}: {e}");
    }
    let e = err_with("sessions:", "fragments: {max_fragments: 5}\nsessions:");
    assert!(e.field.starts_with("fragments"), "{e}");
}

#[test]
fn icmp_forward_rate_defaults_and_is_bounded() {
    let c = parse_str(GOOD).unwrap();
    assert_eq!(c.startup.icmp_forward_rate, DEFAULT_ICMP_FORWARD_RATE);
    let d = parse_str(&GOOD.replacen("sessions:", "icmp: {forward_rate: 50}\nsessions:", 1)).unwrap();
    assert_eq!(d.startup.icmp_forward_rate, 50);
    assert_eq!(d.startup.icmp_error_rate, DEFAULT_ICMP_ERROR_RATE, "the other rates keep their defaults");
    for bad in ["0", "10000001"] {
        let e = err_with("sessions:", &format!("icmp: {{forward_rate: {bad}}}\nsessions:"));
        assert_eq!(e.field, "icmp.forward_rate", "{bad}: {e}");
        assert!(e.to_string().contains("out of range"), "{e}");
    }
    let e = err_with("sessions:", "icmp: {forward_rate: -1}\nsessions:");
    assert!(e.field.starts_with("icmp"), "{e}");
    // Fixed at start: a change is a restart.
    assert_eq!(c.startup.changed_fields(&d.startup), vec!["icmp.forward_rate"]);
}

#[test]
fn icmp_error_rate_and_port_mtu_default_and_are_bounded() {
    let c = parse_str(GOOD).unwrap();
    assert_eq!(c.startup.icmp_error_rate, DEFAULT_ICMP_ERROR_RATE);
    assert_eq!(c.startup.ports[0].mtu, DEFAULT_MTU);
    let c = parse_str(&GOOD.replacen("sessions:", "icmp: {error_rate: 20}\nsessions:", 1)).unwrap();
    assert_eq!(c.startup.icmp_error_rate, 20);
    let e = err_with("sessions:", "icmp: {error_rate: 0}\nsessions:");
    assert_eq!(e.field, "icmp.error_rate");
    let mtu =
        |v: &str| GOOD.replacen("    gateway: 10.0.0.254\n", &format!("    gateway: 10.0.0.254\n    mtu: {v}\n"), 1);
    assert_eq!(parse_str(&mtu("1280")).unwrap().startup.ports[0].mtu, 1280);
    assert_eq!(parse_str(&mtu("68")).unwrap().startup.ports[0].mtu, 68);
    for bad in ["67", "1501", "9000"] {
        let e = parse_str(&mtu(bad)).unwrap_err();
        assert_eq!(e.field, "ports[0].mtu", "{bad}");
        assert!(e.to_string().contains("out of range"), "{e}");
    }
    // A change of either is a restart.
    let a = parse_str(GOOD).unwrap();
    let b = parse_str(&mtu("1280")).unwrap();
    assert_eq!(a.startup.changed_fields(&b.startup), vec!["ports"]);
}

#[test]
fn half_open_cap_defaults_to_a_quarter_of_the_table_and_is_bounded() {
    let c = parse_str(GOOD).unwrap();
    assert_eq!(c.forwarding.half_open_max(c.startup.session_capacity), 250_000);
    let c = parse_str(&GOOD.replacen(
        "{capacity_per_worker: 1000000",
        "{capacity_per_worker: 1000000, half_open_max_per_worker: 77",
        1,
    ))
    .unwrap();
    assert_eq!(c.forwarding.half_open_max(c.startup.session_capacity), 77);
    for bad in ["0", "1000001"] {
        let e = err_with(
            "{capacity_per_worker: 1000000",
            &format!("{{capacity_per_worker: 1000000, half_open_max_per_worker: {bad}"),
        );
        assert_eq!(e.field, "sessions.half_open_max_per_worker");
    }
}

#[test]
fn syn_proxy_held_defaults_to_1024_is_bounded_and_needs_a_restart() {
    let a = parse_str(GOOD).unwrap();
    assert_eq!(a.startup.syn_proxy_held, 1024);
    let with = |n: &str| {
        GOOD.replacen(
            "{capacity_per_worker: 1000000",
            &format!("{{capacity_per_worker: 1000000, syn_proxy_held: {n}"),
            1,
        )
    };
    let b = parse_str(&with("0")).unwrap();
    assert_eq!(b.startup.syn_proxy_held, 0);
    assert_eq!(a.startup.changed_fields(&b.startup), vec!["sessions.syn_proxy_held"]);
    assert_eq!(parse_str(&with("65535")).unwrap().startup.syn_proxy_held, 65535);
    let e = err_with("{capacity_per_worker: 1000000", "{capacity_per_worker: 1000000, syn_proxy_held: 65536");
    assert_eq!(e.field, "sessions.syn_proxy_held");
}

// Security groups (issue 11).

const SG: &str = "
security_groups:
  edge:
    rules:
      - {action: deny, protocol: tcp, source: 192.0.2.0/24, ports: 80, description: scanners}
      - {action: allow, sources: [10.0.0.0/8, 198.51.100.7], ports: \"1000-2000\"}
    default: allow
  closed: {rules: []}
security:
  default_group: edge
";

fn sg_err(from: &str, to: &str) -> ConfigError {
    let text = format!("{GOOD}{SG}");
    assert!(text.contains(from), "fixture lacks {from:?}");
    match parse_str(&text.replacen(from, to, 1)) {
        Ok(_) => panic!("accepted with {from:?} -> {to:?}"),
        Err(e) => e,
    }
}

#[test]
fn security_groups_validate_into_rules() {
    use crate::security::{Action, RuleProtocol};
    let c = parse_str(&format!("{GOOD}{SG}")).unwrap();
    let g = &c.forwarding.security_groups["edge"];
    assert_eq!(g.default, Action::Allow);
    assert_eq!(g.rules[0].protocol, RuleProtocol::Tcp);
    assert_eq!(g.rules[0].ports, (80, 80));
    assert_eq!(g.rules[1].protocol, RuleProtocol::Any);
    assert_eq!(g.rules[1].ports, (1000, 2000));
    assert_eq!(g.rules[1].sources[1].to_string(), "198.51.100.7/32");
    assert_eq!(c.forwarding.security_groups["closed"].default, Action::Deny, "deny unless said");
    // The instance default applies to the listener that names none...
    assert_eq!(c.forwarding.listeners[0].security_group.as_deref(), Some("edge"));
    // ...and its own group wins.
    let own =
        format!("{GOOD}{SG}").replace("    scheduler: maglev\n", "    scheduler: maglev\n    security_group: closed\n");
    let c = parse_str(&own).unwrap();
    assert_eq!(c.forwarding.listeners[0].security_group.as_deref(), Some("closed"));
    // Without groups nothing changes.
    assert_eq!(parse_str(GOOD).unwrap().forwarding.listeners[0].security_group, None);
}

#[test]
fn security_group_errors_name_the_field() {
    let cases = [
        ("source: 192.0.2.0/24", "source: 192.0.2.1/24", "security_groups.edge.rules[0].source", "host bits"),
        ("source: 192.0.2.0/24", "source: 192.0.2.0/33", "security_groups.edge.rules[0].source", "not an IPv4 network"),
        ("198.51.100.7]", "nonsense]", "security_groups.edge.rules[1].sources[1]", "not an IPv4 network"),
        ("ports: 80,", "ports: 65536,", "security_groups.edge.rules[0].ports", "65536 is not a port"),
        ("\"1000-2000\"", "\"2000-1000\"", "security_groups.edge.rules[1].ports", "reversed"),
        ("\"1000-2000\"", "\"\"", "security_groups.edge.rules[1].ports", "empty"),
        ("default_group: edge", "default_group: nope", "security.default_group", "no security group `nope`"),
        ("sources: [10.0.0.0/8, 198.51.100.7]", "sources: []", "security_groups.edge.rules[1].sources", "empty"),
        ("ports: 80,", "ports: 80, source: 10.0.0.0/8,", "security_groups.edge.rules[0]", "duplicate field"),
        ("ports: 80,", "ports: 80, sources: [10.0.0.0/8],", "security_groups.edge.rules[0].sources", "not both"),
        ("ports: 80,", "ports: 80, color: red,", "security_groups", "unknown field `color`"),
        ("action: deny", "action: drop", "security_groups", "unknown variant `drop`"),
        ("  closed:", "  bad name:", "security_groups.bad name", "not a valid name"),
    ];
    for (from, to, field, what) in cases {
        let e = sg_err(from, to);
        assert!(e.field.starts_with(field), "{from} -> {to}: field {:?}, wanted {field}", e.field);
        assert!(e.message.contains(what), "{from} -> {to}: message {:?}, wanted {what}", e.message);
        assert!(e.to_string().starts_with("/etc/lbd/test.yaml"), "{e}");
    }
    let unknown =
        format!("{GOOD}{SG}").replace("    scheduler: maglev\n", "    scheduler: maglev\n    security_group: nope\n");
    let e = parse_str(&unknown).unwrap_err();
    assert_eq!(e.field, "listeners[0].security_group");
    assert!(e.message.contains("defined: closed, edge"), "{e}");
}

#[test]
fn idle_mode_defaults_to_auto_and_keeps_idle_sleep_zero_as_busy() {
    let c = parse_str(GOOD).unwrap();
    assert_eq!(c.startup.idle, IdleMode::Auto);
    assert_eq!(c.startup.idle_sleep, DEFAULT_IDLE_SLEEP);
    let c = parse_str(&GOOD.replace("lcores: {workers: 1}", "lcores: {workers: 1, idle_sleep: 0us}")).unwrap();
    assert_eq!(c.startup.idle, IdleMode::Busy);
    let c = parse_str(&GOOD.replace("lcores: {workers: 1}", "lcores: {workers: 1, idle: adaptive, idle_sleep: 1ms}"))
        .unwrap();
    assert_eq!((c.startup.idle, c.startup.idle_sleep), (IdleMode::Adaptive, Duration::from_millis(1)));
    let e = err_with("lcores: {workers: 1}", "lcores: {workers: 1, idle: lazy}");
    assert_eq!(e.field, "lcores.idle");
    assert!(e.message.contains("busy, adaptive or auto"), "{e}");
    let e = err_with("lcores: {workers: 1}", "lcores: {workers: 1, idle: adaptive, idle_sleep: 0us}");
    assert_eq!(e.field, "lcores.idle_sleep");
    assert!(e.message.contains("at least 10us"), "{e}");
}

#[test]
fn burst_is_optional_and_bounded() {
    assert_eq!(parse_str(GOOD).unwrap().startup.burst, None);
    let c = parse_str(&GOOD.replace("lcores: {workers: 1}", "lcores: {workers: 1, burst: 256}")).unwrap();
    assert_eq!(c.startup.burst, Some(256));
    for bad in ["0", "257", "4294967295"] {
        let e = err_with("lcores: {workers: 1}", &format!("lcores: {{workers: 1, burst: {bad}}}"));
        assert_eq!(e.field, "lcores.burst", "{bad}: {e}");
        assert!(e.message.contains("out of range"), "{e}");
    }
    // Not a u32: serde's error, still naming the field.
    let e = err_with("lcores: {workers: 1}", "lcores: {workers: 1, burst: -1}");
    assert!(e.to_string().contains("burst"), "{e}");
}

#[test]
fn af_xdp_vdevs_need_an_interface_and_no_more_queues_than_workers() {
    let with = |vdev: &str, workers: u32| {
        GOOD.replace("lcores: {workers: 1}", &format!("lcores: {{workers: {workers}}}"))
            .replace("net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap", vdev)
    };
    assert!(parse_str(&with("net_af_xdp0,iface=eth1", 1)).is_ok());
    assert!(parse_str(&with("net_af_xdp0,iface=eth1,start_queue=2,queue_count=2", 2)).is_ok());
    let e = parse_str(&with("net_af_xdp0,queue_count=1", 1)).unwrap_err();
    assert_eq!(e.field, "eal");
    assert!(e.message.contains("needs iface="), "{e}");
    let e = parse_str(&with("net_af_xdp0,iface=eth1,queue_count=4", 2)).unwrap_err();
    assert!(e.message.contains("queue_count=4 is more than the 2 worker(s)"), "{e}");
    let e = parse_str(&with("net_af_xdp0,iface=eth1,queue_count=many", 2)).unwrap_err();
    assert!(e.message.contains("not a queue count"), "{e}");
    // `--vdev=` spelling too.
    let g = with("x", 1).replace("\"--vdev\", \"x\"", "\"--vdev=net_af_xdp0,iface=eth1,queue_count=3\"");
    assert!(parse_str(&g).unwrap_err().message.contains("queue_count=3"));
}

#[test]
fn small_af_packet_rings_are_warned_about_by_name() {
    let eal = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let w = af_packet_ring_warnings(&eal(&[
        "--no-pci",
        "--vdev",
        "net_af_packet0,iface=eth1,qpairs=2",
        "--vdev=net_af_packet1,iface=eth2,framecnt=1024",
        "--vdev",
        "net_af_packet2,iface=eth3,framecnt=4096",
        "--vdev",
        "net_af_xdp0,iface=eth4",
    ]));
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].starts_with("net_af_packet0: an RX ring of 512 frames (DPDK's default)"), "{w:?}");
    assert!(w[1].starts_with("net_af_packet1: an RX ring of 1024 frames overflows"), "{w:?}");
    assert!(w.iter().all(|l| l.contains("framecnt=4096")));
    assert!(af_packet_ring_warnings(&eal(&["--vdev", "net_af_packet0,iface=eth1,framecnt=2048"])).is_empty());
}

#[test]
fn af_xdp_ports_default_to_rings_of_4096() {
    let xdp = GOOD
        .replace("net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap", "net_af_xdp0,iface=eth1")
        .replace("device: net_pcap0", "device: net_af_xdp0");
    let c = parse_str(&xdp).unwrap();
    let p = c.startup.ports.iter().find(|p| p.device == "net_af_xdp0").expect("the af_xdp port");
    assert_eq!((p.rx_descriptors, p.tx_descriptors), (4096, 4096));
    let other = parse_str(GOOD).unwrap();
    assert!(other.startup.ports.iter().all(|p| p.rx_descriptors == 1024 && p.tx_descriptors == 1024));
}
