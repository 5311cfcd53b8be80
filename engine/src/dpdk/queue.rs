//! RX and TX queues: the one handle each for polling a queue of a port.
//!
//! A queue holds its port's `Device` (which holds the mempool), so
//! neither the port nor the pool can go while the queue lives.
use super::device::Device;
use super::mbuf::{Burst, MAX_BURST};
use super::sys;
use std::sync::Arc;

/// The one handle for polling RX queue `queue` of a port.
#[derive(Debug)]
pub struct RxQueue {
    _device: Arc<Device>,
    /// Copied from the device: read per burst without following the Arc.
    port: u16,
    queue: u16,
}

/// The one handle for transmitting on TX queue `queue` of a port.
#[derive(Debug)]
pub struct TxQueue {
    _device: Arc<Device>,
    port: u16,
    queue: u16,
}

impl RxQueue {
    pub(super) fn new(device: &Arc<Device>, queue: u16) -> RxQueue {
        RxQueue { _device: Arc::clone(device), port: device.id, queue }
    }

    /// Receives up to `max` packets into the free space of `b`.
    #[inline]
    pub fn rx(&mut self, b: &mut Burst, max: usize) -> usize {
        let room = (MAX_BURST - b.len).min(max);
        // SAFETY: the port is started and stays so while this queue (which
        // holds it) lives; the queue is polled only through this unique
        // handle; the array has `room` free slots.
        let n = unsafe { sys::lbd_shim_rx_burst(self.port, self.queue, b.pkts[b.len..].as_mut_ptr(), room as u16) };
        b.len += usize::from(n);
        usize::from(n)
    }
}

impl TxQueue {
    pub(super) fn new(device: &Arc<Device>, queue: u16) -> TxQueue {
        TxQueue { _device: Arc::clone(device), port: device.id, queue }
    }

    /// Sends what `b` holds; what the queue did not take stays in `b`.
    #[inline]
    pub fn tx(&mut self, b: &mut Burst) -> usize {
        if b.len == 0 {
            return 0;
        }
        // SAFETY: started port (held, as for RX); unique handle; the first
        // len slots are owned mbufs, whose ownership passes to the driver for
        // the first `n`.
        let n =
            usize::from(unsafe { sys::lbd_shim_tx_burst(self.port, self.queue, b.pkts.as_mut_ptr(), b.len as u16) });
        b.consume_front(n);
        n
    }
}
