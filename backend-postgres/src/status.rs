//! Who holds what ([`distsync_core::Backend::status`]) on PostgreSQL: a few `SELECT`s
//! in one `REPEATABLE READ READ ONLY` transaction, hence one consistent snapshot.
//!
//! What is read (the layout of [`crate::schema`] and [`crate::waiter_line`]):
//!
//! | state | read from |
//! |---|---|
//! | locks, read-write locks, elections, semaphores | the live entries of `line_entries` (`semaphore_entries` and the solo holders in `lock_names`; not withdrawn, their session's row not expired: the lease gate's definition of live), with their name's `lock_names.kind` and `name`, in line order (`ord`); an entry with a token holds, the others wait; a semaphore's permit count from `semaphores` |
//! | unfair lock waiters | the live rows of `unfair_waiters` (see [`crate::unfair_lock`]), listed after the lock's line, in order of registration |
//! | leaders | `election_leaders` (value and term), for the elections whose leader's session is live |
//! | queues | `queue_items` (ready) and `queue_inflight` (claimed, not yet handed over) counted per queue |
//! | barriers | `barriers` |
//! | double barriers | `double_barriers` (`ready`) and the live entries of `double_barrier_entries` |
//! | counters, latches | `counters`, `latches` |
//! | rate limiters | `rate_limits` (TAT and rate), with the server's `clock_timestamp()`: the next due time is computed on the server's clock |
//!
//! An entry's key is built as a guard's (`crate::waiter_line::hold_key`):
//! `<schema>/<kind>/<name>/<session id hex>`. The tables record no grant time, so
//! ages are `None`. An entry's [`HoldStatus::expires_in`] is its session row's
//! `expires_at` less the server's `clock_timestamp()` (the clock the sessions are
//! granted and renewed on, [`crate::session`]), read by the same statement that lists
//! the entry, with the one clock reading per row that also decides the entry is live.
//! Every statement is kept here, so a change of the tables is one place to follow.

use std::collections::BTreeMap;
use std::time::Duration;

use distsync_core::rate_limiter::Rate;
use distsync_core::status::{
    CounterStatus, DoubleBarrierStatus, HoldMode, HoldStatus, LatchStatus, LeaderStatus, LineKind,
    LineStatus, QueueStatus, RateLimiterStatus, StatusReport,
};
use distsync_core::{Bytes, FencingToken, Result, SessionId};

use crate::connection::transaction::{PgTransaction, READ_ONLY};
use crate::error::{map, BACKEND};
use crate::store::Shared;

/// The live entries of every line whose name starts with `$1`, in line order, each
/// with its session's time left in µs.
const ENTRIES: &str = "\
SELECT n.kind, n.name, e.session_id, e.token, e.shared, s.permits,
       (extract(epoch FROM t.time_left) * 1000000)::bigint
  FROM {s}.line_entries e
  JOIN {s}.sessions x ON x.id = e.session_id
 CROSS JOIN LATERAL (SELECT x.expires_at - clock_timestamp() AS time_left) t
  JOIN {s}.lock_names n ON n.id = e.name_id
  LEFT JOIN {s}.semaphores s ON s.name_id = e.name_id
 WHERE NOT e.cancelled AND t.time_left > interval '0'
   AND starts_with(n.name, $1)
 ORDER BY n.kind, n.name, e.ord";

/// The live waiters of every unfair lock whose name starts with `$1`, in order of
/// registration: they wait for the same lock as the line's entries, after them. Each
/// with its session's time left in µs, as [`ENTRIES`].
const UNFAIR_WAITERS: &str = "\
SELECT n.name, u.session_id, (extract(epoch FROM t.time_left) * 1000000)::bigint
  FROM {s}.unfair_waiters u
  JOIN {s}.sessions x ON x.id = u.session_id
 CROSS JOIN LATERAL (SELECT x.expires_at - clock_timestamp() AS time_left) t
  JOIN {s}.lock_names n ON n.id = u.name_id
 WHERE t.time_left > interval '0' AND n.kind = 'lock'
   AND starts_with(n.name, $1)
 ORDER BY n.name, u.ord";

/// A row of [`ENTRIES`]: kind, name, session id, token (once granted), shared, the
/// semaphore's permit count, the session's time left (µs).
type EntryRow = (String, String, i64, Option<i64>, bool, Option<i32>, i64);

/// The leaders whose session is live.
const LEADERS: &str = "\
SELECT l.election, l.term, l.value
  FROM {s}.election_leaders l
  JOIN {s}.sessions x ON x.id = l.session_id
 WHERE x.expires_at > clock_timestamp() AND starts_with(l.election, $1)";

/// Queue lengths: ready items, then claimed items in flight.
const QUEUES: &str = "\
SELECT queue, sum(ready)::bigint, sum(in_flight)::bigint FROM (
    SELECT queue, 1 AS ready, 0 AS in_flight FROM {s}.queue_items
     WHERE starts_with(queue, $1)
    UNION ALL
    SELECT queue, 0, 1 FROM {s}.queue_inflight WHERE starts_with(queue, $1)
) AS items GROUP BY queue";

const BARRIERS: &str = "SELECT name FROM {s}.barriers WHERE starts_with(name, $1)";

/// Double barriers with their live participants.
const DOUBLE_BARRIERS: &str = "\
SELECT d.name, d.ready, count(x.id)
  FROM {s}.double_barriers d
  LEFT JOIN {s}.double_barrier_entries p ON p.name = d.name
  LEFT JOIN {s}.sessions x ON x.id = p.session_id AND x.expires_at > clock_timestamp()
 WHERE starts_with(d.name, $1)
 GROUP BY d.name, d.ready";

pub(crate) const COUNTERS: &str =
    "SELECT name, value FROM {s}.counters WHERE starts_with(name, $1)";

pub(crate) const LATCHES: &str =
    "SELECT name, initial, remaining FROM {s}.latches WHERE starts_with(name, $1)";

/// Rate limiters with the server's clock in µs, as `rate_limit_acquire` reads it.
const RATE_LIMITS: &str = "\
SELECT name, tat, rate, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint
  FROM {s}.rate_limits WHERE starts_with(name, $1)";

/// The kind of a line from `lock_names.kind`.
fn kind(word: &str) -> Option<LineKind> {
    Some(match word {
        "lock" => LineKind::Lock,
        "rwlock" => LineKind::RwLock,
        "election" => LineKind::Election,
        "semaphore" => LineKind::Semaphore,
        _ => return None,
    })
}

/// The report of everything in the schema whose name starts with `prefix`: each kind
/// of state read in turn, all in one snapshot.
pub(crate) async fn status(shared: &Shared, prefix: &str) -> Result<StatusReport> {
    let tx = PgTransaction::begin(&shared.pool, Some(READ_ONLY))
        .await
        .map_err(map)?;
    let mut snapshot = Snapshot { tx, shared, prefix };
    let mut report = StatusReport::new(BACKEND, prefix);
    report.lines = lines(&mut snapshot).await?;
    report.queues = snapshot
        .map(QUEUES, |(name, ready, in_flight): (String, i64, i64)| {
            QueueStatus::new(name, count(ready), count(in_flight))
        })
        .await?;
    report.barriers = snapshot.map(BARRIERS, |(name,): (String,)| name).await?;
    report.double_barriers = snapshot
        .map(
            DOUBLE_BARRIERS,
            |(name, ready, live): (String, bool, i64)| {
                DoubleBarrierStatus::new(name, count(live), ready)
            },
        )
        .await?;
    report.counters = snapshot
        .map(COUNTERS, |(name, value): (String, i64)| {
            CounterStatus::new(name, value)
        })
        .await?;
    report.latches = snapshot
        .map(LATCHES, |(name, initial, remaining): (String, i64, i64)| {
            let [initial, remaining] =
                [initial, remaining].map(|n| u64::try_from(n).unwrap_or_default());
            LatchStatus::new(name, initial, remaining)
        })
        .await?;
    report.rate_limiters = snapshot.map(RATE_LIMITS, rate_limiter).await?;
    snapshot.tx.commit().await.map_err(map)?;
    report.sort();
    Ok(report)
}

/// A count read as `bigint`.
fn count(n: i64) -> usize {
    usize::try_from(n).unwrap_or_default()
}

/// The report's read-only transaction, with what every statement of it binds.
struct Snapshot<'a> {
    tx: PgTransaction,
    shared: &'a Shared,
    prefix: &'a str,
}

impl Snapshot<'_> {
    /// The rows of `sql` (a template of [`Shared::sql`]) for the report's prefix (its
    /// `$1`).
    async fn rows<T>(&mut self, sql: &str) -> Result<Vec<T>>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        sqlx::query_as(&self.shared.sql(sql))
            .bind(self.prefix)
            .fetch_all(&mut *self.tx)
            .await
            .map_err(map)
    }

    /// [`Snapshot::rows`], each made into a `U` by `each`, collected.
    async fn map<T, U, C>(&mut self, sql: &str, each: impl FnMut(T) -> U) -> Result<C>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
        C: FromIterator<U>,
    {
        Ok(self.rows(sql).await?.into_iter().map(each).collect())
    }
}

/// The lines of locks, read-write locks, elections and semaphores: their live entries
/// (holders and waiters), then the unfair locks' waiters, with the elections' leaders.
async fn lines(snapshot: &mut Snapshot<'_>) -> Result<Vec<LineStatus>> {
    let entries: Vec<EntryRow> = snapshot.rows(ENTRIES).await?;
    let unfair_waiters: Vec<(String, i64, i64)> = snapshot.rows(UNFAIR_WAITERS).await?;
    let leaders: BTreeMap<String, LeaderStatus> = snapshot
        .map(
            LEADERS,
            |(election, term, value): (String, i64, Vec<u8>)| {
                let term = FencingToken(u64::try_from(term).unwrap_or_default());
                (election, LeaderStatus::new(Bytes::from(value), term))
            },
        )
        .await?;
    let schema = &snapshot.shared.schema;
    let mut lines: BTreeMap<(LineKind, String), LineStatus> = BTreeMap::new();
    for (word, name, session, token, is_shared, permits, left) in entries {
        let Some(kind) = kind(&word) else {
            continue;
        };
        let line = lines
            .entry((kind, name.clone()))
            .or_insert_with(|| line(kind, &name, &leaders, permits));
        let hold = entry_hold(schema, &word, &name, kind, session, token, is_shared)
            .with_expires_in(time_left(left));
        if token.is_some() {
            line.holders.push(hold);
        } else {
            line.waiters.push(hold);
        }
    }
    for (name, session, left) in unfair_waiters {
        let line = lines
            .entry((LineKind::Lock, name.clone()))
            .or_insert_with(|| LineStatus::new(LineKind::Lock, name.clone()));
        line.waiters.push(
            entry_hold(schema, "lock", &name, LineKind::Lock, session, None, false)
                .with_expires_in(time_left(left)),
        );
    }
    Ok(lines.into_values().collect())
}

/// A session's time left from the µs a statement computed (above zero for every row
/// it lists as live).
fn time_left(micros: i64) -> Option<Duration> {
    u64::try_from(micros).ok().map(Duration::from_micros)
}

/// A line of `kind` `name` without entries yet: an election's with its leader, a
/// semaphore's with its permit count.
fn line(
    kind: LineKind,
    name: &str,
    leaders: &BTreeMap<String, LeaderStatus>,
    permits: Option<i32>,
) -> LineStatus {
    let permits = permits.and_then(|n| usize::try_from(n).ok());
    LineStatus::new(kind, name.to_owned())
        .with_leader(
            leaders
                .get(name)
                .filter(|_| kind == LineKind::Election)
                .cloned(),
        )
        .with_permits(permits.filter(|_| kind == LineKind::Semaphore))
}

/// An entry of the line of `kind` (`word` in `lock_names.kind`) `name`, keyed as its
/// guard is; an exclusive one shows its token once granted.
fn entry_hold(
    schema: &str,
    word: &str,
    name: &str,
    kind: LineKind,
    session: i64,
    token: Option<i64>,
    is_shared: bool,
) -> HoldStatus {
    let session = SessionId(u64::try_from(session).unwrap_or_default()).to_string();
    let mode = match (is_shared, kind) {
        (true, _) => HoldMode::Shared,
        (false, LineKind::Semaphore) => HoldMode::Permit,
        (false, _) => HoldMode::Exclusive,
    };
    HoldStatus::new(format!("{schema}/{word}/{name}/{session}"), mode)
        .with_session(Some(session))
        .with_token(
            token
                .filter(|_| !is_shared)
                .and_then(|token| u64::try_from(token).ok())
                .map(FencingToken),
        )
}

/// A rate limiter's state, its next due time on the server's clock.
fn rate_limiter((name, tat, fingerprint, now): (String, i64, String, i64)) -> RateLimiterStatus {
    let rate = Rate::from_fingerprint(&fingerprint);
    let next_due = rate.as_ref().map(|rate| {
        rate.next_due(
            u64::try_from(tat).ok(),
            u64::try_from(now).unwrap_or_default(),
        )
    });
    RateLimiterStatus::new(name)
        .with_rate(rate)
        .with_next_due(next_due)
}
