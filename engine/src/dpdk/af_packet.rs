//! Frames the kernel dropped because an af_packet port's RX ring was full.
//!
//! DPDK 22.11's `net_af_packet` reports none of them (its `imissed` stays
//! 0), yet they are what a worker that waits for its CPU loses: on the
//! end-to-end bench every such frame was a TCP retransmission, 53-58 k per
//! 10 s with DPDK's default ring, and no counter of lbd's showed them
//! (benches/RESULTS.md, issue 13). The kernel counts them per packet
//! socket (`PACKET_STATISTICS`, `tp_drops`), and clears the count on each
//! read: so the reads of all threads go through one lock and add up here,
//! per port, and [`super::port`] adds the sum to the port's `imissed`,
//! where a NIC reports the frames its full ring dropped.
//!
//! The PMD keeps its socket descriptors to itself; they are found among
//! the process's open descriptors as the `AF_PACKET` sockets bound to the
//! port's interface (`rte_eth_dev_info.if_index`).
use dpdk_sys as sys;
use parking_lot::Mutex;
use std::ffi::CStr;

/// Drops read so far, by port id (read-and-clear in the kernel).
static DROPS: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// The interface index of port `id` when its driver is `net_af_packet`.
fn af_packet_ifindex(id: u16) -> Option<i32> {
    let mut info = sys::rte_eth_dev_info::default();
    // SAFETY: valid out-pointer; DPDK checks the port id (callers hold the
    // EAL through a Port or a PortMonitor).
    if unsafe { sys::rte_eth_dev_info_get(id, &mut info) } != 0 || info.driver_name.is_null() {
        return None;
    }
    // SAFETY: non-null driver names are static C strings.
    let driver = unsafe { CStr::from_ptr(info.driver_name) };
    (driver.to_bytes() == b"net_af_packet" && info.if_index != 0).then_some(info.if_index as i32)
}

/// The interface an `AF_PACKET` socket `fd` is bound to; `None` for any
/// other descriptor (or one closed meanwhile).
fn packet_socket_ifindex(fd: i32) -> Option<i32> {
    let mut domain: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid out-pointers of the sizes given; on a descriptor that is
    // not a socket (or no longer open) the call fails with no effect.
    let rc = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_DOMAIN, (&raw mut domain).cast(), &raw mut len) };
    if rc != 0 || domain != libc::AF_PACKET {
        return None;
    }
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: valid out-pointers; the kernel writes at most `len` bytes.
    let rc = unsafe { libc::getsockname(fd, (&raw mut addr).cast(), &raw mut len) };
    (rc == 0).then_some(addr.sll_ifindex)
}

/// `tp_drops` of packet socket `fd` since the last read (which this clears).
fn take_socket_drops(fd: i32) -> u64 {
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

/// Frames the kernel has dropped on port `id`'s full RX rings since lbd
/// started; 0 for ports of other drivers.
pub fn ring_drops(id: u16) -> u64 {
    let Some(ifindex) = af_packet_ifindex(id) else { return 0 };
    let mut drops = DROPS.lock();
    if drops.len() <= usize::from(id) {
        drops.resize(usize::from(id) + 1, 0);
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        for entry in dir.flatten() {
            let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
            if packet_socket_ifindex(fd) == Some(ifindex) {
                drops[usize::from(id)] += take_socket_drops(fd);
            }
        }
    }
    drops[usize::from(id)]
}
