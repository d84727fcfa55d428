//! The suite for a backend crate outside this workspace: it gives a connect function and
//! the fault hooks it has ([`BackendUnderTest`]), and [`crate::backend_tests!`] makes
//! its conformance test binary, one test per case of [`crate::CASES`].
//!
//! Nothing here knows the store: the hooks are the author's closures, so a backend
//! whose URL scheme no [`crate::StoreKind`] names (a file system, SQLite, a service of
//! its own) gets the same cases as the workspace's backends. A case whose hook the
//! author does not give is reported [`crate::Outcome::NotRun`] (not a statement about
//! the store, as in the safe profile); a case whose primitive the
//! [`distsync_core::Capabilities`] do not offer is [`crate::Outcome::Unsupported`];
//! a case measuring a guarantee flag the capabilities do not claim runs, and a
//! violation there is reported, not failed.

use std::fmt;
use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::{Backend, Coordinator, Error, Result, SessionId};
use futures::future::BoxFuture;

use crate::faults::child;
use crate::faults::proxy::{PartitionMode, Proxy};
use crate::faults::{
    any_external_holder, ExternalHolder, Faults, HolderSpec, Hook, Partitioned, PrivateServer,
};
use crate::harness::Harness;
use crate::testing::{run_tests, ExtraTest};

/// What a connect function of a [`BackendUnderTest`] may return: an
/// `Arc<dyn Backend>` or a [`Coordinator`].
pub trait IntoBackend: Send + 'static {
    /// The backend.
    fn into_backend(self) -> Arc<dyn Backend>;
}

impl IntoBackend for Arc<dyn Backend> {
    fn into_backend(self) -> Arc<dyn Backend> {
        self
    }
}

impl IntoBackend for Coordinator {
    fn into_backend(self) -> Arc<dyn Backend> {
        Arc::clone(self.backend())
    }
}

type ConnectFn = Arc<dyn Fn() -> BoxFuture<'static, Result<Arc<dyn Backend>>> + Send + Sync>;
type KillSessionFn = Arc<dyn Fn(SessionId) -> BoxFuture<'static, Result<String>> + Send + Sync>;
type PrivateServerFn =
    Arc<dyn Fn() -> BoxFuture<'static, Result<Box<dyn PrivateServer>>> + Send + Sync>;
type ConnectViaFn =
    Arc<dyn Fn(String, String) -> BoxFuture<'static, Result<Arc<dyn Backend>>> + Send + Sync>;

/// A backend crate's store as the suite sees it: how to connect, and which fault hooks
/// the crate gives.
///
/// Only the connect function is required. Every hook is optional; the cases that need
/// a hook not given are reported not run ([`crate::Outcome::NotRun`]) and do not fail:
///
/// | method | [`Hook`] | cases it lets run |
/// |---|---|---|
/// | (always) | [`Hook::SecondClient`] | a second client: the connect function called again |
/// | [`BackendUnderTest::child_holders`] | [`Hook::ChildHolder`], [`Hook::PausedHolder`] | holders killed (SIGKILL) or paused (SIGSTOP) in a child process |
/// | [`BackendUnderTest::kill_session`] | [`Hook::KillSession`] | a session ended out of band |
/// | [`BackendUnderTest::partition`] | [`Hook::Partition`] | a client cut off by a TCP proxy |
/// | [`BackendUnderTest::private_server`] | [`Hook::PrivateServer`] | the store stopped, crashed and restarted |
///
/// The others (clusters, failover, eviction, Go peers) belong to this workspace's own
/// stores and are never given here.
///
/// ```no_run
/// use std::sync::Arc;
/// use distsync_conformance::BackendUnderTest;
/// use distsync_core::Backend;
///
/// # async fn my_backend() -> distsync_core::Result<Arc<dyn Backend>> { todo!() }
/// fn store() -> BackendUnderTest {
///     BackendUnderTest::new(my_backend).child_holders()
/// }
///
/// distsync_conformance::backend_tests!(store);
/// ```
#[derive(Clone)]
pub struct BackendUnderTest {
    connect: ConnectFn,
    child_holders: bool,
    kill_session: Option<KillSessionFn>,
    private_server: Option<PrivateServerFn>,
    partition: Option<(String, ConnectViaFn)>,
}

impl fmt::Debug for BackendUnderTest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendUnderTest")
            .field("child_holders", &self.child_holders)
            .field("kill_session", &self.kill_session.is_some())
            .field("private_server", &self.private_server.is_some())
            .field("partition", &self.partition.as_ref().map(|(up, _)| up))
            .finish_non_exhaustive()
    }
}

impl BackendUnderTest {
    /// The store `connect` reaches; each call makes a new, independent client (the
    /// harness's, a second client's, a child holder's).
    pub fn new<F, Fut, B>(connect: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<B>> + Send + 'static,
        B: IntoBackend,
    {
        Self {
            connect: Arc::new(move || {
                let connecting = connect();
                Box::pin(async move { connecting.await.map(IntoBackend::into_backend) })
            }),
            child_holders: false,
            kill_session: None,
            private_server: None,
            partition: None,
        }
    }

    /// Gives [`Hook::ChildHolder`] and [`Hook::PausedHolder`]: the suite re-runs the
    /// test binary as a holder (its ignored `conformance_child` test), which calls the
    /// same connect function in the child process. Give it when that call reaches the
    /// same store from another process (a fixed directory, a server's address from
    /// the environment): not for a store that lives in the test's own memory.
    #[must_use]
    pub fn child_holders(mut self) -> Self {
        self.child_holders = true;
        self
    }

    /// Gives [`Hook::KillSession`]: `kill` ends the session of that id the store's own
    /// way, not through the library (a session file removed, a row deleted with the
    /// store's tool), and answers how, for the report. Its owner must learn through
    /// `lost()`, and what it held must free.
    #[must_use]
    pub fn kill_session<F, Fut>(mut self, kill: F) -> Self
    where
        F: Fn(SessionId) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String>> + Send + 'static,
    {
        self.kill_session = Some(Arc::new(move |session| Box::pin(kill(session))));
        self
    }

    /// Gives [`Hook::PrivateServer`]: `start` starts a server of the store's kind of
    /// the case's own (a free port, a temporary data directory), which the server
    /// cases stop, crash and start again ([`PrivateServer`]).
    #[must_use]
    pub fn private_server<F, Fut>(mut self, start: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Box<dyn PrivateServer>>> + Send + 'static,
    {
        self.private_server = Some(Arc::new(move || Box::pin(start())));
        self
    }

    /// Gives [`Hook::Partition`]: the suite starts a TCP proxy to `upstream` (the
    /// store's `host:port`) and calls `connect_via(proxy_address, settings)` for a
    /// client whose every connection goes to `proxy_address` (`127.0.0.1:port`);
    /// `settings` are URL query parameters the case wants on that client
    /// (`timeout=1s&connect_timeout=1s`, empty for none), which a backend applies
    /// where it has such settings.
    #[must_use]
    pub fn partition<F, Fut, B>(mut self, upstream: impl Into<String>, connect_via: F) -> Self
    where
        F: Fn(String, String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<B>> + Send + 'static,
        B: IntoBackend,
    {
        let connect_via: ConnectViaFn = Arc::new(move |address, settings| {
            let connecting = connect_via(address, settings);
            Box::pin(async move { connecting.await.map(IntoBackend::into_backend) })
        });
        self.partition = Some((upstream.into(), connect_via));
        self
    }

    /// Connects and makes the harness the cases run in: the given hooks as its
    /// [`Faults`], and a hook not given reported not run
    /// ([`Harness::with_absent_hooks_not_run`]).
    ///
    /// Cancel-safety: cancel-safe; a backend connected by a dropped call is dropped.
    ///
    /// # Errors
    /// The connect function's error.
    pub async fn harness(self) -> Result<Harness> {
        let backend = (self.connect)().await?;
        Ok(Harness::new(backend)
            .with_faults(Arc::new(AuthorFaults(self)))
            .with_absent_hooks_not_run())
    }
}

/// The [`Faults`] of a [`BackendUnderTest`]: its hooks, and the default store-side
/// revoke for [`Faults::end_session`].
struct AuthorFaults(BackendUnderTest);

const NOT_GIVEN: &str = "not given by the backend crate";

#[async_trait]
impl Faults for AuthorFaults {
    fn describe(&self) -> String {
        let mut given = vec!["revoke", "second client"];
        if self.0.child_holders {
            given.push("child-process holders");
        }
        if self.0.kill_session.is_some() {
            given.push("out-of-band kill");
        }
        if self.0.partition.is_some() {
            given.push("partition proxy");
        }
        if self.0.private_server.is_some() {
            given.push("private servers");
        }
        format!("backend crate's hooks: {}", given.join(", "))
    }

    fn offers(&self, hook: Hook) -> std::result::Result<(), String> {
        let given = match hook {
            Hook::SecondClient => true,
            Hook::ChildHolder | Hook::PausedHolder => {
                if self.0.child_holders {
                    return child::launcher().map(drop);
                }
                false
            }
            Hook::AnyExternalHolder => return any_external_holder(self),
            Hook::KillSession => self.0.kill_session.is_some(),
            Hook::PrivateServer => self.0.private_server.is_some(),
            Hook::Partition => self.0.partition.is_some(),
            _ => false,
        };
        if given {
            Ok(())
        } else {
            Err(format!("{hook}: {NOT_GIVEN}"))
        }
    }

    async fn kill_session(&self, backend: &dyn Backend, session: SessionId) -> Result<String> {
        let kill = self
            .0
            .kill_session
            .as_ref()
            .ok_or_else(|| refused(backend, Hook::KillSession))?;
        kill(session).await
    }

    async fn spawn_holder(
        &self,
        backend: &dyn Backend,
        spec: &HolderSpec,
    ) -> Result<Box<dyn ExternalHolder>> {
        if !self.0.child_holders {
            return Err(refused(backend, Hook::ChildHolder));
        }
        let launcher = child::launcher()
            .map_err(|reason| Error::unsupported(backend.capabilities().backend, reason))?;
        // The child is this test binary, which connects with the same function: the
        // URL in its spec is only a label.
        let label = format!("{}://", backend.capabilities().backend);
        Ok(Box::new(child::spawn(launcher, &label, spec).await?))
    }

    async fn private_server(&self, backend: &dyn Backend) -> Result<Box<dyn PrivateServer>> {
        let start = self
            .0
            .private_server
            .as_ref()
            .ok_or_else(|| refused(backend, Hook::PrivateServer))?;
        start().await
    }

    async fn second_client(&self, _backend: &dyn Backend) -> Result<Arc<dyn Backend>> {
        (self.0.connect)().await
    }

    async fn partitioned_client_with(
        &self,
        backend: &dyn Backend,
        settings: &str,
    ) -> Result<Box<dyn Partitioned>> {
        let (upstream, connect_via) = self
            .0
            .partition
            .as_ref()
            .ok_or_else(|| refused(backend, Hook::Partition))?;
        let proxy = Proxy::start(upstream.clone()).await?;
        let backend = connect_via(proxy.address().to_string(), settings.to_owned()).await?;
        Ok(Box::new(ThroughProxy { backend, proxy }))
    }
}

fn refused(backend: &dyn Backend, hook: Hook) -> Error {
    Error::unsupported(
        backend.capabilities().backend,
        format!("fault hook: {hook}: {NOT_GIVEN}"),
    )
}

/// A client of the author's store whose connections go through a proxy.
struct ThroughProxy {
    backend: Arc<dyn Backend>,
    proxy: Proxy,
}

impl Partitioned for ThroughProxy {
    fn backend(&self) -> Arc<dyn Backend> {
        Arc::clone(&self.backend)
    }

    fn set(&self, mode: PartitionMode) {
        self.proxy.set(mode);
    }
}

/// The `main` of a backend crate's conformance test binary for the store `store`
/// makes (use [`crate::backend_tests!`]): [`run_tests`] over the harness of
/// [`BackendUnderTest::harness`], one test per case. A case whose hook `store` does
/// not give, or whose primitive its capabilities do not offer, passes (reported not
/// run or unsupported on stderr); a violation of a guarantee the capabilities claim,
/// or of the contract, fails.
///
/// # Panics
/// In a test, when the connect function fails (the store is not there).
pub fn run_backend_tests(store: fn() -> BackendUnderTest, extra: &[ExtraTest]) -> ExitCode {
    run_tests(
        move || async move {
            Some(
                store().harness().await.unwrap_or_else(|error| {
                    panic!("connecting to the backend under test: {error}")
                }),
            )
        },
        extra,
    )
}

/// Expands to the `main` of a backend crate's conformance test binary (a `[[test]]`
/// target with `harness = false`): one test per case of [`crate::CASES`] against the
/// [`BackendUnderTest`] that `store` (a `fn() -> BackendUnderTest`) makes, plus any
/// extra test functions named after it (plain `fn()`s that panic on failure), and the
/// ignored test `conformance_child` that child-process holders run.
///
/// ```toml
/// [dev-dependencies]
/// distsync-conformance = { version = "0.1", default-features = false }
///
/// [[test]]
/// name = "conformance"
/// harness = false
/// ```
///
/// ```ignore
/// fn store() -> distsync_conformance::BackendUnderTest {
///     distsync_conformance::BackendUnderTest::new(|| my_backend::connect("/tmp/store"))
///         .child_holders()
/// }
///
/// distsync_conformance::backend_tests!(store);
/// ```
///
/// Why one libtest-mimic test per case rather than a `#[tokio::test]` per case: the
/// list of cases lives in this crate ([`crate::CASES`]), so a macro in the backend's
/// crate cannot name them one by one without repeating the list; the generated
/// `main` builds the tests from the list at run time, so a case added here is a test
/// there with no change, and libtest's filters (`cargo test --test conformance
/// lock_`), `--list` and nextest work per case.
#[macro_export]
macro_rules! backend_tests {
    ($store:expr $(, $extra:ident)* $(,)?) => {
        fn main() -> ::std::process::ExitCode {
            $crate::run_backend_tests($store, &[$((stringify!($extra), $extra as fn())),*])
        }
    };
}

#[cfg(test)]
mod tests {
    use distsync_kv::memory::MemoryBackend;

    use super::*;
    use crate::case::{Case, Claim, Group};
    use crate::outcome::Outcome;
    use crate::profile::Profile;
    use crate::suite::run_case_judged;

    fn memory() -> BackendUnderTest {
        BackendUnderTest::new(|| async { Ok(Arc::new(MemoryBackend::new()) as Arc<dyn Backend>) })
    }

    fn case(hooks: &'static [Hook]) -> &'static Case {
        Box::leak(Box::new(Case {
            id: "needs_hooks",
            group: Group::Server,
            guarantee: "test",
            needs: &[],
            claim: Claim::Contract,
            hooks,
            run: |_| Box::pin(async { Outcome::holds("ran") }),
        }))
    }

    #[tokio::test]
    async fn hooks_not_given_are_not_run_and_given_ones_run() {
        let harness = memory().harness().await.unwrap();
        for hook in [
            Hook::KillSession,
            Hook::PrivateServer,
            Hook::Partition,
            Hook::Cluster,
            Hook::ChildHolder,
        ] {
            let hooks: &'static [Hook] = Box::leak(Box::new([hook]));
            let report = run_case_judged(case(hooks), &harness, "t", Profile::Full).await;
            assert!(
                matches!(report.outcome, Outcome::NotRun { .. }),
                "{hook:?}: {report}"
            );
            assert!(report.outcome.detail().contains(NOT_GIVEN), "{report}");
            assert!(!report.is_failure());
        }
        let report =
            run_case_judged(case(&[Hook::SecondClient]), &harness, "t", Profile::Full).await;
        assert!(matches!(report.outcome, Outcome::Holds { .. }), "{report}");

        let killing = memory()
            .kill_session(|_| async { Ok("killed".to_owned()) })
            .harness()
            .await
            .unwrap();
        let report =
            run_case_judged(case(&[Hook::KillSession]), &killing, "t", Profile::Full).await;
        assert!(matches!(report.outcome, Outcome::Holds { .. }), "{report}");
    }

    #[tokio::test]
    async fn a_plain_harness_still_reports_absent_hooks_unsupported() {
        let plain = Harness::new(Arc::new(MemoryBackend::new()));
        let report = run_case_judged(case(&[Hook::Cluster]), &plain, "t", Profile::Full).await;
        assert!(
            matches!(report.outcome, Outcome::Unsupported { .. }),
            "{report}"
        );
    }

    #[tokio::test]
    async fn a_coordinator_is_a_backend_too() {
        let store = BackendUnderTest::new(|| async { Ok(Coordinator::new(MemoryBackend::new())) });
        let harness = store.harness().await.unwrap();
        assert_eq!(harness.capabilities().backend, "memory");
        let second = harness.faults().second_client(&**harness.backend()).await;
        assert!(second.is_ok());
    }
}
