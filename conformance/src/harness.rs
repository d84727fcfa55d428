//! The harness a case runs in: the backend, a name prefix of its own, session TTLs,
//! a settle time, and the fault hooks.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use distsync_core::{Backend, Capabilities, Coordinator, Name, Result, Session, SessionOptions};
use tokio::time::Instant;

use crate::faults::{
    CallerTransactions, ExternalHolder, Faults, HoldKind, HolderSpec, Hook, StoreFaults,
};

/// The TTL of sessions of ordinary cases (raised to the backend's minimum): long
/// enough that a loaded machine never loses one by accident, short enough that the
/// residue of an aborted run expires soon.
pub const SESSION_TTL: Duration = Duration::from_secs(10);

/// The TTL of sessions of fault cases (raised to the backend's minimum): short, so
/// that expiry-bound figures stay within a few seconds.
pub const FAULT_TTL: Duration = Duration::from_secs(2);

/// The TTL of the sessions of external holders (child processes, frozen in-process
/// holders), raised to the backend's minimum: the figures of crash and pause cases are
/// about one TTL, so it is short; two seconds keep a child's renewals (every TTL/3)
/// clear of the scheduling delays of a machine loaded by other suites at once (one
/// second was lost there while a child started).
pub const HOLDER_TTL: Duration = Duration::from_secs(2);

/// The shortest settle time (see [`Harness::settle`]).
pub const MIN_SETTLE: Duration = Duration::from_millis(100);

/// The longest settle time.
pub const MAX_SETTLE: Duration = Duration::from_secs(1);

/// What a case runs against: the backend, its own name prefix, TTLs, a settle time,
/// and fault hooks.
///
/// Every case run gets a fresh prefix `conf/<case>/<unique id>` (see
/// [`Harness::for_case`]), so cases never collide on a shared server, not even two runs
/// of one case at once.
#[derive(Clone)]
pub struct Harness {
    backend: Arc<dyn Backend>,
    /// What the cases are judged against: the backend's, unless the harness's
    /// topology is not the backend's own (see [`Harness::connect_promoted_pair`]).
    capabilities: Option<Capabilities>,
    faults: Arc<dyn Faults>,
    /// The name every case prefix starts with (`conf` unless
    /// [`Harness::with_namespace`]).
    namespace: String,
    prefix: String,
    settle: Duration,
    /// Whether a case whose hook the faults do not offer is not run rather than
    /// unsupported (see [`Harness::with_absent_hooks_not_run`]).
    absent_hooks_not_run: bool,
    /// A database of the caller's beside the store (see
    /// [`Harness::with_caller_transactions`]).
    caller_transactions: Option<Arc<dyn CallerTransactions>>,
}

impl fmt::Debug for Harness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("backend", &self.backend.capabilities().backend)
            .field("faults", &self.faults.describe())
            .field("namespace", &self.namespace)
            .field("prefix", &self.prefix)
            .field("settle", &self.settle)
            .field("absent_hooks_not_run", &self.absent_hooks_not_run)
            .field(
                "caller_transactions",
                &self.caller_transactions.as_ref().map(|t| t.describe()),
            )
            .finish()
    }
}

impl From<Arc<dyn Backend>> for Harness {
    fn from(backend: Arc<dyn Backend>) -> Self {
        Self::new(backend)
    }
}

impl From<Coordinator> for Harness {
    fn from(coordinator: Coordinator) -> Self {
        Self::new(Arc::clone(coordinator.backend()))
    }
}

impl Harness {
    /// A harness over `backend` with the default fault hooks ([`StoreFaults`]).
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self {
            backend,
            capabilities: None,
            faults: Arc::new(StoreFaults),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            prefix: DEFAULT_NAMESPACE.to_owned(),
            settle: MIN_SETTLE,
            absent_hooks_not_run: false,
            caller_transactions: None,
        }
    }

    /// The same harness with a database of the caller's beside the store, which offers
    /// [`Hook::CallerTransactions`] (a PostgreSQL database: the store itself when it is
    /// PostgreSQL, whose queues it then writes in the caller's transactions).
    #[must_use]
    pub fn with_caller_transactions(mut self, transactions: Arc<dyn CallerTransactions>) -> Self {
        self.caller_transactions = Some(transactions);
        self
    }

    /// The database of the caller's beside the store.
    ///
    /// # Errors
    /// [`distsync_core::Error::Unsupported`] when the harness has none.
    pub fn caller_transactions(&self) -> Result<Arc<dyn CallerTransactions>> {
        self.caller_transactions.clone().ok_or_else(|| {
            distsync_core::Error::unsupported(
                self.capabilities().backend,
                Hook::CallerTransactions.describe(),
            )
        })
    }

    /// The same harness, reporting a case whose fault hook its [`Faults`] do not offer
    /// as [`crate::Outcome::NotRun`] instead of [`crate::Outcome::Unsupported`]: for
    /// hooks a backend crate gives or not ([`crate::BackendUnderTest`]), where a hook
    /// not given says nothing about the store. The workspace's own harnesses keep
    /// `unsupported`, since theirs are missing because the store cannot have them.
    #[must_use]
    pub fn with_absent_hooks_not_run(mut self) -> Self {
        self.absent_hooks_not_run = true;
        self
    }

    /// Whether a case whose hook is not offered is reported not run (see
    /// [`Harness::with_absent_hooks_not_run`]).
    pub fn absent_hooks_not_run(&self) -> bool {
        self.absent_hooks_not_run
    }

    /// The same harness with other fault hooks.
    pub fn with_faults(mut self, faults: Arc<dyn Faults>) -> Self {
        self.faults = faults;
        self
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// A coordinator over the backend (for the `&str`-name conveniences).
    pub fn coordinator(&self) -> Coordinator {
        Coordinator::from_arc(Arc::clone(&self.backend))
    }

    /// The capabilities the cases are judged against: the backend's, or those of the
    /// topology the harness's fault hooks build (see
    /// [`Harness::connect_promoted_pair`]).
    pub fn capabilities(&self) -> &Capabilities {
        self.capabilities
            .as_ref()
            .unwrap_or_else(|| self.backend.capabilities())
    }

    /// The same harness judged against `capabilities` instead of its backend's: for
    /// hooks whose cases run on another topology than the harness's own backend (a
    /// case there must check that a backend connected to that topology declares the
    /// same).
    pub(crate) fn with_capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = Some(capabilities);
        self
    }

    /// The fault hooks.
    pub fn faults(&self) -> &dyn Faults {
        &*self.faults
    }

    /// The name prefix of this harness (`conf` before [`Harness::for_case`]).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A harness for one run of case `case`, with the fresh prefix
    /// `<namespace>/<case>/<unique id>` (`conf/...` by default).
    pub fn for_case(&self, case: &str) -> Self {
        Self {
            prefix: format!("{}/{case}/{}", self.namespace, unique_id()),
            ..self.clone()
        }
    }

    /// The same harness with every case under `namespace`: a run's throwaway prefix,
    /// which [`Backend::purge_prefix`] removes afterwards and
    /// [`Backend::count_prefix`] checks empty (see [`run_namespace`]).
    ///
    /// ```
    /// use distsync_conformance::Harness;
    /// use distsync_core::Name;
    ///
    /// let namespace = Name::new("conf/run-1").unwrap();
    /// let harness = Harness::memory().with_namespace(&namespace);
    /// assert!(harness.for_case("lock_try_lock").prefix().starts_with("conf/run-1/lock_try_lock/"));
    /// ```
    #[must_use]
    pub fn with_namespace(mut self, namespace: &Name) -> Self {
        self.namespace = namespace.as_str().to_owned();
        self.prefix = self.namespace.clone();
        self
    }

    /// The name every case prefix starts with ([`Harness::with_namespace`]).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The key `<prefix>/<suffix>` as a string (for STM keys and `&str` APIs).
    pub fn key(&self, suffix: &str) -> String {
        format!("{}/{suffix}", self.prefix)
    }

    /// The validated name `<prefix>/<suffix>`.
    ///
    /// # Errors
    /// [`distsync_core::Error::InvalidName`] if `suffix` makes the name invalid.
    pub fn name(&self, suffix: &str) -> Result<Name> {
        Name::new(self.key(suffix))
    }

    /// The TTL of ordinary sessions: [`SESSION_TTL`] or the backend's minimum.
    pub fn session_ttl(&self) -> Duration {
        SESSION_TTL.max(self.capabilities().min_session_ttl)
    }

    /// The TTL of fault-case sessions: [`FAULT_TTL`] or the backend's minimum.
    pub fn fault_ttl(&self) -> Duration {
        FAULT_TTL.max(self.capabilities().min_session_ttl)
    }

    /// The TTL of external holders' sessions: [`HOLDER_TTL`] or the backend's minimum.
    pub fn holder_ttl(&self) -> Duration {
        HOLDER_TTL.max(self.capabilities().min_session_ttl)
    }

    /// Whether the fault hooks offer `hook`, or why not.
    pub fn offers(&self, hook: Hook) -> std::result::Result<(), String> {
        if hook == Hook::CallerTransactions {
            return match self.caller_transactions {
                Some(_) => Ok(()),
                None => Err(format!(
                    "{hook}: none given (the runner gives the PostgreSQL of the run, or \
                     DISTSYNC_POSTGRES_URL's)"
                )),
            };
        }
        self.faults.offers(hook)
    }

    /// Starts an external holder (see [`Faults::spawn_holder`]) of `kind` on the name
    /// `<prefix>/<suffix>`, through a session of [`Harness::holder_ttl`].
    ///
    /// A holder whose session lapsed before it held
    /// ([`distsync_core::Error::SessionLost`], or a store out of reach:
    /// [`distsync_core::Error::is_transient`]), which is what a starved machine does to
    /// a holder's first renewals, is started again, three times in all, each try once
    /// the runtime has kept up for a moment (as a case's own set-up is): the cases read
    /// a holder that never held as a set-up that lapsed, never as a violation.
    ///
    /// Cancel-safety: dropping the future kills a child holder being started.
    ///
    /// # Errors
    /// [`distsync_core::Error::Unsupported`] when the hooks cannot, or the holder's
    /// error (the last try's, for a lapse).
    pub async fn spawn_holder(
        &self,
        kind: HoldKind,
        suffix: &str,
    ) -> Result<Box<dyn ExternalHolder>> {
        let spec = HolderSpec {
            kind,
            name: self.name(suffix)?,
            ttl: self.holder_ttl(),
        };
        let mut tries = 1;
        loop {
            match self.faults.spawn_holder(&*self.backend, &spec).await {
                Err(error)
                    if tries < crate::check::SET_UP_TRIES
                        && (error.needs_new_session() || error.is_transient()) =>
                {
                    let calmed = crate::stall::calm(
                        crate::check::SET_UP_CALM,
                        crate::check::SET_UP_CALM_LIMIT,
                    )
                    .await;
                    tracing::info!(%error, tries, calmed, "an external holder lapsed before it held; again");
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    /// Opens a session with [`Harness::session_ttl`].
    ///
    /// Cancel-safety: as [`Backend::session`]; a session granted but dropped with the
    /// future is revoked in the background or expires.
    ///
    /// # Errors
    /// The backend's error.
    pub async fn session(&self) -> Result<Session> {
        self.backend
            .session(SessionOptions::with_ttl(self.session_ttl()))
            .await
    }

    /// Opens a session with [`Harness::fault_ttl`].
    ///
    /// Cancel-safety: as [`Harness::session`].
    ///
    /// # Errors
    /// The backend's error.
    pub async fn fault_session(&self) -> Result<Session> {
        self.backend
            .session(SessionOptions::with_ttl(self.fault_ttl()))
            .await
    }

    /// Ends `session` from the store side through the fault hooks.
    ///
    /// Cancel-safety: dropping the future may or may not have ended the session.
    ///
    /// # Errors
    /// The store's error.
    pub async fn end_session(&self, session: &Session) -> Result<()> {
        self.faults.end_session(&*self.backend, session.id()).await
    }

    /// How long a case lets a just-started waiter run before starting the next one or
    /// asserting that it is still blocked.
    ///
    /// The [`Backend`] trait has no way to ask the store whether a waiter has
    /// registered (its key written, its watch set), so a case gives it this long: ten
    /// store round trips as measured by [`Harness::calibrate`], at least
    /// [`MIN_SETTLE`], at most [`MAX_SETTLE`]. A settle that is too short can only make
    /// an order-checking case report a violation that is not there, never hide one.
    pub fn settle(&self) -> Duration {
        self.settle
    }

    /// The slack a violated verdict is judged with against the harness's own stalls:
    /// a case during which the runtime stalled for longer is run again, and is
    /// [`crate::Outcome::Inconclusive`] if it stalls again (see [`crate::run_case_in`]).
    /// [`Harness::settle`] or [`crate::STALL_FLOOR`], whichever is larger: the settle
    /// time is the finest bound the cases judge with, and the floor is below the
    /// smallest margin of a fault case's session (the `stall` module docs say more).
    pub fn stall_slack(&self) -> Duration {
        crate::stall::stall_slack(self.settle)
    }

    /// Measures the store's round trip (opening and closing a session, three times)
    /// and sets [`Harness::settle`] from it. Keeps the current settle if the store
    /// cannot be reached (the cases will then report the errors).
    ///
    /// Cancel-safety: cancel-safe; a session opened by a dropped calibration is
    /// revoked in the background.
    pub async fn calibrate(mut self) -> Self {
        let mut slowest = Duration::ZERO;
        for _ in 0..3 {
            let started = Instant::now();
            let opened = tokio::time::timeout(MAX_SETTLE * 5, self.session()).await;
            let Ok(Ok(session)) = opened else {
                tracing::warn!("calibration could not open a session; keeping the default settle");
                return self;
            };
            if let Err(error) = session.close().await {
                tracing::warn!(%error, "calibration could not close its session");
            }
            slowest = slowest.max(started.elapsed());
        }
        self.settle = (slowest * 10).clamp(MIN_SETTLE, MAX_SETTLE);
        tracing::debug!(round_trip = ?slowest, settle = ?self.settle, "calibrated");
        self
    }
}

/// The namespace of a harness not given one ([`Harness::with_namespace`]).
pub const DEFAULT_NAMESPACE: &str = "conf";

/// A fresh namespace for one run, `conf/run-<unique id>`: unique across processes and
/// runs, so a run's purge never reaches another run's names.
pub fn run_namespace() -> Name {
    Name::new(format!("{DEFAULT_NAMESPACE}/run-{}", unique_id()))
        .expect("a fixed prefix and hexadecimal digits make a valid name")
}

/// A process-unique, time-based id: nanoseconds since the epoch, the process id and a
/// counter, in hexadecimal.
fn unique_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{nanos:x}-{:x}-{n:x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use distsync_kv::memory::MemoryBackend;

    use super::*;

    #[test]
    fn case_prefixes_are_unique_and_valid() {
        let harness = Harness::new(Arc::new(MemoryBackend::new()));
        let a = harness.for_case("lock_fencing_tokens");
        let b = harness.for_case("lock_fencing_tokens");
        assert_ne!(a.prefix(), b.prefix());
        assert!(a.prefix().starts_with("conf/lock_fencing_tokens/"));
        assert!(a.name("mutex").is_ok());
        assert!(a.name("").is_err());
    }

    #[test]
    fn ttls_respect_the_backend_minimum() {
        let harness = Harness::new(Arc::new(MemoryBackend::new()));
        let min = harness.capabilities().min_session_ttl;
        assert!(harness.session_ttl() >= min);
        assert!(harness.fault_ttl() >= min);
        assert!(harness.fault_ttl() <= harness.session_ttl());
    }
}
