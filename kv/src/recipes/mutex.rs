//! The mutex, as etcd's Go `concurrency.Mutex`.
//!
//! Layout: each contender puts `<ns><name>/<lease id in lowercase hex>` (empty value,
//! attached to its session's lease) in one transaction that also counts the keys
//! under `<ns><name>/`; the contender whose key has the lowest create revision holds
//! the lock (a new key is the newest, so it holds when it is alone). A waiter watches
//! only the key created just before its own (no thundering herd), so waiters are
//! granted in arrival order. This is the layout of
//! `etcdctl lock <name>`, so Go programs and distsync exclude each other on one etcd.
//! The fencing token is the own key's create revision.

use distsync_core::raw::waited;
use distsync_core::raw::SessionStoreSide as _;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::kv::{Compare, CompareOp, Kv, LeaseId, Range, Revision, Txn, TxnOp};
use distsync_core::error::{Error, Result};
use distsync_core::guard::LockGuard;
use distsync_core::lock::Locker;
use distsync_core::name::Name;
use distsync_core::session::Session;

use super::heads::Heads;
use super::hold::{explain_lease_error, gate, HeldKey, WaiterKey};
use super::key::{lease_hex, range_at, KeySpace};
use super::unfair_mutex::wait_line;
use super::wait::wait_turn;

/// A [`Locker`] over a [`Kv`] store.
pub(crate) struct KvMutex {
    kv: Arc<dyn Kv>,
    session: Session,
    lease: LeaseId,
    name: Name,
    prefix: String,
    key: String,
    /// The unfair wait line of the same name, whose waiters contend for this lock too.
    unfair_waiters: String,
    space: KeySpace,
    heads: Arc<Heads>,
}

impl KvMutex {
    /// The mutex `name` under `namespace`, held through `session` (lease `lease`);
    /// `heads` is the backend's record of the lock keys that headed their line.
    pub(crate) fn new(
        kv: Arc<dyn Kv>,
        space: &KeySpace,
        name: Name,
        session: Session,
        lease: LeaseId,
        heads: Arc<Heads>,
    ) -> Self {
        let prefix = format!("{}{name}/", space.namespace());
        let key = format!("{prefix}{}", lease_hex(lease));
        let unfair_waiters = wait_line(space, &name);
        Self {
            kv,
            session,
            lease,
            name,
            prefix,
            key,
            unfair_waiters,
            space: space.clone(),
            heads,
        }
    }

    /// Go's `Lock` (`wait`) or `TryLock`.
    async fn acquire(&self, wait: bool) -> Result<Option<LockGuard>> {
        let Some(gate) = gate(&self.session, &self.key, wait).await? else {
            return Ok(None);
        };
        let lost = self.session.lost_token();
        let kv = &*self.kv;
        let mut cleanup = WaiterKey::new(
            Arc::clone(&self.kv),
            &self.session,
            self.key.clone(),
            self.lease,
            Some(gate),
        );
        let (my_revision, owns) =
            enter(kv, &self.session, self.lease, &self.key, &self.prefix).await?;
        cleanup.created_at(my_revision);
        if !owns {
            if !wait {
                cleanup.remove_now().await?;
                return Ok(None);
            }
            // Errors (and a lost session) leave `cleanup` armed: the key is removed.
            let heads = Some(&self.heads);
            if !wait_turn(kv, &self.prefix, &self.key, my_revision, heads, Some(lost)).await? {
                cleanup.disarm();
                return Err(Error::SessionLost);
            }
        }
        let gate = cleanup.disarm();
        let held = HeldKey::new(&self.kv, &self.key, my_revision, &self.session, self.lease)
            .marked(self.heads.granted(&self.prefix, &self.key, my_revision));
        Ok(Some(held.lazy_lock_guard(gate, &self.space)))
    }
}

/// Puts `key` (on `lease`) under `prefix` unless it is there, in the one transaction
/// that also tells whether it heads the line: the key's create revision, and whether
/// it is the first-created key under `prefix` (so holds the lock). A new key is the
/// line's newest, so it heads the line exactly when it is the only key: an unsorted
/// read of one key counts them, where Go's read of the first-created key makes etcd
/// read and sort the whole line inside the write. A key that is already there (left
/// by an earlier hold of this session, whose release runs in the background) is
/// reused, as Go does.
pub(super) async fn enter(
    kv: &dyn Kv,
    session: &Session,
    lease: LeaseId,
    key: &str,
    prefix: &str,
) -> Result<(Revision, bool)> {
    let others = Range {
        limit: Some(1),
        ..Range::prefix(prefix)
    };
    let txn = Txn::when(vec![Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then(vec![
            TxnOp::put(key, Bytes::new(), lease),
            TxnOp::Range(others),
        ])
        .or_else(vec![
            TxnOp::Range(Range::key(key)),
            TxnOp::Range(Range::prefix(prefix).first_create()),
        ]);
    let response = match kv.txn(txn).await {
        Ok(response) => response,
        Err(error) => return Err(explain_lease_error(kv, session, lease, error).await),
    };
    let mine = if response.succeeded {
        response.revision
    } else {
        match range_at(kv, &response, 0)?.kvs.first() {
            Some(mine) => mine.create_revision,
            None => return Err(Error::backend(kv.backend(), "own lock key vanished")),
        }
    };
    let line = range_at(kv, &response, 1)?;
    let owns = if response.succeeded {
        line.count <= 1
    } else {
        line.kvs
            .first()
            .is_none_or(|first| first.create_revision == mine)
    };
    Ok((mine, owns))
}

/// Every contender of the lock whose range is `prefix` (`<ns><name>/`: the holder and
/// the fair waiters) and whose unfair wait line is `unfair_waiters`, of either kind:
/// the keys of both, counted at one revision by one read-only transaction.
pub(super) async fn contenders(kv: &dyn Kv, prefix: &str, unfair_waiters: &str) -> Result<usize> {
    let count = |prefix: &str| {
        TxnOp::Range(Range {
            limit: Some(1),
            ..Range::prefix(prefix)
        })
    };
    let response = kv
        .txn(Txn::when(Vec::new()).and_then(vec![count(prefix), count(unfair_waiters)]))
        .await?;
    Ok(range_at(kv, &response, 0)?.count + range_at(kv, &response, 1)?.count)
}

#[async_trait]
impl Locker for KvMutex {
    fn name(&self) -> &Name {
        &self.name
    }

    /// Waits until the lock is held: puts the own key, then waits for the deletion of
    /// the key created just before it.
    ///
    /// Cancel-safety: cancel-safe; a dropped future removes the own key in the
    /// background (unless it already held the lock, which it then never returns).
    async fn lock(&self) -> Result<LockGuard> {
        waited(self.kv.backend(), "lock", self.acquire(true).await?)
    }

    /// Go's `TryLock`: puts the own key; if another key is older, deletes it again and
    /// returns `None`. Also `None` when another task of this session holds the lock.
    async fn try_lock(&self) -> Result<Option<LockGuard>> {
        self.acquire(false).await
    }

    /// The keys under `<ns><name>/` (the holder and every queued waiter) and the unfair
    /// wait line's of the same name.
    async fn contenders(&self) -> Result<usize> {
        contenders(&*self.kv, &self.prefix, &self.unfair_waiters).await
    }
}

#[cfg(test)]
mod tests {
    use crate::kv::{Kv, Range, Txn, TxnOp};
    use crate::recipes::testing::{
        backend, name, recording_backend, session, session_of, sessions, settle, within,
    };
    use distsync_core::backend::Backend;
    use distsync_core::Primitives;

    #[tokio::test]
    async fn key_is_gos_and_token_is_its_create_revision() {
        let backend = backend();
        let s = session(&backend).await;
        let guard = backend
            .locker(&s, name("jobs/nightly"))
            .unwrap()
            .lock()
            .await
            .unwrap();
        assert_eq!(guard.key(), format!("jobs/nightly/{:x}", s.id().0));
        let stored = backend.kv().range(Range::key(guard.key())).await.unwrap();
        assert_eq!(stored.kvs[0].create_revision as u64, guard.token().get());
        assert_eq!(stored.kvs[0].lease as u64, s.id().0);
        guard.unlock().await.unwrap();
        assert_eq!(
            backend
                .kv()
                .range(Range::prefix("jobs/"))
                .await
                .unwrap()
                .count,
            0
        );
    }

    #[tokio::test]
    async fn waiters_are_handed_the_lock_in_arrival_order() {
        let backend = backend();
        let [s1, s2, s3] = sessions(&backend).await;
        let first = backend
            .locker(&s1, name("l"))
            .unwrap()
            .lock()
            .await
            .unwrap();
        let m2 = backend.locker(&s2, name("l")).unwrap();
        let m3 = backend.locker(&s3, name("l")).unwrap();
        let second = tokio::spawn(async move { m2.lock().await });
        settle().await;
        let third = tokio::spawn(async move { m3.lock().await });
        settle().await;
        assert!(!second.is_finished() && !third.is_finished());

        let first_token = first.token();
        first.unlock().await.unwrap();
        let second = within(second).await.unwrap().unwrap();
        settle().await;
        assert!(
            !third.is_finished(),
            "the third waiter must wait for the second"
        );
        assert!(second.token() > first_token);

        let second_token = second.token();
        second.unlock().await.unwrap();
        let third = within(third).await.unwrap().unwrap();
        assert!(third.token() > second_token);
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_no_key_behind() {
        let backend = backend();
        let [s1, s2, s3] = sessions(&backend).await;
        let held = backend
            .locker(&s1, name("l"))
            .unwrap()
            .lock()
            .await
            .unwrap();
        let m2 = backend.locker(&s2, name("l")).unwrap();
        let waiter = tokio::spawn(async move { m2.lock().await });
        settle().await;
        assert_eq!(
            backend.kv().range(Range::prefix("l/")).await.unwrap().count,
            2
        );
        waiter.abort();
        settle().await;
        assert_eq!(
            backend.kv().range(Range::prefix("l/")).await.unwrap().count,
            1
        );
        held.unlock().await.unwrap();
        let next = backend
            .locker(&s3, name("l"))
            .unwrap()
            .try_lock()
            .await
            .unwrap();
        assert!(next.is_some());
    }

    #[tokio::test]
    async fn try_lock_does_not_wait_and_withdraws() {
        let backend = backend();
        let [s1, s2] = sessions(&backend).await;
        let held = backend
            .locker(&s1, name("l"))
            .unwrap()
            .lock()
            .await
            .unwrap();
        let m2 = backend.locker(&s2, name("l")).unwrap();
        assert!(m2.try_lock().await.unwrap().is_none());
        assert_eq!(
            backend.kv().range(Range::prefix("l/")).await.unwrap().count,
            1
        );
        held.unlock().await.unwrap();
        assert!(m2.try_lock().await.unwrap().is_some());
    }

    #[tokio::test]
    async fn tasks_sharing_a_session_take_turns() {
        let backend = backend();
        let s = session(&backend).await;
        let m = backend.locker(&s, name("l")).unwrap();
        let first = m.lock().await.unwrap();
        assert!(m.try_lock().await.unwrap().is_none());
        let m2 = backend.locker(&s, name("l")).unwrap();
        let second = tokio::spawn(async move { m2.lock().await });
        settle().await;
        assert!(!second.is_finished());
        let first_token = first.token();
        drop(first); // released in the background, gate handed over after it
        let second = within(second).await.unwrap().unwrap();
        assert!(second.token() > first_token);
    }

    #[tokio::test]
    async fn a_key_deleted_before_lost_is_asked_is_lost_once_asked() {
        let backend = backend();
        let [s1, s2] = sessions(&backend).await;
        let guard = backend
            .locker(&s1, name("l"))
            .unwrap()
            .lock()
            .await
            .unwrap();
        // Deleted behind the guard's back before anyone asked about a loss (no watch
        // runs on the key yet): asking must still learn it.
        let deleted = Txn::when(vec![]).and_then(vec![TxnOp::delete(guard.key())]);
        backend.kv().txn(deleted).await.unwrap();
        within(guard.lost()).await;
        assert!(guard.is_lost());
        assert!(!s1.is_lost(), "only the hold was taken away");
        assert!(matches!(
            guard.unlock().await,
            Err(distsync_core::Error::NotHeld)
        ));
        let next = backend.locker(&s2, name("l")).unwrap().try_lock().await;
        assert!(matches!(next, Ok(Some(_))), "{next:?}");
    }

    #[tokio::test]
    async fn revoking_the_session_fires_lost_and_frees_the_lock() {
        let backend = backend();
        let [s1, s2] = sessions(&backend).await;
        let held = backend
            .locker(&s1, name("l"))
            .unwrap()
            .lock()
            .await
            .unwrap();
        let m2 = backend.locker(&s2, name("l")).unwrap();
        let waiter = tokio::spawn(async move { m2.lock().await });
        backend.revoke_session(s1.id()).await.unwrap();
        within(held.lost()).await;
        assert!(
            s1.is_lost(),
            "the guard learnt of the revoke before its session"
        );
        drop(within(waiter).await.unwrap().unwrap());
        assert!(matches!(
            held.unlock().await,
            Err(distsync_core::Error::SessionLost)
        ));
    }

    #[tokio::test]
    async fn a_waiter_behind_a_released_holder_reads_only_its_own_key() {
        let backend = recording_backend();
        let (s1, s2, s3) = (
            session_of(&backend).await,
            session_of(&backend).await,
            session_of(&backend).await,
        );
        let first = backend
            .locker(&s1, name("l"))
            .unwrap()
            .lock()
            .await
            .unwrap();
        let m2 = backend.locker(&s2, name("l")).unwrap();
        let m3 = backend.locker(&s3, name("l")).unwrap();
        let second = tokio::spawn(async move { m2.lock().await });
        settle().await;
        let third = tokio::spawn(async move { m3.lock().await });
        settle().await;
        assert!(!second.is_finished() && !third.is_finished());

        backend.kv().take();
        first.unlock().await.unwrap();
        let second = within(second).await.unwrap().unwrap();
        settle().await;
        assert!(
            !third.is_finished(),
            "the third waiter must wait for the second"
        );
        // The second waiter's predecessor held the lock: the line is not read again,
        // only the waiter's own key; the third waiter reads nothing.
        assert_eq!(backend.kv().take(), vec![Range::key(second.key())]);

        let second_token = second.token();
        second.unlock().await.unwrap();
        let third = within(third).await.unwrap().unwrap();
        assert!(third.token() > second_token);
    }

    #[tokio::test]
    async fn a_waiter_behind_one_that_left_waits_for_the_holder() {
        let backend = backend();
        let [s1, s2, s3] = sessions(&backend).await;
        let held = backend
            .locker(&s1, name("l"))
            .unwrap()
            .lock()
            .await
            .unwrap();
        let m2 = backend.locker(&s2, name("l")).unwrap();
        let m3 = backend.locker(&s3, name("l")).unwrap();
        let second = tokio::spawn(async move { m2.lock().await });
        settle().await;
        let third = tokio::spawn(async move { m3.lock().await });
        settle().await;
        // The third waiter's predecessor leaves without having held: the holder
        // before it still holds.
        second.abort();
        settle().await;
        assert!(!third.is_finished(), "granted while the lock was held");
        assert_eq!(
            backend.kv().range(Range::prefix("l/")).await.unwrap().count,
            2
        );
        let held_token = held.token();
        held.unlock().await.unwrap();
        let third = within(third).await.unwrap().unwrap();
        assert!(third.token() > held_token);
    }

    #[tokio::test]
    async fn a_waiter_behind_the_holder_of_a_sub_name_waits_for_its_own_holder() {
        let backend = backend();
        let [s1, s2, s3] = sessions(&backend).await;
        let outer = backend
            .locker(&s1, name("a"))
            .unwrap()
            .lock()
            .await
            .unwrap();
        // `a/b` heads its own line, but its key also lies in `a`'s line, behind `outer`.
        let inner = backend
            .locker(&s2, name("a/b"))
            .unwrap()
            .lock()
            .await
            .unwrap();
        let m3 = backend.locker(&s3, name("a")).unwrap();
        let waiter = tokio::spawn(async move { m3.lock().await });
        settle().await;
        inner.unlock().await.unwrap();
        settle().await;
        assert!(!waiter.is_finished(), "granted `a` while `a` was held");
        let outer_token = outer.token();
        outer.unlock().await.unwrap();
        let next = within(waiter).await.unwrap().unwrap();
        assert!(next.token() > outer_token);
    }

    #[tokio::test]
    async fn a_waiter_whose_session_is_lost_gets_session_lost() {
        let backend = backend();
        let [s1, s2] = sessions(&backend).await;
        let _held = backend
            .locker(&s1, name("l"))
            .unwrap()
            .lock()
            .await
            .unwrap();
        let m2 = backend.locker(&s2, name("l")).unwrap();
        let waiter = tokio::spawn(async move { m2.lock().await });
        settle().await;
        s2.close().await.unwrap();
        assert!(matches!(
            within(waiter).await.unwrap(),
            Err(distsync_core::Error::SessionLost)
        ));
        assert_eq!(
            backend.kv().range(Range::prefix("l/")).await.unwrap().count,
            1
        );
    }
}
