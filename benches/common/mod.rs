//! What the data-plane benchmarks share: a 64-byte frame as the core's
//! packet, an I/O sink, and the TCP frames of many clients.

use lbcore::dataplane::{Io, Packet};
use lbcore::ids::PortIndex;
use lbcore::wire::frame::FrameBuilder;
use lbcore::wire::MacAddr;

/// A 64-byte frame.
#[derive(Clone, Copy)]
pub struct Frame {
    pub data: [u8; 64],
    pub len: usize,
}

impl Packet for Frame {
    fn data(&self) -> &[u8] {
        &self.data[..self.len]
    }
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.data[..self.len]
    }
    fn packet_len(&self) -> usize {
        self.len
    }
    fn port(&self) -> PortIndex {
        PortIndex(0)
    }
    fn truncate(&mut self, len: usize) -> bool {
        self.len = len;
        true
    }
    // As lbd runs it: real prefetches, huge-page advice.
    type Placement = engine::dpdk::DpdkPlacement;
}

#[derive(Default)]
pub struct Sink {
    pub tx: u64,
    pub other: u64,
}

impl Io<Frame> for Sink {
    fn tx(&mut self, _port: PortIndex, pkt: Frame) {
        self.tx += u64::from(pkt.data[30]);
    }
    fn handoff(&mut self, _w: usize, _pkt: Frame) {
        self.other += 1;
    }
    fn free(&mut self, _pkt: Frame) {
        self.other += 1;
    }
    fn alloc(&mut self, len: usize, _port: PortIndex) -> Option<Frame> {
        Some(Frame { data: [0; 64], len })
    }
    fn to_kernel(&mut self, _port: PortIndex, _pkt: Frame) {
        self.other += 1;
    }
}

/// A TCP segment with `flags` from client `i`: 64 clients in
/// 172.16.0.0/12, 16384 ports each, to 10.0.0.100:80.
pub fn frame(i: u64, flags: u8) -> Frame {
    let (src, sport) = (0xac10_0000 | (i >> 14) as u32, 1024 + (i & 0x3fff) as u16);
    let b = FrameBuilder {
        seq: 0,
        window: 0,
        ..FrameBuilder::new(MacAddr([2, 0, 0, 0, 0, 0xfe]), MacAddr([2, 0, 0, 0, 0, 1]))
    };
    let mut f = [0u8; 64];
    f[..60].copy_from_slice(&b.tcp(src, 0x0a00_0064, sport, 80, flags, &[0; 6]));
    Frame { data: f, len: 60 }
}

/// A backend's ACK to its client, on the reply key of a session.
// Only the dataplane bench replays the return path; each bench compiles
// this module on its own.
#[allow(dead_code)]
pub fn reply_frame(key: &lbcore::flow::FlowKey) -> Frame {
    let b = FrameBuilder {
        seq: 0,
        window: 0,
        ..FrameBuilder::new(MacAddr([2, 0, 0, 0, 0, 0x11]), MacAddr([2, 0, 0, 0, 0, 1]))
    };
    let mut f = [0u8; 64];
    f[..60].copy_from_slice(&b.tcp(key.src(), key.dst(), key.sport(), key.dport(), 0x10, &[0; 6]));
    Frame { data: f, len: 60 }
}
