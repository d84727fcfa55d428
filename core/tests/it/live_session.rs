//! `Coordinator::session_with` and `LiveSession` on the memory store: options checked
//! before any I/O, a new session after each loss (one per loss, whoever asks), the old
//! session's loss never hidden, an unreachable store waited out, and `close`.

use std::future::Future;
use std::time::Duration;

use distsync_core::{Coordinator, Error, Session, SessionOptions};
use distsync_kv::memory::{FaultyKv, MemoryKv, Partition};
use distsync_kv::recipes::KvBackend;

/// Short enough that a revoked session learns it within a tenth of a second (renewals
/// every `ttl / 3`), long enough for a loaded machine not to lose it by itself.
const TTL: Duration = Duration::from_millis(600);

/// How long any wait in these tests may take before the test fails.
const LIMIT: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, future)
        .await
        .unwrap_or_else(|_| panic!("{what} within {LIMIT:?}"))
}

/// A coordinator over a memory store behind a fault injector, and the injector.
fn flaky() -> (Coordinator, FaultyKv) {
    let kv = FaultyKv::new(MemoryKv::new());
    let backend = KvBackend::with_kv(kv.clone(), "", distsync_kv::memory::capabilities());
    (Coordinator::new(backend), kv)
}

async fn memory() -> Coordinator {
    distsync_kv::memory::connect("memory://").await.unwrap()
}

/// Ends `session` from the store side and waits until its holder knows.
async fn revoke(coordinator: &Coordinator, session: &Session) {
    coordinator
        .backend()
        .revoke_session(session.id())
        .await
        .unwrap();
    within("the revoked session's lost()", session.lost()).await;
}

fn assert_invalid<T: std::fmt::Debug>(what: &str, result: distsync_core::Result<T>, word: &str) {
    match result {
        Err(Error::InvalidArgument(message)) => {
            assert!(message.contains(word), "{what}: {message:?} names {word:?}")
        }
        other => panic!("{what}: expected InvalidArgument, got {other:?}"),
    }
}

#[tokio::test]
async fn session_with_honours_the_options() {
    let coordinator = memory().await;
    let options = SessionOptions::with_ttl(Duration::from_secs(2)).margin(Duration::from_secs(1));
    let before = tokio::time::Instant::now().into_std();
    let session = coordinator.session_with(options).await.unwrap();
    let after = tokio::time::Instant::now().into_std();
    assert_eq!(session.ttl(), Duration::from_secs(2));
    // Valid until the grant's send time + ttl − margin: 1 s after the grant was sent
    // (the default margin would give 1.6 s).
    let valid_until = session.valid_until().expect("live");
    let second = Duration::from_secs(1);
    assert!(
        before + second <= valid_until && valid_until <= after + second,
        "the margin of 1 s is in force: valid until {:?} after the call",
        valid_until.saturating_duration_since(before)
    );
    session.close().await.unwrap();

    let default = coordinator.session().await.unwrap();
    assert_eq!(default.ttl(), distsync_core::DEFAULT_TTL);
    assert_eq!(distsync_core::DEFAULT_TTL, Duration::from_secs(15));
    default.close().await.unwrap();
}

#[tokio::test]
async fn session_with_refuses_bad_options_before_any_io() {
    let (coordinator, kv) = flaky();
    // Every request would fail: an answer other than InvalidArgument means the store
    // was asked.
    kv.partition(Partition::Reset);
    assert_invalid(
        "a ttl below the memory store's minimum",
        coordinator
            .session_with(SessionOptions::with_ttl(Duration::from_millis(10)))
            .await,
        "minimum",
    );
    assert_invalid(
        "a margin of the whole ttl",
        coordinator
            .session_with(
                SessionOptions::with_ttl(Duration::from_secs(3)).margin(Duration::from_secs(3)),
            )
            .await,
        "margin",
    );
    assert_invalid(
        "a session TTL below the minimum",
        coordinator
            .session_with(SessionOptions::with_ttl(Duration::from_millis(10)))
            .await,
        "minimum",
    );
    let unreachable = coordinator.session().await.unwrap_err();
    assert!(unreachable.is_transient(), "{unreachable}");
}

#[tokio::test]
async fn live_session_refuses_bad_options() {
    let coordinator = memory().await;
    assert_invalid(
        "a ttl below the minimum",
        coordinator.live_session(SessionOptions::with_ttl(Duration::from_millis(10))),
        "minimum",
    );
    assert_invalid(
        "a margin leaving no room for a renewal",
        coordinator.live_session(
            SessionOptions::with_ttl(Duration::from_secs(3)).margin(Duration::from_secs(2)),
        ),
        "margin",
    );
}

#[tokio::test]
async fn after_a_loss_current_opens_a_new_session_and_the_old_stays_dead() {
    let coordinator = memory().await;
    let options = SessionOptions::with_ttl(TTL).margin(Duration::from_millis(100));
    let sessions = coordinator.live_session(options.clone()).unwrap();
    assert_eq!(
        sessions.generation(),
        0,
        "nothing opened before the first call"
    );
    assert_eq!(sessions.options(), &options);

    let first = sessions.current().await.unwrap();
    assert_eq!(first.ttl(), TTL);
    assert_eq!(
        sessions.current().await.unwrap().id(),
        first.id(),
        "a live session is kept"
    );
    assert_eq!(sessions.generation(), 1);

    let guard = coordinator
        .locker(&first, "jobs/live")
        .unwrap()
        .lock()
        .await
        .unwrap();
    revoke(&coordinator, &first).await;
    within("the guard's lost()", guard.lost()).await;

    let second = sessions.current().await.unwrap();
    assert_ne!(second.id(), first.id());
    assert!(!second.is_lost());
    assert_eq!(second.ttl(), TTL, "the replacement has the same options");
    assert_eq!(sessions.generation(), 2);
    assert_eq!(sessions.current().await.unwrap().id(), second.id());

    // The old session's handles stay dead; the lock is taken again through the new one.
    assert!(first.is_lost());
    assert!(matches!(
        coordinator
            .locker(&first, "jobs/live")
            .unwrap()
            .try_lock()
            .await,
        Err(Error::SessionLost)
    ));
    let again = coordinator
        .locker(&second, "jobs/live")
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .expect("the store released the old hold");
    assert!(again.token() > guard.token());
    again.unlock().await.unwrap();
    sessions.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_after_one_loss_share_one_replacement() {
    let (coordinator, kv) = flaky();
    let sessions = coordinator
        .live_session(SessionOptions::with_ttl(TTL))
        .unwrap();
    let first = sessions.current().await.unwrap();
    revoke(&coordinator, &first).await;
    // The store then goes away: callers arriving after the loss wait together while
    // the replacement is retried.
    kv.partition(Partition::Reset);
    let mut callers: Vec<_> = (0..16)
        .map(|_| {
            let sessions = sessions.clone();
            tokio::spawn(async move { sessions.current().await })
        })
        .collect();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut callers[0])
            .await
            .is_err(),
        "current() returned while the store was unreachable"
    );
    assert!(callers.iter().all(|caller| !caller.is_finished()));
    kv.partition(Partition::Open);

    let mut ids = Vec::new();
    for caller in callers {
        ids.push(
            within("a caller's session", caller)
                .await
                .unwrap()
                .unwrap()
                .id(),
        );
    }
    assert_ne!(ids[0], first.id());
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one replacement: {ids:?}"
    );
    assert_eq!(sessions.generation(), 2, "one session opened per loss");
    sessions.close().await.unwrap();
}

#[tokio::test]
async fn current_waits_out_an_unreachable_store() {
    let (coordinator, kv) = flaky();
    let sessions = coordinator
        .live_session(SessionOptions::with_ttl(TTL))
        .unwrap();
    kv.partition(Partition::Reset);
    let mut waiting = tokio::spawn({
        let sessions = sessions.clone();
        async move { sessions.current().await }
    });
    // Several attempts fail meanwhile (100 ms, then 200 ms pauses): a call that gave
    // up on the first would have finished.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut waiting)
            .await
            .is_err(),
        "current() returned while the store was unreachable"
    );
    kv.partition(Partition::Open);
    let session = within("a session once the store is back", waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(!session.is_lost());
    assert_eq!(sessions.generation(), 1);
    sessions.close().await.unwrap();
}

#[tokio::test]
async fn close_ends_the_session_and_every_later_call() {
    let (coordinator, kv) = flaky();
    let sessions = coordinator
        .live_session(SessionOptions::with_ttl(TTL))
        .unwrap();
    let clone = sessions.clone();
    let session = sessions.current().await.unwrap();
    sessions.close().await.unwrap();
    assert!(session.is_lost(), "close() closes the session in use");
    assert!(clone.is_closed());
    assert!(matches!(clone.current().await, Err(Error::SessionLost)));
    sessions.close().await.unwrap();

    // A close while an opening waits for the store ends that call too.
    let sessions = coordinator
        .live_session(SessionOptions::with_ttl(TTL))
        .unwrap();
    kv.partition(Partition::Reset);
    let waiting = tokio::spawn({
        let sessions = sessions.clone();
        async move { sessions.current().await }
    });
    tokio::task::yield_now().await;
    within("close() during an opening", sessions.close())
        .await
        .unwrap();
    let outcome = within("the waiting call's answer", waiting).await.unwrap();
    assert!(matches!(outcome, Err(Error::SessionLost)), "{outcome:?}");
    assert_eq!(sessions.generation(), 0);
}
