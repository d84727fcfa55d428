//! The bound on session TTLs (`max_session_ttl=` in a backend's URL) that the
//! lock-delay after a store forgets relies on.
//!
//! After a store forgets its sessions (a restart without persistence, a wiped data
//! directory, a new cluster at the same address), a backend with the bound grants
//! nothing until the bound has passed: every session the old store may have held
//! has then ended on its holder's side, so its `lost()` comes before anyone else is
//! granted. That only holds when no session is longer than the bound, which every
//! backend checks with [`check_session_ttl`] before it opens one.

use std::time::Duration;

use crate::{Error, Result};

/// Refuses a session TTL above `bound` (none: every TTL is fine).
///
/// ```
/// use std::time::Duration;
/// use distsync_core::raw::check_session_ttl;
///
/// let bound = Some(Duration::from_secs(30));
/// assert!(check_session_ttl(Duration::from_secs(10), bound).is_ok());
/// assert!(check_session_ttl(Duration::from_secs(60), bound).is_err());
/// assert!(check_session_ttl(Duration::from_secs(60), None).is_ok());
/// ```
///
/// # Errors
/// [`Error::InvalidArgument`] for a TTL above the bound.
pub fn check_session_ttl(ttl: Duration, bound: Option<Duration>) -> Result<()> {
    match bound {
        Some(bound) if ttl > bound => Err(Error::InvalidArgument(format!(
            "a session TTL of {ttl:?} is above this store's max_session_ttl ({bound:?}): \
             the lock-delay after the store forgets covers sessions up to that TTL only"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_above_the_bound_is_refused() {
        let bound = Some(Duration::from_secs(5));
        assert!(check_session_ttl(Duration::from_secs(5), bound).is_ok());
        assert!(matches!(
            check_session_ttl(Duration::from_secs(6), bound),
            Err(Error::InvalidArgument(_))
        ));
        assert!(check_session_ttl(Duration::from_secs(3600), None).is_ok());
    }
}
