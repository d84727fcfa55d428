//! The durable queue: rows of `queue_items`, claimed with `FOR UPDATE SKIP LOCKED`.
//!
//! An item is removed by one autocommitted statement,
//! `DELETE ... WHERE id = (SELECT id ... ORDER BY priority, id FOR UPDATE SKIP LOCKED
//! LIMIT 1) RETURNING ...`, so concurrent consumers never block each other or take the
//! same item; order is priority (lower first), then arrival. An insert fires a `NOTIFY`
//! that wakes blocked consumers.
//!
//! # Cancel safety
//! Once the `DELETE` is sent, the server commits it whether or not the client still
//! reads the answer: a consumer dropped at that moment would lose the item. So the claim
//! runs in a spawned task that hands the item over through a oneshot channel. If the
//! consumer is gone by then (the send fails, or the consumer's drop finds the item in the
//! channel), the item is put back with its original id and priority, so it keeps its
//! place. An item is thus either returned or back in the queue (or, if the server cannot
//! be reached to put it back, logged as an error with the item's id).

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

async fn claim(shared: &Shared, queue: &str) -> Result<Option<Claimed>> {
    sqlx::query_as(&shared.sql(
        "DELETE FROM {s}.queue_items WHERE id = (\
             SELECT id FROM {s}.queue_items WHERE queue = $1 \
             ORDER BY priority, id LIMIT 1 FOR UPDATE SKIP LOCKED) \
         RETURNING id, priority, item",
    ))
    .bind(queue)
    .fetch_optional(&shared.pool)
    .await
    .map_err(map)
}

/// Puts a claimed item back where it was.
fn put_back(shared: Arc<Shared>, queue: String, (id, priority, item): Claimed) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::error!(%queue, id, "queue item claimed by a dropped consumer outside a runtime is lost");
        return;
    };
    runtime.spawn(async move {
        let inserted = sqlx::query(&shared.sql(
            "INSERT INTO {s}.queue_items (id, queue, priority, item) VALUES ($1, $2, $3, $4)",
        ))
        .bind(id)
        .bind(&queue)
        .bind(priority)
        .bind(&item)
        .execute(&shared.pool)
        .await;
        match inserted {
            Ok(_) => tracing::debug!(%queue, id, "item of a dropped consumer put back"),
            Err(error) => {
                tracing::error!(%queue, id, %error, "putting back the item of a dropped consumer failed; it is lost")
            }
        }
    });
}

/// The consumer's end of a claim; puts back an item it never returned.
struct ClaimReceiver {
    receiver: oneshot::Receiver<Result<Option<Claimed>>>,
    done: bool,
    shared: Arc<Shared>,
    queue: String,
}

impl Drop for ClaimReceiver {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // After close(), the claim task's send fails (and it puts the item back), or the
        // item is already here.
        self.receiver.close();
        if let Ok(Ok(Some(claimed))) = self.receiver.try_recv() {
            put_back(
                Arc::clone(&self.shared),
                std::mem::take(&mut self.queue),
                claimed,
            );
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
            if let Err(Ok(Some(claimed))) = sender.send(claimed) {
                put_back(shared, queue, claimed);
            }
        });
        let mut receiver = ClaimReceiver {
            receiver,
            done: false,
            shared: Arc::clone(&self.shared),
            queue: self.name.as_str().to_owned(),
        };
        let claimed = (&mut receiver.receiver).await;
        receiver.done = true;
        match claimed {
            Ok(Ok(claimed)) => Ok(claimed.map(|(_, _, item)| Bytes::from(item))),
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
