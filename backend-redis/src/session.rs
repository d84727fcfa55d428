//! Sessions: a counter-issued id, a key with a PX TTL, and a registry of what the
//! session holds, all renewed by one script call.
//!
//! `{<ns>session:<id>}` exists while the session lives. `{<ns>session:<id>}:held` is a
//! hash from each key held through the session (a lock, rwlock or election entry, a
//! double-barrier participant) to the value it must hold. Every held key carries the
//! session's TTL as its own PX. The keepalive script renews the session key, the
//! registry and every held key in one round trip, and answers
//! [`KeepAlive::Gone`] when the session key is gone or a held key is gone or holds
//! another value, releasing what is left at once. Revoking runs every held key's
//! release (waking the next waiters), deletes the session key and publishes on
//! `<session key>:lost`, which the owner listens to: `lost()` then fires at once
//! rather than at the next renewal.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use distsync_core::{KeepAlive, Lease, Result, Session, SessionId};
use tokio_util::sync::CancellationToken;

use crate::backend::Shared;
use crate::error::{int, unexpected};
use crate::notify::Event;
use crate::scripts::SCRIPTS;
use crate::BACKEND;

/// The Redis side of a [`Session`].
pub(crate) struct RedisLease {
    shared: Arc<Shared>,
    id: u64,
    key: String,
    registry: String,
    ttl: Duration,
    entries: AtomicU64,
}

impl RedisLease {
    /// Opens a session of `ttl` and starts its keepalive.
    pub(crate) async fn open(shared: &Arc<Shared>, ttl: Duration) -> Result<Session> {
        let ttl_ms = millis(ttl);
        let mut call = shared.script(&SCRIPTS.session_open);
        call.key(shared.keys.session_counter())
            .arg(shared.keys.session_prefix())
            .arg(ttl_ms);
        let reply = shared.eval(&call).await?;
        let id = u64::try_from(int("session_open", &reply)?)
            .map_err(|_| unexpected("session_open", &reply))?;
        let lease = Self {
            shared: Arc::clone(shared),
            id,
            key: shared.keys.session(id),
            registry: shared.keys.registry(id),
            ttl,
            entries: AtomicU64::new(0),
        };
        tracing::debug!(session = id, ?ttl, "redis session opened");
        let session = Session::start(BACKEND, SessionId(id), ttl, Arc::new(lease));
        watch_revocation(shared, id, session.lost_token().clone());
        Ok(session)
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The session key.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// The registry of held keys.
    pub(crate) fn registry(&self) -> &str {
        &self.registry
    }

    /// The TTL in milliseconds, the PX of every held key.
    pub(crate) fn ttl_ms(&self) -> u64 {
        millis(self.ttl)
    }

    /// A fresh entry id, unique in the store: `<session id>.<n>`.
    pub(crate) fn next_entry_id(&self) -> String {
        let n = self.entries.fetch_add(1, Ordering::Relaxed);
        format!("{}.{n}", self.id)
    }
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[async_trait]
impl Lease for RedisLease {
    async fn keep_alive(&self) -> Result<KeepAlive> {
        let mut call = self.shared.script(&SCRIPTS.keepalive);
        call.key(&self.key).key(&self.registry).arg(self.ttl_ms());
        let reply = self.shared.eval(&call).await?;
        match int("keepalive", &reply)? {
            1 => Ok(KeepAlive::Renewed),
            0 => Ok(KeepAlive::Gone),
            _ => Err(unexpected("keepalive", &reply)),
        }
    }

    async fn revoke(&self) -> Result<()> {
        revoke(&self.shared, self.id).await
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Fires `lost` as soon as the store revokes session `id` (the revoke script
/// publishes on `<session key>:lost`), rather than at the next renewal. Best effort:
/// should the subscription fail, the keepalive still finds out within TTL/3. The task
/// ends with the session.
fn watch_revocation(shared: &Arc<Shared>, id: u64, lost: CancellationToken) {
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let channel = shared
            .keys
            .channel(&format!("{}:lost", shared.keys.session(id)));
        let subscribed = tokio::select! {
            () = lost.cancelled() => return,
            subscribed = shared.notifier.subscribe(channel) => subscribed,
        };
        let Ok(mut revoked) = subscribed else {
            return;
        };
        loop {
            tokio::select! {
                () = lost.cancelled() => return,
                event = revoked.recv() => match event {
                    Ok(Event::Message(_)) => {
                        tracing::debug!(session = id, "redis session revoked by the store");
                        lost.cancel();
                        return;
                    }
                    Ok(Event::Resync) => {}
                    Err(_) => return,
                },
            }
        }
    });
}

/// Ends session `id` in the store: releases all it holds, deletes its key.
pub(crate) async fn revoke(shared: &Shared, id: u64) -> Result<()> {
    let mut call = shared.script(&SCRIPTS.revoke);
    call.key(shared.keys.session(id))
        .key(shared.keys.registry(id));
    shared.eval(&call).await?;
    tracing::debug!(session = id, "redis session revoked");
    Ok(())
}
