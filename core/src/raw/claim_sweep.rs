//! When a queue handle looks for stale in-flight claims, on a store that cannot put
//! them back inside the claim itself (kv's transactions, ZooKeeper's `multi`): an
//! at-most-once claim whose consumer never came back (its process died between the
//! claim and the hand-over, or the store stayed unreachable for longer than the
//! clean-up's budget) leaves a record that only a sweep puts back, once older than
//! [`STALE_CLAIM`](crate::queue::STALE_CLAIM).
//!
//! A handle sweeps at its first claim and then at most every [`SWEEP_EVERY`]; a
//! waiting consumer also wakes when the oldest record the last sweep saw comes due.
//! So an item is invisible for at most `STALE_CLAIM` plus the next sweep (at once if a
//! consumer is waiting).

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Result;

/// How often a queue handle looks for stale in-flight records.
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// One queue handle's sweeps: when it last swept and when the oldest record it saw
/// then comes due.
#[derive(Debug, Default)]
pub struct ClaimSweeps {
    /// Never held across an await.
    state: Mutex<SweepState>,
}

#[derive(Debug, Default)]
struct SweepState {
    last: Option<Instant>,
    next: Option<Instant>,
}

impl ClaimSweeps {
    fn state(&self) -> MutexGuard<'_, SweepState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a sweep is due: none yet, or none for [`SWEEP_EVERY`], or the oldest
    /// record the last one saw is due now. Marks a sweep as started when it is, so
    /// that callers at the same moment do not sweep twice.
    pub fn start_if_due(&self) -> bool {
        let now = Instant::now();
        let mut state = self.state();
        let due = state.last.is_none_or(|last| now >= last + SWEEP_EVERY)
            || state.next.is_some_and(|next| now >= next);
        if due {
            state.last = Some(now);
            state.next = None;
        }
        due
    }

    /// Records what a sweep found: how long until the oldest record it left comes due
    /// (`None`: none left). A failed sweep is logged by the caller and tried again
    /// after [`SWEEP_EVERY`].
    pub fn swept(&self, found: &Result<Option<Duration>>) {
        let now = Instant::now();
        self.state().next = match found {
            Ok(next) => next.map(|due| now + due),
            Err(_) => Some(now + SWEEP_EVERY),
        };
    }

    /// How long until the oldest record the last sweep saw comes due, for a waiting
    /// consumer to wake then (`None`: no record was left).
    pub fn next_in(&self) -> Option<Duration> {
        self.state()
            .next
            .map(|at| at.saturating_duration_since(Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[tokio::test(start_paused = true)]
    async fn a_sweep_is_due_first_then_every_period_or_when_a_record_comes_due() {
        let sweeps = ClaimSweeps::default();
        assert!(sweeps.start_if_due(), "the first claim sweeps");
        assert!(!sweeps.start_if_due(), "a sweep just started");
        sweeps.swept(&Ok(Some(Duration::from_secs(5))));
        assert_eq!(sweeps.next_in(), Some(Duration::from_secs(5)));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(!sweeps.start_if_due(), "the record is not due yet");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            sweeps.start_if_due(),
            "the record the last sweep saw is due"
        );
        sweeps.swept(&Ok(None));
        assert_eq!(sweeps.next_in(), None);
        tokio::time::advance(SWEEP_EVERY - Duration::from_millis(1)).await;
        assert!(!sweeps.start_if_due());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(sweeps.start_if_due(), "a period passed");
        sweeps.swept(&Err(Error::connection("test", "down")));
        assert_eq!(
            sweeps.next_in(),
            Some(SWEEP_EVERY),
            "a failed sweep is tried again"
        );
    }
}
