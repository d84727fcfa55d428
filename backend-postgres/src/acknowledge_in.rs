//! Acknowledging a delivery inside the caller's own transaction (see [`ack_in`]).

use std::any::Any;

use distsync_core::{Delivery, Error, Result};
use sqlx::PgConnection;

use crate::error::{is_session_gone, map};
use crate::queue::PgSettle;

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
}

/// Acknowledges `delivery` (received from a PostgreSQL queue) inside the transaction
/// open on `conn`, fenced by the delivery: the consumer's writes and the removal of the
/// item commit together, or neither does.
///
/// [`ack_in`] deletes the item in the caller's transaction, fenced by the delivery: only
/// while the item is still held by this delivery's receive and its session is live
/// (the condition of [`Delivery::ack`]). Otherwise (the session ended and the item went
/// back, perhaps to another consumer that holds it now) it raises an error inside the
/// transaction, which aborts it: the caller's writes made in it roll back with the
/// acknowledgement that failed, even if the caller goes on to `COMMIT` (PostgreSQL
/// rolls an aborted transaction back).
///
/// The delete's row lock keeps every other receive off the item until the transaction
/// ends, so the item cannot be delivered again between the acknowledgement and the
/// commit, however long that takes: committed, the item is gone; rolled back, it is
/// held by the delivery as before. So an item's effect, written in the transaction that
/// acknowledges it, is applied exactly once across crashes at any point: a consumer
/// that dies before its commit leaves the item held by a session that expires, and the
/// item is delivered again; one that dies after it leaves nothing to deliver.
///
/// The delivery stays with the [`PendingAck`] until the caller knows the outcome:
/// [`PendingAck::committed`] after the commit ends it with no request; dropped instead
/// (the transaction rolled back, or the commit failed and `?` returned), it nacks the
/// item in the background as a dropped [`Delivery`] does, so a rolled-back item goes
/// back to its place at once rather than when the session ends. A nack after a commit
/// whose reply was lost finds no item and does nothing.
///
/// ```no_run
/// # async fn f(
/// #     pool: sqlx::PgPool,
/// #     jobs: std::sync::Arc<dyn distsync::Queue>,
/// #     session: distsync::Session,
/// # ) -> Result<(), Box<dyn std::error::Error>> {
/// let delivery = jobs.receive(&session).await?;
/// let mut tx = pool.begin().await?;
/// sqlx::query("UPDATE app.ledger SET total = total + 1")
///     .execute(&mut *tx)
///     .await?;
/// let ack = distsync::store::postgres::ack_in(&mut tx, delivery).await?;
/// tx.commit().await?; // the write and the removal of the item, together
/// ack.committed();
/// # Ok(()) }
/// ```
///
/// # Errors
/// - [`Error::SessionLost`] when the item is no longer held by this delivery (its
///   session ended first): the transaction is aborted, and everything it wrote rolls
///   back. The item is another consumer's, or back in the queue.
/// - [`Error::InvalidArgument`] for a delivery from another backend (it is dropped,
///   which nacks it as any dropped delivery).
/// - The database's error; the transaction is then in doubt (roll it back).
///
/// # Cancel safety
/// Dropping the future part-way leaves the transaction in an unknown state: roll it
/// back. The delivery is dropped with the future, which nacks it.
pub async fn ack_in(conn: &mut PgConnection, delivery: Delivery) -> Result<PendingAck> {
    let Some(settle) = delivery
        .settle_side()
        .and_then(|side| (side as &dyn Any).downcast_ref::<PgSettle>())
    else {
        return Err(Error::InvalidArgument(
            "ack_in takes a delivery received from a postgres queue".into(),
        ));
    };
    let acked = sqlx::query(&settle.shared.sql("SELECT {s}.queue_ack_in($1, $2, $3)"))
        .bind(settle.id)
        .bind(&settle.call)
        .bind(settle.session)
        .execute(&mut *conn)
        .await;
    match acked {
        Ok(_) => Ok(PendingAck { delivery }),
        Err(error) if is_session_gone(&error) => Err(Error::SessionLost),
        Err(error) => Err(map(error)),
    }
}
