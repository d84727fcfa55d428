//! `count_prefix` and `purge_prefix`: every lock under a prefix (held, released with a
//! waiter's directory left, or with a name too long for a file name) is counted and
//! removed; a lock outside the prefix, even one whose name starts with the same
//! characters, is not.

use std::path::PathBuf;

use distsync_core::{Backend, Coordinator, Name};
use distsync_file_backend::FileBackend;

fn directory(test: &str) -> PathBuf {
    let directory = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("file-backend-purge-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    directory
}

#[tokio::test]
async fn a_prefix_is_counted_and_purged_and_nothing_else() {
    let backend = FileBackend::open(directory("prefix")).unwrap();
    let coordinator = Coordinator::new(backend.clone());
    let session = coordinator.session().await.unwrap();
    let long = format!("run-1/{}", "x".repeat(240));
    let mut guards = Vec::new();
    for name in [
        "run-1",
        "run-1/a",
        "run-1/b/c",
        long.as_str(),
        "run-10",
        "other",
    ] {
        guards.push(
            coordinator
                .locker(&session, name)
                .unwrap()
                .try_lock()
                .await
                .unwrap()
                .expect("free"),
        );
    }
    // A released lock whose waiter has come and gone leaves its waiters' directory.
    let released = coordinator.locker(&session, "run-1/waited").unwrap();
    released.lock().await.unwrap().unlock().await.unwrap();

    let prefix = Name::new("run-1").unwrap();
    // Four lock files, one name record (the long name), one waiters' directory.
    let counted = backend.count_prefix(&prefix).await.unwrap();
    assert_eq!(counted, 6);
    assert_eq!(backend.purge_prefix(&prefix).await.unwrap(), counted);
    assert_eq!(backend.count_prefix(&prefix).await.unwrap(), 0);

    for name in ["run-10", "other"] {
        let name = Name::new(name).unwrap();
        assert_eq!(backend.count_prefix(&name).await.unwrap(), 1, "{name}");
    }
    // The purged locks are free again.
    let other = coordinator.session().await.unwrap();
    let retaken = coordinator
        .locker(&other, "run-1/a")
        .unwrap()
        .try_lock()
        .await
        .unwrap();
    assert!(retaken.is_some());
    drop(retaken);
    drop(guards);
    other.close().await.unwrap();
    session.close().await.unwrap();
}
