//! One heartbeat for every session of a backend: renewals batched into one statement.
//!
//! Each session keeps its own keepalive task (`distsync_core::Session::start`: a
//! renewal every TTL/3, its own client-side deadline `send time of the last
//! acknowledged renewal + TTL − margin`, its own `lost()`), but its renewal does not
//! run a statement of its own: it hands its id to the backend's heartbeat task (core's
//! `RenewalBatch`, which every store whose renewal is a statement shares) and waits for
//! the answer. The task takes every id handed to it while the previous batch ran and
//! renews them together (`renew_sessions`: `UPDATE ... WHERE id = ANY($1) AND
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

use distsync_core::raw::{BatchRenewed, RenewalBatch};
use distsync_core::{Error, Result};
use futures::FutureExt as _;
use sqlx::PgPool;

use crate::connection::bounded::Bounded;
use crate::connection::promotion::Promotion;
use crate::connection::unflushed::{Release, Unflushed};
use crate::error::{map, BACKEND};
use crate::schema::render;
use crate::unflushed_grants::Sentinel;

/// The most sessions renewed by one statement.
const MAX_BATCH: usize = 20_000;

/// The heartbeat of one backend (see the module docs): its batches are
/// [`RenewalBatch`]'s, each renewed by [`renew_batch`].
pub(crate) struct Heartbeat {
    batch: RenewalBatch<i64>,
}

impl Heartbeat {
    /// Starts the heartbeat task on `pool`, for the schema `quoted`. Must be called
    /// within a tokio runtime.
    pub(crate) fn start(
        pool: PgPool,
        quoted: &str,
        unflushed: Arc<Unflushed>,
        sentinel: Arc<Sentinel>,
        promotion: Arc<Promotion>,
    ) -> Self {
        let renew = if sentinel.enabled() {
            "SELECT ARRAY(SELECT {s}.renew_sessions($1)), {s}.server_epoch(), \
                    (SELECT id FROM {s}.grant_sentinel), \
                    current_setting('synchronous_standby_names') <> ''"
        } else {
            "SELECT ARRAY(SELECT {s}.renew_sessions($1)), {s}.server_epoch(), NULL::text, \
                    current_setting('synchronous_standby_names') <> ''"
        };
        let release_again = "SELECT count(*) FILTER (WHERE l.gone) FROM \
             unnest($1::integer[], $2::bigint[], $3::bigint[], $4::boolean[]) AS u(k, s, e, t), \
             LATERAL (SELECT {s}.semaphore_leave(u.k, u.s, u.e, u.t, true) AS gone \
                      WHERE EXISTS (SELECT 1 FROM {s}.line_entries x \
                                     WHERE x.name_id = u.k AND x.session_id = u.s \
                                       AND x.entry = u.e AND NOT x.cancelled)) AS l";
        let state = Arc::new(State {
            pool,
            renew: render(renew, quoted),
            release_again: render(release_again, quoted),
            unflushed,
            sentinel,
            promotion,
        });
        Self {
            batch: RenewalBatch::start(MAX_BATCH, move |ids| renew_batch(Arc::clone(&state), ids)),
        }
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
        self.batch
            .renew(id)
            .await
            .map_err(|message| Error::connection(BACKEND, message))
    }
}

/// What every batch of the heartbeat uses: its connections, its statements and what
/// its readings of the server feed.
struct State {
    pool: PgPool,
    /// Renews the sessions `$1` and reads the server's epoch, under unflushed grants
    /// the crash sentinel (NULL otherwise), and whether the server waits for a
    /// synchronous standby: `SELECT ARRAY(SELECT renew_sessions($1)), server_epoch(),
    /// <sentinel>, current_setting('synchronous_standby_names') <> ''`.
    renew: String,
    /// Makes releases again, synchronously, from arrays of their arguments:
    /// `semaphore_leave` over `unnest($1, $2, $3, $4)`, for the entries that are there
    /// (came back): the others take no lock. A tombstone is not needed again either:
    /// a join in flight at a crash died with its connection, and one in flight at a
    /// mere checkpoint still finds the tombstone, which was not lost.
    release_again: String,
    unflushed: Arc<Unflushed>,
    sentinel: Arc<Sentinel>,
    promotion: Arc<Promotion>,
}

/// Renews the sessions `ids` in one statement, which also reads the server's epoch
/// (and the sentinel, and whether it waits for a standby); the releases the epoch says
/// the server may have lost are made again once the sessions have their answers,
/// before the next batch.
async fn renew_batch(state: Arc<State>, ids: Vec<i64>) -> BatchRenewed<i64> {
    let mark = state.unflushed.mark();
    let renewed =
        sqlx::query_as::<_, (Vec<i64>, Option<String>, Option<String>, bool)>(&state.renew)
            .bind(&ids)
            // Bounded: one silent connection does not stall every later renewal.
            .fetch_one(Bounded::pool(&state.pool))
            .await;
    match renewed {
        Ok((renewed, epoch, sentinel_id, synchronous)) => {
            // Before any renewal is acknowledged: a session whose holds the server may
            // have lost is lost first.
            state.sentinel.seen(sentinel_id);
            if let Some(reason) = state.promotion.seen(epoch.as_deref(), synchronous) {
                state.sentinel.promoted(reason);
            }
            let (again, _) = state.unflushed.settle(mark, epoch);
            let renewed: HashSet<i64> = renewed.into_iter().collect();
            tracing::trace!(sessions = ids.len(), renewed = renewed.len(), "heartbeat");
            let then = async move {
                let State {
                    pool,
                    release_again: sql,
                    unflushed,
                    ..
                } = &*state;
                release_again(Bounded::pool(pool), sql, unflushed, again).await;
            };
            BatchRenewed {
                renewed: Ok(renewed),
                then: Some(then.boxed()),
            }
        }
        // The schema's objects are gone (a recreated database or schema, a fresh
        // initdb): so are the sessions' rows, which `crate::amnesia` then checks.
        Err(error) if crate::schema::is_missing_object(&error) => {
            tracing::warn!(sessions = ids.len(), %error, "the schema of the sessions is gone");
            BatchRenewed {
                renewed: Ok(HashSet::new()),
                then: None,
            }
        }
        Err(error) => {
            let error = map(error);
            tracing::warn!(sessions = ids.len(), %error, "session heartbeat failed");
            BatchRenewed {
                renewed: Err(format!("renewing the session failed: {error}")),
                then: None,
            }
        }
    }
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
