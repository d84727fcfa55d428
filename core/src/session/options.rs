//! How a session is opened: its TTL and safety margin, and their defaults.

use std::time::Duration;

use crate::error::{Error, Result};

/// The default session TTL: 15 s, as client-go's leader election (`LeaseDuration`)
/// and Consul's lock sessions.
///
/// It bounds how long a crashed holder blocks the next one: the store frees what a
/// killed process held at most 15 s after its last renewal. At this TTL renewals go
/// out every 5 s and the session declares itself lost 3 s (the margin, `ttl / 5`)
/// before the store could expire it, so an outage under 7 s never costs the session,
/// and one over 12 s always does. etcd's Go `concurrency.NewSession`
/// defaults to 60 s; pass [`SessionOptions::with_ttl`] where a longer TTL suits the
/// job better (see the [module docs](crate::session) for a table).
pub const DEFAULT_TTL: Duration = Duration::from_secs(15);

/// The default safety margin as a fraction of the TTL: `ttl / 5`.
///
/// Why a fifth: the margin must cover (a) a difference in clock *rate* between the
/// client and the store over one TTL (NTP keeps it under 0.05 %, a badly kept VM clock
/// may drift 1 %), and (b) the time the holder needs to stop its work after `lost()`
/// fires, before the store can hand the hold to someone else. A fifth gives 3 s at the
/// default 15 s TTL and 400 ms at a 2 s TTL, while renewals (every `ttl / 3`) still get
/// from `ttl / 3` to `4 ttl / 5` after the last success to be retried before the
/// session is given up.
pub const DEFAULT_MARGIN_DIVISOR: u32 = 5;

/// How a session is opened.
///
/// ```
/// # use std::time::Duration;
/// # use distsync::SessionOptions;
/// let options = SessionOptions::with_ttl(Duration::from_secs(10))
///     .margin(Duration::from_secs(3));
/// assert_eq!(options.effective_margin(), Duration::from_secs(3));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionOptions {
    /// How long the store keeps the session after the last renewal. Renewals are sent
    /// every `ttl / 3`. Must be at least the backend's
    /// [`Capabilities::min_session_ttl`](crate::Capabilities::min_session_ttl).
    pub ttl: Duration,
    /// How long before the store's earliest possible expiry the session declares itself
    /// lost (see the [module docs](crate::session)); `None` is `ttl / 5`
    /// ([`DEFAULT_MARGIN_DIVISOR`]). Must be below `2 ttl / 3`, so that the first
    /// renewal (at `ttl / 3`) can land before the deadline.
    pub margin: Option<Duration>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self::with_ttl(DEFAULT_TTL)
    }
}

impl SessionOptions {
    /// Options with the given TTL and the default margin.
    pub fn with_ttl(ttl: Duration) -> Self {
        Self { ttl, margin: None }
    }

    /// Sets the safety margin (see [`SessionOptions::margin`](#structfield.margin)).
    #[must_use]
    pub fn margin(mut self, margin: Duration) -> Self {
        self.margin = Some(margin);
        self
    }

    /// The margin in force: the one set, or `ttl / 5`.
    pub fn effective_margin(&self) -> Duration {
        self.margin.unwrap_or(self.ttl / DEFAULT_MARGIN_DIVISOR)
    }

    /// Checks that the margin leaves room for a renewal: it must be below `2 ttl / 3`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming both durations.
    pub fn validate(&self) -> Result<()> {
        let margin = self.effective_margin();
        if margin >= self.ttl.saturating_sub(self.ttl / 3) {
            return Err(Error::InvalidArgument(format!(
                "session margin {margin:?} must be below two thirds of the ttl {:?}",
                self.ttl
            )));
        }
        Ok(())
    }
}
