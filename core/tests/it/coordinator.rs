//! The Coordinator's checks at the door: counts and permit numbers arrive as plain
//! `usize` and a zero is a typed error, never a panic, before any backend is asked.

use std::panic::{AssertUnwindSafe, catch_unwind};

use distsync_core::{Coordinator, Error};
use distsync_kv::memory::MemoryBackend;

/// Calls `make` and asserts it returned `InvalidArgument` naming `name`, without a
/// panic.
fn refused<T>(what: &str, name: &str, make: impl FnOnce() -> distsync_core::Result<T>) {
    let result = catch_unwind(AssertUnwindSafe(make))
        .unwrap_or_else(|_| panic!("{what} with zero panicked instead of returning an error"));
    match result {
        Err(Error::InvalidArgument(message)) => {
            assert!(message.contains(name), "{what}: {message:?} names {name:?}");
        }
        Err(other) => panic!("{what} with zero gave {other}, not InvalidArgument"),
        Ok(_) => panic!("{what} with zero was made"),
    }
}

#[tokio::test]
async fn zero_counts_and_permits_are_invalid_arguments() {
    let coordinator = Coordinator::new(MemoryBackend::new());
    let session = coordinator.session().await.unwrap();
    refused("a double barrier", "door/double", || {
        coordinator.double_barrier(&session, "door/double", 0)
    });
    refused("a semaphore", "door/semaphore", || {
        coordinator.semaphore(&session, "door/semaphore", 0)
    });
    // One is the smallest count each takes.
    let barrier = coordinator
        .double_barrier(&session, "door/double", 1)
        .unwrap();
    assert_eq!(barrier.count(), 1);
    let semaphore = coordinator
        .semaphore(&session, "door/semaphore", 1)
        .unwrap();
    assert_eq!(semaphore.permits(), 1);
    session.close().await.unwrap();
}

/// The name is checked before the count: a bad name with a zero count is the name's
/// error.
#[tokio::test]
async fn a_bad_name_is_reported_before_a_zero_count() {
    let coordinator = Coordinator::new(MemoryBackend::new());
    let session = coordinator.session().await.unwrap();
    assert!(matches!(
        coordinator.double_barrier(&session, "a//b", 0),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        coordinator.semaphore(&session, "a//b", 0),
        Err(Error::InvalidName { .. })
    ));
    session.close().await.unwrap();
}
