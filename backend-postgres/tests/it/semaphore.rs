//! The PostgreSQL semaphore beyond the conformance cases, against the server named by
//! `DISTSYNC_POSTGRES_URL` (skipped loudly when unset; a failure under `CI=true`): one
//! wake-up per grant and no connection per waiter, the lease gate after a lost session,
//! the count forgotten once the line has expired, and a withdrawal that overtakes its
//! join.

use distsync_core::Primitives;
use std::num::NonZeroUsize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use distsync_conformance::faults::proxy::Proxy;
use distsync_conformance::faults::PartitionMode;
use distsync_conformance::server_url;
use distsync_core::{Backend, Error, Name, Session, SessionOptions};
use distsync_postgres::PostgresBackend;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::time::Instant;

const SHORT: Duration = Duration::from_secs(10);

fn unique(what: &str) -> Name {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    Name::new(format!(
        "pgtest/sem/{what}/{nanos:x}-{}",
        std::process::id()
    ))
    .unwrap()
}

async fn backend() -> Option<(String, PostgresBackend)> {
    let url = server_url("DISTSYNC_POSTGRES_URL")?;
    let backend = distsync_postgres::backend(&url).await.unwrap();
    Some((url, backend))
}

async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(SHORT, future)
        .await
        .expect("did not finish in time")
}

/// A permit count for the raw API, which takes only non-zero counts.
fn permits(count: usize) -> NonZeroUsize {
    NonZeroUsize::new(count).expect("a test names at least one permit")
}

/// Polls `check` until it returns true, failing after [`SHORT`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + SHORT;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {SHORT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Entries of semaphore `name` in line (holders, waiters, tombstones).
async fn in_line(pool: &PgPool, schema: &str, name: &Name) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {schema}.semaphore_entries e \
         JOIN {schema}.lock_names n ON n.id = e.name_id \
         WHERE n.kind = 'semaphore' AND n.name = $1"
    ))
    .bind(name.as_str())
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Whether session `id`'s row has expired (or is gone), by the server's clock.
async fn session_expired(pool: &PgPool, schema: &str, session: &Session) -> bool {
    let live: Option<bool> = sqlx::query_scalar(&format!(
        "SELECT expires_at > clock_timestamp() FROM {schema}.sessions WHERE id = $1"
    ))
    .bind(session.id().0 as i64)
    .fetch_optional(pool)
    .await
    .unwrap();
    !live.unwrap_or(false)
}

/// Terminates every connection of `session` (as a network reset would): its owner
/// declares it lost, and its row stays until it expires.
/// A backend whose every connection goes through a proxy, to partition it away.
async fn proxied_backend(url: &str) -> (Proxy, PostgresBackend) {
    let (proxy, proxied) = Proxy::front(url).await.unwrap();
    let backend = distsync_postgres::backend(&proxied).await.unwrap();
    (proxy, backend)
}

/// With both permits of 2 held and three waiters, each of three releases publishes one
/// wake-up, addressed to the waiter it lets in.
#[tokio::test(flavor = "multi_thread")]
async fn each_release_wakes_only_the_waiter_it_lets_in() {
    let Some((url, backend)) = backend().await else {
        return;
    };
    let schema = backend.schema().to_owned();
    let pool = PgPool::connect(&url).await.unwrap();
    let oid: i64 = sqlx::query_scalar(&format!("SELECT ('{schema}'::regnamespace::oid)::bigint"))
        .fetch_one(&pool)
        .await
        .unwrap();
    let mut listener = PgListener::connect(&url).await.unwrap();
    listener.listen(&format!("distsync_{oid}")).await.unwrap();

    let name = unique("herd");
    let (a, b) = (
        backend.session(SessionOptions::default()).await.unwrap(),
        backend.session(SessionOptions::default()).await.unwrap(),
    );
    let held_a = within(
        backend
            .semaphore(&a, name.clone(), permits(2))
            .unwrap()
            .acquire(),
    )
    .await
    .unwrap();
    let held_b = within(
        backend
            .semaphore(&b, name.clone(), permits(2))
            .unwrap()
            .acquire(),
    )
    .await
    .unwrap();
    let mut waiters = Vec::new();
    let mut sessions = vec![a.id().0, b.id().0];
    for i in 0..3 {
        let session = backend.session(SessionOptions::default()).await.unwrap();
        sessions.push(session.id().0);
        let semaphore = backend
            .semaphore(&session, name.clone(), permits(2))
            .unwrap();
        waiters.push(tokio::spawn(async move {
            let permit = semaphore.acquire().await.unwrap();
            (permit, semaphore, session)
        }));
        eventually("the waiter joins", || async {
            in_line(&pool, &schema, &name).await == 3 + i
        })
        .await;
    }
    // No connection per waiter: see tests/it/connections.rs for the bound.

    let mut waiters = waiters.into_iter();
    held_a.release().await.unwrap();
    let (first, _s0, _) = within(waiters.next().unwrap()).await.unwrap();
    held_b.release().await.unwrap();
    let (second, _s1, _) = within(waiters.next().unwrap()).await.unwrap();
    let first_key = first.key().to_owned();
    let first_token = first.token().get();
    first.release().await.unwrap();
    let (third, _s2, _) = within(waiters.next().unwrap()).await.unwrap();
    // Payloads are delivered in commit order: everything notified so far comes before
    // the sentinel.
    let sentinel = format!("m:sentinel-{}", name.as_str());
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(format!("distsync_{oid}"))
        .bind(&sentinel)
        .execute(&pool)
        .await
        .unwrap();
    let mut woken = Vec::new();
    loop {
        let notification = within(listener.recv()).await.unwrap();
        let payload = notification.payload();
        if payload == sentinel {
            break;
        }
        let Some(rest) = payload.strip_prefix("m:") else {
            continue;
        };
        let session: u64 = rest.split('.').next().unwrap().parse().unwrap();
        if sessions.contains(&session) {
            woken.push(rest.to_owned());
        }
    }
    // A permit's key ends with `/<session hex>/<entry>`: the payload is
    // `<session decimal>.<entry>:<token>`, the token carried to the waiter granted.
    let wake_of = |key: &str, token: u64| {
        let mut parts = key.rsplit('/');
        let entry = parts.next().unwrap();
        let session = u64::from_str_radix(parts.next().unwrap(), 16).unwrap();
        format!("{session}.{entry}:{token}")
    };
    assert_eq!(
        woken,
        vec![
            wake_of(&first_key, first_token),
            wake_of(second.key(), second.token().get()),
            wake_of(third.key(), third.token().get())
        ],
        "exactly one wake-up per grant, to the waiter granted, with its token"
    );
    assert!(third.token() > second.token());
    drop((second, third));
}

/// A holder partitioned away (its connections reset) sees `lost()` at its client-side
/// deadline, and its permit is granted to the waiter only once the holder's session has
/// expired in the store; while the line lives, another count is refused; once it has expired, any
/// count is accepted.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_holders_permit_is_granted_only_after_its_lease() {
    let Some((url, other)) = backend().await else {
        return;
    };
    let (proxy, backend) = proxied_backend(&url).await;
    let schema = backend.schema().to_owned();
    let pool = PgPool::connect(&url).await.unwrap();
    let ttl = Duration::from_secs(2);
    let name = unique("gated");
    let holder = backend
        .session(SessionOptions::with_ttl(ttl))
        .await
        .unwrap();
    let permit = within(
        backend
            .semaphore(&holder, name.clone(), permits(1))
            .unwrap()
            .acquire(),
    )
    .await
    .unwrap();
    let waiting = other.session(SessionOptions::with_ttl(ttl)).await.unwrap();
    let semaphore = other.semaphore(&waiting, name.clone(), permits(1)).unwrap();
    let wait = tokio::spawn(async move {
        let permit = semaphore.acquire().await;
        (Instant::now(), permit)
    });
    eventually("the waiter joins", || async {
        in_line(&pool, &schema, &name).await == 2
    })
    .await;

    let cut_at = Instant::now();
    proxy.set(PartitionMode::Reset);
    within(permit.lost()).await;
    let lost_after = cut_at.elapsed();
    assert!(
        !session_expired(&pool, &schema, &holder).await,
        "the test needs the holder's lease to outlive the cut"
    );
    assert!(!wait.is_finished(), "granted while the holder's lease runs");
    let refused = other.semaphore(&waiting, name.clone(), permits(3)).unwrap();
    assert!(matches!(
        refused.try_acquire().await,
        Err(Error::InvalidArgument(m)) if m.contains("in use with 1 permits")
    ));

    let (granted, next) = within(wait).await.unwrap();
    let next = next.unwrap();
    assert!(
        session_expired(&pool, &schema, &holder).await,
        "granted before the previous holder's session expired in the store"
    );
    assert!(next.token() > permit.token());
    eprintln!(
        "semaphore holder cut: lost() after {lost_after:?}, waiter granted after {:?} (ttl {ttl:?})",
        granted - cut_at
    );
    // Healed: the lost holder's release reports the loss (its entry is gone).
    proxy.set(PartitionMode::Forward);
    assert!(matches!(permit.release().await, Err(Error::SessionLost)));
    next.release().await.unwrap();
    // Nobody is live: another count is accepted, and the line holds only its entries.
    let three = other.semaphore(&waiting, name.clone(), permits(3)).unwrap();
    let p1 = three
        .try_acquire()
        .await
        .unwrap()
        .expect("a first permit of 3");
    let p2 = three
        .try_acquire()
        .await
        .unwrap()
        .expect("a second permit of 3");
    assert!(p2.token() > p1.token());
    assert_eq!(
        in_line(&pool, &schema, &name).await,
        2,
        "expired entries were forgotten"
    );
}

/// A withdrawal that reaches the store before its join (a dropped acquire whose join
/// was still in flight) leaves a tombstone; the join then gives up and joins nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_withdrawal_that_overtakes_its_join_makes_it_give_up() {
    let Some((url, backend)) = backend().await else {
        return;
    };
    let schema = backend.schema().to_owned();
    let pool = PgPool::connect(&url).await.unwrap();
    let name = unique("tombstone");
    let session = backend.session(SessionOptions::default()).await.unwrap();
    // Registers the name and its count.
    let semaphore = backend
        .semaphore(&session, name.clone(), permits(1))
        .unwrap();
    semaphore
        .try_acquire()
        .await
        .unwrap()
        .expect("a free permit")
        .release()
        .await
        .unwrap();
    let k: i32 = sqlx::query_scalar(&format!(
        "SELECT id FROM {schema}.lock_names WHERE kind = 'semaphore' AND name = $1"
    ))
    .bind(name.as_str())
    .fetch_one(&pool)
    .await
    .unwrap();
    let id = session.id().0 as i64;
    let entry = i64::MAX - 7;
    let left: bool = sqlx::query_scalar(&format!(
        "SELECT {schema}.semaphore_leave($1, $2, $3, true, true)"
    ))
    .bind(k)
    .bind(id)
    .bind(entry)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(!left, "nothing to leave yet");
    assert_eq!(in_line(&pool, &schema, &name).await, 1, "a tombstone");
    // The tombstone does not count: the permit is free.
    semaphore
        .try_acquire()
        .await
        .unwrap()
        .expect("the tombstone holds no permit")
        .release()
        .await
        .unwrap();
    let state: i32 = sqlx::query_scalar(&format!(
        "SELECT o_state FROM {schema}.semaphore_join($1, $2, $3, 1, true, false, NULL, NULL, 1000, false)"
    ))
    .bind(k)
    .bind(id)
    .bind(entry)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(state, 4, "the join gave up");
    assert_eq!(
        in_line(&pool, &schema, &name).await,
        0,
        "nothing joined, tombstone gone"
    );
}

/// A held permit is a live hold in the export, under its key; a released one is not.
#[tokio::test(flavor = "multi_thread")]
async fn the_export_lists_permits() {
    let Some((_, backend)) = backend().await else {
        return;
    };
    let name = unique("exported");
    let session = backend.session(SessionOptions::default()).await.unwrap();
    let permit = within(
        backend
            .semaphore(&session, name.clone(), permits(2))
            .unwrap()
            .acquire(),
    )
    .await
    .unwrap();
    let holds = backend.export().await.unwrap().active_holds;
    assert!(
        holds.contains(&permit.key().to_owned()),
        "{} not in {holds:?}",
        permit.key()
    );
    let key = permit.key().to_owned();
    permit.release().await.unwrap();
    assert!(!backend.export().await.unwrap().active_holds.contains(&key));
}

/// A holder that pauses (its runtime stops: no renewal, connections left open) past its
/// TTL loses its permit to the waiter once its session has expired in the store; when it
/// resumes, its permit reports `lost()` and its release `SessionLost`.
#[tokio::test(flavor = "multi_thread")]
async fn a_paused_holder_loses_its_permit_after_its_ttl() {
    let Some((url, backend)) = backend().await else {
        return;
    };
    let schema = backend.schema().to_owned();
    let pool = PgPool::connect(&url).await.unwrap();
    let name = unique("paused");
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (resume_tx, resume_rx) = std::sync::mpsc::channel::<()>();
    let holder_name = name.clone();
    let holder = std::thread::spawn(move || {
        // One thread: while it sleeps below, nothing of this client runs.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let backend = distsync_postgres::backend(&url).await.unwrap();
            let session = backend
                .session(SessionOptions::with_ttl(Duration::from_secs(1)))
                .await
                .unwrap();
            let permit = backend
                .semaphore(&session, holder_name, permits(1))
                .unwrap()
                .acquire()
                .await
                .unwrap();
            held_tx.send((session.id(), permit.token())).unwrap();
            resume_rx.recv().unwrap();
            let lost = tokio::time::timeout(Duration::from_secs(2), permit.lost())
                .await
                .is_ok();
            (lost, permit.release().await)
        })
    });
    let (holder_id, holder_token) = held_rx.recv_timeout(SHORT).unwrap();
    let session = backend.session(SessionOptions::default()).await.unwrap();
    let permit = within(
        backend
            .semaphore(&session, name.clone(), permits(1))
            .unwrap()
            .acquire(),
    )
    .await
    .unwrap();
    let expired: bool = sqlx::query_scalar(&format!(
        "SELECT coalesce((SELECT expires_at <= clock_timestamp() FROM {schema}.sessions \
         WHERE id = $1), true)"
    ))
    .bind(holder_id.0 as i64)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        expired,
        "granted before the paused holder's session expired"
    );
    assert!(permit.token() > holder_token);
    resume_tx.send(()).unwrap();
    let (lost, released) = holder.join().unwrap();
    assert!(lost, "the resumed holder's permit did not report lost()");
    assert!(matches!(released, Err(Error::SessionLost)), "{released:?}");
    permit.release().await.unwrap();
}

/// A join that runs while another transaction ends a holder's session (the deletion not
/// yet committed) is still granted as soon as that transaction commits, not at the
/// ended holder's former expiry: the deletion's trigger holds the name's lock, so the
/// join waits for it and then sees the permit free.
#[tokio::test(flavor = "multi_thread")]
async fn a_join_racing_a_session_end_is_granted_at_its_commit() {
    let Some((url, backend)) = backend().await else {
        return;
    };
    let schema = backend.schema().to_owned();
    let pool = PgPool::connect(&url).await.unwrap();
    let name = unique("race");
    let ttl = Duration::from_secs(10);
    let holder = backend
        .session(SessionOptions::with_ttl(ttl))
        .await
        .unwrap();
    let permit = within(
        backend
            .semaphore(&holder, name.clone(), permits(1))
            .unwrap()
            .acquire(),
    )
    .await
    .unwrap();
    // Another process ends the holder's session, and has not committed yet.
    let mut ending = pool.begin().await.unwrap();
    sqlx::query(&format!("DELETE FROM {schema}.sessions WHERE id = $1"))
        .bind(holder.id().0 as i64)
        .execute(&mut *ending)
        .await
        .unwrap();
    let waiting = backend
        .session(SessionOptions::with_ttl(ttl))
        .await
        .unwrap();
    let semaphore = backend
        .semaphore(&waiting, name.clone(), permits(1))
        .unwrap();
    let wait = tokio::spawn(async move { semaphore.acquire().await.map(|p| (p, semaphore)) });
    // The join has started: it waits for the name's lock, or (without the trigger's
    // lock) has joined behind the holder's entry, still visible.
    eventually("the join runs", || async {
        let blocked: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE query LIKE '%semaphore_join%' AND wait_event_type = 'Lock'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        blocked > 0 || in_line(&pool, &schema, &name).await == 2
    })
    .await;
    let committed = Instant::now();
    ending.commit().await.unwrap();
    let (next, _semaphore) = tokio::time::timeout(Duration::from_secs(3), wait)
        .await
        .expect("the join was not granted at the commit (only at the holder's former expiry)")
        .unwrap()
        .unwrap();
    eprintln!(
        "join racing a session end granted {:?} after the commit",
        committed.elapsed()
    );
    assert!(next.token() > permit.token());
    next.release().await.unwrap();
}
