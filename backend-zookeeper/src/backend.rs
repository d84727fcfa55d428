//! The backend: the configuration, the sessions of this process, the factories.

use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::{
    Backend, Capabilities, Error, Name, Result, Session, SessionId, SessionOptions,
};

use crate::barrier::ZkBarrier;
use crate::config::ZkConfig;
use crate::counter::{ZkCounter, ZkLatch};
use crate::direct::Direct;
use crate::double_barrier::ZkDoubleBarrier;
use crate::election::ZkElection;
use crate::error::map;
use crate::lock::ZkLocker;
use crate::queue::ZkQueue;
use crate::rate_limiter::ZkRateLimiter;
use crate::rwlock::ZkRwLock;
use crate::semaphore::ZkSemaphore;
use crate::session::LeaseInner;
use crate::stm::ZkStm;
use crate::store::Shared;
use crate::unfair_lock::ZkUnfairLocker;
use crate::BACKEND;

/// The ZooKeeper backend: sessions are ZooKeeper sessions, primitives are Curator's
/// recipes (see the crate docs).
pub struct ZkBackend {
    shared: Arc<Shared>,
    capabilities: Capabilities,
    /// The one session every STM transaction, rate limiter, counter and latch of this
    /// backend uses, opened on first use: they keep nothing ephemeral, and a handle made
    /// per request (or per campaign, for the hand-over and release-request records) must
    /// not cost a session and a connection each.
    pub(crate) sessionless: Arc<Direct>,
}

impl std::fmt::Debug for ZkBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkBackend")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

/// The [`ZkBackend`] for a `zk://` or `zks://` URL (what `distsync::connect` wraps in
/// a [`distsync_core::Coordinator`] for these schemes).
///
/// # Errors
/// [`Error::InvalidUrl`] for a bad URL (its password redacted),
/// [`Error::Unsupported`] for `zks://` or `sasl=` in a build without
/// the `tls` or `sasl` feature, or [`backend_with_config`]'s.
///
/// # Cancel safety
/// Dropping the future drops the half-made connection; nothing is held yet.
pub async fn backend(url: &str) -> Result<ZkBackend> {
    backend_with_config(&url.parse()?).await
}

/// Like [`backend`], from an already parsed (or built) configuration: opens one short
/// session to check that the servers answer and the login is accepted, then closes it.
///
/// # Errors
/// [`Error::Connection`] when no server answers in time,
/// [`Error::Authentication`] for a refused login, or the store's error.
///
/// # Cancel safety
/// Dropping the future drops the probe session (closed by the client).
pub async fn backend_with_config(config: &ZkConfig) -> Result<ZkBackend> {
    let config = config.clone();
    let capabilities = crate::capabilities_with_bound(config.max_session_ttl());
    let shared = Arc::new(Shared::new(config));
    let probe = shared.connect_probe(crate::MIN_SESSION_TTL * 4).await?;
    // A digest login is checked by the server only when a request needs it: ask
    // for the root's stat so a wrong password fails here rather than later.
    probe.check_stat("/").await.map_err(map)?;
    drop(probe);
    tracing::debug!(
        backend = crate::BACKEND,
        servers = %shared.config.connect_string(),
        root = shared.config.root(),
        tls = shared.config.tls(),
        "connected"
    );
    Ok(ZkBackend {
        sessionless: Arc::new(Direct::new(&shared)),
        shared,
        capabilities,
    })
}

impl ZkBackend {
    /// The configuration in use.
    pub fn config(&self) -> &ZkConfig {
        &self.shared.config
    }

    /// What every handle is made from: the backend's one client of no session, which
    /// carries the shared state too (the STM, rate limiters, counters and latches send
    /// their requests through it, the others take the shared state from it).
    fn context(&self) -> &Arc<Direct> {
        &self.sessionless
    }

    fn lease(&self, session: &Session) -> Result<Arc<LeaseInner>> {
        crate::session::lease_of(session, &self.shared).map(Arc::clone)
    }
}

// The unfair lock is a holder node of sequence 0 among the fair lock's contenders,
// and a wait line beside the lock's node (see `src/unfair_lock.rs`); the rate limiter
// is GCRA on one node, decided on the ZooKeeper leader's clock.
distsync_core::impl_primitives!(ZkBackend {
    locker: ZkLocker,
    unfair_locker: ZkUnfairLocker,
    election: ZkElection,
    rwlock: ZkRwLock,
    semaphore: ZkSemaphore,
    double_barrier: ZkDoubleBarrier,
    queue: ZkQueue,
    barrier: ZkBarrier,
    counter: ZkCounter,
    latch: ZkLatch,
    rate_limiter: ZkRateLimiter,
    stm: ZkStm,
});

#[async_trait]
impl Backend for ZkBackend {
    async fn session(&self, options: SessionOptions) -> Result<Session> {
        self.capabilities.check_session(&options)?;
        self.shared
            .amnesia
            .book(|book| book.check_ttl(options.ttl))?;
        crate::session::open(&self.shared, &options).await
    }

    async fn revoke_session(&self, id: SessionId) -> Result<()> {
        match self.shared.session(id.0) {
            Some(lease) => match lease.upgrade() {
                // In this process: ZooKeeper ends a session only for whoever has its
                // password, which is the owner's client.
                Some(lease) => lease.close().await,
                // Dropped: its client closed the session.
                None => Ok(()),
            },
            None => Err(Error::unsupported(
                BACKEND,
                "revoking a session of another process (ZooKeeper needs its password)",
            )),
        }
    }

    /// Queues, STM keys and held barriers, and the live holds (see `export.rs`).
    async fn export(&self) -> Result<distsync_core::migrate::Snapshot> {
        crate::export::export(&self.shared).await
    }

    async fn count_prefix(&self, prefix: &Name) -> Result<u64> {
        crate::purge::count_prefix(&self.shared, prefix).await
    }

    async fn purge_prefix(&self, prefix: &Name) -> Result<u64> {
        crate::purge::purge_prefix(&self.shared, prefix).await
    }

    /// Curator's protocol: `__REVOKE__` written into the holder's node (see
    /// `src/revoke.rs`).
    async fn request_release(
        &self,
        name: &Name,
    ) -> Result<Option<distsync_core::revocation::ReleaseRequest>> {
        crate::revoke::request_release(&self.shared, name).await
    }

    async fn break_lock(&self, name: &Name) -> Result<Option<distsync_core::BrokenHold>> {
        crate::break_lock::break_lock(&self.shared, name).await
    }

    async fn status(&self, prefix: &str) -> Result<distsync_core::status::StatusReport> {
        crate::status::status(&self.shared, prefix).await
    }

    async fn describe_store(&self) -> Result<Vec<(String, String)>> {
        crate::facts::describe(&self.shared).await
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use distsync_core::rate_limiter::Rate;
    use distsync_core::Primitives;

    use super::*;

    /// The test ZooKeeper's URL, or `None` after a loud skip notice (a failure under
    /// `CI=true`).
    pub(crate) fn test_url() -> Option<String> {
        let ci = std::env::var("CI").is_ok_and(|value| value.eq_ignore_ascii_case("true"));
        match std::env::var("DISTSYNC_ZOOKEEPER_URL") {
            Ok(url) if !url.trim().is_empty() => Some(url),
            _ => {
                assert!(!ci, "CI=true but DISTSYNC_ZOOKEEPER_URL is not set");
                tracing::warn!("DISTSYNC_ZOOKEEPER_URL is not set: skipping");
                None
            }
        }
    }

    #[tokio::test]
    async fn handles_of_no_session_share_the_backends_one_session() {
        let Some(url) = test_url() else { return };
        let backend = crate::backend(&url).await.unwrap();
        let alone = Arc::strong_count(&backend.sessionless);
        let name = |kind: &str, i: usize| Name::new(format!("sessionless-{kind}-{i}")).unwrap();
        let counters: Vec<_> = (0..4)
            .map(|i| backend.counter(name("counter", i)).unwrap())
            .collect();
        let latches: Vec<_> = (0..3)
            .map(|i| backend.latch(name("latch", i), 2).unwrap())
            .collect();
        let rate = Rate::new(10, std::time::Duration::from_secs(1)).unwrap();
        let limiter = backend.rate_limiter(name("limiter", 0), rate).unwrap();
        let stm = backend.stm().unwrap();
        let queues: Vec<_> = (0..3)
            .map(|i| backend.queue(name("queue", i)).unwrap())
            .collect();
        for counter in &counters {
            counter.get().await.unwrap();
        }
        for latch in &latches {
            assert_eq!(latch.count().await.unwrap(), 2);
        }
        for queue in &queues {
            assert_eq!(queue.try_dequeue().await.unwrap(), None);
        }
        // Each handle holds the backend's one client of no session, so they all used
        // its one ZooKeeper session, however many handles are made.
        assert_eq!(
            Arc::strong_count(&backend.sessionless),
            alone + counters.len() + latches.len() + queues.len() + 2
        );
        drop((counters, latches, limiter, stm, queues));
        assert_eq!(Arc::strong_count(&backend.sessionless), alone);
    }
}
