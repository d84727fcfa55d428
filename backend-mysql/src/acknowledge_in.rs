//! Acknowledging a delivery inside the caller's own transaction (see [`ack_in`]).

use distsync_core::{Delivery, Error, Result};
use sqlx::MySqlConnection;

use crate::{callers, BACKEND};

/// A delivery acknowledged inside a transaction that has not been seen to commit (see
/// [`ack_in`]).
#[must_use = "call committed() once the transaction has committed; dropped, the item is nacked"]
#[derive(Debug)]
pub struct PendingAck {
    delivery: Delivery,
}

impl PendingAck {
    /// The acknowledged delivery (its item, its redelivery count).
    pub fn delivery(&self) -> &Delivery {
        &self.delivery
    }

    /// Ends the delivery with no request: call it once the transaction committed.
    pub fn committed(self) {
        self.delivery.settled_elsewhere();
    }

    /// Commits `tx`, the transaction the delivery was acknowledged in, then ends the
    /// delivery as [`PendingAck::committed`] does; a commit that fails drops the
    /// delivery instead, which nacks it.
    ///
    /// # Errors
    /// The commit's error as [`database_error`](crate::database_error) reads it:
    /// [`Error::Connection`] (transient) when the connection broke before the commit's
    /// answer came: the server rolled the transaction back (`idle_transaction_timeout`,
    /// see [`ack_in`]), or a lost answer followed a commit. Either way an item the commit
    /// did not remove is delivered again: receive again and run the work again.
    ///
    /// # Cancel safety
    /// Dropping the future part-way leaves the commit sent or not, as a lost answer
    /// does; the delivery is dropped with the future, which nacks it.
    pub async fn commit(self, tx: sqlx::Transaction<'_, sqlx::MySql>) -> Result<()> {
        tx.commit().await.map_err(crate::database_error)?;
        self.committed();
        Ok(())
    }
}

/// Acknowledges `delivery` (received from a MySQL queue) inside the transaction open
/// on `conn`, fenced by the delivery: the consumer's writes and the removal of the
/// item commit together, or neither does.
///
/// [`ack_in`] deletes the item in the caller's transaction, as
/// [`Delivery::ack`] does, only while the item is still held by this delivery's
/// receive (its hold, bound to the session's lease, is the one this receive put).
/// Otherwise (the session ended and the item went back, perhaps to another consumer
/// that holds it now) it returns [`Error::SessionLost`] and writes nothing: **roll
/// the transaction back** (`?` on the error drops an sqlx `Transaction`, which does),
/// so that the writes made in it do not commit. Unlike PostgreSQL, MySQL cannot abort
/// a transaction from inside it: a `COMMIT` after the error commits the caller's
/// other writes.
///
/// The acknowledgement locks the store's revision row until the transaction ends,
/// as every write of the store does, so the item cannot be delivered again between
/// the acknowledgement and the commit, however long that takes (every other writer of
/// the store waits meanwhile: keep it short): committed, the item is gone; rolled
/// back, it is held by the delivery as before. So an item's effect, written in the
/// transaction that acknowledges it, is applied exactly once across crashes at any
/// point: a consumer that dies before its commit leaves the item held by a session
/// that expires, and the item is delivered again; one that dies after it leaves
/// nothing to deliver.
///
/// The delivery stays with the [`PendingAck`] until the caller knows the outcome:
/// [`PendingAck::commit`] commits and ends it with no request (as
/// [`PendingAck::committed`] does after a commit of the caller's own); dropped instead
/// (the transaction rolled back, or the commit failed and `?` returned), it nacks the
/// item in the background as a dropped [`Delivery`] does. A nack after a commit whose
/// reply was lost finds no hold and does nothing.
///
/// No statement is repeated on the caller's connection (see
/// [`Outbox`](crate::Outbox)).
///
/// ```no_run
/// # async fn f(
/// #     pool: sqlx::MySqlPool,
/// #     jobs: std::sync::Arc<dyn distsync::Queue>,
/// #     session: distsync::Session,
/// # ) -> Result<(), Box<dyn std::error::Error>> {
/// let delivery = jobs.receive(&session).await?;
/// let mut tx = pool.begin().await?;
/// sqlx::query("UPDATE ledger SET total = total + 1")
///     .execute(&mut *tx)
///     .await?;
/// let ack = distsync::store::mysql::ack_in(&mut tx, delivery).await?; // rolls back on Err
/// ack.commit(tx).await?; // the write and the removal of the item, together
/// # Ok(()) }
/// ```
///
/// # Errors
/// - [`Error::SessionLost`] when the item is no longer held by this delivery (its
///   session ended first): nothing was written; roll the transaction back.
/// - [`Error::InvalidArgument`] for a delivery from another backend (it is dropped,
///   which nacks it as any dropped delivery).
/// - [`Error::Connection`] (transient) when the connection broke: the server ended it
///   and rolled the transaction back (MariaDB's `idle_transaction_timeout`, when the
///   caller stopped inside the transaction for longer), or a lock wait timed out (roll
///   the transaction back). The delivery is dropped, which nacks it, and the item is
///   delivered again: receive again and run the work again.
/// - The database's other errors; the transaction is then in doubt (roll it back).
///
/// # Cancel safety
/// Dropping the future part-way leaves the transaction in an unknown state: roll it
/// back. The delivery is dropped with the future, which nacks it.
pub async fn ack_in(conn: &mut MySqlConnection, delivery: Delivery) -> Result<PendingAck> {
    if distsync_kv::recipes::delivery_backend(&delivery) != Some(BACKEND) {
        return Err(Error::InvalidArgument(
            "ack_in takes a delivery received from a mysql queue".into(),
        ));
    }
    callers::inside(conn, distsync_kv::recipes::ack_once(&delivery)).await?;
    Ok(PendingAck { delivery })
}
