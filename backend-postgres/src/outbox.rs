//! The transactional outbox: items enqueued inside the caller's own transaction (see
//! [`Outbox`]).

use std::sync::Arc;

use bytes::Bytes;
use distsync_core::queue::{AppendKey, Enqueued, IdempotencyKey};
use distsync_core::{Name, Result};
use sqlx::PgConnection;

use crate::error::map;
use crate::queue::Append;
use crate::store::Shared;

/// Enqueues into one queue inside the caller's own transaction: the transactional
/// outbox. From [`PostgresBackend::outbox`](crate::PostgresBackend::outbox); consumers
/// receive its items through the queue of the same name as any other.
///
/// An [`Outbox`] writes a queue's item with the statement every enqueue of the queue
/// runs (the idempotency record and the item together, see `queue.rs`), on the
/// connection the caller passes: inside the caller's transaction it is one more write of
/// that transaction. So the item exists if and only if the transaction commits, beside
/// the business rows written with it, and a rollback leaves nothing, not even the
/// idempotency record. Consumers are woken by the insert's trigger, whose `NOTIFY`
/// PostgreSQL delivers at commit: never before the item is visible, and not at all
/// after a rollback.
///
/// No statement is repeated on the caller's connection: a failure (a lost connection
/// included) is returned, and the caller's transaction is then in doubt as every other
/// write of it is; it rolls back or commits as a whole. Statements run under the
/// caller's own settings (`statement_timeout`, `lock_timeout`), not the URL's
/// `timeout=`. The connection must reach the database the backend coordinates in
/// ([`PostgresBackend::pool`](crate::PostgresBackend::pool) is one way to get one).
///
/// Idempotency keys behave as on a queue's `enqueue_once`: a key seen on
/// the queue within [`DEDUP_WINDOW`](distsync_core::queue::DEDUP_WINDOW) appends
/// nothing ([`Enqueued::Duplicate`]). A key recorded by a transaction still open makes
/// a second one with the same key wait for it, then append only if the first rolled
/// back (under `READ COMMITTED`; a stricter isolation level fails the second with a
/// serialization error instead).
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let backend = distsync::store::postgres::backend("postgres://app@db/app").await?;
/// let outbox = backend.outbox("orders/placed")?;
/// let pool = backend.pool().clone();
/// let mut tx = pool.begin().await?;
/// sqlx::query("INSERT INTO app.orders (id, total) VALUES (42, 1999)")
///     .execute(&mut *tx)
///     .await?;
/// outbox.enqueue(&mut tx, "order 42").await?; // exists only if the order does
/// tx.commit().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Outbox {
    pub(crate) shared: Arc<Shared>,
    pub(crate) name: Name,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("queue", &self.name.as_str())
            .finish()
    }
}

impl Outbox {
    /// The queue this outbox writes to.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// Writes `item` at the lowest priority (0) inside the transaction open on `conn`.
    ///
    /// # Errors
    /// [`Error::TooLarge`](distsync_core::Error::TooLarge) for an item above
    /// [`MAX_VALUE_SIZE`](crate::MAX_VALUE_SIZE), before anything is sent (the
    /// transaction is untouched); the database's error, which leaves the caller's
    /// transaction in doubt (roll it back).
    ///
    /// # Cancel safety
    /// Dropping the future part-way leaves the transaction in an unknown state: roll it
    /// back.
    pub async fn enqueue(&self, conn: &mut PgConnection, item: impl Into<Bytes>) -> Result<()> {
        self.enqueue_with_priority(conn, item, 0).await
    }

    /// Writes `item` at `priority` (lower first, as a queue's `enqueue_with_priority`)
    /// inside the transaction open on `conn`.
    ///
    /// # Errors
    /// As [`Outbox::enqueue`].
    ///
    /// # Cancel safety
    /// Dropping the future part-way leaves the transaction in an unknown state: roll it
    /// back.
    pub async fn enqueue_with_priority(
        &self,
        conn: &mut PgConnection,
        item: impl Into<Bytes>,
        priority: u16,
    ) -> Result<()> {
        self.append(conn, &AppendKey::call(), &item.into(), priority)
            .await
            .map(drop)
    }

    /// Writes `item` at `priority` inside the transaction open on `conn` unless `key`
    /// was seen on the queue within
    /// [`DEDUP_WINDOW`](distsync_core::queue::DEDUP_WINDOW), committed (see [`Outbox`]
    /// for a key recorded by a transaction still open).
    ///
    /// # Errors
    /// As [`Outbox::enqueue`].
    ///
    /// # Cancel safety
    /// Dropping the future part-way leaves the transaction in an unknown state: roll it
    /// back.
    pub async fn enqueue_once(
        &self,
        conn: &mut PgConnection,
        key: &IdempotencyKey,
        item: impl Into<Bytes>,
        priority: u16,
    ) -> Result<Enqueued> {
        let key = AppendKey::Caller(key.clone());
        self.append(conn, &key, &item.into(), priority).await
    }

    async fn append(
        &self,
        conn: &mut PgConnection,
        key: &AppendKey,
        item: &Bytes,
        priority: u16,
    ) -> Result<Enqueued> {
        // The queue's own limit: what no coordinator checks here, the outbox does.
        crate::capabilities().check_value_size("queue item", item.len())?;
        Append {
            queue: self.name.as_str(),
            key: &key.record(),
            window: key.window(),
            item: item.as_ref(),
            priority,
        }
        .run(&self.shared, conn, &distsync_core::raw::call_id())
        .await
        .map_err(map)
    }
}
