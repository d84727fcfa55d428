//! When a queue handle looks for stale in-flight claims, on a store that cannot put
//! them back inside the claim itself (kv's transactions, ZooKeeper's `multi`, NATS's
//! batches): an at-most-once claim whose consumer never came back (its process died
//! between the claim and the hand-over, or the store stayed unreachable for longer
//! than the clean-up's budget) leaves a record that only a sweep puts back, once older
//! than [`STALE_CLAIM`](crate::queue::STALE_CLAIM).
//!
//! A handle sweeps at its first claim and then at most every [`SWEEP_EVERY`], sooner
//! when the oldest record the last sweep saw comes due; a waiting consumer wakes when
//! its handle's next sweep is due ([`ClaimSweeps::next_in`]) and sweeps. So an item
//! whose claim a sweep saw is invisible for at most `STALE_CLAIM` plus a sweep, and any
//! other for at most `STALE_CLAIM` plus `SWEEP_EVERY`, while a consumer waits for it.

use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Result;
use crate::raw::locked;

/// How often a queue handle looks for stale in-flight records.
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// How soon a failed sweep is tried again: a transient failure (a request timed out on
/// a loaded machine) would otherwise hold a stale claim's item back for [`SWEEP_EVERY`]
/// from a consumer that waits for it, whose next look is the next sweep's due time.
const SWEEP_RETRY: Duration = Duration::from_secs(1);

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
    /// A call of the handle is sweeping now.
    running: bool,
}

/// Marks the end of a sweep when dropped, finished or cancelled.
struct Running<'a>(&'a ClaimSweeps);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.state().running = false;
    }
}

impl ClaimSweeps {
    fn state(&self) -> MutexGuard<'_, SweepState> {
        locked(&self.state)
    }

    /// Runs `sweep` if one is due: none yet, none for [`SWEEP_EVERY`], or the oldest
    /// record the last sweep saw is due now. `sweep` puts back the stale records and
    /// answers how long until the oldest record it left comes due (`None`: none left).
    /// A failed sweep is logged, naming `queue`, and tried again after a second; the
    /// claim that called goes ahead either way.
    ///
    /// # Cancel safety
    /// Cancel-safe: a sweep dropped part-way has put back some records, each in one
    /// step of the store's, and the next one is due after [`SWEEP_EVERY`].
    pub async fn sweep_if_due<F, Fut>(&self, queue: &str, sweep: F)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Duration>>>,
    {
        if !self.start_if_due() {
            return;
        }
        let _running = Running(self);
        let found = sweep().await;
        let now = Instant::now();
        self.state().next = match found {
            Ok(next) => next.map(|due| now + due),
            Err(error) => {
                tracing::warn!(queue, %error, "sweeping stale claims failed; the next sweep tries again");
                Some(now + SWEEP_RETRY)
            }
        };
    }

    /// Whether a sweep is due; marks one as started when it is, so that callers at the
    /// same moment do not sweep twice.
    fn start_if_due(&self) -> bool {
        let now = Instant::now();
        let mut state = self.state();
        let due = state.last.is_none_or(|last| now >= last + SWEEP_EVERY)
            || state.next.is_some_and(|next| now >= next);
        if due {
            state.last = Some(now);
            state.next = None;
            state.running = true;
        }
        due
    }

    /// How long until the handle's next sweep is due, for a waiting consumer to wake
    /// then and sweep (`None`: the handle never swept, and its first look sweeps).
    ///
    /// Due is when the oldest record the last sweep saw comes due, or [`SWEEP_EVERY`]
    /// after the last sweep, whichever is first: a claim made after that sweep, by a
    /// consumer that died, is put back by a waiting consumer too, not only by the
    /// handle's next claim. While another call of the handle sweeps, the answer is
    /// a second: what the sweep will leave is not known yet, and the waiter looks
    /// again soon (a sweep dropped part-way leaves the next one due after the period).
    pub fn next_in(&self) -> Option<Duration> {
        let state = self.state();
        let last = state.last?;
        let now = Instant::now();
        if state.running {
            return Some(SWEEP_RETRY);
        }
        let period = last + SWEEP_EVERY;
        let due = state.next.map_or(period, |next| next.min(period));
        Some(due.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::error::Error;

    #[tokio::test(start_paused = true)]
    async fn a_sweep_is_due_first_then_every_period_or_when_a_record_comes_due() {
        let sweeps = ClaimSweeps::default();
        assert_eq!(
            sweeps.next_in(),
            None,
            "no sweep yet: the first look sweeps"
        );
        let runs = AtomicUsize::new(0);
        let sweep = |found: Result<Option<Duration>>| {
            let sweeps = &sweeps;
            let runs = &runs;
            async move {
                sweeps
                    .sweep_if_due("q", || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        found
                    })
                    .await;
                runs.load(Ordering::SeqCst)
            }
        };
        assert_eq!(
            sweep(Ok(Some(Duration::from_secs(5)))).await,
            1,
            "the first claim sweeps"
        );
        assert_eq!(sweep(Ok(None)).await, 1, "a sweep just ran");
        assert_eq!(sweeps.next_in(), Some(Duration::from_secs(5)));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(sweep(Ok(None)).await, 1, "the record is not due yet");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            sweep(Ok(None)).await,
            2,
            "the record the last sweep saw is due"
        );
        assert_eq!(
            sweeps.next_in(),
            Some(SWEEP_EVERY),
            "no record left: a waiter sweeps after the period"
        );
        tokio::time::advance(SWEEP_EVERY - Duration::from_millis(1)).await;
        assert_eq!(sweep(Ok(None)).await, 2);
        tokio::time::advance(Duration::from_millis(1)).await;
        let failed = Err(Error::connection("test", "down"));
        assert_eq!(sweep(failed).await, 3, "a period passed");
        assert_eq!(
            sweeps.next_in(),
            Some(SWEEP_RETRY),
            "a failed sweep is tried again soon"
        );
        tokio::time::advance(SWEEP_RETRY).await;
        assert_eq!(sweep(Ok(None)).await, 4, "the failed sweep's retry is due");
    }

    /// A waiter beside a sweep in progress looks again soon; a sweep dropped part-way
    /// leaves the next one due after the period; a record due after the period waits
    /// for the period's sweep.
    #[tokio::test(start_paused = true)]
    async fn a_waiter_wakes_soon_beside_a_running_sweep_and_at_the_period_after_one() {
        let sweeps = ClaimSweeps::default();
        let (started, on_start) = tokio::sync::oneshot::channel::<()>();
        let sweeping = sweeps.sweep_if_due("q", || async move {
            let _ = started.send(());
            std::future::pending::<Result<Option<Duration>>>().await
        });
        let mut sweeping = Box::pin(sweeping);
        tokio::select! {
            () = &mut sweeping => unreachable!("the sweep never ends"),
            started = on_start => started.unwrap(),
        }
        assert_eq!(sweeps.next_in(), Some(SWEEP_RETRY), "a sweep is running");
        drop(sweeping);
        assert_eq!(
            sweeps.next_in(),
            Some(SWEEP_EVERY),
            "the dropped sweep leaves the period's"
        );
        tokio::time::advance(SWEEP_EVERY).await;
        sweeps
            .sweep_if_due("q", || async { Ok(Some(SWEEP_EVERY * 2)) })
            .await;
        assert_eq!(
            sweeps.next_in(),
            Some(SWEEP_EVERY),
            "a record due after the period waits for the period's sweep"
        );
    }
}
