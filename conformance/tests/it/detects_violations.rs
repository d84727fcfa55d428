//! The suite can fail: a backend that breaks its promises (a lock that excludes no
//! one, with a constant fencing token; a queue its capabilities offer but that it
//! refuses) is reported violated, and those reports fail the run.

use std::num::NonZeroUsize;
use std::sync::Arc;

use async_trait::async_trait;
use distsync_conformance::{find, run_case, Harness, Outcome};
use distsync_core::raw::Primitives;
use distsync_core::{
    Backend, Barrier, Capabilities, DoubleBarrier, Election, Error, FencingToken, LockGuard,
    Locker, Name, Queue, Result, RwLock, Session, SessionId, SessionOptions, Stm,
};
use distsync_kv::memory::MemoryBackend;

/// The memory backend, except that its lock grants everyone at once with token 1, and
/// its queue is refused although the capabilities offer it.
struct Broken {
    inner: MemoryBackend,
    capabilities: Capabilities,
}

impl Broken {
    fn new() -> Self {
        let inner = MemoryBackend::new();
        let mut capabilities = inner.capabilities().clone();
        capabilities.backend = "broken";
        capabilities.lock = true;
        capabilities.queue = true;
        capabilities.fencing = true;
        capabilities.fifo_waiters = false;
        Self {
            inner,
            capabilities,
        }
    }
}

struct NoExclusion {
    name: Name,
    session: Session,
}

impl NoExclusion {
    fn grant(&self) -> LockGuard {
        distsync_core::raw::lock_guard(
            self.name.to_string(),
            FencingToken(1),
            &self.session,
            Box::new(|| Box::pin(async { Ok(()) })),
        )
    }
}

#[async_trait]
impl Locker for NoExclusion {
    fn name(&self) -> &Name {
        &self.name
    }

    async fn lock(&self) -> Result<LockGuard> {
        Ok(self.grant())
    }

    async fn try_lock(&self) -> Result<Option<LockGuard>> {
        Ok(Some(self.grant()))
    }

    async fn contenders(&self) -> Result<usize> {
        Ok(0)
    }
}

#[async_trait]
impl Backend for Broken {
    async fn session(&self, options: SessionOptions) -> Result<Session> {
        self.inner.session(options).await
    }

    async fn revoke_session(&self, id: SessionId) -> Result<()> {
        self.inner.revoke_session(id).await
    }
}

impl Primitives for Broken {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn locker(&self, session: &Session, name: Name) -> Result<Box<dyn Locker>> {
        Ok(Box::new(NoExclusion {
            name,
            session: session.clone(),
        }))
    }

    fn election(&self, session: &Session, name: Name) -> Result<Box<dyn Election>> {
        self.inner.election(session, name)
    }

    fn rwlock(&self, session: &Session, name: Name) -> Result<Box<dyn RwLock>> {
        self.inner.rwlock(session, name)
    }

    fn queue(&self, _name: Name) -> Result<Box<dyn Queue>> {
        Err(Error::unsupported("broken", "queue"))
    }

    fn barrier(&self, name: Name) -> Result<Box<dyn Barrier>> {
        self.inner.barrier(name)
    }

    fn double_barrier(
        &self,
        session: &Session,
        name: Name,
        count: NonZeroUsize,
    ) -> Result<Box<dyn DoubleBarrier>> {
        self.inner.double_barrier(session, name, count)
    }

    fn stm(&self) -> Result<Stm> {
        self.inner.stm()
    }
}

async fn outcome_of(case: &str) -> (Outcome, bool) {
    let harness = Harness::new(Arc::new(Broken::new()));
    let report = run_case(find(case).unwrap(), &harness).await;
    eprintln!("{report}");
    (report.outcome.clone(), report.is_failure())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlapping_holders_are_a_violation() {
    let (outcome, failure) = outcome_of("lock_mutual_exclusion").await;
    assert!(matches!(outcome, Outcome::Violated { .. }), "{outcome}");
    assert!(failure);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_try_lock_granted_while_held_is_a_violation() {
    let (outcome, failure) = outcome_of("lock_try_lock").await;
    assert!(outcome.detail().contains("while A held"), "{outcome}");
    assert!(failure);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repeated_fencing_tokens_are_a_violation_of_the_claim() {
    let (outcome, failure) = outcome_of("lock_fencing_tokens").await;
    assert!(outcome.detail().contains("not above"), "{outcome}");
    assert!(failure);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unclaimed_guarantee_may_be_violated_without_failing() {
    let (outcome, failure) = outcome_of("lock_fifo_waiters").await;
    assert!(matches!(outcome, Outcome::Violated { .. }), "{outcome}");
    assert!(!failure, "fifo_waiters is declared false");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusing_an_offered_primitive_is_a_contradiction() {
    let (outcome, failure) = outcome_of("queue_fifo").await;
    assert!(outcome.detail().contains("capabilities offer"), "{outcome}");
    assert!(failure);
    let (outcome, failure) = outcome_of("api_capabilities_match").await;
    assert!(outcome.detail().contains("queue = true"), "{outcome}");
    assert!(failure);
}
