//! The runner's exit statuses, for CI scripts that branch on them.
//!
//! | status | class | meaning | matrix |
//! |---|---|---|---|
//! | 0 | held | every claimed guarantee (and every contract) that ran held | printed |
//! | 1 | violated | a claimed guarantee or a contract was violated (whatever else happened), or a `safe` run left entries behind | printed |
//! | 2 | bad arguments | an unknown option, a `--case` that matches nothing, a malformed URL, an unset `--backend-env` variable | none |
//! | 3 | unreachable | a store could not be reached or refused more clients (too many connections): at connect (no matrix), or while cases ran (their cells `**UNREACHABLE**`) | none at connect; printed otherwise |
//! | 4 | timeout | `--timeout` passed before every case finished (their cells `**ERROR**`) | printed |
//!
//! A run that has several of these ends with the first in the order violated,
//! unreachable, timeout: a violation measured before the store went away is still the
//! news.

use crate::case::Report;
use crate::outcome::OutcomeKind;

/// How a run of the runner ends (see the module docs).
///
/// ```
/// use distsync_conformance::ExitStatus;
///
/// assert_eq!(ExitStatus::of(&[]), ExitStatus::Held);
/// assert_eq!(ExitStatus::Unreachable.code(), 3);
/// assert_eq!(ExitStatus::TimedOut.code(), 4);
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
}

impl ExitStatus {
    /// The status of a run that produced `reports`: [`ExitStatus::Failed`] if a
    /// claimed guarantee or a contract was violated, else [`ExitStatus::Unreachable`]
    /// if a case could not reach the store, else [`ExitStatus::TimedOut`] if a case
    /// did not finish, else [`ExitStatus::Held`].
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
        Report {
            backend: "memory".into(),
            case: find("lock_mutual_exclusion").unwrap(),
            declared,
            outcome,
            elapsed: Duration::ZERO,
        }
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
        ]
        .map(ExitStatus::code)
        .to_vec();
        assert_eq!(codes, [0, 1, 2, 3, 4]);
    }
}
