//! lbd's packet core: everything that decides what happens to a packet,
//! in plain safe Rust over byte buffers, with no DPDK in it.
//!
//! `wire` (header views and builders), `dataplane` (classify, sessions,
//! NAT rewrite, next hop, local answers), `session`, `maglev`,
//! `scheduler`, `persistence` (client affinity shared by workers), `neighbor`, `flow` and `rss` (hashes), `snapshot` (the
//! immutable forwarding state workers run), `counters` and `latency`
//! (per-worker, single-writer), `config` (validated configuration).
//! What needs the machine (prefetch, huge pages) comes in through
//! [`memory::Placement`]; packets and queues through the dataplane's
//! `Packet` and `Io` traits. The `engine` crate drives this core on DPDK
//! lcores; tests drive it with vectors. This crate must never depend on
//! DPDK (checked by tests/boundary.rs).

#![forbid(unsafe_code)]

pub mod admission;
pub mod config;
pub mod counter;
pub mod counters;
pub mod dataplane;
pub mod flow;
pub mod fragments;
/// The fuzz targets' bodies (see `fuzz/`), shared with the smoke test.
#[doc(hidden)]
pub mod fuzzing;
pub mod half_open;
pub mod hashkey;
pub mod health;
pub mod ids;
pub mod latency;
pub mod maglev;
pub mod memory;
pub mod nat;
pub mod neighbor;
pub mod persistence;
pub mod ratelimit;
pub mod rss;
pub mod scheduler;
pub mod security;
pub mod session;
pub mod snapshot;
pub mod sourcetable;
pub mod synproxy;
/// Test support shared by the core's tests, the integration tests and the
/// benchmarks.
#[doc(hidden)]
pub mod testing;
pub mod wire;
