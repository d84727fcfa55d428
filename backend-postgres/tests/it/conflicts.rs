//! A grant aborted by PostgreSQL as a deadlock victim is repeated, not returned, against
//! the server named by `DISTSYNC_POSTGRES_URL` (skipped loudly when unset; a failure
//! under `CI=true`).
//!
//! The test runs in a schema of its own: its table lock then holds back no other test's
//! grants, and the only grant waiting for that table is its own.

use distsync_core::Primitives;
use std::time::Duration;

use distsync_core::{Backend, SessionOptions};
use tokio::time::Instant;

use crate::support::{drop_schema, scoped, unique};

/// How many deadlocks the test injects at most before the grant is the victim of one.
const TRIES: usize = 5;

/// How long a backend's statistics may take to reach the others: a backend reports
/// them when it goes idle, at most once a second, and at the latest ten seconds later
/// (PostgreSQL's `PGSTAT_IDLE_INTERVAL`).
const STATISTICS_LAG: Duration = Duration::from_secs(15);

async fn deadlocks(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Another transaction takes the line's table first and the name's row (`lock_names`)
/// second, while a grant holds that row and waits for the table: a deadlock. Each of
/// the two backends looks for it once its own `deadlock_timeout` (1 s) has run since
/// it began to wait, and the one that looks first aborts itself. The grant waits
/// first, but only by milliseconds, so on a loaded machine the scheduler may let the
/// other backend look first: then the grant was not the victim, goes through
/// unharmed, and the deadlock is injected again (at most [`TRIES`] times in all;
/// setting the other's `deadlock_timeout` higher would take a superuser).
/// The grant that was the victim is repeated and succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn a_grant_aborted_as_a_deadlock_victim_is_repeated() {
    let Some((backend, pool, schema)) = scoped("conflicts").await else {
        return;
    };
    let name = unique("deadlock");
    let session = backend.session(SessionOptions::default()).await.unwrap();
    let locker: std::sync::Arc<dyn distsync_core::Locker> =
        backend.locker(&session, name.clone()).unwrap().into();
    // The name's row exists from a first hold.
    locker.lock().await.unwrap().unlock().await.unwrap();
    let k: i32 = sqlx::query_scalar(&format!(
        "SELECT id FROM \"{schema}\".lock_names WHERE kind = 'lock' AND name = $1"
    ))
    .bind(name.as_str())
    .fetch_one(&pool)
    .await
    .unwrap();
    // An uncontended lock holds solo, in its name's row, without the line's tables.
    // Marked `lined`, as a contended name is, the name's grants go through its line;
    // the line's release clears the mark again, so each grant below sets it first.
    let lined = format!("UPDATE \"{schema}\".lock_names SET lined = true WHERE id = $1");
    let line_the_name = || async {
        let marked = sqlx::query(&lined).bind(k).execute(&pool).await.unwrap();
        assert_eq!(marked.rows_affected(), 1);
    };
    let before = deadlocks(&pool).await;

    let mut tries = 0;
    let grant = loop {
        tries += 1;
        line_the_name().await;
        let mut other = pool.begin().await.unwrap();
        sqlx::query(&format!(
            "LOCK TABLE \"{schema}\".semaphore_entries IN SHARE MODE"
        ))
        .execute(&mut *other)
        .await
        .unwrap();
        let grant = tokio::spawn({
            let locker = std::sync::Arc::clone(&locker);
            async move { locker.lock().await }
        });
        // The grant holds the name's row and waits for the table.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let waiting: i64 = sqlx::query_scalar(&format!(
                "SELECT count(*) FROM pg_locks l WHERE NOT l.granted \
                   AND l.relation = '\"{schema}\".semaphore_entries'::regclass"
            ))
            .fetch_one(&pool)
            .await
            .unwrap();
            if waiting > 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the grant never waited for the table"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Now the other way round: a deadlock.
        let row = sqlx::query(&format!(
            "SELECT 1 FROM \"{schema}\".lock_names WHERE id = $1 FOR UPDATE"
        ))
        .bind(k)
        .execute(&mut *other)
        .await;
        match row {
            Ok(_) => {
                other.commit().await.unwrap();
                break grant;
            }
            // This backend looked first and was the victim: the grant goes through.
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("40P01") => {
                drop(other);
                let guard = tokio::time::timeout(Duration::from_secs(10), grant)
                    .await
                    .expect("the grant, unharmed, took longer than 10 s")
                    .unwrap()
                    .unwrap();
                guard.unlock().await.unwrap();
                assert!(
                    tries < TRIES,
                    "in {TRIES} deadlocks the grant was never the victim"
                );
            }
            Err(error) => panic!("taking the name's row: {error}"),
        }
    };

    let guard = tokio::time::timeout(Duration::from_secs(10), grant)
        .await
        .expect("the repeated grant took longer than 10 s")
        .unwrap()
        .expect("the deadlock reached the caller");
    // Every try made a deadlock (the last one the grant's). The victims' backends report
    // them with their statistics, which may come late.
    let deadline = Instant::now() + STATISTICS_LAG;
    while deadlocks(&pool).await < before + tries as i64 {
        assert!(
            Instant::now() < deadline,
            "fewer than {tries} deadlocks detected within {STATISTICS_LAG:?}: the fault was not injected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    guard.unlock().await.unwrap();
    drop(locker);
    session.close().await.unwrap();
    drop_schema(&pool, &schema).await;
    pool.close().await;
}
