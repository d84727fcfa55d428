//! The integration tests of this crate as one test binary, a module per concern, so
//! that the workspace links one test binary per crate instead of one per file.
//! `.config/nextest.toml` says which of them run alone or in turns.

mod amnesia;
mod common;
mod connect;
mod curator_interop;
mod curator_interop_barrier;
mod curator_interop_double_barrier;
mod curator_interop_election;
mod curator_interop_queue;
mod curator_interop_revoke;
mod curator_interop_rwlock;
mod curator_interop_semaphore;
mod hold_check;
mod migrate;
mod purge;
mod rate_limiter;
mod status;
mod tls_auth;
mod tls_logs;
mod unfair_lock;
