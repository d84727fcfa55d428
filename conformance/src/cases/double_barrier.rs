//! Double-barrier cases: `enter` and `leave` wait for every participant, one
//! participant too many is a typed error (and the partition cases, in
//! [`super::scenario::partition`]).

use std::num::NonZeroUsize;
use std::sync::Arc;

use distsync_core::{DoubleBarrier, Error};
use tokio::time::Instant;

use super::scenario::{go_interop, partition, Held};
use super::{boxed, PARTITION};
use crate::case::{Case, Claim, Group, Need};
use crate::check::{ensure, join_all, ms, violated, Bounded, Check, Context, Holds, Task, PROMPT};
use crate::faults::{Hook, PartitionMode};
use crate::harness::Harness;

/// The double barrier cases, in matrix order.
pub(super) const CASES: &[Case] = &[
    Case {
        id: "double_barrier_enter_leave",
        group: Group::DoubleBarrier,
        guarantee: "enter and leave wait for every participant",
        needs: &[Need::DoubleBarrier],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(double_enter_leave(h)),
    },
    Case {
        id: "double_barrier_too_many",
        group: Group::DoubleBarrier,
        guarantee: "participant count+1 gets TooManyParticipants",
        needs: &[Need::DoubleBarrier],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(too_many_participants(h)),
    },
    Case {
        id: "double_barrier_partition_silent",
        group: Group::DoubleBarrier,
        guarantee: "a participant cut off (silent partition) sees lost() before the other participant passes",
        needs: &[Need::DoubleBarrier],
        claim: PARTITION,
        hooks: &[Hook::Partition],
        run: |h| boxed(partition::cut_off_holder(h, Held::DoubleBarrierEntry, PartitionMode::Silent)),
    },
    Case {
        id: "double_barrier_partition_reset",
        group: Group::DoubleBarrier,
        guarantee: "a participant cut off (connections reset) sees lost() before the other participant passes",
        needs: &[Need::DoubleBarrier],
        claim: PARTITION,
        hooks: &[Hook::Partition],
        run: |h| boxed(partition::cut_off_holder(h, Held::DoubleBarrierEntry, PartitionMode::Reset)),
    },
    Case {
        id: "double_barrier_interop_go",
        group: Group::DoubleBarrier,
        guarantee: "interoperates with etcd's Go recipe.DoubleBarrier (layout=go): enter and leave together",
        needs: &[Need::DoubleBarrier],
        claim: Claim::Offered,
        hooks: &[Hook::GoPeer],
        run: |h| boxed(go_interop::double_barrier(h)),
    },
];

/// Double barrier: `count` (3) participants, each with its own session. None returns
/// from `enter` before the last has entered; none returns from `leave` before the last
/// has left.
async fn double_enter_leave(h: Harness) -> Check {
    const COUNT: NonZeroUsize = NonZeroUsize::new(3).unwrap();
    let name = h.name("double").ctx("naming the double barrier")?;
    let mut participants: Vec<Arc<dyn DoubleBarrier>> = Vec::new();
    let mut sessions = Vec::new();
    for _ in 0..COUNT.get() {
        let session = h.session().set_up("opening a session").await?;
        let barrier = h
            .backend()
            .double_barrier(&session, name.clone(), COUNT)
            .ctx("making a double barrier")?;
        ensure!(
            barrier.count() == COUNT.get(),
            "count() is {}, made with {COUNT}",
            barrier.count()
        );
        participants.push(Arc::from(barrier));
        sessions.push(session);
    }
    let enter = |i: usize| {
        let barrier = participants[i].clone();
        Task::spawn(format!("participant {i} entering"), async move {
            barrier
                .enter()
                .await
                .ctx(format!("participant {i} entering"))?;
            Ok(Instant::now())
        })
    };
    let mut entering = Vec::new();
    for i in 0..COUNT.get() - 1 {
        let task = enter(i);
        task.ensure_blocked(
            h.settle(),
            format!("only {} of {COUNT} participants had entered", i + 1),
        )
        .await?;
        entering.push(task);
    }
    for task in &entering {
        ensure!(
            !task.is_finished(),
            "{} returned before the last participant entered",
            task.what()
        );
    }
    let last_entered = Instant::now();
    entering.push(enter(COUNT.get() - 1));
    let entered = join_all(&mut entering, PROMPT).await?;
    let enter_took = entered
        .iter()
        .map(|at| at.saturating_duration_since(last_entered))
        .max()
        .unwrap_or_default();

    let leave = |i: usize| {
        let barrier = participants[i].clone();
        Task::spawn(format!("participant {i} leaving"), async move {
            barrier
                .leave()
                .await
                .ctx(format!("participant {i} leaving"))?;
            Ok(Instant::now())
        })
    };
    let mut leaving = Vec::new();
    for i in 0..COUNT.get() - 1 {
        let task = leave(i);
        task.ensure_blocked(
            h.settle(),
            format!("only {} of {COUNT} participants had left", i + 1),
        )
        .await?;
        leaving.push(task);
    }
    for task in &leaving {
        ensure!(
            !task.is_finished(),
            "{} returned before the last participant left",
            task.what()
        );
    }
    leaving.push(leave(COUNT.get() - 1));
    join_all(&mut leaving, PROMPT).await?;
    drop(sessions);
    Ok(Holds::figure(
        format!("all entered within {} of the last", ms(enter_took)),
        format!("{COUNT} participants: enter and leave each returned only once all had arrived"),
    ))
}

/// A participant over the count gets `TooManyParticipants`: with a count of 2, two
/// participants enter; the third's `enter` fails promptly with the typed error.
async fn too_many_participants(h: Harness) -> Check {
    const COUNT: NonZeroUsize = NonZeroUsize::new(2).unwrap();
    let name = h.name("double").ctx("naming the double barrier")?;
    let mut participants: Vec<Arc<dyn DoubleBarrier>> = Vec::new();
    let mut sessions = Vec::new();
    for _ in 0..=COUNT.get() {
        let session = h.session().set_up("opening a session").await?;
        participants.push(Arc::from(
            h.backend()
                .double_barrier(&session, name.clone(), COUNT)
                .ctx("making a double barrier")?,
        ));
        sessions.push(session);
    }
    let mut entering: Vec<Task<()>> = participants[..COUNT.get()]
        .iter()
        .enumerate()
        .map(|(i, barrier)| {
            let barrier = barrier.clone();
            Task::spawn(format!("participant {i} entering"), async move {
                barrier
                    .enter()
                    .await
                    .ctx(format!("participant {i} entering"))
            })
        })
        .collect();
    join_all(&mut entering, PROMPT).await?;
    match tokio::time::timeout(PROMPT, participants[COUNT.get()].enter()).await {
        Ok(Err(Error::TooManyParticipants { count, .. })) => {
            ensure!(
                count == COUNT.get(),
                "TooManyParticipants names count {count}, the barrier has {COUNT}"
            )
        }
        Ok(Ok(())) => {
            return violated(format!(
                "participant {} of a {COUNT}-participant barrier entered",
                COUNT.get() + 1
            ))
        }
        Ok(Err(other)) => {
            return violated(format!(
                "the extra participant got {other}, not TooManyParticipants"
            ))
        }
        Err(_) => {
            return violated(format!(
                "the extra participant's enter() did not return within {PROMPT:?}"
            ))
        }
    }
    let mut leaving: Vec<Task<()>> = participants[..COUNT.get()]
        .iter()
        .enumerate()
        .map(|(i, barrier)| {
            let barrier = barrier.clone();
            Task::spawn(format!("participant {i} leaving"), async move {
                barrier
                    .leave()
                    .await
                    .ctx(format!("participant {i} leaving"))
            })
        })
        .collect();
    join_all(&mut leaving, PROMPT).await?;
    drop(sessions);
    Ok(Holds::new(format!(
        "participant {} of {COUNT} got TooManyParticipants; the others left normally",
        COUNT.get() + 1
    )))
}
