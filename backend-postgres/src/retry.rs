//! Riding out connection trouble in waits that are not tied to a session.
//!
//! A blocking `dequeue`, a barrier `wait` or an `observe` stream waits for durable state,
//! which survives a server restart; so a connection error there is waited out (with a
//! backoff from 50 ms to 2 s) rather than returned, and the wait resumes once the server
//! answers. A caller that wants a bound puts a timeout around the call. Waits held
//! through a session (locks, campaigns, double barriers) end with
//! [`distsync_core::Error::SessionLost`] instead, as their session does not survive.

use std::time::Duration;

use distsync_core::raw::Backoff as Pauses;
use distsync_core::Error;

const FIRST: Duration = Duration::from_millis(50);
const LONGEST: Duration = Duration::from_secs(2);

/// The backoff state of one waiting call: core's pause schedule, and whether an
/// outage was logged.
pub(crate) struct Backoff {
    pauses: Pauses,
    failing: bool,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Self {
            pauses: Pauses::new(FIRST, LONGEST),
            failing: false,
        }
    }

    /// Whether `error` is worth waiting out.
    pub(crate) fn retryable(error: &Error) -> bool {
        error.is_transient()
    }

    /// Sleeps before the next try after `error` (logged once per outage).
    pub(crate) async fn pause(&mut self, waiting_for: &str, error: &Error) {
        if !self.failing {
            tracing::warn!(%error, waiting_for, "postgres unreachable; waiting for it to come back");
            self.failing = true;
        }
        tokio::time::sleep(self.pauses.next_pause()).await;
    }

    /// Notes a success: the next failure starts a new outage.
    pub(crate) fn reset(&mut self) {
        if self.failing {
            tracing::info!("postgres reachable again");
        }
        self.pauses.reset();
        self.failing = false;
    }
}
