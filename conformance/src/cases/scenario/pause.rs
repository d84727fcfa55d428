//! A holder paused past its TTL (SIGSTOP of a child process; a frozen lease for the
//! memory store) loses the lock: another client gets it with a higher token, but not
//! before the paused holder's lease could have run out; the paused holder, once
//! woken, learns through `lost()`; and a fenced resource refuses the write it makes on
//! waking with its stale token.

use std::time::Duration;

use distsync_core::Session;
use tokio::time::Instant;

use super::contender::{Contender, Granted, Target};
use crate::check::{ensure, secs, violated, within, Bounded, Check, Context, Holds, Task, PROMPT};
use crate::cpu_pressure::{join_live, Sampler};
use crate::fenced::FencedCounter;
use crate::harness::Harness;

/// How long after its TTL a paused holder's lease may take to be found expired (etcd
/// checks expiry every half second; PostgreSQL's waiters end stale holders when they
/// next look).
const EXPIRY_SLACK: Duration = Duration::from_secs(2);

/// The case body (see the module docs), for a lock or a semaphore permit.
pub(crate) async fn holder(h: Harness, target: Target) -> Check {
    let ttl = h.holder_ttl();
    let mut holder = h
        .spawn_holder(target.hold_kind(), target.suffix())
        .await
        .set_up_ctx("starting an external holder")?;
    let stale_token = holder.token();
    let session = h.session().set_up("opening the waiter's session").await?;
    let contender = Contender::new(&h, &session, target, true)
        .bounded("making the waiter's contender")
        .await?;
    let waiter = Task::spawn("the waiter", async move {
        let guard = contender.acquire().await.ctx("the waiter acquiring")?;
        Ok((guard, Instant::now(), contender))
    });
    waiter
        .ensure_blocked(
            h.settle(),
            "the external holder holds what the waiter waits for",
        )
        .await?;
    let mut waiter = waiter;
    // The holder's own deadline, just before the pause (the question's start plus the
    // answer is never after it).
    let asked = Instant::now();
    let left = holder
        .lease_left()
        .bounded("asking the holder for its lease")
        .await?;
    let paused = Instant::now();
    // The grant's upper bound is a liveness bound: the time the machine's runnable
    // tasks waited for a CPU meanwhile comes off it (see `crate::cpu_pressure`).
    let pressure = Sampler::start(paused);
    holder.pause().await.ctx("pausing the holder")?;
    let (guard, granted_at, _contender) =
        join_live(&mut waiter, paused, ttl * 3 + PROMPT, pressure.as_ref()).await?;
    let took = granted_at.saturating_duration_since(paused);
    taken_over_in_time(took, ttl, (asked, left, paused), pressure.as_ref())?;
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
                "the fenced resource accepted the stale holder's write (token {written}) after \
                 the new holder's (token {})",
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
    let _third = no_third_holder(&h, target, &guard).await?;
    guard.release().bounded("the new holder releasing").await?;
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

/// The grant came neither before the paused holder's lease could have run out nor
/// later than its TTL and [`EXPIRY_SLACK`] after the pause (the time the machine's
/// runnable tasks waited for a CPU meanwhile not counted). `lease` is when the holder
/// was asked for its lease, what it answered and when it was paused.
fn taken_over_in_time(
    took: Duration,
    ttl: Duration,
    (asked, left, paused): (Instant, Option<Duration>, Instant),
    pressure: Option<&Sampler>,
) -> Check<()> {
    // A holder renewing on schedule renewed at most TTL/3 before the pause, so its
    // lease had at least 2/3 of the TTL left: a grant before half the TTL took it
    // from a live lease. A holder whose renewals came late (a loaded machine starves
    // the child) had less: the grant must then not come before the deadline the
    // holder itself saw, when it told us.
    let bound = match left {
        Some(left) => (asked + left)
            .saturating_duration_since(paused)
            .min(ttl / 2),
        None => ttl / 2,
    };
    ensure!(
        took >= bound,
        "the lock was granted {} after the holder was paused, before its lease (TTL {ttl:?}; {}) could have run out",
        secs(took),
        match left {
            Some(left) => format!("{} left by the holder's clock when paused", secs(left)),
            None => "its lease left unknown".to_owned(),
        }
    );
    let starved = pressure.map_or(Duration::ZERO, |pressure| {
        pressure.contention().within(Duration::ZERO, took)
    });
    ensure!(
        took <= ttl + EXPIRY_SLACK + starved,
        "the lock was granted only {} after the holder was paused (TTL {ttl:?}; {} of it the \
         machine's runnable tasks waited for a CPU)",
        secs(took),
        secs(starved)
    );
    Ok(())
}

/// A third client, trying while the new holder holds, gets nothing. Returns its
/// session and contender, which the case keeps to its end.
async fn no_third_holder(
    h: &Harness,
    target: Target,
    guard: &Granted,
) -> Check<(Session, Contender)> {
    let third_session = h.session().set_up("opening a third session").await?;
    let third = Contender::new(h, &third_session, target, false)
        .bounded("making a third contender")
        .await?;
    if let Some(intruder) = within(
        PROMPT,
        "a third try_lock / try_acquire",
        third.try_acquire(),
    )
    .await?
    {
        return violated(format!(
            "a third client got {} with token {} while the new holder held token {}",
            target.describe(),
            intruder.token(),
            guard.token()
        ));
    }
    Ok((third_session, third))
}
