//! The durable queue: rows of `queue_items`, claimed with `FOR UPDATE SKIP LOCKED`.
//!
//! An item is removed by one autocommitted statement,
//! `DELETE ... WHERE id = (SELECT id ... ORDER BY priority, id FOR UPDATE SKIP LOCKED
//! LIMIT 1) RETURNING ...`, so concurrent consumers never block each other or take the
//! same item; order is priority (lower first), then arrival.
//!
//! # Lost replies
//! A claim is named by a fresh call id and moves the item into `queue_inflight` in the
//! same statement that deletes it, unless a claim of that call id exists already, which
//! it returns instead. When the reply is lost (the connection reset after the server
//! committed), the claim is retried with the same id until the server answers: the
//! retry finds the first attempt's item, or, if the first attempt never committed (or
//! is rolled back by the primary key on `call` if it commits late), makes the claim
//! itself. Once the item is handed over, its in-flight record is deleted in the
//! background. So an item is delivered once or stays in the queue (or in flight), never
//! lost to a lost reply.
//!
//! # Idempotent enqueue
//! Every enqueue carries an [`AppendKey`]: a caller's (`enqueue_once`) or one the call
//! draws (`enqueue`), recorded for [the key's window](AppendKey::window). One
//! statement upserts the record `queue_dedup (queue, key)` (valued with the call's id)
//! only where none is live, and inserts the item only where it did: the check, the
//! record and the append commit together. A repeat after a lost reply finds the record
//! with its own call id and answers that the item is appended; a call with another id
//! appends nothing. Expiry is the server's clock (`expires_at`); each enqueue deletes a
//! few expired records of any queue on its way, so they do not pile up.
//!
//! # Stale claims
//! A consumer process that dies between a committed claim and its hand-over (or whose
//! store stays unreachable past every retry) leaves the item in `queue_inflight`. Every
//! claim of the queue also moves records older than the URL's `stale_claim=` (by default
//! [`STALE_CLAIM`], 15 minutes, as on
//! the other backends; `claimed_at` is the server's clock) back to `queue_items` at
//! their place. The price: an item delivered but whose record could not be deleted for
//! that long is delivered again. A waiting consumer looks again when the oldest claim
//! goes stale, as when a hold expires. A migration's export lists the item of a claim
//! left in flight as a queue item at the place the put-back gives it (see
//! `export.rs`): the source would deliver it again, so leaving it out would lose it.
//!
//! # Cancel safety
//! Once a claim is sent, the server commits it whether or not the client still reads
//! the answer: a consumer dropped at that moment would lose the item. So the claim runs
//! [`detached`] and answers with a [`Taken`]. If the consumer is gone by then, the
//! unreceived claim is dropped and puts the item back with its original id and priority
//! (moved back from `queue_inflight` in one statement), so it keeps its place.
//!
//! # At-least-once delivery ([`Queue::receive`])
//! A received item stays in its row (so at its place): the receive sets `held_by` (the
//! session's id), `held_call` (the call id, unique while set, so a retry after a lost
//! reply finds its item and a late first attempt cannot hold a second one) and bumps
//! `deliveries`, in one statement that also checks the session row is live. An item
//! counts as held only while its session's row exists and has not expired: every reader
//! (`dequeue`, `receive`, `len`) skips such items, and the end of the session (its row
//! deleted, or expired: the holder's process died) makes the item visible again at its
//! place with no client's help. `ack` deletes the row (if the hold is still this call's
//! and the session live); `nack` clears the hold. A receive dropped before it returns
//! hands its delivery back, whose drop nacks it.
//!
//! Whether a holder's session has expired is settled under its row's lock
//! (`queue_held`, through the sessions' `fence_expired`), never from a statement's
//! snapshot alone: a renewal that checked the row before its expiry may commit after a
//! snapshot that shows the old expiry, already past by the clock, and the item would go
//! to a second consumer while the first one's renewal succeeds. A session whose row is
//! being written (a renewal in flight) counts as live, so its items stay held and its
//! own receives and acknowledgements go on; one judged expired is rewritten, so that a
//! renewal waiting for its row finds it expired and its holder learns of the loss.
//!
//! # Waking one consumer per item
//! A blocking consumer registers in the line `queue_waiters` (its own notification
//! payload `W:<call id>`, an expiry renewed while it waits). An insert into
//! `queue_items`, a nack, and the end of a session holding items call `queue_wake`,
//! which takes the first live waiter out of the line and notifies it alone. A consumer
//! that was woken (out of the line) and took an item while others remain, or that is
//! dropped while registered, passes the wake-up on (`queue_pass`), so one lost with a
//! crashed consumer is not lost for good; a consumer that took an item withdraws before
//! it returns, so that what it passes on is judged before its caller acts again; and a
//! waiting consumer re-checks when its registration is due for renewal, when the
//! first hold it saw would expire, or when the oldest claim it saw would go stale.
//!
//! [`STALE_CLAIM`]: distsync_core::queue::STALE_CLAIM

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use distsync_core::queue::{AppendKey, Enqueued};
use distsync_core::raw::locked;
use distsync_core::raw::Look::{NotYet, Ready};
use distsync_core::raw::{
    detached, queue_recheck_after, Claim, ClaimGuard, CleanUp, Failure, Idempotence, RetryPolicy,
    SessionStoreSide as _, Settle, QUEUE_WAITER_TTL,
};
use distsync_core::{Delivery, Error, Name, Queue, Result, Session};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;

use crate::connection::bounded::{through_pool, timed_out, within};
use crate::error::{map, BACKEND};
use crate::schema::millis;
use crate::store::Shared;

pub(crate) struct PgQueue {
    pub(crate) shared: Arc<Shared>,
    pub(crate) name: Name,
}

/// An item removed from the queue: id, priority, payload.
type Claimed = (i64, i32, Vec<u8>);

/// How long a claim whose reply was lost is retried before the error is returned (the
/// item then stays in `queue_inflight`).
const CLAIM_RETRIES_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// Claims the first item under a fresh call id, retrying the (idempotent) claim
/// through lost replies. The item stays recorded in flight under the returned call id
/// until it is handed over or put back ([`PgClaim`]).
async fn claim(shared: &Arc<Shared>, queue: &str) -> Result<Option<(String, Claimed)>> {
    let call = distsync_core::raw::call_id();
    let claimed = through_lost_replies("a queue claim's answer", || {
        claim_once(shared, queue, &call)
    })
    .await?;
    Ok(claimed.map(|claimed| (call, claimed)))
}

/// Runs `attempt`, one attempt of a claim or a hold keyed by its call id, until it
/// answers, as core's policy repeats idempotent requests: the call id makes a repeat
/// find what an earlier attempt took, so a lost reply is repeated, for up to
/// [`CLAIM_RETRIES_FOR`] (`what` names it in log lines). A unique violation on the call
/// id is repeated too: an earlier attempt, whose reply was lost, committed concurrently,
/// and the next attempt finds it. Any other error, or one past the deadline, is
/// returned.
async fn through_lost_replies<T, F, Fut>(what: &'static str, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, sqlx::Error>>,
{
    let deadline = tokio::time::Instant::now() + CLAIM_RETRIES_FOR;
    let repeated = || {
        let attempting = attempt();
        async move {
            attempting.await.map_err(|error| match &error {
                sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
                    Error::connection(
                        BACKEND,
                        "an earlier attempt of the call committed meanwhile",
                    )
                }
                _ => map(error),
            })
        }
    };
    RetryPolicy::default()
        .idempotent_until(what, Some(deadline), None, repeated)
        .await
}

/// The common table expressions that put back the queue's stale claims (those older
/// than `$<stale>` ms): `restored` has a row per item put back. Items put back are not
/// visible to the rest of the statement, which then says so (kind 2) to be retried.
fn stale_ctes(stale: u8) -> String {
    format!(
        "stale AS ( \
             DELETE FROM {{s}}.queue_inflight WHERE queue = $1 \
                AND claimed_at < clock_timestamp() - ${stale} * interval '1 millisecond' \
             RETURNING id, queue, priority, item), \
         restored AS ( \
             INSERT INTO {{s}}.queue_items (id, queue, priority, item) \
             SELECT id, queue, priority, item FROM stale ON CONFLICT (id) DO NOTHING \
             RETURNING 1)"
    )
}

/// A row of a claim's answer: kind (1 an item, 2 stale claims were put back), row id,
/// priority, payload.
type ClaimRow = (i32, Option<i64>, Option<i32>, Option<Vec<u8>>);

/// One attempt of the claim named `call`: the item an earlier attempt of it took, or
/// the first item, moved into `queue_inflight`. Claims older than the stale bound
/// are put back first; when that finds some and the claim took nothing, it is made
/// again (the items put back were not visible to the statement).
async fn claim_once(
    shared: &Shared,
    queue: &str,
    call: &str,
) -> std::result::Result<Option<Claimed>, sqlx::Error> {
    let sql = shared.sql(&format!(
        "WITH {stale}, \
         earlier AS ( \
             SELECT id, priority, item FROM {{s}}.queue_inflight WHERE call = $2), \
         taken AS ( \
             DELETE FROM {{s}}.queue_items WHERE id = ( \
                 SELECT id FROM {{s}}.queue_items WHERE queue = $1 \
                    AND (held_by IS NULL OR NOT {{s}}.queue_held(held_by)) \
                  ORDER BY priority, id LIMIT 1 FOR UPDATE SKIP LOCKED) \
               AND NOT EXISTS (SELECT 1 FROM earlier) \
             RETURNING id, priority, item), \
         recorded AS ( \
             INSERT INTO {{s}}.queue_inflight (call, id, queue, priority, item) \
             SELECT $2, id, $1, priority, item FROM taken \
             RETURNING id, priority, item) \
         SELECT 1, id, priority, item FROM earlier \
         UNION ALL SELECT 1, id, priority, item FROM recorded \
         UNION ALL SELECT 2, NULL::bigint, NULL::integer, NULL::bytea \
          WHERE EXISTS (SELECT 1 FROM restored)",
        stale = stale_ctes(3)
    ));
    loop {
        let rows: Vec<ClaimRow> = sqlx::query_as(&sql)
            .bind(queue)
            .bind(call)
            .bind(millis(shared.stale_claim))
            .fetch_all(shared.bounded())
            .await?;
        for (kind, id, priority, item) in &rows {
            if let (1, Some(id), Some(priority), Some(item)) = (kind, id, priority, item) {
                return Ok(Some((*id, *priority, item.clone())));
            }
        }
        if rows.is_empty() {
            return Ok(None);
        }
    }
}

/// The claim `call` on an item moved into `queue_inflight`: the item goes back where it
/// was (same id and priority) unless handed over, when its record is deleted instead.
struct PgClaim {
    shared: Arc<Shared>,
    call: String,
}

#[async_trait]
impl Claim for PgClaim {
    fn put_back_clean_up(&self) -> CleanUp {
        CleanUp::new(
            "putting back a dropped consumer's queue item",
            "it stays in flight until swept as stale",
        )
        .of(&self.call)
    }

    /// Moves the item out of `queue_inflight` in one statement: once moved, the
    /// record is gone and a repeat moves nothing.
    async fn put_back(&self) -> Result<()> {
        let sql = self.shared.sql(
            "WITH moved AS (DELETE FROM {s}.queue_inflight WHERE call = $1 \
                 RETURNING id, queue, priority, item) \
             INSERT INTO {s}.queue_items (id, queue, priority, item) \
             SELECT id, queue, priority, item FROM moved ON CONFLICT (id) DO NOTHING",
        );
        sqlx::query(&sql)
            .bind(&self.call)
            .execute(self.shared.bounded())
            .await
            .map_err(map)?;
        tracing::debug!(call = self.call, "item of a dropped consumer put back");
        Ok(())
    }

    fn forget_clean_up(&self) -> Option<CleanUp> {
        Some(
            CleanUp::new(
                "forgetting a delivered queue claim",
                "its record stays in flight and is swept as stale",
            )
            .of(&self.call),
        )
    }

    async fn forget(&self) -> Result<()> {
        let sql = self
            .shared
            .sql("DELETE FROM {s}.queue_inflight WHERE call = $1");
        sqlx::query(&sql)
            .bind(&self.call)
            .execute(self.shared.bounded())
            .await
            .map_err(map)?;
        Ok(())
    }
}

/// An item claimed and not yet handed to the caller: its record stays in flight until
/// handed over; dropped before that (the caller went away while the waiter left the
/// line), the item is put back at its place.
type Taken = (Bytes, ClaimGuard<PgClaim>);

impl PgQueue {
    /// Removes the first item, if any, still recorded in flight (see [`Taken`]).
    /// Cancel-safe (see the module docs).
    async fn claim_protected(&self) -> Result<Option<Taken>> {
        let shared = Arc::clone(&self.shared);
        let queue = self.name.as_str().to_owned();
        // Past the bound, the claim task puts back whatever it takes (it goes on
        // retrying a claim whose reply was lost, so no item stays in flight).
        self.bounded_detached(async move {
            let claimed = claim(&shared, &queue).await?;
            Ok(claimed.map(|(call, (_, _, item))| {
                (Bytes::from(item), ClaimGuard::new(PgClaim { shared, call }))
            }))
        })
        .await
    }

    /// Runs `step` (a claim or a hold) [`detached`], bounded as one request
    /// (`crate::connection::bounded`): past that, its answer goes unreceived and is
    /// dropped, which puts an item back (a [`Taken`]) or nacks it (a [`Delivery`]).
    async fn bounded_detached<T: Send + 'static>(
        &self,
        step: impl std::future::Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let limit = through_pool(&self.shared.pool);
        tokio::time::timeout(limit, detached(BACKEND, step))
            .await
            .unwrap_or_else(|_| Err(map(timed_out(limit))))
    }
}

/// What a blocking consumer waits for: an item (or a delivery) it tries to take.
type Attempt<'a, T> =
    Box<dyn FnMut() -> futures::future::BoxFuture<'a, Result<Option<T>>> + Send + 'a>;

/// A blocking consumer's place in `queue_waiters`: withdrawn when dropped, passing on a
/// wake-up it may have consumed (see the module docs).
struct Waiter {
    shared: Arc<Shared>,
    queue: String,
    id: String,
    /// Whether a registration may have reached the line, so that leaving it is due.
    registered: AtomicBool,
}

impl Waiter {
    /// Joins (or renews its place in) the line; returns how long until the first hold
    /// of the queue expires or its oldest claim goes stale (as [`stale_ctes`] judges
    /// it), whichever comes first, if any (its item may then come back unannounced).
    async fn register(&self) -> Result<Option<Duration>> {
        self.registered.store(true, Ordering::SeqCst);
        // `least` skips a NULL (no hold, or no claim), leaving the other one's time.
        // The oldest claim is read as a row, not with `min`: `greatest` would turn a
        // NULL minimum into 0. A claim already stale counts as due now (the next claim
        // puts it back).
        let soonest: Option<i64> = sqlx::query_scalar(&self.shared.sql(
            "WITH reg AS (INSERT INTO {s}.queue_waiters (queue, waiter, expires_at) \
                 VALUES ($1, $2, clock_timestamp() + $3 * interval '1 millisecond') \
                 ON CONFLICT (waiter) DO UPDATE SET expires_at = EXCLUDED.expires_at \
                 RETURNING 1) \
             SELECT least( \
                 (SELECT (extract(epoch FROM min(x.expires_at) - clock_timestamp()) \
                          * 1000)::bigint \
                    FROM {s}.queue_items i JOIN {s}.sessions x ON x.id = i.held_by \
                   WHERE i.queue = $1 AND x.expires_at > clock_timestamp()), \
                 (SELECT greatest(0, (extract(epoch FROM claimed_at \
                              + $4 * interval '1 millisecond' - clock_timestamp()) \
                          * 1000)::bigint) \
                    FROM {s}.queue_inflight WHERE queue = $1 \
                   ORDER BY claimed_at LIMIT 1)) \
               FROM reg",
        ))
        .bind(&self.queue)
        .bind(&self.id)
        .bind(millis(QUEUE_WAITER_TTL))
        .bind(millis(self.shared.stale_claim))
        .fetch_one(self.shared.bounded())
        .await
        .map_err(map)?;
        Ok(soonest
            .and_then(|ms| u64::try_from(ms).ok())
            .map(Duration::from_millis))
    }

    /// Leaves the line, passing on a wake-up this waiter may have consumed (see
    /// `queue_pass`).
    async fn pass(shared: &Shared, queue: &str, id: &str) -> Result<()> {
        sqlx::query(&shared.sql("SELECT {s}.queue_pass($1, $2)"))
            .bind(queue)
            .bind(id)
            .execute(shared.bounded())
            .await
            .map_err(map)?;
        Ok(())
    }

    /// Leaves the line before the consumer returns what it took, so that a wake-up it
    /// passes on is judged against the queue as it is now, not as it will be once the
    /// caller has enqueued more. On failure the withdrawal is left to the drop (in the
    /// background, retried).
    async fn withdraw(&self) {
        if self.registered.load(Ordering::SeqCst)
            && Self::pass(&self.shared, &self.queue, &self.id)
                .await
                .is_ok()
        {
            self.registered.store(false, Ordering::SeqCst);
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if !*self.registered.get_mut() {
            return;
        }
        let shared = Arc::clone(&self.shared);
        let queue = std::mem::take(&mut self.queue);
        let id = std::mem::take(&mut self.id);
        // Past its TTL the place has expired, and every waiter re-checks by then.
        CleanUp::new(
            "a queue waiter's withdrawal",
            "its place expires after its TTL",
        )
        .within(QUEUE_WAITER_TTL)
        .spawn(move |clean_up| async move {
            clean_up.retry(|| Waiter::pass(&shared, &queue, &id)).await
        });
    }
}

impl PgQueue {
    /// Runs `attempt` until it yields, waiting in the line between attempts (woken
    /// alone, see the module docs); `lost` ends the wait with [`Error::SessionLost`].
    async fn wait_for<'a, T>(
        &'a self,
        mut attempt: Attempt<'a, T>,
        lost: Option<&CancellationToken>,
    ) -> Result<T> {
        let waiter = Waiter {
            shared: Arc::clone(&self.shared),
            queue: self.name.as_str().to_owned(),
            id: distsync_core::raw::call_id(),
            registered: AtomicBool::new(false),
        };
        let payload = format!("W:{}", waiter.id);
        // `Some(soonest)` from a registration until the next wait ends: a consumer woken
        // (out of the line) or due for renewal registers again if it finds nothing.
        let in_line = Mutex::new(None);
        self.shared.hub.wait_until(payload, "a queue item", lost, |_| {
            let attempting = attempt();
            let (waiter, in_line) = (&waiter, &in_line);
            async move {
                if let Some(found) = attempting.await? {
                    // `found` puts its item back if dropped here (a `Taken`, or a
                    // `Delivery`, which nacks): the caller may go away meanwhile.
                    waiter.withdraw().await;
                    return Ok(Ready(found));
                }
                let lined_up = locked(in_line).take();
                if let Some(soonest) = lined_up {
                    // In line, and the queue was found empty after lining up: from here
                    // only a wake-up (or the renewal due) makes this consumer look again.
                    tracing::trace!(queue = %self.name, waiter = %waiter.id, "waiting for a queue item");
                    return Ok(NotYet(Some(queue_recheck_after(soonest))));
                }
                // Registered: look once more before waiting (an item may have come in
                // between the attempt and the registration).
                let soonest = waiter.register().await?;
                *locked(in_line) = Some(soonest);
                Ok(NotYet(Some(Duration::ZERO)))
            }
        })
        .await
    }

    /// The session's id, if `session` was granted by this backend and is not lost.
    fn held_by(&self, session: &Session) -> Result<i64> {
        let id = crate::session::lease_of(session, &self.shared)?.id;
        if session.is_lost() {
            return Err(Error::SessionLost);
        }
        Ok(id)
    }

    /// Holds the first item through `session`, if any. Cancel-safe: the hold runs
    /// [`detached`]; a delivery nobody receives is dropped, which nacks it.
    async fn hold_protected(&self, session: &Session, held_by: i64) -> Result<Option<Delivery>> {
        let shared = Arc::clone(&self.shared);
        let queue = self.name.as_str().to_owned();
        let session = session.clone();
        self.bounded_detached(async move { hold(&shared, &queue, &session, held_by).await })
            .await
    }
}

/// A held item's row id, payload and earlier deliveries; or the session gone.
enum Held {
    Item(i64, Vec<u8>, i32),
    SessionGone,
}

/// Holds the first item of `queue` through session `held_by` under a fresh call id,
/// retrying the (idempotent) hold through lost replies.
async fn hold(
    shared: &Arc<Shared>,
    queue: &str,
    session: &Session,
    held_by: i64,
) -> Result<Option<Delivery>> {
    let call = distsync_core::raw::call_id();
    let held = through_lost_replies("a queue hold's answer", || {
        hold_once(shared, queue, &call, held_by)
    })
    .await?;
    match held {
        None => Ok(None),
        Some(Held::SessionGone) => Err(Error::SessionLost),
        Some(Held::Item(id, item, deliveries)) => {
            let settle = PgSettle {
                shared: Arc::clone(shared),
                id,
                call,
                session: held_by,
            };
            let earlier = u32::try_from(deliveries.saturating_sub(1)).unwrap_or(0);
            Ok(Some(Delivery::new(
                Bytes::from(item),
                earlier,
                session,
                Box::new(settle),
            )))
        }
    }
}

/// A row of [`hold_once`]'s answer: kind (1 an item, 0 the session is gone, 2 stale
/// claims were put back), row id, payload, deliveries.
type HoldRow = (i32, Option<i64>, Option<Vec<u8>>, Option<i32>);

/// One attempt of the hold named `call`: the item an earlier attempt of it holds, or
/// the first item nobody holds, if the session is live. Stale claims are put back
/// first, as in [`claim_once`].
async fn hold_once(
    shared: &Shared,
    queue: &str,
    call: &str,
    held_by: i64,
) -> std::result::Result<Option<Held>, sqlx::Error> {
    let sql = shared.sql(&format!(
        "WITH {stale}, \
         live AS ( \
             SELECT 1 WHERE {{s}}.queue_held($3)), \
         earlier AS ( \
             SELECT id, item, deliveries FROM {{s}}.queue_items \
              WHERE held_call = $2 AND held_by = $3 AND EXISTS (SELECT 1 FROM live)), \
         taken AS ( \
             UPDATE {{s}}.queue_items SET held_by = $3, held_call = $2, deliveries = deliveries + 1 \
              WHERE id = ( \
                  SELECT id FROM {{s}}.queue_items WHERE queue = $1 \
                     AND (held_by IS NULL OR NOT {{s}}.queue_held(held_by)) \
                   ORDER BY priority, id LIMIT 1 FOR UPDATE SKIP LOCKED) \
                AND NOT EXISTS (SELECT 1 FROM earlier) AND EXISTS (SELECT 1 FROM live) \
             RETURNING id, item, deliveries) \
         SELECT 1, id, item, deliveries FROM earlier \
         UNION ALL SELECT 1, id, item, deliveries FROM taken \
         UNION ALL SELECT 0, NULL::bigint, NULL::bytea, NULL::integer \
          WHERE NOT EXISTS (SELECT 1 FROM live) \
         UNION ALL SELECT 2, NULL::bigint, NULL::bytea, NULL::integer \
          WHERE EXISTS (SELECT 1 FROM restored)",
        stale = stale_ctes(4)
    ));
    loop {
        let rows: Vec<HoldRow> = sqlx::query_as(&sql)
            .bind(queue)
            .bind(call)
            .bind(held_by)
            .bind(millis(shared.stale_claim))
            .fetch_all(shared.bounded())
            .await?;
        for (kind, id, item, deliveries) in &rows {
            if let (1, Some(id), Some(item), Some(deliveries)) = (kind, id, item, deliveries) {
                return Ok(Some(Held::Item(*id, item.clone(), *deliveries)));
            }
        }
        if rows.iter().any(|(kind, ..)| *kind == 0) {
            return Ok(Some(Held::SessionGone));
        }
        if rows.is_empty() {
            return Ok(None);
        }
        // Stale claims were put back, unseen by this statement: hold again.
    }
}

/// One held item's acknowledgement and return: the item's row, the receive's call id
/// and the holding session's id, which an acknowledgement checks.
pub(crate) struct PgSettle {
    pub(crate) shared: Arc<Shared>,
    pub(crate) id: i64,
    pub(crate) call: String,
    pub(crate) session: i64,
}

#[async_trait]
impl Settle for PgSettle {
    async fn ack_step(&self) -> Result<bool> {
        let sql = self.shared.sql(
            "WITH gone AS (DELETE FROM {s}.queue_items \
                 WHERE id = $1 AND held_call = $2 AND held_by = $3 AND {s}.queue_held($3) \
                 RETURNING 1) \
             SELECT (SELECT count(*) FROM gone), \
                    (SELECT count(*) FROM {s}.queue_items WHERE id = $1)",
        );
        let (acked, present): (i64, i64) = sqlx::query_as(&sql)
            .bind(self.id)
            .bind(&self.call)
            .bind(self.session)
            .fetch_one(self.shared.bounded())
            .await
            .map_err(map)?;
        // Deleted now, or by an earlier attempt whose reply was lost; otherwise the
        // session ended first: the item is back (or with another consumer).
        Ok(acked > 0 || present == 0)
    }

    async fn nack_step(&self) -> Result<()> {
        let sql = self.shared.sql(
            "WITH back AS (UPDATE {s}.queue_items SET held_by = NULL, held_call = NULL \
                 WHERE id = $1 AND held_call = $2 RETURNING queue) \
             SELECT {s}.queue_wake(queue) FROM back",
        );
        sqlx::query(&sql)
            .bind(self.id)
            .bind(&self.call)
            .execute(self.shared.bounded())
            .await
            .map_err(map)?;
        Ok(())
    }

    fn policy(&self) -> RetryPolicy {
        self.shared.retry()
    }
}

/// How many expired idempotency records an enqueue deletes on its way.
const DEDUP_SWEEP: i64 = 16;

/// An enqueue: `item` at `priority` on `queue` unless the record of `key`
/// (`u:<user key>` or `g:<call id>`) is live, recording it for `window`.
pub(crate) struct Append<'a> {
    pub(crate) queue: &'a str,
    pub(crate) key: &'a str,
    pub(crate) window: Duration,
    pub(crate) item: &'a [u8],
    pub(crate) priority: u16,
}

impl Append<'_> {
    /// Runs the enqueue as the call `call` on `conn`: the record and the item in one
    /// statement, which a transaction open on `conn` makes part of itself (the item
    /// exists, and the consumers' wake-up is sent, only once it commits). Answers
    /// [`Enqueued::New`] also when the live record is this call's own (an earlier
    /// attempt of it whose reply was lost).
    pub(crate) async fn run(
        &self,
        shared: &Shared,
        conn: &mut PgConnection,
        call: &str,
    ) -> std::result::Result<Enqueued, sqlx::Error> {
        let window_ms = millis(self.window);
        // The last select reads the record as it was before the statement (a live record
        // of another call, or of an earlier attempt of this one).
        let (appended, holder): (i32, Option<String>) = sqlx::query_as(&shared.sql(
            "WITH swept AS ( \
                 DELETE FROM {s}.queue_dedup WHERE (queue, key) IN ( \
                     SELECT queue, key FROM {s}.queue_dedup \
                      WHERE expires_at <= clock_timestamp() \
                        AND NOT (queue = $1 AND key = $4) \
                      ORDER BY expires_at LIMIT $7 FOR UPDATE SKIP LOCKED)), \
             recorded AS ( \
                 INSERT INTO {s}.queue_dedup (queue, key, call, expires_at) \
                 VALUES ($1, $4, $5, clock_timestamp() + $6 * interval '1 millisecond') \
                 ON CONFLICT (queue, key) DO UPDATE \
                    SET call = EXCLUDED.call, expires_at = EXCLUDED.expires_at \
                  WHERE {s}.queue_dedup.expires_at <= clock_timestamp() \
                 RETURNING 1), \
             appended AS ( \
                 INSERT INTO {s}.queue_items (queue, priority, item) \
                 SELECT $1, $2, $3 FROM recorded RETURNING 1) \
             SELECT (SELECT count(*) FROM appended)::int, \
                    (SELECT call FROM {s}.queue_dedup WHERE queue = $1 AND key = $4 \
                        AND expires_at > clock_timestamp())",
        ))
        .bind(self.queue)
        .bind(i32::from(self.priority))
        .bind(self.item)
        .bind(self.key)
        .bind(call)
        .bind(window_ms)
        .bind(DEDUP_SWEEP)
        .fetch_one(&mut *conn)
        .await?;
        if appended > 0 {
            return Ok(Enqueued::New);
        }
        let holder = match holder {
            Some(_) => holder,
            // Recorded by a call that committed while this statement waited on it:
            // invisible to the statement's snapshot, read now (a new snapshot under READ
            // COMMITTED; a stricter isolation level fails the statement instead).
            None => {
                sqlx::query_scalar(&shared.sql(
                    "SELECT call FROM {s}.queue_dedup WHERE queue = $1 AND key = $2 \
                        AND expires_at > clock_timestamp()",
                ))
                .bind(self.queue)
                .bind(self.key)
                .fetch_optional(&mut *conn)
                .await?
            }
        };
        Ok(if holder.as_deref() == Some(call) {
            Enqueued::New
        } else {
            Enqueued::Duplicate
        })
    }
}

#[async_trait]
impl Queue for PgQueue {
    fn name(&self) -> &Name {
        &self.name
    }

    /// Appends unless `key` was seen within its window: one call id across the attempts,
    /// which repeat through transient failures within the one-shot budget, each on a
    /// connection of the pool and bounded as one request (see
    /// the module docs).
    async fn append_bytes(&self, key: &AppendKey, item: Bytes, priority: u16) -> Result<Enqueued> {
        let call = distsync_core::raw::call_id();
        let append = Append {
            queue: self.name.as_str(),
            key: &key.record(),
            window: key.window(),
            item: item.as_ref(),
            priority,
        };
        let pool = &self.shared.pool;
        let limit = through_pool(pool) + self.shared.request_timeout();
        let attempt = || async {
            within(limit, async {
                let mut conn = pool.acquire().await?;
                append.run(&self.shared, &mut conn, &call).await
            })
            .await
            .map_err(map)
        };
        self.shared
            .retry()
            .one_shot(
                "queue enqueue",
                Idempotence::Idempotent,
                Failure::of,
                attempt,
            )
            .await
    }

    /// Waits out connection trouble (see [`distsync_core::raw::retry`]).
    ///
    /// Cancel-safety: cancel-safe; an item claimed for a dropped call is put back in its
    /// place (see the module docs).
    async fn dequeue(&self) -> Result<Bytes> {
        let (item, claim) = self
            .wait_for(Box::new(|| Box::pin(self.claim_protected())), None)
            .await?;
        claim.hand_over();
        Ok(item)
    }

    async fn try_dequeue(&self) -> Result<Option<Bytes>> {
        Ok(self.claim_protected().await?.map(|(item, claim)| {
            claim.hand_over();
            item
        }))
    }

    /// Waits for an item and holds it through `session` (see the module docs).
    ///
    /// Cancel-safety: cancel-safe; a delivery made for a dropped call is nacked.
    async fn receive(&self, session: &Session) -> Result<Delivery> {
        let held_by = self.held_by(session)?;
        self.wait_for(
            Box::new(move || Box::pin(self.hold_protected(session, held_by))),
            Some(session.lost_token()),
        )
        .await
    }

    /// Holds the first item through `session` if there is one.
    ///
    /// Cancel-safety: cancel-safe, as [`PgQueue::receive`].
    async fn try_receive(&self, session: &Session) -> Result<Option<Delivery>> {
        let held_by = self.held_by(session)?;
        self.hold_protected(session, held_by).await
    }

    /// Items held by a live session are not counted.
    async fn len(&self) -> Result<usize> {
        let n: i64 = sqlx::query_scalar(&self.shared.sql(
            "SELECT count(*) FROM {s}.queue_items \
              WHERE queue = $1 AND (held_by IS NULL OR NOT {s}.queue_held(held_by))",
        ))
        .bind(self.name.as_str())
        .fetch_one(self.shared.bounded())
        .await
        .map_err(map)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// The server's `clock_timestamp()` less the least `enqueued_at` of the items not
    /// held by a live session; an item put back after a cancelled dequeue counts from
    /// its put-back.
    async fn oldest_age(&self) -> Result<Option<Duration>> {
        let micros: Option<i64> = sqlx::query_scalar(&self.shared.sql(
            "SELECT (extract(epoch FROM clock_timestamp() - min(enqueued_at)) * 1000000)::bigint \
               FROM {s}.queue_items \
              WHERE queue = $1 AND (held_by IS NULL OR NOT {s}.queue_held(held_by))",
        ))
        .bind(self.name.as_str())
        .fetch_one(self.shared.bounded())
        .await
        .map_err(map)?;
        Ok(micros.map(|m| Duration::from_micros(u64::try_from(m).unwrap_or(0))))
    }
}
