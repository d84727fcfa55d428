//! The rate limiter over a key-value store that has a clock of its own
//! ([`Kv::clock`]): GCRA with the theoretical arrival time in one key (see
//! [`distsync_core::rate_limiter`]), decided by the store in one request where it can
//! ([`Kv::rate_limit`]), else here, by a compare-and-swap on the key's revision.
//!
//! The key is `<ns>/ratelimit/<escaped name>` (in the reserved area, whatever the
//! layout: Go's recipes have no rate limiter to share keys with) and its value is
//! `<tat in µs> <rate fingerprint>`, whichever way it is decided, so that `status`
//! reads every store's limiters alike. It carries no lease: an idle limiter's key says
//! nothing a missing key would not, and is overwritten by the next grant.

use std::sync::Arc;

use async_trait::async_trait;

use super::key::escape;
use crate::kv::{Compare, CompareOp, Kv, Range, RateDecision, Txn, TxnOp};
use distsync_core::error::{Error, Result};
use distsync_core::name::Name;
use distsync_core::rate_limiter::{gcra, Admission, Rate};
use distsync_core::raw::{RateStep, RateStepLimiter};

/// The key segment of rate limiters in the reserved area.
pub(crate) const WORD: &str = "ratelimit";

/// A rate limiter's key on a [`Kv`] with a clock, and the store that decides on it:
/// the step of the limiter [`KvRateStep::limiter`] makes.
pub(crate) struct KvRateStep {
    kv: Arc<dyn Kv>,
    key: String,
}

impl std::fmt::Debug for KvRateStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvRateStep")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl KvRateStep {
    /// The rate limiter `name` at `rate` on `kv`, under `namespace`.
    pub(crate) fn limiter(
        kv: Arc<dyn Kv>,
        namespace: &str,
        name: Name,
        rate: Rate,
    ) -> RateStepLimiter<Self> {
        let step = Self {
            key: format!("{namespace}/{WORD}/{}", escape(name.as_str())),
            kv,
        };
        RateStepLimiter::new(name, rate, step)
    }

    /// The store's time in microseconds.
    async fn now_us(&self) -> Result<u64> {
        let now = self.kv.clock().await?.ok_or_else(|| {
            Error::unsupported(self.kv.backend(), "rate limiter (no store clock)")
        })?;
        Ok(u64::try_from(now.as_micros()).unwrap_or(u64::MAX))
    }

    /// GCRA by a read of the key, a read of the store's clock and a compare-and-swap
    /// on the key's revision, for a store that decides nothing in one request.
    async fn compare_and_swap(&self, name: &Name, rate: &Rate, permits: u32) -> Result<Admission> {
        let fingerprint = rate.fingerprint();
        loop {
            let read = self.kv.range(Range::key(self.key.clone())).await?;
            let stored = read.kvs.first();
            let revision = stored.map_or(0, |kv| kv.mod_revision);
            // Read after the range, never beside it: the clock then sits between the
            // read and the compare-and-swap, so the decisions that commit go by times
            // that only grow (each read sees the last commit, made on an earlier
            // time), and a `now` earlier than the commit only refuses more.
            let now = self.now_us().await?;
            let tat = match stored.and_then(|kv| parse(&kv.value)) {
                Some((tat, theirs)) if tat > now => {
                    if theirs != fingerprint {
                        return Err(rate.in_use_at_another_rate(name, theirs));
                    }
                    Some(tat)
                }
                _ => None,
            };
            let (admission, new_tat) = gcra(rate, tat, now, permits);
            let (Admission::Granted, Some(new_tat)) = (admission, new_tat) else {
                return Ok(admission);
            };
            let unchanged = Compare::mod_revision(self.key.clone(), CompareOp::Equal, revision);
            let granted = TxnOp::put(self.key.clone(), format!("{new_tat} {fingerprint}"), 0);
            let txn = Txn::when(vec![unchanged]).and_then(vec![granted]);
            if self.kv.txn(txn).await?.succeeded {
                return Ok(Admission::Granted);
            }
            tracing::trace!(limiter = %name, "rate limiter: lost a race, deciding again");
        }
    }
}

/// Parses a stored `<tat> <fingerprint>`; `None` for a value this recipe did not write
/// (treated as an idle limiter and overwritten by the next grant).
pub(super) fn parse(value: &[u8]) -> Option<(u64, &str)> {
    let text = std::str::from_utf8(value).ok()?;
    let (tat, fingerprint) = text.split_once(' ')?;
    Some((tat.parse().ok()?, fingerprint))
}

#[async_trait]
impl RateStep for KvRateStep {
    async fn step(&self, name: &Name, rate: &Rate, permits: u32) -> Result<Admission> {
        match self.kv.rate_limit(&self.key, rate, permits).await? {
            Some(RateDecision::Decided(admission)) => Ok(admission),
            Some(RateDecision::OtherRate(theirs)) => {
                Err(rate.in_use_at_another_rate(name, &theirs))
            }
            None => self.compare_and_swap(name, rate, permits).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::memory::MemoryBackend;
    use distsync_core::rate_limiter::Rate;
    use distsync_core::{Coordinator, Error};

    #[tokio::test]
    async fn the_burst_is_granted_then_the_rate_and_other_rates_are_refused() {
        let a = Coordinator::new(MemoryBackend::shared("rate-limiter-test"));
        let b = Coordinator::new(MemoryBackend::shared("rate-limiter-test"));
        let rate = Rate::new(3, Duration::from_secs(60)).unwrap();
        let first = a.rate_limiter("api", rate).unwrap();
        let second = b.rate_limiter("api", rate).unwrap();
        assert!(first.try_acquire(2).await.unwrap().is_granted());
        assert!(second.try_acquire(1).await.unwrap().is_granted());
        // The burst of 3 is spent across both handles: the next permit is ~20 s away.
        let denied = second.try_acquire(1).await.unwrap().retry_after().unwrap();
        assert!(denied > Duration::from_secs(19) && denied <= Duration::from_secs(20));
        assert!(matches!(
            distsync_core::timeout(Duration::from_millis(50), first.acquire(1)).await,
            Err(Error::Timeout(_))
        ));
        let other = b
            .rate_limiter("api", Rate::new(5, Duration::from_secs(60)).unwrap())
            .unwrap();
        assert!(matches!(
            other.try_acquire(1).await,
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            first.try_acquire(4).await,
            Err(Error::InvalidArgument(_))
        ));
        // Another name is another limiter.
        let fresh = a.rate_limiter("api/other", rate).unwrap();
        assert!(fresh.try_acquire(3).await.unwrap().is_granted());
    }

    #[tokio::test]
    async fn acquire_waits_for_the_permit() {
        let coordinator = Coordinator::new(MemoryBackend::new());
        let limiter = coordinator
            .rate_limiter("tick", "1/100ms".parse().unwrap())
            .unwrap();
        limiter.acquire(1).await.unwrap();
        let started = tokio::time::Instant::now();
        limiter.acquire(1).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(90));
    }
}
