//! Per-worker counters: every drop reason, every local event, every port,
//! listener and backend.
//!
//! Each worker writes only its own [`WorkerCounters`], with plain relaxed
//! load+store (a single writer needs no read-modify-write), and each block
//! is cache-line aligned so workers never share a line. Readers (the stats
//! writer, later the exporter) sum across workers with relaxed loads; a
//! reading may be a few packets behind, never torn.

pub use crate::counter::Counter;

macro_rules! reasons {
    ($(#[$m:meta])* $name:ident { $($(#[doc = $doc:expr])* $var:ident = $label:literal,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $name { $($(#[doc = $doc])* $var,)* }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$var,)*];
            pub const COUNT: usize = Self::ALL.len();
            /// The stable name used in stats output and metrics labels.
            pub fn label(self) -> &'static str {
                match self { $($name::$var => $label,)* }
            }
            /// One-line meaning, for documentation and `--help`.
            pub fn description(self) -> &'static str {
                match self { $($name::$var => concat!($($doc),*).trim_start(),)* }
            }
        }
    };
}

reasons! {
    /// Why a packet was dropped. Every drop in the engine names one.
    DropReason {
        /// Frame shorter than the headers it claims (Ethernet, IPv4, or the L4 header).
        Truncated = "truncated",
        /// Destination MAC is neither the port's nor broadcast.
        WrongDstMac = "wrong_dst_mac",
        /// 802.1Q/802.1ad tagged frame (VLANs are not supported yet).
        VlanTagged = "vlan_tagged",
        /// Ethertype other than IPv4 and ARP (IPv6 included).
        UnsupportedEthertype = "unsupported_ethertype",
        /// ARP that is not Ethernet/IPv4, or shorter than 28 bytes.
        ArpMalformed = "arp_malformed",
        /// ARP request for an address this port does not own.
        ArpNotOurs = "arp_not_ours",
        /// IPv4 version is not 4 or IHL below 5.
        IpBadHeader = "ip_bad_header",
        /// IPv4 header with options (not supported).
        IpOptions = "ip_options",
        /// IPv4 total length below the header or beyond the frame.
        IpBadLength = "ip_bad_length",
        /// IPv4 header checksum does not verify.
        IpBadChecksum = "ip_bad_checksum",
        /// IPv4 fragment of a protocol other than TCP and UDP.
        IpFragment = "ip_fragment",
        /// TTL of 1 or 0 on a packet to forward.
        TtlExceeded = "ttl_exceeded",
        /// IP protocol other than TCP, UDP and ICMP.
        UnsupportedProtocol = "unsupported_protocol",
        /// ICMP other than an echo request to a local address.
        IcmpUnsupported = "icmp_unsupported",
        /// Echo request over `icmp.echo_reply_rate`.
        IcmpRateLimited = "icmp_rate_limited",
        /// TCP data offset or UDP length field inconsistent with the packet.
        L4BadHeader = "l4_bad_header",
        /// Sent to a VIP or port address on a protocol/port no listener serves.
        NoListener = "no_listener",
        /// Not to a listener and matching no session (e.g. a reply after expiry).
        NoSession = "no_session",
        /// TCP segment without SYN and without session, on a listener that drops those.
        TcpNoSession = "tcp_no_session",
        /// The listener has no backend with a non-zero weight.
        NoBackend = "no_backend",
        /// The worker's session table (or its index) is full.
        SessionTableFull = "session_table_full",
        /// Another session already uses the backend-side tuple (same client address and port through another VIP).
        NatTupleConflict = "nat_tuple_conflict",
        /// No route to the destination.
        NoRoute = "no_route",
        /// The queue of packets waiting for ARP resolution is full.
        NeighborQueueFull = "neighbor_queue_full",
        /// The next hop never answered ARP.
        NeighborUnresolved = "neighbor_unresolved",
        /// The ring to the owning worker was full.
        HandoffRingFull = "handoff_ring_full",
        /// The TX queue did not take the packet.
        TxFull = "tx_full",
        /// Freed at shutdown while in flight.
        Shutdown = "shutdown",
        /// For the host's kernel, over the exception path's rate limit (`exception.to_kernel_rate`).
        KernelRateLimited = "kernel_rate_limited",
        /// For the host's kernel, but the queue to the exception thread was full.
        KernelQueueFull = "kernel_queue_full",
        /// For the host's kernel, but its interface did not take the frame.
        KernelTxFull = "kernel_tx_full",
        /// From the host's kernel, over the exception path's rate limit (`exception.from_kernel_rate`).
        FromKernelRateLimited = "from_kernel_rate_limited",
        /// From the host's kernel, but the queue to the worker that sends it was full.
        FromKernelQueueFull = "from_kernel_queue_full",
        // IPv4 fragments (issue 11).
        /// A fragment overlapping one already seen of its datagram, or contradicting its end; every later fragment of that datagram too.
        FragmentOverlap = "fragment_overlap",
        /// A fragment past `fragments.max_fragments_per_datagram`; every later fragment of that datagram too.
        FragmentTooMany = "fragment_too_many",
        /// A fragment held for its datagram's first fragment, which did not come within `fragments.timeout`.
        FragmentTimeout = "fragment_timeout",
        /// A fragment of a new datagram while `fragments.max_datagrams` are tracked, or to hold while `fragments.max_held` are held.
        FragmentTableFull = "fragment_table_full",
        /// A later fragment of a datagram whose first fragment was dropped (its reason counted once) or is no longer known.
        FragmentOfDropped = "fragment_of_dropped",
        // Rate limits and blackholing (`listeners[].limits`, `listeners[].protection`).
        /// Over the listener's `limits.new_connections_per_second` or `limits.packets_per_second`.
        ListenerRateLimited = "listener_rate_limited",
        /// Over the client address's `limits.per_source` new connections or packets per second.
        SourceRateLimited = "source_rate_limited",
        /// A new connection from a client address already at `limits.per_source.max_sessions`.
        SourceSessionLimit = "source_session_limit",
        /// The listener is scrubbed (offered traffic above `protection.scrub`) and this is over the scrub rates.
        VipScrubbed = "vip_scrubbed",
        /// The listener is blackholed (offered traffic above `protection.blackhole`): every client packet is dropped.
        VipBlackholed = "vip_blackholed",
        // ICMP errors and the egress MTU (issue 11).
        /// ICMP error to a VIP or to forward whose quoted datagram matches no live session.
        IcmpErrorNoSession = "icmp_error_no_session",
        /// ICMP error to a VIP or to forward whose quote is not the start of an IPv4 TCP/UDP datagram.
        IcmpErrorMalformed = "icmp_error_malformed",
        /// DF set and larger than the egress port's MTU: answered with fragmentation needed (within `icmp.error_rate`).
        FragNeeded = "frag_needed",
        /// Larger than the egress port's MTU without DF (lbd does not fragment).
        TooBig = "too_big",
        // SYN-flood defence.
        /// A SYN found the half-open sessions at their cap (or the table full) and none of them could be evicted.
        HalfOpenFull = "half_open_full",
        /// An ACK without session to a listener with `syn_proxy: on` whose acknowledgment is no valid SYN cookie.
        SynProxyBadCookie = "syn_proxy_bad_cookie",
        /// A segment of a proxied connection whose backend has not completed its handshake yet (TCP sends it again).
        SynProxyPending = "syn_proxy_pending",
        /// No buffer for a segment the SYN proxy writes.
        SynProxyNoBuffer = "syn_proxy_no_buffer",
        // Security groups (issue 11).
        /// A new flow the listener's security group denies (a rule or its default).
        SecurityGroupDenied = "security_group_denied",
        // Forwarded ICMP errors (issue 11).
        /// ICMP error about a live flow over `icmp.forward_rate`: not forwarded.
        IcmpForwardRateLimited = "icmp_forward_rate_limited",
        // SYN proxy (issue 11).
        /// A pure ACK (no data, FIN or RST) of a proxied connection before
        /// its backend answered: nothing TCP would send again, not held.
        SynProxyAckAbsorbed = "syn_proxy_ack_absorbed",
    }
}

reasons! {
    /// Things that happen to packets other than forwarding and dropping.
    Event {
        /// ARP replies sent for our addresses and VIPs.
        ArpRepliesSent = "arp_replies_sent",
        /// ARP requests sent to resolve next hops.
        ArpRequestsSent = "arp_requests_sent",
        /// ARP packets that taught us a neighbour.
        ArpLearned = "arp_learned",
        /// ARP packets consumed without learning (e.g. replies to others).
        ArpIgnored = "arp_ignored",
        /// ICMP echo requests to a VIP or port address answered.
        IcmpEchoReplies = "icmp_echo_replies",
        /// Packets handed to another worker (owner of the flow).
        HandoffOut = "handoff_out",
        /// Packets received from other workers.
        HandoffIn = "handoff_in",
        /// Packets parked while their next hop resolved.
        NeighborParked = "neighbor_parked",
        /// Sessions created.
        SessionsCreated = "sessions_created",
        /// Sessions removed after their idle timeout.
        SessionsExpired = "sessions_expired",
        /// TCP non-SYN packets without session rescheduled by Maglev.
        SessionsRescheduled = "sessions_rescheduled",
        /// New flows sent to the backend their client's persistence entry named.
        PersistenceHits = "persistence_hits",
        /// Sessions of a removed backend reset (TCP RST to the client).
        SessionsReset = "sessions_reset",
        /// Sessions of a removed backend moved to another backend.
        SessionsMoved = "sessions_moved",
        /// Frames passed up to the host's kernel (exception path).
        ToKernel = "to_kernel",
        /// Frames from the host's kernel sent out of a port (exception path).
        FromKernel = "from_kernel",
        /// Allocation of an mbuf for an ARP request or copy failed.
        MbufAllocFailed = "mbuf_alloc_failed",
        /// Loop iterations that skipped RX because a hand-off ring to a
        /// busier worker was filling (the NIC queue holds the packets).
        RxPaused = "rx_paused",
        /// Loop iterations.
        Polls = "polls",
        /// Loop iterations that found packets.
        BusyPolls = "busy_polls",
        /// Sleeps of an idle worker (`lcores.idle`).
        IdleSleeps = "idle_sleeps",
        /// Microseconds an idle worker spent in those sleeps (as measured:
        /// the kernel may make a sleep longer than asked).
        IdleSleepMicros = "idle_sleep_us",
        /// Polls right after a sleep that found packets: traffic that
        /// found the worker asleep and waited up to one sleep.
        IdleWakeups = "idle_wakeups",
        // IPv4 fragments (issue 11).
        /// Fragments held until their datagram's first fragment came.
        FragmentsHeld = "fragments_held",
        /// Datagrams whose fragments all went to their flow's owner.
        FragmentDatagramsSteered = "fragment_datagrams_steered",
        // ICMP errors (issue 11).
        /// ICMP errors about a flow forwarded to its backend or client, translated.
        IcmpErrorsForwarded = "icmp_errors_forwarded",
        /// ICMP errors lbd sent: time exceeded, fragmentation needed.
        IcmpErrorsSent = "icmp_errors_sent",
        /// ICMP errors lbd did not send, over `icmp.error_rate`.
        IcmpErrorsRateLimited = "icmp_errors_rate_limited",
        // SYN-flood defence.
        /// Half-open TCP sessions evicted to make room for a new SYN.
        HalfOpenEvicted = "half_open_evicted",
        /// SYN-ACKs with a SYN cookie sent by the SYN proxy.
        SynProxySynAcks = "syn_proxy_syn_acks",
        /// Client ACKs whose SYN cookie checked: sessions the SYN proxy opened.
        SynProxyAccepted = "syn_proxy_accepted",
        /// Backend handshakes the SYN proxy completed.
        SynProxyBackendOpened = "syn_proxy_backend_opened",
        /// Client segments the SYN proxy held until their backend's handshake completed.
        SynProxyHeld = "syn_proxy_held",
    }
}

#[derive(Default, Debug)]
#[repr(C, align(64))]
pub struct PortCounters {
    pub rx_packets: Counter,
    pub rx_bytes: Counter,
    pub tx_packets: Counter,
    pub tx_bytes: Counter,
}

/// Traffic through a listener or a backend, both directions, and its
/// sessions.
#[derive(Default, Debug)]
#[repr(C, align(64))]
pub struct FlowCounters {
    /// Client→backend packets and bytes.
    pub in_packets: Counter,
    pub in_bytes: Counter,
    /// Backend→client packets and bytes.
    pub out_packets: Counter,
    pub out_bytes: Counter,
    pub sessions_created: Counter,
    pub sessions_closed: Counter,
}

impl FlowCounters {
    #[inline]
    pub fn count(&self, dir: crate::session::Direction, bytes: usize) {
        match dir {
            crate::session::Direction::Request => {
                self.in_packets.inc();
                self.in_bytes.add(bytes as u64);
            }
            crate::session::Direction::Reply => {
                self.out_packets.inc();
                self.out_bytes.add(bytes as u64);
            }
        }
    }
}

#[derive(Debug)]
#[repr(C, align(64))]
pub struct WorkerCounters {
    pub drops: [Counter; DropReason::COUNT],
    pub events: [Counter; Event::COUNT],
    /// Live sessions in this worker's table (a gauge the worker sets).
    pub sessions_active: Counter,
    /// Packets waiting for ARP resolution (gauge).
    pub parked: Counter,
    /// Generation of the snapshot the worker runs (set when it switches).
    pub generation: Counter,
    /// TSC when the worker last switched snapshots.
    pub switched_tsc: Counter,
    /// Session table size (slots) and the memory it reserves (bytes).
    pub session_capacity: Counter,
    pub session_memory: Counter,
    /// Per-packet processing time.
    pub latency: crate::latency::LatencyBuckets,
    pub ports: Box<[PortCounters]>,
    pub listeners: Box<[FlowCounters]>,
    pub backends: Box<[FlowCounters]>,
    /// Rate limits and protection, per listener id.
    pub admission: crate::admission::AdmissionCounters,
    /// Security rule hits by counter slot (`security::RuleIds`).
    pub security_rules: Box<[Counter]>,
}

impl WorkerCounters {
    pub fn new(ports: usize, listeners: usize, backends: usize) -> WorkerCounters {
        WorkerCounters {
            drops: std::array::from_fn(|_| Counter::default()),
            events: std::array::from_fn(|_| Counter::default()),
            sessions_active: Counter::default(),
            parked: Counter::default(),
            generation: Counter::default(),
            switched_tsc: Counter::default(),
            session_capacity: Counter::default(),
            session_memory: Counter::default(),
            latency: crate::latency::LatencyBuckets::default(),
            ports: (0..ports).map(|_| PortCounters::default()).collect(),
            listeners: (0..listeners).map(|_| FlowCounters::default()).collect(),
            backends: (0..backends).map(|_| FlowCounters::default()).collect(),
            admission: crate::admission::AdmissionCounters::new(listeners),
            security_rules: (0..crate::security::MAX_SECURITY_COUNTERS).map(|_| Counter::default()).collect(),
        }
    }

    #[inline(always)]
    pub fn count_drop(&self, r: DropReason) {
        self.drops[r as usize].inc();
    }
    #[inline(always)]
    pub fn count_drop_n(&self, r: DropReason, n: u64) {
        self.drops[r as usize].add(n);
    }
    #[inline(always)]
    pub fn event(&self, e: Event) {
        self.events[e as usize].inc();
    }
    #[inline(always)]
    pub fn event_n(&self, e: Event, n: u64) {
        self.events[e as usize].add(n);
    }
    pub fn drop_count(&self, r: DropReason) -> u64 {
        self.drops[r as usize].get()
    }
    pub fn event_count(&self, e: Event) -> u64 {
        self.events[e as usize].get()
    }
}

/// Sessions backend `id` has in all workers' tables: created minus
/// closed, summed over `workers`, with relaxed loads of counters each
/// worker writes alone (no lock; a sum may miss a session created or
/// closed a moment ago on another core). Closed is read first: both only
/// grow, so created read after it is never smaller, and a worker whose
/// pair reads otherwise counts 0.
#[inline]
pub fn active_sessions(workers: &[std::sync::Arc<WorkerCounters>], id: crate::ids::BackendId) -> u64 {
    let mut n = 0u64;
    for w in workers {
        let b = &w.backends[usize::from(id)];
        let closed = b.sessions_closed.get();
        n += b.sessions_created.get().saturating_sub(closed);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for r in DropReason::ALL {
            assert!(seen.insert(r.label()));
            assert!(r.label().chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
            assert!(!r.description().is_empty());
        }
        assert_eq!(DropReason::COUNT, DropReason::ALL.len());
        assert_eq!(DropReason::ALL[DropReason::Shutdown as usize], DropReason::Shutdown);
        assert_eq!(Event::ALL[Event::BusyPolls as usize], Event::BusyPolls);
    }

    #[test]
    fn counter_alignment() {
        assert_eq!(std::mem::align_of::<PortCounters>(), 64);
        assert_eq!(std::mem::align_of::<FlowCounters>(), 64);
        let c = WorkerCounters::new(2, 1, 1);
        c.count_drop(DropReason::NoSession);
        c.count_drop_n(DropReason::NoSession, 2);
        assert_eq!(c.drop_count(DropReason::NoSession), 3);
    }
}

#[cfg(test)]
mod doc_tests {
    use super::DropReason;

    /// The labels in the README's drop-reason table (the table whose header
    /// is `| reason | meaning |`), in order. Panics on a row that is not
    /// exactly "| `label` | meaning |", so a typo cannot hide a row.
    fn readme_drop_rows(readme: &str) -> Vec<String> {
        let mut lines = readme.lines().skip_while(|l| l.trim() != "| reason | meaning |");
        assert!(lines.next().is_some(), "README has no `| reason | meaning |` table");
        assert_eq!(lines.next().map(str::trim), Some("|---|---|"), "drop-reason table separator");
        let mut labels = Vec::new();
        for row in lines.take_while(|l| l.trim_start().starts_with('|')) {
            let cells: Vec<&str> = row.trim().trim_matches('|').split('|').map(str::trim).collect();
            let [label, meaning] = cells[..] else {
                panic!("drop-reason row without exactly two cells: {row}");
            };
            let label = label
                .strip_prefix('`')
                .and_then(|l| l.strip_suffix('`'))
                .unwrap_or_else(|| panic!("drop-reason row whose reason is not `quoted`: {row}"));
            assert!(!meaning.is_empty(), "drop-reason row without a meaning: {row}");
            labels.push(label.to_owned());
        }
        labels
    }

    fn check_readme(readme: &str) -> Result<(), String> {
        let rows = readme_drop_rows(readme);
        let mut seen = std::collections::HashSet::new();
        for r in &rows {
            if !seen.insert(r.as_str()) {
                return Err(format!("README lists drop reason {r} twice"));
            }
            if !DropReason::ALL.iter().any(|d| d.label() == r) {
                return Err(format!("README lists drop reason {r}, which no counter has"));
            }
        }
        for d in DropReason::ALL {
            if !seen.contains(d.label()) {
                return Err(format!("README lacks drop reason {}", d.label()));
            }
        }
        Ok(())
    }

    /// The README's table lists every drop reason, so operators can look
    /// up any counter they see, and nothing else, so it describes no
    /// counter that does not exist.
    #[test]
    fn readme_drop_table_matches_the_counters() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        check_readme(&readme).unwrap();
        assert_eq!(readme_drop_rows(&readme).len(), DropReason::COUNT);
    }

    /// The check itself: a row too many, a row missing and a duplicate row
    /// are each found.
    #[test]
    fn readme_drop_table_check_finds_each_mismatch() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let extra = readme.replace("| `tx_full` |", "| `rx_full` | made up |\n| `tx_full` |");
        assert_eq!(check_readme(&extra), Err("README lists drop reason rx_full, which no counter has".into()));
        let without = readme.replace("| `tx_full` | the TX queue did not take the packet |\n", "");
        assert_ne!(without, readme, "the README row this test removes has changed");
        assert_eq!(check_readme(&without), Err("README lacks drop reason tx_full".into()));
        let twice = readme.replace("| `tx_full` |", "| `no_route` | again |\n| `tx_full` |");
        assert_eq!(check_readme(&twice), Err("README lists drop reason no_route twice".into()));
    }
}
