//! The recipes' transactions run inside the caller's own transaction: what the
//! outbox ([`crate::Outbox`]) and [`crate::ack_in`] build on.
//!
//! A recipe (a queue's enqueue, a delivery's acknowledgement) runs as it does on the
//! backend's own connections, through the same [`MysqlKv`](crate::MysqlKv), inside
//! [`inside`]: while it runs, every transaction the store's [`Kv`](distsync_kv::kv::Kv)
//! is asked for (a range is one) is handed to [`inside`] through a task-local channel
//! and run on the caller's connection, inside the caller's open transaction
//! ([`txn::run_in_callers`]), so its writes commit or roll back with the caller's.
//! Leases, the clock and watches stay on the backend's own connections.
//!
//! No statement is repeated on the caller's connection: a failure reaches the recipe
//! as one that is not transient, so no recipe retries it, and the caller gets it back
//! as it was, a broken connection still [`Error::Connection`] (what the caller then
//! does: [`crate::Outbox`], [`crate::ack_in`]).

use std::future::Future;

use distsync_core::{Error, Result};
use distsync_kv::kv::Txn;
use sqlx::MySqlConnection;
use tokio::sync::{mpsc, oneshot};

use crate::schema::Tables;
use crate::txn::{self, Applied};
use crate::BACKEND;

/// One transaction for the caller's connection, and where its answer goes.
pub(crate) struct Request {
    tables: Tables,
    txn: Txn,
    answer: oneshot::Sender<Result<Applied>>,
}

tokio::task_local! {
    /// The way to the caller's connection, while a recipe runs [`inside`] it.
    static CALLERS: mpsc::Sender<Request>;
}

/// Whether the current task runs [`inside`] a caller's transaction.
pub(crate) fn active() -> bool {
    CALLERS.try_with(|_| ()).is_ok()
}

/// Runs `txn` (on the tables `tables`) on the caller's connection, the current task
/// running [`inside`] one ([`active`]).
///
/// Cancel safety: dropping the future part-way leaves the transaction run or not in
/// the caller's transaction, which the caller then rolls back.
pub(crate) async fn route(tables: &Tables, txn: Txn) -> Result<Applied> {
    let sender = CALLERS.try_with(Clone::clone).map_err(|_| ended())?;
    let (answer, answered) = oneshot::channel();
    let request = Request {
        tables: tables.clone(),
        txn,
        answer,
    };
    sender.send(request).await.map_err(|_| ended())?;
    answered.await.unwrap_or_else(|_| Err(ended()))
}

/// The error of a request that [`inside`] stopped serving.
fn ended() -> Error {
    Error::backend(
        BACKEND,
        "the caller's transaction stopped taking the recipe's statements",
    )
}

/// Runs `work` with every transaction of the store's it makes run on `conn`, inside
/// the transaction the caller opened on it (see the module docs).
///
/// Cancel safety: dropping the future part-way leaves any prefix of the statements
/// run in the caller's transaction: the caller rolls it back.
pub(crate) async fn inside<T>(
    conn: &mut MySqlConnection,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    let (sender, mut requests) = mpsc::channel::<Request>(1);
    let work = CALLERS.scope(sender, work);
    tokio::pin!(work);
    // The connection's failure, kept for the caller while the recipe sees it as final.
    let mut broke = None;
    loop {
        tokio::select! {
            done = &mut work => return done.map_err(|error| broke.unwrap_or(error)),
            Some(request) = requests.recv() => {
                let applied = match txn::run_in_callers(conn, &request.tables, request.txn).await {
                    Err(error) if error.is_transient() => {
                        let not_repeated = Error::backend(
                            BACKEND,
                            format!("in the caller's transaction (not repeated): {error}"),
                        );
                        broke = Some(error);
                        Err(not_repeated)
                    }
                    applied => applied,
                };
                // A recipe that stopped waiting has no use for the answer.
                drop(request.answer.send(applied));
            }
        }
    }
}
