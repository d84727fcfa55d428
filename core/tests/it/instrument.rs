//! The metrics and tracing layer, measured with a debugging recorder over the memory backend.

use distsync_core::Primitives;
use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

use std::sync::Arc;

use distsync_core::Coordinator;
use distsync_kv::memory::MemoryBackend;

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

/// Counting holds starts no task (the count follows each hold's lost signal inline,
/// so a grant and a release wake nothing else): taking many holds through two
/// sessions leaves the number of tasks as it was. Their counts still end with the
/// session.
#[test]
fn holds_are_counted_without_a_task() {
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
        let other = coordinator.session().await.unwrap();
        tokio::task::yield_now().await;
        let without_holds = tasks();
        let mut guards = Vec::new();
        for i in 0..50 {
            let locker = coordinator.locker(&session, &format!("many/{i}")).unwrap();
            guards.push(locker.lock().await.unwrap());
        }
        let other_guard = coordinator
            .locker(&other, "other")
            .unwrap()
            .lock()
            .await
            .unwrap();
        tokio::task::yield_now().await;
        assert_eq!(tasks(), without_holds, "counting holds started tasks");
        assert_eq!(snapshotter.get(HOLDS, &lock), 51.0);

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

/// A hold lost while its guard is kept is counted down at once, by the thread that
/// cancels it, with no task left to run.
#[test]
fn a_loss_counts_the_hold_down_on_the_cancelling_thread() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = Gauges::new(&recorder);
    let lock = [("backend", "memory"), ("primitive", "lock")];
    run(&recorder, async {
        let coordinator = Coordinator::new(MemoryBackend::new());
        let session = coordinator.session().await.unwrap();
        let guard = coordinator
            .locker(&session, "lost-inline")
            .unwrap()
            .lock()
            .await
            .unwrap();
        assert_eq!(snapshotter.get(HOLDS, &lock), 1.0);
        // No await between the loss and the check: nothing else runs in between on
        // this single-threaded runtime, so only an inline count-down passes.
        let _ = futures::FutureExt::now_or_never(session.close());
        assert!(guard.is_lost());
        assert_eq!(snapshotter.get(HOLDS, &lock), 0.0);
        drop(guard);
    });
}

/// Holds ended from other threads at once (released, dropped, or lost with their
/// session, on the workers of a multi-threaded runtime) are each counted down
/// exactly once: the gauge ends at zero, never below. The grants run on the test's
/// thread, where the debugging recorder is installed; the ends run on the workers.
#[test]
fn holds_ended_across_threads_end_at_zero() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = Gauges::new(&recorder);
    let lock = [("backend", "memory"), ("primitive", "lock")];
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let coordinator = Coordinator::new(MemoryBackend::new());
                let doomed = coordinator.session().await.unwrap();
                let mut kept = Vec::new();
                for i in 0..20 {
                    let locker = coordinator.locker(&doomed, &format!("doomed/{i}")).unwrap();
                    kept.push(locker.lock().await.unwrap());
                }
                let session = coordinator.session().await.unwrap();
                let mut guards = Vec::new();
                for i in 0..200 {
                    let locker = coordinator.locker(&session, &format!("ended/{i}")).unwrap();
                    guards.push(locker.lock().await.unwrap());
                }
                assert_eq!(snapshotter.get(HOLDS, &lock), 220.0);
                // Asking starts the kept guards' watches on their keys, so that the
                // revoke below ends them at once rather than at the next renewal.
                assert!(kept.iter().all(|guard| !guard.is_lost()));
                let mut enders = Vec::new();
                for (i, guard) in guards.into_iter().enumerate() {
                    enders.push(tokio::spawn(async move {
                        if i % 2 == 0 {
                            guard.unlock().await.unwrap();
                        } else {
                            drop(guard);
                        }
                    }));
                }
                let backend = coordinator.backend().clone();
                let id = doomed.id();
                enders.push(tokio::spawn(async move {
                    backend.revoke_session(id).await.unwrap();
                }));
                for ender in enders {
                    ender.await.unwrap();
                }
                until_gauge(&snapshotter, HOLDS, &lock, 0.0).await;
                assert!(kept.iter().all(|guard| guard.is_lost()));
                drop(kept);
                tokio::task::yield_now().await;
                assert_eq!(snapshotter.get(HOLDS, &lock), 0.0);
            });
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
            .campaign("a")
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
        permit.release().await.unwrap();
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
impl distsync_core::session::Lease for FailingLease {
    async fn keep_alive(&self) -> distsync_core::Result<distsync_core::session::KeepAlive> {
        Err(distsync_core::Error::connection("test", "unreachable"))
    }

    async fn revoke(&self) -> distsync_core::Result<()> {
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
                    distsync_core::SessionOptions::with_ttl(std::time::Duration::from_secs(3));
                let session = distsync_core::raw::start_session(
                    "test",
                    distsync_core::SessionId(1),
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

/// A running consumer samples its queue's depth (ready items: the one it holds is not
/// counted) into `distsync_queue_depth`, labelled with the queue's name.
#[test]
fn a_consumer_samples_its_queue_depth() {
    use distsync_core::consumer::ConsumerOptions;
    use std::time::Duration;

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    run(&recorder, async {
        let coordinator = Coordinator::new(MemoryBackend::new());
        let queue = coordinator.queue("sampled").unwrap();
        for item in ["a", "b", "c"] {
            queue.enqueue(item).await.unwrap();
        }
        let options = ConsumerOptions::default().metrics_interval(Duration::from_millis(5));
        let consumer = coordinator.consumer("sampled", options).unwrap();
        let session = coordinator.session().await.unwrap();
        // The handler never finishes its first item, so two stay ready.
        let running = consumer.run(&session, |_item| {
            std::future::pending::<Result<(), distsync_core::BoxError>>()
        });
        let watched =
            async {
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                loop {
                    let depth = snapshotter.snapshot().into_vec().into_iter().find_map(
                        |(key, _, _, value)| {
                            let labelled = key
                                .key()
                                .labels()
                                .any(|label| label.key() == "queue" && label.value() == "sampled");
                            match value {
                                DebugValue::Gauge(value)
                                    if key.key().name() == "distsync_queue_depth" && labelled =>
                                {
                                    Some(value.into_inner())
                                }
                                _ => None,
                            }
                        },
                    );
                    if depth == Some(2.0) {
                        return;
                    }
                    assert!(
                        std::time::Instant::now() < deadline,
                        "queue depth reads {depth:?}, expected 2"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            };
        tokio::select! {
            error = running => panic!("the consumer stopped: {error}"),
            () = watched => {}
        }
    });
}

/// A memory backend whose locks answer a grant only after the caller's session was
/// closed: a reply that arrives after the session's client-side deadline.
struct LateGrants(MemoryBackend);

/// A locker that closes its session between the grant and the reply.
struct LateLocker {
    inner: Box<dyn distsync_core::Locker>,
    session: distsync_core::Session,
}

#[async_trait::async_trait]
impl distsync_core::Locker for LateLocker {
    fn name(&self) -> &distsync_core::Name {
        self.inner.name()
    }

    async fn lock(&self) -> distsync_core::Result<distsync_core::LockGuard> {
        let guard = self.inner.lock().await?;
        self.session.close().await?;
        Ok(guard)
    }

    async fn try_lock(&self) -> distsync_core::Result<Option<distsync_core::LockGuard>> {
        let guard = self.inner.try_lock().await?;
        self.session.close().await?;
        Ok(guard)
    }

    async fn contenders(&self) -> distsync_core::Result<usize> {
        self.inner.contenders().await
    }
}

#[async_trait::async_trait]
impl distsync_core::Backend for LateGrants {
    async fn session(
        &self,
        options: distsync_core::SessionOptions,
    ) -> distsync_core::Result<distsync_core::Session> {
        self.0.session(options).await
    }

    async fn revoke_session(&self, id: distsync_core::SessionId) -> distsync_core::Result<()> {
        self.0.revoke_session(id).await
    }
}

impl Primitives for LateGrants {
    fn capabilities(&self) -> &distsync_core::Capabilities {
        self.0.capabilities()
    }

    fn locker(
        &self,
        session: &distsync_core::Session,
        name: distsync_core::Name,
    ) -> distsync_core::Result<Box<dyn distsync_core::Locker>> {
        Ok(Box::new(LateLocker {
            inner: self.0.locker(session, name)?,
            session: session.clone(),
        }))
    }

    fn election(
        &self,
        session: &distsync_core::Session,
        name: distsync_core::Name,
    ) -> distsync_core::Result<Box<dyn distsync_core::Election>> {
        self.0.election(session, name)
    }

    fn rwlock(
        &self,
        session: &distsync_core::Session,
        name: distsync_core::Name,
    ) -> distsync_core::Result<Box<dyn distsync_core::RwLock>> {
        self.0.rwlock(session, name)
    }

    fn queue(
        &self,
        name: distsync_core::Name,
    ) -> distsync_core::Result<Box<dyn distsync_core::Queue>> {
        self.0.queue(name)
    }

    fn barrier(
        &self,
        name: distsync_core::Name,
    ) -> distsync_core::Result<Box<dyn distsync_core::Barrier>> {
        self.0.barrier(name)
    }

    fn double_barrier(
        &self,
        session: &distsync_core::Session,
        name: distsync_core::Name,
        count: std::num::NonZeroUsize,
    ) -> distsync_core::Result<Box<dyn distsync_core::DoubleBarrier>> {
        self.0.double_barrier(session, name, count)
    }

    fn stm(&self) -> distsync_core::Result<distsync_core::Stm> {
        self.0.stm()
    }
}

/// A grant that reaches the caller after its session is lost is never handed out as a
/// guard: the caller gets `SessionLost`, and the lock is free for the next contender.
#[tokio::test]
async fn a_grant_after_the_session_was_lost_is_refused() {
    let coordinator = Coordinator::new(LateGrants(MemoryBackend::new()));
    for blocking in [true, false] {
        let session = coordinator.session().await.unwrap();
        let locker = coordinator.locker(&session, "late").unwrap();
        let outcome = if blocking {
            locker.lock().await.map(Some)
        } else {
            locker.try_lock().await
        };
        assert!(
            matches!(outcome, Err(distsync_core::Error::SessionLost)),
            "blocking {blocking}: {outcome:?}"
        );
    }
    // The refused guards are released in the background: the line empties.
    let session = coordinator.session().await.unwrap();
    let locker = coordinator.locker(&session, "late").unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while locker.contenders().await.unwrap() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refused grants are never released"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
