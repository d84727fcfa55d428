//! When a scheduled job is due: a [`Schedule`], a fixed interval or a cron expression,
//! whose occurrence times are a pure function of the schedule and the clock, so every
//! replica computes the same ones without talking to the others (see
//! [`crate::scheduled_job`]).
//!
//! - **An interval** `every(d)` occurs at every whole multiple of `d` since the UNIX
//!   epoch (UTC): `every(1 min)` at every minute's start, `every(1 h)` on the hour,
//!   whenever each replica started.
//! - **A cron expression** occurs at its fire times, in UTC: Vixie cron's five fields
//!   (`min hour day-of-month month day-of-week`, day-of-month and day-of-week matching
//!   either, as cron does), with an optional sixth field of seconds in front
//!   (`*/10 * * * * *`) and croner's extensions (`L`, `W`, `#`). Parsed by the
//!   [croner](https://docs.rs/croner) crate.
//!
//! Times are millisecond precise: an interval is a whole number of milliseconds.
//!
//! ```
//! use std::time::{Duration, SystemTime, UNIX_EPOCH};
//! use distsync::replicas::Schedule;
//!
//! let every_minute = Schedule::every(Duration::from_secs(60))?;
//! let at = UNIX_EPOCH + Duration::from_secs(90);
//! assert_eq!(every_minute.latest_at_or_before(at), Some(UNIX_EPOCH + Duration::from_secs(60)));
//! assert_eq!(every_minute.next_after(at), Some(UNIX_EPOCH + Duration::from_secs(120)));
//!
//! // 02:30 UTC every day.
//! let nightly = Schedule::cron("30 2 * * *")?;
//! let day = Duration::from_secs(86_400);
//! assert_eq!(nightly.next_after(UNIX_EPOCH), Some(UNIX_EPOCH + Duration::from_secs(9_000)));
//! let first = UNIX_EPOCH + Duration::from_secs(9_000);
//! assert_eq!(nightly.next_after(first), Some(first + day));
//! # Ok::<(), distsync::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};

/// When a scheduled job is due: every fixed interval since the UNIX epoch, or at a cron
/// expression's fire times (UTC). See the [module docs](self).
#[derive(Clone)]
pub struct Schedule {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    /// Every this many milliseconds since the epoch.
    Every(u64),
    /// A cron expression, with the text it was parsed from.
    Cron(Box<croner::Cron>, String),
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Every(millis) => f
                .debug_tuple("Every")
                .field(&Duration::from_millis(*millis))
                .finish(),
            Kind::Cron(_, text) => f.debug_tuple("Cron").field(text).finish(),
        }
    }
}

impl fmt::Display for Schedule {
    /// `every 30s` or `cron "0 2 * * *"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Every(millis) => write!(f, "every {:?}", Duration::from_millis(*millis)),
            Kind::Cron(_, text) => write!(f, "cron {text:?}"),
        }
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        match (&self.kind, &other.kind) {
            (Kind::Every(a), Kind::Every(b)) => a == b,
            (Kind::Cron(_, a), Kind::Cron(_, b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Schedule {}

impl Schedule {
    /// Every `interval`, at its whole multiples since the UNIX epoch.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an interval under 1 ms or not a whole number of
    /// milliseconds.
    pub fn every(interval: Duration) -> Result<Self> {
        let millis = millis(interval);
        if millis == 0 || Duration::from_millis(millis) != interval {
            return Err(Error::InvalidArgument(format!(
                "schedule interval {interval:?}: must be a whole number of milliseconds, at least 1 ms"
            )));
        }
        Ok(Self {
            kind: Kind::Every(millis),
        })
    }

    /// At the fire times of the cron `expression`, in UTC: five fields
    /// (`min hour day-of-month month day-of-week`) or six, seconds first.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] saying why the expression does not parse.
    pub fn cron(expression: &str) -> Result<Self> {
        let cron = croner::Cron::from_str(expression).map_err(|error| {
            Error::InvalidArgument(format!("cron expression {expression:?}: {error}"))
        })?;
        Ok(Self {
            kind: Kind::Cron(Box::new(cron), expression.trim().to_owned()),
        })
    }

    /// The interval, for a fixed-interval schedule.
    pub fn interval(&self) -> Option<Duration> {
        match &self.kind {
            Kind::Every(millis) => Some(Duration::from_millis(*millis)),
            Kind::Cron(..) => None,
        }
    }

    /// The latest occurrence at or before `at`, if there is one (a cron expression
    /// that never fired before `at` has none).
    pub fn latest_at_or_before(&self, at: SystemTime) -> Option<SystemTime> {
        let at = millis_since_epoch(at);
        match &self.kind {
            Kind::Every(every) => Some(from_millis(at - at % every)),
            Kind::Cron(cron, _) => cron
                .find_previous_occurrence(&to_utc(at)?, true)
                .ok()
                .and_then(from_utc),
        }
    }

    /// The first occurrence strictly after `at`, if there is one.
    pub fn next_after(&self, at: SystemTime) -> Option<SystemTime> {
        let at = millis_since_epoch(at);
        match &self.kind {
            Kind::Every(every) => at
                .checked_sub(at % every)
                .and_then(|latest| latest.checked_add(*every))
                .map(from_millis),
            Kind::Cron(cron, _) => {
                // Whole seconds: an occurrence inside the current second is before `at`
                // unless `at` is that second's start.
                let start = to_utc(at)?;
                cron.find_next_occurrence(&start, false)
                    .ok()
                    .and_then(from_utc)
                    .filter(|&next| millis_since_epoch(next) > at)
            }
        }
    }

    /// The schedule as the store keeps it: `every <ms>` or `cron <expression>`
    /// ([`Schedule::from_stored`] reads it back).
    pub(crate) fn stored(&self) -> String {
        match &self.kind {
            Kind::Every(millis) => format!("every {millis}"),
            Kind::Cron(_, text) => format!("cron {text}"),
        }
    }

    /// The schedule [`Schedule::stored`] wrote; `None` for text it never writes.
    pub(crate) fn from_stored(text: &str) -> Option<Self> {
        match text.split_once(' ')? {
            ("every", millis) => Self::every(Duration::from_millis(millis.parse().ok()?)).ok(),
            ("cron", expression) => Self::cron(expression).ok(),
            _ => None,
        }
    }
}

impl FromStr for Schedule {
    type Err = Error;

    /// A cron expression (`*/5 * * * *`), as [`Schedule::cron`].
    fn from_str(expression: &str) -> Result<Self> {
        Self::cron(expression)
    }
}

/// `duration` in whole milliseconds, `u64::MAX` past that.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// `at` in milliseconds since the UNIX epoch (0 before it).
pub(crate) fn millis_since_epoch(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, millis)
}

/// The time `millis` milliseconds after the UNIX epoch.
pub(crate) fn from_millis(millis: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(millis)
}

fn to_utc(millis: u64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(i64::try_from(millis).ok()?)
}

fn from_utc(at: DateTime<Utc>) -> Option<SystemTime> {
    u64::try_from(at.timestamp_millis()).ok().map(from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn the_stored_text_reads_back() {
        for schedule in [
            Schedule::every(Duration::from_millis(1500)).unwrap(),
            Schedule::cron("*/10 * * * * *").unwrap(),
        ] {
            assert_eq!(Schedule::from_stored(&schedule.stored()), Some(schedule));
        }
        assert_eq!(Schedule::from_stored("every 0"), None);
        assert_eq!(Schedule::from_stored("hourly"), None);
    }

    #[test]
    fn intervals_are_multiples_since_the_epoch() {
        let schedule = Schedule::every(Duration::from_secs(10)).unwrap();
        assert_eq!(schedule.latest_at_or_before(secs(25)), Some(secs(20)));
        assert_eq!(schedule.latest_at_or_before(secs(20)), Some(secs(20)));
        assert_eq!(schedule.next_after(secs(20)), Some(secs(30)));
        assert_eq!(schedule.next_after(secs(29)), Some(secs(30)));
        assert!(Schedule::every(Duration::ZERO).is_err());
        assert!(Schedule::every(Duration::from_micros(1500)).is_err());
    }

    #[test]
    fn cron_fires_in_utc_with_optional_seconds() {
        let hourly = Schedule::cron("0 * * * *").unwrap();
        assert_eq!(hourly.latest_at_or_before(secs(3_599)), Some(secs(0)));
        assert_eq!(hourly.latest_at_or_before(secs(3_600)), Some(secs(3_600)));
        assert_eq!(hourly.next_after(secs(3_600)), Some(secs(7_200)));
        let every_ten_seconds = Schedule::cron("*/10 * * * * *").unwrap();
        assert_eq!(every_ten_seconds.next_after(secs(100)), Some(secs(110)));
        assert_eq!(
            every_ten_seconds.next_after(secs(100) + Duration::from_millis(1)),
            Some(secs(110))
        );
        assert_eq!(
            every_ten_seconds.latest_at_or_before(secs(109)),
            Some(secs(100))
        );
        assert!(matches!(
            Schedule::cron("61 * * * *"),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(
            "*/10 * * * * *".parse::<Schedule>().unwrap(),
            every_ten_seconds
        );
    }
}
