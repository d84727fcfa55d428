//! At-least-once queue delivery: a [`Delivery`] is an item received with
//! [`Queue::receive`](crate::Queue::receive), held through the consumer's
//! [`Session`] until it is acknowledged.
//!
//! # Semantics
//!
//! - [`Delivery::ack`] removes the item from the queue for good.
//! - [`Delivery::nack`] puts it back **at its place**: same priority, same position
//!   among the items of that priority (it is received next if it was first), with its
//!   [redelivery count](Delivery::redeliveries) one higher.
//! - If the consumer's session ends first (its process crashed, it was partitioned
//!   from the store past its TTL, the store ended it), the store puts the item back at
//!   its place as a `nack` would, so nothing received is lost: an item stays in the
//!   queue until some consumer acknowledges it. Another consumer can receive it only
//!   after the holder's session has ended in the store, which is never before the
//!   holder's client-side deadline ([`Session::lost`] fires first), so no item is held
//!   by two consumers at once while both sessions believe they hold it.
//! - Dropping a `Delivery` without `ack` or `nack` **nacks it in the background** (the
//!   item goes back at its place at once, as users of RabbitMQ's or SQS's clients
//!   expect from an unacknowledged message), where a tokio runtime is present; outside
//!   a runtime, or if the background `nack` fails, the item goes back when the session
//!   ends. The type is `#[must_use]` so that a forgotten acknowledgement is visible.
//!
//! The redelivery count is the number of earlier deliveries of the item (0 on the
//! first), counted by [`Queue::receive`](crate::Queue::receive) calls only: a
//! redelivered item is one some consumer received before and did not acknowledge.
//!
//! At-most-once [`Queue::dequeue`](crate::Queue::dequeue) is unchanged: it removes the
//! item when it returns it. It skips items held by a live receiver.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;
use crate::session::{Lost, Session};

/// The backend's side of a [`Delivery`]: acknowledging or returning one held item.
/// For backend implementors (see [`crate::raw`]).
#[async_trait]
pub trait Settle: Send + Sync + 'static {
    /// Removes the held item from the queue.
    ///
    /// # Errors
    /// [`crate::Error::SessionLost`] when the hold is gone (the session ended and the
    /// item went back to the queue), or the store's error.
    async fn ack(&self) -> Result<()>;

    /// Puts the held item back at its place (same priority and order position).
    /// A hold that is gone already (the session ended: the item is back) is `Ok`.
    ///
    /// # Errors
    /// The store's error.
    async fn nack(&self) -> Result<()>;
}

/// An item received from a queue with at-least-once delivery, held through the
/// consumer's session until [`ack`](Delivery::ack)ed (see the [module docs](self)).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync_core::Result<()> {
/// let coordinator = distsync_core::Coordinator::new(distsync_kv::memory::MemoryBackend::new());
/// let session = coordinator.session().await?;
/// let jobs = coordinator.queue("jobs")?;
/// jobs.enqueue("build".into()).await?;
/// let delivery = jobs.receive(&session).await?;
/// assert_eq!(delivery.item(), "build");
/// assert_eq!(delivery.redeliveries(), 0);
/// delivery.nack().await?; // back at its place
/// let again = jobs.receive(&session).await?;
/// assert_eq!(again.redeliveries(), 1);
/// // ... do the work; a crash here puts the item back when the session ends ...
/// again.ack().await?; // gone for good
/// assert!(jobs.is_empty().await?);
/// # Ok(()) }
/// ```
#[must_use = "an unacknowledged delivery is put back in the queue when dropped; call ack() once the item is processed"]
pub struct Delivery {
    item: Bytes,
    redeliveries: u32,
    session: Session,
    settle: Option<Box<dyn Settle>>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("len", &self.item.len())
            .field("redeliveries", &self.redeliveries)
            .field("session", &self.session.id())
            .finish()
    }
}

impl Delivery {
    /// A delivery of `item`, delivered `redeliveries` times before, held through
    /// `session` and settled by `settle`. For backend implementors.
    #[doc(hidden)]
    pub fn new(item: Bytes, redeliveries: u32, session: &Session, settle: Box<dyn Settle>) -> Self {
        Self {
            item,
            redeliveries,
            session: session.clone(),
            settle: Some(settle),
        }
    }

    /// The item.
    pub fn item(&self) -> &Bytes {
        &self.item
    }

    /// How many times the item was delivered (by `receive`) before this delivery and
    /// not acknowledged: 0 on its first delivery.
    pub fn redeliveries(&self) -> u32 {
        self.redeliveries
    }

    /// Whether this is not the item's first delivery.
    pub fn is_redelivered(&self) -> bool {
        self.redeliveries > 0
    }

    /// Resolves when the session holding the item is lost: the store may then hand
    /// the item to another consumer, so stop working on it (its `ack` will fail).
    ///
    /// # Cancel safety
    /// Cancel safe, as [`Session::lost`].
    pub fn lost(&self) -> Lost {
        self.session.lost()
    }

    /// Acknowledges the item: removes it from the queue.
    ///
    /// # Errors
    /// [`crate::Error::SessionLost`] when the session ended first (the item went back
    /// to the queue, and may be delivered again), or the store's error (the item then
    /// stays held until the session ends, and goes back).
    ///
    /// # Cancel safety
    /// Dropping the future leaves the item either acknowledged or held through the
    /// session (it goes back to the queue when the session ends); never lost.
    pub async fn ack(mut self) -> Result<()> {
        match self.settle.take() {
            Some(settle) => settle.ack().await,
            None => Ok(()),
        }
    }

    /// Puts the item back at its place (same priority, same position), with its
    /// redelivery count one higher.
    ///
    /// `Ok` also when the session ended first: the item is back already.
    ///
    /// # Errors
    /// The store's error (the item then goes back when the session ends).
    ///
    /// # Cancel safety
    /// Dropping the future leaves the item either back in the queue or held through
    /// the session (it goes back when the session ends).
    pub async fn nack(mut self) -> Result<()> {
        match self.settle.take() {
            Some(settle) => settle.nack().await,
            None => Ok(()),
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        let Some(settle) = self.settle.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                session = %self.session.id(),
                "queue delivery dropped outside a runtime; the item goes back when the session ends"
            );
            return;
        };
        runtime.spawn(async move {
            if let Err(error) = settle.nack().await {
                tracing::debug!(
                    %error,
                    "background nack of a dropped queue delivery failed; the item goes back when the session ends",
                );
            }
        });
    }
}
