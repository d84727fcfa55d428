//! The Redis semaphore against a real Redis server (`DISTSYNC_REDIS_URL`), where the
//! conformance cases do not reach: one wake-up per grant (no herd), a crashed holder's
//! permit granted after its TTL, the permit count forgotten once nobody is live, and
//! permits listed by the export.
//!
//! Each test uses its own namespace, so tests run in parallel on one server.

use crate::support;

use std::time::{Duration, Instant};

use distsync_core::{Backend, Coordinator, Error, FencingToken};
use futures::StreamExt;
use support::{crashed_holder, server_url, unique_namespace, with_namespace, CRASH_TTL};

const SHORT: Duration = Duration::from_secs(10);

struct Fixture {
    server: String,
    url: String,
    namespace: String,
    coordinator: Coordinator,
}

impl Fixture {
    async fn new() -> Option<Self> {
        let server = server_url()?;
        let namespace = unique_namespace("semtest");
        let url = with_namespace(&server, &namespace);
        let coordinator = distsync::connect(&url).await.unwrap();
        Some(Self {
            server,
            url,
            namespace,
            coordinator,
        })
    }

    async fn raw(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.server.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Entries in the semaphore's line (holders and waiters, live or not yet forgotten).
    async fn in_line(&self, name: &str) -> usize {
        redis::cmd("ZCARD")
            .arg(format!("{{{}{name}}}:sem:q", self.namespace))
            .query_async(&mut self.raw().await)
            .await
            .unwrap()
    }

    async fn wait_in_line(&self, name: &str, n: usize) {
        let deadline = Instant::now() + SHORT;
        while self.in_line(name).await != n {
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

async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(SHORT, future)
        .await
        .expect("did not finish in time")
}

/// Every wake-up published for the semaphore is the one of the waiter it grants:
/// with two permits held and three waiters, each of three releases publishes exactly
/// one message, on the channel of the next waiter in line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_release_wakes_only_the_waiter_it_lets_in() {
    let f = fixture!();
    let mut pubsub = redis::Client::open(f.server.as_str())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub
        .psubscribe(format!("*{{{}herd}}:sem:w:*", f.namespace))
        .await
        .unwrap();
    let mut messages = pubsub.into_on_message();

    let (a, b) = (
        f.coordinator.session().await.unwrap(),
        f.coordinator.session().await.unwrap(),
    );
    let pa = f.coordinator.semaphore(&a, "herd", 2).unwrap();
    let pb = f.coordinator.semaphore(&b, "herd", 2).unwrap();
    let held_a = within(pa.acquire()).await.unwrap();
    let held_b = within(pb.acquire()).await.unwrap();
    let mut waiters = Vec::new();
    for i in 0..3 {
        let coordinator = distsync::connect(&f.url).await.unwrap();
        waiters.push(tokio::spawn(async move {
            let session = coordinator.session().await.unwrap();
            let permit = coordinator
                .semaphore(&session, "herd", 2)
                .unwrap()
                .acquire()
                .await
                .unwrap();
            (permit, session)
        }));
        f.wait_in_line("herd", 3 + i).await;
    }
    let mut waiters = waiters.into_iter();
    // Release A, then B, then the first waiter's permit: each lets in one waiter.
    held_a.release().await.unwrap();
    let (first, _s0) = within(waiters.next().unwrap()).await.unwrap();
    held_b.release().await.unwrap();
    let (second, _s1) = within(waiters.next().unwrap()).await.unwrap();
    let tokens = vec![first.token().0, second.token().0];
    first.release().await.unwrap();
    let (third, _s2) = within(waiters.next().unwrap()).await.unwrap();
    let tokens = [tokens, vec![third.token().0]].concat();
    // A sentinel on a matching channel: messages of one connection arrive in
    // publication order, so everything published for the semaphore so far comes
    // before it.
    let sentinel = format!("x{{{}herd}}:sem:w:sentinel", f.namespace);
    redis::cmd("PUBLISH")
        .arg(&sentinel)
        .arg("end")
        .query_async::<i64>(&mut f.raw().await)
        .await
        .unwrap();
    let mut published = Vec::new();
    loop {
        let message = within(messages.next()).await.unwrap();
        if message.get_channel_name() == sentinel {
            break;
        }
        let token: String = message.get_payload().unwrap();
        published.push((message.get_channel_name().to_owned(), token));
    }
    let payloads: Vec<u64> = published.iter().map(|(_, t)| t.parse().unwrap()).collect();
    assert_eq!(
        payloads, tokens,
        "exactly one wake-up per grant, carrying its token: {published:?}"
    );
    assert!(
        published[2]
            .0
            .ends_with(&third.key()[third.key().rfind(":e:").unwrap() + 3..]),
        "the last wake-up went to the third waiter: {published:?}, {}",
        third.key()
    );
    drop((second, third));
}

/// A permit of `name` (of `count`) of a holder that crashes ([`crashed_holder`]): its
/// token and key.
fn crashed_permit(url: String, name: &'static str, count: usize) -> (FencingToken, String) {
    crashed_holder(url, move |coordinator, session| async move {
        let permit = coordinator
            .semaphore(&session, name, count)?
            .acquire()
            .await?;
        let held = (permit.token(), permit.key().to_owned());
        std::mem::forget(permit);
        Ok(held)
    })
}

/// A holder that stops (no keepalive, no release) loses its permit once its session
/// TTL has run out: a waiter is granted then, by the TTL safety net, with a greater
/// token. The permit count is state only while someone is live: once the crashed
/// entry has expired, another count is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_holders_permit_is_granted_after_its_ttl() {
    let f = fixture!();
    let (token, key) = crashed_permit(f.url.clone(), "crash", 1);
    let session = f.coordinator.session().await.unwrap();
    // While the crashed entry lives, another count is refused and leaves nothing.
    let other = f.coordinator.semaphore(&session, "crash", 2).unwrap();
    assert!(matches!(
        other.try_acquire().await,
        Err(Error::InvalidArgument(m)) if m.contains("in use with 1 permits")
    ));
    assert_eq!(f.in_line("crash").await, 1);
    let started = Instant::now();
    let permit = within(
        f.coordinator
            .semaphore(&session, "crash", 1)
            .unwrap()
            .acquire(),
    )
    .await
    .unwrap();
    // CRASH_TTL and a second.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "granted {:?} after the crash",
        started.elapsed()
    );
    assert!(permit.token() > token);
    assert_ne!(permit.key(), key);
    permit.release().await.unwrap();
    // Nobody is live: the count 2 is accepted now.
    let two = f.coordinator.semaphore(&session, "crash", 2).unwrap();
    let first = two.try_acquire().await.unwrap().expect("a free permit");
    let second = two.try_acquire().await.unwrap().expect("a second permit");
    assert!(two.try_acquire().await.unwrap().is_none(), "two permits");
    assert!(second.token() > first.token());
}

/// The stale count of crashed holders does not block another count once their
/// entries expired, even though no release ever cleaned the line up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_line_forgets_its_count() {
    let f = fixture!();
    let (_, key) = crashed_permit(f.url.clone(), "stale", 3);
    let mut raw = f.raw().await;
    let deadline = Instant::now() + SHORT;
    while redis::cmd("EXISTS")
        .arg(&key)
        .query_async::<i64>(&mut raw)
        .await
        .unwrap()
        == 1
    {
        assert!(Instant::now() < deadline, "the crashed entry never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stored: Option<String> = redis::cmd("GET")
        .arg(format!("{{{}stale}}:sem:n", f.namespace))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(
        stored.as_deref(),
        Some("3"),
        "the stale count is still stored"
    );
    let session = f.coordinator.session().await.unwrap();
    let one = f.coordinator.semaphore(&session, "stale", 1).unwrap();
    let permit = one
        .try_acquire()
        .await
        .unwrap()
        .expect("the count 1 accepted");
    assert_eq!(f.in_line("stale").await, 1, "the dead entry was forgotten");
    permit.release().await.unwrap();
}

/// Held and waiting permits are live holds in the export; a released one is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_lists_permits() {
    let f = fixture!();
    let backend = distsync_redis::backend(&f.url).await.unwrap();
    let session = f.coordinator.session().await.unwrap();
    let semaphore = f.coordinator.semaphore(&session, "exported", 2).unwrap();
    let permit = semaphore.acquire().await.unwrap();
    let snapshot = backend.export().await.unwrap();
    assert_eq!(snapshot.active_holds, vec![permit.key().to_owned()]);
    permit.release().await.unwrap();
    assert!(backend.export().await.unwrap().active_holds.is_empty());
}

/// A holder that pauses (its runtime stops: no renewal, connections left open) past its
/// TTL loses its permit to the waiter once its entry has expired; when it resumes, its
/// permit reports `lost()` and its release `SessionLost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_holder_loses_its_permit_after_its_ttl() {
    let f = fixture!();
    let url = f.url.clone();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (resume_tx, resume_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        // One thread: while it blocks below, nothing of this client runs.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let coordinator = distsync::connect(&url).await.unwrap();
            let session = coordinator
                .session_with(distsync_core::SessionOptions::with_ttl(CRASH_TTL))
                .await
                .unwrap();
            let permit = coordinator
                .semaphore(&session, "paused", 1)
                .unwrap()
                .acquire()
                .await
                .unwrap();
            held_tx
                .send((permit.token(), permit.key().to_owned()))
                .unwrap();
            resume_rx.recv().unwrap();
            let lost = tokio::time::timeout(Duration::from_secs(2), permit.lost())
                .await
                .is_ok();
            (lost, permit.release().await)
        })
    });
    let (token, key) = held_rx.recv_timeout(SHORT).unwrap();
    let session = f.coordinator.session().await.unwrap();
    let permit = within(
        f.coordinator
            .semaphore(&session, "paused", 1)
            .unwrap()
            .acquire(),
    )
    .await
    .unwrap();
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut f.raw().await)
        .await
        .unwrap();
    assert_eq!(exists, 0, "granted while the paused holder's entry lives");
    assert!(permit.token() > token);
    resume_tx.send(()).unwrap();
    let (lost, released) = holder.join().unwrap();
    assert!(lost, "the resumed holder's permit did not report lost()");
    assert!(matches!(released, Err(Error::SessionLost)), "{released:?}");
    permit.release().await.unwrap();
}
