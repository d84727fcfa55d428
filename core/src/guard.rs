//! Guards: what a caller holds while it holds a lock, a read lock or leadership.

use std::fmt;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::raw::CleanUp;
use crate::raw::locked;
use crate::session::{Lost, Session};
use crate::token::FencingToken;

/// A backend's guarded write for a guard: writes an STM key only while the guard's
/// hold is still the store's. For backend implementors (see [`LockGuard::put_if_held`]).
///
/// `Any`, so that a backend's own calls on a hold (a caller's transaction guarded by
/// it) find their store's side of it through [`LockGuard::guarded_write_side`].
#[async_trait::async_trait]
pub trait GuardedWrite: std::any::Any + Send + Sync + 'static {
    /// Writes `value` to the STM key `key` in the same atomic step as checking that
    /// the hold is still held; `Ok(false)` (nothing written) when it is not. What a
    /// backend implements; users call [`LockGuard::put_if_held`].
    async fn put_if_held_bytes(&self, key: &crate::name::Name, value: bytes::Bytes)
    -> Result<bool>;
}

/// The release step a backend hands to a guard: run once, by `unlock()`/`resign()`,
/// or in the background when the guard is dropped.
pub type ReleaseFn = Box<dyn FnOnce() -> BoxFuture<'static, Result<()>> + Send + Sync>;

/// A backend's deferred loss detection for a guard: started, with the guard's lost
/// token, the first time the guard's `lost()`, `is_lost()` or `while_held()` is used
/// (never if none is), so a hold nobody asks about costs no watch on the store. It
/// must cancel the token when the store no longer holds the hold, including when that
/// happened before it was started.
pub type LossWatchFn = Box<dyn FnOnce(CancellationToken) + Send + Sync>;

/// A step run before the release step, and only when the hold is released while not
/// known to be lost (see [`LockGuard`]'s `before_clean_release`): what the lock-delay
/// wrapper uses to record a clean release before the store frees the lock.
pub(crate) type CleanReleaseFn = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send + Sync>;

/// A backend's (or the core's portable) watch for release requests on a lock guard
/// (see [`crate::revocation`]): started the first time the guard's
/// `release_requested()` is used, with the token to cancel when a request for this
/// hold arrives and the guard's own token, cancelled when the hold ends (released,
/// dropped or lost), at which point the watch stops.
pub type ReleaseRequestWatchFn =
    Box<dyn FnOnce(CancellationToken, CancellationToken) + Send + Sync>;

/// A lock guard's release-request state: the requested signal and the watch that
/// cancels it, started on first use.
struct RequestWatch {
    requested: CancellationToken,
    start: std::sync::Mutex<Option<ReleaseRequestWatchFn>>,
}

impl RequestWatch {
    /// The requested token, starting the watch the first time.
    fn requested(&self, ended: &CancellationToken) -> CancellationToken {
        let start = locked(&self.start).take();
        if let Some(start) = start
            && !ended.is_cancelled()
        {
            start(self.requested.clone(), ended.clone());
        }
        self.requested.clone()
    }
}

/// What every guard shares: the store key, the session, the lost signal, the release.
pub(crate) struct Held {
    key: String,
    session: Session,
    lost: CancellationToken,
    release: Option<ReleaseFn>,
    gate: Option<OwnedMutexGuard<()>>,
    /// Started (once) by the first `lost()`/`is_lost()`; see [`LossWatchFn`].
    loss_watch: std::sync::Mutex<Option<LossWatchFn>>,
    /// Run before `release` when the hold ends while not known lost.
    before_clean_release: Option<CleanReleaseFn>,
}

impl Held {
    pub(crate) fn new(key: String, session: &Session, release: ReleaseFn) -> Self {
        Self {
            key,
            lost: session.lost_token().child_token(),
            session: session.clone(),
            release: Some(release),
            gate: None,
            loss_watch: std::sync::Mutex::new(None),
            before_clean_release: None,
        }
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    pub(crate) fn session(&self) -> &Session {
        &self.session
    }

    pub(crate) fn lost(&self) -> Lost {
        self.start_loss_watch();
        Lost::new(&self.lost)
    }

    pub(crate) fn lost_token(&self) -> &CancellationToken {
        &self.lost
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.start_loss_watch();
        self.known_lost()
    }

    /// Whether the hold is known to be lost, without starting the loss watch (for
    /// the guard's own checks: its release, `Debug`, a guarded write the store checks
    /// anyway).
    pub(crate) fn known_lost(&self) -> bool {
        self.lost.is_cancelled() || self.session.is_lost()
    }

    pub(crate) fn set_loss_watch(&mut self, watch: LossWatchFn) {
        *locked(&self.loss_watch) = Some(watch);
    }

    /// Starts the backend's loss detection, the first time only, unless the hold has
    /// already ended.
    fn start_loss_watch(&self) {
        let watch = locked(&self.loss_watch).take();
        if let Some(watch) = watch
            && !self.lost.is_cancelled()
        {
            watch(self.lost.clone());
        }
    }

    pub(crate) fn set_gate(&mut self, gate: OwnedMutexGuard<()>) {
        self.gate = Some(gate);
    }

    /// Calls `observer` with the release's outcome once the release step has run,
    /// whether by `unlock()`/`resign()` or by a drop.
    pub(crate) fn observe_release(
        &mut self,
        observer: impl FnOnce(&Result<()>) + Send + Sync + 'static,
    ) {
        if let Some(release) = self.release.take() {
            self.release = Some(Box::new(move || {
                release()
                    .map(move |result| {
                        observer(&result);
                        result
                    })
                    .boxed()
            }));
        }
    }

    /// Runs `step` before the release step when the hold is released (by `unlock()`
    /// or a drop) while not known to be lost; never when it is.
    pub(crate) fn set_before_clean_release(&mut self, step: CleanReleaseFn) {
        self.before_clean_release = Some(step);
    }

    /// Runs the release step and waits for it; reports `SessionLost` if the hold had
    /// already ended. A caller that stops waiting (a timeout
    /// around `unlock()`) does not stop it: the rest of the release is handed to a
    /// task (when in a tokio runtime), so the hold is released as if the guard had
    /// been dropped, and the in-process gate is let go only once the store has
    /// released it. A release waited for to the end runs inline (no task).
    pub(crate) async fn release(mut self) -> Result<()> {
        let was_lost = self.known_lost();
        let before = self.before_clean_release.take().filter(|_| !was_lost);
        let lost = self.lost.clone();
        let mut pending = self.detachable(before, move || lost.cancel());
        let result = match pending.release.as_mut() {
            Some(release) => release.await,
            None => Ok(()),
        };
        pending.release = None;
        match result {
            Ok(()) if was_lost => Err(Error::SessionLost),
            other => other,
        }
    }

    /// The rest of the release, handed to a [`DetachOnDrop`]: `before` (the
    /// clean-release step), the release step, `then`, and last the in-process gate,
    /// so that the next holder sharing this session reaches the store only after the
    /// release.
    fn detachable(
        &mut self,
        before: Option<CleanReleaseFn>,
        then: impl FnOnce() + Send + 'static,
    ) -> DetachOnDrop {
        let release = self.release.take();
        let gate = self.gate.take();
        DetachOnDrop {
            key: std::mem::take(&mut self.key),
            release: Some(Box::pin(async move {
                if let Some(before) = before {
                    before().await;
                }
                let result = match release {
                    Some(release) => release().await,
                    None => Ok(()),
                };
                then();
                drop(gate);
                result
            })),
        }
    }
}

/// A release in progress whose waiter may go away (or a dropped guard's release, not
/// started): dropped before it finished, it hands the rest of the release to a task
/// of the current runtime; outside a runtime the lease frees the hold.
struct DetachOnDrop {
    key: String,
    release: Option<BoxFuture<'static, Result<()>>>,
}

impl Drop for DetachOnDrop {
    fn drop(&mut self) {
        let Some(release) = self.release.take() else {
            return;
        };
        CleanUp::new("releasing a dropped hold", "the lease frees it")
            .of(std::mem::take(&mut self.key))
            .spawn(|_| release);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Whether the hold ends cleanly is decided before the guard's own signal fires.
        let before = self
            .before_clean_release
            .take()
            .filter(|_| !self.known_lost());
        self.lost.cancel();
        if self.release.is_some() {
            drop(self.detachable(before, || {}));
        }
    }
}

/// The accessors every hold shares, generated over the path (from `self`) to the
/// hold's [`Held`]: `guard_accessors!(held)` in a guard, `guard_accessors!(guard.held)`
/// in a type that wraps a guard.
macro_rules! guard_accessors {
    ($($held:ident).+) => {
        /// Whether the hold is known to be lost, without starting the backend's loss
        /// watch (for checks at the moment of the grant).
        pub(crate) fn known_lost(&self) -> bool {
            self.$($held).+.known_lost()
        }

        /// The store key that represents this hold (etcd: `<ns><name>/<lease hex>`).
        pub fn key(&self) -> &str {
            self.$($held).+.key()
        }

        /// The session this is held through.
        pub fn session(&self) -> &crate::session::Session {
            self.$($held).+.session()
        }

        /// Resolves when this hold is known to be gone: its session was lost (at the
        /// latest at the session's client-side deadline, a margin before the store can
        /// grant the hold to anyone else), or the backend saw the hold taken away.
        ///
        /// For an earlier warning (renewals failing), watch the session's health:
        /// [`Session::health_watch`](crate::Session::health_watch).
        ///
        /// # Cancel safety
        /// Cancel-safe; the future is `'static`.
        pub fn lost(&self) -> $crate::session::Lost {
            self.$($held).+.lost()
        }

        /// Whether the hold is lost: [`Self::lost`] has fired, or the session's
        /// client-side deadline has passed.
        pub fn is_lost(&self) -> bool {
            self.$($held).+.is_lost()
        }

        /// Runs `work` only while this hold lasts: returns its output, or
        /// [`Error::SessionLost`](crate::Error::SessionLost) (dropping `work`
        /// part-way) as soon as the hold is lost. Saves writing the `select!` on
        /// [`Self::lost`] by hand.
        ///
        /// ```
        /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
        /// # use distsync::store::raw::{Backend, Primitives};
        /// # let backend = distsync::store::memory::MemoryBackend::new();
        /// # let session = backend.session(Default::default()).await?;
        /// # let locker = backend.locker(&session, distsync::Name::new("jobs/nightly")?)?;
        /// let guard = locker.lock().await?;
        /// let rows = guard
        ///     .while_held(async {
        ///         // ... the critical section; pass guard.token() to the resource ...
        ///         42
        ///     })
        ///     .await?;
        /// assert_eq!(rows, 42);
        /// guard.unlock().await?;
        /// # Ok(()) }
        /// ```
        ///
        /// # Cancel safety
        /// Cancel-safe as far as this method goes: dropping the returned future drops
        /// `work`; whether that is safe is `work`'s own business.
        ///
        /// # Errors
        /// [`Error::SessionLost`](crate::Error::SessionLost) when the hold is lost first
        /// (or already was).
        pub async fn while_held<F: std::future::Future>(
            &self,
            work: F,
        ) -> $crate::error::Result<F::Output> {
            if self.is_lost() {
                return Err($crate::error::Error::SessionLost);
            }
            let lost = self.lost();
            tokio::select! {
                biased;
                () = lost => Err($crate::error::Error::SessionLost),
                output = work => Ok(output),
            }
        }

        /// The token behind `lost()`, for backends that detect a lost hold themselves.
        /// Unlike `lost()`, it does not start the backend's loss watch: awaiting it
        /// alone learns of a session's end, not of a hold taken away in the store.
        pub(crate) fn store_lost_token(&self) -> &tokio_util::sync::CancellationToken {
            self.$($held).+.lost_token()
        }

        /// Calls `observer` with the outcome of the release, however it happens.
        pub(crate) fn observe_release(
            mut self,
            observer: impl FnOnce(&$crate::error::Result<()>) + Send + Sync + 'static,
        ) -> Self {
            self.$($held).+.observe_release(observer);
            self
        }

        /// Keeps an in-process gate (see [`crate::Session::exclusive`]) until the hold is
        /// released. For backend implementors, through `raw::GuardStoreSide`.
        pub(crate) fn store_with_gate(mut self, gate: tokio::sync::OwnedMutexGuard<()>) -> Self {
            self.$($held).+.set_gate(gate);
            self
        }

        /// Detects a hold taken away in the store with `watch`, started only when the
        /// guard's `lost()`, `is_lost()` or `while_held()` is first used (see
        /// `LossWatchFn`).
        pub(crate) fn store_with_loss_watch(mut self, watch: $crate::guard::LossWatchFn) -> Self {
            self.$($held).+.set_loss_watch(watch);
            self
        }
    };
}

/// A held lock or write lock.
///
/// Dropping the guard without [`LockGuard::unlock`] releases it in the background where
/// a tokio runtime is present, and by lease expiry otherwise.
///
/// # Fencing
/// Holding a guard does not prove the lock is still held: a process paused past its
/// session TTL (GC, SIGSTOP, swap) loses the lock to the next client without noticing.
/// No lock service can prevent that. Pass [`LockGuard::token`] with every write to the
/// protected resource and have the resource refuse tokens lower than the highest it
/// has seen; a stale holder's write is then rejected instead of corrupting data.
///
/// # Stopping in time
/// [`LockGuard::lost`] fires at the latest at the session's client-side deadline, a
/// margin (see [`SessionOptions::margin`](crate::SessionOptions)) before the store
/// could free the lock; stop the work then ([`LockGuard::while_held`] does it for
/// you). To stop taking new work earlier, as soon as renewals start failing, watch
/// [`Session::health_watch`](crate::Session::health_watch).
#[must_use = "the lock is released in the background as soon as the guard is dropped"]
pub struct LockGuard {
    pub(crate) held: Held,
    token: FencingToken,
    guarded: Option<std::sync::Arc<dyn GuardedWrite>>,
    release_request: Option<RequestWatch>,
    /// The store's limit on [`LockGuard::put_if_held`]'s value, where a
    /// [`crate::Coordinator`] handed the guard out (see [`crate::value_size`]).
    value_limit: Option<crate::value_size::ValueLimit>,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("key", &self.key())
            .field("token", &self.token)
            .field("lost", &self.held.known_lost())
            .finish()
    }
}

impl LockGuard {
    /// A guard over `key`, granted with `token`, released by `release`. For backends,
    /// through `raw::lock_guard`.
    pub(crate) fn new(
        key: String,
        token: FencingToken,
        session: &Session,
        release: ReleaseFn,
    ) -> Self {
        Self {
            held: Held::new(key, session, release),
            token,
            guarded: None,
            value_limit: None,
            release_request: None,
        }
    }

    /// Lets [`LockGuard::release_requested`] learn of release requests through
    /// `watch`. For backends with a native protocol (ZooKeeper: Curator's
    /// `__REVOKE__`), and for the core's portable default.
    pub(crate) fn with_release_request_watch(mut self, watch: ReleaseRequestWatchFn) -> Self {
        self.release_request = Some(RequestWatch {
            requested: CancellationToken::new(),
            start: std::sync::Mutex::new(Some(watch)),
        });
        self
    }

    /// Whether a release-request watch is attached (the backend's own, which the
    /// portable default must not replace).
    pub(crate) fn has_release_request_watch(&self) -> bool {
        self.release_request.is_some()
    }

    /// Resolves when someone asked for this lock back
    /// ([`Coordinator::request_release`](crate::Coordinator::request_release),
    /// `distsync revoke NAME`, or Curator's `Revoker.attemptRevoke` on ZooKeeper). It is
    /// a request, not a break: nothing is taken away; the holder decides when to
    /// [`unlock`](Self::unlock). See [`crate::revocation`] for the semantics and how
    /// soon a request is seen.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
    /// let coordinator = distsync::connect("memory://").await?;
    /// let session = coordinator.session().await?;
    /// let guard = coordinator.locker(&session, "jobs/nightly")?.lock().await?;
    /// let requested = guard.release_requested();
    /// assert!(coordinator.request_release("jobs/nightly").await?.is_some());
    /// tokio::select! {
    ///     asked = requested => asked?, // finish up, then let go
    ///     () = std::future::pending::<()>() => {} // ... the work ...
    /// }
    /// guard.unlock().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// The future is `'static` and may be created any number of times: every one
    /// resolves once a request for this hold has arrived (at once if one already has).
    /// It stays pending once the hold ends without a request.
    ///
    /// # Errors
    /// [`Error::Unsupported`] (at once) when the guard has no way to learn of requests:
    /// a guard made by a backend directly rather than through a
    /// [`Coordinator`](crate::Coordinator), or a backend without
    /// [`crate::Capabilities::release_request`].
    ///
    /// # Cancel safety
    /// Cancel-safe: dropping it loses nothing; a request that arrives meanwhile is
    /// kept and resolves the next call.
    pub fn release_requested(
        &self,
    ) -> impl std::future::Future<Output = Result<()>> + Send + 'static {
        let requested = match &self.release_request {
            Some(watch) => Ok(watch.requested(self.held.lost_token())),
            None => Err(Error::unsupported(
                self.session().backend(),
                "release requests on this guard",
            )),
        };
        async move {
            requested?.cancelled_owned().await;
            Ok(())
        }
    }

    /// Whether a release request for this hold has arrived (starting the watch, as
    /// [`Self::release_requested`] does, when it is not yet running); `false` on a
    /// guard without a watch.
    pub fn is_release_requested(&self) -> bool {
        self.release_request
            .as_ref()
            .is_some_and(|watch| watch.requested(self.held.lost_token()).is_cancelled())
    }

    /// Runs `step` before the store releases this lock, when it is released (by
    /// [`Self::unlock`] or a drop) while not known to be lost. For the lock-delay
    /// wrapper ([`crate::lock_delay`]).
    pub(crate) fn before_clean_release(mut self, step: CleanReleaseFn) -> Self {
        self.held.set_before_clean_release(step);
        self
    }

    /// The backend's guarded write of this guard, if it has one, for a backend's own
    /// calls on the hold (downcast to its type through `&dyn Any`). For backend
    /// implementors.
    #[doc(hidden)]
    pub fn guarded_write_side(&self) -> Option<&dyn GuardedWrite> {
        self.guarded.as_deref()
    }

    /// This guard, its [`LockGuard::put_if_held`] refusing a value above `limit`.
    pub(crate) fn with_value_limit(mut self, limit: crate::value_size::ValueLimit) -> Self {
        self.value_limit = Some(limit);
        self
    }

    /// Lets [`LockGuard::put_if_held`] write through `guarded`. For backends.
    pub(crate) fn with_guarded_write(mut self, guarded: std::sync::Arc<dyn GuardedWrite>) -> Self {
        self.guarded = Some(guarded);
        self
    }

    /// Writes `value` to the STM key `key` (readable with [`crate::Stm`]) only while
    /// this guard still holds the lock, checked by the store in the same atomic step as
    /// the write (etcd: a transaction comparing the lock key's create revision, as Go's
    /// `Mutex.IsOwner()`). A holder that lost the lock, even one that does not know it
    /// yet (paused past its lease), writes nothing.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
    /// let coordinator = distsync::connect("memory://").await?;
    /// let session = coordinator.session().await?;
    /// let guard = coordinator.locker(&session, "jobs/nightly")?.lock().await?;
    /// guard.put_if_held("jobs/nightly/state", "running").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::NotHeld`] when the lock is no longer this guard's (nothing written);
    /// [`Error::InvalidName`] for a bad key; [`Error::TooLarge`] for a value above the
    /// store's [`max_value_size`](crate::Capabilities::max_value_size) (nothing sent);
    /// [`Error::Unsupported`] on a backend without guarded writes
    /// ([`crate::Capabilities::guarded_writes`]); the store's error.
    ///
    /// # Cancel safety
    /// One atomic write: dropped part-way, it happened or it did not.
    pub async fn put_if_held(
        &self,
        key: &str,
        value: impl Into<bytes::Bytes> + Send,
    ) -> Result<()> {
        let key = crate::name::Name::new(key)?;
        let value = value.into();
        crate::value_size::check(self.value_limit, "guarded write", value.len())?;
        let Some(guarded) = &self.guarded else {
            return Err(Error::unsupported(
                self.session().backend(),
                "guarded writes",
            ));
        };
        if self.held.known_lost() {
            return Err(Error::NotHeld);
        }
        if guarded.put_if_held_bytes(&key, value).await? {
            Ok(())
        } else {
            Err(Error::NotHeld)
        }
    }

    /// The fencing token of this grant; strictly greater than every earlier grant's.
    pub fn token(&self) -> FencingToken {
        self.token
    }

    guard_accessors!(held);

    /// Releases the lock and waits until the store has released it.
    ///
    /// # Errors
    /// [`Error::SessionLost`] if the lock had already been lost (the critical section
    /// may not have been exclusive), or the store's error.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future part-way does not stop the release: it goes on in the
    /// background, as when the guard is dropped.
    pub async fn unlock(self) -> Result<()> {
        self.held.release().await
    }
}

/// A held read lock (shared with other readers; no fencing token, since readers do not
/// write).
///
/// Dropping the guard releases it in the background, as [`LockGuard`].
#[must_use = "the read lock is released in the background as soon as the guard is dropped"]
pub struct ReadGuard {
    held: Held,
}

impl fmt::Debug for ReadGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadGuard")
            .field("key", &self.key())
            .field("lost", &self.held.known_lost())
            .finish()
    }
}

impl ReadGuard {
    /// A read guard over `key`, released by `release`. For backends, through
    /// `raw::read_guard`.
    pub(crate) fn new(key: String, session: &Session, release: ReleaseFn) -> Self {
        Self {
            held: Held::new(key, session, release),
        }
    }

    guard_accessors!(held);

    /// Releases the read lock.
    ///
    /// # Errors
    /// As [`LockGuard::unlock`].
    ///
    /// # Cancel safety
    ///
    /// As [`LockGuard::unlock`].
    pub async fn unlock(self) -> Result<()> {
        self.held.release().await
    }
}

pub(crate) use guard_accessors;
