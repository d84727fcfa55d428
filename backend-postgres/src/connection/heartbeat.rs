//! One heartbeat for every session of a backend: renewals batched into one statement.
//!
//! Each session keeps its own keepalive task (`distsync_core::Session::start`: a
//! renewal every TTL/3, its own client-side deadline `send time of the last
//! acknowledged renewal + TTL − margin`, its own `lost()`), but its renewal does not
//! run a statement of its own: it hands its id to the backend's heartbeat task and
//! waits for the answer. The task takes every id handed to it while the previous batch
//! ran and renews them together (`renew_sessions`: `UPDATE ... WHERE id = ANY($1) AND
//! expires_at > now() RETURNING id`), on the backend's reaper connections (never the
//! pool that STM bodies can exhaust). So 10,000 sessions cost one connection and a
//! few statements a second, not 10,000 connections.
//!
//! Partition safety is unchanged: the session's keepalive records the send time
//! *before* handing the id over, and the batch is sent after that, so the server's
//! `expires_at` (its clock at the update + TTL) is never earlier than the client-side
//! deadline that the acknowledgement extends. A batch that fails answers every session
//! in it with the error: each keepalive retries on its own schedule, and a session
//! whose renewals fail until its deadline is lost, as with a statement of its own.
//!
//! Each batch also reads the server's epoch, which tells the asynchronous releases
//! made before it that are durable from those the server may have lost; the latter
//! are made again, synchronously, right after the batch (see [`crate::connection::unflushed`]).
//! Under unflushed grants it reads the crash sentinel too, whose move says the server
//! may have lost grants (see [`crate::unflushed_grants`]): read in the statement that
//! renews, so a session renewed after a crash learns of it before its renewal is
//! acknowledged. Otherwise it reads whether the server waits for a synchronous
//! standby, which with the epoch's timeline tells a promotion that may have lost
//! acknowledged commits (see [`crate::connection::promotion`]), again before any
//! renewal after it is acknowledged.

use std::collections::HashSet;
use std::sync::Arc;

use distsync_core::{Error, Result};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::connection::bounded::Bounded;
use crate::connection::promotion::Promotion;
use crate::connection::unflushed::{Release, Unflushed};
use crate::error::{map, BACKEND};
use crate::unflushed_grants::Sentinel;

/// The most sessions renewed by one statement.
const MAX_BATCH: usize = 20_000;

type Reply = oneshot::Sender<std::result::Result<bool, String>>;

/// The heartbeat of one backend (see the module docs).
pub(crate) struct Heartbeat {
    requests: mpsc::UnboundedSender<(i64, Reply)>,
    task: AbortHandle,
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Heartbeat {
    /// Starts the heartbeat task on `pool`. Must be called within a tokio runtime.
    pub(crate) fn start(
        pool: PgPool,
        sql: Statements,
        unflushed: Arc<Unflushed>,
        sentinel: Arc<Sentinel>,
        promotion: Arc<Promotion>,
    ) -> Self {
        let (requests, receiver) = mpsc::unbounded_channel();
        let watch = Watch {
            unflushed,
            sentinel,
            promotion,
        };
        let task = tokio::spawn(run(pool, sql, watch, receiver)).abort_handle();
        Self { requests, task }
    }

    /// Renews session `id` in the next batch: `Ok(true)` renewed, `Ok(false)` its row
    /// has expired or is gone.
    ///
    /// Cancel-safety: cancel-safe; a dropped call may still renew the session (its
    /// batch runs anyway), which only extends the row, the safe side.
    ///
    /// # Errors
    /// [`Error::Connection`] when the batch's statement failed (retry later).
    pub(crate) async fn renew(&self, id: i64) -> Result<bool> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send((id, reply))
            .map_err(|_| Error::connection(BACKEND, "the session heartbeat has stopped"))?;
        match answer.await {
            Ok(Ok(renewed)) => Ok(renewed),
            Ok(Err(message)) => Err(Error::connection(BACKEND, message)),
            Err(_) => Err(Error::connection(
                BACKEND,
                "the session heartbeat has stopped",
            )),
        }
    }
}

/// The heartbeat's statements.
pub(crate) struct Statements {
    /// Renews the sessions `$1` and reads the server's epoch, under unflushed grants
    /// the crash sentinel (NULL otherwise), and whether the server waits for a
    /// synchronous standby: `SELECT ARRAY(SELECT renew_sessions($1)), server_epoch(),
    /// <sentinel>, current_setting('synchronous_standby_names') <> ''`.
    pub(crate) renew: String,
    /// Makes releases again, synchronously, from arrays of their arguments:
    /// `semaphore_leave` over `unnest($1, $2, $3, $4)`, for the entries that are there
    /// (came back): the others take no lock. A tombstone is not needed again either:
    /// a join in flight at a crash died with its connection, and one in flight at a
    /// mere checkpoint still finds the tombstone, which was not lost.
    pub(crate) release_again: String,
}

/// What the heartbeat's readings of the server feed.
struct Watch {
    unflushed: Arc<Unflushed>,
    sentinel: Arc<Sentinel>,
    promotion: Arc<Promotion>,
}

async fn run(
    pool: PgPool,
    sql: Statements,
    watch: Watch,
    mut receiver: mpsc::UnboundedReceiver<(i64, Reply)>,
) {
    let Watch {
        unflushed,
        sentinel,
        promotion,
    } = watch;
    let mut batch: Vec<(i64, Reply)> = Vec::new();
    while let Some(first) = receiver.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let ids: Vec<i64> = batch.iter().map(|(id, _)| *id).collect();
        let mark = unflushed.mark();
        let renewed =
            sqlx::query_as::<_, (Vec<i64>, Option<String>, Option<String>, bool)>(&sql.renew)
                .bind(&ids)
                // Bounded: one silent connection does not stall every later renewal.
                .fetch_one(Bounded::pool(&pool))
                .await;
        match renewed {
            Ok((renewed, epoch, sentinel_id, synchronous)) => {
                // Before any renewal is acknowledged: a session whose holds the server
                // may have lost is lost first.
                sentinel.seen(sentinel_id);
                if let Some(reason) = promotion.seen(epoch.as_deref(), synchronous) {
                    sentinel.promoted(reason);
                }
                let (again, _) = unflushed.settle(mark, epoch);
                let renewed: HashSet<i64> = renewed.into_iter().collect();
                tracing::trace!(sessions = ids.len(), renewed = renewed.len(), "heartbeat");
                for (id, reply) in batch.drain(..) {
                    let _ = reply.send(Ok(renewed.contains(&id)));
                }
                release_again(Bounded::pool(&pool), &sql.release_again, &unflushed, again).await;
            }
            // The schema's objects are gone (a recreated database or schema, a fresh
            // initdb): so are the sessions' rows, which `crate::amnesia` then checks.
            Err(error) if objects_gone(&error) => {
                tracing::warn!(sessions = ids.len(), %error, "the schema of the sessions is gone");
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Ok(false));
                }
            }
            Err(error) => {
                let error = map(error);
                tracing::warn!(sessions = ids.len(), %error, "session heartbeat failed");
                let message = format!("renewing the session failed: {error}");
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(message.clone()));
                }
            }
        }
    }
}

/// Whether `error` says the renewal's objects are missing: the schema (`3F000`), a
/// table (`42P01`) or a function (`42883`).
fn objects_gone(error: &sqlx::Error) -> bool {
    crate::schema::is_missing_object(error)
        || crate::error::sqlstate(error).as_deref() == Some("3F000")
}

/// Makes `releases` again, synchronously, in one statement (the server may have lost
/// them, see [`crate::connection::unflushed`]); on failure they are kept to be made at the next
/// heartbeat.
async fn release_again(
    pool: Bounded<&PgPool>,
    sql: &str,
    unflushed: &Unflushed,
    releases: Vec<Release>,
) {
    if releases.is_empty() {
        return;
    }
    let mut releases = releases;
    // The names' row locks taken in one order.
    releases.sort_by_key(|r| (r.name_id, r.session, r.entry));
    let column = |f: fn(&Release) -> i64| releases.iter().map(f).collect::<Vec<i64>>();
    let names: Vec<i32> = releases.iter().map(|r| r.name_id).collect();
    let tombstones: Vec<bool> = releases.iter().map(|r| r.tombstone).collect();
    let done = sqlx::query_scalar::<_, i64>(sql)
        .bind(&names)
        .bind(column(|r| r.session))
        .bind(column(|r| r.entry))
        .bind(&tombstones)
        .fetch_one(pool)
        .await;
    match done {
        Ok(left) => tracing::info!(
            releases = releases.len(),
            left,
            "the server's epoch moved (a checkpoint, a crash recovery or a promotion): asynchronous releases made again"
        ),
        Err(error) => {
            tracing::warn!(
                releases = releases.len(),
                error = %map(error),
                "making releases again failed; retried at the next heartbeat"
            );
            for release in releases {
                unflushed.record(None, release);
            }
        }
    }
}
