//! The runner's exit statuses, for CI scripts that branch on them.
//!
//! | status | class | meaning | matrix |
//! |---|---|---|---|
//! | 0 | held | every claimed guarantee (and every contract) that ran held | printed |
//! | 1 | violated | a claimed guarantee or a contract was violated (whatever else happened), or a `safe` run left entries behind | printed |
//! | 2 | bad arguments | an unknown option, a `--case` that matches nothing, a malformed URL, an unset `--backend-env` variable | none |
//! | 3 | unreachable | a store could not be reached or refused more clients (too many connections): at connect (no matrix), or while cases ran (their cells `**UNREACHABLE**`) | none at connect; printed otherwise |
//! | 4 | timeout | `--timeout` passed before every case finished (their cells `**ERROR**`) | printed |
//! | 5 | starved | more than a tenth of the fault cells are `inconclusive`: the runner itself stalled past the cases' slack ([`Starvation`]) | printed |
//!
//! A run that has several of these ends with the first in the order violated,
//! unreachable, timeout, starved: a violation measured before the store went away is
//! still the news, and a starved run says least about the store.
//!
//! An inconclusive cell is no failure by itself: one stall of a busy CI machine should
//! not fail a run whose other cells measured. Many of them are: the matrix then says
//! too little about the store to call the run green, and the exit status says why.

use std::fmt;

use crate::case::Report;
use crate::outcome::{Outcome, OutcomeKind};

/// How many cells of a run are inconclusive, against how many fault cells ran: a
/// run is starved when the inconclusive cells are more than a tenth of the fault cells
/// ([`ExitStatus::Starved`]).
///
/// The fault cells are those of the cases that wait on faults
/// ([`crate::Case::waits_on_faults`]: holders killed or paused, partitions, servers
/// restarted) that ran, i.e. not reported unsupported or not run: those are the cases
/// whose bounds are about time, and the ones a stalled runner turns inconclusive.
/// Every inconclusive cell counts, a fault case's or not, so a run with no fault
/// cell and one inconclusive cell is starved.
///
/// ```
/// use distsync_conformance::Starvation;
///
/// let none = Starvation::of(&[]);
/// assert_eq!((none.inconclusive, none.fault_cells), (0, 0));
/// assert!(!none.starved());
/// assert!(Starvation { inconclusive: 3, fault_cells: 20 }.starved());
/// assert!(!Starvation { inconclusive: 2, fault_cells: 20 }.starved());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Starvation {
    /// The inconclusive cells ([`Outcome::Inconclusive`]).
    pub inconclusive: usize,
    /// The fault cells that ran.
    pub fault_cells: usize,
}

impl Starvation {
    /// Counts the inconclusive cells and the fault cells of `reports`.
    pub fn of(reports: &[Report]) -> Self {
        let inconclusive = reports
            .iter()
            .filter(|report| report.outcome.kind() == OutcomeKind::Inconclusive)
            .count();
        let fault_cells = reports
            .iter()
            .filter(|report| {
                report.case.waits_on_faults()
                    && !matches!(
                        report.outcome,
                        Outcome::Unsupported { .. } | Outcome::NotRun { .. }
                    )
            })
            .count();
        Self {
            inconclusive,
            fault_cells,
        }
    }

    /// Whether more than a tenth of the fault cells are inconclusive.
    pub fn starved(self) -> bool {
        self.inconclusive * 10 > self.fault_cells
    }
}

impl fmt::Display for Starvation {
    /// `3 inconclusive cell(s) beside 20 fault cell(s) run: more than a tenth`, or
    /// `... : a tenth or less` when not starved.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} inconclusive cell(s) beside {} fault cell(s) run: {}",
            self.inconclusive,
            self.fault_cells,
            if self.starved() {
                "more than a tenth"
            } else {
                "a tenth or less"
            }
        )
    }
}

/// How a run of the runner ends (see the module docs).
///
/// ```
/// use distsync_conformance::ExitStatus;
///
/// assert_eq!(ExitStatus::of(&[]), ExitStatus::Held);
/// assert_eq!(ExitStatus::Unreachable.code(), 3);
/// assert_eq!(ExitStatus::TimedOut.code(), 4);
/// assert_eq!(ExitStatus::Starved.code(), 5);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// 0: every claimed guarantee that ran held.
    Held,
    /// 1: a claimed guarantee (or a contract) violated.
    Failed,
    /// 2: bad arguments; no matrix.
    BadArguments,
    /// 3: a store could not be reached or refused more clients, at connect (no
    /// matrix) or while cases ran ([`crate::Outcome::Unreachable`] cells).
    Unreachable,
    /// 4: `--timeout` passed before every case finished, or a case's set-up lapsed in
    /// every try ([`crate::Outcome::Error`] cells).
    TimedOut,
    /// 5: more than a tenth of the fault cells are [`crate::Outcome::Inconclusive`]:
    /// the runner itself stalled too often to say what the store gives
    /// ([`Starvation`]).
    Starved,
}

impl ExitStatus {
    /// The status of a run that produced `reports`: [`ExitStatus::Failed`] if a
    /// claimed guarantee or a contract was violated, else [`ExitStatus::Unreachable`]
    /// if a case could not reach the store, else [`ExitStatus::TimedOut`] if a case
    /// did not finish, else [`ExitStatus::Starved`] if the run is starved
    /// ([`Starvation::starved`]), else [`ExitStatus::Held`].
    pub fn of(reports: &[Report]) -> Self {
        let any = |kind: OutcomeKind| {
            reports
                .iter()
                .any(|report| report.is_failure() && report.outcome.kind() == kind)
        };
        if any(OutcomeKind::Violated) {
            Self::Failed
        } else if any(OutcomeKind::Unreachable) {
            Self::Unreachable
        } else if reports.iter().any(Report::is_failure) {
            Self::TimedOut
        } else if Starvation::of(reports).starved() {
            Self::Starved
        } else {
            Self::Held
        }
    }

    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Self::Held => 0,
            Self::Failed => 1,
            Self::BadArguments => 2,
            Self::Unreachable => 3,
            Self::TimedOut => 4,
            Self::Starved => 5,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cases::find;
    use crate::outcome::Outcome;

    fn report(declared: Option<bool>, outcome: Outcome) -> Report {
        report_of("lock_mutual_exclusion", declared, outcome)
    }

    fn report_of(case: &str, declared: Option<bool>, outcome: Outcome) -> Report {
        Report {
            backend: "memory".into(),
            case: find(case).unwrap(),
            declared,
            outcome,
            elapsed: Duration::ZERO,
            tightest: None,
        }
    }

    fn inconclusive() -> Outcome {
        Outcome::Inconclusive {
            stalled: Duration::from_millis(400),
            slack: Duration::from_millis(250),
            detail: "stalled".into(),
        }
    }

    #[test]
    fn more_than_a_tenth_of_the_fault_cells_inconclusive_is_a_starved_run() {
        assert!(find("lock_holder_pause").unwrap().waits_on_faults());
        assert!(!find("lock_mutual_exclusion").unwrap().waits_on_faults());
        let fault = |outcome| report_of("lock_holder_pause", Some(true), outcome);
        let mut reports: Vec<Report> = (0..9).map(|_| fault(Outcome::holds("ok"))).collect();
        // Neither an ordinary cell nor an unsupported or unrun fault cell counts.
        reports.push(report(Some(true), Outcome::holds("ok")));
        reports.push(fault(Outcome::Unsupported {
            reason: "no".into(),
        }));
        reports.push(fault(Outcome::NotRun {
            reason: "safe".into(),
        }));
        reports.push(fault(inconclusive()));
        let starvation = Starvation::of(&reports);
        assert_eq!(
            starvation,
            Starvation {
                inconclusive: 1,
                fault_cells: 10
            }
        );
        assert!(!starvation.starved(), "{starvation}");
        assert_eq!(ExitStatus::of(&reports), ExitStatus::Held);
        // One more, of an ordinary case: 2 of 10.
        reports.push(report(Some(true), inconclusive()));
        assert!(Starvation::of(&reports).starved());
        assert_eq!(ExitStatus::of(&reports), ExitStatus::Starved);
        assert!(Starvation::of(&reports)
            .to_string()
            .contains("more than a tenth"));
        // A timeout, an unreachable store and a violation come first.
        let mut timed_out = reports.clone();
        timed_out.push(report(
            None,
            Outcome::Error {
                message: "deadline".into(),
            },
        ));
        assert_eq!(ExitStatus::of(&timed_out), ExitStatus::TimedOut);
        reports.push(report(Some(true), Outcome::violated("two holders")));
        assert_eq!(ExitStatus::of(&reports), ExitStatus::Failed);
        // A lone inconclusive cell, with no fault cell: starved.
        assert_eq!(
            ExitStatus::of(&[report(None, inconclusive())]),
            ExitStatus::Starved
        );
    }

    #[test]
    fn exit_codes_follow_the_reports() {
        let held = report(Some(true), Outcome::holds("ok"));
        let not_run = report(
            Some(true),
            Outcome::NotRun {
                reason: "safe".into(),
            },
        );
        let admitted = report(Some(false), Outcome::violated("as declared"));
        assert_eq!(
            ExitStatus::of(&[held.clone(), not_run, admitted]),
            ExitStatus::Held
        );
        let claimed = report(Some(true), Outcome::violated("two holders"));
        assert_eq!(ExitStatus::of(&[held.clone(), claimed]), ExitStatus::Failed);
        let contract = report(None, Outcome::violated("bad name accepted"));
        assert_eq!(ExitStatus::of(&[contract]), ExitStatus::Failed);
        let unfinished = report(
            Some(true),
            Outcome::Error {
                message: "deadline".into(),
            },
        );
        assert_eq!(
            ExitStatus::of(&[held.clone(), unfinished.clone()]),
            ExitStatus::TimedOut
        );
        let unreachable = report(
            Some(true),
            Outcome::Unreachable {
                message: "store overloaded (too many clients): ...".into(),
            },
        );
        assert_eq!(
            ExitStatus::of(&[held.clone(), unfinished.clone(), unreachable.clone()]),
            ExitStatus::Unreachable
        );
        let violated = report(Some(true), Outcome::violated("two holders"));
        assert_eq!(
            ExitStatus::of(&[held, unfinished, unreachable, violated]),
            ExitStatus::Failed,
            "a violation is the news"
        );
        let codes: Vec<u8> = [
            ExitStatus::Held,
            ExitStatus::Failed,
            ExitStatus::BadArguments,
            ExitStatus::Unreachable,
            ExitStatus::TimedOut,
            ExitStatus::Starved,
        ]
        .map(ExitStatus::code)
        .to_vec();
        assert_eq!(codes, [0, 1, 2, 3, 4, 5]);
    }
}
