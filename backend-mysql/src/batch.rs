//! Several statements in one round trip: a transaction sends its reads as one batch,
//! and its revision lock, its check of those reads, its writes and its commit as
//! another ([`crate::optimistic`]), so that the revision row is held for no client
//! round trip at all.
//!
//! A batch is a multi-statement text query (the server runs its statements in order
//! and stops at the first error), so its values are SQL literals: integers as
//! decimals and every byte string as a hexadecimal literal (`X'…'`), which no byte
//! can break out of. Rows of several `SELECT`s arrive in one stream: each `SELECT`
//! of a batch names itself in its first column ([`tag`]).

use std::fmt::Write as _;

use distsync_core::Result;
use futures::future::BoxFuture;
use futures::TryStreamExt as _;
use sqlx::mysql::MySqlRow;
use sqlx::pool::PoolConnection;
use sqlx::{Executor as _, MySql, MySqlConnection, Row};

use crate::error::map;

/// `bytes` as a hexadecimal literal.
pub(crate) fn bytes(bytes: &[u8]) -> String {
    let mut literal = String::with_capacity(bytes.len() * 2 + 3);
    literal.push_str("X'");
    for byte in bytes {
        let _ = write!(literal, "{byte:02X}");
    }
    literal.push('\'');
    literal
}

/// `values` as a parenthesised list of hexadecimal literals.
pub(crate) fn bytes_list<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> String {
    let items: Vec<String> = values.into_iter().map(bytes).collect();
    format!("({})", items.join(", "))
}

/// The tag a batch's `SELECT` gives its rows in the first column.
pub(crate) fn tag(row: &MySqlRow) -> Result<i64> {
    row.try_get(0).map_err(map)
}

/// Runs `statements` (each without its `;`) in one round trip; the rows of every
/// `SELECT` among them, in order.
///
/// Boxed as `Send` here, where its lifetimes are the caller's: inside a spawned task
/// the compiler cannot prove sqlx's executor `Send` for every lifetime.
///
/// # Cancel safety
/// A batch cut off may have run any prefix of its statements.
pub(crate) fn run<'c>(
    conn: &'c mut MySqlConnection,
    statements: &'c [String],
) -> BoxFuture<'c, Result<Vec<MySqlRow>>> {
    Box::pin(async move {
        if statements.is_empty() {
            return Ok(Vec::new());
        }
        let sql = statements.join(";\n");
        // A bare string is sent as a text query (no arguments, no prepared
        // statement), which is what lets the server run several statements.
        let mut steps = conn.fetch_many(sql.as_str());
        let mut rows = Vec::new();
        while let Some(step) = steps.try_next().await.map_err(map)? {
            if let Some(row) = step.right() {
                rows.push(row);
            }
        }
        Ok(rows)
    })
}

/// A connection inside a transaction that this crate opened with a statement of its
/// own (not sqlx's), or holding a named lock: if it is dropped before [`Open::done`]
/// (an error, or the call cut off), the connection is closed instead of going back to
/// the pool, so that the server rolls the transaction back (and releases the lock) and
/// no other call ever runs inside it.
pub(crate) struct Open {
    conn: PoolConnection<MySql>,
    done: bool,
}

impl Open {
    /// `conn`, about to start a transaction (or take a named lock).
    pub(crate) fn new(conn: PoolConnection<MySql>) -> Self {
        Self { conn, done: false }
    }

    /// The connection.
    pub(crate) fn conn(&mut self) -> &mut MySqlConnection {
        &mut self.conn
    }

    /// The transaction has ended (committed or rolled back), and no lock is held: the
    /// connection may go back to the pool.
    pub(crate) fn done(mut self) {
        self.done = true;
    }

    /// Rolls the transaction back (the connection closes if that fails).
    pub(crate) async fn rollback(mut self) {
        let statements = ["ROLLBACK".to_owned()];
        if run(&mut self.conn, &statements).await.is_ok() {
            self.done = true;
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if !self.done {
            self.conn.close_on_drop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_strings_are_hexadecimal_literals() {
        assert_eq!(bytes(b""), "X''");
        assert_eq!(bytes(b"a'\\\0"), "X'61275C00'");
        assert_eq!(bytes_list([&b"a"[..], &b"\xff"[..]]), "(X'61', X'FF')");
    }
}
