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
//! To keep a failing item from coming straight back to the head of the queue,
//! [`Delivery::nack_after`] holds it for a while before returning it; a
//! [`Consumer`](crate::consumer::Consumer) does that, with a backoff, for you.
//!
//! At-most-once [`Queue::dequeue`](crate::Queue::dequeue) is unchanged: it removes the
//! item when it returns it. It skips items held by a live receiver.
//!
//! # Spans
//!
//! Through a [`Coordinator`](crate::Coordinator)'s queues, each step of a delivery runs
//! in a span (as acquisitions do, see [`crate::instrument`]), so a trace shows an item's
//! path from receive to settlement:
//!
//! | span | around | fields |
//! |---|---|---|
//! | `distsync.receive` | `receive`, `try_receive` | `backend`, `queue`, then `delivery` and `attempt` once an item is received |
//! | `distsync.ack` | [`Delivery::ack`] | `backend`, `queue`, `delivery`, `attempt` |
//! | `distsync.nack` | [`Delivery::nack`], the background nack of [`Delivery::nack_after`] (also `delay_ms`) and of a dropped delivery | `backend`, `queue`, `delivery`, `attempt` |
//!
//! `delivery` is [`Delivery::id`], unique in the process, which ties a receive to its
//! settlement; `attempt` is [`Delivery::redeliveries`] + 1. A delivery made by a
//! [`Backend`](crate::Backend)'s queue directly has an empty `queue` field.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{Error, Result};
use crate::name::Name;
use crate::raw::{CleanUp, RetryPolicy};
use crate::session::{Lost, Session};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The id of the next delivery made in this process.
static NEXT_DELIVERY: AtomicU64 = AtomicU64::new(1);

/// The `distsync.receive` span of a receive from `queue` (see the [module docs](self)).
pub(crate) fn receive_span(backend: &'static str, queue: &Name) -> tracing::Span {
    tracing::info_span!(
        "distsync.receive",
        backend,
        queue = queue.as_str(),
        delivery = tracing::field::Empty,
        attempt = tracing::field::Empty
    )
}

/// `delivery`, received in `span` from `queue`: the span records it, and its own spans
/// name the queue.
pub(crate) fn received(span: &tracing::Span, queue: &Name, delivery: Delivery) -> Delivery {
    span.record("delivery", delivery.id);
    span.record("attempt", u64::from(delivery.redeliveries) + 1);
    delivery.with_queue(queue)
}

/// The backend's side of a [`Delivery`]: the store's atomic steps on one held item.
/// [`Delivery::ack`] and [`Delivery::nack`] make the protocol out of them, the same on
/// every store: each step runs through [`policy`](Settle::policy)'s
/// [`release`](RetryPolicy::release) (retried through transient failures, within the
/// budget or until [`lost`](Settle::lost) fires), so a step must be idempotent for
/// its hold (a repeat after a lost reply changes nothing). A step must also be
/// cancel-safe: a caller that drops its `ack` or `nack` drops the step in flight, and
/// the hold is then either settled or still held through the session. For backend
/// implementors (see [`crate::raw`]).
///
/// `Any`, so that a backend's own calls on a delivery (an acknowledgement inside a
/// caller's transaction) find their store's side of it through
/// [`Delivery::settle_side`].
#[async_trait]
pub trait Settle: std::any::Any + Send + Sync + 'static {
    /// One attempt at the acknowledgement: removes the item while the hold is this
    /// delivery's. `true` when the item left the queue through this delivery (by this
    /// attempt, or by an earlier one whose reply was lost); `false` when the hold ended
    /// first (the session's end put the item back).
    ///
    /// # Errors
    /// The store's error; [`crate::Error::SessionLost`] when the hold's session is
    /// known to be gone (the delivery then asks [`ack_after_loss`](Settle::ack_after_loss)).
    async fn ack_step(&self) -> Result<bool>;

    /// One attempt at the return: lets go of the hold, which puts the item back at its
    /// place (same priority and order position). A hold that is gone already is `Ok`.
    ///
    /// # Errors
    /// The store's error ([`crate::Error::SessionLost`] counts as returned: the
    /// session's end put the item back).
    async fn nack_step(&self) -> Result<()>;

    /// What an acknowledgement answers when the session's loss ended it before a step
    /// answered. [`crate::Error::SessionLost`] unless the store can tell that an
    /// attempt whose reply was lost removed the item.
    ///
    /// # Errors
    /// [`crate::Error::SessionLost`], or the store's error when it cannot tell.
    async fn ack_after_loss(&self) -> Result<()> {
        Err(Error::SessionLost)
    }

    /// The policy the steps run under: the backend's.
    fn policy(&self) -> RetryPolicy;

    /// The hold's session-lost token, for a store that knows when the hold is gone:
    /// the steps then retry until it fires rather than within the policy's budget.
    /// `None`: within the budget.
    fn lost(&self) -> Option<&CancellationToken> {
        None
    }
}

/// Acknowledges the item `settle` holds: its acknowledgement step, through the
/// store's failures, answered as [`Delivery::ack`] says.
async fn acknowledge(settle: &dyn Settle) -> Result<()> {
    let lost = settle.lost();
    if lost.is_some_and(CancellationToken::is_cancelled) {
        return settle.ack_after_loss().await;
    }
    let removed = settle
        .policy()
        .release("queue ack", lost, || settle.ack_step())
        .await;
    match removed {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::SessionLost),
        Err(Error::SessionLost) => settle.ack_after_loss().await,
        Err(error) => Err(error),
    }
}

/// Returns the item `settle` holds: its return step, through the store's failures.
async fn give_back(settle: &dyn Settle) -> Result<()> {
    let returned = settle
        .policy()
        .release("queue nack", settle.lost(), || settle.nack_step())
        .await;
    match returned {
        // The session's end put the item back.
        Err(Error::SessionLost) => Ok(()),
        other => other,
    }
}

/// An item received from a queue with at-least-once delivery, held through the
/// consumer's session until [`ack`](Delivery::ack)ed (see the [module docs](self)).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
/// let coordinator = distsync::connect("memory://").await?;
/// let session = coordinator.session().await?;
/// let jobs = coordinator.queue("jobs")?;
/// jobs.enqueue("build").await?;
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
    id: u64,
    queue: Option<Name>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("len", &self.item.len())
            .field("redeliveries", &self.redeliveries)
            .field("id", &self.id)
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
            id: NEXT_DELIVERY.fetch_add(1, Ordering::Relaxed),
            queue: None,
        }
    }

    /// The backend's side of this delivery while it is unsettled, for a backend's own
    /// calls on it (downcast to its type through `&dyn Any`). For backend implementors.
    #[doc(hidden)]
    pub fn settle_side(&self) -> Option<&dyn Settle> {
        self.settle.as_deref()
    }

    /// Ends this delivery without a request and without the background `nack` of a
    /// drop: its backend settled it by other means (an acknowledgement committed in a
    /// caller's transaction). For backend implementors.
    #[doc(hidden)]
    pub fn settled_elsewhere(mut self) {
        self.settle = None;
    }

    /// Names the queue in this delivery's spans (see the [module docs](self)).
    pub(crate) fn with_queue(mut self, queue: &Name) -> Self {
        self.queue = Some(queue.clone());
        self
    }

    /// The delivery's id in this process: unique among the deliveries this process
    /// received, and the `delivery` field of its spans. Not the item's identity: a
    /// redelivered item gets a new id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// A span of this delivery's settlement.
    fn settle_span(&self, ack: bool) -> tracing::Span {
        let backend = self.session.backend();
        let queue = self.queue.as_ref().map_or("", Name::as_str);
        let attempt = u64::from(self.redeliveries) + 1;
        if ack {
            tracing::info_span!("distsync.ack", backend, queue, delivery = self.id, attempt)
        } else {
            tracing::info_span!(
                "distsync.nack",
                backend,
                queue,
                delivery = self.id,
                attempt,
                delay_ms = tracing::field::Empty
            )
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
        let span = self.settle_span(true);
        match self.settle.take() {
            Some(settle) => acknowledge(&*settle).instrument(span).await,
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
        let span = self.settle_span(false);
        match self.settle.take() {
            Some(settle) => give_back(&*settle).instrument(span).await,
            None => Ok(()),
        }
    }

    /// Runs `work` only while the item is held: returns its output, or
    /// [`Error::SessionLost`] (dropping `work` part-way) as soon as the session
    /// holding the item is lost, when the store may hand the item to another consumer.
    /// Saves writing the `select!` on [`Self::lost`] by hand.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
    /// let coordinator = distsync::connect("memory://").await?;
    /// let session = coordinator.session().await?;
    /// let jobs = coordinator.queue("jobs")?;
    /// jobs.enqueue("build").await?;
    /// let delivery = jobs.receive(&session).await?;
    /// let built = delivery
    ///     .while_held(async {
    ///         // ... process delivery.item() ...
    ///         true
    ///     })
    ///     .await?;
    /// assert!(built);
    /// delivery.ack().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel-safe as far as this method goes: dropping the returned future drops
    /// `work`; whether that is safe is `work`'s own business. The delivery stays held.
    ///
    /// # Errors
    /// [`Error::SessionLost`] when the session is lost first (or already was).
    pub async fn while_held<F: Future>(&self, work: F) -> Result<F::Output> {
        if self.session.is_lost() {
            return Err(Error::SessionLost);
        }
        let lost = self.session.lost();
        tokio::select! {
            biased;
            () = lost => Err(Error::SessionLost),
            output = work => Ok(output),
        }
    }

    /// Nacks the item after `delay`, so that an item that failed does not come
    /// straight back to the head of the queue: returns at once, and a background task
    /// keeps the item held (invisible to every receiver, as while it is processed) for
    /// `delay`, then [`nack`](Self::nack)s it (back at its place, redelivery count one
    /// higher).
    ///
    /// - The hold costs nothing extra: the item is held through the session as any
    ///   delivery is, and the session's renewals (which it makes anyway) keep it; no
    ///   request is made until the `nack`.
    /// - The task keeps a clone of the session, so the session stays open (renewed) for
    ///   up to `delay` after its last other handle is dropped, as it does for a guard.
    /// - If the session ends first (lost, closed, or the process exits or crashes
    ///   before the delay), the store puts the item back when the session ends: at once
    ///   after a `close`, after its TTL after a crash. Nothing is lost either way.
    /// - If the background `nack` fails, the item goes back when the session ends.
    ///
    /// Needs a tokio runtime for its task. Outside one no task can wait or nack, so
    /// the item goes back when the session ends, as for a dropped delivery (a warning
    /// is logged).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
    /// use std::time::Duration;
    /// let coordinator = distsync::connect("memory://").await?;
    /// let session = coordinator.session().await?;
    /// let jobs = coordinator.queue("jobs")?;
    /// jobs.enqueue("flaky").await?;
    /// let delivery = jobs.receive(&session).await?;
    /// // The work failed: try again in 50 ms, not at once.
    /// delivery.nack_after(Duration::from_millis(50));
    /// assert!(jobs.try_receive(&session).await?.is_none()); // still held
    /// let again = jobs.receive(&session).await?; // waits for the nack
    /// assert_eq!(again.redeliveries(), 1);
    /// again.ack().await?;
    /// # Ok(()) }
    /// ```
    pub fn nack_after(mut self, delay: Duration) {
        let Some(settle) = self.settle.take() else {
            return;
        };
        let session = self.session.clone();
        let span = self.settle_span(false);
        span.record("delay_ms", crate::schedule::millis(delay));
        let nack = async move {
            tokio::select! {
                biased;
                // The store puts the item back itself when the session ends.
                () = session.lost() => return Ok(()),
                () = tokio::time::sleep(delay) => {}
            }
            give_back(&*settle).await
        };
        CleanUp::new("a delayed nack", "the item goes back when the session ends")
            .spawn(|_| nack.instrument(span));
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        let Some(settle) = self.settle.take() else {
            return;
        };
        let span = self.settle_span(false);
        CleanUp::new(
            "nacking a dropped delivery",
            "the item goes back when the session ends",
        )
        .spawn(|_| async move { give_back(&*settle).await }.instrument(span));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A store's steps that answer from a script, and count what was asked.
    #[derive(Default)]
    struct Scripted {
        acks: Mutex<VecDeque<Result<bool>>>,
        nacks: Mutex<VecDeque<Result<()>>>,
        steps: AtomicUsize,
        asked_after_loss: AtomicUsize,
        lost: Option<CancellationToken>,
    }

    impl Scripted {
        fn acks(answers: impl IntoIterator<Item = Result<bool>>) -> Self {
            Self {
                acks: Mutex::new(answers.into_iter().collect()),
                ..Self::default()
            }
        }

        fn nacks(answers: impl IntoIterator<Item = Result<()>>) -> Self {
            Self {
                nacks: Mutex::new(answers.into_iter().collect()),
                ..Self::default()
            }
        }

        fn steps(&self) -> usize {
            self.steps.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl Settle for Scripted {
        async fn ack_step(&self) -> Result<bool> {
            self.steps.fetch_add(1, Ordering::SeqCst);
            self.acks
                .lock()
                .unwrap()
                .pop_front()
                .expect("an answer left")
        }

        async fn nack_step(&self) -> Result<()> {
            self.steps.fetch_add(1, Ordering::SeqCst);
            self.nacks
                .lock()
                .unwrap()
                .pop_front()
                .expect("an answer left")
        }

        /// `Ok`: the store tells an earlier attempt removed the item.
        async fn ack_after_loss(&self) -> Result<()> {
            self.asked_after_loss.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }

        fn policy(&self) -> RetryPolicy {
            RetryPolicy::default()
        }

        fn lost(&self) -> Option<&CancellationToken> {
            self.lost.as_ref()
        }
    }

    fn transient() -> Error {
        Error::connection("test", "connection refused")
    }

    #[tokio::test(start_paused = true)]
    async fn an_ack_step_is_retried_through_transient_failures() {
        let settle = Scripted::acks([Err(transient()), Ok(true)]);
        assert!(acknowledge(&settle).await.is_ok());
        assert_eq!(settle.steps(), 2);
        assert_eq!(settle.asked_after_loss.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_ack_is_session_lost_without_asking_further() {
        let settle = Scripted::acks([Ok(false)]);
        assert!(matches!(
            acknowledge(&settle).await,
            Err(Error::SessionLost)
        ));
        assert_eq!(settle.asked_after_loss.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_ack_ended_by_the_sessions_loss_asks_the_store_what_became_of_it() {
        let settle = Scripted::acks([Err(Error::SessionLost)]);
        assert!(acknowledge(&settle).await.is_ok());
        assert_eq!(settle.asked_after_loss.load(Ordering::SeqCst), 1);

        let lost = CancellationToken::new();
        lost.cancel();
        let settle = Scripted {
            lost: Some(lost),
            ..Scripted::default()
        };
        assert!(acknowledge(&settle).await.is_ok());
        assert_eq!(settle.steps(), 0, "no step once the session is known lost");
        assert_eq!(settle.asked_after_loss.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_nack_of_a_hold_the_session_ended_counts_as_returned() {
        let settle = Scripted::nacks([Err(transient()), Err(Error::SessionLost)]);
        assert!(give_back(&settle).await.is_ok());
        assert_eq!(settle.steps(), 2);

        let settle = Scripted::nacks([Err(Error::InvalidArgument("refused".into()))]);
        assert!(matches!(
            give_back(&settle).await,
            Err(Error::InvalidArgument(_))
        ));
    }
}
