//! The integration tests of this crate as one test binary, a module per concern, so
//! that the workspace links one test binary per crate instead of one per file.
//! `.config/nextest.toml` says which of them run alone or in turns.

mod consumer;
mod coordinator;
mod guard;
mod hand_over;
mod instrument;
mod lead;
mod live_session;
mod lock_delay;
mod migrate;
mod queue_spans;
mod scheduled_job;
mod shard_work;
