//! The Environment Abstraction Layer: initialisation, lcores, cleanup.
//!
//! [`Eal`] is the main thread's owner; every DPDK object made from it holds
//! an `EalHandle`, so `rte_eal_cleanup` (which unmaps DPDK's memory) runs
//! only after the [`Eal`] and every such object are gone.
use super::{rte_errno, strerror, sys, DpdkError};
use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

static EAL_STARTED: AtomicBool = AtomicBool::new(false);

/// What the EAL and the objects made from it share. Dropping the last
/// reference cleans the EAL up.
#[derive(Debug)]
struct EalShared {
    /// Port ids with a live [`super::Port`] (or live queues of one): a
    /// device is configured and started by one owner at a time.
    ports_in_use: Mutex<Vec<u16>>,
}

impl Drop for EalShared {
    fn drop(&mut self) {
        // SAFETY: this is the last reference: the Eal (whose drop waited
        // for every lcore) and every mempool, ring, port, queue and monitor
        // made from it are gone, so nothing uses DPDK memory any more.
        let _ = unsafe { sys::rte_eal_cleanup() };
    }
}

/// A cheap, shareable proof that the EAL is initialised and not cleaned
/// up, held by every DPDK object.
#[derive(Debug, Clone)]
pub(super) struct EalHandle(Arc<EalShared>);

impl EalHandle {
    /// Claims port `id` for one owner; false when it is already claimed.
    pub(super) fn claim_port(&self, id: u16) -> bool {
        let mut ports = self.0.ports_in_use.lock().unwrap_or_else(|e| e.into_inner());
        if ports.contains(&id) {
            return false;
        }
        ports.push(id);
        true
    }

    pub(super) fn release_port(&self, id: u16) {
        self.0.ports_in_use.lock().unwrap_or_else(|e| e.into_inner()).retain(|p| *p != id);
    }
}

/// The initialised EAL. One per process: DPDK refuses a second
/// `rte_eal_init` even after cleanup. It stays on the thread that made it
/// (the main lcore), which alone launches and waits for lcores.
#[derive(Debug)]
pub struct Eal {
    shared: EalHandle,
    _main_thread_only: PhantomData<*const ()>,
}

impl Eal {
    /// Runs `rte_eal_init` with `args` (program name first).
    /// Makes DPDK write its log lines to standard error only. By default
    /// EAL writes each to standard error and also to syslog: under
    /// systemd, where standard error is the journal already, every EAL
    /// line would be stored twice. Call before [`Eal::init`].
    pub fn log_to_stderr_only() -> Result<(), DpdkError> {
        // SAFETY: fd 2 is open for the life of the process; the mode is a
        // NUL-terminated string.
        let f = unsafe { libc::fdopen(2, c"w".as_ptr()) };
        if f.is_null() {
            return Err(DpdkError(format!(
                "cannot open standard error for DPDK's log: {}",
                std::io::Error::last_os_error()
            )));
        }
        // Line buffered: each EAL line leaves whole, as one journal entry.
        // SAFETY: `f` is a fresh stream nothing has used yet.
        unsafe { libc::setvbuf(f, std::ptr::null_mut(), libc::_IOLBF, 0) };
        // SAFETY: DPDK keeps `f` for the life of the process; it is never
        // closed. `sys::FILE` is glibc's FILE, as `libc::FILE` is.
        unsafe { sys::rte_openlog_stream(f.cast()) };
        Ok(())
    }

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
        Ok(Eal {
            shared: EalHandle(Arc::new(EalShared { ports_in_use: Mutex::default() })),
            _main_thread_only: PhantomData,
        })
    }

    pub(super) fn handle(&self) -> EalHandle {
        self.shared.clone()
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

    /// Creates a virtual device after start-up (`rte_dev_probe`), e.g.
    /// `net_tap_lbd0,iface=lbd-ext`; its port is then found by the name
    /// before the first comma. The device lives until the EAL is cleaned
    /// up; closing its port releases what it holds.
    pub fn probe_vdev(&self, devargs: &str) -> Result<(), DpdkError> {
        let c =
            CString::new(devargs).map_err(|_| DpdkError(format!("device arguments {devargs:?} contain a NUL byte")))?;
        // SAFETY: a valid C string, read during the call only; the EAL is
        // initialised and this runs on the main thread (Eal is not Send).
        let rc = unsafe { sys::rte_dev_probe(c.as_ptr()) };
        if rc < 0 {
            return Err(DpdkError(format!("cannot create device `{devargs}`: {}", strerror(-rc))));
        }
        Ok(())
    }

    /// The TSC frequency DPDK measured at init.
    pub fn tsc_hz(&self) -> u64 {
        // SAFETY: plain query after init.
        unsafe { sys::rte_get_tsc_hz() }
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

    /// Waits for every lcore, then releases EAL resources if nothing made
    /// from this EAL is still alive. Returns whether the cleanup ran now;
    /// otherwise it runs when the last such object drops.
    pub fn cleanup(self) -> bool {
        let last = Arc::clone(&self.shared.0);
        drop(self);
        // Dropping the returned value runs rte_eal_cleanup.
        Arc::into_inner(last).is_some()
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: called from the main lcore (Eal is not Send); blocks until
        // every worker lcore is idle, so no lcore function outlives the
        // Eal and its handles drop on lcores that have finished.
        unsafe { sys::rte_eal_mp_wait_lcore() };
    }
}
