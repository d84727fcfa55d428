//! Guards over the memory backend: release, loss and guarded writes.

use std::time::Duration;

use distsync_core::FencingToken;
use distsync_core::backend::Backend;
use distsync_core::guard::*;
use distsync_core::session::SessionOptions;
use distsync_kv::memory::MemoryBackend;

#[tokio::test]
async fn an_unlock_whose_caller_stops_waiting_still_releases() {
    let session = MemoryBackend::new()
        .session(SessionOptions::default())
        .await
        .unwrap();
    let (go, store_answers) = tokio::sync::oneshot::channel::<()>();
    let (released, was_released) = tokio::sync::oneshot::channel::<()>();
    let release: ReleaseFn = Box::new(move || {
        Box::pin(async move {
            // A store slow to answer the release.
            let _ = store_answers.await;
            let _ = released.send(());
            Ok(())
        })
    });
    let guard = distsync_core::raw::lock_guard("k".into(), FencingToken(1), &session, release);
    let lost = guard.lost();
    // The caller gives up on the unlock before the store answered.
    let gave_up = tokio::time::timeout(Duration::from_millis(20), guard.unlock()).await;
    assert!(gave_up.is_err(), "the release could not have finished yet");
    go.send(()).unwrap();
    // The release went on without its caller.
    tokio::time::timeout(Duration::from_secs(5), was_released)
        .await
        .expect("the release was dropped with the unlock's future")
        .expect("the release was dropped with the unlock's future");
    tokio::time::timeout(Duration::from_secs(5), lost)
        .await
        .expect("lost() fires once the hold is released");
}
