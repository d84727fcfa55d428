//! The rate limiter's decision in one statement ([`Kv::rate_limit`]): GCRA
//! ([`distsync_core::rate_limiter::gcra`]) on the limiter's `kv` row, on the server's
//! clock, answered in the statement's OK packet.
//!
//! # The statement
//!
//! One `INSERT … ON DUPLICATE KEY UPDATE` on the row of the recipes' key,
//! `<ns>/ratelimit/<escaped name>`, whose value is the recipes' text, `<tat in µs>
//! <rate fingerprint>`, so that `status` reads it as every store's. A missing row is an
//! idle limiter (the inserted row's decision is the update's formula on `NULL`); a
//! present one is read and decided on under its row lock. The assignment of `v` reads
//! the value as stored, decides, writes the new theoretical arrival time (TAT) only on
//! a grant (a denial leaves the row as it was), and hands the decision to
//! `LAST_INSERT_ID(…)`, which the server returns in the OK packet
//! ([`sqlx::mysql::MySqlQueryResult::last_insert_id`]): a decision is one round trip.
//! The decision is `retry after in µs × 4 + kind` ([`GRANTED`], [`DENIED`],
//! [`OTHER_RATE`]); a stored fingerprint does not fit in a number, so a refusal for
//! another rate reads it in a second statement, on that path only.
//!
//! The arithmetic is signed `BIGINT` (an unsigned subtraction below zero is an error
//! in MySQL), on spans (`n·T`, `B·T`) capped at [`SPAN_CAP`], which only refuses more,
//! so that nothing overflows. The stored TAT is read only when it is 1 to 18 digits
//! and a space, what the statement writes: anything else is a value no limiter wrote,
//! an idle limiter (as the recipes' compare-and-swap reads it), overwritten by the
//! next grant.
//!
//! # The clock
//!
//! `now` is the server's clock as [`crate::clock`] reads it, `UTC_TIMESTAMP(6)`, which
//! is the time the statement started: a statement that waited for the row lock decides
//! on a time earlier than the decision before it. That only refuses more: every
//! decision leaves the TAT after its own `now` (a grant moves it past `now`, and a
//! denial happens only while it is past `now`), so a later decision on an earlier time
//! starts from the TAT, as it would on the later time, and grants only what the later
//! time would grant too.
//!
//! # Outside the revision order
//!
//! The statement takes neither the revision row nor the `log`: the row keeps
//! `create_revision = mod_revision = 1` (the empty store's revision, and not `0`, so no
//! compare or reader takes the key for missing), `version = 1` and no lease, and its
//! changes have no revision and no history. That is what makes it one statement: a
//! pass through the revision row would queue every decision behind every writer of the
//! store, and a write without the row cannot take a revision in commit order. That
//! queueing is why this limiter is not the recipes' compare-and-swap here: GCRA by
//! compare-and-swap takes four round trips and a pass through the revision row a
//! decision, which on a loaded two-core machine misses the contention case's
//! one-second bound on a request and lets the limiter go idle mid-burst (6 of 26 runs
//! beside two CPU hogs). What it leaves out,
//! nothing needs:
//!
//! - no watch waits on a limiter's key, and `status` and `export` read the current
//!   rows (`export` skips limiters: their state is bound to time);
//! - a read at a past revision, compaction and a watch's history read the `log`, where
//!   a limiter never appears;
//! - a transaction that deletes the key (`purge`) checks the row's `mod_revision`,
//!   which a decision does not move: the delete goes through the revision row and the
//!   log as any, and a decision after it inserts the row anew (an idle limiter);
//! - a lease's end deletes only its own keys, never a row of lease `0`.
//!
//! The one thing it rules out is a compare-and-swap on the key beside it, which would
//! not see a decision: the recipes' own never runs on this store, since every request
//! is decided here.
//!
//! [`Kv::rate_limit`]: distsync_kv::kv::Kv::rate_limit

use std::time::Duration;

use distsync_core::rate_limiter::{Admission, Rate};
use distsync_core::{Error, Result};
use distsync_kv::kv::RateDecision;
use sqlx::{Executor as _, MySqlPool};

use crate::batch;
use crate::clock::SERVER_TIME_US;
use crate::error::{deadlocked, map};
use crate::optimistic;
use crate::schema::{self, Tables};
use crate::BACKEND;

/// The kinds of decision, in the two low bits of the statement's answer.
const GRANTED: u64 = 1;
/// Denied; the rest of the answer is the wait in µs.
const DENIED: u64 = 2;
/// Not decided: the live TAT was stored at another rate.
const OTHER_RATE: u64 = 3;

/// The longest span (`n·T`, `B·T`) the statement computes with: 2^59 µs, about 18 000
/// years. With the server's time (below 2^51 µs) and a stored TAT of at most 18 digits,
/// every sum and the answer's `wait × 4` stay below 2^63; a rate whose burst spans
/// longer is capped, which only refuses more.
const SPAN_CAP: u128 = 1 << 59;

/// Decides a request for `permits` permits at `rate` on the limiter's row `key`.
///
/// Cancel safety: the decision is one autocommitted statement; a dropped call either
/// counted its permits or counted nothing.
///
/// # Errors
/// [`Error::InvalidArgument`] for a key longer than the key column; the server's error.
pub(crate) async fn decide(
    pool: &MySqlPool,
    tables: &Tables,
    key: &str,
    rate: &Rate,
    permits: u32,
) -> Result<RateDecision> {
    schema::check_key_size("rate limiter", key)?;
    let statement = statement(tables, key, rate, permits);
    let ours = rate.fingerprint();
    for _ in 0..optimistic::TRIES {
        let answer = match pool.execute(statement.as_str()).await {
            Ok(done) => done.last_insert_id(),
            // A deadlock rolled the statement back whole: nothing was counted.
            Err(error) if deadlocked(&error) => continue,
            Err(error) => return Err(map(error)),
        };
        match answer & 3 {
            GRANTED => return Ok(RateDecision::Decided(Admission::Granted)),
            DENIED => {
                return Ok(RateDecision::Decided(Admission::Denied {
                    retry_after: Duration::from_micros(answer >> 2),
                }))
            }
            OTHER_RATE => match stored_rate(pool, tables, key).await? {
                Some(theirs) if theirs != ours => return Ok(RateDecision::OtherRate(theirs)),
                // Taken over at this rate, or gone, since the decision: decide again.
                _ => {}
            },
            _ => {
                return Err(Error::backend(
                    BACKEND,
                    format!("a rate limiter's statement answered {answer}, no decision"),
                ))
            }
        }
    }
    Err(optimistic::exhausted("a rate limiter's decision"))
}

/// The statement (see the module docs).
fn statement(tables: &Tables, key: &str, rate: &Rate, permits: u32) -> String {
    let interval = u128::from(rate.emission_interval_micros());
    let span = |count: u32| interval.saturating_mul(u128::from(count)).min(SPAN_CAP);
    let (asked, burst) = (span(permits), span(rate.burst()));
    let fingerprint = batch::bytes(rate.fingerprint().as_bytes());
    let now = SERVER_TIME_US;
    // The value to store for `stored` (`v`, or `NULL` for a missing row), its decision
    // handed to LAST_INSERT_ID on the way.
    let written = |stored: &str| {
        let tat = format!(
            "IF(CONVERT({stored} USING latin1) REGEXP '^[0-9]{{1,18}} ', \
             CAST(SUBSTRING_INDEX({stored}, ' ', 1) AS SIGNED), NULL)"
        );
        let theirs = format!("SUBSTRING({stored}, LOCATE(' ', {stored}) + 1)");
        let base = format!("GREATEST(COALESCE({tat}, 0), {now})");
        let allow_at = format!("({base} + {asked} - {burst})");
        format!(
            "IF(LAST_INSERT_ID(CASE \
                WHEN {tat} > {now} AND {theirs} <> {fingerprint} THEN {OTHER_RATE} \
                WHEN {allow_at} <= {now} THEN {GRANTED} \
                ELSE {DENIED} + 4 * ({allow_at} - {now}) END) = {GRANTED}, \
             CONCAT({base} + {asked}, ' ', {fingerprint}), {stored})"
        )
    };
    format!(
        "INSERT INTO {} (k, create_revision, mod_revision, version, lease, v) \
         VALUES ({}, 1, 1, 1, 0, {}) ON DUPLICATE KEY UPDATE \
         create_revision = 1, mod_revision = 1, version = 1, lease = 0, v = {}",
        tables.kv,
        batch::bytes(key.as_bytes()),
        written("NULL"),
        written("v"),
    )
}

/// The fingerprint stored on `key`, if its value is a limiter's.
///
/// Cancel safety: cancel-safe; it only reads.
async fn stored_rate(pool: &MySqlPool, tables: &Tables, key: &str) -> Result<Option<String>> {
    let value: Option<Vec<u8>> =
        sqlx::query_scalar(&format!("SELECT v FROM {} WHERE k = ?", tables.kv))
            .bind(key.as_bytes())
            .fetch_optional(pool)
            .await
            .map_err(map)?;
    Ok(value
        .and_then(|value| String::from_utf8(value).ok())
        .and_then(|text| text.split_once(' ').map(|(_, rate)| rate.to_owned())))
}
