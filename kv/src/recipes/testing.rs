//! Helpers for the recipes' unit tests (against the memory backend).

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use futures::stream::BoxStream;

use crate::kv::{Kv, LeaseId, Range, RangeResponse, Revision, Txn, TxnResponse, WatchResponse};
use crate::memory::{FaultyKv, MemoryBackend, MemoryKv};
use crate::recipes::KvBackend;
use distsync_core::backend::Backend;
use distsync_core::error::Result;
use distsync_core::name::Name;
use distsync_core::session::{KeepAlive, Session, SessionOptions};

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

/// What [`Recording`] runs before it opens a watch: the transaction, if any, that the
/// hook makes of the watched key (a write that lands between a waiter's read and its
/// watch).
pub(crate) type BeforeWatch = Box<dyn Fn(&str) -> Option<Txn> + Send + Sync>;

/// One watch [`Recording`] opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Opened {
    /// The key or prefix watched.
    pub(crate) key: String,
    /// The start revision asked for.
    pub(crate) start: Revision,
    /// The store's revision when the watch was opened.
    pub(crate) revision: Revision,
}

impl Opened {
    /// Whether the watch starts at a revision the store has already passed: etcd
    /// serves such a watch from its unsynced group, caught up only every 100 ms.
    pub(crate) fn starts_in_the_past(&self) -> bool {
        self.start > 0 && self.start <= self.revision
    }
}

/// The memory store, recording the range reads it serves and the watches it opens,
/// and running a hook before each watch.
#[derive(Default)]
pub(crate) struct Recording {
    store: MemoryKv,
    ranges: Mutex<Vec<Range>>,
    watches: Mutex<Vec<Opened>>,
    before_watch: Mutex<Option<BeforeWatch>>,
}

impl Recording {
    /// The range reads served since the last call.
    pub(crate) fn take(&self) -> Vec<Range> {
        std::mem::take(&mut *self.ranges.lock().unwrap())
    }

    /// The watches opened so far.
    pub(crate) fn watches(&self) -> Vec<Opened> {
        self.watches.lock().unwrap().clone()
    }

    /// Runs `hook` before every watch from now on.
    pub(crate) fn before_watch(&self, hook: BeforeWatch) {
        *self.before_watch.lock().unwrap() = Some(hook);
    }
}

#[async_trait::async_trait]
impl Kv for Recording {
    fn backend(&self) -> &'static str {
        self.store.backend()
    }
    async fn range(&self, range: Range) -> Result<RangeResponse> {
        self.ranges.lock().unwrap().push(range.clone());
        self.store.range(range).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.store.txn(txn).await
    }
    async fn watch(
        &self,
        key: &str,
        prefix: bool,
        start_revision: Revision,
    ) -> Result<BoxStream<'static, Result<WatchResponse>>> {
        let before = self
            .before_watch
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|hook| hook(key));
        if let Some(txn) = before {
            self.store.txn(txn).await?;
        }
        let revision = self.store.range(Range::key(key)).await?.revision;
        self.watches.lock().unwrap().push(Opened {
            key: key.to_owned(),
            start: start_revision,
            revision,
        });
        self.store.watch(key, prefix, start_revision).await
    }
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        self.store.lease_grant(ttl).await
    }
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<KeepAlive> {
        self.store.lease_keep_alive(lease).await
    }
    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.store.lease_revoke(lease).await
    }
    async fn lease_time_to_live(&self, lease: LeaseId) -> Result<Option<Duration>> {
        self.store.lease_time_to_live(lease).await
    }
}

/// A backend over a fresh [`Recording`] store, with the memory backend's capabilities.
pub(crate) fn recording_backend() -> KvBackend<Recording> {
    KvBackend::with_kv(Recording::default(), "", crate::memory::capabilities())
}
