//! spate: a thread-per-core, Prometheus-compatible metrics agent.
//!
//! See `docs/ARCHITECTURE.md` for the code map and the invariants each module keeps.

#[macro_use]
pub mod log;

pub mod agent;
pub mod bench;
pub mod cli;
pub mod config;
pub mod discovery;
pub mod entry;
pub mod exposition;
pub mod hash;
pub mod http;
pub mod percore;
pub mod protowire;
pub mod relabel;
pub mod remote;
pub mod runtime;
pub mod scrape;
pub mod selfmetrics;
pub mod signals;
pub mod wal;
pub mod web;
