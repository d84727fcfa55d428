//! PostgreSQL: `pg_advisory_lock`, then `pg_advisory_unlock`, on one connection.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::{Connection, PgConnection};

use crate::contender::{started, Cycler, Role, Started};
use crate::Result;

/// The label of the raw row.
pub const LABEL: &str = "raw: pg_advisory_lock + pg_advisory_unlock";

/// The raw PostgreSQL cycle on its own connection.
struct RawPostgres {
    conn: Option<PgConnection>,
    key: i64,
    /// How long the last `pg_advisory_lock` took (it waits while another session
    /// holds the key, so the pair also runs in the contended case).
    wait: Option<Duration>,
}

/// Connects to the database of the distsync URL `url`; the advisory lock key is
/// derived from `name`.
pub async fn start(url: &str, name: &str) -> Started {
    let made = async {
        let conn = PgConnection::connect_with(&options(url)?).await?;
        Ok(RawPostgres {
            conn: Some(conn),
            key: advisory_key(name),
            wait: None,
        })
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
impl Cycler for RawPostgres {
    async fn cycle(&mut self) -> Result<()> {
        let conn = self.conn.as_mut().ok_or("connection closed")?;
        self.wait = None;
        let asked = Instant::now();
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(self.key)
            .execute(&mut *conn)
            .await?;
        self.wait = Some(asked.elapsed());
        let unlocked: bool = sqlx::query_scalar("SELECT pg_advisory_unlock($1)")
            .bind(self.key)
            .fetch_one(&mut *conn)
            .await?;
        if !unlocked {
            return Err("pg_advisory_unlock: the lock was not held".into());
        }
        Ok(())
    }

    fn last_wait(&self) -> Option<Duration> {
        self.wait
    }

    async fn close(mut self: Box<Self>) -> Result<()> {
        if let Some(conn) = self.conn.take() {
            conn.close().await?;
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
