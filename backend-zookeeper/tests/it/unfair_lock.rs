//! The unfair lock (`LockOptions::new().unfair()`) against a real ZooKeeper
//! (`DISTSYNC_ZOOKEEPER_URL`; skipped loudly when unset, a failure under `CI=true`):
//! exclusion and growing tokens under contention, with fair contenders mixed in,
//! `try_lock`, a revoked holder's session, cancelled waiters, one wake-up per release,
//! status, break and release requests, and Curator's own `InterProcessMutex` (run by
//! the Java peer, when `DISTSYNC_CURATOR_PEER` is set) waiting for an unfair holder and
//! the reverse.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distsync_conformance::faults::proxy::{PartitionMode, Proxy};
use distsync_conformance::server_url;
use distsync_core::status::LineKind;
use distsync_core::{Coordinator, Error, LockGuard, LockOptions, Locker, Session, SessionOptions};
use distsync_zookeeper::ZkConfig;
use tokio::task::JoinHandle;
use zookeeper_client as zk;

use crate::common::{self, JavaPeer};

/// How long any one step may take before the test fails.
const STEP: Duration = Duration::from_secs(20);

async fn within<T>(what: &str, step: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, step)
        .await
        .unwrap_or_else(|_| panic!("{what} within {STEP:?}"))
}

/// A name of this run's own.
fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("unfair-lock/{what}-{}-{nanos}", std::process::id())
}

/// The server's URL and configuration, or `None` (the test skips).
fn url() -> Option<(String, ZkConfig)> {
    let url = server_url("DISTSYNC_ZOOKEEPER_URL")?;
    let config = url.parse().unwrap();
    Some((url, config))
}

/// A contender: a session of its own and a locker of `name` on it.
struct Contender {
    session: Session,
    locker: Arc<dyn Locker>,
}

async fn contender(coordinator: &Coordinator, name: &str, unfair: bool) -> Contender {
    let session = within("a session", coordinator.session()).await.unwrap();
    let options = if unfair {
        LockOptions::new().unfair()
    } else {
        LockOptions::new()
    };
    let locker = coordinator.locker_with(&session, name, options).unwrap();
    Contender { session, locker }
}

/// Waits, with a deadline, until `locker` counts `count` contenders.
async fn until_contenders(locker: &dyn Locker, count: usize) {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let now = locker.contenders().await.unwrap();
        if now == count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{now} contenders, expected {count}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The children of the node at `path` (none if it is missing).
async fn children(client: &zk::Client, path: &str) -> Vec<String> {
    match client.list_children(path).await {
        Ok(children) => children,
        Err(zk::Error::NoNode) => Vec::new(),
        Err(error) => panic!("listing {path}: {error}"),
    }
}

/// Waits, with a deadline, until the lock's node has `held` children and its wait
/// line `waiting`.
async fn until_nodes(
    client: &zk::Client,
    config: &ZkConfig,
    name: &str,
    held: usize,
    waiting: usize,
) {
    let lock = format!("{}/lock/{name}", config.root());
    let line = format!("{}/lock_wait/{name}", config.root());
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let now = (
            children(client, &lock).await.len(),
            children(client, &line).await.len(),
        );
        if now == (held, waiting) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{now:?} nodes in the lock and its line, expected {:?}",
            (held, waiting)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn observer(config: &ZkConfig) -> zk::Client {
    within(
        "an observer",
        zk::Client::connect(&config.hosts().join(",")),
    )
    .await
    .unwrap()
}

/// `lock()` in a task of its own.
fn waiting(locker: &Arc<dyn Locker>) -> JoinHandle<distsync_core::Result<LockGuard>> {
    let locker = Arc::clone(locker);
    tokio::spawn(async move { locker.lock().await })
}

/// `contenders` cycling `name` `cycles` times each; in every hold, checks that nobody
/// else holds and records the token. Returns the tokens in grant order.
async fn cycle_all(contenders: &[Contender], cycles: usize) -> Vec<u64> {
    let busy = Arc::new(AtomicBool::new(false));
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let counter = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = contenders
        .iter()
        .map(|contender| {
            let locker = Arc::clone(&contender.locker);
            let (busy, tokens, counter) = (busy.clone(), tokens.clone(), counter.clone());
            tokio::spawn(async move {
                for _ in 0..cycles {
                    let guard = locker.lock().await.unwrap();
                    assert!(!busy.swap(true, Ordering::SeqCst), "two holders at once");
                    tokens.lock().unwrap().push(guard.token().get());
                    // A read and a write apart: a second holder would lose an update.
                    let seen = counter.load(Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    counter.store(seen + 1, Ordering::SeqCst);
                    busy.store(false, Ordering::SeqCst);
                    guard.unlock().await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        within("every contender's cycles", task).await.unwrap();
    }
    assert_eq!(
        counter.load(Ordering::SeqCst),
        (contenders.len() * cycles) as u64,
        "an update was lost"
    );
    let tokens = tokens.lock().unwrap().clone();
    tokens
}

fn assert_growing(tokens: &[u64]) {
    for pair in tokens.windows(2) {
        assert!(pair[0] < pair[1], "token {} after {}", pair[1], pair[0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unfair_contenders_exclude_each_other_and_tokens_grow() {
    let Some((url, _)) = url() else { return };
    let coordinator = distsync::connect(&url).await.unwrap();
    let name = unique("exclusion");
    let mut contenders = Vec::new();
    for _ in 0..6 {
        contenders.push(contender(&coordinator, &name, true).await);
    }
    let tokens = cycle_all(&contenders, 15).await;
    assert_growing(&tokens);
    assert_eq!(contenders[0].locker.contenders().await.unwrap(), 0);
    for contender in contenders {
        contender.session.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fair_and_unfair_contenders_of_one_name_exclude_each_other_and_tokens_grow() {
    let Some((url, _)) = url() else { return };
    let coordinator = distsync::connect(&url).await.unwrap();
    let name = unique("mixed");
    let mut contenders = Vec::new();
    for i in 0..6 {
        contenders.push(contender(&coordinator, &name, i % 2 == 0).await);
    }
    let tokens = cycle_all(&contenders, 12).await;
    assert_growing(&tokens);
    assert_eq!(contenders[0].locker.contenders().await.unwrap(), 0);
    for contender in contenders {
        contender.session.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fair_waiter_waits_for_an_unfair_holder_and_the_reverse() {
    let Some((url, _)) = url() else { return };
    let coordinator = distsync::connect(&url).await.unwrap();
    let name = unique("fair-unfair");
    let unfair = contender(&coordinator, &name, true).await;
    let fair = contender(&coordinator, &name, false).await;

    let held = unfair.locker.lock().await.unwrap();
    assert!(fair.locker.try_lock().await.unwrap().is_none());
    let waiter = waiting(&fair.locker);
    until_contenders(unfair.locker.as_ref(), 2).await;
    assert!(!waiter.is_finished(), "fair granted while unfair holds");
    let unfair_token = held.token().get();
    held.unlock().await.unwrap();
    let held = within("the fair grant", waiter).await.unwrap().unwrap();
    assert!(held.token().get() > unfair_token);

    assert!(unfair.locker.try_lock().await.unwrap().is_none());
    let waiter = waiting(&unfair.locker);
    until_contenders(fair.locker.as_ref(), 2).await;
    assert!(!waiter.is_finished(), "unfair granted while fair holds");
    let fair_token = held.token().get();
    held.unlock().await.unwrap();
    let held = within("the unfair grant", waiter).await.unwrap().unwrap();
    assert!(held.token().get() > fair_token);
    held.unlock().await.unwrap();
    assert_eq!(fair.locker.contenders().await.unwrap(), 0);
    unfair.session.close().await.unwrap();
    fair.session.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_lock_takes_a_free_lock_and_leaves_nothing_when_held() {
    let Some((url, config)) = url() else { return };
    let coordinator = distsync::connect(&url).await.unwrap();
    let client = observer(&config).await;
    let name = unique("try-lock");
    let a = contender(&coordinator, &name, true).await;
    let b = contender(&coordinator, &name, true).await;
    let held = a.locker.try_lock().await.unwrap().expect("a free lock");
    assert!(b.locker.try_lock().await.unwrap().is_none());
    // The refused take withdrew its node before answering.
    until_nodes(&client, &config, &name, 1, 0).await;
    assert_eq!(b.locker.contenders().await.unwrap(), 1);
    let token = held.token().get();
    held.unlock().await.unwrap();
    let held = b.locker.try_lock().await.unwrap().expect("free again");
    assert!(held.token().get() > token);
    held.unlock().await.unwrap();
    until_nodes(&client, &config, &name, 0, 0).await;
    a.session.close().await.unwrap();
    b.session.close().await.unwrap();
}

/// Takes that collide on a free lock (each lists the others' nodes) do not all back
/// off: the first made holds. Four `try_lock`s sent at once on a free lock, many
/// rounds: exactly one of each round's holds, whatever the server's interleaving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colliding_takes_of_a_free_lock_leave_exactly_one_holder() {
    let Some((url, config)) = url() else { return };
    let coordinator = distsync::connect(&url).await.unwrap();
    let client = observer(&config).await;
    let name = unique("collide");
    let mut contenders = Vec::new();
    for _ in 0..4 {
        contenders.push(contender(&coordinator, &name, true).await);
    }
    for round in 0..40 {
        let takes = contenders.iter().map(|c| {
            let locker = Arc::clone(&c.locker);
            tokio::spawn(async move { locker.try_lock().await })
        });
        let mut held = Vec::new();
        for take in takes.collect::<Vec<_>>() {
            if let Some(guard) = within("a try_lock", take).await.unwrap().unwrap() {
                held.push(guard);
            }
        }
        assert_eq!(
            held.len(),
            1,
            "round {round}: {} holders of a free lock",
            held.len()
        );
        for guard in held {
            guard.unlock().await.unwrap();
        }
        until_nodes(&client, &config, &name, 0, 0).await;
    }
    for c in contenders {
        c.session.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_holder_session_fires_lost_and_frees_the_lock() {
    let Some((url, _)) = url() else { return };
    let coordinator = distsync::connect(&url).await.unwrap();
    let name = unique("revoked");
    let a = contender(&coordinator, &name, true).await;
    let b = contender(&coordinator, &name, true).await;
    let held = a.locker.lock().await.unwrap();
    held.put_if_held("unfair-lock-test/guarded", "a")
        .await
        .unwrap();
    let lost = held.lost();
    let waiter = waiting(&b.locker);
    until_contenders(b.locker.as_ref(), 2).await;
    coordinator
        .backend()
        .revoke_session(a.session.id())
        .await
        .unwrap();
    within("the holder's lost()", lost).await;
    let granted = within("the waiter's grant", waiter).await.unwrap().unwrap();
    assert!(granted.token() > held.token());
    assert!(matches!(
        held.put_if_held("unfair-lock-test/guarded", "stale").await,
        Err(Error::NotHeld)
    ));
    granted.unlock().await.unwrap();
    b.session.close().await.unwrap();
}

/// Three contenders of a fresh name with a line: the holder holds, the head waits first
/// in the line and the next behind it, each wait in a task of its own.
struct Line {
    config: ZkConfig,
    client: zk::Client,
    name: String,
    holder: Contender,
    head: Contender,
    next: Contender,
    /// The holder's hold, until [`Line::unlock_holder`].
    held: Option<LockGuard>,
    head_waits: JoinHandle<distsync_core::Result<LockGuard>>,
    next_waits: JoinHandle<distsync_core::Result<LockGuard>>,
}

/// A [`Line`] of a name made of `what`; `None` (the test skips) without a server.
async fn line_of_two(what: &str) -> Option<Line> {
    let (url, config) = url()?;
    let coordinator = distsync::connect(&url).await.unwrap();
    let client = observer(&config).await;
    let name = unique(what);
    let holder = contender(&coordinator, &name, true).await;
    let head = contender(&coordinator, &name, true).await;
    let next = contender(&coordinator, &name, true).await;
    let held = holder.locker.lock().await.unwrap();
    let head_waits = waiting(&head.locker);
    until_nodes(&client, &config, &name, 1, 1).await;
    let next_waits = waiting(&next.locker);
    until_nodes(&client, &config, &name, 1, 2).await;
    Some(Line {
        config,
        client,
        name,
        holder,
        head,
        next,
        held: Some(held),
        head_waits,
        next_waits,
    })
}

impl Line {
    /// The head of the line goes: its wait is cancelled.
    async fn cancel_head(&mut self) {
        self.head_waits.abort();
        assert!((&mut self.head_waits).await.unwrap_err().is_cancelled());
    }

    /// The holder lets go.
    async fn unlock_holder(&mut self) {
        self.held.take().unwrap().unlock().await.unwrap();
    }

    /// Waits, with a deadline, until the lock's node has `held` children and its wait
    /// line `waiting`.
    async fn until_nodes(&self, held: usize, waiting: usize) {
        until_nodes(&self.client, &self.config, &self.name, held, waiting).await;
    }

    async fn close(self) {
        for contender in [self.holder, self.head, self.next] {
            contender.session.close().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_waiter_leaves_nothing_and_the_line_moves_on() {
    let Some(mut line) = line_of_two("cancelled").await else {
        return;
    };
    // The head of the line goes; the waiter behind it takes its place.
    line.cancel_head().await;
    line.until_nodes(1, 1).await;
    assert_eq!(line.holder.locker.contenders().await.unwrap(), 2);
    line.unlock_holder().await;
    let granted = within("the remaining waiter's grant", &mut line.next_waits)
        .await
        .unwrap()
        .unwrap();
    granted.unlock().await.unwrap();
    line.until_nodes(0, 0).await;
    // A `lock()` dropped by a timeout leaves nothing either.
    let held = line.holder.locker.lock().await.unwrap();
    let timed_out = tokio::time::timeout(Duration::from_millis(200), line.head.locker.lock()).await;
    assert!(timed_out.is_err(), "granted while held");
    held.unlock().await.unwrap();
    line.until_nodes(0, 0).await;
    line.close().await;
}

/// A waiter that comes to head the line while the lock is held looks before it takes:
/// it creates no holder node that would only be deleted again. The head of the line
/// goes (cancelled) while a holder holds; the waiter behind it is woken, and from then
/// until its grant the lock's node sees two child changes: the holder's release and the
/// new head's take (a take sent at once would add its create and its back-off delete).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_comes_to_head_the_line_looks_before_it_takes() {
    let Some(mut line) = line_of_two("head-looks").await else {
        return;
    };
    let lock = format!("{}/lock/{}", line.config.root(), line.name);
    let woken_before = line.next.locker.wakeups();
    let (_, before) = line.client.get_children(&lock).await.unwrap();
    line.cancel_head().await;
    // The head's place gone, the waiter behind it is woken and heads the line.
    within("the new head's wake-up", async {
        while line.next.locker.wakeups() == woken_before {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    line.unlock_holder().await;
    let granted = within("the new head's grant", &mut line.next_waits)
        .await
        .unwrap()
        .unwrap();
    let (_, after) = line.client.get_children(&lock).await.unwrap();
    assert_eq!(
        after.cversion - before.cversion,
        2,
        "child changes of the lock's node from the head's going to the next grant"
    );
    granted.unlock().await.unwrap();
    line.until_nodes(0, 0).await;
    line.close().await;
}

/// A holder that came from the line releases its holder node and its place in one
/// transaction (one write on the leader): both nodes' last child changes share a zxid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_holder_releases_in_one_write() {
    let Some((url, config)) = url() else { return };
    let coordinator = distsync::connect(&url).await.unwrap();
    let client = observer(&config).await;
    let name = unique("one-write");
    let a = contender(&coordinator, &name, true).await;
    let b = contender(&coordinator, &name, true).await;
    let held = a.locker.lock().await.unwrap();
    let waiter = waiting(&b.locker);
    until_nodes(&client, &config, &name, 1, 1).await;
    held.unlock().await.unwrap();
    let held = within("B's grant", waiter).await.unwrap().unwrap();
    held.unlock().await.unwrap();
    until_nodes(&client, &config, &name, 0, 0).await;
    let (_, lock) = client
        .get_children(&format!("{}/lock/{name}", config.root()))
        .await
        .unwrap();
    let (_, line) = client
        .get_children(&format!("{}/lock_wait/{name}", config.root()))
        .await
        .unwrap();
    assert_eq!(lock.pzxid, line.pzxid, "two writes for one release");
    a.session.close().await.unwrap();
    b.session.close().await.unwrap();
}

/// 100 waiters in line and one release after another: each release wakes one waiter,
/// so the wake-ups summed over every waiter's handle stay at about one per release.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_wakes_one_waiter_not_the_herd() {
    const WAITERS: usize = 100;
    let Some((url, config)) = url() else { return };
    let coordinator = distsync::connect(&url).await.unwrap();
    let client = observer(&config).await;
    let name = unique("herd");
    let holder = contender(&coordinator, &name, true).await;
    let held = holder.locker.lock().await.unwrap();
    let mut waiters = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..WAITERS {
        let waiter = contender(&coordinator, &name, true).await;
        let locker = Arc::clone(&waiter.locker);
        tasks.push(tokio::spawn(async move {
            let guard = locker.lock().await.unwrap();
            guard.unlock().await.unwrap();
        }));
        waiters.push(waiter);
    }
    until_contenders(holder.locker.as_ref(), WAITERS + 1).await;
    let queued: u64 = waiters.iter().map(|waiter| waiter.locker.wakeups()).sum();
    held.unlock().await.unwrap();
    for task in tasks {
        within("every waiter's turn", task).await.unwrap();
    }
    let releases = (WAITERS + 1) as u64;
    let woken: u64 = waiters
        .iter()
        .map(|waiter| waiter.locker.wakeups())
        .sum::<u64>()
        - queued;
    eprintln!("{woken} wake-ups for {releases} releases ({queued} while queueing)");
    assert!(
        woken <= releases + 2,
        "{woken} wake-ups for {releases} releases: a herd"
    );
    until_nodes(&client, &config, &name, 0, 0).await;
    holder.session.close().await.unwrap();
    for waiter in waiters {
        waiter.session.close().await.unwrap();
    }
}

/// Status names the unfair holder (key, token, session) and its waiters, a line holder
/// once; a release request reaches the holder; a break ends its hold (`lost()`, guarded
/// writes refused) and lets the next waiter of the line in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_break_and_release_requests_see_the_unfair_holder() {
    let Some((url, config)) = url() else { return };
    let coordinator = distsync::connect(&url).await.unwrap();
    let client = observer(&config).await;
    let name = unique("status");
    let a = contender(&coordinator, &name, true).await;
    let b = contender(&coordinator, &name, true).await;
    let c = contender(&coordinator, &name, true).await;
    let held = a.locker.lock().await.unwrap();
    // B in line before C: B heads it.
    let b_waiter = waiting(&b.locker);
    until_nodes(&client, &config, &name, 1, 1).await;
    let c_waiter = waiting(&c.locker);
    until_nodes(&client, &config, &name, 1, 2).await;
    assert_eq!(a.locker.contenders().await.unwrap(), 3);

    let report = coordinator.status(&name).await.unwrap();
    let line = report
        .lines
        .iter()
        .find(|line| line.kind == LineKind::Lock && line.name == name)
        .expect("the lock's line");
    assert_eq!(line.holders.len(), 1, "{line:?}");
    assert_eq!(line.holders[0].key, held.key());
    assert_eq!(line.holders[0].token, Some(held.token()));
    assert_eq!(line.holders[0].session, Some(a.session.id().to_string()));
    assert_eq!(line.waiters.len(), 2, "{line:?}");

    // B comes from the line and keeps its place while it holds: shown once.
    held.unlock().await.unwrap();
    let b_held = within("B's grant", b_waiter).await.unwrap().unwrap();
    let report = coordinator.status(&name).await.unwrap();
    let line = report
        .lines
        .iter()
        .find(|line| line.kind == LineKind::Lock && line.name == name)
        .expect("the lock's line");
    assert_eq!(line.holders.len(), 1, "{line:?}");
    assert_eq!(line.holders[0].key, b_held.key());
    assert_eq!(line.waiters.len(), 1, "{line:?}");
    assert_eq!(a.locker.contenders().await.unwrap(), 2);

    let requested = b_held.release_requested();
    let request = coordinator.request_release(&name).await.unwrap();
    assert!(request.is_some(), "a request for a held lock");
    within("the release request", requested).await.unwrap();

    b_held
        .put_if_held("unfair-lock-test/status", "b")
        .await
        .unwrap();
    let lost = b_held.lost();
    let broken = coordinator
        .break_lock(&name)
        .await
        .unwrap()
        .expect("a hold to break");
    assert_eq!(broken.key, b_held.key());
    within("B's lost()", lost).await;
    assert!(matches!(
        b_held.put_if_held("unfair-lock-test/status", "stale").await,
        Err(Error::NotHeld)
    ));
    // B's place goes with its broken hold, so C, behind it, is let in.
    let c_held = within("C's grant after the break", c_waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(c_held.token() > b_held.token());
    c_held.unlock().await.unwrap();
    drop(b_held);
    until_contenders(a.locker.as_ref(), 0).await;
    for contender in [a, b, c] {
        contender.session.close().await.unwrap();
    }
}

/// A break of a holder that came from the line lets the waiter behind it in at once,
/// even while the broken holder's client is cut off (it cannot delete its place in the
/// line) and its session lives on: the break deletes that place with the holder node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_break_lets_the_line_in_while_the_broken_holder_is_cut_off() {
    /// Well under the cut-off holder's session TTL, which would otherwise end the wait.
    const AT_ONCE: Duration = Duration::from_secs(5);
    let Some((url, config)) = url() else { return };
    let coordinator = distsync::connect(&url).await.unwrap();
    let (proxy, proxied) = Proxy::front(&url).await.unwrap();
    let cut_off = distsync::connect(&proxied).await.unwrap();
    let client = observer(&config).await;
    let name = unique("break-cut-off");
    let a = contender(&coordinator, &name, true).await;
    let b_session = within(
        "a long session",
        cut_off.session_with(SessionOptions::with_ttl(Duration::from_secs(60))),
    )
    .await
    .unwrap();
    let b_locker: Arc<dyn Locker> = cut_off
        .locker_with(&b_session, &name, LockOptions::new().unfair())
        .unwrap();
    let c = contender(&coordinator, &name, true).await;

    let held = a.locker.lock().await.unwrap();
    let b_waiter = waiting(&b_locker);
    until_nodes(&client, &config, &name, 1, 1).await;
    let c_waiter = waiting(&c.locker);
    until_nodes(&client, &config, &name, 1, 2).await;
    held.unlock().await.unwrap();
    // B comes from the line and keeps its place there while it holds.
    let b_held = within("B's grant", b_waiter).await.unwrap().unwrap();
    proxy.set(PartitionMode::Silent);
    let broken = within("the break", coordinator.break_lock(&name))
        .await
        .unwrap()
        .expect("a hold to break");
    assert_eq!(broken.key, b_held.key());
    let c_held = tokio::time::timeout(AT_ONCE, c_waiter)
        .await
        .expect("C granted at once after the break, not at B's session's end")
        .unwrap()
        .unwrap();
    assert!(c_held.token() > b_held.token());
    c_held.unlock().await.unwrap();
    proxy.heal();
    drop(b_held);
    within("B's session's close", b_session.close())
        .await
        .unwrap();
    until_nodes(&client, &config, &name, 0, 0).await;
    a.session.close().await.unwrap();
    c.session.close().await.unwrap();
}

/// Curator's own `InterProcessMutex` takes the unfair holder node for the lowest
/// contender and waits for it; an unfair contender waits for a Curator holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curator_and_the_unfair_lock_exclude_each_other() {
    let Some(setup) = common::setup() else { return };
    let coordinator = distsync::connect(&setup.url).await.unwrap();
    let name = common::unique("unfair");
    let path = common::node(&setup, "lock", &name);
    let rust = contender(&coordinator, &name, true).await;

    // An unfair holder keeps a Curator waiter out.
    let held = rust.locker.lock().await.unwrap();
    let mut java = JavaPeer::holder(&setup, "lock", &path, &[], 0).await;
    until_contenders(rust.locker.as_ref(), 2).await;
    java.stays_silent("the unfair lock is held").await;
    let rust_token = held.token().get();
    held.unlock().await.unwrap();
    let java_token = java.granted().await;
    assert!(
        java_token > rust_token,
        "Curator's czxid {java_token} not above {rust_token}"
    );
    java.released().await;

    // A Curator holder keeps an unfair contender out.
    let mut java = JavaPeer::holder(&setup, "lock", &path, &[], -1).await;
    let java_token = java.granted().await;
    assert!(rust.locker.try_lock().await.unwrap().is_none());
    let waiter = waiting(&rust.locker);
    until_contenders(rust.locker.as_ref(), 2).await;
    assert!(!waiter.is_finished(), "unfair granted while Curator holds");
    java.release().await;
    java.released().await;
    let held = within("the unfair grant", waiter).await.unwrap().unwrap();
    assert!(held.token().get() > java_token);
    held.unlock().await.unwrap();
    assert_eq!(rust.locker.contenders().await.unwrap(), 0);
    rust.session.close().await.unwrap();
}
