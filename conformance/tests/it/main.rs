//! The integration tests of this crate as one test binary, a module per concern, so
//! that the workspace links one test binary per crate instead of one per file.
//! `.config/nextest.toml` says which of them run alone or in turns.

mod cancelled_claim;
mod detects_violations;
mod junit_schema;
mod negative_control;
mod runner_ci;
mod safe_cleanup;
mod unreachable;
