//! # distsync-conformance
//!
//! One list of cases ([`CASES`]), each naming its matrix row group ([`Group`]: a
//! primitive, the server, or the API) and the guarantee it measures, run against any
//! [`distsync_core::Backend`] through a [`Harness`] (a name prefix of its own per run,
//! session TTLs, a settle time, and [`Faults`] hooks). A
//! case reports [`Outcome::Holds`] with a figure, [`Outcome::Violated`] with evidence,
//! or [`Outcome::Unsupported`] exactly when the backend's
//! [`distsync_core::Capabilities`] say it does not offer what the case needs, or the
//! harness cannot inject the fault it needs ([`Case::hooks`]; the reason is reported).
//!
//! The fault cases ([`faults`]) kill (SIGKILL) and pause (SIGSTOP) holders running in
//! child processes, kill sessions out of band with the store's own tools, restart
//! private servers, stop the raft leader of an etcd cluster, and run a Jepsen-style
//! counter workload measuring lost updates with and without fencing tokens. Harnesses
//! get their hooks from [`Harness::connect`] (a server by URL, [`ServerFaults`]) or
//! [`Harness::memory`] ([`MemoryFaults`]).
//!
//! Every backend crate runs the whole suite as `cargo test` with
//! [`conformance_tests!`], which generates one test per case of [`CASES`] (the only
//! list of cases; see [`run_tests`]); the `distsync-conformance` binary runs it
//! against backends given by URL and prints the guarantee matrix
//! ([`matrix::markdown_run`], [`matrix::json`], and [`junit::junit`] for CI), under a
//! [`Profile`]: `full` (every case) or `safe` (only the cases that need no control over
//! the store server, for a store you run in production; docs/CONFORMANCE.md).
//!
//! ## Exit statuses of the runner
//!
//! [`ExitStatus`]: 0 every claimed guarantee that ran held; 1 a claimed guarantee (or a
//! contract) violated; 2 bad arguments (no matrix); 3 a store could not be reached or
//! refused more clients ([`StoreTrouble`]: at connect, no matrix; while cases ran,
//! their cells are `**UNREACHABLE**`); 4 a case not finished within `--timeout`; 5 the
//! runner starved: more than a tenth of the fault cells [`Outcome::Inconclusive`]
//! ([`Starvation`]).
//!
//! ## When the runner is the one at fault
//!
//! While a case runs, a [`StallMeter`] measures how late a ticker on the case's runtime
//! runs. A violation, or a set-up that could not finish, measured while the harness
//! stalled for longer than the case's slack ([`Harness::stall_slack`]) is not trusted:
//! the case runs once more, and if the harness stalls again the cell is
//! [`Outcome::Inconclusive`] (see [`run_case_in`]).
//! Only a verdict reached with a live harness can be violated.
//!
//! ## Running one case
//!
//! A case's id is its test's name, and the test binaries take libtest's filters (a
//! name or part of one; `--exact` for exactly that name):
//!
//! ```text
//! # the memory backend
//! cargo test -p distsync-conformance --test memory -- lock_holder_crash --exact
//! # a server (its URL from scripts/servers.sh; unset, the test skips loudly)
//! eval "$(scripts/servers.sh env)"
//! cargo test -p distsync-etcd --all-features --test conformance -- lock_holder_crash --exact
//! # every lock case on Redis
//! cargo test -p distsync-redis --all-features --test conformance -- lock_
//! # the runner, printing the matrix rows of the cases whose ids contain the text
//! cargo run -p distsync-conformance --features full -- --backend memory:// --case lock_holder
//! # the ids, with their groups and guarantees
//! cargo run -p distsync-conformance -- --list
//! ```
//!
//! Each case is declared in the file of its prefix under `src/cases/` (`lock_*` in
//! `lock.rs`, `server_*` in `server.rs`, ...), with the fault drivers several groups
//! share in `src/cases/scenario/`.
//!
//! ```no_run
//! # #[tokio::main] async fn main() {
//! use distsync_conformance::{matrix, run_suite, Harness};
//!
//! let harness = Harness::memory().calibrate().await;
//! let reports = run_suite(&harness, "memory", |_| true, |report| eprintln!("{report}")).await;
//! println!("{}", matrix::markdown(&reports));
//! # }
//! ```
//!
//! A backend crate outside this workspace runs the same cases from its own `cargo test`
//! with [`backend_tests!`] over a [`BackendUnderTest`]: its connect function and the
//! fault hooks it gives; a case needing a hook it does not give is reported
//! [`Outcome::NotRun`] (docs/CONFORMANCE.md, "Running the suite from your own backend
//! crate").
//!
//! With its default feature `runner` off (as the workspace's backend crates take it),
//! this library depends on `distsync-core` only, so that backend crates can use it
//! as a dev-dependency; `runner` adds the facade and the runner binary.
#![warn(missing_docs)]
// Unsafe only in the two libc wrappers of `faults/tools.rs` (kill, geteuid).
#![forbid(unsafe_code)]

mod case;
mod cases;
mod check;
pub mod cleanup;
pub mod connect_checks;
mod cpu_pressure;
mod exit;
pub mod faults;
mod fenced;
pub mod gaps;
mod harness;
mod history;
pub mod junit;
mod last_deadline;
pub mod log_capture;
pub mod matrix;
mod out_of_tree;
mod outcome;
mod profile;
mod queue_history;
pub mod reachability;
mod rng;
pub mod slack;
mod stall;
mod status;
mod stm_history;
mod suite;
mod testing;

pub use case::{run_case, run_case_as, run_case_in, Case, Claim, Group, Need, Report, CASE_LIMIT};
pub use cases::{find, CASES};
pub use cleanup::{clean_up, Cleanup};
pub use exit::{ExitStatus, Starvation};
pub use faults::{
    connector, run_promoted_failover, Cluster, Connect, ExternalHolder, Faults, FreshStore,
    HoldKind, HolderSpec, Hook, MemoryFaults, PrivateServer, PromotedStore, ServerFaults,
    StoreFaults, StoreKind,
};
pub use harness::{
    run_namespace, Harness, DEFAULT_NAMESPACE, FAULT_TTL, HOLDER_TTL, MAX_SETTLE, MIN_SETTLE,
    SESSION_TTL,
};
pub use out_of_tree::{run_backend_tests, BackendUnderTest, IntoBackend};
pub use outcome::{stall_words, Outcome, OutcomeKind};
pub use profile::{controls_server, Profile, UnknownProfile};
pub use reachability::StoreTrouble;
pub use stall::{stall_slack, StallMeter, STALL_FLOOR, STALL_TICK};
pub use status::{check_counter_status, check_session_expiry, check_status};
pub use suite::{run_suite, run_suite_bounded, run_suite_in, FAULT_CASES_AT_ONCE};
pub use testing::{run_test, run_tests, run_with, server_url, ExtraTest, CASES_ELSEWHERE_VAR};
