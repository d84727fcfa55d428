//! A check of [`Coordinator::status`] (who holds what) that every backend's tests run
//! against its real store: it builds a known state (a held lock with two waiters, a
//! leader, a read lock with a writer waiting, a semaphore permit, a queue, a barrier, a
//! double-barrier participant) under a fresh prefix and compares the report with what
//! the guards say, then ends one waiter's session in the store and checks that its
//! entry is no longer shown, and that the waiters are served in the order shown.

use std::sync::Arc;
use std::time::Duration;

use distsync_core::status::{HoldMode, LineKind, StatusReport};
use distsync_core::{Coordinator, Leadership, LockGuard, Permit, Queue, ReadGuard, Session};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long the check waits for a waiter to show up in the report.
const DEADLINE: Duration = Duration::from_secs(20);

macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err(format!($($message)+));
        }
    };
}

/// Reads the report until `done` accepts it (a bounded poll: a waiter's entry appears
/// once its task has joined the line, which no call reports).
async fn until(
    coordinator: &Coordinator,
    prefix: &str,
    what: &str,
    done: impl Fn(&StatusReport) -> bool,
) -> Result<StatusReport, String> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let report = coordinator
            .status(prefix)
            .await
            .map_err(|error| format!("status({prefix:?}): {error}"))?;
        if done(&report) {
            return Ok(report);
        }
        ensure!(
            Instant::now() < deadline,
            "{what}: not seen within {DEADLINE:?}; last report: {report:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn waiters(report: &StatusReport, kind: LineKind, name: &str) -> usize {
    report.line(kind, name).map_or(0, |line| line.waiters.len())
}

/// Runs the check under `prefix` (a fresh one per run, ending with `/`). `other`
/// must be a second client of the same store (another connection, as another process
/// would have), so that waiters and holders do not share one client.
///
/// # Errors
/// What differs from the expected report.
pub async fn check_status(
    coordinator: &Coordinator,
    other: &Coordinator,
    prefix: &str,
) -> Result<(), String> {
    let scene = Scene::build(coordinator, other, prefix).await?;
    let report = until(coordinator, prefix, "the waiting writer", |report| {
        waiters(report, LineKind::RwLock, &scene.names.rw) == 1
    })
    .await?;
    let backend = coordinator.capabilities().backend;
    ensure!(
        report.backend == backend,
        "backend {} ≠ {backend}",
        report.backend
    );
    let first_key = scene.check_lock(&report)?;
    scene.check_leader(&report)?;
    scene.check_rwlock(&report)?;
    scene.check_semaphore_queue_and_barrier(&report)?;
    // Only names under the prefix.
    let outside = coordinator
        .status(&format!("{prefix}none/"))
        .await
        .map_err(fail("status"))?;
    ensure!(
        outside.is_empty(),
        "a prefix nothing is under: {outside:#?}"
    );
    let rest = scene
        .check_ended_waiter_and_order(coordinator, other, prefix, &first_key)
        .await?;
    rest.clean_up(coordinator, prefix).await
}

/// Maps a store error to the check's failure, naming `what` was called.
fn fail(what: &str) -> impl Fn(distsync_core::Error) -> String {
    let what = what.to_owned();
    move |error| format!("{what}: {error}")
}

/// The names of the check's primitives, under its prefix.
struct Names {
    lock: String,
    leader: String,
    rw: String,
    pool: String,
    queue: String,
    gate: String,
}

/// The known state the report is compared with: what the holder's client holds, the
/// waiters of the other client, and the queue and barrier.
struct Scene {
    names: Names,
    holder: Session,
    first: Session,
    second: Session,
    guard: LockGuard,
    first_wait: JoinHandle<distsync_core::Result<LockGuard>>,
    second_wait: JoinHandle<distsync_core::Result<LockGuard>>,
    leadership: Leadership,
    read: ReadGuard,
    write_wait: JoinHandle<distsync_core::Result<LockGuard>>,
    permit: Option<Permit>,
    items: Arc<dyn Queue>,
}

impl Scene {
    /// A held lock with two waiters (in a known order), a leader, a read lock with a
    /// writer waiting, a semaphore permit (where offered), a queue of two items and a
    /// held barrier.
    async fn build(
        coordinator: &Coordinator,
        other: &Coordinator,
        prefix: &str,
    ) -> Result<Self, String> {
        let names = Names {
            lock: format!("{prefix}lock"),
            leader: format!("{prefix}leader"),
            rw: format!("{prefix}rw"),
            pool: format!("{prefix}pool"),
            queue: format!("{prefix}queue"),
            gate: format!("{prefix}gate"),
        };
        let holder = coordinator.session().await.map_err(fail("session"))?;
        let first: Session = other.session().await.map_err(fail("session"))?;
        let second: Session = other.session().await.map_err(fail("session"))?;
        let guard = coordinator
            .locker(&holder, &names.lock)
            .map_err(fail("locker"))?
            .lock()
            .await
            .map_err(fail("lock"))?;
        let first_locker = other.locker(&first, &names.lock).map_err(fail("locker"))?;
        let first_wait = tokio::spawn(async move { first_locker.lock().await });
        until(coordinator, prefix, "the first waiter", |report| {
            waiters(report, LineKind::Lock, &names.lock) == 1
        })
        .await?;
        let second_locker = other.locker(&second, &names.lock).map_err(fail("locker"))?;
        let second_wait = tokio::spawn(async move { second_locker.lock().await });
        until(coordinator, prefix, "the second waiter", |report| {
            waiters(report, LineKind::Lock, &names.lock) == 2
        })
        .await?;
        let leadership = coordinator
            .election(&holder, &names.leader)
            .map_err(fail("election"))?
            .campaign("node-1")
            .await
            .map_err(fail("campaign"))?;
        let read = coordinator
            .rwlock(&holder, &names.rw)
            .map_err(fail("rwlock"))?
            .read()
            .await
            .map_err(fail("read"))?;
        let writer = other.rwlock(&first, &names.rw).map_err(fail("rwlock"))?;
        let write_wait = tokio::spawn(async move { writer.write().await });
        let permit = if coordinator.capabilities().semaphore {
            Some(
                coordinator
                    .semaphore(&holder, &names.pool, 2)
                    .map_err(fail("semaphore"))?
                    .acquire()
                    .await
                    .map_err(fail("acquire"))?,
            )
        } else {
            None
        };
        let items = coordinator.queue(&names.queue).map_err(fail("queue"))?;
        items.enqueue("a").await.map_err(fail("enqueue"))?;
        items.enqueue("b").await.map_err(fail("enqueue"))?;
        coordinator
            .barrier(&names.gate)
            .map_err(fail("barrier"))?
            .hold()
            .await
            .map_err(fail("hold"))?;
        Ok(Self {
            names,
            holder,
            first,
            second,
            guard,
            first_wait,
            second_wait,
            leadership,
            read,
            write_wait,
            permit,
            items,
        })
    }

    /// The lock: the holder with its key, token and session; two waiters, in order.
    /// Returns the first waiter's key.
    fn check_lock(&self, report: &StatusReport) -> Result<String, String> {
        let (guard, holder) = (&self.guard, &self.holder);
        let line = report
            .line(LineKind::Lock, &self.names.lock)
            .ok_or_else(|| format!("no lock line: {report:#?}"))?;
        ensure!(line.holders.len() == 1, "lock holders: {line:#?}");
        let held = &line.holders[0];
        ensure!(
            held.key == guard.key(),
            "holder key {} ≠ guard's {}",
            held.key,
            guard.key()
        );
        ensure!(
            held.token == Some(guard.token()),
            "holder token {:?} ≠ {}",
            held.token,
            guard.token()
        );
        ensure!(
            held.session == Some(holder.id().to_string()),
            "holder session {:?} ≠ {}",
            held.session,
            holder.id()
        );
        let order: Vec<Option<String>> = line.waiters.iter().map(|w| w.session.clone()).collect();
        ensure!(
            order
                == [
                    Some(self.first.id().to_string()),
                    Some(self.second.id().to_string())
                ],
            "waiters {order:?}, expected [{}, {}] in arrival order",
            self.first.id(),
            self.second.id()
        );
        ensure!(
            line.waiters.iter().all(|w| w.token.is_none()),
            "waiters with tokens: {line:#?}"
        );
        Ok(line.waiters[0].key.clone())
    }

    /// The leader: its value and term.
    fn check_leader(&self, report: &StatusReport) -> Result<(), String> {
        let elected = report
            .line(LineKind::Election, &self.names.leader)
            .and_then(|line| line.leader.as_ref())
            .ok_or_else(|| format!("no leader: {report:#?}"))?;
        ensure!(
            elected.value == "node-1",
            "leader value {:?}",
            elected.value
        );
        ensure!(
            elected.term == self.leadership.term(),
            "term {} ≠ {}",
            elected.term,
            self.leadership.term()
        );
        Ok(())
    }

    /// The read-write lock: a reader holding, a writer waiting.
    fn check_rwlock(&self, report: &StatusReport) -> Result<(), String> {
        let line = report
            .line(LineKind::RwLock, &self.names.rw)
            .ok_or("no rwlock line")?;
        ensure!(
            line.holders.len() == 1 && line.holders[0].mode == HoldMode::Shared,
            "rwlock holders: {line:#?}"
        );
        ensure!(
            line.holders[0].key == self.read.key(),
            "reader key {} ≠ {}",
            line.holders[0].key,
            self.read.key()
        );
        ensure!(
            line.waiters[0].mode == HoldMode::Exclusive,
            "rwlock waiter: {line:#?}"
        );
        Ok(())
    }

    /// The semaphore (where offered), the queue, the barrier.
    fn check_semaphore_queue_and_barrier(&self, report: &StatusReport) -> Result<(), String> {
        if let Some(permit) = &self.permit {
            let line = report
                .line(LineKind::Semaphore, &self.names.pool)
                .ok_or("no semaphore line")?;
            ensure!(line.permits == Some(2), "permits {:?}", line.permits);
            ensure!(
                line.holders.len() == 1 && line.holders[0].token == Some(permit.token()),
                "semaphore holders: {line:#?}"
            );
        }
        ensure!(
            report
                .queues
                .iter()
                .any(|q| q.name == self.names.queue && q.ready == 2),
            "queues: {:?}",
            report.queues
        );
        ensure!(
            report.barriers == [self.names.gate.clone()],
            "barriers: {:?}",
            report.barriers
        );
        Ok(())
    }

    /// The second waiter's session ends in the store: its entry is no longer shown,
    /// and the lock goes to the first waiter, whose key was `first_key`. Returns what
    /// is left to release, with the first waiter's lock in place of the holder's.
    async fn check_ended_waiter_and_order(
        self,
        coordinator: &Coordinator,
        other: &Coordinator,
        prefix: &str,
        first_key: &str,
    ) -> Result<Rest, String> {
        let Self {
            names,
            holder,
            first,
            second,
            guard,
            first_wait,
            second_wait,
            leadership,
            read,
            write_wait,
            permit,
            items,
        } = self;
        other
            .backend()
            .revoke_session(second.id())
            .await
            .map_err(fail("revoke_session"))?;
        until(coordinator, prefix, "the ended waiter gone", |report| {
            waiters(report, LineKind::Lock, &names.lock) == 1
        })
        .await?;
        // Served in the order shown.
        guard.unlock().await.map_err(fail("unlock"))?;
        let next = tokio::time::timeout(DEADLINE, first_wait)
            .await
            .map_err(|_| "the first waiter was not granted".to_owned())?
            .map_err(|error| format!("the first waiter's task: {error}"))?
            .map_err(fail("the first waiter's lock"))?;
        ensure!(
            next.key() == first_key,
            "granted {} ≠ first waiter {first_key}",
            next.key()
        );
        let report = coordinator.status(prefix).await.map_err(fail("status"))?;
        let line = report
            .line(LineKind::Lock, &names.lock)
            .ok_or("no lock line")?;
        ensure!(
            line.holders.len() == 1
                && line.holders[0].token == Some(next.token())
                && line.waiters.is_empty(),
            "after the hand-over: {line:#?}"
        );
        // Its owner learns of the loss at its next renewal; closing tells it at once.
        second
            .close()
            .await
            .map_err(fail("closing the ended session"))?;
        let second_result = tokio::time::timeout(DEADLINE, second_wait)
            .await
            .map_err(|_| "the ended waiter's lock() did not return".to_owned())?;
        ensure!(
            !matches!(second_result, Ok(Ok(_))),
            "the ended waiter got the lock"
        );
        Ok(Rest {
            gate: names.gate,
            holder,
            first,
            next,
            leadership,
            read,
            write_wait,
            permit,
            items,
        })
    }
}

/// What the check releases at its end.
struct Rest {
    gate: String,
    holder: Session,
    first: Session,
    next: LockGuard,
    leadership: Leadership,
    read: ReadGuard,
    write_wait: JoinHandle<distsync_core::Result<LockGuard>>,
    permit: Option<Permit>,
    items: Arc<dyn Queue>,
}

impl Rest {
    /// Releases everything (the waiting writer is granted once the reader leaves) and
    /// checks that the report is then empty.
    async fn clean_up(self, coordinator: &Coordinator, prefix: &str) -> Result<(), String> {
        self.next.unlock().await.map_err(fail("unlock"))?;
        self.read.unlock().await.map_err(fail("unlock"))?;
        let write = tokio::time::timeout(DEADLINE, self.write_wait)
            .await
            .map_err(|_| "the writer was not granted".to_owned())?
            .map_err(|error| format!("the writer's task: {error}"))?
            .map_err(fail("write"))?;
        write.unlock().await.map_err(fail("unlock"))?;
        if let Some(permit) = self.permit {
            permit.release().await.map_err(fail("unlock"))?;
        }
        self.leadership.resign().await.map_err(fail("resign"))?;
        coordinator
            .barrier(&self.gate)
            .map_err(fail("barrier"))?
            .release()
            .await
            .map_err(fail("release"))?;
        while self
            .items
            .try_dequeue()
            .await
            .map_err(fail("dequeue"))?
            .is_some()
        {}
        let report = until(
            coordinator,
            prefix,
            "an empty report",
            StatusReport::is_empty,
        )
        .await?;
        ensure!(report.is_empty(), "left behind: {report:#?}");
        for session in [self.holder, self.first] {
            session.close().await.map_err(fail("close"))?;
        }
        Ok(())
    }
}

/// Runs the check of counters, count-down latches and rate limiters in the report,
/// under `prefix` (a fresh one per run, ending with `/`): a counter at 42, a latch of
/// 3 counted down once and then opened, a limiter of 2 per hour with one permit spent
/// (the next one due now) and then both (the next one half an hour away on the store's
/// clock), and that a latch never counted down and names outside the prefix are not
/// listed. A backend without rate limiters (etcd: no store clock to decide on) must
/// list none.
///
/// # Errors
/// What differs from the expected report.
pub async fn check_counter_status(coordinator: &Coordinator, prefix: &str) -> Result<(), String> {
    use distsync_core::rate_limiter::Rate;

    let visits = coordinator
        .counter(&format!("{prefix}visits"))
        .map_err(fail("counter"))?;
    visits.add(41).await.map_err(fail("add"))?;
    visits.add(1).await.map_err(fail("add"))?;
    let ready = coordinator
        .latch(&format!("{prefix}ready"), 3)
        .map_err(fail("latch"))?;
    ready.count_down().await.map_err(fail("count_down"))?;
    // Never counted down: nothing in the store, nothing to list.
    let _unused = coordinator
        .latch(&format!("{prefix}unused"), 2)
        .map_err(fail("latch"))?;
    let rate = Rate::new(2, Duration::from_secs(3600)).map_err(fail("rate"))?;
    let limiter = match coordinator.rate_limiter(&format!("{prefix}api"), rate) {
        Ok(limiter) => Some(limiter),
        Err(distsync_core::Error::Unsupported { .. }) => None,
        Err(error) => return Err(fail("rate_limiter")(error)),
    };
    if let Some(limiter) = &limiter {
        ensure!(
            limiter
                .try_acquire(1)
                .await
                .map_err(fail("try_acquire"))?
                .is_granted(),
            "the first permit of a burst of two is refused"
        );
    }

    let report = status_of(coordinator, prefix).await?;
    let counters: Vec<_> = report
        .counters
        .iter()
        .map(|counter| (counter.name.as_str(), counter.value))
        .collect();
    ensure!(
        counters == [(format!("{prefix}visits").as_str(), 42)],
        "counters {counters:?}, expected only {prefix}visits at 42"
    );
    let latches: Vec<_> = report
        .latches
        .iter()
        .map(|latch| (latch.name.as_str(), latch.initial, latch.count))
        .collect();
    ensure!(
        latches == [(format!("{prefix}ready").as_str(), 3, 2)],
        "latches {latches:?}, expected only {prefix}ready at 2 of 3"
    );
    let Some(limiter) = limiter else {
        ensure!(
            report.rate_limiters.is_empty(),
            "rate limiters {:?} on a backend without them",
            report.rate_limiters
        );
        return latch_opens(coordinator, prefix, ready.as_ref()).await;
    };
    let [limited] = report.rate_limiters.as_slice() else {
        return Err(format!(
            "rate limiters {:?}, expected one",
            report.rate_limiters
        ));
    };
    ensure!(
        limited.name == format!("{prefix}api") && limited.rate == Some(rate),
        "rate limiter {limited:?}, expected {prefix}api at {rate:?}"
    );
    // One of a burst of two is spent: the other is due now.
    ensure!(
        limited.next_due == Some(Duration::ZERO),
        "next permit due in {:?} with one of two spent",
        limited.next_due
    );

    ensure!(
        limiter
            .try_acquire(1)
            .await
            .map_err(fail("try_acquire"))?
            .is_granted(),
        "the second permit of a burst of two is refused"
    );
    latch_opens(coordinator, prefix, ready.as_ref()).await?;
    let report = status_of(coordinator, prefix).await?;
    // The burst is spent: the next permit is half an hour away (one per 30 min).
    let due = report
        .rate_limiters
        .first()
        .and_then(|limited| limited.next_due);
    ensure!(
        due.is_some_and(
            |due| due > Duration::from_secs(29 * 60) && due <= Duration::from_secs(30 * 60)
        ),
        "next permit due in {due:?} with the burst spent, expected about 30 min"
    );
    Ok(())
}

/// The report under `prefix`.
async fn status_of(coordinator: &Coordinator, prefix: &str) -> Result<StatusReport, String> {
    coordinator
        .status(prefix)
        .await
        .map_err(|error| format!("status({prefix:?}): {error}"))
}

/// Counts the latch `<prefix>ready` (3, counted down once) down to open and checks that
/// the report shows it open.
async fn latch_opens(
    coordinator: &Coordinator,
    prefix: &str,
    ready: &dyn distsync_core::CountDownLatch,
) -> Result<(), String> {
    for _ in 0..2 {
        ready.count_down().await.map_err(fail("count_down"))?;
    }
    let report = status_of(coordinator, prefix).await?;
    ensure!(
        report.latches.len() == 1 && report.latches[0].is_open(),
        "latches {:?}, expected {prefix}ready open",
        report.latches
    );
    Ok(())
}

/// The session TTL of [`check_session_expiry`]'s holder: long beside the check, so
/// that a loaded machine reads the report well inside it, and within every store's
/// default bound on session TTLs (Redis without persistence: 15 s).
const EXPIRY_TTL: Duration = Duration::from_secs(10);

/// Checks what the report says of a holder's session time left
/// ([`HoldStatus::expires_in`](distsync_core::status::HoldStatus::expires_in)): a lock
/// held through a session of a known TTL under `prefix` (a fresh one per run, ending
/// with `/`), and, where the store reports it, a time left above zero and at most the
/// TTL (a whole second more on a store that counts in whole seconds, as etcd's leases
/// do). Returns what was reported, so that each store's test says whether it must be
/// reported there.
///
/// # Errors
/// What differs from the expected report.
pub async fn check_session_expiry(
    coordinator: &Coordinator,
    prefix: &str,
) -> Result<Option<Duration>, String> {
    let ttl = EXPIRY_TTL.max(coordinator.capabilities().min_session_ttl);
    let session = coordinator
        .session_with(distsync_core::SessionOptions::with_ttl(ttl))
        .await
        .map_err(fail("session"))?;
    let name = format!("{prefix}expiry");
    let guard = coordinator
        .locker(&session, &name)
        .map_err(fail("locker"))?
        .lock()
        .await
        .map_err(fail("lock"))?;
    let report = coordinator.status(prefix).await.map_err(fail("status"))?;
    let holder = report
        .line(LineKind::Lock, &name)
        .and_then(|line| line.holders.first())
        .ok_or_else(|| format!("the held lock {name:?} is not in the report: {report:#?}"))?;
    let expires_in = holder.expires_in;
    if let Some(left) = expires_in {
        ensure!(
            !left.is_zero() && left <= ttl + Duration::from_secs(1),
            "a session of {ttl:?} just renewed or opened reports {left:?} left"
        );
    }
    guard.unlock().await.map_err(fail("unlock"))?;
    session.close().await.map_err(fail("close"))?;
    Ok(expires_in)
}
