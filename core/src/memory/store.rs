//! The in-memory revisioned store: a faithful in-process model of etcd's MVCC store.
//!
//! [`MemoryKv`] keeps, per key, the list of its versions (puts and deletion
//! tombstones, each tagged with the revision and its position inside that revision's
//! transaction), so reads at any retained past revision and watch replays are exact.
//! One global revision counts changing transactions, as etcd's does; leases expire on
//! `tokio` time through one background reaper task per store.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::kv::{
    Compare, CompareOp, CompareTarget, EventKind, KeyValue, Kv, LeaseId, Range, RangeResponse,
    Revision, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchEvent,
    WatchResponse,
};
use crate::session::KeepAlive;

/// The backend name used in errors and logs.
const BACKEND: &str = "memory";

/// How many revisions a store keeps readable by default before compacting older ones.
pub const DEFAULT_RETAINED_REVISIONS: i64 = 10_000;

/// The largest lease TTL etcd accepts (`MaxLeaseTTL`, 9 000 000 000 s).
const MAX_LEASE_TTL: Duration = Duration::from_secs(9_000_000_000);

/// A deadline used when `now + ttl` does not fit in an [`Instant`].
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// An error of the memory store's MVCC model, carried as the source of an
/// [`Error::Backend`] with backend `"memory"` (downcast the source to match on it).
///
/// The messages follow etcd's, so the memory and etcd backends fail alike.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A read or watch asked for a revision older than the compaction point.
    #[error("mvcc: required revision {requested} has been compacted (compacted at {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The oldest revision still readable.
        compacted: Revision,
    },
    /// A read or compaction asked for a revision the store has not reached yet.
    #[error("mvcc: required revision {requested} is a future revision (current {current})")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The store's current revision.
        current: Revision,
    },
    /// A put named a lease the store does not know (never granted, revoked or expired).
    #[error("lease not found: requested lease {0:x} not found")]
    LeaseNotFound(LeaseId),
    /// A put keeping the key's lease (`ignore_lease`) named a key that does not exist.
    #[error("key not found: {0:?}")]
    KeyNotFound(String),
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        Error::backend(BACKEND, error)
    }
}

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
///   twice nor put a key it also deletes ([`Error::InvalidArgument`]), a put naming an
///   unknown lease fails with `StoreError::LeaseNotFound`, and a put keeping the
///   lease of a missing key with `StoreError::KeyNotFound`; nothing is applied then;
/// - a range's `count` counts every key of the key range at the read revision, before
///   the `max_*_revision` filters and the limit (etcd's `count`); a limit of `0` means
///   no limit, and max-revision bounds of `0` mean no bound, as in etcd;
/// - reads at a past revision are exact down to the compaction point; older ones fail
///   with `StoreError::Compacted`. The store keeps the last
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
#[derive(Clone)]
pub struct MemoryKv {
    inner: Arc<Inner>,
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
            .field("watchers", &state.watchers.watchers.len())
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

    /// The store's current revision.
    pub fn revision(&self) -> Revision {
        self.inner.lock().revision
    }

    /// The compaction point: the oldest revision still readable and watchable.
    pub fn compact_revision(&self) -> Revision {
        self.inner.lock().compacted
    }

    /// Test / fault hook: compacts history before `revision`, as etcd's `Compact`.
    /// Afterwards reads at revisions below `revision` fail with
    /// `StoreError::Compacted`, and watches starting below it get
    /// [`WatchResponse::Compacted`]. Compacting at or below the current compaction point
    /// does nothing; a revision above the current one is a
    /// `StoreError::FutureRevision`.
    pub fn compact(&self, revision: Revision) -> Result<()> {
        let mut state = self.inner.lock();
        if revision > state.revision {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current: state.revision,
            }
            .into());
        }
        state.compact_to(revision);
        Ok(())
    }

    /// Test / fault hook: from now on, renewals of `lease` are answered
    /// [`KeepAlive::Renewed`] but do not extend it, modelling a paused or partitioned
    /// client whose renewals never reach the store. The lease then expires one TTL
    /// after its last effective renewal, and later renewals answer
    /// [`KeepAlive::Gone`]. Returns whether the lease exists.
    pub fn freeze_lease(&self, lease: LeaseId) -> bool {
        let mut state = self.inner.lock();
        state.expire_due(Instant::now());
        match state.leases.get_mut(&lease) {
            Some(entry) => {
                entry.frozen = true;
                true
            }
            None => false,
        }
    }

    /// Test hook: the ids of the live leases, in increasing order.
    pub fn lease_ids(&self) -> Vec<LeaseId> {
        let mut state = self.inner.lock();
        state.expire_due(Instant::now());
        let mut ids: Vec<LeaseId> = state.leases.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Test hook: how long `lease` has left before it expires, or `None` if the store
    /// does not know it (never granted, revoked or expired).
    pub fn lease_ttl_remaining(&self, lease: LeaseId) -> Option<Duration> {
        let now = Instant::now();
        let mut state = self.inner.lock();
        state.expire_due(now);
        state
            .leases
            .get(&lease)
            .map(|entry| entry.deadline.saturating_duration_since(now))
    }

    /// Test hook: the keys attached to `lease`, in key order, or `None` if the store
    /// does not know the lease (etcd's `TimeToLive` with keys).
    pub fn lease_keys(&self, lease: LeaseId) -> Option<Vec<String>> {
        let mut state = self.inner.lock();
        state.expire_due(Instant::now());
        state
            .leases
            .get(&lease)
            .map(|entry| entry.keys.iter().cloned().collect())
    }

    /// Starts the lease reaper if it is not running and a tokio runtime is present
    /// (it also restarts it if the runtime it ran on has shut down).
    fn ensure_reaper(&self) {
        let mut slot = self
            .inner
            .reaper
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        *slot = Some(runtime.spawn(reap(
            Arc::downgrade(&self.inner),
            Arc::clone(&self.inner.wake),
        )));
    }
}

#[async_trait]
impl Kv for MemoryKv {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn range(&self, range: Range) -> Result<RangeResponse> {
        self.ensure_reaper();
        let mut state = self.inner.lock();
        state.expire_due(Instant::now());
        state.check_range(&range)?;
        Ok(state.read_range(&range))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.ensure_reaper();
        let mut state = self.inner.lock();
        state.expire_due(Instant::now());
        state.txn(txn)
    }

    async fn watch(
        &self,
        key: &str,
        prefix: bool,
        start_revision: Revision,
    ) -> Result<BoxStream<'static, Result<WatchResponse>>> {
        self.ensure_reaper();
        if key.is_empty() && !prefix {
            return Err(Error::InvalidArgument(
                "watch: key is not provided".to_owned(),
            ));
        }
        let mut state = self.inner.lock();
        state.expire_due(Instant::now());
        match state.watch(key, prefix, start_revision) {
            WatchStart::Compacted(revision) => {
                Ok(stream::once(async move { Ok(WatchResponse::Compacted(revision)) }).boxed())
            }
            WatchStart::Registered(id, receiver) => {
                let registration = Registration {
                    id,
                    inner: Arc::downgrade(&self.inner),
                };
                Ok(stream::unfold(
                    (receiver, registration),
                    |(mut receiver, registration)| async move {
                        let item = receiver.recv().await?;
                        Some((item, (receiver, registration)))
                    },
                )
                .boxed())
            }
        }
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        self.ensure_reaper();
        if ttl.is_zero() {
            return Err(Error::InvalidArgument(
                "lease ttl must be positive".to_owned(),
            ));
        }
        if ttl > MAX_LEASE_TTL {
            return Err(Error::InvalidArgument(format!(
                "lease ttl {ttl:?} is too large (at most {MAX_LEASE_TTL:?})"
            )));
        }
        let id = {
            let mut state = self.inner.lock();
            let now = Instant::now();
            state.expire_due(now);
            state.grant(ttl, now)
        };
        // The new deadline may be the earliest: let the reaper recompute its sleep.
        self.inner.wake.notify_one();
        tracing::trace!(lease = format_args!("{id:x}"), ?ttl, "memory lease granted");
        Ok(id)
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<KeepAlive> {
        self.ensure_reaper();
        let now = Instant::now();
        let mut state = self.inner.lock();
        state.expire_due(now);
        Ok(match state.leases.get_mut(&lease) {
            Some(entry) => {
                if !entry.frozen {
                    entry.deadline = deadline_after(now, entry.ttl);
                }
                KeepAlive::Renewed
            }
            None => KeepAlive::Gone,
        })
    }

    /// Revokes `lease`, deleting its keys in one revision. Revoking a lease the store
    /// does not know (never granted, already revoked or expired) succeeds and does
    /// nothing: the caller's goal, the lease being gone, holds. (etcd answers
    /// "lease not found" there; [`crate::Session::close`] treats both alike.)
    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.ensure_reaper();
        let mut state = self.inner.lock();
        state.expire_due(Instant::now());
        if state.revoke(lease) {
            tracing::trace!(lease = format_args!("{lease:x}"), "memory lease revoked");
        }
        Ok(())
    }
}

/// The shared part of a store.
struct Inner {
    state: Mutex<State>,
    /// Wakes the reaper when a deadline may have become earlier.
    wake: Arc<Notify>,
    /// The reaper task, if one was started.
    reaper: Mutex<Option<JoinHandle<()>>>,
}

impl Inner {
    /// The state. A panic while it was held cannot leave it half-updated in a way
    /// later operations trip over (no operation panics), so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
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

/// The lease reaper: expires due leases, then sleeps until the earliest deadline or
/// until woken. Holds the store only weakly, so dropping the store ends it.
async fn reap(inner: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        let next = {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let mut state = inner.lock();
            state.expire_due(Instant::now());
            state.next_deadline()
        };
        match next {
            Some(deadline) => {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

/// `now + ttl`, or a far future deadline if that does not fit.
fn deadline_after(now: Instant, ttl: Duration) -> Instant {
    now.checked_add(ttl)
        .or_else(|| now.checked_add(FAR_FUTURE))
        .unwrap_or(now)
}

/// One version of a key: a put (`kv`) or a deletion tombstone (`None`).
#[derive(Clone, Debug)]
struct Entry {
    revision: Revision,
    /// Position of the change within its revision's transaction.
    sub: usize,
    kv: Option<KeyValue>,
}

/// A live lease.
#[derive(Debug)]
struct LeaseEntry {
    ttl: Duration,
    deadline: Instant,
    frozen: bool,
    keys: BTreeSet<String>,
}

/// The changes of one transaction being applied.
struct Batch {
    revision: Revision,
    events: Vec<WatchEvent>,
}

/// The whole store, behind one mutex (never held across an `.await`).
struct State {
    /// The current revision.
    revision: Revision,
    /// Reads below this revision fail; watches starting below it are compacted.
    compacted: Revision,
    /// How many revisions stay readable.
    retain: i64,
    /// Every key's versions, oldest first (tombstones included until compacted).
    keys: BTreeMap<String, Vec<Entry>>,
    /// Which keys changed at each retained revision, oldest first (for compaction).
    changelog: VecDeque<(Revision, Vec<String>)>,
    leases: HashMap<LeaseId, LeaseEntry>,
    /// Feeds lease id generation.
    lease_counter: u64,
    watchers: Watchers,
}

impl State {
    fn new(retain: i64) -> Self {
        Self {
            revision: 1,
            compacted: 0,
            retain,
            keys: BTreeMap::new(),
            changelog: VecDeque::new(),
            leases: HashMap::new(),
            lease_counter: 0,
            watchers: Watchers::default(),
        }
    }

    /// The key's current value, if it exists (including writes of the transaction
    /// being applied).
    fn live(&self, key: &str) -> Option<&KeyValue> {
        self.keys.get(key)?.last()?.kv.as_ref()
    }

    /// The key's value at `revision`, from its versions.
    fn visible_at(entries: &[Entry], revision: Revision) -> Option<&KeyValue> {
        let index = entries.partition_point(|entry| entry.revision <= revision);
        entries.get(index.checked_sub(1)?)?.kv.as_ref()
    }

    /// The keys a range or delete covers, with their versions.
    fn matching<'a>(
        &'a self,
        key: &'a str,
        prefix: bool,
    ) -> Box<dyn Iterator<Item = (&'a String, &'a Vec<Entry>)> + 'a> {
        if prefix {
            Box::new(
                self.keys
                    .range::<str, _>((std::ops::Bound::Included(key), std::ops::Bound::Unbounded))
                    .take_while(move |(candidate, _)| candidate.starts_with(key)),
            )
        } else {
            Box::new(self.keys.get_key_value(key).into_iter())
        }
    }

    /// The keys a range covers: `[key, range_end)` when it has an end, else the key or
    /// prefix (as `matching`).
    fn ranged<'a>(
        &'a self,
        range: &'a Range,
    ) -> Box<dyn Iterator<Item = (&'a String, &'a Vec<Entry>)> + 'a> {
        match &range.range_end {
            Some(end) => Box::new(self.keys.range::<str, _>((
                std::ops::Bound::Included(range.key.as_str()),
                std::ops::Bound::Excluded(end.as_str()),
            ))),
            None => self.matching(&range.key, range.prefix),
        }
    }

    /// Validates a range before any part of a transaction runs.
    fn check_range(&self, range: &Range) -> Result<()> {
        if let Some(end) = &range.range_end {
            if *end <= range.key {
                return Err(Error::InvalidArgument(format!(
                    "range: end {end:?} is not after start {:?}",
                    range.key
                )));
            }
        } else if range.key.is_empty() && !range.prefix {
            return Err(Error::InvalidArgument(
                "range: key is not provided".to_owned(),
            ));
        }
        if let Some(requested) = range.revision.filter(|revision| *revision > 0) {
            if requested > self.revision {
                return Err(StoreError::FutureRevision {
                    requested,
                    current: self.revision,
                }
                .into());
            }
            if requested < self.compacted {
                return Err(StoreError::Compacted {
                    requested,
                    compacted: self.compacted,
                }
                .into());
            }
        }
        Ok(())
    }

    /// Serves a checked range.
    fn read_range(&self, range: &Range) -> RangeResponse {
        let at = range
            .revision
            .filter(|revision| *revision > 0)
            .unwrap_or(Revision::MAX);
        let visible: Vec<&KeyValue> = self
            .ranged(range)
            .filter_map(|(_, entries)| Self::visible_at(entries, at))
            .collect();
        let count = visible.len();
        let max_create = range.max_create_revision.filter(|revision| *revision > 0);
        let max_mod = range.max_mod_revision.filter(|revision| *revision > 0);
        let mut kvs: Vec<KeyValue> = visible
            .into_iter()
            .filter(|kv| !matches!(max_create, Some(max) if kv.create_revision > max))
            .filter(|kv| !matches!(max_mod, Some(max) if kv.mod_revision > max))
            .cloned()
            .collect();
        if let Some((target, order)) = range.sort {
            let field = |kv: &KeyValue| match target {
                SortTarget::Key => 0,
                SortTarget::CreateRevision => kv.create_revision,
                SortTarget::ModRevision => kv.mod_revision,
            };
            // Stable sorts: ties stay in key order.
            match (target, order) {
                (SortTarget::Key, SortOrder::Ascend) => {}
                (SortTarget::Key, SortOrder::Descend) => kvs.reverse(),
                (_, SortOrder::Ascend) => kvs.sort_by_key(|kv| field(kv)),
                (_, SortOrder::Descend) => kvs.sort_by_key(|kv| std::cmp::Reverse(field(kv))),
            }
        }
        if let Some(limit) = range.limit.filter(|limit| *limit > 0) {
            kvs.truncate(limit);
        }
        RangeResponse {
            kvs,
            count,
            revision: self.revision,
        }
    }

    /// Whether a compare holds against the current state.
    fn compare(&self, compare: &Compare) -> bool {
        let kv = self.live(&compare.key);
        let actual = match compare.target {
            CompareTarget::CreateRevision => kv.map_or(0, |kv| kv.create_revision),
            CompareTarget::ModRevision => kv.map_or(0, |kv| kv.mod_revision),
            CompareTarget::Version => kv.map_or(0, |kv| kv.version),
        };
        match compare.op {
            CompareOp::Equal => actual == compare.value,
            CompareOp::NotEqual => actual != compare.value,
            CompareOp::Less => actual < compare.value,
            CompareOp::Greater => actual > compare.value,
        }
    }

    /// Validates one operation of the branch about to run, against the state before
    /// the transaction (as etcd does).
    fn check_op(&self, op: &TxnOp) -> Result<()> {
        match op {
            TxnOp::Put {
                key,
                lease,
                ignore_lease,
                ..
            } => {
                if key.is_empty() {
                    return Err(Error::InvalidArgument(
                        "put: key is not provided".to_owned(),
                    ));
                }
                if *ignore_lease {
                    if self.live(key).is_none() {
                        return Err(StoreError::KeyNotFound(key.clone()).into());
                    }
                } else if *lease != 0 && !self.leases.contains_key(lease) {
                    return Err(StoreError::LeaseNotFound(*lease).into());
                }
                Ok(())
            }
            TxnOp::Delete { key, prefix } => {
                if key.is_empty() && !prefix {
                    return Err(Error::InvalidArgument(
                        "delete: key is not provided".to_owned(),
                    ));
                }
                Ok(())
            }
            TxnOp::Range(range) => self.check_range(range),
        }
    }

    /// Runs a transaction.
    fn txn(&mut self, txn: Txn) -> Result<TxnResponse> {
        check_intervals(&txn.success)?;
        check_intervals(&txn.failure)?;
        let succeeded = txn.compares.iter().all(|compare| self.compare(compare));
        let ops = if succeeded { txn.success } else { txn.failure };
        for op in &ops {
            self.check_op(op)?;
        }
        let mut batch = self.begin();
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                TxnOp::Put {
                    key,
                    value,
                    lease,
                    ignore_lease,
                } => {
                    let lease = if ignore_lease { None } else { Some(lease) };
                    self.put(&mut batch, key, value, lease);
                    TxnOpResponse::Put
                }
                TxnOp::Delete { key, prefix } => {
                    TxnOpResponse::Delete(self.delete_range(&mut batch, &key, prefix))
                }
                TxnOp::Range(range) => TxnOpResponse::Range(self.read_range(&range)),
            });
        }
        let revision = self.finish(batch);
        for response in &mut responses {
            if let TxnOpResponse::Range(range) = response {
                range.revision = revision;
            }
        }
        Ok(TxnResponse {
            succeeded,
            responses,
            revision,
        })
    }

    fn begin(&self) -> Batch {
        Batch {
            revision: self.revision.saturating_add(1),
            events: Vec::new(),
        }
    }

    /// Writes a key in `batch`; `lease: None` keeps the key's current lease.
    fn put(&mut self, batch: &mut Batch, key: String, value: Bytes, lease: Option<LeaseId>) {
        let previous = self.live(&key);
        let old_lease = previous.map_or(0, |kv| kv.lease);
        let create_revision = previous.map_or(batch.revision, |kv| kv.create_revision);
        let version = previous.map_or(1, |kv| kv.version.saturating_add(1));
        let mut new_lease = lease.unwrap_or(old_lease);
        if new_lease != old_lease {
            if let Some(entry) = self.leases.get_mut(&old_lease) {
                entry.keys.remove(&key);
            }
        }
        if new_lease != 0 {
            match self.leases.get_mut(&new_lease) {
                Some(entry) => {
                    entry.keys.insert(key.clone());
                }
                // Checked before the transaction ran; never attach to a missing lease.
                None => new_lease = 0,
            }
        }
        let kv = KeyValue {
            key: key.clone(),
            value,
            create_revision,
            mod_revision: batch.revision,
            version,
            lease: new_lease,
        };
        self.keys.entry(key).or_default().push(Entry {
            revision: batch.revision,
            sub: batch.events.len(),
            kv: Some(kv.clone()),
        });
        batch.events.push(WatchEvent {
            kind: EventKind::Put,
            kv,
        });
    }

    /// Deletes one key in `batch`; whether it existed.
    fn delete_key(&mut self, batch: &mut Batch, key: &str) -> bool {
        let Some(previous) = self.live(key) else {
            return false;
        };
        let lease = previous.lease;
        if let Some(entry) = self.leases.get_mut(&lease) {
            entry.keys.remove(key);
        }
        let sub = batch.events.len();
        if let Some(entries) = self.keys.get_mut(key) {
            entries.push(Entry {
                revision: batch.revision,
                sub,
                kv: None,
            });
        }
        batch.events.push(WatchEvent {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: key.to_owned(),
                mod_revision: batch.revision,
                ..KeyValue::default()
            },
        });
        true
    }

    /// Deletes a key or every key under a prefix in `batch`; how many existed.
    fn delete_range(&mut self, batch: &mut Batch, key: &str, prefix: bool) -> i64 {
        let doomed: Vec<String> = self
            .matching(key, prefix)
            .filter(|(_, entries)| entries.last().is_some_and(|entry| entry.kv.is_some()))
            .map(|(key, _)| key.clone())
            .collect();
        let mut deleted = 0;
        for key in doomed {
            if self.delete_key(batch, &key) {
                deleted += 1;
            }
        }
        deleted
    }

    /// Ends a transaction: if it changed anything, moves to its revision, tells the
    /// watchers and compacts what falls out of the retained window. Returns the
    /// store revision after it.
    fn finish(&mut self, batch: Batch) -> Revision {
        if batch.events.is_empty() {
            return self.revision;
        }
        self.revision = batch.revision;
        let keys = batch
            .events
            .iter()
            .map(|event| event.kv.key.clone())
            .collect();
        self.changelog.push_back((batch.revision, keys));
        self.watchers.deliver(batch.revision, &batch.events);
        let oldest_retained = self.revision.saturating_sub(self.retain).saturating_add(1);
        self.compact_to(oldest_retained);
        self.revision
    }

    /// Makes `revision` the oldest readable one, dropping older versions except, per
    /// key, the last put before it (which reads at `revision` still need).
    fn compact_to(&mut self, revision: Revision) {
        if revision <= self.compacted {
            return;
        }
        while self
            .changelog
            .front()
            .is_some_and(|(changed, _)| *changed < revision)
        {
            let Some((_, keys)) = self.changelog.pop_front() else {
                break;
            };
            for key in keys {
                let Some(entries) = self.keys.get_mut(&key) else {
                    continue;
                };
                let older = entries.partition_point(|entry| entry.revision < revision);
                if older > 0 {
                    // The last version before `revision` is what reads at `revision`
                    // see, unless it is a tombstone or `revision` has its own version.
                    let keep_base = entries[older - 1].kv.is_some()
                        && !matches!(entries.get(older), Some(next) if next.revision == revision);
                    entries.drain(..if keep_base { older - 1 } else { older });
                }
                if entries.is_empty() {
                    self.keys.remove(&key);
                }
            }
        }
        self.compacted = revision;
        tracing::trace!(revision, "memory store compacted");
    }

    /// Grants a lease.
    fn grant(&mut self, ttl: Duration, now: Instant) -> LeaseId {
        let id = loop {
            self.lease_counter = self.lease_counter.wrapping_add(1);
            let id = lease_id(self.lease_counter);
            if id != 0 && !self.leases.contains_key(&id) {
                break id;
            }
        };
        self.leases.insert(
            id,
            LeaseEntry {
                ttl,
                deadline: deadline_after(now, ttl),
                frozen: false,
                keys: BTreeSet::new(),
            },
        );
        id
    }

    /// Forgets a lease and deletes its keys in one revision; whether it existed.
    fn revoke(&mut self, lease: LeaseId) -> bool {
        let Some(entry) = self.leases.remove(&lease) else {
            return false;
        };
        let mut batch = self.begin();
        for key in &entry.keys {
            self.delete_key(&mut batch, key);
        }
        self.finish(batch);
        true
    }

    /// Expires every lease whose deadline has passed, earliest first, each in its own
    /// revision (as etcd's lessor revokes them one by one).
    fn expire_due(&mut self, now: Instant) {
        let mut due: Vec<(Instant, LeaseId)> = self
            .leases
            .iter()
            .filter(|(_, entry)| entry.deadline <= now)
            .map(|(id, entry)| (entry.deadline, *id))
            .collect();
        if due.is_empty() {
            return;
        }
        due.sort_unstable();
        for (_, lease) in due {
            if self.revoke(lease) {
                tracing::debug!(lease = format_args!("{lease:x}"), "memory lease expired");
            }
        }
    }

    /// The earliest lease deadline.
    fn next_deadline(&self) -> Option<Instant> {
        self.leases.values().map(|entry| entry.deadline).min()
    }

    /// Starts a watch: replays retained history from `start` and registers for live
    /// changes, or reports that `start` is compacted.
    fn watch(&mut self, key: &str, prefix: bool, start: Revision) -> WatchStart {
        let start = if start > 0 {
            start
        } else {
            self.revision.saturating_add(1)
        };
        if start < self.compacted {
            return WatchStart::Compacted(self.compacted);
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        let mut history: Vec<(Revision, usize, WatchEvent)> = Vec::new();
        for (name, entries) in self.matching(key, prefix) {
            let first = entries.partition_point(|entry| entry.revision < start);
            for entry in &entries[first..] {
                let event = match &entry.kv {
                    Some(kv) => WatchEvent {
                        kind: EventKind::Put,
                        kv: kv.clone(),
                    },
                    None => WatchEvent {
                        kind: EventKind::Delete,
                        kv: KeyValue {
                            key: name.clone(),
                            mod_revision: entry.revision,
                            ..KeyValue::default()
                        },
                    },
                };
                history.push((entry.revision, entry.sub, event));
            }
        }
        history.sort_by_key(|(revision, sub, _)| (*revision, *sub));
        let mut pending: Option<(Revision, Vec<WatchEvent>)> = None;
        for (revision, _, event) in history {
            match &mut pending {
                Some((current, events)) if *current == revision => events.push(event),
                _ => {
                    if let Some((_, events)) = pending.take() {
                        // The receiver is alive: it is still in our hands.
                        let _ = sender.send(Ok(WatchResponse::Events(events)));
                    }
                    pending = Some((revision, vec![event]));
                }
            }
        }
        if let Some((_, events)) = pending {
            let _ = sender.send(Ok(WatchResponse::Events(events)));
        }
        let id = self.watchers.register(key, prefix, start, sender);
        WatchStart::Registered(id, receiver)
    }
}

/// etcd rejects a branch that puts a key twice or puts a key it also deletes.
fn check_intervals(ops: &[TxnOp]) -> Result<()> {
    let mut puts: HashSet<&str> = HashSet::new();
    for op in ops {
        if let TxnOp::Put { key, .. } = op {
            if !puts.insert(key) {
                return Err(Error::InvalidArgument(format!(
                    "duplicate key given in txn request: {key:?}"
                )));
            }
        }
    }
    for op in ops {
        if let TxnOp::Delete { key, prefix } = op {
            let overlaps = puts.iter().any(|put| {
                if *prefix {
                    put.starts_with(key.as_str())
                } else {
                    put == key
                }
            });
            if overlaps {
                return Err(Error::InvalidArgument(format!(
                    "duplicate key given in txn request: a put overlaps the delete of {key:?}"
                )));
            }
        }
    }
    Ok(())
}

/// A positive, unique, random-looking lease id from a counter (a bijection on 63 bits,
/// so distinct counters give distinct ids).
fn lease_id(counter: u64) -> LeaseId {
    const MASK: u64 = (1 << 63) - 1;
    let mut x = counter & MASK;
    x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15) & MASK;
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9) & MASK;
    x ^= x >> 32;
    // `x` < 2^63, so it fits.
    LeaseId::try_from(x).unwrap_or(LeaseId::MAX)
}

/// How a watch started.
enum WatchStart {
    /// Its start revision is compacted away: the compaction point.
    Compacted(Revision),
    /// Registered under this id; history already queued on the receiver.
    Registered(u64, mpsc::UnboundedReceiver<Result<WatchResponse>>),
}

/// A registered watcher.
struct Watcher {
    key: String,
    prefix: bool,
    /// Changes before this revision are not sent.
    start: Revision,
    sender: mpsc::UnboundedSender<Result<WatchResponse>>,
}

/// The watchers, indexed by exact key and by prefix, so a change wakes only the
/// watchers it concerns.
#[derive(Default)]
struct Watchers {
    next_id: u64,
    watchers: HashMap<u64, Watcher>,
    by_key: HashMap<String, Vec<u64>>,
    by_prefix: HashMap<String, Vec<u64>>,
}

impl Watchers {
    fn register(
        &mut self,
        key: &str,
        prefix: bool,
        start: Revision,
        sender: mpsc::UnboundedSender<Result<WatchResponse>>,
    ) -> u64 {
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        let index = if prefix {
            &mut self.by_prefix
        } else {
            &mut self.by_key
        };
        index.entry(key.to_owned()).or_default().push(id);
        self.watchers.insert(
            id,
            Watcher {
                key: key.to_owned(),
                prefix,
                start,
                sender,
            },
        );
        id
    }

    fn remove(&mut self, id: u64) {
        let Some(watcher) = self.watchers.remove(&id) else {
            return;
        };
        let index = if watcher.prefix {
            &mut self.by_prefix
        } else {
            &mut self.by_key
        };
        if let Some(ids) = index.get_mut(&watcher.key) {
            ids.retain(|other| *other != id);
            if ids.is_empty() {
                index.remove(&watcher.key);
            }
        }
    }

    /// The ids of the watchers a change to `key` concerns.
    fn matching<'a>(&'a self, key: &'a str) -> impl Iterator<Item = u64> + 'a {
        let exact = self.by_key.get(key).into_iter().flatten().copied();
        let prefixes = (0..=key.len())
            .filter(|end| key.is_char_boundary(*end))
            .filter_map(|end| self.by_prefix.get(&key[..end]))
            .flatten()
            .copied();
        exact.chain(prefixes)
    }

    /// Sends one transaction's events to the watchers they concern, one response per
    /// watcher, and forgets watchers whose stream is gone.
    fn deliver(&mut self, revision: Revision, events: &[WatchEvent]) {
        if self.watchers.is_empty() {
            return;
        }
        let mut batches: BTreeMap<u64, Vec<WatchEvent>> = BTreeMap::new();
        for event in events {
            for id in self.matching(&event.kv.key) {
                batches.entry(id).or_default().push(event.clone());
            }
        }
        let mut closed = Vec::new();
        for (id, events) in batches {
            let Some(watcher) = self.watchers.get(&id) else {
                continue;
            };
            if revision < watcher.start {
                continue;
            }
            if watcher
                .sender
                .send(Ok(WatchResponse::Events(events)))
                .is_err()
            {
                closed.push(id);
            }
        }
        for id in closed {
            self.remove(id);
        }
    }
}

/// Removes a watcher from the registry when its stream is dropped.
struct Registration {
    id: u64,
    inner: Weak<Inner>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            inner.lock().watchers.remove(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    fn put(key: &str, value: &str) -> TxnOp {
        TxnOp::put(key, value.to_owned(), 0)
    }

    async fn put_one(kv: &MemoryKv, key: &str, value: &str) -> Revision {
        kv.txn(Txn::default().and_then(vec![put(key, value)]))
            .await
            .unwrap()
            .revision
    }

    async fn put_leased(kv: &MemoryKv, key: &str, lease: LeaseId) -> Revision {
        kv.txn(Txn::default().and_then(vec![TxnOp::put(key, "v", lease)]))
            .await
            .unwrap()
            .revision
    }

    async fn get(kv: &MemoryKv, key: &str) -> Option<KeyValue> {
        kv.range(Range::key(key))
            .await
            .unwrap()
            .kvs
            .into_iter()
            .next()
    }

    fn keys(response: &RangeResponse) -> Vec<&str> {
        response.kvs.iter().map(|kv| kv.key.as_str()).collect()
    }

    fn store_error(error: &Error) -> &StoreError {
        match error {
            Error::Backend { backend, source } => {
                assert_eq!(*backend, "memory");
                source.downcast_ref::<StoreError>().unwrap()
            }
            other => panic!("expected a memory store error, got {other:?}"),
        }
    }

    fn events(response: WatchResponse) -> Vec<(EventKind, String, Revision)> {
        match response {
            WatchResponse::Events(events) => events
                .into_iter()
                .map(|event| (event.kind, event.kv.key, event.kv.mod_revision))
                .collect(),
            other => panic!("expected events, got {other:?}"),
        }
    }

    fn watcher_count(kv: &MemoryKv) -> usize {
        kv.inner.lock().watchers.watchers.len()
    }

    #[tokio::test]
    async fn empty_store_is_at_revision_one() {
        let kv = MemoryKv::new();
        assert_eq!(kv.revision(), 1);
        let response = kv.range(Range::prefix("")).await.unwrap();
        assert_eq!(response.revision, 1);
        assert_eq!(response.count, 0);
        assert!(response.kvs.is_empty());
        // Revision 1 itself is readable.
        kv.range(Range::prefix("").at_revision(1)).await.unwrap();
    }

    #[tokio::test]
    async fn revisions_and_versions_follow_etcd() {
        let kv = MemoryKv::new();
        assert_eq!(put_one(&kv, "a", "1").await, 2);
        let a = get(&kv, "a").await.unwrap();
        assert_eq!(
            (a.create_revision, a.mod_revision, a.version, a.lease),
            (2, 2, 1, 0)
        );
        assert_eq!(a.value, Bytes::from("1"));

        assert_eq!(put_one(&kv, "a", "2").await, 3);
        let a = get(&kv, "a").await.unwrap();
        assert_eq!((a.create_revision, a.mod_revision, a.version), (2, 3, 2));

        let deleted = kv
            .txn(Txn::default().and_then(vec![TxnOp::delete("a")]))
            .await
            .unwrap();
        assert_eq!(deleted.revision, 4);
        assert_eq!(deleted.responses, vec![TxnOpResponse::Delete(1)]);
        assert!(get(&kv, "a").await.is_none());

        // Recreated: a new life, version 1.
        assert_eq!(put_one(&kv, "a", "3").await, 5);
        let a = get(&kv, "a").await.unwrap();
        assert_eq!((a.create_revision, a.mod_revision, a.version), (5, 5, 1));
    }

    #[tokio::test]
    async fn one_txn_is_one_revision_and_no_change_is_no_revision() {
        let kv = MemoryKv::new();
        let response = kv
            .txn(Txn::default().and_then(vec![put("a", "1"), put("b", "1")]))
            .await
            .unwrap();
        assert_eq!(response.revision, 2);
        assert_eq!(get(&kv, "a").await.unwrap().mod_revision, 2);
        assert_eq!(get(&kv, "b").await.unwrap().mod_revision, 2);

        // Reads and deletes of missing keys change nothing.
        let response = kv
            .txn(Txn::default().and_then(vec![
                TxnOp::delete("missing"),
                TxnOp::Range(Range::prefix("")),
            ]))
            .await
            .unwrap();
        assert_eq!(response.revision, 2);
        assert_eq!(response.responses[0], TxnOpResponse::Delete(0));
        assert_eq!(response.range(1).unwrap().count, 2);
        assert_eq!(kv.revision(), 2);
    }

    #[tokio::test]
    async fn txn_compares_treat_missing_keys_as_zero() {
        let kv = MemoryKv::new();
        let create_if_absent = |value: &str| {
            Txn::when(vec![Compare::create_revision("k", CompareOp::Equal, 0)])
                .and_then(vec![put("k", value)])
                .or_else(vec![TxnOp::Range(Range::key("k"))])
        };
        let first = kv.txn(create_if_absent("first")).await.unwrap();
        assert!(first.succeeded);
        assert_eq!(first.responses, vec![TxnOpResponse::Put]);

        let second = kv.txn(create_if_absent("second")).await.unwrap();
        assert!(!second.succeeded);
        assert_eq!(second.revision, 2);
        let seen = &second.range(0).unwrap().kvs[0];
        assert_eq!(seen.value, Bytes::from("first"));

        // Every target and operator, on an existing and a missing key.
        let checks = [
            (Compare::version("k", CompareOp::Equal, 1), true),
            (Compare::version("k", CompareOp::Greater, 1), false),
            (Compare::mod_revision("k", CompareOp::Less, 3), true),
            (Compare::mod_revision("k", CompareOp::NotEqual, 2), false),
            (Compare::create_revision("k", CompareOp::Greater, 1), true),
            (Compare::version("none", CompareOp::Equal, 0), true),
            (Compare::mod_revision("none", CompareOp::Less, 1), true),
            (
                Compare::create_revision("none", CompareOp::Greater, 0),
                false,
            ),
        ];
        for (compare, expected) in checks {
            let response = kv.txn(Txn::when(vec![compare.clone()])).await.unwrap();
            assert_eq!(response.succeeded, expected, "{compare:?}");
        }
        // All compares must hold.
        let response = kv
            .txn(Txn::when(vec![
                Compare::version("k", CompareOp::Equal, 1),
                Compare::version("k", CompareOp::Equal, 2),
            ]))
            .await
            .unwrap();
        assert!(!response.succeeded);
    }

    #[tokio::test]
    async fn txn_ranges_see_the_branchs_earlier_writes() {
        let kv = MemoryKv::new();
        put_one(&kv, "q/old", "x").await;
        let response = kv
            .txn(Txn::default().and_then(vec![
                TxnOp::Range(Range::prefix("q/")),
                put("q/new", "y"),
                TxnOp::Range(Range::prefix("q/")),
                TxnOp::Delete {
                    key: "q/old".to_owned(),
                    prefix: false,
                },
                TxnOp::Range(Range::prefix("q/")),
            ]))
            .await
            .unwrap();
        assert_eq!(response.revision, 3);
        assert_eq!(keys(response.range(0).unwrap()), ["q/old"]);
        assert_eq!(keys(response.range(2).unwrap()), ["q/new", "q/old"]);
        assert_eq!(response.range(2).unwrap().kvs[0].mod_revision, 3);
        assert_eq!(keys(response.range(4).unwrap()), ["q/new"]);
        // Inner ranges carry the transaction's revision, as its header.
        assert_eq!(response.range(0).unwrap().revision, 3);
    }

    #[tokio::test]
    async fn invalid_txns_fail_typed_and_apply_nothing() {
        let kv = MemoryKv::new();
        put_one(&kv, "a", "1").await;

        let unknown_lease = kv
            .txn(Txn::default().and_then(vec![put("b", "1"), TxnOp::put("c", "1", 42)]))
            .await
            .unwrap_err();
        assert_eq!(store_error(&unknown_lease), &StoreError::LeaseNotFound(42));
        assert!(get(&kv, "b").await.is_none());
        assert_eq!(kv.revision(), 2);

        let duplicate = kv
            .txn(Txn::default().and_then(vec![put("b", "1"), put("b", "2")]))
            .await
            .unwrap_err();
        assert!(
            matches!(duplicate, Error::InvalidArgument(_)),
            "{duplicate:?}"
        );

        let overlapping = kv
            .txn(Txn::default().and_then(vec![
                put("p/x", "1"),
                TxnOp::Delete {
                    key: "p/".to_owned(),
                    prefix: true,
                },
            ]))
            .await
            .unwrap_err();
        assert!(matches!(overlapping, Error::InvalidArgument(_)));

        // The failure branch is checked too, even when the success branch runs.
        let bad_failure_branch = Txn::default()
            .and_then(vec![put("b", "1")])
            .or_else(vec![put("c", "1"), put("c", "1")]);
        assert!(kv.txn(bad_failure_branch).await.is_err());

        let empty_key = kv
            .txn(Txn::default().and_then(vec![put("", "1")]))
            .await
            .unwrap_err();
        assert!(matches!(empty_key, Error::InvalidArgument(_)));
        assert!(matches!(
            kv.range(Range::key("")).await.unwrap_err(),
            Error::InvalidArgument(_)
        ));

        let keep_lease_of_missing = kv
            .txn(Txn::default().and_then(vec![TxnOp::put_ignore_lease("missing", "1")]))
            .await
            .unwrap_err();
        assert_eq!(
            store_error(&keep_lease_of_missing),
            &StoreError::KeyNotFound("missing".to_owned())
        );
        assert_eq!(kv.revision(), 2);
        assert_eq!(get(&kv, "a").await.unwrap().value, Bytes::from("1"));
    }

    #[tokio::test]
    async fn leases_attach_move_and_are_kept_with_ignore_lease() {
        let kv = MemoryKv::new();
        let first = kv.lease_grant(Duration::from_secs(60)).await.unwrap();
        let second = kv.lease_grant(Duration::from_secs(60)).await.unwrap();
        assert_ne!(first, second);
        assert!(first > 0 && second > 0);

        put_leased(&kv, "k", first).await;
        assert_eq!(kv.lease_keys(first).unwrap(), ["k"]);
        kv.txn(Txn::default().and_then(vec![TxnOp::put_ignore_lease("k", "new")]))
            .await
            .unwrap();
        let k = get(&kv, "k").await.unwrap();
        assert_eq!(
            (k.lease, k.value, k.version),
            (first, Bytes::from("new"), 2)
        );

        // Moving the key to another lease detaches it from the first.
        put_leased(&kv, "k", second).await;
        assert_eq!(kv.lease_keys(first).unwrap(), Vec::<String>::new());
        kv.lease_revoke(first).await.unwrap();
        assert_eq!(get(&kv, "k").await.unwrap().lease, second);

        // A plain put detaches it from any lease.
        put_one(&kv, "k", "plain").await;
        kv.lease_revoke(second).await.unwrap();
        assert_eq!(get(&kv, "k").await.unwrap().lease, 0);
    }

    #[tokio::test]
    async fn ranges_sort_limit_and_filter_by_revision() {
        let kv = MemoryKv::new();
        // Create b (2), a (3), c (4); then update b (5).
        put_one(&kv, "p/b", "1").await;
        put_one(&kv, "p/a", "1").await;
        put_one(&kv, "p/c", "1").await;
        put_one(&kv, "p/b", "2").await;
        put_one(&kv, "other", "1").await;

        let all = kv.range(Range::prefix("p/")).await.unwrap();
        assert_eq!(keys(&all), ["p/a", "p/b", "p/c"]);
        assert_eq!((all.count, all.revision), (3, 6));

        let first = kv.range(Range::prefix("p/").first_create()).await.unwrap();
        assert_eq!((keys(&first), first.count), (vec!["p/b"], 3));
        let last = kv.range(Range::prefix("p/").last_create()).await.unwrap();
        assert_eq!(keys(&last), ["p/c"]);
        let first_rev = kv.range(Range::prefix("p/").first_rev()).await.unwrap();
        assert_eq!(keys(&first_rev), ["p/a"]);
        let last_rev = kv.range(Range::prefix("p/").last_rev()).await.unwrap();
        assert_eq!(keys(&last_rev), ["p/b"]);
        let last_key = kv.range(Range::prefix("p/").last_key()).await.unwrap();
        assert_eq!(keys(&last_key), ["p/c"]);
        let first_key = kv.range(Range::prefix("p/").first_key()).await.unwrap();
        assert_eq!(keys(&first_key), ["p/a"]);

        let by_mod_desc = kv
            .range(Range::prefix("p/").sorted(SortTarget::ModRevision, SortOrder::Descend, 2))
            .await
            .unwrap();
        assert_eq!(
            (keys(&by_mod_desc), by_mod_desc.count),
            (vec!["p/b", "p/c"], 3)
        );

        // Go's lock wait: the key created last before mine (here: before revision 4).
        let before_c = kv
            .range(Range::prefix("p/").last_create().max_create_revision(3))
            .await
            .unwrap();
        assert_eq!(keys(&before_c), ["p/a"]);
        let unmodified_since_4 = kv
            .range(Range::prefix("p/").max_mod_revision(4))
            .await
            .unwrap();
        assert_eq!(keys(&unmodified_since_4), ["p/a", "p/c"]);
        // etcd's count ignores the max-revision filters.
        assert_eq!(unmodified_since_4.count, 3);

        // A limit of 0 is no limit, as in etcd.
        let mut unlimited = Range::prefix("p/");
        unlimited.limit = Some(0);
        assert_eq!(kv.range(unlimited).await.unwrap().kvs.len(), 3);
        let everything = kv.range(Range::prefix("")).await.unwrap();
        assert_eq!(keys(&everything), ["other", "p/a", "p/b", "p/c"]);
    }

    #[tokio::test]
    async fn ranges_at_past_revisions_are_exact_until_compacted() {
        let kv = MemoryKv::new();
        put_one(&kv, "a", "1").await; // 2
        put_one(&kv, "a", "2").await; // 3
        put_one(&kv, "b", "1").await; // 4
        kv.txn(Txn::default().and_then(vec![TxnOp::delete("a")]))
            .await
            .unwrap(); // 5

        let at = |revision| kv.range(Range::prefix("").at_revision(revision));
        assert!(at(1).await.unwrap().kvs.is_empty());
        let two = at(2).await.unwrap();
        assert_eq!(two.kvs[0].value, Bytes::from("1"));
        assert_eq!(two.revision, 5, "the header carries the current revision");
        let three = at(3).await.unwrap();
        assert_eq!((keys(&three), three.kvs[0].version), (vec!["a"], 2));
        assert_eq!(keys(&at(4).await.unwrap()), ["a", "b"]);
        assert_eq!(keys(&at(5).await.unwrap()), ["b"]);

        let future = at(6).await.unwrap_err();
        assert_eq!(
            store_error(&future),
            &StoreError::FutureRevision {
                requested: 6,
                current: 5
            }
        );

        kv.compact(4).unwrap();
        assert_eq!(kv.compact_revision(), 4);
        let compacted = at(3).await.unwrap_err();
        assert_eq!(
            store_error(&compacted),
            &StoreError::Compacted {
                requested: 3,
                compacted: 4
            }
        );
        // The compaction point itself stays exact, including keys last written before it.
        assert_eq!(keys(&at(4).await.unwrap()), ["a", "b"]);
        assert_eq!(at(4).await.unwrap().kvs[0].value, Bytes::from("2"));
        assert_eq!(keys(&at(5).await.unwrap()), ["b"]);
        // Compacting backwards does nothing; forwards past the present is an error.
        kv.compact(2).unwrap();
        assert_eq!(kv.compact_revision(), 4);
        assert!(matches!(
            store_error(&kv.compact(9).unwrap_err()),
            StoreError::FutureRevision { .. }
        ));
        // The deletion at the compaction point stays watchable...
        kv.compact(5).unwrap();
        let mut watch = kv.watch("a", false, 5).await.unwrap();
        assert_eq!(
            events(watch.next().await.unwrap().unwrap()),
            [(EventKind::Delete, "a".to_owned(), 5)]
        );
        // ...and once compacted past, the deleted key's history is gone entirely.
        put_one(&kv, "b", "2").await; // 6
        kv.compact(6).unwrap();
        assert!(!kv.inner.lock().keys.contains_key("a"));
        let six = kv.range(Range::key("b").at_revision(6)).await.unwrap();
        assert_eq!(six.kvs[0].value, Bytes::from("2"));
    }

    #[tokio::test]
    async fn history_is_compacted_automatically() {
        let kv = MemoryKv::with_retained_revisions(3);
        for value in 0..10 {
            put_one(&kv, "k", &value.to_string()).await;
        }
        // Revisions 2..=11 were written; the last three stay readable.
        assert_eq!(kv.revision(), 11);
        assert_eq!(kv.compact_revision(), 9);
        let oldest = kv.range(Range::key("k").at_revision(9)).await.unwrap();
        assert_eq!(oldest.kvs[0].value, Bytes::from("7"));
        assert!(kv.range(Range::key("k").at_revision(8)).await.is_err());
        assert_eq!(kv.inner.lock().keys["k"].len(), 3);
        assert_eq!(kv.inner.lock().changelog.len(), 3);
    }

    #[tokio::test]
    async fn watch_replays_history_then_delivers_live_events() {
        let kv = MemoryKv::new();
        put_one(&kv, "w/a", "1").await; // 2
        put_one(&kv, "x", "1").await; // 3
        kv.txn(Txn::default().and_then(vec![put("w/b", "1"), TxnOp::delete("w/a")]))
            .await
            .unwrap(); // 4

        let mut watch = kv.watch("w/", true, 2).await.unwrap();
        assert_eq!(
            events(watch.next().await.unwrap().unwrap()),
            [(EventKind::Put, "w/a".to_owned(), 2)]
        );
        // One transaction, one response, in the transaction's order.
        assert_eq!(
            events(watch.next().await.unwrap().unwrap()),
            [
                (EventKind::Put, "w/b".to_owned(), 4),
                (EventKind::Delete, "w/a".to_owned(), 4)
            ]
        );
        assert!(watch.next().now_or_never().is_none(), "history is done");

        put_one(&kv, "w/c", "1").await; // 5
        let live = watch.next().await.unwrap().unwrap();
        let WatchResponse::Events(live) = live else {
            panic!("expected events");
        };
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].kv.key, "w/c");
        assert_eq!((live[0].kv.create_revision, live[0].kv.version), (5, 1));
        assert_eq!(live[0].kv.value, Bytes::from("1"));

        // A delete event carries the key and the deletion revision, nothing else.
        kv.txn(Txn::default().and_then(vec![TxnOp::Delete {
            key: "w/".to_owned(),
            prefix: true,
        }]))
        .await
        .unwrap(); // 6
        let WatchResponse::Events(deleted) = watch.next().await.unwrap().unwrap() else {
            panic!("expected events");
        };
        assert_eq!(deleted.len(), 2);
        assert_eq!(
            deleted[0],
            WatchEvent {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: "w/b".to_owned(),
                    mod_revision: 6,
                    ..KeyValue::default()
                }
            }
        );
        assert_eq!(deleted[1].kv.key, "w/c");
    }

    #[tokio::test]
    async fn watch_of_one_key_from_now_and_from_the_future() {
        let kv = MemoryKv::new();
        put_one(&kv, "k", "1").await; // 2
                                      // 0 means "from the next revision".
        let mut from_now = kv.watch("k", false, 0).await.unwrap();
        let mut from_future = kv.watch("k", false, 4).await.unwrap();
        put_one(&kv, "k2", "1").await; // 3: another key, even with a common prefix
        put_one(&kv, "k", "2").await; // 4
        assert_eq!(
            events(from_now.next().await.unwrap().unwrap()),
            [(EventKind::Put, "k".to_owned(), 4)]
        );
        assert_eq!(
            events(from_future.next().await.unwrap().unwrap()),
            [(EventKind::Put, "k".to_owned(), 4)]
        );
        let mut late = kv.watch("k", false, 5).await.unwrap();
        put_one(&kv, "k", "3").await; // 5
        assert_eq!(
            events(late.next().await.unwrap().unwrap()),
            [(EventKind::Put, "k".to_owned(), 5)]
        );
        assert!(matches!(
            kv.watch("", false, 0).await,
            Err(Error::InvalidArgument(_))
        ));
    }

    #[tokio::test]
    async fn watch_from_a_compacted_revision_reports_it_and_ends() {
        let kv = MemoryKv::new();
        for value in ["1", "2", "3"] {
            put_one(&kv, "k", value).await;
        }
        kv.compact(3).unwrap();
        let mut watch = kv.watch("k", false, 2).await.unwrap();
        assert_eq!(
            watch.next().await.unwrap().unwrap(),
            WatchResponse::Compacted(3)
        );
        assert!(watch.next().await.is_none());
        // From the compaction point itself, history replays.
        let mut watch = kv.watch("k", false, 3).await.unwrap();
        assert_eq!(
            events(watch.next().await.unwrap().unwrap()),
            [(EventKind::Put, "k".to_owned(), 3)]
        );
    }

    #[tokio::test]
    async fn only_matching_watchers_are_woken_and_dropped_ones_are_forgotten() {
        let kv = MemoryKv::new();
        let mut exact = kv.watch("a/1", false, 0).await.unwrap();
        let mut prefix = kv.watch("a/", true, 0).await.unwrap();
        let mut other = kv.watch("b/", true, 0).await.unwrap();
        let mut everything = kv.watch("", true, 0).await.unwrap();
        assert_eq!(watcher_count(&kv), 4);

        put_one(&kv, "a/2", "1").await;
        assert_eq!(events(prefix.next().await.unwrap().unwrap())[0].1, "a/2");
        assert_eq!(
            events(everything.next().await.unwrap().unwrap())[0].1,
            "a/2"
        );
        assert!(exact.next().now_or_never().is_none());
        assert!(other.next().now_or_never().is_none());

        put_one(&kv, "a/1", "1").await;
        assert_eq!(events(exact.next().await.unwrap().unwrap())[0].1, "a/1");
        assert_eq!(events(prefix.next().await.unwrap().unwrap())[0].1, "a/1");
        assert!(other.next().now_or_never().is_none());

        // Nothing is queued for watchers a change does not concern.
        assert_eq!(kv.inner.lock().watchers.matching("a/1").count(), 3);
        assert_eq!(kv.inner.lock().watchers.matching("c").count(), 1);

        drop(exact);
        drop(other);
        assert_eq!(watcher_count(&kv), 2);
        assert!(!kv.inner.lock().watchers.by_key.contains_key("a/1"));
        assert!(!kv.inner.lock().watchers.by_prefix.contains_key("b/"));
    }

    #[tokio::test(start_paused = true)]
    async fn lease_expiry_deletes_keys_in_one_revision_with_delete_events() {
        let kv = MemoryKv::new();
        let ttl = Duration::from_secs(5);
        let lease = kv.lease_grant(ttl).await.unwrap();
        let started = Instant::now();
        kv.txn(Txn::default().and_then(vec![
            TxnOp::put("s/a", "1", lease),
            TxnOp::put("s/b", "1", lease),
        ]))
        .await
        .unwrap(); // 2
        put_one(&kv, "s/plain", "1").await; // 3
        let mut watch = kv.watch("s/", true, 0).await.unwrap();

        // Nothing but the reaper runs while the test waits on the watch.
        let expired = events(watch.next().await.unwrap().unwrap());
        assert!(
            started.elapsed() >= ttl,
            "expired after {:?}",
            started.elapsed()
        );
        assert!(started.elapsed() < ttl + Duration::from_secs(1));
        assert_eq!(
            expired,
            [
                (EventKind::Delete, "s/a".to_owned(), 4),
                (EventKind::Delete, "s/b".to_owned(), 4)
            ]
        );
        assert_eq!(
            keys(&kv.range(Range::prefix("s/")).await.unwrap()),
            ["s/plain"]
        );
        assert_eq!(kv.lease_keep_alive(lease).await.unwrap(), KeepAlive::Gone);
        assert!(kv.lease_ids().is_empty());
        // A put to the expired lease is refused.
        let refused = put_leased_err(&kv, "s/late", lease).await;
        assert_eq!(store_error(&refused), &StoreError::LeaseNotFound(lease));
    }

    async fn put_leased_err(kv: &MemoryKv, key: &str, lease: LeaseId) -> Error {
        kv.txn(Txn::default().and_then(vec![TxnOp::put(key, "v", lease)]))
            .await
            .unwrap_err()
    }

    #[tokio::test(start_paused = true)]
    async fn keepalive_extends_the_deadline() {
        let kv = MemoryKv::new();
        let ttl = Duration::from_secs(10);
        let lease = kv.lease_grant(ttl).await.unwrap();
        put_leased(&kv, "k", lease).await;

        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(kv.lease_ttl_remaining(lease), Some(Duration::from_secs(4)));
        assert_eq!(
            kv.lease_keep_alive(lease).await.unwrap(),
            KeepAlive::Renewed
        );
        assert_eq!(kv.lease_ttl_remaining(lease), Some(ttl));

        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(
            get(&kv, "k").await.is_some(),
            "renewed: alive past the first TTL"
        );

        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(get(&kv, "k").await.is_none());
        assert_eq!(kv.lease_ttl_remaining(lease), None);
        assert_eq!(kv.lease_keep_alive(lease).await.unwrap(), KeepAlive::Gone);
    }

    #[tokio::test]
    async fn revoke_deletes_keys_in_one_revision_and_forgets_the_lease() {
        let kv = MemoryKv::new();
        let lease = kv.lease_grant(Duration::from_secs(60)).await.unwrap();
        put_leased(&kv, "r/a", lease).await; // 2
        put_leased(&kv, "r/b", lease).await; // 3
        let mut watch = kv.watch("r/", true, 0).await.unwrap();

        kv.lease_revoke(lease).await.unwrap();
        assert_eq!(kv.revision(), 4);
        assert_eq!(
            events(watch.next().await.unwrap().unwrap()),
            [
                (EventKind::Delete, "r/a".to_owned(), 4),
                (EventKind::Delete, "r/b".to_owned(), 4)
            ]
        );
        assert_eq!(kv.lease_keep_alive(lease).await.unwrap(), KeepAlive::Gone);
        assert_eq!(kv.lease_keys(lease), None);

        // Unknown leases: revoking succeeds and changes nothing.
        kv.lease_revoke(lease).await.unwrap();
        kv.lease_revoke(12345).await.unwrap();
        assert_eq!(kv.revision(), 4);
        // A lease without keys is revoked without a new revision.
        let empty = kv.lease_grant(Duration::from_secs(60)).await.unwrap();
        kv.lease_revoke(empty).await.unwrap();
        assert_eq!(kv.revision(), 4);
        assert_eq!(kv.lease_keep_alive(77).await.unwrap(), KeepAlive::Gone);
    }

    #[tokio::test]
    async fn lease_grants_validate_the_ttl() {
        let kv = MemoryKv::new();
        assert!(matches!(
            kv.lease_grant(Duration::ZERO).await,
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            kv.lease_grant(Duration::MAX).await,
            Err(Error::InvalidArgument(_))
        ));
        let mut ids = HashSet::new();
        for _ in 0..100 {
            let id = kv.lease_grant(Duration::from_millis(1500)).await.unwrap();
            assert!(id > 0);
            assert!(ids.insert(id));
        }
        assert_eq!(kv.lease_ids().len(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn frozen_lease_expires_although_renewals_answer_renewed() {
        let kv = MemoryKv::new();
        let ttl = Duration::from_secs(3);
        let lease = kv.lease_grant(ttl).await.unwrap();
        put_leased(&kv, "held", lease).await;
        let mut watch = kv.watch("held", false, 0).await.unwrap();

        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            kv.lease_keep_alive(lease).await.unwrap(),
            KeepAlive::Renewed
        );
        let frozen_at = Instant::now();
        assert!(kv.freeze_lease(lease));
        assert!(!kv.freeze_lease(999));

        tokio::time::advance(Duration::from_secs(2)).await;
        // The renewal "succeeds" for the client but does not reach the store.
        assert_eq!(
            kv.lease_keep_alive(lease).await.unwrap(),
            KeepAlive::Renewed
        );
        assert_eq!(kv.lease_ttl_remaining(lease), Some(Duration::from_secs(1)));

        let expired = events(watch.next().await.unwrap().unwrap());
        assert_eq!(expired, [(EventKind::Delete, "held".to_owned(), 3)]);
        assert_eq!(
            frozen_at.elapsed(),
            ttl,
            "one TTL after the last real renewal"
        );
        assert_eq!(kv.lease_keep_alive(lease).await.unwrap(), KeepAlive::Gone);
    }

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

    #[test]
    fn a_store_built_outside_a_runtime_starts_its_reaper_on_first_use() {
        let kv = MemoryKv::new();
        assert!(kv.inner.reaper.lock().unwrap().is_none());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let lease = kv.lease_grant(Duration::from_secs(2)).await.unwrap();
            put_leased(&kv, "k", lease).await;
            let mut watch = kv.watch("k", false, 0).await.unwrap();
            let expired = events(watch.next().await.unwrap().unwrap());
            assert_eq!(expired, [(EventKind::Delete, "k".to_owned(), 3)]);
        });
    }

    #[tokio::test(start_paused = true)]
    async fn leases_expire_one_revision_each_in_deadline_order() {
        let kv = MemoryKv::new();
        let late = kv.lease_grant(Duration::from_secs(4)).await.unwrap();
        let early = kv.lease_grant(Duration::from_secs(2)).await.unwrap();
        put_leased(&kv, "late", late).await; // 2
        put_leased(&kv, "early", early).await; // 3
                                               // Both are due by the time anyone looks: expiry order is by deadline.
        tokio::time::advance(Duration::from_secs(5)).await;
        let mut watch = kv.watch("", true, 4).await.unwrap();
        assert_eq!(
            events(watch.next().await.unwrap().unwrap()),
            [(EventKind::Delete, "early".to_owned(), 4)]
        );
        assert_eq!(
            events(watch.next().await.unwrap().unwrap()),
            [(EventKind::Delete, "late".to_owned(), 5)]
        );
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
