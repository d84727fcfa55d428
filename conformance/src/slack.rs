//! How close a case run came to its bounds.
//!
//! Every bounded wait of a case body (`within`, `eventually` and their
//! kin, a joined task) reports how long it took against its bound, and the run keeps
//! the tightest: the wait that used the largest share of its bound (the whole run
//! against [`crate::CASE_LIMIT`] counts as one). A case that holds after using 95 % of
//! a bound is the next flake on a busier machine; the matrix's JSON and JUnit output
//! carry that wait, and `scripts/slack.py` lists the cells with the least slack, so it
//! is seen before it fails.
//!
//! The meter is a tokio task-local set around the case body. Parts of a case spawned
//! through the harness's task type carry it into their task; a wait in a task spawned
//! otherwise is not seen.

use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;

tokio::task_local! {
    static METER: Arc<Mutex<Option<Tightest>>>;
}

/// The bounded wait of a case run that used the largest share of its bound.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Tightest {
    /// What was awaited, as the case describes it in evidence.
    pub what: String,
    /// How long it took (its bound, when it timed out).
    #[serde(rename = "took_ms", serialize_with = "millis")]
    pub took: Duration,
    /// Its bound.
    #[serde(rename = "bound_ms", serialize_with = "millis")]
    pub bound: Duration,
}

fn millis<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

impl Tightest {
    /// How much of the bound was left.
    pub fn slack(&self) -> Duration {
        self.bound.saturating_sub(self.took)
    }

    /// The share of the bound used, from 0 to 1 (a zero bound counts as used up).
    pub fn used(&self) -> f64 {
        share(self.took, self.bound)
    }

    /// The one of `self` and `other` that used more of its bound.
    pub(crate) fn tighter(self, other: Option<Self>) -> Self {
        match other {
            Some(other) if other.used() > self.used() => other,
            _ => self,
        }
    }
}

fn share(took: Duration, bound: Duration) -> f64 {
    if bound.is_zero() {
        return 1.0;
    }
    (took.as_secs_f64() / bound.as_secs_f64()).min(1.0)
}

/// Reports a bounded wait of the current case run: `what` took `took` of `bound`.
/// Outside a measured run it does nothing.
pub(crate) fn record(what: &dyn Display, took: Duration, bound: Duration) {
    let _ = METER.try_with(|meter| {
        let mut tightest = meter.lock().unwrap_or_else(PoisonError::into_inner);
        if tightest
            .as_ref()
            .is_none_or(|current| share(took, bound) > current.used())
        {
            *tightest = Some(Tightest {
                what: what.to_string(),
                took: took.min(bound),
                bound,
            });
        }
    });
}

/// Runs `fut` (a case body) with a meter of its own, and returns its output with the
/// tightest wait reported during it.
///
/// Cancel-safety: dropping the future drops `fut` and its meter; nothing is reported.
pub(crate) async fn measured<F: Future>(fut: F) -> (F::Output, Option<Tightest>) {
    let meter = Arc::new(Mutex::new(None));
    let output = METER.scope(Arc::clone(&meter), fut).await;
    let tightest = meter.lock().unwrap_or_else(PoisonError::into_inner).take();
    (output, tightest)
}

/// `fut`, its bounded waits not reported: for a window the case watches whose end is an
/// expected outcome, not a failure (how many acknowledgements come while a replica
/// lags), so that its bound, used up by design, does not read as the run's tightest.
///
/// Cancel-safety: as `fut`'s.
pub(crate) async fn unmeasured<F: Future>(fut: F) -> F::Output {
    METER.scope(Arc::new(Mutex::new(None)), fut).await
}

/// `fut`, reporting to the current run's meter when it runs in a task of its own (a
/// part of a case spawned by the harness's task type).
pub(crate) fn carried<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    let meter = METER.try_with(Arc::clone).ok();
    async move {
        match meter {
            Some(meter) => METER.scope(meter, fut).await,
            None => fut.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_wait_with_the_largest_share_of_its_bound_is_kept() {
        let (_, tightest) = measured(async {
            record(&"short", Duration::from_millis(400), Duration::from_secs(1));
            record(&"long", Duration::from_secs(30), Duration::from_secs(60));
            record(
                &"spawned",
                Duration::from_millis(100),
                Duration::from_millis(1000),
            );
            let part = tokio::spawn(carried(async {
                record(&"in a part", Duration::from_secs(4), Duration::from_secs(5));
            }));
            part.await.unwrap();
        })
        .await;
        let tightest = tightest.unwrap();
        assert_eq!(tightest.what, "in a part");
        assert_eq!(tightest.slack(), Duration::from_secs(1));
        assert!((tightest.used() - 0.8).abs() < 1e-9);
    }

    #[tokio::test]
    async fn a_timed_out_wait_uses_its_whole_bound_and_outside_a_run_nothing_is_kept() {
        record(
            &"unmeasured",
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        let (_, tightest) = measured(async {
            record(&"timed out", Duration::from_secs(7), Duration::from_secs(5));
        })
        .await;
        let tightest = tightest.unwrap();
        assert_eq!(tightest.took, tightest.bound);
        assert_eq!(tightest.slack(), Duration::ZERO);
        let (_, nothing) = measured(async {}).await;
        assert_eq!(nothing, None);
    }
}
