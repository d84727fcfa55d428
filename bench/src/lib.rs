//! # distsync-bench
//!
//! The benchmark program of distsync: per backend (memory, etcd, Redis, PostgreSQL) it
//! measures the uncontended lock+unlock cycle beside the minimal raw store commands and
//! peer lock libraries, the contended hand-off with 1, 10 and 100 waiters, election
//! leader changes, queue throughput and STM bank transfers, every backend at scale
//! (up to 10,000 locks held and 1,000 waiting from one process, cost against the
//! number of holds and waiters, [`scale`]), and writes markdown tables
//! and SVG plots (`docs/BENCHMARKS.md`, `docs/bench/*.svg`). Run it through
//! `scripts/bench.sh`. It also measures 64 clients each cycling its own lock against
//! 64 raw clients ([`aggregate`]) and what 100,000 released lock names leave in the
//! store ([`residue`]).
//!
//! Every loop is bounded by a count and a time cap, and all traffic goes to the URLs
//! given (the test servers on loopback).
//!
//! `--guard` runs the CI regression guard instead ([`guard`]): a short cycle run whose
//! ratios to the raw commands and to the peers are compared with `bench/baseline.json`.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod aggregate;
pub mod args;
pub mod contender;
pub mod cycle;
pub mod election;
pub mod guard;
pub mod handoff;
pub mod machine;
pub mod markdown;
pub mod peers;
pub mod queue;
pub mod raw;
pub mod report;
pub mod run;
pub mod scale;
pub mod stats;
pub mod stm;
pub mod target;

/// Any error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The bench's result type.
pub type Result<T, E = BoxError> = std::result::Result<T, E>;
