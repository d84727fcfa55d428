//! The runner's exit statuses, for CI scripts that branch on them.
//!
//! | status | meaning |
//! |---|---|
//! | 0 | every claimed guarantee (and every contract) that ran held |
//! | 1 | a claimed guarantee or a contract was violated, or a case did not finish (the run's `--timeout` passed); the matrix is printed |
//! | 2 | bad arguments (an unknown option, a `--case` that matches nothing, a malformed URL, an unset `--backend-env` variable): no matrix |
//! | 3 | a store could not be reached (connecting to a backend failed): no matrix |
//!
//! Statuses above 1 mean the runner produced no matrix (what `scripts/check-matrix.sh`
//! relies on).

use crate::case::Report;

/// How a run of the runner ends (see the module docs).
///
/// ```
/// use distsync_conformance::ExitStatus;
///
/// assert_eq!(ExitStatus::of(&[]), ExitStatus::Held);
/// assert_eq!(ExitStatus::Unreachable.code(), 3);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// 0: every claimed guarantee that ran held.
    Held,
    /// 1: a claimed guarantee violated, or a case not finished.
    Failed,
    /// 2: bad arguments; no matrix.
    BadArguments,
    /// 3: a store could not be reached; no matrix.
    Unreachable,
}

impl ExitStatus {
    /// The status of a run that produced `reports`: [`ExitStatus::Failed`] if any
    /// [`Report::is_failure`], else [`ExitStatus::Held`].
    pub fn of(reports: &[Report]) -> Self {
        if reports.iter().any(Report::is_failure) {
            Self::Failed
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
        assert_eq!(ExitStatus::of(&[held, unfinished]), ExitStatus::Failed);
        let codes: Vec<u8> = [
            ExitStatus::Held,
            ExitStatus::Failed,
            ExitStatus::BadArguments,
            ExitStatus::Unreachable,
        ]
        .map(ExitStatus::code)
        .to_vec();
        assert_eq!(codes, [0, 1, 2, 3]);
    }
}
