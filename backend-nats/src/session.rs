//! Sessions: a session key and per-key TTLs, renewed by compare-and-set.
//!
//! JetStream has no lease object that many keys hang on. A session is therefore
//! what it holds: its own key `session.<id>` and every contender key it made (a lock
//! acquisition's key), each written with `Nats-TTL` = the session's TTL, so that the
//! server ends every one of them a TTL after its last write when the holder stops
//! renewing (a crash, a pause, a partition) and writes the delete marker that wakes
//! the next waiter.
//!
//! # Renewal
//!
//! A renewal ([`Lease::keep_alive`]) rewrites every key of the session with a fresh
//! TTL, each as a compare-and-set on the sequence the session last wrote it at
//! (`Nats-Expected-Last-Subject-Sequence`): it lands only while the key is still the
//! session's. A refused compare means the server ended the key (its TTL ran out, or
//! the session was revoked: someone purged it) and the renewal answers
//! [`KeepAlive::Gone`], which fires `lost()`. JetStream applies a compare and its
//! write in one step, so a key is either renewed before its marker or refused, never
//! renewed after being ended (measured: 0 of 20 renewals racing expiry lost after an
//! acknowledgement). A key's TTL counts from the server's receipt of its write, which
//! is after the renewal was sent, so the server never ends a key before the session's
//! client-side deadline (send time + TTL − margin, see [`distsync_core::session`]);
//! TTLs are rounded up to whole seconds, as `Nats-TTL` takes them.
//!
//! The keys are renewed one after another under the session's key table lock, which
//! a guarded write and a release take too: each sees the key's current sequence.
//! Renewals go through a client connection of their own (`Shared::renewals`), so
//! that no burst of the process's other requests delays them.
//!
//! # Ending a session
//!
//! [`Lease::revoke`] (a close) purges every key of the session; a session of another
//! process is revoked by purging the keys that carry its id ([`revoke_elsewhere`]):
//! its owner's next renewal is refused and its `lost()` fires.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use distsync_core::raw::{RetryPolicy, SessionStoreSide as _};
use distsync_core::{Error, KeepAlive, Lease, Result, Session, SessionId, SessionOptions};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::keys::{self, Kind};
use crate::released::{ReleasedKeys, Tombstone};
use crate::shared::Shared;
use crate::store::{Published, Write};
use crate::BACKEND;

/// The header carrying a contender key's create sequence (its token) across renewals,
/// which give the key a new sequence each.
pub(crate) const CREATE_HEADER: &str = "Ds-Create";

/// How long a released key's purge tombstone stays.
pub(crate) const TOMBSTONE_TTL: Duration = Duration::from_secs(5);

/// A purge of `key` compared with its sequence `seq`, its tombstone kept
/// [`TOMBSTONE_TTL`].
pub(crate) fn tombstone(key: impl Into<String>, seq: u64) -> Write {
    Write::purge(key).if_at(seq).ttl(TOMBSTONE_TTL)
}

/// The lease of `session`, checked to be one of `shared`'s sessions.
///
/// # Errors
/// [`Error::InvalidArgument`] for a session of another backend or another store.
pub(crate) fn lease_of<'s>(
    session: &'s Session,
    shared: &Arc<Shared>,
) -> Result<&'s Arc<LeaseInner>> {
    let lease = session.lease_granted_here::<NatsLease>(BACKEND, |lease| {
        Arc::ptr_eq(&lease.inner.shared, shared)
    })?;
    Ok(&lease.inner)
}

/// The NATS side of a [`Session`].
pub(crate) struct NatsLease {
    pub(crate) inner: Arc<LeaseInner>,
}

/// A key the session holds: its value (rewritten by each renewal), its current
/// sequence, its create sequence, and the line whose key it is when its release
/// leaves it for the session's next entry there (see `src/released.rs`).
#[derive(Clone, Debug)]
struct Held {
    value: Bytes,
    seq: u64,
    create: u64,
    line: Option<String>,
}

/// What the lease and everything held through it share.
pub(crate) struct LeaseInner {
    pub(crate) shared: Arc<Shared>,
    pub(crate) id: u64,
    pub(crate) ttl: Duration,
    /// The keys the session holds, its own key included, by key.
    keys: tokio::sync::Mutex<BTreeMap<String, Held>>,
    /// The number of the session's next contender key.
    next: AtomicU64,
    /// The contender keys released lately, which the session's next entry into their
    /// line writes again.
    released: ReleasedKeys,
    /// Set by a close: renewals answer `Gone` from then on.
    closed: AtomicBool,
    /// The session's lost token, set once the session has started.
    lost: OnceLock<CancellationToken>,
    /// The store's epoch the session was opened in (see `src/amnesia.rs`): a session
    /// of an earlier epoch is gone with the store that forgot it.
    epoch: u64,
}

impl LeaseInner {
    /// A fresh number for a contender key of this session.
    pub(crate) fn next_number(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether the session is over (closed or lost).
    pub(crate) fn is_over(&self) -> bool {
        self.closed.load(Ordering::Acquire)
            || self.lost.get().is_some_and(CancellationToken::is_cancelled)
    }

    /// The session's lost token, once the session has started (a wait held through
    /// the session ends when it fires).
    pub(crate) fn lost_token(&self) -> Option<&CancellationToken> {
        self.lost.get()
    }

    /// Resolves once the session is lost (never before it has started).
    pub(crate) async fn lost(&self) {
        match self.lost.get() {
            Some(lost) => lost.cancelled().await,
            None => std::future::pending().await,
        }
    }

    /// Declares the session lost.
    fn fail(&self) {
        if let Some(lost) = self.lost.get() {
            if !lost.is_cancelled() {
                tracing::warn!(session = %SessionId(self.id), "nats session lost");
            }
            lost.cancel();
        }
    }

    /// Enters the line `line` with a fresh contender key holding `value`, created with
    /// the session's TTL and recorded for renewal; `keep` leaves the key for the
    /// session's next entry there when released (see `src/released.rs`). Gives up with
    /// the store's error once a new attempt would start after `deadline` (a one-shot
    /// call's budget), if given.
    ///
    /// A fresh key is this session's alone, so a refused create is one of its own
    /// attempts that landed while its answer was lost, and whose TTL has ended it since
    /// (the store was out of reach for longer than a TTL): that key names nothing, and
    /// another fresh one is made.
    ///
    /// # Errors
    /// [`Error::SessionLost`] once the session is over; the store's error.
    pub(crate) async fn enter_fresh(
        &self,
        line: &str,
        value: Bytes,
        deadline: Option<Instant>,
        keep: bool,
    ) -> Result<Entered> {
        loop {
            let key = keys::contender(line, self.id, self.next_number());
            let created = self
                .create_at(
                    &key,
                    value.clone(),
                    Compare::Key(0),
                    deadline,
                    keep.then_some(line),
                )
                .await?;
            if let Some(token) = created {
                // A create compared with the key alone says nothing of the line's other keys.
                return Ok(Entered {
                    key,
                    token,
                    alone: false,
                });
            }
            tracing::debug!(
                session = %SessionId(self.id),
                key,
                "a fresh key ended before its create's answer came; entering with another"
            );
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Err(Error::connection(BACKEND, FRESH_KEY_ENDED));
            }
        }
    }

    /// Enters the line `line` (`<kind>.<name>.q`) with a contender key holding
    /// `value`, created with the session's TTL and recorded for renewal. The key is
    /// the one this session released in that line lately, written over its tombstone,
    /// or else a fresh one (see `src/released.rs`); its release leaves it for the next
    /// entry. A key whose release left the line empty is written only while nothing
    /// else was written to the line since, in one compared write; refused, it is
    /// written as any other. Transient failures are ridden out until `deadline` if
    /// given (a one-shot call), else until the session ends (a wait).
    ///
    /// # Errors
    /// [`Error::SessionLost`] once the session is over; the store's error.
    pub(crate) async fn enter_line(
        &self,
        line: &str,
        value: Bytes,
        deadline: Option<Instant>,
    ) -> Result<Entered> {
        if let Some(Tombstone { key, seq, quiet }) = self.released.take(line) {
            // Compared with the whole line first when the release left it empty, then
            // with the key's own tombstone.
            let empty = quiet.then(|| (Compare::line(&self.shared.store, line, seq), true));
            for (compare, alone) in empty.into_iter().chain([(Compare::Key(seq), false)]) {
                let created = self
                    .create_at(&key, value.clone(), compare, deadline, Some(line))
                    .await?;
                if let Some(token) = created {
                    return Ok(Entered { key, token, alone });
                }
            }
            // The tombstone is no longer the key's last message (its TTL ended it):
            // a fresh key instead.
        }
        self.enter_fresh(line, value, deadline, true).await
    }

    /// Creates `key` holding `value` with the session's TTL if `compare` holds (see
    /// [`Compare`]), and records it for renewal; a key of the line `line`, if given, is
    /// left for the session's next entry there when released. Returns its create
    /// sequence, or `None` when someone else wrote the key first. A create whose answer
    /// was lost is looked for and taken if it landed (the key then holds `value`,
    /// which names the call). Transient failures are ridden out until `deadline` if
    /// given (a one-shot call), else until the session ends (a wait). A contender key
    /// waits out a lock-delay first (see `src/amnesia.rs`).
    ///
    /// # Errors
    /// [`Error::SessionLost`] once the session is over; the store's error.
    pub(crate) async fn create_at(
        &self,
        key: &str,
        value: Bytes,
        compare: Compare,
        deadline: Option<Instant>,
        line: Option<&str>,
    ) -> Result<Option<u64>> {
        self.shared.amnesia.before_grant(&self.shared.store).await;
        self.write_key(key, value, compare, deadline, line).await
    }

    /// Writes `key` as [`create_at`](Self::create_at) does, with no
    /// lock-delay: the session's own key, which grants nothing.
    async fn write_key(
        &self,
        key: &str,
        value: Bytes,
        compare: Compare,
        deadline: Option<Instant>,
        line: Option<&str>,
    ) -> Result<Option<u64>> {
        let store = &self.shared.store;
        // Whether an attempt failed after it may have reached the store.
        let sent = AtomicBool::new(false);
        let (sent, value_ref, compare) = (&sent, &value, &compare);
        let answer = RetryPolicy::default()
            .idempotent_until(
                "creating a key",
                deadline,
                self.lost_token(),
                move || async move {
                    if self.is_over() {
                        return Err(Error::SessionLost);
                    }
                    let write = compare
                        .apply(Write::put(key, value_ref.clone()))
                        .ttl(self.ttl);
                    let answer = store.publish(write).await.and_then(Published::compared);
                    if answer.as_ref().is_err_and(Error::is_transient) {
                        sent.store(true, Ordering::Relaxed);
                    }
                    answer
                },
            )
            .await?;
        let seq = match answer {
            Some(seq) => seq,
            // A refused compare with no attempt lost on the way: someone else's write,
            // known without a read (a refused compare with the line is the common case).
            None if !sent.load(Ordering::Relaxed) => return Ok(None),
            None => match store.last(key).await? {
                // An earlier attempt of ours landed and its answer was lost.
                Some(entry) if entry.live() && entry.value == value => entry.seq,
                _ => return Ok(None),
            },
        };
        self.adopt(key, value, seq, line).await?;
        Ok(Some(seq))
    }

    /// Takes over the renewal of `key`, created with the session's TTL holding `value`
    /// at the sequence `seq` by a write of the caller's own (an atomic batch); a
    /// contender key of the line `line`, if given, is left for the session's next entry
    /// there when released.
    ///
    /// # Errors
    /// [`Error::SessionLost`] when the session is over: the key is then purged.
    pub(crate) async fn adopt(
        &self,
        key: &str,
        value: Bytes,
        seq: u64,
        line: Option<&str>,
    ) -> Result<()> {
        let mut keys = self.keys.lock().await;
        if self.is_over() {
            drop(keys);
            self.purge(key, seq).await;
            return Err(Error::SessionLost);
        }
        keys.insert(
            key.to_owned(),
            Held {
                value,
                seq,
                create: seq,
                line: line.map(str::to_owned),
            },
        );
        Ok(())
    }

    /// Stops renewing `key` and returns the sequence the session last wrote to it, or
    /// `None` when the session does not hold it; the key then ends with its TTL unless
    /// the caller ends it first (in a batch of its own).
    pub(crate) async fn forget(&self, key: &str) -> Option<u64> {
        self.keys.lock().await.remove(key).map(|held| held.seq)
    }

    /// Stops renewing `key` and purges it (a compare on the sequence the session last
    /// wrote, so that a key the server already ended is left alone), riding out
    /// transient failures until the session is lost. A key the session does not hold is
    /// left alone. A contender key whose tombstone this purge wrote is left for the
    /// session's next entry into its line (see `src/released.rs`).
    ///
    /// # Errors
    /// [`Error::SessionLost`] when the session is lost while the store fails (the key
    /// ends with its TTL); the store's error when it is not transient.
    ///
    /// # Cancel safety
    /// Not cancel-safe: a dropped release leaves the key unrenewed, to end with its TTL.
    pub(crate) async fn release(&self, key: &str) -> Result<()> {
        let Some(held) = self.keys.lock().await.remove(key) else {
            return Ok(());
        };
        self.purge_held(key, held).await
    }

    /// As [`release`](Self::release) (its errors and cancel safety too), for the key of
    /// a lock's holder, which heads its line alone: when the session has not renewed
    /// it, its purge is also tried compared with the whole line, in the round trip of
    /// the ordinary one. That purge lands only while the key's create is still the
    /// line's last message, so the holder leaves the line without a live key and the
    /// session's next entry can head it without a listing (see `src/released.rs`). At
    /// most one of the two purges lands, as each is compared with a sequence the other
    /// moves. Returns whether the line was left empty.
    pub(crate) async fn release_holder(&self, key: &str) -> Result<bool> {
        let Some(held) = self.keys.lock().await.remove(key) else {
            return Ok(false);
        };
        let Some(line) = held.line.as_deref().filter(|_| held.seq == held.create) else {
            return self.purge_held(key, held).await.map(|()| false);
        };
        let store = &self.shared.store;
        let purge = || Write::purge(key).ttl(TOMBSTONE_TTL);
        let emptying = Compare::line(store, line, held.create).apply(purge());
        let (emptied, purged) = futures::join!(
            store.publish(emptying),
            store.publish(purge().if_at(held.seq)),
        );
        let emptied = emptied.and_then(Published::compared);
        let purged = purged.and_then(Published::compared);
        let (seq, quiet) = match (emptied, purged) {
            (Ok(Some(seq)), _) => (seq, true),
            (Ok(None), Ok(Some(seq))) => (seq, false),
            // Either may have landed unanswered: the ordinary purge, retried, settles
            // it (a refused compare there means one did, and the key is not reused).
            _ => return self.purge_held(key, held).await.map(|()| false),
        };
        let key = key.to_owned();
        self.released.record(line, Tombstone { key, seq, quiet });
        Ok(quiet)
    }

    /// As [`release`](Self::release) (its errors and cancel safety too), for a holder's
    /// key in the line `line` that its own waiters do not write to (an unfair lock's
    /// holder key, in the fair lock's line): when the session has not renewed it, the
    /// purge is compared with the whole line at the key's create, and only when that is
    /// refused (a fair contender wrote to the line meanwhile) sent again compared with
    /// the key alone. Returns the tombstone's sequence when the line was left empty: a
    /// create compared with the line at it lands only while nothing was written there
    /// since.
    pub(crate) async fn release_emptying(&self, key: &str, line: &str) -> Result<Option<u64>> {
        let Some(held) = self.keys.lock().await.remove(key) else {
            return Ok(None);
        };
        if held.seq == held.create {
            let store = &self.shared.store;
            let purge = Write::purge(key).ttl(TOMBSTONE_TTL);
            let emptying = Compare::line(store, line, held.create).apply(purge);
            let answer = store.publish(emptying).await;
            if let Ok(Some(seq)) = answer.and_then(Published::compared) {
                return Ok(Some(seq));
            }
            // Refused, or unanswered: had it landed, the purge below is a refused
            // compare, which is no error.
        }
        self.purge_held(key, held).await.map(|()| None)
    }

    /// Purges the key `key`, held as `held` and no longer renewed, retrying until
    /// done or the session is lost, and leaves it for the session's next entry into
    /// its line when this purge wrote its tombstone.
    async fn purge_held(&self, key: &str, held: Held) -> Result<()> {
        // Through a stream leader's election (seconds): the purge compares the
        // sequence the key was last renewed at, so one applied before its answer was
        // lost makes the next a refused compare, which is no error.
        let tombstone = RetryPolicy::default()
            .release("releasing a hold", self.lost_token(), || {
                self.purge_checked(key, held.seq)
            })
            .await?;
        if let (Some(line), Some(seq)) = (held.line, tombstone) {
            // A purge compared with the key alone says nothing of the line's other keys.
            self.released.record(
                &line,
                Tombstone {
                    key: key.to_owned(),
                    seq,
                    quiet: false,
                },
            );
        }
        Ok(())
    }

    /// Purges `key` at `seq`; failures only logged (the TTL ends it).
    async fn purge(&self, key: &str, seq: u64) {
        if let Err(error) = self.purge_checked(key, seq).await {
            tracing::debug!(key, %error, "purge failed; the key ends with its ttl");
        }
    }

    /// Purges `key` at `seq`; a failed compare is no error. Returns the tombstone's
    /// sequence, or `None` when the compare failed.
    async fn purge_checked(&self, key: &str, seq: u64) -> Result<Option<u64>> {
        let write = Write::purge(key).ttl(TOMBSTONE_TTL).if_at(seq);
        self.shared.store.publish(write).await?.compared()
    }

    /// Runs `write`, made from the held key `key`'s subject and current sequence,
    /// while no renewal changes that sequence; `Ok(None)` when the session does not
    /// hold `key` (any more).
    ///
    /// # Errors
    /// The store's error.
    pub(crate) async fn with_held<T, F, Fut>(&self, key: &str, write: F) -> Result<Option<T>>
    where
        F: FnOnce(String, u64) -> Fut + Send,
        Fut: std::future::Future<Output = Result<T>> + Send,
    {
        let keys = self.keys.lock().await;
        let Some(held) = keys.get(key) else {
            return Ok(None);
        };
        let subject = self.shared.store.subject(key);
        let answer = write(subject, held.seq).await?;
        drop(keys);
        Ok(Some(answer))
    }

    /// Rewrites the held `key` with `value` (a compare on the sequence the session last
    /// wrote, keeping its TTL and create sequence); `Ok(false)` when the session does
    /// not hold it or the server ended it.
    ///
    /// # Errors
    /// The store's error.
    pub(crate) async fn rewrite(&self, key: &str, value: Bytes) -> Result<bool> {
        let mut keys = self.keys.lock().await;
        let Some(held) = keys.get_mut(key) else {
            return Ok(false);
        };
        let write = self.renewal(key, value.clone(), held);
        match self.shared.renewals.publish(write).await?.compared()? {
            Some(seq) => {
                held.seq = seq;
                held.value = value;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Ends the session in the store: purges every key it holds, in one atomic batch
    /// (each purge compared with the sequence the session last wrote), so that its
    /// waiters see every hold end at once; should a key have ended already, which
    /// refuses the batch, one by one. Idempotent.
    pub(crate) async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        let keys = std::mem::take(&mut *self.keys.lock().await);
        self.fail();
        let purges = (keys.iter())
            .map(|(key, held)| tombstone(key.as_str(), held.seq))
            .collect::<Vec<_>>();
        if purges.is_empty() {
            return Ok(());
        }
        let store = &self.shared.store;
        match store.batch(purges).await.and_then(Published::compared) {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => {}
            Err(error) => {
                tracing::debug!(
                    session = %SessionId(self.id),
                    %error,
                    "the session's batch purge failed; purging key by key"
                );
            }
        }
        for (key, held) in keys {
            self.purge(&key, held.seq).await;
        }
        Ok(())
    }

    /// The rewrite of the held `key` with `value`: a compare on the sequence the
    /// session last wrote, with a fresh TTL, its create sequence kept.
    fn renewal(&self, key: &str, value: Bytes, held: &Held) -> Write {
        Write::put(key, value)
            .if_at(held.seq)
            .ttl(self.ttl)
            .header(CREATE_HEADER, &held.create.to_string())
    }

    /// One renewal of every key (see the module docs).
    async fn renew(&self) -> Result<KeepAlive> {
        if self.is_over() || self.shared.amnesia.epoch() > self.epoch {
            return Ok(KeepAlive::Gone);
        }
        let mut keys = self.keys.lock().await;
        for (key, held) in keys.iter_mut() {
            let write = self.renewal(key, held.value.clone(), held);
            match self.shared.renewals.publish(write).await?.compared()? {
                Some(seq) => held.seq = seq,
                None => {
                    tracing::debug!(session = %SessionId(self.id), key, "renewal refused: the key was ended");
                    return Ok(KeepAlive::Gone);
                }
            }
        }
        Ok(KeepAlive::Renewed)
    }
}

/// Opens a session of `options.ttl`: writes its key, then starts its renewals.
///
/// # Errors
/// The store's error.
pub(crate) async fn open(shared: &Arc<Shared>, options: &SessionOptions) -> Result<Session> {
    shared
        .amnesia
        .before_session(&shared.store, &shared.config, options.ttl)
        .await?;
    let value = Bytes::from(format!("{}", options.ttl.as_millis()));
    // A refused create of the fresh own key is an attempt of its own that landed while
    // its answer was lost and that its TTL ended since (the store was out of reach for
    // longer than the TTL): that session never started, and another id is drawn, up to
    // `OPEN_ATTEMPTS` times before the open gives up as a transient failure.
    let mut attempts = 0;
    let (inner, grant_sent) = loop {
        attempts += 1;
        let grant_sent = tokio::time::Instant::now();
        let inner = Arc::new(LeaseInner {
            shared: Arc::clone(shared),
            // A fresh id: 64 random bits, never 0.
            id: distsync_core::raw::random_u64().max(1),
            ttl: options.ttl,
            keys: tokio::sync::Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
            released: ReleasedKeys::default(),
            closed: AtomicBool::new(false),
            lost: OnceLock::new(),
            epoch: shared.amnesia.epoch(),
        });
        let own_key = session_key(inner.id);
        let created = inner
            .write_key(&own_key, value.clone(), Compare::Key(0), None, None)
            .await?;
        if created.is_some() {
            break (inner, grant_sent);
        }
        tracing::debug!(
            key = own_key,
            "a fresh session key ended before its create's answer came; opening another"
        );
        if attempts == OPEN_ATTEMPTS {
            return Err(Error::connection(BACKEND, FRESH_KEY_ENDED));
        }
    };
    let id = inner.id;
    let session = distsync_core::raw::start_session(
        BACKEND,
        SessionId(id),
        options,
        grant_sent,
        Arc::new(NatsLease {
            inner: Arc::clone(&inner),
        }),
    );
    let _ = inner.lost.set(session.lost_token().clone());
    shared.register(id, Arc::downgrade(&inner));
    tracing::debug!(session = %SessionId(id), ttl = ?options.ttl, "nats session opened");
    Ok(session)
}

/// Ends the session `id` of another process (or of this one, dropped): purges every
/// key that carries its id (its own key and its contender keys), and the unfair lock
/// holder keys whose value names it. A contender key's session stands after its
/// name, whose depth varies, so no filter selects a session's keys: this reads every
/// kind's keys (in pages in a large bucket), which only a break or a revocation does.
///
/// # Errors
/// The store's error (some keys may be purged already).
pub(crate) async fn revoke_elsewhere(shared: &Shared, id: u64) -> Result<()> {
    let store = &shared.store;
    let own_key = session_key(id);
    let owner = format!("{id:016x}.");
    let mut filters = Kind::every_key();
    filters.push(own_key.clone());
    let (entries, _) = store.list(&filters).await?;
    let ours = |entry: &crate::store::Entry| {
        entry.live()
            && (entry.key == own_key
                || keys::is_contender_of(&entry.key, id)
                || (keys::is_unfair_holder(&entry.key)
                    && entry.value.starts_with(owner.as_bytes())))
    };
    for mut entry in entries {
        while ours(&entry) {
            let write = tombstone(entry.key.as_str(), entry.seq);
            if store.publish(write).await?.compared()?.is_some() {
                break;
            }
            // Renewed meanwhile: purge it at its new sequence, if still the session's.
            match store.last(&entry.key).await? {
                Some(now) => entry = now,
                None => break,
            }
        }
    }
    Ok(())
}

/// A key entered into a line ([`LeaseInner::enter_line`]).
pub(crate) struct Entered {
    /// The key.
    pub(crate) key: String,
    /// Its create sequence.
    pub(crate) token: u64,
    /// Whether it was written into a line with no other live key, which it then heads
    /// (see `src/released.rs`).
    pub(crate) alone: bool,
}

/// What a write is compared with.
pub(crate) enum Compare {
    /// The key's own last sequence (0: the key has none).
    Key(u64),
    /// The last sequence of every subject the filter (a full subject) matches.
    Line(String, u64),
}

impl Compare {
    /// The last sequence of every key of the line `line` (0: none has a message).
    pub(crate) fn line(store: &crate::store::Store, line: &str, seq: u64) -> Self {
        Compare::Line(store.subject(&keys::every_in(line)), seq)
    }

    /// `write`, compared as this says.
    fn apply(&self, write: Write) -> Write {
        match self {
            Compare::Key(seq) => write.if_at(*seq),
            Compare::Line(filter, seq) => write.if_other_at(filter, *seq),
        }
    }
}

/// Why a one-shot create of a fresh key gave up: its attempts landed and ended unanswered.
const FRESH_KEY_ENDED: &str =
    "a fresh key's create landed while its answer was lost, and its TTL ended it before nats answered again";

/// How many session ids an open draws while each fresh key ends unanswered: every
/// attempt found nats out of reach for longer than the TTL, so the caller learns of the
/// outage rather than waiting through it without a bound.
const OPEN_ATTEMPTS: u32 = 3;

/// The own key of the session `id`.
fn session_key(id: u64) -> String {
    format!("session.{id:016x}")
}

#[async_trait]
impl Lease for NatsLease {
    async fn keep_alive(&self) -> Result<KeepAlive> {
        let answer = self.inner.renew().await;
        if !matches!(answer, Ok(KeepAlive::Renewed)) {
            // A key gone or a store not answering may be a store that forgot: the
            // bucket and the marker tell, looked at beside the renewals.
            let shared = &self.inner.shared;
            shared
                .amnesia
                .look_after_loss(&shared.store, &shared.config);
        }
        if matches!(answer, Ok(KeepAlive::Gone)) {
            self.inner.fail();
        }
        answer
    }

    async fn revoke(&self) -> Result<()> {
        self.inner.close().await
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use distsync_core::Primitives;
    use distsync_core::{Backend, Name, SessionOptions};

    use super::*;
    use crate::test_server::sent;

    /// A renewal rewrites each key of the session through the renewals' connection
    /// and sends nothing through the one every other request takes: a burst there
    /// (a thousand waiters listing their line) cannot hold the renewals back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn renewals_go_through_a_connection_of_their_own() {
        let Some(backend) = crate::test_server::backend("DISTSYNC_NATS_URL", "renewals").await
        else {
            return;
        };
        // Long enough that no scheduled renewal runs beside the one made here.
        let options = SessionOptions::with_ttl(Duration::from_secs(60));
        let session = backend.session(options).await.unwrap();
        let name = Name::new(format!("renewed-{}", distsync_core::raw::call_id())).unwrap();
        let guard = backend
            .locker(&session, name)
            .unwrap()
            .lock()
            .await
            .unwrap();
        let lease = Arc::clone(lease_of(&session, &backend.shared).unwrap());
        let shared = &backend.shared;
        let (others, renewals) = (sent(&shared.store), sent(&shared.renewals));
        assert!(matches!(lease.renew().await, Ok(KeepAlive::Renewed)));
        assert_eq!(
            sent(&shared.renewals) - renewals,
            2,
            "the session's own key and its lock's key, rewritten on the renewals' connection"
        );
        assert_eq!(
            sent(&shared.store),
            others,
            "nothing on the other connection"
        );
        assert!(!guard.is_lost());
        guard.unlock().await.unwrap();
        session.close().await.unwrap();
    }
}
