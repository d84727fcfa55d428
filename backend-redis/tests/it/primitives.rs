//! The Redis backend against a real Redis server (`DISTSYNC_REDIS_URL`).
//!
//! Each test uses its own namespace, so tests run in parallel on one server.

use crate::support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use distsync_core::{Backend, Coordinator, Error, Isolation, Name, SessionOptions};
use distsync_redis::RedisBackend;
use futures::StreamExt;
use support::{crashed_holder, server_url, unique_namespace, with_namespace, RENEWED_TTL};

struct Fixture {
    url: String,
    namespace: String,
    backend: RedisBackend,
    coordinator: Coordinator,
}

impl Fixture {
    async fn new() -> Option<Self> {
        let server = server_url()?;
        let namespace = unique_namespace("test");
        let url = with_namespace(&server, &namespace);
        let backend = distsync_redis::backend(&url).await.unwrap();
        Some(Self {
            coordinator: Coordinator::new(backend.clone()),
            backend,
            namespace,
            url,
        })
    }

    /// A second, independent client of the same store (another "process").
    async fn other_client(&self) -> Coordinator {
        distsync::connect(&self.url).await.unwrap()
    }

    async fn raw(&self) -> redis::aio::MultiplexedConnection {
        let server = server_url().unwrap();
        redis::Client::open(server)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Number of entries in line (holders and waiters) of a waiter line.
    async fn in_line(&self, name: &str, kind: &str) -> usize {
        let mut raw = self.raw().await;
        redis::cmd("ZCARD")
            .arg(format!("{{{}{name}}}:{kind}:q", self.namespace))
            .query_async(&mut raw)
            .await
            .unwrap()
    }

    async fn wait_in_line(&self, name: &str, kind: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.in_line(name, kind).await != n {
            assert!(Instant::now() < deadline, "{name}: never {n} in line");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
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

async fn within<T>(limit: Duration, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .expect("did not finish in time")
}

const SHORT: Duration = Duration::from_secs(10);

// ---- sessions -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_keepalive_renews_and_close_fires_lost() {
    let f = fixture!();
    let session = f
        .coordinator
        .session_with(SessionOptions::with_ttl(RENEWED_TTL))
        .await
        .unwrap();
    let guard = f
        .coordinator
        .locker(&session, "a")
        .unwrap()
        .lock()
        .await
        .unwrap();
    // Several TTLs pass: the keepalive renews the session and the lock entry.
    tokio::time::sleep(3 * RENEWED_TTL).await;
    assert!(!session.is_lost());
    let other = f.coordinator.session().await.unwrap();
    assert!(f
        .coordinator
        .locker(&other, "a")
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .is_none());
    session.close().await.unwrap();
    assert!(session.is_lost());
    assert!(guard.is_lost());
    // Closing released the lock at once.
    assert!(f
        .coordinator
        .locker(&other, "a")
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_from_another_client_fires_lost_and_frees_the_lock() {
    let f = fixture!();
    let session = f
        .coordinator
        .session_with(SessionOptions::with_ttl(RENEWED_TTL))
        .await
        .unwrap();
    let guard = f
        .coordinator
        .locker(&session, "r")
        .unwrap()
        .lock()
        .await
        .unwrap();
    let other = f.other_client().await;
    let waiter_session = other.session().await.unwrap();
    let waiter = other.locker(&waiter_session, "r").unwrap();
    let waiting = tokio::spawn(async move { waiter.lock().await.map(|g| g.token()) });
    f.wait_in_line("r", "lock", 2).await;
    let started = Instant::now();
    other.backend().revoke_session(session.id()).await.unwrap();
    // The waiter is woken by the revoke itself.
    let token = within(SHORT, waiting).await.unwrap().unwrap();
    assert!(token > guard.token());
    within(Duration::from_secs(2), guard.lost()).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(matches!(guard.unlock().await, Err(Error::SessionLost)));
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
        .locker(&session, "t")
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
async fn a_stalled_holder_loses_the_lock_after_its_ttl() {
    let f = fixture!();
    let url = f.url.clone();
    // A "process" whose runtime stops: no keepalive, no release, no revoke.
    let (token, key) = crashed_holder(url, |coordinator, session| async move {
        let guard = coordinator.locker(&session, "s")?.lock().await?;
        let held = (guard.token(), guard.key().to_owned());
        std::mem::forget(guard);
        Ok(held)
    });
    let session = f.coordinator.session().await.unwrap();
    let started = Instant::now();
    let guard = within(SHORT, f.coordinator.locker(&session, "s").unwrap().lock())
        .await
        .unwrap();
    // CRASH_TTL and a second.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(guard.token() > token);
    assert_ne!(guard.key(), key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_are_typed_errors() {
    let f = fixture!();
    assert!(matches!(
        f.backend
            .session(SessionOptions::with_ttl(Duration::from_millis(10)))
            .await,
        Err(Error::InvalidArgument(_))
    ));
    let session = f.coordinator.session().await.unwrap();
    assert!(matches!(
        f.coordinator.locker(&session, "a//b"),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        f.coordinator.double_barrier(&session, "d", 0),
        Err(Error::InvalidArgument(_))
    ));
    let memory = Coordinator::new(distsync_kv::memory::MemoryBackend::new());
    let foreign = memory.session().await.unwrap();
    assert!(matches!(
        f.coordinator.locker(&foreign, "a"),
        Err(Error::InvalidArgument(_))
    ));
    let elsewhere = f.other_client().await;
    assert!(
        elsewhere.locker(&session, "a").is_ok(),
        "same store, other client"
    );
    assert!(matches!(
        distsync::connect("redis://127.0.0.1:1").await,
        Err(Error::Connection { .. })
    ));
    assert!(matches!(
        distsync::connect("redis://host/not-a-db").await,
        Err(Error::InvalidUrl { .. })
    ));
}

// ---- lock ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_excludes_and_tokens_increase() {
    let f = fixture!();
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let coordinator = f.other_client().await;
        let counter = Arc::clone(&counter);
        tasks.push(tokio::spawn(async move {
            let session = coordinator.session().await.unwrap();
            let locker = coordinator.locker(&session, "x").unwrap();
            let mut tokens = Vec::new();
            for _ in 0..10 {
                let guard = locker.lock().await.unwrap();
                assert_eq!(counter.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                tokio::task::yield_now().await;
                counter.fetch_sub(1, Ordering::SeqCst);
                tokens.push(guard.token());
                guard.unlock().await.unwrap();
            }
            session.close().await.unwrap();
            tokens
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let tokens = within(Duration::from_secs(30), task).await.unwrap();
        assert!(tokens.windows(2).all(|w| w[0] < w[1]));
        all.extend(tokens);
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 40, "every grant has its own token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_waiters_are_served_in_arrival_order() {
    let f = fixture!();
    let session = f.coordinator.session().await.unwrap();
    let holder = f
        .coordinator
        .locker(&session, "fifo")
        .unwrap()
        .lock()
        .await
        .unwrap();
    let (order_tx, mut order_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut waiters = Vec::new();
    for i in 0..4 {
        let coordinator = f.other_client().await;
        let order_tx = order_tx.clone();
        waiters.push(tokio::spawn(async move {
            let session = coordinator.session().await.unwrap();
            let guard = coordinator
                .locker(&session, "fifo")
                .unwrap()
                .lock()
                .await
                .unwrap();
            order_tx.send(i).unwrap();
            guard.unlock().await.unwrap();
        }));
        f.wait_in_line("fifo", "lock", i + 2).await;
    }
    holder.unlock().await.unwrap();
    for expected in 0..4 {
        assert_eq!(within(SHORT, order_rx.recv()).await, Some(expected));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_waiter_leaves_the_line() {
    let f = fixture!();
    let session = f.coordinator.session().await.unwrap();
    let locker = f.coordinator.locker(&session, "c").unwrap();
    let holder = locker.lock().await.unwrap();
    let other = f.coordinator.session().await.unwrap();
    let waiter = f.coordinator.locker(&other, "c").unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), waiter.lock())
            .await
            .is_err()
    );
    // The dropped waiter's entry is withdrawn in the background.
    f.wait_in_line("c", "lock", 1).await;
    holder.unlock().await.unwrap();
    assert!(waiter.try_lock().await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contenders_counts_the_holder_and_queued_waiters() {
    let f = fixture!();
    let session = f.coordinator.session().await.unwrap();
    let locker = f.coordinator.locker(&session, "n").unwrap();
    assert_eq!(locker.contenders().await.unwrap(), 0, "free");
    let holder = locker.lock().await.unwrap();
    assert_eq!(locker.contenders().await.unwrap(), 1, "held");
    let other = f.other_client().await;
    let waiter = tokio::spawn(async move {
        let session = other.session().await.unwrap();
        let guard = other.locker(&session, "n").unwrap().lock().await.unwrap();
        guard.unlock().await.unwrap();
        session.close().await.unwrap();
    });
    let deadline = Instant::now() + SHORT;
    while locker.contenders().await.unwrap() != 2 {
        assert!(Instant::now() < deadline, "the waiter never showed up");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        !waiter.is_finished(),
        "the waiter got the lock while it was held"
    );
    holder.unlock().await.unwrap();
    within(SHORT, waiter).await.unwrap();
    assert_eq!(locker.contenders().await.unwrap(), 0, "free again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_session_is_revoked_gets_session_lost() {
    let f = fixture!();
    let session = f.coordinator.session().await.unwrap();
    let _holder = f
        .coordinator
        .locker(&session, "w")
        .unwrap()
        .lock()
        .await
        .unwrap();
    let other = f
        .coordinator
        .session_with(SessionOptions::with_ttl(Duration::from_millis(1000)))
        .await
        .unwrap();
    let waiter = f.coordinator.locker(&other, "w").unwrap();
    let waiting = tokio::spawn(async move { waiter.lock().await });
    f.wait_in_line("w", "lock", 2).await;
    f.backend.revoke_session(other.id()).await.unwrap();
    assert!(matches!(
        within(SHORT, waiting).await.unwrap(),
        Err(Error::SessionLost)
    ));
    assert_eq!(f.in_line("w", "lock").await, 1);
}

// ---- rwlock -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rwlock_readers_share_and_a_waiting_writer_blocks_later_readers() {
    let f = fixture!();
    let s1 = f.coordinator.session().await.unwrap();
    let s2 = f.coordinator.session().await.unwrap();
    let rw1 = f.coordinator.rwlock(&s1, "rw").unwrap();
    let rw2 = f.coordinator.rwlock(&s2, "rw").unwrap();
    let r1 = rw1.read().await.unwrap();
    let r2 = rw2.try_read().await.unwrap().expect("readers share");
    assert!(rw2.try_write().await.unwrap().is_none());
    let writer = tokio::spawn(async move {
        let guard = rw2.write().await.unwrap();
        (guard.token(), guard)
    });
    f.wait_in_line("rw", "rw", 3).await;
    // A reader arriving after the waiting writer waits behind it.
    assert!(rw1.try_read().await.unwrap().is_none());
    let late_reader = {
        let coordinator = f.coordinator.clone();
        let s1 = s1.clone();
        tokio::spawn(async move { coordinator.rwlock(&s1, "rw").unwrap().read().await.unwrap() })
    };
    f.wait_in_line("rw", "rw", 4).await;
    r1.unlock().await.unwrap();
    assert!(!writer.is_finished());
    r2.unlock().await.unwrap();
    let (token, guard) = within(SHORT, writer).await.unwrap();
    assert!(token.get() > 0);
    assert!(!late_reader.is_finished());
    guard.unlock().await.unwrap();
    let reader = within(SHORT, late_reader).await.unwrap();
    reader.unlock().await.unwrap();
}

// ---- election -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_terms_values_and_observe() {
    let f = fixture!();
    let s1 = f.coordinator.session().await.unwrap();
    let s2 = f.coordinator.session().await.unwrap();
    let e1 = f.coordinator.election(&s1, "e").unwrap();
    let e2 = f.coordinator.election(&s2, "e").unwrap();
    assert_eq!(e1.leader().await.unwrap(), None);
    let mut observed = e2.observe();
    let first = e1.campaign(Bytes::from_static(b"one")).await.unwrap();
    let seen = within(SHORT, observed.next()).await.unwrap().unwrap();
    assert_eq!(seen.value, Bytes::from_static(b"one"));
    assert_eq!(seen.term, first.term());
    let second = tokio::spawn(async move { e2.campaign(Bytes::from_static(b"two")).await });
    f.wait_in_line("e", "elect", 2).await;
    first.proclaim("one again").await.unwrap();
    first.proclaim("one more").await.unwrap();
    for expected in ["one again", "one more"] {
        let seen = within(SHORT, observed.next()).await.unwrap().unwrap();
        assert_eq!(seen.value, Bytes::from(expected));
        assert_eq!(seen.term, first.term());
    }
    let first_term = first.term();
    first.resign().await.unwrap();
    let second = within(SHORT, second).await.unwrap().unwrap();
    assert!(second.term() > first_term);
    let seen = within(SHORT, observed.next()).await.unwrap().unwrap();
    assert_eq!(seen.value, Bytes::from_static(b"two"));
    assert_eq!(seen.term, second.term());
    let leader = e1.leader().await.unwrap().unwrap();
    assert_eq!(leader.term, second.term());
    assert_eq!(leader.key, second.key());
    // Lost leadership cannot proclaim.
    f.backend.revoke_session(s2.id()).await.unwrap();
    within(Duration::from_secs(25), second.lost()).await;
    assert!(matches!(
        second.proclaim("stale").await,
        Err(Error::NotLeader)
    ));
    assert_eq!(e1.leader().await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_notices_a_crashed_leader_by_its_ttl() {
    let f = fixture!();
    let url = f.url.clone();
    crashed_holder(url, |coordinator, session| async move {
        let leadership = coordinator
            .election(&session, "crash")?
            .campaign(Bytes::from_static(b"doomed"))
            .await?;
        std::mem::forget(leadership);
        Ok(())
    });
    let session = f.coordinator.session().await.unwrap();
    let election = f.coordinator.election(&session, "crash").unwrap();
    let mut observed = election.observe();
    let doomed = within(SHORT, observed.next()).await.unwrap().unwrap();
    assert_eq!(doomed.value, Bytes::from_static(b"doomed"));
    let next = tokio::spawn(async move {
        let leadership = election
            .campaign(Bytes::from_static(b"next"))
            .await
            .unwrap();
        (leadership, election)
    });
    let seen = within(SHORT, observed.next()).await.unwrap().unwrap();
    assert_eq!(seen.value, Bytes::from_static(b"next"));
    assert!(seen.term > doomed.term);
    let (leadership, _election) = within(SHORT, next).await.unwrap();
    assert_eq!(leadership.term(), seen.term);
}

// ---- queue --------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_is_fifo_within_priority() {
    let f = fixture!();
    let queue = f.coordinator.queue("q").unwrap();
    assert_eq!(queue.try_dequeue().await.unwrap(), None);
    queue.enqueue("a").await.unwrap();
    queue.enqueue_with_priority("low", 9).await.unwrap();
    queue.enqueue("b").await.unwrap();
    queue.enqueue_with_priority("mid", 3).await.unwrap();
    queue
        .enqueue_with_priority(Bytes::from_static(b"\0\xffbin"), 3)
        .await
        .unwrap();
    assert_eq!(queue.len().await.unwrap(), 5);
    let mut out = Vec::new();
    while let Some(item) = queue.try_dequeue().await.unwrap() {
        out.push(item);
    }
    let expected: Vec<Bytes> = vec![
        "a".into(),
        "b".into(),
        "mid".into(),
        Bytes::from_static(b"\0\xffbin"),
        "low".into(),
    ];
    assert_eq!(out, expected);
    assert!(queue.is_empty().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_dequeue_is_woken_by_enqueue() {
    let f = fixture!();
    let consumer = f.coordinator.queue("bq").unwrap();
    let waiting = tokio::spawn(async move { consumer.dequeue().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let other = f.other_client().await;
    other.queue("bq").unwrap().enqueue("hello").await.unwrap();
    assert_eq!(within(SHORT, waiting).await.unwrap().unwrap(), "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_dequeues_lose_nothing_and_deliver_once() {
    let f = fixture!();
    const ITEMS: usize = 300;
    let received = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (done, stop) = tokio::sync::watch::channel(false);
    let mut consumers = Vec::new();
    for c in 0..6u64 {
        let queue = f.other_client().await.queue("cq").unwrap();
        let received = Arc::clone(&received);
        let mut stop = stop.clone();
        consumers.push(tokio::spawn(async move {
            let mut round = 0u64;
            while !*stop.borrow() {
                round += 1;
                // Cancel dequeues at all kinds of moments, including mid-reply; every
                // eighth waits until an item comes or the test stops, so that the items
                // drain on a machine too busy to answer any dequeue within 3 ms.
                let limit = if round.is_multiple_of(8) {
                    Duration::MAX
                } else {
                    Duration::from_micros(50 + (round * 37 + c * 101) % 3000)
                };
                tokio::select! {
                    dequeued = tokio::time::timeout(limit, queue.dequeue()) => {
                        if let Ok(item) = dequeued {
                            received.lock().unwrap().push(item.unwrap());
                        }
                    }
                    _ = stop.changed() => {}
                }
            }
        }));
    }
    let producer = f.coordinator.queue("cq").unwrap();
    for i in 0..ITEMS {
        producer.enqueue(i.to_string()).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.lock().unwrap().len() < ITEMS {
        assert!(
            Instant::now() < deadline,
            "items lost: {}",
            received.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done.send_replace(true);
    for consumer in consumers {
        within(SHORT, consumer).await.unwrap();
    }
    // Let background clean-ups settle, then nothing is left over or in flight.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut got: Vec<usize> = received
        .lock()
        .unwrap()
        .iter()
        .map(|b| std::str::from_utf8(b).unwrap().parse().unwrap())
        .collect();
    got.sort();
    assert_eq!(
        got,
        (0..ITEMS).collect::<Vec<_>>(),
        "each item exactly once"
    );
    assert_eq!(producer.len().await.unwrap(), 0);
}

// ---- barriers -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barrier_blocks_while_held() {
    let f = fixture!();
    let barrier = f.coordinator.barrier("b").unwrap();
    within(SHORT, barrier.wait()).await.unwrap();
    barrier.hold().await.unwrap();
    barrier.hold().await.unwrap();
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let barrier = f.coordinator.barrier("b").unwrap();
            tokio::spawn(async move { barrier.wait().await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(waiters.iter().all(|w| !w.is_finished()));
    barrier.release().await.unwrap();
    for waiter in waiters {
        within(SHORT, waiter).await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_barrier_enters_and_leaves_together() {
    let f = fixture!();
    let mut tasks = Vec::new();
    let entered = Arc::new(AtomicU64::new(0));
    for _ in 0..3 {
        let coordinator = f.other_client().await;
        let entered = Arc::clone(&entered);
        tasks.push(tokio::spawn(async move {
            let session = coordinator.session().await.unwrap();
            let barrier = coordinator.double_barrier(&session, "db", 3).unwrap();
            barrier.enter().await.unwrap();
            assert_eq!(entered.fetch_add(1, Ordering::SeqCst) / 3, 0);
            barrier.leave().await.unwrap();
            session
        }));
    }
    let mut sessions = Vec::new();
    for task in tasks {
        sessions.push(within(SHORT, task).await.unwrap());
    }
    assert_eq!(entered.load(Ordering::SeqCst), 3);
    // Over the count: a fourth participant while three are inside.
    let inside: Vec<_> = sessions
        .iter()
        .map(|s| f.coordinator.double_barrier(s, "db2", 2).unwrap())
        .collect();
    let (a, b) = tokio::join!(inside[0].enter(), inside[1].enter());
    a.unwrap();
    b.unwrap();
    assert!(matches!(
        inside[2].enter().await,
        Err(Error::TooManyParticipants { count: 2, .. })
    ));
    assert!(matches!(inside[2].leave().await, Err(Error::NotHeld)));
    let (a, b) = tokio::join!(inside[0].leave(), inside[1].leave());
    a.unwrap();
    b.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_barrier_leave_is_not_blocked_by_a_dead_participant() {
    let f = fixture!();
    let s1 = f.coordinator.session().await.unwrap();
    let s2 = f
        .coordinator
        .session_with(SessionOptions::with_ttl(Duration::from_millis(1000)))
        .await
        .unwrap();
    let b1 = f.coordinator.double_barrier(&s1, "dead", 2).unwrap();
    let b2 = f.coordinator.double_barrier(&s2, "dead", 2).unwrap();
    let (a, b) = tokio::join!(b1.enter(), b2.enter());
    a.unwrap();
    b.unwrap();
    let leaving = tokio::spawn(async move { b1.leave().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!leaving.is_finished());
    f.backend.revoke_session(s2.id()).await.unwrap();
    within(SHORT, leaving).await.unwrap().unwrap();
}

// ---- stm ----------------------------------------------------------------------------

async fn bank(coordinator: &Coordinator, isolation: Isolation) {
    let stm = coordinator.stm().unwrap();
    for i in 0..5 {
        stm.atomically(isolation, move |tx| async move {
            tx.put(&format!("accounts/{i}"), "100");
            Ok(())
        })
        .await
        .unwrap();
    }
    let mut workers = Vec::new();
    for w in 0..10u64 {
        let stm = stm.clone();
        workers.push(tokio::spawn(async move {
            let mut seed = w * 7919 + 1;
            for _ in 0..100 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let from = (seed >> 33) % 5;
                let to = (from + 1 + (seed >> 40) % 4) % 5;
                stm.atomically(isolation, move |tx| async move {
                    let read = |v: Option<Bytes>| -> u64 {
                        std::str::from_utf8(&v.unwrap()).unwrap().parse().unwrap()
                    };
                    let a = read(tx.get(&format!("accounts/{from}")).await?);
                    let b = read(tx.get(&format!("accounts/{to}")).await?);
                    let moved = a / 2;
                    tx.put(&format!("accounts/{from}"), (a - moved).to_string());
                    tx.put(&format!("accounts/{to}"), (b + moved).to_string());
                    Ok(())
                })
                .await
                .unwrap();
            }
        }));
    }
    for worker in workers {
        within(Duration::from_secs(120), worker).await.unwrap();
    }
    let total = stm
        .atomically(isolation, |tx| async move {
            let mut total = 0u64;
            for i in 0..5 {
                let v = tx.get(&format!("accounts/{i}")).await?.unwrap();
                total += std::str::from_utf8(&v).unwrap().parse::<u64>().unwrap();
            }
            Ok(total)
        })
        .await
        .unwrap();
    assert_eq!(total, 500, "{isolation}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stm_bank_keeps_the_sum_at_serializable_levels() {
    let f = fixture!();
    for isolation in [
        Isolation::SerializableSnapshot,
        Isolation::Serializable,
        Isolation::RepeatableReads,
    ] {
        let coordinator = distsync::connect(&support::with_namespace(
            &server_url().unwrap(),
            &format!("{}{isolation}:", f.namespace),
        ))
        .await
        .unwrap();
        bank(&coordinator, isolation).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stm_levels_differ_on_write_skew_and_lost_updates() {
    let f = fixture!();
    let stm = f.coordinator.stm().unwrap();
    // A write-only conflict: snapshot isolation checks the write set, Serializable not.
    for (isolation, conflicts) in [
        (Isolation::SerializableSnapshot, true),
        (Isolation::Serializable, false),
    ] {
        let key = format!("w/{isolation}");
        let other = stm.clone();
        let interfered = Arc::new(AtomicU64::new(0));
        let committed = stm
            .atomically_with(isolation, &distsync_core::StmOptions::default(), |tx| {
                let other = other.clone();
                let interfered = Arc::clone(&interfered);
                let key = key.clone();
                async move {
                    tx.get("w/anchor").await?;
                    if interfered.fetch_add(1, Ordering::SeqCst) == 0 {
                        let key = key.clone();
                        other
                            .atomically(Isolation::ReadCommitted, move |tx| {
                                let key = key.clone();
                                async move {
                                    tx.put(&key, "other");
                                    Ok(())
                                }
                            })
                            .await?;
                    }
                    tx.put(&key, "mine");
                    Ok(())
                }
            })
            .await
            .unwrap();
        assert_eq!(committed.attempts > 1, conflicts, "{isolation}");
    }
    // Deleting a key is a change a reader's commit sees.
    stm.atomically(Isolation::Serializable, |tx| async move {
        tx.put("d/x", "1");
        Ok(())
    })
    .await
    .unwrap();
    let other = stm.clone();
    let first = Arc::new(AtomicU64::new(0));
    let committed = stm
        .atomically_with(
            Isolation::RepeatableReads,
            &distsync_core::StmOptions::default(),
            |tx| {
                let other = other.clone();
                let first = Arc::clone(&first);
                async move {
                    let seen = tx.get("d/x").await?;
                    if first.fetch_add(1, Ordering::SeqCst) == 0 {
                        other
                            .atomically(Isolation::ReadCommitted, |tx| async move {
                                tx.delete("d/x");
                                Ok(())
                            })
                            .await?;
                    }
                    tx.put("d/y", if seen.is_some() { "had x" } else { "no x" });
                    Ok(())
                }
            },
        )
        .await
        .unwrap();
    assert_eq!(committed.attempts, 2);
    let y = stm
        .atomically(
            Isolation::ReadCommitted,
            |tx| async move { tx.get("d/y").await },
        )
        .await
        .unwrap();
    assert_eq!(y, Some(Bytes::from_static(b"no x")));
    assert!(matches!(
        stm.atomically(Isolation::Serializable, |tx| async move {
            tx.put("bad//key", "x");
            Ok(())
        })
        .await,
        Err(Error::InvalidName { .. })
    ));
    let _ = Name::new("ok").unwrap();
}
