//! Key bells: a waiter in another process learns of its predecessor's release by the
//! key's bell, not by the watch hub's poll.

use std::time::Duration;

use distsync_conformance::log_capture::LogCapture;
use tokio::time::timeout;

use crate::common::*;

/// Both clients poll the log once an hour: a waiter that was granted at all within
/// [`PATIENCE`] heard the release by the bell of the holder's key.
#[tokio::test]
async fn a_lock_passes_between_processes_by_the_bell_of_the_holders_key() {
    pass_by_the_bell(Duration::ZERO).await;
}

/// A waiter whose predecessor holds for longer than one `GET_LOCK` on a bell waits (a
/// second) waits in `GET_LOCK` after `GET_LOCK`: by design, so none of them is logged
/// as a slow statement (sqlx's WARN), and nothing else warns either.
#[tokio::test]
async fn a_bell_waited_on_for_seconds_logs_no_warning() {
    let capture = LogCapture::start();
    pass_by_the_bell(Duration::from_millis(2_500)).await;
    let warnings: Vec<String> = capture
        .text()
        .lines()
        .filter(|line| line.contains(" WARN "))
        .map(str::to_owned)
        .collect();
    assert!(warnings.is_empty(), "warnings logged: {warnings:#?}");
}

/// A lock held by one process for `hold` once another waits for it, then released:
/// the waiter, in a process that polls the log once an hour, is granted within
/// [`PATIENCE`] of the release, with a higher token, so it heard the release by the
/// bell of the holder's key (held, on the server, before the waiter came).
async fn pass_by_the_bell(hold: Duration) {
    pass_between_processes("&poll_interval=3600s", hold, Bells::On).await;
}

/// With `key_bells=0` a process takes no part in bells: the bell of the key it holds is
/// free on the server while another process waits for it, and the lock passes to that
/// waiter by the poll.
#[tokio::test]
async fn with_key_bells_off_no_bell_is_held_and_the_poll_passes_the_lock() {
    pass_between_processes(
        "&key_bells=0&poll_interval=50ms",
        Duration::ZERO,
        Bells::Off,
    )
    .await;
}

/// Whether the processes of [`pass_between_processes`] hold key bells.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bells {
    On,
    Off,
}

/// Two processes on the tables of a fresh store whose URL has `query`: the first takes
/// a lock; the bell of its key is held (`On`: checked before the second process waits)
/// or not (`Off`: checked while it waits); the second waits in line, the first holds
/// on for `hold` and lets go; the second is granted within [`PATIENCE`] of the release,
/// with a higher token.
async fn pass_between_processes(query: &str, hold: Duration, bells: Bells) {
    let Some((kv, url)) = store(query).await else {
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
    if bells == Bells::On {
        // The holder's process takes the bell of the key once it is created.
        timeout(PATIENCE, async {
            while bell_holder(&kv, &url, held.key()).await.is_none() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the bell of the holder's key held");
    }
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
    if bells == Bells::Off {
        assert_eq!(bell_holder(&kv, &url, held.key()).await, None);
    }
    // What the scenario is about when `hold` is not zero: a long hold.
    tokio::time::sleep(hold).await;
    assert!(!waiter.is_finished(), "granted while the lock was held");
    let token = held.token();
    held.unlock().await.unwrap();
    let granted = timeout(PATIENCE, waiter)
        .await
        .expect("the waiter woken by the bell or the poll, within its bound")
        .unwrap()
        .unwrap();
    assert!(granted.token() > token);
    granted.unlock().await.unwrap();
    drop_tables(&kv, &url).await;
}

/// The connection id that holds the bell of `key` in the tables of `url`, if any (the
/// bell's name as the backend makes it: a hash of the database, the table prefix and
/// the key).
async fn bell_holder(kv: &distsync_mysql::MysqlKv, url: &str, key: &str) -> Option<i64> {
    let mut bound = distsync_mysql::MysqlConfig::parse(url)
        .unwrap()
        .table_prefix()
        .as_bytes()
        .to_vec();
    bound.push(0);
    bound.extend_from_slice(key.as_bytes());
    sqlx::query_scalar(
        "SELECT IS_USED_LOCK(CONCAT('distsync-bell:', \
         LEFT(SHA2(CONCAT(DATABASE(), ?), 256), 32)))",
    )
    .bind(bound)
    .fetch_one(kv.pool())
    .await
    .unwrap()
}
