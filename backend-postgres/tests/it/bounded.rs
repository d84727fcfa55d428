//! Bounded growth: with small [`Limits`], the name table, the
//! election log and the in-process name cache stay within their bounds however many
//! distinct names are locked and however often a leader proclaims, and pruning never
//! sends a name's fencing tokens backwards. Each test runs in a schema of its own, so
//! the rows it counts are its own. Against the server named by `DISTSYNC_POSTGRES_URL`
//! (skipped loudly when unset; a failure under `CI=true`).

use distsync_core::Primitives;
use std::time::Duration;

use distsync_core::{Backend, Name, SessionOptions};
use distsync_postgres::Limits;
use sqlx::PgPool;

use crate::support::{drop_schema, scoped};

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_name_table_and_the_name_cache_stay_bounded_and_tokens_never_go_back() {
    let Some((backend, pool, schema)) = scoped("bounded_names").await else {
        return;
    };
    let mut limits = Limits::default();
    limits.name_cache = 16;
    limits.name_idle = Duration::ZERO;
    limits.names_per_sweep = 25;
    // Sweeps run when this test says so, not from the keepalives: the sweep made now
    // puts the keepalives' next one an hour away.
    limits.sweep_every = Duration::from_secs(3600);
    backend.set_limits(limits);
    backend.sweep().await.unwrap();
    let session = backend.session(SessionOptions::default()).await.unwrap();

    // A name held across the sweeps is never pruned; its token is the one to beat.
    let kept = Name::new("bounded/kept").unwrap();
    let kept_locker = backend.locker(&session, kept.clone()).unwrap();
    let held = kept_locker.lock().await.unwrap();

    let names_sql = format!("SELECT count(*) FROM {schema}.lock_names");
    let mut highest = held.token().0;
    for round in 0..4 {
        for i in 0..100 {
            let name = Name::new(format!("bounded/{round}/{i}")).unwrap();
            let guard = backend
                .locker(&session, name)
                .unwrap()
                .lock()
                .await
                .unwrap();
            highest = highest.max(guard.token().0);
            guard.unlock().await.unwrap();
            assert!(
                backend.cached_names() <= 16,
                "the name cache holds {} names, over its bound of 16",
                backend.cached_names()
            );
        }
        assert!(count(&pool, &names_sql).await >= 100);
        let (_, pruned, _) = backend.sweep().await.unwrap();
        assert!(
            pruned >= 100,
            "round {round}: the sweep pruned {pruned} names"
        );
        assert_eq!(
            count(&pool, &names_sql).await,
            1,
            "round {round}: only the held name is left after the sweep"
        );
    }
    // A pruned name registered again starts above every token handed out before.
    let again = backend
        .locker(&session, Name::new("bounded/0/0").unwrap())
        .unwrap()
        .lock()
        .await
        .unwrap();
    assert!(
        again.token().0 > highest,
        "a pruned name came back with token {} after tokens up to {highest}",
        again.token().0
    );
    again.unlock().await.unwrap();
    // The held name survived every sweep and still counts from where it was.
    let first = held.token();
    held.unlock().await.unwrap();
    let next = kept_locker.lock().await.unwrap();
    assert!(next.token() > first);
    next.unlock().await.unwrap();
    session.close().await.unwrap();
    drop(backend);
    drop_schema(&pool, &schema).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_election_log_stays_bounded_under_a_leader_that_proclaims_often() {
    let Some((backend, pool, schema)) = scoped("bounded_log").await else {
        return;
    };
    let mut limits = Limits::default();
    limits.election_log_keep = 5;
    limits.election_log_age = Duration::from_secs(3600);
    limits.sweep_every = Duration::from_secs(3600);
    backend.set_limits(limits.clone());
    // Sweeps run when this test says so: the sweep made now puts the keepalives' next
    // one an hour away.
    backend.sweep().await.unwrap();
    let session = backend.session(SessionOptions::default()).await.unwrap();
    let election = backend
        .election(&session, Name::new("bounded/leader").unwrap())
        .unwrap();
    let leadership = election.campaign("v0").await.unwrap();
    let log_sql = format!("SELECT count(*) FROM {schema}.election_log");
    let mut most = 0;
    for i in 1..=200 {
        leadership.proclaim(format!("v{i}")).await.unwrap();
        let rows = count(&pool, &log_sql).await;
        most = most.max(rows);
        // Trimmed to `keep` at every 16th version: never more than keep + 16 rows.
        assert!(
            rows <= 5 + 16,
            "after {i} proclaims the log has {rows} rows (keep 5, trimmed every 16)"
        );
    }
    assert!(
        most > 5,
        "the log never grew past its keep: the trim was not exercised"
    );
    // The latest value is still observed, and the sweep removes entries past their age.
    assert_eq!(
        election.leader().await.unwrap().unwrap().value.as_ref(),
        b"v200"
    );
    limits.election_log_age = Duration::ZERO;
    backend.set_limits(limits);
    let (_, _, pruned) = backend.sweep().await.unwrap();
    assert!(pruned > 0, "the sweep pruned no aged log entries");
    assert_eq!(count(&pool, &log_sql).await, 0);
    leadership.resign().await.unwrap();
    session.close().await.unwrap();
    drop(backend);
    drop_schema(&pool, &schema).await;
}
