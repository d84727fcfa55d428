//! A session killed by the store out of band, not through the library (etcd:
//! `etcdctl lease revoke`; Redis: the session key deleted, with no notification;
//! PostgreSQL: the session's row ended through `psql` with the schema's `end_sessions`,
//! as a revoke from another process would (sessions hold no connection to end); memory:
//! a frozen lease the store expires): the holder's guard and session see `lost()`,
//! `unlock()` reports the loss, and a waiter gets the lock with a higher token.

use distsync_core::Error;
use tokio::time::Instant;

use crate::cases::lock::held_and_awaited;
use crate::check::{ensure, secs, violated, within, Bounded, Check, Holds, PROMPT};
use crate::harness::Harness;

/// The case body (see the module docs).
pub(crate) async fn session_killed(h: Harness) -> Check {
    let (a, held, mut waiter) = held_and_awaited(&h).await?;
    let started = Instant::now();
    let how = within(
        PROMPT,
        "killing A's session out of band",
        h.faults().kill_session(&**h.backend(), a.id()),
    )
    .await?;
    let limit = h.fault_ttl() * 2 + PROMPT;
    if tokio::time::timeout(limit, held.lost()).await.is_err() {
        return violated(format!(
            "the guard's lost() had not fired {limit:?} after the kill ({how})"
        ));
    }
    let fired = started.elapsed();
    let left = limit.saturating_sub(started.elapsed());
    if tokio::time::timeout(left, a.lost()).await.is_err() {
        return violated(format!(
            "the guard's lost() fired but the session's had not {limit:?} after the kill ({how})"
        ));
    }
    let (guard, granted_at) = waiter.join(limit).await?;
    let granted = granted_at.saturating_duration_since(started);
    ensure!(
        guard.token() > held.token(),
        "B's token {} is not above the killed session's {}",
        guard.token(),
        held.token()
    );
    match held.unlock().await {
        Err(Error::SessionLost) | Err(Error::NotHeld) => {}
        Ok(()) => return violated("unlock() of a guard whose session was killed returned Ok"),
        Err(other) => {
            return violated(format!("unlock() after the kill: unexpected error {other}"))
        }
    }
    guard.unlock().bounded("B unlocking").await?;
    Ok(Holds::figure(
        format!(
            "lost() {} after the kill, lock re-granted after {}",
            secs(fired),
            secs(granted)
        ),
        format!("{how}; session TTL {:?}", h.fault_ttl()),
    ))
}
