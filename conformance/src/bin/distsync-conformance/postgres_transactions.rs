//! The runner's database of the caller's ([`CallerTransactions`]): a PostgreSQL
//! database, written the way a user writes it, through the library's calls that join the
//! caller's transaction (an [`Outbox`](distsync::store::postgres::Outbox) enqueue,
//! [`ack_in`], [`fence::admit`]) on a pool of the backend's.
//!
//! The tables of a case's scope live in the schema [`SCHEMA`], created on first use, and
//! are dropped when the case forgets them.

use std::sync::Arc;

use async_trait::async_trait;
use distsync::store::postgres::sqlx::{self, PgPool};
use distsync::store::postgres::{ack_in, fence, PostgresBackend};
use distsync_conformance::faults::CallerTransactions;
use distsync_core::{Backend, Delivery, Error, FencingToken, Name, Result};

/// The schema of the cases' tables.
const SCHEMA: &str = "distsync_conformance_tables";

/// A PostgreSQL database, with a backend of the library over it.
pub(crate) struct PostgresTransactions {
    url: String,
    backend: Arc<PostgresBackend>,
    pool: PgPool,
}

impl PostgresTransactions {
    /// Connects to the database at `url` (a `postgres://` URL of the library's).
    ///
    /// # Errors
    /// The backend's connection error.
    pub(crate) async fn connect(url: &str) -> Result<Self> {
        let backend = distsync::store::postgres::backend(url).await?;
        let pool = backend.pool().clone();
        Ok(Self {
            url: url.to_owned(),
            backend: Arc::new(backend),
            pool,
        })
    }

    /// The table `what` of `scope`, schema-qualified.
    fn table(scope: &str, what: &str) -> String {
        format!("{SCHEMA}.{scope}_{what}")
    }
}

/// A database error as the library reports it (its message; no URL).
fn database(error: sqlx::Error) -> Error {
    Error::backend("postgres", error)
}

/// The item's id (its decimal digits).
fn item_id(delivery: &Delivery) -> Result<i64> {
    std::str::from_utf8(delivery.item())
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| Error::InvalidArgument("an item that is no id".into()))
}

/// `id` as a bigint.
fn bigint(id: u64) -> Result<i64> {
    i64::try_from(id).map_err(|_| Error::InvalidArgument(format!("id {id} is above bigint")))
}

#[async_trait]
impl CallerTransactions for PostgresTransactions {
    fn describe(&self) -> String {
        format!("PostgreSQL ({})", distsync::store::redact_url(&self.url))
    }

    fn url(&self) -> String {
        self.url.clone()
    }

    fn store(&self) -> Option<Arc<dyn Backend>> {
        Some(Arc::clone(&self.backend) as Arc<dyn Backend>)
    }

    async fn prepare(&self, scope: &str) -> Result<()> {
        // Every column's cases share the caller database, and two concurrent
        // `CREATE SCHEMA IF NOT EXISTS` may both insert the schema (one then fails on
        // pg_namespace's unique index): a transaction-scoped advisory lock orders them,
        // and the second sees the first's schema once it commits.
        sqlx::raw_sql(&format!(
            "SELECT pg_advisory_xact_lock(hashtext('distsync-conformance caller schema'));
             CREATE SCHEMA IF NOT EXISTS {SCHEMA};
             CREATE TABLE {} (id bigint PRIMARY KEY);
             CREATE TABLE {} (item bigint NOT NULL);
             CREATE TABLE {} (resource text PRIMARY KEY, writer text NOT NULL);",
            Self::table(scope, "orders"),
            Self::table(scope, "effects"),
            Self::table(scope, "resources"),
        ))
        .execute(&self.pool)
        .await
        .map_err(database)?;
        Ok(())
    }

    async fn forget(&self, scope: &str) -> Result<()> {
        sqlx::raw_sql(&format!(
            "DROP TABLE IF EXISTS {}, {}, {}, {}",
            Self::table(scope, "orders"),
            Self::table(scope, "effects"),
            Self::table(scope, "resources"),
            Self::table(scope, "fences"),
        ))
        .execute(&self.pool)
        .await
        .map_err(database)?;
        Ok(())
    }

    async fn place(&self, scope: &str, queue: &Name, id: u64) -> Result<()> {
        let outbox = self.backend.outbox(queue.as_str())?;
        let mut tx = self.pool.begin().await.map_err(database)?;
        sqlx::query(&format!(
            "INSERT INTO {} VALUES ($1)",
            Self::table(scope, "orders")
        ))
        .bind(bigint(id)?)
        .execute(&mut *tx)
        .await
        .map_err(database)?;
        outbox.enqueue(&mut tx, id.to_string()).await?;
        tx.commit().await.map_err(database)
    }

    async fn apply(&self, scope: &str, delivery: Delivery) -> Result<()> {
        let id = item_id(&delivery)?;
        let mut tx = self.pool.begin().await.map_err(database)?;
        sqlx::query(&format!(
            "INSERT INTO {} VALUES ($1)",
            Self::table(scope, "effects")
        ))
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(database)?;
        let pending = ack_in(&mut tx, delivery).await?;
        tx.commit().await.map_err(database)?;
        pending.committed();
        Ok(())
    }

    async fn orders(&self, scope: &str) -> Result<Vec<u64>> {
        self.ids(&format!(
            "SELECT id FROM {} ORDER BY id",
            Self::table(scope, "orders")
        ))
        .await
    }

    async fn effects(&self, scope: &str) -> Result<Vec<u64>> {
        self.ids(&format!(
            "SELECT item FROM {} ORDER BY item",
            Self::table(scope, "effects")
        ))
        .await
    }

    async fn fenced_write(
        &self,
        scope: &str,
        resource: &str,
        token: FencingToken,
        writer: &str,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await.map_err(database)?;
        if !fence::admit(&mut tx, &Self::table(scope, "fences"), resource, token).await? {
            return Ok(false);
        }
        sqlx::query(&format!(
            "INSERT INTO {} VALUES ($1, $2) \
             ON CONFLICT (resource) DO UPDATE SET writer = EXCLUDED.writer",
            Self::table(scope, "resources")
        ))
        .bind(resource)
        .bind(writer)
        .execute(&mut *tx)
        .await
        .map_err(database)?;
        tx.commit().await.map_err(database)?;
        Ok(true)
    }

    async fn last_writer(&self, scope: &str, resource: &str) -> Result<Option<String>> {
        sqlx::query_scalar(&format!(
            "SELECT writer FROM {} WHERE resource = $1",
            Self::table(scope, "resources")
        ))
        .bind(resource)
        .fetch_optional(&self.pool)
        .await
        .map_err(database)
    }
}

impl PostgresTransactions {
    /// The ids a query answers.
    async fn ids(&self, query: &str) -> Result<Vec<u64>> {
        let ids: Vec<i64> = sqlx::query_scalar(query)
            .fetch_all(&self.pool)
            .await
            .map_err(database)?;
        Ok(ids
            .into_iter()
            .map(|id| u64::try_from(id).unwrap_or(0))
            .collect())
    }
}
