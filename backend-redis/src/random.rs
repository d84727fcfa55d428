//! Random ids for identities that must never repeat: session ids and client instance
//! ids (session nonces are core's call ids).
//!
//! A Redis counter (`INCR`) starts again from 1 after a restart without persistence or
//! a failover to a replica that had not seen the latest increments, so an id drawn
//! from one could be handed out twice: a holder whose session vanished would then
//! renew its successor's. These ids are drawn on the client instead, from core's
//! [`random_u64`]: distinct draws collide only by chance (2⁻⁶³ for a pair, with one bit
//! dropped for the sign), and they cannot be predicted without the process's keys.

use distsync_core::raw::random_u64;

/// A random id in `1..=i64::MAX` (63 random bits, never 0), so that it reads the same
/// wherever it is taken for a signed number.
pub(crate) fn id() -> u64 {
    loop {
        let id = random_u64() >> 1;
        if id != 0 {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    #[test]
    fn draws_do_not_repeat() {
        let ids: HashSet<u64> = (0..10_000).map(|_| super::id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|&id| id != 0 && id <= i64::MAX as u64));
        // Not all in a narrow band: the high bits vary too.
        assert!(ids.iter().any(|&id| id > 1 << 62));
    }

    #[test]
    fn threads_draw_distinct_ids() {
        let draws: Vec<Vec<u64>> = (0..4)
            .map(|_| std::thread::spawn(|| (0..1000).map(|_| super::id()).collect()))
            .map(|thread| thread.join().unwrap())
            .collect();
        let all: HashSet<u64> = draws.into_iter().flatten().collect();
        assert_eq!(all.len(), 4000);
    }
}
