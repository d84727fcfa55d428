//! The store's side of sessions and guards: what only a backend does with them.
//!
//! A user who could cancel a session's lost token, declare it lost, or make a guard
//! with any key and token could forge a loss or a hold. These operations therefore
//! live here, as extension traits and constructors a backend imports from `raw`,
//! and not as methods of [`Session`] and the guards.
//!
//! Without `raw`, a session cannot be declared lost nor a guard made:
//!
//! ```compile_fail
//! fn forge(session: &distsync::Session) {
//!     session.mark_lost();
//! }
//! ```
//!
//! ```compile_fail
//! fn forge(session: &distsync::Session, release: distsync::store::raw::ReleaseFn) {
//!     let token = distsync::FencingToken(1);
//!     let _ = distsync::LockGuard::new("k".into(), token, session, release);
//! }
//! ```
//!
//! A backend imports them:
//!
//! ```
//! use distsync::store::raw::{lock_guard, ReleaseFn, SessionStoreSide};
//! fn grant(session: &distsync::Session, release: ReleaseFn) -> distsync::LockGuard {
//!     if session.lost_token().is_cancelled() {
//!         session.mark_lost();
//!     }
//!     lock_guard("k".into(), distsync::FencingToken(1), session, release)
//! }
//! ```

use std::future::Future;
use std::sync::Arc;

use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::election::{Leadership, Proclaim};
use crate::error::Result;
use crate::guard::{
    GuardedWrite, LockGuard, LossWatchFn, ReadGuard, ReleaseFn, ReleaseRequestWatchFn,
};
use crate::semaphore::Permit;
use crate::session::{Lease, Session, SessionId, SessionOptions};
use crate::token::FencingToken;

/// What a backend does with a session it granted.
pub trait SessionStoreSide {
    /// The token behind [`Session::lost`]; a backend derives per-guard tokens from it.
    fn lost_token(&self) -> &CancellationToken;

    /// Declares the session lost, for a backend that learns it other than by a renewal
    /// (a dropped dedicated connection). Stops the keepalive.
    fn mark_lost(&self);

    /// The backend's lease behind this session, if it is of type `T`.
    fn lease<T: 'static>(&self) -> Option<&T>;

    /// Like [`SessionStoreSide::lease`], with a typed error naming `backend` when the
    /// session was granted by another backend.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] for a session of another backend.
    fn lease_for<T: 'static>(&self, backend: &'static str) -> Result<&T>;

    /// Like [`SessionStoreSide::lease_for`], and only when `granted_here` recognises the
    /// lease as the asking backend's own: its store (a lease id names a lease in one
    /// store only) or its instance (where the backend keeps its sessions' state in
    /// process). A backend takes a session's lease through this, so that a session of
    /// another backend of the same kind is refused rather than tied to a lease id that
    /// may name somebody else's lease in this store.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] for a session of another backend, of this kind
    /// or another.
    fn lease_granted_here<T: 'static>(
        &self,
        backend: &'static str,
        granted_here: impl FnOnce(&T) -> bool,
    ) -> Result<&T>;

    /// Serialises, within this process, the holders of one resource that share this
    /// session: for a backend whose store key is per session (etcd's mutex and
    /// election keys are `<name>/<lease id>`), two tasks locking one name through one
    /// session take turns here before they reach the store.
    ///
    /// # Cancel safety
    /// Cancel-safe: a dropped wait holds nothing.
    fn exclusive(&self, resource: &str) -> impl Future<Output = OwnedMutexGuard<()>> + Send;
}

/// Starts a session over a lease the backend has just granted, and spawns its
/// keepalive task.
///
/// `grant_sent` is the instant *before* the grant request was sent: the lease is
/// known valid until `grant_sent + ttl − margin`. The keepalive renews every
/// `ttl / 3` (counted from each renewal's send time); `lost()` fires when a renewal
/// answers [`KeepAlive::Gone`](crate::session::KeepAlive::Gone), or at the client-side deadline, whichever is first.
/// Must be called within a tokio runtime.
pub fn start_session(
    backend: &'static str,
    id: SessionId,
    options: &SessionOptions,
    grant_sent: Instant,
    lease: Arc<dyn Lease>,
) -> Session {
    Session::start(backend, id, options, grant_sent, lease)
}

/// `guard`, whose [`LockGuard::put_if_held`] writes through `guarded` (the store's
/// check that the hold is still this guard's, in the same atomic step as the write).
pub fn with_guarded_write(guard: LockGuard, guarded: Arc<dyn GuardedWrite>) -> LockGuard {
    guard.with_guarded_write(guarded)
}

/// `guard`, whose [`LockGuard::release_requested`] learns of release requests through
/// `watch`: for a backend with a native protocol (ZooKeeper: Curator's `__REVOKE__`).
pub fn with_release_request_watch(guard: LockGuard, watch: ReleaseRequestWatchFn) -> LockGuard {
    guard.with_release_request_watch(watch)
}

/// What a backend does with a guard or a leadership it made.
pub trait GuardStoreSide: Sized {
    /// The token behind the guard's `lost()`, for a backend that detects a lost hold
    /// itself. Unlike `lost()`, it does not start the backend's loss watch.
    fn lost_token(&self) -> &CancellationToken;

    /// Keeps an in-process gate (see [`SessionStoreSide::exclusive`]) until the hold
    /// is released.
    #[must_use]
    fn with_gate(self, gate: OwnedMutexGuard<()>) -> Self;

    /// Detects a hold taken away in the store with `watch`, started only when the
    /// guard's `lost()`, `is_lost()` or `while_held()` is first used.
    #[must_use]
    fn with_loss_watch(self, watch: LossWatchFn) -> Self;
}

macro_rules! guard_store_side {
    ($guard:ty) => {
        impl GuardStoreSide for $guard {
            fn lost_token(&self) -> &CancellationToken {
                self.store_lost_token()
            }

            fn with_gate(self, gate: OwnedMutexGuard<()>) -> Self {
                self.store_with_gate(gate)
            }

            fn with_loss_watch(self, watch: LossWatchFn) -> Self {
                self.store_with_loss_watch(watch)
            }
        }
    };
}

guard_store_side!(LockGuard);
guard_store_side!(ReadGuard);
guard_store_side!(Leadership);
guard_store_side!(Permit);

/// A lock guard over the store key `key`, granted with `token` through `session`,
/// released by `release` (on `unlock()` or drop).
pub fn lock_guard(
    key: String,
    token: FencingToken,
    session: &Session,
    release: ReleaseFn,
) -> LockGuard {
    LockGuard::new(key, token, session, release)
}

/// A semaphore's permit: the hold `guard` (made with [`lock_guard`], with its gate,
/// loss watch and guarded write), under the name the semaphore's methods return.
pub fn permit(guard: LockGuard) -> Permit {
    Permit::new(guard)
}

/// A read guard over the store key `key`, held through `session`, released by
/// `release`.
pub fn read_guard(key: String, session: &Session, release: ReleaseFn) -> ReadGuard {
    ReadGuard::new(key, session, release)
}

/// Leadership over the store key `key` in `term`, held through `session`; `proclaim`
/// changes its value and `resign` ends it.
pub fn leadership(
    key: String,
    term: FencingToken,
    session: &Session,
    proclaim: Arc<dyn Proclaim>,
    resign: ReleaseFn,
) -> Leadership {
    Leadership::new(key, term, session, proclaim, resign)
}
