//! The runner's database of the caller's on a MySQL column ([`CallerTransactions`]): the
//! column's MariaDB, written the way a user writes it, through the library's calls that
//! join the caller's transaction (an [`Outbox`](distsync::store::mysql::Outbox)
//! enqueue, [`ack_in`]) on the backend's pool. Fenced writes go to the PostgreSQL
//! database beside it, which the fenced-write case names.
//!
//! The tables of a case's scope live in the column's database beside the backend's,
//! and are dropped when the case forgets them.

use std::sync::Arc;

use async_trait::async_trait;
use distsync::store::mysql::sqlx::{self, MySqlPool};
use distsync::store::mysql::{ack_in, database_error, MysqlBackend, Transactional as _};
use distsync_conformance::faults::CallerTransactions;
use distsync_core::{Backend, Delivery, Error, FencingToken, Name, Result};

/// The prefix of the cases' tables, apart from the backend's own: short, as MySQL names
/// a table in at most 64 characters and a scope takes up to 42.
const PREFIX: &str = "dsc_";

/// A MySQL database, with a backend of the library over it, and the PostgreSQL
/// database beside it for fenced writes (when there is one).
pub(crate) struct MysqlTransactions {
    url: String,
    backend: Arc<MysqlBackend>,
    pool: MySqlPool,
    fences: Option<Arc<dyn CallerTransactions>>,
}

impl MysqlTransactions {
    /// Connects to the database at `url` (a `mysql://` URL of the library's), with
    /// `fences` for the fenced writes.
    ///
    /// # Errors
    /// The backend's connection error.
    pub(crate) async fn connect(
        url: &str,
        fences: Option<Arc<dyn CallerTransactions>>,
    ) -> Result<Self> {
        let backend = distsync::store::mysql::backend(url).await?;
        let pool = backend.pool().clone();
        Ok(Self {
            url: url.to_owned(),
            backend: Arc::new(backend),
            pool,
            fences,
        })
    }

    /// The table `what` of `scope`.
    fn table(scope: &str, what: &str) -> String {
        format!("{PREFIX}{scope}_{what}")
    }

    /// The database beside, for fenced writes.
    fn fences(&self) -> Result<&Arc<dyn CallerTransactions>> {
        self.fences.as_ref().ok_or_else(|| {
            Error::unsupported(
                "conformance",
                "fenced writes from a MySQL column need the PostgreSQL database beside it",
            )
        })
    }

    /// The ids a query answers.
    async fn ids(&self, query: &str) -> Result<Vec<u64>> {
        let ids: Vec<i64> = sqlx::query_scalar(query)
            .fetch_all(&self.pool)
            .await
            .map_err(database_error)?;
        Ok(ids
            .into_iter()
            .map(|id| u64::try_from(id).unwrap_or(0))
            .collect())
    }
}

/// The item's id (its decimal digits).
fn item_id(delivery: &Delivery) -> Result<i64> {
    std::str::from_utf8(delivery.item())
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| Error::InvalidArgument("an item that is no id".into()))
}

/// `id` as a BIGINT.
fn bigint(id: u64) -> Result<i64> {
    i64::try_from(id).map_err(|_| Error::InvalidArgument(format!("id {id} is above bigint")))
}

#[async_trait]
impl CallerTransactions for MysqlTransactions {
    fn describe(&self) -> String {
        format!("MySQL ({})", distsync::store::redact_url(&self.url))
    }

    fn url(&self) -> String {
        self.url.clone()
    }

    fn store(&self) -> Option<Arc<dyn Backend>> {
        Some(Arc::clone(&self.backend) as Arc<dyn Backend>)
    }

    async fn prepare(&self, scope: &str) -> Result<()> {
        for statement in [
            format!(
                "CREATE TABLE {} (id BIGINT PRIMARY KEY) ENGINE=InnoDB",
                Self::table(scope, "orders")
            ),
            format!(
                "CREATE TABLE {} (item BIGINT NOT NULL) ENGINE=InnoDB",
                Self::table(scope, "effects")
            ),
        ] {
            sqlx::query(&statement)
                .execute(&self.pool)
                .await
                .map_err(database_error)?;
        }
        match &self.fences {
            Some(fences) => fences.prepare(scope).await,
            None => Ok(()),
        }
    }

    async fn forget(&self, scope: &str) -> Result<()> {
        sqlx::query(&format!(
            "DROP TABLE IF EXISTS {}, {}",
            Self::table(scope, "orders"),
            Self::table(scope, "effects"),
        ))
        .execute(&self.pool)
        .await
        .map_err(database_error)?;
        match &self.fences {
            Some(fences) => fences.forget(scope).await,
            None => Ok(()),
        }
    }

    async fn place(&self, scope: &str, queue: &Name, id: u64) -> Result<()> {
        let outbox = self.backend.outbox(queue.as_str())?;
        let mut tx = self.pool.begin().await.map_err(database_error)?;
        sqlx::query(&format!(
            "INSERT INTO {} VALUES (?)",
            Self::table(scope, "orders")
        ))
        .bind(bigint(id)?)
        .execute(&mut *tx)
        .await
        .map_err(database_error)?;
        outbox.enqueue(&mut tx, id.to_string()).await?;
        tx.commit().await.map_err(database_error)
    }

    async fn apply(&self, scope: &str, delivery: Delivery) -> Result<()> {
        let id = item_id(&delivery)?;
        let mut tx = self.pool.begin().await.map_err(database_error)?;
        sqlx::query(&format!(
            "INSERT INTO {} VALUES (?)",
            Self::table(scope, "effects")
        ))
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(database_error)?;
        // On an error the transaction is dropped, which rolls it back.
        ack_in(&mut tx, delivery).await?.commit(tx).await
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
        self.fences()?
            .fenced_write(scope, resource, token, writer)
            .await
    }

    async fn last_writer(&self, scope: &str, resource: &str) -> Result<Option<String>> {
        self.fences()?.last_writer(scope, resource).await
    }
}
