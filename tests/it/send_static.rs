//! Compile-time checks that what a user holds can cross tasks: guards, sessions, the
//! coordinator, the primitive handles, and the futures of every blocking call.
//!
//! A future of a trait method borrows its handle (`&self`), so it is `Send` but lives
//! as long as the handle; what a user spawns is an `async move` block that owns the
//! handle, and that must be `Send + 'static` (the bound of `tokio::spawn`). Both are
//! checked. The futures are built and dropped, never polled: nothing here waits.

use std::future::Future;
use std::sync::Arc;

use std::time::Duration;

use distsync::election::LeaderInfo;
use distsync::lock::{MultiLockGuard, MultiLocker};
use distsync::session::Lost;
use distsync::stm::{Isolation, Stm, StmTx};
use distsync::{
    Barrier, Bytes, Coordinator, DoubleBarrier, Election, Leadership, LockGuard, Locker, Queue,
    ReadGuard, Result, RwLock, Semaphore, Session,
};

fn assert_send_static<T: Send + 'static>(_: &T) {}

fn assert_send_sync_static<T: Send + Sync + 'static>(_: &T) {}

fn assert_send<T: Send>(_: &T) {}

/// The bound of `tokio::spawn`: the future and its output are `Send + 'static`.
fn assert_spawnable<F>(future: F)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    drop(future);
}

/// A type-level check, for types the test does not hold a value of.
fn send_static<T: Send + 'static>() {}

#[test]
fn guards_and_results_are_send_static() {
    send_static::<Coordinator>();
    send_static::<Session>();
    send_static::<LockGuard>();
    send_static::<ReadGuard>();
    send_static::<Leadership>();
    send_static::<MultiLockGuard>();
    send_static::<MultiLocker>();
    send_static::<Lost>();
    send_static::<LeaderInfo>();
    send_static::<Result<LockGuard>>();
    send_static::<Result<Option<LockGuard>>>();
    send_static::<Result<ReadGuard>>();
    send_static::<Result<Option<ReadGuard>>>();
    send_static::<Result<Leadership>>();
    send_static::<Result<Bytes>>();
    send_static::<Result<Option<Bytes>>>();
    send_static::<distsync::Error>();
    send_static::<StmTx>();
}

#[tokio::test]
async fn handles_and_the_futures_of_blocking_calls_are_send_static() -> Result<()> {
    let coordinator = distsync::connect("memory://").await?;
    assert_send_sync_static(&coordinator);
    assert_spawnable(distsync::connect("memory://"));
    let session = coordinator.session().await?;
    assert_send_sync_static(&session);
    assert_send_static(&session.lost());
    assert_spawnable(session.lost());
    assert_spawnable(owned(&coordinator, |c| async move { c.session().await }));

    // Locker: lock, try_lock; its guard.
    let locker: Arc<dyn Locker> = coordinator.locker(&session, "send/lock")?;
    assert_send_sync_static(&locker);
    assert_send(&locker.lock());
    assert_send(&locker.try_lock());
    let guard = locker.lock().await?;
    assert_send_static(&guard);
    assert_send_static(&guard.lost());
    assert_spawnable(guard.lost());
    assert_spawnable(guard.unlock());
    assert_spawnable(async move { locker.lock().await });
    let locker = coordinator.locker(&session, "send/lock")?;
    assert_spawnable(async move { locker.try_lock().await });

    // RwLock: read, write, try_read, try_write; their guards.
    let rwlock: Arc<dyn RwLock> = coordinator.rwlock(&session, "send/rwlock")?;
    assert_send_sync_static(&rwlock);
    assert_send(&rwlock.read());
    assert_send(&rwlock.write());
    assert_send(&rwlock.try_read());
    assert_send(&rwlock.try_write());
    let read = rwlock.read().await?;
    assert_send_static(&read);
    assert_spawnable(read.unlock());
    assert_spawnable(async move {
        let read = rwlock.read().await?;
        read.unlock().await?;
        let write = rwlock.write().await?;
        write.unlock().await?;
        rwlock.try_read().await?;
        rwlock.try_write().await
    });

    // Election: campaign, leader, observe; the leadership.
    let election: Arc<dyn Election> = coordinator.election(&session, "send/election")?;
    assert_send_sync_static(&election);
    assert_send(&election.campaign("a"));
    assert_send(&election.leader());
    assert_send_static(&election.observe());
    let leadership = election.campaign("a").await?;
    assert_send_static(&leadership);
    assert_spawnable(leadership.resign());
    assert_spawnable(async move { election.campaign("b").await });

    // Queue: dequeue, try_dequeue.
    let queue: Arc<dyn Queue> = coordinator.queue("send/queue")?;
    assert_send_sync_static(&queue);
    assert_send(&queue.dequeue());
    assert_send(&queue.try_dequeue());
    assert_send(&queue.enqueue("x"));
    assert_spawnable(async move {
        queue.enqueue("x").await?;
        queue.try_dequeue().await?;
        queue.dequeue().await
    });

    // Barrier: hold, release, wait.
    let barrier: Arc<dyn Barrier> = coordinator.barrier("send/barrier")?;
    assert_send_sync_static(&barrier);
    assert_send(&barrier.wait());
    assert_send(&barrier.hold());
    assert_send(&barrier.release());
    assert_spawnable(async move {
        barrier.hold().await?;
        barrier.release().await?;
        barrier.wait().await
    });

    // DoubleBarrier: enter, leave.
    let double: Arc<dyn DoubleBarrier> = coordinator.double_barrier(&session, "send/double", 2)?;
    assert_send_sync_static(&double);
    assert_send(&double.enter());
    assert_send(&double.leave());
    assert_spawnable(async move {
        double.enter().await?;
        double.leave().await
    });

    // Semaphore: acquire (bounded too) and try_acquire.
    let semaphore: Arc<dyn Semaphore> = coordinator.semaphore(&session, "send/semaphore", 2)?;
    assert_send_sync_static(&semaphore);
    assert_send(&semaphore.acquire());
    assert_send(&semaphore.try_acquire());
    assert_spawnable(async move {
        let permit = distsync::timeout(Duration::from_secs(1), semaphore.acquire()).await?;
        permit.release().await?;
        semaphore.try_acquire().await?;
        semaphore.acquire().await
    });

    // MultiLocker: lock, try_lock; its guard.
    let multi: MultiLocker = coordinator.multi_locker(&session, &["send/a", "send/b"])?;
    assert_send_sync_static(&multi);
    assert_send(&multi.lock());
    assert_send(&multi.try_lock());
    let all = multi.lock().await?;
    assert_send_static(&all);
    assert_spawnable(all.lost());
    assert_spawnable(all.unlock());
    assert_spawnable(async move { multi.lock().await });

    // Blocking calls bounded by `distsync::timeout`.
    let locker = coordinator.locker(&session, "send/timed")?;
    let queue = coordinator.queue("send/timed")?;
    assert_spawnable(async move {
        let guard = distsync::timeout(Duration::from_secs(1), locker.lock()).await?;
        guard.unlock().await?;
        distsync::timeout(Duration::from_millis(1), queue.dequeue()).await
    });

    // STM: atomically, atomically_with.
    let stm: Stm = coordinator.stm()?;
    assert_send_sync_static(&stm);
    assert_send(&stm.atomically(Isolation::default(), transfer));
    assert_spawnable(async move {
        stm.atomically(Isolation::SerializableSnapshot, transfer)
            .await?;
        stm.atomically_with(Isolation::Serializable, &Default::default(), transfer)
            .await
    });

    // Session::close.
    assert_spawnable(async move { session.close().await });
    Ok(())
}

/// An STM body: a plain `fn` item, as a user would pass a closure.
async fn transfer(tx: StmTx) -> Result<u64> {
    let balance = tx
        .get("accounts/a")
        .await?
        .map_or(0, |value| value.len() as u64);
    tx.put("accounts/b", balance.to_string());
    Ok(balance)
}

/// A future owning a clone of the coordinator, as a spawned task would.
fn owned<F, Fut>(coordinator: &Coordinator, body: F) -> Fut
where
    F: FnOnce(Coordinator) -> Fut,
{
    body(coordinator.clone())
}
