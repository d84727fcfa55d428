//! A lock the SQL server holds for one connection's session (PostgreSQL's advisory
//! locks, MySQL's named locks), cycled on a connection of its own: the raw floor of
//! both SQL stores.

use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::contender::Cycler;
use crate::Result;

/// One store's statements for its session lock on the connection type `C`.
#[async_trait]
pub(crate) trait Statements<C>: Send + Sync {
    /// Takes the lock, waiting while another connection holds it (so the pair also
    /// runs in the contended case).
    async fn lock(&self, conn: &mut C) -> Result<()>;

    /// Releases the lock; an error if this connection did not hold it.
    async fn unlock(&self, conn: &mut C) -> Result<()>;

    /// Removes what the statements made on the server, before the connection closes.
    async fn close(&self, _conn: &mut C) -> Result<()> {
        Ok(())
    }
}

/// A session lock cycled on its own connection.
pub(crate) struct SessionLock<C, S> {
    conn: Option<C>,
    statements: S,
    /// How long the last lock statement took, waiting included.
    wait: Option<Duration>,
}

impl<C, S> SessionLock<C, S> {
    /// The lock of `statements` on `conn`, which it closes when it is closed.
    pub(crate) fn new(conn: C, statements: S) -> Self {
        Self {
            conn: Some(conn),
            statements,
            wait: None,
        }
    }
}

#[async_trait]
impl<C: sqlx::Connection, S: Statements<C>> Cycler for SessionLock<C, S> {
    async fn cycle(&mut self) -> Result<()> {
        let conn = self.conn.as_mut().ok_or("connection closed")?;
        self.wait = None;
        let asked = Instant::now();
        self.statements.lock(conn).await?;
        self.wait = Some(asked.elapsed());
        self.statements.unlock(conn).await
    }

    fn last_wait(&self) -> Option<Duration> {
        self.wait
    }

    async fn close(mut self: Box<Self>) -> Result<()> {
        if let Some(mut conn) = self.conn.take() {
            self.statements.close(&mut conn).await?;
            conn.close().await?;
        }
        Ok(())
    }
}
