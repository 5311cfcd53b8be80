//! Ethernet ports: lookup, start-up with RSS, control, statistics.
use super::device::Device;
use super::eal::{Eal, EalHandle};
use super::mempool::Mempool;
use super::queue::{RxQueue, TxQueue};
use super::{check, sys, DpdkError};
use std::ffi::{CStr, CString};
use std::sync::Arc;

/// What `rte_eth_dev_info_get` says of a port.
#[derive(Debug, Clone)]
pub struct PortInfo {
    pub driver: String,
    pub max_rx_queues: u16,
    pub max_tx_queues: u16,
    pub rss_offloads: u64,
    pub reta_size: u16,
    pub hash_key_size: u8,
    pub socket: i32,
}

/// How to bring a port up.
#[derive(Debug, Clone)]
pub struct PortSetup {
    pub rx_queues: u16,
    pub tx_queues: u16,
    pub rx_descriptors: u16,
    pub tx_descriptors: u16,
    pub rss: Option<RssRequest>,
    pub promiscuous: bool,
}

/// Which client-endpoint fields a port's RSS should hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RssFields {
    Source,
    Destination,
}

/// RSS as lbd wants it: Toeplitz with `key` over the client endpoint,
/// and a RETA repeating `buckets` (bucket → RX queue).
#[derive(Debug, Clone)]
pub struct RssRequest {
    pub fields: RssFields,
    pub key: [u8; 40],
    pub buckets: Vec<u16>,
}

/// What RSS a started port ended up with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RssState {
    /// "client_source", "client_destination" (hashing the client endpoint
    /// only, so packets reach their owner), "flows" (the device cannot hash
    /// the endpoint alone: flows spread, hand-offs fix the rest), or "off".
    pub mode: String,
    pub key_set: bool,
    /// The RETA read back from the device (empty when none).
    pub reta: Vec<u16>,
}

/// A configured, started ethdev port. Its queues come from
/// [`Port::start`], once.
#[derive(Debug)]
pub struct Port {
    device: Arc<Device>,
    pub id: u16,
    pub driver: String,
    pub rx_queues: u16,
    /// Descriptors per RX queue, as the driver adjusted them.
    pub rx_descriptors: u16,
    pub rss: RssState,
}

/// Device counters as DPDK keeps them (`rte_eth_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    /// Dropped by the device: no free descriptor (for `net_af_packet` and
    /// `net_af_xdp`, frames the kernel dropped on a full ring, see
    /// `ring_drops`).
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    /// RX failed to get an mbuf from the pool.
    pub rx_nombuf: u64,
}

/// Reads a port's counters and link from any thread. Holds only the EAL:
/// DPDK checks the port id on each call, so a monitor of a port that has
/// closed reads zeros and "down".
#[derive(Debug, Clone)]
pub struct PortMonitor {
    id: u16,
    _eal: EalHandle,
}

impl PortMonitor {
    pub fn stats(&self) -> PortStats {
        stats_of(self.id)
    }

    pub fn link_up(&self) -> bool {
        link_up_of(self.id)
    }
}

fn stats_of(id: u16) -> PortStats {
    let mut s = sys::rte_eth_stats::default();
    // SAFETY: valid out-pointer; DPDK checks the port id (the EAL is alive:
    // callers hold a Port or a PortMonitor).
    if unsafe { sys::rte_eth_stats_get(id, &mut s) } != 0 {
        return PortStats::default();
    }
    PortStats {
        ipackets: s.ipackets,
        opackets: s.opackets,
        ibytes: s.ibytes,
        obytes: s.obytes,
        imissed: s.imissed + super::ring_drops::of(id),
        ierrors: s.ierrors,
        oerrors: s.oerrors,
        rx_nombuf: s.rx_nombuf,
    }
}

fn link_up_of(id: u16) -> bool {
    let mut l = sys::rte_eth_link::default();
    // SAFETY: valid out-pointer; DPDK checks the port id.
    let rc = unsafe { sys::rte_eth_link_get_nowait(id, &mut l) };
    rc == 0 && l.link_status() != 0
}

impl Port {
    /// The port id of DPDK device `name` (e.g. `net_pcap0`).
    pub fn find(_eal: &Eal, name: &str) -> Option<u16> {
        let c = CString::new(name).ok()?;
        let mut id = 0u16;
        // SAFETY: valid C string and out-pointer; the EAL is initialised.
        let rc = unsafe { sys::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut id) };
        (rc == 0).then_some(id)
    }

    pub fn info(_eal: &Eal, id: u16) -> Result<PortInfo, DpdkError> {
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: valid out-pointer; the port id is checked by DPDK.
        check("rte_eth_dev_info_get", unsafe { sys::rte_eth_dev_info_get(id, &mut info) })?;
        let driver = if info.driver_name.is_null() {
            String::from("?")
        } else {
            // SAFETY: non-null driver names are static C strings.
            unsafe { CStr::from_ptr(info.driver_name) }.to_string_lossy().into_owned()
        };
        // SAFETY: plain query.
        let socket = unsafe { sys::rte_eth_dev_socket_id(id) };
        Ok(PortInfo {
            driver,
            max_rx_queues: info.max_rx_queues,
            max_tx_queues: info.max_tx_queues,
            rss_offloads: info.flow_type_rss_offloads,
            reta_size: info.reta_size,
            hash_key_size: info.hash_key_size,
            socket,
        })
    }

    /// Configures queues on `pool`, starts the port, and returns it with
    /// the only handles to its queues. Fails when device `id` already has
    /// a live [`Port`] or live queues: its queues are handed out once.
    pub fn start(
        eal: &Eal,
        id: u16,
        s: &PortSetup,
        pool: &Arc<Mempool>,
    ) -> Result<(Port, Vec<RxQueue>, Vec<TxQueue>), DpdkError> {
        let info = Self::info(eal, id)?;
        let handle = eal.handle();
        if !handle.claim_port(id) {
            return Err(DpdkError(format!("port {id} is already started (its queues were handed out)")));
        }
        // From here on an error drops `device`, which closes the port and
        // releases the claim.
        let mut device = Device { id, started: false, eal: handle, _pool: Arc::clone(pool) };
        // af_xdp makes its sockets in the queue setup below.
        let xdp_sockets = super::ring_drops::XdpSockets::before_setup();
        let mut conf = sys::rte_eth_conf::default();
        let mut rss = RssState { mode: "off".into(), ..RssState::default() };
        let want = s.rss.as_ref().filter(|_| s.rx_queues > 1);
        // Outlives rte_eth_dev_configure, which reads it through a pointer.
        let mut key = want.map_or([0u8; 40], |r| r.key);
        if let Some(r) = want {
            // SAFETY: returns a constant.
            let base = unsafe { sys::lbd_shim_rss_ipv4_tcp_udp() };
            // SAFETY: returns a constant.
            let src = unsafe { sys::lbd_shim_rss_src_only() };
            // SAFETY: returns a constant.
            let dst = unsafe { sys::lbd_shim_rss_dst_only() };
            let base = base & info.rss_offloads;
            if base != 0 {
                let (only, name) = match r.fields {
                    RssFields::Source => (src, "client_source"),
                    RssFields::Destination => (dst, "client_destination"),
                };
                conf.rxmode.mq_mode = sys::RTE_ETH_MQ_RX_RSS;
                if info.rss_offloads & only == only {
                    conf.rx_adv_conf.rss_conf.rss_hf = base | only;
                    rss.mode = name.into();
                } else {
                    conf.rx_adv_conf.rss_conf.rss_hf = base;
                    rss.mode = "flows".into();
                }
                if usize::from(info.hash_key_size) == key.len() {
                    conf.rx_adv_conf.rss_conf.rss_key = key.as_mut_ptr();
                    conf.rx_adv_conf.rss_conf.rss_key_len = key.len() as u8;
                    rss.key_set = true;
                }
            }
        }
        // SAFETY: conf is a valid, fully initialised rte_eth_conf.
        check("rte_eth_dev_configure", unsafe { sys::rte_eth_dev_configure(id, s.rx_queues, s.tx_queues, &conf) })?;
        let (mut nrx, mut ntx) = (s.rx_descriptors, s.tx_descriptors);
        // SAFETY: valid out-pointers.
        check("rte_eth_dev_adjust_nb_rx_tx_desc", unsafe {
            sys::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut nrx, &mut ntx)
        })?;
        let socket = if info.socket < 0 { 0 } else { info.socket as u32 };
        for q in 0..s.rx_queues {
            // SAFETY: NULL rxconf selects the driver default; the pool is
            // valid and outlives the port: `device` holds it until closed.
            check("rte_eth_rx_queue_setup", unsafe {
                sys::rte_eth_rx_queue_setup(id, q, nrx, socket, std::ptr::null(), pool.raw())
            })?;
        }
        for q in 0..s.tx_queues {
            // SAFETY: NULL txconf selects the driver default.
            check("rte_eth_tx_queue_setup", unsafe {
                sys::rte_eth_tx_queue_setup(id, q, ntx, socket, std::ptr::null())
            })?;
        }
        // SAFETY: configured port.
        check("rte_eth_dev_start", unsafe { sys::rte_eth_dev_start(id) })?;
        device.started = true;
        xdp_sockets.claim(id);
        if s.promiscuous {
            // SAFETY: started port.
            check("enabling promiscuous mode", unsafe { sys::rte_eth_promiscuous_enable(id) })?;
        }
        let device = Arc::new(device);
        let rx = (0..s.rx_queues).map(|queue| RxQueue::new(&device, queue)).collect();
        let tx = (0..s.tx_queues).map(|queue| TxQueue::new(&device, queue)).collect();
        let mut port =
            Port { device, id, driver: info.driver.clone(), rx_queues: s.rx_queues, rx_descriptors: nrx, rss };
        if let (Some(r), true) = (want, port.rss.mode != "off") {
            port.program_reta(&info, &r.buckets);
        }
        Ok((port, rx, tx))
    }

    /// Fills the device RETA with `buckets` repeated (entry i → bucket
    /// i % len), then reads it back. Devices without a RETA keep theirs.
    fn program_reta(&mut self, info: &PortInfo, buckets: &[u16]) {
        let size = usize::from(info.reta_size);
        if size == 0 || buckets.is_empty() || size % 64 != 0 {
            return;
        }
        let mut conf = vec![sys::rte_eth_rss_reta_entry64::default(); size / 64];
        for (i, c) in conf.iter_mut().enumerate() {
            c.mask = u64::MAX;
            for j in 0..64 {
                c.reta[j] = buckets[(i * 64 + j) % buckets.len()];
            }
        }
        // SAFETY: `conf` holds reta_size entries in groups of 64.
        let rc = unsafe { sys::rte_eth_dev_rss_reta_update(self.id, conf.as_mut_ptr(), info.reta_size) };
        if rc != 0 {
            self.rss.mode = format!("{} (RETA not programmable)", self.rss.mode);
        }
        let mut back = vec![sys::rte_eth_rss_reta_entry64 { mask: u64::MAX, reta: [0; 64] }; size / 64];
        // SAFETY: as above, for reading.
        if unsafe { sys::rte_eth_dev_rss_reta_query(self.id, back.as_mut_ptr(), info.reta_size) } == 0 {
            self.rss.reta = back.iter().flat_map(|c| c.reta).collect();
        }
    }

    /// Replaces the device's MAC address.
    pub fn set_mac(&self, mac: [u8; 6]) -> Result<(), DpdkError> {
        let mut a = sys::rte_ether_addr { addr_bytes: mac };
        // SAFETY: valid address struct; the port is open.
        check("setting the MAC address", unsafe { sys::rte_eth_dev_default_mac_addr_set(self.id, &mut a) })
    }

    pub fn enable_promiscuous(&self) -> Result<(), DpdkError> {
        // SAFETY: plain port control call on an open port.
        check("enabling promiscuous mode", unsafe { sys::rte_eth_promiscuous_enable(self.id) })
    }

    pub fn mac(&self) -> [u8; 6] {
        let mut a = sys::rte_ether_addr::default();
        // SAFETY: valid out-pointer; the port is open.
        unsafe { sys::rte_eth_macaddr_get(self.id, &mut a) };
        a.addr_bytes
    }

    pub fn link_up(&self) -> bool {
        link_up_of(self.id)
    }

    /// The link's speed in Mb/s, `None` when the device does not know it
    /// (yet).
    pub fn link_speed_mbps(&self) -> Option<u32> {
        let mut l = sys::rte_eth_link::default();
        // SAFETY: valid out-pointer; DPDK checks the port id.
        let rc = unsafe { sys::rte_eth_link_get_nowait(self.id, &mut l) };
        (rc == 0 && l.link_speed != 0 && l.link_speed != u32::MAX).then_some(l.link_speed)
    }

    pub fn stats(&self) -> PortStats {
        stats_of(self.id)
    }

    /// A handle that reads this port's counters and link from other
    /// threads.
    pub fn monitor(&self) -> PortMonitor {
        PortMonitor { id: self.id, _eal: self.device.eal.clone() }
    }

    /// Stops the port. Refused while any of its queues is alive (a worker
    /// could still poll it): drop the queues (stop the workers) first.
    pub fn stop(&mut self) -> Result<(), DpdkError> {
        let Some(device) = Arc::get_mut(&mut self.device) else {
            return Err(DpdkError(format!("port {} cannot stop: its queues are still in use", self.id)));
        };
        if device.started {
            // SAFETY: no queue handle exists (get_mut succeeded), so nothing
            // polls the port.
            unsafe { sys::rte_eth_dev_stop(device.id) };
            device.started = false;
        }
        Ok(())
    }
}
