//! A release during a leader change completes: a lock held through a session with a
//! long TTL is unlocked right after the cluster's leader member is stopped; the
//! release rides out the election (retried through transient failures, or, if it
//! cannot finish, the session is revoked so the store frees the key), and a waiter of
//! another session is granted the lock well before the holder's TTL could have freed
//! it. Without the retry, the key would stay attached to a lease the keepalive renews,
//! and nobody would get the lock until the process exits.
//!
//! The member is stopped with the cluster hook and started again before the case
//! ends, whatever happens.

use std::time::Duration;

use distsync_core::SessionOptions;
use tokio::time::Instant;

use super::cluster::{connect_cluster, leader_of, Restart};
use crate::check::{
    ensure, secs, within, within_check, Bounded, Check, Context, Holds, Task, LONG, PROMPT,
};
use crate::harness::Harness;

/// The TTL of both sessions: twice [`LONG`], the longest the case waits for the
/// release and the grant (an election on a loaded machine has taken over 30 s), so a
/// grant within it cannot come from the holder's lease running out.
const LONG_TTL: Duration = Duration::from_secs(120);

/// The case body (see the module docs).
pub(super) async fn release_during_leader_change(h: Harness) -> Check {
    let (cluster, backend) = connect_cluster(&h).await?;
    let name = h.name("mutex").ctx("naming the lock")?;
    let holder_session = within(
        PROMPT,
        "opening the holder's session",
        backend.session(SessionOptions::with_ttl(LONG_TTL)),
    )
    .await?;
    let holder = backend
        .locker(&holder_session, name.clone())
        .ctx("making the holder's locker")?;
    let guard = within(PROMPT, "the holder locking", holder.lock()).await?;
    let held_token = guard.token();
    let waiter_session = within(
        PROMPT,
        "opening the waiter's session",
        backend.session(SessionOptions::with_ttl(LONG_TTL)),
    )
    .await?;
    let waiter = backend
        .locker(&waiter_session, name)
        .ctx("making the waiter's locker")?;
    let waiting = Task::spawn("the waiter", async move {
        // A wait that meets the election may fail transiently: wait again.
        loop {
            match waiter.lock().await {
                Ok(guard) => return Ok((guard, Instant::now())),
                Err(error) if error.is_transient() => {
                    tracing::debug!(%error, "the waiter: transient error, waiting again");
                }
                Err(error) => return Err(error).ctx("the waiter locking"),
            }
        }
    });
    waiting
        .ensure_blocked(h.settle(), "the holder holds the lock")
        .await?;
    let mut waiting = waiting;
    let leader = leader_of(&*cluster, "a leader in the cluster").await?;
    let mut restart = Restart::stop_leader(&*cluster, leader).await?;
    let stopped = Instant::now();
    let released = within_check(LONG, "unlocking during the leader change", async {
        Ok(guard.unlock().await)
    })
    .await?;
    let release_took = stopped.elapsed();
    let (granted, granted_at) = waiting.join(LONG).await?;
    let took = granted_at.saturating_duration_since(stopped);
    restart.now().await?;
    drop(restart);
    ensure!(
        granted.token() > held_token,
        "the waiter's token {} is not above the released holder's {held_token}",
        granted.token()
    );
    ensure!(
        took < LONG_TTL / 2,
        "the waiter was granted only {} after the leader was stopped (holder TTL {LONG_TTL:?})",
        secs(took)
    );
    let how = match &released {
        Ok(()) => "unlock() finished".to_owned(),
        Err(error) => format!(
            "unlock() answered {error}; the holder's session was {}",
            if holder_session.is_lost() {
                "revoked"
            } else {
                "kept"
            }
        ),
    };
    granted.unlock().bounded("the waiter unlocking").await?;
    waiter_session
        .close()
        .bounded("closing the waiter's session")
        .await?;
    drop(holder_session);
    Ok(Holds::figure(
        format!(
            "released in {}, granted {} after the leader stopped",
            secs(release_took),
            secs(took)
        ),
        format!("{how}; session TTL {LONG_TTL:?}, member {leader} stopped and restarted"),
    ))
}
