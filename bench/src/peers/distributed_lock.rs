//! `distributed-lock` 0.2 on Redis (its `fred` client, Redlock on one server) and on
//! PostgreSQL (session advisory locks through its own `sqlx` pool).

use async_trait::async_trait;
use distributed_lock::traits::{DistributedLock, LockHandle, LockProvider};
use distributed_lock::{PostgresLockProvider, RedisLockProvider};

// The lock types sit in same-named modules of both backend crates, which the meta
// crate glob-re-exports ambiguously; name them through their providers.
type RedisDistributedLock = <RedisLockProvider as LockProvider>::Lock;
type PostgresDistributedLock = <PostgresLockProvider as LockProvider>::Lock;

use crate::contender::{Cycler, Role, Unavailable};
use crate::Result;

/// The label of the Redis row.
pub const REDIS_LABEL: &str = "distributed-lock 0.2 (acquire + release)";
/// The label of the PostgreSQL row.
pub const POSTGRES_LABEL: &str = "distributed-lock 0.2 (acquire + release)";

/// `acquire(None)` then `release()` on one `RedisDistributedLock`.
pub struct DistributedLockRedis {
    lock: RedisDistributedLock,
}

impl std::fmt::Debug for DistributedLockRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistributedLockRedis")
            .finish_non_exhaustive()
    }
}

impl DistributedLockRedis {
    /// A provider for the server of the distsync URL `url`.
    pub async fn start(url: &str, name: &str) -> std::result::Result<Box<dyn Cycler>, Unavailable> {
        let started: Result<Self> = async {
            let server = crate::raw::redis::server_url(url)?;
            let provider = RedisLockProvider::builder().url(server).build().await?;
            Ok(Self {
                lock: provider.create_lock(name),
            })
        }
        .await;
        started
            .map(|peer| Box::new(peer) as Box<dyn Cycler>)
            .map_err(|error| (REDIS_LABEL.to_owned(), Role::Peer, error))
    }
}

#[async_trait]
impl Cycler for DistributedLockRedis {
    fn label(&self) -> String {
        REDIS_LABEL.into()
    }

    fn role(&self) -> Role {
        Role::Peer
    }

    async fn cycle(&mut self) -> Result<()> {
        self.lock.acquire(None).await?.release().await?;
        Ok(())
    }
}

/// `acquire(None)` then `release()` on one `PostgresDistributedLock`.
pub struct DistributedLockPostgres {
    lock: PostgresDistributedLock,
}

impl std::fmt::Debug for DistributedLockPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistributedLockPostgres")
            .finish_non_exhaustive()
    }
}

impl DistributedLockPostgres {
    /// A provider over a pool for the database of the distsync URL `url`.
    pub async fn start(url: &str, name: &str) -> std::result::Result<Box<dyn Cycler>, Unavailable> {
        let started: Result<Self> = async {
            let options = distsync::postgres::PostgresConfig::parse(url)?.options;
            let pool = sqlx::PgPool::connect_with(options).await?;
            let provider = PostgresLockProvider::builder().pool(pool).build().await?;
            Ok(Self {
                lock: provider.create_lock(name),
            })
        }
        .await;
        started
            .map(|peer| Box::new(peer) as Box<dyn Cycler>)
            .map_err(|error| (POSTGRES_LABEL.to_owned(), Role::Peer, error))
    }
}

#[async_trait]
impl Cycler for DistributedLockPostgres {
    fn label(&self) -> String {
        POSTGRES_LABEL.into()
    }

    fn role(&self) -> Role {
        Role::Peer
    }

    async fn cycle(&mut self) -> Result<()> {
        self.lock.acquire(None).await?.release().await?;
        Ok(())
    }
}
