//! lbd's engine: runs the packet core ([`lbcore`]) on DPDK lcores.
//!
//! `dpdk` is the one module with `unsafe`: a thin safe layer over
//! `dpdk-sys` that `worker` (the lcore loop) and `daemon` (start-up and
//! shutdown) use; `control` (the control socket, hot changes), `metrics`
//! (Prometheus) and `stats` (the counters document) serve operators.
//!
//! Control and data meet in three places only: the configuration
//! (`lbcore::config`: a startup part fixed until restart, a forwarding part), the
//! published [`lbcore::snapshot::Snapshot`] built from it, and the worker queries
//! (`query`). `lbcore::ids` names the integers both sides share.

#![deny(unsafe_code)]

pub mod log;

pub mod build_info;
pub mod cli;
pub mod control;
pub mod daemon;
#[allow(unsafe_code)]
pub mod dpdk;
pub mod exception;
pub mod hugepages;
pub mod metrics;
pub mod query;
pub mod stats;
pub mod worker;

pub use build_info::BuildInfo;
