//! Helpers for the recipes' unit tests (against the memory backend).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::kv::{Kv, LeaseId, Range, RangeResponse, Revision, Txn, TxnResponse, WatchResponse};
use crate::memory::{MemoryBackend, MemoryKv};
use crate::recipes::KvBackend;
use distsync_core::backend::Backend;
use distsync_core::error::{Error, Result};
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

/// How a [`FlakyKv`] fails a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The transaction is not applied; the call fails with a transient error (a
    /// request refused during an etcd leader change).
    NotApplied,
    /// The transaction is applied, but its reply is lost: the call fails with a
    /// transient error all the same.
    ReplyLost,
}

/// A test double of our own [`Kv`] trait: a memory store whose transactions fail on
/// demand with a transient error ([`Error::Connection`]), as etcd's do during a leader
/// change. Everything else goes straight to the memory store.
pub(crate) struct FlakyKv {
    inner: MemoryKv,
    /// Transactions to let through first, transactions to fail then (`usize::MAX`:
    /// all), and how.
    failing: Mutex<(usize, usize, Failure)>,
    /// Transactions attempted so far.
    txns: AtomicUsize,
    /// Watch creations and reads still to fail.
    pub(crate) failing_reads: AtomicUsize,
    /// Watches opened so far.
    watches: AtomicUsize,
}

impl FlakyKv {
    /// A store that fails nothing yet.
    pub(crate) fn new() -> Self {
        Self {
            inner: MemoryKv::new(),
            failing: Mutex::new((0, 0, Failure::NotApplied)),
            txns: AtomicUsize::new(0),
            failing_reads: AtomicUsize::new(0),
            watches: AtomicUsize::new(0),
        }
    }

    /// Fails the next `count` transactions (`usize::MAX`: every one) as `how`.
    pub(crate) fn fail_txns(&self, count: usize, how: Failure) {
        self.fail_txns_after(0, count, how);
    }

    /// Lets the next `skip` transactions through, then fails `count` as `how`.
    pub(crate) fn fail_txns_after(&self, skip: usize, count: usize, how: Failure) {
        *self.failing.lock().unwrap() = (skip, count, how);
    }

    /// Fails the next `count` reads and watch creations (as a member without a leader
    /// refuses them).
    pub(crate) fn fail_reads(&self, count: usize) {
        self.failing_reads.store(count, Ordering::SeqCst);
    }

    /// Whether this read or watch creation is to fail.
    fn read_fails(&self) -> bool {
        self.failing_reads
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok()
    }

    /// How many transactions were attempted so far.
    pub(crate) fn txns(&self) -> usize {
        self.txns.load(Ordering::SeqCst)
    }

    /// How many watches were opened so far (failed creations included).
    pub(crate) fn watches(&self) -> usize {
        self.watches.load(Ordering::SeqCst)
    }

    /// The failure planned for this transaction, if any.
    fn next_failure(&self) -> Option<Failure> {
        self.txns.fetch_add(1, Ordering::SeqCst);
        let mut failing = self.failing.lock().unwrap();
        if failing.0 > 0 {
            failing.0 -= 1;
            return None;
        }
        match failing.1 {
            0 => None,
            usize::MAX => Some(failing.2),
            _ => {
                failing.1 -= 1;
                Some(failing.2)
            }
        }
    }
}

fn leader_changed() -> Error {
    Error::connection("flaky", "etcdserver: leader changed")
}

#[async_trait]
impl Kv for FlakyKv {
    fn backend(&self) -> &'static str {
        "flaky"
    }

    async fn range(&self, range: Range) -> Result<RangeResponse> {
        if self.read_fails() {
            return Err(Error::connection("flaky", "etcdserver: no leader"));
        }
        self.inner.range(range).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        match self.next_failure() {
            None => self.inner.txn(txn).await,
            Some(Failure::NotApplied) => Err(leader_changed()),
            Some(Failure::ReplyLost) => {
                self.inner.txn(txn).await?;
                Err(leader_changed())
            }
        }
    }

    async fn watch(
        &self,
        key: &str,
        prefix: bool,
        start_revision: Revision,
    ) -> Result<BoxStream<'static, Result<WatchResponse>>> {
        self.watches.fetch_add(1, Ordering::SeqCst);
        if self.read_fails() {
            return Err(Error::connection("flaky", "etcdserver: no leader"));
        }
        self.inner.watch(key, prefix, start_revision).await
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        self.inner.lease_grant(ttl).await
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<KeepAlive> {
        self.inner.lease_keep_alive(lease).await
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.inner.lease_revoke(lease).await
    }
}

/// Waits (yielding, bounded by [`DEADLINE`]) until `backend`'s store has opened
/// `count` watches.
pub(crate) async fn until_watches(backend: &KvBackend<FlakyKv>, count: usize) {
    within(async {
        while backend.kv().watches() < count {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(backend.kv().watches(), count);
}

/// A backend over a fresh [`FlakyKv`], with the memory backend's capabilities.
pub(crate) fn flaky_backend() -> KvBackend<FlakyKv> {
    KvBackend::with_kv(FlakyKv::new(), "", crate::memory::capabilities())
}

/// A session of `backend` with the default TTL.
pub(crate) async fn session_of(backend: &impl Backend) -> Session {
    backend.session(SessionOptions::default()).await.unwrap()
}
