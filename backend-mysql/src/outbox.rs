//! The transactional outbox: items enqueued inside the caller's own transaction (see
//! [`Outbox`]).

use std::sync::Arc;

use bytes::Bytes;
use distsync_core::queue::{Enqueued, IdempotencyKey};
use distsync_core::{Capabilities, Name, Queue, Result};
use sqlx::MySqlConnection;

use crate::callers;

/// Enqueues into one queue inside the caller's own transaction: the transactional
/// outbox. From [`Transactional::outbox`](crate::Transactional::outbox); consumers
/// receive its items through the queue of the same name as any other.
///
/// An [`Outbox`] runs the enqueue every producer of the queue runs (the item, its
/// idempotency record and the revision row, see the crate docs), with its
/// transactions on the connection the caller passes, inside the caller's open
/// transaction: the item exists if and only if the transaction commits, beside the
/// business rows written with it, and a rollback leaves nothing, not even the
/// idempotency record. Consumers see the item once it commits (a waiting consumer
/// through the watch poll, `poll_interval=`).
///
/// The enqueue locks the store's revision row in the caller's transaction, as every
/// write of the store does, and the lock is held until the caller commits or rolls
/// back: every other writer of the store (locks, elections, queues) waits meanwhile,
/// so keep the transaction short after the first enqueue. A connection of the
/// backend's pool ([`Transactional::pool`](crate::Transactional::pool)) has MariaDB's
/// `idle_transaction_timeout` set to a second, which ends a transaction whose client
/// stopped (and frees the row); a connection of the caller's own pool has what the
/// caller set. It must reach the database the backend coordinates in.
///
/// No statement is repeated on the caller's connection: a failure is returned, and the
/// caller's transaction is then in doubt as every other write of it is; roll it back.
/// A connection that broke (the server ended it, the idle timeout above) is
/// [`Error::Connection`](distsync_core::Error), transient: the transaction rolled back
/// with it and can run again ([`database_error`](crate::database_error) reads the
/// caller's own statements' errors the same way). Statements run under the caller's own
/// settings (`innodb_lock_wait_timeout`), not the URL's `timeout=`. One handle runs
/// its enqueues one at a time.
///
/// Idempotency keys behave as on a queue's `enqueue_once`: a key seen on the queue
/// within [`DEDUP_WINDOW`](distsync_core::queue::DEDUP_WINDOW) appends nothing
/// ([`Enqueued::Duplicate`]).
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use distsync::store::mysql::Transactional as _;
///
/// let backend = distsync::store::mysql::backend("mysql://app:pw@db/app").await?;
/// let outbox = backend.outbox("orders/placed")?;
/// let pool = backend.pool().clone();
/// let mut tx = pool.begin().await?;
/// sqlx::query("INSERT INTO orders (id, total) VALUES (42, 1999)")
///     .execute(&mut *tx)
///     .await?;
/// outbox.enqueue(&mut tx, "order 42").await?; // exists only if the order does
/// tx.commit().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Outbox {
    pub(crate) queue: Arc<dyn Queue>,
    pub(crate) capabilities: Capabilities,
    /// One enqueue at a time: the queue's recipe runs inside one caller's transaction.
    pub(crate) running: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("queue", &self.queue.name().as_str())
            .finish()
    }
}

impl Outbox {
    /// The queue this outbox writes to.
    pub fn name(&self) -> &Name {
        self.queue.name()
    }

    /// Writes `item` at the lowest priority (0) inside the transaction open on `conn`.
    ///
    /// # Errors
    /// [`Error::TooLarge`](distsync_core::Error::TooLarge) for an item above the
    /// backend's value limit, before anything is sent (the transaction is
    /// untouched); the database's error, which leaves the caller's transaction in
    /// doubt (roll it back).
    ///
    /// # Cancel safety
    /// Dropping the future part-way leaves the transaction in an unknown state: roll it
    /// back.
    pub async fn enqueue(&self, conn: &mut MySqlConnection, item: impl Into<Bytes>) -> Result<()> {
        self.enqueue_with_priority(conn, item, 0).await
    }

    /// Writes `item` at `priority` (lower first, as a queue's `enqueue_with_priority`)
    /// inside the transaction open on `conn`.
    ///
    /// # Errors
    /// As [`Outbox::enqueue`].
    ///
    /// # Cancel safety
    /// As [`Outbox::enqueue`].
    pub async fn enqueue_with_priority(
        &self,
        conn: &mut MySqlConnection,
        item: impl Into<Bytes>,
        priority: u16,
    ) -> Result<()> {
        let item = self.checked(item.into())?;
        let _running = self.running.lock().await;
        callers::inside(conn, self.queue.enqueue_with_priority(item, priority)).await
    }

    /// Writes `item` at `priority` inside the transaction open on `conn` unless `key`
    /// was seen on the queue within
    /// [`DEDUP_WINDOW`](distsync_core::queue::DEDUP_WINDOW).
    ///
    /// # Errors
    /// As [`Outbox::enqueue`].
    ///
    /// # Cancel safety
    /// As [`Outbox::enqueue`].
    pub async fn enqueue_once(
        &self,
        conn: &mut MySqlConnection,
        key: &IdempotencyKey,
        item: impl Into<Bytes>,
        priority: u16,
    ) -> Result<Enqueued> {
        let item = self.checked(item.into())?;
        let _running = self.running.lock().await;
        callers::inside(conn, self.queue.enqueue_once(key, item, priority)).await
    }

    /// `item`, within the backend's value limit: what no coordinator checks here, the
    /// outbox does.
    fn checked(&self, item: Bytes) -> Result<Bytes> {
        self.capabilities
            .check_value_size("queue item", item.len())?;
        Ok(item)
    }
}
