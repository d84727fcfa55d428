//! Count-down latch cases: waiters released only at zero (also a waiter cut off by a
//! partition meanwhile, and one cut off long enough to end its client's sessions),
//! racing creators join one latch, another count is refused.

use std::sync::Arc;
use std::time::Duration;

use distsync_core::{Backend, Capabilities, CountDownLatch, Error, Name};
use tokio::time::Instant;

use super::boxed;
use super::counter::SESSION_END_CUT;
use crate::case::{Case, Claim, Group, Need};
use crate::check::{
    ensure, join_all, ms, partitioned_client_with_timeouts, Bounded, Check, Context, Holds, Task,
    LONG, PROMPT,
};
use crate::faults::{Hook, PartitionMode};
use crate::harness::Harness;

/// The claim of the latch rows: the backend's `latch` flag.
const LATCH: Claim = Claim::Flag("latch", |c: &Capabilities| c.latch);

/// The latch cases, in matrix order.
pub(super) const CASES: &[Case] = &[
    Case {
        id: "latch_released_at_zero",
        group: Group::Latch,
        guarantee: "waiters block until the count reaches zero, then all are released",
        needs: &[Need::Latch],
        claim: LATCH,
        hooks: &[],
        run: |h| boxed(released_at_zero(h)),
    },
    Case {
        id: "latch_racing_creators",
        group: Group::Latch,
        guarantee: "racing first count-downs make one latch; another initial count is refused",
        needs: &[Need::Latch],
        claim: LATCH,
        hooks: &[],
        run: |h| boxed(racing_creators(h)),
    },
    Case {
        id: "latch_waiter_across_partition",
        group: Group::Latch,
        guarantee: "a waiter cut off while the count reaches zero is released after the cut \
                    heals, never before zero",
        needs: &[Need::Latch],
        claim: LATCH,
        hooks: &[Hook::Partition],
        run: |h| boxed(waiter_across_partition(h)),
    },
    Case {
        id: "latch_wait_across_session_end",
        group: Group::Latch,
        guarantee: "a waiter cut off (reset, then silent) for longer than a session goes on \
                    waiting; the last count-down after the heal releases it, no error",
        needs: &[Need::Latch],
        claim: LATCH,
        hooks: &[Hook::Partition],
        run: |h| boxed(wait_across_session_end(h)),
    },
];

fn latch(backend: &Arc<dyn Backend>, name: &Name, count: u64) -> Check<Arc<dyn CountDownLatch>> {
    Ok(Arc::from(
        backend.latch(name.clone(), count).ctx("making a latch")?,
    ))
}

/// A waiter task on `latch`, answering when it was released.
fn waiter(what: String, latch: Arc<dyn CountDownLatch>) -> Task<Instant> {
    let doing = format!("{what} waiting");
    Task::spawn(what, async move {
        latch.wait().await.ctx(doing)?;
        Ok(Instant::now())
    })
}

/// Three waiters block through two of three count-downs and are all released by the
/// third.
async fn released_at_zero(h: Harness) -> Check {
    const COUNT: u64 = 3;
    let name = h.name("gate").ctx("naming the latch")?;
    let mut waiters = Vec::new();
    for i in 0..3 {
        waiters.push(waiter(
            format!("waiter {i}"),
            latch(h.backend(), &name, COUNT)?,
        ));
    }
    let counter = latch(h.backend(), &name, COUNT)?;
    for left in (1..COUNT).rev() {
        let answer = counter.count_down().bounded("counting down").await?;
        ensure!(answer == left, "count_down answered {answer}, not {left}");
        for waiter in &waiters {
            waiter
                .ensure_blocked(h.settle(), format!("the count is {left}"))
                .await?;
        }
    }
    let opened = Instant::now();
    let last = counter
        .count_down()
        .bounded("counting down to zero")
        .await?;
    ensure!(last == 0, "the last count_down answered {last}, not 0");
    let released = join_all(&mut waiters, PROMPT).await?;
    let slowest = released
        .iter()
        .map(|at| at.saturating_duration_since(opened))
        .max()
        .unwrap_or_default();
    let again = counter
        .count_down()
        .bounded("counting down an open latch")
        .await?;
    ensure!(
        again == 0,
        "counting down an open latch answered {again}, not 0"
    );
    Ok(Holds::figure(
        format!("released within {}", ms(slowest)),
        "3 waiters blocked at counts 2 and 1, all released at 0",
    ))
}

/// Several handles count down a latch that does not exist yet, all at once: they make
/// one latch, which reaches exactly zero; a handle with another count is refused
/// without changing it.
async fn racing_creators(h: Harness) -> Check {
    const COUNT: u64 = 5;
    let name = h.name("race").ctx("naming the latch")?;
    let mut racers = Vec::new();
    for i in 0..COUNT {
        let latch = latch(h.backend(), &name, COUNT)?;
        racers.push(Task::spawn(format!("racer {i}"), async move {
            latch.count_down().bounded("counting down").await
        }));
    }
    let mut answers = join_all(&mut racers, PROMPT * 2).await?;
    answers.sort_unstable();
    let expected: Vec<u64> = (0..COUNT).collect();
    ensure!(
        answers == expected,
        "{COUNT} racing count-downs of a new latch of {COUNT} answered {answers:?}, not \
         {expected:?}"
    );
    let other = latch(h.backend(), &name, COUNT + 1)?;
    ensure!(
        matches!(other.count().await, Err(Error::InvalidArgument(_))),
        "a handle with count {} read a latch of {COUNT}",
        COUNT + 1
    );
    ensure!(
        matches!(other.count_down().await, Err(Error::InvalidArgument(_))),
        "a handle with count {} counted down a latch of {COUNT}",
        COUNT + 1
    );
    Ok(Holds::new(
        "racing creators made one latch counted down to 0; another count was refused",
    ))
}

/// How long the cut-off waiter's requests may take before they fail.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(500);

/// A waiter through the proxy is cut off (connections reset) while another client
/// counts the latch down to zero; it is not released before zero and is released
/// once the cut heals.
async fn waiter_across_partition(h: Harness) -> Check {
    const COUNT: u64 = 2;
    let name = h.name("gate").ctx("naming the latch")?;
    let partition = partitioned_client_with_timeouts(&h, REQUEST_TIMEOUT, REQUEST_TIMEOUT).await?;
    let mut cut = waiter(
        "the cut-off waiter".to_owned(),
        latch(&partition.backend(), &name, COUNT)?,
    );
    let mut healthy = waiter(
        "the healthy waiter".to_owned(),
        latch(h.backend(), &name, COUNT)?,
    );
    let counter = latch(h.backend(), &name, COUNT)?;
    counter.count_down().bounded("counting down").await?;
    cut.ensure_blocked(h.settle(), "the count is 1").await?;
    partition.set(PartitionMode::Reset);
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure!(
        !cut.is_finished(),
        "the cut-off waiter returned while the count was 1"
    );
    let opened = Instant::now();
    counter
        .count_down()
        .bounded("counting down to zero")
        .await?;
    healthy.join(PROMPT).await?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let healed = Instant::now();
    partition.set(PartitionMode::Forward);
    let released = cut.join(LONG).await?;
    ensure!(
        released >= opened,
        "the cut-off waiter was released before the count reached zero"
    );
    Ok(Holds::figure(
        format!(
            "released {} after the heal",
            ms(released.saturating_duration_since(healed))
        ),
        "a waiter cut off (reset) across the count reaching zero was released after the heal",
    ))
}

/// Rounds of: a waiter through the proxy on a latch of one is cut off (connections
/// reset in the first round, silenced in the second) for [`SESSION_END_CUT`], during
/// which the count stays and the waiter must go on waiting; after the heal another
/// client counts down to zero, and the waiter is released within a prompt margin of
/// that count-down. A session that ends under a wait is no failure of the wait: a latch
/// keeps nothing in it.
async fn wait_across_session_end(h: Harness) -> Check {
    let partition = partitioned_client_with_timeouts(&h, REQUEST_TIMEOUT, REQUEST_TIMEOUT).await?;
    let mut released_after = Vec::new();
    for (round, mode) in [PartitionMode::Reset, PartitionMode::Silent]
        .into_iter()
        .enumerate()
    {
        let name = h.name(&format!("gate-{round}")).ctx("naming the latch")?;
        let mut cut = waiter(
            format!("the cut-off waiter of round {round}"),
            latch(&partition.backend(), &name, 1)?,
        );
        cut.ensure_blocked(h.settle(), "the count is 1").await?;
        partition.set(mode);
        tokio::time::sleep(SESSION_END_CUT).await;
        partition.set(PartitionMode::Forward);
        if cut.is_finished() {
            cut.join(PROMPT).await?;
            return crate::check::violated(format!(
                "round {round}: the cut-off waiter was released while cut off ({mode:?}) at \
                 count 1"
            ));
        }
        let opened = Instant::now();
        let counter = latch(h.backend(), &name, 1)?;
        let left = counter
            .count_down()
            .bounded("counting down to zero after the heal")
            .await?;
        ensure!(
            left == 0,
            "round {round}: the count-down answered {left}, not 0"
        );
        let released = cut.join(PROMPT).await?;
        released_after.push(ms(released.saturating_duration_since(opened)));
    }
    Ok(Holds::figure(
        format!(
            "released {} after the count-downs",
            released_after.join(", ")
        ),
        format!(
            "a waiter cut off for {} s (reset, then silenced) went on waiting and was released \
             by the count-down after each heal",
            SESSION_END_CUT.as_secs()
        ),
    ))
}
