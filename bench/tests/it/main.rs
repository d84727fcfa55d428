//! The integration tests of this crate as one test binary, a module per concern, so
//! that the workspace links one test binary per crate instead of one per file.
//! `.config/nextest.toml` says which of them run alone or in turns.

mod aggregate;
mod cases;
mod common;
mod cycle;
mod go_peer;
mod guard;
mod handoff_rows;
mod markdown;
mod plan;
mod raw_keys;
mod scale;
mod scale_parts;
mod smoke;
