//! PostgreSQL-specific behaviour beyond the conformance suite, against the server named
//! by `DISTSYNC_POSTGRES_URL` (skipped loudly when unset; a failure under `CI=true`):
//! TTL enforcement by `try_lock` and by keepalive sweeps, session ends from another
//! process, a dead control connection, cancel safety of campaigns, schema creation,
//! export, and argument checks.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use distsync_conformance::faults::child::{self, ChildHolder, Launcher};
use distsync_conformance::{server_url, ExternalHolder, HoldKind, HolderSpec};
use distsync_core::{Backend, Error, Name, SessionOptions};
use distsync_postgres::PostgresBackend;
use tokio::time::Instant;

fn url() -> Option<String> {
    server_url("DISTSYNC_POSTGRES_URL")
}

async fn factory() -> Option<Arc<dyn Backend>> {
    let url = url()?;
    Some(Arc::new(distsync_postgres::backend(&url).await.unwrap()))
}

/// The child process of [`spawn_holder`] (the conformance suite's protocol).
#[test]
#[ignore = "the child process of the lock-holder tests; started by them"]
fn conformance_child() {
    child::child_main(factory);
}

/// A lock holder in a child process (this test binary, re-run as `conformance_child`).
async fn spawn_holder(url: &str, name: &Name, ttl: Duration) -> ChildHolder {
    child::register(Launcher::test_binary().unwrap());
    let launcher = child::registered().unwrap();
    let spec = HolderSpec {
        kind: HoldKind::Lock,
        name: name.clone(),
        ttl,
    };
    child::spawn(launcher, url, &spec).await.unwrap()
}

fn unique(what: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("pgtest/{what}/{nanos:x}-{}", std::process::id())
}

async fn backend() -> Option<(String, PostgresBackend)> {
    let url = url()?;
    let backend = distsync_postgres::backend(&url).await.unwrap();
    Some((url, backend))
}

/// Polls `check` until it returns true, failing after `limit`.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many backends wait for a lock held by someone, as PostgreSQL sees it.
async fn advisory_waiters(url: &str) -> i64 {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn keepalives_sweep_a_stalled_holder_nobody_waits_for() {
    let Some((url, backend)) = backend().await else {
        return;
    };
    let name = Name::new(unique("swept")).unwrap();
    let ttl = Duration::from_secs(1);
    let mut child = spawn_holder(&url, &name, ttl).await;
    child.pause().await.unwrap();
    // A live session of this process: its keepalive sweeps expired sessions.
    let _session = backend
        .session(SessionOptions::with_ttl(ttl))
        .await
        .unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let held = format!(
        "SELECT count(*) FROM pg_locks l JOIN {schema}.lock_names n ON l.objid = n.id::oid \
         WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted \
         AND l.classid = '{schema}'::regnamespace::oid \
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND n.kind = 'lock' AND n.name = $1",
        schema = backend.schema()
    );
    let count = || async {
        sqlx::query_scalar::<_, i64>(&held)
            .bind(name.as_str())
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(count().await, 1, "the child holds the lock");
    eventually(
        Duration::from_secs(20),
        "the sweep ending the stalled holder",
        || async { count().await == 0 },
    )
    .await;
    child.kill().await.unwrap();
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn try_lock_ends_an_expired_holder() {
    let Some((url, backend)) = backend().await else {
        return;
    };
    let name = Name::new(unique("try-expired")).unwrap();
    let ttl = Duration::from_secs(1);
    let mut child = spawn_holder(&url, &name, ttl).await;
    child.pause().await.unwrap();
    let session = backend.session(SessionOptions::default()).await.unwrap();
    let locker = backend.locker(&session, name).unwrap();
    assert!(
        locker.try_lock().await.unwrap().is_none(),
        "the holder has not expired yet"
    );
    let deadline = Instant::now() + ttl * 3;
    let guard = loop {
        if let Some(guard) = locker.try_lock().await.unwrap() {
            break guard;
        }
        assert!(
            Instant::now() < deadline,
            "try_lock never ended the expired holder"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(guard.token() > child.token());
    guard.unlock().await.unwrap();
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_from_another_process_fires_lost_within_the_ttl() {
    let Some((url, backend)) = backend().await else {
        return;
    };
    let other = distsync_postgres::backend(&url).await.unwrap();
    let ttl = Duration::from_secs(1);
    let session = backend
        .session(SessionOptions::with_ttl(ttl))
        .await
        .unwrap();
    let locker = backend
        .locker(&session, Name::new(unique("revoked")).unwrap())
        .unwrap();
    let guard = locker.lock().await.unwrap();
    let revoked = Instant::now();
    other.revoke_session(session.id()).await.unwrap();
    tokio::time::timeout(ttl, guard.lost())
        .await
        .expect("lost() did not fire within the TTL of a store-side revoke");
    eprintln!("remote revoke noticed after {:?}", revoked.elapsed());
    assert!(matches!(guard.unlock().await, Err(Error::SessionLost)));
    // The session cannot be used for new holds.
    assert!(matches!(locker.try_lock().await, Err(Error::SessionLost)));
}

#[tokio::test(flavor = "multi_thread")]
async fn terminated_control_connection_loses_the_session() {
    let Some((url, backend)) = backend().await else {
        return;
    };
    let ttl = Duration::from_secs(1);
    let session = backend
        .session(SessionOptions::with_ttl(ttl))
        .await
        .unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let terminated: Vec<bool> = sqlx::query_scalar(&format!(
        "SELECT pg_terminate_backend(pid) FROM {}.sessions WHERE id = $1",
        backend.schema()
    ))
    .bind(session.id().0 as i64)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(terminated, [true]);
    tokio::time::timeout(ttl, session.lost())
        .await
        .expect("lost() did not fire after the control connection died");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelled_campaign_leaves_the_queue_and_never_leads() {
    let Some((url, backend)) = backend().await else {
        return;
    };
    let name = Name::new(unique("election")).unwrap();
    let (a, b, c) = (
        backend.session(SessionOptions::default()).await.unwrap(),
        backend.session(SessionOptions::default()).await.unwrap(),
        backend.session(SessionOptions::default()).await.unwrap(),
    );
    let ea = backend.election(&a, name.clone()).unwrap();
    let eb = backend.election(&b, name.clone()).unwrap();
    let ec = backend.election(&c, name).unwrap();
    let leading = ea.campaign("a".into()).await.unwrap();
    let waiters_before = advisory_waiters(&url).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), eb.campaign("b".into()))
            .await
            .is_err(),
        "b was elected while a leads"
    );
    // The dropped campaign's backend leaves PostgreSQL's lock queue.
    eventually(
        Duration::from_secs(5),
        "the cancelled campaign leaving the queue",
        || {
            let url = url.clone();
            async move { advisory_waiters(&url).await <= waiters_before }
        },
    )
    .await;
    leading.resign().await.unwrap();
    assert_eq!(
        eb.leader().await.unwrap(),
        None,
        "a cancelled candidate became leader"
    );
    let next = tokio::time::timeout(Duration::from_secs(5), ec.campaign("c".into()))
        .await
        .expect("c was not elected")
        .unwrap();
    assert_eq!(ec.leader().await.unwrap().unwrap().value, "c");
    next.resign().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_is_created_concurrently_by_an_ordinary_role() {
    let Some(url) = url() else { return };
    let schema = format!(
        "t_{}_{:x}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let separator = if url.contains('?') { '&' } else { '?' };
    let scoped = format!("{url}{separator}schema={schema}");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let superuser: bool =
        sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&pool)
            .await
            .unwrap();
    if superuser {
        eprintln!("note: the test role is a superuser; this test proves less");
    }
    let creators: Vec<_> = (0..4)
        .map(|_| {
            let scoped = scoped.clone();
            tokio::spawn(async move { distsync_postgres::backend(&scoped).await })
        })
        .collect();
    let mut backends = Vec::new();
    for creator in creators {
        backends.push(creator.await.unwrap().unwrap());
    }
    assert_eq!(backends[0].schema(), schema);
    // The schema works: a queue round trip and a lock.
    let queue = backends[0].queue(Name::new("q").unwrap()).unwrap();
    queue.enqueue("x".into()).await.unwrap();
    assert_eq!(
        backends[1]
            .queue(Name::new("q").unwrap())
            .unwrap()
            .dequeue()
            .await
            .unwrap(),
        "x"
    );
    let session = backends[2]
        .session(SessionOptions::default())
        .await
        .unwrap();
    let guard = backends[2]
        .locker(&session, Name::new("l").unwrap())
        .unwrap()
        .lock()
        .await
        .unwrap();
    guard.unlock().await.unwrap();
    session.close().await.unwrap();
    drop(backends);
    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn arguments_are_checked() {
    let Some((url, backend)) = backend().await else {
        return;
    };
    let other = distsync_postgres::backend(&url).await.unwrap();
    let foreign = other.session(SessionOptions::default()).await.unwrap();
    let name = Name::new(unique("args")).unwrap();
    assert!(matches!(
        backend.locker(&foreign, name.clone()),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        backend
            .session(SessionOptions::with_ttl(Duration::from_millis(500)))
            .await,
        Err(Error::InvalidArgument(_))
    ));
    let session = backend.session(SessionOptions::default()).await.unwrap();
    assert!(matches!(
        backend.double_barrier(&session, name.clone(), 0),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        distsync_postgres::connect("postgres://h/db?schema=bad-name").await,
        Err(Error::InvalidUrl { .. })
    ));
    assert!(matches!(
        distsync_postgres::connect("redis://127.0.0.1:6379").await,
        Err(Error::InvalidUrl { .. })
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn export_lists_durable_state_and_live_holds() {
    let Some(url) = url() else { return };
    let schema = format!(
        "x_{}_{:x}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let separator = if url.contains('?') { '&' } else { '?' };
    let backend = distsync_postgres::backend(&format!("{url}{separator}schema={schema}"))
        .await
        .unwrap();
    let name = |s: &str| Name::new(s).unwrap();
    let queue = backend.queue(name("jobs")).unwrap();
    queue.enqueue_with_priority("late".into(), 9).await.unwrap();
    queue.enqueue("first".into()).await.unwrap();
    queue.enqueue("second".into()).await.unwrap();
    backend.barrier(name("gate")).unwrap().hold().await.unwrap();
    backend
        .stm()
        .unwrap()
        .atomically(distsync_core::Isolation::Serializable, |tx| async move {
            tx.put("k", "v");
            Ok(())
        })
        .await
        .unwrap();
    let session = backend.session(SessionOptions::default()).await.unwrap();
    let guard = backend
        .locker(&session, name("mutex"))
        .unwrap()
        .lock()
        .await
        .unwrap();

    let snapshot = backend.export().await.unwrap();
    let items: Vec<(u16, &[u8])> = snapshot.queues[&name("jobs")]
        .iter()
        .map(|item| (item.priority, item.item.as_ref()))
        .collect();
    assert_eq!(items, [(0, &b"first"[..]), (0, b"second"), (9, b"late")]);
    assert_eq!(snapshot.stm[&name("k")], "v");
    assert_eq!(snapshot.barriers, [name("gate")]);
    assert_eq!(snapshot.active_holds, [guard.key().to_owned()]);

    guard.unlock().await.unwrap();
    session.close().await.unwrap();
    assert!(backend.export().await.unwrap().active_holds.is_empty());
    drop(backend);
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn contenders_counts_the_holder_and_queued_waiters() {
    let Some((_url, backend)) = backend().await else {
        return;
    };
    let name = Name::new(unique("contenders")).unwrap();
    let holder = backend.session(SessionOptions::default()).await.unwrap();
    let waiter = backend.session(SessionOptions::default()).await.unwrap();
    let locker = backend.locker(&holder, name.clone()).unwrap();
    let waiting_locker = backend.locker(&waiter, name).unwrap();
    assert_eq!(locker.contenders().await.unwrap(), 0, "never locked");

    let guard = locker.lock().await.unwrap();
    assert_eq!(locker.contenders().await.unwrap(), 1, "held");

    let wait = tokio::spawn(async move { waiting_locker.lock().await });
    eventually(Duration::from_secs(10), "the waiter is counted", || async {
        locker.contenders().await.unwrap() == 2
    })
    .await;
    assert!(!wait.is_finished(), "the waiter must still be queued");

    guard.unlock().await.unwrap();
    let waiter_guard = tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(locker.contenders().await.unwrap(), 1, "the waiter holds it");
    waiter_guard.unlock().await.unwrap();
    assert_eq!(locker.contenders().await.unwrap(), 0, "free again");
}
