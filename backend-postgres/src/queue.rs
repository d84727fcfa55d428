//! The durable queue: rows of `queue_items`, claimed with `FOR UPDATE SKIP LOCKED`.
//!
//! An item is removed by one autocommitted statement,
//! `DELETE ... WHERE id = (SELECT id ... ORDER BY priority, id FOR UPDATE SKIP LOCKED
//! LIMIT 1) RETURNING ...`, so concurrent consumers never block each other or take the
//! same item; order is priority (lower first), then arrival. An insert fires a `NOTIFY`
//! that wakes blocked consumers.
//!
//! # Lost replies
//! A claim is named by a fresh call id and moves the item into `queue_inflight` in the
//! same statement that deletes it, unless a claim of that call id exists already, which
//! it returns instead. When the reply is lost (the connection reset after the server
//! committed), the claim is retried with the same id until the server answers: the
//! retry finds the first attempt's item, or, if the first attempt never committed (or
//! is rolled back by the primary key on `call` if it commits late), makes the claim
//! itself. Once the item is handed over, its in-flight record is deleted in the
//! background. So an item is delivered once or stays in the queue (or in flight), never
//! lost to a lost reply.
//!
//! # Cancel safety
//! Once a claim is sent, the server commits it whether or not the client still reads
//! the answer: a consumer dropped at that moment would lose the item. So the claim runs
//! in a spawned task that hands the item over through a oneshot channel. If the consumer
//! is gone by then (the send fails, or the consumer's drop finds the item in the
//! channel), the item is put back with its original id and priority (moved back from
//! `queue_inflight` in one statement), so it keeps its place.
//!
//! Not yet: a consumer process that dies between a committed claim and its hand-over
//! leaves the item in `queue_inflight` (listed by nothing but that table).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use distsync_core::{Error, Name, Queue, Result};
use tokio::sync::oneshot;

use crate::error::map;
use crate::retry::Backoff;
use crate::shared::Shared;

pub(crate) struct PgQueue {
    pub(crate) shared: Arc<Shared>,
    pub(crate) name: Name,
}

/// An item removed from the queue: id, priority, payload.
type Claimed = (i64, i32, Vec<u8>);

/// How long a claim whose reply was lost is retried before the error is returned (the
/// item then stays in `queue_inflight`).
const CLAIM_RETRIES_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// Claims the first item under a fresh call id, retrying the (idempotent) claim
/// through lost replies. The item stays recorded in flight under the returned call id
/// until it is handed over ([`forget`]) or put back ([`put_back`]).
async fn claim(shared: &Arc<Shared>, queue: &str) -> Result<Option<(String, Claimed)>> {
    let call = distsync_core::raw::call_id();
    let give_up = tokio::time::Instant::now() + CLAIM_RETRIES_FOR;
    let mut backoff = Backoff::new();
    let claimed = loop {
        match claim_once(shared, queue, &call).await {
            Ok(claimed) => break claimed,
            Err(error) => {
                // A unique violation on `call`: an earlier attempt of this claim, whose
                // reply was lost, committed concurrently; the next attempt finds it.
                let racing = matches!(&error, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"));
                let error = map(error);
                if (racing || Backoff::retryable(&error)) && tokio::time::Instant::now() < give_up {
                    backoff.pause("a queue claim's answer", &error).await;
                } else {
                    return Err(error);
                }
            }
        }
    };
    Ok(claimed.map(|claimed| (call, claimed)))
}

/// One attempt of the claim named `call`: the item an earlier attempt of it took, or
/// the first item, moved into `queue_inflight`.
async fn claim_once(
    shared: &Shared,
    queue: &str,
    call: &str,
) -> std::result::Result<Option<Claimed>, sqlx::Error> {
    sqlx::query_as(&shared.sql(
        "WITH earlier AS (             SELECT id, priority, item FROM {s}.queue_inflight WHERE call = $2),          taken AS (             DELETE FROM {s}.queue_items WHERE id = (                 SELECT id FROM {s}.queue_items WHERE queue = $1                  ORDER BY priority, id LIMIT 1 FOR UPDATE SKIP LOCKED)              AND NOT EXISTS (SELECT 1 FROM earlier)              RETURNING id, priority, item),          recorded AS (             INSERT INTO {s}.queue_inflight (call, id, queue, priority, item)              SELECT $2, id, $1, priority, item FROM taken              RETURNING id, priority, item)          SELECT id, priority, item FROM earlier          UNION ALL SELECT id, priority, item FROM recorded",
    ))
    .bind(queue)
    .bind(call)
    .fetch_optional(&shared.pool)
    .await
}

/// Deletes the in-flight record of a handed-over claim, through connection trouble.
fn forget(shared: Arc<Shared>, call: String) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut backoff = Backoff::new();
        loop {
            let deleted = sqlx::query(&shared.sql("DELETE FROM {s}.queue_inflight WHERE call = $1"))
                .bind(&call)
                .execute(&shared.pool)
                .await
                .map_err(map);
            match deleted {
                Ok(_) => return,
                Err(error) if Backoff::retryable(&error) => {
                    backoff.pause("forgetting a queue claim", &error).await;
                }
                Err(error) => {
                    tracing::error!(call, %error, "deleting a delivered queue claim's record failed");
                    return;
                }
            }
        }
    });
}

/// Puts the item of the claim `call` back where it was (same id and priority), moving
/// it out of `queue_inflight` in one statement; retried through connection trouble,
/// and idempotent: once moved, the record is gone and a retry moves nothing.
fn put_back(shared: Arc<Shared>, call: String) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::error!(
            call,
            "a queue item claimed by a dropped consumer outside a runtime stays in flight"
        );
        return;
    };
    runtime.spawn(async move {
        let mut backoff = Backoff::new();
        loop {
            let moved = sqlx::query(&shared.sql(
                "WITH moved AS (DELETE FROM {s}.queue_inflight WHERE call = $1 \
                     RETURNING id, queue, priority, item) \
                 INSERT INTO {s}.queue_items (id, queue, priority, item) \
                 SELECT id, queue, priority, item FROM moved ON CONFLICT (id) DO NOTHING",
            ))
            .bind(&call)
            .execute(&shared.pool)
            .await
            .map_err(map);
            match moved {
                Ok(_) => {
                    tracing::debug!(call, "item of a dropped consumer put back");
                    return;
                }
                Err(error) if Backoff::retryable(&error) => {
                    backoff.pause("putting a queue item back", &error).await;
                }
                Err(error) => {
                    tracing::error!(call, %error, "putting back the item of a dropped consumer failed; it stays in flight");
                    return;
                }
            }
        }
    });
}

/// A claim's outcome as the claim task hands it over.
type Handed = Result<Option<(String, Claimed)>>;

/// The consumer's end of a claim; puts back an item it never returned.
struct ClaimReceiver {
    receiver: oneshot::Receiver<Handed>,
    done: bool,
    shared: Arc<Shared>,
}

impl Drop for ClaimReceiver {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // After close(), the claim task's send fails (and it puts the item back), or the
        // item is already here.
        self.receiver.close();
        if let Ok(Ok(Some((call, _)))) = self.receiver.try_recv() {
            put_back(Arc::clone(&self.shared), call);
        }
    }
}

impl PgQueue {
    /// Removes the first item, if any. Cancel-safe (see the module docs).
    async fn claim_protected(&self) -> Result<Option<Bytes>> {
        let (sender, receiver) = oneshot::channel();
        let shared = Arc::clone(&self.shared);
        let queue = self.name.as_str().to_owned();
        tokio::spawn(async move {
            let claimed = claim(&shared, &queue).await;
            if let Err(Ok(Some((call, _)))) = sender.send(claimed) {
                put_back(shared, call);
            }
        });
        let mut receiver = ClaimReceiver {
            receiver,
            done: false,
            shared: Arc::clone(&self.shared),
        };
        let claimed = (&mut receiver.receiver).await;
        receiver.done = true;
        match claimed {
            Ok(Ok(Some((call, (_, _, item))))) => {
                forget(Arc::clone(&self.shared), call);
                Ok(Some(Bytes::from(item)))
            }
            Ok(Ok(None)) => Ok(None),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(Error::backend(
                crate::error::BACKEND,
                "the queue claim task stopped",
            )),
        }
    }
}

#[async_trait]
impl Queue for PgQueue {
    fn name(&self) -> &Name {
        &self.name
    }

    async fn enqueue_with_priority(&self, item: Bytes, priority: u16) -> Result<()> {
        sqlx::query(
            &self
                .shared
                .sql("INSERT INTO {s}.queue_items (queue, priority, item) VALUES ($1, $2, $3)"),
        )
        .bind(self.name.as_str())
        .bind(i32::from(priority))
        .bind(item.as_ref())
        .execute(&self.shared.pool)
        .await
        .map_err(map)?;
        Ok(())
    }

    /// Waits out connection trouble (see [`crate::retry`]).
    ///
    /// Cancel-safety: cancel-safe; an item claimed for a dropped call is put back in its
    /// place (see the module docs).
    async fn dequeue(&self) -> Result<Bytes> {
        let mut backoff = Backoff::new();
        let payload = format!("q:{}", self.name);
        let mut subscription = loop {
            match self.shared.hub.subscribe(payload.clone()).await {
                Ok(subscription) => break subscription,
                Err(error) if Backoff::retryable(&error) => {
                    backoff.pause("a queue item", &error).await;
                }
                Err(error) => return Err(error),
            }
        };
        loop {
            match self.claim_protected().await {
                Ok(Some(item)) => return Ok(item),
                Ok(None) => {
                    backoff.reset();
                    subscription.changed().await?;
                }
                Err(error) if Backoff::retryable(&error) => {
                    backoff.pause("a queue item", &error).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn try_dequeue(&self) -> Result<Option<Bytes>> {
        self.claim_protected().await
    }

    async fn len(&self) -> Result<usize> {
        let n: i64 = sqlx::query_scalar(
            &self
                .shared
                .sql("SELECT count(*) FROM {s}.queue_items WHERE queue = $1"),
        )
        .bind(self.name.as_str())
        .fetch_one(&self.shared.pool)
        .await
        .map_err(map)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }
}
