//! The backend's tables, their names under the URL's prefix, and their creation.

use sqlx::{MySqlConnection, MySqlPool};

use distsync_core::{Error, Result};
use distsync_kv::kv::LeaseId;

use crate::error::map;

/// The longest key the key columns hold, in bytes: InnoDB's index prefix limit (3072
/// bytes) less the log index's revision column, rounded down.
pub(crate) const MAX_KEY_BYTES: usize = 2048;

/// Refuses, for `doing`, a key longer than the key columns hold.
pub(crate) fn check_key_size(doing: &str, key: &str) -> Result<()> {
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::InvalidArgument(format!(
            "{doing}: key of {} bytes is longer than the store's {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

/// The condition on the leases table that picks those of `ids` not expired yet on the
/// server's clock.
pub(crate) fn live_leases(ids: &[LeaseId]) -> String {
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    format!("id IN ({}) AND expires_at > NOW(6)", ids.join(", "))
}

/// The names of the backend's tables, each `<prefix><table>`.
#[derive(Clone, Debug)]
pub(crate) struct Tables {
    /// One row (`id = 1`): the store's revision and its compaction point. Every
    /// writing transaction locks it first, so commits happen in revision order.
    pub(crate) meta: String,
    /// The current state: one row per live key.
    pub(crate) kv: String,
    /// The history: one row per change of one key (a put or a tombstone).
    pub(crate) log: String,
    /// The leases, with their expiry on the server's clock.
    pub(crate) leases: String,
    /// One row per transaction lock's name, locked by its holder's transaction.
    pub(crate) txn_locks: String,
    /// The transaction locks' token counter (`AUTO_INCREMENT`; rows removed again).
    pub(crate) txn_lock_tokens: String,
}

impl Tables {
    /// The tables under `prefix` (validated by the config: letters, digits, `_`).
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            meta: format!("{prefix}meta"),
            kv: format!("{prefix}kv"),
            log: format!("{prefix}log"),
            leases: format!("{prefix}leases"),
            txn_locks: format!("{prefix}txn_locks"),
            txn_lock_tokens: format!("{prefix}txn_lock_tokens"),
        }
    }

    /// Creates the tables, as [`Tables::create`], unless the revision row is there:
    /// it is written after every table, so a store that has it has them all, and a
    /// client connecting to it reads one row instead of six `CREATE TABLE`s. A store
    /// that lost a table since (it forgot, see the crate docs) has it created again by
    /// the first request that finds it missing.
    ///
    /// Cancel safety: as [`Tables::create`].
    pub(crate) async fn ensure(&self, conn: &mut MySqlConnection) -> Result<()> {
        match self.revision_row(conn).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => self.create_on(conn).await,
            Err(error) if crate::error::is_missing_table(&error) => self.create_on(conn).await,
            Err(error) => Err(map(error)),
        }
    }

    /// Creates the tables that do not exist yet, and the revision row (an empty store
    /// is at revision 1, as etcd's). Idempotent, and safe when clients race to it.
    ///
    /// Cancel safety: each statement is atomic; a cancelled call leaves some tables
    /// created, which the next call completes.
    pub(crate) async fn create(&self, pool: &MySqlPool) -> Result<()> {
        let mut conn = pool.acquire().await.map_err(map)?;
        self.create_on(&mut conn).await
    }

    /// The `SELECT` of `columns` from the revision row ([`Tables::meta`]).
    pub(crate) fn meta_row(&self, columns: &str) -> String {
        format!("SELECT {columns} FROM {} WHERE id = 1", self.meta)
    }

    /// The store's revision, read without a lock; `None` before the row is written.
    async fn revision_row(&self, conn: &mut MySqlConnection) -> sqlx::Result<Option<i64>> {
        sqlx::query_scalar(&self.meta_row("revision"))
            .fetch_optional(conn)
            .await
    }

    /// [`Tables::create`] on one connection.
    async fn create_on(&self, conn: &mut MySqlConnection) -> Result<()> {
        let Self {
            meta,
            kv,
            log,
            leases,
            txn_locks,
            txn_lock_tokens,
        } = self;
        let statements = [
            format!(
                "CREATE TABLE IF NOT EXISTS {meta} (
                    id TINYINT UNSIGNED NOT NULL PRIMARY KEY,
                    revision BIGINT NOT NULL,
                    compacted BIGINT NOT NULL
                ) ENGINE=InnoDB"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {kv} (
                    k VARBINARY({MAX_KEY_BYTES}) NOT NULL PRIMARY KEY,
                    create_revision BIGINT NOT NULL,
                    mod_revision BIGINT NOT NULL,
                    version BIGINT NOT NULL,
                    lease BIGINT NOT NULL,
                    v LONGBLOB NOT NULL,
                    KEY by_lease (lease)
                ) ENGINE=InnoDB ROW_FORMAT=DYNAMIC"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {log} (
                    revision BIGINT NOT NULL,
                    sub INT NOT NULL,
                    k VARBINARY({MAX_KEY_BYTES}) NOT NULL,
                    create_revision BIGINT NOT NULL,
                    version BIGINT NOT NULL,
                    lease BIGINT NOT NULL,
                    v LONGBLOB NOT NULL,
                    deleted TINYINT NOT NULL,
                    PRIMARY KEY (revision, sub),
                    KEY by_key (k, revision)
                ) ENGINE=InnoDB ROW_FORMAT=DYNAMIC"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {leases} (
                    id BIGINT NOT NULL PRIMARY KEY,
                    ttl_us BIGINT NOT NULL,
                    expires_at DATETIME(6) NOT NULL,
                    KEY by_expiry (expires_at)
                ) ENGINE=InnoDB"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {txn_locks} (
                    name VARBINARY({MAX_KEY_BYTES}) NOT NULL PRIMARY KEY
                ) ENGINE=InnoDB ROW_FORMAT=DYNAMIC"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {txn_lock_tokens} (
                    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY
                ) ENGINE=InnoDB"
            ),
        ];
        for statement in &statements {
            sqlx::query(statement)
                .execute(&mut *conn)
                .await
                .map_err(map)?;
        }
        // The revision row, unless it is there: a plain read first, since inserting
        // over the row would wait for its lock, which a writer holds.
        if self.revision_row(conn).await.map_err(map)?.is_none() {
            sqlx::query(&format!(
                "INSERT IGNORE INTO {meta} (id, revision, compacted) VALUES (1, 1, 0)"
            ))
            .execute(&mut *conn)
            .await
            .map_err(map)?;
        }
        Ok(())
    }
}
