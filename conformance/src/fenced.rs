//! The protected resources of the fault cases, kept in the parent process: a counter
//! that checks fencing tokens and one that does not.
//!
//! A lock cannot stop a holder that was paused past its lease from acting on its
//! belief that it still holds (see [`distsync_core::LockGuard`]); a resource that
//! refuses writes carrying a token lower than the highest it has seen turns that
//! stale write into a refusal. These counters measure the difference.

use distsync_core::fence::Fence;
use distsync_core::FencingToken;

/// A write refused by a [`FencedCounter`]: the public rule's refusal.
pub(crate) type Refused = distsync_core::fence::StaleToken;

/// A counter behind the public [`Fence`]: refuses writes carrying a token lower than
/// the highest it has seen (equal tokens are accepted: one holder writes many times
/// with its grant's token).
#[derive(Debug, Default)]
pub(crate) struct FencedCounter {
    value: u64,
    fence: Fence,
}

impl FencedCounter {
    /// The current value.
    pub(crate) fn value(&self) -> u64 {
        self.value
    }

    /// Sets the value to `value` unless `token` is stale.
    pub(crate) fn write(&mut self, token: FencingToken, value: u64) -> Result<(), Refused> {
        self.fence.admit(token)?;
        self.value = value;
        Ok(())
    }

    /// How many writes were accepted.
    pub(crate) fn accepted(&self) -> u64 {
        self.fence.admitted()
    }

    /// How many writes were refused.
    pub(crate) fn refused(&self) -> u64 {
        self.fence.refused()
    }
}

/// A counter that takes every write: what a resource without fencing does.
#[derive(Debug, Default)]
pub(crate) struct PlainCounter {
    value: u64,
    writes: u64,
}

impl PlainCounter {
    /// The current value.
    pub(crate) fn value(&self) -> u64 {
        self.value
    }

    /// Sets the value.
    pub(crate) fn write(&mut self, value: u64) {
        self.value = value;
        self.writes += 1;
    }

    /// How many writes it took.
    pub(crate) fn writes(&self) -> u64 {
        self.writes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_tokens_are_refused_and_equal_ones_accepted() {
        let mut counter = FencedCounter::default();
        counter.write(FencingToken(5), 1).unwrap();
        counter.write(FencingToken(5), 2).unwrap();
        counter.write(FencingToken(9), 3).unwrap();
        let refused = counter.write(FencingToken(5), 4).unwrap_err();
        assert_eq!(refused.highest, FencingToken(9));
        assert_eq!(counter.value(), 3);
        assert_eq!((counter.accepted(), counter.refused()), (3, 1));
        let mut plain = PlainCounter::default();
        plain.write(3);
        plain.write(1);
        assert_eq!((plain.value(), plain.writes()), (1, 2));
    }
}
