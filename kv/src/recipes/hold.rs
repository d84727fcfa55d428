//! Holding a session-bound key: the in-process gate, the clean-up of a waiter whose
//! future is dropped, the release step handed to guards, and the watch that tells a
//! guard its key was taken away.

use distsync_core::raw::GuardStoreSide;
use distsync_core::raw::SessionStoreSide as _;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::kv::{
    Compare, CompareOp, KeyValue, Kv, LeaseId, Range, Revision, Txn, TxnOp, TxnResponse,
};
use distsync_core::election::{Leadership, Proclaim};
use distsync_core::error::{Error, Result};
use distsync_core::guard::{LockGuard, ReadGuard, ReleaseFn};
use distsync_core::session::{KeepAlive, Session};
use distsync_core::token::FencingToken;

use super::guarded::{KvGuardedWrite, LockHold};
use super::heads::{HeadMark, Heads};
use super::key::{if_created_at, put_new_key, range_at, KeySpace, UniqueKeys};
use super::wait::{until_lost, wait_delete, wait_turn};
use distsync_core::raw::{CleanUp, RetryPolicy};

/// Takes the session's in-process gate for `resource` (see [`Session::exclusive`]):
/// waiting for it unless `wait` is false, in which case a busy gate gives `None`.
/// Stops with [`Error::SessionLost`] if the session ends while waiting.
pub(crate) async fn gate(
    session: &Session,
    resource: &str,
    wait: bool,
) -> Result<Option<OwnedMutexGuard<()>>> {
    if session.is_lost() {
        return Err(Error::SessionLost);
    }
    if wait {
        until_lost(Some(session.lost_token()), session.exclusive(resource))
            .await
            .map(Some)
    } else {
        Ok(session.exclusive(resource).now_or_never())
    }
}

/// Turns an error from a write attaching `lease` into [`Error::SessionLost`] when the
/// lease is gone (the store refuses puts on a revoked lease), marking the session lost.
pub(crate) async fn explain_lease_error(
    kv: &dyn Kv,
    session: &Session,
    lease: LeaseId,
    error: Error,
) -> Error {
    match lease_gone(kv, session, lease).await {
        Ok(true) => Error::SessionLost,
        _ => error,
    }
}

/// The fencing token of a hold whose key was created at `create_revision`.
pub(crate) fn fencing_token(create_revision: Revision) -> FencingToken {
    FencingToken(u64::try_from(create_revision).unwrap_or_default())
}

/// The store and the session, with its lease, through which a recipe puts its
/// session-bound keys.
#[derive(Clone)]
pub(crate) struct SessionKv {
    /// The store.
    pub(crate) kv: Arc<dyn Kv>,
    /// The session the keys are held through.
    pub(crate) session: Session,
    /// The session's lease, which every key is attached to.
    pub(crate) lease: LeaseId,
}

/// What [`SessionKv::put_own`] found.
pub(crate) struct OwnKey {
    /// The own key's create revision.
    pub(crate) create_revision: Revision,
    /// The own key as it was, when it was there already (nothing was written).
    pub(crate) existing: Option<KeyValue>,
    /// The transaction's answer: the ranges of the extra operations from index 1 on.
    pub(crate) response: TxnResponse,
}

impl SessionKv {
    /// Takes the session's gate for `key` (see [`gate`]) and arms the removal of `key`
    /// with it: `None` when `wait` is false and the gate is busy.
    pub(crate) async fn contend(&self, key: &str, wait: bool) -> Result<Option<WaiterKey>> {
        let Some(gate) = gate(&self.session, key, wait).await? else {
            return Ok(None);
        };
        Ok(Some(self.waiter(key, Some(gate))))
    }

    /// Arms the removal of `key`, keeping `gate` until it is done (see [`WaiterKey`]),
    /// before the write that creates it is sent. Until [`WaiterKey::created_at`] is
    /// known, the removal only deletes the key if it is attached to the lease. The
    /// removal rides out transient store failures as a release does (see
    /// [`SessionKv::remove_or_revoke`]).
    pub(crate) fn waiter(&self, key: &str, gate: Option<OwnedMutexGuard<()>>) -> WaiterKey {
        WaiterKey {
            keys: self.clone(),
            key: key.to_owned(),
            create_revision: None,
            gate,
            armed: true,
        }
    }

    /// The hold of `key`, created at `create_revision`, with no head mark.
    pub(crate) fn held(&self, key: &str, create_revision: Revision) -> HeldKey {
        HeldKey {
            keys: self.clone(),
            key: key.to_owned(),
            create_revision,
            _mark: None,
        }
    }

    /// `error`, from a write attaching the lease, explained (see [`explain_lease_error`]).
    pub(crate) async fn explain(&self, error: Error) -> Error {
        explain_lease_error(&*self.kv, &self.session, self.lease, error).await
    }

    /// Runs `txn`, a write attaching the lease; an error is explained (see
    /// [`explain_lease_error`]).
    pub(crate) async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        match self.kv.txn(txn).await {
            Ok(response) => Ok(response),
            Err(error) => Err(self.explain(error).await),
        }
    }

    /// Puts `key` with `value` unless it is there, then runs `then`, in one
    /// transaction; if it is there, reads it, then runs `otherwise`. A key that is
    /// there already was left by an earlier hold of this session (whose release runs
    /// in the background) and is reused, as Go does. `what` names the key in the error
    /// for a key that vanished in between.
    pub(crate) async fn put_own(
        &self,
        key: &str,
        value: Bytes,
        what: &str,
        then: Vec<TxnOp>,
        otherwise: Vec<TxnOp>,
    ) -> Result<OwnKey> {
        let put = std::iter::once(TxnOp::put(key, value, self.lease)).chain(then);
        let read = std::iter::once(TxnOp::Range(Range::key(key))).chain(otherwise);
        let txn = Txn::when(vec![Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then(put.collect())
            .or_else(read.collect());
        let response = self.txn(txn).await?;
        if response.succeeded {
            let create_revision = response.revision;
            return Ok(OwnKey {
                create_revision,
                existing: None,
                response,
            });
        }
        let Some(existing) = range_at(&*self.kv, &response, 0)?.kvs.into_iter().next() else {
            let vanished = format!("own {what} key vanished");
            return Err(Error::backend(self.kv.backend(), vanished));
        };
        Ok(OwnKey {
            create_revision: existing.create_revision,
            existing: Some(existing),
            response,
        })
    }

    /// Puts a new key, empty and on the lease, under `prefix` (without its trailing
    /// `/`, see [`UniqueKeys`]) and arms its removal (see [`SessionKv::waiter`]): the
    /// removal and the key's create revision. A failed write is explained (see
    /// [`explain_lease_error`]) and leaves nothing armed.
    pub(crate) async fn put_unique(&self, prefix: String) -> Result<(WaiterKey, Revision)> {
        let mut names = UniqueKeys::new(prefix);
        loop {
            let key = names.next_key();
            let mut cleanup = self.waiter(&key, None);
            match put_new_key(&*self.kv, &key, Bytes::new(), self.lease).await {
                Ok(Some(revision)) => {
                    cleanup.created_at(revision);
                    return Ok((cleanup, revision));
                }
                Ok(None) => {
                    // Someone else's key of the same nanosecond: try the next name.
                    cleanup.disarm();
                }
                Err(error) => {
                    cleanup.disarm();
                    return Err(self.explain(error).await);
                }
            }
        }
    }

    /// Deletes `key` if it is ours: created at `create_revision` when known, else
    /// attached to the lease. Whether it deleted it. Idempotent.
    async fn remove(&self, key: &str, create_revision: Option<Revision>) -> Result<bool> {
        let create_revision = match create_revision {
            Some(revision) => revision,
            None => {
                let current = self.kv.range(Range::key(key)).await?;
                match current.kvs.first() {
                    Some(found) if found.lease == self.lease => found.create_revision,
                    _ => return Ok(false),
                }
            }
        };
        if_created_at(&*self.kv, key, create_revision, TxnOp::delete(key)).await
    }

    /// A release that finishes: deletes `key` (see [`SessionKv::remove`]) through
    /// transient store failures (an etcd leader change, a dropped connection), retrying
    /// with backoff until it succeeds, the session ends, or one session TTL has passed.
    /// Whether the key was there to delete (or gone after an attempt whose reply was
    /// lost).
    ///
    /// # Errors
    /// [`Error::SessionLost`] when the session ended while the release was failing (the
    /// store frees the key with the lease). Otherwise, if the key cannot be deleted (a
    /// non-transient error, or a TTL of transient ones), the session is revoked, so
    /// that the store frees the key instead of a keepalive keeping it forever, and the
    /// store's error is returned. Every other hold of that session is lost with it.
    async fn remove_or_revoke(&self, key: &str, create_revision: Option<Revision>) -> Result<bool> {
        let deadline = Instant::now() + self.session.ttl();
        let mut attempts = 0u32;
        let attempt = || {
            attempts += 1;
            // After a failed attempt, a key already gone was most likely deleted by that
            // attempt, whose reply was lost: the release is done.
            let retried = attempts > 1;
            async move { Ok(self.remove(key, create_revision).await? || retried) }
        };
        let release = RetryPolicy::default().idempotent_until(
            "release",
            Some(deadline),
            Some(self.session.lost_token()),
            attempt,
        );
        match release.await {
            Ok(removed) => Ok(removed),
            Err(Error::SessionLost) => Err(Error::SessionLost),
            Err(error) => {
                tracing::warn!(%key, %error, "release failed; revoking its session so that the store frees the key");
                self.revoke();
                Err(error)
            }
        }
    }

    /// Ends the session now (its `lost()` fires and its keepalive stops) and revokes its
    /// lease in the background, retrying through transient failures for one TTL (after
    /// which the unrenewed lease has expired anyway).
    fn revoke(&self) {
        self.session.mark_lost();
        let (kv, lease) = (Arc::clone(&self.kv), self.lease);
        CleanUp::new("revoking a session", "its lease expires after its TTL")
            .within(self.session.ttl())
            .spawn(move |clean_up| async move { clean_up.retry(|| kv.lease_revoke(lease)).await });
    }

    /// Whether the lease is gone from the store (see [`lease_gone`]).
    async fn lease_gone(&self) -> Result<bool> {
        lease_gone(&*self.kv, &self.session, self.lease).await
    }
}

/// Removes a waiter's key unless disarmed: dropping an acquisition future part-way
/// runs the removal in the background (keeping the in-process gate until it is done,
/// so the next task of the session does not find the stale key).
pub(crate) struct WaiterKey {
    keys: SessionKv,
    key: String,
    create_revision: Option<Revision>,
    gate: Option<OwnedMutexGuard<()>>,
    armed: bool,
}

impl WaiterKey {
    /// The key now known to have been created at `revision`.
    pub(crate) fn created_at(&mut self, revision: Revision) {
        self.create_revision = Some(revision);
    }

    /// The key.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// Keeps the key (it is held, or already gone) and hands back the gate.
    pub(crate) fn disarm(mut self) -> Option<OwnedMutexGuard<()>> {
        self.armed = false;
        self.gate.take()
    }

    /// Removes the key now, then lets the gate go.
    pub(crate) async fn remove_now(mut self) -> Result<()> {
        self.removal().await
    }

    /// Waits for the turn of the key, created at `create_revision`, in the line of the
    /// keys under `prefix` (see [`wait_turn`]), until the session is lost. A key that
    /// is gone meanwhile (its lease expired or was revoked) or was created again ends
    /// the wait with [`Error::SessionLost`], leaving nothing to remove; other errors
    /// (and a lost session) leave the removal armed.
    pub(crate) async fn wait_turn(
        &mut self,
        prefix: &str,
        create_revision: Revision,
        heads: Option<&Arc<Heads>>,
    ) -> Result<()> {
        let (kv, lost) = (&*self.keys.kv, self.keys.session.lost_token());
        if wait_turn(kv, prefix, &self.key, create_revision, heads, Some(lost)).await? {
            return Ok(());
        }
        self.armed = false;
        Err(Error::SessionLost)
    }

    /// Disarms the removal and hands it back: the deletion of the key, after which the
    /// gate goes.
    fn removal(&mut self) -> impl Future<Output = Result<()>> + Send + 'static {
        self.armed = false;
        let keys = self.keys.clone();
        let key = std::mem::take(&mut self.key);
        let (create_revision, gate) = (self.create_revision, self.gate.take());
        async move {
            let removed = keys.remove_or_revoke(&key, create_revision).await;
            drop(gate);
            removed.map(drop)
        }
    }
}

impl Drop for WaiterKey {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let key = self.key.clone();
        // The removal retries by itself, within the session's TTL.
        let removal = self.removal();
        CleanUp::new("removing an abandoned waiter", "its lease frees it")
            .of(&key)
            .spawn(move |_| removal);
    }
}

/// Whether `lease` is gone from the store; if so, marks `session` lost (so that its
/// `lost()` fires now rather than at the next renewal).
async fn lease_gone(kv: &dyn Kv, session: &Session, lease: LeaseId) -> Result<bool> {
    if session.is_lost() {
        return Ok(true);
    }
    match kv.lease_keep_alive(lease).await? {
        KeepAlive::Gone => {
            session.mark_lost();
            Ok(true)
        }
        KeepAlive::Renewed | KeepAlive::RenewedSince(_) => Ok(false),
    }
}

/// `guard`, keeping `gate` (if any) until it is released.
fn gated<G: GuardStoreSide>(guard: G, gate: Option<OwnedMutexGuard<()>>) -> G {
    match gate {
        Some(gate) => guard.with_gate(gate),
        None => guard,
    }
}

/// A session-bound key now held by a guard: what its release step and its watch need.
#[derive(Clone)]
pub(crate) struct HeldKey {
    keys: SessionKv,
    key: String,
    /// The revision that created it (the hold's identity, and its fencing token).
    create_revision: Revision,
    /// The hold's mark as a head of its line (locks): never read, only kept (by the
    /// release step's and the loss watch's copies) until the hold is let go.
    _mark: Option<Arc<HeadMark>>,
}

impl HeldKey {
    /// The same hold, keeping `mark` (its line's head mark) until it is let go.
    pub(crate) fn marked(mut self, mark: HeadMark) -> Self {
        self._mark = Some(Arc::new(mark));
        self
    }

    /// The [`LockGuard`] of this hold (a lock, a write lock, a permit): its fencing token is
    /// the key's create revision; it releases through [`HeldKey::release_fn`], keeps
    /// the in-process `gate` until released, writes guarded STM keys under
    /// `space` ([`distsync_core::LockGuard::put_if_held`]), and loses the hold when the key
    /// goes ([`HeldKey::loss_watch`], started by the guard's first `lost()`).
    pub(crate) fn lazy_lock_guard(
        self,
        gate: Option<OwnedMutexGuard<()>>,
        space: &KeySpace,
    ) -> LockGuard {
        let watch = self.loss_watch();
        let token = fencing_token(self.create_revision);
        let release = self.release_fn(|| Error::NotHeld);
        let guard = distsync_core::raw::with_guarded_write(
            distsync_core::raw::lock_guard(self.key.clone(), token, &self.keys.session, release),
            Arc::new(KvGuardedWrite {
                hold: LockHold::new(self.keys.kv, self.key, self.create_revision),
                space: space.clone(),
            }),
        );
        gated(guard, gate).with_loss_watch(watch)
    }

    /// The [`ReadGuard`] of this hold (a read lock), released and watched as a lock's.
    pub(crate) fn read_guard(self) -> ReadGuard {
        let release = self.release_fn(|| Error::NotHeld);
        distsync_core::raw::read_guard(self.key.clone(), &self.keys.session, release)
            .with_loss_watch(self.loss_watch())
    }

    /// The [`Leadership`] of this hold (a leader key), keeping the in-process `gate`
    /// until it resigns; `proclaim` rewrites the leader key. Its term is the key's create
    /// revision, and it is released and watched as a lock's.
    pub(crate) fn leadership(
        self,
        gate: Option<OwnedMutexGuard<()>>,
        proclaim: Arc<dyn Proclaim>,
    ) -> Leadership {
        let token = fencing_token(self.create_revision);
        let resign = self.release_fn(|| Error::NotLeader);
        let session = &self.keys.session;
        let leadership =
            distsync_core::raw::leadership(self.key.clone(), token, session, proclaim, resign);
        gated(leadership, gate).with_loss_watch(self.loss_watch())
    }

    /// The guard's deferred watch on the key (see [`distsync_core::guard::LossWatchFn`]):
    /// started only when the guard's `lost()` (or `is_lost()`, `while_held()`) is
    /// first used, so a hold nobody asks about costs the store no watch (a watch
    /// created and cancelled per hold, and its events). Once started, it reads the
    /// key first: if the key is gone or was created again, the hold was lost before
    /// anyone asked, and `lost()` fires at once; otherwise it watches from the read's
    /// revision on (see [`HeldKey::spawn_watch`]), so no deletion between the grant
    /// and the first `lost()` is missed, and the watch starts at the store's current
    /// revision (which etcd serves as writes happen, not from its catch-up loop).
    /// Locks, write and read locks, permits and leaderships all use it.
    fn loss_watch(&self) -> distsync_core::guard::LossWatchFn {
        let held = self.clone();
        Box::new(move |lost| held.spawn_watch(lost))
    }

    /// The release step of the guard: deletes the key, through transient failures
    /// (see [`SessionKv::remove_or_revoke`]). If it was already gone, answers
    /// [`Error::SessionLost`] when the lease is gone too (marking the session lost),
    /// else `not_held()` (someone else deleted the key).
    fn release_fn(&self, not_held: fn() -> Error) -> ReleaseFn {
        let held = self.clone();
        Box::new(move || {
            async move {
                let keys = &held.keys;
                if keys
                    .remove_or_revoke(&held.key, Some(held.create_revision))
                    .await?
                {
                    return Ok(());
                }
                if keys.lease_gone().await? {
                    Err(Error::SessionLost)
                } else {
                    Err(not_held())
                }
            }
            .boxed()
        })
    }

    /// Watches the key, then reads it ([`wait_delete`]), and cancels `lost` (the
    /// guard's token) when the key is deleted other than by the guard's own release,
    /// or at once if the read finds it gone or created again; if the lease is gone
    /// too, the session is marked lost first. Ends when `lost` fires.
    fn spawn_watch(&self, lost: CancellationToken) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let held = self.clone();
        runtime.spawn(async move {
            let kv = &*held.keys.kv;
            let deleted = wait_delete(kv, &held.key, held.create_revision, Some(&lost)).await;
            match deleted {
                Ok(()) => {
                    if lost.is_cancelled() {
                        return;
                    }
                    if let Err(error) = held.keys.lease_gone().await {
                        tracing::debug!(key = %held.key, %error, "checking the lease of a lost hold failed");
                    }
                    tracing::debug!(key = %held.key, "held key deleted; hold lost");
                    lost.cancel();
                }
                Err(Error::SessionLost) => {}
                Err(error) => {
                    tracing::debug!(key = %held.key, %error, "watching a held key failed; relying on the session");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::kv::{Kv, Range};
    use crate::memory::TxnFault;
    use crate::recipes::mutex::locked;
    use crate::recipes::testing::{flaky_backend, name, session_of, settle, within};
    use distsync_core::Primitives;

    use distsync_core::Error;

    #[tokio::test]
    async fn an_unlock_during_a_leader_change_is_retried_until_it_finishes() {
        for how in [TxnFault::NotApplied, TxnFault::ReplyLost] {
            let backend = flaky_backend();
            let s1 = session_of(&backend).await;
            let s2 = session_of(&backend).await;
            let held = locked(&backend, &s1, "l").await;
            let m2 = backend.locker(&s2, name("l")).unwrap();
            let waiter = tokio::spawn(async move { m2.lock().await });
            settle().await;
            assert!(!waiter.is_finished());

            let before = backend.kv().txns();
            backend.kv().fail_txns(3, how);
            within(held.unlock())
                .await
                .unwrap_or_else(|error| panic!("{how:?}: unlock gave {error}"));
            assert!(backend.kv().txns() > before + 1, "{how:?}: not retried");
            let next = within(waiter).await.unwrap().unwrap();
            assert!(
                !s1.is_lost(),
                "{how:?}: a release that finished ended its session"
            );
            next.unlock().await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_guard_dropped_during_a_leader_change_is_released_in_the_background() {
        let backend = flaky_backend();
        let s1 = session_of(&backend).await;
        let s2 = session_of(&backend).await;
        let held = locked(&backend, &s1, "l").await;
        let m2 = backend.locker(&s2, name("l")).unwrap();
        let waiter = tokio::spawn(async move { m2.lock().await });
        settle().await;
        backend.kv().fail_txns(5, TxnFault::NotApplied);
        drop(held);
        drop(within(waiter).await.unwrap().unwrap());
        assert!(!s1.is_lost());
    }

    #[tokio::test]
    async fn a_resign_during_a_leader_change_is_retried() {
        let backend = flaky_backend();
        let s1 = session_of(&backend).await;
        let s2 = session_of(&backend).await;
        let leader = backend
            .election(&s1, name("e"))
            .unwrap()
            .campaign("a")
            .await
            .unwrap();
        let e2 = backend.election(&s2, name("e")).unwrap();
        let candidate = tokio::spawn(async move { e2.campaign("b").await });
        settle().await;
        backend.kv().fail_txns(4, TxnFault::ReplyLost);
        within(leader.resign()).await.unwrap();
        drop(within(candidate).await.unwrap().unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_release_that_cannot_finish_revokes_the_session() {
        let backend = flaky_backend();
        let s1 = session_of(&backend).await;
        let held = locked(&backend, &s1, "l").await;
        backend.kv().fail_txns(usize::MAX, TxnFault::NotApplied);
        let started = tokio::time::Instant::now();
        match held.unlock().await {
            Err(error) => assert!(error.is_transient(), "{error}"),
            Ok(()) => panic!("an unlock whose every attempt failed succeeded"),
        }
        assert!(
            started.elapsed() <= s1.ttl(),
            "retried past the session's TTL"
        );
        assert!(s1.is_lost(), "the session was not ended");
        backend.kv().fail_txns(0, TxnFault::NotApplied);
        // The lease is revoked in the background: the store frees the key.
        within(async {
            while backend.kv().range(Range::prefix("l/")).await.unwrap().count > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await;
        let s2 = session_of(&backend).await;
        let next = backend.locker(&s2, name("l")).unwrap().try_lock().await;
        assert!(matches!(next, Ok(Some(_))), "{next:?}");
        assert!(matches!(
            backend.locker(&s1, name("l")).unwrap().try_lock().await,
            Err(Error::SessionLost)
        ));
    }

    #[tokio::test]
    async fn waiters_ride_out_a_store_without_leader() {
        let backend = flaky_backend();
        let s1 = session_of(&backend).await;
        let s2 = session_of(&backend).await;
        let held = locked(&backend, &s1, "l").await;
        // The waiter's reads and watches fail for a while, as on a member cut off
        // from the raft leader; it must neither give up nor miss the release.
        backend.kv().fail_reads(6);
        let m2 = backend.locker(&s2, name("l")).unwrap();
        let waiter = tokio::spawn(async move { m2.lock().await });
        within(async {
            while backend.kv().reads_still_to_fail() > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(!waiter.is_finished(), "{:?}", waiter.await);
        held.unlock().await.unwrap();
        drop(within(waiter).await.unwrap().unwrap());
    }
}
