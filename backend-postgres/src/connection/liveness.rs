//! When the backend's pools test a connection before handing it out.
//!
//! sqlx's default (`test_before_acquire`) pings every connection it takes from a pool:
//! one more round trip before every statement, so two of the four round trips of an
//! uncontended lock cycle (75 to 100 µs each on a loopback server). The backend's pools
//! test a connection only when it may have died unnoticed:
//! - it has been idle for [`IDLE_TEST`] or more (the server may have restarted, or a
//!   proxy dropped it, in the meantime), or
//! - a connection of this process was found dead within the last [`TROUBLE_WINDOW`]:
//!   a restart or failover of the server kills every connection at once, and the
//!   first failure makes every later take test its connection (as sqlx's default
//!   does) until the pools hold live ones again. The notification listener, always
//!   reading, usually sees such a loss first (`notify`), before any statement fails.
//!
//! The holds' connections, kept out of their pool between statements
//! ([`crate::connection::reused`]), follow the same rule.
//!
//! A connection that dies while in use, or between a use and the next take less than
//! [`IDLE_TEST`] later with no failure seen meanwhile, fails its next statement with a
//! connection error, which every caller already handles (a transient error: retried by
//! waits and background work, returned by single calls); that failure opens the window.
//! A test that fails closes the connection and the pool takes or opens another, as
//! with sqlx's default. Pools the application hands over (`backend_from_pool`) keep
//! their own settings.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sqlx::pool::PoolConnectionMetadata;
use sqlx::{Connection, PgConnection};

/// A connection idle this long is tested before it is handed out.
pub(crate) const IDLE_TEST: Duration = Duration::from_secs(1);

/// After a connection of this process was found dead, every connection is tested
/// before it is handed out for this long.
pub(crate) const TROUBLE_WINDOW: Duration = Duration::from_secs(10);

/// When the process's clock for [`LAST_TROUBLE_MS`] starts.
static START: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds after [`START`] when a connection was last found dead, plus one (0:
/// never).
static LAST_TROUBLE_MS: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> u64 {
    u64::try_from(START.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Notes that a connection was found dead (see the module docs).
pub(crate) fn connection_failed() {
    LAST_TROUBLE_MS.store(now_ms().saturating_add(1), Ordering::Relaxed);
}

/// Whether a connection idle for `idle_for` is tested before it is handed out.
pub(crate) fn should_test(idle_for: Duration) -> bool {
    test_at(idle_for, now_ms(), LAST_TROUBLE_MS.load(Ordering::Relaxed))
}

/// [`should_test`] at `now` (ms after [`START`]), the last failure noted as
/// `last_trouble` (ms after [`START`] plus one; 0: never).
fn test_at(idle_for: Duration, now: u64, last_trouble: u64) -> bool {
    idle_for >= IDLE_TEST
        || (last_trouble > 0 && now.saturating_sub(last_trouble - 1) < millis(TROUBLE_WINDOW))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The pools' `before_acquire` hook: pings the connection when [`should_test`] says so.
/// A failed ping closes it (the pool takes or opens another).
pub(crate) fn before_acquire<'c>(
    conn: &'c mut PgConnection,
    meta: PoolConnectionMetadata,
) -> BoxFuture<'c, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        if should_test(meta.idle_for) {
            if let Err(error) = conn.ping().await {
                connection_failed();
                return Err(error);
            }
        }
        Ok(true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_connections_are_tested_and_busy_ones_only_within_the_window() {
        let window = millis(TROUBLE_WINDOW);
        let busy = Duration::from_millis(10);
        // No failure ever: only idle connections.
        assert!(!test_at(busy, 50_000, 0));
        assert!(test_at(IDLE_TEST, 50_000, 0));
        // A failure at 40 s (noted as 40_001): every take is tested until the window ends.
        assert!(test_at(busy, 40_000, 40_001));
        assert!(test_at(busy, 40_000 + window - 1, 40_001));
        assert!(!test_at(busy, 40_000 + window, 40_001));
        assert!(test_at(IDLE_TEST, 40_000 + window, 40_001));
    }

    #[test]
    fn a_noted_failure_opens_the_window_now() {
        connection_failed();
        assert!(should_test(Duration::ZERO));
    }
}
