//! Observability: tracing spans and metrics around every acquisition, hold and release
//! made through a [`crate::Coordinator`].
//!
//! # Spans
//! | span / event | fields |
//! |---|---|
//! | `distsync.acquire` (span around `lock`, `read`, `write`, `campaign`, `acquire`, `try_*`, a barrier's `wait`, a double barrier's `enter`) | `backend`, `primitive`, `name`, `wait_ms`, `token`, `acquired` |
//! | `distsync.release` (event when a hold ends) | `backend`, `primitive`, `key`, `hold_ms`, `ok` |
//! | `distsync.session.lost` (warn event) | `backend`, `session` |
//! | `distsync.barrier` (debug event on a barrier's `hold`/`release`, a double barrier's `leave`) | `backend`, `name`, `action`, `ok` |
//! | `stm conflict; retrying` (debug event, target `distsync_core::stm`, per discarded attempt) | `attempt`, `isolation` |
//!
//! No span wraps an STM transaction; its outcome is counted by the `distsync_stm_*`
//! metrics below, and the caller learns the number of attempts from
//! [`atomically_with`](crate::stm::Stm#method.atomically_with).
//!
//! # Metrics
//! Recorded through the [`metrics`] facade, so any exporter (Prometheus, StatsD, ...)
//! installed by the application receives them; with none installed they cost nothing.
//!
//! | metric | kind | labels | meaning |
//! |---|---|---|---|
//! | `distsync_acquisitions_total` | counter | `backend`, `primitive` | grants of a lock, read/write lock, leadership or permit; barriers passed; double barriers entered |
//! | `distsync_acquire_failures_total` | counter | `backend`, `primitive`, `error` | acquisitions that ended in an error |
//! | `distsync_acquire_wait_seconds` | histogram | `backend`, `primitive` | time from the call to the grant |
//! | `distsync_hold_seconds` | histogram | `backend`, `primitive` | time from the grant to the release |
//! | `distsync_holds_in_flight` | gauge | `backend`, `primitive` | holds of this process now: up at the grant, down when the hold ends, however it ends (`unlock()`/`resign()`/`leave()`, the guard dropped, its session lost, or the hold taken away in the store: on etcd and memory, once the guard's `lost()`/`is_lost()` has been asked, which starts its watch on the key) |
//! | `distsync_waiters_in_flight` | gauge | `backend`, `primitive` | blocking calls of this process waiting now (`lock`, `read`, `write`, `campaign`, `acquire`, a barrier's `wait`, a double barrier's `enter`/`leave`, and their `_timeout` forms): up at the call, down when it returns or its future is dropped |
//! | `distsync_is_leader` | gauge | `backend`, `election` | leaderships this process holds in the election named (1 while leader, 0 after) |
//! | `distsync_session_renewal_failures_total` | counter | `backend` | renewals that failed (an error from the store; a renewal left unanswered is counted when it fails) |
//! | `distsync_sessions_lost_total` | counter | `backend` | sessions that ended other than by `close()` |
//! | `distsync_queue_enqueued_total`, `distsync_queue_dequeued_total` | counter | `backend` | queue traffic |
//! | `distsync_queue_depth` | gauge | `backend`, `queue` | items ready in a queue a [`Consumer`](crate::consumer::Consumer) runs on, sampled by the consumer on an interval of its own ([`ConsumerOptions::metrics_interval`](crate::consumer::ConsumerOptions::metrics_interval), 15 s by default), never on the path of a delivery |
//! | `distsync_queue_oldest_item_age_seconds` | gauge | `backend`, `queue` | how long the oldest ready item of that queue has waited (0 when empty), sampled with the depth; only where the backend records enqueue times ([`Queue::oldest_age`]) |
//! | `distsync_consumer_processed_total` | counter | `backend` | items a consumer's handler finished and that were acknowledged |
//! | `distsync_consumer_handler_failures_total` | counter | `backend` | consumer handler calls that returned an error |
//! | `distsync_consumer_deadline_exceeded_total` | counter | `backend` | consumer handler calls dropped at the processing deadline |
//! | `distsync_consumer_redeliveries_total` | counter | `backend` | deliveries a consumer received that were not the item's first |
//! | `distsync_consumer_dead_lettered_total` | counter | `backend` | items a consumer moved to its dead-letter queue |
//! | `distsync_stm_commits_total` | counter | `isolation` | committed transactions |
//! | `distsync_stm_retries_total` | counter | `isolation` | attempts discarded by a conflict |
//!
//! `primitive` is one of `lock`, `read`, `write`, `leadership`, `permit` (a semaphore),
//! `barrier`, `double_barrier`.
//!
//! **Label cardinality.** Every label has a handful of values, except `election` on
//! `distsync_is_leader` (one series per election name this process campaigns in) and
//! `queue` on the two queue gauges (one series per queue a consumer of this process
//! runs on). That is what a "who leads" dashboard, a "no leader" alert or a backlog
//! alert needs, and elections and consumers are usually few and long-lived; an
//! application that campaigns in many short-lived elections (one per tenant, per job)
//! should drop that metric in its exporter and use
//! `distsync_holds_in_flight{primitive="leadership"}` (per backend) instead. Names are
//! never a label anywhere else.
//!
//! The consumer's spans and events (`distsync.consume` around each delivery) are
//! described in [`crate::consumer`]; the spans of a queue's `receive`, `ack` and `nack`
//! (`distsync.receive`, `distsync.ack`, `distsync.nack`) in [`crate::delivery`].
//!
//! Primitives made directly through a [`crate::Backend`] (not a `Coordinator`) carry
//! only the session and STM metrics.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::Instrument;

use crate::backend::Backend;
use crate::barrier::{Barrier, DoubleBarrier};
use crate::delivery::{Delivery, receive_span, received};
use crate::election::{Election, LeaderInfo, Leadership};
use crate::error::{Error, Result};
use crate::guard::{LockGuard, ReadGuard};
use crate::lock::Locker;
use crate::name::Name;
use crate::queue::{AppendKey, Enqueued, Queue};
use crate::raw::locked;
use crate::rwlock::RwLock;
use crate::semaphore::{Permit, Semaphore};
use crate::session::Session;
use crate::value_size::ValueLimit;

/// A short, stable label for an error, for the `error` label of failure counters.
pub(crate) fn error_label(error: &Error) -> &'static str {
    match error {
        Error::InvalidName { .. } => "invalid_name",
        Error::InvalidArgument(_) => "invalid_argument",
        Error::InvalidUrl { .. } => "invalid_url",
        Error::FeatureDisabled { .. } => "feature_disabled",
        Error::Unsupported { .. } => "unsupported",
        Error::SessionLost => "session_lost",
        Error::NotHeld => "not_held",
        Error::NotLeader => "not_leader",
        Error::TooManyParticipants { .. } => "too_many_participants",
        Error::StmConflict { .. } => "stm_conflict",
        Error::ActiveHolders { .. } => "active_holders",
        Error::MigrationMismatch(_) => "migration_mismatch",
        Error::IncompatibleLayout { .. } => "incompatible_layout",
        Error::TooLarge { .. } => "too_large",
        Error::Timeout(_) => "timeout",
        Error::Authentication { .. } => "authentication",
        Error::Connection { .. } => "connection",
        Error::Backend { .. } => "backend",
    }
}

/// A blocking call counted in `distsync_waiters_in_flight` until it is dropped (it
/// returned, or its future was dropped).
struct Waiting(metrics::Gauge);

impl Waiting {
    fn start(backend: &'static str, primitive: &'static str) -> Self {
        let gauge = metrics::gauge!("distsync_waiters_in_flight", "backend" => backend, "primitive" => primitive);
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// One hold counted in `distsync_holds_in_flight` (and, for a leadership,
/// `distsync_is_leader`) until [`HoldCount::end`] or the hold's lost signal, whichever
/// comes first; only the first counts it down.
///
/// The count follows the signal without a task: the signal's future is polled once at
/// the grant with the count itself as its waker, so a loss (the session's end, or the
/// backend's loss watch cancelling the hold's token) counts the hold down inline, on
/// the thread that cancels. A grant and a release therefore wake no other task and
/// cost no thread hand-off; that is on the path of every lock cycle on every backend.
#[derive(Clone)]
pub(crate) struct HoldCount(Arc<Counted>);

/// A hold's pending lost signal.
type Signal = Pin<Box<WaitForCancellationFutureOwned>>;

/// What a [`HoldCount`] and its waker share.
struct Counted {
    gauges: Vec<metrics::Gauge>,
    live: AtomicBool,
    /// The hold's lost signal while it is pending: dropped (which unregisters the
    /// waker, and with it the only reference from the token back to this count) when
    /// the count ends.
    signal: Mutex<Option<Signal>>,
}

impl HoldCount {
    /// Counts a hold that began now; `leader` names the election of a leadership.
    fn start(backend: &'static str, primitive: &'static str, leader: Option<&Name>) -> Self {
        let mut gauges = vec![
            metrics::gauge!("distsync_holds_in_flight", "backend" => backend, "primitive" => primitive),
        ];
        if let Some(election) = leader {
            gauges.push(metrics::gauge!(
                "distsync_is_leader",
                "backend" => backend,
                "election" => election.as_str().to_owned()
            ));
        }
        for gauge in &gauges {
            gauge.increment(1.0);
        }
        Self(Arc::new(Counted {
            gauges,
            live: AtomicBool::new(true),
            signal: Mutex::new(None),
        }))
    }

    /// The hold ended: counts it down, once, and stops following its signal.
    fn end(&self) {
        self.0.count_down();
        let signal = self.0.signal().take();
        drop(signal);
    }

    /// Ends the count when `lost` is cancelled (the hold or its session is lost, or
    /// the hold is released or dropped, which cancel it too). Pass the hold's token,
    /// not its `lost()`: counting must not start the backend's loss watch.
    fn end_when(&self, lost: &CancellationToken) {
        let mut signal = self.0.signal();
        let mut pending = Box::pin(lost.clone().cancelled_owned());
        if self.0.poll_fired(&mut pending) {
            drop(signal);
            self.end();
            return;
        }
        // A cancellation between the poll and here wakes `Counted::wake`, which waits
        // for this lock and then finds the signal ready.
        *signal = Some(pending);
    }
}

impl Counted {
    /// Polls `pending` with this count as its waker: whether the signal has fired.
    fn poll_fired(self: &Arc<Self>, pending: &mut Signal) -> bool {
        let waker = Waker::from(Arc::clone(self));
        pending
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_ready()
    }

    fn signal(&self) -> std::sync::MutexGuard<'_, Option<Signal>> {
        locked(&self.signal)
    }

    fn count_down(&self) {
        if self.live.swap(false, Ordering::SeqCst) {
            for gauge in &self.gauges {
                gauge.decrement(1.0);
            }
        }
    }
}

/// The waker of a hold's lost signal: polls the signal again (a wake-up alone is not
/// proof of a cancellation) and counts the hold down once it is ready. It runs on the
/// thread that cancels the token, where tokio-util no longer holds that token's own
/// lock (the poll takes it); the hold's guard keeps another handle on the token, so
/// dropping the signal here never unlinks the token from its parent.
impl Wake for Counted {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut signal = self.signal();
        let Some(pending) = signal.as_mut() else {
            return;
        };
        if self.poll_fired(pending) {
            let done = signal.take();
            drop(signal);
            drop(done);
            self.count_down();
        }
    }
}

/// Runs one acquisition inside a `distsync.acquire` span and records its metrics; a
/// `blocking` one is counted as a waiter while it runs.
async fn acquire<T, F>(
    backend: &'static str,
    primitive: &'static str,
    name: &Name,
    blocking: bool,
    acquisition: F,
) -> Result<Option<T>>
where
    T: Grant,
    F: std::future::Future<Output = Result<Option<T>>>,
{
    let _waiting = blocking.then(|| Waiting::start(backend, primitive));
    let span = tracing::debug_span!(
        "distsync.acquire",
        backend,
        primitive,
        name = %name,
        wait_ms = tracing::field::Empty,
        token = tracing::field::Empty,
        acquired = tracing::field::Empty,
    );
    let started = Instant::now();
    let mut outcome = acquisition.instrument(span.clone()).await;
    let waited = started.elapsed();
    if matches!(&outcome, Ok(Some(held)) if held.known_lost()) {
        // A grant that arrives after the session's client-side deadline (a reply
        // delayed by a partition, say) may already belong to someone else in the
        // store. Handing it out would give the caller a guard whose `lost()` fires at
        // once; dropping it releases whatever is left of it in the background.
        tracing::warn!(backend, primitive, name = %name, "granted after the session was lost");
        outcome = Err(Error::SessionLost);
    }
    span.record("wait_ms", waited.as_secs_f64() * 1e3);
    span.record("acquired", matches!(outcome, Ok(Some(_))));
    match &outcome {
        Ok(Some(held)) => {
            if let Some(token) = held.token() {
                span.record("token", token);
            }
            metrics::counter!("distsync_acquisitions_total", "backend" => backend, "primitive" => primitive)
                .increment(1);
            metrics::histogram!("distsync_acquire_wait_seconds", "backend" => backend, "primitive" => primitive)
                .record(waited.as_secs_f64());
        }
        Ok(None) => {}
        Err(error) => {
            metrics::counter!(
                "distsync_acquire_failures_total",
                "backend" => backend,
                "primitive" => primitive,
                "error" => error_label(error)
            )
            .increment(1);
        }
    }
    outcome
}

/// [`acquire`] for a blocking call, which grants or fails (so its `NotHeld` is never
/// reached).
async fn acquire_blocking<T: Grant>(
    backend: &'static str,
    primitive: &'static str,
    name: &Name,
    acquisition: impl Future<Output = Result<T>>,
) -> Result<T> {
    let acquisition = async { acquisition.await.map(Some) };
    let granted = acquire(backend, primitive, name, true, acquisition).await?;
    granted.ok_or(Error::NotHeld)
}

/// What [`acquire`] reads from a grant: its fencing token for the span, and whether it
/// is already lost when it arrives.
trait Grant {
    fn token(&self) -> Option<u64> {
        None
    }

    fn known_lost(&self) -> bool {
        false
    }
}

impl Grant for LockGuard {
    fn token(&self) -> Option<u64> {
        Some(LockGuard::token(self).get())
    }

    fn known_lost(&self) -> bool {
        LockGuard::known_lost(self)
    }
}

impl Grant for Permit {
    fn token(&self) -> Option<u64> {
        Some(Permit::token(self).get())
    }

    fn known_lost(&self) -> bool {
        Permit::known_lost(self)
    }
}

impl Grant for ReadGuard {
    fn known_lost(&self) -> bool {
        ReadGuard::known_lost(self)
    }
}

impl Grant for Leadership {
    fn token(&self) -> Option<u64> {
        Some(self.term().get())
    }

    fn known_lost(&self) -> bool {
        Leadership::known_lost(self)
    }
}

/// Barrier waits hold nothing.
impl Grant for () {}

/// The observer of a release: a `distsync.release` event, the hold-time histogram,
/// and the end of the hold's count.
fn on_release(
    backend: &'static str,
    primitive: &'static str,
    key: String,
    count: HoldCount,
) -> impl FnOnce(&Result<()>) + Send + Sync + 'static {
    let granted = Instant::now();
    move |result| {
        count.end();
        let held = granted.elapsed();
        tracing::debug!(
            backend,
            primitive,
            key = %key,
            hold_ms = held.as_secs_f64() * 1e3,
            ok = result.is_ok(),
            "distsync.release"
        );
        metrics::histogram!("distsync_hold_seconds", "backend" => backend, "primitive" => primitive)
            .record(held.as_secs_f64());
    }
}

/// Counts a hold from now until it ends, and observes its release: what a guard or a
/// permit passes to its `observe_release`.
fn counted(
    backend: &'static str,
    primitive: &'static str,
    key: &str,
    store_lost: &CancellationToken,
) -> impl FnOnce(&Result<()>) + Send + Sync + 'static {
    let count = HoldCount::start(backend, primitive, None);
    count.end_when(store_lost);
    on_release(backend, primitive, key.to_owned(), count)
}

/// A guard as the coordinator hands it out: counted, and its guarded writes checked
/// against `limit`.
fn lock_guard(
    backend: &'static str,
    primitive: &'static str,
    limit: ValueLimit,
    guard: LockGuard,
) -> LockGuard {
    let observer = counted(backend, primitive, guard.key(), guard.store_lost_token());
    guard.observe_release(observer).with_value_limit(limit)
}

/// A permit as the coordinator hands it out: counted, and its guarded writes checked
/// against `limit`.
fn permit(backend: &'static str, limit: ValueLimit, permit: Permit) -> Permit {
    let observer = counted(backend, "permit", permit.key(), permit.store_lost_token());
    permit.observe_release(observer).with_value_limit(limit)
}

/// A backend's primitive `P` (`dyn Locker`, `dyn RwLock`, ...) with spans and metrics:
/// what each one traces and counts is said on its impl below.
pub(crate) struct Instrumented<P: ?Sized> {
    backend: &'static str,
    /// The store's limit on a caller's value (see [`crate::value_size`]).
    limit: ValueLimit,
    inner: Box<P>,
}

impl<P: ?Sized> Instrumented<P> {
    /// `inner`, a primitive of `backend`, with spans and metrics.
    pub(crate) fn new(backend: &dyn Backend, inner: Box<P>) -> Self {
        let capabilities = backend.capabilities();
        Self {
            backend: capabilities.backend,
            limit: capabilities.value_limit(),
            inner,
        }
    }
}

/// A [`Locker`] with spans and metrics.
#[async_trait]
impl Locker for Instrumented<dyn Locker> {
    fn name(&self) -> &Name {
        self.inner.name()
    }

    async fn lock(&self) -> Result<LockGuard> {
        let guard =
            acquire_blocking(self.backend, "lock", self.inner.name(), self.inner.lock()).await?;
        Ok(lock_guard(self.backend, "lock", self.limit, guard))
    }

    async fn try_lock(&self) -> Result<Option<LockGuard>> {
        let attempt = self.inner.try_lock();
        let guard = acquire(self.backend, "lock", self.inner.name(), false, attempt).await?;
        Ok(guard.map(|g| lock_guard(self.backend, "lock", self.limit, g)))
    }

    async fn contenders(&self) -> Result<usize> {
        self.inner.contenders().await
    }

    fn wakeups(&self) -> u64 {
        self.inner.wakeups()
    }
}

impl Instrumented<dyn RwLock> {
    fn read_guard(&self, guard: ReadGuard) -> ReadGuard {
        let observer = counted(self.backend, "read", guard.key(), guard.store_lost_token());
        guard.observe_release(observer)
    }
}

/// A [`RwLock`] with spans and metrics.
#[async_trait]
impl RwLock for Instrumented<dyn RwLock> {
    fn name(&self) -> &Name {
        self.inner.name()
    }

    async fn read(&self) -> Result<ReadGuard> {
        let guard =
            acquire_blocking(self.backend, "read", self.inner.name(), self.inner.read()).await?;
        Ok(self.read_guard(guard))
    }

    async fn try_read(&self) -> Result<Option<ReadGuard>> {
        let attempt = self.inner.try_read();
        let guard = acquire(self.backend, "read", self.inner.name(), false, attempt).await?;
        Ok(guard.map(|g| self.read_guard(g)))
    }

    async fn write(&self) -> Result<LockGuard> {
        let guard =
            acquire_blocking(self.backend, "write", self.inner.name(), self.inner.write()).await?;
        Ok(lock_guard(self.backend, "write", self.limit, guard))
    }

    async fn try_write(&self) -> Result<Option<LockGuard>> {
        let attempt = self.inner.try_write();
        let guard = acquire(self.backend, "write", self.inner.name(), false, attempt).await?;
        Ok(guard.map(|g| lock_guard(self.backend, "write", self.limit, g)))
    }
}

/// An [`Election`] with spans and metrics on `campaign`.
#[async_trait]
impl Election for Instrumented<dyn Election> {
    fn name(&self) -> &Name {
        self.inner.name()
    }

    async fn campaign_bytes(&self, value: Bytes) -> Result<Leadership> {
        self.limit.check("candidate value", value.len())?;
        let campaign = self.inner.campaign_bytes(value);
        let leadership =
            acquire_blocking(self.backend, "leadership", self.inner.name(), campaign).await?;
        let key = leadership.key().to_owned();
        let count = HoldCount::start(self.backend, "leadership", Some(self.inner.name()));
        count.end_when(leadership.store_lost_token());
        Ok(leadership
            .observe_release(on_release(self.backend, "leadership", key, count))
            .with_value_limit(self.limit))
    }

    async fn leader(&self) -> Result<Option<LeaderInfo>> {
        self.inner.leader().await
    }

    fn observe(&self) -> BoxStream<'static, Result<LeaderInfo>> {
        self.inner.observe()
    }
}

/// A [`Semaphore`] with spans and metrics (primitive `permit`).
#[async_trait]
impl Semaphore for Instrumented<dyn Semaphore> {
    fn name(&self) -> &Name {
        self.inner.name()
    }

    fn permits(&self) -> usize {
        self.inner.permits()
    }

    async fn acquire(&self) -> Result<Permit> {
        let wait = self.inner.acquire();
        let granted = acquire_blocking(self.backend, "permit", self.inner.name(), wait).await?;
        Ok(permit(self.backend, self.limit, granted))
    }

    async fn try_acquire(&self) -> Result<Option<Permit>> {
        let attempt = self.inner.try_acquire();
        let granted = acquire(self.backend, "permit", self.inner.name(), false, attempt).await?;
        Ok(granted.map(|granted| permit(self.backend, self.limit, granted)))
    }
}

/// The `distsync.barrier` event of a barrier action.
fn barrier_event(backend: &'static str, name: &Name, action: &'static str, result: &Result<()>) {
    tracing::debug!(backend, name = %name, action, ok = result.is_ok(), "distsync.barrier");
}

/// A [`Barrier`] with spans and metrics: `wait` is an acquisition (primitive
/// `barrier`: counted as a waiter while it waits, its wait timed when it passes).
#[async_trait]
impl Barrier for Instrumented<dyn Barrier> {
    fn name(&self) -> &Name {
        self.inner.name()
    }

    async fn hold(&self) -> Result<()> {
        let result = self.inner.hold().await;
        barrier_event(self.backend, self.inner.name(), "hold", &result);
        result
    }

    async fn release(&self) -> Result<()> {
        let result = self.inner.release().await;
        barrier_event(self.backend, self.inner.name(), "release", &result);
        result
    }

    async fn wait(&self) -> Result<()> {
        let wait = self.inner.wait();
        acquire_blocking(self.backend, "barrier", self.inner.name(), wait).await
    }
}

/// A [`DoubleBarrier`] with spans and metrics (primitive `double_barrier`): `enter` is
/// an acquisition; from a successful `enter` to the `leave` that ends it (or the loss
/// of the session), the participant is a hold in `distsync_holds_in_flight`; `enter`
/// and `leave` count as waiters while they wait.
pub(crate) struct InstrumentedDoubleBarrier {
    pub(crate) backend: &'static str,
    pub(crate) inner: Box<dyn DoubleBarrier>,
    pub(crate) session: Session,
    pub(crate) entered: Mutex<Option<HoldCount>>,
}

impl InstrumentedDoubleBarrier {
    fn entered(&self) -> std::sync::MutexGuard<'_, Option<HoldCount>> {
        locked(&self.entered)
    }
}

#[async_trait]
impl DoubleBarrier for InstrumentedDoubleBarrier {
    fn name(&self) -> &Name {
        self.inner.name()
    }

    fn count(&self) -> usize {
        self.inner.count()
    }

    async fn enter(&self) -> Result<()> {
        let enter = self.inner.enter();
        acquire_blocking(self.backend, "double_barrier", self.inner.name(), enter).await?;
        let count = HoldCount::start(self.backend, "double_barrier", None);
        count.end_when(self.session.lost_token());
        if let Some(previous) = self.entered().replace(count) {
            previous.end();
        }
        Ok(())
    }

    async fn leave(&self) -> Result<()> {
        let result = {
            let _waiting = Waiting::start(self.backend, "double_barrier");
            self.inner.leave().await
        };
        barrier_event(self.backend, self.inner.name(), "leave", &result);
        if result.is_ok()
            && let Some(count) = self.entered().take()
        {
            count.end();
        }
        result
    }
}

impl Instrumented<dyn Queue> {
    fn dequeued<T>(&self, item: Result<T>) -> Result<T> {
        if item.is_ok() {
            metrics::counter!("distsync_queue_dequeued_total", "backend" => self.backend)
                .increment(1);
        }
        item
    }
}

/// A [`Queue`] with traffic counters.
#[async_trait]
impl Queue for Instrumented<dyn Queue> {
    fn name(&self) -> &Name {
        self.inner.name()
    }

    async fn append_bytes(&self, key: &AppendKey, item: Bytes, priority: u16) -> Result<Enqueued> {
        self.limit.check("queue item", item.len())?;
        let enqueued = self.inner.append_bytes(key, item, priority).await?;
        if enqueued.is_new() {
            metrics::counter!("distsync_queue_enqueued_total", "backend" => self.backend)
                .increment(1);
        }
        Ok(enqueued)
    }

    async fn dequeue(&self) -> Result<Bytes> {
        let item = self.inner.dequeue().await;
        self.dequeued(item)
    }

    async fn try_dequeue(&self) -> Result<Option<Bytes>> {
        match self.inner.try_dequeue().await {
            Ok(Some(item)) => self.dequeued(Ok(Some(item))),
            other => other,
        }
    }

    async fn receive(&self, session: &Session) -> Result<Delivery> {
        let span = receive_span(self.backend, self.inner.name());
        let delivery = self.inner.receive(session).instrument(span.clone()).await;
        self.dequeued(delivery.map(|delivery| received(&span, self.inner.name(), delivery)))
    }

    async fn try_receive(&self, session: &Session) -> Result<Option<Delivery>> {
        let span = receive_span(self.backend, self.inner.name());
        let attempt = self.inner.try_receive(session).instrument(span.clone());
        match attempt.await {
            Ok(Some(delivery)) => {
                self.dequeued(Ok(Some(received(&span, self.inner.name(), delivery))))
            }
            other => other,
        }
    }

    async fn len(&self) -> Result<usize> {
        self.inner.len().await
    }

    async fn oldest_age(&self) -> Result<Option<std::time::Duration>> {
        self.inner.oldest_age().await
    }
}
