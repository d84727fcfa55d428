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
    /// Afterwards reads at revisions below `revision` fail with `StoreError::Compacted`,
    /// and watches starting below it get
    /// [`WatchResponse::Compacted`](crate::kv::WatchResponse::Compacted). Compacting at
    /// or below the current compaction point does nothing; a revision above the current
    /// one is a `StoreError::FutureRevision`.
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
        let revisions = |kv: &KeyValue| (kv.create_revision, kv.mod_revision, kv.version);
        if compare.prefix {
            compare.holds_for_each(
                self.matching(&compare.key, true)
                    .filter_map(|(_, entries)| entries.last()?.kv.as_ref())
                    .map(revisions),
            )
        } else {
            compare.holds_for_each(self.live(&compare.key).map(revisions))
        }
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
    use crate::kv::Kv;

    /// The Kv contract every store runs, on a fresh memory store each.
    #[tokio::test]
    async fn the_kv_contract_holds() {
        use crate::contract_tests as contract;
        contract::revisions_and_versions_follow_etcd(&MemoryKv::new()).await;
        contract::one_txn_is_one_revision_and_no_change_is_no_revision(&MemoryKv::new()).await;
        contract::compares_choose_the_branch_and_missing_keys_are_zero(&MemoryKv::new()).await;
        contract::a_branch_sees_its_own_writes_under_one_revision(&MemoryKv::new()).await;
        contract::invalid_transactions_fail_typed_and_apply_nothing(&MemoryKv::new(), "memory")
            .await;
        contract::ranges_sort_limit_count_and_bound_as_etcd(&MemoryKv::new()).await;
        contract::compares_over_a_prefix_hold_for_every_key_under_it(&MemoryKv::new(), "").await;
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
