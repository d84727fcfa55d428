//! The counter and the count-down latch: a row of `counters` and a row of `latches`.
//!
//! Every change is one statement, atomic in the server: an add is
//! `INSERT ... ON CONFLICT DO UPDATE ... RETURNING` (an overflow fails the statement,
//! `numeric value out of range`, and changes nothing), a compare-and-set is an
//! `UPDATE ... WHERE value = expected` beside an `INSERT ... ON CONFLICT DO NOTHING`
//! for a counter never written (so of racing swaps from one value exactly one finds
//! the row as expected), a count-down is the function `latch_count_down`, which locks
//! the latch's row and notifies `l:<name>` on the decrement that reaches zero. No
//! statement is sent twice, so an add whose reply is lost is applied at most once.
//!
//! Every counter write that changes the value also notifies `c:<name>` in the same
//! statement (`pg_notify` through the schema's `notify` function, delivered when the
//! statement commits), so [`Counter::changed`] waits on the backend's one `LISTEN`
//! connection instead of polling: a waiter costs a map entry in the hub and one read
//! per change. A notification nobody listens to costs the server a queue entry that
//! no session reads.
//!
//! The tables and `latch_count_down` are in `sql/counter.sql`.

use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::counter::{Counter, CHANGED_SAFETY_NET};
use distsync_core::latch::{check_initial_count, CountDownLatch};
use distsync_core::raw::Look::{NotYet, Ready};
use distsync_core::raw::Make;
use distsync_core::{Error, Name, Result};

use crate::error::{map, BACKEND};
use crate::store::Shared;

/// A PostgreSQL counter.
pub(crate) struct PgCounter {
    pub(crate) shared: Arc<Shared>,
    pub(crate) name: Name,
}

#[async_trait]
impl Counter for PgCounter {
    fn name(&self) -> &Name {
        &self.name
    }

    async fn get(&self) -> Result<i64> {
        let sql = self
            .shared
            .sql("SELECT value FROM {s}.counters WHERE name = $1");
        let value: Option<i64> = sqlx::query_scalar(&sql)
            .bind(self.name.as_str())
            .fetch_optional(self.shared.bounded())
            .await
            .map_err(map)?;
        Ok(value.unwrap_or(0))
    }

    async fn add(&self, delta: i64) -> Result<i64> {
        let sql = self.shared.sql(
            "WITH added AS ( \
                 INSERT INTO {s}.counters AS c (name, value) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET value = c.value + EXCLUDED.value \
                 RETURNING value \
             ), notified AS ( \
                 SELECT {s}.notify('c:' || $1) FROM added WHERE $2 <> 0 \
             ) \
             SELECT value FROM added WHERE (SELECT count(*) FROM notified) >= 0",
        );
        sqlx::query_scalar(&sql)
            .bind(self.name.as_str())
            .bind(delta)
            .fetch_one(self.shared.bounded())
            .await
            .map_err(|error| match &error {
                // PostgreSQL's `numeric_value_out_of_range`.
                sqlx::Error::Database(db) if db.code().as_deref() == Some("22003") => {
                    Error::InvalidArgument(format!(
                        "counter {:?}: adding {delta} overflows a 64-bit signed integer",
                        self.name.as_str()
                    ))
                }
                _ => map(error),
            })
    }

    async fn compare_and_set(&self, expected: i64, new: i64) -> Result<bool> {
        let sql = self.shared.sql(
            "WITH updated AS ( \
                 UPDATE {s}.counters SET value = $3 WHERE name = $1 AND value = $2 RETURNING 1 \
             ), inserted AS ( \
                 INSERT INTO {s}.counters (name, value) SELECT $1, $3 \
                 WHERE $2 = 0 AND NOT EXISTS (SELECT 1 FROM {s}.counters WHERE name = $1) \
                 ON CONFLICT (name) DO NOTHING RETURNING 1 \
             ), notified AS ( \
                 SELECT {s}.notify('c:' || $1) \
                 WHERE $2 <> $3 \
                   AND (EXISTS (SELECT 1 FROM updated) OR EXISTS (SELECT 1 FROM inserted)) \
             ) \
             SELECT (SELECT count(*) FROM updated) + (SELECT count(*) FROM inserted) \
                 + 0 * (SELECT count(*) FROM notified)",
        );
        let swapped: i64 = sqlx::query_scalar(&sql)
            .bind(self.name.as_str())
            .bind(expected)
            .bind(new)
            .fetch_one(self.shared.bounded())
            .await
            .map_err(map)?;
        Ok(swapped == 1)
    }

    async fn set(&self, value: i64) -> Result<()> {
        // The update compares with the row's latest version (it re-checks its condition
        // on a row changed concurrently), so a set that changes the value always
        // notifies; an insert racing another notifies too (a spare wake-up is harmless,
        // a missing one is not).
        let sql = self.shared.sql(
            "WITH updated AS ( \
                 UPDATE {s}.counters SET value = $2 WHERE name = $1 AND value <> $2 RETURNING 1 \
             ), inserted AS ( \
                 INSERT INTO {s}.counters (name, value) SELECT $1, $2 \
                 WHERE NOT EXISTS (SELECT 1 FROM {s}.counters WHERE name = $1) \
                 ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value RETURNING 1 \
             ), notified AS ( \
                 SELECT {s}.notify('c:' || $1) \
                 WHERE EXISTS (SELECT 1 FROM updated) OR EXISTS (SELECT 1 FROM inserted) \
             ) \
             SELECT count(*) FROM notified",
        );
        let _: i64 = sqlx::query_scalar(&sql)
            .bind(self.name.as_str())
            .bind(value)
            .fetch_one(self.shared.bounded())
            .await
            .map_err(map)?;
        Ok(())
    }

    /// Subscribes to `c:<name>`, then reads: a write committed after the subscription
    /// notifies it, one before is seen by the read, so no change is missed. Reads again
    /// after every notification, after the listening connection is re-established
    /// (notifications may have been lost meanwhile), and every [`CHANGED_SAFETY_NET`]
    /// without one. Transient errors are waited out.
    ///
    /// Cancel-safety: cancel-safe; the subscription ends with the future.
    async fn changed(&self, seen: i64) -> Result<i64> {
        let payload = format!("c:{}", self.name);
        self.shared
            .hub
            .wait_until(payload, "a counter change", None, |_| async {
                let value = self.get().await?;
                Ok(if value == seen {
                    NotYet(Some(CHANGED_SAFETY_NET))
                } else {
                    Ready(value)
                })
            })
            .await
    }
}

/// A PostgreSQL count-down latch.
pub(crate) struct PgLatch {
    pub(crate) shared: Arc<Shared>,
    pub(crate) name: Name,
    pub(crate) initial: u64,
}

#[async_trait]
impl CountDownLatch for PgLatch {
    fn name(&self) -> &Name {
        &self.name
    }

    fn initial_count(&self) -> u64 {
        self.initial
    }

    async fn count(&self) -> Result<u64> {
        let sql = self
            .shared
            .sql("SELECT initial, remaining FROM {s}.latches WHERE name = $1");
        let row: Option<(i64, i64)> = sqlx::query_as(&sql)
            .bind(self.name.as_str())
            .fetch_optional(self.shared.bounded())
            .await
            .map_err(map)?;
        match row {
            None => Ok(self.initial),
            Some((initial, remaining)) => {
                check_initial_count(&self.name, self.initial, initial.max(0).unsigned_abs())?;
                Ok(remaining.max(0).unsigned_abs())
            }
        }
    }

    async fn count_down(&self) -> Result<u64> {
        let initial = i64::try_from(self.initial).map_err(|_| {
            Error::InvalidArgument(format!(
                "latch {:?}: an initial count above {} does not fit PostgreSQL's bigint",
                self.name.as_str(),
                i64::MAX
            ))
        })?;
        let sql = self.shared.sql("SELECT {s}.latch_count_down($1, $2)");
        let reply: String = sqlx::query_scalar(&sql)
            .bind(self.name.as_str())
            .bind(initial)
            .fetch_one(self.shared.bounded())
            .await
            .map_err(map)?;
        let (tag, rest) = reply.split_at(reply.len().min(1));
        match (tag, rest.parse::<u64>()) {
            ("k", Ok(remaining)) => Ok(remaining),
            ("m", Ok(stored)) => {
                check_initial_count(&self.name, self.initial, stored)?;
                Err(Error::backend(
                    BACKEND,
                    "latch_count_down refused a matching count",
                ))
            }
            _ => Err(Error::backend(
                BACKEND,
                format!("unexpected latch_count_down reply {reply:?}"),
            )),
        }
    }

    /// Subscribes to `l:<name>`, then reads the count; reads again after every
    /// notification and every resubscription, so the notification of the decrement
    /// that reaches zero is never missed. Waits out connection trouble.
    ///
    /// Cancel-safety: cancel-safe; waiting leaves nothing in the store.
    async fn wait(&self) -> Result<()> {
        let payload = format!("l:{}", self.name);
        self.shared
            .hub
            .wait_until(payload, "a latch to open", None, |_| async {
                Ok(if self.count().await? == 0 {
                    Ready(())
                } else {
                    NotYet(None)
                })
            })
            .await
    }
}

impl Make<Arc<Shared>, (Name, u64)> for PgLatch {
    fn make(shared: &Arc<Shared>, (name, initial): (Name, u64)) -> Result<Self> {
        Ok(Self {
            shared: Arc::clone(shared),
            name,
            initial,
        })
    }
}
