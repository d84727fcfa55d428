//! A waiting queue consumer's place in a store's line of waiters, on a store whose
//! line is a table or a sorted set that a producer reads to wake one waiter
//! (PostgreSQL, Redis): how long a place lasts without renewal, and when the consumer
//! looks again without a wake-up.

use std::time::Duration;

/// How long a waiting consumer's place in the line lasts without renewal: a place
/// whose consumer died leaves the line by itself within it, and a producer's wake-up
/// then goes to the next live waiter.
pub const QUEUE_WAITER_TTL: Duration = Duration::from_secs(30);

/// When a waiting consumer looks again without a wake-up: when its place is due for
/// renewal (two thirds of [`QUEUE_WAITER_TTL`]), or just after the shortest-lived
/// hold it saw (`soonest_hold`) is due, since that item may come back with no one to
/// announce it (its holder's process died and its session expired).
pub fn queue_recheck_after(soonest_hold: Option<Duration>) -> Duration {
    let renew = QUEUE_WAITER_TTL * 2 / 3;
    soonest_hold.map_or(renew, |ttl| renew.min(ttl + Duration::from_millis(5)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiter_looks_again_at_its_renewal_or_just_after_the_soonest_hold() {
        let renew = QUEUE_WAITER_TTL * 2 / 3;
        assert_eq!(queue_recheck_after(None), renew);
        assert_eq!(
            queue_recheck_after(Some(Duration::from_secs(1))),
            Duration::from_millis(1005)
        );
        assert_eq!(queue_recheck_after(Some(QUEUE_WAITER_TTL)), renew);
    }
}
