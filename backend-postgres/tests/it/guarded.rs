//! Guarded writes (`LockGuard::put_if_held`) on PostgreSQL, beyond the conformance case
//! `lock_guarded_write`: the store refuses the write of a holder that does not know yet
//! that its hold is gone (the check is the statement's, not the client's), for locks,
//! write locks and semaphore permits. Against the server named by
//! `DISTSYNC_POSTGRES_URL` (skipped loudly when unset; a failure under `CI=true`).

use distsync_core::Primitives;
use std::num::NonZeroUsize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use distsync_conformance::server_url;
use distsync_core::{Backend, Error, Isolation, LockGuard, Name, Permit, Session, SessionOptions};
use distsync_postgres::PostgresBackend;

fn unique(what: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("pgtest/{what}/{nanos:x}-{}", std::process::id())
}

async fn backend() -> Option<(String, PostgresBackend)> {
    let url = server_url("DISTSYNC_POSTGRES_URL")?;
    let backend = distsync_postgres::backend(&url).await.unwrap();
    Some((url, backend))
}

async fn read(backend: &PostgresBackend, key: &str) -> Option<Vec<u8>> {
    let key = key.to_owned();
    backend
        .stm()
        .unwrap()
        .atomically(Isolation::SerializableSnapshot, move |tx| {
            let key = key.clone();
            async move { tx.get(&key).await }
        })
        .await
        .unwrap()
        .map(|value| value.to_vec())
}

/// Expires session `id`'s row in the store, without telling its owner (no NOTIFY), as
/// a holder paused past its TTL finds it.
async fn expire_silently(url: &str, schema: &str, id: u64) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let expired = sqlx::query(&format!(
        "UPDATE {schema}.sessions SET expires_at = clock_timestamp() - interval '1 millisecond' \
         WHERE id = $1"
    ))
    .bind(i64::try_from(id).unwrap())
    .execute(&pool)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(expired, 1, "session {id} has no row");
    pool.close().await;
}

/// A hold with guarded writes: a lock's or a write lock's guard, or a permit.
enum Held {
    Guard(LockGuard),
    Permit(Permit),
}

impl Held {
    async fn put_if_held(&self, key: &str, value: &'static str) -> distsync_core::Result<()> {
        match self {
            Self::Guard(guard) => guard.put_if_held(key, value).await,
            Self::Permit(permit) => permit.put_if_held(key, value).await,
        }
    }

    fn session(&self) -> &Session {
        match self {
            Self::Guard(guard) => guard.session(),
            Self::Permit(permit) => permit.session(),
        }
    }

    fn is_lost(&self) -> bool {
        match self {
            Self::Guard(guard) => guard.is_lost(),
            Self::Permit(permit) => permit.is_lost(),
        }
    }
}

/// Writes through `guard`, expires its session silently, and checks the second write
/// is refused by the store (the guard does not know yet) and the key keeps the first.
async fn refused_once_expired(url: &str, backend: &PostgresBackend, guard: Held) {
    let key = unique("guarded-key");
    guard.put_if_held(&key, "first").await.unwrap();
    assert_eq!(read(backend, &key).await.as_deref(), Some(&b"first"[..]));
    expire_silently(url, backend.schema(), guard.session().id().0).await;
    assert!(
        !guard.is_lost(),
        "the guard knew of the expiry: the store's check would not be exercised"
    );
    match guard.put_if_held(&key, "stale").await {
        Err(Error::NotHeld) => {}
        other => panic!("a write after the session expired in the store: {other:?}"),
    }
    assert_eq!(
        read(backend, &key).await.as_deref(),
        Some(&b"first"[..]),
        "the refused write changed the key"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_store_refuses_a_lock_holder_whose_session_expired() {
    let Some((url, backend)) = backend().await else {
        return;
    };
    let session = backend
        .session(SessionOptions::with_ttl(Duration::from_secs(60)))
        .await
        .unwrap();
    let name = Name::new(unique("guarded-lock")).unwrap();
    let guard = backend
        .locker(&session, name)
        .unwrap()
        .lock()
        .await
        .unwrap();
    refused_once_expired(&url, &backend, Held::Guard(guard)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_store_refuses_a_writer_and_a_permit_whose_session_expired() {
    let Some((url, backend)) = backend().await else {
        return;
    };
    let writer = backend
        .session(SessionOptions::with_ttl(Duration::from_secs(60)))
        .await
        .unwrap();
    let name = Name::new(unique("guarded-rwlock")).unwrap();
    let write = backend
        .rwlock(&writer, name)
        .unwrap()
        .write()
        .await
        .unwrap();
    refused_once_expired(&url, &backend, Held::Guard(write)).await;

    let holder = backend
        .session(SessionOptions::with_ttl(Duration::from_secs(60)))
        .await
        .unwrap();
    let name = Name::new(unique("guarded-semaphore")).unwrap();
    let permit = backend
        .semaphore(&holder, name, NonZeroUsize::new(2).unwrap())
        .unwrap()
        .acquire()
        .await
        .unwrap();
    refused_once_expired(&url, &backend, Held::Permit(permit)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_released_entry_writes_nothing_and_the_next_holder_writes() {
    let Some((url, backend)) = backend().await else {
        return;
    };
    let session = backend.session(SessionOptions::default()).await.unwrap();
    let name = Name::new(unique("guarded-gone")).unwrap();
    let locker = backend.locker(&session, name.clone()).unwrap();
    let guard = locker.lock().await.unwrap();
    let key = unique("guarded-key");
    // The hold removed behind the guard's back (as a withdrawal would): the session is
    // live, the guard believes it holds, the store says no. An uncontended lock holds
    // solo, in its name's row.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let schema = backend.schema();
    let deleted = sqlx::query(&format!(
        "UPDATE {schema}.lock_names SET holder_session = NULL, holder_entry = NULL \
         WHERE kind = 'lock' AND name = $1 AND holder_session IS NOT NULL"
    ))
    .bind(name.as_str())
    .execute(&pool)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(deleted, 1);
    assert!(!guard.is_lost());
    assert!(matches!(
        guard.put_if_held(&key, "stale").await,
        Err(Error::NotHeld)
    ));
    assert_eq!(read(&backend, &key).await, None);
    let other = backend.session(SessionOptions::default()).await.unwrap();
    let next = backend.locker(&other, name).unwrap().lock().await.unwrap();
    next.put_if_held(&key, "next").await.unwrap();
    assert_eq!(read(&backend, &key).await.as_deref(), Some(&b"next"[..]));
    next.unlock().await.unwrap();
    drop(guard);
    pool.close().await;
    session.close().await.unwrap();
    other.close().await.unwrap();
}
