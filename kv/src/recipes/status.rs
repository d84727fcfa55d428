//! Who holds what on a [`Kv`] store ([`distsync_core::Backend::status`] for etcd and memory):
//! one range read of the namespace at one revision, each key classified by the key
//! layouts of the recipes (see the [module docs](super)):
//!
//! - `<ns><name>/<lease hex>` attached to a lease: a lock or election entry; entries
//!   of one name, by create revision, are the line (the first holds, the token or
//!   term is its create revision); a line with a non-empty value is an election
//!   (the leader's value is its key's value), else a lock;
//! - `<ns>/unfair-lock/<n>/<lease hex>` attached to that lease: a waiter of the unfair
//!   lock `<n>`, listed among the waiters of lock `<n>`'s line after its fair entries
//!   (it never holds: the unfair holder is an entry of the line itself);
//! - `<ns>/rwlock/<n>/{read,write}/<unix nanos>`: read-write lock entries, granted
//!   by the recipe's rule (a writer with no older entry; a reader with no older
//!   writer); their age comes from the nanos in the key;
//! - `<ns>/semaphore/<n>/<lease hex>` (value: the permit count): the first `permits`
//!   by create revision hold;
//! - `<ns>/queue/<n>/i/...` ready items, `<ns>/queue/<n>/c/...` items claimed by a
//!   consumer and not yet handed over or acknowledged;
//! - `<ns>/barrier/<n>`: a held barrier; `<ns>/double-barrier/<n>/waiters/<nanos>`
//!   and `.../ready`: a double barrier's participants and readiness;
//! - `<ns>/counter/<n>` (value: decimal), `<ns>/latch/<n>` (value: `<initial>
//!   <remaining>`) and `<ns>/ratelimit/<n>` (value: `<tat µs> <rate fingerprint>`):
//!   counters, latches and rate limiters; a limiter's next due time is computed on the
//!   store's clock ([`Kv::clock`]), as its grants are.
//!
//! Anything else (STM keys, sequence guards, waiting consumers, another
//! application's keys) is not reported.
//!
//! With the time left asked for (`Backend::status_with_time_left`, the operators'
//! view), every hold's ([`HoldStatus::expires_in`]) is its lease's, by the store's
//! count ([`Kv::lease_time_to_live`]): one read per distinct lease of the report, a
//! bounded number at a time, after the range read; a lease gone in between has none.
//! The library's own reads (groups, shards, hand-over) do not ask, and cost one range
//! read.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};

use crate::kv::{KeyValue, Kv, LeaseId, Range};
use distsync_core::error::Result;
use distsync_core::rate_limiter::Rate;
use distsync_core::status::{
    CounterStatus, DoubleBarrierStatus, HoldMode, HoldStatus, LatchStatus, LeaderStatus, LineKind,
    LineStatus, QueueStatus, RateLimiterStatus, StatusReport,
};

use super::hold::fencing_token;
use super::key::{lease_hex, split_reserved, unescape, unix_nanos, Kind};

/// How many leases' time left a report reads at once: enough that a report of many
/// sessions costs a few round trips, few enough not to flood the store.
const LEASE_READS_AT_ONCE: usize = 16;

/// The time left of each lease a report shows (`None`: gone since the range read).
type TimeLeft = BTreeMap<LeaseId, Option<Duration>>;

/// One entry of a line, before the line's rule says whether it holds.
struct Entry {
    kv: KeyValue,
    mode: HoldMode,
    age: Option<Duration>,
    /// A waiter outside the line's order (an unfair waiter): never a holder.
    apart: bool,
}

/// The lines, queues and barriers found, keyed by kind and name.
#[derive(Default)]
struct Found {
    lines: BTreeMap<(LineKind, String), Vec<Entry>>,
    queues: BTreeMap<String, QueueStatus>,
    barriers: Vec<String>,
    double_barriers: BTreeMap<String, DoubleBarrierStatus>,
    counters: Vec<CounterStatus>,
    latches: Vec<LatchStatus>,
    rate_limiters: Vec<RateLimiterStatus>,
    /// The store's clock when the report is read, in microseconds, if it has one.
    store_clock_us: Option<u64>,
}

/// The report of everything under `namespace` whose name starts with `prefix`.
pub(super) async fn status(
    kv: &dyn Kv,
    namespace: &str,
    prefix: &str,
    with_time_left: bool,
) -> Result<StatusReport> {
    let everything = kv.range(Range::prefix(namespace)).await?;
    let now = unix_nanos();
    let mut found = Found {
        store_clock_us: kv
            .clock()
            .await?
            .map(|clock| u64::try_from(clock.as_micros()).unwrap_or(u64::MAX)),
        ..Found::default()
    };
    for entry in everything.kvs {
        let Some(relative) = entry.key.strip_prefix(namespace) else {
            continue;
        };
        match relative.strip_prefix('/') {
            Some(reserved) => found.reserved(reserved.to_owned(), entry, prefix, now),
            None => found.lock_or_election(relative.to_owned(), entry, prefix),
        }
    }
    let left = if with_time_left {
        time_left(kv, &found.lines).await?
    } else {
        TimeLeft::new()
    };
    let mut report = StatusReport::new(kv.backend(), prefix);
    for ((kind, name), mut entries) in found.lines {
        entries.sort_by_key(|entry| (entry.apart, entry.kv.create_revision));
        report.lines.push(line(kind, name, entries, &left));
    }
    report.queues = found.queues.into_values().collect();
    report.barriers = found.barriers;
    report.double_barriers = found.double_barriers.into_values().collect();
    report.counters = found.counters;
    report.latches = found.latches;
    report.rate_limiters = found.rate_limiters;
    report.sort();
    Ok(report)
}

/// The time left of every distinct lease of `lines`' entries, read
/// [`LEASE_READS_AT_ONCE`] at a time.
async fn time_left(
    kv: &dyn Kv,
    lines: &BTreeMap<(LineKind, String), Vec<Entry>>,
) -> Result<TimeLeft> {
    let leases: BTreeSet<LeaseId> = lines
        .values()
        .flatten()
        .map(|entry| entry.kv.lease)
        .collect();
    futures::stream::iter(leases)
        .map(|lease| async move { Ok((lease, kv.lease_time_to_live(lease).await?)) })
        .buffer_unordered(LEASE_READS_AT_ONCE)
        .try_collect()
        .await
}

impl Found {
    /// `<name>/<lease hex>` with a lease: an entry of a lock's or an election's line.
    fn lock_or_election(&mut self, relative: String, kv: KeyValue, prefix: &str) {
        let Some((name, hex)) = relative.rsplit_once('/') else {
            return;
        };
        if !on_own_lease(hex, &kv) || !name.starts_with(prefix) {
            return;
        }
        let (kind, mode) = (LineKind::Lock, HoldMode::Exclusive);
        self.enter(kind, name.to_owned(), kv, mode, None, false);
    }

    /// Adds the entry `kv` (`apart` from the line's order or not) to the line `kind`
    /// `name`.
    fn enter(
        &mut self,
        kind: LineKind,
        name: String,
        kv: KeyValue,
        mode: HoldMode,
        age: Option<Duration>,
        apart: bool,
    ) {
        let entry = Entry {
            kv,
            mode,
            age,
            apart,
        };
        self.lines.entry((kind, name)).or_default().push(entry);
    }

    /// `<kind>/<escaped name>[/<rest>]`, a key after `<ns>/`.
    fn reserved(&mut self, reserved: String, kv: KeyValue, prefix: &str, now: i128) {
        let Some((word, rest)) = reserved.split_once('/') else {
            return;
        };
        if matches!(word, "counter" | "latch" | super::rate_limiter::WORD) {
            if let Some(name) = unescape(rest).filter(|name| name.starts_with(prefix)) {
                self.single_key(word, name, &kv.value);
            }
            return;
        }
        let Some((kind, name, tail)) = split_reserved(&reserved) else {
            return;
        };
        if !name.starts_with(prefix) {
            return;
        }
        match (kind, tail) {
            (Kind::RwLock, Some(tail)) => {
                let (mode, nanos) = match tail.split_once('/') {
                    Some(("read", nanos)) => (HoldMode::Shared, nanos),
                    Some(("write", nanos)) => (HoldMode::Exclusive, nanos),
                    _ => return,
                };
                if kv.lease == 0 {
                    return;
                }
                let age = age(nanos, now);
                self.enter(LineKind::RwLock, name, kv, mode, age, false);
            }
            (Kind::Semaphore, Some(hex)) if on_own_lease(hex, &kv) => {
                self.enter(LineKind::Semaphore, name, kv, HoldMode::Permit, None, false);
            }
            (Kind::UnfairLock, Some(hex)) if on_own_lease(hex, &kv) => {
                self.enter(LineKind::Lock, name, kv, HoldMode::Exclusive, None, true);
            }
            (Kind::Queue, Some(tail)) => {
                let queue = self
                    .queues
                    .entry(name.clone())
                    .or_insert_with(|| QueueStatus::new(name, 0, 0));
                if tail.starts_with("i/") {
                    queue.ready += 1;
                } else if tail.starts_with("c/") {
                    queue.in_flight += 1;
                }
            }
            (Kind::Barrier, None) => self.barriers.push(name),
            (Kind::DoubleBarrier, Some(tail)) => {
                let barrier = self
                    .double_barriers
                    .entry(name.clone())
                    .or_insert_with(|| DoubleBarrierStatus::new(name, 0, false));
                if tail == "ready" {
                    barrier.ready = true;
                } else if tail.starts_with("waiters/") && kv.lease != 0 {
                    barrier.participants += 1;
                }
            }
            _ => {}
        }
    }

    /// The counter, latch or rate limiter `name` (by `word`), stored in one key holding
    /// `value`; a value its recipe did not write is not reported.
    fn single_key(&mut self, word: &str, name: String, value: &[u8]) {
        let Ok(text) = std::str::from_utf8(value) else {
            return;
        };
        match word {
            "counter" => {
                if let Ok(count) = text.parse() {
                    self.counters.push(CounterStatus::new(name, count));
                }
            }
            "latch" => {
                let parsed = text.split_once(' ').and_then(|(initial, remaining)| {
                    Some((initial.parse().ok()?, remaining.parse().ok()?))
                });
                if let Some((initial, remaining)) = parsed {
                    self.latches
                        .push(LatchStatus::new(name, initial, remaining));
                }
            }
            _ => {
                let Some((tat, fingerprint)) = super::rate_limiter::parse(value) else {
                    return;
                };
                let rate = Rate::from_fingerprint(fingerprint);
                let next_due = rate
                    .zip(self.store_clock_us)
                    .map(|(rate, now)| rate.next_due(Some(tat), now));
                self.rate_limiters.push(
                    RateLimiterStatus::new(name)
                        .with_rate(rate)
                        .with_next_due(next_due),
                );
            }
        }
    }
}

/// Whether `kv` is attached to a lease, the one `hex` names (a key ending in its
/// lease id).
fn on_own_lease(hex: &str, kv: &KeyValue) -> bool {
    kv.lease != 0 && hex == lease_hex(kv.lease)
}

/// A line from its entries in create-revision order (those apart from the line's order
/// last), split into holders and waiters by the rule of its kind; entries apart wait.
/// Each entry's time left is its lease's in `left`.
fn line(kind: LineKind, name: String, entries: Vec<Entry>, left: &TimeLeft) -> LineStatus {
    // A semaphore's entries hold its permit count.
    let count = entries.first().filter(|_| kind == LineKind::Semaphore);
    let permits = count.and_then(|entry| std::str::from_utf8(&entry.kv.value).ok()?.parse().ok());
    // A lock's line whose entries carry values is an election's (see the module docs).
    let kind = if kind == LineKind::Lock && entries.iter().any(|entry| !entry.kv.value.is_empty()) {
        LineKind::Election
    } else {
        kind
    };
    let mut holders = Vec::new();
    let mut waiters = Vec::new();
    let mut writer_ahead = false;
    for (rank, entry) in entries.into_iter().enumerate() {
        let holds = !entry.apart
            && match entry.mode {
                HoldMode::Exclusive => rank == 0,
                HoldMode::Shared => !writer_ahead,
                // Permits, and any mode a later primitive adds: the first `permits`.
                _ => rank < permits.unwrap_or(1),
            };
        if entry.mode == HoldMode::Exclusive {
            writer_ahead = true;
        }
        let token = (holds && entry.mode != HoldMode::Shared)
            .then(|| fencing_token(entry.kv.create_revision));
        let status = HoldStatus::new(entry.kv.key.clone(), entry.mode)
            .with_session(Some(lease_hex(entry.kv.lease)))
            .with_token(token)
            .with_age(entry.age)
            .with_expires_in(left.get(&entry.kv.lease).copied().flatten());
        if holds {
            holders.push((status, entry.kv));
        } else {
            waiters.push(status);
        }
    }
    let leader = holders
        .first()
        .filter(|_| kind == LineKind::Election)
        .map(|(status, kv)| LeaderStatus::new(kv.value.clone(), status.token.unwrap_or_default()));
    let mut line = LineStatus::new(kind, name)
        .with_leader(leader)
        .with_permits(permits);
    line.holders = holders.into_iter().map(|(status, _)| status).collect();
    line.waiters = waiters;
    line
}

/// The age of a key named after its creation time in unix nanos.
fn age(nanos: &str, now: i128) -> Option<Duration> {
    let created: i128 = nanos.parse().ok()?;
    let elapsed = u64::try_from(now.checked_sub(created)?.max(0)).ok()?;
    Some(Duration::from_nanos(elapsed))
}

#[cfg(test)]
mod tests {
    use distsync_core::Primitives;
    use std::time::Duration;

    use crate::memory::MemoryBackend;
    use distsync_core::backend::Backend;
    use distsync_core::name::Name;
    use distsync_core::status::{HoldMode, LineKind};

    fn name(name: &str) -> Name {
        Name::new(name).unwrap()
    }

    /// Waits (bounded) until the report shows `waiters` waiters on the line.
    async fn until_waiters(
        backend: &MemoryBackend,
        kind: LineKind,
        line: &str,
        waiters: usize,
    ) -> distsync_core::status::StatusReport {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let report = backend.status("").await.unwrap();
            if report
                .line(kind, line)
                .is_some_and(|line| line.waiters.len() == waiters)
            {
                return report;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never saw {waiters} waiters: {report:?}"
            );
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_held_lock_its_waiters_in_order_and_a_leader() {
        let backend = MemoryBackend::new();
        let holder = backend.session(Default::default()).await.unwrap();
        let first = backend.session(Default::default()).await.unwrap();
        let second = backend.session(Default::default()).await.unwrap();
        let guard = backend
            .locker(&holder, name("jobs/a"))
            .unwrap()
            .lock()
            .await
            .unwrap();
        let first_locker = backend.locker(&first, name("jobs/a")).unwrap();
        let first_wait = tokio::spawn(async move { first_locker.lock().await });
        until_waiters(&backend, LineKind::Lock, "jobs/a", 1).await;
        let second_locker = backend.locker(&second, name("jobs/a")).unwrap();
        let second_wait = tokio::spawn(async move { second_locker.lock().await });
        until_waiters(&backend, LineKind::Lock, "jobs/a", 2).await;

        let leadership = backend
            .election(&holder, name("leader"))
            .unwrap()
            .campaign("node-1")
            .await
            .unwrap();
        let report = backend.status("").await.unwrap();
        let lock = report.line(LineKind::Lock, "jobs/a").unwrap();
        assert_eq!(lock.holders.len(), 1);
        assert_eq!(lock.holders[0].key, guard.key());
        assert_eq!(lock.holders[0].token, Some(guard.token()));
        assert_eq!(
            lock.holders[0].session.as_deref(),
            Some(holder.id().to_string().as_str())
        );
        let waiting: Vec<_> = lock.waiters.iter().map(|w| w.session.clone()).collect();
        assert_eq!(
            waiting,
            [Some(first.id().to_string()), Some(second.id().to_string())]
        );
        assert!(lock.waiters.iter().all(|w| w.token.is_none()));
        let election = report.line(LineKind::Election, "leader").unwrap();
        let leader = election.leader.as_ref().unwrap();
        assert_eq!(leader.value, "node-1");
        assert_eq!(leader.term, leadership.term());

        // The prefix filters by name.
        let only_jobs = backend.status("jobs/").await.unwrap();
        assert_eq!(only_jobs.lines.len(), 1);
        assert!(backend.status("nothing/").await.unwrap().is_empty());

        guard.unlock().await.unwrap();
        let next = first_wait.await.unwrap().unwrap();
        let report = until_waiters(&backend, LineKind::Lock, "jobs/a", 1).await;
        let lock = report.line(LineKind::Lock, "jobs/a").unwrap();
        assert_eq!(lock.holders[0].token, Some(next.token()));
        next.unlock().await.unwrap();
        second_wait.await.unwrap().unwrap().unlock().await.unwrap();
        leadership.resign().await.unwrap();
        assert!(backend.status("").await.unwrap().is_empty());
    }

    /// Each hold reports its own session's time left: the holder's within its TTL, the
    /// waiter's (a session twice as long) above the holder's TTL.
    #[tokio::test]
    async fn each_hold_reports_its_sessions_time_left() {
        use distsync_core::SessionOptions;

        let backend = MemoryBackend::new();
        let ttl = Duration::from_secs(30);
        let holder = backend
            .session(SessionOptions::with_ttl(ttl))
            .await
            .unwrap();
        let waiter = backend
            .session(SessionOptions::with_ttl(ttl * 2))
            .await
            .unwrap();
        let guard = backend
            .locker(&holder, name("held"))
            .unwrap()
            .lock()
            .await
            .unwrap();
        let waiting = backend.locker(&waiter, name("held")).unwrap();
        let wait = tokio::spawn(async move { waiting.lock().await });
        until_waiters(&backend, LineKind::Lock, "held", 1).await;
        // The library's own reads do not pay for it; the operators' view does.
        let plain = backend.status("").await.unwrap();
        let plain = plain.line(LineKind::Lock, "held").unwrap();
        assert_eq!(plain.holders[0].expires_in, None);
        let report = backend.status_with_time_left("").await.unwrap();
        let line = report.line(LineKind::Lock, "held").unwrap();
        let held = line.holders[0].expires_in.expect("the holder's time left");
        assert!(!held.is_zero() && held <= ttl, "{held:?} left of {ttl:?}");
        let waits = line.waiters[0].expires_in.expect("the waiter's time left");
        assert!(
            waits > ttl && waits <= ttl * 2,
            "{waits:?} left of {:?}",
            ttl * 2
        );

        guard.unlock().await.unwrap();
        wait.await.unwrap().unwrap().unlock().await.unwrap();
        holder.close().await.unwrap();
        waiter.close().await.unwrap();
    }

    #[tokio::test]
    async fn unfair_waiters_wait_in_the_locks_line_after_its_fair_ones() {
        let backend = MemoryBackend::new();
        let holder = backend.session(Default::default()).await.unwrap();
        let unfair = backend.session(Default::default()).await.unwrap();
        let fair = backend.session(Default::default()).await.unwrap();
        let holding = backend.locker(&holder, name("l")).unwrap();
        let guard = holding.lock().await.unwrap();
        let unfair_locker = backend.unfair_locker(&unfair, name("l")).unwrap();
        let unfair_wait = tokio::spawn(async move { unfair_locker.lock().await });
        until_waiters(&backend, LineKind::Lock, "l", 1).await;
        let fair_locker = backend.locker(&fair, name("l")).unwrap();
        let fair_wait = tokio::spawn(async move { fair_locker.lock().await });
        let report = until_waiters(&backend, LineKind::Lock, "l", 2).await;
        let lock = report.line(LineKind::Lock, "l").unwrap();
        assert_eq!(lock.holders.len(), 1);
        assert_eq!(lock.holders[0].key, guard.key());
        // The unfair waiter came first but waits behind the fair line.
        let waiting: Vec<_> = lock
            .waiters
            .iter()
            .map(|w| (w.key.clone(), w.session.clone(), w.mode, w.token))
            .collect();
        let fair_key = format!("l/{}", fair.id());
        let unfair_key = format!("/unfair-lock/l/{}", unfair.id());
        assert_eq!(
            waiting,
            [
                (
                    fair_key,
                    Some(fair.id().to_string()),
                    HoldMode::Exclusive,
                    None
                ),
                (
                    unfair_key,
                    Some(unfair.id().to_string()),
                    HoldMode::Exclusive,
                    None
                ),
            ]
        );
        assert_eq!(holding.contenders().await.unwrap(), 3);
        guard.unlock().await.unwrap();
        fair_wait.await.unwrap().unwrap().unlock().await.unwrap();
        unfair_wait.await.unwrap().unwrap().unlock().await.unwrap();
        assert!(backend.status("").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn rwlock_semaphore_queue_and_barriers() {
        let backend = MemoryBackend::new();
        let session = backend.session(Default::default()).await.unwrap();
        let other = backend.session(Default::default()).await.unwrap();
        let rw = backend.rwlock(&session, name("rw")).unwrap();
        let read = rw.read().await.unwrap();
        let writer = backend.rwlock(&other, name("rw")).unwrap();
        let write_wait = tokio::spawn(async move { writer.write().await });
        let report = until_waiters(&backend, LineKind::RwLock, "rw", 1).await;
        let line = report.line(LineKind::RwLock, "rw").unwrap();
        assert_eq!(line.holders[0].mode, HoldMode::Shared);
        assert_eq!(line.holders[0].key, read.key());
        assert!(line.holders[0].age.is_some());
        assert_eq!(line.waiters[0].mode, HoldMode::Exclusive);

        let permits = std::num::NonZeroUsize::new(2).unwrap();
        let sem = backend.semaphore(&session, name("pool"), permits).unwrap();
        let permit = sem.acquire().await.unwrap();
        let queue = backend.queue(name("jobs")).unwrap();
        queue.enqueue("a").await.unwrap();
        queue.enqueue("b").await.unwrap();
        backend.barrier(name("gate")).unwrap().hold().await.unwrap();

        let report = backend.status("").await.unwrap();
        let pool = report.line(LineKind::Semaphore, "pool").unwrap();
        assert_eq!(pool.permits, Some(2));
        assert_eq!(pool.holders[0].token, Some(permit.token()));
        assert_eq!(report.queues.len(), 1);
        assert_eq!(report.queues[0].name, "jobs");
        assert_eq!(report.queues[0].ready, 2);
        assert_eq!(report.barriers, ["gate"]);

        read.unlock().await.unwrap();
        write_wait.await.unwrap().unwrap().unlock().await.unwrap();
        permit.release().await.unwrap();
    }

    #[tokio::test]
    async fn counters_latches_and_rate_limiters() {
        use distsync_core::rate_limiter::Rate;
        use distsync_core::Coordinator;

        let coordinator = Coordinator::new(MemoryBackend::new());
        let visits = coordinator.counter("app/visits").unwrap();
        visits.add(41).await.unwrap();
        visits.add(1).await.unwrap();
        coordinator
            .counter("other/c")
            .unwrap()
            .add(1)
            .await
            .unwrap();
        let ready = coordinator.latch("app/ready", 3).unwrap();
        ready.count_down().await.unwrap();
        // Never counted down: nothing in the store, nothing to list.
        let _unused = coordinator.latch("app/unused", 2).unwrap();
        let rate = Rate::new(2, Duration::from_secs(3600)).unwrap();
        let limiter = coordinator.rate_limiter("app/api", rate).unwrap();
        assert!(limiter.try_acquire(1).await.unwrap().is_granted());

        let report = coordinator.status("app/").await.unwrap();
        assert!(!report.is_empty());
        assert_eq!(report.counters.len(), 1, "{report:?}");
        assert_eq!(report.counters[0].name, "app/visits");
        assert_eq!(report.counters[0].value, 42);
        assert_eq!(report.latches.len(), 1, "{report:?}");
        assert_eq!(
            (report.latches[0].name.as_str(), report.latches[0].initial),
            ("app/ready", 3)
        );
        assert_eq!(report.latches[0].count, 2);
        assert!(!report.latches[0].is_open());
        let limited = &report.rate_limiters[0];
        assert_eq!(limited.name, "app/api");
        assert_eq!(limited.rate, Some(rate));
        // One of a burst of two is spent: the other is due now.
        assert_eq!(limited.next_due, Some(Duration::ZERO));

        assert!(limiter.try_acquire(1).await.unwrap().is_granted());
        ready.count_down().await.unwrap();
        ready.count_down().await.unwrap();
        let report = coordinator.status("app/").await.unwrap();
        assert!(report.latches[0].is_open());
        // The burst is spent: the next permit is half an hour away (one per 30 min).
        let due = report.rate_limiters[0].next_due.unwrap();
        assert!(
            due > Duration::from_secs(29 * 60) && due <= Duration::from_secs(30 * 60),
            "{due:?}"
        );
    }
}
