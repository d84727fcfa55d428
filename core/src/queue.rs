//! The durable distributed queue.

use async_trait::async_trait;
use bytes::Bytes;

use crate::delivery::Delivery;
use crate::error::{Error, Result};
use crate::name::Name;
use crate::session::Session;

/// The priority of [`Queue::enqueue`]: the highest (lowest number), so a queue used
/// only with `enqueue` is plain FIFO.
pub const DEFAULT_PRIORITY: u16 = 0;

/// A durable queue: items are ordered by priority (lower number first), then by
/// arrival (FIFO within a priority), as etcd's `recipes.PriorityQueue`.
///
/// Items do not belong to a session and outlive their producer. Under any mix of
/// concurrent producers and consumers, including consumers cancelled mid-dequeue, no
/// item is lost or delivered twice. Created by [`crate::Backend::queue`].
///
/// Two ways to consume:
/// - **at most once**: [`Queue::dequeue`] / [`Queue::try_dequeue`] remove the item as
///   they return it; a consumer that crashes while processing it loses it;
/// - **at least once**: [`Queue::receive`] / [`Queue::try_receive`] return a
///   [`Delivery`] held through the consumer's [`Session`]: [`Delivery::ack`] removes
///   the item, [`Delivery::nack`], dropping the delivery, or the end of the session
///   (crash, partition) put it back at its place with its redelivery count one
///   higher (see [`crate::delivery`]). Where a backend does not offer it
///   ([`crate::Capabilities::reliable_delivery`]), these answer
///   [`Error::Unsupported`].
///
/// Named after the message-queue clients users know (`receive`/`ack`/`nack`, as SQS,
/// Pub/Sub and AMQP clients), and kept apart from `dequeue` so that its at-most-once
/// meaning does not change.
#[async_trait]
pub trait Queue: Send + Sync {
    /// The queue's name.
    fn name(&self) -> &Name;

    /// Appends `item` at [`DEFAULT_PRIORITY`].
    ///
    /// # Cancel safety
    ///
    /// As [`Queue::enqueue_with_priority`].
    async fn enqueue(&self, item: Bytes) -> Result<()> {
        self.enqueue_with_priority(item, DEFAULT_PRIORITY).await
    }

    /// Appends `item` behind the items of the same or a lower `priority` number.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes leaves the item enqueued once or not at
    /// all (as any write whose answer is lost), never twice; nothing that blocks others
    /// is left behind.
    async fn enqueue_with_priority(&self, item: Bytes, priority: u16) -> Result<()>;

    /// Waits for an item and removes it.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. Dropping the future never loses an item: an item is
    /// either returned by this call or left in the queue for another consumer.
    async fn dequeue(&self) -> Result<Bytes>;

    /// [`Self::dequeue`] for at most `timeout`: gives up with
    /// [`crate::Error::Timeout`], removing nothing from the queue (an item is taken only
    /// when returned) (see [`crate::timeout`]).
    ///
    /// # Errors
    /// [`crate::Error::Timeout`]; the store's transient error instead when the deadline
    /// passes while the store is failing (see [`crate::raw::retry`]); or
    /// [`Self::dequeue`]'s errors.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`Self::dequeue`].
    async fn dequeue_timeout(&self, timeout: std::time::Duration) -> Result<Bytes> {
        crate::timeout::timed(timeout, self.dequeue()).await
    }

    /// Removes the first item if there is one, without waiting.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe, as [`Queue::dequeue`]: an item is either returned
    /// by this call or left in the queue.
    async fn try_dequeue(&self) -> Result<Option<Bytes>>;

    /// Waits for an item and holds it through `session` until the returned
    /// [`Delivery`] is acknowledged (at-least-once delivery; see [`crate::delivery`]).
    /// Items are received in queue order; an item held by a live session is skipped.
    ///
    /// # Errors
    /// [`Error::Unsupported`] where the backend does not offer
    /// [`crate::Capabilities::reliable_delivery`]; [`Error::SessionLost`] when
    /// `session` is lost; [`Error::InvalidArgument`] for a session of another backend;
    /// the store's error.
    ///
    /// # Cancel safety
    /// This method is cancel safe: dropping the future never loses an item nor leaves
    /// one held; an item is either returned in a `Delivery` or left in the queue.
    async fn receive(&self, session: &Session) -> Result<Delivery> {
        Err(Error::unsupported(
            session.backend(),
            "reliable queue delivery",
        ))
    }

    /// [`Self::receive`] for at most `timeout`: gives up with
    /// [`crate::Error::Timeout`], holding nothing (see [`crate::timeout`]).
    ///
    /// # Errors
    /// [`crate::Error::Timeout`]; the store's transient error instead when the deadline
    /// passes while the store is failing (see [`crate::raw::retry`]); or
    /// [`Self::receive`]'s errors.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`Self::receive`].
    async fn receive_timeout(
        &self,
        session: &Session,
        timeout: std::time::Duration,
    ) -> Result<Delivery> {
        crate::timeout::timed(timeout, self.receive(session)).await
    }

    /// Receives the first item if there is one, without waiting (see
    /// [`Self::receive`]).
    ///
    /// # Errors
    /// As [`Self::receive`].
    ///
    /// # Cancel safety
    /// Cancel safe, as [`Self::receive`].
    async fn try_receive(&self, session: &Session) -> Result<Option<Delivery>> {
        Err(Error::unsupported(
            session.backend(),
            "reliable queue delivery",
        ))
    }

    /// How many items are queued (items held by a live receiver are not counted).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: it only reads.
    async fn len(&self) -> Result<usize>;

    /// Whether no item is queued.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: it only reads.
    async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }
}
