//! The read-write lock, as etcd's Go `recipes.RWMutex`.
//!
//! Layout: with `R = <ns>/rwlock/<escaped name>` (see [`Kind::prefix`]; Go's recipe uses
//! `<name>` itself, which would share keys with a lock or a queue of that name), a reader
//! puts the unique key `R/read/<unix nanos>`, a writer `R/write/<unix nanos>` (empty
//! values, attached to the session's lease). A reader waits until no write key older than
//! its own is left; a writer waits until no key of either kind older than its own is left.
//! So a waiting writer blocks the readers that arrive after it, and holds are granted in
//! arrival order. Each wait watches only the newest older blocking key. The write fencing
//! token is the write key's create revision.

use distsync_core::raw::waited;
use distsync_core::raw::SessionStoreSide as _;

use async_trait::async_trait;

use crate::kv::Range;
use distsync_core::error::{Error, Result};
use distsync_core::guard::{LockGuard, ReadGuard};
use distsync_core::name::Name;
use distsync_core::rwlock::RwLock;

use super::hold::{HeldKey, SessionKv};
use super::key::{KeySpace, Kind};
use super::wait::{read, wait_delete};

/// A [`RwLock`] over a [`Kv`](crate::kv::Kv) store.
pub(crate) struct KvRwMutex {
    keys: SessionKv,
    name: Name,
    prefix: String,
    space: KeySpace,
}

impl KvRwMutex {
    /// The read-write lock `name` under `space`, held through `keys`' session.
    pub(crate) fn new(keys: SessionKv, space: &KeySpace, name: Name) -> Self {
        Self {
            keys,
            prefix: format!("{}/", space.root(Kind::RwLock, &name)),
            space: space.clone(),
            name,
        }
    }

    /// Go's `RLock`/`Lock` (`wait`), or their non-waiting form: the hold of the own
    /// key.
    async fn acquire(&self, write: bool, wait: bool) -> Result<Option<HeldKey>> {
        if self.keys.session.is_lost() {
            return Err(Error::SessionLost);
        }
        let lost = self.keys.session.lost_token();
        let kv = &*self.keys.kv;
        let kind = if write { "write" } else { "read" };
        let unique = self.keys.put_unique(format!("{}{kind}", self.prefix));
        let (cleanup, revision) = unique.await?;
        // Readers are blocked by older writers; writers by every older key.
        let blockers = if write {
            self.prefix.clone()
        } else {
            format!("{}write", self.prefix)
        };
        loop {
            let range = Range::prefix(&blockers)
                .last_rev()
                .max_mod_revision(revision - 1);
            // Errors (and a lost session) leave `cleanup` armed: the key is removed.
            let response = read(kv, range, Some(lost)).await?;
            let Some(blocker) = response.kvs.into_iter().next() else {
                break;
            };
            if !wait {
                cleanup.remove_now().await?;
                return Ok(None);
            }
            wait_delete(kv, &blocker.key, blocker.create_revision, Some(lost)).await?;
        }
        let key = cleanup.key().to_owned();
        if wait {
            let mine = read(kv, Range::key(&key), Some(lost)).await?;
            if mine
                .kvs
                .first()
                .is_none_or(|found| found.create_revision != revision)
            {
                cleanup.disarm();
                return Err(Error::SessionLost);
            }
        }
        cleanup.disarm();
        Ok(Some(self.keys.held(&key, revision)))
    }

    fn write_guard(&self, held: HeldKey) -> LockGuard {
        held.lazy_lock_guard(None, &self.space)
    }
}

#[async_trait]
impl RwLock for KvRwMutex {
    fn name(&self) -> &Name {
        &self.name
    }

    /// Go's `RLock`: puts a read key, then waits for every older write key to go.
    ///
    /// Cancel-safety: cancel-safe; a dropped future deletes its read key in the
    /// background.
    async fn read(&self) -> Result<ReadGuard> {
        let held = self.acquire(false, true).await?;
        waited(self.keys.kv.backend(), "read", held).map(HeldKey::read_guard)
    }

    /// Puts a read key; if an older write key exists, deletes it again: `None`.
    async fn try_read(&self) -> Result<Option<ReadGuard>> {
        Ok(self.acquire(false, false).await?.map(HeldKey::read_guard))
    }

    /// Go's `Lock`: puts a write key, then waits for every older key to go.
    ///
    /// Cancel-safety: cancel-safe; a dropped future deletes its write key in the
    /// background.
    async fn write(&self) -> Result<LockGuard> {
        let held = self.acquire(true, true).await?;
        waited(self.keys.kv.backend(), "write", held).map(|held| self.write_guard(held))
    }

    /// Puts a write key; if any older key exists, deletes it again: `None`.
    async fn try_write(&self) -> Result<Option<LockGuard>> {
        let held = self.acquire(true, false).await?;
        Ok(held.map(|held| self.write_guard(held)))
    }
}

#[cfg(test)]
mod tests {
    use crate::kv::{Kv, Range};
    use crate::recipes::testing::{backend, name, sessions, settle, within};
    use distsync_core::Primitives;

    #[tokio::test]
    async fn readers_share_and_a_waiting_writer_blocks_later_readers() {
        let backend = backend();
        let [s1, s2, s3, s4] = sessions(&backend).await;
        let r1 = backend
            .rwlock(&s1, name("rw"))
            .unwrap()
            .read()
            .await
            .unwrap();
        let r2 = backend
            .rwlock(&s2, name("rw"))
            .unwrap()
            .read()
            .await
            .unwrap();
        assert!(r1.key().starts_with("/rwlock/rw/read/"));
        let w = backend.rwlock(&s3, name("rw")).unwrap();
        let writer = tokio::spawn(async move { w.write().await });
        settle().await;
        assert!(!writer.is_finished());
        let r = backend.rwlock(&s4, name("rw")).unwrap();
        let late_reader = tokio::spawn(async move { r.read().await });
        settle().await;
        assert!(
            !late_reader.is_finished(),
            "a reader behind a waiting writer waits"
        );

        r1.unlock().await.unwrap();
        settle().await;
        assert!(!writer.is_finished());
        r2.unlock().await.unwrap();
        let writer = within(writer).await.unwrap().unwrap();
        assert!(writer.key().starts_with("/rwlock/rw/write/"));
        settle().await;
        assert!(!late_reader.is_finished());
        writer.unlock().await.unwrap();
        drop(within(late_reader).await.unwrap().unwrap());
    }

    #[tokio::test]
    async fn try_variants_withdraw_when_blocked() {
        let backend = backend();
        let [s1, s2] = sessions(&backend).await;
        let reader = backend
            .rwlock(&s1, name("rw"))
            .unwrap()
            .read()
            .await
            .unwrap();
        let other = backend.rwlock(&s2, name("rw")).unwrap();
        assert!(other.try_write().await.unwrap().is_none());
        let shared = other.try_read().await.unwrap().unwrap();
        assert_eq!(
            backend
                .kv()
                .range(Range::prefix("/rwlock/rw/"))
                .await
                .unwrap()
                .count,
            2
        );
        shared.unlock().await.unwrap();
        reader.unlock().await.unwrap();

        let writer = other.try_write().await.unwrap().unwrap();
        let first = backend.rwlock(&s1, name("rw")).unwrap();
        assert!(first.try_read().await.unwrap().is_none());
        assert!(first.try_write().await.unwrap().is_none());
        assert_eq!(
            backend
                .kv()
                .range(Range::prefix("/rwlock/rw/"))
                .await
                .unwrap()
                .count,
            1
        );
        let token = writer.token();
        writer.unlock().await.unwrap();
        assert!(first.try_write().await.unwrap().unwrap().token() > token);
    }

    #[tokio::test]
    async fn a_cancelled_writer_stops_blocking_readers() {
        let backend = backend();
        let [s1, s2, s3] = sessions(&backend).await;
        let _reader = backend
            .rwlock(&s1, name("rw"))
            .unwrap()
            .read()
            .await
            .unwrap();
        let w = backend.rwlock(&s2, name("rw")).unwrap();
        let writer = tokio::spawn(async move { w.write().await });
        settle().await;
        writer.abort();
        settle().await;
        let r = backend.rwlock(&s3, name("rw")).unwrap();
        assert!(r.try_read().await.unwrap().is_some());
    }
}
