//! The integration tests of this crate as one test binary, a module per concern, so
//! that the workspace links one test binary per crate instead of one per file.
//! `.config/nextest.toml` says which of them run alone or in turns.

mod amnesia;
mod cluster;
mod cluster_listing;
mod connect;
mod deadline;
mod entry_points;
mod eviction;
mod export;
mod guarded_script;
mod names;
mod persistence;
mod primitives;
mod queue;
mod release;
mod restart;
mod semaphore;
mod sentinel;
mod status;
mod support;
mod tls_auth;
mod tls_logs;
mod unfair_lock;
