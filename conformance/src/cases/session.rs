//! Session cases: what closing a session releases, and a session killed by the store
//! out of band.

use distsync_core::{Bytes, Error};
use tokio::time::Instant;

use super::lock::held_and_awaited;
use super::{boxed, LOST};
use crate::case::{Case, Claim, Group, Need};
use crate::check::{
    ensure, eventually, ms, secs, violated, within, Bounded, Check, Context, Holds, PROMPT,
};
use crate::faults::Hook;
use crate::harness::Harness;

/// The session cases, in matrix order.
pub(super) const CASES: &[Case] = &[
    Case {
        id: "session_close_releases_all",
        group: Group::Session,
        guarantee: "close() releases lock, leadership and write lock",
        needs: &[Need::Lock],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(close_releases_all(h)),
    },
    Case {
        id: "session_store_kill",
        group: Group::Session,
        guarantee: "a session killed by the store out of band: lost() fires, the lock frees",
        needs: &[Need::Lock],
        claim: LOST,
        hooks: &[Hook::KillSession],
        run: |h| boxed(store_kill(h)),
    },
];

/// `close()` releases everything held through the session at once: a lock, and where
/// the backend offers them, a leadership and a write lock, all held through one
/// session. Afterwards the guards report `is_lost()`, and another session can take
/// the lock and the write lock and win the election; the figure is the time from
/// `close()` returning until all three were taken by the other session.
async fn close_releases_all(h: Harness) -> Check {
    let caps = h.capabilities().clone();
    let lock_name = h.name("mutex").ctx("naming the lock")?;
    let election_name = h.name("election").ctx("naming the election")?;
    let rwlock_name = h.name("rwlock").ctx("naming the rwlock")?;
    let closing = h.session().set_up("opening the session to close").await?;
    let other = h.session().set_up("opening another session").await?;

    let guard = within(
        PROMPT,
        "locking",
        h.backend()
            .locker(&closing, lock_name.clone())
            .ctx("making a locker")?
            .lock(),
    )
    .await?;
    let leadership = if caps.election {
        let election = h
            .backend()
            .election(&closing, election_name.clone())
            .ctx("making an election")?;
        Some(
            within(
                PROMPT,
                "campaigning",
                election.campaign(Bytes::from_static(b"closing")),
            )
            .await?,
        )
    } else {
        None
    };
    let write = if caps.rwlock {
        let rwlock = h
            .backend()
            .rwlock(&closing, rwlock_name.clone())
            .ctx("making an rwlock")?;
        Some(within(PROMPT, "write-locking", rwlock.write()).await?)
    } else {
        None
    };

    within(PROMPT, "closing the session", closing.close()).await?;
    let closed = Instant::now();
    ensure!(
        closing.is_lost(),
        "after close() the session's is_lost() is false"
    );
    ensure!(
        guard.is_lost(),
        "after close() the lock guard's is_lost() is false"
    );
    let mut covered = vec!["lock"];

    let locker = h
        .backend()
        .locker(&other, lock_name)
        .ctx("making the other locker")?;
    let taken = eventually(
        PROMPT,
        "another session taking the lock after close()",
        || async { locker.try_lock().await.ctx("try_lock by another session") },
    )
    .await?;
    taken.unlock().bounded("unlocking").await?;

    if let Some(leadership) = &leadership {
        ensure!(
            leadership.is_lost(),
            "after close() the leadership's is_lost() is false"
        );
        let election = h
            .backend()
            .election(&other, election_name)
            .ctx("making the other election")?;
        let won = within(
            PROMPT,
            "another session campaigning after close()",
            election.campaign(Bytes::from_static(b"next")),
        )
        .await?;
        won.resign().bounded("resigning").await?;
        covered.push("election");
    }
    if let Some(write) = &write {
        ensure!(
            write.is_lost(),
            "after close() the write guard's is_lost() is false"
        );
        let rwlock = h
            .backend()
            .rwlock(&other, rwlock_name)
            .ctx("making the other rwlock")?;
        let taken = eventually(
            PROMPT,
            "another session write-locking after close()",
            || async { rwlock.try_write().await.ctx("try_write by another session") },
        )
        .await?;
        taken.unlock().bounded("unlocking the write lock").await?;
        covered.push("rwlock");
    }
    let took = closed.elapsed();
    drop((guard, leadership, write));
    Ok(Holds::figure(
        format!("all taken over within {}", ms(took)),
        format!(
            "close() released {} held through one session",
            covered.join(" + ")
        ),
    ))
}

/// A session killed by the store out of band, not through the library (etcd:
/// `etcdctl lease revoke`; Redis: the session key deleted, with no notification;
/// PostgreSQL: the session's row ended through `psql` with the schema's `end_sessions`,
/// as a revoke from another process would (sessions hold no connection to end); memory:
/// a frozen lease the store expires): the holder's guard and session see `lost()`,
/// `unlock()` reports the loss, and a waiter gets the lock with a higher token.
async fn store_kill(h: Harness) -> Check {
    let (a, held, mut waiter) = held_and_awaited(&h, distsync_core::Fairness::Fair).await?;
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
