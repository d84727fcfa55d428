//! A rate limiter's state on a store that stamps each write with its own time but has
//! no request that reads the time in the step that decides: see [`StampedTat`], and
//! [`StampedTat::acquire`], the request such a store runs with its [`StampedStore`]
//! reads and writes.

use async_trait::async_trait;

use crate::error::Result;
use crate::name::Name;
use crate::rate_limiter::{Admission, Rate, gcra};

/// What a request decided on a stamped record ([`StampedTat::decide`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StampedStep {
    /// Granted at `now`: the request holds once this record is written in place of
    /// the one read (by a compare on what was read; a lost race decides again).
    Write(StampedTat),
    /// Refused at `now`: nothing is written.
    Refused(Admission),
}

/// A limiter's stored record, `<base µs> <added µs> <rate fingerprint>` in decimal
/// text, on a store that stamps each write with its own time but has no request that
/// reads the time in the step that decides (ZooKeeper's `mtime`, JetStream's message
/// time stamp).
///
/// GCRA ([`crate::rate_limiter::gcra`]) decides at a "now" read before the grant's
/// write, and the write lands a round trip later. A record of `base` (the TAT the grant
/// read) and `added` (`n·T`) whose TAT is `max(base, stamp) + added`, `stamp` being the
/// store's time of the write that stored it, makes every grant GCRA's step at the
/// instant the store applied it: a limiter idle when read starts its TAT from the
/// grant's own time, never from the earlier reading. Since `now ≤ stamp`, a request
/// granted at `now` is granted at `stamp` too, so the early reading can only refuse
/// more, never grant more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StampedTat {
    base_us: u64,
    added_us: u64,
    fingerprint: String,
}

impl StampedTat {
    /// The record of a grant of `permits` permits at `rate` that read the TAT `tat_us`
    /// (`None`: an idle limiter, whose TAT is the grant's own stamp).
    pub fn granted(rate: &Rate, tat_us: Option<u64>, permits: u32) -> Self {
        Self {
            base_us: tat_us.unwrap_or(0),
            added_us: rate
                .emission_interval_micros()
                .saturating_mul(u64::from(permits)),
            fingerprint: rate.fingerprint(),
        }
    }

    /// Parses a stored record; `Ok(None)` for an empty value (a store's placeholder,
    /// such as a ZooKeeper node that is only the parent of a longer name), `Err(())`
    /// for anything a limiter does not write.
    ///
    /// # Errors
    /// [`NotStampedTat`] for a value that is not such a record.
    pub fn parse(data: &[u8]) -> Result<Option<Self>, NotStampedTat> {
        if data.is_empty() {
            return Ok(None);
        }
        let text = std::str::from_utf8(data).map_err(|_| NotStampedTat)?;
        let mut parts = text.splitn(3, ' ');
        let mut number = || {
            parts
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or(NotStampedTat)
        };
        let (base_us, added_us) = (number()?, number()?);
        let fingerprint = (parts.next())
            .filter(|p| !p.is_empty())
            .ok_or(NotStampedTat)?;
        Ok(Some(Self {
            base_us,
            added_us,
            fingerprint: fingerprint.to_owned(),
        }))
    }

    /// The text to store.
    pub fn render(&self) -> String {
        format!("{} {} {}", self.base_us, self.added_us, self.fingerprint)
    }

    /// The TAT in µs of a record stored by a write the store stamped `stamp_us`.
    pub fn tat_us(&self, stamp_us: u64) -> u64 {
        self.base_us.max(stamp_us).saturating_add(self.added_us)
    }

    /// GCRA's step at `now_us` for `permits` permits at `rate` on the limiter `name`,
    /// whose record was read as `read` (with the TAT it gives, see
    /// [`StampedTat::tat_us`]; `None`: no record, an idle limiter). A passed TAT is an
    /// idle limiter, which any rate takes over.
    ///
    /// # Errors
    /// [`Rate::in_use_at_another_rate`] while the TAT is live and was written at
    /// another rate.
    pub fn decide(
        rate: &Rate,
        name: &Name,
        read: Option<(&StampedTat, u64)>,
        now_us: u64,
        permits: u32,
    ) -> Result<StampedStep> {
        let tat = match read {
            Some((record, tat)) if tat > now_us && record.fingerprint != rate.fingerprint() => {
                return Err(rate.in_use_at_another_rate(name, &record.fingerprint));
            }
            Some((_, tat)) => Some(tat),
            None => None,
        };
        Ok(match gcra(rate, tat, now_us, permits) {
            (Admission::Granted, _) => StampedStep::Write(Self::granted(rate, tat, permits)),
            (refused, _) => StampedStep::Refused(refused),
        })
    }

    /// The [`Rate::fingerprint`] of the rate the record was written at.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The rate the record was written at (`None`: not a fingerprint).
    pub fn rate(&self) -> Option<Rate> {
        Rate::from_fingerprint(&self.fingerprint)
    }
}

/// What [`StampedStore::read`] read: the store's "now" and the limiter's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StampedRead<V> {
    /// The store's time in µs, read before the record.
    pub now_us: u64,
    /// The record and the TAT it gives ([`StampedTat::tat_us`]); `None`: no record,
    /// an idle limiter.
    pub record: Option<(StampedTat, u64)>,
    /// What a write of the next record compares with: the version read.
    pub version: V,
}

/// A store's reads and compared write of a limiter's [`StampedTat`] record, which
/// [`StampedTat::acquire`] decides a request with.
#[async_trait]
pub trait StampedStore: Send + Sync {
    /// The version of a record that a write compares with (a sequence, a data version).
    type Version: Send;

    /// Reads the limiter's record, and the store's "now" before it: `kept_now_us` when
    /// given (a reading kept from a race lost since, still earlier than the next
    /// write), else a fresh reading of the store's clock, read so that the record is
    /// as of that time or later.
    ///
    /// # Errors
    /// [`crate::Error::Backend`] for a record a limiter does not write; the store's
    /// error.
    ///
    /// # Cancel safety
    /// Cancel safe: it writes nothing but, for a fresh "now", the store's clock.
    async fn read(&self, kept_now_us: Option<u64>) -> Result<StampedRead<Self::Version>>;

    /// Writes `record` if the limiter's record is still at `version`; `Ok(false)` when
    /// it changed meanwhile (nothing written).
    ///
    /// # Errors
    /// The store's error, after which the record may or may not be written.
    ///
    /// # Cancel safety
    /// Not cancel safe: a dropped call may have written the record, which then counts
    /// its permits unseen (stricter, never looser).
    async fn write_if(&self, version: Self::Version, record: &StampedTat) -> Result<bool>;
}

impl StampedTat {
    /// A request for `permits` permits (already checked against `rate`) on the limiter
    /// `name` that `store` keeps: reads "now" and the record, decides
    /// ([`StampedTat::decide`]) and, when granted, writes the next record by a compare
    /// on the version read. A compare that lost a race decides again at the same "now",
    /// which is still earlier than the next write (so only stricter, see
    /// [`StampedTat`]) and saves a reading of the clock; a refusal at such a kept
    /// reading decides again at a fresh one, so that the answer and its `retry_after`
    /// are today's. A refusal writes nothing but the clock.
    ///
    /// # Errors
    /// As [`StampedTat::decide`] and the store's reads and write.
    ///
    /// # Cancel safety
    /// Cancel safe in that it never takes more than asked: a dropped call counted its
    /// permits (a write that landed) or nothing.
    pub async fn acquire<S: StampedStore + ?Sized>(
        store: &S,
        rate: &Rate,
        name: &Name,
        permits: u32,
    ) -> Result<Admission> {
        let mut kept: Option<u64> = None;
        loop {
            let fresh = kept.is_none();
            let read = store.read(kept.take()).await?;
            let record = read.record.as_ref().map(|(record, tat)| (record, *tat));
            match Self::decide(rate, name, record, read.now_us, permits)? {
                StampedStep::Refused(admission) if fresh => return Ok(admission),
                StampedStep::Refused(_) => continue,
                StampedStep::Write(record) => {
                    if store.write_if(read.version, &record).await? {
                        return Ok(Admission::Granted);
                    }
                }
            }
            kept = Some(read.now_us);
            tracing::trace!(limiter = %name, "rate limiter: lost a race, deciding again");
        }
    }
}

/// A stored value that is not a [`StampedTat`] record: something other than a rate
/// limiter wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotStampedTat;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn records_parse_and_render() {
        let rate = Rate::new(10, Duration::from_millis(200))
            .unwrap()
            .with_burst(5)
            .unwrap();
        let record = StampedTat::granted(&rate, Some(1_700_000_000_123_456), 1);
        let text = record.render();
        assert_eq!(
            text,
            format!("1700000000123456 20000 {}", rate.fingerprint())
        );
        assert_eq!(StampedTat::parse(text.as_bytes()), Ok(Some(record.clone())));
        assert_eq!(StampedTat::parse(b""), Ok(None));
        for bad in [&b"12"[..], b"x 1 1/1/1", b"1 2 ", b"1 x 1/1/1", b"\xff"] {
            assert_eq!(StampedTat::parse(bad), Err(NotStampedTat), "{bad:?}");
        }
        assert_eq!(record.rate(), Some(rate));
    }

    #[test]
    fn a_live_record_of_another_rate_refuses_and_an_idle_one_is_taken_over() {
        let name = Name::new("api").unwrap();
        let ours = Rate::new(1, Duration::from_secs(1)).unwrap();
        let theirs = Rate::new(2, Duration::from_secs(1)).unwrap();
        let record = StampedTat::granted(&theirs, None, 1);
        let tat = record.tat_us(10_000_000);
        let live = StampedTat::decide(&ours, &name, Some((&record, tat)), tat - 1, 1);
        assert!(
            matches!(live, Err(crate::Error::InvalidArgument(_))),
            "{live:?}"
        );
        let idle = StampedTat::decide(&ours, &name, Some((&record, tat)), tat, 1).unwrap();
        assert_eq!(
            idle,
            StampedStep::Write(StampedTat::granted(&ours, Some(tat), 1))
        );
        let first = StampedTat::decide(&ours, &name, None, tat, 1).unwrap();
        assert_eq!(
            first,
            StampedStep::Write(StampedTat::granted(&ours, None, 1))
        );
        // The burst of 1 spent: refused until the TAT passes, nothing to write.
        let spent = StampedTat::granted(&ours, None, 1);
        let refused = StampedTat::decide(&ours, &name, Some((&spent, 5_000_000)), 4_500_000, 1);
        assert!(matches!(
            refused,
            Ok(StampedStep::Refused(Admission::Denied { .. }))
        ));
    }

    /// A store whose writes land at its clock's time, and whose first write loses to
    /// a competitor's record, stored in its place.
    struct Racing {
        state: std::sync::Mutex<RacingState>,
    }

    struct RacingState {
        clock_us: u64,
        stored: Option<(StampedTat, u64)>,
        version: u64,
        competitor: Option<StampedTat>,
        kept_readings: Vec<Option<u64>>,
    }

    /// A request for one permit at `rate` at 10 s whose first write loses to a
    /// competitor's grant of one permit: its answer, the readings it was handed
    /// (`None`: fresh) and the writes stored.
    async fn acquire_after_a_lost_race(rate: Rate) -> (Admission, Vec<Option<u64>>, u64) {
        let state = RacingState {
            clock_us: 10_000_000,
            stored: None,
            version: 0,
            competitor: Some(StampedTat::granted(&rate, None, 1)),
            kept_readings: Vec::new(),
        };
        let store = Racing {
            state: std::sync::Mutex::new(state),
        };
        let name = Name::new("api").unwrap();
        let answer = StampedTat::acquire(&store, &rate, &name, 1).await.unwrap();
        let state = store.state.into_inner().unwrap();
        (answer, state.kept_readings, state.version)
    }

    #[async_trait]
    impl StampedStore for Racing {
        type Version = u64;

        async fn read(&self, kept_now_us: Option<u64>) -> Result<StampedRead<u64>> {
            let mut state = self.state.lock().unwrap();
            state.kept_readings.push(kept_now_us);
            let record = (state.stored.as_ref()).map(|(r, stamp)| (r.clone(), r.tat_us(*stamp)));
            Ok(StampedRead {
                now_us: kept_now_us.unwrap_or(state.clock_us),
                record,
                version: state.version,
            })
        }

        async fn write_if(&self, version: u64, record: &StampedTat) -> Result<bool> {
            let mut state = self.state.lock().unwrap();
            let (record, won) = match state.competitor.take() {
                Some(theirs) => (theirs, false),
                None if version == state.version => (record.clone(), true),
                None => return Ok(false),
            };
            state.stored = Some((record, state.clock_us));
            state.version += 1;
            Ok(won)
        }
    }

    #[tokio::test]
    async fn a_lost_race_decides_again_at_the_kept_reading() {
        let rate = Rate::new(2, Duration::from_secs(2)).unwrap();
        let (answer, readings, writes) = acquire_after_a_lost_race(rate).await;
        assert_eq!(answer, Admission::Granted);
        assert_eq!(readings, [None, Some(10_000_000)]);
        assert_eq!(writes, 2);
    }

    #[tokio::test]
    async fn a_refusal_at_a_kept_reading_is_decided_again_at_a_fresh_one() {
        let rate = Rate::new(1, Duration::from_secs(1)).unwrap();
        let (answer, readings, writes) = acquire_after_a_lost_race(rate).await;
        // The competitor's permit, stored at 10 s, is due again at 11 s.
        let retry_after = Duration::from_secs(1);
        assert_eq!(answer, Admission::Denied { retry_after });
        assert_eq!(readings, [None, Some(10_000_000), None]);
        assert_eq!(writes, 1);
    }

    #[test]
    fn the_tat_starts_from_the_later_of_base_and_stamp() {
        let rate = Rate::new(1, Duration::from_millis(1)).unwrap();
        let record = StampedTat::granted(&rate, Some(5_000_000), 1);
        // Stored before the base passed: the base counts.
        assert_eq!(record.tat_us(4_000_000), 5_001_000);
        // After: the write's own time counts, not an earlier reading.
        assert_eq!(record.tat_us(6_000_000), 6_001_000);
        // An idle limiter's grant starts from its own stamp.
        assert_eq!(
            StampedTat::granted(&rate, None, 2).tat_us(7_000_000),
            7_002_000
        );
    }
}
