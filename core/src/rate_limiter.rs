//! The distributed rate limiter: at most N permits per period across every process
//! that names the same limiter, with bursts, decided on the store's clock.
//!
//! # The algorithm: GCRA
//!
//! Every backend runs the generic cell rate algorithm (GCRA, the "virtual scheduling"
//! form). A limiter's whole state is one value, its *theoretical arrival time* (TAT):
//! the instant at which the limiter would be back to idle. With the emission interval
//! `T = period / N` and a burst of `B` permits, a request for `n` permits at store time
//! `now` computes `tat' = max(TAT, now) + n·T`; it is granted when
//! `tat' - B·T <= now` (and the TAT becomes `tat'`), and otherwise refused with
//! "retry after `tat' - B·T - now`", leaving the TAT as it was.
//!
//! GCRA over a token bucket, because:
//! - one stored value (the TAT) instead of two (tokens and last refill), so one atomic
//!   read-modify-write on the store (a Lua script, one SQL statement, one
//!   compare-and-swap) decides a request;
//! - no refill job: the TAT is compared with the current time, so a limiter nobody
//!   uses costs nothing and its key may expire;
//! - exact under contention: each decision is one atomic step on the store, so the
//!   grants in any window `[t0, t1]` of store time number at most
//!   `B + N·(t1 - t0)/period` however many clients ask;
//! - the burst is a parameter of the same formula, not a second bucket.
//!
//! # The store's clock is the only clock
//!
//! `now` is always read by the store inside the atomic step (Redis: `TIME` in the
//! script; PostgreSQL: `clock_timestamp()` in the statement; MySQL: `UTC_TIMESTAMP(6)`
//! in the one statement that reads the TAT and writes the next one; the memory store:
//! the process clock, which is the store's; ZooKeeper, which has no read of the time:
//! the `mtime` the leader stamps on the grant's own write, against which the stored TAT
//! is kept, see the `distsync-zookeeper` crate; NATS, likewise: the time stamp the
//! stream gives the grant's own message, see [`crate::raw::StampedTat`]). No client
//! clock enters a decision, so a client whose clock is skewed, or that is paused,
//! cannot obtain more than the rate: the only thing it learns from the store is how
//! long to wait. etcd has no clock a client can read in a transaction (revisions are
//! ordered but carry no time, and a lease's remaining TTL is whole seconds and is reset
//! on a leader change), so etcd does not offer a rate limiter
//! ([`crate::Capabilities::rate_limiter`] is `false`).
//!
//! # Two processes with different rates
//!
//! The rate is stored with the TAT. While a limiter's state is live (its TAT is in the
//! store's future), a client naming another rate gets [`Error::InvalidArgument`]
//! rather than a silent mix of two rates; once the limiter is idle (its TAT has
//! passed, so its state says nothing a fresh limiter would not), the next request's
//! rate takes over.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
//! use distsync::rate_limiter::Rate;
//! let coordinator = distsync::connect("memory://").await?;
//! let limiter = coordinator.rate_limiter("api/calls", "2/1s".parse::<Rate>()?)?;
//! assert!(limiter.try_acquire(1).await?.is_granted());
//! assert!(limiter.try_acquire(1).await?.is_granted());
//! // The burst (2 by default) is spent: the third permit is due in about 500 ms.
//! let third = limiter.try_acquire(1).await?;
//! assert!(third.retry_after().is_some());
//! # Ok(()) }
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::name::Name;

/// A rate: `permits` per `period`, with bursts of up to `burst` permits at once.
///
/// Built with [`Rate::new`] (burst = `permits`) and [`Rate::with_burst`], or parsed
/// from `"N/PERIOD"` (`"100/1s"`, `"5/min"`, `"10/250ms"`). Every constructor checks
/// its input and returns [`Error::InvalidArgument`] rather than panicking.
///
/// ```
/// use std::time::Duration;
/// use distsync::rate_limiter::Rate;
/// let rate: Rate = "5/min".parse().unwrap();
/// assert_eq!(rate, Rate::new(5, Duration::from_secs(60)).unwrap());
/// assert_eq!(rate.emission_interval(), Duration::from_secs(12));
/// assert!("0/1s".parse::<Rate>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rate {
    permits: u32,
    period: Duration,
    burst: u32,
}

impl Rate {
    /// `permits` per `period`, with a burst of `permits`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for zero permits, a zero period, or a period shorter
    /// than a microsecond per permit (the stores count time in microseconds).
    pub fn new(permits: u32, period: Duration) -> Result<Self> {
        let rate = Self {
            permits,
            period,
            burst: permits,
        };
        rate.validate()?;
        Ok(rate)
    }

    /// The same rate with bursts of up to `burst` permits at once.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a burst of zero.
    pub fn with_burst(self, burst: u32) -> Result<Self> {
        let rate = Self { burst, ..self };
        rate.validate()?;
        Ok(rate)
    }

    fn validate(&self) -> Result<()> {
        let invalid = |what: String| Err(Error::InvalidArgument(format!("rate: {what}")));
        if self.permits == 0 {
            return invalid("permits per period must be at least 1".to_owned());
        }
        if self.period.is_zero() {
            return invalid("the period must be greater than zero".to_owned());
        }
        if self.burst == 0 {
            return invalid("the burst must be at least 1".to_owned());
        }
        if self.period.as_micros() < u128::from(self.permits) {
            return invalid(format!(
                "{} permits per {:?} is more than one per microsecond",
                self.permits, self.period
            ));
        }
        if self.period > MAX_PERIOD {
            return invalid(format!("the period must be at most {MAX_PERIOD:?}"));
        }
        Ok(())
    }

    /// Permits per period.
    pub fn permits(&self) -> u32 {
        self.permits
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The most permits granted at once from idle.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// `period / permits`, rounded up to a whole microsecond (rounding up never lets
    /// more than the rate through): the time one permit adds to the TAT.
    pub fn emission_interval(&self) -> Duration {
        Duration::from_micros(self.emission_interval_micros())
    }

    /// [`Rate::emission_interval`] in microseconds, the unit the stores compute in.
    pub fn emission_interval_micros(&self) -> u64 {
        let period = u64::try_from(self.period.as_micros()).unwrap_or(u64::MAX);
        period.div_ceil(u64::from(self.permits))
    }

    /// Checks a request for `permits` permits against this rate.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for zero permits, or more than the burst (a request
    /// that could never be granted).
    pub fn check_request(&self, permits: u32) -> Result<()> {
        if permits == 0 {
            return Err(Error::InvalidArgument(
                "rate limiter: a request is for at least 1 permit".to_owned(),
            ));
        }
        if permits > self.burst {
            return Err(Error::InvalidArgument(format!(
                "rate limiter: {permits} permits exceed the burst of {}: never granted",
                self.burst
            )));
        }
        Ok(())
    }

    /// The text a backend stores with the TAT to compare rates: `permits/period
    /// in microseconds/burst`.
    pub fn fingerprint(&self) -> String {
        format!(
            "{}/{}/{}",
            self.permits,
            self.period.as_micros(),
            self.burst
        )
    }

    /// The refusal of a request at this rate to the limiter `name` while its live
    /// state was stored at the rate whose [`Rate::fingerprint`] is `theirs`: every
    /// backend answers it alike, so that a caller matches one error.
    pub fn in_use_at_another_rate(&self, name: &Name, theirs: &str) -> Error {
        Error::InvalidArgument(format!(
            "rate limiter {:?} is in use at another rate ({theirs}, permits/period µs/burst) \
             than {}",
            name.as_str(),
            self.fingerprint()
        ))
    }

    /// The rate a [`Rate::fingerprint`] was made from, or `None` for text that is not
    /// one: what `status` reads back from a stored limiter.
    ///
    /// ```
    /// use std::time::Duration;
    /// use distsync::rate_limiter::Rate;
    /// let rate = Rate::new(5, Duration::from_secs(60)).unwrap().with_burst(2).unwrap();
    /// assert_eq!(Rate::from_fingerprint(&rate.fingerprint()), Some(rate));
    /// assert_eq!(Rate::from_fingerprint("5/0/1"), None);
    /// ```
    pub fn from_fingerprint(fingerprint: &str) -> Option<Self> {
        let mut parts = fingerprint.split('/');
        let permits = parts.next()?.parse().ok()?;
        let period = Duration::from_micros(parts.next()?.parse().ok()?);
        let burst = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Self::new(permits, period).ok()?.with_burst(burst).ok()
    }

    /// How long after `now_us` one permit is due for a limiter at this rate whose
    /// theoretical arrival time is `tat_us` (both in microseconds on the store's
    /// clock; `None`: no state): zero when a permit is available now. What `status`
    /// reports as a limiter's next due time, by the formula of [`gcra`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use distsync::rate_limiter::Rate;
    /// let rate = Rate::new(2, Duration::from_secs(1)).unwrap(); // T = 500 ms, burst 2
    /// assert_eq!(rate.next_due(None, 0), Duration::ZERO);
    /// assert_eq!(rate.next_due(Some(1_000_000), 0), Duration::from_millis(500));
    /// assert_eq!(rate.next_due(Some(500_000), 0), Duration::ZERO);
    /// ```
    pub fn next_due(&self, tat_us: Option<u64>, now_us: u64) -> Duration {
        let (admission, _) = gcra(self, tat_us, now_us, 1);
        admission.retry_after().unwrap_or_default()
    }
}

/// The longest period accepted: a year. Longer periods would only risk overflowing
/// the stores' microsecond arithmetic.
pub const MAX_PERIOD: Duration = Duration::from_secs(365 * 24 * 3600);

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{:?}", self.permits, self.period)?;
        if self.burst != self.permits {
            write!(f, " (burst {})", self.burst)?;
        }
        Ok(())
    }
}

impl FromStr for Rate {
    type Err = Error;

    /// Parses `N/PERIOD`: `N` a whole number, `PERIOD` an optional whole number and a
    /// unit, `ms`, `s`/`sec`, `m`/`min`, `h`/`hour` or `d`/`day` (`100/1s`, `5/min`,
    /// `10/250ms`). The burst is `N`.
    fn from_str(text: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::InvalidArgument(format!(
                "rate {text:?}: {why} (expected N/PERIOD, e.g. `100/1s`, `5/min`, `10/250ms`)"
            ))
        };
        let (permits, period) = text.split_once('/').ok_or_else(|| bad("no `/`"))?;
        let permits: u32 = permits
            .trim()
            .parse()
            .map_err(|_| bad("N is not a whole number"))?;
        let period = period.trim();
        let (count, unit) = period.split_at(
            period
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(period.len()),
        );
        let count: u64 = if count.is_empty() {
            1
        } else {
            count
                .parse()
                .map_err(|_| bad("the period's count is too large"))?
        };
        let unit_micros: u64 = match unit {
            "ms" => 1_000,
            "s" | "sec" => 1_000_000,
            "m" | "min" => 60_000_000,
            "h" | "hour" => 3_600_000_000,
            "d" | "day" => 86_400_000_000,
            "" => return Err(bad("the period has no unit")),
            _ => return Err(bad("unknown unit")),
        };
        let micros = count
            .checked_mul(unit_micros)
            .ok_or_else(|| bad("the period is too long"))?;
        Rate::new(permits, Duration::from_micros(micros))
    }
}

/// The answer to [`RateLimiter::try_acquire`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Admission {
    /// The permits are granted (and counted against the rate).
    Granted,
    /// Refused: nothing was counted; the permits are due after `retry_after` (store
    /// time, measured when the store decided).
    Denied {
        /// How long until the request would be granted, were nobody else to ask.
        retry_after: Duration,
    },
}

impl Admission {
    /// Whether the permits are granted.
    pub fn is_granted(&self) -> bool {
        matches!(self, Self::Granted)
    }

    /// How long until a refused request is due; `None` when granted.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Granted => None,
            Self::Denied { retry_after } => Some(*retry_after),
        }
    }
}

/// The decision of GCRA at store time `now_us` on the stored TAT `tat_us` (both in
/// microseconds on the store's clock; `None`: no state, an idle limiter): the
/// admission and, when granted, the new TAT. Backends that decide in Rust on a time
/// the store read (the memory store: the kv recipes' compare-and-swap) call it; the
/// Redis script and the PostgreSQL and MySQL statements compute the same formula (see
/// the [module docs](self)).
///
/// ```
/// use std::time::Duration;
/// use distsync_core::rate_limiter::{gcra, Admission, Rate};
/// let rate = Rate::new(2, Duration::from_secs(1)).unwrap(); // T = 500 ms, burst 2
/// let (first, tat) = gcra(&rate, None, 0, 1);
/// assert!(first.is_granted());
/// let (second, tat) = gcra(&rate, tat, 0, 1);
/// assert!(second.is_granted());
/// let (third, unchanged) = gcra(&rate, tat, 0, 1);
/// assert_eq!(third, Admission::Denied { retry_after: Duration::from_millis(500) });
/// assert_eq!(unchanged, tat);
/// ```
pub fn gcra(
    rate: &Rate,
    tat_us: Option<u64>,
    now_us: u64,
    permits: u32,
) -> (Admission, Option<u64>) {
    let interval = rate.emission_interval_micros();
    let tat = tat_us.unwrap_or(now_us).max(now_us);
    let new_tat = tat.saturating_add(interval.saturating_mul(u64::from(permits)));
    let allow_at = new_tat.saturating_sub(interval.saturating_mul(u64::from(rate.burst)));
    if allow_at <= now_us {
        (Admission::Granted, Some(new_tat))
    } else {
        (
            Admission::Denied {
                retry_after: Duration::from_micros(allow_at - now_us),
            },
            tat_us,
        )
    }
}

/// A distributed rate limiter: at most [`Rate::permits`] per [`Rate::period`] across
/// every client of the store that names it, in bursts of up to [`Rate::burst`], decided
/// on the store's clock (see the [module docs](self)).
///
/// Object-safe; handles are cheap to share across tasks.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// The limiter's name.
    fn name(&self) -> &Name;

    /// The rate this handle asks for.
    fn rate(&self) -> Rate;

    /// Takes `permits` permits if they are due now on the store's clock; otherwise
    /// counts nothing and says when they are due.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for zero permits, more than the burst, or a limiter
    /// whose live state was stored with another rate; the store's error.
    ///
    /// # Cancel safety
    /// Cancel safe in that it never takes more than asked: the decision is one atomic
    /// step on the store, so a dropped call either counted its permits (and its caller
    /// does not learn it, as with any request whose reply is lost) or counted nothing.
    async fn try_acquire(&self, permits: u32) -> Result<Admission>;

    /// Waits until `permits` permits are due, then takes them.
    ///
    /// It asks the store, sleeps for the `retry_after` the store answers, and asks
    /// again: the TAT moves only when permits are granted, so waiting reserves
    /// nothing, and a caller that waits behind others may be overtaken (there is no
    /// queue of waiters).
    ///
    /// # Errors
    /// As [`RateLimiter::try_acquire`].
    ///
    /// # Cancel safety
    /// Cancel safe: while it waits it holds no reservation, so a dropped call
    /// consumed nothing, except a dropped call whose last request the store granted
    /// (as [`RateLimiter::try_acquire`]).
    async fn acquire(&self, permits: u32) -> Result<()> {
        loop {
            match self.try_acquire(permits).await? {
                Admission::Granted => return Ok(()),
                Admission::Denied { retry_after } => {
                    tracing::trace!(
                        limiter = %self.name(),
                        ?retry_after,
                        "rate limiter: waiting for permits"
                    );
                    tokio::time::sleep(retry_after).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_refuse_bad_input() {
        let ok = [
            ("100/1s", 100, Duration::from_secs(1)),
            ("5/min", 5, Duration::from_secs(60)),
            ("10/250ms", 10, Duration::from_millis(250)),
            (" 3 / 2h ", 3, Duration::from_secs(7200)),
            ("1/d", 1, Duration::from_secs(86_400)),
        ];
        for (text, permits, period) in ok {
            let rate: Rate = text.parse().unwrap();
            assert_eq!(
                (rate.permits(), rate.period(), rate.burst()),
                (permits, period, permits),
                "{text}"
            );
        }
        for text in [
            "",
            "5",
            "0/1s",
            "5/0s",
            "5/1",
            "5/1y",
            "x/1s",
            "5/99999999999999999999s",
            "2000/1ms",
            "1/400d",
        ] {
            assert!(
                matches!(text.parse::<Rate>(), Err(Error::InvalidArgument(_))),
                "{text:?} accepted"
            );
        }
        let rate = Rate::new(10, Duration::from_secs(1)).unwrap();
        assert!(matches!(rate.with_burst(0), Err(Error::InvalidArgument(_))));
        assert!(matches!(
            rate.check_request(0),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            rate.check_request(11),
            Err(Error::InvalidArgument(_))
        ));
        assert!(rate.check_request(10).is_ok());
    }

    #[test]
    fn the_interval_rounds_up() {
        let rate = Rate::new(3, Duration::from_secs(1)).unwrap();
        assert_eq!(rate.emission_interval_micros(), 333_334);
    }

    /// Simulates requests at every microsecond step and checks the GCRA bound: grants
    /// in `[0, t]` never exceed `burst + t / T`, and a steady caller gets the rate.
    #[test]
    fn gcra_holds_its_bound() {
        let rate = Rate::new(4, Duration::from_millis(100))
            .unwrap()
            .with_burst(3)
            .unwrap();
        let interval = rate.emission_interval_micros();
        let mut tat = None;
        let mut granted = 0u64;
        for now in (0..1_000_000u64).step_by(997) {
            let (admission, next) = gcra(&rate, tat, now, 1);
            if admission.is_granted() {
                granted += 1;
            } else {
                let wait = admission.retry_after().unwrap().as_micros() as u64;
                assert!(wait > 0 && wait <= interval);
            }
            tat = next;
            assert!(granted <= 3 + now / interval, "{granted} by {now}");
        }
        // A caller asking every ~1 ms for a second gets burst + 40 permits, minus at most
        // one for the last partial interval.
        assert!(granted >= 3 + 40 - 1, "{granted}");
    }

    #[test]
    fn a_denied_request_leaves_the_tat() {
        let rate = Rate::new(1, Duration::from_secs(1)).unwrap();
        let (_, tat) = gcra(&rate, None, 10, 1);
        assert_eq!(tat, Some(1_000_010));
        let (denied, same) = gcra(&rate, tat, 20, 1);
        assert_eq!(denied.retry_after(), Some(Duration::from_micros(999_990)));
        assert_eq!(same, tat);
        // An idle limiter starts from the current time, not the old TAT.
        let (granted, later) = gcra(&rate, tat, 5_000_000, 1);
        assert!(granted.is_granted());
        assert_eq!(later, Some(6_000_000));
    }
}
