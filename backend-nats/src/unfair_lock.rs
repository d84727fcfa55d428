//! The unfair lock: a holder key that fair contenders take for the head of their
//! line, and a wait line of its own in which only the head asks again.
//!
//! # Layout
//!
//! The holder of the unfair lock `<name>` is the key `lock.<name>.q.holder`, in the
//! fair lock's line, where every fair contender orders it first (see
//! `src/lock.rs`): the two kinds of lock of one name exclude each other. Its value
//! names the holding session and attempt, so that a create whose answer was lost is
//! recognised and a revoke finds the session's hold. Takes that lose wait in the
//! line `unfair.<name>.q.<session>.<n>`, entered again with the key the session
//! released there lately, as the fair line is (see `src/released.rs`).
//!
//! # Protocol
//!
//! 1. **Take**: create the holder key with a compare on its last sequence (0, or the
//!    tombstone its last holder left), then list the fair line. The take holds when
//!    the holder key is the only live key there; otherwise (a fair contender, holding
//!    or waiting, was there) it purges the holder key again and loses. A take holds
//!    only where the line is empty, so every fair contender that arrives later
//!    creates its key after it and carries a higher token.
//! 2. **Wait**: a take that lost enters the wait line. Its head lists the fair line
//!    and watches it for any key ending after that listing, then takes again: a
//!    release wakes one waiter, which may lose to a newcomer and wait again. Every
//!    other waiter watches only its predecessor in the wait line.
//! 3. **Release**: purge the holder key with a compare, as a fair hold's.
//!
//! The token of a hold is the holder key's create sequence.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use distsync_core::raw::Locker;
use distsync_core::{Error, LockGuard, Name, Result, Session};

use crate::keys::{self, Kind};
use crate::lock::{contenders, gone_after, hold_guard, Contender};
use crate::session::LeaseInner;
use crate::wait;

/// How many times a take reads the holder key again when its create found a
/// tombstone newer than the one it read (a release or an expiry in between).
const TAKE_TRIES: usize = 3;

/// An unfair mutex named `name`.
pub(crate) struct NatsUnfairLocker {
    session: Session,
    lease: Arc<LeaseInner>,
    name: Name,
    /// The fair line, `lock.<name>.q`.
    line: String,
    /// `lock.<name>.q.holder`.
    holder: String,
    /// The wait line, `unfair.<name>.q`.
    waiting: String,
    wakeups: AtomicU64,
}

impl NatsUnfairLocker {
    pub(crate) fn new(session: Session, lease: Arc<LeaseInner>, name: Name) -> Self {
        Self {
            line: keys::line(Kind::Lock, &name),
            holder: keys::unfair_holder(&name),
            waiting: keys::line(Kind::UnfairWait, &name),
            session,
            lease,
            name,
            wakeups: AtomicU64::new(0),
        }
    }

    /// The live keys of the fair line and the stream sequence they were read at.
    async fn fair_line(&self) -> Result<(Vec<(u64, String)>, u64)> {
        let store = &self.lease.shared.store;
        let (entries, last) = store.list(&[keys::every_in(&self.line)]).await?;
        Ok((contenders(entries), last))
    }

    /// Step 1: one take; `None` when the lock is held or the take lost.
    async fn take(&self) -> Result<Option<LockGuard>> {
        if self.session.is_lost() {
            return Err(Error::SessionLost);
        }
        let store = &self.lease.shared.store;
        for _ in 0..TAKE_TRIES {
            let expected = match store.last(&self.holder).await? {
                Some(entry) if entry.live() => return Ok(None),
                Some(entry) => entry.seq,
                None => 0,
            };
            let value = keys::owner_value(self.lease.id, self.lease.next_number());
            let Some(token) = self
                .lease
                .create_at(&self.holder, Bytes::from(value), expected)
                .await?
            else {
                continue;
            };
            let (line, _) = self.fair_line().await?;
            if line.iter().all(|(_, key)| *key == self.holder) {
                return Ok(Some(hold_guard(
                    &self.session,
                    &self.lease,
                    self.holder.clone(),
                    token,
                )));
            }
            // A fair contender was in line: leave the lock to it.
            self.lease.release(&self.holder).await?;
            return Ok(None);
        }
        Ok(None)
    }

    /// Step 2, for a take that lost: waits in the wait line until a take holds.
    async fn wait(&self, entry: &Contender) -> Result<LockGuard> {
        let store = &self.lease.shared.store;
        wait::until("the unfair lock", self.lease.lost_token(), || async {
            let (entries, last) = store.list(&[keys::every_in(&self.waiting)]).await?;
            let line = contenders(entries);
            let place = line.iter().position(|(_, key)| *key == entry.key);
            match place {
                None if self.lease.is_over() => Err(Error::SessionLost),
                None => Err(Error::backend(
                    crate::BACKEND,
                    format!(
                        "the waiter key {} vanished while its session lives",
                        entry.key
                    ),
                )),
                Some(0) => {
                    if let Some(guard) = self.take().await? {
                        return Ok(Some(guard));
                    }
                    let (line, last) = self.fair_line().await?;
                    if line.is_empty() {
                        return Ok(None);
                    }
                    let filter = keys::every_in(&self.line);
                    if gone_after(&self.lease, &filter, last, &line).await? {
                        self.wakeups.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(None)
                }
                Some(at) => {
                    gone_after(&self.lease, &line[at - 1].1, last, &line[at - 1..at]).await?;
                    Ok(None)
                }
            }
        })
        .await
    }
}

#[async_trait]
impl Locker for NatsUnfairLocker {
    fn name(&self) -> &Name {
        &self.name
    }

    async fn lock(&self) -> Result<LockGuard> {
        if let Some(guard) = self.take().await? {
            return Ok(guard);
        }
        // The key this session released in the wait line lately, if any: a line of one
        // key per session lists no tombstones of earlier waits (see `src/released.rs`).
        let entered = self
            .lease
            .enter_line(&self.waiting, Bytes::new(), None)
            .await?;
        // Dropped (granted or cancelled), the waiter's key is purged. Alone in the
        // wait line or not, it waits for the lock.
        let entry = Contender {
            lease: Arc::clone(&self.lease),
            key: entered.key,
            token: entered.token,
            armed: true,
            alone: false,
        };
        self.wait(&entry).await
    }

    async fn try_lock(&self) -> Result<Option<LockGuard>> {
        self.take().await
    }

    async fn contenders(&self) -> Result<usize> {
        let store = &self.lease.shared.store;
        let filters = [keys::every_in(&self.line), keys::every_in(&self.waiting)];
        let (entries, _) = store.list(&filters).await?;
        Ok(entries.iter().filter(|entry| entry.live()).count())
    }

    fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }
}
