//! Partition cases: a holder cut off from the store (its traffic silenced, or its
//! connections reset, by the harness's partition hook) must learn that it lost its
//! hold *before* the store grants it to another client.
//!
//! Each case runs [`TRIALS`] trials (in waves of [`PARALLEL`], each trial with its own
//! partitioned client and name). In a trial the cut-off client holds (a lock, a write
//! lock, a leadership, or a double-barrier entry) through a session of
//! [`Harness::fault_ttl`], another client of the store waits for the same thing, and
//! the harness cuts the holder off. The case holds when, in every trial, the holder's
//! `lost()` fired strictly before the waiter was granted; the figure is the smallest
//! margin (grant − `lost()`), as a share of the TTL, and the median time from the cut
//! to `lost()`.

use std::num::NonZeroUsize;
use std::time::Duration;

use distsync_core::{Backend, Bytes, Lost, Name, Session, SessionOptions};
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::time::Instant;

use crate::check::{
    ensure, eventually, ms, secs, violated, within, Bounded, Check, Context, Holds, Task, PROMPT,
};
use crate::faults::{PartitionMode, Partitioned};
use crate::harness::Harness;

/// Trials per case.
pub(crate) const TRIALS: usize = 10;

/// Trials run at once.
pub(crate) const PARALLEL: usize = 5;

/// What the cut-off client holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Held {
    /// A lock; the waiter locks.
    Lock,
    /// A write lock; the waiter write-locks.
    WriteLock,
    /// A leadership; the waiter campaigns.
    Leadership,
    /// An entry in a double barrier of two; the waiter, the other participant, leaves
    /// and waits for the holder's entry to go.
    DoubleBarrierEntry,
}

impl Held {
    fn describe(self) -> &'static str {
        match self {
            Self::Lock => "lock",
            Self::WriteLock => "write lock",
            Self::Leadership => "leadership",
            Self::DoubleBarrierEntry => "double-barrier entry",
        }
    }
}

/// What one trial measured.
struct Trial {
    /// From the cut to the holder's `lost()`.
    lost_after: Duration,
    /// From the holder's `lost()` to the waiter's grant.
    margin: Duration,
}

/// The case: `held` cut off by `mode`, in [`TRIALS`] trials.
pub(crate) async fn cut_off_holder(h: Harness, held: Held, mode: PartitionMode) -> Check {
    let ttl = h.fault_ttl();
    let mut trials = Vec::with_capacity(TRIALS);
    for wave in 0..TRIALS.div_ceil(PARALLEL) {
        let mut tasks: Vec<Task<Trial>> = (wave * PARALLEL..((wave + 1) * PARALLEL).min(TRIALS))
            .map(|i| {
                let h = h.clone();
                Task::spawn(format!("trial {i}"), async move {
                    trial(&h, held, mode, i).await
                })
            })
            .collect();
        for task in &mut tasks {
            trials.push(task.join(ttl * 4 + PROMPT * 4).await?);
        }
    }
    let smallest = trials.iter().map(|t| t.margin).min().unwrap_or_default();
    let mut lost_after: Vec<Duration> = trials.iter().map(|t| t.lost_after).collect();
    lost_after.sort();
    let median = lost_after[lost_after.len() / 2];
    let share = smallest.as_secs_f64() / ttl.as_secs_f64() * 100.0;
    Ok(Holds::figure(
        format!(
            "{} trials: lost() first by ≥ {} ({share:.0}% of the TTL); cut → lost() {}",
            trials.len(),
            ms(smallest),
            secs(median)
        ),
        format!(
            "{}: the {} holder (TTL {ttl:?}) saw lost() before the other client was granted in every trial",
            mode.describe(),
            held.describe()
        ),
    ))
}

/// Something held by the cut-off client, kept until the trial ends.
type Keep = Box<dyn Send + Sync>;

/// Something the waiter was granted at an instant.
type Granted = (Instant, Keep);

async fn trial(h: &Harness, held: Held, mode: PartitionMode, i: usize) -> Check<Trial> {
    let name = h.name(&format!("t{i}")).ctx("naming the trial")?;
    let partition: Box<dyn Partitioned> = h
        .faults()
        .partitioned_client(h.backend().as_ref())
        .bounded("connecting the client to cut off")
        .await?;
    let cut = partition.backend();
    let holder = cut
        .session(SessionOptions::with_ttl(h.fault_ttl()))
        .bounded("opening the holder's session")
        .await?;
    let other = h.session().bounded("opening the waiter's session").await?;

    let (lost, _kept, mut waiter) = match held {
        Held::DoubleBarrierEntry => double_barrier_entry(h, &cut, &holder, &other, name).await?,
        _ => {
            let (lost, kept) = hold(&cut, &holder, held, name.clone()).await?;
            let waiter = wait(h, held, other.clone(), name).await?;
            (lost, kept, waiter)
        }
    };
    ensure!(
        !waiter.is_finished(),
        "the waiter was granted while the {} was held by a healthy client",
        held.describe()
    );
    let lost_task = Task::spawn("the holder's lost()", async move {
        lost.await;
        Ok(Instant::now())
    });

    let cut_at = Instant::now();
    partition.set(mode);
    let (granted_at, _grant) = waiter.join(h.fault_ttl() * 3 + PROMPT * 2).await?;
    let mut lost_task = lost_task;
    if !lost_task.is_finished() {
        let late = within(
            PROMPT,
            "waiting for the holder's lost()",
            lost_task.wait().map(Ok::<_, distsync_core::Error>),
        )
        .await?;
        return violated(match late {
            Ok(at) => format!(
                "trial {i}: the waiter was granted {} after the cut, {} before the holder's lost() fired",
                secs(granted_at - cut_at),
                ms(at.saturating_duration_since(granted_at))
            ),
            Err(_) => format!(
                "trial {i}: the waiter was granted {} after the cut; the holder's lost() never fired",
                secs(granted_at - cut_at)
            ),
        });
    }
    let lost_at = lost_task.wait().await?;
    ensure!(
        lost_at < granted_at,
        "trial {i}: the holder's lost() fired {} after the waiter was granted",
        ms(lost_at - granted_at)
    );
    drop(partition);
    Ok(Trial {
        lost_after: lost_at.saturating_duration_since(cut_at),
        margin: granted_at - lost_at,
    })
}

/// Takes `held` on `name` through the cut-off client; returns its `lost()` and what
/// must be kept for the hold to last.
async fn hold(
    cut: &std::sync::Arc<dyn Backend>,
    session: &Session,
    held: Held,
    name: Name,
) -> Check<(Lost, Keep)> {
    match held {
        Held::Lock => {
            let locker = cut
                .locker(session, name)
                .ctx("making the holder's locker")?;
            let guard = locker.lock().bounded("locking").await?;
            Ok((guard.lost(), Box::new((locker, guard))))
        }
        Held::WriteLock => {
            let rwlock = cut
                .rwlock(session, name)
                .ctx("making the holder's rwlock")?;
            let guard = rwlock.write().bounded("write-locking").await?;
            Ok((guard.lost(), Box::new((rwlock, guard))))
        }
        Held::Leadership => {
            let election = cut
                .election(session, name)
                .ctx("making the holder's election")?;
            let leadership = election
                .campaign(Bytes::from_static(b"cut off"))
                .bounded("campaigning")
                .await?;
            Ok((leadership.lost(), Box::new((election, leadership))))
        }
        Held::DoubleBarrierEntry => violated("a double-barrier entry is taken with its waiter"),
    }
}

/// Starts the other client's wait for `held` on `name`; returns once it waits (for a
/// lock: once the store counts it as a contender).
async fn wait(h: &Harness, held: Held, session: Session, name: Name) -> Check<Task<Granted>> {
    let backend = std::sync::Arc::clone(h.backend());
    let waiting: BoxFuture<'static, Check<Granted>> = match held {
        Held::Lock => {
            let locker = backend
                .locker(&session, name.clone())
                .ctx("making the waiter's locker")?;
            let counter = backend.locker(&session, name).ctx("making a locker")?;
            let task = Task::spawn("the waiting locker", async move {
                let guard = locker.lock().await.ctx("waiting for the lock")?;
                Ok((Instant::now(), Box::new((guard, locker, session)) as Keep))
            });
            eventually(PROMPT, "the waiter registering", || async {
                let contenders = counter.contenders().await.ctx("counting contenders")?;
                Ok((contenders >= 2).then_some(()))
            })
            .await?;
            return Ok(task);
        }
        Held::WriteLock => {
            let rwlock = backend
                .rwlock(&session, name)
                .ctx("making the waiter's rwlock")?;
            async move {
                let guard = rwlock.write().await.ctx("waiting for the write lock")?;
                Ok((Instant::now(), Box::new((guard, rwlock, session)) as Keep))
            }
            .boxed()
        }
        Held::Leadership => {
            let election = backend
                .election(&session, name)
                .ctx("making the waiter's election")?;
            async move {
                let leadership = election
                    .campaign(Bytes::from_static(b"waiter"))
                    .await
                    .ctx("campaigning")?;
                Ok((
                    Instant::now(),
                    Box::new((leadership, election, session)) as Keep,
                ))
            }
            .boxed()
        }
        Held::DoubleBarrierEntry => return violated("a double-barrier entry waits by leaving"),
    };
    let task = Task::spawn(format!("the waiting {}", held.describe()), waiting);
    task.ensure_blocked(h.settle(), "the holder is healthy")
        .await?;
    Ok(task)
}

/// A double barrier of two: the cut-off client and the other client both enter; the
/// other then leaves, which returns only once the holder's entry is gone.
async fn double_barrier_entry(
    h: &Harness,
    cut: &std::sync::Arc<dyn Backend>,
    holder: &Session,
    other: &Session,
    name: Name,
) -> Check<(Lost, Keep, Task<Granted>)> {
    const PARTICIPANTS: NonZeroUsize = NonZeroUsize::new(2).unwrap();
    let mine = cut
        .double_barrier(holder, name.clone(), PARTICIPANTS)
        .ctx("making the holder's double barrier")?;
    let theirs = h
        .backend()
        .double_barrier(other, name, PARTICIPANTS)
        .ctx("making the other double barrier")?;
    let (entered, other_entered) = tokio::join!(
        within(PROMPT * 2, "the holder entering", mine.enter()),
        within(PROMPT * 2, "the other entering", theirs.enter()),
    );
    entered?;
    other_entered?;
    let session = other.clone();
    let task = Task::spawn("the other participant leaving", async move {
        theirs.leave().await.ctx("leaving")?;
        Ok((Instant::now(), Box::new((theirs, session)) as Keep))
    });
    task.ensure_blocked(h.settle(), "the holder is still inside")
        .await?;
    Ok((holder.lost(), Box::new(mine), task))
}
