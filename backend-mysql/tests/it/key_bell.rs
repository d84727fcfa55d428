//! Key bells: a waiter in another process learns of its predecessor's release by the
//! key's bell, not by the watch hub's poll.

use std::time::Duration;

use tokio::time::timeout;

use crate::common::*;

/// Both clients poll the log once an hour: a waiter that was granted at all within
/// [`PATIENCE`] heard the release by the bell of the holder's key.
#[tokio::test]
async fn a_lock_passes_between_processes_by_the_bell_of_the_holders_key() {
    let Some((kv, url)) = store("&poll_interval=3600s").await else {
        return;
    };
    let first = distsync::connect(&url).await.unwrap();
    let second = distsync::connect(&url).await.unwrap();
    let holder_session = first.session().await.unwrap();
    let waiter_session = second.session().await.unwrap();
    let held = first
        .locker(&holder_session, "bells/a")
        .unwrap()
        .lock()
        .await
        .unwrap();
    let locker = second.locker(&waiter_session, "bells/a").unwrap();
    let waiter = tokio::spawn(async move { locker.lock().await });
    // The waiter is in line (its key is there) before the holder lets go.
    timeout(PATIENCE, async {
        while second
            .locker(&waiter_session, "bells/a")
            .unwrap()
            .contenders()
            .await
            .unwrap()
            < 2
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the waiter in line in time");
    let token = held.token();
    held.unlock().await.unwrap();
    let granted = timeout(PATIENCE, waiter)
        .await
        .expect("the waiter woken by the bell, not the hourly poll")
        .unwrap()
        .unwrap();
    assert!(granted.token() > token);
    granted.unlock().await.unwrap();
    drop_tables(&kv, &url).await;
}
