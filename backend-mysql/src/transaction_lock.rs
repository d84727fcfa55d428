//! A lock scoped to the caller's transaction (see [`TransactionLock`]).

use distsync_core::raw::{require_open_transaction, waited};
use distsync_core::{Error, FencingToken, Name, Result};
use sqlx::{Connection as _, MySqlConnection, MySqlPool};

use crate::error::{is_lock_refused, map};
use crate::schema::Tables;
use crate::BACKEND;

/// A lock held for the rest of the caller's transaction, with a fencing token, for
/// code that does its work in one MySQL transaction; from
/// [`Transactional::transaction_lock`](crate::Transactional::transaction_lock).
///
/// [`TransactionLock::lock`] locks the name's row of the `txn_locks` table
/// (`SELECT … FOR UPDATE`) on the connection the caller passes, so commit or rollback
/// releases it, and a connection that dies releases it with its transaction: there is
/// no session, no renewal and no lease to outlive. Waiting is InnoDB's own lock
/// queue: no polling, and the caller's `innodb_lock_wait_timeout` bounds it. The
/// name's row is created on first use, outside the caller's transaction.
///
/// Once held, the lock draws its fencing token from the `AUTO_INCREMENT` counter of
/// the `txn_lock_tokens` table (its row removed again in the same transaction). InnoDB
/// does not give a counter value back on rollback, and MariaDB (since 10.2.4) and
/// MySQL 8 keep the counter across a restart, so the tokens only grow, across holders
/// that committed or rolled back alike, and no two holders ever share one. The tokens
/// are their own counter: a transaction lock named `n` is not the session lock named
/// `n` (from [`distsync_core::Coordinator::locker`]), and their tokens do not compare.
/// A store that forgets (the tables dropped) restarts the counter: fences that kept
/// the old tokens then refuse the new holders until the tokens pass them, which stops
/// writes but never admits a stale one.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use distsync::store::mysql::Transactional as _;
///
/// let backend = distsync::store::mysql::backend("mysql://app:pw@db/app").await?;
/// let nightly = backend.transaction_lock("reports/nightly")?;
/// let mut tx = backend.pool().begin().await?;
/// let token = nightly.lock(&mut tx).await?;
/// sqlx::query("INSERT INTO reports (run, token) VALUES (NOW(), ?)")
///     .bind(token.get())
///     .execute(&mut *tx)
///     .await?;
/// tx.commit().await?; // releases the lock
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TransactionLock {
    pub(crate) pool: MySqlPool,
    pub(crate) tables: Tables,
    pub(crate) name: Name,
}

impl std::fmt::Debug for TransactionLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionLock")
            .field("name", &self.name.as_str())
            .finish()
    }
}

impl TransactionLock {
    /// The lock's name.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// Waits for the lock and holds it until the transaction open on `conn` (begun with
    /// sqlx's `begin`) commits or rolls back; returns its fencing token.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `conn` has no transaction open (the lock would be
    /// released as soon as taken); the database's error (`innodb_lock_wait_timeout`
    /// passing included): the transaction is then in doubt (roll it back).
    ///
    /// # Cancel safety
    /// Dropping the future part-way leaves the transaction in an unknown state (the lock
    /// may be held): roll it back.
    pub async fn lock(&self, conn: &mut MySqlConnection) -> Result<FencingToken> {
        let token = self.acquire(conn, "").await?;
        waited(BACKEND, "transaction lock", token)
    }

    /// Takes the lock if it is free, as [`Self::lock`]; `None` at once if another
    /// transaction holds it.
    ///
    /// # Errors
    /// As [`Self::lock`].
    ///
    /// # Cancel safety
    /// As [`Self::lock`].
    pub async fn try_lock(&self, conn: &mut MySqlConnection) -> Result<Option<FencingToken>> {
        self.acquire(conn, " NOWAIT").await
    }

    /// Locks the name's row (`FOR UPDATE` and `wait`, `""` or `" NOWAIT"`), then
    /// draws the token; `None` when `NOWAIT` found it held.
    async fn acquire(
        &self,
        conn: &mut MySqlConnection,
        wait: &str,
    ) -> Result<Option<FencingToken>> {
        require_open_transaction(&self.name, conn.is_in_transaction())?;
        let name = self.name.as_str().as_bytes();
        let (locks, tokens) = (&self.tables.txn_locks, &self.tables.txn_lock_tokens);
        // The row, outside the caller's transaction: a plain read first, since an
        // insert over a row another transaction holds would wait for it.
        let exists: Option<i64> =
            sqlx::query_scalar(&format!("SELECT 1 FROM {locks} WHERE name = ?"))
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(map)?;
        if exists.is_none() {
            sqlx::query(&format!("INSERT IGNORE INTO {locks} (name) VALUES (?)"))
                .bind(name)
                .execute(&self.pool)
                .await
                .map_err(map)?;
        }
        let locked = sqlx::query(&format!(
            "SELECT name FROM {locks} WHERE name = ? FOR UPDATE{wait}"
        ))
        .bind(name)
        .fetch_optional(&mut *conn)
        .await;
        match locked {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(Error::backend(
                    BACKEND,
                    "the transaction lock's row is gone (its table was emptied)",
                ))
            }
            Err(error) if !wait.is_empty() && is_lock_refused(&error) => return Ok(None),
            Err(error) => return Err(map(error)),
        }
        let drawn = sqlx::query(&format!("INSERT INTO {tokens} () VALUES ()"))
            .execute(&mut *conn)
            .await
            .map_err(map)?;
        let token = drawn.last_insert_id();
        sqlx::query(&format!("DELETE FROM {tokens} WHERE id = ?"))
            .bind(token)
            .execute(&mut *conn)
            .await
            .map_err(map)?;
        Ok(Some(FencingToken(token)))
    }
}
