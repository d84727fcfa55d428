//! The revisioned key-value store model that etcd-like backends implement.
//!
//! etcd's Go `concurrency` and `recipes` packages are built on a handful of etcd
//! operations: ranges sorted by create or mod revision with revision bounds, one-shot
//! transactions comparing revisions, watches from a revision, and leases. This module
//! states those operations as the [`Kv`] trait; [`crate::recipes`] builds every
//! primitive on it exactly as the Go packages do (same key layouts, same waits). The
//! in-memory backend and the etcd backend are two implementations of [`Kv`], so they
//! share one implementation of the primitives.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use distsync_core::error::{Error, Result};
use distsync_core::rate_limiter::{Admission, Rate};
use distsync_core::raw::RetryPolicy;
use distsync_core::session::KeepAlive;

use crate::store_error::StoreError;

/// A store revision: increases by one with every transaction that changes something.
pub type Revision = i64;

/// A lease id; `0` means "no lease".
pub type LeaseId = i64;

/// A key with its value and revisions, as etcd's `mvccpb.KeyValue`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value (empty for a delete event).
    pub value: Bytes,
    /// The revision that created the key (`0` in a delete event's kv is not used).
    pub create_revision: Revision,
    /// The revision of the last change (for a delete event: the deletion's revision).
    pub mod_revision: Revision,
    /// How many times the key was written since it was created (1 after creation).
    pub version: i64,
    /// The lease the key is attached to, or `0`.
    pub lease: LeaseId,
}

/// What a range is sorted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortTarget {
    /// The key, bytewise.
    Key,
    /// The create revision.
    CreateRevision,
    /// The mod revision.
    ModRevision,
}

/// Sort direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortOrder {
    /// Smallest first.
    Ascend,
    /// Largest first.
    Descend,
}

/// A read of one key or of every key under a prefix, as etcd's `Get` with options.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Range {
    /// The key, or the prefix when `prefix` is set.
    pub key: String,
    /// Read every key starting with `key`.
    pub prefix: bool,
    /// Read every key in `[key, range_end)` (etcd's range end); takes precedence over
    /// `prefix`.
    pub range_end: Option<String>,
    /// Sort order; unsorted ranges come in key order.
    pub sort: Option<(SortTarget, SortOrder)>,
    /// Return at most this many keys (after sorting); `Some(0)` means no limit, as
    /// in etcd.
    pub limit: Option<usize>,
    /// Only keys created at or before this revision (`0`: no bound, as in etcd).
    pub max_create_revision: Option<Revision>,
    /// Only keys last modified at or before this revision (`0`: no bound).
    pub max_mod_revision: Option<Revision>,
    /// Read at this past revision instead of the latest.
    pub revision: Option<Revision>,
}

impl Range {
    /// One key.
    pub fn key(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            ..Self::default()
        }
    }

    /// Every key under `prefix`.
    pub fn prefix(prefix: impl Into<String>) -> Self {
        Self {
            key: prefix.into(),
            prefix: true,
            ..Self::default()
        }
    }

    /// Every key in `[start, end)`.
    pub fn between(start: impl Into<String>, end: impl Into<String>) -> Self {
        Self {
            key: start.into(),
            range_end: Some(end.into()),
            ..Self::default()
        }
    }

    /// Sorted by `target` in `order`, first `limit` keys.
    pub fn sorted(mut self, target: SortTarget, order: SortOrder, limit: usize) -> Self {
        self.sort = Some((target, order));
        self.limit = Some(limit);
        self
    }

    /// Checks this range as etcd does before any part of its request runs: an end
    /// after the start, a key unless it reads a prefix, and a revision (if any) neither
    /// above the store's `current` revision nor below its compaction point
    /// (`compacted`). A store that keeps the MVCC model itself calls it; `backend`
    /// names the store in a revision's refusal ([`StoreError`]).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a malformed range, [`StoreError::FutureRevision`]
    /// and [`StoreError::Compacted`] (through [`StoreError::in_backend`]).
    pub fn check(
        &self,
        current: Revision,
        compacted: Revision,
        backend: &'static str,
    ) -> Result<()> {
        if let Some(end) = &self.range_end {
            if *end <= self.key {
                return Err(Error::InvalidArgument(format!(
                    "range: end {end:?} is not after start {:?}",
                    self.key
                )));
            }
        } else if self.key.is_empty() && !self.prefix {
            return Err(Error::InvalidArgument(
                "range: key is not provided".to_owned(),
            ));
        }
        if let Some(requested) = self.revision.filter(|revision| *revision > 0) {
            if requested > current {
                return Err(StoreError::FutureRevision { requested, current }.in_backend(backend));
            }
            if requested < compacted {
                return Err(StoreError::Compacted {
                    requested,
                    compacted,
                }
                .in_backend(backend));
            }
        }
        Ok(())
    }

    /// Whether `kv` is within this range's create and mod revision bounds (a bound of
    /// 0 or none admits every revision).
    pub fn within_bounds(&self, kv: &KeyValue) -> bool {
        let above = |bound: Option<Revision>, revision: Revision| {
            bound.is_some_and(|max| max > 0 && revision > max)
        };
        !above(self.max_create_revision, kv.create_revision)
            && !above(self.max_mod_revision, kv.mod_revision)
    }

    /// Answers this range from `visible`, the key values it covers at its revision in
    /// key order, as etcd does: drops those above the create and mod revision bounds,
    /// sorts (stably, so ties stay in key order) and cuts to the limit. Returns the
    /// answer and the count etcd reports, taken before the bounds and the limit. A
    /// store that keeps the MVCC model itself and cannot do this in its own query
    /// calls it; `T` lets it sort references and copy only what it returns.
    pub fn select<T: std::borrow::Borrow<KeyValue>>(&self, visible: Vec<T>) -> (Vec<T>, usize) {
        let count = visible.len();
        let mut kvs: Vec<T> = visible
            .into_iter()
            .filter(|kv| self.within_bounds(kv.borrow()))
            .collect();
        if let Some((target, order)) = self.sort {
            let field = |kv: &T| {
                let kv = kv.borrow();
                match target {
                    SortTarget::Key => 0,
                    SortTarget::CreateRevision => kv.create_revision,
                    SortTarget::ModRevision => kv.mod_revision,
                }
            };
            match (target, order) {
                (SortTarget::Key, SortOrder::Ascend) => {}
                (SortTarget::Key, SortOrder::Descend) => kvs.reverse(),
                (_, SortOrder::Ascend) => kvs.sort_by_key(field),
                (_, SortOrder::Descend) => kvs.sort_by_key(|kv| std::cmp::Reverse(field(kv))),
            }
        }
        if let Some(limit) = self.limit.filter(|limit| *limit > 0) {
            kvs.truncate(limit);
        }
        (kvs, count)
    }

    /// The key with the lowest create revision (Go's `WithFirstCreate`).
    pub fn first_create(self) -> Self {
        self.sorted(SortTarget::CreateRevision, SortOrder::Ascend, 1)
    }

    /// The key with the highest create revision (Go's `WithLastCreate`).
    pub fn last_create(self) -> Self {
        self.sorted(SortTarget::CreateRevision, SortOrder::Descend, 1)
    }

    /// The key with the lowest mod revision (Go's `WithFirstRev`).
    pub fn first_rev(self) -> Self {
        self.sorted(SortTarget::ModRevision, SortOrder::Ascend, 1)
    }

    /// The key with the highest mod revision (Go's `WithLastRev`).
    pub fn last_rev(self) -> Self {
        self.sorted(SortTarget::ModRevision, SortOrder::Descend, 1)
    }

    /// The smallest key (Go's `WithFirstKey`).
    pub fn first_key(self) -> Self {
        self.sorted(SortTarget::Key, SortOrder::Ascend, 1)
    }

    /// The largest key (Go's `WithLastKey`).
    pub fn last_key(self) -> Self {
        self.sorted(SortTarget::Key, SortOrder::Descend, 1)
    }

    /// Only keys created at or before `revision` (Go's `WithMaxCreateRev`).
    pub fn max_create_revision(mut self, revision: Revision) -> Self {
        self.max_create_revision = Some(revision);
        self
    }

    /// Only keys modified at or before `revision` (Go's `WithMaxModRev`).
    pub fn max_mod_revision(mut self, revision: Revision) -> Self {
        self.max_mod_revision = Some(revision);
        self
    }

    /// Read at a past revision (Go's `WithRev`).
    pub fn at_revision(mut self, revision: Revision) -> Self {
        self.revision = Some(revision);
        self
    }
}

/// The answer to a [`Range`].
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RangeResponse {
    /// The keys, sorted and limited as asked.
    pub kvs: Vec<KeyValue>,
    /// How many keys are in the range, counted as etcd does: before the limit and
    /// before the `max_*_revision` filters.
    pub count: usize,
    /// The store revision the read was served at (etcd's header revision).
    pub revision: Revision,
}

/// What a [`Compare`] looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    /// The key's create revision (`0` when the key does not exist).
    CreateRevision,
    /// The key's mod revision (`0` when the key does not exist).
    ModRevision,
    /// The key's version (`0` when the key does not exist).
    Version,
}

/// How a [`Compare`] compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    /// `==`
    Equal,
    /// `!=`
    NotEqual,
    /// `<`
    Less,
    /// `>`
    Greater,
}

/// One guard of a [`Txn`], as etcd's `Compare`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    /// The key compared.
    pub key: String,
    /// What of the key is compared.
    pub target: CompareTarget,
    /// How.
    pub op: CompareOp,
    /// Against what.
    pub value: i64,
    /// Compare every key that starts with `key` (etcd's compare over a range): the
    /// compare holds when it holds for each of them or, with none there, for a missing
    /// key. So `create_revision == 0` over a prefix holds exactly when nothing is under
    /// it, which lets one transaction write only into an empty range, and a refused one
    /// write nothing.
    pub prefix: bool,
}

impl Compare {
    /// Whether this compare holds for a key of this create revision, mod revision and
    /// version (all `0` for a missing key), as etcd evaluates it.
    pub fn holds(&self, create_revision: Revision, mod_revision: Revision, version: i64) -> bool {
        let actual = match self.target {
            CompareTarget::CreateRevision => create_revision,
            CompareTarget::ModRevision => mod_revision,
            CompareTarget::Version => version,
        };
        match self.op {
            CompareOp::Equal => actual == self.value,
            CompareOp::NotEqual => actual != self.value,
            CompareOp::Less => actual < self.value,
            CompareOp::Greater => actual > self.value,
        }
    }

    /// Whether this compare holds for the keys it compares, each given as its create
    /// revision, mod revision and version: its key when live, or every live key under
    /// its prefix ([`Compare::prefix`]). With none, it holds as for a missing key (all
    /// `0`). A store that keeps the MVCC model itself calls it with what it read.
    pub fn holds_for_each(
        &self,
        keys: impl IntoIterator<Item = (Revision, Revision, i64)>,
    ) -> bool {
        let mut keys = keys.into_iter().peekable();
        if keys.peek().is_none() {
            return self.holds(0, 0, 0);
        }
        keys.all(|(create_revision, mod_revision, version)| {
            self.holds(create_revision, mod_revision, version)
        })
    }

    /// `target(key) op value`, on one key.
    fn on_key(key: impl Into<String>, target: CompareTarget, op: CompareOp, value: i64) -> Self {
        Self {
            key: key.into(),
            target,
            op,
            value,
            prefix: false,
        }
    }

    /// `create_revision(key) op value`.
    pub fn create_revision(key: impl Into<String>, op: CompareOp, value: Revision) -> Self {
        Self::on_key(key, CompareTarget::CreateRevision, op, value)
    }

    /// `mod_revision(key) op value`.
    pub fn mod_revision(key: impl Into<String>, op: CompareOp, value: Revision) -> Self {
        Self::on_key(key, CompareTarget::ModRevision, op, value)
    }

    /// This compare over every key under its key, as a prefix (see [`Compare::prefix`]).
    #[must_use]
    pub fn over_prefix(mut self) -> Self {
        self.prefix = true;
        self
    }

    /// `version(key) op value`.
    pub fn version(key: impl Into<String>, op: CompareOp, value: i64) -> Self {
        Self::on_key(key, CompareTarget::Version, op, value)
    }
}

/// One operation of a [`Txn`] branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    /// Write a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Bytes,
        /// Attach to this lease (`0`: none).
        lease: LeaseId,
        /// Keep the key's current lease (Go's `WithIgnoreLease`); `lease` is ignored.
        ignore_lease: bool,
    },
    /// Delete a key, or every key under a prefix.
    Delete {
        /// The key or prefix.
        key: String,
        /// Delete every key starting with `key`.
        prefix: bool,
    },
    /// Read, within the transaction.
    Range(Range),
}

impl TxnOp {
    /// A put, attached to `lease` (`0`: none).
    pub fn put(key: impl Into<String>, value: impl Into<Bytes>, lease: LeaseId) -> Self {
        Self::Put {
            key: key.into(),
            value: value.into(),
            lease,
            ignore_lease: false,
        }
    }

    /// A put that keeps the key's lease.
    pub fn put_ignore_lease(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self::Put {
            key: key.into(),
            value: value.into(),
            lease: 0,
            ignore_lease: true,
        }
    }

    /// A delete of one key.
    pub fn delete(key: impl Into<String>) -> Self {
        Self::Delete {
            key: key.into(),
            prefix: false,
        }
    }
}

/// A transaction: if every compare holds, run `success`, else `failure`; atomically.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Txn {
    /// Guards, all of which must hold.
    pub compares: Vec<Compare>,
    /// Operations when they hold.
    pub success: Vec<TxnOp>,
    /// Operations when one does not.
    pub failure: Vec<TxnOp>,
}

impl Txn {
    /// A transaction guarded by `compares`.
    pub fn when(compares: Vec<Compare>) -> Self {
        Self {
            compares,
            ..Self::default()
        }
    }

    /// Sets the success branch.
    pub fn and_then(mut self, ops: Vec<TxnOp>) -> Self {
        self.success = ops;
        self
    }

    /// Sets the failure branch.
    pub fn or_else(mut self, ops: Vec<TxnOp>) -> Self {
        self.failure = ops;
        self
    }

    /// Checks both branches as etcd does before it runs either: no branch puts a key
    /// twice, or puts a key it also deletes. A store that keeps the MVCC model itself
    /// calls it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the key.
    pub fn check_branches(&self) -> Result<()> {
        check_branch(&self.success)?;
        check_branch(&self.failure)
    }
}

/// One branch of [`Txn::check_branches`].
fn check_branch(ops: &[TxnOp]) -> Result<()> {
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

/// The answer to one [`TxnOp`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOpResponse {
    /// A put was applied.
    Put,
    /// A delete removed this many keys.
    Delete(i64),
    /// A range read.
    Range(RangeResponse),
}

/// The answer to a [`Txn`].
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TxnResponse {
    /// Whether the compares held (and `success` ran).
    pub succeeded: bool,
    /// One answer per operation of the branch that ran.
    pub responses: Vec<TxnOpResponse>,
    /// The store revision after the transaction.
    pub revision: Revision,
}

impl TxnResponse {
    /// The range answer at `index`, if that operation was a range.
    pub fn range(&self, index: usize) -> Option<&RangeResponse> {
        match self.responses.get(index) {
            Some(TxnOpResponse::Range(range)) => Some(range),
            _ => None,
        }
    }
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Created or updated.
    Put,
    /// Deleted (also when its lease ended).
    Delete,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change; for a delete, its key and the deletion's revision as
    /// `mod_revision`.
    pub kv: KeyValue,
}

/// One message of a watch stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchResponse {
    /// Changes, in revision order.
    Events(Vec<WatchEvent>),
    /// The start revision has been compacted away; the stream ends after this. Re-read
    /// and watch again from the read's revision.
    Compacted(Revision),
}

/// A store's decision of a rate limiter's request in one request ([`Kv::rate_limit`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RateDecision {
    /// Decided on the store's clock: granted (the new theoretical arrival time is
    /// stored) or denied (nothing is).
    Decided(Admission),
    /// Not decided: the limiter's state is live (its theoretical arrival time is in
    /// the store's future) and was stored with another rate, whose
    /// [`Rate::fingerprint`] this is. Nothing is stored; the recipe answers
    /// [`Error::InvalidArgument`] naming both rates, as it does when it finds the same
    /// by a read.
    OtherRate(String),
}

/// A revisioned key-value store with leases and watches: the operations etcd's Go
/// concurrency recipes need. Keys given here are full store keys (namespace included).
#[async_trait]
pub trait Kv: Send + Sync + 'static {
    /// The backend's short name, for errors and logs.
    fn backend(&self) -> &'static str;

    /// The store's identity as its latest answer gave it, where the store gives one
    /// (etcd: the cluster id in every answer's header); 0 for none. Another identity
    /// than before is a store that forgot
    /// ([`ForgetfulKv`](crate::forgetful::ForgetfulKv)).
    fn identity(&self) -> u64 {
        0
    }

    /// Reads a key or a prefix.
    async fn range(&self, range: Range) -> Result<RangeResponse>;

    /// Runs a transaction atomically.
    async fn txn(&self, txn: Txn) -> Result<TxnResponse>;

    /// Watches `key` (or every key under it when `prefix`) for changes at or after
    /// `start_revision`; a `start_revision` of 0 (or below) watches from the store's
    /// next revision, as etcd does: nothing already written is replayed. The stream
    /// ends when the watch is cancelled by the store or the connection; callers then
    /// re-read and watch again.
    async fn watch(
        &self,
        key: &str,
        prefix: bool,
        start_revision: Revision,
    ) -> Result<BoxStream<'static, Result<WatchResponse>>>;

    /// Grants a lease of `ttl` (rounded up to whole seconds by etcd).
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId>;

    /// Grants a lease of `ttl` for records that are no session and outlive any (a
    /// queue's `enqueue_once` record, kept for the dedup window): a store that bounds
    /// session TTLs (`max_session_ttl=`) bounds sessions only, so such a lease is
    /// neither refused by the bound nor waited out by the lock-delay after the store
    /// forgets ([`ForgetfulKv`](crate::forgetful::ForgetfulKv)). By default
    /// [`Kv::lease_grant`], for a store with no such bound.
    async fn lease_grant_for_records(&self, ttl: Duration) -> Result<LeaseId> {
        self.lease_grant(ttl).await
    }

    /// Renews a lease once.
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<KeepAlive>;

    /// Revokes a lease, deleting every key attached to it.
    async fn lease_revoke(&self, lease: LeaseId) -> Result<()>;

    /// How long `lease` has left before the store expires it, unless renewed; `None`
    /// when the lease is gone, or (the default) where the store cannot say. Status
    /// reports read it for each session they show ([`HoldStatus::expires_in`]).
    ///
    /// [`HoldStatus::expires_in`]: distsync_core::status::HoldStatus::expires_in
    ///
    /// # Errors
    /// The store's error.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    async fn lease_time_to_live(&self, lease: LeaseId) -> Result<Option<Duration>> {
        let _ = lease;
        Ok(None)
    }

    /// The retry policy of this store's client: recipes retry their one-shot calls
    /// and releases by it, so that none of them outlasts the client's request timeout
    /// by a budget of retries (see [`RetryPolicy::within`]). The default is core's
    /// default policy.
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    /// The store's own clock: time since an epoch the store keeps, read where the
    /// store decides (for the memory store, in its process; for a SQL server, by the
    /// server, which costs a round trip). `None` (the default) where clients cannot
    /// read a store clock (etcd): the rate limiter and queue ages, which must go by
    /// the store's time and never a client's, are then unsupported.
    ///
    /// # Errors
    /// The store's error.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    async fn clock(&self) -> Result<Option<std::time::Duration>> {
        Ok(None)
    }

    /// Decides a rate limiter's request in one request to the store: GCRA
    /// ([`distsync_core::rate_limiter::gcra`]) for `permits` permits at `rate` on
    /// `key`, whose value is `<tat in µs> <rate fingerprint>` (what `status` reads),
    /// with the store's clock read and the key written in one atomic step. `None` (the
    /// default): this store has no one-request decision, and the recipe decides by a
    /// read of the key, a read of [`Kv::clock`] and a compare-and-swap on the key's
    /// revision, three requests or more, which a store whose requests are SQL round
    /// trips cannot afford under contention.
    ///
    /// A store that answers answers every request for the key: its write need not move
    /// the key's revision (it can stand outside the revision order, since nothing
    /// watches a limiter), so a compare-and-swap beside it would not see it.
    ///
    /// # Errors
    /// The store's error; a request the store may have applied is as after any lost
    /// reply (its permits may have been counted).
    ///
    /// # Cancel safety
    /// Cancel-safe in that it never counts more than asked: the decision is one atomic
    /// step, so a dropped call either counted its permits or counted nothing.
    async fn rate_limit(
        &self,
        key: &str,
        rate: &Rate,
        permits: u32,
    ) -> Result<Option<RateDecision>> {
        let _ = (key, rate, permits);
        Ok(None)
    }

    /// The store's version and the settings its guarantees depend on, as
    /// `(name, value)` pairs ([`distsync_core::Backend::describe_store`]); the default
    /// reads nothing.
    ///
    /// # Errors
    /// The store's error.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    async fn describe(&self) -> Result<Vec<(String, String)>> {
        Ok(Vec::new())
    }
}
