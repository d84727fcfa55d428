//! The durable distributed queue.

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;
use crate::name::Name;

/// The priority of [`Queue::enqueue`]: the highest (lowest number), so a queue used
/// only with `enqueue` is plain FIFO.
pub const DEFAULT_PRIORITY: u16 = 0;

/// A durable queue: items are ordered by priority (lower number first), then by
/// arrival (FIFO within a priority), as etcd's `recipes.PriorityQueue`.
///
/// Items do not belong to a session and outlive their producer. Under any mix of
/// concurrent producers and consumers, including consumers cancelled mid-dequeue, no
/// item is lost or delivered twice. Created by [`crate::Backend::queue`].
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
    /// [`crate::Error::Timeout`], removing nothing from the queue (an item is taken only when returned) (see [`crate::timeout`]).
    ///
    /// # Errors
    /// [`crate::Error::Timeout`], or [`Self::dequeue`]'s errors.
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

    /// How many items are queued.
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
