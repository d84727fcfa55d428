//! The rate limiter: GCRA (see [`distsync_core::rate_limiter`]) on one key,
//! `ratelimit.<name>`, changed by compare-and-set on its sequence, with the server's
//! message time stamps as the only clock (`src/clock.rs`).
//!
//! # The key
//!
//! The key holds a [`StampedTat`] record, whose theoretical arrival time (TAT) counts
//! from `stamp`, the time JetStream stored the key's message: a grant writes without
//! knowing when its write lands, JetStream stamps it, and so every grant is GCRA's step
//! at the instant the stream stored it (see [`StampedTat`]).
//!
//! # A request
//!
//! A request writes the clock key and lists it with the limiter's key (two round
//! trips, see `src/clock.rs`): the listing is at or after the clock's write, so the
//! key is read as of "now" or later. It runs GCRA ([`StampedTat::decide`]) at that
//! "now" and, when granted, writes the new record with
//! `Nats-Expected-Last-Subject-Sequence` = the sequence read (0 where the key has no
//! message): a third round trip. A compare that lost a race wrote nothing; the
//! request reads the key again and decides at the same "now" (still earlier than its
//! next write), and reads the clock again only if that decision is a refusal. A
//! denial writes nothing but the clock.
//!
//! # Why a "now" read early is only stricter
//!
//! The clock is read before the grant is stored, so `now ≤ stamp`. GCRA grants at
//! `now` only when `max(TAT, now) + n·T − B·T ≤ now`, and the left side minus `now` does
//! not grow as time passes: a request granted at `now` is granted at `stamp` too, and
//! the key records the step at `stamp`. An early `now` can refuse what `stamp` would
//! have granted, with a `retry_after` up to a round trip too long; it never grants
//! more. The grants stored in any window `[t0, t1]` of the server's clock number at
//! most `B + (t1 − t0)/T`, as on the stores that read their clock in the deciding step
//! (Redis, PostgreSQL). A replicated stream's time stamps are its leader's: after a
//! failover the new leader's clock decides, and a TAT never moves back (`base` keeps
//! it), as on a Redis or PostgreSQL failover.
//!
//! # Lost replies, rates, status and migration
//!
//! A grant whose answer is lost (a timeout, a dropped connection) may have been
//! stored: the request answers the error and is not sent again, so such a permit
//! counts against the limit unseen (stricter, never looser). While the TAT is in the
//! future a request at another rate gets [`Error::InvalidArgument`]; once it has
//! passed, the next grant's rate takes over, as on every backend. A key holding
//! anything else is refused with [`Error::Backend`] rather than overwritten. `status`
//! lists every limiter with its rate and next due time on the server's clock;
//! `export` skips them, as migration copies no limiter's state on any backend. A
//! limiter keeps nothing of a session.

use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::rate_limiter::{Admission, Rate};
use distsync_core::raw::{Make, RateStep, RateStepLimiter, StampedRead, StampedStore, StampedTat};
use distsync_core::{Error, Name, Result};

use crate::clock;
use crate::keys::{self, Kind};
use crate::shared::Shared;
use crate::store::{Entry, Write};
use crate::BACKEND;

/// A limiter key's record and the TAT it gives; `None` for a missing key or a
/// tombstone (an idle limiter).
///
/// # Errors
/// [`Error::Backend`] for a key holding something a limiter does not write.
pub(crate) fn recorded(entry: &Entry) -> Result<Option<(StampedTat, u64)>> {
    if !entry.live() {
        return Ok(None);
    }
    match StampedTat::parse(&entry.value) {
        Ok(Some(record)) => {
            let tat = record.tat_us(entry.stamp_us()?);
            Ok(Some((record, tat)))
        }
        Ok(None) | Err(_) => Err(Error::backend(
            BACKEND,
            format!("{} does not hold a rate limiter", entry.key),
        )),
    }
}

/// The rate limiter `name` at `rate` (see the module docs).
pub(crate) type NatsRateLimiter = RateStepLimiter<NatsRateStep>;

/// A limiter's key, decided by [`StampedTat::acquire`].
pub(crate) struct NatsRateStep {
    shared: Arc<Shared>,
    key: String,
}

#[async_trait]
impl StampedStore for NatsRateStep {
    /// The sequence of the key's last message (0: it has none).
    type Version = u64;

    async fn read(&self, kept_now_us: Option<u64>) -> Result<StampedRead<u64>> {
        let (now_us, entry) = match kept_now_us {
            Some(now) => (now, self.shared.store.last(&self.key).await?),
            None => {
                let keys = [self.key.clone()];
                let (now, entries) = clock::now_with(&self.shared.store, &keys).await?;
                (now, entries.into_iter().find(|e| e.key == self.key))
            }
        };
        Ok(StampedRead {
            now_us,
            record: entry.as_ref().map(recorded).transpose()?.flatten(),
            version: entry.as_ref().map_or(0, |entry| entry.seq),
        })
    }

    async fn write_if(&self, seq: u64, record: &StampedTat) -> Result<bool> {
        let write = Write::put(self.key.as_str(), record.render()).if_at(seq);
        let store = &self.shared.store;
        Ok(store.publish(write).await?.compared()?.is_some())
    }
}

#[async_trait]
impl RateStep for NatsRateStep {
    async fn step(&self, name: &Name, rate: &Rate, permits: u32) -> Result<Admission> {
        StampedTat::acquire(self, rate, name, permits).await
    }
}

impl Make<Arc<Shared>, Name> for NatsRateStep {
    fn make(shared: &Arc<Shared>, name: Name) -> Result<Self> {
        Ok(Self {
            key: keys::key(Kind::RateLimit, &name),
            shared: Arc::clone(shared),
        })
    }
}
