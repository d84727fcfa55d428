//! The integration tests of this crate as one test binary, a module per concern, so
//! that the workspace links one test binary per crate instead of one per file.
//! `.config/nextest.toml` says which of them run alone or in turns.

mod connect;
mod docs;
mod raw;
mod replicas;
mod send_static;
mod shards_example;
