//! Riding out connection trouble while waiting: a blocking call that is already
//! waiting retries transient store errors with a growing pause, and reports the error
//! only once the store has been unreachable for [`GIVE_UP_AFTER`].

use std::time::Duration;

use distsync_core::raw::Backoff as Pauses;
use distsync_core::Error;
use tokio::time::Instant;

const FIRST_PAUSE: Duration = Duration::from_millis(20);
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// How long a waiting call rides out a store it cannot reach.
pub(crate) const GIVE_UP_AFTER: Duration = Duration::from_secs(30);

/// The retry state of one waiting call: core's pause schedule, and since when the
/// store has been failing.
pub(crate) struct Backoff {
    pauses: Pauses,
    failing_since: Option<Instant>,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Self {
            pauses: Pauses::new(FIRST_PAUSE, MAX_PAUSE),
            failing_since: None,
        }
    }

    /// The store answered.
    pub(crate) fn succeeded(&mut self) {
        self.pauses.reset();
        self.failing_since = None;
    }

    /// After `error`: how long to pause before retrying, or `None` to give up (the
    /// error is not transient, or the store has been failing for too long).
    pub(crate) fn failed(&mut self, error: &Error) -> Option<Duration> {
        if !error.is_transient() {
            return None;
        }
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() > GIVE_UP_AFTER {
            return None;
        }
        let pause = self.pauses.next_pause();
        tracing::debug!(%error, ?pause, "store unreachable while waiting; retrying");
        Some(pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_for_a_while() {
        let transient = Error::connection("redis", "down");
        let mut backoff = Backoff::new();
        assert_eq!(backoff.failed(&transient), Some(FIRST_PAUSE));
        assert_eq!(backoff.failed(&transient), Some(FIRST_PAUSE * 2));
        tokio::time::advance(GIVE_UP_AFTER + Duration::from_secs(1)).await;
        assert_eq!(backoff.failed(&transient), None);
        backoff.succeeded();
        assert_eq!(backoff.failed(&transient), Some(FIRST_PAUSE));
        assert_eq!(backoff.failed(&Error::NotHeld), None);
    }
}
