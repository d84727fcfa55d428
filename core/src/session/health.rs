//! A session's health, the early warning before it is lost, and the watch that reports
//! its changes.

use tokio::sync::watch;

/// A session's health: the early warning before [`Session::lost`](crate::Session::lost).
///
/// Instants are the client's own monotonic clock. `#[non_exhaustive]`: a match needs a
/// wildcard arm, since finer states (a closed session told apart from a lost one, say)
/// may be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionHealth {
    /// The last renewal was acknowledged; the lease is known valid until `valid_until`.
    Healthy {
        /// The client-side deadline.
        valid_until: std::time::Instant,
    },
    /// Renewals have been failing since `since` (no answer, or errors); the lease is
    /// still known valid until `valid_until`, when the session will be declared lost
    /// unless a renewal succeeds first. A holder should stop taking new work.
    Failing {
        /// When the first renewal of the current run of failures was sent.
        since: std::time::Instant,
        /// The client-side deadline.
        valid_until: std::time::Instant,
    },
    /// The session is lost (or closed): everything held through it may already be
    /// someone else's.
    Lost,
}

impl SessionHealth {
    /// The client-side deadline, unless lost.
    pub fn valid_until(&self) -> Option<std::time::Instant> {
        match *self {
            Self::Healthy { valid_until } | Self::Failing { valid_until, .. } => Some(valid_until),
            Self::Lost => None,
        }
    }

    /// Whether renewals are failing or the session is lost.
    pub fn is_degraded(&self) -> bool {
        !matches!(self, Self::Healthy { .. })
    }
}

/// A watch on a session's [`SessionHealth`] (see [`Session::health_watch`](crate::Session::health_watch)).
#[derive(Clone, Debug)]
pub struct HealthWatch {
    pub(super) receiver: watch::Receiver<SessionHealth>,
}

impl HealthWatch {
    /// The health now.
    pub fn current(&self) -> SessionHealth {
        *self.receiver.borrow()
    }

    /// Waits for the next change of health and returns the new value;
    /// [`SessionHealth::Lost`] once the session is gone (and at once after that).
    ///
    /// # Cancel safety
    /// Cancel-safe: a change that happens while no call is waiting is reported by the
    /// next call.
    pub async fn changed(&mut self) -> SessionHealth {
        if self.receiver.changed().await.is_err() {
            return SessionHealth::Lost;
        }
        *self.receiver.borrow_and_update()
    }
}
