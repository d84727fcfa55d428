//! Leader election: candidacies are exclusive entries in the election's line (see
//! [`crate::waiter_line`]), plus a leader row and a log.
//!
//! A candidate joins the election's line and waits, holding no connection (FIFO among
//! candidates). The statement that grants it also bumps the election's counter (the
//! term, a fencing token) and writes the leader row (value, term, version; tied to the
//! session, so deleted with it) and a log entry. `proclaim` bumps the version and logs
//! again, only while the leader's row and session are live; `resign` deletes the entry
//! and, in the same transaction, elects the next live candidate (its term, leader row and
//! log entry, written by the release's grant, see [`crate::waiter_line`]) or, with nobody
//! in line, deletes the leader row; then it wakes the candidate, which finds itself
//! elected. A reader sees the old leader or the new one, never a moment without one.
//!
//! `leader()` reads the row, ignoring a leader whose session has expired. `observe()`
//! reads the current leader, then follows the log in (term, version) order, woken by
//! `NOTIFY`: every win and every proclaim is yielded in order, and never an older one
//! after a newer one. The log is bounded (see [`crate::limits`]): the last 1,000 entries
//! of an election and ten minutes of history by default; an observer that falls further
//! behind skips entries but stays in order.

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use distsync_core::raw::{observe_leaders, waited, LeaderObserver, WaitRetry};
use distsync_core::{
    Election, Error, FencingToken, LeaderInfo, Leadership, Name, Proclaim, Result, Session,
};
use futures::stream::BoxStream;

use crate::error::{is_session_gone, map};
use crate::notify::Subscription;
use crate::session::LeaseInner;
use crate::store::{LockKind, Shared};
use crate::waiter_line::{self, hold_key, Ask};

pub(crate) struct PgElection {
    pub(crate) lease: Arc<LeaseInner>,
    pub(crate) session: Session,
    pub(crate) name: Name,
}

struct PgProclaim {
    lease: Arc<LeaseInner>,
    election: String,
    term: i64,
}

#[async_trait]
impl Proclaim for PgProclaim {
    async fn proclaim_bytes(&self, value: Bytes) -> Result<()> {
        if self.lease.is_lost() {
            return Err(Error::NotLeader);
        }
        let shared = &self.lease.shared;
        let mut taken = shared.holds.take().await.map_err(map)?;
        let proclaimed = sqlx::query_scalar(&shared.sql("SELECT {s}.proclaim($1, $2, $3, $4, $5)"))
            .bind(&self.election)
            .bind(self.lease.id)
            .bind(self.term)
            .bind(value.as_ref())
            .bind(shared.limits().log_keep_sql())
            .fetch_one(taken.conn())
            .await;
        let proclaimed: std::result::Result<bool, sqlx::Error> = taken.settle(proclaimed);
        drop(taken);
        match proclaimed {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::NotLeader),
            Err(error) if is_session_gone(&error) => Err(Error::NotLeader),
            Err(error) => Err(map(error)),
        }
    }
}

#[async_trait]
impl Election for PgElection {
    fn name(&self) -> &Name {
        &self.name
    }

    /// Cancel-safety: cancel-safe; a dropped campaign withdraws its entry in the
    /// background (see [`crate::waiter_line`]); if it was granted meanwhile, the withdrawal
    /// ends that term and deletes its leader row.
    async fn campaign_bytes(&self, value: Bytes) -> Result<Leadership> {
        let ask = Ask {
            kind: LockKind::Election,
            permits: 1,
            shared: false,
            campaign: Some(value.as_ref()),
        };
        let taken = waiter_line::take(&self.lease, &self.name, &ask, true).await?;
        let (entry, term) = waited(crate::error::BACKEND, "campaign", taken)?;
        let proclaim = Arc::new(PgProclaim {
            lease: Arc::clone(&self.lease),
            election: self.name.as_str().to_owned(),
            term,
        });
        Ok(distsync_core::raw::leadership(
            hold_key(&self.lease, "election", &self.name),
            FencingToken(term.max(0) as u64),
            &self.session,
            proclaim,
            waiter_line::release_fn(&self.lease, entry),
        ))
    }

    async fn leader(&self) -> Result<Option<LeaderInfo>> {
        let row: Option<(i64, i64, Vec<u8>)> = sqlx::query_as(&self.lease.shared.sql(
            "SELECT l.term, l.session_id, l.value FROM {s}.election_leaders l \
             JOIN {s}.sessions x ON x.id = l.session_id \
             WHERE l.election = $1 AND x.expires_at > clock_timestamp()",
        ))
        .bind(self.name.as_str())
        .fetch_optional(self.lease.shared.bounded())
        .await
        .map_err(map)?;
        Ok(row.map(|(term, session, value)| {
            leader_info(&self.lease.shared, &self.name, term, session, value)
        }))
    }

    fn observe(&self) -> BoxStream<'static, Result<LeaderInfo>> {
        let observer = Observer {
            shared: Arc::clone(&self.lease.shared),
            name: self.name.clone(),
            subscription: None,
            cursor: None,
            pending: VecDeque::new(),
        };
        observe_leaders(observer)
    }
}

fn leader_info(
    shared: &Shared,
    name: &Name,
    term: i64,
    session: i64,
    value: Vec<u8>,
) -> LeaderInfo {
    LeaderInfo::new(
        Bytes::from(value),
        FencingToken(term.max(0) as u64),
        format!("{}/election/{name}/{session:x}", shared.schema),
    )
}

struct Observer {
    shared: Arc<Shared>,
    name: Name,
    subscription: Option<Subscription>,
    /// The (term, version) of the last leader yielded, or known to be history.
    cursor: Option<(i64, i64)>,
    pending: VecDeque<LeaderInfo>,
}

type LogRow = (i64, i64, i64, Vec<u8>);

impl LeaderObserver for Observer {
    /// The next leader to yield, waiting out connection trouble (see
    /// [`distsync_core::raw::retry`]).
    async fn next_leader(&mut self) -> Result<LeaderInfo> {
        let mut backoff = WaitRetry::new("a leader change");
        loop {
            match self.step().await {
                Ok(Some(info)) => return Ok(info),
                Ok(None) => backoff.succeeded(),
                Err(error) if WaitRetry::retryable(&error) => {
                    backoff.pause(&error).await;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

impl Observer {
    /// One step: a leader to yield, or `None` after reading nothing new and waiting.
    async fn step(&mut self) -> Result<Option<LeaderInfo>> {
        if let Some(info) = self.pending.pop_front() {
            return Ok(Some(info));
        }
        if self.subscription.is_none() {
            let payload = format!("e:{}", self.name);
            self.subscription = Some(self.shared.hub.subscribe(payload).await?);
        }
        let Some(cursor) = self.cursor else {
            return self.start().await;
        };
        let rows: Vec<LogRow> = sqlx::query_as(&self.shared.sql(
            "SELECT term, version, session_id, value FROM {s}.election_log \
             WHERE election = $1 AND (term, version) > ($2, $3) \
             ORDER BY term, version LIMIT 100",
        ))
        .bind(self.name.as_str())
        .bind(cursor.0)
        .bind(cursor.1)
        .fetch_all(self.shared.bounded())
        .await
        .map_err(map)?;
        if rows.is_empty() {
            if let Some(subscription) = self.subscription.as_mut() {
                subscription.changed().await?;
            }
            return Ok(None);
        }
        for (term, version, session, value) in rows {
            self.cursor = Some((term, version));
            self.pending
                .push_back(leader_info(&self.shared, &self.name, term, session, value));
        }
        Ok(self.pending.pop_front())
    }

    /// Reads the current leader and the log's end in one snapshot; sets the cursor.
    async fn start(&mut self) -> Result<Option<LeaderInfo>> {
        type StartRow = (
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<Vec<u8>>,
            Option<i64>,
            Option<i64>,
        );
        let row: StartRow = sqlx::query_as(&self.shared.sql(
            "SELECT c.term, c.version, c.session_id, c.value, m.term, m.version \
             FROM (SELECT 1) AS one \
             LEFT JOIN (SELECT l.term, l.version, l.session_id, l.value \
                          FROM {s}.election_leaders l \
                          JOIN {s}.sessions x ON x.id = l.session_id \
                         WHERE l.election = $1 AND x.expires_at > clock_timestamp()) AS c ON true \
             LEFT JOIN (SELECT term, version FROM {s}.election_log WHERE election = $1 \
                         ORDER BY term DESC, version DESC LIMIT 1) AS m ON true",
        ))
        .bind(self.name.as_str())
        .fetch_one(self.shared.bounded())
        .await
        .map_err(map)?;
        match row {
            (Some(term), Some(version), Some(session), Some(value), _, _) => {
                self.cursor = Some((term, version));
                Ok(Some(leader_info(
                    &self.shared,
                    &self.name,
                    term,
                    session,
                    value,
                )))
            }
            (_, _, _, _, term, version) => {
                self.cursor = Some((term.unwrap_or(0), version.unwrap_or(0)));
                Ok(None)
            }
        }
    }
}
