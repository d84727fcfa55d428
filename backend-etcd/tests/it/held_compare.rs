//! `held_compare` against a real etcd (`DISTSYNC_ETCD_URL`): a caller's own `Txn`
//! guarded by a lock's hold applies while the lock is held, and not once it is lost,
//! even by a holder that does not know it yet.

use crate::common;

use std::time::Duration;

use distsync::store::etcd::etcd_client::{Client, Compare, Txn, TxnOp};
use distsync::store::etcd::{backend_from_client, held_compare};
use distsync::{Coordinator, Error, LockGuard};

use common::{endpoints_of, etcd_url, unique, within};

const WAIT: Duration = Duration::from_secs(10);

/// A client of the test server of the caller's own, as an application has one.
async fn client(url: &str) -> Client {
    let endpoints = endpoints_of(url);
    Client::connect(endpoints.split(',').collect::<Vec<_>>(), None)
        .await
        .unwrap()
}

/// Sends a put of `key` guarded by `guard`'s hold on `client`: whether it applied.
async fn guarded_put(client: &mut Client, guard: &LockGuard, key: &str, value: &str) -> bool {
    put_when(client, held_compare(guard).unwrap(), key, value).await
}

/// Sends a put of `key` under `compare` on `client`: whether it applied.
async fn put_when(client: &mut Client, compare: Compare, key: &str, value: &str) -> bool {
    let txn = Txn::new()
        .when([compare])
        .and_then([TxnOp::put(key, value, None)]);
    client.txn(txn).await.unwrap().succeeded()
}

/// The value of `key`, if any.
async fn value(client: &mut Client, key: &str) -> Option<String> {
    let response = client.get(key, None).await.unwrap();
    response
        .kvs()
        .first()
        .map(|kv| kv.value_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_txn_guarded_by_a_hold_lost_unknowingly_does_not_apply() {
    let Some(url) = etcd_url() else {
        return;
    };
    let coordinator = distsync::connect(&url).await.unwrap();
    let mut client = client(&url).await;
    let name = format!("distsync-test/held-compare/{}", unique("lost"));
    let data = format!("{name}-data");
    let first = coordinator.session().await.unwrap();
    let second = coordinator.session().await.unwrap();

    let guard = within(WAIT, "the first lock", async {
        coordinator.locker(&first, &name).unwrap().lock().await
    })
    .await
    .unwrap();
    assert!(guarded_put(&mut client, &guard, &data, "first").await);
    assert_eq!(value(&mut client, &data).await.as_deref(), Some("first"));

    // The first holder's lease ends behind its back (as when it is paused past its
    // TTL): its guard does not know, and the second holder is granted the lock.
    let waiting = tokio::spawn({
        let locker = coordinator.locker(&second, &name).unwrap();
        async move { locker.lock().await }
    });
    coordinator
        .backend()
        .revoke_session(first.id())
        .await
        .unwrap();
    let next = within(WAIT, "the second lock", waiting)
        .await
        .unwrap()
        .unwrap();

    assert!(!guarded_put(&mut client, &guard, &data, "stale").await);
    assert_eq!(value(&mut client, &data).await.as_deref(), Some("first"));
    assert!(guarded_put(&mut client, &next, &data, "second").await);
    assert_eq!(value(&mut client, &data).await.as_deref(), Some("second"));

    let released = held_compare(&next).unwrap();
    next.unlock().await.unwrap();
    assert!(!put_when(&mut client, released, &data, "released").await);
    assert_eq!(value(&mut client, &data).await.as_deref(), Some("second"));
    drop(guard);
    client.delete(data, None).await.unwrap();
}

#[tokio::test]
async fn a_txn_guarded_under_a_namespace_compares_the_namespaced_key() {
    let Some(url) = etcd_url() else {
        return;
    };
    let mut client = client(&url).await;
    let namespace = format!("distsync-test/held-compare/{}/", unique("namespace"));
    let coordinator = Coordinator::new(backend_from_client(client.clone(), &namespace).unwrap());
    let data = format!("{namespace}-data");
    let session = coordinator.session().await.unwrap();

    let guard = within(WAIT, "the lock", async {
        coordinator.locker(&session, "jobs/a").unwrap().lock().await
    })
    .await
    .unwrap();
    assert!(
        guard.key().starts_with(&format!("{namespace}jobs/a/")),
        "{guard:?}"
    );
    assert!(guarded_put(&mut client, &guard, &data, "locked").await);
    guard.unlock().await.unwrap();

    let rwlock = coordinator.rwlock(&session, "tables/a").unwrap();
    let write = within(WAIT, "the write lock", rwlock.write())
        .await
        .unwrap();
    assert!(write.key().starts_with(&namespace), "{write:?}");
    assert!(guarded_put(&mut client, &write, &data, "written").await);
    let released = write.token();
    write.unlock().await.unwrap();
    assert_eq!(value(&mut client, &data).await.as_deref(), Some("written"));

    let again = within(WAIT, "the write lock again", rwlock.write())
        .await
        .unwrap();
    assert!(again.token() > released);
    assert!(guarded_put(&mut client, &again, &data, "again").await);
    again.unlock().await.unwrap();
    client.delete(data, None).await.unwrap();
    session.close().await.unwrap();
}

#[tokio::test]
async fn a_guard_of_another_backend_is_an_invalid_argument() {
    let coordinator = Coordinator::new(distsync::store::memory::MemoryBackend::new());
    let session = coordinator.session().await.unwrap();
    let guard = coordinator
        .locker(&session, "jobs/a")
        .unwrap()
        .lock()
        .await
        .unwrap();
    let error = held_compare(&guard).unwrap_err();
    assert!(matches!(error, Error::InvalidArgument(_)), "{error:?}");
    guard.unlock().await.unwrap();
}

/// Two backends over one client are two stores to a session: neither takes the other's
/// sessions, so no guard (and no held compare) can pair one backend's lock with the
/// other's session.
#[tokio::test]
async fn a_lock_and_session_of_two_etcd_backends_are_an_invalid_argument() {
    let Some(url) = etcd_url() else {
        return;
    };
    let client = client(&url).await;
    let namespace = format!("distsync-test/held-compare/{}/", unique("two"));
    let granting = backend_from_client(client.clone(), &namespace).unwrap();
    let locking = backend_from_client(client, &namespace).unwrap();
    let session = Coordinator::new(granting).session().await.unwrap();
    match Coordinator::new(locking).locker(&session, "jobs/a") {
        Err(Error::InvalidArgument(why)) => {
            assert!(why.contains("another etcd backend"), "{why}");
        }
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("a backend took another backend's session"),
    }
    session.close().await.unwrap();
}
