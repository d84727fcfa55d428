//! Running the whole list of cases: it sits above both `case` (what a case is and how
//! one runs) and `cases` (the list), so that the case files import `case` and `case`
//! imports none of them.

use crate::case::{run_case_in, Case, Report};
use crate::cases::CASES;
use crate::harness::Harness;
use crate::outcome::Outcome;
use crate::profile::Profile;

/// Runs every case `select` accepts, labelling reports `label` and handing each to
/// `on_report` as it completes; returns the reports in suite order.
///
/// Ordinary cases run one after another (they measure concurrency and timing, so they
/// do not share the machine with each other); then the fault cases that mostly wait
/// for TTLs, processes and servers ([`Case::waits_on_faults`]) run
/// [`FAULT_CASES_AT_ONCE`] at a time, each on names of its own, so that their waits
/// overlap: first those that start no server,
/// then, in a second wave, those that do ([`Case::starts_servers`]), whose server
/// starts would otherwise starve the first wave's short sessions.
///
/// Cancel-safety: as [`crate::run_case`]; cases not yet started are not run.
pub async fn run_suite(
    harness: &Harness,
    label: &str,
    select: impl Fn(&Case) -> bool,
    on_report: impl FnMut(&Report),
) -> Vec<Report> {
    run_suite_in(harness, label, Profile::Full, select, on_report).await
}

/// As [`run_suite`], under `profile`: the selected cases it leaves out are reported
/// [`crate::Outcome::NotRun`] (see [`crate::run_case_in`]).
///
/// Cancel-safety: as [`run_suite`]; the reports handed to `on_report` before the
/// future is dropped are those of the cases that finished.
pub async fn run_suite_in(
    harness: &Harness,
    label: &str,
    profile: Profile,
    select: impl Fn(&Case) -> bool,
    on_report: impl FnMut(&Report),
) -> Vec<Report> {
    run_suite_bounded(
        harness,
        label,
        profile,
        FAULT_CASES_AT_ONCE,
        select,
        on_report,
    )
    .await
}

/// How many fault cases ([`Case::waits_on_faults`]) [`run_suite`] and the runner's
/// `full` profile run at the same time.
///
/// Their waits overlap, so more at once is a shorter run, up to what the machine
/// carries: each case's clients keep the store working (renewals, watches, MySQL's
/// polling of its log) and the store shares the machine with the runner. With every
/// fault case of a column at once (about 45), a two-core machine beside two CPU-bound
/// processes starved its stores: PostgreSQL connections through the partition proxy
/// did not connect within the cases' 500 ms to 1 s for two minutes, holders' sessions
/// lapsed in every set-up try, and 11 cells of the PostgreSQL and MySQL columns
/// failed, the columns taking 435 s and 649 s. Twelve at once on the same machine
/// beside the same load: every cell measured, in 385 s and 621 s.
pub const FAULT_CASES_AT_ONCE: usize = 12;

/// As [`run_suite_in`], with at most `at_once` of the fault cases
/// ([`Case::waits_on_faults`]) running at the same time (at least one).
///
/// Each fault case may open clients of its own (a second client, a client behind the
/// partition proxy, child-process holders), each with its own connections to the
/// store: on a shared store with a connection limit (a PostgreSQL server's
/// `max_connections`), bounding how many run at once bounds the run's connections,
/// at the price of a longer run.
///
/// Cancel-safety: as [`run_suite_in`].
pub async fn run_suite_bounded(
    harness: &Harness,
    label: &str,
    profile: Profile,
    at_once: usize,
    select: impl Fn(&Case) -> bool,
    mut on_report: impl FnMut(&Report),
) -> Vec<Report> {
    let selected: Vec<&'static Case> = CASES.iter().filter(|case| select(case)).collect();
    let mut reports = Vec::new();
    for case in selected.iter().filter(|case| !case.waits_on_faults()) {
        let report = run_case_judged(case, harness, label, profile).await;
        on_report(&report);
        reports.push(report);
    }
    for starting_servers in [false, true] {
        let wave = futures::stream::iter(
            selected
                .iter()
                .filter(|case| case.waits_on_faults() && case.starts_servers() == starting_servers)
                .map(|case| run_case_judged(case, harness, label, profile)),
        );
        let mut wave = futures::StreamExt::buffer_unordered(wave, at_once.max(1));
        while let Some(report) = futures::StreamExt::next(&mut wave).await {
            on_report(&report);
            reports.push(report);
        }
    }
    let order = |report: &Report| {
        selected
            .iter()
            .position(|case| std::ptr::eq(*case, report.case))
            .unwrap_or(usize::MAX)
    };
    reports.sort_by_key(order);
    reports
}

/// Runs `case` as [`run_case_in`] does, except that under a harness
/// [`with_absent_hooks_not_run`](Harness::with_absent_hooks_not_run) a case whose
/// needs are offered but whose hook is not is [`Outcome::NotRun`] (the hook's reason)
/// without running, and that a violation caused by a store that could not be reached
/// or refused more clients is [`Outcome::Unreachable`] (see [`crate::reachability`]).
///
/// Cancel-safety: as [`crate::run_case`].
pub(crate) async fn run_case_judged(
    case: &'static Case,
    harness: &Harness,
    label: &str,
    profile: Profile,
) -> Report {
    if harness.absent_hooks_not_run()
        && profile.leaves_out(case.hooks).is_none()
        && case.missing(harness.capabilities()).is_none()
    {
        if let Some(reason) = case.missing_hook(harness) {
            return Report {
                backend: label.to_owned(),
                case,
                declared: case.declared(harness.capabilities()),
                outcome: Outcome::NotRun {
                    reason: format!("needs {reason}"),
                },
                elapsed: std::time::Duration::ZERO,
                tightest: None,
            };
        }
    }
    let report = run_case_in(case, harness, label, profile).await;
    crate::reachability::judge(report, harness).await
}
