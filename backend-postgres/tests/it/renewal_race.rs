//! A renewal in flight when a session's old expiry passes, against the server named by
//! `DISTSYNC_POSTGRES_URL` (skipped loudly when unset; a failure under `CI=true`).
//!
//! The renewal checks the session's row before its expiry and commits later; a grant
//! (the unfair lock's take too), a release's hand-over, the sweep, or a queue's receive,
//! dequeue or acknowledgement that reads the row from a snapshot taken before that
//! commit sees the old expiry, already past by the clock. Each test holds the renewal's transaction open on a
//! connection of its own while the line (or the queue) is judged on another, then
//! commits it: the renewed holder must still hold, and nobody else may have been
//! granted (or handed its item) meanwhile. The line's sessions and entries are rows
//! written through the schema's functions, so that the renewal can be held open; a
//! queue's holder is a session of the backend, whose row the renewal renews beside its
//! own heartbeat.

use distsync_core::Primitives;
use std::ops::Deref;
use std::time::Duration;

use distsync_conformance::server_url;
use distsync_core::{Backend, Delivery, Name, Queue, Session, SessionOptions};
use distsync_postgres::ack_in;
use sqlx::PgPool;
use tokio::time::Instant;

use crate::support::{unique, within};

/// The session rows of one schema.
struct Sessions {
    schema: String,
    pool: PgPool,
}

/// The line functions' statements on one schema.
struct Line {
    sessions: Sessions,
    k: i32,
}

impl Deref for Line {
    type Target = Sessions;

    fn deref(&self) -> &Sessions {
        &self.sessions
    }
}

impl Sessions {
    async fn new(url: &str, backend: &distsync_postgres::PostgresBackend) -> Self {
        let schema = format!("\"{}\"", backend.schema());
        let pool = PgPool::connect(url).await.unwrap();
        Self { schema, pool }
    }

    /// A session row that lives for a minute, with a fresh random id.
    async fn session(&self) -> i64 {
        sqlx::query_scalar(&format!(
            "INSERT INTO {}.sessions (id, ttl_ms, expires_at) \
             VALUES (('x' || translate(gen_random_uuid()::text, '-', ''))::bit(63)::bigint, \
                     60000, clock_timestamp() + interval '1 minute') RETURNING id",
            self.schema
        ))
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// Moves `session`'s expiry to a second from now and opens a transaction on a
    /// connection of its own that renews it (the renewal passes: the row has not
    /// expired yet), left open. Returns once the server's clock is past the old expiry.
    async fn renewal_in_flight(&self, session: i64) -> sqlx::Transaction<'static, sqlx::Postgres> {
        let old: f64 = sqlx::query_scalar(&format!(
            "UPDATE {}.sessions SET expires_at = clock_timestamp() + interval '1 second' \
             WHERE id = $1 RETURNING extract(epoch FROM expires_at)::float8",
            self.schema
        ))
        .bind(session)
        .fetch_one(&self.pool)
        .await
        .unwrap();
        let mut renewal = self.pool.begin().await.unwrap();
        let renewed: Vec<i64> = sqlx::query_scalar(&format!(
            "SELECT ARRAY(SELECT {}.renew_sessions(ARRAY[$1]::bigint[]))",
            self.schema
        ))
        .bind(session)
        .fetch_one(&mut *renewal)
        .await
        .unwrap();
        assert_eq!(
            renewed,
            [session],
            "the renewal did not pass before the expiry"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let past: bool =
                sqlx::query_scalar("SELECT extract(epoch FROM clock_timestamp())::float8 > $1")
                    .bind(old)
                    .fetch_one(&self.pool)
                    .await
                    .unwrap();
            if past {
                return renewal;
            }
            assert!(
                Instant::now() < deadline,
                "the server's clock never passed the expiry"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether `session`'s row is there and has not expired.
    /// What the store has of `session`: whether its row is there, and how long it
    /// has left (ms, negative once expired), for a failure to say which went wrong.
    async fn state(&self, session: i64) -> (bool, Option<f64>) {
        let left: Option<f64> = sqlx::query_scalar(&format!(
            "SELECT extract(epoch FROM expires_at - clock_timestamp())::float8 * 1000 \
               FROM {}.sessions WHERE id = $1",
            self.schema
        ))
        .bind(session)
        .fetch_optional(&self.pool)
        .await
        .unwrap();
        (left.is_some(), left)
    }

    async fn live(&self, session: i64) -> bool {
        sqlx::query_scalar(&format!(
            "SELECT EXISTS (SELECT 1 FROM {}.sessions \
                             WHERE id = $1 AND expires_at > clock_timestamp())",
            self.schema
        ))
        .bind(session)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// The sessions holding items of `queue`, one per held item.
    async fn holders(&self, queue: &Name) -> Vec<i64> {
        sqlx::query_scalar(&format!(
            "SELECT held_by FROM {}.queue_items WHERE queue = $1 AND held_by IS NOT NULL \
              ORDER BY id",
            self.schema
        ))
        .bind(queue.as_str())
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    async fn end(&self, sessions: &[i64]) {
        sqlx::query(&format!("SELECT {}.end_sessions($1)", self.schema))
            .bind(sessions)
            .execute(&self.pool)
            .await
            .unwrap();
        self.pool.close().await;
    }
}

impl Line {
    async fn new(url: &str, kind: &str, name: &Name) -> Self {
        let backend = distsync_postgres::backend(url).await.unwrap();
        let sessions = Sessions::new(url, &backend).await;
        let k = sqlx::query_scalar(&format!("SELECT {}.register_name($1, $2)", sessions.schema))
            .bind(kind)
            .bind(name.as_str())
            .fetch_one(&sessions.pool)
            .await
            .unwrap();
        Self { sessions, k }
    }

    /// Joins the line with entry 1 of `session`, exclusive, waiting; the state.
    async fn join(&self, session: i64) -> i32 {
        sqlx::query_scalar(&format!(
            "SELECT o_state FROM {}.semaphore_join($1, $2, 1, 1, true)",
            self.schema
        ))
        .bind(self.k)
        .bind(session)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// Re-checks entry 1 of `session`; the state (1 granted, 0 waiting).
    async fn check(&self, session: i64) -> i32 {
        sqlx::query_scalar(&format!(
            "SELECT o_state FROM {}.semaphore_check($1, $2, 1)",
            self.schema
        ))
        .bind(self.k)
        .bind(session)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// Takes the unfair lock with entry `entry` of `session`, registering as a waiter if
    /// `wait`; the state (1 granted, 2 refused, 0 waiting).
    async fn unfair(&self, session: i64, entry: i64, wait: bool) -> i32 {
        sqlx::query_scalar(&format!(
            "SELECT o_state FROM {}.unfair_acquire($1, $2, $3, $4)",
            self.schema
        ))
        .bind(self.k)
        .bind(session)
        .bind(entry)
        .bind(wait)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// The token of entry 1 of `session`, if it is in line and granted.
    async fn token(&self, session: i64) -> Option<i64> {
        sqlx::query_scalar(&format!(
            "SELECT token FROM {}.semaphore_entries WHERE name_id = $1 AND session_id = $2",
            self.schema
        ))
        .bind(self.k)
        .bind(session)
        .fetch_optional(&self.pool)
        .await
        .unwrap()
        .flatten()
    }
}

/// How long a statement that must not wait for the renewal's row lock may take.
const PROMPT: Duration = Duration::from_secs(5);

/// A waiter's check while the holder's renewal is in flight past the holder's old
/// expiry: the waiter is not granted, neither then nor after the renewal commits.
#[tokio::test(flavor = "multi_thread")]
async fn a_check_does_not_pass_over_a_holder_whose_renewal_is_in_flight() {
    let Some(url) = server_url("DISTSYNC_POSTGRES_URL") else {
        return;
    };
    let line = Line::new(&url, "rwlock", &unique("renewal-race-check")).await;
    let holder = line.session().await;
    let waiter = line.session().await;
    assert_eq!(line.join(holder).await, 1, "the holder's join");
    assert_eq!(line.join(waiter).await, 0, "the waiter's join");

    let renewal = line.renewal_in_flight(holder).await;
    let state = within(PROMPT, "the check", line.check(waiter)).await;
    let joined = within(PROMPT, "a third join", async {
        let third = line.session().await;
        (third, line.join(third).await)
    })
    .await;
    renewal.commit().await.unwrap();

    assert_eq!(
        state, 0,
        "the waiter was granted while the holder's renewal was in flight, and the renewal \
         then succeeded: two holders"
    );
    assert_eq!(joined.1, 0, "a join was granted past the renewing holder");
    assert!(
        line.live(holder).await,
        "the renewed holder's session is gone"
    );
    assert!(
        line.token(holder).await.is_some(),
        "the renewed holder lost its entry"
    );
    assert_eq!(
        line.check(waiter).await,
        0,
        "the waiter was granted after the renewal"
    );
    line.end(&[holder, waiter, joined.0]).await;
}

/// An unfair take, a try or a waiting one, while the unfair holder's renewal is in
/// flight past its old expiry: neither is granted, then or after the renewal commits.
#[tokio::test(flavor = "multi_thread")]
async fn an_unfair_take_does_not_pass_over_a_holder_whose_renewal_is_in_flight() {
    let Some(url) = server_url("DISTSYNC_POSTGRES_URL") else {
        return;
    };
    let line = Line::new(&url, "lock", &unique("renewal-race-unfair")).await;
    let holder = line.session().await;
    let taker = line.session().await;
    let waiter = line.session().await;
    assert_eq!(line.unfair(holder, 1, false).await, 1, "the holder's take");

    let renewal = line.renewal_in_flight(holder).await;
    let tried = within(PROMPT, "the try", line.unfair(taker, 1, false)).await;
    let waited = within(PROMPT, "the waiting take", line.unfair(waiter, 1, true)).await;
    renewal.commit().await.unwrap();

    assert_eq!(
        tried, 2,
        "an unfair try was granted while the holder's renewal was in flight, and the \
         renewal then succeeded: two holders"
    );
    assert_eq!(
        waited, 0,
        "a waiting unfair take was granted past the renewing holder"
    );
    assert!(
        line.live(holder).await,
        "the renewed holder's session is gone"
    );
    assert!(
        line.token(holder).await.is_some(),
        "the renewed holder lost its entry"
    );
    assert_eq!(
        line.unfair(waiter, 1, true).await,
        0,
        "the waiter was granted after the renewal"
    );
    line.end(&[holder, taker, waiter]).await;
}

/// A release whose hand-over passes over a waiter next in line whose renewal is in
/// flight past its old expiry would grant the one behind it, and then both once the
/// renewal commits: the next in line is granted, the one behind is not.
#[tokio::test(flavor = "multi_thread")]
async fn a_release_hands_over_to_a_waiter_whose_renewal_is_in_flight() {
    let Some(url) = server_url("DISTSYNC_POSTGRES_URL") else {
        return;
    };
    let line = Line::new(&url, "lock", &unique("renewal-race-release")).await;
    let holder = line.session().await;
    let next = line.session().await;
    let behind = line.session().await;
    assert_eq!(line.join(holder).await, 1, "the holder's join");
    assert_eq!(line.join(next).await, 0, "the next waiter's join");
    assert_eq!(line.join(behind).await, 0, "the last waiter's join");

    let renewal = line.renewal_in_flight(next).await;
    let left: bool = within(
        PROMPT,
        "the release",
        sqlx::query_scalar(&format!(
            "SELECT {}.semaphore_leave($1, $2, 1, false)",
            line.schema
        ))
        .bind(line.k)
        .bind(holder)
        .fetch_one(&line.pool),
    )
    .await
    .unwrap();
    assert!(left, "the holder's entry was not there");
    let behind_token = line.token(behind).await;
    renewal.commit().await.unwrap();

    assert_eq!(
        behind_token, None,
        "the release granted the last waiter past the next one, whose renewal was in flight"
    );
    assert!(
        line.live(next).await,
        "the renewed waiter's session is gone"
    );
    assert_eq!(line.check(next).await, 1, "the next waiter is not granted");
    assert_eq!(
        line.check(behind).await,
        0,
        "the last waiter was granted too"
    );
    line.end(&[next, behind]).await;
}

/// The sweep over a session whose renewal is in flight past its old expiry neither
/// waits for the renewal nor ends the session it renews.
#[tokio::test(flavor = "multi_thread")]
async fn the_sweep_leaves_a_session_whose_renewal_is_in_flight() {
    let Some(url) = server_url("DISTSYNC_POSTGRES_URL") else {
        return;
    };
    let line = Line::new(&url, "lock", &unique("renewal-race-sweep")).await;
    let holder = line.session().await;
    assert_eq!(line.join(holder).await, 1, "the holder's join");

    let renewal = line.renewal_in_flight(holder).await;
    let sql = format!("SELECT {}.reap_sessions(ARRAY[$1]::bigint[])", line.schema);
    let reap = sqlx::query_scalar::<_, i32>(&sql)
        .bind(holder)
        .fetch_one(&line.pool);
    let reaped = tokio::time::timeout(PROMPT, reap).await;
    renewal.commit().await.unwrap();

    let reaped = reaped
        .expect("the sweep waited for the renewal's row lock")
        .unwrap();
    assert_eq!(reaped, 0, "the sweep ended a session being renewed");
    assert!(line.live(holder).await, "the renewed session is gone");
    assert!(
        line.token(holder).await.is_some(),
        "the renewed holder lost its entry"
    );
    line.end(&[holder]).await;
}

/// The two items of a fresh queue held by one session of the backend: the queue, the
/// holding session (a caller keeps it for as long as it checks the session's row: the
/// last handle's drop ends the session in the store, and once the deliveries are
/// acknowledged this is the last), its id, the deliveries, and a second session of the
/// backend that has nothing.
async fn two_held_items(
    backend: &distsync_postgres::PostgresBackend,
    sessions: &Sessions,
    what: &str,
) -> (Box<dyn Queue>, Session, i64, Vec<Delivery>, Session) {
    let name = unique(what);
    let queue = backend.queue(name.clone()).unwrap();
    queue.enqueue("x").await.unwrap();
    queue.enqueue("y").await.unwrap();
    let holder = backend.session(SessionOptions::default()).await.unwrap();
    let mut deliveries = Vec::new();
    for _ in 0..2 {
        deliveries.push(queue.try_receive(&holder).await.unwrap().unwrap());
    }
    let holders = sessions.holders(&name).await;
    assert_eq!(holders.len(), 2, "the holder's receives");
    assert_eq!(holders[0], holders[1], "the items are held by two sessions");
    let other = backend.session(SessionOptions::default()).await.unwrap();
    (queue, holder, holders[0], deliveries, other)
}

/// A receive and an at-most-once dequeue while the holder of the queue's items has a
/// renewal in flight past its old expiry: neither takes an item, and the holder, renewed,
/// acknowledges both.
#[tokio::test(flavor = "multi_thread")]
async fn a_receive_passes_over_items_whose_holder_renewal_is_in_flight() {
    let Some(url) = server_url("DISTSYNC_POSTGRES_URL") else {
        return;
    };
    let backend = distsync_postgres::backend(&url).await.unwrap();
    let sessions = Sessions::new(&url, &backend).await;
    let (queue, holder_session, holder, deliveries, consumer) =
        two_held_items(&backend, &sessions, "renewal-race-receive").await;

    let renewal = sessions.renewal_in_flight(holder).await;
    let received = within(PROMPT, "the receive", queue.try_receive(&consumer))
        .await
        .unwrap();
    let dequeued = within(PROMPT, "the dequeue", queue.try_dequeue())
        .await
        .unwrap();
    renewal.commit().await.unwrap();

    assert!(
        received.is_none(),
        "a second consumer received an item while its holder's renewal was in flight, and \
         the renewal then succeeded: two holders"
    );
    assert_eq!(
        dequeued, None,
        "a dequeue took an item while its holder's renewal was in flight"
    );
    assert!(
        sessions.live(holder).await,
        "the renewed holder's session is gone (row there, ms left: {:?})",
        sessions.state(holder).await
    );
    for delivery in deliveries {
        delivery
            .ack()
            .await
            .expect("the renewed holder's acknowledgement");
    }
    assert!(
        queue.try_receive(&consumer).await.unwrap().is_none(),
        "an acknowledged item came back"
    );
    drop(holder_session);
    sessions.pool.close().await;
}

/// The holder's acknowledgements (one on its own, one in the caller's transaction)
/// while its renewal is in flight past its old expiry: neither waits for the renewal,
/// and both succeed, as the renewal does.
#[tokio::test(flavor = "multi_thread")]
async fn a_holder_whose_renewal_is_in_flight_acknowledges() {
    let Some(url) = server_url("DISTSYNC_POSTGRES_URL") else {
        return;
    };
    let backend = distsync_postgres::backend(&url).await.unwrap();
    let sessions = Sessions::new(&url, &backend).await;
    let (queue, holder_session, holder, mut deliveries, consumer) =
        two_held_items(&backend, &sessions, "renewal-race-ack").await;
    let second = deliveries.pop().unwrap();
    let first = deliveries.pop().unwrap();

    let renewal = sessions.renewal_in_flight(holder).await;
    let acked = within(PROMPT, "the acknowledgement", first.ack()).await;
    let mut tx = sessions.pool.begin().await.unwrap();
    let acked_in = within(
        PROMPT,
        "the acknowledgement in a transaction",
        ack_in(&mut tx, second),
    )
    .await;
    let acked_in = match acked_in {
        Ok(pending) => {
            tx.commit().await.unwrap();
            pending.committed();
            Ok(())
        }
        Err(error) => {
            tx.rollback().await.unwrap();
            Err(error)
        }
    };
    renewal.commit().await.unwrap();

    assert!(
        sessions.live(holder).await,
        "the renewed holder's session is gone (row there, ms left: {:?})",
        sessions.state(holder).await
    );
    acked.expect(
        "the acknowledgement was refused as if the session had ended, and its renewal then \
         succeeded",
    );
    acked_in.expect(
        "the acknowledgement in a transaction was refused as if the session had ended, and \
         its renewal then succeeded",
    );
    assert!(
        queue.try_receive(&consumer).await.unwrap().is_none(),
        "an acknowledged item came back"
    );
    drop(holder_session);
    sessions.pool.close().await;
}
