//! PostgreSQL queue waiters beyond the conformance suite, against the server named by
//! `DISTSYNC_POSTGRES_URL` (skipped loudly when unset; a failure under `CI=true`): an
//! enqueue wakes one waiting consumer, the longest waiting, not all of them; a
//! cancelled waiter leaves the line; an at-most-once claim left in flight by a dead
//! consumer is put back after `STALE_CLAIM`, and not before; the export lists such a
//! claim's item as a queue item at its place, once; a consumer already waiting takes it
//! once it is stale; a waiting consumer with nothing due looks again only at its
//! renewal.

use std::time::Duration;

use distsync_conformance::log_capture::LogCapture;
use distsync_core::queue::STALE_CLAIM;
use distsync_core::{Backend, Name, Primitives};
use tokio::time::Instant;

use crate::support::{drop_schema, scoped, scoped_with, unique, within};

/// How long a woken consumer may take to return its item.
const WOKEN_WITHIN: Duration = Duration::from_secs(10);

/// `column` of `queue`'s rows in `table`, by row id.
async fn column<T>(
    pool: &sqlx::PgPool,
    schema: &str,
    table: &str,
    column: &str,
    queue: &Name,
) -> Vec<T>
where
    T: Send + Unpin + for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    sqlx::query_scalar(&format!(
        "SELECT {column} FROM \"{schema}\".{table} WHERE queue = $1 ORDER BY id"
    ))
    .bind(queue.as_str())
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The waiter ids of `queue`'s line, oldest first (ids of rows: a woken waiter that
/// lined up again would get a new one).
async fn line(pool: &sqlx::PgPool, schema: &str, queue: &Name) -> Vec<i64> {
    column(pool, schema, "queue_waiters", "id", queue).await
}

/// Polls `line` until it has `n` waiters, failing after 10 s.
async fn line_of(pool: &sqlx::PgPool, schema: &str, queue: &Name, n: usize) -> Vec<i64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting = line(pool, schema, queue).await;
        if waiting.len() == n {
            return waiting;
        }
        assert!(
            Instant::now() < deadline,
            "the line has {} waiters, not {n}, after 10 s",
            waiting.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Moves `item` of `queue` in flight as a claim `age_ms` old, named `call` and the
/// queue's name: the claim of a consumer whose process died between the claim and the
/// hand-over.
async fn leave_claim(
    pool: &sqlx::PgPool,
    schema: &str,
    queue: &Name,
    item: &str,
    call: &str,
    age_ms: i64,
) {
    let call = format!("{call}-{}", queue.as_str());
    sqlx::query(&format!(
        "WITH taken AS (DELETE FROM \"{schema}\".queue_items \
             WHERE queue = $1 AND item = $2 RETURNING id, queue, priority, item) \
         INSERT INTO \"{schema}\".queue_inflight (call, id, queue, priority, item, claimed_at) \
         SELECT $3, id, queue, priority, item, \
                clock_timestamp() - $4 * interval '1 millisecond' FROM taken"
    ))
    .bind(queue.as_str())
    .bind(item.as_bytes())
    .bind(&call)
    .bind(age_ms)
    .execute(pool)
    .await
    .unwrap();
}

/// The calls of `queue`'s claims in flight.
async fn in_flight(pool: &sqlx::PgPool, schema: &str, queue: &Name) -> Vec<String> {
    column(pool, schema, "queue_inflight", "call", queue).await
}

// One thread: the log capture is the thread's default, and the consumers' tasks run on
// it.
#[tokio::test]
async fn one_waiting_consumer_is_woken_per_item_in_arrival_order() {
    let logs = LogCapture::start();
    let Some((backend, pool, schema)) = scoped("queue_wake").await else {
        return;
    };
    let name = unique("wake-one");
    let mut consumers = Vec::new();
    for n in 0..3 {
        let queue = backend.queue(name.clone()).unwrap();
        consumers.push(tokio::spawn(async move { queue.dequeue().await }));
        // Line them up one after the other, so that their order is known, each until
        // it waits: a consumer looks at the queue once more after lining up, and an
        // item enqueued before that look would be its own, not the oldest waiter's.
        line_of(&pool, &schema, &name, n + 1).await;
        logs.wait_for(
            &["waiting for a queue item", name.as_str()],
            n + 1,
            Duration::from_secs(10),
        )
        .await;
    }
    let waiting = line(&pool, &schema, &name).await;
    let producer = backend.queue(name.clone()).unwrap();
    for (n, item) in ["x", "y", "z"].into_iter().enumerate() {
        producer.enqueue(item).await.unwrap();
        // The wake-up took its waiter out of the line in the enqueue's transaction:
        // the others are still in line, with their places (not woken, not lined up
        // again).
        assert_eq!(
            line(&pool, &schema, &name).await,
            waiting[n + 1..],
            "after enqueueing {item}, only the oldest waiter is taken out of the line"
        );
        let consumer = consumers.remove(0);
        let taken = within(WOKEN_WITHIN, "the woken consumer", consumer).await;
        assert_eq!(taken.unwrap().unwrap(), item);
        assert!(
            consumers.iter().all(|c| !c.is_finished()),
            "a consumer not woken returned"
        );
    }
    assert!(line(&pool, &schema, &name).await.is_empty());
    drop_schema(&pool, &schema).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_waiter_leaves_the_line_and_passes_its_wake_up_on() {
    let Some((backend, pool, schema)) = scoped("queue_wake").await else {
        return;
    };
    let name = unique("wake-cancel");
    let first_queue = backend.queue(name.clone()).unwrap();
    let first = tokio::spawn(async move { first_queue.dequeue().await });
    line_of(&pool, &schema, &name, 1).await;
    let second_queue = backend.queue(name.clone()).unwrap();
    let second = tokio::spawn(async move { second_queue.dequeue().await });
    line_of(&pool, &schema, &name, 2).await;
    // The first waiter is cancelled: it leaves the line.
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    line_of(&pool, &schema, &name, 1).await;
    backend
        .queue(name.clone())
        .unwrap()
        .enqueue("x")
        .await
        .unwrap();
    let taken = within(WOKEN_WITHIN, "the second consumer", second).await;
    assert_eq!(taken.unwrap().unwrap(), "x");
    assert!(line(&pool, &schema, &name).await.is_empty());
    drop_schema(&pool, &schema).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_claim_is_put_back_and_a_recent_one_is_not() {
    let Some((backend, pool, schema)) = scoped("queue_wake").await else {
        return;
    };
    let name = unique("stale");
    let queue = backend.queue(name.clone()).unwrap();
    queue.enqueue("dead").await.unwrap();
    queue.enqueue("busy").await.unwrap();
    // Two consumers claimed an item each and never came back (their processes died
    // between the claim and the hand-over): one 16 minutes ago, one just now.
    let stale_ms = i64::try_from(STALE_CLAIM.as_millis()).unwrap() + 60_000;
    for (call, item, age_ms) in [("dead-call", "dead", stale_ms), ("busy-call", "busy", 0)] {
        leave_claim(&pool, &schema, &name, item, call, age_ms).await;
    }
    assert_eq!(queue.len().await.unwrap(), 0);
    assert_eq!(
        queue.try_dequeue().await.unwrap().as_deref(),
        Some(&b"dead"[..]),
        "the claim older than STALE_CLAIM is put back and delivered"
    );
    assert_eq!(
        queue.try_dequeue().await.unwrap(),
        None,
        "a recent claim stays in flight"
    );
    let left = in_flight(&pool, &schema, &name).await;
    // (The record of this test's own dequeue is deleted in the background.)
    assert!(
        left.iter().any(|call| call.starts_with("busy-call")),
        "{left:?}"
    );
    assert!(
        !left.iter().any(|call| call.starts_with("dead-call")),
        "{left:?}"
    );
    drop_schema(&pool, &schema).await;
}

/// The export lists the items of claims left in flight (fresh or stale: a migration's
/// source is quiesced, so each is a dead dequeuer's, whose item the source delivers
/// again) as queue items where the sweep puts them back, each once, and says so at info.
// One thread: the log capture is the thread's default.
#[tokio::test]
async fn the_export_lists_the_items_of_claims_left_in_flight_at_their_place() {
    let logs = LogCapture::start();
    let Some((backend, pool, schema)) = scoped("queue_wake").await else {
        return;
    };
    let name = unique("export-claimed");
    let queue = backend.queue(name.clone()).unwrap();
    queue.enqueue_with_priority("low-head", 5).await.unwrap();
    queue.enqueue_with_priority("low-next", 5).await.unwrap();
    for item in ["head", "next", "last"] {
        queue.enqueue(item).await.unwrap();
    }
    // Two consumers claimed the head of each priority and died before the hand-over:
    // one just now, one past STALE_CLAIM.
    let stale_ms = i64::try_from(STALE_CLAIM.as_millis()).unwrap() + 60_000;
    leave_claim(&pool, &schema, &name, "head", "fresh-call", 0).await;
    leave_claim(&pool, &schema, &name, "low-head", "stale-call", stale_ms).await;
    assert_eq!(queue.len().await.unwrap(), 3);

    let snapshot = backend.export().await.unwrap();
    let items: Vec<(u16, &[u8])> = snapshot.queues[&name]
        .iter()
        .map(|item| (item.priority, item.item.as_ref()))
        .collect();
    assert_eq!(
        items,
        [
            (0, &b"head"[..]),
            (0, b"next"),
            (0, b"last"),
            (5, b"low-head"),
            (5, b"low-next"),
        ],
        "every item once, the claimed ones at the front of their priority"
    );
    assert!(
        logs.count(&["INFO", "claims left in flight"]) >= 1,
        "no info line on the claimed items exported:\n{}",
        logs.text()
    );
    // The export changes nothing: the claims stay in flight.
    let left = in_flight(&pool, &schema, &name).await;
    assert_eq!(left.len(), 2, "{left:?}");
    drop_schema(&pool, &schema).await;
}

/// A consumer already waiting when a claim left in flight goes stale takes its item
/// then, not at its next renewal (two thirds of `QUEUE_WAITER_TTL`, 20 s).
#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_consumer_takes_a_claim_put_back_once_it_is_stale() {
    // Long enough for the consumer to line up before the claim is stale.
    let Some((backend, pool, schema)) = scoped_with("queue_wake", "stale_claim=3s").await else {
        return;
    };
    let name = unique("stale-waiting");
    let queue = backend.queue(name.clone()).unwrap();
    queue.enqueue("lost").await.unwrap();
    leave_claim(&pool, &schema, &name, "lost", "lost-call", 0).await;
    let consumer = tokio::spawn(async move { queue.dequeue().await });
    line_of(&pool, &schema, &name, 1).await;
    let what = "the waiting consumer taking the stale claim's item";
    let item = within(WOKEN_WITHIN, what, consumer).await;
    assert_eq!(item.unwrap().unwrap(), "lost");
    drop_schema(&pool, &schema).await;
}

/// A consumer waiting on a queue with nothing due (no hold, no claim in flight) looks
/// again at its renewal, not over and over.
// One thread: the log capture is the thread's default, and the consumer's task runs on
// it.
#[tokio::test]
async fn a_waiting_consumer_with_nothing_due_waits_for_its_renewal() {
    let logs = LogCapture::start();
    let Some((backend, pool, schema)) = scoped("queue_wake").await else {
        return;
    };
    let name = unique("nothing-due");
    let queue = backend.queue(name.clone()).unwrap();
    let consumer = tokio::spawn(async move { queue.dequeue().await });
    let waiting = ["waiting for a queue item", name.as_str()];
    logs.wait_for(&waiting, 1, Duration::from_secs(10)).await;
    // Looking again can only be seen over time: a second, well before the renewal.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        logs.count(&waiting),
        1,
        "the consumer looked again with nothing due"
    );
    consumer.abort();
    drop_schema(&pool, &schema).await;
}
