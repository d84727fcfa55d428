//! Sessions: liveness leases kept alive in the background.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::OwnedMutexGuard;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::error::{Error, Result};

/// The default session TTL: 60 s, as etcd's `concurrency.NewSession`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// How a session is opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionOptions {
    /// How long the store keeps the session after the last renewal. Renewals are sent
    /// every `ttl / 3`. Must be at least the backend's
    /// [`Capabilities::min_session_ttl`](crate::Capabilities::min_session_ttl).
    pub ttl: Duration,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self { ttl: DEFAULT_TTL }
    }
}

impl SessionOptions {
    /// Options with the given TTL.
    pub fn with_ttl(ttl: Duration) -> Self {
        Self { ttl }
    }
}

/// A session's identity in its store (etcd: the lease id).
///
/// Displayed in lowercase hexadecimal, as etcd's Go client writes lease ids into keys.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// The answer to one renewal of a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepAlive {
    /// The lease was renewed for another TTL.
    Renewed,
    /// The store no longer knows the lease: it expired or was revoked.
    Gone,
}

/// A backend's side of a session: renewing and revoking its lease.
///
/// Backends implement this; users only meet [`Session`].
#[async_trait]
pub trait Lease: Send + Sync + 'static {
    /// Renews the lease once.
    async fn keep_alive(&self) -> Result<KeepAlive>;
    /// Ends the lease in the store, releasing everything held through it.
    async fn revoke(&self) -> Result<()>;
    /// The concrete lease, for the backend to downcast.
    fn as_any(&self) -> &dyn Any;
}

/// A liveness lease with a TTL, kept alive in the background every TTL/3.
///
/// Locks, election candidacies, read/write locks and double-barrier entries are held
/// through a session: when it ends (closed, revoked, expired, connection lost) the store
/// releases all of them without the client's help. [`Session::lost`] resolves when the
/// lease is known to be gone. The keepalive stops when the last clone of the session
/// (guards hold clones) is dropped; the lease is then revoked in the background if a
/// tokio runtime is present, and expires after its TTL otherwise.
///
/// A session is cheap to clone; clones share one lease.
#[derive(Clone)]
pub struct Session {
    inner: Arc<SessionInner>,
}

struct SessionInner {
    backend: &'static str,
    id: SessionId,
    ttl: Duration,
    lease: Arc<dyn Lease>,
    lost: CancellationToken,
    closed: AtomicBool,
    keepalive: Mutex<Option<AbortHandle>>,
    gates: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("backend", &self.inner.backend)
            .field("id", &self.inner.id)
            .field("ttl", &self.inner.ttl)
            .field("lost", &self.is_lost())
            .finish()
    }
}

impl Session {
    /// Starts a session over a lease the backend has just granted, and spawns its
    /// keepalive task. For backend implementors.
    ///
    /// The keepalive renews every `ttl / 3`. `lost()` fires when a renewal answers
    /// [`KeepAlive::Gone`], or when renewals keep failing until `ttl` has passed since
    /// the last success. Must be called within a tokio runtime.
    pub fn start(
        backend: &'static str,
        id: SessionId,
        ttl: Duration,
        lease: Arc<dyn Lease>,
    ) -> Self {
        let lost = CancellationToken::new();
        let task = tokio::spawn(keepalive_loop(
            backend,
            id,
            Arc::clone(&lease),
            ttl,
            lost.clone(),
        ));
        Self {
            inner: Arc::new(SessionInner {
                backend,
                id,
                ttl,
                lease,
                lost,
                closed: AtomicBool::new(false),
                keepalive: Mutex::new(Some(task.abort_handle())),
                gates: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The session's id in its store.
    pub fn id(&self) -> SessionId {
        self.inner.id
    }

    /// The session's TTL.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// The backend that granted the session.
    pub fn backend(&self) -> &'static str {
        self.inner.backend
    }

    /// Resolves once the session is known to be gone (closed, revoked, expired, or its
    /// connection lost). Everything held through it is then released by the store.
    ///
    /// The future owns what it needs (`'static`), so it can be moved into a task or a
    /// `select!`. Cancel-safe.
    pub fn lost(&self) -> WaitForCancellationFutureOwned {
        self.inner.lost.clone().cancelled_owned()
    }

    /// Whether [`Session::lost`] has fired.
    pub fn is_lost(&self) -> bool {
        self.inner.lost.is_cancelled()
    }

    /// The token behind [`Session::lost`]; backends derive per-guard tokens from it.
    pub fn lost_token(&self) -> &CancellationToken {
        &self.inner.lost
    }

    /// Declares the session lost (for backends that learn it other than by a
    /// renewal, e.g. a dropped dedicated connection). Stops the keepalive.
    pub fn mark_lost(&self) {
        self.stop_keepalive();
        if !self.inner.closed.load(Ordering::SeqCst) {
            count_lost(self.inner.backend, self.inner.id, &self.inner.lost);
        }
        self.inner.lost.cancel();
    }

    /// Revokes the lease now, releasing everything held through the session, and fires
    /// `lost()`. Closing twice is harmless.
    ///
    /// Cancel-safety: if the future is dropped, `lost()` has fired but the revoke may
    /// not have reached the store; the lease then expires after its TTL.
    ///
    /// # Errors
    /// The store's error if the revoke could not be sent; the lease then expires.
    pub async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.stop_keepalive();
        self.inner.lost.cancel();
        self.inner.lease.revoke().await
    }

    /// The backend's lease behind this session, if it is of type `T`.
    pub fn lease<T: 'static>(&self) -> Option<&T> {
        self.inner.lease.as_any().downcast_ref::<T>()
    }

    /// Like [`Session::lease`], with a typed error naming `backend` when the session
    /// was granted by another backend.
    pub fn lease_for<T: 'static>(&self, backend: &'static str) -> Result<&T> {
        self.lease::<T>().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "session {} was granted by the {} backend, not by {backend}",
                self.inner.id, self.inner.backend
            ))
        })
    }

    /// Serialises, within this process, the holders of one resource that share this
    /// session. For backends whose store key is per session (etcd's mutex and election
    /// keys are `<name>/<lease id>`): two tasks locking one name through one session
    /// take turns here before they reach the store. Cancel-safe.
    pub async fn exclusive(&self, resource: &str) -> OwnedMutexGuard<()> {
        let gate = {
            let mut gates = self
                .inner
                .gates
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match gates.get(resource).and_then(Weak::upgrade) {
                Some(gate) => gate,
                None => {
                    if gates.len() >= 64 {
                        gates.retain(|_, gate| gate.strong_count() > 0);
                    }
                    let gate = Arc::new(tokio::sync::Mutex::new(()));
                    gates.insert(resource.to_owned(), Arc::downgrade(&gate));
                    gate
                }
            }
        };
        gate.lock_owned().await
    }

    fn stop_keepalive(&self) {
        if let Some(task) = self
            .inner
            .keepalive
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        if let Some(task) = self
            .keepalive
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
        {
            task.abort();
        }
        let was_closed = self.closed.swap(true, Ordering::SeqCst);
        self.lost.cancel();
        if was_closed {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let lease = Arc::clone(&self.lease);
            let id = self.id;
            runtime.spawn(async move {
                if let Err(error) = lease.revoke().await {
                    tracing::debug!(session = %id, %error, "revoking a dropped session failed; it expires after its TTL");
                }
            });
        }
    }
}

/// Counts a session that ends other than by `close()` (once: only while `lost` has not
/// fired yet).
fn count_lost(backend: &'static str, id: SessionId, lost: &CancellationToken) {
    if !lost.is_cancelled() {
        tracing::warn!(backend, session = %id, "distsync.session.lost");
        metrics::counter!("distsync_sessions_lost_total", "backend" => backend).increment(1);
    }
}

async fn keepalive_loop(
    backend: &'static str,
    id: SessionId,
    lease: Arc<dyn Lease>,
    ttl: Duration,
    lost: CancellationToken,
) {
    let interval = ttl / 3;
    let mut last_renewal = Instant::now();
    let mut next = interval;
    loop {
        tokio::select! {
            () = lost.cancelled() => return,
            () = tokio::time::sleep(next) => {}
        }
        let remaining = ttl.saturating_sub(last_renewal.elapsed());
        let outcome = tokio::time::timeout(remaining, lease.keep_alive()).await;
        match outcome {
            Ok(Ok(KeepAlive::Renewed)) => {
                last_renewal = Instant::now();
                next = interval;
            }
            Ok(Ok(KeepAlive::Gone)) => {
                tracing::warn!(backend, session = %id, "session lease is gone");
                count_lost(backend, id, &lost);
                lost.cancel();
                return;
            }
            Ok(Err(error)) if last_renewal.elapsed() < ttl => {
                tracing::warn!(backend, session = %id, %error, "session keepalive failed; retrying");
                next = (interval / 4).max(Duration::from_millis(20));
            }
            Ok(Err(_)) | Err(_) => {
                tracing::warn!(backend, session = %id, ?ttl, "no renewal within the TTL; session lost");
                count_lost(backend, id, &lost);
                lost.cancel();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A lease whose answers the test scripts: the keepalive logic under test is
    /// core's, not a store's.
    struct ScriptedLease {
        renewals: AtomicUsize,
        revokes: AtomicUsize,
        answer: Mutex<Result<KeepAlive, &'static str>>,
    }

    impl ScriptedLease {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                renewals: AtomicUsize::new(0),
                revokes: AtomicUsize::new(0),
                answer: Mutex::new(Ok(KeepAlive::Renewed)),
            })
        }

        fn answer(&self, answer: Result<KeepAlive, &'static str>) {
            *self.answer.lock().unwrap() = answer;
        }
    }

    #[async_trait]
    impl Lease for ScriptedLease {
        async fn keep_alive(&self) -> Result<KeepAlive> {
            self.renewals.fetch_add(1, Ordering::SeqCst);
            let answer = *self.answer.lock().unwrap();
            answer.map_err(|e| Error::connection("test", e))
        }
        async fn revoke(&self) -> Result<()> {
            self.revokes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn as_any(&self) -> &dyn Any {
            self
        }
    }

    fn start(lease: &Arc<ScriptedLease>, ttl: Duration) -> Session {
        Session::start(
            "test",
            SessionId(0xabc),
            ttl,
            Arc::clone(lease) as Arc<dyn Lease>,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn renews_every_third_of_the_ttl() {
        let lease = ScriptedLease::new();
        let session = start(&lease, Duration::from_secs(3));
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert_eq!(lease.renewals.load(Ordering::SeqCst), 3);
        assert!(!session.is_lost());
        assert_eq!(session.id().to_string(), "abc");
    }

    #[tokio::test(start_paused = true)]
    async fn lost_fires_when_the_lease_is_gone() {
        let lease = ScriptedLease::new();
        let session = start(&lease, Duration::from_secs(3));
        lease.answer(Ok(KeepAlive::Gone));
        tokio::time::timeout(Duration::from_millis(1100), session.lost())
            .await
            .expect("lost() within one renewal interval");
        assert!(session.is_lost());
    }

    #[tokio::test(start_paused = true)]
    async fn failing_renewals_end_the_session_after_the_ttl_not_before() {
        let lease = ScriptedLease::new();
        let session = start(&lease, Duration::from_secs(3));
        lease.answer(Err("connection refused"));
        tokio::time::sleep(Duration::from_millis(2900)).await;
        assert!(!session.is_lost(), "lost before the TTL ran out");
        tokio::time::timeout(Duration::from_millis(500), session.lost())
            .await
            .expect("lost() once the TTL ran out without a renewal");
    }

    #[tokio::test(start_paused = true)]
    async fn close_revokes_once_and_fires_lost() {
        let lease = ScriptedLease::new();
        let session = start(&lease, Duration::from_secs(3));
        let clone = session.clone();
        session.close().await.unwrap();
        session.close().await.unwrap();
        assert!(clone.is_lost());
        drop((session, clone));
        tokio::task::yield_now().await;
        assert_eq!(lease.revokes.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_last_handle_revokes_in_the_background() {
        let lease = ScriptedLease::new();
        drop(start(&lease, Duration::from_secs(3)));
        tokio::task::yield_now().await;
        assert_eq!(lease.revokes.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            lease.renewals.load(Ordering::SeqCst),
            0,
            "keepalive stopped"
        );
    }

    #[tokio::test]
    async fn exclusive_serialises_holders_of_one_resource() {
        let lease = ScriptedLease::new();
        let session = start(&lease, Duration::from_secs(3));
        let first = session.exclusive("a").await;
        let _other = session.exclusive("b").await;
        let waiting = tokio::spawn({
            let session = session.clone();
            async move { drop(session.exclusive("a").await) }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("second holder gets the gate")
            .unwrap();
    }

    #[tokio::test]
    async fn lease_for_names_the_other_backend() {
        let lease = ScriptedLease::new();
        let session = start(&lease, Duration::from_secs(3));
        assert!(session.lease::<ScriptedLease>().is_some());
        match session.lease_for::<String>("etcd") {
            Err(Error::InvalidArgument(message)) => assert!(message.contains("test backend")),
            other => panic!("{other:?}"),
        }
    }
}
