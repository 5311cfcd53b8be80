//! Signals DPDK drivers raise per packet, kept away from threads that
//! sleep.
//!
//! net_tap asks the kernel for a signal on every frame that arrives on a
//! TAP device (O_ASYNC; a real-time signal it picks, owner: the process),
//! and reads only after one came. The kernel hands a process-directed
//! signal to any thread that does not block it, the main thread first: a
//! busy interface then interrupts it thousands of times a second. Measured
//! here, a flood from the host stretched the main thread's 20 ms sleeps to
//! many seconds and lbd stopped answering SIGTERM and SIGUSR1 in time. So
//! the main thread blocks these signals before the EAL starts (every
//! thread inherits the mask), and the one thread that reads the TAP
//! devices unblocks them.

/// SIGIO and the real-time signals (glibc keeps the two below SIGRTMIN
/// for itself; they stay as they are).
fn driver_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before
    // any use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: a valid, writable set.
    unsafe { libc::sigemptyset(&mut set) };
    for sig in std::iter::once(libc::SIGIO).chain(libc::SIGRTMIN()..=libc::SIGRTMAX()) {
        // SAFETY: an initialised set and a valid signal number.
        unsafe { libc::sigaddset(&mut set, sig) };
    }
    set
}

/// Blocks the drivers' per-packet signals in the calling thread and in
/// every thread it creates from now on. Call first thing on the main
/// thread.
pub fn block_driver_signals() {
    let set = driver_signals();
    // SAFETY: a valid set; only the calling thread's mask changes. It
    // cannot fail with valid arguments.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Lets the calling thread take them again (the thread that polls TAP
/// devices: net_tap's handler only notes that something arrived).
pub fn unblock_driver_signals() {
    let set = driver_signals();
    // SAFETY: as above.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
}
