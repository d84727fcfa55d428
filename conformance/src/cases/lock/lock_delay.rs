//! Lock-delay ([`distsync_core::lock_delay`]): after a holder lost its lock without
//! releasing it (killed, paused past its TTL), the next grant comes no sooner than the
//! delay after the loss; after a clean release it comes at once.
//!
//! The external holder and the contenders all use [`HOLDER_LOCK_DELAY`], which is
//! longer than an external holder's TTL: a grant that skipped the delay would come
//! within about one TTL of the loss, under the bound the cases check.

use std::sync::Arc;

use distsync_core::LockOptions;
use distsync_core::{Locker, Session};
use tokio::time::Instant;

use crate::check::{ensure, secs, violated, within, Bounded, Check, Context, Holds, Task, PROMPT};
use crate::faults::{ExternalHolder, HoldKind, HOLDER_LOCK_DELAY};
use crate::harness::Harness;

/// The lock's suffix (the external holder's and the contenders').
const SUFFIX: &str = "mutex";

/// A contender's locker on the cases' lock, with the holder's lock-delay.
fn delayed_locker(h: &Harness, session: &Session) -> Check<Arc<dyn Locker>> {
    let name = h.name(SUFFIX).ctx("naming the lock")?;
    h.coordinator()
        .locker_with(
            session,
            name.as_str(),
            LockOptions::new().lock_delay(HOLDER_LOCK_DELAY),
        )
        .ctx("making the contender's locker")
}

/// A holder with the lock-delay in a child process, a contender with the same delay
/// waiting; the holder is killed (SIGKILL). The contender's grant must come no sooner
/// than the delay after the kill, with a higher token.
pub(super) async fn after_kill(h: Harness) -> Check {
    let holder = h
        .spawn_holder(HoldKind::DelayedLock, SUFFIX)
        .await
        .set_up_ctx("starting a holder in a child process")?;
    after_loss(&h, holder, Loss::Kill).await
}

/// As [`after_kill`], with the holder paused (SIGSTOP; a frozen lease on the memory
/// store) past its TTL instead of killed; once woken it learns through `lost()`.
pub(super) async fn after_pause(h: Harness) -> Check {
    let holder = h
        .spawn_holder(HoldKind::DelayedLock, SUFFIX)
        .await
        .set_up_ctx("starting an external holder")?;
    after_loss(&h, holder, Loss::Pause).await
}

/// How the holder loses the lock.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Loss {
    Kill,
    Pause,
}

async fn after_loss(h: &Harness, mut holder: Box<dyn ExternalHolder>, loss: Loss) -> Check {
    let session = h
        .session()
        .set_up("opening the contender's session")
        .await?;
    let locker = delayed_locker(h, &session)?;
    if let Some(intruder) = within(
        PROMPT,
        "try_lock while the external holder holds",
        locker.try_lock(),
    )
    .await?
    {
        return violated(format!(
            "try_lock was granted with token {} while {} held token {}",
            intruder.token(),
            holder.describe(),
            holder.token()
        ));
    }
    let waiter = Task::spawn("the contender", {
        let locker = Arc::clone(&locker);
        async move {
            let guard = locker.lock().await.ctx("the contender locking")?;
            Ok((guard, Instant::now()))
        }
    });
    waiter
        .ensure_blocked(h.settle(), "the external holder holds the lock")
        .await?;
    let mut waiter = waiter;
    let lost_at = Instant::now();
    let how = match loss {
        Loss::Kill => {
            holder.kill().await.ctx("killing the holder")?;
            "SIGKILL"
        }
        Loss::Pause => {
            holder.pause().await.ctx("pausing the holder")?;
            "the pause"
        }
    };
    let limit = h.holder_ttl() * 3 + HOLDER_LOCK_DELAY + PROMPT;
    let (guard, granted_at) = waiter.join(limit).await?;
    let took = granted_at.saturating_duration_since(lost_at);
    ensure!(
        took >= HOLDER_LOCK_DELAY,
        "the contender was granted {} after {how}, before the lock-delay of {} had passed \
         (holder TTL {:?})",
        secs(took),
        secs(HOLDER_LOCK_DELAY),
        h.holder_ttl()
    );
    ensure!(
        guard.token() > holder.token(),
        "the next grant's token {} is not above the lost holder's {}",
        guard.token(),
        holder.token()
    );
    if loss == Loss::Pause {
        holder.resume().await.ctx("resuming the holder")?;
        within(
            h.holder_ttl() * 2 + PROMPT,
            "the woken holder's lost()",
            async { holder.lost().await },
        )
        .await?;
        ensure!(
            !guard.is_lost(),
            "the contender's guard reports lost after the stale holder woke"
        );
    }
    guard.unlock().bounded("the contender unlocking").await?;
    Ok(Holds::figure(
        format!(
            "granted {} after {how} (lock-delay {})",
            secs(took),
            secs(HOLDER_LOCK_DELAY)
        ),
        format!(
            "the holder (token {}) lost the lock without releasing it; the contender was \
             granted with a higher token no sooner than the delay; holder TTL {:?}",
            holder.token(),
            h.holder_ttl()
        ),
    ))
}

/// A holder with the lock-delay releases cleanly (unlock, then a drop): each next
/// grant comes at once, well under the delay, with a higher token.
pub(super) async fn clean_release(h: Harness) -> Check {
    let first_session = h.session().set_up("opening the first session").await?;
    let first = delayed_locker(&h, &first_session)?;
    let held = within(PROMPT, "the first lock", first.lock()).await?;
    let first_token = held.token();
    held.unlock().bounded("the first holder unlocking").await?;

    let second_session = h.session().set_up("opening the second session").await?;
    let second = delayed_locker(&h, &second_session)?;
    let asked = Instant::now();
    let held = within(PROMPT, "the lock after an unlock", second.lock()).await?;
    let after_unlock = asked.elapsed();
    ensure!(
        held.token() > first_token,
        "the second grant's token {} is not above the first's {first_token}",
        held.token()
    );
    let second_token = held.token();
    // A drop is a clean release too (in the background).
    drop(held);

    let asked = Instant::now();
    let held = within(
        HOLDER_LOCK_DELAY / 2,
        "the lock after a dropped guard",
        first.lock(),
    )
    .await?;
    let after_drop = asked.elapsed();
    ensure!(
        held.token() > second_token,
        "the third grant's token {} is not above the second's {second_token}",
        held.token()
    );
    held.unlock().bounded("the third holder unlocking").await?;
    let bound = HOLDER_LOCK_DELAY / 2;
    ensure!(
        after_unlock < bound,
        "the grant after a clean unlock took {}, not well under the lock-delay of {}",
        secs(after_unlock),
        secs(HOLDER_LOCK_DELAY)
    );
    Ok(Holds::figure(
        format!(
            "granted {} after an unlock, {} after a drop (lock-delay {})",
            secs(after_unlock),
            secs(after_drop),
            secs(HOLDER_LOCK_DELAY)
        ),
        "clean releases leave no delay behind; tokens increase",
    ))
}
