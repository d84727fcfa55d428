//! State survives an etcd restart, and live clients ride it out: a private etcd (the
//! conformance suite's, `distsync_conformance::faults::private`: the Debian `etcd`
//! binary on free loopback ports, data in a temporary directory) is stopped and
//! started again under a connected backend.
//!
//! The suite's restart cases check what every backend must do; this checks what etcd
//! does beyond that: leases (so holders) survive, and waiters blocked across the
//! restart carry on.

use crate::common;
use distsync_core::Primitives;

use std::time::Duration;

use bytes::Bytes;
use distsync_conformance::faults::private;
use distsync_conformance::{connector, StoreKind};
use distsync_core::{Backend, Isolation, Name, SessionOptions};
use distsync_kv::kv::{Kv, Range};

use common::{eventually, within};

const WAIT: Duration = Duration::from_secs(30);

fn etcd_installed() -> bool {
    match private::available(StoreKind::Etcd) {
        Ok(()) => true,
        Err(reason) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true but no private etcd can be started: {reason}");
            }
            eprintln!("\n!!! SKIPPED: {reason}, so the restart test did not run.\n");
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_and_live_clients_survive_a_restart() {
    if !etcd_installed() {
        return;
    }
    let connect = connector(|url| async move { distsync_etcd::backend(&url).await });
    let mut server = private::start(StoreKind::Etcd, connect).await.unwrap();
    let backend = distsync_etcd::backend(&format!("{}/app", server.url()))
        .await
        .unwrap();

    // Durable state: a queue, a held barrier, an STM key.
    let queue = backend.queue(Name::new("jobs").unwrap()).unwrap();
    for item in ["a", "b", "c"] {
        queue.enqueue(item).await.unwrap();
    }
    let barrier = backend.barrier(Name::new("gate").unwrap()).unwrap();
    barrier.hold().await.unwrap();
    let stm = backend.stm().unwrap();
    stm.atomically(Isolation::SerializableSnapshot, |tx| async move {
        tx.put("accounts/x", "100");
        Ok(())
    })
    .await
    .unwrap();

    // Live clients: a holder (its session renewed across the restart) and a waiter
    // (its watch broken by the restart).
    let ttl = Duration::from_secs(10);
    let holder = backend
        .session(SessionOptions::with_ttl(ttl))
        .await
        .unwrap();
    let waiter_session = backend
        .session(SessionOptions::with_ttl(ttl))
        .await
        .unwrap();
    let lock = Name::new("lock").unwrap();
    let held = backend
        .locker(&holder, lock.clone())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let waiter_locker = backend.locker(&waiter_session, lock).unwrap();
    let waiter = tokio::spawn(async move { waiter_locker.lock().await });
    // Stop once the waiter is queued, so that the restart meets it waiting; an
    // answer to its entering transaction that the restart cuts off is asked again.
    eventually(WAIT, "the waiter to queue", || async {
        let queued = backend
            .kv()
            .range(Range::prefix("app/lock/"))
            .await
            .unwrap();
        (queued.count == 2).then_some(())
    })
    .await;
    let barrier_waiter = {
        let barrier = backend.barrier(Name::new("gate").unwrap()).unwrap();
        tokio::spawn(async move { barrier.wait().await })
    };

    server.stop().await.unwrap();
    server.start().await.unwrap();

    // Everything is still there.
    assert_eq!(queue.len().await.unwrap(), 3);
    let balance = stm
        .atomically(Isolation::SerializableSnapshot, |tx| async move {
            tx.get("accounts/x").await
        })
        .await
        .unwrap();
    assert_eq!(balance, Some(Bytes::from("100")));
    assert!(!held.is_lost(), "the holder's lease survived the restart");
    assert!(!holder.is_lost());
    if waiter.is_finished() {
        panic!(
            "the lock is still held, yet the waiter returned {:?}",
            waiter.await
        );
    }
    assert!(!barrier_waiter.is_finished(), "the barrier is still held");

    // The waiters ride out the restart.
    held.unlock().await.unwrap();
    let granted = within(WAIT, "the waiter to get the lock", waiter)
        .await
        .unwrap()
        .unwrap();
    barrier.release().await.unwrap();
    within(WAIT, "the barrier waiter to pass", barrier_waiter)
        .await
        .unwrap()
        .unwrap();
    for item in ["a", "b", "c"] {
        assert_eq!(queue.dequeue().await.unwrap(), Bytes::from(item));
    }
    granted.unlock().await.unwrap();
    holder.close().await.unwrap();
    waiter_session.close().await.unwrap();
}
