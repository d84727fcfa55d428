//! Multi-lock: all or nothing, in a canonical order, so that callers naming the same
//! locks in opposite orders never deadlock and never overlap.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use distsync_core::multi_lock::MultiLocker;
use tokio::time::Instant;

use crate::check::{ensure, join_all, ms, Bounded, Check, Context, Holds, Task, LONG};
use crate::harness::Harness;

/// Rounds per client.
const ROUNDS: usize = 30;

/// Two clients, each with its own session, lock `{a, b}` and `{b, a}` in a loop; an
/// overlap detector inside counts a second holder. Holds when both finish within
/// [`LONG`] (no deadlock) with no overlap, and a third client's `try_lock` on `{b, a}`
/// is refused while one holds.
pub(super) async fn opposite_orders(h: Harness) -> Check {
    let a = h.name("a").ctx("naming a")?;
    let b = h.name("b").ctx("naming b")?;
    let inside = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (i, order) in [[&a, &b], [&b, &a]].into_iter().enumerate() {
        let session = h.session().set_up(format!("opening session {i}")).await?;
        let lockers = order
            .iter()
            .map(|&name| h.backend().locker(&session, name.clone()).map(Arc::from))
            .collect::<distsync_core::Result<Vec<_>>>()
            .ctx("making lockers")?;
        let multi = MultiLocker::new(lockers).ctx("making the multi-lock")?;
        let (inside, overlaps) = (inside.clone(), overlaps.clone());
        tasks.push(Task::spawn(format!("client {i}"), async move {
            for round in 0..ROUNDS {
                let guard = multi
                    .lock()
                    .await
                    .ctx(format!("client {i} locking (round {round})"))?;
                if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                tokio::task::yield_now().await;
                inside.fetch_sub(1, Ordering::SeqCst);
                guard
                    .unlock()
                    .bounded(format!("client {i} unlocking (round {round})"))
                    .await?;
            }
            drop(session);
            Ok(())
        }));
    }
    let started = Instant::now();
    join_all(&mut tasks, LONG).await?;
    let elapsed = started.elapsed();
    let overlaps = overlaps.load(Ordering::SeqCst);
    ensure!(
        overlaps == 0,
        "{overlaps} of {} multi-lock grants found the other client inside",
        2 * ROUNDS
    );

    let holder = h.session().set_up("opening the holder's session").await?;
    let other = h.session().set_up("opening the other session").await?;
    let held = MultiLocker::new(vec![
        Arc::from(h.backend().locker(&holder, a.clone()).ctx("locker")?),
        Arc::from(h.backend().locker(&holder, b.clone()).ctx("locker")?),
    ])
    .ctx("multi-lock")?;
    let refused = MultiLocker::new(vec![
        Arc::from(h.backend().locker(&other, b).ctx("locker")?),
        Arc::from(h.backend().locker(&other, a).ctx("locker")?),
    ])
    .ctx("multi-lock")?;
    let guard = held.lock().bounded("locking {a, b}").await?;
    let tokens = guard.tokens();
    ensure!(
        tokens.len() == 2 && tokens[0].0.as_str() < tokens[1].0.as_str(),
        "the guard's parts are not in canonical order: {tokens:?}"
    );
    let attempt = refused.try_lock().bounded("try_lock of {b, a}").await?;
    ensure!(
        attempt.is_none(),
        "try_lock of {{b, a}} succeeded while {{a, b}} was held"
    );
    guard.unlock().bounded("unlocking {a, b}").await?;
    let after = refused
        .try_lock()
        .bounded("try_lock of {b, a} once free")
        .await?;
    ensure!(
        after.is_some(),
        "try_lock of {{b, a}} refused after {{a, b}} was released (a part was left held)"
    );
    if let Some(guard) = after {
        guard.unlock().bounded("unlocking {b, a}").await?;
    }
    Ok(Holds::figure(
        format!(
            "{} grants in {} from opposite orders, no deadlock, no overlap",
            2 * ROUNDS,
            ms(elapsed)
        ),
        "two clients locking {a, b} and {b, a} in a loop never deadlocked or overlapped; \
         try_lock took nothing while refused",
    ))
}
