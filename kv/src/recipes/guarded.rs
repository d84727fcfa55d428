//! Guarded writes over a [`Kv`] store (see the [recipes' module docs](super), "Writes
//! guarded by a hold"): [`LockGuard::put_if_held`] and [`hold_of`] (which the etcd
//! backend turns into a compare of etcd's client, `distsync::store::etcd::held_compare`)
//! are the one condition, so both live here.

use async_trait::async_trait;
use bytes::Bytes;

use std::any::Any;
use std::sync::Arc;

use crate::kv::{Compare, CompareOp, Kv, Revision, Txn, TxnOp};
use distsync_core::error::{Error, Result};
use distsync_core::guard::{GuardedWrite, LockGuard};
use distsync_core::name::Name;

use super::key::{KeySpace, Kind};

/// A lock's hold as the store keeps it: the hold's key and the revision that created
/// it. The hold is the store's exactly while the key exists with that create revision:
/// released, expired with its session or broken, the key is deleted, and a key created
/// again at the same place has a later create revision.
///
/// Got from a guard with [`hold_of`]. The revision is in the numbering of the store's
/// [`Kv`] ([`LockHold::store`]), which is the store's own except on an etcd that forgot
/// its data (its client then adds an offset; see the etcd backend's docs): a
/// transaction sent through that [`Kv`] compares it as it is, and one sent to the store
/// by other means needs the store's number (the etcd backend's `held_compare` makes
/// that compare).
#[derive(Clone)]
pub struct LockHold {
    kv: Arc<dyn Kv>,
    key: String,
    create_revision: Revision,
}

impl std::fmt::Debug for LockHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockHold")
            .field("backend", &self.kv.backend())
            .field("key", &self.key)
            .field("create_revision", &self.create_revision)
            .finish()
    }
}

impl LockHold {
    /// The hold of `key`, created at `create_revision` in `kv`.
    pub(crate) fn new(kv: Arc<dyn Kv>, key: String, create_revision: Revision) -> Self {
        Self {
            kv,
            key,
            create_revision,
        }
    }

    /// The hold's full store key, the backend's namespace included (a lock's
    /// `<ns><name>/<lease id in hex>`, a write lock's `<ns>/rwlock/<n>/write/<unix nanos>`):
    /// the same bytes the store holds.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The revision that created the key: the grant's identity, and the guard's
    /// fencing token.
    pub fn create_revision(&self) -> Revision {
        self.create_revision
    }

    /// The store the hold is in: a transaction sent through it with
    /// [`LockHold::compare`] among its compares applies only while the hold lasts.
    pub fn store(&self) -> &Arc<dyn Kv> {
        &self.kv
    }

    /// The compare that holds exactly while the hold does: the key's create revision
    /// equals the grant's (Go's `Mutex.IsOwner()`).
    pub fn compare(&self) -> Compare {
        Compare::create_revision(&self.key, CompareOp::Equal, self.create_revision)
    }
}

/// The hold of `guard`, a lock or write-lock guard made by a [`KvBackend`](super::KvBackend)
/// (the memory and etcd backends), for a transaction of the caller's guarded by it
/// (see [`LockHold`]).
///
/// It reads what the guard was granted and asks the store nothing: a hold lost since
/// (even one the guard does not know about yet) is still returned, and a transaction
/// guarded by it does not apply. A semaphore [`Permit`](distsync_core::Permit) gives no
/// access to its guard, so its hold is not available here
/// ([`Permit::put_if_held`](distsync_core::Permit::put_if_held) guards an STM write).
///
/// # Errors
/// [`Error::InvalidArgument`] for a guard of another backend.
pub fn hold_of(guard: &LockGuard) -> Result<&LockHold> {
    guard
        .guarded_write_side()
        .and_then(|side| (side as &dyn Any).downcast_ref::<KvGuardedWrite>())
        .map(|guarded| &guarded.hold)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "hold_of takes a lock or write-lock guard of a key-value backend (memory, \
                 etcd); this guard of the {} backend has no key-value hold",
                guard.session().backend()
            ))
        })
}

/// Writes through a held key: the write commits only while the key still exists with
/// the create revision of the grant.
pub(crate) struct KvGuardedWrite {
    /// The hold the writes are guarded by.
    pub(crate) hold: LockHold,
    /// Where the STM key's store key is.
    pub(crate) space: KeySpace,
}

#[async_trait]
impl GuardedWrite for KvGuardedWrite {
    async fn put_if_held_bytes(&self, key: &Name, value: Bytes) -> Result<bool> {
        self.space.check(Kind::Stm, key)?;
        let txn = Txn::when(vec![self.hold.compare()]).and_then(vec![TxnOp::put(
            self.space.root(Kind::Stm, key),
            value,
            0,
        )]);
        Ok(self.hold.kv.txn(txn).await?.succeeded)
    }
}

#[cfg(test)]
mod tests {
    use distsync_core::Primitives;
    use futures::FutureExt as _;

    use super::*;
    use crate::memory::{capabilities, MemoryKv};
    use crate::recipes::testing::{name, within};
    use crate::recipes::KvBackend;
    use distsync_core::backend::Backend;
    use distsync_core::session::SessionOptions;
    use distsync_core::token::FencingToken;

    /// A memory backend with every key under `apps/`.
    fn backend() -> KvBackend<MemoryKv> {
        KvBackend::with_kv(MemoryKv::new(), "apps/", capabilities())
    }

    /// A put of `key` guarded by `hold`, through the hold's store: whether it applied.
    async fn guarded_put(hold: &LockHold, key: &str, value: &str) -> bool {
        let txn =
            Txn::when(vec![hold.compare()]).and_then(vec![TxnOp::put(key, value.to_owned(), 0)]);
        hold.store().txn(txn).await.unwrap().succeeded
    }

    #[tokio::test]
    async fn a_hold_guards_a_transaction_until_the_lock_is_someone_elses() {
        let backend = backend();
        let first = backend.session(SessionOptions::default()).await.unwrap();
        let second = backend.session(SessionOptions::default()).await.unwrap();
        let guard = within(backend.locker(&first, name("jobs/a")).unwrap().lock())
            .await
            .unwrap();
        let hold = hold_of(&guard).unwrap().clone();
        assert_eq!(hold.key(), guard.key());
        assert!(hold.key().starts_with("apps/jobs/a/"), "{hold:?}");
        assert_eq!(
            FencingToken(u64::try_from(hold.create_revision()).unwrap()),
            guard.token()
        );
        assert!(guarded_put(&hold, "apps/data", "first").await);

        guard.unlock().await.unwrap();
        let next = within(backend.locker(&second, name("jobs/a")).unwrap().lock())
            .await
            .unwrap();
        assert!(!guarded_put(&hold, "apps/data", "stale").await);
        assert!(guarded_put(hold_of(&next).unwrap(), "apps/data", "second").await);
        let data = backend.kv().range(crate::kv::Range::key("apps/data")).await;
        assert_eq!(data.unwrap().kvs[0].value, Bytes::from("second"));
        next.unlock().await.unwrap();
    }

    #[tokio::test]
    async fn a_write_lock_has_a_hold() {
        let backend = backend();
        let session = backend.session(SessionOptions::default()).await.unwrap();
        let rwlock = backend.rwlock(&session, name("tables/a")).unwrap();
        let guard = within(rwlock.write()).await.unwrap();
        let hold = hold_of(&guard).unwrap();
        assert_eq!(hold.key(), guard.key());
        assert!(guarded_put(hold, "apps/data", "written").await);
        guard.unlock().await.unwrap();
    }

    #[tokio::test]
    async fn a_guard_without_a_key_value_hold_is_an_invalid_argument() {
        let backend = backend();
        let session = backend.session(SessionOptions::default()).await.unwrap();
        let release: distsync_core::guard::ReleaseFn = Box::new(|| async { Ok(()) }.boxed());
        let guard =
            distsync_core::raw::lock_guard("elsewhere".into(), FencingToken(1), &session, release);
        let error = hold_of(&guard).unwrap_err();
        assert!(matches!(error, Error::InvalidArgument(_)), "{error:?}");
        guard.unlock().await.unwrap();
    }
}
