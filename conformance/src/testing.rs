//! Running the suite as `cargo test` in a backend crate.

use std::future::Future;
use std::process::ExitCode;

use libtest_mimic::{Arguments, Trial};

use crate::cases::{find, CASES};
use crate::exit::Starvation;
use crate::faults::child::{self, Launcher};
use crate::harness::Harness;
use crate::profile::Profile;
use crate::suite::run_case_judged;

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
            assert!(
                !ci,
                "CI=true but {var} is not set: this test needs its server \
                 (see scripts/servers.sh)"
            );
            eprintln!(
                "\n!!! {var} is not set: SKIPPING this test. \
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
/// primitive is not offered, or the harness lacks a fault hook the case needs (or
/// `not run`, which passes too, under [`Harness::with_absent_hooks_not_run`]).
///
/// An [`crate::Outcome::Inconclusive`] case fails the test too, as the runner's rule
/// for a run of one fault cell says ([`crate::Starvation`]): the test measured
/// nothing, because the machine starved it, and is not green by accident.
///
/// Child-process holders re-run this test binary's `conformance_child` test (see
/// [`crate::faults::child`]), which [`run_tests`] defines: this registers that
/// launcher.
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
        let label = harness.capabilities().backend;
        let report = run_case_judged(case, &harness, label, Profile::Full).await;
        eprintln!("{report}");
        assert!(!report.is_failure(), "{report}");
        assert!(
            !Starvation::of(std::slice::from_ref(&report)).starved(),
            "the test process itself stalled past the case's slack, in two runs: nothing \
             was measured; run it again on a machine with a core to spare ({report})"
        );
    });
}

/// Runs `body` as one test against the harness `factory` makes (`None` skips, see
/// [`server_url`]), on a multi-threaded runtime, with this test binary registered as
/// the launcher of child-process holders — for a backend's own fault tests beyond the
/// suite. The binary must define the `conformance_child` test, as [`run_tests`]
/// does.
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

/// The environment variable that leaves the suite's cases out of a conformance test
/// binary ([`run_tests`]), which then runs its extra tests and the child-process entry
/// point only. CI sets it for `cargo test` because its conformance step runs the same
/// cases against the same servers through the runner (and compares the matrix), so
/// each case runs once per CI run; a user's `cargo test` runs them all.
pub const CASES_ELSEWHERE_VAR: &str = "DISTSYNC_CASES_IN_RUNNER";

/// A test of a backend crate's conformance binary beyond the suite: its name and a
/// function that panics on failure (see [`run_tests`]).
pub type ExtraTest = (&'static str, fn());

/// The `main` of a backend crate's conformance test binary (a `[[test]]` target with
/// `harness = false`; use [`crate::conformance_tests!`]): one test per case of
/// [`CASES`], generated from that list, each run with [`run_test`] against the harness
/// `factory` makes (none when [`CASES_ELSEWHERE_VAR`] is set); the `extra` tests; and the
/// ignored test `conformance_child`, the
/// entry point of the child-process holders of the fault cases (see
/// [`crate::faults::child`]), which re-run the binary with only that test and get
/// their backend from the same `factory`.
///
/// The binary accepts libtest's arguments ([libtest-mimic](https://docs.rs/libtest-mimic)):
/// a name filter (`cargo test --test conformance lock_` runs the lock cases),
/// `--exact`, `--skip`, `--ignored`, `--list --format terse` and `--test-threads`, so
/// `cargo nextest` runs each case as its own test too.
///
/// Returns the exit code: failure when any test failed.
pub fn run_tests<F, Fut, H>(factory: F, extra: &[ExtraTest]) -> ExitCode
where
    F: FnOnce() -> Fut + Copy + Send + 'static,
    Fut: Future<Output = Option<H>>,
    H: Into<Harness>,
{
    let arguments = Arguments::from_args();
    let cases_here = std::env::var_os(CASES_ELSEWHERE_VAR).is_none_or(|value| value.is_empty());
    if !cases_here {
        eprintln!(
            "{CASES_ELSEWHERE_VAR} is set: the suite's cases are left to the conformance \
             runner; this binary runs its extra tests only"
        );
    }
    let mut trials: Vec<Trial> = CASES
        .iter()
        .filter(|_| cases_here)
        .map(|case| {
            Trial::test(case.id, move || {
                run_test(case.id, factory);
                Ok(())
            })
        })
        .collect();
    trials.extend(extra.iter().map(|&(name, test)| {
        Trial::test(name, move || {
            test();
            Ok(())
        })
    }));
    trials.push(
        Trial::test(child::CHILD_TEST, move || {
            child::child_main(factory);
            Ok(())
        })
        .with_ignored_flag(true),
    );
    libtest_mimic::run(&arguments, trials).exit_code()
}

/// Expands to the `main` of a conformance test binary: one test per case of
/// [`CASES`] (generated from that one list: a case added there is a test here), each
/// on a multi-threaded tokio runtime against the backend `factory` makes, any extra
/// test functions named after the factory, and the ignored test
/// `conformance_child` (see [`run_tests`]).
///
/// The test target needs `harness = false` in the crate's `Cargo.toml`:
///
/// ```toml
/// [[test]]
/// name = "conformance"
/// harness = false
/// ```
///
/// `factory` is a function (or non-capturing closure) called once per test, returning
/// a future of `Option<H>` where `H: Into<Harness>` — an `Arc<dyn Backend>`, a
/// `Coordinator`, or a [`Harness`] with the backend's fault hooks. `None` skips (use
/// [`server_url`] so a missing server is loud, and a failure under `CI=true`). Extra
/// tests are plain `fn()`s that panic on failure (they are not `#[test]`s: a
/// `harness = false` target runs only what its `main` lists).
///
/// ```ignore
/// use distsync_conformance::{connector, run_with, server_url, Harness};
///
/// async fn etcd() -> Option<Harness> {
///     let url = server_url("DISTSYNC_ETCD_URL")?;
///     let connect = connector(|url| async move { distsync_etcd::backend(&url).await });
///     Some(Harness::connect(&url, connect).await.expect("connecting to etcd"))
/// }
///
/// fn a_revoke_is_seen() {
///     run_with(etcd, |harness| async move { /* ... */ });
/// }
///
/// distsync_conformance::conformance_tests!(etcd, a_revoke_is_seen);
/// ```
///
/// A harness made with [`Harness::connect`] has the fault hooks of a server
/// ([`crate::ServerFaults`]); a plain backend gets only the store-side revoke, and the
/// fault cases that need more report `unsupported`.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr $(, $extra:ident)* $(,)?) => {
        fn main() -> ::std::process::ExitCode {
            $crate::run_tests($factory, &[$((stringify!($extra), $extra as fn())),*])
        }
    };
}
