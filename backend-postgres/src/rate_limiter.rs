//! The rate limiter: GCRA in one SQL function, `rate_limit` (`sql/rate_limiter.sql`),
//! on the row of `rate_limits` that holds the limiter's theoretical arrival time in µs
//! of the server's `clock_timestamp()`; see [`distsync_core::rate_limiter`].

use distsync_core::raw::Make;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use distsync_core::rate_limiter::{Admission, Rate, RateLimiter};
use distsync_core::{Error, Name, Result};

use crate::error::{map, BACKEND};
use crate::store::Shared;

/// A PostgreSQL rate limiter (see the module docs).
pub(crate) struct PgRateLimiter {
    pub(crate) shared: Arc<Shared>,
    pub(crate) name: Name,
    pub(crate) rate: Rate,
}

impl PgRateLimiter {
    async fn decide(&self, permits: u32) -> std::result::Result<String, sqlx::Error> {
        let interval = i64::try_from(self.rate.emission_interval_micros()).unwrap_or(i64::MAX);
        sqlx::query_scalar(&self.shared.sql("SELECT {s}.rate_limit($1, $2, $3, $4, $5)"))
            .bind(self.name.as_str())
            .bind(interval)
            .bind(i64::from(self.rate.burst()))
            .bind(i64::from(permits))
            .bind(self.rate.fingerprint())
            .fetch_one(self.shared.bounded())
            .await
    }
}

#[async_trait]
impl RateLimiter for PgRateLimiter {
    fn name(&self) -> &Name {
        &self.name
    }

    fn rate(&self) -> Rate {
        self.rate
    }

    async fn try_acquire(&self, permits: u32) -> Result<Admission> {
        self.rate.check_request(permits)?;
        let reply = self.decide(permits).await.map_err(map)?;
        let (tag, rest) = reply.split_at(reply.len().min(1));
        match (tag, rest.parse::<u64>()) {
            ("g", _) => Ok(Admission::Granted),
            ("d", Ok(wait)) => Ok(Admission::Denied {
                retry_after: Duration::from_micros(wait),
            }),
            ("m", _) => Err(self.rate.in_use_at_another_rate(&self.name, rest)),
            _ => Err(Error::backend(
                BACKEND,
                format!("unexpected rate_limit reply {reply:?}"),
            )),
        }
    }
}
impl Make<Arc<Shared>, (Name, Rate)> for PgRateLimiter {
    fn make(shared: &Arc<Shared>, (name, rate): (Name, Rate)) -> Result<Self> {
        Ok(Self {
            shared: Arc::clone(shared),
            name,
            rate,
        })
    }
}
