//! The safe layer over DPDK: EAL, lcores, mempools, mbufs, ports, queues,
//! rings. The only module of the engine allowed `unsafe`.
//!
//! Ownership carries the DPDK rules: an [`Mbuf`] frees itself on drop, a
//! [`Burst`] owns the mbufs it holds, each RX/TX queue and each ring end
//! exists as exactly one value (queues are polled from one thread only),
//! and the FFI surface is burst-sized: no per-packet call into C except
//! freeing or allocating an individual mbuf.
use dpdk_sys as sys;
use std::ffi::{CStr, CString};
use std::fmt;
use std::path::PathBuf;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Largest burst a [`Burst`] holds.
pub const MAX_BURST: usize = 256;

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

static EAL_STARTED: AtomicBool = AtomicBool::new(false);

/// The initialised Environment Abstraction Layer. One per process: DPDK
/// refuses a second `rte_eal_init` even after cleanup.
#[derive(Debug)]
pub struct Eal {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Eal {
    /// Runs `rte_eal_init` with `args` (program name first).
    pub fn init(args: &[String]) -> Result<Eal, DpdkError> {
        if EAL_STARTED.swap(true, Ordering::SeqCst) {
            return Err(DpdkError("the EAL can be initialised only once per process".into()));
        }
        let mut owned = Vec::with_capacity(args.len());
        for a in args {
            owned.push(
                CString::new(a.as_str()).map_err(|_| DpdkError(format!("EAL argument {a:?} contains a NUL byte")))?,
            );
        }
        // EAL keeps pointers into argv for the process lifetime: leak it.
        let argv: &'static mut [*mut libc::c_char] =
            Vec::leak(owned.into_iter().map(CString::into_raw).collect::<Vec<_>>());
        // SAFETY: argv holds argc valid, NUL-terminated, never-freed strings;
        // this is the only call in the process (guarded above).
        let rc = unsafe { sys::rte_eal_init(argv.len() as i32, argv.as_mut_ptr()) };
        if rc < 0 {
            return Err(DpdkError(strerror(rte_errno())));
        }
        Ok(Eal { _not_send: std::marker::PhantomData })
    }

    pub fn main_lcore(&self) -> u32 {
        // SAFETY: valid after init.
        unsafe { sys::rte_get_main_lcore() }
    }

    /// The enabled lcores other than the main one, in order.
    pub fn worker_lcores(&self) -> Vec<u32> {
        let mut out = Vec::new();
        // SAFETY: valid after init; -1 (as unsigned) starts the iteration.
        let mut i = unsafe { sys::rte_get_next_lcore(u32::MAX, 1, 0) };
        while i < sys::RTE_MAX_LCORE {
            out.push(i);
            // SAFETY: as above, `i` is a valid lcore id.
            i = unsafe { sys::rte_get_next_lcore(i, 1, 0) };
        }
        out
    }

    /// Runs `f` on worker lcore `lcore`. Its return value comes back from
    /// [`Eal::wait`].
    pub fn launch(&self, lcore: u32, f: Box<dyn FnOnce() -> i32 + Send>) -> Result<(), DpdkError> {
        unsafe extern "C" fn trampoline(arg: *mut libc::c_void) -> libc::c_int {
            // SAFETY: `arg` is the Box leaked by `launch` below, passed
            // exactly once to exactly one lcore.
            let f = unsafe { Box::from_raw(arg.cast::<Box<dyn FnOnce() -> i32 + Send>>()) };
            // panic = "abort" in every lbd profile, so no unwind crosses
            // this C frame; extern "C" aborts on a panic regardless.
            f()
        }
        let arg = Box::into_raw(Box::new(f));
        // SAFETY: the trampoline matches lcore_function_t and takes
        // ownership of `arg`.
        let rc = unsafe { sys::rte_eal_remote_launch(Some(trampoline), arg.cast(), lcore) };
        if rc < 0 {
            // SAFETY: the launch failed, so the trampoline never ran and we
            // still own `arg`.
            drop(unsafe { Box::from_raw(arg) });
            return Err(DpdkError(format!("cannot launch on lcore {lcore}: {}", strerror(-rc))));
        }
        Ok(())
    }

    /// Waits for lcore `lcore` to finish and returns its result.
    pub fn wait(&self, lcore: u32) -> i32 {
        // SAFETY: valid lcore id; blocks until it is idle.
        unsafe { sys::rte_eal_wait_lcore(lcore) }
    }

    /// `/var/run/dpdk/<file-prefix>` (or the XDG equivalent).
    pub fn runtime_dir(&self) -> PathBuf {
        // SAFETY: plain query after init.
        let p = unsafe { sys::rte_eal_get_runtime_dir() };
        // SAFETY: it points to a static NUL-terminated path.
        let s = unsafe { CStr::from_ptr(p) };
        PathBuf::from(s.to_string_lossy().into_owned())
    }

    /// Releases EAL resources. Every port, ring and mempool must be gone.
    pub fn cleanup(self) {
        // SAFETY: called once, after the workers stopped and every DPDK
        // object this process made was released (the caller drops them
        // first; ownership makes them unusable afterwards).
        unsafe {
            sys::rte_eal_cleanup();
        }
    }
}

/// A pool of packet buffers.
#[derive(Debug)]
pub struct Mempool {
    ptr: NonNull<sys::rte_mempool>,
}

// SAFETY: mempool get/put are thread-safe (the default ring_mp_mc ops, with
// per-lcore caches touched only by their own lcore).
unsafe impl Send for Mempool {}
// SAFETY: as above; every method takes &self and is thread-safe in DPDK.
unsafe impl Sync for Mempool {}

impl Mempool {
    pub fn new(name: &str, mbufs: u32, cache: u32, socket: i32) -> Result<Mempool, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError("bad mempool name".into()))?;
        // SAFETY: valid name; EAL is initialised (Mempool needs an Eal to
        // exist in practice: the daemon creates it after init).
        let p = unsafe {
            sys::rte_pktmbuf_pool_create(cname.as_ptr(), mbufs, cache, 0, sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16, socket)
        };
        NonNull::new(p)
            .map(|ptr| Mempool { ptr })
            .ok_or_else(|| DpdkError(format!("cannot create mempool of {mbufs} mbufs: {}", strerror(rte_errno()))))
    }

    /// One zero-length mbuf, or `None` when the pool is empty.
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: the pool pointer is valid for self's lifetime.
        NonNull::new(unsafe { sys::lbd_shim_pktmbuf_alloc(self.ptr.as_ptr()) }).map(Mbuf)
    }

    pub fn available(&self) -> u32 {
        // SAFETY: valid pool.
        unsafe { sys::rte_mempool_avail_count(self.ptr.as_ptr()) }
    }

    pub fn in_use(&self) -> u32 {
        // SAFETY: valid pool.
        unsafe { sys::lbd_shim_mempool_in_use(self.ptr.as_ptr()) }
    }

    fn raw(&self) -> *mut sys::rte_mempool {
        self.ptr.as_ptr()
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // SAFETY: every mbuf from this pool has been freed by now: queues
        // are released when their ports close, which happens before the
        // pool drops (the daemon orders it so).
        unsafe { sys::rte_mempool_free(self.ptr.as_ptr()) }
    }
}

/// An owned packet buffer; freed when dropped.
pub struct Mbuf(NonNull<sys::rte_mbuf>);

// SAFETY: an Mbuf is exclusively owned; moving it to another thread moves
// the ownership (how DPDK apps pass mbufs over rings).
unsafe impl Send for Mbuf {}

impl fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mbuf").field("len", &self.packet_len()).field("port", &self.port()).finish()
    }
}

impl Mbuf {
    #[inline(always)]
    fn m(&self) -> &sys::rte_mbuf {
        // SAFETY: the pointer is valid and uniquely owned by self.
        unsafe { self.0.as_ref() }
    }
    #[inline(always)]
    fn m_mut(&mut self) -> &mut sys::rte_mbuf {
        // SAFETY: as above, and &mut self makes the access exclusive.
        unsafe { self.0.as_mut() }
    }

    /// The first segment's data.
    #[inline]
    pub fn data(&self) -> &[u8] {
        let m = self.m();
        let start = m.buf_addr.cast::<u8>().wrapping_add(usize::from(m.data_off));
        // SAFETY: buf_addr + data_off .. + data_len lies inside the mbuf's
        // buffer, which the mbuf owns.
        unsafe { std::slice::from_raw_parts(start, usize::from(m.data_len)) }
    }

    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let m = self.m_mut();
        let len = usize::from(m.data_len);
        let start = m.buf_addr.cast::<u8>().wrapping_add(usize::from(m.data_off));
        // SAFETY: as in data(); exclusive through &mut self. Mbufs from RX
        // and from alloc are direct with refcnt 1 (nothing here clones).
        unsafe { std::slice::from_raw_parts_mut(start, len) }
    }

    /// Total length over all segments.
    #[inline]
    pub fn packet_len(&self) -> usize {
        self.m().pkt_len as usize
    }

    #[inline]
    pub fn port(&self) -> u16 {
        self.m().port
    }

    #[inline]
    pub fn set_port(&mut self, port: u16) {
        self.m_mut().port = port;
    }

    /// Shortens a single-segment packet to `len` bytes.
    pub fn truncate(&mut self, len: usize) -> bool {
        let m = self.m_mut();
        if m.nb_segs != 1 || len > usize::from(m.data_len) {
            return false;
        }
        m.data_len = len as u16;
        m.pkt_len = len as u32;
        true
    }

    /// Grows the (single-segment) packet by `len` bytes at the end.
    pub fn append(&mut self, len: usize) -> bool {
        let Ok(len) = u16::try_from(len) else { return false };
        // SAFETY: valid mbuf; append checks tailroom and returns NULL when
        // it lacks space.
        !unsafe { sys::lbd_shim_pktmbuf_append(self.0.as_ptr(), len) }.is_null()
    }

    #[inline]
    fn into_raw(self) -> *mut sys::rte_mbuf {
        let p = self.0.as_ptr();
        std::mem::forget(self);
        p
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf (and its chain) exclusively.
        unsafe { sys::lbd_shim_pktmbuf_free(self.0.as_ptr()) }
    }
}

/// A batch of owned mbufs, the unit of every RX, TX and ring operation.
/// Whatever it still holds when dropped is freed in bulk.
pub struct Burst {
    pkts: [*mut sys::rte_mbuf; MAX_BURST],
    len: usize,
}

// SAFETY: owns its mbufs like Vec<Mbuf> would.
unsafe impl Send for Burst {}

impl fmt::Debug for Burst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Burst").field("len", &self.len).finish()
    }
}

impl Default for Burst {
    fn default() -> Self {
        Burst { pkts: [std::ptr::null_mut(); MAX_BURST], len: 0 }
    }
}

impl Burst {
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == MAX_BURST
    }

    /// Adds `m`; gives it back when full.
    #[inline]
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.len == MAX_BURST {
            return Err(m);
        }
        self.pkts[self.len] = m.into_raw();
        self.len += 1;
        Ok(())
    }

    /// Hands every held mbuf, in order, to `f`, leaving the burst empty.
    #[inline]
    pub fn drain(&mut self, mut f: impl FnMut(Mbuf)) {
        let n = std::mem::take(&mut self.len);
        for i in 0..n {
            // SAFETY: slots below the old len hold owned, valid mbufs; len
            // is already 0, so ownership moves out exactly once.
            f(Mbuf(unsafe { NonNull::new_unchecked(self.pkts[i]) }));
        }
    }

    /// Hands out every held mbuf through an iterator, leaving the burst
    /// empty; what the iterator does not yield is freed when it drops.
    #[inline]
    pub fn drain_iter(&mut self) -> BurstDrain<'_> {
        let n = std::mem::take(&mut self.len);
        BurstDrain { burst: self, next: 0, end: n }
    }

    /// Asks the CPU for the mbuf of every held packet: mbufs handed over by
    /// another core are in that core's cache, not ours.
    #[inline]
    pub fn prefetch_mbufs(&self) {
        for p in &self.pkts[..self.len] {
            sys::prefetch0_ptr(*p);
        }
    }

    /// Asks the CPU for the first data line of every held packet (NICs
    /// write packets by DMA, so their headers are not in cache yet).
    #[inline]
    pub fn prefetch_data(&self) {
        for p in &self.pkts[..self.len] {
            // SAFETY: the first len slots are valid mbufs we own; reading
            // one is a plain load.
            let m = unsafe { &**p };
            sys::prefetch0_ptr(m.buf_addr.cast::<u8>().wrapping_add(usize::from(m.data_off)));
        }
    }

    /// Frees everything held, in one call.
    #[inline]
    pub fn free_all(&mut self) {
        if self.len > 0 {
            // SAFETY: the first len slots are owned mbufs; freed once.
            unsafe { sys::rte_pktmbuf_free_bulk(self.pkts.as_mut_ptr(), self.len as u32) };
            self.len = 0;
        }
    }

    /// Forgets the first `n` pointers (ownership passed to DPDK) and moves
    /// the rest to the front.
    fn consume_front(&mut self, n: usize) {
        debug_assert!(n <= self.len);
        self.pkts.copy_within(n..self.len, 0);
        self.len -= n;
    }
}

/// See [`Burst::drain_iter`].
pub struct BurstDrain<'a> {
    burst: &'a mut Burst,
    next: usize,
    end: usize,
}

impl Iterator for BurstDrain<'_> {
    type Item = Mbuf;
    #[inline]
    fn next(&mut self) -> Option<Mbuf> {
        if self.next == self.end {
            return None;
        }
        let p = self.burst.pkts[self.next];
        self.next += 1;
        // SAFETY: slots below `end` held owned, valid mbufs when the drain
        // began (the burst's len is already 0); each is yielded once.
        Some(Mbuf(unsafe { NonNull::new_unchecked(p) }))
    }
}

impl Drop for BurstDrain<'_> {
    fn drop(&mut self) {
        let rest = self.end - self.next;
        if rest > 0 {
            // SAFETY: the slots from `next` to `end` are owned mbufs that
            // were never yielded; freed once here.
            unsafe { sys::rte_pktmbuf_free_bulk(self.burst.pkts[self.next..].as_mut_ptr(), rest as u32) };
        }
    }
}

impl Drop for Burst {
    fn drop(&mut self) {
        self.free_all();
    }
}

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

/// A configured, started ethdev port.
#[derive(Debug)]
pub struct Port {
    pub id: u16,
    pub driver: String,
    pub rx_queues: u16,
    pub rss: RssState,
    started: bool,
}

/// The one handle for polling RX queue `queue` of a port.
#[derive(Debug)]
pub struct RxQueue {
    port: u16,
    queue: u16,
}

/// The one handle for transmitting on TX queue `queue` of a port.
#[derive(Debug)]
pub struct TxQueue {
    port: u16,
    queue: u16,
}

impl Port {
    /// The port id of DPDK device `name` (e.g. `net_pcap0`).
    pub fn find(name: &str) -> Option<u16> {
        let c = CString::new(name).ok()?;
        let mut id = 0u16;
        // SAFETY: valid C string and out-pointer.
        let rc = unsafe { sys::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut id) };
        (rc == 0).then_some(id)
    }

    pub fn info(id: u16) -> Result<PortInfo, DpdkError> {
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
    /// the only handles to its queues.
    pub fn start(id: u16, s: &PortSetup, pool: &Mempool) -> Result<(Port, Vec<RxQueue>, Vec<TxQueue>), DpdkError> {
        let info = Self::info(id)?;
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
            // SAFETY: NULL rxconf selects the driver default; pool is valid
            // and outlives the port (the daemon closes ports first).
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
        if s.promiscuous {
            // SAFETY: started port.
            check("enabling promiscuous mode", unsafe { sys::rte_eth_promiscuous_enable(id) })?;
        }
        let rx = (0..s.rx_queues).map(|queue| RxQueue { port: id, queue }).collect();
        let tx = (0..s.tx_queues).map(|queue| TxQueue { port: id, queue }).collect();
        let mut port = Port { id, driver: info.driver.clone(), rx_queues: s.rx_queues, rss, started: true };
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
    pub fn set_mac(id: u16, mac: [u8; 6]) -> Result<(), DpdkError> {
        let mut a = sys::rte_ether_addr { addr_bytes: mac };
        // SAFETY: valid address struct.
        check("setting the MAC address", unsafe { sys::rte_eth_dev_default_mac_addr_set(id, &mut a) })
    }

    pub fn enable_promiscuous(id: u16) -> Result<(), DpdkError> {
        // SAFETY: plain port control call.
        check("enabling promiscuous mode", unsafe { sys::rte_eth_promiscuous_enable(id) })
    }

    pub fn mac(id: u16) -> [u8; 6] {
        let mut a = sys::rte_ether_addr::default();
        // SAFETY: valid out-pointer.
        unsafe { sys::rte_eth_macaddr_get(id, &mut a) };
        a.addr_bytes
    }

    pub fn link_up(id: u16) -> bool {
        let mut l = sys::rte_eth_link::default();
        // SAFETY: valid out-pointer.
        let rc = unsafe { sys::rte_eth_link_get_nowait(id, &mut l) };
        rc == 0 && l.link_status() != 0
    }

    pub fn stats(id: u16) -> lbproto::stats::DeviceStats {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: valid out-pointer.
        if unsafe { sys::rte_eth_stats_get(id, &mut s) } != 0 {
            return lbproto::stats::DeviceStats::default();
        }
        lbproto::stats::DeviceStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        }
    }

    /// Stops the port (its queues must no longer be polled).
    pub fn stop(&mut self) {
        if self.started {
            // SAFETY: the workers that polled it have finished.
            unsafe { sys::rte_eth_dev_stop(self.id) };
            self.started = false;
        }
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        self.stop();
        // SAFETY: closing releases the queues and flushes drivers such as
        // net_pcap's TX file; nothing uses the port afterwards.
        unsafe { sys::rte_eth_dev_close(self.id) };
    }
}

impl RxQueue {
    /// Receives up to `max` packets into the free space of `b`.
    #[inline]
    pub fn rx(&mut self, b: &mut Burst, max: usize) -> usize {
        let room = (MAX_BURST - b.len).min(max);
        // SAFETY: the queue is configured and polled only through this
        // unique handle; the array has `room` free slots.
        let n = unsafe { sys::lbd_shim_rx_burst(self.port, self.queue, b.pkts[b.len..].as_mut_ptr(), room as u16) };
        b.len += usize::from(n);
        usize::from(n)
    }
}

impl TxQueue {
    /// Sends what `b` holds; what the queue did not take stays in `b`.
    #[inline]
    pub fn tx(&mut self, b: &mut Burst) -> usize {
        if b.len == 0 {
            return 0;
        }
        // SAFETY: unique handle; the first len slots are owned mbufs, whose
        // ownership passes to the driver for the first `n`.
        let n =
            usize::from(unsafe { sys::lbd_shim_tx_burst(self.port, self.queue, b.pkts.as_mut_ptr(), b.len as u16) });
        b.consume_front(n);
        n
    }
}

struct RingInner {
    ptr: NonNull<sys::rte_ring>,
}

// SAFETY: the ring is designed for one producer and one consumer thread;
// the Producer/Consumer split below enforces that.
unsafe impl Send for RingInner {}
// SAFETY: as above.
unsafe impl Sync for RingInner {}

impl Drop for RingInner {
    fn drop(&mut self) {
        let mut b = Burst::default();
        loop {
            // SAFETY: both ends are gone (this is the last Arc); no thread
            // touches the ring concurrently.
            let n = unsafe {
                sys::lbd_shim_ring_dequeue_burst(self.ptr.as_ptr(), b.pkts.as_mut_ptr().cast(), MAX_BURST as u32)
            };
            if n == 0 {
                break;
            }
            b.len = n as usize;
            b.free_all();
        }
        // SAFETY: created by rte_ring_create, freed once.
        unsafe { sys::rte_ring_free(self.ptr.as_ptr()) }
    }
}

/// The sending end of a single-producer single-consumer mbuf ring.
pub struct RingProducer(Arc<RingInner>);
/// The receiving end.
pub struct RingConsumer(Arc<RingInner>);

impl fmt::Debug for RingProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RingProducer")
    }
}
impl fmt::Debug for RingConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RingConsumer")
    }
}

/// Creates an SP/SC ring of `size` (a power of two) slots.
pub fn ring(name: &str, size: u32, socket: i32) -> Result<(RingProducer, RingConsumer), DpdkError> {
    let c = CString::new(name).map_err(|_| DpdkError("bad ring name".into()))?;
    // SAFETY: returns a constant.
    let sp = unsafe { sys::lbd_shim_ring_f_sp_enq() };
    // SAFETY: returns a constant.
    let sc = unsafe { sys::lbd_shim_ring_f_sc_deq() };
    let flags = sp | sc;
    // SAFETY: valid name; EAL initialised.
    let p = unsafe { sys::rte_ring_create(c.as_ptr(), size, socket, flags) };
    let ptr =
        NonNull::new(p).ok_or_else(|| DpdkError(format!("cannot create ring {name}: {}", strerror(rte_errno()))))?;
    let inner = Arc::new(RingInner { ptr });
    Ok((RingProducer(Arc::clone(&inner)), RingConsumer(inner)))
}

impl RingProducer {
    /// Slots free for the producer (one read of the consumer's tail).
    #[inline]
    pub fn free_count(&self) -> u32 {
        // SAFETY: reading a valid ring's head and tail is safe from any
        // thread.
        unsafe { sys::lbd_shim_ring_free_count(self.0.ptr.as_ptr()) }
    }

    /// Moves as many mbufs of `b` as fit into the ring; the rest stay.
    #[inline]
    pub fn enqueue(&mut self, b: &mut Burst) -> usize {
        if b.len == 0 {
            return 0;
        }
        // SAFETY: single producer (this unique handle); the first len slots
        // are owned mbufs whose ownership moves into the ring.
        let n = unsafe { sys::lbd_shim_ring_enqueue_burst(self.0.ptr.as_ptr(), b.pkts.as_ptr().cast(), b.len as u32) }
            as usize;
        b.consume_front(n);
        n
    }
}

/// A read-only view of a ring's fill level, for the metrics.
#[derive(Clone)]
pub struct RingMonitor(Arc<RingInner>);

impl fmt::Debug for RingMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RingMonitor")
    }
}

impl RingMonitor {
    pub fn count(&self) -> u32 {
        // SAFETY: reading a valid ring's head and tail is safe from any
        // thread.
        unsafe { sys::lbd_shim_ring_count(self.0.ptr.as_ptr()) }
    }
}

impl RingConsumer {
    pub fn monitor(&self) -> RingMonitor {
        RingMonitor(Arc::clone(&self.0))
    }

    /// Takes up to `max` mbufs from the ring into `b`.
    #[inline]
    pub fn dequeue(&mut self, b: &mut Burst, max: usize) -> usize {
        let room = (MAX_BURST - b.len).min(max);
        // SAFETY: single consumer; the array has `room` free slots, and the
        // mbufs' ownership moves out of the ring into the burst.
        let n = unsafe {
            sys::lbd_shim_ring_dequeue_burst(self.0.ptr.as_ptr(), b.pkts[b.len..].as_mut_ptr().cast(), room as u32)
        } as usize;
        b.len += n;
        n
    }

    pub fn count(&self) -> u32 {
        // SAFETY: reading the counters of a valid ring is always safe.
        unsafe { sys::lbd_shim_ring_count(self.0.ptr.as_ptr()) }
    }
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

/// The TSC frequency DPDK measured (valid after EAL init).
pub fn tsc_hz() -> u64 {
    // SAFETY: plain query.
    unsafe { sys::rte_get_tsc_hz() }
}

/// A 2 MB huge page.
const HUGE_PAGE: usize = 2 << 20;

/// The packet core's memory hints on this machine: real prefetches, and
/// transparent huge pages for its large tables (the session index and
/// slab are read at random and otherwise spend much of each lookup on TLB
/// misses).
#[derive(Debug, Clone, Copy, Default)]
pub struct DpdkPlacement;

impl lbcore::memory::Placement for DpdkPlacement {
    #[inline(always)]
    fn prefetch<T>(value: &T) {
        sys::prefetch0(value);
    }

    fn advise_huge_pages(addr: usize, len: usize) {
        if len < HUGE_PAGE {
            return;
        }
        let first = (addr + HUGE_PAGE - 1) & !(HUGE_PAGE - 1);
        let end = (addr + len) & !(HUGE_PAGE - 1);
        if end > first {
            // SAFETY: madvise(MADV_HUGEPAGE) changes no contents and no
            // mapping's validity, whatever the range (it fails harmlessly on
            // unmapped ranges or where THP is off); the caller's range is
            // its own fresh allocation.
            unsafe {
                libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
            }
        }
    }
}
