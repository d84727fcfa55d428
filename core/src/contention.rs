//! Randomized backoff after a lost race (see [`Contention`]).

use std::time::Duration;

use crate::raw::random_fraction;
use crate::raw::retry::LONGEST_PAUSE;

/// The window doubles with each loss in a row up to `2^MAX_DOUBLINGS` attempts.
const MAX_DOUBLINGS: u32 = 2;

/// Below this a pause yields to the runtime instead of sleeping: tokio's timer counts
/// in milliseconds, so a shorter sleep would round up to a millisecond or more.
const SHORTEST_SLEEP: Duration = Duration::from_millis(1);

/// The losses in a row of one client's attempts at one write: randomized backoff after
/// a lost race, an attempt whose compare failed because another client changed the key
/// first (a queue's tail taken by another producer, an item claimed by another
/// consumer).
///
/// Clients that read the same state race for one compare, and all but one lose and
/// read again at once, to race again: under `n` contenders a write costs about `n`
/// attempts, each a read and a transaction on the store, and the store's work grows
/// with the square of the contenders. A loser that first pauses a random part of a
/// window spreads the next round out (Ethernet's binary exponential backoff). The
/// window is the lost attempt's own duration, the time one winner's attempt takes on
/// this store under this load, doubled with each loss in a row up to 4 times that: so
/// the pause follows the store's speed rather than a constant that suits one store
/// and starves another, and an attempt that never loses (one producer) pays nothing.
/// The window stops growing early because a client that just won starts its next
/// write with no pause: a loser whose window kept doubling would wait ever longer
/// while winners win again (Ethernet's capture effect), and one caller's write would
/// take many times the others'.
///
/// What it gains on the kv queue's producers and consumers is measured in
/// docs/BENCHMARKS.md ("Queue and STM").
///
/// ```
/// use std::time::Duration;
/// use distsync::store::raw::Contention;
///
/// let mut contention = Contention::default();
/// let attempt = Duration::from_millis(2);
/// assert!(contention.next_pause(attempt) < attempt); // the first loss: within one attempt
/// assert!(contention.next_pause(attempt) < attempt * 2); // the second: within two
/// ```
#[derive(Clone, Debug, Default)]
pub struct Contention {
    losses: u32,
}

impl Contention {
    /// The pause before the next attempt, after one that took `attempt` and lost: a
    /// random part of `attempt` times 2 to the number of losses before this one (at
    /// most 4), and of the retry policy's longest pause at most
    /// ([`LONGEST_PAUSE`](crate::raw::retry::LONGEST_PAUSE)): an attempt that rode out an
    /// outage took the outage's length, which says nothing of the race.
    pub fn next_pause(&mut self, attempt: Duration) -> Duration {
        let window = attempt
            .saturating_mul(1 << self.losses.min(MAX_DOUBLINGS))
            .min(LONGEST_PAUSE);
        self.losses = self.losses.saturating_add(1);
        window.mul_f64(random_fraction())
    }

    /// Waits out [`next_pause`](Contention::next_pause) (a yield to the runtime when it
    /// is shorter than a millisecond).
    ///
    /// Cancel safety: cancel-safe; it only waits.
    pub async fn lost(&mut self, attempt: Duration) {
        let pause = self.next_pause(attempt);
        if pause < SHORTEST_SLEEP {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(pause).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Contention;

    #[test]
    fn the_window_doubles_with_each_loss_up_to_four_attempts() {
        let attempt = Duration::from_millis(3);
        // Each pause is below its window; over many draws, some come above the
        // previous window (a fixed window would never pass it).
        let mut above_previous = [false; 4];
        for _ in 0..200 {
            let mut contention = Contention::default();
            for (loss, above) in above_previous.iter_mut().enumerate() {
                let window = attempt * (1 << loss.min(2));
                let pause = contention.next_pause(attempt);
                assert!(
                    pause < window,
                    "loss {loss}: {pause:?} not below {window:?}"
                );
                *above |= pause >= window / 2;
            }
        }
        assert!(above_previous[..3].iter().all(|above| *above));
    }

    #[test]
    fn an_attempt_that_rode_out_an_outage_pauses_no_longer_than_the_longest_retry_pause() {
        let mut contention = Contention::default();
        for _ in 0..50 {
            let pause = contention.next_pause(Duration::from_secs(30));
            assert!(pause < super::LONGEST_PAUSE, "{pause:?}");
        }
    }

    #[test]
    fn pauses_differ_between_clients() {
        let attempt = Duration::from_millis(10);
        let pauses: std::collections::BTreeSet<Duration> = (0..100)
            .map(|_| Contention::default().next_pause(attempt))
            .collect();
        assert!(pauses.len() > 90, "only {} distinct pauses", pauses.len());
    }
}
