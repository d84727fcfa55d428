//! Running the suite as `cargo test` in a backend crate.

use std::future::Future;

use crate::case::run_case;
use crate::cases::{find, CASES};
use crate::faults::child::{self, Launcher};
use crate::harness::Harness;

/// The URL of a test server from the environment variable `var`
/// (`DISTSYNC_ETCD_URL`, `DISTSYNC_REDIS_URL`, `DISTSYNC_POSTGRES_URL`, ...).
///
/// When the variable is unset or empty, says so loudly on stderr and returns `None`
/// (the test then skips) — except under `CI=true`, where a missing server is a
/// failure.
///
/// # Panics
/// When the variable is unset or empty and `CI=true`.
pub fn server_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            let ci = std::env::var("CI").is_ok_and(|value| value.eq_ignore_ascii_case("true"));
            assert!(!ci, "CI=true but {var} is not set: the conformance suite needs its server (see scripts/servers.sh)");
            eprintln!(
                "\n!!! {var} is not set: SKIPPING this conformance test. \
                 Start the servers with scripts/servers.sh and export {var}. !!!\n"
            );
            None
        }
    }
}

/// Runs the case `case` as one test: builds a multi-threaded runtime, gets a backend
/// (or a harness with fault hooks) from `factory` (`None` skips the test, see
/// [`server_url`]), calibrates the harness, runs the case and panics with the
/// report if it fails ([`crate::Report::is_failure`]): a violation of a claimed or
/// contracted guarantee, a contradiction between capabilities and behaviour, or a
/// timeout. `Unsupported` passes: it is reported when the capabilities declare the
/// primitive is not offered, or the harness lacks a fault hook the case needs.
///
/// Child-process holders re-run this test binary's `conformance_child` test (see
/// [`crate::faults::child`]), which [`crate::conformance_tests!`] defines: this
/// registers that launcher.
///
/// # Panics
/// On failure, on an unknown case id, and when the runtime cannot be built.
pub fn run_test<F, Fut, H>(case: &str, factory: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Option<H>>,
    H: Into<Harness>,
{
    let Some(case) = find(case) else {
        panic!("no conformance case named {case}");
    };
    register_test_launcher();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap_or_else(|error| panic!("cannot build a tokio runtime: {error}"));
    runtime.block_on(async {
        let Some(harness) = factory().await else {
            eprintln!("skipped {}: no backend", case.id);
            return;
        };
        let harness = harness.into().calibrate().await;
        let report = run_case(case, &harness).await;
        eprintln!("{report}");
        assert!(!report.is_failure(), "{report}");
    });
}

/// Runs `body` as one test against the harness `factory` makes (`None` skips, see
/// [`server_url`]), on a multi-threaded runtime, with this test binary registered as
/// the launcher of child-process holders — for a backend's own fault tests beyond the
/// suite. The binary must define the `conformance_child` test, as
/// [`crate::conformance_tests!`] does.
///
/// # Panics
/// When `body` panics, and when the runtime cannot be built.
pub fn run_with<F, Fut, H, B, BFut>(factory: F, body: B)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Option<H>>,
    H: Into<Harness>,
    B: FnOnce(Harness) -> BFut,
    BFut: Future<Output = ()>,
{
    register_test_launcher();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap_or_else(|error| panic!("cannot build a tokio runtime: {error}"));
    runtime.block_on(async {
        let Some(harness) = factory().await else {
            eprintln!("skipped: no backend");
            return;
        };
        body(harness.into().calibrate().await).await;
    });
}

fn register_test_launcher() {
    match Launcher::test_binary() {
        Ok(launcher) => {
            child::register(launcher);
        }
        Err(error) => eprintln!("no child-process holders in this test binary: {error}"),
    }
}

/// Panics unless `listed` names every case of the suite exactly once (guards the
/// case list inside [`crate::conformance_tests!`]).
///
/// # Panics
/// When a case is missing from `listed` or `listed` names an unknown case.
pub fn assert_lists_every_case(listed: &[&str]) {
    for case in CASES {
        assert!(
            listed.contains(&case.id),
            "conformance_tests! does not list case {}",
            case.id
        );
    }
    for id in listed {
        assert!(
            find(id).is_some(),
            "conformance_tests! lists unknown case {id}"
        );
    }
    assert_eq!(
        listed.len(),
        CASES.len(),
        "conformance_tests! lists a case twice"
    );
}

/// Expands to one `#[test]` per conformance case, each running on a multi-threaded
/// tokio runtime against the backend `factory` makes, a test that the list is
/// complete, and the ignored test `conformance_child`: the entry point of the
/// child-process holders of the fault cases (see [`crate::faults::child`]), which
/// re-run the test binary with only that test, and get their backend from the same
/// `factory`.
///
/// `factory` is a function (or closure) called once per test, returning a future of
/// `Option<H>` where `H: Into<Harness>` — an `Arc<dyn Backend>`, a `Coordinator`, or a
/// [`Harness`] with the backend's fault hooks. `None` skips (use [`server_url`] so a
/// missing server is loud, and a failure under `CI=true`).
///
/// ```ignore
/// use distsync_conformance::{connector, server_url, Harness};
///
/// async fn etcd() -> Option<Harness> {
///     let url = server_url("DISTSYNC_ETCD_URL")?;
///     let connect = connector(|url| async move { distsync_etcd::backend(&url).await });
///     Some(Harness::connect(&url, connect).await.expect("connecting to etcd"))
/// }
/// distsync_conformance::conformance_tests!(etcd);
/// ```
///
/// A harness made with [`Harness::connect`] has the fault hooks of a server
/// ([`crate::ServerFaults`]); a plain backend gets only the store-side revoke, and the
/// fault cases that need more report `unsupported`.
///
/// The case tests are plain `#[test]`s that build their runtime in this crate, so the
/// calling crate needs no tokio macros.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::__conformance_tests! {
            ($factory)
            lock_mutual_exclusion
            lock_fencing_tokens
            lock_try_lock
            lock_fifo_waiters
            lock_cancelled_waiter
            lock_session_end_fires_lost
            lock_session_end_frees_lock
            lock_holder_crash
            lock_holder_pause
            lock_jepsen_counter
            lock_partition_silent
            lock_partition_reset
            lock_multi_lock_opposite_orders
            lock_guarded_write
            session_close_releases_all
            session_store_kill
            election_one_leader
            election_leader_crash
            election_terms_increase
            election_campaign_blocks
            election_resign_hands_over
            election_proclaim_not_leader
            election_leader_value_term
            election_observe_in_order
            election_partition_silent
            election_partition_reset
            rwlock_readers_share
            rwlock_writer_excludes
            rwlock_waiting_writer_blocks_readers
            rwlock_write_tokens
            rwlock_partition_silent
            rwlock_partition_reset
            queue_fifo
            queue_priority
            queue_no_loss_no_duplicate
            queue_lost_replies
            queue_empty
            barrier_wait_not_held
            barrier_blocks_until_release
            double_barrier_enter_leave
            double_barrier_too_many
            double_barrier_partition_silent
            double_barrier_partition_reset
            semaphore_bounded_holders
            semaphore_fifo_waiters
            stm_bank_serializable_snapshot
            stm_bank_serializable
            stm_bank_repeatable_reads
            stm_conflict_serializable_snapshot
            stm_conflict_serializable
            stm_conflict_repeatable_reads
            stm_read_committed_lost_update
            stm_no_anomalies_serializable_snapshot
            stm_no_anomalies_serializable
            stm_no_anomalies_repeatable_reads
            stm_read_committed_anomalies
            stm_no_stale_read
            server_restart_live_clients
            server_restart_durable_state
            server_restart_fencing_tokens
            server_cluster_leader_loss
            server_cluster_leader_kill
            server_primary_kill_acknowledged
            server_primary_kill_unacknowledged
            api_invalid_names_and_arguments
            api_names_do_not_collide
            api_timed_acquisition
            api_capabilities_match
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    (($factory:expr) $($case:ident)*) => {
        $(
            #[test]
            fn $case() {
                $crate::run_test(stringify!($case), $factory);
            }
        )*

        #[test]
        fn conformance_tests_list_every_case() {
            $crate::assert_lists_every_case(&[$(stringify!($case)),*]);
        }

        #[test]
        #[ignore = "the child-process holder of the fault cases; they start it themselves"]
        fn conformance_child() {
            $crate::faults::child::child_main($factory);
        }
    };
}
