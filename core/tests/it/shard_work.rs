//! Work on a shard (`Shards::while_owned`) on the memory backend: work that runs to its
//! end is done; a shard that moves to another member while the work runs ends it, an
//! outcome apart from the error of a shard that was not owned when asked; and the move
//! waits until the dropped work is gone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use distsync_core::shards::{ShardOptions, ShardWork, Shards, assign};
use distsync_core::{Coordinator, Error};
use futures::FutureExt;
use tokio::time::timeout;

const COUNT: u32 = 8;

/// How long any expected change may take (the memory store answers at once; the loops
/// read the member list every 50 ms).
const DEADLINE: Duration = Duration::from_secs(10);

fn options() -> ShardOptions {
    ShardOptions::default().with_poll(Duration::from_millis(50))
}

/// `member` of the group `group` on `coordinator`, once it owns every shard alone.
async fn alone(coordinator: &Coordinator, group: &str, member: &str) -> Shards {
    alone_with(coordinator, group, member, options()).await
}

/// As [`alone`], with `options`.
async fn alone_with(
    coordinator: &Coordinator,
    group: &str,
    member: &str,
    options: ShardOptions,
) -> Shards {
    let shards = coordinator
        .shards(group, member, COUNT, options)
        .expect("a valid group");
    timeout(
        DEADLINE,
        shards
            .changes()
            .wait_for(|owned| owned.len() == COUNT as usize),
    )
    .await
    .expect("owns every shard in time")
    .expect("the loop runs");
    shards
}

/// A shard that `b` takes from `a` when it joins a group `a` owns alone.
fn moving_to_b() -> u32 {
    let held: BTreeMap<u32, &str> = (0..COUNT).map(|shard| (shard, "a")).collect();
    *assign(&["a", "b"], &held, COUNT)
        .iter()
        .find(|(_, member)| **member == "b")
        .expect("b wins some shard")
        .0
}

/// Sets its flag when dropped: tells that the work future was dropped, not finished.
struct DroppedFlag(Arc<AtomicBool>);

impl Drop for DroppedFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_that_runs_to_its_end_is_done() {
    let coordinator = distsync_kv::memory::connect("memory://").await.unwrap();
    let a = alone(&coordinator, "done", "a").await;
    let token = a.owned().token(3).expect("owned");
    let outcome = a
        .while_owned(3, |given| async move { given })
        .await
        .expect("owned when asked");
    assert_eq!(outcome, ShardWork::Done(token));
    assert_eq!(outcome.done(), Some(token));
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_not_owned_when_asked_is_not_held_and_the_work_never_starts() {
    let coordinator = distsync_kv::memory::connect("memory://").await.unwrap();
    let a = alone(&coordinator, "unowned", "a").await;
    let started = Arc::new(AtomicBool::new(false));
    let outcome = a
        .while_owned(COUNT, |_| {
            started.store(true, Ordering::SeqCst);
            async {}
        })
        .await;
    assert!(matches!(outcome, Err(Error::NotHeld)), "{outcome:?}");
    assert!(!started.load(Ordering::SeqCst), "the work started");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_that_moves_while_the_work_runs_ends_it_without_an_error() {
    let coordinator = distsync_kv::memory::connect("memory://").await.unwrap();
    let a = alone(&coordinator, "moves", "a").await;
    let shard = moving_to_b();
    let token = a.owned().token(shard).expect("owned");
    let dropped = Arc::new(AtomicBool::new(false));
    let (entered, running) = tokio::sync::oneshot::channel();
    let flag = DroppedFlag(dropped.clone());
    let (b, outcome) = {
        let work = a.while_owned(shard, |_| async move {
            let _flag = flag;
            let _ = entered.send(());
            std::future::pending::<()>().await;
        });
        tokio::pin!(work);
        // The work is under way before the other member joins.
        tokio::select! {
            outcome = &mut work => panic!("the work ended before it began: {outcome:?}"),
            _ = running => {}
        }
        let b = coordinator.shards("moves", "b", COUNT, options()).unwrap();
        let outcome = timeout(DEADLINE, work)
            .await
            .expect("the move ends the work in time");
        (b, outcome)
    };
    assert!(
        matches!(outcome, Ok(ShardWork::Ended)),
        "a move is an outcome, not an error: {outcome:?}"
    );
    assert!(outcome.unwrap().is_ended());
    assert!(dropped.load(Ordering::SeqCst), "the work was not dropped");
    // The move completes: b owns the shard under a newer hold.
    let owned = timeout(
        DEADLINE,
        b.changes().wait_for(|owned| owned.contains(shard)),
    )
    .await
    .expect("b owns the shard in time")
    .expect("b's loop runs")
    .clone();
    assert!(owned.token(shard).expect("owned by b") > token);
    // Asked again once it has left, a is told it does not hold the shard.
    assert!(matches!(
        a.while_owned(shard, |_| async {}).await,
        Err(Error::NotHeld)
    ));
    a.stop().await;
    b.stop().await;
}

/// A pin checked between transactions stops at the session's client-side deadline,
/// even when the runtime has had no turn to run the loss: the store may grant the
/// shard to another member from then on. The only worker is blocked past the
/// session's TTL, so nothing can have fired `ended()`.
#[tokio::test(flavor = "current_thread")]
async fn a_pin_is_ended_at_the_session_deadline_before_the_loss_is_run() {
    const TTL: Duration = Duration::from_millis(500);
    let coordinator = distsync_kv::memory::connect("memory://").await.unwrap();
    let shards = alone_with(&coordinator, "deadline", "a", options().with_ttl(TTL)).await;
    let pin = shards.pin(3).await.expect("owned");
    assert!(!pin.is_ended());
    // Blocks the runtime's only thread: no renewal and no loss can run meanwhile.
    std::thread::sleep(TTL);
    assert!(
        pin.ended().now_or_never().is_none(),
        "the loss ran on a blocked runtime"
    );
    assert!(pin.is_ended(), "the deadline passed and the pin reads live");
    drop(pin);
    shards.stop().await;
}
