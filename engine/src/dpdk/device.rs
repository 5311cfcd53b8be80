//! A started ethdev device: what a [`Port`](super::Port) and its queues
//! share, so that neither can outlive it (and its mempool).

use super::eal::EalHandle;
use super::mempool::Mempool;
use super::sys;
use std::sync::Arc;

/// A started port's device, shared by its [`Port`](super::Port) and its queues; the
/// last of them to go stops and closes it.
#[derive(Debug)]
pub(super) struct Device {
    pub(super) id: u16,
    /// Changed only through `Arc::get_mut`, i.e. with no queue alive.
    pub(super) started: bool,
    pub(super) eal: EalHandle,
    /// RX descriptors and unsent TX mbufs belong to this pool until the
    /// device is closed.
    pub(super) _pool: Arc<Mempool>,
}

impl Drop for Device {
    fn drop(&mut self) {
        if self.started {
            // SAFETY: this is the last reference: no queue of the port is
            // left to poll it.
            unsafe { sys::rte_eth_dev_stop(self.id) };
        }
        // SAFETY: closing releases the queues (and the mbufs they hold, into
        // the pool, still alive) and flushes drivers such as net_pcap's TX
        // file; nothing uses the port afterwards.
        unsafe { sys::rte_eth_dev_close(self.id) };
        self.eal.release_port(self.id);
    }
}
