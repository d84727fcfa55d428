//! Sessions: liveness leases kept alive in the background, with a conservative
//! client-side deadline.
//!
//! # The client-side deadline
//!
//! A session's lease is known valid only until
//! `send time of the last acknowledged renewal (or of the grant) + ttl − margin`.
//! The store's own expiry is at least the *arrival* time of that renewal plus the TTL,
//! which is never earlier than its send time plus the TTL; so a holder whose `lost()`
//! fires at the client-side deadline learns of the loss at least `margin` before the
//! store can free what it holds and grant it to anyone else, however the network
//! behaves (a silent partition, a reset connection, a paused server). Every sleep and
//! retry of the keepalive is capped by that instant. After a loss the session is
//! revoked in the background on a best-effort basis, so that a renewal which was sent
//! before the deadline but lands after it keeps nothing alive.
//!
//! Between the first failed renewal and the deadline the session reports
//! [`SessionHealth::Failing`]: an early warning on which a holder can stop taking new
//! work (see [`Session::health_watch`]).
//!
//! # Choosing a TTL
//!
//! A session of TTL `t` renews every `t / 3` and, with the default margin (`t / 5`),
//! declares itself lost `4t / 5` after the send time of its last acknowledged
//! renewal. So:
//!
//! - a crashed or killed holder blocks the next one for at most `t` (the store expires
//!   its lease);
//! - a store or network outage shorter than `4t/5 − t/3 = 7t/15` never costs the
//!   session, one longer than `4t / 5` always does (`lost()` fires, safely, before the
//!   store can grant the hold to anyone else);
//! - a process paused (GC, `SIGSTOP`, a VM migration) for longer than about `7t / 15`
//!   may wake up to a lost session, and past `t` its hold may already be someone
//!   else's: only fencing tokens protect the resource then.
//!
//! A short TTL means fast failover and more false losses under pauses and partitions;
//! a long one, the reverse. The default, [`DEFAULT_TTL`], is 15 s (renewals every 5 s,
//! margin 3 s, outages under 7 s ridden out), as client-go's leader election and
//! Consul; etcd's Go `concurrency.NewSession` uses 60 s. A renewal is one request,
//! bounded by the URL's `timeout=` (10 s by default): a renewal stuck on a connection
//! that died silently is given up only then, so keep `timeout=` below `7t / 15` where
//! such a connection should not cost the session.
//!
//! | use case | TTL | why |
//! |---|---|---|
//! | leader of a scheduler | 15 s (the default) | a successor takes over within 15 s of a crash; outages under 7 s ridden out; a lost term is campaigned again ([`Coordinator::lead`](crate::Coordinator::lead)) |
//! | a lock around a short job (seconds) | 10 s | waiters stall at most 10 s behind a crashed holder; renewals every 3.3 s, margin 2 s, outages under 4.6 s ridden out; a false loss costs one job's retry |
//! | a lock around a long batch (minutes to hours) | 60 s | a false loss throws away the batch's work, a minute's stall after a rare crash costs little beside it; outages under 28 s ridden out, and the 12 s margin leaves time to checkpoint after `lost()` |
//! | a queue consumer's hold (`receive`) | 30 s | a crashed consumer's item is redelivered within 30 s; a false loss redelivers an item still being processed (a duplicate), so lean long; outages under 14 s ridden out |
//! | across a WAN or a flaky network, or a store that fails over (Redis Sentinel, Cluster, a PostgreSQL promotion) | 30–60 s, and above twice the store's detection plus failover time | round trips of hundreds of milliseconds and outages of seconds should not end sessions; Sentinel's own default `down-after-milliseconds` is 30 s |
//!
//! [`SessionOptions::margin`](SessionOptions#structfield.margin) trades the other way:
//! a larger margin gives the holder more time to stop after `lost()`, at the price of
//! a shorter outage ridden out.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{OwnedMutexGuard, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::raw::locked;
use crate::raw::{CleanUp, SessionStoreSide};

mod health;
mod lease;
mod lost;
mod options;

pub use self::health::{HealthWatch, SessionHealth};
pub use self::lease::{KeepAlive, Lease, SessionId};
pub use self::lost::Lost;
pub use self::options::{DEFAULT_MARGIN_DIVISOR, DEFAULT_TTL, SessionOptions};

/// A liveness lease with a TTL, kept alive in the background every TTL/3.
///
/// Locks, election candidacies, read/write locks and double-barrier entries are held
/// through a session: when it ends (closed, revoked, expired, connection lost) the store
/// releases all of them without the client's help. [`Session::lost`] resolves when the
/// lease is known to be gone, and at the latest at the client-side deadline (see the
/// [module docs](self)): a margin before the store could free anything.
/// [`Session::health_watch`] gives the early warning. The keepalive stops when the last
/// clone of the session (guards hold clones) is dropped; the lease is then revoked in
/// the background if a tokio runtime is present, and expires after its TTL otherwise.
///
/// A session is cheap to clone; clones share one lease.
#[derive(Clone)]
#[must_use = "a session ends (and releases everything held through it) when dropped"]
pub struct Session {
    inner: Arc<SessionInner>,
}

struct SessionInner {
    backend: &'static str,
    id: SessionId,
    ttl: Duration,
    lease: Arc<dyn Lease>,
    lost: CancellationToken,
    health: watch::Sender<SessionHealth>,
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
            .field("health", &self.health())
            .finish()
    }
}

impl Session {
    /// Starts a session over a lease the backend has just granted (see
    /// [`crate::raw::start_session`]).
    pub(crate) fn start(
        backend: &'static str,
        id: SessionId,
        options: &SessionOptions,
        grant_sent: Instant,
        lease: Arc<dyn Lease>,
    ) -> Self {
        let ttl = options.ttl;
        let margin = options.effective_margin().min(ttl);
        let lost = CancellationToken::new();
        let valid_until = grant_sent + ttl.saturating_sub(margin);
        let (health, _) = watch::channel(SessionHealth::Healthy {
            valid_until: valid_until.into_std(),
        });
        let inner = Arc::new(SessionInner {
            backend,
            id,
            ttl,
            lease: Arc::clone(&lease),
            lost: lost.clone(),
            health,
            closed: AtomicBool::new(false),
            keepalive: Mutex::new(None),
            gates: Mutex::new(HashMap::new()),
        });
        let task = tokio::spawn(keepalive_loop(
            Arc::downgrade(&inner),
            Renewal {
                backend,
                id,
                lease,
                ttl,
                margin,
                lost,
            },
            grant_sent,
            valid_until,
        ));
        *locked(&inner.keepalive) = Some(task.abort_handle());
        Self { inner }
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

    /// Resolves once the session is known to be gone (closed, revoked, expired, its
    /// connection lost, or its client-side deadline passed without a renewal).
    /// Everything held through it may then be released by the store.
    ///
    /// # Cancel safety
    /// Cancel-safe; the future owns what it needs (`'static`), so it can be moved into a
    /// task or a `select!`.
    pub fn lost(&self) -> Lost {
        Lost::new(&self.inner.lost)
    }

    /// Whether the session is lost: [`Session::lost`] has fired, or the client-side
    /// deadline has passed (even if the keepalive task has not run yet).
    pub fn is_lost(&self) -> bool {
        self.inner.lost.is_cancelled()
            || match self.valid_until() {
                // The deadline was taken on tokio's clock (paused in tests): compare on it.
                Some(until) => Instant::now().into_std() >= until,
                None => true,
            }
    }

    /// The session's health now (see [`SessionHealth`]).
    pub fn health(&self) -> SessionHealth {
        *self.inner.health.borrow()
    }

    /// The client-side deadline: until when the lease is known valid; `None` once lost.
    pub fn valid_until(&self) -> Option<std::time::Instant> {
        self.health().valid_until()
    }

    /// A watch on the session's health: the early warning before `lost()`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
    /// # let backend = distsync::store::memory::MemoryBackend::new();
    /// # use distsync::store::raw::Backend;
    /// let session = backend.session(Default::default()).await?;
    /// let mut health = session.health_watch();
    /// tokio::spawn(async move {
    ///     // Stop taking new work as soon as renewals start failing.
    ///     while !health.changed().await.is_degraded() {}
    ///     // ... drain, then stop before `valid_until` ...
    /// });
    /// # Ok(()) }
    /// ```
    pub fn health_watch(&self) -> HealthWatch {
        HealthWatch {
            receiver: self.inner.health.subscribe(),
        }
    }

    /// The token behind [`Session::lost`]; backends derive per-guard tokens from it
    /// (through `raw::SessionStoreSide`).
    pub(crate) fn lost_token(&self) -> &CancellationToken {
        &self.inner.lost
    }

    /// Revokes the lease now, releasing everything held through the session, and fires
    /// `lost()`. Closing twice is harmless.
    ///
    /// # Cancel safety
    /// If the future is dropped, `lost()` has fired but the revoke may not have reached
    /// the store; the lease then expires after its TTL.
    ///
    /// # Errors
    /// The store's error if the revoke could not be sent; the lease then expires.
    pub async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.inner.end();
        self.inner.lease.revoke().await
    }
}

// Beside the session rather than the trait: it reads the session's private state.
impl SessionStoreSide for Session {
    fn lost_token(&self) -> &CancellationToken {
        Session::lost_token(self)
    }

    fn mark_lost(&self) {
        if !self.inner.closed.load(Ordering::SeqCst) {
            count_lost(self.inner.backend, self.inner.id, &self.inner.lost);
        }
        self.inner.end();
    }

    fn lease<T: 'static>(&self) -> Option<&T> {
        self.inner.lease.as_any().downcast_ref::<T>()
    }

    fn lease_for<T: 'static>(&self, backend: &'static str) -> Result<&T> {
        self.lease::<T>().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "session {} was granted by the {} backend, not by {backend}",
                self.inner.id, self.inner.backend
            ))
        })
    }

    fn lease_granted_here<T: 'static>(
        &self,
        backend: &'static str,
        granted_here: impl FnOnce(&T) -> bool,
    ) -> Result<&T> {
        let lease = self.lease_for::<T>(backend)?;
        if !granted_here(lease) {
            return Err(Error::InvalidArgument(format!(
                "session {} was granted by another {backend} backend",
                self.inner.id
            )));
        }
        Ok(lease)
    }

    async fn exclusive(&self, resource: &str) -> OwnedMutexGuard<()> {
        let gate = {
            let mut gates = locked(&self.inner.gates);
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
}

impl SessionInner {
    /// Stops the keepalive and tells the holders the session has ended.
    fn end(&self) {
        if let Some(task) = locked(&self.keepalive).take() {
            task.abort();
        }
        self.health.send_replace(SessionHealth::Lost);
        self.lost.cancel();
    }
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        let was_closed = self.closed.swap(true, Ordering::SeqCst);
        self.end();
        if was_closed {
            return;
        }
        let lease = Arc::clone(&self.lease);
        CleanUp::new("revoking a dropped session", "it expires after its TTL")
            .spawn(|_| async move { lease.revoke().await });
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

/// What the keepalive task renews, and how.
struct Renewal {
    backend: &'static str,
    id: SessionId,
    lease: Arc<dyn Lease>,
    ttl: Duration,
    margin: Duration,
    lost: CancellationToken,
}

/// The shortest pause between two failed renewals.
const MIN_RETRY: Duration = Duration::from_millis(20);

/// How long after a loss the background revoke keeps trying: by then the store has
/// expired the lease by itself, unless a late renewal landed, which the store bounds by
/// one more TTL.
const REVOKE_RETRY_TTLS: u32 = 3;

async fn keepalive_loop(
    session: Weak<SessionInner>,
    renewal: Renewal,
    grant_sent: Instant,
    mut valid_until: Instant,
) {
    let Renewal {
        backend,
        id,
        ref lease,
        ttl,
        margin,
        ref lost,
    } = renewal;
    let interval = ttl / 3;
    let retry = (interval / 4).max(MIN_RETRY);
    let mut next_at = grant_sent + interval;
    let mut failing_since: Option<Instant> = None;
    let set_health = |health: SessionHealth| {
        if let Some(session) = session.upgrade() {
            session.health.send_replace(health);
        }
    };
    let failing = |since: Instant, valid_until: Instant| SessionHealth::Failing {
        since: since.into_std(),
        valid_until: valid_until.into_std(),
    };
    'renewing: loop {
        tokio::select! {
            biased;
            () = lost.cancelled() => return,
            () = tokio::time::sleep_until(valid_until) => break,
            () = tokio::time::sleep_until(next_at.min(valid_until)) => {}
        }
        let sent = Instant::now();
        let renewal = lease.keep_alive();
        tokio::pin!(renewal);
        // A renewal that has not answered after `retry` is reported as failing (a
        // silent store looks like this), while it may still answer in time.
        let mut overdue = false;
        let outcome = loop {
            tokio::select! {
                biased;
                () = lost.cancelled() => return,
                () = tokio::time::sleep_until(valid_until) => break 'renewing,
                outcome = &mut renewal => break outcome,
                () = tokio::time::sleep_until(sent + retry), if !overdue => {
                    overdue = true;
                    let since = *failing_since.get_or_insert(sent);
                    tracing::warn!(backend, session = %id, "session renewal unanswered; still trying");
                    set_health(failing(since, valid_until));
                }
            }
        };
        match outcome {
            Ok(renewed @ (KeepAlive::Renewed | KeepAlive::RenewedSince(_))) => {
                let counted = match renewed {
                    KeepAlive::RenewedSince(since) => sent.min(Instant::from_std(since)),
                    _ => sent,
                };
                valid_until = valid_until.max(counted + ttl.saturating_sub(margin));
                failing_since = None;
                next_at = sent + interval;
                set_health(SessionHealth::Healthy {
                    valid_until: valid_until.into_std(),
                });
            }
            Ok(KeepAlive::Gone) => {
                tracing::warn!(backend, session = %id, "session lease is gone");
                count_lost(backend, id, lost);
                set_health(SessionHealth::Lost);
                lost.cancel();
                return;
            }
            Err(error) => {
                metrics::counter!("distsync_session_renewal_failures_total", "backend" => backend)
                    .increment(1);
                let since = *failing_since.get_or_insert(sent);
                tracing::warn!(
                    backend,
                    session = %id,
                    %error,
                    remaining = ?valid_until.saturating_duration_since(Instant::now()),
                    "session keepalive failed; retrying",
                );
                next_at = Instant::now() + retry;
                set_health(failing(since, valid_until));
            }
        }
    }
    tracing::warn!(
        backend,
        session = %id,
        ?ttl,
        ?margin,
        "no renewal acknowledged before the client-side deadline; session lost",
    );
    count_lost(backend, id, lost);
    set_health(SessionHealth::Lost);
    lost.cancel();
    revoke_after_loss(backend, id, lease, ttl * REVOKE_RETRY_TTLS).await;
}

/// Revokes a lost session in the background, retrying with backoff for `for_at_most`,
/// so that a renewal which was sent before the deadline and lands after it keeps
/// nothing alive.
async fn revoke_after_loss(
    backend: &'static str,
    id: SessionId,
    lease: &Arc<dyn Lease>,
    for_at_most: Duration,
) {
    let give_up = Instant::now() + for_at_most;
    let mut pause = MIN_RETRY;
    loop {
        match tokio::time::timeout_at(give_up, lease.revoke()).await {
            Ok(Ok(())) => return,
            Ok(Err(error)) => {
                tracing::debug!(backend, session = %id, %error, "revoking a lost session failed; retrying");
            }
            Err(_) => break,
        }
        if Instant::now() + pause >= give_up {
            break;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
    tracing::debug!(backend, session = %id, "gave up revoking a lost session; the store expires it");
}

#[cfg(test)]
mod tests {
    use std::any::Any;

    use async_trait::async_trait;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A lease whose answers the test scripts: the keepalive logic under test is
    /// core's, not a store's.
    struct ScriptedLease {
        renewals: AtomicUsize,
        revokes: AtomicUsize,
        answer: Mutex<Result<KeepAlive, &'static str>>,
        /// How long each renewal takes to answer; `None` never answers (a silent
        /// partition).
        delay: Mutex<Option<Duration>>,
    }

    impl ScriptedLease {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                renewals: AtomicUsize::new(0),
                revokes: AtomicUsize::new(0),
                answer: Mutex::new(Ok(KeepAlive::Renewed)),
                delay: Mutex::new(Some(Duration::ZERO)),
            })
        }

        fn answer(&self, answer: Result<KeepAlive, &'static str>) {
            *self.answer.lock().unwrap() = answer;
        }

        fn delay(&self, delay: Option<Duration>) {
            *self.delay.lock().unwrap() = delay;
        }
    }

    #[async_trait]
    impl Lease for ScriptedLease {
        async fn keep_alive(&self) -> Result<KeepAlive> {
            self.renewals.fetch_add(1, Ordering::SeqCst);
            let delay = *self.delay.lock().unwrap();
            match delay {
                Some(delay) => tokio::time::sleep(delay).await,
                None => std::future::pending::<()>().await,
            }
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
        start_with(lease, &SessionOptions::with_ttl(ttl))
    }

    fn start_with(lease: &Arc<ScriptedLease>, options: &SessionOptions) -> Session {
        Session::start(
            "test",
            SessionId(0xabc),
            options,
            Instant::now(),
            Arc::clone(lease) as Arc<dyn Lease>,
        )
    }

    /// Waits (on paused time) until `session` is lost and returns how long that took
    /// from `from`.
    async fn lost_after(session: &Session, from: Instant) -> Duration {
        tokio::time::timeout(Duration::from_secs(600), session.lost())
            .await
            .expect("lost() fires");
        from.elapsed()
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
    async fn failing_renewals_end_the_session_at_ttl_minus_margin_exactly() {
        let lease = ScriptedLease::new();
        let start_at = Instant::now();
        let session = start(&lease, Duration::from_secs(3));
        lease.answer(Err("connection refused"));
        // Default margin: ttl / 5 = 600 ms; the grant was sent at start_at.
        assert_eq!(
            lost_after(&session, start_at).await,
            Duration::from_millis(2400)
        );
        assert!(
            lease.renewals.load(Ordering::SeqCst) > 2,
            "failed renewals are retried"
        );
        assert_eq!(session.health(), SessionHealth::Lost);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_store_ends_the_session_at_the_deadline_not_at_a_timeout() {
        let lease = ScriptedLease::new();
        let start_at = Instant::now();
        let options =
            SessionOptions::with_ttl(Duration::from_secs(6)).margin(Duration::from_secs(1));
        let session = start_with(&lease, &options);
        lease.delay(None);
        assert_eq!(lost_after(&session, start_at).await, Duration::from_secs(5));
        assert_eq!(lease.renewals.load(Ordering::SeqCst), 1, "one renewal hung");
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_counts_from_the_renewals_send_time_not_its_reply() {
        let lease = ScriptedLease::new();
        let start_at = Instant::now();
        let options =
            SessionOptions::with_ttl(Duration::from_secs(3)).margin(Duration::from_millis(300));
        // The first renewal (sent at 1 s) takes 800 ms to answer: valid until
        // 1 s + 3 s - 0.3 s = 3.7 s, not 1.8 s + 2.7 s = 4.5 s.
        lease.delay(Some(Duration::from_millis(800)));
        let session = start_with(&lease, &options);
        let mut health = session.health_watch();
        assert_eq!(
            health.current().valid_until(),
            Some((start_at + Duration::from_millis(2700)).into_std())
        );
        // Slow (800 ms > a quarter interval): reported failing at 1.25 s, healthy at 1.8 s.
        assert!(matches!(
            health.changed().await,
            SessionHealth::Failing { .. }
        ));
        let renewed = health.changed().await;
        assert_eq!(start_at.elapsed(), Duration::from_millis(1800));
        assert_eq!(
            renewed,
            SessionHealth::Healthy {
                valid_until: (start_at + Duration::from_millis(3700)).into_std()
            }
        );
        // Then the store goes silent: lost at exactly 3.7 s.
        lease.delay(None);
        assert_eq!(
            lost_after(&session, start_at).await,
            Duration::from_millis(3700)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reply_after_the_deadline_does_not_revive_the_session() {
        let lease = ScriptedLease::new();
        let start_at = Instant::now();
        // The renewal sent at 1 s answers at 3 s, after the 2.4 s deadline.
        lease.delay(Some(Duration::from_secs(2)));
        let session = start(&lease, Duration::from_secs(3));
        assert_eq!(
            lost_after(&session, start_at).await,
            Duration::from_millis(2400)
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(session.is_lost());
        assert_eq!(session.health(), SessionHealth::Lost);
    }

    #[tokio::test(start_paused = true)]
    async fn failing_renewals_warn_before_the_loss() {
        let lease = ScriptedLease::new();
        let start_at = Instant::now();
        let session = start(&lease, Duration::from_secs(3));
        lease.answer(Err("connection reset"));
        let mut health = session.health_watch();
        let warning = health.changed().await;
        assert_eq!(
            start_at.elapsed(),
            Duration::from_secs(1),
            "at the first failed renewal"
        );
        match warning {
            SessionHealth::Failing { since, valid_until } => {
                assert_eq!(since, (start_at + Duration::from_secs(1)).into_std());
                assert_eq!(
                    valid_until,
                    (start_at + Duration::from_millis(2400)).into_std()
                );
            }
            other => panic!("expected Failing, got {other:?}"),
        }
        assert!(!session.is_lost());
        // Renewals recover: healthy again.
        lease.answer(Ok(KeepAlive::Renewed));
        loop {
            if let SessionHealth::Healthy { .. } = health.changed().await {
                break;
            }
        }
        assert!(!session.is_lost());
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_counted_from_an_earlier_instant_extends_nothing_past_it() {
        let lease = ScriptedLease::new();
        let start_at = Instant::now();
        // Every renewal covers a hold last renewed at the start (a take in flight).
        lease.answer(Ok(KeepAlive::RenewedSince(start_at.into_std())));
        let session = start(&lease, Duration::from_secs(3));
        session.lost().await;
        assert_eq!(
            start_at.elapsed(),
            Duration::from_millis(2400),
            "lost at the start + TTL - margin, though renewals answered at 1 s and 2 s"
        );
        assert!(lease.renewals.load(Ordering::SeqCst) >= 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_renewal_warns_after_a_quarter_interval() {
        let lease = ScriptedLease::new();
        let start_at = Instant::now();
        let session = start(&lease, Duration::from_secs(3));
        lease.delay(None);
        let mut health = session.health_watch();
        let warning = health.changed().await;
        assert_eq!(start_at.elapsed(), Duration::from_millis(1250));
        assert!(
            matches!(
                warning,
                SessionHealth::Failing { since, .. }
                    if since == (start_at + Duration::from_secs(1)).into_std()
            ),
            "{warning:?}"
        );
        assert_eq!(health.changed().await, SessionHealth::Lost);
        assert_eq!(start_at.elapsed(), Duration::from_millis(2400));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_session_is_revoked_in_the_background() {
        let lease = ScriptedLease::new();
        let session = start(&lease, Duration::from_secs(3));
        lease.delay(None);
        session.lost().await;
        let revoked = Instant::now() + Duration::from_secs(9);
        while lease.revokes.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < revoked, "revoked after the loss");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(session);
    }

    #[tokio::test]
    async fn a_margin_that_leaves_no_room_for_a_renewal_is_refused() {
        let ttl = Duration::from_secs(3);
        assert!(SessionOptions::with_ttl(ttl).validate().is_ok());
        assert_eq!(
            SessionOptions::with_ttl(ttl).effective_margin(),
            Duration::from_millis(600)
        );
        assert!(
            SessionOptions::with_ttl(ttl)
                .margin(Duration::ZERO)
                .validate()
                .is_ok()
        );
        for margin in [Duration::from_secs(2), Duration::from_secs(5)] {
            match SessionOptions::with_ttl(ttl).margin(margin).validate() {
                Err(Error::InvalidArgument(message)) => assert!(message.contains("margin")),
                other => panic!("{margin:?}: {other:?}"),
            }
        }
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
