//! The in-memory revisioned store, [`MemoryKv`]: a faithful in-process model of
//! etcd's MVCC store. This file holds the store's shared state and its [`Kv`]
//! implementation; the model itself is split by concern:
//! - `mvcc.rs`: revisions, per-key history, compaction, ranges and transactions;
//! - `long_lines.rs`: the directories holding many live keys, indexed by create
//!   revision, whose reads then cost what they return rather than the line's length;
//! - `lease.rs`: grant, keepalive, revoke, expiry (the reaper) and `freeze_lease`;
//! - `watch.rs`: history replay and live delivery to the watchers a change concerns.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::long_lines::LongLines;
use super::records::{Entry, LeaseEntry};
use super::watchers::Watchers;
use crate::kv::{Kv, LeaseId, Range, RangeResponse, Revision, Txn, TxnResponse, WatchResponse};
use distsync_core::error::Result;
use distsync_core::raw::locked;
use distsync_core::session::KeepAlive;

/// The backend name, as in `Capabilities::backend` and in errors.
pub const BACKEND: &str = "memory";

/// How many revisions a store keeps readable by default before compacting older ones.
pub const DEFAULT_RETAINED_REVISIONS: i64 = 10_000;

/// An in-memory revisioned key-value store with leases and watches: a faithful
/// in-process model of etcd's MVCC store, implementing [`Kv`].
///
/// Semantics follow etcd:
/// - an empty store is at revision 1; every transaction that changes something
///   increments the revision once, and all its changes share that revision;
/// - a key's `create_revision`, `mod_revision` and `version` (1 on creation, +1 per
///   put) are etcd's; a delete removes the key (a later put recreates it at version 1);
/// - transactions evaluate their compares against the state before the transaction
///   (a missing key has create/mod revision and version `0`), and a branch's ranges
///   see the branch's earlier writes. As etcd, a branch may not put the same key
///   twice nor put a key it also deletes
///   ([`Error::InvalidArgument`](distsync_core::error::Error::InvalidArgument)), a put
///   naming an unknown lease fails with [`StoreError::LeaseNotFound`], and a put
///   keeping the lease of a missing key with [`StoreError::KeyNotFound`]; nothing is
///   applied then;
/// - a range's `count` counts every key of the key range at the read revision, before
///   the `max_*_revision` filters and the limit (etcd's `count`); a limit of `0` means
///   no limit, and max-revision bounds of `0` mean no bound, as in etcd;
/// - reads at a past revision are exact down to the compaction point; older ones fail
///   with [`StoreError::Compacted`]. The store keeps the last
///   `DEFAULT_RETAINED_REVISIONS` revisions (see [`MemoryKv::with_retained_revisions`])
///   and compacts older history automatically;
/// - watches replay retained history from their start revision, then deliver live
///   changes; the changes of one transaction come as one [`WatchResponse::Events`];
/// - leases expire when not renewed within their TTL, deleting their keys in one
///   revision exactly as a revoke does. TTLs are kept exactly (not rounded up to
///   whole seconds as etcd does), so tests can use short ones.
///
/// Time is `tokio` time: under a paused test clock leases expire as the clock advances.
/// Expiry runs in one background task per store, started on construction inside a
/// tokio runtime or on the first async call otherwise, and ending when the store is
/// dropped; every operation also expires due leases first, so results never depend on
/// when that task runs.
///
/// Clones share one store. Besides [`Kv`], the store has test and fault-injection
/// hooks ([`MemoryKv::freeze_lease`], [`MemoryKv::compact`], ...): the memory backend
/// is a test double, and these let a test model a paused client or a compacted store.
///
/// [`StoreError::LeaseNotFound`]: crate::StoreError::LeaseNotFound
/// [`StoreError::KeyNotFound`]: crate::StoreError::KeyNotFound
/// [`StoreError::Compacted`]: crate::StoreError::Compacted
#[derive(Clone)]
pub struct MemoryKv {
    pub(super) inner: Arc<Inner>,
}

impl Default for MemoryKv {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("MemoryKv")
            .field("revision", &state.revision)
            .field("compacted", &state.compacted)
            .field("keys", &state.keys.len())
            .field("leases", &state.leases.len())
            .field("watchers", &state.watchers.len())
            .field("long_lines", &state.long_lines.len())
            .finish()
    }
}

impl MemoryKv {
    /// An empty store at revision 1, keeping the last `DEFAULT_RETAINED_REVISIONS`
    /// revisions readable.
    pub fn new() -> Self {
        Self::with_retained_revisions(DEFAULT_RETAINED_REVISIONS)
    }

    /// An empty store keeping the last `revisions` revisions readable (at least 1):
    /// whenever the store moves past them, older history is compacted.
    pub fn with_retained_revisions(revisions: i64) -> Self {
        let kv = Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::new(revisions.max(1))),
                wake: Arc::new(Notify::new()),
                reaper: Mutex::new(None),
            }),
        };
        kv.ensure_reaper();
        kv
    }
}

#[async_trait]
impl Kv for MemoryKv {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    /// The process clock (monotonic, since the first read in this process): the
    /// memory store lives in the process, so that clock is the store's.
    async fn clock(&self) -> Result<Option<Duration>> {
        static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let epoch = *EPOCH.get_or_init(Instant::now);
        Ok(Some(Instant::now().saturating_duration_since(epoch)))
    }

    async fn range(&self, range: Range) -> Result<RangeResponse> {
        self.ensure_reaper();
        let mut state = self.inner.current(Instant::now());
        state.check_range(&range)?;
        Ok(state.read_range(&range))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.ensure_reaper();
        let mut state = self.inner.current(Instant::now());
        state.txn(txn)
    }

    async fn watch(
        &self,
        key: &str,
        prefix: bool,
        start_revision: Revision,
    ) -> Result<BoxStream<'static, Result<WatchResponse>>> {
        self.ensure_reaper();
        self.open_watch(key, prefix, start_revision)
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        self.ensure_reaper();
        self.grant_lease(ttl)
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<KeepAlive> {
        self.ensure_reaper();
        Ok(self.renew_lease(lease))
    }

    /// Revokes `lease`, deleting its keys in one revision. Revoking a lease the store
    /// does not know (never granted, already revoked or expired) succeeds and does
    /// nothing: the caller's goal, the lease being gone, holds. (etcd answers
    /// "lease not found" there; [`distsync_core::Session::close`] treats both alike.)
    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.ensure_reaper();
        self.revoke_lease(lease);
        Ok(())
    }

    /// The lease's deadline less the store's (tokio) clock, kept exactly as granted.
    async fn lease_time_to_live(&self, lease: LeaseId) -> Result<Option<Duration>> {
        self.ensure_reaper();
        Ok(self.lease_ttl_remaining(lease))
    }
}

/// The shared part of a store.
pub(super) struct Inner {
    pub(super) state: Mutex<State>,
    /// Wakes the reaper when a deadline may have become earlier.
    pub(super) wake: Arc<Notify>,
    /// The reaper task, if one was started.
    pub(super) reaper: Mutex<Option<JoinHandle<()>>>,
}

impl Inner {
    /// The state. A panic while it was held cannot leave it half-updated in a way
    /// later operations trip over (no operation panics), so poisoning is ignored.
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        locked(&self.state)
    }

    /// The state with the leases due at `now` expired first, so that no answer depends
    /// on when the reaper last ran.
    pub(super) fn current(&self, now: Instant) -> MutexGuard<'_, State> {
        let mut state = self.lock();
        state.expire_due(now);
        state
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let reaper = self
            .reaper
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = reaper {
            task.abort();
        }
        self.wake.notify_one();
    }
}

/// The whole store, behind one mutex (never held across an `.await`).
pub(super) struct State {
    /// The current revision.
    pub(super) revision: Revision,
    /// Reads below this revision fail; watches starting below it are compacted.
    pub(super) compacted: Revision,
    /// How many revisions stay readable.
    pub(super) retain: i64,
    /// Every key's versions, oldest first (tombstones included until compacted).
    pub(super) keys: BTreeMap<String, Vec<Entry>>,
    /// Which keys changed at each retained revision, oldest first (for compaction).
    pub(super) changelog: VecDeque<(Revision, Vec<String>)>,
    pub(super) leases: HashMap<LeaseId, LeaseEntry>,
    /// Every live lease by (deadline, id): the next one due without a scan, so that
    /// a store with many leases expires and grants in logarithmic time.
    pub(super) deadlines: BTreeSet<(Instant, LeaseId)>,
    /// Feeds lease id generation.
    pub(super) lease_counter: u64,
    pub(super) watchers: Watchers,
    /// The indexes of the directories holding many live keys (`long_lines.rs`).
    pub(super) long_lines: LongLines,
}

impl State {
    pub(super) fn new(retain: i64) -> Self {
        Self {
            revision: 1,
            compacted: 0,
            retain,
            keys: BTreeMap::new(),
            changelog: VecDeque::new(),
            leases: HashMap::new(),
            deadlines: BTreeSet::new(),
            lease_counter: 0,
            watchers: Watchers::default(),
            long_lines: LongLines::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use futures::StreamExt;

    use super::super::test_support::*;
    use super::*;
    use crate::kv::{Compare, CompareOp};

    #[tokio::test(start_paused = true)]
    async fn dropping_the_store_ends_the_reaper_and_the_watches() {
        let kv = MemoryKv::new();
        kv.lease_grant(Duration::from_secs(30)).await.unwrap();
        let reaper = kv
            .inner
            .reaper
            .lock()
            .unwrap()
            .as_ref()
            .unwrap()
            .abort_handle();
        let mut watch = kv.watch("k", false, 0).await.unwrap();
        let weak = Arc::downgrade(&kv.inner);
        drop(kv);
        assert!(weak.upgrade().is_none(), "nothing else holds the store");
        assert!(
            watch.next().await.is_none(),
            "the watch ends with the store"
        );
        for _ in 0..100 {
            if reaper.is_finished() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(reaper.is_finished());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_compare_and_swap_loses_no_update() {
        let kv = MemoryKv::new();
        put_one(&kv, "counter", "0").await;
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let kv = kv.clone();
                tokio::spawn(async move {
                    let mut done = 0;
                    while done < 50 {
                        let current = get(&kv, "counter").await.unwrap();
                        let value: u64 = std::str::from_utf8(&current.value)
                            .unwrap()
                            .parse()
                            .unwrap();
                        let swapped = kv
                            .txn(
                                Txn::when(vec![Compare::mod_revision(
                                    "counter",
                                    CompareOp::Equal,
                                    current.mod_revision,
                                )])
                                .and_then(vec![put("counter", &(value + 1).to_string())]),
                            )
                            .await
                            .unwrap();
                        if swapped.succeeded {
                            done += 1;
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let counter = get(&kv, "counter").await.unwrap();
        assert_eq!(counter.value, Bytes::from("400"));
        assert_eq!((counter.version, kv.revision()), (401, 402));
    }
}
