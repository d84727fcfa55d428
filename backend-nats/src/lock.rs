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
//! # An uncontended lock: two writes and no listing
//!
//! A holder that nobody joined, whose key was not renewed, releases it with a purge
//! compared with the whole line, which leaves the line empty, and the session's next
//! entry heads it without step 2's listing (see `src/released.rs`, "A line left
//! empty"): a lock taken and released again and again by one session is then the raw
//! pair of a create and a purge. Any other write to the line (a contender's key, a
//! renewal, an unfair holder, a TTL's marker) refuses those compares, and the entry is
//! made and listed as above; in a JetStream cluster every entry lists the line
//! ([`crate::store::Store::compares_lines`]).
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

use crate::shared::Shared;
use distsync_core::raw::Look::{NotYet, Ready};
use distsync_core::raw::{Make, OnSession};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use distsync_core::raw::locked;
use distsync_core::raw::{
    lock_guard, with_guarded_write, CleanUp, GuardedWrite, Locker, ReleaseFn, RetryPolicy,
};
use distsync_core::{Error, LockGuard, Name, Result, Session};
use futures::StreamExt;
use tokio::time::Instant;

use crate::keys::{self, Kind};
use crate::session::{Entered, LeaseInner, CREATE_HEADER};
use crate::store::{Entry, Write};
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
    /// When a release of this handle last failed to leave the line empty.
    emptying: Arc<Emptying>,
    wakeups: AtomicU64,
}

/// How long after a release of a handle failed to leave the line empty (another
/// contender wrote to the line while it held) the handle's releases do not try again.
const CONTENDED_FOR: Duration = Duration::from_secs(1);

/// A lock handle's record of its tries to leave the line empty on release (see
/// [`LeaseInner::release_holder`]). A try that cannot land still costs the store a
/// message on every release of a contended lock (about a fifth of its grants per
/// second, measured at 2 and 8 clients), so a handle whose try was refused lately
/// releases as any other until [`CONTENDED_FOR`] has passed; one that lands clears it.
#[derive(Default)]
struct Emptying {
    refused_at: std::sync::Mutex<Option<Instant>>,
}

impl Emptying {
    /// Whether a release should try to leave the line empty.
    fn worth_trying(&self) -> bool {
        locked(&self.refused_at).is_none_or(|at| at.elapsed() >= CONTENDED_FOR)
    }

    /// Records how a try went.
    fn tried(&self, emptied: bool) {
        *locked(&self.refused_at) = (!emptied).then(Instant::now);
    }
}

/// A contender in line: its key and token. Dropped while armed (a cancelled wait),
/// it purges its key in the background.
pub(crate) struct Contender {
    pub(crate) lease: Arc<LeaseInner>,
    pub(crate) key: String,
    pub(crate) token: u64,
    pub(crate) armed: bool,
    /// Heads a line with no other live key: written into one (see
    /// `src/released.rs`), which it heads without a listing, or found so by the
    /// listing that granted it. Only then is its release tried as one that leaves the
    /// line empty (a try that a contender in line would only refuse).
    pub(crate) alone: bool,
}

impl Contender {
    /// A contender in line with the key `entered`, purged if dropped before its grant.
    pub(crate) fn new(lease: &Arc<LeaseInner>, entered: Entered) -> Self {
        Self {
            lease: Arc::clone(lease),
            key: entered.key,
            token: entered.token,
            armed: true,
            alone: entered.alone,
        }
    }

    /// The key and token of a granted contender, which its guard releases from now on.
    pub(crate) fn granted(mut self) -> (String, u64) {
        self.armed = false;
        (std::mem::take(&mut self.key), self.token)
    }

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
        // The release retries its purge itself, until the session is lost.
        CleanUp::new("purging a dropped contender's key", "its ttl ends it")
            .of(&key)
            .spawn(move |_| async move { lease.release(&key).await });
    }
}

/// The live contenders of a listing, in line, each with its token: by token, an
/// unfair lock's holder key first (see `src/unfair_lock.rs`).
pub(crate) fn contenders<'e>(entries: impl IntoIterator<Item = &'e Entry>) -> Vec<(u64, String)> {
    let mut line: Vec<(u64, String)> = entries
        .into_iter()
        .filter(|entry| entry.live())
        .map(|entry| (token_of(entry), entry.key.clone()))
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
            ..Self::in_line(&session, &lease, &name, Kind::Lock)
        }
    }

    /// A line of contenders of `kind` (an election's candidates run the lock's
    /// protocol in a line of their own).
    pub(crate) fn in_line(
        session: &Session,
        lease: &Arc<LeaseInner>,
        name: &Name,
        kind: Kind,
    ) -> Self {
        Self {
            session: session.clone(),
            lease: Arc::clone(lease),
            name: name.clone(),
            line: keys::line(kind, name),
            reuses_keys: false,
            emptying: Arc::default(),
            wakeups: AtomicU64::new(0),
        }
    }

    /// The line, `<kind>.<name>.q`.
    pub(crate) fn line(&self) -> &str {
        &self.line
    }

    /// The line's live contenders by token, and the stream sequence it was read at: a
    /// listing sent after this call began, shared with the process's other waiters
    /// that asked before it was sent (see `src/line_listing.rs`).
    pub(crate) async fn listing(&self) -> Result<(Vec<(u64, String)>, u64)> {
        let shared = &self.lease.shared;
        let listed = shared
            .listings
            .list(&shared.store, &keys::every_in(&self.line))
            .await?;
        let (entries, last) = &*listed;
        Ok((contenders(entries), *last))
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
        let entered = if self.reuses_keys {
            self.lease.enter_line(&self.line, value, deadline).await?
        } else {
            self.lease
                .enter_fresh(&self.line, value, deadline, false)
                .await?
        };
        Ok(Contender::new(&self.lease, entered))
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
            None => Err(vanished(
                self.session.is_lost() || self.lease.is_over(),
                "contender key",
                &format!("{} of lock {:?}", contender.key, self.name.as_str()),
            )),
        }
    }

    /// Step 2: waits until `contender` heads the line, and tells whether it is then
    /// the line's only live key.
    pub(crate) async fn wait_to_head(&self, contender: &Contender) -> Result<bool> {
        if contender.alone {
            return Ok(true);
        }
        RetryPolicy::default()
            .wait_until("the lock", self.lease.lost_token(), || async {
                let (line, last) = self.listing().await?;
                let Some(before) = self.place(contender, &line)?.cloned() else {
                    return Ok(Ready(line.len() == 1));
                };
                Ok(NotYet(async move {
                    let listed = std::slice::from_ref(&before);
                    if gone_after(&self.lease, &before.1, last, listed).await? {
                        self.wakeups.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                }))
            })
            .await
    }

    /// The guard of a granted `contender`. When it heads a lock's line alone, its
    /// release tries to leave the line empty for the session's next entry (see
    /// `src/released.rs`), unless this handle's last try was refused lately.
    fn grant(&self, contender: Contender) -> LockGuard {
        let alone = contender.alone;
        let (key, token) = contender.granted();
        let store = &self.lease.shared.store;
        if !(self.reuses_keys && alone && store.compares_lines() && self.emptying.worth_trying()) {
            return hold_guard(&self.session, &self.lease, key, token);
        }
        let (lease, emptying, released) = (
            Arc::clone(&self.lease),
            Arc::clone(&self.emptying),
            key.clone(),
        );
        let release: ReleaseFn = Box::new(move || {
            Box::pin(async move {
                let emptied = lease.release_holder(&released).await?;
                emptying.tried(emptied);
                Ok(())
            })
        });
        hold_guard_with(&self.session, &self.lease, key, token, release)
    }
}

/// The error of a `what` (`key` and what it is of) missing from its line's listing:
/// [`Error::SessionLost`] when the session is `over`, else a key gone while its
/// session lives.
pub(crate) fn vanished(over: bool, what: &str, key: &str) -> Error {
    if over {
        return Error::SessionLost;
    }
    Error::backend(
        BACKEND,
        format!("the {what} {key} vanished while its session lives"),
    )
}

/// The guard of the hold of `key`, granted with `token`: released by purging the
/// key, with its guarded write.
pub(crate) fn hold_guard(
    session: &Session,
    lease: &Arc<LeaseInner>,
    key: String,
    token: u64,
) -> LockGuard {
    let release = releasing(lease, &key);
    hold_guard_with(session, lease, key, token, release)
}

/// The release of the held `key`: its purge ([`LeaseInner::release`]).
pub(crate) fn releasing(lease: &Arc<LeaseInner>, key: &str) -> ReleaseFn {
    let (lease, key) = (Arc::clone(lease), key.to_owned());
    Box::new(move || Box::pin(async move { lease.release(&key).await }))
}

/// [`hold_guard`] whose release is `release` (which purges the key).
pub(crate) fn hold_guard_with(
    session: &Session,
    lease: &Arc<LeaseInner>,
    key: String,
    token: u64,
    release: ReleaseFn,
) -> LockGuard {
    let token = lease.shared.amnesia.token(token);
    let guard = lock_guard(key.clone(), token, session, release);
    let lease = Arc::clone(lease);
    with_guarded_write(guard, Arc::new(HeldWrite { lease, key }))
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
        let mut contender = self.enter().await?;
        contender.alone = self.wait_to_head(&contender).await?;
        Ok(self.grant(contender))
    }

    async fn try_lock(&self) -> Result<Option<LockGuard>> {
        let mut contender = self.try_enter_with(Bytes::new()).await?;
        if contender.alone {
            return Ok(Some(self.grant(contender)));
        }
        let (line, _) = self.listing().await?;
        match self.place(&contender, &line)? {
            None => {
                contender.alone = line.len() == 1;
                Ok(Some(self.grant(contender)))
            }
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

impl Make<Arc<Shared>, OnSession<Arc<LeaseInner>>> for NatsLocker {
    fn make(_: &Arc<Shared>, on: OnSession<Arc<LeaseInner>>) -> Result<Self> {
        Ok(Self::new(on.session, on.lease, on.name))
    }
}

#[cfg(test)]
mod tests {
    use distsync_core::{Backend, SessionOptions};

    use super::*;

    /// A lock's uncontended acquisitions of one session, connected to the test
    /// server's bucket `lock_line`, on a name of its own.
    async fn locker() -> Option<(crate::NatsBackend, Session, NatsLocker)> {
        let backend = crate::test_server::backend("DISTSYNC_NATS_URL", "lock_line").await?;
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
            .list(&[keys::every_in(locker.line())])
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

    /// A handle whose try to leave the line empty was refused releases as any other
    /// for a while, and tries again after it; a try that lands keeps it trying.
    #[tokio::test(start_paused = true)]
    async fn a_refused_try_to_leave_the_line_empty_pauses_the_tries() {
        let emptying = Emptying::default();
        assert!(emptying.worth_trying());
        emptying.tried(true);
        assert!(emptying.worth_trying());
        emptying.tried(false);
        assert!(!emptying.worth_trying());
        tokio::time::advance(CONTENDED_FOR / 2).await;
        assert!(!emptying.worth_trying());
        tokio::time::advance(CONTENDED_FOR / 2).await;
        assert!(emptying.worth_trying());
    }

    /// A session's second handle on the lock of `locker`, through a session of its own.
    async fn other(backend: &crate::NatsBackend, locker: &NatsLocker) -> (Session, NatsLocker) {
        let session = backend.session(SessionOptions::default()).await.unwrap();
        let lease = Arc::clone(crate::session::lease_of(&session, &backend.shared).unwrap());
        let other = NatsLocker::new(session.clone(), lease, locker.name.clone());
        (session, other)
    }

    /// Takes `contender` as the lock: waits for its turn, then makes the guard.
    async fn taken(locker: &NatsLocker, mut contender: Contender) -> LockGuard {
        contender.alone = locker.wait_to_head(&contender).await.unwrap();
        locker.grant(contender)
    }

    /// A holder that nobody joined leaves the line empty, and its session's next entry
    /// heads it without a listing; an entry after someone else wrote to the line (here
    /// another session holding the lock) does not, and waits for that holder.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_a_line_nobody_else_wrote_since_the_release_is_headed_unlisted() {
        let Some((backend, session, locker)) = locker().await else {
            return;
        };
        let first = locker.enter().await.unwrap();
        assert!(!first.alone, "a first entry has no release to go by");
        taken(&locker, first).await.unlock().await.unwrap();
        let second = locker.enter().await.unwrap();
        assert!(
            second.alone,
            "the line was left empty by this session's release"
        );
        taken(&locker, second).await.unlock().await.unwrap();

        let (other_session, other) = other(&backend, &locker).await;
        let held = other.lock().await.unwrap();
        let third = locker.try_enter_with(Bytes::new()).await.unwrap();
        assert!(!third.alone, "another session holds the lock");
        let (line, _) = locker.listing().await.unwrap();
        assert!(locker.place(&third, &line).unwrap().is_some(), "{line:?}");
        third.withdraw().await.unwrap();
        assert!(locker.try_lock().await.unwrap().is_none());
        held.unlock().await.unwrap();

        // The other session's hold and release were written after this session's last
        // release: its entry is compared with the line as any other, and holds.
        let fourth = locker.enter().await.unwrap();
        assert!(!fourth.alone);
        taken(&locker, fourth).await.unlock().await.unwrap();
        other_session.close().await.unwrap();
        session.close().await.unwrap();
    }

    /// A cluster checks a compare with the whole line before the writes in flight are
    /// stored: there a release never leaves a quiet tombstone, and every entry lists.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cluster_never_heads_a_line_unlisted() {
        let cluster = crate::test_server::backend("DISTSYNC_NATS_CLUSTER_URL", "lock_line");
        let Some(backend) = cluster.await else {
            return;
        };
        assert!(!backend.shared.store.compares_lines());
        let session = backend.session(SessionOptions::default()).await.unwrap();
        let lease = Arc::clone(crate::session::lease_of(&session, &backend.shared).unwrap());
        let name = Name::new(format!("line-{}", distsync_core::raw::call_id())).unwrap();
        let locker = NatsLocker::new(session.clone(), lease, name);
        for _ in 0..3 {
            let contender = locker.enter().await.unwrap();
            assert!(!contender.alone);
            taken(&locker, contender).await.unlock().await.unwrap();
        }
        session.close().await.unwrap();
    }

    /// A holder that another session joined while it held does not leave the line
    /// empty: its release hands the lock to the waiter, and its next entry waits behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_release_with_a_waiter_does_not_leave_the_line_empty() {
        let Some((backend, session, locker)) = locker().await else {
            return;
        };
        // A quiet release first, so that the next entry is compared with the line.
        locker.lock().await.unwrap().unlock().await.unwrap();
        let holding = locker.enter().await.unwrap();
        assert!(holding.alone);
        let guard = taken(&locker, holding).await;
        let (other_session, other) = other(&backend, &locker).await;
        let waiter = tokio::spawn(async move {
            let guard = other.lock().await.unwrap();
            (guard, other)
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while locker.contenders().await.unwrap() < 2 {
            assert!(
                Instant::now() < deadline,
                "the waiter never entered the line"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        guard.unlock().await.unwrap();
        let (granted, _other) = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the waiter is granted on the release")
            .unwrap();
        let next = locker.try_enter_with(Bytes::new()).await.unwrap();
        assert!(!next.alone, "the waiter holds the lock");
        next.withdraw().await.unwrap();
        granted.unlock().await.unwrap();
        other_session.close().await.unwrap();
        session.close().await.unwrap();
    }
}
