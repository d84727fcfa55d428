//! The unfair lock's cases: the lock cases that hold for it too (run with
//! [`Fairness::Unfair`]), the arrival order it does not keep (measured, declared no),
//! and the herd it must not wake.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use distsync_core::{Capabilities, Fairness, Locker};
use tokio::time::Instant;

use super::super::scenario::{crash, partition, pause, Held, Target};
use super::super::{boxed, FENCING, LOST, PARTITION, STALLED};
use super::{locker_of, registered};
use crate::case::{Case, Claim, Group, Need};
use crate::check::{
    ensure, join_all, partitioned_client_with_timeouts, violated, within, Bounded, Check, Context,
    Fail, Holds, Task, LONG, PROMPT,
};
use crate::cpu_pressure::Starved;
use crate::faults::{Hook, PartitionMode};
use crate::harness::Harness;

/// Arrival order, which the unfair lock does not claim on any store.
const ARRIVAL_ORDER: Claim = Claim::Flag("fifo_waiters", |_: &Capabilities| false);

/// The unfair lock's cases, in matrix order.
pub(in crate::cases) const CASES: &[Case] = &[
    Case {
        id: "unfair_lock_mutual_exclusion",
        group: Group::UnfairLock,
        guarantee: "mutual exclusion under contention",
        needs: &[Need::UnfairLock],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(super::mutual_exclusion(h, Fairness::Unfair)),
    },
    Case {
        id: "unfair_lock_fencing_tokens",
        group: Group::UnfairLock,
        guarantee: "fencing tokens strictly increase",
        needs: &[Need::UnfairLock],
        claim: FENCING,
        hooks: &[],
        run: |h| boxed(super::fencing_tokens(h, Fairness::Unfair)),
    },
    Case {
        id: "unfair_lock_try_lock",
        group: Group::UnfairLock,
        guarantee: "try_lock: None while held, a guard when free",
        needs: &[Need::UnfairLock],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(super::try_lock(h, Fairness::Unfair)),
    },
    Case {
        id: "unfair_lock_arrival_order",
        group: Group::UnfairLock,
        guarantee: "waiters granted in arrival order (not claimed: a newcomer may go first)",
        needs: &[Need::UnfairLock],
        claim: ARRIVAL_ORDER,
        hooks: &[Hook::Partition],
        run: |h| boxed(arrival_order(h)),
    },
    Case {
        id: "unfair_lock_no_herd",
        group: Group::UnfairLock,
        guarantee: "a release wakes at most a few of 100 waiters, not all",
        needs: &[Need::UnfairLock],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(no_herd(h)),
    },
    Case {
        id: "unfair_lock_cancelled_waiter",
        group: Group::UnfairLock,
        guarantee: "a cancelled waiter blocks no one",
        needs: &[Need::UnfairLock],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(super::cancelled_waiter(h, Fairness::Unfair)),
    },
    Case {
        id: "unfair_lock_session_end_fires_lost",
        group: Group::UnfairLock,
        guarantee: "lost() fires when the store ends the session",
        needs: &[Need::UnfairLock],
        claim: LOST,
        hooks: &[],
        run: |h| boxed(super::session_end_fires_lost(h, Fairness::Unfair)),
    },
    Case {
        id: "unfair_lock_session_end_frees_lock",
        group: Group::UnfairLock,
        guarantee: "the lock frees when the store ends the session",
        needs: &[Need::UnfairLock],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(super::session_end_frees_lock(h, Fairness::Unfair)),
    },
    Case {
        id: "unfair_lock_holder_crash",
        group: Group::UnfairLock,
        guarantee: "a holder killed (SIGKILL) in a child process frees the lock",
        needs: &[Need::UnfairLock],
        claim: Claim::Offered,
        hooks: &[Hook::ChildHolder],
        run: |h| boxed(crash::holder(h, Target::UnfairLock)),
    },
    Case {
        id: "unfair_lock_holder_pause",
        group: Group::UnfairLock,
        guarantee:
            "a holder paused past its TTL loses the lock, sees lost(), its write is fenced off",
        needs: &[Need::UnfairLock],
        claim: STALLED,
        hooks: &[Hook::PausedHolder],
        run: |h| boxed(pause::holder(h, Target::UnfairLock)),
    },
    Case {
        id: "unfair_lock_partition_silent",
        group: Group::UnfairLock,
        guarantee: "a holder cut off (silent partition) sees lost() before anyone else is granted",
        needs: &[Need::UnfairLock],
        claim: PARTITION,
        hooks: &[Hook::Partition],
        run: |h| {
            boxed(partition::cut_off_holder(
                h,
                Held::UnfairLock,
                PartitionMode::Silent,
            ))
        },
    },
    Case {
        id: "unfair_lock_guarded_write",
        group: Group::UnfairLock,
        guarantee: "put_if_held commits only while held: a stale holder's write is refused",
        // The specific need first: the matrix notes name the first need's flag.
        needs: &[Need::GuardedWrites, Need::UnfairLock],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(super::guarded_write(h, Fairness::Unfair)),
    },
    Case {
        id: "unfair_lock_break_hold",
        group: Group::UnfairLock,
        guarantee: "a broken hold: the holder sees lost(), the waiter is granted with a higher \
                    token, the holder's guarded write is refused",
        needs: &[Need::BreakLock, Need::UnfairLock],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(super::break_hold::break_hold(h, Fairness::Unfair)),
    },
    Case {
        id: "unfair_lock_excludes_fair",
        group: Group::UnfairLock,
        guarantee: "the fair and the unfair lock of one name exclude each other",
        needs: &[Need::UnfairLock, Need::Lock],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(excludes_fair(h)),
    },
];

/// Arrival order, measured without a race: a holder holds and a waiter, whose client
/// goes through a partition proxy, is registered in the store. The waiter's client is
/// cut off (silently, briefly: far within its session's TTL), so it cannot act on a
/// release. The holder releases and at once asks again with `try_lock`. A lock that
/// grants in arrival order has handed the lock to the waiter in the store, so the
/// `try_lock` is refused; the unfair lock grants whoever asks, so the holder keeps it.
/// The waiter's client is then healed and must be granted. Not claimed on any store:
/// "violated" here is the documented behaviour.
async fn arrival_order(h: Harness) -> Check {
    let name = h.name("mutex").ctx("naming the lock")?;
    let holder_session = h.session().set_up("opening the holder's session").await?;
    let holder = locker_of(&h, Fairness::Unfair, &holder_session, name.clone())
        .ctx("making the holder's locker")?;
    let cut = partitioned_client_with_timeouts(&h, PROMPT, PROMPT).await?;
    let waiter_backend = cut.backend();
    let waiter_session = waiter_backend
        .session(Default::default())
        .set_up("opening the waiter's session")
        .await?;
    let waiter = waiter_backend
        .unfair_locker(&waiter_session, name)
        .ctx("making the waiter's locker")?;
    let held = within(PROMPT, "the holder locking", holder.lock()).await?;
    let mut wait = Task::spawn("the waiter", async move {
        let guard = waiter.lock().await.ctx("the waiter locking")?;
        guard.unlock().bounded("the waiter releasing").await?;
        drop(waiter_session);
        Ok(())
    });
    registered(holder.as_ref(), 2).await?;
    cut.set(PartitionMode::Silent);
    held.unlock().bounded("the holder releasing").await?;
    let again = within(PROMPT, "the holder asking again", holder.try_lock()).await;
    cut.set(PartitionMode::Forward);
    let newcomer_first = match again? {
        Some(again) => {
            again.unlock().bounded("the holder releasing again").await?;
            true
        }
        None => false,
    };
    wait.join(LONG).await?;
    ensure!(
        !newcomer_first,
        "the holder, asking again after its release, was granted while a waiter that queued \
         before it waited (the unfair lock's documented behaviour)"
    );
    Ok(Holds::new(
        "the waiter, queued first, was granted first although it could not ask",
    ))
}

/// Waiters of [`no_herd`].
const HERD: usize = 100;
/// Releases of [`no_herd`].
const RELEASES: u64 = 20;
/// The most wake-ups per release [`no_herd`] accepts: the head waiter, and the next
/// head a grant promotes.
const WAKEUPS_PER_RELEASE: u64 = 3;

/// No herd: 100 waiters, each with its own session, wait for a lock whose holder
/// releases 20 times, asking again at once after each release (so the waiters stay
/// queued, unless the head wins the race; a waiter releases as soon as it is
/// granted). Each release wakes the head of the wait line alone: the waiters'
/// wake-ups ([`Locker::wakeups`], summed) stay within 3 per release made (the
/// holder's and the granted waiters'), where a herd would wake all 100 at each. Every
/// waiter is then granted in turn, the count still within the bound.
async fn no_herd(h: Harness) -> Check {
    // No fault: a session lost on a machine starved past its ride-out says nothing.
    let (starved, ttl) = (Starved::since_now(), h.session_ttl());
    let name = h.name("mutex").ctx("naming the lock")?;
    let holder_session = h.session().set_up("opening the holder's session").await?;
    let holder = locker_of(&h, Fairness::Unfair, &holder_session, name.clone())
        .ctx("making the holder's locker")?;
    let mut held = Some(within(PROMPT, "the holder locking", holder.lock()).await?);
    let granted = Arc::new(AtomicU64::new(0));
    let mut lockers = Vec::with_capacity(HERD);
    let mut waits = Vec::with_capacity(HERD);
    for i in 0..HERD {
        let session = h.session().set_up("opening a waiter's session").await?;
        let locker: Arc<dyn Locker> = Arc::from(
            locker_of(&h, Fairness::Unfair, &session, name.clone())
                .ctx("making a waiter's locker")?,
        );
        let waiting = Arc::clone(&locker);
        let granted = Arc::clone(&granted);
        waits.push(Task::spawn(format!("waiter {i}"), async move {
            let guard =
                waiting
                    .lock()
                    .await
                    .live_ctx(format!("waiter {i} locking"), &starved, ttl)?;
            // Counted before the release it makes, so never after the wake-up it causes.
            granted.fetch_add(1, Ordering::SeqCst);
            guard
                .unlock()
                .bounded(format!("waiter {i} unlocking"))
                .await?;
            Ok(())
        }));
        lockers.push((session, locker));
    }
    registered(holder.as_ref(), HERD + 1).await?;
    let woken = || -> u64 { lockers.iter().map(|(_, locker)| locker.wakeups()).sum() };
    let before = woken();
    let started = Instant::now();
    let mut releases = 0;
    while releases < RELEASES {
        if let Some(guard) = held.take() {
            guard.unlock().bounded("the holder releasing").await?;
            releases += 1;
        }
        if releases < RELEASES {
            // Asking again at once: usually before the woken head. Losing the race
            // puts the holder at the end of the line, behind every waiter.
            let again = tokio::time::timeout(LONG, holder.lock()).await.map_err(|_| {
                Fail::Violated(format!(
                    "the holder, back in the line behind {HERD} waiters, was not granted within {LONG:?}"
                ))
            })?;
            held = Some(again.live_ctx("the holder locking again", &starved, ttl)?);
        }
    }
    let during = woken() - before;
    let made = releases + granted.load(Ordering::SeqCst);
    let elapsed = started.elapsed();
    ensure!(
        during <= WAKEUPS_PER_RELEASE * made,
        "{HERD} waiters were woken {during} times by {made} releases (more than \
         {WAKEUPS_PER_RELEASE} per release: a herd)"
    );
    join_all(&mut waits, LONG).await?;
    let all = woken() - before;
    let all_releases = releases + HERD as u64;
    ensure!(
        all <= WAKEUPS_PER_RELEASE * all_releases,
        "{HERD} waiters were woken {all} times in {all_releases} releases"
    );
    if all == 0 {
        return violated(format!(
            "the waiters' handles counted no wake-up in {all_releases} releases: Locker::wakeups is not counted"
        ));
    }
    Ok(Holds::figure(
        format!("{:.2} wake-ups per release", all as f64 / all_releases as f64),
        format!(
            "{HERD} waiters: {during} wake-ups in the first {made} releases ({elapsed:?}), {all} in all \
             {all_releases} (every waiter granted in turn)"
        ),
    ))
}

/// The fair and the unfair lock of one name exclude each other, both ways: each is
/// refused by `try_lock` and waits while the other holds, and is granted with a
/// higher token once it releases.
async fn excludes_fair(h: Harness) -> Check {
    let name = h.name("mutex").ctx("naming the lock")?;
    let a = h.session().set_up("opening session A").await?;
    let b = h.session().set_up("opening session B").await?;
    let fair = locker_of(&h, Fairness::Fair, &a, name.clone()).ctx("making the fair locker")?;
    let unfair: Arc<dyn Locker> =
        Arc::from(locker_of(&h, Fairness::Unfair, &b, name).ctx("making the unfair locker")?);
    let held = within(PROMPT, "the fair locker locking", fair.lock()).await?;
    if let Some(intruder) = within(PROMPT, "the unfair try_lock", unfair.try_lock()).await? {
        return violated(format!(
            "the unfair try_lock was granted token {} while the fair lock held token {}",
            intruder.token(),
            held.token()
        ));
    }
    let waiting = Arc::clone(&unfair);
    let mut wait = Task::spawn("the unfair waiter", async move {
        waiting.lock().await.ctx("the unfair waiter locking")
    });
    wait.ensure_blocked(h.settle(), "the fair locker holds")
        .await?;
    let fair_token = held.token();
    held.unlock().bounded("the fair locker releasing").await?;
    let unfair_held = wait.join(PROMPT).await?;
    ensure!(
        unfair_held.token() > fair_token,
        "the unfair grant's token {} is not above the fair holder's {fair_token}",
        unfair_held.token()
    );
    if let Some(intruder) = within(PROMPT, "the fair try_lock", fair.try_lock()).await? {
        return violated(format!(
            "the fair try_lock was granted token {} while the unfair lock held token {}",
            intruder.token(),
            unfair_held.token()
        ));
    }
    let unfair_token = unfair_held.token();
    unfair_held
        .unlock()
        .bounded("the unfair locker releasing")
        .await?;
    let again = within(PROMPT, "the fair locker locking again", fair.lock()).await?;
    ensure!(
        again.token() > unfair_token,
        "the fair grant's token {} is not above the unfair holder's {unfair_token}",
        again.token()
    );
    again.unlock().bounded("the fair locker releasing").await?;
    Ok(Holds::new(
        "each refused and kept waiting while the other held; tokens grow across both",
    ))
}
