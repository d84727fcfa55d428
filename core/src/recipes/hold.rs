//! Holding a session-bound key: the in-process gate, the clean-up of a waiter whose
//! future is dropped, the release step handed to guards, and the watch that tells a
//! guard its key was taken away.

use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::guard::ReleaseFn;
use crate::kv::{Kv, LeaseId, Range, Revision};
use crate::session::{KeepAlive, Session};

use super::key::delete_if_created_at;
use super::wait::{until_lost, wait_delete};

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

/// Removes a waiter's key unless disarmed: dropping an acquisition future part-way
/// runs the removal in the background (keeping the in-process gate until it is done,
/// so the next task of the session does not find the stale key).
pub(crate) struct Cleanup {
    kv: Arc<dyn Kv>,
    key: String,
    lease: LeaseId,
    create_revision: Option<Revision>,
    gate: Option<OwnedMutexGuard<()>>,
    armed: bool,
}

impl Cleanup {
    /// Arms the removal of `key`, attached to `lease`, before the write that creates it
    /// is sent. Until [`Cleanup::created_at`] is known, the removal only deletes the
    /// key if it is attached to `lease`.
    pub(crate) fn new(
        kv: Arc<dyn Kv>,
        key: String,
        lease: LeaseId,
        gate: Option<OwnedMutexGuard<()>>,
    ) -> Self {
        Self {
            kv,
            key,
            lease,
            create_revision: None,
            gate,
            armed: true,
        }
    }

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
        self.armed = false;
        let result = remove(&*self.kv, &self.key, self.lease, self.create_revision).await;
        drop(self.gate.take());
        result
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let kv = Arc::clone(&self.kv);
        let key = std::mem::take(&mut self.key);
        let lease = self.lease;
        let create_revision = self.create_revision;
        let gate = self.gate.take();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(error) = remove(&*kv, &key, lease, create_revision).await {
                        tracing::warn!(%key, %error, "removing an abandoned waiter failed; its lease frees it");
                    }
                    drop(gate);
                });
            }
            Err(_) => {
                tracing::warn!(%key, "waiter abandoned outside a runtime; its lease frees it");
            }
        }
    }
}

/// Deletes `key` if it is ours: created at `create_revision` when known, else attached
/// to `lease`.
async fn remove(
    kv: &dyn Kv,
    key: &str,
    lease: LeaseId,
    create_revision: Option<Revision>,
) -> Result<()> {
    let create_revision = match create_revision {
        Some(revision) => revision,
        None => {
            let current = kv.range(Range::key(key)).await?;
            match current.kvs.first() {
                Some(found) if found.lease == lease => found.create_revision,
                _ => return Ok(()),
            }
        }
    };
    delete_if_created_at(kv, key, create_revision).await?;
    Ok(())
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
        KeepAlive::Renewed => Ok(false),
    }
}

/// A session-bound key now held by a guard: what its release step and its watch need.
#[derive(Clone)]
pub(crate) struct HeldKey {
    /// The store.
    pub(crate) kv: Arc<dyn Kv>,
    /// The key.
    pub(crate) key: String,
    /// The revision that created it (the hold's identity, and its fencing token).
    pub(crate) create_revision: Revision,
    /// The session it is held through.
    pub(crate) session: Session,
    /// The session's lease.
    pub(crate) lease: LeaseId,
}

impl HeldKey {
    /// The release step of the guard: deletes the key. If it was already gone,
    /// answers [`Error::SessionLost`] when the lease is gone too (marking the session
    /// lost), else `not_held()` (someone else deleted the key).
    pub(crate) fn release_fn(&self, not_held: fn() -> Error) -> ReleaseFn {
        let held = self.clone();
        Box::new(move || {
            async move {
                let kv = &*held.kv;
                if delete_if_created_at(kv, &held.key, held.create_revision).await? {
                    return Ok(());
                }
                if lease_gone(kv, &held.session, held.lease).await? {
                    Err(Error::SessionLost)
                } else {
                    Err(not_held())
                }
            }
            .boxed()
        })
    }

    /// Watches the key from revision `from` and cancels `lost` (the guard's token)
    /// when the key is deleted other than by the guard's own release; if the lease is
    /// gone too, the session is marked lost first. Ends when `lost` fires.
    pub(crate) fn watch(&self, from: Revision, lost: CancellationToken) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let held = self.clone();
        runtime.spawn(async move {
            let kv = &*held.kv;
            match wait_delete(kv, &held.key, held.create_revision, from, Some(&lost)).await {
                Ok(()) => {
                    if lost.is_cancelled() {
                        return;
                    }
                    if let Err(error) = lease_gone(kv, &held.session, held.lease).await {
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
