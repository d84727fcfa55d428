//! `distributed-lock` 0.2 on Redis (its `fred` client, Redlock on one server) and on
//! PostgreSQL (session advisory locks through its own `sqlx` pool).

use async_trait::async_trait;
use distributed_lock::traits::{DistributedLock, LockHandle, LockProvider};
use distributed_lock::{PostgresLockProvider, RedisLockProvider};

use crate::contender::{started, Cycler, Role, Started};
use crate::Result;

/// The label of its rows.
pub const LABEL: &str = "distributed-lock 0.2 (acquire + release)";

/// `acquire(None)` then `release()` on one lock of either store. The lock types sit in
/// same-named modules of both backend crates, which the meta crate glob-re-exports
/// ambiguously; they are named through their providers.
struct Peer<L>(L);

/// A lock on the server of the distsync Redis URL `url`.
pub async fn redis(url: &str, name: &str) -> Started {
    let made = async {
        let server = crate::raw::redis::server_url(url)?;
        let provider = RedisLockProvider::builder().url(server).build().await?;
        Ok(Peer(provider.create_lock(name)))
    };
    started(LABEL, Role::Peer, made.await)
}

/// A lock over a pool for the database of the distsync PostgreSQL URL `url`.
pub async fn postgres(url: &str, name: &str) -> Started {
    let made = async {
        let pool = sqlx::PgPool::connect_with(crate::raw::postgres::options(url)?).await?;
        let provider = PostgresLockProvider::builder().pool(pool).build().await?;
        Ok(Peer(provider.create_lock(name)))
    };
    started(LABEL, Role::Peer, made.await)
}

#[async_trait]
impl<L: DistributedLock + Send + Sync> Cycler for Peer<L> {
    async fn cycle(&mut self) -> Result<()> {
        self.0.acquire(None).await?.release().await?;
        Ok(())
    }
}
