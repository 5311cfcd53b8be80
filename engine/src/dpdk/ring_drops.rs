//! Frames the kernel dropped because the RX ring of an `net_af_packet` or
//! `net_af_xdp` port was full.
//!
//! DPDK 22.11's PMDs report none of them (af_packet's `imissed` stays 0;
//! af_xdp's adds only the socket's `rx_dropped`, not a full ring), yet
//! they are what a worker that waits for its CPU loses: on the end-to-end
//! bench every such frame was a TCP retransmission, 53-58 k per 10 s with
//! af_packet's default ring, and no counter of lbd's showed them
//! (benches/RESULTS.md, issue 13). The kernel counts them per socket;
//! [`super::port`] adds them to the port's `imissed`, where a NIC reports
//! the frames its full ring dropped.
//!
//! The PMDs keep their socket descriptors to themselves, so they are found
//! among the process's open descriptors: af_packet's as the `AF_PACKET`
//! sockets bound to the port's interface (`rte_eth_dev_info.if_index`),
//! af_xdp's (which cannot say their interface without sock_diag, which
//! kernels may lack) as the `AF_XDP` sockets that appeared while the port
//! was set up ([`XdpSockets`]).
use dpdk_sys as sys;
use parking_lot::Mutex;
use std::ffi::CStr;

/// af_packet drops read so far, by port id: `PACKET_STATISTICS` clears
/// the kernel's count on each read, so the reads of all threads go
/// through this lock and add up here.
static PACKET_DROPS: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// af_xdp sockets by port id, from [`XdpSockets::claim`].
static XDP_SOCKETS: Mutex<Vec<Vec<i32>>> = Mutex::new(Vec::new());

/// The driver name and interface index of port `id`.
fn driver_and_ifindex(id: u16) -> Option<(&'static CStr, i32)> {
    let mut info = sys::rte_eth_dev_info::default();
    // SAFETY: valid out-pointer; DPDK checks the port id (callers hold the
    // EAL through a Port or a PortMonitor).
    if unsafe { sys::rte_eth_dev_info_get(id, &mut info) } != 0 || info.driver_name.is_null() {
        return None;
    }
    // SAFETY: non-null driver names are static C strings.
    let driver = unsafe { CStr::from_ptr(info.driver_name) };
    Some((driver, info.if_index as i32))
}

/// The domain (`AF_*`) of socket `fd`; `None` for any other descriptor
/// (or one closed meanwhile).
fn socket_domain(fd: i32) -> Option<i32> {
    let mut domain: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid out-pointers of the sizes given; on a descriptor that is
    // not a socket (or no longer open) the call fails with no effect.
    let rc = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_DOMAIN, (&raw mut domain).cast(), &raw mut len) };
    (rc == 0).then_some(domain)
}

/// The process's open sockets of `domain`.
fn sockets_of(domain: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|&fd| socket_domain(fd) == Some(domain))
        .collect()
}

/// The interface an `AF_PACKET` socket is bound to.
fn packet_socket_ifindex(fd: i32) -> Option<i32> {
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: valid out-pointers; the kernel writes at most `len` bytes.
    let rc = unsafe { libc::getsockname(fd, (&raw mut addr).cast(), &raw mut len) };
    (rc == 0).then_some(addr.sll_ifindex)
}

/// `tp_drops` of packet socket `fd` since the last read (which clears it).
fn take_packet_drops(fd: i32) -> u64 {
    // tpacket_stats_v3's size: a TPACKET_V2 socket (the PMD's) fills the
    // first two fields, tp_packets and tp_drops.
    let mut stats = [0u32; 3];
    let mut len = std::mem::size_of_val(&stats) as libc::socklen_t;
    // SAFETY: valid out-pointers; the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(fd, libc::SOL_PACKET, libc::PACKET_STATISTICS, stats.as_mut_ptr().cast(), &raw mut len)
    };
    if rc == 0 {
        u64::from(stats[1])
    } else {
        0
    }
}

/// Frames an XDP socket lost for a full RX ring or an empty fill ring
/// (cumulative; the PMD already counts `rx_dropped`).
fn xdp_ring_drops(fd: i32) -> u64 {
    // SAFETY: all-zero is a valid xdp_statistics.
    let mut stats: libc::xdp_statistics = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::xdp_statistics>() as libc::socklen_t;
    // SAFETY: valid out-pointers; the kernel writes at most `len` bytes.
    let rc =
        unsafe { libc::getsockopt(fd, libc::SOL_XDP, libc::XDP_STATISTICS, (&raw mut stats).cast(), &raw mut len) };
    // Kernels before 5.9 know only the first three fields.
    if rc == 0 && len as usize == std::mem::size_of::<libc::xdp_statistics>() {
        stats.rx_ring_full + stats.rx_fill_ring_empty_descs
    } else {
        0
    }
}

/// The AF_XDP sockets open before a port's setup, to tell which ones the
/// setup made.
pub struct XdpSockets(Vec<i32>);

impl XdpSockets {
    pub fn before_setup() -> XdpSockets {
        XdpSockets(sockets_of(libc::AF_XDP))
    }

    /// Records the AF_XDP sockets made since [`Self::before_setup`] as
    /// port `id`'s (none unless its driver is af_xdp).
    pub fn claim(self, id: u16) {
        let mine: Vec<i32> = match driver_and_ifindex(id) {
            Some((driver, _)) if driver.to_bytes() == b"net_af_xdp" => {
                sockets_of(libc::AF_XDP).into_iter().filter(|fd| !self.0.contains(fd)).collect()
            }
            _ => Vec::new(),
        };
        let mut all = XDP_SOCKETS.lock();
        if all.len() <= usize::from(id) {
            all.resize(usize::from(id) + 1, Vec::new());
        }
        all[usize::from(id)] = mine;
    }
}

/// Frames the kernel has dropped on port `id`'s full RX rings since lbd
/// started; 0 for ports of other drivers.
pub fn of(id: u16) -> u64 {
    let Some((driver, ifindex)) = driver_and_ifindex(id) else { return 0 };
    match driver.to_bytes() {
        b"net_af_packet" if ifindex != 0 => {
            let mut drops = PACKET_DROPS.lock();
            if drops.len() <= usize::from(id) {
                drops.resize(usize::from(id) + 1, 0);
            }
            for fd in sockets_of(libc::AF_PACKET) {
                if packet_socket_ifindex(fd) == Some(ifindex) {
                    drops[usize::from(id)] += take_packet_drops(fd);
                }
            }
            drops[usize::from(id)]
        }
        b"net_af_xdp" => {
            XDP_SOCKETS.lock().get(usize::from(id)).map_or(0, |fds| fds.iter().map(|&fd| xdp_ring_drops(fd)).sum())
        }
        _ => 0,
    }
}
