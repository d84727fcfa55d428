//! The unfair lock: the fair lock's holder and guard, without its line of waiters.
//!
//! # Layout (`sql/unfair_lock.sql`)
//! - The holder is the fair lock's: the solo holder in the name's row of `lock_names`
//!   while no fair contender waits, an exclusive entry of the name's line otherwise (see
//!   [`crate::waiter_line`], "The solo holder"). So the unfair and the fair lock of one
//!   name are one lock: they exclude each other, share the name's fencing counter
//!   (`lock_names.token`, so tokens grow across the holders of both), and the guarded
//!   write ([`crate::guarded`]), the status report, the release (with its asynchronous
//!   commit, made again after a crash, see [`crate::connection::unflushed`]), revocation
//!   and breaking work on it unchanged.
//! - Its waiters are rows of `unfair_waiters` (name, session, entry number, `ord` in
//!   order of registration), tied to their session's row (deleted with it). They are not
//!   entries: no release grants them, they hold no place in the line, and they leave a
//!   solo holder where it is. The name's `waiters` mark says that some may wait; it is set
//!   and cleared under the name's row lock.
//!
//! # Protocol
//! - **Take**: one statement. A free lock is held solo: one `UPDATE` of the name's row
//!   (see [`crate::waiter_line`], "The solo holder"); otherwise the same statement runs
//!   `unfair_acquire`, which refuses while a live solo holder holds and is otherwise the
//!   fair lock's try (`semaphore_join` without waiting). So the uncontended cycle is one
//!   statement to take and one ([`Entry::leave`]) to release, on a pooled connection,
//!   with no subscription and nothing registered. A contended one is the same two
//!   statements as long as no fair contender joins: barging costs the releaser one row
//!   update to release and one to take again, with no entry row, trigger or function.
//! - **Wait**: a refused `lock()` subscribes to its own wake-up (`m:<session>.<entry>`,
//!   on the backend's one listening connection, see [`crate::notify`]) and asks again
//!   with `unfair_acquire` alone: under the name's row lock, granted solo if the lock came
//!   free meanwhile (and its waiter row deleted, the `waiters` mark with the last one),
//!   registered otherwise (kept at its place if it was registered before) and the name
//!   marked. Then it waits for its wake-up, for the end of the solo holder's session
//!   (`s:<id>`, which deletes no entry, so no trigger of the line tells anyone), or until
//!   the first lease end among the holder and the line's live entries (the safety net: a
//!   lost wake-up, or a holder that vanished without a release, costs a wait to that
//!   instant, not a polling interval), and asks again.
//! - **Release and wake**: a solo holder's release reads the `waiters` mark from the row
//!   it updates, on the row's newest version (after any registration that held the row's
//!   lock, so a waiter registered before the release is always seen), and wakes the head,
//!   the live waiter registered first (`unfair_wake_head`), only when it is set. A
//!   release of a holder in the line is an entry's delete, whose trigger
//!   (`unfair_entry_gone`, one index probe when nobody waits unfairly) wakes the head once
//!   the line has no live entry left. The head asks again; a newcomer may have asked first
//!   and won (barging), and the head then waits again, still head. A head that leaves
//!   (withdrawn, its session ended) wakes the next one if the lock is free
//!   (`unfair_waiter_gone`), so a wake-up spent on a waiter that left is passed on.
//!
//! # No herd
//! A release wakes one waiter, the head; the others are not told. The wake-ups of a
//! handle are counted ([`Locker::wakeups`]). Two rarer cases wake more: the close of a
//! session racing a join of the same name (the line's trigger then tells every waiter
//! of the name to re-check, `M:<name id>`, see [`crate::waiter_line`]), and a reconnection
//! of the listener (every subscriber re-checks; not counted as wake-ups of the store).
//!
//! # Mixed with the fair lock
//! The line's own trigger runs first on a deletion and grants the fair waiters it lets
//! in; the unfair head is woken only when the line is empty. So an unfair contender
//! waits behind the whole fair line, and a fair contender waits behind an unfair holder
//! as behind any entry ahead of it.
//!
//! # The lease gate
//! The grant is the fair try's, so it passes over an entry only once its session has
//! expired as judged under the session's row lock (`fence_expired`: a renewal in
//! flight counts as live). Which waiter is woken is judged from a snapshot: that decides
//! nothing but whom to wake, and a wake-up missed so is made up by the safety net.
//!
//! # Cancel safety
//! A dropped wait withdraws its entry in the background as the fair lock's does
//! (`semaphore_leave` with a tombstone: a grant made meanwhile is released, a take
//! still in flight gives up), and the tombstone's insertion deletes the waiter row
//! (`unfair_withdrawn`). A withdrawal that never lands ends with the session.
//!
//! Entry numbers are drawn from a counter of this module going down from -1, so that
//! they never meet those of the line's other holders in one session (going up from 1).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use distsync_core::raw::{waited, Make, OnSession, WaitRetry};
use distsync_core::{Error, LockGuard, Locker, Name, Result, Session};

use crate::error::{map, BACKEND};
use crate::guarded::lock_guard;
use crate::notify::{Subscription, Wake};
use crate::session::LeaseInner;
use crate::store::{LockKind, Shared};
use crate::waiter_line::{
    attempts, hold_key, is_missing_name, ride_out, seconds, solo_take_sql, subscribe, AttemptError,
    Cleanup, Entry, HELD_FALLBACK,
};

/// Entry numbers of the unfair lock in this process: negative, apart from the line's.
static ENTRIES: AtomicI64 = AtomicI64::new(-1);

/// How long after the safety net's instant (a lease end) the waiter asks again, so
/// that the lease has ended by the server's clock too.
const AFTER_LEASE_END: Duration = Duration::from_millis(5);

/// The unfair lock of one name, held through one session.
pub(crate) struct PgUnfairLocker {
    lease: Arc<LeaseInner>,
    session: Session,
    name: Name,
    /// The first take's statement (a solo hold, else `unfair_acquire`), rendered once.
    acquire: String,
    /// A waiting take's statement (`unfair_acquire` alone, which also keeps the waiter
    /// rows and the name's `waiters` mark under the name's row lock), rendered once.
    acquire_waiting: String,
    /// The wake-ups the store sent this handle's waits.
    wakeups: AtomicU64,
}

/// What `unfair_acquire` answered.
enum Answer {
    Granted(i64),
    /// Not granted, nothing registered (a try).
    Refused,
    /// Not granted, registered: ask again at a wake-up or by this time (the first lease
    /// end among the holder and the line), if any, or when the session of the solo
    /// holder, if one holds, ends.
    Waiting(Option<Duration>, Option<i64>),
    /// Under unflushed grants, the store's lock-delay runs for this long: nothing taken
    /// or registered; ask again then.
    Held(Duration),
}

type Row = (Option<i32>, Option<i64>, Option<f64>, Option<i64>);

fn answer(row: Row) -> std::result::Result<Answer, sqlx::Error> {
    let (state, token, wait, holder) = row;
    Ok(match (state, token) {
        (Some(1), Some(token)) => Answer::Granted(token),
        (Some(2), _) => Answer::Refused,
        (Some(0), _) => Answer::Waiting(seconds(wait), holder),
        (Some(6), _) => Answer::Held(seconds(wait).unwrap_or(HELD_FALLBACK)),
        // 4 (withdrawn before this ran) and anything else: the handle's own wait is
        // never withdrawn while it runs.
        _ => {
            return Err(sqlx::Error::Protocol(format!(
                "unexpected unfair lock state {state:?}"
            )))
        }
    })
}

impl PgUnfairLocker {
    /// One take of `entry`: the solo take, else `unfair_acquire`, for the first try;
    /// `unfair_acquire` alone, registering the entry as a waiter, if `wait`.
    async fn ask(&self, entry: &Entry, wait: bool) -> std::result::Result<Answer, sqlx::Error> {
        let mut taken = entry.shared.holds.take().await?;
        let sql = if wait {
            &self.acquire_waiting
        } else {
            &self.acquire
        };
        let row = sqlx::query_as(sql)
            .bind(entry.name_id)
            .bind(entry.session)
            .bind(entry.entry)
            .bind(wait)
            .fetch_one(taken.conn())
            .await;
        answer(taken.settle(row)?)
    }

    /// Takes the lock, waiting for it if `wait`; `None` for a failed try. A cached name
    /// id whose row has gone (pruned) is looked up afresh, once.
    async fn take(&self, wait: bool) -> Result<Option<LockGuard>> {
        let lease = &self.lease;
        let granted = attempts(lease, &self.name, LockKind::Lock, |mut asked| async move {
            let attempted = self.attempt(wait, &mut asked).await;
            (attempted, asked)
        })
        .await?;
        Ok(granted.map(|(entry, token)| {
            let key = hold_key(lease, "lock", &self.name);
            lock_guard(lease, &self.session, key, entry, token)
        }))
    }

    /// `asked` is the crash sentinel's mark
    /// ([`crate::unflushed_grants::Sentinel::asking`]) taken before the ask that grants.
    async fn attempt(
        &self,
        wait: bool,
        asked: &mut u64,
    ) -> std::result::Result<Option<(Entry, i64)>, AttemptError> {
        let lease = &self.lease;
        if lease.is_lost() {
            return Err(Error::SessionLost.into());
        }
        let shared = &lease.shared;
        let entry = Entry {
            shared: Arc::clone(shared),
            name_id: shared.name_id(LockKind::Lock, self.name.as_str()).await?,
            session: lease.id,
            entry: ENTRIES.fetch_sub(1, Ordering::Relaxed),
            candidacy: false,
        };
        let mut cleanup = Cleanup {
            entry: Some(entry.clone()),
            lease: Arc::clone(lease),
        };
        // The try: nothing subscribed, nothing registered. A waiting call outlasts a
        // wait for a hold connection (its statement was never sent).
        let first = loop {
            match self.ask(&entry, false).await {
                Err(sqlx::Error::PoolTimedOut) if wait && !lease.is_lost() => {
                    tracing::debug!(
                        name = %self.name,
                        "no hold connection free within the request timeout; still waiting"
                    );
                }
                first => break first,
            }
        };
        match first {
            Ok(Answer::Granted(token)) => {
                cleanup.entry = None;
                return Ok(Some((entry, token)));
            }
            Ok(Answer::Refused) if !wait => {
                cleanup.entry = None;
                return Ok(None);
            }
            Ok(Answer::Held(left)) => {
                cleanup.entry = None;
                return Err(AttemptError::Held(left));
            }
            Ok(_) => {}
            Err(error) if is_missing_name(&error) => {
                // The statement failed as a whole: nothing was taken.
                cleanup.entry = None;
                return Err(AttemptError::MissingName);
            }
            Err(error) => return Err(lease.statement_error(error).into()),
        }
        // Subscribed before registering: a wake-up committed after the registration is
        // never missed.
        let (mut own, mut everyone) = subscribe(&entry).await?;
        // The end of the solo holder's session, when one holds: a solo holder is in no
        // line, so no trigger wakes the head when its session ends (`s:<id>`).
        let mut holder_end: Option<(i64, Subscription)> = None;
        let lost = lease.lost_token();
        let mut backoff = WaitRetry::new("the unfair lock");
        loop {
            *asked = shared.sentinel.asking();
            let pause = match self.ask(&entry, true).await {
                Ok(Answer::Granted(token)) => {
                    cleanup.entry = None;
                    return Ok(Some((entry, token)));
                }
                Ok(Answer::Waiting(until, holder)) => {
                    backoff.succeeded();
                    holder_end = match (holder, holder_end.take()) {
                        (Some(holder), Some((was, end))) if was == holder => Some((was, end)),
                        (Some(holder), _) => {
                            Some((holder, shared.hub.subscribe(format!("s:{holder}")).await?))
                        }
                        (None, _) => None,
                    };
                    until.map_or(lease.ttl, |until| until + AFTER_LEASE_END)
                }
                // Nothing registered by this ask: asked again once the lock-delay ends,
                // which is this client's too.
                Ok(Answer::Held(left)) => {
                    backoff.succeeded();
                    shared.amnesia.hold_for(left);
                    left + AFTER_LEASE_END
                }
                Ok(Answer::Refused) => {
                    return Err(Error::backend(BACKEND, "a waiting take was not registered").into())
                }
                Err(error) if is_missing_name(&error) => return Err(AttemptError::MissingName),
                // Asking again is idempotent: connection trouble is ridden out.
                Err(error) => {
                    ride_out(lease, error, &lost, &mut backoff).await?;
                    continue;
                }
            };
            tokio::select! {
                biased;
                () = lost.cancelled() => return Err(Error::SessionLost.into()),
                woke = own.changed() => self.woken(woke?),
                woke = everyone.changed() => self.woken(woke?),
                ended = async {
                    match holder_end.as_mut() {
                        Some((_, end)) => end.changed().await,
                        None => std::future::pending().await,
                    }
                } => self.woken(ended?),
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Counts a wake-up sent by the store (not a re-check after the listener
    /// reconnected).
    fn woken(&self, wake: Wake) {
        if wake == Wake::Notified {
            self.wakeups.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The contenders of the lock `name`, fair or unfair: the live entries of its line
/// (holder and fair waiters) and its live unfair waiters, in one read that registers
/// nothing (a name never locked counts 0).
pub(crate) async fn contenders(shared: &Shared, name: &Name) -> Result<usize> {
    let n: i64 =
        sqlx::query_scalar(&shared.sql("SELECT coalesce({s}.unfair_contenders($1, $2), 0)"))
            .bind(LockKind::Lock.as_str())
            .bind(name.as_str())
            .fetch_one(shared.bounded())
            .await
            .map_err(map)?;
    Ok(usize::try_from(n).unwrap_or(0))
}

#[async_trait]
impl Locker for PgUnfairLocker {
    fn name(&self) -> &Name {
        &self.name
    }

    /// Takes the lock if its line is empty (one statement); otherwise registers as a
    /// waiter and asks again when woken as the head, or at the lease end of the entry
    /// it waits behind. Holds no connection while waiting.
    ///
    /// Cancel-safety: cancel-safe; a dropped wait withdraws in the background
    /// (releasing the lock if it was granted in the meantime).
    async fn lock(&self) -> Result<LockGuard> {
        waited(BACKEND, "unfair lock", self.take(true).await?)
    }

    /// One statement: the lock if its line is empty, `None` otherwise (nothing
    /// registered).
    ///
    /// Cancel-safety: cancel-safe; a dropped try is withdrawn in the background.
    async fn try_lock(&self) -> Result<Option<LockGuard>> {
        self.take(false).await
    }

    /// See [`contenders`]. Cancel-safety: cancel-safe (a read).
    async fn contenders(&self) -> Result<usize> {
        contenders(&self.lease.shared, &self.name).await
    }

    fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }
}
impl Make<Arc<Shared>, OnSession<Arc<LeaseInner>>> for PgUnfairLocker {
    fn make(_: &Arc<Shared>, on: OnSession<Arc<LeaseInner>>) -> Result<Self> {
        let shared = &on.lease.shared;
        Ok(Self {
            acquire: solo_take_sql(
                shared,
                "{s}.unfair_acquire($1, $2, $3, $4)",
                "f.o_state, f.o_token, f.o_wait, f.o_holder",
            ),
            acquire_waiting: shared.sql(
                "SELECT o_state, o_token, o_wait, o_holder FROM {s}.unfair_acquire($1, $2, $3, $4)",
            ),
            lease: on.lease,
            session: on.session,
            name: on.name,
            wakeups: AtomicU64::new(0),
        })
    }
}
