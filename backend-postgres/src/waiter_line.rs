//! The waiter line: every lock, read-write lock, candidacy and semaphore permit is an
//! entry in a line of rows per name; no hold and no waiter occupies a connection.
//!
//! # Layout (created with the rest of the schema, see [`crate::schema`])
//! - `lock_names`: one row per name (kind `lock`, `rwlock`, `election` or `semaphore`),
//!   holding the name's fencing counter (an election's term), and for a lock its solo
//!   holder and the `lined` mark (see "The solo holder" below). Its row lock serializes
//!   the joins and grants of one name: the solo take writes this row, so every path
//!   that decides about the name takes it first, and no two paths take the name's
//!   locks in opposite orders.
//! - `semaphores`: one row per name with a line, with the permit count `permits` (1 for
//!   locks, read-write locks and elections).
//! - `semaphore_entries`: one row per acquisition, ordered by `ord` (a sequence drawn
//!   while holding the name's row lock, so arrival order), keyed by (session, entry
//!   number drawn by the client), referencing its session row (deleted with it), with
//!   the fencing `token` once granted, `shared` for a read lock, and the election's name
//!   and value for a candidacy (written as the leader on grant).
//!
//! An entry is **live** while its session's row has not expired. An exclusive entry (a
//! lock, a write lock, a candidacy, a permit) holds when fewer than `permits` live
//! entries are ahead of it; a shared entry (a read lock) holds when no live exclusive
//! entry is ahead of it, so a waiting writer blocks the readers that come after it
//! (writer preference, as etcd's recipe), and `try_read` fails while a writer waits.
//! Waiters are served in arrival order (FIFO). Entries only ever leave the line
//! (released, cancelled, their session deleted or expired), so an entry's rank never
//! grows: once granted, it holds until it leaves.
//!
//! # Granting
//! Every grant runs under the name's row lock and takes the next value of the name's
//! fencing counter (an exclusive entry) or 0 (a shared one), bumped durably in the
//! grant's transaction, so tokens never go backwards, across crashes too. An entry is
//! granted by whichever statement finds its turn come:
//! - its own join (`semaphore_join`: an empty line is granted at once, in one statement
//!   that reads the line index, bumps the counter and inserts the entry) or its own
//!   re-check (`semaphore_check`, after a wake-up or at the expiry of an entry ahead);
//! - the release that lets it in: the delete trigger, when it holds the name's lock
//!   (always, for a release or a withdrawal), grants the waiters that can now hold
//!   (`sem_grant`) and notifies them, each wake-up carrying the waiter's token
//!   (`m:<session>.<entry>:<token>`), so the woken waiter holds without a statement of
//!   its own. A candidacy granted so is elected there too: the same transaction writes
//!   its election's leader row and log entry (the token is the term), so the election
//!   passes from the entry that left to the next live candidate in one commit, and no
//!   reader sees a moment without a leader (`Capabilities::gapless_hand_over`).
//!
//! The token in the wake-up is safe to act on without a read ([`wait_for_turn`] says
//! why). An acquisition ([`take`]) joins and waits in [`attempt`], whose docs give the
//! order of its steps; each step's function says what it does and why.
//!
//! A holder's connection is any of the pool's: statements of one hold may run on
//! different connections, and the pool stays at its size however many holds there are.
//!
//! # The solo holder: an uncontended lock in its name's row
//! A lock (fair or unfair) taken while nobody else wants it holds in its name's row:
//! one `UPDATE` of `lock_names` sets `holder_session` and `holder_entry` and bumps the
//! fencing counter, whose new value is the token, and one `UPDATE` clears them on
//! release. Both are plain statements on one row that change no indexed column, so
//! PostgreSQL updates the row in place (HOT), with no entry row inserted and deleted,
//! no trigger and no function call: this is what makes an uncontended cycle cost about
//! what a row update costs, where a line entry's insert, delete and triggers cost
//! several times that. The take is tried in the same statement as the line's join
//! ([`solo_take_sql`]), which runs only when the solo take holds nothing, so a take
//! that falls through to the line costs no extra round trip; the release likewise.
//!
//! The solo take holds only while the row says so: no solo holder and not `lined`,
//! re-checked by PostgreSQL on the row's newest version when the take waited for the
//! row's lock, so two takes never both hold. `lined` is set whenever the line may have
//! an entry: every join of a lock's line, under the name's row lock, first moves the
//! solo holder, if any, into the line as its first entry, with its token, and marks the
//! name (`line_claim`). From then on the holder is an entry like any other, and its
//! release is an entry's delete, whose trigger grants or wakes the waiters as described
//! below. The mark is cleared by that trigger when it holds the name's row lock and
//! finds the line empty: the next uncontended take holds solo again. Every grant, and
//! every entry that joins, sets the mark again in the statement that writes it, so a
//! deletion earlier in its transaction (a join forgets the entries of dead sessions
//! first, and their trigger may find the line empty) never leaves a holder unmarked. A
//! mark left set (a trigger that could not take the row lock) only sends takes through
//! the line, which clears it at its next release. The unfair lock's waiters join no
//! line: they wait beside a solo holder, whose release wakes their head (see
//! [`crate::unfair_lock`]).
//!
//! A solo holder is live while its session is, exactly as an entry: readers of holders
//! (status, export, the guarded write, the unfair lock's contenders, the replay of
//! unflushed releases) read the view `line_entries`, which shows it as the first entry
//! of its line while its session's row exists. A holder whose session ended leaves its
//! row behind: it counts for nobody, and the next join drops it (`line_claim`); an
//! expired one is moved into the line and judged there as any entry of an expired
//! session (`fence_expired`). A guarded write takes the name's row `FOR SHARE`, so it
//! runs wholly before or after a solo take, release or move.
//!
//! # Asynchronous commits: only what a crash may lose at no harm
//! Each statement is its own transaction, and a synchronous commit waits for its WAL
//! flush, the main cost of a statement on a durable server. A statement commits
//! asynchronously (`set_config('synchronous_commit', 'off', true)` in its own
//! transaction; the grant paths never do, and `commit_async` leaves a transaction that
//! granted anything synchronous) when losing it in a crash of the server is safe:
//! - **a join or check that only waits**: lost, the waiter's entry is gone while its
//!   session lives; its next check says so (state 5) and it joins again, at the end of
//!   the line (order across a crash is not kept for waiters);
//! - **a release, or a withdrawn wait, that grants nobody**: lost, the entry comes
//!   back, holding (or waiting) for a holder that has let go. Left alone it would block
//!   the name until its session ends, so the backend records every asynchronous release
//!   until a later synchronous commit proves it durable and makes it again when the
//!   server's epoch shows a crash recovery may have lost it
//!   ([`crate::connection::unflushed`]). A release is idempotent, so making it again is
//!   harmless. Where the epoch cannot be read, releases commit synchronously. Lost
//!   with its holder gone too (the crash took both), the entry holds the name only
//!   until its session row expires: `expires_at` is server time, which a restart does
//!   not move, and nobody renews it. It never lets two holders in: the entry is back,
//!   and still counts. Nor does it move a token back: the counter is bumped only by
//!   grants, whose commits are synchronous, so every token handed out is durable and the
//!   next grant after a crash draws a higher one.
//!
//! What must survive stays synchronous: **grants** (an entry with its token, the
//! counter bump, a candidacy's leader row), including a release that grants the next
//! waiter or elects the next candidate (`sem_grant` turns `synchronous_commit` back on
//! for the transaction, overriding the release's `off`), whose commit returns, and whose
//! notification is delivered, only after the flush, so a waiter never acts on a grant
//! the server could lose, and no reader sees a leader the server could forget;
//! **session rows and renewals** (a lost renewal would put the server's expiry before
//! the holder's client-side deadline: the lease gate below would no longer hold);
//! guarded writes.
//! A synchronous commit flushes the WAL up to its own record, so every asynchronous
//! commit before it is durable with it: the grant that follows a release makes the
//! release durable too.
//!
//! Under unflushed grants (`grants=unflushed`) grants commit asynchronously as well,
//! after a gate that holds every grant for the bound on session TTLs once a crash is
//! told; a join or check the gate holds answers "ask again in this long" (state 6), and
//! its caller waits that out as a lock-delay of its client (see
//! [`crate::unflushed_grants`]).
//!
//! # Waking, one by one (no herd)
//! Every waiter subscribes to its own payload `m:<session>.<entry>` on the backend's
//! one listening connection ([`crate::notify`], see [`subscribe`]). When an entry
//! leaves (a row trigger on delete: a release, a withdrawn wait, the cascade of a
//! closed or revoked session), `sem_grant` grants and notifies exactly the waiters that
//! can now be granted: the next one in line, or the run of readers behind a writer. A
//! grant by a check notifies those too (`sem_wake`: two permits freed by concurrent
//! transactions, each seeing only its own, still wake both waiters). No waiter blocks
//! in the server, so PostgreSQL's deadlock detector has no part in a hand-off, and a
//! hand-off is the release's statement (with one WAL flush when it grants) and one
//! notification, which carries the token.
//!
//! A deletion that does not run under the name's row lock (the cascade of a session's
//! end, which deletes entries of many names at once) takes that lock in the trigger if
//! it is free, never waiting for it (waiting could deadlock with the grants of those
//! names): joins and grants that come later wait for it and see the deletion. If a join
//! or grant holds the lock at that moment, it may not see the deletion, nor the trigger
//! its entry; then every waiter of the name is told to re-check (payload
//! `M:<name id>`, to which waiters subscribe too): the one case where a release wakes
//! more than the waiters it lets in.
//!
//! # The lease gate: no grant while the previous holder may believe it holds
//! An entry counts until its session's row is deleted or expires. `expires_at` is the
//! server's time of the last renewal + TTL, never earlier than the holder's client-side
//! deadline (`send time of its last acknowledged renewal + TTL − margin`, see
//! `distsync_core::SessionOptions`; the renewal was sent before the server ran it). So:
//! - a **clean release** (`unlock()`, `resign()`, a guard dropped inside a runtime, the
//!   close of a healthy session) deletes the entry (or the session's row), and the next
//!   waiter is woken and granted at once;
//! - a holder that **vanished without a release** (its process died, it is partitioned
//!   away, it stalled, its session was declared lost) keeps its entry until its row
//!   expires: waiters re-check at the earliest expiry among the live entries ahead of
//!   them (a renewal that landed meanwhile moves that instant on), and are granted then.
//!   A connection's death frees nothing, since no hold lives in a connection. A stalled
//!   holder stops renewing (its keepalive is stalled with it), so its row expires after
//!   its TTL whatever its connections do: no backend needs ending
//!   (`pg_terminate_backend` is not used). Keepalives also sweep expired session rows
//!   (see [`crate::limits`]).
//!
//! Which sessions have expired is decided under their rows' locks, never from a
//! statement's snapshot alone (`fence_expired`, and `reap_sessions` for the sweep): a
//! renewal that checked its row before the expiry may commit after a snapshot that then
//! shows the old expiry, already past by the clock. A grant locks the expired rows of its
//! line on their newest versions, skipping any being written (that session counts as
//! live), and rewrites them unchanged, so that a renewal waiting for one re-checks it
//! afterwards, finds it expired and reports the loss; every other entry counts as live
//! for the rest of the grant.
//!
//! # Cancel safety
//! If the waiting future is dropped before it returns, its entry is withdrawn in the
//! background (`semaphore_leave`, retried until done or the session ends), releasing
//! it if it was granted meanwhile. The entry number is drawn before joining, so a
//! withdrawal that overtakes a join still in flight leaves a tombstone under the name's
//! row lock, and that join then gives up; a tombstone never counts and goes with its
//! session. An entry whose withdrawal never lands ends with its session.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distsync_core::{Error, Name, ReadGuard, ReleaseFn, Result, Session};

use crate::connection::unflushed::Release;
use crate::error::{is_conflict, is_session_gone, map, sqlstate};
use crate::notify::Subscription;
use crate::session::LeaseInner;
use crate::store::{LockKind, Shared};
use distsync_core::raw::{CleanUp, WaitRetry};
use tokio_util::sync::CancellationToken;

/// Entry numbers of this process; with the session id (never reused) they identify an
/// entry.
static ENTRIES: AtomicI64 = AtomicI64::new(1);

/// What an entry asks of the line: a permit, a lock, a read or write lock, a candidacy.
#[derive(Clone, Copy)]
pub(crate) struct Ask<'a> {
    /// The kind of the name (its row in `lock_names`).
    pub(crate) kind: LockKind,
    /// The permits of the name (1 for locks, write locks and elections).
    pub(crate) permits: i32,
    /// A shared entry (a read lock): holds beside other shared entries.
    pub(crate) shared: bool,
    /// A candidacy: its value, written as the election's leader on grant.
    pub(crate) campaign: Option<&'a [u8]>,
}

impl Ask<'_> {
    /// An exclusive (`shared` false) or shared hold of a `kind` name (a lock, a read or
    /// write lock): one permit, no candidacy. Its token is 0 for a shared hold.
    pub(crate) const fn hold(kind: LockKind, shared: bool) -> Self {
        Ask {
            kind,
            permits: 1,
            shared,
            campaign: None,
        }
    }
}

/// One entry of the line, as the schema's functions address it.
#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) shared: Arc<Shared>,
    /// The name's id in `lock_names`.
    pub(crate) name_id: i32,
    /// The session's id.
    pub(crate) session: i64,
    /// The entry's number (unique in this process; with the session, in the store).
    pub(crate) entry: i64,
    /// A candidacy: its release sends the election log's bound (see [`Entry::leave`]).
    pub(crate) candidacy: bool,
}

/// What a join or a check found.
enum Outcome {
    Granted(i64),
    Waiting(Option<Duration>),
    Refused,
    OtherCount(i32),
    Gone,
    /// The entry is gone but its session lives: its join, committed asynchronously,
    /// was lost in a crash of the server. Joined again.
    Vanished,
    /// Under unflushed grants, the store's lock-delay runs for this long: nothing
    /// granted (a join: nothing joined; a check: the entry waits on), ask again then.
    Held(Duration),
}

type Row = (Option<i32>, Option<i64>, Option<f64>, Option<i32>);

/// A join's or a check's statement, as [`Entry::ask`] builds it.
type AskQuery<'q> = sqlx::query::QueryAs<'q, sqlx::Postgres, Row, sqlx::postgres::PgArguments>;

/// A wait the server answered in seconds (`o_wait`), within an hour; `None` for none
/// or nonsense.
pub(crate) fn seconds(wait: Option<f64>) -> Option<Duration> {
    wait.and_then(|secs| Duration::try_from_secs_f64(secs.clamp(0.0, 3600.0)).ok())
}

fn outcome(row: Row) -> Result<Outcome> {
    let (state, token, wait, in_use) = row;
    let wait = seconds(wait);
    Ok(match (state, token) {
        (Some(1), Some(token)) => Outcome::Granted(token),
        (Some(0), _) => Outcome::Waiting(wait),
        (Some(2), _) => Outcome::Refused,
        (Some(3), _) => Outcome::OtherCount(in_use.unwrap_or(0)),
        (Some(-1), _) => Outcome::Gone,
        (Some(5), _) => Outcome::Vanished,
        (Some(6), _) => Outcome::Held(wait.unwrap_or(HELD_FALLBACK)),
        _ => {
            return Err(Error::backend(
                crate::error::BACKEND,
                format!("unexpected semaphore state {state:?}"),
            ))
        }
    })
}

/// Whether `error` is `DS002`: the name has no counter row.
pub(crate) fn is_missing_name(error: &sqlx::Error) -> bool {
    sqlstate(error).as_deref() == Some("DS002")
}

/// How long to wait under a lock-delay whose length was not told.
pub(crate) const HELD_FALLBACK: Duration = Duration::from_secs(1);

/// How often an entry lost by the server is joined again before giving up.
const VANISHED_REJOINS: u32 = 3;

/// How often a join, check or leave is repeated after PostgreSQL aborted it as a
/// deadlock victim or a serialization failure.
const CONFLICT_RETRIES: u32 = 5;

/// Runs `statement`, again when PostgreSQL aborted it as a deadlock victim (40P01) or a
/// serialization failure (40001): each of these is one statement in its own
/// transaction, rolled back whole when aborted, so repeating it is safe. The grants
/// themselves take their rows in one order, but other transactions may not (an
/// administrator's statement, say).
async fn again_after_conflicts<T, F, Fut>(mut statement: F) -> std::result::Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, sqlx::Error>>,
{
    let mut tries = 0;
    loop {
        match statement().await {
            Err(error) if is_conflict(&error) && tries < CONFLICT_RETRIES => {
                tries += 1;
                tracing::debug!(%error, tries, "a grant statement was aborted by a conflict; repeating it");
                tokio::time::sleep(Duration::from_millis(5 << tries)).await;
            }
            other => return other,
        }
    }
}

/// The statement of a take that holds solo when it can (see the module docs, "The
/// solo holder"): one `UPDATE` of the name's row, and `fallback`, the take's function
/// over the line, in the same statement only when that holds nothing. `fallback` is a
/// set-returning call with `$1` the name id, `$2` the session, `$3` the entry, whose
/// columns are `columns`; the solo grant answers `(1, token, NULL, …)` in the same shape.
/// Under unflushed grants the solo grant passes the store's gate (`grant_gate`) as the
/// line's grants do, and commits as they do; a gate that holds leaves the answer to
/// `fallback`, which tells the caller how long.
pub(crate) fn solo_take_sql(shared: &Shared, fallback: &str, columns: &str) -> String {
    let gate = if shared.sentinel.enabled() {
        "{s}.grant_gate() IS NULL"
    } else {
        "true"
    };
    let solo_nulls = columns
        .split(',')
        .skip(2)
        .map(|_| ", NULL")
        .collect::<String>();
    shared.sql(&format!(
        "WITH solo AS (\
             UPDATE {{s}}.lock_names \
                SET token = token + 1, holder_session = $2, holder_entry = $3, \
                    used_at = CASE WHEN used_at < clock_timestamp() - interval '1 second' \
                                   THEN clock_timestamp() ELSE used_at END \
              WHERE id = $1 AND kind = 'lock' AND holder_session IS NULL AND NOT lined \
                AND EXISTS (SELECT 1 FROM {{s}}.sessions \
                             WHERE id = $2 AND expires_at > clock_timestamp()) \
                AND {gate} \
             RETURNING token) \
         SELECT 1, token{solo_nulls} FROM solo \
         UNION ALL \
         SELECT {columns} FROM {fallback} AS f WHERE NOT EXISTS (SELECT 1 FROM solo)"
    ))
}

impl Entry {
    async fn join(
        &self,
        ask: &Ask<'_>,
        election: &str,
        wait: bool,
    ) -> std::result::Result<Outcome, sqlx::Error> {
        let fallback = "{s}.semaphore_join($1, $2, $3, $4, $5, $6, $7, $8, $9, true)";
        let columns = "f.o_state, f.o_token, f.o_wait, f.o_in_use";
        let solo =
            ask.kind == LockKind::Lock && ask.permits == 1 && !ask.shared && ask.campaign.is_none();
        let sql = if solo {
            solo_take_sql(&self.shared, fallback, columns)
        } else {
            self.shared
                .sql(&format!("SELECT {columns} FROM {fallback} AS f"))
        };
        self.ask(&sql, |query| {
            query
                .bind(ask.permits)
                .bind(wait)
                .bind(ask.shared)
                .bind(ask.campaign.map(|_| election))
                .bind(ask.campaign)
        })
        .await
    }

    async fn check(&self) -> std::result::Result<Outcome, sqlx::Error> {
        let sql = self.shared.sql(
            "SELECT o_state, o_token, o_wait, NULL::integer \
             FROM {s}.semaphore_check($1, $2, $3, $4, true)",
        );
        self.ask(&sql, |query| query).await
    }

    /// Runs a join's or a check's statement `sql` on a hold connection (again after
    /// conflicts) and reads its answer: its arguments are the entry's name id, session
    /// and number, those `bind` adds, then the election log's bound.
    async fn ask<'q>(
        &'q self,
        sql: &'q str,
        bind: impl Fn(AskQuery<'q>) -> AskQuery<'q>,
    ) -> std::result::Result<Outcome, sqlx::Error> {
        let row: Row = again_after_conflicts(|| async {
            let mut taken = self.shared.holds.take().await?;
            let query = sqlx::query_as(sql)
                .bind(self.name_id)
                .bind(self.session)
                .bind(self.entry);
            let answered = bind(query)
                .bind(self.shared.limits().log_keep_sql())
                .fetch_one(taken.conn())
                .await;
            taken.settle(answered)
        })
        .await?;
        outcome(row).map_err(|error| sqlx::Error::Protocol(error.to_string()))
    }

    /// Removes the entry; `Ok(true)` if it was there. See `semaphore_leave`. Commits
    /// asynchronously when the backend can tell a release the server lost in a crash
    /// and make it again ([`crate::connection::unflushed`]), synchronously otherwise;
    /// a leave that grants commits synchronously whatever is asked (see the module
    /// docs, "Asynchronous commits", for why that is safe).
    pub(crate) async fn leave(&self, tombstone: bool) -> std::result::Result<bool, sqlx::Error> {
        let unflushed = &self.shared.unflushed;
        let sync = !unflushed.enabled();
        // The epoch known before sending (see crate::connection::unflushed).
        let epoch = unflushed.epoch();
        // A candidacy's release sends the log's bound, as a setting of its transaction:
        // the candidacy it elects (`sem_grant`, run by the delete trigger, which takes no
        // arguments) trims its election's log to it. The materialized CTE is read before
        // the function runs, so the setting is in place when the trigger fires. Other
        // lines hold no candidacies, so their releases run the plain call, one setting
        // less to parse and plan on the hot path of a lock.
        let (sql, keep) = if self.candidacy {
            (
                "WITH keep AS MATERIALIZED \
                      (SELECT set_config('distsync.log_keep', $6::integer::text, true) AS v) \
                 SELECT {s}.semaphore_leave($1, $2, $3, $4, $5) FROM keep \
                  WHERE keep.v IS NOT NULL",
                Some(self.shared.limits().log_keep_sql()),
            )
        } else {
            // A solo holder leaves its name's row in the same statement's first step,
            // and wakes the unfair lock's head if the row's newest version (the one
            // updated, read after any registration that held the row's lock) says one
            // waits; anything else is semaphore_leave's. The commit is the one
            // semaphore_leave would make.
            (
                "WITH solo AS (\
                     UPDATE {s}.lock_names SET holder_session = NULL, holder_entry = NULL \
                      WHERE id = $1 AND holder_session = $2 AND holder_entry = $3 \
                        AND set_config('synchronous_commit', \
                                       CASE WHEN $5 THEN 'on' ELSE 'off' END, true) \
                            IS NOT NULL \
                     RETURNING waiters) \
                 SELECT CASE WHEN waiters THEN {s}.unfair_wake_head($1) ELSE true END \
                   FROM solo \
                 UNION ALL \
                 SELECT {s}.semaphore_leave($1, $2, $3, $4, $5) \
                  WHERE NOT EXISTS (SELECT 1 FROM solo)",
                None,
            )
        };
        let sql = self.shared.sql(sql);
        let left = again_after_conflicts(|| async {
            let mut taken = self.shared.holds.take().await?;
            let mut query = sqlx::query_scalar(&sql)
                .bind(self.name_id)
                .bind(self.session)
                .bind(self.entry)
                .bind(tombstone)
                .bind(sync);
            if let Some(keep) = keep {
                query = query.bind(keep);
            }
            let left = query.fetch_one(taken.conn()).await;
            taken.settle(left)
        })
        .await?;
        if !sync {
            unflushed.record(
                epoch,
                Release {
                    name_id: self.name_id,
                    session: self.session,
                    entry: self.entry,
                    tombstone,
                },
            );
        }
        Ok(left)
    }

    /// Withdraws the entry in the background (a dropped wait, a release that failed):
    /// retried until done or the session ends, whose end takes the entry with it.
    pub(crate) fn leave_in_background(self, lease: &Arc<LeaseInner>, tombstone: bool) {
        CleanUp::new("withdrawing an entry", "it ends with its session")
            .until_lost(lease.lost_token())
            .spawn(move |clean_up| async move {
                let leave = || async {
                    match self.leave(tombstone).await {
                        Ok(_) => Ok(()),
                        Err(error) if is_session_gone(&error) => Ok(()),
                        Err(error) => Err(map(error)),
                    }
                };
                clean_up.retry(leave).await
            });
    }
}

/// Withdraws an entry when dropped armed: the clean-up of a dropped acquisition (of the
/// fair line, or an unfair take).
pub(crate) struct Cleanup {
    pub(crate) entry: Option<Entry>,
    pub(crate) lease: Arc<LeaseInner>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            tracing::debug!(
                session = entry.session,
                entry = entry.entry,
                "acquisition dropped; withdrawing its entry"
            );
            entry.leave_in_background(&self.lease, true);
        }
    }
}

/// Joins the line of `ask.kind` `name` and, if `wait`, waits until granted. Returns the
/// entry and its token, or `None` for a failed try. A cached name id whose row has gone
/// (pruned, see [`crate::store`]) is looked up afresh, once.
///
/// Cancel-safe: a dropped call withdraws its entry in the background.
pub(crate) async fn take(
    lease: &Arc<LeaseInner>,
    name: &Name,
    ask: &Ask<'_>,
    wait: bool,
) -> Result<Option<(Entry, i64)>> {
    attempts(lease, name, ask.kind, |mut asked| async move {
        let attempted = attempt(lease, name, ask, wait, &mut asked).await;
        (attempted, asked)
    })
    .await
}

/// Runs `attempt` until it ends with a grant, a failed try or an error (the loop of
/// every take of a line, fair or unfair): each attempt after the lock-delay, if one
/// runs; again after a lock-delay the store told of, after an entry the server lost
/// (a few times) and after the name's row was found gone (once, the name id looked up
/// afresh). A grant's token is recorded for the token floor and the crash sentinel.
///
/// `attempt` gets the crash sentinel's mark ([`crate::unflushed_grants::Sentinel::asking`])
/// and answers with the mark it took again before the ask whose answer grants.
///
/// Cancel-safe as `attempt` is.
pub(crate) async fn attempts<Attempt, Attempted>(
    lease: &Arc<LeaseInner>,
    name: &Name,
    kind: LockKind,
    mut attempt: Attempt,
) -> Result<Option<(Entry, i64)>>
where
    Attempt: FnMut(u64) -> Attempted,
    Attempted: std::future::Future<
        Output = (std::result::Result<Option<(Entry, i64)>, AttemptError>, u64),
    >,
{
    let mut retried = false;
    let mut rejoined = 0;
    loop {
        // Nothing is granted during the lock-delay after the store forgot, or the
        // store's after a crash under unflushed grants (the join was told to wait).
        crate::amnesia::wait_hold(&lease.shared.amnesia, &lease.lost_token()).await?;
        let (attempted, asked) = attempt(lease.shared.sentinel.asking()).await;
        match attempted {
            Err(AttemptError::Held(left)) => lease.shared.amnesia.hold_for(left),
            Err(AttemptError::Vanished) if rejoined < VANISHED_REJOINS => {
                tracing::info!(%name, "an entry in line was lost by the server (a crash?); joining again");
                rejoined += 1;
            }
            Err(AttemptError::Vanished) => {
                return Err(Error::backend(
                    crate::error::BACKEND,
                    format!(
                        "the entry in the line of {:?} keeps vanishing",
                        name.as_str()
                    ),
                ))
            }
            Err(AttemptError::MissingName) if !retried => {
                tracing::debug!(%name, "name row gone; registering it again");
                lease.shared.forget_name(kind, name.as_str());
                retried = true;
            }
            Err(AttemptError::MissingName) => {
                return Err(Error::backend(
                    crate::error::BACKEND,
                    format!(
                        "the {} name {:?} has no counter row",
                        kind.as_str(),
                        name.as_str()
                    ),
                ))
            }
            Err(AttemptError::Other(error)) => return Err(error),
            Ok(granted) => {
                if let Some((_, token)) = &granted {
                    lease.shared.amnesia.reported(*token);
                    lease.shared.sentinel.granted(asked);
                }
                return Ok(granted);
            }
        }
    }
}

/// One attempt at a place in the line of `ask.kind` `name`, which [`take`] repeats
/// while an answer tells it to ask again. Its steps, in order:
/// 1. [`new_entry`]: a fresh entry of the line;
/// 2. [`subscribe`] (only `wait`): its wake-ups, before it joins;
/// 3. [`join_line`]: the join's statement, its entry withdrawn by the clean-up if the
///    call is dropped or fails from here on while it is in line;
/// 4. [`answer`]: what the join's answer means: granted, refused, a semaphore of
///    another permit count, the session gone, the entry vanished, the store's
///    lock-delay (all of which end the attempt), or waiting; a call that does not
///    wait ends there;
/// 5. [`wait_for_turn`]: a wake-up (one that carries the token grants), or the time
///    the answer gave;
/// 6. [`check_again`]: the check's statement, whose answer goes back to step 4.
///
/// `asked` is the crash sentinel's mark ([`crate::unflushed_grants::Sentinel::asking`])
/// taken before the statement (or the wait for the wake-up) whose answer grants.
async fn attempt(
    lease: &Arc<LeaseInner>,
    name: &Name,
    ask: &Ask<'_>,
    wait: bool,
    asked: &mut u64,
) -> std::result::Result<Option<(Entry, i64)>, AttemptError> {
    if lease.is_lost() {
        return Err(Error::SessionLost.into());
    }
    let entry = new_entry(lease, name, ask).await?;
    let mut wake = if wait {
        Some(subscribe(&entry).await?)
    } else {
        None
    };
    let mut cleanup = Cleanup {
        entry: Some(entry.clone()),
        lease: Arc::clone(lease),
    };
    let mut state = join_line(lease, name, ask, wait, &entry, &mut cleanup).await?;
    let lost = lease.lost_token();
    let mut backoff = WaitRetry::new("a place in line");
    let mut first = true;
    loop {
        let pause = match answer(lease, name, ask, state, first) {
            Answer::Ends(ended) => {
                cleanup.entry = None;
                return ended.map(|granted| granted.map(|token| (entry, token)));
            }
            Answer::Waits(pause) => pause,
        };
        first = false;
        let Some(wake) = wake.as_mut() else {
            // Not waiting: a join that did not grant refuses (state 2); anything else
            // is withdrawn by the clean-up.
            return Ok(None);
        };
        if let Some(token) = wait_for_turn(lease, wake, &lost, pause, asked).await? {
            cleanup.entry = None;
            return Ok(Some((entry, token)));
        }
        state = check_again(lease, &entry, &lost, &mut backoff, asked).await?;
    }
}

/// A new entry of the line of `ask.kind` `name` for `lease`'s session, its number drawn
/// before it joins (see the module docs, "Cancel safety").
async fn new_entry(lease: &Arc<LeaseInner>, name: &Name, ask: &Ask<'_>) -> Result<Entry> {
    let shared = &lease.shared;
    Ok(Entry {
        shared: Arc::clone(shared),
        name_id: shared.name_id(ask.kind, name.as_str()).await?,
        session: lease.id,
        entry: ENTRIES.fetch_add(1, Ordering::Relaxed),
        candidacy: ask.campaign.is_some(),
    })
}

/// The wake-ups of a waiting entry: its own (`m:<session>.<entry>`, which carries its
/// token when a release granted it) and its name's (`M:<name id>`: re-check, see the
/// module docs, "Waking, one by one"). Subscribed before joining, so a wake-up
/// committed after the join is never missed.
pub(crate) async fn subscribe(entry: &Entry) -> Result<(Subscription, Subscription)> {
    let own = format!("m:{}.{}", entry.session, entry.entry);
    let everyone = format!("M:{}", entry.name_id);
    Ok((
        entry.shared.hub.subscribe(own).await?,
        entry.shared.hub.subscribe(everyone).await?,
    ))
}

/// Joins the line with `entry` and returns the join's answer. A waiting call outlasts a
/// wait for a hold connection (many callers at once on a few `hold_connections`): no
/// connection within the request timeout means its statement was never sent, so the
/// join is tried again, until the session ends. Where nothing joined, `cleanup` is
/// disarmed.
async fn join_line(
    lease: &Arc<LeaseInner>,
    name: &Name,
    ask: &Ask<'_>,
    wait: bool,
    entry: &Entry,
    cleanup: &mut Cleanup,
) -> std::result::Result<Outcome, AttemptError> {
    let joined = loop {
        match entry.join(ask, name.as_str(), wait).await {
            Err(sqlx::Error::PoolTimedOut) if wait => {
                if lease.is_lost() {
                    cleanup.entry = None;
                    return Err(Error::SessionLost.into());
                }
                tracing::debug!(%name, "no hold connection free within the request timeout; still waiting for one");
            }
            joined => break joined,
        }
    };
    match joined {
        Ok(state) => Ok(state),
        Err(error) if is_missing_name(&error) => {
            // The statement failed as a whole: nothing joined.
            cleanup.entry = None;
            Err(AttemptError::MissingName)
        }
        Err(error) => Err(lease.statement_error(error).into()),
    }
}

/// What a join's or a check's answer means for the attempt.
enum Answer {
    /// The attempt ends, its entry no longer the clean-up's: granted with this token,
    /// refused (`None`), or failed.
    Ends(std::result::Result<Option<i64>, AttemptError>),
    /// The entry waits in line, for a wake-up or this long at most.
    Waits(Duration),
}

/// What `state`, the answer of the join (`first`) or of a check, means. An entry told
/// to wait re-checks at the time the server gave (the earliest expiry of the live
/// entries ahead of it, see the module docs, "The lease gate"), or after the session's
/// TTL if it gave none. A lock-delay told to a join ends the attempt (nothing joined:
/// [`take`] joins again after it); told to a check, the entry keeps its place, and the
/// lock-delay is this client's too, so that its other joins wait it out without asking.
fn answer(
    lease: &Arc<LeaseInner>,
    name: &Name,
    ask: &Ask<'_>,
    state: Outcome,
    first: bool,
) -> Answer {
    match state {
        Outcome::Granted(token) => Answer::Ends(Ok(Some(token))),
        Outcome::Refused => Answer::Ends(Ok(None)),
        Outcome::OtherCount(in_use) => Answer::Ends(Err(Error::InvalidArgument(format!(
            "semaphore {:?} is in use with {in_use} permits, not {}",
            name.as_str(),
            ask.permits
        ))
        .into())),
        Outcome::Gone => {
            lease.fail();
            Answer::Ends(Err(Error::SessionLost.into()))
        }
        Outcome::Vanished => Answer::Ends(Err(AttemptError::Vanished)),
        // Only a join answers this before the loop's first check: nothing joined.
        Outcome::Held(left) if first => Answer::Ends(Err(AttemptError::Held(left))),
        Outcome::Held(left) => {
            lease.shared.amnesia.hold_for(left);
            Answer::Waits(left + Duration::from_millis(5))
        }
        Outcome::Waiting(until) => {
            let fallback = lease.ttl;
            Answer::Waits(until.map_or(fallback, |until| until + Duration::from_millis(5)))
        }
    }
}

/// Waits for a wake-up of the entry, or `pause`. Returns the token when the wake-up
/// granted the entry: the release that let it in sent it, and it is durable, so no read
/// is needed. `sem_grant` writes the grant and sends the wake-up in one transaction,
/// which commits synchronously, and PostgreSQL delivers a notification only once its
/// transaction has committed, so after the WAL flush; the entry holds from then until it
/// leaves. `None` otherwise, and the entry's check follows, which grants it or reads
/// its token: a wake-up without a token (`m:<session>.<entry>`, `sem_wake` after a
/// check's grant; or the name's `M:<name id>`), or the pause's end.
async fn wait_for_turn(
    lease: &Arc<LeaseInner>,
    (own, everyone): &mut (Subscription, Subscription),
    lost: &CancellationToken,
    pause: Duration,
    asked: &mut u64,
) -> std::result::Result<Option<i64>, AttemptError> {
    *asked = lease.shared.sentinel.asking();
    tokio::select! {
        biased;
        () = lost.cancelled() => return Err(Error::SessionLost.into()),
        woke = own.changed() => {
            woke?;
            return Ok(own.token());
        }
        woke = everyone.changed() => { woke?; }
        () = tokio::time::sleep(pause) => {}
    }
    Ok(None)
}

/// Checks the entry's place in line and returns the check's answer. Once in line,
/// connection trouble is ridden out ([`ride_out`]: checking is idempotent), until the
/// session ends.
async fn check_again(
    lease: &Arc<LeaseInner>,
    entry: &Entry,
    lost: &CancellationToken,
    backoff: &mut WaitRetry,
    asked: &mut u64,
) -> std::result::Result<Outcome, AttemptError> {
    loop {
        *asked = lease.shared.sentinel.asking();
        match entry.check().await {
            Ok(state) => {
                backoff.succeeded();
                return Ok(state);
            }
            Err(error) if is_missing_name(&error) => return Err(AttemptError::MissingName),
            Err(error) => ride_out(lease, error, lost, backoff).await?,
        }
    }
}

/// After a failed statement of an entry in line (a check, an unfair take's ask, both
/// idempotent): the error the wait ends with, or `Ok` after the backoff's pause when
/// the error is connection trouble, ridden out while the session lives.
pub(crate) async fn ride_out(
    lease: &LeaseInner,
    error: sqlx::Error,
    lost: &CancellationToken,
    backoff: &mut WaitRetry,
) -> Result<()> {
    let error = lease.statement_error(error);
    if !WaitRetry::retryable(&error) {
        return Err(error);
    }
    tokio::select! {
        biased;
        () = lost.cancelled() => Err(Error::SessionLost),
        () = backoff.pause(&error) => Ok(()),
    }
}

/// Why one attempt failed: the name's counter row is gone (register it again, once),
/// the entry vanished (its asynchronous join lost in a crash of the server: join
/// again), the store's lock-delay runs for this long (under unflushed grants: join
/// again after it), or anything else.
pub(crate) enum AttemptError {
    MissingName,
    Vanished,
    Held(Duration),
    Other(Error),
}

impl From<Error> for AttemptError {
    fn from(error: Error) -> Self {
        AttemptError::Other(error)
    }
}

/// The release step of an entry (a permit, a lock, a read or write lock, a candidacy):
/// delete it, waking the waiter it lets in (a candidacy's release is a resignation: it
/// elects that waiter, or deletes the leader row when nobody waits). An entry already
/// gone, or a session ended, is [`Error::SessionLost`] (see
/// [`LeaseInner::statement_error`]); for a candidacy it is [`Error::NotLeader`], and the
/// session's loss is left to its renewals to find. On a transient failure, the release
/// goes on in the background and the error is returned.
pub(crate) fn release_fn(lease: &Arc<LeaseInner>, entry: Entry) -> ReleaseFn {
    let lease = Arc::clone(lease);
    Box::new(move || {
        Box::pin(async move {
            match entry.leave(false).await {
                Ok(true) => Ok(()),
                Ok(false) if entry.candidacy => Err(Error::NotLeader),
                Ok(false) => Err(Error::SessionLost),
                Err(error) if entry.candidacy && is_session_gone(&error) => Err(Error::NotLeader),
                Err(error) => {
                    let error = lease.statement_error(error);
                    if error.is_transient() {
                        entry.leave_in_background(&lease, false);
                    }
                    Err(error)
                }
            }
        })
    })
}

/// The guard over a granted shared hold of read-write lock `name`.
pub(crate) fn read_guard(
    lease: &Arc<LeaseInner>,
    session: &Session,
    name: &Name,
    entry: Entry,
) -> ReadGuard {
    distsync_core::raw::read_guard(
        hold_key(lease, "rwlock", name),
        session,
        release_fn(lease, entry),
    )
}

/// The key string of a hold: `<schema>/<kind>/<name>/<session id hex>`.
pub(crate) fn hold_key(lease: &LeaseInner, kind: &str, name: &Name) -> String {
    format!("{}/{kind}/{name}/{:x}", lease.shared.schema, lease.id)
}
