//! The counting semaphore over a [`Kv`] store (no Go counterpart; built as the mutex
//! is).
//!
//! Layout: with `S = <ns>/semaphore/<escaped name>` (see [`Kind::prefix`]), each
//! contender puts `S/<lease id in lowercase hex>`, attached to its session's lease,
//! holding the permit count it was created with. Contenders are ranked by create
//! revision; the first `permits` hold a permit, the others wait in that order. The
//! fencing token is the own key's create revision.
//!
//! Herd-free waiting: the first waiter (rank `permits`) watches the prefix for
//! deletions (a holder leaving); a later waiter watches only its predecessor's key. A
//! waiter that becomes a holder rewrites its key (same value, same lease), which wakes
//! its successor, now the first waiter; a waiter that gives up deletes its key, which
//! wakes its successor too. So a release wakes one waiter, not all of them.
//!
//! The count lives in the entries themselves: a contender whose count differs from
//! any entry's withdraws and gets [`Error::InvalidArgument`]. Nothing stays behind
//! once the last holder leaves.

use distsync_core::raw::waited;
use distsync_core::raw::{permit, SessionStoreSide as _};

use async_trait::async_trait;
use bytes::Bytes;

use crate::kv::{EventKind, Range, Revision, SortOrder, SortTarget, TxnOp};
use distsync_core::error::{Error, Result};
use distsync_core::name::Name;
use distsync_core::semaphore::{Permit, Semaphore};

use super::hold::SessionKv;
use super::key::{if_created_at, lease_key, range_at, KeySpace, Kind};
use super::wait::{next_event, read};

/// A [`Semaphore`] over a [`Kv`](crate::kv::Kv) store.
pub(crate) struct KvSemaphore {
    keys: SessionKv,
    name: Name,
    permits: usize,
    space: KeySpace,
    /// `S/`: every entry's key starts with it.
    prefix: String,
    key: String,
}

impl KvSemaphore {
    /// The semaphore `name` of `permits` under `space`, held through `keys`' session.
    pub(crate) fn new(keys: SessionKv, space: &KeySpace, name: Name, permits: usize) -> Self {
        let prefix = format!("{}/", space.root(Kind::Semaphore, &name));
        Self {
            key: lease_key(&prefix, keys.lease),
            keys,
            name,
            permits,
            space: space.clone(),
            prefix,
        }
    }

    fn entries(&self) -> Range {
        let mut range = Range::prefix(&self.prefix);
        range.sort = Some((SortTarget::CreateRevision, SortOrder::Ascend));
        range
    }

    fn count_bytes(&self) -> Bytes {
        Bytes::from(self.permits.to_string())
    }

    /// The first entry whose count is not ours, as an error.
    fn disagreement(&self, entries: &[crate::kv::KeyValue]) -> Option<Error> {
        let ours = self.count_bytes();
        entries.iter().find(|e| e.value != ours).map(|e| {
            Error::InvalidArgument(format!(
                "semaphore {:?} is in use with {} permits, not {}",
                self.name.as_str(),
                String::from_utf8_lossy(&e.value),
                self.permits
            ))
        })
    }

    async fn acquire_or_try(&self, wait: bool) -> Result<Option<Permit>> {
        let Some(mut cleanup) = self.keys.contend(&self.key, wait).await? else {
            return Ok(None);
        };
        let (kv, lost) = (&*self.keys.kv, self.keys.session.lost_token());
        let in_line = TxnOp::Range(self.entries());
        let own = self.keys.put_own(
            &self.key,
            self.count_bytes(),
            "semaphore",
            vec![in_line.clone()],
            vec![in_line],
        );
        let own = own.await?;
        let mut entries = range_at(kv, &own.response, 1)?;
        let my_revision = own.create_revision;
        cleanup.created_at(my_revision);
        if let Some(error) = self.disagreement(&entries.kvs) {
            cleanup.remove_now().await?;
            return Err(error);
        }
        let mut waited = false;
        loop {
            let rank = entries
                .kvs
                .iter()
                .position(|e| e.create_revision == my_revision);
            let Some(rank) = rank else {
                // Our entry is gone: the session ended.
                cleanup.disarm();
                return Err(Error::SessionLost);
            };
            if rank < self.permits {
                break;
            }
            if !wait {
                cleanup.remove_now().await?;
                return Ok(None);
            }
            waited = true;
            let from = entries.revision + 1;
            if rank == self.permits {
                // First in line: any deletion may free a permit.
                next_event(kv, &self.prefix, true, from, EventKind::Delete, Some(lost)).await?;
            } else {
                // Later: only the predecessor's change (granted, or gone) matters.
                let predecessor = &entries.kvs[rank - 1].key;
                tokio::select! {
                    changed = next_event(kv, predecessor, false, from, EventKind::Put, Some(lost)) => { changed?; }
                    changed = next_event(kv, predecessor, false, from, EventKind::Delete, Some(lost)) => { changed?; }
                }
            }
            entries = read(kv, self.entries(), Some(lost)).await?;
        }
        if waited {
            self.wake_successor(my_revision).await?;
        }
        let held = self.keys.held(&self.key, my_revision);
        let guard = held.lazy_lock_guard(cleanup.disarm(), &self.space);
        Ok(Some(permit(guard)))
    }

    /// Rewrites the own entry (same value and lease, only if it is still ours), so the
    /// waiter behind it, watching it, learns that it is now first in line.
    async fn wake_successor(&self, my_revision: Revision) -> Result<()> {
        let rewrite = TxnOp::put(&self.key, self.count_bytes(), self.keys.lease);
        if_created_at(&*self.keys.kv, &self.key, my_revision, rewrite).await?;
        Ok(())
    }
}

#[async_trait]
impl Semaphore for KvSemaphore {
    fn name(&self) -> &Name {
        &self.name
    }

    fn permits(&self) -> usize {
        self.permits
    }

    async fn acquire(&self) -> Result<Permit> {
        let permit = self.acquire_or_try(true).await?;
        waited(self.keys.kv.backend(), "acquire", permit)
    }

    async fn try_acquire(&self) -> Result<Option<Permit>> {
        self.acquire_or_try(false).await
    }
}

#[cfg(test)]
mod tests {
    use crate::kv::{Kv, Txn, TxnOp};
    use crate::recipes::testing::{
        backend, flaky_backend, name, session_of, sessions, settle, until_watches, within,
    };
    use distsync_core::Primitives;
    use std::num::NonZeroUsize;

    use distsync_core::Error;

    const TWO: NonZeroUsize = NonZeroUsize::new(2).unwrap();

    /// A permit granted at once opens no watch on the store until its `lost()` is
    /// asked (as a lock's guard); a permit whose entry was deleted before anyone
    /// asked is lost once asked; one asked about is watched and lost when deleted.
    #[tokio::test]
    async fn a_permit_watches_its_entry_only_once_asked() {
        let backend = flaky_backend();
        let (a, b) = (session_of(&backend).await, session_of(&backend).await);
        let first = backend.semaphore(&a, name("s"), TWO).unwrap();
        let second = backend.semaphore(&b, name("s"), TWO).unwrap();
        let pa = within(first.acquire()).await.unwrap();
        let pb = within(second.acquire()).await.unwrap();
        // The guard's own checks do not start it either.
        let _ = format!("{pa:?}{pb:?}");
        settle().await;
        assert_eq!(backend.kv().watches(), 0, "granted at once: no watch");

        let delete = |key: &str| Txn::when(vec![]).and_then(vec![TxnOp::delete(key)]);
        backend.kv().txn(delete(pa.key())).await.unwrap();
        within(pa.lost()).await;
        assert!(
            pa.is_lost() && !a.is_lost(),
            "only the permit was taken away"
        );

        assert!(!pb.is_lost());
        until_watches(&backend, 1).await;
        backend.kv().txn(delete(pb.key())).await.unwrap();
        within(pb.lost()).await;
        assert!(matches!(pb.release().await, Err(Error::NotHeld)));
    }

    #[tokio::test]
    async fn at_most_n_holders_fifo_and_the_count_is_part_of_the_state() {
        let backend = backend();
        let [a, b, c, d] = sessions::<4>(&backend).await;
        let sem = |s| backend.semaphore(s, name("pool"), TWO).unwrap();
        let (sa, sb, sc, sd) = (sem(&a), sem(&b), sem(&c), sem(&d));
        let pa = within(sa.acquire()).await.unwrap();
        let pb = within(sb.acquire()).await.unwrap();
        assert!(pb.token() > pa.token());
        assert!(
            sc.try_acquire().await.unwrap().is_none(),
            "two permits taken"
        );
        let wrong = backend
            .semaphore(&c, name("pool"), TWO.saturating_add(1))
            .unwrap();
        assert!(
            matches!(wrong.acquire().await, Err(Error::InvalidArgument(m)) if m.contains("2 permits"))
        );
        let waiting_c = tokio::spawn(async move { sc.acquire().await.map(|g| (g, sc)) });
        crate::recipes::testing::settle().await;
        let waiting_d = tokio::spawn(async move { sd.acquire().await.map(|g| (g, sd)) });
        crate::recipes::testing::settle().await;
        pa.release().await.unwrap();
        let (pc, _sc) = within(waiting_c).await.unwrap().unwrap();
        assert!(pc.token() > pb.token());
        assert!(!waiting_d.is_finished(), "d waits behind c");
        pb.release().await.unwrap();
        let (pd, _sd) = within(waiting_d).await.unwrap().unwrap();
        assert!(pd.token() > pc.token());
        drop((pc, pd));
    }
}
