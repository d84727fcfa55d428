//! What a case measured: holds, violated or unsupported.

use std::fmt;

use serde::Serialize;

/// The result of running one case against one backend.
#[derive(Clone, Debug, PartialEq, Eq)]
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
        }
    }

    /// The figure of a holding outcome.
    pub fn figure(&self) -> Option<&str> {
        match self {
            Self::Holds { figure, .. } => figure.as_deref(),
            _ => None,
        }
    }

    /// The detail, evidence or reason, whichever the outcome carries.
    pub fn detail(&self) -> &str {
        match self {
            Self::Holds { detail, .. } => detail,
            Self::Violated { evidence } => evidence,
            Self::Unsupported { reason } => reason,
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
        }
    }
}

/// The kind of an [`Outcome`], as the JSON matrix spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutcomeKind {
    /// `holds`
    Holds,
    /// `violated`
    Violated,
    /// `unsupported`
    Unsupported,
}

impl OutcomeKind {
    /// `holds`, `violated` or `unsupported`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Holds => "holds",
            Self::Violated => "violated",
            Self::Unsupported => "unsupported",
        }
    }
}

impl fmt::Display for OutcomeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
