//! The store's clock ([`distsync_kv::kv::Kv::clock`]): the server's time, read by the
//! server, so that every client of the store goes by one clock whatever its own says.
//! Queue items are dated by it, and the rate limiter's statement reads it in itself
//! ([`SERVER_TIME_US`], see `rate_limit.rs`).
//!
//! It is `UTC_TIMESTAMP(6)`, not `NOW(6)`: `NOW(6)` is in the session's time zone,
//! whose daylight-saving changes would move it an hour back and forth, and only the
//! leases' expiry (a comparison of two `NOW(6)` values on one server) can ignore that.

use std::time::Duration;

use distsync_core::{Error, Result};
use sqlx::MySqlPool;

use crate::error::map;
use crate::BACKEND;

/// The server's UTC time in microseconds since the Unix epoch, as an SQL expression
/// (a signed `BIGINT`).
pub(crate) const SERVER_TIME_US: &str =
    "TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6))";

/// The server's time, in microseconds since the Unix epoch.
///
/// Cancel safety: cancel-safe; it only reads.
pub(crate) async fn now(pool: &MySqlPool) -> Result<Duration> {
    let micros: i64 = sqlx::query_scalar(&format!("SELECT {SERVER_TIME_US}"))
        .fetch_one(pool)
        .await
        .map_err(map)?;
    since_epoch(micros)
}

/// A reading of [`SERVER_TIME_US`] as a duration; a server whose clock reads before 1970 is
/// misconfigured, and its answer an error rather than a time every limiter would trust.
fn since_epoch(micros: i64) -> Result<Duration> {
    u64::try_from(micros)
        .map(Duration::from_micros)
        .map_err(|_| {
            Error::backend(
                BACKEND,
                format!("the server's clock reads {micros} µs since 1970 (before the Unix epoch)"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_before_the_epoch_is_an_error() {
        assert_eq!(
            since_epoch(1_500_000).unwrap(),
            Duration::from_micros(1_500_000)
        );
        assert!(matches!(since_epoch(-1), Err(Error::Backend { .. })));
    }
}
