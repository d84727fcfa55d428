//! The mutex, as etcd's Go `concurrency.Mutex`.
//!
//! Layout: each contender puts `<ns><name>/<lease id in lowercase hex>` (empty value,
//! attached to its session's lease) in one transaction that also counts the keys under
//! `<ns><name>/`; the contender whose key has the lowest create revision holds the lock (a
//! new key is the newest, so it holds when it is alone). A waiter watches only the key
//! created just before its own (no thundering herd), so waiters are granted in arrival
//! order. This is the layout of `etcdctl lock <name>`, so Go programs and distsync exclude
//! each other on one etcd. The fencing token is the own key's create revision.
//!
//! The unfair mutex ([`super::unfair_mutex`]) is this mutex with another way to wait.

use distsync_core::raw::{waited, RetryPolicy, SessionStoreSide as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::OwnedMutexGuard;

use crate::kv::{Range, Revision, Txn, TxnOp};
use distsync_core::error::Result;
use distsync_core::guard::LockGuard;
use distsync_core::lock::Locker;
use distsync_core::name::Name;

use super::heads::Heads;
use super::hold::SessionKv;
use super::key::{count_under, lease_key, range_at, KeySpace};
use super::unfair_mutex::wait_line;

/// A [`Locker`] over a [`Kv`](crate::kv::Kv) store, fair or unfair.
pub(crate) struct KvMutex {
    pub(super) keys: SessionKv,
    name: Name,
    /// `<ns><name>/`: the fair line, where the holder's key lives.
    pub(super) prefix: String,
    /// The own key under `prefix`.
    pub(super) key: String,
    /// `<ns>/unfair-lock/<escaped name>/`: the unfair wait line of the same name, whose
    /// waiters contend for this lock too.
    pub(super) waiters: String,
    /// Whether this locker waits in the unfair wait line rather than in the fair line.
    unfair: bool,
    space: KeySpace,
    heads: Arc<Heads>,
    /// How many times this locker, heading the unfair wait line, looked at the lock.
    pub(super) wakeups: AtomicU64,
}

impl KvMutex {
    /// The mutex `name` under `space`, held through `keys`' session, `unfair` or fair;
    /// `heads` is the backend's record of the lock keys that headed their line.
    pub(crate) fn new(
        keys: SessionKv,
        space: &KeySpace,
        name: Name,
        heads: Arc<Heads>,
        unfair: bool,
    ) -> Self {
        let prefix = space.lock_line(&name);
        Self {
            key: lease_key(&prefix, keys.lease),
            keys,
            prefix,
            waiters: wait_line(space, &name),
            name,
            unfair,
            space: space.clone(),
            heads,
            wakeups: AtomicU64::new(0),
        }
    }

    /// Waits until held (`wait`), or tries once, in the line of this locker's kind.
    async fn acquire(&self, wait: bool) -> Result<Option<LockGuard>> {
        if self.unfair {
            self.acquire_unfairly(wait).await
        } else {
            self.acquire_fairly(wait).await
        }
    }

    /// Go's `Lock` (`wait`) or `TryLock`.
    async fn acquire_fairly(&self, wait: bool) -> Result<Option<LockGuard>> {
        let Some(mut cleanup) = self.keys.contend(&self.key, wait).await? else {
            return Ok(None);
        };
        let (my_revision, owns) = self.enter(wait).await?;
        cleanup.created_at(my_revision);
        if !owns {
            if !wait {
                cleanup.remove_now().await?;
                return Ok(None);
            }
            // Errors (and a lost session) leave `cleanup` armed: the key is removed.
            cleanup
                .wait_turn(&self.prefix, my_revision, Some(&self.heads))
                .await?;
        }
        Ok(Some(self.guard(my_revision, cleanup.disarm())))
    }

    /// Puts the own key under the prefix unless it is there, in the one transaction
    /// that also tells whether it heads the line: the key's create revision, and
    /// whether it is the first-created key under the prefix (so holds the lock). A new
    /// key is the line's newest, so it heads the line exactly when it is the only key:
    /// an unsorted read of one key counts them, where Go's read of the first-created
    /// key makes etcd read and sort the whole line inside the write. A key that is
    /// already there is reused (see [`SessionKv::put_own`]).
    ///
    /// That reuse makes the transaction idempotent, so a waiting call (`wait`) repeats
    /// it through transient failures until its session ends, as the rest of its wait
    /// does: a store restarting while its answer is on the way is ridden out, not
    /// returned.
    pub(super) async fn enter(&self, wait: bool) -> Result<(Revision, bool)> {
        let others = TxnOp::Range(count_under(&self.prefix));
        let first = TxnOp::Range(Range::prefix(&self.prefix).first_create());
        let put = || {
            self.keys.put_own(
                &self.key,
                Bytes::new(),
                "lock",
                vec![others.clone()],
                vec![first.clone()],
            )
        };
        let own = if wait {
            let lost = Some(self.keys.session.lost_token());
            RetryPolicy::default()
                .wait("entering a lock's line", lost, put)
                .await?
        } else {
            put().await?
        };
        let line = range_at(&*self.keys.kv, &own.response, 1)?;
        let owns = match own.existing {
            None => line.count <= 1,
            Some(_) => line
                .kvs
                .first()
                .is_none_or(|first| first.create_revision == own.create_revision),
        };
        Ok((own.create_revision, owns))
    }

    /// The guard of the own key, granted at `revision`: its hold marked as the head of
    /// the line, keeping `gate` until released.
    pub(super) fn guard(&self, revision: Revision, gate: Option<OwnedMutexGuard<()>>) -> LockGuard {
        let mark = self.heads.granted(&self.prefix, &self.key, revision);
        let held = self.keys.held(&self.key, revision).marked(mark);
        held.lazy_lock_guard(gate, &self.space)
    }
}

#[async_trait]
impl Locker for KvMutex {
    fn name(&self) -> &Name {
        &self.name
    }

    /// Waits until the lock is held. Fair: puts the own key, then waits for the
    /// deletion of the key created just before it. Unfair: attempts at once; if held
    /// by someone, waits in the unfair wait line (see [`super::unfair_mutex`]).
    ///
    /// Cancel-safety: cancel-safe; a dropped future removes its keys (the own key, a
    /// wait-line key, a key an attempt in flight made) in the background, unless it
    /// already held the lock, which it then never returns.
    async fn lock(&self) -> Result<LockGuard> {
        waited(self.keys.kv.backend(), "lock", self.acquire(true).await?)
    }

    /// Fair, Go's `TryLock`: puts the own key; if another key is older, deletes it
    /// again and returns `None`. Unfair: one attempt, `None` when another key holds.
    /// Also `None` when another task of this session holds the lock.
    async fn try_lock(&self) -> Result<Option<LockGuard>> {
        self.acquire(false).await
    }

    /// The keys under `<ns><name>/` (the holder and every fair waiter) and the unfair
    /// wait line's of the same name, counted at one revision by one read-only
    /// transaction.
    async fn contenders(&self) -> Result<usize> {
        let (kv, lines) = (&*self.keys.kv, [&self.prefix, &self.waiters]);
        let counts = lines.map(|line| TxnOp::Range(count_under(line)));
        let response = kv
            .txn(Txn::when(Vec::new()).and_then(counts.into()))
            .await?;
        Ok(range_at(kv, &response, 0)?.count + range_at(kv, &response, 1)?.count)
    }

    fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }
}

/// `session`'s hold of the fair lock `name` of `backend`, waited for (for tests).
#[cfg(test)]
pub(super) async fn locked(
    backend: &impl distsync_core::Primitives,
    session: &distsync_core::session::Session,
    name: &str,
) -> LockGuard {
    let locker = backend.locker(session, super::testing::name(name)).unwrap();
    locker.lock().await.unwrap()
}

#[cfg(test)]
mod tests {
    use super::locked;
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
        let guard = locked(&backend, &s, "jobs/nightly").await;
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
        let first = locked(&backend, &s1, "l").await;
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
        let held = locked(&backend, &s1, "l").await;
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
        let held = locked(&backend, &s1, "l").await;
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
        let guard = locked(&backend, &s1, "l").await;
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
        let held = locked(&backend, &s1, "l").await;
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
        let first = locked(&backend, &s1, "l").await;
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
        let held = locked(&backend, &s1, "l").await;
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
        let outer = locked(&backend, &s1, "a").await;
        // `a/b` heads its own line, but its key also lies in `a`'s line, behind `outer`.
        let inner = locked(&backend, &s2, "a/b").await;
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
        let _held = locked(&backend, &s1, "l").await;
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
