//! # distsync-bench
//!
//! The benchmark program of distsync: per backend (memory, etcd, Redis, PostgreSQL,
//! ZooKeeper, MySQL/MariaDB, NATS) it measures the uncontended lock+unlock cycle beside the minimal raw store
//! commands ([`raw`]) and peer lock libraries ([`peers`], Curator's in a JVM of its own
//! on ZooKeeper), the contended hand-off with 1, 10 and 100 waiters, 2, 8 and 64
//! clients all cycling one lock ([`contended`]), election leader changes, queue
//! throughput and STM bank transfers, every backend at scale (up to 10,000 locks held
//! and 1,000 waiting from one process, [`scale`]) and 64 clients each cycling its own
//! lock against 64 raw clients ([`aggregate`]). The lock cases measure distsync's fair
//! lock and its unfair one (`LockOptions::unfair`) side by side. It fills the tables of
//! `docs/BENCHMARKS.md` ([`markdown`]) and draws SVG plots beside them ([`plot`]); run
//! it through `scripts/bench.sh`.
//!
//! Every loop is bounded by a count and a time cap, and all traffic goes to the URLs
//! given (the test servers on loopback).
//!
//! `--guard` runs the regression guard instead ([`guard`]): a short cycle run whose
//! ratios to the raw commands and to the peers, and contended runs whose ratios of
//! grants per second ([`guard_contended`]), are compared with `bench/baseline.json`.
//!
//! Modules, from the ground up: [`stats`], [`markdown`], [`target`], [`args`];
//! [`contender`] (the contract every cycle implementation meets), [`raw`], [`peers`],
//! [`cycle`] (distsync's cycle, the list of contenders and the interleaved runner); the
//! cases; [`run`], [`report`], [`plot`] and [`guard`] on top.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod aggregate;
pub mod args;
pub mod contended;
pub mod contender;
pub mod cycle;
pub mod election;
pub mod guard;
pub mod guard_contended;
pub mod handoff;
pub mod machine;
pub mod markdown;
pub mod peers;
pub mod plot;
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

/// Whether `error` is distsync's [`distsync::Error::Unsupported`]: the backend does
/// not have what was asked for (the unfair lock on a backend that has none yet). The
/// tables show such a row as unsupported rather than as a failure.
pub fn unsupported(error: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    matches!(
        error.downcast_ref::<distsync::Error>(),
        Some(distsync::Error::Unsupported { .. })
    )
}

/// A store prefix no earlier run used: `prefix/<unix seconds>-<pid>`, so that a run
/// never meets the keys a killed run left behind.
pub fn run_id(prefix: &str) -> String {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    format!("{prefix}/{stamp}-{}", std::process::id())
}
