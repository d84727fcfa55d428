//! A key held through a session (a lock, rwlock or election entry), and releasing it.

use std::sync::Arc;

use distsync_core::{Error, ReleaseFn, Result, Session};

use crate::backend::Shared;
use crate::background::spawn_retrying;
use crate::error::int;
use crate::scripts::SCRIPTS;
use crate::session::RedisLease;

/// One session-held entry key and the value it must hold.
pub(crate) struct Hold {
    shared: Arc<Shared>,
    key: String,
    registry: String,
    value: String,
}

impl Hold {
    pub(crate) fn new(lease: &RedisLease, key: String, value: String) -> Self {
        Self {
            shared: Arc::clone(lease.shared()),
            key,
            registry: lease.registry().to_owned(),
            value,
        }
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    pub(crate) fn value(&self) -> &str {
        &self.value
    }

    /// Releases the entry (one script call: delete it, unlist it from the session,
    /// grant and wake whoever that lets in). `Ok(false)` when it was no longer held.
    pub(crate) async fn release(&self) -> Result<bool> {
        let mut call = self.shared.script(&SCRIPTS.release);
        call.key(&self.key).key(&self.registry).arg(&self.value);
        let reply = self.shared.eval(&call).await?;
        Ok(int("release", &reply)? == 1)
    }

    /// Releases in the background, retrying transient failures while the session
    /// lives: a session that keeps renewing would otherwise keep the entry forever.
    pub(crate) fn release_in_background(self: Arc<Self>, session: &Session) {
        spawn_retrying("release", Some(session.lost_token().clone()), move || {
            let hold = Arc::clone(&self);
            Box::pin(async move { hold.release().await.map(|_| ()) })
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
