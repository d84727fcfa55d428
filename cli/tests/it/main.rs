//! The integration tests of this crate as one test binary, a module per concern, so
//! that the workspace links one test binary per crate instead of one per file.
//! `.config/nextest.toml` says which of them run alone or in turns.

mod barrier;
mod break_lock;
mod common;
mod counter;
mod election;
mod lock;
mod migrate;
mod orphans;
mod partition;
mod queue;
mod ratelimit;
mod revoke;
mod schedule;
mod semaphore;
mod session_lost;
mod shards;
mod status;
mod stm_bank;
mod usage;
