//! What a case measured: holds, violated or unsupported; or why it has no measure (not
//! run in the run's profile, the store could not be reached, the harness could not
//! finish it, or the harness itself stalled while it ran).

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// The result of running one case against one backend.
///
/// `#[non_exhaustive]`: the runner may learn new reasons a case has no measure.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The guarantee was measured to hold.
    Holds {
        /// A measured figure worth a matrix cell (e.g. `released 12 ms after the revoke`).
        figure: Option<String>,
        /// What was checked, in a sentence or two.
        detail: String,
    },
    /// The guarantee was measured not to hold.
    Violated {
        /// What was observed that breaks the guarantee.
        evidence: String,
    },
    /// The backend does not offer what the case needs, as its capabilities declare.
    Unsupported {
        /// Which capability is off.
        reason: String,
    },
    /// The case was not run because the run's [`crate::Profile`] leaves it out (it
    /// needs control over the store server, which the profile does not take). Not a
    /// statement about the store: distinct from [`Outcome::Unsupported`].
    NotRun {
        /// Which profile left it out and which hook it needs.
        reason: String,
    },
    /// The harness could not finish the case (the run's deadline passed first, or the
    /// case's set-up before its fault lapsed in every try): no measure either way, but
    /// not a pass.
    Error {
        /// What went wrong in the harness.
        message: String,
    },
    /// The store could not be reached, or refused more clients (too many connections),
    /// while the case ran: nothing was measured, and nothing is said about the
    /// guarantee (see [`crate::StoreTrouble`]). Fails the run with its own exit status
    /// ([`crate::ExitStatus::Unreachable`]).
    Unreachable {
        /// `store unreachable: ...` or `store overloaded (too many clients): ...`, with
        /// the error the case saw.
        message: String,
    },
    /// The case measured a violation, or could not finish its set-up, while the harness
    /// itself stalled for longer than the slack the case judges with
    /// ([`crate::Harness::stall_slack`]), and its second run stalled too: the runner,
    /// not the store, may be at fault, so nothing is said about the guarantee. Only a
    /// verdict reached with a live harness is `violated` (see [`crate::run_case_in`]).
    /// A case whose verdict needed a window through which the machine starved of CPU,
    /// in both runs, is inconclusive too: `stalled` is then the starved time, `slack`
    /// the bound it was judged with.
    /// Not a failure of the run by itself; more than a tenth of the fault cells
    /// inconclusive is ([`crate::ExitStatus::Starved`]).
    Inconclusive {
        /// The longest stall of the harness (the runtime's scheduling lag, measured by
        /// [`crate::StallMeter`]) in the two runs.
        stalled: Duration,
        /// The slack the verdict was judged with.
        slack: Duration,
        /// What each run measured, and how long the harness stalled in each.
        detail: String,
    },
}

impl Outcome {
    /// A holding outcome without a figure.
    pub fn holds(detail: impl Into<String>) -> Self {
        Self::Holds {
            figure: None,
            detail: detail.into(),
        }
    }

    /// A violated outcome.
    pub fn violated(evidence: impl Into<String>) -> Self {
        Self::Violated {
            evidence: evidence.into(),
        }
    }

    /// The outcome's kind.
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Self::Holds { .. } => OutcomeKind::Holds,
            Self::Violated { .. } => OutcomeKind::Violated,
            Self::Unsupported { .. } => OutcomeKind::Unsupported,
            Self::NotRun { .. } => OutcomeKind::NotRun,
            Self::Error { .. } => OutcomeKind::Error,
            Self::Unreachable { .. } => OutcomeKind::Unreachable,
            Self::Inconclusive { .. } => OutcomeKind::Inconclusive,
        }
    }

    /// How long the harness stalled, for an inconclusive outcome.
    pub fn stalled(&self) -> Option<Duration> {
        match self {
            Self::Inconclusive { stalled, .. } => Some(*stalled),
            _ => None,
        }
    }

    /// The figure of a holding outcome.
    pub fn figure(&self) -> Option<&str> {
        match self {
            Self::Holds { figure, .. } => figure.as_deref(),
            _ => None,
        }
    }

    /// The detail, evidence, reason or message, whichever the outcome carries.
    pub fn detail(&self) -> &str {
        match self {
            Self::Holds { detail, .. } => detail,
            Self::Violated { evidence } => evidence,
            Self::Unsupported { reason } | Self::NotRun { reason } => reason,
            Self::Error { message } | Self::Unreachable { message } => message,
            Self::Inconclusive { detail, .. } => detail,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Holds {
                figure: Some(figure),
                detail,
            } => write!(f, "holds ({figure}): {detail}"),
            Self::Holds {
                figure: None,
                detail,
            } => write!(f, "holds: {detail}"),
            Self::Violated { evidence } => write!(f, "VIOLATED: {evidence}"),
            Self::Unsupported { reason } => write!(f, "unsupported: {reason}"),
            Self::NotRun { reason } => write!(f, "not run: {reason}"),
            Self::Error { message } => write!(f, "ERROR: {message}"),
            Self::Unreachable { message } => write!(f, "UNREACHABLE: {message}"),
            Self::Inconclusive {
                stalled, detail, ..
            } => write!(f, "inconclusive ({}): {detail}", stall_words(*stalled)),
        }
    }
}

/// The kind of an [`Outcome`], as the JSON matrix spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OutcomeKind {
    /// `holds`
    Holds,
    /// `violated`
    Violated,
    /// `unsupported`
    Unsupported,
    /// `not_run`: left out by the run's profile.
    NotRun,
    /// `error`: the harness could not finish the case.
    Error,
    /// `unreachable`: the store could not be reached or refused more clients.
    Unreachable,
    /// `inconclusive`: the harness itself stalled past the case's slack, twice.
    Inconclusive,
}

impl OutcomeKind {
    /// `holds`, `violated`, `unsupported`, `not_run`, `error`, `unreachable` or
    /// `inconclusive`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Holds => "holds",
            Self::Violated => "violated",
            Self::Unsupported => "unsupported",
            Self::NotRun => "not_run",
            Self::Error => "error",
            Self::Unreachable => "unreachable",
            Self::Inconclusive => "inconclusive",
        }
    }
}

impl fmt::Display for OutcomeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `the runner stalled 412 ms`: how an inconclusive outcome names its stall, in the
/// matrix cell and in its display.
///
/// ```
/// use std::time::Duration;
///
/// let words = distsync_conformance::stall_words(Duration::from_micros(412_600));
/// assert_eq!(words, "the runner stalled 412 ms");
/// ```
pub fn stall_words(stalled: Duration) -> String {
    format!("the runner stalled {} ms", stalled.as_millis())
}
