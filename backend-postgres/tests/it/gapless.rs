//! PostgreSQL hands an election over with no gap: the release that removes the leader's
//! entry elects the next live candidate in its own transaction (`sem_grant`), against the
//! server named by `DISTSYNC_POSTGRES_URL` (skipped loudly when unset; a failure under
//! `CI=true`). Each test works in a schema of its own, dropped at its end.
//!
//! Each test reads the store right after the release, with nothing else running: a
//! leader seen then was elected by the release itself, since the woken candidate (if any)
//! has not run a statement, or (at the SQL level) has no client at all.
//!
//! A client whose role may only use the schema's objects is checked on a private
//! PostgreSQL cluster (`distsync_conformance::faults::private`), whose superuser creates
//! that role.

use distsync_core::Primitives;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use distsync_conformance::faults::private;
use distsync_conformance::{connector, server_url, StoreKind};
use distsync_core::{Backend, Coordinator, Name, SessionOptions};
use sqlx::{Executor, PgPool};
use tokio::time::Instant;

/// A schema of this test's own: its name quoted, the URL that selects it, and a pool on
/// the server (the schema's objects are made by the first backend connected to `scoped`).
struct Private {
    quoted: String,
    scoped: String,
    pool: PgPool,
}

impl Private {
    async fn new(what: &str) -> Option<Self> {
        let url = server_url("DISTSYNC_POSTGRES_URL")?;
        let schema = format!("x_gapless_{what}_{}", std::process::id());
        let quoted = format!("\"{schema}\"");
        let separator = if url.contains('?') { '&' } else { '?' };
        let scoped = format!("{url}{separator}schema={schema}");
        let pool = PgPool::connect(&url).await.unwrap();
        pool.execute(format!("DROP SCHEMA IF EXISTS {quoted} CASCADE").as_str())
            .await
            .unwrap();
        Some(Self {
            quoted,
            scoped,
            pool,
        })
    }

    fn sql(&self, text: &str) -> String {
        text.replace("{s}", &self.quoted)
    }

    /// A session row of its own, live for 30 s (a candidate with no client).
    async fn session(&self) -> i64 {
        sqlx::query_scalar(&self.sql(
            "INSERT INTO {s}.sessions (ttl_ms, expires_at) \
             VALUES (30000, clock_timestamp() + interval '30 seconds') RETURNING id",
        ))
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// The id of election `name` in the name table.
    async fn election(&self, name: &str) -> i32 {
        sqlx::query_scalar(&self.sql("SELECT {s}.register_name('election', $1)"))
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Joins election `k` (called `name`) as (`session`, `entry`) with `value`: the state
    /// (1 elected, 0 waiting) and the term.
    async fn join(&self, k: i32, name: &str, session: i64, entry: i64) -> (i32, Option<i64>) {
        sqlx::query_as(&self.sql(
            "SELECT o_state, o_token FROM {s}.semaphore_join($1, $2, $3, 1, true, false, $4, $5)",
        ))
        .bind(k)
        .bind(session)
        .bind(entry)
        .bind(name)
        .bind(format!("value-{entry}").into_bytes())
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// What a candidate's own check finds: the state and the term.
    async fn check(&self, k: i32, session: i64, entry: i64) -> (i32, Option<i64>) {
        sqlx::query_as(&self.sql("SELECT o_state, o_token FROM {s}.semaphore_check($1, $2, $3)"))
            .bind(k)
            .bind(session)
            .bind(entry)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Releases (`session`, `entry`) of `k` as a resign does (synchronously, no setting
    /// for the log's bound): whether it was there.
    async fn leave(&self, k: i32, session: i64, entry: i64) -> bool {
        sqlx::query_scalar(&self.sql("SELECT {s}.semaphore_leave($1, $2, $3, false)"))
            .bind(k)
            .bind(session)
            .bind(entry)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// The leader row of election `name`: its session and term.
    async fn leader(&self, name: &str) -> Option<(i64, i64)> {
        sqlx::query_as(
            &self.sql("SELECT session_id, term FROM {s}.election_leaders WHERE election = $1"),
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .unwrap()
    }

    /// The fencing counter of name `k` (the last term handed out).
    async fn counter(&self, k: i32) -> i64 {
        sqlx::query_scalar(&self.sql("SELECT token FROM {s}.lock_names WHERE id = $1"))
            .bind(k)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// The entries of election `name`'s log.
    async fn log_entries(&self, name: &str) -> i64 {
        sqlx::query_scalar(&self.sql("SELECT count(*) FROM {s}.election_log WHERE election = $1"))
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// The entries (holding or waiting) in the line of election `name`.
    async fn line(&self, name: &str) -> i64 {
        sqlx::query_scalar(&self.sql(
            "SELECT count(*) FROM {s}.semaphore_entries e \
             JOIN {s}.lock_names n ON n.id = e.name_id \
             WHERE n.kind = 'election' AND n.name = $1 AND NOT e.cancelled",
        ))
        .bind(name)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    async fn drop_schema(self) {
        self.pool
            .execute(format!("DROP SCHEMA {} CASCADE", self.quoted).as_str())
            .await
            .unwrap();
        self.pool.close().await;
    }
}

fn unique(what: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("pgtest/{what}/{nanos:x}-{}", std::process::id())
}

/// Through the API: right after `resign()` returns, `leader()` names the next candidate,
/// in a higher term, before that candidate has run a statement; its campaign then returns
/// that term (the wake-up neither grants again nor bumps the counter), and the grant in
/// passing trims the log to the backend's bound.
#[tokio::test(flavor = "multi_thread")]
async fn resign_elects_the_next_candidate_in_its_own_transaction() {
    let Some(private) = Private::new("resign").await else {
        return;
    };
    let backend = distsync_postgres::backend(&private.scoped).await.unwrap();
    let mut limits = backend.limits();
    limits.election_log_keep = 1;
    backend.set_limits(limits);
    let name = Name::new(unique("resign")).unwrap();
    let ttl = SessionOptions::with_ttl(Duration::from_secs(30));
    let (first, second) = (
        backend.session(ttl.clone()).await.unwrap(),
        backend.session(ttl).await.unwrap(),
    );
    let election = backend.election(&first, name.clone()).unwrap();
    let leader = election.campaign("a").await.unwrap();
    let candidate = backend.election(&second, name.clone()).unwrap();
    let campaign = tokio::spawn(async move { candidate.campaign("b").await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while private.line(name.as_str()).await < 2 {
        assert!(Instant::now() < deadline, "b never joined the line");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let old = leader.term();
    leader.resign().await.unwrap();

    let now = election
        .leader()
        .await
        .unwrap()
        .expect("no leader right after the resign");
    assert_eq!(now.value.as_ref(), b"b", "the leader after the resign");
    assert!(now.term > old, "term {:?} after {:?}", now.term, old);
    let won = tokio::time::timeout(Duration::from_secs(5), campaign)
        .await
        .expect("b's campaign did not return after its election")
        .unwrap()
        .unwrap();
    assert_eq!(
        won.term(),
        now.term,
        "b's campaign and the leader row disagree"
    );
    let k = private.election(name.as_str()).await;
    assert_eq!(
        private.counter(k).await,
        i64::try_from(now.term.0).unwrap(),
        "the counter moved past the term handed out (a second grant?)"
    );
    assert_eq!(
        private.log_entries(name.as_str()).await,
        1,
        "the election in passing did not trim the log to the backend's bound"
    );

    // Nobody waiting: the resign leaves no leader.
    won.resign().await.unwrap();
    assert!(election.leader().await.unwrap().is_none());
    first.close().await.unwrap();
    second.close().await.unwrap();
    drop(backend);
    private.drop_schema().await;
}

/// The lease gate holds for the election in passing: a candidate whose session has
/// expired is passed over, the next live one is elected, once (its own check then reads
/// its term and bumps nothing), and the expired one stays unelected.
#[tokio::test(flavor = "multi_thread")]
async fn a_release_passes_over_expired_candidates() {
    let Some(private) = Private::new("expired").await else {
        return;
    };
    let backend = distsync_postgres::backend(&private.scoped).await.unwrap();
    let name = unique("expired");
    let k = private.election(&name).await;
    let (a, b, c) = (
        private.session().await,
        private.session().await,
        private.session().await,
    );
    let (state, term) = private.join(k, &name, a, 1).await;
    assert_eq!(state, 1, "a, alone, is not elected");
    let term = term.unwrap();
    assert_eq!(private.join(k, &name, b, 2).await.0, 0, "b does not wait");
    assert_eq!(private.join(k, &name, c, 3).await.0, 0, "c does not wait");
    private
        .pool
        .execute(
            private
                .sql(&format!(
                    "UPDATE {{s}}.sessions SET expires_at = clock_timestamp() - interval '1 second' \
                     WHERE id = {b}"
                ))
                .as_str(),
        )
        .await
        .unwrap();

    assert!(private.leave(k, a, 1).await, "a's entry was not there");
    assert_eq!(
        private.leader(&name).await,
        Some((c, term + 1)),
        "the release did not elect c, the next live candidate, in term {}",
        term + 1
    );
    let b_token: Option<i64> = sqlx::query_scalar(
        &private.sql("SELECT token FROM {s}.semaphore_entries WHERE session_id = $1 AND entry = 2"),
    )
    .bind(b)
    .fetch_one(&private.pool)
    .await
    .unwrap();
    assert_eq!(b_token, None, "the expired candidate b was granted");
    assert_eq!(private.check(k, c, 3).await, (1, Some(term + 1)));
    assert_eq!(
        private.check(k, b, 2).await.0,
        -1,
        "b's check, its session expired"
    );
    assert_eq!(
        private.counter(k).await,
        term + 1,
        "the counter was bumped twice"
    );
    assert_eq!(private.leader(&name).await, Some((c, term + 1)));
    drop(backend);
    private.drop_schema().await;
}

/// A role that may use the schema's objects but not create anything connects to a
/// schema its owner made (the connect creates nothing in a schema of its layout),
/// declares what the owner's client declares, and takes and releases a lock.
#[tokio::test(flavor = "multi_thread")]
async fn a_role_that_only_uses_the_schema_connects_and_locks() {
    if server_url("DISTSYNC_POSTGRES_URL").is_none() {
        return;
    }
    if let Err(reason) = private::available(StoreKind::Postgres) {
        panic!("the PostgreSQL test server is set but no private one can be started: {reason}");
    }
    let connect = connector(|url| async move { distsync_postgres::backend(&url).await });
    let server = private::start(StoreKind::Postgres, connect).await.unwrap();
    let owner = distsync_postgres::backend(server.url()).await.unwrap();
    assert!(
        owner.capabilities().gapless_hand_over,
        "a schema just made does not declare gapless_hand_over"
    );
    let quoted = format!("\"{}\"", owner.schema());
    let as_role = |role: &str| {
        server
            .url()
            .replacen("postgres://distsync@", &format!("postgres://{role}@"), 1)
    };
    let admin = PgPool::connect(&as_role("postgres")).await.unwrap();
    let role = "gapless_restricted";
    for statement in [
        format!("CREATE ROLE {role} LOGIN"),
        format!("GRANT USAGE ON SCHEMA {quoted} TO {role}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {quoted} TO {role}"),
        format!("GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {quoted} TO {role}"),
    ] {
        admin.execute(statement.as_str()).await.unwrap();
    }
    let restricted = as_role(role);
    let current = distsync_postgres::backend(&restricted).await.unwrap();
    assert_eq!(
        current.capabilities(),
        owner.capabilities(),
        "the restricted role's client declares other guarantees than the owner's"
    );
    let coordinator = Coordinator::new(current);
    let session = coordinator.session().await.unwrap();
    let guard = coordinator
        .locker(&session, "restricted")
        .unwrap()
        .lock()
        .await
        .unwrap();
    guard.unlock().await.unwrap();
    session.close().await.unwrap();

    drop((owner, coordinator));
    for statement in [format!("DROP OWNED BY {role}"), format!("DROP ROLE {role}")] {
        admin.execute(statement.as_str()).await.unwrap();
    }
    admin.close().await;
}
