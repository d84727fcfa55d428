//! Barrier cases: `wait` on a barrier not held, waiters blocked until `release`.

use std::sync::Arc;

use distsync_core::Barrier;
use tokio::time::Instant;

use super::boxed;
use super::scenario::go_interop;
use crate::case::{Case, Claim, Group, Need};
use crate::check::{join_all, ms, within, Check, Context, Holds, Task, PROMPT};
use crate::faults::Hook;
use crate::harness::Harness;

/// The barrier cases, in matrix order.
pub(super) const CASES: &[Case] = &[
    Case {
        id: "barrier_wait_not_held",
        group: Group::Barrier,
        guarantee: "wait returns at once when not held",
        needs: &[Need::Barrier],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(wait_when_not_held(h)),
    },
    Case {
        id: "barrier_blocks_until_release",
        group: Group::Barrier,
        guarantee: "waiters block while held, all pass on release",
        needs: &[Need::Barrier],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(blocks_until_release(h)),
    },
    Case {
        id: "barrier_interop_go",
        group: Group::Barrier,
        guarantee: "interoperates with etcd's Go recipe.Barrier (layout=go) both ways",
        needs: &[Need::Barrier],
        claim: Claim::Offered,
        hooks: &[Hook::GoPeer],
        run: |h| boxed(go_interop::barrier(h)),
    },
];

/// `wait` returns at once on a barrier that is not held: a fresh one, and one held and
/// released again.
async fn wait_when_not_held(h: Harness) -> Check {
    let barrier = h
        .backend()
        .barrier(h.name("barrier").ctx("naming the barrier")?)
        .ctx("making a barrier")?;
    let started = Instant::now();
    within(PROMPT, "wait() on a fresh barrier", barrier.wait()).await?;
    let took = started.elapsed();
    within(PROMPT, "hold()", barrier.hold()).await?;
    within(PROMPT, "release()", barrier.release()).await?;
    within(PROMPT, "wait() on a released barrier", barrier.wait()).await?;
    Ok(Holds::figure(
        format!("returned in {}", ms(took)),
        "wait() returned at once on a fresh and on a released barrier",
    ))
}

/// Waiters block while the barrier is held (holding twice is fine) and all pass on
/// `release`.
async fn blocks_until_release(h: Harness) -> Check {
    const WAITERS: usize = 3;
    let name = h.name("barrier").ctx("naming the barrier")?;
    let barrier = h.backend().barrier(name.clone()).ctx("making a barrier")?;
    within(PROMPT, "hold()", barrier.hold()).await?;
    let mut waiters = Vec::new();
    for i in 0..WAITERS {
        let waiter: Arc<dyn Barrier> = Arc::from(
            h.backend()
                .barrier(name.clone())
                .ctx("making a waiter's barrier")?,
        );
        waiters.push(Task::spawn(format!("waiter {i}"), async move {
            waiter.wait().await.ctx(format!("waiter {i} waiting"))?;
            Ok(Instant::now())
        }));
    }
    for waiter in &waiters {
        waiter
            .ensure_blocked(h.settle(), "the barrier is held")
            .await?;
    }
    within(PROMPT, "hold() of a held barrier", barrier.hold()).await?;
    let released = Instant::now();
    within(PROMPT, "release()", barrier.release()).await?;
    let passed = join_all(&mut waiters, PROMPT).await?;
    let last = passed
        .iter()
        .map(|at| at.saturating_duration_since(released))
        .max()
        .unwrap_or_default();
    Ok(Holds::figure(
        format!("{WAITERS} waiters passed within {}", ms(last)),
        "waiters blocked while held, every one passed on release",
    ))
}
