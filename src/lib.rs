//! spate: a thread-per-core, Prometheus-compatible metrics agent.
//!
//! See `docs/ARCHITECTURE.md` for the code map and the invariants each module keeps.

#[macro_use]
pub mod log;

pub mod agent;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod config;
pub(crate) mod discovery;
pub mod entry;
pub mod exposition;
pub(crate) mod hash;
pub mod http;
pub mod names;
pub(crate) mod percore;
pub(crate) mod protowire;
pub(crate) mod relabel;
pub mod remote;
pub(crate) mod runtime;
pub mod scrape;
pub(crate) mod selfmetrics;
pub(crate) mod signals;
#[cfg(test)]
pub(crate) mod testrng;
pub mod wal;
pub(crate) mod web;
