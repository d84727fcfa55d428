//! A lock scoped to the caller's transaction (see [`TransactionLock`]).

use std::sync::Arc;

use distsync_core::raw::{require_open_transaction, waited};
use distsync_core::{FencingToken, Name, Result};
use sqlx::{Connection as _, PgConnection};

use crate::error::map;
use crate::store::Shared;

/// A lock held for the rest of the caller's transaction, with a fencing token, for code
/// that does its work in one PostgreSQL transaction; from
/// [`PostgresBackend::transaction_lock`](crate::PostgresBackend::transaction_lock).
///
/// [`TransactionLock::lock`] takes a transaction-level advisory lock on the connection
/// the caller passes (`pg_advisory_xact_lock`), so commit or rollback releases it, and
/// a connection that dies releases it with its transaction: there is no session, no
/// renewal and no lease to outlive. The key is a 64-bit hash of the schema and the name
/// (`hashtextextended`, computed by the server, so every client agrees); two names that
/// share a key (one pair in 2⁶⁴) exclude each other, which delays but never admits two
/// holders of one name. Waiting is PostgreSQL's own lock queue: no polling, and the
/// caller's `lock_timeout` bounds it.
///
/// Once held, the lock draws its fencing token from a sequence of the schema
/// (`transaction_lock_tokens`). A sequence is not rewound by a rollback, so the tokens of
/// one name only grow, across holders that committed or rolled back alike, and no two
/// holders ever share one: a holder that rolled back and still acts on its token is
/// told from the next. The tokens are their own counter: a transaction lock named `n`
/// is not the session lock named `n` (from [`distsync_core::Coordinator::locker`]), and
/// their tokens do not compare. A store that forgets (the schema created again)
/// restarts the sequence: fences that kept the old tokens then refuse the new holders
/// until the tokens pass them, which stops writes but never admits a stale one.
///
/// The lock guards the caller's transaction on this database. To fence the writes to
/// another table, pass the token to [`crate::fence::admit`] in the same transaction.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let backend = distsync::store::postgres::backend("postgres://app@db/app").await?;
/// let nightly = backend.transaction_lock("reports/nightly")?;
/// let mut tx = backend.pool().begin().await?;
/// let token = nightly.lock(&mut tx).await?;
/// sqlx::query("INSERT INTO app.reports (run, token) VALUES (now(), $1)")
///     .bind(i64::try_from(token.get())?)
///     .execute(&mut *tx)
///     .await?;
/// tx.commit().await?; // releases the lock
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TransactionLock {
    pub(crate) shared: Arc<Shared>,
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
    /// [`Error::InvalidArgument`](distsync_core::Error::InvalidArgument) when `conn` has
    /// no transaction open (the lock would be released as soon as taken); the
    /// database's error (`lock_timeout` passing included): the transaction is then in
    /// doubt (roll it back).
    ///
    /// # Cancel safety
    /// Dropping the future part-way leaves the transaction in an unknown state (the lock
    /// may be held): roll it back.
    pub async fn lock(&self, conn: &mut PgConnection) -> Result<FencingToken> {
        let token = self.acquire(conn, "pg_advisory_xact_lock").await?;
        waited(crate::error::BACKEND, "transaction lock", token)
    }

    /// Takes the lock if it is free, as [`Self::lock`]; `None` at once if another
    /// transaction holds it.
    ///
    /// # Errors
    /// As [`Self::lock`].
    ///
    /// # Cancel safety
    /// As [`Self::lock`].
    pub async fn try_lock(&self, conn: &mut PgConnection) -> Result<Option<FencingToken>> {
        self.acquire(conn, "pg_try_advisory_xact_lock").await
    }

    /// Takes the lock with `function` (`pg_advisory_xact_lock` answers void, taken;
    /// `pg_try_advisory_xact_lock` whether it took it), then draws the token.
    async fn acquire(
        &self,
        conn: &mut PgConnection,
        function: &str,
    ) -> Result<Option<FencingToken>> {
        require_open_transaction(&self.name, conn.is_in_transaction())?;
        let token: Option<i64> = sqlx::query_scalar(&self.shared.sql(&format!(
            "WITH taken AS (SELECT {function}(hashtextextended($1, 0))::text AS answer) \
             SELECT nextval('{{s}}.transaction_lock_tokens') FROM taken \
              WHERE answer IS DISTINCT FROM 'false'"
        )))
        .bind(format!("{}/{}", self.shared.schema, self.name.as_str()))
        .fetch_optional(&mut *conn)
        .await
        .map_err(map)?;
        Ok(token.map(|token| FencingToken(u64::try_from(token).unwrap_or(0))))
    }
}
