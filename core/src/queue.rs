//! The durable distributed queue.

use async_trait::async_trait;
use bytes::Bytes;

use crate::delivery::Delivery;
use crate::error::{Error, Result};
use crate::name::Name;
use crate::session::Session;

/// How long a store remembers a user's [`IdempotencyKey`] after the enqueue that first
/// used it: 24 hours, at least (the memory and etcd backends keep a key up to one hour
/// longer, as their records share one store lease per hour). Within the window,
/// [`Queue::enqueue_once`](crate::Queue) with the same key and queue answers
/// [`Enqueued::Duplicate`], whether or not the item has been consumed since; after it,
/// the key is forgotten and enqueues a new item. A day covers a retrying producer, a
/// restarted process that replays its outbox, and an operator re-running a job the
/// same day; a producer that may replay a key later deduplicates at the consumer too.
pub const DEDUP_WINDOW: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// How long a store remembers the key an [`Queue::enqueue`](crate::Queue) draws for itself: long
/// enough to outlast the call's own retries (see [`crate::raw::retry`]) and any attempt
/// the store applies late, short enough that the records of plain enqueues cost little.
pub const CALL_KEY_WINDOW: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// How old a [`Queue::dequeue`]'s claim must be before any
/// consumer of its queue puts the item back, by default: 15 minutes, longer than every
/// budget its owner may still be acting within (the claim, the hand-over's
/// acknowledgement, a put-back: at most ten minutes). A claim this old belongs to a
/// process that died between taking the item and handing it over, or to a store
/// unreachable for that long; its item is delivered again, the price of not losing it:
/// at its place, but on NATS, whose put-back writes the item anew behind the waiting
/// items of its priority.
///
/// The bound exists because an at-most-once claim is taken in the store before the
/// item reaches its caller: without it, a dequeuer that dies in between would hide its
/// item for good. Every store's URL takes another bound as `stale_claim=` (and every
/// configuration as `with_stale_claim`), for a deployment that wants a dead dequeuer's
/// item back sooner. The risk of a shorter bound: a live dequeuer may still be handing
/// its item over (its request timeout, times its retries and the store's clock skew),
/// and a claim put back meanwhile is delivered to another consumer while the first one
/// also returns it, a second delivery. Hence the floor, [`MIN_STALE_CLAIM`]; every
/// consumer of one queue should give the same bound, as any of them sweeps.
pub const STALE_CLAIM: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// The shortest [`STALE_CLAIM`] a URL's `stale_claim=` may give (a shorter one is
/// refused, naming the key) and a configuration's `with_stale_claim` sets (a shorter
/// one becomes it): 1 second. Below it, an ordinary request's round trip, let alone a
/// retry, outlives the bound, and every dequeue would risk a second delivery.
pub const MIN_STALE_CLAIM: std::time::Duration = std::time::Duration::from_secs(1);

/// The longest [`STALE_CLAIM`] a URL's `stale_claim=` may give (a longer one is
/// refused, naming the key) and a configuration's `with_stale_claim` sets (a longer one
/// becomes it): 24 hours. A live dequeuer's claim is minutes old at most, so a longer
/// bound only hides a dead dequeuer's item longer; and PostgreSQL reckons the bound as
/// an interval, which a bound of centuries, a typo away, overflows.
pub const MAX_STALE_CLAIM: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// A name for one enqueue that makes repeating it harmless: a store that has seen the
/// key on a queue (within [`DEDUP_WINDOW`]) does not enqueue again.
///
/// 1 to [`IdempotencyKey::MAX_LEN`] bytes of ASCII letters, digits, `-`, `_`, `.` and
/// `:`, so that it fits every store's keys unescaped (an order id, a UUID, a hash in
/// hex or `<producer>:<sequence>` all do). Keys are per queue: the same key on two
/// queues names two items.
///
/// ```
/// use distsync::queue::IdempotencyKey;
///
/// let key = IdempotencyKey::new("order-4711:charge").unwrap();
/// assert_eq!(key.as_str(), "order-4711:charge");
/// assert!(IdempotencyKey::new("has space").is_err());
/// assert!(IdempotencyKey::new("").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The longest key, in bytes.
    pub const MAX_LEN: usize = 128;

    /// `key`, checked.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty key, one longer than
    /// [`IdempotencyKey::MAX_LEN`], or one with a byte outside `[A-Za-z0-9._:-]`
    /// (the message names the first such byte's position, not the key).
    pub fn new(key: impl Into<String>) -> Result<Self> {
        let key = key.into();
        if key.is_empty() {
            return Err(Error::InvalidArgument("idempotency key is empty".into()));
        }
        if key.len() > Self::MAX_LEN {
            return Err(Error::InvalidArgument(format!(
                "idempotency key of {} bytes, longer than {}",
                key.len(),
                Self::MAX_LEN
            )));
        }
        if let Some(at) = key
            .bytes()
            .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':')))
        {
            return Err(Error::InvalidArgument(format!(
                "idempotency key has a byte outside [A-Za-z0-9._:-] at position {at}"
            )));
        }
        Ok(Self(key))
    }

    /// The key as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("IdempotencyKey").field(&self.0).finish()
    }
}

impl std::fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for IdempotencyKey {
    type Err = Error;

    fn from_str(key: &str) -> Result<Self> {
        Self::new(key)
    }
}

impl TryFrom<&str> for IdempotencyKey {
    type Error = Error;

    fn try_from(key: &str) -> Result<Self> {
        Self::new(key)
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = Error;

    fn try_from(key: String) -> Result<Self> {
        Self::new(key)
    }
}

/// What [`Queue::enqueue_once`](crate::Queue) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Enqueued {
    /// The item was appended: the key was not seen on this queue within
    /// [`DEDUP_WINDOW`] (or an earlier attempt of this same call appended it and its
    /// reply was lost).
    New,
    /// The key was seen on this queue within [`DEDUP_WINDOW`]: nothing was appended
    /// (the item given then may have been consumed since).
    Duplicate,
}

impl Enqueued {
    /// Whether the item was appended by this call.
    pub fn is_new(self) -> bool {
        self == Self::New
    }
}

/// What makes one append safe to repeat: the record a store keeps of it for a window,
/// in the same atomic step as the item, so that a repeat of the call (after a lost
/// reply) or of the caller's key appends nothing. A backend receives one with every
/// append ([`Queue::append_bytes`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AppendKey {
    /// A key the call draws for itself ([`Queue::enqueue`](crate::Queue)): the call's
    /// own retries never append twice. Remembered for [`CALL_KEY_WINDOW`].
    Call(String),
    /// The caller's key ([`Queue::enqueue_once`](crate::Queue)). Remembered for
    /// [`DEDUP_WINDOW`].
    Caller(IdempotencyKey),
}

impl AppendKey {
    /// The key of a new call, drawn with [`crate::raw::call_id`].
    pub fn call() -> Self {
        Self::Call(crate::raw::call_id())
    }

    /// How long a store remembers the key.
    pub fn window(&self) -> std::time::Duration {
        match self {
            Self::Call(_) => CALL_KEY_WINDOW,
            Self::Caller(_) => DEDUP_WINDOW,
        }
    }

    /// The key as one string for a store's record: `g:<call id>` or `u:<caller's key>`,
    /// told apart by the prefix, so that no caller's key is taken for a call's.
    pub fn record(&self) -> String {
        match self {
            Self::Call(call) => format!("g:{call}"),
            Self::Caller(key) => format!("u:{}", key.as_str()),
        }
    }
}

/// The priority of [`Queue::enqueue`](crate::Queue): the highest (lowest number), so a queue used
/// only with `enqueue` is plain FIFO.
pub const DEFAULT_PRIORITY: u16 = 0;

/// A durable queue: items are ordered by priority (lower number first), then by
/// arrival (FIFO within a priority), as etcd's `recipes.PriorityQueue`.
///
/// Items do not belong to a session and outlive their producer. Under any mix of
/// concurrent producers and consumers, including consumers cancelled mid-dequeue, no
/// item is lost or delivered twice. Created by [`crate::raw::Primitives::queue`].
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

    /// Appends `item` behind the items of the same or a lower `priority` number unless
    /// `key` was seen on this queue within its [window](AppendKey::window): what a
    /// backend implements, checking and recording the key in the same atomic step as
    /// the append; users call [`Queue::enqueue`](#method.enqueue),
    /// [`Queue::enqueue_with_priority`](#method.enqueue_with_priority) and
    /// [`Queue::enqueue_once`](#method.enqueue_once), whose documentation states the
    /// contract (the call repeats itself through transient failures, and a repeat finds
    /// its own earlier attempt by the key).
    ///
    /// # Errors
    /// The store's error once the retries stop: an [`Error::Connection`] says the item
    /// may have been appended (once).
    ///
    /// # Cancel safety
    /// Must leave the item appended once or not at all when the future is dropped, with
    /// the key recorded exactly when the item was appended, and nothing that blocks
    /// others behind.
    async fn append_bytes(&self, key: &AppendKey, item: Bytes, priority: u16) -> Result<Enqueued>;

    /// Waits for an item and removes it.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. Dropping the future never loses an item: an item is
    /// either returned by this call or left in the queue for another consumer.
    async fn dequeue(&self) -> Result<Bytes>;

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

    /// How long the oldest queued item (held items not counted, as in [`Self::len`])
    /// has waited since it was enqueued, on the store's clock; `None` for an empty
    /// queue. What a [`Consumer`](crate::consumer::Consumer) samples for its
    /// `distsync_queue_oldest_item_age_seconds` gauge.
    ///
    /// The store records each item's enqueue time with the item (the memory store's
    /// clock, Redis' `TIME`, PostgreSQL's `clock_timestamp()`), so producers' clocks
    /// play no part. An item without a recorded time (put back after a cancelled
    /// [`Self::dequeue`], on a store that does not stamp put-backs) has an unknown age
    /// and is left out: when no queued item has a time, the answer is `None`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
    /// let coordinator = distsync::connect("memory://").await?;
    /// let jobs = coordinator.queue("jobs")?;
    /// assert_eq!(jobs.oldest_age().await?, None);
    /// jobs.enqueue("build").await?;
    /// assert!(jobs.oldest_age().await?.is_some());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Unsupported`] where the backend records no enqueue time (the default;
    /// etcd, which has no clock a client can read), or the store's error.
    ///
    /// # Cancel safety
    /// This method is cancel safe: it only reads.
    async fn oldest_age(&self) -> Result<Option<std::time::Duration>> {
        Err(Error::unsupported(
            "custom",
            "the age of a queue's oldest item (no enqueue time recorded)",
        ))
    }
}

/// What users call on a queue handle (`Arc<dyn Queue>`, from
/// [`crate::Coordinator::queue`]): an item is any `impl Into<Bytes>` (a `&str`, a
/// `String`, a `Vec<u8>`, [`Bytes`]), passed as is.
impl<'a> dyn Queue + 'a {
    /// Appends `item` at [`DEFAULT_PRIORITY`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
    /// let coordinator = distsync::connect("memory://").await?;
    /// let jobs = coordinator.queue("jobs")?;
    /// jobs.enqueue("build").await?;
    /// jobs.enqueue(format!("deploy {}", 42)).await?;
    /// jobs.enqueue(vec![0u8, 1, 2]).await?;
    /// assert_eq!(jobs.dequeue().await?, "build");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`enqueue_with_priority`](#method.enqueue_with_priority).
    ///
    /// # Cancel safety
    ///
    /// As [`enqueue_with_priority`](#method.enqueue_with_priority).
    pub async fn enqueue(&self, item: impl Into<Bytes> + Send) -> Result<()> {
        self.enqueue_with_priority(item, DEFAULT_PRIORITY).await
    }

    /// Appends `item` behind the items of the same or a lower `priority` number.
    ///
    /// The call draws a key of its own (remembered for [`CALL_KEY_WINDOW`]) and
    /// repeats itself with it after a reply lost to a transient failure, within the
    /// one-shot budget of [`crate::raw::retry`], so that its own retries never append
    /// the item twice. A caller that repeats a *failed* call makes a new call with a
    /// new key: to make that harmless too, use [`enqueue_once`](#method.enqueue_once) with a key of
    /// its own.
    ///
    /// # Errors
    /// [`Error::TooLarge`] for an item above the store's
    /// [`max_value_size`](crate::Capabilities::max_value_size) (nothing sent); the
    /// store's error once the retries stop: an [`Error::Connection`] says the item may
    /// have been appended (once).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes leaves the item enqueued once or not at
    /// all (as any write whose answer is lost), never twice; nothing that blocks others
    /// is left behind.
    pub async fn enqueue_with_priority(
        &self,
        item: impl Into<Bytes> + Send,
        priority: u16,
    ) -> Result<()> {
        self.append_bytes(&AppendKey::call(), item.into(), priority)
            .await
            .map(drop)
    }

    /// Appends `item` at `priority` unless `key` was seen on this queue within
    /// [`DEDUP_WINDOW`]: repeating the call with the same key, after a lost reply, a
    /// crash or from another process, appends the item at most once. The key is
    /// checked and recorded in the same atomic step as the append; the call repeats
    /// itself through transient failures within the one-shot budget of
    /// [`crate::raw::retry`], and a repeat finds its own earlier attempt by the key.
    ///
    /// ```no_run
    /// # async fn run(queue: &dyn distsync::Queue) -> distsync::Result<()> {
    /// use distsync::queue::{Enqueued, IdempotencyKey};
    ///
    /// let key = IdempotencyKey::new("invoice-2026-0042")?;
    /// // A producer that restarts and replays the same job appends it once.
    /// match queue.enqueue_once(&key, "charge 42", 0).await? {
    ///     Enqueued::New => println!("queued"),
    ///     _ => println!("already queued within the dedup window"),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Unsupported`] where the backend does not offer it; [`Error::TooLarge`]
    /// for an item above the store's
    /// [`max_value_size`](crate::Capabilities::max_value_size) (nothing sent); the
    /// store's error once the retries stop: calling again with the same key is then
    /// harmless.
    ///
    /// # Cancel safety
    /// Dropping the future leaves the item appended once or not at all, with the key
    /// recorded exactly when the item was appended: calling again with the same key
    /// completes what the dropped call may not have.
    pub async fn enqueue_once(
        &self,
        key: &IdempotencyKey,
        item: impl Into<Bytes> + Send,
        priority: u16,
    ) -> Result<Enqueued> {
        let key = AppendKey::Caller(key.clone());
        self.append_bytes(&key, item.into(), priority).await
    }
}

#[cfg(test)]
mod tests {
    use super::{Enqueued, IdempotencyKey};
    use crate::Error;

    #[test]
    fn keys_are_checked_for_length_and_bytes() {
        let longest = "k".repeat(IdempotencyKey::MAX_LEN);
        assert_eq!(
            IdempotencyKey::new(longest.clone()).unwrap().as_str(),
            longest
        );
        let too_long = format!("{longest}k");
        assert!(matches!(
            IdempotencyKey::new(too_long),
            Err(Error::InvalidArgument(_))
        ));
        for bad in ["", "a b", "a/b", "é", "a\n", "{tag}"] {
            assert!(
                matches!(IdempotencyKey::new(bad), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
        let key: IdempotencyKey = "Order_7.charge:v-1".parse().unwrap();
        assert_eq!(key.to_string(), "Order_7.charge:v-1");
        assert!(Enqueued::New.is_new() && !Enqueued::Duplicate.is_new());
    }
}
