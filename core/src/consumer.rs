//! A queue consumer that survives poison items and hung handlers: [`Consumer`], made
//! by [`Coordinator::consumer`](crate::Coordinator::consumer).
//!
//! Built on the [`Queue`] trait's at-least-once [`receive`](Queue::receive) alone, so
//! it behaves the same on every backend that offers reliable delivery.
//!
//! # What it does with each delivery
//!
//! 1. An item received for more than [`max_deliveries`](ConsumerOptions::max_deliveries)
//!    times is not handed to the handler: it is moved to the **dead-letter queue**
//!    (enqueued there, then acknowledged). A crash between the two leaves it in both
//!    queues: the move is at-least-once, as everything else here.
//! 2. Otherwise the handler runs on it while the item is held
//!    ([`Delivery::while_held`]) and, if set, within the
//!    [`processing_deadline`](ConsumerOptions::processing_deadline).
//! 3. `Ok` acknowledges the item. An `Err`, or a handler still running at the deadline
//!    (its future is dropped), returns the item with
//!    [`Delivery::nack_after`] a [retry delay](ConsumerOptions::retry_delay) that grows
//!    with the item's redelivery count, so a failing item does not come straight back
//!    while the items behind it wait.
//!
//! # The dead-letter queue
//!
//! An ordinary queue, named `<name>.dead` unless set with
//! [`ConsumerOptions::dead_letter`]: a valid name wherever `<name>` is (up to 250
//! bytes), and one no application uses for another queue in practice. Inspect it with
//! [`Consumer::dead_letters`], move its items back with [`Consumer::redrive`] once the
//! bug is fixed, or drop them with [`Consumer::purge`].
//!
//! # Observability
//!
//! Each delivery is handled in a `distsync.consume` span (fields `backend`, `queue`,
//! `redeliveries`). A handler failure or deadline is a `warn` event with the
//! redelivery count, a dead-lettering an `error` event. Metrics, through the
//! [`metrics`] facade as in [`crate::instrument`] (whose table lists them too):
//!
//! | metric | kind | labels | meaning |
//! |---|---|---|---|
//! | `distsync_consumer_processed_total` | counter | `backend` | items the handler finished with `Ok` and that were acknowledged |
//! | `distsync_consumer_handler_failures_total` | counter | `backend` | handler calls that returned `Err` |
//! | `distsync_consumer_deadline_exceeded_total` | counter | `backend` | handler calls dropped at the processing deadline |
//! | `distsync_consumer_redeliveries_total` | counter | `backend` | deliveries received that were not the item's first |
//! | `distsync_consumer_dead_lettered_total` | counter | `backend` | items moved to the dead-letter queue |
//! | `distsync_queue_depth` | gauge | `backend`, `queue` | items ready in the consumed queue ([`Queue::len`]), sampled every [`metrics_interval`](ConsumerOptions::metrics_interval) |
//! | `distsync_queue_oldest_item_age_seconds` | gauge | `backend`, `queue` | how long the oldest ready item has waited ([`Queue::oldest_age`]), sampled with the depth, where the backend records enqueue times |
//!
//! The two gauges need a read from the store, so they are not taken on the path of a
//! delivery: while [`Consumer::run`] runs, a timer of its own (in the same task, no
//! spawned task) reads them once per interval, one request each, and a failed read is
//! skipped until the next. Several consumers of one queue in one process each
//! sample it and set the same series. They carry the queue's name as a label (as
//! `distsync_is_leader` carries the election's): one series per consumed queue, which
//! is what a backlog alert needs; consumers are few and long-lived.

use std::fmt;
use std::future::Future;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tracing::Instrument;

use crate::backend::Backend;
use crate::delivery::Delivery;
use crate::error::{BoxError, Error, Result};
use crate::layers;
use crate::live_session::LiveSession;
use crate::name::Name;
use crate::queue::Queue;
use crate::session::{Session, SessionOptions};

/// The suffix of the default dead-letter queue's name after the consumed queue's.
pub const DEAD_LETTER_SUFFIX: &str = ".dead";

/// The first pause after a store error the consumer rides out.
const FIRST_STORE_RETRY: Duration = Duration::from_millis(100);

/// The longest pause between attempts while the store fails.
const LONGEST_STORE_RETRY: Duration = Duration::from_secs(5);

/// How a [`Consumer`] treats failing and slow items. Build from
/// [`Default`] with the builder methods.
///
/// ```
/// use std::time::Duration;
/// use distsync::queue::ConsumerOptions;
/// let options = ConsumerOptions::default()
///     .processing_deadline(Duration::from_secs(30))
///     .max_deliveries(3)
///     .retry(Duration::from_secs(1), Duration::from_secs(60))
///     .dead_letter("jobs/failed");
/// assert_eq!(options.retry_delay(0), Duration::from_secs(1));
/// assert_eq!(options.retry_delay(2), Duration::from_secs(4));
/// assert_eq!(options.retry_delay(10), Duration::from_secs(60));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerOptions {
    processing_deadline: Option<Duration>,
    max_deliveries: u32,
    retry_first: Duration,
    retry_longest: Duration,
    dead_letter: Option<String>,
    metrics_interval: Duration,
}

/// How often a running consumer samples its queue's depth and oldest item age by
/// default.
pub const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(15);

impl Default for ConsumerOptions {
    /// No processing deadline, 5 deliveries at most, retries after 1 s doubling up to
    /// 60 s, the dead-letter queue `<name>.dead`, queue metrics sampled every
    /// [`DEFAULT_METRICS_INTERVAL`] (15 s).
    fn default() -> Self {
        Self {
            processing_deadline: None,
            max_deliveries: 5,
            retry_first: Duration::from_secs(1),
            retry_longest: Duration::from_secs(60),
            dead_letter: None,
            metrics_interval: DEFAULT_METRICS_INTERVAL,
        }
    }
}

impl ConsumerOptions {
    /// How long the handler may take on one item: a call still running then is
    /// dropped and the item returned after the retry delay, so a consumer that keeps
    /// its session alive but hangs in one item does not hold it for ever.
    ///
    /// The timer runs in this process: it catches a handler stuck on an `await`
    /// (a request with no timeout, a lock never released), not a thread blocked in
    /// synchronous code that starves the runtime. A process that hangs entirely stops
    /// renewing its session, and the store returns the item when the session ends.
    /// Must not be zero. Unset by default.
    pub fn processing_deadline(mut self, deadline: Duration) -> Self {
        self.processing_deadline = Some(deadline);
        self
    }

    /// How many times an item is handed to the handler at most: a delivery whose
    /// `redeliveries() + 1` exceeds it goes to the dead-letter queue instead.
    /// Deliveries that ended without a handler call (a session lost first) count too,
    /// as the store counts them. At least 1; 5 by default.
    pub fn max_deliveries(mut self, max: u32) -> Self {
        self.max_deliveries = max;
        self
    }

    /// The delay before a failed item is returned: `first` after its first delivery,
    /// doubling with each redelivery, up to `longest` (see
    /// [`retry_delay`](Self::retry_delay)). 1 s and 60 s by default; a zero `first`
    /// returns failed items at once.
    pub fn retry(mut self, first: Duration, longest: Duration) -> Self {
        self.retry_first = first;
        self.retry_longest = longest;
        self
    }

    /// The name of the dead-letter queue, instead of `<name>.dead`. Must differ from
    /// the consumed queue's name.
    pub fn dead_letter(mut self, name: impl Into<String>) -> Self {
        self.dead_letter = Some(name.into());
        self
    }

    /// How often [`Consumer::run`] reads the queue's depth and oldest item age for
    /// the `distsync_queue_depth` and `distsync_queue_oldest_item_age_seconds` gauges
    /// (see the [module docs](self)): one or two store reads per interval per running
    /// consumer, never on the path of a delivery. [`Duration::ZERO`] turns the
    /// sampling off. [`DEFAULT_METRICS_INTERVAL`] by default.
    pub fn metrics_interval(mut self, interval: Duration) -> Self {
        self.metrics_interval = interval;
        self
    }

    /// The interval set with [`Self::metrics_interval`].
    pub fn sampling_interval(&self) -> Duration {
        self.metrics_interval
    }

    /// The processing deadline, if any.
    pub fn deadline(&self) -> Option<Duration> {
        self.processing_deadline
    }

    /// The delay before an item delivered `redeliveries` times before is returned
    /// after a failure: `first * 2^redeliveries`, capped at `longest`.
    pub fn retry_delay(&self, redeliveries: u32) -> Duration {
        let factor = 1u32.checked_shl(redeliveries).unwrap_or(u32::MAX);
        self.retry_first
            .saturating_mul(factor)
            .min(self.retry_longest)
    }
}

/// A consumer of one queue: runs a handler on each item, acknowledges what it
/// handles, retries what fails with a backoff, drops handlers past a deadline and
/// moves poison items to a dead-letter queue (see the [module docs](self)).
///
/// Made by [`Coordinator::consumer`](crate::Coordinator::consumer). Cheap to clone (a few
/// `Arc`s) and to share (`&self` methods); several tasks or processes may run consumers of
/// one queue at once, each item going to one of them at a time.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
/// use std::time::Duration;
/// use distsync::queue::ConsumerOptions;
/// let coordinator = distsync::connect("memory://").await?;
/// let options = ConsumerOptions::default()
///     .max_deliveries(2)
///     .retry(Duration::from_millis(10), Duration::from_secs(1))
///     .processing_deadline(Duration::from_secs(30));
/// let consumer = coordinator.consumer("jobs", options)?;
/// coordinator.queue("jobs")?.enqueue("not-a-number").await?;
///
/// let session = coordinator.session().await?;
/// let run = consumer.run(&session, |item| async move {
///     let text = std::str::from_utf8(&item)?;
///     let n: u64 = text.parse()?;
///     println!("job {n}");
///     Ok::<(), distsync::queue::BoxError>(())
/// });
/// // Runs until its session is lost; here, until the poison item, tried twice, is
/// // dead-lettered.
/// tokio::select! {
///     error = run => return Err(error),
///     () = async {
///         while consumer.dead_letter_queue().is_empty().await.unwrap() {
///             tokio::time::sleep(Duration::from_millis(10)).await;
///         }
///     } => {}
/// }
/// assert_eq!(consumer.purge().await?, 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Consumer {
    backend: Arc<dyn Backend>,
    queue: Arc<dyn Queue>,
    dead: Arc<dyn Queue>,
    options: ConsumerOptions,
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("queue", self.queue.name())
            .field("dead_letter", self.dead.name())
            .field("options", &self.options)
            .finish()
    }
}

impl Consumer {
    /// A consumer of the queue `name` (see
    /// [`Coordinator::consumer`](crate::Coordinator::consumer)).
    pub(crate) fn new(
        backend: &Arc<dyn Backend>,
        name: &str,
        options: ConsumerOptions,
    ) -> Result<Self> {
        let main = Name::new(name)?;
        if options.max_deliveries == 0 {
            return Err(Error::InvalidArgument(format!(
                "consumer of {name:?}: max_deliveries must be at least 1"
            )));
        }
        if options.processing_deadline == Some(Duration::ZERO) {
            return Err(Error::InvalidArgument(format!(
                "consumer of {name:?}: the processing deadline must not be zero"
            )));
        }
        let dead = match &options.dead_letter {
            Some(dead) => Name::new(dead.as_str())?,
            None => Name::new(format!("{name}{DEAD_LETTER_SUFFIX}"))?,
        };
        if dead == main {
            return Err(Error::InvalidArgument(format!(
                "consumer of {name:?}: the dead-letter queue must be another queue"
            )));
        }
        Ok(Self {
            backend: Arc::clone(backend),
            queue: layers::queue(backend.as_ref(), main)?,
            dead: layers::queue(backend.as_ref(), dead)?,
            options,
        })
    }

    /// The consumed queue.
    pub fn queue(&self) -> &Arc<dyn Queue> {
        &self.queue
    }

    /// The dead-letter queue.
    pub fn dead_letter_queue(&self) -> &Arc<dyn Queue> {
        &self.dead
    }

    /// The options.
    pub fn options(&self) -> &ConsumerOptions {
        &self.options
    }

    /// Receives items through `session` and handles each with `handler` (see the
    /// [module docs](self)), until an error it cannot ride out, which it returns.
    ///
    /// Store errors that are [transient](Error::is_transient) are waited out with a
    /// backoff. The run ends with [`Error::SessionLost`] when `session` is lost: open a
    /// new session and run again, or use [`Consumer::run_live`], which does that with
    /// a [`LiveSession`]. Any other error ([`Error::Unsupported`] where the backend
    /// offers no reliable delivery, an invalid session) ends it too.
    ///
    /// The handler gets the item's bytes; its error is any
    /// `Into<`[`BoxError`]`>`. To use `?` on several error types in an `async`
    /// block, name its type once: `Ok::<(), BoxError>(())`. The error is logged,
    /// never returned: the item is retried, then dead-lettered.
    ///
    /// # Cancel safety
    /// Cancel-safe: dropping the future drops the handler's future, and the item being
    /// handled is returned to the queue in the background (as a dropped
    /// [`Delivery`]), with its redelivery count one higher. Nothing is lost.
    pub async fn run<H, Fut, E>(&self, session: &Session, handler: H) -> Error
    where
        H: FnMut(Bytes) -> Fut,
        Fut: Future<Output = std::result::Result<(), E>>,
        E: Into<BoxError>,
    {
        let backend = session.backend();
        // The sampler only ends with the run: it never returns.
        tokio::select! {
            error = self.consume(session, handler) => error,
            never = self.sample(backend) => match never {},
        }
    }

    /// Samples the queue's depth and oldest item age into their gauges once per
    /// [`ConsumerOptions::metrics_interval`], for as long as it is polled (never, when
    /// the interval is zero).
    async fn sample(&self, backend: &'static str) -> std::convert::Infallible {
        let interval = self.options.metrics_interval;
        if interval.is_zero() {
            return std::future::pending().await;
        }
        let queue = self.queue.name().as_str().to_owned();
        let depth =
            metrics::gauge!("distsync_queue_depth", "backend" => backend, "queue" => queue.clone());
        let age = metrics::gauge!(
            "distsync_queue_oldest_item_age_seconds",
            "backend" => backend,
            "queue" => queue
        );
        let mut ages = true;
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match self.queue.len().await {
                // Depths beyond 2^53 lose precision in the gauge's f64, as any gauge.
                #[allow(clippy::cast_precision_loss)]
                Ok(len) => depth.set(len as f64),
                Err(error) => {
                    tracing::debug!(%error, queue = %self.queue.name(), "consumer: sampling the queue's depth failed");
                }
            }
            if !ages {
                continue;
            }
            match self.queue.oldest_age().await {
                Ok(oldest) => age.set(oldest.unwrap_or_default().as_secs_f64()),
                // The backend keeps no enqueue times: the gauge is left unset.
                Err(Error::Unsupported { .. }) => ages = false,
                Err(error) => {
                    tracing::debug!(
                        %error,
                        queue = %self.queue.name(),
                        "consumer: sampling the queue's oldest item age failed"
                    );
                }
            }
        }
    }

    /// The receive loop of [`Consumer::run`].
    async fn consume<H, Fut, E>(&self, session: &Session, mut handler: H) -> Error
    where
        H: FnMut(Bytes) -> Fut,
        Fut: Future<Output = std::result::Result<(), E>>,
        E: Into<BoxError>,
    {
        let backend = session.backend();
        let mut store_backoff =
            crate::backoff::Backoff::new(FIRST_STORE_RETRY, LONGEST_STORE_RETRY);
        loop {
            let delivery = match self.queue.receive(session).await {
                Ok(delivery) => delivery,
                Err(error) if error.is_transient() => {
                    let pause = store_backoff.next_pause();
                    tracing::warn!(
                        %error,
                        queue = %self.queue.name(),
                        pause_ms = pause.as_millis(),
                        "consumer: receiving failed; retrying"
                    );
                    tokio::select! {
                        biased;
                        () = session.lost() => return Error::SessionLost,
                        () = tokio::time::sleep(pause) => continue,
                    }
                }
                Err(error) => return error,
            };
            store_backoff.reset();
            if delivery.is_redelivered() {
                metrics::counter!("distsync_consumer_redeliveries_total", "backend" => backend)
                    .increment(1);
            }
            let span = tracing::info_span!(
                "distsync.consume",
                backend,
                queue = %self.queue.name(),
                redeliveries = delivery.redeliveries(),
            );
            let handled = self.handle(backend, delivery, &mut handler);
            if let ControlFlow::Break(error) = handled.instrument(span).await {
                return error;
            }
        }
    }

    /// [`Consumer::run`] through the current session of `sessions`, starting again
    /// with a new session after each loss: returns only an error other than
    /// [`Error::SessionLost`] (from the run, or from opening a session).
    ///
    /// An item being handled when a session is lost goes back to the queue when the
    /// store ends that session, and is delivered again (to this consumer or another).
    ///
    /// # Cancel safety
    /// As [`Consumer::run`].
    pub async fn run_live<H, Fut, E>(&self, sessions: &LiveSession, mut handler: H) -> Error
    where
        H: FnMut(Bytes) -> Fut,
        Fut: Future<Output = std::result::Result<(), E>>,
        E: Into<BoxError>,
    {
        loop {
            let session = match sessions.current().await {
                Ok(session) => session,
                Err(error) => return error,
            };
            let error = self.run(&session, &mut handler).await;
            if !error.needs_new_session() {
                return error;
            }
            tracing::info!(
                queue = %self.queue.name(),
                "consumer's session lost; consuming again through a new one"
            );
        }
    }

    /// Dead-letters, or runs the handler on, one delivery and settles it: `Continue`
    /// once it is settled (acknowledged, returned, or dead-lettered), `Break` to stop
    /// the run with the error.
    async fn handle<H, Fut, E>(
        &self,
        backend: &'static str,
        delivery: Delivery,
        handler: &mut H,
    ) -> ControlFlow<Error>
    where
        H: FnMut(Bytes) -> Fut,
        Fut: Future<Output = std::result::Result<(), E>>,
        E: Into<BoxError>,
    {
        let redeliveries = delivery.redeliveries();
        let retry = self.options.retry_delay(redeliveries);
        if u64::from(redeliveries) + 1 > u64::from(self.options.max_deliveries) {
            return self.dead_letter(backend, delivery).await;
        }
        let work = handler(delivery.item().clone());
        let outcome = match self.options.processing_deadline {
            Some(deadline) => delivery
                .while_held(tokio::time::timeout(deadline, work))
                .await
                .map(|timed| timed.map_err(|_| deadline)),
            None => delivery.while_held(work).await.map(Ok),
        };
        match outcome {
            Err(error) => ControlFlow::Break(error),
            Ok(Ok(Ok(()))) => match delivery.ack().await {
                Ok(()) => {
                    metrics::counter!("distsync_consumer_processed_total", "backend" => backend)
                        .increment(1);
                    ControlFlow::Continue(())
                }
                Err(error) if error.needs_new_session() => ControlFlow::Break(error),
                Err(error) => {
                    // The item stays held until the session ends, then is delivered
                    // again: at least once.
                    tracing::warn!(
                        %error,
                        "consumer: acknowledging a handled item failed; it is delivered again \
                         after the session ends"
                    );
                    ControlFlow::Continue(())
                }
            },
            Ok(Ok(Err(error))) => {
                let error: BoxError = error.into();
                metrics::counter!("distsync_consumer_handler_failures_total", "backend" => backend)
                    .increment(1);
                tracing::warn!(
                    %error,
                    redeliveries,
                    retry_ms = retry.as_millis(),
                    "consumer: the handler failed; the item is returned after the retry delay"
                );
                delivery.nack_after(retry);
                ControlFlow::Continue(())
            }
            Ok(Err(deadline)) => {
                metrics::counter!("distsync_consumer_deadline_exceeded_total", "backend" => backend)
                    .increment(1);
                tracing::warn!(
                    deadline_ms = deadline.as_millis(),
                    redeliveries,
                    retry_ms = retry.as_millis(),
                    "consumer: the handler passed the processing deadline and was dropped; \
                     the item is returned after the retry delay"
                );
                delivery.nack_after(retry);
                ControlFlow::Continue(())
            }
        }
    }

    /// Moves a delivery to the dead-letter queue: enqueue there, then acknowledge; as
    /// [`Self::handle`] answers.
    async fn dead_letter(&self, backend: &'static str, delivery: Delivery) -> ControlFlow<Error> {
        let redeliveries = delivery.redeliveries();
        if let Err(error) = self.dead.enqueue(delivery.item().clone()).await {
            if error.is_transient() {
                let retry = self.options.retry_delay(redeliveries);
                tracing::warn!(%error, "consumer: dead-lettering failed; the item is returned after the retry delay");
                delivery.nack_after(retry);
                return ControlFlow::Continue(());
            }
            return ControlFlow::Break(error);
        }
        metrics::counter!("distsync_consumer_dead_lettered_total", "backend" => backend)
            .increment(1);
        tracing::error!(
            redeliveries,
            max_deliveries = self.options.max_deliveries,
            dead_letter = %self.dead.name(),
            "consumer: item delivered too many times; moved to the dead-letter queue"
        );
        match delivery.ack().await {
            Ok(()) => ControlFlow::Continue(()),
            Err(error) if error.needs_new_session() => ControlFlow::Break(error),
            Err(error) => {
                tracing::warn!(
                    %error,
                    "consumer: acknowledging a dead-lettered item failed; it is in both queues \
                     until delivered again"
                );
                ControlFlow::Continue(())
            }
        }
    }

    /// The items of the dead-letter queue, in queue order.
    ///
    /// The [`Queue`] trait has no read-only listing, so this receives every item
    /// through a session of its own, then returns them all: one request per item each
    /// way. While it runs the items are held (invisible to other readers of the
    /// dead-letter queue) and their redelivery counts rise by one, which nothing reads.
    /// Items held by someone else at the time (another listing, a redrive) are not
    /// seen. Fine for an operator's look; not for a hot loop.
    ///
    /// # Errors
    /// The store's error (what was received is returned to the queue), or
    /// [`Error::Unsupported`] where the backend offers no reliable delivery.
    ///
    /// # Cancel safety
    /// Cancel-safe: the items received so far go back when the temporary session
    /// is dropped (at once in the background, at its TTL at the latest).
    pub async fn dead_letters(&self) -> Result<Vec<Bytes>> {
        let session = layers::session(self.backend.as_ref(), SessionOptions::default()).await?;
        let mut held = Vec::new();
        let received = async {
            while let Some(delivery) = self.dead.try_receive(&session).await? {
                held.push(delivery);
            }
            Ok::<_, Error>(())
        }
        .await;
        let items = held.iter().map(|d| d.item().clone()).collect();
        let returned = give_back(held).await;
        let closed = session.close().await;
        received?;
        returned?;
        closed?;
        Ok(items)
    }

    /// Moves every item of the dead-letter queue back to the consumed queue (at its
    /// tail), and returns how many it moved: after the bug that made them fail is
    /// fixed. Each item is enqueued, then removed from the dead-letter queue: a crash
    /// between the two leaves it in both.
    ///
    /// # Errors
    /// The store's error; the items moved before it stay moved.
    ///
    /// # Cancel safety
    /// Each item is moved once or not at all (or is in both queues, as after a crash).
    pub async fn redrive(&self) -> Result<usize> {
        self.drain(true, None).await
    }

    /// Deletes every item of the dead-letter queue, and returns how many.
    ///
    /// # Errors
    /// The store's error; the items deleted before it stay deleted.
    ///
    /// # Cancel safety
    /// Each item is deleted or left in the dead-letter queue.
    pub async fn purge(&self) -> Result<usize> {
        self.drain(false, None).await
    }

    /// Moves one dead-lettered item equal to `item` back to the consumed queue (at its
    /// tail), and returns whether there was one: an operator's retry of one item (the
    /// console's "requeue"). The items passed over on the way are returned to the
    /// dead-letter queue, as [`Consumer::dead_letters`] returns them.
    ///
    /// # Errors
    /// The store's error; the item is then in the dead-letter queue, or in both
    /// queues if the error came between the enqueue and the removal.
    ///
    /// # Cancel safety
    /// The item is moved once or not at all (or is in both queues, as after a crash);
    /// the items passed over go back when the temporary session is dropped.
    pub async fn redrive_item(&self, item: &[u8]) -> Result<bool> {
        Ok(self.drain(true, Some(item)).await? == 1)
    }

    /// Deletes one dead-lettered item equal to `item`, and returns whether there was
    /// one (the console's "drop"). The items passed over on the way are returned, as
    /// [`Consumer::dead_letters`] returns them.
    ///
    /// # Errors
    /// The store's error; the item is then deleted or left in the dead-letter queue.
    ///
    /// # Cancel safety
    /// The item is deleted or left; the items passed over go back when the temporary
    /// session is dropped.
    pub async fn purge_item(&self, item: &[u8]) -> Result<bool> {
        Ok(self.drain(false, Some(item)).await? == 1)
    }

    /// Receives dead-lettered items and acknowledges them, enqueuing each to the
    /// consumed queue first when `redrive`: every item, or with `only` the first item
    /// equal to it, the others received on the way being returned.
    async fn drain(&self, redrive: bool, only: Option<&[u8]>) -> Result<usize> {
        let session = layers::session(self.backend.as_ref(), SessionOptions::default()).await?;
        let mut count = 0;
        let mut passed = Vec::new();
        let drained = async {
            while let Some(delivery) = self.dead.try_receive(&session).await? {
                if only.is_some_and(|item| delivery.item().as_ref() != item) {
                    passed.push(delivery);
                    continue;
                }
                if redrive {
                    self.queue.enqueue(delivery.item().clone()).await?;
                }
                delivery.ack().await?;
                count += 1;
                if only.is_some() {
                    break;
                }
            }
            Ok::<_, Error>(())
        }
        .await;
        let returned = give_back(passed).await;
        let closed = session.close().await;
        drained?;
        returned?;
        closed?;
        Ok(count)
    }
}

/// Returns received deliveries to their queue one by one, awaited, so that they are
/// back when this returns; what a failed nack leaves held goes back when the session
/// closes.
async fn give_back(held: Vec<Delivery>) -> Result<()> {
    let mut returned = Ok(());
    for delivery in held {
        if returned.is_ok() {
            returned = delivery.nack().await;
        } else {
            drop(delivery);
        }
    }
    returned
}
