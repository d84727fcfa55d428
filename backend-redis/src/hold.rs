//! A key held through a session (a lock, rwlock or election entry), and releasing it.

use std::future::Future;
use std::sync::Arc;

use distsync_core::raw::{CleanUp, SessionStoreSide as _};
use distsync_core::{Error, ReleaseFn, Result, Session};
use tokio_util::sync::CancellationToken;

use crate::error::int;
use crate::scripts::SCRIPTS;
use crate::session::{revoke, RedisLease, Registry};
use crate::store::Shared;

/// One session-held entry key and the value it must hold.
pub(crate) struct Hold {
    shared: Arc<Shared>,
    key: String,
    registry: Registry,
    value: String,
    /// The session's id and nonce, to end it should a release fail for good.
    session_id: u64,
    session_nonce: String,
}

impl Hold {
    pub(crate) fn new(lease: &RedisLease, key: String, value: String) -> Self {
        Self {
            shared: Arc::clone(lease.shared()),
            key,
            registry: lease.registry().clone(),
            value,
            session_id: lease.id(),
            session_nonce: lease.nonce().to_owned(),
        }
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    pub(crate) fn value(&self) -> &str {
        &self.value
    }

    /// A script's reply said the entry is in the store: the session renews it (under
    /// Cluster, where the client lists what its session holds; see
    /// [`Registry::listed`]).
    pub(crate) fn listed(&self) {
        self.registry.listed(&self.key, &self.value);
    }

    /// A script's reply said the entry is gone (or was never made).
    pub(crate) fn unlisted(&self) {
        self.registry.unlisted(&self.key);
    }

    /// Releases the entry (one script call: delete it, unlist it from the session,
    /// grant and wake whoever that lets in). `Ok(false)` when it was no longer held.
    pub(crate) async fn release(&self) -> Result<bool> {
        let mut call = self.shared.script(&SCRIPTS.release);
        call.key(&self.key);
        self.registry.key_into(&mut call);
        call.arg(&self.value);
        let reply = self
            .registry
            .release(&self.shared, &call, &self.key)
            .await?;
        Ok(int("release", &reply)? == 1)
    }

    /// Releases in the background (a release compares the entry's value, so a retry
    /// after one that landed deletes nothing else), retrying transient failures until
    /// it succeeds or the session ends, which frees the entry. Should it fail for good,
    /// the session is ended ([`end_session_if_refused`]): renewed, it would keep the
    /// entry forever.
    pub(crate) fn release_in_background(self: Arc<Self>, session: &Session) {
        let lost = session.lost_token().clone();
        CleanUp::new("releasing a session's key", "its session's end frees it")
            .of(&self.key)
            .until_lost(lost.clone())
            .spawn(move |clean_up| async move {
                let released = clean_up
                    .retry(|| async { self.release().await.map(drop) })
                    .await;
                end_session_if_refused(released, || {
                    end_session(
                        &self.shared,
                        &lost,
                        self.session_id,
                        &self.session_nonce,
                        &self.registry,
                    )
                })
                .await
            });
    }

    /// The release step of a guard: [`Error::SessionLost`] if the entry was already
    /// gone; on a transient failure, the release goes on in the background and the
    /// error is returned.
    pub(crate) fn release_fn(self: Arc<Self>, session: &Session) -> ReleaseFn {
        let session = session.clone();
        Box::new(move || {
            Box::pin(async move {
                match self.release().await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(Error::SessionLost),
                    Err(error) => {
                        if error.is_transient() {
                            self.release_in_background(&session);
                        }
                        Err(error)
                    }
                }
            })
        })
    }
}

/// Releases a hold when dropped while armed: the clean-up of a cancelled acquisition,
/// so that a dropped `lock()`/`read()`/`write()`/`campaign()` future neither stays in
/// line nor keeps what the store may have granted it meanwhile.
pub(crate) struct Cleanup {
    armed: Option<(Arc<Hold>, Session)>,
}

impl Cleanup {
    pub(crate) fn arm(hold: &Arc<Hold>, session: &Session) -> Self {
        Self {
            armed: Some((Arc::clone(hold), session.clone())),
        }
    }

    pub(crate) fn disarm(&mut self) {
        self.armed = None;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some((hold, session)) = self.armed.take() {
            tracing::debug!(key = hold.key(), "acquisition cancelled; withdrawing");
            hold.release_in_background(&session);
        }
    }
}

/// `released`, how a release retried in the background ended; should it have failed
/// for good (an answer retrying cannot change, such as a refusal by the server's ACLs,
/// rather than a transient failure or the end of the session), `end_session` runs
/// first, so that the store frees what the session holds rather than its renewals
/// keeping it. Returns `released`, for the clean-up to log.
pub(crate) async fn end_session_if_refused<F, Fut>(
    released: Result<()>,
    end_session: F,
) -> Result<()>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    if let Err(error) = &released {
        if !error.is_transient() && !matches!(error, Error::SessionLost) {
            end_session().await;
        }
    }
    released
}

/// Ends session `id` after a release in it failed for good: `lost` fires, stopping its
/// keepalive, and the session is revoked (`nonce` and `registry` as [`revoke`] takes
/// them), which frees what it holds; should that fail too, the unrenewed session
/// expires after its TTL.
pub(crate) async fn end_session(
    shared: &Shared,
    lost: &CancellationToken,
    id: u64,
    nonce: &str,
    registry: &Registry,
) {
    tracing::warn!(
        session = id,
        "a release failed for good; ending its session"
    );
    lost.cancel();
    if let Err(error) = revoke(shared, id, Some(nonce), Some(registry)).await {
        tracing::warn!(session = id, %error, "revoking failed; the session expires after its TTL");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use distsync_core::{Error, Result};

    use super::end_session_if_refused;

    /// How many times `released` ended the session, and what it returned.
    async fn ended(released: Result<()>) -> (u32, Result<()>) {
        let ends = AtomicU32::new(0);
        let returned = end_session_if_refused(released, || async {
            ends.fetch_add(1, Ordering::SeqCst);
        })
        .await;
        (ends.load(Ordering::SeqCst), returned)
    }

    #[tokio::test]
    async fn a_refused_release_ends_its_session_once_and_is_returned() {
        let refused = Error::backend("redis", "NOPERM this user has no permissions");
        let (ends, returned) = ended(Err(refused)).await;
        assert_eq!(ends, 1);
        assert!(
            matches!(returned, Err(Error::Backend { .. })),
            "{returned:?}"
        );
    }

    #[tokio::test]
    async fn a_release_that_may_yet_succeed_leaves_the_session_alone() {
        for released in [
            Ok(()),
            Err(Error::connection("redis", "down")),
            Err(Error::SessionLost),
        ] {
            let (ends, _) = ended(released).await;
            assert_eq!(ends, 0);
        }
    }
}
