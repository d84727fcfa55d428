//! A caller's own `multi` guarded by a distsync lock, on a real ZooKeeper
//! (`DISTSYNC_ZOOKEEPER_URL`; skipped loudly when unset, a failure under `CI=true`):
//! the holder's writes commit while it holds, a holder that lost the lock writes
//! nothing and is told so by the error's shape, and the next holder's writes commit.

use std::future::Future;
use std::time::Duration;

use distsync_conformance::server_url;
use distsync_core::{Coordinator, Error, LockGuard, Session};
use distsync_zookeeper::{add_hold_check, hold_check_writer, hold_was_lost, ZkConfig};
use zookeeper_client as zk;

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
    format!("hold-check-{what}-{}-{nanos}", std::process::id())
}

/// The coordinator, the server's configuration and a plain client of the caller's own
/// (no chroot), or `None` (the test skips) when no server is set.
async fn setup() -> Option<(Coordinator, ZkConfig, zk::Client)> {
    let url = server_url("DISTSYNC_ZOOKEEPER_URL")?;
    let config: ZkConfig = url.parse().unwrap();
    let coordinator = distsync::connect(&url).await.unwrap();
    let client = within(
        "the caller's client connects",
        zk::Client::connect(&config.hosts().join(",")),
    )
    .await
    .unwrap();
    Some((coordinator, config, client))
}

async fn lock(coordinator: &Coordinator, session: &Session, name: &str) -> LockGuard {
    let locker = coordinator.locker(session, name).unwrap();
    within("the lock", locker.lock()).await.unwrap()
}

async fn data(client: &zk::Client, path: &str) -> Vec<u8> {
    client.get_data(path).await.unwrap().0
}

fn persistent() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

/// A multi of the hold check of `guard` and a write of `value` to `path`.
async fn guarded_set(
    client: &zk::Client,
    guard: &LockGuard,
    path: &str,
    value: &[u8],
) -> Result<Vec<zk::MultiWriteResult>, zk::MultiWriteError> {
    let mut writer = client.new_multi_writer();
    add_hold_check(&mut writer, guard).unwrap();
    writer.add_set_data(path, value, None).unwrap();
    within("the multi's answer", writer.commit()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_writes_until_its_session_ends_and_then_the_next_holder_does() {
    let Some((coordinator, config, client)) = setup().await else {
        return;
    };
    let name = unique("session");
    let data_path = format!("/{}", unique("data"));
    let session_a = coordinator.session().await.unwrap();
    let guard_a = lock(&coordinator, &session_a, &name).await;

    // A holds: the check and the creation of the data node commit together.
    let mut writer = client.new_multi_writer();
    add_hold_check(&mut writer, &guard_a).unwrap();
    writer.add_create(&data_path, b"a1", &persistent()).unwrap();
    within("A's first multi", writer.commit()).await.unwrap();
    assert_eq!(data(&client, &data_path).await, b"a1");

    // A multi prepared while A holds, committed after A's session ended and B took the
    // lock: the commit is what the store checks.
    let mut stale = client.new_multi_writer();
    add_hold_check(&mut stale, &guard_a).unwrap();
    stale.add_set_data(&data_path, b"a-stale", None).unwrap();

    within("A's session closes", session_a.close())
        .await
        .unwrap();
    let session_b = coordinator.session().await.unwrap();
    let guard_b = lock(&coordinator, &session_b, &name).await;

    let error = within("A's stale multi", stale.commit())
        .await
        .expect_err("A's stale multi commits nothing");
    assert!(hold_was_lost(&error, 0), "A's stale multi: {error:?}");
    assert!(
        matches!(
            error,
            zk::MultiWriteError::OperationFailed {
                index: 0,
                source: zk::Error::NoNode
            }
        ),
        "{error:?}"
    );
    // A fresh multi of A's, after the loss, fails the same way.
    let error = guarded_set(&client, &guard_a, &data_path, b"a-late")
        .await
        .expect_err("A's late multi commits nothing");
    assert!(hold_was_lost(&error, 0), "A's late multi: {error:?}");
    assert_eq!(data(&client, &data_path).await, b"a1", "A wrote nothing");

    // B holds: its multi commits.
    guarded_set(&client, &guard_b, &data_path, b"b1")
        .await
        .unwrap();
    assert_eq!(data(&client, &data_path).await, b"b1");

    // A failure of the caller's own operation is not a lost hold.
    let mut writer = client.new_multi_writer();
    add_hold_check(&mut writer, &guard_b).unwrap();
    writer
        .add_set_data(&data_path, b"b-wrong-version", Some(1_000))
        .unwrap();
    let error = within("B's multi at a wrong version", writer.commit())
        .await
        .expect_err("a wrong version commits nothing");
    assert!(!hold_was_lost(&error, 0), "{error:?}");
    assert!(
        matches!(
            error,
            zk::MultiWriteError::OperationFailed {
                index: 1,
                source: zk::Error::BadVersion
            }
        ),
        "{error:?}"
    );

    // The check writer: B's commits; A's reports the lost hold as its check's failure.
    let mut writer = hold_check_writer(&client, &guard_b).unwrap();
    writer.add_set_data(&data_path, b"b2", None).unwrap();
    within("B's check writer", writer.commit()).await.unwrap();
    let mut writer = hold_check_writer(&client, &guard_a).unwrap();
    writer.add_set_data(&data_path, b"a-check", None).unwrap();
    let error = within("A's check writer", writer.commit())
        .await
        .expect_err("A's check writer commits nothing");
    assert!(
        matches!(
            error,
            zk::CheckWriteError::CheckFailed {
                source: zk::Error::NoNode
            }
        ),
        "{error:?}"
    );
    assert_eq!(data(&client, &data_path).await, b"b2");

    // A client chrooted at the backend's root names the hold node under it; one
    // chrooted elsewhere cannot name it.
    let rooted = client.clone().chroot(config.root().to_owned()).unwrap();
    let writer = hold_check_writer(&rooted, &guard_b).unwrap();
    within("B's check under a chroot", writer.commit())
        .await
        .unwrap();
    let elsewhere = client.clone().chroot(data_path.clone()).unwrap();
    assert!(matches!(
        hold_check_writer(&elsewhere, &guard_b),
        Err(Error::InvalidArgument(_))
    ));

    guard_b.unlock().await.unwrap();
    client.delete(&data_path, None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_prepared_before_an_unlock_commits_nothing_after_it() {
    let Some((coordinator, _config, client)) = setup().await else {
        return;
    };
    let name = unique("unlock");
    let data_path = format!("/{}", unique("data"));
    client
        .create(&data_path, b"0", &persistent())
        .await
        .unwrap();
    let session_a = coordinator.session().await.unwrap();
    let session_b = coordinator.session().await.unwrap();
    let guard_a = lock(&coordinator, &session_a, &name).await;

    // The check as the caller's second operation: its index is 1.
    let mut stale = client.new_multi_writer();
    stale.add_set_data(&data_path, b"a", None).unwrap();
    add_hold_check(&mut stale, &guard_a).unwrap();

    guard_a.unlock().await.unwrap();
    let guard_b = lock(&coordinator, &session_b, &name).await;

    let error = within("A's multi after its unlock", stale.commit())
        .await
        .expect_err("A's multi after its unlock commits nothing");
    assert!(hold_was_lost(&error, 1), "{error:?}");
    assert!(!hold_was_lost(&error, 0), "{error:?}");
    assert_eq!(data(&client, &data_path).await, b"0", "A wrote nothing");

    guarded_set(&client, &guard_b, &data_path, b"b")
        .await
        .unwrap();
    assert_eq!(data(&client, &data_path).await, b"b");

    guard_b.unlock().await.unwrap();
    client.delete(&data_path, None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_of_another_backend_is_a_typed_error() {
    let Some((_coordinator, _config, client)) = setup().await else {
        return;
    };
    let memory = Coordinator::new(distsync::store::memory::MemoryBackend::new());
    let session = memory.session().await.unwrap();
    let guard = lock(&memory, &session, "hold-check/memory").await;

    let mut writer = client.new_multi_writer();
    assert!(matches!(
        add_hold_check(&mut writer, &guard),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        hold_check_writer(&client, &guard),
        Err(Error::InvalidArgument(_))
    ));
    // Nothing was added: the writer's commit is an empty multi.
    assert!(within("the empty multi", writer.commit())
        .await
        .unwrap()
        .is_empty());
    guard.unlock().await.unwrap();
}
