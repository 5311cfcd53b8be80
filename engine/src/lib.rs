//! lbd's engine: a NAT-mode layer-4 load balancer on DPDK.
//!
//! Everything that touches packets is plain safe Rust over byte buffers
//! (`wire`, `nat`, `session`, `maglev`, `scheduler`, `neighbor`,
//! `dataplane`), testable without EAL. `dpdk` is the one module with
//! `unsafe`: a thin safe layer over `dpdk-sys` that `worker` and `daemon`
//! use to run the core on lcores.
//!
//! Control and data meet in three places only: the configuration
//! (`config`: a startup part fixed until restart, a forwarding part),
//! the published [`snapshot::Snapshot`] built from it, and the worker
//! queries (`query`). `ids` names the integers both sides share.

#![deny(unsafe_code)]

pub mod config;
pub mod counters;
pub mod dataplane;
pub mod flow;
pub mod ids;
pub mod latency;
pub mod maglev;
pub mod nat;
pub mod neighbor;
pub mod rss;
pub mod scheduler;
pub mod session;
pub mod snapshot;
pub mod wire;

pub mod build_info;
pub mod cli;
pub mod control;
pub mod daemon;
#[allow(unsafe_code)]
pub mod dpdk;
pub mod metrics;
pub mod query;
pub mod stats;
pub mod worker;

pub use build_info::BuildInfo;
