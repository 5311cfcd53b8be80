//! The safe layer over DPDK, one module per DPDK object: [`eal`],
//! [`mempool`], [`mbuf`], [`port`], [`queue`], [`ring`]; and `ring_drops`,
//! the frames the af_packet and af_xdp PMDs' kernel sockets drop and the
//! PMDs do not count. The only part of the engine allowed `unsafe`.
//!
//! The types carry DPDK's rules, so no caller has to call things in the
//! right order to stay sound:
//!
//! - Everything that needs the EAL is made from an `&`[`Eal`] and keeps a
//!   cheap handle (an `Arc`) of it: `rte_eal_cleanup` runs only when the
//!   [`Eal`] and the last object made from it are gone. Dropping the
//!   [`Eal`] first waits for every launched lcore.
//! - A [`Mempool`] lives as long as anything that can hold its mbufs: the
//!   [`Port`]s and queues set up on it and the rings made for it hold an
//!   `Arc` of it. See [`mbuf`] for how an [`Mbuf`] relates to its pool.
//! - [`Port::start`] hands out the port's queues once: a second start of
//!   the same device fails while the first [`Port`] or any of its queues
//!   lives. Each [`RxQueue`]/[`TxQueue`] holds its port, so the device is
//!   stopped and closed only after the last queue is gone, and
//!   [`Port::stop`] refuses while a queue could still be polled.
//! - An [`Mbuf`] frees itself on drop, a [`Burst`] owns the mbufs it holds,
//!   each queue and ring end exists as exactly one value (polled from one
//!   thread only), and the FFI surface is burst-sized: no per-packet call
//!   into C except freeing or allocating an individual mbuf.
use dpdk_sys as sys;
use std::ffi::CStr;
use std::fmt;

mod device;
pub mod eal;
pub mod mbuf;
pub mod memory;
pub mod mempool;
pub mod port;
pub mod queue;
pub mod ring;
mod ring_drops;

pub use eal::Eal;
pub use mbuf::{Burst, BurstDrain, BurstDrainAhead, Mbuf, MAX_BURST};
pub use memory::DpdkPlacement;
pub use mempool::Mempool;
pub use port::{Port, PortInfo, PortMonitor, PortSetup, PortStats, RssFields, RssRequest, RssState};
pub use queue::{RxQueue, TxQueue};
pub use ring::{spsc_ring, RingConsumer, RingMonitor, RingProducer};

/// An error from DPDK with the failing call and DPDK's own description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpdkError(pub String);

impl fmt::Display for DpdkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DpdkError {}

fn strerror(errnum: i32) -> String {
    // SAFETY: plain call, valid for any errnum.
    let p = unsafe { sys::rte_strerror(errnum) };
    // SAFETY: rte_strerror returns a static or per-lcore NUL-terminated
    // string.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_string_lossy().into_owned()
}

fn rte_errno() -> i32 {
    // SAFETY: reads the calling thread's rte_errno.
    unsafe { sys::lbd_shim_errno() }
}

fn check(what: &str, rc: i32) -> Result<(), DpdkError> {
    if rc < 0 {
        Err(DpdkError(format!("{what}: {}", strerror(-rc))))
    } else {
        Ok(())
    }
}

/// True when running with effective uid 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The CPU time-stamp counter.
#[inline(always)]
pub fn tsc() -> u64 {
    // SAFETY: reads the TSC; no memory is touched.
    unsafe { sys::lbd_shim_rdtsc() }
}

/// The version of the loaded DPDK libraries, e.g. "22.11.11".
pub fn runtime_version() -> String {
    // SAFETY: returns a constant.
    let year = unsafe { sys::rte_version_year() };
    // SAFETY: as above.
    let month = unsafe { sys::rte_version_month() };
    // SAFETY: as above.
    let minor = unsafe { sys::rte_version_minor() };
    format!("{year}.{month:02}.{minor}")
}

/// The CPUs this process may run on (its affinity mask).
pub fn allowed_cpus() -> Vec<u32> {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer of the size passed; pid 0 is this thread.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return vec![0];
    }
    (0..libc::CPU_SETSIZE as u32)
        // SAFETY: `c` is below CPU_SETSIZE, inside the set.
        .filter(|c| unsafe { libc::CPU_ISSET(*c as usize, &set) })
        .collect()
}

/// Pins the calling thread to CPU `cpu` (for tools: lcores are pinned by
/// the EAL).
pub fn pin_current_thread(cpu: u32) -> std::io::Result<()> {
    if cpu as usize >= libc::CPU_SETSIZE as usize {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("CPU {cpu} out of range")));
    }
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (checked above), inside the set.
    unsafe { libc::CPU_SET(cpu as usize, &mut set) };
    // SAFETY: a valid set of the size passed; pid 0 is this thread.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the calling thread's timer slack: how much later than asked the
/// kernel may end its sleeps (to group wake-ups). Best effort.
pub fn set_timer_slack(slack: std::time::Duration) {
    let ns = slack.as_nanos().clamp(1, libc::c_ulong::MAX as u128) as libc::c_ulong;
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and affects only
    // this thread; no pointers are passed.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) };
}

/// Lifts this process's locked-memory limit (RLIMIT_MEMLOCK) as far as it
/// is allowed to: kernels before 5.11 charge an AF_XDP socket's UMEM and
/// rings to it, and its 8 MiB default fails `net_af_xdp` with ENOBUFS or
/// EPERM. Returns the soft limit now in force (bytes; u64::MAX: none).
pub fn raise_memlock_limit() -> u64 {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid out-pointer to an rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 {
        return 0;
    }
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: valid pointer to an rlimit; raising the hard limit needs
    // CAP_SYS_RESOURCE, and failing leaves the limit as it was.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } == 0 {
        return u64::MAX;
    }
    let soft = libc::rlimit { rlim_cur: r.rlim_max, rlim_max: r.rlim_max };
    // SAFETY: as above; the soft limit may always rise to the hard one.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &soft) } == 0 {
        r.rlim_cur = r.rlim_max;
    }
    if r.rlim_cur == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        r.rlim_cur
    }
}
