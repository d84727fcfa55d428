//! PostgreSQL-specific behaviour beyond the conformance suite, against the server named
//! by `DISTSYNC_POSTGRES_URL` (skipped loudly when unset; a failure under `CI=true`):
//! TTL enforcement by `try_lock` and by keepalive sweeps, session ends from another
//! process, partitioned holders (the lease gate),
//! cancel safety of campaigns, schema creation,
//! export, and argument checks.

use distsync_core::Primitives;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use distsync_conformance::faults::child::{self, ChildHolder, Launcher};
use distsync_conformance::faults::proxy::Proxy;
use distsync_conformance::faults::PartitionMode;
use distsync_conformance::{server_url, ExternalHolder, HoldKind, HolderSpec};
use distsync_core::{Backend, Error, Name, SessionOptions};
use distsync_postgres::PostgresBackend;
use tokio::time::Instant;

fn url() -> Option<String> {
    server_url("DISTSYNC_POSTGRES_URL")
}

/// The backend of the child-process holders (`conformance_child` at the binary's root).
pub(crate) async fn factory() -> Option<Arc<dyn Backend>> {
    let url = url()?;
    Some(Arc::new(distsync_postgres::backend(&url).await.unwrap()))
}

/// A lock holder in a child process (this test binary, re-run as its root's
/// `conformance_child`).
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

/// How many entries (holding or waiting) the line of `kind` `name` has in `schema`.
async fn line_entries(url: &str, schema: &str, kind: &str, name: &Name) -> i64 {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let n: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {schema}.line_entries e \
         JOIN {schema}.lock_names n ON n.id = e.name_id \
         WHERE n.kind = $1 AND n.name = $2 AND NOT e.cancelled"
    ))
    .bind(kind)
    .bind(name.as_str())
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    n
}

/// A backend whose every connection goes through a proxy, to partition it away.
async fn proxied_backend(url: &str) -> (Proxy, PostgresBackend) {
    let (proxy, proxied) = Proxy::front(url).await.unwrap();
    let backend = distsync_postgres::backend(&proxied).await.unwrap();
    (proxy, backend)
}

#[tokio::test(flavor = "multi_thread")]
async fn keepalives_sweep_a_stalled_holder_nobody_waits_for() {
    let Some((url, backend)) = backend().await else {
        return;
    };
    let name = Name::new(unique("swept")).unwrap();
    let ttl = Duration::from_secs(1);
    let mut child = spawn_holder(&url, &name, ttl).await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    // The child's entry in the lock's line, expired or not: the sweep deletes the
    // stalled session's row, and its entry with it.
    let held = format!(
        "SELECT count(*) FROM {schema}.line_entries e \
         JOIN {schema}.lock_names n ON n.id = e.name_id \
         WHERE n.kind = 'lock' AND n.name = $1",
        schema = backend.schema()
    );
    let count = || async {
        sqlx::query_scalar::<_, i64>(&held)
            .bind(name.as_str())
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    // Counted while the child still renews (once paused, any process's sweep may end
    // it after its 1 s TTL, before this test looks).
    assert_eq!(count().await, 1, "the child holds the lock");
    child.pause().await.unwrap();
    // A live session of this process: its keepalive sweeps expired sessions.
    let _session = backend
        .session(SessionOptions::with_ttl(ttl))
        .await
        .unwrap();
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
    let ttl = Duration::from_secs(2);
    let mut child = spawn_holder(&url, &name, ttl).await;
    let session = backend.session(SessionOptions::default()).await.unwrap();
    let locker = backend.locker(&session, name).unwrap();
    // Asked while the holder still renews: on a loaded machine, the time from a pause to
    // the ask may exceed any TTL.
    assert!(
        locker.try_lock().await.unwrap().is_none(),
        "try_lock took a lock whose holder renews"
    );
    child.pause().await.unwrap();
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
    let ec = backend.election(&c, name.clone()).unwrap();
    let leading = ea.campaign("a").await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), eb.campaign("b"))
            .await
            .is_err(),
        "b was elected while a leads"
    );
    // The dropped campaign's entry leaves the line: only the leader's is left.
    eventually(
        Duration::from_secs(5),
        "the cancelled campaign leaving the line",
        || {
            let (url, name) = (url.clone(), name.clone());
            let schema = backend.schema().to_owned();
            async move { line_entries(&url, &schema, "election", &name).await == 1 }
        },
    )
    .await;
    leading.resign().await.unwrap();
    assert_eq!(
        eb.leader().await.unwrap(),
        None,
        "a cancelled candidate became leader"
    );
    let next = tokio::time::timeout(Duration::from_secs(5), ec.campaign("c"))
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
    queue.enqueue("x").await.unwrap();
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

/// A schema marked with a newer layout than this client's is refused with the typed
/// error and left as it is: nothing is created or replaced in it.
#[tokio::test(flavor = "multi_thread")]
async fn a_schema_of_a_newer_layout_is_refused_and_left_untouched() {
    let Some(url) = url() else { return };
    let schema = format!("x_layout_{}", std::process::id());
    let separator = if url.contains('?') { '&' } else { '?' };
    let scoped = format!("{url}{separator}schema={schema}");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let run = |sql: String| {
        let pool = pool.clone();
        async move { sqlx::query(&sql).execute(&pool).await.unwrap() }
    };
    run(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).await;
    drop(distsync_postgres::backend(&scoped).await.unwrap());
    let version = || {
        let pool = pool.clone();
        let sql = format!("SELECT max(version) FROM \"{schema}\".layout");
        async move {
            sqlx::query_scalar::<_, i32>(&sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let ours = distsync_postgres::LAYOUT_VERSION;
    assert_eq!(
        version().await,
        i32::try_from(ours).unwrap(),
        "a new schema is marked"
    );
    // A newer client's schema: its marker moved on, and one of our functions is gone.
    run(format!(
        "UPDATE \"{schema}\".layout SET version = version + 1"
    ))
    .await;
    run(format!("DROP FUNCTION \"{schema}\".guarded_put")).await;
    match distsync_postgres::backend(&scoped).await {
        Err(Error::IncompatibleLayout {
            backend,
            found,
            supported,
        }) => {
            assert_eq!((backend, found, supported), ("postgres", ours + 1, ours));
        }
        other => panic!("a newer layout was not refused: {other:?}"),
    }
    assert_eq!(
        version().await,
        i32::try_from(ours + 1).unwrap(),
        "the marker is kept"
    );
    let recreated: bool = sqlx::query_scalar("SELECT to_regproc($1) IS NOT NULL")
        .bind(format!("\"{schema}\".guarded_put"))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        !recreated,
        "the refusing client created objects in the schema"
    );
    run(format!("DROP SCHEMA \"{schema}\" CASCADE")).await;
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
    // Zero cannot reach a backend (the count is a NonZeroUsize); a count above the
    // table's integer column is refused here.
    assert!(matches!(
        backend.double_barrier(&session, name.clone(), NonZeroUsize::MAX),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        distsync::connect("postgres://h/db?schema=bad-name").await,
        Err(Error::InvalidUrl { .. })
    ));
    assert!(matches!(
        distsync_postgres::backend("redis://127.0.0.1:6379").await,
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
    queue.enqueue_with_priority("late", 9).await.unwrap();
    queue.enqueue("first").await.unwrap();
    queue.enqueue("second").await.unwrap();
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

/// Whether session `id`'s row has expired (or is gone), by the server's clock.
async fn session_expired(url: &str, schema: &str, id: u64) -> bool {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let live: Option<bool> = sqlx::query_scalar(&format!(
        "SELECT expires_at > clock_timestamp() FROM {schema}.sessions WHERE id = $1"
    ))
    .bind(id as i64)
    .fetch_optional(&pool)
    .await
    .unwrap();
    pool.close().await;
    !live.unwrap_or(false)
}

/// A holder partitioned away (its connections reset, new ones refused) keeps its entry
/// until its session's row expires: the waiter is granted then, not before; the
/// holder's own lost() fires at its client-side deadline, before that.
#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_holder_is_granted_to_the_next_only_after_its_lease() {
    let Some((url, waiter_backend)) = backend().await else {
        return;
    };
    let (proxy, holder_backend) = proxied_backend(&url).await;
    let ttl = Duration::from_secs(3);
    let name = Name::new(unique("gated")).unwrap();
    let holder = holder_backend
        .session(SessionOptions::with_ttl(ttl))
        .await
        .unwrap();
    let guard = holder_backend
        .locker(&holder, name.clone())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let first_token = guard.token();
    let waiting = waiter_backend
        .session(SessionOptions::with_ttl(ttl))
        .await
        .unwrap();
    let waiter = waiter_backend.locker(&waiting, name.clone()).unwrap();
    let probe = waiter_backend.locker(&waiting, name.clone()).unwrap();
    let wait = tokio::spawn(async move {
        let guard = waiter.lock().await;
        (Instant::now(), guard)
    });
    eventually(Duration::from_secs(10), "the waiter is queued", || async {
        probe.contenders().await.unwrap() == 2
    })
    .await;

    let cut = Instant::now();
    proxy.set(PartitionMode::Reset);
    tokio::time::timeout(ttl * 2, guard.lost())
        .await
        .expect("the holder's lost() did not fire at its client-side deadline");
    let lost_after = cut.elapsed();
    assert!(
        !wait.is_finished(),
        "granted before the holder's client-side deadline"
    );
    let (granted, next) = tokio::time::timeout(ttl * 3, wait)
        .await
        .expect("the waiter was never granted")
        .unwrap();
    let next = next.unwrap();
    assert!(
        session_expired(&url, waiter_backend.schema(), holder.id().0).await,
        "granted before the previous holder's session expired in the store"
    );
    assert!(
        granted - cut >= lost_after,
        "granted before the holder knew"
    );
    assert!(next.token() > first_token);
    eprintln!(
        "holder partitioned: holder lost() after {lost_after:?}, waiter granted after {:?} (ttl {ttl:?})",
        granted - cut
    );
    next.unlock().await.unwrap();
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clean_unlock_or_close_hands_over_at_once() {
    let Some((url, backend)) = backend().await else {
        return;
    };
    let other = distsync_postgres::backend(&url).await.unwrap();
    // A long TTL: a hand-over gated by the lease would take seconds.
    let ttl = Duration::from_secs(30);
    let name = Name::new(unique("clean")).unwrap();
    for close in [false, true] {
        let holder = backend
            .session(SessionOptions::with_ttl(ttl))
            .await
            .unwrap();
        let guard = backend
            .locker(&holder, name.clone())
            .unwrap()
            .lock()
            .await
            .unwrap();
        let waiting = other.session(SessionOptions::with_ttl(ttl)).await.unwrap();
        let waiter = other.locker(&waiting, name.clone()).unwrap();
        let probe = other.locker(&waiting, name.clone()).unwrap();
        let wait = tokio::spawn(async move { waiter.lock().await });
        eventually(Duration::from_secs(10), "the waiter is queued", || async {
            probe.contenders().await.unwrap() == 2
        })
        .await;
        let released = Instant::now();
        if close {
            holder.close().await.unwrap();
        } else {
            guard.unlock().await.unwrap();
        }
        let next = tokio::time::timeout(Duration::from_secs(2), wait)
            .await
            .expect("a clean release did not hand over at once")
            .unwrap()
            .unwrap();
        eprintln!(
            "clean {}: waiter granted after {:?}",
            if close { "close" } else { "unlock" },
            released.elapsed()
        );
        next.unlock().await.unwrap();
        waiting.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn try_lock_reports_a_lock_held_back_by_a_lease_as_taken() {
    let Some((url, backend)) = backend().await else {
        return;
    };
    let (proxy, holder_backend) = proxied_backend(&url).await;
    let ttl = Duration::from_secs(2);
    let name = Name::new(unique("gated-try")).unwrap();
    let holder = holder_backend
        .session(SessionOptions::with_ttl(ttl))
        .await
        .unwrap();
    let _guard = holder_backend
        .locker(&holder, name.clone())
        .unwrap()
        .lock()
        .await
        .unwrap();
    proxy.set(PartitionMode::Reset);
    let other = backend
        .session(SessionOptions::with_ttl(ttl))
        .await
        .unwrap();
    let locker = backend.locker(&other, name.clone()).unwrap();
    assert!(
        locker.try_lock().await.unwrap().is_none(),
        "try_lock got a lock whose holder's lease still runs"
    );
    let deadline = Instant::now() + ttl * 3;
    let next = loop {
        if let Some(next) = locker.try_lock().await.unwrap() {
            break next;
        }
        assert!(Instant::now() < deadline, "never granted after the lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(session_expired(&url, backend.schema(), holder.id().0).await);
    next.unlock().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn ttl_enforcement_does_not_need_the_pool() {
    let Some((url, backend)) = backend().await else {
        return;
    };
    let name = Name::new(unique("reaper")).unwrap();
    let ttl = Duration::from_secs(2);
    let mut child = spawn_holder(&url, &name, ttl).await;
    let session = backend.session(SessionOptions::default()).await.unwrap();
    let locker = backend.locker(&session, name).unwrap();
    // Registers the name (a pool read) before the pool is exhausted, while the holder
    // still renews (the time from a pause to the ask may exceed any TTL under load).
    assert!(locker.try_lock().await.unwrap().is_none());
    child.pause().await.unwrap();
    // STM bodies hold every pooled connection in an open transaction.
    let stm = backend.stm().unwrap();
    let release = Arc::new(tokio::sync::Notify::new());
    let mut bodies = Vec::new();
    for i in 0..8 {
        let (stm, release) = (stm.clone(), Arc::clone(&release));
        bodies.push(tokio::spawn(async move {
            stm.atomically(distsync_core::Isolation::Serializable, |tx| {
                let release = Arc::clone(&release);
                async move {
                    tx.get(&format!("pgtest/reaper/{i}")).await?;
                    release.notified().await;
                    Ok(())
                }
            })
            .await
        }));
    }
    let started = Instant::now();
    let guard = tokio::time::timeout(ttl * 5, locker.lock())
        .await
        .expect("the stalled holder was not ended while the pool was exhausted")
        .unwrap();
    eprintln!(
        "stalled holder ended with the pool exhausted after {:?}",
        started.elapsed()
    );
    assert!(guard.token() > child.token());
    release.notify_waiters();
    for body in bodies {
        body.abort();
    }
    guard.unlock().await.unwrap();
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn tasks_sharing_a_session_are_separate_double_barrier_participants() {
    let Some((_url, backend)) = backend().await else {
        return;
    };
    let name = Name::new(unique("dbarrier")).unwrap();
    let session = backend.session(SessionOptions::default()).await.unwrap();
    let count = NonZeroUsize::new(3).unwrap();
    let entering: Vec<_> = (0..3)
        .map(|_| {
            let barrier = backend
                .double_barrier(&session, name.clone(), count)
                .unwrap();
            tokio::spawn(async move {
                barrier.enter().await?;
                Ok::<_, Error>(barrier)
            })
        })
        .collect();
    let mut barriers = Vec::new();
    for task in entering {
        let barrier = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("three participants of one session did not all enter")
            .unwrap()
            .unwrap();
        barriers.push(barrier);
    }
    let fourth = backend
        .double_barrier(&session, name.clone(), count)
        .unwrap();
    assert!(matches!(
        fourth.enter().await,
        Err(Error::TooManyParticipants { .. })
    ));
    let leaving: Vec<_> = barriers
        .into_iter()
        .map(|barrier| tokio::spawn(async move { barrier.leave().await }))
        .collect();
    for task in leaving {
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("leave did not return once all had left")
            .unwrap()
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn repeatable_reads_validates_keys_read_as_absent() {
    let Some((_url, backend)) = backend().await else {
        return;
    };
    let stm = backend.stm().unwrap();
    for trial in 0..5 {
        let a = unique(&format!("phantom-a-{trial}"));
        let b = unique(&format!("phantom-b-{trial}"));
        // Both first attempts read both keys before either commits.
        let both_read = Arc::new(tokio::sync::Barrier::new(2));
        let tasks: Vec<_> = [(a.clone(), b.clone()), (b.clone(), a.clone())]
            .into_iter()
            .map(|(mine, theirs)| {
                let (stm, both_read) = (stm.clone(), Arc::clone(&both_read));
                tokio::spawn(async move {
                    let attempts = std::sync::atomic::AtomicUsize::new(0);
                    stm.atomically(distsync_core::Isolation::RepeatableReads, |tx| {
                        let first = attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
                        let (mine, theirs, both_read) =
                            (mine.clone(), theirs.clone(), Arc::clone(&both_read));
                        async move {
                            let absent =
                                tx.get(&mine).await?.is_none() && tx.get(&theirs).await?.is_none();
                            if first {
                                both_read.wait().await;
                            }
                            if absent {
                                tx.put(&mine, "created");
                            }
                            Ok(())
                        }
                    })
                    .await
                })
            })
            .collect();
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("a transaction did not finish")
                .unwrap()
                .unwrap();
        }
        let (ka, kb) = (a.clone(), b.clone());
        let present = stm
            .atomically(distsync_core::Isolation::Serializable, move |tx| {
                let (ka, kb) = (ka.clone(), kb.clone());
                async move {
                    Ok(usize::from(tx.get(&ka).await?.is_some())
                        + usize::from(tx.get(&kb).await?.is_some()))
                }
            })
            .await
            .unwrap();
        assert_eq!(
            present, 1,
            "trial {trial}: both transactions created their key after reading both absent"
        );
    }
}

/// A PgBouncer in front of the test server, in `mode`, on a free port; killed on drop.
struct Bouncer {
    child: std::process::Child,
    url: String,
    _dir: TempDir,
}

/// A directory removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts PgBouncer (`pool_mode = mode`) in front of `upstream`, or `None` when it is
/// not installed (Debian package pgbouncer).
async fn bouncer(upstream: &str, mode: &str) -> Option<Bouncer> {
    let binary = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
        .into_iter()
        .find(|path| std::path::Path::new(path).is_file())?;
    let upstream = url::Url::parse(upstream).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = TempDir(std::env::temp_dir().join(unique("pgbouncer").replace('/', "-")));
    std::fs::create_dir_all(&dir.0).unwrap();
    let user = upstream.username().to_owned();
    let ini = format!(
        "[databases]\n* = host={} port={}\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
         listen_port = {port}\nauth_type = trust\nauth_file = {}\npool_mode = {mode}\n\
         unix_socket_dir =\nlogfile = {}\n",
        upstream.host_str().unwrap(),
        upstream.port().unwrap_or(5432),
        dir.0.join("users.txt").display(),
        dir.0.join("pgbouncer.log").display(),
    );
    std::fs::write(dir.0.join("users.txt"), format!("\"{user}\" \"\"\n")).unwrap();
    std::fs::write(dir.0.join("pgbouncer.ini"), ini).unwrap();
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|out| out.stdout.starts_with(b"0\n"))
        .unwrap_or(false);
    let mut command = std::process::Command::new(binary);
    if root {
        // PgBouncer refuses to run as root; it switches to the postgres user.
        use std::os::unix::fs::PermissionsExt;
        for file in ["", "users.txt", "pgbouncer.ini"] {
            let path = dir.0.join(file);
            let mode = if file.is_empty() { 0o777 } else { 0o644 };
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        command.args(["-u", "postgres"]);
    }
    let child = command
        .arg(dir.0.join("pgbouncer.ini"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("postgres://{user}@127.0.0.1:{port}{}", upstream.path());
    let bouncer = Bouncer {
        child,
        url,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "pgbouncer did not listen within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Some(bouncer)
}

#[tokio::test(flavor = "multi_thread")]
async fn pgbouncer_session_pooling_works_and_transaction_pooling_is_refused() {
    let Some(url) = url() else { return };
    let Some(transaction) = bouncer(&url, "transaction").await else {
        eprintln!("SKIPPED: pgbouncer is not installed (Debian package pgbouncer)");
        return;
    };
    match distsync_postgres::backend(&transaction.url).await {
        Err(Error::Unsupported { operation, .. }) => {
            assert!(
                operation.contains("transaction"),
                "names the mode: {operation}"
            );
        }
        other => panic!("a transaction-pooling pgbouncer was accepted: {other:?}"),
    }
    drop(transaction);

    // Session pooling: no startup parameter PgBouncer rejects, and holds work.
    let session_mode = bouncer(&url, "session").await.unwrap();
    let backend = distsync_postgres::backend(&session_mode.url).await.unwrap();
    let session = backend
        .session(SessionOptions::with_ttl(Duration::from_secs(5)))
        .await
        .unwrap();
    let name = Name::new(unique("bouncer")).unwrap();
    let guard = backend
        .locker(&session, name.clone())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let other = backend.session(SessionOptions::default()).await.unwrap();
    assert!(backend
        .locker(&other, name)
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .is_none());
    guard.unlock().await.unwrap();
    session.close().await.unwrap();
    other.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_whose_counter_row_is_gone_keeps_no_lock_and_registers_the_name_again() {
    let Some((url, backend)) = backend().await else {
        return;
    };
    let name = Name::new(unique("no-counter")).unwrap();
    let session = backend.session(SessionOptions::default()).await.unwrap();
    let locker = backend.locker(&session, name.clone()).unwrap();
    locker.lock().await.unwrap().unlock().await.unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let schema = backend.schema();
    let old: i32 = sqlx::query_scalar(&format!(
        "DELETE FROM {schema}.lock_names WHERE kind = 'lock' AND name = $1 RETURNING id"
    ))
    .bind(name.as_str())
    .fetch_one(&pool)
    .await
    .unwrap();
    let guard = locker
        .lock()
        .await
        .expect("the name is registered again after its row went");
    // The failed grant joined nothing under the vanished id (the statement failed as a
    // whole), and the hold is an entry under the name registered again.
    let orphans: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {schema}.line_entries WHERE name_id = $1"
    ))
    .bind(old)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(orphans, 0, "an entry is left under the vanished name's id");
    let (new, held): (i32, i64) = sqlx::query_as(&format!(
        "SELECT n.id, (SELECT count(*) FROM {schema}.line_entries e \
                        WHERE e.name_id = n.id AND e.token IS NOT NULL) \
         FROM {schema}.lock_names n WHERE n.kind = 'lock' AND n.name = $1"
    ))
    .bind(name.as_str())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_ne!(new, old, "the name was not registered again");
    assert_eq!(held, 1, "the hold is not a granted entry of the new name");
    // And it excludes: another session cannot take it.
    let other = backend.session(SessionOptions::default()).await.unwrap();
    assert!(backend
        .locker(&other, name.clone())
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .is_none());
    guard.unlock().await.unwrap();
    other.close().await.unwrap();
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_writer_waits_for_the_lease_of_a_partitioned_reader() {
    let Some((url, other)) = backend().await else {
        return;
    };
    let (proxy, backend) = proxied_backend(&url).await;
    let ttl = Duration::from_secs(2);
    let name = Name::new(unique("gated-read")).unwrap();
    let reader = backend
        .session(SessionOptions::with_ttl(ttl))
        .await
        .unwrap();
    let read = backend
        .rwlock(&reader, name.clone())
        .unwrap()
        .read()
        .await
        .unwrap();
    let writing = other.session(SessionOptions::with_ttl(ttl)).await.unwrap();
    let writer = other.rwlock(&writing, name.clone()).unwrap();
    let write = tokio::spawn(async move { writer.write().await });
    eventually(Duration::from_secs(10), "the writer is queued", || async {
        line_entries(&url, other.schema(), "rwlock", &name).await == 2
    })
    .await;
    proxy.set(PartitionMode::Reset);
    tokio::time::timeout(ttl * 2, read.lost())
        .await
        .expect("the reader's lost() at its client-side deadline");
    assert!(
        !write.is_finished(),
        "the writer was granted while the reader believed it read"
    );
    let granted = tokio::time::timeout(ttl * 3, write)
        .await
        .expect("the writer was never granted")
        .unwrap()
        .unwrap();
    assert!(
        session_expired(&url, other.schema(), reader.id().0).await,
        "the writer was granted before the vanished reader's session expired"
    );
    granted.unlock().await.unwrap();
}

/// The crate root's constants are what the backend declares and enforces: a session
/// shorter than [`distsync_postgres::MIN_SESSION_TTL`] is refused with a typed error,
/// one of exactly that TTL is opened.
#[tokio::test]
async fn min_session_ttl_is_declared_and_enforced() {
    let Some((_, backend)) = backend().await else {
        return;
    };
    let caps = backend.capabilities();
    assert_eq!(caps.backend, distsync_postgres::BACKEND);
    assert_eq!(caps.min_session_ttl, distsync_postgres::MIN_SESSION_TTL);
    assert_eq!(distsync_postgres::capabilities(), *caps);
    let short = distsync_postgres::MIN_SESSION_TTL - Duration::from_millis(1);
    match backend.session(SessionOptions::with_ttl(short)).await {
        Err(Error::InvalidArgument(_)) => {}
        other => panic!("a TTL below the minimum: {other:?}"),
    }
    let session = backend
        .session(SessionOptions::with_ttl(distsync_postgres::MIN_SESSION_TTL))
        .await
        .unwrap();
    assert_eq!(session.ttl(), distsync_postgres::MIN_SESSION_TTL);
    session.close().await.unwrap();
}

/// A grant within a second of the name's last one leaves `lock_names.used_at` as it
/// is (the counter update is then HOT: no new index entries), and still hands out a
/// higher token; once the stored time is over a second old, a grant moves it on.
#[tokio::test]
async fn grants_within_a_second_leave_used_at_alone() {
    let Some((url, backend)) = backend().await else {
        return;
    };
    let session = backend.session(SessionOptions::default()).await.unwrap();
    let name = Name::new(unique("used-at")).unwrap();
    let locker = backend.locker(&session, name.clone()).unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let read = format!(
        "SELECT extract(epoch FROM used_at)::float8 FROM {}.lock_names \
         WHERE kind = 'lock' AND name = $1",
        backend.schema()
    );
    let used_at = || async {
        sqlx::query_scalar::<_, f64>(&read)
            .bind(name.as_str())
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let cycle = || async {
        let guard = locker.lock().await.unwrap();
        let token = guard.token();
        guard.unlock().await.unwrap();
        token
    };
    let first = cycle().await;
    let registered = used_at().await;
    let started = Instant::now();
    let mut last = first;
    for _ in 0..5 {
        let token = cycle().await;
        assert!(token > last, "token {token} after {last}");
        last = token;
    }
    let unchanged = used_at().await;
    // The grants above ran within a second of the first unless the machine stalled;
    // only then may the stored time have moved (by the rule, not by every grant).
    if started.elapsed() < Duration::from_millis(900) {
        assert_eq!(
            unchanged, registered,
            "grants within a second rewrote used_at"
        );
    }
    tokio::time::sleep_until(started + Duration::from_millis(1100)).await;
    let token = cycle().await;
    assert!(token > last, "token {token} after {last}");
    let moved = used_at().await;
    assert!(
        moved >= registered + 1.0,
        "a grant over a second after the stored time left it at {moved} (was {registered})"
    );
    session.close().await.unwrap();
}
