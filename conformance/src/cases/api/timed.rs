//! Timed acquisition: every blocking call under `distsync_core::timeout` gives up with
//! `Error::Timeout` after its duration and leaves nothing behind that blocks anyone.

use std::num::NonZeroUsize;
use std::time::Duration;

use distsync_core::{Bytes, Error, Result, Session};
use tokio::time::Instant;

use crate::check::{ensure, eventually, violated, within, Bounded, Check, Context, Holds, PROMPT};
use crate::harness::Harness;

/// How long each timed call waits.
const WAIT: Duration = Duration::from_millis(300);

/// Checks that `call` ended in `Error::Timeout` no sooner than [`WAIT`].
async fn times_out<T>(what: &str, call: impl std::future::Future<Output = Result<T>>) -> Check<()> {
    let started = Instant::now();
    let outcome = within(WAIT + PROMPT, what, async { Ok(call.await) }).await?;
    let waited = started.elapsed();
    match outcome {
        Err(Error::Timeout(after)) if after == WAIT => {
            ensure!(
                waited >= WAIT,
                "{what}: gave up after {waited:?}, before its {WAIT:?}"
            );
            Ok(())
        }
        Err(error) => violated(format!("{what}: expected Timeout({WAIT:?}), got {error}")),
        Ok(_) => violated(format!("{what}: succeeded although it could not")),
    }
}

/// Every blocking call the backend offers, timed out while it cannot succeed, then
/// shown to have left nothing behind: the next caller is served at once.
pub(super) async fn every_blocking_call(h: Harness) -> Check {
    let caps = h.capabilities().clone();
    let s = Sessions {
        a: h.session().bounded("opening session A").await?,
        b: h.session().bounded("opening session B").await?,
        c: h.session().bounded("opening session C").await?,
    };
    let mut checked = Vec::new();
    if caps.lock {
        lock(&h, &s).await?;
        checked.push("lock");
    }
    if caps.rwlock {
        rwlock(&h, &s).await?;
        checked.push("read, write");
    }
    if caps.election {
        election(&h, &s).await?;
        checked.push("campaign");
    }
    if caps.queue {
        queue(&h).await?;
        checked.push("dequeue");
    }
    if caps.barrier {
        barrier(&h).await?;
        checked.push("wait");
    }
    if caps.double_barrier {
        double_barrier(&h, &s).await?;
        checked.push("enter");
    }
    if caps.semaphore {
        semaphore(&h, &s).await?;
        checked.push("acquire");
    }
    ensure!(!checked.is_empty(), "the backend offers no blocking call");
    Ok(Holds::figure(
        format!(
            "{} timed out after {WAIT:?}, nothing left behind",
            checked.join(", ")
        ),
        "each timed call returned Error::Timeout, and the next caller was served at once",
    ))
}

/// The three sessions the calls run in: A holds, B is timed out, C comes next.
struct Sessions {
    a: Session,
    b: Session,
    c: Session,
}

/// B's timed-out lock leaves no waiter entry: C locks once A unlocks.
async fn lock(h: &Harness, s: &Sessions) -> Check<()> {
    let backend = h.backend();
    let name = h.name("lock").ctx("naming")?;
    let held = backend.locker(&s.a, name.clone()).ctx("locker A")?;
    let guard = held.lock().bounded("A locking").await?;
    let timed = backend.locker(&s.b, name.clone()).ctx("locker B")?;
    times_out(
        "B.lock under timeout()",
        distsync_core::timeout(WAIT, timed.lock()),
    )
    .await?;
    eventually(PROMPT, "B's waiter entry going away", || async {
        Ok((held.contenders().await.ctx("counting contenders")? == 1).then_some(()))
    })
    .await?;
    guard.unlock().bounded("A unlocking").await?;
    let next = backend.locker(&s.c, name).ctx("locker C")?;
    next.lock()
        .bounded("C locking after A")
        .await?
        .unlock()
        .bounded("C unlocking")
        .await?;
    Ok(())
}

/// B's timed-out read and write leave nothing: C write-locks once A unlocks.
async fn rwlock(h: &Harness, s: &Sessions) -> Check<()> {
    let backend = h.backend();
    let name = h.name("rwlock").ctx("naming")?;
    let writer = backend.rwlock(&s.a, name.clone()).ctx("rwlock A")?;
    let guard = writer.write().bounded("A write-locking").await?;
    let timed = backend.rwlock(&s.b, name.clone()).ctx("rwlock B")?;
    times_out(
        "B.read under timeout()",
        distsync_core::timeout(WAIT, timed.read()),
    )
    .await?;
    times_out(
        "B.write under timeout()",
        distsync_core::timeout(WAIT, timed.write()),
    )
    .await?;
    guard.unlock().bounded("A unlocking").await?;
    let next = backend.rwlock(&s.c, name).ctx("rwlock C")?;
    next.write()
        .bounded("C write-locking after A")
        .await?
        .unlock()
        .bounded("C unlocking")
        .await?;
    Ok(())
}

/// B's timed-out campaign leaves nothing: C leads once A resigns.
async fn election(h: &Harness, s: &Sessions) -> Check<()> {
    let backend = h.backend();
    let name = h.name("election").ctx("naming")?;
    let leader = backend.election(&s.a, name.clone()).ctx("election A")?;
    let leadership = leader
        .campaign(Bytes::from_static(b"a"))
        .bounded("A campaigning")
        .await?;
    let timed = backend.election(&s.b, name.clone()).ctx("election B")?;
    times_out(
        "B.campaign under timeout()",
        distsync_core::timeout(WAIT, timed.campaign(Bytes::from_static(b"b"))),
    )
    .await?;
    leadership.resign().bounded("A resigning").await?;
    let next = backend.election(&s.c, name).ctx("election C")?;
    let won = next
        .campaign(Bytes::from_static(b"c"))
        .bounded("C campaigning after A resigned")
        .await?;
    let current = next.leader().bounded("reading the leader").await?;
    ensure!(
        current.as_ref().map(|l| l.value.as_ref()) == Some(b"c".as_slice()),
        "after B's timed-out campaign, the leader is {current:?}, not C"
    );
    won.resign().bounded("C resigning").await?;
    Ok(())
}

/// A timed-out dequeue takes nothing: the next item goes to another consumer.
async fn queue(h: &Harness) -> Check<()> {
    let backend = h.backend();
    let name = h.name("queue").ctx("naming")?;
    let timed = backend.queue(name.clone()).ctx("queue")?;
    times_out(
        "dequeue on an empty queue",
        distsync_core::timeout(WAIT, timed.dequeue()),
    )
    .await?;
    timed
        .enqueue(Bytes::from_static(b"x"))
        .bounded("enqueueing")
        .await?;
    let other = backend.queue(name).ctx("queue")?;
    let item = other.try_dequeue().bounded("dequeueing").await?;
    ensure!(
        item.as_deref() == Some(b"x".as_slice()),
        "the item enqueued after a timed-out dequeue came out as {item:?}"
    );
    Ok(())
}

/// A timed-out wait on a held barrier leaves it to be released and passed.
async fn barrier(h: &Harness) -> Check<()> {
    let backend = h.backend();
    let barrier = backend
        .barrier(h.name("barrier").ctx("naming")?)
        .ctx("barrier")?;
    barrier.hold().bounded("holding the barrier").await?;
    times_out(
        "wait on a held barrier",
        distsync_core::timeout(WAIT, barrier.wait()),
    )
    .await?;
    barrier.release().bounded("releasing the barrier").await?;
    barrier
        .wait()
        .bounded("waiting on the released barrier")
        .await?;
    Ok(())
}

/// Entering alone times out; once A's session ends, B and C enter and leave.
async fn double_barrier(h: &Harness, s: &Sessions) -> Check<()> {
    const PARTICIPANTS: NonZeroUsize = NonZeroUsize::new(2).unwrap();
    let backend = h.backend();
    let name = h.name("double").ctx("naming")?;
    let alone = backend
        .double_barrier(&s.a, name.clone(), PARTICIPANTS)
        .ctx("double barrier A")?;
    times_out(
        "enter alone in a barrier of 2",
        distsync_core::timeout(WAIT, alone.enter()),
    )
    .await?;
    // As a cancelled enter, a timed-out one keeps its entry (entering again resumes)
    // until the session ends: ending it withdraws A, and B and C make two, not three
    // (which would be TooManyParticipants).
    s.a.close().bounded("closing A's session").await?;
    let second = backend
        .double_barrier(&s.b, name.clone(), PARTICIPANTS)
        .ctx("double barrier B")?;
    let third = backend
        .double_barrier(&s.c, name, PARTICIPANTS)
        .ctx("double barrier C")?;
    let (entered_b, entered_c) = tokio::join!(
        within(PROMPT, "B entering", second.enter()),
        within(PROMPT, "C entering", third.enter()),
    );
    entered_b?;
    entered_c?;
    let (left_b, left_c) = tokio::join!(
        within(PROMPT, "B leaving", second.leave()),
        within(PROMPT, "C leaving", third.leave()),
    );
    left_b?;
    left_c?;
    Ok(())
}

/// C's timed-out acquire leaves no waiter entry: B acquires again.
async fn semaphore(h: &Harness, s: &Sessions) -> Check<()> {
    const PERMITS: NonZeroUsize = NonZeroUsize::MIN;
    let backend = h.backend();
    let name = h.name("semaphore").ctx("naming")?;
    let holder = backend
        .semaphore(&s.b, name.clone(), PERMITS)
        .ctx("semaphore B")?;
    let permit = holder.acquire().bounded("B acquiring").await?;
    let timed = backend
        .semaphore(&s.c, name.clone(), PERMITS)
        .ctx("semaphore C")?;
    times_out(
        "C.acquire under timeout()",
        distsync_core::timeout(WAIT, timed.acquire()),
    )
    .await?;
    permit.release().bounded("B releasing").await?;
    let next = backend.semaphore(&s.b, name, PERMITS).ctx("semaphore B")?;
    let again = eventually(PROMPT, "C's waiter entry going away", || async {
        next.try_acquire().await.ctx("B acquiring again")
    })
    .await?;
    again.release().bounded("B releasing again").await?;
    Ok(())
}
