//! [`Transactional`]: the calls of a [`MysqlBackend`] that join the caller's own
//! transactions, spelled as the PostgreSQL backend's.

use distsync_core::Primitives;
use std::sync::Arc;

use distsync_core::{Name, Result};
use sqlx::MySqlPool;

use crate::{MysqlBackend, Outbox, TransactionLock};

/// What a [`MysqlBackend`] offers inside the caller's own transactions: the
/// transactional outbox, a lock scoped to the transaction, and the pool to begin
/// them on. The same calls as the PostgreSQL backend's own methods, so code moving
/// between the two keeps its spelling once this trait is in scope.
pub trait Transactional {
    /// The pool this backend's primitives run on: for an application whose data
    /// lives in the same database, to begin the transactions an [`Outbox`], [`crate::ack_in`]
    /// or a [`TransactionLock`] joins.
    fn pool(&self) -> &MySqlPool;

    /// Enqueues into the queue `queue` inside the caller's own transactions: the
    /// transactional outbox (see [`Outbox`]).
    ///
    /// # Errors
    /// [`distsync_core::Error::InvalidName`] for a bad queue name.
    fn outbox(&self, queue: &str) -> Result<Outbox>;

    /// A lock held for the rest of the caller's transaction, with a fencing token (see
    /// [`TransactionLock`]).
    ///
    /// # Errors
    /// [`distsync_core::Error::InvalidName`] for a bad lock name.
    fn transaction_lock(&self, name: &str) -> Result<TransactionLock>;
}

impl Transactional for MysqlBackend {
    fn pool(&self) -> &MySqlPool {
        self.kv().store().pool()
    }

    fn outbox(&self, queue: &str) -> Result<Outbox> {
        Ok(Outbox {
            queue: Arc::from(self.queue(Name::new(queue)?)?),
            capabilities: self.capabilities().clone(),
            running: Arc::default(),
        })
    }

    fn transaction_lock(&self, name: &str) -> Result<TransactionLock> {
        Ok(TransactionLock {
            pool: self.kv().store().pool().clone(),
            tables: self.kv().store().tables().clone(),
            name: Name::new(name)?,
        })
    }
}
