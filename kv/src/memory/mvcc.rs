//! The MVCC model: revisions, per-key version history, compaction, ranges and
//! transactions, as etcd's `mvcc` package keeps them.
//!
//! Every key keeps the list of its versions (puts and deletion tombstones, each tagged
//! with the revision and its position inside that revision's transaction), so reads at
//! any retained past revision and watch replays (see `watch.rs`) are exact. One global
//! revision counts changing transactions, as etcd's does.

use std::sync::Arc;

use bytes::Bytes;

use super::long_lines::{created_by, newest};
use super::records::Entry;
use super::store::{MemoryKv, State, BACKEND};
use crate::kv::{
    Compare, EventKind, KeyValue, LeaseId, Range, RangeResponse, Revision, SortOrder, SortTarget,
    Txn, TxnOp, TxnOpResponse, TxnResponse, WatchEvent,
};
use crate::store_error::StoreError;
use distsync_core::error::{Error, Result};

/// The changes of one transaction being applied.
pub(super) struct Batch {
    pub(super) revision: Revision,
    pub(super) events: Vec<WatchEvent>,
}

impl MemoryKv {
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
    /// [`WatchResponse::Compacted`](crate::kv::WatchResponse::Compacted). Compacting at or
    /// below the current compaction point
    /// does nothing; a revision above the current one is a
    /// `StoreError::FutureRevision`.
    pub fn compact(&self, revision: Revision) -> Result<()> {
        let mut state = self.inner.lock();
        if revision > state.revision {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current: state.revision,
            }
            .in_backend(BACKEND));
        }
        state.compact_to(revision);
        Ok(())
    }
}

impl State {
    /// The key's current value, if it exists (including writes of the transaction
    /// being applied).
    pub(super) fn live(&self, key: &str) -> Option<&KeyValue> {
        self.keys.get(key)?.last()?.kv.as_ref()
    }

    /// The key's value at `revision`, from its versions.
    pub(super) fn visible_at(entries: &[Entry], revision: Revision) -> Option<&KeyValue> {
        let index = entries.partition_point(|entry| entry.revision <= revision);
        entries.get(index.checked_sub(1)?)?.kv.as_ref()
    }

    /// The keys a range or delete covers, with their versions.
    pub(super) fn matching<'a>(
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
    pub(super) fn ranged<'a>(
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
    pub(super) fn check_range(&self, range: &Range) -> Result<()> {
        range.check(self.revision, self.compacted, BACKEND)
    }

    /// Serves a checked range: from a long line's index when it can (`long_lines.rs`),
    /// else by scanning the versions, after which a long enough line gets its index.
    pub(super) fn read_range(&mut self, range: &Range) -> RangeResponse {
        if let Some(response) = self.read_long_line(range) {
            return response;
        }
        let response = self.read_versions(range);
        if reads_whole_directory_now(range) && self.long_lines.wants(&range.key, response.count) {
            let keys: Vec<(Revision, Arc<str>)> = self
                .matching(&range.key, true)
                .filter_map(|(key, entries)| {
                    Some((
                        entries.last()?.kv.as_ref()?.create_revision,
                        Arc::from(key.as_str()),
                    ))
                })
                .collect();
            self.long_lines.index(&range.key, keys);
        }
        response
    }

    /// Serves a checked range by scanning the versions of every key it covers: any
    /// revision, any sort.
    pub(super) fn read_versions(&self, range: &Range) -> RangeResponse {
        let at = range
            .revision
            .filter(|revision| *revision > 0)
            .unwrap_or(Revision::MAX);
        let visible: Vec<&KeyValue> = self
            .ranged(range)
            .filter_map(|(_, entries)| Self::visible_at(entries, at))
            .collect();
        // Sorted and cut to the limit by reference; only what is returned is copied
        // (a waiter's read of the two entries before its own, in a line of thousands,
        // copies two).
        let (kvs, count) = range.select(visible);
        RangeResponse {
            kvs: kvs.into_iter().cloned().collect(),
            count,
            revision: self.revision,
        }
    }

    /// Serves a checked range of the current revision from the index of the long line
    /// it reads (a prefix read of an indexed directory), or `None`: other ranges, reads
    /// of a past revision and sorts by key (descending) or mod revision scan the
    /// versions. Returns what the scan of [`State::read_versions`] would, to the key.
    pub(super) fn read_long_line(&self, range: &Range) -> Option<RangeResponse> {
        if !reads_whole_directory_now(range) {
            return None;
        }
        let line = self.long_lines.line(&range.key)?;
        let max_create = range.max_create_revision.filter(|revision| *revision > 0);
        let keep = |kv: &&KeyValue| range.within_bounds(kv);
        let limit = range.limit.filter(|limit| *limit > 0).unwrap_or(usize::MAX);
        let live = |name: &str| self.live(name);
        let kvs: Vec<&KeyValue> = match range.sort {
            None | Some((SortTarget::Key, SortOrder::Ascend)) => self
                .matching(&range.key, true)
                .filter_map(|(_, entries)| entries.last()?.kv.as_ref())
                .filter(keep)
                .take(limit)
                .collect(),
            Some((SortTarget::CreateRevision, SortOrder::Ascend)) => created_by(line, max_create)
                .filter_map(|(_, name)| live(name))
                .filter(keep)
                .take(limit)
                .collect(),
            Some((SortTarget::CreateRevision, SortOrder::Descend)) => {
                newest(created_by(line, max_create), live, keep, limit)
            }
            Some(_) => return None,
        };
        Some(RangeResponse {
            kvs: kvs.into_iter().cloned().collect(),
            count: line.len(),
            revision: self.revision,
        })
    }

    /// Whether a compare holds against the current state.
    pub(super) fn compare(&self, compare: &Compare) -> bool {
        let kv = self.live(&compare.key);
        compare.holds(
            kv.map_or(0, |kv| kv.create_revision),
            kv.map_or(0, |kv| kv.mod_revision),
            kv.map_or(0, |kv| kv.version),
        )
    }

    /// Validates one operation of the branch about to run, against the state before
    /// the transaction (as etcd does).
    pub(super) fn check_op(&self, op: &TxnOp) -> Result<()> {
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
                        return Err(StoreError::KeyNotFound(key.clone()).in_backend(BACKEND));
                    }
                } else if *lease != 0 && !self.leases.contains_key(lease) {
                    return Err(StoreError::LeaseNotFound(*lease).in_backend(BACKEND));
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
    pub(super) fn txn(&mut self, txn: Txn) -> Result<TxnResponse> {
        txn.check_branches()?;
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

    pub(super) fn begin(&self) -> Batch {
        Batch {
            revision: self.revision.saturating_add(1),
            events: Vec::new(),
        }
    }

    /// Writes a key in `batch`; `lease: None` keeps the key's current lease.
    pub(super) fn put(
        &mut self,
        batch: &mut Batch,
        key: String,
        value: Bytes,
        lease: Option<LeaseId>,
    ) {
        let previous = self.live(&key);
        let old_lease = previous.map_or(0, |kv| kv.lease);
        let create_revision = previous.map_or(batch.revision, |kv| kv.create_revision);
        let version = previous.map_or(1, |kv| kv.version.saturating_add(1));
        if previous.is_none() {
            self.long_lines.created(&key, create_revision);
        }
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
    pub(super) fn delete_key(&mut self, batch: &mut Batch, key: &str) -> bool {
        let Some(previous) = self.live(key) else {
            return false;
        };
        let lease = previous.lease;
        let create_revision = previous.create_revision;
        if let Some(entry) = self.leases.get_mut(&lease) {
            entry.keys.remove(key);
        }
        self.long_lines.deleted(key, create_revision);
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
    pub(super) fn delete_range(&mut self, batch: &mut Batch, key: &str, prefix: bool) -> i64 {
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
    pub(super) fn finish(&mut self, batch: Batch) -> Revision {
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
    pub(super) fn compact_to(&mut self, revision: Revision) {
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
}

/// Whether a range reads a whole directory (a prefix, no explicit end) at the current
/// revision: the reads a long line's index can serve, and the scans that can start one.
fn reads_whole_directory_now(range: &Range) -> bool {
    range.revision.is_none_or(|revision| revision <= 0) && range.prefix && range.range_end.is_none()
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::super::test_support::*;
    use super::*;
    use crate::kv::{CompareOp, Kv};

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
}
