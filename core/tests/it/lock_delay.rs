//! Lock-delay over the memory backend: a grant after an unclean loss waits the delay,
//! one after a clean release does not; `try_lock`, a bounded `lock`, a loss during the
//! delay and a stale holder's late release behave as `distsync_core::lock_delay` says.
use std::time::Duration;

use distsync_core::LockOptions;
use distsync_core::lock_delay::RECORD_SEGMENT;
use distsync_core::name::MAX_NAME_LEN;
use distsync_core::{Coordinator, Error, Name};
use tokio::time::Instant;

const DELAY: Duration = Duration::from_millis(400);
const LONG_DELAY: Duration = Duration::from_secs(30);

fn coordinator() -> Coordinator {
    Coordinator::new(distsync_kv::memory::MemoryBackend::new())
}

async fn record(coordinator: &Coordinator, lock: &str) -> i64 {
    let name = Name::new(format!("{lock}/{RECORD_SEGMENT}")).unwrap();
    coordinator
        .backend()
        .counter(name)
        .unwrap()
        .get()
        .await
        .unwrap()
}

fn delayed(delay: Duration) -> LockOptions {
    LockOptions::new().lock_delay(delay)
}

/// A holds `lock` with a lock-delay and loses its session while holding; its
/// guard is then dropped (no clean release).
async fn lost_while_held(coordinator: &Coordinator, lock: &str) {
    let session = coordinator.session().await.unwrap();
    let locker = coordinator
        .locker_with(&session, lock, delayed(LONG_DELAY))
        .unwrap();
    let guard = locker.lock().await.unwrap();
    session.close().await.unwrap();
    assert!(guard.is_lost());
    drop(guard);
    assert_eq!(record(coordinator, lock).await.rem_euclid(2), 1);
}

#[tokio::test]
async fn a_clean_release_is_followed_by_a_prompt_grant() {
    let coordinator = coordinator();
    let session = coordinator.session().await.unwrap();
    let locker = coordinator
        .locker_with(&session, "clean", delayed(LONG_DELAY))
        .unwrap();
    let first = locker.lock().await.unwrap();
    assert_eq!(record(&coordinator, "clean").await, 1);
    first.unlock().await.unwrap();
    assert_eq!(record(&coordinator, "clean").await, 2);
    let started = Instant::now();
    let second = distsync_core::timeout(Duration::from_secs(5), locker.lock())
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(record(&coordinator, "clean").await, 3);
    // A drop is a clean release too, recorded before the store frees the lock.
    drop(second);
    let third = distsync_core::timeout(Duration::from_secs(5), locker.lock())
        .await
        .unwrap();
    assert_eq!(record(&coordinator, "clean").await, 5);
    third.unlock().await.unwrap();
}

#[tokio::test]
async fn a_grant_after_a_loss_waits_the_delay() {
    let coordinator = coordinator();
    lost_while_held(&coordinator, "lossy").await;
    let session = coordinator.session().await.unwrap();
    let locker = coordinator
        .locker_with(&session, "lossy", delayed(DELAY))
        .unwrap();
    let started = Instant::now();
    let guard = locker.lock().await.unwrap();
    assert!(
        started.elapsed() >= DELAY,
        "granted after {:?}",
        started.elapsed()
    );
    assert_eq!(record(&coordinator, "lossy").await, 3);
    guard.unlock().await.unwrap();
    assert_eq!(record(&coordinator, "lossy").await, 4);
}

#[tokio::test]
async fn try_lock_waits_out_a_pending_delay() {
    let coordinator = coordinator();
    lost_while_held(&coordinator, "tried").await;
    let session = coordinator.session().await.unwrap();
    let locker = coordinator
        .locker_with(&session, "tried", delayed(DELAY))
        .unwrap();
    let started = Instant::now();
    let guard = locker.try_lock().await.unwrap().expect("free in the store");
    assert!(
        started.elapsed() >= DELAY,
        "granted after {:?}",
        started.elapsed()
    );
    // Held now: another session's try_lock answers at once, without a grant.
    let other = coordinator.session().await.unwrap();
    let contender = coordinator
        .locker_with(&other, "tried", delayed(DELAY))
        .unwrap();
    assert!(contender.try_lock().await.unwrap().is_none());
    guard.unlock().await.unwrap();
}

#[tokio::test]
async fn a_timeout_inside_the_delay_releases_the_grant_and_keeps_the_record() {
    let coordinator = coordinator();
    lost_while_held(&coordinator, "timed").await;
    let before = record(&coordinator, "timed").await;
    let session = coordinator.session().await.unwrap();
    let locker = coordinator
        .locker_with(&session, "timed", delayed(LONG_DELAY))
        .unwrap();
    let timeout = Duration::from_millis(200);
    let started = Instant::now();
    let error = distsync_core::timeout(timeout, locker.lock())
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Timeout(t) if t == timeout),
        "{error:?}"
    );
    assert!(started.elapsed() >= timeout);
    assert!(started.elapsed() < LONG_DELAY);
    // No residue: the dropped grant is released in the background, as any dropped
    // guard is, so the lock is free within moments, and the record still says "lost".
    let plain = coordinator.locker(&session, "timed").unwrap();
    let freed_by = Instant::now() + Duration::from_secs(2);
    let guard = loop {
        if let Some(guard) = plain.try_lock().await.unwrap() {
            break guard;
        }
        assert!(
            Instant::now() < freed_by,
            "the grant was not released after the timeout"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(record(&coordinator, "timed").await, before);
    guard.unlock().await.unwrap();
}

#[tokio::test]
async fn a_loss_during_the_delay_ends_the_wait() {
    let coordinator = coordinator();
    lost_while_held(&coordinator, "ended").await;
    let session = coordinator.session().await.unwrap();
    let locker = coordinator
        .locker_with(&session, "ended", delayed(LONG_DELAY))
        .unwrap();
    let waiting = tokio::spawn(async move { locker.lock().await });
    let started = Instant::now();
    // The store grants at once; the wait is the delay. End the session during it.
    let probe = coordinator.locker(&session, "ended").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while probe.contenders().await.unwrap() == 0 {
        assert!(Instant::now() < deadline, "never granted in the store");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    session.close().await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the wait ends with the session")
        .unwrap();
    assert!(matches!(outcome, Err(Error::SessionLost)), "{outcome:?}");
    assert!(started.elapsed() < LONG_DELAY);
}

#[tokio::test]
async fn a_stale_holder_cannot_clear_a_later_holders_record() {
    let coordinator = coordinator();
    let name = Name::new(format!("stale/{RECORD_SEGMENT}")).unwrap();
    let raw = coordinator.backend().counter(name).unwrap();
    // A holder with the record at 7 lost its lock without releasing it.
    raw.set(7).await.unwrap();
    let session = coordinator.session().await.unwrap();
    let locker = coordinator
        .locker_with(&session, "stale", delayed(DELAY))
        .unwrap();
    let guard = locker.lock().await.unwrap();
    assert_eq!(raw.get().await.unwrap(), 9);
    // The old holder's late "clean release" finds a value it does not own.
    assert!(!raw.compare_and_set(7, 8).await.unwrap());
    guard.unlock().await.unwrap();
    assert_eq!(raw.get().await.unwrap(), 10);
}

#[tokio::test]
async fn zero_delay_is_the_plain_locker() {
    let coordinator = coordinator();
    let session = coordinator.session().await.unwrap();
    let locker = coordinator
        .locker_with(&session, "plain", LockOptions::new())
        .unwrap();
    locker.lock().await.unwrap().unlock().await.unwrap();
    assert_eq!(record(&coordinator, "plain").await, 0);
}

#[tokio::test]
async fn records_are_out_of_users_reach_and_long_names_are_refused() {
    let coordinator = coordinator();
    let error = coordinator
        .counter(&format!("jobs/{RECORD_SEGMENT}"))
        .err()
        .expect("reserved");
    assert!(matches!(error, Error::InvalidName { .. }), "{error:?}");
    // Only as a last segment under a lock's name.
    assert!(coordinator.counter(RECORD_SEGMENT).is_ok());
    assert!(
        coordinator
            .counter(&format!("jobs{RECORD_SEGMENT}"))
            .is_ok()
    );
    assert!(
        coordinator
            .counter(&format!("{RECORD_SEGMENT}/jobs"))
            .is_ok()
    );
    let session = coordinator.session().await.unwrap();
    let longest = "x".repeat(MAX_NAME_LEN - RECORD_SEGMENT.len() - 1);
    assert!(
        coordinator
            .locker_with(&session, &longest, delayed(DELAY))
            .is_ok()
    );
    let error = coordinator
        .locker_with(&session, &format!("{longest}x"), delayed(DELAY))
        .err()
        .expect("too long");
    assert!(matches!(error, Error::InvalidName { .. }), "{error:?}");
    // Without a delay, every valid name is fine.
    assert!(
        coordinator
            .locker_with(&session, &format!("{longest}x"), LockOptions::new())
            .is_ok()
    );
}
