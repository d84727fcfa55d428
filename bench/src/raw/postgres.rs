//! PostgreSQL: `pg_advisory_lock`, then `pg_advisory_unlock`, on one connection.

use async_trait::async_trait;
use sqlx::{Connection, PgConnection};

use super::session_lock::{SessionLock, Statements};
use crate::contender::{started, Role, Started};
use crate::Result;

/// The label of the raw row.
pub const LABEL: &str = "raw: pg_advisory_lock + pg_advisory_unlock";

/// The advisory lock of one key.
struct Advisory {
    key: i64,
}

/// Connects to the database of the distsync URL `url`; the advisory lock key is
/// derived from `name`.
pub async fn start(url: &str, name: &str) -> Started {
    let made = async {
        let conn = PgConnection::connect_with(&options(url)?).await?;
        let key = advisory_key(name);
        Ok(SessionLock::new(conn, Advisory { key }))
    };
    started(LABEL, Role::Raw, made.await)
}

/// The connection options of the distsync URL `url`.
///
/// # Errors
/// A URL distsync would reject.
pub fn options(url: &str) -> Result<sqlx::postgres::PgConnectOptions> {
    Ok(distsync::store::postgres::PostgresConfig::parse(url)?.options)
}

/// A stable 64-bit advisory lock key for `name` ([`super::name_hash`]).
pub fn advisory_key(name: &str) -> i64 {
    i64::from_ne_bytes(super::name_hash(name).to_ne_bytes())
}

#[async_trait]
impl Statements<PgConnection> for Advisory {
    async fn lock(&self, conn: &mut PgConnection) -> Result<()> {
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(self.key)
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn unlock(&self, conn: &mut PgConnection) -> Result<()> {
        let unlocked: bool = sqlx::query_scalar("SELECT pg_advisory_unlock($1)")
            .bind(self.key)
            .fetch_one(conn)
            .await?;
        if !unlocked {
            return Err("pg_advisory_unlock: the lock was not held".into());
        }
        Ok(())
    }
}

/// Connections the server at the distsync URL `url` can still accept:
/// `max_connections` less those open and those reserved for superusers.
///
/// # Errors
/// The connection or query error.
pub async fn free_connections(url: &str) -> Result<usize> {
    let mut conn = PgConnection::connect_with(&options(url)?).await?;
    let (max, reserved, used): (i64, i64, i64) = sqlx::query_as(
        "SELECT current_setting('max_connections')::bigint, \
                current_setting('superuser_reserved_connections')::bigint, \
                (SELECT count(*) FROM pg_stat_activity)",
    )
    .fetch_one(&mut conn)
    .await?;
    conn.close().await?;
    Ok(usize::try_from((max - reserved - used).max(0))?)
}
