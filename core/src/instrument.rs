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
//! | `distsync_stm_commits_total` | counter | `isolation` | committed transactions |
//! | `distsync_stm_retries_total` | counter | `isolation` | attempts discarded by a conflict |
//!
//! `primitive` is one of `lock`, `read`, `write`, `leadership`, `permit` (a semaphore),
//! `barrier`, `double_barrier`.
//!
//! **Label cardinality.** Every label has a handful of values, except `election` on
//! `distsync_is_leader`: one series per election name this process campaigns in. That
//! is what a "who leads" dashboard or a "no leader" alert needs, and elections are
//! usually few and long-lived; an application that campaigns in many short-lived
//! elections (one per tenant, per job) should drop that metric in its exporter and use
//! `distsync_holds_in_flight{primitive="leadership"}` (per backend) instead. Names are
//! never a label anywhere else.
//!
//! Primitives made directly through a [`crate::Backend`] (not a `Coordinator`) carry
//! only the session and STM metrics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::barrier::{Barrier, DoubleBarrier};
use crate::election::{Election, LeaderInfo, Leadership};
use crate::error::{Error, Result};
use crate::guard::{LockGuard, ReadGuard};
use crate::lock::Locker;
use crate::name::Name;
use crate::queue::Queue;
use crate::rwlock::RwLock;
use crate::semaphore::Semaphore;
use crate::session::{Lost, Session};

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
/// `distsync_is_leader`) until [`HoldCount::end`], which only the first call does.
#[derive(Clone)]
pub(crate) struct HoldCount {
    gauges: Arc<Vec<metrics::Gauge>>,
    live: Arc<AtomicBool>,
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
        Self {
            gauges: Arc::new(gauges),
            live: Arc::new(AtomicBool::new(true)),
        }
    }

    /// The hold ended: counts it down, once.
    fn end(&self) {
        if self.live.swap(false, Ordering::SeqCst) {
            for gauge in self.gauges.iter() {
                gauge.decrement(1.0);
            }
        }
    }

    /// Ends the count when `lost` fires (the hold or its session is lost, or the hold
    /// is released or dropped, which fire it too), watched by the one task of
    /// `session` that watches all its holds ([`SessionHolds`]); without a runtime,
    /// only [`HoldCount::end`] ends it.
    fn end_when(&self, session: &Session, lost: Lost) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let holds = session
            .counted_holds()
            .get_or_init(|| SessionHolds::start(&runtime));
        if let Err(mpsc::error::SendError((lost, count))) = holds.watch.send((lost, self.clone())) {
            // The runtime that ran the session's watcher is gone (the session outlived
            // it): this hold is watched on its own, on the current one.
            runtime.spawn(async move {
                lost.await;
                count.end();
            });
        }
    }
}

/// The counted holds of one session, watched by one task (not one per hold): each
/// hold's count ends when its lost signal fires. The task ends once the session is
/// dropped (the sender with it) and every hold it watched has ended, which a dropped
/// session's holds have (their signals are children of the session's).
pub(crate) struct SessionHolds {
    watch: mpsc::UnboundedSender<(Lost, HoldCount)>,
}

impl SessionHolds {
    /// Spawns the session's watcher on `runtime`.
    fn start(runtime: &tokio::runtime::Handle) -> Self {
        let (watch, holds) = mpsc::unbounded_channel();
        runtime.spawn(watch_holds(holds));
        Self { watch }
    }
}

/// The task of [`SessionHolds`].
async fn watch_holds(mut incoming: mpsc::UnboundedReceiver<(Lost, HoldCount)>) {
    let mut holds = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            Some(count) = holds.next() => HoldCount::end(&count),
            hold = incoming.recv() => match hold {
                Some((lost, count)) => holds.push(async move {
                    lost.await;
                    count
                }),
                None => break,
            },
        }
    }
    while let Some(count) = holds.next().await {
        count.end();
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
    token: impl Fn(&T) -> Option<u64>,
) -> Result<Option<T>>
where
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
    let outcome = acquisition.instrument(span.clone()).await;
    let waited = started.elapsed();
    span.record("wait_ms", waited.as_secs_f64() * 1e3);
    match &outcome {
        Ok(Some(held)) => {
            span.record("acquired", true);
            if let Some(token) = token(held) {
                span.record("token", token);
            }
            metrics::counter!("distsync_acquisitions_total", "backend" => backend, "primitive" => primitive)
                .increment(1);
            metrics::histogram!("distsync_acquire_wait_seconds", "backend" => backend, "primitive" => primitive)
                .record(waited.as_secs_f64());
        }
        Ok(None) => {
            span.record("acquired", false);
        }
        Err(error) => {
            span.record("acquired", false);
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

fn lock_guard(backend: &'static str, primitive: &'static str, guard: LockGuard) -> LockGuard {
    let key = guard.key().to_owned();
    let count = HoldCount::start(backend, primitive, None);
    // The token, not `lost()`: counting must not start the backend's loss watch.
    count.end_when(guard.session(), Lost::new(guard.lost_token()));
    guard.observe_release(on_release(backend, primitive, key, count))
}

/// A [`Locker`] with spans and metrics.
pub(crate) struct InstrumentedLocker {
    pub(crate) backend: &'static str,
    pub(crate) inner: Box<dyn Locker>,
}

#[async_trait]
impl Locker for InstrumentedLocker {
    fn name(&self) -> &Name {
        self.inner.name()
    }

    async fn lock(&self) -> Result<LockGuard> {
        let guard = acquire(
            self.backend,
            "lock",
            self.inner.name(),
            true,
            async { self.inner.lock().await.map(Some) },
            |g: &LockGuard| Some(g.token().get()),
        )
        .await?
        .ok_or(Error::NotHeld)?;
        Ok(lock_guard(self.backend, "lock", guard))
    }

    async fn try_lock(&self) -> Result<Option<LockGuard>> {
        let guard = acquire(
            self.backend,
            "lock",
            self.inner.name(),
            false,
            self.inner.try_lock(),
            |g: &LockGuard| Some(g.token().get()),
        )
        .await?;
        Ok(guard.map(|g| lock_guard(self.backend, "lock", g)))
    }

    async fn contenders(&self) -> Result<usize> {
        self.inner.contenders().await
    }
}

/// A [`RwLock`] with spans and metrics.
pub(crate) struct InstrumentedRwLock {
    pub(crate) backend: &'static str,
    pub(crate) inner: Box<dyn RwLock>,
}

impl InstrumentedRwLock {
    fn read_guard(&self, guard: ReadGuard) -> ReadGuard {
        let key = guard.key().to_owned();
        let count = HoldCount::start(self.backend, "read", None);
        count.end_when(guard.session(), Lost::new(guard.lost_token()));
        guard.observe_release(on_release(self.backend, "read", key, count))
    }
}

#[async_trait]
impl RwLock for InstrumentedRwLock {
    fn name(&self) -> &Name {
        self.inner.name()
    }

    async fn read(&self) -> Result<ReadGuard> {
        let guard = acquire(
            self.backend,
            "read",
            self.inner.name(),
            true,
            async { self.inner.read().await.map(Some) },
            |_: &ReadGuard| None,
        )
        .await?
        .ok_or(Error::NotHeld)?;
        Ok(self.read_guard(guard))
    }

    async fn try_read(&self) -> Result<Option<ReadGuard>> {
        let guard = acquire(
            self.backend,
            "read",
            self.inner.name(),
            false,
            self.inner.try_read(),
            |_: &ReadGuard| None,
        )
        .await?;
        Ok(guard.map(|g| self.read_guard(g)))
    }

    async fn write(&self) -> Result<LockGuard> {
        let guard = acquire(
            self.backend,
            "write",
            self.inner.name(),
            true,
            async { self.inner.write().await.map(Some) },
            |g: &LockGuard| Some(g.token().get()),
        )
        .await?
        .ok_or(Error::NotHeld)?;
        Ok(lock_guard(self.backend, "write", guard))
    }

    async fn try_write(&self) -> Result<Option<LockGuard>> {
        let guard = acquire(
            self.backend,
            "write",
            self.inner.name(),
            false,
            self.inner.try_write(),
            |g: &LockGuard| Some(g.token().get()),
        )
        .await?;
        Ok(guard.map(|g| lock_guard(self.backend, "write", g)))
    }
}

/// An [`Election`] with spans and metrics on `campaign`.
pub(crate) struct InstrumentedElection {
    pub(crate) backend: &'static str,
    pub(crate) inner: Box<dyn Election>,
}

#[async_trait]
impl Election for InstrumentedElection {
    fn name(&self) -> &Name {
        self.inner.name()
    }

    async fn campaign(&self, value: Bytes) -> Result<Leadership> {
        let leadership = acquire(
            self.backend,
            "leadership",
            self.inner.name(),
            true,
            async { self.inner.campaign(value).await.map(Some) },
            |l: &Leadership| Some(l.term().get()),
        )
        .await?
        .ok_or(Error::NotLeader)?;
        let key = leadership.key().to_owned();
        let count = HoldCount::start(self.backend, "leadership", Some(self.inner.name()));
        // The token, not `lost()`: counting must not start the backend's loss watch.
        count.end_when(leadership.session(), Lost::new(leadership.lost_token()));
        Ok(leadership.observe_release(on_release(self.backend, "leadership", key, count)))
    }

    async fn leader(&self) -> Result<Option<LeaderInfo>> {
        self.inner.leader().await
    }

    fn observe(&self) -> BoxStream<'static, Result<LeaderInfo>> {
        self.inner.observe()
    }
}

/// A [`Semaphore`] with spans and metrics (primitive `permit`).
pub(crate) struct InstrumentedSemaphore {
    pub(crate) backend: &'static str,
    pub(crate) inner: Box<dyn Semaphore>,
}

#[async_trait]
impl Semaphore for InstrumentedSemaphore {
    fn name(&self) -> &Name {
        self.inner.name()
    }

    fn permits(&self) -> usize {
        self.inner.permits()
    }

    async fn acquire(&self) -> Result<LockGuard> {
        let guard = acquire(
            self.backend,
            "permit",
            self.inner.name(),
            true,
            async { self.inner.acquire().await.map(Some) },
            |g: &LockGuard| Some(g.token().get()),
        )
        .await?
        .ok_or(Error::NotHeld)?;
        Ok(lock_guard(self.backend, "permit", guard))
    }

    async fn try_acquire(&self) -> Result<Option<LockGuard>> {
        let guard = acquire(
            self.backend,
            "permit",
            self.inner.name(),
            false,
            self.inner.try_acquire(),
            |g: &LockGuard| Some(g.token().get()),
        )
        .await?;
        Ok(guard.map(|g| lock_guard(self.backend, "permit", g)))
    }
}

/// The `distsync.barrier` event of a barrier action.
fn barrier_event(backend: &'static str, name: &Name, action: &'static str, result: &Result<()>) {
    tracing::debug!(backend, name = %name, action, ok = result.is_ok(), "distsync.barrier");
}

/// A [`Barrier`] with spans and metrics: `wait` is an acquisition (primitive
/// `barrier`: counted as a waiter while it waits, its wait timed when it passes).
pub(crate) struct InstrumentedBarrier {
    pub(crate) backend: &'static str,
    pub(crate) inner: Box<dyn Barrier>,
}

#[async_trait]
impl Barrier for InstrumentedBarrier {
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
        acquire(
            self.backend,
            "barrier",
            self.inner.name(),
            true,
            async { self.inner.wait().await.map(Some) },
            |_: &()| None,
        )
        .await?;
        Ok(())
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
        self.entered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
        acquire(
            self.backend,
            "double_barrier",
            self.inner.name(),
            true,
            async { self.inner.enter().await.map(Some) },
            |_: &()| None,
        )
        .await?;
        let count = HoldCount::start(self.backend, "double_barrier", None);
        count.end_when(&self.session, self.session.lost());
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
        if result.is_ok() {
            if let Some(count) = self.entered().take() {
                count.end();
            }
        }
        result
    }
}

/// A [`Queue`] with traffic counters.
pub(crate) struct InstrumentedQueue {
    pub(crate) backend: &'static str,
    pub(crate) inner: Box<dyn Queue>,
}

impl InstrumentedQueue {
    fn dequeued<T>(&self, item: Result<T>) -> Result<T> {
        if item.is_ok() {
            metrics::counter!("distsync_queue_dequeued_total", "backend" => self.backend)
                .increment(1);
        }
        item
    }
}

#[async_trait]
impl Queue for InstrumentedQueue {
    fn name(&self) -> &Name {
        self.inner.name()
    }

    async fn enqueue(&self, item: Bytes) -> Result<()> {
        self.inner.enqueue(item).await?;
        metrics::counter!("distsync_queue_enqueued_total", "backend" => self.backend).increment(1);
        Ok(())
    }

    async fn enqueue_with_priority(&self, item: Bytes, priority: u16) -> Result<()> {
        self.inner.enqueue_with_priority(item, priority).await?;
        metrics::counter!("distsync_queue_enqueued_total", "backend" => self.backend).increment(1);
        Ok(())
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

    async fn receive(
        &self,
        session: &crate::session::Session,
    ) -> Result<crate::delivery::Delivery> {
        let delivery = self.inner.receive(session).await;
        self.dequeued(delivery)
    }

    async fn try_receive(
        &self,
        session: &crate::session::Session,
    ) -> Result<Option<crate::delivery::Delivery>> {
        match self.inner.try_receive(session).await {
            Ok(Some(delivery)) => self.dequeued(Ok(Some(delivery))),
            other => other,
        }
    }

    async fn len(&self) -> Result<usize> {
        self.inner.len().await
    }
}

#[cfg(test)]
mod tests {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use metrics_util::MetricKind;

    use std::sync::Arc;

    use crate::memory::MemoryBackend;
    use crate::Coordinator;

    /// The metrics a coordinator's lock records: one acquisition, its wait and hold.
    #[test]
    fn a_lock_cycle_is_counted_and_timed() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let coordinator = Coordinator::new(MemoryBackend::new());
                let session = coordinator.session().await.unwrap();
                let locker = coordinator.locker(&session, "metered").unwrap();
                let guard = locker.lock().await.unwrap();
                assert!(locker.try_lock().await.unwrap().is_none());
                guard.unlock().await.unwrap();
            });
        });
        let metrics: Vec<_> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| (key.kind(), key.key().name().to_owned(), value))
            .collect();
        let find = |kind: MetricKind, name: &str| {
            metrics
                .iter()
                .find(|(k, n, _)| *k == kind && n == name)
                .map(|(_, _, v)| v)
        };
        assert_eq!(
            find(MetricKind::Counter, "distsync_acquisitions_total"),
            Some(&DebugValue::Counter(1))
        );
        match find(MetricKind::Histogram, "distsync_hold_seconds") {
            Some(DebugValue::Histogram(values)) => assert_eq!(values.len(), 1),
            other => panic!("hold time not recorded: {other:?}"),
        }
        match find(MetricKind::Histogram, "distsync_acquire_wait_seconds") {
            Some(DebugValue::Histogram(values)) => assert_eq!(values.len(), 1),
            other => panic!("wait time not recorded: {other:?}"),
        }
    }

    /// Gauge values read through a debugging recorder, whose snapshots hand out each
    /// gauge's change since the previous snapshot (they reset it): summed here.
    struct Gauges {
        snapshotter: metrics_util::debugging::Snapshotter,
        totals: std::sync::Mutex<std::collections::HashMap<String, f64>>,
    }

    impl Gauges {
        fn new(recorder: &DebuggingRecorder) -> Self {
            Self {
                snapshotter: recorder.snapshotter(),
                totals: std::sync::Mutex::default(),
            }
        }

        fn series(name: &str, labels: &mut Vec<(String, String)>) -> String {
            labels.sort();
            format!("{name}{labels:?}")
        }

        /// The value of gauge `name` with exactly `labels` (0 when never set).
        fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
            let mut totals = self.totals.lock().unwrap();
            for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
                if let DebugValue::Gauge(value) = value {
                    let mut series: Vec<(String, String)> = key
                        .key()
                        .labels()
                        .map(|l| (l.key().to_owned(), l.value().to_owned()))
                        .collect();
                    *totals
                        .entry(Self::series(key.key().name(), &mut series))
                        .or_default() += value.into_inner();
                }
            }
            let mut wanted: Vec<(String, String)> = labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            totals
                .get(&Self::series(name, &mut wanted))
                .copied()
                .unwrap_or(0.0)
        }
    }

    /// Waits (bounded, yielding to the runtime's tasks) until gauge `name` reads `want`.
    async fn until_gauge(gauges: &Gauges, name: &str, labels: &[(&str, &str)], want: f64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let value = gauges.get(name, labels);
            if value == want {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name}{labels:?} reads {value}, expected {want}"
            );
            tokio::task::yield_now().await;
        }
    }

    fn run(recorder: &DebuggingRecorder, test: impl std::future::Future<Output = ()>) {
        metrics::with_local_recorder(recorder, || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(test);
        });
    }

    const HOLDS: &str = "distsync_holds_in_flight";
    const WAITERS: &str = "distsync_waiters_in_flight";

    /// The holds gauge goes up at each grant and down however the hold ends: unlock,
    /// drop, and loss (the session ended by the store while the guard is still held).
    #[test]
    fn holds_in_flight_go_down_on_unlock_drop_and_loss() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = Gauges::new(&recorder);
        let lock = [("backend", "memory"), ("primitive", "lock")];
        run(&recorder, async {
            let coordinator = Coordinator::new(MemoryBackend::new());
            let session = coordinator.session().await.unwrap();
            let locker = coordinator.locker(&session, "held").unwrap();

            let guard = locker.lock().await.unwrap();
            assert_eq!(snapshotter.get(HOLDS, &lock), 1.0);
            guard.unlock().await.unwrap();
            assert_eq!(snapshotter.get(HOLDS, &lock), 0.0, "unlock");

            let guard = locker.try_lock().await.unwrap().unwrap();
            assert_eq!(snapshotter.get(HOLDS, &lock), 1.0);
            drop(guard);
            until_gauge(&snapshotter, HOLDS, &lock, 0.0).await;

            let guard = locker.lock().await.unwrap();
            let read = coordinator
                .rwlock(&session, "rw")
                .unwrap()
                .read()
                .await
                .unwrap();
            // Asking starts the guards' watches on their keys (not started by a grant).
            assert!(!guard.is_lost() && !read.is_lost());
            let read_labels = [("backend", "memory"), ("primitive", "read")];
            assert_eq!(snapshotter.get(HOLDS, &lock), 1.0);
            assert_eq!(snapshotter.get(HOLDS, &read_labels), 1.0);
            coordinator
                .backend()
                .revoke_session(session.id())
                .await
                .unwrap();
            until_gauge(&snapshotter, HOLDS, &lock, 0.0).await;
            until_gauge(&snapshotter, HOLDS, &read_labels, 0.0).await;
            assert!(guard.is_lost());
            // Releasing the lost guard later does not count it down twice.
            assert!(guard.unlock().await.is_err());
            drop(read);
            tokio::task::yield_now().await;
            assert_eq!(snapshotter.get(HOLDS, &lock), 0.0);
            assert_eq!(snapshotter.get(HOLDS, &read_labels), 0.0);
        });
    }

    /// The holds of one session are watched by one task, not one each: taking many
    /// more holds through the session starts no task; a second session starts one.
    /// Their counts still end with the session.
    #[test]
    fn one_watching_task_per_session_not_per_hold() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = Gauges::new(&recorder);
        let lock = [("backend", "memory"), ("primitive", "lock")];
        run(&recorder, async {
            let tasks = || {
                tokio::runtime::Handle::current()
                    .metrics()
                    .num_alive_tasks()
            };
            let coordinator = Coordinator::new(MemoryBackend::new());
            let session = coordinator.session().await.unwrap();
            let mut guards = vec![coordinator
                .locker(&session, "many/0")
                .unwrap()
                .lock()
                .await
                .unwrap()];
            tokio::task::yield_now().await;
            let with_one = tasks();
            for i in 1..50 {
                let locker = coordinator.locker(&session, &format!("many/{i}")).unwrap();
                guards.push(locker.lock().await.unwrap());
            }
            tokio::task::yield_now().await;
            assert_eq!(tasks(), with_one, "holds of one session started tasks");
            assert_eq!(snapshotter.get(HOLDS, &lock), 50.0);

            let other = coordinator.session().await.unwrap();
            let without_holds = tasks();
            let other_guard = coordinator
                .locker(&other, "other")
                .unwrap()
                .lock()
                .await
                .unwrap();
            tokio::task::yield_now().await;
            assert_eq!(tasks(), without_holds + 1, "a session's first hold");

            // Half of them released, then the session ended with the rest held.
            for guard in guards.drain(..25) {
                guard.unlock().await.unwrap();
            }
            assert_eq!(snapshotter.get(HOLDS, &lock), 26.0);
            session.close().await.unwrap();
            until_gauge(&snapshotter, HOLDS, &lock, 1.0).await;
            other_guard.unlock().await.unwrap();
            assert_eq!(snapshotter.get(HOLDS, &lock), 0.0);
        });
    }

    /// A blocked `lock()` is a waiter until it is granted or its future is dropped;
    /// `try_lock` never is.
    #[test]
    fn waiters_in_flight_count_blocked_calls_until_granted_or_dropped() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = Gauges::new(&recorder);
        let lock = [("backend", "memory"), ("primitive", "lock")];
        run(&recorder, async {
            let coordinator = Coordinator::new(MemoryBackend::new());
            let holder = coordinator.session().await.unwrap();
            let other = coordinator.session().await.unwrap();
            let guard = coordinator
                .locker(&holder, "w")
                .unwrap()
                .lock()
                .await
                .unwrap();
            assert_eq!(
                snapshotter.get(WAITERS, &lock),
                0.0,
                "a grant without a wait"
            );

            let locker = coordinator.locker(&other, "w").unwrap();
            assert!(locker.try_lock().await.unwrap().is_none());
            assert_eq!(
                snapshotter.get(WAITERS, &lock),
                0.0,
                "try_lock does not wait"
            );
            let cancelled = tokio::spawn({
                let locker = Arc::clone(&locker);
                async move { locker.lock().await }
            });
            until_gauge(&snapshotter, WAITERS, &lock, 1.0).await;
            cancelled.abort();
            assert!(cancelled.await.unwrap_err().is_cancelled());
            assert_eq!(snapshotter.get(WAITERS, &lock), 0.0, "a dropped wait");

            let waiting = tokio::spawn(async move { locker.lock().await });
            until_gauge(&snapshotter, WAITERS, &lock, 1.0).await;
            guard.unlock().await.unwrap();
            let granted = waiting.await.unwrap().unwrap();
            assert_eq!(snapshotter.get(WAITERS, &lock), 0.0, "granted");
            assert_eq!(snapshotter.get(HOLDS, &lock), 1.0);
            granted.unlock().await.unwrap();
        });
    }

    /// `distsync_is_leader` per election; permits, barrier waits and double-barrier
    /// participations counted like the other holds and waits.
    #[test]
    fn leaders_permits_and_barriers_are_counted() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = Gauges::new(&recorder);
        run(&recorder, async {
            let coordinator = Coordinator::new(MemoryBackend::new());
            let session = coordinator.session().await.unwrap();
            let leader = [("backend", "memory"), ("election", "primary")];
            let leadership = coordinator
                .election(&session, "primary")
                .unwrap()
                .campaign("a".into())
                .await
                .unwrap();
            assert_eq!(snapshotter.get("distsync_is_leader", &leader), 1.0);
            leadership.resign().await.unwrap();
            assert_eq!(snapshotter.get("distsync_is_leader", &leader), 0.0);

            let permit_labels = [("backend", "memory"), ("primitive", "permit")];
            let permit = coordinator
                .semaphore(&session, "pool", 2)
                .unwrap()
                .acquire()
                .await
                .unwrap();
            assert_eq!(snapshotter.get(HOLDS, &permit_labels), 1.0);
            permit.unlock().await.unwrap();
            assert_eq!(snapshotter.get(HOLDS, &permit_labels), 0.0);

            let barrier_labels = [("backend", "memory"), ("primitive", "barrier")];
            let barrier = coordinator.barrier("gate").unwrap();
            barrier.hold().await.unwrap();
            let waiter = tokio::spawn({
                let barrier = coordinator.barrier("gate").unwrap();
                async move { barrier.wait().await }
            });
            until_gauge(&snapshotter, WAITERS, &barrier_labels, 1.0).await;
            barrier.release().await.unwrap();
            waiter.await.unwrap().unwrap();
            assert_eq!(snapshotter.get(WAITERS, &barrier_labels), 0.0);

            let double = [("backend", "memory"), ("primitive", "double_barrier")];
            let other = coordinator.session().await.unwrap();
            let first = coordinator.double_barrier(&session, "both", 2).unwrap();
            let second = coordinator.double_barrier(&other, "both", 2).unwrap();
            let entering = tokio::spawn({
                let first = Arc::clone(&first);
                async move { first.enter().await }
            });
            until_gauge(&snapshotter, WAITERS, &double, 1.0).await;
            second.enter().await.unwrap();
            entering.await.unwrap().unwrap();
            assert_eq!(snapshotter.get(HOLDS, &double), 2.0);
            assert_eq!(snapshotter.get(WAITERS, &double), 0.0);
            // One participant's session is lost, then the other leaves: each counts down.
            other.close().await.unwrap();
            until_gauge(&snapshotter, HOLDS, &double, 1.0).await;
            first.leave().await.unwrap();
            assert_eq!(snapshotter.get(HOLDS, &double), 0.0);
        });
    }

    /// A lease whose renewals fail.
    struct FailingLease;

    #[async_trait::async_trait]
    impl crate::session::Lease for FailingLease {
        async fn keep_alive(&self) -> crate::Result<crate::session::KeepAlive> {
            Err(crate::Error::connection("test", "unreachable"))
        }

        async fn revoke(&self) -> crate::Result<()> {
            Ok(())
        }

        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }

    /// Each failed renewal is counted.
    #[test]
    fn renewal_failures_are_counted() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap()
                .block_on(async {
                    let options =
                        crate::SessionOptions::with_ttl(std::time::Duration::from_secs(3));
                    let session = crate::Session::start(
                        "test",
                        crate::SessionId(1),
                        &options,
                        tokio::time::Instant::now(),
                        Arc::new(FailingLease),
                    );
                    session.lost().await;
                });
        });
        let failures = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .find(|(key, _, _, _)| key.key().name() == "distsync_session_renewal_failures_total")
            .map(|(_, _, _, value)| value);
        match failures {
            Some(DebugValue::Counter(n)) => assert!(n >= 2, "{n} failures counted"),
            other => panic!("renewal failures not counted: {other:?}"),
        }
    }
}
