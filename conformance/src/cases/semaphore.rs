//! Semaphore cases: never more than N holders, the count as part of the state, FIFO
//! waiters, cancelled waiters, and permits freed when the store ends a session.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use distsync_core::{Error, Name};
use tokio::time::Instant;

use super::scenario::{crash, pause, Target};
use super::{boxed, FIFO, STALLED};
use crate::case::{Case, Claim, Group, Need};
use crate::check::{
    ensure, join_all, ms, per_second, violated, within, Bounded, Check, Context, Holds, Task, LONG,
    PROMPT,
};
use crate::faults::Hook;
use crate::harness::Harness;

/// The semaphore cases, in matrix order.
pub(super) const CASES: &[Case] = &[
    Case {
        id: "semaphore_bounded_holders",
        group: Group::Semaphore,
        guarantee: "never more than N holders; another count is a typed error",
        needs: &[Need::Semaphore],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(bounded_holders(h)),
    },
    Case {
        id: "semaphore_fifo_waiters",
        group: Group::Semaphore,
        guarantee: "FIFO waiters, cancelled waiters block no one, a session end frees its permit",
        needs: &[Need::Semaphore],
        claim: FIFO,
        hooks: &[],
        run: |h| boxed(fifo_waiters(h)),
    },
    Case {
        id: "semaphore_holder_crash",
        group: Group::Semaphore,
        guarantee: "a permit holder killed (SIGKILL) in a child process frees its permit",
        needs: &[Need::Semaphore],
        claim: Claim::Offered,
        hooks: &[Hook::ChildHolder],
        run: |h| boxed(crash::holder(h, Target::Permit)),
    },
    Case {
        id: "semaphore_holder_pause",
        group: Group::Semaphore,
        guarantee:
            "a permit holder paused past its TTL loses its permit, sees lost(), its write is fenced off",
        needs: &[Need::Semaphore],
        claim: STALLED,
        hooks: &[Hook::PausedHolder],
        run: |h| boxed(pause::holder(h, Target::Permit)),
    },
];

/// Permits of the contention case.
const PERMITS: NonZeroUsize = NonZeroUsize::new(3).unwrap();
/// Contenders, each with its own session.
const CONTENDERS: usize = 8;
/// Grants per contender.
const ROUNDS: usize = 15;

/// Never more than N holders: 3 sessions hold the 3 permits at once while a fourth is
/// refused, and a client naming 4 permits gets `InvalidArgument`; then 8 contenders,
/// each with its own session, take one of the 3 permits 15 times each, and a counter
/// of current holders inside must never exceed 3.
async fn bounded_holders(h: Harness) -> Check {
    let name = h.name("semaphore").ctx("naming the semaphore")?;
    // The count is the state's: while a permit of 3 is held, naming 4 is refused.
    let pin = h
        .session()
        .set_up("opening the first holder's session")
        .await?;
    let first = h
        .backend()
        .semaphore(&pin, name.clone(), PERMITS)
        .ctx("making a semaphore")?;
    let held = first
        .acquire()
        .bounded("the first holder acquiring")
        .await?;
    let other = h
        .session()
        .set_up("opening the disagreeing session")
        .await?;
    let disagreeing = h
        .backend()
        .semaphore(&other, name.clone(), PERMITS.saturating_add(1))
        .ctx("making the disagreeing semaphore")?;
    let attempt = within(PROMPT, "acquiring with another count", async {
        Ok(disagreeing.try_acquire().await)
    })
    .await?;
    let message = match attempt {
        Err(Error::InvalidArgument(message)) => message,
        other => {
            return violated(format!(
                "a client naming {} permits while the semaphore of {PERMITS} was held got \
                 {other:?}, not InvalidArgument",
                PERMITS.get() + 1
            ))
        }
    };
    // The permits are really shared: two more sessions join the first holder at once,
    // and a fourth is refused.
    let mut sharing = vec![held];
    let mut sharing_sessions = Vec::new();
    for i in 1..PERMITS.get() {
        let session = h
            .session()
            .set_up(format!("opening sharing session {i}"))
            .await?;
        let permit = h
            .backend()
            .semaphore(&session, name.clone(), PERMITS)
            .ctx("making a semaphore")?
            .acquire()
            .bounded(format!("holder {i} acquiring while {i} permits are held"))
            .await?;
        sharing.push(permit);
        sharing_sessions.push(session);
    }
    let fourth = h
        .backend()
        .semaphore(&other, name.clone(), PERMITS)
        .ctx("making a semaphore")?
        .try_acquire()
        .bounded("a fourth try_acquire")
        .await?;
    ensure!(
        fourth.is_none(),
        "a fourth permit was granted while {PERMITS} were held"
    );
    for permit in sharing {
        permit
            .release()
            .bounded("releasing a shared permit")
            .await?;
    }
    drop(sharing_sessions);

    let (most, elapsed) = contend(&h, &name).await?;
    let grants = CONTENDERS * ROUNDS;
    Ok(Holds::figure(
        format!(
            "{grants} grants, at most {most} at once, {}",
            per_second(grants, elapsed)
        ),
        format!("another count was refused: {message}"),
    ))
}

/// [`CONTENDERS`] contenders, each with its own session, take one of the permits
/// [`ROUNDS`] times each; never more than [`PERMITS`] inside at once. Returns the most
/// inside at once and how long the rounds took.
async fn contend(h: &Harness, name: &Name) -> Check<(usize, std::time::Duration)> {
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut contenders = Vec::new();
    for i in 0..CONTENDERS {
        let session = h.session().set_up(format!("opening session {i}")).await?;
        let semaphore = h
            .backend()
            .semaphore(&session, name.clone(), PERMITS)
            .ctx("making a semaphore")?;
        contenders.push((session, semaphore));
    }
    let started = Instant::now();
    let mut tasks: Vec<Task<()>> = contenders
        .into_iter()
        .enumerate()
        .map(|(i, (session, semaphore))| {
            let (inside, most) = (inside.clone(), most.clone());
            Task::spawn(format!("contender {i}"), async move {
                for round in 0..ROUNDS {
                    let permit = semaphore
                        .acquire()
                        .await
                        .ctx(format!("contender {i} acquiring (round {round})"))?;
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                    permit
                        .release()
                        .bounded(format!("contender {i} releasing (round {round})"))
                        .await?;
                }
                drop(session);
                Ok(())
            })
        })
        .collect();
    join_all(&mut tasks, LONG).await?;
    let elapsed = started.elapsed();
    let most = most.load(Ordering::SeqCst);
    ensure!(
        most <= PERMITS.get(),
        "{most} holders were inside at once with {PERMITS} permits"
    );
    Ok((most, elapsed))
}

/// FIFO, cancelled waiters and session ends: two holders take both permits of 2; a
/// waiter whose acquire is cancelled leaves nothing; three more waiters queue; the
/// store ends the first holder's session and a release by the second: the waiters are
/// granted in arrival order, with tokens above the holders'.
async fn fifo_waiters(h: Harness) -> Check {
    const WAITERS: usize = 3;
    const FIFO_PERMITS: NonZeroUsize = NonZeroUsize::new(2).unwrap();
    let name = h.name("semaphore").ctx("naming the semaphore")?;
    let first = h
        .fault_session()
        .set_up("opening the first holder's session")
        .await?;
    let second = h
        .session()
        .set_up("opening the second holder's session")
        .await?;
    let hold = |session: &distsync_core::Session| {
        h.backend()
            .semaphore(session, name.clone(), FIFO_PERMITS)
            .ctx("making a semaphore")
    };
    let (s1, s2) = (hold(&first)?, hold(&second)?);
    let p1 = within(PROMPT, "the first holder acquiring", s1.acquire()).await?;
    let p2 = within(PROMPT, "the second holder acquiring", s2.acquire()).await?;
    let highest = p1.token().max(p2.token());

    let cancelled_session = h
        .session()
        .set_up("opening the cancelled waiter's session")
        .await?;
    let cancelled = hold(&cancelled_session)?;
    if let Ok(granted) = tokio::time::timeout(h.settle(), cancelled.acquire()).await {
        drop(granted.ctx("the cancelled waiter acquiring")?);
        return violated("a third permit was granted while both were held");
    }

    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for i in 0..WAITERS {
        let session = h.session().set_up("opening a waiter's session").await?;
        let semaphore = hold(&session)?;
        let order = order.clone();
        let waiter = Task::spawn(format!("waiter {i}"), async move {
            let permit = semaphore
                .acquire()
                .await
                .ctx(format!("waiter {i} acquiring"))?;
            order
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((i, permit.token()));
            Ok((permit, semaphore, session))
        });
        waiter
            .ensure_blocked(h.settle(), "both permits are held")
            .await?;
        waiters.push(waiter);
    }
    let ended = Instant::now();
    h.end_session(&first)
        .bounded("ending the first holder's session")
        .await?;
    within(PROMPT, "the first permit's lost()", async {
        p1.lost().await;
        Ok(())
    })
    .await?;
    let mut granted = Vec::new();
    granted.push(waiters[0].join(PROMPT).await?);
    let freed = ended.elapsed();
    ensure!(
        !waiters[1].is_finished(),
        "waiter 1 was granted although only one permit was freed"
    );
    p2.release().bounded("the second holder releasing").await?;
    granted.push(waiters[1].join(PROMPT).await?);
    let (permit, _, _) = granted.remove(0);
    permit.release().bounded("waiter 0 releasing").await?;
    granted.push(waiters[2].join(PROMPT).await?);
    let order = std::mem::take(&mut *order.lock().unwrap_or_else(|p| p.into_inner()));
    let indices: Vec<usize> = order.iter().map(|(i, _)| *i).collect();
    ensure!(
        indices == [0, 1, 2],
        "waiters queued in order [0, 1, 2] were granted in order {indices:?}"
    );
    ensure!(
        order.iter().all(|(_, token)| *token > highest)
            && order.windows(2).all(|pair| pair[0].1 < pair[1].1),
        "tokens did not increase across grants: holders up to {highest}, then {order:?}"
    );
    drop((granted, cancelled_session));
    Ok(Holds::figure(
        format!(
            "{WAITERS} waiters in order; a permit freed {} after its session ended",
            ms(freed)
        ),
        "a cancelled waiter left nothing; tokens increased across grants",
    ))
}
