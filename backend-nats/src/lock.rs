//! The fair lock: a line of contender keys ordered by their stream sequence.
//!
//! # Layout
//!
//! The lock `<name>` is the line `lock.<name>.q`; an acquisition creates the key
//! `lock.<name>.q.<session>.<n>` with the session's TTL, and the session renews it
//! (see `src/session.rs`). The key is the one its session released in the line
//! lately, created again with a compare on its tombstone's sequence, or else a fresh
//! one, create-only (`Nats-Expected-Last-Subject-Sequence: 0`): the line then holds
//! one key per session that used it lately, live or a tombstone, however many
//! acquisitions it has seen, and a listing reads no more (see `src/released.rs`).
//!
//! # Protocol
//!
//! 1. **Enter**: create the contender key. Its stream sequence is its place in line
//!    and its fencing token (renewals carry it in `Ds-Create`).
//! 2. **Wait**: list the line's last messages (one batched direct get), keep the live
//!    keys, order them by token. The lowest holds the lock. Any other contender
//!    watches only the key just before it, from the listing's stream sequence + 1, and
//!    ignores its renewals (puts of the same token); a purge, a delete, the marker
//!    JetStream writes when its TTL ends it, or a create of the key by a later
//!    acquisition (a new token: the bucket keeps one message per key, so it may have
//!    replaced the purge before the watch read it) wakes the contender, which lists
//!    again. One wake-up per release: no herd.
//! 3. **Release**: stop renewing the key and purge it with a compare on its current
//!    sequence. A crashed holder's key ends with its TTL, and the marker wakes the
//!    next.
//!
//! Waiters are granted in token order, which is arrival order ([`fifo_waiters`]);
//! the stream sequence only grows, so successive holders' tokens grow too
//! ([`fencing`]).
//!
//! # Guarded writes
//!
//! [`LockGuard::put_if_held`] writes the STM key `stm.<key>` with
//! `Nats-Expected-Last-Subject-Sequence-Subject` pointing at the holder's key and the
//! sequence the session last wrote it at: JetStream stores the write only while that
//! key is unchanged, i.e. still held, in the same step as the check.
//!
//! # Cancel safety
//!
//! A contender dropped before its grant purges its key in the background; should
//! that fail, the key ends with its TTL. A refused `try_lock` (and `try_read`,
//! `try_write`, `try_acquire`) purges its key before it answers, so that a try right
//! after it never finds it at the head of the line.
//!
//! [`fifo_waiters`]: distsync_core::Capabilities::fifo_waiters
//! [`fencing`]: distsync_core::Capabilities::fencing

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use distsync_core::raw::{lock_guard, with_guarded_write, GuardedWrite, Locker, RetryPolicy};
use distsync_core::{Error, LockGuard, Name, Result, Session};
use futures::StreamExt;
use tokio::time::Instant;

use crate::keys::{self, Kind};
use crate::session::{LeaseInner, CREATE_HEADER};
use crate::store::{Entry, Write};
use crate::wait;
use crate::BACKEND;

/// How often a waiter lists the line again without a wake-up: a safety net for a
/// watch that missed an event (a consumer remade after a reconnect).
const SAFETY_NET: Duration = Duration::from_secs(5);

/// A mutex named `name`.
pub(crate) struct NatsLocker {
    session: Session,
    lease: Arc<LeaseInner>,
    name: Name,
    /// `lock.<name>.q`.
    line: String,
    /// Whether a contender enters with the key its session released in the line
    /// lately (see `src/released.rs`): the lock's contenders do; the lines of the
    /// other primitives, whose waits do not tell a key written again from a renewal,
    /// make a key per entry.
    reuses_keys: bool,
    wakeups: AtomicU64,
}

/// A contender in line: its key and token. Dropped while armed (a cancelled wait),
/// it purges its key in the background.
pub(crate) struct Contender {
    pub(crate) lease: Arc<LeaseInner>,
    pub(crate) key: String,
    pub(crate) token: u64,
    pub(crate) armed: bool,
}

impl Contender {
    /// Leaves the line at once: the key is purged before this returns, so that the
    /// next listing of this client or any other finds the line without it. A refused
    /// `try_lock` leaves this way; a key left to the background purge of a drop would
    /// head the line for a moment, and a `try_lock` right after (the same caller's,
    /// once the holder has gone) would be refused behind it.
    ///
    /// # Cancel safety
    /// Not cancel-safe: dropped part-way, the key may be left to end with its TTL.
    pub(crate) async fn withdraw(mut self) -> Result<()> {
        self.armed = false;
        let key = std::mem::take(&mut self.key);
        self.lease.release(&key).await
    }
}

impl Drop for Contender {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (lease, key) = (Arc::clone(&self.lease), std::mem::take(&mut self.key));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = lease.release(&key).await {
                    tracing::debug!(key, %error, "a dropped contender's purge failed; its ttl ends it");
                }
            });
        }
    }
}

/// The live contenders of a listing, in line, each with its token: by token, an
/// unfair lock's holder key first (see `src/unfair_lock.rs`).
pub(crate) fn contenders(entries: Vec<Entry>) -> Vec<(u64, String)> {
    let mut line: Vec<(u64, String)> = entries
        .into_iter()
        .filter(Entry::live)
        .map(|entry| (token_of(&entry), entry.key))
        .collect();
    line.sort_by_key(|(token, key)| (!keys::is_unfair_holder(key), *token));
    line
}

/// The token of a live contender key: its create sequence, which renewals carry in
/// [`CREATE_HEADER`] (the create itself is the message at it).
pub(crate) fn token_of(entry: &Entry) -> u64 {
    entry
        .header(CREATE_HEADER)
        .and_then(|create| create.parse().ok())
        .unwrap_or(entry.seq)
}

impl NatsLocker {
    pub(crate) fn new(session: Session, lease: Arc<LeaseInner>, name: Name) -> Self {
        Self {
            reuses_keys: true,
            ..Self::in_line(session, lease, name, Kind::Lock)
        }
    }

    /// A line of contenders of `kind` (an election's candidates run the lock's
    /// protocol in a line of their own).
    pub(crate) fn in_line(
        session: Session,
        lease: Arc<LeaseInner>,
        name: Name,
        kind: Kind,
    ) -> Self {
        let line = keys::line(kind, &name);
        Self {
            session,
            lease,
            name,
            line,
            reuses_keys: false,
            wakeups: AtomicU64::new(0),
        }
    }

    /// The line, `<kind>.<name>.q`.
    pub(crate) fn line(&self) -> &str {
        &self.line
    }

    /// The line's live contenders by token, and the stream sequence it was read at.
    pub(crate) async fn listing(&self) -> Result<(Vec<(u64, String)>, u64)> {
        let (entries, last) = self
            .lease
            .shared
            .store
            .list(&[format!("{}.>", self.line)])
            .await?;
        Ok((contenders(entries), last))
    }

    /// Step 1: a contender key in the line.
    async fn enter(&self) -> Result<Contender> {
        self.enter_with(Bytes::new()).await
    }

    /// Step 1: a fresh contender key in the line, holding `value`.
    pub(crate) async fn enter_with(&self, value: Bytes) -> Result<Contender> {
        self.enter_until(value, None).await
    }

    /// As [`enter_with`](Self::enter_with) for a one-shot call (`try_lock`,
    /// `try_acquire`, ...): a store that fails for longer than the one-shot budget
    /// answers with its error, where a wait rides it out until its session ends.
    pub(crate) async fn try_enter_with(&self, value: Bytes) -> Result<Contender> {
        let budget = RetryPolicy::within(self.lease.shared.store.request_timeout).budget();
        self.enter_until(value, Some(Instant::now() + budget)).await
    }

    /// A contender key holding `value` (the session's last in the line, or a fresh
    /// one, as [`reuses_keys`](Self::reuses_keys) says), its creation retried until
    /// `deadline` if given.
    async fn enter_until(&self, value: Bytes, deadline: Option<Instant>) -> Result<Contender> {
        if self.session.is_lost() {
            return Err(Error::SessionLost);
        }
        let (key, token) = if self.reuses_keys {
            self.lease.enter_line(&self.line, value, deadline).await?
        } else {
            let key = keys::contender(&self.line, self.lease.id, self.lease.next_number());
            let token = self.lease.create_until(&key, value, deadline).await?;
            (key, token)
        };
        Ok(Contender {
            lease: Arc::clone(&self.lease),
            key,
            token,
            armed: true,
        })
    }

    /// The place of `contender` in a listing: `Ok(None)` when it heads the line, else
    /// the contender before it (its token and key).
    fn place<'l>(
        &self,
        contender: &Contender,
        line: &'l [(u64, String)],
    ) -> Result<Option<&'l (u64, String)>> {
        match line.iter().position(|(_, key)| *key == contender.key) {
            Some(0) => Ok(None),
            Some(at) => Ok(Some(&line[at - 1])),
            None if self.session.is_lost() || self.lease.is_over() => Err(Error::SessionLost),
            None => Err(Error::backend(
                BACKEND,
                format!(
                    "the contender key {} of lock {:?} vanished while its session lives",
                    contender.key,
                    self.name.as_str()
                ),
            )),
        }
    }

    /// Step 2: waits until `contender` heads the line.
    pub(crate) async fn wait(&self, contender: &Contender) -> Result<()> {
        wait::until("the lock", self.lease.lost_token(), || async {
            let (line, last) = self.listing().await?;
            let Some(before) = self.place(contender, &line)? else {
                return Ok(Some(()));
            };
            let woken =
                gone_after(&self.lease, &before.1, last, std::slice::from_ref(before)).await?;
            if woken {
                self.wakeups.fetch_add(1, Ordering::Relaxed);
            }
            Ok(None)
        })
        .await
    }

    /// The guard of a granted `contender`.
    fn grant(&self, mut contender: Contender) -> LockGuard {
        contender.armed = false;
        let key = std::mem::take(&mut contender.key);
        hold_guard(&self.session, &self.lease, key, contender.token)
    }
}

/// The guard of the hold of `key`, granted with `token`: released by purging the
/// key, with its guarded write.
pub(crate) fn hold_guard(
    session: &Session,
    lease: &Arc<LeaseInner>,
    key: String,
    token: u64,
) -> LockGuard {
    let releasing = Arc::clone(lease);
    let released = key.clone();
    let guard = lock_guard(
        key.clone(),
        lease.shared.amnesia.token(token),
        session,
        Box::new(move || Box::pin(async move { releasing.release(&released).await })),
    );
    with_guarded_write(
        guard,
        Arc::new(HeldWrite {
            lease: Arc::clone(lease),
            key,
        }),
    )
}

/// Waits until a key matching `filter` ends (a purge, a delete, or the marker of an
/// expired TTL) after the stream sequence `last`, or a contender of `listed` (keys
/// with their tokens, as the listing at `last` read them) is replaced by a create of
/// its key with another token: the bucket keeps one message per key, so a key
/// released and entered again may show the watch its create only. Other puts
/// (renewals, and keys entering the line) are ignored. `Ok(true)` when one ended,
/// `Ok(false)` after [`SAFETY_NET`] or when the watch ended without one: the caller
/// lists again either way.
///
/// # Errors
/// [`Error::SessionLost`] once the session is lost; the store's error.
pub(crate) async fn gone_after(
    lease: &LeaseInner,
    filter: &str,
    last: u64,
    listed: &[(u64, String)],
) -> Result<bool> {
    let replaced = |entry: &Entry| {
        (listed.iter()).any(|(token, key)| *key == entry.key && *token != token_of(entry))
    };
    let mut events = lease.shared.store.watch(filter, last + 1).await?;
    let safety_net = tokio::time::sleep(SAFETY_NET);
    tokio::pin!(safety_net);
    loop {
        tokio::select! {
            () = lease.lost() => return Err(Error::SessionLost),
            () = &mut safety_net => return Ok(false),
            event = events.next() => match event {
                Some(Ok(entry)) if entry.live() && !replaced(&entry) => {}
                Some(Ok(_)) => return Ok(true),
                Some(Err(error)) => return Err(error),
                None => return Ok(false),
            },
        }
    }
}

#[async_trait]
impl Locker for NatsLocker {
    fn name(&self) -> &Name {
        &self.name
    }

    async fn lock(&self) -> Result<LockGuard> {
        let contender = self.enter().await?;
        self.wait(&contender).await?;
        Ok(self.grant(contender))
    }

    async fn try_lock(&self) -> Result<Option<LockGuard>> {
        let contender = self.try_enter_with(Bytes::new()).await?;
        let (line, _) = self.listing().await?;
        match self.place(&contender, &line)? {
            None => Ok(Some(self.grant(contender))),
            Some(_) => {
                contender.withdraw().await?;
                Ok(None)
            }
        }
    }

    async fn contenders(&self) -> Result<usize> {
        Ok(self.listing().await?.0.len())
    }

    fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }
}

/// A hold's guarded write: the STM key written only while the holder's key is at
/// the sequence the session last wrote it at.
pub(crate) struct HeldWrite {
    pub(crate) lease: Arc<LeaseInner>,
    pub(crate) key: String,
}

#[async_trait]
impl GuardedWrite for HeldWrite {
    async fn put_if_held_bytes(&self, key: &Name, value: Bytes) -> Result<bool> {
        let store = &self.lease.shared.store;
        let target = keys::key(Kind::Stm, key);
        let written = self
            .lease
            .with_held(&self.key, |subject, seq| async move {
                let write = Write::put(target, value).if_other_at(&subject, seq);
                store.publish(write).await?.compared()
            })
            .await?;
        Ok(matches!(written, Some(Some(_))))
    }
}

#[cfg(test)]
mod tests {
    use distsync_core::{Backend, SessionOptions};

    use super::*;

    /// A lock's uncontended acquisitions of one session, connected to the test
    /// server's bucket `lock_line`, on a name of its own.
    async fn locker() -> Option<(crate::NatsBackend, Session, NatsLocker)> {
        let url = distsync_conformance::server_url("DISTSYNC_NATS_URL")?;
        let config: crate::NatsConfig = url.parse().unwrap();
        let config = config.with_bucket("lock_line").unwrap();
        let backend = crate::backend_with_config(&config).await.unwrap();
        let session = backend.session(SessionOptions::default()).await.unwrap();
        let lease = Arc::clone(crate::session::lease_of(&session, &backend.shared).unwrap());
        let name = Name::new(format!("line-{}", distsync_core::raw::call_id())).unwrap();
        let locker = NatsLocker::new(session.clone(), lease, name);
        Some((backend, session, locker))
    }

    /// Each acquisition lists the line, so the line must not grow with the lock's
    /// history: a session's acquisitions write one key over its tombstone, and the
    /// line holds that one key after any number of them (two should a stall past
    /// `REUSE_WITHIN` between two of them have made a fresh key), where a key per
    /// acquisition would leave a tombstone each.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_line_does_not_grow_with_the_acquisitions_of_a_session() {
        let Some((backend, session, locker)) = locker().await else {
            return;
        };
        const ACQUISITIONS: usize = 50;
        let mut tokens = Vec::new();
        for _ in 0..ACQUISITIONS {
            let guard = locker.lock().await.unwrap();
            tokens.push(guard.token());
            guard.unlock().await.unwrap();
        }
        assert!(tokens.windows(2).all(|two| two[0] < two[1]), "{tokens:?}");
        let (entries, _) = backend
            .shared
            .store
            .list(&[format!("{}.>", locker.line())])
            .await
            .unwrap();
        assert!(
            (1..=2).contains(&entries.len()),
            "{} messages in the line after {ACQUISITIONS} acquisitions: {entries:?}",
            entries.len()
        );
        session.close().await.unwrap();
    }

    /// A waiter watching a key that is released and entered again at once may be
    /// shown only the new create (the bucket keeps one message per key, and the create
    /// replaced the purge): it wakes on the new token, not at the safety net.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watch_wakes_when_the_key_it_watches_is_entered_again() {
        let Some((_backend, session, locker)) = locker().await else {
            return;
        };
        let first = locker.lock().await.unwrap();
        let (listed, last) = locker.listing().await.unwrap();
        assert_eq!(listed.len(), 1);
        first.unlock().await.unwrap();
        let again = locker.lock().await.unwrap();
        assert_eq!(again.key(), listed[0].1, "the key is entered again");
        assert!(again.token().0 > listed[0].0);
        let woken = tokio::time::timeout(
            SAFETY_NET / 2,
            gone_after(&locker.lease, &listed[0].1, last, &listed),
        )
        .await
        .expect("woken before the safety net")
        .unwrap();
        assert!(woken);
        again.unlock().await.unwrap();
        session.close().await.unwrap();
    }
}
