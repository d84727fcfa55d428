//! A database of the caller's beside the store: the hook of the cases that measure
//! effects in the caller's own transaction ([`Hook::CallerTransactions`](super::Hook)).
//!
//! Each method is one transaction of the caller's, written the way a user writes it with
//! the store's own calls (PostgreSQL: an `Outbox` enqueue, `ack_in`, `fence::admit`), on
//! tables of the case's own named by `scope`: `orders` (a producer's business rows),
//! `effects` (a consumer's, one row per application, so that a second application of
//! an item shows as a second row) and a fence table. The cases judge what the tables
//! and the queue hold after the faults.

use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::{Backend, Delivery, FencingToken, Name, Result};

/// One database and the calls of the library that write to it in the caller's
/// transactions (see the [module docs](self)).
///
/// Cancel-safety: a cancelled call's transaction is rolled back by the database (its
/// connection is dropped), as a crashed caller's is.
#[async_trait]
pub trait CallerTransactions: Send + Sync {
    /// What the database is, for reports (a redacted URL, say).
    fn describe(&self) -> String;

    /// The database's URL, for a worker process to connect with
    /// ([`crate::faults::effects_worker`]); never printed.
    fn url(&self) -> String;

    /// The store whose queues [`CallerTransactions::place`] and
    /// [`CallerTransactions::apply`] write: the database itself, seen as a store, where
    /// it is one (`None` for a database beside another store, which only fences).
    fn store(&self) -> Option<Arc<dyn Backend>>;

    /// Creates the tables of `scope` (letters, digits and `_`), empty.
    ///
    /// # Errors
    /// The database's error.
    async fn prepare(&self, scope: &str) -> Result<()>;

    /// Drops the tables of `scope`.
    ///
    /// # Errors
    /// The database's error.
    async fn forget(&self, scope: &str) -> Result<()>;

    /// In one transaction: the order row `id` of `scope` and the item `id` (its
    /// decimal digits) on `queue`, through the store's outbox.
    ///
    /// # Errors
    /// The database's error (the transaction rolled back).
    async fn place(&self, scope: &str, queue: &Name, id: u64) -> Result<()>;

    /// In one transaction: an effect row of `scope` for the delivery's item (its
    /// decimal digits), and the delivery's acknowledgement.
    ///
    /// # Errors
    /// [`distsync_core::Error::SessionLost`] when the acknowledgement is refused (the
    /// delivery is stale; the transaction rolled back, its effect row with it); a
    /// transient error when the store ended the transaction (its connection broke, the
    /// transaction rolled back with it: the item is delivered again); the database's
    /// error.
    async fn apply(&self, scope: &str, delivery: Delivery) -> Result<()>;

    /// The order ids of `scope`, ascending.
    ///
    /// # Errors
    /// The database's error.
    async fn orders(&self, scope: &str) -> Result<Vec<u64>>;

    /// The item ids of `scope`'s effect rows, ascending, one per row (an item applied
    /// twice appears twice).
    ///
    /// # Errors
    /// The database's error.
    async fn effects(&self, scope: &str) -> Result<Vec<u64>>;

    /// In one transaction: admits `token` for `resource` at `scope`'s fence table and,
    /// if admitted, writes `writer` as the resource's last writer; whether it committed
    /// the write.
    ///
    /// # Errors
    /// The database's error.
    async fn fenced_write(
        &self,
        scope: &str,
        resource: &str,
        token: FencingToken,
        writer: &str,
    ) -> Result<bool>;

    /// The last writer of `resource` at `scope`, if any.
    ///
    /// # Errors
    /// The database's error.
    async fn last_writer(&self, scope: &str, resource: &str) -> Result<Option<String>>;
}

/// A scope name for `key` (a case's key, with `/` and other characters): letters,
/// digits and `_` only, short enough for a PostgreSQL identifier with a table suffix.
pub fn scope_of(key: &str) -> String {
    let cleaned: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let tail: String = cleaned.chars().rev().take(40).collect();
    format!("s_{}", tail.chars().rev().collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::scope_of;

    #[test]
    fn scopes_are_identifiers() {
        let scope = scope_of("conf/transactions_outbox_crashes/1a2B-3");
        assert!(scope.starts_with("s_"));
        assert!(scope.len() <= 42);
        assert!(scope
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
    }
}
