//! The rate limiter: GCRA in one SQL function, `rate_limit` (`sql/rate_limiter.sql`),
//! on the row of `rate_limits` that holds the limiter's theoretical arrival time in µs
//! of the server's `clock_timestamp()`; see [`distsync_core::rate_limiter`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use distsync_core::rate_limiter::{Admission, Rate};
use distsync_core::raw::{Make, RateStep, RateStepLimiter};
use distsync_core::{Error, Name, Result};

use crate::error::{map, BACKEND};
use crate::store::Shared;

/// A PostgreSQL rate limiter (see the module docs).
pub(crate) type PgRateLimiter = RateStepLimiter<PgRateStep>;

/// The `rate_limit` function's caller: every limiter is a row of one table, named in
/// the call.
pub(crate) struct PgRateStep {
    shared: Arc<Shared>,
}

#[async_trait]
impl RateStep for PgRateStep {
    async fn step(&self, name: &Name, rate: &Rate, permits: u32) -> Result<Admission> {
        let interval = i64::try_from(rate.emission_interval_micros()).unwrap_or(i64::MAX);
        let reply: String =
            sqlx::query_scalar(&self.shared.sql("SELECT {s}.rate_limit($1, $2, $3, $4, $5)"))
                .bind(name.as_str())
                .bind(interval)
                .bind(i64::from(rate.burst()))
                .bind(i64::from(permits))
                .bind(rate.fingerprint())
                .fetch_one(self.shared.bounded())
                .await
                .map_err(map)?;
        let (tag, rest) = reply.split_at(reply.len().min(1));
        match (tag, rest.parse::<u64>()) {
            ("g", _) => Ok(Admission::Granted),
            ("d", Ok(wait)) => Ok(Admission::Denied {
                retry_after: Duration::from_micros(wait),
            }),
            ("m", _) => Err(rate.in_use_at_another_rate(name, rest)),
            _ => Err(Error::backend(
                BACKEND,
                format!("unexpected rate_limit reply {reply:?}"),
            )),
        }
    }
}

impl Make<Arc<Shared>, Name> for PgRateStep {
    fn make(shared: &Arc<Shared>, _: Name) -> Result<Self> {
        Ok(Self {
            shared: Arc::clone(shared),
        })
    }
}
