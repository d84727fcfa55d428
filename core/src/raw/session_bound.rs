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

/// What a URL's `max_session_ttl=` asks for: nothing said (the backend's default), a
/// bound, or none at all.
///
/// A store that keeps every write has no default bound. One that does not (a Redis
/// that does not fsync every write, or fails over without replica acknowledgement)
/// applies its own by default, so that the URL as first written gets the lock-delay;
/// `off` is how a caller who accepts the risk says so.
///
/// ```
/// use std::time::Duration;
/// use distsync::store::raw::MaxSessionTtl;
///
/// let default = Some(Duration::from_secs(15));
/// assert_eq!(MaxSessionTtl::Default.or(default), default);
/// assert_eq!(MaxSessionTtl::Off.or(default), None);
/// let at = MaxSessionTtl::At(Duration::from_secs(5));
/// assert_eq!(at.or(default), Some(Duration::from_secs(5)));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MaxSessionTtl {
    /// Not given, or given empty (for a URL that inherits a bound): the backend's
    /// default.
    #[default]
    Default,
    /// `max_session_ttl=<duration>`: this bound.
    At(Duration),
    /// `max_session_ttl=off`: no bound and no lock-delay, whatever the store keeps.
    Off,
}

impl MaxSessionTtl {
    /// The bound, where the backend's default is `default`.
    pub fn or(self, default: Option<Duration>) -> Option<Duration> {
        match self {
            Self::Default => default,
            Self::At(bound) => Some(bound),
            Self::Off => None,
        }
    }
}

/// Refuses a session TTL above `bound` (none: every TTL is fine).
///
/// ```
/// use std::time::Duration;
/// use distsync::store::raw::check_session_ttl;
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
             the lock-delay after the store forgets covers sessions up to that TTL only \
             (`max_session_ttl=` in the URL raises the bound; `off` drops it, and the \
             lock-delay with it)"
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
