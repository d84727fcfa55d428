//! A holder paused past its TTL (SIGSTOP of a child process; a frozen lease for the
//! memory store) loses the lock: another client gets it with a higher token, but not
//! before the paused holder's lease could have run out; the paused holder, once
//! woken, learns through `lost()`; and a fenced resource refuses the write it makes on
//! waking with its stale token.

use std::time::Duration;

use tokio::time::Instant;

use crate::check::{ensure, secs, violated, within, Bounded, Check, Context, Holds, Task, PROMPT};
use crate::faults::HoldKind;
use crate::fenced::FencedCounter;
use crate::harness::Harness;

/// How long after its TTL a paused holder's lease may take to be found expired (etcd
/// checks expiry every half second; PostgreSQL's waiters end stale holders when they
/// next look).
const EXPIRY_SLACK: Duration = Duration::from_secs(2);

/// The case body (see the module docs).
pub(crate) async fn lock_holder(h: Harness) -> Check {
    let ttl = h.holder_ttl();
    let mut holder = h
        .spawn_holder(HoldKind::Lock, "mutex")
        .await
        .ctx("starting an external lock holder")?;
    let stale_token = holder.token();
    let name = h.name("mutex").ctx("naming the lock")?;
    let session = h.session().bounded("opening the waiter's session").await?;
    let locker = h
        .backend()
        .locker(&session, name.clone())
        .ctx("making a locker")?;
    let waiter = Task::spawn("the waiter", async move {
        let guard = locker.lock().await.ctx("the waiter locking")?;
        Ok((guard, Instant::now()))
    });
    waiter
        .ensure_blocked(h.settle(), "the external holder holds the lock")
        .await?;
    let mut waiter = waiter;
    let paused = Instant::now();
    holder.pause().await.ctx("pausing the holder")?;
    let (guard, granted_at) = waiter.join(ttl * 3 + PROMPT).await?;
    let took = granted_at.saturating_duration_since(paused);
    // The holder renewed at most TTL/3 before the pause, so its lease had at least
    // 2/3 of the TTL left: a grant before half the TTL took it from a live lease.
    ensure!(
        took >= ttl / 2,
        "the lock was granted {} after the holder was paused, before its lease (TTL {ttl:?}) could have run out",
        secs(took)
    );
    ensure!(
        took <= ttl + EXPIRY_SLACK,
        "the lock was granted only {} after the holder was paused (TTL {ttl:?})",
        secs(took)
    );
    ensure!(
        guard.token() > stale_token,
        "the new holder's token {} is not above the paused holder's {stale_token}",
        guard.token()
    );

    let mut resource = FencedCounter::default();
    if let Err(refused) = resource.write(guard.token(), 1) {
        return violated(format!("the new holder's write was refused: {refused}"));
    }
    holder.resume().await.ctx("resuming the holder")?;
    let woke = Instant::now();
    let written = within(PROMPT, "the woken holder's write", holder.write()).await?;
    ensure!(
        written == stale_token,
        "the woken holder wrote with token {written}, not its grant's {stale_token}"
    );
    let refusal = match resource.write(written, 2) {
        Ok(()) => {
            return violated(format!(
                "the fenced resource accepted the stale holder's write (token {written}) after the new holder's (token {})",
                guard.token()
            ))
        }
        Err(refused) => refused,
    };
    within(ttl * 2 + PROMPT, "the woken holder's lost()", async {
        holder.lost().await
    })
    .await?;
    let learned = woke.elapsed();

    ensure!(
        !guard.is_lost(),
        "the new holder's guard reports lost after the stale holder woke"
    );
    let third_session = h.session().bounded("opening a third session").await?;
    let third = h
        .backend()
        .locker(&third_session, name)
        .ctx("making a third locker")?;
    if let Some(intruder) = within(PROMPT, "a third try_lock", third.try_lock()).await? {
        return violated(format!(
            "a third client got token {} while the new holder held token {}",
            intruder.token(),
            guard.token()
        ));
    }
    guard.unlock().bounded("the new holder unlocking").await?;
    drop(holder);
    Ok(Holds::figure(
        format!(
            "taken over {} after the pause, lost() {} after waking",
            secs(took),
            secs(learned)
        ),
        format!(
            "holder TTL {ttl:?}; the woken holder's write was refused ({refusal}); the new holder kept the lock"
        ),
    ))
}
