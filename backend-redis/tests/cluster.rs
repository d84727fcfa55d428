//! Redis Cluster (`DISTSYNC_REDIS_CLUSTER_URL`, started by `scripts/servers.sh`;
//! skipped loudly when unset, a failure under `CI=true`): what is particular to a
//! cluster, where a session key and what the session holds live in different hash
//! slots (see `src/cluster.rs`). A session renews holds on every master, a hold gone
//! in one slot ends the session and frees what it held in the others, closing a
//! session frees every slot at once, a waiter is woken whichever node serves its
//! lock, and what a cluster cannot do atomically is refused with `Unsupported`. The
//! conformance runner's `redis-cluster` column runs the suite and the master
//! failover cases.

use std::time::Duration;

use distsync_conformance::server_url;
use distsync_core::{Backend, Error, LockGuard, Name, SessionOptions};
use distsync_redis::redis;

/// Names spread over the cluster's slots (hence its masters).
const NAMES: usize = 12;

fn cluster_url() -> Option<String> {
    server_url("DISTSYNC_REDIS_CLUSTER_URL")
}

/// `url` with a namespace of this test's own and no replica acknowledgement (these
/// tests fail nothing over).
fn own_namespace(url: &str, tag: &str) -> String {
    let base = url.split_once('?').map_or(url, |(base, _)| base);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{base}?namespace=cluster-test-{tag}-{}-{nanos}:",
        std::process::id()
    )
}

fn names() -> Vec<Name> {
    (0..NAMES)
        .map(|n| Name::new(format!("spread/{n}")).unwrap())
        .collect()
}

/// A plain cluster connection to the nodes of `url`, to look at keys behind the
/// backend's back.
async fn raw(url: &str) -> redis::cluster_async::ClusterConnection {
    let rest = url.trim_start_matches("redis+cluster://");
    let hosts = rest.split(['?', '/']).next().unwrap();
    let nodes: Vec<String> = hosts.split(',').map(|h| format!("redis://{h}")).collect();
    redis::cluster::ClusterClient::new(nodes)
        .unwrap()
        .get_async_connection()
        .await
        .unwrap()
}

async fn exists(conn: &mut redis::cluster_async::ClusterConnection, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<i64>(conn)
        .await
        .unwrap()
        == 1
}

async fn lock_all(
    backend: &distsync_redis::RedisBackend,
    session: &distsync_core::Session,
) -> Vec<LockGuard> {
    let mut guards = Vec::new();
    for name in names() {
        guards.push(backend.locker(session, name).unwrap().lock().await.unwrap());
    }
    guards
}

/// Every name can be taken by another session now (tries, no waiting).
async fn all_free(backend: &distsync_redis::RedisBackend) -> bool {
    let other = backend
        .session(SessionOptions::with_ttl(Duration::from_secs(5)))
        .await
        .unwrap();
    let mut free = true;
    for name in names() {
        match backend
            .locker(&other, name)
            .unwrap()
            .try_lock()
            .await
            .unwrap()
        {
            Some(guard) => guard.unlock().await.unwrap(),
            None => free = false,
        }
    }
    other.close().await.unwrap();
    free
}

/// Polls `check` every 50 ms until it holds or `within` passes.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_session_renews_its_holds_on_every_master() {
    let Some(url) = cluster_url() else { return };
    let url = own_namespace(&url, "renew");
    let backend = distsync_redis::backend(&url).await.unwrap();
    let ttl = Duration::from_millis(600);
    let session = backend
        .session(SessionOptions::with_ttl(ttl))
        .await
        .unwrap();
    let guards = lock_all(&backend, &session).await;
    let mut conn = raw(&url).await;
    // Four TTLs: every entry key lives only as long as renewals reach its slot.
    tokio::time::sleep(4 * ttl).await;
    assert!(!session.is_lost(), "the session was lost while renewing");
    for guard in &guards {
        assert!(
            exists(&mut conn, guard.key()).await,
            "{} expired",
            guard.key()
        );
    }
    assert!(
        !all_free(&backend).await,
        "another session took a held name"
    );
    for guard in guards {
        guard.unlock().await.unwrap();
    }
    assert!(all_free(&backend).await);
    session.close().await.unwrap();
}

#[tokio::test]
async fn a_hold_gone_in_one_slot_ends_the_session_and_frees_the_others() {
    let Some(url) = cluster_url() else { return };
    let url = own_namespace(&url, "gone");
    let backend = distsync_redis::backend(&url).await.unwrap();
    // A long TTL: the names must come free through the loss, not through expiry.
    let ttl = Duration::from_secs(30);
    let session = backend
        .session(SessionOptions::with_ttl(ttl))
        .await
        .unwrap();
    let guards = lock_all(&backend, &session).await;
    let mut conn = raw(&url).await;
    redis::cmd("DEL")
        .arg(guards[0].key())
        .query_async::<i64>(&mut conn)
        .await
        .unwrap();
    // The next renewal (every TTL/3) finds the key gone.
    tokio::time::timeout(ttl / 2, session.lost())
        .await
        .expect("lost() within half the TTL");
    assert!(
        eventually(Duration::from_secs(10), || all_free(&backend)).await,
        "the names the lost session held in other slots were not released"
    );
    drop(guards);
}

#[tokio::test]
async fn closing_a_session_frees_every_slot_at_once() {
    let Some(url) = cluster_url() else { return };
    let url = own_namespace(&url, "close");
    let backend = distsync_redis::backend(&url).await.unwrap();
    let session = backend
        .session(SessionOptions::with_ttl(Duration::from_secs(30)))
        .await
        .unwrap();
    let guards = lock_all(&backend, &session).await;
    let keys: Vec<String> = guards.iter().map(|g| g.key().to_owned()).collect();
    drop(guards);
    session.close().await.unwrap();
    let mut conn = raw(&url).await;
    for key in &keys {
        assert!(!exists(&mut conn, key).await, "{key} outlived the session");
    }
    assert!(all_free(&backend).await);
}

#[tokio::test]
async fn a_waiter_is_woken_whichever_node_serves_its_lock() {
    let Some(url) = cluster_url() else { return };
    let url = own_namespace(&url, "wake");
    let holder_backend = distsync_redis::backend(&url).await.unwrap();
    let waiter_backend = distsync_redis::backend(&url).await.unwrap();
    // With a 30 s TTL, a waiter that was not woken would re-check only after it.
    let options = SessionOptions::with_ttl(Duration::from_secs(30));
    let holder = holder_backend.session(options.clone()).await.unwrap();
    let waiter = waiter_backend.session(options).await.unwrap();
    for name in names() {
        let guard = holder_backend
            .locker(&holder, name.clone())
            .unwrap()
            .lock()
            .await
            .unwrap();
        let locker = waiter_backend.locker(&waiter, name.clone()).unwrap();
        let waiting = tokio::spawn(async move { locker.lock().await });
        // The waiter is in line (its entry counts) before the release.
        let line = holder_backend.locker(&holder, name.clone()).unwrap();
        assert!(
            eventually(Duration::from_secs(10), || async {
                line.contenders().await.unwrap() == 2
            })
            .await
        );
        guard.unlock().await.unwrap();
        let granted = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap_or_else(|_| panic!("the waiter on {name} was not woken"))
            .unwrap()
            .unwrap();
        granted.unlock().await.unwrap();
    }
    holder.close().await.unwrap();
    waiter.close().await.unwrap();
}

#[tokio::test]
async fn what_spans_two_slots_is_declared_and_refused() {
    let Some(url) = cluster_url() else { return };
    let url = own_namespace(&url, "declared");
    let backend = distsync_redis::backend(&url).await.unwrap();
    let capabilities = backend.capabilities();
    assert!(!capabilities.guarded_writes);
    assert!(
        !capabilities.survives_failover,
        "no replica acknowledgement asked"
    );
    assert!(!capabilities.fencing, "no replica acknowledgement asked");
    let acknowledged = distsync_redis::backend(&format!("{url}&wait_replicas=1"))
        .await
        .unwrap();
    assert!(acknowledged.capabilities().survives_failover);
    assert!(acknowledged.capabilities().fencing);
    let session = backend
        .session(SessionOptions::with_ttl(Duration::from_secs(5)))
        .await
        .unwrap();
    let guard = backend
        .locker(&session, names()[0].clone())
        .unwrap()
        .lock()
        .await
        .unwrap();
    assert!(matches!(
        guard.put_if_held("k", "v").await,
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(
        backend.status("").await,
        Err(Error::Unsupported { .. })
    ));
    guard.unlock().await.unwrap();
    session.close().await.unwrap();
}

#[tokio::test]
async fn a_revoke_from_another_client_frees_every_slot_at_once() {
    let Some(url) = cluster_url() else { return };
    let url = own_namespace(&url, "revoke");
    let owner = distsync_redis::backend(&url).await.unwrap();
    let other = distsync_redis::backend(&url).await.unwrap();
    let session = owner
        .session(SessionOptions::with_ttl(Duration::from_secs(30)))
        .await
        .unwrap();
    let guards = lock_all(&owner, &session).await;
    let keys: Vec<String> = guards.iter().map(|g| g.key().to_owned()).collect();
    // The other client knows only the session's id: the store's registry lists the
    // holds, which live in other slots than the session key.
    other.revoke_session(session.id()).await.unwrap();
    let mut conn = raw(&url).await;
    for key in &keys {
        assert!(!exists(&mut conn, key).await, "{key} outlived the revoke");
    }
    assert!(all_free(&other).await);
    tokio::time::timeout(Duration::from_secs(10), session.lost())
        .await
        .expect("the owner learns of the revoke");
    drop(guards);
}
