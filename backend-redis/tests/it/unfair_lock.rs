//! The unfair lock (`src/unfair_lock.rs`) against a real Redis (`DISTSYNC_REDIS_URL`;
//! skipped loudly when unset, a failure under `CI=true`), each test in a namespace of its
//! own: exclusion and tokens under contention, beside the fair lock of the same name
//! too, `try_lock`, a revoked holder, a cancelled waiter, one wake-up per release at 100
//! waiters, `status`, guarded writes; then the same lock on a Redis Cluster
//! (`DISTSYNC_REDIS_CLUSTER_URL`) and with replica acknowledgement under Sentinel
//! (`DISTSYNC_REDIS_SENTINEL_URL`).
//!
//! `unfair_cycle_figures` (ignored) prints the uncontended cycle's p50 beside the fair
//! lock's and the raw `SET NX PX` + compare-and-delete pair's, measured by turns;
//! `cycle_instructions_unfair` and `cycle_instructions_fair` (ignored) run one of the
//! locks alone, `DISTSYNC_CYCLES` times, for an instruction count per cycle under
//! `valgrind --tool=callgrind` (two counts, subtracted, leave the set-up out).

use crate::support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use distsync_core::status::{HoldMode, LineKind};
use distsync_core::{Coordinator, Error, LockOptions, Locker, Name, SessionOptions};
use distsync_redis::redis;
use support::{server_url, unique_namespace, with_namespace, CRASH_TTL, RENEWED_TTL};

const SHORT: Duration = Duration::from_secs(10);

struct Fixture {
    url: String,
    namespace: String,
    coordinator: Coordinator,
}

impl Fixture {
    async fn new() -> Option<Self> {
        let url = with_namespace(&server_url()?, &unique_namespace("unfair"));
        let namespace = url
            .split("namespace=")
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        Some(Self {
            coordinator: distsync::connect(&url).await.unwrap(),
            namespace,
            url,
        })
    }

    /// Another client of the same store (another "process").
    async fn other_client(&self) -> Coordinator {
        distsync::connect(&self.url).await.unwrap()
    }

    async fn raw(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(server_url().unwrap())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// The store key `{<ns><name>}:lock<suffix>`.
    fn key(&self, name: &str, suffix: &str) -> String {
        format!("{{{}{name}}}:lock{suffix}", self.namespace)
    }

    /// How many keys of the lock `name` match `{...}:lock<pattern>`.
    async fn keys_matching(&self, name: &str, pattern: &str) -> usize {
        let mut raw = self.raw().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(self.key(name, pattern))
            .query_async(&mut raw)
            .await
            .unwrap();
        keys.len()
    }
}

macro_rules! fixture {
    () => {
        match Fixture::new().await {
            Some(fixture) => fixture,
            None => return,
        }
    };
}

fn unfair() -> LockOptions {
    LockOptions::new().unfair()
}

async fn within<T>(limit: Duration, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .expect("did not finish in time")
}

/// Waits (bounded) until `locker` counts `n` contenders.
async fn wait_for_contenders(locker: &dyn Locker, n: usize) {
    let deadline = Instant::now() + SHORT;
    loop {
        let now = locker.contenders().await.unwrap();
        if now == n {
            return;
        }
        assert!(Instant::now() < deadline, "{now} contenders, never {n}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `clients` clients, each with a session of its own, lock and unlock `name` `rounds`
/// times (every `fair_every`-th client fairly, the others unfairly, if given), checking
/// that no two hold at once; returns every client's tokens, in grant order.
async fn contend(
    f: &Fixture,
    name: &'static str,
    clients: usize,
    rounds: usize,
    fair_every: Option<usize>,
) -> Vec<Vec<u64>> {
    let inside = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for client in 0..clients {
        let coordinator = f.other_client().await;
        let inside = Arc::clone(&inside);
        let fair = fair_every.is_some_and(|every| client % every == 0);
        tasks.push(tokio::spawn(async move {
            let session = coordinator.session().await.unwrap();
            let options = if fair { LockOptions::new() } else { unfair() };
            let locker = coordinator.locker_with(&session, name, options).unwrap();
            let mut tokens = Vec::new();
            for _ in 0..rounds {
                let guard = locker.lock().await.unwrap();
                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                tokio::task::yield_now().await;
                inside.fetch_sub(1, Ordering::SeqCst);
                tokens.push(guard.token().0);
                guard.unlock().await.unwrap();
            }
            session.close().await.unwrap();
            tokens
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.push(within(Duration::from_secs(60), task).await.unwrap());
    }
    all
}

/// Every client's tokens grow, and no two grants share one.
fn check_tokens(tokens: &[Vec<u64>], grants: usize) {
    for mine in tokens {
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "{mine:?}");
    }
    let mut all: Vec<u64> = tokens.iter().flatten().copied().collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), grants, "every grant has its own token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excludes_under_contention_and_tokens_grow() {
    let f = fixture!();
    let tokens = contend(&f, "x", 5, 20, None).await;
    check_tokens(&tokens, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fair_and_unfair_lockers_of_one_name_exclude_each_other_and_share_tokens() {
    let f = fixture!();
    // Clients 0, 2 and 4 lock fairly, 1 and 3 unfairly.
    let tokens = contend(&f, "mixed", 5, 15, Some(2)).await;
    check_tokens(&tokens, 75);
}

/// Sessions of 15 s: a waiter left to its safety net (the holder's TTL) would miss
/// the bound of a hand-over, 2 s.
const HAND_OVER: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfair_holder_holds_off_the_fair_line_and_the_other_way_round() {
    let f = fixture!();
    let other = f.other_client().await;
    let (a, b) = (
        f.coordinator.session().await.unwrap(),
        other.session().await.unwrap(),
    );
    let unfair_a = f.coordinator.locker_with(&a, "m", unfair()).unwrap();
    let fair_b = other.locker(&b, "m").unwrap();
    // Unfair holds: the fair contender waits, and gets it at the release.
    let held = unfair_a.lock().await.unwrap();
    assert!(fair_b.try_lock().await.unwrap().is_none());
    let waiting = tokio::spawn({
        let fair_b = Arc::clone(&fair_b);
        async move { fair_b.lock().await.unwrap() }
    });
    // Either locker counts both sides: the holder and the waiter.
    wait_for_contenders(unfair_a.as_ref(), 2).await;
    wait_for_contenders(fair_b.as_ref(), 2).await;
    assert!(!waiting.is_finished());
    let first = held.token();
    let released = Instant::now();
    held.unlock().await.unwrap();
    let fair = within(SHORT, waiting).await.unwrap();
    assert!(released.elapsed() < HAND_OVER, "{:?}", released.elapsed());
    assert!(fair.token() > first);
    // Fair holds: the unfair contender waits (behind the fair line), then gets it.
    assert!(unfair_a.try_lock().await.unwrap().is_none());
    let waiting = tokio::spawn({
        let unfair_a = Arc::clone(&unfair_a);
        async move { unfair_a.lock().await.unwrap() }
    });
    wait_for_contenders(unfair_a.as_ref(), 2).await;
    wait_for_contenders(fair_b.as_ref(), 2).await;
    assert!(!waiting.is_finished());
    let second = fair.token();
    let released = Instant::now();
    fair.unlock().await.unwrap();
    let unfair = within(SHORT, waiting).await.unwrap();
    assert!(released.elapsed() < HAND_OVER, "{:?}", released.elapsed());
    assert!(unfair.token() > second);
    unfair.unlock().await.unwrap();
}

/// An unfair holder, an unfair waiter, then a fair one: the release goes to the fair
/// line, and the fair holder's release to the unfair waiter, each promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfair_waiters_follow_the_fair_line_they_wait_behind() {
    let f = fixture!();
    let other = f.other_client().await;
    let (a, b, c) = (
        f.coordinator.session().await.unwrap(),
        other.session().await.unwrap(),
        other.session().await.unwrap(),
    );
    let holder = f.coordinator.locker_with(&a, "behind", unfair()).unwrap();
    let unfair_b = other.locker_with(&b, "behind", unfair()).unwrap();
    let fair_c = other.locker(&c, "behind").unwrap();
    let held = holder.lock().await.unwrap();
    let unfair_waiting = tokio::spawn({
        let unfair_b = Arc::clone(&unfair_b);
        async move { unfair_b.lock().await.unwrap() }
    });
    wait_for_contenders(holder.as_ref(), 2).await;
    let fair_waiting = tokio::spawn({
        let fair_c = Arc::clone(&fair_c);
        async move { fair_c.lock().await.unwrap() }
    });
    wait_for_contenders(holder.as_ref(), 3).await;
    wait_for_contenders(fair_c.as_ref(), 3).await;
    let released = Instant::now();
    held.unlock().await.unwrap();
    let fair = within(SHORT, fair_waiting).await.unwrap();
    assert!(released.elapsed() < HAND_OVER, "{:?}", released.elapsed());
    assert!(!unfair_waiting.is_finished());
    let fair_token = fair.token();
    let released = Instant::now();
    fair.unlock().await.unwrap();
    let unfair = within(SHORT, unfair_waiting).await.unwrap();
    assert!(released.elapsed() < HAND_OVER, "{:?}", released.elapsed());
    assert!(unfair.token() > fair_token);
    unfair.unlock().await.unwrap();
    assert_eq!(holder.contenders().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_lock_takes_a_free_lock_only() {
    let f = fixture!();
    let session = f.coordinator.session().await.unwrap();
    let other = f.coordinator.session().await.unwrap();
    let mine = f.coordinator.locker_with(&session, "t", unfair()).unwrap();
    let theirs = f.coordinator.locker_with(&other, "t", unfair()).unwrap();
    let guard = mine.try_lock().await.unwrap().expect("free");
    assert_eq!(guard.key(), f.key("t", ":u"));
    assert!(theirs.try_lock().await.unwrap().is_none());
    // Another acquisition through the holder's own session waits its turn in-process.
    assert!(mine.try_lock().await.unwrap().is_none());
    // A try never joins the wait line.
    assert_eq!(mine.contenders().await.unwrap(), 1);
    let token = guard.token();
    guard.unlock().await.unwrap();
    let next = theirs.try_lock().await.unwrap().expect("free again");
    assert!(next.token() > token);
    next.unlock().await.unwrap();
    assert_eq!(mine.contenders().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_holder_frees_the_lock_at_once_and_learns_it() {
    let f = fixture!();
    // A TTL far longer than the test's bound: the waiter's safety net would come late.
    let session = f
        .coordinator
        .session_with(SessionOptions::with_ttl(Duration::from_secs(15)))
        .await
        .unwrap();
    let guard = f
        .coordinator
        .locker_with(&session, "r", unfair())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let other = f.other_client().await;
    let waiter_session = other.session().await.unwrap();
    let waiter = other.locker_with(&waiter_session, "r", unfair()).unwrap();
    let waiting = tokio::spawn({
        let waiter = Arc::clone(&waiter);
        async move { waiter.lock().await.map(|guard| guard.token()) }
    });
    wait_for_contenders(waiter.as_ref(), 2).await;
    let started = Instant::now();
    other.backend().revoke_session(session.id()).await.unwrap();
    // The revoke releases the hold and wakes the head of the wait line.
    let token = within(SHORT, waiting).await.unwrap().unwrap();
    assert!(token > guard.token());
    within(Duration::from_secs(2), guard.lost()).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(guard.unlock().await, Err(Error::SessionLost)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_lock_goes_to_the_next_with_a_higher_token() {
    let f = fixture!();
    let session = f.coordinator.session().await.unwrap();
    let guard = f
        .coordinator
        .locker_with(&session, "b", unfair())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let other = f.other_client().await;
    let broken = other
        .backend()
        .break_lock(&Name::new("b").unwrap())
        .await
        .unwrap()
        .expect("held");
    assert_eq!(broken.session, session.id());
    assert_eq!(broken.token, Some(guard.token()));
    within(Duration::from_secs(2), guard.lost()).await;
    let theirs = other.session().await.unwrap();
    let next = other
        .locker_with(&theirs, "b", unfair())
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .expect("free once broken");
    assert!(next.token() > guard.token());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_holder_frees_the_lock_within_its_ttl() {
    let f = fixture!();
    let (token, key) = support::crashed_holder(f.url.clone(), |coordinator, session| async move {
        let guard = coordinator
            .locker_with(&session, "crash", LockOptions::new().unfair())?
            .lock()
            .await?;
        let held = (guard.token(), guard.key().to_owned());
        std::mem::forget(guard);
        Ok(held)
    });
    let session = f.coordinator.session().await.unwrap();
    let started = Instant::now();
    let guard = within(
        SHORT,
        f.coordinator
            .locker_with(&session, "crash", unfair())
            .unwrap()
            .lock(),
    )
    .await
    .unwrap();
    // CRASH_TTL and a second: the waiter asks again when the holder's TTL runs out.
    assert!(
        started.elapsed() < CRASH_TTL + Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(guard.token() > token);
    assert_eq!(guard.key(), key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_key_taken_over_makes_the_session_lost() {
    let f = fixture!();
    let session = f
        .coordinator
        // Renewed, not crashing: the session must outlive its own set-up on a loaded
        // runner, so that what ends it is the key taken over.
        .session_with(SessionOptions::with_ttl(RENEWED_TTL))
        .await
        .unwrap();
    let guard = f
        .coordinator
        .locker_with(&session, "over", unfair())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let mut raw = f.raw().await;
    let _: () = redis::cmd("SET")
        .arg(guard.key())
        .arg("someone else")
        .query_async(&mut raw)
        .await
        .unwrap();
    // Seen at the next renewal, or at the latest when the session's client-side
    // deadline passes without a renewal that shows the hold: within the TTL.
    within(RENEWED_TTL + Duration::from_secs(2), session.lost()).await;
    assert!(guard.is_lost());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_waiter_leaves_nothing_behind() {
    let f = fixture!();
    let session = f.coordinator.session().await.unwrap();
    let holder = f
        .coordinator
        .locker_with(&session, "c", unfair())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let other = f.coordinator.session().await.unwrap();
    let waiter = f.coordinator.locker_with(&other, "c", unfair()).unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), waiter.lock())
            .await
            .is_err()
    );
    // The dropped waiter leaves the wait line in the background.
    wait_for_contenders(waiter.as_ref(), 1).await;
    let deadline = Instant::now() + SHORT;
    while f.keys_matching("c", ":u[mq]*").await != 0 {
        assert!(Instant::now() < deadline, "the waiter's keys stayed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    holder.unlock().await.unwrap();
    let guard = waiter.try_lock().await.unwrap().expect("free");
    guard.unlock().await.unwrap();
    // Nothing is left but the counter and the marker, which idle out.
    assert_eq!(f.keys_matching("c", ":u*").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_s_own_acquisitions_take_turns() {
    let f = fixture!();
    let session = f.coordinator.session().await.unwrap();
    let locker = f
        .coordinator
        .locker_with(&session, "turns", unfair())
        .unwrap();
    let inside = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let locker = Arc::clone(&locker);
            let inside = Arc::clone(&inside);
            tokio::spawn(async move {
                for _ in 0..10 {
                    let guard = locker.lock().await.unwrap();
                    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                    tokio::task::yield_now().await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                    guard.unlock().await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        within(SHORT, task).await.unwrap();
    }
    // The session still holds nothing and is alive (no hold of it went missing).
    assert!(!session.is_lost());
    assert_eq!(locker.contenders().await.unwrap(), 0);
}

/// 100 waiters, each on a session of its own, and a holder: every release wakes at most
/// one waiter (the head of the wait line), so the wake-ups summed over the waiters'
/// handles stay within the releases made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_wakes_one_waiter_not_the_herd() {
    const WAITERS: usize = 100;
    let f = fixture!();
    let session = f.coordinator.session().await.unwrap();
    let holder = f
        .coordinator
        .locker_with(&session, "herd", unfair())
        .unwrap();
    let held = holder.lock().await.unwrap();
    let clients = [f.other_client().await, f.other_client().await];
    let mut lockers = Vec::new();
    let mut tasks = Vec::new();
    let released = Arc::new(AtomicU64::new(0));
    for i in 0..WAITERS {
        let coordinator = &clients[i % clients.len()];
        let session = coordinator.session().await.unwrap();
        let locker = coordinator.locker_with(&session, "herd", unfair()).unwrap();
        lockers.push(Arc::clone(&locker));
        let released = Arc::clone(&released);
        tasks.push(tokio::spawn(async move {
            let guard = locker.lock().await.unwrap();
            guard.unlock().await.unwrap();
            released.fetch_add(1, Ordering::SeqCst);
            session.close().await.unwrap();
        }));
    }
    wait_for_contenders(holder.as_ref(), WAITERS + 1).await;
    held.unlock().await.unwrap();
    for task in tasks {
        within(Duration::from_secs(60), task).await.unwrap();
    }
    let releases = released.load(Ordering::SeqCst) + 1;
    let wakeups: u64 = lockers.iter().map(|locker| locker.wakeups()).sum();
    eprintln!("unfair lock, {WAITERS} waiters: {wakeups} wake-ups over {releases} releases");
    assert!(
        wakeups <= releases,
        "{wakeups} wake-ups for {releases} releases"
    );
    assert!(
        wakeups > 0,
        "nobody was woken: every waiter waited for its safety net"
    );
}

/// The channels a handle of the lock `name` listens on for its wake-ups
/// (`{<ns><name>}:lock:uw:<wake id>`), as the server lists them.
async fn wake_channels(f: &Fixture, name: &str) -> Vec<String> {
    let mut raw = f.raw().await;
    redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg(format!("*{}", f.key(name, ":uw:*")))
        .query_async(&mut raw)
        .await
        .unwrap()
}

/// Polls (bounded) until `name`'s wake-up channels number `n`.
async fn wait_for_wake_channels(f: &Fixture, name: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + SHORT;
    loop {
        let channels = wake_channels(f, name).await;
        if channels.len() == n {
            return channels;
        }
        assert!(Instant::now() < deadline, "{channels:?}, never {n} of them");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_keeps_its_wake_up_channel_between_waits_and_is_woken_on_it() {
    let f = fixture!();
    // A waiter that missed its wake-up would ask again only when the holder's TTL ran
    // out (its safety net), granted then without a wake-up counted.
    let ttl = SessionOptions::with_ttl(Duration::from_secs(15));
    let holding = f.coordinator.session_with(ttl).await.unwrap();
    let holder = f.coordinator.locker_with(&holding, "k", unfair()).unwrap();
    let other = f.other_client().await;
    let waiting = other.session().await.unwrap();
    let waiter = other.locker_with(&waiting, "k", unfair()).unwrap();
    let mut channel = None;
    for round in 1..=3 {
        let held = holder.lock().await.unwrap();
        let wait = tokio::spawn({
            let waiter = Arc::clone(&waiter);
            async move { waiter.lock().await.unwrap().unlock().await.unwrap() }
        });
        wait_for_contenders(holder.as_ref(), 2).await;
        let woken = waiter.wakeups();
        held.unlock().await.unwrap();
        within(Duration::from_secs(30), wait).await.unwrap();
        // The first wait may be granted by the re-check it makes once subscribed; a
        // later one waits for its wake-up alone.
        assert!(
            round == 1 || waiter.wakeups() > woken,
            "round {round}: the waiter was not woken by the release"
        );
        // One channel, the same in every round: subscribed through the waits.
        let channels = wait_for_wake_channels(&f, "k", 1).await;
        match &channel {
            None => channel = Some(channels),
            Some(first) => assert_eq!(&channels, first, "round {round}"),
        }
    }
    drop(waiter);
    wait_for_wake_channels(&f, "k", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_holder_and_the_waiters() {
    let f = fixture!();
    let session = f.coordinator.session().await.unwrap();
    let guard = f
        .coordinator
        .locker_with(&session, "app/s", unfair())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let other = f.coordinator.session().await.unwrap();
    let waiter = f
        .coordinator
        .locker_with(&other, "app/s", unfair())
        .unwrap();
    let waiting = tokio::spawn({
        let waiter = Arc::clone(&waiter);
        async move { waiter.lock().await.unwrap().unlock().await.unwrap() }
    });
    wait_for_contenders(waiter.as_ref(), 2).await;
    let report = f.coordinator.status("app/").await.unwrap();
    let line = report
        .line(LineKind::Lock, "app/s")
        .expect("the lock is listed");
    assert_eq!(line.holders.len(), 1, "{line:#?}");
    let holder = &line.holders[0];
    assert_eq!(holder.key, guard.key());
    assert_eq!(holder.mode, HoldMode::Exclusive);
    assert_eq!(
        holder.session.as_deref(),
        Some(session.id().to_string().as_str())
    );
    assert_eq!(holder.token, Some(guard.token()));
    assert_eq!(line.waiters.len(), 1, "{line:#?}");
    assert_eq!(
        line.waiters[0].session.as_deref(),
        Some(other.id().to_string().as_str())
    );
    guard.unlock().await.unwrap();
    within(SHORT, waiting).await.unwrap();
    let report = f.coordinator.status("app/").await.unwrap();
    assert!(
        report.line(LineKind::Lock, "app/s").is_none(),
        "{report:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_writes_commit_only_while_held() {
    let f = fixture!();
    let session = f.coordinator.session().await.unwrap();
    let guard = f
        .coordinator
        .locker_with(&session, "g", unfair())
        .unwrap()
        .lock()
        .await
        .unwrap();
    guard.put_if_held("g/value", "one").await.unwrap();
    // A caller's own script guarded by the hold runs too.
    let script = distsync_redis::GuardedScript::new("return redis.call('INCR', KEYS[1])");
    let counted = script
        .eval_if_held(&guard, &[f.key("g", ":mine").as_str()], &[])
        .await
        .unwrap();
    assert_eq!(counted, Some(redis::Value::Int(1)));
    let mut raw = f.raw().await;
    // The hold taken over behind the guard's back (its token no longer in the key).
    let _: () = redis::cmd("SET")
        .arg(guard.key())
        .arg("u0.0:1")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(matches!(
        guard.put_if_held("g/value", "two").await,
        Err(Error::NotHeld)
    ));
    assert_eq!(
        script
            .eval_if_held(&guard, &[f.key("g", ":mine").as_str()], &[])
            .await
            .unwrap(),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_typed_error() {
    let f = fixture!();
    let session = f.coordinator.session().await.unwrap();
    assert!(matches!(
        f.coordinator.locker_with(&session, "a//b", unfair()),
        Err(Error::InvalidName { .. })
    ));
    let memory = Coordinator::new(distsync_kv::memory::MemoryBackend::new());
    let foreign = memory.session().await.unwrap();
    assert!(matches!(
        f.coordinator.locker_with(&foreign, "a", unfair()),
        Err(Error::InvalidArgument(_))
    ));
    let locker = f.coordinator.locker_with(&session, "a", unfair()).unwrap();
    session.close().await.unwrap();
    assert!(matches!(locker.lock().await, Err(Error::SessionLost)));
    assert!(matches!(locker.try_lock().await, Err(Error::SessionLost)));
    assert!(f.coordinator.capabilities().unfair_lock);
}

/// Under Redis Cluster: the lock's keys share one slot, its hold is renewed on its
/// master and freed by a revoke from another client, and a waiter is woken there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_on_a_redis_cluster() {
    let Some(url) = distsync_conformance::server_url("DISTSYNC_REDIS_CLUSTER_URL") else {
        return;
    };
    // The URL's own options (replica acknowledgement): without it, a new name on a
    // master promoted since it started waits out the lock-delay (`src/amnesia.rs`).
    let url = with_namespace(&url, &unique_namespace("unfair-cluster"));
    let coordinator = distsync::connect(&url).await.unwrap();
    assert!(coordinator.capabilities().unfair_lock);
    let other = distsync::connect(&url).await.unwrap();
    let ttl = SessionOptions::with_ttl(Duration::from_secs(15));
    let (a, b) = (
        coordinator.session_with(ttl.clone()).await.unwrap(),
        other.session_with(ttl).await.unwrap(),
    );
    let mut last = 0;
    for n in 0..12 {
        let name = format!("spread/{n}");
        let mine = coordinator.locker_with(&a, &name, unfair()).unwrap();
        let theirs = other.locker_with(&b, &name, unfair()).unwrap();
        let guard = mine.lock().await.unwrap();
        assert!(theirs.try_lock().await.unwrap().is_none());
        let waiting = tokio::spawn({
            let theirs = Arc::clone(&theirs);
            async move { theirs.lock().await.unwrap() }
        });
        wait_for_contenders(mine.as_ref(), 2).await;
        let token = guard.token();
        last = last.max(token.0);
        let released = Instant::now();
        guard.unlock().await.unwrap();
        let next = within(SHORT, waiting).await.unwrap();
        assert!(next.token() > token);
        // Woken (or let in by its first check): its safety net is the 15 s TTL.
        assert!(released.elapsed() < Duration::from_secs(2));
        next.unlock().await.unwrap();
    }
    // A hold outlives several renewals, then a revoke from the other client frees it.
    let guard = coordinator
        .locker_with(&a, "kept", unfair())
        .unwrap()
        .lock()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(!guard.is_lost());
    other.backend().revoke_session(a.id()).await.unwrap();
    within(Duration::from_secs(2), guard.lost()).await;
    let next = other
        .locker_with(&b, "kept", unfair())
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .expect("freed by the revoke");
    assert!(next.token() > guard.token());
    assert!(last > 0);
}

/// Under Redis Cluster, a waiter dropped while it waits leaves no listing in its
/// session's registry: its take listed the holder key there (beside the take, so that a
/// revoke from any client finds it), and the cancelled acquisition lets go of it as a
/// guard's release does, unlisting it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_waiter_leaves_no_registry_entry_on_a_redis_cluster() {
    let Some(url) = distsync_conformance::server_url("DISTSYNC_REDIS_CLUSTER_URL") else {
        return;
    };
    let namespace = unique_namespace("unfair-cluster-cancel");
    let url = with_namespace(&url, &namespace);
    let coordinator = distsync::connect(&url).await.unwrap();
    let ttl = SessionOptions::with_ttl(Duration::from_secs(15));
    let holding = coordinator.session_with(ttl.clone()).await.unwrap();
    let waiting = coordinator.session_with(ttl).await.unwrap();
    let holder = coordinator
        .locker_with(&holding, "c", unfair())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let waiter = coordinator.locker_with(&waiting, "c", unfair()).unwrap();
    let lock = tokio::spawn({
        let waiter = Arc::clone(&waiter);
        async move { waiter.lock().await.map(drop) }
    });
    wait_for_contenders(waiter.as_ref(), 2).await;
    let registry = format!("{{{namespace}session:{}}}:held", waiting.id().0);
    let holder_key = format!("{{{namespace}c}}:lock:u");
    let mut raw = crate::cluster::raw(&url).await;
    assert!(
        crate::cluster::hash_has(&mut raw, &registry, &holder_key).await,
        "the waiter's take did not list the holder key: nothing tested"
    );
    lock.abort();
    assert!(lock.await.unwrap_err().is_cancelled());
    // The dropped waiter lets go in the background.
    let deadline = Instant::now() + SHORT;
    while crate::cluster::hash_has(&mut raw, &registry, &holder_key).await {
        assert!(
            Instant::now() < deadline,
            "the cancelled waiter stayed listed in its session's registry"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The session's gate is the let-go's until it ends: a lock waits for it.
    holder.unlock().await.unwrap();
    let guard = within(SHORT, waiter.lock()).await.unwrap();
    guard.unlock().await.unwrap();
    holding.close().await.unwrap();
    waiting.close().await.unwrap();
}

/// Under Sentinel with replica acknowledgement (`wait_replicas=1`): grants and releases
/// go through the primary and are acknowledged, and a waiter asks again rather than
/// trusting a wake-up. The group's failover tests may take the primary away meanwhile:
/// a connection error then ends this test early, loudly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_under_sentinel_with_replica_acknowledgement() {
    let Some(url) = distsync_conformance::server_url("DISTSYNC_REDIS_SENTINEL_URL") else {
        return;
    };
    let base = url.split_once('?').map_or(url.as_str(), |(base, _)| base);
    let url = format!(
        "{base}?wait_replicas=1&wait_timeout=2s&namespace={}",
        unique_namespace("unfair-sentinel")
    );
    let run = async {
        let coordinator = distsync::connect(&url).await?;
        let other = distsync::connect(&url).await?;
        let ttl = SessionOptions::with_ttl(Duration::from_secs(5));
        let a = coordinator.session_with(ttl.clone()).await?;
        let b = other.session_with(ttl).await?;
        let mine = coordinator.locker_with(&a, "s", unfair())?;
        let theirs = other.locker_with(&b, "s", unfair())?;
        let mut tokens = Vec::new();
        for _ in 0..5 {
            let guard = mine.lock().await?;
            tokens.push(guard.token());
            let waiting = tokio::spawn({
                let theirs = Arc::clone(&theirs);
                async move { theirs.lock().await }
            });
            wait_for_contenders(mine.as_ref(), 2).await;
            guard.unlock().await?;
            let next = within(SHORT, waiting).await.unwrap()?;
            tokens.push(next.token());
            next.unlock().await?;
        }
        assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
        Ok::<_, Error>(())
    };
    // In the Sentinel tests' group (`.config/nextest.toml`): no failover runs beside it.
    if let Err(error) = run.await {
        panic!("{error}");
    }
}

/// The uncontended cycle (lock + unlock, one session, one name) of the unfair lock, the
/// fair lock and the raw `SET NX PX` + compare-and-delete pair, by turns of 500 cycles,
/// 10 turns each; prints each one's p50. Run by hand:
/// `cargo test -p distsync-redis --release --test it unfair_cycle_figures -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, printed; run by hand"]
async fn unfair_cycle_figures() {
    const TURNS: usize = 10;
    const CYCLES: usize = 500;
    let f = fixture!();
    let session = f.coordinator.session().await.unwrap();
    let unfair_lock = f
        .coordinator
        .locker_with(&session, "cycle/unfair", unfair())
        .unwrap();
    let fair_lock = f.coordinator.locker(&session, "cycle/fair").unwrap();
    let mut raw =
        redis::aio::ConnectionManager::new(redis::Client::open(server_url().unwrap()).unwrap())
            .await
            .unwrap();
    let release = redis::Script::new(
        "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0",
    );
    let raw_key = f.key("cycle/raw", "");
    let mut samples: [Vec<Duration>; 3] = Default::default();
    for turn in 0..=TURNS {
        for (which, kept) in samples.iter_mut().enumerate() {
            for _ in 0..CYCLES {
                let started = Instant::now();
                match which {
                    0 => unfair_lock.lock().await.unwrap().unlock().await.unwrap(),
                    1 => fair_lock.lock().await.unwrap().unlock().await.unwrap(),
                    _ => {
                        let set: Option<String> = redis::cmd("SET")
                            .arg(&raw_key)
                            .arg("token")
                            .arg("NX")
                            .arg("PX")
                            .arg(60_000)
                            .query_async(&mut raw)
                            .await
                            .unwrap();
                        assert!(set.is_some());
                        let deleted: i64 = release
                            .key(&raw_key)
                            .arg("token")
                            .invoke_async(&mut raw)
                            .await
                            .unwrap();
                        assert_eq!(deleted, 1);
                    }
                }
                // The first turn warms up.
                if turn > 0 {
                    kept.push(started.elapsed());
                }
            }
        }
    }
    let p50 = |samples: &mut Vec<Duration>| {
        samples.sort_unstable();
        samples[samples.len() / 2]
    };
    let [unfair_p50, fair_p50, raw_p50] = samples.each_mut().map(p50);
    eprintln!(
        "cycle p50: unfair {unfair_p50:?}, fair {fair_p50:?}, raw pair {raw_p50:?}; \
         unfair ÷ raw ×{:.2}, fair ÷ raw ×{:.2}",
        unfair_p50.as_secs_f64() / raw_p50.as_secs_f64(),
        fair_p50.as_secs_f64() / raw_p50.as_secs_f64()
    );
    session.close().await.unwrap();
}

/// How many cycles the `cycle_instructions_*` tests run: `DISTSYNC_CYCLES`, or 1,000.
fn instruction_cycles() -> usize {
    std::env::var("DISTSYNC_CYCLES")
        .ok()
        .and_then(|cycles| cycles.parse().ok())
        .unwrap_or(1000)
}

/// `DISTSYNC_CYCLES` uncontended cycles of the lock of `options`, alone in the process.
async fn cycles_alone(options: LockOptions) {
    let f = fixture!();
    let session = f.coordinator.session().await.unwrap();
    let lock = f
        .coordinator
        .locker_with(&session, "cycle/alone", options)
        .unwrap();
    for _ in 0..instruction_cycles() {
        lock.lock().await.unwrap().unlock().await.unwrap();
    }
    session.close().await.unwrap();
}

/// The unfair lock's cycles alone, for callgrind. Run by hand, twice, with two counts:
/// `DISTSYNC_CYCLES=N valgrind --tool=callgrind <the it binary> --ignored --exact
/// unfair_lock::cycle_instructions_unfair`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement under callgrind; run by hand"]
async fn cycle_instructions_unfair() {
    cycles_alone(unfair()).await;
}

/// The fair lock's cycles alone, as [`cycle_instructions_unfair`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement under callgrind; run by hand"]
async fn cycle_instructions_fair() {
    cycles_alone(LockOptions::new()).await;
}
