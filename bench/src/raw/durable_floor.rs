//! The durable floor of the SQL stores: the smallest grant a crash cannot take back,
//! one row update and a synchronous commit, with every client of the contended case
//! updating the same row. The row's lock serializes the updates and is held until the
//! commit is on disk, so the floor's grants/s show what the fsync alone allows: a
//! durable lock cannot grant faster on one name than its store commits one row, and
//! distsync's durable grants are judged against it, beside the peer.
//!
//! - PostgreSQL: `UPDATE … SET grants = grants + 1` in its own transaction with
//!   `synchronous_commit = on` (the durable backend's setting);
//! - MySQL/MariaDB: the same `UPDATE` with autocommit, flushed at commit as the
//!   server's `innodb_flush_log_at_trx_commit` says (1, its default, in the bench).
//!
//! Each client owns a connection; the "unlock" half of a cycle sends nothing. The table
//! (`distsync_bench_floor`, a row per lock name) is made on first use and its row
//! deleted when the clients close; the table stays, on the bench's own servers.

#[cfg(any(feature = "postgres", feature = "mysql"))]
use async_trait::async_trait;
#[cfg(any(feature = "postgres", feature = "mysql"))]
use sqlx::Connection;
#[cfg(feature = "mysql")]
use sqlx::MySqlConnection;
#[cfg(feature = "postgres")]
use sqlx::PgConnection;

#[cfg(any(feature = "postgres", feature = "mysql"))]
use super::session_lock::{SessionLock, Statements};
#[cfg(any(feature = "postgres", feature = "mysql"))]
use crate::contender::{started, Role, Started};
#[cfg(any(feature = "postgres", feature = "mysql"))]
use crate::Result;

/// The label of the floor's row.
pub const LABEL: &str = "floor: one row update + synchronous commit";

/// The floor's table.
#[cfg(any(feature = "postgres", feature = "mysql"))]
const TABLE: &str = "distsync_bench_floor";

/// The floor's row: the lock name's.
#[cfg(any(feature = "postgres", feature = "mysql"))]
struct Floor {
    name: String,
}

/// An update that did not find the row: someone deleted it under the run.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn missing(name: &str) -> crate::BoxError {
    format!("the durable floor's row for {name} is missing").into()
}

/// The floor's statements on the connection type `$conn`, whose SQL writes a
/// parameter as `$param`: the two stores differ in nothing else.
#[cfg(any(feature = "postgres", feature = "mysql"))]
macro_rules! floor_statements {
    ($conn:ty, $param:literal) => {
        #[async_trait]
        impl Statements<$conn> for Floor {
            async fn lock(&self, conn: &mut $conn) -> Result<()> {
                let updated = sqlx::query(&format!(
                    "UPDATE {TABLE} SET grants = grants + 1 WHERE name = {}",
                    $param
                ))
                .bind(&self.name)
                .execute(conn)
                .await?;
                if updated.rows_affected() != 1 {
                    return Err(missing(&self.name));
                }
                Ok(())
            }

            async fn unlock(&self, _conn: &mut $conn) -> Result<()> {
                Ok(())
            }

            async fn close(&self, conn: &mut $conn) -> Result<()> {
                sqlx::query(&format!("DELETE FROM {TABLE} WHERE name = {}", $param))
                    .bind(&self.name)
                    .execute(conn)
                    .await?;
                Ok(())
            }
        }
    };
}

/// Connects to the database of the distsync URL `url`, makes the table and the
/// row of `name` (one client at a time, under a transaction-scoped advisory lock:
/// `CREATE TABLE IF NOT EXISTS` races with itself on PostgreSQL) and sets
/// synchronous commits.
#[cfg(feature = "postgres")]
pub async fn start_postgres(url: &str, name: &str) -> Started {
    let made = async {
        let mut conn = PgConnection::connect_with(&crate::raw::postgres::options(url)?).await?;
        // "already exists, skipping" is every client but the first's notice.
        sqlx::query("SET client_min_messages = warning")
            .execute(&mut conn)
            .await?;
        let mut tx = conn.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(crate::raw::postgres::advisory_key(TABLE))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {TABLE} (name text PRIMARY KEY, grants bigint NOT NULL)"
        ))
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "INSERT INTO {TABLE} (name, grants) VALUES ($1, 0) ON CONFLICT DO NOTHING"
        ))
        .bind(name)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        sqlx::query("SET synchronous_commit = on")
            .execute(&mut conn)
            .await?;
        let name = name.to_owned();
        Ok(SessionLock::new(conn, Floor { name }))
    };
    started(LABEL, Role::Raw, made.await)
}

#[cfg(feature = "postgres")]
floor_statements!(PgConnection, "$1");

/// Connects to the database of the distsync URL `url` and makes the table and
/// the row of `name` (MariaDB's `CREATE TABLE IF NOT EXISTS` only warns when
/// another client made it first).
#[cfg(feature = "mysql")]
pub async fn start_mysql(url: &str, name: &str) -> Started {
    let made = async {
        let mut conn = MySqlConnection::connect_with(&crate::raw::mysql::options(url)?).await?;
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {TABLE} \
             (name VARCHAR(255) PRIMARY KEY, grants BIGINT NOT NULL) ENGINE = InnoDB"
        ))
        .execute(&mut conn)
        .await?;
        sqlx::query(&format!(
            "INSERT IGNORE INTO {TABLE} (name, grants) VALUES (?, 0)"
        ))
        .bind(name)
        .execute(&mut conn)
        .await?;
        let name = name.to_owned();
        Ok(SessionLock::new(conn, Floor { name }))
    };
    started(LABEL, Role::Raw, made.await)
}

#[cfg(feature = "mysql")]
floor_statements!(MySqlConnection, "?");
