//! The integration tests of this crate as one test binary, a module per concern, so
//! that the workspace links one test binary per crate instead of one per file.
//! `.config/nextest.toml` says which of them run alone or in turns.

mod common;
mod connect;
mod held_compare;
mod interop;
mod isolation;
mod keepalive;
mod kv;
mod kv_contract;
mod leader;
mod queue_faults;
mod restart;
mod session_bound;
mod status;
mod tls_auth;
mod tls_logs;
