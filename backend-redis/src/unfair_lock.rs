//! The unfair lock ([`distsync_core::raw::Primitives::unfair_locker`]): one script call to take
//! a free lock and one to let it go, no line to join, no subscription, nothing read
//! beforehand; a release wakes one waiter, and arrival order does not count.
//!
//! **Layout.** Under the fair lock's prefix `p = {<ns><name>}:lock` (one hash tag, so
//! one Redis Cluster slot for both):
//!
//! | key | what |
//! |---|---|
//! | `p:u` | the holder, `u<id>:<token>`: held through the session as a fair entry key is |
//! | `p:uq` | the wait line: a sorted set of the waiting acquisitions' ids by arrival (the server's clock, µs) |
//! | `p:um:<id>` | a waiter's marker: it is waiting while the key lives (PX: a TTL after its next re-check is due); its value is the waiting handle's wake id `<w>` |
//! | `p:uw:<w>` | the channel that wakes the waiter of the locker handle whose wake id is `<w>` (the id of its first waiting acquisition) |
//! | `p:fence`, `p:epoch` | the fair lock's fencing counter and epoch marker, shared |
//!
//! `<id>` is the acquisition's (`<session>.<n>`, drawn as a fair entry's id is), and
//! an acquisition names itself `u<id>` until it learns its token.
//!
//! **Protocol.** Taking (`lua/unfair_acquire.lua`, one `EVALSHA`): when nobody holds
//! `p:u`, the fair line `p:q` is empty and the epoch marker allows grants, the script
//! increments `p:fence` and sets `p:u` through the session, as the fair lock's
//! uncontended grant sets its entry, and answers the token: one round trip. Otherwise
//! the same call puts the acquisition in the wait line and answers how long it may wait
//! without a wake-up. A handle's first waiter then subscribes to the handle's channel,
//! asks again once the subscription is confirmed (a release in between woke nobody), and
//! from then on asks again when woken, or when that time is up. The handle keeps that
//! subscription until it is dropped: its later waiters were subscribed before they
//! joined the line, so none of them subscribes, unsubscribes or asks again before the
//! first wake-up (a lock that barging keeps busy makes many short waits of one handle).
//! A wake-up left over from an earlier wait is drained before the take; one that comes
//! later costs one needless re-check. Letting go (`lua/unfair_release.lua`, one
//! `EVALSHA`) deletes `p:u` and learns, in the same `EXISTS`, whether anyone waits; only
//! then does it hand the lock on. `try_lock` is the first call alone, and never joins
//! the wait line.
//!
//! **No herd.** A release publishes one wake-up, on the channel of the head of the wait
//! line (its first waiter whose marker lives; dead ones are dropped on the way): the
//! other waiters hear nothing. The head asks again; if a newcomer took the lock first
//! (barging, which an unfair lock allows), it stays head and waits for the next release.
//! A head that leaves a free lock (a cancelled wait) hands the wake-up on. So each
//! release costs at most one wake-up ([`Locker::wakeups`] counts them per handle).
//!
//! **Safety net.** A waiter whose wake-up never comes (the holder crashed, the pub/sub
//! connection dropped a message, the head died before asking) asks again when the
//! holder's TTL has run out, the earliest moment the lock can be free without a release:
//! once per TTL or so while a holder renews, not a polling interval.
//!
//! **Token.** The next value of `p:fence`, the fair lock's counter of the same name, in
//! the granting script: tokens only grow across every holder of the name, fair and
//! unfair, and across a restart that loses the counter (it is seeded from the server's
//! clock, see the crate docs; seeded here, it gets an hour's TTL, which `INCR` keeps).
//! The holder's value carries the token, so a guarded write (`hold_current` in
//! `lua/lib.lua`) and `status` read it from the one key.
//!
//! **Session.** The hold is bound to the session as a fair entry is: the script checks
//! the session (its nonce, and the margin of its TTL) and lists `p:u` in its registry, so
//! the keepalive renews it and finds it gone, and a revoke (or a renewal that finds the
//! session gone) releases it at once (`release_hold` in `lua/lib.lua`). Under Redis
//! Cluster the client lists it, as it does a fair entry. Two acquisitions of one name
//! through one session take turns in-process (the session's gate), since they share the
//! holder key.
//!
//! **Mixed with the fair lock.** Both exclude each other: the fair lock grants nothing
//! while `p:u` lives (`fq_settle`, and the uncontended grant of `lua/fair_acquire.lua`
//! checks `p:u` with `p:q` in one `EXISTS`), and the unfair lock is free only while the
//! fair line is empty. An unfair contender therefore waits behind the fair line, and an
//! unfair release hands the lock to the fair line's head first. While unfair waiters
//! wait behind it, the fair line ends with a member that has no entry key (`u`, scored
//! `+inf`: to the line, a dead entry), so that its last release walks the line rather
//! than take the uncontended path, and, finding it empty, wakes the head of the unfair
//! wait line. A lock used fairly alone never has that member and pays nothing for it.
//! `contenders()` counts both sides, from either locker (`lua/fair_count.lua`).
//!
//! **The lock-delay after the store forgets** (`crate::amnesia`) applies as to the fair
//! lock: the grant reads the epoch marker in the same `GETEX` the fair grant uses.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use distsync_core::raw::locked;
use distsync_core::raw::{CleanUp, GuardStoreSide as _, Make, OnSession, SessionStoreSide as _};
use distsync_core::{Error, FencingToken, LockGuard, Locker, Name, ReleaseFn, Result, Session};
use futures::FutureExt as _;
use tokio::sync::OwnedMutexGuard;

use crate::call::Call;
use crate::error::{int, int_at, unexpected};
use crate::hold::{end_session, end_session_if_refused, Hold};
use crate::keys::Kind;
use crate::notify::{Event, Subscription};
use crate::scripts::Lua;
use crate::session::{RedisLease, Registry};
use crate::store::Shared;
use crate::waiter_line::Granted;
use crate::waiting::{Waiting, RECHECK_MARGIN};

/// The scripts, compiled (hashed) once per process.
static ACQUIRE: LazyLock<Lua> =
    LazyLock::new(|| Lua::with_lib(include_str!("../lua/unfair_acquire.lua")));
static RELEASE: LazyLock<Lua> =
    LazyLock::new(|| Lua::with_lib(include_str!("../lua/unfair_release.lua")));

/// A Redis unfair lock: see the module docs.
pub(crate) struct RedisUnfairLock {
    inner: Arc<Inner>,
}

/// What the locker and its guards' releases share.
struct Inner {
    shared: Arc<Shared>,
    session: Session,
    name: Name,
    /// `p`, the fair lock's prefix.
    prefix: String,
    /// `p:u`, the holder key (and the name of the session's in-process gate).
    holder: String,
    /// The promotion record the acquisition script reads in the lock's slot
    /// ([`crate::promotion_record`]).
    promotion_record: String,
    /// Wake-ups received by this handle's waits.
    wakeups: AtomicU64,
    /// The handle's wake id: the id of its first acquisition that waited, unique in
    /// the store; its waiters' markers name it, and a release wakes them on
    /// `p:uw:<wake id>`.
    wake_id: OnceLock<String>,
    /// The subscription to that channel, between waits (a wait takes it out).
    wake: Mutex<Option<Subscription>>,
}

enum Reply {
    Granted(FencingToken),
    /// Not free: ask again after this at the latest (a try waits for nothing).
    Waiting(Duration),
    /// The session is gone.
    Lost,
}

/// One call of `lock` or `try_lock`: its id, unique in the store, and the name it gives
/// itself in the holder key (`u<id>`; the hold is `u<id>:<token>`).
struct Acquisition {
    id: String,
    value: String,
}

impl Acquisition {
    fn new(lease: &RedisLease) -> Self {
        let id = lease.next_entry_id();
        let value = format!("u{id}");
        Self { id, value }
    }
}

impl Inner {
    /// The handle's wake id, `acquisition`'s own id if the handle has none yet.
    fn wake_id(&self, acquisition: &Acquisition) -> &str {
        self.wake_id.get_or_init(|| acquisition.id.clone())
    }

    /// The handle's subscription to its wake-up channel, if it has one: taken out for a
    /// wait, and drained of the wake-ups earlier waits left.
    fn take_wake(&self) -> Option<Subscription> {
        let mut wake = locked(&self.wake).take();
        if let Some(wake) = &mut wake {
            wake.drain();
        }
        wake
    }

    /// Keeps `wake` for the handle's next wait.
    fn keep_wake(&self, wake: Subscription) {
        *locked(&self.wake) = Some(wake);
    }

    /// One call of the acquisition script, asked `how`: `take` (the first call of
    /// `lock`: take, or join the wait line), `try` (`try_lock`: take, or nothing) or
    /// `check` (a waiter asking again).
    async fn call(
        &self,
        lease: &RedisLease,
        acquisition: &Acquisition,
        how: &str,
    ) -> Result<Reply> {
        let mut call = self.shared.script(&ACQUIRE);
        call.key(&self.holder).key(&self.promotion_record);
        lease.session_keys(&mut call);
        call.arg(&acquisition.id)
            .arg(lease.ttl_ms())
            .arg(how)
            .arg(lease.margin_ms())
            .arg(lease.session_check(&self.session))
            .arg(crate::amnesia::max_ttl_ms(&self.shared))
            .arg(crate::amnesia::watch_arg(&self.shared))
            .arg(crate::amnesia::replid_arg(&self.shared))
            .arg(self.wake_id(acquisition));
        let registry = lease.registry();
        // Under Cluster, a take is pending for the session's renewals until listed
        // (see `HeldKeys`), and the store's registry names the acquisition from its
        // first call on, so that a revoke from any client lets it go.
        let (reply, _pending) = if how == "check" {
            let pending = registry.taking(&self.holder);
            (self.shared.eval(&call).await?, pending)
        } else {
            registry
                .take(
                    &self.shared,
                    &call,
                    &self.holder,
                    &acquisition.value,
                    lease.ttl_ms(),
                )
                .await?
        };
        let number = |i: usize| int_at("unfair_acquire", &reply, i);
        match number(0)? {
            1 => {
                let token =
                    u64::try_from(number(1)?).map_err(|_| unexpected("unfair_acquire", &reply))?;
                if self.shared.is_cluster() {
                    registry.listed(&self.holder, &format!("{}:{token}", acquisition.value));
                }
                Ok(Reply::Granted(FencingToken(token)))
            }
            0 => Ok(Reply::Waiting(Duration::from_millis(
                u64::try_from(number(1)?).unwrap_or(0),
            ))),
            -1 => Ok(Reply::Lost),
            _ => Err(unexpected("unfair_acquire", &reply)),
        }
    }

    /// The guard over `acquisition`'s hold, granted with `token`: its release, the
    /// in-process gate, and (except under Redis Cluster, see
    /// [`crate::guarded::lock_guard`]) the guarded write the fair lock's guard has.
    fn guard(
        self: &Arc<Self>,
        lease: &RedisLease,
        acquisition: Acquisition,
        token: FencingToken,
        gate: Option<OwnedMutexGuard<()>>,
    ) -> LockGuard {
        let release: ReleaseFn = {
            let inner = Arc::clone(self);
            let value = acquisition.value.clone();
            Box::new(move || Box::pin(async move { inner.release(value).await }))
        };
        let mut guard =
            distsync_core::raw::lock_guard(self.holder.clone(), token, &self.session, release);
        if let Some(gate) = gate {
            guard = guard.with_gate(gate);
        }
        if self.shared.is_cluster() {
            return guard;
        }
        let granted = Granted {
            hold: Arc::new(Hold::new(lease, self.holder.clone(), acquisition.value)),
            token,
        };
        distsync_core::raw::with_guarded_write(guard, crate::guarded::hook(&self.shared, &granted))
    }

    /// The release script's call for the acquisition that names itself `value`.
    fn let_go_call(&self, registry: &Registry, value: &str) -> Call<'static> {
        let mut call = self.shared.script(&RELEASE);
        call.key(&self.holder);
        registry.key_into(&mut call);
        call.arg(value);
        call
    }

    /// A guard's release: [`Error::SessionLost`] when the hold was already gone; on a
    /// transient failure, the release goes on in the background and the error is
    /// returned.
    async fn release(self: Arc<Self>, value: String) -> Result<()> {
        let registry = RedisLease::of(&self.session, &self.shared)?.registry();
        // The guard keeps the session's gate until this returns: no other acquisition
        // of the session holds the key, so its listings are this one's.
        let call = self.let_go_call(registry, &value);
        let (released, unregistered) = registry
            .release_apart(&self.shared, &call, &self.holder)
            .await;
        let released = match released.and_then(|reply| int("unfair_release", &reply)) {
            Ok(released) => released,
            Err(error) => {
                if error.is_transient() {
                    Arc::clone(&self).let_go_in_background(value, None);
                }
                return Err(error);
            }
        };
        unregistered?;
        match released {
            1 => Ok(()),
            0 => Err(Error::SessionLost),
            other => Err(Error::backend(
                crate::capabilities::BACKEND,
                format!("unfair_release answered {other}"),
            )),
        }
    }

    /// Lets go of the acquisition that names itself `value` in the background, retrying
    /// transient failures until it succeeds or the session ends, keeping `gate` (the
    /// session's in-process gate, if the caller has it) until then; should it fail for
    /// good, the session is ended, so that the store frees what it holds rather than
    /// its renewals keeping it. With the gate (a cancelled acquisition), no other
    /// acquisition of the session holds the key, so its listings are this one's: each
    /// attempt unlists it as a guard's release does ([`Registry::release_apart`]).
    /// Without it (a guard's release, which unlisted it already), the session may take
    /// the lock again meanwhile: the release script unlists only this acquisition's
    /// hold, so a retry leaves the new one alone, and its listings are not touched.
    fn let_go_in_background(self: Arc<Self>, value: String, gate: Option<OwnedMutexGuard<()>>) {
        let lost = self.session.lost_token().clone();
        CleanUp::new(
            "letting go of an unfair lock acquisition",
            "its session's end frees it",
        )
        .of(&self.holder)
        .until_lost(lost)
        .spawn(move |clean_up| async move {
            let let_go = || async {
                let registry = RedisLease::of(&self.session, &self.shared)?.registry();
                let call = self.let_go_call(registry, &value);
                if gate.is_none() {
                    return int("unfair_release", &self.shared.eval(&call).await?).map(drop);
                }
                let (released, unregistered) = registry
                    .release_apart(&self.shared, &call, &self.holder)
                    .await;
                int("unfair_release", &released?)?;
                unregistered
            };
            let released = clean_up.retry(let_go).await;
            let released = end_session_if_refused(released, || self.end_session()).await;
            drop(gate);
            released
        });
    }

    /// Ends the session after a release failed for good ([`crate::hold::end_session`]).
    async fn end_session(&self) {
        let lost = self.session.lost_token();
        match RedisLease::of(&self.session, &self.shared) {
            Ok(lease) => {
                end_session(
                    &self.shared,
                    lost,
                    lease.id(),
                    lease.nonce(),
                    lease.registry(),
                )
                .await;
            }
            Err(_) => lost.cancel(),
        }
    }
}

/// Lets go of an acquisition when dropped while armed (a cancelled `lock`, or a call
/// whose answer was lost), in the background, keeping the session's gate until done: a
/// dropped wait leaves neither a hold, a place in the wait line nor a listing behind.
struct LetGoOnDrop {
    armed: Option<(Arc<Inner>, String)>,
    gate: Option<OwnedMutexGuard<()>>,
}

impl LetGoOnDrop {
    fn arm(inner: &Arc<Inner>, acquisition: &Acquisition, gate: OwnedMutexGuard<()>) -> Self {
        Self {
            armed: Some((Arc::clone(inner), acquisition.value.clone())),
            gate: Some(gate),
        }
    }

    /// Nothing to let go (the acquisition holds, under a guard, or ended in the
    /// store): the gate, for the guard.
    fn disarm(&mut self) -> Option<OwnedMutexGuard<()>> {
        self.armed = None;
        self.gate.take()
    }
}

impl Drop for LetGoOnDrop {
    fn drop(&mut self) {
        if let Some((inner, value)) = self.armed.take() {
            tracing::debug!(
                key = inner.holder.as_str(),
                "unfair acquisition cancelled; letting go"
            );
            inner.let_go_in_background(value, self.gate.take());
        }
    }
}

#[async_trait]
impl Locker for RedisUnfairLock {
    fn name(&self) -> &Name {
        &self.inner.name
    }

    /// Waits until the lock is held: one script call when it is free.
    ///
    /// Cancel-safety: cancel-safe; a dropped call leaves the wait line (or lets go of
    /// what it was granted meanwhile) in the background, or leaves its place to expire.
    async fn lock(&self) -> Result<LockGuard> {
        let inner = &self.inner;
        let lease = RedisLease::live(&inner.session)?;
        // The gate is free unless another acquisition through this session is under
        // way: taken at once then, without a watch on the session.
        let gate = match inner.session.exclusive(&inner.holder).now_or_never() {
            Some(gate) => gate,
            None => tokio::select! {
                biased;
                () = inner.session.lost() => return Err(Error::SessionLost),
                gate = inner.session.exclusive(&inner.holder) => gate,
            },
        };
        let acquisition = Acquisition::new(lease);
        let mut armed = LetGoOnDrop::arm(inner, &acquisition, gate);
        // Taken out (and drained) before the take: every wake-up published after the
        // take joins the line reaches it.
        let kept = inner.take_wake();
        // The first call reports connection trouble: nothing waits to ride it out for.
        let first_delay = match inner.call(lease, &acquisition, "take").await? {
            Reply::Granted(token) => {
                if let Some(wake) = kept {
                    inner.keep_wake(wake);
                }
                let gate = armed.disarm();
                return Ok(inner.guard(lease, acquisition, token, gate));
            }
            Reply::Lost => {
                armed.disarm();
                return Err(Error::SessionLost);
            }
            Reply::Waiting(delay) => delay + RECHECK_MARGIN,
        };
        let what = "the unfair lock";
        // A subscription made now missed what was published since the take: the wait
        // asks again first. One kept from an earlier wait has missed nothing.
        let (mut waiting, mut ask_first) = match kept {
            Some(wake) => (Waiting::kept(wake, what), false),
            None => {
                let channel = format!("{}:uw:{}", inner.prefix, inner.wake_id(&acquisition));
                (
                    Waiting::subscribe(&inner.shared, &channel, what).await?,
                    true,
                )
            }
        };
        let mut delay = first_delay;
        loop {
            if ask_first {
                delay = match inner.call(lease, &acquisition, "check").await {
                    Ok(Reply::Granted(token)) => {
                        inner.keep_wake(waiting.into_subscription());
                        let gate = armed.disarm();
                        return Ok(inner.guard(lease, acquisition, token, gate));
                    }
                    Ok(Reply::Lost) => {
                        armed.disarm();
                        return Err(Error::SessionLost);
                    }
                    Ok(Reply::Waiting(delay)) => {
                        waiting.answered();
                        delay + RECHECK_MARGIN
                    }
                    // Once waiting, connection trouble is ridden out (asking is
                    // idempotent).
                    Err(error) => waiting.failed(error)?,
                };
            }
            ask_first = true;
            tokio::select! {
                biased;
                () = inner.session.lost() => return Err(Error::SessionLost),
                event = waiting.recv() => {
                    // A resync (the pub/sub connection came back) asks again too, but
                    // is not the store waking this waiter.
                    if let Event::Message(_) = event? {
                        inner.wakeups.fetch_add(1, Ordering::Relaxed);
                    }
                    waiting.drain();
                }
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Takes the lock if it is free now: one script call, which never joins the wait
    /// line. `Ok(None)` too while another acquisition of this name through the same
    /// session is under way (they share the session's gate). Under Redis Cluster a
    /// refused try then unlists the holder key from the store's session registry, where
    /// its take listed it: one more call.
    ///
    /// Cancel-safety: cancel-safe; a dropped call lets go of what it may have taken,
    /// and of its listing.
    async fn try_lock(&self) -> Result<Option<LockGuard>> {
        let inner = &self.inner;
        let lease = RedisLease::live(&inner.session)?;
        let Some(gate) = inner.session.exclusive(&inner.holder).now_or_never() else {
            return Ok(None);
        };
        let acquisition = Acquisition::new(lease);
        let mut armed = LetGoOnDrop::arm(inner, &acquisition, gate);
        let reply = inner.call(lease, &acquisition, "try").await?;
        if let Reply::Waiting(_) = reply {
            // Refused: under Cluster the take listed the holder key in the store's
            // session registry. With the gate, no other acquisition of the session
            // holds the key, so the listing is this one's; it goes before the gate
            // does, which a background unlisting would keep from the session's next
            // try. Should it fail, the armed let-go retries it in the background,
            // keeping the gate, and the try still answers that the lock is taken.
            let unlisted = lease.registry().refused(&inner.shared, &inner.holder).await;
            if unlisted.is_err() {
                return Ok(None);
            }
        }
        let gate = armed.disarm();
        match reply {
            Reply::Granted(token) => Ok(Some(inner.guard(lease, acquisition, token, gate))),
            Reply::Waiting(_) => Ok(None),
            Reply::Lost => Err(Error::SessionLost),
        }
    }

    /// Counts the holder (unfair or fair), the unfair waiters whose marker lives and the
    /// fair line's live entries: one read-only script call, the fair locker's too.
    ///
    /// Cancel-safety: cancel-safe (a read).
    async fn contenders(&self) -> Result<usize> {
        crate::waiter_line::contenders(&self.inner.shared, &self.inner.prefix).await
    }

    fn wakeups(&self) -> u64 {
        self.inner.wakeups.load(Ordering::Relaxed)
    }
}

impl Make<Arc<Shared>, OnSession<()>> for RedisUnfairLock {
    fn make(shared: &Arc<Shared>, on: OnSession<()>) -> Result<Self> {
        let prefix = shared.keys.primitive(&on.name, Kind::Lock);
        Ok(Self {
            inner: Arc::new(Inner {
                holder: format!("{prefix}:u"),
                promotion_record: crate::promotion_record::key(shared, &prefix),
                prefix,
                shared: Arc::clone(shared),
                session: on.session,
                name: on.name,
                wakeups: AtomicU64::new(0),
                wake_id: OnceLock::new(),
                wake: Mutex::new(None),
            }),
        })
    }
}
