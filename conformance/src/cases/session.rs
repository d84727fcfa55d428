//! Session cases: what closing a session releases, and argument checks on sessions.

use distsync_core::Bytes;
use tokio::time::Instant;

use crate::check::{ensure, eventually, ms, within, Bounded, Check, Context, Holds, PROMPT};
use crate::harness::Harness;

/// `close()` releases everything held through the session at once: a lock, and where
/// the backend offers them, a leadership and a write lock, all held through one
/// session. Afterwards the guards report `is_lost()`, and another session can take
/// the lock and the write lock and win the election; the figure is the time from
/// `close()` returning until all three were taken by the other session.
pub(crate) async fn close_releases_all(h: Harness) -> Check {
    let caps = h.capabilities().clone();
    let lock_name = h.name("mutex").ctx("naming the lock")?;
    let election_name = h.name("election").ctx("naming the election")?;
    let rwlock_name = h.name("rwlock").ctx("naming the rwlock")?;
    let closing = h.session().bounded("opening the session to close").await?;
    let other = h.session().bounded("opening another session").await?;

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
