//! A key held through a session (a lock, rwlock or election entry), and releasing it.

use distsync_core::raw::SessionStoreSide as _;
use std::sync::Arc;

use distsync_core::{Error, ReleaseFn, Result, Session};

use crate::background::{spawn_retrying, GiveUp};
use crate::error::int;
use crate::scripts::SCRIPTS;
use crate::session::{PendingTake, RedisLease, Registry};
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

    /// Runs `call`, the script that takes the entry, and under Cluster lists the
    /// entry in the store's session registry beside it ([`Registry::register`]). The
    /// take stays pending for the session's renewals until the returned guard is
    /// dropped: keep it until [`Hold::listed`] or [`Hold::unlisted`].
    pub(crate) async fn taking(
        &self,
        call: &crate::call::Call<'_>,
        ttl_ms: u64,
    ) -> Result<(redis::Value, PendingTake)> {
        let pending = self.registry.taking(&self.key);
        let (reply, registered) = tokio::join!(
            self.shared.eval(call),
            self.registry
                .register(&self.shared, &self.key, &self.value, ttl_ms)
        );
        let reply = reply?;
        registered?;
        Ok((reply, pending))
    }

    /// Releases the entry (one script call: delete it, unlist it from the session,
    /// grant and wake whoever that lets in). `Ok(false)` when it was no longer held.
    pub(crate) async fn release(&self) -> Result<bool> {
        self.registry.unlisted(&self.key);
        let mut call = self.shared.script(&SCRIPTS.release);
        call.key(&self.key);
        self.registry.key_into(&mut call);
        call.arg(&self.value);
        let (reply, unregistered) = tokio::join!(
            self.shared.eval(&call),
            self.registry.unregister(&self.shared, &self.key)
        );
        let released = int("release", &reply?)? == 1;
        unregistered?;
        Ok(released)
    }

    /// Releases in the background, retrying transient failures until the release
    /// succeeds or the session ends (a session that keeps renewing would otherwise
    /// keep the entry forever). Should the release fail for good, the session is
    /// ended: `lost()` fires, and the session is revoked (or, if that fails too,
    /// expires, its keepalive stopped), so the store frees the entry.
    pub(crate) fn release_in_background(self: Arc<Self>, session: &Session) {
        let lost = session.lost_token().clone();
        let give_up: GiveUp = {
            let hold = Arc::clone(&self);
            let lost = lost.clone();
            Box::new(move |error| {
                Box::pin(async move {
                    tracing::warn!(
                        key = hold.key(),
                        session = hold.session_id,
                        %error,
                        "a release failed for good; ending the session so that the store frees it"
                    );
                    lost.cancel();
                    let revoked = crate::session::revoke(
                        &hold.shared,
                        hold.session_id,
                        Some(&hold.session_nonce),
                        Some(&hold.registry),
                    )
                    .await;
                    if let Err(error) = revoked {
                        tracing::warn!(
                            session = hold.session_id,
                            %error,
                            "revoking failed; the session expires after its TTL"
                        );
                    }
                })
            })
        };
        spawn_retrying(
            "release",
            Some(lost),
            move || {
                let hold = Arc::clone(&self);
                Box::pin(async move { hold.release().await.map(|_| ()) })
            },
            Some(give_up),
        );
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
