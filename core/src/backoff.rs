//! Exponential backoff, the one pause schedule of every retry loop in distsync: the
//! recipes' idempotent writes, etcd's request retries, and the Redis and PostgreSQL
//! waits that ride out a store they cannot reach. Each keeps its own policy (what to
//! retry, for how long); the pauses come from here.

use std::time::Duration;

/// Exponential backoff: the first pause, then each one doubled, up to a longest pause.
///
/// A plain counter with no clock and no sleep of its own, so a caller decides what a
/// failure is, whether a deadline leaves room for the next pause
/// ([`peek`](Backoff::peek)) and how to wait (a sleep, or a sleep raced with a stop
/// signal).
///
/// ```
/// use std::time::Duration;
/// use distsync::store::raw::Backoff;
///
/// let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(25));
/// assert_eq!(backoff.next_pause(), Duration::from_millis(10));
/// assert_eq!(backoff.next_pause(), Duration::from_millis(20));
/// assert_eq!(backoff.next_pause(), Duration::from_millis(25));
/// backoff.reset();
/// assert_eq!(backoff.peek(), Duration::from_millis(10));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    longest: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff that pauses `first`, then doubles up to `longest` (a `first` above
    /// `longest` is cut to `longest`).
    pub fn new(first: Duration, longest: Duration) -> Self {
        let first = first.min(longest);
        Self {
            first,
            longest,
            next: first,
        }
    }

    /// The pause [`next_pause`](Backoff::next_pause) will return, without taking it.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// The next pause; the one after it is twice as long, up to the longest.
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = self.next.saturating_mul(2).min(self.longest);
        pause
    }

    /// Starts again from the first pause (after a success).
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// Whether the next pause is the first one: nothing failed since the start or the
    /// last [`reset`](Backoff::reset) (or `first` is the longest pause too).
    pub fn is_reset(&self) -> bool {
        self.next == self.first
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Backoff;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_up_to_the_longest_and_resets() {
        let mut backoff = Backoff::new(MS * 10, MS * 100);
        let pauses: Vec<Duration> = (0..6).map(|_| backoff.next_pause()).collect();
        assert_eq!(pauses, [10, 20, 40, 80, 100, 100].map(|n| MS * n));
        assert!(!backoff.is_reset());
        backoff.reset();
        assert!(backoff.is_reset());
        assert_eq!(backoff.peek(), MS * 10);
        assert_eq!(backoff.next_pause(), MS * 10);
    }

    #[test]
    fn a_first_pause_above_the_longest_is_cut_and_large_pauses_do_not_overflow() {
        let mut cut = Backoff::new(MS * 50, MS * 20);
        assert_eq!(cut.next_pause(), MS * 20);
        assert_eq!(cut.next_pause(), MS * 20);

        let mut huge = Backoff::new(Duration::MAX / 2 + MS, Duration::MAX);
        huge.next_pause();
        assert_eq!(huge.next_pause(), Duration::MAX);
    }
}
