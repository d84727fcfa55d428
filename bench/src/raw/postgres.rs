//! PostgreSQL: `pg_advisory_lock`, then `pg_advisory_unlock`, on one connection.

use async_trait::async_trait;
use sqlx::{Connection, PgConnection};

use crate::contender::{Cycler, Role, Unavailable};
use crate::Result;

/// The label of the raw row.
pub const LABEL: &str = "raw: pg_advisory_lock + pg_advisory_unlock";
/// The label of the diagnostic row.
pub const COUNTED_LABEL: &str =
    "raw + a fencing counter UPDATE in the locking statement (as distsync's lock_grant)";

/// The table of fencing counters of the diagnostic row (in the connecting role's
/// default schema).
const FENCE_TABLE: &str = "distsync_bench_fence";

/// The raw PostgreSQL cycle on its own connection; as a diagnostic, the locking
/// statement also bumps a fencing counter row, as distsync's grant does (a write
/// transaction per lock instead of a read-only statement).
pub struct RawPostgres {
    conn: Option<PgConnection>,
    key: i64,
    counted: bool,
}

impl std::fmt::Debug for RawPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawPostgres")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl RawPostgres {
    /// Connects to the database of the distsync URL `url`; the advisory lock key is
    /// derived from `name`.
    pub async fn start(
        url: &str,
        name: &str,
        counted: bool,
    ) -> std::result::Result<Box<dyn Cycler>, Unavailable> {
        let (label, role) = if counted {
            (COUNTED_LABEL, Role::Diagnostic)
        } else {
            (LABEL, Role::Raw)
        };
        Self::connect(url, name, counted)
            .await
            .map(|raw| Box::new(raw) as Box<dyn Cycler>)
            .map_err(|error| (label.to_owned(), role, error))
    }

    async fn connect(url: &str, name: &str, counted: bool) -> Result<Self> {
        let options = distsync::postgres::PostgresConfig::parse(url)?.options;
        let mut conn = PgConnection::connect_with(&options).await?;
        let key = advisory_key(name);
        if counted {
            sqlx::query(&format!(
                "CREATE TABLE IF NOT EXISTS {FENCE_TABLE} \
                 (id bigint PRIMARY KEY, token bigint NOT NULL)"
            ))
            .execute(&mut conn)
            .await?;
            sqlx::query(&format!(
                "INSERT INTO {FENCE_TABLE} VALUES ($1, 0) ON CONFLICT (id) DO NOTHING"
            ))
            .bind(key)
            .execute(&mut conn)
            .await?;
        }
        Ok(Self {
            conn: Some(conn),
            key,
            counted,
        })
    }
}

/// A stable 64-bit advisory lock key for `name` (FNV-1a).
pub fn advisory_key(name: &str) -> i64 {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    i64::from_ne_bytes(hash.to_ne_bytes())
}

#[async_trait]
impl Cycler for RawPostgres {
    fn label(&self) -> String {
        if self.counted { COUNTED_LABEL } else { LABEL }.into()
    }

    fn role(&self) -> Role {
        if self.counted {
            Role::Diagnostic
        } else {
            Role::Raw
        }
    }

    async fn cycle(&mut self) -> Result<()> {
        let conn = self.conn.as_mut().ok_or("connection closed")?;
        if self.counted {
            let sql = format!(
                "WITH locked AS (SELECT pg_advisory_lock($1)) \
                 UPDATE {FENCE_TABLE} SET token = token + 1 \
                 WHERE id = $1 AND EXISTS (SELECT 1 FROM locked) RETURNING token"
            );
            let token: Option<i64> = sqlx::query_scalar(&sql)
                .bind(self.key)
                .fetch_optional(&mut *conn)
                .await?;
            if token.is_none() {
                return Err("the fencing counter row is missing".into());
            }
        } else {
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(self.key)
                .execute(&mut *conn)
                .await?;
        }
        let unlocked: bool = sqlx::query_scalar("SELECT pg_advisory_unlock($1)")
            .bind(self.key)
            .fetch_one(&mut *conn)
            .await?;
        if !unlocked {
            return Err("pg_advisory_unlock: the lock was not held".into());
        }
        Ok(())
    }

    async fn close(mut self: Box<Self>) -> Result<()> {
        if let Some(mut conn) = self.conn.take() {
            if self.counted {
                sqlx::query(&format!("DELETE FROM {FENCE_TABLE} WHERE id = $1"))
                    .bind(self.key)
                    .execute(&mut conn)
                    .await?;
            }
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
    let options = distsync::postgres::PostgresConfig::parse(url)?.options;
    let mut conn = PgConnection::connect_with(&options).await?;
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
