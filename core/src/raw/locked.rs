//! The policy of every std mutex in distsync's crates: a holder's panic does not poison
//! the data for everybody after it.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks a std `mutex`, taking it over when a holder's panic poisoned it. Every update
/// under a distsync mutex leaves its data consistent (each says why), so a poisoned
/// lock would only turn one task's panic into a panic of every later user of the
/// store; the data is used as the panicking holder left it.
pub fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
