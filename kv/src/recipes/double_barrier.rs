//! The double barrier, as etcd's Go `recipes.DoubleBarrier`.
//!
//! Layout: with `D = <ns>/double-barrier/<escaped name>` (see [`Kind::prefix`]; Go's recipe
//! uses `<name>` itself), each participant puts the unique key `D/waiters/<unix nanos>`
//! (empty value, attached to its session's lease). The participant whose key is the
//! `count`-th by create revision puts `D/ready` (no lease), which lets every waiter through
//! `enter`; a participant created after the `count`-th deletes its key and fails. In
//! `leave`, the participant with the oldest key waits for the others' keys to go and then
//! deletes `ready` and its own key; the others delete their keys and wait for the oldest
//! one's.

use distsync_core::raw::SessionStoreSide as _;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;

use crate::kv::{EventKind, KeyValue, Range, Revision, SortOrder, SortTarget, Txn, TxnOp};
use distsync_core::barrier::DoubleBarrier;
use distsync_core::error::{Error, Result};
use distsync_core::name::Name;
use distsync_core::raw::locked;

use super::hold::SessionKv;
use super::key::{KeySpace, Kind};
use super::wait::{next_event, read, wait_delete};

/// This participant's key.
#[derive(Clone, Debug)]
struct Entry {
    key: String,
    revision: Revision,
}

/// A [`DoubleBarrier`] over a [`Kv`](crate::kv::Kv) store.
pub(crate) struct KvDoubleBarrier {
    keys: SessionKv,
    name: Name,
    count: usize,
    waiters: String,
    ready: String,
    entry: Mutex<Option<Entry>>,
}

impl KvDoubleBarrier {
    /// The double barrier `name` under `namespace` for `count` (at least 1)
    /// participants, entered through `keys`' session.
    pub(crate) fn new(keys: SessionKv, space: &KeySpace, name: Name, count: usize) -> Self {
        let key = space.root(Kind::DoubleBarrier, &name);
        Self {
            keys,
            count,
            waiters: format!("{key}/waiters"),
            ready: format!("{key}/ready"),
            name,
            entry: Mutex::new(None),
        }
    }

    fn entry(&self) -> MutexGuard<'_, Option<Entry>> {
        locked(&self.entry)
    }

    fn too_many(&self) -> Error {
        Error::TooManyParticipants {
            name: self.name.to_string(),
            count: self.count,
        }
    }

    /// Go's `enteredClients`: the waiter keys, oldest first.
    async fn entered(&self) -> Result<Vec<KeyValue>> {
        let mut range = Range::prefix(&self.waiters);
        range.sort = Some((SortTarget::CreateRevision, SortOrder::Ascend));
        let response = read(&*self.keys.kv, range, Some(self.keys.session.lost_token())).await?;
        Ok(response.kvs)
    }

    /// Creates this participant's waiter key (removed again if the future is dropped
    /// before the key is known to exist).
    async fn create_entry(&self) -> Result<Entry> {
        let (cleanup, revision) = self.keys.put_unique(self.waiters.clone()).await?;
        let key = cleanup.key().to_owned();
        cleanup.disarm();
        Ok(Entry { key, revision })
    }

    /// Deletes `key`.
    async fn delete(&self, key: &str) -> Result<()> {
        let txn = Txn::default().and_then(vec![TxnOp::delete(key)]);
        self.keys.kv.txn(txn).await?;
        Ok(())
    }

    /// Waits for a put of the ready key at or after `from`.
    async fn wait_ready(&self, mut from: Revision) -> Result<()> {
        let lost = Some(self.keys.session.lost_token());
        loop {
            let kv = &*self.keys.kv;
            if next_event(kv, &self.ready, false, from, EventKind::Put, lost)
                .await?
                .is_some()
            {
                return Ok(());
            }
            let current = read(kv, Range::key(&self.ready), lost).await?;
            if current
                .kvs
                .first()
                .is_some_and(|ready| ready.mod_revision >= from)
            {
                return Ok(());
            }
            from = current.revision + 1;
        }
    }
}

#[async_trait]
impl DoubleBarrier for KvDoubleBarrier {
    fn name(&self) -> &Name {
        &self.name
    }

    fn count(&self) -> usize {
        self.count
    }

    /// Go's `Enter`. Entering again after a dropped `enter` resumes with the same
    /// waiter key.
    ///
    /// Cancel-safety: dropping the future leaves this participant's key until the
    /// session ends or `leave` is called.
    async fn enter(&self) -> Result<()> {
        if self.keys.session.is_lost() {
            return Err(Error::SessionLost);
        }
        let existing = self.entry().clone();
        let entry = match existing {
            Some(entry) => entry,
            None => {
                if self.entered().await?.len() >= self.count {
                    return Err(self.too_many());
                }
                let entry = self.create_entry().await?;
                *self.entry() = Some(entry.clone());
                entry
            }
        };
        let entered = self.entered().await?;
        if entered.len() >= self.count {
            let last = &entered[self.count - 1];
            if entry.revision > last.create_revision {
                // Over the count: withdraw at once rather than block the others until
                // the lease ends.
                self.entry().take();
                self.delete(&entry.key).await?;
                return Err(self.too_many());
            }
            if entry.revision == last.create_revision {
                // The count-th participant lets everyone through.
                let ready = Txn::default().and_then(vec![TxnOp::put(&self.ready, Bytes::new(), 0)]);
                self.keys.kv.txn(ready).await?;
                return Ok(());
            }
        }
        self.wait_ready(entry.revision).await
    }

    /// Go's `Leave`.
    ///
    /// Cancel-safety: dropping the future may leave this participant's key deleted or
    /// not; either way it is bounded by the session.
    async fn leave(&self) -> Result<()> {
        let Some(entry) = self.entry().clone() else {
            return Err(Error::InvalidArgument(format!(
                "double barrier {:?}: leave without enter",
                self.name.as_str()
            )));
        };
        let lost = Some(self.keys.session.lost_token());
        let kv = &*self.keys.kv;
        let mut deleted = false;
        loop {
            let response = read(kv, Range::prefix(&self.waiters), lost).await?;
            let (Some(lowest), Some(highest)) = (
                response.kvs.iter().min_by_key(|waiter| waiter.mod_revision),
                response.kvs.iter().max_by_key(|waiter| waiter.mod_revision),
            ) else {
                self.entry().take();
                return Ok(());
            };
            let is_lowest = lowest.key == entry.key;
            if response.kvs.len() == 1 && is_lowest {
                // The last one out: reset the barrier for the next round.
                self.delete(&self.ready).await?;
                self.delete(&entry.key).await?;
                self.entry().take();
                return Ok(());
            }
            let awaited = if is_lowest {
                // The oldest waits for the newest to leave, then looks again.
                highest
            } else {
                if !deleted {
                    self.delete(&entry.key).await?;
                    deleted = true;
                }
                lowest
            };
            wait_delete(kv, &awaited.key, awaited.create_revision, lost).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::kv::{Kv, Range};
    use crate::recipes::testing::{backend, name, session, settle, within};
    use distsync_core::Primitives;

    use distsync_core::Error;

    #[tokio::test]
    async fn enter_waits_for_count_and_leave_for_everyone() {
        let backend = backend();
        let mut barriers = Vec::new();
        let count = std::num::NonZeroUsize::new(3).unwrap();
        for _ in 0..4 {
            let s = session(&backend).await;
            barriers.push(std::sync::Arc::from(
                backend.double_barrier(&s, name("db"), count).unwrap(),
            ));
        }
        let spawn_enter = |b: &std::sync::Arc<dyn distsync_core::DoubleBarrier>| {
            let b = std::sync::Arc::clone(b);
            tokio::spawn(async move { b.enter().await })
        };
        let first = spawn_enter(&barriers[0]);
        let second = spawn_enter(&barriers[1]);
        settle().await;
        assert!(!first.is_finished() && !second.is_finished());
        within(barriers[2].enter()).await.unwrap();
        within(first).await.unwrap().unwrap();
        within(second).await.unwrap().unwrap();

        match barriers[3].enter().await {
            Err(Error::TooManyParticipants { count: 3, .. }) => {}
            other => panic!("a fourth participant got {other:?}"),
        }
        assert_eq!(
            backend
                .kv()
                .range(Range::prefix("/double-barrier/db/waiters/"))
                .await
                .unwrap()
                .count,
            3
        );

        let spawn_leave = |b: &std::sync::Arc<dyn distsync_core::DoubleBarrier>| {
            let b = std::sync::Arc::clone(b);
            tokio::spawn(async move { b.leave().await })
        };
        let leaving = [spawn_leave(&barriers[0]), spawn_leave(&barriers[2])];
        settle().await;
        assert!(leaving.iter().all(|l| !l.is_finished()));
        within(barriers[1].leave()).await.unwrap();
        for leave in leaving {
            within(leave).await.unwrap().unwrap();
        }
        assert_eq!(
            backend
                .kv()
                .range(Range::prefix("/double-barrier/db/"))
                .await
                .unwrap()
                .count,
            0
        );
    }
}
