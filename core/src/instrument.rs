//! Observability: tracing spans and metrics around every acquisition, hold and release
//! made through a [`crate::Coordinator`].
//!
//! # Spans
//! | span / event | fields |
//! |---|---|
//! | `distsync.acquire` (span around `lock`, `read`, `write`, `campaign`, `try_*`) | `backend`, `primitive`, `name`, `wait_ms`, `token`, `acquired` |
//! | `distsync.release` (event when a hold ends) | `backend`, `primitive`, `key`, `hold_ms`, `ok` |
//! | `distsync.session.lost` (warn event) | `backend`, `session` |
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
//! | `distsync_acquisitions_total` | counter | `backend`, `primitive` | grants of a lock, read/write lock or leadership |
//! | `distsync_acquire_failures_total` | counter | `backend`, `primitive`, `error` | acquisitions that ended in an error |
//! | `distsync_acquire_wait_seconds` | histogram | `backend`, `primitive` | time from the call to the grant |
//! | `distsync_hold_seconds` | histogram | `backend`, `primitive` | time from the grant to the release |
//! | `distsync_sessions_lost_total` | counter | `backend` | sessions that ended other than by `close()` |
//! | `distsync_queue_enqueued_total`, `distsync_queue_dequeued_total` | counter | `backend` | queue traffic |
//! | `distsync_stm_commits_total` | counter | `isolation` | committed transactions |
//! | `distsync_stm_retries_total` | counter | `isolation` | attempts discarded by a conflict |
//!
//! Primitives made directly through a [`crate::Backend`] (not a `Coordinator`) carry
//! only the session and STM metrics.

use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use tracing::Instrument;

use crate::election::{Election, LeaderInfo, Leadership};
use crate::error::{Error, Result};
use crate::guard::{LockGuard, ReadGuard};
use crate::lock::Locker;
use crate::name::Name;
use crate::queue::Queue;
use crate::rwlock::RwLock;

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
        Error::Timeout(_) => "timeout",
        Error::Authentication { .. } => "authentication",
        Error::Authentication { .. } => "authentication",
        Error::Connection { .. } => "connection",
        Error::Backend { .. } => "backend",
    }
}

/// Runs one acquisition inside a `distsync.acquire` span and records its metrics.
async fn acquire<T, F>(
    backend: &'static str,
    primitive: &'static str,
    name: &Name,
    acquisition: F,
    token: impl Fn(&T) -> Option<u64>,
) -> Result<Option<T>>
where
    F: std::future::Future<Output = Result<Option<T>>>,
{
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

/// The observer of a release: a `distsync.release` event and the hold-time histogram.
fn on_release(
    backend: &'static str,
    primitive: &'static str,
    key: String,
) -> impl FnOnce(&Result<()>) + Send + Sync + 'static {
    let granted = Instant::now();
    move |result| {
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
    guard.observe_release(on_release(backend, primitive, key))
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
        guard.observe_release(on_release(self.backend, "read", key))
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
            async { self.inner.campaign(value).await.map(Some) },
            |l: &Leadership| Some(l.term().get()),
        )
        .await?
        .ok_or(Error::NotLeader)?;
        let key = leadership.key().to_owned();
        Ok(leadership.observe_release(on_release(self.backend, "leadership", key)))
    }

    async fn leader(&self) -> Result<Option<LeaderInfo>> {
        self.inner.leader().await
    }

    fn observe(&self) -> BoxStream<'static, Result<LeaderInfo>> {
        self.inner.observe()
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
}
