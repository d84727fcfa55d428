//! `distributed-lock` 0.2 on Redis (its `fred` client, Redlock on one server), on
//! PostgreSQL (session advisory locks through its own `sqlx` pool) and on
//! MySQL/MariaDB (`GET_LOCK` through its own `sqlx` pool, the crate
//! `distributed-lock-mysql` of the same release).
//!
//! On PostgreSQL `acquire(None)` waits in `pg_advisory_lock`; on MySQL `acquire`
//! waits in `GET_LOCK` (given a timeout, see [`MYSQL_WAIT`]); on Redis it makes one
//! try and fails with a timeout when the lock is taken (on a single server it does not
//! retry), so only the PostgreSQL and MySQL locks run in the contended case.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use distributed_lock::traits::{DistributedLock, LockHandle, LockProvider};
use distributed_lock::{PostgresLockProvider, RedisLockProvider};
use distributed_lock_mysql::MySqlLockProvider;

use crate::contender::{started, Cycler, Role, Started};
use crate::Result;

/// The label of its rows.
pub const LABEL: &str = "distributed-lock 0.2 (acquire + release)";

/// How long the MySQL lock's `acquire` waits. `acquire(None)` asks `GET_LOCK` for a
/// timeout of -1, which MySQL takes for no limit but MariaDB refuses ("Incorrect
/// timeout value", the answer NULL, which the crate reports as an error), so the
/// peer gives a timeout far above any wait of the contended case, as the raw pair does.
pub const MYSQL_WAIT: Duration = Duration::from_secs(60);

/// `acquire(timeout)` then `release()` on one lock of any store. The lock types sit in
/// same-named modules of the backend crates, which the meta crate glob-re-exports
/// ambiguously; they are named through their providers.
struct Peer<L> {
    lock: L,
    /// What `acquire` is given: `None` (wait without limit) but on MySQL.
    timeout: Option<Duration>,
    /// How long the last `acquire` took.
    wait: Option<Duration>,
}

impl<L> Peer<L> {
    fn new(lock: L) -> Self {
        Self {
            lock,
            timeout: None,
            wait: None,
        }
    }
}

/// A lock on the server of the distsync Redis URL `url`.
pub async fn redis(url: &str, name: &str) -> Started {
    let made = async {
        let server = crate::raw::redis::server_url(url)?;
        let provider = RedisLockProvider::builder().url(server).build().await?;
        Ok(Peer::new(provider.create_lock(name)))
    };
    started(LABEL, Role::Peer, made.await)
}

/// A lock over a pool of one connection for the database of the distsync PostgreSQL
/// URL `url`.
///
/// One connection, as the raw pair's client and a distsync session's share of its
/// holds' pool have: a client cycles its lock one acquire at a time, so it uses one
/// connection at a time. sqlx's default pool (10) would open more only because a
/// released connection goes back to the pool in a task of its own: an `acquire` that
/// comes before that task has run opens a new connection instead of waiting for it.
/// At 64 clients that grows to 640 server connections, which take the slots the other
/// sides need (distsync's sessions then cannot renew), while the peer gains nothing
/// from them but skipping that one task's hand-over. Capped, every side is measured
/// with a connection per client, on a server whose `max_connections` fits them all.
pub async fn postgres(url: &str, name: &str) -> Started {
    let made = async {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_with(crate::raw::postgres::options(url)?)
            .await?;
        let provider = PostgresLockProvider::builder().pool(pool).build().await?;
        Ok(Peer::new(provider.create_lock(name)))
    };
    started(LABEL, Role::Peer, made.await)
}

/// A lock over a pool of one connection for the database of the distsync MySQL URL
/// `url`: one connection per client, as on PostgreSQL ([`postgres`] says why).
pub async fn mysql(url: &str, name: &str) -> Started {
    let made = async {
        let pool = sqlx::mysql::MySqlPoolOptions::new()
            .max_connections(1)
            .connect_with(crate::raw::mysql::options(url)?)
            .await?;
        let provider = MySqlLockProvider::builder().pool(pool).build().await?;
        Ok(Peer {
            timeout: Some(MYSQL_WAIT),
            ..Peer::new(provider.create_lock(name))
        })
    };
    started(LABEL, Role::Peer, made.await)
}

#[async_trait]
impl<L: DistributedLock + Send + Sync> Cycler for Peer<L> {
    async fn cycle(&mut self) -> Result<()> {
        self.wait = None;
        let asked = Instant::now();
        let handle = self.lock.acquire(self.timeout).await?;
        self.wait = Some(asked.elapsed());
        handle.release().await?;
        Ok(())
    }

    fn last_wait(&self) -> Option<Duration> {
        self.wait
    }
}
