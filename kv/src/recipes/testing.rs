//! Helpers for the recipes' unit tests (against the memory backend).

use std::future::Future;
use std::time::Duration;

use crate::memory::{FaultyKv, MemoryBackend, MemoryKv};
use crate::recipes::KvBackend;
use distsync_core::backend::Backend;
use distsync_core::name::Name;
use distsync_core::session::{Session, SessionOptions};

/// How long a test waits for something that must happen.
pub(crate) const DEADLINE: Duration = Duration::from_secs(5);

/// A fresh memory backend.
pub(crate) fn backend() -> MemoryBackend {
    MemoryBackend::new()
}

/// A session with the default TTL.
pub(crate) async fn session(backend: &MemoryBackend) -> Session {
    backend.session(SessionOptions::default()).await.unwrap()
}

/// `N` sessions with the default TTL.
pub(crate) async fn sessions<const N: usize>(backend: &MemoryBackend) -> [Session; N] {
    let mut opened = Vec::with_capacity(N);
    for _ in 0..N {
        opened.push(session(backend).await);
    }
    opened
        .try_into()
        .unwrap_or_else(|_| unreachable!("opened exactly N sessions"))
}

/// A validated name.
pub(crate) fn name(name: &str) -> Name {
    Name::new(name).unwrap()
}

/// `future`'s output, failing the test if it takes longer than [`DEADLINE`].
pub(crate) async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(DEADLINE, future)
        .await
        .expect("did not finish within the deadline")
}

/// Lets every task of a current-thread runtime run until all are idle (blocked on
/// the store), with no wall-clock guess: a task still unfinished afterwards is
/// waiting for something that has not happened.
pub(crate) async fn settle() {
    for _ in 0..256 {
        tokio::task::yield_now().await;
    }
}

/// Waits (yielding, bounded by [`DEADLINE`]) until `backend`'s store has opened
/// `count` watches.
pub(crate) async fn until_watches(backend: &KvBackend<FaultyKv>, count: usize) {
    within(async {
        while backend.kv().watches() < count {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(backend.kv().watches(), count);
}

/// A backend over a fresh [`FaultyKv`], with the memory backend's capabilities.
pub(crate) fn flaky_backend() -> KvBackend<FaultyKv> {
    KvBackend::with_kv(
        FaultyKv::new(MemoryKv::new()),
        "",
        crate::memory::capabilities(),
    )
}

/// A session of `backend` with the default TTL.
pub(crate) async fn session_of(backend: &impl Backend) -> Session {
    backend.session(SessionOptions::default()).await.unwrap()
}
